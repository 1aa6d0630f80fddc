--- RWKV-7 0.1B-shaped random model (dim 768, 12 layers, 12 heads of 64,
-- ffn 3072, vocab 65536, LoRA ranks w 64 / a 64 / v 32 / g 128, as
-- RWKV-7 "Goose" 0.1B) written as a GGUF in llama.cpp's rwkv7 layout by
-- slm.gguf.write into $SLM_BENCH_DIR (default /tmp/slm-bench; made once,
-- reused), with the vocabulary of slm.testing.vocab_metadata so that the
-- reference loads the same files: prompt processing (pp128, one call) and
-- decode (tg) in tokens/s and peak RSS, one process per dtype.
--   bin/slm bench/rwkv.lua [--compare] [threads=2] [dtype ...]  (dtypes: f16 q8_0)
--   bin/slm bench/rwkv.lua --run MODEL.gguf [threads]  (one measurement line)
-- "bw %" and --compare (the reference's llama-bench on the same files, a
-- second table of both sides) as in bench/run.lua, code in bench/common.lua.
local slm = require "slm"
local bench = require "slm.bench"
local testing = require "slm.testing"
local gguf = require "slm.gguf"
local common = require "bench.common"

local DIM, LAYERS, HEAD, FF, VOCAB = 768, 12, 64, 3072, 65536
local RANK = { w = 64, a = 64, v = 32, g = 128 }

local function write_model(path, dtype)
  local tensors, seed = {}, 100
  local function add(name, t) tensors[#tensors + 1] = { name = name, tensor = t } end
  local function mat(name, rows, cols, big)
    seed = seed + 1
    local t = testing.randn({ rows, cols }, seed, 0.02)
    -- the matrices of every token's projections take the file's dtype;
    -- the small low-rank ones stay f32 as llama.cpp's converter keeps them
    if big then t = t:to(dtype) end
    add(name, t)
  end
  local function vec(name, lo, hi, shape)
    seed = seed + 1
    add(name, testing.rand(shape or { DIM }, seed, lo, hi))
  end
  mat("token_embd.weight", VOCAB, DIM, true)
  vec("token_embd_norm.weight", 0.9, 1.1)
  vec("token_embd_norm.bias", -0.01, 0.01)
  for l = 0, LAYERS - 1 do
    local p = "blk." .. l .. "."
    for _, n in ipairs { "attn_norm", "attn_norm_2", "time_mix_ln" } do
      vec(p .. n .. ".weight", 0.9, 1.1)
      vec(p .. n .. ".bias", -0.01, 0.01)
    end
    vec(p .. "time_mix_lerp_fused.weight", 0, 1, { 6, 1, 1, DIM })
    for _, n in ipairs { "receptance", "key", "value", "output" } do
      mat(p .. "time_mix_" .. n .. ".weight", DIM, DIM, true)
    end
    for _, k in ipairs { "w", "a", "v", "g" } do
      -- the reference's layout gives layer 0's v1/v2 (unused: layer 0 sets
      -- v_first) the iclr rank, not the value-residual one, and checks it
      local r = (k == "v" and l == 0) and RANK.a or RANK[k]
      mat(p .. "time_mix_" .. k .. "1.weight", r, DIM)
      mat(p .. "time_mix_" .. k .. "2.weight", DIM, r)
    end
    vec(p .. "time_mix_w0.weight", -1, 1)
    vec(p .. "time_mix_a0.weight", -0.5, 0.5)
    vec(p .. "time_mix_v0.weight", -0.5, 0.5)
    vec(p .. "time_mix_k_k.weight", 0.7, 1)
    vec(p .. "time_mix_k_a.weight", 0.9, 1.1)
    vec(p .. "time_mix_r_k.weight", -0.1, 0.1)
    vec(p .. "channel_mix_lerp_k.weight", 0, 1)
    mat(p .. "channel_mix_key.weight", FF, DIM, true)
    mat(p .. "channel_mix_value.weight", DIM, FF, true)
  end
  vec("output_norm.weight", 0.9, 1.1)
  vec("output_norm.bias", -0.01, 0.01)
  mat("output.weight", VOCAB, DIM, true)
  local u32 = function(v) return { type = "u32", value = v } end
  local meta = {
    { "general.architecture", "rwkv7" },
    { "general.name", "rwkv7-0.1b-random" },
    { "rwkv7.context_length", u32(1048576) },
    { "rwkv7.embedding_length", u32(DIM) },
    { "rwkv7.block_count", u32(LAYERS) },
    { "rwkv7.feed_forward_length", u32(FF) },
    { "rwkv7.wkv.head_size", u32(HEAD) },
    { "rwkv7.attention.layer_norm_epsilon", { type = "f32", value = 1e-5 } },
    { "rwkv7.attention.decay_lora_rank", u32(RANK.w) },
    { "rwkv7.attention.iclr_lora_rank", u32(RANK.a) },
    { "rwkv7.attention.value_residual_mix_lora_rank", u32(RANK.v) },
    { "rwkv7.attention.gate_lora_rank", u32(RANK.g) },
    -- the reference's label of the file in its tables (1 mostly F16, 7 mostly Q8_0)
    { "general.file_type", u32(dtype == "q8_0" and 7 or 1) },
  }
  for _, kv in ipairs(testing.vocab_metadata(VOCAB)) do meta[#meta + 1] = kv end
  assert(gguf.write(path, { metadata = meta, tensors = tensors }))
end

local function measure(path, threads)
  if threads then slm.threads(threads) end
  local model = assert(slm.load(path))
  local n_prompt, n_gen = 128, 64
  local ids = {}
  for i = 1, n_prompt do ids[i] = (i * 7919) % model.hp.n_vocab end
  local pp, tg = 0, 0
  for _ = 1, 2 do
    local s = model:session { ctx = 512, batch = n_prompt }
    local t0 = bench.clock()
    s:eval(ids)
    pp = math.max(pp, n_prompt / (bench.clock() - t0))
  end
  for _ = 1, 2 do
    local s = model:session { ctx = 512, batch = 16 }
    s:eval { 1, 2, 3, 4 }
    local t0 = bench.clock()
    for i = 1, n_gen do s:eval { (i * 31) % model.hp.n_vocab } end
    tg = math.max(tg, n_gen / (bench.clock() - t0))
  end
  local s = model:session { ctx = 16 }
  s:eval { 1 }
  print(string.format("pp=%.1f tg=%.2f state_kb=%.1f rss_mb=%.1f", pp, tg, #s:snapshot().state / 1024,
                      bench.peak_rss_kb() / 1024))
end

if arg[1] == "--run" then
  measure(assert(arg[2], "--run MODEL.gguf"), tonumber(arg[3]))
  return
end

local b = common.setup(arg, "rwkv")
if #b.dtypes == 0 then b.dtypes = { "f16", "q8_0" } end

b:bandwidth()
print(string.format("RWKV-7 0.1B-shaped random model, %d threads (bench/rwkv.lua); read bandwidth %s GB/s",
                    b.threads, b.bw and string.format("%.1f", b.bw) or "?"))
print(string.format("%-6s %9s %9s %6s %10s %10s %9s", "dtype", "pp128 t/s", "tg t/s", "bw %", "MB", "state KB",
                    "RSS MB"))
local rows = {}
for _, dt in ipairs(b.dtypes) do
  local path = string.format("%s/rwkv7-0.1b-%s.gguf", b.dir, dt)
  if not common.exists(path) then write_model(path, dt) end
  local r = b:measure({ dt = dt, path = path }, function(r)
    local out = common.run(string.format("%s %s/bench/rwkv.lua --run %s %d", b.slm, b.here, path, b.threads))
    local pp, tg = out:match("pp=([%d.]+)"), out:match("tg=([%d.]+)")
    r.st, r.rss = out:match("state_kb=([%d.]+)") or r.st, out:match("rss_mb=([%d.]+)") or r.rss
    if not pp then io.stderr:write(out) end
    return tonumber(pp), tonumber(tg)
  end)
  rows[#rows + 1] = r
  print(string.format("%-6s %9s %9s %6s %10.1f %10s %9s", dt, r.pp or "?", r.tg or "?", b:frac(r.tg, r.bytes),
                      common.size(path) / 1048576, r.st or "?", r.rss or "?"))
end
b:compare_table(rows)
