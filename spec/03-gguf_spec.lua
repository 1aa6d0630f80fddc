-- slm.gguf: hostile files (each case patches a small valid file that the
-- spec writes itself and asserts the exact message), write -> read round
-- trips of every dtype and value type, writer misuse, and every fixture.
local G = require "slm.gguf"
local T = require "slm.tensor"
local helpers = require "spec.helpers"

local function errmsg(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return (tostring(e):gsub("^[^:]+:%d+: ", ""))
end

local function write_bytes(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

local function u32(v) return string.pack("<I4", v) end
local function u64(v) return string.pack("<i8", v) end

-- Byte offsets (0-based, as in messages) of every field of a GGUF file,
-- from an independent little parser: kv[i] / kv[key] = {key_len, key_at,
-- type, value, arr_n, elems, elem = {string element length fields}},
-- tensor[i] / tensor[name] = {name_len, name_at, n_dims, ne = {}, dtype, offset}.
local function layout(s)
  local L = {kv = {}, tensor = {}}
  local p = 25
  local n_tensors = string.unpack("<I8", s, 9)
  local n_kv = string.unpack("<I8", s, 17)
  local sizes = {[0] = 1, 1, 2, 2, 4, 4, 4, 1, nil, nil, 8, 8, 8}
  local function rd32() local v = string.unpack("<I4", s, p); p = p + 4; return v end
  local function rd64() local v = string.unpack("<I8", s, p); p = p + 8; return v end
  for i = 1, n_kv do
    local kv = {key_len = p - 1}
    local len = rd64()
    kv.key_at = p - 1
    kv.key = s:sub(p, p + len - 1)
    p = p + len
    kv.type = p - 1
    local t = rd32()
    kv.value = p - 1
    if t == 8 then
      p = p + rd64()
    elseif t == 9 then
      local et = rd32()
      kv.arr_n = p - 1
      local n = rd64()
      kv.elems = p - 1
      if et == 8 then
        kv.elem = {}
        for j = 1, n do
          kv.elem[j] = p - 1
          p = p + rd64()
        end
      else
        p = p + n * sizes[et]
      end
    else
      p = p + sizes[t]
    end
    L.kv[i] = kv
    L.kv[kv.key] = kv
  end
  for i = 1, n_tensors do
    local t = {name_len = p - 1}
    local len = rd64()
    t.name_at = p - 1
    t.name = s:sub(p, p + len - 1)
    p = p + len
    t.n_dims = p - 1
    local nd = rd32()
    t.ne = {}
    for d = 1, nd do t.ne[d] = p - 1; p = p + 8 end
    t.dtype = p - 1
    p = p + 4
    t.offset = p - 1
    p = p + 8
    L.tensor[i] = t
    L.tensor[t.name] = t
  end
  return L
end

local function patch(s, at, bytes)
  return s:sub(1, at) .. bytes .. s:sub(at + #bytes + 1)
end

-- The valid base file: keys 0..6 and tensors 0 ('a.w', f32 2x4) and
-- 1 ('b.w', q8_0 1x32, 34 bytes).
local base_path = os.tmpname()
local function a_values()
  local v = {}
  for i = 1, 8 do v[i] = i * 0.5 end
  return v
end
assert(G.write(base_path, {
  metadata = {
    {"general.architecture", "llama"},
    {"general.alignment", {type = "u32", value = 32}},
    {"t.b1", true},
    {"t.b2", false},
    {"t.arr", {"a", "bc"}},
    {"t.i32s", {type = "i32", value = {1, -2}}},
    {"t.bools", {true, false}},
  },
  tensors = {
    {name = "a.w", tensor = T.new(a_values(), "f32", {2, 4})},
    {name = "b.w", tensor = T.new(helpers.randoms(32, 3), "q8_0", {1, 32})},
  },
}))
local BASE = helpers.read(base_path)
local S = #BASE
local L = layout(BASE)
local DATA = (function()
  local f = assert(G.open(base_path))
  local d = f.data_offset
  f:close()
  return d
end)()
local BIG = 1 << 40

-- Each case: name, how to damage the base file, and the message after "PATH: ".
local cases = {
  {"wrong magic", function(s) return patch(s, 0, "GGML") end,
   "not a GGUF file (magic bytes 47 47 4d 4c, expected 'GGUF')"},
  {"version 1", function(s) return patch(s, 4, u32(1)) end,
   "version: GGUF version 1 is not supported (only 2 and 3)"},
  {"unknown version", function(s) return patch(s, 4, u32(4)) end,
   "version: unknown GGUF version 4 (only 2 and 3 are supported)"},
  {"big-endian version", function(s) return patch(s, 4, string.pack(">I4", 3)) end,
   "version: unknown GGUF version 50331648 (only 2 and 3 are supported)"},
  {"empty file", function() return "" end,
   "magic: truncated: needs 4 bytes at offset 0, the file has 0 bytes"},
  {"truncated in the counts", function(s) return s:sub(1, 10) end,
   "n_tensors: truncated: needs 8 bytes at offset 8, the file has 10 bytes"},
  {"huge n_kv", function(s) return patch(s, 16, u64(1 << 62)) end,
   string.format("n_kv: 4611686018427387904 key-values cannot fit in the %d bytes left in the file",
                 S - 24)},
  {"huge n_tensors", function(s) return patch(s, 8, u64(1 << 62)) end,
   string.format("n_tensors: 4611686018427387904 tensor infos cannot fit in the %d bytes left "
                 .. "in the file", S - 24)},
  {"key length past the end", function(s) return patch(s, L.kv[1].key_len, u64(BIG)) end,
   string.format("key 0: string length 1099511627776 is past the end of the file (offset 32, "
                 .. "the file has %d bytes)", S)},
  {"string value length past the end",
   function(s) return patch(s, L.kv[1].value, u64(BIG)) end,
   string.format("key 0 ('general.architecture'): string length 1099511627776 is past the end "
                 .. "of the file (offset %d, the file has %d bytes)", L.kv[1].value + 8, S)},
  {"string length -1", function(s) return patch(s, L.kv[1].value, u64(-1)) end,
   string.format("key 0 ('general.architecture'): string length 18446744073709551615 is past "
                 .. "the end of the file (offset %d, the file has %d bytes)",
                 L.kv[1].value + 8, S)},
  {"unknown value type", function(s) return patch(s, L.kv[3].type, u32(13)) end,
   "key 2 ('t.b1'): unknown value type 13"},
  {"invalid bool byte", function(s) return patch(s, L.kv[3].value, "\2") end,
   "key 2 ('t.b1'): invalid bool byte 2 (must be 0 or 1)"},
  {"duplicate key", function(s) return patch(s, L.kv[4].key_at, "t.b1") end,
   "key 3 ('t.b1'): duplicate key (also key 2)"},
  {"NUL in a key", function(s) return patch(s, L.kv[3].key_at, "t\0b1") end,
   "key 2: name contains a NUL byte"},
  {"huge array length", function(s) return patch(s, L.kv[5].arr_n, u64(1 << 61)) end,
   string.format("key 4 ('t.arr'): array of 2305843009213693952 str elements is past the end "
                 .. "of the file (offset %d, the file has %d bytes)", L.kv[5].elems, S)},
  {"string array element past the end",
   function(s) return patch(s, L.kv[5].elem[2], u64(BIG)) end,
   string.format("key 4 ('t.arr') element 1: string length 1099511627776 is past the end of "
                 .. "the file (offset %d, the file has %d bytes)", L.kv[5].elem[2] + 8, S)},
  {"nested array", function(s) return patch(s, L.kv[5].value, u32(9)) end,
   "key 4 ('t.arr'): nested arrays are not supported"},
  {"unknown array element type", function(s) return patch(s, L.kv[5].value, u32(13)) end,
   "key 4 ('t.arr'): unknown array element type 13"},
  {"numeric array past the end", function(s) return patch(s, L.kv[6].arr_n, u64(BIG)) end,
   string.format("key 5 ('t.i32s'): array of 1099511627776 i32 elements is past the end of "
                 .. "the file (offset %d, the file has %d bytes)", L.kv[6].elems, S)},
  {"invalid bool in an array", function(s) return patch(s, L.kv[7].elems + 1, "\5") end,
   "key 6 ('t.bools'): element 1: invalid bool byte 5 (must be 0 or 1)"},
  {"alignment not a power of two", function(s) return patch(s, L.kv[2].value, u32(24)) end,
   "general.alignment: 24 is not a power of two between 1 and 1073741824"},
  {"alignment zero", function(s) return patch(s, L.kv[2].value, u32(0)) end,
   "general.alignment: 0 is not a power of two between 1 and 1073741824"},
  {"alignment of the wrong type", function(s) return patch(s, L.kv[2].type, u32(5)) end,
   "general.alignment: has type i32 (must be u32)"},
  {"n_dims 0", function(s) return patch(s, L.tensor[1].n_dims, u32(0)) end,
   "tensor 0 ('a.w'): n_dims 0 is out of range (1 to 4)"},
  {"n_dims 5", function(s) return patch(s, L.tensor[1].n_dims, u32(5)) end,
   "tensor 0 ('a.w'): n_dims 5 is out of range (1 to 4)"},
  {"zero dim", function(s) return patch(s, L.tensor[1].ne[1], u64(0)) end,
   "tensor 0 ('a.w'): ne[0] is 0 (must be positive)"},
  {"negative dim", function(s) return patch(s, L.tensor[1].ne[2], u64(-1)) end,
   "tensor 0 ('a.w'): ne[1] is -1 (must be positive)"},
  {"dims whose product overflows",
   function(s) return patch(patch(s, L.tensor[1].ne[1], u64(BIG)), L.tensor[1].ne[2], u64(BIG)) end,
   "tensor 0 ('a.w'): the number of elements overflows (ne[1] = 1099511627776)"},
  {"byte size overflows",
   function(s) return patch(patch(s, L.tensor[1].ne[1], u64(1 << 31)), L.tensor[1].ne[2], u64(1 << 31)) end,
   "tensor 0 ('a.w'): shape overflows: byte size too large"},
  {"unknown dtype id", function(s) return patch(s, L.tensor[1].dtype, u32(4)) end,
   "tensor 0 ('a.w'): unknown dtype id 4"},
  {"dtype id past the table", function(s) return patch(s, L.tensor[1].dtype, u32(99)) end,
   "tensor 0 ('a.w'): unknown dtype id 99"},
  {"row not a whole number of blocks", function(s) return patch(s, L.tensor[2].ne[1], u64(16)) end,
   "tensor 1 ('b.w'): ne[0] = 16 is not a multiple of the q8_0 block size 32"},
  {"misaligned data offset", function(s) return patch(s, L.tensor[2].offset, u64(33)) end,
   "tensor 1 ('b.w'): data offset 33 is not a multiple of the alignment 32"},
  {"data offset past the end", function(s) return patch(s, L.tensor[2].offset, u64(1 << 20)) end,
   string.format("tensor 1 ('b.w'): data offset %d + 34 bytes is past the end of the file "
                 .. "(%d bytes)", DATA + (1 << 20), S)},
  {"data size past the end", function(s) return patch(s, L.tensor[1].ne[2], u64(1 << 30)) end,
   string.format("tensor 0 ('a.w'): data offset %d + 17179869184 bytes is past the end of the "
                 .. "file (%d bytes)", DATA, S)},
  {"data offset wraps around", function(s) return patch(s, L.tensor[2].offset, u64(-32)) end,
   string.format("tensor 1 ('b.w'): data offset %d + 34 bytes is past the end of the file "
                 .. "(%d bytes)", DATA - 32, S)},
  {"duplicate tensor name", function(s) return patch(s, L.tensor[2].name_at, "a.w") end,
   "tensor 1 ('a.w'): duplicate tensor name (also tensor 0)"},
  {"truncated in a bool value", function(s) return s:sub(1, L.kv[3].value) end,
   string.format("key 2 ('t.b1'): truncated: needs 1 bytes at offset %d, the file has %d bytes",
                 L.kv[3].value, L.kv[3].value)},
  {"truncated in tensor data", function(s) return s:sub(1, S - 40) end,
   string.format("tensor 1 ('b.w'): data offset %d + 34 bytes is past the end of the file "
                 .. "(%d bytes)", DATA + 32, S - 40)},
}

describe("slm.gguf hostile files", function()
  local path = os.tmpname()
  teardown(function() os.remove(path) end)

  for _, c in ipairs(cases) do
    it("refuses: " .. c[1], function()
      write_bytes(path, c[2](BASE))
      local f, msg = G.open(path)
      assert.is_nil(f)
      assert.equals(path .. ": " .. c[3], msg)
    end)
  end

  it("refuses every truncation before the end of the tensor data", function()
    local last = L.tensor[2]
    local data_end = DATA + 32 + 34
    local bad = {}
    for n = 0, S - 1 do
      write_bytes(path, BASE:sub(1, n))
      local f, msg = G.open(path)
      if n < data_end then
        if f or msg:sub(1, #path + 2) ~= path .. ": " then bad[#bad + 1] = n end
      elseif not f then
        bad[#bad + 1] = n
      end
      if f then f:close() end
    end
    assert.same({}, bad)
    assert.is_true(last ~= nil)
  end)

  it("opens version 2 files", function()
    write_bytes(path, patch(BASE, 4, u32(2)))
    local f = assert(G.open(path))
    assert.equals(2, f.version)
    f:close()
  end)

  it("reports a missing file", function()
    local f, msg = G.open("/nonexistent/dir/x.gguf")
    assert.is_nil(f)
    assert.equals("/nonexistent/dir/x.gguf: No such file or directory", msg)
  end)
end)

describe("slm.gguf reading", function()
  it("gives metadata, types, tensor infos and zero-copy views", function()
    local f = assert(G.open(base_path))
    assert.equals(3, f.version)
    assert.equals(32, f.alignment)
    assert.equals(2, #f)
    assert.equals(2, f:ntensors())
    assert.same({"general.architecture", "general.alignment", "t.b1", "t.b2", "t.arr",
                 "t.i32s", "t.bools"}, f.keys)
    assert.equals("llama", f.metadata["general.architecture"])
    assert.same({"a", "bc"}, f.metadata["t.arr"])
    assert.same({1, -2}, f:get("t.i32s"))
    assert.is_false(f.metadata["t.b2"])
    assert.is_nil(f.metadata["absent"])
    assert.same({"arr", "str"}, {f:type("t.arr")})
    assert.equals("u32", f:type("general.alignment"))
    assert.equals(2, f:arr_len("t.arr"))
    assert.equals("bc", f:arr_get("t.arr", 2))
    assert.is_nil(f:arr_get("t.arr", 3))
    local order = {}
    for k in pairs(f.metadata) do order[#order + 1] = k end
    assert.same(f.keys, order)
    assert.same({name = "a.w", dtype = "f32", shape = {2, 4}, bytes = 32, offset = 0},
                f.tensors[1])
    assert.same({name = "b.w", dtype = "q8_0", shape = {1, 32}, bytes = 34, offset = 32},
                f:info("b.w"))
    local a = f:tensor("a.w")
    assert.same({2, 4}, a:shape())
    assert.same({{0.5, 1.0, 1.5, 2.0}, {2.5, 3.0, 3.5, 4.0}}, a:totable())
    assert.is_true(a:is_readonly())
    local nope, msg = f:tensor("nope")
    assert.is_nil(nope)
    assert.equals(base_path .. ": no tensor 'nope'", msg)
    f:close()
    f:close()                                  -- idempotent
    assert.equals(1.0, a:get(1, 2))            -- the view outlives the file object
    assert.equals("attempt to use a closed gguf file", errmsg(f.get, f, "t.b1"))
  end)

  it("closes through <close>", function()
    local h
    do
      local f <close> = assert(G.open(base_path))
      h = f._h
    end
    assert.equals("slm.GGUF(closed)", tostring(h))
  end)
end)

local DTYPES = {"f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "q2_k",
                "q3_k", "q4_k", "q5_k", "q6_k", "q8_k", "i8", "i16", "i32"}

local function block_size(dt)
  if dt:match("_k$") then return 256 end
  if dt:match("^q") then return 32 end
  return 1
end

describe("slm.gguf writing", function()
  local path = os.tmpname()
  teardown(function() os.remove(path) end)

  it("round-trips every dtype, in 1 to 4 dims, with any alignment", function()
    for _, align in ipairs({32, 64, 1}) do
      local tensors, shapes = {}, {}
      for i, dt in ipairs(DTYPES) do
        local bs = block_size(dt)
        local shape = ({{2 * bs}, {3, bs}, {2, 1, 2 * bs}, {1, 2, 3, bs}})[i % 4 + 1]
        local n = 1
        for _, d in ipairs(shape) do n = n * d end
        local vals = helpers.randoms(n, i, 4)
        if dt:match("^i") then
          for j = 1, n do vals[j] = math.floor(vals[j] * 20) end
        end
        shapes[i] = shape
        tensors[i] = {name = "t." .. dt, tensor = T.new(vals, dt, shape)}
      end
      assert.is_true(G.write(path, {tensors = tensors, alignment = align}))
      local f = assert(G.open(path))
      assert.equals(align, f.alignment)
      assert.equals(0, f.data_offset % align)
      assert.equals(#DTYPES, #f)
      for i, dt in ipairs(DTYPES) do
        local info = f.tensors[i]
        assert.equals("t." .. dt, info.name)
        assert.equals(dt, info.dtype)
        assert.same(shapes[i], info.shape)
        assert.equals(0, info.offset % align)
        assert.equals(tensors[i].tensor:tobytes(), f:tensor(i):tobytes())
      end
      f:close()
    end
  end)

  it("writes strided tensors as contiguous rows", function()
    local m = T.new({1, 2, 3, 4, 5, 6}, "f32", {2, 3})
    local q = T.new(helpers.randoms(128, 5), "q4_0", {4, 32})
    assert.is_true(G.write(path, {tensors = {
      {name = "mT", tensor = m:t()},
      {name = "q.rows", tensor = q:narrow(1, 2, 2)},
    }}))
    local f = assert(G.open(path))
    assert.same({{1, 4}, {2, 5}, {3, 6}}, f:tensor("mT"):totable())
    assert.equals(q:narrow(1, 2, 2):contiguous():tobytes(), f:tensor("q.rows"):tobytes())
    f:close()
  end)

  it("infers value types and honours explicit ones", function()
    assert.is_true(G.write(path, {metadata = {
      s = "text", b = true, u = 5, neg = -5, big = 1 << 40, f = 0.25,
      strs = {"x", "", "z"}, ints = {1, -2, 3}, wide = {1, 1 << 40}, floats = {1, 2.5},
      bools = {false, true},
      e_u8 = {type = "u8", value = 255}, e_i8 = {type = "i8", value = -128},
      e_u16 = {type = "u16", value = 65535}, e_i16 = {type = "i16", value = -32768},
      e_u64 = {type = "u64", value = math.maxinteger}, e_i64 = {type = "i64", value = 7},
      e_f64 = {type = "f64", value = 0.1}, e_u32arr = {type = "u32", value = {4000000000}},
      e_empty = {type = "str", value = {}},
    }}))
    local f = assert(G.open(path))
    local want = {
      s = {"str", "text"}, b = {"bool", true}, u = {"u32", 5}, neg = {"i32", -5},
      big = {"i64", 1 << 40}, f = {"f32", 0.25}, strs = {"str", {"x", "", "z"}},
      ints = {"i32", {1, -2, 3}}, wide = {"i64", {1, 1 << 40}}, floats = {"f32", {1.0, 2.5}},
      bools = {"bool", {false, true}}, e_u8 = {"u8", 255}, e_i8 = {"i8", -128},
      e_u16 = {"u16", 65535}, e_i16 = {"i16", -32768}, e_u64 = {"u64", math.maxinteger},
      e_i64 = {"i64", 7}, e_f64 = {"f64", 0.1}, e_u32arr = {"u32", {4000000000}},
      e_empty = {"str", {}},
    }
    local keys = {}
    for k in pairs(want) do keys[#keys + 1] = k end
    table.sort(keys)
    assert.same(keys, f.keys)                  -- a map is written in sorted key order
    for k, w in pairs(want) do
      assert.same(w, {f:typed(k).type, f:get(k)}, k)
    end
    f:close()
  end)

  it("copies a file key for key with typed values", function()
    local src = helpers.fixture("gguf/stories260K-f32.gguf")
    if not src then return pending("fixture gguf/stories260K-f32.gguf not found (set SLM_FIXTURES)") end
    local f = assert(G.open(src))
    local md, tensors = {}, {}
    for i, k in ipairs(f.keys) do md[i] = {k, f:typed(k)} end
    for i, t in ipairs(f.tensors) do tensors[i] = {name = t.name, tensor = f:tensor(t.name)} end
    assert.is_true(G.write(path, {metadata = md, tensors = tensors}))
    f:close()
    -- the reference's writer lays out files exactly like this one
    assert.equals(helpers.read(src), helpers.read(path))
  end)

  it("refuses values that do not fit and ambiguous ones", function()
    local function w(md) return function() G.write(path, {metadata = md}) end end
    assert.equals("gguf key 'x': 300 does not fit in u8",
                  errmsg(w({x = {type = "u8", value = 300}})))
    assert.equals("gguf key 'x': -1 does not fit in u32",
                  errmsg(w({x = {type = "u32", value = -1}})))
    assert.equals("gguf key 'x' element 2: 1.5 does not fit in i32",
                  errmsg(w({x = {type = "i32", value = {1, 1.5}}})))
    assert.equals("gguf key 'x': bool expected, got number",
                  errmsg(w({x = {type = "bool", value = 1}})))
    assert.equals("gguf key 'x': unknown type 'u128' (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 "
                  .. "bool str)", errmsg(w({x = {type = "u128", value = 1}})))
    assert.equals("gguf key 'x': an empty array needs an explicit type: {type = 'i32', value = {}}",
                  errmsg(w({x = {}})))
    assert.equals("gguf key 'x': array mixes element types", errmsg(w({x = {1, "a"}})))
    assert.equals("gguf key 'x' element 1: table in an array (nested arrays are not supported)",
                  errmsg(w({x = {{1}}})))
    assert.equals("gguf key 'x' is set twice", errmsg(w({{"x", 1}, {"x", 2}})))
    assert.equals("general.alignment must be a u32 power of two between 1 and 1073741824",
                  errmsg(function() G.write(path, {alignment = 24}) end))
  end)

  it("refuses bad tensor names", function()
    local t = T.zeros({2})
    assert.equals("gguf tensor 'a' is added twice", errmsg(function()
      G.write(path, {tensors = {{name = "a", tensor = t}, {name = "a", tensor = t}}})
    end))
    local long = string.rep("n", 64)
    assert.equals("gguf tensor name '" .. string.rep("n", 63) .. "...' is 64 bytes (at most 63)",
                  errmsg(function() G.write(path, {tensors = {{name = long, tensor = t}}}) end))
  end)

  it("reports an unwritable path", function()
    local ok, msg = G.write("/nonexistent/dir/x.gguf", {})
    assert.is_nil(ok)
    assert.equals("/nonexistent/dir/x.gguf.tmp: No such file or directory", msg)
  end)
end)

-- Known facts of each fixture family: architecture, tensor count, vocabulary.
local FIXTURES = {
  {"gguf/dense%-", "llama", 39, 512, "<s>"},
  {"gguf/qwen2%-", "qwen2", 50, 512, "<s>"},
  {"gguf/phi3%-", "phi3", 27, 512, "<s>"},
  {"gguf/mamba%-", "mamba", 43, 512, "<s>"},
  {"gguf/rwkv7%-", "rwkv7", 342, 256, "<0x01>"},
  {"gguf/rwkv6%-", "rwkv6", 294, 256, "<0x01>"},
  {"gguf/stories260K", "llama", 48, 512, "<s>"},
  {"vocab/ggml%-vocab%-llama%-spm", "llama", 0, 32000, "<s>"},
  {"vocab/ggml%-vocab%-gpt%-2", "gpt2", 0, 50257, "\""},
  {"vocab/ggml%-vocab%-phi%-3", "phi3", 0, 32064, "<s>"},
  {"vocab/ggml%-vocab%-falcon", "falcon", 0, 65024, ">>ABSTRACT<<"},
  {"vocab/ggml%-vocab%-starcoder", "starcoder2", 0, 49152, "<fim_prefix>"},
  {"vocab/ggml%-vocab%-deepseek%-coder", "llama", 0, 32256, "\""},
}

describe("slm.gguf fixtures", function()
  for _, sub in ipairs({"gguf", "vocab"}) do
    it("opens every file in " .. sub, function()
      local dir = helpers.fixtures .. "/" .. sub
      local p = io.popen("ls '" .. dir .. "' 2>/dev/null")
      local names = {}
      for name in p:lines() do
        if name:match("%.gguf$") then names[#names + 1] = name end
      end
      p:close()
      if #names == 0 then return pending("fixtures " .. dir .. " not found (set SLM_FIXTURES)") end
      for _, name in ipairs(names) do
        local rel = sub .. "/" .. name
        local f = assert(G.open(dir .. "/" .. name))
        local known
        for _, fx in ipairs(FIXTURES) do
          if rel:match("^" .. fx[1]) then known = fx end
        end
        assert(known, "no known facts for " .. rel)
        assert.equals(3, f.version, rel)
        assert.equals(known[2], f.metadata["general.architecture"], rel)
        assert.equals(known[3], #f, rel)
        assert.equals(known[4], f:arr_len("tokenizer.ggml.tokens"), rel)
        assert.equals(known[5], f:arr_get("tokenizer.ggml.tokens", 2), rel)
        for i, info in ipairs(f.tensors) do
          local t = f:tensor(i)
          assert.same(info.shape, t:shape())
          assert.equals(info.dtype, t:dtype())
          assert.equals(info.bytes, t:nbytes())
        end
        f:close()
      end
    end)
  end

  it("reads the dense model's hyperparameters", function()
    local path, skip = helpers.fixture("gguf/dense-q4_k_m.gguf")
    if not path then return pending(skip) end
    local f = assert(G.open(path))
    local emb = f:info("token_embd.weight")
    assert.equals(512, emb.shape[1])
    assert.equals(emb.shape[2], f.metadata["llama.embedding_length"])
    assert.equals(8, f.metadata["llama.attention.head_count"])
    assert.equals(2, f.metadata["llama.attention.head_count_kv"])
    f:close()
  end)
end)

describe("examples/inspect.lua", function()
  teardown(function() os.remove(base_path) end)

  it("prints the architecture, parameter count and tensor table", function()
    local p = io.popen("bin/slm examples/inspect.lua '" .. base_path .. "' 2>&1")
    local out = p:read("a")
    p:close()
    assert.matches("architecture  llama\n", out)
    assert.matches("parameters    40 %(40%), 66 B of tensor data\n", out)
    assert.matches("\n  a%.w +f32 +2 x 4 +32 B\n", out)
    assert.matches("\n  b%.w +q8_0 +1 x 32 +34 B\n", out)
    assert.matches("dtypes        f32: 1 %(32 B%), q8_0: 1 %(34 B%)", out)
  end)
end)
