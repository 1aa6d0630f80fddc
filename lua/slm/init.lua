--- slm: small language models on CPUs.
-- `require "slm"` gives the public API; the C core is `slm.core`.
local core = require "slm.core"

local slm = {
  version = core.version,
  core = core,
}

slm.tensor = require "slm.tensor"
slm.gguf = require "slm.gguf"
slm.safetensors = require "slm.safetensors"
slm.model = require "slm.model"
slm.load = slm.model.load
slm.threads = core.threads
slm.kernels = core.kernels                -- the SIMD tier in use: "avx512", "avx2", "generic"
-- SLM_KERNELS=avx2 (or generic) caps the tier for a whole process and its
-- children (benchmarks comparing tiers); any other value is an error
if os.getenv("SLM_KERNELS") then
  local ok, e = pcall(core.kernels, os.getenv("SLM_KERNELS"))
  if not ok then
    error(string.format("SLM_KERNELS must be generic, avx2 or avx512 (got %q)", os.getenv("SLM_KERNELS")), 0)
  end
end
slm.sampler = require "slm.sampler"
slm.tokenizer = require "slm.tokenizer"
slm.chat = require "slm.chat"              -- chat templates (sess:chat, sess:chat_session)
slm.pipeline = require "slm.pipeline"      -- prompt pipelines and routers
local batch = require "slm.batch"          -- many sessions in one forward (issue 19)
slm.batch, slm.batch_generate, slm.batcher = batch.batch, batch.batch_generate, batch.batcher
slm.grammar = require "slm.grammar"        -- GBNF grammars, matchers, token masks

slm.eval = require "slm.eval"              -- perplexity, KL divergence
slm.experiment = require "slm.experiment"  -- layer plans, weight surgery
slm.prune = require "slm.prune"
slm.lora = require "slm.lora"
slm.quantize = require "slm.quantize"      -- slm.quantize(in, out, type or policy)
slm.train = require "slm.train"            -- training: init, trainer, data (docs/TRAINING.md)
-- slm.server{...}: the OpenAI-compatible HTTP server (docs/SERVER.md), loaded
-- on first use (it needs lua-http, which the rest of slm does not)
function slm.server(opts) return require("slm.server").new(opts) end

return slm
