-- Several sessions in one forward (slm.batch) and continuous batching
-- (slm.batch_generate, slm.batcher), issue 19. The expected values are
-- those of each session evaluated alone (sess:eval, sess:generate): the
-- batched rows must give them bit for bit, for every family, with the
-- sessions at different positions and taking different numbers of ids.
local helpers = require "spec.helpers"
local slm = require "slm"

local function load(rel)
  local path, why = helpers.fixture(rel)
  if not path then return nil, why end
  return assert(slm.load(path))
end

-- per session: the ids of each step (a prompt of its own length first, then
-- steps of one or more ids), so that the sessions sit at different positions
local function plan(nv)
  local P = {
    { { 1, 72, 300, 45, 290 }, { 17 }, { 99, 5 }, { 33 }, { 8 } },
    { { 2 }, { 301, 17, 9 }, { 4 }, { 250 }, { 61 } },
    { { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 }, { 12 }, { 13 }, { 14, 15, 16, 17, 18, 19, 20 }, { 21 } },
  }
  for _, steps in ipairs(P) do
    for _, ids in ipairs(steps) do
      for j, id in ipairs(ids) do ids[j] = id % nv end
    end
  end
  return P
end

-- the logits (bytes) after each step of each session run alone
local function alone(model, P, opts)
  local want, counts = {}, {}
  for i, steps in ipairs(P) do
    local s = model:session(opts)
    want[i] = {}
    for t, ids in ipairs(steps) do want[i][t] = s:eval(ids):tobytes() end
    counts[i] = s.moe_counts and s:expert_counts()
  end
  return want, counts
end

-- largest |a - b| over two f32 byte strings, relative to the largest |a|
local function rel_diff(a, b)
  local n, d, m = #a // 4, 0, 0
  local fmt = "<" .. string.rep("f", n)
  local x, y = { string.unpack(fmt, a) }, { string.unpack(fmt, b) }
  for i = 1, n do
    d, m = math.max(d, math.abs(x[i] - y[i])), math.max(m, math.abs(x[i]))
  end
  return d / m
end

local function check_batch(model, opts, tol)
  local P = plan(model.hp.n_vocab)
  local want, counts = alone(model, P, opts)
  local ss = {}
  for i = 1, #P do ss[i] = model:session(opts) end
  local b = slm.batch(ss)
  for t = 1, #P[1] do
    local ids = {}
    for i = 1, #P do ids[i] = P[i][t] end
    local out = b:eval(ids)
    for i = 1, #P do
      local what = string.format("session %d step %d", i, t)
      if tol then local d = rel_diff(want[i][t], out[i]:tobytes()); assert.is_true(d < tol, what .. ": " .. d)
      else assert.equal(want[i][t], out[i]:tobytes(), what) end
      assert.equal(ss[i].logits, out[i])
    end
  end
  -- each session kept its own position and tokens (and, with experts,
  -- counted its own rows' choices, as alone)
  for i = 1, #P do
    if counts[i] then assert.same(counts[i], ss[i]:expert_counts(), "session " .. i .. "'s expert counts") end
    local n = 0
    for _, ids in ipairs(P[i]) do n = n + #ids end
    assert.equal(n, ss[i].n_past)
    assert.equal(n, #ss[i].tokens)
  end
  return b
end

describe("slm.batch: every session's logits as if it ran alone, bit for bit (f32 weights: to rounding)", function()
  local cases = {
    -- dense llama family: f16, a legacy and a k-quant, GQA, tied heads
    { "gguf/dense-f16.gguf" }, { "gguf/dense-q4_0.gguf" }, { "gguf/dense-q4_k_m.gguf" },
    { "gguf/qwen2-q8_0.gguf" }, { "gguf/phi3-q8_0.gguf" },
    -- f32 weights: batches of 4+ rows go to OpenBLAS (README: summation
    -- order), whose sums differ from one row's in the last bits, and a
    -- key or value rounded to f16 the other way moves later logits by ~1e-4
    { "gguf/stories260K-f32.gguf", tol = 2e-3 },
    { "gguf2/qwen3-f16.gguf" }, { "gguf2/llama3-q8_0.gguf" }, { "gguf2/granite-f16.gguf" },
    { "gguf2/smollm3-f16.gguf" }, { "gguf2/phi4mini-f16.gguf" },
    -- sliding windows: gemma2/3 with a ring shorter than the positions reached
    { "gguf2/gemma2-f16.gguf" }, { "gguf2/gemma3-q8_0.gguf" },
    -- experts: rows routed per row
    { "gguf3/mixtral-f16.gguf" }, { "gguf3/qwen2moe-q8_0.gguf" }, { "gguf3/qwen3moe-f16.gguf" },
    { "gguf3/olmoe-q4_k_m.gguf" },
    -- recurrent: each session's conv and scan over its own rows and state
    { "gguf/mamba-f16.gguf" }, { "gguf/mamba-q4_k_m.gguf" }, { "gguf3/mamba2-q8_0.gguf" },
    { "gguf/rwkv7-tiny-f16.gguf" }, { "gguf/rwkv7-tiny-q8_0.gguf" }, { "gguf/rwkv7-tiny-f32.gguf" },
    -- RWKV before v7: one session after the other
    { "gguf/rwkv6-tiny-f16.gguf", unfused = true },
    -- sessions without a batched forward run one after the other (lfm2)
    { "gguf3/lfm2-f16.gguf", unfused = true },
  }
  for _, c in ipairs(cases) do
    it(c[1], function()
      local model, why = load(c[1])
      if not model then return pending(why) end
      -- batch 4: the 11- and 7-id steps take several forwards
      local b = check_batch(model, { ctx = 48, batch = 4 }, c.tol)
      assert.equal(not c.unfused, b.fused)
    end)
  end

  it("refuses bad sessions and ids, naming them", function()
    local model, why = load("gguf/dense-f16.gguf")
    if not model then return pending(why) end
    local s1, s2 = model:session { ctx = 8 }, model:session { ctx = 8 }
    assert.equal("batch: sessions[2] is sessions[1] again", helpers.errmsg(slm.batch, { s1, s1 }))
    assert.equal("batch: sessions[2] is not a session", helpers.errmsg(slm.batch, { s1, {} }))
    local b = slm.batch { s1, s2 }
    assert.equal("batch: 1 lists of ids for 2 sessions", helpers.errmsg(b.eval, b, { 1 }))
    assert.equal("batch: ids[2] is empty", helpers.errmsg(b.eval, b, { 1, {} }))
    assert.equal("batch: ids[2][1] = -1 is not a token id in 0..255",
                 helpers.errmsg(b.eval, b, { 1, { -1 } }):gsub("0%.%.%d+", "0..255"))
    assert.equal("batch: session 1: context full: 0 tokens + 9 new exceed ctx 8",
                 helpers.errmsg(b.eval, b, { { 1, 2, 3, 4, 5, 6, 7, 8, 9 }, 1 }))
    -- nothing was evaluated by the refused calls
    assert.equal(0, s1.n_past)
    assert.equal(0, s2.n_past)
    local other = assert(slm.load(helpers.fixture("gguf/dense-f16.gguf")))
    assert.equal("batch: sessions[2] is of another model than sessions[1]",
                 helpers.errmsg(slm.batch, { s1, other:session { ctx = 8 } }))
    local h = model:hook("blk.0.out", function() end)
    assert.equal("batch: the model has hooks (model:hook), which see one session's rows",
                 helpers.errmsg(b.eval, b, { 1, 2 }))
    h:remove()
  end)
end)

describe("slm.batch_generate and slm.batcher", function()
  local PROMPTS = { { 1, 72, 300 }, { 5 }, { 9, 8, 7, 6, 5, 4, 3, 2, 1 }, { 250, 17 }, { 33, 34 } }

  local function lone(model, prompt, opts)
    local s = model:session { ctx = 64, batch = 4 }
    return s:generate(prompt, opts, function() end)
  end

  for _, rel in ipairs { "gguf/dense-q8_0.gguf", "gguf3/qwen3moe-q8_0.gguf" } do
    it(rel .. ": greedy and seeded outputs equal sess:generate alone; slots are refilled", function()
      local model, why = load(rel)
      if not model then return pending(why) end
      -- greedy, 2 slots for 5 prompts (3 refills)
      local outs, infos = slm.batch_generate(model, PROMPTS, { max_tokens = 12, slots = 2, ctx = 64, batch = 4 })
      for i, p in ipairs(PROMPTS) do
        local want, winfo = lone(model, p, { max_tokens = 12 })
        assert.equal(want, outs[i], "greedy prompt " .. i)
        assert.equal(winfo.tokens, infos[i].tokens)
        assert.equal(winfo.stopped, infos[i].stopped)
      end
      -- seeded: a list of stages is built anew per prompt; per-prompt options
      local stages = { { "top_k", 40 }, { "temp", 1.5 }, { "dist", 1234 } }
      local items = {}
      for i, p in ipairs(PROMPTS) do items[i] = i == 2 and { prompt = p, max_tokens = 3 } or p end
      outs = slm.batch_generate(model, items, { max_tokens = 10, sampler = stages, slots = 3, ctx = 64, batch = 4 })
      for i, p in ipairs(PROMPTS) do
        local want = lone(model, p, { max_tokens = i == 2 and 3 or 10, sampler = stages })
        assert.equal(want, outs[i], "seeded prompt " .. i)
      end
      -- a quantized KV cache: the slots' sessions take kv_type
      outs = slm.batch_generate(model, PROMPTS, { max_tokens = 8, slots = 2, ctx = 64, batch = 4, kv_type = "q8_0" })
      for i, p in ipairs(PROMPTS) do
        local s = model:session { ctx = 64, batch = 4, kv_type = "q8_0" }
        assert.equal(s:generate(p, { max_tokens = 8 }, function() end), outs[i], "q8_0 cache, prompt " .. i)
      end
      -- (greedy text may not tell the cache types apart: the slots' caches do)
      local b = slm.batcher(model, { slots = 2, ctx = 64, kv_type = "q4_0" })
      assert.equal(model:session { ctx = 64, kv_type = "q4_0" }:kv_bytes_per_token(), b.free[1]:kv_bytes_per_token())
      assert.is_true(b.free[1]:kv_bytes_per_token() < model:session { ctx = 64 }:kv_bytes_per_token())
      -- a bad kv_type is the caller's one-line error
      assert.equal('batcher: kv_type must be "f16", "f32", "q8_0" or "q4_0", got "q9"',
                   helpers.errmsg(slm.batcher, model, { kv_type = "q9" }))
      assert.equal('batch_generate: kv_type must be "f16", "f32", "q8_0" or "q4_0", got 5',
                   helpers.errmsg(slm.batch_generate, model, PROMPTS, { kv_type = 5 }))
    end)
  end

  it("streams pieces, stops a sequence whose callback returns false, cancels requests", function()
    local model, why = load("gguf/dense-q8_0.gguf")
    if not model then return pending(why) end
    local got, ids = {}, {}
    local outs, infos = slm.batch_generate(model, PROMPTS, { max_tokens = 6, slots = 2, ctx = 64 }, function(i, piece, id)
      got[i] = (got[i] or "") .. piece
      ids[i] = (ids[i] or 0) + 1
      if i == 3 and ids[i] == 2 then return false end
    end)
    for i = 1, #PROMPTS do assert.equal(outs[i], got[i] or "") end
    assert.equal("callback", infos[3].stopped)
    assert.equal(2, ids[3])
    assert.equal("max_tokens", infos[1].stopped)

    local b = slm.batcher(model, { slots = 1, ctx = 64 })
    local done = {}
    local function on_done(req) done[#done + 1] = req.status end
    local r1 = b:add(PROMPTS[1], { max_tokens = 50 }, nil, on_done)
    local r2 = b:add(PROMPTS[2], { max_tokens = 50 }, nil, on_done)
    assert.equal(2, b:pending())
    b:step()
    b:step()
    assert.equal("running", r1.status)
    assert.equal("queued", r2.status)
    r2:cancel()                     -- queued: leaves at once
    assert.equal("cancelled", r2.status)
    r1:cancel()                     -- running: ends at the next step
    assert.equal(0, b:step())
    assert.equal("cancelled", r1.status)
    assert.same({ "cancelled", "cancelled" }, done)
    -- the slot's session serves the next request from a fresh start
    local r3 = b:add(PROMPTS[4], { max_tokens = 5 })
    b:run()
    assert.equal("done", r3.status)
    assert.equal(lone(model, PROMPTS[4], { max_tokens = 5 }), r3.text)
  end)

  it("a failing request fails alone; bad options are named", function()
    local model, why = load("gguf/dense-q8_0.gguf")
    if not model then return pending(why) end
    local b = slm.batcher(model, { slots = 2, ctx = 16 })
    local bad = b:add({ 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17 }, { max_tokens = 2 })
    local good = b:add({ 1, 2 }, { max_tokens = 2 })
    b:run()
    assert.equal("failed", bad.status)
    assert.matches("does not fit the context", tostring(bad.error))
    assert.equal("done", good.status)
    assert.equal("batch_generate: unknown option 'slot' (known: batch, ctx, grammar, json_schema, kv_type, "
                 .. "max_tokens, parse_special, regex, regex_width, sampler, slots, special, stop, stop_ids)",
                 helpers.errmsg(slm.batch_generate, model, { { 1 } }, { slot = 2 }))
    assert.equal("batch_generate: max_tokens must be a non-negative integer, got -1",
                 helpers.errmsg(slm.batch_generate, model, { { 1 } }, { max_tokens = -1 }))
    local smp = slm.sampler.chain { { "dist", 1 } }
    assert.matches("prompts 1 and 2 share one sampler object",
                   helpers.errmsg(slm.batch_generate, model, { { 1 }, { 2 } }, { sampler = smp }))
    assert.equal("batcher: slots must be a positive integer, got 0", helpers.errmsg(slm.batcher, model, { slots = 0 }))
  end)
end)

describe("slm.pipeline.parallel", function()
  it("runs independent steps batched, with the values of the steps run one by one", function()
    local model, why = load("gguf/dense-q8_0.gguf")
    if not model then return pending(why) end
    if not model.tokenizer then return pending("dense-q8_0 has no tokenizer") end
    local function steps()
      return {
        { name = "a", model = model, ctx = 64, template = "Q: {{q}}", max_tokens = 8 },
        { name = "b", model = model, ctx = 64, template = "{{q}} and more", max_tokens = 5,
          sampler = { { "temp", 0.9 }, { "dist", 3 } } },
        { name = "c", session = model:session { ctx = 64 }, template = "x{{q}}", max_tokens = 6 },
      }
    end
    local seq = slm.pipeline(steps())
    local _, want = seq { q = "hello" }
    local par = slm.pipeline { slm.pipeline.parallel(steps()), function(ctx) return ctx.a .. ctx.b .. ctx.c end }
    local out, ctx = par { q = "hello" }
    assert.equal(want.a, ctx.a)
    assert.equal(want.b, ctx.b)
    assert.equal(want.c, ctx.c)
    assert.equal(want.a .. want.b .. want.c, out)
    assert.same({ a = want.a, b = want.b, c = want.c }, ctx.step1)
    assert.equal("parallel steps 1 and 2 are both named 'a'", helpers.errmsg(slm.pipeline.parallel, {
      { name = "a", model = model, template = "x" }, { name = "a", model = model, template = "y" } }))
  end)
end)
