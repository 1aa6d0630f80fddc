--- slm.train.finetune_cli: the `slm finetune --lora` command (lua/slm/cli.lua
-- hands it its arguments unparsed).
--
--   slm finetune --lora BASE CORPUS... --out ADAPTER.gguf [--rank 8] [--alpha 16]
--                [--dropout 0.05] [--targets PATTERN]... [--steps 200] [--lr 1e-3]
--                [--batch 8] [--ctx 128] [--warmup N] [--weight-decay 0] [--clip 1]
--                [--eval-every 50] [--eval-batches 20] [--seed 1] [--plot FILE.svg] [--threads N]
--
-- BASE is any model slm trains (llama family, gemma...; "default" is the
-- shipped model), of any dtype: it is loaded with {train = "lora"} and stays
-- as stored. CORPUS is encoded with the base's own tokenizer; the first 90 %
-- of the ids train, the rest validate. The adapter is written at every
-- validation and at the end in the reference's LoRA GGUF layout
-- (slm.load(BASE, {lora = {{path = ADAPTER}}}), model:lora_add(ADAPTER),
-- llama.cpp's --lora). Progress is one line
-- rewritten in place on a terminal; validation losses go to stdout.
local slm = require "slm"
local data = require "slm.train.data"
local plot = require "slm.train.plot"
local progress = require "slm.progress"
local train_cli = require "slm.train.cli"

local M = {}

M.usage = "finetune --lora BASE CORPUS... --out ADAPTER.gguf [--rank R --alpha A --dropout P --targets PAT] "
  .. "[--steps N --lr X --batch B --ctx T] [--plot FILE.svg] ...  (slm finetune --help: every flag)"
M.help = "train a LoRA adapter over a frozen base of any dtype (slm.train.lora)"

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

M.DEFAULTS = { rank = 8, alpha = 16, dropout = 0.05, steps = 200, lr = 1e-3, batch = 8, ctx = 128, warmup = 10,
               weight_decay = 0, clip = 1.0, eval_every = 50, eval_batches = 20, seed = 1 }

local FLAGS = {
  ["--lora"] = { "lora", "bool" }, ["--out"] = { "out", "str" }, ["-o"] = { "out", "str" },
  ["--rank"] = { "rank", "int", 1 }, ["--alpha"] = { "alpha", "num", 0 }, ["--dropout"] = { "dropout", "num", 0 },
  ["--targets"] = { "targets", "list" },
  ["--steps"] = { "steps", "int", 1 }, ["--lr"] = { "lr", "num", 0 }, ["--batch"] = { "batch", "int", 1 },
  ["--ctx"] = { "ctx", "int", 1 }, ["--warmup"] = { "warmup", "int", 0 },
  ["--weight-decay"] = { "weight_decay", "num", 0 }, ["--clip"] = { "clip", "num", 0 },
  ["--eval-every"] = { "eval_every", "int", 1 }, ["--eval-batches"] = { "eval_batches", "int", 1 },
  ["--seed"] = { "seed", "int", 0 }, ["--plot"] = { "plot", "str" },
  ["--threads"] = { "threads", "int", 1 }, ["-t"] = { "threads", "int", 1 },
  ["--help"] = { "help", "bool" }, ["-h"] = { "help", "bool" },
}

--- config(argv) -> cfg (raises the one-line error of a bad command line)
function M.config(argv)
  local pos, opt = require("slm.flags").parse(argv, FLAGS, fail, {
    strict = { lr = true, alpha = true, clip = true }, nonempty = true,
    unknown = "unknown option '%s' for finetune (`slm finetune --help`)" })
  if opt.help then return { help = true } end
  if not opt.lora then fail("finetune: only --lora fine-tuning exists: slm %s", M.usage) end
  if #pos < 2 then fail("usage: slm %s", M.usage) end
  if not opt.out then fail("finetune: --out ADAPTER.gguf is required (where the adapter goes)") end
  local cfg = { base = pos[1], files = { table.unpack(pos, 2) } }
  for k, v in pairs(M.DEFAULTS) do cfg[k] = v end
  for k, v in pairs(opt) do cfg[k] = v end
  if cfg.dropout >= 1 then fail("option --dropout must be below 1 (got %g)", cfg.dropout) end
  if cfg.warmup >= cfg.steps then cfg.warmup = cfg.steps // 10 end
  return cfg
end

--- run(cfg [, log]) -> trainer, history: the whole command after parsing
function M.run(cfg, log)
  log = log or function(line) io.stdout:write(line, "\n") io.stdout:flush() end
  local base, err = slm.load(cfg.base, { train = "lora" })
  if not base then fail("finetune: %s", err) end
  if not base.tokenizer then fail("finetune: %s has no tokenizer to encode the corpus with", cfg.base) end
  for _, f in ipairs(cfg.files) do
    local fh, ferr = io.open(f, "rb")
    if not fh then fail("finetune: %s", ferr) end
    fh:close()
  end
  local tok_path = os.tmpname()
  local ok, n, terr = pcall(data.tokenize, base.tokenizer, cfg.files, tok_path)
  if not ok or not n then os.remove(tok_path) fail("finetune: %s", tostring(ok and terr or n)) end
  local toks, oerr = data.open(tok_path)
  if not toks then os.remove(tok_path) fail("finetune: %s", oerr) end
  local function cleanup() toks:close() os.remove(tok_path) end
  local res = table.pack(pcall(M.loop, cfg, base, toks, log))
  cleanup()
  if not res[1] then error(res[2], 0) end
  return res[2], res[3]
end

function M.loop(cfg, base, toks, log)
  local bok, train = pcall(data.batches, toks, { ctx = cfg.ctx, batch = cfg.batch, seed = cfg.seed, split = 0.9 })
  if not bok then fail("finetune: %s (lower --ctx or give more text)", (tostring(train):gsub("^batches: ", ""))) end
  local vok, val = pcall(data.batches, toks, { ctx = cfg.ctx, batch = cfg.batch, seed = cfg.seed + 1,
                                               split = { 0.9, "val" } })
  if not vok then fail("finetune: %s (lower --ctx or give more text)", (tostring(val):gsub("^batches: ", ""))) end
  local val_set = val:take(cfg.eval_batches)
  local targets = cfg.targets
  if targets and #targets == 0 then targets = nil end
  local tok_, tr = pcall(slm.train.trainer, base, {
    lora = { rank = cfg.rank, alpha = cfg.alpha, dropout = cfg.dropout, targets = targets, seed = cfg.seed },
    lr = cfg.lr, weight_decay = cfg.weight_decay, clip = cfg.clip, warmup = cfg.warmup,
    total_steps = cfg.steps, min_lr = cfg.lr * 0.1 })
  if not tok_ then fail("finetune: %s", (tostring(tr):gsub("^[^\n]-%.lua:%d+: ", ""))) end
  local nbase, gf = 0, assert(slm.gguf.open(base.path))
  for _, info in ipairs(gf.tensors) do nbase = nbase + info.bytes end
  gf:close()
  log(string.format("base: %s (%s); adapter: rank %d, alpha %g, dropout %g on %d weights, %d bytes (%.2f %% of the base)",
                    cfg.base, base.path, cfg.rank, cfg.alpha, cfg.dropout, #tr.lora.targets, tr:adapter_bytes(),
                    100 * tr:adapter_bytes() / nbase))
  local clock = slm.core.clock
  local hist = { train = {}, val = {} }
  local function evaluate()
    local sum = 0
    for _, b in ipairs(val_set) do sum = sum + tr:eval_loss(b) end
    return sum / #val_set
  end
  local function save()
    local sok, serr = pcall(tr.save_adapter, tr, cfg.out)
    if not sok then fail("finetune: %s", (tostring(serr):gsub("^[^\n]-%.lua:%d+: ", ""))) end
    if cfg.plot then
      local pok, perr = plot.svg(cfg.plot, { title = "slm finetune --lora " .. cfg.base, xlabel = "step",
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
  local function report(step)
    local v = evaluate()
    hist.val[#hist.val + 1] = { step, v }
    line("")
    log(string.format("step %d: validation loss %.4f", step, v))
    return v
  end
  local first = report(0)
  local t_train, recent, last_draw, last = 0, {}, 0, first
  local tokens_per_step = cfg.batch * cfg.ctx
  while tr.step_count < cfg.steps do
    local t0 = clock()
    local loss = tr:step(train:next())
    t_train = t_train + clock() - t0
    if loss ~= loss or loss == math.huge then fail("finetune: the loss is %s at step %d (lower --lr?)", tostring(loss), tr.step_count) end
    hist.train[#hist.train + 1] = { tr.step_count, loss }
    recent[#recent + 1] = loss
    if #recent > 20 then table.remove(recent, 1) end
    local now = clock()
    if on_tty and now - last_draw >= 0.1 then
      last_draw = now
      local avg = 0
      for _, l in ipairs(recent) do avg = avg + l end
      local per = t_train / tr.step_count
      line(string.format("step %d/%d  loss %.4f  lr %.2e  %s tok/s  ETA %s", tr.step_count, cfg.steps, avg / #recent,
                         tr:lr(), train_cli.rate(tokens_per_step / per), train_cli.duration((cfg.steps - tr.step_count) * per)))
    end
    if tr.step_count % cfg.eval_every == 0 or tr.step_count == cfg.steps then
      last = report(tr.step_count)
      save()
    end
  end
  log(string.format("done: %d steps in %s (%.3f s/step), validation loss %.4f -> %.4f; saved %s", tr.step_count,
                    train_cli.duration(t_train), t_train / tr.step_count, first, last, cfg.out))
  return tr, hist
end

local function print_help()
  local d = M.DEFAULTS
  io.write("usage: slm ", M.usage, "\n\n", M.help, ".\n\n", string.format([[
  BASE            a model (any dtype, kept as stored; "default": the shipped model)
  CORPUS          text files, encoded with the base's tokenizer (90 %% train, 10 %% validate)
  --out FILE      the adapter (the reference's LoRA GGUF: slm.load(BASE, {lora = ...}) applies it)
  adapter         --rank %d --alpha %g --dropout %g --targets PATTERN (repeatable; Lua patterns
                  on weight names, default the attention's q and v)
  training        --steps %d --lr %g (warmup %d, cosine to lr/10) --batch %d --ctx %d
                  --weight-decay %g --clip %g --seed %d
  validation      --eval-every %d --eval-batches %d
  also            --plot FILE.svg (loss curves), --threads N
]], d.rank, d.alpha, d.dropout, d.steps, d.lr, d.warmup, d.batch, d.ctx, d.weight_decay, d.clip, d.seed,
     d.eval_every, d.eval_batches))
end

--- main(argv): the command (raises on failure; cli.lua prints "slm: ...")
function M.main(argv)
  local cfg = M.config(argv)
  if cfg.help then print_help() return end
  if cfg.threads then slm.threads(cfg.threads) end
  local path, perr = slm.model.resolve(cfg.base)
  if not path then fail("finetune: %s", perr) end
  M.run(cfg)
end

return M
