--- slm.model: load a model file, open sessions, evaluate tokens.
--
--   local model = assert(slm.load("SmolLM2-135M.Q8_0.gguf"))
--   local sess = model:session{ctx = 2048}      -- KV cache / state
--   local logits = sess:eval(ids)               -- f32 tensor (n_vocab), last position
--   local v = model:embed("a sentence")         -- f32 tensor (dim), L2-normalized
--
-- Architectures are Lua modules (models/llama.lua, ...) that build C blocks
-- from the file's tensors and compose them in `forward`; slm.model.register
-- adds new ones at run time.
local core = require "slm.core"
local tensor = require "slm.tensor"
local gguf = require "slm.gguf"
local options = require "slm.options"

local M = {}

-- Architecture definitions are the modules slm.models.<name>, each
-- declaring the general.architecture values it reads (`archs`). Installed,
-- they sit beside slm's other modules (slm/models/*.lua on package.path);
-- in a checkout they are the top-level models/ directory, which this
-- searcher serves under the same names.
local checkout = debug.getinfo(1, "S").source:match("^@(.-)lua[/\\]slm[/\\]model%.lua$")
if checkout then
  table.insert(package.searchers, function(name)
    local mod = name:match("^slm%.models%.([%w_]+)$")
    if not mod then return nil end
    local path = (checkout == "" and "./" or checkout) .. "models/" .. mod .. ".lua"
    local f = io.open(path, "rb")
    if not f then return "\n\tno file '" .. path .. "'" end
    f:close()
    local chunk, err = loadfile(path)
    if not chunk then error(err, 0) end
    return chunk, path
  end)
end

--- The definitions slm.load routes files to, by the archs each declares.
M.definitions = { "llama", "gemma", "mamba", "rwkv", "lfm2", "bert" }

local routes     -- general.architecture -> definition table (built on first use)

local function route_table()
  if routes then return routes end
  routes = {}
  for _, name in ipairs(M.definitions) do
    local def = require("slm.models." .. name)
    for _, arch in ipairs(def.archs or {}) do routes[arch] = routes[arch] or def end
  end
  return routes
end

--- Registers an architecture: def (a table with archs, hparams, build,
-- state, forward) or the name of a module under slm.models. With def a
-- table, arch may be nil: every arch in def.archs is routed to it.
function M.register(arch, def)
  if type(def) == "string" then def = require("slm.models." .. def) end
  if type(def) ~= "table" then error("bad argument #2 to 'register' (definition table or module name expected)", 2) end
  local t = route_table()
  if arch then t[arch] = def else for _, a in ipairs(def.archs or {}) do t[a] = def end end
end

--- The architectures slm.load knows, sorted, as a comma-separated string.
function M.supported()
  local names = {}
  for k in pairs(route_table()) do names[#names + 1] = k end
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
    keys = function() return f.keys end,
    tensor_names = function()
      local t = {}
      for i, info in ipairs(f.tensors) do t[i] = info.name end
      return t
    end,
    tensor = function(name)
      local t, e = f:tensor(name)
      if not t then error(f:info(name) and e or (path .. ": missing tensor " .. name), 0) end
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
    tensor_names = function()
      local t = {}
      for name in pairs(m.tensors) do t[#t + 1] = name end
      table.sort(t)
      return t
    end,
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
    tensor_names = function() return m.names end,
    tensor = function(name)
      local t = m.tensors[name]
      if not t then error(path .. ": missing tensor " .. name, 0) end
      return t
    end,
  }
end

-- Coverage: a file whose tensors or metadata slm does not understand is
-- refused, never computed without them. -------------------------------------

--- tracked(src) -> a source that records which tensors and metadata keys
-- the definition read (used_tensors, used_keys).
function M.tracked(src)
  local used_t, used_k = {}, {}
  local t = {}
  for k, v in pairs(src) do t[k] = v end
  t.tensor = function(name)
    used_t[name] = true
    return src.tensor(name)
  end
  t.meta = function(k)
    used_k[k] = true
    return src.meta(k)
  end
  t.used_tensors, t.used_keys = used_t, used_k
  return t
end

-- Tensors files carry that no computation reads, each with the reason it
-- may be ignored. Anything else unused is an error.
M.known_unused = {
  -- precomputed rotary inverse frequencies written by old converters; the
  -- rotation is computed from rope.freq_base and rope.dimension_count
  { pattern = "^blk%.%d+%.attn_rot_embd$" },
}

local function known_unused(name)
  for _, u in ipairs(M.known_unused) do
    if name:match(u.pattern) then return true end
  end
  return false
end

--- check_coverage(tsrc, def): every tensor of the file was read by the
-- definition (or is known to be unused), and every `<arch>.` metadata key
-- was read or is on the definition's ignored_keys list; else an error
-- naming the file and the tensor or key.
function M.check_coverage(tsrc, def)
  local names = tsrc.tensor_names and tsrc.tensor_names() or {}
  for _, name in ipairs(names) do
    if not tsrc.used_tensors[name] and not known_unused(name) then
      error(string.format("%s: tensor '%s' is not used by slm's %s definition (refusing to compute without it)",
                          tsrc.path, name, def.name or tsrc.arch), 0)
    end
  end
  local prefix = tsrc.arch .. "."
  local ignored = def.ignored_keys or {}
  for _, k in ipairs(tsrc.keys and tsrc.keys() or {}) do
    if k:sub(1, #prefix) == prefix and not tsrc.used_keys[k] and not ignored[k:sub(#prefix + 1)] then
      error(string.format("%s: metadata key '%s' is not understood by slm's %s definition (it may change the computation)",
                          tsrc.path, k, def.name or tsrc.arch), 0)
    end
  end
end

-- An error raised while a definition reads a file, as one line naming the
-- file: a definition's own messages start with the path already; a block's
-- check (C) carries the chunk and line of the definition that called it
-- (".../models/llama.lua:174: "), which tells the user nothing about their
-- file, so that prefix gives way to the path.
local function file_error(path, e)
  e = tostring(e)
  if e:sub(1, #path + 2) == path .. ": " then return e end
  return path .. ": " .. e:gsub("^[^\n]-%.lua:%d+: ", "")
end

-- A GGUF file's <arch>.block_count (hp.n_layer) against the blk.N tensors
-- it holds: a wrong count would otherwise be reported as the first missing
-- or unused tensor.
local function check_blocks(src, hp)
  local n = 0
  for _, name in ipairs(src.tensor_names()) do
    local b = name:match("^blk%.(%d+)%.")
    if b then n = math.max(n, tonumber(b) + 1) end
  end
  if n > 0 and hp.n_layer ~= n then
    error(string.format("%s: %s.block_count is %s, the file has tensors of blocks 0..%d", src.path, src.arch,
                        tostring(hp.n_layer), n - 1), 0)
  end
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
-- opts.tokenizer: a tokenizer file (GGUF, tokenizer.json, SentencePiece
-- tokenizer.model, llama2.c tokenizer.bin) or object to use instead of the
-- model file's own; its size must be the model's vocabulary.
-- opts.lora: LoRA adapters merged at load (slm.lora). An unknown option or
-- a value of the wrong type is an error (misuse); a file that cannot be
-- read returns nil, msg.
-- opts.train = true: every weight the definition reads becomes a float32
-- copy the model owns (model.params, model:weight(name)), which slm.train
-- updates in place; sessions of the model compute with the current values.
-- opts.train = "lora": the weights stay as the file has them (quantized
-- ones quantized, zero-copy views), frozen; the loader records how it made
-- each C block, so slm.train.trainer(model, {lora = ...}) trains adapters
-- over them (slm.train.lora).
local LOAD_OPTS = options.known { "tokenizer", "lora", "train" }

-- Tensors a definition reads that are constants of the computation, not
-- parameters (RoPE frequency factors): converted to f32 like the rest but
-- never trained.
local FROZEN = { ["rope_freqs.weight"] = true, ["rope_factors_long.weight"] = true,
                 ["rope_factors_short.weight"] = true }

--- train_source(src) -> a source whose tensors are writable float32 copies,
-- made once per name, in the order the definition reads them; src.params
-- (name -> tensor) and src.param_names hold the trainable ones.
local function train_source(src)
  local t = {}
  for k, v in pairs(src) do t[k] = v end
  local copies, params, names = {}, {}, {}
  t.tensor = function(name)
    local c = copies[name]
    if not c then
      local w = src.tensor(name)
      c = w:dtype() == "f32" and w:clone() or w:to("f32")
      copies[name] = c
      if not FROZEN[name] then
        params[name] = c
        names[#names + 1] = name
      end
    end
    return c
  end
  -- hparams.block records each C block it makes with the options it was
  -- made from (slm.train builds the training twin of the block from them)
  t.params, t.param_names, t.train, t.train_blocks = params, names, true, setmetatable({}, { __mode = "k" })
  return t
end

-- The shipped models (issue 16): the name "default" stands for the model
-- trained by `make default-model` (tools/default_model.lua: a byte-level BPE
-- of 512 tokens, chosen over characters by validation loss per character)
-- and "shakespeare-char" for the same recipe over characters (the teaching
-- model: one token a character). In a checkout they are under models/;
-- installed (`make install`), beside this file under slm/models/.
M.DEFAULT_NAME = "default"
M.SHIPPED = {
  default = "models/default/shakespeare-bpe512.gguf",
  ["shakespeare-char"] = "models/char/shakespeare-char.gguf",
}
M.DEFAULT_FILE = M.SHIPPED.default
local here = debug.getinfo(1, "S").source:match("^@(.-)model%.lua$")

--- shipped_path(name) -> path of a shipped model's file ("default" or
-- "shakespeare-char"; it may be missing: a checkout where it was cleaned
-- out), nil for another name
function M.shipped_path(name)
  local rel = M.SHIPPED[name]
  if not rel then return nil end
  if checkout then return (checkout == "" and "./" or checkout) .. rel end
  return (here == "" and "./" or here or "./") .. rel
end

--- default_path() -> path of the default model's file (it may be missing)
function M.default_path() return M.shipped_path(M.DEFAULT_NAME) end

--- resolve(path) -> a file path: "default" is the default model and
-- "shakespeare-char" the character-level one (a file of such a name is
-- "./default"), anything else is itself; nil, msg when the shipped model's
-- file is missing.
function M.resolve(path)
  if M.SHIPPED[path] == nil then return path end
  local p = path == M.DEFAULT_NAME and M.default_path() or M.shipped_path(path)
  local f = io.open(p, "rb")
  if not f then
    if path == M.DEFAULT_NAME then
      return nil, "default: the default model is missing (" .. p .. "; `make default-model` trains it)"
    end
    return nil, path .. ": the shipped model is missing (" .. p .. "; `bin/slm tools/default_model.lua "
                .. "--tokenizer chars --out models/char` trains it)"
  end
  f:close()
  return p
end

--- vocab_difference(a, b) -> nil when models a and b share a vocabulary
-- (size, and each token's text when both have tokenizers), else the first
-- difference: "size", n_a, n_b or "token", id, piece_a, piece_b (the
-- tokens compare as stored, they show as the bytes they decode to). Speculative
-- decoding (draft and target) and distillation (teacher and student) need
-- the same vocabulary.
function M.vocab_difference(a, b)
  local n = a.hp.n_vocab
  if b.hp.n_vocab ~= n then return "size", n, b.hp.n_vocab end
  local ta, tb = a.tokenizer, b.tokenizer
  if ta and tb and ta ~= tb then
    for id = 0, n - 1 do
      local x, y = ta:text(id), tb:text(id)
      if x ~= y then return "token", id, ta:piece(id, true), tb:piece(id, true) end
    end
  end
  return nil
end

--- load(path [, opts]) -> model | nil, msg. path "default": the default
-- model (M.resolve).
function M.load(path, opts)
  if type(path) ~= "string" then error("bad argument #1 to 'load' (string expected, got " .. type(path) .. ")", 2) end
  opts = options.check("load", opts, LOAD_OPTS)
  local t = type(opts.tokenizer)
  if t ~= "nil" and t ~= "string" and t ~= "userdata" and t ~= "table" then
    options.fail("load", "tokenizer", "a file name or a tokenizer", opts.tokenizer)
  end
  if opts.lora ~= nil and type(opts.lora) ~= "table" then
    options.fail("load", "lora", "a list of {path =, scale =}", opts.lora)
  end
  if not options.is_bool(opts.train) and opts.train ~= "lora" then
    options.fail("load", "train", 'a boolean or "lora"', opts.train)
  end
  local rpath, rerr = M.resolve(path)
  if not rpath then return nil, rerr end
  path = rpath
  local magic, err = read_magic(path)
  if not magic then return nil, err end
  local src
  if magic == "GGUF" then
    src, err = gguf_source(path)
  elseif magic == "fmgg" then  -- 0x67676d66 little-endian: rwkv.cpp
    src, err = rwkvcpp_source(path)
  else
    src, err = llama2c_source(path)
    if not src then   -- the reader's message without its own copy of the path
      if err:sub(1, #path + 2) == path .. ": " then err = err:sub(#path + 3) end
      return nil, path .. ": not a GGUF file or llama2.c checkpoint (" .. err .. ")"
    end
  end
  if not src then return nil, err end
  if opts.lora then  -- adapters merged into the weights as they are read (slm.lora)
    src, err = require("slm.lora").source(src, opts.lora)
    if not src then return nil, err end
  end
  return M.from_source(src, opts)
end

--- from_source(src, opts) -> model | nil, msg: a model from a weight
-- source (a file's, or slm.train.init's in memory); opts as slm.load's.
function M.from_source(src, opts)
  local path = src.path
  if opts.train == "lora" then   -- frozen base: the blocks' making is recorded, nothing copied
    local base, t, views, names = src, {}, {}, {}
    for k, v in pairs(src) do t[k] = v end
    t.tensor = function(name)   -- one view per name, so a weight is known by its tensor
      local w = views[name]
      if not w then w = base.tensor(name); views[name], names[w] = w, name end
      return w
    end
    t.train_blocks, t.frozen, t.weight_names = setmetatable({}, { __mode = "k" }), true, names
    src = t
  elseif opts.train then src = train_source(src) end
  local def = route_table()[src.arch]
  if not def then
    return nil, string.format("%s: unsupported architecture '%s' (supported: %s)", path, src.arch, supported())
  end
  local ok, res = pcall(function()
    -- a definition reads its own kind of file: hparams(src) for GGUF,
    -- hparams_<kind>(src) for the others (llama2c, rwkvcpp)
    local reader = src.kind == "gguf" and def.hparams or def["hparams_" .. src.kind]
    if not reader then error(path .. ": the " .. (def.name or src.arch) .. " definition cannot read " .. src.kind .. " files", 0) end
    local tsrc = M.tracked(src)
    local hp = reader(tsrc)
    if src.kind == "gguf" then check_blocks(src, hp) end
    local net = def.build(tsrc, hp)
    M.check_coverage(tsrc, def)
    return { hp = hp, net = net }
  end)
  if not ok then return nil, file_error(path, res) end
  local model = setmetatable({
    path = path, arch = src.arch, def = def, hp = res.net.hp or res.hp, net = res.net,
    source = src,
  }, Model)
  model.hp = res.hp
  if src.train then
    model.params, model.param_names, model.train_blocks = src.params, src.param_names, src.train_blocks
  elseif src.frozen then
    model.train_blocks, model.frozen, model.weight_names = src.train_blocks, true, src.weight_names
  end
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
  -- a tokenizer of another vocabulary would hand the model ids past its
  -- embedding, or read the model's ids as other tokens
  if opts.tokenizer ~= nil and #model.tokenizer ~= model.hp.n_vocab then
    return nil, string.format("%s: the tokenizer %shas %d tokens, the model's vocabulary %d", path,
                              type(opts.tokenizer) == "string" and (opts.tokenizer .. " ") or "",
                              #model.tokenizer, model.hp.n_vocab)
  end
  return model
end

--- Metadata value (GGUF) or nil.
function Model:meta(key) return self.source.meta(key) end

--- model:weight(name) -> the tensor of a weight by its GGUF name, as the
-- model computes with it now (a model being trained: its current f32
-- values, updated in place by each step); nil if the model has no such
-- weight. Models loaded for inference give the file's tensor.
function Model:weight(name)
  if type(name) ~= "string" then error("bad argument #1 to 'weight' (string expected, got " .. type(name) .. ")", 2) end
  if self.params then return self.params[name] end
  return self.source.has(name) and self.source.tensor(name) or nil
end

-- Experiments: activation hooks (slm.hooks), layer plans and LoRA (slm.experiment).
function Model:hook(name, fn) return require("slm.hooks").add(self, name, fn) end
function Model:variant(opts) return require("slm.experiment").variant(self, opts) end
function Model:apply_lora(path, scale) return require("slm.lora").apply(self, path, scale) end
--- model:lora_add(path_or_adapter [, scale = 1]) -> handle; model:lora_scale(handle, s);
-- model:lora_remove(handle): adapters applied unmerged at run time (slm.lora)
function Model:lora_add(what, scale) return require("slm.lora").add(self, what, scale) end
function Model:lora_scale(h, s) return require("slm.lora").set_scale(self, h, s) end
function Model:lora_remove(h) return require("slm.lora").remove(self, h) end

-- Embeddings -------------------------------------------------------------------

local EMBED_OPTS = options.known { "pooling", "normalize" }
local POOLINGS = { none = true, mean = true, cls = true, last = true }

--- model:embed(text_or_ids [, {pooling =, normalize = true}]) -> f32 tensor:
-- the embedding of a text (tokenized with the model's tokenizer, special
-- tokens as the vocabulary adds them: BERT's [CLS] ... [SEP], a decoder's
-- BOS) or of a list of token ids, i.e. the final hidden states pooled over
-- the tokens and divided by their Euclidean length. pooling is "mean" (all
-- tokens, specials included), "cls" (the first token), "last" or "none"
-- (an (n_tokens, dim) tensor, each row normalized on its own); by default
-- what an encoder's file says (bert.pooling_type), "last" for decoders.
-- normalize = false keeps the vectors as computed. Encoders (BERT) see the
-- whole input at once; decoders (llama family, gemma, lfm2, mamba, rwkv) run it
-- through a session of their own and give their output-normed rows, what
-- their head reads (no logits are computed). An input longer than the
-- model's context_length is an error. The result is a new tensor.
function Model:embed(input, opts)
  opts = options.check("embed", opts, EMBED_OPTS)
  local hp, def, net = self.hp, self.def, self.net
  local pooling = opts.pooling or net.pooling or "last"
  if not POOLINGS[pooling] then options.fail("embed", "pooling", '"none", "mean", "cls" or "last"', pooling) end
  if not options.is_bool(opts.normalize) then options.fail("embed", "normalize", "a boolean", opts.normalize) end
  local ids = input
  if type(input) == "string" then
    if not self.tokenizer then error("embed: " .. self.path .. " has no tokenizer (pass token ids)", 2) end
    ids = self.tokenizer:encode(input)
  elseif type(input) ~= "table" then
    error("bad argument #1 to 'embed' (string or table of token ids expected, got " .. type(input) .. ")", 2)
  end
  local n = #ids
  if n == 0 then error("embed: no tokens", 2) end
  local limit = hp.n_ctx_train
  if limit and n > limit then
    error(string.format("embed: %d tokens exceed the model's context length %d (%s.context_length)", n, limit,
                        hp.arch), 2)
  end
  for i = 1, n do
    local id = ids[i]
    if math.type(id) ~= "integer" or id < 0 or id >= hp.n_vocab then
      error(string.format("embed: token id %s at position %d out of range 0..%d", tostring(id), i, hp.n_vocab - 1), 2)
    end
  end
  local rows
  if def.encoder then
    rows = def.encode(net, ids)
  else
    -- a session that keeps every position's normed row instead of logits
    -- (slm.hooks head copies them into s.embd)
    local s = self:session { ctx = n, batch = math.min(n, 512) }
    s.embd = tensor.zeros({ n, hp.dim })
    s:eval(ids)
    rows = s.embd
  end
  local ops = core.ops
  local out
  if pooling == "none" then out = rows:clone()
  elseif pooling == "mean" then out = ops.mean_rows(rows)
  else out = rows:select(1, pooling == "cls" and 1 or n):clone() end
  if opts.normalize ~= false then ops.l2norm_(out) end
  return out
end

local Session = {}
Session.__index = Session

--- model:session{ctx = N, batch = B, swa_ring = true} -> session with its
-- own KV cache/state. ctx defaults to min(training context, 4096); batch
-- (rows per forward call during prompt processing) to 64. swa_ring = false
-- keeps every position in the sliding-window layers' caches (Gemma) instead
-- of a ring of the window's length: the same results, more memory.
-- kv_type = "f16" (default, the reference's default cache type), "f32",
-- "q8_0" or "q4_0": the KV cache's row type, computed as the reference's
-- cache types compute (blocks/kvcache.h); sess:kv_bytes_per_token() tells
-- what a position costs.
local SESSION_OPTS = options.known { "ctx", "batch", "swa_ring", "kv_type" }
local KV_TYPES = { f16 = true, f32 = true, q8_0 = true, q4_0 = true }

function Model:session(opts)
  if self.def.encoder then
    error(string.format("%s models are encoders (no KV cache, no logits): use model:embed(text)", self.hp.arch), 2)
  end
  opts = options.check("session", opts, SESSION_OPTS)
  local hp = self.hp
  local n_ctx = opts.ctx or math.min(hp.n_ctx_train or 2048, 4096)
  local n_batch = opts.batch or 64
  if not options.is_int(n_ctx, 1) then options.fail("session", "ctx", "a positive integer", n_ctx) end
  if not options.is_int(n_batch, 1) then options.fail("session", "batch", "a positive integer", n_batch) end
  if not options.is_bool(opts.swa_ring) then options.fail("session", "swa_ring", "a boolean", opts.swa_ring) end
  if opts.kv_type ~= nil and not KV_TYPES[opts.kv_type] then
    options.fail("session", "kv_type", '"f16", "f32", "q8_0" or "q4_0"', opts.kv_type)
  end
  n_batch = math.min(n_batch, n_ctx)
  local s = setmetatable({
    model = self, n_ctx = n_ctx, n_batch = n_batch, n_past = 0, tokens = {},
    swa_ring = opts.swa_ring ~= false, kv_type = opts.kv_type,
  }, Session)
  s.x = tensor.zeros({ n_batch, hp.dim })
  s.h = tensor.zeros({ n_batch, hp.dim })
  s.y = tensor.zeros({ n_batch, hp.dim })
  s.logits = tensor.zeros({ hp.n_vocab })
  -- the architecture's state (KV cache, recurrent state) and, for blocks
  -- that take one, the workspace they share
  s.state, s.work = self.def.state(self.net, { n_ctx = n_ctx, n_batch = n_batch, swa_ring = s.swa_ring,
                                                kv_type = s.kv_type })
  if s.kv_type then
    -- a definition whose state has no KV cache (or ignored the option) must not run without a word
    local got = s.state.kv_type and s.state:kv_type()
    if got ~= s.kv_type then
      error(string.format("session: kv_type %s: this %s model's state has %s", s.kv_type, hp.arch,
                          got and ("a " .. got .. " KV cache") or "no KV cache"), 2)
    end
  end
  if self.def.prepare then self.def.prepare(self.net, s) end   -- other per-session buffers
  return s
end

--- sess:kv_bytes_per_token() -> bytes one more position costs in the KV
-- cache (a key and a value row in every attention layer, of the session's
-- kv_type); 0 for a model without a KV cache (Mamba, RWKV: fixed state).
function Session:kv_bytes_per_token()
  local st = self.state
  return st.bytes_per_token and st:bytes_per_token() or 0
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

--- sess:expert_counts() -> {[layer] = {[expert] = n}}: how many tokens each
-- expert of each MoE layer was chosen for since the session was made (or
-- the counts reset); layers and experts numbered from 0 as in the tensor
-- names. An error for a model without experts.
function Session:expert_counts()
  if not self.moe_counts then error("expert_counts: this model has no experts", 2) end
  return self.moe_counts:get()
end

--- sess:reset_expert_counts(): counts start again from 0.
function Session:reset_expert_counts()
  if not self.moe_counts then error("reset_expert_counts: this model has no experts", 2) end
  self.moe_counts:reset()
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
  local s = self.model:session { ctx = self.n_ctx, batch = self.n_batch, swa_ring = self.swa_ring,
                                 kv_type = self.kv_type }
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
Session.rewind = require("slm.speculative").rewind
Session.generator = require("slm.stepper").generator
Session.chat = require("slm.chat").chat
Session.chat_session = require("slm.chat").session

M.Model = Model
M.Session = Session
M.Snapshot = Snapshot
return M
