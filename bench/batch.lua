--- Aggregate decode speed of several sequences in one forward (slm.batch,
-- issue 19): for each count n of sequences, n sessions each take the same
-- n_prompt-token prompt (evaluated alone, not timed), then n_gen decode
-- steps run with one token per session per forward; tg is n * n_gen /
-- seconds, best of `reps` runs. As the reference's batched bench
-- (llama-batched-bench -npp n_prompt -ntg n_gen -npl 1,2,...) measures its
-- S_TG: the context of every sequence grows from n_prompt while it decodes.
--   bin/slm bench/batch.lua MODEL.gguf [n_prompt=128] [n_gen=32] [threads] [counts=1,2,4,8,16] [reps=2]
-- Prints one line per count: "n=N tg=T".
local slm = require "slm"

local path = assert(arg[1], "usage: bench/batch.lua MODEL.gguf [n_prompt] [n_gen] [threads] [counts] [reps]")
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
  print(string.format("n=%d tg=%.2f", n, best))
  io.stdout:flush()
end
