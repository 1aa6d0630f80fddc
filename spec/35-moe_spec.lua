-- Mixture-of-experts models (Mixtral's layout in a llama file, qwen2moe,
-- qwen3moe, olmoe) and Mamba-2 against the reference's logits and greedy ids
-- (../shared/fixtures/gguf3/*.ref, README there: f16 within 0.01 s,
-- quantized within 0.05 s, every greedy id held); then the experiments on
-- experts: the router hook, usage counts, disabling and forcing experts,
-- and pruning experts into a smaller file.
local helpers = require "spec.helpers"
local slm = require "slm"

local PROMPT = { 1, 72, 300, 45, 290, 301, 17, 99 }

local function bound(q) return q == "f16" and 0.01 or 0.05 end

local function load(stem)
  local path, why = helpers.fixture("gguf3/" .. stem .. ".gguf")
  if not path then return nil, why end
  return assert(slm.load(path))
end

-- the logits after each prompt token (as strings of bytes) in a session
local function rows(model, opts)
  local s = model:session(opts or { ctx = 64 })
  local out = {}
  for i, id in ipairs(PROMPT) do out[i] = s:eval({ id }):tobytes() end
  return out, s
end

describe("MoE and Mamba-2 parity with the reference", function()
  for _, fam in ipairs { "mixtral", "qwen2moe", "qwen3moe", "olmoe", "mamba2" } do
    for _, q in ipairs { "f16", "q8_0", "q4_k_m" } do
      local stem = fam .. "-" .. q
      it(stem .. " logits and greedy ids", function()
        local model, why = load(stem)
        if not model then return pending(why) end
        helpers.check_parity(model, helpers.read_ref(helpers.fixture("gguf3/" .. stem .. ".ref")), PROMPT, bound(q))
      end)
    end
  end

  -- a batch groups its rows by expert; a row's logits do not depend on it
  for _, stem in ipairs { "mixtral-q4_k_m", "qwen2moe-q8_0", "olmoe-f16" } do
    it(stem .. ": the prompt in batches gives token-by-token logits bit for bit", function()
      local model, why = load(stem)
      if not model then return pending(why) end
      local want = rows(model)
      for _, batch in ipairs { 3, 8 } do
        local s = model:session { ctx = 64, batch = batch }
        assert.equal(want[#PROMPT], s:eval(PROMPT):tobytes(), "batch " .. batch)
      end
    end)
  end
end)

describe("experiments on experts", function()
  -- The README's routing facts (the reference's, checked against an
  -- independent float64 implementation): the positions whose block-3
  -- routing chose an expert.
  local CHOSE = {
    { "mixtral-f16", 0, { 0, 1, 2, 5 } }, { "mixtral-f16", 1, { 2, 3, 6 } },
    { "qwen2moe-f16", 0, { 1, 2, 3, 6 } }, { "olmoe-f16", 1, { 2, 3, 4, 6 } },
  }
  for _, c in ipairs(CHOSE) do
    local stem, expert, positions = c[1], c[2], c[3]
    it(stem .. ": disabling expert " .. expert .. " of layer 3 changes exactly positions "
       .. table.concat(positions, ","), function()
      local model, why = load(stem)
      if not model then return pending(why) end
      local base = rows(model)
      local v = model:variant { experts = { [3] = { disable = { expert } } } }
      local got = rows(v)
      local changed = {}
      for i = 1, 7 do    -- the README lists positions 0..6
        if got[i] ~= base[i] then changed[#changed + 1] = i - 1 end
      end
      assert.same(positions, changed)
    end)
  end

  it("usage counts and the router hook agree with the README's routing", function()
    local model, why = load("mixtral-f16")
    if not model then return pending(why) end
    local seen = {}
    local h = model:hook("blk.3.router", function(t, info)
      -- t: (n, n_expert) router logits of this call; top-2 by logit is
      -- top-2 by probability
      for r = 1, info.n do
        local a, b = 1, 2
        if t:get(r, 2) > t:get(r, 1) then a, b = 2, 1 end
        for e = 3, 4 do
          local x = t:get(r, e)
          if x > t:get(r, a) then a, b = e, a elseif x > t:get(r, b) then b = e end
        end
        seen[#seen + 1] = { a - 1, b - 1 }
      end
    end)
    local _, s = rows(model)
    h:remove()
    local c = s:expert_counts()
    -- positions 0..7 of the prompt: expert 0 chosen at 0, 1, 2, 5 (and
    -- perhaps 7, which the README does not list), expert 1 at 2, 3, 6
    local by_hook = { [0] = 0, 0, 0, 0 }
    for _, pair in ipairs(seen) do for _, e in ipairs(pair) do by_hook[e] = by_hook[e] + 1 end end
    for e = 0, 3 do assert.equal(by_hook[e], c[3][e]) end
    local total = 0
    for e = 0, 3 do total = total + c[3][e] end
    assert.equal(2 * #PROMPT, total)
    local chose0, chose1 = {}, {}
    for p = 1, 7 do
      if seen[p][1] == 0 or seen[p][2] == 0 then chose0[#chose0 + 1] = p - 1 end
      if seen[p][1] == 1 or seen[p][2] == 1 then chose1[#chose1 + 1] = p - 1 end
    end
    assert.same({ 0, 1, 2, 5 }, chose0)
    assert.same({ 2, 3, 6 }, chose1)
    s:reset_expert_counts()
    assert.equal(0, s:expert_counts()[3][0])
    assert.has_error(function() slm.load(helpers.fixture("gguf/dense-q8_0.gguf")):session():expert_counts() end,
                     "expert_counts: this model has no experts")
  end)

  it("a hook that changes router logits changes the routing", function()
    local model, why = load("qwen3moe-f16")
    if not model then return pending(why) end
    local base = rows(model)
    local h = model:hook("blk.0.router", function(t, info)
      for r = 1, info.n do t:set(r, 1, 100) end   -- expert 0 always wins
    end)
    local got, s = rows(model)
    h:remove()
    assert.are_not.equal(base[8], got[8])
    assert.equal(#PROMPT, s:expert_counts()[0][0])
  end)

  it("forcing an expert puts it in every token's choice", function()
    local model, why = load("olmoe-f16")
    if not model then return pending(why) end
    local v = model:variant { experts = { [2] = { force = { 5, 6 } } } }
    local _, s = rows(v)
    local c = s:expert_counts()
    assert.equal(#PROMPT, c[2][5])
    assert.equal(#PROMPT, c[2][6])
  end)

  it("variant errors name the problem", function()
    local model, why = load("qwen3moe-f16")
    if not model then return pending(why) end
    assert.has_error(function() model:variant { experts = { [4] = { disable = { 0 } } } } end,
                     "variant: experts layer 4 is not a layer (0..3)")
    assert.has_error(function() model:variant { experts = { [0] = { disable = { 8 } } } } end,
                     "variant: experts[0].disable: 8 is not an expert (0..7)")
    assert.has_error(function() model:variant { experts = { [0] = { force = { 1, 2, 3 } } } } end,
                     "variant: experts[0]: 3 forced experts, a token uses 2")
    assert.has_error(function() model:variant { experts = { [0] = { disable = { 0, 1, 2, 3, 4, 5, 6 } } } } end,
                     "variant: experts[0]: 1 experts left, a token uses 2")
    assert.has_error(function() model:variant { experts = { [0] = { drop = { 1 } } } } end,
                     "variant: experts[0]: unknown key 'drop' (disable, force)")
    assert.has_error(function() model:variant { experts = { [0] = { disable = { 1 }, force = { 1 } } } } end)
    local dense = assert(slm.load(helpers.fixture("gguf/dense-q8_0.gguf")))
    assert.has_error(function() dense:variant { experts = { [0] = { disable = { 0 } } } } end,
                     "variant: experts: this model has no experts")
  end)

  it("pruned experts give a loadable, smaller file that computes as the variant without them", function()
    local path, why = helpers.fixture("gguf3/qwen3moe-f16.gguf")
    if not path then return pending(why) end
    local out = os.tmpname() .. ".gguf"
    helpers.tmpnames[#helpers.tmpnames + 1] = out
    local drop = { [0] = { 1, 2 }, [1] = { 0, 7 }, [2] = { 3, 4 }, [3] = { 5, 6 } }
    local ok, keep = slm.prune.experts(path, out, { drop = drop })
    assert.is_true(ok)
    assert.same({ 0, 3, 4, 5, 6, 7 }, keep[0])
    local size = function(p) local f = assert(io.open(p, "rb")) local n = f:seek("end") f:close() return n end
    assert.is_true(size(out) < size(path))
    local pruned = assert(slm.load(out))
    assert.equal(6, pruned.net.n_expert)
    -- qwen3moe renormalizes its chosen weights, so dropping experts equals
    -- disabling them (the softmax's denominator cancels): same up to rounding
    local base = assert(slm.load(path))
    local disable = {}
    for l, list in pairs(drop) do disable[l] = { disable = list } end
    local v = base:variant { experts = disable }
    local a = pruned:session({ ctx = 64 }):eval(PROMPT)
    local b = v:session({ ctx = 64 }):eval(PROMPT)
    local ref = {}
    for i = 1, b:numel() do ref[i] = b:get(i) end
    assert.is_true(helpers.max_diff(a, ref) < 1e-4)
    -- by usage: the 4 most used experts of each layer
    local _, s = rows(base)
    local ok2, keep2 = slm.prune.experts(path, out, { counts = s:expert_counts(), n_keep = 4 })
    assert.is_true(ok2)
    assert.equal(4, #keep2[3])
    assert.equal(4, assert(slm.load(out)).net.n_expert)
    assert.has_error(function() slm.prune.experts(path, out, { drop = { [0] = { 1 } } }) end,
                     "prune.experts: layer 1 keeps 8 experts, another 7: every layer must keep as many")
    assert.has_error(function() slm.prune.experts(path, out, { keep = { [0] = { 9 } } }) end,
                     "prune.experts: keep[0]: 9 is not an expert (0..7)")
    assert.has_error(function() slm.prune.experts(path, out, { n_keep = 2 }) end,
                     "prune.experts: give keep, drop, or counts and n_keep")
    local dense = helpers.fixture("gguf/dense-q8_0.gguf")
    local nok, err = slm.prune.experts(dense, out, { keep = { [0] = { 0 } } })
    assert.is_nil(nok)
    assert.equal(dense .. ": not a mixture-of-experts model (no llama.expert_count)", err)
  end)
end)
