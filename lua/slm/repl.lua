--- slm.repl: the `slm repl` read-eval-print loop and its pretty printers.
--
--   repl.tree(model)        the model as a tree of blocks with dtypes and
--                           shapes, as Torch 7 printed its modules
--   repl.encoding(ids, tok) a list of ids that prints as pieces with ids
--   repl.show(v [, tok])    the string the REPL prints for a value
--   repl.run{model =, sess =, input =, output =}   the loop itself
--
-- The loop reads Lua from stdin (a prompt only when stdin is a terminal),
-- accepts expressions ("1 + 1", "model") and statements, continues a chunk
-- over several lines while it is incomplete, and prints every result with
-- show(). Inside it `slm`, `show`, `encode` (with a model) and `model`/`sess`
-- (when the REPL was started with a model) are bound.
local model_mod = require "slm.model"
local tensor = require "slm.tensor"

local M = {}

-- ---- model trees ------------------------------------------------------------

local function shape_str(shape)
  local s = {}
  for i, d in ipairs(shape) do s[i] = tostring(d) end
  return table.concat(s, "x")
end

-- {name=, dtype=, shape=} for every tensor of the model's file, in file order.
local function tensor_list(model)
  local src, out = model.source, {}
  if src.memory then
    -- a model made in memory (slm.train.init): its f32 tensors, in the
    -- order they were made
    for i, name in ipairs(src.tensor_names()) do
      local t = src.tensor(name)
      out[i] = { name = name, dtype = t:dtype(), shape = t:shape() }
    end
    return out
  end
  if src.kind == "gguf" then
    for i, info in ipairs(src.file.tensors) do
      out[i] = { name = info.name, dtype = info.dtype, shape = info.shape }
    end
    return out
  end
  local names = src.names
  local lookup = src.tensor
  if src.kind == "llama2c" then
    -- the llama2c source keeps no name list: reopen the header (a mapping)
    local m = require("slm.core").llama2c.open(model.path)
    if not m then return out end
    names = m.names
    lookup = function(n) return m.tensors[n] end
  end
  for i, name in ipairs(names or {}) do
    local t = lookup(name)
    out[i] = { name = name, dtype = t:dtype(), shape = t:shape() }
  end
  return out
end

local function numel(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

local function human_count(n)
  if n >= 1e9 then return string.format("%.2fB", n / 1e9) end
  if n >= 1e6 then return string.format("%.2fM", n / 1e6) end
  if n >= 1e3 then return string.format("%.1fK", n / 1e3) end
  return tostring(n)
end

--- The model as a tree: top-level tensors, then one node per layer
-- (blk.N. in GGUF files, blocks.N. in rwkv.cpp files) with its tensors;
-- runs of layers whose tensors have the same names, dtypes and shapes as
-- the layer before are folded into one line.
function M.tree(model)
  local hp = model.hp
  local list = tensor_list(model)
  local head, tail, layers, order = {}, {}, {}, {}
  local params = 0
  for _, t in ipairs(list) do
    params = params + numel(t.shape)
    -- "blk.3.attn_q.weight" -> "blk.3.", "3", "attn_q.weight"
    local prefix, idx, rest = t.name:match("^(%a+%.(%d+)%.)(.*)$")
    if prefix then
      local l = tonumber(idx)
      if not layers[l] then
        layers[l] = { prefix = prefix, items = {} }
        order[#order + 1] = l
      end
      local it = layers[l].items
      it[#it + 1] = { name = rest, dtype = t.dtype, shape = t.shape }
    elseif #order == 0 then
      head[#head + 1] = t
    else
      tail[#tail + 1] = t
    end
  end
  table.sort(order)
  local out = {}
  local function add(s) out[#out + 1] = s end
  add(string.format("%s {  %d layers, dim %d, vocab %d, %s parameters, %s", hp.arch, hp.n_layer,
                    hp.dim, hp.n_vocab, human_count(params), (model.path:match("[^/]+$") or model.path)))
  local w = 0
  for _, t in ipairs(list) do w = math.max(w, #(t.name:gsub("^%a+%.%d+%.", ""))) end
  local fmt = "%s%-" .. (w + 3) .. "s %-5s %s"
  for _, t in ipairs(head) do add(string.format(fmt, "  ", "(" .. t.name .. ")", t.dtype, shape_str(t.shape))) end
  local function signature(items)
    local s = {}
    for i, it in ipairs(items) do s[i] = it.name .. " " .. it.dtype .. " " .. shape_str(it.shape) end
    return table.concat(s, ";")
  end
  local i = 1
  while i <= #order do
    local l = order[i]
    local L = layers[l]
    add(string.format("  (%d): %s {", i, L.prefix:sub(1, -2)))
    for _, it in ipairs(L.items) do add(string.format(fmt, "    ", it.name, it.dtype, shape_str(it.shape))) end
    add("  }")
    local sig = signature(L.items)
    local j = i
    while j < #order and signature(layers[order[j + 1]].items) == sig do j = j + 1 end
    if j == i + 1 then   -- one layer folded: no range
      add(string.format("  (%d): %s { as (%d) }", j, layers[order[j]].prefix:sub(1, -2), i))
    elseif j > i then
      add(string.format("  (%d)..(%d): %s .. %s { as (%d) }", i + 1, j, layers[order[i + 1]].prefix:sub(1, -2),
                        layers[order[j]].prefix:sub(1, -2), i))
    end
    i = j + 1
  end
  for _, t in ipairs(tail) do add(string.format(fmt, "  ", "(" .. t.name .. ")", t.dtype, shape_str(t.shape))) end
  add("}")
  return table.concat(out, "\n")
end

-- ---- encodings ---------------------------------------------------------------

local Encoding = {}
Encoding.__index = Encoding

-- A piece as the vocabulary spells it; control tokens (no text) by their name.
local function piece_of(tok, id)
  local p = tok:piece(id)
  if p == "" then p = tok:decode({ id }, { special = true }) end
  return p
end

local function quote(s)
  return (string.format("%q", s):gsub("\\\n", "\\n"))
end

function Encoding.__tostring(e)
  local parts = {}
  for i = 1, #e do parts[i] = string.format("%d:%s", e[i], quote(piece_of(e.tok, e[i]))) end
  return string.format("%d tokens: %s", #e, table.concat(parts, " "))
end

--- encoding(ids, tok) -> the ids (a list, still usable as one) that print
-- as `3 tokens: 1:"<s>" 15043:"Hello" 3186:" world"`.
function M.encoding(ids, tok)
  local e = setmetatable({ tok = tok }, Encoding)
  for i = 1, #ids do e[i] = ids[i] end
  return e
end

-- ---- show -------------------------------------------------------------------------

local function inline(v, depth, seen)
  if type(v) == "string" then return quote(v) end
  if type(v) ~= "table" or getmetatable(v) then return tostring(v) end
  if seen[v] then return "<cycle>" end
  if depth > 2 then return "{...}" end
  seen[v] = true
  local parts, n = {}, #v
  for i = 1, math.min(n, 20) do parts[#parts + 1] = inline(v[i], depth + 1, seen) end
  if n > 20 then parts[#parts + 1] = string.format("... (%d items)", n) end
  local keys = {}
  for k in pairs(v) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then keys[#keys + 1] = k end
  end
  table.sort(keys, function(a, b) return tostring(a) < tostring(b) end)
  for i, k in ipairs(keys) do
    if i > 20 then parts[#parts + 1] = "..."; break end
    local ks = (type(k) == "string" and k:match("^[%a_][%w_]*$")) and k or "[" .. inline(k, 3, seen) .. "]"
    parts[#parts + 1] = ks .. " = " .. inline(v[k], depth + 1, seen)
  end
  seen[v] = nil
  return "{" .. table.concat(parts, ", ") .. "}"
end

local function is_id_list(v)
  if type(v) ~= "table" or getmetatable(v) or #v == 0 then return false end
  for i = 1, #v do if math.type(v[i]) ~= "integer" then return false end end
  return next(v, #v) == nil
end

--- show(v [, tok]) -> string: models as trees, encodings and (with a
-- tokenizer) lists of ids as pieces with ids, tensors as slm.tensor prints
-- them (truncated), tables inline.
function M.show(v, tok)
  local mt = getmetatable(v)
  if mt == model_mod.Model then return M.tree(v) end
  if mt == Encoding then return tostring(v) end
  if tensor.is_tensor(v) then return tostring(v) end
  if tok and is_id_list(v) then return tostring(M.encoding(v, tok)) end
  return inline(v, 1, {})
end

-- ---- the loop ------------------------------------------------------------------

local function is_tty(fd)
  return os.execute("test -t " .. fd) == true
end

--- run{model =, sess =, input = io.stdin, output = io.stdout}
function M.run(o)
  o = o or {}
  local input, output = o.input or io.stdin, o.output or io.stdout
  local slm = require "slm"
  local model = o.model
  local tok = model and model.tokenizer
  -- show(v [, tok]) prints what M.show returns (ids as pieces with the
  -- bound model's tokenizer unless another is given)
  local function show(v, t) output:write(M.show(v, t or tok), "\n") end
  slm.show = show
  local function rprint(...)
    local n = select("#", ...)
    local parts = {}
    for i = 1, n do
      local v = select(i, ...)
      local mt = getmetatable(v)
      parts[i] = (mt == model_mod.Model or mt == Encoding) and M.show(v) or tostring(v)
    end
    output:write(table.concat(parts, "\t"), "\n")
  end
  local env = setmetatable({
    slm = slm, model = model, sess = o.sess, show = show, print = rprint,
    encode = function(text, opts)
      if not tok then error("encode: no model (or the model has no tokenizer)", 2) end
      return M.encoding(tok:encode(text, opts), tok)
    end,
  }, { __index = _G })
  local interactive = is_tty(0)
  if interactive then
    output:write(string.format("slm %s REPL (Lua 5.4)%s; Ctrl-D quits\n", slm.version,
                               model and ", `model` and `sess` bound" or ""))
  end
  local chunk = nil
  while true do
    if interactive then
      output:write(chunk and ">> " or "> ")
      output:flush()
    end
    local line = input:read("L")
    if not line then break end
    chunk = chunk and (chunk .. line) or line
    -- an expression first (so `model` prints), then a statement
    local src = chunk:gsub("^%s*=", "return ")
    local fn, err = load("return " .. src, "=repl", "t", env)
    if not fn then fn, err = load(src, "=repl", "t", env) end
    if not fn and err:match("<eof>$") then
      -- incomplete: read more lines
    else
      chunk = nil
      if not fn then
        output:write(err, "\n")
      else
        local res = table.pack(xpcall(fn, function(e) return tostring(e) end))
        if not res[1] then
          output:write("error: ", res[2], "\n")
        elseif res.n > 1 then
          local parts = {}
          -- strings print raw at the top level, as lua5.4 -i prints them
          for i = 2, res.n do
            parts[#parts + 1] = type(res[i]) == "string" and res[i] or M.show(res[i])
          end
          output:write(table.concat(parts, "\t"), "\n")
        end
      end
      output:flush()
    end
  end
  if chunk then output:write("repl: incomplete chunk at end of input\n") end
  if interactive then output:write("\n") end
end

return M
