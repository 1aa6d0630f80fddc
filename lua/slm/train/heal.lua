--- slm.train.heal: structured pruning followed by a short training run that
-- recovers quality ("healing"), measured on held-out text (docs/TRAINING.md,
-- "Pruning with healing").
--
--   local r = slm.train.heal { model = "default", data = "data/tinyshakespeare.txt",
--                              prune = { kind = "ffn", fraction = 0.25 }, steps = 100 }
--   print(r.base.loss, r.pruned.loss, r.healed.loss)   -- nats per token, validation split
--   print(slm.train.heal_table { r })                   -- a Markdown table of one or more runs
--
-- The steps, each on a file so that every stage is a model that slm.load
-- (and the reference) runs:
--   1. prune the GGUF at `model` into a temporary file:
--        kind = "ffn"    slm.prune.ffn_channels (fraction removed, or keep)
--        kind = "heads"  slm.prune.attention_heads (fraction removed, or keep)
--        kind = "layers" slm.prune.layers (layers = {0-based layers to drop})
--        kind = "none"   no pruning: the same training of the unpruned
--                        model (the control: what continued pretraining
--                        alone does to the validation loss)
--   2. load the pruned file with {train = true}: every weight becomes an f32
--      copy, its shapes taken from the file's tensors;
--   3. train it `steps` AdamW steps with plain next-token cross-entropy on
--      random windows of the training split of `data` (slm.train.data's
--      batches: the first `split` of the ids; seeded);
--   4. evaluate the unpruned, the pruned and the healed model on the
--      validation split (the rest of the ids): disjoint windows of ctx + 1
--      ids overlapping by one, every id after a window's first predicted,
--      the mean cross-entropy in nats per token (per character for a
--      character-level model), through the training forward in f32 (the
--      weights as dequantized from the file for the first two).
-- opts.out saves the healed model (tr:save: f32 weights and the optimizer
-- state beside them).
local options = require "slm.options"
local prune = require "slm.prune"
local clock = require("slm.core").clock   -- wall-clock seconds

local M = {}

local OPTS = options.known { "model", "prune", "data", "split", "steps", "lr", "min_lr", "warmup", "weight_decay", "betas",
                             "clip", "batch", "ctx", "seed", "eval_tokens", "baseline", "out", "log" }
local PRUNE_OPTS = options.known { "kind", "fraction", "keep", "layers" }

-- Errors are raised without a position (level 0) wherever they arise, and
-- heal re-raises them at its caller's line.
local function fail(key, expected, got) error(options.message("heal", key, expected, got), 0) end

local function tmpname(suffix)
  local p = os.tmpname()
  os.remove(p)          -- the name only: the files get a suffix
  return p .. suffix
end

-- fn(...) -> true, x; its errors (raised or returned) as "heal: msg"
local function call(fn, ...)
  local ok, done, x = pcall(fn, ...)
  if not ok then error("heal: " .. tostring(done):gsub("^[^\n]-%.lua:%d+: ", ""), 0) end
  if not done then error("heal: " .. tostring(x), 0) end
  return x
end

-- The pruning step: writes the pruned GGUF to out; -> a description.
local function run_prune(path, p, out)
  if type(p) ~= "table" then fail("prune", "a table {kind = \"ffn\" | \"heads\" | \"layers\", ...}", p) end
  options.check("heal: prune", p, PRUNE_OPTS, 0)
  local kind = p.kind
  if kind == "none" then    -- the control: the same training without pruning
    for k in pairs(p) do if k ~= "kind" then fail("prune." .. k, "absent for kind \"none\"", p[k]) end end
    return "none (continued pretraining)", path
  elseif kind == "layers" then
    if p.fraction ~= nil or p.keep ~= nil then fail("prune.fraction", "absent for kind \"layers\" (give layers)", p.fraction or p.keep) end
    if type(p.layers) ~= "table" or #p.layers == 0 then fail("prune.layers", "a non-empty list of layers", p.layers) end
    call(prune.layers, path, out, { drop = p.layers })
    return string.format("drop layer%s %s", #p.layers > 1 and "s" or "", table.concat(p.layers, ","))
  elseif kind == "ffn" or kind == "heads" then
    if p.layers ~= nil then fail("prune.layers", "absent for kind \"" .. kind .. "\"", p.layers) end
    if (p.fraction == nil) == (p.keep == nil) then fail("prune.fraction", "given (or keep), not both", p.fraction) end
    local keep = p.keep
    if p.fraction ~= nil then
      if type(p.fraction) ~= "number" or p.fraction <= 0 or p.fraction >= 1 then
        fail("prune.fraction", "a number in (0, 1) (the share removed)", p.fraction)
      end
      keep = 1 - p.fraction
    elseif type(keep) ~= "number" or keep <= 0 or keep >= 1 then
      fail("prune.keep", "a number in (0, 1) (the share kept)", keep)
    end
    if kind == "ffn" then
      local before = require("slm.gguf").open(path)
      local n_ff = before and before.metadata[before.metadata["general.architecture"] .. ".feed_forward_length"]
      if before then before:close() end
      local k = call(prune.ffn_channels, path, out, { keep = keep })
      return string.format("ffn %d -> %d channels", n_ff, k)
    end
    local r = call(prune.attention_heads, path, out, { keep = keep })
    return string.format("heads -> %d per layer", r.n_head)
  end
  fail("prune.kind", "\"ffn\", \"heads\", \"layers\" or \"none\"", kind)
end

local function count_params(model)
  local n = 0
  for _, name in ipairs(model.param_names) do n = n + model.params[name]:numel() end
  return n
end

-- Disjoint windows of ctx + 1 ids over ids[lo..hi] overlapping by one, in
-- batches of up to B windows (the last may be smaller).
local function val_batches(toks, lo, hi, ctx, B)
  local ids = toks:read(lo, hi - lo + 1)
  local batches, cur = {}, {}
  local i = 1
  while i + ctx <= #ids do
    cur[#cur + 1] = table.move(ids, i, i + ctx, 1, {})
    if #cur == B then batches[#batches + 1], cur = cur, {} end
    i = i + ctx
  end
  if #cur > 0 then batches[#batches + 1] = cur end
  return batches
end

-- Mean loss per predicted token over the batches, and tokens per second.
local function evaluate(tr, batches)
  local sum, n = 0, 0
  local t0 = clock()
  for _, b in ipairs(batches) do
    local k = #b * (#b[1] - 1)
    sum, n = sum + tr:eval_loss(b) * k, n + k
  end
  return sum / n, n / math.max(clock() - t0, 1e-9), n
end

--- heal(opts) -> result (see the header). opts:
--   model   a GGUF path (or "default", or a model loaded from a GGUF file)
--   prune   {kind = "ffn" | "heads", fraction = removed | keep = kept}
--           or {kind = "layers", layers = {0-based layers}} or {kind = "none"}
--   data    a text file (tokenized with the model's tokenizer)
--   split   0.9: the first floor(split * n) ids train, the rest validate
--   steps   100 healing steps; lr 3e-4 (cosine to min_lr = lr / 10 at the
--           last step), warmup 0, weight_decay 0, clip 1.0
--   batch   16 windows of ctx = min(the model's training context, 256) + 1 ids
--   seed    1 (the training windows)
--   eval_tokens  the first n ids of the validation split only (default: all)
--   baseline  the unpruned model's validation loss when already measured
--             (same data, split, ctx and eval_tokens): not measured again
--   out     save the healed model there (tr:save)
--   log     a function(line) told each stage, or true for print
-- result: {what =, base = {loss =, params =}, pruned = {loss =, params =,
--   eval_tokens_per_s =}, healed = {loss =, params =, eval_tokens_per_s =},
--   steps =, losses = {training loss per step}, seconds =, tokens_per_s =
--   (healing), eval_tokens =, model = the healed model, trainer =}
-- The checked settings of heal's options (errors at level 0).
local function settings(opts)
  options.check("heal", opts, OPTS, 0)
  local c = {}
  local path = opts.model
  if type(path) == "table" and path.source then
    if path.source.kind ~= "gguf" or path.source.memory then fail("model", "a model loaded from a GGUF file", path) end
    path = path.source.path
  end
  if type(path) ~= "string" then fail("model", "a GGUF path or a model loaded from one", path) end
  local rpath, rerr = require("slm.model").resolve(path)
  if not rpath then error("heal: " .. rerr, 0) end
  c.path = rpath
  if type(opts.data) ~= "string" then fail("data", "a text file name", opts.data) end
  local function number(key, default, ok, expected)
    local v = opts[key]
    if v == nil then return default end
    if type(v) ~= "number" or v ~= v or not ok(v) then fail(key, expected, v) end
    return v
  end
  local function int(key, default, min, expected)
    local v = opts[key]
    if v == nil then return default end
    if not options.is_int(v, min) then fail(key, expected, v) end
    return v
  end
  c.split = number("split", 0.9, function(v) return v > 0 and v < 1 end, "a number in (0, 1)")
  c.steps = int("steps", 100, 0, "a non-negative integer")
  c.lr = number("lr", 3e-4, function(v) return v > 0 end, "a positive number")
  c.min_lr = number("min_lr", c.lr / 10, function(v) return v >= 0 end, "a non-negative number")
  c.warmup = int("warmup", 0, 0, "a non-negative integer")
  c.weight_decay = number("weight_decay", 0, function(v) return v >= 0 end, "a non-negative number")
  c.clip = number("clip", 1.0, function(v) return v > 0 end, "a positive number")
  c.betas = opts.betas or { 0.9, 0.99 }   -- checked by the trainer
  c.batch = int("batch", 16, 1, "a positive integer")
  c.ctx = int("ctx", nil, 1, "a positive integer")
  c.seed = int("seed", 1, nil, "an integer")
  c.eval_tokens = int("eval_tokens", nil, 2, "an integer >= 2")
  c.baseline = number("baseline", nil, function() return true end, "a number (a validation loss)")
  if opts.out ~= nil and type(opts.out) ~= "string" then fail("out", "a file name", opts.out) end
  c.out = opts.out
  local log = opts.log
  if log == true then log = print end
  if log ~= nil and type(log) ~= "function" then fail("log", "a function(line) or true", log) end
  c.say = function(fmt, ...) if log then log(string.format(fmt, ...)) end end
  c.log = log
  return c
end

-- prune (done), evaluate, heal, evaluate: the result table
local function run(c, opts, what, pruned_path, tok_path)
  local train = require "slm.train"
  local slm_model = require "slm.model"
  local say = c.say
  local base = assert(slm_model.load(c.path, { train = true }))
  if not base.tokenizer then error("heal: " .. c.path .. " has no tokenizer", 0) end
  local ctx = c.ctx or math.min(base.hp.n_ctx_train or 256, 256)
  local n_ids, terr = train.data.tokenize(base.tokenizer, opts.data, tok_path)
  if not n_ids then error("heal: " .. terr, 0) end
  local toks = assert(train.data.open(tok_path))
  local stream = train.data.batches(toks, { ctx = ctx, batch = c.batch, seed = c.seed, split = c.split })
  local vlo, vhi = stream.hi + 1, toks:count()
  if c.eval_tokens then vhi = math.min(vhi, vlo + c.eval_tokens - 1) end
  if vhi - vlo < ctx then
    toks:close()
    error(string.format("heal: the validation split holds %d ids, fewer than a window of ctx + 1 = %d",
                        vhi - vlo + 1, ctx + 1), 0)
  end
  local val = val_batches(toks, vlo, vhi, ctx, c.batch)
  local r = { what = what, kind = opts.prune.kind, steps = c.steps, losses = {}, ctx = ctx, batch = c.batch }
  r.base = { params = count_params(base), loss = c.baseline }
  if not r.base.loss then
    r.base.loss, r.base.eval_tokens_per_s, r.eval_tokens = evaluate(train.trainer(base), val)
    say("unpruned: validation loss %.4f (%d tokens)", r.base.loss, r.eval_tokens)
  end
  base = nil   -- its f32 copies go before the pruned model's come
  collectgarbage()
  local model = assert(slm_model.load(pruned_path, { train = true }))
  local tr = train.trainer(model, { lr = c.lr, min_lr = c.min_lr, warmup = c.warmup,
                                    total_steps = math.max(1, c.steps), weight_decay = c.weight_decay,
                                    clip = c.clip, betas = c.betas })
  r.pruned = { params = count_params(model) }
  r.pruned.loss, r.pruned.eval_tokens_per_s, r.eval_tokens = evaluate(tr, val)
  say("%s: %d -> %d parameters, validation loss %.4f", what, r.base.params, r.pruned.params, r.pruned.loss)
  local t0 = clock()
  for i = 1, c.steps do
    r.losses[i] = tr:step(stream:next())
    if i % 10 == 0 or i == c.steps then say("heal step %d/%d: loss %.4f", i, c.steps, r.losses[i]) end
  end
  r.seconds = clock() - t0
  r.tokens_per_s = c.steps * c.batch * ctx / math.max(r.seconds, 1e-9)
  r.healed = { params = r.pruned.params }
  r.healed.loss, r.healed.eval_tokens_per_s = evaluate(tr, val)
  say("healed (%d steps, %.0f tokens/s): validation loss %.4f", c.steps, r.tokens_per_s, r.healed.loss)
  if c.out then tr:save(c.out) end
  toks:close()
  r.model, r.trainer = model, tr
  return r
end

function M.heal(opts)
  local ok, c = pcall(settings, opts)
  if not ok then error(c, 2) end
  -- the pruned file first: bad prune options fail before any work
  local pruned_path, tok_path = tmpname(".gguf"), tmpname(".tok")
  local r
  ok, r = pcall(function()
    local what, file = run_prune(c.path, opts.prune, pruned_path)
    return run(c, opts, what, file or pruned_path, tok_path)
  end)
  os.remove(pruned_path)
  os.remove(tok_path)
  if not ok then error(r, 2) end
  return r
end

--- heal_table(results) -> a Markdown table of heal results, one row each:
-- pruning, parameters, validation loss unpruned / pruned / healed, the
-- share of the gap pruning opened that healing closed ("-" for the
-- control, kind "none"), healing tokens/s.
function M.table(results)
  if type(results) ~= "table" or #results == 0 then
    error("bad argument #1 to 'heal_table' (a non-empty list of heal results expected)", 2)
  end
  local out = {
    "| pruning | parameters | unpruned | pruned | healed | steps | gap closed | healing tok/s |",
    "| --- | --- | --- | --- | --- | --- | --- | --- |",
  }
  for _, r in ipairs(results) do
    local gap = r.pruned.loss - r.base.loss
    out[#out + 1] = string.format("| %s | %.2fM -> %.2fM | %.4f | %.4f | %.4f | %d | %s | %.0f |", r.what,
                                  r.base.params / 1e6, r.pruned.params / 1e6, r.base.loss, r.pruned.loss,
                                  r.healed.loss, r.steps,
                                  r.kind ~= "none" and gap > 0 and string.format("%.0f %%", 100 * (r.pruned.loss - r.healed.loss) / gap)
                                  or "-", r.tokens_per_s)
  end
  return table.concat(out, "\n")
end

return M
