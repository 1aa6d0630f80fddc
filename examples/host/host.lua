--- The Lua side of examples/host/host.c: what a game or tool engine would
-- script. The host calls these functions from its frame loop (one Lua state
-- per OS thread); all timing that matters is measured by the host around
-- its calls.
--
--   local h = dofile("examples/host/host.lua")
--   h.start{model = PATH, prompt = "...", max_tokens = 64}
--   local text, status = h.frame(4)       -- every frame: a 4 ms slice
--   h.cancel()
local slm = require "slm"

local M = {}

local model, model_path
local gen

local function load(path)
  if model_path ~= path then
    model = assert(slm.load(path))
    model_path = path
  end
  return model
end

--- threads: the size of this state's (this OS thread's) pool
function M.threads(n) return slm.threads(n) end

--- start{model=, prompt=, max_tokens=, ctx=}: a new session and generator
function M.start(o)
  local m = load(o.model)
  local sess = m:session { ctx = o.ctx or 512 }
  gen = sess:generator(o.prompt, { max_tokens = o.max_tokens or 64 })
end

--- frame(budget_ms) -> text of this slice, status
function M.frame(budget_ms)
  return gen:step { budget_ms = budget_ms }
end

function M.cancel() gen:cancel() end
function M.text() return gen:text() end

--- stats() -> ms per generated token, ms per prompt token, tokens
function M.stats()
  local s = gen:stats()
  return s.ms_per_token or 0, s.ms_per_prompt_token or 0, s.tokens
end

--- reference{model=, prompt=, max_tokens=} -> the text of a plain,
-- non-stepped greedy sess:generate (what the slices must add up to)
function M.reference(o)
  local sess = load(o.model):session { ctx = o.ctx or 512 }
  return sess:generate(o.prompt, { max_tokens = o.max_tokens or 64 }, function() end)
end

return M
