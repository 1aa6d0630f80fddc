--- Aggregate decode speed of several sequences in one forward (slm.batch,
-- issue 19): for each count n of sequences, n sessions each take the same
-- n_prompt-token prompt (evaluated alone, not timed), then n_gen decode
-- steps run with one token per session per forward; tg is n * n_gen /
-- seconds, best of `reps` runs. As the reference's batched bench
-- (llama-batched-bench -npp n_prompt -ntg n_gen -npl 1,2,...) measures its
-- S_TG: the context of every sequence grows from n_prompt while it decodes.
--   bin/slm bench/batch.lua MODEL.gguf [n_prompt=128] [n_gen=32] [threads] [counts=1,2,4,8,16] [reps=2]
-- Prints one line per count: "n=N tg=T x1=speed-up over n=1".
-- --compare (first argument): also runs the reference's llama-batched-bench
-- (beside SLM_REF_BENCH's llama-bench, when built) on the same file and
-- parameters and prints its S_TG and slm/ref per count.
local slm = require "slm"

local compare = arg[1] == "--compare"
if compare then table.remove(arg, 1) end
local path = assert(arg[1], "usage: bench/batch.lua [--compare] MODEL.gguf [n_prompt] [n_gen] [threads] [counts] [reps]")
local n_prompt, n_gen = tonumber(arg[2] or 128), tonumber(arg[3] or 32)
if arg[4] then slm.threads(tonumber(arg[4])) end
local counts = {}
for c in (arg[5] or "1,2,4,8,16"):gmatch("%d+") do counts[#counts + 1] = tonumber(c) end
local reps = tonumber(arg[6] or 2)
local clock = require("slm.bench").clock

local model = assert(slm.load(path))
local nv = model.hp.n_vocab
local prompt = {}
for i = 1, n_prompt do prompt[i] = (i * 7919) % nv end

local ref = {}
local refbin = (os.getenv("SLM_REF_BENCH") or ""):gsub("llama%-bench$", "llama-batched-bench")
if compare and refbin:find("llama%-batched%-bench$") and io.open(refbin) then
  local cmd = string.format("%s -m %s -c %d -b 2048 -ub 512 -npp %d -ntg %d -npl %s -t %s 2>&1", refbin, path,
                            (n_prompt + n_gen) * counts[#counts] + 64, n_prompt, n_gen, table.concat(counts, ","),
                            arg[4] or "2")
  local f = io.popen(cmd)
  for line in f:lines() do
    -- its table (on stderr, with its log): | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | ...
    local cells = {}
    for c in line:gmatch("[^|]+") do cells[#cells + 1] = c:match("^%s*(.-)%s*$") end
    local B, stg = tonumber(cells[3]), tonumber(cells[8])
    if B and stg then ref[B] = stg end
  end
  f:close()
elseif compare then
  print("(no reference batched bench: build llama-batched-bench beside SLM_REF_BENCH)")
end

local base
for _, n in ipairs(counts) do
  local best = 0
  for _ = 1, reps do
    local ss = {}
    for i = 1, n do
      ss[i] = model:session { ctx = n_prompt + n_gen + 8, batch = 64 }
      ss[i]:eval(prompt)
    end
    local b = slm.batch(ss)
    local ids = {}
    local t0 = clock()
    for t = 1, n_gen do
      for i = 1, n do ids[i] = (t * 31 + i) % nv end
      b:eval(ids)
    end
    best = math.max(best, n * n_gen / (clock() - t0))
  end
  base = base or best
  print(string.format("n=%d tg=%.2f x1=%.2f%s", n, best, best / base,
                      ref[n] and string.format(" ref_tg=%.2f slm/ref=%.2f", ref[n], best / ref[n]) or ""))
  io.stdout:flush()
end
