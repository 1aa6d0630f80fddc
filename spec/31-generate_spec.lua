-- sess:generate: streaming, stop conditions, samplers, regex constraints.
local helpers = require "spec.helpers"
local slm = require "slm"

local function model_or_pending(name)
  local path, why = helpers.fixture("gguf/" .. name)
  if not path then pending(why) return nil end
  return assert(slm.load(path))
end

local STORIES = { 461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264,
                  283, 452, 288, 13 }

describe("generate", function()
  it("streams greedy ids equal to the reference's, from a table prompt", function()
    local m = model_or_pending("stories260K-f32.gguf")
    if not m then return end
    local s = m:session { ctx = 64 }
    local ids = {}
    for piece, id in s:generate({ 1 }, { max_tokens = 20 }) do
      assert.is_string(piece)
      ids[#ids + 1] = id
    end
    assert.same(STORIES, ids)
    assert.equal(21, s.n_past)
  end)

  it("the callback form returns the whole text and can stop early", function()
    local m = model_or_pending("stories260K-f32.gguf")
    if not m then return end
    local s = m:session { ctx = 64 }
    local n = 0
    local text = s:generate({ 1 }, { max_tokens = 20 }, function(piece, id)
      n = n + 1
      return n < 5
    end)
    assert.equal(5, n)
    assert.is_string(text)
    local t2 = m:session { ctx = 64 }:generate({ 1 }, { max_tokens = 20 }, function() end)
    assert.equal(t2:sub(1, #text), text)
  end)

  it("breaking the loop leaves the session usable", function()
    local m = model_or_pending("stories260K-f32.gguf")
    if not m then return end
    local s = m:session { ctx = 64 }
    for _, id in s:generate({ 1 }, { max_tokens = 20 }) do
      if id == 401 then break end
    end
    assert.equal(4, s.n_past)   -- BOS + 461 461 401 evaluated
    local ids = {}
    for _, id in s:generate(nil, { max_tokens = 3 }) do ids[#ids + 1] = id end
    assert.same({ 401, 401, 461 }, ids)
  end)

  it("the same seed gives the same ids, another seed other ids", function()
    local m = model_or_pending("dense-q4_k_m.gguf")
    if not m then return end
    local function run(seed)
      local ids = {}
      m:session { ctx = 64 }:generate({ 1, 72, 300 }, {
        max_tokens = 24, sampler = { { "top_k", 40 }, { "temp", 1.2 }, { "dist", seed = seed } } },
        function(_, id) ids[#ids + 1] = id end)
      return ids
    end
    assert.same(run(7), run(7))
    assert.are_not.same(run(7), run(8))
  end)

  it("a restored snapshot continues with exactly the same sampled text", function()
    local m = model_or_pending("dense-q4_k_m.gguf")
    if not m then return end
    local s = m:session { ctx = 64 }
    s:eval { 1, 72, 300, 45 }
    local snap = s:snapshot()
    local function cont(sess)
      return sess:generate(nil, { max_tokens = 20, sampler = slm.sampler.default { temp = 1.0, seed = 99 } },
                           function() end)
    end
    local a = cont(s)
    s:restore(snap)
    assert.equal(a, cont(s))
    s:restore(snap)
    assert.equal(a, cont(s:fork()))
  end)

  it("stops before a stop string and never emits it", function()
    local m = model_or_pending("dense-q8_0.gguf")
    if not m then return end
    local full = m:session { ctx = 64 }:generate("Call me at", { max_tokens = 30 }, function() end)
    assert.is_true(#full > 6)
    local stop = full:sub(5, 6)        -- two bytes from the middle of the text
    local cut = m:session { ctx = 64 }:generate("Call me at", { max_tokens = 30, stop = { stop } },
                                                  function() end)
    assert.equal(full:sub(1, (full:find(stop, 1, true)) - 1), cut)
  end)

  it("text held back as a possible stop-string prefix comes out at the end", function()
    local m = model_or_pending("dense-q8_0.gguf")
    if not m then return end
    local full = m:session { ctx = 64 }:generate("Call me at", { max_tokens = 12 }, function() end)
    local stop = full:sub(-1) .. "\1"   -- its last byte starts this stop string
    local pieces, ids = {}, {}
    for piece, id in m:session { ctx = 64 }:generate("Call me at", { max_tokens = 12, stop = { stop } }) do
      pieces[#pieces + 1] = piece
      ids[#ids + 1] = id
    end
    assert.equal(full, table.concat(pieces))
    assert.is_true(ids[#ids] >= 0)
  end)

  it("regex-constrained output matches the pattern and ends when complete", function()
    local m = model_or_pending("dense-q8_0.gguf")
    if not m then return end
    local s = m:session { ctx = 64 }
    local out = s:generate("Call me at", { max_tokens = 30, regex = "[0-9]{3}-[0-9]{4}" }, function() end)
    assert.matches("^%d%d%d%-%d%d%d%d$", out)
    local yn = m:session { ctx = 64 }:generate("Is it?", {
      max_tokens = 10, regex = "(yes|no)", sampler = { { "temp", 1.5 }, { "dist", seed = 3 } } },
      function() end)
    assert.is_true(yn == "yes" or yn == "no")
  end)

  it("regex errors are clear", function()
    assert.has_error(function() slm.core.regex.new("[0-9") end,
                     "regex: missing terminating ] for character class at offset 4 of '[0-9'")
    local re = slm.core.regex.new("ab+")
    assert.equal("partial", re:match(""))
    assert.equal("partial", re:match("a"))
    assert.equal("full", re:match("abb"))
    assert.is_nil(re:match("abc"))
    assert.is_nil(re:match("\xff"))
  end)

  it("argument errors", function()
    local m = model_or_pending("dense-q8_0.gguf")
    if not m then return end
    local s = m:session { ctx = 64 }
    assert.has_error(function() s:generate(nil, {}) end, "generate: empty session and no prompt")
    assert.has_error(function() s:generate("x", { max_tokens = -1 }) end,
                     "generate: max_tokens must be a non-negative integer, got -1")
    assert.has_error(function() s:generate("x", { stop = { "" } }) end,
                     'generate: stop[1] must be a non-empty string, got ""')
    assert.has_error(function() s:generate("x", { max_token = 3 }) end,
                     "generate: unknown option 'max_token' (known: draft, grammar, json_schema, max_tokens, n_draft, "
                     .. "parse_special, regex, regex_width, sampler, special, stop, stop_ids)")
    assert.has_error(function() s:generate("x", { stop = 5 }) end,
                     "generate: stop must be a non-empty string or a list of them, got 5")
    assert.has_error(function() s:generate("x", { stop_ids = { "a" } }) end,
                     'generate: stop_ids[1] must be a token id, got "a"')
    assert.has_error(function() s:generate("x", { regex = 5 }) end,
                     "generate: regex must be a string (a PCRE2 pattern), got 5")
    assert.has_error(function() s:generate("x", { regex_width = 0 }) end,
                     "generate: regex_width must be a positive integer, got 0")
    assert.has_error(function() s:generate("x", { special = 1 }) end, "generate: special must be a boolean, got 1")
    assert.has_error(function() s:generate("x", { sampler = "greedy" }) end,
                     'generate: sampler must be a sampler or a list of stages, got "greedy"')
    assert.has_error(function() s:generate("x", 5) end, "generate: options must be a table, got 5")
    assert.has_error(function() s:generate("x", {}, 5) end, "bad argument #3 to 'generate' (function expected, got number)")
    assert.equal(0, s.n_past)   -- nothing was evaluated
    assert.has_error(function() s:generate(string.rep("word ", 30), {}) end,
                     "generate: prompt of 92 tokens does not fit the context (0 of 64 in use)")
  end)

  it("info: the seed, why it stopped, token counts and times", function()
    local m = model_or_pending("stories260K-f32.gguf")
    if not m then return end
    local s = m:session { ctx = 12 }
    local text, info = s:generate({ 1 }, { max_tokens = 5 }, function() end)
    assert.is_string(text)
    assert.same({ "max_tokens", 1, 5 }, { info.stopped, info.prompt_tokens, info.tokens })
    assert.is_nil(info.seed)   -- greedy
    assert.is_true(info.seconds > 0 and info.prompt_seconds > 0)
    -- the loop form: the state value is the same table, filled in as it goes
    local it, linfo = s:generate(nil, { max_tokens = 20, sampler = { { "dist" } } })
    local n = 0
    for _ in it, linfo do n = n + 1 end
    assert.equal("ctx", linfo.stopped)   -- 6 in use, room for 6 more
    assert.equal(6, linfo.tokens)
    assert.equal(0, linfo.prompt_tokens)
    assert.is_true(math.type(linfo.seed) == "integer")
    -- a fresh seed each run; the reported one reproduces it
    local function run(seed)
      local ids = {}
      local _, i = m:session { ctx = 64 }:generate({ 1 }, { max_tokens = 12, sampler = slm.sampler.default { temp = 1.5, seed = seed } },
                                                   function(_, id) ids[#ids + 1] = id end)
      return ids, i.seed
    end
    local a, seed = run()
    local _, other = run()
    assert.are_not.equal(seed, other)
    assert.same(a, (run(seed)))
    -- the other reasons
    local _, i = m:session { ctx = 64 }:generate({ 1 }, { max_tokens = 40, stop_ids = { 401 } }, function() end)
    assert.equal("end", i.stopped)
    _, i = m:session { ctx = 64 }:generate({ 1 }, { max_tokens = 40 }, function() return false end)
    assert.equal("callback", i.stopped)
    local full = m:session { ctx = 64 }:generate({ 1 }, { max_tokens = 20 }, function() end)
    _, i = m:session { ctx = 64 }:generate({ 1 }, { max_tokens = 20, stop = full:sub(4, 6) }, function() end)
    assert.equal("stop", i.stopped)
    _, i = m:session { ctx = 64 }:generate({ 1 }, { max_tokens = 20, regex = "[a-z]{3}" }, function() end)
    assert.equal("regex", i.stopped)
  end)
end)
