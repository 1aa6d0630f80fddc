--- slm.server.cli: the `slm serve` command (lua/slm/cli.lua hands it its
-- arguments unparsed).
--
--   slm serve MODEL [--host 127.0.0.1] [--port 8080] [--parallel N] [--ctx N] [--kv-type T]
--             [--api-key KEY] [--name ID] [--template NAME] [--max-body BYTES]
--             [--backend batcher|round-robin] [--threads N] [--quiet]
--
-- Prints "slm serve: listening on http://HOST:PORT (model ID, pid N)" on
-- stdout once bound (--port 0 picks a free port: read it from that line),
-- then one line per request on stderr unless --quiet. SIGINT/SIGTERM end it.
local M = {}

M.usage = "serve MODEL [--host 127.0.0.1] [--port 8080] [--parallel N] [--ctx N] [--kv-type f16|q8_0|q4_0|f32] [--api-key KEY] [--name ID] "
  .. "[--template NAME] [--max-body BYTES] [--backend batcher|round-robin] [--threads N] [--quiet]"
M.help = "an OpenAI-compatible HTTP server (docs/SERVER.md): completions, chat, embeddings, streaming"

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local FLAGS = {
  ["--host"] = { "host", "str" }, ["--port"] = { "port", "int", 0 }, ["--parallel"] = { "parallel", "int", 1 },
  ["-np"] = { "parallel", "int", 1 }, ["--ctx"] = { "ctx", "int", 2 }, ["-c"] = { "ctx", "int", 2 }, ["--kv-type"] = { "kv_type", "str" },
  ["--api-key"] = { "api_key", "str" }, ["--name"] = { "name", "str" }, ["--template"] = { "template", "str" },
  ["--max-body"] = { "max_body", "int", 1 }, ["--threads"] = { "threads", "int", 1 }, ["-t"] = { "threads", "int", 1 },
  ["--backend"] = { "backend", "str" }, ["--quiet"] = { "quiet", "bool" }, ["--help"] = { "help", "bool" }, ["-h"] = { "help", "bool" },
}

--- main(argv, resolve): resolve(name) -> path (the CLI's model resolution:
-- "default", files, pulled registry names)
function M.main(argv, resolve)
  local pos, opt = require("slm.flags").parse(argv, FLAGS, fail,
    { unknown = "unknown option '%s' (usage: slm " .. M.usage .. ")", nonempty = true })
  if opt.help then io.write("usage: slm ", M.usage, "\n  ", M.help, "\n") return end
  if #pos ~= 1 then fail("usage: slm %s", M.usage) end
  if opt.port and opt.port > 65535 then fail("option --port must be at most 65535 (got %d)", opt.port) end
  local slm = require "slm"
  if opt.threads then slm.threads(opt.threads) end
  local path = resolve(pos[1])
  local model, err = slm.load(path)
  if not model then fail("%s", err) end
  if not model.tokenizer and model.hp.n_vocab == 256 then model.tokenizer = slm.tokenizer.bytes() end
  local log = not opt.quiet and function(line) io.stderr:write("slm serve: ", line, "\n") end or nil
  local ok, srv = pcall(require("slm.server").new, {
    model = model, host = opt.host, port = opt.port, parallel = opt.parallel, ctx = opt.ctx, kv_type = opt.kv_type,
    api_key = opt.api_key, name = opt.name or (pos[1] == "default" and "default" or nil), template = opt.template,
    max_body = opt.max_body, log = log, backend = opt.backend,
  })
  if not ok then
    local msg = tostring(srv):gsub("^.-:%d+: ", "")
    -- the sessions' own message, said as the flag's
    fail("%s", msg:match("kv_type.*$") and "--kv-type" .. msg:match("kv_type(.*)$") or msg)
  end
  local lok, lerr = pcall(srv.listen, srv)
  if not lok then fail("%s", tostring(lerr):gsub("^.-:%d+: ", "")) end
  -- SIGINT/SIGTERM: stop cleanly (the loop polls a signal listener)
  local signal = require "cqueues.signal"
  signal.block(signal.SIGINT, signal.SIGTERM)
  local listener = signal.listen(signal.SIGINT, signal.SIGTERM)
  srv:spawn(function()
    while not srv.stopped do
      if listener:wait(1) then srv:stop() end
    end
  end)
  local pid = "?"
  local f = io.open("/proc/self/stat")
  if f then pid = f:read("l"):match("^(%d+)") or "?" f:close() end
  io.write(string.format("slm serve: listening on %s (model %s, %d slot%s of %d tokens, pid %s)\n", srv:url(),
                         srv.names[1], srv.sched and srv.sched.n_slots or 0,
                         srv.sched and srv.sched.n_slots == 1 and "" or "s", srv.n_ctx, pid))
  io.stdout:flush()
  srv:run()
end

return M
