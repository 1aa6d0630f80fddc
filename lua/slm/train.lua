--- slm.train: training models from Lua (docs/TRAINING.md).
--
--   local model = slm.train.init{arch = "llama", vocab = 512, dim = 64, layers = 2, heads = 4,
--                                kv_heads = 2, ff = 160, ctx = 64, tied = false, seed = 1}
--   -- or slm.load("model.gguf", {train = true}): any dtype, trained as f32
--   local tr = slm.train.trainer(model, {lr = 3e-3, betas = {0.9, 0.95}, eps = 1e-8,
--                                        weight_decay = 0.1, clip = 1.0})
--   local loss = tr:backward(batch)     -- batch: B rows of T+1 ids; mean loss
--   local grads = tr:grads()            -- name -> f32 gradient (since zero_grad)
--   tr:zero_grad()
--   local loss, gnorm = tr:step(batch)  -- zero, backward, clip, AdamW; gnorm before clipping
--   tr:save("ckpt.gguf")                -- weights (a GGUF slm and the reference load) +
--                                       -- optimizer state beside it (ckpt.optim.gguf)
--   slm.train.trainer(model, {resume = "ckpt.gguf"})   -- continues bit for bit
--
-- The forward is the model file's own (models/llama.lua): slm.train.tape
-- records it and runs the C backward of each op in reverse. A model being
-- trained stays usable for inference: its sessions read the same f32
-- weights the optimizer updates in place.
local core = require "slm.core"
local tensor = require "slm.tensor"
local options = require "slm.options"
local tapelib = require "slm.train.tape"

local K = core.train

local M = {}

-- data (slm.train.data): token files, batches, the character tokenizer
M.data = require "slm.train.data"
M.tokenize, M.open_tokens, M.batches = M.data.tokenize, M.data.open, M.data.batches
M.char_tokenizer = M.data.char_tokenizer
M.plot = require "slm.train.plot"
local distill = require "slm.train.distill"
M.distill, M.distiller, M.generate_corpus = distill.distill, distill.distiller, distill.generate_corpus
-- prune -> heal -> evaluate (slm.train.heal, which requires this module)
function M.heal(opts) return require("slm.train.heal").heal(opts) end
function M.heal_table(results) return require("slm.train.heal").table(results) end

-- init ------------------------------------------------------------------------

local INIT_OPTS = options.known { "arch", "vocab", "dim", "layers", "heads", "kv_heads", "ff", "ctx", "tied",
                                  "seed", "rope_base", "eps", "std", "name", "tokenizer", "d_inner", "d_state",
                                  "d_conv", "dt_rank" }

local function need_int(o, key, min, default)
  local v = o[key]
  if v == nil then v = default end
  if v == nil then options.fail("init", key, "a positive integer", nil, 4) end
  if math.type(v) ~= "integer" or v < min then options.fail("init", key, "an integer >= " .. min, v, 4) end
  return v
end

-- An in-memory weight source (model.lua's interface) over a list of named
-- tensors and typed metadata pairs.
local function memory_source(arch, meta_pairs, tensors)
  local meta, typed, keys, byname, names = {}, {}, {}, {}, {}
  for i, kv in ipairs(meta_pairs) do
    local v = kv[2]
    keys[i] = kv[1]
    typed[kv[1]] = v
    meta[kv[1]] = type(v) == "table" and v.value or v
  end
  for i, t in ipairs(tensors) do
    byname[t.name] = t.tensor
    names[i] = t.name
  end
  return {
    -- GGUF-shaped: the definitions read its metadata as a GGUF file's
    kind = "gguf", memory = true, path = "slm.train.init", arch = arch,
    meta = function(k) return meta[k] end,
    typed = function(k) return typed[k] end,
    has = function(name) return byname[name] ~= nil end,
    keys = function() return keys end,
    tensor_names = function() return names end,
    tensor = function(name)
      local t = byname[name]
      if not t then error("slm.train.init: missing tensor " .. name, 0) end
      return t
    end,
  }
end

local u32 = function(v) return { type = "u32", value = v } end
local f32 = function(v) return { type = "f32", value = v } end

-- Weight makers of one init call: normal(std / div), uniform, constant
-- rows, each tensor from its own seed (seed, k)
local function makers(seed, std)
  local randn, rand = core.testing.randn, core.testing.rand
  local tensors, k = {}, 0
  local W = { list = tensors }
  local function add(name, t) tensors[#tensors + 1] = { name = name, tensor = t } end
  function W.normal(name, rows, cols, div)
    k = k + 1
    add(name, randn({ rows, cols }, seed * 1000003 + k, std / (div or 1)))
  end
  function W.uniform(name, shape, lo, hi)
    k = k + 1
    add(name, rand(shape, seed * 1000003 + k, lo, hi))
  end
  function W.values(name, shape, fn)   -- fn(i) for the i-th element (1-based)
    local n = 1
    for _, d in ipairs(shape) do n = n * d end
    local v = {}
    for i = 1, n do v[i] = fn(i) end
    add(name, tensor.new(v):reshape(shape))
  end
  function W.const(name, n, c) W.values(name, { n }, function() return c end) end
  function W.add(name, t) add(name, t) end
  return W
end

local ARCHS = {}

-- llama: the fixtures' reference init (train-tiny-README.md)
function ARCHS.llama(o, V, E, L, ctx, W)
  local H = need_int(o, "heads", 1)
  local HKV = need_int(o, "kv_heads", 1, H)
  local F = need_int(o, "ff", 1)
  if E % H ~= 0 then options.fail("init", "heads", "a divisor of dim " .. E, H, 4) end
  if H % HKV ~= 0 then options.fail("init", "kv_heads", "a divisor of heads " .. H, HKV, 4) end
  local D = E // H
  if D % 2 ~= 0 then options.fail("init", "heads", "a count giving an even head size (dim / heads)", H, 4) end
  local resid = math.sqrt(2 * L)
  W.normal("token_embd.weight", V, E)
  W.const("output_norm.weight", E, 1)
  if not o.tied then W.normal("output.weight", V, E) end
  for l = 0, L - 1 do
    local p = "blk." .. l .. "."
    W.const(p .. "attn_norm.weight", E, 1)
    W.normal(p .. "attn_q.weight", H * D, E)
    W.normal(p .. "attn_k.weight", HKV * D, E)
    W.normal(p .. "attn_v.weight", HKV * D, E)
    W.normal(p .. "attn_output.weight", E, H * D, resid)
    W.const(p .. "ffn_norm.weight", E, 1)
    W.normal(p .. "ffn_gate.weight", F, E)
    W.normal(p .. "ffn_up.weight", F, E)
    W.normal(p .. "ffn_down.weight", E, F, resid)
  end
  return {
    { "llama.context_length", u32(ctx) },
    { "llama.embedding_length", u32(E) },
    { "llama.block_count", u32(L) },
    { "llama.feed_forward_length", u32(F) },
    { "llama.attention.head_count", u32(H) },
    { "llama.attention.head_count_kv", u32(HKV) },
    { "llama.rope.dimension_count", u32(D) },
    { "llama.rope.freq_base", f32(o.rope_base or 10000.0) },
    { "llama.attention.layer_norm_rms_epsilon", f32(o.eps or 1e-5) },
    { "llama.vocab_size", u32(V) },
  }
end

-- mamba (Mamba-1): the reference code's init (mamba_simple.py): A = -(1..N)
-- per channel, D = 1, dt's bias the inverse softplus of dt drawn
-- log-uniform in [1e-3, 0.1], conv and dt_proj uniform in ±1/sqrt(fan in),
-- projections normal(0, std), out_proj divided by sqrt(2 layers)
function ARCHS.mamba(o, V, E, L, ctx, W, seed)
  local DI = need_int(o, "d_inner", 1, 2 * E)
  local DS = need_int(o, "d_state", 1, 16)
  local DC = need_int(o, "d_conv", 1, 4)
  local DR = need_int(o, "dt_rank", 1, (E + 15) // 16)
  local resid = math.sqrt(2 * L)
  W.normal("token_embd.weight", V, E)
  W.const("output_norm.weight", E, 1)
  if not o.tied then W.normal("output.weight", V, E) end
  local lo, hi = math.log(1e-3), math.log(0.1)
  for l = 0, L - 1 do
    local p = "blk." .. l .. "."
    W.const(p .. "attn_norm.weight", E, 1)
    W.normal(p .. "ssm_in.weight", 2 * DI, E)
    local c = 1 / math.sqrt(DC)
    W.uniform(p .. "ssm_conv1d.weight", { DI, DC }, -c, c)
    W.uniform(p .. "ssm_conv1d.bias", { DI }, -c, c)
    W.normal(p .. "ssm_x.weight", DR + 2 * DS, DI)
    local r = 1 / math.sqrt(DR)
    W.uniform(p .. "ssm_dt.weight", { DI, DR }, -r, r)
    local u = core.testing.rand({ DI }, seed * 7919 + l, 0, 1)
    W.values(p .. "ssm_dt.bias", { DI }, function(i)
      local dt = math.max(math.exp(lo + u:get(i) * (hi - lo)), 1e-4)
      return dt + math.log(-(math.exp(-dt) - 1))    -- softplus^-1(dt)
    end)
    W.values(p .. "ssm_a", { DI, DS }, function(i) return -(((i - 1) % DS) + 1) end)
    W.const(p .. "ssm_d", DI, 1)
    W.normal(p .. "ssm_out.weight", E, DI, resid)
  end
  return {
    { "mamba.context_length", u32(ctx) },
    { "mamba.embedding_length", u32(E) },
    { "mamba.block_count", u32(L) },
    { "mamba.ssm.conv_kernel", u32(DC) },
    { "mamba.ssm.inner_size", u32(DI) },
    { "mamba.ssm.state_size", u32(DS) },
    { "mamba.ssm.time_step_rank", u32(DR) },
    { "mamba.attention.layer_norm_rms_epsilon", f32(o.eps or 1e-5) },
    { "mamba.vocab_size", u32(V) },
  }
end

-- rwkv7: RWKV-7 "Goose" as its training code initializes it
-- (RWKV-LM/RWKV-v7/train_temp/src/model.py), the orthogonal and zero
-- matrices replaced by small normal ones (so that every parameter gets a
-- gradient from the first step): mixing vectors 1 - (i/dim)^(k ratio),
-- decay w0 from -7 to -2 across channels (+0.5), k_k 0.85, k_a 1, v0 1,
-- group-norm weights ((1 + l) / layers)^0.7, LayerNorms 1 and 0.
function ARCHS.rwkv7(o, V, E, L, ctx, W)
  local HS = need_int(o, "heads", 1, E // 64 > 0 and E // 64 or 1)
  if E % HS ~= 0 then options.fail("init", "heads", "a divisor of dim " .. E, HS, 4) end
  local F = need_int(o, "ff", 1, 4 * E)
  local R = need_int(o, "d_inner", 1, math.max(8, (E // 8 + 7) // 8 * 8))   -- low-rank width
  local resid = math.sqrt(2 * L)
  W.normal("token_embd.weight", V, E)
  W.const("token_embd_norm.weight", E, 1)
  W.const("token_embd_norm.bias", E, 0)
  W.const("output_norm.weight", E, 1)
  W.const("output_norm.bias", E, 0)
  W.normal("output.weight", V, E)
  for l = 0, L - 1 do
    local p = "blk." .. l .. "."
    local r01 = L > 1 and l / (L - 1) or 0
    local r10 = 1 - l / L
    for _, k in ipairs { "attn_norm", "attn_norm_2" } do
      W.const(p .. k .. ".weight", E, 1)
      W.const(p .. k .. ".bias", E, 0)
    end
    -- r w k v a g
    local pw = { 0.2, 0.9, 0.7, 0.7, 0.9, 0.2 }
    W.values(p .. "time_mix_lerp_fused.weight", { 6, 1, 1, E }, function(i)
      local j, c = (i - 1) // E + 1, (i - 1) % E
      return 1 - (c / E) ^ (pw[j] * r10)
    end)
    W.values(p .. "time_mix_w0.weight", { E }, function(i)
      return -7 + 5 * ((i - 1) / math.max(1, E - 1)) ^ (0.85 + r01 ^ 0.5) + 0.5
    end)
    for _, k in ipairs { "w", "a", "v", "g" } do
      W.normal(p .. "time_mix_" .. k .. "1.weight", R, E)
      W.normal(p .. "time_mix_" .. k .. "2.weight", E, R)
    end
    W.const(p .. "time_mix_a0.weight", E, 0)
    W.const(p .. "time_mix_v0.weight", E, 1)
    W.const(p .. "time_mix_k_k.weight", E, 0.85)
    W.const(p .. "time_mix_k_a.weight", E, 1)
    W.const(p .. "time_mix_r_k.weight", E, -0.04)
    W.normal(p .. "time_mix_key.weight", E, E)
    W.normal(p .. "time_mix_value.weight", E, E)
    W.normal(p .. "time_mix_receptance.weight", E, E)
    W.const(p .. "time_mix_ln.weight", E, ((1 + l) / L) ^ 0.7)
    W.const(p .. "time_mix_ln.bias", E, 0)
    W.normal(p .. "time_mix_output.weight", E, E, resid)
    W.values(p .. "channel_mix_lerp_k.weight", { 1, 1, E }, function(i) return 1 - ((i - 1) / E) ^ (r10 ^ 4) end)
    W.normal(p .. "channel_mix_key.weight", F, E)
    W.normal(p .. "channel_mix_value.weight", E, F, resid)
  end
  return {
    { "rwkv7.context_length", u32(ctx) },
    { "rwkv7.embedding_length", u32(E) },
    { "rwkv7.block_count", u32(L) },
    { "rwkv7.feed_forward_length", u32(F) },
    { "rwkv7.wkv.head_size", u32(E // HS) },
    { "rwkv7.attention.layer_norm_epsilon", f32(o.eps or 1e-5) },
    { "rwkv7.attention.head_count", u32(0) },
    { "rwkv7.attention.decay_lora_rank", u32(R) },
    { "rwkv7.attention.iclr_lora_rank", u32(R) },
    { "rwkv7.attention.value_residual_mix_lora_rank", u32(R) },
    { "rwkv7.attention.gate_lora_rank", u32(R) },
  }
end

--- init{arch = "llama" | "mamba" | "rwkv7", vocab =, dim =, layers =, ctx =, tied =
-- false, seed = 1, std = 0.02, eps = 1e-5, tokenizer =, ...} -> a model
-- ready to train, its weights f32 in memory:
--   llama: heads =, kv_heads = heads, ff =, rope_base = 10000. Weights
--     normal(0, std), attn_output and ffn_down further divided by
--     sqrt(2 layers) (GPT-2's rule, the fixtures' reference), norms 1.
--   mamba: d_inner = 2 dim, d_state = 16, d_conv = 4, dt_rank =
--     ceil(dim / 16); Mamba-1's reference init.
--   rwkv7: heads = dim / 64 (head size dim / heads), ff = 4 dim, d_inner =
--     the low-rank width of the decay, in-context rate, value mix and gate
--     adapters (dim / 8 rounded up to 8, at least 8); RWKV-7's init.
function M.init(o)
  o = options.check("init", o, INIT_OPTS)
  local arch = o.arch or "llama"
  if not ARCHS[arch] then
    options.fail("init", "arch", '"llama", "mamba" or "rwkv7"', arch)
  end
  local V, E, L = need_int(o, "vocab", 2), need_int(o, "dim", 2), need_int(o, "layers", 1)
  local ctx = need_int(o, "ctx", 1)
  local seed = need_int(o, "seed", 0, 1)
  if not options.is_bool(o.tied) then options.fail("init", "tied", "a boolean", o.tied) end
  local std = o.std or 0.02
  if type(std) ~= "number" or std <= 0 then options.fail("init", "std", "a positive number", std) end
  local W = makers(seed, std)
  local arch_meta = ARCHS[arch](o, V, E, L, ctx, W, seed)
  local meta = {
    { "general.architecture", arch },
    { "general.name", o.name or "slm-trained" },
    { "general.file_type", u32(0) },
  }
  for _, kv in ipairs(arch_meta) do meta[#meta + 1] = kv end
  local model, err = require("slm.model").from_source(memory_source(arch, meta, W.list), { train = true })
  if not model then error(err, 2) end
  if o.tokenizer ~= nil then
    if #o.tokenizer ~= V then
      error(string.format("init: the tokenizer has %d tokens, vocab is %d", #o.tokenizer, V), 2)
    end
    model.tokenizer = o.tokenizer
  end
  return model
end

-- the trainer ---------------------------------------------------------------------

local Trainer = {}
Trainer.__index = Trainer

local TRAINER_OPTS = options.known { "lr", "betas", "eps", "weight_decay", "clip", "warmup", "total_steps",
                                     "min_lr", "resume", "no_decay" }

--- The default weight-decay rule: none on 1-D tensors (norms, biases) and
-- on the token embedding.
function M.decays(name, t)
  if t:dim() < 2 or name == "token_embd.weight" then return false end
  -- Mamba's A (stored as -exp(A_log)) and D are not decayed (the paper's
  -- code marks them _no_weight_decay)
  if name:match("%.ssm_a$") or name:match("%.ssm_d$") then return false end
  return true
end

local function num(o, key, default, ok, expected)
  local v = o[key]
  if v == nil then return default end
  if type(v) ~= "number" or not ok(v) then options.fail("trainer", key, expected, v, 4) end
  return v
end

--- trainer(model, opts) -> a trainer of the model's parameters (a model
-- from slm.train.init or slm.load(path, {train = true})). opts: lr (3e-4),
-- betas ({0.9, 0.999}), eps (1e-8), weight_decay (0.01, PyTorch's AdamW
-- default; decoupled, not on 1-D tensors and token_embd, or as no_decay(name,
-- tensor) -> true says), clip (global gradient-norm bound; nil: none), warmup
-- (steps of linear warmup lr (it+1)/(warmup+1)), total_steps and min_lr
-- (cosine decay from lr to min_lr at total_steps, nanoGPT's schedule; without
-- total_steps the lr stays constant after warmup), resume (a checkpoint
-- tr:save wrote).
function M.trainer(model, opts)
  -- LoRA / QLoRA: adapters over a frozen base (slm.train.lora)
  if type(opts) == "table" and opts.lora ~= nil then return require("slm.train.lora").trainer(M, model, opts) end
  if type(model) ~= "table" or not model.params then
    error("trainer: the model is not trainable (use slm.train.init or slm.load(path, {train = true}))", 2)
  end
  if not K or not K.linear then error("trainer: this build has no training kernels (slm.core.train)", 2) end
  -- definitions whose forward records on a training session's tape
  if not model.def.trainable then
    error(string.format("trainer: %s models cannot be trained yet (trainable: llama family, gemma, mamba, rwkv7)",
                        model.hp.arch), 2)
  end
  opts = options.check("trainer", opts, TRAINER_OPTS)
  local pos = function(v) return v > 0 end
  local nonneg = function(v) return v >= 0 end
  local tr = setmetatable({ model = model, step_count = 0 }, Trainer)
  tr.base_lr = num(opts, "lr", 3e-4, pos, "a positive number")
  local betas = opts.betas or { 0.9, 0.999 }
  if type(betas) ~= "table" or type(betas[1]) ~= "number" or type(betas[2]) ~= "number"
     or betas[1] < 0 or betas[1] >= 1 or betas[2] < 0 or betas[2] >= 1 then
    options.fail("trainer", "betas", "{beta1, beta2} in [0, 1)", betas)
  end
  tr.beta1, tr.beta2 = betas[1], betas[2]
  tr.eps = num(opts, "eps", 1e-8, pos, "a positive number")
  tr.weight_decay = num(opts, "weight_decay", 0.01, nonneg, "a non-negative number")
  tr.clip = num(opts, "clip", nil, pos, "a positive number")
  tr.warmup = opts.warmup or 0
  if not options.is_int(tr.warmup, 0) then options.fail("trainer", "warmup", "a non-negative integer", tr.warmup) end
  tr.total_steps = opts.total_steps
  if not options.is_int(tr.total_steps, 1) then options.fail("trainer", "total_steps", "a positive integer", tr.total_steps) end
  tr.min_lr = num(opts, "min_lr", tr.base_lr * 0.1, nonneg, "a non-negative number")
  if opts.no_decay ~= nil and type(opts.no_decay) ~= "function" then
    options.fail("trainer", "no_decay", "a function(name, tensor) -> boolean", opts.no_decay)
  end
  -- parameters, gradients, AdamW moments, decay per tensor
  tr.names, tr.grad, tr.m, tr.v, tr.decay = {}, {}, {}, {}, {}
  local pgrad = {}
  -- the parameters the computation uses: the tensors the model's blocks
  -- were made with and the ones its tables hold (a converter may write
  -- tensors a layer does not read: RWKV-7's layer-0 value-mix adapters)
  local used = {}
  local function mark(v, depth)
    if tensor.is_tensor(v) then used[v] = true
    elseif type(v) == "table" and depth < 4 then
      for _, x in pairs(v) do mark(x, depth + 1) end
    end
  end
  mark(model.net, 0)
  for _, made in pairs(model.train_blocks or {}) do mark(made.args, 0) end
  tr.unused = {}
  for _, name in ipairs(model.param_names) do
    local p = model.params[name]
    if not used[p] then tr.unused[#tr.unused + 1] = name; goto continue end
    tr.names[#tr.names + 1] = name
    tr.grad[name] = tensor.zeros(p:shape())
    tr.m[name], tr.v[name] = tensor.zeros(p:shape()), tensor.zeros(p:shape())
    local decays = M.decays(name, p)
    if opts.no_decay then decays = not opts.no_decay(name, p) end
    tr.decay[name] = decays
    pgrad[p] = tr.grad[name]
    ::continue::
  end
  tr.tape = tapelib.new(pgrad)
  -- blocks without a backward are refused now, not at the first step
  local ok, err = pcall(tr.session, tr, 1, 1)
  if not ok then error((tostring(err):gsub("^[^\n]-%.lua:%d+: ", "")), 2) end
  tr.sess = nil
  if opts.resume then tr:load_state(opts.resume) end
  return tr
end

--- tr:set_total_steps(n): where the cosine decay ends (min_lr from step n
-- on), e.g. once a time-limited run knows its speed; n >= the steps done.
function Trainer:set_total_steps(n)
  if math.type(n) ~= "integer" or n < math.max(1, self.step_count) then
    options.fail("set_total_steps", "n", "an integer >= the steps done (" .. self.step_count .. ")", n)
  end
  self.total_steps = n
end

--- tr:lr([step]) -> the learning rate of a step (default: the next one).
function Trainer:lr(it)
  it = it or self.step_count
  local lr, warm, total = self.base_lr, self.warmup, self.total_steps
  if it < warm then return lr * (it + 1) / (warm + 1) end
  if not total then return lr end
  if it > total then return self.min_lr end
  local r = (it - warm) / math.max(1, total - warm)
  return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * r)) * (lr - self.min_lr)
end

-- The batch as input ids (a Lua list of B*T ids), targets and its shape.
local function read_batch(batch, n_vocab)
  local rows
  if tensor.is_tensor(batch) then
    if batch:dim() ~= 2 then error("batch: expected a (B, T+1) tensor of ids", 3) end
    rows = batch:totable()
  elseif type(batch) == "table" then
    rows = batch
  else
    error("batch: expected B rows of T+1 token ids (a table of tables or an i32 tensor)", 3)
  end
  local B = #rows
  if B == 0 or type(rows[1]) ~= "table" then error("batch: expected B rows of T+1 token ids", 3) end
  local T1 = #rows[1]
  if T1 < 2 then error("batch: rows need at least 2 ids (T+1 with T >= 1)", 3) end
  local ids, tg = {}, {}
  for b = 1, B do
    local r = rows[b]
    if type(r) ~= "table" or #r ~= T1 then error(string.format("batch: row %d has %s ids, row 1 has %d", b,
                                                                type(r) == "table" and #r or "no", T1), 3) end
    for t = 1, T1 do
      local id = r[t]
      if math.type(id) ~= "integer" then
        local f = math.tointeger(id)
        if not f then error(string.format("batch: row %d, id %d is not an integer", b, t), 3) end
        id = f
      end
      if id < 0 or id >= n_vocab then
        error(string.format("batch: row %d, id %d is %d, out of range 0..%d", b, t, id, n_vocab - 1), 3)
      end
      if t < T1 then ids[#ids + 1] = id end
      if t > 1 then tg[#tg + 1] = id end
    end
  end
  return ids, tg, B, T1 - 1
end

-- The training session of a batch shape: buffers and the recording ops.
function Trainer:session(B, T)
  local s = self.sess
  if s and s.B == B and s.T == T then return s end
  local hp, n = self.model.hp, B * T
  s = { B = B, T = T, n_ctx = T, n_batch = n, n_past = 0, sdpa_opts = setmetatable({}, { __mode = "k" }) }
  s.x, s.h, s.y = tensor.zeros { n, hp.dim }, tensor.zeros { n, hp.dim }, tensor.zeros { n, hp.dim }
  s.all_logits = tensor.zeros { n, hp.n_vocab }
  s.logits = s.all_logits[n]
  s.ids32 = tensor.zeros({ n }, "i32")
  s.targets = tensor.zeros({ n }, "i32")
  local tape = self.tape
  tape.bufs = {}
  s.blocks = tapelib.blocks(tape, s)
  s.head = tapelib.head(tape, s)
  s.param_name = {}
  for name, t in pairs(self.model.params) do s.param_name[t] = name end
  -- the model view: each layer's C blocks replaced by their training twins
  local net, blocks_made = self.model.net, self.model.train_blocks
  local cb = core.blocks
  local twins = {
    [cb.attention] = tapelib.attention, [cb.ffn] = tapelib.ffn, [core.mamba.block] = tapelib.mamba,
    [core.rwkv.time_mix] = tapelib.rwkv7_tmix, [core.rwkv.channel_mix] = tapelib.rwkv7_cmix,
  }
  local layers = {}
  for l, L in ipairs(net.layers) do
    local view = setmetatable({}, { __index = L })
    -- every C block of the layer gets its twin; one without is refused
    -- rather than run untaped (its weights would get no gradient and the
    -- gradient would not flow through it)
    for field, b in pairs(L) do
      if type(b) == "userdata" and not tensor.is_tensor(b) then
        local made = blocks_made[b]
        local twin = made and twins[made.make]
        if not twin then
          error(string.format("train: layer %d's %s block has no backward yet", l - 1, field), 2)
        end
        view[field] = twin(tape, s, made.args)
      end
    end
    layers[l] = view
  end
  s.net = setmetatable({ layers = layers, hooks = false }, { __index = net })
  -- recurrent models clear or reset their state at position 0
  s.state = { clear = function() end, reset = function() end }
  s.v_first, s.dv_first = tensor.zeros { n, hp.dim }, tensor.zeros { n, hp.dim }   -- RWKV-7

  self.sess = s
  return s
end

local function fill_i32(t, list)
  for i = 1, #list do t:set(i, list[i]) end
end

-- forward + loss; with grad, the backward too (accumulating into grads)
function Trainer:run(batch, grad)
  local model = self.model
  if model.net.hooks then
    error("train: the model has hooks (model:hook); a training forward does not run them", 3)
  end
  local ids, tg, B, T = read_batch(batch, model.hp.n_vocab)
  local s = self:session(B, T)
  fill_i32(s.ids32, ids)
  fill_i32(s.targets, tg)
  local tape = self.tape
  tape:reset()
  model.def.forward(s.net, s, ids, 1, B * T)
  local n = B * T
  -- loss_fn: a loss with xent's signature in its place (slm.train.distill sets it around a step)
  local sum = (self.loss_fn or K.xent)(s.all_logits, s.targets, grad and 1 / n or 0)
  if grad then
    tape:backward()
    tape:clear_activation_grads()
  end
  return sum / n
end

--- tr:backward(batch) -> the batch's mean loss; the gradients of every
-- parameter are accumulated (tr:grads()).
function Trainer:backward(batch) return self:run(batch, true) end

--- tr:eval_loss(batch) -> mean loss, no gradient.
function Trainer:eval_loss(batch) return self:run(batch, false) end

--- tr:grads() -> {name = f32 gradient tensor}, the trainer's own buffers.
function Trainer:grads()
  local t = {}
  for _, name in ipairs(self.names) do t[name] = self.grad[name] end
  return t
end

function Trainer:zero_grad()
  for _, name in ipairs(self.names) do tapelib.zero(self.grad[name]) end
end

--- tr:grad_norm() -> the global L2 norm of the gradients.
function Trainer:grad_norm()
  local ss = 0
  for _, name in ipairs(self.names) do ss = ss + K.sumsq(self.grad[name]) end
  return math.sqrt(ss)
end

--- tr:update() -> gnorm: clip and one AdamW update with the gradients as
-- they are (after backward calls: gradient accumulation).
function Trainer:update()
  local gnorm = self:grad_norm()
  local c = 1.0
  if self.clip then   -- torch.nn.utils.clip_grad_norm_: max_norm / (norm + 1e-6), if below 1
    local coef = self.clip / (gnorm + 1e-6)
    if coef < 1 then c = coef end
  end
  local t = self.step_count + 1
  local lr = self:lr(self.step_count)
  local params = self.model.params
  local o = { lr = lr, beta1 = self.beta1, beta2 = self.beta2, eps = self.eps, step = t, grad_scale = c }
  for _, name in ipairs(self.names) do
    o.weight_decay = self.decay[name] and self.weight_decay or 0
    K.adamw(params[name], self.grad[name], self.m[name], self.v[name], o)
  end
  self.step_count = t
  return gnorm
end

--- tr:step(batch) -> loss, gnorm: zero the gradients, backward, clip,
-- AdamW with the schedule's learning rate.
function Trainer:step(batch)
  self:zero_grad()
  local loss = self:backward(batch)
  local gnorm = self:update()
  return loss, gnorm
end

-- checkpoints -----------------------------------------------------------------------

local function optim_path(path)
  return (path:gsub("%.gguf$", "")) .. ".optim.gguf"
end
M.optim_path = optim_path

-- metadata pairs of the model's source, typed as the file has them
local function source_metadata(model)
  local src = model.source
  local out = {}
  for _, k in ipairs(src.keys and src.keys() or {}) do
    if k ~= "general.alignment" then
      local v
      if src.typed then v = src.typed(k)
      elseif src.file then v = src.file:typed(k) end
      if v == nil then v = src.meta(k) end
      out[#out + 1] = { k, v }
    end
  end
  return out
end

--- tr:save(path): the weights as a GGUF (f32, the model's metadata and
-- tokenizer; slm.load and the reference read it) and the optimizer state
-- (step, moments, settings) in `<path without .gguf>.optim.gguf`.
function Trainer:save(path)
  if type(path) ~= "string" then error("bad argument #1 to 'save' (string expected)", 2) end
  local model = self.model
  -- a variant's layer plan is not in the file: saved, it would load as the
  -- full model (slm.prune.layers writes a file without the layers)
  for i, l in ipairs(model.net.plan or {}) do
    if l ~= i or #model.net.plan ~= #model.net.layers then
      error("save: the model is a variant (layer plan " .. table.concat(require("slm.experiment").plan(model), ",")
            .. "), which a file cannot hold; slm.prune.layers writes a model without layers", 2)
    end
  end
  local meta = source_metadata(model)
  local have = {}
  for _, kv in ipairs(meta) do have[kv[1]] = true end
  if model.tokenizer and not have["tokenizer.ggml.model"] and model.tokenizer.gguf_metadata then
    for _, kv in ipairs(model.tokenizer:gguf_metadata()) do meta[#meta + 1] = kv end
  end
  local tensors = {}
  for _, name in ipairs(model.param_names) do tensors[#tensors + 1] = { name = name, tensor = model.params[name] } end
  -- constants the definition read (RoPE factors) go back too
  for _, name in ipairs(model.source.tensor_names and model.source.tensor_names() or {}) do
    if not model.params[name] and model.source.has(name) then
      tensors[#tensors + 1] = { name = name, tensor = model.source.tensor(name) }
    end
  end
  local ok, err = require("slm.gguf").write(path, { metadata = meta, tensors = tensors, alignment = 32 })
  if not ok then error("save: " .. tostring(err), 2) end
  local ot = {}
  for _, name in ipairs(self.names) do
    ot[#ot + 1] = { name = "m." .. name, tensor = self.m[name] }
    ot[#ot + 1] = { name = "v." .. name, tensor = self.v[name] }
  end
  local om = {
    { "general.name", "slm optimizer state" },
    { "train.step", { type = "u32", value = self.step_count } },
    { "train.optimizer", "adamw" },
  }
  ok, err = require("slm.gguf").write(optim_path(path), { metadata = om, tensors = ot, alignment = 32 })
  if not ok then error("save: " .. tostring(err), 2) end
end

--- Loads weights and optimizer state of a checkpoint into this trainer.
function Trainer:load_state(path)
  local gguf = require "slm.gguf"
  local f, err = gguf.open(path)
  if not f then error("resume: " .. err, 3) end
  local of, oerr = gguf.open(optim_path(path))
  if not of then f:close(); error("resume: " .. oerr, 3) end
  local params = self.model.params
  for _, name in ipairs(self.model.param_names) do
    local w = f:tensor(name)
    if not w then error("resume: " .. path .. " has no tensor " .. name, 3) end
    if w:numel() ~= params[name]:numel() then error("resume: " .. path .. ": " .. name .. " has another shape", 3) end
    params[name]:copy_(w)
  end
  for _, name in ipairs(self.names) do
    for _, which in ipairs { "m", "v" } do
      local t = of:tensor(which .. "." .. name)
      if not t then error("resume: " .. optim_path(path) .. " has no tensor " .. which .. "." .. name, 3) end
      self[which][name]:copy_(t)
    end
  end
  self.step_count = of.metadata["train.step"]
  f:close()
  of:close()
end

return M
