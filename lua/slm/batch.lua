--- slm.batch: the next tokens of several sessions in one forward, and
-- continuous batching on top of it (issue 19).
--
--   local b = slm.batch { s1, s2, s3 }          -- sessions of one model
--   local logits = b:eval { 42, { 7, 8 }, 99 }   -- s1 gets 42, s2 7 then 8, s3 99
--   -- logits[i] is sessions[i].logits (each session's own buffer), as
--   -- after sessions[i]:eval(ids[i])
--
-- One forward stacks the rows of every session into one matrix, so each
-- weight is read once for all of them (the matmuls see the sum of the rows);
-- attention runs per session against its own KV cache and positions, a
-- recurrent block per session on its own state, MoE routing per row. Each
-- session keeps its own n_past, tokens and logits. Outputs are bit for bit
-- those of running each session alone (the matmul kernels are
-- batch-invariant; spec/93-batch_spec.lua checks it per family), except
-- for f32 weights in llama-family models: OpenBLAS sums batches of 4+ rows
-- in its own order (README: summation order), so those agree to rounding
-- (2e-3 of the largest logit: a key rounded to the cache's f16 the other
-- way moves later logits by ~1e-4), not bit for bit. A session
-- given more ids than its `batch` size takes them in chunks over several
-- forwards, as sess:eval does. A model with hooks (model:hook) is refused:
-- a hook sees one session's rows. Architectures whose definition does not
-- declare `batched` run their sessions one after the other inside b:eval:
-- the same results without the speed-up (b.fused is false): today lfm2 and
-- RWKV 4-6. Mamba-1/2 and RWKV-7 batch: projections over all rows, each
-- session's recurrence (conv and scan; token shift and WKV heads) over its
-- own rows and state. MoE models: each session's tokens are counted in
-- its own expert usage (sess:expert_counts), as alone.
--
-- Continuous batching:
--
--   local outs, infos = slm.batch_generate(model, prompts, opts [, on_piece])
--
-- runs sess:generate(prompt, opts) for every prompt with at most opts.slots
-- (default min(#prompts, 8)) sequences in flight: prompts are evaluated in
-- chunks of `batch` tokens in the same forwards as the other sequences'
-- decode steps, and a finished sequence's slot takes the next prompt.
-- prompts[i] is a string, a list of ids, or {prompt = ..., <generate
-- options>} whose options override opts for that prompt. opts: generate's
-- options (max_tokens, sampler, stop, ...) plus slots, ctx, batch and kv_type (the
-- slots' sessions'). A sampler given as a list of stages is built anew for
-- every prompt (a seeded dist stage then draws each prompt's tokens as a
-- lone sess:generate with that sampler would); one sampler object shared by
-- several prompts is refused (its state would interleave them).
-- on_piece(i, piece, id) streams; returning false ends prompt i
-- ("callback"). outs[i] is the text sess:generate returns, infos[i] its
-- info. Greedy and seeded outputs are those of sess:generate alone on a
-- fresh session of the same ctx.
--
-- The incremental driver, for a host's event loop (the HTTP server):
--
--   local b = slm.batcher(model, {slots = 4, ctx = 2048, batch = 64})
--   local req = b:add(prompt, opts, on_piece, on_done)   -- queued
--   --   on_piece(piece, id, req) -> false ends the request ("callback")
--   --   on_done(req) once it ends: req.status "done" | "cancelled" |
--   --   "failed"; req.text, req.info (generate's), req.error (failed)
--   while b:step() > 0 do end    -- each step: admit queued requests into
--                                -- free slots, one forward for every
--                                -- running one; returns requests left
--   req:cancel()                 -- queued or running; frees its slot
--   b:pending()                  -- requests queued or running
--
-- Each running request is its sess:generate run as a coroutine: its
-- session's eval yields the ids to the batcher, which evaluates every
-- yielded eval in one forward and resumes them. So sampling, stops, regex,
-- UTF-8 handling and info are generate's own code. An error inside one
-- request (a regex no token can continue) fails that request only; errors
-- in the batcher's forward (misuse) are raised from step.
local core = require "slm.core"
local tensor = require "slm.tensor"
local model_mod = require "slm.model"
local options = require "slm.options"
local generate_mod = require "slm.generate"
local head = require("slm.hooks").head

local Session = model_mod.Session
local eval_alone = Session.eval

local M = {}

-- true when the model's definition runs several sessions' rows in one
-- forward: `batched` is true, or a function of the model's net (rwkv.lua:
-- RWKV-7 only)
local function fused(model)
  local b = model.def.batched
  if type(b) == "function" then return b(model.net) == true end
  return b == true
end

-- Buffers of a batched forward for one model: a stand-in session the
-- model's forward runs on (x, h, y of R rows, the workspace, a SeqBatch as
-- its state), grown when a batch needs more rows. ---------------------------

local Runner = {}
Runner.__index = Runner

local function new_runner(model)
  return setmetatable({ model = model, rows = 0, outs = 0, sb = core.seqbatch() }, Runner)
end

local function pow2(n)
  local p = 1
  while p < n do p = p * 2 end
  return p
end

-- room for R rows and k logit rows
function Runner:reserve(R, k)
  local hp, def, net = self.model.hp, self.model.def, self.model.net
  if R > self.rows then
    local cap = pow2(R)
    self.x, self.h, self.y = tensor.zeros { cap, hp.dim }, tensor.zeros { cap, hp.dim }, tensor.zeros { cap, hp.dim }
    -- the workspace a session of `cap` rows per call gets (its one-position
    -- state is dropped)
    local st, work = def.state(net, { n_ctx = cap, n_batch = cap, swa_ring = true })
    -- recurrent models keep their scratch in the state object: that one
    -- serves as the batch's
    self.work = work or st
    if net.n_expert then self.router = tensor.zeros { cap, net.n_expert } end
    self.rows = cap
  end
  if k > self.outs then
    local cap = pow2(k)
    self.all = tensor.zeros { cap, hp.n_vocab }
    self.g = tensor.zeros { cap, hp.dim }
    self.last = tensor.zeros { hp.n_vocab }
    self.outs = cap
  end
end

-- One forward over seqs = {{sess =, ids =, first =, n =}, ...}: sess takes
-- ids[first .. first+n-1] (n <= its batch). Leaves each session's logits
-- (and all_logits rows 1..n when it has that buffer) as its own forward
-- would, and advances it.
function Runner:forward(seqs)
  local model = self.model
  local m, def = model.net, model.def
  local states, pos, counts, flat = {}, {}, {}, {}
  local R, k = 0, 0
  for i, q in ipairs(seqs) do
    states[i], pos[i], counts[i] = q.sess.state, q.sess.n_past, q.n
    for j = 0, q.n - 1 do flat[R + j + 1] = q.ids[q.first + j] end
    R = R + q.n
    -- logits for each sequence's last row, or for every row of a session
    -- that keeps all logits
    q.out0 = k + 1
    k = k + (q.sess.all_logits and q.n or 1)
  end
  self:reserve(R, k)
  self.sb:set(states, pos, counts)
  local all, g = self.all, self.g
  -- the stand-in session: rows of every sequence; all_logits set so that
  -- the forward normalizes every row and calls s.head with all of them
  local s = {
    model = model, x = self.x, h = self.h, y = self.y, work = self.work, state = self.sb,
    n_past = 0, n_ctx = seqs[1].sess.n_ctx, router = self.router, all_logits = all, logits = self.last,
  }
  if seqs[1].sess.moe_counts then
    -- each session's rows counted in its own expert usage
    local list = {}
    for i, q in ipairs(seqs) do list[i] = { q.sess.moe_counts, q.n } end
    s.moe_counts = list
  end
  s.head = function(mm, _, W, h, rows, n)
    assert(rows == 1 and n == R, "batch: the forward's head did not receive every row")
    -- the rows whose logits are wanted, gathered in order into g
    local r = 0
    for _, q in ipairs(seqs) do
      local from = q.sess.all_logits and 1 or q.n
      for j = from, q.n do
        g:select(1, q.out0 + j - from):copy_(h:select(1, r + j))
      end
      r = r + q.n
    end
    head(mm, { all_logits = all:narrow(1, 1, k), logits = self.last, n_past = 0 }, W, g:narrow(1, 1, k), 1, k)
  end
  def.forward(m, s, flat, 1, R)
  for _, q in ipairs(seqs) do
    local sess = q.sess
    if sess.all_logits then
      sess.all_logits:narrow(1, 1, q.n):copy_(all:narrow(1, q.out0, q.n))
      sess.logits:copy_(all:select(1, q.out0 + q.n - 1))
    else
      sess.logits:copy_(all:select(1, q.out0))
    end
    local toks = sess.tokens
    for j = q.first, q.first + q.n - 1 do toks[#toks + 1] = q.ids[j] end
    sess.n_past = sess.n_past + q.n
  end
end

-- Checks ----------------------------------------------------------------------

local function check_ids(what, sess, ids, i)
  if math.type(ids) == "integer" then ids = { ids } end
  if type(ids) ~= "table" then error(string.format("%s: ids[%d] must be a token id or a list of them", what, i), 3) end
  local n = #ids
  if n == 0 then error(string.format("%s: ids[%d] is empty", what, i), 3) end
  if sess.n_past + n > sess.n_ctx then
    error(string.format("%s: session %d: context full: %d tokens + %d new exceed ctx %d", what, i, sess.n_past, n,
                        sess.n_ctx), 3)
  end
  local nv = sess.model.hp.n_vocab
  for j = 1, n do
    local id = ids[j]
    if math.type(id) ~= "integer" or id < 0 or id >= nv then
      error(string.format("%s: ids[%d][%d] = %s is not a token id in 0..%d", what, i, j, tostring(id), nv - 1), 3)
    end
  end
  return ids
end

-- what keeps a model's sessions from one forward, or nil
local function unbatchable(model)
  if model.net.hooks then return "the model has hooks (model:hook), which see one session's rows" end
end

-- LongRoPE picks its factors from each session's ctx: one forward needs
-- sessions that pick the same
local function check_long(what, model, sessions)
  local long = model.net.long_ctx
  if not long then return end
  local function pick(s) return (s.n_ctx + 255) // 256 * 256 > long end
  for i = 2, #sessions do
    if pick(sessions[i]) ~= pick(sessions[1]) then
      error(string.format("%s: sessions 1 and %d use different LongRoPE factors (ctx %d and %d around %d)", what, i,
                          sessions[1].n_ctx, sessions[i].n_ctx, long), 3)
    end
  end
end

--- Evaluates sessions[i] on ids[i] for every i, in as few forwards as the
-- sessions' batch sizes allow (one when each gets at most its batch size).
local function run(what, runner, sessions, ids)
  local model = runner.model
  local why = unbatchable(model)
  if why then error(what .. ": " .. why, 3) end
  if not fused(model) then   -- same results, one session at a time
    for i, sess in ipairs(sessions) do eval_alone(sess, ids[i]) end
    return
  end
  local left, seqs = {}, {}
  for i = 1, #sessions do left[i] = 1 end
  while true do
    local nseq = 0
    for i, sess in ipairs(sessions) do
      local l = ids[i]
      if left[i] <= #l then
        local n = math.min(sess.n_batch, #l - left[i] + 1)
        nseq = nseq + 1
        seqs[nseq] = { sess = sess, ids = l, first = left[i], n = n }
        left[i] = left[i] + n
      end
    end
    if nseq == 0 then break end
    for j = #seqs, nseq + 1, -1 do seqs[j] = nil end
    runner:forward(seqs)
  end
end

-- slm.batch ---------------------------------------------------------------------

local Batch = {}
Batch.__index = Batch

--- slm.batch(sessions) -> batch: sessions (a list of at least one, distinct,
-- of one model) evaluated together by batch:eval.
function M.batch(sessions)
  if type(sessions) ~= "table" or #sessions == 0 then
    error("bad argument #1 to 'batch' (a list of sessions expected)", 2)
  end
  local seen, model = {}, nil
  for i, s in ipairs(sessions) do
    if getmetatable(s) ~= Session then error(string.format("batch: sessions[%d] is not a session", i), 2) end
    if seen[s] then error(string.format("batch: sessions[%d] is sessions[%d] again", i, seen[s]), 2) end
    seen[s] = i
    model = model or s.model
    if s.model ~= model then error(string.format("batch: sessions[%d] is of another model than sessions[1]", i), 2) end
  end
  check_long("batch", model, sessions)
  return setmetatable({ sessions = { table.unpack(sessions) }, model = model, runner = new_runner(model),
                        fused = fused(model) }, Batch)
end

--- batch:eval(ids) -> list of logits: ids[i] (a token id or a list of
-- them) is appended to sessions[i]; the result's i-th entry is
-- sessions[i].logits (its own buffer, changed by its next eval). Every
-- entry is checked before anything is evaluated.
function Batch:eval(ids)
  if type(ids) ~= "table" then error("bad argument #1 to 'eval' (a list of ids per session expected)", 2) end
  local ss = self.sessions
  if #ids ~= #ss then error(string.format("batch: %d lists of ids for %d sessions", #ids, #ss), 2) end
  local lists = {}
  for i, sess in ipairs(ss) do lists[i] = check_ids("batch", sess, ids[i], i) end
  run("batch", self.runner, ss, lists)
  local out = {}
  for i, sess in ipairs(ss) do out[i] = sess.logits end
  return out
end

function Batch:__tostring()
  return string.format("slm.Batch(%s, %d sessions%s)", self.model.hp.arch, #self.sessions,
                       self.fused and "" or ", one at a time")
end

-- Continuous batching -------------------------------------------------------------

local Batcher = {}
Batcher.__index = Batcher
local Request = {}
Request.__index = Request

local BATCHER_OPTS = options.known { "slots", "ctx", "batch", "kv_type" }
local CANCEL = setmetatable({}, { __tostring = function() return "cancelled" end })

--- slm.batcher(model, {slots = 4, ctx =, batch =, kv_type =}) -> batcher (see
-- the file's header). ctx, batch and kv_type are the slots' sessions'
-- (model:session).
function M.batcher(model, opts)
  if getmetatable(model) ~= model_mod.Model then error("bad argument #1 to 'batcher' (a model expected)", 2) end
  opts = options.check("batcher", opts, BATCHER_OPTS)
  local slots = opts.slots or 4
  if not options.is_int(slots, 1) then options.fail("batcher", "slots", "a positive integer", slots) end
  local b = setmetatable({ model = model, queue = {}, running = {}, free = {}, runners = {} }, Batcher)
  for i = 1, slots do
    -- the sessions' own checks (ctx, batch, kv_type), said as the batcher's
    local ok, sess = pcall(model.session, model, { ctx = opts.ctx, batch = opts.batch, kv_type = opts.kv_type })
    if not ok then error("batcher: " .. tostring(sess):gsub("^[^\n]-:%d+: ", ""):gsub("^session: ", ""), 2) end
    b.free[i] = sess
  end
  return b
end

--- b:add(prompt, opts, on_piece, on_done) -> request (queued). prompt and
-- opts as sess:generate's (opts are checked now).
function Batcher:add(prompt, opts, on_piece, on_done)
  opts = generate_mod.check("batcher", opts)
  if opts.draft ~= nil or opts.n_draft ~= nil then
    error("batcher: option draft: speculative decoding does not run in a batch (use sess:generate)", 2)
  end
  local tp = type(prompt)
  if tp ~= "string" and tp ~= "table" then error("bad argument #1 to 'add' (string or table of ids expected)", 2) end
  if on_piece ~= nil and type(on_piece) ~= "function" then error("bad argument #3 to 'add' (function expected)", 2) end
  if on_done ~= nil and type(on_done) ~= "function" then error("bad argument #4 to 'add' (function expected)", 2) end
  local req = setmetatable({ batcher = self, prompt = prompt, opts = opts, on_piece = on_piece, on_done = on_done,
                             status = "queued", parts = {} }, Request)
  self.queue[#self.queue + 1] = req
  return req
end

--- b:pending() -> requests queued or running
function Batcher:pending() return #self.queue + #self.running end

local function finish(b, req, status)
  req.status = status
  req.text = req.text or table.concat(req.parts)
  if req.sess then
    req.sess.eval = nil                 -- Session.eval again
    b.free[#b.free + 1] = req.sess
    req.sess = nil
  end
  for i, r in ipairs(b.running) do
    if r == req then table.remove(b.running, i) break end
  end
  if req.on_done then req.on_done(req) end
end

-- resumes req's coroutine with `arg` until it yields its next eval or ends
local function resume(b, req, arg)
  local ok, res, info = coroutine.resume(req.co, arg)
  if not ok then
    if res == CANCEL then return finish(b, req, "cancelled") end
    req.error = res
    return finish(b, req, "failed")
  end
  if coroutine.status(req.co) == "dead" then
    req.text, req.info = res, info
    return finish(b, req, "done")
  end
  req.want, req.next = res, 1          -- the ids of its next eval
end

-- req runs body(sess) (default: sess:generate(req.prompt, req.opts, ...))
-- as a coroutine on sess, which b.running then holds
local function start(b, req, sess, body)
  req.sess, req.status = sess, "running"
  b.running[#b.running + 1] = req
  -- the session's eval hands its ids to the batcher and waits for them to
  -- be evaluated (an instance field shadows Session.eval)
  sess.eval = function(self, ids)
    if coroutine.running() ~= req.co then
      error("this session runs a request of a batcher: evaluate it through the batcher", 2)
    end
    if math.type(ids) == "integer" then ids = { ids } end
    check_ids("eval", self, ids, 1)
    if coroutine.yield(ids) == CANCEL then error(CANCEL, 0) end
    return self.logits
  end
  req.co = coroutine.create(body or function()
    return sess:generate(req.prompt, req.opts, function(piece, id)
      req.parts[#req.parts + 1] = piece
      if req.on_piece then return req.on_piece(piece, id, req) end
    end)
  end)
  resume(b, req, nil)
end

-- One forward per model for every running request's next chunk (a
-- prompt's next `batch` tokens, or one decode token); cancelled requests
-- end; requests whose eval is complete resume.
local function advance(b, what)
  local groups, order = {}, {}
  for _, req in ipairs(b.running) do
    if req.want and not req.cancelled then
      local model = req.sess.model
      local g = groups[model]
      if not g then
        g = { seqs = {}, reqs = {} }
        groups[model], order[#order + 1] = g, model
      end
      local n = math.min(req.sess.n_batch, #req.want - req.next + 1)
      g.seqs[#g.seqs + 1] = { sess = req.sess, ids = req.want, first = req.next, n = n }
      g.reqs[#g.reqs + 1] = req
    end
  end
  -- cancelled requests end now (a copy: finish edits the list)
  for _, req in ipairs { table.unpack(b.running) } do
    if req.cancelled then resume(b, req, CANCEL) end
  end
  for _, model in ipairs(order) do
    local g = groups[model]
    local why = unbatchable(model)
    if why then error(what .. ": " .. why, 3) end
    if fused(model) then
      b.runners[model] = b.runners[model] or new_runner(model)
      b.runners[model]:forward(g.seqs)
    else
      for _, q in ipairs(g.seqs) do eval_alone(q.sess, table.move(q.ids, q.first, q.first + q.n - 1, 1, {})) end
    end
    for i, req in ipairs(g.reqs) do
      req.next = req.next + g.seqs[i].n
      if req.next > #req.want then
        req.want = nil
        resume(b, req, true)
      end
    end
  end
end

--- b:step() -> requests left (queued + running): admits queued requests
-- into free slots, then runs one forward with every running request's
-- next chunk (a prompt's next `batch` tokens, or one decode token).
function Batcher:step()
  while #self.free > 0 and #self.queue > 0 do
    local req = table.remove(self.queue, 1)
    local sess = table.remove(self.free)
    sess:reset()
    start(self, req, sess)
  end
  advance(self, "batcher")
  return self:pending()
end

--- together(jobs) -> results: runs jobs[i].fn(jobs[i].sess) for every i
-- at once, each an ordinary sequence of evals on its session (generate,
-- chat), the evals of sessions of one model batched into one forward per
-- step. results[i] = {fn's return values}; the first error is raised once
-- all jobs have ended. Sessions must be distinct.
function M.together(jobs)
  local b = { running = {}, free = {}, runners = {} }
  local reqs, seen = {}, {}
  for i, job in ipairs(jobs) do
    if getmetatable(job.sess) ~= Session then error(string.format("together: jobs[%d].sess is not a session", i), 2) end
    if seen[job.sess] then error(string.format("together: jobs %d and %d share a session", seen[job.sess], i), 2) end
    seen[job.sess] = i
  end
  for i, job in ipairs(jobs) do
    local req = { parts = {} }
    local fn, sess = job.fn, job.sess
    start(b, req, sess, function() return table.pack(fn(sess)) end)
    reqs[i] = req
  end
  while #b.running > 0 do advance(b, "together") end
  local out = {}
  for i, req in ipairs(reqs) do
    if req.status == "failed" then error(req.error, 0) end
    out[i] = req.text
  end
  return out
end

--- b:run(): steps until no request is left.
function Batcher:run()
  while self:step() > 0 do end
end

--- req:cancel(): a queued request leaves the queue, a running one ends at
-- the next step (its session keeps what was evaluated); on_done sees
-- status "cancelled". No effect on a request that has ended.
function Request:cancel()
  local b = self.batcher
  if self.status == "queued" then
    for i, r in ipairs(b.queue) do
      if r == self then table.remove(b.queue, i) break end
    end
    self.status = "cancelled"
    self.text = ""
    if self.on_done then self.on_done(self) end
  elseif self.status == "running" then
    self.cancelled = true
  end
end

function Request:__tostring()
  return string.format("slm.Request(%s, %d pieces)", self.status, #self.parts)
end

function Batcher:__tostring()
  return string.format("slm.Batcher(%s, %d running, %d queued, %d free)", self.model.hp.arch, #self.running,
                       #self.queue, #self.free)
end

--- slm.batch_generate(model, prompts, opts [, on_piece]) -> outs, infos
-- (see the file's header)
local BG_EXTRA = { "slots", "ctx", "batch", "kv_type" }
-- generate's options that a batched request takes: not speculative
-- decoding (draft, n_draft: a draft session per request would run outside
-- the batch's forward)
local GEN_OPTS = {}
for _, k in ipairs(generate_mod.OPTIONS) do
  if k ~= "draft" and k ~= "n_draft" then GEN_OPTS[#GEN_OPTS + 1] = k end
end
local BG_OPTS = {}
for _, k in ipairs(GEN_OPTS) do BG_OPTS[#BG_OPTS + 1] = k end
for _, k in ipairs(BG_EXTRA) do BG_OPTS[#BG_OPTS + 1] = k end
BG_OPTS = options.known(BG_OPTS)
local PROMPT_OPTS = options.known { "prompt", table.unpack(GEN_OPTS) }

function M.batch_generate(model, prompts, opts, on_piece)
  if getmetatable(model) ~= model_mod.Model then error("bad argument #1 to 'batch_generate' (a model expected)", 2) end
  if type(prompts) ~= "table" then error("bad argument #2 to 'batch_generate' (a list of prompts expected)", 2) end
  opts = options.check("batch_generate", opts, BG_OPTS)
  if on_piece ~= nil and type(on_piece) ~= "function" then
    error("bad argument #4 to 'batch_generate' (function expected)", 2)
  end
  local base = {}
  for _, k in ipairs(GEN_OPTS) do base[k] = opts[k] end
  local msg = generate_mod.problem("batch_generate", base)
  if msg then error(msg, 2) end
  -- each prompt's prompt and options, all checked before anything runs
  local items, owners = {}, {}
  for i, p in ipairs(prompts) do
    local o = base
    if type(p) == "table" and p.prompt ~= nil then
      local each = options.check("batch_generate: prompts[" .. i .. "]", p, PROMPT_OPTS, 3)
      o = {}
      for k, v in pairs(base) do o[k] = v end
      for k, v in pairs(each) do if k ~= "prompt" then o[k] = v end end
      local m2 = generate_mod.problem("batch_generate: prompts[" .. i .. "]", o)
      if m2 then error(m2, 2) end
      p = each.prompt
    end
    if type(p) ~= "string" and type(p) ~= "table" then
      error(string.format("batch_generate: prompts[%d] must be a string, a list of ids or {prompt = ...}", i), 2)
    end
    local smp = o.sampler
    if smp ~= nil and (type(smp) == "userdata" or getmetatable(smp) ~= nil) then
      if owners[smp] then
        error(string.format("batch_generate: prompts %d and %d share one sampler object (its state would "
                            .. "interleave them): give the sampler as a list of stages", owners[smp], i), 2)
      end
      owners[smp] = i
    end
    items[i] = { prompt = p, opts = o }
  end
  local outs, infos = {}, {}
  if #items == 0 then return outs, infos end
  local bok, b = pcall(M.batcher, model, { slots = opts.slots or math.min(#items, 8), ctx = opts.ctx,
                                           batch = opts.batch, kv_type = opts.kv_type })
  if not bok then error("batch_generate: " .. tostring(b):gsub("^[^\n]-:%d+: ", ""):gsub("^batcher: ", ""), 2) end
  local failed
  for i, it in ipairs(items) do
    b:add(it.prompt, it.opts, on_piece and function(piece, id) return on_piece(i, piece, id) end, function(req)
      outs[i], infos[i] = req.text, req.info
      if req.status == "failed" then failed = failed or string.format("batch_generate: prompts[%d]: %s", i, tostring(req.error)) end
    end)
  end
  b:run()
  if failed then error(failed, 2) end
  return outs, infos
end

return M
