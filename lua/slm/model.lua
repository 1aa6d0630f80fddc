--- slm.model: load a model file, open sessions, evaluate tokens.
--
--   local model = assert(slm.load("SmolLM2-135M.Q8_0.gguf"))
--   local sess = model:session{ctx = 2048}      -- KV cache / state
--   local logits = sess:eval(ids)               -- f32 tensor (n_vocab), last position
--
-- Architectures are Lua modules (models/llama.lua, ...) that build C blocks
-- from the file's tensors and compose them in `forward`; slm.model.register
-- adds new ones at run time.
local core = require "slm.core"
local tensor = require "slm.tensor"
local gguf = require "slm.gguf"

local M = {}

-- general.architecture -> definition module (searched as "models.<name>"
-- from a checkout, "slm.models.<name>" when installed)
M.architectures = { llama = "llama", qwen2 = "llama", phi3 = "llama", mamba = "mamba",
                    mamba2 = "mamba", rwkv6 = "rwkv", rwkv7 = "rwkv", rwkvcpp = "rwkv" }

local defs = {}

local function find_def(modname)
  if defs[modname] then return defs[modname] end
  for _, prefix in ipairs { "models.", "slm.models." } do
    local ok, def = pcall(require, prefix .. modname)
    if ok then
      defs[modname] = def
      return def
    elseif not tostring(def):find("module '" .. prefix .. modname .. "' not found", 1, true) then
      error(def, 0)
    end
  end
  error("model definition '" .. modname .. "' not found on package.path", 0)
end

--- Registers an architecture: def (a table with hparams, build, state,
-- forward) or the name of a module under models/.
function M.register(arch, def)
  if type(def) == "table" then
    defs["@" .. arch] = def
    M.architectures[arch] = "@" .. arch
  else
    M.architectures[arch] = def
  end
end

--- The architectures slm.load knows, sorted, as a comma-separated string.
function M.supported()
  local names = {}
  for k in pairs(M.architectures) do names[#names + 1] = k end
  table.sort(names)
  return table.concat(names, ", ")
end
local supported = M.supported

local function read_magic(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local head = f:read(4) or ""
  f:close()
  return head
end

-- A weight source: uniform access to a file's metadata and tensors.
local function gguf_source(path)
  local f, err = gguf.open(path)
  if not f then return nil, err end
  local arch = f.metadata["general.architecture"]
  if type(arch) ~= "string" then
    f:close()
    return nil, path .. ": no general.architecture in the metadata"
  end
  return {
    kind = "gguf", path = path, arch = arch, file = f,
    meta = function(k) return f.metadata[k] end,
    has = function(name) return f:info(name) ~= nil end,
    tensor = function(name)
      local t, e = f:tensor(name)
      if not t then error(path .. ": missing tensor " .. name .. (e and (" (" .. e .. ")") or ""), 0) end
      return t
    end,
  }
end

local function llama2c_source(path)
  local m, err = core.llama2c.open(path)
  if not m then return nil, err end
  return {
    kind = "llama2c", path = path, arch = "llama", config = m.config,
    meta = function() return nil end,
    has = function(name) return m.tensors[name] ~= nil end,
    tensor = function(name)
      local t = m.tensors[name]
      if not t then error(path .. ": missing tensor " .. name, 0) end
      return t
    end,
  }
end

-- rwkv.cpp files: the architecture (RWKV version) is told by the keys
local function rwkvcpp_source(path)
  local m, err = core.rwkvcpp.open(path)
  if not m then return nil, err end
  return {
    kind = "rwkvcpp", path = path, arch = "rwkvcpp", header = m.header, names = m.names,
    meta = function() return nil end,
    has = function(name) return m.tensors[name] ~= nil end,
    tensor = function(name)
      local t = m.tensors[name]
      if not t then error(path .. ": missing tensor " .. name, 0) end
      return t
    end,
  }
end

local Model = {}
Model.__index = Model

function Model:__tostring()
  local hp = self.hp
  return string.format("slm.Model(%s, %d layers, dim %d, vocab %d, %s)", hp.arch, hp.n_layer,
                       hp.dim, hp.n_vocab, self.path)
end

--- load(path [, opts]) -> model | nil, msg
-- GGUF files, llama2.c checkpoints (.bin), rwkv.cpp files.
-- opts.tokenizer: a tokenizer file (GGUF, tokenizer.json, llama2.c
-- tokenizer.bin) or object to use instead of the model file's own.
function M.load(path, opts)
  opts = opts or {}
  if type(path) ~= "string" then error("bad argument #1 to 'load' (string expected, got " .. type(path) .. ")", 2) end
  local magic, err = read_magic(path)
  if not magic then return nil, err end
  local src
  if magic == "GGUF" then
    src, err = gguf_source(path)
  elseif magic == "fmgg" then  -- 0x67676d66 little-endian: rwkv.cpp
    src, err = rwkvcpp_source(path)
  else
    src, err = llama2c_source(path)
    if not src then
      return nil, path .. ": not a GGUF file or llama2.c checkpoint (" .. err .. ")"
    end
  end
  if not src then return nil, err end
  if opts.lora then  -- adapters merged into the weights as they are read (slm.lora)
    src, err = require("slm.lora").source(src, opts.lora)
    if not src then return nil, err end
  end
  local modname = M.architectures[src.arch]
  if not modname then
    return nil, string.format("%s: unsupported architecture '%s' (supported: %s)", path, src.arch, supported())
  end
  local def = defs[modname] or find_def(modname)
  local ok, res = pcall(function()
    -- a definition reads its own kind of file: hparams(src) for GGUF,
    -- hparams_<kind>(src) for the others (llama2c, rwkvcpp)
    local reader = src.kind == "gguf" and def.hparams or def["hparams_" .. src.kind]
    if not reader then error(path .. ": the " .. modname .. " definition cannot read " .. src.kind .. " files", 0) end
    local hp = reader(src)
    return { hp = hp, net = def.build(src, hp) }
  end)
  if not ok then return nil, tostring(res) end
  local model = setmetatable({
    path = path, arch = src.arch, def = def, hp = res.net.hp or res.hp, net = res.net,
    source = src,
  }, Model)
  model.hp = res.hp
  -- the tokenizer: opts.tokenizer (a path or a tokenizer), else the GGUF's own
  local tokmod = require "slm.tokenizer"
  if type(opts.tokenizer) == "string" then
    local tok, terr = tokmod.load(opts.tokenizer)
    if not tok then return nil, terr end
    model.tokenizer = tok
  elseif opts.tokenizer ~= nil then
    model.tokenizer = opts.tokenizer
  elseif src.kind == "gguf" and src.meta("tokenizer.ggml.model") ~= nil then
    local tok, terr = tokmod.load(path)
    if not tok then return nil, terr end
    model.tokenizer = tok
  end
  return model
end

--- Metadata value (GGUF) or nil.
function Model:meta(key) return self.source.meta(key) end

-- Experiments: activation hooks (slm.hooks), layer plans and LoRA (slm.experiment).
function Model:hook(name, fn) return require("slm.hooks").add(self, name, fn) end
function Model:variant(opts) return require("slm.experiment").variant(self, opts) end
function Model:apply_lora(path, scale) return require("slm.lora").apply(self, path, scale) end

local Session = {}
Session.__index = Session

--- model:session{ctx = N, batch = B} -> session with its own KV cache/state.
-- ctx defaults to min(training context, 4096); batch (rows per forward
-- call during prompt processing) to 64.
function Model:session(opts)
  opts = opts or {}
  local hp = self.hp
  local n_ctx = opts.ctx or math.min(hp.n_ctx_train or 2048, 4096)
  local n_batch = opts.batch or 64
  if math.type(n_ctx) ~= "integer" or n_ctx < 1 then error("session: ctx must be a positive integer", 2) end
  if math.type(n_batch) ~= "integer" or n_batch < 1 then error("session: batch must be a positive integer", 2) end
  n_batch = math.min(n_batch, n_ctx)
  local s = setmetatable({
    model = self, n_ctx = n_ctx, n_batch = n_batch, n_past = 0, tokens = {},
  }, Session)
  s.x = tensor.zeros({ n_batch, hp.dim })
  s.h = tensor.zeros({ n_batch, hp.dim })
  s.y = tensor.zeros({ n_batch, hp.dim })
  s.logits = tensor.zeros({ hp.n_vocab })
  s.state = self.def.state(self.net, { n_ctx = n_ctx, n_batch = n_batch })
  return s
end

function Session:__tostring()
  return string.format("slm.Session(%s, %d/%d tokens)", self.model.hp.arch, self.n_past, self.n_ctx)
end

--- sess:eval(ids) -> logits (f32 tensor of n_vocab) after the last id.
-- The ids are appended to the session's context. The returned tensor is the
-- session's own buffer: it changes on the next eval (clone it to keep it).
function Session:eval(ids)
  if type(ids) == "number" then ids = { ids } end
  if type(ids) ~= "table" then error("bad argument #1 to 'eval' (table of token ids expected)", 2) end
  local n = #ids
  if n == 0 then error("bad argument #1 to 'eval' (no tokens)", 2) end
  if self.n_past + n > self.n_ctx then
    error(string.format("context full: %d tokens + %d new exceed ctx %d", self.n_past, n, self.n_ctx), 2)
  end
  local nv = self.model.hp.n_vocab
  for i = 1, n do
    local id = ids[i]
    if math.type(id) ~= "integer" then
      error(string.format("token id %s at position %d is not an integer", tostring(id), i), 2)
    elseif id < 0 or id >= nv then
      error(string.format("token id %d at position %d out of range 0..%d", id, i, nv - 1), 2)
    end
  end
  local def, net = self.model.def, self.model.net
  local first = 1
  while first <= n do
    local m = math.min(self.n_batch, n - first + 1)
    def.forward(net, self, ids, first, m)
    for i = first, first + m - 1 do self.tokens[#self.tokens + 1] = ids[i] end
    self.n_past = self.n_past + m
    first = first + m
  end
  return self.logits
end

--- Forgets the context (the cache is overwritten from position 0).
function Session:reset()
  self.n_past = 0
  self.tokens = {}
end

-- Snapshots ------------------------------------------------------------------
--
-- A snapshot holds what a session needs to continue exactly where it was:
-- the position, the tokens, the architecture's state (the KV cache rows in
-- use, or a recurrent state: O(state) bytes) and the last logits. The state
-- userdata of every architecture provides snapshot(n_past) -> string and
-- restore(string).

local Snapshot = {}
Snapshot.__index = Snapshot

function Snapshot:__tostring()
  return string.format("slm.Snapshot(%s, %d tokens, %d bytes)", self.arch, self.n_past, #self.state)
end

--- sess:snapshot() -> snapshot (independent of later evaluation)
function Session:snapshot()
  return setmetatable({
    arch = self.model.hp.arch, n_vocab = self.model.hp.n_vocab, n_past = self.n_past,
    tokens = table.move(self.tokens, 1, #self.tokens, 1, {}),
    state = self.state:snapshot(self.n_past),
    logits = self.logits:tobytes(),
  }, Snapshot)
end

--- sess:restore(snap): the session continues from the snapshot's point.
function Session:restore(snap)
  if getmetatable(snap) ~= Snapshot then error("bad argument #1 to 'restore' (snapshot expected)", 2) end
  local hp = self.model.hp
  if snap.arch ~= hp.arch or snap.n_vocab ~= hp.n_vocab then
    error(string.format("restore: snapshot of a %s model (vocab %d), this session runs %s (vocab %d)",
                        snap.arch, snap.n_vocab, hp.arch, hp.n_vocab), 2)
  end
  if snap.n_past > self.n_ctx then
    error(string.format("restore: snapshot holds %d tokens, the context has room for %d", snap.n_past, self.n_ctx), 2)
  end
  self.state:restore(snap.state)
  self.n_past = snap.n_past
  self.tokens = table.move(snap.tokens, 1, #snap.tokens, 1, {})
  self.logits:copy_(tensor.frombytes(snap.logits, "f32", { hp.n_vocab }))
  return self
end

--- sess:fork() -> a new, independent session at the same point.
function Session:fork()
  local s = self.model:session { ctx = self.n_ctx, batch = self.n_batch }
  return s:restore(self:snapshot())
end

local SNAP_MAGIC = "SLMSNAP1"

--- snap:save(path) -> true | nil, msg
function Snapshot:save(path)
  local f, err = io.open(path, "wb")
  if not f then return nil, err end
  local tokens = string.pack("<" .. string.rep("i4", #self.tokens), table.unpack(self.tokens))
  local ok, werr = f:write(SNAP_MAGIC, string.pack("<s4i4i4i4", self.arch, self.n_vocab, self.n_past, #self.tokens),
                           tokens, string.pack("<s8s8", self.state, self.logits))
  local cok, cerr = f:close()
  if not ok then return nil, werr end
  if not cok then return nil, cerr end
  return true
end

--- slm.model.load_snapshot(path) -> snapshot | nil, msg
function M.load_snapshot(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local data = f:read("a")
  f:close()
  if data:sub(1, #SNAP_MAGIC) ~= SNAP_MAGIC then return nil, path .. ": not an slm snapshot" end
  local ok, snap = pcall(function()
    local arch, n_vocab, n_past, n_tok, off = string.unpack("<s4i4i4i4", data, #SNAP_MAGIC + 1)
    if n_tok < 0 or n_tok > (#data - off + 1) // 4 then error("bad token count") end
    local tokens = {}
    for i = 1, n_tok do tokens[i], off = string.unpack("<i4", data, off) end
    local state, logits
    state, logits, off = string.unpack("<s8s8", data, off)
    if #logits ~= 4 * n_vocab then error("bad logits size") end
    return setmetatable({ arch = arch, n_vocab = n_vocab, n_past = n_past, tokens = tokens,
                          state = state, logits = logits }, Snapshot)
  end)
  if not ok then return nil, path .. ": truncated or corrupt snapshot" end
  return snap
end

Session.generate = require("slm.generate").generate
Session.generator = require("slm.stepper").generator
Session.chat = require("slm.chat").chat
Session.chat_session = require("slm.chat").session

M.Model = Model
M.Session = Session
M.Snapshot = Snapshot
return M
