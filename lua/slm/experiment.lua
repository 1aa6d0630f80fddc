--- slm.experiment: architecture variants and weight surgery from Lua.
--
--   model:variant{skip = {5, 6}}             -- layer skipping
--   model:variant{exit = 4}                  -- early exit: the first 4 steps, then norm + head
--   model:variant{layers = {0, 1, 2, 2, 2, 3}} -- recursion over a block
-- Layers are numbered from 0 as in the tensor names (blk.N) and hook names.
-- A variant shares the weights of its model (nothing is copied) and has no
-- hooks of its own; its sessions get one KV-cache slot per step of the plan,
-- so a layer run three times keeps three sets of keys and values.
--
--   experiment.rebuild(model, fn)  -> a new model whose weights are
--       fn(name, tensor) or the file's (fn returns nil to keep a tensor);
--       used by pruning and LoRA
--   experiment.save(model, path [, {metadata = {key = value}}]) -> true | nil, msg
--       writes the model's current weights (overrides included) and the
--       source file's metadata as GGUF
--   experiment.write_gguf(file, path, tensor_fn, metadata) -> true | nil, msg
--       the writer under save, pruning and LoRA: the metadata of an open GGUF
--       file (f:typed, in file order, general.alignment left to the writer)
--       with overrides, and every tensor as tensor_fn(info) returns it
--       (false: left out; t, name: written under another name)
local gguf = require "slm.gguf"
local options = require "slm.options"

local M = {}

local function check_layer(v, n, what)
  if math.type(v) ~= "integer" or v < 0 or v >= n then
    error(string.format("variant: %s %s is not a layer (0..%d)", what, tostring(v), n - 1), 3)
  end
  return v
end

-- expert modes of a MoE layer as blocks.moe's forward takes them
local MODE = { disable = 1, force = 2 }

-- {[layer] = {disable = {...}, force = {...}}} -> {[layer + 1] = modes string}
local function expert_modes(model, spec)
  local net = model.net
  if not net.n_expert then error("variant: experts: this model has no experts", 3) end
  if type(spec) ~= "table" then error("variant: experts must be a table {[layer] = {disable = {...}, force = {...}}}", 3) end
  local n, ne, used = #net.layers, net.n_expert, net.n_expert_used
  local modes = {}
  for layer, o in pairs(spec) do
    check_layer(layer, n, "experts layer")
    if type(o) ~= "table" then error(string.format("variant: experts[%d] must be a table {disable =, force =}", layer), 3) end
    local m, forced, disabled = {}, 0, 0
    for e = 1, ne do m[e] = 0 end
    for key, list in pairs(o) do
      if not MODE[key] then error(string.format("variant: experts[%d]: unknown key '%s' (disable, force)", layer, tostring(key)), 3) end
      if type(list) ~= "table" then error(string.format("variant: experts[%d].%s must be a list of experts", layer, key), 3) end
      for _, e in ipairs(list) do
        if math.type(e) ~= "integer" or e < 0 or e >= ne then
          error(string.format("variant: experts[%d].%s: %s is not an expert (0..%d)", layer, key, tostring(e), ne - 1), 3)
        end
        if m[e + 1] ~= 0 and m[e + 1] ~= MODE[key] then
          error(string.format("variant: experts[%d]: expert %d both disabled and forced", layer, e), 3)
        end
        if m[e + 1] == 0 then
          if key == "force" then forced = forced + 1 else disabled = disabled + 1 end
        end
        m[e + 1] = MODE[key]
      end
    end
    if forced > used then
      error(string.format("variant: experts[%d]: %d forced experts, a token uses %d", layer, forced, used), 3)
    end
    if ne - disabled < used then
      error(string.format("variant: experts[%d]: %d experts left, a token uses %d", layer, ne - disabled, used), 3)
    end
    modes[layer + 1] = string.char(table.unpack(m))
  end
  return modes
end

--- variant(model, {layers =, skip =, exit =, experts =}) -> model
-- experts = {[layer] = {disable = {e, ...}, force = {e, ...}}} (MoE models):
-- a disabled expert is never chosen (the next most probable takes its
-- slot; the other experts' probabilities are unchanged, so tokens that did
-- not choose it compute exactly as before); a forced one is always chosen,
-- first, with its own probability as weight.
local VARIANT_OPTS = options.known { "layers", "skip", "exit", "experts" }

--- The architectures whose definitions have layer plans (what variant needs), sorted.
function M.plan_archs()
  local model_mod = require "slm.model"
  local out = {}
  for _, name in ipairs(model_mod.definitions) do
    local def = require("slm.models." .. name)
    if def.plans then
      for _, a in ipairs(def.archs or {}) do out[#out + 1] = a end
    end
  end
  table.sort(out)
  return out
end

function M.variant(model, o)
  if type(o) ~= "table" then error("bad argument #1 to 'variant' (table expected)", 2) end
  options.check("variant", o, VARIANT_OPTS)
  if not model.def.plans then
    error(string.format("variant: %s models have no layer plans (architectures with plans: %s)", model.hp.arch,
                        table.concat(M.plan_archs(), ", ")), 2)
  end
  local n = #model.net.layers
  local plan = {}
  if o.layers ~= nil then
    if type(o.layers) ~= "table" then options.fail("variant", "layers", "a list of layer numbers", o.layers) end
    for i, v in ipairs(o.layers) do plan[i] = check_layer(v, n, "layers entry") + 1 end
  else
    for l = 1, n do plan[l] = l end
  end
  if o.skip ~= nil then
    if type(o.skip) ~= "table" then options.fail("variant", "skip", "a list of layer numbers", o.skip) end
    local skip = {}
    for _, v in ipairs(o.skip) do skip[check_layer(v, n, "skip entry") + 1] = true end
    local kept = {}
    for _, l in ipairs(plan) do if not skip[l] then kept[#kept + 1] = l end end
    plan = kept
  end
  if o.exit ~= nil then
    if math.type(o.exit) ~= "integer" or o.exit < 0 or o.exit > #plan then
      options.fail("variant", "exit", "an integer in 0.." .. #plan, o.exit)
    end
    for i = #plan, o.exit + 1, -1 do plan[i] = nil end
  end
  local net = {}
  for k, v in pairs(model.net) do net[k] = v end
  net.plan, net.hooks = plan, nil
  if o.experts ~= nil then net.expert_modes = expert_modes(model, o.experts) end
  local v = {}
  for k, x in pairs(model) do v[k] = x end
  v.net = net
  return setmetatable(v, getmetatable(model))
end

--- The 0-based layer plan of a model (a list), for printing.
function M.plan(model)
  local out = {}
  for i, l in ipairs(model.net.plan or {}) do out[i] = l - 1 end
  return out
end

--- rebuild(model, fn) -> model with weights replaced where fn(name, t) returns a tensor
function M.rebuild(model, fn)
  local base = model.source
  local src, cache = {}, {}
  for k, v in pairs(base) do src[k] = v end
  src.tensor = function(name)
    if cache[name] == nil then
      local t = base.tensor(name)
      cache[name] = fn(name, t) or t
    end
    return cache[name]
  end
  local def = model.def
  local reader = src.kind == "gguf" and def.hparams or def["hparams_" .. src.kind]
  local hp = reader(src)
  local net = def.build(src, hp)
  if model.net.plan and net.plan then net.plan = model.net.plan end
  local m = {}
  for k, v in pairs(model) do m[k] = v end
  m.source, m.hp, m.net = src, hp, net
  return setmetatable(m, getmetatable(model))
end

--- write_gguf(f, path, tensor_fn, metadata) (see the header)
function M.write_gguf(f, path, tensor_fn, metadata)
  metadata = metadata or {}
  local meta, seen = {}, {}
  for _, key in ipairs(f.keys) do
    if key ~= "general.alignment" then
      local v = metadata[key]
      if v == nil then v = f:typed(key) end
      if v ~= false then meta[#meta + 1] = { key, v } end   -- false drops a key
      seen[key] = true
    end
  end
  local extra = {}
  for k in pairs(metadata) do if not seen[k] and metadata[k] ~= false then extra[#extra + 1] = k end end
  table.sort(extra)
  for _, k in ipairs(extra) do meta[#meta + 1] = { k, metadata[k] } end
  local tensors = {}
  for _, info in ipairs(f.tensors) do
    -- false leaves the tensor out; a second value renames it (slm.prune.layers)
    local t, name = tensor_fn(info)
    if t ~= false then tensors[#tensors + 1] = { name = name or info.name, tensor = t } end
  end
  return gguf.write(path, { metadata = meta, tensors = tensors, alignment = f.alignment })
end

--- save(model, path [, opts]) -> true | nil, msg
function M.save(model, path, opts)
  local src = model.source
  if src.kind ~= "gguf" then return nil, "save: only models loaded from GGUF can be saved" end
  return M.write_gguf(src.file, path, function(info) return src.tensor(info.name) end,
                      opts and opts.metadata)
end

return M
