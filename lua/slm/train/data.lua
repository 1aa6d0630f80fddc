--- slm.train.data: training data — text to token files, random batches, and a
-- character-level tokenizer.
--
--   local data = require "slm.train.data"
--   local tok = data.char_tokenizer({"input.txt"})     -- ids = ranks of the sorted chars
--   data.tokenize(tok, {"input.txt"}, "input.tok")     -- -> number of ids written
--   local toks = assert(data.open("input.tok"))        -- memory-mapped token file
--   local train = data.batches(toks, {ctx = 64, batch = 12, seed = 0, split = 0.9})
--   local batch = train:next()     -- i32 tensor (12, 65): 12 windows of ctx + 1 ids
--   for batch in train do ... end  -- the same stream, endless (break out of it)
--   local val = data.batches(toks, {ctx = 64, batch = 12, seed = 1, split = {0.9, "val"}})
--   local fixed = val:take(200)    -- a list of 200 batches (a fixed validation set)
--
-- Token files (csrc/train/tokens.h) hold ids as u16 (or u32 for vocabularies
-- over 65536) behind a checked 32-byte header; they are read through a
-- memory mapping, never loaded whole. toks:count(), toks:vocab(),
-- toks:read(pos, n) (positions 1-based), toks:fill(out, starts), toks:close().
--
-- Splits follow nanoGPT: the first floor(frac * count) ids are "train", the
-- rest "val"; a window of ctx + 1 ids starts uniformly at random where it fits
-- inside its split (nanoGPT's randint(len(split) - ctx)). A seed gives the same
-- batches on every machine (slm's xoshiro256** generator, csrc/sampler/rng.h);
-- they are not numpy's.
--
-- A tokenizer made here or loaded with load_tokenizer remembers the GGUF
-- metadata that rebuilds it: tokenizer_metadata(tok) (or the method
-- tok:gguf_metadata(), which this module adds to every slm tokenizer and
-- slm.train's Trainer:save calls) gives the `tokenizer.*` {key, value} pairs
-- to write into a model file, so that the trained model carries its
-- tokenizer.
local core = require "slm.core"
local gguf = require "slm.gguf"
local options = require "slm.options"
local tensor = require "slm.tensor"
local tokenizer = require "slm.tokenizer"

local C = core.train
local M = {}

-- tokenizer -> {metadata = {{key, value}, ...}, chars = {[char] = id} | nil}
-- (weak keys: the entry goes with the tokenizer)
local known = setmetatable({}, { __mode = "k" })

local function argerror(n, fname, msg)
  error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

local function file_list(fname, n, files)
  if type(files) == "string" then return { files } end
  if type(files) ~= "table" or #files == 0 then
    argerror(n, fname, "a file name or a non-empty list of file names expected")
  end
  for i, f in ipairs(files) do
    if type(f) ~= "string" then argerror(n, fname, string.format("files[%d] is not a string", i)) end
  end
  return files
end

-- The length of the longest prefix of s that ends on a UTF-8 character
-- boundary (at most 3 bytes are held back: an incomplete last character).
local function utf8_cut(s)
  local n = #s
  for back = 0, math.min(3, n - 1) do
    local b = s:byte(n - back)
    if b < 0x80 then return n - back end               -- ASCII: ends a character
    if b >= 0xC0 then                                  -- a lead byte at n - back
      local need = b >= 0xF0 and 4 or b >= 0xE0 and 3 or 2
      if back + 1 >= need then return n end            -- its character is complete
      return n - back - 1
    end
  end
  return n
end

-- Reads path in pieces of about `chunk` bytes, calling fn(piece, offset)
-- with offset the 0-based byte position of the piece. A piece ends right
-- after a newline that has a non-space on both sides ("x\nY"): there the
-- usual pre-tokenizer regexes (GPT-2's, llama-3's, qwen2's) end a pre-token
-- with or without what follows, so the ids do not change. (A newline after a
-- space or "\r" is no such place: GPT-2's \s+(?!\S) takes "  \n" whole at the
-- end of a text and as "  " + "\n" before a letter.) When a piece has none,
-- more is read, up to max(16 chunk, 16 MiB), before it is cut at the last
-- UTF-8 character boundary. Returns true, or nil, msg when the file cannot be
-- read.
local function each_piece(path, chunk, fn)
  local fh, err = io.open(path, "rb")
  if not fh then return nil, err end
  local limit = math.max(16 * chunk, 1 << 24)
  local carry, offset = "", 0
  while true do
    local block = fh:read(chunk)
    if not block then break end
    local s = carry .. block
    -- the last newline between two non-spaces
    local cut, pos = nil, 1
    while true do
      local a = s:find("[^%s]\n[^%s]", pos)
      if not a then break end
      cut, pos = a + 1, a + 1
    end
    if not cut and #s >= limit then
      cut = utf8_cut(s)
      if cut == 0 then cut = #s end   -- not UTF-8 at all: any cut
    end
    if cut then
      fn(s:sub(1, cut), offset)
      offset = offset + cut
      carry = s:sub(cut + 1)
    else
      carry = s
    end
  end
  fh:close()
  if #carry > 0 then fn(carry, offset) end
  return true
end

-- ---- character-level tokenizer -----------------------------------------------

-- GGUF "rwkv" vocabularies store each token escaped the way Python prints
-- bytes (csrc/tokenizer/trie.c unescapes \t \n \r \xNN and \\).
local function rwkv_escape(ch)
  return (ch:gsub("[%z\1-\31\\\127]", function(c)
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\t" then return "\\t" end
    if c == "\r" then return "\\r" end
    return string.format("\\x%02x", c:byte())
  end))
end

local function add_chars(set, s, where)
  local ok, bad = utf8.len(s)
  if not ok then
    error(string.format("char_tokenizer: %s: invalid UTF-8 at byte offset %d", where.name, where.offset + bad - 1), 0)
  end
  for _, c in utf8.codes(s) do set[c] = true end
end

--- char_tokenizer(files | text) -> tokenizer
-- A character-level tokenizer whose vocabulary is the distinct characters
-- (Unicode code points) of the given text files (a list of names) or of a
-- text (a string), sorted by code point: id = rank, as nanoGPT's
-- shakespeare_char builds it (`sorted(set(text))`). It is slm's greedy
-- longest-match (RWKV) tokenizer over single characters, which is exactly
-- character-level; encode adds no special tokens and drops a character that
-- is not in the vocabulary (data.tokenize refuses one instead). Invalid UTF-8
-- is an error naming the file and byte.
function M.char_tokenizer(src)
  local set = {}
  if type(src) == "string" then
    add_chars(set, src, { name = "text", offset = 0 })
  else
    local files = file_list("char_tokenizer", 1, src)
    for _, path in ipairs(files) do
      local ok, err = each_piece(path, 1 << 20, function(piece, offset)
        add_chars(set, piece, { name = path, offset = offset })
      end)
      if not ok then return nil, err end
    end
  end
  local cps = {}
  for c in pairs(set) do cps[#cps + 1] = c end
  if #cps == 0 then error("char_tokenizer: no characters (empty text)", 2) end
  table.sort(cps)
  local tokens, types, ids = {}, {}, {}
  for i, c in ipairs(cps) do
    local ch = utf8.char(c)
    tokens[i], types[i], ids[ch] = rwkv_escape(ch), 1, i - 1
  end
  local metadata = {
    { "tokenizer.ggml.model", "rwkv" },
    { "tokenizer.ggml.tokens", { type = "str", value = tokens } },
    { "tokenizer.ggml.token_type", { type = "i32", value = types } },
  }
  -- loaded back through a tokenizer-only GGUF: the file a model carries is
  -- the one this tokenizer comes from
  local tmp = os.tmpname()
  local ok, err = gguf.write(tmp, { metadata = metadata })
  local tok
  if ok then tok, err = tokenizer.load(tmp) end
  os.remove(tmp)
  if not tok then error("char_tokenizer: " .. tostring(err), 2) end
  known[tok] = { metadata = metadata, chars = ids }
  return tok
end

--- load_tokenizer(path) -> tokenizer | nil, msg
-- slm.tokenizer.load, remembering the file's `tokenizer.*` metadata when it
-- is a GGUF (so that tokenizer_metadata can carry it into a trained model).
function M.load_tokenizer(path)
  if type(path) ~= "string" then argerror(1, "load_tokenizer", "string expected, got " .. type(path)) end
  local tok, err = tokenizer.load(path)
  if not tok then return nil, err end
  local f = gguf.open(path)
  if f then
    local metadata = {}
    for _, k in ipairs(f.keys) do
      if k:sub(1, 10) == "tokenizer." then metadata[#metadata + 1] = { k, f:typed(k) } end
    end
    f:close()
    known[tok] = { metadata = metadata }
  end
  return tok
end

--- tokenizer_metadata(tok) -> list of {key, value} | nil, msg
-- The GGUF `tokenizer.*` pairs (slm.gguf.write's form) that rebuild tok, for
-- a tokenizer made by char_tokenizer or loaded by load_tokenizer from a GGUF.
function M.tokenizer_metadata(tok)
  local k = known[tok]
  if not k then
    return nil, "tokenizer_metadata: this tokenizer was not made by slm.train.data (char_tokenizer, "
      .. "or load_tokenizer of a GGUF file), so its GGUF metadata is unknown"
  end
  local copy = {}
  for i, kv in ipairs(k.metadata) do copy[i] = { kv[1], kv[2] } end
  return copy
end

-- tok:gguf_metadata() on every slm tokenizer: the pairs above, or an error
-- saying why there are none (slm.train's Trainer:save writes them into the
-- model file when the model has a tokenizer and no tokenizer keys of its own)
local methods = core.tokenizer_methods
if methods and methods.gguf_metadata == nil then
  function methods.gguf_metadata(tok)
    local md, err = M.tokenizer_metadata(tok)
    if not md then error(err, 2) end
    return md
  end
end

-- ---- tokenize --------------------------------------------------------------------

-- For the character tokenizer: the first character of piece that is not in
-- the vocabulary (encode drops it, which must not go unnoticed).
local function unknown_char(chars, piece)
  for p, c in utf8.codes(piece) do
    local ch = utf8.char(c)
    if not chars[ch] then return p, ch, c end
  end
end

local TOKENIZE = options.known { "chunk", "progress" }

--- tokenize(tok, files, out [, {chunk = 1 MiB, progress = fn(bytes_done, bytes_total)}]) -> count | nil, msg
-- Encodes text files (a name or a list, concatenated in order) with tok
-- (anything with tok:encode(text, {add_special = false}) and #tok) and writes
-- the ids to the token file out, streaming: the text is read in pieces of
-- about `chunk` bytes, each ending after a newline between two non-spaces
-- (or, in a text without one for 16 MiB, on a UTF-8 character boundary), so
-- that byte-level BPE with the usual pre-tokenizer regexes gives the ids of
-- the whole file. (A
-- SentencePiece tokenizer adds its dummy-prefix space to every piece.) No
-- special tokens are added. A missing or unwritable file gives nil, msg and
-- leaves out as it was.
function M.tokenize(tok, files, out, opts)
  if tok == nil or (type(tok) ~= "table" and type(tok) ~= "userdata") then
    argerror(1, "tokenize", "tokenizer expected, got " .. type(tok))
  end
  files = file_list("tokenize", 2, files)
  if type(out) ~= "string" then argerror(3, "tokenize", "output path expected, got " .. type(out)) end
  opts = options.check("tokenize", opts, TOKENIZE)
  if not options.is_int(opts.chunk, 1) then options.fail("tokenize", "chunk", "a positive integer", opts.chunk) end
  if opts.progress ~= nil and type(opts.progress) ~= "function" then
    options.fail("tokenize", "progress", "a function", opts.progress)
  end
  local chunk = opts.chunk or (1 << 20)
  local total = 0
  for _, path in ipairs(files) do
    local fh, err = io.open(path, "rb")
    if not fh then return nil, err end
    total = total + fh:seek("end")
    fh:close()
  end
  local chars = known[tok] and known[tok].chars
  local w, werr = C.tokens_writer(out, #tok)
  if not w then return nil, werr end
  local done = 0
  local ok, err = pcall(function()
    for _, path in ipairs(files) do
      local rok, rerr = each_piece(path, chunk, function(piece, offset)
        local ids = tok:encode(piece, { add_special = false })
        if chars then
          local n = utf8.len(piece)
          if not n then
            error(string.format("tokenize: %s: invalid UTF-8 at byte offset %d", path,
                                offset + select(2, utf8.len(piece)) - 1), 0)
          end
          if #ids ~= n then
            local p, ch, c = unknown_char(chars, piece)
            if not p then
              error(string.format("tokenize: %s: %d characters near byte offset %d gave %d ids", path, n, offset, #ids), 0)
            end
            local shown = (c >= 32 and c ~= 127) and string.format(" \"%s\"", ch) or ""
            error(string.format("tokenize: %s: character U+%04X%s at byte offset %d is not in the tokenizer's "
                                .. "vocabulary", path, c, shown, offset + p - 1), 0)
          end
        end
        w:write(ids)
        done = done + #piece
        if opts.progress then opts.progress(done, total) end
      end)
      if not rok then error(rerr, 0) end
    end
  end)
  if not ok then
    w:abort()
    error(err, 0)
  end
  return w:close()
end

--- open(path) -> token file | nil, msg (see the top of this file)
function M.open(path)
  if type(path) ~= "string" then argerror(1, "open", "string expected, got " .. type(path)) end
  return C.tokens_open(path)
end

-- ---- batches --------------------------------------------------------------------

local Batches = {}
Batches.__index = Batches

local BATCHES = options.known { "ctx", "batch", "seed", "split" }

--- batches(toks, {ctx =, batch =, seed = 0, split = 0.9 | {0.9, "train" | "val"}}) -> stream
-- stream:next() -> i32 tensor (batch, ctx + 1), starts (positions, 1-based);
-- `for b in stream do` gives the same batches, endlessly. stream.lo, stream.hi
-- (the split's positions, 1-based inclusive), stream.drawn (batches so far),
-- stream:take(n) -> list of n batches, stream:skip(n) (draws n batches
-- without keeping them: a resumed run continues the same stream),
-- stream:state() / stream:set_state(s) (the generator state and drawn).
function M.batches(toks, opts)
  if getmetatable(toks) == nil or type(toks) ~= "userdata" or not pcall(toks.count, toks) then
    argerror(1, "batches", "an open token file expected (slm.train.data.open)")
  end
  opts = options.check("batches", opts, BATCHES)
  if opts.ctx == nil or not options.is_int(opts.ctx, 1) then
    options.fail("batches", "ctx", "a positive integer", opts.ctx)
  end
  if opts.batch == nil or not options.is_int(opts.batch, 1) then
    options.fail("batches", "batch", "a positive integer", opts.batch)
  end
  if not options.is_int(opts.seed) then options.fail("batches", "seed", "an integer", opts.seed) end
  local frac, part = 0.9, "train"
  if type(opts.split) == "number" then
    frac = opts.split
  elseif type(opts.split) == "table" then
    frac, part = opts.split[1], opts.split[2]
  elseif opts.split ~= nil then
    options.fail("batches", "split", "a fraction or {fraction, \"train\" | \"val\"}", opts.split)
  end
  if type(frac) ~= "number" or not (frac > 0 and frac <= 1) then
    options.fail("batches", "split", "a fraction in (0, 1]", frac)
  end
  if part ~= "train" and part ~= "val" then
    options.fail("batches", "split[2]", "\"train\" or \"val\"", part)
  end
  local count = toks:count()
  local n_train = math.floor(frac * count)   -- nanoGPT: int(0.9 * len(data))
  local lo, hi = 1, n_train
  if part == "val" then lo, hi = n_train + 1, count end
  local need = opts.ctx + 1
  if hi - lo + 1 < need then
    error(string.format("batches: the %s split holds %d ids (of %d in %s), fewer than a window of ctx + 1 = %d",
                        part, math.max(0, hi - lo + 1), count, toks:path(), need), 2)
  end
  local seed = opts.seed or 0
  return setmetatable({ toks = toks, ctx = opts.ctx, batch = opts.batch, seed = seed, split = part,
                        lo = lo, hi = hi, drawn = 0, rng = C.rng_seed(seed) }, Batches)
end

function Batches:next()
  local out = tensor.zeros({ self.batch, self.ctx + 1 }, "i32")
  local _, starts = self.toks:sample(out, self.rng, self.lo, self.hi)
  self.drawn = self.drawn + 1
  return out, starts
end

-- `for b in stream do`: the generic for calls the stream itself
Batches.__call = function(self) return (self:next()) end

function Batches:take(n)
  if not options.is_int(n, 0) or n == nil then options.fail("take", "n", "a non-negative integer", n) end
  local list = {}
  for i = 1, n do list[i] = self:next() end
  return list
end

function Batches:skip(n)
  if not options.is_int(n, 0) or n == nil then options.fail("skip", "n", "a non-negative integer", n) end
  local out = tensor.zeros({ self.batch, self.ctx + 1 }, "i32")
  for _ = 1, n do self.toks:sample(out, self.rng, self.lo, self.hi) end
  self.drawn = self.drawn + n
  return self
end

function Batches:state()
  return { rng = { table.unpack(self.rng) }, drawn = self.drawn }
end

function Batches:set_state(s)
  if type(s) ~= "table" or type(s.rng) ~= "table" or #s.rng ~= 4 or math.type(s.drawn) ~= "integer" then
    error("set_state: a table {rng = {4 integers}, drawn = n} from state() expected", 2)
  end
  self.rng = { table.unpack(s.rng) }
  self.drawn = s.drawn
  return self
end

return M
