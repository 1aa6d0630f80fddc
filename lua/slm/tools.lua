--- slm.tools: tool calls in chats - tools as chat templates render them,
-- the grammar a call must follow, a lazy grammar that starts at the call's
-- opener, and the calls read back out of a reply.
--
--   local reply, info = sess:chat(messages, { template = "qwen3", tools = {
--     { name = "get_weather", description = "Weather of a city",
--       parameters = { type = "object", properties = { city = { type = "string" } }, required = { "city" } } },
--   } })
--   for _, call in ipairs(info.tool_calls) do print(call.name, call.arguments.city) end
--
-- A tool is {name =, description =, parameters = JSON Schema (table or JSON
-- text)} or OpenAI's {type = "function", ["function"] = {...}}. Templates
-- render each as the published templates receive it from Hugging Face's
-- apply_chat_template: {"type": "function", "function": {"name": ...,
-- "description": ..., "parameters": ...}} through their tojson filter
-- (json.dumps: ", " and ": " separators, non-ASCII as is). Key order: as in
-- the JSON text when parameters is text; for Lua tables sorted (a table has
-- none); numbers with an integral value print without ".0" (cjson decodes
-- every number as a float, so 1 and 1.0 are one value here).
--
-- Hermes-style templates (qwen2.5, qwen3) call a tool by writing
--   <tool_call>\n{"name": "<name>", "arguments": {...}}\n</tool_call>
-- Generation is free text until the opener `<tool_call>`; from there the
-- text must be such a call, with the arguments following the tool's
-- parameters schema (the JSON Schema subset of docs/STRUCTURED.md); after
-- `</tool_call>` it is free again (another call, text, or the end of the
-- turn). tool_choice = "required" constrains from the first token instead.
local cjson = require "cjson"
local JS = require "slm.grammar.json_schema"

local M = {}

M.OPEN, M.CLOSE = "<tool_call>", "</tool_call>"

-- JSON text --------------------------------------------------------------------

local function is_array(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t and n > 0
end

local ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r",
              ["\t"] = "\\t" }

--- tojson(v [, orders, path]) -> JSON text as Python's json.dumps(v,
-- ensure_ascii=False) writes it. orders: {[JSON pointer] = {keys...}} (the
-- key order of objects decoded from JSON text, see json_schema); path: v's
-- pointer ("#"). An empty table is an object unless orders knows it as an
-- array (a pointer that orders does not hold).
function M.tojson(v, orders, path)
  path = path or "#"
  if v == cjson.null or v == nil then return "null" end
  local ty = type(v)
  if ty == "boolean" then return tostring(v) end
  if ty == "string" then
    -- json.dumps escapes controls below 0x20, not DEL
    return '"' .. v:gsub('[%z\1-\31"\\]', function(c) return ESC[c] or string.format("\\u%04x", c:byte()) end) .. '"'
  end
  if ty == "number" then
    if v ~= v or v == math.huge or v == -math.huge then error("tools: a number in JSON must be finite", 0) end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    return (string.format("%.17g", v):gsub("^(-?%d+)$", "%1.0"))
  end
  if ty ~= "table" then error("tools: a " .. ty .. " cannot be written as JSON", 0) end
  local keys = orders and orders[path]
  -- orders records every object of JSON text: an empty table it does not
  -- know was an array there
  if is_array(v) or (next(v) == nil and orders and not keys) then
    local parts = {}
    for i, x in ipairs(v) do parts[i] = M.tojson(x, orders, path .. "/" .. (i - 1)) end
    return "[" .. table.concat(parts, ", ") .. "]"
  end
  if not keys then
    keys = {}
    for k in pairs(v) do
      if type(k) ~= "string" then error("tools: a JSON object's keys must be strings", 0) end
      keys[#keys + 1] = k
    end
    table.sort(keys)
  end
  local parts = {}
  for _, k in ipairs(keys) do
    local child = path .. "/" .. k:gsub("~", "~0"):gsub("/", "~1")
    parts[#parts + 1] = M.tojson(k) .. ": " .. M.tojson(v[k], orders, child)
  end
  return "{" .. table.concat(parts, ", ") .. "}"
end

-- Tools ------------------------------------------------------------------------------

-- the key order of JSON text, by pointer (json_schema's reader)
local function orders_of(text)
  return JS.key_orders(text)
end

--- check(tools) -> list of {name, description, parameters (a table),
-- orders (for JSON text parameters), json (the tool as templates print
-- it)}; raises "chat: tools[i]...: ..." on a malformed tool.
function M.check(tools)
  if type(tools) ~= "table" or not is_array(tools) then
    error("chat: tools must be a non-empty list of {name =, description =, parameters =}", 0)
  end
  local out, seen = {}, {}
  for i, t in ipairs(tools) do
    local where = "chat: tools[" .. i .. "]"
    if type(t) ~= "table" then error(where .. " must be a table", 0) end
    if t.type ~= nil or t["function"] ~= nil then
      if t.type ~= "function" or type(t["function"]) ~= "table" then
        error(where .. ' must be {type = "function", ["function"] = {...}} or {name =, ...}', 0)
      end
      for k in pairs(t) do
        if k ~= "type" and k ~= "function" then error(where .. ": unknown key '" .. tostring(k) .. "'", 0) end
      end
      t = t["function"]
    end
    for k in pairs(t) do
      if k ~= "name" and k ~= "description" and k ~= "parameters" then
        error(where .. ": unknown key '" .. tostring(k) .. "' (known: description, name, parameters)", 0)
      end
    end
    if type(t.name) ~= "string" or not t.name:match("^[%w_%.%-]+$") then
      error(where .. ".name must be a name of letters, digits, '_', '.' or '-'", 0)
    end
    if seen[t.name] then error(where .. ": two tools are named " .. t.name, 0) end
    seen[t.name] = true
    if t.description ~= nil and type(t.description) ~= "string" then
      error(where .. ".description must be a string", 0)
    end
    local params, orders = t.parameters, nil
    if type(params) == "string" then
      local ok, v = pcall(cjson.decode, params)
      if not ok then error(where .. ".parameters is not valid JSON (" .. tostring(v) .. ")", 0) end
      params, orders = v, orders_of(t.parameters)
    elseif params ~= nil and type(params) ~= "table" then
      error(where .. ".parameters must be a JSON Schema (a table or JSON text)", 0)
    end
    -- the tool as a template prints it
    local fn = { "name", "description", "parameters" }
    local parts = {}
    for _, k in ipairs(fn) do
      local v = ({ name = t.name, description = t.description, parameters = params })[k]
      if v ~= nil then
        local text = k == "parameters" and M.tojson(v, orders, "#") or M.tojson(v)
        parts[#parts + 1] = '"' .. k .. '": ' .. text
      end
    end
    local json = '{"type": "function", "function": {' .. table.concat(parts, ", ") .. "}}"
    out[i] = { name = t.name, description = t.description, parameters = params,
               schema = t.parameters, json = json, where = where }
  end
  return out
end

--- gbnf(tools [, required]) -> GBNF of what follows the opener: one call,
-- {"name": <a tool's name>, "arguments": <its parameters>}, then the
-- closer. required: the opener is part of the grammar (tool_choice =
-- "required": a call from the first token).
function M.gbnf(tools, required)
  local texts, alts, seen = {}, {}, {}
  for i, t in ipairs(tools) do
    local prefix = "tool" .. i .. "-"
    local schema = t.schema
    if schema == nil then schema = { type = "object", additionalProperties = false } end
    local ok, g = pcall(JS.to_gbnf, schema, prefix)
    if not ok then error(t.where .. ".parameters: " .. tostring(g), 0) end
    for line in g:gmatch("[^\n]+") do
      -- the shared primitives (space, string, ...) come once
      if not seen[line] then
        seen[line] = true
        texts[#texts + 1] = line
      end
    end
    alts[#alts + 1] = JS.literal('"' .. t.name .. '"') .. ' space "," space "\\"arguments\\"" space ":" space '
                      .. prefix .. "root"
  end
  local head = required and (JS.literal(M.OPEN) .. " ") or ""
  local root = "root ::= " .. head .. 'space "{" space "\\"name\\"" space ":" space (' .. table.concat(alts, " | ")
               .. ') "}" space ' .. JS.literal(M.CLOSE)
  if not seen['space ::= | " " | "\\n" [ \\t]{0,20}'] then texts[#texts + 1] = 'space ::= | " " | "\\n" [ \\t]{0,20}' end
  return root .. "\n" .. table.concat(texts, "\n") .. "\n"
end

-- Lazy grammars ----------------------------------------------------------------------
--
-- A grammar for generate{grammar =} whose matcher lets every token through
-- until the text generated so far contains the trigger; then the inner
-- grammar's matcher takes over, starting with the bytes of the trigger's
-- token that came after the trigger. When the inner grammar is complete and
-- nothing can follow, the matcher is free again and looks for the next
-- trigger. A trigger split across tokens is found: the text is scanned with
-- the trigger's length - 1 bytes of the previous tokens before it.

local Lazy = { __grammar = true }   -- slm.grammar.is_grammar accepts it
Lazy.__index = Lazy
local LazyMatcher = {}
LazyMatcher.__index = LazyMatcher

--- lazy(grammar, trigger) -> a grammar for generate{grammar =}.
function M.lazy(inner, trigger)
  return setmetatable({ inner = inner, trigger = trigger }, Lazy)
end

function Lazy:matcher()
  return setmetatable({ g = self, tail = "", inner = nil, broken = nil }, LazyMatcher)
end

-- the fewest bytes a call needs after the trigger
function Lazy:min_call()
  if not self.min_bytes then self.min_bytes = self.inner:matcher():distance() end
  return self.min_bytes
end

-- ids of tok's tokens whose text, after `tail`, completes the trigger:
-- those holding its first byte, and those starting with the byte that
-- continues a part of the trigger at the end of tail. The pieces are
-- indexed once per tokenizer.
function Lazy:openers(tok, tail)
  local ix = self.index
  if not ix or ix.tok ~= tok then
    ix = { tok = tok, pieces = {}, has_first = {}, starts = {} }
    local first = self.trigger:sub(1, 1)
    for id = 0, #tok - 1 do
      local p = tok:piece(id)
      ix.pieces[id] = p
      if p ~= "" then
        if p:find(first, 1, true) then ix.has_first[#ix.has_first + 1] = id end
        local b = p:byte(1)
        ix.starts[b] = ix.starts[b] or {}
        table.insert(ix.starts[b], id)
      end
    end
    self.index = ix
  end
  local trig, out, seen = self.trigger, {}, {}
  local function try(list)
    for _, id in ipairs(list or {}) do
      if not seen[id] then
        seen[id] = true
        if (tail .. ix.pieces[id]):find(trig, 1, true) then out[#out + 1] = id end
      end
    end
  end
  try(ix.has_first)
  for k = 1, #trig - 1 do
    if tail:sub(-k) == trig:sub(1, k) then try(ix.starts[trig:byte(k + 1)]) end
  end
  return out
end

function LazyMatcher:apply(tok, logits, out, limit)
  if self.inner then return self.inner:apply(tok, logits, out, limit) end
  out:copy_(logits)   -- free text: every token
  local n = logits:numel()
  -- a call opened now could not be finished in the tokens left (limit,
  -- as generate passes it, bounds the bytes): no opener then
  if limit and limit < self.g:min_call() + 1 then
    for _, id in ipairs(self.g:openers(tok, self.tail)) do
      out:set(id + 1, -math.huge)
      n = n - 1
    end
  end
  return n
end

function LazyMatcher:accept(bytes)
  if self.inner then
    local ok = self.inner:accept(bytes)
    if ok and self.inner:complete() and not self.inner:can_continue() then
      self.inner = nil   -- the call is complete: free text again
      self.tail = ""
    end
    return ok
  end
  local text = self.tail .. bytes
  local at = text:find(self.g.trigger, 1, true)
  if not at then
    local keep = #self.g.trigger - 1
    self.tail = #text > keep and text:sub(-keep) or text
    return true
  end
  self.inner = self.g.inner:matcher()
  self.tail = ""
  local rest = text:sub(at + #self.g.trigger)
  if rest ~= "" and not self.inner:accept(rest) then
    -- the trigger's token went on with text no call can start with: the
    -- mask could not know (it allowed every token); said in info
    self.broken = rest
    self.inner = nil
  end
  return true
end

function LazyMatcher:complete()
  if self.inner then return self.inner:complete() end
  return true
end

function LazyMatcher:can_continue()
  if self.inner then return self.inner:can_continue() end
  return true
end

-- Calls in messages ------------------------------------------------------------------

--- call_text(call, i, string_verbatim) -> the JSON a Hermes-style template
-- writes for an assistant message's tool call: {"name": "<name>",
-- "arguments": <arguments>}. call: {name =, arguments =} or OpenAI's
-- {type =, ["function"] = {...}}; arguments a table (written as tojson
-- writes it) or a string (as is when string_verbatim, Qwen3's template;
-- else quoted, as Qwen2.5's tojson does).
function M.call_text(call, i, string_verbatim)
  local where = "chat: tool_calls[" .. i .. "]"
  if type(call) ~= "table" then error(where .. " must be a table", 0) end
  if call["function"] ~= nil then call = call["function"] end
  if type(call) ~= "table" or type(call.name) ~= "string" then error(where .. " needs a string name", 0) end
  local args = call.arguments
  if args == nil then args = {} end
  if type(args) == "string" then
    args = string_verbatim and args or M.tojson(args)
  elseif type(args) == "table" then
    args = M.tojson(args)
  else
    error(where .. ".arguments must be a table or JSON text", 0)
  end
  return '{"name": "' .. call.name .. '", "arguments": ' .. args .. "}"
end

-- Reading calls back ------------------------------------------------------------------

--- parse(text) -> content, calls, problems: the text without its
-- <tool_call>...</tool_call> blocks (whitespace around them dropped), the
-- calls {name =, arguments = table} decoded with cjson, and a list of
-- messages for blocks that are not a complete call (cut by max_tokens).
function M.parse(text)
  local calls, problems, content = {}, {}, {}
  local pos = 1
  while true do
    local a, b = text:find(M.OPEN, pos, true)
    if not a then content[#content + 1] = text:sub(pos) break end
    content[#content + 1] = text:sub(pos, a - 1)
    local c, d = text:find(M.CLOSE, b + 1, true)
    local body = text:sub(b + 1, (c or #text + 1) - 1)
    local ok, v = pcall(cjson.decode, body)
    if c and ok and type(v) == "table" and type(v.name) == "string" and type(v.arguments) == "table" then
      calls[#calls + 1] = { name = v.name, arguments = v.arguments }
    else
      problems[#problems + 1] = (c and "a tool call that is not {\"name\": ..., \"arguments\": {...}}: "
                                 or "a tool call cut before " .. M.CLOSE .. ": ") .. body
    end
    if not c then break end
    pos = d + 1
  end
  local s = table.concat(content):gsub("^%s+", ""):gsub("%s+$", "")
  return s, calls, problems
end

return M
