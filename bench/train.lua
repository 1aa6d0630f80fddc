--- bench/train.lua: training speed on the speed-anchor configuration of
-- issue 15 (../shared/fixtures/train/train-tiny-README.md, last section):
-- the llama version of the character-level Shakespeare model (vocab 65 =
-- the sorted characters of tinyshakespeare, dim 128, 4 layers, 4 heads,
-- ff 352, untied, context 64, batch 12, AdamW 1e-3 betas (0.9, 0.99),
-- weight decay 0.1, clip 1, warmup 100 then cosine to 1e-4 at step 2000).
--
--   bin/slm bench/train.lua [--compare] [--steps N] [--full] [threads ...]
--
-- Each thread count runs in a child process (its own peak RSS): N steps
-- (default 60), tokens/s from the median step time after the first 10.
-- --full: the whole 2000 steps at the first thread count, with the
-- validation loss (200 fixed random batches of the last 10 %) at steps 0,
-- 500, 1000, 1500 and 2000. --compare also runs PyTorch's version
-- (speed_torch.py beside the fixtures, with Debian's python3-torch; the
-- row is skipped when torch is absent) for the same steps in its best
-- setting on this machine (torch 1 thread, OpenBLAS at its default 2:
-- 0.041 s/step quiet, against 0.051 with both at 2 and 0.058 with both at 1).
local slm = require "slm"

local here = (arg[0]:match("^(.*)/bench/[^/]*$") or ".")
local fixtures = os.getenv("SLM_FIXTURES") or (here .. "/../shared/fixtures")
local corpus = fixtures .. "/../corpora/tinyshakespeare.txt"

local function peak_rss_mb() return require("slm.bench").peak_rss_kb() / 1024 end

-- xorshift64*: the bench's own deterministic window starts
local function rng(seed)
  local s = seed ~ 0x9E3779B97F4A7C15
  return function(n)
    s = s ~ (s >> 12); s = s ~ (s << 25); s = s ~ (s >> 27)
    return ((s * 0x2545F4914F6CDD1D) >> 11) % n
  end
end

local function child(threads, steps, full)
  slm.threads(threads)
  local f = assert(io.open(corpus, "rb"))
  local text = f:read("a")
  f:close()
  -- characters (UTF-8 sequences) -> sorted vocabulary -> ids
  local chars, set = {}, {}
  for c in text:gmatch(utf8.charpattern) do
    if not set[c] then set[c] = true; chars[#chars + 1] = c end
  end
  table.sort(chars, function(a, b) return utf8.codepoint(a) < utf8.codepoint(b) end)
  local stoi = {}
  for i, c in ipairs(chars) do stoi[c] = i - 1 end
  local data = {}
  for c in text:gmatch(utf8.charpattern) do data[#data + 1] = stoi[c] end
  local n_train = math.floor(0.9 * #data)
  local B, T = 12, 64
  local function batch(lo, hi, r)
    local rows = {}
    for b = 1, B do
      local i = lo + r(hi - lo - T)
      local row = {}
      for t = 0, T do row[t + 1] = data[i + t + 1] end
      rows[b] = row
    end
    return rows
  end
  local model = slm.train.init { vocab = #chars, dim = 128, layers = 4, heads = 4, kv_heads = 4, ff = 352,
                                 ctx = T, seed = 0 }
  local total = full and 2000 or steps
  local tr = slm.train.trainer(model, { lr = 1e-3, betas = { 0.9, 0.99 }, eps = 1e-8, weight_decay = 0.1,
                                        clip = 1.0, warmup = 100, total_steps = 2000, min_lr = 1e-4 })
  local rss0 = peak_rss_mb()
  local vr = rng(1)
  local vb = {}
  if full then for i = 1, 200 do vb[i] = batch(n_train, #data, vr) end end
  local function evaluate()
    local s = 0
    for i = 1, #vb do s = s + tr:eval_loss(vb[i]) end
    return s / #vb
  end
  local tr_rng = rng(0)
  local times, evals = {}, {}
  local wall = require("slm.bench").clock
  for it = 0, total do
    if full and (it % 500 == 0) then evals[#evals + 1] = string.format("%d:%.4f", it, evaluate()) end
    if it == total then break end
    local t0 = wall()
    tr:step(batch(0, n_train, tr_rng))
    times[#times + 1] = wall() - t0
  end
  local sel = {}
  for i = math.min(11, #times), #times do sel[#sel + 1] = times[i] end
  table.sort(sel)
  local med = sel[(#sel + 1) // 2]
  print(string.format("threads=%d steps=%d s_per_step=%.4f tok_s=%.0f rss_mb=%.1f rss0_mb=%.1f val=%s",
                      threads, #times, med, B * T / med, peak_rss_mb(), rss0, table.concat(evals, ",")))
end

if arg[1] == "child" then
  child(tonumber(arg[2]), tonumber(arg[3]), arg[4] == "full")
  return
end

local compare, steps, full, threads = false, 60, false, {}
local i = 1
while arg[i] do
  local a = arg[i]
  if a == "--compare" then compare = true
  elseif a == "--full" then full = true
  elseif a == "--steps" then steps = tonumber(arg[i + 1]); i = i + 1
  elseif tonumber(a) then threads[#threads + 1] = tonumber(a)
  else error("bench/train.lua: unknown argument " .. a) end
  i = i + 1
end
if #threads == 0 then threads = { 1, 2 } end
if not io.open(corpus) then
  print("train bench: skipped (" .. corpus .. " not found)")
  return
end
local slm_bin = here .. "/bin/slm"
print(string.format("training: llama char-level Shakespeare (V 65, dim 128, 4 layers, ff 352, ctx 64, batch 12), %s;"
                    .. " slm kernels %s; OpenBLAS kernels %s (OPENBLAS_CORETYPE %s; PyTorch runs under the same)",
                    full and "2000 steps" or (steps .. " steps"), slm.kernels(), require("slm.core").blas_core(),
                    os.getenv("OPENBLAS_CORETYPE") or "unset"))
print(string.format("%-22s %8s %10s %9s %s", "run", "s/step", "tokens/s", "RSS MB", full and "val loss" or ""))
for k, th in ipairs(threads) do
  if not full or k == 1 then
    local p = io.popen(string.format("%s %s/bench/train.lua child %d %d %s 2>&1", slm_bin, here, th, steps,
                                     full and "full" or ""))
    local out = p:read("a")
    p:close()
    local s, tk, rss, val = out:match("s_per_step=([%d.]+) tok_s=(%d+) rss_mb=([%d.]+).-val=(%S*)")
    if not s then io.stderr:write(out) end
    print(string.format("%-22s %8s %10s %9s %s", "slm, " .. th .. " thread" .. (th > 1 and "s" or ""), s or "?",
                        tk or "?", rss or "?", val or ""))
  end
end
if compare then
  local py = "/usr/bin/python3"
  local ok = os.execute(py .. " -c 'import torch' >/dev/null 2>&1")
  if not ok then
    print("pytorch: skipped (Debian's python3-torch is not installed)")
    return
  end
  local json = os.tmpname()
  -- its best setting here: torch 1 thread, OpenBLAS's own default (2 threads)
  local cmd = string.format("%s %s/train/speed_torch.py --threads 1 --steps %d --json %s >/dev/null 2>&1",
                            py, fixtures, full and 2000 or math.max(steps, 210), json)
  os.execute(cmd)
  local f = io.open(json)
  local txt = f and f:read("a") or ""
  if f then f:close() end
  os.remove(json)
  local s = txt:match('"s_per_step_median": ([%d.e-]+)')
  local tk = txt:match('"tokens_per_s": ([%d.e+-]+)')
  local rss = txt:match('"peak_rss_mb": ([%d.]+)')
  local v2000 = txt:match('"2000": ([%d.]+)')
  print(string.format("%-22s %8s %10s %9s %s", "pytorch (1 + BLAS 2)", s and string.format("%.4f", tonumber(s)) or "?",
                      tk and string.format("%.0f", tonumber(tk)) or "?", rss or "?", v2000 and ("2000:" .. v2000) or ""))
end
