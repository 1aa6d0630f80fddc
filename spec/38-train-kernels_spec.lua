-- slm.core.train: the training kernels through Lua, each against a plain
-- Lua computation of its formula (doubles, or float arithmetic op by op for
-- AdamW), and the exact messages of misuse. (tests/test_grad.c checks the
-- kernels in depth: finite differences, threads, AVX2.)
local helpers = require "spec.helpers"
local core = require "slm.core"
local T, train = core.tensor, core.train
local errmsg = helpers.errmsg

local f32 = helpers.f32   -- float32 rounding of a Lua number

local function rand(n, seed, scale)
  local v = helpers.randoms(n, seed, scale)
  for i = 1, n do v[i] = f32(v[i]) end
  return v
end

local function tensor(vals, shape)
  return T.fromtable(vals, "f32", shape)
end

local values = helpers.f32_values   -- every value of an f32 tensor, flat

-- max |a[i] - b[i]| / max |b[i]|
local function relerr(a, b)
  assert.equals(#b, #a)
  local d, m = 0, 1e-30
  for i = 1, #a do
    d = math.max(d, math.abs(a[i] - b[i]))
    m = math.max(m, math.abs(b[i]))
  end
  return d / m
end

describe("slm.core.train", function()
  describe("linear", function()
    local n, din, dout = 3, 4, 5
    local xv, Wv, bv = rand(n * din, 1), rand(dout * din, 2), rand(dout, 3)
    local x, W, b = tensor(xv, {n, din}), tensor(Wv, {dout, din}), tensor(bv, {dout})

    it("computes y = x W^T + b as a Lua loop does", function()
      local y = T.zeros({n, dout})
      train.linear(y, x, W, b)
      local ref = {}
      for r = 0, n - 1 do
        for o = 0, dout - 1 do
          local s = bv[o + 1]
          for i = 0, din - 1 do s = s + xv[r * din + i + 1] * Wv[o * din + i + 1] end
          ref[r * dout + o + 1] = s
        end
      end
      assert.is_true(relerr(values(y), ref) < 1e-6)
      train.linear(y, x, W)   -- no bias
      for o = 1, dout do ref[o] = ref[o] - bv[o] end
      assert.is_true(math.abs(values(y)[1] - ref[1]) < 1e-6)
    end)

    it("backward: dx = dy W, dW += dy^T x, db += sum dy; accumulate adds", function()
      local dyv = rand(n * dout, 4)
      local dy = tensor(dyv, {n, dout})
      local dx, dW, db = T.zeros({n, din}), T.zeros({dout, din}), T.zeros({dout})
      train.linear_backward(dx, dW, db, dy, x, W, false)
      local rdx, rdW, rdb = {}, {}, {}
      for i = 1, n * din do rdx[i] = 0 end
      for i = 1, dout * din do rdW[i] = 0 end
      for o = 1, dout do rdb[o] = 0 end
      for r = 0, n - 1 do
        for o = 0, dout - 1 do
          local g = dyv[r * dout + o + 1]
          rdb[o + 1] = rdb[o + 1] + g
          for i = 0, din - 1 do
            rdx[r * din + i + 1] = rdx[r * din + i + 1] + g * Wv[o * din + i + 1]
            rdW[o * din + i + 1] = rdW[o * din + i + 1] + g * xv[r * din + i + 1]
          end
        end
      end
      assert.is_true(relerr(values(dx), rdx) < 1e-6)
      assert.is_true(relerr(values(dW), rdW) < 1e-6)
      assert.is_true(relerr(values(db), rdb) < 1e-6)
      -- again, accumulating: everything doubles; parameter gradients
      -- accumulate whatever the flag; nil skips a gradient
      train.linear_backward(dx, dW, nil, dy, x, W, true)
      for i = 1, #rdx do rdx[i] = 2 * rdx[i] end
      for i = 1, #rdW do rdW[i] = 2 * rdW[i] end
      assert.is_true(relerr(values(dx), rdx) < 1e-6)
      assert.is_true(relerr(values(dW), rdW) < 1e-6)
      assert.is_true(relerr(values(db), rdb) < 1e-6)
    end)

    it("rejects bad arguments naming them", function()
      local y = T.zeros({n, dout})
      assert.equals("bad argument #1 to 'linear' (slm.Tensor expected, got string)",
                    errmsg(train.linear, "y", x, W))
      assert.equals("bad argument #2 to 'linear' (expected an f32 tensor, got f16)",
                    errmsg(train.linear, y, x:to("f16"), W))
      assert.equals("bad argument #3 to 'linear' (expected a contiguous tensor)",
                    errmsg(train.linear, y, x, T.zeros({din, dout}):t()))
      assert.equals("bad argument #2 to 'linear' (rows of 4, the weight takes 3)",
                    errmsg(train.linear, y, x, T.zeros({dout, 3})))
      assert.equals("bad argument #1 to 'linear' (output: expected 15 values in rows of 5, got 12 in rows of 4)",
                    errmsg(train.linear, T.zeros({n, din}), x, W))
      assert.equals("bad argument #4 to 'linear' (bias: expected 5 values, got 4)",
                    errmsg(train.linear, y, x, W, T.zeros({4})))
      -- output rows 1..2 and input rows 2..3 of one buffer
      local buf = T.zeros({4, 4})
      assert.equals("bad argument #1 to 'linear' (shares memory with argument #2)",
                    errmsg(train.linear, buf:narrow(1, 1, 2), buf:narrow(1, 2, 2), T.zeros({4, 4})))
      assert.equals("bad argument #7 to 'linear_backward' (boolean expected, got number)",
                    errmsg(train.linear_backward, nil, nil, nil, y, x, W, 1))
      assert.equals("bad argument #5 to 'linear_backward' (input: expected 12 values in rows of 4, got 8 in rows of 4)",
                    errmsg(train.linear_backward, nil, nil, nil, y, T.zeros({2, 4}), W, false))
    end)
  end)

  describe("xent", function()
    local rows, V = 3, 6
    local xv = rand(rows * V, 5, 4)

    local function check(targets)
      local logits = tensor(xv, {rows, V})
      local loss = train.xent(logits, targets, 0.5)
      local g = values(logits)
      local want, tl = 0, {}
      for r = 0, rows - 1 do
        local t = type(targets) == "table" and targets[r + 1] or targets:get(r + 1)
        tl[r + 1] = t
        local mx = -math.huge
        for i = 1, V do mx = math.max(mx, xv[r * V + i]) end
        local s = 0
        for i = 1, V do s = s + math.exp(xv[r * V + i] - mx) end
        if t >= 0 then want = want + mx + math.log(s) - xv[r * V + t + 1] end
        for i = 1, V do
          local ref = t < 0 and 0 or 0.5 * (math.exp(xv[r * V + i] - mx) / s - (i == t + 1 and 1 or 0))
          assert.is_true(math.abs(g[r * V + i] - ref) < 1e-6)
        end
      end
      -- (exp in float, summed in double)
      assert.is_true(math.abs(loss - want) < 1e-6 * math.abs(want))
    end

    it("returns the summed loss and leaves scale (softmax - onehot)", function()
      check({2, -1, 5})                              -- a Lua list; -1 is ignored
      check(T.fromtable({0, 3, -7}, "i32", {3}))     -- an i32 tensor
      check(require("slm.tensor").new({5, 4, 1}, "i32"))
    end)

    it("rejects targets out of range and lists of the wrong length", function()
      local logits = T.zeros({rows, V})
      assert.equals("bad argument #2 to 'xent' (target 6 at index 2 is not below 6)",
                    errmsg(train.xent, logits, {0, 6, 1}))
      assert.equals("bad argument #2 to 'xent' (expected 3 targets, got a list of 2)",
                    errmsg(train.xent, logits, {0, 1}))
      assert.equals("bad argument #2 to 'xent' (target at index 3 is not an integer)",
                    errmsg(train.xent, logits, {0, 1, 0.5}))
      assert.equals("bad argument #2 to 'xent' (expected a contiguous i32 tensor, got f32)",
                    errmsg(train.xent, logits, T.zeros({3})))
    end)
  end)

  describe("embed_backward", function()
    it("adds each dy row into its id's row (repeats add up)", function()
      local V, E = 5, 3
      local dyv = rand(4 * E, 6)
      local dW = T.zeros({V, E})
      train.embed_backward(dW, {4, 0, 4, 2}, tensor(dyv, {4, E}))
      train.embed_backward(dW, T.fromtable({1}, "i32", {1}), tensor({1, 2, 3}, {1, E}))
      local ref = {}
      for i = 1, V * E do ref[i] = 0 end
      for k, id in ipairs({4, 0, 4, 2}) do
        for j = 1, E do ref[id * E + j] = ref[id * E + j] + dyv[(k - 1) * E + j] end
      end
      for j = 1, E do ref[E + j] = j end
      assert.is_true(relerr(values(dW), ref) < 1e-7)
    end)

    it("rejects ids outside the vocabulary", function()
      local dW, dy = T.zeros({5, 3}), T.zeros({2, 3})
      assert.equals("bad argument #2 to 'embed_backward' (id 7 at index 2 outside 0..4)",
                    errmsg(train.embed_backward, dW, {0, 7}, dy))
      assert.equals("bad argument #2 to 'embed_backward' (id -1 at index 1 outside 0..4)",
                    errmsg(train.embed_backward, dW, T.fromtable({-1, 0}, "i32", {2}), dy))
      assert.equals("bad argument #3 to 'embed_backward' (rows of 4, the embedding has 3)",
                    errmsg(train.embed_backward, dW, {0, 1}, T.zeros({2, 4})))
    end)
  end)

  describe("rmsnorm_backward", function()
    it("matches the formula dx = r g - x r^3 (g.x) / n, dw += dy x r", function()
      local rows, n, eps = 2, 5, 1e-5
      local xv, dyv, wv = rand(rows * n, 7, 2), rand(rows * n, 8), rand(n, 9)
      local dx, dw = T.zeros({rows, n}), T.zeros({n})
      train.rmsnorm_backward(dx, dw, tensor(dyv, {rows, n}), tensor(xv, {rows, n}), tensor(wv, {n}), eps, false)
      local rdx, rdw = {}, {}
      for i = 1, n do rdw[i] = 0 end
      for r = 0, rows - 1 do
        local ss, gx = 0, 0
        for i = 1, n do ss = ss + xv[r * n + i] ^ 2 end
        local s = 1 / math.sqrt(ss / n + eps)
        for i = 1, n do gx = gx + dyv[r * n + i] * wv[i] * xv[r * n + i] end
        for i = 1, n do
          rdx[r * n + i] = s * dyv[r * n + i] * wv[i] - xv[r * n + i] * s ^ 3 * gx / n
          rdw[i] = rdw[i] + dyv[r * n + i] * xv[r * n + i] * s
        end
      end
      assert.is_true(relerr(values(dx), rdx) < 1e-5)
      assert.is_true(relerr(values(dw), rdw) < 1e-5)
    end)

    it("needs a weight for a weight gradient and separate buffers", function()
      local x = T.zeros({2, 5})
      assert.equals("bad argument #2 to 'rmsnorm_backward' (a weight gradient without a weight (argument #5 is nil))",
                    errmsg(train.rmsnorm_backward, nil, T.zeros({5}), x, x, nil, 1e-5, false))
      assert.equals("bad argument #1 to 'rmsnorm_backward' (shares memory with argument #3)",
                    errmsg(train.rmsnorm_backward, x, nil, x, T.zeros({2, 5}), nil, 1e-5, false))
    end)
  end)

  describe("rope", function()
    local Tn, B, H, D = 3, 2, 2, 4
    local xv = rand(Tn * B * H * D, 10)

    it("rotates adjacent pairs by p base^(-2i/D) at position r % T; backward undoes it", function()
      local x = tensor(xv, {B * Tn, H, D})
      train.rope(x, Tn, H, D, {base = 100})
      local got, ref = values(x), {}
      for r = 0, B * Tn - 1 do
        local p = r % Tn
        for h = 0, H - 1 do
          local o = (r * H + h) * D
          for i = 0, D / 2 - 1 do
            local th = p * 100 ^ (-2 * i / D)
            local a, b = xv[o + 2 * i + 1], xv[o + 2 * i + 2]
            ref[o + 2 * i + 1] = a * math.cos(th) - b * math.sin(th)
            ref[o + 2 * i + 2] = a * math.sin(th) + b * math.cos(th)
          end
        end
      end
      assert.is_true(relerr(got, ref) < 1e-6)
      -- the rotation is orthogonal: its backward (the transpose) inverts it
      train.rope_backward(x, Tn, H, D, {base = 100})
      assert.is_true(relerr(values(x), xv) < 1e-6)
    end)

    it("takes blocks.attention's rope options and checks them", function()
      local x = tensor(xv, {B * Tn, H, D})
      train.rope(x, Tn, H, D, {mode = "neox", n_rot = 2, factors = tensor({2}, {1}), attn_factor = 1})
      -- dims beyond n_rot pass through; the pair (0, 1) turns by p / 2
      local got = values(x)
      for k = 0, B * Tn * H - 1 do
        local p = (k // H) % Tn
        local a, b = xv[k * D + 1], xv[k * D + 2]
        assert.is_true(math.abs(got[k * D + 1] - (a * math.cos(p / 2) - b * math.sin(p / 2))) < 1e-6)
        assert.equals(xv[k * D + 3], got[k * D + 3])
        assert.equals(xv[k * D + 4], got[k * D + 4])
      end
      assert.equals("bad argument #5 to 'rope' (n_rot 3 must be even and in 2..head_dim (4))",
                    errmsg(train.rope, x, Tn, H, D, {n_rot = 3}))
      assert.equals("bad argument #5 to 'rope_backward' (factors must hold n_rot / 2 = 2 contiguous f32 values)",
                    errmsg(train.rope_backward, x, Tn, H, D, {factors = tensor({1}, {1})}))
      assert.equals("bad argument #2 to 'rope' (6 tokens are not whole sequences of T = 4)",
                    errmsg(train.rope, x, 4, H, D, {}))
      assert.equals("field 'factors' must be a tensor", errmsg(train.rope, x, Tn, H, D, {factors = {1, 2}}))
      assert.equals('field \'mode\' must be "normal" or "neox"', errmsg(train.rope, x, Tn, H, D, {mode = "gptj"}))
    end)
  end)

  describe("swiglu", function()
    it("forward and backward as the formulas in Lua", function()
      local n = 11
      local gv, uv, dv = rand(n, 11, 4), rand(n, 12), rand(n, 13)
      local g, u, dout = tensor(gv, {n}), tensor(uv, {n}), tensor(dv, {n})
      local out, dg, du = T.zeros({n}), T.zeros({n}), T.zeros({n})
      train.swiglu(out, g, u)
      train.swiglu_backward(dg, du, dout, g, u, false)
      local ro, rg, ru = {}, {}, {}
      for i = 1, n do
        local s = 1 / (1 + math.exp(-gv[i]))
        ro[i] = gv[i] * s * uv[i]
        rg[i] = dv[i] * uv[i] * s * (1 + gv[i] * (1 - s))
        ru[i] = dv[i] * gv[i] * s
      end
      assert.is_true(relerr(values(out), ro) < 1e-6)
      assert.is_true(relerr(values(dg), rg) < 1e-6)
      assert.is_true(relerr(values(du), ru) < 1e-6)
      -- silu alone is swiglu with u = 1
      local dx = T.zeros({n})
      train.silu_backward(dx, dout, g, false)
      for i = 1, n do rg[i] = rg[i] / uv[i] end
      assert.is_true(relerr(values(dx), rg) < 1e-6)
      assert.equals("bad argument #1 to 'swiglu_backward' (shares memory with argument #2)",
                    errmsg(train.swiglu_backward, dg, dg, dout, g, u, false))
      assert.equals("bad argument #3 to 'geglu' (up: expected 11 values, got 3)",
                    errmsg(train.geglu, out, g, T.zeros({3})))
    end)
  end)

  describe("buffers", function()
    it("sumsq, axpy, scale, zero", function()
      local av, bv = rand(37, 14), rand(37, 15)
      local a, b = tensor(av, {37}), tensor(bv, {37})
      local ss = 0
      for i = 1, 37 do ss = ss + av[i] ^ 2 end
      assert.is_true(math.abs(train.sumsq(a) - ss) < 1e-12 * ss)
      train.axpy(a, b, -2)
      train.scale(a, 0.5)
      local got = values(a)
      for i = 1, 37 do assert.equals(f32(f32(av[i] + f32(-2 * bv[i])) * 0.5), got[i]) end
      train.zero(a)
      assert.equals(0, train.sumsq(a))
    end)
  end)

  describe("adamw", function()
    it("is torch.optim.AdamW's step in float, op by op", function()
      local n = 19   -- a vector loop and a tail
      local pv, gv = rand(n, 16), rand(n, 17, 3)
      local p, g, m, v = tensor(pv, {n}), tensor(gv, {n}), T.zeros({n}), T.zeros({n})
      local lr, b1, b2, eps, wd, c = 3e-3, 0.9, 0.95, 1e-8, 0.1, 0.5
      local rp, rm, rv = {}, {}, {}
      for i = 1, n do rp[i], rm[i], rv[i] = pv[i], 0, 0 end
      for t = 1, 3 do
        train.adamw(p, g, m, v, {lr = lr, beta1 = b1, beta2 = b2, eps = eps, weight_decay = wd,
                                 grad_scale = c, step = t})
        local step_size, bc2s = f32(lr / (1 - b1 ^ t)), f32(math.sqrt(1 - b2 ^ t))
        for i = 1, n do
          local gi = f32(gv[i] * f32(c))
          rp[i] = f32(rp[i] * f32(1 - lr * wd))
          rm[i] = f32(f32(rm[i] * f32(b1)) + f32(f32(1 - b1) * gi))
          rv[i] = f32(f32(rv[i] * f32(b2)) + f32(f32(f32(1 - b2) * gi) * gi))
          local denom = f32(f32(f32(math.sqrt(rv[i])) / bc2s) + f32(eps))
          rp[i] = f32(rp[i] - f32(f32(step_size * rm[i]) / denom))
        end
      end
      local gp, gm, gvv = values(p), values(m), values(v)
      for i = 1, n do
        assert.equals(rp[i], gp[i])
        assert.equals(rm[i], gm[i])
        assert.equals(rv[i], gvv[i])
      end
    end)

    it("needs lr and a step >= 1", function()
      local p = T.zeros({3})
      assert.equals("bad argument #5 to 'adamw' (field 'lr' must be a number (required))",
                    errmsg(train.adamw, p, T.zeros({3}), T.zeros({3}), T.zeros({3}), {step = 1}))
      assert.equals("bad argument #5 to 'adamw' (field 'step' must be an integer >= 1 (the update's number))",
                    errmsg(train.adamw, p, T.zeros({3}), T.zeros({3}), T.zeros({3}), {lr = 1, step = 0}))
      local m = T.zeros({3})
      assert.equals("bad argument #3 to 'adamw' (shares memory with argument #4)",
                    errmsg(train.adamw, p, T.zeros({3}), m, m, {lr = 1, step = 1}))
    end)
  end)
end)
