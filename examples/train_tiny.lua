--- Trains a llama of about 100K parameters on Tiny Shakespeare, one token
-- per character, from scratch, in under two minutes on two CPU threads. Every
-- few seconds it prints the training loss and a short sample generated from
-- the weights being trained (a session of the model reads the live f32
-- weights the optimizer updates); at the end, the validation loss.
--   bin/slm examples/train_tiny.lua [CORPUS] [SECONDS=90] [THREADS=2]
-- CORPUS defaults to data/tinyshakespeare.txt when the checkout has it, else
-- tinyshakespeare.txt in the corpora directory beside $SLM_FIXTURES
-- (../shared/corpora). Any UTF-8 text of a few hundred KB works. The first
-- 90 % of its characters train, the rest validate (nanoGPT's split).
local slm = require "slm"
local common = require "examples.common"

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() end
  return f ~= nil
end

local function default_corpus()
  local fixtures = os.getenv("SLM_FIXTURES") or "../shared/fixtures"
  local shared = (fixtures:match("^(.*)/[^/]+/*$") or "..") .. "/corpora/tinyshakespeare.txt"
  for _, p in ipairs { "data/tinyshakespeare.txt", shared, "../shared/corpora/tinyshakespeare.txt" } do
    if exists(p) then return p end
  end
  common.die("no corpus given and tinyshakespeare.txt not found (data/, %s); usage: %s [CORPUS] [SECONDS] [THREADS]",
             shared, common.name)
end

local corpus = arg[1] or default_corpus()
local seconds = tonumber(arg[2] or 90)
if not seconds or seconds <= 0 or seconds ~= seconds then
  common.die("SECONDS must be a positive number, got %s", arg[2])
end
local threads = math.tointeger(tonumber(arg[3] or 2))
if not threads or threads < 1 then common.die("THREADS must be a positive integer, got %s", arg[3]) end
local f, err = io.open(corpus, "rb")
if not f then common.die("%s", err) end
f:close()

-- The recipe: small enough to train in a minute and a half, large enough to
-- learn words. 2 layers of dim 64 with a SwiGLU of 160: 102,848 parameters.
local R = {
  dim = 64, layers = 2, heads = 4, ff = 160, ctx = 128, batch = 32,
  lr = 3e-3, min_lr = 3e-4, warmup = 100, weight_decay = 0.1, clip = 1.0, seed = 1,
  report = math.min(5, seconds / 4),   -- seconds between progress lines
  val_batches = 20, sample_chars = 60, prompt = "ROMEO:",
}
slm.threads(threads)
local clock = slm.core.clock
local t_start = clock()

-- data: the character vocabulary, the corpus as a token file (memory-mapped),
-- seeded random windows of ctx + 1 characters
local ok, tok, terr = pcall(slm.train.char_tokenizer, { corpus })
if not ok then common.die("%s", (tostring(tok):gsub("^[^\n]-%.lua:%d+: ", ""))) end
if not tok then common.die("%s", terr) end
local tokpath = os.tmpname()
local n_chars = slm.train.tokenize(tok, { corpus }, tokpath)
local toks = assert(slm.train.open_tokens(tokpath))
local bok, train = pcall(slm.train.batches, toks, { ctx = R.ctx, batch = R.batch, seed = R.seed, split = 0.9 })
if not bok then
  os.remove(tokpath)
  common.die("%s: %d characters are too few for training windows of %d (90 %% of the text trains)", corpus, n_chars,
             R.ctx + 1)
end
local vok, val = pcall(slm.train.batches, toks, { ctx = R.ctx, batch = R.batch, seed = R.seed + 1,
                                                 split = { 0.9, "val" } })
if not vok then
  os.remove(tokpath)
  common.die("%s: its validation part is too short for windows of %d characters", corpus, R.ctx + 1)
end
local val_set = val:take(R.val_batches)
print(string.format("corpus: %s, %d characters, %d distinct; %d train / %d validation", corpus:match("[^/]+$"),
                    n_chars, #tok, train.hi - train.lo + 1, val.hi - val.lo + 1))

local function new_model()
  return slm.train.init { arch = "llama", vocab = #tok, dim = R.dim, layers = R.layers, heads = R.heads,
                          ff = R.ff, ctx = R.ctx, seed = R.seed, tokenizer = tok }
end
local function new_trainer(model, total)
  return slm.train.trainer(model, { lr = R.lr, betas = { 0.9, 0.99 }, weight_decay = R.weight_decay, clip = R.clip,
                                    warmup = R.warmup, total_steps = total, min_lr = R.min_lr })
end

-- The cosine schedule needs a length: the steps that fit in the time left.
-- The warmup's learning rates do not depend on it, so it is set when the
-- warmup ends, from the speed measured over the warmup's steps.
local model = new_model()
local tr = new_trainer(model, 1000000)
local n_params = 0
for _, name in ipairs(model.param_names) do n_params = n_params + model.params[name]:numel() end
print(string.format("model: llama, dim %d, %d layers, %d heads, ff %d, context %d: %d parameters", R.dim,
                    R.layers, R.heads, R.ff, R.ctx, n_params))
print(string.format("training: %.0f s on %d threads, batches of %d x %d characters, AdamW lr %g (warmup %d, "
                    .. "then cosine to %g in the time left)", seconds, threads, R.batch, R.ctx, R.lr, R.warmup,
                    R.min_lr))

local function val_loss()
  local sum = 0
  for _, b in ipairs(val_set) do sum = sum + tr:eval_loss(b) end
  return sum / #val_set
end

-- a short sample from the live weights: the same seed every time, so the
-- samples differ only because the model does
local function sample()
  local sess = model:session { ctx = #R.prompt + R.sample_chars + 1 }
  local text = sess:generate(R.prompt, { max_tokens = R.sample_chars,
                                         sampler = slm.sampler.default { temp = 0.8, top_k = 40, seed = 1 } },
                             function() end)
  return (string.format("%q", R.prompt .. text):gsub("\\\n", "\\n"))
end

local function report(step, loss)
  print(string.format("[%5.1fs] step %5d  loss %.4f  %s", clock() - t_start, step, loss, sample()))
  io.stdout:flush()
end

local val0 = val_loss()
report(0, val0)
local deadline = t_start + seconds
local sum, n, next_report = 0, 0, clock() + R.report
local t_train = clock()
while clock() < deadline and tr.step_count < tr.total_steps do
  local loss = tr:step(train:next())
  if tr.step_count == R.warmup then
    local per_step = (clock() - t_train) / R.warmup
    tr:set_total_steps(tr.step_count + math.max(1, math.floor((deadline - clock()) / per_step * 0.97)))
  end
  if loss ~= loss then common.die("the loss is NaN at step %d", tr.step_count) end
  sum, n = sum + loss, n + 1
  if clock() >= next_report then
    report(tr.step_count, sum / n)
    sum, n, next_report = 0, 0, clock() + R.report
  end
end
t_train = clock() - t_train
if n > 0 then report(tr.step_count, sum / n) end
print(string.format("validation loss %.4f nats/char (%.4f before training), %d batches of %d x %d; "
                    .. "%d steps in %.1f s, %.0f characters/s", val_loss(), val0, #val_set, R.batch, R.ctx,
                    tr.step_count, t_train, tr.step_count * R.batch * R.ctx / t_train))
toks:close()
os.remove(tokpath)
