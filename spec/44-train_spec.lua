-- Training (slm.train) against PyTorch: the gradients of one batch in
-- float64 and 30 AdamW steps in float32 (../shared/fixtures/train/
-- train-tiny-README.md), a resumed run, and finite differences of the whole
-- model's loss for the architectures and variants the tape runs.
local helpers = require "spec.helpers"
local slm = require "slm"
local gguf = require "slm.gguf"

local function read_rows(path)
  local rows = {}
  for line in io.lines(path) do
    if line:match("%d") then
      local r = {}
      for v in line:gmatch("%d+") do r[#r + 1] = tonumber(v) end
      rows[#rows + 1] = r
    end
  end
  return rows
end

-- max |a - b| and max |b| over all elements of two tensors
local function maxdiff(a, b)
  local n = a:numel()
  assert(n == b:numel(), "sizes differ")
  local fa, fb = a:reshape(n), b:reshape(n)
  local d, m = 0, 0
  for i = 1, n do
    local x, y = fa:get(i), fb:get(i)
    d = math.max(d, math.abs(x - y))
    m = math.max(m, math.abs(y))
  end
  return d, m
end

-- L2 norm of a - b (b nil: of a)
local function l2(a, b)
  local n = a:numel()
  local fa, fb = a:reshape(n), b and b:reshape(n)
  local s = 0
  for i = 1, n do
    local x = fa:get(i) - (fb and fb:get(i) or 0)
    s = s + x * x
  end
  return math.sqrt(s)
end

local function fixture(name) return helpers.fixture("train/" .. name) end

describe("slm.train against PyTorch (fixtures/train)", function()
  it("fixture A: the loss and every gradient of one batch match float64 autograd", function()
    local init, why = fixture("train-tiny-init.gguf")
    if not init then return pending(why) end
    local model = assert(slm.load(init, { train = true }))
    local tr = slm.train.trainer(model, { lr = 1e-3 })
    local loss = tr:backward(read_rows(fixture("train-tiny-batch.txt")))
    local g = assert(gguf.open(fixture("train-tiny-grads.gguf")))
    local ref = tonumber(g.metadata["train.loss_f64"])
    assert.is_true(math.abs(loss - ref) <= 1e-5 * ref, string.format("loss %.9g vs %.9g", loss, ref))
    local grads, worst, worst_name = tr:grads(), 0, nil
    local n = 0
    for name, t in pairs(grads) do
      local d, m = maxdiff(t, g:tensor("grad." .. name))
      assert.is_true(d <= 1e-4 * m, string.format("%s: max|d| %.3g, max|ref| %.3g", name, d, m))
      if d / m > worst then worst, worst_name = d / m, name end
      n = n + 1
    end
    assert.equal(21, n)
    print(string.format("fixture A: loss %.9f (ref %.9f), worst gradient %s %.2e of max|ref|", loss, ref,
                        worst_name, worst))
    g:close()
  end)

  -- 30 steps of fixture B from init; returns the per-step losses and norms
  local function fixture_b(model, tr, rows, from, to)
    local losses, norms = {}, {}
    for k = from, to do
      local batch = { rows[4 * k + 1], rows[4 * k + 2], rows[4 * k + 3], rows[4 * k + 4] }
      losses[k], norms[k] = tr:step(batch)
    end
    return losses, norms
  end
  local B_OPTS = { lr = 3e-3, betas = { 0.9, 0.95 }, eps = 1e-8, weight_decay = 0.1, clip = 1.0 }

  local function check_b(model, losses, norms, label)
    local ref = {}
    for line in io.lines(fixture("train-tiny-adamw.txt")) do
      local k, l, n = line:match("^(%d+) (%S+) (%S+)")
      if k then ref[tonumber(k)] = { tonumber(l), tonumber(n) } end
    end
    local wl, wn = 0, 0
    for k = 0, 29 do
      local dl, dn = math.abs(losses[k] - ref[k][1]), math.abs(norms[k] - ref[k][2]) / ref[k][2]
      assert.is_true(dl <= 5e-4, string.format("%s step %d: loss %.9g vs %.9g", label, k, losses[k], ref[k][1]))
      assert.is_true(dn <= 5e-3, string.format("%s step %d: norm %.9g vs %.9g", label, k, norms[k], ref[k][2]))
      wl, wn = math.max(wl, dl), math.max(wn, dn)
    end
    local after = assert(gguf.open(fixture("train-tiny-after30.gguf")))
    local init = assert(gguf.open(fixture("train-tiny-init.gguf")))
    local worst, wname = 0, nil
    for _, name in ipairs(model.param_names) do
      local r = after:tensor(name)
      local rel = l2(model:weight(name), r) / l2(r, init:tensor(name))
      assert.is_true(rel <= 1e-2, string.format("%s %s: |W - ref| / |ref - init| = %.3g", label, name, rel))
      if rel > worst then worst, wname = rel, name end
    end
    print(string.format("%s: losses within %.2e, norms within %.2e relative, weights: worst %s %.2e", label, wl, wn,
                        wname, worst))
    after:close()
    init:close()
  end

  it("fixture B: 30 AdamW steps with clipping give PyTorch's losses, norms and weights", function()
    local init, why = fixture("train-tiny-init.gguf")
    if not init then return pending(why) end
    local rows = read_rows(fixture("train-tiny-adamw-batches.txt"))
    local model = assert(slm.load(init, { train = true }))
    local tr = slm.train.trainer(model, B_OPTS)
    local losses, norms = fixture_b(model, tr, rows, 0, 29)
    check_b(model, losses, norms, "fixture B")
  end)

  it("fixture B resumed: 15 steps, save, resume in a new model, 15 steps: the same bits", function()
    local init, why = fixture("train-tiny-init.gguf")
    if not init then return pending(why) end
    local rows = read_rows(fixture("train-tiny-adamw-batches.txt"))
    local straight = assert(slm.load(init, { train = true }))
    local trs = slm.train.trainer(straight, B_OPTS)
    fixture_b(straight, trs, rows, 0, 29)

    local model = assert(slm.load(init, { train = true }))
    local tr = slm.train.trainer(model, B_OPTS)
    local l1, n1 = fixture_b(model, tr, rows, 0, 14)
    local ckpt = os.tmpname() .. ".gguf"
    tr:save(ckpt)
    -- the weights alone load as a model (slm and the reference read them)
    local plain = assert(slm.load(ckpt))
    assert.equal(0, (maxdiff(plain:weight("blk.1.ffn_up.weight"), model:weight("blk.1.ffn_up.weight"))))
    local model2 = assert(slm.load(init, { train = true }))
    local o = {}
    for k, v in pairs(B_OPTS) do o[k] = v end
    o.resume = ckpt
    local tr2 = slm.train.trainer(model2, o)
    assert.equal(15, tr2.step_count)
    local l2s, n2 = fixture_b(model2, tr2, rows, 15, 29)
    for k = 15, 29 do l1[k], n1[k] = l2s[k], n2[k] end
    check_b(model2, l1, n1, "fixture B resumed")
    for _, name in ipairs(model2.param_names) do
      assert.equal(0, (maxdiff(model2:weight(name), straight:weight(name))), name .. " differs from the straight run")
    end
    os.remove(ckpt)
    os.remove(slm.train.optim_path(ckpt))
  end)

  it("a model being trained is used for inference with its current weights", function()
    local init, why = fixture("train-tiny-init.gguf")
    if not init then return pending(why) end
    local model = assert(slm.load(init, { train = true }))
    local s = model:session { ctx = 8 }
    local before = s:eval { 5, 6, 7 }:clone()
    local tr = slm.train.trainer(model, { lr = 1e-2 })
    tr:step { { 5, 6, 7, 8, 9 }, { 9, 8, 7, 6, 5 } }
    s:reset()
    local after = s:eval { 5, 6, 7 }
    assert.is_true((maxdiff(before, after)) > 1e-4)
    -- and the same logits as the training forward computes for that row
    local s2 = model:session { ctx = 8 }
    assert.equal(0, (maxdiff(after, s2:eval { 5, 6, 7 })))
  end)
end)

-- Finite differences of the mean loss (f32 forward, central, step h) for a
-- sample of each tensor's entries, against tr:backward's gradient.
local function fd_check(model, batch, label, h, tol, floor)
  local tr = slm.train.trainer(model, { lr = 1e-3 })
  tr:backward(batch)
  local grads = tr:grads()
  local checked = 0
  for _, name in ipairs(tr.names) do   -- the trained parameters (tr.unused: tensors no block reads)
    local p = model:weight(name)
    local n = p:numel()
    local flat, g = p:reshape(n), grads[name]:reshape(n)
    -- the largest gradient entry and two others
    local big, bi = -1, 1
    for i = 1, n do
      local a = math.abs(g:get(i))
      if a > big then big, bi = a, i end
    end
    for _, i in ipairs { bi, 1 + (n * 7) // 13, n } do
      local x = flat:get(i)
      flat:set(i, x + h)
      local lp = tr:eval_loss(batch)
      flat:set(i, x - h)
      local lm = tr:eval_loss(batch)
      flat:set(i, x)
      local fd, an = (lp - lm) / (2 * h), g:get(i)
      local err = math.abs(fd - an)
      assert.is_true(err <= tol * math.max(big, floor or 1e-3),
                     string.format("%s %s[%d]: backward %.6g, finite difference %.6g (max |g| %.3g)", label, name,
                                   i, an, fd, big))
      checked = checked + 1
    end
  end
  return checked
end

describe("slm.train finite differences over the model files", function()
  local testing = require "slm.testing"
  local cases = {
    { arch = "llama", label = "llama (GQA, normal RoPE, untied)" },
    { arch = "llama3", label = "llama3 (rope_freqs, a constant)" },
    { arch = "gemma3", label = "gemma3 (post norms, embedding scale, GeGLU, q/k norm, NeoX RoPE, tied)" },
    { arch = "gemma2", label = "gemma2 (attention and final-logit soft-capping, caps set low to bend)",
      opts = { attn_softcap = 0.5, final_softcap = 1.0 } },
    { arch = "qwen3", label = "qwen3 (per-head q/k norm)" },
    { arch = "phi3", label = "phi3 as Phi-4-mini (fused attn_qkv and gate|up, partial rotary, LongRoPE factors)" },
    { arch = "granite", label = "granite (multipliers)" },
  }
  for _, c in ipairs(cases) do
    it(c.label, function()
      local path = os.tmpname() .. ".gguf"
      local o = { path = path, arch = c.arch, dtype = "f32", vocab = 300, dim = 32, n_layer = 2,
                  n_head = 4, n_head_kv = 2, n_ff = 48, ctx = 16, seed = 7, std = 0.2 }
      for k, v in pairs(c.opts or {}) do o[k] = v end
      testing.random_model(o)
      local model = assert(slm.load(path, { train = true }))
      os.remove(path)
      local batch = { { 3, 17, 250, 4, 99, 5, 6 }, { 8, 1, 2, 299, 0, 42, 7 } }
      local n = fd_check(model, batch, c.label, 1e-2, 3e-2)
      assert.is_true(n >= 3 * #model.param_names)
    end)
  end

  it("a Mamba-1 student (slm.train.init{arch = \"mamba\"})", function()
    local model = slm.train.init { arch = "mamba", vocab = 300, dim = 32, layers = 2, d_state = 4, ctx = 16,
                                   std = 0.2, seed = 5 }
    fd_check(model, { { 3, 17, 250, 4, 99, 5, 6 }, { 8, 1, 2, 299, 0, 42, 7 } }, "mamba", 1e-2, 3e-2)
  end)

  it("an RWKV-7 student (slm.train.init{arch = \"rwkv7\"}: LayerNorms, v_first across layers)", function()
    local model = slm.train.init { arch = "rwkv7", vocab = 300, dim = 32, layers = 3, heads = 2, ff = 64, ctx = 16,
                                   std = 0.2, seed = 5 }
    local tr = slm.train.trainer(model, { lr = 1e-3 })
    -- the converter's layer-0 value-mix adapters are read but unused (layer 0 makes v_first)
    assert.same({ "blk.0.time_mix_v0.weight", "blk.0.time_mix_v1.weight", "blk.0.time_mix_v2.weight" }, tr.unused)
    -- a step of 1e-3: the decay exp(-exp(.)) bends too much over 1e-2 (the curvature
    -- alone moves the largest embedding gradient by 11 %); float32 rounding of the
    -- loss then costs ~3e-4 of a difference quotient, hence the floor 1e-2
    fd_check(model, { { 3, 17, 250, 4, 99, 5, 6 }, { 8, 1, 2, 299, 0, 42, 7 } }, "rwkv7", 1e-3, 3e-2, 1e-2)
  end)

  it("a Lua-only variant (layer recursion 0, 1, 0) trains and passes the same check", function()
    local path = os.tmpname() .. ".gguf"
    testing.random_model { path = path, arch = "llama", dtype = "f32", vocab = 300, dim = 32, n_layer = 2,
                           n_head = 4, n_ff = 48, ctx = 16, seed = 3, std = 0.2 }
    local model = assert(slm.load(path, { train = true }))
    os.remove(path)
    local v = model:variant { layers = { 0, 1, 0 } }
    fd_check(v, { { 3, 17, 250, 4, 99 }, { 8, 1, 2, 299, 0 } }, "variant 0,1,0", 1e-2, 3e-2)
  end)
end)

describe("slm.train errors", function()
  it("names the option or the batch's problem", function()
    local model = slm.train.init { vocab = 300, dim = 32, layers = 1, heads = 2, ff = 40, ctx = 8 }
    assert.has_error(function() slm.train.trainer(model, { lr = -1 }) end,
                     "trainer: lr must be a positive number, got -1")
    assert.has_error(function() slm.train.trainer(model, { lr = 1e-3, momentum = 0.9 }) end)
    local tr = slm.train.trainer(model, { lr = 1e-3 })
    assert.has_error(function() tr:step { { 1, 2, 3 }, { 1, 2 } } end, "batch: row 2 has 2 ids, row 1 has 3")
    assert.has_error(function() tr:step { { 1, 2, 300 } } end, "batch: row 1, id 3 is 300, out of range 0..299")
    assert.has_error(function() slm.train.trainer(assert(slm.load(helpers.fixture("gguf/dense-q8_0.gguf") or "x"))) end)
    assert.has_error(function() slm.train.init { vocab = 300, dim = 30, layers = 1, heads = 4, ff = 8, ctx = 8 } end,
                     "init: heads must be a divisor of dim 30, got 4")
  end)

  it("refuses, when the trainer is made, what has no backward instead of training without it", function()
    local cases = {
      { "gguf3/mixtral-f16.gguf", "train: layer 0's moe block has no backward yet" },
      { "gguf3/lfm2-f16.gguf", "trainer: lfm2 models cannot be trained yet (trainable: llama family, gemma, mamba, rwkv7)" },
      { "gguf3/mamba2-f16.gguf", "train: Mamba-2 mixers have no backward yet" },
      { "gguf/rwkv6-tiny-f16.gguf", "train: RWKV v6 has no backward (RWKV-7 only)" },
    }
    local n = 0
    for _, c in ipairs(cases) do
      local path = helpers.fixture(c[1])
      if path then
        local m = assert(slm.load(path, { train = true }))
        assert.has_error(function() slm.train.trainer(m, { lr = 1e-3 }) end, c[2])
        n = n + 1
      end
    end
    if n == 0 then return pending("fixtures not found") end
    local m = slm.train.init { vocab = 300, dim = 32, layers = 1, heads = 2, ff = 40, ctx = 8 }
    local tr = slm.train.trainer(m, { lr = 1e-3 })
    local h = m:hook("blk.0.ffn_out", function() end)
    assert.has_error(function() tr:step { { 1, 2, 3 } } end,
                     "train: the model has hooks (model:hook); a training forward does not run them")
    h:remove()
    assert.is_number((tr:step { { 1, 2, 3 } }))
  end)
end)
