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
                     "generate: max_tokens must be a non-negative integer")
    assert.has_error(function() s:generate("x", { stop = { "" } }) end,
                     "generate: stop[1] must be a non-empty string")
  end)
end)
