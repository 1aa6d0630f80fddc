--- bench/common.lua: what the model benchmarks (bench/run.lua, mamba.lua,
-- rwkv.lua) share: their command line, the read-bandwidth probe, the bytes
-- a decode step reads, and the side-by-side run of the reference's
-- llama-bench with its table.
--
--   local common = require "bench.common"
--   local b = common.setup(arg, "mamba")   -- arg of bench/mamba.lua
--   b.threads, b.dtypes, b.dir, b.here, b.slm, b.compare, b.ref, b.rounds
--
-- Command line: [--compare] [threads=2] [dtype ...]. --compare needs
-- SLM_REF_BENCH (the reference's llama-bench) and runs SLM_COMPARE_ROUNDS
-- rounds (default 2) alternating slm and the reference, best of each.
-- $SLM_BENCH_DIR (default /tmp/slm-bench) holds the GGUF files; BUILD (as
-- for bin/slm) the bandwidth probe's binary.
--
-- The tg "bw %" figures are the fraction of the read bandwidth measured on
-- the spot (bench/bandwidth.c: a streaming read of 512 MB on `threads`
-- threads, best of 5; the best of the probes before and after the runs)
-- that decode achieves: bytes of weights read per token x tok/s.
local gguf = require "slm.gguf"

local M = {}

function M.exists(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
end

function M.size(p)
  local f = io.open(p, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

--- run(cmd) -> its standard output
function M.run(cmd)
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

--- best(a, b): the larger, either may be nil
function M.best(a, b)
  if not a then return b end
  if not b then return a end
  return math.max(a, b)
end

--- weight_bytes(path): bytes of weights a decode step reads: every tensor,
-- except the token embedding when a separate output head exists (then one
-- row of it is read); a tied embedding is read whole as the head. Of a
-- mixture-of-experts stack (*_exps) a token reads expert_used_count of
-- expert_count experts: the active parameters' bytes.
function M.weight_bytes(path)
  local f = assert(gguf.open(path))
  local arch = f.metadata["general.architecture"]
  local ne, used = f.metadata[arch .. ".expert_count"], f.metadata[arch .. ".expert_used_count"]
  local total, embd, has_output = 0, 0, false
  for _, t in ipairs(f.tensors) do
    if ne and ne > 0 and t.name:match("_exps%.weight$") then
      total = total + t.bytes * used / ne
    else
      total = total + t.bytes
    end
    if t.name == "token_embd.weight" then embd = t.bytes end
    if t.name == "output.weight" then has_output = true end
  end
  f:close()
  return has_output and total - embd or total
end

--- smol135m(dir, dtype) -> path of the SmolLM2-135M-shaped random model of
-- that dtype in dir, written by slm.testing.random_model the first time
function M.smol135m(dir, dt)
  local path = string.format("%s/smol135m-%s.gguf", dir, dt)
  if not M.exists(path) then
    require("slm.testing").random_model { path = path, dtype = dt, vocab = 49152, dim = 576, n_layer = 30,
                                          n_head = 9, n_head_kv = 3, n_ff = 1536, tied = true, ctx = 2048,
                                          name = "smol135m-random" }
  end
  return path
end

local Bench = {}
Bench.__index = Bench

--- setup(arg, name) -> bench state; name is the script's file stem
-- ("run", "mamba", "rwkv"), which locates the checkout from arg[0].
-- Exits with status 2 when --compare lacks SLM_REF_BENCH.
function M.setup(arg, name)
  local args, compare = {}, false
  for _, a in ipairs(arg) do
    if a == "--compare" then compare = true else args[#args + 1] = a end
  end
  local here = arg[0]:match("^(.*)/bench/" .. name .. "%.lua$") or "."
  local build = os.getenv("BUILD") or "build"
  if not build:match("^/") then build = here .. "/" .. build end
  local ref = os.getenv("SLM_REF_BENCH")
  if compare and not (ref and ref ~= "") then
    io.stderr:write("bench/" .. name .. ".lua --compare: set SLM_REF_BENCH to the reference's llama-bench\n")
    os.exit(2)
  end
  local b = setmetatable({
    threads = tonumber(args[1]) or 2,
    dtypes = { table.unpack(args, 2) },
    dir = os.getenv("SLM_BENCH_DIR") or "/tmp/slm-bench",
    here = here, build = build, slm = here .. "/bin/slm",
    compare = compare, ref = compare and ref or nil,
    rounds = compare and (tonumber(os.getenv("SLM_COMPARE_ROUNDS")) or 2) or 1,
  }, Bench)
  os.execute("mkdir -p " .. b.dir)
  return b
end

--- b:bandwidth() -> GB/s of a streaming read on b.threads threads (nil if
-- the probe cannot be built); b.bw keeps the best of all probes so far.
function Bench:bandwidth()
  local bin = self.build .. "/bench_bandwidth"
  if not M.exists(bin) then
    os.execute(string.format("cc -O2 -mavx2 -std=c11 -D_GNU_SOURCE %s/bench/bandwidth.c -lpthread -o %s",
                             self.here, bin))
  end
  local gbs = tonumber(M.run(string.format("%s %d 512 5 2>/dev/null", bin, self.threads)):match("bw_gbs=([%d.]+)"))
  self.bw = M.best(self.bw, gbs)
  return gbs
end

--- b:frac(tg, bytes): decode's share of the best measured bandwidth, "NN%"
function Bench:frac(tg, bytes)
  return (tg and self.bw) and string.format("%.0f%%", 100 * tg * bytes / (self.bw * 1e9)) or "?"
end

--- b:ref_run(path) -> pp128, tg64 tok/s of the reference on that file (one
-- repetition; nil, nil with its output on stderr when it fails)
function Bench:ref_run(path)
  local out = M.run(string.format("%s -m %s -t %d -p 128 -n 64 -r 1 -o csv 2>/dev/null", self.ref, path,
                                  self.threads))
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
  if not (pp and tg) then io.stderr:write("reference bench failed on " .. path .. ":\n" .. out) end
  return pp, tg
end

--- b:measure(r, slm_run) -> r: b.rounds rounds of slm_run(r) -> pp, tg
-- (slm's figures; it may store more fields in r), each followed under --compare by
-- the reference on r.path; keeps the best of each side in r.pp, r.tg,
-- r.ref_pp, r.ref_tg. r.bytes is set from the file when absent.
function Bench:measure(r, slm_run)
  r.bytes = r.bytes or M.weight_bytes(r.path)
  for _ = 1, self.rounds do
    local pp, tg = slm_run(r)
    r.pp, r.tg = M.best(r.pp, pp), M.best(r.tg, tg)
    if self.compare then
      local rpp, rtg = self:ref_run(r.path)
      r.ref_pp, r.ref_tg = M.best(r.ref_pp, rpp), M.best(r.ref_tg, rtg)
    end
  end
  return r
end

--- b:compare_table(rows [, head]): under --compare, probes the bandwidth
-- again and prints slm and the reference side by side, rows as filled by
-- b:measure (r.label or r.dt names the row; head, default "dtype", names
-- that column); nothing otherwise.
function Bench:compare_table(rows, head)
  if not self.compare then return end
  head = head or "dtype"
  local w = #head
  for _, r in ipairs(rows) do w = math.max(w, #(r.label or r.dt)) end
  local first = "%-" .. math.max(w, 6) .. "s"
  self:bandwidth()
  local function num(v, fmt) return v and string.format(fmt, v) or "?" end
  local function ratio(a, b) return (a and b and b > 0) and string.format("%.2f", a / b) or "?" end
  print()
  print(string.format("slm vs reference (%s), same files, %d threads, %d alternating rounds, best of each;",
                      self.ref, self.threads, self.rounds))
  print(string.format("measured read bandwidth %s GB/s", num(self.bw, "%.1f")))
  print(string.format(first .. " %8s %8s %6s | %8s %8s %6s | %8s %7s %7s", head, "pp slm", "pp ref", "ratio",
                      "tg slm", "tg ref", "ratio", "MB/tok", "bw slm", "bw ref"))
  for _, r in ipairs(rows) do
    print(string.format(first .. " %8s %8s %6s | %8s %8s %6s | %8.1f %7s %7s", r.label or r.dt, num(r.pp, "%.1f"),
                        num(r.ref_pp, "%.1f"), ratio(r.pp, r.ref_pp), num(r.tg, "%.1f"), num(r.ref_tg, "%.1f"),
                        ratio(r.tg, r.ref_tg), r.bytes / 1e6, self:frac(r.tg, r.bytes),
                        self:frac(r.ref_tg, r.bytes)))
  end
end

return M
