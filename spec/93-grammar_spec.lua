-- slm.grammar: every case of ../shared/fixtures/grammars (labels checked
-- against llama.cpp's engine, README there), parser errors with line:col,
-- the incremental matcher across byte boundaries.
local helpers = require "spec.helpers"
local slm = require "slm"

local NAMES = { "arithmetic", "comments", "json", "json_arr", "list", "negclass", "nested",
                "prefixalt", "repeat", "utf8" }

-- The case files' escapes (README: \n \t \r \\ \" and \xNN as one raw byte).
local function unescape(s)
  return (s:gsub("\\(x?)(%x?%x?)", function(x, hex)
    if x == "x" then return string.char(tonumber(hex, 16)) end
    return nil
  end):gsub("\\(.)", { n = "\n", t = "\t", r = "\r", ["\\"] = "\\", ['"'] = '"' }))
end

local function cases(path)
  local out = {}
  local text = helpers.read(path)
  for line in (text .. "\n"):gmatch("([^\n]*)\n") do   -- LF only (README)
    if line ~= "" and line:sub(1, 1) ~= "#" then
      local tab = line:find("\t", 1, true)
      assert(tab, "case line without a TAB: " .. line)
      out[#out + 1] = { label = line:sub(1, tab - 1), raw = line:sub(tab + 1),
                        s = unescape(line:sub(tab + 1)) }
    end
  end
  return out
end

describe("grammar fixtures", function()
  for _, name in ipairs(NAMES) do
    it(name .. ".cases", function()
      local gpath, why = helpers.fixture("grammars/" .. name .. ".gbnf")
      if not gpath then pending(why) return end
      local g = slm.grammar.compile(helpers.read(gpath))
      local list = cases(gpath:gsub("%.gbnf$", ".cases"))
      assert.is_true(#list > 10)
      local bad = {}
      for _, c in ipairs(list) do
        local r, off = g:match(c.s)
        local got = r == "complete" and "+" or r == "prefix" and "~" or "-"
        if got ~= c.label then bad[#bad + 1] = c.label .. " got " .. got .. ": " .. c.raw end
        if got == "-" then
          -- the offset is where the text stops being a prefix: the bytes
          -- before it still are one, one more byte is not
          assert.is_truthy(g:match(c.s:sub(1, off)))
          assert.is_nil(g:match(c.s:sub(1, off + 1)))
        end
      end
      assert.are.same({}, bad)
    end)
  end

  it("split at every byte, including inside UTF-8 characters, a matcher agrees with match", function()
    local gpath, why = helpers.fixture("grammars/utf8.gbnf")
    if not gpath then pending(why) return end
    local g = slm.grammar.compile(helpers.read(gpath))
    local n = 0
    for _, c in ipairs(cases(gpath:gsub("%.gbnf$", ".cases"))) do
      if c.label ~= "-" then
        for cut = 0, #c.s do
          local m = g:matcher()
          assert.is_true(m:accept(c.s:sub(1, cut)))
          assert.is_true(m:accept(c.s:sub(cut + 1)))
          assert.are.equal(c.label == "+", m:complete())
          n = n + 1
        end
      end
    end
    assert.is_true(n > 100)
  end)
end)

describe("grammar parser", function()
  local function err(text, root) return helpers.errmsg(slm.grammar.compile, text, root) end

  it("reports line and column", function()
    assert.are.equal("grammar:2:9: unknown escape '\\q'", err('root ::= a\na ::= "x\\q"\n'))
    assert.are.equal("grammar:1:10: undefined rule: value", err('root ::= value\n'))
    assert.are.equal("grammar:3:7: expected ')'", err('root ::= (\n  "a"\n  "b" ]\n'))
    assert.are.equal("grammar:1:10: unterminated literal", err('root ::= "abc\n'))
    assert.are.equal("grammar:1:10: unterminated character class", err('root ::= [a-z'))
    assert.are.equal("grammar:1:11: range out of order in the class", err('root ::= [z-a]'))
    assert.are.equal("grammar:1:11: '\\x' needs 2 hex digits", err('root ::= "\\x4"'))
    assert.are.equal("grammar:1:6: expected '::='", err('root = "a"'))
    assert.are.equal("grammar:2:1: rule defined twice: root", err('root ::= "a"\nroot ::= "b"'))
    assert.are.equal("grammar:1:13: repetition {m,n} with n < m", err('root ::= "a"{3,2}'))
    assert.are.equal("grammar:1:16: repetition count above 10000", err('root ::= "a"{0,100000}'))
    assert.are.equal("grammar:1:10: nothing to repeat before the operator", err('root ::= *'))
    assert.are.equal("grammar:1:14: expected the end of the line, '|' or an item", err('root ::= "a" ) "b"'))
  end)

  it("refuses left recursion and a missing start rule", function()
    assert.are.equal("grammar: rule 'expr' is left-recursive (it can begin with itself); " ..
                     "write it right-recursive or with a repetition",
                     err('root ::= expr\nexpr ::= expr "+" term | term\nterm ::= [0-9]\n'))
    -- through a rule that matches the empty string
    assert.matches("rule 'a' is left%-recursive", err('root ::= a\na ::= b a "x" | "y"\nb ::= "z"?\n'))
    assert.are.equal("grammar: no rule 'start' (the start rule)", err('root ::= "a"', "start"))
  end)

  it("bounded repetition expands to the counts asked", function()
    local g = slm.grammar.compile('root ::= ("ab" | "c"){2,3} "."\n')
    assert.are.equal("complete", g:match("abc."))
    assert.are.equal("complete", g:match("ccab."))
    assert.is_nil(g:match("c."))
    assert.is_nil(g:match("cccc"))
    assert.are.equal("prefix", g:match("ccc"))
  end)

  it("other start rules, rules() and matcher state", function()
    local g = slm.grammar.compile('root ::= "x"\nnum ::= [0-9]+\n', "num")
    assert.are.equal("complete", g:match("42"))
    assert.matches("num ::= %[0%-9%] num@2:14", g:rules())
    local m = g:matcher()
    assert.is_false(m:complete())
    assert.are.equal(1, m:distance())
    local ok, n = m:accept("1a")
    assert.is_false(ok)
    assert.are.equal(1, n)
    assert.is_false(m:complete())        -- nothing was accepted
    assert.is_true(m:accept("1"))
    local c = m:clone()
    assert.is_true(c:accept("2"))
    assert.is_true(m:complete() and m:can_continue())
    m:reset()
    assert.is_false(m:complete())
  end)
end)

describe("grammar token masks", function()
  -- the trie walk against feeding every token to a copy of the matcher
  local function brute(m, tok)
    local ids = {}
    local complete = m:complete()
    for id = 0, #tok - 1 do
      local piece = tok:piece(id)
      local ok
      if tok:is_eog(id) then ok = complete
      else ok = piece ~= "" and m:clone():accept(piece) end
      if ok then ids[#ids + 1] = id end
    end
    return ids
  end

  for _, vocab in ipairs { "ggml-vocab-gpt-2.gguf", "ggml-vocab-llama-spm.gguf" } do
    it("equal testing every token of " .. vocab, function()
      local vpath, why = helpers.fixture("vocab/" .. vocab)
      local gpath = helpers.fixture("grammars/json.gbnf")
      if not vpath or not gpath then pending(why or "grammars/json.gbnf not found") return end
      local tok = assert(slm.tokenizer.load(vpath))
      local g = slm.grammar.compile(helpers.read(gpath))
      local prefixes = { "", "{", '{"', '{"a', '{"a":', '{"a": [1', '{"a": [1.5e', '{"é\xc3', '{"a":"\\',
                         '{"a": {"b": null}}', '{"a":\n  ' }
      local total = 0
      for _, p in ipairs(prefixes) do
        local m = g:matcher()
        assert.is_true(m:accept(p), p)
        local got = m:allowed(tok)
        assert.are.same(brute(m, tok), got, p)
        total = total + #got
      end
      assert.is_true(total > 1000)   -- the masks are not trivially empty
    end)
  end
end)

describe("generation under a grammar", function()
  -- dense-q8_0: a random llama whose SentencePiece vocabulary (512 pieces)
  -- has byte fallback, so it can spell every fixture grammar's characters
  local function model()
    local p, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not p then pending(why) return nil end
    return assert(slm.load(p))
  end

  for _, name in ipairs(NAMES) do
    it("50 seeded generations of " .. name .. " parse and stop at completion", function()
      local m = model()
      local gpath, why = helpers.fixture("grammars/" .. name .. ".gbnf")
      if not m or not gpath then pending(why or "model") return end
      local g = slm.grammar.compile(helpers.read(gpath))
      local sess = m:session { ctx = 128 }
      sess:eval { 1 }
      local snap = sess:snapshot()
      for seed = 1, 50 do
        sess:restore(snap)
        local out, info = sess:generate(nil, { max_tokens = 40, grammar = g,
                                               sampler = { { "dist", seed = seed } } }, function() end)
        assert.are.equal("complete", g:match(out), ("seed %d: %q"):format(seed, out))
        assert.are.equal("complete", info.grammar)
        -- it stopped at completion: nothing could follow, an end token was
        -- chosen, or the last token allowed completed it
        assert.is_true(info.stopped == "grammar" or info.stopped == "max_tokens" and info.tokens == 40,
                       info.stopped)
      end
    end)
  end

  it("reports a grammar it cannot complete and refuses bad options", function()
    local m = model()
    if not m then return end
    local sess = m:session { ctx = 64 }
    local out, info = sess:generate("x", { max_tokens = 3, grammar = 'root ::= "abcdefghij"' }, function() end)
    assert.are.equal("grammar_incomplete", info.stopped)
    assert.are.equal("incomplete", info.grammar)
    assert.are.equal("prefix", slm.grammar.compile('root ::= "abcdefghij"'):match(out))
    assert.are.equal("generate: grammar:1:10: unterminated literal",
                     helpers.errmsg(sess.generate, sess, "x", { grammar = 'root ::= "abc' }))
    assert.are.equal("generate: grammar must be GBNF text or a compiled grammar, got 5",
                     helpers.errmsg(sess.generate, sess, "x", { grammar = 5 }))
    assert.are.equal("generate: give grammar or regex, not both",
                     helpers.errmsg(sess.generate, sess, "x", { grammar = 'root ::= "a"', regex = "a" }))
  end)
end)

describe("regex as a grammar", function()
  it("agrees with PCRE2 on the translated subset", function()
    local pats = { "[0-9]{3}-[0-9]{4}", "(yes|no)", " ?[0-9]{1,3}", "a.b\\.c+?", "^(ab|a)*c$", "[^\\]x-]*z",
                   "(?:é|[α-γ]){2,}", "x{2}y{0,2}", "\\x41\\x{e9}\\t", "\\d+(\\.\\d+)?", "\\w+\\s\\w*",
                   "[\\d,]+", "\\D\\S\\W", "[^\\s]{2}" }
    local texts = { "", "1", "123-", "123-4567", "12-3", "yes", "ye", "no", "n", " 1", " 1234", "a\nb.c",
                    "aXb.cc", "ababac", "abab", "c", "]z", "qqz", "ééα", "é", "δ", "xx", "xxyy", "xxyyy", "Aé\t",
                    "A", "3.14", "\u{663}\u{664}", "12,5", "a_b c", "é\u{3000}ü", "x\u{a0}", "\u{2028}",
                    "a1 ", "ab!", "a b", "1\u{1680}b_", "\u{ff10}.\u{ff11}" }   -- (PCRE2 calls an unfinished UTF-8 character invalid; the matcher, a prefix)
    local n = 0
    for _, p in ipairs(pats) do
      local g = assert(slm.grammar.from_regex(p), p)
      local re = slm.core.regex.new(p)
      for _, t in ipairs(texts) do
        local want = re:match(t)
        local got = g:match(t)
        want = want == "full" and "complete" or want == "partial" and "prefix" or nil
        assert.are.equal(want, got, p .. " on " .. ("%q"):format(t))
        n = n + 1
      end
    end
    assert.are.equal(#pats * #texts, n)
  end)

  it("reads \\d \\s \\w as PCRE2 does with UCP, for every code point of the BMP", function()
    local bad = {}
    for _, e in ipairs { "\\d", "\\s", "\\w" } do
      local g, re = assert(slm.grammar.from_regex(e)), slm.core.regex.new(e)
      for c = 0, 0xFFFF do
        if c < 0xD800 or c > 0xDFFF then
          local t = utf8.char(c)
          if (re:match(t) == "full") ~= (g:match(t) == "complete") then bad[#bad + 1] = ("%s U+%04X"):format(e, c) end
        end
      end
    end
    assert.are.same({}, bad)
  end)

  it("says why it does not translate the rest", function()
    local function why(p) return select(2, slm.grammar.from_regex(p)) end
    assert.are.equal("the escape \\b", why("\\bx"))
    assert.are.equal("a negated class escape inside [ ]", why("[\\D]"))
    assert.are.equal("the group '(?='", why("a(?=b)"))
    assert.are.equal("possessive quantifiers", why("a*+"))
    assert.are.equal("'$' other than last", why("a$b"))
  end)
end)
