--- slm.server.scheduler: requests of several clients on one model, a step
-- at a time, so that the server's event loop can interleave them.
--
--   local sched = scheduler.new(model, {parallel = 4, ctx = 2048})
--   local job = sched:submit{ids = {...}, gen = {max_tokens = 16, sampler = ...},
--                            top_logprobs = 2,             -- nil: no logprobs
--                            on_event = function(ev) ... end}
--   while sched:busy() do sched:step() end                -- the server yields between steps
--   job:cancel()                                          -- released at the next step
--
-- Each of `parallel` slots owns a session (a KV cache of `ctx` tokens). A
-- submitted job waits in a FIFO queue until a slot is free; the slot's
-- session is reset and the job's prompt ids (BOS included: the caller
-- tokenizes) are evaluated in chunks of the session's batch, then tokens are
-- generated one per step by sess:generate's own iterator, so the text, stop
-- strings, end-of-generation and UTF-8 handling are exactly generate's. One
-- step does one unit of work (a prompt chunk or a token) for every busy
-- slot in turn: round-robin, every client progresses.
--
-- Events, in order, through on_event(ev):
--   {text = piece, token = id|nil, logprob = lp, top = {{id =, logprob =}...}}
--       text may be "" (held back: a stop-string prefix, an unfinished
--       character) and may come without a token (the last flush); token is
--       set once per generated token (not for the end-of-generation token),
--       logprob/top only when top_logprobs was given
--   {done = true, info = generate's info (stopped, tokens, seed, ...),
--    error = message|nil}   last event; stopped = "cancelled" after cancel()
--
-- Two backends behind that interface: slm.batcher (continuous batching:
-- one forward for the next chunk of every running job, so the weights are
-- read once per step for all clients), the default; and "round-robin", one
-- job's unit after the other (models slm.batch refuses: hooks, encoders).
-- Log-probabilities come from a sampler wrapper that sees the logits
-- generate samples from, so both backends give them.
local sampler_mod = require "slm.sampler"

local M = {}

local Scheduler = {}
Scheduler.__index = Scheduler
local Job = {}
Job.__index = Job

--- new(model, {parallel = 4, ctx = N, batch = 64, kv_type = "f16", backend =
-- "batcher" | "round-robin"}) -> scheduler (sched.backend tells which)
function M.new(model, opts)
  local self = setmetatable({ model = model, slots = {}, queue = {} }, Scheduler)
  local ok, batch = pcall(require, "slm.batch")
  local backend = opts.backend or ((ok and not model.net.hooks) and "batcher" or "round-robin")
  self.backend = backend
  if backend == "batcher" then
    self.batcher = batch.batcher(model, { slots = opts.parallel or 4, ctx = opts.ctx, batch = opts.batch,
                                          kv_type = opts.kv_type })
    self.n_ctx = self.batcher.free[1].n_ctx
    self.n_slots = opts.parallel or 4
    return self
  end
  for i = 1, opts.parallel or 4 do
    self.slots[i] = { sess = model:session { ctx = opts.ctx, batch = opts.batch, kv_type = opts.kv_type } }
  end
  self.n_ctx = self.slots[1].sess.n_ctx
  self.n_slots = #self.slots
  return self
end

-- Log-probabilities of the logits (a tensor of n_vocab): log-softmax,
-- computed in double precision from the f32 values; the k most likely ids
-- (ties to the lowest id, as greedy). Returns lp (1-based: lp[id + 1]) and
-- top ({id, logprob} sorted, descending).
local function log_softmax(logits, k)
  local bytes = logits:tobytes()
  local n = #bytes // 4
  local v = {}
  -- string.unpack returns its values on the C stack: a few thousand a call
  for off = 0, n - 1, 4000 do
    local m = math.min(4000, n - off)
    local part = { string.unpack(string.rep("<f", m), bytes, off * 4 + 1) }
    table.move(part, 1, m, off + 1, v)
  end
  local mx = -math.huge
  for i = 1, n do if v[i] > mx then mx = v[i] end end
  local sum = 0
  for i = 1, n do sum = sum + math.exp(v[i] - mx) end
  local lse = mx + math.log(sum)
  local top = {}
  for i = 1, n do
    local lp = v[i] - lse
    v[i] = lp
    if k > 0 and (#top < k or lp > top[#top].logprob) then
      -- insertion into the sorted top-k (k is small)
      local j = math.min(#top + 1, k)
      while j > 1 and top[j - 1].logprob < lp do
        top[j] = top[j - 1]
        j = j - 1
      end
      top[j] = { id = i - 1, logprob = lp }
    end
  end
  return v, top
end
M.log_softmax = log_softmax

-- A sampler for generate that samples with `inner` and remembers, for each
-- draw, the id and (when k is set) the log-probabilities of the logits it
-- drew from: generate evaluates the token right after, so its logits are
-- gone by the time the piece comes out.
local Recorder = {}
Recorder.__index = Recorder

function Recorder:sample(logits)
  local lp, top
  if self.k then lp, top = log_softmax(logits, self.k) end
  local id = self.inner:sample(logits)
  self.last = { id = id, logprob = lp and lp[id + 1], top = top }
  return id
end

function Recorder:accept(id) return self.inner:accept(id) end

-- The event of a piece: generate's callback gives (piece, id) per drawn
-- token and, at the end, a last flush carrying the previous id; a drawn
-- token is the recorder's unconsumed last draw with that id (an
-- end-of-generation draw comes out with no piece of its own).
local function piece_event(rec, piece, id)
  local ev = { text = piece }
  local last = rec.last
  if last and last.id == id then
    rec.last = nil
    ev.token, ev.logprob, ev.top = id, last.logprob, last.top
  end
  return ev
end

--- sched:submit(spec) -> job (see the top of the file)
function Scheduler:submit(spec)
  assert(type(spec.ids) == "table" and #spec.ids > 0, "scheduler: a job needs prompt ids")
  assert(#spec.ids < self.n_ctx, "scheduler: prompt does not fit the context")
  local gen = {}
  for k, v in pairs(spec.gen) do gen[k] = v end
  local inner = sampler_mod.chain(gen.sampler or { { "greedy" } })
  local rec = setmetatable({ inner = inner, k = spec.top_logprobs }, Recorder)
  gen.sampler = rec
  local job = setmetatable({ ids = spec.ids, gen = gen, rec = rec, on_event = spec.on_event, state = "queued" }, Job)
  local function done(info, err)
    if job.state == "done" then return end
    job.state = "done"
    if inner.free then inner:free() end
    info = info or { tokens = 0, prompt_tokens = #job.ids }
    info.prompt_tokens = #job.ids
    job.on_event { done = true, info = info, error = err }
  end
  job.done = done
  if self.batcher then
    job.req = self.batcher:add(spec.ids, gen, function(piece, id)
      job.on_event(piece_event(rec, piece, id))
    end, function(req)
      local info = req.info
      if req.status == "cancelled" then
        info = info or { tokens = 0 }
        info.stopped = "cancelled"
      elseif req.status == "failed" then
        info = info or { tokens = 0 }
        info.stopped = "error"
      end
      done(info, req.error and tostring(req.error))
    end)
  else
    self.queue[#self.queue + 1] = job
  end
  return job
end

--- job:cancel(): the job ends at the scheduler's next step ({done, stopped = "cancelled"}).
function Job:cancel()
  self.cancelled = true
  if self.req then self.req:cancel() end
end

--- sched:busy() -> true while a job is queued or running
function Scheduler:busy()
  if self.batcher then return self.batcher:pending() > 0 end
  if #self.queue > 0 then return true end
  for _, slot in ipairs(self.slots) do if slot.job then return true end end
  return false
end

--- sched:load() -> running jobs, queued jobs
function Scheduler:load()
  if self.batcher then return #self.batcher.running, #self.batcher.queue end
  local running = 0
  for _, slot in ipairs(self.slots) do if slot.job then running = running + 1 end end
  return running, #self.queue
end

-- Round-robin backend: one unit of work for the job on slot.
local function finish(slot, info, err)
  local job = slot.job
  if job.closer then
    local c = job.closer
    job.closer = nil
    getmetatable(c).__close(c)
  end
  slot.job = nil
  job.done(info, err)
end

local function unit(slot)
  local job, sess = slot.job, slot.sess
  if job.cancelled then
    local info = job.info or { tokens = 0 }
    info.stopped = "cancelled"
    return finish(slot, info)
  end
  if job.next_id <= #job.ids then
    local n = math.min(sess.n_batch, #job.ids - job.next_id + 1)
    sess:eval(table.move(job.ids, job.next_id, job.next_id + n - 1, 1, {}))
    job.next_id = job.next_id + n
    return
  end
  if not job.iter then
    local it, info, _, closer = sess:generate(nil, job.gen)
    job.iter, job.info, job.closer = it, info, closer
  end
  local piece, id = job.iter()
  if piece == nil then return finish(slot, job.info) end
  job.on_event(piece_event(job.rec, piece, id))
end

--- sched:step() -> units of work done (0 when idle). An error in a job
-- (a sampler's, say) ends that job with {done, error = message}; the
-- others go on.
function Scheduler:step()
  if self.batcher then
    local left = self.batcher:pending()
    self.batcher:step()
    return left
  end
  -- free slots take queued jobs, first come first served
  for _, slot in ipairs(self.slots) do
    while not slot.job and #self.queue > 0 do
      local job = table.remove(self.queue, 1)   -- a short list: requests waiting for a slot
      if job.cancelled then
        job.done({ tokens = 0, stopped = "cancelled" })
      else
        slot.sess:reset()
        job.state, job.next_id = "running", 1
        slot.job = job
      end
    end
  end
  local done = 0
  for _, slot in ipairs(self.slots) do
    if slot.job then
      local ok, err = pcall(unit, slot)
      if not ok and slot.job then
        local info = slot.job.info or { tokens = 0 }
        info.stopped = "error"
        -- the event handler itself failing must not take the loop down
        pcall(finish, slot, info, tostring(err))
        slot.job = nil
      end
      done = done + 1
    end
  end
  return done
end

--- sched:cancel_all(): cancels every queued and running job (server stop).
function Scheduler:cancel_all()
  if self.batcher then
    for _, r in ipairs { table.unpack(self.batcher.queue) } do r:cancel() end
    for _, r in ipairs(self.batcher.running) do r:cancel() end
    return
  end
  for _, job in ipairs(self.queue) do job:cancel() end
  for _, slot in ipairs(self.slots) do if slot.job then slot.job:cancel() end end
end

M.Scheduler = Scheduler
return M
