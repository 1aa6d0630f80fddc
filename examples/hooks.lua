--- Activation hooks: watch the residual stream grow layer by layer, then
-- ablate one layer's feed-forward and see what changes.
--   bin/slm examples/hooks.lua MODEL.gguf ["prompt"]
-- Any decoder with a tokenizer. Models without feed-forward hook points
-- (Mamba, RWKV: only blk.N.out) lose the middle layer's whole contribution
-- instead: its output is replaced by its input, the previous layer's output.
local slm = require "slm"
local common = require "examples.common"

-- no MODEL: slm's default model (slm.load("default"))
local path, prompt = arg[1] or "default", arg[2] or (arg[1] and "Once upon a time there was" or "ROMEO:")
local model = common.model(path, { text = true, decoder = true })
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

-- 2. intervene: zero the feed-forward output of the middle layer, where the
-- architecture has that point
local mid = model.hp.n_layer // 2
local zeros = slm.tensor.zeros
local what, hs = "blk." .. mid .. ".ffn_out", {}
local ok = pcall(function()
  hs[1] = model:hook(what, function(t) t:copy_(zeros({ t:size(1), t:size(2) })) end)
end)
if not ok then
  -- only blk.N.out: the middle layer's output becomes its input (it adds nothing)
  local before
  what = "blk." .. mid .. " (output := input)"
  hs[1] = model:hook("blk." .. mid - 1 .. ".out", function(t) before = t:clone() end)
  hs[2] = model:hook("blk." .. mid .. ".out", function(t) t:copy_(before) end)
end
local sess2 = model:session { ctx = 256 }
local id2, logit2 = top(sess2:eval(ids))
for _, h in ipairs(hs) do h:remove() end
print(string.format("ablated %s: next token %d %q (logit %.3f)", what, id2,
                    model.tokenizer:decode({ id2 }), logit2))
