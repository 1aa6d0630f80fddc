-- Quantized dtypes seen from Lua: conversion to a block format and back goes
-- through the scalar reference quantizers (csrc/quant), so the bytes of a
-- hand-computed block must come out exactly.
local helpers = require "spec.helpers"
local core = require "slm.core"
local T = core.tensor

-- Q4_0 block: the largest magnitude, 4.0 at element 4, gives d = 4 / -8 =
-- -0.5 (fp16 0xb800) and level = trunc(x / d + 8.5), at most 15.
local q4_x = {
  0.0, 1.0, -1.0, 4.0, -3.5, 1.25, -3.75, 0.25,
  2.0, -2.0, 0.75, -0.75, 3.0, -3.0, 0.5, -0.5,
  1.5, -1.5, 2.5, -2.5, 3.5, 0.1, -0.1, 2.25,
  -2.25, 1.75, -1.75, 3.25, -3.25, 0.0, -4.0, 2.75,
}
local q4_levels = {
  8, 6, 10, 0, 15, 6, 15, 8, 4, 12, 7, 10, 2, 14, 7, 9,
  5, 11, 3, 13, 1, 8, 8, 4, 13, 5, 12, 2, 15, 8, 15, 3,
}

describe("quantized tensors", function()
  it("quantize a hand-computed q4_0 block byte for byte", function()
    local q = T.fromtable(q4_x, "f32", {1, 32}):to("q4_0")
    assert.equals("q4_0", q:dtype())
    local want = {string.char(0x00, 0xb8)}
    for j = 1, 16 do
      want[#want + 1] = string.char(q4_levels[j] | q4_levels[j + 16] << 4)
    end
    assert.equals(table.concat(want), q:tobytes())
    local y = q:to("f32"):row(1)
    for j = 1, 32 do
      assert.equals((q4_levels[j] - 8) * -0.5, y[j])
    end
  end)

  it("quantize a q8_0 block with round-half-away-from-zero", function()
    -- d = 127 * 0.0625 / 127 = 0.0625 (fp16 0x2c00); x / d = 2.5 -> 3
    local x = {}
    for j = 1, 32 do x[j] = (j - 17) * 0.0625 end
    x[1] = -127 * 0.0625
    x[2] = 2.5 * 0.0625
    local bytes = T.fromtable(x, "q8_0", {32}):tobytes()
    assert.equals(34, #bytes)
    assert.equals(0x2c00, string.unpack("<I2", bytes))
    assert.equals(-127, string.unpack("<i1", bytes, 3))
    assert.equals(3, string.unpack("<i1", bytes, 4))
    assert.equals(15, string.unpack("<i1", bytes, 34))
  end)

  it("round-trip every block format within its error bound", function()
    -- uniform data in [-1, 1): RMS error relative to RMS(x); measured
    -- q4_0 0.063, q4_1 0.059, q5_0 0.031, q5_1 0.029, q8_0 0.0037,
    -- q2_k 0.236, q3_k 0.123, q4_k 0.054, q5_k 0.027, q6_k 0.013,
    -- q8_k 0.0038; the bounds leave about 30 %
    local bounds = {
      q4_0 = 0.082, q4_1 = 0.077, q5_0 = 0.040, q5_1 = 0.038, q8_0 = 0.0049,
      q2_k = 0.31, q3_k = 0.16, q4_k = 0.070, q5_k = 0.036, q6_k = 0.017, q8_k = 0.005,
    }
    local x = helpers.randoms(1024, 7, 1.0)
    local t = T.fromtable(x, "f32", {4, 256})
    for name, bound in pairs(bounds) do
      local y = t:to(name):to("f32")
      local se, sx = 0, 0
      for r = 1, 4 do
        local row = y:row(r)
        for j = 1, 256 do
          local v = x[(r - 1) * 256 + j]
          se = se + (row[j] - v) ^ 2
          sx = sx + v * v
        end
      end
      local rel = math.sqrt(se / sx)
      assert.is_true(rel < bound, name .. " relative RMS error " .. rel)
    end
  end)
end)

describe("dtype facts", function()
  it("come from the C traits table (block, bytes, fallback, file type)", function()
    local d = core.dtypes
    assert.same({ id = 12, block_size = 256, type_size = 144, quantized = true, fallback = "q5_0", file_type = 15 },
                d.q4_k)
    assert.same({ id = 8, block_size = 32, type_size = 34, quantized = true, file_type = 7 }, d.q8_0)
    assert.same({ id = 1, block_size = 1, type_size = 2, quantized = false, file_type = 1 }, d.f16)
    assert.same({ id = 15, block_size = 256, type_size = 292, quantized = true }, d.q8_k)   -- no file holds it
    assert.same({ q2_k = "q4_0", q3_k = "q4_0", q4_k = "q5_0", q5_k = "q5_1", q6_k = "q8_0" },
                (function()
                  local fb = {}
                  for name, t in pairs(d) do fb[name] = t.fallback end
                  return fb
                end)())
    assert.same({ id = 15, dtype = "q4_k" }, core.file_types.q4_k_m)
    assert.same({ id = 11, dtype = "q3_k" }, core.file_types.q3_k_s)
    assert.same({ id = 32, dtype = "bf16" }, core.file_types.bf16)
    -- slm.gguf.FILE_TYPE is a view of the same numbers
    for name, t in pairs(d) do assert.equal(t.file_type, require("slm.gguf").FILE_TYPE[name], name) end
  end)

  it("dtype_for_row falls back as the reference quantizer does", function()
    local cases = {
      { "q4_k", 512, "q4_k" }, { "q4_k", 64, "q5_0" }, { "q4_k", 172, "f16" }, { "q5_k", 96, "q5_1" },
      { "q6_k", 32, "q8_0" }, { "q2_k", 64, "q4_0" }, { "q3_k", 64, "q4_0" }, { "q4_0", 172, "f16" },
      { "q8_0", 64, "q8_0" }, { "f16", 7, "f16" }, { "f32", 7, "f32" },
    }
    for _, c in ipairs(cases) do assert.equal(c[3], core.dtype_for_row(c[1], c[2]), c[1] .. " x " .. c[2]) end
    assert.has_error(function() core.dtype_for_row("q9", 32) end,
                     "bad argument #1 to 'dtype_for_row' (unknown dtype 'q9' (valid: f32, f16, q4_0, q4_1, "
                     .. "q5_0, q5_1, q8_0, q8_1, q2_k, q3_k, q4_k, q5_k, q6_k, q8_k, i8, i16, i32, bf16))")
  end)
end)
