--- slm.train.cli: the `slm train` command (lua/slm/cli.lua hands it its
-- arguments unparsed).
--
--   slm train CORPUS... --out model.gguf [--preset shakespeare-char]
--             [--arch llama --dim N --layers N --heads N --kv-heads N --ff N]
--             [--chars | --vocab N | --tokenizer FILE] [--steps N] [--minutes M]
--             [--batch B] [--ctx T] [--lr X] [--warmup N] [--min-lr X]
--             [--weight-decay X] [--clip X] [--eval-every N] [--eval-batches N]
--             [--seed N] [--resume CKPT] [--plot loss.svg] [--threads N] [--dry-run]
--
-- CORPUS: text files (concatenated in order), or one token file
-- (slm.train.data; then --tokenizer FILE names its tokenizer). The text is
-- encoded into a temporary token file; the first 90 % of the ids train, the
-- rest validate (nanoGPT's split). The defaults are the preset
-- shakespeare-char (the speed anchor of fixtures/train/train-tiny-README.md):
-- a character tokenizer, llama dim 128, 4 layers, 4 heads, ff 352, ctx 64,
-- batch 12, AdamW lr 1e-3, betas (0.9, 0.99), weight decay 0.1, clip 1,
-- 100 warmup steps then cosine to 1e-4 at the last step, 2000 steps,
-- validation every 250 steps over 200 fixed batches. Flags override them.
--
-- The model is saved to --out (with the optimizer state beside it,
-- OUT.optim.gguf) at every validation and at the end, carrying its tokenizer,
-- so `slm run OUT -p ...` generates from it and `--resume OUT` continues the
-- run (the batches continue the same stream). --minutes stops at a time
-- budget; without --steps the schedule's length is then estimated from the
-- speed of a few steps. Progress is one line rewritten in place on a
-- terminal (loss, tokens/s, ETA); validation losses go to stdout.
local slm = require "slm"
local data = require "slm.train.data"
local plot = require "slm.train.plot"
local progress = require "slm.progress"

local M = {}

M.usage = "train CORPUS... --out MODEL.gguf [--preset NAME] [--chars | --vocab N | --tokenizer FILE] "
  .. "[--steps N | --minutes M] [--resume CKPT] [--plot FILE.svg] ...  (slm train --help: every flag)"
M.full_usage = "train CORPUS... --out MODEL.gguf [--preset NAME | --arch llama --dim N --layers N --heads N "
  .. "--kv-heads N --ff N] [--chars | --vocab N | --tokenizer FILE] [--steps N] [--minutes M] [--batch B] "
  .. "[--ctx T] [--lr X] [--warmup N] [--min-lr X] [--weight-decay X] [--clip X] [--eval-every N] "
  .. "[--eval-batches N] [--seed N] [--resume CKPT] [--plot FILE.svg] [--threads N] [--dry-run]"
M.help = "train a small model from scratch on text files (slm.train)"

-- An expected failure: one line, "slm: ..." (cli.lua prints errors raised
-- at level 0 without a position).
local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

M.PRESETS = {
  ["shakespeare-char"] = {
    arch = "llama", tokenizer = "chars", dim = 128, layers = 4, heads = 4, kv_heads = 4, ff = 352, ctx = 64,
    batch = 12, lr = 1e-3, betas = { 0.9, 0.99 }, eps = 1e-8, weight_decay = 0.1, clip = 1.0, warmup = 100,
    min_lr = 1e-4, steps = 2000, eval_every = 250, eval_batches = 200, seed = 1,
  },
}
local DEFAULT_PRESET = "shakespeare-char"

-- flag -> {key, type, min}; types int, num, str, bool
local FLAGS = {
  ["--out"] = { "out", "str" }, ["-o"] = { "out", "str" },
  ["--preset"] = { "preset", "str" }, ["--arch"] = { "arch", "str" },
  ["--dim"] = { "dim", "int", 1 }, ["--layers"] = { "layers", "int", 1 }, ["--heads"] = { "heads", "int", 1 },
  ["--kv-heads"] = { "kv_heads", "int", 1 }, ["--ff"] = { "ff", "int", 1 },
  ["--tokenizer"] = { "tokenizer_file", "str" }, ["--vocab"] = { "vocab", "int", 257 },
  ["--chars"] = { "chars", "bool" },
  ["--steps"] = { "steps", "int", 1 }, ["--minutes"] = { "minutes", "num", 0 },
  ["--batch"] = { "batch", "int", 1 }, ["--ctx"] = { "ctx", "int", 1 },
  ["--lr"] = { "lr", "num", 0 }, ["--warmup"] = { "warmup", "int", 0 }, ["--min-lr"] = { "min_lr", "num", 0 },
  ["--weight-decay"] = { "weight_decay", "num", 0 }, ["--clip"] = { "clip", "num", 0 },
  ["--eval-every"] = { "eval_every", "int", 1 }, ["--eval-batches"] = { "eval_batches", "int", 1 },
  ["--seed"] = { "seed", "int", 0 }, ["--resume"] = { "resume", "str" }, ["--plot"] = { "plot", "str" },
  ["--threads"] = { "threads", "int", 1 }, ["-t"] = { "threads", "int", 1 },
  ["--dry-run"] = { "dry_run", "bool" }, ["--debug"] = { "debug", "bool" },
  ["--help"] = { "help", "bool" }, ["-h"] = { "help", "bool" },
}

-- flags whose value must be above (not at) their minimum
local STRICT = { minutes = true, lr = true, clip = true }
M.FLAGS, M.STRICT = FLAGS, STRICT   -- slm distill (train/distill_cli.lua) extends them

--- parse(argv) -> files, opt (raises "option --x ..." on a bad flag)
function M.parse(argv)
  return require("slm.flags").parse(argv, FLAGS, fail, { strict = STRICT, nonempty = true,
                                                          unknown = "unknown option '%s' for train (`slm train --help`)" })
end

--- config(files, opt) -> cfg: the preset with the flags applied, checked
function M.config(files, opt)
  if #files == 0 then fail("usage: slm %s", M.full_usage) end
  if not opt.out then fail("train: --out MODEL.gguf is required (where the trained model goes)") end
  local pname = opt.preset or DEFAULT_PRESET
  local preset = M.PRESETS[pname]
  if not preset then
    local names = {}
    for k in pairs(M.PRESETS) do names[#names + 1] = k end
    table.sort(names)
    fail("option --preset: unknown preset '%s' (%s)", pname, table.concat(names, ", "))
  end
  local cfg = { files = files, preset = pname }
  for k, v in pairs(preset) do cfg[k] = v end
  for k, v in pairs(opt) do cfg[k] = v end
  -- the tokenizer: one of --chars, --vocab, --tokenizer
  local given = (opt.chars and 1 or 0) + (opt.vocab and 1 or 0) + (opt.tokenizer_file and 1 or 0)
  if given > 1 then fail("train: give one of --chars, --vocab N and --tokenizer FILE") end
  if opt.vocab then cfg.tokenizer = "bpe"
  elseif opt.tokenizer_file then cfg.tokenizer = "file"
  elseif opt.chars then cfg.tokenizer = "chars" end
  local ARCHS = { llama = true, mamba = true, rwkv7 = true }
  if not ARCHS[cfg.arch] then fail("option --arch must be llama, mamba or rwkv7 (got %s)", cfg.arch) end
  if cfg.arch ~= "llama" and cfg.arch ~= preset.arch then
    -- the preset's shape is a transformer's: a recurrent student takes only
    -- what the flags say
    for _, k in ipairs { "heads", "kv_heads", "ff" } do cfg[k] = opt[k] end
  end
  if cfg.arch == "llama" then
    if not opt.kv_heads and opt.heads then cfg.kv_heads = opt.heads end
    if cfg.dim % cfg.heads ~= 0 then
      fail("option --heads: %d heads do not divide --dim %d", cfg.heads, cfg.dim)
    end
    if (cfg.dim // cfg.heads) % 2 ~= 0 then
      fail("option --heads: the head size --dim / --heads = %d must be even (RoPE rotates pairs)", cfg.dim // cfg.heads)
    end
    if cfg.heads % cfg.kv_heads ~= 0 then
      fail("option --kv-heads: %d kv heads do not divide --heads %d", cfg.kv_heads, cfg.heads)
    end
  end
  if opt.minutes and not opt.steps then cfg.steps = nil end
  if cfg.steps and cfg.warmup >= cfg.steps then
    if opt.warmup then fail("option --warmup: %d warmup steps leave nothing of --steps %d", cfg.warmup, cfg.steps) end
    cfg.warmup = cfg.steps // 10   -- a short run: the preset's warmup scaled down
  end
  if cfg.min_lr > cfg.lr then fail("option --min-lr: %g is above --lr %g", cfg.min_lr, cfg.lr) end
  if cfg.resume and not io.open(cfg.resume, "rb") then
    fail("option --resume: cannot open %s", cfg.resume)
  end
  return cfg
end

local function is_token_file(path)
  local fh = io.open(path, "rb")
  if not fh then return false end
  local magic = fh:read(8)
  fh:close()
  return magic == "SLMTOKEN"
end

local function tmpname(suffix)
  local p = os.tmpname()
  os.remove(p)
  return p .. suffix
end

--- prepare(cfg [, log]) -> prep: the tokenizer, the token file and the
-- batch streams ({tok =, carry = bool, toks =, token_path =, temp =,
-- train =, val =, val_set = (list of batches)}); log(line) reports steps.
function M.prepare(cfg, log)
  log = log or function() end
  for _, f in ipairs(cfg.files) do
    local fh, err = io.open(f, "rb")
    if not fh then fail("train: %s", err) end
    fh:close()
  end
  local prep = {}
  local tokfile = #cfg.files == 1 and is_token_file(cfg.files[1])
  if tokfile and cfg.tokenizer ~= "file" then
    fail("train: %s is a token file: name its tokenizer with --tokenizer FILE", cfg.files[1])
  end
  -- the tokenizer
  if cfg.tokenizer == "chars" then
    local ok, tok, err = pcall(data.char_tokenizer, cfg.files)
    if not ok then fail("train: %s", tostring(tok)) end
    if not tok then fail("train: %s", err) end
    prep.tok = tok
    log(string.format("tokenizer: %d characters", #tok))
  elseif cfg.tokenizer == "bpe" then
    local gg = tmpname(".vocab.gguf")
    local trained, err = slm.tokenizer.train { files = cfg.files, vocab_size = cfg.vocab, pre = "gpt-2", gguf = gg }
    if not trained then fail("train: --vocab: %s", err) end
    prep.tok = assert(data.load_tokenizer(gg))
    os.remove(gg)
    log(string.format("tokenizer: byte-level BPE of %d tokens learnt from the corpus", #prep.tok))
  else
    local tok, err = data.load_tokenizer(cfg.tokenizer_file)
    if not tok then fail("option --tokenizer: %s", err) end
    prep.tok = tok
    log(string.format("tokenizer: %s (%d tokens)", cfg.tokenizer_file, #tok))
  end
  prep.carry = data.tokenizer_metadata(prep.tok) ~= nil
  -- the token file
  if tokfile then
    prep.token_path = cfg.files[1]
  else
    prep.token_path = tmpname(".tok")
    prep.temp = true
    local bar = progress.new("tokenize", nil, "B")
    local ok, n, err = pcall(data.tokenize, prep.tok, cfg.files, prep.token_path, {
      progress = function(done, total)
        bar.total = total
        bar:update(done)
      end })
    bar:finish()
    if not ok then fail("train: %s", tostring(n)) end
    if not n then fail("train: %s", err) end
  end
  local toks, err = data.open(prep.token_path)
  if not toks then fail("train: %s", err) end
  prep.toks = toks
  if toks:vocab() > #prep.tok then
    fail("train: %s holds ids up to %d, the tokenizer has %d tokens", prep.token_path, toks:vocab() - 1, #prep.tok)
  end
  local ok, train = pcall(data.batches, toks, { ctx = cfg.ctx, batch = cfg.batch, seed = cfg.seed, split = 0.9 })
  if not ok then fail("train: %s (lower --ctx or give more text)", (tostring(train):gsub("^batches: ", ""))) end
  local vok, val = pcall(data.batches, toks, { ctx = cfg.ctx, batch = cfg.batch, seed = cfg.seed + 1,
                                               split = { 0.9, "val" } })
  if not vok then fail("train: %s (lower --ctx or give more text)", (tostring(val):gsub("^batches: ", ""))) end
  prep.train, prep.val = train, val
  prep.val_set = val:take(cfg.eval_batches)
  log(string.format("data: %d tokens, %d train / %d validation", toks:count(), train.hi - train.lo + 1,
                    val.hi - val.lo + 1))
  return prep
end

function M.cleanup(prep)
  if prep and prep.toks then prep.toks:close() end
  if prep and prep.temp then os.remove(prep.token_path) end
end

-- "3m05s"
local function duration(s)
  if s ~= s or s == math.huge then return "?" end
  s = math.floor(s + 0.5)
  if s >= 3600 then return string.format("%dh%02dm", s // 3600, s % 3600 // 60) end
  if s >= 60 then return string.format("%dm%02ds", s // 60, s % 60) end
  return string.format("%ds", s)
end

local function rate(x)
  if x >= 1e3 then return string.format("%.1fk", x / 1e3) end
  return string.format("%.0f", x)
end

M.duration, M.rate = duration, rate   -- for slm finetune's progress line

-- model arguments of slm.train.init from the configuration
local function init_args(cfg, vocab)
  return { arch = cfg.arch, vocab = vocab, dim = cfg.dim, layers = cfg.layers, heads = cfg.heads,
           kv_heads = cfg.kv_heads, ff = cfg.ff, ctx = cfg.ctx, tied = false, seed = cfg.seed }
end

local function trainer_opts(cfg, total, resume)
  return { lr = cfg.lr, betas = cfg.betas, eps = cfg.eps, weight_decay = cfg.weight_decay, clip = cfg.clip,
           warmup = cfg.warmup, total_steps = total, min_lr = cfg.min_lr, resume = resume }
end

--- run(cfg [, log]): prepare, train, save (the whole command after
-- parsing); log(line) receives the report lines (default: stdout)
function M.run(cfg, log)
  log = log or function(line) io.stdout:write(line, "\n") io.stdout:flush() end
  local prep = M.prepare(cfg, log)
  local ok, err = pcall(M.train, cfg, prep, log)
  M.cleanup(prep)
  if not ok then error(err, 0) end
end

--- train(cfg, prep, log): the training loop
function M.train(cfg, prep, log)
  local strain = slm.train
  if not (strain and strain.init and strain.trainer) then fail("train: this build has no trainer (slm.train)") end
  local vocab = #prep.tok
  local clock = slm.core.clock
  local iok, model = pcall(strain.init, init_args(cfg, vocab))
  if not iok then fail("train: %s", (tostring(model):gsub("^[^\n]-%.lua:%d+: ", ""))) end
  if prep.carry then
    model.tokenizer = prep.tok
  else
    log("note: this tokenizer cannot be written into a GGUF (" .. cfg.tokenizer_file
        .. " is not one); the model is saved without it")
  end
  local nparams = 0
  for _, name in ipairs(model.param_names) do nparams = nparams + model.params[name]:numel() end
  local tokens_per_step = cfg.batch * cfg.ctx

  -- the schedule's length: --steps, or what --minutes allows at the speed of
  -- a few steps of a throwaway trainer
  -- one optimizer step; cfg.step(tr, batch) replaces it (slm distill's loss)
  local function one_step(t, b) if cfg.step then return cfg.step(t, b) end return t:step(b) end
  local total = cfg.steps
  local deadline = cfg.minutes and clock() + cfg.minutes * 60 or nil
  if not total then
    local tr0 = strain.trainer(model, trainer_opts(cfg, 1000000))
    local probe = data.batches(prep.toks, { ctx = cfg.ctx, batch = cfg.batch, seed = cfg.seed })
    one_step(tr0, probe:next())                      -- the first step allocates
    local t0, n = clock(), 3
    for _ = 1, n do one_step(tr0, probe:next()) end
    local per = (clock() - t0) / n
    total = math.max(1, math.floor((deadline - clock()) / per * 0.9))
    model = strain.init(init_args(cfg, vocab))       -- the probe moved the weights
    if prep.carry then model.tokenizer = prep.tok end
    log(string.format("schedule: %d steps fit in %s at %.3f s/step", total, duration(cfg.minutes * 60), per))
  end
  local topts = trainer_opts(cfg, total, cfg.resume)
  local tok_, tr = pcall(strain.trainer, model, topts)
  if not tok_ then fail("train: %s", (tostring(tr):gsub("^[^\n]-%.lua:%d+: ", ""))) end
  if tr.step_count > 0 then
    prep.train:skip(tr.step_count)
    log(string.format("resumed %s at step %d", cfg.resume, tr.step_count))
  end
  log(string.format("model: %s, dim %d, %d layers, %d heads (%d kv), ff %d, vocab %d: %d parameters",
                    cfg.arch, cfg.dim, cfg.layers, cfg.heads or 0, cfg.kv_heads or 0, cfg.ff or 0, vocab, nparams))
  log(string.format("training: %d steps of %d x %d tokens, lr %g (warmup %d, cosine to %g), threads %d",
                    total, cfg.batch, cfg.ctx, cfg.lr, cfg.warmup, cfg.min_lr, slm.threads()))

  local hist = { train = {}, val = {} }
  local function evaluate()
    local t0, sum = clock(), 0
    for _, b in ipairs(prep.val_set) do sum = sum + tr:eval_loss(b) end
    return sum / #prep.val_set, clock() - t0
  end
  local function save()
    local sok, serr = pcall(tr.save, tr, cfg.out)
    if not sok then fail("train: %s", (tostring(serr):gsub("^[^\n]-%.lua:%d+: ", ""))) end
    if cfg.plot then
      local names = {}
      for i, f in ipairs(cfg.files) do names[i] = f:match("[^/]*$") end
      local pok, perr = plot.svg(cfg.plot, { title = "slm train " .. table.concat(names, " "), xlabel = "step",
                                             ylabel = "loss (nats/token)",
                                             series = { { name = "train", points = hist.train },
                                                        { name = "validation", points = hist.val, dots = true } } })
      if not pok then fail("option --plot: %s", perr) end
    end
  end

  local on_tty = progress.enabled()
  local function line(s)
    if on_tty then io.stderr:write("\r", s, "\27[K") io.stderr:flush() end
  end
  local function report_val(step, train_loss)
    local v, secs = evaluate()
    hist.val[#hist.val + 1] = { step, v }
    line("")
    if on_tty then io.stderr:write("\r") end
    log(string.format("step %d: validation loss %.4f%s (%.1fs)", step, v,
                      train_loss and string.format(", train %.4f", train_loss) or "", secs))
    return v, secs
  end

  local t_start, t_train, steps_run = clock(), 0, 0
  local recent, last_val = {}, nil
  if tr.step_count == 0 or tr.step_count % cfg.eval_every == 0 then last_val = report_val(tr.step_count) end
  local last_draw = 0
  while tr.step_count < total and not (deadline and clock() >= deadline) do
    local t0 = clock()
    local batch = prep.train:next()
    local step = tr.step_count
    local loss = one_step(tr, batch)
    local dt = clock() - t0
    t_train, steps_run = t_train + dt, steps_run + 1
    if loss ~= loss or loss == math.huge then
      fail("train: the loss is %s at step %d (lower --lr?)", tostring(loss), step)
    end
    hist.train[#hist.train + 1] = { step, loss }
    recent[#recent + 1] = loss
    if #recent > 50 then table.remove(recent, 1) end
    local now = clock()
    if on_tty and now - last_draw >= 0.1 then
      last_draw = now
      local avg = 0
      for _, l in ipairs(recent) do avg = avg + l end
      avg = avg / #recent
      local per = t_train / steps_run
      local left = (total - tr.step_count) * per
      if deadline then left = math.min(left, deadline - now) end
      line(string.format("step %d/%d  loss %.4f  lr %.2e  %s tok/s  ETA %s", tr.step_count, total, avg,
                         tr:lr(), rate(tokens_per_step / per), duration(left)))
    end
    if tr.step_count % cfg.eval_every == 0 or tr.step_count == total then
      local avg = 0
      for _, l in ipairs(recent) do avg = avg + l end
      last_val = report_val(tr.step_count, avg / #recent)
      save()
    end
  end
  if hist.val[#hist.val] == nil or hist.val[#hist.val][1] ~= tr.step_count then
    last_val = report_val(tr.step_count)   -- stopped by --minutes between validations
    save()
  elseif steps_run == 0 then
    save()
  end
  local wall = clock() - t_start
  local rss = require("slm.bench").peak_rss_kb()
  log(string.format("done: %d steps in %s (%s training, %.3f s/step, %s tok/s), validation loss %.4f, "
                    .. "peak RSS %.0f MB; saved %s", tr.step_count, duration(wall), duration(t_train),
                    steps_run > 0 and t_train / steps_run or 0,
                    rate(steps_run > 0 and tokens_per_step * steps_run / t_train or 0), last_val or 0 / 0,
                    rss / 1024, cfg.out))
end

local function print_help()
  io.write("usage: slm ", M.full_usage, "\n\n", M.help, ".\n\n")
  local p = M.PRESETS[DEFAULT_PRESET]
  io.write(string.format([[
  CORPUS          text files (or one token file made by slm.train.data, with --tokenizer)
  --out FILE      the trained model (GGUF; FILE.optim.gguf holds the optimizer state)
  --preset NAME   %s (the defaults below)
  model           --arch llama (or mamba, rwkv7: --heads and --ff apply to rwkv7) --dim %d --layers %d --heads %d
                  --kv-heads %d --ff %d
  tokenizer       --chars (default: the corpus's characters), --vocab N (byte-level BPE learnt
                  from the corpus), --tokenizer FILE (a GGUF carries over into the model)
  length          --steps %d, --minutes M (stop at a time budget)
  batches         --batch %d --ctx %d --seed %d  (90 %% of the ids train, 10 %% validate)
  optimizer       AdamW --lr %g --warmup %d --min-lr %g --weight-decay %g --clip %g, betas (%g, %g)
  validation      --eval-every %d --eval-batches %d
  also            --resume CKPT (an --out of an earlier run), --plot FILE.svg (loss curves),
                  --threads N, --dry-run (prepare the data and print the plan)
]], DEFAULT_PRESET, p.dim, p.layers, p.heads, p.kv_heads, p.ff, p.steps, p.batch, p.ctx, p.seed, p.lr, p.warmup,
      p.min_lr, p.weight_decay, p.clip, p.betas[1], p.betas[2], p.eval_every, p.eval_batches))
end

--- main(argv): the command (raises on failure; cli.lua prints "slm: ...")
function M.main(argv)
  local files, opt = M.parse(argv)
  if opt.help then print_help() return end
  if opt.threads then slm.threads(opt.threads) end
  local cfg = M.config(files, opt)
  if cfg.dry_run then
    local prep = M.prepare(cfg, function(l) io.write(l, "\n") end)
    io.write(string.format("plan: %s, dim %d, %d layers, %s steps of %d x %d tokens, lr %g, save to %s\n",
                           cfg.arch, cfg.dim, cfg.layers, cfg.steps and tostring(cfg.steps) or
                           string.format("%g minutes of", cfg.minutes), cfg.batch, cfg.ctx, cfg.lr, cfg.out))
    M.cleanup(prep)
    return
  end
  M.run(cfg)
end

return M
