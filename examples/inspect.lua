-- Prints what a GGUF file holds: architecture, name, parameter count, the
-- main metadata, and a table of its tensors with dtypes, shapes and sizes.
-- Any GGUF file, of any architecture, vocabulary-only files included (it
-- reads the file, not a model); other formats are refused: `bin/slm info`
-- describes rwkv.cpp and llama2.c files.
--
--   bin/slm examples/inspect.lua model.gguf [--all-keys]
local gguf = require "slm.gguf"

-- no FILE: slm's default model (the name "default", slm.model.resolve)
local path, why = require("slm.model").resolve(arg[1] or "default")
if not path then
  io.stderr:write("inspect.lua: ", why, "\n")
  os.exit(1)
end
local all_keys = arg[2] == "--all-keys"

local f, err = gguf.open(path)
if not f then
  local hint = err:find("not a GGUF file", 1, true) and " (bin/slm info describes rwkv.cpp and llama2.c files)" or ""
  io.stderr:write("inspect.lua: ", err, hint, "\n")
  os.exit(1)
end

local function human(n)
  local units = {"B", "KiB", "MiB", "GiB"}
  local u = 1
  while n >= 1024 and u < #units do
    n = n / 1024
    u = u + 1
  end
  return u == 1 and string.format("%d %s", n, units[u]) or string.format("%.1f %s", n, units[u])
end

local function count(n)
  if n >= 1e9 then return string.format("%.2fB", n / 1e9) end
  if n >= 1e6 then return string.format("%.2fM", n / 1e6) end
  if n >= 1e3 then return string.format("%.1fK", n / 1e3) end
  return tostring(n)
end

-- A metadata value on one line: long arrays show their length and a few items.
local function show(key)
  local t, et = f:type(key)
  if t == "arr" then
    local n = f:arr_len(key)
    local items = {}
    for i = 1, math.min(n, 4) do
      local v = f:arr_get(key, i)
      items[i] = et == "str" and string.format("%q", v) or tostring(v)
    end
    return string.format("%s[%d] {%s%s}", et, n, table.concat(items, ", "), n > 4 and ", ..." or "")
  end
  local v = f:get(key)
  if t == "str" then
    if #v > 60 then v = v:sub(1, 57) .. "..." end
    return string.format("%q", v)
  end
  if t == "f32" then return string.format("%.7g (f32)", v) end
  return string.format("%s (%s)", tostring(v), t)
end

local arch = f.metadata["general.architecture"] or "?"
local bytes = 0
for _, t in ipairs(f.tensors) do bytes = bytes + t.bytes end

print(string.format("file          %s", path))
print(string.format("gguf          version %d, alignment %d, %d keys, %d tensors",
                    f.version, f.alignment, #f.keys, #f))
print(string.format("architecture  %s", arch))
if f.metadata["general.name"] then print(string.format("name          %s", f.metadata["general.name"])) end
print(string.format("parameters    %s (%d), %s of tensor data", count(f:nparams()), f:nparams(), human(bytes)))
print()

-- the architecture's own hyperparameters (or every key with --all-keys)
print("metadata")
for _, k in ipairs(f.keys) do
  if all_keys or k:sub(1, #arch + 1) == arch .. "." or k == "tokenizer.ggml.model"
     or k == "general.file_type" or k == "tokenizer.ggml.tokens" then
    print(string.format("  %-44s %s", k, show(k)))
  end
end

if #f > 0 then
  print()
  local w = 4
  for _, t in ipairs(f.tensors) do w = math.max(w, #t.name) end
  print(string.format("  %-" .. w .. "s  %-5s  %-20s  %10s", "name", "dtype", "shape", "size"))
  local per_dtype, order = {}, {}
  for _, t in ipairs(f.tensors) do
    local shape = {}
    for i, d in ipairs(t.shape) do shape[i] = tostring(d) end
    print(string.format("  %-" .. w .. "s  %-5s  %-20s  %10s", t.name, t.dtype,
                        table.concat(shape, " x "), human(t.bytes)))
    if not per_dtype[t.dtype] then
      per_dtype[t.dtype] = {n = 0, bytes = 0}
      order[#order + 1] = t.dtype
    end
    per_dtype[t.dtype].n = per_dtype[t.dtype].n + 1
    per_dtype[t.dtype].bytes = per_dtype[t.dtype].bytes + t.bytes
  end
  print()
  local parts = {}
  for _, dt in ipairs(order) do
    parts[#parts + 1] = string.format("%s: %d (%s)", dt, per_dtype[dt].n, human(per_dtype[dt].bytes))
  end
  print("dtypes        " .. table.concat(parts, ", "))
end
f:close()
