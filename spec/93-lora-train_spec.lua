-- LoRA / QLoRA training (slm.train.lora) and unmerged adapters at run time
-- (model:lora_add/lora_scale/lora_remove, csrc/core/lora_link.h).
-- Ground truth: central finite differences of the loss (gradients), the
-- reference dequantizer (tensor:to("f32")) for the frozen products, and
-- the merge at load of slm.lora (checked against a hand merge by
-- spec/83-lora_spec.lua) for the unmerged application.
local slm = require "slm"
local helpers = require "spec.helpers"

local KL, K = slm.core.lora, slm.core.train

local function tmp(ext)
  local p = os.tmpname()
  os.remove(p)
  return p .. (ext or ".gguf")
end

local function maxabs(a, b)
  local d = 0
  for i = 1, #a do d = math.max(d, math.abs(a[i] - b[i])) end
  return d
end

local function flat(t) return t:reshape { t:numel() }:totable() end

local function std(a)
  local m, s = 0, 0
  for i = 1, #a do m = m + a[i] end
  m = m / #a
  for i = 1, #a do s = s + (a[i] - m) ^ 2 end
  return math.sqrt(s / #a)
end

local DTYPES = { "f32", "f16", "q8_0", "q4_0", "q4_k" }

-- a tiny llama (dim and ff 256: whole q4_K blocks) written as f32, then
-- each 2-D weight in `dtype` (norms stay f32)
local files = {}
local function tiny(dtype)
  if files[dtype] then return files[dtype] end
  if not files.f32 then
    local m = slm.train.init { vocab = 32, dim = 256, layers = 2, heads = 4, kv_heads = 2, ff = 256, ctx = 16,
                               seed = 7, std = 0.05 }
    files.f32 = tmp()
    slm.train.trainer(m):save(files.f32)
    os.remove(slm.train.optim_path(files.f32))
  end
  if dtype ~= "f32" then
    files[dtype] = tmp()
    assert(slm.quantize(files.f32, files[dtype], function(_, info)
      if #info.shape == 2 then return dtype end
    end))
  end
  return files[dtype]
end

local BATCH = { { 1, 5, 9, 2, 7, 3, 30, 4, 11 }, { 12, 0, 31, 6, 6, 8, 19, 22, 1 } }

describe("LoRA training kernels", function()
  it("deq_linear and deq_linear_dx are the products with the dequantized weight, for every dtype", function()
    local x = slm.core.testing.randn({ 3, 256 }, 1, 1.0)
    local dy = slm.core.testing.randn({ 3, 96 }, 2, 1.0)
    for _, dt in ipairs(DTYPES) do
      local W = slm.core.testing.randn({ 96, 256 }, 3, 0.1):to(dt)
      local Wf = W:to("f32")   -- the reference dequantizer
      local y, ref = slm.tensor.zeros { 3, 96 }, slm.tensor.zeros { 3, 96 }
      KL.deq_linear(y, x, W)
      K.linear(ref, x, Wf)
      assert.is_true(maxabs(flat(y), flat(ref)) < 1e-5, dt)
      local dx, dref = slm.tensor.zeros { 3, 256 }, slm.tensor.zeros { 3, 256 }
      KL.deq_linear_dx(dx, dy, W, false)
      K.linear_backward(dref, nil, nil, dy, x, Wf, false)
      assert.is_true(maxabs(flat(dx), flat(dref)) < 1e-5, dt)
      KL.deq_linear_dx(dx, dy, W, true)   -- accumulates
      local twice = {}
      for i, v in ipairs(flat(dref)) do twice[i] = 2 * v end
      assert.is_true(maxabs(flat(dx), twice) < 2e-5, dt)
    end
  end)

  it("dropout: the mask depends on the seed only, keeps 1 - p, scales by 1 / (1 - p)", function()
    local n = 20000
    local x = slm.tensor.new((function() local t = {} for i = 1, n do t[i] = 1.0 end return t end)())
    local a, b, c = slm.tensor.zeros { n }, slm.tensor.zeros { n }, slm.tensor.zeros { n }
    KL.dropout(a, x, 0.25, 42)
    KL.dropout(b, x, 0.25, 42)
    KL.dropout(c, x, 0.25, 43)
    local kept, same, other = 0, 0, 0
    local at, bt, ct = a:totable(), b:totable(), c:totable()
    for i = 1, n do
      assert.is_true(at[i] == 0 or math.abs(at[i] - 1 / 0.75) < 1e-6)
      if at[i] ~= 0 then kept = kept + 1 end
      if at[i] == bt[i] then same = same + 1 end
      if at[i] == ct[i] then other = other + 1 end
    end
    assert.equal(n, same)
    assert.is_true(other < n * 0.8)
    assert.is_true(math.abs(kept / n - 0.75) < 0.015, kept / n)
  end)

  it("refuses bad arguments with one line", function()
    local x = slm.tensor.zeros { 2, 64 }
    local W = slm.core.testing.randn({ 8, 64 }, 1):to("q8_0")
    assert.has_error(function() KL.deq_linear(slm.tensor.zeros { 2, 7 }, x, W) end)
    assert.has_error(function() KL.deq_linear(slm.tensor.zeros { 2, 8 }, slm.tensor.zeros { 2, 32 }, W) end)
    assert.has_error(function() KL.dropout(x, x, 1.0, 1) end)
    assert.has_error(function() KL.link(slm.tensor.zeros { 4, 64 }, slm.tensor.zeros { 8, 3 }, 1) end)
    local l = KL.link(slm.tensor.zeros { 4, 64 }, slm.tensor.zeros { 9, 4 }, 1)
    assert.has_error(function() KL.attach(W, l) end)   -- 9 outputs against 8
  end)
end)

-- dA, dB (and through them dX of every frozen product above the layer)
-- against central differences of the mean loss
local function gradcheck(dtype)
  local m = assert(slm.load(tiny(dtype), { train = "lora" }))
  local tr = slm.train.trainer(m, { lora = { rank = 2, alpha = 4, targets = { "attn_q", "attn_v", "ffn_down" },
                                             seed = 3 } })
  -- B is zero at init (dA would be 0): give it values
  for i, name in ipairs(tr.names) do
    if name:match("lora_b$") then tr.model.params[name]:copy_(slm.core.testing.randn(tr.model.params[name]:shape(), 50 + i, 0.2)) end
  end
  tr:zero_grad()
  tr:backward(BATCH)
  local checked, worst = 0, 0
  for _, name in ipairs(tr.names) do
    local p, g = tr.model.params[name], flat(tr.grad[name])
    p = p:reshape { p:numel() }
    -- the largest gradient of the tensor and two others
    local big = 1
    for i = 1, #g do if math.abs(g[i]) > math.abs(g[big]) then big = i end end
    for _, i in ipairs { big, 1 + (#g // 3), #g } do
      local v = p:get(i)
      local h = 1e-2
      p:set(i, v + h)
      local lp = tr:eval_loss(BATCH)
      p:set(i, v - h)
      local lm = tr:eval_loss(BATCH)
      p:set(i, v)
      local fd = (lp - lm) / (2 * h)
      local err = math.abs(fd - g[i])
      assert.is_true(err <= 0.03 * math.abs(g[i]) + 3e-5,
                     string.format("%s %s[%d]: backward %.6g, differences %.6g", dtype, name, i, g[i], fd))
      worst = math.max(worst, err / (math.abs(g[i]) + 1e-6))
      checked = checked + 1
    end
  end
  return checked, worst, m, tr
end

describe("LoRA over a frozen base", function()
  for _, dt in ipairs(DTYPES) do
    it("gradients of A and B match finite differences over a " .. dt .. " base, which stays unchanged", function()
      local m0 = assert(slm.load(tiny(dt)))
      local names = { "blk.0.attn_q.weight", "blk.1.ffn_down.weight", "blk.1.attn_k.weight", "token_embd.weight" }
      local before = {}
      for _, n in ipairs(names) do before[n] = m0.source.tensor(n):tobytes() end
      local checked, _, m, tr = gradcheck(dt)
      assert.is_true(checked >= 36)
      assert.equal(dt, m.source.tensor("blk.0.attn_q.weight"):dtype())   -- kept as stored
      for _ = 1, 3 do tr:step(BATCH) end
      for _, n in ipairs(names) do assert.equal(before[n], m.source.tensor(n):tobytes(), n) end
      -- only the adapters are parameters
      for _, name in ipairs(tr.names) do assert.truthy(name:match("%.lora_[ab]$")) end
    end)
  end

  it("dropout is seeded: two trainers with one seed take the same steps", function()
    local function losses()
      local m = assert(slm.load(tiny("q8_0"), { train = "lora" }))
      local tr = slm.train.trainer(m, { lora = { rank = 4, dropout = 0.3, seed = 9 }, lr = 1e-2 })
      local out = {}
      for i = 1, 3 do out[i] = tr:step(BATCH) end
      return out
    end
    assert.same(losses(), losses())
  end)

  it("refuses targets it cannot adapt, and options it does not know", function()
    local m = assert(slm.load(tiny("f32"), { train = "lora" }))
    assert.has_error(function() slm.train.trainer(m, { lora = { targets = "token_embd" } }) end,
                     "lora: target token_embd.weight has no LoRA path (adapters go on the attention and feed-forward "
                     .. "projections: attn_q/k/v/qkv/output, ffn_gate/up/down)")
    assert.has_error(function() slm.train.trainer(m, { lora = { targets = "nothing_here" } }) end,
                     "lora: targets select no weight of the model")
    assert.has_error(function() slm.train.trainer(m, { lora = { rank = 0 } }) end)
    assert.has_error(function() slm.train.trainer(m, { lora = { rnak = 4 } }) end)
    assert.has_error(function() slm.train.trainer(assert(slm.load(tiny("f32"))), { lora = {} }) end,
                     'trainer: LoRA needs a model loaded with {train = "lora"} (or {train = true})')
  end)
end)

describe("LoRA adapters: saved, merged and unmerged", function()
  local ids = { 1, 5, 9, 2, 7, 3, 30, 4, 11, 12, 0, 31 }
  local function logits(model) return model:session { ctx = 16 }:eval(ids):totable() end
  teardown(function()
    for _, p in pairs(files) do os.remove(p) end
  end)

  local function trained_adapter(dt)
    local m = assert(slm.load(tiny(dt), { train = "lora" }))
    local tr = slm.train.trainer(m, { lora = { rank = 4, alpha = 8, targets = "attn_[qkvo]", seed = 2 }, lr = 2e-2 })
    for _ = 1, 4 do tr:step(BATCH) end
    local path = tmp()
    tr:save_adapter(path)
    return path, tr
  end

  it("writes the reference's layout", function()
    local path = trained_adapter("q8_0")
    local f = assert(slm.gguf.open(path))
    assert.equal("adapter", f.metadata["general.type"])
    assert.equal("lora", f.metadata["adapter.type"])
    assert.equal("f32", f:type("adapter.lora.alpha"))
    assert.equal(8, f.metadata["adapter.lora.alpha"])
    assert.equal("llama", f.metadata["general.architecture"])
    assert.same({ 4, 256 }, f:info("blk.0.attn_q.weight.lora_a").shape)
    assert.same({ 256, 4 }, f:info("blk.0.attn_q.weight.lora_b").shape)
    assert.same({ 128, 4 }, f:info("blk.1.attn_k.weight.lora_b").shape)
    assert.equal(2 * 4 * 2, #f.tensors)
    f:close()
    os.remove(path)
  end)

  for _, dt in ipairs { "f32", "q8_0", "q4_k" } do
    it("unmerged equals merged at load, scale 0 and removal give the base bit for bit (" .. dt .. ")", function()
      local path = trained_adapter(dt)
      local base = assert(slm.load(tiny(dt)))
      local l0 = logits(base)
      local merged = logits(assert(slm.load(tiny(dt), { lora = { { path = path, scale = 1 } } })))
      local merged2 = logits(assert(slm.load(tiny(dt), { lora = { { path = path, scale = 2 } } })))
      local h = base:lora_add(path, 1)
      local un = logits(base)
      local s = std(merged)
      -- the merge makes the adapted weights f32; the unmerged product keeps
      -- the base's kernel (its q8 activations for quantized weights): the
      -- two differ by the base's own f32-against-quantized difference, at
      -- most as much as the base differs from its dequantized self
      local deq = logits(assert(slm.load(tiny(dt), { lora = { { path = path, scale = 0 } } })))
      local bound = 1e-4 * s
      if dt ~= "f32" then
        local f32w = assert(slm.load(tiny(dt)))
        f32w:apply_lora(path, 1e-30)   -- every adapted weight dequantized to f32, the update below f32's ulp
        bound = bound + 2 * maxabs(logits(f32w), l0)
      end
      assert.is_true(maxabs(un, merged) <= bound, string.format("%s: %.3g > %.3g (s %.3g)", dt, maxabs(un, merged), bound, s))
      assert.is_true(maxabs(merged, l0) > 50 * maxabs(un, merged))   -- the adapter does something
      assert.same(l0, deq)
      base:lora_scale(h, 2)
      local un2 = logits(base)
      assert.is_true(maxabs(un2, merged2) <= 2 * bound)
      base:lora_scale(h, 0)
      assert.same(l0, logits(base))
      base:lora_scale(h, 1)
      base:lora_remove(h)
      assert.same(l0, logits(base))
      os.remove(path)
    end)
  end

  it("a trainer's live adapter applies unmerged and follows its steps", function()
    local m = assert(slm.load(tiny("q4_0"), { train = "lora" }))
    local tr = slm.train.trainer(m, { lora = { rank = 4, seed = 2 }, lr = 2e-2 })
    local run = assert(slm.load(tiny("q4_0")))
    local l0 = logits(run)
    run:lora_add(tr:adapter())
    assert.same(l0, logits(run))   -- B = 0 at init: the base's logits
    tr:step(BATCH)
    assert.is_true(maxabs(l0, logits(run)) > 0)
  end)

  it("lora_add refuses what does not fit", function()
    local m = assert(slm.load(tiny("f32")))
    assert.has_error(function() m:lora_add(42) end)
    assert.has_error(function() m:lora_add({ alpha = 1, pairs = { ["blk.0.nothing.weight"] = {} } }) end)
    assert.has_error(function() m:lora_scale({}, 1) end, "lora: not an adapter handle of this model")
  end)
end)
