--- Activation hooks: watch the residual stream grow layer by layer, then
-- ablate one layer's feed-forward and see what changes.
--   bin/slm examples/hooks.lua MODEL.gguf ["prompt"]
local slm = require "slm"

local path, prompt = arg[1], arg[2] or "Once upon a time there was"
if not path then
  io.stderr:write("usage: hooks.lua MODEL.gguf [\"prompt\"]\n")
  os.exit(2)
end
local model, err = slm.load(path)
if not model then
  io.stderr:write("hooks.lua: ", err, "\n")
  os.exit(1)
end
local ids = model.tokenizer:encode(prompt)

-- the RMS of the last row of a (n, dim) view
local function rms_last(t)
  local row, s = t:select(1, t:size(1)):totable(), 0
  for _, v in ipairs(row) do s = s + v * v end
  return math.sqrt(s / #row)
end

local function top(logits)
  local best, arg = -math.huge, 0
  for i = 1, logits:numel() do
    if logits[i] > best then best, arg = logits[i], i - 1 end
  end
  return arg, best
end

-- 1. read: one hook per layer output
local handles = {}
for l = 0, model.hp.n_layer - 1 do
  local name = "blk." .. l .. ".out"
  handles[#handles + 1] = model:hook(name, function(t, info)
    print(string.format("%-12s rows %d  pos %d  rms(last row) %.4f", name, info.n, info.pos, rms_last(t)))
  end)
end
local sess = model:session { ctx = 256 }
local id, logit = top(sess:eval(ids))
print(string.format("next token %d %q (logit %.3f)", id, model.tokenizer:decode({ id }), logit))
for _, h in ipairs(handles) do h:remove() end

-- 2. intervene: zero the feed-forward output of the middle layer
local mid = model.hp.n_layer // 2
local zeros = slm.tensor.zeros
local h = model:hook("blk." .. mid .. ".ffn_out", function(t) t:copy_(zeros({ t:size(1), t:size(2) })) end)
local sess2 = model:session { ctx = 256 }
local id2, logit2 = top(sess2:eval(ids))
h:remove()
print(string.format("ablated blk.%d.ffn_out: next token %d %q (logit %.3f)", mid, id2,
                    model.tokenizer:decode({ id2 }), logit2))
