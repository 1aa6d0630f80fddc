--- Generates text from a prompt, streaming it to stdout.
--   bin/slm examples/generate.lua MODEL.gguf "Once upon a time" [max_tokens] [temp] [seed]
--   bin/slm examples/generate.lua          (the default model: "ROMEO:", 100 tokens, temp 0.8)
-- temp 0 (the default) is greedy decoding. Any decoder with a tokenizer
-- (byte-level rwkv.cpp files read bytes); encoders and llama2.c
-- checkpoints (no vocabulary in the file) are refused.
local slm = require "slm"
local common = require "examples.common"

local path, prompt = arg[1], arg[2]
if #arg == 0 then   -- no arguments: slm's default model (slm.load("default"))
  path, prompt = "default", "ROMEO:"
  arg[3], arg[4] = "100", "0.8"
end
if not path or not prompt then
  io.stderr:write("usage: generate.lua MODEL \"prompt\" [max_tokens=64] [temp=0] [seed=1]\n")
  os.exit(2)
end
local max_tokens = math.tointeger(tonumber(arg[3] or 64)) or 64
local temp, seed = tonumber(arg[4] or 0), math.tointeger(tonumber(arg[5] or 1)) or 1

local model = common.model(path, { text = true, decoder = true })
local sess = model:session { ctx = 1024 }
local sampler = temp > 0 and slm.sampler.default { temp = temp, top_k = 40, top_p = 0.95, seed = seed }
                or slm.sampler.greedy()
io.write(prompt)
local t0, n = slm.core.clock(), 0
for piece in sess:generate(prompt, { max_tokens = max_tokens, sampler = sampler }) do
  io.write(piece)
  io.flush()
  n = n + 1
end
io.write("\n")
io.stderr:write(string.format("[%d tokens, %.1f tok/s]\n", n, n / (slm.core.clock() - t0)))
