-- Shared helpers of the specs.
local helpers = {}

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

return helpers
