--- Dense decoder-only transformers of the llama family: llama (Llama 1-3.x,
-- SmolLM2, TinyLlama, llama2.c checkpoints), qwen2, qwen3, phi3 (Phi-3 and
-- Phi-4-mini), smollm3 and granite. The forward pass reads like the paper:
--
--   x = embed(tokens) * embedding_scale
--   for each layer:  x = x + residual_scale * attention(rmsnorm(x))   -- RoPE, KV cache, GQA
--                    x = x + residual_scale * ffn(rmsnorm(x))         -- SwiGLU
--   logits = output(rmsnorm(x[last])) / logit_scale
--
-- (the scales are 1 except in granite). Each step is one call into a C block
-- (csrc/blocks/transformer.c); this file only decides which weights and
-- which options go where. The variants, as the reference computes them
-- (../shared/fixtures/gguf2/README.md):
--   llama    adjacent-pair RoPE ("normal"), separate q/k/v, gate/up/down;
--            Llama 3.x: rope_freqs.weight divides each pair's angle
--   qwen2    q/k/v biases, split-half RoPE ("neox"), often a tied head
--   qwen3    per-head RMSNorm of q and k (attn_q_norm/attn_k_norm) before
--            NeoX RoPE; head size from attention.key_length (H*d may differ
--            from the model width)
--   phi3     fused attn_qkv and gate|up in ffn_up, NeoX RoPE, q scaled
--            before attention; Phi-4-mini: partial rotary
--            (rope.dimension_count < head size), LongRoPE factor tensors
--            (long when the session's context, rounded up to a multiple of
--            256 as the reference sizes its cache, exceeds
--            rope.scaling.original_context_length, else short, at every
--            position) and rope.scaling.attn_factor
--   smollm3  llama's block with no RoPE on every 4th layer (NoPE)
--   granite  embedding, residual, attention and logit multipliers
local blocks = require("slm.core").blocks
local head = require("slm.hooks").head
local hparams = require("slm.models.hparams")

local llama = {
  name = "llama",
  archs = { "llama", "qwen2", "qwen3", "phi3", "smollm3", "granite", "qwen2moe", "qwen3moe", "olmoe" },
}

local rope_mode = { llama = "normal", qwen2 = "neox", qwen3 = "neox", phi3 = "neox", smollm3 = "normal",
                    granite = "normal", qwen2moe = "neox", qwen3moe = "neox", olmoe = "neox" }

-- Mixture-of-experts families and whether the reference renormalizes the
-- selected experts' weights (fixed per architecture, not in the files)
local MOE_RENORM = { llama = true, qwen3moe = true, qwen2moe = false, olmoe = false }
-- q/k RMSNorm per head (qwen3, qwen3moe) or over the whole projection (olmoe)
local QK_NORM = { qwen3 = "head", qwen3moe = "head", olmoe = "full" }

--- Hyper-parameters from GGUF metadata (`<arch>.*` keys).
function llama.hparams(src)
  local arch = src.arch
  local k = hparams.reader(src)
  local hp = hparams.attention(src, k)   -- the keys every attention model shares
  hp.rope_mode = rope_mode[arch]
  if arch == "llama" and hp.n_rot ~= hp.head_dim then
    -- the reference refuses these too (llama rotates whole heads)
    error(string.format("%s: %s.rope.dimension_count is %d, the head size %d", src.path, arch, hp.n_rot,
                        hp.head_dim), 0)
  end
  if arch == "phi3" then
    -- Phi-4-mini's file carries Phi's sliding window (262144); the
    -- reference disables it for phi3 and computes full causal attention,
    -- as slm does: read (so understood) and not applied
    k.int("attention.sliding_window", 0)
  end
  if arch == "granite" then
    hp.embedding_scale = k.num("embedding_scale", 1)
    hp.residual_scale = k.num("residual_scale", 1)
    hp.logit_scale = k.num("logit_scale")
    local s = k.num("attention.scale", 0)
    if s ~= 0 then hp.attn_scale = s end
    for _, c in ipairs { "embedding_scale", "residual_scale", "logit_scale" } do
      if not (hp[c] > 0 and hp[c] < math.huge) then
        error(string.format("%s: granite.%s is %s (expected a positive number)", src.path, c, tostring(hp[c])), 0)
      end
    end
    if not (s >= 0 and s < math.huge) then
      error(string.format("%s: granite.attention.scale is %s", src.path, tostring(s)), 0)
    end
  end
  -- experts: Mixtral's layout in a llama file (each expert feed_forward_length
  -- wide), qwen2moe/qwen3moe (expert_feed_forward_length; the converter's
  -- feed_forward_length is unused), olmoe
  if hp.n_expert > 0 then
    if MOE_RENORM[arch] == nil then hparams.no_experts(src, hp) end
    hparams.experts(src, k, hp, MOE_RENORM[arch])
    local ff_key = "feed_forward_length"
    if arch == "qwen2moe" or arch == "qwen3moe" then
      ff_key = "expert_feed_forward_length"
      hp.n_ff = k.int(ff_key)
    end
    hparams.check_ff(src, hp, ff_key, "blk.0.ffn_down_exps.weight")
    if arch == "qwen2moe" then hp.n_ff_shared = k.int("expert_shared_feed_forward_length", 0) end
  elseif MOE_RENORM[arch] ~= nil and arch ~= "llama" then
    error(string.format("%s: %s.expert_count is missing or 0", src.path, arch), 0)
  end
  if arch == "smollm3" then
    -- SmolLM3 skips RoPE on layers with (il + 1) % 4 == 0; the converter
    -- writes no key for it and the reference fixes the period at 4
    hp.nope_period = 4
  end
  return hp
end

--- The model's blocks, built once at load.
function llama.build(src, hp)
  local w, opt, f32, vec = hparams.getters(src)
  local m = { hp = hp, layers = {} }
  m.tok_embd = w("token_embd.weight")
  hparams.check_vocab(src, hp, m.tok_embd)
  m.output_norm = vec("output_norm.weight", hp.dim)
  m.output = opt("output.weight") or m.tok_embd     -- tied head
  if hp.embedding_scale and hp.embedding_scale ~= 1 then m.embed_scale = hp.embedding_scale end
  if hp.residual_scale and hp.residual_scale ~= 1 then m.residual_scale = hp.residual_scale end
  if hp.logit_scale and hp.logit_scale ~= 1 then m.logit_mul = 1 / hp.logit_scale end

  -- RoPE frequency factors: Llama 3's rope_freqs (every layer), or
  -- LongRoPE's long and short vectors (Phi-3/4: one set of blocks each)
  local n_half = hp.n_rot // 2
  local freqs = f32("rope_freqs.weight", n_half)
  local long, short = f32("rope_factors_long.weight", n_half), f32("rope_factors_short.weight", n_half)
  if (long == nil) ~= (short == nil) then
    error(src.path .. ": LongRoPE needs both rope_factors_long.weight and rope_factors_short.weight", 0)
  end
  if long and freqs then error(src.path .. ": both rope_freqs.weight and LongRoPE factors", 0) end
  if long then m.long_ctx = hp.n_ctx_orig end    -- sessions with a larger context use the long factors

  for l = 1, hp.n_layer do
    local p = "blk." .. (l - 1) .. "."
    local layer = {
      attn_norm = vec(p .. "attn_norm.weight", hp.dim),
      ffn_norm = vec(p .. "ffn_norm.weight", hp.dim),
      kv_dim = hp.n_head_kv * hp.head_dim,
    }
    local nope = hp.nope_period and l % hp.nope_period == 0
    local extra = (freqs and "rope_freqs" or long and "longrope" or "") ..
                  (hp.n_rot < hp.head_dim and (" rotary " .. hp.n_rot .. "/" .. hp.head_dim) or "")
    layer.kind = nope and "no rope" or hparams.rope_kind(hp.rope_base, hp.rope_scale, extra)
    local qk = QK_NORM[hp.arch] or "head"
    local qn = qk == "full" and hp.n_head * hp.head_dim or hp.head_dim
    local kn = qk == "full" and hp.n_head_kv * hp.head_dim or hp.head_dim
    local function attention(factors)
      return hparams.block(src, p, blocks.attention, {
        dim = hp.dim, n_head = hp.n_head, n_head_kv = hp.n_head_kv, head_dim = hp.head_dim,
        scale = hp.attn_scale, norm_eps = hp.eps,
        rope = not nope and {
          mode = hp.rope_mode, n_rot = hp.n_rot, base = hp.rope_base, scale = hp.rope_scale,
          factors = factors, attn_factor = hp.rope_attn_factor,
        },
        prescale_q = hp.arch == "phi3",   -- phi3 scales q before attention
        wq = opt(p .. "attn_q.weight"), wk = opt(p .. "attn_k.weight"), wv = opt(p .. "attn_v.weight"),
        wqkv = opt(p .. "attn_qkv.weight"), wo = w(p .. "attn_output.weight"),
        bq = f32(p .. "attn_q.bias"), bk = f32(p .. "attn_k.bias"), bv = f32(p .. "attn_v.bias"),
        bo = f32(p .. "attn_output.bias"),
        -- qwen3/qwen3moe normalize q and k per head, olmoe over the whole
        -- projection (required there)
        qk_norm = qk, q_norm = (QK_NORM[hp.arch] and vec or f32)(p .. "attn_q_norm.weight", qn),
        k_norm = (QK_NORM[hp.arch] and vec or f32)(p .. "attn_k_norm.weight", kn),
      })
    end
    layer.attn = attention(short or freqs)
    if long then layer.attn_long = attention(long) end
    if hp.n_expert > 0 then
      -- router, the experts' 3-D stacks, and qwen2moe's shared expert with
      -- its sigmoid gate
      layer.moe = hparams.block(src, "layer " .. (l - 1) .. ": ", blocks.moe, {
        dim = hp.dim, n_expert = hp.n_expert, n_used = hp.n_expert_used, n_ff = hp.n_ff,
        gating = hp.gating, norm = hp.norm_topk, scale = hp.expert_scale, act = "silu",
        router = w(p .. "ffn_gate_inp.weight"),
        gate = w(p .. "ffn_gate_exps.weight"), up = w(p .. "ffn_up_exps.weight"),
        down = w(p .. "ffn_down_exps.weight"),
        shared = (hp.n_ff_shared or 0) > 0 and {
          gate = w(p .. "ffn_gate_shexp.weight"), up = w(p .. "ffn_up_shexp.weight"),
          down = w(p .. "ffn_down_shexp.weight"),
        } or nil,
        -- (1, dim) as converted; the reference's quantizer writes it 1-D
        shared_gate = (hp.n_ff_shared or 0) > 0 and w(p .. "ffn_gate_inp_shexp.weight"):reshape(1, hp.dim) or nil,
      })
    else
      local gate = opt(p .. "ffn_gate.weight")
      layer.ffn = hparams.block(src, p, blocks.ffn, {
        dim = hp.dim, n_ff = hp.n_ff, act = "silu",
        gate = gate, down = w(p .. "ffn_down.weight"),
        -- without ffn_gate, phi3's ffn_up holds gate and up stacked
        up = gate and w(p .. "ffn_up.weight") or nil,
        gate_up = (not gate) and w(p .. "ffn_up.weight") or nil,
      })
    end
    m.layers[l] = layer
  end
  -- the layer plan: which layer runs at each step (model:variant changes it
  -- for layer skipping, early exit and recursion over a block)
  m.plan = {}
  for l = 1, hp.n_layer do m.plan[l] = l end
  m.features = {}
  local function feat(cond, s) if cond then m.features[#m.features + 1] = s end end
  if hp.n_expert > 0 then
    m.n_expert, m.n_expert_used = hp.n_expert, hp.n_expert_used
    feat(true, string.format("%d experts, %d per token (%s%s)", hp.n_expert, hp.n_expert_used, hp.gating,
                             hp.norm_topk and ", renormalized" or ""))
    feat(hp.n_ff_shared, "shared expert")
  end
  feat(QK_NORM[hp.arch], "q/k norm" .. (QK_NORM[hp.arch] == "full" and " (whole projection)" or ""))
  feat(src.has("blk.0.attn_q.bias"), "q/k/v biases")
  feat(m.embed_scale, "embedding x" .. tostring(hp.embedding_scale))
  feat(m.residual_scale, "residual x" .. tostring(hp.residual_scale))
  feat(hp.attn_scale, "attention scale " .. tostring(hp.attn_scale))
  feat(m.logit_mul, "logits /" .. tostring(hp.logit_scale))
  feat(hp.rope_attn_factor ~= 1, "rope attn factor " .. tostring(hp.rope_attn_factor))
  feat(m.output == m.tok_embd, "tied head")
  return m
end

llama.describe = hparams.describe

-- forward honours m.plan and m.hooks (slm.hooks), and fills s.all_logits
llama.plans, llama.hook_points, llama.all_logits = true, "full", true
-- its forward takes a training session's recording ops (s.blocks, s.head): slm.train
llama.trainable = true
-- its forward runs the rows of several sessions (s.state a SeqBatch): slm.batch
llama.batched = true

--- Per-session state: the KV cache (one slot per step of the layer plan,
-- shaped as that step's layer: its kv width and window) and the workspace
-- every block takes its scratch from.
function llama.state(m, opts)
  return hparams.kv_state(m, opts)
end

--- Per-session buffers of MoE models: the router logits (n_batch,
-- n_expert), which the blk.N.router hook sees, and the expert usage counts
-- (sess:expert_counts()).
function llama.prepare(m, s)
  if not m.n_expert then return end
  s.router = require("slm.tensor").zeros { s.n_batch, m.n_expert }
  s.moe_counts = blocks.expert_counts(#m.layers, m.n_expert)
end

--- Runs tokens ids[first .. first+n-1] at positions s.n_past.., leaving the
-- logits of the last one in s.logits (of every one in s.all_logits when the
-- session has that buffer). s.x, s.h, s.y are (n_batch, dim). m.hooks is nil
-- unless model:hook() registered some; `at` then calls them on a view.
-- models/gemma.lua runs this forward too: its layers add post norms to
-- the attention and feed-forward branches, its embedding is scaled and its
-- logits soft-capped (slm.hooks head).
function llama.forward(m, s, ids, first, n)
  local hp, x, h, y, hooks, work = m.hp, s.x, s.h, s.y, m.hooks, s.work
  -- a training session records each op on its tape (slm.train): its own
  -- versions of the row ops and of the head
  local blocks, head = s.blocks or blocks, s.head or head
  -- LongRoPE: the long factors when the context, rounded up to 256 as the
  -- reference allocates it, exceeds the original one
  local long = m.long_ctx and (s.n_ctx + 255) // 256 * 256 > m.long_ctx
  blocks.embed(x, m.tok_embd, ids, first, n)
  if m.embed_scale then blocks.scale(x, m.embed_scale, 1, n) end
  for step, l in ipairs(m.plan) do
    local L, at = m.layers[l], hooks and hooks:at(l, step, s, n)
    blocks.rmsnorm(h, x, L.attn_norm, hp.eps, 1, n)
    if at then at("attn_in", h) end
    local attn = long and L.attn_long or L.attn
    attn:forward(y, h, s.state, step, s.n_past, n, work)
    if L.attn_post_norm then blocks.rmsnorm(y, y, L.attn_post_norm, hp.eps, 1, n) end   -- gemma2/3
    if at then at("attn_out", y) end
    blocks.add(x, y, 1, n, m.residual_scale)
    blocks.rmsnorm(h, x, L.ffn_norm, hp.eps, 1, n)
    if at then at("ffn_in", h) end
    if L.moe then
      -- router logits (a hook may read or change them), then the experts
      L.moe:route(s.router, h, n)
      if at then at("router", s.router) end
      L.moe:forward(y, h, s.router, work, n, m.expert_modes and m.expert_modes[l], s.moe_counts, l)
    else
      L.ffn:forward(y, h, work, n)
    end
    if L.ffn_post_norm then blocks.rmsnorm(y, y, L.ffn_post_norm, hp.eps, 1, n) end     -- gemma2/3
    if at then at("ffn_out", y) end
    blocks.add(x, y, 1, n, m.residual_scale)
    if at then at("out", x) end
  end
  local rows = (s.all_logits or s.embd) and 1 or n    -- every row for all logits or model:embed
  blocks.rmsnorm(h, x, m.output_norm, hp.eps, rows, n - rows + 1)
  head(m, s, m.output, h, rows, n)        -- logits = output . h (hooks: output_norm, logits)
end

--- llama2.c checkpoints carry their own header instead of metadata.
function llama.hparams_llama2c(src)
  local cfg = src.config
  local head_dim = cfg.dim // cfg.n_heads
  return {
    arch = "llama", n_ctx_train = cfg.seq_len, dim = cfg.dim, n_layer = cfg.n_layers,
    n_ff = cfg.hidden_dim, n_head = cfg.n_heads, n_head_kv = cfg.n_kv_heads,
    head_dim = head_dim, n_rot = head_dim, eps = 1e-5, rope_base = 10000.0,
    rope_mode = "normal", rope_scale = 1, rope_attn_factor = 1, n_expert = 0,
  }
end

return llama
