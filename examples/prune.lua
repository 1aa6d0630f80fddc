--- Pruning from Lua: magnitude pruning at several sparsities, removing
-- attention heads, and dropping FFN channels into a smaller GGUF; each
-- compared with the original by perplexity and KL divergence on a text.
--   bin/slm examples/prune.lua MODEL.gguf [text file]
-- Magnitude pruning applies to every decoder in a GGUF file. Head pruning
-- needs separate attn_q/attn_output matrices (not Phi-3's fused attn_qkv,
-- and Mamba and RWKV have no heads); FFN-channel pruning needs a gated
-- feed-forward (ffn_gate, ffn_up, ffn_down) in every layer, which MoE
-- models and Phi-3's fused gate-up have not. What does not apply is said at
-- the start and skipped.
local slm = require "slm"
local common = require "examples.common"

-- no MODEL: slm's default model (the name "default", slm.model.resolve)
local path, file = require("slm.model").resolve(arg[1] or "default"), arg[2]
if not path then common.die("%s", select(2, require("slm.model").resolve("default"))) end
local model = common.model(path, { text = true, decoder = true, gguf = true })
local text = "Once upon a time there was a little girl who lived in a village near the forest. "
          .. "Whenever she went out, she wore a red riding cloak."
if file then
  local f, err = io.open(file, "rb")
  if not f then common.die("%s", err) end
  text = f:read("a")
  f:close()
end

-- what applies to this model
local src, arch, n_layer = model.source, model.hp.arch, model.hp.n_layer
local heads, ffn = {}, type(model.hp.n_ff) == "number" and model.hp.n_ff // 2 >= 32
for l = 0, n_layer - 1 do
  local p = "blk." .. l .. "."
  if src.has(p .. "attn_q.weight") then heads[l] = { 0 } end
  ffn = ffn and src.has(p .. "ffn_gate.weight") and src.has(p .. "ffn_up.weight") and src.has(p .. "ffn_down.weight")
end
local n_heads = 0
for _ in pairs(heads) do n_heads = n_heads + 1 end
if n_heads == 0 then
  io.stderr:write(string.format("prune.lua: %s has no separate attn_q (fused attn_qkv, or no attention): "
                                .. "no head pruning\n", arch))
end
if not ffn then
  io.stderr:write(string.format("prune.lua: %s has no gated feed-forward of 64+ channels in every layer: "
                                .. "no FFN-channel pruning\n", arch))
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
if n_heads > 0 then
  report(string.format("head 0 of %d layer%s", n_heads, n_heads > 1 and "s" or ""), slm.prune.heads(model, heads))
end

if ffn then
  local out = os.tmpname()
  os.remove(out)   -- the name only: the smaller model goes to NAME.gguf
  out = out .. ".gguf"
  local ok, n_ff = slm.prune.ffn_channels(path, out, { keep = 0.5 })
  if not ok then common.die("%s", n_ff) end
  local size = common.file_size
  report(string.format("ffn channels %d -> %d", model.hp.n_ff, n_ff), assert(slm.load(out)),
         string.format("(file %.2f -> %.2f MB)", size(path) / 1e6, size(out) / 1e6))
  os.remove(out)
end
