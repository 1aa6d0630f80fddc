--- KV cache types (model:session{kv_type = ...}) on the SmolLM2-135M-shaped
-- F16 random model of bench/run.lua (30 layers, 3 kv heads of 64): the
-- cache's bytes per token and MiB at a 2048-token context, and decode speed
-- (tokens/s, one token per eval, best of 2) right after a 16-token prompt
-- and after a 1024-token one, where attention reads 1024 positions of every
-- layer per token.
--   bin/slm bench/kvcache.lua [threads=2] [dtype=f16]
local slm = require "slm"
local common = require "bench.common"
local clock = require("slm.bench").clock

local b = common.setup(arg, "kvcache")
local dt = b.dtypes[1] or "f16"
slm.threads(b.threads)
local model = assert(slm.load(common.smol135m(b.dir, dt)))
local n_vocab, N_GEN, DEEP = model.hp.n_vocab, 32, 1024

local function ids(n, seed)
  local t = {}
  for i = 1, n do t[i] = (i * 7919 + seed) % n_vocab end
  return t
end

-- decode tokens/s after a prompt of depth tokens
local function tg(kv_type, depth)
  local best = 0
  for _ = 1, 2 do
    local s = model:session { ctx = depth + N_GEN + 8, batch = 256, kv_type = kv_type }
    s:eval(ids(depth, 1))
    local t0 = clock()
    for i = 1, N_GEN do s:eval { (i * 31) % n_vocab } end
    best = math.max(best, N_GEN / (clock() - t0))
  end
  return best
end

print(string.format("KV cache types, SmolLM2-135M-shaped %s model, %d threads (bench/kvcache.lua)", dt, b.threads))
print(string.format("%-6s %11s %13s %10s %12s", "kv", "bytes/tok", "MiB @2048", "tg@16", "tg@" .. DEEP))
for _, t in ipairs { "f32", "f16", "q8_0", "q4_0" } do
  local s = model:session { ctx = 2048, batch = 1, kv_type = t }
  local per = s:kv_bytes_per_token()
  print(string.format("%-6s %11d %13.1f %10.1f %12.1f", t, per, per * 2048 / 1048576, tg(t, 16), tg(t, DEEP)))
end
