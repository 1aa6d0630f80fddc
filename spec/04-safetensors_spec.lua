-- slm.safetensors: valid files built here (every supported dtype, metadata,
-- scalars, unsupported dtypes, misaligned data) and hostile ones, each
-- asserting the exact message.
local ST = require "slm.safetensors"
require "spec.helpers"   -- its os.tmpname removes temporary files at exit

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

-- A file from a header string and a data section.
local function file(header, data)
  return string.pack("<I8", #header) .. header .. (data or "")
end

-- One tensor entry as JSON.
local function entry(name, dtype, shape, b, e)
  local dims = {}
  for i, d in ipairs(shape) do dims[i] = tostring(d) end
  return string.format('"%s":{"dtype":"%s","shape":[%s],"data_offsets":[%d,%d]}',
                       name, dtype, table.concat(dims, ","), b, e)
end

-- The valid file: F32 2x2 at 0, F16 {3} at 16, BF16 {2} at 22, I64 {1} at
-- 26 (listed, not viewable), a scalar F32 at 34 and metadata; 8-byte header
-- padding keeps F32 data aligned.
local DATA = string.pack("<ffff", 1, 2, 3, 4)            -- 0..16
          .. string.pack("<I2I2I2", 0x3c00, 0xc000, 0x3800)  -- 16..22: 1, -2, 0.5
          .. string.pack("<I2I2", 0x3f80, 0x4040)        -- 22..26: 1, 3
          .. string.pack("<i8", -7)                      -- 26..34
          .. string.pack("<f", 9.5)                      -- 34..38
local function valid_header(pad)
  local h = "{" .. table.concat({
    '"__metadata__":{"format":"pt","note":"hi"}',
    entry("w.f32", "F32", {2, 2}, 0, 16),
    entry("w.bf16", "BF16", {2}, 22, 26),
    entry("w.f16", "F16", {3}, 16, 22),
    entry("step", "I64", {1}, 26, 34),
    entry("scalar", "F32", {}, 34, 38),
  }, ",") .. "}"
  if pad then h = h .. string.rep(" ", (8 - #h % 8) % 8) end
  return h
end
local VALID = file(valid_header(true), DATA)

describe("slm.safetensors reading", function()
  local path = os.tmpname()
  teardown(function() os.remove(path) end)

  it("lists tensors in data order with metadata", function()
    write_bytes(path, VALID)
    local f = assert(ST.open(path))
    assert.same({format = "pt", note = "hi"}, f.metadata)
    assert.equals(5, #f)
    assert.equals(8 + #valid_header(true), f.data_offset)
    local names = {}
    for i, t in ipairs(f.tensors) do names[i] = t.name end
    assert.same({"w.f32", "w.f16", "w.bf16", "step", "scalar"}, names)
    assert.same({name = "w.f32", dtype = "f32", shape = {2, 2}, bytes = 16, offset = 0},
                f.tensors[1])
    assert.same({name = "step", dtype = "i64", shape = {1}, bytes = 8, offset = 26},
                f:info("step"))
    assert.same({name = "scalar", dtype = "f32", shape = {}, bytes = 4, offset = 34},
                f:info("scalar"))
    f:close()
  end)

  it("views F32, F16 and BF16 data without copying", function()
    write_bytes(path, VALID)
    local f = assert(ST.open(path))
    local a = f:tensor("w.f32")
    assert.same({{1, 2}, {3, 4}}, a:totable())
    assert.is_true(a:is_readonly())
    assert.equals("f16", f:tensor("w.f16"):dtype())
    assert.same({1, -2, 0.5}, f:tensor("w.f16"):totable())
    assert.same({1, 3}, f:tensor("w.bf16"):totable())
    assert.same({1}, f:tensor("scalar"):shape())
    assert.equals(9.5, f:tensor("scalar"):get(1))
    local t, msg = f:tensor("step")
    assert.is_nil(t)
    assert.equals(path .. ": tensor 'step': dtype I64 is not supported (F32, F16, BF16, I8, I16 "
                  .. "and I32 are)", msg)
    t, msg = f:tensor("nope")
    assert.is_nil(t)
    assert.equals(path .. ": no tensor 'nope'", msg)
    f:close()
    f:close()
    assert.equals(4, a:get(2, 2))              -- the view outlives the file object
    assert.equals("attempt to use a closed safetensors file", errmsg(f.tensor, f, "w.f32"))
  end)

  it("copies misaligned data instead of viewing it", function()
    -- an unpadded 1-byte-longer header puts the F32 data at an odd offset
    local h = '{' .. entry("x", "F32", {2}, 0, 8) .. '} '
    if (8 + #h) % 4 == 0 then h = h .. " " end
    write_bytes(path, file(h, string.pack("<ff", 1.5, -2)))
    local f = assert(ST.open(path))
    assert.same({1.5, -2}, f:tensor("x"):totable())
    f:close()
  end)

  it("takes an empty tensor at the offset where the next one begins", function()
    -- data order is (begin, end), as the format's library sorts: "z" [0, 0] before "a" [0, 4]
    write_bytes(path, file("{" .. entry("a", "F32", {1}, 0, 4) .. "," .. entry("z", "F32", {0}, 0, 0) .. "}",
                           string.pack("<f", 2.5)))
    local f = assert(ST.open(path))
    assert.same({2.5}, f:tensor("a"):totable())
    f:close()
  end)

  it("refuses empty tensors when viewed", function()
    write_bytes(path, file("{" .. entry("e", "F32", {0, 3}, 0, 0) .. "}"))
    local f = assert(ST.open(path))
    local t, msg = f:tensor("e")
    assert.is_nil(t)
    assert.equals(path .. ": tensor 'e': shape[0] is 0 (empty tensors are not supported)", msg)
    f:close()
  end)

  it("reports a missing file", function()
    local f, msg = ST.open("/nonexistent/x.safetensors")
    assert.is_nil(f)
    assert.equals("/nonexistent/x.safetensors: No such file or directory", msg)
  end)
end)

local function one(e) return "{" .. e .. "}" end

-- name, file bytes, message after "PATH: "
local cases = {
  {"file shorter than the length", "\1\0\0", "header length: truncated: needs 8 bytes, the file has 3"},
  {"header length past the end", string.pack("<I8", 1000) .. "{}",
   "header length 1000 is past the end of the file (10 bytes)"},
  {"header length -1", string.pack("<i8", -1) .. "{}",
   "header length 18446744073709551615 is over the format's limit of 100000000 bytes"},
  {"header length over the limit", string.pack("<I8", 100000001) .. "{}",
   "header length 100000001 is over the format's limit of 100000000 bytes"},
  {"empty header", file(""),
   "header: invalid JSON: '[' or '{' expected near end of file (line 1, column 0)"},
  {"truncated JSON", file('{"a":'),
   "header: invalid JSON: unexpected token near end of file (line 1, column 5)"},
  {"trailing garbage", file('{"a": 1} x'),
   "header: invalid JSON: end of file expected near 'x' (line 1, column 10)"},
  {"duplicate names", file('{"a":{},"a":{}}'),
   "header: invalid JSON: duplicate object key near '\"a\"' (line 1, column 11)"},
  {"not an object", file("[1, 2]"), "header: not a JSON object"},
  {"metadata not an object", file('{"__metadata__":[]}'), "__metadata__: not a JSON object"},
  {"metadata value not a string", file('{"__metadata__":{"n":1}}'),
   "__metadata__: the value of 'n' is not a string"},
  {"entry not an object", file('{"w":[]}'), "tensor 'w': entry is not a JSON object"},
  {"dtype missing", file('{"w":{"shape":[1],"data_offsets":[0,4]}}'),
   "tensor 'w': dtype is missing or not a string"},
  {"unknown dtype", file(one(entry("w", "F99", {1}, 0, 4)), "\0\0\0\0"),
   "tensor 'w': unknown dtype 'F99'"},
  {"shape missing", file('{"w":{"dtype":"F32","data_offsets":[0,4]}}'),
   "tensor 'w': shape is missing or not an array"},
  {"too many dims", file(one(entry("w", "F32", {1, 1, 1, 1, 1}, 0, 4)), "\0\0\0\0"),
   "tensor 'w': shape has 5 dimensions (at most 4 are supported)"},
  {"negative dim", file(one(entry("w", "F32", {-1}, 0, 4)), "\0\0\0\0"),
   "tensor 'w': shape[0] is not a non-negative integer"},
  {"fractional dim", file('{"w":{"dtype":"F32","shape":[2,1.5],"data_offsets":[0,4]}}'),
   "tensor 'w': shape[1] is not a non-negative integer"},
  {"dims whose product overflows",
   file(one(entry("w", "F32", {1 << 40, 1 << 40}, 0, 4)), "\0\0\0\0"),
   "tensor 'w': the number of elements of its shape overflows"},
  {"data_offsets missing", file('{"w":{"dtype":"F32","shape":[1]}}'),
   "tensor 'w': data_offsets is missing or not two non-negative integers"},
  {"data_offsets of 3", file('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}'),
   "tensor 'w': data_offsets is missing or not two non-negative integers"},
  {"negative data offset", file(one(entry("w", "F32", {1}, -4, 0))),
   "tensor 'w': data_offsets is missing or not two non-negative integers"},
  {"begin after end", file(one(entry("w", "F32", {1}, 8, 4)), string.rep("\0", 8)),
   "tensor 'w': data_offsets [8, 4]: begin is after end"},
  {"data past the end", file(one(entry("w", "F32", {2}, 0, 8)), "\0\0\0\0"),
   "tensor 'w': data_offsets [0, 8] are past the end of the data section (4 bytes)"},
  {"size not numel * element size", file(one(entry("w", "F32", {3}, 0, 8)), string.rep("\0", 8)),
   "tensor 'w': data_offsets [0, 8] hold 8 bytes but 3 F32 elements need 12"},
  -- the tensors must tile the data section, as the format's library requires
  {"overlapping data", file("{" .. entry("a", "F32", {2}, 0, 8) .. "," .. entry("b", "F32", {2}, 4, 12) .. "}",
                            string.rep("\0", 12)),
   "tensor 'b': data_offsets [4, 12] overlap tensor 'a', which ends at 8"},
  {"the same data twice", file("{" .. entry("a", "F32", {2}, 0, 8) .. "," .. entry("b", "F32", {2}, 0, 8) .. "}",
                               string.rep("\0", 8)),
   "tensor 'b': data_offsets [0, 8] overlap tensor 'a', which ends at 8"},
  {"a gap between tensors", file("{" .. entry("a", "F32", {1}, 0, 4) .. "," .. entry("b", "F32", {1}, 8, 12) .. "}",
                                 string.rep("\0", 12)),
   "tensor 'b': data_offsets [8, 12] leave bytes 4..7 of the data section to no tensor"},
  {"data not starting at 0", file(one(entry("w", "F32", {1}, 4, 8)), string.rep("\0", 8)),
   "tensor 'w': data_offsets [4, 8] leave bytes 0..3 of the data section to no tensor"},
  {"bytes after the last tensor", file(one(entry("w", "F32", {1}, 0, 4)), string.rep("\0", 5)),
   "the data section has 5 bytes, the tensors hold 4"},
  {"data without tensors", file("{}", "\0"), "the data section has 1 bytes, the tensors hold 0"},
  {"integer too big for JSON",
   file('{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,99999999999999999999]}}'),
   "header: invalid JSON: too big integer near '99999999999999999999' (line 1, column 70)"},
}

describe("slm.safetensors hostile files", function()
  local path = os.tmpname()
  teardown(function() os.remove(path) end)

  for _, c in ipairs(cases) do
    it("refuses: " .. c[1], function()
      write_bytes(path, c[2])
      local f, msg = ST.open(path)
      assert.is_nil(f)
      assert.equals(path .. ": " .. c[3], msg)
    end)
  end

  it("refuses every truncation of a valid file", function()
    local bad = {}
    for n = 0, #VALID - 1 do
      write_bytes(path, VALID:sub(1, n))
      local f, msg = ST.open(path)
      if f or msg:sub(1, #path + 2) ~= path .. ": " then bad[#bad + 1] = n end
      if f then f:close() end
    end
    assert.same({}, bad)
  end)
end)
