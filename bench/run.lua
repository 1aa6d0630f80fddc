--- `make bench`: one table of decode/prompt speed and memory for the
-- SmolLM2-135M-shaped random model (vocab 49152, dim 576, 30 layers,
-- 9 heads / 3 kv heads, ffn 1536, tied) in F16, Q8_0, Q4_0 and Q4_K,
-- written by slm.testing.random_model into $SLM_BENCH_DIR (default
-- /tmp/slm-bench; made once, reused), then the other benchmark scripts.
--   bin/slm bench/run.lua [--compare] [threads=2] [dtype ...]
--
-- The tg column "bw %" is the fraction of the memory bandwidth measured on
-- the spot that decode achieves (bench/common.lua; the KV cache is left out).
--
-- --compare: SLM_REF_BENCH names the reference's llama-bench; it runs on
-- the same GGUF files (-p 128 -n 64, -r 1 per round), alternating with
-- slm's runs (SLM_COMPARE_ROUNDS rounds, default 2, best of each side), and
-- a second table gives both sides, slm/ref ratios and both bw fractions;
-- bench/families.lua, bench/mamba.lua and bench/rwkv.lua then run with
-- --compare too.
local common = require "bench.common"

local b = common.setup(arg, "run")
local threads, dtypes, here = b.threads, b.dtypes, b.here
if #dtypes == 0 then dtypes = { "f16", "q8_0", "q4_0", "q4_k" } end

b:bandwidth()
print(string.format("SmolLM2-135M-shaped random model, %d threads (bench/llama.lua), %s kernels; read bandwidth %s GB/s",
                    threads, require("slm").kernels(), b.bw and string.format("%.1f", b.bw) or "?"))
print(string.format("%-6s %9s %9s %6s %10s %8s %9s", "dtype", "pp128 t/s", "tg t/s", "bw %", "MB", "lua %", "RSS MB"))
local rows = {}
for _, dt in ipairs(dtypes) do
  local path = common.smol135m(b.dir, dt)
  local r = b:measure({ dt = dt, path = path }, function(r)
    local out = common.run(string.format("%s %s/bench/llama.lua %s 128 64 %d", b.slm, here, path, threads))
    local pp, tg = tonumber(out:match("pp=([%d.]+)")), tonumber(out:match("tg=([%d.]+)"))
    if not pp then io.stderr:write(out) end
    r.share, r.rss = out:match("lua_share=([%d.]+)") or r.share, out:match("rss_mb=([%d.]+)") or r.rss
    return pp, tg
  end)
  rows[#rows + 1] = r
  print(string.format("%-6s %9s %9s %6s %10.1f %8s %9s", dt, r.pp or "?", r.tg or "?",
                      b:frac(r.tg, r.bytes), common.size(path) / 1048576, r.share or "?", r.rss or "?"))
end
b:compare_table(rows)

-- the 2026 families (Qwen3-0.6B- and gemma-3-270m-shaped), the recurrent
-- models (mamba-130m- and RWKV-7 0.1B-shaped), then tokenizers
local pass = b.compare and "--compare " or ""
print()
os.execute(string.format("%s %s/bench/kvcache.lua %d", b.slm, here, threads))   -- KV cache types
print()
os.execute(string.format("%s %s/bench/families.lua %s%d", b.slm, here, pass, threads))
print()
os.execute(string.format("%s %s/bench/speculative.lua %d", b.slm, here, threads))
print()
os.execute(string.format("%s %s/bench/mamba.lua %s%d", b.slm, here, pass, threads))
print()
os.execute(string.format("%s %s/bench/rwkv.lua %s%d", b.slm, here, pass, threads))
-- many sequences in one forward (slm.batch): aggregate decode at 1..16
-- sequences on the F16 file, beside the reference's batched bench with --compare
print()
print(string.format("aggregate decode of n sequences in one forward (bench/batch.lua), smol135m-f16, %d threads", threads))
os.execute(string.format("%s %s/bench/batch.lua %s%s/smol135m-f16.gguf 128 32 %d", b.slm, here, pass, b.dir, threads))
-- training: the speed anchor of issue 15 at 1 and 2 threads (PyTorch beside it with --compare)
print()
os.execute(string.format("%s %s/bench/train.lua %s1 2", b.slm, here, pass))
if not b.compare then
  -- grammar-constrained decoding: mask cost per token, regex linearity
  print()
  os.execute(string.format("%s %s/bench/grammar.lua %d", b.slm, here, threads))
  print()
  os.execute(string.format("BUILD=%s lua5.4 %s/bench/tokenizer.lua", os.getenv("BUILD") or "build", here))
end
