--- slm.gguf: GGUF model files, read (zero-copy, validated) and written.
--
-- Reading:
--   local f = assert(slm.gguf.open(path))   -- or nil, msg (missing/malformed)
--   f.path, f.version (2 or 3), f.alignment, f.data_offset
--   f.keys         metadata keys in file order
--   f.metadata     key -> value, decoded lazily on first access (arrays
--                  become Lua tables; pairs() walks the keys in file order)
--   f:get(key)     the same value (nil when absent)
--   f:type(key)    "u8" "i8" "u16" "i16" "u32" "i32" "u64" "i64" "f32"
--                  "f64" "bool" "str" or "arr" plus the element type
--   f:typed(key)   {type=, value=} as slm.gguf.write takes it (copying keys)
--   f:arr_len(key), f:arr_get(key, i)   one element of a big array, lazily
--   f.tensors      list of {name=, dtype=, shape={outermost first}, bytes=, offset=}
--   f:info(name)   one of those (nil when absent)
--   f:tensor(name | i) -> zero-copy slm.Tensor over the file mapping
--                  (nil, msg when absent); it stays valid after f:close()
--   #f, f:ntensors(), f:nparams() (total elements of all tensors)
--   f:close()      idempotent; also `local f <close> = ...` and GC
--
-- Writing:
--   slm.gguf.write(path, {metadata = M, tensors = T, alignment = 32}) -> true | nil, msg
--   T: list of {name = "blk.0.attn_q.weight", tensor = t}; tensors of any
--      dtype, contiguous or strided (written as contiguous rows), in order.
--   M: a map key -> value (written in sorted key order) or a list of
--      {key, value} pairs (written in that order). Value types:
--        string -> str;  boolean -> bool;
--        integer -> u32 when 0 <= v < 2^32, i32 when -2^31 <= v < 0, else i64;
--        float -> f32;
--        {type = "u64", value = 5} -> that type exactly (any scalar type);
--        {type = "i32", value = {1, 2, 3}} -> an array of that element type;
--        a plain list -> an array: all strings -> str, all booleans -> bool,
--          all integers -> i32 when all fit, else i64; any float -> f32.
--      An empty list needs the explicit form ({type = "str", value = {}}).
--   alignment (a power of two, default 32) sets general.alignment (u32).
--   FILE_TYPE[dtype]: general.file_type for a file mostly of that dtype.
--   Values that do not fit their type raise an error naming the key.
local core = require "slm.core"
require "slm.tensor"   -- the views it returns get the Lua-side tensor methods

local C = core.gguf
local M = {}

local File = {}
local File_mt = {
  __index = File,
  __len = function(self) return #self.tensors end,
  __close = function(self) self:close() end,
  __tostring = function(self)
    return string.format("slm.gguf(%s, v%d, %d keys, %d tensors)", self.path, self.version,
                         #self.keys, #self.tensors)
  end,
}

-- Metadata as a read-only table decoded on first access of each key.
local function lazy_metadata(h, keys)
  local cache = {}
  return setmetatable({}, {
    __index = function(_, k)
      local v = cache[k]
      if v == nil then
        v = h:get(k)
        cache[k] = v
      end
      return v
    end,
    __pairs = function(t)
      local i = 0
      return function()
        i = i + 1
        local k = keys[i]
        if k ~= nil then return k, t[k] end
      end, t, nil
    end,
    __newindex = function() error("gguf metadata is read-only", 2) end,
  })
end

--- open(path) -> file | nil, msg
function M.open(path)
  local h, err = C.open(path)
  if not h then return nil, err end
  local keys, tensors = {}, {}
  for i = 1, h:n_kv() do keys[i] = h:key(i) end
  for i = 1, h:n_tensors() do tensors[i] = h:info(i) end
  return setmetatable({
    _h = h,
    path = path,
    version = h:version(),
    alignment = h:alignment(),
    data_offset = h:data_offset(),
    keys = keys,
    tensors = tensors,
    metadata = lazy_metadata(h, keys),
  }, File_mt)
end

function File:get(key) return self._h:get(key) end
function File:type(key) return self._h:type(key) end
function File:arr_len(key) return self._h:arr_len(key) end
function File:arr_get(key, i) return self._h:arr_get(key, i) end
function File:info(name) return self._h:info(name) end
function File:tensor(name) return self._h:tensor(name) end
function File:ntensors() return #self.tensors end
function File:close() self._h:close() end

function File:typed(key)
  local t, et = self._h:type(key)
  if t == nil then return nil end
  return {type = et or t, value = self._h:get(key)}
end

function File:nparams()
  local n = 0
  for _, t in ipairs(self.tensors) do
    local e = 1
    for _, d in ipairs(t.shape) do e = e * d end
    n = n + e
  end
  return n
end

-- ---- writing ---------------------------------------------------------------

--- FILE_TYPE[dtype]: the general.file_type value (the reference's llama_ftype
-- enum, include/llama.h) of a file whose weights are mostly that dtype;
-- K-quants as their _M mixtures (MOSTLY_Q4_K_M = 15 ...). A view of
-- slm.core.dtypes (csrc/core/dtype.c holds the numbers; slm.core.file_types
-- has every file type by its quantizer name).
M.FILE_TYPE = {}
for name, d in pairs(core.dtypes) do M.FILE_TYPE[name] = d.file_type end

local function int_type(v)
  if v >= 0 and v <= 0xffffffff then return "u32" end
  if v < 0 and v >= -0x80000000 then return "i32" end
  return "i64"
end

local function list_type(key, list)
  local n = #list
  if n == 0 then
    error(string.format("gguf key '%s': an empty array needs an explicit type: "
                        .. "{type = 'i32', value = {}}", key), 0)
  end
  local strs, bools, ints, nums, fits32 = 0, 0, 0, 0, true
  for i = 1, n do
    local v = list[i]
    local tv = type(v)
    if tv == "string" then strs = strs + 1
    elseif tv == "boolean" then bools = bools + 1
    elseif math.type(v) == "integer" then
      ints = ints + 1
      if v < -0x80000000 or v > 0x7fffffff then fits32 = false end
    elseif tv == "number" then nums = nums + 1
    else
      error(string.format("gguf key '%s' element %d: %s in an array (nested arrays are not "
                          .. "supported)", key, i, tv), 0)
    end
  end
  if strs == n then return "str" end
  if bools == n then return "bool" end
  if ints == n then return fits32 and "i32" or "i64" end
  if ints + nums == n then return "f32" end
  error(string.format("gguf key '%s': array mixes element types", key), 0)
end

-- {key=, type=, value=, array=} for C from a Lua value.
local function entry(key, v)
  local tv = type(v)
  if tv == "string" then return {key = key, type = "str", value = v} end
  if tv == "boolean" then return {key = key, type = "bool", value = v} end
  if math.type(v) == "integer" then return {key = key, type = int_type(v), value = v} end
  if tv == "number" then return {key = key, type = "f32", value = v} end
  if tv ~= "table" then
    error(string.format("gguf key '%s': cannot store a %s", key, tv), 0)
  end
  if v.type ~= nil then
    return {key = key, type = v.type, value = v.value, array = type(v.value) == "table"}
  end
  return {key = key, type = list_type(key, v), value = v, array = true}
end

--- write(path, {metadata =, tensors =, alignment =}) -> true | nil, msg
function M.write(path, spec)
  assert(type(path) == "string", "bad argument #1 to 'write' (string expected)")
  assert(type(spec) == "table", "bad argument #2 to 'write' (table expected)")
  local md = spec.metadata or {}
  local kvs = {}
  if #md > 0 then                      -- list of {key, value} pairs, in order
    for i, kv in ipairs(md) do
      if type(kv) ~= "table" or type(kv[1]) ~= "string" then
        error(string.format("gguf metadata entry %d: {key, value} expected", i), 0)
      end
      kvs[i] = entry(kv[1], kv[2])
    end
  else
    local keys = {}
    for k in pairs(md) do
      if type(k) ~= "string" then error("gguf metadata keys must be strings", 0) end
      keys[#keys + 1] = k
    end
    table.sort(keys)
    for i, k in ipairs(keys) do kvs[i] = entry(k, md[k]) end
  end
  if spec.alignment ~= nil then
    local have
    for _, e in ipairs(kvs) do
      if e.key == "general.alignment" then have = e end
    end
    if have and have.value ~= spec.alignment then
      error("gguf alignment and metadata general.alignment differ", 0)
    end
    if not have then
      table.insert(kvs, 1, {key = "general.alignment", type = "u32", value = spec.alignment})
    end
  end
  return C.write(path, kvs, spec.tensors or {})
end

return M
