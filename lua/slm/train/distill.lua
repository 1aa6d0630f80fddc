--- slm.train.distill: knowledge distillation (Hinton, Vinyals, Dean 2015)
-- and sequence-level distillation (Kim and Rush 2016).
--
--   local teacher = slm.load("default")                 -- any decoder, any dtype
--   local student = slm.train.init{vocab = teacher.hp.n_vocab, dim = 96, layers = 3, heads = 4, ff = 256,
--                                  ctx = 64, tokenizer = teacher.tokenizer}
--   local tr, losses = slm.train.distill{teacher = teacher, student = student,
--       batches = stream_or_list, steps = 500, temperature = 2, alpha = 0.5,
--       topk = nil | k, cache = nil | "teacher.topk", lr = 1e-3, ...}
--   -- per step and row: alpha T^2 KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) CE
--   local d = slm.train.distiller(teacher, tr, {temperature =, alpha =, topk =, cache =})
--   local loss, gnorm, info = d:step(batch [, index])   -- info.ce, info.kl (means)
--   slm.train.generate_corpus(teacher, {prompts = {...}, n = 100, max_tokens = 256,
--                                       sampler = {temp = 0.8}, seed = 1, out = "corpus.txt"})
--
-- The loss and its gradient are one fused C kernel over the vocabulary
-- (csrc/train/distill.h, slm.core.train.distill_loss): the trainer's own
-- forward and backward run with it in place of the cross-entropy
-- (Trainer.loss_fn, set around each step). With alpha = 0 the kernel is the
-- cross-entropy kernel's row itself, so a distillation run is plain training
-- bit for bit (spec/93-distill_spec.lua).
--
-- The teacher's logits of every position of a batch come from an inference
-- session per batch row (ctx = batch T, every position's logits written
-- straight into one (B*T, V) buffer). topk = k keeps its k largest logits per
-- position and renormalizes the teacher over them (distill.h). cache = path
-- keeps those top-k on disk, one record per batch index, so that a second
-- epoch over the same batches (a list of batches is cycled; a stream with
-- the same seed gives the same batches again) reads them instead of running
-- the teacher.
--
-- Cache file (little-endian; slm writes and reads it, nothing else does):
--   header, 64 bytes: "SLMDTOPK" | u32 version = 1 | u32 k | u32 n_vocab |
--     u32 B | u32 T | u32 0 | u64 records | i64 teacher fingerprint | 16 zero bytes
--   record i (0-based), at 64 + i * (8 + 8 B T k):
--     i64 hash of the batch's ids | f32 values (B T, k) | i32 ids (B T, k)
-- Every header field is checked against the run (k, vocabulary, batch shape,
-- teacher) and the file's length; a record whose batch hash is not the
-- batch's is an error (another data set or seed), never used; the values
-- and ids themselves are checked by the kernel (ids in range and distinct,
-- values finite). The fingerprint hashes the teacher's architecture, sizes
-- and two rows of its token embedding: two teachers alike in all of these
-- are not told apart.
local core = require "slm.core"
local options = require "slm.options"
local tensor = require "slm.tensor"

local K = core.train
local M = {}

-- ---- checks ---------------------------------------------------------------------

local function is_model(m)
  return type(m) == "table" and type(m.hp) == "table" and type(m.def) == "table" and m.session ~= nil
end

--- check_vocab(teacher, student, what): the same vocabulary (size, and each
-- token's text when both carry a tokenizer), or an error naming the first
-- difference.
function M.check_vocab(teacher, student, what)
  local diff, x, y, z = require("slm.model").vocab_difference(teacher, student)
  if diff == "size" then
    error(string.format("%s: the teacher's vocabulary has %d tokens, the student's %d (distillation needs the "
                        .. "same vocabulary)", what, x, y), 0)
  elseif diff == "token" then
    error(string.format("%s: token %d is %s for the teacher and %s for the student (distillation needs the "
                        .. "same vocabulary)", what, x, options.show(y), options.show(z)), 0)
  end
end

-- (B, T, rows) of a batch: an i32 tensor (B, T+1) or B lists of T+1 ids
local function batch_rows(batch, what)
  local rows
  if tensor.is_tensor(batch) then
    if batch:dim() ~= 2 then error(what .. ": batch: expected a (B, T+1) tensor of ids", 0) end
    rows = batch:totable()
  elseif type(batch) == "table" then
    rows = batch
  else
    error(what .. ": batch: expected B rows of T+1 token ids (a table of tables or an i32 tensor)", 0)
  end
  local B = #rows
  if B == 0 or type(rows[1]) ~= "table" or #rows[1] < 2 then
    error(what .. ": batch: expected B >= 1 rows of T+1 >= 2 ids", 0)
  end
  local T1 = #rows[1]
  for b = 2, B do
    if type(rows[b]) ~= "table" or #rows[b] ~= T1 then
      error(string.format("%s: batch: row %d does not have the %d ids of row 1", what, b, T1), 0)
    end
  end
  return B, T1 - 1, rows
end

-- FNV-1a over 64-bit words (Lua's integers wrap): batch hashes and the
-- teacher fingerprint
local FNV_OFFSET, FNV_PRIME = -3750763034362895579, 1099511628211
local function fnv(h, x) return (h ~ x) * FNV_PRIME end

local function hash_rows(rows)
  local h = FNV_OFFSET
  h = fnv(h, #rows)
  for _, r in ipairs(rows) do
    h = fnv(h, #r)
    for i = 1, #r do h = fnv(h, r[i]) end
  end
  return h
end

local function hash_string(h, s)
  for i = 1, #s, 8 do
    local chunk = s:sub(i, i + 7)
    h = fnv(h, (string.unpack("<i8", chunk .. string.rep("\0", 8 - #chunk))))
  end
  return h
end

local function fingerprint(model)
  local hp = model.hp
  local h = hash_string(FNV_OFFSET, tostring(hp.arch))
  for _, v in ipairs { hp.n_vocab, hp.dim or 0, hp.n_layer or 0, hp.n_ff or 0 } do h = fnv(h, v) end
  local src = model.source
  if src and src.has and src.has("token_embd.weight") then
    local ok, w = pcall(src.tensor, "token_embd.weight")
    if ok and w then
      local rows = w:shape()[1]
      for _, r in ipairs { 1, rows } do
        local rok, row = pcall(function() return w:select(1, r):to("f32"):tobytes() end)
        if rok then h = hash_string(h, row) end
      end
    end
  end
  return h
end

-- ---- the teacher's logits ---------------------------------------------------------

-- Fills out (B*T, V) with the teacher's logits at every position of every
-- row: one fresh context per row (row b's token t is out's row b*T + t).
local function teacher_logits(d, rows, B, T, out)
  local model = d.teacher
  if not d.sess or d.sess_T ~= T then
    d.sess = model:session { ctx = T, batch = T }
    d.sess_T = T
  end
  local sess = d.sess
  local all = model.def.all_logits
  for b = 1, B do
    local ids = table.move(rows[b], 1, T, 1, {})
    sess:reset()
    if all then
      sess.all_logits = out:narrow(1, (b - 1) * T + 1, T)
      local ok, err = pcall(sess.eval, sess, ids)
      sess.all_logits = nil
      if not ok then error("distill: teacher: " .. tostring(err), 0) end
    else   -- one position at a time: its logits are the session's last row
      for t = 1, T do
        sess:eval { ids[t] }
        out:select(1, (b - 1) * T + t):copy_(sess.logits)
      end
    end
  end
end

-- ---- the top-k cache ----------------------------------------------------------------

local HEADER = "<c8I4I4I4I4I4I4I8i8"
local HEADER_BYTES = 64
local MAGIC = "SLMDTOPK"

local Cache = {}
Cache.__index = Cache

local function cache_open(path, k, V, B, T, fp)
  local rec = 8 + 8 * B * T * k
  local fh = io.open(path, "r+b")
  local c = setmetatable({ path = path, k = k, V = V, B = B, T = T, rec = rec, hits = 0, writes = 0 }, Cache)
  if fh then
    local head = fh:read(HEADER_BYTES)
    if not head or #head < HEADER_BYTES or head:sub(1, 8) ~= MAGIC then
      fh:close()
      error(string.format("distill: cache %s is not a top-k cache (no %s header)", path, MAGIC), 0)
    end
    local _, version, fk, fV, fB, fT, _, records, ffp = string.unpack(HEADER, head)
    local function differs(field, got, want)
      fh:close()
      error(string.format("distill: cache %s was written with %s %s, this run has %s (remove it or give another "
                          .. "path)", path, field, tostring(got), tostring(want)), 0)
    end
    if version ~= 1 then differs("version", version, 1) end
    if fk ~= k then differs("topk", fk, k) end
    if fV ~= V then differs("a vocabulary of", fV, V) end
    if fB ~= B or fT ~= T then differs("batches of", fB .. "x" .. fT, B .. "x" .. T) end
    if ffp ~= fp then differs("another teacher: fingerprint", string.format("%016x", ffp), string.format("%016x", fp)) end
    local size = fh:seek("end")
    if records < 0 or records > (size - HEADER_BYTES) // rec then
      fh:close()
      error(string.format("distill: cache %s: the header counts %d records, the file holds %d bytes (truncated?)",
                          path, records, size), 0)
    end
    c.records = records
  else
    local err
    fh, err = io.open(path, "w+b")
    if not fh then error("distill: cache: " .. tostring(err), 0) end
    c.records = 0
  end
  c.fh, c.fp = fh, fp
  c:write_header()
  return c
end

function Cache:write_header()
  local head = string.pack(HEADER, MAGIC, 1, self.k, self.V, self.B, self.T, 0, self.records, self.fp)
  self.fh:seek("set", 0)
  self.fh:write(head, string.rep("\0", HEADER_BYTES - #head))
  self.fh:flush()
end

-- the record at index i when the file has it: values, ids tensors; nil when not
function Cache:read(i, hash, vals, ids)
  if i >= self.records then return nil end
  self.fh:seek("set", HEADER_BYTES + i * self.rec)
  local s = self.fh:read(self.rec)
  if not s or #s ~= self.rec then
    error(string.format("distill: cache %s: record %d is cut short", self.path, i), 0)
  end
  if string.unpack("<i8", s) ~= hash then
    error(string.format("distill: cache %s: batch %d is not the batch cached at that index (other data, seed or "
                        .. "batch order: remove the cache or give another path)", self.path, i), 0)
  end
  local n = self.B * self.T * self.k
  vals:copy_(tensor.frombytes(s:sub(9, 8 + 4 * n), "f32", { self.B * self.T, self.k }))
  ids:copy_(tensor.frombytes(s:sub(9 + 4 * n), "i32", { self.B * self.T, self.k }))
  self.hits = self.hits + 1
  return true
end

-- appends record i when it is the next one (a gap is left uncached)
function Cache:write(i, hash, vals, ids)
  if i ~= self.records then return end
  self.fh:seek("set", HEADER_BYTES + i * self.rec)
  self.fh:write(string.pack("<i8", hash), vals:tobytes(), ids:tobytes())
  self.records = self.records + 1
  self.writes = self.writes + 1
  self:write_header()
end

function Cache:close()
  if self.fh then self.fh:close() end
  self.fh = nil
end

-- ---- the distiller ----------------------------------------------------------------------

local Distiller = {}
Distiller.__index = Distiller

local DISTILLER_OPTS = options.known { "temperature", "alpha", "topk", "cache" }

local function check_common(what, o, V, level)
  local T = o.temperature
  if T == nil then T = 2.0 end
  if type(T) ~= "number" or not (T > 0) or T == math.huge then
    options.fail(what, "temperature", "a positive number", T, level)
  end
  local alpha = o.alpha
  if alpha == nil then alpha = 0.5 end
  if type(alpha) ~= "number" or not (alpha >= 0 and alpha <= 1) then
    options.fail(what, "alpha", "a number in [0, 1]", alpha, level)
  end
  if o.topk ~= nil and not (math.type(o.topk) == "integer" and o.topk >= 1 and o.topk <= V) then
    options.fail(what, "topk", "an integer in 1.." .. V .. " (the vocabulary)", o.topk, level)
  end
  if o.cache ~= nil then
    if type(o.cache) ~= "string" or o.cache == "" then options.fail(what, "cache", "a file path", o.cache, level) end
    if not o.topk then
      error(what .. ": cache needs topk (the cache keeps the teacher's top-k logits of each position)", level)
    end
  end
  return T, alpha
end

--- distiller(teacher, trainer, {temperature = 2, alpha = 0.5, topk =, cache =})
-- -> d: d:step(batch [, index]) -> loss, gnorm, {ce =, kl =, cached =}
-- (one training step of trainer's model on the distillation loss; index,
-- 0-based, names the batch's cache record: default the count of steps
-- d has run); d:close() closes the cache.
local function new_distiller(what, teacher, tr, o)
  if not is_model(teacher) then error(what .. ": teacher must be an slm model (slm.load)", 3) end
  if type(tr) ~= "table" or type(tr.step) ~= "function" or not tr.model then
    error(what .. ": expected a trainer (slm.train.trainer) as argument #2", 3)
  end
  if teacher.def.encoder then error(what .. ": the teacher is an encoder (no logits)", 3) end
  o = options.check(what, o, DISTILLER_OPTS, 4)
  local V = tr.model.hp.n_vocab
  local T, alpha = check_common(what, o, V, 4)
  M.check_vocab(teacher, tr.model, what)
  return setmetatable({ teacher = teacher, tr = tr, T = T, alpha = alpha, topk = o.topk, cache_path = o.cache,
                        n = 0, V = V }, Distiller)
end

function M.distiller(teacher, tr, o) return new_distiller("distiller", teacher, tr, o) end

-- the teacher argument of distill_loss for a batch: the dense logits or {values =, ids =}
function Distiller:teacher_for(batch, index)
  local B, T, rows = batch_rows(batch, "distill")
  local V, k = self.V, self.topk
  if not self.buf or self.B ~= B or self.T_ ~= T then
    self.B, self.T_ = B, T
    self.buf = nil
    if k then
      self.top = { values = tensor.zeros { B * T, k }, ids = tensor.zeros({ B * T, k }, "i32") }
      if self.cache then self.cache:close() end
      self.cache = self.cache_path and cache_open(self.cache_path, k, V, B, T, fingerprint(self.teacher)) or nil
    end
  end
  local hash = self.cache and hash_rows(rows)
  if self.cache and self.cache:read(index, hash, self.top.values, self.top.ids) then return self.top, true end
  self.buf = self.buf or tensor.zeros { B * T, V }
  teacher_logits(self, rows, B, T, self.buf)
  if not k then return self.buf, false end
  K.distill_topk(self.buf, self.top.values, self.top.ids)
  if self.cache then self.cache:write(index, hash, self.top.values, self.top.ids) end
  return self.top, false
end

function Distiller:step(batch, index)
  index = index or self.n
  if math.type(index) ~= "integer" or index < 0 then options.fail("step", "index", "an integer >= 0", index) end
  local teach, cached = self:teacher_for(batch, index)
  local tr, info = self.tr, { cached = cached }
  local lo = { alpha = self.alpha, temperature = self.T, scale = 1 }
  tr.loss_fn = function(logits, targets, scale)
    lo.scale = scale
    local loss, ce, kl = K.distill_loss(logits, targets, teach, lo)
    local n = targets:numel()
    info.ce, info.kl = ce / n, kl / n
    return loss
  end
  local ok, loss, gnorm = pcall(tr.step, tr, batch)
  tr.loss_fn = nil
  if not ok then error(loss, 0) end
  self.n = self.n + 1
  return loss, gnorm, info
end

function Distiller:close()
  if self.cache then self.cache:close() end
  self.cache = nil
end

-- ---- distill{} ------------------------------------------------------------------------------

local DISTILL_OPTS = options.known { "teacher", "student", "batches", "steps", "temperature", "alpha", "topk",
                                     "cache", "progress", "trainer",
                                     -- the trainer's (slm.train.trainer)
                                     "lr", "betas", "eps", "weight_decay", "clip", "warmup", "total_steps",
                                     "min_lr", "no_decay" }
local TRAINER_KEYS = { "lr", "betas", "eps", "weight_decay", "clip", "warmup", "total_steps", "min_lr", "no_decay" }

--- distill{teacher =, student =, batches =, steps =, temperature = 2, alpha =
-- 0.5, topk =, cache =, progress =, lr = ... | trainer =} -> trainer, losses
-- teacher: any slm decoder with the student's vocabulary. student: a
-- trainable model (slm.train.init, or slm.load(path, {train = true})); its
-- trainer is made here with the trainer's options given (lr, betas, eps,
-- weight_decay, clip, warmup, total_steps (default: steps), min_lr,
-- no_decay), or given as `trainer` (a trainer of the student: its own
-- settings, state and step count). batches: a stream (slm.train.batches:
-- anything with :next()) or a list of batches, cycled (the cache index of
-- a list's batch is its position, so a cache serves every epoch). steps:
-- how many (default: the list's length). progress(step, loss, info) is
-- called after each step. losses[i] is step i's mean loss.
function M.distill(o)
  o = options.check("distill", o, DISTILL_OPTS)
  local teacher, student = o.teacher, o.student
  if not is_model(teacher) then options.fail("distill", "teacher", "an slm model (slm.load)", teacher) end
  if not is_model(student) or not student.params then
    options.fail("distill", "student", "a trainable model (slm.train.init, slm.load(path, {train = true}))", student)
  end
  local batches = o.batches
  local list = type(batches) == "table" and getmetatable(batches) == nil and batches or nil
  if not list and not (type(batches) == "table" and type(batches.next) == "function") then
    options.fail("distill", "batches", "a batch stream (slm.train.batches) or a list of batches", batches)
  end
  if list and #list == 0 then options.fail("distill", "batches", "a non-empty list", batches) end
  local steps = o.steps or (list and #list)
  if math.type(steps) ~= "integer" or steps < 1 then options.fail("distill", "steps", "a positive integer", o.steps) end
  if o.progress ~= nil and type(o.progress) ~= "function" then
    options.fail("distill", "progress", "a function(step, loss, info)", o.progress)
  end
  local train = require "slm.train"
  local tr = o.trainer
  if tr ~= nil then
    for _, key in ipairs(TRAINER_KEYS) do
      if o[key] ~= nil then
        error("distill: give the trainer's options to the trainer, not beside it ('" .. key .. "' with trainer =)", 2)
      end
    end
    if type(tr) ~= "table" or tr.model ~= student then
      options.fail("distill", "trainer", "a trainer of the student (slm.train.trainer(student, ...))", tr)
    end
  else
    local topts = {}
    for _, key in ipairs(TRAINER_KEYS) do topts[key] = o[key] end
    topts.total_steps = topts.total_steps or steps
    tr = train.trainer(student, topts)
  end
  local d = new_distiller("distill", teacher, tr, { temperature = o.temperature, alpha = o.alpha, topk = o.topk, cache = o.cache })
  local losses = {}
  local ok, err = pcall(function()
    for i = 1, steps do
      local batch, index
      if list then
        index = (i - 1) % #list
        batch = list[index + 1]
      else
        batch, index = batches:next(), i - 1
      end
      local loss, gnorm, info = d:step(batch, index)
      losses[i] = loss
      if o.progress then o.progress(i, loss, info, gnorm) end
    end
  end)
  d:close()
  if not ok then error(err, 0) end
  return tr, losses
end

-- ---- sequence-level distillation -------------------------------------------------------------

local CORPUS_OPTS = options.known { "prompts", "n", "max_tokens", "sampler", "seed", "out", "separator", "progress" }

--- generate_corpus(teacher, {prompts = {"\n"}, n =, max_tokens = 256,
-- sampler = {temp =, top_k =, ...}, seed = 0, out =, separator = "\n",
-- progress = fn(i, n)}) -> {n =, bytes =, tokens =, path =}
-- Writes n samples of the teacher to the text file out (each: its prompt,
-- the generated text, the separator), which slm.train.tokenize and
-- slm.train.batches read like any corpus (sequence-level distillation:
-- the student trains on the teacher's outputs). Sample i continues
-- prompts[(i - 1) % #prompts + 1] in a fresh context, sampled by
-- slm.sampler.default{<sampler options>, seed = seed + i - 1}: the same
-- call writes the same file. sampler may instead be a sampler (a chain),
-- used for every sample; seed is then refused (the chain has its own).
function M.generate_corpus(teacher, o)
  if not is_model(teacher) then error("generate_corpus: argument #1 must be an slm model (slm.load)", 2) end
  o = options.check("generate_corpus", o, CORPUS_OPTS)
  local prompts = o.prompts or { "\n" }
  if type(prompts) == "string" then prompts = { prompts } end
  if type(prompts) ~= "table" or #prompts == 0 then
    options.fail("generate_corpus", "prompts", "a string or a non-empty list of strings", o.prompts)
  end
  for i, p in ipairs(prompts) do
    if type(p) ~= "string" or p == "" then
      options.fail("generate_corpus", "prompts[" .. i .. "]", "a non-empty string", p)
    end
  end
  if math.type(o.n) ~= "integer" or o.n < 1 then options.fail("generate_corpus", "n", "a positive integer", o.n) end
  local max_tokens = o.max_tokens or 256
  if math.type(max_tokens) ~= "integer" or max_tokens < 1 then
    options.fail("generate_corpus", "max_tokens", "a positive integer", max_tokens)
  end
  if type(o.out) ~= "string" or o.out == "" then options.fail("generate_corpus", "out", "a file path", o.out) end
  local sep = o.separator or "\n"
  if type(sep) ~= "string" then options.fail("generate_corpus", "separator", "a string", sep) end
  if not options.is_int(o.seed, 0) then options.fail("generate_corpus", "seed", "an integer >= 0", o.seed) end
  if o.progress ~= nil and type(o.progress) ~= "function" then
    options.fail("generate_corpus", "progress", "a function(i, n)", o.progress)
  end
  if not teacher.tokenizer then error("generate_corpus: the teacher has no tokenizer", 2) end
  local sampler_mod = require "slm.sampler"
  local smp, fixed = o.sampler, nil
  if smp ~= nil and (type(smp) == "userdata" or getmetatable(smp) ~= nil) then
    if o.seed ~= nil then error("generate_corpus: seed with a sampler chain (it has its own seed)", 2) end
    fixed = smp
  elseif smp ~= nil and type(smp) ~= "table" then
    options.fail("generate_corpus", "sampler", "slm.sampler.default's options or a sampler chain", smp)
  elseif smp ~= nil and smp.seed ~= nil then
    error("generate_corpus: give the seed as generate_corpus's seed, not in sampler (sample i uses seed + i - 1)", 2)
  end
  local seed = o.seed or 0
  -- every sampler is made before the file is opened: a bad option fails first
  local function sampler_for(i)
    if fixed then return fixed end
    local so = { seed = seed + i - 1 }
    for k, v in pairs(smp or {}) do so[k] = v end
    return sampler_mod.default(so)
  end
  sampler_for(1)
  local fh, err = io.open(o.out, "wb")
  if not fh then error("generate_corpus: " .. tostring(err), 2) end
  local bytes, tokens = 0, 0
  local ok, gerr = pcall(function()
    local tok = teacher.tokenizer
    for i = 1, o.n do
      local prompt = prompts[(i - 1) % #prompts + 1]
      local ids = tok:encode(prompt)
      local sess = teacher:session { ctx = #ids + max_tokens, batch = math.min(64, #ids + max_tokens) }
      local s = sampler_for(i)
      local text, info = sess:generate(ids, { max_tokens = max_tokens, sampler = s }, function() end)
      if not fixed and s.free then s:free() end
      fh:write(prompt, text, sep)
      bytes = bytes + #prompt + #text + #sep
      tokens = tokens + info.tokens
      if o.progress then o.progress(i, o.n) end
    end
  end)
  fh:close()
  if not ok then
    os.remove(o.out)
    error(gerr, 0)
  end
  return { n = o.n, bytes = bytes, tokens = tokens, path = o.out }
end

return M
