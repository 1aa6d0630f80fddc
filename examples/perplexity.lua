--- Perplexity of a model over a text file, and optionally the KL divergence
-- of the model's next-token distributions from a base model's.
--   bin/slm examples/perplexity.lua MODEL FILE [ctx=128] [stride=ctx] [BASE_MODEL]
-- Models without a tokenizer of their own (the tiny RWKV files) read the text
-- as bytes.
local slm = require "slm"

local path, file = arg[1], arg[2]
if not path or not file then
  io.stderr:write("usage: perplexity.lua MODEL FILE [ctx=128] [stride=ctx] [BASE_MODEL]\n")
  os.exit(2)
end
local ctx = math.tointeger(tonumber(arg[3] or 128))
local stride = math.tointeger(tonumber(arg[4] or ctx))
local base_path = arg[5]

local function load(p)
  local m, err = slm.load(p)
  if m and not m.tokenizer then m, err = slm.load(p, { tokenizer = slm.tokenizer.bytes() }) end
  if not m then
    io.stderr:write("perplexity.lua: ", err, "\n")
    os.exit(1)
  end
  return m
end

local f, ferr = io.open(file, "rb")
if not f then
  io.stderr:write("perplexity.lua: ", ferr, "\n")
  os.exit(1)
end
local text = f:read("a")
f:close()

local model = load(path)
local t0 = slm.core.clock()
local r = slm.eval.perplexity(model, text, { ctx = ctx, stride = stride })
print(string.format("%s: perplexity %.4f over %d tokens (mean NLL %.4f nats, ctx %d, stride %d, %.2f s)",
                    path, r.ppl, r.n, r.nll, ctx, stride, slm.core.clock() - t0))
if base_path then
  local k = slm.eval.kl(load(base_path), model, text, { ctx = ctx, stride = stride })
  print(string.format("KL(base || model): mean %.6f, max %.6f nats; top-1 agreement %.3f; base perplexity %.4f",
                      k.mean, k.max, k.top1, k.ppl_base))
end
