--- slm.train.lora: LoRA / QLoRA training of adapters over a frozen base.
--
--   local base = slm.load("model-q8_0.gguf", {train = "lora"})   -- weights stay Q8_0
--   local tr = slm.train.trainer(base, {lora = {rank = 8, alpha = 16, dropout = 0.05,
--                                              targets = "attn_[qv]", seed = 1}, lr = 1e-3})
--   tr:step(batch)                 -- AdamW over the adapters only (tr.names)
--   tr:save_adapter("a.gguf")      -- the reference's LoRA GGUF (slm.lora reads it)
--   base:lora_add(tr:adapter())    -- or the file: applied unmerged at run time
--
-- Each adapted weight W (out, in) gets A (r, in) and B (out, r) (the
-- layout of lora_a / lora_b in the file) and computes, as PEFT's Linear:
--
--   y = x deq(W)^T + s (dropout(x) A^T) B^T,      s = alpha / r
--
-- Initialization as PEFT's default (init_lora_weights = True): A
-- Kaiming-uniform with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)), from
-- `seed`; B zero, so the adapted model starts as the base. Dropout (PEFT's
-- lora_dropout, on the adapter's input only) draws its mask from a hash of
-- (seed, step, call, element) in C and is off in eval_loss.
--
-- The base is frozen, of any dtype: its products in training are
-- x deq(W)^T with the weight dequantized 64 rows at a time
-- (slm.core.lora.deq_linear; QLoRA's forward), and the input gradient
-- dX += dY deq(W) dequantizes each thread's columns of 64 rows at a time
-- (deq_linear_dx): never an f32 copy of the whole base; the scratch is
-- 64 x in floats per thread. f32 weights use the f32 kernels as they are.
--
-- targets: a Lua pattern found in a weight's name ("attn_[qkvo]"), a list
-- of patterns, or a predicate function(name, tensor) -> boolean; default
-- {"%.attn_q%.weight$", "%.attn_v%.weight$"} (the attention's q and v, as
-- the LoRA paper and PEFT's llama default). Only the projections of the
-- attention and feed-forward blocks (attn_q/k/v/qkv/output, ffn_gate/up/
-- down) take an adapter; a target selecting any other weight, or nothing,
-- is an error.
local core = require "slm.core"
local tensor = require "slm.tensor"
local options = require "slm.options"

local K, KL, ops = core.train, core.lora, core.ops

local M = {}

M.DEFAULT_TARGETS = { "%.attn_q%.weight$", "%.attn_v%.weight$" }

local LORA_OPTS = options.known { "rank", "alpha", "dropout", "targets", "seed" }

-- the block fields whose weights the twins multiply with K.linear
local LINEAR_FIELDS = { attention = { "wq", "wk", "wv", "wqkv", "wo" }, ffn = { "gate", "up", "gate_up", "down" } }

--- adaptable(model) -> {name = tensor}: the projection weights of the
-- model's attention and feed-forward blocks.
function M.adaptable(model)
  local names = {}
  for t, name in pairs(model.weight_names or {}) do names[t] = name end
  for name, t in pairs(model.params or {}) do names[t] = name end
  local kinds = { [core.blocks.attention] = "attention", [core.blocks.ffn] = "ffn" }
  local out = {}
  for _, made in pairs(model.train_blocks or {}) do
    local kind = kinds[made.make]
    for _, f in ipairs(kind and LINEAR_FIELDS[kind] or {}) do
      local w = made.args[f]
      if w and names[w] then out[names[w]] = w end
    end
  end
  return out
end

-- selector(targets) -> function(name, tensor) -> boolean
local function selector(targets)
  if targets == nil then targets = M.DEFAULT_TARGETS end
  if type(targets) == "function" then return targets end
  if type(targets) == "string" then targets = { targets } end
  if type(targets) ~= "table" or #targets == 0 then
    options.fail("lora", "targets", "a pattern, a list of patterns or a function(name, tensor)", targets, 5)
  end
  for _, p in ipairs(targets) do
    if type(p) ~= "string" or not pcall(string.find, "", p) then
      options.fail("lora", "targets", "Lua patterns", p, 5)
    end
  end
  return function(name)
    for _, p in ipairs(targets) do if name:find(p) then return true end end
    return false
  end
end

-- the weights a target selects, sorted by name; errors for weights
-- without a LoRA path and for an empty selection
local function select_weights(model, o)
  local pick = selector(o.targets)
  local ok_names = M.adaptable(model)
  local all = {}
  for t, name in pairs(model.weight_names or {}) do all[name] = t end
  for name, t in pairs(model.params or {}) do all[name] = t end
  local chosen = {}
  for name, t in pairs(all) do
    if pick(name, t) then
      if not ok_names[name] then
        error(string.format("lora: target %s has no LoRA path (adapters go on the attention and feed-forward "
                            .. "projections: attn_q/k/v/qkv/output, ffn_gate/up/down)", name), 4)
      end
      chosen[#chosen + 1] = name
    end
  end
  if #chosen == 0 then error("lora: targets select no weight of the model", 4) end
  table.sort(chosen)
  return chosen, all
end

local function check_lora_opts(o)
  o = options.check("lora", o, LORA_OPTS)
  local rank = o.rank or 8
  if not options.is_int(rank, 1) then options.fail("lora", "rank", "a positive integer", rank, 4) end
  local alpha = o.alpha or rank
  if type(alpha) ~= "number" or alpha <= 0 then options.fail("lora", "alpha", "a positive number", alpha, 4) end
  local p = o.dropout or 0
  if type(p) ~= "number" or p < 0 or p >= 1 then options.fail("lora", "dropout", "a number in [0, 1)", p, 4) end
  local seed = o.seed or 1
  if not options.is_int(seed, 0) then options.fail("lora", "seed", "a non-negative integer", seed, 4) end
  return { rank = rank, alpha = alpha, dropout = p, seed = seed, targets = o.targets }
end

-- The products the twins run (tape.K): frozen base products of any dtype
-- and, for an adapted weight, the adapter's term. Each adapted weight keeps
-- a stack of what its forward calls saved (a layer plan may run a weight
-- twice; the backward pops them in reverse).
local function products(state, tape)
  local P = setmetatable({}, { __index = K })

  function P.linear(y, x, W, b)
    if W:dtype() == "f32" then K.linear(y, x, W, b) else KL.deq_linear(y, x, W, b) end
    local ad = state.by_weight[W]
    if not ad then return end
    local n = x:numel() // ad.inp
    local xd = x
    state.call = state.call + 1
    local seed = (state.seed * 1000003 + state.step) * 65599 + state.call
    if state.training and state.dropout > 0 then
      xd = tape:buf(n, ad.inp)
      KL.dropout(xd, x, state.dropout, seed)
    end
    local xa = tape:buf(n, state.rank)    -- s dropout(x) A^T
    K.linear(xa, xd, ad.A, nil)
    ops.scale_(xa, state.scale)
    local z = tape:scratch("lora_z", n, ad.out)
    K.linear(z, xa, ad.B, nil)
    K.axpy(y, z, 1)
    local st = state.saved[W] or {}
    state.saved[W] = st
    st[#st + 1] = { xd = xd, xa = xa, seed = seed, dropped = xd ~= x }
  end

  function P.linear_backward(dx, dW, db, dy, x, W, acc)
    if W:dtype() == "f32" or dW or db then
      K.linear_backward(dx, dW, db, dy, x, W, acc)
    elseif dx then
      KL.deq_linear_dx(dx, dy, W, acc)
    end
    local ad = state.by_weight[W]
    if not ad then return end
    local st = state.saved[W]
    local e = table.remove(st)
    local n = x:numel() // ad.inp
    local dxa = tape:scratch("lora_dxa", n, state.rank)
    -- y += xa B^T: dB += dy^T xa, dxa = dy B; xa = s xd A^T: dA += s dxa^T xd
    K.linear_backward(dxa, ad.gB, nil, dy, e.xa, ad.B, false)
    ops.scale_(dxa, state.scale)
    if e.dropped then
      local dxd = tape:scratch("lora_dxd", n, ad.inp)
      K.linear_backward(dxd, ad.gA, nil, dxa, e.xd, ad.A, false)
      KL.dropout(dxd, dxd, state.dropout, e.seed)   -- the mask's adjoint is itself
      if dx then K.axpy(dx, dxd, 1) end
    else
      K.linear_backward(dx, ad.gA, nil, dxa, x, ad.A, true)
    end
  end
  return P
end

local LoraTrainer = {}

--- trainer(train_module, model, opts) -> a trainer of LoRA adapters
-- (slm.train.trainer with opts.lora; the other opts as its own).
function M.trainer(T, model, opts)
  if type(model) ~= "table" or not model.train_blocks then
    error('trainer: LoRA needs a model loaded with {train = "lora"} (or {train = true})', 3)
  end
  local o = check_lora_opts(opts.lora)
  local names, all = select_weights(model, o)
  for _, t in pairs(all) do
    if KL.links(t) > 0 then error("trainer: the model has adapters applied at run time (model:lora_remove them)", 3) end
  end
  local r = o.rank
  local state = { rank = r, scale = o.alpha / r, dropout = o.dropout, seed = o.seed, step = 0, call = 0,
                  by_weight = {}, saved = {}, training = false }
  local params, pnames, adapted = {}, {}, {}
  for i, name in ipairs(names) do
    local W = all[name]
    local out, inp = W:size(1), W:size(2)
    local bound = 1 / math.sqrt(inp)   -- kaiming_uniform_(a = sqrt(5)): gain sqrt(1/3) x sqrt(3 / fan_in)
    local A = core.testing.rand({ r, inp }, o.seed * 1000003 + i, -bound, bound)
    local B = tensor.zeros { out, r }
    params[name .. ".lora_a"], params[name .. ".lora_b"] = A, B
    pnames[#pnames + 1] = name .. ".lora_a"
    pnames[#pnames + 1] = name .. ".lora_b"
    local ad = { name = name, A = A, B = B, out = out, inp = inp }
    state.by_weight[W] = ad
    adapted[#adapted + 1] = ad
  end
  -- the trainer of slm.train over a view of the model whose parameters are
  -- the adapters (the base's tensors get no gradient and no update)
  local blocks = {}
  for k, v in pairs(model.train_blocks) do blocks[k] = v end
  blocks[{}] = { args = params }   -- marks the adapters as used
  local view = setmetatable({ params = params, param_names = pnames, train_blocks = blocks }, { __index = model })
  local topts = {}
  for k, v in pairs(opts) do if k ~= "lora" then topts[k] = v end end
  if topts.resume then error("trainer: resume is not supported with lora (tr:save_adapter writes the adapter)", 3) end
  local tr = T.trainer(view, topts)
  for _, ad in ipairs(adapted) do ad.gA, ad.gB = tr.grad[ad.name .. ".lora_a"], tr.grad[ad.name .. ".lora_b"] end
  tr.tape.K = products(state, tr.tape)
  tr.lora = { state = state, rank = r, alpha = o.alpha, dropout = o.dropout, targets = names, base = model }
  local meta = getmetatable(tr)
  LoraTrainer.__index = LoraTrainer
  setmetatable(LoraTrainer, { __index = meta.__index })
  return setmetatable(tr, LoraTrainer)
end

function LoraTrainer:run(batch, grad)
  local st = self.lora.state
  st.training, st.step, st.call, st.saved = grad and true or false, self.step_count, 0, {}
  return getmetatable(LoraTrainer).__index.run(self, batch, grad)
end

--- tr:adapter() -> {alpha =, pairs = {[name] = {a =, b =}}}: the live
-- adapter tensors (model:lora_add takes it).
function LoraTrainer:adapter()
  local pairs_ = {}
  for _, name in ipairs(self.lora.targets) do
    pairs_[name] = { a = self.model.params[name .. ".lora_a"], b = self.model.params[name .. ".lora_b"] }
  end
  return { alpha = self.lora.alpha, pairs = pairs_, path = "(trainer)" }
end

--- tr:save_adapter(path) -> true: the adapter in the reference's LoRA GGUF
-- layout (general.type = adapter, adapter.type = lora, adapter.lora.alpha;
-- NAME.lora_a (r, in), NAME.lora_b (out, r), f32), which
-- slm.load(base, {lora = {{path = path}}}) and the reference apply.
function LoraTrainer:save_adapter(path)
  if type(path) ~= "string" then error("bad argument #1 to 'save_adapter' (string expected)", 2) end
  local base = self.lora.base
  local tensors = {}
  for _, name in ipairs(self.model.param_names) do tensors[#tensors + 1] = { name = name, tensor = self.model.params[name] } end
  local ok, err = require("slm.gguf").write(path, { alignment = 32, tensors = tensors, metadata = {
    { "general.architecture", base.arch },
    { "general.type", "adapter" },
    { "general.name", "slm LoRA adapter" },
    { "adapter.type", "lora" },
    { "adapter.lora.alpha", { type = "f32", value = self.lora.alpha } },
  } })
  if not ok then error("save_adapter: " .. tostring(err), 2) end
  return true
end

function LoraTrainer.save()
  error("save: a LoRA trainer saves its adapter (tr:save_adapter(path)); the base is unchanged", 2)
end

--- adapter_bytes(tr) -> bytes of the adapter's tensors (f32)
function LoraTrainer:adapter_bytes()
  local n = 0
  for _, name in ipairs(self.model.param_names) do n = n + 4 * self.model.params[name]:numel() end
  return n
end

return M
