--- Mamba-1 speed and memory on a mamba-130m-shaped random model (vocab
-- 50280, dim 768, 24 layers, d_inner 1536, d_state 16, dt_rank 48, conv 4,
-- tied head) in F16 and Q8_0: prompt processing (pp128, the prompt scanned
-- in one call per layer), decode (tg, one token per eval), snapshot and
-- restore time of the O(state) session state, and peak RSS.
--   bin/slm bench/mamba.lua [--compare] [threads=2] [dtype ...]
-- The GGUF files are written once into $SLM_BENCH_DIR (default
-- /tmp/slm-bench) by slm.gguf.write from seeded random tensors, with the
-- vocabulary of slm.testing.vocab_metadata so that the reference loads the
-- same files (it refuses one without tokenizer metadata); each model
-- is then measured in a child process (`bench/mamba.lua --run PATH
-- threads`, one key=value line), so the peak RSS is that of inference alone.
-- "bw %" and --compare (the reference's llama-bench on the same files, a
-- second table of both sides) as in bench/run.lua, code in bench/common.lua.
local slm = require "slm"
local testing = require "slm.testing"
local tensor = require "slm.tensor"
local clock = require("slm.bench").clock
local common = require "bench.common"

local SHAPE = { vocab = 50280, dim = 768, n_layer = 24, d_inner = 1536, d_state = 16,
                dt_rank = 48, d_conv = 4 }

-- Weights as a trained Mamba initializes them (the values matter for the
-- scan's exp only through their range): matrices normal(0, 0.02); A =
-- -(1..d_state) per channel (S4D-real); D = 1; dt bias the inverse softplus
-- of a dt log-uniform in [1e-3, 1e-1]. Matrices are stored in `dtype` when
-- their rows are whole blocks of it, else in f16 (dt_proj's 48 columns in
-- q8_0), as the reference quantizer falls back.
local function write_model(path, dtype)
  local S = SHAPE
  local di, ds = S.d_inner, S.d_state
  local tensors, seed = {}, 1000
  local function add(name, t) tensors[#tensors + 1] = { name = name, tensor = t } end
  local function mat(name, rows, cols)
    seed = seed + 1
    local t = testing.randn({ rows, cols }, seed, 0.02)
    local ty = (dtype == "q8_0" and cols % 32 ~= 0) and "f16" or dtype
    add(name, t:to(ty))
  end
  local A, D = {}, {}
  for i = 1, di do
    A[i] = {}
    for j = 1, ds do A[i][j] = -j end
    D[i] = 1.0
  end
  A, D = tensor.new(A), tensor.new(D)
  mat("token_embd.weight", S.vocab, S.dim)
  add("output_norm.weight", testing.rand({ S.dim }, 1, 0.9, 1.1))
  for l = 0, S.n_layer - 1 do
    local p = "blk." .. l .. "."
    add(p .. "attn_norm.weight", testing.rand({ S.dim }, 2 + l, 0.9, 1.1))
    mat(p .. "ssm_in.weight", 2 * di, S.dim)
    seed = seed + 1
    add(p .. "ssm_conv1d.weight", testing.randn({ di, S.d_conv }, seed, 0.3))
    seed = seed + 1
    add(p .. "ssm_conv1d.bias", testing.randn({ di }, seed, 0.1))
    mat(p .. "ssm_x.weight", S.dt_rank + 2 * ds, di)
    mat(p .. "ssm_dt.weight", di, S.dt_rank)
    seed = seed + 1
    local u, dtb = testing.rand({ di }, seed, math.log(1e-3), math.log(1e-1)), {}
    for i = 1, di do
      local dt = math.exp(u:get(i))
      dtb[i] = dt + math.log(1 - math.exp(-dt))   -- log(exp(dt) - 1)
    end
    add(p .. "ssm_dt.bias", tensor.new(dtb))
    add(p .. "ssm_a", A)
    add(p .. "ssm_d", D)
    mat(p .. "ssm_out.weight", S.dim, di)
  end
  local meta = {
    { "general.architecture", "mamba" },
    { "general.name", "mamba130m-random" },
    { "mamba.context_length", { type = "u32", value = 1 << 20 } },
    { "mamba.embedding_length", { type = "u32", value = S.dim } },
    { "mamba.block_count", { type = "u32", value = S.n_layer } },
    { "mamba.ssm.conv_kernel", { type = "u32", value = S.d_conv } },
    { "mamba.ssm.inner_size", { type = "u32", value = di } },
    { "mamba.ssm.state_size", { type = "u32", value = ds } },
    { "mamba.ssm.time_step_rank", { type = "u32", value = S.dt_rank } },
    { "mamba.attention.layer_norm_rms_epsilon", { type = "f32", value = 1e-5 } },
    -- the reference's label of the file in its tables (1 mostly F16, 7 mostly Q8_0)
    { "general.file_type", { type = "u32", value = dtype == "q8_0" and 7 or 1 } },
  }
  for _, kv in ipairs(testing.vocab_metadata(S.vocab)) do meta[#meta + 1] = kv end
  assert(slm.gguf.write(path, { metadata = meta, tensors = tensors }))
end

-- child: measure one file
local function run(path, threads)
  slm.threads(threads)
  local model = assert(slm.load(path))
  local nv, n_prompt, n_gen = model.hp.n_vocab, 128, 64
  local ids = {}
  for i = 1, n_prompt do ids[i] = (i * 7919) % nv end
  local pp = 0
  for _ = 1, 3 do
    local s = model:session { batch = n_prompt }
    local t0 = clock()
    s:eval(ids)
    pp = math.max(pp, n_prompt / (clock() - t0))
  end
  local tg, snap_ms, restore_ms, state_kb = 0, math.huge, math.huge, 0
  for _ = 1, 2 do
    local s = model:session { batch = 16 }
    s:eval { 1, 2, 3, 4 }
    local t0 = clock()
    for i = 1, n_gen do s:eval { (i * 31) % nv } end
    tg = math.max(tg, n_gen / (clock() - t0))
    t0 = clock()
    local snap = s:snapshot()
    local t1 = clock()
    s:restore(snap)
    local t2 = clock()
    snap_ms, restore_ms = math.min(snap_ms, (t1 - t0) * 1e3), math.min(restore_ms, (t2 - t1) * 1e3)
    state_kb = #snap.state / 1024
  end
  print(string.format("model=%s pp=%.1f tg=%.2f snap_ms=%.2f restore_ms=%.2f state_kb=%.0f rss_mb=%.1f",
                      path:match("[^/]+$"), pp, tg, snap_ms, restore_ms, state_kb,
                      require("slm.bench").peak_rss_kb() / 1024))
end

if arg[1] == "--run" then
  run(arg[2], tonumber(arg[3]) or 2)
  return
end

local b = common.setup(arg, "mamba")
if #b.dtypes == 0 then b.dtypes = { "f16", "q8_0" } end

b:bandwidth()
print(string.format("mamba-130m-shaped random model, %d threads (bench/mamba.lua); read bandwidth %s GB/s",
                    b.threads, b.bw and string.format("%.1f", b.bw) or "?"))
print(string.format("%-6s %9s %9s %6s %8s %9s %9s %9s %9s", "dtype", "pp128 t/s", "tg t/s", "bw %", "MB",
                    "state KB", "snap ms", "rest. ms", "RSS MB"))
local rows = {}
for _, dt in ipairs(b.dtypes) do
  local path = string.format("%s/mamba130m-%s.gguf", b.dir, dt)
  if not common.exists(path) then write_model(path, dt) end
  local r = b:measure({ dt = dt, path = path }, function(r)
    local out = common.run(string.format("%s %s/bench/mamba.lua --run %s %d", b.slm, b.here, path, b.threads))
    local v = {}
    for k, x in out:gmatch("([%w_]+)=([%d.]+)") do v[k] = x end
    if not v.pp then io.stderr:write(out) end
    r.v = v   -- the last round's state size, snapshot times and RSS
    return tonumber(v.pp), tonumber(v.tg)
  end)
  rows[#rows + 1] = r
  local v = r.v
  print(string.format("%-6s %9s %9s %6s %8.1f %9s %9s %9s %9s", dt, r.pp or "?", r.tg or "?",
                      b:frac(r.tg, r.bytes), common.size(path) / 1048576, v.state_kb or "?",
                      v.snap_ms or "?", v.restore_ms or "?", v.rss_mb or "?"))
end
b:compare_table(rows)
