--- slm.grammar.schema_pattern: a JSON Schema `pattern` (an ECMA-262
-- regular expression) as a GBNF expression over the JSON text of a string's
-- content (between its quotes), and the GBNF text helpers the schema
-- converter shares.
--
--   local P = require "slm.grammar.schema_pattern"
--   P.to_gbnf("^[a-z][a-z0-9_]*$")   --> '[a-z] ([0-9_a-z])*'   (approximately)
--
-- The subset: literals, `.`, classes `[...]` / `[^...]` with ranges and the
-- escapes \d \D \w \W \s \S inside or outside them, \t \n \r \v \f \0 \xHH
-- \uHHHH and escaped punctuation, groups `( )` and `(?: )`, alternation `|`,
-- quantifiers `* + ? {m} {m,} {m,n}` (a lazy `?` after one is the same
-- language and is accepted), `^` at the start and `$` at the end of a
-- top-level alternative. An unanchored side matches anything there (JSON
-- Schema's pattern is a search, not a full match). Anything else
-- (lookaround, backreferences, \b, \B, \p{..}, flags) raises an error that
-- names it: a pattern is never approximated.
--
-- What the translation produces is the pattern's language written as JSON
-- text the canonical way: `"` as \" and `\` as \\; other characters raw.
-- Control characters (U+0000-U+001F) that a class or `.` would allow are
-- left out (they need escapes in JSON; a literal one in the pattern is kept
-- as its escape), so generation never produces them and matching rejects
-- instances that spell a pattern character with another escape (\u0041 for
-- A). That is a smaller language than the pattern's, never a larger one.
local M = {}

-- GBNF text -------------------------------------------------------------------

--- literal(s) -> a GBNF string literal for the bytes of s ("..." with \" \\
-- and control bytes as \xNN; other bytes, UTF-8 included, as they are).
function M.literal(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    if c == '"' or c == "\\" then return "\\" .. c end
    return string.format("\\x%02X", c:byte())
  end) .. '"'
end

--- cp(c) -> a code point as written inside a GBNF class: ASCII letters and
-- digits as themselves, others escaped (\xNN, \uNNNN, \UNNNNNNNN) so that
-- `]`, `-`, `^` and `\` never need thought.
function M.cp(c)
  if (c >= 48 and c <= 57) or (c >= 65 and c <= 90) or (c >= 97 and c <= 122) then return utf8.char(c) end
  if c < 0x80 then return string.format("\\x%02X", c) end
  if c <= 0xFFFF then return string.format("\\u%04X", c) end
  return string.format("\\U%08X", c)
end

-- Sets of code points: sorted lists of disjoint {lo, hi} ranges -----------

local MAX_CP = 0x10FFFF

local function normalize(ranges)
  table.sort(ranges, function(a, b) return a[1] < b[1] end)
  local out = {}
  for _, r in ipairs(ranges) do
    local last = out[#out]
    if last and r[1] <= last[2] + 1 then
      if r[2] > last[2] then last[2] = r[2] end
    else
      out[#out + 1] = { r[1], r[2] }
    end
  end
  return out
end

-- the code points not in ranges (surrogates excluded: they are not
-- characters and UTF-8 cannot carry them)
local function complement(ranges)
  local out, from = {}, 0
  for _, r in ipairs(normalize(ranges)) do
    if r[1] > from then out[#out + 1] = { from, r[1] - 1 } end
    from = r[2] + 1
  end
  if from <= MAX_CP then out[#out + 1] = { from, MAX_CP } end
  return M.minus(out, { { 0xD800, 0xDFFF } })
end

--- minus(a, b) -> the ranges of a without those of b.
function M.minus(a, b)
  local out = {}
  for _, r in ipairs(normalize(a)) do
    local lo, hi = r[1], r[2]
    for _, x in ipairs(normalize(b)) do
      if x[2] < lo or x[1] > hi then goto next end
      if x[1] > lo then out[#out + 1] = { lo, x[1] - 1 } end
      lo = x[2] + 1
      if lo > hi then break end
      ::next::
    end
    if lo <= hi then out[#out + 1] = { lo, hi } end
  end
  return out
end

local function has(ranges, c)
  for _, r in ipairs(ranges) do if c >= r[1] and c <= r[2] then return true end end
  return false
end

-- ECMA-262 class escapes (\s is its WhiteSpace plus LineTerminator)
local DIGIT = { { 48, 57 } }
local WORD = { { 48, 57 }, { 65, 90 }, { 95, 95 }, { 97, 122 } }
local SPACE = { { 9, 13 }, { 32, 32 }, { 0xA0, 0xA0 }, { 0x1680, 0x1680 }, { 0x2000, 0x200A },
                { 0x2028, 0x2029 }, { 0x202F, 0x202F }, { 0x205F, 0x205F }, { 0x3000, 0x3000 },
                { 0xFEFF, 0xFEFF } }
local CLASS_ESC = { d = DIGIT, w = WORD, s = SPACE }
-- `.`: anything but the line terminators
local DOT = complement { { 10, 10 }, { 13, 13 }, { 0x2028, 0x2029 } }

local CONTROLS = { { 0, 0x1F } }
local JSON_ESCAPE = { [8] = "\\b", [9] = "\\t", [10] = "\\n", [12] = "\\f", [13] = "\\r" }

--- set(ranges) -> GBNF for one character of the set as canonical JSON
-- string text, or nil when nothing is left (controls dropped: see above).
function M.set(ranges)
  local plain = M.minus(ranges, { { 0, 0x1F }, { 0x22, 0x22 }, { 0x5C, 0x5C } })
  local alts = {}
  if #plain > 0 then
    local parts = {}
    for _, r in ipairs(plain) do
      parts[#parts + 1] = r[1] == r[2] and M.cp(r[1]) or (M.cp(r[1]) .. "-" .. M.cp(r[2]))
    end
    alts[#alts + 1] = "[" .. table.concat(parts) .. "]"
  end
  if has(ranges, 0x22) then alts[#alts + 1] = M.literal('\\"') end
  if has(ranges, 0x5C) then alts[#alts + 1] = M.literal("\\\\") end
  if #alts == 0 then return nil end
  if #alts == 1 then return alts[1] end
  return "(" .. table.concat(alts, " | ") .. ")"
end

-- one literal character as canonical JSON string text
local function char_text(c)
  if c == 0x22 then return '\\"' end
  if c == 0x5C then return "\\\\" end
  if c < 0x20 then return JSON_ESCAPE[c] or string.format("\\u%04x", c) end
  return utf8.char(c)
end

-- The parser -----------------------------------------------------------------

local Parser = {}
Parser.__index = Parser

function Parser:fail(msg)
  error(string.format("pattern %q: %s (at character %d)", self.src, msg, self.i), 0)
end

function Parser:peek(k) return self.cps[self.i + (k or 0)] end

function Parser:next()
  local c = self.cps[self.i]
  self.i = self.i + 1
  return c
end

local function ch(s) return utf8.codepoint(s) end

-- a number of hex digits as a code point
function Parser:hex(n)
  local v = 0
  for _ = 1, n do
    local c = self:next()
    local d = c and tonumber(utf8.char(c), 16)
    if not d then self:fail("bad hexadecimal escape") end
    v = v * 16 + d
  end
  return v
end

-- after a backslash: a set of ranges ({ranges}) or a single code point
local SIMPLE = { t = 9, n = 10, r = 13, v = 11, f = 12 }
function Parser:escape(in_class)
  local c = self:next()
  if not c then self:fail("the pattern ends with a backslash") end
  local s = utf8.char(c)
  if CLASS_ESC[s] then return { ranges = CLASS_ESC[s] } end
  if CLASS_ESC[s:lower()] then return { ranges = complement(CLASS_ESC[s:lower()]) } end
  if SIMPLE[s] then return SIMPLE[s] end
  if s == "0" and not (self:peek() and self:peek() >= 48 and self:peek() <= 57) then return 0 end
  if s == "x" then return self:hex(2) end
  if s == "u" then
    if self:peek() == ch("{") then self:fail("\\u{...} (needs the u flag) is not supported") end
    return self:hex(4)
  end
  if s == "b" and in_class then return 8 end
  if s:match("^[%p]$") and s ~= "_" then return c end
  if s == "b" or s == "B" then self:fail("word boundaries (\\" .. s .. ") are not supported") end
  if s:match("^%d$") then self:fail("backreferences are not supported") end
  self:fail("the escape \\" .. s .. " is not supported")
end

-- a class [...] after its "[": ranges
function Parser:class()
  local negate = false
  if self:peek() == ch("^") then negate = true; self:next() end
  local ranges = {}
  local first = true
  while true do
    local c = self:next()
    if not c then self:fail("unterminated character class") end
    if c == ch("]") and not first then break end
    if c == ch("]") and first then
      -- ECMA: [] matches nothing, [^] anything
      break
    end
    first = false
    local lo = c
    if c == ch("\\") then lo = self:escape(true) end
    if type(lo) == "table" then
      for _, r in ipairs(lo.ranges) do ranges[#ranges + 1] = r end
    elseif self:peek() == ch("-") and self:peek(1) and self:peek(1) ~= ch("]") then
      self:next()
      local hi = self:next()
      if hi == ch("\\") then hi = self:escape(true) end
      if type(hi) == "table" then self:fail("a class escape cannot end a range") end
      if hi < lo then self:fail("range out of order in a character class") end
      ranges[#ranges + 1] = { lo, hi }
    else
      ranges[#ranges + 1] = { lo, lo }
    end
  end
  if negate then return complement(ranges) end
  return normalize(ranges)
end

-- quantifier after an atom: min, max (nil = unbounded), or nil
function Parser:quantifier()
  local c = self:peek()
  local lo, hi
  if c == ch("*") then self:next(); lo = 0
  elseif c == ch("+") then self:next(); lo = 1
  elseif c == ch("?") then self:next(); lo, hi = 0, 1
  elseif c == ch("{") then
    local rest = utf8.char(table.unpack(self.cps, self.i, math.min(#self.cps, self.i + 40)))
    local m, comma, n = rest:match("^{(%d+)(,?)(%d*)}")
    if not m then self:fail("'{' that is not a quantifier {m}, {m,} or {m,n}") end
    self.i = self.i + #m + #comma + #n + 2
    lo = tonumber(m)
    hi = comma == "" and lo or (n ~= "" and tonumber(n) or nil)
    if hi and hi < lo then self:fail("quantifier {" .. m .. "," .. n .. "} has max < min") end
  else
    return nil
  end
  if self:peek() == ch("?") then self:next() end -- lazy: same language
  return lo, hi
end

local function quantify(expr, lo, hi)
  if lo == 0 and hi == nil then return "(" .. expr .. ")*" end
  if lo == 1 and hi == nil then return "(" .. expr .. ")+" end
  if lo == 0 and hi == 1 then return "(" .. expr .. ")?" end
  if hi == nil then return "(" .. expr .. "){" .. lo .. ",}" end
  if lo == hi then return "(" .. expr .. "){" .. lo .. "}" end
  return "(" .. expr .. "){" .. lo .. "," .. hi .. "}"
end

-- alt := seq ('|' seq)* ; at top level each seq may carry ^ and $
function Parser:alternation(top)
  local alts = { self:sequence(top) }
  while self:peek() == ch("|") do
    self:next()
    alts[#alts + 1] = self:sequence(top)
  end
  if #alts == 1 then return alts[1] end
  return "(" .. table.concat(alts, " | ") .. ")"
end

function Parser:sequence(top)
  local items = {}
  local start_anchor, end_anchor = false, false
  if self:peek() == ch("^") then
    if not top then self:fail("'^' inside a group is not supported") end
    self:next()
    start_anchor = true
  end
  while true do
    local c = self:peek()
    if c == nil or c == ch("|") or c == ch(")") then break end
    if c == ch("$") then
      self:next()
      local after = self:peek()
      if not top or (after ~= nil and after ~= ch("|")) then self:fail("'$' before the end is not supported") end
      end_anchor = true
      break
    end
    local atom = self:atom()
    local lo, hi = self:quantifier()
    if lo then atom = quantify(atom, lo, hi) end
    items[#items + 1] = atom
  end
  if top then
    -- JSON Schema's pattern matches anywhere unless anchored
    if not start_anchor then table.insert(items, 1, "char*") end
    if not end_anchor then items[#items + 1] = "char*" end
    self.uses_char = self.uses_char or not (start_anchor and end_anchor)
  end
  if #items == 0 then return '""' end
  return table.concat(items, " ")
end

function Parser:atom()
  local c = self:next()
  if c == ch("(") then
    if self:peek() == ch("?") then
      if self:peek(1) == ch(":") then
        self.i = self.i + 2
      else
        self:fail("lookaround and named groups are not supported")
      end
    end
    local inner = self:alternation(false)
    if self:next() ~= ch(")") then self:fail("missing ')'") end
    return "(" .. inner .. ")"
  elseif c == ch("[") then
    local ranges = self:class()
    return M.set(ranges) or self:fail("a character class that allows no JSON string character")
  elseif c == ch(".") then
    return M.set(DOT)
  elseif c == ch("\\") then
    local e = self:escape(false)
    if type(e) == "table" then
      return M.set(e.ranges) or self:fail("a class escape that allows no JSON string character")
    end
    return M.literal(char_text(e))
  elseif c == ch("*") or c == ch("+") or c == ch("?") then
    self:fail("quantifier without an atom")
  elseif c == ch(")") then
    self:fail("unbalanced ')'")
  elseif c == ch("{") and self:quantifier_ahead() then
    self:fail("quantifier without an atom")
  end
  return M.literal(char_text(c))
end

function Parser:quantifier_ahead()
  self.i = self.i - 1
  local rest = utf8.char(table.unpack(self.cps, self.i, math.min(#self.cps, self.i + 40)))
  self.i = self.i + 1
  return rest:match("^{%d+,?%d*}") ~= nil
end

--- to_gbnf(pattern) -> expr, uses_char: a GBNF expression for the content
-- of a JSON string that the pattern matches (see the header), and whether it
-- refers to the rule `char` (any JSON string character; unanchored sides).
-- Raises "pattern \"...\": <what> (at character N)" on what it cannot
-- express.
function M.to_gbnf(pattern)
  if type(pattern) ~= "string" then error("pattern must be a string", 0) end
  local cps = {}
  local ok = pcall(function() for _, c in utf8.codes(pattern) do cps[#cps + 1] = c end end)
  if not ok then error(string.format("pattern %q is not valid UTF-8", pattern), 0) end
  local p = setmetatable({ src = pattern, cps = cps, i = 1 }, Parser)
  local expr = p:alternation(true)
  if p.i <= #cps then p:fail("unbalanced ')'") end
  return expr, p.uses_char or false
end

M.complement = complement
M.CONTROLS = CONTROLS

return M
