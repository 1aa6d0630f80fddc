--- Pruning with healing: a model's FFN channels (25 % and 50 %), attention
-- heads (25 %) and one layer removed, each pruned model trained a few steps
-- on a corpus (plain next-token cross-entropy) and the validation loss of
-- the unpruned, pruned and healed models compared (slm.train.heal). The
-- first row trains the unpruned model the same way: what the training
-- alone does (continued pretraining), for the healed rows to be read against.
--   bin/slm examples/prune_heal.lua [MODEL] [CORPUS] [--steps N] [--eval N] [--threads N] [--seed N]
-- MODEL defaults to slm's shipped character model ("shakespeare-char": one
-- token a character, so losses are in nats per character), CORPUS to
-- data/tinyshakespeare.txt (the text it learned: its first 90 % train, the last 10 %
-- validate, as slm.train.data splits it). --steps: healing steps per row
-- (default 60); --eval: score only the first N tokens of the validation
-- split (default: all of it); --threads (default 2). Rows the model's
-- architecture cannot be pruned by are said and skipped.
local slm = require "slm"
local common = require "examples.common"

local pos, flags = {}, { steps = 60, threads = 2, seed = 1 }
do
  local i = 1
  while i <= #arg do
    local a = arg[i]
    local key = a:match("^%-%-(%a+)$")
    if key then
      if key ~= "steps" and key ~= "eval" and key ~= "threads" and key ~= "seed" then
        common.die("unknown flag %s (--steps, --eval, --threads, --seed)", a)
      end
      local v = math.tointeger(tonumber(arg[i + 1] or ""))
      if not v or v < (key == "steps" and 0 or 1) then
        common.die("%s needs a %s integer, got %s", a, key == "steps" and "non-negative" or "positive",
                   tostring(arg[i + 1]))
      end
      flags[key] = v
      i = i + 2
    else
      pos[#pos + 1] = a
      i = i + 1
    end
  end
end
local path, corpus = pos[1] or "shakespeare-char", pos[2] or "data/tinyshakespeare.txt"
local resolved = slm.model.resolve(path)
if not resolved then common.die("%s", select(2, slm.model.resolve(path))) end
local f, ferr = io.open(corpus, "rb")
if not f then common.die("%s", ferr) end
f:close()
slm.threads(flags.threads)
local model = common.model(resolved, { text = true, decoder = true, gguf = true })

-- what applies: gated FFNs, separate q/k/v heads, more than one layer
local hp, src = model.hp, model.source
-- the control first: the same training without pruning
local rows = { { kind = "none" } }
if src.has("blk.0.ffn_gate.weight") and src.has("blk.0.ffn_up.weight") then
  rows[#rows + 1] = { kind = "ffn", fraction = 0.25 }
  rows[#rows + 1] = { kind = "ffn", fraction = 0.5 }
else
  io.stderr:write(common.name, ": ", hp.arch, " has no gated feed-forward (ffn_gate, ffn_up): no FFN rows\n")
end
if src.has("blk.0.attn_q.weight") and (hp.n_head or 0) >= 4 then
  rows[#rows + 1] = { kind = "heads", fraction = 0.25 }
else
  io.stderr:write(common.name, ": ", hp.arch, " has no separate attn_q of 4+ heads: no head row\n")
end
if hp.n_layer > 1 then rows[#rows + 1] = { kind = "layers", layers = { hp.n_layer // 2 } } end
model = nil

print(string.format("%s on %s: %d healing steps per row (lr 1e-4, batch 16), %d threads", path, corpus,
                    flags.steps, flags.threads))
local results, baseline = {}, nil
for _, p in ipairs(rows) do
  local ok, r = pcall(slm.train.heal, {
    model = resolved, data = corpus, prune = p, steps = flags.steps, lr = 1e-4, warmup = 10,
    seed = flags.seed, eval_tokens = flags.eval, baseline = baseline,
    log = function(line) io.stderr:write("  ", line, "\n") end,
  })
  if not ok then
    -- an architecture this pruning does not apply to: said, and the next row
    io.stderr:write(common.name, ": ", (tostring(r):gsub("^[^\n]-%.lua:%d+: ", "")), "\n")
  else
    baseline = r.base.loss
    results[#results + 1] = r
    -- the healed model generates (its sessions read the trained weights)
    local sess = r.model:session { ctx = 64 }
    local text = sess:generate("ROMEO:", { max_tokens = 40, sampler = slm.sampler.default { seed = 1, temp = 0.8 } },
                               function() end)
    io.stderr:write("  sample: ", (text:gsub("\n", " | ")), "\n")
    r.model, r.trainer = nil, nil
    collectgarbage()
  end
end
if #results == 0 then common.die("no pruning applies to %s", path) end
print(string.format("validation loss (nats/token) over %d tokens of the validation split", results[1].eval_tokens))
print(slm.train.heal_table(results))
