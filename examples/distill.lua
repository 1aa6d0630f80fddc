--- Knowledge distillation, measured: a small student distilled from a
-- teacher against the same student (same initial weights, same batches,
-- same steps, same optimizer) trained from scratch with plain
-- cross-entropy, both scored on the validation split: cross-entropy
-- (nats/char) and KL(teacher || student) per position.
--   bin/slm examples/distill.lua [STEPS=300] [VAL_TOKENS=8192] [ALPHA=0.9] [TEMPERATURE=1] [TOPK=0] [TEACHER=shakespeare-char]
-- The teacher defaults to slm's shipped character model ("shakespeare-char", a 4.85M-parameter character
-- llama, Q8_0, trained on Tiny Shakespeare); the corpus is
-- data/tinyshakespeare.txt, encoded with the teacher's tokenizer, its
-- first 90 % training and the rest validating (the teacher's own split).
-- TOPK > 0 distills from the teacher's top-k logits per position, kept in a
-- cache file (one record per batch) so that later epochs over the same
-- batches do not run the teacher: the run then cycles over STEPS / 4
-- batches (4 epochs). TOPK = 0 (the default) runs the teacher on every
-- batch, all V logits.
local slm = require "slm"
local common = require "examples.common"

local function num(i, default, what, ok)
  local v = arg[i] and tonumber(arg[i]) or default
  if arg[i] and not tonumber(arg[i]) or not ok(v) then common.die("%s must be %s, got %s", what[1], what[2], arg[i]) end
  return v
end
local steps = num(1, 300, { "STEPS", "a positive integer" }, function(v) return math.tointeger(v) and v >= 1 end)
local val_tokens = num(2, 8192, { "VAL_TOKENS", "an integer >= 128" }, function(v) return math.tointeger(v) and v >= 128 end)
local alpha = num(3, 0.9, { "ALPHA", "a number in [0, 1]" }, function(v) return v >= 0 and v <= 1 end)
local temp = num(4, 1.0, { "TEMPERATURE", "a positive number" }, function(v) return v > 0 and v < math.huge end)
local topk = num(5, 0, { "TOPK", "an integer >= 0" }, function(v) return math.tointeger(v) and v >= 0 end)
steps, val_tokens, topk = math.tointeger(steps), math.tointeger(val_tokens), math.tointeger(topk)
local teacher_path = arg[6] or "shakespeare-char"
local corpus = "data/tinyshakespeare.txt"
local f = io.open(corpus, "rb")
if not f then common.die("%s not found (run from the repository root)", corpus) end
f:close()

local teacher = common.model(teacher_path, { text = true, decoder = true })
if topk > teacher.hp.n_vocab then common.die("TOPK must be at most the vocabulary (%d), got %d", teacher.hp.n_vocab, topk) end
local tok = teacher.tokenizer
slm.threads(2)
local clock = slm.core.clock
local t_start = clock()

-- The recipe: a student about 1/50 of the teacher, batches and schedule of
-- slm train's shakespeare-char preset scaled to a short run.
local R = { dim = 64, layers = 2, heads = 4, ff = 176, ctx = 64, batch = 12, seed = 7,
            lr = 3e-3, min_lr = 3e-4, warmup = math.min(30, steps // 10), weight_decay = 0.1, clip = 1.0 }

local tokpath = os.tmpname()
local ok, n_ids = pcall(slm.train.tokenize, tok, { corpus }, tokpath)
if not ok or not n_ids then
  os.remove(tokpath)
  common.die("%s: %s", corpus, tostring(n_ids):gsub("^[^\n]-%.lua:%d+: ", ""))
end
local toks = assert(slm.train.open_tokens(tokpath))
local stream = slm.train.batches(toks, { ctx = R.ctx, batch = R.batch, seed = R.seed })
local val = slm.train.batches(toks, { ctx = R.ctx, batch = R.batch, split = { 0.9, "val" } })
val_tokens = math.min(val_tokens, val.hi - val.lo + 1)
local val_ids = toks:read(val.lo, val_tokens)
-- the same batches for both students: a list (cycled when TOPK > 0)
local n_batches = topk > 0 and math.max(1, steps // 4) or steps
local batches = stream:take(n_batches)

local function student()
  return slm.train.init { vocab = teacher.hp.n_vocab, dim = R.dim, layers = R.layers, heads = R.heads, ff = R.ff,
                          ctx = R.ctx, seed = R.seed, tokenizer = tok }
end
local function topts()
  return { lr = R.lr, min_lr = R.min_lr, warmup = R.warmup, total_steps = steps, weight_decay = R.weight_decay,
           clip = R.clip, betas = { 0.9, 0.99 } }
end
local nparams = 0
do
  local s = student()
  for _, name in ipairs(s.param_names) do nparams = nparams + s.params[name]:numel() end
end
local tparams = 0
for _, name in ipairs(teacher.source.tensor_names()) do tparams = tparams + teacher.source.tensor(name):numel() end
print(string.format("teacher: %s (%s, %.2fM parameters), vocabulary %d", teacher_path, teacher.hp.arch, tparams / 1e6,
                    teacher.hp.n_vocab))
print(string.format("student: llama dim %d, %d layers, %d heads, ff %d: %d parameters; %d steps of %d x %d, lr %g "
                    .. "(warmup %d, cosine to %g), same init and batches for both", R.dim, R.layers, R.heads, R.ff,
                    nparams, steps, R.batch, R.ctx, R.lr, R.warmup, R.min_lr))
print(string.format("distillation: alpha %g, temperature %g, %s", alpha, temp,
                    topk > 0 and string.format("teacher top-%d cached over %d batches (%d epochs)", topk, n_batches,
                                               (steps + n_batches - 1) // n_batches)
                      or "teacher logits on every batch (all of them)"))

-- from scratch
local t0 = clock()
local scratch = student()
local tr0 = slm.train.trainer(scratch, topts())
for i = 1, steps do tr0:step(batches[(i - 1) % n_batches + 1]) end
local t_scratch = clock() - t0

-- distilled
t0 = clock()
local cache = topk > 0 and os.tmpname() or nil
if cache then os.remove(cache) end
local distilled = student()
local o = topts()
o.teacher, o.student, o.batches, o.steps = teacher, distilled, batches, steps
o.alpha, o.temperature, o.topk, o.cache = alpha, temp, topk > 0 and topk or nil, cache
o.progress = function(i, loss, info)
  if i % math.max(1, steps // 4) == 0 or i == steps then
    print(string.format("step %d: distillation loss %.4f (CE %.4f, KL at T %.4f)", i, loss, info.ce, info.kl))
  end
end
local dok, derr = pcall(slm.train.distill, o)
if cache then os.remove(cache) end
if not dok then
  os.remove(tokpath)
  common.die("%s", tostring(derr))
end
local t_distill = clock() - t0

-- scored on the validation split: windows of the students' context
local eopts = { ctx = R.ctx }
local k0 = slm.eval.kl(teacher, scratch, val_ids, eopts)
local k1 = slm.eval.kl(teacher, distilled, val_ids, eopts)
toks:close()
os.remove(tokpath)
print(string.format("validation: %d characters in windows of %d", k0.n, R.ctx))
print(string.format("%-14s %12s %12s %8s %9s", "", "CE nats/char", "KL(T || S)", "top-1", "train s"))
print(string.format("%-14s %12.4f %12s %8s %9s", "teacher", math.log(k0.ppl_base), "-", "-", "-"))
print(string.format("%-14s %12.4f %12.4f %7.1f%% %9.1f", "from scratch", math.log(k0.ppl), k0.mean, 100 * k0.top1,
                    t_scratch))
print(string.format("%-14s %12.4f %12.4f %7.1f%% %9.1f", "distilled", math.log(k1.ppl), k1.mean, 100 * k1.top1,
                    t_distill))
local better = math.log(k1.ppl) < math.log(k0.ppl) and k1.mean < k0.mean
print(string.format("distilled better on both: %s (%.0f s in all)", better and "yes" or "no", clock() - t_start))
