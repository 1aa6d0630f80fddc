--- slm.progress: progress bars on stderr for long work (download, load,
-- quantize, perplexity).
--
--   local bar = progress.new("quantize", total)   -- total units (bytes, tokens)
--   bar:update(done)                              -- redraws at most 10 times a second
--   bar:finish()                                  -- final state, then a newline
--
-- Bars are drawn only when stderr is a terminal, so that piped or logged
-- output never holds carriage returns. SLM_PROGRESS=1 forces them on and
-- SLM_PROGRESS=0 off (tests use both).
local clock = require("slm.core").clock

local M = {}

local enabled
--- true when bars are drawn (checked once per process).
function M.enabled()
  if enabled == nil then
    local env = os.getenv("SLM_PROGRESS")
    if env == "1" then enabled = true
    elseif env == "0" then enabled = false
    else
      -- os.execute returns true only when `test` exits 0: fd 2 is a tty
      enabled = os.execute("test -t 2") == true
    end
  end
  return enabled
end

local WIDTH = 30

local function human(n, unit)
  if unit ~= "B" then return string.format("%d", n) end
  if n >= 1 << 30 then return string.format("%.2f GB", n / (1 << 30)) end
  if n >= 1 << 20 then return string.format("%.1f MB", n / (1 << 20)) end
  if n >= 1 << 10 then return string.format("%.1f kB", n / (1 << 10)) end
  return string.format("%d B", n)
end

local Bar = {}
Bar.__index = Bar

--- new(label, total [, unit]) -> bar; unit "B" prints byte counts as sizes.
-- total may be nil when unknown (the bar then shows only the count).
function M.new(label, total, unit)
  return setmetatable({ label = label, total = total, unit = unit, done = 0,
                        t0 = clock(), last = -1, on = M.enabled() }, Bar)
end

function Bar:draw()
  local line
  local elapsed = clock() - self.t0
  if self.total and self.total > 0 then
    local f = math.min(self.done / self.total, 1)
    local fill = math.floor(f * WIDTH + 0.5)
    line = string.format("%s [%s%s] %3d%% %s/%s %.1fs", self.label, string.rep("#", fill),
                         string.rep("-", WIDTH - fill), math.floor(f * 100),
                         human(self.done, self.unit), human(self.total, self.unit), elapsed)
  else
    line = string.format("%s %s %.1fs", self.label, human(self.done, self.unit), elapsed)
  end
  -- \27[K clears what a longer previous line left behind
  io.stderr:write("\r", line, "\27[K")
  io.stderr:flush()
end

--- Sets the amount done; redraws when a tenth of a second has passed.
function Bar:update(done)
  self.done = done
  if not self.on then return end
  local now = clock()
  if now - self.last >= 0.1 then
    self.last = now
    self:draw()
  end
end

--- Draws the final state and ends the line.
function Bar:finish()
  if not self.on then return end
  if self.total then self.done = self.total end
  self:draw()
  io.stderr:write("\n")
end

return M
