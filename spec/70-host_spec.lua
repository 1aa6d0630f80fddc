-- Generation in time slices (sess:generator, lua/slm/stepper.lua) and the
-- host program embedding Lua + slm (examples/host, build/host).
local helpers = require "spec.helpers"
local slm = require "slm"

local FIXTURE = "gguf/dense-q8_0.gguf"

local function model_or_pending()
  local path, why = helpers.fixture(FIXTURE)
  if not path then pending(why) return nil end
  return assert(slm.load(path)), path
end

local PROMPT = "Once upon a time"

local function reference(m, opts)
  return m:session { ctx = 256 }:generate(PROMPT, opts, function() end)
end

local function run_steps(gen, o)
  local steps = 0
  while not gen.done do
    gen:step(o)
    steps = steps + 1
    assert.is_true(steps < 10000, "generator does not finish")
  end
  return steps
end

-- A fake clock for the budget logic: it advances only when the session
-- evaluates tokens, by U per prompt token and 3 U per generated token, so
-- every decision of a step can be checked exactly. U = 1/1024 s keeps the
-- clock's sums exact in binary; the budgets below sit between multiples.
local U_MS = 1000 / 1024

local function fake_time(sess, in_prompt)
  local core = require "slm.core"
  local units, real_clock = 0, core.clock
  core.clock = function() return units / 1024 end
  local eval = sess.eval
  sess.eval = function(self, ids)
    units = units + (in_prompt() and #ids or 3)
    return eval(self, ids)
  end
  return function() core.clock = real_clock end, function() return units end
end

describe("generator", function()
  it("slices add up to sess:generate's text, for every budget", function()
    local m = model_or_pending()
    if not m then return end
    local opts = { max_tokens = 40 }
    local ref = reference(m, opts)
    assert.is_true(#ref > 20)
    for _, budget in ipairs { 0, 0.5, 4, 1000 } do
      local gen = m:session { ctx = 256 }:generator(PROMPT, opts)
      local parts = {}
      while not gen.done do
        local text, status = gen:step { budget_ms = budget }
        assert.is_string(text)
        parts[#parts + 1] = text
        assert.is_true(status == "running" or status == "done")
      end
      assert.equal(ref, table.concat(parts), "budget " .. budget)
      assert.equal(ref, gen:text())
      assert.equal("done", gen.status)
      assert.same({ "", "done" }, { gen:step { budget_ms = 4 } })
    end
  end)

  it("keeps generate's stops and seeded samplers", function()
    local m = model_or_pending()
    if not m then return end
    local function opts()
      return { max_tokens = 48, sampler = { { "top_k", 40 }, { "temp", 0.9 }, { "dist", seed = 11 } } }
    end
    local ref = reference(m, opts())
    local gen = m:session { ctx = 256 }:generator(PROMPT, opts())
    run_steps(gen, { budget_ms = 2 })
    assert.equal(ref, gen:text())
    -- a stop string taken from the middle of the text
    local stop = ref:sub(21, 24)
    local o = opts()
    o.stop = stop
    local ref_stop = reference(m, o)
    assert.is_true(#ref_stop < #ref)
    o = opts()
    o.stop = stop
    gen = m:session { ctx = 256 }:generator(PROMPT, o)
    run_steps(gen, { budget_ms = 1 })
    assert.equal(ref_stop, gen:text())
  end)

  it("starts a unit only when it fits the budget left (fake clock)", function()
    local m = model_or_pending()
    if not m then return end
    local sess = m:session { ctx = 256 }
    local gen
    local restore, now = fake_time(sess, function() return gen.next_id <= #gen.ids end)
    local ok, err = pcall(function()
      gen = sess:generator(PROMPT, { max_tokens = 30 })
      local n_prompt = #gen.ids
      assert.is_true(n_prompt >= 8)
      local t = now()
      gen:step { budget_ms = 4 }            -- 4.1 U
      -- cost unknown: one prompt token measures it, then 3 more fit
      assert.equal(4, gen:stats().prompt_done)
      assert.equal(4, now() - t)
      t = now()
      gen:step { budget_ms = 2.5 }          -- 2.56 U
      assert.equal(6, gen:stats().prompt_done)
      assert.equal(2, now() - t)
      -- budget smaller than a prompt token: still one (min_tokens = 1)...
      gen:step { budget_ms = 0.5 }
      assert.equal(7, gen:stats().prompt_done)
      -- ...unless the host asks for none
      t = now()
      assert.same({ "", "running" }, { gen:step { budget_ms = 0.5, min_tokens = 0 } })
      assert.equal(t, now())
      -- the rest of the prompt, and no token: the first token's cost is
      -- guessed as a prompt token's (1 U), more than the 0.5 U left
      gen:step { budget_ms = (n_prompt - 7 + 0.5) * U_MS, min_tokens = 0 }
      assert.equal(n_prompt, gen:stats().prompt_done)
      assert.equal(0, gen:stats().tokens)
      t = now()
      gen:step { budget_ms = 3 * U_MS + 0.1 }   -- one token, measured at 3 U
      assert.equal(1, gen:stats().tokens)
      assert.equal(3, now() - t)
      -- tokens of 3 U: a 10.24 U budget holds 3, never a 4th
      for _ = 1, 4 do
        local before = gen:stats().tokens
        t = now()
        gen:step { budget_ms = 10 }
        assert.equal(3, gen:stats().tokens - before)
        assert.equal(9, now() - t)
      end
      -- a token longer than the budget: exactly one per step (budget + one token at most)
      local before = gen:stats().tokens
      t = now()
      gen:step { budget_ms = 2 }
      assert.equal(1, gen:stats().tokens - before)
      assert.equal(3, now() - t)
      assert.is_near(3 * U_MS, gen:stats().ms_per_token, 1e-9)
    end)
    restore()
    assert(ok, err)
  end)

  it("keeps the budget on average with real time", function()
    local m = model_or_pending()
    if not m then return end
    local gen = m:session { ctx = 256 }:generator(PROMPT, { max_tokens = 60 })
    local clock = slm.core.clock
    local times = {}
    while not gen.done do
      local t = clock()
      gen:step { budget_ms = 4 }
      times[#times + 1] = (clock() - t) * 1000
    end
    local sum = 0
    for _, v in ipairs(times) do sum = sum + v end
    table.sort(times)
    local tok = gen:stats().ms_per_token
    -- the typical frame is within budget + one token; other processes on
    -- the machine preempt single frames for tens of ms (the exact decisions
    -- are checked with the fake clock above), hence the median and margin
    assert.is_true(times[(#times + 1) // 2] <= 4 + 2 * tok + 2,
                   ("median %.2f ms, mean %.2f ms, token %.2f ms"):format(times[(#times + 1) // 2],
                                                                          sum / #times, tok))
  end)

  it("cancels: the text is a prefix, later steps do nothing, the session keeps its tokens", function()
    local m = model_or_pending()
    if not m then return end
    -- two 2 ms steps make a few tokens at most on any machine, far from 200
    local opts = { max_tokens = 200 }
    local ref = reference(m, opts)
    local sess = m:session { ctx = 512 }
    local gen = sess:generator(PROMPT, opts)
    for _ = 1, 2 do gen:step { budget_ms = 2 } end
    assert.is_false(gen.done)
    gen:cancel()
    assert.is_true(gen.done)
    assert.equal("cancelled", gen.status)
    local text = gen:text()
    assert.equal(ref:sub(1, #text), text)
    local n_past = sess.n_past
    assert.same({ "", "cancelled" }, { gen:step { budget_ms = 50 } })
    assert.equal(n_past, sess.n_past)
    gen:cancel()   -- twice is fine
    assert.equal("cancelled", gen.status)
    -- the session goes on from where the generator left it
    local more = sess:generate(nil, { max_tokens = 3 }, function() end)
    assert.is_string(more)
    assert.is_true(sess.n_past > n_past)
    assert.matches("slm.Generator%(cancelled", tostring(gen))
  end)

  it("continues a session (nil prompt) and checks its arguments", function()
    local m = model_or_pending()
    if not m then return end
    local sess = m:session { ctx = 256 }
    sess:eval(m.tokenizer:encode(PROMPT, { add_special = true }))
    local ref_sess = sess:fork()
    local ref = ref_sess:generate(nil, { max_tokens = 10 }, function() end)
    local gen = sess:generator(nil, { max_tokens = 10 })
    run_steps(gen, { budget_ms = 3 })
    assert.equal(ref, gen:text())
    local fresh = m:session { ctx = 8 }
    assert.has_error(function() fresh:generator(nil) end, "generator: empty session and no prompt")
    assert.has_error(function() fresh:generator(string.rep("a b ", 20)) end)
    assert.has_error(function() fresh:generator(PROMPT, 5) end, "generator: options must be a table, got 5")
    -- generate's options are checked when the generator is made, not at its first token
    assert.has_error(function() fresh:generator(PROMPT, { max_token = 5 }) end,
      "generator: unknown option 'max_token' (known: draft, grammar, json_schema, max_tokens, n_draft, parse_special, "
      .. "regex, regex_width, sampler, special, stop, stop_ids)")
    assert.has_error(function() fresh:generator(PROMPT, { stop = { 5 } }) end,
      "generator: stop[1] must be a non-empty string, got 5")
    local g = m:session { ctx = 64 }:generator(PROMPT)
    assert.has_error(function() g:step { budget_ms = -1 } end, "step: budget_ms must be a non-negative number, got -1")
    assert.has_error(function() g:step { min_tokens = 0.5 } end, "step: min_tokens must be a non-negative integer, got 0.5")
    assert.has_error(function() g:step { budget = 5 } end, "step: unknown option 'budget' (known: budget_ms, min_tokens)")
  end)
end)

-- build/host (BUILD/host under `make asan`)
local run = helpers.run

local function field(out, prefix, key)
  for line in out:gmatch("[^\n]+") do
    if line:sub(1, #prefix + 1) == prefix .. " " then
      local v = line:match(" " .. key .. " (%S+)")
      if v then return tonumber(v) or v end
    end
  end
end

describe("examples/host", function()
  local host = (os.getenv("BUILD") or "build") .. "/host"

  local function host_or_pending()
    if not helpers.exists(host) then
      pending(host .. " not built (run `make`, which builds it with `make host`)")
      return nil
    end
    local path, why = helpers.fixture(FIXTURE)
    if not path then pending(why) return nil end
    return path
  end

  it("steps a frame loop within budget + one token, equals generate, cancels, agrees in two threads", function()
    local path = host_or_pending()
    if not path then return end
    local out, code = run(host .. " --frames 400 --frame-ms 0 --budget 4 --max-tokens 200 --cancel-at 2 --threads 2 "
                          .. path)
    assert.equal(0, code, out)
    -- the full run ends within the frames and adds up to generate's text
    assert.equal("done", field(out, "full", "status"), out)
    assert.equal("yes", field(out, "full", "equals_generate"), out)
    assert.equal(field(out, "full", "text_len"), field(out, "full", "slices_len"))
    assert.equal(field(out, "model", "reference_len"), field(out, "full", "text_len"))
    local frames = field(out, "full", "running_frames")
    local tok = field(out, "full", "token_ms")
    assert.is_true(frames > 1 and tok > 0, out)
    -- exact decisions are checked with a fake clock above. In real time the
    -- checks use the step's thread CPU time (wall time minus the time other
    -- processes on the machine took), with a margin for tokens that vary
    assert.is_true(field(out, "full step_cpu_ms", "median") <= 4 + 2 * tok + 1, out)
    assert.is_true(field(out, "full", "cpu") < frames / 2, out)
    -- cancelled after frame 2's step (211 tokens of work take many frames
    -- of 4 ms): frame 3 reports it, a prefix of the text, nothing after
    assert.equal("cancelled", field(out, "cancel", "status"), out)
    assert.equal(3, field(out, "cancel", "end_frame"), out)
    assert.equal("yes", field(out, "cancel", "prefix_of_generate"), out)
    assert.equal("yes", field(out, "cancel", "empty_after_cancel"), out)
    -- two threads, each with its own Lua state, model and session
    assert.equal(2, field(out, "threads", "agree"), out)
    assert.equal("yes", field(out, "thread", "equals_single_thread"), out)
    -- the weights (file pages) are in memory once for three loaded states
    local before = field(out, "memory_kb before", "pss_file")
    local after = field(out, "memory_kb with_2_more_states", "pss_file")
    if before and before > 0 then
      assert.is_true(after < before + 3500 // 2, out)   -- the model file is 3.4 MB
    end
  end)

  it("fails with a usage line on bad arguments and one clear line on a missing model", function()
    if not host_or_pending() then return end
    local out, code = run(host .. " --frames")
    assert.equal(2, code)
    assert.matches("^usage: host", out)
    out, code = run(host .. " /nonexistent.gguf")
    assert.equal(1, code)
    assert.matches("/nonexistent.gguf: No such file or directory", out, 1, true)
  end)
end)
