-- The 2026 dense families (qwen3, gemma2, gemma3, Llama-3 RoPE, Phi-4-mini,
-- SmolLM3, Granite) against the reference implementation's logits and
-- greedy ids (../shared/fixtures/gguf2/*.ref, README there): f16 within
-- 0.01 s, q8_0 / q4_k_m within 0.05 s at every prompt position (s = std of
-- the reference logits), every greedy id the .ref holds; the long-prompt
-- references where the window, the RoPE factors and the caps matter.
-- Then what the loader refuses (a tensor or a key it does not understand),
-- and the sliding-window ring: same logits as a full cache, less memory,
-- snapshots that continue exactly.
local helpers = require "spec.helpers"
local slm = require "slm"

local STD = { 1, 72, 300, 45, 290, 301, 17, 99 }

local function prompt_file(name)
  local path = helpers.fixture("gguf2/" .. name)
  if not path then return nil end
  local ids = {}
  for n in helpers.read(path):gmatch("%d+") do ids[#ids + 1] = tonumber(n) end
  return ids
end

local function bound(q) return q == "f16" and 0.01 or 0.05 end

-- The reference's logits at every position and its greedy ids
-- (helpers.check_parity; the reference ran with a 512-token context, which
-- phi4mini's long RoPE factors depend on).
local function check(stem, q, kind, prompt)
  local ref_path, why = helpers.fixture("gguf2/" .. stem .. "-" .. q .. (kind and ("." .. kind) or "") .. ".ref")
  if not ref_path then return pending(why) end
  local model = assert(slm.load(helpers.fixture("gguf2/" .. stem .. "-" .. q .. ".gguf")))
  helpers.check_parity(model, helpers.read_ref(ref_path), prompt, bound(q))
end

-- A copy of a fixture with extra tensors and metadata (spec/helpers.lua)
local altered = helpers.altered

describe("2026 families: parity with the reference", function()
  for _, stem in ipairs { "qwen3", "gemma3", "gemma2", "llama3", "phi4mini", "smollm3", "granite" } do
    for _, q in ipairs { "f16", "q8_0", "q4_k_m" } do
      it(stem .. "-" .. q .. " logits and greedy ids", function() check(stem, q, nil, STD) end)
    end
  end
  for _, stem in ipairs { "gemma3", "gemma2", "llama3", "phi4mini" } do
    it(stem .. "-f16 on the 32-token prompt (past the window, the factors, the caps)", function()
      local p = prompt_file("LONG_PROMPT")
      if not p then return pending("fixture gguf2/LONG_PROMPT not found (set SLM_FIXTURES)") end
      check(stem, "f16", "long", p)
    end)
  end
  it("llama3-f16 on the 480-token prompt (where rope_freqs matters most)", function()
    local p = prompt_file("LONG480_PROMPT")
    if not p then return pending("fixture gguf2/LONG480_PROMPT not found (set SLM_FIXTURES)") end
    check("llama3", "f16", "long480", p)
  end)

  it("phi4mini: long or short factors by the context rounded up to 256, as the reference", function()
    local path, why = helpers.fixture("gguf2/phi4mini-f16.gguf")
    if not path then return pending(why) end
    local ref = helpers.read_ref(helpers.fixture("gguf2/phi4mini-f16.ref"))
    local function worst(model, ctx)
      local s, w = model:session { ctx = ctx }, 0
      for p = 1, ref.n_pos do w = math.max(w, helpers.max_diff(s:eval { STD[p] }, ref.logits[p]) / ref.sd) end
      return w
    end
    -- original context 128: any context (at least 256 once rounded) takes
    -- the long factors the reference used
    assert.is_true(worst(assert(slm.load(path)), 100) <= 0.01)
    -- original context 1024: 512 and 1000 (1024 rounded) take the short
    -- factors, 1100 (1280) the long ones
    local path2 = altered(path, { drop = { ["phi3.rope.scaling.original_context_length"] = true },
                                  metadata = { { "phi3.rope.scaling.original_context_length", { type = "u32", value = 1024 } } } })
    local m2 = assert(slm.load(path2))
    assert.is_true(worst(m2, 1000) > 0.1)
    assert.is_true(worst(m2, 512) > 0.1)
    assert.is_true(worst(m2, 1100) <= 0.01)
  end)
end)

describe("the loader refuses what it does not understand", function()
  it("a llama file with a tensor the code does not know", function()
    local src, why = helpers.fixture("gguf/dense-f16.gguf")
    if not src then return pending(why) end
    local path = altered(src, { tensors = { { name = "blk.1.attn_gate.weight", tensor = slm.tensor.zeros { 256 } } } })
    local m, err = slm.load(path)
    assert.is_nil(m)
    assert.equal(path .. ": tensor 'blk.1.attn_gate.weight' is not used by slm's llama definition "
                 .. "(refusing to compute without it)", err)
    -- the same file without it loads
    assert.is_not_nil(slm.load(altered(src, {})))
  end)

  it("a metadata key that would change the computation", function()
    local src, why = helpers.fixture("gguf/dense-f16.gguf")
    if not src then return pending(why) end
    local path = altered(src, { metadata = { { "llama.attention.logit_bias", { type = "f32", value = 2.0 } } } })
    local m, err = slm.load(path)
    assert.is_nil(m)
    assert.equal(path .. ": metadata key 'llama.attention.logit_bias' is not understood by slm's llama "
                 .. "definition (it may change the computation)", err)
  end)

  it("a rope scaling it does not implement, experts, a list where a number belongs", function()
    local src, why = helpers.fixture("gguf/dense-f16.gguf")
    if not src then return pending(why) end
    local p1 = altered(src, { metadata = { { "llama.rope.scaling.type", "yarn" }, { "llama.rope.scaling.factor", { type = "f32", value = 4.0 } } } })
    assert.equal(p1 .. ": llama.rope.scaling.type 'yarn' is not supported (only linear)", select(2, slm.load(p1)))
    local p2 = altered(src, { metadata = { { "llama.expert_count", { type = "u32", value = 8 } } } })
    assert.equal(p2 .. ": llama.expert_used_count 0 of expert_count 8 (expected 1..count, count <= 256)",
                 select(2, slm.load(p2)))
    local qwen2 = helpers.fixture("gguf/qwen2-q8_0.gguf")
    local p4 = altered(qwen2, { metadata = { { "qwen2.expert_count", { type = "u32", value = 4 } },
                                             { "qwen2.expert_used_count", { type = "u32", value = 2 } } } })
    assert.equal(p4 .. ": qwen2.expert_count is 4: slm has no qwen2 mixture-of-experts layout", select(2, slm.load(p4)))
    local p3 = altered(src, { drop = { ["llama.attention.head_count"] = true },
                              metadata = { { "llama.attention.head_count", { type = "u32", value = { 8, 8, 8, 8 } } } } })
    assert.equal(p3 .. ": metadata llama.attention.head_count holds a list (per-layer values are not supported)",
                 select(2, slm.load(p3)))
  end)

  it("hostile values: a huge window, a negative RoPE base, a zero logit scale", function()
    local g2, why = helpers.fixture("gguf2/gemma2-f16.gguf")
    if not g2 then return pending(why) end
    local function with(src, key, v)
      return altered(src, { drop = { [key] = true }, metadata = { { key, v } } })
    end
    local p1 = with(g2, "gemma2.attention.sliding_window", { type = "u32", value = 4000000000 })
    assert.equal(p1 .. ": gemma2.attention.sliding_window is 4000000000 (expected 0..16777216)", select(2, slm.load(p1)))
    local p2 = with(helpers.fixture("gguf2/qwen3-f16.gguf"), "qwen3.rope.freq_base", { type = "f32", value = -1.0 })
    assert.equal(p2 .. ": qwen3.rope.freq_base is -1.0 (expected a positive number)", select(2, slm.load(p2)))
    local p3 = with(helpers.fixture("gguf2/granite-f16.gguf"), "granite.logit_scale", { type = "f32", value = 0.0 })
    assert.equal(p3 .. ": granite.logit_scale is 0.0 (expected a positive number)", select(2, slm.load(p3)))
  end)

  it("llama 3 RoPE factors of the wrong length, and a llama file with partial rotary", function()
    local dense, why = helpers.fixture("gguf/dense-f16.gguf")
    if not dense then return pending(why) end
    local p2 = altered(dense, { drop = { ["llama.rope.dimension_count"] = true },
                                metadata = { { "llama.rope.dimension_count", { type = "u32", value = 16 } } } })
    assert.equal(p2 .. ": llama.rope.dimension_count is 16, the head size 32", select(2, slm.load(p2)))
    local p3 = altered(dense, { tensors = { { name = "rope_freqs.weight", tensor = slm.tensor.zeros { 8 } } } })
    assert.equal(p3 .. ": tensor rope_freqs.weight has 8 values, expected 16", select(2, slm.load(p3)))
  end)
end)

describe("sliding-window layers", function()
  local function run(model, opts, prompt)
    local s = model:session(opts)
    local rows = {}
    for i, id in ipairs(prompt) do rows[i] = s:eval({ id }):tobytes() end
    return rows, s
  end

  for _, stem in ipairs { "gemma3", "gemma2" } do
    it(stem .. ": the ring gives the logits of a full cache bit for bit, in less memory", function()
      local path, why = helpers.fixture("gguf2/" .. stem .. "-q8_0.gguf")
      if not path then return pending(why) end
      local p = prompt_file("LONG_PROMPT")
      local model = assert(slm.load(path))
      local a, sa = run(model, { ctx = 256, batch = 4 }, p)
      local b, sb = run(model, { ctx = 256, batch = 4, swa_ring = false }, p)
      assert.same(a, b)
      -- gemma3: 5 of 6 layers slide (window 4); gemma2: 2 of 4 (window 6)
      local window = stem == "gemma3" and 4 or 6
      local n_swa = stem == "gemma3" and 5 or 2
      local layers, kv = stem == "gemma3" and 6 or 4, stem == "gemma3" and 2 or 4
      local row = 2 * kv * 64 * 2     -- k + v: kv heads x 64 dims, f16
      assert.equal(layers * 256 * row, sb.state:bytes())
      assert.equal((layers - n_swa) * 256 * row + n_swa * (window + 4 - 1) * row, sa.state:bytes())
    end)

    it(stem .. ": a prompt in batches that cross the window equals token by token", function()
      local path, why = helpers.fixture("gguf2/" .. stem .. "-f16.gguf")
      if not path then return pending(why) end
      local p = prompt_file("LONG_PROMPT")
      local model = assert(slm.load(path))
      local a = run(model, { ctx = 64 }, p)
      for _, batch in ipairs { 3, 7, 32 } do
        local s = model:session { ctx = 64, batch = batch }
        local l = s:eval(p)
        local want = slm.tensor.frombytes(a[#p], "f32", { l:numel() })
        local diff = 0
        for i = 1, l:numel() do diff = math.max(diff, math.abs(l:get(i) - want:get(i))) end
        assert.is_true(diff < 1e-4, "batch " .. batch .. ": " .. diff)
      end
    end)

    it(stem .. ": snapshot, restore and fork past the window continue exactly", function()
      local path, why = helpers.fixture("gguf2/" .. stem .. "-q8_0.gguf")
      if not path then return pending(why) end
      local p = prompt_file("LONG_PROMPT")
      local model = assert(slm.load(path))
      local s = model:session { ctx = 128, batch = 5 }
      s:eval(table.move(p, 1, 20, 1, {}))
      local snap = s:snapshot()
      local rest = table.move(p, 21, #p, 1, {})
      local want = s:eval(rest):tobytes()
      -- a fresh session of another batch (another ring length) restores it
      local t = model:session { ctx = 128, batch = 2 }
      t:restore(snap)
      assert.equal(want, t:eval(rest):tobytes())
      s:restore(snap)
      assert.equal(want, s:fork():eval(rest):tobytes())
      -- the windowed layers keep only their last window - 1 positions:
      -- header, per layer 12 bytes + positions x (k + v) rows of f16
      local per_pos = stem == "gemma3" and 2 * 2 * 64 * 2 or 2 * 4 * 64 * 2
      local rows = stem == "gemma3" and 5 * 3 + 1 * 20 or 2 * 5 + 2 * 20
      local layers = stem == "gemma3" and 6 or 4
      assert.equal(40 + 12 * layers + rows * per_pos, #snap.state)   -- header of 2 dims
      -- and a session without rings takes the same snapshot
      local full = model:session { ctx = 128, swa_ring = false }
      assert.equal(want, full:restore(snap):eval(rest):tobytes())
    end)
  end

  it("a session option that is not one rejects, swa_ring must be a boolean", function()
    local path, why = helpers.fixture("gguf2/gemma3-f16.gguf")
    if not path then return pending(why) end
    local model = assert(slm.load(path))
    assert.has_error(function() model:session { ctx = 64, swa = false } end,
                     "session: unknown option 'swa' (known: batch, ctx, kv_type, swa_ring)")
    assert.has_error(function() model:session { swa_ring = "no" } end, 'session: swa_ring must be a boolean, got "no"')
  end)
end)
