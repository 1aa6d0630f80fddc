--- LoRA adapters: write a random rank-4 adapter for a model (the layout
-- llama.cpp reads: NAME.lora_a (r, in), NAME.lora_b (out, r),
-- adapter.lora.alpha), apply it at several scales, then save the merged
-- model and check it gives the same logits.
--   bin/slm examples/lora.lua MODEL.gguf [ADAPTER.gguf]
local slm = require "slm"

local path, adapter = arg[1], arg[2]
if not path then
  io.stderr:write("usage: lora.lua MODEL.gguf [ADAPTER.gguf]\n")
  os.exit(2)
end
local base, err = slm.load(path)
if not base then
  io.stderr:write("lora.lua: ", err, "\n")
  os.exit(1)
end
local made
if not adapter then
  made = os.tmpname()
  os.remove(made)   -- the name only: the adapter goes to NAME.gguf
  made = made .. ".gguf"
  adapter = slm.lora.random_adapter { base = path, path = made, rank = 4, alpha = 8, std = 0.05,
                                      targets = { "attn_q", "attn_v", "ffn_down" } }
  print("wrote a random adapter: " .. adapter)
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
