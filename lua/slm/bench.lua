--- slm.bench: measuring helpers for the benchmark scripts.
local M = {}

--- Wall-clock seconds (monotonic), with sub-microsecond resolution.
M.clock = require("slm.core").clock

--- Peak resident set size of this process in KiB (VmHWM), or 0 if unknown.
function M.peak_rss_kb()
  local f = io.open("/proc/self/status", "r")
  if not f then return 0 end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("VmHWM:%s*(%d+)")) or 0
end

return M
