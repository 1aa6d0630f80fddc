-- `slm serve` as a child process, driven by other clients: the official
-- `openai` npm client (installed from npm into a temporary folder; skipped,
-- saying why, when npm or the network is absent) and a small run of the
-- load test bench/serve_load.lua. Every process runs under `timeout`.
local slm = require "slm"
local cjson = require "cjson"

local model = assert(slm.load("default"))

-- npm and node run without the sanitizer suite's preloaded runtimes (env -u
-- LD_PRELOAD): they are not ours, and their leaks would read as failures
local function sh(cmd)
  local p = io.popen(cmd .. " 2>&1")
  local out = p:read("a")
  local ok, _, code = p:close()
  return ok, out, code
end

local function greedy(prompt, opts)
  return model:session {}:generate(prompt, opts, function() end)
end

-- a temporary folder with the openai npm package installed, or nil and why
-- the test is skipped
local function npm_openai()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -p " .. dir))
  local ok, out = sh(string.format("cd %s && timeout -k 5 240 env -u LD_PRELOAD npm install --no-audit --no-fund "
                                   .. "--no-update-notifier --silent openai", dir))
  if ok then return dir end
  os.execute("rm -rf " .. dir)
  return nil, "npm install openai failed (offline?): the openai client test is skipped: " .. out:sub(1, 200)
end

describe("slm serve with other clients", function()
  it("answers the official openai npm client: completions, chat, streaming, embeddings, models, errors", function()
    if not sh("command -v npm >/dev/null && command -v node >/dev/null") then
      pending("npm or node is not installed: the openai client test is skipped")
      return
    end
    local dir, why_not = npm_openai()
    if not dir then return pending(why_not) end
    local ok, out
    local child = assert(io.popen("exec timeout 300 bin/slm serve default --port 0 --quiet --api-key test-key", "r"))
    local line = child:read("l") or ""
    local url, pid = line:match("listening on (http://[%d.:]+) .*pid (%d+)")
    local res
    if url then
      -- the script sits beside node_modules so that its import finds them
      os.execute(string.format("cp spec/server/openai_client.mjs %s/", dir))
      ok, out = sh(string.format("timeout 120 env -u LD_PRELOAD node %s/openai_client.mjs %s default", dir, url))
      os.execute("kill " .. pid)
    end
    child:close()
    os.execute("rm -rf " .. dir)
    assert(url, "the server did not start: " .. line)
    assert(ok, "the node script failed: " .. out)
    res = cjson.decode(out:match("([^\n]+)\n*$"))

    local want = greedy("ROMEO:", { max_tokens = 20 })
    assert.equal(want, res.completion.text)
    assert.equal("length", res.completion.finish)
    assert.equal("text_completion", res.completion.object)
    assert.equal(20, res.completion.usage.completion_tokens)
    assert.equal(want, res.completion_stream.text)

    local msgs = { { role = "user", content = "Who art thou?" } }
    local want_chat = model:session {}:chat(msgs, { max_tokens = 20 })
    assert.equal(want_chat, res.chat.content)
    assert.equal("assistant", res.chat.role)
    assert.equal("chat.completion", res.chat.object)
    assert.equal(want_chat, res.chat_stream.content)
    assert.equal("length", res.chat_stream.finish)
    assert.equal(20, res.chat_stream.usage.completion_tokens)

    -- the client decoded the base64 floats: they are model:embed's
    local e = model:embed("hello there"):totable()
    assert.equal(2, res.embeddings.n)
    assert.equal(#e, res.embeddings.dim)
    for i = 1, 4 do assert.near(e[i], res.embeddings.first[i], 1e-6) end
    assert.same({ "default" }, res.models)

    assert.equal(404, res.errors.unknown_model.status)
    assert.equal("model_not_found", res.errors.unknown_model.code)
    assert.equal(400, res.errors.bad_max_tokens.status)
    assert.equal("max_tokens", res.errors.bad_max_tokens.param)
    assert.equal(400, res.errors.empty_messages.status)
    assert.equal(400, res.errors.tools.status)
    assert.equal("unsupported_parameter", res.errors.tools.code)
  end)

  it("answers the openai client's structured output and tool calls (create, parse, stream helpers)", function()
    if not sh("command -v npm >/dev/null && command -v node >/dev/null") then
      pending("npm or node is not installed: the openai client test is skipped")
      return
    end
    local helpers = require "spec.helpers"
    local path, why = helpers.tool_model_path()
    if not path then return pending(why) end
    local dir, why_not = npm_openai()
    if not dir then return pending(why_not) end
    local ok, out
    local SCHEMA = '{"type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": '
                   .. '"integer", "minimum": 1, "maximum": 7}}, "required": ["city", "days"], "additionalProperties": false}'
    local child = assert(io.popen("exec timeout 300 bin/slm serve " .. path .. " --template qwen3 --ctx 1024 --port 0 "
                                  .. "--quiet --api-key test-key --name tools", "r"))
    local line = child:read("l") or ""
    local url, pid = line:match("listening on (http://[%d.:]+) .*pid (%d+)")
    if url then
      os.execute(string.format("cp spec/server/openai_structured.mjs %s/", dir))
      ok, out = sh(string.format("timeout 120 env -u LD_PRELOAD node %s/openai_structured.mjs %s tools '%s'", dir, url, SCHEMA))
      os.execute("kill " .. pid)
    end
    child:close()
    os.execute("rm -rf " .. dir)
    assert(url, "the server did not start: " .. line)
    assert(ok, "the node script failed: " .. out)
    local res = cjson.decode(out:match("([^\n]+)\n*$"))

    -- expected: sess:chat with the same constraint on a fresh session (greedy)
    local m = assert(slm.load(path))
    local msgs = { { role = "user", content = "Weather in Paris?" } }
    local function chat(o)
      o.template = "qwen3"
      return m:session { ctx = 1024 }:chat(msgs, o)
    end
    local want = chat { json_schema = SCHEMA, max_tokens = 60 }
    assert.equal(want, res.schema.content)
    assert.equal("stop", res.schema.finish)
    assert.same(cjson.decode(want), res.schema_parsed)

    local tools = { { name = "get_weather", description = "Weather of a city", parameters = SCHEMA } }
    local _, info = chat { tools = tools, tool_choice = "required", max_tokens = 80 }
    assert.equal(1, #info.tool_calls)
    assert.equal("tool_calls", res.tool.finish)
    assert.equal(cjson.null, res.tool.content)
    assert.equal(1, #res.tool.calls)
    local c = res.tool.calls[1]
    assert.truthy(c.id:match("^call_%x+$"))
    assert.equal("function", c.type)
    assert.equal("get_weather", c.name)
    assert.same(info.tool_calls[1].arguments, cjson.decode(c.arguments))
    assert.same(info.tool_calls[1].arguments, c.parsed)
    assert.same({ { name = c.name, arguments = c.arguments } }, res.tool_stream.calls)
    assert.equal("tool_calls", res.tool_stream.finish)

    -- the call and its result rendered back: the prompt is slm.chat's
    local hist = { msgs[1], { role = "assistant", content = "", tool_calls = { { name = "get_weather",
                   arguments = c.arguments } } }, { role = "tool", content = "sunny" } }
    assert.equal(#slm.chat.tokenize(m.tokenizer, hist, { template = "qwen3", tools = tools }),
                 res.back.usage.prompt_tokens)

    assert.equal(400, res.bad_schema.status)
    assert.equal("response_format", res.bad_schema.param)
    assert.equal("unsupported_parameter", res.bad_schema.code)
    assert.truthy(res.bad_schema.message:find("format email is not supported", 1, true))
  end)

  it("serves concurrent streaming clients, every response equal to sess:generate (bench/serve_load.lua, small)", function()
    for _, backend in ipairs { "batcher", "round-robin" } do
      local ok, out = sh("timeout 240 bin/slm bench/serve_load.lua --clients 6 --requests 3 --tokens 24 --parallel 3 "
                         .. "--backend " .. backend)
      assert(ok, out)
      assert.truthy(out:find("6 clients x 3 requests, 24 tokens each, 3 slots: 18 responses, 0 errors", 1, true), out)
      assert.truthy(out:find("(432 tokens in", 1, true), out)
    end
  end)
end)
