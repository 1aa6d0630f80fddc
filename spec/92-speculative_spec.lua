-- Speculative decoding (slm.speculative through sess:generate) and
-- sess:rewind. The ground truths: plain greedy decoding of the same
-- session (token for token), a fresh session fed the same tokens (bit for
-- bit), and for sampling the exact distribution of the first tokens,
-- enumerated from plain forwards and a double-precision softmax written here.
local helpers = require "spec.helpers"
local slm = require "slm"
local testing = require "slm.testing"

local PROMPT = { 1, 300, 301, 302, 303, 300, 301, 302 }   -- repetitive: prompt lookup finds matches

-- every decoder file of the fixtures, grouped by stem (dense-q4_0 -> dense)
local function decoder_fixtures()
  local files = {}
  for _, dir in ipairs { "gguf", "gguf2", "gguf3" } do
    local p = io.popen("ls " .. helpers.fixtures .. "/" .. dir .. "/*.gguf 2>/dev/null")
    for line in p:lines() do
      if not line:match("/bert%-") then files[#files + 1] = line end
    end
    p:close()
  end
  local by_stem, out = {}, {}
  for _, f in ipairs(files) do
    local stem = f:match("([^/]+)%-[^%-/]+%.gguf$")
    by_stem[stem] = by_stem[stem] or {}
    table.insert(by_stem[stem], f)
  end
  for _, f in ipairs(files) do
    local group = by_stem[f:match("([^/]+)%-[^%-/]+%.gguf$")]
    local other = f
    for i, g in ipairs(group) do
      if g == f then other = group[i % #group + 1] end
    end
    out[#out + 1] = { path = f, other = other }
  end
  return out
end

local tiny_drafts = {}
-- a random 1-layer llama of the target's vocabulary (and tokenizer)
local function tiny_draft(target)
  local n = target.hp.n_vocab
  local path = tiny_drafts[n]
  if not path then
    path = os.tmpname() .. ".gguf"
    helpers.tmpnames[#helpers.tmpnames + 1] = path
    testing.random_model { path = path, vocab = n, dim = 32, n_layer = 1, n_head = 2, n_head_kv = 1, n_ff = 64,
                           ctx = 256, std = 0.5, seed = 7 }
    tiny_drafts[n] = path
  end
  return assert(slm.load(path, { tokenizer = target.tokenizer and target.path or nil }))
end

-- the generated ids (as the session holds them; "end" for an end token)
local function ids_of(sess, prompt, opts)
  local n0 = sess.n_past + (prompt and #prompt or 0)
  local _, info = sess:generate(prompt, opts, function() end)
  local ids = table.move(sess.tokens, n0 + 1, sess.n_past, 1, {})
  if info.stopped == "end" then ids[#ids + 1] = "end" end
  return ids, info
end

-- the session's logits for one more token equal a fresh session's fed the
-- same tokens
local function same_as_fresh(sess, next_id)
  local fresh = sess.model:session { ctx = sess.n_ctx, batch = sess.n_batch }
  local toks = table.move(sess.tokens, 1, #sess.tokens, 1, {})
  toks[#toks + 1] = next_id
  local want = fresh:eval(toks):tobytes()
  return sess:eval { next_id }:tobytes() == want
end

-- one thread: these tiny models spend more on waking a pool than on work
local saved_threads
setup(function() saved_threads = slm.threads(); slm.threads(1) end)
teardown(function() slm.threads(saved_threads) end)

describe("speculative decoding", function()
  it("greedy output is plain decoding's on every fixture model, with three kinds of draft", function()
    local cases = decoder_fixtures()
    if #cases == 0 then pending("fixtures not found (set SLM_FIXTURES)") return end
    local rates = {}
    for _, c in ipairs(cases) do
      local m = assert(slm.load(c.path))
      local other = c.other == c.path and m or assert(slm.load(c.other))
      local prompt = {}
      for i, id in ipairs(PROMPT) do prompt[i] = id % m.hp.n_vocab end
      local s0 = m:session { ctx = 96 }
      local plain = ids_of(s0, prompt, { max_tokens = 20 })
      for _, d in ipairs { { "other dtype", other:session { ctx = 96 } }, { "tiny random", tiny_draft(m):session { ctx = 96 } },
                           { "ngram", "ngram" } } do
        local s = m:session { ctx = 96 }
        local got, info = ids_of(s, prompt, { max_tokens = 20, draft = d[2], n_draft = 4 })
        assert.are.same(plain, got, c.path .. " with a " .. d[1] .. " draft")
        assert.are.same(s0.tokens, s.tokens)
        -- the next token's logits are those of the plainly decoded session
        -- (f32 weights: forwards of several rows round differently,
        -- slm.speculative's header; the tokens above still agree)
        if not c.path:match("%-f32%.gguf$") then
          local want = s0:fork():eval { 5 }:tobytes()
          assert.is_true(s:eval { 5 }:tobytes() == want, c.path .. " with a " .. d[1] .. " draft: rolled-back session")
        end
        local st = info.speculative
        assert.is_true(st.forwards >= 1 and st.tokens == #plain and st.accepted <= st.drafted)
        rates[#rates + 1] = string.format("%s/%s %.2f", c.path:match("[^/]+$"), d[1], st.acceptance)
      end
    end
    print("\n  acceptance: " .. table.concat(rates, ", "))
  end)

  it("greedy output is plain decoding's through sliding-window rings (batch 4, k capped at 3)", function()
    for _, name in ipairs { "gguf2/gemma3-f16.gguf", "gguf2/gemma2-q8_0.gguf" } do
      local path, why = helpers.fixture(name)
      if not path then pending(why) return end
      local m = assert(slm.load(path))
      local plain = ids_of(m:session { ctx = 128, batch = 4 }, PROMPT, { max_tokens = 100 })
      for _, d in ipairs { tiny_draft(m):session { ctx = 128 }, "ngram" } do
        local s = m:session { ctx = 128, batch = 4 }
        assert.are.same(plain, (ids_of(s, PROMPT, { max_tokens = 100, draft = d, n_draft = 8 })))
        assert.is_true(same_as_fresh(s, 7))
      end
    end
  end)

  it("a draft that never agrees shrinks to one token, then backs off (1, 2, 4, ... rounds without drafts)", function()
    local path, why = helpers.fixture("gguf/dense-f16.gguf")
    if not path then pending(why) return end
    local m = assert(slm.load(path))
    local plain = ids_of(m:session { ctx = 128 }, PROMPT, { max_tokens = 60 })
    local s = m:session { ctx = 128 }
    local got, info = ids_of(s, PROMPT, { max_tokens = 60, draft = tiny_draft(m):session { ctx = 128 }, n_draft = 4 })
    assert.are.same(plain, got)
    local st = info.speculative
    assert.equal(0, st.accepted)
    -- every round emits one token: drafts of 4, 3, 2, 1, then the back-off
    -- (skip 1, draft 1, skip 2, draft 1, skip 4, ... up to SKIP_MAX); the
    -- last round (one token left of max_tokens) neither drafts nor skips
    local want_drafted, want_skipped, k, backoff, skip = 0, 0, 4, 0, 0
    for _ = 1, st.rounds - 1 do
      if skip > 0 then
        skip, want_skipped = skip - 1, want_skipped + 1
      else
        want_drafted = want_drafted + k
        if k == 1 then
          backoff = math.min(math.max(1, 2 * backoff), require("slm.speculative").SKIP_MAX)
          skip = backoff
        end
        k = math.max(1, k - 1)
      end
    end
    assert.equal(60, st.rounds)
    assert.same({ want_drafted, want_skipped }, { st.drafted, st.skipped })
    assert.is_true(st.skipped > 40, "most rounds without drafts: " .. st.skipped)
  end)

  it("a same-weights draft is always accepted: n_draft + 1 tokens per target forward", function()
    local path, why = helpers.fixture("gguf/dense-f16.gguf")
    if not path then pending(why) return end
    local m = assert(slm.load(path))
    local _, info = ids_of(m:session { ctx = 96 }, PROMPT, { max_tokens = 40, draft = m:session { ctx = 96 }, n_draft = 4 })
    local st = info.speculative
    assert.equal(1, st.acceptance)
    -- 8 rounds of 5 tokens, then the last token's evaluation
    assert.same({ 8, 32, 9, 40 }, { st.rounds, st.drafted, st.forwards, st.tokens })
    assert.near(40 / 9, st.tokens_per_forward, 1e-12)
  end)

  it("stopping inside a round leaves the session, the draft's and the sampler's history as plain decoding does", function()
    for _, name in ipairs { "gguf/dense-q8_0.gguf", "gguf/mamba-f16.gguf", "gguf3/lfm2-q8_0.gguf" } do
      local path, why = helpers.fixture(name)
      if not path then pending(why) return end
      local m = assert(slm.load(path))
      local function run(draft)
        local s = m:session { ctx = 96 }
        local smp = slm.sampler.chain { { "penalties", last_n = 16, repeat_penalty = 1.3 }, { "greedy" } }
        local n = 0
        local ids = {}
        s:generate(PROMPT, { sampler = smp, draft = draft, n_draft = draft and 6 or nil }, function(_, id)
          n = n + 1
          ids[n] = id
          return n < 3
        end)
        return s, smp:state().history, ids
      end
      local s0, h0, ids0 = run(nil)
      for _, d in ipairs { m:session { ctx = 96 }, "ngram" } do
        local s, h, ids = run(d)
        assert.same(ids0, ids)
        assert.same(s0.tokens, s.tokens)
        assert.same(h0, h)
        assert.is_true(same_as_fresh(s, 9), name)
      end
    end
  end)

  -- The first three tokens' exact joint distribution under top_k = 3 and
  -- temp = 1.5, enumerated with plain forwards (27 sequences), against
  -- speculative sampling's samples over many seeds: chi-square at the
  -- 99.9 % level, plain sampling's samples as the control.
  it("sampled output has plain sampling's distribution (chi-square over 3-token sequences)", function()
    local path, why = helpers.fixture("gguf/dense-f16.gguf")
    if not path then pending(why) return end
    local m = assert(slm.load(path))
    local K, T, N = 3, 1.5, 600
    local prompt = { 1, 300, 301, 302, 300, 301 }   -- prompt lookup proposes 302 300 ...
    -- exact: p(a) p(b | a) p(c | a b), each the softmax of the K best / T
    local function topk_probs(logits)
      local vals = helpers.f32_values(logits)
      local idx = {}
      for i = 1, #vals do idx[i] = i end
      table.sort(idx, function(a, b) return vals[a] > vals[b] or (vals[a] == vals[b] and a < b) end)
      local mx, z, out = vals[idx[1]], 0, {}
      for r = 1, K do z = z + math.exp((vals[idx[r]] - mx) / T) end
      for r = 1, K do out[idx[r] - 1] = math.exp((vals[idx[r]] - mx) / T) / z end
      return out
    end
    -- an end token ends the sequence: "a,end"
    local function key(...)
      local t = {}
      for i, id in ipairs { ... } do
        t[i] = id
        if id == "end" or m.tokenizer:is_eog(id) then t[i] = "end" break end
      end
      return table.concat(t, ",")
    end
    local exact = {}
    local function add(k, p) exact[k] = (exact[k] or 0) + p end
    local s = m:session { ctx = 32 }
    s:eval(prompt)
    local base = s:snapshot()
    for a, pa in pairs(topk_probs(s.logits)) do
      if m.tokenizer:is_eog(a) then add(key(a), pa) else
        s:restore(base)
        local pb_all = topk_probs(s:eval { a })
        local sa = s:snapshot()
        for b, pb in pairs(pb_all) do
          if m.tokenizer:is_eog(b) then add(key(a, b), pa * pb) else
            s:restore(sa)
            for c, pc in pairs(topk_probs(s:eval { b })) do add(key(a, b, c), pa * pb * pc) end
          end
        end
      end
    end
    local function chi2(counts)
      local x, df, lump_e, lump_o = 0, -1, 0, 0
      for key, p in pairs(exact) do
        local e, o = p * N, counts[key] or 0
        if e < 5 then lump_e, lump_o = lump_e + e, lump_o + o
        else x, df = x + (o - e) ^ 2 / e, df + 1 end
        counts[key] = nil
      end
      assert.is_nil(next(counts), "a sequence outside the top-k support came out")
      if lump_e > 0 then x, df = x + (lump_o - lump_e) ^ 2 / lump_e, df + 1 end
      -- 99.9 % quantile of chi-square (Wilson-Hilferty)
      local h = 2 / (9 * df)
      return x, df * (1 - h + 3.0902 * math.sqrt(h)) ^ 3
    end
    local function sample(draft)
      local counts, st = {}, { drafted = 0, accepted = 0 }
      local t = m:session { ctx = 32 }
      t:eval(prompt)
      local snap = t:snapshot()
      for seed = 1, N do
        t:restore(snap)
        local smp = slm.sampler.chain { { "top_k", K }, { "temp", T }, { "dist", seed = seed } }
        local ids, info = ids_of(t, nil, { max_tokens = 3, sampler = smp, draft = draft, n_draft = draft and 2 or nil })
        local k = key(table.unpack(ids))
        counts[k] = (counts[k] or 0) + 1
        if draft then st.drafted, st.accepted = st.drafted + info.speculative.drafted, st.accepted + info.speculative.accepted end
      end
      return counts, st
    end
    local results = {}
    local q4 = assert(slm.load(assert(helpers.fixture("gguf/dense-q4_0.gguf"))))
    for _, d in ipairs { { "plain", nil }, { "q4_0 draft", q4:session { ctx = 32 } },
                         { "tiny random draft", tiny_draft(m):session { ctx = 32 } }, { "ngram", "ngram" } } do
      local counts, st = sample(d[2])
      local x, limit = chi2(counts)
      results[#results + 1] = string.format("%s %.1f (limit %.1f, %d of %d drafts accepted)", d[1], x, limit,
                                            st.accepted, st.drafted)
      assert.is_true(x < limit, d[1] .. ": chi-square " .. x .. " over the limit " .. limit)
    end
    print("\n  chi-square: " .. table.concat(results, ", "))
  end)

  it("refuses drafts it cannot use, naming why", function()
    local path, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not path then pending(why) return end
    local m = assert(slm.load(path))
    local s = m:session { ctx = 32 }
    local small = assert(slm.load(assert(helpers.fixture("gguf/rwkv7-tiny-f16.gguf"))))
    assert.equal("generate: draft of another vocabulary: the draft's vocabulary has 256 tokens, the target's 512",
                 helpers.errmsg(s.generate, s, PROMPT, { draft = small:session { ctx = 32 } }))
    -- same size, other tokens: a random model with its own filler vocabulary
    local p = os.tmpname() .. ".gguf"
    helpers.tmpnames[#helpers.tmpnames + 1] = p
    testing.random_model { path = p, vocab = 512, dim = 32, n_layer = 1, n_head = 2, n_head_kv = 1, n_ff = 64 }
    local other = assert(slm.load(p))
    assert.matches("^generate: draft of another vocabulary: token 259 is \".-\" in the target's vocabulary, \" t260\" in the draft's$",
                   helpers.errmsg(s.generate, s, PROMPT, { draft = other:session { ctx = 32 } }))
    assert.equal('generate: draft must be a session or "ngram", got 5', helpers.errmsg(s.generate, s, PROMPT, { draft = 5 }))
    assert.equal('generate: n_draft must be a positive integer, got 0',
                 helpers.errmsg(s.generate, s, PROMPT, { draft = "ngram", n_draft = 0 }))
    assert.equal('generate: n_draft needs a draft (a session or "ngram")', helpers.errmsg(s.generate, s, PROMPT, { n_draft = 3 }))
    assert.equal("generate: the draft must be another session than the one generating",
                 helpers.errmsg(s.generate, s, PROMPT, { draft = s }))
    assert.equal("generate: a draft cannot be combined with regex",
                 helpers.errmsg(s.generate, s, PROMPT, { draft = "ngram", regex = "a+" }))
    -- nothing was evaluated by the refused calls
    assert.equal(0, s.n_past)
    assert.equal("generate: a draft cannot run the Lua sampler stage 'lua' (it would also see the draft's positions)",
                 helpers.errmsg(s.generate, s, PROMPT, { draft = "ngram", sampler = { function() end, { "greedy" } } }))
  end)
end)

describe("sess:rewind", function()
  it("a KV session rewound continues as a fresh session fed the kept tokens", function()
    local path, why = helpers.fixture("gguf3/mixtral-q8_0.gguf")
    if not path then pending(why) return end
    local m = assert(slm.load(path))
    local s = m:session { ctx = 64 }
    s:eval { 1, 10, 20, 30, 40, 50, 60 }
    local fresh = m:session { ctx = 64 }:eval { 1, 10, 20, 30 }:tobytes()
    assert.equal(s, s:rewind(4))
    assert.same({ 1, 10, 20, 30 }, s.tokens)
    assert.equal(fresh, s.logits:tobytes())
    assert.is_true(same_as_fresh(s, 99))
  end)

  it("refuses recurrent states, rings that lost the positions, and bad arguments", function()
    local mp, why = helpers.fixture("gguf/mamba-f16.gguf")
    if not mp then pending(why) return end
    local mamba = assert(slm.load(mp)):session { ctx = 16 }
    mamba:eval { 1, 2, 3 }
    assert.equal("rewind: mamba sessions hold a recurrent state that cannot go back (restore a snapshot taken at that point)",
                 helpers.errmsg(mamba.rewind, mamba, 1))
    -- gemma3: window 4 on layers 0-4; batch 2 makes rings of 5 rows
    local g = assert(slm.load(assert(helpers.fixture("gguf2/gemma3-f16.gguf")))):session { ctx = 64, batch = 2 }
    local toks = {}
    for i = 1, 20 do toks[i] = 300 + i end
    g:eval(toks)
    -- rewind(18) evaluates token 18 again, at position 17: it sees 14..17
    assert.equal("rewind: the sliding-window cache of layer 0 holds positions 15..19; continuing from position 17 needs position 14",
                 helpers.errmsg(g.rewind, g, 18))
    g:rewind(19)
    assert.is_true(same_as_fresh(g, 5))
    assert.equal("bad argument #1 to 'rewind' (an integer in 0..20 expected, got 21)", helpers.errmsg(g.rewind, g, 21))
    assert.equal("bad argument #1 to 'rewind' (an integer in 0..20 expected, got x)", helpers.errmsg(g.rewind, g, "x"))
  end)
end)
