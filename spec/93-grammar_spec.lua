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
