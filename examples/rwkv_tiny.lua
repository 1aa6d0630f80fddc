--- Text from the tiny byte-level RWKV models (token id = byte), greedy and
-- sampled, and the state API on the way: the prompt's state is snapshotted
-- once and every continuation restarts from it (the last one through
-- sess:generate).
--   bin/slm examples/rwkv_tiny.lua [MODEL] ["prompt"] [max_tokens=80] [seed=1]
-- MODEL defaults to rwkv.cpp's tiny RWKV-7 in $SLM_FIXTURES (../shared/fixtures);
-- any model with a 256-token (byte) vocabulary works: rwkv.cpp's tiny files,
-- the rwkv6/rwkv7-tiny GGUFs. Others are refused.
local slm = require "slm"
local common = require "examples.common"

local fixtures = os.getenv("SLM_FIXTURES") or "../shared/fixtures"
local path = arg[1] or (fixtures .. "/rwkv/tiny-rwkv-7v0-834K-FP32.bin")
local prompt = arg[2] or "In the morning, the little cat"
local max_tokens = math.tointeger(tonumber(arg[3] or 80)) or 80
local seed = math.tointeger(tonumber(arg[4] or 1)) or 1

local model, err = slm.load(path)
if not model then common.die("%s", err) end
if model.def.encoder or model.hp.n_vocab ~= 256 then
  common.die("%s is not a byte-level model (%s, vocabulary %d); this example needs a 256-token vocabulary "
             .. "(rwkv.cpp's tiny files, rwkv6/rwkv7-tiny GGUFs)", path, model.hp.arch, model.hp.n_vocab)
end
-- token id = byte: the 256-byte vocabulary (the tiny GGUFs carry a placeholder one)
model.tokenizer = slm.tokenizer.bytes()

local sess = model:session { ctx = #prompt + max_tokens + 1, batch = 64 }
local ids = {}
for i = 1, #prompt do ids[i] = prompt:byte(i) end
local t0 = slm.core.clock()
sess:eval(ids)                      -- the whole prompt in one call (sequence mode)
local t_prompt = slm.core.clock() - t0
local start = sess:snapshot()       -- O(state) bytes, whatever the prompt length

local function run(label, sampler)
  sess:restore(start)
  io.write(string.format("%-18s %s", label, prompt))
  local t, logits = slm.core.clock(), sess.logits
  for _ = 1, max_tokens do
    local id = sampler:sample(logits)
    sampler:accept(id)
    io.write(string.char(id))
    io.flush()
    logits = sess:eval { id }
  end
  local dt = slm.core.clock() - t
  io.write(string.format("\n%18s (%d tokens, %.0f tok/s)\n", "", max_tokens, max_tokens / dt))
end

print(string.format("%s: %s, %d layers, dim %d; prompt %d bytes in %.1f ms; state snapshot %d bytes",
                    path:match("[^/]+$"), model.hp.arch, model.hp.n_layer, model.hp.dim, #prompt,
                    t_prompt * 1000, #start.state))
run("greedy:", slm.sampler.greedy())
run("temp 0.8, seed " .. seed .. ":", slm.sampler.default { temp = 0.8, top_k = 40, top_p = 0.95, seed = seed })
run("temp 1.0, seed " .. seed + 1 .. ":", slm.sampler.default { temp = 1.0, top_k = 40, top_p = 0.95, seed = seed + 1 })

-- the same through sess:generate, which encodes the text with the tokenizer
-- and streams complete UTF-8 pieces
sess:restore(start)
io.write(string.format("%-18s %s", "generate():", prompt))
for piece in sess:generate(nil, { max_tokens = max_tokens, sampler = slm.sampler.default { temp = 0.8, seed = seed } }) do
  io.write(piece)
  io.flush()
end
io.write("\n")
