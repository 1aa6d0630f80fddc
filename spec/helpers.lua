-- Shared helpers of the specs.
local helpers = {}

-- os.tmpname creates the file it names; specs often write to that name plus
-- a suffix or remove it only on success. Every name it hands out is removed
-- when the busted process closes its Lua state (the table's __gc), so a
-- test run leaves nothing in /tmp.
local raw_tmpname = os.tmpname
helpers.tmpnames = setmetatable({}, { __gc = function(t)
  for _, p in ipairs(t) do os.remove(p) end
end })
function os.tmpname()
  local p = raw_tmpname()
  helpers.tmpnames[#helpers.tmpnames + 1] = p
  return p
end

--- Directory of the shared fixtures (SLM_FIXTURES, default ../shared/fixtures).
helpers.fixtures = os.getenv("SLM_FIXTURES") or "../shared/fixtures"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end
helpers.exists = exists

--- Path of a fixture file, or nil plus a skip message when absent.
function helpers.fixture(rel)
  local p = helpers.fixtures .. "/" .. rel
  if exists(p) then return p end
  return nil, "fixture " .. p .. " not found (set SLM_FIXTURES)"
end

--- The message of the error f(...) raises, without its "file:line: " prefix
-- (fails when f does not raise).
function helpers.errmsg(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return (tostring(e):gsub("^[^:]+:%d+: ", ""))
end

--- The cases of a fixtures/vocab-style pair: inp holds texts, each followed
-- by a line __ggml_vocab_test__; out one line of ids per text. Returns
-- texts, ids (lists of numbers).
function helpers.vocab_cases(inp, out)
  local SEP = "\n__ggml_vocab_test__\n"
  local s = helpers.read(inp)
  local texts = {}
  local pos = 1
  while true do
    local a, b = s:find(SEP, pos, true)
    if not a then break end
    texts[#texts + 1] = s:sub(pos, a - 1)
    pos = b + 1
  end
  local expect = {}
  for line in (helpers.read(out) .. "\n"):gmatch("([^\n]*)\n") do
    if #expect < #texts then
      local ids = {}
      for n in line:gmatch("%-?%d+") do ids[#ids + 1] = tonumber(n) end
      expect[#expect + 1] = ids
    end
  end
  return texts, expect
end

--- Size of a file in bytes, nil when it cannot be opened.
function helpers.size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

--- Reads a whole file as a string.
function helpers.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- Writes a string to a temporary file and returns its path.
function helpers.tmpfile(content)
  local p = os.tmpname()
  local f = assert(io.open(p, "wb"))
  f:write(content or "")
  f:close()
  return p
end

--- Deterministic pseudo-random floats in [-scale, scale) (xorshift32).
--- f32(x): the float32 rounding of a Lua number
function helpers.f32(x)
  return (string.unpack("<f", string.pack("<f", x)))
end

--- f32_values(t): every value of a contiguous f32 tensor, flat, from its bytes
function helpers.f32_values(t)
  local s, out = t:tobytes(), {}
  for i = 1, #s // 4 do out[i] = (string.unpack("<f", s, 4 * i - 3)) end
  return out
end

function helpers.randoms(n, seed, scale)
  local s = seed or 1
  scale = scale or 1
  local out = {}
  for i = 1, n do
    s = s ~ ((s << 13) & 0xffffffff)
    s = s ~ (s >> 17)
    s = s ~ ((s << 5) & 0xffffffff)
    out[i] = ((s % 2000003) / 1000001.5 - 1) * scale
  end
  return out
end

--- Reads a reference logits file (.ref): int32 n_pos, n_vocab, n_gen, then
-- float32 logits[n_pos][n_vocab], then int32 gen[n_gen]. Returns
-- {n_pos=, n_vocab=, logits = {{...}, ...}, gen = {...}, sd = std of all logits}.
function helpers.read_ref(path)
  local s = helpers.read(path)
  local n_pos, n_vocab, n_gen, off = string.unpack("<i4i4i4", s)
  local logits, sum, sum2 = {}, 0, 0
  local fmt = "<" .. string.rep("f", n_vocab)
  for p = 1, n_pos do
    local row = table.pack(string.unpack(fmt, s, off))
    off = row[n_vocab + 1]
    row[n_vocab + 1], row.n = nil, nil
    for v = 1, n_vocab do
      sum = sum + row[v]
      sum2 = sum2 + row[v] * row[v]
    end
    logits[p] = row
  end
  local gen = {}
  for i = 1, n_gen do gen[i], off = string.unpack("<i4", s, off) end
  local n = n_pos * n_vocab
  return { n_pos = n_pos, n_vocab = n_vocab, logits = logits, gen = gen,
           sd = math.sqrt(sum2 / n - (sum / n) ^ 2) }
end

--- max |a[i] - b[i]| over a tensor of n floats and a Lua array.
function helpers.max_diff(t, ref)
  local m = 0
  for i = 1, #ref do
    local d = math.abs(t:get(i) - ref[i])
    if d > m then m = d end
  end
  return m
end

--- argmax of a 1-D tensor, 0-based id (ties: lowest id).
function helpers.argmax(t)
  local best, bi = -math.huge, 0
  for i = 1, t:numel() do
    local x = t:get(i)
    if x > best then best, bi = x, i - 1 end
  end
  return bi
end

--- Parity with a reference implementation's .ref (helpers.read_ref): feeds
-- the prompt one token at a time (as the reference did) to a session of a
-- 512-token context (the reference's), checks max |ours - ref| / s <= bound
-- after every position, then that greedy decoding gives every id the .ref
-- holds. Returns the worst max|d|/s.
function helpers.check_parity(model, ref, prompt, bound)
  local check = require "luassert"   -- busted's assert (this module sees the plain one)
  local sess = model:session { ctx = 512 }
  local worst, logits, at = 0, nil, 0
  for p = 1, ref.n_pos do
    logits = sess:eval { prompt[p] }
    local d = helpers.max_diff(logits, ref.logits[p]) / ref.sd
    if d > worst then worst, at = d, p end
  end
  check.is_true(worst <= bound, string.format("max|d|/s = %.4f > %.2f at position %d", worst, bound, at))
  local got = {}
  for i = 1, #ref.gen do
    got[i] = helpers.argmax(logits)
    logits = sess:eval { got[i] }
  end
  check.same(ref.gen, got)
  return worst
end

--- A copy of a GGUF fixture with metadata and tensors changed, written
-- with slm.gguf.write to a temporary file (removed at exit): opts.drop =
-- {key = true} leaves keys out, opts.replace = {name = tensor or false}
-- replaces or leaves out tensors, opts.metadata = {{key, value}, ...} and
-- opts.tensors = {{name =, tensor =}, ...} are appended. Returns the path.
function helpers.altered(src, opts)
  local gguf = require "slm.gguf"
  local f = assert(gguf.open(src))
  local meta = {}
  for _, k in ipairs(f.keys) do
    if k ~= "general.alignment" and not (opts.drop and opts.drop[k]) then meta[#meta + 1] = { k, f:typed(k) } end
  end
  for _, kv in ipairs(opts.metadata or {}) do meta[#meta + 1] = kv end
  local tensors = {}
  local replace = opts.replace or {}
  for _, info in ipairs(f.tensors) do
    local t = replace[info.name]
    if t == nil then t = f:tensor(info.name) end
    if t then tensors[#tensors + 1] = { name = info.name, tensor = t } end
  end
  for _, t in ipairs(opts.tensors or {}) do tensors[#tensors + 1] = t end
  local out = os.tmpname() .. ".gguf"
  assert(gguf.write(out, { metadata = meta, tensors = tensors }))
  f:close()
  helpers.tmpnames[#helpers.tmpnames + 1] = out
  return out
end

--- The path of gguf/dense-q8_0.gguf (a random llama) with ChatML control
-- tokens at ids 300, 301 (<|im_start|>, <|im_end|>) and <tool_call>,
-- </tool_call> as user-defined tokens at 302, 303 (text, as in Qwen's
-- vocabulary): a model for the qwen templates' tool calls. nil and a skip
-- message when the fixture is absent.
helpers.TOOL_IDS = { im_start = 300, im_end = 301, open = 302, close = 303 }
function helpers.tool_model_path()
  if helpers.tool_model_file then return helpers.tool_model_file end
  local src, why = helpers.fixture("gguf/dense-q8_0.gguf")
  if not src then return nil, why end
  local gguf = require "slm.gguf"
  local f <close> = assert(gguf.open(src))
  local toks, types = f:typed("tokenizer.ggml.tokens"), f:typed("tokenizer.ggml.token_type")
  local ids = helpers.TOOL_IDS
  toks.value[ids.im_start + 1], toks.value[ids.im_end + 1] = "<|im_start|>", "<|im_end|>"
  toks.value[ids.open + 1], toks.value[ids.close + 1] = "<tool_call>", "</tool_call>"
  types.value[ids.im_start + 1], types.value[ids.im_end + 1] = 3, 3
  types.value[ids.open + 1], types.value[ids.close + 1] = 4, 4
  helpers.tool_model_file = helpers.altered(src, {
    drop = { ["tokenizer.ggml.tokens"] = true, ["tokenizer.ggml.token_type"] = true },
    metadata = { { "tokenizer.ggml.tokens", toks }, { "tokenizer.ggml.token_type", types } } })
  return helpers.tool_model_file
end

--- A copy of a fixture (path relative to the fixtures) with bytes changed,
-- {[0-based offset] = byte}, and `extra` appended, in a temporary file; nil
-- and a skip message when the fixture is absent.
function helpers.patched(rel, bytes, extra)
  local src, why = helpers.fixture(rel)
  if not src then return nil, why end
  local s = helpers.read(src)
  for at, b in pairs(bytes) do s = s:sub(1, at) .. string.char(b) .. s:sub(at + 2) end
  return helpers.tmpfile(s .. (extra or ""))
end

--- Decodes JSON text (objects, arrays, strings with \u escapes and
-- surrogate pairs, numbers, true/false; null becomes nil). Enough to read
-- the fixtures' tokenizer.json files; raises on malformed input.
function helpers.json_decode(s)
  local pos = 1
  local esc = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
  local function ws() pos = s:find("[^ \t\r\n]", pos) or #s + 1 end
  local function expect(c)
    ws()
    if s:sub(pos, pos) ~= c then error("json: '" .. c .. "' expected at byte " .. pos) end
    pos = pos + 1
  end
  local function str()
    expect('"')
    local parts = {}
    while true do
      local a = s:find('["\\]', pos) or error("json: unterminated string")
      parts[#parts + 1] = s:sub(pos, a - 1)
      if s:sub(a, a) == '"' then pos = a + 1 break end
      local c = s:sub(a + 1, a + 1)
      if c == "u" then
        local cp = tonumber(s:sub(a + 2, a + 5), 16) or error("json: bad \\u escape")
        pos = a + 6
        if cp >= 0xD800 and cp < 0xDC00 and s:sub(pos, pos + 1) == "\\u" then
          cp = 0x10000 + (cp - 0xD800) * 0x400 + (tonumber(s:sub(pos + 2, pos + 5), 16) - 0xDC00)
          pos = pos + 6
        end
        parts[#parts + 1] = utf8.char(cp)
      else
        parts[#parts + 1] = esc[c] or error("json: bad escape \\" .. c)
        pos = a + 2
      end
    end
    return table.concat(parts)
  end
  local value
  local function list(close, item)
    ws()
    if s:sub(pos, pos) == close then pos = pos + 1 return end
    while true do
      item()
      ws()
      local c = s:sub(pos, pos)
      pos = pos + 1
      if c == close then return end
      if c ~= "," then error("json: ',' or '" .. close .. "' expected at byte " .. pos - 1) end
    end
  end
  function value()
    ws()
    local c = s:sub(pos, pos)
    if c == "{" then
      pos = pos + 1
      local t = {}
      list("}", function()
        local k = str()
        expect(":")
        t[k] = value()
      end)
      return t
    elseif c == "[" then
      pos = pos + 1
      local t, n = {}, 0
      list("]", function()
        n = n + 1
        t[n] = value()
      end)
      return t
    elseif c == '"' then
      return str()
    end
    local lit = s:match("^[%w%.%+%-]+", pos) or error("json: value expected at byte " .. pos)
    pos = pos + #lit
    if lit == "true" then return true elseif lit == "false" then return false elseif lit == "null" then return nil end
    return tonumber(lit) or error("json: bad literal " .. lit)
  end
  local v = value()
  ws()
  if pos <= #s then error("json: trailing text at byte " .. pos) end
  return v
end

--- run(cmd) -> its stdout and stderr together, its exit code (a shell
-- command line; the specs that drive bin/slm and the examples)
function helpers.run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return (out:gsub("exit=%d+%s*$", "")), code
end

--- python-jsonschema's verdict on each JSON text against a schema (JSON
-- text): a list of "ok" / "invalid <message>" / "bad-json <message>"
-- (spec/json_schema_check.py, Draft 2020-12, formats checked), or nil and
-- why when python3 or its jsonschema module is missing. Texts must not
-- hold a newline.
function helpers.json_schema_verdicts(schema_text, texts)
  local sfile = helpers.tmpfile(schema_text)
  local ifile = helpers.tmpfile(table.concat(texts, "\n") .. "\n")
  -- without the sanitizer suite's preloaded runtimes (python is not ours)
  local p = io.popen("env -u LD_PRELOAD python3 spec/json_schema_check.py " .. sfile .. " " .. ifile .. " 2>&1")
  local out = {}
  for l in p:lines() do out[#out + 1] = l end
  if not p:close() then return nil, "python3 with jsonschema is not available: " .. table.concat(out, " ") end
  return out
end

return helpers
