--- slm.grammar.int_range: GBNF for the decimal spellings of the integers in
-- a range (JSON Schema's minimum/maximum on integers), without leading
-- zeros. The integer grammar stops at 16 digits (the reference's
-- `integral-part`), so MAX is the largest magnitude.
--
--   R.nonneg(5, 120) --> '([5-9]) | ([1-9] [0-9]{1}) | ("1" ([0-1] [0-9]{1} | "2" ("0")))'
--
-- Same-length bounds split at the first digit where they differ: the low
-- bound's digit followed by "its rest or more", the digits strictly between
-- followed by anything, the high bound's digit followed by "its rest or
-- less" (a rest of all zeros / all nines needs no split).
local M = {}

M.MAX = 9999999999999999

local function lit(s) return '"' .. s .. '"' end

-- the decimal strings of lo..hi, two strings of the same length
local function digit_range(lo, hi)
  if lo == hi then return lit(lo) end
  local a, b = lo:byte(1) - 48, hi:byte(1) - 48
  local n = #lo - 1
  local function cls(x, y) return x == y and lit(tostring(x)) or "[" .. x .. "-" .. y .. "]" end
  if n == 0 then return cls(a, b) end
  local lo_rest, hi_rest = lo:sub(2), hi:sub(2)
  if a == b then return lit(tostring(a)) .. " (" .. digit_range(lo_rest, hi_rest) .. ")" end
  local nines, zeros = ("9"):rep(n), ("0"):rep(n)
  local alts = {}
  local from, to = a, b
  if lo_rest ~= zeros then
    alts[#alts + 1] = lit(tostring(a)) .. " (" .. digit_range(lo_rest, nines) .. ")"
    from = a + 1
  end
  if hi_rest ~= nines then to = b - 1 end
  if from <= to then alts[#alts + 1] = cls(from, to) .. " [0-9]{" .. n .. "}" end
  if hi_rest ~= nines then alts[#alts + 1] = lit(tostring(b)) .. " (" .. digit_range(zeros, hi_rest) .. ")" end
  return table.concat(alts, " | ")
end

--- nonneg(lo, hi) -> GBNF alternatives for lo..hi, 0 <= lo <= hi <= MAX
-- (integers). Lengths whose whole range is allowed share one alternative.
function M.nonneg(lo, hi)
  local alts = {}
  local full_from, full_to -- a run of lengths d with every d-digit number
  local function flush()
    if full_from then
      local r = full_from == full_to and "{" .. (full_from - 1) .. "}" or "{" .. (full_from - 1) .. "," .. (full_to - 1) .. "}"
      alts[#alts + 1] = "([1-9] [0-9]" .. r .. ")"
      full_from = nil
    end
  end
  for d = #string.format("%d", lo), #string.format("%d", hi) do
    local first = d == 1 and 0 or math.tointeger(10 ^ (d - 1))
    local last = math.tointeger(10 ^ d) - 1
    local a, b = math.max(lo, first), math.min(hi, last)
    if d > 1 and a == first and b == last then
      full_from, full_to = full_from or d, d
    else
      flush()
      alts[#alts + 1] = "(" .. digit_range(string.format("%d", a), string.format("%d", b)) .. ")"
    end
  end
  flush()
  return table.concat(alts, " | ")
end

return M
