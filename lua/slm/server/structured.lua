--- slm.server.structured: structured output and tool calls for slm.server.
-- No I/O: turns a request's response_format / json_schema / grammar fields
-- into a compiled grammar, its tools / tool_choice into the tools a
-- template renders and the grammar the calls follow, its messages' tool
-- calls into what slm.chat renders, and a reply back into content and
-- OpenAI's tool_calls (incrementally, for streams).
--
-- Fields (https://platform.openai.com/docs/api-reference/chat/create):
--   response_format  {"type": "text"} | {"type": "json_object"} (any JSON
--                    object: the schema {"type": "object"}) | {"type":
--                    "json_schema", "json_schema": {"name", "schema",
--                    "strict", "description"}} (generation follows the
--                    schema, docs/STRUCTURED.md's subset)
--   json_schema      a schema (llama.cpp's server extension)
--   grammar          GBNF text (llama.cpp's server extension)
--   tools, tool_choice ("none" | "auto" | "required" | {"type": "function",
--                    "function": {"name"}}), parallel_tool_calls
-- At most one of response_format (other than text), json_schema and
-- grammar; none of them with tools (the calls have their own grammar).
--
-- Member order. cjson forgets the order of an object's members, and both a
-- schema's `properties` (the order of the generated members) and a tool's
-- rendering (json.dumps keeps the client's order) depend on it: schemas and
-- tools are written back to JSON text in the request's order, read from the
-- body's text (json_schema.key_orders), unless the decoded value no longer
-- matches that text (an on_request hook changed it: then keys are sorted).
local cjson = require "cjson"
local openai = require "slm.server.openai"
local chat = require "slm.chat"
local grammar_mod = require "slm.grammar"
local JS = require "slm.grammar.json_schema"
local tools_mod = require "slm.tools"

local M = {}
local fail, null = openai.fail, cjson.null

local get, bad = openai.get, openai.bad

local function only_keys(t, known, key, param)
  for k in pairs(t) do
    if not known[k] then
      local list = {}
      for n in pairs(known) do list[#list + 1] = n end
      table.sort(list)
      fail(400, string.format("unknown field '%s.%s' (known: %s)", key, tostring(k), table.concat(list, ", ")),
           param or key, "unknown_parameter")
    end
  end
end

-- JSON text in the request's order ---------------------------------------------------

--- orders(raw) -> the key orders of the body's JSON text (nil without it)
function M.orders(raw)
  if type(raw) ~= "string" then return nil end
  local ok, o = pcall(JS.key_orders, raw)
  return ok and o or nil
end

local function child(path, k)
  return path .. "/" .. tostring(k):gsub("~", "~0"):gsub("/", "~1")
end

-- Does v (decoded) still have, at every level, the members orders records?
local function consistent(v, orders, path)
  if type(v) ~= "table" then return true end
  local keys = orders[path]
  if keys then
    local n, seen = 0, {}
    for _, k in ipairs(keys) do
      if seen[k] or v[k] == nil then return false end
      seen[k] = true
      n = n + 1
      if not consistent(v[k], orders, child(path, k)) then return false end
    end
    for _ in pairs(v) do n = n - 1 end
    return n == 0
  end
  -- an array in the text
  local n = 0
  for _ in pairs(v) do n = n + 1 end
  if n ~= #v then return false end
  for i, x in ipairs(v) do
    if not consistent(x, orders, child(path, i - 1)) then return false end
  end
  return true
end

--- json_text(v, orders, path) -> v as JSON text (json.dumps' spacing), its
-- objects' members in the order of the request's text at that pointer
function M.json_text(v, orders, path)
  if orders and consistent(v, orders, path) then return tools_mod.tojson(v, orders, path) end
  return tools_mod.tojson(v)
end

-- Compiled grammars, by their source: a schema or a tool set sent with every
-- request of a client compiles once (and keeps its cached masks). Bounded:
-- emptied when full.
local cache, cached = {}, 0
local CACHE_MAX = 32

local function cached_grammar(key, make)
  local g = cache[key]
  if g then return g end
  g = make()
  if cached >= CACHE_MAX then cache, cached = {}, 0 end
  cache[key], cached = g, cached + 1
  return g
end

-- The converter's and the compiler's messages, without Lua's position
local function message_of(e)
  return (tostring(e):gsub("^[^:\n]*%.lua:%d+: ", ""))
end

local function schema_grammar(schema, orders, path, param)
  if type(schema) ~= "table" and type(schema) ~= "boolean" then bad(param, "a JSON Schema (an object)", schema) end
  local text = M.json_text(schema, orders, path)
  return cached_grammar("schema\0" .. text, function()
    local ok, g = pcall(grammar_mod.from_json_schema, text)
    if not ok then fail(400, param .. ": " .. message_of(g), param, "unsupported_parameter") end
    return g
  end)
end

-- Structured output -------------------------------------------------------------------

local JSON_SCHEMA_KEYS = { name = true, schema = true, strict = true, description = true }

--- constraint(body, orders) -> a compiled grammar or nil, from the fields
-- response_format, json_schema and grammar (see the top of the file)
function M.constraint(body, orders)
  local found = {}
  local g
  local rf = get(body, "response_format")
  if rf ~= nil then
    if not openai.is_object(rf) then bad("response_format", "an object {\"type\": ...}", rf) end
    only_keys(rf, { type = true, json_schema = true }, "response_format")
    local ty = get(rf, "type")
    if ty == "json_object" or ty == "text" then
      if get(rf, "json_schema") ~= nil then
        fail(400, "'response_format.json_schema' goes with the type \"json_schema\"", "response_format", "invalid_value")
      end
      if ty == "json_object" then
        g = schema_grammar({ type = "object" }, nil, "#", "response_format")
        found[#found + 1] = "response_format"
      end
    elseif ty == "json_schema" then
      local js = get(rf, "json_schema")
      if not openai.is_object(js) then bad("response_format.json_schema", "an object {name, schema}", js, "response_format") end
      only_keys(js, JSON_SCHEMA_KEYS, "response_format.json_schema", "response_format")
      local name = get(js, "name")
      if type(name) ~= "string" or not name:match("^[%w_%-]+$") or #name > 64 then
        bad("response_format.json_schema.name", "a name of 1 to 64 letters, digits, '_' or '-'", name, "response_format")
      end
      for _, k in ipairs { "strict" } do
        if get(js, k) ~= nil and type(js[k]) ~= "boolean" then
          bad("response_format.json_schema." .. k, "a boolean", js[k], "response_format")
        end
      end
      if get(js, "description") ~= nil and type(js.description) ~= "string" then
        bad("response_format.json_schema.description", "a string", js.description, "response_format")
      end
      -- without a schema, any JSON value (as llama.cpp's server); strict
      -- or not, the output follows the schema (strict asks no less)
      local schema = get(js, "schema")
      if schema == nil then schema = {} end
      g = schema_grammar(schema, orders, "#/response_format/json_schema/schema", "response_format")
      found[#found + 1] = "response_format"
    else
      bad("response_format.type", '"text", "json_object" or "json_schema"', ty, "response_format")
    end
  end
  local js = get(body, "json_schema")
  if js ~= nil then
    g = schema_grammar(js, orders, "#/json_schema", "json_schema")
    found[#found + 1] = "json_schema"
  end
  local gbnf = get(body, "grammar")
  if gbnf ~= nil then
    if type(gbnf) ~= "string" then bad("grammar", "GBNF text (a string)", gbnf) end
    g = cached_grammar("gbnf\0" .. gbnf, function()
      local ok, c = pcall(grammar_mod.compile, gbnf)
      if not ok then fail(400, "grammar: " .. message_of(c), "grammar", "invalid_value") end
      return c
    end)
    found[#found + 1] = "grammar"
  end
  if #found > 1 then
    fail(400, "give one of response_format (json_object, json_schema), json_schema and grammar, not "
         .. table.concat(found, " and "), found[2], "invalid_value")
  end
  return g, found[1]
end

-- Tools -------------------------------------------------------------------------------

local TOOL_KEYS = { type = true, ["function"] = true }
local FUNCTION_KEYS = { name = true, description = true, parameters = true, strict = true }

local function template_of(srv)
  local ok, tpl = pcall(chat.resolve, srv.template, srv.model)
  if not ok then fail(400, "messages: " .. message_of(tpl):gsub("^chat: ", ""), "messages", "invalid_value") end
  return tpl
end

--- supports_tools(srv) -> the template renders tools (qwen2.5, qwen3)
local function supports_tools(tpl) return tpl.tools == true or tpl.options == true end

--- tools(body, srv, orders, constrained) -> nil (no tools, or tool_choice
-- "none": nothing rendered, nothing constrained), or {list = tools for
-- slm.chat (parameters as JSON text in the request's order), grammar =}.
-- constrained: the field that already constrains the output, if any.
function M.tools(body, srv, orders, constrained)
  local list = get(body, "tools")
  local choice = get(body, "tool_choice")
  local parallel = get(body, "parallel_tool_calls")
  if parallel ~= nil and type(parallel) ~= "boolean" then bad("parallel_tool_calls", "a boolean", parallel) end
  if list ~= nil and not openai.is_array(list) then
    bad("tools", "an array of {\"type\": \"function\", \"function\": {...}}", list)
  end
  if list ~= nil and #list == 0 then list = nil end
  local forced
  if choice ~= nil then
    if type(choice) == "string" then
      if choice ~= "none" and choice ~= "auto" and choice ~= "required" then
        bad("tool_choice", '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}', choice)
      end
    elseif openai.is_object(choice) then
      only_keys(choice, { type = true, ["function"] = true }, "tool_choice")
      local fn = get(choice, "function")
      if get(choice, "type") ~= "function" or not openai.is_object(fn) or type(get(fn, "name")) ~= "string" then
        bad("tool_choice", '{"type": "function", "function": {"name": ...}}', choice)
      end
      only_keys(fn, { name = true }, "tool_choice.function", "tool_choice")
      forced = fn.name
    else
      bad("tool_choice", '"none", "auto", "required" or {"type": "function", "function": {"name": ...}}', choice)
    end
    if list == nil and choice ~= "none" then
      fail(400, "'tool_choice' needs 'tools'", "tool_choice", "invalid_value")
    end
  end
  if list == nil or choice == "none" then return nil end
  if constrained then
    fail(400, string.format("'tools' with '%s': the tool calls have their own grammar; give one of them",
                            constrained), "tools", "invalid_value")
  end
  local tpl = template_of(srv)
  if not supports_tools(tpl) then
    fail(400, string.format("tools: the model's chat template (%s) does not render tools; templates that do: "
                            .. "qwen2.5, qwen3 (slm serve --template)", tpl.name), "tools", "unsupported_parameter")
  end
  local out, names = {}, {}
  for i, t in ipairs(list) do
    local key = "tools[" .. (i - 1) .. "]"
    if not openai.is_object(t) then bad(key, "an object {\"type\": \"function\", \"function\": {...}}", t, "tools") end
    only_keys(t, TOOL_KEYS, key, "tools")
    local fn = get(t, "function")
    if get(t, "type") ~= "function" or not openai.is_object(fn) then
      bad(key, "an object {\"type\": \"function\", \"function\": {...}}", t, "tools")
    end
    only_keys(fn, FUNCTION_KEYS, key .. ".function", "tools")
    -- strict or not, the arguments follow the parameters (strict asks no less)
    if get(fn, "strict") ~= nil and type(fn.strict) ~= "boolean" then
      bad(key .. ".function.strict", "a boolean", fn.strict, "tools")
    end
    local f = { name = get(fn, "name"), description = get(fn, "description") }
    local params = get(fn, "parameters")
    if params ~= nil then
      if not openai.is_object(params) then bad(key .. ".function.parameters", "a JSON Schema object", params, "tools") end
      f.parameters = M.json_text(params, orders, "#/tools/" .. (i - 1) .. "/function/parameters")
    end
    out[i] = { type = "function", ["function"] = f }
    names[i] = f.name
  end
  -- slm.tools' messages count tools from 1
  local function tools_error(e)
    local msg = message_of(e):gsub("^chat: ", ""):gsub("^tools%[(%d+)%]", function(n)
      return "tools[" .. (tonumber(n) - 1) .. "]"
    end)
    fail(400, msg, "tools", "invalid_value")
  end
  local ok, checked = pcall(tools_mod.check, out)
  if not ok then tools_error(checked) end
  local mode = choice == "required" and "required" or forced and "forced" or "auto"
  if parallel == false and mode == "auto" then
    -- the lazy grammar lets the model make several calls: one at most is
    -- not enforced, so it is not promised
    fail(400, "'parallel_tool_calls': false is not supported with tool_choice \"auto\" (use \"required\" or a "
         .. "named function: exactly one call)", "parallel_tool_calls", "unsupported_parameter")
  end
  local for_grammar = checked
  if forced then
    for_grammar = {}
    for _, t in ipairs(checked) do if t.name == forced then for_grammar[1] = t end end
    if #for_grammar == 0 then
      fail(400, string.format("tool_choice: no tool is named '%s' (tools: %s)", forced, table.concat(names, ", ")),
           "tool_choice", "invalid_value")
    end
  end
  local gok, text = pcall(tools_mod.gbnf, for_grammar, mode ~= "auto")
  if not gok then tools_error(text) end
  local g = cached_grammar(mode .. "\0" .. text, function()
    local c = grammar_mod.compile(text)
    -- auto: free text until the model writes the opener (slm.tools.lazy)
    if mode == "auto" then return tools_mod.lazy(c, tools_mod.OPEN) end
    return c
  end)
  return { list = out, grammar = g, mode = mode }
end

-- Messages --------------------------------------------------------------------------

--- message_tool_calls(m, key, tpl) -> the assistant message's tool_calls
-- as slm.chat renders them ({["function"] = {name, arguments = JSON text}}),
-- checked: OpenAI's [{id, type: "function", function: {name, arguments}}]
function M.message_tool_calls(calls, key)
  local k = key .. ".tool_calls"
  if not openai.is_array(calls) or #calls == 0 then bad(k, "a non-empty array of tool calls", calls, k) end
  local out = {}
  for j, c in ipairs(calls) do
    local ck = k .. "[" .. (j - 1) .. "]"
    if not openai.is_object(c) then bad(ck, "an object {id, type, function}", c, ck) end
    only_keys(c, { id = true, type = true, ["function"] = true }, ck, ck)
    if get(c, "type") ~= nil and c.type ~= "function" then bad(ck .. ".type", '"function"', c.type, ck .. ".type") end
    if get(c, "id") ~= nil and type(c.id) ~= "string" then bad(ck .. ".id", "a string", c.id, ck .. ".id") end
    local fn = get(c, "function")
    if not openai.is_object(fn) then bad(ck .. ".function", "an object {name, arguments}", fn, ck .. ".function") end
    only_keys(fn, { name = true, arguments = true }, ck .. ".function", ck .. ".function")
    if type(get(fn, "name")) ~= "string" then bad(ck .. ".function.name", "a string", fn.name, ck .. ".function.name") end
    local args = get(fn, "arguments")
    local ok, v = pcall(cjson.decode, type(args) == "string" and args or "")
    if type(args) ~= "string" or not ok or type(v) ~= "table" or not args:match("^%s*{") then
      bad(ck .. ".function.arguments", "a JSON object as text", args, ck .. ".function.arguments")
    end
    -- the text as the client sent it: Qwen3's template writes it as is,
    -- Qwen2.5's through tojson (a JSON string), as Hugging Face's do
    out[j] = { ["function"] = { name = fn.name, arguments = args } }
  end
  return out
end

--- check_template(messages, srv): tool messages and calls need a template
-- that renders them (others would drop or garble them)
function M.check_template(messages, srv)
  for i, m in ipairs(messages) do
    if m.role == "tool" or m.tool_calls then
      local tpl = template_of(srv)
      if not supports_tools(tpl) then
        local key = "messages[" .. (i - 1) .. "]"
        fail(400, string.format("%s: the model's chat template (%s) does not render tool calls and results; "
                                .. "templates that do: qwen2.5, qwen3", key, tpl.name), key, "unsupported_parameter")
      end
      return
    end
  end
end

-- Replies ---------------------------------------------------------------------------
--
-- A reply with tools: text, and calls as Hermes-style templates write them,
-- <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>. The
-- splitter reads it incrementally: content comes out as soon as it cannot
-- be the start of an opener, a call when its closer has arrived. Content is
-- the text outside the calls with whitespace trimmed at both ends (as
-- slm.tools.parse gives it); a block that is not a complete call (cut by
-- max_tokens) stays in the content, as written, rather than being lost.

local Splitter = {}
Splitter.__index = Splitter

function M.splitter()
  return setmetatable({ buf = "", inside = false, started = false, ws = "", out = nil }, Splitter)
end

local OPEN, CLOSE = tools_mod.OPEN, tools_mod.CLOSE

function Splitter:content(s)
  if not self.started then
    s = s:gsub("^%s+", "")
    if s == "" then return end
    self.started = true
  end
  local full = self.ws .. s
  local body, trail = full:match("^(.-)(%s*)$")
  if body ~= "" then
    self.out[#self.out + 1] = { content = body }
    self.ws = trail
  else
    self.ws = full
  end
end

-- a call block's JSON -> {name, arguments = JSON text} or nil
local function read_call(body)
  local ok, v = pcall(cjson.decode, body)
  if not ok or type(v) ~= "table" or type(v.name) ~= "string" or type(v.arguments) ~= "table" then return nil end
  -- the arguments as generated (the schema's member order); the grammar
  -- writes {"name": ..., "arguments": ...} in that order
  local raw = body:match('^%s*{%s*"name"%s*:%s*"[^"\\]*"%s*,%s*"arguments"%s*:%s*({.*})%s*}%s*$')
  local rok, rv = pcall(cjson.decode, raw or "")
  if not (raw and rok and type(rv) == "table") then raw = tools_mod.tojson(v.arguments) end
  return { name = v.name, arguments = raw }
end

--- sp:feed(text [, final]) -> list of {content = text} and {call = {name,
-- arguments}} in order; final: the reply ended (flush what is held)
function Splitter:feed(s, final)
  self.out = {}
  self.buf = self.buf .. s
  while true do
    if not self.inside then
      local a = self.buf:find(OPEN, 1, true)
      if a then
        self:content(self.buf:sub(1, a - 1))
        self.buf, self.inside = self.buf:sub(a + #OPEN), true
      else
        local keep = 0
        if not final then
          -- hold back an end that could be the start of an opener
          for k = math.min(#OPEN - 1, #self.buf), 1, -1 do
            if self.buf:sub(-k) == OPEN:sub(1, k) then keep = k break end
          end
        end
        self:content(self.buf:sub(1, #self.buf - keep))
        self.buf = self.buf:sub(#self.buf - keep + 1)
        break
      end
    else
      local c = self.buf:find(CLOSE, 1, true)
      if c then
        local body = self.buf:sub(1, c - 1)
        self.buf, self.inside = self.buf:sub(c + #CLOSE), false
        local call = read_call(body)
        if call then self.out[#self.out + 1] = { call = call }
        else self:content(OPEN .. body .. CLOSE) end
      else
        if final then
          self:content(OPEN .. self.buf)
          self.buf, self.inside = "", false
        end
        break
      end
    end
  end
  return self.out
end

--- call_id() -> "call_" and 24 hex digits
function M.call_id(seed)
  return "call_" .. string.format("%08x%08x%08x", seed, math.random(0, 0x7fffffff), math.random(0, 0x7fffffff))
end

--- finish(finish_reason, n_calls) -> "tool_calls" when calls were made and
-- the reply was not cut, else finish_reason
function M.finish(reason, n_calls)
  if n_calls > 0 and reason ~= "length" then return "tool_calls" end
  return reason
end

return M
