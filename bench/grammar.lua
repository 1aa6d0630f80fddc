--- bench/grammar.lua: the cost of grammar-constrained decoding.
--   bin/slm bench/grammar.lua [threads=2]
--
-- 1. The SmolLM2-135M-shaped Q8_0 bench model (bench/run.lua writes it):
--    decode per token without a constraint and under
--    ../shared/fixtures/grammars/json.gbnf, and the mask's own cost per
--    token (m:apply + m:accept replayed over the constrained run's tokens)
--    as a percentage of unconstrained decode.
--    Then the same for a nested JSON Schema (generate{json_schema =}).
-- 2. The same replay over a JSON text with the gpt-2 vocabulary (50257
--    real tokens, fixtures/vocab), cold (an empty mask cache) and warm.
-- 3. Regex linearity: 2000 tokens under generate{regex =} from a small
--    random model with the bench vocabulary; time per token over the first
--    and the last 200 tokens, on the grammar matcher and (1000 tokens) on
--    PCRE2 re-matching.
-- Times are wall clock on a shared machine: compare ratios, not absolutes.
local slm = require "slm"
local testing = require "slm.testing"
local generate = require "slm.generate"
local clock = require("slm.core").clock

local threads = tonumber(arg[1]) or 2
slm.threads(threads)
local dir = os.getenv("SLM_BENCH_DIR") or "/tmp/slm-bench"
local fixtures = os.getenv("SLM_FIXTURES") or "../shared/fixtures"
os.execute("mkdir -p " .. dir)

local function exists(p) local f = io.open(p, "rb") if f then f:close() return true end end
local function read(p) local f = assert(io.open(p, "rb")) local s = f:read("a") f:close() return s end

local json_path = fixtures .. "/grammars/json.gbnf"
if not exists(json_path) then print("grammar bench: " .. json_path .. " not found (set SLM_FIXTURES)") return end
local json = slm.grammar.compile(read(json_path))

-- 1. the bench model
local path = dir .. "/smol135m-q8_0.gguf"
if not exists(path) then
  testing.random_model { path = path, dtype = "q8_0", vocab = 49152, dim = 576, n_layer = 30, n_head = 9,
                         n_head_kv = 3, n_ff = 1536, tied = true, ctx = 2048, name = "smol135m-random" }
end
local model = assert(slm.load(path))
local tok = model.tokenizer
-- seeded runs until N tokens are generated (a constrained run may complete
-- early); returns seconds per token, the ids of all runs, the runs
local N = 48
local function run(opts)
  local ids, secs, toks, runs = {}, 0, 0, 0
  for seed = 1, 20 do
    local sess = model:session { ctx = 256 }
    opts.max_tokens = N - toks
    opts.sampler = { { "dist", seed = seed } }
    local _, info = sess:generate("{", opts, function(_, id) ids[#ids + 1] = id end)
    secs, toks, runs = secs + info.seconds, toks + info.tokens, runs + 1
    if toks >= N then break end
  end
  return secs / toks, ids, { tokens = toks, runs = runs }
end
run { max_tokens = 4 }   -- warm up
local plain = run {}
local constrained, ids, info = run { grammar = json }

-- the mask's own cost: replay the constrained run's tokens through a fresh
-- grammar (cold cache) and again (warm)
local function replay(g, tokenizer, list, logits)
  local m = g:matcher()
  local out = slm.tensor.zeros({ logits:numel() })
  local t0 = clock()
  for _, id in ipairs(list) do
    m:apply(tokenizer, logits, out)
    -- a run's end token: the next run starts from a fresh matcher
    if tokenizer:is_eog(id) then m:reset()
    elseif not m:accept(tokenizer:piece(id)) then   -- a run that ended complete
      m:reset()
      assert(m:accept(tokenizer:piece(id)))
    end
  end
  return (clock() - t0) / #list
end
local logits = slm.tensor.zeros({ 49152 })
local gcold = slm.grammar.compile(read(json_path))
local cold = replay(gcold, tok, ids, logits)
local warm = replay(gcold, tok, ids, logits)
print(string.format("grammar: SmolLM2-135M-shaped Q8_0, %d threads, %d tokens in %d runs from \"{\"", threads,
                    info.tokens, info.runs))
print(string.format("  decode %.2f ms/token unconstrained, %.2f ms/token under json.gbnf (%+.1f %%)",
                    plain * 1e3, constrained * 1e3, (constrained / plain - 1) * 100))
print(string.format("  mask + accept %.3f ms/token cold, %.3f ms/token warm: %.1f %% / %.1f %% of decode",
                    cold * 1e3, warm * 1e3, cold / plain * 100, warm / plain * 100))

-- 1b. a nested JSON Schema (the fixtures' nested_object: closed objects
-- three deep with required and optional members) as generate{json_schema =}
-- runs it: the converter's grammar (lua/slm/grammar/json_schema.lua)
local spath = fixtures .. "/grammars/schemas/nested_object.schema.json"
if exists(spath) then
  local schema = read(spath)
  local t_conv = clock()
  local sg = slm.grammar.from_json_schema(schema)
  t_conv = clock() - t_conv
  local per, sids, sinfo = run { json_schema = schema }
  local scold = replay(sg, tok, sids, logits)
  local swarm = replay(sg, tok, sids, logits)
  print(string.format("  nested JSON Schema (nested_object, converted + compiled in %.1f ms): decode %.2f ms/token "
                      .. "(%+.1f %%), %d tokens in %d runs", t_conv * 1e3, per * 1e3, (per / plain - 1) * 100,
                      sinfo.tokens, sinfo.runs))
  print(string.format("  nested JSON Schema mask + accept %.3f ms/token cold, %.3f ms/token warm: %.1f %% / %.1f %% "
                      .. "of decode", scold * 1e3, swarm * 1e3, scold / plain * 100, swarm / plain * 100))
end

-- 2. a real vocabulary
local vpath = fixtures .. "/vocab/ggml-vocab-gpt-2.gguf"
if exists(vpath) then
  local gpt2 = assert(slm.tokenizer.load(vpath))
  local doc = '{"name": "slm", "version": [0, 1, 0], "tags": ["lua", "c", "llm"], "nested": {"a": true, ' ..
              '"b": null, "pi": 3.14159, "text": "Small language models on ordinary CPUs, as a C library."}}'
  local gids = gpt2:encode(doc, { add_special = false })
  local g2 = slm.grammar.compile(read(json_path))
  local l2 = slm.tensor.zeros({ #gpt2 })
  local c2 = replay(g2, gpt2, gids, l2)
  local w2 = replay(g2, gpt2, gids, l2)
  print(string.format("  gpt-2 vocabulary (50257): %d-token JSON text, mask + accept %.3f ms/token cold, %.3f warm",
                      #gids, c2 * 1e3, w2 * 1e3))
end

-- 3. regex linearity
local small = dir .. "/grammar-small.gguf"
if not exists(small) then
  testing.random_model { path = small, dtype = "f32", vocab = 49152, dim = 64, n_layer = 2, n_head = 4,
                         n_head_kv = 2, n_ff = 128, tied = true, ctx = 4096, name = "grammar-bench-small" }
end
local sm = assert(slm.load(small))
local function linear(n, pcre)
  generate.pcre_regex = pcre
  local sess = sm:session { ctx = 4096 }
  local times, last = {}, clock()
  local _, inf = sess:generate("x", { max_tokens = n, regex = "[a-z0-9 ]+!",
                                      sampler = { { "dist", seed = 3 } } }, function()
    local now = clock()
    times[#times + 1] = now - last
    last = now
  end)
  generate.pcre_regex = false
  local function mean(a, b) local s = 0 for i = a, b do s = s + times[i] end return s / (b - a + 1) end
  return mean(2, 201), mean(#times - 199, #times), inf.tokens
end
local a, b, n = linear(2000, false)
print(string.format("  regex [a-z0-9 ]+!, %d tokens on the grammar matcher: %.3f ms/token (first 200), " ..
                    "%.3f (last 200)", n, a * 1e3, b * 1e3))
a, b, n = linear(1000, true)
print(string.format("  the same on PCRE2 re-matching, %d tokens: %.3f ms/token (first 200), %.3f (last 200)",
                    n, a * 1e3, b * 1e3))
