-- The Lua half of the chat fuzz target (fuzz_chat.c runs it in an embedded
-- Lua state with slm linked in): returns run(input), which turns the bytes
-- into a conversation and template options, renders them with
-- slm.chat.render and slm.chat.tokenize, and returns nil when everything
-- held or a string saying what did not.
--
-- Input: records separated by "\30", fields by "\31".
--   record 1: template (a name; "@fn" a Lua function template; "@table" a
--             template table), then options "key=value": gen=0|1,
--             think=true|false|other (other: a string, a wrong type),
--             date=<integer> | date=Y-M-D | date=<other string>,
--             bos=..., eos=..., tok=<n> (which tokenizer), jinja=... (text
--             for slm.chat.recognize)
--   next records: one message each: role, content, reasoning_content,
--             tools, tool_calls (fields left out are nil); a record "!"
--             is a message that is not a table.
-- Errors: slm.chat raises "chat: ..." for what a caller got wrong and
-- "bad argument #..." for a wrong argument type (both at level 0 or
-- from a function called by C, so without a position): any other error
-- (a runtime error inside chat.lua, an error from a library function, one
-- with a position) is a failure.
local slm = require "slm"
local chat = slm.chat

local M = {}

local NAMES = {}
for name in pairs(chat.templates) do NAMES[#NAMES + 1] = name end
table.sort(NAMES)

-- Tokenizers: a SentencePiece vocabulary with byte tokens and every
-- template's markers as control tokens (written here), and with the
-- fixtures phi-3's (markers that eat whitespace) and gpt-2's.
local function builtin_tokenizer(dir)
  local tokens, types = { "<unk>", "<s>", "</s>" }, { 2, 3, 3 }
  for b = 0, 255 do tokens[#tokens + 1] = string.format("<0x%02X>", b); types[#types + 1] = 6 end
  local seen = {}
  for _, t in pairs(chat.templates) do
    for _, list in ipairs { t.specials or {}, t.stop or {} } do
      for _, s in ipairs(list) do
        if not seen[s] and s ~= "<s>" and s ~= "</s>" then
          seen[s] = true
          tokens[#tokens + 1] = s
          types[#types + 1] = 3
        end
      end
    end
  end
  for _, s in ipairs { "<bos>", "<eos>", "<|begin_of_text|>", "<|endoftext|>", "\u{2581}", "\u{2581}a", "he", "ll" } do
    if not seen[s] then tokens[#tokens + 1] = s; types[#types + 1] = 1; seen[s] = true end
  end
  local scores = {}
  for i = 1, #tokens do scores[i] = -i + 0.0 end
  local path = dir .. "/chat-vocab.gguf"
  assert(slm.gguf.write(path, { metadata = {
    { "tokenizer.ggml.model", "llama" },
    { "tokenizer.ggml.tokens", tokens },
    { "tokenizer.ggml.scores", { type = "f32", value = scores } },
    { "tokenizer.ggml.token_type", { type = "i32", value = types } },
  } }))
  local tok = assert(slm.tokenizer.load(path))
  os.remove(path)
  return tok
end

local toks
function M.init(dir, fixtures)
  toks = { builtin_tokenizer(dir) }
  if fixtures then
    for _, name in ipairs { "phi-3", "gpt-2" } do
      local tok = slm.tokenizer.load(fixtures .. "/vocab/ggml-vocab-" .. name .. ".gguf")
      if tok then toks[#toks + 1] = tok end
    end
  end
end

local function split(s, sep)
  local out, pos = {}, 1
  while true do
    local a = s:find(sep, pos, true)
    if not a then out[#out + 1] = s:sub(pos); return out end
    out[#out + 1] = s:sub(pos, a - 1)
    pos = a + 1
  end
end

-- a template given as a function or a table: ChatML's render
local function fn_template(...) return chat.templates.chatml.render(...) end

local function decode(input)
  local records = split(input, "\30")
  local head = split(records[1], "\31")
  local tpl = head[1]
  if tpl == "@fn" then tpl = fn_template
  elseif tpl == "@table" then tpl = { render = fn_template, stop = { "<|im_end|>" }, specials = { "<|im_start|>" } }
  elseif tpl == "" then tpl = NAMES[1]
  elseif tpl:match("^%d+$") then tpl = NAMES[(tonumber(tpl) or 0) % #NAMES + 1] end
  local opts, tok_i, jinja = {}, 1, nil
  for i = 2, #head do
    local k, v = head[i]:match("^(%w+)=(.*)$")
    if k == "gen" then opts.add_generation_prompt = v ~= "0"
    elseif k == "think" then
      if v == "true" then opts.think = true elseif v == "false" then opts.think = false else opts.think = v end
    elseif k == "date" then
      local y, m, d = v:match("^(%-?%d+)%-(%-?%d+)%-(%-?%d+)$")
      if y then opts.date = { year = math.tointeger(tonumber(y)), month = math.tointeger(tonumber(m)),
                              day = math.tointeger(tonumber(d)) }
      else opts.date = math.tointeger(tonumber(v)) or v end
    elseif k == "bos" then opts.bos = v
    elseif k == "eos" then opts.eos = v
    elseif k == "tok" then tok_i = (tonumber(v) and math.tointeger(tonumber(v)) or 0) % #toks + 1
    elseif k == "jinja" then jinja = v
    end
  end
  local messages = {}
  for i = 2, #records do
    if records[i] == "!" then
      messages[#messages + 1] = "!"
    else
      local f = split(records[i], "\31")
      local m = { role = f[1], content = f[2], reasoning_content = f[3], tools = f[4] }
      if f[5] then m.tool_calls = { f[5] } end
      messages[#messages + 1] = m
    end
  end
  return tpl, messages, opts, toks[tok_i], jinja
end

-- nil when err is one of slm.chat's documented errors
local function bad_error(where, err)
  if type(err) ~= "string" then return where .. ": error value of type " .. type(err) end
  -- (a position "chat.lua:12: " would come first: these prefixes exclude it;
  -- the rest may quote the caller's text, whatever it holds)
  if not (err:find("^chat: ") or err:find("^bad argument #%d+ to '%w+' %(")) then
    return where .. ": undocumented error: " .. err
  end
end

function M.run(input)
  local tpl, messages, opts, tok, jinja = decode(input)
  if jinja then
    local name = chat.recognize(jinja)
    if name ~= nil and not chat.templates[name] then return "recognize gave '" .. tostring(name) .. "'" end
  end
  for _, m in ipairs(messages) do
    if type(m) == "table" and type(m.content) == "string" then
      local ok, a = pcall(chat.read_reasoning, m.content)
      if not ok or type(a) ~= "string" then return "read_reasoning failed: " .. tostring(a) end
    end
  end
  local ok, text, parts = pcall(chat.render, tpl, messages, opts)
  if ok then
    if type(text) ~= "string" or type(parts) ~= "table" then return "render returned " .. type(text) end
    local out = {}
    for i, p in ipairs(parts) do out[i] = type(p) == "table" and p[1] or p end
    if table.concat(out) ~= text then return "render: the parts do not make the text" end
  else
    local bad = bad_error("render", text)
    if bad then return bad end
  end
  local topts = {}
  for k, v in pairs(opts) do topts[k] = v end
  topts.template, topts.bos, topts.eos = tpl, nil, nil
  local ok2, ids, units = pcall(chat.tokenize, tok, messages, topts)
  if ok2 then
    if type(ids) ~= "table" or type(units) ~= "table" then return "tokenize returned " .. type(ids) end
    for _, id in ipairs(ids) do
      if math.type(id) ~= "integer" or id < 0 or id >= #tok then
        return "tokenize gave id " .. tostring(id) .. " of " .. #tok
      end
    end
    -- the same conversation renders whenever it tokenizes (the same checks)
    if not ok and type(tpl) == "string" then return "tokenize succeeded where render failed: " .. text end
  else
    local bad = bad_error("tokenize", ids)
    if bad then return bad end
  end
  return nil
end

return M
