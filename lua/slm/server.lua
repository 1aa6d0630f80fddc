--- slm.server: an OpenAI-compatible HTTP server for one model.
--
--   local srv = slm.server{model = "model.gguf", port = 8080, parallel = 4,
--                          on_request = function(req) ... end}
--   srv:run()                       -- serves until srv:stop()
--
-- Built on lua-http (HTTP/1.1 and HTTP/2 parsing, chunked bodies) over
-- cqueues (one event loop, a coroutine per connection) and lua-cjson.
-- Generation goes through slm.server.scheduler: every request is a job on
-- one of `parallel` sessions, and the loop gives each running job one unit
-- of work (a prompt chunk or a token) in turn, between I/O, so several
-- clients progress together and a client that disconnects cancels its job.
-- Routes, fields and limits: docs/SERVER.md.
--
-- Options (unknown keys are errors):
--   model       a loaded model, or a path / registry name for slm.load
--   name        the model id clients send (default: the file name without .gguf)
--   host, port  default "127.0.0.1" (loopback) and 8080; port 0 picks a free one
--   parallel    sessions, i.e. requests generating at once (default 4)
--   ctx         context of each session (default: model:session's)
--   kv_type     KV cache type of each session: "f16" (default), "f32", "q8_0", "q4_0"
--   api_key     when set, every route but /health needs "Authorization: Bearer KEY"
--   template    chat template (a name of slm.chat.templates; default the model's)
--   max_body    largest request body in bytes (default 1 MiB; 413 above)
--   timeout     seconds a client may take to send a request or accept a write (default 30)
--   on_request  function(req): req = {method, path, headers (lower-case names), body
--               (decoded JSON, may be changed in place), model}; return nothing to go on,
--               a status and message to refuse ({"error": ...} with that status), or a
--               table to answer with (status 200, as JSON). An error in it is a 500.
--   log         function(line) called once per request ("POST /v1/completions 200 0.012s")
--   backend     "batcher" (continuous batching, slm.batcher; the default when the model
--               allows it) or "round-robin" (one job's step after the other)
local options = require "slm.options"
local openai = require "slm.server.openai"
local structured = require "slm.server.structured"
local scheduler = require "slm.server.scheduler"
local sampler_mod = require "slm.sampler"

-- lua-http's Debian package (bookworm) installs its pure-Lua modules for Lua
-- 5.1-5.3 only; they run unchanged on 5.4, so those directories are searched
-- after the usual ones (C modules, cqueues and luaossl, come for 5.4).
local function require_http()
  local ok = pcall(require, "http.server")
  if not ok then
    local extra = {}
    for _, v in ipairs { "5.3", "5.2" } do
      extra[#extra + 1] = "/usr/share/lua/" .. v .. "/?.lua;/usr/share/lua/" .. v .. "/?/init.lua"
    end
    package.path = package.path .. ";" .. table.concat(extra, ";")
    local ok2, err = pcall(require, "http.server")
    if not ok2 then
      error("slm.server needs lua-http and lua-cjson (make deps installs them): " .. tostring(err):match("[^\n]*"), 0)
    end
  end
  return require "http.server", require "http.headers", require "cqueues", require "cqueues.condition",
         require "basexx"
end

local http_server, http_headers, cqueues, condition, basexx = require_http()

local M = {}
local Server = {}
Server.__index = Server

local KNOWN = options.known { "model", "name", "host", "port", "parallel", "ctx", "kv_type", "api_key", "template", "max_body",
                              "timeout", "on_request", "log", "backend" }

local function now() return cqueues.monotime() end

-- Responses -----------------------------------------------------------------------

local function headers_of(status, ctype, extra)
  local h = http_headers.new()
  h:append(":status", tostring(status))
  h:append("content-type", ctype)
  for k, v in pairs(extra or {}) do h:append(k, v) end
  return h
end

-- a complete JSON response
local function respond(self, stream, status, obj, extra)
  local body = openai.encode(obj)
  local h = headers_of(status, "application/json", extra)
  h:append("content-length", tostring(#body))
  stream.slm_sent = true
  if stream:write_headers(h, false, self.timeout) then stream:write_chunk(body, true, self.timeout) end
  return status
end

local function respond_error(self, stream, e, extra)
  return respond(self, stream, e.status, openai.error_body(e), extra)
end

-- Request ids: "cmpl-", "chatcmpl-" and 24 hex digits
local function new_id(prefix)
  return prefix .. string.format("%08x%08x%08x", sampler_mod.fresh_seed(), math.random(0, 0x7fffffff),
                                 math.random(0, 0x7fffffff))
end

-- Generation ------------------------------------------------------------------------

-- Did the client close its side? A pending read of 0 bytes at EOF (a request
-- pipelined behind this one leaves its bytes in the buffer).
local function client_gone(stream)
  local sock = stream.connection and stream.connection.socket
  if not sock then return false end
  sock:clearerr("r")
  local ok, _, errno = sock:fill(1, 0)
  sock:clearerr("r")
  return not ok and errno ~= 110 and errno ~= 11   -- ETIMEDOUT, EAGAIN: open, nothing to read
end

-- Starts one job per (prompt, n): choices in the API's order (index =
-- prompt * n + j). Each choice collects its events in a queue.
local function start_choices(self, plan, cond)
  local choices = {}
  for pi, p in ipairs(plan.prompts) do
    local max_tokens = plan.max_tokens or self.n_ctx
    for j = 1, plan.n do
      local stages = openai.sampler_stages(plan.sampling, j - 1, max_tokens, sampler_mod.fresh_seed)
      local c = { index = #choices, prompt = p, events = {}, head = 1, tail = 0, parts = {}, lps = {}, pending_lps = {} }
      c.job = self.sched:submit {
        ids = p.ids, top_logprobs = plan.logprobs,
        gen = { max_tokens = max_tokens, sampler = stages, stop = plan.stop, stop_ids = plan.stop_ids,
                grammar = plan.grammar },
        on_event = function(ev)
          c.tail = c.tail + 1
          c.events[c.tail] = ev
          cond:signal()
        end,
      }
      choices[#choices + 1] = c
      _ = pi
    end
  end
  self.work:signal()
  return choices
end

-- Waits until a choice has events (or the client left, or time passed).
-- Returns false when the client is gone: every job is then cancelled.
local function wait_events(self, stream, choices, cond)
  while true do
    for _, c in ipairs(choices) do if c.head <= c.tail then return true end end
    cond:wait(0.25)
    if client_gone(stream) then
      for _, c in ipairs(choices) do c.job:cancel() end
      self.work:signal()
      return false
    end
  end
end

-- Runs the choices to the end, calling on_event(choice, ev) for each event
-- in order; returns false if the client went away.
local function drive(self, stream, choices, on_event, flush)
  local cond = choices.cond
  local open = #choices
  while open > 0 do
    if not wait_events(self, stream, choices, cond) then return false end
    for _, c in ipairs(choices) do
      while c.head <= c.tail do
        local ev = c.events[c.head]
        c.events[c.head] = nil
        c.head = c.head + 1
        if ev.done then open = open - 1 end
        on_event(c, ev)
      end
    end
    if flush and not flush() then
      for _, c in ipairs(choices) do c.job:cancel() end
      self.work:signal()
      return false
    end
  end
  return true
end

local function record(self, c, ev)
  if ev.text ~= "" then c.parts[#c.parts + 1] = ev.text end
  if ev.token and ev.logprob then
    local e = openai.chat_logprob(self.tokenizer, ev)
    c.lps[#c.lps + 1] = e
    c.pending_lps[#c.pending_lps + 1] = e
  end
  if ev.done then
    c.info, c.error = ev.info, ev.error
    c.finish = openai.finish_reason(ev.info and ev.info.stopped)
  end
end

local function totals(choices)
  local prompt, completion, seen = 0, 0, {}
  for _, c in ipairs(choices) do
    if not seen[c.prompt] then prompt, seen[c.prompt] = prompt + #c.prompt.ids, true end
    completion = completion + (c.info and c.info.tokens or 0)
  end
  return openai.usage(prompt, completion)
end

local function first_error(choices)
  for _, c in ipairs(choices) do if c.error then return c.error end end
end

-- Serves a completions or chat plan, streamed or whole.
local function serve_generation(self, stream, plan, chat)
  if not self.sched then
    openai.fail(400, "this model is an encoder: it serves /v1/embeddings only", "model", "model_not_supported")
  end
  local cond = condition.new()
  local choices = start_choices(self, plan, cond)
  choices.cond = cond
  local id = new_id(chat and "chatcmpl-" or "cmpl-")
  local created = os.time()
  local object = chat and "chat.completion" or "text_completion"
  local function base(obj)
    obj.id, obj.object, obj.created, obj.model = id, obj.object or object, created, plan.model
    if chat then obj.system_fingerprint = self.fingerprint end
    return obj
  end

  if not plan.stream then
    local ok = drive(self, stream, choices, function(c, ev) record(self, c, ev) end)
    if not ok then return 499 end
    local err = first_error(choices)
    if err then openai.fail(500, "generation failed: " .. err, nil, "generation_error") end
    local out = {}
    for i, c in ipairs(choices) do
      local text = table.concat(c.parts)
      if chat then
        local message, finish = { role = "assistant", content = text }, c.finish
        if plan.tools then
          -- the reply's calls in OpenAI's shape; content null when only calls
          local content, calls = {}, {}
          for _, o in ipairs(structured.splitter():feed(text, true)) do
            if o.content then content[#content + 1] = o.content
            else calls[#calls + 1] = { id = structured.call_id(sampler_mod.fresh_seed()), type = "function",
                                       ["function"] = o.call } end
          end
          message.content = #content > 0 and table.concat(content) or (#calls > 0 and openai.null or "")
          if #calls > 0 then message.tool_calls = calls end
          finish = structured.finish(finish, #calls)
        end
        out[i] = { index = c.index, message = message,
                   logprobs = plan.logprobs and { content = openai.array(c.lps) } or openai.null,
                   finish_reason = finish }
      else
        local echo = plan.echo and (c.prompt.text or "") or ""
        out[i] = { index = c.index, text = echo .. text, finish_reason = c.finish,
                   logprobs = plan.logprobs and openai.completion_logprobs(c.lps, #echo) or openai.null }
      end
    end
    return respond(self, stream, 200, base { choices = out, usage = totals(choices) })
  end

  -- server-sent events: one "data: {chunk}" per piece, "data: [DONE]" last
  local h = headers_of(200, "text/event-stream", { ["cache-control"] = "no-cache" })
  stream.slm_sent = true
  if not stream:write_headers(h, false, self.timeout) then
    for _, c in ipairs(choices) do c.job:cancel() end
    return 499
  end
  local buf = {}
  local function send(obj)
    buf[#buf + 1] = "data: " .. openai.encode(obj) .. "\n\n"
  end
  local function flush()
    if #buf == 0 then return true end
    local data = table.concat(buf)
    buf = {}
    return stream:write_chunk(data, false, self.timeout) ~= nil
  end
  local chunk_object = chat and "chat.completion.chunk" or "text_completion"
  for _, c in ipairs(choices) do
    if chat then
      send(base { object = chunk_object, choices = { { index = c.index, delta = { role = "assistant", content = "" },
                                                       logprobs = openai.null, finish_reason = openai.null } } })
    elseif plan.echo and c.prompt.text then
      send(base { choices = { { index = c.index, text = c.prompt.text, logprobs = openai.null,
                                finish_reason = openai.null } } })
    end
  end
  local offsets = {}
  local function lp_of(c)
    if not plan.logprobs then return openai.null end
    local entries = c.pending_lps
    c.pending_lps = {}
    if chat then return { content = openai.array(entries) } end
    local lp = openai.completion_logprobs(entries, offsets[c] or 0)
    for _, e in ipairs(entries) do offsets[c] = (offsets[c] or 0) + #e.token end
    return lp
  end
  -- with tools, the text goes through a splitter: content deltas, and each
  -- call as one delta.tool_calls entry (index, id, type, name and the whole
  -- arguments) once its closer has come
  local function send_split(c, text, final)
    c.split = c.split or structured.splitter()
    c.n_calls = c.n_calls or 0
    for _, o in ipairs(c.split:feed(text, final)) do
      local delta
      if o.content then
        delta = { content = o.content }
      else
        delta = { tool_calls = { { index = c.n_calls, id = structured.call_id(sampler_mod.fresh_seed()),
                                   type = "function", ["function"] = o.call } } }
        c.n_calls = c.n_calls + 1
      end
      send(base { object = chunk_object, choices = { { index = c.index, delta = delta, logprobs = lp_of(c),
                                                       finish_reason = openai.null } } })
    end
  end
  local ok = drive(self, stream, choices, function(c, ev)
    record(self, c, ev)
    if ev.done then
      if ev.error then
        send(openai.error_body { message = "generation failed: " .. ev.error, type = "server_error",
                                  code = "generation_error" })
      end
      local finish = c.finish
      if plan.tools then
        send_split(c, ev.text or "", true)
        finish = structured.finish(finish, c.n_calls)
      end
      local choice = { index = c.index, logprobs = lp_of(c), finish_reason = finish }
      if chat then choice.delta = {} else choice.text = "" end
      send(base { object = chunk_object, choices = { choice } })
    elseif plan.tools then
      if ev.text ~= "" then send_split(c, ev.text, false) end
    elseif ev.text ~= "" then
      local choice = { index = c.index, logprobs = lp_of(c), finish_reason = openai.null }
      if chat then choice.delta = { content = ev.text } else choice.text = ev.text end
      send(base { object = chunk_object, choices = { choice } })
    end
  end, flush)
  if not ok then return 499 end
  if plan.include_usage then send(base { object = chunk_object, choices = openai.EMPTY_ARRAY, usage = totals(choices) }) end
  buf[#buf + 1] = "data: [DONE]\n\n"
  local data = table.concat(buf)
  stream:write_chunk(data, true, self.timeout)
  return 200
end

-- Routes ---------------------------------------------------------------------------------

local function model_object(self)
  return { id = self.names[1], object = "model", created = self.created, owned_by = "slm" }
end

local function tokens_of_body(body, known)
  if not openai.is_object(body) then openai.fail(400, "the body must be a JSON object", nil, "invalid_json") end
  for k in pairs(body) do
    if not known[k] then
      openai.fail(400, string.format("unknown field '%s'", tostring(k)), tostring(k), "unknown_parameter")
    end
  end
end

local ROUTES = {}

ROUTES["/health"] = { GET = function(self, stream)
  local running, queued = 0, 0
  if self.sched then running, queued = self.sched:load() end
  return respond(self, stream, 200, { status = "ok", slots_busy = running, queued = queued })
end }

ROUTES["/v1/models"] = { GET = function(self, stream)
  return respond(self, stream, 200, { object = "list", data = { model_object(self) } })
end }

ROUTES["/v1/completions"] = { POST = function(self, stream, req)
  return serve_generation(self, stream, openai.completion_request(req.body, self, req.raw), false)
end }

ROUTES["/v1/chat/completions"] = { POST = function(self, stream, req)
  return serve_generation(self, stream, openai.chat_request(req.body, self, req.raw), true)
end }

ROUTES["/v1/embeddings"] = { POST = function(self, stream, req)
  local plan = openai.embedding_request(req.body, self)
  local data, total = {}, 0
  for i, x in ipairs(plan.inputs) do
    local ids = type(x) == "string" and self.tokenizer:encode(x) or x
    if self.n_ctx_train and #ids > self.n_ctx_train then
      openai.fail(400, string.format("input %d is %d tokens, more than the model's context of %d", i - 1, #ids,
                                     self.n_ctx_train), "input", "context_length_exceeded")
    end
    local ok, e = pcall(self.model.embed, self.model, ids)
    if not ok then openai.fail(400, "input " .. (i - 1) .. ": " .. tostring(e):gsub("^.-:%d+: ", ""), "input") end
    total = total + #ids
    local bytes = e:tobytes()   -- f32 little-endian, what the API's base64 encodes
    local vec
    if plan.base64 then
      vec = basexx.to_base64(bytes)
    else
      vec = {}
      local n = #bytes // 4
      for off = 0, n - 1, 4000 do
        local m = math.min(4000, n - off)
        table.move({ string.unpack(string.rep("<f", m), bytes, off * 4 + 1) }, 1, m, off + 1, vec)
      end
    end
    data[i] = { object = "embedding", index = i - 1, embedding = vec }
    cqueues.sleep(0)   -- let other clients progress between inputs
  end
  return respond(self, stream, 200, { object = "list", data = data, model = plan.model,
                                      usage = { prompt_tokens = total, total_tokens = total } })
end }

local TOKENIZE_FIELDS = { content = true, add_special = true, parse_special = true, with_pieces = true }
ROUTES["/tokenize"] = { POST = function(self, stream, req)
  local b = req.body
  tokens_of_body(b, TOKENIZE_FIELDS)
  if type(b.content) ~= "string" then
    openai.fail(400, "'content' must be a string", "content", b.content == nil and "missing_required_parameter" or "invalid_type")
  end
  for _, k in ipairs { "add_special", "parse_special", "with_pieces" } do
    if b[k] ~= nil and type(b[k]) ~= "boolean" then openai.fail(400, "'" .. k .. "' must be a boolean", k, "invalid_type") end
  end
  if not self.tokenizer then openai.fail(400, "this model has no tokenizer", nil) end
  local ids = self.tokenizer:encode(b.content, { add_special = b.add_special == true,
                                                 parse_special = b.parse_special == true })
  local out = ids
  if b.with_pieces then
    out = {}
    for i, id in ipairs(ids) do out[i] = { id = id, piece = openai.utf8(self.tokenizer:piece(id, true)) } end
  end
  return respond(self, stream, 200, { tokens = openai.array(out) })
end }

ROUTES["/detokenize"] = { POST = function(self, stream, req)
  local b = req.body
  tokens_of_body(b, { tokens = true })
  if not openai.is_array(b.tokens) then
    openai.fail(400, "'tokens' must be an array of token ids", "tokens",
                b.tokens == nil and "missing_required_parameter" or "invalid_type")
  end
  local ids = openai.token_ids(b.tokens, "tokens", self.n_vocab)
  if not self.tokenizer then openai.fail(400, "this model has no tokenizer", nil) end
  return respond(self, stream, 200, { content = openai.utf8(#ids > 0 and self.tokenizer:decode(ids) or "") })
end }

-- Requests --------------------------------------------------------------------------------

local function constant_time_equal(a, b)
  if type(a) ~= "string" or #a ~= #b then return false end
  local d = 0
  for i = 1, #a do d = d | (a:byte(i) ~ b:byte(i)) end
  return d == 0
end

-- Reads the body: at most max_body bytes (413 beyond, told by
-- content-length before reading when the client sends one).
local function read_body(self, stream, headers)
  local len = headers:get("content-length")
  if len and (not len:match("^%d+$") or #len > 15 or tonumber(len) > self.max_body) then
    openai.fail(413, string.format("the body is larger than this server's limit of %d bytes", self.max_body), nil,
                "body_too_large")
  end
  local body, err = stream:get_body_chars(self.max_body + 1, self.timeout)
  if not body and err then openai.fail(400, "could not read the body: " .. tostring(err), nil, "bad_body") end
  body = body or ""
  if #body > self.max_body then
    openai.fail(413, string.format("the body is larger than this server's limit of %d bytes", self.max_body), nil,
                "body_too_large")
  end
  return body
end

local function handle(self, stream)
  local headers = stream:get_headers(self.timeout)
  if not headers then return end
  local t0 = now()
  local method = headers:get(":method")
  local path = (headers:get(":path") or "/"):gsub("%?.*$", "")
  local ok, status = xpcall(function()
    local route = ROUTES[path]
    if not route and path:match("^/v1/models/.") then
      route = { GET = function(_, st)
        local id = path:sub(#"/v1/models/" + 1)
        if not self.names[id] then
          openai.fail(404, string.format("the model '%s' does not exist", id), "model", "model_not_found")
        end
        return respond(self, st, 200, model_object(self))
      end }
    end
    if not route then openai.fail(404, "no route " .. path .. " (see GET /v1/models)", nil, "not_found") end
    if not route[method] then
      local allowed = {}
      for m in pairs(route) do allowed[#allowed + 1] = m end
      table.sort(allowed)
      local e = { status = 405, type = "invalid_request_error", code = "method_not_allowed",
                  message = string.format("%s does not take %s (allowed: %s)", path, method, table.concat(allowed, ", ")) }
      return respond_error(self, stream, e, { allow = table.concat(allowed, ", ") })
    end
    if self.api_key and path ~= "/health" then
      local auth = headers:get("authorization") or ""
      local token = auth:match("^[Bb]earer%s+(.-)%s*$")
      if not constant_time_equal(token, self.api_key) then
        openai.fail(401, auth == "" and "missing API key (Authorization: Bearer KEY)" or "invalid API key", nil,
                    "invalid_api_key")
      end
    end
    local req = { method = method, path = path, headers = {}, model = self.names[1] }
    for name, value in headers:each() do
      if name:sub(1, 1) ~= ":" then req.headers[name] = value end
    end
    if method == "POST" then
      req.raw = read_body(self, stream, headers)   -- its text: the member order of schemas and tools
      req.body = openai.decode(req.raw)
    end
    if self.on_request then
      local hok, a, b = pcall(self.on_request, req)
      if not hok then openai.fail(500, "on_request failed: " .. tostring(a), nil, "hook_error") end
      if type(a) == "number" then
        if math.type(a) ~= "integer" or a < 400 or a > 599 then
          openai.fail(500, "on_request returned the status " .. tostring(a) .. " (expected 400..599)", nil, "hook_error")
        end
        openai.fail(a, type(b) == "string" and b or "refused", nil, "rejected")
      elseif type(a) == "table" then
        return respond(self, stream, 200, a)
      elseif a ~= nil then
        openai.fail(500, "on_request returned a " .. type(a) .. " (expected nothing, a status or a table)", nil,
                    "hook_error")
      end
    end
    return route[method](self, stream, req)
  end, function(e)
    -- a bug (not an API error): its traceback goes to the log
    if not openai.is_error(e) and self.log then pcall(self.log, debug.traceback(tostring(e), 2)) end
    return e
  end)
  if not ok then
    local e = status
    if not openai.is_error(e) then
      e = { status = 500, type = "server_error", code = "internal_error", message = "internal error: " .. tostring(e) }
    end
    -- headers may be out already (a failed stream): then there is nothing to tell
    if not stream.slm_sent then
      pcall(respond_error, self, stream, e)
    end
    status = e.status
  end
  if self.log then pcall(self.log, string.format("%s %s %s %.3fs", method, path, tostring(status), now() - t0)) end
end

-- The server ---------------------------------------------------------------------------------

--- slm.server(opts) -> server (not listening yet: srv:listen() or srv:run())
function M.new(opts)
  opts = options.check("slm.server", opts, KNOWN)
  local model = opts.model
  if model == nil then error("slm.server: model is required (a model or a path)", 2) end
  local path_name
  if type(model) == "string" then
    path_name = model
    local err
    model, err = require("slm.model").load(model)
    if not model then error("slm.server: " .. tostring(err), 2) end
  end
  local function int_opt(k, min, default)
    local v = opts[k]
    if v == nil then return default end
    if not options.is_int(v, min) then options.fail("slm.server", k, "an integer >= " .. min, v) end
    return v
  end
  local parallel = int_opt("parallel", 1, 4)
  local port = int_opt("port", 0, 8080)
  if port > 65535 then options.fail("slm.server", "port", "an integer in [0, 65535]", port) end
  local max_body = int_opt("max_body", 1, 1 << 20)
  local ctx = int_opt("ctx", 2, nil)
  for _, k in ipairs { "host", "api_key", "name", "kv_type" } do
    if not options.is_string(opts[k]) then options.fail("slm.server", k, "a string", opts[k]) end
  end
  for _, k in ipairs { "on_request", "log" } do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then options.fail("slm.server", k, "a function", opts[k]) end
  end
  if opts.timeout ~= nil and not (type(opts.timeout) == "number" and opts.timeout > 0) then
    options.fail("slm.server", "timeout", "a positive number of seconds", opts.timeout)
  end
  if opts.api_key == "" then error("slm.server: api_key must not be empty", 2) end
  if opts.template ~= nil then
    -- resolved now: a wrong name fails here, not at the first chat request
    local ok, e = pcall(require("slm.chat").resolve, opts.template, model)
    if not ok then error("slm.server: template: " .. tostring(e), 2) end
  end
  local file = (model.path or path_name or "model"):match("([^/]+)$"):gsub("%.gguf$", ""):gsub("%.bin$", "")
  local name = opts.name or file
  local self = setmetatable({
    model = model, tokenizer = model.tokenizer, n_vocab = model.hp.n_vocab, dim = model.hp.dim,
    n_ctx_train = model.hp.n_ctx_train, template = opts.template,
    names = { name, [name] = true }, host = opts.host or "127.0.0.1", port = port,
    api_key = opts.api_key, on_request = opts.on_request, log = opts.log, max_body = max_body,
    timeout = opts.timeout or 30, created = os.time(),
    fingerprint = "slm-" .. tostring(require("slm.core").version),
    cq = cqueues.new(), work = condition.new(),
  }, Server)
  if path_name == "default" then self.names.default = true end
  if not model.def.encoder then
    if opts.backend ~= nil and opts.backend ~= "batcher" and opts.backend ~= "round-robin" then
      options.fail("slm.server", "backend", '"batcher" or "round-robin"', opts.backend)
    end
    local ok, sched = pcall(scheduler.new, model, { parallel = parallel, ctx = ctx, kv_type = opts.kv_type,
                                                     backend = opts.backend })
    if not ok then error("slm.server: " .. tostring(sched):gsub("^.-:%d+: ", ""), 2) end
    self.sched = sched
    self.n_ctx = self.sched.n_ctx
  else
    self.n_ctx = model.hp.n_ctx_train or 512
  end
  return self
end

--- srv:listen() -> srv, bound (srv.port is the actual port: port 0 picks one)
function Server:listen()
  if self.http then return self end
  local srv, err = http_server.listen {
    host = self.host, port = self.port, cq = self.cq, reuseaddr = true,
    onstream = function(_, stream) handle(self, stream) end,
    onerror = function(_, ctx, op, err)
      if self.log then pcall(self.log, string.format("error: %s: %s", tostring(op), tostring(err))) end
    end,
    connection_setup_timeout = self.timeout, intra_stream_timeout = self.timeout,
  }
  if not srv then error("slm.server: cannot listen on " .. self.host .. ":" .. self.port .. ": " .. tostring(err), 2) end
  local ok, lerr = srv:listen()
  if not ok then error("slm.server: cannot listen on " .. self.host .. ":" .. self.port .. ": " .. tostring(lerr), 2) end
  local _, _, port = srv:localname()
  self.http, self.port = srv, port
  -- the scheduler's loop: one step for every running job, then the I/O
  self.cq:wrap(function()
    while not self.stopped do
      if self.sched and self.sched:busy() then
        self.sched:step()
        cqueues.sleep(0)
      else
        self.work:wait(1)
      end
    end
  end)
  return self
end

--- srv:url() -> "http://host:port"
function Server:url()
  return string.format("http://%s:%d", self.host:find(":") and "[" .. self.host .. "]" or self.host, self.port)
end

--- srv:spawn(fn): runs fn as a coroutine of the server's loop (an in-process client, a timer)
function Server:spawn(fn)
  self.cq:wrap(fn)
end

--- srv:step([timeout]) -> one turn of the event loop (for hosts with their own loop)
function Server:step(timeout)
  self:listen()
  local ok, err = self.cq:step(timeout)
  if not ok then error("slm.server: " .. tostring(err), 2) end
end

--- srv:run{timeout = seconds}: serves until srv:stop() (or the timeout).
function Server:run(o)
  o = options.check("run", o, options.known { "timeout" })
  self:listen()
  local deadline = o.timeout and now() + o.timeout
  while not self.stopped do
    if deadline and now() >= deadline then break end
    local ok, err = self.cq:step(deadline and math.min(1, math.max(0, deadline - now())) or 1)
    if not ok then error("slm.server: " .. tostring(err), 2) end
  end
  -- let the closing connections finish their last writes
  local t = now()
  while self.cq:count() > 0 and now() - t < 1 do self.cq:step(0.05) end
end

--- srv:stop(): cancels the running jobs and closes the listening socket;
-- run() returns.
function Server:stop()
  if self.stopped then return end
  self.stopped = true
  if self.sched then self.sched:cancel_all() end
  self.work:signal()
  if self.http then self.http:close() end
end

function Server:__tostring()
  return string.format("slm.Server(%s, %s)", self.names[1], self.http and self:url() or "not listening")
end

M.Server = Server
setmetatable(M, { __call = function(_, opts) return M.new(opts) end })
return M
