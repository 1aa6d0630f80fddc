--- Mamba-1 and Mamba-2: a stack of selective state space mixers, no
-- attention and no feed-forward. The forward pass, as in the papers and the
-- reference implementation's mamba and mamba2 graphs:
--
--   x = embed(tokens)
--   for each layer:  x = x + mixer(rmsnorm(x))   -- in_proj, causal conv1d,
--                                                 -- selective scan, gate, out_proj
--   logits = output(rmsnorm(x[last]))
--
-- The mixer is one C block (csrc/blocks/mamba.c) that runs all n tokens of a
-- call: projections as matmuls over the n rows, the conv and the scan over
-- time. Mamba-2 differs inside the mixer only: one in_proj gives z, x, B, C
-- and dt; a scalar decay per head; B and C shared by groups of heads; a
-- grouped RMS norm before out_proj. The session state is the per-layer conv
-- and scan state, O(1) in the number of tokens, so snapshots are small and
-- the context is unbounded.
local core = require "slm.core"
local blocks, mamba_c = core.blocks, core.mamba
local head = require("slm.hooks").head
local hparams = require("slm.models.hparams")

local mamba = {
  name = "mamba", archs = { "mamba", "mamba2" },
  -- keys the converter writes that a state space model does not use (0 or
  -- the attention defaults in these files)
  ignored_keys = { ["feed_forward_length"] = true, ["attention.head_count"] = true },
}

--- Hyper-parameters from GGUF metadata (`mamba.*` keys).
function mamba.hparams(src)
  local arch = src.arch
  local function key(k, default)
    local v = src.meta(arch .. "." .. k)
    if v ~= nil then return v end
    if default == nil then error(string.format("%s: missing metadata %s.%s", src.path, arch, k), 0) end
    return default
  end
  local hp = {
    arch = arch,
    version = arch == "mamba2" and 2 or 1,
    -- a recurrent state has no context limit; the file says 1M
    n_ctx_train = key("context_length", 1 << 20),
    dim = key("embedding_length"),
    n_layer = key("block_count"),
    d_conv = key("ssm.conv_kernel"),
    d_inner = key("ssm.inner_size"),
    d_state = key("ssm.state_size"),
    dt_rank = key("ssm.time_step_rank"),     -- Mamba-2: the number of heads
    n_group = arch == "mamba2" and key("ssm.group_count") or 1,
    dt_b_c_rms = key("ssm.dt_b_c_rms", false),
    eps = key("attention.layer_norm_rms_epsilon", 1e-5),
    vocab_size = key("vocab_size", 0),     -- checked against the embedding
  }
  hparams.check_ranges(src, hp, {
    { "dim", "embedding_length", 1 }, { "n_layer", "block_count", 1, 4096 }, { "d_conv", "ssm.conv_kernel", 1 },
    { "d_inner", "ssm.inner_size", 1 }, { "d_state", "ssm.state_size", 1 }, { "dt_rank", "ssm.time_step_rank", 1 },
    { "n_group", "ssm.group_count", 1 }, { "n_ctx_train", "context_length", 1 },
    { "eps", "attention.layer_norm_rms_epsilon" },
  })
  return hp
end

--- The model's blocks, built once at load. Every tensor's shape is checked
-- here so that a malformed file is reported by the tensor's own name.
function mamba.build(src, hp)
  local function w(name, ...)
    local t = src.tensor(name)
    local want = { ... }
    local shape = t:shape()
    local ok = #shape == #want
    for i = 1, #want do ok = ok and shape[i] == want[i] end
    if not ok then
      error(string.format("%s: tensor %s has shape %s, expected %s", src.path, name,
                          table.concat(shape, "x"), table.concat(want, "x")), 0)
    end
    return t
  end
  -- the small vectors are used as f32 (files normally store them so)
  local function f32(name, ...)
    local t = w(name, ...)
    if t:dtype() ~= "f32" then t = t:to("f32") end
    return t
  end
  local m = { hp = hp, layers = {} }
  local emb = src.tensor("token_embd.weight")
  if emb:dim() ~= 2 then error(src.path .. ": tensor token_embd.weight must be 2-D", 0) end
  hp.n_vocab = emb:size(1)
  if hp.vocab_size ~= 0 and hp.vocab_size ~= hp.n_vocab then
    error(string.format("%s: %s.vocab_size is %d, token_embd.weight has %d rows", src.path, hp.arch,
                        hp.vocab_size, hp.n_vocab), 0)
  end
  m.tok_embd = w("token_embd.weight", hp.n_vocab, hp.dim)
  m.output_norm = f32("output_norm.weight", hp.dim)
  m.output = src.has("output.weight") and w("output.weight", hp.n_vocab, hp.dim) or m.tok_embd
  local di, ds, dr, ng = hp.d_inner, hp.d_state, hp.dt_rank, hp.n_group
  local v2 = hp.version == 2
  if v2 and (dr % ng ~= 0 or di % dr ~= 0) then
    error(string.format("%s: mamba2 with %d heads, %d groups and d_inner %d (heads must divide d_inner "
                        .. "and be a multiple of the groups)", src.path, dr, ng, di), 0)
  end
  -- conv channels and in_proj rows: x (Mamba-1); x, B, C and z, dt (Mamba-2)
  local ch = v2 and di + 2 * ng * ds or di
  local in_rows = v2 and di + ch + dr or 2 * di
  for l = 1, hp.n_layer do
    local p = "blk." .. (l - 1) .. "."
    local args = {
      version = hp.version, dim = hp.dim, d_inner = di, d_conv = hp.d_conv, d_state = ds,
      dt_rank = dr, n_group = ng, eps = hp.eps, dt_b_c_rms = hp.dt_b_c_rms,
      ssm_in = w(p .. "ssm_in.weight", in_rows, hp.dim),
      conv_w = f32(p .. "ssm_conv1d.weight", ch, hp.d_conv),
      conv_b = f32(p .. "ssm_conv1d.bias", ch),
      ssm_out = w(p .. "ssm_out.weight", hp.dim, di),
    }
    if v2 then
      -- per-head scalars, stored (n_head, 1) by the reference's converter
      args.dt_b = f32(p .. "ssm_dt.bias", dr)
      args.A = f32(p .. "ssm_a", dr, 1)
      args.D = f32(p .. "ssm_d", dr, 1)
      args.norm = f32(p .. "ssm_norm.weight", ng, di // ng)
    else
      args.ssm_x = w(p .. "ssm_x.weight", dr + 2 * ds, di)
      args.ssm_dt = w(p .. "ssm_dt.weight", di, dr)
      args.dt_b = f32(p .. "ssm_dt.bias", di)
      args.A = f32(p .. "ssm_a", di, ds)
      args.D = f32(p .. "ssm_d", di)
    end
    local mixer = mamba_c.block(args)
    -- a model loaded for training keeps how the block was made (slm.train)
    if src.train_blocks then src.train_blocks[mixer] = { make = mamba_c.block, args = args, prefix = p } end
    m.layers[l] = { norm = f32(p .. "attn_norm.weight", hp.dim), mixer = mixer }
  end
  return m
end

--- Per-session state: conv and scan states of every layer, batch scratch.
function mamba.state(m, opts)
  local hp = m.hp
  return mamba_c.state {
    version = hp.version, n_layer = hp.n_layer, d_inner = hp.d_inner, d_conv = hp.d_conv,
    d_state = hp.d_state, dt_rank = hp.dt_rank, n_group = hp.n_group, n_batch = opts.n_batch,
  }
end

--- Runs tokens ids[first .. first+n-1] after s.n_past earlier ones, leaving
-- the logits of the last one in s.logits. s.x, s.h, s.y are (n_batch, dim).
function mamba.forward(m, s, ids, first, n)
  local hp, x, h, y = m.hp, s.x, s.h, s.y
  local blocks, head = s.blocks or blocks, s.head or head   -- a training session's recording ops (slm.train)
  -- position 0 starts from the zero state (also after sess:reset())
  if s.n_past == 0 then s.state:clear() end
  blocks.embed(x, m.tok_embd, ids, first, n)
  for l, L in ipairs(m.layers) do
    blocks.rmsnorm(h, x, L.norm, hp.eps, 1, n)
    -- s.work: a batch of sessions' scratch (slm.batch; s.state is then a SeqBatch)
    L.mixer:forward(y, h, s.state, l, n, s.work)
    blocks.add(x, y, 1, n)
    local at = m.hooks and m.hooks:at(l, l, s, n)   -- model:hook("blk.N.out", fn)
    if at then at("out", x) end
  end
  local rows = (s.all_logits or s.embd) and 1 or n    -- every row for all logits or model:embed
  blocks.rmsnorm(h, x, m.output_norm, hp.eps, rows, n - rows + 1)
  head(m, s, m.output, h, rows, n)
end

mamba.all_logits = true   -- forward fills s.all_logits (slm.eval)
mamba.batched = true      -- several sessions' rows in one forward (slm.batch)
mamba.trainable = true    -- its forward records on a training tape (slm.train)

return mamba
