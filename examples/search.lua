-- Semantic search over the lines of a text file.
--
--   bin/slm examples/search.lua MODEL FILE [QUERY ...] [--top K]
--
-- Every non-blank line of FILE is embedded once (model:embed: an encoder's
-- pooled, L2-normalized sentence vector, or a decoder's last normed row);
-- then each query (the arguments, else one per line of stdin) is embedded
-- and the K lines (default 3) with the highest cosine similarity are
-- printed with it. The vectors have unit length, so one matrix-vector
-- product scores every line: scores = index . q. Encoders and decoders
-- with a tokenizer (byte-level rwkv.cpp files read bytes); llama2.c
-- checkpoints (no vocabulary in the file) are refused.
local slm = require "slm"
local common = require "examples.common"

local function die(msg)
  io.stderr:write(msg, "\n")
  os.exit(1)
end

local args, top = {}, 3
local i = 1
while i <= #arg do
  if arg[i] == "--top" then
    top = math.tointeger(tonumber(arg[i + 1] or ""))
    if not top or top < 1 then die("--top needs a positive integer") end
    i = i + 2
  else
    args[#args + 1] = arg[i]
    i = i + 1
  end
end
if #args < 2 then die("usage: search.lua MODEL FILE [QUERY ...] [--top K]") end

local model = common.model(args[1], { text = true })

local lines = {}
local fh, ferr = io.open(args[2], "r")
if not fh then die(ferr) end
for l in fh:lines() do
  if l:match("%S") then lines[#lines + 1] = l end
end
fh:close()
if #lines == 0 then die(args[2] .. ": no lines to search") end

-- a text's ids, cut to the model's context (keeping the last id: BERT's [SEP])
local limit = model.hp.n_ctx_train or math.huge
local function ids_of(text)
  local ids = model.tokenizer:encode(text)
  if #ids <= limit then return ids end
  local cut = table.move(ids, 1, limit - 1, 1, {})
  cut[limit] = ids[#ids]
  return cut
end

-- the index: one unit vector per line, (n_lines, dim)
local dim = model.hp.dim
local index = slm.tensor.zeros({ #lines, dim })
for n, l in ipairs(lines) do index:select(1, n):copy_(model:embed(ids_of(l))) end

local function search(query)
  local q = model:embed(ids_of(query)):reshape({ 1, dim })
  local scores = slm.core.ops.matmul(index, q)   -- (1, n_lines): cosines
  local order = {}
  for n = 1, #lines do order[n] = n end
  table.sort(order, function(a, b)
    local sa, sb = scores:get(1, a), scores:get(1, b)
    if sa ~= sb then return sa > sb end
    return a < b
  end)
  io.write("query: ", query, "\n")
  for r = 1, math.min(top, #lines) do
    io.write(string.format("  %6.3f  %s\n", scores:get(1, order[r]), lines[order[r]]))
  end
end

if #args > 2 then
  for q = 3, #args do search(args[q]) end
else
  for query in io.lines() do
    if query:match("%S") then search(query) end
  end
end
