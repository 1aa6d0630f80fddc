--- Quantizing with a per-tensor policy: attention values and the FFN down
-- projection (the most sensitive matrices) in q8_0, the other matrices in
-- q4_0, the embeddings and the norms as stored. Prints the dtypes chosen
-- and how far the result's next-token distributions are from the source's.
--   bin/slm examples/quantize_policy.lua IN.gguf OUT.gguf
local slm = require "slm"

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

local ok, counts = slm.quantize(src, dst, policy)
if not ok then
  io.stderr:write("quantize_policy.lua: ", counts, "\n")
  os.exit(1)
end
local names = {}
for dt in pairs(counts) do names[#names + 1] = dt end
table.sort(names)
for _, dt in ipairs(names) do print(string.format("%-6s %d tensors", dt, counts[dt])) end
local function size(p)
  local f = assert(io.open(p, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end
print(string.format("%s: %.2f MB -> %s: %.2f MB", src, size(src) / 1e6, dst, size(dst) / 1e6))

local a, b = assert(slm.load(src)), assert(slm.load(dst))
if a.tokenizer then
  local text = "Once upon a time there was a little girl who lived in a village near the forest."
  local k = slm.eval.kl(a, b, text, { ctx = 64 })
  print(string.format("KL(source || quantized) mean %.5f max %.5f, top-1 agreement %.3f", k.mean, k.max, k.top1))
end
