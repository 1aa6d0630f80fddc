--- Generation in time slices, for hosts that run a frame loop (games, tools).
--
--   local gen = sess:generator("Once upon a time", {max_tokens = 64})
--   -- every frame:
--   local text, status = gen:step{budget_ms = 4}   -- "running" | "done" | "cancelled"
--   gen:cancel()          -- stop now; the session keeps what was evaluated
--   gen:text()            -- everything generated so far
--   gen.done              -- true once done or cancelled
--
-- The prompt and opts are those of sess:generate (same stops, samplers,
-- regex; the text equals what sess:generate returns). A step first
-- evaluates the prompt in chunks, then generates token by token, and starts
-- a unit of work (a prompt chunk or a token) only if its expected time fits
-- in what is left of the budget. The expected times are moving averages of
-- the measured cost per prompt token and per generated token. To make
-- progress, a step does at least `min_tokens` units (default 1) even when
-- one does not fit, so a step takes at most budget + one token (and
-- exactly one token when a token is longer than the budget); with
-- min_tokens = 0 a step never starts work it expects to overrun, at the
-- price of no progress while a token costs more than the whole budget.
-- An error while generating (say, a regex no token can continue) ends the
-- generator as "cancelled" and is raised from step.
local core = require "slm.core"
local generate_mod = require "slm.generate"
local generate = generate_mod.generate
local options = require "slm.options"

local M = {}

-- weight of a new measurement in the moving averages
local ALPHA = 0.25

local Generator = {}
Generator.__index = Generator

local function ema(old, new)
  if not old then return new end
  return old + ALPHA * (new - old)
end

--- sess:generator(prompt, opts) -> generator
function M.generator(sess, prompt, opts)
  -- checked now, not at the first generated token
  opts = generate_mod.check("generator", opts)
  local tok = sess.model.tokenizer
  local ids = {}
  if type(prompt) == "string" then
    if not tok then error("generator: this model has no tokenizer; pass token ids", 2) end
    ids = tok:encode(prompt, { add_special = sess.n_past == 0, parse_special = opts.parse_special })
  elseif type(prompt) == "table" then
    ids = prompt
  elseif prompt ~= nil then
    error("bad argument #1 to 'generator' (string, table of ids or nil expected)", 2)
  end
  if #ids == 0 and sess.n_past == 0 then error("generator: empty session and no prompt", 2) end
  if sess.n_past + #ids > sess.n_ctx then
    error(string.format("generator: prompt of %d tokens does not fit (%d of %d in use)", #ids, sess.n_past,
                        sess.n_ctx), 2)
  end
  return setmetatable({
    sess = sess, opts = opts, ids = ids, next_id = 1,
    parts = {}, status = "running", done = false,
    tokens = 0,              -- generated tokens (pieces returned by generate)
    t_prompt = nil,          -- seconds per prompt token (moving average)
    t_token = nil,           -- seconds per generated token (moving average)
  }, Generator)
end

-- Expected seconds for a unit; nil when not measured yet.
local function prompt_cost(g, n) return g.t_prompt and g.t_prompt * n end

function Generator:_finish(status)
  if self.closer then
    local c = self.closer
    self.closer, self.iter = nil, nil
    getmetatable(c).__close(c)
  end
  self.status = status
  self.done = true
end

--- gen:step{budget_ms = 4, min_tokens = 1} -> text of this step, status
local STEP_OPTS = options.known { "budget_ms", "min_tokens" }

function Generator:step(o)
  o = options.check("step", o, STEP_OPTS)
  local budget = o.budget_ms or 4
  if type(budget) ~= "number" or not (budget >= 0) then options.fail("step", "budget_ms", "a non-negative number", budget) end
  local min_units = o.min_tokens or 1
  if not options.is_int(min_units, 0) then options.fail("step", "min_tokens", "a non-negative integer", min_units) end
  if self.done then return "", self.status end
  budget = budget / 1000
  local clock = core.clock
  local t0 = clock()
  local units = 0
  local out = {}
  while not self.done do
    local left = budget - (clock() - t0)
    local forced = units < min_units
    if self.next_id <= #self.ids then
      -- prompt: as many tokens as the budget left holds (one to measure)
      local n = #self.ids - self.next_id + 1
      if self.t_prompt then
        local fit = math.floor(left / self.t_prompt)
        if fit < n then n = fit end
      else
        n = 1
      end
      if n < 1 then
        if not forced then break end
        n = 1
      elseif not forced and not self.t_prompt then
        break   -- cost unknown: only a step's first unit may find it out
      end
      local t = clock()
      self.sess:eval(table.move(self.ids, self.next_id, self.next_id + n - 1, 1, {}))
      self.t_prompt = ema(self.t_prompt, (clock() - t) / n)
      self.next_id = self.next_id + n
    else
      -- one generated token; before the first, a prompt token is the guess
      local cost = self.t_token or prompt_cost(self, 1)
      if not forced and (not cost or cost > left) then break end
      if not self.iter then
        local it, info, _, closer = generate(self.sess, nil, self.opts)
        self.iter, self.closer, self.info = it, closer, info
      end
      local t = clock()
      local ok, piece = pcall(self.iter)
      if not ok then
        self:_finish("cancelled")
        error(piece, 0)
      end
      if piece == nil then
        self:_finish("done")
      else
        self.t_token = ema(self.t_token, clock() - t)
        self.tokens = self.tokens + 1
        if piece ~= "" then
          out[#out + 1] = piece
          self.parts[#self.parts + 1] = piece
        end
      end
    end
    units = units + 1
  end
  return table.concat(out), self.status
end

--- gen:cancel(): stops the generation; later steps return "", "cancelled".
function Generator:cancel()
  if not self.done then self:_finish("cancelled") end
end

--- gen:text() -> everything generated so far
function Generator:text()
  return table.concat(self.parts)
end

--- gen:stats() -> {prompt_tokens, prompt_done, tokens, ms_per_prompt_token, ms_per_token,
-- speculative (with a draft: generate's info.speculative)}
function Generator:stats()
  return {
    prompt_tokens = #self.ids, prompt_done = self.next_id - 1, tokens = self.tokens,
    ms_per_prompt_token = self.t_prompt and self.t_prompt * 1000,
    ms_per_token = self.t_token and self.t_token * 1000,
    speculative = self.info and self.info.speculative,
  }
end

function Generator:__tostring()
  return string.format("slm.Generator(%s, %d tokens)", self.status, self.tokens)
end

M.Generator = Generator
return M
