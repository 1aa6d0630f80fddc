--- slm.quantize: a quantized copy of a model file, the one quantizer behind
-- `slm quantize IN OUT TYPE` and slm.quantize(...).
--
--   slm.quantize(in_path, out_path, what [, opts]) -> true, counts | nil, msg
--
-- what is
--   * a file type, as the reference's quantizer (llama-quantize) names
--     them: "q4_k_m", "q5_k_m", "q3_k_m", "q2_k", "q6_k", "q4_0", "q8_0",
--     "f16" ... (slm.quantize.file_types, from slm.core.file_types). Every
--     tensor gets the dtype the reference gives it for that choice: its
--     per-tensor mixture (below) and its fallbacks;
--   * a dtype that is no file type ("q4_k", "q5_k", "q3_k"): every tensor
--     the reference would quantize gets that dtype (with fallbacks);
--   * a policy function(name, info) -> dtype | nil (nil keeps the tensor as
--     stored); info = {name =, dtype =, shape = (outermost first), bytes =}.
--     A dtype whose blocks do not divide the tensor's rows is an error
--     naming the tensor.
-- opts.pure = true: a file type gives every quantizable tensor its main
-- dtype, no mixture (llama-quantize --pure). opts.progress(done, total):
-- called after each tensor with counts of elements.
-- counts: {dtype = number of tensors}. Misuse (an unknown type, a policy
-- giving a dtype that does not fit) raises; a missing or malformed input and
-- write failures return nil, msg.
--
-- GGUF files are written as the reference writes them: the metadata copied
-- in file order, general.quantization_version (2) and general.file_type
-- appended last, the tensors in the reference's order (by layer number,
-- then name; the others first) without outer dimensions of 1, so for the same input and file type the
-- output is the reference's file byte for byte (slm's quantizers are the
-- reference's, byte for byte). rwkv.cpp files are rewritten in their own
-- format (slm.core.rwkvcpp.write, version 101): the 2-D matrices of the
-- blocks get the type, as rwkv.cpp's quantizer does; the embeddings, head
-- and the rest stay as stored. Both writers write OUT.tmp and rename it,
-- so OUT may be IN.
--
-- The mixture (the reference's llama_tensor_get_type, src/llama-quant.cpp,
-- for the families slm reads):
--   which tensors: 2-D or 3-D `*weight` tensors except norms, the MoE
--     router (ffn_gate_inp), BERT's position and token-type embeddings,
--     Mamba's conv1d, LFM2's short conv taps and RWKV's small mixing and
--     low-rank matrices;
--   output.weight (token_embd.weight when the head is tied): q6_k, or q8_0
--     when its rows are not whole blocks of the main dtype (q8_0 files keep
--     q8_0);
--   attention values (attn_v, fused attn_qkv), counted in layer order as
--     i of n: q2_k files q4_k when n_head >= 4 n_head_kv else q3_k; q3_k_m
--     q5_k for the first two, q4_k after; q3_k_l q5_k; q4_k_m and q5_k_m
--     q6_k where more_bits(i, n); q4_k_s q5_k for the first four; 70B
--     llama/qwen2 models (80 layers) q5_k instead of q3_k/q4_k; models of 8
--     experts q8_0;
--   attn_k of models of 8 experts: q8_0;
--   ffn_down (layer i of n, from the name when the model has experts):
--     q2_k q3_k; q3_k_m q5_k in the first n/16 layers, q4_k after; q3_k_l
--     q5_k; q4_k_m and q5_k_m q6_k where more_bits(i, n); q4_k_s q5_k in
--     the first n/8;
--   attn_output: models of 8 experts q5_k (q2_k, q3_k_s, q3_k_m, q4_k_s,
--     q4_k_m); others q2_k q3_k, q3_k_m q4_k, q3_k_l q5_k;
-- where more_bits(i, n) = i < n/8 or i >= 7n/8 or (i - n/8) % 3 == 2.
-- Then every K-quant row that is not whole super-blocks falls back
-- (slm.core.dtype_for_row). The reference refuses a 32-element type whose
-- rows are not whole blocks; slm keeps those rows f16.
local core = require "slm.core"
local gguf = require "slm.gguf"

local M = {}

--- file_types: the file type names, in the order of their general.file_type
M.file_types = {}
for name in pairs(core.file_types) do M.file_types[#M.file_types + 1] = name end
table.sort(M.file_types, function(a, b) return core.file_types[a].id < core.file_types[b].id end)

-- dtypes a model file's weights come in (those with a general.file_type)
local function weight_dtype(dt) return core.dtypes[dt] ~= nil and core.dtypes[dt].file_type ~= nil end

--- names(): every name `what` may be, for messages and usage lines
function M.names()
  local out = table.move(M.file_types, 1, #M.file_types, 1, {})
  local extra = {}
  for dt in pairs(core.dtypes) do
    if weight_dtype(dt) and not core.file_types[dt] then extra[#extra + 1] = dt end
  end
  table.sort(extra)
  return table.move(extra, 1, #extra, #out + 1, out)
end

-- ggml_n_dims: dimensions up to the last one above 1 (shape outermost first)
local function n_dims(shape)
  local lead = 0
  while lead < #shape - 1 and shape[lead + 1] == 1 do lead = lead + 1 end
  return #shape - lead
end

-- Name parts of tensors the reference never quantizes.
local KEPT = { "_norm.weight", "ffn_gate_inp.weight", "ssm_conv1d", "shortconv.conv.weight" }
for _, p in ipairs { "first", "w0", "w1", "w2", "v0", "v1", "v2", "a0", "a1", "a2", "g1", "g2", "decay_w1",
                     "decay_w2", "lerp_fused" } do
  KEPT[#KEPT + 1] = "time_mix_" .. p .. ".weight"
end
local KEPT_NAMES = { ["position_embd.weight"] = true, ["token_types.weight"] = true }

--- quantizable(name, shape) -> whether the reference quantizes this tensor
function M.quantizable(name, shape)
  if n_dims(shape) < 2 or name:sub(-6) ~= "weight" or KEPT_NAMES[name] then return false end
  for _, p in ipairs(KEPT) do
    if name:find(p, 1, true) then return false end
  end
  return true
end

-- The reference's tensor categories, by name.
local function category(name)
  if name == "output.weight" then return "output" end
  if name == "token_embd.weight" then return "token_embd" end
  local function has(s) return name:find(s, 1, true) ~= nil end
  if has("attn_qkv.weight") or has("attn_kv_b.weight") or has("attn_v.weight") then return "attn_v" end
  if has("attn_k.weight") then return "attn_k" end
  if has("attn_q.weight") then return "attn_q" end
  if has("attn_output.weight") then return "attn_output" end
  if has("ffn_up") then return "ffn_up" end
  if has("ffn_gate") then return "ffn_gate" end
  if has("ffn_down") then return "ffn_down" end
  return "other"
end

local function layer_of(name) return tonumber(name:match("^blk%.(%d+)%.")) end

--- order(names) -> the names in the reference's order: layer number, then
-- name; tensors outside the layers first
function M.order(names)
  local out = table.move(names, 1, #names, 1, {})
  table.sort(out, function(a, b)
    local la, lb = layer_of(a) or -1, layer_of(b) or -1
    if la ~= lb then return la < lb end
    return a < b
  end)
  return out
end

local function more_bits(i, n) return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2 end

-- What the mixture needs to know of the model (hparams the reference reads).
local function model_facts(f, names)
  local arch = f:get("general.architecture") or "?"
  local function first(key, default)
    local v = f:get(arch .. "." .. key)
    if type(v) == "table" then v = v[1] end
    return math.tointeger(v) or default
  end
  local n_head = first("attention.head_count", 0)
  local n_head_kv = first("attention.head_count_kv", n_head)
  local m = { arch = arch, n_layer = first("block_count", 0), n_expert = first("expert_count", 0), tied = true,
              n_attn_v = 0 }
  m.n_gqa = n_head_kv > 0 and n_head // n_head_kv or 0
  m.is_70b = m.n_layer == 80 and (arch == "qwen2" or arch == "llama" and m.n_expert == 0 and n_head ~= n_head_kv)
  for _, name in ipairs(names) do
    local c = category(name)
    if c == "output" then m.tied = false end
    if c == "attn_v" then m.n_attn_v = m.n_attn_v + 1 end
  end
  return m
end

-- The mixture for file type ft (main dtype base) of one tensor, given the
-- running counts st.
local function mixture(ft, base, name, cols, m, st)
  local c = category(name)
  if c == "output" or (m.tied and c == "token_embd") then
    if cols % core.dtypes[base].block_size ~= 0 then return "q8_0" end
    return base == "q8_0" and "q8_0" or "q6_k"
  end
  local dt = base
  if c == "attn_v" then
    local i, n = st.attn_v, m.n_attn_v
    st.attn_v = i + 1
    if ft == "q2_k" then dt = m.n_gqa >= 4 and "q4_k" or "q3_k"
    elseif ft == "q3_k_m" then dt = i < 2 and "q5_k" or "q4_k"
    elseif ft == "q3_k_l" then dt = "q5_k"
    elseif (ft == "q4_k_m" or ft == "q5_k_m") and more_bits(i, n) then dt = "q6_k"
    elseif ft == "q4_k_s" and i < 4 then dt = "q5_k"
    end
    if m.is_70b and (dt == "q3_k" or dt == "q4_k") then dt = "q5_k" end
    if m.n_expert == 8 then dt = "q8_0" end
  elseif c == "attn_k" then
    if m.n_expert == 8 then dt = "q8_0" end
  elseif c == "ffn_down" then
    local i = st.ffn_down
    st.ffn_down = i + 1
    if m.n_expert > 1 then i = layer_of(name) end
    if not i or i >= m.n_layer then
      error(string.format("quantize: %s is not in a layer 0..%d", name, m.n_layer - 1), 0)
    end
    local n = m.n_layer
    if ft == "q2_k" then dt = "q3_k"
    elseif ft == "q3_k_m" then dt = i < n // 16 and "q5_k" or "q4_k"
    elseif ft == "q3_k_l" then dt = "q5_k"
    elseif (ft == "q4_k_m" or ft == "q5_k_m") and more_bits(i, n) then dt = "q6_k"
    elseif ft == "q4_k_s" and i < n // 8 then dt = "q5_k"
    end
  elseif c == "attn_output" then
    if m.n_expert == 8 then
      if ft == "q2_k" or ft == "q3_k_s" or ft == "q3_k_m" or ft == "q4_k_s" or ft == "q4_k_m" then dt = "q5_k" end
    elseif ft == "q2_k" then dt = "q3_k"
    elseif ft == "q3_k_m" then dt = "q4_k"
    elseif ft == "q3_k_l" then dt = "q5_k"
    end
  end
  return dt
end

--- plan(file, what [, opts]) -> {name = dtype} for every tensor of an open
-- GGUF file (what: a file type or dtype name, as for slm.quantize)
function M.plan(f, what, opts)
  local ft, base = core.file_types[what], what
  if ft then base = ft.dtype end
  if not weight_dtype(base) then
    error(string.format("quantize: unknown type '%s' (one of %s)", tostring(what), table.concat(M.names(), " ")), 0)
  end
  local names = {}
  for i, info in ipairs(f.tensors) do names[i] = info.name end
  names = M.order(names)
  local m = model_facts(f, names)
  local quantized = core.dtypes[base].quantized
  local mix = ft and quantized and not (opts and opts.pure)
  local st = { attn_v = 0, ffn_down = 0 }
  local out = {}
  for _, name in ipairs(names) do
    local info = f:info(name)
    local cols = info.shape[#info.shape]
    local dt = info.dtype
    if M.quantizable(name, info.shape) then
      dt = mix and mixture(what, base, name, cols, m, st) or base
      if quantized then dt = core.dtype_for_row(dt, cols) end
    end
    out[name] = dt
  end
  return out, names
end

-- A policy function's choices, checked.
local function plan_of_policy(f, policy)
  local out, names = {}, {}
  for i, info in ipairs(f.tensors) do
    names[i] = info.name
  end
  for _, info in ipairs(f.tensors) do
    local dt = policy(info.name, info) or info.dtype
    local d = core.dtypes[dt]
    if not d then error(string.format("quantize: policy gave '%s' for %s", tostring(dt), info.name), 0) end
    local cols = info.shape[#info.shape]
    if dt ~= info.dtype and cols % d.block_size ~= 0 then
      error(string.format("quantize: %s rows of %d do not fit %s blocks of %d", info.name, cols, dt,
                          d.block_size), 0)
    end
    out[info.name] = dt
  end
  return out, M.order(names)
end

-- general.file_type of a written file: the file type asked for, or the one
-- of the dtype that holds most of the weights (2-D and up).
local function file_type_of(what, f, want)
  if type(what) == "string" and core.file_types[what] then return core.file_types[what].id end
  local weight = {}
  for _, info in ipairs(f.tensors) do
    if #info.shape >= 2 then
      local dt = want[info.name]
      weight[dt] = (weight[dt] or 0) + f:tensor(info.name):numel()
    end
  end
  local major, most = nil, -1
  for dt, n in pairs(weight) do
    if n > most or (n == most and dt < major) then major, most = dt, n end
  end
  return major and core.dtypes[major].file_type
end

local function quantize_gguf(in_path, out_path, what, opts)
  local f, err = gguf.open(in_path)
  if not f then return nil, err end
  local ok, want, names = pcall(function()
    if type(what) == "function" then return plan_of_policy(f, what) end
    return M.plan(f, what, opts)
  end)
  if not ok then
    f:close()
    error(want, 0)
  end
  local meta = {}
  for _, k in ipairs(f.keys) do
    if k ~= "general.file_type" and k ~= "general.quantization_version" then
      meta[#meta + 1] = { k, f:typed(k) }
    end
  end
  meta[#meta + 1] = { "general.quantization_version", { type = "u32", value = 2 } }
  local ftype = file_type_of(what, f, want)
  if ftype then meta[#meta + 1] = { "general.file_type", { type = "u32", value = ftype } } end
  local total = f:nparams()
  local tensors, counts, done = {}, {}, 0
  for i, name in ipairs(names) do
    local info = f:info(name)
    local t, dt = f:tensor(name), want[name]
    done = done + t:numel()
    if dt ~= info.dtype then t = t:to(dt) end
    -- outer dimensions of 1 are dropped, as ggml writes a tensor's n_dims
    local nd = n_dims(info.shape)
    if nd < #info.shape then t = t:reshape(table.move(info.shape, #info.shape - nd + 1, #info.shape, 1, {})) end
    tensors[i] = { name = name, tensor = t }
    counts[dt] = (counts[dt] or 0) + 1
    if opts and opts.progress then opts.progress(done, total) end
  end
  -- the alignment as the source has it: general.alignment copied, or none (32)
  local wok, werr = gguf.write(out_path, { metadata = meta, tensors = tensors })
  f:close()
  if not wok then return nil, werr end
  return true, counts
end

local function quantize_rwkvcpp(in_path, out_path, what, opts)
  local m, err = core.rwkvcpp.open(in_path)
  if not m then return nil, err end
  local ids = core.rwkvcpp.type_ids
  local held = {}
  for dt in pairs(ids) do held[#held + 1] = dt end
  table.sort(held, function(a, b) return ids[a] < ids[b] end)
  local function refuse(dt)
    error(string.format("quantize: rwkv.cpp files hold only %s (not %s)", table.concat(held, ", "), dt), 0)
  end
  local base = what
  if type(what) == "string" then
    local ft = core.file_types[what]
    base = ft and ft.dtype or what
    if not ids[base] then refuse(what) end
  end
  local total = 0
  for _, n in ipairs(m.names) do total = total + m.tensors[n]:numel() end
  local params, counts, done = {}, {}, 0
  for i, name in ipairs(m.names) do
    local t = m.tensors[name]
    local shape = t:shape()
    local dt = t:dtype()
    if type(what) == "function" then
      dt = what(name, { name = name, dtype = dt, shape = shape, bytes = t:nbytes() }) or dt
      if not ids[dt] then refuse(dt) end
    elseif #shape == 2 and name:match("^blocks%.%d+%..*%.weight$") then
      dt = core.dtype_for_row(base, shape[2])
      if not ids[dt] then dt = "f16" end
    end
    if dt ~= t:dtype() then t = t:to(dt) end
    params[i] = { name = name, tensor = t }
    counts[dt] = (counts[dt] or 0) + 1
    done = done + t:numel()
    if opts and opts.progress then opts.progress(done, total) end
  end
  local h = m.header
  local data_type = type(what) == "string" and ids[base] or h.data_type
  local ok, werr = core.rwkvcpp.write(out_path, { n_vocab = h.n_vocab, n_embed = h.n_embed, n_layer = h.n_layer,
                                                  data_type = data_type }, params)
  if not ok then return nil, werr end
  return true, counts
end

--- quantize(in_path, out_path, what [, opts]) -> true, counts | nil, msg (see the
-- header; slm.quantize(...) calls it)
function M.quantize(in_path, out_path, what, opts)
  if type(in_path) ~= "string" then error("bad argument #1 to 'quantize' (string expected)", 2) end
  if type(out_path) ~= "string" then error("bad argument #2 to 'quantize' (string expected)", 2) end
  if type(what) ~= "string" and type(what) ~= "function" then
    error("bad argument #3 to 'quantize' (type name or policy function expected)", 2)
  end
  if type(what) == "string" and not core.file_types[what] and not weight_dtype(what) then
    error(string.format("quantize: unknown type '%s' (one of %s)", what, table.concat(M.names(), " ")), 2)
  end
  -- rwkv.cpp files start with the bytes of 0x67676d66; anything else goes to the GGUF reader
  local fh = io.open(in_path, "rb")
  local rwkvcpp = fh and fh:read(4) == "fmgg"
  if fh then fh:close() end
  if rwkvcpp then return quantize_rwkvcpp(in_path, out_path, what, opts) end
  return quantize_gguf(in_path, out_path, what, opts)
end

return setmetatable(M, { __call = function(_, ...) return M.quantize(...) end })
