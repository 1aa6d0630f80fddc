--- slm.train.distill_cli: the `slm distill` command - `slm train` with a
-- teacher (lua/slm/cli.lua hands it its arguments unparsed).
--
--   slm distill TEACHER CORPUS... --out STUDENT.gguf
--       [--student-preset NAME | --arch llama --dim N --layers N --heads N --kv-heads N --ff N]
--       [--temperature T] [--alpha A] [--topk K [--cache FILE]]
--       [--steps N | --minutes M] [--batch B] [--ctx T] [--lr X] ... [--plot FILE.svg]
--
-- TEACHER: any model slm loads ("default": the shipped one) with a
-- tokenizer; the student gets the teacher's tokenizer (the corpus is
-- encoded with it, and the saved student carries it), so the vocabularies
-- match. Every other flag is `slm train`'s (lua/slm/train/cli.lua: the
-- preset shakespeare-char's shape and schedule unless flags say
-- otherwise), and so are the progress line, the validation reports
-- (cross-entropy on the validation split), the checkpoints and the plot.
-- Each step's loss is the distillation loss alpha T^2 KL + (1 - alpha) CE
-- (slm.train.distill): --alpha 0.5 and --temperature 2 by default; --topk K
-- distills from the teacher's K largest logits per position, and --cache
-- FILE keeps those on disk by step (a rerun or --resume with the same
-- --seed reads them instead of running the teacher).
local slm = require "slm"
local train_cli = require "slm.train.cli"
local distill = require "slm.train.distill"

local M = {}

M.usage = "distill TEACHER CORPUS... --out STUDENT.gguf [--student-preset NAME | --dim N --layers N --heads N --ff N] "
  .. "[--temperature T] [--alpha A] [--topk K [--cache FILE]] ...  (slm distill --help: every flag)"
M.help = "train a small student model on text files with a teacher model's logits (knowledge distillation)"

local function fail(fmt, ...) error(string.format(fmt, ...), 0) end

local FLAGS = {}
for k, v in pairs(train_cli.FLAGS) do FLAGS[k] = v end
FLAGS["--student-preset"] = { "preset", "str" }
FLAGS["--preset"] = nil
FLAGS["--temperature"] = { "temperature", "num", 0 }
FLAGS["--alpha"] = { "alpha", "num", 0 }
FLAGS["--topk"] = { "topk", "int", 1 }
FLAGS["--cache"] = { "cache", "str" }
local STRICT = { temperature = true }
for k, v in pairs(train_cli.STRICT) do STRICT[k] = v end

function M.parse(argv)
  return require("slm.flags").parse(argv, FLAGS, fail, { strict = STRICT, nonempty = true,
                                                          unknown = "unknown option '%s' for distill (`slm distill --help`)" })
end

local function print_help()
  io.write("usage: slm distill TEACHER CORPUS... --out STUDENT.gguf [flags]\n\n", M.help, ".\n\n", [[
  TEACHER         a model slm loads, with a tokenizer ("default": slm's default model); the
                  student gets its tokenizer and vocabulary
  CORPUS          text files (encoded with the teacher's tokenizer; 90 % train, 10 % validate)
  --out FILE      the student (GGUF; FILE.optim.gguf holds the optimizer state)
  distillation    --alpha 0.5 (weight of the teacher's term), --temperature 2, --topk K (the
                  teacher's K largest logits per position, renormalized), --cache FILE (with
                  --topk: the teacher's top-K kept on disk by step, reused by a rerun)
  student         --student-preset shakespeare-char (default), or --arch llama --dim N --layers N
                  --heads N --kv-heads N --ff N
  training        every flag of `slm train` but the tokenizer's: --steps N, --minutes M, --batch B,
                  --ctx T, --lr X, --warmup N, --min-lr X, --weight-decay X, --clip X,
                  --eval-every N, --eval-batches N, --seed N, --resume CKPT, --plot FILE.svg,
                  --threads N, --dry-run  (slm train --help)
]])
end

function M.main(argv)
  local files, opt = M.parse(argv)
  if opt.help then print_help() return end
  if opt.chars or opt.vocab or opt.tokenizer_file then
    fail("distill: the student takes the teacher's tokenizer (no --chars, --vocab or --tokenizer)")
  end
  if #files < 2 then fail("usage: slm %s", M.usage) end
  if opt.cache and not opt.topk then fail("option --cache needs --topk K (the cache keeps the teacher's top-K logits)") end
  local alpha = opt.alpha or 0.5
  if alpha > 1 then fail("option --alpha must be in [0, 1] (got %s)", alpha) end
  if opt.threads then slm.threads(opt.threads) end
  local tname = table.remove(files, 1)
  local tpath, rerr = slm.model.resolve(tname)
  if not tpath then fail("%s", rerr) end
  local teacher, lerr = slm.load(tpath)
  if not teacher then fail("distill: teacher %s: %s", tname, lerr) end
  if teacher.def.encoder then fail("distill: teacher %s is an encoder (no logits)", tname) end
  if not teacher.tokenizer then fail("distill: teacher %s has no tokenizer", tname) end
  if opt.topk and opt.topk > teacher.hp.n_vocab then
    fail("option --topk: %d is above the teacher's vocabulary (%d)", opt.topk, teacher.hp.n_vocab)
  end
  opt.tokenizer_file = tpath
  local cfg = train_cli.config(files, opt)
  local log = function(line) io.stdout:write(line, "\n") io.stdout:flush() end
  log(string.format("teacher: %s (%s, vocabulary %d); alpha %g, temperature %g, %s", tname, teacher.hp.arch,
                    teacher.hp.n_vocab, alpha, opt.temperature or 2,
                    opt.topk and string.format("top-%d%s", opt.topk, opt.cache and (", cache " .. opt.cache) or "")
                      or "all logits"))
  log("(train losses below are the distillation loss alpha T^2 KL + (1 - alpha) CE; validation losses are "
      .. "the cross-entropy)")
  if cfg.dry_run then
    local prep = train_cli.prepare(cfg, log)
    train_cli.cleanup(prep)
    return
  end
  local d
  cfg.step = function(tr, batch)
    if not d or d.tr ~= tr then
      if d then d:close() end
      local ok, made = pcall(distill.distiller, teacher, tr, { alpha = alpha, temperature = opt.temperature,
                                                                 topk = opt.topk, cache = opt.cache })
      if not ok then fail("%s", (tostring(made):gsub("^[^\n]-%.lua:%d+: ", ""))) end
      d = made
    end
    return (d:step(batch, tr.step_count))
  end
  local ok, err = pcall(train_cli.run, cfg, log)
  if d then d:close() end
  if not ok then error(err, 0) end
end

return M
