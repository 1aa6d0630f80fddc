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
-- The interface is what a many-sequence batcher can back: submit, cancel,
-- step, busy.
local M = {}

local Scheduler = {}
Scheduler.__index = Scheduler
local Job = {}
Job.__index = Job

--- new(model, {parallel = 4, ctx = N, batch = 64}) -> scheduler
function M.new(model, opts)
  local self = setmetatable({ model = model, slots = {}, queue = {}, qhead = 1 }, Scheduler)
  for i = 1, opts.parallel or 4 do
    self.slots[i] = { sess = model:session { ctx = opts.ctx, batch = opts.batch } }
  end
  self.n_ctx = self.slots[1].sess.n_ctx
  return self
end

--- sched:submit(spec) -> job (see the top of the file)
function Scheduler:submit(spec)
  assert(type(spec.ids) == "table" and #spec.ids > 0, "scheduler: a job needs prompt ids")
  assert(#spec.ids < self.n_ctx, "scheduler: prompt does not fit the context")
  local job = setmetatable({ ids = spec.ids, gen = spec.gen, top_logprobs = spec.top_logprobs,
                             on_event = spec.on_event, state = "queued" }, Job)
  self.queue[#self.queue + 1] = job
  return job
end

--- job:cancel(): the job ends at the scheduler's next step ({done, stopped = "cancelled"}).
function Job:cancel()
  self.cancelled = true
end

--- sched:busy() -> true while a job is queued or running
function Scheduler:busy()
  if self.qhead <= #self.queue then return true end
  for _, slot in ipairs(self.slots) do if slot.job then return true end end
  return false
end

--- sched:load() -> running jobs, queued jobs
function Scheduler:load()
  local running = 0
  for _, slot in ipairs(self.slots) do if slot.job then running = running + 1 end end
  return running, #self.queue - self.qhead + 1
end

local function finish(slot, info, err)
  local job = slot.job
  if job.closer then
    local c = job.closer
    job.closer = nil
    getmetatable(c).__close(c)
  end
  slot.job = nil
  job.state = "done"
  job.on_event { done = true, info = info, error = err }
end

-- Log-probabilities of the logits (a tensor of n_vocab): log-softmax,
-- computed in double precision from the f32 values; the k most likely ids
-- (ties to the lowest id, as greedy). Returns lp (0-based id -> logprob) and
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

-- One unit of work for the job on slot.
local function unit(self, slot)
  local job, sess = slot.job, slot.sess
  if job.cancelled then
    local info = job.info or { tokens = 0, prompt_tokens = #job.ids }
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
    info.prompt_tokens = #job.ids
  end
  local lp, top
  if job.top_logprobs then lp, top = log_softmax(sess.logits, job.top_logprobs) end
  local before = job.info.tokens
  local piece, id = job.iter()
  if piece == nil then return finish(slot, job.info) end
  local ev = { text = piece }
  if job.info.tokens > before then
    ev.token = id
    if lp then ev.logprob, ev.top = lp[id + 1], top end
  end
  job.on_event(ev)
end

--- sched:step() -> units of work done (0 when idle). An error in a job
-- (a sampler's, say) ends that job with {done, error = message}; the
-- others go on.
function Scheduler:step()
  -- free slots take queued jobs, first come first served
  for _, slot in ipairs(self.slots) do
    if not slot.job and self.qhead <= #self.queue then
      local job = self.queue[self.qhead]
      self.queue[self.qhead] = nil
      self.qhead = self.qhead + 1
      slot.sess:reset()
      job.state, job.next_id = "running", 1
      slot.job = job
    end
  end
  if self.qhead > #self.queue then self.queue, self.qhead = {}, 1 end
  local done = 0
  for _, slot in ipairs(self.slots) do
    if slot.job then
      local ok, err = pcall(unit, self, slot)
      if not ok then
        if slot.job then
          local info = slot.job.info or { tokens = 0, prompt_tokens = #slot.job.ids }
          info.stopped = "error"
          -- the event handler itself failing must not take the loop down
          pcall(finish, slot, info, tostring(err))
          slot.job = nil
        end
      end
      done = done + 1
    end
  end
  return done
end

--- sched:cancel_all(): cancels every queued and running job (server stop).
function Scheduler:cancel_all()
  for i = self.qhead, #self.queue do self.queue[i]:cancel() end
  for _, slot in ipairs(self.slots) do if slot.job then slot.job:cancel() end end
end

M.Scheduler = Scheduler
return M
