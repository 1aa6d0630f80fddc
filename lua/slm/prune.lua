--- slm.prune: magnitude pruning and structured pruning from Lua.
--
--   local t2, k = slm.prune.magnitude(t, 0.5)        -- tensor: k smallest |w| zeroed
--   local m2, st = slm.prune.magnitude(model, 0.3, {scope = "global"})
--   local m3 = slm.prune.heads(model, {[2] = {0, 3}}) -- layer 2: heads 0 and 3
--   slm.prune.ffn_channels("in.gguf", "out.gguf", {keep = 0.75})
--   slm.prune.experts("moe.gguf", "out.gguf", {drop = {[0] = {3}, [1] = {0}}})
--   slm.prune.attention_heads("in.gguf", "out.gguf", {keep = 0.75})  -- fewer heads per layer
--   slm.prune.layers("in.gguf", "out.gguf", {drop = {3}})           -- layer 3 gone, 4.. renumbered
--
-- magnitude: zeroes exactly floor(fraction * n) elements with the smallest
-- |w| (ties at the threshold broken by position), per tensor (scope
-- "tensor", default) or over all selected tensors together ("global").
-- Quantized weights are dequantized, pruned and requantized to their dtype
-- (or to opts.dtype). Zeros stay exactly zero in the formats without a block
-- minimum (q8_0, q4_0, q5_0, q3_k, q6_k; f16, bf16); those storing
-- value = d q - m (q4_1, q5_1, q2_k, q4_k, q5_k) put a pruned weight within
-- one quantization step of 0, so choose opts.dtype = "f16" (or a format
-- without a minimum) for exact sparsity. A requantized block's other values
-- may move by a step as its scale is recomputed.
-- opts.filter(name, t) picks a model's tensors; by default every 2-D weight
-- of the blocks (blk.N.*.weight), not the embeddings or the head.
--
-- heads: attention heads are removed by zeroing, not slicing: the head's
-- rows of attn_q and its columns of attn_output become 0, so its output
-- vanishes while every shape (and grouped-query sharing of k/v) stays as
-- the file has it. Layers and heads are numbered from 0.
--
-- ffn_channels: physically smaller. Per layer, channel i of the SwiGLU
-- feed-forward (row i of ffn_gate and ffn_up, column i of ffn_down) is
-- scored by |gate_i| |up_i| |down_.i| (Euclidean norms: a bound on what
-- the channel adds for a unit input) and the lowest-scoring channels are
-- dropped; a new GGUF is written with the sliced tensors and
-- <arch>.feed_forward_length updated. The kept count is rounded down to a
-- multiple of opts.multiple (default 32, so quantized ffn_down rows stay
-- whole blocks); ffn_down falls back to f16 when its new row length does
-- not fit its dtype's block.
local core = require "slm.core"
local tensor = require "slm.tensor"
local gguf = require "slm.gguf"
local experiment = require "slm.experiment"

local M = {}

local CHUNK = 4096

-- The values of a tensor as a flat Lua list (dequantized).
local function values(t)
  local bytes = t:to("f32"):contiguous():tobytes()
  local n = #bytes // 4
  local out = {}
  for i = 0, n - 1, CHUNK do
    local m = math.min(CHUNK, n - i)
    table.move({ string.unpack("<" .. string.rep("f", m), bytes, 4 * i + 1) }, 1, m, i + 1, out)
  end
  return out
end
M.values = values

-- A tensor of dtype from a flat list of values.
local function from_values(vals, shape, dtype)
  local parts = {}
  for i = 1, #vals, CHUNK do
    local j = math.min(i + CHUNK - 1, #vals)
    parts[#parts + 1] = string.pack("<" .. string.rep("f", j - i + 1), table.unpack(vals, i, j))
  end
  local t = tensor.frombytes(table.concat(parts), "f32", shape)
  if dtype ~= "f32" then t = t:to(dtype) end
  return t
end

-- The k-th smallest |v| over lists of values (k >= 1).
local function kth_abs(lists, k)
  local all = {}
  for _, vals in ipairs(lists) do
    for i = 1, #vals do all[#all + 1] = math.abs(vals[i]) end
  end
  table.sort(all)
  return all[k]
end

-- Zeroes |v| < thr, then |v| == thr in order while budget lasts; returns
-- the number zeroed.
local function zero_below(vals, thr, budget)
  local z = 0
  for i = 1, #vals do
    if math.abs(vals[i]) < thr then vals[i] = 0; z = z + 1 end
  end
  for i = 1, #vals do
    if z >= budget then break end
    if vals[i] ~= 0 and math.abs(vals[i]) == thr then vals[i] = 0; z = z + 1 end
  end
  return z
end

local function shape_of(t)
  local s = {}
  for d = 1, t:dim() do s[d] = t:size(d) end
  return s
end

local function check_fraction(f)
  if type(f) ~= "number" or f < 0 or f > 1 then error("prune: fraction must be a number in [0, 1]", 3) end
end

-- Prunes a list of {name, t} with one threshold per tensor or one for all.
-- Returns {name -> new tensor}, zeroed, total.
local function prune_list(items, fraction, scope, dtype)
  local vals, total = {}, 0
  for i, it in ipairs(items) do
    vals[i] = values(it.t)
    total = total + #vals[i]
  end
  local out, zeroed = {}, 0
  local function finish(i)
    out[items[i].name] = from_values(vals[i], shape_of(items[i].t), dtype or items[i].t:dtype())
  end
  if scope == "global" then
    local k = math.floor(fraction * total)
    if k > 0 then
      local thr = kth_abs(vals, k)
      -- below-threshold values first everywhere, then ties in tensor order
      local below = 0
      for _, v in ipairs(vals) do
        for j = 1, #v do if math.abs(v[j]) < thr then below = below + 1 end end
      end
      local ties = k - below
      for i, v in ipairs(vals) do
        local before = 0
        for j = 1, #v do if math.abs(v[j]) < thr then before = before + 1 end end
        local z = zero_below(v, thr, before + ties)
        ties = ties - (z - before)
        zeroed = zeroed + z
      end
    end
    for i = 1, #items do finish(i) end
  else
    for i, v in ipairs(vals) do
      local k = math.floor(fraction * #v)
      if k > 0 then zeroed = zeroed + zero_below(v, kth_abs({ v }, k), k) end
      finish(i)
    end
  end
  return out, zeroed, total
end

local function default_filter(name, t)
  return name:match("^blk%.%d+%..*%.weight$") ~= nil and t:dim() == 2
end

--- magnitude(tensor, fraction [, {dtype =}]) -> pruned tensor, zeroed count
--- magnitude(model, fraction [, {scope =, filter =, dtype =}]) -> model, {zeroed =, total =, tensors =}
function M.magnitude(x, fraction, opts)
  check_fraction(fraction)
  opts = opts or {}
  if tensor.is_tensor(x) then
    local out, zeroed = prune_list({ { name = "t", t = x } }, fraction, "tensor", opts.dtype)
    return out.t, zeroed
  end
  if type(x) ~= "table" or not x.source then error("prune.magnitude: a tensor or a model expected", 2) end
  local src, filter = x.source, opts.filter or default_filter
  if src.kind ~= "gguf" then error("prune.magnitude: models loaded from GGUF only", 2) end
  local items = {}
  for _, info in ipairs(src.file.tensors) do
    local t = src.tensor(info.name)
    if filter(info.name, t) then items[#items + 1] = { name = info.name, t = t } end
  end
  local scope = opts.scope or "tensor"
  if scope ~= "tensor" and scope ~= "global" then error("prune.magnitude: scope must be 'tensor' or 'global'", 2) end
  local new, zeroed, total = prune_list(items, fraction, scope, opts.dtype)
  local m = experiment.rebuild(x, function(name) return new[name] end)
  return m, { zeroed = zeroed, total = total, tensors = #items }
end

--- heads(model, {[layer] = {head, ...}}) -> model with those heads zeroed
-- (opts.dtype: the dtype of the edited weights, default: the file's)
function M.heads(model, spec, opts)
  if type(spec) ~= "table" then error("bad argument #2 to 'heads' (table expected)", 2) end
  local hp, src = model.hp, model.source
  local hd, nh = hp.head_dim, hp.n_head
  local edits = {}
  for layer, hs in pairs(spec) do
    if math.type(layer) ~= "integer" or layer < 0 or layer >= hp.n_layer then
      error(string.format("prune.heads: layer %s out of range 0..%d", tostring(layer), hp.n_layer - 1), 2)
    end
    local p = "blk." .. layer .. "."
    if not src.has(p .. "attn_q.weight") then
      error(string.format(src.has(p .. "attn_qkv.weight") and "prune.heads: layer %d's fused attn_qkv is not supported"
                          or "prune.heads: layer %d has no attention heads (no attn_q.weight)", layer), 2)
    end
    for _, h in ipairs(hs) do
      if math.type(h) ~= "integer" or h < 0 or h >= nh then
        error(string.format("prune.heads: head %s out of range 0..%d", tostring(h), nh - 1), 2)
      end
    end
    edits[p .. "attn_q.weight"] = { rows = hs }
    edits[p .. "attn_output.weight"] = { cols = hs }
  end
  return experiment.rebuild(model, function(name, W)
    local e = edits[name]
    if not e then return nil end
    local w = W:to("f32"):contiguous()
    if w:shares_storage(W) then w = w:clone() end
    for _, h in ipairs(e.rows or e.cols) do
      local d = e.rows and 1 or 2
      local part = w:narrow(d, h * hd + 1, hd)
      part:copy_(tensor.zeros(shape_of(part)))
    end
    local dt = (opts and opts.dtype) or W:dtype()
    return dt == "f32" and w or w:to(dt)
  end)
end

local function row_norms(t)
  local v, n, k = values(t), t:size(1), t:size(2)
  local out = {}
  for r = 0, n - 1 do
    local s = 0
    for c = 1, k do local x = v[r * k + c]; s = s + x * x end
    out[r + 1] = math.sqrt(s)
  end
  return out
end

-- rows idx (1-based list) of a 2-D tensor, as an f32 tensor
local function gather_rows(t, idx)
  local src = t:to("f32"):contiguous()
  local out = tensor.zeros({ #idx, src:size(2) })
  for j, i in ipairs(idx) do out:select(1, j):copy_(src:select(1, i)) end
  return out
end

-- An f32 (rows, cols) tensor in dtype, or in f16 when a row is not whole
-- blocks of dtype.
local function requant(dtype, t)
  local cols = t:size(2)
  if dtype ~= "f32" and cols % core.dtypes[dtype].block_size ~= 0 then dtype = "f16" end
  return dtype == "f32" and t or t:to(dtype)
end

--- ffn_channels(in_path, out_path, {keep = fraction | n_ff = count, multiple = 32})
-- -> true, new n_ff | nil, msg
function M.ffn_channels(in_path, out_path, opts)
  opts = opts or {}
  local f, err = gguf.open(in_path)
  if not f then return nil, err end
  local arch = f.metadata["general.architecture"]
  local n_ff = f.metadata[arch .. ".feed_forward_length"]
  local n_layer = f.metadata[arch .. ".block_count"]
  if type(n_ff) ~= "number" then return nil, in_path .. ": no scalar " .. arch .. ".feed_forward_length" end
  local mult = opts.multiple or 32
  local k = opts.n_ff or math.floor((opts.keep or 1.0) * n_ff)
  k = math.min(n_ff, k - k % mult)
  if k < 1 then error("prune.ffn_channels: nothing would be kept", 2) end
  local new = {}
  for l = 0, n_layer - 1 do
    local p = "blk." .. l .. "."
    local g, u, d = f:tensor(p .. "ffn_gate.weight"), f:tensor(p .. "ffn_up.weight"), f:tensor(p .. "ffn_down.weight")
    if not (g and u and d) then return nil, in_path .. ": layer " .. l .. " has no ffn_gate/ffn_up/ffn_down" end
    local dt = d:to("f32"):t():contiguous()            -- (n_ff, dim): row i = column i of down
    local ng, nu, nd = row_norms(g), row_norms(u), row_norms(dt)
    local order = {}
    for i = 1, n_ff do order[i] = i end
    local score = {}
    for i = 1, n_ff do score[i] = ng[i] * nu[i] * nd[i] end
    table.sort(order, function(a, b) return score[a] > score[b] or (score[a] == score[b] and a < b) end)
    local keep = table.move(order, 1, k, 1, {})
    table.sort(keep)                                    -- keep the channels' order
    local as = requant
    new[p .. "ffn_gate.weight"] = as(g:dtype(), gather_rows(g, keep))
    new[p .. "ffn_up.weight"] = as(u:dtype(), gather_rows(u, keep))
    new[p .. "ffn_down.weight"] = as(d:dtype(), gather_rows(dt, keep):t():contiguous())
  end
  local ok, werr = experiment.write_gguf(f, out_path, function(info)
    return new[info.name] or f:tensor(info.name)
  end, { [arch .. ".feed_forward_length"] = { type = "u32", value = k } })
  f:close()
  if not ok then return nil, werr end
  return true, k
end

--- experts(in_path, out_path, opts) -> true, {[layer] = kept experts} | nil, msg
-- Writes a MoE GGUF with fewer experts per layer: the router rows and the
-- 3-D expert tensors (ffn_{gate,up,down}_exps, sliced along the expert
-- dimension: whole expert matrices, their bytes copied as they are, any
-- dtype) of the kept experts, <arch>.expert_count set to the kept count
-- and expert_used_count lowered to it when larger. Every layer keeps the
-- same number (expert_count is one key); which ones may differ. opts:
--   keep = {[layer] = {experts...}}   the experts to keep (0-based)
--   drop = {[layer] = {experts...}}   or the ones to drop
--   counts = sess:expert_counts(), n_keep = k   or the k most used per layer
-- Layers not named keep every expert (then every named layer must keep all
-- too: the counts must agree). The kept experts keep their order.
function M.experts(in_path, out_path, opts)
  if type(opts) ~= "table" then error("bad argument #3 to 'experts' (table expected)", 2) end
  for k in pairs(opts) do
    if k ~= "keep" and k ~= "drop" and k ~= "counts" and k ~= "n_keep" then
      error("prune.experts: unknown option '" .. tostring(k) .. "' (keep, drop, counts, n_keep)", 2)
    end
  end
  local f, err = gguf.open(in_path)
  if not f then return nil, err end
  local arch = f.metadata["general.architecture"]
  local ne, used = f.metadata[arch .. ".expert_count"], f.metadata[arch .. ".expert_used_count"]
  local n_layer = f.metadata[arch .. ".block_count"]
  if math.type(ne) ~= "integer" or ne < 1 then
    f:close()
    return nil, in_path .. ": not a mixture-of-experts model (no " .. arch .. ".expert_count)"
  end
  local function list_of(layer, t, what)
    if type(t) ~= "table" then error(string.format("prune.experts: %s[%d] must be a list of experts", what, layer), 3) end
    local set = {}
    for _, e in ipairs(t) do
      if math.type(e) ~= "integer" or e < 0 or e >= ne then
        error(string.format("prune.experts: %s[%d]: %s is not an expert (0..%d)", what, layer, tostring(e), ne - 1), 3)
      end
      set[e] = true
    end
    return set
  end
  local keep = {}     -- [layer] = sorted list of kept experts (0-based)
  local function set_layer(layer, set)
    if math.type(layer) ~= "integer" or layer < 0 or layer >= n_layer then
      error(string.format("prune.experts: %s is not a layer (0..%d)", tostring(layer), n_layer - 1), 3)
    end
    local l = {}
    for e = 0, ne - 1 do if set[e] then l[#l + 1] = e end end
    keep[layer] = l
  end
  if opts.keep then
    for layer, t in pairs(opts.keep) do set_layer(layer, list_of(layer, t, "keep")) end
  elseif opts.drop then
    for layer, t in pairs(opts.drop) do
      local d, set = list_of(layer, t, "drop"), {}
      for e = 0, ne - 1 do set[e] = not d[e] end
      set_layer(layer, set)
    end
  elseif opts.counts then
    local k = opts.n_keep
    if math.type(k) ~= "integer" or k < 1 or k > ne then
      error(string.format("prune.experts: n_keep must be an integer in 1..%d", ne), 2)
    end
    for layer = 0, n_layer - 1 do
      local c = opts.counts[layer] or {}
      local order = {}
      for e = 0, ne - 1 do order[#order + 1] = e end
      table.sort(order, function(a, b)
        local ca, cb = c[a] or 0, c[b] or 0
        return ca > cb or (ca == cb and a < b)
      end)
      local set = {}
      for i = 1, k do set[order[i]] = true end
      set_layer(layer, set)
    end
  else
    error("prune.experts: give keep, drop, or counts and n_keep", 2)
  end
  local n_keep
  for layer = 0, n_layer - 1 do
    if not keep[layer] then
      local all = {}
      for e = 0, ne - 1 do all[#all + 1] = e end
      keep[layer] = all
    end
    if n_keep and #keep[layer] ~= n_keep then
      error(string.format("prune.experts: layer %d keeps %d experts, another %d: every layer must keep as many",
                          layer, #keep[layer], n_keep), 2)
    end
    n_keep = #keep[layer]
  end
  if n_keep < 1 then error("prune.experts: nothing would be kept", 2) end
  local new = {}
  for layer = 0, n_layer - 1 do
    local p = "blk." .. layer .. "."
    local router = f:tensor(p .. "ffn_gate_inp.weight")
    if not router then
      f:close()
      return nil, in_path .. ": layer " .. layer .. " has no ffn_gate_inp.weight"
    end
    local r = tensor.zeros({ n_keep, router:size(2) }, router:dtype())
    for j, e in ipairs(keep[layer]) do r:select(1, j):copy_(router:select(1, e + 1)) end
    new[p .. "ffn_gate_inp.weight"] = r
    for _, name in ipairs { "ffn_gate_exps", "ffn_up_exps", "ffn_down_exps" } do
      local t = f:tensor(p .. name .. ".weight")
      if not t or t:dim() ~= 3 or t:size(1) ~= ne then
        f:close()
        return nil, string.format("%s: %s%s.weight is missing or not (%d, out, in)", in_path, p, name, ne)
      end
      local o = tensor.zeros({ n_keep, t:size(2), t:size(3) }, t:dtype())
      for j, e in ipairs(keep[layer]) do o:select(1, j):copy_(t:select(1, e + 1)) end
      new[p .. name .. ".weight"] = o
    end
  end
  local meta = { [arch .. ".expert_count"] = { type = "u32", value = n_keep } }
  if used > n_keep then meta[arch .. ".expert_used_count"] = { type = "u32", value = n_keep } end
  local ok, werr = experiment.write_gguf(f, out_path, function(info)
    return new[info.name] or f:tensor(info.name)
  end, meta)
  f:close()
  if not ok then return nil, werr end
  return true, keep
end

-- Architectures whose layers are alike (same code, no per-index pattern
-- such as gemma2's alternate windows or smollm3's NoPE on every 4th layer)
-- and whose metadata is one value per model: the ones layers() renumbers.
local UNIFORM_LAYERS = { llama = true, qwen2 = true, qwen3 = true, phi3 = true, granite = true, gemma = true,
                         qwen2moe = true, qwen3moe = true, olmoe = true, mamba = true }
-- Attention with separate q/k/v/output and per-head (or no) q/k norms: the
-- ones attention_heads() slices. (phi3's fused attn_qkv and olmoe's norm
-- over the whole projection are not sliced; lfm2 has per-layer head lists.)
local SLICEABLE_HEADS = { llama = true, qwen2 = true, qwen3 = true, smollm3 = true, granite = true, gemma = true,
                          gemma2 = true, gemma3 = true, qwen2moe = true, qwen3moe = true }

local function list_keys(f, arch)
  for _, k in ipairs(f.keys) do
    if k:sub(1, #arch + 1) == arch .. "." and type(f.metadata[k]) == "table" then return k end
  end
end

--- layers(in_path, out_path, {drop = {layer, ...}}) -> true, new block
-- count | nil, msg
-- Writes a GGUF without the dropped layers (0-based): the kept layers'
-- tensors renumbered in order (blk.4 becomes blk.3 when layer 3 goes),
-- <arch>.block_count lowered. The physical form of model:variant{skip =}:
-- a file that loads, trains and saves like any other. Only architectures
-- whose layers are alike and whose metadata holds no per-layer list.
function M.layers(in_path, out_path, opts)
  if type(opts) ~= "table" then error("bad argument #3 to 'layers' (table expected)", 2) end
  for k in pairs(opts) do
    if k ~= "drop" then error("prune.layers: unknown option '" .. tostring(k) .. "' (drop)", 2) end
  end
  if type(opts.drop) ~= "table" or #opts.drop == 0 then error("prune.layers: drop must be a non-empty list of layers", 2) end
  local f, err = gguf.open(in_path)
  if not f then return nil, err end
  local arch = f.metadata["general.architecture"]
  local n_layer = f.metadata[tostring(arch) .. ".block_count"]
  local function fail(msg) f:close(); return nil, in_path .. ": " .. msg end
  if not UNIFORM_LAYERS[arch] then
    return fail(string.format("prune.layers: %s layers differ by position (or are not known to be alike); "
                              .. "dropping one would change the others", tostring(arch)))
  end
  local lk = list_keys(f, arch)
  if lk then return fail("prune.layers: " .. lk .. " is a per-layer list (not renumbered)") end
  if math.type(n_layer) ~= "integer" or n_layer < 1 then return fail("no " .. arch .. ".block_count") end
  local drop = {}
  for _, l in ipairs(opts.drop) do
    if math.type(l) ~= "integer" or l < 0 or l >= n_layer then
      f:close()
      error(string.format("prune.layers: drop: %s is not a layer (0..%d)", tostring(l), n_layer - 1), 2)
    end
    drop[l] = true
  end
  local new_index, kept = {}, 0
  for l = 0, n_layer - 1 do
    if not drop[l] then new_index[l] = kept; kept = kept + 1 end
  end
  if kept == 0 then f:close(); error("prune.layers: every layer would be dropped", 2) end
  local ok, werr = experiment.write_gguf(f, out_path, function(info)
    local l, rest = info.name:match("^blk%.(%d+)%.(.*)$")
    if not l then return f:tensor(info.name) end
    l = tonumber(l)
    if drop[l] then return false end
    return f:tensor(info.name), "blk." .. new_index[l] .. "." .. rest
  end, { [arch .. ".block_count"] = { type = "u32", value = kept } })
  f:close()
  if not ok then return nil, werr end
  return true, kept
end

-- The Frobenius norm of rows [first, first + n) of a list of row norms.
local function span_norm(norms, first, n)
  local s = 0
  for i = first, first + n - 1 do s = s + norms[i] * norms[i] end
  return math.sqrt(s)
end

-- Rows of t (1-based list) copied as they are stored (any dtype: whole rows).
local function take_rows(t, idx)
  local o = tensor.zeros({ #idx, t:size(2) }, t:dtype())
  for j, i in ipairs(idx) do o:select(1, j):copy_(t:select(1, i)) end
  return o
end

--- attention_heads(in_path, out_path, {keep = fraction | n_head = count})
-- -> true, {n_head =, n_head_kv =, kept = {[layer] = {heads...}}} | nil, msg
-- Physically smaller, as ffn_channels: per layer the lowest-scoring query
-- heads are removed (rows of attn_q and its bias, columns of
-- attn_output) and a new GGUF written with attention.head_count lowered
-- and attention.key_length / value_length set to the head size (which no
-- longer follows from embedding_length / head_count). A head's score is
-- |q_h| |o_h| (Frobenius norms of its rows of attn_q and columns of
-- attn_output), times |k_h| |v_h| when every head has its own k/v
-- (head_count_kv = head_count): then k and v lose the same heads and
-- head_count_kv follows. With grouped k/v every group keeps the same number
-- of query heads (the count must stay a multiple of head_count_kv, and the
-- remaining heads of a group keep reading its k/v). Every layer keeps as
-- many heads (head_count is one key); which ones may differ. keep rounds
-- down (to a multiple of head_count_kv with groups), at least one per group.
function M.attention_heads(in_path, out_path, opts)
  if type(opts) ~= "table" then error("bad argument #3 to 'attention_heads' (table expected)", 2) end
  for k in pairs(opts) do
    if k ~= "keep" and k ~= "n_head" then
      error("prune.attention_heads: unknown option '" .. tostring(k) .. "' (keep, n_head)", 2)
    end
  end
  if (opts.keep == nil) == (opts.n_head == nil) then error("prune.attention_heads: give keep or n_head", 2) end
  if opts.keep ~= nil and (type(opts.keep) ~= "number" or opts.keep <= 0 or opts.keep > 1) then
    error("prune.attention_heads: keep must be a number in (0, 1]", 2)
  end
  local f, err = gguf.open(in_path)
  if not f then return nil, err end
  local function fail(msg) f:close(); return nil, in_path .. ": " .. msg end
  local arch = f.metadata["general.architecture"]
  if not SLICEABLE_HEADS[arch] then
    return fail("prune.attention_heads: " .. tostring(arch) .. " attention is not sliced (separate q/k/v/output "
                .. "with per-head norms only)")
  end
  local md = function(k) return f.metadata[arch .. "." .. k] end
  local H, L, E = md("attention.head_count"), md("block_count"), md("embedding_length")
  local KV = md("attention.head_count_kv") or H
  if math.type(H) ~= "integer" or math.type(KV) ~= "integer" or math.type(L) ~= "integer" or H < 1 or KV < 1
     or H % KV ~= 0 then
    return fail("prune.attention_heads: scalar head_count, head_count_kv and block_count expected")
  end
  local D = md("attention.key_length") or (math.type(E) == "integer" and E // H)
  local g = H // KV                       -- query heads per k/v group
  local mha = g == 1
  local gk                                -- query heads kept per group
  if opts.n_head then
    local n = opts.n_head
    if math.type(n) ~= "integer" or n < 1 or n > H or n % KV ~= 0 and not mha then
      f:close()
      error(string.format("prune.attention_heads: n_head must be an integer in 1..%d%s", H,
                          mha and "" or (", a multiple of head_count_kv " .. KV)), 2)
    end
    gk = mha and n or n // KV
  else
    gk = math.max(1, math.floor(opts.keep * (mha and H or g) + 1e-9))
  end
  local H2, KV2 = mha and gk or gk * KV, mha and gk or KV
  local new, kept = {}, {}
  for l = 0, L - 1 do
    local p = "blk." .. l .. "."
    local q, k, v, o = f:tensor(p .. "attn_q.weight"), f:tensor(p .. "attn_k.weight"), f:tensor(p .. "attn_v.weight"),
                       f:tensor(p .. "attn_output.weight")
    if not (q and k and v and o) then return fail("layer " .. l .. " has no attn_q/attn_k/attn_v/attn_output") end
    if q:size(1) ~= H * D or k:size(1) ~= KV * D or o:size(2) ~= H * D then
      return fail(string.format("layer %d: attn_q/attn_k/attn_output are not %d heads (%d kv) of %d", l, H, KV, D))
    end
    local ot = o:to("f32"):t():contiguous()            -- (H*D, dim): row i = column i of attn_output
    local nq, no = row_norms(q), row_norms(ot)
    local nk, nv = mha and row_norms(k), mha and row_norms(v)
    local score = {}
    for h = 0, H - 1 do
      score[h] = span_norm(nq, h * D + 1, D) * span_norm(no, h * D + 1, D)
      if mha then score[h] = score[h] * span_norm(nk, h * D + 1, D) * span_norm(nv, h * D + 1, D) end
    end
    -- the best gk heads of each group, in their order
    local heads = {}
    local groups = mha and 1 or KV
    local per = mha and H or g
    for j = 0, groups - 1 do
      local order = {}
      for h = j * per, (j + 1) * per - 1 do order[#order + 1] = h end
      table.sort(order, function(a, b) return score[a] > score[b] or (score[a] == score[b] and a < b) end)
      local best = table.move(order, 1, gk, 1, {})
      table.sort(best)
      table.move(best, 1, gk, #heads + 1, heads)
    end
    kept[l] = heads
    local rows = {}                                    -- 1-based rows of the kept heads
    for _, h in ipairs(heads) do
      for i = 1, D do rows[#rows + 1] = h * D + i end
    end
    new[p .. "attn_q.weight"] = take_rows(q, rows)
    new[p .. "attn_output.weight"] = requant(o:dtype(), gather_rows(ot, rows):t():contiguous())
    if mha then
      new[p .. "attn_k.weight"], new[p .. "attn_v.weight"] = take_rows(k, rows), take_rows(v, rows)
    end
    for _, b in ipairs { "attn_q", "attn_k", "attn_v" } do
      local bias = f:tensor(p .. b .. ".bias")
      if bias and (b == "attn_q" or mha) then
        local vals, out = values(bias), {}
        for j, r in ipairs(rows) do out[j] = vals[r] end
        new[p .. b .. ".bias"] = from_values(out, { #out }, bias:dtype())
      end
    end
  end
  local u32 = function(x) return { type = "u32", value = x } end
  local ok, werr = experiment.write_gguf(f, out_path, function(info)
    return new[info.name] or f:tensor(info.name)
  end, { [arch .. ".attention.head_count"] = u32(H2), [arch .. ".attention.head_count_kv"] = u32(KV2),
         [arch .. ".attention.key_length"] = u32(D), [arch .. ".attention.value_length"] = u32(D) })
  f:close()
  if not ok then return nil, werr end
  return true, { n_head = H2, n_head_kv = KV2, kept = kept }
end

return M
