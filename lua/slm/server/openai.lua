--- slm.server.openai: the OpenAI API's request fields, checked, and its
-- response shapes. No I/O here: slm.server reads the requests and runs the
-- jobs; this module turns a decoded JSON body into prompts and generate
-- options (or an API error), and results into the API's objects.
--
-- Request fields follow https://platform.openai.com/docs/api-reference
-- (completions, chat, embeddings). A field the server does not know, or
-- knows but cannot honour (suffix, best_of > n, echo with logprobs,
-- tools with a template without them), is a 400 naming it: a request is
-- never answered as if the field were absent. JSON null is "absent".
-- response_format, json_schema, grammar and tools: slm.server.structured.
-- Sampling: temperature (default 1; 0 is greedy), top_p (default 1),
-- presence_penalty and frequency_penalty (over the generated tokens),
-- logit_bias, seed, and llama.cpp's extensions top_k and min_p; the chain
-- is slm.sampler's, in the reference order penalties, logit_bias, top_k,
-- top_p, min_p, temperature, dist.
local cjson = require "cjson"
local chat = require "slm.chat"

local M = {}

-- Errors ----------------------------------------------------------------------

local ApiError = {}
ApiError.__index = ApiError
ApiError.__tostring = function(e) return e.message end

--- fail(status, message [, param [, code [, type]]]): raises an API error
-- (type default "invalid_request_error"; server errors "server_error").
function M.fail(status, message, param, code, etype)
  error(setmetatable({ status = status, message = message, param = param, code = code,
                       type = etype or (status >= 500 and "server_error" or "invalid_request_error") }, ApiError), 0)
end
local fail = M.fail

function M.is_error(e) return getmetatable(e) == ApiError end

--- error_body(e) -> the API's {"error": {message, type, param, code}}
function M.error_body(e)
  return { error = { message = e.message, type = e.type, param = e.param or cjson.null, code = e.code or cjson.null } }
end

-- JSON ------------------------------------------------------------------------

M.null = cjson.null

-- cjson 2.1.0 writes an empty table as {}: an empty array is this marker
-- (a noncharacter and a nonce, which no text contains) replaced after encoding
local EMPTY = "\u{10FFFF}[]" .. string.format("%08x", math.random(0, 0x7fffffff))
M.EMPTY_ARRAY = EMPTY
local EMPTY_JSON = '"' .. EMPTY:gsub("%p", "%%%0") .. '"'

--- encode(value) -> JSON text
function M.encode(v)
  return (cjson.encode(v):gsub(EMPTY_JSON, "[]"))
end

--- decode(text) -> value, or raises a 400
function M.decode(text)
  local ok, v = pcall(cjson.decode, text)
  if not ok then fail(400, "the body is not valid JSON: " .. tostring(v):gsub("^.-: ", ""), nil, "invalid_json") end
  return v
end

--- array(list) -> list, or the empty-array marker
local function array(t) if #t == 0 then return EMPTY end return t end
M.array = array

-- Text that is not UTF-8 (a byte-level token's piece) would make the JSON
-- invalid for clients: its bad bytes become U+FFFD.
function M.utf8(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local len = utf8.len(s, i)
    if len then out[#out + 1] = s:sub(i) break end
    local _, bad = utf8.len(s, i)
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end

-- Fields -----------------------------------------------------------------------

local function is_array(v)
  if type(v) ~= "table" then return false end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end
M.is_array = is_array

local function is_object(v)
  return type(v) == "table" and (next(v) == nil or not is_array(v))
end
M.is_object = is_object

local function show(v)
  if v == cjson.null then return "null" end
  local t = type(v)
  if t == "table" then return is_array(v) and "an array" or "an object" end
  if t == "number" then return tostring(math.tointeger(v) or v) end
  if t == "string" then return #v > 40 and string.format("%q", v:sub(1, 37) .. "...") or string.format("%q", v) end
  return tostring(v)
end

-- param: the field named in the error (default key)
local function bad(key, expected, got, param)
  fail(400, string.format("'%s' must be %s, got %s", key, expected, show(got)), param or key, "invalid_type")
end
M.bad = bad

--- check_known(body, known, what): every key of body is in the set known
local function check_known(body, known, what)
  for k in pairs(body) do
    if not known[k] then
      fail(400, string.format("unknown field '%s' in a %s request", tostring(k), what), tostring(k),
           "unknown_parameter")
    end
  end
end

-- null means absent
local function get(body, key)
  local v = body[key]
  if v == cjson.null then return nil end
  return v
end
M.get = get

local function int(body, key, min, max, default)
  local v = get(body, key)
  if v == nil then return default end
  local i = type(v) == "number" and math.tointeger(v)
  if not i or i < min or (max and i > max) then
    bad(key, max and string.format("an integer in [%d, %d]", min, max) or ("an integer >= " .. min), v)
  end
  return i
end

local function num(body, key, min, max, default, open_min)
  local v = get(body, key)
  if v == nil then return default end
  if type(v) ~= "number" or v ~= v or v < min or v > max or (open_min and v == min) then
    bad(key, string.format("a number in %s%g, %g]", open_min and "(" or "[", min, max), v)
  end
  return v
end

local function bool(body, key, default)
  local v = get(body, key)
  if v == nil then return default end
  if type(v) ~= "boolean" then bad(key, "a boolean", v) end
  return v
end

local function model_field(body, names)
  local m = get(body, "model")
  if m == nil then fail(400, "missing field 'model'", "model", "missing_required_parameter") end
  if type(m) ~= "string" then bad("model", "a string", m) end
  if not names[m] then
    fail(404, string.format("the model '%s' does not exist (this server has %s)", m, names[1]), "model",
         "model_not_found")
  end
  return m
end

-- stop: a string or an array of up to 16 non-empty strings
local function stops(body)
  local v = get(body, "stop")
  if v == nil then return {} end
  if type(v) == "string" then
    if v == "" then bad("stop", "a non-empty string or an array of them", v) end
    return { v }
  end
  if not is_array(v) or #v > 16 then bad("stop", "a string or an array of at most 16 strings", v) end
  for i, s in ipairs(v) do
    if type(s) ~= "string" or s == "" then bad("stop[" .. (i - 1) .. "]", "a non-empty string", s) end
  end
  return v
end

-- The sampling fields common to completions and chat.
local function sampling(body, n_vocab)
  local p = {
    temperature = num(body, "temperature", 0, 2, 1),
    top_p = num(body, "top_p", 0, 1, 1, true),
    top_k = int(body, "top_k", 0, nil, 0),
    min_p = num(body, "min_p", 0, 1, 0),
    presence = num(body, "presence_penalty", -2, 2, 0),
    frequency = num(body, "frequency_penalty", -2, 2, 0),
    seed = get(body, "seed"),
  }
  if p.seed ~= nil then
    local s = type(p.seed) == "number" and math.tointeger(p.seed)
    if not s then bad("seed", "an integer", p.seed) end
    p.seed = s & 0x7fffffff   -- slm's dist stage takes seeds >= 0
  end
  local lb = get(body, "logit_bias")
  if lb ~= nil then
    if not is_object(lb) then bad("logit_bias", "an object {token id: bias}", lb) end
    local bias = {}
    for k, b in pairs(lb) do
      local id = type(k) == "string" and k:match("^%d+$") and math.tointeger(tonumber(k))
      if not id or id >= n_vocab then
        fail(400, string.format("logit_bias: '%s' is not a token id of this model (0..%d)", tostring(k), n_vocab - 1),
             "logit_bias", "invalid_value")
      end
      if type(b) ~= "number" or b ~= b or b < -100 or b > 100 then bad("logit_bias." .. k, "a number in [-100, 100]", b) end
      bias[id] = b
    end
    if next(bias) then p.logit_bias = bias end
  end
  return p
end

--- sampler_stages(p, index, max_tokens) -> stages for slm.sampler.chain, and
-- the seed used (nil when greedy). Choice `index` of n (0-based) samples
-- with seed + index, so n choices differ and a request repeats with its seed.
function M.sampler_stages(p, index, max_tokens, fresh_seed)
  local st = {}
  if p.presence ~= 0 or p.frequency ~= 0 then
    st[#st + 1] = { "penalties", last_n = math.max(max_tokens, 1), repeat_penalty = 1, frequency = p.frequency,
                    presence = p.presence }
  end
  if p.logit_bias then st[#st + 1] = { "logit_bias", p.logit_bias } end
  if p.temperature == 0 then
    st[#st + 1] = { "greedy" }
    return st, nil
  end
  if p.top_k > 0 then st[#st + 1] = { "top_k", p.top_k } end
  if p.top_p < 1 then st[#st + 1] = { "top_p", p.top_p } end
  if p.min_p > 0 then st[#st + 1] = { "min_p", p.min_p } end
  st[#st + 1] = { "temp", p.temperature }
  local seed = ((p.seed or fresh_seed()) + index) & 0x7fffffff
  st[#st + 1] = { "dist", seed = seed }
  return st, seed
end

-- stream and stream_options
local function streaming(body)
  local stream = bool(body, "stream", false)
  local so = get(body, "stream_options")
  local usage = false
  if so ~= nil then
    if not is_object(so) then bad("stream_options", "an object", so) end
    if not stream then fail(400, "'stream_options' is only allowed with stream: true", "stream_options") end
    for k in pairs(so) do
      if k ~= "include_usage" then fail(400, "unknown field 'stream_options." .. tostring(k) .. "'", "stream_options") end
    end
    usage = bool(so, "include_usage", false)
  end
  return stream, usage
end

local function not_supported(body, key, allowed)
  local v = get(body, key)
  if v ~= nil and not allowed(v) then
    fail(400, string.format("'%s' is not supported yet by this server", key), key, "unsupported_parameter")
  end
end

-- Token ids given in a request: integers in 0..n_vocab-1.
local function token_ids(v, key, n_vocab)
  for i, id in ipairs(v) do
    local x = type(id) == "number" and math.tointeger(id)
    if not x or x < 0 or x >= n_vocab then
      bad(string.format("%s[%d]", key, i - 1), string.format("a token id in [0, %d]", n_vocab - 1), id)
    end
    v[i] = x
  end
  return v
end
M.token_ids = token_ids

-- Completions -------------------------------------------------------------------

local COMPLETION_FIELDS = {}
for _, k in ipairs { "model", "prompt", "max_tokens", "temperature", "top_p", "n", "stream", "stream_options",
                     "logprobs", "echo", "stop", "presence_penalty", "frequency_penalty", "best_of", "logit_bias",
                     "seed", "suffix", "user", "top_k", "min_p", "response_format", "json_schema", "grammar" } do
  COMPLETION_FIELDS[k] = true
end

-- structured output and tools (slm.server.structured, which uses this module)
local function structured() return require "slm.server.structured" end

-- the key orders of the body's text, when a field needs them
local function orders_for(body, raw)
  if get(body, "response_format") ~= nil or get(body, "json_schema") ~= nil or get(body, "tools") ~= nil then
    return structured().orders(raw)
  end
end

--- completion_request(body, srv [, raw]) -> plan: {model, prompts = {{ids, text}},
-- n, stream, include_usage, max_tokens, logprobs (k or nil), echo, stop,
-- sampling, grammar}. srv: {names (set and [1]), tokenizer, n_vocab, n_ctx};
-- raw: the body's JSON text (for the member order of schemas).
function M.completion_request(body, srv, raw)
  if not is_object(body) then fail(400, "the body must be a JSON object", nil, "invalid_json") end
  check_known(body, COMPLETION_FIELDS, "completions")
  local plan = { model = model_field(body, srv.names) }
  local prompt = get(body, "prompt")
  if prompt == nil then fail(400, "missing field 'prompt'", "prompt", "missing_required_parameter") end
  local tok = srv.tokenizer
  local prompts = {}
  local function text_prompt(s)
    if not tok then fail(400, "this model has no tokenizer: give the prompt as token ids", "prompt") end
    return { ids = tok:encode(s, { add_special = true }), text = s }
  end
  if type(prompt) == "string" then
    prompts[1] = text_prompt(prompt)
  elseif is_array(prompt) and #prompt > 0 then
    if type(prompt[1]) == "string" then
      for i, s in ipairs(prompt) do
        if type(s) ~= "string" then bad("prompt[" .. (i - 1) .. "]", "a string", s) end
        prompts[i] = text_prompt(s)
      end
    elseif type(prompt[1]) == "number" then
      prompts[1] = { ids = token_ids(prompt, "prompt", srv.n_vocab) }
    else
      for i, ids in ipairs(prompt) do
        if not is_array(ids) or #ids == 0 then bad("prompt[" .. (i - 1) .. "]", "a non-empty array of token ids", ids) end
        prompts[i] = { ids = token_ids(ids, "prompt[" .. (i - 1) .. "]", srv.n_vocab) }
      end
    end
  else
    bad("prompt", "a string, an array of strings, an array of token ids or an array of those", prompt)
  end
  if #prompts > 16 then fail(400, "at most 16 prompts per request", "prompt") end
  plan.prompts = prompts
  plan.n = int(body, "n", 1, 16, 1)
  if #prompts * plan.n > 16 then fail(400, "at most 16 choices (prompts × n) per request", "n") end
  plan.stream, plan.include_usage = streaming(body)
  plan.max_tokens = int(body, "max_tokens", 0, nil, 16)
  plan.logprobs = int(body, "logprobs", 0, 20, nil)
  plan.echo = bool(body, "echo", false)
  if plan.echo and plan.logprobs then
    fail(400, "'echo' with 'logprobs' (log-probabilities of the prompt) is not supported yet", "echo",
         "unsupported_parameter")
  end
  plan.stop = stops(body)
  plan.sampling = sampling(body, srv.n_vocab)
  plan.grammar = structured().constraint(body, orders_for(body, raw))
  if plan.grammar and not tok then fail(400, "this model has no tokenizer: a grammar needs one", "grammar") end
  not_supported(body, "suffix", function(v) return v == "" end)
  not_supported(body, "best_of", function(v) return v == plan.n end)
  if get(body, "user") ~= nil and type(get(body, "user")) ~= "string" then bad("user", "a string", body.user) end
  for i, p in ipairs(prompts) do
    if #p.ids == 0 then fail(400, "prompt " .. (i - 1) .. " is empty (no tokens)", "prompt") end
    M.check_fits(#p.ids, srv.n_ctx)
    if not p.text and tok then p.text = tok:decode(p.ids) end
  end
  return plan
end

--- check_fits(n_prompt, n_ctx): a 400 when the prompt leaves no room for a token
function M.check_fits(n, n_ctx)
  if n >= n_ctx then
    fail(400, string.format("the prompt is %d tokens, this server's context is %d (a prompt may take at most %d)",
                            n, n_ctx, n_ctx - 1), "prompt", "context_length_exceeded")
  end
end

-- Chat ----------------------------------------------------------------------------

local CHAT_FIELDS = {}
for _, k in ipairs { "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n",
                     "stream", "stream_options", "logprobs", "top_logprobs", "stop", "presence_penalty",
                     "frequency_penalty", "logit_bias", "seed", "user", "response_format", "tools", "tool_choice",
                     "parallel_tool_calls", "functions", "function_call", "top_k", "min_p", "json_schema",
                     "grammar" } do
  CHAT_FIELDS[k] = true
end
local ROLES = { system = true, user = true, assistant = true, developer = true, tool = true }
-- fields by role: an assistant's tool_calls, a tool result's tool_call_id
local MESSAGE_FIELDS = { role = true, content = true }
local ROLE_FIELDS = { assistant = { tool_calls = true }, tool = { tool_call_id = true } }

-- One message's content: a string, or an array of {type = "text", text}
-- parts (joined with "\n").
local function content_of(c, i)
  local key = "messages[" .. i .. "].content"
  if type(c) == "string" then return c end
  if not is_array(c) or #c == 0 then bad(key, "a string or an array of text parts", c) end
  local texts = {}
  for j, part in ipairs(c) do
    local pk = key .. "[" .. (j - 1) .. "]"
    if not is_object(part) or part.type ~= "text" or type(part.text) ~= "string" then
      if is_object(part) and type(part.type) == "string" and part.type ~= "text" then
        fail(400, string.format("%s: content parts of type '%s' are not supported (text only)", pk, part.type), key,
             "unsupported_parameter")
      end
      bad(pk, 'a text part {"type": "text", "text": ...}', part)
    end
    texts[j] = part.text
  end
  return table.concat(texts, "\n")
end

--- chat_request(body, srv [, raw]) -> plan as completion_request's, with
-- messages (slm.chat's form) and prompts = {{ids}} from the chat template
-- (srv.template, srv.model), stop strings and stop_ids from its end of turn,
-- and tools ({list, grammar, mode}: slm.server.structured) when the
-- request calls them.
function M.chat_request(body, srv, raw)
  if not is_object(body) then fail(400, "the body must be a JSON object", nil, "invalid_json") end
  check_known(body, CHAT_FIELDS, "chat completions")
  local plan = { model = model_field(body, srv.names) }
  local msgs = get(body, "messages")
  if msgs == nil then fail(400, "missing field 'messages'", "messages", "missing_required_parameter") end
  if not is_array(msgs) or #msgs == 0 then bad("messages", "a non-empty array of messages", msgs) end
  local messages = {}
  for i, m in ipairs(msgs) do
    local key = "messages[" .. (i - 1) .. "]"
    if not is_object(m) then bad(key, "an object {role, content}", m) end
    if type(m.role) ~= "string" then bad(key .. ".role", "a string", m.role) end
    if not ROLES[m.role] then
      fail(400, string.format("%s.role: '%s' is not supported (system, developer, user, assistant, tool)", key,
                              m.role), key .. ".role", "invalid_value")
    end
    for k in pairs(m) do
      if not MESSAGE_FIELDS[k] and not (ROLE_FIELDS[m.role] or {})[k] then
        local what = k == "function_call" and "function_call (the deprecated form of tool_calls) is"
                     or ("the field '" .. tostring(k) .. "' is")
        fail(400, string.format("%s: %s not supported by this server in a %s message", key, what, m.role),
             key .. "." .. tostring(k), "unsupported_parameter")
      end
    end
    local calls = get(m, "tool_calls")
    if calls ~= nil then calls = structured().message_tool_calls(calls, key) end
    if m.role == "tool" and type(get(m, "tool_call_id")) ~= "string" then
      bad(key .. ".tool_call_id", "a string", m.tool_call_id)
    end
    local content = get(m, "content")
    if content == nil and not calls then
      fail(400, key .. ": missing field 'content'", key .. ".content", "missing_required_parameter")
    end
    -- developer is the newer name of the system role
    messages[i] = { role = m.role == "developer" and "system" or m.role, tool_calls = calls,
                    content = content == nil and "" or content_of(content, i - 1) }
  end
  plan.messages = messages
  plan.n = int(body, "n", 1, 16, 1)
  plan.stream, plan.include_usage = streaming(body)
  local mt = int(body, "max_completion_tokens", 0, nil, nil)
  local mt2 = int(body, "max_tokens", 0, nil, nil)
  if mt and mt2 and mt ~= mt2 then fail(400, "'max_tokens' and 'max_completion_tokens' differ", "max_tokens") end
  plan.max_tokens = mt or mt2   -- nil: until the end of turn or the context
  if bool(body, "logprobs", false) then
    plan.logprobs = int(body, "top_logprobs", 0, 20, 0)
  elseif get(body, "top_logprobs") ~= nil then
    fail(400, "'top_logprobs' needs 'logprobs': true", "top_logprobs", "invalid_value")
  end
  plan.stop = stops(body)
  plan.sampling = sampling(body, srv.n_vocab)
  local orders = orders_for(body, raw)
  local constrained
  plan.grammar, constrained = structured().constraint(body, orders)
  not_supported(body, "functions", function(v) return is_array(v) and #v == 0 end)
  not_supported(body, "function_call", function(v) return v == "none" end)
  if get(body, "user") ~= nil and type(get(body, "user")) ~= "string" then bad("user", "a string", body.user) end

  if not srv.tokenizer then fail(400, "this model has no tokenizer: chat needs one", "messages") end
  plan.tools = structured().tools(body, srv, orders, constrained)
  if plan.tools then plan.grammar = plan.tools.grammar end
  structured().check_template(messages, srv)
  local ok, ids = pcall(chat.tokenize, srv.tokenizer, messages, { model = srv.model, template = srv.template,
                                                                 tools = plan.tools and plan.tools.list })
  if not ok then
    fail(400, "messages: " .. tostring(ids):gsub("^.-:%d+: ", ""):gsub("^chat: ", ""), "messages", "invalid_value")
  end
  M.check_fits(#ids, srv.n_ctx)
  plan.prompts = { { ids = ids } }
  -- the template's end of turn: ids when the vocabulary has them (as sess:chat)
  local tpl = chat.resolve(srv.template, srv.model)
  plan.stop_ids = {}
  local s = {}
  for _, e in ipairs(tpl.stop) do
    local id = srv.tokenizer:id(e)
    if id then plan.stop_ids[#plan.stop_ids + 1] = id else s[#s + 1] = e end
  end
  for _, e in ipairs(plan.stop) do s[#s + 1] = e end
  plan.stop = s
  return plan
end

-- Embeddings -----------------------------------------------------------------------

local EMBED_FIELDS = { model = true, input = true, encoding_format = true, dimensions = true, user = true }

--- embedding_request(body, srv) -> {model, inputs = {text or ids...}, base64 = bool}
function M.embedding_request(body, srv)
  if not is_object(body) then fail(400, "the body must be a JSON object", nil, "invalid_json") end
  check_known(body, EMBED_FIELDS, "embeddings")
  local plan = { model = model_field(body, srv.names) }
  local input = get(body, "input")
  if input == nil then fail(400, "missing field 'input'", "input", "missing_required_parameter") end
  local inputs = {}
  if type(input) == "string" then
    inputs[1] = input
  elseif is_array(input) and #input > 0 then
    if type(input[1]) == "number" then
      inputs[1] = token_ids(input, "input", srv.n_vocab)
    else
      for i, x in ipairs(input) do
        if type(x) == "string" then inputs[i] = x
        elseif is_array(x) and #x > 0 then inputs[i] = token_ids(x, "input[" .. (i - 1) .. "]", srv.n_vocab)
        else bad("input[" .. (i - 1) .. "]", "a string or a non-empty array of token ids", x) end
      end
    end
  else
    bad("input", "a string, an array of strings or of token ids", input)
  end
  if #inputs > 256 then fail(400, "at most 256 inputs per request", "input") end
  plan.inputs = inputs
  for i, x in ipairs(inputs) do
    if x == "" then fail(400, "input " .. (i - 1) .. " is an empty string", "input", "invalid_value") end
    if type(x) == "string" and not srv.tokenizer then fail(400, "this model has no tokenizer: give token ids", "input") end
  end
  local fmt = get(body, "encoding_format")
  if fmt ~= nil and fmt ~= "float" and fmt ~= "base64" then bad("encoding_format", '"float" or "base64"', fmt) end
  plan.base64 = fmt == "base64"
  not_supported(body, "dimensions", function(v) return v == srv.dim end)
  return plan
end

-- Responses -----------------------------------------------------------------------

--- finish_reason(stopped) -> "stop" | "length" (generate's info.stopped)
function M.finish_reason(stopped)
  -- grammar_incomplete: max_tokens or the context ran out inside the grammar
  if stopped == "max_tokens" or stopped == "ctx" or stopped == "grammar_incomplete" then return "length" end
  return "stop"
end

-- bytes of a string as a list of numbers
local function bytes_of(s)
  local t = { s:byte(1, -1) }
  return array(t)
end

-- logprobs are finite in JSON (the API writes -9999 for impossible tokens)
local function finite(lp) if lp == -math.huge or lp ~= lp then return -9999.0 end return lp end

--- chat_logprob(tok, ev) -> an entry of a chat choice's logprobs.content
function M.chat_logprob(tok, ev)
  local piece = tok and tok:piece(ev.token, true) or ""
  local top = {}
  for i, t in ipairs(ev.top or {}) do
    local p = tok and tok:piece(t.id, true) or ""
    top[i] = { token = M.utf8(p), logprob = finite(t.logprob), bytes = bytes_of(p) }
  end
  return { token = M.utf8(piece), logprob = finite(ev.logprob), bytes = bytes_of(piece), top_logprobs = array(top) }
end

--- completion_logprobs(tok, entries, offset0) -> the legacy {tokens,
-- token_logprobs, top_logprobs, text_offset} of a list of chat_logprob entries
function M.completion_logprobs(entries, offset0)
  local lp = { tokens = {}, token_logprobs = {}, top_logprobs = {}, text_offset = {} }
  local off = offset0 or 0
  for i, e in ipairs(entries) do
    lp.tokens[i], lp.token_logprobs[i], lp.text_offset[i] = e.token, e.logprob, off
    local top = {}
    for _, t in ipairs(e.top_logprobs == EMPTY and {} or e.top_logprobs) do top[t.token] = t.logprob end
    lp.top_logprobs[i] = top
    off = off + #e.token
  end
  for k, v in pairs(lp) do lp[k] = array(v) end
  return lp
end

function M.usage(prompt, completion)
  return { prompt_tokens = prompt, completion_tokens = completion, total_tokens = prompt + completion }
end

return M
