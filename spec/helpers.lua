-- Shared helpers of the specs.
local helpers = {}

-- os.tmpname creates the file it names; specs often write to that name plus
-- a suffix or remove it only on success. Every name it hands out is removed
-- when the busted process closes its Lua state (the table's __gc), so a
-- test run leaves nothing in /tmp.
local raw_tmpname = os.tmpname
helpers.tmpnames = setmetatable({}, { __gc = function(t)
  for _, p in ipairs(t) do os.remove(p) end
end })
function os.tmpname()
  local p = raw_tmpname()
  helpers.tmpnames[#helpers.tmpnames + 1] = p
  return p
end

--- Directory of the shared fixtures (SLM_FIXTURES, default ../shared/fixtures).
helpers.fixtures = os.getenv("SLM_FIXTURES") or "../shared/fixtures"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end
helpers.exists = exists

--- Path of a fixture file, or nil plus a skip message when absent.
function helpers.fixture(rel)
  local p = helpers.fixtures .. "/" .. rel
  if exists(p) then return p end
  return nil, "fixture " .. p .. " not found (set SLM_FIXTURES)"
end

--- The message of the error f(...) raises, without its "file:line: " prefix
-- (fails when f does not raise).
function helpers.errmsg(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return (tostring(e):gsub("^[^:]+:%d+: ", ""))
end

--- Reads a whole file as a string.
function helpers.read(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

--- Writes a string to a temporary file and returns its path.
function helpers.tmpfile(content)
  local p = os.tmpname()
  local f = assert(io.open(p, "wb"))
  f:write(content or "")
  f:close()
  return p
end

--- Deterministic pseudo-random floats in [-scale, scale) (xorshift32).
function helpers.randoms(n, seed, scale)
  local s = seed or 1
  scale = scale or 1
  local out = {}
  for i = 1, n do
    s = s ~ ((s << 13) & 0xffffffff)
    s = s ~ (s >> 17)
    s = s ~ ((s << 5) & 0xffffffff)
    out[i] = ((s % 2000003) / 1000001.5 - 1) * scale
  end
  return out
end

--- Reads a reference logits file (.ref): int32 n_pos, n_vocab, n_gen, then
-- float32 logits[n_pos][n_vocab], then int32 gen[n_gen]. Returns
-- {n_pos=, n_vocab=, logits = {{...}, ...}, gen = {...}, sd = std of all logits}.
function helpers.read_ref(path)
  local s = helpers.read(path)
  local n_pos, n_vocab, n_gen, off = string.unpack("<i4i4i4", s)
  local logits, sum, sum2 = {}, 0, 0
  local fmt = "<" .. string.rep("f", n_vocab)
  for p = 1, n_pos do
    local row = table.pack(string.unpack(fmt, s, off))
    off = row[n_vocab + 1]
    row[n_vocab + 1], row.n = nil, nil
    for v = 1, n_vocab do
      sum = sum + row[v]
      sum2 = sum2 + row[v] * row[v]
    end
    logits[p] = row
  end
  local gen = {}
  for i = 1, n_gen do gen[i], off = string.unpack("<i4", s, off) end
  local n = n_pos * n_vocab
  return { n_pos = n_pos, n_vocab = n_vocab, logits = logits, gen = gen,
           sd = math.sqrt(sum2 / n - (sum / n) ^ 2) }
end

--- max |a[i] - b[i]| over a tensor of n floats and a Lua array.
function helpers.max_diff(t, ref)
  local m = 0
  for i = 1, #ref do
    local d = math.abs(t:get(i) - ref[i])
    if d > m then m = d end
  end
  return m
end

--- argmax of a 1-D tensor, 0-based id (ties: lowest id).
function helpers.argmax(t)
  local best, bi = -math.huge, 0
  for i = 1, t:numel() do
    local x = t:get(i)
    if x > best then best, bi = x, i - 1 end
  end
  return bi
end

return helpers
