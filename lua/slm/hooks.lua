--- slm.hooks: read or modify activations inside a model's forward pass.
--
--   local h = model:hook("blk.3.ffn_out", function(t, info)
--     -- t: (n, dim) f32 view of the session buffer (no copy), rows = tokens
--     -- of this forward call; info.layer (0-based, as in tensor names),
--     -- info.step (position in the layer plan), info.n, info.pos (position of
--     -- row 1), info.session
--     t:narrow(1, 1, info.n) ...   -- modify in place to intervene
--   end)
--   h:remove()
--
-- Points of the attention models (llama, qwen, phi3, gemma, smollm3,
-- granite), per layer N (0-based):
--   blk.N.attn_in   normed input of attention
--   blk.N.attn_out  attention output, before the residual add (gemma2/3:
--                   after the post-attention norm)
--   blk.N.ffn_in    normed input of the feed-forward
--   blk.N.ffn_out   feed-forward output, before the residual add (gemma2/3:
--                   after the post-feed-forward norm)
--   blk.N.out       residual stream after the layer
-- and for every model:
--   output_norm     the normed rows the head reads (the last row, or all rows
--                   when the session computes all logits)
--   logits          the logits of the last row (1-D, n_vocab)
-- RWKV and Mamba models have blk.N.out, output_norm and logits. BERT
-- encoders have the five blk.N points (attn_in is the layer's input, ffn_in
-- the normed sum after attention; post-norm) and no output_norm or logits.
--
-- Cost: a model without hooks has m.hooks == nil, so forward pays one nil
-- test per layer. With hooks, each hooked layer builds one closure per call.
local core = require "slm.core"
local blocks, ops = core.blocks, core.ops

local M = {}

local LAYER_POINTS = { attn_in = true, attn_out = true, ffn_in = true, ffn_out = true, out = true, router = true }

-- A model's hooks: set[l] = {point = {fn, ...}} for layer l (1-based), and
-- set.output_norm / set.logits = {fn, ...}.
local Set = {}
Set.__index = Set

--- at(l, step, s, n) -> nil when layer l has no hooks, else emit(point, buf)
-- which calls that point's functions on buf's rows 1..n.
function Set:at(l, step, s, n)
  local lh = self[l]
  if not lh then return nil end
  return function(point, buf)
    local fns = lh[point]
    if not fns then return end
    local view = buf:narrow(1, 1, n)
    local info = { layer = l - 1, step = step, n = n, pos = s.n_past, session = s, point = point }
    for i = 1, #fns do fns[i](view, info) end
  end
end

local function call_all(fns, t, s, n)
  local info = { n = n, pos = s.n_past, session = s }
  for i = 1, #fns do fns[i](t, info) end
end

--- The head of every architecture: logits = W . h[n] into s.logits, and
-- W . h[rows..n] into s.all_logits when the session has that (n_batch, n_vocab)
-- buffer (perplexity, KL). A session of model:embed has s.embd (n, dim)
-- instead: the forwards then normalize every row and the head copies
-- h[rows..n] to s.embd's rows n_past+rows.., computing no logits. Where
-- the model has them, the logits are
-- multiplied by m.logit_mul (granite: 1 / logit_scale) and soft-capped at
-- m.logit_softcap (gemma2: c tanh(z / c)). Calls the output_norm and logits
-- hooks (the latter on the final logits).
function M.head(m, s, W, h, rows, n)
  local hooks = m.hooks
  if hooks and hooks.output_norm then call_all(hooks.output_norm, h:narrow(1, rows, n - rows + 1), s, n) end
  if s.embd then   -- model:embed: every normed row kept at its position, no logits
    s.embd:narrow(1, s.n_past + rows, n - rows + 1):copy_(h:narrow(1, rows, n - rows + 1))
    return
  end
  local all = s.all_logits
  if all then
    -- the last row's logits are all's row n (the matmul is batch-invariant:
    -- the same bits as the one-row product), so W is read once
    ops.matmul(W, h:narrow(1, rows, n - rows + 1), all:narrow(1, rows, n - rows + 1))
    s.logits:copy_(all:select(1, n))
  else
    blocks.linear(s.logits, W, h, n)
  end
  if m.logit_mul then
    blocks.scale(s.logits, m.logit_mul, 1, 1)
    if all then blocks.scale(all, m.logit_mul, rows, n - rows + 1) end
  end
  if m.logit_softcap then
    blocks.softcap(s.logits, m.logit_softcap, 1, 1)
    if all then blocks.softcap(all, m.logit_softcap, rows, n - rows + 1) end
  end
  if hooks and hooks.logits then call_all(hooks.logits, s.logits, s, n) end
end

--- Parses a hook name -> layer (1-based) or nil, point.
local function parse(name, def, n_layer)
  local N, point = name:match("^blk%.(%d+)%.([%w_]+)$")
  if N then
    local l = tonumber(N) + 1
    if l > n_layer then error(string.format("hook '%s': the model has layers 0..%d", name, n_layer - 1), 3) end
    if not LAYER_POINTS[point] then error("hook '" .. name .. "': unknown point '" .. point .. "'", 3) end
    if def.hook_points ~= "full" and point ~= "out" then
      error("hook '" .. name .. "': " .. (def.name or "this architecture") .. " models only have blk.N.out", 3)
    end
    return l, point
  end
  if name == "output_norm" or name == "logits" then
    if def.encoder then error("hook '" .. name .. "': " .. def.name .. " models are encoders (blk.N points only)", 3) end
    return nil, name
  end
  error("hook '" .. name .. "': expected blk.N.<attn_in|attn_out|ffn_in|ffn_out|out>, output_norm or logits", 3)
end

local Handle = {}
Handle.__index = Handle

--- handle:remove(): unregisters the function (idempotent).
function Handle:remove()
  if self.removed then return end
  self.removed = true
  local list = self.list
  for i = #list, 1, -1 do
    if list[i] == self.fn then table.remove(list, i) break end
  end
  if #list == 0 then self.owner[self.key] = nil end
  -- no functions left anywhere: back to the zero-cost path
  local net = self.net
  if net.hooks and next(net.hooks) == nil then net.hooks = nil end
end

--- add(model, name, fn) -> handle (model:hook)
function M.add(model, name, fn)
  if type(name) ~= "string" then error("bad argument #1 to 'hook' (string expected)", 3) end
  if type(fn) ~= "function" then error("bad argument #2 to 'hook' (function expected)", 3) end
  local def, net = model.def, model.net
  local l, point = parse(name, def, #net.layers)
  net.hooks = net.hooks or setmetatable({}, Set)
  local owner, key = net.hooks, point
  if l then
    net.hooks[l] = net.hooks[l] or {}
    owner = net.hooks[l]
  end
  owner[key] = owner[key] or {}
  local list = owner[key]
  list[#list + 1] = fn
  local handle = setmetatable({ list = list, fn = fn, net = net, removed = false,
                                owner = owner, key = key }, Handle)
  if l then
    -- an emptied layer table must go too, so that `at` returns nil again
    local layer_tbl, hooks = owner, net.hooks
    handle.owner = setmetatable({}, { __newindex = function(_, k, v)
      layer_tbl[k] = v
      if next(layer_tbl) == nil then hooks[l] = nil end
    end })
  end
  return handle
end

return M
