--- `make bench`: one table of decode/prompt speed and memory for the
-- SmolLM2-135M-shaped random model (vocab 49152, dim 576, 30 layers,
-- 9 heads / 3 kv heads, ffn 1536, tied) in F16, Q8_0, Q4_0 and Q4_K,
-- written by slm.testing.random_model into $SLM_BENCH_DIR (default
-- /tmp/slm-bench; made once, reused), then the other benchmark scripts.
--   bin/slm bench/run.lua [--compare] [threads=2] [dtype ...]
--
-- The tg column "bw %" is the fraction of the memory bandwidth measured on
-- the spot (bench/bandwidth.c: a streaming read of 512 MB on `threads`
-- threads, best of 5, before and after the runs) that decode achieves:
-- bytes of weights read per token (every tensor, the token embedding only
-- when it doubles as the output head; the KV cache is left out) x tok/s.
--
-- --compare: SLM_REF_BENCH names the reference's llama-bench; it runs on
-- the same GGUF files (-p 128 -n 64, -r 1 per round), alternating with
-- slm's runs (SLM_COMPARE_ROUNDS rounds, default 2, best of each side), and
-- a second table gives both sides, slm/ref ratios and both bw fractions.
local testing = require "slm.testing"
local gguf = require "slm.gguf"

local args, compare = {}, false
for _, a in ipairs(arg) do
  if a == "--compare" then compare = true else args[#args + 1] = a end
end
local threads = tonumber(args[1]) or 2
local dtypes = { table.unpack(args, 2) }
if #dtypes == 0 then dtypes = { "f16", "q8_0", "q4_0", "q4_k" } end
local dir = os.getenv("SLM_BENCH_DIR") or "/tmp/slm-bench"
os.execute("mkdir -p " .. dir)
local ref = os.getenv("SLM_REF_BENCH")
if compare and not (ref and ref ~= "") then
  io.stderr:write("bench/run.lua --compare: set SLM_REF_BENCH to the reference's llama-bench\n")
  os.exit(2)
end
local rounds = compare and (tonumber(os.getenv("SLM_COMPARE_ROUNDS")) or 2) or 1

local here = arg[0]:match("^(.*)/bench/run%.lua$") or "."
local slm_cmd = here .. "/bin/slm"
local build = os.getenv("BUILD") or "build"
if not build:match("^/") then build = here .. "/" .. build end

local function exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
end

local function run(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

-- GB/s of a streaming read on `threads` threads (nil if it cannot be built)
local bw_bin = build .. "/bench_bandwidth"
local function bandwidth()
  if not exists(bw_bin) then
    os.execute(string.format("cc -O2 -mavx2 -std=c11 -D_GNU_SOURCE %s/bench/bandwidth.c -lpthread -o %s",
                             here, bw_bin))
  end
  return tonumber(run(string.format("%s %d 512 5 2>/dev/null", bw_bin, threads)):match("bw_gbs=([%d.]+)"))
end

-- bytes of weights a decode step reads: every tensor, except the token
-- embedding when a separate output head exists (then one row is read)
local function weight_bytes(path)
  local f = assert(gguf.open(path))
  local total, embd, has_output = 0, 0, false
  for _, t in ipairs(f.tensors) do
    total = total + t.bytes
    if t.name == "token_embd.weight" then embd = t.bytes end
    if t.name == "output.weight" then has_output = true end
  end
  f:close()
  return has_output and total - embd or total
end

-- the reference's pp128 and tg64 tok/s on one file (one repetition)
local function ref_run(path)
  local out = run(string.format("%s -m %s -t %d -p 128 -n 64 -r 1 -o csv 2>/dev/null", ref, path, threads))
  local cols, pp, tg = nil, nil, nil
  for line in out:gmatch("[^\n]+") do
    local f = {}
    for v in (line .. ","):gmatch('"?([^,"]*)"?,') do f[#f + 1] = v end
    if not cols then
      cols = {}
      for k, v in ipairs(f) do cols[v] = k end
    elseif cols.avg_ts then
      local ts = tonumber(f[cols.avg_ts])
      if tonumber(f[cols.n_prompt]) > 0 then pp = ts else tg = ts end
    end
  end
  if not (pp and tg) then io.stderr:write("reference bench failed:\n" .. out) end
  return pp, tg
end

local function best(a, b)
  if not a then return b end
  if not b then return a end
  return math.max(a, b)
end

local bw = bandwidth()
-- decode's share of the measured bandwidth, as "NN%"
local function frac(tg, bytes)
  return (tg and bw) and string.format("%.0f%%", 100 * tg * bytes / (bw * 1e9)) or "?"
end
print(string.format("SmolLM2-135M-shaped random model, %d threads (bench/llama.lua); read bandwidth %s GB/s",
                    threads, bw and string.format("%.1f", bw) or "?"))
print(string.format("%-6s %9s %9s %6s %10s %8s %9s", "dtype", "pp128 t/s", "tg t/s", "bw %", "MB", "lua %", "RSS MB"))
local rows = {}
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
  local r = { dt = dt, bytes = weight_bytes(path) }
  for _ = 1, rounds do
    local out = run(string.format("%s %s/bench/llama.lua %s 128 64 %d", slm_cmd, here, path, threads))
    local pp, tg = tonumber(out:match("pp=([%d.]+)")), tonumber(out:match("tg=([%d.]+)"))
    if not pp then io.stderr:write(out) end
    r.pp, r.tg = best(r.pp, pp), best(r.tg, tg)
    r.share, r.rss = out:match("lua_share=([%d.]+)") or r.share, out:match("rss_mb=([%d.]+)") or r.rss
    if compare then
      local rpp, rtg = ref_run(path)
      r.ref_pp, r.ref_tg = best(r.ref_pp, rpp), best(r.ref_tg, rtg)
    end
  end
  rows[#rows + 1] = r
  print(string.format("%-6s %9s %9s %6s %10.1f %8s %9s", dt, r.pp or "?", r.tg or "?",
                      frac(r.tg, r.bytes), size / 1048576, r.share or "?", r.rss or "?"))
end

if compare then
  bw = best(bw, bandwidth())   -- frac() below sees the best of both probes
  local function num(v, fmt) return v and string.format(fmt, v) or "?" end
  local function ratio(a, b) return (a and b and b > 0) and string.format("%.2f", a / b) or "?" end
  print()
  print(string.format("slm vs reference (%s), same files, %d threads, %d alternating rounds, best of each;",
                      ref, threads, rounds))
  print(string.format("measured read bandwidth %s GB/s", num(bw, "%.1f")))
  print(string.format("%-6s %8s %8s %6s | %8s %8s %6s | %8s %7s %7s", "dtype", "pp slm", "pp ref", "ratio",
                      "tg slm", "tg ref", "ratio", "MB/tok", "bw slm", "bw ref"))
  for _, r in ipairs(rows) do
    print(string.format("%-6s %8s %8s %6s | %8s %8s %6s | %8.1f %7s %7s", r.dt, num(r.pp, "%.1f"),
                        num(r.ref_pp, "%.1f"), ratio(r.pp, r.ref_pp), num(r.tg, "%.1f"), num(r.ref_tg, "%.1f"),
                        ratio(r.tg, r.ref_tg), r.bytes / 1e6, frac(r.tg, r.bytes), frac(r.ref_tg, r.bytes)))
  end
end

if not compare then
  -- the recurrent models (mamba-130m- and RWKV-7 0.1B-shaped), then tokenizers
  print()
  os.execute(string.format("%s %s/bench/mamba.lua %d", slm_cmd, here, threads))
  print()
  os.execute(string.format("%s %s/bench/rwkv.lua %d", slm_cmd, here, threads))
  print()
  os.execute(string.format("BUILD=%s lua5.4 %s/bench/tokenizer.lua", os.getenv("BUILD") or "build", here))
end
