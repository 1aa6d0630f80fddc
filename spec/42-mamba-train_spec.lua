-- The Mamba-1 mixer's training forward and backward through slm.core.train
-- (csrc/train/mamba_grad.c). tests/test_mamba_grad.c checks every gradient
-- entry against central differences in double of a reference written from
-- the formula; here: the binding's wiring (the forward against the
-- inference block, a few entries of every gradient against f32 central
-- differences of the forward, accumulate), the saved size and the errors.
local helpers = require "spec.helpers"
local slm = require "slm"
local train = slm.core.train

local DIM = 8
local OPTS = { B = 2, T = 5, d_inner = 16, d_state = 4, d_conv = 4, dt_rank = 2, chunk = 2 }
local N = OPTS.B * OPTS.T

-- deterministic numbers in [-1, 1)
local seed = 20240601
local function rnd()
  seed = (seed * 1103515245 + 12345) % 2147483648
  return seed / 1073741824 - 1
end

local function numel(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

local function rand_tensor(shape, scale, offset)
  local v = {}
  for i = 1, numel(shape) do v[i] = (offset or 0) + scale * rnd() end
  return slm.tensor.new(v, "f32", shape)
end

-- a layer's weights under their GGUF names; dt_b in [-2, 0] (δ from 0.13 to
-- 0.69, so that the A gradients are not tiny), A = -(1..d_state) scaled
local function weights(o, dim)
  local di, S, R = o.d_inner, o.d_state, o.dt_rank
  local A = {}
  for _ = 1, di do
    for j = 1, S do A[#A + 1] = -j * (1 + 0.5 * rnd()) end
  end
  return {
    ssm_in = rand_tensor({ 2 * di, dim }, 1 / math.sqrt(dim)),
    ssm_conv1d = rand_tensor({ di, o.d_conv }, 0.5),
    ssm_conv1d_b = rand_tensor({ di }, 1),
    ssm_x = rand_tensor({ R + 2 * S, di }, 1 / math.sqrt(di)),
    ssm_dt = rand_tensor({ di, R }, 1 / math.sqrt(R)),
    ssm_dt_b = rand_tensor({ di }, 1, -1),
    ssm_a = slm.tensor.new(A, "f32", { di, S }),
    ssm_d = rand_tensor({ di }, 1),
    ssm_out = rand_tensor({ dim, di }, 1 / math.sqrt(di)),
  }
end

local function zeros_like(w)
  local g = {}
  for k, t in pairs(w) do g[k] = slm.tensor.zeros(t:shape()) end
  return g
end

local function flat(t) return t:view { t:numel() } end

local function max_abs(t)
  local m, f = 0, flat(t)
  for i = 1, t:numel() do m = math.max(m, math.abs(f:get(i))) end
  return m
end

local function saved_for(o)
  return slm.tensor.zeros { train.mamba_saved_bytes(o) // 4 }
end

describe("mamba training forward and backward", function()
  it("saved bytes are n (6 d_inner + dt_rank + 2 d_state) + B (ceil(T/chunk) - 1) d_inner d_state floats", function()
    assert.equal(4 * (N * (6 * 16 + 2 + 8) + 2 * 2 * 16 * 4), train.mamba_saved_bytes(OPTS))
    local o = {}
    for k, v in pairs(OPTS) do o[k] = v end
    o.chunk = nil   -- default 64 >= T: no checkpoint
    assert.equal(4 * N * (6 * 16 + 2 + 8), train.mamba_saved_bytes(o))
  end)

  it("gives the inference block's outputs on each sequence from a fresh state", function()
    local w = weights(OPTS, DIM)
    local x, out = rand_tensor({ N, DIM }, 1), slm.tensor.zeros { N, DIM }
    train.mamba_forward(w, x, out, OPTS, saved_for(OPTS))
    local blk = slm.core.mamba.block {
      version = 1, dim = DIM, d_inner = OPTS.d_inner, d_conv = OPTS.d_conv, d_state = OPTS.d_state,
      dt_rank = OPTS.dt_rank, ssm_in = w.ssm_in, ssm_x = w.ssm_x, ssm_dt = w.ssm_dt, ssm_out = w.ssm_out,
      conv_w = w.ssm_conv1d, conv_b = w.ssm_conv1d_b, dt_b = w.ssm_dt_b, A = w.ssm_a, D = w.ssm_d,
    }
    local st = slm.core.mamba.state {
      n_layer = 1, n_batch = OPTS.T, d_inner = OPTS.d_inner, d_conv = OPTS.d_conv, d_state = OPTS.d_state,
      dt_rank = OPTS.dt_rank,
    }
    local worst, scale = 0, max_abs(out)
    for b = 0, OPTS.B - 1 do
      local xb, yb = slm.tensor.zeros { OPTS.T, DIM }, slm.tensor.zeros { OPTS.T, DIM }
      for t = 1, OPTS.T do
        for k = 1, DIM do xb:set(t, k, x:get(b * OPTS.T + t, k)) end
      end
      st:clear()
      blk:forward(yb, xb, st, 1, OPTS.T)
      for t = 1, OPTS.T do
        for k = 1, DIM do worst = math.max(worst, math.abs(yb:get(t, k) - out:get(b * OPTS.T + t, k))) end
      end
    end
    assert.is_true(worst <= 1e-5 * scale, string.format("max |diff| %.3g of %.3g", worst, scale))
  end)

  it("matches f32 central differences of its forward for entries of every gradient", function()
    local w = weights(OPTS, DIM)
    local x, out = rand_tensor({ N, DIM }, 1), slm.tensor.zeros { N, DIM }
    local R = rand_tensor({ N, DIM }, 1)
    local saved = saved_for(OPTS)
    local function loss()
      train.mamba_forward(w, x, out, OPTS, saved)
      local L, fo, fr = 0, flat(out), flat(R)
      for i = 1, N * DIM do L = L + fo:get(i) * fr:get(i) end
      return L
    end
    loss()
    local g, dx = zeros_like(w), slm.tensor.zeros { N, DIM }
    train.mamba_backward(w, g, x, R, dx, OPTS, saved, false)
    local tensors, grads = {}, {}
    for k, t in pairs(w) do tensors[#tensors + 1], grads[#grads + 1] = { k, t }, g[k] end
    tensors[#tensors + 1], grads[#grads + 1] = { "x", x }, dx
    for q, named in ipairs(tensors) do
      local name, t = named[1], named[2]
      local f, fg, scale = flat(t), flat(grads[q]), max_abs(grads[q])
      assert.is_true(scale > 0, name .. ": gradient is all zeros")
      for _ = 1, 4 do
        local i = math.floor((rnd() + 1) / 2 * t:numel()) + 1
        local v = f:get(i)
        local h = 2e-3 * math.max(1, math.abs(v))
        f:set(i, v + h)
        local lp = loss()
        f:set(i, v - h)
        local lm = loss()
        f:set(i, v)
        local fd = (lp - lm) / (2 * h)
        -- 2 % of the tensor's largest gradient, plus the f32 noise of L / h
        assert.is_true(math.abs(fd - fg:get(i)) <= 0.02 * scale + 1e-4,
                       string.format("%s[%d]: backward %.6g, differences %.6g", name, i, fg:get(i), fd))
      end
    end
  end)

  it("overwrites dx or adds to it, and always adds to the parameter gradients", function()
    local w = weights(OPTS, DIM)
    local x, out, dout = rand_tensor({ N, DIM }, 1), slm.tensor.zeros { N, DIM }, rand_tensor({ N, DIM }, 1)
    local saved = saved_for(OPTS)
    train.mamba_forward(w, x, out, OPTS, saved)
    local g, dx = zeros_like(w), slm.tensor.zeros { N, DIM }
    dx:copy_(rand_tensor({ N, DIM }, 100))   -- overwritten
    train.mamba_backward(w, g, x, dout, dx, OPTS, saved)
    local dx0, a0 = dx:clone(), g.ssm_a:clone()
    train.mamba_backward(w, g, x, dout, dx, OPTS, saved, true)
    local fx, f0 = flat(dx), flat(dx0)
    for i = 1, N * DIM do assert.near(2 * f0:get(i), fx:get(i), 1e-6 * math.max(1, math.abs(f0:get(i)))) end
    local fa, fa0 = flat(g.ssm_a), flat(a0)
    for i = 1, g.ssm_a:numel() do assert.near(2 * fa0:get(i), fa:get(i), 1e-9 + 1e-6 * math.abs(fa0:get(i))) end
    train.mamba_backward(w, g, x, dout, dx, OPTS, saved, 0)
    for i = 1, N * DIM do assert.equal(f0:get(i), fx:get(i)) end
  end)
end)

describe("mamba training misuse", function()
  local w = weights(OPTS, DIM)
  local x, out = rand_tensor({ N, DIM }, 1), slm.tensor.zeros { N, DIM }
  local saved = saved_for(OPTS)
  -- (called as fields, not through pcall directly, so that Lua names them)
  local function fwd_err(ww, xx, oo, opts, ss)
    return helpers.errmsg(function() train.mamba_forward(ww or w, xx or x, oo or out, opts or OPTS, ss or saved) end)
  end
  local function bwd_err(...)
    local args = table.pack(...)
    return helpers.errmsg(function() train.mamba_backward(table.unpack(args, 1, args.n)) end)
  end
  local function with(t, k, v)
    local c = {}
    for kk, vv in pairs(t) do c[kk] = vv end
    c[k] = v
    return c
  end

  it("names the weight of a wrong shape, dtype or kind", function()
    assert.equal("bad argument #1 to 'mamba_forward' ('ssm_x' must be a contiguous f32 tensor of 10x16, got f32 8x16)",
                 fwd_err(with(w, "ssm_x", slm.tensor.zeros { 8, 16 })))
    assert.equal("bad argument #1 to 'mamba_forward' ('ssm_d' must be a contiguous f32 tensor of 16 elements, got f16 16)",
                 fwd_err(with(w, "ssm_d", slm.tensor.zeros({ 16 }, "f16"))))
    assert.equal("bad argument #1 to 'mamba_forward' (field 'ssm_out' must be a tensor, got nil)",
                 fwd_err(with(w, "ssm_out", nil)))
    assert.equal("bad argument #1 to 'mamba_forward' ('ssm_a' must be a contiguous f32 tensor of 16x4, "
                 .. "got f32 4x16 (not contiguous))", fwd_err(with(w, "ssm_a", slm.tensor.zeros { 16, 4 }:t())))
    local g = zeros_like(w)
    g.ssm_conv1d_b = slm.tensor.zeros { 15 }
    assert.equal("bad argument #2 to 'mamba_backward' ('ssm_conv1d_b' must be a writable contiguous f32 tensor of "
                 .. "16 elements, got f32 15)",
                 bwd_err(w, g, x, out, slm.tensor.zeros { N, DIM }, OPTS, saved))
  end)

  it("checks the options, the buffers and the saved size", function()
    assert.equal("field 'B' must be an integer", fwd_err(nil, nil, nil, with(OPTS, "B", nil)))
    assert.equal("bad argument #4 to 'mamba_forward' (dt_b_c_rms (Falcon-Mamba's normalized dt, B, C) is not "
                 .. "supported in training)", fwd_err(nil, nil, nil, with(OPTS, "dt_b_c_rms", true)))
    assert.equal("bad argument #4 to 'mamba_forward' (mamba train: B 0 and T 5 must be positive, B*T at most 16777216)",
                 fwd_err(nil, nil, nil, with(OPTS, "B", 0)))
    assert.matches("d_conv 1000 or d_state 4 out of range", fwd_err(nil, nil, nil, with(OPTS, "d_conv", 1000)))
    assert.equal("bad argument #2 to 'mamba_forward' (9 rows, B*T = 10 needed)",
                 fwd_err(nil, slm.tensor.zeros { 9, DIM }))
    assert.equal("bad argument #3 to 'mamba_forward' (width 7 differs from the model dim 8)",
                 fwd_err(nil, nil, slm.tensor.zeros { N, 7 }))
    assert.equal("bad argument #3 to 'mamba_forward' (out must not overlap x)", fwd_err(nil, nil, x))
    assert.equal("bad argument #5 to 'mamba_forward' (40 bytes, mamba_saved_bytes gives 5264)",
                 fwd_err(nil, nil, nil, nil, slm.tensor.zeros { 10 }))
    assert.equal("bad argument #8 to 'mamba_backward' (accumulate must be a boolean, 0 or 1)",
                 bwd_err(w, zeros_like(w), x, out, slm.tensor.zeros { N, DIM }, OPTS,
                                saved, "yes"))
    assert.equal("bad argument #5 to 'mamba_backward' (dx must not overlap x, dout or saved)",
                 bwd_err(w, zeros_like(w), x, out, out, OPTS, saved))
  end)
end)
