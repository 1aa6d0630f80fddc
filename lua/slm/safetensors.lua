--- slm.safetensors: safetensors files, read zero-copy and validated.
--
--   local f = assert(slm.safetensors.open(path))  -- or nil, msg
--   f.path, f.data_offset
--   f.metadata     the __metadata__ object: string -> string
--   f.tensors      list of {name=, dtype=, shape={outermost first}, bytes=, offset=}
--                  in data order; dtype is "f32", "f16", "bf16", "i8", "i16",
--                  "i32", or for dtypes slm cannot view the file's name in
--                  lower case ("i64", "f64", "bool", ...)
--   f:info(name)   one of those (nil when absent)
--   f:tensor(name | i) -> slm.Tensor view (nil, msg when absent or of an
--                  unsupported dtype); a scalar (shape []) is viewed as {1}
--   #f, f:ntensors(), f:close() (idempotent; also <close> and GC)
local core = require "slm.core"
require "slm.tensor"   -- the views it returns get the Lua-side tensor methods

local C = core.safetensors
local M = {}

local File = {}
local File_mt = {
  __index = File,
  __len = function(self) return #self.tensors end,
  __close = function(self) self:close() end,
  __tostring = function(self)
    return string.format("slm.safetensors(%s, %d tensors)", self.path, #self.tensors)
  end,
}

--- open(path) -> file | nil, msg
function M.open(path)
  local h, err = C.open(path)
  if not h then return nil, err end
  local tensors = {}
  for i = 1, h:n_tensors() do tensors[i] = h:info(i) end
  return setmetatable({
    _h = h,
    path = path,
    data_offset = h:data_offset(),
    metadata = h:metadata(),
    tensors = tensors,
  }, File_mt)
end

function File:info(name) return self._h:info(name) end
function File:tensor(name) return self._h:tensor(name) end
function File:ntensors() return #self.tensors end
function File:close() self._h:close() end

return M
