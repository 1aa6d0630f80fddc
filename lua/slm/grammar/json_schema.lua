--- slm.grammar.json_schema: JSON Schema (a subset of draft 2020-12) → a
-- GBNF grammar in llama.cpp's dialect, whose sentences are JSON texts that
-- validate against the schema. docs/STRUCTURED.md lists the subset; the
-- short form:
--
--   local JS = require "slm.grammar.json_schema"
--   local text = JS.to_gbnf('{"type": "object", "properties": {"a": {"type": "integer"}}}')
--
-- schema: a Lua table (JSON null as cjson.null) or JSON text (decoded with
-- lua-cjson). Keywords outside the subset raise "json_schema: <keyword> is
-- not supported (at <JSON pointer>)"; annotations (title, description,
-- $schema, $id, $comment, examples, default, deprecated, readOnly,
-- writeOnly) are ignored.
--
-- Shape of the grammar (as the reference converter writes it, so that its
-- users' instances match): values end in `space`, which is empty, one space
-- or a newline and up to 20 spaces/tabs (bounded, so generation cannot
-- loop on whitespace); members are `"key" space ":" space value` joined by
-- `"," space`; object members come required first, then optional ones,
-- each group in the schema's `properties` order (JSON text: the order in
-- the text; a Lua table has none: keys in `required` order, then the rest
-- sorted), extra members (additionalProperties) last.
local cjson = require "cjson"
local P = require "slm.grammar.schema_pattern"
local R = require "slm.grammar.int_range"

local M = {}

local lit = P.literal

-- The rules every grammar may use, with the names the reference gives them.
-- char: one JSON string character (escapes included; \u escapes of UTF-16
-- surrogates are left out, so each char is one code point and a length
-- counts what JSON Schema counts).
local PRIMITIVES = {
  space = [[| " " | "\n" [ \t]{0,20}]],
  char = [=[[^"\\\x00-\x1F] | "\\" (["\\/bfnrt] | "u" ([0-9a-cA-CeEfF] [0-9a-fA-F]{3} | [dD] [0-7] [0-9a-fA-F]{2}))]=],
  ["integral-part"] = "[0] | [1-9] [0-9]{0,15}",
  ["decimal-part"] = "[0-9]{1,16}",
  string = [["\"" char* "\"" space]],
  number = [[("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)? space]],
  integer = [[("-"? integral-part) space]],
  boolean = [[("true" | "false") space]],
  null = [["null" space]],
  value = "object | array | string | number | boolean | null",
  object = [["{" space (string ":" space value ("," space string ":" space value)*)? "}" space]],
  array = [["[" space (value ("," space value)*)? "]" space]],
  -- formats (string content, quotes excluded)
  ["date"] = [=[[0-9]{4} "-" ("0" [1-9] | "1" [0-2]) "-" ("0" [1-9] | [12] [0-9] | "3" [01])]=],
  ["time"] = [=[([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ("." [0-9]{1,9})? ("Z" | "z" | [+-] ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9])]=],
  ["date-time"] = [=[date [Tt] time]=],
  ["uuid"] = [=[[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}]=],
}
-- what each primitive refers to
local NEEDS = {
  char = {}, space = {}, ["integral-part"] = {}, ["decimal-part"] = {},
  string = { "char", "space" }, number = { "integral-part", "decimal-part", "space" },
  integer = { "integral-part", "space" }, boolean = { "space" }, null = { "space" },
  value = { "object", "array", "string", "number", "boolean", "null" },
  object = { "space", "string", "value" }, array = { "space", "value" },
  date = {}, time = {}, ["date-time"] = { "date", "time" }, uuid = {},
}

local ANNOTATIONS = {}
for _, k in ipairs { "title", "description", "$schema", "$id", "$comment", "examples", "default",
                     "deprecated", "readOnly", "writeOnly", "$defs", "definitions" } do
  ANNOTATIONS[k] = true
end
-- keywords by the type they constrain
local FOR_TYPE = {
  object = { properties = true, required = true, additionalProperties = true },
  array = { items = true, prefixItems = true, minItems = true, maxItems = true },
  string = { minLength = true, maxLength = true, pattern = true, format = true },
  number = { minimum = true, maximum = true, exclusiveMinimum = true, exclusiveMaximum = true },
}
local KNOWN = { type = true, enum = true, const = true, anyOf = true, oneOf = true, allOf = true, ["$ref"] = true }
for _, set in pairs(FOR_TYPE) do for k in pairs(set) do KNOWN[k] = true end end
local TYPES = { "object", "array", "string", "number", "integer", "boolean", "null" }
local IS_TYPE = {}
for _, t in ipairs(TYPES) do IS_TYPE[t] = true end
local FORMATS = { date = true, time = true, ["date-time"] = true, uuid = true }

-- JSON pointer of a child
local function child(path, key)
  return path .. "/" .. tostring(key):gsub("~", "~0"):gsub("/", "~1")
end

local function is_array(t)
  if type(t) ~= "table" then return false end
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n == #t
end

-- Key order of JSON text ------------------------------------------------------
--
-- cjson gives objects as Lua tables, which forget the order of their keys;
-- the converter needs `properties` in the schema's order. This walks text
-- that cjson has already decoded (so it is valid JSON) and records the keys
-- of each object, by JSON pointer; key strings are decoded by cjson too.
local function key_orders(text)
  local orders, stack = {}, {}
  local i, n = 1, #text
  while i <= n do
    local c = text:sub(i, i)
    local top = stack[#stack]
    if c == '"' then
      local j = i + 1
      while true do
        local q = text:find('[\\"]', j)
        if text:sub(q, q) == "\\" then j = q + 2 else j = q break end
      end
      if top and top.obj and top.want_key then
        top.key = cjson.decode(text:sub(i, j))
        top.want_key = false
        local list = orders[top.path]
        list[#list + 1] = top.key
      end
      i = j + 1
    else
      if c == "{" or c == "[" then
        local path = "#"
        if top then path = top.obj and child(top.path, top.key) or child(top.path, top.index) end
        stack[#stack + 1] = { obj = c == "{", path = path, want_key = c == "{", index = 0 }
        if c == "{" then orders[path] = {} end
      elseif c == "}" or c == "]" then
        stack[#stack] = nil
      elseif c == "," then
        if top.obj then top.want_key = true else top.index = top.index + 1 end
      end
      i = i + 1
    end
  end
  return orders
end

-- The converter ----------------------------------------------------------------

local Conv = {}
Conv.__index = Conv

function Conv:fail(path, msg)
  error("json_schema: " .. msg .. " (at " .. path .. ")", 0)
end

-- uses a primitive rule (and what it needs): its name
function Conv:prim(name)
  if not self.used_prims[name] then
    self.used_prims[name] = true
    for _, dep in ipairs(NEEDS[name]) do self:prim(dep) end
  end
  return name
end

-- a GBNF rule name from a hint: [a-zA-Z0-9-], unused
function Conv:name(hint)
  local base = tostring(hint):gsub("[^%w%-]+", "-"):gsub("%-+", "-"):gsub("^%-", ""):gsub("%-$", "")
  if base == "" then base = "r" end
  local name, k = base, 1
  while self.names[name] or PRIMITIVES[name] do
    k = k + 1
    name = base .. "-" .. k
  end
  self.names[name] = true
  return name
end

-- a rule with this body (reusing one with the same body): its name
function Conv:rule(hint, body)
  if self.by_body[body] then return self.by_body[body] end
  local name = self:name(hint)
  self:define(name, body)
  self.by_body[body] = name
  return name
end

function Conv:define(name, body)
  self.rules[#self.rules + 1] = { name = name, body = body }
end

-- a number that must be a non-negative integer (a float with an integral
-- value counts: cjson decodes every number as a float)
function Conv:count(schema, key, path)
  local v = schema[key]
  if v == nil then return nil end
  if type(v) ~= "number" or v < 0 or v ~= math.floor(v) or v > 1e9 then
    self:fail(child(path, key), key .. " must be a non-negative integer")
  end
  return math.tointeger(v)
end

-- JSON text of a const/enum value (strings canonical: only `"`, `\` and
-- control characters escaped; numbers in their shortest form)
function Conv:json_value(v, path)
  if v == cjson.null then return "null" end
  local ty = type(v)
  if ty == "boolean" then return tostring(v) end
  if ty == "string" then
    return '"' .. v:gsub('[%c"\\]', function(c)
      if c == '"' or c == "\\" then return "\\" .. c end
      local esc = { ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
      return esc[c] or string.format("\\u%04x", c:byte())
    end) .. '"'
  end
  if ty == "number" then
    if v ~= v or v == math.huge or v == -math.huge then self:fail(path, "a number const/enum must be finite") end
    if v == math.floor(v) and math.abs(v) < 2 ^ 53 then return string.format("%d", v) end
    for prec = 15, 17 do
      local s = string.format("%." .. prec .. "g", v)
      if tonumber(s) == v then return s end
    end
  end
  self:fail(path, "const/enum values must be strings, numbers, booleans or null (objects and arrays are not supported)")
end

-- the JSON types a const/enum value has ("integer" and "number" for 2)
local function value_types(v)
  if v == cjson.null then return { null = true } end
  local ty = type(v)
  if ty == "boolean" then return { boolean = true } end
  if ty == "string" then return { string = true } end
  if ty == "number" then return { number = true, integer = v == math.floor(v) } end
  return {}
end

-- the list of types a schema's `type` keyword allows (nil: every type)
function Conv:types(schema, path)
  local t = schema.type
  if t == nil then return nil end
  local list = type(t) == "string" and { t } or t
  if type(list) ~= "table" or #list == 0 or not is_array(list) then
    self:fail(child(path, "type"), "type must be a type name or a non-empty list of them")
  end
  for i, name in ipairs(list) do
    if not IS_TYPE[name] then
      self:fail(type(t) == "string" and child(path, "type") or child(child(path, "type"), i - 1),
                "unknown type " .. tostring(name))
    end
  end
  return list
end

-- the schema at a local reference
function Conv:resolve(ref, path)
  if type(ref) ~= "string" then self:fail(path, "$ref must be a string") end
  if ref:sub(1, 1) ~= "#" then self:fail(path, "$ref " .. ref .. " is not local (only #... references are supported)") end
  local node = self.root
  for part in ref:sub(2):gmatch("[^/]+") do
    part = part:gsub("~1", "/"):gsub("~0", "~")
    if type(node) ~= "table" then node = nil break end
    local key = part
    if is_array(node) and tonumber(part) then key = tonumber(part) + 1 end
    node = node[key]
  end
  if node == nil then self:fail(path, "$ref " .. ref .. " points to nothing") end
  return node, ref == "#" and "#" or ref
end

-- visit(schema, path, hint) -> a GBNF expression for one JSON value
-- (trailing space included) that validates against schema
function Conv:visit(schema, path, hint)
  if schema == true then return self:prim("value") end
  if schema == false then self:fail(path, "the schema false accepts nothing") end
  if type(schema) ~= "table" then self:fail(path, "a schema must be an object or a boolean") end
  for k in pairs(schema) do
    if type(k) ~= "string" then self:fail(path, "a schema's keys must be strings") end
    if not KNOWN[k] and not ANNOTATIONS[k] then self:fail(path, "keyword '" .. k .. "' is not supported") end
  end
  -- keywords that replace the whole schema: other validation keywords
  -- beside them would have to hold too, which the subset does not combine
  local function alone(key, allowed)
    for k in pairs(schema) do
      if k ~= key and KNOWN[k] and not (allowed and allowed[k]) then
        self:fail(path, key .. " together with " .. k .. " is not supported")
      end
    end
  end
  if schema["$ref"] ~= nil then
    alone("$ref")
    local ref = schema["$ref"]
    local target, tpath = self:resolve(ref, child(path, "$ref"))
    if not self.refs[ref] then
      local name = self:name(ref:match("[^/]*$") ~= "" and ref:match("[^/]*$") or "ref")
      self.refs[ref] = name
      self:define(name, self:visit(target, tpath, name))
    end
    return self.refs[ref]
  end
  if schema.anyOf ~= nil or schema.oneOf ~= nil then
    local key = schema.anyOf ~= nil and "anyOf" or "oneOf"
    alone(key)
    local list = schema[key]
    if not is_array(list) or #list == 0 then self:fail(child(path, key), key .. " must be a non-empty list of schemas") end
    local alts = {}
    for i, s in ipairs(list) do alts[i] = self:visit(s, child(child(path, key), i - 1), hint .. "-" .. (i - 1)) end
    return self:rule(hint, table.concat(alts, " | "))
  end
  if schema.allOf ~= nil then return self:all_of(schema, path, hint) end
  if schema.const ~= nil or schema.enum ~= nil then
    alone(schema.const ~= nil and "const" or "enum", { type = true })
    local values
    if schema.const ~= nil then
      values = { schema.const }
    else
      values = schema.enum
      if not is_array(values) or #values == 0 then self:fail(child(path, "enum"), "enum must be a non-empty list") end
    end
    local allowed = self:types(schema, path)
    local alts = {}
    for i, v in ipairs(values) do
      local vpath = schema.const ~= nil and child(path, "const") or child(child(path, "enum"), i - 1)
      local text = self:json_value(v, vpath)
      local ok = allowed == nil
      for _, t in ipairs(allowed or {}) do ok = ok or value_types(v)[t] end
      if ok then alts[#alts + 1] = lit(text) end
    end
    if #alts == 0 then self:fail(path, "no enum/const value has the schema's type") end
    return self:rule(hint, "(" .. table.concat(alts, " | ") .. ") " .. self:prim("space"))
  end
  local types = self:types(schema, path)
  if types == nil then
    -- no type: every type, each constrained by its own keywords (a
    -- keyword for one type does not restrict the others)
    types = { "object", "array", "string", "number", "boolean", "null" }
  end
  local has = {}
  for _, t in ipairs(types) do has[t] = true end
  local alts = {}
  for _, t in ipairs(TYPES) do
    if has[t] and not (t == "integer" and has.number) then
      alts[#alts + 1] = self:typed(t, schema, path, hint)
    end
  end
  if #alts == 1 then return alts[1] end
  return self:rule(hint, table.concat(alts, " | "))
end

function Conv:typed(t, schema, path, hint)
  if t == "object" then return self:object(schema, path, hint) end
  if t == "array" then return self:array(schema, path, hint) end
  if t == "string" then return self:string(schema, path, hint) end
  if t == "integer" then return self:integer(schema, path, hint) end
  if t == "number" then
    for k in pairs(FOR_TYPE.number) do
      if schema[k] ~= nil then
        self:fail(child(path, k), k .. " on a number is not expressible (bounds are supported for type integer only)")
      end
    end
    return self:prim("number")
  end
  return self:prim(t)
end

-- Objects ----------------------------------------------------------------------

-- a schema's properties in order: names, by name
function Conv:property_order(schema, path)
  local props = schema.properties
  if props == nil then return {} end
  if type(props) ~= "table" or (next(props) ~= nil and is_array(props)) then
    self:fail(child(path, "properties"), "properties must be an object")
  end
  local order = self.orders and self.orders[child(path, "properties")]
  if not order then
    -- a Lua table: `required` order, then the others sorted
    order = {}
    local seen = {}
    for _, k in ipairs(type(schema.required) == "table" and schema.required or {}) do
      if props[k] ~= nil and not seen[k] then order[#order + 1], seen[k] = k, true end
    end
    local rest = {}
    for k in pairs(props) do if not seen[k] then rest[#rest + 1] = tostring(k) end end
    table.sort(rest)
    for _, k in ipairs(rest) do order[#order + 1] = k end
  end
  return order
end

-- GBNF for a string key not equal to any of names: a trie of the names
-- whose every node also allows leaving it (a character no name continues
-- with), and ending only where no name ends. Keys use unescaped characters
-- only, so that no escape spells a declared name another way.
function Conv:key_not_in(names, hint)
  local plain = "[^\"\\\\\\x00-\\x1F]"
  local tail = self:rule("plain-chars", plain .. "*")
  local function node(words, depth, nhint)
    local ends, next_chars = false, {}
    local order = {}
    for _, w in ipairs(words) do
      if #w < depth then
        ends = true
      else
        local c = w[depth]
        if not next_chars[c] then next_chars[c] = {}; order[#order + 1] = c end
        table.insert(next_chars[c], w)
      end
    end
    table.sort(order)
    local alts, excl = {}, { "\"\\\\\\x00-\\x1F" }
    for _, c in ipairs(order) do
      excl[#excl + 1] = P.cp(c)
      alts[#alts + 1] = lit(utf8.char(c)) .. " " .. node(next_chars[c], depth + 1, nhint)
    end
    alts[#alts + 1] = "[^" .. table.concat(excl) .. "] " .. tail
    local body = "(" .. table.concat(alts, " | ") .. ")"
    if not ends then body = body .. "?" end
    return self:rule(nhint, body)
  end
  local words = {}
  for _, name in ipairs(names) do
    local cps = {}
    for _, c in utf8.codes(name) do cps[#cps + 1] = c end
    words[#words + 1] = cps
  end
  return lit('"') .. " " .. node(words, 1, hint .. "-key") .. " " .. lit('"') .. " " .. self:prim("space")
end

function Conv:object(schema, path, hint)
  local order = self:property_order(schema, path)
  local props = schema.properties or {}
  local required = schema.required or {}
  if not is_array(required) then self:fail(child(path, "required"), "required must be a list of names") end
  local is_req = {}
  for i, k in ipairs(required) do
    if type(k) ~= "string" then self:fail(child(child(path, "required"), i - 1), "required names must be strings") end
    is_req[k] = true
  end
  local extra = schema.additionalProperties
  if extra == nil then extra = true end
  if type(extra) ~= "boolean" and type(extra) ~= "table" then
    self:fail(child(path, "additionalProperties"), "additionalProperties must be a boolean or a schema")
  end
  -- required names that `properties` does not declare take the schema of
  -- additional properties
  local declared = {}
  for _, k in ipairs(order) do declared[k] = true end
  local req_list, opt_list = {}, {}
  for _, k in ipairs(order) do
    if is_req[k] then req_list[#req_list + 1] = k else opt_list[#opt_list + 1] = k end
  end
  for i, k in ipairs(required) do
    if not declared[k] then
      if extra == false then
        self:fail(child(child(path, "required"), i - 1),
                  "required property " .. k .. " is not declared and additionalProperties is false")
      end
      declared[k] = true
      req_list[#req_list + 1] = k
    end
  end
  local function member(k)
    local s = props[k]
    local spath = child(child(path, "properties"), k)
    if s == nil then s, spath = extra, child(path, "additionalProperties") end
    local v = self:visit(s, spath, hint .. "-" .. k)
    return self:rule(hint .. "-" .. k .. "-kv",
                     lit(self:json_value(k, path)) .. " " .. self:prim("space") .. " \":\" " .. self:prim("space") .. " " .. v)
  end
  local sep = '"," ' .. self:prim("space") .. " "
  local extra_kv
  if extra ~= false then
    local names = {}
    for k in pairs(declared) do names[#names + 1] = k end
    table.sort(names)
    local key = self:key_not_in(names, hint .. "-additional")
    local v = self:visit(extra, child(path, "additionalProperties"), hint .. "-additional-value")
    extra_kv = self:rule(hint .. "-additional-kv", key .. " \":\" " .. self:prim("space") .. " " .. v)
  end
  local body
  local tail_extra = extra_kv and ("(" .. sep .. extra_kv .. ")*") or ""
  if #req_list > 0 then
    local parts = {}
    for i, k in ipairs(req_list) do parts[#parts + 1] = (i > 1 and sep or "") .. member(k) end
    for _, k in ipairs(opt_list) do parts[#parts + 1] = "(" .. sep .. member(k) .. ")?" end
    parts[#parts + 1] = tail_extra
    body = table.concat(parts, " ")
  elseif #opt_list > 0 or extra_kv then
    -- no required member: the first one present carries no comma.
    -- tails[i]: the optional members from i on, each with its comma
    local tails = {}
    local nxt = tail_extra
    for i = #opt_list, 1, -1 do
      local t = "(" .. sep .. member(opt_list[i]) .. ")? " .. nxt
      tails[i] = self:rule(hint .. "-rest-" .. i, t)
      nxt = tails[i]
    end
    local alts = {}
    for i, k in ipairs(opt_list) do alts[#alts + 1] = member(k) .. " " .. (tails[i + 1] or tail_extra) end
    if extra_kv then alts[#alts + 1] = extra_kv .. " " .. tail_extra end
    body = "(" .. table.concat(alts, " | ") .. ")?"
  else
    body = ""
  end
  return self:rule(hint, '"{" ' .. self:prim("space") .. " " .. body .. ' "}" ' .. self:prim("space"))
end

-- allOf: objects only, merged (properties and required united; a property
-- declared twice, or additionalProperties in a member, is an error)
function Conv:all_of(schema, path, hint)
  local list = schema.allOf
  if not is_array(list) or #list == 0 then self:fail(child(path, "allOf"), "allOf must be a non-empty list of schemas") end
  local merged = { type = "object", properties = {}, required = {} }
  local order = {}
  local function add(s, spath)
    for k in pairs(s) do
      if KNOWN[k] and k ~= "type" and k ~= "properties" and k ~= "required" and k ~= "allOf" and k ~= "$ref"
         and not (k == "additionalProperties" and s == schema) then
        self:fail(spath, "allOf merges objects with properties and required only; " .. k .. " is not supported there")
      end
    end
    if s.type ~= nil and s.type ~= "object" then self:fail(child(spath, "type"), "allOf members must be objects") end
    if s["$ref"] ~= nil then
      local target, tpath = self:resolve(s["$ref"], child(spath, "$ref"))
      self.depth = (self.depth or 0) + 1
      if self.depth > 64 then self:fail(spath, "allOf through $ref recurses") end
      add(target, tpath)
      self.depth = self.depth - 1
    end
    for i, m in ipairs(s == schema and list or {}) do
      if type(m) ~= "table" then self:fail(child(child(path, "allOf"), i - 1), "allOf members must be object schemas") end
      add(m, child(child(path, "allOf"), i - 1))
    end
    for _, k in ipairs(self:property_order(s, spath)) do
      if merged.properties[k] ~= nil and merged.properties[k] ~= s.properties[k] then
        self:fail(child(child(spath, "properties"), k), "property " .. k .. " is declared by two allOf members")
      end
      if merged.properties[k] == nil then order[#order + 1] = k end
      merged.properties[k] = s.properties[k]
    end
    for _, k in ipairs(s.required or {}) do merged.required[#merged.required + 1] = k end
  end
  add(schema, path)
  merged.additionalProperties = schema.additionalProperties
  local saved = self.orders
  self.orders = { [child(path, "properties")] = order }
  local ok, res = pcall(self.object, self, merged, path, hint)
  self.orders = saved
  if not ok then error(res, 0) end
  return res
end

-- Arrays -------------------------------------------------------------------------

function Conv:array(schema, path, hint)
  local lo = self:count(schema, "minItems", path) or 0
  local hi = self:count(schema, "maxItems", path)
  if hi and hi < lo then self:fail(path, "maxItems is less than minItems") end
  local prefix = schema.prefixItems or {}
  if not is_array(prefix) then self:fail(child(path, "prefixItems"), "prefixItems must be a list of schemas") end
  local items = schema.items
  if items == nil then items = true end
  local pre = {}
  for i, s in ipairs(prefix) do pre[i] = self:visit(s, child(child(path, "prefixItems"), i - 1), hint .. "-" .. (i - 1)) end
  local item = items ~= false and self:visit(items, child(path, "items"), hint .. "-item") or nil
  if items == false then
    hi = math.min(hi or #pre, #pre)
    if lo > hi then self:fail(path, "minItems is more than prefixItems allows with items false") end
  end
  local sep = '"," ' .. self:prim("space") .. " "
  -- elements from position i (1-based) on, each after a comma unless first
  local function from(i, first)
    if hi and i > hi then return "" end
    local c = first and "" or sep
    if i <= #pre then
      local rest = from(i + 1, false)
      local seq = c .. pre[i] .. (rest ~= "" and " " .. rest or "")
      if i <= lo then return seq end
      return "(" .. seq .. ")?"
    end
    local need = math.max(0, lo - (i - 1))
    local room = hi and (hi - (i - 1)) or nil
    if room == 0 then return "" end
    if first then
      -- item ("," item){need-1, room-1}, optional when need is 0
      local more_lo, more_hi = math.max(0, need - 1), room and room - 1
      local more = ""
      if more_hi ~= 0 then
        more = " (" .. sep .. item .. ")" .. (more_hi == nil and (more_lo == 0 and "*" or "{" .. more_lo .. ",}")
                                           or "{" .. more_lo .. "," .. more_hi .. "}")
      end
      local seq = item .. more
      if need == 0 then return "(" .. seq .. ")?" end
      return seq
    end
    local rep = room == nil and (need == 0 and "*" or "{" .. need .. ",}") or "{" .. need .. "," .. room .. "}"
    return "(" .. sep .. item .. ")" .. rep
  end
  local body = from(1, true)
  return self:rule(hint, '"[" ' .. self:prim("space") .. " " .. body .. ' "]" ' .. self:prim("space"))
end

-- Strings --------------------------------------------------------------------------

function Conv:string(schema, path, hint)
  local lo = self:count(schema, "minLength", path)
  local hi = self:count(schema, "maxLength", path)
  local pattern, format = schema.pattern, schema.format
  if pattern ~= nil and format ~= nil then self:fail(path, "pattern together with format is not supported") end
  if (pattern ~= nil or format ~= nil) and (lo or hi) then
    self:fail(path, (pattern and "pattern" or "format") .. " together with minLength/maxLength is not expressible")
  end
  local q = lit('"')
  if pattern ~= nil then
    local ok, expr, uses_char = pcall(P.to_gbnf, pattern)
    if not ok then self:fail(child(path, "pattern"), expr) end
    if uses_char then self:prim("char") end
    return self:rule(hint, q .. " (" .. expr .. ") " .. q .. " " .. self:prim("space"))
  end
  if format ~= nil then
    if not FORMATS[format] then
      self:fail(child(path, "format"), "format " .. tostring(format) .. " is not supported (known: date, date-time, time, uuid)")
    end
    return self:rule(hint, q .. " " .. self:prim(format) .. " " .. q .. " " .. self:prim("space"))
  end
  if not lo and not hi then return self:prim("string") end
  lo = lo or 0
  if hi and hi < lo then self:fail(path, "maxLength is less than minLength") end
  local rep = hi and (lo == hi and "{" .. lo .. "}" or "{" .. lo .. "," .. hi .. "}") or "{" .. lo .. ",}"
  return self:rule(hint, q .. " " .. self:prim("char") .. rep .. " " .. q .. " " .. self:prim("space"))
end

-- Integers ---------------------------------------------------------------------------

local MAX_INT = R.MAX
local nonneg_range = R.nonneg

function Conv:bound(schema, key, path, up)
  local v = schema[key]
  if v == nil then return nil end
  if type(v) ~= "number" or v ~= v or v == math.huge or v == -math.huge then
    self:fail(child(path, key), key .. " must be a finite number")
  end
  -- the integers allowed: minimum ceil, exclusiveMinimum floor + 1, ...
  if key == "minimum" then return math.ceil(v) end
  if key == "maximum" then return math.floor(v) end
  if key == "exclusiveMinimum" then return math.floor(v) + 1 end
  return math.ceil(v) - 1
end

function Conv:integer(schema, path, hint)
  local lo = self:bound(schema, "minimum", path)
  local xlo = self:bound(schema, "exclusiveMinimum", path)
  local hi = self:bound(schema, "maximum", path)
  local xhi = self:bound(schema, "exclusiveMaximum", path)
  if xlo and (not lo or xlo > lo) then lo = xlo end
  if xhi and (not hi or xhi < hi) then hi = xhi end
  if lo == nil and hi == nil then return self:prim("integer") end
  if (lo and lo > MAX_INT) or (hi and hi < -MAX_INT) then
    self:fail(path, "integer bounds beyond 16 digits are not expressible")
  end
  -- the integer grammar stops at 16 digits: unbounded sides stop there too
  lo = math.tointeger(math.max(lo or -MAX_INT, -MAX_INT))
  hi = math.tointeger(math.min(hi or MAX_INT, MAX_INT))
  if lo > hi then self:fail(path, "no integer lies within the bounds") end
  local alts = {}
  if lo < 0 then alts[#alts + 1] = '"-" (' .. nonneg_range(math.max(1, -hi), -lo) .. ")" end
  if hi >= 0 then alts[#alts + 1] = nonneg_range(math.max(0, lo), hi) end
  return self:rule(hint, "(" .. table.concat(alts, " | ") .. ") " .. self:prim("space"))
end

-- Entry points -----------------------------------------------------------------------

local function decode(schema)
  if type(schema) == "string" then
    local ok, t = pcall(cjson.decode, schema)
    if not ok then error("json_schema: the schema is not valid JSON (" .. tostring(t) .. ")", 0) end
    return t, key_orders(schema)
  end
  if type(schema) ~= "table" and type(schema) ~= "boolean" then
    error("json_schema: the schema must be a table or JSON text, got " .. type(schema), 0)
  end
  return schema, nil
end

-- The rule names a GBNF body refers to (identifiers outside literals and
-- classes), each with its position: {name, from, to}.
local function references(body)
  local refs, i, n = {}, 1, #body
  while i <= n do
    local c = body:sub(i, i)
    if c == '"' or c == "[" then
      local close = c == '"' and '"' or "]"
      i = i + 1
      while i <= n and body:sub(i, i) ~= close do
        if body:sub(i, i) == "\\" then i = i + 1 end
        i = i + 1
      end
      i = i + 1
    elseif c:match("[%w%-]") then
      local a, b = body:find("^[%w%-]+", i)
      refs[#refs + 1] = { body:sub(a, b), a, b }
      i = b + 1
    elseif c == "{" then
      i = body:find("}", i, true) + 1 -- a repetition count
    else
      i = i + 1
    end
  end
  return refs
end

-- body with each reference to a name in `rename` replaced
local function rewrite(body, rename)
  local out, from = {}, 1
  for _, r in ipairs(references(body)) do
    if rename[r[1]] then
      out[#out + 1] = body:sub(from, r[2] - 1)
      out[#out + 1] = rename[r[1]]
      from = r[3] + 1
    end
  end
  out[#out + 1] = body:sub(from)
  return table.concat(out)
end

--- to_gbnf(schema [, prefix]) -> GBNF text whose start rule is `root`.
-- Raises "json_schema: <what> (at <JSON pointer>)" on what the subset does
-- not cover. prefix: put before every rule name but the shared primitives
-- (space, string, ...), so that several schemas' rules can share one
-- grammar (tool calls); the start rule is then prefix .. "root".
function M.to_gbnf(schema, prefix)
  local root, orders = decode(schema)
  local c = setmetatable({ root = root, orders = orders, rules = {}, by_body = {}, names = { root = true },
                           refs = {}, used_prims = {} }, Conv)
  local expr = c:visit(root, "#", "root")
  local defs, order = {}, {}
  for _, r in ipairs(c.rules) do defs[r.name], order[#order + 1] = r.body, r.name end
  for name in pairs(c.used_prims) do defs[name] = PRIMITIVES[name] end
  -- a rule that only names another (a $ref's, the root's) takes its body
  local rename = {}
  if defs[expr] and not PRIMITIVES[expr] then
    rename[expr], defs.root = "root", defs[expr]
  else
    defs.root = expr
  end
  for _, name in ipairs(order) do
    local body = defs[name]
    if not rename[name] and body and defs[body] and not PRIMITIVES[body] and not rename[body] and body ~= name then
      rename[body], defs[name] = name, defs[body]
    end
  end
  -- the rules reachable from root, in the order they were made; then the
  -- primitives, sorted
  local seen, todo = { root = true }, { "root" }
  while #todo > 0 do
    local name = table.remove(todo)
    defs[name] = rewrite(defs[name], rename)
    for _, r in ipairs(references(defs[name])) do
      if not seen[r[1]] then
        assert(defs[r[1]], "json_schema: internal error: rule " .. r[1] .. " is not defined")
        seen[r[1]] = true
        todo[#todo + 1] = r[1]
      end
    end
  end
  local emitted = { "root" }
  for _, name in ipairs(order) do
    if seen[name] and not rename[name] then emitted[#emitted + 1] = name end
  end
  local renamed = {}
  for _, name in ipairs(emitted) do renamed[name] = (prefix or "") .. name end
  local lines = {}
  for _, name in ipairs(emitted) do
    lines[#lines + 1] = renamed[name] .. " ::= " .. (prefix and rewrite(defs[name], renamed) or defs[name])
  end
  local prims = {}
  for name in pairs(c.used_prims) do if seen[name] then prims[#prims + 1] = name end end
  table.sort(prims)
  for _, name in ipairs(prims) do lines[#lines + 1] = name .. " ::= " .. defs[name] end
  return table.concat(lines, "\n") .. "\n"
end

M.key_orders = key_orders
M.literal = lit

--- decode(schema) -> the schema as a Lua table (JSON text decoded by cjson).
M.decode = function(schema) return (decode(schema)) end

return M
