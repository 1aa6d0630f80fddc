--- `make bench`: one table of decode/prompt speed and memory for the
-- SmolLM2-135M-shaped random model (vocab 49152, dim 576, 30 layers,
-- 9 heads / 3 kv heads, ffn 1536, tied) in F16, Q8_0, Q4_0 and Q4_K,
-- written by slm.testing.random_model into $SLM_BENCH_DIR (default
-- /tmp/slm-bench; made once, reused), then the other benchmark scripts.
--   bin/slm bench/run.lua [threads=2] [dtype ...]
local testing = require "slm.testing"

local threads = tonumber(arg[1]) or 2
local dtypes = { table.unpack(arg, 2) }
if #dtypes == 0 then dtypes = { "f16", "q8_0", "q4_0", "q4_k" } end
local dir = os.getenv("SLM_BENCH_DIR") or "/tmp/slm-bench"
os.execute("mkdir -p " .. dir)

local here = arg[0]:match("^(.*)/bench/run%.lua$") or "."
local slm_cmd = here .. "/bin/slm"

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
end

print(string.format("SmolLM2-135M-shaped random model, %d threads (bench/llama.lua)", threads))
print(string.format("%-6s %9s %9s %10s %8s %9s", "dtype", "pp128 t/s", "tg t/s", "MB", "lua %", "RSS MB"))
for _, dt in ipairs(dtypes) do
  local path = string.format("%s/smol135m-%s.gguf", dir, dt)
  if not exists(path) then
    testing.random_model { path = path, dtype = dt, vocab = 49152, dim = 576, n_layer = 30,
                           n_head = 9, n_head_kv = 3, n_ff = 1536, tied = true, ctx = 2048,
                           name = "smol135m-random" }
  end
  local size = 0
  local f = io.open(path, "rb")
  if f then size = f:seek("end") f:close() end
  local p = io.popen(string.format("%s %s/bench/llama.lua %s 128 64 %d", slm_cmd, here, path, threads))
  local out = p:read("a")
  p:close()
  local pp, tg = out:match("pp=([%d.]+)"), out:match("tg=([%d.]+)")
  local share, rss = out:match("lua_share=([%d.]+)"), out:match("rss_mb=([%d.]+)")
  if not pp then io.stderr:write(out) end
  print(string.format("%-6s %9s %9s %10.1f %8s %9s", dt, pp or "?", tg or "?", size / 1048576,
                      share or "?", rss or "?"))
end

print()
os.execute(string.format("BUILD=%s lua5.4 %s/bench/tokenizer.lua", os.getenv("BUILD") or "build", here))
