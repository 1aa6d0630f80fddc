-- Seed corpora of the fuzz targets: lua5.4 tests/fuzz/seeds.lua OUTDIR
-- (with build/ on LUA_CPATH and lua/ on LUA_PATH; run.sh does this).
--
-- Writes OUTDIR/<target>/<name> for every target. Seeds come from the
-- fixtures ($SLM_FIXTURES, default ../shared/fixtures) made small - model
-- files keep their metadata and tensor table with each tensor cut to one
-- row of one block and arrays cut to 600 elements; tokenizer.json files
-- keep their normalizers and pre-tokenizers with the first 400 tokens and
-- the merges among them - so that libFuzzer mutates headers rather than
-- weights. Targets without fixtures get built-in seeds (safetensors,
-- regex and chat always do; the others say so).
local slm = require "slm"

local out = assert(arg[1], "usage: seeds.lua OUTDIR")
local fx = os.getenv("SLM_FIXTURES")
if not fx or fx == "" then fx = "../shared/fixtures" end
if not io.open(fx .. "/README.md", "rb") and not io.open(fx .. "/vocab/ggml-vocab-gpt-2.gguf.inp", "rb") then
  io.stderr:write("seeds: no fixtures at " .. fx .. " (set SLM_FIXTURES): built-in seeds only\n")
  fx = nil
end

local counts = {}
local function seed(target, name, bytes)
  os.execute("mkdir -p '" .. out .. "/" .. target .. "'")
  local f = assert(io.open(out .. "/" .. target .. "/" .. name:gsub("[^%w%.%-_]", "_"), "wb"))
  f:write(bytes)
  f:close()
  counts[target] = (counts[target] or 0) + 1
end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function ls(dir, pattern)
  local list = {}
  local p = io.popen("ls -1 '" .. dir .. "' 2>/dev/null")
  for name in p:lines() do
    if name:match(pattern) then list[#list + 1] = name end
  end
  p:close()
  return list
end

local tmp = os.tmpname()

-- GGUF ------------------------------------------------------------------------

local CAP = 600

-- a zero tensor of dtype with ndim dims of 1 and the smallest last dim the
-- dtype allows
local function tiny(dtype, ndim)
  for _, n in ipairs { 4, 32, 256 } do
    local shape = {}
    for d = 1, ndim - 1 do shape[d] = 1 end
    shape[ndim] = n
    local ok, t = pcall(slm.tensor.zeros, shape, dtype)
    if ok then return t end
  end
end

local function shrink_gguf(path)
  local f = slm.gguf.open(path)
  if not f then return nil end
  local md = {}
  for _, k in ipairs(f.keys) do
    local t, et = f:type(k)
    if t == "arr" then
      local n, v = math.min(f:arr_len(k), CAP), {}
      for i = 1, n do v[i] = f:arr_get(k, i) end
      md[#md + 1] = { k, { type = et, value = v } }
    elseif k ~= "general.alignment" then
      md[#md + 1] = { k, f:typed(k) }
    end
  end
  local tensors = {}
  for _, info in ipairs(f.tensors) do
    local t = tiny(info.dtype, #info.shape)
    if t then tensors[#tensors + 1] = { name = info.name, tensor = t } end
  end
  local alignment = f.alignment
  f:close()
  local ok, err = slm.gguf.write(tmp, { metadata = md, tensors = tensors, alignment = alignment })
  if not ok then
    io.stderr:write("seeds: " .. path .. ": " .. tostring(err) .. "\n")
    return nil
  end
  return slurp(tmp)
end

local function gguf_seeds()
  if fx then
    for _, dir in ipairs { "gguf", "gguf2", "gguf3", "vocab", "train" } do
      for _, name in ipairs(ls(fx .. "/" .. dir, "%.gguf$")) do
        local s = shrink_gguf(fx .. "/" .. dir .. "/" .. name)
        if s then seed("gguf", dir .. "-" .. name, s) end
      end
    end
  end
  -- built-in: every value type, string arrays, a small alignment, v2
  assert(slm.gguf.write(tmp, { alignment = 8, metadata = {
    { "general.architecture", "llama" }, { "a.u8", { type = "u8", value = 255 } },
    { "a.i8", { type = "i8", value = -1 } }, { "a.u16", { type = "u16", value = 65535 } },
    { "a.i16", { type = "i16", value = -2 } }, { "a.u32", 7 }, { "a.i32", -7 },
    { "a.u64", { type = "u64", value = 5 } }, { "a.i64", { type = "i64", value = -5 } },
    { "a.f32", 0.5 }, { "a.f64", { type = "f64", value = 0.25 } }, { "a.bool", true },
    { "a.str", "text" }, { "a.arr", { "x", "yz", "" } }, { "a.bools", { true, false } },
    { "a.ints", { 1, 2, 3 } }, { "a.floats", { 1.5, 2.5 } },
  }, tensors = {
    { name = "f32", tensor = slm.tensor.zeros({ 2, 3 }, "f32") },
    { name = "f16", tensor = slm.tensor.zeros({ 3 }, "f16") },
    { name = "q8_0", tensor = slm.tensor.zeros({ 1, 32 }, "q8_0") },
  } }))
  local s = slurp(tmp)
  seed("gguf", "builtin-types", s)
  seed("gguf", "builtin-v2", s:sub(1, 4) .. string.pack("<I4", 2) .. s:sub(9))
  assert(slm.gguf.write(tmp, { metadata = {}, tensors = {} }))
  seed("gguf", "builtin-empty", slurp(tmp))
  -- a vocabulary of each tokenizer kind
  local bytes = {}
  for b = 0, 255 do bytes[#bytes + 1] = string.format("<0x%02X>", b) end
  local spm = { "<unk>", "<s>", "</s>", table.unpack(bytes) }
  for _, p in ipairs { "\u{2581}", "\u{2581}t", "he", "\u{2581}the", "ll", "lo" } do spm[#spm + 1] = p end
  local vocabs = {
    llama = { { "tokenizer.ggml.model", "llama" }, { "tokenizer.ggml.tokens", spm } },
    gpt2 = { { "tokenizer.ggml.model", "gpt2" }, { "tokenizer.ggml.pre", "qwen2" },
             { "tokenizer.ggml.tokens", { "a", "b", "ab", "\u{120}", "\u{120}a", "<|endoftext|>" } },
             { "tokenizer.ggml.merges", { "a b", "\u{120} a" } },
             { "tokenizer.ggml.token_type", { type = "i32", value = { 1, 1, 1, 1, 1, 3 } } } },
    rwkv = { { "tokenizer.ggml.model", "rwkv" }, { "tokenizer.ggml.tokens", { "\\x00", "a", "ab", "\\n", "\\xff" } } },
    bert = { { "tokenizer.ggml.model", "bert" }, { "tokenizer.ggml.normalizer.lowercase", true },
             { "tokenizer.ggml.tokens", { "[PAD]", "[UNK]", "[CLS]", "[SEP]", "\u{2581}hello", "s" } },
             { "tokenizer.ggml.unknown_token_id", 1 }, { "tokenizer.ggml.cls_token_id", 2 },
             { "tokenizer.ggml.seperator_token_id", 3 } },
  }
  for name, md in pairs(vocabs) do
    assert(slm.gguf.write(tmp, { metadata = md }))
    seed("gguf", "builtin-vocab-" .. name, slurp(tmp))
  end
end

-- safetensors (built-in: there are no fixtures) ------------------------------

local function safetensors(header, data)
  return string.pack("<I8", #header) .. header .. data
end

local function safetensors_seeds()
  local f32 = string.pack("<ffffff", 1, 2, 3, 4, 5, 6)
  seed("safetensors", "f32", safetensors(
    '{"w":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]}}', f32))
  seed("safetensors", "meta", safetensors(
    '{"__metadata__":{"format":"pt","k":"v"},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},'
      .. '"b":{"dtype":"BF16","shape":[1,2],"data_offsets":[4,8]}}', string.rep("\0\60", 4)))
  seed("safetensors", "ints", safetensors(
    '{"i8":{"dtype":"I8","shape":[3],"data_offsets":[0,3]},"i16":{"dtype":"I16","shape":[1],"data_offsets":[3,5]},'
      .. '"i32":{"dtype":"I32","shape":[2],"data_offsets":[5,13]}}', string.rep("\1", 13)))
  seed("safetensors", "unsupported", safetensors(
    '{"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]},"b":{"dtype":"BOOL","shape":[2],"data_offsets":[8,10]},'
      .. '"u":{"dtype":"U8","shape":[0],"data_offsets":[10,10]}}', string.rep("\0", 10)))
  seed("safetensors", "scalar", safetensors('{"s":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}', f32:sub(1, 4)))
  seed("safetensors", "empty", safetensors("{}", ""))
  seed("safetensors", "padded", safetensors(
    '{"x":{"dtype":"F32","shape":[1,1,1,2],"data_offsets":[0,8]}}        ', f32:sub(1, 8)))
end

-- rwkv.cpp --------------------------------------------------------------------

local BLOCK = { [0] = 1, [1] = 1, [2] = 32, [3] = 32, [7] = 32, [8] = 32, [9] = 32 }
local BYTES = { [0] = 4, [1] = 2, [2] = 18, [3] = 20, [7] = 22, [8] = 24, [9] = 34 }

-- one parameter of 32 elements (one block) along its innermost dim, 1 along
-- the others
local function rwkv_param(key, nd, dt)
  local p = { string.pack("<i4i4i4i4", nd, #key, dt, 32) }
  for _ = 2, nd do p[#p + 1] = string.pack("<i4", 1) end
  return table.concat(p) .. key .. string.rep("\1", 32 // BLOCK[dt] * BYTES[dt])
end

-- The file with every parameter cut to one block and only blocks.0 kept; the
-- header then says n_vocab 1, n_embed 32, n_layer 1, which the reader
-- checks against emb.weight, head.weight and the blocks.
local function shrink_rwkvcpp(s)
  local version, _, _, _, data_type = string.unpack("<i4i4i4i4i4", s, 5)
  local parts = { string.pack("<i4i4i4i4i4i4", 0x67676d66, version, 1, 32, 1, data_type) }
  local pos = 25
  while pos <= #s do
    local nd, klen, dt = string.unpack("<i4i4i4", s, pos)
    if not BLOCK[dt] or nd < 1 or nd > 3 then return nil end
    local n = 1
    for i = 1, nd do n = n * string.unpack("<i4", s, pos + 12 + 4 * (i - 1)) end
    local key = s:sub(pos + 12 + 4 * nd, pos + 12 + 4 * nd + klen - 1)
    pos = pos + 12 + 4 * nd + klen + n // BLOCK[dt] * BYTES[dt]
    local b = key:match("^blocks%.(%d+)%.")
    if not b or b == "0" then parts[#parts + 1] = rwkv_param(key, nd, dt) end
  end
  return table.concat(parts)
end

local function rwkvcpp_seeds()
  -- built-in: emb, head and one block parameter of each data type
  local params = { string.pack("<i4i4i4i4i4i4", 0x67676d66, 101, 1, 32, 1, 1),
                   rwkv_param("emb.weight", 2, 0), rwkv_param("head.weight", 2, 1) }
  for i, dt in ipairs { 0, 1, 2, 3, 7, 8, 9 } do params[#params + 1] = rwkv_param("blocks.0.p" .. i, 2, dt) end
  seed("rwkvcpp", "builtin", table.concat(params))
  if not fx then return end
  for _, name in ipairs(ls(fx .. "/rwkv", "%.bin$")) do
    local s = slurp(fx .. "/rwkv/" .. name)
    if s and #s > 24 and string.unpack("<i4", s) == 0x67676d66 then
      local small = shrink_rwkvcpp(s)
      if small then seed("rwkvcpp", name, small) end
    end
  end
end

-- llama2.c checkpoints and tokenizer.bin --------------------------------------

local function llama2c_seeds()
  -- checkpoints of tiny configs: dim, hidden, layers, heads, kv heads, vocab, seq
  for i, c in ipairs { { 8, 16, 1, 2, 1, 16, 4 }, { 8, 12, 2, 4, 2, -10, 3 }, { 4, 4, 1, 1, 1, 3, 1 } } do
    local dim, hidden, layers, heads, kv, vocab, seq = table.unpack(c)
    local head, v = dim // heads, math.abs(vocab)
    local floats = v * dim + layers * (2 * dim + 2 * dim * dim + 2 * dim * head * kv + 3 * dim * hidden)
      + dim + seq * head + (vocab < 0 and v * dim or 0)
    seed("llama2c", "checkpoint-" .. i, string.pack("<i4i4i4i4i4i4i4", table.unpack(c)) .. string.rep("\0\0\128\63", floats))
  end
  if fx then
    local s = slurp(fx .. "/llama2c/stories260K.bin")
    if s then seed("llama2c", "stories260K-header", s:sub(1, 28)) end
    -- tokenizer.bin: int32 max_len, then (f32 score, i32 len, bytes) per token
    s = slurp(fx .. "/llama2c/tokenizer.bin")
    if s then
      local pos, n = 5, 0
      while pos <= #s and n < 300 do
        local _, len = string.unpack("<fi4", s, pos)
        pos = pos + 8 + len
        n = n + 1
      end
      seed("llama2c", "tokenizer-300", s:sub(1, pos - 1))
    end
  end
  local tok = { string.pack("<i4", 8) }
  for i, t in ipairs { "<unk>", "<s>", "</s>", "<0x0A>", "\u{2581}", "a", "\u{2581}a", "b" } do
    tok[#tok + 1] = string.pack("<fi4", -i, #t) .. t
  end
  seed("llama2c", "tokenizer-builtin", table.concat(tok))
end

-- tokenizer.json ---------------------------------------------------------------

local ok_json, json = pcall(require, "dkjson")
if ok_json then pcall(json.use_lpeg) end

local function shrink_json(s)
  local doc = json.decode(s)
  if type(doc) ~= "table" or type(doc.model) ~= "table" then return nil end
  local vocab, keep = {}, {}
  for piece, id in pairs(doc.model.vocab or {}) do
    if id < 400 then
      vocab[piece] = id
      keep[piece] = true
    end
  end
  local added = {}
  for _, a in ipairs(doc.added_tokens or {}) do
    if a.id < 400 then added[#added + 1] = a
    elseif #added < 20 then
      added[#added + 1] = a
      a.id = 399 + #added      -- 400.. : the first 20 past the kept vocabulary
    end
  end
  local merges = {}
  for _, m in ipairs(doc.model.merges or {}) do
    local a, b
    if type(m) == "string" then a, b = m:match("^(.-) (.*)$") else a, b = m[1], m[2] end
    if a and keep[a] and keep[b] and keep[a .. b] then merges[#merges + 1] = m end
  end
  doc.model.vocab = setmetatable(vocab, { __jsontype = "object" })
  doc.model.merges = setmetatable(merges, { __jsontype = "array" })
  doc.added_tokens = setmetatable(added, { __jsontype = "array" })
  return json.encode(doc)
end

local function tokjson_seeds()
  if fx and ok_json then
    for _, name in ipairs(ls(fx .. "/tokenizer-json", "^[%w_-]+$")) do
      local s = slurp(fx .. "/tokenizer-json/" .. name .. "/tokenizer.json")
      local small = s and shrink_json(s)
      if small then seed("tokjson", name, small) end
    end
  elseif not ok_json then
    io.stderr:write("seeds: dkjson (lua-dkjson) is missing: no tokenizer.json seeds from the fixtures\n")
  end
  -- trained tiny vocabularies of each regex preset
  local text = os.tmpname()
  local f = assert(io.open(text, "wb"))
  f:write(("The cat sat on the mat. Hello world, 123 4567! Caf\u{e9} \u{65e5}\u{672c}\n"):rep(20))
  f:close()
  for _, pre in ipairs { "gpt-2", "llama-bpe", "qwen2" } do
    local json_path = os.tmpname()
    local tok = slm.tokenizer.train { files = { text }, vocab_size = 300, pre = pre, json = json_path }
    if tok then seed("tokjson", "trained-" .. pre, slurp(json_path)) end
    os.remove(json_path)
  end
  os.remove(text)
  -- hand-written: every normalizer, pre-tokenizer and decoder kind
  local vocab = '{"a":0,"b":1,"ab":2,"\u{2581}":3,"\u{2581}a":4,"<0x41>":5,"<unk>":6}'
  local function tj(normalizer, pre, decoder, extra)
    return '{"model":{"type":"BPE","vocab":' .. vocab .. ',"merges":["a b",["\u{2581}","a"]],'
      .. '"byte_fallback":true,"unk_token":"<unk>"' .. (extra or "") .. '},'
      .. '"added_tokens":[{"id":7,"content":"<s>","special":true},{"id":8,"content":"[U]","lstrip":true,"rstrip":true}],'
      .. '"normalizer":' .. normalizer .. ',"pre_tokenizer":' .. pre .. ',"decoder":' .. decoder .. ','
      .. '"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}},{"Sequence":{"id":"A"}}]}}'
  end
  seed("tokjson", "hand-normalizers", tj(
    '{"type":"Sequence","normalizers":[{"type":"NFC"},{"type":"NFD"},{"type":"NFKC"},{"type":"NFKD"},'
      .. '{"type":"Lowercase"},{"type":"Prepend","prepend":"\u{2581}"},'
      .. '{"type":"Replace","pattern":{"String":" "},"content":"\u{2581}"},{"type":"Strip","strip_left":true}]}',
    'null', '{"type":"Sequence","decoders":[{"type":"Replace"},{"type":"ByteFallback"},{"type":"Strip","start":1}]}'))
  seed("tokjson", "hand-pretokenizers", tj('null',
    '{"type":"Sequence","pretokenizers":[{"type":"Split","pattern":{"Regex":"\\\\s+"},"behavior":"Isolated","invert":false},'
      .. '{"type":"Split","pattern":{"String":"."},"behavior":"MergedWithPrevious"},{"type":"Digits","individual_digits":true},'
      .. '{"type":"Whitespace"},{"type":"WhitespaceSplit"},{"type":"Metaspace","replacement":"\u{2581}","prepend_scheme":"first"},'
      .. '{"type":"ByteLevel","add_prefix_space":true,"use_regex":true}]}', '{"type":"ByteLevel"}', ',"ignore_merges":true'))
  seed("tokjson", "hand-metaspace", tj('null',
    '{"type":"Metaspace","replacement":"\u{2581}","add_prefix_space":true,"split":false}', '{"type":"Metaspace"}',
    ',"fuse_unk":true'))
end

-- SentencePiece tokenizer.model (protobuf) --------------------------------------

local function varint(n)
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7
    out[#out + 1] = string.char(n > 0 and (b | 0x80) or b)
  until n == 0
  return table.concat(out)
end

local function pb_bytes(field, s) return varint(field << 3 | 2) .. varint(#s) .. s end
local function pb_int(field, v) return varint(field << 3) .. varint(v) end

-- the first n pieces (field 1) of a ModelProto and all its other fields
local function shrink_spm(s, n)
  local out, pos, kept = {}, 1, 0
  local function read_varint()
    local v, shift = 0, 0
    repeat
      local b = s:byte(pos)
      if not b then error("truncated") end
      pos = pos + 1
      v = v | ((b & 0x7f) << shift)
      shift = shift + 7
    until b < 0x80
    return v
  end
  while pos <= #s do
    local start = pos
    local key = read_varint()
    local wire = key & 7
    if wire == 0 then read_varint()
    elseif wire == 1 then pos = pos + 8
    elseif wire == 5 then pos = pos + 4
    elseif wire == 2 then pos = pos + read_varint()
    else return nil end
    if key >> 3 ~= 1 or kept < n then out[#out + 1] = s:sub(start, pos - 1) end
    if key >> 3 == 1 then kept = kept + 1 end
  end
  return table.concat(out)
end

local function tokspm_seeds()
  if fx then
    local s = slurp(fx .. "/llama2c/tokenizer.model")
    local ok, small = pcall(shrink_spm, s or "", 400)
    if ok and small then seed("tokspm", "llama2-400", small) end
  end
  -- built-in: <unk> <s> </s>, byte pieces, a few merges' worth of pieces,
  -- a BPE trainer spec with byte fallback, a plain normalizer spec
  local pieces = {}
  local function piece(text, score, type)
    pieces[#pieces + 1] = pb_bytes(1, pb_bytes(1, text) .. string.char(2 << 3 | 5) .. string.pack("<f", score)
                                      .. (type and pb_int(3, type) or ""))
  end
  piece("<unk>", 0, 2); piece("<s>", 0, 3); piece("</s>", 0, 3)
  for b = 0, 255 do piece(string.format("<0x%02X>", b), 0, 6) end
  for i, p in ipairs { "\u{2581}", "\u{2581}t", "he", "\u{2581}the", "ll", "o", "<|user|>" } do
    piece(p, -i, p == "<|user|>" and 4 or nil)
  end
  local trainer = pb_bytes(2, pb_int(3, 2) .. pb_int(35, 1) .. pb_int(40, 0) .. pb_int(41, 1) .. pb_int(42, 2))
  local normalizer = pb_bytes(3, pb_bytes(1, "identity") .. pb_int(3, 1) .. pb_int(4, 0) .. pb_int(5, 1))
  seed("tokspm", "builtin", table.concat(pieces) .. trainer .. normalizer)
end

-- tokenize: byte 0 the tokenizer, byte 1 the flags, then the text --------------

local SAMPLES = {
  "Hello world", " Hello  world!\n\n\tTab", "123 4567 89012", "caf\u{e9} na\u{ef}ve \u{65e5}\u{672c}\u{8a9e}",
  "<s>a</s><|endoftext|><|im_end|><|user|>", "don't I'm we'll", "\u{1f600}\u{1f44d}\u{1f3fd}",
  "a\0b\255\192\128", "   ", "",
}

local function case_texts()
  local texts = {}
  for _, s in ipairs(SAMPLES) do texts[#texts + 1] = s end
  if fx then
    local s = slurp(fx .. "/vocab/ggml-vocab-gpt-2.gguf.inp")
    if s then
      for case in (s .. "\n__ggml_vocab_test__\n"):gmatch("(.-)\n__ggml_vocab_test__\n") do
        texts[#texts + 1] = case
      end
    end
  end
  return texts
end

local function tokenize_seeds()
  for i, text in ipairs(case_texts()) do
    seed("tokenize", "case-" .. i, string.char(i % 16, (i * 5) % 8) .. text)
  end
end

-- regex: pattern, 0, text -------------------------------------------------------

local function regex_seeds()
  local cases = {
    { " ?(yes|no)", " yes" }, { "[0-9]{3}-[0-9]{4}", "555-12" }, { " ?[0-9]{1,3}", " 42" },
    { "[a-z]{2}", "ab" }, { "(?:draft|final|retry)", "fin" }, { "\\d+(\\.\\d+)?", "3.1" },
    { "\\{\"name\": \"[^\"]*\", \"age\": \\d+\\}", "{\"name\": \"Al" }, { "\\p{L}+ \\p{N}*", "caf\u{e9} 1" },
    { "(a|ab)(c|bcd)", "abc" }, { "a*?b+|c{2,}", "cc" }, { "[\u{65e5}-\u{672c}]+", "\u{65e5}" },
    { "(?i)hello", "HeL" }, { "(\\w+)\\s\\1", "ab a" }, { "^x$", "x" }, { "", "" }, { ".", "\n" },
    { "(?=ab)a.", "ab" }, { "a(?!b).", "ac" }, { "\\bword\\b", "word" }, { "[[:alpha:]]+", "abc" },
  }
  for i, c in ipairs(cases) do seed("regex", "case-" .. i, c[1] .. "\0" .. c[2]) end
end

-- grammar: grammar text, 0, text (the fixture grammars and one case each) -----------

local function grammar_seeds()
  local dir = fx .. "/grammars/"
  for _, name in ipairs { "json", "json_arr", "arithmetic", "list", "repeat", "negclass", "utf8", "nested",
                          "prefixalt", "comments" } do
    local f = io.open(dir .. name .. ".gbnf", "rb")
    if f then
      local g = f:read("a")
      f:close()
      local c = io.open(dir .. name .. ".cases", "rb")
      local text = ""
      if c then
        for line in c:lines() do
          local s = line:match("^%+\t(.*)$")
          if s and #s > #text and #s < 48 then text = s end
        end
        c:close()
      end
      seed("grammar", name, g .. "\0" .. text)
    end
  end
end

-- chat: "\30"-separated records of "\31"-separated fields ---------------------

local function chat_seeds()
  local names = {}
  for name in pairs(slm.chat.templates) do names[#names + 1] = name end
  table.sort(names)
  local convs = {
    { { "user", "Hi" } },
    { { "system", "You are terse. /no_think" }, { "user", "Hi" }, { "assistant", "<think>hm</think>\n\nHello" },
      { "user", "And then?" } },
    { { "user", "a" }, { "assistant", " b ", "because" }, { "tool", "{\"x\": 1}" }, { "tool", "2" }, { "user", "<|im_end|> c" } },
    { { "system", "sys", nil, "[{\"name\": \"f\"}]" }, { "user", "\u{3000} spaced \u{a0}" } },
  }
  local function record(m)
    local f = {}
    for i = 1, 4 do f[i] = m[i] or "" end
    while #f > 2 and f[#f] == "" do f[#f] = nil end
    return table.concat(f, "\31")
  end
  for i, name in ipairs(names) do
    local conv = convs[i % #convs + 1]
    local head = { name, "gen=" .. (i % 2), "tok=" .. i }
    if i % 3 == 0 then head[#head + 1] = "think=false" end
    if i % 4 == 0 then head[#head + 1] = "date=2025-01-31" end
    if i % 5 == 0 then head[#head + 1] = "date=1700000000" end
    local recs = { table.concat(head, "\31") }
    for _, m in ipairs(conv) do recs[#recs + 1] = record(m) end
    seed("chat", name, table.concat(recs, "\30"))
  end
  seed("chat", "fn", "@fn\31gen=1\30user\31hi\30!")
  seed("chat", "table", "@table\31think=true\30user\31hi")
  seed("chat", "bad-options", "qwen3\31think=maybe\31date=x\30user\31hi")
  seed("chat", "jinja", "chatml\31jinja={% for m in messages %}<|im_start|>{{ m.role }}<|im_end|>\30user\31x")
end

gguf_seeds()
safetensors_seeds()
rwkvcpp_seeds()
llama2c_seeds()
tokjson_seeds()
tokspm_seeds()
tokenize_seeds()
regex_seeds()
grammar_seeds()
chat_seeds()
os.remove(tmp)
local line = {}
for _, t in ipairs { "gguf", "safetensors", "rwkvcpp", "llama2c", "tokjson", "tokspm", "tokenize", "regex", "grammar", "chat" } do
  line[#line + 1] = t .. " " .. (counts[t] or 0)
end
print("seeds: " .. table.concat(line, ", "))
