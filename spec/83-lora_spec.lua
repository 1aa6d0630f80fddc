-- LoRA adapters (slm.lora): the reference implementation's GGUF layout,
-- merged at load with scale * alpha / r, checked against a hand merge.
local helpers = require "spec.helpers"
local slm = require "slm"

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".gguf"
end

local function max_diff(a, b)
  local d = 0
  for i = 1, #a do d = math.max(d, math.abs(a[i] - b[i])) end
  return d
end

local function logits_of(model, ids)
  return model:session { ctx = 64 }:eval(ids):totable()
end

local run = helpers.run

describe("LoRA adapters", function()
  local base_path, adapter, adapter0, base, ids, ref
  setup(function()
    base_path = helpers.fixture("gguf/dense-f16.gguf")
    if not base_path then return end
    adapter = slm.lora.random_adapter { base = base_path, path = tmpname(), rank = 4, alpha = 8,
                                        targets = { "attn_q", "attn_v", "ffn_down" }, seed = 3, std = 0.05 }
    adapter0 = slm.lora.random_adapter { base = base_path, path = tmpname(), rank = 8, alpha = 0,
                                         targets = { "ffn_up" }, seed = 5, std = 0.05 }
    base = assert(slm.load(base_path))
    ids = base.tokenizer:encode("Once upon a time there was")
    ref = logits_of(base, ids)
  end)
  teardown(function()
    if adapter then os.remove(adapter) end
    if adapter0 then os.remove(adapter0) end
  end)

  it("is written in the reference layout", function()
    if not base_path then return pending("fixture gguf/dense-f16.gguf not found") end
    local f = assert(slm.gguf.open(adapter))
    assert.equal("adapter", f.metadata["general.type"])
    assert.equal("lora", f.metadata["adapter.type"])
    assert.equal(8, f.metadata["adapter.lora.alpha"])
    assert.equal("f32", f:type("adapter.lora.alpha"))
    -- ggml order ne = {in, r} for lora_a and {r, out} for lora_b: shapes (r, in), (out, r)
    assert.same({ 4, base.hp.dim }, f:info("blk.0.attn_q.weight.lora_a").shape)
    assert.same({ base.hp.n_head * base.hp.head_dim, 4 }, f:info("blk.0.attn_q.weight.lora_b").shape)
    assert.same({ base.hp.dim, 4 }, f:info("blk.3.ffn_down.weight.lora_b").shape)
    assert.same({ 4, base.hp.n_ff }, f:info("blk.3.ffn_down.weight.lora_a").shape)
    assert.equal(3 * 2 * base.hp.n_layer, #f.tensors)
    f:close()
  end)

  it("scale 0 is the identity", function()
    if not base_path then return pending("fixture gguf/dense-f16.gguf not found") end
    local m = assert(slm.load(base_path, { lora = { { path = adapter, scale = 0 } } }))
    assert.equal(0, max_diff(ref, logits_of(m, ids)))
  end)

  it("merges W + (scale * alpha / r) B A, as a hand computation on one layer", function()
    if not base_path then return pending("fixture gguf/dense-f16.gguf not found") end
    local m = assert(slm.load(base_path, { lora = { path = adapter, scale = 0.5 } }))
    local name = "blk.2.attn_v.weight"
    local W = base.source.tensor(name):to("f32"):totable()
    local f = assert(slm.gguf.open(adapter))
    local A = f:tensor(name .. ".lora_a"):totable()
    local B = f:tensor(name .. ".lora_b"):totable()
    f:close()
    local s = 0.5 * 8 / 4
    local got = m.source.tensor(name)
    assert.equal("f32", got:dtype())
    got = got:totable()
    local worst = 0
    for o = 1, #W do
      for i = 1, #W[1] do
        local d = 0
        for r = 1, #A do d = d + B[o][r] * A[r][i] end
        worst = math.max(worst, math.abs(W[o][i] + s * d - got[o][i]))
      end
    end
    assert.is_true(worst < 1e-6, "worst " .. worst)
    -- weights without an adapter stay the file's own views
    assert.equal("f16", m.source.tensor("blk.2.attn_k.weight"):dtype())
    assert.is_true(max_diff(ref, logits_of(m, ids)) > 1e-3)
  end)

  it("alpha 0 means the user scale alone; adapters add up", function()
    if not base_path then return pending("fixture gguf/dense-f16.gguf not found") end
    local name = "blk.1.ffn_up.weight"
    local f = assert(slm.gguf.open(adapter0))
    local A, B = f:tensor(name .. ".lora_a"), f:tensor(name .. ".lora_b")
    f:close()
    local m = assert(slm.load(base_path, { lora = { { path = adapter0, scale = 0.25 } } }))
    local want = slm.lora.merge(base.source.tensor(name), A, B, 0.25)
    assert.equal(want:tobytes(), m.source.tensor(name):tobytes())
    -- two adapters: each merged with its own scale
    local both = assert(slm.load(base_path, { lora = { { path = adapter, scale = 1 }, { path = adapter0, scale = 0.25 } } }))
    assert.equal(want:tobytes(), both.source.tensor(name):tobytes())
    local only = assert(slm.load(base_path, { lora = { { path = adapter, scale = 1 } } }))
    assert.equal(only.source.tensor("blk.1.attn_q.weight"):tobytes(), both.source.tensor("blk.1.attn_q.weight"):tobytes())
  end)

  it("apply_lora on a loaded model equals loading with the adapter; the merged GGUF too", function()
    if not base_path then return pending("fixture gguf/dense-f16.gguf not found") end
    local at_load = logits_of(assert(slm.load(base_path, { lora = { { path = adapter, scale = 1 } } })), ids)
    local m = assert(slm.load(base_path))
    assert.equal(m, m:apply_lora(adapter, 1.0))
    assert.equal(0, max_diff(at_load, logits_of(m, ids)))
    local out = tmpname()
    assert.is_true(slm.lora.save_merged(m, out))
    local merged = assert(slm.load(out))
    assert.equal("f32", merged.source.tensor("blk.0.attn_q.weight"):dtype())
    assert.equal(0, max_diff(at_load, logits_of(merged, ids)))
    os.remove(out)
    -- dtype = "keep" requantizes to the base dtype: near the f32 merge
    local src = slm.lora.source(base.source, { { path = adapter, scale = 1 } }, { dtype = "keep" })
    assert.equal("f16", src.tensor("blk.0.attn_q.weight"):dtype())
  end)

  it("works on quantized bases (dequantize, merge in f32)", function()
    local qpath = helpers.fixture("gguf/dense-q4_0.gguf")
    if not base_path or not qpath then return pending("dense fixtures not found") end
    local q = assert(slm.load(qpath))
    local qa = assert(slm.load(qpath, { lora = { { path = adapter, scale = 1 } } }))
    local fa = assert(slm.load(base_path, { lora = { { path = adapter, scale = 1 } } }))
    -- the adapter moves the q4_0 model as it moves the f16 one
    local text = "Once upon a time there was a little girl who lived in a village."
    local kq = slm.eval.kl(q, qa, text, { ctx = 64 })
    local kf = slm.eval.kl(base, fa, text, { ctx = 64 })
    assert.is_true(kq.mean > 0 and kf.mean > 0)
    assert.is_true(math.abs(kq.mean - kf.mean) < 0.5 * kf.mean, kq.mean .. " vs " .. kf.mean)
  end)

  it("reports files that are not adapters or do not fit the model", function()
    if not base_path then return pending("fixture gguf/dense-f16.gguf not found") end
    local m, err = slm.load(base_path, { lora = { { path = base_path } } })
    assert.is_nil(m)
    assert.matches("not a LoRA adapter", err, 1, true)
    m, err = slm.load(base_path, { lora = { { path = "/nonexistent.gguf" } } })
    assert.is_nil(m)
    assert.matches("nonexistent", err, 1, true)
    local mp = helpers.fixture("gguf/mamba-f16.gguf")
    if mp then
      m, err = slm.load(mp, { lora = { { path = adapter } } })
      assert.is_nil(m)
      assert.matches("the model has no tensor blk.", err, 1, true)
    end
    local A, B = slm.tensor.zeros({ 2, 8 }), slm.tensor.zeros({ 4, 2 })
    assert.has_error(function() slm.lora.merge(slm.tensor.zeros({ 4, 9 }), A, B, 1) end,
                     "lora: adapter shapes (2x8, 4x2) do not fit the weight (4x9)")
  end)
end)

describe("examples", function()
  it("lora.lua builds, applies and merges an adapter", function()
    local p, why = helpers.fixture("gguf/dense-f16.gguf")
    if not p then return pending(why) end
    local out, code = run("bin/slm examples/lora.lua " .. p)
    assert.equal(0, code, out)
    assert.matches("scale 1.00", out, 1, true)
    assert.matches("merged file: identical logits", out, 1, true)
  end)
end)
