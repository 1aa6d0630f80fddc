--- Speculative decoding for sess:generate (issue 19), and sess:rewind.
--
--   local draft = slm.load("model-q4_0.gguf"):session { ctx = 2048 }
--   local text, info = sess:generate(prompt, { draft = draft, n_draft = 6, max_tokens = 200 }, fn)
--   local text, info = sess:generate(prompt, { draft = "ngram", max_tokens = 200 }, fn)
--   info.speculative  -- {rounds, drafted, accepted, acceptance, forwards, tokens_per_forward}
--
-- Each round a draft proposes up to n_draft tokens d1..dk: a draft session
-- (a model sharing the target's vocabulary, usually a smaller or more
-- quantized one) decodes them, or prompt lookup copies the tokens that
-- followed the latest earlier occurrence of the last NGRAM_MAX..NGRAM_MIN
-- tokens of prompt + output. One target forward over k + 1 positions (the
-- token the last round emitted, then d1..dk; the session's all-logits head)
-- gives the target's logits after each, and the tokens are accepted by the
-- standard rule:
--   greedy chains (the sampler ends with greedy): di is kept while it is the
--     token the chain picks from the target's logits at its position; the
--     first mismatch is replaced by the chain's pick, and when all k match
--     the chain picks one more from the last row. The output is the plain
--     decoding's, token for token (a row's logits do not depend on how many
--     rows a forward holds: the batch invariance of the forward).
--   sampled chains (ending with dist): speculative sampling (Leviathan et
--     al. 2023, Chen et al. 2023; csrc/sampler/speculative.h): di ~ q is
--     accepted with probability min(1, p(di) / q(di)), else replaced by a
--     draw from normalize(max(0, p - q)), and all k accepted adds a draw
--     from the last row. p and q are what the sampler chain samples from
--     (every stage but the selection: penalties, logit_bias, top_k, top_p,
--     min_p, typical, temp, applied to the target's and the draft's logits
--     alike, as the reference's speculative example does with its one
--     sampler setting); prompt lookup's q is the point mass at di. Each
--     token is distributed as plain sampling's with the same chain, but
--     the random stream is consumed differently: the same seed gives other
--     text than plain decoding (and the same text on every run).
-- Then the target and a draft session go back to the last accepted token:
-- KV-cache sessions by sess:rewind, recurrent ones (Mamba, RWKV, LFM2's
-- short convolutions) by restoring a snapshot taken before the round and
-- evaluating the accepted tokens again (one more forward, counted in
-- forwards). When generation stops inside a round (a stop string, an
-- end-of-generation token, max_tokens, a callback), the session, the
-- draft's and the sampler's history hold exactly what plain decoding
-- leaves: every emitted token but an end one evaluated.
--
-- Greedy exactness rests on the batch invariance of the forward (a row's
-- logits do not depend on the other rows of its forward), which holds for
-- f16, bf16 and quantized weights but not for f32 ones: on
-- stories260K-f32, forwards of 2 rows already differ from single rows in
-- the last bits at most positions (and f32 products of 4 rows or more go
-- to OpenBLAS). With f32 weights the greedy text can therefore differ from
-- plain decoding where two tokens' logits tie to the last bits, and the
-- session's cache differs from plain decoding's in the last bits.
--
-- Draft length adapts to the acceptance (the schedule of Hugging Face's
-- assisted generation, with a back-off): a round whose k drafts were all
-- accepted raises the next k by 2 (up to n_draft), any other lowers it by
-- 1 (down to 1); a round of one draft accepting nothing leaves the next 1,
-- 2, 4, ... SKIP_MAX rounds without drafting (plain steps: one target
-- forward each; a draft session catches up in one batched forward when
-- drafting resumes), and any accepted draft ends the back-off. A draft
-- that rarely agrees (another model's quantization gone wrong, random
-- weights) then costs little more than plain decoding instead of a draft
-- decode and a wider target forward per token. The length depends only on
-- earlier rounds, so greedy output stays plain decoding's and sampled
-- tokens keep their distribution; stats.skipped counts the rounds without
-- drafts.
--
-- Limits: k is at most n_draft, the session's batch - 1 (one forward), what
-- is left of max_tokens and of the context; a draft session whose context
-- cannot hold the text drafts nothing (plain decoding). Lua sampler stages
-- and the regex, grammar and json_schema options are refused with a draft (they would see the draft's
-- positions too). A draft of another vocabulary (size, or any token's text
-- when both models have tokenizers) is refused.
local core = require "slm.core"
local options = require "slm.options"

local spec_c = core.speculative

local M = {}

--- Prompt lookup: match lengths tried, longest first.
M.NGRAM_MAX, M.NGRAM_MIN = 3, 1
--- Tokens drafted per round unless n_draft says.
M.DEFAULT_N_DRAFT = 6
--- Longest run of rounds without drafting after rounds that accepted nothing.
M.SKIP_MAX = 16

--- problem(what, opts) -> nil, or the message for a wrong draft/n_draft
-- (generate's option check calls it).
function M.problem(what, opts)
  local d = opts.draft
  if d ~= nil and d ~= "ngram" and getmetatable(d) ~= require("slm.model").Session then
    return options.message(what, "draft", 'a session or "ngram"', d)
  end
  if not options.is_int(opts.n_draft, 1) then return options.message(what, "n_draft", "a positive integer", opts.n_draft) end
  if opts.n_draft ~= nil and d == nil then return what .. ": n_draft needs a draft (a session or \"ngram\")" end
end

-- Rewinding ------------------------------------------------------------------

local function is_kv(sess)
  local mt = getmetatable(sess.state)
  return type(mt) == "table" and mt.__name == "slm.KVState"
end

--- can_rewind(sess, n) -> true, or false and why not: whether the
-- session can drop its tokens after the first n and evaluate the next
-- token at position n.
-- A KV cache keeps position p in row p (full layers: any n works) or, in a
-- sliding-window ring of cap rows, in row p % cap: it holds positions
-- n_past - cap .. n_past - 1, and a continuation at n needs
-- max(0, n - window + 1) .. n - 1 (kvcache.h). Recurrent states fold
-- every token into one state and cannot go back.
function M.can_rewind(sess, n)
  if not is_kv(sess) then
    return false, string.format("%s sessions hold a recurrent state that cannot go back (restore a snapshot taken at that point)",
                                sess.model.hp.arch)
  end
  local net = sess.model.net
  for step, l in ipairs(net.plan or {}) do
    local w = net.layers[l].window or 0
    local cap = sess.state:rows(step)
    if w > 0 and cap < sess.n_ctx and math.max(0, n - w + 1) < sess.n_past - cap then
      return false, string.format("the sliding-window cache of layer %d holds positions %d..%d; continuing from position %d needs position %d",
                                  l - 1, sess.n_past - cap, sess.n_past - 1, n, math.max(0, n - w + 1))
    end
  end
  return true
end

-- drops the tokens after the first n (n <= n_past) of a session that can
-- rewind; its logits are left as they were
local function trim(sess, n)
  for i = #sess.tokens, n + 1, -1 do sess.tokens[i] = nil end
  sess.n_past = n
end

--- sess:rewind(n) -> sess: forgets every token after the first n, as if
-- only those had been evaluated; the logits are the ones after token n
-- (that token is evaluated again: one single-token forward), zeros for
-- n = 0. KV-cache sessions only (see can_rewind); a recurrent session is
-- an error saying so.
function M.rewind(sess, n)
  if not options.is_int(n, 0) or n > sess.n_past then
    error(string.format("bad argument #1 to 'rewind' (an integer in 0..%d expected, got %s)", sess.n_past, tostring(n)), 2)
  end
  if n == sess.n_past then return sess end
  local ok, why = M.can_rewind(sess, math.max(n - 1, 0))   -- token n is evaluated again
  if not ok then error("rewind: " .. why, 2) end
  if n == 0 then
    trim(sess, 0)
    sess.logits:zero_()
    return sess
  end
  local last = sess.tokens[n]
  trim(sess, n - 1)
  sess:eval { last }
  return sess
end

-- Vocabulary -----------------------------------------------------------------

local checked = setmetatable({}, { __mode = "k" })   -- target model -> {draft model -> true}

-- nil when the draft model shares the target's vocabulary, else why not
local function vocab_problem(target, draft)
  if target == draft or (checked[target] and checked[target][draft]) then return nil end
  local what, x, y, z = require("slm.model").vocab_difference(target, draft)   -- not at load: slm.model requires this file
  if what == "size" then
    return string.format("the draft's vocabulary has %d tokens, the target's %d", y, x)
  elseif what == "token" then
    return string.format("token %d is %q in the target's vocabulary, %q in the draft's", x, y, z)
  end
  checked[target] = checked[target] or setmetatable({}, { __mode = "k" })
  checked[target][draft] = true
end

--- check(sess, opts, level): errors (at level) for a draft generate
-- cannot use: the session itself, another vocabulary, with regex, grammar
-- or json_schema (the constraint masks one position at a time; drafted
-- tokens would escape it).
function M.check(sess, opts, level)
  local draft = opts.draft
  for _, k in ipairs { "regex", "grammar", "json_schema" } do
    if opts[k] ~= nil then error("generate: a draft cannot be combined with " .. k, level) end
  end
  if draft ~= "ngram" then
    if draft == sess then error("generate: the draft must be another session than the one generating", level) end
    local why = vocab_problem(sess.model, draft.model)
    if why then error("generate: draft of another vocabulary: " .. why, level) end
  end
end

-- The speculative state of one generate call -----------------------------------

local Spec = {}
Spec.__index = Spec

--- new(sess, opts, sampler, is_end) -> the token source generate draws from
-- (opts checked by problem): spec:next(left) -> id, spec.n_past (the
-- position plain decoding would be at), spec:settle(), spec.stats.
function M.new(sess, opts, sampler, is_end)
  local draft = opts.draft
  local lua = spec_c.lua_stage(sampler)
  if lua then
    error(string.format("generate: a draft cannot run the Lua sampler stage '%s' (it would also see the draft's positions)",
                        lua), 3)
  end
  local greedy = spec_c.is_greedy(sampler)
  local hp = sess.model.hp
  local self = setmetatable({
    sess = sess, draft = draft ~= "ngram" and draft or nil, sampler = sampler, greedy = greedy,
    is_end = is_end, kmax = opts.n_draft or M.DEFAULT_N_DRAFT, n_vocab = hp.n_vocab,
    skip = 0, backoff = 0,       -- rounds left without drafting, the last back-off
    n_past = sess.n_past,        -- plain decoding's n_past before the next token
    pending = nil,               -- emitted, not yet evaluated by the target
    queue = {}, qi = 1,          -- this round's tokens, the next to hand out
    qs = {},                     -- the draft's dense distributions (sampled chains)
    stats = { rounds = 0, drafted = 0, accepted = 0, acceptance = 0, forwards = 0, tokens = 0, tokens_per_forward = 0,
              skipped = 0 },
  }, Spec)
  self.k = self.kmax
  return self
end

local tensor

-- the target's token list with the pending token after it: t(i), length
local function seq(self)
  local toks, n = self.sess.tokens, #self.sess.tokens
  local p = self.pending
  if p then return function(i) return i <= n and toks[i] or p end, n + 1 end
  return function(i) return toks[i] end, n
end

-- Prompt lookup: the tokens after the latest earlier occurrence of the
-- sequence's last m tokens, m from NGRAM_MAX down to NGRAM_MIN; {} when
-- none occurs.
local function ngram_propose(self, k)
  local at, n = seq(self)
  for m = math.min(M.NGRAM_MAX, n - 1), M.NGRAM_MIN, -1 do
    for j = n - m, 1, -1 do            -- occurrence at j .. j + m - 1, before the suffix
      local same = true
      for t = 0, m - 1 do
        if at(j + t) ~= at(n - m + 1 + t) then same = false break end
      end
      if same then
        local out = {}
        for t = j + m, math.min(j + m + k - 1, n) do out[#out + 1] = at(t) end
        return out
      end
    end
  end
  return {}
end

-- Brings the draft session to the target's sequence (its last token
-- evaluated, so that its logits predict the next): rewinds a KV draft to
-- the common prefix, restores a recurrent one from its snapshot of the last
-- round's start. false when the draft's context cannot hold the sequence.
local function sync_draft(self)
  local d = self.draft
  local at, n = seq(self)
  if n + 1 > d.n_ctx then return false end
  local common = 0
  local lim = math.min(d.n_past, n)
  while common < lim and d.tokens[common + 1] == at(common + 1) do common = common + 1 end
  if common == n and d.n_past == n then return true end    -- logits already after token n
  local keep = math.min(common, n - 1)                      -- evaluate at least one: fresh logits
  if keep < d.n_past then
    if is_kv(d) then
      trim(d, keep)
    else
      local snap = self.dsnap
      if not snap or snap.n_past > keep then snap = nil end
      if snap then d:restore(snap) else d:reset() end
      keep = d.n_past
    end
  end
  local ids = {}
  for i = keep + 1, n do ids[#ids + 1] = at(i) end
  d:eval(ids)
  if not is_kv(d) then self.dsnap = d:snapshot() end
  return true
end

-- The draft session's proposal: up to k tokens decoded with the sampler's
-- chain (greedy picks, or draws whose dense distributions go to self.qs),
-- stopping after an end token. The sampler's history sees the drafted
-- tokens (penalties); the caller puts it back.
local function model_propose(self, k)
  if not sync_draft(self) then return {} end
  local d, smp, out = self.draft, self.sampler, {}
  tensor = tensor or require "slm.tensor"
  for i = 1, k do
    local id
    if self.greedy then
      id = smp:sample(d.logits)
    else
      local q = self.qs[i]
      if not q then
        q = tensor.zeros { self.n_vocab }
        self.qs[i] = q
      end
      id = spec_c.draw(smp, d.logits, q)
    end
    smp:accept(id)
    out[i] = id
    if i == k or self.is_end(id) then break end
    d:eval { id }
  end
  return out
end

-- the sampler's history with its current random state
local function set_history(smp, hist)
  local st = smp:state()
  smp:set_state { rng = st.rng, history = hist }
end

-- keeps the first j evaluated tokens of the round in the target (after
-- base), with rows[j + 1] as its logits
local function keep_round(self, j)
  local r, sess = self.round, self.sess
  local n = r.base + j
  if n == sess.n_past then return end
  if r.snap then
    local ids = table.move(sess.tokens, r.snap.n_past + 1, n, 1, {})
    sess:restore(r.snap)
    if #ids > 0 then
      sess:eval(ids)
      self.stats.forwards = self.stats.forwards + 1
    end
  else
    trim(sess, n)
    if r.rows[j + 1] ~= sess.logits then sess.logits:copy_(r.rows[j + 1]) end
  end
end

-- One round: propose, verify in one target forward, accept, roll back.
function Spec:run_round(left)
  local sess, smp, st = self.sess, self.sampler, self.stats
  -- k + 1 tokens at most: max_tokens, the context, one forward of the batch
  local k = math.min(self.k, left - 1, sess.n_ctx - self.n_past - 1, sess.n_batch - 1)
  if self.skip > 0 and k > 0 then
    self.skip, k = self.skip - 1, 0
    st.skipped = st.skipped + 1
  end
  local hist0 = smp:state().history
  local drafts = {}
  if k > 0 then drafts = self.draft and model_propose(self, k) or ngram_propose(self, k) end
  set_history(smp, hist0)
  k = #drafts
  -- the target's logits before each position: rows[i] predicts drafts[i]
  local ids = {}
  if self.pending then ids[1] = self.pending end
  for i = 1, k do ids[#ids + 1] = drafts[i] end
  local snap = (k > 0 and not is_kv(sess)) and sess:snapshot() or nil   -- drafts may be dropped
  local base = sess.n_past + (self.pending and 1 or 0)  -- the target's n_past before drafts[1]
  local rows = {}
  if not self.pending then rows[1] = k > 0 and sess.logits:clone() or sess.logits end
  local r0 = #rows                                      -- rows[r0 + r]: after ids[r]
  if #ids == 1 then
    sess:eval(ids)
    rows[r0 + 1] = sess.logits
  elseif #ids > 1 then
    tensor = tensor or require "slm.tensor"
    local all = self.all
    if not all then
      all = tensor.zeros { sess.n_batch, self.n_vocab }
      self.all = all
    end
    local saved = sess.all_logits
    sess.all_logits = all
    local ok, err = pcall(sess.eval, sess, ids)
    sess.all_logits = saved
    if not ok then error(err, 0) end
    for r = 1, #ids do rows[r0 + r] = all:select(1, r) end
  end
  if #ids > 0 then st.forwards = st.forwards + 1 end
  -- acceptance
  local out, m = {}, nil
  for i = 1, k do
    local ok, id
    if self.greedy then
      id = smp:sample(rows[i])
      ok = id == drafts[i]
    else
      ok, id = spec_c.verify(smp, rows[i], drafts[i], self.draft and self.qs[i] or nil)
    end
    smp:accept(id)
    out[i] = id
    if not ok or self.is_end(id) then m = i break end
  end
  if not m then
    m = k + 1
    out[m] = smp:sample(rows[m])
    smp:accept(out[m])
  end
  st.rounds, st.drafted = st.rounds + 1, st.drafted + k
  local acc = m - 1
  if m <= k and out[m] == drafts[m] then acc = m end    -- an accepted end token closed the round
  st.accepted = st.accepted + acc
  if k > 0 then                                         -- the next round's length
    self.k = acc == k and math.min(self.k + 2, self.kmax) or math.max(1, self.k - 1)
    if acc > 0 then
      self.backoff = 0
    elseif k == 1 then
      self.backoff = math.min(math.max(1, 2 * self.backoff), M.SKIP_MAX)
      self.skip = self.backoff
    end
  end
  -- the target keeps the drafts before out[m]; out[m] is pending
  self.round = { base = base, rows = rows, snap = snap, hist0 = hist0, m = m }
  keep_round(self, m - 1)
  self.pending = out[m]
  self.queue, self.qi = out, 1
end

--- spec:next(left) -> the next token id (left: tokens max_tokens still
-- allows, >= 1); runs a round when this one's tokens are handed out.
function Spec:next(left)
  if self.qi > #self.queue then self:run_round(left) end
  local id = self.queue[self.qi]
  self.qi = self.qi + 1
  self.n_past = self.n_past + 1
  self.last = id
  self.stats.tokens = self.stats.tokens + 1
  return id
end

--- spec:settle(): generation ended after the last token handed out; the
-- target holds every handed-out token but an end one, as plain decoding
-- leaves it, and the sampler's history every handed-out token.
function Spec:settle()
  if self.settled then return end
  self.settled = true
  local r = self.round
  if r then
    local c = self.qi - 1                                   -- tokens of the round handed out
    local j = (c > 0 and self.is_end(self.queue[c])) and c - 1 or c
    if j == r.m then
      self.sess:eval { self.pending }
      self.stats.forwards = self.stats.forwards + 1
    elseif j < r.m - 1 then
      keep_round(self, j)
    end
    if c < #self.queue then
      local h = table.move(r.hist0, 1, #r.hist0, 1, {})
      for i = 1, c do h[#h + 1] = self.queue[i] end
      set_history(self.sampler, h)
    end
    self.pending = nil
  end
  local st = self.stats
  st.acceptance = st.drafted > 0 and st.accepted / st.drafted or 0
  st.tokens_per_forward = st.forwards > 0 and st.tokens / st.forwards or 0
end

M.Spec = Spec
return M
