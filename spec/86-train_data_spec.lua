-- slm.train.data: the character tokenizer, token files (Lua side; the C
-- checks are tests/test_tokens.c), tokenize and batches.
local helpers = require "spec.helpers"
local slm = require "slm"
local data = require "slm.train.data"
local gguf = require "slm.gguf"
local testing = require "slm.testing"

local CORPUS = helpers.fixtures .. "/../corpora/tinyshakespeare.txt"
local function corpus()
  if helpers.exists(CORPUS) then return CORPUS end
  return nil, "corpus " .. CORPUS .. " not found (set SLM_FIXTURES)"
end

-- The reference: distinct UTF-8 characters sorted as byte strings (UTF-8
-- preserves code-point order), id = rank.
local function ranks(text)
  local set, list = {}, {}
  for ch in text:gmatch(utf8.charpattern) do
    if not set[ch] then set[ch] = true list[#list + 1] = ch end
  end
  table.sort(list)
  local rank = {}
  for i, ch in ipairs(list) do rank[ch] = i - 1 end
  return rank, list
end

local function ids_of(rank, text)
  local ids = {}
  for ch in text:gmatch(utf8.charpattern) do ids[#ids + 1] = rank[ch] end
  return ids
end

-- a token file of ids 0..n-1 (vocab n): a window's first id is its start
local function counting_file(n)
  local p = os.tmpname()
  local w = assert(slm.core.train.tokens_writer(p, n))
  local ids = {}
  for i = 1, n do ids[i] = i - 1 end
  w:write(ids)
  assert(w:close() == n)
  return p
end

describe("char_tokenizer", function()
  it("tinyshakespeare: nanoGPT's 65 characters, ids = ranks, round trip", function()
    local path, why = corpus()
    if not path then return pending(why) end
    local text = helpers.read(path)
    local tok = data.char_tokenizer({ path })
    assert.equal(65, #tok)
    -- the vocabulary nanoGPT's shakespeare_char/prepare.py prints
    local want = "\n !$&',-.3:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    local got = {}
    for id = 0, 64 do got[#got + 1] = tok:decode({ id }) end
    assert.equal(want, table.concat(got))
    local rank = ranks(text)
    local first = text:sub(1, 1000)   -- ASCII: 1000 characters
    local ids = tok:encode(first)
    assert.same(ids_of(rank, first), ids)
    assert.same({ 18, 47, 56, 57, 58, 1, 15, 47, 58, 47, 64, 43, 52, 10, 0 }, { table.unpack(ids, 1, 15) })
    assert.equal(first, tok:decode(ids))
    assert.is_nil(tok.bos)
    assert.same(ids, tok:encode(first, { add_special = true }))   -- no specials to add
  end)

  it("code points beyond ASCII, control characters and backslashes", function()
    local text = "héllo wörld 😀 \\ \t\r\n\1\127 ÿ Ā 中"
    local tok = data.char_tokenizer(text)
    local rank, list = ranks(text)
    assert.equal(#list, #tok)
    assert.same(ids_of(rank, text), tok:encode(text))
    assert.equal(text, tok:decode(tok:encode(text)))
    -- sorted by code point: "\1" first, "😀" (U+1F600) last
    assert.equal(0, tok:encode("\1")[1])
    assert.equal(#list - 1, tok:encode("😀")[1])
    -- a character outside the vocabulary is dropped by encode
    assert.same(tok:encode("hé"), tok:encode("hzé"))
  end)

  it("files: characters across pieces, invalid UTF-8 named, missing file", function()
    local p = helpers.tmpfile(string.rep("é", 700000) .. "x")   -- 1.4 MB: a piece ends inside an é
    local tok = data.char_tokenizer({ p })
    assert.equal(2, #tok)
    assert.same({ 1, 0 }, tok:encode("éx"))
    local bad = helpers.tmpfile("abc\xffdef")
    assert.equal("char_tokenizer: " .. bad .. ": invalid UTF-8 at byte offset 3",
                 helpers.errmsg(data.char_tokenizer, { bad }))
    local nope = os.tmpname() .. ".missing"
    local tok2, err = data.char_tokenizer({ nope })
    assert.is_nil(tok2)
    assert.matches("No such file", err)
    assert.equal("char_tokenizer: no characters (empty text)", helpers.errmsg(data.char_tokenizer, ""))
    assert.equal("bad argument #1 to 'char_tokenizer' (a file name or a non-empty list of file names expected)",
                 helpers.errmsg(data.char_tokenizer, {}))
  end)

  it("its GGUF metadata rebuilds it, alone and inside a model file", function()
    local text = "To be, or not to be: that is the question.\nÉtre ou ne pas être 😀\\\t"
    local tok = data.char_tokenizer(text)
    local md = assert(data.tokenizer_metadata(tok))
    assert.same(md, tok:gguf_metadata())
    assert.equal("tokenizer.ggml.model", md[1][1])
    assert.equal("rwkv", md[1][2])
    local p = os.tmpname()
    assert(gguf.write(p, { metadata = md }))
    local back = assert(slm.tokenizer.load(p))
    assert.equal(#tok, #back)
    assert.same(tok:encode(text), back:encode(text))
    -- a model whose GGUF carries the tokenizer: slm.load gives it back
    local vocab = #tok
    local raw = os.tmpname()
    testing.random_model { path = raw, vocab = vocab, dim = 32, n_layer = 1, n_head = 2, n_ff = 64, dtype = "f32" }
    local f = assert(gguf.open(raw))
    local meta, tensors = {}, {}
    for _, k in ipairs(f.keys) do
      if k ~= "general.alignment" then meta[#meta + 1] = { k, f:typed(k) } end
    end
    for _, kv in ipairs(md) do meta[#meta + 1] = kv end
    for _, info in ipairs(f.tensors) do tensors[#tensors + 1] = { name = info.name, tensor = f:tensor(info.name) } end
    local mp = os.tmpname()
    assert(gguf.write(mp, { metadata = meta, tensors = tensors }))
    f:close()
    local model = assert(slm.load(mp))
    assert.same(tok:encode(text), model.tokenizer:encode(text))
    assert.equal(text, model.tokenizer:decode(tok:encode(text)))
  end)

  it("load_tokenizer keeps a GGUF's tokenizer keys; others have none", function()
    local src = os.tmpname()
    testing.random_model { path = src, vocab = 300, dim = 32, n_layer = 1, n_head = 2, n_ff = 64 }
    local tok = assert(data.load_tokenizer(src))
    local md = assert(data.tokenizer_metadata(tok))
    local keys = {}
    for _, kv in ipairs(md) do keys[#keys + 1] = kv[1] end
    assert.same({ "tokenizer.ggml.model", "tokenizer.ggml.tokens", "tokenizer.ggml.scores", "tokenizer.ggml.token_type",
                  "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id" }, keys)
    local p = os.tmpname()
    assert(gguf.write(p, { metadata = md }))
    local back = assert(slm.tokenizer.load(p))
    assert.same(tok:encode("hello world"), back:encode("hello world"))
    local bytes = slm.tokenizer.bytes()
    local none, err = data.tokenizer_metadata(bytes)
    assert.is_nil(none)
    assert.matches("was not made by slm.train.data", err)
    assert.matches("was not made by slm.train.data", helpers.errmsg(bytes.gguf_metadata, bytes))
    local missing, merr = data.load_tokenizer(os.tmpname() .. ".none")
    assert.is_nil(missing)
    assert.matches("No such file", merr)
  end)
end)

describe("tokenize", function()
  it("tinyshakespeare with the char tokenizer: every id, the same file for any piece size", function()
    local path, why = corpus()
    if not path then return pending(why) end
    local text = helpers.read(path)
    local tok = data.char_tokenizer({ path })
    local out = os.tmpname()
    local calls, last = 0, nil
    local n = data.tokenize(tok, path, out, { progress = function(done, total)
      calls = calls + 1
      last = { done, total }
    end })
    assert.equal(#text, n)              -- ASCII: a character per byte
    assert.same({ #text, #text }, last)
    assert.is_true(calls >= 2)          -- 1 MiB pieces
    local toks = assert(data.open(out))
    assert.equal(n, toks:count())
    assert.equal(65, toks:vocab())
    assert.equal(2, toks:width())
    assert.equal(32 + 2 * n, helpers.size(out))
    local rank = ranks(text)
    assert.same(ids_of(rank, text:sub(1, 1000)), toks:read(1, 1000))
    assert.same(ids_of(rank, text:sub(-500)), toks:read(n - 499, 500))
    -- pieces of 777 bytes: the same bytes on disk
    local out2 = os.tmpname()
    assert.equal(n, data.tokenize(tok, { path }, out2, { chunk = 777 }))
    assert.equal(helpers.read(out), helpers.read(out2))
    toks:close()
  end)

  it("byte-level BPE: pieces cut after a newline give the ids of the whole text", function()
    -- lines that end in spaces, blank lines, CRLF and lines of punctuation:
    -- only "x\nY" places are cut points
    local lines = {}
    for i = 1, 300 do
      local l = string.format("Line %d: the quick brown fox jumps over the lazy dog %d times.", i, i * 7)
      if i % 3 == 0 then l = l .. "  " end
      if i % 5 == 0 then l = l .. "\n" end
      if i % 7 == 0 then l = l .. "\r" end
      if i % 11 == 0 then l = l .. "\n'' ... !!" end
      lines[i] = l
    end
    local text = table.concat(lines, "\n") .. "\n"
    local src = helpers.tmpfile(text)
    for _, pre in ipairs { "gpt-2", "llama-bpe", "qwen2" } do
      local tok = assert(slm.tokenizer.train { files = { src }, vocab_size = 400, pre = pre })
      local want = tok:encode(text, { add_special = false })
      for _, chunk in ipairs { 64, 100, 1000, 1 << 20 } do
        local out = os.tmpname()
        local n = data.tokenize(tok, { src, src }, out, { chunk = chunk })
        assert.equal(2 * #want, n)
        local toks = assert(data.open(out))
        assert.same(want, toks:read(1, #want), pre .. " chunk " .. chunk)
        assert.same(want, toks:read(#want + 1, #want), pre .. " chunk " .. chunk)
        toks:close()
      end
    end
  end)

  it("refuses what it cannot encode; missing input and unwritable output are nil, msg", function()
    local tok = data.char_tokenizer("abc\n")
    local src = helpers.tmpfile("abc\nabd\n")
    local out = os.tmpname()
    os.remove(out)
    assert.equal("tokenize: " .. src .. ": character U+0064 \"d\" at byte offset 6 is not in the tokenizer's vocabulary",
                 helpers.errmsg(data.tokenize, tok, src, out))
    assert.is_nil(helpers.size(out))
    assert.is_nil(helpers.size(out .. ".tmp"))
    local src2 = helpers.tmpfile("ab\n\xe9")
    assert.equal("tokenize: " .. src2 .. ": invalid UTF-8 at byte offset 3", helpers.errmsg(data.tokenize, tok, src2, out))
    local n, err = data.tokenize(tok, os.tmpname() .. ".none", out)
    assert.is_nil(n)
    assert.matches("No such file", err)
    n, err = data.tokenize(tok, src, "/nonexistent-dir/x.tok")
    assert.is_nil(n)
    assert.matches("x.tok.tmp: No such file or directory", err)
    assert.equal("tokenize: unknown option 'chunks' (known: chunk, progress)",
                 helpers.errmsg(data.tokenize, tok, src, out, { chunks = 1 }))
    assert.equal("tokenize: chunk must be a positive integer, got 0", helpers.errmsg(data.tokenize, tok, src, out, { chunk = 0 }))
    assert.equal("bad argument #2 to 'tokenize' (a file name or a non-empty list of file names expected)",
                 helpers.errmsg(data.tokenize, tok, {}, out))
    assert.equal("bad argument #3 to 'tokenize' (output path expected, got nil)", helpers.errmsg(data.tokenize, tok, src))
  end)
end)

describe("token files", function()
  it("open refuses a hostile header naming the file and field", function()
    local function file(width, vocab, count, body)
      return helpers.tmpfile(string.pack("<c8I4I4I4I4I8", "SLMTOKEN", 1, width, vocab, 0, count) .. body)
    end
    local p = file(2, 10, 1 << 62, "")
    local t, err = data.open(p)
    assert.is_nil(t)
    assert.equal(p .. ": token file field 'count' is 4611686018427387904 ids of 2 bytes, but the file holds 0 bytes "
                 .. "after the header", err)
    p = file(2, 70000, 0, "")
    t, err = data.open(p)
    assert.equal(p .. ": token file field 'vocab' is 70000, too large for 'width' 2", err)
    p = file(2, 3, 2, "\1\0\3\0")
    t = assert(data.open(p))
    local out = slm.tensor.zeros({ 1, 2 }, "i32")
    assert.equal(p .. ": id 3 at index 1 is not below the vocabulary size 3", helpers.errmsg(t.fill, t, out, { 1 }))
    assert.equal("bad argument #1 to 'open' (string expected, got nil)", helpers.errmsg(data.open))
  end)

  it("writer and reader in Lua: tensors and tables, u32 ids, closed objects", function()
    local p = os.tmpname()
    local w = assert(slm.core.train.tokens_writer(p, 100000))
    w:write(slm.tensor.new({ { 0, 65535 }, { 65536, 99999 } }, "i32"))
    w:write({ 7 })
    assert.matches("id 100000 %(at 1 of the chunk%) is outside the vocabulary 0..99999", helpers.errmsg(w.write, w, { 100000 }))
    assert.matches("ids%[2%] = %-1 is not a token id", helpers.errmsg(w.write, w, { 1, -1 }))
    assert.equal(5, w:count())
    assert.equal(5, w:close())
    assert.equal("attempt to use a closed token writer", helpers.errmsg(w.count, w))
    local t = assert(data.open(p))
    assert.equal(4, t:width())
    assert.same({ 0, 65535, 65536, 99999, 7 }, t:read(1, 5))
    assert.same({}, t:read(6, 0))
    assert.matches("position 7 out of range 1..6", helpers.errmsg(t.read, t, 7, 0))
    assert.matches("3 ids from position 4 pass the end %(5 ids%)", helpers.errmsg(t.read, t, 4, 3))
    local out = slm.tensor.zeros({ 2, 3 }, "i32")
    t:fill(out, { 1, 3 })
    assert.same({ { 0, 65535, 65536 }, { 65536, 99999, 7 } }, out:totable())
    assert.matches("starts%[2%] = 4: a window of 3 ids must start in 1..3", helpers.errmsg(t.fill, t, out, { 1, 4 }))
    assert.matches("1 starts for a batch of 2 rows", helpers.errmsg(t.fill, t, out, { 1 }))
    assert.matches("expected a writable contiguous i32 tensor %(B, T%+1%), got f32",
                   helpers.errmsg(t.fill, t, slm.tensor.zeros({ 2, 3 }), { 1, 1 }))
    assert.matches("expected a writable contiguous i32 tensor", helpers.errmsg(t.fill, t, slm.tensor.zeros({ 6 }, "i32"), { 1 }))
    t:close()
    t:close()
    assert.equal("attempt to use a closed token file", helpers.errmsg(t.count, t))
    -- a writer dropped without close leaves nothing behind
    local q = os.tmpname()
    os.remove(q)
    do
      local w2 <close> = assert(slm.core.train.tokens_writer(q, 10))
      w2:write({ 1, 2, 3 })
    end
    assert.is_nil(helpers.size(q))
    assert.is_nil(helpers.size(q .. ".tmp"))
  end)
end)

describe("batches", function()
  it("windows inside their split, nanoGPT's boundary, same seed same batches", function()
    local p = counting_file(1000)
    local toks = assert(data.open(p))
    local train = data.batches(toks, { ctx = 64, batch = 12, seed = 3 })
    assert.equal(1, train.lo)
    assert.equal(900, train.hi)             -- floor(0.9 * 1000)
    local val = data.batches(toks, { ctx = 64, batch = 12, seed = 3, split = { 0.9, "val" } })
    assert.equal(901, val.lo)
    assert.equal(1000, val.hi)
    local tmin, tmax, vmin, vmax = math.huge, -1, math.huge, -1
    for _ = 1, 200 do
      local b, starts = train:next()
      assert.same({ 12, 65 }, b:shape())
      assert.equal("i32", b:dtype())
      local rows = b:totable()
      for r = 1, 12 do
        assert.equal(starts[r] - 1, rows[r][1])     -- id = position - 1
        for j = 2, 65 do assert.equal(rows[r][1] + j - 1, rows[r][j]) end
        tmin, tmax = math.min(tmin, rows[r][1]), math.max(tmax, rows[r][65])
      end
      local vb = val:next():totable()
      for r = 1, 12 do vmin, vmax = math.min(vmin, vb[r][1]), math.max(vmax, vb[r][65]) end
    end
    -- 2400 draws over 836 train starts and 36 val starts reach both ends
    assert.equal(0, tmin)
    assert.equal(899, tmax)
    assert.equal(900, vmin)
    assert.equal(999, vmax)
    assert.equal(200, train.drawn)
    -- the same seed gives the same batches, another seed others
    local a = data.batches(toks, { ctx = 64, batch = 12, seed = 3 })
    local b = data.batches(toks, { ctx = 64, batch = 12, seed = 4 })
    local first = a:next():totable()
    assert.same(first, data.batches(toks, { ctx = 64, batch = 12, seed = 3 }):next():totable())
    assert.are_not.same(first, b:next():totable())
    -- skip(n) then next() = the (n+1)-th batch; state() / set_state()
    local ref = data.batches(toks, { ctx = 64, batch = 12, seed = 3 })
    local list = ref:take(6)
    local c = data.batches(toks, { ctx = 64, batch = 12, seed = 3 }):skip(5)
    assert.equal(5, c.drawn)
    assert.same(list[6]:totable(), c:next():totable())
    local s = c:state()
    local after = c:next():totable()
    c:next()
    c:set_state(s)
    assert.same(after, c:next():totable())
    -- the generic for gives the same stream
    local d, k = data.batches(toks, { ctx = 64, batch = 12, seed = 3 }), 0
    for bt in d do
      k = k + 1
      assert.same(list[k]:totable(), bt:totable())
      if k == 6 then break end
    end
    toks:close()
  end)

  it("checks its options", function()
    local toks = assert(data.open(counting_file(100)))
    local function e(o) return helpers.errmsg(data.batches, toks, o) end
    assert.equal("batches: unknown option 'block' (known: batch, ctx, seed, split)", e { ctx = 4, batch = 2, block = 3 })
    assert.equal("batches: ctx must be a positive integer, got nil", e { batch = 2 })
    assert.equal("batches: batch must be a positive integer, got 0", e { ctx = 4, batch = 0 })
    assert.equal("batches: seed must be an integer, got 1.5", e { ctx = 4, batch = 2, seed = 1.5 })
    assert.equal("batches: split must be a fraction in (0, 1], got 0", e { ctx = 4, batch = 2, split = 0 })
    assert.equal("batches: split must be a fraction in (0, 1], got 1.5", e { ctx = 4, batch = 2, split = 1.5 })
    assert.equal('batches: split[2] must be "train" or "val", got "test"', e { ctx = 4, batch = 2, split = { 0.9, "test" } })
    assert.equal("batches: the val split holds 10 ids (of 100 in " .. toks:path() .. "), fewer than a window of ctx + 1 = 11",
                 e { ctx = 10, batch = 2, split = { 0.9, "val" } })
    assert.equal("batches: the val split holds 0 ids (of 100 in " .. toks:path() .. "), fewer than a window of ctx + 1 = 2",
                 e { ctx = 1, batch = 2, split = { 1, "val" } })
    assert.equal("bad argument #1 to 'batches' (an open token file expected (slm.train.data.open))",
                 helpers.errmsg(data.batches, {}, { ctx = 4, batch = 2 }))
    local all = data.batches(toks, { ctx = 99, batch = 3, split = 1 })   -- one window fits: the whole file
    assert.same({ 0, 0, 0 }, { all:next():get(1, 1), all:next():get(2, 1), all:next():get(3, 1) })
    toks:close()
    assert.equal("bad argument #1 to 'batches' (an open token file expected (slm.train.data.open))",
                 helpers.errmsg(data.batches, toks, { ctx = 4, batch = 2 }))
  end)
end)
