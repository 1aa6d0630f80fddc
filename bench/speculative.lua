--- Speculative decoding on the SmolLM2-135M-shaped random model (bench/run.lua's
-- files): greedy decode of the F16 file, plain, with the Q4_0 file of the
-- same weights as the draft, and with prompt lookup ("ngram") on a
-- repetitive prompt; tokens/s, the speed-up over plain decode of the same
-- prompt, acceptance (accepted / drafted) and tokens per target forward.
-- Each figure is the best of `rounds` runs, plain and speculative
-- alternating (the machine's load changes between runs).
--   bin/slm bench/speculative.lua [threads=2] [n_gen=64] [n_draft=4] [rounds=2]
local slm = require "slm"
local testing = require "slm.testing"
local common = require "bench.common"
local clock = require("slm.bench").clock

local threads, n_gen = tonumber(arg[1] or 2), tonumber(arg[2] or 64)
local n_draft, rounds = tonumber(arg[3] or 4), tonumber(arg[4] or 2)
slm.threads(threads)
local dir = os.getenv("SLM_BENCH_DIR") or "/tmp/slm-bench"
os.execute("mkdir -p " .. dir)
local function file(dt)
  local path = string.format("%s/smol135m-%s.gguf", dir, dt)
  if not common.exists(path) then   -- as bench/run.lua makes them
    testing.random_model { path = path, dtype = dt, vocab = 49152, dim = 576, n_layer = 30, n_head = 9,
                           n_head_kv = 3, n_ff = 1536, tied = true, ctx = 2048, name = "smol135m-random" }
  end
  return path
end
local target = assert(slm.load(file("f16")))
local q4 = assert(slm.load(file("q4_0")))

local ctx = 512
local text_prompt = {}
for i = 1, 32 do text_prompt[i] = (i * 7919) % 49152 end
local rep_prompt = {}                        -- a 16-token phrase three times
for i = 1, 48 do rep_prompt[i] = ((i - 1) % 16 * 7919 + 11) % 49152 end

-- tokens/s of one greedy generation (prompt excluded), its ids and info
local function run(prompt, draft)
  local s = target:session { ctx = ctx }
  s:eval(prompt)
  local ids = {}
  local t0 = clock()
  local _, info = s:generate(nil, { max_tokens = n_gen, draft = draft, n_draft = draft and n_draft or nil },
                             function(_, id) ids[#ids + 1] = id end)
  return info.tokens / (clock() - t0), table.concat(ids, ","), info
end

print(string.format("speculative decoding, F16 target, greedy, %d tokens, n_draft %d, %d threads (bench/speculative.lua)",
                    n_gen, n_draft, threads))
print(string.format("%-22s %9s %9s %8s %10s %9s %6s", "draft", "plain t/s", "spec t/s", "speed-up", "acceptance",
                    "tok/fwd", "same"))
for _, case in ipairs { { "q4_0 model", text_prompt, function() return q4:session { ctx = ctx } end },
                        { "ngram, repetitive", rep_prompt, function() return "ngram" end },
                        { "q4_0, repetitive", rep_prompt, function() return q4:session { ctx = ctx } end } } do
  local plain, spec, info, same = 0, 0, nil, true
  for _ = 1, rounds do
    local tp, ip = run(case[2], nil)
    local ts, is, inf = run(case[2], case[3]())
    plain, spec, info = math.max(plain, tp), math.max(spec, ts), inf
    same = same and ip == is
  end
  local st = info.speculative
  print(string.format("%-22s %9.1f %9.1f %7.2fx %10.2f %9.2f %6s", case[1], plain, spec, spec / plain, st.acceptance,
                      st.tokens_per_forward, same and "yes" or "NO"))
end
