--- Architecture variants as layer plans: layer skipping, early exit and
-- recursion over a block, compared with the full model on a text (KL
-- divergence per token and top-1 agreement).
--   bin/slm examples/layer_skip.lua MODEL.gguf [text file]
-- Layer plans exist for the attention families (llama, qwen, phi3, gemma,
-- granite, smollm3, MoE, lfm2); others are refused with the list.
local slm = require "slm"
local common = require "examples.common"

local path, file = arg[1] or "default", arg[2]   -- no MODEL: slm's default model
local model = common.model(path, { text = true, decoder = true, plans = true })
local text = "Once upon a time there was a little girl who lived in a village near the forest. "
          .. "Whenever she went out, she wore a red riding cloak."
if file then
  local f, ferr = io.open(file, "rb")
  if not f then common.die("%s", ferr) end
  text = f:read("a")
  f:close()
end

local L = model.hp.n_layer
local last = L - 1
local rec = {}
for l = 0, last do
  rec[#rec + 1] = l
  if l == last // 2 then rec[#rec + 1] = l end   -- the middle layer twice
end
local variants = {
  { "full", model },
  { "skip layer " .. last // 2, model:variant { skip = { last // 2 } } },
  { "early exit after " .. (L - 1), model:variant { exit = L - 1 } },
  { "recursion (middle layer twice)", model:variant { layers = rec } },
}
print(string.format("%-34s %-24s %10s %8s %8s", "variant", "plan", "KL mean", "top-1", "ppl"))
for _, v in ipairs(variants) do
  local name, m = v[1], v[2]
  local k = slm.eval.kl(model, m, text, { ctx = 128 })
  print(string.format("%-34s %-24s %10.5f %8.3f %8.2f", name, table.concat(slm.experiment.plan(m), ","),
                      k.mean, k.top1, k.ppl))
end
