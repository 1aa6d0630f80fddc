--- slm.lora: LoRA adapters in the reference implementation's GGUF layout.
--
--   local model = slm.load("base.gguf", {lora = {{path = "a.gguf", scale = 1.0}}})
--   model:apply_lora("b.gguf", 0.5)          -- on a loaded model (returns it)
--   slm.lora.save_merged(model, "merged.gguf")
--
-- The file (as llama.cpp's convert_lora_to_gguf.py writes it and
-- llama-adapter.cpp reads it): general.type = "adapter",
-- adapter.type = "lora", adapter.lora.alpha (float), and per adapted weight
-- W (out, in) named NAME two tensors NAME.lora_a of shape (r, in) and
-- NAME.lora_b of shape (out, r) (ggml order: ne = {in, r} and {r, out}).
-- The update is W' = W + s . B . A with s = scale * alpha / r, or s = scale
-- when alpha is 0 (r = B's row length, as the reference computes it).
--
-- This version merges at load: each adapted weight is dequantized, merged in
-- f32 and kept in f32 (opts.dtype = "keep" requantizes it to the base
-- weight's dtype, trading the adapter's small update for size). The other
-- weights stay zero-copy views of the base file. B . A is one matmul:
-- (B . A)[o][i] = sum_r B[o][r] A^T[i][r], i.e. ops.matmul(A^T, B).
local core = require "slm.core"
local gguf = require "slm.gguf"
local experiment = require "slm.experiment"
local ops = core.ops

local M = {}

--- read(path) -> adapter {path =, alpha =, pairs = {[name] = {a =, b =}}} | nil, msg
function M.read(path)
  local f, err = gguf.open(path)
  if not f then return nil, err end
  local md = f.metadata
  if md["general.type"] ~= "adapter" or md["adapter.type"] ~= "lora" then
    return nil, path .. ": not a LoRA adapter (general.type = adapter, adapter.type = lora expected)"
  end
  local ad = { path = path, alpha = md["adapter.lora.alpha"] or 0, pairs = {}, file = f }
  for _, info in ipairs(f.tensors) do
    local base, part = info.name:match("^(.*)%.lora_([ab])$")
    if not base then return nil, path .. ": unexpected tensor " .. info.name end
    ad.pairs[base] = ad.pairs[base] or {}
    ad.pairs[base][part] = f:tensor(info.name)
  end
  for name, p in pairs(ad.pairs) do
    if not p.a or not p.b then return nil, path .. ": " .. name .. " lacks its lora_a or lora_b" end
    if p.a:dim() ~= 2 or p.b:dim() ~= 2 or p.a:size(1) ~= p.b:size(2) then
      return nil, string.format("%s: %s: lora_a (r, in) and lora_b (out, r) disagree on r", path, name)
    end
  end
  return ad
end

--- The scale of an adapter pair: scale * alpha / r (scale when alpha is 0).
function M.scale(alpha, b, user_scale)
  local r = b:size(2)
  return alpha ~= 0 and user_scale * alpha / r or user_scale
end

--- merge(W, A, B, s) -> f32 tensor W + s . B . A (W: (out, in), A: (r, in), B: (out, r))
function M.merge(W, A, B, s)
  if A:size(2) ~= W:size(2) or B:size(1) ~= W:size(1) then
    error(string.format("lora: adapter shapes (%dx%d, %dx%d) do not fit the weight (%dx%d)",
                        A:size(1), A:size(2), B:size(1), B:size(2), W:size(1), W:size(2)), 2)
  end
  local At = A:to("f32"):t():contiguous()              -- (in, r)
  local BA = ops.matmul(At, B:to("f32"):contiguous())  -- (out, in)
  local out = W:to("f32"):contiguous()
  if out:shares_storage(W) then out = out:clone() end  -- an f32 W is a read-only view
  return ops.add_(out, ops.scale_(BA, s))
end

local function adapters_of(list)
  if type(list) ~= "table" then error("lora: expected a list of {path =, scale =}", 3) end
  if list.path then list = { list } end
  local out = {}
  for i, e in ipairs(list) do
    if type(e) == "string" then e = { path = e } end
    local ad, err = M.read(e.path)
    if not ad then return nil, err end
    ad.user_scale = e.scale or 1.0
    out[i] = ad
  end
  return out
end

--- source(src, list [, opts]) -> a weight source whose tensors include the
-- adapters' updates (slm.load's opts.lora), or nil, msg.
function M.source(src, list, opts)
  local ads, err = adapters_of(list)
  if not ads then return nil, err end
  for _, ad in ipairs(ads) do
    for name in pairs(ad.pairs) do
      if not src.has(name) then return nil, ad.path .. ": the model has no tensor " .. name end
    end
  end
  local keep = opts and opts.dtype == "keep"
  local out, cache = {}, {}
  for k, v in pairs(src) do out[k] = v end
  out.tensor = function(name)
    if cache[name] then return cache[name] end
    local W = src.tensor(name)
    local merged
    for _, ad in ipairs(ads) do
      local p = ad.pairs[name]
      local sc = p and M.scale(ad.alpha, p.b, ad.user_scale)
      -- scale 0 leaves W itself (same dtype, same kernels): exactly the base
      if p and sc ~= 0 then merged = M.merge(merged or W, p.a, p.b, sc) end
    end
    if merged and keep and W:dtype() ~= "f32" then merged = merged:to(W:dtype()) end
    cache[name] = merged or W
    return cache[name]
  end
  return out
end

--- apply(model, path, scale) -> model with the adapter merged (in place)
function M.apply(model, path, scale)
  local src, err = M.source(model.source, { { path = path, scale = scale or 1.0 } })
  if not src then error(err, 2) end
  local with = setmetatable({}, getmetatable(model))
  for k, v in pairs(model) do with[k] = v end
  with.source = src
  local m = experiment.rebuild(with, function() return nil end)
  model.source, model.net, model.hp = m.source, m.net, m.hp
  return model
end

--- save_merged(model, path) -> true | nil, msg: a GGUF with the merged weights
function M.save_merged(model, path)
  return experiment.save(model, path)
end

-- Unmerged adapters at run time ------------------------------------------------
--
--   local h = model:lora_add("a.gguf", 1.0)   -- or an adapter table (read, tr:adapter())
--   model:lora_scale(h, 0.5)                   -- at once, no rebuild
--   model:lora_remove(h)
--
-- Each adapted weight's C block reads a view of the weight carrying a link
-- (slm.core.lora: A, B and s = scale * alpha / r, or scale when alpha is
-- 0), and every product with it adds s (x A^T) B^T in C
-- (kernels/lora.h). lora_add and lora_remove rebuild the model's blocks
-- (views only, the weights are not read again); sessions made before keep
-- the blocks they were made with. lora_scale changes the links in place:
-- every session of the model sees it at its next product. Scale 0 skips
-- the adapter's term: the base's logits bit for bit.

local function live_rebuild(model)
  local live = model.lora_live
  local with = setmetatable({}, getmetatable(model))
  for k, v in pairs(model) do with[k] = v end
  with.source = live.base
  for _, h in ipairs(live.list) do h.links = {} end
  local m = experiment.rebuild(with, function(name, W)
    local out
    for _, h in ipairs(live.list) do
      local p = h.adapter.pairs[name]
      if p then
        local link = core.lora.link(h.a32[name], h.b32[name], M.scale(h.adapter.alpha, p.b, h.scale))
        out = core.lora.attach(out or W, link)
        h.links[#h.links + 1] = { link = link, b = p.b }
      end
    end
    return out
  end)
  model.net, model.hp = m.net, m.hp
end

--- add(model, path_or_adapter, scale = 1) -> handle
function M.add(model, what, scale)
  scale = scale == nil and 1.0 or scale
  if type(scale) ~= "number" then error("bad argument #2 to 'lora_add' (number expected)", 3) end
  local ad = what
  if type(what) == "string" then
    local err
    ad, err = M.read(what)
    if not ad then error(err, 3) end
  elseif type(what) ~= "table" or type(what.pairs) ~= "table" then
    error("bad argument #1 to 'lora_add' (a LoRA GGUF path or an adapter {alpha =, pairs =} expected)", 3)
  end
  if model.params then error("lora_add: the model is being trained with f32 weights (load it again)", 3) end
  model.lora_live = model.lora_live or { base = model.source, list = {}, next_id = 1 }
  local live = model.lora_live
  local h = { adapter = ad, scale = scale, id = live.next_id, a32 = {}, b32 = {} }
  for name, p in pairs(ad.pairs) do
    if not live.base.has(name) then error((ad.path or "adapter") .. ": the model has no tensor " .. name, 3) end
    local info = live.base.tensor(name)
    if info:dim() ~= 2 or p.a:size(2) ~= info:size(2) or p.b:size(1) ~= info:size(1) then
      error(string.format("%s: %s: adapter shapes (%dx%d, %dx%d) do not fit the weight", ad.path or "adapter", name,
                          p.a:size(1), p.a:size(2), p.b:size(1), p.b:size(2)), 3)
    end
    -- f32 and contiguous; a trainer's own tensors are used as they are (live)
    h.a32[name] = p.a:dtype() == "f32" and p.a:contiguous() or p.a:to("f32")
    h.b32[name] = p.b:dtype() == "f32" and p.b:contiguous() or p.b:to("f32")
  end
  live.next_id = live.next_id + 1
  live.list[#live.list + 1] = h
  live_rebuild(model)
  return h
end

local function find(model, h)
  local live = model.lora_live
  for i, x in ipairs(live and live.list or {}) do if x == h then return i end end
  error("lora: not an adapter handle of this model", 3)
end

--- set_scale(model, handle, scale)
function M.set_scale(model, h, scale)
  find(model, h)
  if type(scale) ~= "number" then error("bad argument #2 to 'lora_scale' (number expected)", 3) end
  h.scale = scale
  for _, l in ipairs(h.links) do l.link:set_scale(M.scale(h.adapter.alpha, l.b, scale)) end
end

--- remove(model, handle)
function M.remove(model, h)
  local i = find(model, h)
  table.remove(model.lora_live.list, i)
  for _, l in ipairs(h.links) do l.link:set_scale(0) end   -- older sessions' blocks: off
  live_rebuild(model)
end

--- random_adapter{base = path, path = out, rank = 4, alpha = 8, seed = 1,
--   targets = {"attn_q", "attn_v", "ffn_down"}, std = 0.02} -> path
-- writes an adapter with random A and B for every blk.N.<target>.weight of
-- the base file (for tests and examples).
function M.random_adapter(o)
  local f = assert(gguf.open(o.base))
  local arch = f.metadata["general.architecture"]
  local testing = require "slm.testing"
  local rank, seed = o.rank or 4, o.seed or 1
  local targets = {}
  for _, t in ipairs(o.targets or { "attn_q", "attn_v", "ffn_down" }) do targets[t] = true end
  local tensors = {}
  for _, info in ipairs(f.tensors) do
    local what = info.name:match("^blk%.%d+%.([%w_]+)%.weight$")
    if what and targets[what] then
      local out_dim, in_dim = info.shape[1], info.shape[2]
      seed = seed + 2
      tensors[#tensors + 1] = { name = info.name .. ".lora_a",
                                tensor = testing.randn({ rank, in_dim }, seed, o.std or 0.02) }
      tensors[#tensors + 1] = { name = info.name .. ".lora_b",
                                tensor = testing.randn({ out_dim, rank }, seed + 1, o.std or 0.02) }
    end
  end
  f:close()
  assert(gguf.write(o.path, { metadata = {
    { "general.architecture", arch },
    { "general.type", "adapter" },
    { "adapter.type", "lora" },
    { "adapter.lora.alpha", { type = "f32", value = o.alpha or 8.0 } },
  }, tensors = tensors }))
  return o.path
end

return M
