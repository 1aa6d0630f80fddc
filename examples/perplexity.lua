--- Perplexity of a model over a text file, and optionally the KL divergence
-- of the model's next-token distributions from a base model's.
--   bin/slm examples/perplexity.lua MODEL FILE [ctx=128] [stride=ctx] [BASE_MODEL]
-- Models without a tokenizer of their own whose vocabulary is 256 tokens (the
-- tiny RWKV files) read the text as bytes; encoders and llama2.c checkpoints
-- are refused.
local slm = require "slm"
local common = require "examples.common"

local path, file = arg[1], arg[2]
if not path or not file then
  io.stderr:write("usage: perplexity.lua MODEL FILE [ctx=128] [stride=ctx] [BASE_MODEL]\n")
  os.exit(2)
end
local ctx = math.tointeger(tonumber(arg[3] or 128))
local stride = math.tointeger(tonumber(arg[4] or ctx))
local base_path = arg[5]

local function load(p) return common.model(p, { text = true, decoder = true }) end

if not ctx or ctx < 2 then common.die("ctx must be an integer >= 2, got %s", tostring(arg[3])) end
if not stride or stride < 1 or stride > ctx then
  common.die("stride must be an integer in 1..ctx, got %s", tostring(arg[4]))
end
local f, ferr = io.open(file, "rb")
if not f then common.die("%s", ferr) end
local text = f:read("a")
f:close()

local model = load(path)
local base = base_path and load(base_path)   -- refused now, not after the first pass
local t0 = slm.core.clock()
local r = slm.eval.perplexity(model, text, { ctx = ctx, stride = stride })
print(string.format("%s: perplexity %.4f over %d tokens (mean NLL %.4f nats, ctx %d, stride %d, %.2f s)",
                    path, r.ppl, r.n, r.nll, ctx, stride, slm.core.clock() - t0))
if base_path then
  local k = slm.eval.kl(base, model, text, { ctx = ctx, stride = stride })
  print(string.format("KL(base || model): mean %.6f, max %.6f nats; top-1 agreement %.3f; base perplexity %.4f",
                      k.mean, k.max, k.top1, k.ppl_base))
end
