-- slm.tensor: constructors, views, copies, conversions, element access,
-- printing and every misuse error (exact text).
local T = require "slm.tensor"
local helpers = require "spec.helpers"

-- The message of the error f(...) raises, without its "file:line: ".
local function errmsg(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return (tostring(e):gsub("^[^:]+:%d+: ", ""))
end

local DTYPES = "f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0, q8_1, q2_k, q3_k, q4_k, "
            .. "q5_k, q6_k, q8_k, i8, i16, i32, bf16"

-- float32 value of x (what the tensor stores from a Lua number)
local f32 = helpers.f32   -- float32 rounding of a Lua number

-- Independent reference of float32 -> binary16/bfloat16 with round to
-- nearest even, by value: the spacing of the target format at x's binade
-- is 2^(e - mant_bits) (fixed at the smallest normal exponent below it),
-- x / spacing is exact in a double and is rounded half-to-even.
local function round_to(x, mant_bits, min_exp, max_finite)
  x = f32(x)
  if x ~= x then return x end
  local a = math.abs(x)
  if a == 0 or a == math.huge then return x end
  local bits = string.unpack("<I4", string.pack("<f", a))
  local e = ((bits >> 23) & 0xff) - 127
  if e < min_exp then e = min_exp end
  local ulp = 2.0 ^ (e - mant_bits)
  local q = a / ulp
  local f = math.floor(q)
  local r = q - f
  if r > 0.5 or (r == 0.5 and f % 2 == 1) then f = f + 1 end
  local v = f * ulp
  if v > max_finite then v = math.huge end
  return x < 0 and -v or v
end
local function ref_f16(x) return round_to(x, 10, -14, 65504) end
local function ref_bf16(x) return round_to(x, 7, -126, (2 - 2 ^ -7) * 2.0 ^ 127) end

-- binary16 bits -> value, decoded by hand
local function half_value(h)
  local s = (h & 0x8000) ~= 0 and -1 or 1
  local e, m = (h >> 10) & 0x1f, h & 0x3ff
  if e == 0x1f then return m == 0 and s * math.huge or 0 / 0 end
  if e == 0 then return s * m * 2.0 ^ -24 end
  return s * (1 + m / 1024) * 2.0 ^ (e - 15)
end

describe("slm.tensor", function()
  describe("constructors", function()
    it("zeros(shape [, dtype]) defaults to f32", function()
      local t = T.zeros({2, 3})
      assert.equal("f32", t:dtype())
      assert.same({2, 3}, t:shape())
      assert.same({{0, 0, 0}, {0, 0, 0}}, t:totable())
      assert.equal("f16", T.zeros({4}, "F16"):dtype())
    end)

    local zeros_errors = {
      {{}, nil, "bad argument #1 to 'zeros' (shape must have 1 to 4 dims, got 0)"},
      {{1, 2, 3, 4, 5}, nil, "bad argument #1 to 'zeros' (shape must have 1 to 4 dims, got 5)"},
      {{2, 0}, nil, "dimension 2 has size 0 (must be positive)"},
      {{2, -3}, nil, "dimension 2 has size -3 (must be positive)"},
      {{2, 1.5}, nil, "bad argument #1 to 'zeros' (shape[2] is not an integer)"},
      {{2, "3"}, nil, "bad argument #1 to 'zeros' (shape[2] is not an integer)"},
      {{2, 33}, "q4_0", "last dimension 33 is not a multiple of the q4_0 block size 32"},
      {{256, 128}, "q4_k", "last dimension 128 is not a multiple of the q4_k block size 256"},
      {{2, 3}, "q9_0", "bad argument #2 to 'zeros' (unknown dtype 'q9_0' (valid: "
                         .. DTYPES .. "))"},
      {{2 ^ 31, 2 ^ 31, 2 ^ 31}, nil, "shape overflows: number of elements too large"},
    }
    for i, c in ipairs(zeros_errors) do
      it("zeros refuses bad shapes and dtypes (case " .. i .. ")", function()
        assert.equal(c[3], errmsg(function() local t = T.zeros(c[1], c[2]) return t end))
      end)
    end

    it("new(nested) takes the shape from the nesting", function()
      local t = T.new({{1, 2, 3}, {4, 5, 6}})
      assert.same({2, 3}, t:shape())
      assert.same({{1, 2, 3}, {4, 5, 6}}, t:totable())
      local u = T.new({{{1}, {2}}, {{3}, {4}}}, "i16")
      assert.same({2, 2, 1}, u:shape())
      assert.same({{{1}, {2}}, {{3}, {4}}}, u:totable())
      assert.equal("integer", math.type(u:get(2, 2, 1)))
    end)

    it("new(flat, dtype, shape) fills in row-major order", function()
      local t = T.new({1, 2, 3, 4, 5, 6}, "bf16", {3, 2})
      assert.same({{1, 2}, {3, 4}, {5, 6}}, t:totable())
    end)

    local new_errors = {
      {{"x"}, "bad argument #1 to 'new' (table expected, got string)"},
      {{{}}, "bad argument #1 to 'new' (empty table at depth 1)"},
      {{{{1, 2}, {3}}}, "bad argument #1 to 'new' (ragged table: data[2] has length 1, expected 2)"},
      {{{{1, 2}, 3}}, "bad argument #1 to 'new' (ragged table: data[2] is a number, expected a table)"},
      {{{1, true}}, "bad argument #1 to 'new' (data[2] is a boolean, expected a number)"},
      {{{{{{{1}}}}}}, "bad argument #1 to 'new' (more than 4 nested levels)"},
      {{{1, 2}, "x9"}, "bad argument #2 to 'new' (unknown dtype 'x9' (valid: " .. DTYPES .. "))"},
      {{{1, 2, 3}, "f32", {2, 2}}, "new: 3 values for 4 elements"},
      {{{1, {2}}, "f32", {2}}, "bad argument #1 to 'new' (data[2] is a table, expected a number "
                               .. "(a flat table goes with a shape))"},
      {{{1, 2}, "f32", 2}, "bad argument #3 to 'new' (shape must be a table)"},
      {{{1.5, 2}, "i32"}, "value 1.5 is not an integer in [-2147483648, 2147483647] for i32"},
      {{{300}, "i8"}, "value 300 is not an integer in [-128, 127] for i8"},
    }
    for i, c in ipairs(new_errors) do
      it("new refuses malformed data (case " .. i .. ")", function()
        assert.equal(c[2], errmsg(T.new, table.unpack(c[1], 1, 3)))
      end)
    end

    it("frombytes copies the bytes and tobytes gives them back", function()
      local bytes = string.pack("<ffffff", 1, 2, 3, 4, 5, 6)
      local t = T.frombytes(bytes, "f32", {2, 3})
      assert.same({{1, 2, 3}, {4, 5, 6}}, t:totable())
      assert.equal(bytes, t:tobytes())
      -- a transposed view serializes in its own row-major order
      assert.equal(string.pack("<ffffff", 1, 4, 2, 5, 3, 6), t:t():tobytes())
      local i = T.frombytes(string.pack("<i4i4", -7, 2147483647), "i32", {2})
      assert.same({-7, 2147483647}, i:totable())
    end)

    it("frombytes checks the size", function()
      assert.equal("frombytes: got 3 bytes, a f32 tensor of shape 2x3 needs 24",
                   errmsg(T.frombytes, "abc", "f32", {2, 3}))
      assert.equal("frombytes: got 0 bytes, a q4_0 tensor of shape 32 needs 18",
                   errmsg(T.frombytes, "", "q4_0", {32}))
    end)
  end)

  describe("inspection", function()
    local cases = {
      -- dtype, shape, nbytes
      {"f32", {2, 3}, 24}, {"f16", {5}, 10}, {"bf16", {2, 2, 2}, 16}, {"i8", {7}, 7},
      {"i16", {3, 1}, 6}, {"i32", {1, 1, 1, 2}, 8}, {"q4_0", {3, 64}, 3 * 2 * 18},
      {"q8_0", {32}, 34}, {"q4_k", {2, 512}, 2 * 2 * 144}, {"q6_k", {256}, 210},
    }
    for _, c in ipairs(cases) do
      it(c[1] .. " " .. table.concat(c[2], "x"), function()
        local t = T.zeros(c[2], c[1])
        assert.equal(c[1], t:dtype())
        assert.same(c[2], t:shape())
        assert.same(c[2], t:size())
        assert.equal(#c[2], t:dim())
        local n = 1
        for _, s in ipairs(c[2]) do n = n * s end
        assert.equal(n, t:numel())
        assert.equal(c[2][1], #t)
        assert.equal(c[2][#c[2]], t:size(#c[2]))
        assert.equal(c[3], t:nbytes())
        assert.is_true(t:is_contiguous())
        assert.is_false(t:is_readonly())
      end)
    end

    it("strides are in elements, outermost first", function()
      local t = T.zeros({2, 3, 4})
      assert.same({12, 4, 1}, t:stride())
      assert.same({4, 1, 12}, t:transpose(1, 3):transpose(1, 2):stride())
    end)

    it("size(dim) checks the dim", function()
      local t = T.zeros({2, 3})
      assert.equal("bad argument #1 to 'size' (dim 3 out of range 1..2)",
                   errmsg(function() return t:size(3) end))
      assert.equal("bad argument #1 to 'size' (dim 0 out of range 1..2)",
                   errmsg(function() return t:size(0) end))
    end)

    it("the C tostring is the short form", function()
      assert.equal("slm.Tensor(q4_0, 49152x576)", T.short(T.zeros({49152, 576}, "q4_0")))
    end)
  end)

  describe("views", function()
    local function range_tensor(shape, dtype)
      local n = 1
      for _, s in ipairs(shape) do n = n * s end
      local v = {}
      for i = 1, n do v[i] = i end
      return T.new(v, dtype or "f32", shape)
    end

    local view_cases = {
      {"narrow rows", function(t) return t:narrow(1, 2, 2) end,
       {{5, 6, 7, 8}, {9, 10, 11, 12}}},
      {"narrow cols", function(t) return t:narrow(2, 4, 1) end, {{4}, {8}, {12}}},
      {"select row", function(t) return t:select(1, 3) end, {9, 10, 11, 12}},
      {"select col", function(t) return t:select(2, 2) end, {2, 6, 10}},
      {"transpose", function(t) return t:transpose(1, 2) end,
       {{1, 5, 9}, {2, 6, 10}, {3, 7, 11}, {4, 8, 12}}},
      {"t()", function(t) return t:t():narrow(1, 4, 1) end, {{4, 8, 12}}},
      {"reshape table", function(t) return t:reshape({2, 6}) end,
       {{1, 2, 3, 4, 5, 6}, {7, 8, 9, 10, 11, 12}}},
      {"view with -1", function(t) return t:view(-1, 2, 3) end,
       {{{1, 2, 3}, {4, 5, 6}}, {{7, 8, 9}, {10, 11, 12}}}},
      {"flat", function(t) return t:reshape(12):narrow(1, 11, 2) end, {11, 12}},
      {"t[i]", function(t) return t[2] end, {5, 6, 7, 8}},
      {"chained", function(t) return t:t():narrow(2, 2, 2):select(1, 3) end, {7, 11}},
    }
    for _, c in ipairs(view_cases) do
      it(c[1], function()
        local t = range_tensor({3, 4})
        local v = c[2](t)
        assert.same(c[3], v:totable())
        assert.is_true(v:shares_storage(t))
      end)
    end

    it("t[i] on a 1-D tensor is a number; t[i] = v sets it", function()
      local t = range_tensor({3, 4})
      assert.equal(7, t[2][3])
      t[2][3] = 70
      t[3] = T.new({-1, -2, -3, -4})
      assert.same({{1, 2, 3, 4}, {5, 6, 70, 8}, {-1, -2, -3, -4}}, t:totable())
      assert.is_nil(t.nosuchmethod)
    end)

    it("writes through a view are visible in the parent", function()
      local t = range_tensor({2, 3, 4})
      local v = t:select(2, 2):t()          -- 4x2, element (j, i) = t[i][2][j]
      v:set(3, 2, -5)
      assert.equal(-5, t:get(2, 2, 3))
      v:narrow(1, 1, 1):copy_(T.new({{100, 200}}))
      assert.equal(100, t:get(1, 2, 1))
      assert.equal(200, t:get(2, 2, 1))
    end)

    it("views outlive their parent", function()
      local t = range_tensor({4, 4})
      local v = t:narrow(1, 3, 2):t()
      t:free()
      t = nil
      collectgarbage()
      collectgarbage()
      assert.same({{9, 13}, {10, 14}, {11, 15}, {12, 16}}, v:totable())
    end)

    local view_errors = {
      {function(t) return t:narrow(3, 1, 1) end,
       "bad argument #1 to 'narrow' (dim 3 out of range 1..2)"},
      {function(t) return t:narrow(1, 4, 1) end,
       "bad argument #2 to 'narrow' (index 4 out of range 1..3)"},
      {function(t) return t:narrow(2, 3, 3) end,
       "bad argument #3 to 'narrow' (length 3 out of range 1..2)"},
      {function(t) return t:narrow(2, 1, 0) end,
       "bad argument #3 to 'narrow' (length 0 out of range 1..4)"},
      {function(t) return t:select(1, 0) end,
       "bad argument #2 to 'select' (index 0 out of range 1..3)"},
      {function(t) return t:select(1, 1):select(1, 1) end,
       "select: cannot select from a 1-D tensor (a tensor has at least one dim); "
       .. "read the element instead"},
      {function(t) return t:transpose(1, 3) end,
       "bad argument #2 to 'transpose' (dim 3 out of range 1..2)"},
      {function(t) return t:reshape(3, 5) end,
       "reshape: shape does not match the 12 elements of the tensor"},
      {function(t) return t:reshape(-1, 5) end,
       "reshape: cannot infer dim 0: 12 elements are not a multiple of 5"},
      {function(t) return t:reshape(-1, -1) end,
       "reshape: dim 1 has size -1 (must be positive, or -1 once)"},
      {function(t) return t:t():reshape(12) end,
       "reshape: tensor is not contiguous; call contiguous() first"},
      {function(t) return t:reshape(1, 1, 1, 1, 12) end, "reshape: expected 1 to 4 sizes, got 5"},
      {function(t) return t:select(1, 1):t() end, "t() expects a 2-D tensor, got 1-D (use transpose)"},
      {function(t) return t[4] end, "bad argument #2 to 'select' (index 4 out of range 1..3)"},
      {function(t) t.x = 1 end, "cannot set field 'x' of a tensor"},
      {function(t) t[1] = 5 end, "t[1] = v needs a tensor for a 2-D tensor, got number"},
      {function(t) return t:narrow("a", 1, 1) end,
       "bad argument #1 to 'narrow' (number expected, got string)"},
      {function(t) return t.narrow({}, 1, 1, 1) end,
       "bad argument #1 to 'narrow' (slm.Tensor expected, got table)"},
    }
    for i, c in ipairs(view_errors) do
      it("misuse is a clear error (case " .. i .. ")", function()
        assert.equal(c[2], errmsg(c[1], range_tensor({3, 4})))
      end)
    end

    it("contiguous() copies only non-contiguous tensors", function()
      local t = range_tensor({3, 4})
      assert.equal(t, t:contiguous())
      local c = t:t():contiguous()
      assert.is_true(c:is_contiguous())
      assert.is_false(c:shares_storage(t))
      assert.same(t:t():totable(), c:totable())
    end)
  end)

  describe("copies and conversions", function()
    it("copy_ works across dtypes and shapes and returns self", function()
      local src = T.new({{1, 2, 3}, {4, 5, 6}}, "f16")
      local dst = T.zeros({3, 2}, "bf16")
      assert.equal(dst, dst:copy_(src))
      assert.same({{1, 2}, {3, 4}, {5, 6}}, dst:totable())
      local i = T.new({7, -8, 9}, "i8")
      assert.same({7, -8, 9}, T.zeros({3}):copy_(i):totable())
    end)

    it("copy_ between column slices copies every row (the row-at-a-time path)", function()
      local wide = T.new({{1, 2, 3, 4, 5}, {6, 7, 8, 9, 10}, {11, 12, 13, 14, 15}})
      local dst = T.zeros({3, 2})
      dst:copy_(wide:narrow(2, 3, 2))
      assert.same({{3, 4}, {8, 9}, {13, 14}}, dst:totable())
      local back = T.zeros({3, 5})
      back:narrow(2, 2, 2):copy_(dst)
      assert.same({{0, 3, 4, 0, 0}, {0, 8, 9, 0, 0}, {0, 13, 14, 0, 0}}, back:totable())
      -- rows of other lengths take the element path
      assert.same({{1, 2, 3, 4}, {5, 6, 7, 8}}, T.zeros({2, 4}):copy_(T.new({{1, 2}, {3, 4}, {5, 6}, {7, 8}})):totable())
    end)

    it("copy_ of a tensor into its own transpose is not corrupted", function()
      local t = T.new({{1, 2}, {3, 4}})
      t:copy_(t:t())
      assert.same({{1, 3}, {2, 4}}, t:totable())
    end)

    local copy_errors = {
      {function() return T.zeros({2, 3}):copy_(T.zeros({5})) end,
       "copy: size mismatch: destination has 6 elements, source 5"},
      {function() return T.zeros({2}, "i32"):copy_(T.zeros({2})) end,
       "copy: cannot convert f32 to i32"},
      {function() return T.zeros({2}):to("i16") end, "convert: cannot convert f32 to i16"},
      {function() return T.zeros({2}):to("f64") end,
       "bad argument #1 to 'to' (unknown dtype 'f64' (valid: " .. DTYPES .. "))"},
      {function() return T.zeros({2}):copy_(5) end,
       "bad argument #1 to 'copy_' (slm.Tensor expected, got number)"},
      {function() return T.zeros({2, 31}):to("q8_0") end,
       "last dimension 31 is not a multiple of the q8_0 block size 32"},
    }
    for i, c in ipairs(copy_errors) do
      it("copy/convert misuse (case " .. i .. ")", function()
        assert.equal(c[2], errmsg(c[1]))
      end)
    end

    it("clone() is a separate copy", function()
      local t = T.new({1, 2, 3})
      local c = t:clone()
      c:set(1, 10)
      assert.same({1, 2, 3}, t:totable())
      assert.same({10, 2, 3}, c:totable())
    end)

    it("f32 -> f16 -> f32 is exact on representable values", function()
      local exact = {0, 1, -2, 0.5, 65504, -65504, 2 ^ -24, 2 ^ -14, 1 + 2 ^ -10, 3 * 2 ^ -20,
                     1023.5, 2048, -0.375}
      assert.same(exact, T.new(exact):to("f16"):to("f32"):totable())
      assert.same(exact, T.new(exact, "f16"):totable())
    end)

    it("f32 -> bf16 -> f32 is exact on representable values", function()
      local exact = {0, 1, -3, 0.5, 2 ^ 100, -(2 ^ -100), 1 + 2 ^ -7, 255, 2 ^ -126, 2 ^ -133}
      assert.same(exact, T.new(exact):to("bf16"):to("f32"):totable())
    end)

    it("f32 -> f16 rounds to nearest even (independent reference)", function()
      local xs = {1 + 2 ^ -11, 1 + 3 * 2 ^ -11, 65519, 65520, -70000, 2 ^ -25, 3 * 2 ^ -26,
                  2 ^ -26, 0.1, -1 / 3, 1e-6, 6e-8, 1e30, 0 / 0}
      for _, x in ipairs(helpers.randoms(300, 11, 4)) do xs[#xs + 1] = x end
      for _, x in ipairs(helpers.randoms(100, 12, 1e-4)) do xs[#xs + 1] = x end
      for _, x in ipairs(helpers.randoms(100, 13, 6e4)) do xs[#xs + 1] = x end
      local got = T.new(xs):to("f16"):totable()
      local bad = 0
      for i, x in ipairs(xs) do
        local want = ref_f16(x)
        if not (got[i] == want or (got[i] ~= got[i] and want ~= want)) then
          bad = bad + 1
          print(string.format("f16(%.9g): got %.9g, want %.9g", x, got[i], want))
        end
      end
      assert.equal(0, bad)
      assert.equal(1, got[1])              -- tie to even (down)
      assert.equal(1 + 2 ^ -9, got[2])     -- tie to even (up)
      assert.equal(math.huge, got[4])
    end)

    it("f32 -> bf16 rounds to nearest even (independent reference)", function()
      local xs = {1 + 2 ^ -8, 1 + 3 * 2 ^ -8, 0.1, -1 / 3, 3e38, 1e-40}
      for _, x in ipairs(helpers.randoms(300, 21, 1e3)) do xs[#xs + 1] = x end
      local got = T.new(xs):to("bf16"):totable()
      for i, x in ipairs(xs) do assert.equal(ref_bf16(x), got[i]) end
      assert.equal(1, got[1])
      assert.equal(1 + 2 ^ -6, got[2])
    end)

    it("f16 -> f32 decodes every kind of half (hand decoder)", function()
      local bits = {0x0000, 0x8000, 0x0001, 0x03ff, 0x0400, 0x3c00, 0xc000, 0x7bff, 0x7c00,
                    0xfc00, 0x3555, 0x1234, 0x8abc}
      for _, h in ipairs(helpers.randoms(64, 31, 1)) do
        bits[#bits + 1] = math.floor((h + 1) * 32767.5) & 0x7bff
      end
      local parts = {}
      for i, b in ipairs(bits) do parts[i] = string.pack("<I2", b) end
      local got = T.frombytes(table.concat(parts), "f16", {#bits}):to("f32"):totable()
      for i, b in ipairs(bits) do assert.equal(half_value(b), got[i]) end
    end)
  end)

  describe("quantized tensors", function()
    -- max |x - dequant(quant(x))| / max |x| and RMS / max |x| on 4x512
    -- values in [-3, 3): loose bounds, byte exactness is tested elsewhere
    local bounds = {
      q8_0 = {0.008, 0.004}, q8_1 = {0.008, 0.004}, q8_k = {0.008, 0.004},
      q6_k = {0.03, 0.012}, q5_0 = {0.1, 0.03}, q5_1 = {0.06, 0.03},
      q5_k = {0.08, 0.03}, q4_0 = {0.2, 0.06}, q4_1 = {0.12, 0.06}, q4_k = {0.12, 0.06},
      q3_k = {0.35, 0.12}, q2_k = {0.5, 0.22},
    }
    for dtype, b in pairs(bounds) do
      it(dtype .. " round trip error is bounded", function()
        local x = helpers.randoms(4 * 512, 7, 3)
        local q = T.new(x, "f32", {4, 512}):to(dtype)
        assert.equal(dtype, q:dtype())
        local back = q:to("f32")
        local maxe, maxa, se = 0, 0, 0
        for r = 1, 4 do
          local row = back:row(r)
          assert.same(row, q:row(r))       -- row() dequantizes
          for j = 1, 512 do
            local v = x[(r - 1) * 512 + j]
            local e = math.abs(row[j] - v)
            maxe, se = math.max(maxe, e), se + e * e
            maxa = math.max(maxa, math.abs(v))
          end
        end
        assert.is_true(maxe / maxa <= b[1], string.format("max error %.4f", maxe / maxa))
        assert.is_true(math.sqrt(se / 2048) / maxa <= b[2])
        -- same-dtype copies are byte exact
        assert.equal(q:tobytes(), q:clone():tobytes())
        local rowbytes = q:nbytes() // 4
        assert.equal(q:tobytes():sub(rowbytes + 1), q:narrow(1, 2, 3):clone():tobytes())
      end)
    end

    it("views keep whole blocks on the last dim", function()
      local x = helpers.randoms(3 * 64, 5, 1)
      local q = T.new(x, "f32", {3, 64}):to("q8_0")
      local n = q:narrow(2, 33, 32)
      assert.same(q:narrow(1, 2, 1):to("f32"):narrow(2, 33, 32):totable()[1],
                  n:narrow(1, 2, 1):totable()[1])
      assert.same(q:to("f32"):select(1, 3):totable(), q:select(1, 3):totable())
      assert.equal(q:get(3, 40), q:to("f32"):get(3, 40))
      assert.equal("bad argument #2 to 'narrow' (start 2 is not at a q8_0 block boundary "
                   .. "(1 + a multiple of 32))", errmsg(function() return q:narrow(2, 2, 32) end))
      assert.equal("bad argument #3 to 'narrow' (length 16 is not a multiple of the q8_0 "
                   .. "block size 32)", errmsg(function() return q:narrow(2, 1, 16) end))
      assert.equal("select: cannot select along the last dim of a q8_0 tensor (it is "
                   .. "stored in blocks of 32); convert it first", errmsg(function() return q:select(2, 1) end))
      assert.equal("transpose: cannot move the last dim of a q8_0 tensor (its blocks are "
                   .. "contiguous); convert it first", errmsg(function() return q:t() end))
      assert.equal("last dimension 16 is not a multiple of the q8_0 block size 32",
                   errmsg(function() return q:reshape(12, 16) end))
      assert.same({6, 32}, q:reshape(6, 32):shape())
    end)

    it("set requantizes the element's block only", function()
      local x = helpers.randoms(128, 9, 1)
      local q = T.new(x, "q4_0", {2, 64})
      local before = q:clone()
      assert.is_true(q:get(2, 40) > 0.7)   -- x[104] = 0.7685
      q:set(2, 40, -0.5)
      -- within half a step (|x| < 1, so the q4_0 step is <= 1/8)
      assert.is_true(math.abs(q:get(2, 40) + 0.5) <= 1 / 16)
      local a, b = q:tobytes(), before:tobytes()
      -- blocks of 18 bytes: (2, 40) is in block 4 (bytes 55..72)
      assert.equal(b:sub(1, 54), a:sub(1, 54))
      assert.not_equal(b:sub(55, 72), a:sub(55, 72))
    end)

    it("prints dequantized values", function()
      local q = T.new({{0.5, -1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}, "q8_0")
      local s = tostring(q)
      -- 2 / 127 steps: 0.5 -> 32 steps = 0.5039
      assert.matches("^ 0%.5039  %-1%.0078   1%.9999      %.%.%.   0%.0000", s)
      assert.equal(tostring(q:to("f32")):gsub("f32", "q8_0"), s)
    end)
  end)

  describe("elements", function()
    it("get/set are 1-based and checked", function()
      local t = T.zeros({2, 3})
      t:set(2, 3, 1.5)
      assert.equal(1.5, t:get(2, 3))
      assert.equal(t, t:set(1, 1, -1))
      assert.same({{-1, 0, 0}, {0, 0, 1.5}}, t:totable())
      assert.equal("bad argument #2 to 'get' (index 4 out of range 1..3)",
                   errmsg(function() return t:get(1, 4) end))
      assert.equal("bad argument #1 to 'set' (index 0 out of range 1..2)",
                   errmsg(function() return t:set(0, 1, 5) end))
      assert.equal("get: a 2-D tensor needs 2 indices, got 1", errmsg(function() return t:get(1) end))
      assert.equal("set: a 2-D tensor needs 2 indices, got 3", errmsg(function() return t:set(1, 1, 1, 5) end))
      assert.equal("set: expected 2 indices and a value", errmsg(function() return t:set() end))
      assert.equal("bad argument #3 to 'set' (number expected, got string)",
                   errmsg(function() return t:set(1, 1, "x") end))
    end)

    it("row(i) reads row i of the (numel / last) x last matrix", function()
      local t = T.new({{{1, 2}, {3, 4}}, {{5, 6}, {7, 8}}}, "f16")
      assert.same({5, 6}, t:row(3))
      assert.same({3, 7}, t:transpose(1, 2):transpose(2, 3):row(3))
      assert.equal("bad argument #1 to 'row' (index 5 out of range 1..4)",
                   errmsg(function() return t:row(5) end))
    end)

    it("integer dtypes hold their values exactly", function()
      local t = T.zeros({2}, "i32")
      t:set(1, 2147483647)
      t:set(2, -2147483648)
      assert.same({2147483647, -2147483648}, t:totable())
      assert.equal("value 2147483648 is not an integer in [-2147483648, 2147483647] for i32",
                   errmsg(function() return t:set(1, 2147483648) end))
    end)

    it("set rounds through the dtype", function()
      local t = T.zeros({1}, "f16")
      t:set(1, 0.1)
      assert.equal(ref_f16(0.1), t:get(1))
    end)
  end)

  describe("read-only storage", function()
    -- tensors of a GGUF file view its read-only mapping (needs slm.gguf
    -- and the shared fixtures)
    local function open_fixture()
      local path, msg = helpers.fixture("gguf/dense-q4_0.gguf")
      if not path then return nil, msg end
      local ok, gguf = pcall(require, "slm.gguf")
      if not ok then return nil, "slm.gguf not available" end
      return assert(gguf.open(path))
    end

    it("refuses set and copy_ into a file mapping; clone() is writable", function()
      local f, msg = open_fixture()
      if not f then
        pending(msg)
        return
      end
      local w
      for _, info in ipairs(f.tensors) do
        if info.dtype == "q4_0" then w = f:tensor(info.name) break end
      end
      f:close()
      local v = w:narrow(1, 2, 2)
      collectgarbage()
      assert.is_true(w:is_readonly() and v:is_readonly())
      local ro = "tensor is read-only (it views a read-only file mapping); "
              .. "clone() it for a writable copy"
      assert.equal(ro, errmsg(function() return v:set(1, 1, 0) end))
      assert.equal(ro, errmsg(function() return v:copy_(v:clone()) end))
      local c = v:clone()
      assert.is_false(c:is_readonly())
      assert.equal(v:tobytes(), c:tobytes())
      c:set(1, 1, 0.25)
      assert.same(v:row(1), w:row(2))
      assert.matches("%[slm%.Tensor q4_0 2x%d+%]$", tostring(v))
    end)
  end)

  describe("lifetime", function()
    it("free, __close and __gc share one idempotent close", function()
      local t = T.zeros({2})
      t:free()
      t:free()
      assert.equal("attempt to use a freed tensor", errmsg(t.numel, t))
      assert.equal("attempt to use a freed tensor", errmsg(function() return t[1] end))
      assert.equal("slm.Tensor(freed)", tostring(t))
      local u
      do
        local c <close> = T.zeros({3})
        u = c
      end
      assert.equal("attempt to use a freed tensor", errmsg(u.dim, u))
    end)
  end)

  describe("printing", function()
    local cases = {
      {T.new({{1, 2, 3}, {4, 5, 6}}), "  1    2    3\n  4    5    6\n[slm.Tensor f32 2x3]"},
      {T.new({1.5, -2.25, 3}, "f16"), " 1.5000  -2.2500   3.0000\n[slm.Tensor f16 3]"},
      {T.new({0 / 0, 1 / 0, -1 / 0, 1e-9}),
       "       nan         inf        -inf  1.0000e-09\n[slm.Tensor f32 4]"},
      {T.new({{{1}, {2}}, {{3}, {4}}}, "i8"),
       "(1,.,.) =\n  1\n  2\n\n(2,.,.) =\n  3\n  4\n[slm.Tensor i8 2x2x1]"},
      {T.new({-0.0, 100000}), "     0  100000\n[slm.Tensor f32 2]"},
    }
    for i, c in ipairs(cases) do
      it("small tensors print all values (case " .. i .. ")", function()
        assert.equal(c[2], tostring(c[1]))
      end)
    end

    it("large tensors show their ends", function()
      local v = {}
      for i = 1, 2000 do v[i] = i end
      assert.equal("   1     2     3   ...  1998  1999  2000\n[slm.Tensor f32 2000]",
                   tostring(T.new(v)))
      local m = T.new(v, "f32", {40, 50})
      assert.equal(table.concat({
        "   1     2     3   ...    48    49    50",
        "  51    52    53   ...    98    99   100",
        " 101   102   103   ...   148   149   150",
        "...",
        "1851  1852  1853   ...  1898  1899  1900",
        "1901  1902  1903   ...  1948  1949  1950",
        "1951  1952  1953   ...  1998  1999  2000",
        "[slm.Tensor f32 40x50]"}, "\n"), tostring(m))
      local q = T.zeros({49152, 576}, "q4_0")
      local s = tostring(q)
      assert.equal(7, select(2, s:gsub("\n", "")))
      assert.matches("%[slm%.Tensor q4_0 49152x576%]$", s)
    end)
  end)
end)
