-- LoRA fine-tuning of a frozen base to a text of another style, over an f32
-- copy of the base and over the base as stored (Q8_0 for the shipped models).
--
--   bin/slm examples/lora_finetune.lua [BASE=shakespeare-char] [STEPS=80] [RANK=8] [BATCH=8]
--
-- The target text is a shipping forecast written by a seeded generator
-- below (sea areas, winds, sea states, weather, visibility: a register far
-- from Shakespeare's, spelt with the character model's 65 characters): one
-- stream trains, another seed's stream is held out. For each base the
-- example prints the held-out perplexity before and after training the
-- adapter (q and v of every layer; applied unmerged with model:lora_add),
-- the adapter's bytes as a share of the base file, the steps and the time.
local slm = require "slm"
local common = require "examples.common"

local base_arg = arg[1] or "shakespeare-char"
local steps = tonumber(arg[2] or "80")
local rank = tonumber(arg[3] or "8")
local batch = tonumber(arg[4] or "8")
if not steps or steps < 1 or steps % 1 ~= 0 then common.die("STEPS must be a positive integer, got %s", arg[2]) end
if not rank or rank < 1 or rank % 1 ~= 0 then common.die("RANK must be a positive integer, got %s", arg[3]) end
if not batch or batch < 1 or batch % 1 ~= 0 then common.die("BATCH must be a positive integer, got %s", arg[4]) end
local path, err = slm.model.resolve(base_arg)
if not path then common.die("%s", err) end
local probe = common.model(path, { text = true, decoder = true, gguf = true })

-- the target text ------------------------------------------------------------
local AREAS = { "Viking", "Forties", "Cromarty", "Forth", "Tyne", "Dogger", "Fisher", "German Bight", "Humber",
                "Thames", "Dover", "Wight", "Portland", "Plymouth", "Biscay", "Fastnet", "Lundy", "Irish Sea",
                "Shannon", "Rockall", "Malin", "Hebrides", "Bailey", "Fair Isle", "Faeroes" }
local DIRS = { "north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest" }
local FORCE = { "three", "four", "five", "six", "seven", "gale eight", "severe gale nine" }
local SEA = { "smooth", "slight", "moderate", "rough", "very rough", "high" }
local WEATHER = { "fair", "showers", "rain", "rain later", "drizzle", "fog patches", "squally showers", "thundery showers" }
local VIS = { "good", "moderate", "good, occasionally poor", "moderate or poor", "very poor at times" }

local function forecast(seed, n_chars)
  local x = seed
  local function pick(t)   -- a 31-bit LCG (Park-Miller), so the text is the same everywhere
    x = (x * 48271) % 2147483647
    return t[x % #t + 1]
  end
  local out, len = {}, 0
  while len < n_chars do
    local a, b = pick(AREAS), pick(AREAS)
    local line = string.format("%s, %s: %s %s, backing %s later. %s, occasionally %s. %s. %s.\n",
      a, b, pick(DIRS), pick(FORCE), pick(DIRS), pick(SEA):gsub("^%l", string.upper), pick(SEA),
      pick(WEATHER):gsub("^%l", string.upper), ("Visibility " .. pick(VIS)))
    out[#out + 1] = line
    len = len + #line
  end
  return table.concat(out)
end

local train_text, held_out = forecast(1, 24000), forecast(2, 4000)
for i = 1, #train_text do
  local c = train_text:sub(i, i)
  if #probe.tokenizer:encode(c) ~= 1 then common.die("the base's vocabulary cannot spell %q", c) end
end

-- one base ----------------------------------------------------------------------
local CTX = 64
local function file_bytes(p)
  local f = assert(io.open(p, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

local function run(label, base_path)
  local eval_model = assert(slm.load(base_path))
  local ids = eval_model.tokenizer:encode(held_out)
  local before = slm.eval.perplexity(eval_model, ids, { ctx = CTX }).ppl
  local model = assert(slm.load(base_path, { train = "lora" }))
  local tr = slm.train.trainer(model, { lora = { rank = rank, alpha = 2 * rank, dropout = 0.05, seed = 1 },
                                        lr = 3e-3, warmup = math.max(1, steps // 10), total_steps = steps,
                                        weight_decay = 0 })
  local train_ids = model.tokenizer:encode(train_text)
  local x = 7
  local t0 = slm.core.clock()
  local loss
  for _ = 1, steps do
    local b = {}
    for r = 1, batch do
      x = (x * 48271) % 2147483647
      local o = x % (#train_ids - CTX - 1)
      local row = {}
      for t = 1, CTX + 1 do row[t] = train_ids[o + t] end
      b[r] = row
    end
    loss = tr:step(b)
  end
  local secs = slm.core.clock() - t0
  local adapter = os.tmpname() .. ".gguf"
  tr:save_adapter(adapter)
  eval_model:lora_add(adapter, 1.0)
  local after = slm.eval.perplexity(eval_model, ids, { ctx = CTX }).ppl
  local abytes, bbytes = file_bytes(adapter), file_bytes(base_path)
  os.remove(adapter)
  print(string.format("| %-6s | %8.3f | %8.3f | %9d | %6.2f %% | %5d | %6.1f s | %.3f |", label, before, after, abytes,
                      100 * abytes / bbytes, steps, secs, loss))
end

print(string.format("LoRA rank %d (alpha %d) on attn_q and attn_v, batch %d x %d tokens, %d held-out tokens", rank,
                    2 * rank, batch, CTX, #probe.tokenizer:encode(held_out)))
print("| base   | ppl before | ppl after | adapter bytes | share | steps | time | last loss |")
local f32 = os.tmpname() .. ".gguf"
assert(slm.quantize(path, f32, function() return "f32" end))
local ok, e = pcall(run, "f32", f32)
os.remove(f32)
if not ok then error(e, 0) end
local dtype = probe.source.tensor("blk.0.attn_q.weight"):dtype()
run(dtype, path)
