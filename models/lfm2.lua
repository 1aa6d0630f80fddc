--- Liquid AI's LFM2: a hybrid of gated short-convolution blocks and
-- attention blocks. The forward pass, as the reference computes it
-- (../shared/fixtures/gguf3/README.md):
--
--   x = embed(tokens)
--   for each layer:  x = x + operator(rmsnorm(x))   -- a short conv or attention
--                    x = x + ffn(rmsnorm(x))        -- SwiGLU
--   logits = token_embd . rmsnorm(x[last])          -- tied head
--
-- Which layers attend is the per-layer attention.head_count_kv list: 0
-- marks a convolution layer. The operators:
--   conv       in_proj -> B | C | X; v = B * X; a causal depthwise conv of
--              shortconv.l_cache taps over v (the last tap on the current
--              token); out_proj(C * conv)  (csrc/blocks/shortconv.c)
--   attention  GQA with per-head RMSNorm of q and k before NeoX RoPE, as
--              qwen3's (csrc/blocks/transformer.c)
-- The final norm is stored as token_embd_norm.weight (the converter's name;
-- it is not applied to the embeddings).
--
-- A session's state is a KV cache for the attention steps of the layer
-- plan and a conv state (the last l_cache - 1 values of v per channel) for
-- the conv steps; snapshots hold both.
local core = require "slm.core"
local blocks, shortconv = core.blocks, core.shortconv
local head = require("slm.hooks").head
local hparams = require("slm.models.hparams")

local lfm2 = { name = "lfm2", archs = { "lfm2" } }

--- Hyper-parameters from GGUF metadata (`lfm2.*` keys).
function lfm2.hparams(src)
  local k = hparams.reader(src)
  local hp = hparams.attention(src, k, { kv_per_layer = true })
  hparams.no_experts(src, hp)
  hp.rope_mode = "neox"
  hp.l_cache = k.int("shortconv.l_cache")
  if hp.l_cache < 2 or hp.l_cache > 64 then
    -- the reference asserts at least 2 (a state of l_cache - 1 values)
    error(string.format("%s: lfm2.shortconv.l_cache is %d (expected 2..64)", src.path, hp.l_cache), 0)
  end
  return hp
end

--- The model's blocks, built once at load.
function lfm2.build(src, hp)
  local w, opt, f32, vec = hparams.getters(src)
  local m = { hp = hp, layers = {} }
  m.tok_embd = w("token_embd.weight")
  hparams.check_vocab(src, hp, m.tok_embd)
  m.output_norm = vec("token_embd_norm.weight", hp.dim)     -- the final norm
  m.output = opt("output.weight") or m.tok_embd             -- tied head
  -- a block checks its weights; its message names the tensor within the
  -- layer ("shortconv.in_proj: expected shape 384x128, got ..."), made whole here
  local function block(p, make, args) return hparams.block(src, p, make, args) end
  for l = 1, hp.n_layer do
    local p = "blk." .. (l - 1) .. "."
    local n_kv = hp.n_head_kv_l[l]
    local layer = {
      attn_norm = vec(p .. "attn_norm.weight", hp.dim),     -- the operator's norm
      ffn_norm = vec(p .. "ffn_norm.weight", hp.dim),
    }
    if n_kv == 0 then
      -- (dim, l_cache) taps, element l_cache c + k
      local taps = f32(p .. "shortconv.conv.weight") or w(p .. "shortconv.conv.weight")
      local shape = taps:shape()
      if #shape ~= 2 or shape[1] ~= hp.dim or shape[2] ~= hp.l_cache then
        error(string.format("%s: tensor %sshortconv.conv.weight has shape %s, expected %dx%d", src.path, p,
                            table.concat(shape, "x"), hp.dim, hp.l_cache), 0)
      end
      layer.conv = block(p, shortconv.block, {
        dim = hp.dim, l_cache = hp.l_cache, conv = taps,
        in_proj = w(p .. "shortconv.in_proj.weight"), out_proj = w(p .. "shortconv.out_proj.weight"),
      })
      layer.kind = "short conv, " .. hp.l_cache .. " taps"
    else
      layer.kv_dim = n_kv * hp.head_dim
      layer.attn = block(p, blocks.attention, {
        dim = hp.dim, n_head = hp.n_head, n_head_kv = n_kv, head_dim = hp.head_dim, norm_eps = hp.eps,
        rope = { mode = hp.rope_mode, n_rot = hp.n_rot, base = hp.rope_base, scale = hp.rope_scale,
                 attn_factor = hp.rope_attn_factor },
        wq = w(p .. "attn_q.weight"), wk = w(p .. "attn_k.weight"), wv = w(p .. "attn_v.weight"),
        wo = w(p .. "attn_output.weight"),
        q_norm = vec(p .. "attn_q_norm.weight", hp.head_dim), k_norm = vec(p .. "attn_k_norm.weight", hp.head_dim),
      })
      layer.kind = "attention " .. n_kv .. " kv heads, " .. hparams.rope_kind(hp.rope_base, hp.rope_scale)
    end
    layer.ffn = block(p, blocks.ffn, {
      dim = hp.dim, n_ff = hp.n_ff, act = "silu",
      gate = w(p .. "ffn_gate.weight"), up = w(p .. "ffn_up.weight"), down = w(p .. "ffn_down.weight"),
    })
    m.layers[l] = layer
  end
  m.plan = {}
  for l = 1, hp.n_layer do m.plan[l] = l end
  m.features = {}
  for _, L in ipairs(m.layers) do
    if L.attn then m.features[1] = "q/k norm" end
  end
  if m.output == m.tok_embd then m.features[#m.features + 1] = "tied head" end
  return m
end

lfm2.describe = hparams.describe

-- forward honours m.plan (model:variant) and m.hooks, and fills s.all_logits
lfm2.plans, lfm2.hook_points, lfm2.all_logits = true, "full", true

-- The session state: a KV cache with a slot per attention step of the
-- plan, a conv state with a slot per conv step (slot[step] says which),
-- behind the state interface slm.model uses (snapshot, restore, bytes).
-- A snapshot is "SLMLFM1\0" | kv snapshot | conv snapshot, each an s8
-- (little-endian 8-byte length, then the bytes; empty when the plan has no
-- such step), the two in the layouts of blocks/kvcache.h and
-- blocks/shortconv.h.
local State = {}
State.__index = State
local MAGIC = "SLMLFM1\0"

function State:snapshot(n_past)
  return string.pack("<c8s8s8", MAGIC, self.kv and self.kv:snapshot(n_past) or "",
                     self.conv and self.conv:snapshot(n_past) or "")
end

--- restore(str) -> n_past. Either part may refuse the snapshot (another
-- shape, truncated); then the state is left as it was.
function State:restore(str)
  local ok, magic, kv, conv, stop = pcall(string.unpack, "<c8s8s8", str)
  if not ok or magic ~= MAGIC or stop ~= #str + 1 then error("restore: not an lfm2 state snapshot", 0) end
  if (kv ~= "") ~= (self.kv ~= nil) or (conv ~= "") ~= (self.conv ~= nil) then
    error("restore: snapshot of an lfm2 model with other kinds of layers", 0)
  end
  local n_kv, n_conv
  if self.conv then
    -- the conv state is small: keep it, so that a KV part that refuses
    -- leaves both as they were
    local before = self.conv:snapshot(0)
    n_conv = self.conv:restore(conv)
    if self.kv then
      local kok, res = pcall(self.kv.restore, self.kv, kv)
      if not kok then
        self.conv:restore(before)
        error(res, 0)
      end
      n_kv = res
    end
  else
    n_kv = self.kv:restore(kv)
  end
  if n_kv and n_conv and n_kv ~= n_conv then
    error(string.format("restore: corrupt lfm2 state snapshot (KV cache of %d positions, conv state of %d)",
                        n_kv, n_conv), 0)
  end
  return n_kv or n_conv
end

--- The KV cache's row type and bytes per position (nil and 0 without one).
function State:kv_type() return self.kv and self.kv:kv_type() end
function State:bytes_per_token() return self.kv and self.kv:bytes_per_token() or 0 end

function State:bytes()
  return (self.kv and self.kv:bytes() or 0) + (self.conv and self.conv:bytes() or 0)
end

--- The conv state before any token (the KV cache needs no clearing: it is
-- overwritten from position 0).
function State:clear()
  if self.conv then self.conv:clear() end
end

--- Per-session state and the workspace every block takes its scratch from.
function lfm2.state(m, opts)
  local st = setmetatable({ slot = {} }, State)
  local kv_layers, n_conv, bytes = {}, 0, 0
  for step, l in ipairs(m.plan) do
    local L = m.layers[l]
    if L.conv then
      n_conv = n_conv + 1
      st.slot[step] = n_conv
    else
      kv_layers[#kv_layers + 1] = { kv_dim = L.kv_dim, head_dim = m.hp.head_dim }
      st.slot[step] = #kv_layers
    end
    bytes = math.max(bytes, (L.conv or L.attn):work_size(opts.n_batch), L.ffn:work_size(opts.n_batch))
  end
  if #kv_layers > 0 then
    st.kv = blocks.kv_state { n_ctx = opts.n_ctx, n_batch = opts.n_batch, layers = kv_layers, type = opts.kv_type }
  end
  if n_conv > 0 then
    st.conv = shortconv.state { n_layer = n_conv, dim = m.hp.dim, l_cache = m.hp.l_cache }
  end
  return st, blocks.workspace(bytes)
end

--- Runs tokens ids[first .. first+n-1] at positions s.n_past.., leaving the
-- logits of the last one in s.logits (of every one in s.all_logits when the
-- session has that buffer). s.x, s.h, s.y are (n_batch, dim). The hook
-- points attn_in and attn_out are the operator's input and output in conv
-- layers too.
function lfm2.forward(m, s, ids, first, n)
  local hp, x, h, y, hooks, work, st = m.hp, s.x, s.h, s.y, m.hooks, s.work, s.state
  -- position 0 starts from zero conv states (also after sess:reset())
  if s.n_past == 0 then st:clear() end
  blocks.embed(x, m.tok_embd, ids, first, n)
  for step, l in ipairs(m.plan) do
    local L, at = m.layers[l], hooks and hooks:at(l, step, s, n)
    blocks.rmsnorm(h, x, L.attn_norm, hp.eps, 1, n)
    if at then at("attn_in", h) end
    if L.conv then
      L.conv:forward(y, h, st.conv, st.slot[step], n, work)
    else
      L.attn:forward(y, h, st.kv, st.slot[step], s.n_past, n, work)
    end
    if at then at("attn_out", y) end
    blocks.add(x, y, 1, n)
    blocks.rmsnorm(h, x, L.ffn_norm, hp.eps, 1, n)
    if at then at("ffn_in", h) end
    L.ffn:forward(y, h, work, n)
    if at then at("ffn_out", y) end
    blocks.add(x, y, 1, n)
    if at then at("out", x) end
  end
  local rows = (s.all_logits or s.embd) and 1 or n    -- every row for all logits or model:embed
  blocks.rmsnorm(h, x, m.output_norm, hp.eps, rows, n - rows + 1)
  head(m, s, m.output, h, rows, n)        -- logits = token_embd . h (hooks: output_norm, logits)
end

return lfm2
