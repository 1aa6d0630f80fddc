--- Dense decoder-only transformers: llama, qwen2, phi3 (and llama2.c
-- checkpoints, which are llama). The forward pass reads like the paper:
--
--   x = embed(tokens)
--   for each layer:  x = x + attention(rmsnorm(x))   -- RoPE, KV cache, GQA
--                    x = x + ffn(rmsnorm(x))         -- SwiGLU
--   logits = output(rmsnorm(x[last]))
--
-- Each step is one call into a C block (csrc/blocks/transformer.c); this
-- file only decides which weights go where. Variants differ in details:
--   llama  adjacent-pair RoPE ("normal"), separate q/k/v, gate/up/down
--   qwen2  q/k/v biases, split-half RoPE ("neox"), often a tied output head
--   phi3   fused attn_qkv and fused gate|up in ffn_up, split-half RoPE
local blocks = require("slm.core").blocks
local head = require("slm.hooks").head

local llama = {
  name = "llama",
  archs = { "llama", "qwen2", "phi3" },
}

local rope_mode = { llama = "normal", qwen2 = "neox", phi3 = "neox" }

--- Hyper-parameters from GGUF metadata (`<arch>.*` keys).
function llama.hparams(src)
  local arch = src.arch
  local function key(k, default)
    local v = src.meta(arch .. "." .. k)
    if v == nil then
      if default == nil then error(string.format("%s: missing metadata %s.%s", src.path, arch, k), 0) end
      return default
    end
    return v
  end
  local hp = {
    arch = arch,
    n_vocab = nil,
    n_ctx_train = key("context_length", 2048),
    dim = key("embedding_length"),
    n_layer = key("block_count"),
    n_ff = key("feed_forward_length"),
    n_head = key("attention.head_count"),
    eps = key("attention.layer_norm_rms_epsilon", 1e-5),
    rope_base = key("rope.freq_base", 10000.0),
    rope_mode = rope_mode[arch],
  }
  hp.n_head_kv = key("attention.head_count_kv", hp.n_head)
  hp.head_dim = key("attention.key_length", hp.dim // hp.n_head)
  hp.n_rot = key("rope.dimension_count", hp.head_dim)
  local stype = key("rope.scaling.type", "none")
  local factor = key("rope.scaling.factor", 0)
  if stype == "linear" and factor > 0 then
    hp.rope_scale = 1 / factor
  elseif stype == "none" or factor == 0 or stype == "" then
    hp.rope_scale = 1
  else
    error(string.format("%s: rope scaling '%s' is not supported (only linear)", src.path, stype), 0)
  end
  return hp
end

--- The model's blocks, built once at load.
function llama.build(src, hp)
  local function w(name) return src.tensor(name) end
  local function opt(name) return src.has(name) and src.tensor(name) or nil end
  local function f32(name)
    local t = opt(name)
    if t and t:dtype() ~= "f32" then t = t:to("f32") end
    return t
  end
  local m = { hp = hp, layers = {} }
  m.tok_embd = w("token_embd.weight")
  hp.n_vocab = m.tok_embd:size(1)
  m.output_norm = f32("output_norm.weight")
  m.output = opt("output.weight") or m.tok_embd     -- tied head
  local rope = { mode = hp.rope_mode, n_rot = hp.n_rot, base = hp.rope_base, scale = hp.rope_scale }
  for l = 1, hp.n_layer do
    local p = "blk." .. (l - 1) .. "."
    local layer = {
      attn_norm = f32(p .. "attn_norm.weight"),
      ffn_norm = f32(p .. "ffn_norm.weight"),
    }
    layer.attn = blocks.attention {
      dim = hp.dim, n_head = hp.n_head, n_head_kv = hp.n_head_kv, head_dim = hp.head_dim,
      rope = rope,
      prescale_q = hp.arch == "phi3",   -- phi3 scales q before attention
      wq = opt(p .. "attn_q.weight"), wk = opt(p .. "attn_k.weight"), wv = opt(p .. "attn_v.weight"),
      wqkv = opt(p .. "attn_qkv.weight"), wo = w(p .. "attn_output.weight"),
      bq = f32(p .. "attn_q.bias"), bk = f32(p .. "attn_k.bias"), bv = f32(p .. "attn_v.bias"),
      bo = f32(p .. "attn_output.bias"),
    }
    local gate = opt(p .. "ffn_gate.weight")
    layer.ffn = blocks.ffn {
      dim = hp.dim, n_ff = hp.n_ff, act = "silu",
      gate = gate, down = w(p .. "ffn_down.weight"),
      -- without ffn_gate, phi3's ffn_up holds gate and up stacked
      up = gate and w(p .. "ffn_up.weight") or nil,
      gate_up = (not gate) and w(p .. "ffn_up.weight") or nil,
    }
    m.layers[l] = layer
  end
  -- the layer plan: which layer runs at each step (model:variant changes it
  -- for layer skipping, early exit and recursion over a block)
  m.plan = {}
  for l = 1, hp.n_layer do m.plan[l] = l end
  return m
end

-- forward honours m.plan and m.hooks (slm.hooks), and fills s.all_logits
llama.plans, llama.hook_points, llama.all_logits = true, "full", true

--- Per-session state: the KV cache (one slot per step of the layer plan,
-- so a repeated layer keeps its own keys and values) and the buffers.
function llama.state(m, opts)
  local hp = m.hp
  return blocks.kv_state {
    n_layer = #m.plan, n_ctx = opts.n_ctx, n_head = hp.n_head, n_head_kv = hp.n_head_kv,
    head_dim = hp.head_dim, n_ff = hp.n_ff, n_batch = opts.n_batch,
  }
end

--- Runs tokens ids[first .. first+n-1] at positions s.n_past.., leaving the
-- logits of the last one in s.logits (of every one in s.all_logits when the
-- session has that buffer). s.x, s.h, s.y are (n_batch, dim). m.hooks is nil
-- unless model:hook() registered some; `at` then calls them on a view.
function llama.forward(m, s, ids, first, n)
  local hp, x, h, y, hooks = m.hp, s.x, s.h, s.y, m.hooks
  blocks.embed(x, m.tok_embd, ids, first, n)
  for step, l in ipairs(m.plan) do
    local L, at = m.layers[l], hooks and hooks:at(l, step, s, n)
    blocks.rmsnorm(h, x, L.attn_norm, hp.eps, 1, n)
    if at then at("attn_in", h) end
    L.attn:forward(y, h, s.state, step, s.n_past, n)
    if at then at("attn_out", y) end
    blocks.add(x, y, 1, n)
    blocks.rmsnorm(h, x, L.ffn_norm, hp.eps, 1, n)
    if at then at("ffn_in", h) end
    L.ffn:forward(y, h, s.state, n)
    if at then at("ffn_out", y) end
    blocks.add(x, y, 1, n)
    if at then at("out", x) end
  end
  local rows = s.all_logits and 1 or n    -- every row only when all logits are wanted
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
    rope_mode = "normal", rope_scale = 1,
  }
end

return llama
