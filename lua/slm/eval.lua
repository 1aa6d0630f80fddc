--- slm.eval: perplexity and KL divergence over a text.
--
--   local r = slm.eval.perplexity(model, text, {ctx = 512, stride = 256})
--   r.ppl, r.nll (mean negative log-likelihood, nats), r.n (tokens scored)
--   local k = slm.eval.kl(base, model, text, {ctx = 512})
--   k.mean, k.max (KL(base || model) per token, nats), k.top1 (fraction of
--   positions where both rank the same token first), k.n, k.ppl_base, k.ppl
--
-- text is a string (encoded with the model's tokenizer, BOS as the
-- vocabulary asks) or a list of token ids. Windows of ctx tokens start every
-- stride tokens (stride defaults to ctx: disjoint windows); each window is
-- evaluated from an empty context and scores only tokens no earlier window
-- scored, so with stride < ctx every token after the first window sees at
-- least ctx - stride tokens of context (the sliding-window evaluation of
-- Hugging Face's perplexity guide). The first token of the text, and with
-- disjoint windows (stride = ctx) the first token of each window, is not
-- scored: nothing in its window predicts it.
--
-- opts.progress(done, total) is called after each window.
-- Logits of every position come from one batched forward per window (the
-- architecture's all-logits head); the log-softmax runs in Lua in double.
local tensor = require "slm.tensor"

local M = {}

local function tokens_of(model, text)
  if type(text) == "table" then return text end
  if type(text) ~= "string" then error("eval: text must be a string or a list of token ids", 3) end
  if not model.tokenizer then error("eval: the model has no tokenizer (pass token ids)", 3) end
  return model.tokenizer:encode(text)
end

local unpack_fmt = {}
local function row_values(t)
  local n = t:numel()
  local fmt = unpack_fmt[n]
  if not fmt then
    fmt = "<" .. string.rep("f", n)
    unpack_fmt[n] = fmt
  end
  local vals = { string.unpack(fmt, t:tobytes()) }
  vals[n + 1] = nil   -- string.unpack's last result is the next position
  return vals
end

--- log_softmax(values) -> logp (a new table), argmax
function M.log_softmax(z)
  local mx, arg = -math.huge, 1
  for i = 1, #z do
    if z[i] > mx then mx, arg = z[i], i end
  end
  local sum = 0
  for i = 1, #z do sum = sum + math.exp(z[i] - mx) end
  local lse = mx + math.log(sum)
  local out = {}
  for i = 1, #z do out[i] = z[i] - lse end
  return out, arg
end

local function session_for(model, ctx, batch)
  local sess = model:session { ctx = ctx, batch = math.min(batch, ctx) }
  if model.def.all_logits then
    sess.all_logits = tensor.zeros({ sess.n_batch, model.hp.n_vocab })
  end
  return sess
end

-- Evaluates toks[a..b] in fresh contexts of every session of ss (all of the
-- same batch size, in lockstep so that only one chunk of logits per session
-- is alive); calls fn(i, row1, row2, ...) with the f32 logits (n_vocab) that
-- predict toks[i + 1], for i = a..b-1 with i >= from.
local function run_window(ss, toks, a, b, from, fn)
  local all = true
  for _, sess in ipairs(ss) do
    sess:reset()
    all = all and sess.all_logits ~= nil
  end
  local rows = {}
  local i = a
  while i <= b do
    -- without all-logits heads, one token per call: its logits are the last row
    local m = all and math.min(ss[1].n_batch, b - i + 1) or 1
    local chunk = table.move(toks, i, i + m - 1, 1, {})
    for _, sess in ipairs(ss) do sess:eval(chunk) end
    for r = 1, m do
      local p = i + r - 1
      if p >= from and p < b then
        for k, sess in ipairs(ss) do rows[k] = all and sess.all_logits:select(1, r) or sess.logits end
        fn(p, table.unpack(rows))
      end
    end
    i = i + m
  end
end

-- The windows: calls fn(a, b, from) for each (toks[a..b], scoring from from)
-- that has a token to score (with disjoint windows, a last window of one
-- token has none).
local function windows(n, ctx, stride, fn)
  local scored_to = 1       -- toks[1..scored_to] need no more scoring
  local a = 1
  while true do
    local b = math.min(a + ctx - 1, n)
    local from = math.max(a, scored_to)
    if from < b then fn(a, b, from) end
    scored_to = b
    if b >= n then break end
    a = a + stride
  end
end

local function options(opts, model)
  opts = opts or {}
  local ctx = opts.ctx or math.min(model.hp.n_ctx_train or 512, 512)
  local stride = opts.stride or ctx
  if math.type(ctx) ~= "integer" or ctx < 2 then error("eval: ctx must be an integer >= 2", 3) end
  if math.type(stride) ~= "integer" or stride < 1 or stride > ctx then
    error("eval: stride must be an integer in 1..ctx", 3)
  end
  return ctx, stride, opts.batch or 64, opts.progress
end

--- perplexity(model, text, opts) -> {ppl =, nll =, n =}
function M.perplexity(model, text, opts)
  local ctx, stride, batch, progress = options(opts, model)
  local toks = tokens_of(model, text)
  if #toks < 2 then error("perplexity: the text has fewer than 2 tokens", 2) end
  local sess = session_for(model, ctx, batch)
  local nll, count = 0, 0
  windows(#toks, ctx, stride, function(a, b, from)
    run_window({ sess }, toks, a, b, from, function(i, row)
      local logp = M.log_softmax(row_values(row))
      nll = nll - logp[toks[i + 1] + 1]
      count = count + 1
    end)
    if progress then progress(b, #toks) end
  end)
  return { ppl = math.exp(nll / count), nll = nll / count, n = count }
end

--- kl(base, model, text, opts) -> {mean =, max =, top1 =, n =, ppl_base =, ppl =}
function M.kl(base, model, text, opts)
  local ctx, stride, batch, progress = options(opts, base)
  if base.hp.n_vocab ~= model.hp.n_vocab then
    error(string.format("kl: vocabularies differ (%d vs %d)", base.hp.n_vocab, model.hp.n_vocab), 2)
  end
  local toks = tokens_of(base, text)
  if #toks < 2 then error("kl: the text has fewer than 2 tokens", 2) end
  local sb, sm = session_for(base, ctx, batch), session_for(model, ctx, batch)
  if (sb.all_logits == nil) ~= (sm.all_logits == nil) then   -- lockstep needs equal chunks
    sb.all_logits, sm.all_logits = nil, nil
  end
  local sum, mx, agree, count, nll_b, nll_m = 0, 0, 0, 0, 0, 0
  windows(#toks, ctx, stride, function(a, b, from)
    run_window({ sb, sm }, toks, a, b, from, function(i, brow, mrow)
      local p, parg = M.log_softmax(row_values(brow))
      local q, qarg = M.log_softmax(row_values(mrow))
      local d = 0
      for v = 1, #p do d = d + math.exp(p[v]) * (p[v] - q[v]) end
      if d < 0 then d = 0 end   -- rounding of identical distributions
      sum, count = sum + d, count + 1
      if d > mx then mx = d end
      if parg == qarg then agree = agree + 1 end
      nll_b = nll_b - p[toks[i + 1] + 1]
      nll_m = nll_m - q[toks[i + 1] + 1]
    end)
    if progress then progress(b, #toks) end
  end)
  return { mean = sum / count, max = mx, top1 = agree / count, n = count,
           ppl_base = math.exp(nll_b / count), ppl = math.exp(nll_m / count) }
end

return M
