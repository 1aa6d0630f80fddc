--- Pruning from Lua: magnitude pruning at several sparsities, removing
-- attention heads, and dropping FFN channels into a smaller GGUF; each
-- compared with the original by perplexity and KL divergence on a text.
--   bin/slm examples/prune.lua MODEL.gguf [text file]
local slm = require "slm"

local path, file = arg[1], arg[2]
if not path then
  io.stderr:write("usage: prune.lua MODEL.gguf [text file]\n")
  os.exit(2)
end
local model, err = slm.load(path)
if not model then
  io.stderr:write("prune.lua: ", err, "\n")
  os.exit(1)
end
local text = "Once upon a time there was a little girl who lived in a village near the forest. "
          .. "Whenever she went out, she wore a red riding cloak."
if file then
  local f = assert(io.open(file, "rb"))
  text = f:read("a")
  f:close()
end

local function report(name, m, extra)
  local k = slm.eval.kl(model, m, text, { ctx = 128 })
  print(string.format("%-28s ppl %9.3f  KL %.5f  top-1 %.3f  %s", name, k.ppl, k.mean, k.top1, extra or ""))
end

report("original", model)
for _, f in ipairs { 0.1, 0.3, 0.5 } do
  local m, st = slm.prune.magnitude(model, f)
  report(string.format("magnitude %d%%", math.floor(f * 100 + 0.5)), m,
         string.format("(%d of %d weights zeroed)", st.zeroed, st.total))
end
local m, st = slm.prune.magnitude(model, 0.5, { scope = "global" })
report("magnitude 50% global", m, string.format("(%d zeroed)", st.zeroed))
report("head 0 of every layer", slm.prune.heads(model, (function()
  local spec = {}
  for l = 0, model.hp.n_layer - 1 do spec[l] = { 0 } end
  return spec
end)()))

local out = os.tmpname()
os.remove(out)   -- the name only: the smaller model goes to NAME.gguf
out = out .. ".gguf"
local ok, n_ff = slm.prune.ffn_channels(path, out, { keep = 0.5 })
if not ok then
  io.stderr:write("prune.lua: ", n_ff, "\n")
  os.exit(1)
end
local function size(p)
  local f = assert(io.open(p, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end
report(string.format("ffn channels %d -> %d", model.hp.n_ff, n_ff), assert(slm.load(out)),
       string.format("(file %.2f -> %.2f MB)", size(path) / 1e6, size(out) / 1e6))
os.remove(out)
