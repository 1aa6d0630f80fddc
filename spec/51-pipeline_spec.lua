-- slm.pipeline: steps chained through a context, two models, routers,
-- errors naming the failing step. Random weights: mechanics, not quality.
local helpers = require "spec.helpers"
local slm = require "slm"

local function load(name)
  local p, why = helpers.fixture("gguf/" .. name)
  if not p then pending(why) return nil end
  return assert(slm.load(p))
end

describe("pipeline", function()
  it("fills templates from the context", function()
    assert.equal("Q: 2+2? (x=1)", slm.pipeline.fill("Q: {{q}}? (x={{ a.b }})", { q = "2+2", a = { b = 1 } }))
    assert.has_error(function() slm.pipeline.fill("{{nope}}", {}) end, "template variable 'nope' is not set")
  end)

  it("chains function steps; each sees the earlier values", function()
    local p = slm.pipeline {
      function(ctx) return ctx.x * 2 end,
      function(ctx) return ctx.step1 + 1 end,
    }
    local inputs = { x = 5 }
    local out, ctx = p(inputs)
    assert.same({ x = 5 }, inputs)
    assert.equal(11, out)
    assert.equal(10, ctx.step1)
    assert.equal(11, ctx.last)
    assert.equal(2, #ctx.trace)
    assert.equal("step2", ctx.trace[2].name)
  end)

  it("runs two models deterministically with greedy sampling", function()
    local drafter, checker = load("dense-q8_0.gguf"), load("qwen2-q8_0.gguf")
    if not drafter or not checker then return end
    local s1, s2 = drafter:session { ctx = 256 }, checker:session { ctx = 256 }
    local p = slm.pipeline {
      { name = "draft", session = s1, template = "Question: {{question}}\nAnswer:", max_tokens = 8 },
      { name = "check", session = s2, template = "Q: {{question}}\nA: {{draft}}\nGood?", max_tokens = 4,
        parse = function(text, ctx) return { text = text, len = #ctx.draft } end },
    }
    local out1, ctx1 = p { question = "Why is the sky blue?" }
    local out2, ctx2 = p { question = "Why is the sky blue?" }
    assert.is_string(ctx1.draft)
    assert.equal(ctx1.draft, ctx2.draft)
    assert.same(out1, out2)
    assert.equal(#ctx1.draft, out1.len)
    assert.equal("Q: Why is the sky blue?\nA: " .. ctx1.draft .. "\nGood?", ctx1.trace[2].prompt)
    -- the steps' sessions saw exactly their prompts and outputs (reset per run)
    local ids = drafter.tokenizer:encode("Question: Why is the sky blue?\nAnswer:")
    assert.same(ids, table.move(s1.tokens, 1, #ids, 1, {}))
    -- the draft equals a plain greedy generation on a fresh session
    local fresh = drafter:session { ctx = 256 }:generate("Question: Why is the sky blue?\nAnswer:",
                                                         { max_tokens = 8 }, function() end)
    assert.equal(fresh, ctx1.draft)
  end)

  it("a model step gets a new session each run; parse patterns take the first capture", function()
    local m = load("dense-q8_0.gguf")
    if not m then return end
    local p = slm.pipeline {
      { name = "n", model = m, ctx = 128, template = "Count: 1 2 3", max_tokens = 6,
        regex = " ?[0-9]{1,3}", parse = "(%d+)" },
      function(ctx) return tonumber(ctx.n) end,
    }
    local out = p {}
    assert.is_number(out)
    assert.equal(out, (p {}))
  end)

  it("a chat step runs the prompt as a user message", function()
    local m = load("dense-q8_0.gguf")
    if not m then return end
    local s = m:session { ctx = 256 }
    local p = slm.pipeline {
      { name = "reply", session = s, chat = "chatml", system = "Be brief", template = "Hi {{who}}", max_tokens = 3 },
    }
    local _, ctx = p { who = "there" }
    local want = slm.chat.tokenize(m.tokenizer, { { role = "system", content = "Be brief" },
                                                  { role = "user", content = "Hi there" } }, { template = "chatml" })
    assert.same(want, table.move(s.tokens, 1, #want, 1, {}))
    assert.is_string(ctx.reply)
  end)

  it("routes by a Lua predicate", function()
    local route = slm.pipeline.route {
      name = "size",
      when = function(ctx) return ctx.x > 10 and "big" or "small" end,
      branches = { big = function() return "B" end, small = function(ctx) return "s" .. ctx.x end },
    }
    local p = slm.pipeline { route }
    local out, ctx = p { x = 3 }
    assert.equal("s3", out)
    assert.equal("small", ctx.trace[1].branch)
    assert.equal("B", (p { x = 30 }))
  end)

  it("routes by asking a model, its answer constrained to the branch names", function()
    local m = load("qwen2-q8_0.gguf")
    if not m then return end
    local s = m:session { ctx = 256 }
    local taken = {}
    local inner = slm.pipeline { function(ctx) taken[#taken + 1] = "no"; return "fallback " .. ctx.q end }
    local p = slm.pipeline {
      slm.pipeline.route {
        name = "answer",
        ask = { session = s, template = "Is '{{q}}' a question? Answer yes or no:" },
        branches = { yes = function() taken[#taken + 1] = "yes"; return "Y" end, no = inner },
      },
    }
    local out, ctx = p { q = "Is the sky blue?" }
    local branch = ctx.trace[1].branch
    assert.is_truthy(branch == "yes" or branch == "no")
    assert.same({ branch }, taken)
    assert.equal(branch == "yes" and "Y" or "fallback Is the sky blue?", out)
    if branch == "no" then
      assert.equal("fallback Is the sky blue?", ctx.step1)   -- the nested pipeline's value, in the same ctx
      assert.equal("step1", ctx.trace[2].name)
    end
    -- the answer on the session is exactly the branch name (maybe after a space)
    local n = #m.tokenizer:encode(ctx.trace[1].prompt)
    local tail = m.tokenizer:decode(table.move(s.tokens, n + 1, s.n_past, 1, {}))
    assert.matches("^ ?" .. branch .. "$", tail)
    local out2, ctx2 = p { q = "Is the sky blue?" }
    assert.equal(out, out2)
    assert.equal(branch, ctx2.trace[1].branch)
  end)

  it("checks each step table when built: unknown keys, wrong values, route keys", function()
    local m = load("dense-q8_0.gguf")
    if not m then return end
    local s = m:session { ctx = 64 }
    local KNOWN = "chat, ctx, draft, grammar, json_schema, keep, max_tokens, model, n_draft, name, parse, parse_special, "
                  .. "regex, regex_width, sampler, session, special, stop, stop_ids, system, template"
    local e = helpers.errmsg
    assert.equal("pipeline step 2 ('draft'): unknown option 'tempalte' (known: " .. KNOWN .. ")",
                 e(slm.pipeline, { function() end, { name = "draft", session = s, tempalte = "x" } }))
    assert.equal("pipeline step 1 ('step1'): max_tokens must be a non-negative integer, got -1",
                 e(slm.pipeline, { { session = s, template = "x", max_tokens = -1 } }))
    assert.equal("pipeline step 1 ('a'): template must be a string or a function(ctx), got nil",
                 e(slm.pipeline, { { name = "a", session = s } }))
    assert.equal('pipeline step 1 (\'a\'): parse must be a Lua pattern or a function, got a table',
                 e(slm.pipeline, { { name = "a", session = s, template = "x", parse = {} } }))
    assert.equal("route 'r': unknown option 'defualt' (known: ask, branches, default, name, when)",
                 e(slm.pipeline.route, { name = "r", when = function() end, branches = {}, defualt = "x" }))
    assert.equal("route 'r' branch 'no': unknown option 'tmpl' (known: " .. KNOWN .. ")",
                 e(slm.pipeline.route, { name = "r", when = function() end,
                                         branches = { no = { session = s, tmpl = "x" } } }))
    assert.equal("route 'r': ask: the route sets regex (the answer is one of the branch names)",
                 e(slm.pipeline.route, { name = "r", ask = { session = s, template = "x", regex = "a" },
                                         branches = { yes = function() end } }))
    assert.equal("route 'r' ask: max_tokens must be a non-negative integer, got \"2\"",
                 e(slm.pipeline.route, { name = "r", ask = { session = s, template = "x", max_tokens = "2" },
                                         branches = { yes = function() end } }))
  end)

  it("errors name the failing step", function()
    local m = load("dense-q8_0.gguf")
    if m then
      local p = slm.pipeline { function() return 1 end, { name = "ask", session = m:session { ctx = 64 }, template = "{{missing}}" } }
      assert.has_error(function() p {} end, "pipeline step 'ask': template variable 'missing' is not set")
      -- an error raised inside slm names the step, not slm's file
      p = slm.pipeline { { name = "long", session = m:session { ctx = 8 }, template = "a long prompt, longer than 8" } }
      local ok, msg = pcall(p, {})
      assert.is_false(ok)
      assert.matches("^pipeline step 'long': generate: prompt of %d+ tokens does not fit the context %(0 of 8 in use%)$", msg)
    end
    -- a step table is checked when the pipeline is built
    assert.has_error(function() slm.pipeline { { name = "nosess", template = "x" } } end,
                     "pipeline step 1 ('nosess'): session must be a session (or model = a model), got nil")
    local p = slm.pipeline { function() error("boom", 0) end }
    assert.has_error(function() p {} end, "pipeline step 'step1': boom")
    p = slm.pipeline { slm.pipeline.route { name = "r", when = function() return "maybe" end,
                                            branches = { yes = function() end } } }
    assert.has_error(function() p {} end, "pipeline step 'r': no branch 'maybe' (branches: yes)")
    if m then
      p = slm.pipeline { { name = "num", session = m:session { ctx = 64 }, template = "a", max_tokens = 2,
                           regex = "[a-z]{2}", parse = "%d+" } }
      assert.has_error(function() p {} end)
      local ok, msg = pcall(p, {})
      assert.is_false(ok)
      assert.matches("^pipeline step 'num': parse pattern \"%%d%+\" does not match", msg)
    end
    assert.has_error(function() slm.pipeline {} end, "bad argument #1 to 'pipeline' (list of steps expected)")
    assert.has_error(function() slm.pipeline { 42 } end, "pipeline: step 1 is a number (a function, a table or a route expected)")
  end)
end)

describe("examples/pipeline.lua", function()
  it("drafts with one model, judges with another, and routes; reproducibly", function()
    local a, why = helpers.fixture("gguf/dense-q8_0.gguf")
    local b = helpers.fixture("gguf/qwen2-q8_0.gguf")
    if not a or not b then return pending(why or "qwen2-q8_0.gguf fixture not found") end
    local cmd = "bin/slm examples/pipeline.lua " .. a .. " " .. b .. " 'Why is the sky blue?' 8 2>&1"
    local p = io.popen(cmd)
    local out = p:read("a")
    local ok = p:close()
    assert.is_true(ok, out)
    assert.matches("^%[draft%] \"", out)
    assert.matches("\n%[final%] %-> [yesno]+ \"", out)
    assert.matches("\nfinal: ", out)
    p = io.popen(cmd)
    assert.equal(out, p:read("a"))
    p:close()
  end)
end)
