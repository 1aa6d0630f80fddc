--- Tokenizer throughput: encode MB/s on one thread and on all threads
-- (encode_batch over 64 KB chunks) for the gpt-2 and llama-spm vocabularies
-- (and the other vocab fixtures present), over a few
-- MB of real English text read at run time from Debian packages' license and
-- copyright files (never committed).
--   lua5.4 bench/tokenizer.lua [MB]      (from the repository root)
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = (os.getenv("BUILD") or "build") .. "/?.so;" .. package.cpath
local tokenizer = require "slm.tokenizer"

local want = (tonumber(arg and arg[1]) or 4) * 1024 * 1024
local fixtures = os.getenv("SLM_FIXTURES") or "../shared/fixtures"

local function corpus()
  local parts, n = {}, 0
  local p = io.popen("ls /usr/share/common-licenses/* /usr/share/doc/*/copyright 2>/dev/null")
  for path in p:lines() do
    local f = io.open(path, "rb")
    if f then
      local s = f:read("a") or ""
      f:close()
      parts[#parts + 1] = s
      n = n + #s
    end
  end
  p:close()
  if n == 0 then return nil end
  local text = table.concat(parts)
  while #text < want do text = text .. text end
  return text:sub(1, want)
end

local text = corpus()
if not text then
  print("tokenizer bench: no text found under /usr/share/doc, skipped")
  return
end

-- wall-clock seconds (os.clock is CPU time, summed over threads)
local function now()
  local p = io.popen("date +%s.%N")
  local t = tonumber(p:read("l"))
  p:close()
  return t
end

-- 64 KB chunks cut after a newline, for the batch (all threads) figure
local chunks = {}
do
  local pos = 1
  while pos <= #text do
    local stop = text:find("\n", pos + 65536, true) or #text
    chunks[#chunks + 1] = text:sub(pos, stop)
    pos = stop + 1
  end
end

local function bench(name, path)
  local tok = tokenizer.load(path)
  if not tok then
    print(string.format("%-28s skipped (%s not found)", name, path))
    return
  end
  tok:encode(text:sub(1, 65536))  -- warm up
  local best, n = math.huge, 0
  for _ = 1, 3 do
    local t0 = os.clock()
    n = #tok:encode(text, { add_special = false })
    local dt = os.clock() - t0
    if dt < best then best = dt end
  end
  local wall, cpu = math.huge, math.huge
  for _ = 1, 3 do
    local t0, c0 = now(), os.clock()
    tok:encode_batch(chunks, { add_special = false, threads = 0 })
    local dt, dc = now() - t0, os.clock() - c0
    if dt < wall then wall, cpu = dt, dc end
  end
  -- wall-clock MB/s of the batch, and MB per CPU-second (what each core
  -- achieves; the wall figure also reflects whatever else the machine runs)
  print(string.format("%-24s %7.1f MB/s 1 thread %7.1f MB/s all threads (%.1f per CPU-s)  %d -> %d tokens",
    name, #text / best / 1e6, #text / wall / 1e6, #text / cpu / 1e6, #text, n))
end

print(string.format("tokenizer encode throughput on %.1f MB of Debian license text", #text / 1e6))
for _, v in ipairs { "gpt-2", "llama-spm", "phi-3", "falcon", "starcoder", "deepseek-coder" } do
  bench(v, fixtures .. "/vocab/ggml-vocab-" .. v .. ".gguf")
end
for _, v in ipairs { "llama3", "qwen3", "spm32k" } do
  bench("tokenizer.json " .. v, fixtures .. "/tokenizer-json/" .. v .. "/tokenizer.json")
end
