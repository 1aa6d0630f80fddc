-- slm.server in process: the server and lua-http clients share one cqueues
-- loop (srv:spawn), every request has a timeout and srv:run{timeout} bounds
-- the whole test. Expected texts come from sess:generate / sess:chat on a
-- fresh session, logprobs from a log-softmax of sess:eval's logits computed
-- here, embeddings from model:embed: never from the server's own code.
local slm = require "slm"
local server = require "slm.server"
local cjson = require "cjson"
local request = require "http.request"
local cqueues = require "cqueues"

local model = assert(slm.load("default"))
local tok = model.tokenizer

local function fresh() return model:session {} end

local function greedy(prompt, opts)
  local text = fresh():generate(prompt, opts, function() end)
  return text
end

-- Runs fn(srv, call) as a client inside the server's loop; fails on any
-- error or after `limit` seconds.
local function with_server(opts, fn, limit)
  opts.model = opts.model or model
  opts.port = 0
  local srv = server.new(opts)
  srv:listen()
  local failure
  local function call(method, path, body, headers, raw)
    local req = request.new_from_uri(srv:url() .. path)
    req.headers:upsert(":method", method)
    for k, v in pairs(headers or {}) do req.headers:upsert(k, v) end
    if body then req:set_body(type(body) == "string" and body or cjson.encode(body)) end
    local h, st = req:go(20)
    assert(h, "request failed: " .. tostring(st))
    if raw then return tonumber(h:get(":status")), st, h end
    local text = assert(st:get_body_as_string(20))
    local ok, json = pcall(cjson.decode, text)
    return tonumber(h:get(":status")), ok and json or text, h
  end
  srv:spawn(function()
    local ok, err = xpcall(fn, debug.traceback, srv, call)
    if not ok then failure = err end
    srv:stop()
  end)
  srv:run { timeout = limit or 120 }
  assert(srv.stopped, "the test did not finish in time")
  if failure then error(failure, 0) end
end

-- The data lines of an SSE body, decoded ("[DONE]" kept as the string)
local function sse(text)
  local events = {}
  for line in text:gmatch("[^\n]+") do
    local data = line:match("^data: (.*)$")
    assert(data, "not an SSE data line: " .. line)
    events[#events + 1] = data == "[DONE]" and data or cjson.decode(data)
  end
  return events
end

local function log_softmax(logits)
  local v = logits:totable()
  local mx = -math.huge
  for _, x in ipairs(v) do mx = math.max(mx, x) end
  local s = 0
  for _, x in ipairs(v) do s = s + math.exp(x - mx) end
  local out = {}
  for i, x in ipairs(v) do out[i - 1] = x - mx - math.log(s) end
  return out
end

describe("slm.server", function()
  for _, backend in ipairs { "batcher", "round-robin" } do
  it("serves every route with the API's shapes and greedy outputs equal to sess:generate (" .. backend .. ")", function()
    with_server({ backend = backend }, function(srv, call)
      assert.equal(backend, srv.sched.backend)
      local st, j = call("GET", "/health")
      assert.equal(200, st)
      assert.equal("ok", j.status)

      st, j = call("GET", "/v1/models")
      assert.equal(200, st)
      assert.equal("list", j.object)
      assert.equal("model", j.data[1].object)
      local id = j.data[1].id
      -- the file's name without .gguf (the default model's)
      assert.equal((slm.model.default_path():match("([^/]*)%.gguf$")), id)
      st, j = call("GET", "/v1/models/" .. id)
      assert.equal(200, st)
      assert.equal(id, j.id)

      -- completions, greedy
      local want = greedy("ROMEO:", { max_tokens = 30 })
      st, j = call("POST", "/v1/completions", { model = id, prompt = "ROMEO:", max_tokens = 30, temperature = 0 })
      assert.equal(200, st)
      assert.equal("text_completion", j.object)
      assert.truthy(j.id:match("^cmpl%-%x+$"))
      assert.equal(id, j.model)
      assert.equal("number", type(j.created))
      assert.equal(want, j.choices[1].text)
      assert.equal(0, j.choices[1].index)
      assert.equal("length", j.choices[1].finish_reason)
      assert.equal(cjson.null, j.choices[1].logprobs)
      local n_prompt = #tok:encode("ROMEO:", { add_special = true })
      assert.same({ prompt_tokens = n_prompt, completion_tokens = 30, total_tokens = n_prompt + 30 }, j.usage)

      -- a stop string cut from the greedy text: finish_reason "stop"
      local stop = want:sub(12, 13)
      local want_stop = greedy("ROMEO:", { max_tokens = 30, stop = { stop } })
      assert.is_true(#want_stop < #want)
      st, j = call("POST", "/v1/completions", { model = id, prompt = "ROMEO:", max_tokens = 30, temperature = 0,
                                                 stop = { stop, "zzzz" } })
      assert.equal(want_stop, j.choices[1].text)
      assert.equal("stop", j.choices[1].finish_reason)

      -- streaming completions
      st, j = call("POST", "/v1/completions", { model = id, prompt = "ROMEO:", max_tokens = 30, temperature = 0,
                                                 stream = true })
      assert.equal(200, st)
      local ev = sse(j)
      assert.equal("[DONE]", ev[#ev])
      local text = {}
      for i = 1, #ev - 1 do
        assert.equal("text_completion", ev[i].object)
        text[#text + 1] = ev[i].choices[1].text
      end
      assert.equal(want, table.concat(text))
      assert.equal("length", ev[#ev - 1].choices[1].finish_reason)

      -- chat, greedy, equal to sess:chat on a fresh session
      local msgs = { { role = "system", content = "Speak." }, { role = "user", content = "Who art thou?" } }
      local want_chat = fresh():chat(msgs, { max_tokens = 25 })
      st, j = call("POST", "/v1/chat/completions", { model = id, messages = msgs, max_tokens = 25, temperature = 0 })
      assert.equal(200, st)
      assert.equal("chat.completion", j.object)
      assert.truthy(j.id:match("^chatcmpl%-%x+$"))
      assert.same({ role = "assistant", content = want_chat }, j.choices[1].message)
      assert.equal(#slm.chat.tokenize(tok, msgs, { model = model }), j.usage.prompt_tokens)
      assert.equal(25, j.usage.completion_tokens)

      -- chat streaming (with usage)
      st, j = call("POST", "/v1/chat/completions", { model = id, messages = msgs, max_tokens = 25, temperature = 0,
                                                      stream = true, stream_options = { include_usage = true } })
      ev = sse(j)
      assert.equal("[DONE]", ev[#ev])
      assert.same({ role = "assistant", content = "" }, ev[1].choices[1].delta)
      text = {}
      for i = 1, #ev - 1 do
        assert.equal("chat.completion.chunk", ev[i].object)
        local c = ev[i].choices[1]
        if c and c.delta.content and i > 1 then text[#text + 1] = c.delta.content end
      end
      assert.equal(want_chat, table.concat(text))
      assert.equal("length", ev[#ev - 2].choices[1].finish_reason)
      assert.same({}, ev[#ev - 1].choices)
      assert.equal(25, ev[#ev - 1].usage.completion_tokens)

      -- n = 2 with a seed: the choices are seed and seed + 1 of a plain
      -- temperature-1 chain, and the request repeats exactly
      local body = { model = id, prompt = "KING:", max_tokens = 12, n = 2, seed = 77 }
      st, j = call("POST", "/v1/completions", body)
      assert.equal(200, st)
      assert.equal(2, #j.choices)
      for i, c in ipairs(j.choices) do
        assert.equal(i - 1, c.index)
        local s = slm.sampler.chain { { "temp", 1 }, { "dist", seed = 77 + i - 1 } }
        assert.equal(greedy("KING:", { max_tokens = 12, sampler = s }), c.text)
      end
      local _, j2 = call("POST", "/v1/completions", body)
      assert.equal(j.choices[1].text, j2.choices[1].text)
      assert.equal(j.choices[2].text, j2.choices[2].text)

      -- logprobs: chat entries against a log-softmax of the logits here
      st, j = call("POST", "/v1/chat/completions", { model = id, messages = msgs, max_tokens = 5, temperature = 0,
                                                      logprobs = true, top_logprobs = 3 })
      assert.equal(200, st)
      local content = j.choices[1].logprobs.content
      assert.equal(5, #content)
      local s = fresh()
      local logits = s:eval(slm.chat.tokenize(tok, msgs, { model = model }))
      for _, e in ipairs(content) do
        local lp = log_softmax(logits)
        local best, best_id = -math.huge, nil
        for i = 0, model.hp.n_vocab - 1 do if lp[i] > best then best, best_id = lp[i], i end end
        assert.equal(tok:piece(best_id), e.token)
        assert.near(best, e.logprob, 1e-6)
        assert.same({ tok:piece(best_id):byte(1, -1) }, e.bytes)
        assert.equal(3, #e.top_logprobs)
        assert.equal(e.token, e.top_logprobs[1].token)
        assert.is_true(e.top_logprobs[2].logprob <= e.top_logprobs[1].logprob)
        assert.is_true(e.top_logprobs[3].logprob <= e.top_logprobs[2].logprob)
        logits = s:eval { best_id }
      end
      -- legacy completions logprobs
      st, j = call("POST", "/v1/completions", { model = id, prompt = "ROMEO:", max_tokens = 4, temperature = 0,
                                                 logprobs = 2 })
      local lp = j.choices[1].logprobs
      assert.equal(4, #lp.tokens)
      assert.equal(greedy("ROMEO:", { max_tokens = 4 }), table.concat(lp.tokens))
      local offsets, at = {}, 0       -- each token's start in the text
      for i, t in ipairs(lp.tokens) do offsets[i], at = at, at + #t end
      assert.same(offsets, lp.text_offset)

      -- embeddings: floats and base64 against model:embed
      local e1 = model:embed("hello there"):totable()
      st, j = call("POST", "/v1/embeddings", { model = id, input = { "hello there", "x" } })
      assert.equal(200, st)
      assert.equal("list", j.object)
      assert.equal(2, #j.data)
      assert.equal("embedding", j.data[1].object)
      assert.equal(#e1, #j.data[1].embedding)
      for i = 1, #e1 do assert.near(e1[i], j.data[1].embedding[i], 1e-7) end
      assert.equal(#tok:encode("hello there") + #tok:encode("x"), j.usage.prompt_tokens)
      st, j = call("POST", "/v1/embeddings", { model = id, input = "hello there", encoding_format = "base64" })
      local b64 = j.data[1].embedding
      assert.equal(require("basexx").to_base64(model:embed("hello there"):tobytes()), b64)

      -- tokenize / detokenize against the tokenizer
      st, j = call("POST", "/tokenize", { content = "Good morrow" })
      assert.equal(200, st)
      assert.same(tok:encode("Good morrow"), j.tokens)
      st, j = call("POST", "/detokenize", { tokens = tok:encode("Good morrow") })
      assert.equal("Good morrow", j.content)
    end)
  end)
  end

  it("answers malformed requests with the right status and error shape, and keeps serving", function()
    local long = string.rep("a", 300)   -- the default model's context is 128 tokens
    with_server({ max_body = 4096 }, function(srv, call)
      local id = srv.names[1]
      local P = "/v1/completions"
      local C = "/v1/chat/completions"
      local msg = { { role = "user", content = "hi" } }
      local cases = {
        { "POST", P, "{", 400, nil, "invalid_json" },
        { "POST", P, "[1, 2]", 400 },
        { "POST", P, "", 400, nil, "invalid_json" },
        { "POST", P, { prompt = "a" }, 400, "model", "missing_required_parameter" },
        { "POST", P, { model = "gpt-4", prompt = "a" }, 404, "model", "model_not_found" },
        { "POST", P, { model = id }, 400, "prompt", "missing_required_parameter" },
        { "POST", P, { model = id, prompt = 5 }, 400, "prompt" },
        { "POST", P, { model = id, prompt = "a", max_tokens = -1 }, 400, "max_tokens" },
        { "POST", P, { model = id, prompt = "a", max_tokens = "10" }, 400, "max_tokens" },
        { "POST", P, { model = id, prompt = "a", max_tokens = 1.5 }, 400, "max_tokens" },
        { "POST", P, { model = id, prompt = "a", temperature = 3 }, 400, "temperature" },
        { "POST", P, { model = id, prompt = "a", top_p = 0 }, 400, "top_p" },
        { "POST", P, { model = id, prompt = "a", n = 0 }, 400, "n" },
        { "POST", P, { model = id, prompt = "a", stop = "" }, 400, "stop" },
        { "POST", P, { model = id, prompt = "a", stop = { "x", 3 } }, 400, "stop[1]" },
        { "POST", P, { model = id, prompt = "a", frobnicate = true }, 400, "frobnicate", "unknown_parameter" },
        { "POST", P, { model = id, prompt = "a", logit_bias = { ["99999"] = 1 } }, 400, "logit_bias" },
        { "POST", P, { model = id, prompt = "a", suffix = "x" }, 400, "suffix", "unsupported_parameter" },
        { "POST", P, { model = id, prompt = "a", stream_options = { include_usage = true } }, 400, "stream_options" },
        { "POST", P, { model = id, prompt = { 1, 2, 999 } }, 400, "prompt[2]" },
        { "POST", P, { model = id, prompt = long }, 400, "prompt", "context_length_exceeded" },
        { "POST", P, string.rep(" ", 5000), 413, nil, "body_too_large" },
        { "POST", C, { model = id, messages = {} }, 400, "messages" },
        { "POST", C, { model = id, messages = { { role = "wizard", content = "x" } } }, 400, "messages[0].role" },
        { "POST", C, { model = id, messages = { { role = "user" } } }, 400, "messages[0].content" },
        { "POST", C, { model = id, messages = { { role = "user", content = { { type = "image_url" } } } } }, 400 },
        -- the default model's template renders no tools; a schema outside the subset
        { "POST", C, { model = id, messages = msg, tools = { { type = "function", ["function"] = { name = "f" } } } },
          400, "tools", "unsupported_parameter" },
        { "POST", C, { model = id, messages = msg, response_format = { type = "json_schema", json_schema = {
          name = "x", schema = { type = "string", format = "email" } } } }, 400, "response_format",
          "unsupported_parameter" },
        { "POST", C, { model = id, messages = msg, top_logprobs = 2 }, 400, "top_logprobs" },
        { "POST", C, { model = id, messages = { { role = "user", content = long } } }, 400, "prompt",
          "context_length_exceeded" },
        { "POST", "/v1/embeddings", { model = id }, 400, "input", "missing_required_parameter" },
        { "POST", "/v1/embeddings", { model = id, input = "a", encoding_format = "hex" }, 400, "encoding_format" },
        { "POST", "/detokenize", { tokens = { -1 } }, 400, "tokens[0]" },
        { "POST", "/tokenize", { content = 3 }, 400, "content" },
        { "GET", "/v1/nothing", nil, 404, nil, "not_found" },
        { "GET", "/v1/models/nope", nil, 404, "model", "model_not_found" },
        { "GET", P, nil, 405, nil, "method_not_allowed" },
        { "DELETE", "/health", nil, 405 },
      }
      assert.is_true(#cases >= 15)
      for i, c in ipairs(cases) do
        local st, j, h = call(c[1], c[2], c[3])
        local where = string.format("case %d (%s %s %s)", i, c[1], c[2], type(c[3]) == "table" and cjson.encode(c[3])
                                    or tostring(c[3]):sub(1, 20))
        assert.equal(c[4], st, where .. ": " .. (type(j) == "table" and cjson.encode(j) or tostring(j)))
        assert.equal("table", type(j.error), where)
        assert.equal("string", type(j.error.message), where)
        assert.equal("invalid_request_error", j.error.type, where)
        if c[5] then assert.equal(c[5], j.error.param, where) end
        if c[6] then assert.equal(c[6], j.error.code, where) end
        assert.equal("application/json", h:get("content-type"), where)
      end
      local st, j = call("GET", "/health")
      assert.equal(200, st)
      assert.equal("ok", j.status)
      -- and a good request still works
      st, j = call("POST", P, { model = id, prompt = "ROMEO:", max_tokens = 5, temperature = 0 })
      assert.equal(200, st)
      assert.equal(greedy("ROMEO:", { max_tokens = 5 }), j.choices[1].text)
    end)
  end)

  for _, backend in ipairs { "batcher", "round-robin" } do
  it("runs its sessions on the kv_type it is given: greedy text equal to a q8_0-cache session's (" .. backend .. ")",
     function()
    -- the reference text from a lone session with the same cache type, and
    -- a check that the type matters here (else the case could not fail)
    local q8 = model:session { kv_type = "q8_0" }
    local want = q8:generate("ROMEO:", { max_tokens = 40 }, function() end)
    assert.is_true(q8:kv_bytes_per_token() < fresh():kv_bytes_per_token())
    -- the second token's log-probability after a q8_0 and an f16 cache
    -- (the cache holds the prompt then): they differ well beyond 1e-5
    local ids = tok:encode("ROMEO:", { add_special = true })
    local function second(sess)
      local lp0, first = log_softmax(sess:eval(ids)), 0
      for i, v in pairs(lp0) do if v > lp0[first] then first = i end end
      local lp = log_softmax(sess:eval { first })
      local best = -math.huge
      for _, v in pairs(lp) do best = math.max(best, v) end
      return best
    end
    local lp_q8, lp_f16 = second(model:session { kv_type = "q8_0" }), second(fresh())
    assert.is_true(math.abs(lp_q8 - lp_f16) > 1e-4)
    with_server({ backend = backend, kv_type = "q8_0", parallel = 2 }, function(srv, call)
      local st, j = call("POST", "/v1/completions", { model = srv.names[1], prompt = "ROMEO:", max_tokens = 40,
                                                       temperature = 0, logprobs = 1 })
      assert.equal(200, st)
      assert.equal(want, j.choices[1].text)
      assert.near(lp_q8, j.choices[1].logprobs.token_logprobs[2], 1e-5)
    end)
  end)
  end

  it("refuses a kv_type it does not know, naming it", function()
    local ok, e = pcall(server.new, { model = model, kv_type = "q5_9" })
    assert.is_false(ok)
    assert.matches("kv_type", tostring(e))
    assert.matches("q5_9", tostring(e))
    ok, e = pcall(server.new, { model = model, kv_type = 8 })
    assert.is_false(ok)
    assert.matches("kv_type", tostring(e))
  end)

  it("slm serve --kv-type: a bad type is the flag's one-line error", function()
    local helpers = require "spec.helpers"
    local out, code = helpers.run("bin/slm serve default --port 0 --kv-type q5")
    assert.equal(1, code)
    assert.equal('slm: --kv-type must be "f16", "f32", "q8_0" or "q4_0", got "q5"\n', out)
  end)

  it("requires the bearer key on every route but /health", function()
    with_server({ api_key = "sekrit" }, function(srv, call)
      local body = { model = srv.names[1], prompt = "A", max_tokens = 2, temperature = 0 }
      local st, j = call("POST", "/v1/completions", body)
      assert.equal(401, st)
      assert.equal("invalid_api_key", j.error.code)
      st = call("POST", "/v1/completions", body, { authorization = "Bearer wrong" })
      assert.equal(401, st)
      st = call("GET", "/v1/models", nil, { authorization = "Bearer sekri" })
      assert.equal(401, st)
      st = call("POST", "/v1/completions", body, { authorization = "Bearer sekrit" })
      assert.equal(200, st)
      st = call("GET", "/health")
      assert.equal(200, st)
    end)
  end)

  it("lets on_request rewrite or refuse a request", function()
    local seen = {}
    local hook = function(req)
      seen[#seen + 1] = req.method .. " " .. req.path
      if req.path == "/v1/embeddings" then return 403, "embeddings are off here" end
      if req.body and req.body.prompt then req.body.max_tokens = 3 end
      if req.path == "/v1/models" then return { object = "list", data = {} } end
    end
    with_server({ on_request = hook }, function(srv, call)
      local st, j = call("POST", "/v1/completions", { model = srv.names[1], prompt = "A", max_tokens = 50,
                                                       temperature = 0 })
      assert.equal(200, st)
      assert.equal(3, j.usage.completion_tokens)
      st, j = call("POST", "/v1/embeddings", { model = srv.names[1], input = "a" })
      assert.equal(403, st)
      assert.equal("embeddings are off here", j.error.message)
      st, j = call("GET", "/v1/models")
      assert.same({ object = "list", data = {} }, j)
    end)
    assert.same({ "POST /v1/completions", "POST /v1/embeddings", "GET /v1/models" }, seen)
    -- a hook that fails is a 500, and the server goes on
    with_server({ on_request = function(req) if req.path ~= "/health" then error("boom") end end }, function(_, call)
      local st, j = call("GET", "/v1/models")
      assert.equal(500, st)
      assert.truthy(j.error.message:find("boom", 1, true))
      assert.equal(200, (call("GET", "/health")))
    end)
  end)

  for _, backend in ipairs { "batcher", "round-robin" } do
  it("interleaves concurrent streams and cancels a stream whose client leaves (" .. backend .. ")", function()
    local lines = {}
    -- a context past the model's training length, for a generation long
    -- enough that it cannot end before the client leaves
    with_server({ parallel = 3, ctx = 2048, backend = backend, log = function(l) lines[#lines + 1] = l end },
                function(srv, call)
      local prompts = { "ROMEO:", "JULIET:", "KING HENRY:" }
      local want, got, order = {}, {}, {}
      local done = 0
      for i, p in ipairs(prompts) do
        want[i] = greedy(p, { max_tokens = 40 })
        srv:spawn(function()
          local st, s = call("POST", "/v1/completions", { model = srv.names[1], prompt = p, max_tokens = 40,
                                                           temperature = 0, stream = true }, nil, true)
          assert.equal(200, st)
          local parts = {}
          while true do
            local chunk, err = s:get_next_chunk(20)
            assert(chunk or not err, err)
            if not chunk then break end
            order[#order + 1] = i
            parts[#parts + 1] = chunk
          end
          got[i] = table.concat(parts)
          done = done + 1
        end)
      end
      local t0 = cqueues.monotime()
      while done < #prompts and cqueues.monotime() - t0 < 60 do cqueues.sleep(0.01) end
      assert.equal(#prompts, done)
      for i = 1, #prompts do
        local text = {}
        for _, e in ipairs(sse(got[i])) do if e ~= "[DONE]" then text[#text + 1] = e.choices[1].text end end
        assert.equal(want[i], table.concat(text))
      end
      -- round-robin: every stream got chunks before any other finished
      local last_first, first_last = 0, math.huge
      for i = 1, #prompts do
        local first, last
        for k, v in ipairs(order) do
          if v == i then first = first or k last = k end
        end
        last_first, first_last = math.max(last_first, first), math.min(first_last, last)
      end
      assert.is_true(last_first < first_last, "streams were served one after the other")

      -- a client that reads two chunks and closes: its job is cancelled
      local st, s = call("POST", "/v1/completions", { model = srv.names[1], prompt = "A", max_tokens = 2000,
                                                       temperature = 0, stream = true }, nil, true)
      assert.equal(200, st)
      s:get_next_chunk(10)
      s:get_next_chunk(10)
      s:shutdown()   -- the body was not read to its end: lua-http closes the connection
      local t1 = cqueues.monotime()
      while srv.sched:busy() and cqueues.monotime() - t1 < 20 do cqueues.sleep(0.01) end
      assert.is_false(srv.sched:busy())
      cqueues.sleep(0.1)
      assert.equal(200, (call("GET", "/health")))
    end)
    local cancelled = 0
    for _, l in ipairs(lines) do if l:match("^POST /v1/completions 499 ") then cancelled = cancelled + 1 end end
    assert.equal(1, cancelled, table.concat(lines, "\n"))
  end)
  end
end)

-- Structured output and tool calls (lua/slm/server/structured.lua) on the
-- tool fixture model (helpers.tool_model_path: ChatML and <tool_call>
-- tokens) served with the qwen3 template. Expected replies come from
-- sess:chat / sess:generate on a fresh session with the same constraint and
-- sampler chain; schemas are checked by python-jsonschema
-- (helpers.json_schema_verdicts), never by the server's own code.
describe("slm.server: structured output and tools", function()
  local helpers = require "spec.helpers"
  local tmodel
  local function tool_model()
    if not tmodel then
      local path, why = helpers.tool_model_path()
      if not path then return nil, why end
      tmodel = assert(slm.load(path))
    end
    return tmodel
  end
  local OPEN = helpers.TOOL_IDS.open
  -- optional members "unit" before "days": not their sorted order, so that
  -- a server that lost the request's member order would differ
  local WEATHER_PARAMS = '{"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, '
                         .. '"unit": {"enum": ["C", "F"]}, "days": {"type": "integer", "minimum": 1, "maximum": 7}}, '
                         .. '"required": ["city"], "additionalProperties": false}'
  local NOW_PARAMS = '{"type": "object", "properties": {"tz": {"type": "string", "maxLength": 8}}}'
  -- parameters are placeholders that encode() replaces by the texts above,
  -- so that the body has their member order
  local TOOLS = { { type = "function", ["function"] = { name = "get_weather", description = "Weather of a city",
                                                        parameters = "__WEATHER__" } },
                  { type = "function", ["function"] = { name = "now", parameters = "__NOW__" } } }
  local PARAMS = { get_weather = WEATHER_PARAMS, now = NOW_PARAMS }
  local MSGS = { { role = "user", content = "Weather in Paris?" } }
  -- slm.chat's form of TOOLS: parameters as the JSON text (the request's order)
  local CHAT_TOOLS = { { name = "get_weather", description = "Weather of a city", parameters = WEATHER_PARAMS },
                       { name = "now", parameters = PARAMS.now } }

  -- the body as JSON text, the placeholders replaced (member order kept)
  local function encode_with_params(body)
    local text = cjson.encode(body)
    text = text:gsub('"__WEATHER__"', function() return WEATHER_PARAMS end)
    return (text:gsub('"__NOW__"', function() return NOW_PARAMS end))
  end

  local function expected_chat(m, msgs, o, chain)
    local sess = m:session { ctx = 1024 }
    o.template, o.sampler = "qwen3", slm.sampler.chain(chain)
    return sess:chat(msgs, o)
  end

  local function validate_all(by_name)
    local n = 0
    for name, list in pairs(by_name) do
      if #list > 0 then
        local verdicts, why = helpers.json_schema_verdicts(PARAMS[name] or name, list)
        if not verdicts then return nil, why end
        for i, v in ipairs(verdicts) do assert.equal("ok", v, name .. ": " .. list[i]) end
        n = n + #list
      end
    end
    return n
  end

  it("response_format json_schema / json_object and grammar: replies follow them, equal to sess:chat / generate", function()
    local m, why = tool_model()
    if not m then return pending(why) end
    with_server({ model = m, template = "qwen3", ctx = 1024 }, function(srv, call)
      local id = srv.names[1]
      local texts = {}
      for seed = 1, 6 do
        -- the body as text: the schema's member order is the request's
        local body = { model = id, messages = MSGS, max_tokens = 60, seed = seed, temperature = 1,
                       response_format = { type = "json_schema", json_schema = { name = "weather", strict = true,
                                                                                 schema = "__WEATHER__" } } }
        local st, j = call("POST", "/v1/chat/completions", encode_with_params(body))
        assert.equal(200, st, cjson.encode(j))
        local content = j.choices[1].message.content
        local want, info = expected_chat(m, MSGS, { json_schema = WEATHER_PARAMS, max_tokens = 60 },
                                         { { "temp", 1 }, { "dist", seed = seed } })
        assert.equal(want, content)
        assert.equal(info.stopped == "grammar" and "stop" or "length", j.choices[1].finish_reason)
        assert.equal("stop", j.choices[1].finish_reason, content)
        assert.equal("table", type(cjson.decode(content)))
        texts[#texts + 1] = (content:gsub("\n", " "))
      end
      local n, vwhy = validate_all { [WEATHER_PARAMS] = texts }
      if not n then return pending(vwhy) end
      assert.equal(6, n)

      -- json_object: any JSON object
      for seed = 1, 3 do
        local st, j = call("POST", "/v1/chat/completions", { model = id, messages = MSGS, max_tokens = 80, seed = seed,
                                                              response_format = { type = "json_object" } })
        assert.equal(200, st)
        local content = j.choices[1].message.content
        if j.choices[1].finish_reason == "stop" then
          local ok, v = pcall(cjson.decode, content)
          assert.is_true(ok and type(v) == "table" and content:match("^%s*{") ~= nil, content)
        else
          assert.equal("length", j.choices[1].finish_reason)
          assert.truthy(content:match("^{"), content)
        end
      end

      -- completions: a GBNF grammar (llama.cpp's field) and json_schema
      local G = 'root ::= "yes" | "no" | "maybe " [0-9]'
      for seed = 1, 4 do
        local st, j = call("POST", "/v1/completions", { model = id, prompt = "Answer:", max_tokens = 8, seed = seed,
                                                         grammar = G })
        assert.equal(200, st)
        local text = j.choices[1].text
        assert.truthy(text == "yes" or text == "no" or text:match("^maybe %d$"), text)
        local want = m:session { ctx = 1024 }:generate("Answer:", { max_tokens = 8, grammar = G,
          sampler = slm.sampler.chain { { "temp", 1 }, { "dist", seed = seed } } }, function() end)
        assert.equal(want, text)
        assert.equal("stop", j.choices[1].finish_reason)
      end
      local st, j = call("POST", "/v1/completions", encode_with_params { model = id, prompt = "Weather:",
        max_tokens = 60, temperature = 0, json_schema = "__WEATHER__" })
      assert.equal(200, st)
      local want = m:session { ctx = 1024 }:generate("Weather:", { max_tokens = 60, json_schema = WEATHER_PARAMS },
                                                      function() end)
      assert.equal(want, j.choices[1].text)
      -- streamed, the same text
      st, j = call("POST", "/v1/completions", encode_with_params { model = id, prompt = "Weather:", max_tokens = 60,
        temperature = 0, stream = true, response_format = { type = "json_schema",
        json_schema = { name = "w", schema = "__WEATHER__" } } })
      local parts = {}
      for _, e in ipairs(sse(j)) do if e ~= "[DONE]" then parts[#parts + 1] = e.choices[1].text end end
      assert.equal(want, table.concat(parts))
    end, 300)
  end)

  it("tools: calls in OpenAI's shape, streamed and whole, equal to sess:chat's; calls and results rendered back", function()
    local m, why = tool_model()
    if not m then return pending(why) end
    with_server({ model = m, template = "qwen3", ctx = 1024 }, function(srv, call)
      local id = srv.names[1]
      local args = { get_weather = {}, now = {} }
      local with_calls, with_text = 0, 0
      for seed = 1, 8 do
        -- auto, the opener made likelier: text, calls or both
        local body = { model = id, messages = MSGS, tools = TOOLS, max_tokens = 60, seed = seed,
                       logit_bias = { [tostring(OPEN)] = 4 } }
        local st, j = call("POST", "/v1/chat/completions", encode_with_params(body))
        assert.equal(200, st, cjson.encode(j))
        local msg = j.choices[1].message
        local reply, info = expected_chat(m, MSGS, { tools = CHAT_TOOLS, max_tokens = 60 },
          { { "logit_bias", { [OPEN] = 4 } }, { "temp", 1 }, { "dist", seed = seed } })
        local calls = msg.tool_calls or {}
        if #info.tool_call_problems == 0 then
          assert.equal(reply == "" and #calls > 0 and cjson.null or reply, msg.content)
        end
        assert.equal(#info.tool_calls, #calls)
        for k, c in ipairs(calls) do
          assert.truthy(c.id:match("^call_%x+$"))
          assert.equal("function", c.type)
          assert.equal(info.tool_calls[k].name, c["function"].name)
          assert.equal("string", type(c["function"].arguments))
          assert.same(info.tool_calls[k].arguments, cjson.decode(c["function"].arguments))
          table.insert(args[c["function"].name], (c["function"].arguments:gsub("\n", " ")))
        end
        local finish = j.choices[1].finish_reason
        if #calls > 0 then
          with_calls = with_calls + 1
          -- a reply cut by max_tokens (in a call or after it) says "length"
          local cut = info.stopped == "max_tokens" or info.stopped == "grammar_incomplete"
          assert.equal(cut and "length" or "tool_calls", finish)
        end
        if msg.content ~= cjson.null and msg.content ~= "" then with_text = with_text + 1 end

        -- streamed: content deltas and delta.tool_calls add up to the same message
        body.stream = true
        st, j = call("POST", "/v1/chat/completions", encode_with_params(body))
        assert.equal(200, st)
        local text, scalls, sfinish = {}, {}, nil
        for _, e in ipairs(sse(j)) do
          if e ~= "[DONE]" then
            local ch = e.choices[1]
            if ch.delta.content then text[#text + 1] = ch.delta.content end
            for _, tc in ipairs(ch.delta.tool_calls or {}) do
              assert.equal(#scalls, tc.index)
              scalls[#scalls + 1] = tc
            end
            if ch.finish_reason ~= cjson.null then sfinish = ch.finish_reason end
          end
        end
        assert.equal(msg.content == cjson.null and "" or msg.content, table.concat(text))
        assert.equal(#calls, #scalls)
        for k, tc in ipairs(scalls) do
          assert.equal(calls[k]["function"].name, tc["function"].name)
          assert.equal(calls[k]["function"].arguments, tc["function"].arguments)
          assert.truthy(tc.id:match("^call_%x+$"))
        end
        assert.equal(finish, sfinish)
      end
      assert.is_true(with_calls >= 3, "replies with calls: " .. with_calls)
      assert.is_true(with_text >= 2, "replies with text: " .. with_text)

      -- required, and a named function: one call, from the first token
      for seed = 1, 4 do
        local st, j = call("POST", "/v1/chat/completions", encode_with_params { model = id, messages = MSGS,
          tools = TOOLS, seed = seed, max_tokens = 80, tool_choice = "required" })
        assert.equal(200, st)
        local msg = j.choices[1].message
        assert.equal(1, #msg.tool_calls, cjson.encode(msg))
        assert.equal(cjson.null, msg.content)
        assert.equal("tool_calls", j.choices[1].finish_reason)
        table.insert(args[msg.tool_calls[1]["function"].name], (msg.tool_calls[1]["function"].arguments:gsub("\n", " ")))
        st, j = call("POST", "/v1/chat/completions", encode_with_params { model = id, messages = MSGS, tools = TOOLS,
          seed = seed, max_tokens = 80, tool_choice = { type = "function", ["function"] = { name = "get_weather" } } })
        assert.equal(200, st)
        msg = j.choices[1].message
        assert.equal(1, #msg.tool_calls)
        assert.equal("get_weather", msg.tool_calls[1]["function"].name)
        table.insert(args.get_weather, (msg.tool_calls[1]["function"].arguments:gsub("\n", " ")))
      end
      local n, vwhy = validate_all(args)
      if not n then return pending(vwhy) end
      assert.is_true(n >= 3 + 8, "calls validated: " .. n)

      -- tool_choice "none": no tools rendered, plain text
      local st, j = call("POST", "/v1/chat/completions", encode_with_params { model = id, messages = MSGS,
        tools = TOOLS, max_tokens = 10, temperature = 0, tool_choice = "none" })
      assert.equal(200, st)
      assert.equal(expected_chat(m, MSGS, { max_tokens = 10 }, { { "greedy" } }), j.choices[1].message.content)

      -- a history with calls and results: the prompt is slm.chat's rendering
      -- of the same conversation (as the qwen3 template renders it)
      local history = {
        { role = "user", content = "Weather in Paris?" },
        { role = "assistant", content = cjson.null, tool_calls = { { id = "call_1", type = "function",
          ["function"] = { name = "get_weather", arguments = '{"city": "Paris", "days": 2}' } } } },
        { role = "tool", tool_call_id = "call_1", content = "sunny" } }
      local as_chat = { history[1], { role = "assistant", content = "", tool_calls = {
                          { name = "get_weather", arguments = '{"city": "Paris", "days": 2}' } } },
                        { role = "tool", content = "sunny" } }
      local rendered = slm.chat.render("qwen3", as_chat, { tools = CHAT_TOOLS })
      assert.truthy(rendered:find('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}\n'
                                  .. "</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\nsunny\n"
                                  .. "</tool_response><|im_end|>\n<|im_start|>assistant\n", 1, true))
      st, j = call("POST", "/v1/chat/completions", encode_with_params { model = id, messages = history, tools = TOOLS,
        max_tokens = 12, temperature = 0, logit_bias = { [tostring(OPEN)] = -100 } })
      assert.equal(200, st, cjson.encode(j))
      assert.equal(#slm.chat.tokenize(m.tokenizer, as_chat, { template = "qwen3", tools = CHAT_TOOLS }),
                   j.usage.prompt_tokens)
      local want = expected_chat(m, as_chat, { tools = CHAT_TOOLS, max_tokens = 12 },
                                 { { "logit_bias", { [OPEN] = -100 } }, { "greedy" } })
      assert.equal(want, j.choices[1].message.content)
    end, 300)
  end)

  it("refuses bad response_format, grammar and tools requests with the right param", function()
    local m, why = tool_model()
    if not m then return pending(why) end
    local tool = { type = "function", ["function"] = { name = "f", parameters = { type = "object" } } }
    local cases_default = {   -- the default model's template (chatml) renders no tools
      { { tools = { tool } }, "tools", "unsupported_parameter", "does not render tools" },
      { { messages = { { role = "user", content = "a" }, { role = "tool", tool_call_id = "x", content = "r" } } },
        "messages[1]", "unsupported_parameter" },
    }
    with_server({}, function(srv, call)
      for i, c in ipairs(cases_default) do
        local body = { model = srv.names[1], messages = { { role = "user", content = "hi" } } }
        for k, v in pairs(c[1]) do body[k] = v end
        local st, j = call("POST", "/v1/chat/completions", body)
        assert.equal(400, st, "case " .. i)
        assert.equal(c[2], j.error.param, "case " .. i .. ": " .. j.error.message)
        assert.equal(c[3], j.error.code, "case " .. i)
        if c[4] then assert.truthy(j.error.message:find(c[4], 1, true), j.error.message) end
      end
    end)
    local C, P = "/v1/chat/completions", "/v1/completions"
    local msg = { { role = "user", content = "hi" } }
    local cases = {
      { C, { response_format = { type = "xml" } }, "response_format" },
      { C, { response_format = "json" }, "response_format" },
      { C, { response_format = { type = "json_schema" } }, "response_format" },
      { C, { response_format = { type = "json_schema", json_schema = { name = "a b", schema = {} } } }, "response_format" },
      { C, { response_format = { type = "json_schema", json_schema = { name = "n", schema = {}, extra = 1 } } },
        "response_format", "unknown_parameter" },
      { C, { response_format = { type = "json_schema", json_schema = { name = "n",
          schema = { type = "object", properties = { a = { ["not"] = { type = "string" } } } } } } },
        "response_format", "unsupported_parameter", "keyword 'not' is not supported (at #/properties/a)" },
      { P, { json_schema = { type = "number", minimum = 1 } }, "json_schema", "unsupported_parameter", "minimum" },
      { P, { grammar = "root ::= (" }, "grammar", "invalid_value", "grammar:1:" },
      { P, { grammar = 'root ::= "a"', json_schema = { type = "string" } }, "grammar", "invalid_value" },
      { C, { tools = TOOLS, response_format = { type = "json_object" } }, "tools", "invalid_value" },
      { C, { tools = { { type = "function" } } }, "tools" },
      { C, { tools = { { type = "function", ["function"] = { name = "f", parameters = { type = "object" },
                                                              bogus = true } } } }, "tools", "unknown_parameter" },
      { C, { tools = { { type = "function", ["function"] = { name = "bad name" } } } }, "tools", "invalid_value" },
      { C, { tools = { { type = "function", ["function"] = { name = "f", parameters = { type = "object",
          properties = { a = { ["if"] = {} } } } } } } }, "tools", "invalid_value", "'if' is not supported" },
      { C, { tools = TOOLS, tool_choice = "always" }, "tool_choice" },
      { C, { tools = TOOLS, tool_choice = { type = "function", ["function"] = { name = "nope" } } }, "tool_choice",
        "invalid_value", "no tool is named 'nope'" },
      { C, { tool_choice = "required" }, "tool_choice", "invalid_value" },
      { C, { tools = TOOLS, parallel_tool_calls = false }, "parallel_tool_calls", "unsupported_parameter" },
      { C, { tools = TOOLS, parallel_tool_calls = "no" }, "parallel_tool_calls", "invalid_type" },
      { C, { messages = { { role = "assistant", content = cjson.null, tool_calls = { { id = "c", type = "function",
          ["function"] = { name = "f", arguments = "not json" } } } } } }, "messages[0].tool_calls[0].function.arguments" },
      { C, { messages = { { role = "tool", content = "r" } } }, "messages[0].tool_call_id" },
      { C, { messages = { { role = "user", content = "a", tool_calls = {} } } }, "messages[0].tool_calls",
        "unsupported_parameter" },
      { C, { messages = { { role = "assistant", content = cjson.null } } }, "messages[0].content",
        "missing_required_parameter" },
    }
    with_server({ model = m, template = "qwen3", ctx = 1024 }, function(srv, call)
      for i, c in ipairs(cases) do
        local body = { model = srv.names[1] }
        if c[1] == C then body.messages = msg else body.prompt = "a" end
        for k, v in pairs(c[2]) do body[k] = v end
        local st, j = call("POST", c[1], encode_with_params(body))
        local where = "case " .. i .. " " .. cjson.encode(c[2]) .. ": " .. cjson.encode(j)
        assert.equal(400, st, where)
        assert.equal("invalid_request_error", j.error.type, where)
        assert.equal(c[3], j.error.param, where)
        if c[4] then assert.equal(c[4], j.error.code, where) end
        if c[5] then assert.truthy(j.error.message:find(c[5], 1, true), where) end
      end
      assert.equal(200, (call("GET", "/health")))
    end)
  end)
end)
