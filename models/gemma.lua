--- Google's Gemma family: gemma (Gemma 1), gemma2 and gemma3 (text). The
-- forward pass, as the reference computes it (../shared/fixtures/gguf2/README.md):
--
--   x = embed(tokens) * sqrt(dim)
--   for each layer:  x = x + post_attention_norm(attention(rmsnorm(x)))
--                    x = x + post_ffw_norm(ffn(rmsnorm(x)))       -- GeGLU
--   logits = softcap(output(rmsnorm(x[last])))
--
-- Gemma 1 has no post norms and no caps. Gemma's RMSNorm multiplies by
-- (1 + w); the converter stores 1 + w, so the files' weights are used as
-- they are. The query is scaled by 1/sqrt(key_length) before attention
-- (1/sqrt(dim / heads) for the 27B shapes, as the reference).
--   gemma2  attention-logit soft cap (default 50) and final-logit soft cap
--           (default 30); sliding-window attention on the layers the pattern
--           says (period 2 by default: even layers slide), window
--           attention.sliding_window (default 4096)
--   gemma3  per-head RMSNorm of q and k; sliding window on layers with
--           il % 6 < 5 (period from attention.sliding_window_pattern when
--           present); sliding layers use rope.freq_base_swa (1e4) without
--           scaling, global layers rope.freq_base with the file's linear
--           scaling; a final cap only when the file has one
-- Sliding-window layers keep a ring of the window in the KV cache
-- (blocks/kvcache.h), so a long context costs memory for global layers only.
local blocks = require("slm.core").blocks
local hparams = require("slm.models.hparams")

local gemma = {
  name = "gemma",
  archs = { "gemma", "gemma2", "gemma3" },
}

-- the reference's query scaling: 1/sqrt(dim / heads) for the 27B shapes
-- (46 layers in Gemma 2, 62 in Gemma 3), else 1/sqrt(key_length)
local BIG = { gemma2 = 46, gemma3 = 62 }

--- Which layers slide: attention.sliding_window_pattern as a period n
-- (layer il slides iff n == 0 or il % n < n - 1) or as a list of booleans,
-- else the family's default period.
local function swa_layers(src, k, hp, default_period)
  local raw = k.raw("attention.sliding_window_pattern")
  local is_swa = {}
  if type(raw) == "table" then
    if #raw ~= hp.n_layer then
      error(string.format("%s: %s.attention.sliding_window_pattern has %d entries for %d layers", src.path,
                          hp.arch, #raw, hp.n_layer), 0)
    end
    for l = 1, hp.n_layer do
      if type(raw[l]) ~= "boolean" then
        error(string.format("%s: %s.attention.sliding_window_pattern must hold booleans", src.path, hp.arch), 0)
      end
      is_swa[l] = raw[l]
    end
    return is_swa
  end
  local period = raw == nil and default_period or k.int("attention.sliding_window_pattern")
  if period < 0 then error(string.format("%s: %s.attention.sliding_window_pattern is negative", src.path, hp.arch), 0) end
  for l = 1, hp.n_layer do
    local il = l - 1
    is_swa[l] = period == 0 or il % period < period - 1
  end
  return is_swa
end

--- Hyper-parameters from GGUF metadata (`<arch>.*` keys).
function gemma.hparams(src)
  local arch = src.arch
  local k = hparams.reader(src)
  local hp = hparams.attention(src, k)
  hparams.no_experts(src, hp)
  hp.rope_mode = "neox"
  hp.q_scale = 1 / math.sqrt(hp.n_layer == BIG[arch] and hp.dim // hp.n_head or hp.head_dim)
  hp.is_swa = {}
  if arch == "gemma2" then
    hp.window = k.int("attention.sliding_window", 4096)
    hp.is_swa = swa_layers(src, k, hp, 2)
    hp.attn_softcap = k.num("attn_logit_softcapping", 50)
    hp.final_softcap = k.num("final_logit_softcapping", 30)
    -- sliding layers: their own base (default the global one), the global scaling
    hp.rope_base_swa = k.num("rope.freq_base_swa", hp.rope_base)
    hp.rope_scale_swa = hp.rope_scale
  elseif arch == "gemma3" then
    hp.window = k.int("attention.sliding_window", 0)
    if hp.window > 0 then hp.is_swa = swa_layers(src, k, hp, 6) end
    local cap = k.num("final_logit_softcapping", 0)
    if cap ~= 0 then hp.final_softcap = cap end
    hp.rope_base_swa = k.num("rope.freq_base_swa", 10000.0)
    hp.rope_scale_swa = 1
  end
  for _, c in ipairs { "attn_softcap", "final_softcap" } do
    if hp[c] and not (hp[c] > 0) then error(string.format("%s: %s soft cap %s must be positive", src.path, arch, tostring(hp[c])), 0) end
  end
  if hp.window and (hp.window < 0 or hp.window > (1 << 24)) then
    error(string.format("%s: %s.attention.sliding_window is %d (expected 0..16777216)", src.path, arch, hp.window), 0)
  end
  if hp.rope_base_swa and not (hp.rope_base_swa > 0 and hp.rope_base_swa < math.huge) then
    error(string.format("%s: %s.rope.freq_base_swa is %s (expected a positive number)", src.path, arch,
                        tostring(hp.rope_base_swa)), 0)
  end
  return hp
end

--- The model's blocks, built once at load.
function gemma.build(src, hp)
  local w, opt, f32, vec = hparams.getters(src)
  local m = { hp = hp, layers = {} }
  m.tok_embd = w("token_embd.weight")
  hparams.check_vocab(src, hp, m.tok_embd)
  m.output_norm = vec("output_norm.weight", hp.dim)
  m.output = opt("output.weight") or m.tok_embd        -- tied head
  m.embed_scale = math.sqrt(hp.dim)
  m.logit_softcap = hp.final_softcap
  local post = hp.arch ~= "gemma"                      -- gemma2/3: post norms
  for l = 1, hp.n_layer do
    local p = "blk." .. (l - 1) .. "."
    local swa = hp.is_swa[l] or false
    local layer = {
      attn_norm = vec(p .. "attn_norm.weight", hp.dim),
      ffn_norm = vec(p .. "ffn_norm.weight", hp.dim),
      attn_post_norm = post and vec(p .. "post_attention_norm.weight", hp.dim) or nil,
      ffn_post_norm = post and vec(p .. "post_ffw_norm.weight", hp.dim) or nil,
      kv_dim = hp.n_head_kv * hp.head_dim,
      window = swa and hp.window or 0,
    }
    layer.kind = (swa and ("window " .. hp.window .. ", ") or "") ..
                 hparams.rope_kind(swa and hp.rope_base_swa or hp.rope_base, swa and hp.rope_scale_swa or hp.rope_scale)
    layer.attn = hparams.block(src, p, blocks.attention, {
      dim = hp.dim, n_head = hp.n_head, n_head_kv = hp.n_head_kv, head_dim = hp.head_dim,
      scale = hp.q_scale, prescale_q = true,          -- q scaled before attention
      softcap = hp.attn_softcap, window = layer.window, norm_eps = hp.eps,
      rope = {
        mode = "neox", n_rot = hp.n_rot,
        base = swa and hp.rope_base_swa or hp.rope_base,
        scale = swa and hp.rope_scale_swa or hp.rope_scale,
        attn_factor = hp.rope_attn_factor,
      },
      wq = w(p .. "attn_q.weight"), wk = w(p .. "attn_k.weight"), wv = w(p .. "attn_v.weight"),
      wo = w(p .. "attn_output.weight"),
      -- gemma3 normalizes q and k per head (required there)
      q_norm = (hp.arch == "gemma3" and vec or f32)(p .. "attn_q_norm.weight", hp.head_dim),
      k_norm = (hp.arch == "gemma3" and vec or f32)(p .. "attn_k_norm.weight", hp.head_dim),
    })
    layer.ffn = hparams.block(src, p, blocks.ffn, {
      dim = hp.dim, n_ff = hp.n_ff, act = "gelu",      -- GeGLU: gelu(gate x) * up x
      gate = w(p .. "ffn_gate.weight"), up = w(p .. "ffn_up.weight"), down = w(p .. "ffn_down.weight"),
    })
    m.layers[l] = layer
  end
  m.plan = {}
  for l = 1, hp.n_layer do m.plan[l] = l end
  m.features = { "embedding x sqrt(dim)", "GeGLU" }
  if post then m.features[#m.features + 1] = "post norms" end
  if hp.arch == "gemma3" then m.features[#m.features + 1] = "q/k norm" end
  if hp.attn_softcap then m.features[#m.features + 1] = "attention cap " .. hp.attn_softcap end
  if hp.final_softcap then m.features[#m.features + 1] = "final cap " .. hp.final_softcap end
  return m
end

gemma.describe = hparams.describe
gemma.plans, gemma.hook_points, gemma.all_logits = true, "full", true

--- Per-session state: KV cache (windowed layers as rings unless
-- swa_ring = false) and the blocks' workspace.
function gemma.state(m, opts)
  return hparams.kv_state(m, opts)
end

--- The forward pass is models/llama.lua's: embedding scale, post norms and
-- the final cap are fields of the net it reads (m.embed_scale,
-- L.attn_post_norm, L.ffn_post_norm, m.logit_softcap). The hook points
-- attn_out and ffn_out see each branch after its post norm.
gemma.forward = require("slm.models.llama").forward
gemma.trainable = true   -- llama's forward records on a training tape (slm.train)
gemma.batched = true     -- and runs several sessions' rows at once (slm.batch)

return gemma
