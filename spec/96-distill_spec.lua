-- Knowledge distillation (lua/slm/train/distill.lua, csrc/train/distill.c):
-- alpha = 0 is plain training bit for bit; the first step's loss against
-- a double-precision reference computed here from the two models'
-- inference logits; vocabulary and option refusals; the top-k cache (reuse,
-- mismatches, hostile files); sequence-level corpora; examples/distill.lua
-- at a small size; `slm distill`. The teacher is slm's shipped character model ("shakespeare-char").
local helpers = require "spec.helpers"
local slm = require "slm"
local tensor = require "slm.tensor"
local eval = require "slm.eval"

local teacher = slm.load("shakespeare-char")

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

local function run(cmd)
  local p = io.popen("SLM_PROGRESS=0 " .. cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return (out:gsub("exit=%d+%s*$", "")), code
end

local function student(o)
  o = o or {}
  return slm.train.init { vocab = o.vocab or 65, dim = 16, layers = 1, heads = 2, ff = 32, ctx = 16, seed = o.seed or 3,
                          tokenizer = o.tokenizer == nil and teacher.tokenizer or o.tokenizer or nil }
end

-- B rows of T + 1 ids of the corpus, from fixed places
local corpus_ids
local function batches(n, B, T, offset)
  if not corpus_ids then
    local fh = assert(io.open("data/tinyshakespeare.txt", "rb"))
    corpus_ids = teacher.tokenizer:encode(fh:read(20000), { add_special = false })
    fh:close()
  end
  local list = {}
  for i = 1, n do
    local rows = {}
    for b = 1, B do
      local start = (offset or 0) + ((i - 1) * B + b - 1) * 97 + 1
      rows[b] = table.move(corpus_ids, start, start + T, 1, {})
    end
    list[i] = rows
  end
  return list
end

local function same_weights(a, b)
  for _, name in ipairs(a.param_names) do
    if a.params[name]:tobytes() ~= b.params[name]:tobytes() then return false, name end
  end
  return true
end

describe("slm.train.distill", function()
  if not teacher then
    it("needs the shipped character model", function() pending("models/char/shakespeare-char.gguf not found") end)
    return
  end

  it("with alpha = 0 is plain training bit for bit (losses and final weights), dense and top-k", function()
    local list = batches(3, 2, 16)
    local plain = student()
    local tr = slm.train.trainer(plain, { lr = 3e-3, total_steps = 3 })
    local want = {}
    for i = 1, 3 do want[i] = tr:step(list[i]) end
    for _, topk in ipairs { false, 5 } do
      local s = student()
      local tr2, losses = slm.train.distill { teacher = teacher, student = s, batches = list, alpha = 0,
                                             temperature = 2, topk = topk or nil, lr = 3e-3 }
      assert.equal(3, #losses)
      assert.equal(3, tr2.step_count)
      for i = 1, 3 do assert.equal(want[i], losses[i]) end   -- ==, not near
      assert.is_true(same_weights(plain, s))
    end
    -- not vacuous: alpha > 0 moves other weights
    local s = student()
    local _, losses = slm.train.distill { teacher = teacher, student = s, batches = list, alpha = 0.5, lr = 3e-3 }
    assert.is_false(same_weights(plain, s))
    assert.are_not.equal(want[1], losses[1])
  end)

  -- the loss a distillation step reports against the formula in double, on
  -- logits of the two models' inference sessions (the student's training
  -- forward is f32 BLAS, its inference forward slm's matmul: 1e-4 apart)
  it("reports alpha T^2 KL + (1 - alpha) CE of the teacher's and the student's logits", function()
    local B, T = 2, 16
    local batch = batches(1, B, T, 500)[1]
    local function logits(model, ids)
      local sess = model:session { ctx = T, batch = T }
      sess.all_logits = tensor.zeros { T, model.hp.n_vocab }
      sess:eval(ids)
      local rows = {}
      for t = 1, T do rows[t] = helpers.f32_values(sess.all_logits:select(1, t)) end
      return rows
    end
    for _, case in ipairs { { alpha = 0.7, T = 2.0 }, { alpha = 0.3, T = 1.0, topk = 4 } } do
      local s = student { seed = 11 }
      local want, n = 0, 0
      for b = 1, B do
        local ids = table.move(batch[b], 1, T, 1, {})
        local zt, zs = logits(teacher, ids), logits(s, ids)
        for t = 1, T do
          local y = batch[b][t + 1]
          local tl = {}
          for i, v in ipairs(zt[t]) do tl[i] = v / case.T end
          local keep = {}
          if case.topk then   -- the teacher's k largest, renormalized over them
            local order = {}
            for i = 1, #tl do order[i] = i end
            table.sort(order, function(a, c) return tl[a] > tl[c] end)
            for j = 1, case.topk do keep[order[j]] = true end
          end
          local max, sum = -math.huge, 0
          for i = 1, #tl do if not case.topk or keep[i] then max = math.max(max, tl[i]) end end
          for i = 1, #tl do if not case.topk or keep[i] then sum = sum + math.exp(tl[i] - max) end end
          local sl = {}
          for i, v in ipairs(zs[t]) do sl[i] = v / case.T end
          local lq = eval.log_softmax(sl)
          local lp1 = eval.log_softmax(zs[t])
          local kl = 0
          for i = 1, #tl do
            if not case.topk or keep[i] then
              local lp = tl[i] - max - math.log(sum)
              kl = kl + math.exp(lp) * (lp - lq[i])
            end
          end
          want = want + case.alpha * case.T ^ 2 * kl + (1 - case.alpha) * -lp1[y + 1]
          n = n + 1
        end
      end
      want = want / n
      local tr = slm.train.trainer(s, { lr = 1e-3 })
      local d = slm.train.distiller(teacher, tr, { alpha = case.alpha, temperature = case.T, topk = case.topk })
      local loss, _, info = d:step(batch)
      assert.near(want, loss, 1e-4 * want)
      assert.is_true(info.kl > 0 and info.ce > 0)
      -- alpha is an f32 in the kernel
      assert.near(loss, case.alpha * case.T ^ 2 * info.kl + (1 - case.alpha) * info.ce, 1e-7 * loss)
    end
  end)

  it("refuses another vocabulary, and options it does not know or whose values are wrong", function()
    local list = batches(1, 1, 8)
    local e = helpers.errmsg(slm.train.distill, { teacher = teacher, student = student { vocab = 70, tokenizer = false },
                                                  batches = list })
    assert.equal("distill: the teacher's vocabulary has 65 tokens, the student's 70 (distillation needs the same "
                 .. "vocabulary)", e)
    -- 65 tokens, other characters
    local chars = {}
    for c = 40, 104 do chars[#chars + 1] = string.char(c) end
    local other = slm.train.char_tokenizer(table.concat(chars))
    e = helpers.errmsg(slm.train.distill, { teacher = teacher, student = student { tokenizer = other }, batches = list })
    assert.equal("distill: token 0 is \"\\n\" for the teacher and \"(\" for the student (distillation needs the same "
                 .. "vocabulary)", e)
    local base = function(extra)
      local o = { teacher = teacher, student = student(), batches = list }
      for k, v in pairs(extra) do o[k] = v end
      return o
    end
    assert.matches("distill: unknown option 'temp' %(known: alpha, batches, betas, cache",
                   helpers.errmsg(slm.train.distill, base { temp = 2 }))
    assert.equal("distill: alpha must be a number in [0, 1], got 1.5", helpers.errmsg(slm.train.distill, base { alpha = 1.5 }))
    assert.equal("distill: temperature must be a positive number, got 0",
                 helpers.errmsg(slm.train.distill, base { temperature = 0 }))
    assert.equal("distill: topk must be an integer in 1..65 (the vocabulary), got 66",
                 helpers.errmsg(slm.train.distill, base { topk = 66 }))
    assert.equal("distill: cache needs topk (the cache keeps the teacher's top-k logits of each position)",
                 helpers.errmsg(slm.train.distill, base { cache = os.tmpname() }))
    assert.matches("distill: batches must be a batch stream", helpers.errmsg(slm.train.distill, base { batches = 3 }))
    assert.matches("distill: student must be a trainable model", helpers.errmsg(slm.train.distill, base { student = teacher }))
    -- the kernel's own checks
    local K = slm.core.train
    local z = tensor.zeros { 2, 65 }
    assert.matches("targets: expected i32, got f32", helpers.errmsg(K.distill_loss, z, tensor.zeros { 2 }, z:clone(),
                                                                    { alpha = 0.5, temperature = 1 }))
    assert.matches("unknown option 'T'", helpers.errmsg(K.distill_loss, z, tensor.zeros({ 2 }, "i32"), z:clone(),
                                                        { alpha = 0.5, temperature = 1, T = 2 }))
    assert.matches("teacher: expected 2 rows of 65", helpers.errmsg(K.distill_loss, z, tensor.zeros({ 2 }, "i32"),
                                                                    tensor.zeros { 3, 65 }, { alpha = 0.5, temperature = 1 }))
  end)

  it("caches the teacher's top-k by batch: a second epoch reads it, bit for bit; mismatches and hostile files are refused", function()
    local path = os.tmpname()
    os.remove(path)
    local list = batches(2, 2, 12)
    local function go(l, o)
      local cached = {}
      local opts = { teacher = teacher, student = student(), batches = l, steps = 4, topk = 6, cache = path,
                     alpha = 0.8, temperature = 1.5, lr = 2e-3,
                     progress = function(i, _, info) cached[i] = info.cached end }
      for k, v in pairs(o or {}) do opts[k] = v end
      if opts.cache == false then opts.cache = nil end
      local _, losses = slm.train.distill(opts)
      return losses, cached
    end
    local l1, c1 = go(list)
    assert.same({ false, false, true, true }, c1)              -- epoch 2 reads epoch 1's records
    assert.equal(64 + 2 * (8 + 8 * 2 * 12 * 6), helpers.size(path))
    local l2, c2 = go(list)
    assert.same({ true, true, true, true }, c2)
    assert.same(l1, l2)
    -- the same without a cache: the same losses (the cache holds what the teacher gives)
    local l3 = go(list, { cache = false })
    assert.same(l1, l3)
    -- other batches, another k, another batch shape: refused, naming what differs
    assert.matches("batch 0 is not the batch cached at that index", helpers.errmsg(go, batches(2, 2, 12, 3000)))
    assert.matches("was written with topk 6, this run has 7", helpers.errmsg(go, list, { topk = 7 }))
    assert.matches("was written with batches of 2x12, this run has 2x8", helpers.errmsg(go, batches(2, 2, 8)))
    -- hostile files: a header counting more records than the file holds,
    -- an id out of range, a repeated id, not a cache at all
    local good = helpers.read(path)
    local function patched(pos, bytes)
      local fh = assert(io.open(path, "wb"))
      fh:write(good:sub(1, pos - 1), bytes, good:sub(pos + #bytes))
      fh:close()
    end
    patched(33, string.pack("<I8", 3))
    assert.matches("the header counts 3 records, the file holds", helpers.errmsg(go, list))
    local ids0 = 64 + 8 + 4 * 2 * 12 * 6 + 1          -- record 0's first id
    patched(ids0, string.pack("<i4", 65))
    assert.matches("teacher id 65 %(row 0, entry 0%) outside 0..64", helpers.errmsg(go, list))
    patched(ids0, string.pack("<i4", string.unpack("<i4", good, ids0 + 4)))
    assert.matches("teacher id %d+ repeated in row 0", helpers.errmsg(go, list))
    patched(1, "NOTACACHE")
    assert.matches("is not a top%-k cache", helpers.errmsg(go, list))
    os.remove(path)
  end)

  it("generate_corpus writes the teacher's samples to a corpus that tokenize and batches read", function()
    local out = os.tmpname()
    local r = slm.train.generate_corpus(teacher, { prompts = { "ROMEO:", "JULIET:" }, n = 3, max_tokens = 24,
                                                   sampler = { temp = 0.8 }, seed = 5, out = out })
    assert.equal(3, r.n)
    assert.equal(72, r.tokens)
    local text = helpers.read(out)
    assert.equal(r.bytes, #text)
    assert.matches("^ROMEO:", text)
    assert.truthy(text:find("\nJULIET:", 1, true))
    -- the same call, the same file
    slm.train.generate_corpus(teacher, { prompts = { "ROMEO:", "JULIET:" }, n = 3, max_tokens = 24,
                                         sampler = { temp = 0.8 }, seed = 5, out = out })
    assert.equal(text, helpers.read(out))
    local tokpath = os.tmpname()
    assert.equal(#text, slm.train.tokenize(teacher.tokenizer, { out }, tokpath))
    local toks = assert(slm.train.open_tokens(tokpath))
    local b = slm.train.batches(toks, { ctx = 8, batch = 2, seed = 1 }):next()
    assert.same({ 2, 9 }, b:shape())
    toks:close()
    assert.equal("generate_corpus: give the seed as generate_corpus's seed, not in sampler (sample i uses seed + i - 1)",
                 helpers.errmsg(slm.train.generate_corpus, teacher, { n = 1, out = out, sampler = { seed = 1 } }))
    assert.equal("generate_corpus: n must be a positive integer, got nil",
                 helpers.errmsg(slm.train.generate_corpus, teacher, { out = out }))
    assert.matches("generate_corpus: unknown option 'count'",
                   helpers.errmsg(slm.train.generate_corpus, teacher, { n = 1, out = out, count = 2 }))
    os.remove(out)
    os.remove(tokpath)
  end)

  it("examples/distill.lua: the distilled student beats the same student trained from scratch on both", function()
    local out, code = run("bin/slm examples/distill.lua 80 2048 0.9 1 16")
    assert.equal(0, code, out)
    local ce0, kl0 = out:match("\nfrom scratch%s+(%d+%.%d+)%s+(%d+%.%d+)")
    local ce1, kl1 = out:match("\ndistilled%s+(%d+%.%d+)%s+(%d+%.%d+)")
    assert(ce0 and ce1, out)
    assert.is_true(tonumber(ce1) < tonumber(ce0), out)
    assert.is_true(tonumber(kl1) < tonumber(kl0), out)
    assert.matches("teacher top%-16 cached over 20 batches %(4 epochs%)", out)
    assert.matches("distilled better on both: yes", out)
    local bad, bcode = run("bin/slm examples/distill.lua 10 2048 1.5")
    assert.equal(1, bcode)
    assert.equal("distill.lua: ALPHA must be a number in [0, 1], got 1.5\n", bad)
  end)

  it("slm distill trains and saves a student with the teacher's tokenizer; its refusals are one line", function()
    local outp = os.tmpname() .. ".gguf"
    local out, code = run("bin/slm distill shakespeare-char data/tinyshakespeare.txt --out " .. sh_quote(outp)
                          .. " --dim 16 --layers 1 --heads 2 --ff 32 --steps 4 --batch 2 --ctx 16 --eval-every 2"
                          .. " --eval-batches 1 --alpha 0.7 --temperature 1.5")
    assert.equal(0, code, out)
    assert.matches("teacher: shakespeare%-char %(llama, vocabulary 65%); alpha 0.7, temperature 1.5, all logits", out)
    assert.matches("step 4: validation loss %d+%.%d+, train %d+%.%d+", out)
    local m = assert(slm.load(outp))
    assert.equal(65, m.hp.n_vocab)
    assert.equal(teacher.tokenizer:piece(10), m.tokenizer:piece(10))
    os.remove(outp)
    os.remove(slm.train.optim_path(outp))
    local cases = {
      { "--out x.gguf --chars", "slm: distill: the student takes the teacher's tokenizer (no --chars, --vocab or --tokenizer)" },
      { "--out x.gguf --cache c", "slm: option --cache needs --topk K (the cache keeps the teacher's top-K logits)" },
      { "--out x.gguf --topk 100", "slm: option --topk: 100 is above the teacher's vocabulary (65)" },
      { "--out x.gguf --alpha 2", "slm: option --alpha must be in [0, 1] (got 2)" },
      { "--out x.gguf --temperature 0", "slm: option --temperature must be above 0 (got 0)" },
      { "--out x.gguf --preset shakespeare-char", "slm: unknown option '--preset' for distill (`slm distill --help`)" },
    }
    for _, c in ipairs(cases) do
      local o, rc = run("bin/slm distill shakespeare-char data/tinyshakespeare.txt " .. c[1])
      assert.equal(1, rc, o)
      assert.equal(c[2] .. "\n", o)
    end
  end)
end)
