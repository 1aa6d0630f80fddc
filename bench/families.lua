--- The 2026 families at their smallest real shapes: a Qwen3-0.6B-shaped
-- random model (vocab 151936, dim 1024, 28 layers, 16 q / 8 kv heads of
-- 128, ffn 3072, tied, rope base 1e6, eps 1e-6) and a gemma-3-270m-shaped
-- one (vocab 262144, dim 640, 18 layers, 4 q / 1 kv head of 256, ffn 2048,
-- sliding window 512 on 5 layers of every 6, rope base 1e6 global / 1e4
-- local, tied), and a Qwen3-MoE-shaped one (dim 1024, 12 layers, 16 q / 4
-- kv heads of 128, 8 experts of width 768, 2 per token, tied), written by
-- slm.testing.random_model in the reference
-- converter's layout into $SLM_BENCH_DIR (default /tmp/slm-bench; made
-- once, reused): prompt (pp128) and decode (tg) tokens/s, Lua share and
-- peak RSS per file (bench/llama.lua in a child process), the weight bytes
-- a MoE decode step reads beside its active parameters' bytes, then the
-- peak RSS of one 4096-token gemma session with and without its
-- sliding-window ring.
--   bin/slm bench/families.lua [--compare] [threads=2] [dtype ...]   (default q8_0)
--   bin/slm bench/families.lua --session MODEL.gguf ring|full [threads]  (one line)
--   bin/slm bench/families.lua --moe-bytes MODEL.gguf [threads]          (one line)
-- A file slm cannot load yet gets "?" and the loader's message; its row
-- fills in once slm runs the architecture. "bw %" and --compare (the
-- reference's llama-bench on the same files, a second table of both sides)
-- as in bench/run.lua, code in bench/common.lua; under --compare the
-- session table also has the reference's peak RSS for the same token count.
local common = require "bench.common"

local MODELS = {
  { label = "qwen3-0.6b", opts = { arch = "qwen3", vocab = 151936, dim = 1024, n_layer = 28, n_head = 16,
                                   n_head_kv = 8, head_dim = 128, n_ff = 3072, tied = true, rope_base = 1e6,
                                   eps = 1e-6, ctx = 40960, name = "qwen3-0.6b-random" } },
  -- a Qwen3-MoE shape scaled to this machine: 8 experts, 2 per token
  { label = "qwen3moe-8x2", opts = { arch = "qwen3moe", vocab = 151936, dim = 1024, n_layer = 12, n_head = 16,
                                     n_head_kv = 4, head_dim = 128, n_ff = 3072, n_ff_exp = 768, n_expert = 8,
                                     n_expert_used = 2, tied = true, rope_base = 1e6, eps = 1e-6, ctx = 40960,
                                     name = "qwen3moe-8x2-random" } },
  { label = "gemma3-270m", opts = { arch = "gemma3", vocab = 262144, dim = 640, n_layer = 18, n_head = 4,
                                    n_head_kv = 1, head_dim = 256, n_ff = 2048, tied = true, window = 512,
                                    rope_base = 1e6, rope_base_swa = 1e4, eps = 1e-6, ctx = 32768,
                                    name = "gemma3-270m-random" } },
}
-- The session: ctx 4096 filled by a prompt of 4032 tokens (batches of 512,
-- the reference's ubatch) and 64 decoded tokens.
local SESSION = { ctx = 4096, gen = 64, batch = 512 }

-- child: one gemma session; ring = false asks for a full-length KV cache on
-- every layer (model:session's swa_ring option)
local function session_run(path, ring, threads)
  local slm = require "slm"
  local clock = require("slm.bench").clock
  slm.threads(threads)
  local model, err = slm.load(path)
  if not model then
    print("error=" .. err)
    return
  end
  local ok, msg = pcall(function()
    local nv, n_prompt = model.hp.n_vocab, SESSION.ctx - SESSION.gen
    local ids = {}
    for i = 1, n_prompt do ids[i] = (i * 7919) % nv end
    local opts = { ctx = SESSION.ctx, batch = SESSION.batch }
    if not ring then opts.swa_ring = false end
    local s = model:session(opts)
    local t0 = clock()
    s:eval(ids)
    local pp = n_prompt / (clock() - t0)
    t0 = clock()
    for i = 1, SESSION.gen do s:eval { (i * 31) % nv } end
    local tg = SESSION.gen / (clock() - t0)
    return string.format("pp=%.1f tg=%.2f", pp, tg)
  end)
  if not ok then
    print("error=" .. tostring(msg):gsub("\n", " "))
    return
  end
  print(string.format("%s rss_mb=%.1f", msg, require("slm.bench").peak_rss_kb() / 1024))
end

-- child: weight bytes the matmuls read per decoded token (after a short
-- prompt, over 32 tokens), beside the active parameters' bytes
local function moe_bytes_run(path, threads)
  local slm = require "slm"
  slm.threads(threads)
  local model = assert(slm.load(path))
  local s = model:session { ctx = 256 }
  local nv = model.hp.n_vocab
  local ids = {}
  for i = 1, 16 do ids[i] = (i * 7919) % nv end
  s:eval(ids)
  local ops = slm.core.ops
  ops.matmul_bytes(true)
  local n = 32
  for i = 1, n do s:eval { (i * 31) % nv } end
  print(string.format("read_mb=%.2f active_mb=%.2f", ops.matmul_bytes(true) / n / 1e6,
                      common.weight_bytes(path) / 1e6))
end

if arg[1] == "--session" then
  session_run(arg[2], arg[3] ~= "full", tonumber(arg[4]) or 2)
  return
elseif arg[1] == "--moe-bytes" then
  moe_bytes_run(arg[2], tonumber(arg[3]) or 2)
  return
end

local testing = require "slm.testing"
local b = common.setup(arg, "families")
if #b.dtypes == 0 then b.dtypes = { "q8_0" } end

-- key=value pairs of a child's output line; v.error keeps the whole message
local function parse(out)
  local v = {}
  for k, x in out:gmatch("([%w_]+)=([%d.?]+)") do v[k] = x end
  v.error = out:match("error=([^\n]*)")
  if v.error then v.error = v.error:gsub("^[^:]*%.gguf: ", "") end   -- the path is on the row already
  return v
end

local function model_path(m, dt)
  local path = string.format("%s/%s-%s.gguf", b.dir, m.label, dt)
  if not common.exists(path) then
    local o = { path = path, dtype = dt }
    for k, x in pairs(m.opts) do o[k] = x end
    testing.random_model(o)
  end
  return path
end

b:bandwidth()
print(string.format("2026 families, random models at the real shapes, %d threads (bench/families.lua); "
                    .. "read bandwidth %s GB/s", b.threads, b.bw and string.format("%.1f", b.bw) or "?"))
print(string.format("%-12s %-6s %9s %9s %6s %8s %8s %9s", "model", "dtype", "pp128 t/s", "tg t/s", "bw %", "MB",
                    "lua %", "RSS MB"))
local rows = {}
for _, m in ipairs(MODELS) do
  for _, dt in ipairs(b.dtypes) do
    local path = model_path(m, dt)
    local r = b:measure({ dt = dt, label = m.label .. " " .. dt, path = path }, function(r)
      local out = common.run(string.format("%s %s/bench/llama.lua %s 128 64 %d", b.slm, b.here, path, b.threads))
      local v = parse(out)
      if not (v.pp or v.error) then io.stderr:write(out) end
      r.v = v
      return tonumber(v.pp), tonumber(v.tg)
    end)
    rows[#rows + 1] = r
    local v = r.v
    print(string.format("%-12s %-6s %9s %9s %6s %8.1f %8s %9s%s", m.label, dt, r.pp or "?", r.tg or "?",
                        b:frac(r.tg, r.bytes), common.size(path) / 1048576, v.lua_share or "?", v.rss_mb or "?",
                        v.error and "  slm: " .. v.error or ""))
  end
end
b:compare_table(rows, "model")

-- what a MoE decode step reads: only the chosen experts' rows
do
  local path = model_path(MODELS[2], "q8_0")
  local v = parse(common.run(string.format("%s %s/bench/families.lua --moe-bytes %s %d", b.slm, b.here, path,
                                           b.threads)))
  print()
  print(string.format("qwen3moe-8x2 q8_0: weights read per decoded token %s MB (the matmuls' count), active "
                      .. "parameters %s MB (attention, routers, 2 of 8 experts, head), ratio %s", v.read_mb or "?",
                      v.active_mb or "?", (v.read_mb and v.active_mb) and
                      string.format("%.3f", tonumber(v.read_mb) / tonumber(v.active_mb)) or "?"))
end

-- Peak RSS of one 4096-token gemma session: a child process per row, so
-- that each peak is that session's (weights mapped and read + KV cache +
-- scratch). With the ring a sliding layer keeps window + batch - 1 rows of
-- K and V instead of ctx; the expected f16 cache sizes are printed beside.
local gemma = MODELS[3]
local path = model_path(gemma, "q8_0")
local o = gemma.opts
local row_kb = 2 * o.n_head_kv * o.head_dim * 2 / 1024                 -- K and V of one position, f16
local n_global = o.n_layer // 6                                        -- layer il slides iff il % 6 < 5
local n_swa = o.n_layer - n_global
local full_mb = o.n_layer * SESSION.ctx * row_kb / 1024
local ring_mb = (n_global * SESSION.ctx + n_swa * (o.window + SESSION.batch - 1)) * row_kb / 1024
print()
print(string.format("gemma3-270m q8_0, one session of ctx %d: a %d-token prompt (batch %d), then %d decoded "
                    .. "tokens, %d threads", SESSION.ctx, SESSION.ctx - SESSION.gen, SESSION.batch, SESSION.gen,
                    b.threads))
print(string.format("%-26s %9s %10s %9s %9s", "session", "RSS MB", "KV MB est", "pp t/s", "tg t/s"))
for _, row in ipairs { { "sliding-window ring", "ring", ring_mb }, { "swa_ring = false", "full", full_mb } } do
  local out = common.run(string.format("%s %s/bench/families.lua --session %s %s %d", b.slm, b.here, path, row[2],
                                       b.threads))
  local v = parse(out)
  print(string.format("%-26s %9s %10.1f %9s %9s%s", row[1], v.rss_mb or "?", row[3], v.pp or "?", v.tg or "?",
                      v.error and "  slm: " .. v.error or ""))
end
if b.compare then
  -- the reference in one process for the same tokens (-pg: a 4032-token
  -- prompt then 64 generated, context 4096), with its own SWA cache
  local out = common.run(string.format("/usr/bin/time -f 'rss_kb=%%M' %s -m %s -t %d -p 0 -n 0 -pg %d,%d -r 1 "
                                       .. "-o csv 2>&1 >/dev/null", b.ref, path, b.threads,
                                       SESSION.ctx - SESSION.gen, SESSION.gen))
  local kb = tonumber(out:match("rss_kb=(%d+)"))
  print(string.format("%-26s %9s %10s %9s %9s", "reference (llama-bench)", kb and string.format("%.1f", kb / 1024)
                      or "?", "", "", ""))
end
