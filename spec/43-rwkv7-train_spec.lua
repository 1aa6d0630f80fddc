-- RWKV-7 training blocks through slm.core.train (csrc/bind/l_rwkv_train.c):
-- the training forward equals the inference blocks run on each sequence from
-- a fresh state (the tiny rwkv7 fixture's own layers), the backward agrees
-- with central differences of the f32 forward on samples of every parameter,
-- the input and v_first, and bad arguments raise one-line errors naming
-- them. The gradients' full check (every entry, against a double reference)
-- is tests/test_rwkv7_grad.c.
local helpers = require "spec.helpers"
local slm = require "slm"
local gguf = require "slm.gguf"
local core = require "slm.core"
local train = core.train

local B, T, D, HS, R, F = 2, 5, 16, 8, 4, 32

local function rand_tensor(shape, lo, hi)
  local n = 1
  for _, s in ipairs(shape) do n = n * s end
  local v = {}
  for i = 1, n do v[i] = lo + (hi - lo) * math.random() end
  return slm.tensor.new(v, "f32", shape)
end

local function flat(t) return t:reshape(-1) end

-- a time mix's weights under their GGUF names (blk.N. stripped)
local function tmix_weights(first)
  local s = 1 / math.sqrt(D)
  local w = {
    ["time_mix_lerp_fused.weight"] = rand_tensor({ 6, 1, 1, D }, 0.05, 1),
    ["time_mix_w0.weight"] = rand_tensor({ D }, -1, 1),
    ["time_mix_a0.weight"] = rand_tensor({ D }, -1, 1),
    ["time_mix_k_k.weight"] = rand_tensor({ D }, 0.3, 1.5),
    ["time_mix_k_a.weight"] = rand_tensor({ D }, -1, 1),
    ["time_mix_r_k.weight"] = rand_tensor({ D }, -1, 1),
    ["time_mix_ln.weight"] = rand_tensor({ D }, 0.5, 1.5),
    ["time_mix_ln.bias"] = rand_tensor({ D }, -0.5, 0.5),
  }
  for _, k in ipairs { "receptance", "key", "value", "output" } do
    w["time_mix_" .. k .. ".weight"] = rand_tensor({ D, D }, -s, s)
  end
  local lora = { "w", "a", "g" }
  if not first then
    lora[4] = "v"
    w["time_mix_v0.weight"] = rand_tensor({ D }, -1, 1)
  end
  for _, k in ipairs(lora) do
    w["time_mix_" .. k .. "1.weight"] = rand_tensor({ R, D }, -s, s)
    w["time_mix_" .. k .. "2.weight"] = rand_tensor({ D, R }, -0.5, 0.5)
  end
  return w
end

local function cmix_weights()
  return {
    ["channel_mix_lerp_k.weight"] = rand_tensor({ 1, 1, D }, 0.05, 1),
    ["channel_mix_key.weight"] = rand_tensor({ F, D }, -0.25, 0.25),
    ["channel_mix_value.weight"] = rand_tensor({ D, F }, -0.18, 0.18),
  }
end

local function zeros_like(w)
  local g = {}
  for k, t in pairs(w) do g[k] = slm.tensor.zeros(t:shape()) end
  return g
end

local function dot(a, b)
  local s, fa, fb = 0, flat(a), flat(b)
  for i = 1, fa:numel() do s = s + fa:get(i) * fb:get(i) end
  return s
end

describe("rwkv7 training blocks vs the inference blocks", function()
  local path, why = helpers.fixture("gguf/rwkv7-tiny-f32.gguf")
  local test = path and it or pending
  test("the tiny fixture's layers 0 and 1 on each sequence from a fresh state" .. (path and "" or ": " .. why),
    function()
      local f <close> = assert(gguf.open(path))
      local dim, hs, nff, n = 64, 64, 256, 3 * 6
      local function layer(l)
        local w = {}
        for _, info in ipairs(f.tensors) do
          local k = info.name:match("^blk%." .. l .. "%.(.*)$")
          if k then w[k] = f:tensor(info.name) end
        end
        return w
      end
      local W = { layer(0), layer(1) }
      local x = { rand_tensor({ n, dim }, -1, 1), rand_tensor({ n, dim }, -1, 1), rand_tensor({ n, dim }, -1, 1) }
      local out = { slm.tensor.zeros({ n, dim }), slm.tensor.zeros({ n, dim }), slm.tensor.zeros({ n, dim }) }
      local vf = slm.tensor.zeros({ n, dim })
      for l = 1, 2 do
        local opts = { B = 3, T = 6, head_size = hs, first_layer = l == 1 }
        local saved = slm.tensor.zeros({ train.rwkv7_tmix_saved_bytes(W[l], opts) // 4 })
        train.rwkv7_tmix_forward(W[l], x[l], out[l], vf, opts, saved)
      end
      local copts = { B = 3, T = 6 }
      local csaved = slm.tensor.zeros({ train.rwkv7_cmix_saved_bytes(W[1], copts) // 4 })
      train.rwkv7_cmix_forward(W[1], x[3], out[3], copts, csaved)

      -- the inference blocks, built as models/rwkv.lua builds them
      local blocks = {}
      for l = 1, 2 do
        local w = W[l]
        local att = { version = "v7", dim = dim, n_head = dim // hs, gn_eps = 64e-5, first_layer = l == 1,
                      wr = w["time_mix_receptance.weight"], wk = w["time_mix_key.weight"],
                      wv = w["time_mix_value.weight"], wo = w["time_mix_output.weight"],
                      lnx_w = w["time_mix_ln.weight"], lnx_b = w["time_mix_ln.bias"],
                      maa = w["time_mix_lerp_fused.weight"] }
        for _, k in ipairs { "w0", "a0", "v0", "k_k", "k_a", "r_k", "w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2" } do
          att[k] = w["time_mix_" .. k .. ".weight"]
        end
        if l == 1 then att.v0, att.v1, att.v2 = nil, nil, nil end
        blocks[l] = core.rwkv.time_mix(att)
      end
      blocks[3] = core.rwkv.channel_mix { version = "v7", dim = dim, n_ff = nff,
                                          mix_k = W[1]["channel_mix_lerp_k.weight"],
                                          wk = W[1]["channel_mix_key.weight"], wv = W[1]["channel_mix_value.weight"] }
      local st = core.rwkv.state { version = "v7", n_layer = 2, dim = dim, n_head = dim // hs, n_ff = nff,
                                   lora = 32, n_batch = 6 }
      local worst = { 0, 0, 0 }
      for s = 0, 2 do
        st:reset()
        for i = 1, 3 do
          local xi = x[i]:narrow(1, s * 6 + 1, 6):clone()
          local want = slm.tensor.zeros({ 6, dim })
          blocks[i]:forward(want, xi, st, i == 2 and 2 or 1, 6)
          local got, scale = out[i]:narrow(1, s * 6 + 1, 6):reshape(-1), 1e-30
          want = want:reshape(-1)
          for e = 1, want:numel() do scale = math.max(scale, math.abs(want:get(e))) end
          for e = 1, want:numel() do
            worst[i] = math.max(worst[i], math.abs(got:get(e) - want:get(e)) / scale)
          end
        end
      end
      for i = 1, 3 do assert.is_true(worst[i] < 1e-5, "block " .. i .. " rel err " .. worst[i]) end
    end)
end)

describe("rwkv7 training gradients vs finite differences of the f32 forward", function()
  -- f32 forward: steps of 1e-2 and a relative bound of 2 % per sampled
  -- entry (over max(|fd|, 5 % of the tensor's largest)): a sign or a
  -- missing term is off by 100 %
  local H = 1e-2
  local function check(name, g, fd, scale)
    local err = math.abs(g - fd) / math.max(math.abs(fd), 0.05 * scale)
    assert.is_true(err < 0.02, string.format("%s: analytic %.6g, fd %.6g", name, g, fd))
  end

  -- samples 3 entries of tensor t (flat view), perturbing them and calling
  -- loss(); compares with the analytic gradient tensor ga
  local function sample(name, t, ga, loss)
    local ft, fg, n = flat(t), flat(ga), flat(t):numel()
    local scale = 1e-30
    for e = 1, n do scale = math.max(scale, math.abs(fg:get(e))) end
    for _, e in ipairs { 1, (n + 1) // 2, n } do
      local keep = ft:get(e)
      ft:set(e, keep + H)
      local lp = loss()
      ft:set(e, keep - H)
      local lm = loss()
      ft:set(e, keep)
      check(name .. "[" .. e .. "]", fg:get(e), (lp - lm) / (2 * H), scale)
    end
  end

  for _, first in ipairs { true, false } do
    it("time mix, " .. (first and "first" or "later") .. " layer: every parameter, x and v_first", function()
      math.randomseed(first and 7 or 8)
      local n = B * T
      local w = tmix_weights(first)
      local g = zeros_like(w)
      local opts = { B = B, T = T, head_size = HS, first_layer = first, chunk = 2 }
      local saved = slm.tensor.zeros({ train.rwkv7_tmix_saved_bytes(w, opts) // 4 })
      local x, vf = rand_tensor({ n, D }, -1, 1), rand_tensor({ n, D }, -1, 1)
      local Rt, Rv = rand_tensor({ n, D }, -1, 1), rand_tensor({ n, D }, -1, 1)
      local out = slm.tensor.zeros({ n, D })
      local function loss()
        train.rwkv7_tmix_forward(w, x, out, vf, opts, saved)
        return dot(out, Rt) + (first and dot(vf, Rv) or 0)
      end
      loss()
      local dx, dvf = slm.tensor.zeros({ n, D }), first and Rv:clone() or slm.tensor.zeros({ n, D })
      train.rwkv7_tmix_backward(w, g, saved, Rt, dx, dvf, opts, false)
      for k, t in pairs(w) do sample(k, t, g[k], loss) end
      sample("x", x, dx, loss)
      if not first then sample("v_first", vf, dvf, loss) end
    end)
  end

  it("channel mix: every parameter and x", function()
    math.randomseed(9)
    local n = B * T
    local w = cmix_weights()
    local g = zeros_like(w)
    local opts = { B = B, T = T }
    local saved = slm.tensor.zeros({ train.rwkv7_cmix_saved_bytes(w, opts) // 4 })
    local x, Rt, out = rand_tensor({ n, D }, -1, 1), rand_tensor({ n, D }, -1, 1), slm.tensor.zeros({ n, D })
    local function loss()
      train.rwkv7_cmix_forward(w, x, out, opts, saved)
      return dot(out, Rt)
    end
    loss()
    local dx = slm.tensor.zeros({ n, D })
    train.rwkv7_cmix_backward(w, g, saved, Rt, dx, opts, false)
    for k, t in pairs(w) do sample(k, t, g[k], loss) end
    sample("x", x, dx, loss)
  end)

  it("accumulates into dx when asked and always into the parameters' gradients", function()
    math.randomseed(10)
    local n = B * T
    local w = cmix_weights()
    local g = zeros_like(w)
    local opts = { B = B, T = T }
    local saved = slm.tensor.zeros({ train.rwkv7_cmix_saved_bytes(w, opts) // 4 })
    local x, Rt, out = rand_tensor({ n, D }, -1, 1), rand_tensor({ n, D }, -1, 1), slm.tensor.zeros({ n, D })
    train.rwkv7_cmix_forward(w, x, out, opts, saved)
    local dx1, dx2 = slm.tensor.zeros({ n, D }), slm.tensor.zeros({ n, D })
    train.rwkv7_cmix_backward(w, g, saved, Rt, dx1, opts, false)
    local once, once_v = flat(g["channel_mix_key.weight"]):get(5), flat(g["channel_mix_value.weight"]):get(3)
    train.rwkv7_cmix_backward(w, g, saved, Rt, dx2, opts, true)
    train.rwkv7_cmix_backward(w, g, saved, Rt, dx2, opts, 1)
    assert.is_true(math.abs(flat(g["channel_mix_key.weight"]):get(5) - 3 * once) <= 1e-6 * math.abs(once))
    assert.is_true(math.abs(flat(dx2):get(7) - 2 * flat(dx1):get(7)) < 1e-6)
    train.rwkv7_cmix_backward(w, g, saved, Rt, dx2, opts, 0)   -- 0 overwrites, as in C
    assert.are.equal(flat(dx1):get(7), flat(dx2):get(7))
    -- a frozen parameter: absent from g (its gradient tensor stays as it was)
    local gkey = g["channel_mix_key.weight"]
    local key = flat(gkey):get(5)
    g["channel_mix_key.weight"] = nil
    train.rwkv7_cmix_backward(w, g, saved, Rt, dx1, opts, false)
    assert.are.equal(key, flat(gkey):get(5))
    assert.is_true(math.abs(flat(g["channel_mix_value.weight"]):get(3) - 5 * once_v) <= 1e-6 * math.abs(once_v))
    assert.are.equal("rwkv7_cmix_backward: accumulate must be a boolean, 0 or 1",
                     helpers.errmsg(train.rwkv7_cmix_backward, w, g, saved, Rt, dx1, opts, "yes"))
  end)
end)

describe("rwkv7 training blocks refuse bad arguments", function()
  local n = B * T
  local w = tmix_weights(false)
  local opts = { B = B, T = T, head_size = HS }
  local function saved_for(o) return slm.tensor.zeros({ train.rwkv7_tmix_saved_bytes(w, o) // 4 }) end
  local x, out, vf = rand_tensor({ n, D }, -1, 1), slm.tensor.zeros({ n, D }), rand_tensor({ n, D }, -1, 1)

  it("names the missing or misshapen weight", function()
    local w2 = {}
    for k, t in pairs(w) do w2[k] = t end
    w2["time_mix_k_a.weight"] = nil
    assert.are.equal('rwkv7_tmix_saved_bytes: w["time_mix_k_a.weight"] is missing',
                     helpers.errmsg(train.rwkv7_tmix_saved_bytes, w2, opts))
    w2["time_mix_k_a.weight"] = w["time_mix_k_a.weight"]
    w2["time_mix_w2.weight"] = slm.tensor.zeros({ R, D })
    assert.are.equal('rwkv7_tmix_forward: w["time_mix_w2.weight"] must be a contiguous f32 tensor of 16x4, got f32 4x16',
                     helpers.errmsg(train.rwkv7_tmix_forward, w2, x, out, vf, opts, saved_for(opts)))
    w2["time_mix_w2.weight"] = w["time_mix_w2.weight"]:to("f16")
    assert.are.equal('rwkv7_tmix_forward: w["time_mix_w2.weight"] must be a contiguous f32 tensor of 16x4, got f16 16x4',
                     helpers.errmsg(train.rwkv7_tmix_forward, w2, x, out, vf, opts, saved_for(opts)))
    w2["time_mix_w2.weight"] = 3
    assert.are.equal('rwkv7_tmix_forward: w["time_mix_w2.weight"] must be a tensor',
                     helpers.errmsg(train.rwkv7_tmix_forward, w2, x, out, vf, opts, saved_for(opts)))
  end)

  it("names the bad option, buffer or gradient", function()
    local saved = saved_for(opts)
    assert.are.equal("rwkv7_tmix_forward: opts.head_size must be an integer from 1 to 16777216",
                     helpers.errmsg(train.rwkv7_tmix_forward, w, x, out, vf, { B = B, T = T }, saved))
    assert.are.equal("rwkv7_tmix_forward: rwkv7 time mix: head_size 5 does not divide dim 16",
                     helpers.errmsg(train.rwkv7_tmix_forward, w, x, out, vf,
                                    { B = B, T = T, head_size = 5 }, saved))
    assert.are.equal("rwkv7_tmix_forward: x must be a contiguous f32 tensor of at least 10 rows of 16",
                     helpers.errmsg(train.rwkv7_tmix_forward, w, slm.tensor.zeros({ n, 8 }), out, vf, opts, saved))
    assert.are.equal("rwkv7_tmix_forward: v_first must be a contiguous f32 tensor of at least 10 rows of 16",
                     helpers.errmsg(train.rwkv7_tmix_forward, w, x, out, nil, opts, saved))
    assert.are.equal("rwkv7_tmix_forward: saved must be a contiguous writable f32 tensor of at least "
                     .. (train.rwkv7_tmix_saved_bytes(w, opts) // 4) .. " values (rwkv7_tmix_saved_bytes / 4)",
                     helpers.errmsg(train.rwkv7_tmix_forward, w, x, out, vf, opts, slm.tensor.zeros({ 10 })))
    assert.are.equal("rwkv7_tmix_backward: rwkv7 time mix backward: saved does not hold a finished forward of this shape",
                     helpers.errmsg(train.rwkv7_tmix_backward, w, {}, saved, x, slm.tensor.zeros({ n, D }), vf, opts))
    train.rwkv7_tmix_forward(w, x, out, vf, opts, saved)
    assert.are.equal('rwkv7_tmix_backward: g["time_mix_key.weight"] must be a contiguous writable f32 tensor of 16x16, got f32 16',
                     helpers.errmsg(train.rwkv7_tmix_backward, w, { ["time_mix_key.weight"] = slm.tensor.zeros({ D }) },
                                    saved, x, slm.tensor.zeros({ n, D }), vf, opts))
    train.rwkv7_tmix_backward(w, {}, saved, x, slm.tensor.zeros({ n, D }), slm.tensor.zeros({ n, D }), opts)
    assert.are.equal("rwkv7_tmix_forward: out must not alias x",
                     helpers.errmsg(train.rwkv7_tmix_forward, w, x, x, vf, opts, saved))
  end)
end)
