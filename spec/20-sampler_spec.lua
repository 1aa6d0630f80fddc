-- slm.sampler: each stage against a plain Lua computation of its rule
-- (read back through a Lua stage placed after it), seeded reproducibility,
-- the dist stage against the softmax (chi-square), Lua stages and views,
-- and the exact errors of misuse. Every seed is fixed: nothing can flake.
local helpers = require "spec.helpers"
local core = require "slm.core"
local S = require "slm.sampler"

local function errmsg(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return (tostring(e):gsub("^[^:]+:%d+: ", ""))
end

local f32 = helpers.f32   -- float32 rounding of a Lua number

-- n float32 logits in [-scale, scale)
local function logits(n, seed, scale)
  local l = helpers.randoms(n, seed, scale)
  for i = 1, n do l[i] = f32(l[i]) end
  return l
end

-- ids (0-based) ordered best first: higher logit, then lower id
local function order(l)
  local o = {}
  for i = 1, #l do o[i] = i - 1 end
  table.sort(o, function(a, b)
    if l[a + 1] ~= l[b + 1] then return l[a + 1] > l[b + 1] end
    return a < b
  end)
  return o
end

local function softmax(l)
  local max, p, sum = -math.huge, {}, 0
  for i = 1, #l do if l[i] > max then max = l[i] end end
  for i = 1, #l do p[i] = math.exp(l[i] - max); sum = sum + p[i] end
  for i = 1, #l do p[i] = p[i] / sum end
  return p
end

-- A Lua stage that records the candidates it sees: {[id] = logit}, count.
local function recorder()
  local rec = {}
  local stage = function(c)
    rec.set, rec.n, rec.order = {}, #c, {}
    for i = 1, #c do
      rec.set[c:id(i)] = c:logit(i)
      rec.order[i] = c:id(i)
    end
  end
  return stage, rec
end

describe("slm.sampler", function()
  it("builds chains and shows them", function()
    local s = S.chain{
      {"penalties", last_n = 64, repeat_penalty = 1.1, frequency = 0, presence = 0},
      {"top_k", 40}, {"top_p", 0.95, min_keep = 1}, {"min_p", 0.05}, {"typical", 0.9},
      {"temp", 0.8}, {"logit_bias", {[13] = -math.huge}}, function() end,
      {"dist", seed = 42},
    }
    assert.equal("slm.Sampler(penalties(last_n=64, repeat=1.1, frequency=0, presence=0) -> "
      .. "top_k(40) -> top_p(0.95, min_keep=1) -> min_p(0.05, min_keep=1) -> "
      .. "typical(0.9, min_keep=1) -> temp(0.8) -> logit_bias(13=-inf) -> lua -> "
      .. "dist(seed=42))", tostring(s))
    assert.equal("slm.Sampler(greedy)", tostring(S.greedy()))
    assert.equal("slm.Sampler(top_k(40) -> top_p(0.95, min_keep=1) -> min_p(0.05, min_keep=1)"
      .. " -> temp(0.8) -> dist(seed=0))", tostring(S.default{seed = 0}))
    assert.equal("slm.Sampler(penalties(last_n=64, repeat=1.2, frequency=0, presence=0) -> "
      .. "greedy)", tostring(S.default{temp = 0, repeat_penalty = 1.2}))
    assert.equal("slm.Sampler(top_k(10) -> top_p(0.5, min_keep=1) -> min_p(0.05, min_keep=1)"
      .. " -> temp(1.5) -> dist(seed=7))",
      tostring(S.default{temp = 1.5, top_k = 10, top_p = 0.5, seed = 7}))
    s:free()
    assert.equal("slm.Sampler(freed)", tostring(s))
    assert.equal("attempt to use a freed sampler", errmsg(s.sample, s, {1}))
  end)

  it("without a seed draws a fresh one, which it reports and which reproduces the run", function()
    local a, b = S.default(), S.chain{{"top_k", 4}, "dist"}
    local sa, sb = S.seed(a), S.seed(b)
    assert.is_true(math.type(sa) == "integer" and sa >= 0 and sa < 2 ^ 31)
    assert.matches("dist%(seed=" .. sa .. "%)", tostring(a))
    assert.matches("dist%(seed=" .. sb .. "%)", tostring(b))
    -- ten fresh seeds: all different (a clash has odds of ~2e-8)
    local seen = {}
    for _ = 1, 10 do
      local s = S.seed(S.default())
      assert.is_nil(seen[s])
      seen[s] = true
    end
    -- the reported seed gives the same draws
    local logits = {}
    for i = 1, 50 do logits[i] = (i % 7) / 3 end
    local again = S.default{seed = sa}
    for _ = 1, 20 do assert.equal(a:sample(logits), again:sample(logits)) end
    assert.equal(7, S.seed(S.default{seed = 7}))
    assert.is_nil(S.seed(S.default{temp = 0}))
    assert.is_nil(S.seed(S.greedy()))
  end)

  it("checks default's options by name", function()
    assert.equal("slm.sampler.default: temp must be a finite number >= 0, got -1", errmsg(S.default, {temp = -1}))
    assert.equal("slm.sampler.default: top_k must be an integer >= 0 (0 disables), got 2.5",
      errmsg(S.default, {top_k = 2.5}))
    assert.equal("slm.sampler.default: top_p must be a number in (0, 1], got 0", errmsg(S.default, {top_p = 0}))
    assert.equal("slm.sampler.default: min_p must be a number in [0, 1], got 2", errmsg(S.default, {min_p = 2}))
    assert.equal("slm.sampler.default: seed must be an integer >= 0, got -3", errmsg(S.default, {seed = -3}))
    assert.equal('slm.sampler.default: repeat_penalty must be a finite number > 0 (1 disables), got "x"',
      errmsg(S.default, {repeat_penalty = "x"}))
    assert.equal("slm.sampler.default: last_n must be an integer >= 0, got -1",
      errmsg(S.default, {repeat_penalty = 1.1, last_n = -1}))
    assert.equal("slm.sampler.default: options must be a table, got 5", errmsg(S.default, 5))
  end)

  it("rejects bad parameters with clear errors", function()
    assert.equal("slm.sampler.chain: stage 2: unknown stage 'top_q' (valid: penalties, top_k, "
      .. "top_p, min_p, typical, temp, logit_bias, greedy, dist, or a Lua function)",
      errmsg(S.chain, {{"top_k", 4}, {"top_q", 1}, "greedy"}))
    assert.equal("slm.sampler.chain: stage 1 (top_k): k must be >= 0 (got -1; 0 disables)",
      errmsg(S.chain, {{"top_k", -1}}))
    assert.equal("slm.sampler.chain: stage 1 (top_p): p must be in (0, 1] (got 1.5)",
      errmsg(S.chain, {{"top_p", 1.5}}))
    assert.equal("slm.sampler.chain: stage 1 (top_p): p must be in (0, 1] (got 0)",
      errmsg(S.chain, {{"top_p", 0}}))
    assert.equal("slm.sampler.chain: stage 1 (min_p): p must be in [0, 1] (got -0.1)",
      errmsg(S.chain, {{"min_p", -0.1}}))
    assert.equal("slm.sampler.chain: stage 1 (temp): temperature must be finite and >= 0 "
      .. "(got -1)", errmsg(S.chain, {{"temp", -1}}))
    assert.equal("slm.sampler.chain: stage 1 (top_k): k must be a number (got nil)",
      errmsg(S.chain, {{"top_k"}}))
    assert.equal("slm.sampler.chain: stage 1 (top_k): unknown parameter 'kk' (valid: k)",
      errmsg(S.chain, {{"top_k", kk = 3}}))
    assert.equal("slm.sampler.chain: stage 1 (penalties): repeat must be finite and > 0 "
      .. "(got 0; 1 disables)", errmsg(S.chain, {{"penalties", repeat_penalty = 0}}))
    assert.equal("slm.sampler.chain: stage 2 (temp): temp cannot follow greedy, which "
      .. "selects the token and must be the last stage",
      errmsg(S.chain, {"greedy", {"temp", 1}}))
    assert.equal("slm.sampler.chain: stage 1 (logit_bias): keys must be integer "
      .. "token ids (got string)", errmsg(S.chain, {{"logit_bias", {a = 1}}}))
    assert.equal("slm.sampler.default: unknown option 'temperature' (known: frequency, last_n,"
      .. " min_p, presence, repeat_penalty, seed, temp, top_k, top_p)",
      errmsg(S.default, {temperature = 1}))
    assert.equal("sampler: the chain must end with a selection (greedy or dist)",
      errmsg(function() return S.chain{{"top_k", 3}}:sample({1, 2, 3}) end))

    local s = S.chain{{"logit_bias", {[7] = 1}}, "greedy"}
    assert.equal("logit_bias: token id 7 out of range for a vocabulary of 5",
      errmsg(s.sample, s, {1, 2, 3, 4, 5}))
    assert.equal(7, s:sample({0, 0, 0, 0, 0, 0, 0, 0}))
    assert.equal("accept: token id 8 out of range [0, 8)", errmsg(s.accept, s, 8))
    assert.equal("accept: token id -1 out of range", errmsg(s.accept, s, -1))
    assert.equal("sampler: logit 2 is NaN", errmsg(s.sample, s, {0, 0, 0 / 0}))
    assert.matches("logits must be an f32 tensor or a table of numbers %(got string%)",
      errmsg(s.sample, s, "x"))
    assert.equal("logits[2] is a string, not a number", errmsg(s.sample, s, {1, "a"}))
  end)

  it("takes f32 tensors, and a vocabulary that changes size", function()
    local l = logits(1000, 5, 4)
    local t = core.tensor.fromtable(l, "f32", {1000})
    local g = S.greedy()
    assert.equal(order(l)[1], g:sample(t))
    assert.equal(order(l)[1], g:sample(l))
    assert.equal(2, g:sample({0, 1, 5}))
    assert.equal(order(l)[1], g:sample(t))
    local q = core.tensor.fromtable(l, "f16", {1000})
    assert.matches("logits must be a contiguous f32 tensor", errmsg(g.sample, g, q))
  end)

  it("greedy is the argmax, ties to the lowest id", function()
    local g = S.greedy()
    assert.equal(1, g:sample({0.5, 2, -1, 2, 1, 2}))
    assert.equal(3, g:sample({-math.huge, -math.huge, -math.huge, -1}))
    assert.equal("sampler: no candidate left (every logit is -inf)",
      errmsg(g.sample, g, {-math.huge, -math.huge}))
    local l = logits(5000, 11, 3)
    assert.equal(order(l)[1], g:sample(l))
  end)

  it("temperature divides every logit exactly", function()
    local l = logits(500, 3, 5)
    local rec_stage, rec = recorder()
    local s = S.chain{{"temp", 0.7}, rec_stage, "greedy"}
    s:sample(l)
    assert.equal(500, rec.n)
    for i = 1, 500 do
      assert.equal(f32(l[i] / f32(0.7)), rec.set[i - 1])
    end
    local z = S.chain{{"temp", 0}, rec_stage, {"dist", seed = 1}}
    assert.equal(order(l)[1], z:sample(l))
    assert.equal(1, rec.n)
  end)

  it("top-k never leaves the top k over many seeded draws", function()
    local l = logits(300, 21, 2)
    local top = {}
    for i = 1, 12 do top[order(l)[i]] = true end
    local s = S.chain{{"top_k", 12}, {"temp", 4}, {"dist", seed = 2024}}
    local seen, distinct = {}, 0
    for _ = 1, 3000 do
      local id = s:sample(l)
      assert.is_true(top[id] == true, "drew " .. id .. " outside the top 12")
      if not seen[id] then seen[id] = true; distinct = distinct + 1 end
    end
    assert.equal(12, distinct)
  end)

  it("top-p keeps the smallest best-first set whose mass is >= p", function()
    local checked = 0
    for trial = 1, 12 do
      local l = logits(800, 100 + trial, trial % 2 == 0 and 8 or 2)
      local p = 0.1 + 0.07 * trial
      local pr, o = softmax(l), order(l)
      local m, cum = 0, 0
      while cum < p do m = m + 1; cum = cum + pr[o[m] + 1] end
      if math.abs(cum - p) > 1e-5 and math.abs(cum - pr[o[m] + 1] - p) > 1e-5 then
        local rec_stage, rec = recorder()
        S.chain{{"top_p", p}, rec_stage, "greedy"}:sample(l)
        assert.equal(m, rec.n)
        for i = 1, m do assert.is_not_nil(rec.set[o[i]]) end
        checked = checked + 1
      end
    end
    assert.is_true(checked >= 10)
    -- min_keep wins over the mass
    local rec_stage, rec = recorder()
    S.chain{{"top_p", 0.5, min_keep = 3}, rec_stage, "greedy"}:sample({10, 0, 0, 0, 0})
    assert.equal(3, rec.n)
  end)

  it("min-p keeps exactly the tokens with p >= min_p * p_max", function()
    for trial = 1, 8 do
      local l = logits(1000, 200 + trial, 6)
      local p = 0.02 * trial
      local pr = softmax(l)
      local pmax = 0
      for i = 1, #pr do if pr[i] > pmax then pmax = pr[i] end end
      local rec_stage, rec = recorder()
      S.chain{{"min_p", p}, rec_stage, "greedy"}:sample(l)
      for i = 1, #l do
        local r = pr[i] / (p * pmax)
        if math.abs(r - 1) > 1e-5 then
          assert.equal(r >= 1, rec.set[i - 1] ~= nil)
        end
      end
    end
  end)

  it("typical matches the entropy rule computed in plain Lua", function()
    local checked = 0
    for trial = 1, 10 do
      local l = logits(600, 300 + trial, trial % 2 == 0 and 6 or 2)
      local p = 0.3 + 0.06 * trial
      local pr = softmax(l)
      local h = 0
      for i = 1, #pr do h = h - pr[i] * math.log(pr[i]) end
      local score, o = {}, {}
      for i = 1, #pr do score[i] = math.abs(-math.log(pr[i]) - h); o[i] = i end
      table.sort(o, function(a, b)
        if score[a] ~= score[b] then return score[a] < score[b] end
        return a < b
      end)
      local m, cum = 0, 0
      while cum < p do m = m + 1; cum = cum + pr[o[m]] end
      if math.abs(cum - p) > 1e-5 and math.abs(cum - pr[o[m]] - p) > 1e-5 then
        local rec_stage, rec = recorder()
        S.chain{{"typical", p}, rec_stage, "greedy"}:sample(l)
        assert.equal(m, rec.n)
        for i = 1, m do assert.is_not_nil(rec.set[o[i] - 1]) end
        checked = checked + 1
      end
    end
    assert.is_true(checked >= 8)
  end)

  it("penalties change exactly the penalized logits, by the formula", function()
    local l = logits(200, 42, 4)
    local rep, freq, pres = 1.3, 0.25, 0.5
    local s_stage, rec = recorder()
    local s = S.chain{{"penalties", last_n = 8, repeat_penalty = rep, frequency = freq,
                       presence = pres}, s_stage, "greedy"}
    local hist = {5, 7, 7, 9, 11, 5, 5, 100, 3, 3, 7, 150}
    for _, id in ipairs(hist) do s:accept(id) end
    assert.same({11, 5, 5, 100, 3, 3, 7, 150}, s:state().history)
    local count = {}
    for i = #hist - 7, #hist do count[hist[i]] = (count[hist[i]] or 0) + 1 end
    s:sample(l)
    local changed = 0
    for id = 0, 199 do
      local x, got = l[id + 1], rec.set[id]
      local c = count[id]
      if c then
        local y = x > 0 and f32(x / f32(rep)) or f32(x * f32(rep))
        y = f32(y - f32(f32(c * f32(freq)) + f32(pres)))
        assert.near(y, got, 1e-6 * math.max(1, math.abs(y)))
        changed = changed + 1
      else
        assert.equal(x, got)      -- untouched, bit for bit
      end
    end
    assert.equal(6, changed)
    s:reset()
    assert.same({}, s:state().history)
  end)

  it("logit bias adds, and -inf bans", function()
    local s_stage, rec = recorder()
    local l = {0, 1, 2, 3, 4, 5}
    local s = S.chain{{"logit_bias", {[1] = 0.5, [5] = -math.huge}}, s_stage,
                      {"temp", 10}, {"dist", seed = 5}}
    s:sample(l)
    assert.same({[0] = 0, [1] = 1.5, [2] = 2, [3] = 3, [4] = 4, [5] = -math.huge}, rec.set)
    for _ = 1, 500 do assert.is_not.equal(5, s:sample(l)) end
  end)

  it("dist draws match the softmax (chi-square, 20000 draws, fixed seed)", function()
    local l = {1.0, 0.5, 2.0, -1.0, 0.0, 1.5, -0.5, 0.25}
    local pr = softmax(l)
    local s = S.chain{{"dist", seed = 31337}}
    local n = {}
    for i = 1, #l do n[i] = 0 end
    local draws = 20000
    for _ = 1, draws do
      local id = s:sample(l)
      n[id + 1] = n[id + 1] + 1
    end
    local chi2 = 0
    for i = 1, #l do
      local e = draws * pr[i]
      chi2 = chi2 + (n[i] - e) ^ 2 / e
    end
    -- 7 degrees of freedom: P(chi2 > 24.32) = 0.001
    assert.is_true(chi2 < 24.32, "chi2 = " .. chi2)
  end)

  it("the same seed gives the same ids; another seed, others; state restores", function()
    local l = logits(400, 77, 1)
    local function run(s, n)
      local out = {}
      for i = 1, n do out[i] = s:sample(l); s:accept(out[i]) end
      return out
    end
    local spec = function(seed)
      return {{"penalties", last_n = 16, repeat_penalty = 1.3}, {"top_k", 100},
              {"temp", 1.2}, {"dist", seed = seed}}
    end
    local a = run(S.chain(spec(42)), 50)
    local b = run(S.chain(spec(42)), 50)
    local c = run(S.chain(spec(43)), 50)
    assert.same(a, b)
    assert.are_not.same(a, c)
    -- reset replays from the seed
    local s = S.chain(spec(42))
    run(s, 20)
    s:reset()
    assert.same(a, run(s, 50))
    -- snapshot mid-stream, continue, restore, continue again
    s = S.chain(spec(9))
    run(s, 30)
    local snap = s:state()
    local first = run(s, 40)
    s:set_state(snap)
    assert.same(first, run(s, 40))
    assert.equal("set_state: an all-zero RNG state is invalid",
      errmsg(s.set_state, s, {rng = {0, 0, 0, 0}, history = {}}))
    assert.equal("set_state: state.history[2] is not a token id",
      errmsg(s.set_state, s, {rng = {1, 2, 3, 4}, history = {1, -2}}))
  end)

  it("runs Lua stages on a view of the candidates", function()
    local l = logits(50, 9, 2)
    local o = order(l)
    local seen
    local s = S.chain{
      {"top_k", 10},
      function(c)
        assert.equal(10, #c)
        assert.is_true(c:sorted())
        seen = tostring(c)
        local sum = 0
        for i = 1, #c do sum = sum + c:p(i) end
        assert.near(1, sum, 1e-6)
        -- ban the best one, then keep the next three
        c:set_logit(1, -math.huge)
        assert.is_false(c:sorted())
        c:sort()
        c:truncate(3)
      end,
      {"temp", 1}, "greedy",
    }
    assert.equal(o[2], s:sample(l))
    assert.equal("slm.Candidates(10, sorted)", seen)
    local kept
    local s2 = S.chain{function(c) kept = c end, "greedy"}
    s2:sample(l)
    assert.equal("slm.Candidates(invalid)", tostring(kept))
    assert.equal("candidates view used after its sampler stage returned (a view is valid "
      .. "only during the call)", errmsg(kept.id, kept, 1))
  end)

  it("propagates errors from Lua stages and stays usable", function()
    local boom = true
    local s = S.chain{function(c)
      if boom then error({code = 7}) end
      c:truncate(1)
    end, "greedy"}
    local ok, e = pcall(s.sample, s, {1, 2, 3})
    assert.is_false(ok)
    assert.same({code = 7}, e)
    boom = false
    assert.equal(0, s:sample({1, 2, 3}))
    local bad = S.chain{function(c) c:set_logit(1, 0 / 0) end, "greedy"}
    assert.matches("logit must be a float32 value or %-math.huge", errmsg(bad.sample, bad, {1}))
    local range = S.chain{function(c) return c:id(4) end, "greedy"}
    assert.matches("position 4 out of range %[1, 3%]", errmsg(range.sample, range, {1, 2, 3}))
    local trunc = S.chain{function(c) c:truncate(0) end, "greedy"}
    assert.matches("keep between 1 and 3 candidates", errmsg(trunc.sample, trunc, {1, 2, 3}))
    local re
    re = S.chain{function() re:sample({1}) end, "greedy"}
    assert.equal("sampler is running: a stage cannot use its own sampler chain",
      errmsg(re.sample, re, {1, 2}))
    local fr
    fr = S.chain{function() fr:free() end, "greedy"}
    assert.equal("cannot free a sampler while it is sampling", errmsg(fr.sample, fr, {1, 2}))
  end)
end)
