--- slm.tensor: n-dimensional tensors over shared, reference-counted storage.
--
-- The primitives (views, copies, element access) are C methods of the
-- "slm.Tensor" userdata (csrc/bind/l_tensor.c); this module adds
-- constructors from Lua tables, `totable`, `t[i]` indexing and torch-style
-- printing.
--
-- Conventions (as in Torch 7):
--  * shapes are listed outermost first: a 2x3 tensor has 2 rows of 3;
--  * dims and indices are 1-based (the C core is 0-based);
--  * views (narrow, select, transpose, t, reshape/view, t[i]) share storage
--    with their parent and keep it alive; writes through a view are visible
--    in the parent;
--  * block-quantized dtypes (q4_0, q8_0, q4_k, ...) keep whole blocks along
--    the last dim: narrow it only at block boundaries, never select it or
--    transpose it away; `get`, `row`, `totable` and printing dequantize;
--    `set` requantizes the element's whole block, so its neighbours in the
--    block may move by up to a quantization step;
--  * tensors viewing a read-only file mapping refuse `set` and `copy_`;
--    `clone()` gives a writable copy.
--
-- Methods (t a tensor):
--   t:shape() t:size([dim]) t:stride() t:dtype() t:dim() t:numel() #t
--   t:nbytes() t:is_contiguous() t:is_readonly() t:shares_storage(u)
--   t:narrow(dim, start, len) t:select(dim, i) t:transpose(d0, d1) t:t()
--   t:reshape(shape | d1, d2, ...) (= t:view), one size may be -1
--   t:copy_(src) t:to(dtype) t:clone() t:contiguous()
--   t:get(i, j, ...) t:set(i, j, ..., v) t:row(i) t:totable() t:tobytes()
--   t:free() (also __close / __gc); t[i]: row view (ndim > 1) or number
local core = require "slm.core"

local C = core.tensor
local mt = C.metatable
local methods = mt.__index
local short_tostring = mt.__tostring

local M = {}

--- zeros(shape [, dtype = "f32"]) -> tensor, e.g. zeros({2, 3}, "f16")
M.zeros = C.zeros

--- frombytes(str, dtype, shape) -> tensor holding a copy of the bytes
-- (the dtype's own encoding, elements in row-major order; size checked)
M.frombytes = C.frombytes

--- The metatable of all tensors (registered as "slm.Tensor").
M.metatable = mt

function M.is_tensor(x)
  return getmetatable(x) == mt
end

local function argerror(n, fname, msg)
  error(string.format("bad argument #%d to '%s' (%s)", n, fname, msg), 3)
end

-- Shape of a nested table, checking that it is rectangular; appends the
-- numbers in row-major order to flat.
local function flatten(data, flat)
  local shape = {}
  local node = data
  while type(node) == "table" do
    if #node == 0 then return nil, "empty table at depth " .. (#shape + 1) end
    shape[#shape + 1] = #node
    node = node[1]
  end
  local function walk(t, depth, path)
    if #t ~= shape[depth] then
      return nil, string.format("ragged table: %s has length %d, expected %d",
                                path, #t, shape[depth])
    end
    local n = #flat
    for i = 1, #t do
      local v = t[i]
      if depth < #shape then
        if type(v) ~= "table" then
          return nil, string.format("ragged table: %s[%d] is a %s, expected a table",
                                    path, i, type(v))
        end
        local ok, err = walk(v, depth + 1, path .. "[" .. i .. "]")
        if not ok then return nil, err end
      elseif type(v) ~= "number" then
        return nil, string.format("%s[%d] is a %s, expected a number", path, i, type(v))
      else
        n = n + 1
        flat[n] = v
      end
    end
    return true
  end
  local ok, err = walk(data, 1, "data")
  if not ok then return nil, err end
  return shape
end

--- new(data [, dtype = "f32" [, shape]]) -> tensor
-- data is a nested table of numbers whose nesting gives the shape
-- ({{1, 2, 3}, {4, 5, 6}} is 2x3), or a flat table with an explicit shape.
-- Values are converted to dtype through float32 (integer dtypes exactly).
function M.new(data, dtype, shape)
  if type(data) ~= "table" then
    argerror(1, "new", "table expected, got " .. type(data))
  end
  dtype = dtype or "f32"
  local flat = {}
  if shape ~= nil then
    if type(shape) ~= "table" then argerror(3, "new", "shape must be a table") end
    for i = 1, #data do
      if type(data[i]) ~= "number" then
        argerror(1, "new", string.format("data[%d] is a %s, expected a number (a flat table "
                                         .. "goes with a shape)", i, type(data[i])))
      end
      flat[i] = data[i]
    end
  else
    local err
    shape, err = flatten(data, flat)
    if not shape then argerror(1, "new", err) end
    if #shape > 4 then argerror(1, "new", "more than 4 nested levels") end
  end
  local ok, t = pcall(C.fromtable, flat, dtype, shape)
  if not ok then
    if type(t) ~= "string" then error(t, 0) end
    -- report misuse (bad dtype, bad shape, too few values) against new()
    local msg = t:gsub("^(bad argument #%d+ to )'[^']*'", "%1'new'")
    error((msg:gsub("^fromtable: ", "new: ")), 2)
  end
  return t
end

--- totable() -> nested table of numbers (dequantized), shape as the tensor
function methods.totable(t)
  local shape = t:shape()
  local nd = #shape
  local r = 0
  local function build(depth)
    if depth == nd then
      r = r + 1
      return t:row(r)
    end
    local out = {}
    for i = 1, shape[depth] do out[i] = build(depth + 1) end
    return out
  end
  return build(1)
end

--- t[i]: the number at i of a 1-D tensor, else the view t:select(1, i)
mt.__index = function(t, k)
  local i = math.type(k) == "float" and math.tointeger(k) or k
  if math.type(i) == "integer" then
    if t:dim() == 1 then return t:get(i) end
    return t:select(1, i)
  end
  return methods[k]
end

--- t[i] = v: sets element i of a 1-D tensor, or copies tensor v into the
-- view t[i]
mt.__newindex = function(t, k, v)
  local i = math.type(k) == "float" and math.tointeger(k) or k
  if math.type(i) ~= "integer" then
    error("cannot set field '" .. tostring(k) .. "' of a tensor", 2)
  end
  if t:dim() == 1 then
    t:set(i, v)
  elseif M.is_tensor(v) then
    t:select(1, i):copy_(v)
  else
    error(string.format("t[%d] = v needs a tensor for a %d-D tensor, got %s",
                        i, t:dim(), type(v)), 2)
  end
end

-- ---- printing ---------------------------------------------------------

local EDGE = 3          -- items kept at each end of a summarized dim
local SUMMARIZE = 1000  -- tensors with more elements are summarized
local LINE = 120        -- longer rows show only their ends

-- Indices shown along a dim of size n; false marks the "..." gap.
local function shown(n, summarize)
  local l = {}
  if summarize and n > 2 * EDGE then
    for i = 1, EDGE do l[#l + 1] = i end
    l[#l + 1] = false
    for i = n - EDGE + 1, n do l[#l + 1] = i end
  else
    for i = 1, n do l[i] = i end
  end
  return l
end

-- One format for all shown values: integers as such, fixed point when
-- the magnitudes allow 4 decimals, else scientific.
local function choose_format(values)
  local all_int, maxa, mina = true, 0, math.huge
  for _, v in ipairs(values) do
    if v == v and v ~= math.huge and v ~= -math.huge then
      local a = math.abs(v)
      if v ~= math.floor(v) then all_int = false end
      if a > maxa then maxa = a end
      if a > 0 and a < mina then mina = a end
    end
  end
  if all_int and maxa < 1e9 then return "%.0f" end
  if maxa < 1e5 and mina >= 1e-4 then return "%.4f" end
  return "%.4e"
end

local function fmt_number(fmt, v)
  if v ~= v then return "nan" end
  if v == math.huge then return "inf" end
  if v == -math.huge then return "-inf" end
  local s = string.format(fmt, v)
  if s == "-0" then s = "0" end
  return s
end

-- Pretty form: the values (summarized past SUMMARIZE elements) and a
-- footer "[slm.Tensor f32 2x3]". Matrices of tensors with more than 2 dims
-- are headed "(i,j,.,.) =" as in Torch.
local function pretty(t)
  local shape = t:shape()
  local nd = #shape
  local summarize = t:numel() > SUMMARIZE
  local ncols = shape[nd]
  local rows_dim = nd >= 2 and shape[nd - 1] or 1
  local rows = shown(rows_dim, summarize and nd >= 2)

  -- blocks: one per outer multi-index (dims 1..nd-2), false for a gap
  local blocks = {}
  local function collect(prefix, depth)
    if depth > nd - 2 then
      local blk = {prefix = prefix, rows = {}}
      for _, ri in ipairs(rows) do
        if ri then
          -- flat row number of (prefix..., ri) in the numel/last x last view
          local r = 0
          for d = 1, nd - 2 do r = r * shape[d] + (prefix[d] - 1) end
          r = r * rows_dim + ri
          blk.rows[#blk.rows + 1] = t:row(r)
        else
          blk.rows[#blk.rows + 1] = false
        end
      end
      blocks[#blocks + 1] = blk
      return
    end
    for _, i in ipairs(shown(shape[depth], summarize)) do
      if i then
        local p = {table.unpack(prefix)}
        p[#p + 1] = i
        collect(p, depth + 1)
      else
        blocks[#blocks + 1] = false
      end
    end
  end
  collect({}, 1)

  -- the values shown with the given columns, and their common format/width
  local function layout(cols)
    local values = {}
    for _, blk in ipairs(blocks) do
      for _, full in ipairs(blk and blk.rows or {}) do
        for _, ci in ipairs(full and cols or {}) do
          if ci then values[#values + 1] = full[ci] end
        end
      end
    end
    local fmt = choose_format(values)
    local width = 3
    for _, v in ipairs(values) do width = math.max(width, #fmt_number(fmt, v)) end
    return fmt, width
  end
  -- all columns unless the tensor is summarized or the lines get too long
  local cols = shown(ncols, false)
  local fmt, width = layout(cols)
  if summarize or ncols * (width + 2) > LINE then
    cols = shown(ncols, true)
    fmt, width = layout(cols)
  end
  local function line(cells)
    local parts = {}
    for i, v in ipairs(cells) do
      local s = v and fmt_number(fmt, v) or "..."
      parts[i] = string.rep(" ", width - #s) .. s
    end
    return table.concat(parts, "  ")
  end

  local out = {}
  for b, blk in ipairs(blocks) do
    if b > 1 then out[#out + 1] = "" end
    if not blk then
      out[#out + 1] = "..."
    else
      if nd > 2 then
        local idx = {}
        for d = 1, nd - 2 do idx[d] = tostring(blk.prefix[d]) end
        out[#out + 1] = "(" .. table.concat(idx, ",") .. ",.,.) ="
      end
      for _, full in ipairs(blk.rows) do
        if full then
          local cells = {}
          for i, ci in ipairs(cols) do cells[i] = ci and full[ci] end
          out[#out + 1] = line(cells)
        else
          out[#out + 1] = "..."
        end
      end
    end
  end
  out[#out + 1] = string.format("[slm.Tensor %s %s]", t:dtype(),
                                table.concat(shape, "x"))
  return table.concat(out, "\n")
end

mt.__tostring = function(t)
  if not pcall(methods.dim, t) then return short_tostring(t) end  -- freed
  return pretty(t)
end

--- The one-line description "slm.Tensor(f32, 2x3)" (or "slm.Tensor(freed)").
M.short = short_tostring

return M
