-- Compression from Lua: magnitude pruning, attention-head and FFN-channel
-- pruning (slm.prune), and quantizing with a per-tensor policy (slm.quantize).
local helpers = require "spec.helpers"
local slm = require "slm"
local testing = require "slm.testing"

local function load(rel, opts)
  local p, why = helpers.fixture(rel)
  if not p then return nil, why end
  return assert(slm.load(p, opts)), p
end

local function zeros_in(t)
  local z = 0
  for _, v in ipairs(slm.prune.values(t)) do if v == 0 then z = z + 1 end end
  return z
end

local function max_diff(a, b)
  local d = 0
  for i = 1, #a do d = math.max(d, math.abs(a[i] - b[i])) end
  return d
end

local function logits_of(model, ids)
  return model:session { ctx = 64 }:eval(ids):totable()
end

local function tmpname()
  local p = os.tmpname()
  os.remove(p)
  return p .. ".gguf"
end

local run = helpers.run

describe("magnitude pruning", function()
  it("zeroes exactly the smallest |w| of a tensor", function()
    local t = slm.tensor.new({ { 0.5, -0.1, 0.2, -0.3 }, { 0.05, 0.7, -0.05, 0.01 } })
    local p, k = slm.prune.magnitude(t, 0.5)
    assert.equal(4, k)
    assert.same(slm.tensor.new({ { 0.5, 0, 0.2, -0.3 }, { 0, 0.7, 0, 0 } }):totable(), p:totable())
    -- ties at the threshold are broken by position, so the count stays exact
    local tie = slm.tensor.new({ 1, -1, 1, 2, 1 })
    local pt, kt = slm.prune.magnitude(tie, 0.4)
    assert.equal(2, kt)
    assert.same({ 0, 0, 1, 2, 1 }, pt:totable())
  end)

  it("exact fractions on random f32 and f16 tensors; 0 is the identity, 1 zeroes all", function()
    for _, dt in ipairs { "f32", "f16" } do
      local t = testing.randn({ 48, 64 }, 7, 1):to(dt)
      for _, f in ipairs { 0, 0.1, 0.37, 0.5, 0.9, 1 } do
        local p, k = slm.prune.magnitude(t, f)
        assert.equal(math.floor(f * 48 * 64), k)
        assert.equal(k, zeros_in(p))
        assert.equal(dt, p:dtype())
        if f == 0 then assert.equal(t:tobytes(), p:tobytes()) end
      end
      -- the survivors are the largest: min |kept| >= max |pruned|
      local vals, pv = slm.prune.values(t), slm.prune.values(slm.prune.magnitude(t, 0.5))
      local kept_min, pruned_max = math.huge, 0
      for i = 1, #vals do
        if pv[i] == 0 then pruned_max = math.max(pruned_max, math.abs(vals[i]))
        else kept_min = math.min(kept_min, math.abs(vals[i])) end
      end
      assert.is_true(kept_min >= pruned_max)
    end
  end)

  it("requantizes quantized tensors into their dtype (zeros stay zeros without a block minimum)", function()
    for _, dt in ipairs { "q8_0", "q4_0", "q5_0", "q6_k", "q4_1", "q4_k" } do
      local t = testing.randn({ 8, 256 }, 11, 1):to(dt)
      local p, k = slm.prune.magnitude(t, 0.3)
      assert.equal(dt, p:dtype())
      assert.equal(math.floor(0.3 * 8 * 256), k)
      if dt == "q4_1" or dt == "q4_k" then
        -- value = d q - m: a pruned weight lands within one step of 0
        local pv, z = slm.prune.values(p), 0
        for _, v in ipairs(pv) do if math.abs(v) < 0.2 then z = z + 1 end end
        assert.is_true(z >= k, dt)
      else
        assert.is_true(zeros_in(p) >= k, dt)
      end
    end
    -- opts.dtype stores the result in another dtype: exact zeros again
    local t = testing.randn({ 8, 256 }, 11, 1):to("q4_k")
    local p, k = slm.prune.magnitude(t, 0.3, { dtype = "f16" })
    assert.equal("f16", p:dtype())
    assert.equal(k, zeros_in(p))
  end)

  it("prunes a model per tensor or globally; the model runs; 0% is the identity", function()
    local m, why = load("gguf/dense-f16.gguf")
    if not m then return pending(why) end
    local ids = m.tokenizer:encode("Once upon a time")
    local base = logits_of(m, ids)
    local m0, st0 = slm.prune.magnitude(m, 0)
    assert.equal(0, st0.zeroed)
    assert.equal(0, max_diff(base, logits_of(m0, ids)))
    local m1, st1 = slm.prune.magnitude(m, 0.3)
    assert.equal(7 * m.hp.n_layer, st1.tensors)
    local expect = 0
    for l = 0, m.hp.n_layer - 1 do
      for _, w in ipairs { "attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down" } do
        local t = m.source.tensor("blk." .. l .. "." .. w .. ".weight")
        expect = expect + math.floor(0.3 * t:numel())
        local pt = m1.source.tensor("blk." .. l .. "." .. w .. ".weight")
        assert.equal(math.floor(0.3 * t:numel()), zeros_in(pt))
      end
    end
    assert.equal(expect, st1.zeroed)
    local pruned = logits_of(m1, ids)
    assert.is_true(max_diff(base, pruned) > 1e-4)
    -- embeddings and head untouched
    assert.equal(m.source.tensor("token_embd.weight"):tobytes(), m1.source.tensor("token_embd.weight"):tobytes())
    local mg, stg = slm.prune.magnitude(m, 0.3, { scope = "global" })
    assert.equal(math.floor(0.3 * stg.total), stg.zeroed)
    logits_of(mg, ids)
    -- the original model is unchanged
    assert.equal(0, max_diff(base, logits_of(m, ids)))
  end)

  it("rejects bad fractions", function()
    assert.has_error(function() slm.prune.magnitude(slm.tensor.new({ 1 }), 1.5) end,
                     "prune: fraction must be a number in [0, 1]")
  end)
end)

describe("structured pruning", function()
  it("zeroes a head's q rows and output columns; other weights untouched", function()
    local m, why = load("gguf/dense-q8_0.gguf")
    if not m then return pending(why) end
    local hd = m.hp.head_dim
    local p = slm.prune.heads(m, { [2] = { 1 } })
    local q = p.source.tensor("blk.2.attn_q.weight")
    local o = p.source.tensor("blk.2.attn_output.weight")
    assert.equal("q8_0", q:dtype())
    local qf, of = q:to("f32"), o:to("f32")
    assert.equal(hd * m.hp.dim, zeros_in(qf:narrow(1, hd + 1, hd)))
    assert.equal(hd * m.hp.dim, zeros_in(of:narrow(2, hd + 1, hd):contiguous()))
    assert.equal(m.source.tensor("blk.1.attn_q.weight"):tobytes(), p.source.tensor("blk.1.attn_q.weight"):tobytes())
    local ids = m.tokenizer:encode("Once upon a time")
    assert.is_true(max_diff(logits_of(m, ids), logits_of(p, ids)) > 1e-4)
    assert.has_error(function() slm.prune.heads(m, { [2] = { 99 } }) end, "prune.heads: head 99 out of range 0..7")
  end)

  it("drops FFN channels into a physically smaller GGUF that loads and runs", function()
    local m, path = load("gguf/dense-f16.gguf")
    if not m then return pending(path) end
    local ids = m.tokenizer:encode("Once upon a time")
    local base = logits_of(m, ids)
    local out = tmpname()
    -- keeping every channel is the identity (f16 survives f32 exactly)
    local ok, k = slm.prune.ffn_channels(path, out, { keep = 1.0 })
    assert.is_true(ok)
    assert.equal(m.hp.n_ff, k)
    assert.equal(0, max_diff(base, logits_of(assert(slm.load(out)), ids)))
    ok, k = slm.prune.ffn_channels(path, out, { keep = 0.5 })
    assert.is_true(ok)
    assert.equal(m.hp.n_ff // 2, k)
    local f = assert(slm.gguf.open(out))
    assert.equal(k, f.metadata["llama.feed_forward_length"])
    assert.same({ k, m.hp.dim }, f:info("blk.0.ffn_up.weight").shape)
    assert.same({ m.hp.dim, k }, f:info("blk.3.ffn_down.weight").shape)
    f:close()
    local small = assert(slm.load(out))
    assert.equal(k, small.hp.n_ff)
    local sl = logits_of(small, ids)
    assert.is_true(max_diff(base, sl) > 1e-4)
    -- a hand check: the kept channels of layer 0 are the highest-scoring ones,
    -- and row j of the new ffn_up is an original row
    local up, newup = m.source.tensor("blk.0.ffn_up.weight"), small.source.tensor("blk.0.ffn_up.weight")
    local first = newup:select(1, 1):totable()
    local found = false
    for i = 1, up:size(1) do
      if max_diff(first, up:select(1, i):totable()) == 0 then found = true break end
    end
    assert.is_true(found)
    os.remove(out)
  end)

  it("keeps quantized ffn_down rows whole blocks", function()
    local _, path = load("gguf/dense-q8_0.gguf")
    if not _ then return pending(path) end
    local out = tmpname()
    local ok, k = slm.prune.ffn_channels(path, out, { keep = 0.3 })
    assert.is_true(ok)
    assert.equal(0, k % 32)
    local f = assert(slm.gguf.open(out))
    assert.equal("q8_0", f:info("blk.0.ffn_down.weight").dtype)
    f:close()
    local small = assert(slm.load(out))
    small:session { ctx = 16 }:eval({ 1, 2, 3 })
    os.remove(out)
  end)
end)

describe("quantize with a policy", function()
  it("writes each tensor in the dtype the policy names, metadata copied", function()
    local src, path = load("gguf/dense-f16.gguf")
    if not src then return pending(path) end
    local out = tmpname()
    local calls = 0
    local ok, counts = slm.quantize(path, out, function(name, info)
      calls = calls + 1
      assert.equal(name, info.name)
      if #info.shape < 2 then return nil end                           -- norms stay f32
      if name:match("attn_v") or name:match("ffn_down") then return "q8_0" end
      if name == "token_embd.weight" then return "f16" end             -- as stored
      return "q4_0"
    end)
    assert.is_true(ok)
    local fin = assert(slm.gguf.open(path))
    local f = assert(slm.gguf.open(out))
    assert.equal(#fin.tensors, calls)
    for _, info in ipairs(f.tensors) do
      local name = info.name
      local want = #info.shape < 2 and fin:info(name).dtype
                   or (name:match("attn_v") or name:match("ffn_down")) and "q8_0"
                   or name == "token_embd.weight" and "f16" or "q4_0"
      assert.equal(want, info.dtype, name)
      -- the bytes are what slm's reference quantizer makes of the source
      assert.equal(fin:tensor(name):to(want):tobytes(), f:tensor(name):tobytes(), name)
    end
    assert.equal(2, f.metadata["general.file_type"])   -- mostly q4_0
    assert.equal(2 * src.hp.n_layer, counts.q8_0)
    for _, k in ipairs(fin.keys) do
      if k ~= "general.file_type" then assert.same(fin:typed(k), f:typed(k), k) end
    end
    -- the output loads, tokenizes the same, and its logits stay near the source's
    local q = assert(slm.load(out))
    local text = "Once upon a time there was a little girl who lived in a village."
    assert.same(src.tokenizer:encode(text), q.tokenizer:encode(text))
    local k = slm.eval.kl(src, q, text, { ctx = 64 })
    assert.is_true(k.mean > 0 and k.mean < 0.05, "KL " .. k.mean)
    fin:close()
    f:close()
    os.remove(out)
  end)

  it("takes a dtype name as the whole policy; a misfit dtype is an error naming the tensor", function()
    local _, path = load("gguf/dense-f16.gguf")
    if not _ then return pending(path) end
    local out = tmpname()
    assert.is_true(slm.quantize(path, out, "q8_0"))
    local f = assert(slm.gguf.open(out))
    assert.equal("q8_0", f:info("blk.0.attn_q.weight").dtype)
    assert.equal("f32", f:info("blk.0.attn_norm.weight").dtype)
    assert.equal(7, f.metadata["general.file_type"])
    f:close()
    -- mamba's A rows (d_state = 16 values) fit no block format
    local mpath = helpers.fixture("gguf/mamba-f16.gguf")
    if mpath then
      assert.has_error(function() slm.quantize(mpath, out, function() return "q8_0" end) end,
                       "quantize: blk.0.ssm_a rows of 16 do not fit q8_0 blocks of 32")
      assert.is_true(slm.quantize(mpath, out, "q8_0"))   -- the dtype policy keeps them
      assert(slm.load(out)):session { ctx = 8 }:eval({ 1, 2 })
    end
    assert.has_error(function() slm.quantize(path, out, function() return "q9_9" end) end,
                     "quantize: policy gave 'q9_9' for output.weight")
    local r, err = slm.quantize("/nonexistent.gguf", out, "q8_0")
    assert.is_nil(r)
    assert.matches("nonexistent", err, 1, true)
    os.remove(out)
  end)
end)

describe("examples", function()
  it("prune.lua and quantize_policy.lua run on the dense fixture", function()
    local p, why = helpers.fixture("gguf/dense-f16.gguf")
    if not p then return pending(why) end
    local out, code = run("bin/slm examples/prune.lua " .. p)
    assert.equal(0, code, out)
    assert.matches("magnitude 50%%", out)
    assert.matches("ffn channels", out, 1, true)
    local q = tmpname()
    out, code = run("bin/slm examples/quantize_policy.lua " .. p .. " " .. q)
    assert.equal(0, code, out)
    assert.matches("KL", out, 1, true)
    os.remove(q)
  end)
end)
