-- slm.core.ops: every op against a plain Lua implementation on random data,
-- matmul for every weight dtype against dequantize-then-Lua-dot, and the
-- exact error messages of misuse.
local helpers = require "spec.helpers"
local core = require "slm.core"
local T, ops = core.tensor, core.ops

-- The message of the error f(...) raises, without its "file:line: ".
local function errmsg(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return (tostring(e):gsub("^[^:]+:%d+: ", ""))
end

local f32 = helpers.f32   -- float32 rounding of a Lua number

local function tensor(vals, shape)
  return T.fromtable(vals, "f32", shape)
end

local values = helpers.f32_values   -- every value of an f32 tensor, flat

local function rand(n, seed, scale)
  local v = helpers.randoms(n, seed, scale)
  for i = 1, n do v[i] = f32(v[i]) end
  return v
end

-- max |a[i] - b[i]|
local function maxdiff(a, b)
  assert.equals(#b, #a)
  local m = 0
  for i = 1, #a do m = math.max(m, math.abs(a[i] - b[i])) end
  return m
end

-- erf by its Taylor series (|x| < 3 here; converges to double precision)
local function erf(x)
  local sum, term, n = x, x, 0
  repeat
    n = n + 1
    term = -term * x * x / n
    local add = term / (2 * n + 1)
    sum = sum + add
  until math.abs(add) < 1e-17 or n > 200
  return 2 / math.sqrt(math.pi) * sum
end

local function tanh(x)
  local e = math.exp(2 * x)
  return (e - 1) / (e + 1)
end

describe("ops", function()
  local R, N = 3, 40
  local xa, xb = rand(R * N, 11, 2), rand(R * N, 12, 2)
  local row = rand(N, 13, 1)

  it("add and mul: same shape, a broadcast row, in place", function()
    local a, b, r = tensor(xa, {R, N}), tensor(xb, {R, N}), tensor(row, {N})
    local want_add, want_mul, want_row = {}, {}, {}
    for i = 1, R * N do
      want_add[i] = xa[i] + xb[i]
      want_mul[i] = xa[i] * xb[i]
      want_row[i] = xa[i] + row[(i - 1) % N + 1]
    end
    assert.is_true(maxdiff(values(ops.add(a, b)), want_add) < 1e-6)
    assert.is_true(maxdiff(values(ops.mul(a, b)), want_mul) < 1e-6)
    assert.is_true(maxdiff(values(ops.add(a, r)), want_row) < 1e-6)
    assert.same(xa, values(a))                  -- the inputs are untouched
    assert.equals(a, ops.add_(a, r))
    assert.is_true(maxdiff(values(a), want_row) < 1e-6)
  end)

  it("scale", function()
    local want = {}
    for i = 1, R * N do want[i] = xa[i] * f32(0.3) end
    assert.is_true(maxdiff(values(ops.scale(tensor(xa, {R, N}), 0.3)), want) < 1e-6)
  end)

  it("rmsnorm with and without weight", function()
    local got = values(ops.rmsnorm(tensor(xa, {R, N}), tensor(row, {N}), 1e-5))
    local plain = values(ops.rmsnorm(tensor(xa, {R, N})))
    local want, want_plain = {}, {}
    for r = 0, R - 1 do
      local ss = 0
      for i = 1, N do ss = ss + xa[r * N + i] ^ 2 end
      local s = 1 / math.sqrt(ss / N + 1e-5)
      for i = 1, N do
        want[r * N + i] = xa[r * N + i] * s * row[i]
        want_plain[r * N + i] = xa[r * N + i] * s
      end
    end
    assert.is_true(maxdiff(got, want) < 1e-5)
    assert.is_true(maxdiff(plain, want_plain) < 1e-5)
  end)

  it("layernorm with weight and bias", function()
    local bias = rand(N, 14, 1)
    local got = values(ops.layernorm(tensor(xa, {R, N}), tensor(row, {N}), tensor(bias, {N}), 1e-5))
    local want = {}
    for r = 0, R - 1 do
      local m, v = 0, 0
      for i = 1, N do m = m + xa[r * N + i] end
      m = m / N
      for i = 1, N do v = v + (xa[r * N + i] - m) ^ 2 end
      v = v / N
      for i = 1, N do
        want[r * N + i] = (xa[r * N + i] - m) / math.sqrt(v + 1e-5) * row[i] + bias[i]
      end
    end
    assert.is_true(maxdiff(got, want) < 1e-5)
  end)

  it("mean_rows and l2norm (embedding pooling), a zero row, in place", function()
    -- hand-checked: rows (3, 4) and (1, 0): mean (2, 2); lengths 5 and 1
    assert.same({ 2, 2 }, values(ops.mean_rows(tensor({ 3, 4, 1, 0 }, { 2, 2 }))))
    assert.same({ f32(0.6), f32(0.8), 1, 0, 0, 0 },
                values(ops.l2norm(tensor({ 3, 4, 1, 0, 0, 0 }, { 3, 2 }))))
    local got = values(ops.mean_rows(tensor(xa, { R, N })))
    local want = {}
    for i = 1, N do
      local s = 0
      for r = 0, R - 1 do s = s + xa[r * N + i] end
      want[i] = s / R
    end
    assert.is_true(maxdiff(got, want) < 1e-6)
    local x = tensor(xa, { R, N })
    ops.l2norm_(x)
    got = values(x)
    for r = 0, R - 1 do
      local q = 0
      for i = 1, N do q = q + xa[r * N + i] ^ 2 end
      for i = 1, N do want[r * N + i] = xa[r * N + i] / math.sqrt(q) end
    end
    assert.is_true(maxdiff(got, want) < 1e-6)
  end)

  it("softmax over rows, stable for large values, in place", function()
    local big = {}
    for i = 1, R * N do big[i] = xa[i] * 300 end   -- exp would overflow unshifted
    local x = tensor(big, {R, N})
    local got = values(ops.softmax(x))
    local want = {}
    for r = 0, R - 1 do
      local m, s = -math.huge, 0
      for i = 1, N do m = math.max(m, f32(big[r * N + i])) end
      for i = 1, N do s = s + math.exp(f32(big[r * N + i]) - m) end
      for i = 1, N do want[r * N + i] = math.exp(f32(big[r * N + i]) - m) / s end
    end
    assert.is_true(maxdiff(got, want) < 1e-6)
    ops.softmax_(x)
    assert.same(got, values(x))
  end)

  it("silu, gelu (tanh) and gelu_erf", function()
    local x = tensor(xa, {R, N})
    local silu, gelu, gerf = values(ops.silu(x)), values(ops.gelu(x)), values(ops.gelu_erf(x))
    local ws, wg, we = {}, {}, {}
    for i = 1, R * N do
      local v = xa[i]
      ws[i] = v / (1 + math.exp(-v))
      wg[i] = 0.5 * v * (1 + tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v ^ 3)))
      we[i] = 0.5 * v * (1 + erf(v / math.sqrt(2)))
    end
    assert.is_true(maxdiff(silu, ws) < 1e-6)
    assert.is_true(maxdiff(gelu, wg) < 1e-6)
    assert.is_true(maxdiff(gerf, we) < 1e-6)
  end)

  -- RoPE reference: pair i of a head rotates by pos * scale * base^(-2i/n_rot)
  local function rope_ref(x, seq, heads, hd, pos, mode, base, scale, n_rot)
    local out = {}
    for i = 1, #x do out[i] = x[i] end
    for t = 0, seq - 1 do
      for h = 0, heads - 1 do
        local o = (t * heads + h) * hd
        for i = 0, n_rot // 2 - 1 do
          local th = pos[t + 1] * scale * base ^ (-2 * i / n_rot)
          local a, b
          if mode == "neox" then a, b = i, i + n_rot // 2 else a, b = 2 * i, 2 * i + 1 end
          local x0, x1 = x[o + a + 1], x[o + b + 1]
          out[o + a + 1] = x0 * math.cos(th) - x1 * math.sin(th)
          out[o + b + 1] = x0 * math.sin(th) + x1 * math.cos(th)
        end
      end
    end
    return out
  end

  it("rope, both layouts, partial rotation, scaling, positions as table or tensor", function()
    local seq, heads, hd = 3, 2, 16
    local x = rand(seq * heads * hd, 21, 1)
    local pos = {0, 5, 17}
    for _, c in ipairs({
      {mode = "normal", base = 10000, scale = 1, n_rot = 16},
      {mode = "neox", base = 1e6, scale = 1, n_rot = 16},
      {mode = "normal", base = 10000, scale = 0.25, n_rot = 8},
      {mode = "neox", base = 10000, scale = 0.5, n_rot = 12},
    }) do
      local want = rope_ref(x, seq, heads, hd, pos, c.mode, c.base, c.scale, c.n_rot)
      local got = values(ops.rope(tensor(x, {seq, heads, hd}), pos, c))
      assert.is_true(maxdiff(got, want) < 2e-5, c.mode .. " n_rot " .. c.n_rot)
      local pt = T.fromtable(pos, "i32", {seq})
      local xt = tensor(x, {seq, heads, hd})
      ops.rope_(xt, pt, c)
      assert.same(got, values(xt))
    end
    -- defaults: normal layout, base 10000, all dims
    local want = rope_ref(x, seq, heads, hd, pos, "normal", 10000, 1, hd)
    assert.is_true(maxdiff(values(ops.rope(tensor(x, {seq, heads, hd}), pos)), want) < 2e-5)
  end)

  describe("matmul", function()
    -- per activation element, the error its encoding may add: 8-bit blocks
    -- round to amax/127 steps (scale itself in f16), f16/bf16 keep 11/8 bits
    local function bound(dtype, w, x, k)
      local s, b = 0, 0
      for i = 1, k do s = s + math.abs(w[i] * x[i]) end
      local bs = dtype:match("_k$") and 256 or 32
      if dtype == "f32" then return 1e-5 * s + 1e-9 end
      if dtype == "f16" then return s / 2048 + 1e-5 * s end
      if dtype == "bf16" then return s / 256 + 1e-5 * s end
      for i0 = 1, k, bs do
        local amax, sw = 0, 0
        for i = i0, i0 + bs - 1 do
          amax = math.max(amax, math.abs(x[i]))
          sw = sw + math.abs(w[i])
        end
        b = b + sw * amax / 127
      end
      return b + 1e-5 * s
    end

    local DTYPES = {"f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0",
                    "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"}
    for _, dt in ipairs(DTYPES) do
      it("with " .. dt .. " weights, matvec and batches, against dequantized Lua dots", function()
        local n, k = 7, 512
        local W = tensor(rand(n * k, 31, 1), {n, k}):to(dt)
        local wf = values(W:to("f32"))
        for _, m in ipairs({1, 2, 5}) do
          local xs = rand(m * k, 40 + m, 2)
          local out = ops.matmul(W, tensor(xs, {m, k}))
          assert.same({m, n}, out:shape())
          local got = values(out)
          for r = 0, m - 1 do
            local xr = {table.unpack(xs, r * k + 1, r * k + k)}
            for c = 0, n - 1 do
              local wr = {table.unpack(wf, c * k + 1, c * k + k)}
              local ref = 0
              for i = 1, k do ref = ref + wr[i] * xr[i] end
              local err, tol = math.abs(got[r * n + c + 1] - ref), bound(dt, wr, xr, k)
              assert(err <= tol, string.format("%s m=%d [%d][%d]: got %.7g want %.7g (tol %.3g)",
                                              dt, m, r, c, got[r * n + c + 1], ref, tol))
            end
          end
        end
      end)
    end

    it("writes into a given output", function()
      local W = tensor(rand(3 * 32, 5, 1), {3, 32}):to("q8_0")
      local X = tensor(rand(2 * 32, 6, 1), {2, 32})
      local out = T.zeros({2, 3})
      assert.equals(out, ops.matmul(W, X, out))
      assert.same(values(ops.matmul(W, X)), values(out))
      assert.equals("ops.matmul: out must have X's shape with last dim N = 3",
                    errmsg(ops.matmul, W, X, T.zeros({3, 2})))
      assert.equals("ops.matmul: output overlaps an operand",
                    errmsg(ops.matmul, tensor(rand(32 * 32, 1), {32, 32}), X:narrow(1, 1, 1), X:narrow(1, 1, 1)))
    end)

    it("keeps the leading dims of X", function()
      local W = tensor(rand(3 * 32, 5, 1), {3, 32})
      assert.same({2, 4, 3}, ops.matmul(W, tensor(rand(8 * 32, 6, 1), {2, 4, 32})):shape())
      assert.same({3}, ops.matmul(W, tensor(rand(32, 7, 1), {32})):shape())
    end)

    it("gives the same results on 1 and 2 threads", function()
      local saved = core.threads()
      local W = tensor(rand(64 * 256, 8, 1), {64, 256}):to("q4_k")
      local X = tensor(rand(3 * 256, 9, 1), {3, 256})
      core.threads(1)
      local one = values(ops.matmul(W, X))
      core.threads(2)
      assert.equals(2, core.threads())
      assert.same(one, values(ops.matmul(W, X)))
      core.threads(saved)
    end)
  end)

  describe("misuse", function()
    local W = tensor(rand(4 * 32, 1, 1), {4, 32})
    local X = tensor(rand(2 * 32, 2, 1), {2, 32})
    local x3 = tensor(rand(2 * 2 * 8, 3, 1), {2, 2, 8})

    it("matmul", function()
      assert.equals("ops.matmul: W must be 2-D (N, K), got 1-D",
                    errmsg(ops.matmul, tensor(rand(32, 1), {32}), X))
      assert.equals("ops.matmul: X rows have 16 elements but W has K = 32",
                    errmsg(ops.matmul, W, tensor(rand(16, 1), {16})))
      assert.equals("ops.matmul: X must be an f32 tensor (got f16)",
                    errmsg(ops.matmul, W, X:to("f16")))
      assert.equals("ops.matmul: X must be contiguous (call :contiguous())",
                    errmsg(ops.matmul, tensor(rand(32 * 32, 1), {32, 32}),
                           tensor(rand(32 * 32, 1), {32, 32}):t()))
      assert.equals("ops.matmul: no kernel for i8 weights",
                    errmsg(ops.matmul, T.zeros({4, 32}, "i8"), X))
      assert.equals("ops.matmul: weight rows must be contiguous",
                    errmsg(ops.matmul, tensor(rand(32 * 32, 1), {32, 32}):t(), X))
      assert.equals("bad argument #2 to 'matmul' (slm.Tensor expected, got number)",
                    errmsg(function() return ops.matmul(W, 1) end))
    end)

    it("elementwise and norms", function()
      assert.equals("ops.add: b must have a's shape or be a vector of its last dim (32), got 16 elements",
                    errmsg(ops.add, X, tensor(rand(16, 1), {16})))
      assert.equals("ops.mul: a must be an f32 tensor (got q8_0)", errmsg(ops.mul, X:to("q8_0"), X))
      assert.equals("ops.rmsnorm: w must have 32 elements (the last dim of x), got 8",
                    errmsg(ops.rmsnorm, X, tensor(rand(8, 1), {8})))
      assert.equals("ops.layernorm: b must have 32 elements (the last dim of x), got 8",
                    errmsg(ops.layernorm, X, nil, tensor(rand(8, 1), {8})))
      assert.equals("ops.rmsnorm: eps must be >= 0", errmsg(ops.rmsnorm, X, nil, -1))
      assert.equals("ops.l2norm: x must be an f32 tensor (got q8_0)", errmsg(ops.l2norm, X:to("q8_0")))
      assert.equals("ops.mean_rows: x must be contiguous (call :contiguous())", errmsg(ops.mean_rows, X:t()))
    end)

    it("rope", function()
      assert.equals("ops.rope: x must be 3-D (seq, heads, head_dim), got 2-D", errmsg(ops.rope, X, {0, 1}))
      assert.equals("ops.rope: 1 positions for 2 tokens", errmsg(ops.rope, x3, {0}))
      assert.equals("ops.rope: position 2 is not an integer", errmsg(ops.rope, x3, {0, 1.5}))
      assert.equals("ops.rope: positions must be a table or a tensor (got string)", errmsg(ops.rope, x3, "0"))
      assert.equals('ops.rope: mode must be "normal" or "neox"', errmsg(ops.rope, x3, {0, 1}, {mode = "gptj"}))
      assert.equals("ops.rope: n_rot must be an even integer in 2..8", errmsg(ops.rope, x3, {0, 1}, {n_rot = 3}))
      assert.equals("ops.rope: option 'base' must be a number", errmsg(ops.rope, x3, {0, 1}, {base = "x"}))
    end)

    it("threads", function()
      assert.equals("bad argument #1 to 'threads' (thread count out of range)",
                    errmsg(function() return core.threads(0) end))
      assert.is_true(core.threads() >= 1)
    end)
  end)
end)
