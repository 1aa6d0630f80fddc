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
