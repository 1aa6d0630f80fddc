--- tools/default_model.lua: the recipe of slm's default model (issue 16),
-- run by `make default-model`:
--
--   bin/slm tools/default_model.lua [--out DIR] [--steps N] [--threads N] [--init FILE]
--                                   [--tokenizer chars | bpe:N]
--
-- Trains, with slm alone, a character-level llama on the bundled corpus
-- data/tinyshakespeare.txt (data/README.md: provenance, the 90/10 split) and
-- writes into DIR (default models/default):
--   shakespeare-char.gguf  the model, Q8_0 (slm.quantize), with its
--                          tokenizer and metadata naming this recipe
--   loss.svg               training and validation loss curves (slm.train.plot)
--   record.json            the figures: configuration, validation losses along
--                          the way, final validation loss (f32 and Q8_0),
--                          tokens/s, training time, sizes, BLAS kernels
--   RECORD.md              the same figures for a reader
-- --steps N shortens the run (a check of the recipe, not the default model:
-- the schedule is then N steps long); --init FILE also saves the initial
-- f32 weights (for a PyTorch run from the same start) and FILE.batches, the
-- start positions (0-based, in the token file) of each step's windows, one
-- line per step.
--
-- --tokenizer bpe:N trains the same model over a byte-level BPE vocabulary
-- of N tokens learnt (slm.tokenizer.train) from the training 90 % alone; the
-- two splits are tokenized apart, so no training window reaches into the
-- validation text, and every figure is converted to nats per character
-- (the sum of the token losses over the characters those tokens spell): the
-- measure that compares the two tokenizers (issue 16: choose by it).
--
-- Everything is fixed: seed, steps, batches (slm.train.batches' seeded
-- stream), 2 threads (training is deterministic for a fixed thread count,
-- so a rerun reproduces the same losses).
local slm = require "slm"
local data = require "slm.train.data"
local plot = require "slm.train.plot"
local tcli = require "slm.train.cli"

local here = arg[0]:match("^(.*)/tools/[^/]*$") or "."

-- the recipe -------------------------------------------------------------------
-- Chosen by a short speed probe on this machine (2 threads: 0.33 s/step
-- alone, 0.6 s/step beside other work): a llama twice as wide and deeper
-- than the shakespeare-char preset (6x its parameters), with twice its
-- context, for 1800 steps of 16 x 128 tokens (3.7M tokens, about 3.7 passes
-- over the training text): 10 to 20 minutes.
local R = {
  corpus = "data/tinyshakespeare.txt",
  arch = "llama", dim = 256, layers = 6, heads = 8, kv_heads = 8, ff = 704, ctx = 128, tied = false,
  batch = 16, steps = 1800, seed = 1337,
  lr = 1e-3, betas = { 0.9, 0.99 }, eps = 1e-8, weight_decay = 0.1, clip = 1.0, warmup = 100, min_lr = 1e-4,
  eval_every = 200, eval_batches = 25,   -- 25 x 16 x 128 = 51K tokens of the validation text's 111.5K
  threads = 2,
  tokenizer = "bpe:512",
  quant = "q8_0",
  file = "shakespeare-char.gguf",
}

-- arguments
local out_dir, init_path = here .. "/models/default", nil
local short, init_only = false, false
do
  local i = 1
  while i <= #arg do
    local a, v = arg[i], arg[i + 1]
    if a == "--out" and v then out_dir = v
    elseif a == "--steps" and tonumber(v) then R.steps = math.tointeger(tonumber(v)); short = true
    elseif a == "--threads" and tonumber(v) then R.threads = math.tointeger(tonumber(v))
    elseif a == "--init" and v then init_path = v
    elseif a == "--init-only" then init_only = true; i = i - 1
    elseif a == "--tokenizer" and v and (v == "chars" or v:match("^bpe:%d+$")) then R.tokenizer = v
    else
      io.stderr:write("usage: bin/slm tools/default_model.lua [--out DIR] [--steps N] [--threads N] [--init FILE "
                        .. "[--init-only]] [--tokenizer chars|bpe:N]\n")
      os.exit(2)
    end
    i = i + 2
  end
end
if R.warmup >= R.steps then R.warmup = R.steps // 10 end
os.execute("mkdir -p '" .. out_dir .. "'")

local clock = slm.core.clock

local function json(v, ind)
  ind = ind or ""
  local t = type(v)
  if t == "table" then
    if #v > 0 or next(v) == nil then
      local parts = {}
      for i, x in ipairs(v) do parts[i] = json(x, ind .. "  ") end
      return "[" .. table.concat(parts, ", ") .. "]"
    end
    local keys = {}
    for k in pairs(v) do keys[#keys + 1] = k end
    table.sort(keys)
    local parts = {}
    for i, k in ipairs(keys) do parts[i] = ind .. "  " .. string.format("%q", k) .. ": " .. json(v[k], ind .. "  ") end
    return "{\n" .. table.concat(parts, ",\n") .. "\n" .. ind .. "}"
  elseif t == "string" then return string.format("%q", v)
  elseif math.type(v) == "float" then return string.format("%.6g", v)
  else return tostring(v) end
end
local function log(fmt, ...)
  io.stdout:write(string.format(fmt, ...), "\n")
  io.stdout:flush()
end

slm.threads(R.threads)
local corpus = here .. "/" .. R.corpus
local text do
  local f = assert(io.open(corpus, "rb"))
  text = f:read("a")
  f:close()
end
local n_train_chars = math.floor(0.9 * #text)   -- the split of data/README.md
local bpe_size = tonumber(R.tokenizer:match("^bpe:(%d+)$"))

local prep
if not bpe_size then
  prep = tcli.prepare({ files = { corpus }, tokenizer = "chars", ctx = R.ctx, batch = R.batch, seed = R.seed,
                        eval_batches = R.eval_batches }, function(l) log("%s", l) end)
else
  -- BPE: learnt from the training characters only; the token file holds the
  -- training text's ids then the validation text's, split exactly there
  local parts = { out_dir .. "/.train.txt", out_dir .. "/.val.txt" }
  for i, chunk in ipairs { text:sub(1, n_train_chars), text:sub(n_train_chars + 1) } do
    local fh = assert(io.open(parts[i], "wb"))
    fh:write(chunk)
    fh:close()
  end
  local vocab_file = out_dir .. "/.vocab.gguf"
  assert(slm.tokenizer.train { files = { parts[1] }, vocab_size = bpe_size, pre = "gpt-2", gguf = vocab_file })
  prep = { tok = assert(data.load_tokenizer(vocab_file)), token_path = out_dir .. "/.corpus.tok", temp = true }
  os.remove(vocab_file)
  local n_train_ids = #prep.tok:encode(text:sub(1, n_train_chars), { add_special = false })
  assert(data.tokenize(prep.tok, parts, prep.token_path))
  for _, f in ipairs(parts) do os.remove(f) end
  prep.toks = assert(data.open(prep.token_path))
  -- a fraction whose floor (slm.train.batches) is exactly n_train_ids
  local frac = (n_train_ids + 0.5) / prep.toks:count()
  prep.train = data.batches(prep.toks, { ctx = R.ctx, batch = R.batch, seed = R.seed, split = frac })
  prep.val = data.batches(prep.toks, { ctx = R.ctx, batch = R.batch, seed = R.seed + 1, split = { frac, "val" } })
  assert(prep.train.hi == n_train_ids, "the split falls between the two texts")
  prep.val_set = prep.val:take(R.eval_batches)
  log("tokenizer: byte-level BPE of %d tokens learnt from the training text; %d train / %d validation tokens",
      #prep.tok, n_train_ids, prep.toks:count() - n_train_ids)
end
local tok = prep.tok
local kind = bpe_size and ("bpe" .. bpe_size) or "char"
if bpe_size then R.file = "shakespeare-" .. kind .. ".gguf" end

-- characters spelt by a token (bytes: the corpus is ASCII)
local tok_chars = {}
for id = 0, #tok - 1 do tok_chars[id] = #tok:decode({ id }) end
local function chars_of(batches)   -- characters the predicted ids of batches spell
  local n, ids = 0, 0
  for _, b in ipairs(batches) do
    if slm.tensor.is_tensor(b) then b = b:totable() end
    for _, row in ipairs(b) do
      for t = 2, #row do n, ids = n + tok_chars[row[t]], ids + 1 end
    end
  end
  return n, ids
end

-- the whole validation text (the last 10 % of the characters) in disjoint
-- windows of ctx + 1 ids overlapping by one, every id after the first of a
-- window predicted: the final figure, in nats per character (a token's
-- loss spread over the characters it spells)
local function val_windows()
  local ids = tok:encode(text:sub(n_train_chars + 1), { add_special = false })
  if not bpe_size then assert(#ids == #text - n_train_chars, "the corpus is ASCII: one id per character") end
  local rows = {}
  local i = 1
  while i + R.ctx <= #ids do
    local row = {}
    for t = 0, R.ctx do row[t + 1] = ids[i + t] end
    rows[#rows + 1] = row
    i = i + R.ctx
  end
  local batches = {}
  for b = 1, #rows, R.batch do
    local chunk = {}
    for k = b, math.min(b + R.batch - 1, #rows) do chunk[#chunk + 1] = rows[k] end
    if #chunk == R.batch then batches[#batches + 1] = chunk end   -- whole batches: the session's shape
  end
  -- the ids those batches cover, for the shipped file's measure
  local covered = table.move(ids, 1, 1 + #batches * R.batch * R.ctx, 1, {})
  return batches, #text - n_train_chars, covered
end
local full_val, n_val_chars, val_ids = val_windows()
local full_val_chars, full_val_ids = chars_of(full_val)
local val_set_chars, val_set_ids = chars_of(prep.val_set)
-- mean loss per predicted token -> nats per character
local per_char_full = full_val_ids / full_val_chars
local per_char_set = val_set_ids / val_set_chars
if bpe_size then
  log("validation: %.3f characters per token (whole text), %.3f (the fixed windows)", 1 / per_char_full,
      1 / per_char_set)
end

local model = slm.train.init { arch = R.arch, vocab = #tok, dim = R.dim, layers = R.layers, heads = R.heads,
                               kv_heads = R.kv_heads, ff = R.ff, ctx = R.ctx, tied = R.tied, seed = R.seed,
                               name = "slm-default-shakespeare-" .. kind, tokenizer = tok }
local nparams = 0
for _, name in ipairs(model.param_names) do nparams = nparams + model.params[name]:numel() end
local tr = slm.train.trainer(model, { lr = R.lr, betas = R.betas, eps = R.eps, weight_decay = R.weight_decay,
                                      clip = R.clip, warmup = R.warmup, total_steps = R.steps, min_lr = R.min_lr })
if init_path then
  tr:save(init_path)
  os.remove(slm.train.optim_path and slm.train.optim_path(init_path) or "")
  log("initial weights: %s", init_path)
  if bpe_size then   -- the ids the batches index, for tools/torch_compare.py
    assert(os.execute(string.format("cp '%s' '%s.tok'", prep.token_path, init_path)))
  end
end
if init_only then
  -- the start and the batches, without training (the stream does not
  -- depend on the weights): a PyTorch run can begin beside slm's
  assert(init_path, "--init-only needs --init FILE")
  local fh = assert(io.open(init_path .. ".batches", "wb"))
  for _ = 1, R.steps do
    local _, starts = prep.train:next()
    local zs = {}
    for i, p in ipairs(starts) do zs[i] = tostring(p - 1) end
    fh:write(table.concat(zs, " "), "\n")
  end
  fh:close()
  local cfg = {}
  for k, v in pairs(R) do cfg[k] = v end
  fh = assert(io.open(out_dir .. "/record.json", "wb"))
  fh:write(json({ recipe = cfg, train_ids = prep.train.hi, ids_per_char = per_char_full, init_only = true }), "\n")
  fh:close()
  tcli.cleanup(prep)
  os.exit(0)
end
log("model: llama dim %d, %d layers, %d heads, ff %d, ctx %d, vocab %d: %d parameters", R.dim, R.layers,
    R.heads, R.ff, R.ctx, #tok, nparams)
log("training: %d steps of %d x %d tokens on %d threads (OpenBLAS %s)", R.steps, R.batch, R.ctx,
    slm.threads(), tostring(slm.core.blas_core and slm.core.blas_core() or "?"))

local function mean_loss(list)
  local s = 0
  for _, b in ipairs(list) do s = s + tr:eval_loss(b) end
  return s / #list
end

local hist = { train = {}, val = {} }
local t_train, t_eval = 0, 0
local function validate(step, recent)
  local t0 = clock()
  local v = mean_loss(prep.val_set) * per_char_set
  local dt = clock() - t0
  t_eval = t_eval + dt
  hist.val[#hist.val + 1] = { step, v }
  local avg
  if recent and #recent > 0 then
    avg = 0
    for _, l in ipairs(recent) do avg = avg + l end
    avg = avg / #recent
  end
  log("step %d: validation %.4f%s  (%.0f s training so far, eval %.1f s)", step, v,
      avg and string.format(", train %.4f", avg) or "", t_train, dt)
end

local t_start = clock()
validate(0)
local recent = {}
local starts_fh = init_path and assert(io.open(init_path .. ".batches", "wb"))
while tr.step_count < R.steps do
  local batch, starts = prep.train:next()
  if starts_fh then
    local zs = {}
    for i, p in ipairs(starts) do zs[i] = tostring(p - 1) end
    starts_fh:write(table.concat(zs, " "), "\n")
  end
  local t0 = clock()
  local loss = tr:step(batch)
  t_train = t_train + (clock() - t0)
  assert(loss == loss and loss < math.huge, "the loss diverged")
  hist.train[#hist.train + 1] = { tr.step_count, loss * per_char_set }
  recent[#recent + 1] = loss
  if #recent > 50 then table.remove(recent, 1) end
  if tr.step_count % R.eval_every == 0 or tr.step_count == R.steps then validate(tr.step_count, recent) end
end
local wall = clock() - t_start
if starts_fh then starts_fh:close() end
local tokens = R.steps * R.batch * R.ctx
local final_f32 = mean_loss(full_val) * per_char_full
log("done: %d steps in %.0f s (%.0f s training, %.0f tok/s); whole validation text: %.4f nats/char (f32)",
    R.steps, wall, t_train, tokens / t_train, final_f32)

-- the file: f32 with the recipe's metadata, then Q8_0
local tmp = out_dir .. "/.f32.gguf"
tr:save(tmp)
os.remove((tmp:gsub("%.gguf$", "")) .. ".optim.gguf")
local META = {
  { "general.description", (bpe_size and "byte-level BPE (" .. bpe_size .. " tokens)" or "character-level")
                           .. " llama trained by slm: make default-model" },
  { "general.source.url", "https://github.com/karpathy/char-rnn (data/tinyshakespeare)" },
  { "general.license", "weights: same as slm; corpus: public domain" },
  { "slm.recipe", "tools/default_model.lua" },
  { "slm.recipe.corpus", "data/tinyshakespeare.txt (first 90% train)" },
  { "slm.recipe.tokenizer", R.tokenizer },
  { "slm.recipe.steps", { type = "u32", value = R.steps } },
  { "slm.recipe.batch", { type = "u32", value = R.batch } },
  { "slm.recipe.seed", { type = "u32", value = R.seed } },
  { "slm.recipe.threads", { type = "u32", value = R.threads } },
  { "slm.recipe.val_loss", { type = "f32", value = final_f32 } },
}
do
  local f = assert(slm.gguf.open(tmp))
  local meta, tensors = {}, {}
  for _, k in ipairs(f.keys) do
    if k ~= "general.alignment" then meta[#meta + 1] = { k, f:typed(k) } end
  end
  for _, kv in ipairs(META) do meta[#meta + 1] = kv end
  for _, info in ipairs(f.tensors) do tensors[#tensors + 1] = { name = info.name, tensor = f:tensor(info.name) } end
  assert(slm.gguf.write(tmp .. ".meta", { metadata = meta, tensors = tensors, alignment = 32 }))
  f:close()
  os.rename(tmp .. ".meta", tmp)
end
local f32_bytes = io.open(tmp, "rb"):seek("end")
local out_file = out_dir .. "/" .. R.file
assert(slm.quantize(tmp, out_file, R.quant))
os.remove(tmp)
local q_bytes = io.open(out_file, "rb"):seek("end")

-- the shipped file's own loss, through inference (slm.load, sessions): the
-- same windows as above
local qm = assert(slm.load(out_file))
local qres = slm.eval.perplexity(qm, val_ids, { ctx = R.ctx + 1, stride = R.ctx })
local qn = qres.n
assert(qn == #val_ids - 1, "the perplexity windows score every id after the first")
local q_chars = 0
for i = 2, #val_ids do q_chars = q_chars + tok_chars[val_ids[i]] end
local final_q = qres.nll * qn / q_chars
log("%s: %.1f MB (f32 %.1f MB); whole validation text: %.4f nats/char (%s)", out_file, q_bytes / 1e6,
    f32_bytes / 1e6, final_q, R.quant)

-- the curves and the record
assert(plot.svg(out_dir .. "/loss.svg", {
  title = "slm default model: " .. (bpe_size and "BPE-" .. bpe_size or "char-level") .. " llama on tinyshakespeare",
  xlabel = "step", ylabel = "loss (nats/char)",
  series = { { name = "train", points = hist.train }, { name = "validation", points = hist.val, dots = true } } }))

local cfg = {}
for k, v in pairs(R) do cfg[k] = v end
local rec = {
  recipe = cfg, short_run = short, parameters = nparams, vocab = #tok,
  validation_curve = hist.val,
  train_ids = prep.train.hi, ids_per_char = per_char_full,
  val_loss_f32 = final_f32, val_loss_q8_0 = final_q, val_chars = n_val_chars, val_scored = qn,
  train_seconds = t_train, eval_seconds = t_eval, wall_seconds = wall, tokens = tokens,
  tokens_per_second = tokens / t_train, seconds_per_step = t_train / R.steps,
  file = R.file, file_bytes = q_bytes, f32_bytes = f32_bytes,
  blas_core = slm.core.blas_core and slm.core.blas_core() or nil,
  peak_rss_mb = require("slm.bench").peak_rss_kb() / 1024,
}
local fh = assert(io.open(out_dir .. "/record.json", "wb"))
fh:write(json(rec), "\n")
fh:close()

local md = {}
local function w(fmt, ...) md[#md + 1] = string.format(fmt, ...) end
w("# The default model: figures of its recipe")
w("")
w("Written by `tools/default_model.lua` (`make default-model`)%s.", short and ", a SHORTENED run (--steps)" or "")
w("")
local unit = bpe_size and "tokens" or "characters"
w("- model: llama, dim %d, %d layers, %d heads, ff %d, context %d, untied head, vocabulary %d %s: "
  .. "%d parameters", R.dim, R.layers, R.heads, R.ff, R.ctx, #tok, bpe_size and "byte-level BPE tokens learnt from "
  .. "the training text (slm.tokenizer.train)" or "characters", nparams)
w("- corpus: `%s`, first 90 %% of the characters train, last 10 %% (%d characters) validate", R.corpus,
  n_val_chars)
if bpe_size then
  w("- tokens: %.3f characters a token over the whole validation text (%.3f over the fixed windows below); "
    .. "every loss here is per character (a token's loss spread over the characters it spells)",
    1 / per_char_full, 1 / per_char_set)
end
w("- training: %d steps of %d x %d " .. unit .. " (%.1fM), AdamW lr %g, betas (%g, %g), weight decay %g, clip %g, "
  .. "warmup %d then cosine to %g, seed %d, %d threads, OpenBLAS kernels %s", R.steps, R.batch, R.ctx, tokens / 1e6,
  R.lr, R.betas[1], R.betas[2], R.weight_decay, R.clip, R.warmup, R.min_lr, R.seed, R.threads,
  tostring(rec.blas_core))
w("- time: %.0f s training (%.3f s/step, %.0f tokens/s), %.0f s validating, %.0f s in all; peak RSS %.0f MB",
  t_train, t_train / R.steps, tokens / t_train, t_eval, wall, rec.peak_rss_mb)
w("- validation loss over the whole validation text (%d windows of %d, every "
  .. (bpe_size and "token" or "character") .. " after a window's first): **%.4f nats/char** (f32 weights), **%.4f** (the shipped %s file, through slm.load)", #full_val * R.batch,
  R.ctx + 1, final_f32, final_q, R.quant)
w("- file: `%s`, %s, %.2f MB (f32: %.2f MB)", R.file, R.quant, q_bytes / 1e6, f32_bytes / 1e6)
w("")
w("Validation loss along the way (%d random windows of the validation text, fixed):", R.eval_batches * R.batch)
w("")
w("| step | validation (nats/char) |")
w("| ---: | ---: |")
for _, p in ipairs(hist.val) do w("| %d | %.4f |", p[1], p[2]) end
w("")
w("![loss curves](loss.svg)")
fh = assert(io.open(out_dir .. "/RECORD.md", "wb"))
fh:write(table.concat(md, "\n"), "\n")
fh:close()
tcli.cleanup(prep)
log("wrote %s/{%s, loss.svg, record.json, RECORD.md}", out_dir, R.file)
