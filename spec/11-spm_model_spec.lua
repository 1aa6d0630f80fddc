-- SentencePiece tokenizer.model files (a protobuf ModelProto) as tokenizers:
-- the Llama 2 model beside llama2.c's checkpoints gives the reference's ids
-- on llama.cpp's llama-spm cases, as does a model written here from the
-- llama-spm GGUF vocabulary; options slm's BPE tokenizer cannot compute and
-- malformed protobuf are refused by name.
local tokenizer = require "slm.tokenizer"
local helpers = require "spec.helpers"

-- protobuf writing: varints (negative int32 as 10-byte two's complement,
-- as protobuf does), fields by wire type
local function varint(n)
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7                 -- logical shift: -1 takes 10 bytes
    out[#out + 1] = string.char(n ~= 0 and (b | 0x80) or b)
  until n == 0
  return table.concat(out)
end
local function key(num, wire) return varint(num << 3 | wire) end
local function int(num, v) return key(num, 0) .. varint(v) end
local function bytes(num, s) return key(num, 2) .. varint(#s) .. s end
local function float(num, x) return key(num, 5) .. string.pack("<f", x) end

-- A ModelProto: pieces {text, score, type}, trainer and normalizer fields
-- as {field number = value} (value: integer, or string for bytes).
local function model_proto(pieces, trainer, normalizer)
  local out = {}
  for _, p in ipairs(pieces) do
    local m = bytes(1, p[1]) .. float(2, p[2] or 0)
    if p[3] then m = m .. int(3, p[3]) end
    out[#out + 1] = bytes(1, m)
  end
  local function msg(fields)
    local nums, parts = {}, {}
    for k in pairs(fields) do nums[#nums + 1] = k end
    table.sort(nums)
    for _, k in ipairs(nums) do
      local v = fields[k]
      parts[#parts + 1] = type(v) == "string" and bytes(k, v) or int(k, v)
    end
    return table.concat(parts)
  end
  out[#out + 1] = bytes(2, msg(trainer))
  out[#out + 1] = bytes(3, msg(normalizer))
  return table.concat(out)
end

-- What Llama 2's tokenizer.model says (model_type BPE, byte_fallback,
-- unk/bos/eos 0/1/2, identity normalizer keeping spaces).
local LLAMA_TRAINER = { [3] = 2, [35] = 1, [40] = 0, [41] = 1, [42] = 2, [43] = -1 }
local LLAMA_NORMALIZER = { [1] = "identity", [2] = "", [3] = 1, [4] = 0 }

-- The pieces of a GGUF vocabulary: {text, score, type}.
local function gguf_pieces(path)
  local f = assert(require("slm.gguf").open(path))
  local m = f.metadata
  local pieces = {}
  for i, text in ipairs(m["tokenizer.ggml.tokens"]) do
    pieces[i] = { text, m["tokenizer.ggml.scores"][i], m["tokenizer.ggml.token_type"][i] }
  end
  f:close()
  return pieces
end

local function conformance(tok, vocab)
  local texts, expect = helpers.vocab_cases(vocab .. ".inp", vocab .. ".out")
  assert.is_true(#texts > 0)
  for i, text in ipairs(texts) do
    assert.same(expect[i], tok:encode(text, { add_special = false, parse_special = false }), text)
  end
end

describe("SentencePiece tokenizer.model", function()
  local vocab = helpers.fixture("vocab/ggml-vocab-llama-spm.gguf")

  it("Llama 2's tokenizer.model gives the reference's ids on the llama-spm cases", function()
    local path, why = helpers.fixture("llama2c/tokenizer.model")
    if not path or not vocab then return pending(why or "vocab/ggml-vocab-llama-spm.gguf not found") end
    local tok = assert(tokenizer.load(path))
    assert.equal("sentencepiece", tok.model)
    assert.equal(32000, #tok)
    assert.same({ 0, 1, 2 }, { tok.unk, tok.bos, tok.eos })
    assert.is_true(tok.add_bos)
    conformance(tok, vocab)
    -- BOS first when special tokens are added, as llama2.c's encode does
    assert.same({ 1, 15043 }, tok:encode("Hello"))
  end)

  it("a model written from the llama-spm GGUF vocabulary gives the same ids", function()
    if not vocab then return pending("vocab/ggml-vocab-llama-spm.gguf not found") end
    local path = helpers.tmpfile(model_proto(gguf_pieces(vocab), LLAMA_TRAINER, LLAMA_NORMALIZER))
    local tok = assert(tokenizer.load(path))
    conformance(tok, vocab)
    -- add_dummy_prefix off: no U+2581 before the first word
    local plain = assert(tokenizer.load(helpers.tmpfile(model_proto(gguf_pieces(vocab), LLAMA_TRAINER,
      { [1] = "identity", [3] = 0, [4] = 0 }))))
    local hello = plain:encode("Hello", { add_special = false })
    assert.are_not.same(tok:encode("Hello", { add_special = false }), hello)
    assert.equal("Hello", plain:decode(hello))
  end)

  it("pairs with a llama2.c checkpoint of its vocabulary, and is refused by one of another", function()
    local path, why = helpers.fixture("llama2c/tokenizer.model")
    if not path then return pending(why) end
    -- a 32000-token llama2.c checkpoint: dim 2, hidden 2, 1 layer, 1 head,
    -- seq_len 4, zero weights (the tokenizer is what is checked)
    local dim, hidden, vocab_size, seq = 2, 2, 32000, 4
    local floats = vocab_size * dim + dim + dim * dim * 4 + dim + 3 * hidden * dim + dim + seq * (dim // 2) * 2
    local ckpt = helpers.tmpfile(string.pack("<i4i4i4i4i4i4i4", dim, hidden, 1, 1, 1, vocab_size, seq)
                                 .. string.rep("\0", 4 * floats))
    local model = assert(require("slm").load(ckpt, { tokenizer = path }))
    assert.same({ 1, 15043, 3186 }, model.tokenizer:encode("Hello world"))
    local stories = helpers.fixture("llama2c/stories260K.bin")
    if stories then
      local m, err = require("slm").load(stories, { tokenizer = path })
      assert.is_nil(m)
      assert.equal(stories .. ": the tokenizer " .. path .. " has 32000 tokens, the model's vocabulary 512", err)
    end
  end)
end)

describe("SentencePiece tokenizer.model refusals", function()
  -- a small BPE model: <unk> <s> </s>, the 256 byte pieces, two words
  local pieces = { { "<unk>", 0, 2 }, { "<s>", 0, 3 }, { "</s>", 0, 3 } }
  for b = 0, 255 do pieces[#pieces + 1] = { string.format("<0x%02X>", b), 0, 6 } end
  pieces[#pieces + 1] = { "\u{2581}a", -1 }
  pieces[#pieces + 1] = { "\u{2581}b", -2 }
  local function with(trainer, normalizer, list)
    local t, n = {}, {}
    for k, v in pairs(LLAMA_TRAINER) do t[k] = v end
    for k, v in pairs(LLAMA_NORMALIZER) do n[k] = v end
    for k, v in pairs(trainer or {}) do t[k] = v ~= false and v or nil end
    for k, v in pairs(normalizer or {}) do n[k] = v ~= false and v or nil end
    return model_proto(list or pieces, t, n)
  end
  local function refused(content)
    local path = helpers.tmpfile(content)
    local tok, msg = tokenizer.load(path)
    assert.is_nil(tok)
    assert.equal(path .. ": ", msg:sub(1, #path + 2))
    return msg:sub(#path + 3)
  end

  it("loads the small model itself", function()
    local tok = assert(tokenizer.load(helpers.tmpfile(with())))
    assert.equal(261, #tok)
    assert.same({ 1, 259, 260 }, tok:encode("a b"))
    -- no piece for "\u{2581}c" nor "\u{2581}": their bytes (byte b is piece 3 + b)
    assert.same({ 3 + 0xe2, 3 + 0x96, 3 + 0x81, 3 + 0x63 }, tok:encode("c", { add_special = false }))
  end)

  it("refuses the options its BPE tokenizer cannot compute", function()
    assert.equal("trainer_spec.model_type UNIGRAM is not supported (slm's SentencePiece tokenizer is BPE)",
                 refused(with { [3] = false }))   -- absent: UNIGRAM, the proto's default
    assert.equal("trainer_spec.model_type CHAR is not supported (slm's SentencePiece tokenizer is BPE)",
                 refused(with { [3] = 4 }))
    assert.equal("trainer_spec.byte_fallback is false: slm's SentencePiece tokenizer falls back to byte pieces",
                 refused(with { [35] = false }))
    assert.equal("trainer_spec.treat_whitespace_as_suffix is not supported", refused(with { [24] = 1 }))
    assert.equal("normalizer_spec 'nmt_nfkc' has a precompiled character map (a normalization slm does not apply)",
                 refused(with(nil, { [1] = "nmt_nfkc", [2] = "\1\2\3\4" })))
    assert.equal("normalizer_spec.remove_extra_whitespaces is true: slm's SentencePiece tokenizer keeps every space",
                 refused(with(nil, { [4] = false })))   -- absent: true
  end)

  it("refuses special ids outside the pieces", function()
    assert.equal("trainer_spec.bos_id is 999 (the model has pieces 0..260)", refused(with { [41] = 999 }))
    assert.equal("trainer_spec.unk_id is -1 (the model has pieces 0..260)", refused(with { [40] = -1 }))
    assert.equal("trainer_spec.eos_id is -7 (the model has pieces 0..260)", refused(with { [42] = -7 }))
    -- -1 disables BOS
    local tok = assert(tokenizer.load(helpers.tmpfile(with { [41] = -1 })))
    assert.is_nil(tok.bos)
    assert.same({ 259 }, tok:encode("a"))
  end)

  it("refuses bad pieces", function()
    local list = { table.unpack(pieces) }
    list[262] = { "\u{2581}c", -3, 9 }
    assert.equal("piece 261 ('\u{2581}c') has type 9 (1..6 are defined)", refused(with(nil, nil, list)))
    list[262] = { "", -3 }
    assert.equal("piece 261 is empty", refused(with(nil, nil, list)))
    list[262] = { "\u{2581}a", -3 }
    assert.equal("tokenizer: duplicate token '\u{2581}a' (ids 259 and 261)", refused(with(nil, nil, list)))
  end)

  it("refuses malformed protobuf without reading past it", function()
    local good = with()
    local bad = "not a SentencePiece model (malformed protobuf in the model)"
    -- every truncation inside the pieces (the first piece intact, so the
    -- file is still recognized as a model)
    for cut = 20, #good - 1, 97 do
      local msg = refused(good:sub(1, cut))
      assert.is_truthy(msg == bad or msg:match("^not a SentencePiece model") or msg:match("^trainer_spec")
                       or msg:match("^normalizer_spec"), msg)
    end
    -- a length of 2^40 after the first piece; a group (wire type 3); a
    -- varint of 11 bytes
    local first = bytes(1, bytes(1, "<unk>") .. float(2, 0) .. int(3, 2))
    assert.equal(bad, refused(first .. key(1, 2) .. varint(1 << 40) .. "xx"))
    assert.equal(bad, refused(first .. key(7, 3) .. "x"))
    assert.equal(bad, refused(first .. key(7, 0) .. string.rep("\xff", 10) .. "\1"))
    assert.equal("not a SentencePiece model (malformed protobuf in trainer_spec)",
                 refused(first .. bytes(2, key(3, 0))))
  end)
end)
