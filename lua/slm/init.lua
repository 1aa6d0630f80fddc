--- slm: small language models on CPUs.
-- `require "slm"` gives the public API; the C core is `slm.core`.
local core = require "slm.core"

local slm = {
  version = core.version,
  core = core,
}

return slm
