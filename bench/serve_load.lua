-- Load test of `slm serve` on loopback: CLIENTS concurrent streaming
-- clients, each sending REQUESTS chat-less completions one after the other.
-- Every response is checked against sess:generate alone on a fresh session
-- (greedy), and must end with finish_reason, usage and [DONE]. Prints the
-- aggregate generated tokens/s and the p50/p99 time to first token; exits 1
-- on any error or mismatch.
--
--   bin/slm bench/serve_load.lua [--clients 16] [--requests 20] [--tokens 32]
--                                [--parallel 4] [--model default] [--backend batcher]
--
-- The server is started as a child process (`bin/slm serve MODEL --port 0`,
-- under `timeout`), killed at the end.
local slm = require "slm"
require "slm.server"   -- lua-http's path (see lua/slm/server.lua)
local cjson = require "cjson"
local request = require "http.request"
local cqueues = require "cqueues"

local opt = { clients = 16, requests = 20, tokens = 32, parallel = 4, model = "default", backend = nil }
local i = 1
while i <= #arg do
  local k = arg[i]:match("^%-%-(%w+)$")
  if not k or opt[k] == nil and k ~= "backend" then error("unknown argument " .. arg[i], 0) end
  local v = arg[i + 1] or error("--" .. k .. " needs a value", 0)
  opt[k] = math.tointeger(tonumber(v)) or v
  i = i + 2
end

local here = arg[0]:match("^(.*)/bench/[^/]*$") or "."
local PROMPTS = { "ROMEO:", "JULIET:", "KING HENRY:", "First Citizen:", "To be", "O, ", "MENENIUS:", "What" }

-- references: sess:generate alone, greedy
local model = assert(slm.load(opt.model))
local want = {}
for k, p in ipairs(PROMPTS) do
  want[k] = model:session {}:generate(p, { max_tokens = opt.tokens }, function() end)
end

-- the server, a child process; its first stdout line gives the URL and pid
local cmd = string.format("exec timeout 300 %s/bin/slm serve %s --port 0 --quiet --parallel %d%s", here, opt.model,
                          opt.parallel, opt.backend and (" --backend " .. opt.backend) or "")
local child = assert(io.popen(cmd, "r"))
local line = child:read("l") or ""
local url, pid = line:match("listening on (http://[%d.:]+) .*pid (%d+)")
if not url then error("the server did not start: " .. line, 0) end

local ttft, errors, tokens, done = {}, {}, 0, 0
local cq = cqueues.new()
local t_start = cqueues.monotime()
for c = 1, opt.clients do
  cq:wrap(function()
    for r = 1, opt.requests do
      local k = (c * 7 + r) % #PROMPTS + 1
      local req = request.new_from_uri(url .. "/v1/completions")
      req.headers:upsert(":method", "POST")
      req:set_body(cjson.encode { model = opt.model, prompt = PROMPTS[k], max_tokens = opt.tokens, temperature = 0,
                                  stream = true, stream_options = { include_usage = true } })
      local t0 = cqueues.monotime()
      local h, st = req:go(60)
      if not h or h:get(":status") ~= "200" then
        errors[#errors + 1] = "status " .. tostring(h and h:get(":status") or st)
      else
        local text, first, usage, finish, ended = {}, nil, nil, nil, false
        local buf = ""
        while true do
          local chunk, rerr = st:get_next_chunk(30)
          if not chunk then
            if rerr then errors[#errors + 1] = "read: " .. tostring(rerr) end
            break
          end
          buf = buf .. chunk
          while true do
            local a, b = buf:find("\n\n", 1, true)
            if not a then break end
            local data = buf:sub(1, a - 1):match("^data: (.*)$")
            buf = buf:sub(b + 1)
            if data == "[DONE]" then ended = true
            elseif data then
              local ev = cjson.decode(data)
              if ev.usage then usage = ev.usage end
              local ch = ev.choices[1]
              if ch and ch.text ~= "" and not first then first = cqueues.monotime() - t0 end
              if ch then text[#text + 1] = ch.text end
              if ch and ch.finish_reason ~= cjson.null then finish = ch.finish_reason end
            end
          end
        end
        local got = table.concat(text)
        if not ended or not usage or not finish then
          errors[#errors + 1] = "incomplete stream"
        elseif got ~= want[k] then
          errors[#errors + 1] = string.format("prompt %q: got %q, want %q", PROMPTS[k], got, want[k])
        else
          tokens = tokens + usage.completion_tokens
          ttft[#ttft + 1] = first or (cqueues.monotime() - t0)
        end
      end
      done = done + 1
    end
  end)
end
local ok, err = cq:loop(600)
local elapsed = cqueues.monotime() - t_start
os.execute("kill " .. pid)
child:close()
if not ok then error(err, 0) end

table.sort(ttft)
local function pct(p) return ttft[math.max(1, math.ceil(p * #ttft))] or 0 end
print(string.format("%d clients x %d requests, %d tokens each, %d slots: %d responses, %d errors", opt.clients,
                    opt.requests, opt.tokens, opt.parallel, done, #errors))
print(string.format("aggregate %.1f generated tok/s (%d tokens in %.2f s); time to first token p50 %.1f ms, p99 %.1f ms",
                    tokens / elapsed, tokens, elapsed, pct(0.5) * 1000, pct(0.99) * 1000))
for k = 1, math.min(#errors, 5) do print("error: " .. errors[k]) end
os.exit(#errors == 0 and done == opt.clients * opt.requests and 0 or 1)
