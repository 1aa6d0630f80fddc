--- Quantizing with a per-tensor policy: attention values and the FFN down
-- projection (the most sensitive matrices) in q8_0, the other matrices in
-- q4_0, the embeddings and the norms as stored. Prints the dtypes chosen
-- and how far the result's next-token distributions are from the source's.
--   bin/slm examples/quantize_policy.lua IN.gguf OUT.gguf
-- Any GGUF model (slm.quantize reads and writes GGUF; rwkv.cpp files:
-- `bin/slm quantize`). Decoders are compared by their next-token
-- distributions, encoders by the cosine of their sentence embeddings.
local slm = require "slm"
local common = require "examples.common"

local src, dst = arg[1], arg[2]
if not src or not dst then
  io.stderr:write("usage: quantize_policy.lua IN.gguf OUT.gguf\n")
  os.exit(2)
end

local function policy(name, info)
  if #info.shape < 2 or name == "token_embd.weight" then return nil end   -- keep
  local row = info.shape[#info.shape]
  if name:match("attn_v%.weight$") or name:match("ffn_down%.weight$") then
    return row % 32 == 0 and "q8_0" or nil
  end
  return row % 32 == 0 and "q4_0" or nil
end

local a = common.model(src, { gguf = true })
local ok, counts = slm.quantize(src, dst, policy)
if not ok then common.die("%s", counts) end
local names = {}
for dt in pairs(counts) do names[#names + 1] = dt end
table.sort(names)
for _, dt in ipairs(names) do print(string.format("%-6s %d tensors", dt, counts[dt])) end
local size = common.file_size
print(string.format("%s: %.2f MB -> %s: %.2f MB", src, size(src) / 1e6, dst, size(dst) / 1e6))

local b = common.model(dst)
local text = "Once upon a time there was a little girl who lived in a village near the forest."
if not a.tokenizer then
  print("(no tokenizer: nothing to compare on a text)")
elseif a.def.encoder then
  local u, v = a:embed(text), b:embed(text)
  local cos = 0
  for i = 1, u:numel() do cos = cos + u:get(i) * v:get(i) end   -- unit vectors
  print(string.format("cosine of the sentence embeddings (source, quantized) %.6f", cos))
else
  local k = slm.eval.kl(a, b, text, { ctx = 64 })
  print(string.format("KL(source || quantized) mean %.5f max %.5f, top-1 agreement %.3f", k.mean, k.max, k.top1))
end
