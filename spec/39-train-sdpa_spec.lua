-- slm.core.train.sdpa: the training attention through Lua. The kernels are
-- tested in depth by tests/test_sdpa.c; here: the size of `saved` and the
-- rule choosing P or lse, one forward against a plain Lua attention, one
-- backward against finite differences of sum(o * R) through train.sdpa, the
-- accumulate flag, and the exact errors of misuse.
local helpers = require "spec.helpers"
local core = require "slm.core"
local T, train = core.tensor, core.train
-- (the calls stay inside closures, not tail calls, so that Lua names the
-- function in "bad argument #i to 'name'")
local errmsg = helpers.errmsg

local values = helpers.f32_values   -- every value of an f32 tensor, flat

local function f32s(n, seed)
  local v = helpers.randoms(n, seed, 1)
  for i = 1, n do v[i] = (string.unpack("<f", string.pack("<f", v[i]))) end
  return v
end

-- B = 2 sequences of T = 5 tokens, 4 query heads over 2 kv heads of 3 dims,
-- sliding window 3
local opts = { B = 2, T = 5, n_head = 4, n_head_kv = 2, head_dim = 3, window = 3 }
local Q, KV = 4 * 3, 2 * 3
local rows = 10

-- o of the plain formula: query head h uses kv head (h-1)//2, key u is
-- visible from query t when t - 3 < u <= t
local function attention(q, k, v)
  local o, scale = {}, 1 / math.sqrt(3)
  for b = 0, 1 do
    for h = 0, 3 do
      local g = h // 2
      for t = 0, 4 do
        local s, mx = {}, -math.huge
        for u = math.max(0, t - 2), t do
          local d = 0
          for i = 1, 3 do d = d + q[(b * 5 + t) * Q + h * 3 + i] * k[(b * 5 + u) * KV + g * 3 + i] end
          s[u] = d * scale
          mx = math.max(mx, s[u])
        end
        local sum = 0
        for u = math.max(0, t - 2), t do sum = sum + math.exp(s[u] - mx) end
        for i = 1, 3 do
          local acc = 0
          for u = math.max(0, t - 2), t do
            acc = acc + math.exp(s[u] - mx) / sum * v[(b * 5 + u) * KV + g * 3 + i]
          end
          o[(b * 5 + t) * Q + h * 3 + i] = acc
        end
      end
    end
  end
  return o
end

describe("train.sdpa", function()
  local q, k, v, R = f32s(rows * Q, 11), f32s(rows * KV, 12), f32s(rows * KV, 13), f32s(rows * Q, 14)

  local function run(qv, kvals, vv, o_opts)
    local o_ = o_opts or opts
    local bytes = train.sdpa_saved_bytes(o_)
    local saved = T.zeros({ bytes // 4 })
    local o = T.zeros({ rows, Q })
    train.sdpa(o, T.fromtable(qv, "f32", { rows, Q }), T.fromtable(kvals, "f32", { rows, KV }),
      T.fromtable(vv, "f32", { rows, KV }), o_, saved)
    return o, saved
  end

  it("sizes saved: lse always, P when it fits the budget or keep_probs asks", function()
    local lse, P = 2 * 4 * 5 * 4, 2 * 4 * 5 * 5 * 4
    local b, keep = train.sdpa_saved_bytes(opts)
    assert.same({ lse + P, true }, { b, keep })
    b, keep = train.sdpa_saved_bytes({ B = 2, T = 5, n_head = 4, n_head_kv = 2, head_dim = 3, probs_budget = P - 1 })
    assert.same({ lse, false }, { b, keep })
    b, keep = train.sdpa_saved_bytes({ B = 2, T = 5, n_head = 4, head_dim = 3, probs_budget = P })
    assert.same({ lse + P, true }, { b, keep })
    b, keep = train.sdpa_saved_bytes({ B = 2, T = 5, n_head = 4, head_dim = 3, keep_probs = false })
    assert.same({ lse, false }, { b, keep })
  end)

  it("computes the plain attention formula", function()
    local want = attention(q, k, v)
    for _, keep in ipairs({ true, false }) do
      local o_ = { B = 2, T = 5, n_head = 4, n_head_kv = 2, head_dim = 3, window = 3, keep_probs = keep }
      local got = values((run(q, k, v, o_)))
      local err = 0
      for i = 1, #want do err = math.max(err, math.abs(got[i] - want[i])) end
      assert.is_true(err < 1e-6, "max error " .. err)
    end
  end)

  it("gives the gradients of sum(o * R), and adds them with accumulate", function()
    local o, saved = run(q, k, v)
    local dq, dk, dv = T.zeros({ rows, Q }), T.zeros({ rows, KV }), T.zeros({ rows, KV })
    local qt, kt, vt = T.fromtable(q, "f32", { rows, Q }), T.fromtable(k, "f32", { rows, KV }),
        T.fromtable(v, "f32", { rows, KV })
    local dO = T.fromtable(R, "f32", { rows, Q })
    train.sdpa_backward(dq, dk, dv, dO, qt, kt, vt, o, opts, saved)
    local grads = { values(dq), values(dk), values(dv) }
    local function loss(qv, kvals, vv)
      local ov, L = values((run(qv, kvals, vv))), 0
      for i = 1, #ov do L = L + ov[i] * R[i] end
      return L
    end
    local inputs, h, err, big = { q, k, v }, 1e-2, 0, 0
    for w = 1, 3 do
      for i = 1, #inputs[w], 5 do
        local x = inputs[w]
        local x0 = x[i]
        x[i] = x0 + h
        local lp = loss(q, k, v)
        x[i] = x0 - h
        local lm = loss(q, k, v)
        x[i] = x0
        local fd = (lp - lm) / (2 * h)
        err = math.max(err, math.abs(fd - grads[w][i]))
        big = math.max(big, math.abs(fd))
      end
    end
    assert.is_true(err < 1e-3 * big, "max error " .. err .. " of " .. big)
    -- accumulate: a second backward adds the same gradients (true and 1)
    train.sdpa_backward(dq, dk, dv, dO, qt, kt, vt, o, opts, saved, true)
    train.sdpa_backward(dq, dk, dv, dO, qt, kt, vt, o, opts, saved, 1)
    local again = values(dq)
    for i = 1, #again do assert.is_true(math.abs(again[i] - 3 * grads[1][i]) < 1e-5) end
    train.sdpa_backward(dq, dk, dv, dO, qt, kt, vt, o, opts, saved, false)
    assert.same(grads[2], values(dk))
  end)

  it("names the argument that is wrong", function()
    local o, q_, k_, v_ = T.zeros({ rows, Q }), T.zeros({ rows, Q }), T.zeros({ rows, KV }), T.zeros({ rows, KV })
    local saved = T.zeros({ train.sdpa_saved_bytes(opts) // 4 })
    assert.equals("bad argument #3 to 'sdpa' (k: expected 10 rows of 6 floats (B*T, heads*head_dim), got 10x12)",
      errmsg(function() train.sdpa(o, q_, q_, v_, opts, saved) end))
    assert.equals("bad argument #1 to 'sdpa' (o: expected a contiguous f32 tensor, got a f16 one)",
      errmsg(function() train.sdpa(T.zeros({ rows, Q }, "f16"), q_, k_, v_, opts, saved) end))
    assert.equals("bad argument #2 to 'sdpa' (q: expected a contiguous f32 tensor, got a strided one)",
      errmsg(function() train.sdpa(o, T.zeros({ Q, rows }):t(), k_, v_, opts, saved) end))
    assert.equals("bad argument #6 to 'sdpa' (saved: holds 3 floats, these opts need 240 (sdpa_saved_bytes / 4))",
      errmsg(function() train.sdpa(o, q_, k_, v_, opts, T.zeros({ 3 })) end))
    assert.equals("bad argument #5 to 'sdpa' (sdpa: n_head 4 is not a multiple of n_head_kv 3)",
      errmsg(function() train.sdpa(o, q_, k_, v_, { B = 2, T = 5, n_head = 4, n_head_kv = 3, head_dim = 3 }, saved) end))
    assert.equals("field 'B' must be an integer",
      errmsg(function() train.sdpa(o, q_, k_, v_, { T = 5, n_head = 4, head_dim = 3 }, saved) end))
    assert.equals("field 'window' out of range 0..2147483647",
      errmsg(function() train.sdpa_saved_bytes({ B = 2, T = 5, n_head = 4, head_dim = 3, window = -1 }) end))
    assert.equals("field 'keep_probs' must be a boolean or nil",
      errmsg(function() train.sdpa_saved_bytes({ B = 2, T = 5, n_head = 4, head_dim = 3, keep_probs = 1 }) end))
    assert.equals("o and q must not overlap", errmsg(function() train.sdpa(q_, q_, k_, v_, opts, saved) end))
    local X = T.zeros({ 300 })
    assert.equals("saved and v must not overlap",
      errmsg(function() train.sdpa(o, q_, k_, X:narrow(1, 200, 60):reshape({ rows, KV }), opts, X) end))
  end)

  it("checks the backward's arguments", function()
    local a, b = T.zeros({ rows, Q }), T.zeros({ rows, KV })
    local saved = T.zeros({ train.sdpa_saved_bytes(opts) // 4 })
    assert.equals("bad argument #4 to 'sdpa_backward' (dO: expected 10 rows of 12 floats (B*T, heads*head_dim), got 10x6)",
      errmsg(function() train.sdpa_backward(a, b, T.zeros({ rows, KV }), b, a, b, b, a, opts, saved) end))
    assert.equals("bad argument #11 to 'sdpa_backward' (accumulate: expected a boolean, 0 or 1)",
      errmsg(function() train.sdpa_backward(T.zeros({ rows, Q }), b, T.zeros({ rows, KV }), a, a, b, b, a, opts, saved, 2) end))
    assert.equals("dk and dv must not overlap",
      errmsg(function() train.sdpa_backward(T.zeros({ rows, Q }), b, b, a, a, b, b, a, opts, saved) end))
    assert.equals("dq and dO must not overlap",
      errmsg(function() train.sdpa_backward(a, T.zeros({ rows, KV }), b, a, a, b, b, T.zeros({ rows, Q }), opts, saved) end))
    assert.equals("bad argument #10 to 'sdpa_backward' (slm.Tensor expected, got no value)",
      errmsg(function() train.sdpa_backward(T.zeros({ rows, Q }), T.zeros({ rows, KV }), T.zeros({ rows, KV }), a, a, b, b, a, opts) end))
  end)
end)
