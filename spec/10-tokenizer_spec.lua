-- slm.tokenizer: conformance with the reference ids (llama.cpp's vocab cases,
-- Hugging Face's tokenizer.json cases), round trips, streaming, misuse.
local tokenizer = require "slm.tokenizer"
local helpers = require "spec.helpers"

local read_cases = helpers.vocab_cases

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do if a[i] ~= b[i] then return false end end
  return true
end

local function conformance(tok, texts, expect, opts)
  local ok = 0
  for i, text in ipairs(texts) do
    if same(tok:encode(text, opts), expect[i]) then ok = ok + 1 end
  end
  return ok
end

describe("slm.tokenizer vocab fixtures", function()
  for _, name in ipairs { "gpt-2", "llama-spm", "phi-3", "falcon", "starcoder", "deepseek-coder" } do
    it(name .. " gives the reference ids for every case", function()
      local path, why = helpers.fixture("vocab/ggml-vocab-" .. name .. ".gguf")
      if not path then return pending(why) end
      local tok = assert(tokenizer.load(path))
      local texts, expect = read_cases(path .. ".inp", path .. ".out")
      assert.is_true(#texts > 0)
      local ok = conformance(tok, texts, expect, { add_special = false, parse_special = false })
      assert.are.equal(#texts, ok, name .. ": " .. ok .. "/" .. #texts .. " cases match")
    end)
  end
end)

describe("slm.tokenizer tokenizer.json fixtures", function()
  for _, name in ipairs { "llama3", "qwen3", "spm32k" } do
    it(name .. " gives Hugging Face's ids for every case", function()
      local dir = helpers.fixture("tokenizer-json/" .. name)
      if not dir then return pending("tokenizer-json fixtures not found") end
      local tok = assert(tokenizer.load(dir .. "/tokenizer.json"))
      local texts, expect = read_cases(dir .. "/cases.inp", dir .. "/cases.out")
      local ok = conformance(tok, texts, expect, { add_special = false, parse_special = true })
      assert.are.equal(#texts, ok, name .. ": " .. ok .. "/" .. #texts .. " cases match")
    end)
  end
end)

describe("slm.tokenizer GGUF vocabularies of the 2026 families", function()
  -- A tokenizer.json fixture written as the GGUF vocabulary the reference
  -- converter makes of it (tokens; added tokens control when special or
  -- shaped <|...|>, else user-defined; merges; tokenizer.ggml.pre): encoded
  -- through the GGUF pre-tokenizer table, the cases must give Hugging Face's
  -- ids. Qwen3's GGUF files declare "qwen2"; Llama 3.2's and SmolLM3's
  -- "llama-bpe" (their vocabulary is Llama 3's).
  local decoded = {}
  local function gguf_of(name, pre, extra)
    local dir = helpers.fixture("tokenizer-json/" .. name)
    if not dir then return nil end
    decoded[name] = decoded[name] or helpers.json_decode(helpers.read(dir .. "/tokenizer.json"))
    local j = decoded[name]
    local tokens, types, n = {}, {}, 0
    for text, id in pairs(j.model.vocab) do
      tokens[id + 1], types[id + 1] = text, 1
      n = math.max(n, id + 1)
    end
    for _, t in ipairs(j.added_tokens) do
      local looks = t.content:sub(1, 2) == "<|" and t.content:sub(-2) == "|>"
      tokens[t.id + 1], types[t.id + 1] = t.content, (t.special or looks) and 3 or 4
      n = math.max(n, t.id + 1)
    end
    for i = 1, n do
      if not tokens[i] then tokens[i], types[i] = "[PAD" .. (i - 1) .. "]", 5 end
    end
    local merges = {}
    for i, m in ipairs(j.model.merges) do merges[i] = type(m) == "table" and m[1] .. " " .. m[2] or m end
    local path = os.tmpname()
    local meta = {
      { "general.architecture", "llama" },
      { "tokenizer.ggml.model", "gpt2" }, { "tokenizer.ggml.pre", pre },
      { "tokenizer.ggml.tokens", { type = "str", value = tokens } },
      { "tokenizer.ggml.token_type", { type = "i32", value = types } },
      { "tokenizer.ggml.merges", { type = "str", value = merges } },
    }
    for _, kv in ipairs(extra or {}) do meta[#meta + 1] = kv end
    assert(require("slm.gguf").write(path, { metadata = meta, tensors = {} }))
    local tok = assert(tokenizer.load(path))
    os.remove(path)
    return tok, read_cases(dir .. "/cases.inp", dir .. "/cases.out")
  end

  for _, c in ipairs { { "qwen3", "qwen2", false }, { "llama3", "llama-bpe", true } } do
    local name, pre, bos = table.unpack(c)
    it(name .. "'s vocabulary with pre '" .. pre .. "' gives Hugging Face's ids", function()
      local tok, texts, expect = gguf_of(name, pre)
      if not tok then return pending("tokenizer-json fixtures not found") end
      local ok = conformance(tok, texts, expect, { add_special = false, parse_special = true })
      assert.are.equal(#texts, ok, name .. ": " .. ok .. "/" .. #texts .. " cases match")
      assert.are.equal(bos, tok.add_bos)   -- the reference adds BOS for llama-bpe
    end)
  end

  -- tokenizer.json: 151643 <|endoftext|>, 151645 <|im_end|>, 151659
  -- <|fim_prefix|>, 151662 <|fim_pad|>, 151663 <|repo_name|>, 151664 <|file_sep|>
  it("ends generation where the reference does: EOS/EOT and the FIM pad, repository and file-separator tokens", function()
    local tok = gguf_of("qwen3", "qwen2")
    if not tok then return pending("tokenizer-json fixtures not found") end
    for _, id in ipairs { 151643, 151645, 151662, 151663, 151664 } do assert.is_true(tok:is_eog(id), id) end
    assert.is_false(tok:is_eog(151659))
    -- an id the file names replaces the one found by text
    tok = gguf_of("qwen3", "qwen2", { { "tokenizer.ggml.fim_pad_token_id", { type = "u32", value = 151659 } } })
    assert.is_true(tok:is_eog(151659))
    assert.is_false(tok:is_eog(151662))
  end)

  it("the cases tell pre-tokenizers apart (llama3's vocabulary with smollm's regexes)", function()
    local tok, texts, expect = gguf_of("llama3", "smollm")
    if not tok then return pending("tokenizer-json fixtures not found") end
    assert.is_true(conformance(tok, texts, expect, { add_special = false, parse_special = true }) < #texts)
  end)
end)

describe("slm.tokenizer.pretokenize", function()
  -- gpt-4o (Phi-4-mini's o200k vocabulary): expected pieces computed by
  -- Python's `regex` module (2026.5.9, an engine independent of slm's PCRE2)
  -- running the tokenizer.json regex of Xenova/gpt-4o, which llama.cpp's
  -- convert_hf_to_gguf_update.py names gpt-4o. llama.cpp's rewrite of the
  -- regex gives "ПриветМир", "e", "\u{301}té" and "αΒγ" whole or split
  -- differently; these follow Hugging Face.
  local GPT4O = {
    { "Hello World",
      { "Hello", " World" } },
    { "HelloWorld camelCase XMLHttpRequest",
      { "Hello", "World", " camel", "Case", " XMLHttp", "Request" } },
    { "I'M here, you'RE there; they'll've",
      { "I'M", " here", ",", " you'RE", " there", ";", " they'll", "'ve" } },
    { "don't DON'T Don'T",
      { "don't", " DON'T", " Don'T" } },
    { "1234567 12.5 3...3",
      { "123", "456", "7", " ", "12", ".", "5", " ", "3", "...", "3" } },
    { "  leading and trailing  ",
      { " ", " leading", " and", " trailing", "  " } },
    { "tabs\tand\nnewlines\r\n\n end",
      { "tabs", "\tand", "\n", "newlines", "\r\n\n", " end" } },
    { "a/b/c path/to/file\n/",
      { "a", "/b", "/c", " path", "/to", "/file", "\n", "/" } },
    { "ПриветМир",
      { "Привет", "Мир" } },
    { "naïve café",
      { "naïve", " café" } },
    { "e\u{301}té",
      { "e\u{301}té" } },
    { "αΒγ",
      { "α", "Βγ" } },
    { "我想在apple工作1314151天～",
      { "我想在apple工作", "131", "415", "1", "天", "～" } },
    { "🦙🦙 emoji 😁!",
      { "🦙🦙", " emoji", " 😁!" } },
    { "  \n\n  x",
      { "  \n\n", " ", " x" } },
    { "$$$ ... !!! ???",
      { "$$$", " ...", " !!!", " ???" } },
    { "3 33 333 3333",
      { "3", " ", "33", " ", "333", " ", "333", "3" } },
    { "x  y   z",
      { "x", " ", " y", "  ", " z" } },
    { "end.\n\nNext",
      { "end", ".\n\n", "Next" } },
    { "ﬁne ǅemal",
      { "ﬁne", " ǅemal" } },
  }

  it("splits as the gpt-4o (o200k) regex does", function()
    for _, c in ipairs(GPT4O) do
      assert.are.same(c[2], tokenizer.pretokenize("gpt-4o", c[1]), c[1])
    end
  end)

  it("gives a tokenizer.ggml.pre name's split and rejects unknown names", function()
    -- the llama3 regex cuts digits in threes, qwen2's one by one
    assert.are.same({ "123", "4" }, tokenizer.pretokenize("llama-bpe", "1234"))
    assert.are.same({ "1", "2", "3", "4" }, tokenizer.pretokenize("qwen2", "1234"))
    assert.are.same({}, tokenizer.pretokenize("gpt-4o", ""))
    assert.has_error(function() tokenizer.pretokenize("nope", "x") end,
      "tokenizer: unknown pre-tokenizer 'nope'")
    assert.has_error(function() tokenizer.pretokenize("gpt-4o", 1) end,
      "bad argument #2 to 'pretokenize' (string expected, got number)")
  end)

  it("compiles every set it has a name for", function()
    local names = tokenizer.pretokenizers()
    assert.is_true(#names >= 50)
    for _, name in ipairs(names) do
      local ok, pieces = pcall(tokenizer.pretokenize, name, "Hello, w\u{f6}rld! 123 \u{4e2d}\u{6587}\n")
      assert(ok, name .. ": " .. tostring(pieces))
      assert.equal("Hello, w\u{f6}rld! 123 \u{4e2d}\u{6587}\n", table.concat(pieces), name)
    end
  end)

  it("loads a GGUF vocabulary that names each set", function()
    -- a byte-level vocabulary: token b is byte b under GPT-2's byte-to-char
    -- mapping (printable Latin-1 as itself, the other bytes from U+0100 on),
    -- no merges, so every split encodes "Hi ü!" to its bytes
    local tokens, extra = {}, 0
    for b = 0, 255 do
      local printable = (b >= 0x21 and b <= 0x7e) or (b >= 0xa1 and b <= 0xac) or b >= 0xae
      if printable then tokens[b + 1] = utf8.char(b) else tokens[b + 1] = utf8.char(256 + extra); extra = extra + 1 end
    end
    local gguf = require "slm.gguf"
    for _, name in ipairs(tokenizer.pretokenizers()) do
      local p = os.tmpname()
      assert(gguf.write(p, { tensors = {}, metadata = {
        { "tokenizer.ggml.model", "gpt2" }, { "tokenizer.ggml.pre", name },
        { "tokenizer.ggml.tokens", { type = "str", value = tokens } },
        { "tokenizer.ggml.merges", { type = "str", value = {} } },
      } }))
      local tok, msg = tokenizer.load(p)
      os.remove(p)
      assert(tok, name .. ": " .. tostring(msg))
      assert.same({ 72, 105, 32, 0xc3, 0xbc, 33 }, tok:encode("Hi \u{fc}!", { add_special = false }), name)
    end
  end)

  it("splits deepseek-llm text as the reference's regexes do", function()
    -- the reference's six regexes (src/llama-vocab.cpp) applied one after
    -- the other by Python's regex module; the letter class holds U+212A and
    -- U+1F7D, which a normalized copy of the class had turned into K and
    -- U+03CE (the set did not compile)
    local cases = {
      { "Hello w\u{f6}rld 123 ?!", { "Hello", " w", "\u{f6}", "rld", " ", "123", " ?!" } },
      { "a\u{e9}b", { "a", "\u{e9}", "b" } },
      { "\u{3a9}\u{3bc}\u{3ad}\u{3b3}\u{3b1} x\u{212a}\u{1f7d} y",
        { "\u{3a9}\u{3bc}\u{3ad}\u{3b3}\u{3b1}", " x", "\u{212a}\u{1f7d}", " y" } },
      { "\u{4e2d}\u{6587} \u{d14c}\u{c2a4}\u{d2b8} \u{ff15}",
        { "\u{4e2d}\u{6587}", " ", "\u{d14c}\u{c2a4}\u{d2b8}", " ", "\u{ff15}" } },
      { "line1\nline2  ", { "line", "1", "\n", "line", "2", "  " } },
      { " \u{2c6}x", { " \u{2c6}", "x" } },
      -- U+00D7 and U+02C6 are not letters of the class ("K-\u{212d}" would have held them)
      { "\u{e9}\u{d7}\u{e9}", { "\u{e9}", "\u{d7}", "\u{e9}" } },
      { "\u{e9}\u{2c6} \u{e9}", { "\u{e9}", "\u{2c6}", " \u{e9}" } },
    }
    for _, c in ipairs(cases) do assert.same(c[2], tokenizer.pretokenize("deepseek-llm", c[1])) end
  end)
end)

describe("slm.tokenizer API", function()
  local spm_path = helpers.fixture("vocab/ggml-vocab-llama-spm.gguf")
  local gpt2_path = helpers.fixture("vocab/ggml-vocab-gpt-2.gguf")

  it("exposes size, special ids and pieces", function()
    if not spm_path then return pending("vocab fixtures not found") end
    local tok = assert(tokenizer.load(spm_path))
    assert.are.equal(32000, #tok)
    assert.are.equal(1, tok.bos)
    assert.are.equal(2, tok.eos)
    assert.are.equal(0, tok.unk)
    assert.is_true(tok.add_bos)
    assert.are.equal("llama", tok.model)
    assert.are.equal("▁Hello", tok:text(15043))
    assert.are.equal(" Hello", tok:piece(15043))
    assert.are.equal(15043, tok:id("▁Hello"))
    assert.is_nil(tok:id("no such piece at all"))
    assert.are.equal("", tok:piece(1))
    assert.are.equal("<s>", tok:piece(1, true))
    assert.is_true(tok:is_eog(2))
    assert.matches("slm.Tokenizer%(llama", tostring(tok))
  end)

  it("adds BOS per the vocabulary and parses special text only when asked", function()
    if not spm_path then return pending("vocab fixtures not found") end
    local tok = assert(tokenizer.load(spm_path))
    assert.are.same({ 1, 15043, 3186 }, tok:encode("Hello world"))
    assert.are.same({ 15043, 3186 }, tok:encode("Hello world", { add_special = false }))
    local plain = tok:encode("<s>x", { add_special = false })
    local parsed = tok:encode("<s>x", { add_special = false, parse_special = true })
    assert.are.equal(1, parsed[1])
    assert.are_not.equal(1, plain[1])
  end)

  it("decodes, round-trips and streams UTF-8 safely", function()
    if not spm_path then return pending("vocab fixtures not found") end
    local tok = assert(tokenizer.load(spm_path))
    local text = " this is 🦙.cpp — нещо на Български, 我想在apple工作"
    local ids = tok:encode(text, { add_special = false })
    assert.are.equal(text, tok:decode(ids))
    -- the llama emoji is four byte tokens: the decoder holds them back
    local dec = tok:decoder()
    local parts, out = {}, {}
    for i, id in ipairs(ids) do
      parts[i] = dec:add(id)
      out[#out + 1] = parts[i]
      assert.is_truthy(utf8.len(parts[i]), "piece " .. i .. " is not complete UTF-8")
    end
    out[#out + 1] = dec:flush()
    assert.are.equal(text, table.concat(out))
    -- with BOS: the control token renders only with special = true
    local with_bos = tok:encode(text)
    assert.are.equal(text, tok:decode(with_bos))
    assert.are.equal("<s>" .. text, tok:decode(with_bos, { special = true }))
  end)

  it("encodes batches on several threads like single calls", function()
    if not gpt2_path then return pending("vocab fixtures not found") end
    local tok = assert(tokenizer.load(gpt2_path))
    local texts = {}
    for i = 1, 50 do texts[i] = string.rep("Hello world " .. i .. " ünïcödé 🦙 ", i % 7) end
    local got = tok:encode_batch(texts, { threads = 3, add_special = false })
    assert.are.equal(#texts, #got)
    for i, t in ipairs(texts) do
      assert.are.same(tok:encode(t, { add_special = false }), got[i])
    end
    assert.are.same({}, tok:encode_batch({}))
    assert.has_error(function() tok:encode_batch({ "a", 3 }) end,
      "bad argument #2 to 'encode_batch' (text 2 is not a string)")
  end)

  it("handles invalid UTF-8 deterministically through byte tokens", function()
    if not gpt2_path then return pending("vocab fixtures not found") end
    local tok = assert(tokenizer.load(gpt2_path))
    local bad = "ok \xff\xfe\xc3 end\x80"
    local a, b = tok:encode(bad), tok:encode(bad)
    assert.are.same(a, b)
    assert.are.equal(bad, tok:decode(a))
    -- the streaming decoder replaces what can never be UTF-8 by U+FFFD
    local dec, out = tok:decoder(), {}
    for _, id in ipairs(a) do out[#out + 1] = dec:add(id) end
    out[#out + 1] = dec:flush()
    local s = table.concat(out)
    assert.is_truthy(utf8.len(s))
    assert.matches("^ok .*end", s)
  end)

  it("raises on bad ids and misuse", function()
    if not gpt2_path then return pending("vocab fixtures not found") end
    local tok = assert(tokenizer.load(gpt2_path))
    assert.has_error(function() tok:decode({ 50257 }) end,
      "token id 50257 out of range (vocabulary of 50257)")
    assert.has_error(function() tok:decode({ -1 }) end,
      "token id -1 out of range (vocabulary of 50257)")
    assert.has_error(function() tok:piece(1e6) end)
    assert.has_error(function() tok:encode(nil) end)
    assert.has_error(function() tok:decode({ "x" }) end)
    assert.has_error(function() tok:decoder():add(50257) end)
    tok:free()
    assert.has_error(function() tok:encode("x") end, "attempt to use a freed tokenizer")
  end)

  it("returns nil and a message for missing or malformed files", function()
    local t, msg = tokenizer.load("/nonexistent/tokenizer.json")
    assert.is_nil(t)
    assert.matches("/nonexistent/tokenizer.json", msg, 1, true)
    local p = helpers.tmpfile('{"model": {"type": "BPE", "vocab": 3}}')
    t, msg = tokenizer.load(p)
    assert.is_nil(t)
    assert.matches("model.vocab is not an object", msg, 1, true)
    os.remove(p)
    p = helpers.tmpfile('{"model": ')
    t, msg = tokenizer.load(p)
    assert.is_nil(t)
    assert.matches("invalid JSON", msg, 1, true)
    os.remove(p)
    p = helpers.tmpfile("\1\0\0\0garbage")
    t, msg = tokenizer.load(p)
    assert.is_nil(t)
    assert.matches("not a llama2.c tokenizer", msg, 1, true)
    os.remove(p)
    p = helpers.tmpfile("GGUF\3\0\0\0")
    t, msg = tokenizer.load(p)
    assert.is_nil(t)
    assert.is_string(msg)
    os.remove(p)
    assert.has_error(function() tokenizer.load(42) end)
  end)

  it("loads llama2.c tokenizer.bin with the Llama 2 ids", function()
    local path = helpers.fixture("llama2c/tokenizer.bin")
    if not path or not spm_path then return pending("llama2c fixtures not found") end
    local tok = assert(tokenizer.load(path))
    local ref = assert(tokenizer.load(spm_path))
    local text = "Hello world, I've been 'told he's there 3333 🦙"
    assert.are.same(ref:encode(text), tok:encode(text))
    assert.are.equal(text, tok:decode(tok:encode(text)))
  end)

  it("has a 256-byte vocabulary", function()
    local tok = tokenizer.bytes()
    assert.are.equal(256, #tok)
    assert.are.same({ 34, 105, 110 }, tok:encode('"in'))
    assert.are.equal('"in\xff', tok:decode({ 34, 105, 110, 255 }))
  end)
end)

describe("slm.tokenizer.train", function()
  -- a small synthetic corpus (no third-party text in the repository)
  local function corpus()
    local words = { "the", "little", "cat", "sat", "on", "a", "warm", "mat", "and", "dreamed",
      "of", "fish", "🐟", "naïve", "über", "42", "1999", "it's", "they're" }
    local out, s = {}, 7
    for i = 1, 4000 do
      s = (s * 1103515245 + 12345) % 2147483648
      out[i] = words[s % #words + 1]
      if s % 11 == 0 then out[i] = out[i] .. ".\n" end
    end
    return table.concat(out, " ")
  end

  it("learns a byte-level BPE that round-trips, saved as tokenizer.json and GGUF", function()
    local text = corpus()
    local src = helpers.tmpfile(text)
    local json, gguf = os.tmpname(), os.tmpname()
    local tok = assert(tokenizer.train { files = { src }, vocab_size = 300, json = json, gguf = gguf })
    assert.are.equal(300, #tok)
    assert.are.equal(299, tok:id("<|endoftext|>"))
    local sample = "the warm cat dreamed of 🐟 naïve über 1999, they're sat"
    local ids = tok:encode(sample)
    assert.is_true(#ids < #sample)   -- merges were learned
    assert.are.equal(sample, tok:decode(ids))
    assert.are.equal(text, tok:decode(tok:encode(text)))
    local from_gguf = assert(tokenizer.load(gguf))
    assert.are.same(ids, from_gguf:encode(sample))
    assert.are.same({ 299 }, tok:encode("<|endoftext|>", { parse_special = true }))
    -- deterministic: the same input gives the same file
    local json2 = os.tmpname()
    assert(tokenizer.train { files = { src }, vocab_size = 300, json = json2 })
    assert.are.equal(helpers.read(json), helpers.read(json2))
    for _, p in ipairs { src, json, json2, gguf } do os.remove(p) end
  end)

  it("reports unreadable files and rejects bad options", function()
    local tok, msg = tokenizer.train { files = { "/nonexistent/corpus.txt" }, vocab_size = 300 }
    assert.is_nil(tok)
    assert.matches("/nonexistent/corpus.txt", msg, 1, true)
    assert.has_error(function() tokenizer.train { files = {}, vocab_size = 300 } end)
    assert.has_error(function() tokenizer.train { files = { "x" }, vocab_size = 10 } end)
    assert.has_error(function() tokenizer.train { files = { "x" }, vocab_size = 300, pre = "nope" } end)
    assert.has_error(function() tokenizer.train("x") end)
  end)
end)

describe("slm.tokenizer tokenizer.json components", function()
  -- a tiny hand-made vocabulary: every step's effect is visible in the ids
  local function write_json(t)
    local p = helpers.tmpfile(t)
    return p
  end
  local vocab = [[{"<unk>":0,"h":1,"e":2,"l":3,"o":4,"w":5,"r":6,"d":7,"he":8,"ll":9,"hell":10,
    "hello":11,"1":12,"2":13,"\u2581":14,"\u2581hello":15,"<0x21>":16,"fi":17,"x":18,"\u2581w":19}]]
  local merges_str = [=["h e","l l","he ll","hell o","\u2581 hello","\u2581 w"]=]
  local merges_arr = [=[["h","e"],["l","l"],["he","ll"],["hell","o"],["\u2581","hello"],["\u2581","w"]]=]

  local function tok_with(normalizer, pre, merges, extra)
    local json = string.format([[{"version":"1.0","added_tokens":[
        {"id":20,"content":"<eos>","special":true,"lstrip":false,"rstrip":false,"normalized":false,"single_word":false},
        {"id":21,"content":"[X]","special":false,"lstrip":false,"rstrip":false,"normalized":false,"single_word":false}],
      "normalizer":%s,"pre_tokenizer":%s,"decoder":null,
      "model":{"type":"BPE","unk_token":"<unk>","byte_fallback":true,"fuse_unk":true%s,
               "vocab":%s,"merges":[%s]}}]], normalizer, pre, extra or "", vocab, merges)
    local p = write_json(json)
    local tok, msg = tokenizer.load(p)
    os.remove(p)
    return assert(tok, msg)
  end

  it("applies Lowercase and NFKC, then Whitespace splitting, with both merge forms", function()
    for _, merges in ipairs { merges_str, merges_arr } do
      local tok = tok_with([[{"type":"Sequence","normalizers":[{"type":"NFKC"},{"type":"Lowercase"}]}]],
        [[{"type":"Whitespace"}]], merges)
      -- "ＨＥＬＬＯ" is full-width: NFKC gives HELLO, lowercase hello
      assert.are.same({ 11, 11, 5, 4, 6, 3, 7 }, tok:encode("HeLLo  ＨＥＬＬＯ world", { add_special = false }))
    end
  end)

  it("splits digits, falls back to bytes, fuses unknowns and splits added tokens", function()
    local tok = tok_with("null", [[{"type":"Sequence","pretokenizers":[
      {"type":"WhitespaceSplit"},{"type":"Digits","individual_digits":true}]}]], merges_str)
    -- "!" has a byte token, "é" has none: unknown, and two in a row fuse
    assert.are.same({ 11, 12, 13, 1, 16, 0 }, tok:encode("hello12 h! éé", { add_special = false }))
    -- non-special added tokens are always split out, special ones on request
    assert.are.same({ 21, 11 }, tok:encode("[X]hello", { add_special = false }))
    local plain = tok:encode("<eos>", { add_special = false })
    assert.are_not.same({ 20 }, plain)
    assert.are.same({ 20 }, tok:encode("<eos>", { add_special = false, parse_special = true }))
  end)

  it("runs Metaspace with a prepended U+2581 and splits before each one", function()
    local tok = tok_with("null",
      [[{"type":"Metaspace","replacement":"\u2581","prepend_scheme":"always","split":true}]], merges_str)
    assert.are.same({ 15, 19, 4, 6, 3, 7 }, tok:encode("hello world", { add_special = false }))
    assert.are.equal("hello world", tok:decode(tok:encode("hello world", { add_special = false })))
  end)

  it("reports unsupported components instead of ignoring them", function()
    local p = write_json([[{"model":{"type":"Unigram","vocab":[]}}]])
    local tok, msg = tokenizer.load(p)
    os.remove(p)
    assert.is_nil(tok)
    assert.matches("model type 'Unigram' not supported", msg, 1, true)
    p = write_json(string.format([[{"normalizer":{"type":"Precompiled"},
      "model":{"type":"BPE","vocab":%s,"merges":[]}}]], vocab))
    tok, msg = tokenizer.load(p)
    os.remove(p)
    assert.is_nil(tok)
    assert.matches("normalizer type 'Precompiled' not supported", msg, 1, true)
  end)
end)

describe("slm.tokenizer tokenizer.json bounds", function()
  -- a minimal file: vocab and merges as given, added tokens as a JSON list
  local function refused(vocab, merges, added)
    local p = helpers.tmpfile(string.format([[{"added_tokens":%s,
      "model":{"type":"BPE","vocab":%s,"merges":%s}}]], added or "[]", vocab, merges or "[]"))
    local tok, msg = tokenizer.load(p)
    assert.is_nil(tok)
    assert.equal(p .. ": ", msg:sub(1, #p + 2))
    return msg:sub(#p + 3)
  end

  it("refuses ids past the number of tokens the file names", function()
    -- sized by the id, this one used to ask for tables of 2^31 tokens
    assert.equal("model.vocab: the id of 'b' is not an integer in 0..1 (the file names 2 tokens)",
                 refused([[{"a":0,"b":2000000000}]]))
    assert.equal("model.vocab: the id of 'b' is not an integer in 0..1 (the file names 2 tokens)",
                 refused([[{"a":0,"b":-1}]]))
    assert.equal("added_tokens[1]: needs content and an id in 0..3 (the file names 4 tokens)",
                 refused([[{"a":0,"b":1}]], nil, [=[[{"id":2,"content":"X"},{"id":99,"content":"Y"}]]=]))
  end)

  it("refuses an id given twice", function()
    assert.equal("model.vocab: id 0 is given to both 'a' and 'b'", refused([[{"a":0,"b":0,"c":1}]]))
    assert.equal("added_tokens: id 3 is given to both 'X' and 'Y'",
                 refused([[{"a":0,"b":1,"c":2}]], nil, [=[[{"id":3,"content":"X"},{"id":3,"content":"Y"}]]=]))
    -- one piece under two ids
    assert.equal("tokenizer: duplicate token 'a' (ids 0 and 1)",
                 refused([[{"a":0}]], nil, [=[[{"id":1,"content":"a"}]]=]))
  end)

  it("refuses merges of tokens that are not in the vocabulary", function()
    assert.equal("model.merges[1] ('a' 'c'): 'c' is not in the vocabulary",
                 refused([[{"a":0,"b":1,"ab":2}]], [=[["a b","a c"]]=]))
    assert.equal("model.merges[0] ('b' 'a'): 'ba' is not in the vocabulary",
                 refused([[{"a":0,"b":1,"ab":2}]], [=[[["b","a"]]]=]))
  end)
end)

describe("slm.testing.vocab_metadata", function()
  it("is a vocabulary of exactly n tokens that slm loads: specials, byte fallback", function()
    local testing = require "slm.testing"
    local gguf = require "slm.gguf"
    local p = os.tmpname()
    assert(gguf.write(p, { metadata = testing.vocab_metadata(300), tensors = {} }))
    local tok = assert(tokenizer.load(p))
    os.remove(p)
    assert.are.equal(300, #tok)
    assert.are.equal(1, tok.bos)
    assert.are.equal(2, tok.eos)
    -- no piece spells the prepended U+2581 or "é": both fall back to their
    -- UTF-8 bytes, byte b being token 3 + b
    assert.are.same({ 1, 3 + 0xE2, 3 + 0x96, 3 + 0x81, 3 + 0xC3, 3 + 0xA9 }, tok:encode("é"))
    assert.has_error(function() testing.vocab_metadata(258) end)
  end)
end)
