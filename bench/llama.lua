--- Benchmarks one dense model file: prompt processing (pp, one batch of
-- n_prompt tokens) and decode (tg, one token per eval) in tokens/s, the
-- Lua-composition share of decode time, and the peak resident memory.
--   bin/slm bench/llama.lua MODEL.gguf [n_prompt=128] [n_gen=64] [threads]
-- Prints one line: key=value pairs (parsed by bench/run.lua and
-- bench/families.lua), or "error=MESSAGE" when slm cannot load the file
-- (an architecture it does not run yet). lua_share is "?" when the stubbed
-- forward below does not fit the architecture's forward.
local slm = require "slm"

local path = assert(arg[1], "usage: bench/llama.lua MODEL.gguf [n_prompt] [n_gen] [threads]")
local n_prompt, n_gen = tonumber(arg[2] or 128), tonumber(arg[3] or 64)
if arg[4] then slm.threads(tonumber(arg[4])) end

local clock = require("slm.bench").clock

local model, err = slm.load(path)
if not model then
  print("error=" .. err)
  os.exit(1)
end
local hp = model.hp
local ids = {}
for i = 1, n_prompt do ids[i] = (i * 7919) % hp.n_vocab end

-- pp: best of 3 fresh sessions
local pp = 0
for _ = 1, 3 do
  local s = model:session { ctx = n_prompt + n_gen + 8, batch = n_prompt }
  local t0 = clock()
  s:eval(ids)
  local dt = clock() - t0
  pp = math.max(pp, n_prompt / dt)
end

-- tg: tokens evaluated one at a time after a short prompt, best of 2
local tg = 0
for _ = 1, 2 do
  local s = model:session { ctx = n_prompt + n_gen + 8, batch = 16 }
  s:eval { 1, 2, 3, 4 }
  local t0 = clock()
  for i = 1, n_gen do s:eval { (i * 31) % hp.n_vocab } end
  tg = math.max(tg, n_gen / (clock() - t0))
end

-- Lua composition cost: the same forward with every C block replaced by a C
-- function that returns at once (rawequal), so only Lua's own work remains.
-- Under pcall: an architecture whose forward does more than these blocks
-- fails on the stubs' results and gets "?" (the blocks are restored anyway).
local def, net = model.def, model.net
local blocks = require("slm.core").blocks
local saved = {}
local ok, lua_us = pcall(function()
  local stub = { forward = rawequal, route = rawequal }
  local fake = setmetatable({ layers = {} }, { __index = net })
  for l = 1, #net.layers do
    local L = net.layers[l]
    fake.layers[l] = setmetatable({ attn = stub, attn_long = L.attn_long and stub, ffn = L.ffn and stub,
                                    moe = L.moe and stub }, { __index = L })
  end
  local s = model:session { ctx = 16, batch = 1 }
  for _, k in ipairs { "embed", "rmsnorm", "add", "linear", "layernorm", "scale", "softcap" } do
    saved[k] = blocks[k]
    blocks[k] = rawequal
  end
  local reps = 2000
  local t0 = clock()
  for _ = 1, reps do def.forward(fake, s, { 1 }, 1, 1) end
  return (clock() - t0) / reps * 1e6
end)
for k, f in pairs(saved) do blocks[k] = f end
local share = ok and string.format("lua_us=%.1f lua_share=%.2f%%", lua_us, lua_us * 1e-6 * tg * 100)
              or "lua_us=? lua_share=?"

local rss = require("slm.bench").peak_rss_kb()
print(string.format("model=%s pp=%.1f tg=%.2f %s rss_mb=%.1f", path:match("[^/]+$"), pp, tg, share, rss / 1024))
