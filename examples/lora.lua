--- LoRA adapters: write a random rank-4 adapter for a model (the layout
-- llama.cpp reads: NAME.lora_a (r, in), NAME.lora_b (out, r),
-- adapter.lora.alpha), apply it at several scales, then save the merged
-- model and check it gives the same logits.
--   bin/slm examples/lora.lua MODEL.gguf [ADAPTER.gguf]
-- Any decoder in a GGUF file. The random adapter adapts the matrices the
-- model has among attention's q/v (or Phi-3's fused qkv) and the FFN's
-- down projection, Mamba's in/out projections and RWKV's key/value
-- matrices.
local slm = require "slm"
local common = require "examples.common"

-- no MODEL: slm's default model (the name "default", slm.model.resolve)
local path, adapter = require("slm.model").resolve(arg[1] or "default"), arg[2]
if not path then common.die("%s", select(2, require("slm.model").resolve("default"))) end
local base = common.model(path, { text = true, decoder = true, gguf = true })
local made
if not adapter then
  local CANDIDATES = { attn_q = true, attn_qkv = true, attn_v = true, ffn_down = true, ssm_in = true, ssm_out = true,
                       time_mix_key = true, time_mix_value = true, channel_mix_value = true }
  local targets, seen = {}, {}
  for _, info in ipairs(base.source.file.tensors) do
    local what = info.name:match("^blk%.%d+%.([%w_]+)%.weight$")
    if what and CANDIDATES[what] and #info.shape == 2 and not seen[what] then
      seen[what] = true
      targets[#targets + 1] = what
    end
  end
  if #targets == 0 then common.die("%s has none of the matrices this example adapts", path) end
  table.sort(targets)
  made = os.tmpname()
  os.remove(made)   -- the name only: the adapter goes to NAME.gguf
  made = made .. ".gguf"
  adapter = slm.lora.random_adapter { base = path, path = made, rank = 4, alpha = 8, std = 0.05, targets = targets }
  print("wrote a random adapter of " .. table.concat(targets, ", ") .. ": " .. adapter)
end
local text = "Once upon a time there was a little girl who lived in a village near the forest."
local ids = base.tokenizer:encode("Once upon a time")
local function top(m)
  local l = m:session { ctx = 64 }:eval(ids)
  local best, arg = -math.huge, 0
  for i = 1, l:numel() do if l[i] > best then best, arg = l[i], i - 1 end end
  return arg, l:totable()
end
for _, s in ipairs { 0, 0.5, 1, 2 } do
  local m = assert(slm.load(path, { lora = { { path = adapter, scale = s } } }))
  local k = slm.eval.kl(base, m, text, { ctx = 64 })
  print(string.format("scale %.2f: KL from base %.5f, top-1 agreement %.3f, next token after the prompt %d",
                      s, k.mean, k.top1, (top(m))))
end
local m = assert(slm.load(path)):apply_lora(adapter, 1.0)
local out = os.tmpname()
os.remove(out)
out = out .. ".gguf"
assert(slm.lora.save_merged(m, out))
local _, a = top(m)
local _, b = top(assert(slm.load(out)))
local same = true
for i = 1, #a do if a[i] ~= b[i] then same = false end end
print(same and "merged file: identical logits" or "merged file: logits differ")
os.remove(out)
if made then os.remove(made) end
