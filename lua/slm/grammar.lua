--- slm.grammar: GBNF grammars (llama.cpp's format), incremental matching
-- and token masks for constrained generation.
--
--   local g = slm.grammar.compile([[
--   root ::= "yes" | "no" | num
--   num  ::= [0-9]{1,3}
--   ]])
--   g:match("12")    --> "complete"   (a whole sentence of the grammar)
--   g:match("ye")    --> "prefix"     (a valid start, not complete)
--   g:match("yo")    --> nil, 1       (s:sub(1, 1) is the longest valid prefix)
--   print(g:rules())                  -- the compiled rules, generated ones too
--
--   local m = g:matcher()             -- an incremental matcher for generation
--   m:accept("4")    --> true         (false, n: the bytes were refused from
--                                      byte n + 1 on; nothing was accepted)
--   m:complete()     --> true         the grammar may stop here
--   m:can_continue() --> true         some continuation exists
--   m:distance()     --> 0            fewest bytes still needed to complete
--                                      (math.huge: it never can)
--   m:clone(), m:reset()              a copy of the state; back to the start
--   m:allowed(tok [, limit])          ids (0-based, ascending) of the tokens
--                                      of tokenizer tok whose text keeps the
--                                      match alive; end-of-generation ids only
--                                      when complete; controls never. limit:
--                                      only tokens after which the grammar can
--                                      still complete within limit bytes
--   m:apply(tok, logits, out [, limit]) writes logits to out (f32 tensors of
--                                      one size) with -inf at disallowed ids;
--                                      returns the number allowed
--
-- The dialect: rules `name ::= ...` (names [a-zA-Z0-9-]), literals "...",
-- classes [...] and [^...] with ranges, `.` (any code point), groups, `|`,
-- `* + ? {m} {m,} {m,n}`, escapes \xNN \uNNNN \UNNNNNNNN \t \r \n \\ \" \[ \]
-- (any other is an error), `#` comments, a newline ending a rule except
-- inside ( ) or after `|`. Matching is on UTF-8 bytes: a character split
-- between two accept calls (two tokens) is kept in the state.
-- Errors name the place: "grammar:3:14: unknown escape '\q'",
-- "grammar:2:9: undefined rule: value". Left recursion (`a ::= a "x" | "y"`)
-- is refused, naming the rule: write it with a repetition (`"y" "x"*`).
-- Repetition counts are capped at 10000 each.
--
-- Masks walk the vocabulary as a trie of token texts, pruning a whole
-- subtree at the first refused byte, and are cached per matcher state, so
-- a state that recurs (inside a string, a list) costs a lookup. A grammar
-- and its matchers are for one thread at a time.
local core = require "slm.core"

local M = {}

local GRAMMAR_MT = debug.getregistry()["slm.Grammar"]

--- compile(text [, root]) -> grammar; raises "grammar:LINE:COL: ..." on bad
-- input. root: the start rule (default "root").
function M.compile(text, root)
  if type(text) ~= "string" then
    error("bad argument #1 to 'compile' (string expected, got " .. type(text) .. ")", 2)
  end
  if root ~= nil and type(root) ~= "string" then
    error("bad argument #2 to 'compile' (string expected, got " .. type(root) .. ")", 2)
  end
  local g, msg = core.grammar.compile(text, root)
  if not g then error(msg, 2) end
  return g
end

--- is_grammar(x) -> whether x is a compiled grammar.
function M.is_grammar(x)
  local mt = getmetatable(x)
  -- or a grammar made in Lua around one (slm.tools' lazy grammars)
  return mt == GRAMMAR_MT or (type(mt) == "table" and rawget(mt, "__grammar") == true)
end

--- load(path [, root]) -> grammar compiled from a .gbnf file, or nil, msg
-- when the file cannot be read (a bad grammar raises as compile does).
function M.load(path, root)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  return M.compile(text, root)
end

--- json_schema_to_gbnf(schema) -> GBNF text; from_json_schema(schema) ->
-- a compiled grammar. schema: a Lua table or JSON text; the subset and its
-- errors: docs/STRUCTURED.md (lua/slm/grammar/json_schema.lua).
function M.json_schema_to_gbnf(schema)
  return require("slm.grammar.json_schema").to_gbnf(schema)
end

function M.from_json_schema(schema)
  return M.compile(M.json_schema_to_gbnf(schema))
end

-- ---------------------------------------------------------------------------
-- Regular expressions as grammars: generate{regex =} runs on the same
-- incremental matcher when the pattern stays inside the subset below, which
-- PCRE2 (UTF, UCP, whole-text match) and the translation read alike:
-- literals, escaped punctuation, \t \n \r \f \e \xhh \x{h...}, `.` (any
-- character but a newline, as PCRE2 without (?s)), classes [...] / [^...]
-- with ranges and those escapes, \d \s \w \D \S \W (with UCP's Unicode
-- meaning: \p{Nd}; \p{Z} and \h \v; \p{L} \p{N} and _), groups ( ), (?: ), (?<name> ), `|`,
-- `* + ? {m} {m,} {m,n}` and their lazy forms (the same set of texts), `^`
-- first and `$` last (the match is anchored at both ends anyway). Anything
-- else (\b, \h, \p{..}, lookaround, back-
-- references, possessive quantifiers, inline flags, POSIX classes) is not
-- translated: from_regex says why, and generate falls back to PCRE2 partial
-- matching of the whole text.

local function cp_escape(c)
  return string.format("\\U%08X", c)
end

local SIMPLE = { t = 9, n = 10, r = 13, f = 12, e = 27, a = 7 }

-- \d \s \w as PCRE2 reads them under UCP, as the inside of a class
local classes = {}
local function unicode_class(w)
  classes[w] = classes[w] or core.grammar.unicode_class(w)
  return classes[w]
end
local CLASS_ESCAPES = { d = "d", s = "s", w = "w", D = "d", S = "s", W = "w" }

--- from_regex(pattern) -> grammar, or nil, reason (a construct outside the
-- subset above). The pattern is assumed to compile with PCRE2 (generate
-- checks that first, for PCRE2's own error messages).
function M.from_regex(pat)
  local pos, n = 1, #pat
  local codes = {}
  for _, c in utf8.codes(pat) do codes[#codes + 1] = c end
  n = #codes
  local function peek(k) return codes[pos + (k or 0)] end
  local function ch(k) local c = peek(k); return c and utf8.char(c) end
  local function unsupported(what) error({ why = what }, 0) end

  local function hex_escape()   -- after "\x"
    if ch() == "{" then
      local j = pos + 1
      local digits = {}
      while codes[j] and utf8.char(codes[j]):match("%x") do digits[#digits + 1] = utf8.char(codes[j]); j = j + 1 end
      if ch(j - pos) ~= "}" or #digits == 0 then unsupported("\\x without hex digits") end
      pos = j + 1
      return tonumber(table.concat(digits), 16)
    end
    local digits = ""
    while #digits < 2 and ch() and ch():match("%x") do digits = digits .. ch(); pos = pos + 1 end
    return tonumber(digits ~= "" and digits or "0", 16)
  end

  -- one escaped character (after "\") as a code point, or \d \s \w and
  -- their negations as the inside of a class and whether it is negated
  local function escape()
    local c = ch()
    if not c then unsupported("a trailing backslash") end
    pos = pos + 1
    if SIMPLE[c] then return SIMPLE[c] end
    if CLASS_ESCAPES[c] then return unicode_class(CLASS_ESCAPES[c]), c:match("%u") ~= nil end
    if c == "x" then return hex_escape() end
    if c:match("[%w]") or peek(-1) > 127 then unsupported("the escape \\" .. c) end
    return codes[pos - 1]
  end

  local alts
  local function class()
    pos = pos + 1   -- "["
    local out = { "[" }
    if ch() == "^" then out[#out + 1] = "^"; pos = pos + 1 end
    local first = true
    while true do
      local c = ch()
      if not c then unsupported("an unterminated class") end
      if c == "]" and not first then pos = pos + 1 break end
      if c == "[" and ch(1) == ":" then unsupported("POSIX classes") end
      local lo, neg
      if c == "\\" then pos = pos + 1; lo, neg = escape() else lo = peek(); pos = pos + 1 end
      if type(lo) == "string" then
        if neg then unsupported("a negated class escape inside [ ]") end
        out[#out + 1] = lo
        if ch() == "-" and ch(1) ~= "]" then unsupported("a range from a class escape") end
      else
        out[#out + 1] = cp_escape(lo)
      end
      if type(lo) ~= "string" and ch() == "-" and ch(1) and ch(1) ~= "]" then
        pos = pos + 1
        local hi
        if ch() == "\\" then pos = pos + 1; hi = escape() else hi = peek(); pos = pos + 1 end
        if type(hi) ~= "number" then unsupported("a range to a class escape") end
        out[#out + 1] = "-" .. cp_escape(hi)
      end
      first = false
    end
    out[#out + 1] = "]"
    return table.concat(out)
  end

  local function quantifier()
    local c = ch()
    local q
    if c == "*" or c == "+" or c == "?" then
      q = c
      pos = pos + 1
    elseif c == "{" then
      local rest = utf8.char(table.unpack(codes, pos, math.min(n, pos + 24)))
      local m, body = rest:match("^({(%d+,?%d*)})")
      if not m then unsupported("a '{' that is not a {m,n} quantifier") end
      q = m
      pos = pos + utf8.len(m)
      body = body   -- {m}, {m,}, {m,n}: GBNF writes them the same way
    else
      return nil
    end
    if ch() == "+" then unsupported("possessive quantifiers") end
    if ch() == "?" then pos = pos + 1 end   -- lazy: the same texts match
    return q
  end

  local function seq()
    local out = {}
    while pos <= n do
      local c = ch()
      local item
      if c == "|" or c == ")" then break
      elseif c == "(" then
        pos = pos + 1
        if ch() == "?" then
          if ch(1) == ":" then pos = pos + 2
          elseif ch(1) == "<" and ch(2) ~= "=" and ch(2) ~= "!" or (ch(1) == "P" and ch(2) == "<") then
            while ch() and ch() ~= ">" do pos = pos + 1 end
            pos = pos + 1
          else unsupported("the group '(?" .. (ch(1) or "") .. "'") end
        end
        item = "(" .. alts() .. ")"
        if ch() ~= ")" then unsupported("an unclosed group") end
        pos = pos + 1
      elseif c == "[" then item = class()
      elseif c == "." then pos = pos + 1; item = "[^\\n]"
      elseif c == "^" then
        if pos ~= 1 then unsupported("'^' other than first") end
        pos = pos + 1
      elseif c == "$" then
        if pos ~= n then unsupported("'$' other than last") end
        pos = pos + 1
      elseif c == "\\" then
        pos = pos + 1
        local e, neg = escape()
        if type(e) == "string" then item = (neg and "[^" or "[") .. e .. "]"
        else item = '"' .. cp_escape(e) .. '"' end
      elseif c == "*" or c == "+" or c == "?" or c == "{" then unsupported("a quantifier with nothing before it")
      else pos = pos + 1; item = '"' .. cp_escape(peek(-1)) .. '"' end
      if item then
        local q = quantifier()
        out[#out + 1] = q and "(" .. item .. ")" .. q or item
      end
    end
    return table.concat(out, " ")
  end

  function alts()
    local out = { seq() }
    while ch() == "|" do
      pos = pos + 1
      out[#out + 1] = seq()
    end
    return table.concat(out, " | ")
  end

  local ok, body = pcall(function()
    local b = alts()
    if pos <= n then unsupported("an unbalanced ')'") end
    return b
  end)
  if not ok then
    if type(body) == "table" then return nil, body.why end
    error(body, 0)
  end
  local ok2, g = pcall(M.compile, "root ::= " .. (body ~= "" and body or '""') .. "\n")
  if not ok2 then return nil, tostring(g) end
  return g
end

return M
