--- BERT encoders (general.architecture "bert": BERT, MiniLM, BGE and the
-- sentence-transformers embedders converted by the reference), as the
-- reference computes them (../shared/fixtures/gguf3/README.md):
--
--   x = layernorm(token_embd[id] + token_types[0] + position_embd[pos])
--   for each layer:  x = layernorm(x + attention(x))   -- post-norm; no mask, no RoPE
--                    x = layernorm(x + ffn(x))         -- GELU, biases
--   embedding = pool(x)                                -- none, mean, cls or last
--
-- An encoder has no KV cache and no logits: every token attends to every
-- token of its input (unless the file says attention.causal), so the whole
-- input goes through at once, in `encode`, and model:embed pools and
-- normalizes the rows it returns. Every token is of type 0 ("sentence A"),
-- as in the reference. Attention is 1/sqrt(head size) scaled with biases on
-- q, k, v and the output; the GELU is the tanh form through the reference's
-- f16 table (blocks.ffn's "gelu").
local blocks = require("slm.core").blocks
local hparams = require("slm.models.hparams")

local bert = {
  name = "bert",
  archs = { "bert" },
  encoder = true,        -- model:embed runs `encode`; model:session refuses
  hook_points = "full",  -- blk.N.attn_in/attn_out/ffn_in/ffn_out/out
}

-- bert.pooling_type, as the reference numbers it (4 is a reranker's "rank")
local POOLING = { [0] = "none", "mean", "cls", "last" }

--- Hyper-parameters from GGUF metadata (`bert.*` keys).
function bert.hparams(src)
  local k = hparams.reader(src)
  local hp = {
    arch = src.arch,
    n_ctx_train = k.int("context_length"),
    dim = k.int("embedding_length"),
    n_layer = k.int("block_count"),
    n_ff = k.int("feed_forward_length"),
    n_head = k.int("attention.head_count"),
    eps = k.num("attention.layer_norm_epsilon"),
    -- BERT attends both ways and the converter writes false; a file
    -- saying true gets causal attention, as in the reference (which also
    -- defaults to causal when the key is missing: slm takes BERT's own
    -- bidirectional attention then)
    causal = k.bool("attention.causal", false),
    vocab_size = k.int("vocab_size", 0),
  }
  hp.n_head_kv = k.int("attention.head_count_kv", hp.n_head)
  for _, c in ipairs { { "n_ctx_train", "context_length", 1 << 20 }, { "dim", "embedding_length", 1 << 20 },
                       { "n_layer", "block_count", 4096 }, { "n_ff", "feed_forward_length", 1 << 24 },
                       { "n_head", "attention.head_count", 4096 }, { "n_head_kv", "attention.head_count_kv", 4096 } } do
    local v = hp[c[1]]
    if v < 1 or v > c[3] then
      error(string.format("%s: bert.%s is %d (expected 1..%d)", src.path, c[2], v, c[3]), 0)
    end
  end
  if hp.dim % hp.n_head ~= 0 or hp.n_head % hp.n_head_kv ~= 0 then
    error(string.format("%s: bert.embedding_length %d, attention.head_count %d and head_count_kv %d do not "
                        .. "divide into heads", src.path, hp.dim, hp.n_head, hp.n_head_kv), 0)
  end
  hp.head_dim = hp.dim // hp.n_head
  if not (hp.eps > 0 and hp.eps < 1) then
    error(string.format("%s: bert.attention.layer_norm_epsilon is %s", src.path, tostring(hp.eps)), 0)
  end
  local pt = k.int("pooling_type", 0)   -- absent: none, as the reference
  hp.pooling = POOLING[pt]
  if not hp.pooling then
    error(string.format("%s: bert.pooling_type %d is not supported (0 none, 1 mean, 2 cls, 3 last)",
                        src.path, pt), 0)
  end
  return hp
end

--- The model's blocks, built once at load.
function bert.build(src, hp)
  local w, opt, f32, vec = hparams.getters(src)
  local m = { hp = hp, layers = {}, pooling = hp.pooling }
  m.tok_embd = w("token_embd.weight")
  hparams.check_vocab(src, hp, m.tok_embd)
  -- learned positions (one row per position up to context_length) and the
  -- token-type table, of which row 0 is added
  m.pos_embd = w("position_embd.weight")
  if m.pos_embd:dim() ~= 2 or m.pos_embd:size(1) < hp.n_ctx_train or m.pos_embd:size(2) ~= hp.dim then
    error(string.format("%s: position_embd.weight has shape %s, expected (%d, %d)", src.path,
                        table.concat(m.pos_embd:shape(), "x"), hp.n_ctx_train, hp.dim), 0)
  end
  m.types = opt("token_types.weight")
  if m.types and (m.types:dim() ~= 2 or m.types:size(2) ~= hp.dim) then
    error(string.format("%s: token_types.weight has shape %s, expected (types, %d)", src.path,
                        table.concat(m.types:shape(), "x"), hp.dim), 0)
  end
  m.positions, m.type0 = {}, {}   -- the ids blocks.embed reads: 0..n_ctx-1, and zeros
  for p = 1, hp.n_ctx_train do m.positions[p], m.type0[p] = p - 1, 0 end
  m.embd_norm_w, m.embd_norm_b = vec("token_embd_norm.weight", hp.dim), vec("token_embd_norm.bias", hp.dim)

  for l = 1, hp.n_layer do
    local p = "blk." .. (l - 1) .. "."
    local kv_dim = hp.n_head_kv * hp.head_dim
    m.layers[l] = {
      kind = hp.causal and "causal encoder" or "bidirectional",
      attn = hparams.block(src, p, blocks.attention, {
        dim = hp.dim, n_head = hp.n_head, n_head_kv = hp.n_head_kv, head_dim = hp.head_dim,
        encoder = true, causal = hp.causal,
        wq = w(p .. "attn_q.weight"), wk = w(p .. "attn_k.weight"), wv = w(p .. "attn_v.weight"),
        wo = w(p .. "attn_output.weight"),
        bq = f32(p .. "attn_q.bias", hp.dim), bk = f32(p .. "attn_k.bias", kv_dim),
        bv = f32(p .. "attn_v.bias", kv_dim), bo = f32(p .. "attn_output.bias", hp.dim),
      }),
      attn_norm_w = vec(p .. "attn_output_norm.weight", hp.dim),
      attn_norm_b = vec(p .. "attn_output_norm.bias", hp.dim),
      ffn = hparams.block(src, p, blocks.ffn, {
        dim = hp.dim, n_ff = hp.n_ff, act = "gelu",
        up = w(p .. "ffn_up.weight"), down = w(p .. "ffn_down.weight"),
        b_up = f32(p .. "ffn_up.bias", hp.n_ff), b_down = f32(p .. "ffn_down.bias", hp.dim),
      }),
      out_norm_w = vec(p .. "layer_output_norm.weight", hp.dim),
      out_norm_b = vec(p .. "layer_output_norm.bias", hp.dim),
    }
  end
  m.features = { "post-norm", "learned positions", "pooling " .. hp.pooling }
  return m
end

bert.describe = hparams.describe

-- The buffers of one encode of n rows: x, h, y (n, dim) and the workspace,
-- kept on the model and grown to the longest input seen (a sentence search
-- embeds many short texts).
local function buffers(m, n)
  local s = m.buffers
  if s and s.rows >= n then return s end
  local tensor = require "slm.tensor"
  local rows = math.min(m.hp.n_ctx_train, math.max(n, 2 * (s and s.rows or 32)))
  local bytes = 0
  for _, L in ipairs(m.layers) do
    bytes = math.max(bytes, L.attn:work_size(rows), L.ffn:work_size(rows))
  end
  s = { rows = rows, n_past = 0, work = blocks.workspace(bytes),
        x = tensor.zeros({ rows, m.hp.dim }), h = tensor.zeros({ rows, m.hp.dim }),
        y = tensor.zeros({ rows, m.hp.dim }) }
  m.buffers = s
  return s
end

--- encode(m, ids) -> (n, dim) view of the last layer's rows for the n ids
-- (checked by the caller: 1 <= n <= context_length, ids in the vocabulary).
-- The view is the model's buffer: the next encode overwrites it. m.hooks is
-- nil unless model:hook() registered some (`at` then calls them).
function bert.encode(m, ids)
  local hp, n = m.hp, #ids
  local s = buffers(m, n)
  local x, h, y, work, hooks = s.x, s.h, s.y, s.work, m.hooks
  blocks.embed(x, m.tok_embd, ids, 1, n)
  if m.types then
    blocks.embed(h, m.types, m.type0, 1, n)
    blocks.add(x, h, 1, n)
  end
  blocks.embed(h, m.pos_embd, m.positions, 1, n)
  blocks.add(x, h, 1, n)
  blocks.layernorm(x, x, m.embd_norm_w, m.embd_norm_b, hp.eps, 1, n)
  for l, L in ipairs(m.layers) do
    local at = hooks and hooks:at(l, l, s, n)
    if at then at("attn_in", x) end
    L.attn:encode(y, x, work, n)
    if at then at("attn_out", y) end
    blocks.add(x, y, 1, n)
    blocks.layernorm(x, x, L.attn_norm_w, L.attn_norm_b, hp.eps, 1, n)
    if at then at("ffn_in", x) end
    L.ffn:forward(y, x, work, n)
    if at then at("ffn_out", y) end
    blocks.add(x, y, 1, n)
    blocks.layernorm(x, x, L.out_norm_w, L.out_norm_b, hp.eps, 1, n)
    if at then at("out", x) end
  end
  return x:narrow(1, 1, n)
end

return bert
