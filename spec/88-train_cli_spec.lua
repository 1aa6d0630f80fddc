-- `slm train` (lua/slm/train/cli.lua): flag errors through bin/slm, data
-- preparation (--dry-run), the training loop against a stand-in trainer
-- that records what the command asks of it, and end to end with
-- slm.train's trainer (pending while this build has no training kernels).
local helpers = require "spec.helpers"
local slm = require "slm"
local data = require "slm.train.data"
local tcli = require "slm.train.cli"
local testing = require "slm.testing"

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- run(args) -> stdout, stderr, exit code
local function run(args)
  local errf = os.tmpname()
  local p = io.popen("SLM_PROGRESS=0 bin/slm train " .. args .. " 2>" .. errf .. "; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local err = helpers.read(errf)
  os.remove(errf)
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return (out:gsub("exit=%d+%s*$", "")), err, code
end

-- a small corpus: 40 kB of lines over a few dozen characters
local function corpus(n)
  local lines = {}
  for i = 1, n or 800 do
    lines[i] = string.format("line %d: the cat sat on the mat and saw %d birds.", i, (i * 37) % 101)
  end
  return helpers.tmpfile(table.concat(lines, "\n") .. "\n")
end

local function lines_of(s)
  local t = {}
  for l in s:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("slm train: flags", function()
  local text = corpus(50)
  local out = os.tmpname() .. ".gguf"
  local cases = {
    { "", "slm: usage: slm " .. tcli.full_usage },
    { text, "slm: train: --out MODEL.gguf is required (where the trained model goes)" },
    { text .. " --out " .. out .. " --frobnicate", "slm: unknown option '--frobnicate' for train (`slm train --help`)" },
    { text .. " --out " .. out .. " --steps x", "slm: option --steps: 'x' is not an integer" },
    { text .. " --out " .. out .. " --steps 0", "slm: option --steps must be at least 1 (got 0)" },
    { text .. " --out " .. out .. " --lr 0", "slm: option --lr must be above 0 (got 0)" },
    { text .. " --out " .. out .. " --minutes -1", "slm: option --minutes must be above 0 (got -1)" },
    { text .. " --out " .. out .. " --vocab 100", "slm: option --vocab must be at least 257 (got 100)" },
    { text .. " --out " .. out .. " --batch", "slm: option --batch needs a value" },
    { text .. " --out " .. out .. " --chars=1", "slm: option --chars takes no value" },
    { text .. " --out " .. out .. " --chars --vocab 300", "slm: train: give one of --chars, --vocab N and --tokenizer FILE" },
    { text .. " --out " .. out .. " --preset tiny", "slm: option --preset: unknown preset 'tiny' (shakespeare-char)" },
    { text .. " --out " .. out .. " --arch gpt", "slm: option --arch must be llama, mamba or rwkv7 (got gpt)" },
    { text .. " --out " .. out .. " --heads 3", "slm: option --heads: 3 heads do not divide --dim 128" },
    { text .. " --out " .. out .. " --dim 96 --heads 32", "slm: option --heads: the head size --dim / --heads = 3 must be even (RoPE rotates pairs)" },
    { text .. " --out " .. out .. " --heads 8 --kv-heads 3", "slm: option --kv-heads: 3 kv heads do not divide --heads 8" },
    { text .. " --out " .. out .. " --steps 50 --warmup 50", "slm: option --warmup: 50 warmup steps leave nothing of --steps 50" },
    { text .. " --out " .. out .. " --min-lr 0.01", "slm: option --min-lr: 0.01 is above --lr 0.001" },
    { text .. " --out " .. out .. " --resume /nonexistent/ckpt.gguf", "slm: option --resume: cannot open /nonexistent/ckpt.gguf" },
    { "/nonexistent/corpus.txt --out " .. out, "slm: train: /nonexistent/corpus.txt: No such file or directory" },
    { text .. " --out " .. out .. " --tokenizer /nonexistent/tok.gguf", "slm: option --tokenizer: /nonexistent/tok.gguf: cannot open: No such file or directory" },
    { text .. " --out " .. out .. " --ctx 300 --dry-run",
      "slm: train: the val split holds 249 ids (of 2488 in TOKENS), fewer than a window of ctx + 1 = 301 (lower --ctx or give more text)" },
  }
  for _, c in ipairs(cases) do
    it("refuses: " .. (c[1]:gsub(text, "CORPUS"):gsub(out, "OUT")), function()
      local stdout, err, code = run(c[1])
      assert.equal(1, code)
      if c[2]:find("TOKENS", 1, true) then
        local want = c[2]:gsub("[%(%)%.%-%+%*%?%[%]%^%$%%]", "%%%0"):gsub("TOKENS", "[^)]+")
        assert.matches("^" .. want .. "\n$", err)
      else
        assert.equal(c[2] .. "\n", err)
      end
      if c[1]:find("dry", 1, true) then assert.matches("tokenizer: ", stdout) else assert.equal("", stdout) end
    end)
  end

  it("--help lists the flags and the preset's values", function()
    local stdout, err, code = run("--help")
    assert.equal(0, code, err)
    assert.matches("usage: slm train CORPUS", stdout, 1, true)
    assert.matches("--dim 128 --layers 4 --heads 4", stdout, 1, true)
    assert.matches("AdamW --lr 0.001 --warmup 100 --min-lr 0.0001 --weight-decay 0.1 --clip 1, betas (0.9, 0.99)", stdout, 1, true)
  end)

  it("is listed by slm help", function()
    local p = io.popen("bin/slm help")
    local s = p:read("a")
    p:close()
    assert.matches("\n  train ", s, 1, true)
  end)
end)

describe("slm train --dry-run: data preparation", function()
  it("characters, a learnt BPE, a GGUF tokenizer, a token file", function()
    local text = corpus()
    local size = helpers.size(text)
    local out = os.tmpname() .. ".gguf"
    local stdout, err, code = run(text .. " --out " .. out .. " --dry-run")
    assert.equal(0, code, err)
    local chars = data.char_tokenizer(helpers.read(text))
    local n_train = math.floor(0.9 * size)
    assert.same({ string.format("tokenizer: %d characters", #chars),
                  string.format("data: %d tokens, %d train / %d validation", size, n_train, size - n_train),
                  "plan: llama, dim 128, 4 layers, 2000 steps of 12 x 64 tokens, lr 0.001, save to " .. out },
                lines_of(stdout))
    assert.is_nil(helpers.size(out))

    stdout, err, code = run(text .. " --out " .. out .. " --dry-run --vocab 300 --minutes 2 --ctx 32 --batch 4")
    assert.equal(0, code, err)
    local l = lines_of(stdout)
    assert.equal("tokenizer: byte-level BPE of 300 tokens learnt from the corpus", l[1])
    assert.matches("^data: %d+ tokens", l[2])
    assert.equal("plan: llama, dim 128, 4 layers, 2 minutes of steps of 4 x 32 tokens, lr 0.001, save to " .. out, l[3])

    local g = os.tmpname() .. ".gguf"
    testing.random_model { path = g, vocab = 300, dim = 32, n_layer = 1, n_head = 2, n_ff = 64 }
    stdout, err, code = run(text .. " --out " .. out .. " --dry-run --tokenizer " .. g)
    assert.equal(0, code, err)
    assert.equal("tokenizer: " .. g .. " (300 tokens)", lines_of(stdout)[1])

    -- a token file as the corpus: needs its tokenizer
    local tokf = os.tmpname() .. ".tok"
    assert(data.tokenize(data.load_tokenizer(g), text, tokf))
    stdout, err, code = run(tokf .. " --out " .. out .. " --dry-run")
    assert.equal(1, code)
    assert.equal("slm: train: " .. tokf .. " is a token file: name its tokenizer with --tokenizer FILE\n", err)
    stdout, err, code = run(tokf .. " --out " .. out .. " --dry-run --tokenizer " .. g)
    assert.equal(0, code, err)
    assert.matches("data: %d+ tokens", stdout)
    assert.is_not_nil(helpers.size(tokf))   -- a given token file is kept
  end)
end)

-- A stand-in for slm.train: records the batches, evaluations and saves the
-- command asks for; its loss falls as 4 / (1 + step / 10).
local function fake_train(rec)
  rec.inits, rec.trainers, rec.steps, rec.evals, rec.saves = {}, {}, {}, {}, {}
  return {
    init = function(o)
      rec.inits[#rec.inits + 1] = o
      return { param_names = { "w" }, params = { w = slm.tensor.zeros({ 10 }) } }
    end,
    trainer = function(model, o)
      rec.trainers[#rec.trainers + 1] = o
      local tr = { step_count = o.resume and 20 or 0, model = model }
      function tr:step(b)
        rec.steps[#rec.steps + 1] = { step = self.step_count, batch = b }
        self.step_count = self.step_count + 1
        if rec.sleep then local t = slm.core.clock() while slm.core.clock() - t < rec.sleep do end end
        return 4 / (1 + self.step_count / 10), 1.0
      end
      function tr:eval_loss(b)
        rec.evals[#rec.evals + 1] = { step = self.step_count, batch = b }
        return 3.5 - self.step_count / 100
      end
      function tr:save(p)
        rec.saves[#rec.saves + 1] = { path = p, step = self.step_count, tokenizer = self.model.tokenizer }
        local f = assert(io.open(p, "wb"))
        f:write("weights")
        f:close()
      end
      function tr:lr() return 1e-3 end
      return tr
    end,
  }
end

describe("slm train: the training loop (stand-in trainer)", function()
  local saved
  before_each(function() saved = slm.train end)
  after_each(function() slm.train = saved end)

  local function config(args)
    return tcli.config(tcli.parse(args))
  end

  it("steps, validations, saves and the plot; the batches it trains on", function()
    local rec = {}
    slm.train = fake_train(rec)
    local text = corpus()
    local out, svg = os.tmpname() .. ".gguf", os.tmpname() .. ".svg"
    local cfg = config { text, "--out", out, "--steps", "30", "--eval-every", "10", "--eval-batches", "3",
                         "--plot", svg, "--ctx", "16", "--batch", "4", "--seed", "7" }
    local log = {}
    tcli.run(cfg, function(l) log[#log + 1] = l end)
    -- the model and trainer it asked for
    local tok = data.char_tokenizer(helpers.read(text))
    assert.same({ { arch = "llama", vocab = #tok, dim = 128, layers = 4, heads = 4, kv_heads = 4, ff = 352, ctx = 16,
                    tied = false, seed = 7 } }, rec.inits)
    assert.same({ { lr = 1e-3, betas = { 0.9, 0.99 }, eps = 1e-8, weight_decay = 0.1, clip = 1.0, warmup = 3,
                    total_steps = 30, min_lr = 1e-4 } }, rec.trainers)
    -- 30 steps on the train stream of seed 7, in order
    assert.equal(30, #rec.steps)
    local tokp = os.tmpname() .. ".tok"
    assert(data.tokenize(tok, text, tokp))
    local toks = assert(data.open(tokp))
    local ref = data.batches(toks, { ctx = 16, batch = 4, seed = 7 })
    for k, s in ipairs(rec.steps) do
      assert.equal(k - 1, s.step)
      assert.same({ 4, 17 }, s.batch:shape())
      assert.same(ref:next():totable(), s.batch:totable())
    end
    -- validations at 0, 10, 20, 30 over the same 3 batches from the val split
    assert.equal(12, #rec.evals)
    local val = data.batches(toks, { ctx = 16, batch = 4, seed = 8, split = { 0.9, "val" } }):take(3)
    for k, e in ipairs(rec.evals) do
      assert.equal(((k - 1) // 3) * 10, e.step)
      assert.same(val[(k - 1) % 3 + 1]:totable(), e.batch:totable())
    end
    -- saved at each validation after the start, carrying the tokenizer
    assert.same({ 10, 20, 30 }, { rec.saves[1].step, rec.saves[2].step, rec.saves[3].step })
    assert.equal(3, #rec.saves)
    assert.equal(out, rec.saves[3].path)
    assert.same(data.tokenizer_metadata(tok), rec.saves[3].tokenizer:gguf_metadata())
    -- the report
    assert.equal(string.format("tokenizer: %d characters", #tok), log[1])
    assert.matches("^model: llama, dim 128, 4 layers, 4 heads %(4 kv%), ff 352, vocab %d+: 10 parameters$", log[3])
    assert.equal("training: 30 steps of 4 x 16 tokens, lr 0.001 (warmup 3, cosine to 0.0001), threads " .. slm.threads(), log[4])
    assert.matches("^step 0: validation loss 3%.5000 %(", log[5])
    assert.matches("^step 10: validation loss 3%.4000, train 2%.6751 %(", log[6])
    assert.matches("^step 30: validation loss 3%.2000, train ", log[8])
    assert.matches("^done: 30 steps in .*validation loss 3%.2000, peak RSS %d+ MB; saved " .. out:gsub("%p", "%%%0") .. "$", log[9])
    -- the plot: 30 training points and 4 validation points
    local s = helpers.read(svg)
    local pl = {}
    for pts in s:gmatch('<polyline[^>]- points="([^"]*)"') do
      local n = 0
      for _ in pts:gmatch(",") do n = n + 1 end
      pl[#pl + 1] = n
    end
    assert.same({ 30, 4 }, pl)
    toks:close()
  end)

  it("--resume continues the batch stream where the checkpoint stopped", function()
    local rec = {}
    slm.train = fake_train(rec)
    local text = corpus()
    local ckpt = helpers.tmpfile("checkpoint")
    local cfg = config { text, "--out", os.tmpname() .. ".gguf", "--steps", "25", "--eval-every", "10",
                         "--eval-batches", "2", "--ctx", "16", "--batch", "4", "--resume", ckpt }
    local log = {}
    tcli.run(cfg, function(l) log[#log + 1] = l end)
    assert.equal(ckpt, rec.trainers[1].resume)
    assert.equal(5, #rec.steps)   -- the fake resumes at step 20
    assert.equal(20, rec.steps[1].step)
    local tok = data.char_tokenizer(helpers.read(text))
    local p = os.tmpname() .. ".tok"
    data.tokenize(tok, text, p)
    local toks = assert(data.open(p))
    local ref = data.batches(toks, { ctx = 16, batch = 4, seed = 1 }):skip(20)
    for _, s in ipairs(rec.steps) do assert.same(ref:next():totable(), s.batch:totable()) end
    assert.matches("^resumed .* at step 20$", log[3])
    -- validations at 20 (the resume point) and 25 (the end)
    assert.same({ 20, 20, 25, 25 }, { rec.evals[1].step, rec.evals[2].step, rec.evals[3].step, rec.evals[4].step })
    toks:close()
  end)

  it("--minutes: a schedule from the speed of a few steps, stopped at the deadline", function()
    local rec = { sleep = 0.02 }
    slm.train = fake_train(rec)
    local cfg = config { corpus(), "--out", os.tmpname() .. ".gguf", "--minutes", "0.02", "--eval-every", "1000",
                         "--eval-batches", "1", "--ctx", "16", "--batch", "2" }
    local log = {}
    local t0 = slm.core.clock()
    tcli.run(cfg, function(l) log[#log + 1] = l end)
    local wall = slm.core.clock() - t0
    -- the probe trainer, then the real one with total = 0.9 * 1.2 s / 0.02 s
    assert.equal(2, #rec.trainers)
    assert.equal(2, #rec.inits)
    local total = rec.trainers[2].total_steps
    assert.is_true(total >= 30 and total <= 54, "total " .. total)
    assert.matches("^schedule: %d+ steps fit in 1s at 0%.02%d s/step$", log[3])
    assert.is_true(wall < 3, "wall " .. wall)
    assert.matches("^done: %d+ steps", log[#log])
    assert.equal(1, #rec.saves)
  end)

  it("a NaN loss stops the run naming the step", function()
    local rec = {}
    local fake = fake_train(rec)
    local make = fake.trainer
    fake.trainer = function(m, o)
      local tr = make(m, o)
      local step = tr.step
      tr.step = function(self, b)
        local l = step(self, b)
        if self.step_count == 4 then return 0 / 0 end
        return l
      end
      return tr
    end
    slm.train = fake
    local cfg = config { corpus(), "--out", os.tmpname() .. ".gguf", "--steps", "10", "--eval-batches", "1",
                         "--ctx", "8", "--batch", "2" }
    local ok, err = pcall(tcli.run, cfg, function() end)
    assert.is_false(ok)
    assert.matches("^train: the loss is %-?nan at step 3 %(lower %-%-lr%?%)$", err)
  end)
end)

describe("slm train end to end", function()
  local function trainer_available()
    local strain = require "slm.train"
    if not strain.trainer then return false, "slm.train.trainer not available" end
    local ok, err = pcall(function()
      local m = strain.init { vocab = 16, dim = 8, layers = 1, heads = 2, ff = 16, ctx = 8 }
      strain.trainer(m, { total_steps = 1 })
    end)
    if not ok then return false, "slm.train.trainer not available: " .. tostring(err):gsub("^.-:%d+: ", "") end
    return true
  end

  it("trains a tiny model whose file slm run generates from, and resumes it", function()
    local ok, why = trainer_available()
    if not ok then return pending(why) end
    local text = corpus()
    local out, svg = os.tmpname() .. ".gguf", os.tmpname() .. ".svg"
    local stdout, err, code = run(text .. " --out " .. out .. " --dim 32 --layers 1 --heads 2 --ff 64 --ctx 16 "
                                  .. "--batch 4 --steps 40 --eval-every 20 --eval-batches 4 --lr 3e-3 --plot " .. svg)
    assert.equal(0, code, err)
    local vals = {}
    for v in stdout:gmatch("\nstep %d+: validation loss ([%d.]+)") do vals[#vals + 1] = tonumber(v) end
    assert.equal(3, #vals)
    assert.is_true(vals[3] < vals[1], stdout)
    local model = assert(slm.load(out))
    local tok = data.char_tokenizer(helpers.read(text))
    assert.same(tok:encode("the cat"), model.tokenizer:encode("the cat"))
    local p = io.popen("bin/slm run " .. sh_quote(out) .. " -p 'the cat' -n 5 --temp 0 2>&1; echo \"exit=$?\"")
    local gen = p:read("a")
    p:close()
    assert.matches("exit=0", gen)
    assert.matches("^[a-z :.%d\n]+", gen)   -- the corpus's characters
    -- resume to 60 steps
    stdout, err, code = run(text .. " --out " .. out .. " --dim 32 --layers 1 --heads 2 --ff 64 --ctx 16 "
                            .. "--batch 4 --steps 60 --eval-every 20 --eval-batches 4 --lr 3e-3 --resume " .. out)
    assert.equal(0, code, err)
    assert.matches("resumed .* at step 40", stdout)
    assert.matches("done: 60 steps", stdout)
    assert.is_nil(stdout:find("step 0: validation", 1, true))
    assert.matches("<polyline", helpers.read(svg))
  end)
end)
