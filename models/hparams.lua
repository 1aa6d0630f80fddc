--- Shared helpers of the attention model definitions (models/llama.lua,
-- models/gemma.lua): typed metadata reading, the hyper-parameters every
-- attention model has, weight getters with shape checks, and the session
-- state (KV cache + workspace) shaped by the model's layer plan.
--
-- Every key is read through the source's meta(), so the loader knows which
-- keys a definition understood (slm.model.check_coverage); every error names
-- the file and the key or tensor.
local blocks = require("slm.core").blocks

local M = {}

local KINDS = {
  int = function(v) return math.type(v) == "integer" end,
  num = function(v) return type(v) == "number" end,
  str = function(v) return type(v) == "string" end,
  bool = function(v) return type(v) == "boolean" end,
}
local KIND_NAMES = { int = "an integer", num = "a number", str = "a string", bool = "a boolean" }

--- reader(src) -> k with k.int/num/str/bool(name [, default]): the value of
-- `<arch>.<name>`, checked for its type; a missing key without a default is
-- an error (a list where one value belongs too). k.int_list(name, n [,
-- default]): a per-layer list of n integers, a single integer standing for
-- every layer (as the reference's get_key_or_arr). k.raw(name) returns the
-- value as stored (or nil).
function M.reader(src)
  local arch = src.arch
  local k = {}
  for kind, ok in pairs(KINDS) do
    k[kind] = function(name, default)
      local full = arch .. "." .. name
      local v = src.meta(full)
      if v == nil then
        if default == nil then error(string.format("%s: missing metadata %s", src.path, full), 0) end
        return default
      end
      if type(v) == "table" then
        error(string.format("%s: metadata %s holds a list (per-layer values are not supported)", src.path, full), 0)
      end
      if not ok(v) then
        error(string.format("%s: metadata %s is %s, expected %s", src.path, full, tostring(v), KIND_NAMES[kind]), 0)
      end
      return v
    end
  end
  k.int_list = function(name, n, default)
    local full = arch .. "." .. name
    local v = src.meta(full)
    if v == nil then v = default end
    if v == nil then error(string.format("%s: missing metadata %s", src.path, full), 0) end
    if math.type(v) == "integer" then
      local all = {}
      for i = 1, n do all[i] = v end
      return all
    end
    if type(v) ~= "table" then
      error(string.format("%s: metadata %s is %s, expected %d integers (one per layer)", src.path, full,
                          tostring(v), n), 0)
    end
    if #v ~= n then error(string.format("%s: metadata %s has %d entries for %d layers", src.path, full, #v, n), 0) end
    local out = {}
    for i = 1, n do
      if math.type(v[i]) ~= "integer" then
        error(string.format("%s: metadata %s holds %s, expected integers", src.path, full, tostring(v[i])), 0)
      end
      out[i] = v[i]
    end
    return out
  end
  k.raw = function(name) return src.meta(arch .. "." .. name) end
  return k
end

local function positive(src, arch, hp, names)
  for _, n in ipairs(names) do
    local v = hp[n[1]]
    if math.type(v) ~= "integer" or v < 1 or v > (n[2] or (1 << 24)) then
      error(string.format("%s: %s.%s is %s (expected 1..%d)", src.path, arch, n[3], tostring(v), n[2] or (1 << 24)), 0)
    end
  end
end

--- check_ranges(src, hp, {{field, key, min [, max]}, ...}): each integer
-- hp[field] (read from <arch>.<key>) lies in min..max (max default
-- 2^31 - 1, what the reference's 32-bit fields hold); an entry without min
-- is a number that must be positive and finite. Else an error naming the
-- file, the key and the value.
function M.check_ranges(src, hp, list)
  for _, c in ipairs(list) do
    local v, lo, hi = hp[c[1]], c[3], c[4] or 0x7fffffff
    if lo then
      if math.type(v) ~= "integer" or v < lo or v > hi then
        error(string.format("%s: %s.%s is %s (expected %d..%d)", src.path, src.arch, c[2], tostring(v), lo, hi), 0)
      end
    elseif not (type(v) == "number" and v > 0 and v < math.huge) then
      error(string.format("%s: %s.%s is %s (expected a positive number)", src.path, src.arch, c[2], tostring(v)), 0)
    end
  end
end

--- check_dim(src, hp, emb): the embedding emb is (vocab, hp.dim), so that
-- embedding_length is what the tensors hold.
function M.check_dim(src, hp, emb)
  if emb:dim() ~= 2 or emb:size(2) ~= hp.dim then
    error(string.format("%s: %s.embedding_length is %d, token_embd.weight has shape %s", src.path, hp.arch,
                        hp.dim, table.concat(emb:shape(), "x")), 0)
  end
end

--- check_ff(src, hp, key, name): hp.n_ff (from <arch>.<key>) is the inner
-- size of the down projection `name` (its last dimension: (dim, n_ff), or
-- (experts, dim, n_ff) for expert stacks) when the file has that tensor.
function M.check_ff(src, hp, key, name)
  if not src.has(name) then return end
  local shape = src.tensor(name):shape()
  if shape[#shape] ~= hp.n_ff then
    error(string.format("%s: %s.%s is %d, %s has shape %s", src.path, src.arch, key, hp.n_ff, name,
                        table.concat(shape, "x")), 0)
  end
end

--- check_heads(src, hp, derived): the head counts and size against the
-- projections of the first attention layer (q and k, or phi3's fused qkv),
-- so that a wrong count is named as such rather than by whatever size it
-- derives (derived: the head size is embedding_length / head_count).
function M.check_heads(src, hp, derived)
  local size = derived and string.format("%d (embedding_length / head_count)", hp.head_dim) or hp.head_dim
  local function rows(name, heads, want)
    local got = src.tensor(name):size(1)
    if got ~= want then
      error(string.format("%s: %s.%s with heads of %s needs %d rows in %s, it has %d", src.path, src.arch, heads,
                          size, want, name, got), 0)
    end
  end
  for l = 0, hp.n_layer - 1 do
    local p = "blk." .. l .. "."
    local n_kv = hp.n_head_kv_l and hp.n_head_kv_l[l + 1] or hp.n_head_kv
    if n_kv > 0 and src.has(p .. "attn_qkv.weight") then
      rows(p .. "attn_qkv.weight", string.format("attention.head_count %d and head_count_kv %d", hp.n_head, n_kv),
           (hp.n_head + 2 * n_kv) * hp.head_dim)
      return
    elseif n_kv > 0 and src.has(p .. "attn_q.weight") and src.has(p .. "attn_k.weight") then
      rows(p .. "attn_q.weight", "attention.head_count " .. hp.n_head, hp.n_head * hp.head_dim)
      rows(p .. "attn_k.weight", "attention.head_count_kv " .. n_kv, n_kv * hp.head_dim)
      return
    end
  end
end

--- The hyper-parameters every attention model reads, as the reference's
-- common loader does: sizes, heads, head size (attention.key_length /
-- value_length, default dim / heads), rotary dims, RoPE base, linear
-- scaling, the LongRoPE original context and attention factor. With
-- opts.kv_per_layer (hybrids: lfm2) attention.head_count_kv is a list,
-- hp.n_head_kv_l, whose 0 entries mark the layers without attention;
-- hp.n_head_kv is then its largest entry.
function M.attention(src, k, opts)
  local arch = src.arch
  local hp = {
    arch = arch,
    n_ctx_train = k.int("context_length", 2048),
    dim = k.int("embedding_length"),
    n_layer = k.int("block_count"),
    n_ff = k.int("feed_forward_length"),
    n_head = k.int("attention.head_count"),
    eps = k.num("attention.layer_norm_rms_epsilon", 1e-5),
    rope_base = k.num("rope.freq_base", 10000.0),
  }
  positive(src, arch, hp, { { "dim", nil, "embedding_length" }, { "n_layer", 4096, "block_count" },
                            { "n_ff", nil, "feed_forward_length" }, { "n_head", 4096, "attention.head_count" } })
  M.check_ranges(src, hp, { { "n_ctx_train", "context_length", 1 } })
  -- the width every other size derives from, against the embedding first
  if src.has("token_embd.weight") then M.check_dim(src, hp, src.tensor("token_embd.weight")) end
  local per_layer = opts and opts.kv_per_layer
  local kv = per_layer and k.int_list("attention.head_count_kv", hp.n_layer, hp.n_head)
             or { k.int("attention.head_count_kv", hp.n_head) }
  hp.n_head_kv = 0
  for _, v in ipairs(kv) do
    if not (per_layer and v == 0) then    -- 0 in a list: a layer without attention
      if v < 1 or v > 4096 then
        error(string.format("%s: %s.attention.head_count_kv is %d (expected 1..4096)", src.path, arch, v), 0)
      end
      if hp.n_head % v ~= 0 then
        error(string.format("%s: %s.attention.head_count %d is not a multiple of head_count_kv %d", src.path,
                            arch, hp.n_head, v), 0)
      end
    end
    hp.n_head_kv = math.max(hp.n_head_kv, v)
  end
  if per_layer then hp.n_head_kv_l = kv end
  -- experts (Mixtral's layout in a llama file, Qwen MoE, OLMoE): the
  -- definition builds MoE blocks when n_expert > 0 (see M.experts)
  hp.n_expert = k.int("expert_count", 0)
  hp.n_expert_used = k.int("expert_used_count", 0)
  if hp.n_expert < 0 or hp.n_expert > 256 or hp.n_expert_used < 0 or hp.n_expert_used > hp.n_expert
     or (hp.n_expert > 0 and hp.n_expert_used < 1) then
    error(string.format("%s: %s.expert_used_count %d of expert_count %d (expected 1..count, count <= 256)",
                        src.path, arch, hp.n_expert_used, hp.n_expert), 0)
  end
  if hp.n_expert == 0 then M.check_ff(src, hp, "feed_forward_length", "blk.0.ffn_down.weight") end
  hp.head_dim = k.int("attention.key_length", hp.dim // hp.n_head)
  if hp.head_dim > 4096 and k.raw("attention.key_length") == nil then
    error(string.format("%s: %s.embedding_length %d / attention.head_count %d gives heads of %d (expected 1..4096)",
                        src.path, arch, hp.dim, hp.n_head, hp.head_dim), 0)
  end
  positive(src, arch, hp, { { "head_dim", 4096, "attention.key_length" } })
  local vlen = k.int("attention.value_length", hp.head_dim)
  if vlen ~= hp.head_dim then
    error(string.format("%s: %s.attention.value_length %d differs from key_length %d (not supported)", src.path,
                        arch, vlen, hp.head_dim), 0)
  end
  M.check_heads(src, hp, k.raw("attention.key_length") == nil)
  hp.n_rot = k.int("rope.dimension_count", hp.head_dim)
  positive(src, arch, hp, { { "n_rot", hp.head_dim, "rope.dimension_count" } })
  if hp.n_rot % 2 ~= 0 then error(string.format("%s: %s.rope.dimension_count %d is odd", src.path, arch, hp.n_rot), 0) end
  local stype = k.str("rope.scaling.type", "none")
  local factor = k.num("rope.scaling.factor", 0)
  if stype == "linear" or stype == "none" or stype == "" then
    -- as the reference: a factor applies linearly whatever the type says
    -- when the type is none/linear (a factor of 0 or 1 is no scaling)
    hp.rope_scale = factor ~= 0 and 1 / factor or 1
  else
    error(string.format("%s: %s.rope.scaling.type '%s' is not supported (only linear)", src.path, arch, stype), 0)
  end
  hp.rope_attn_factor = k.num("rope.scaling.attn_factor", 1)
  for _, c in ipairs { { hp.rope_base, "rope.freq_base" }, { hp.eps, "attention.layer_norm_rms_epsilon" },
                       { hp.rope_attn_factor, "rope.scaling.attn_factor" } } do
    if not (c[1] > 0 and c[1] < math.huge) then
      error(string.format("%s: %s.%s is %s (expected a positive number)", src.path, arch, c[2], tostring(c[1])), 0)
    end
  end
  if not (factor >= 0 and factor < math.huge) then
    error(string.format("%s: %s.rope.scaling.factor is %s", src.path, arch, tostring(factor)), 0)
  end
  hp.n_ctx_orig = k.int("rope.scaling.original_context_length", hp.n_ctx_train)
  k.bool("rope.scaling.finetuned", false)         -- informational
  hp.vocab_size = k.int("vocab_size", 0)           -- checked against the embedding
  return hp
end

--- Refuses experts in a family without a MoE layout here.
function M.no_experts(src, hp)
  if hp.n_expert > 0 then
    error(string.format("%s: %s.expert_count is %d: slm has no %s mixture-of-experts layout", src.path, src.arch,
                        hp.n_expert, src.arch), 0)
  end
end

--- The routing of a MoE family as the reference fixes it: renormalize
-- (the selected weights divided by their sum), with the file's
-- expert_gating_func (1 softmax, 2 sigmoid; default softmax) and
-- expert_weights_scale. An expert_weights_norm key that contradicts the
-- family's fixed rule is refused (the reference does not read it for these
-- families, so such a file would be computed one way here and another there).
function M.experts(src, k, hp, renormalize)
  if hp.n_expert == 0 then return end
  local arch = src.arch
  local gf = k.int("expert_gating_func", 1)
  if gf ~= 1 and gf ~= 2 then
    error(string.format("%s: %s.expert_gating_func %d is not supported (1 softmax, 2 sigmoid)", src.path, arch, gf), 0)
  end
  hp.gating = gf == 2 and "sigmoid" or "softmax"
  hp.expert_scale = k.num("expert_weights_scale", 1)
  if not (hp.expert_scale > 0 and hp.expert_scale < math.huge) then
    error(string.format("%s: %s.expert_weights_scale is %s", src.path, arch, tostring(hp.expert_scale)), 0)
  end
  local norm = k.raw("expert_weights_norm")
  if norm ~= nil and k.bool("expert_weights_norm") ~= renormalize then
    error(string.format("%s: %s.expert_weights_norm is %s, but %s %s its expert weights", src.path, arch,
                        tostring(norm), arch, renormalize and "renormalizes" or "does not renormalize"), 0)
  end
  hp.norm_topk = renormalize
end

--- getters(src) -> w(name), opt(name), f32(name [, n]), vec(name, n): a
-- required tensor; an optional one (nil when absent); an optional vector as
-- f32 (converted when stored otherwise) of n values when n is given; a
-- required one.
function M.getters(src)
  local function w(name) return src.tensor(name) end
  local function opt(name) return src.has(name) and src.tensor(name) or nil end
  local function f32(name, n)
    local t = opt(name)
    if not t then return nil end
    if n and t:numel() ~= n then
      error(string.format("%s: tensor %s has %d values, expected %d", src.path, name, t:numel(), n), 0)
    end
    if t:dtype() ~= "f32" then t = t:to("f32") end
    return t
  end
  local function vec(name, n)
    return f32(name, n) or w(name)   -- (w raises: the tensor is missing)
  end
  return w, opt, f32, vec
end

--- Sets hp.n_vocab from the embedding (vocab, dim) and checks it against
-- the file's vocab_size and dim.
function M.check_vocab(src, hp, emb)
  M.check_dim(src, hp, emb)
  hp.n_vocab = emb:size(1)
  if hp.vocab_size and hp.vocab_size ~= 0 and hp.vocab_size ~= hp.n_vocab then
    error(string.format("%s: %s.vocab_size is %d, token_embd.weight has %d rows", src.path, hp.arch,
                        hp.vocab_size, hp.n_vocab), 0)
  end
end

--- block(src, p, make, args) -> make(args): a C block whose own check of
-- its weights names them within the layer ("ffn_gate: expected shape
-- 768x256, got 700x256"), made whole with the file and the prefix p (the
-- layer's "blk.1.", or "layer 1: " for blocks that name no tensor) when it
-- fails.
function M.block(src, p, make, args)
  local ok, b = pcall(make, args)
  if not ok then error(string.format("%s: %s%s", src.path, p, tostring(b)), 0) end
  if src.train_blocks then src.train_blocks[b] = { make = make, args = args, prefix = p } end
  return b
end

--- describe(m) -> a line saying what each run of layers does (from each
-- layer's `kind`, set by the definition) and the model's features
-- (m.features), for `slm info`: "0-4 window 4, rope 1e4; 5 rope 1e6 x1/8".
function M.describe(m)
  local runs, first = {}, 1
  for l = 1, #m.layers + 1 do
    local kind = m.layers[l] and m.layers[l].kind
    if l > 1 and (l > #m.layers or kind ~= m.layers[l - 1].kind) then
      local range = first == l - 1 and tostring(first - 1) or string.format("%d-%d", first - 1, l - 2)
      runs[#runs + 1] = range .. " " .. (m.layers[l - 1].kind or "attention")
      first = l
    end
  end
  local line = table.concat(runs, "; ")
  if m.features and #m.features > 0 then line = line .. " | " .. table.concat(m.features, ", ") end
  return line
end

--- The RoPE part of a layer's kind.
function M.rope_kind(base, scale, extra)
  local s = string.format("rope %g", base)
  if scale and scale ~= 1 then s = s .. string.format(" x1/%g", 1 / scale) end
  if extra and extra ~= "" then s = s .. " " .. extra:gsub("^ ", "") end
  return s
end

--- The session state of a model built of attention layers: a KV cache
-- with one slot per step of m.plan, shaped as that step's layer (kv_dim,
-- window), and a workspace as large as the largest block needs for
-- opts.n_batch rows. opts.swa_ring = false keeps windowed layers whole;
-- opts.kv_type is the rows' type (nil: f16).
function M.kv_state(m, opts)
  local layers = {}
  for step, l in ipairs(m.plan) do
    local L = m.layers[l]
    layers[step] = { kv_dim = L.kv_dim, window = L.window or 0, head_dim = m.hp.head_dim }
  end
  local kv = blocks.kv_state { n_ctx = opts.n_ctx, n_batch = opts.n_batch, layers = layers,
                               ring = opts.swa_ring ~= false, type = opts.kv_type }
  local bytes = 0
  for _, L in ipairs(m.layers) do
    for _, b in pairs { L.attn, L.attn_long, L.ffn, L.moe } do bytes = math.max(bytes, b:work_size(opts.n_batch)) end
  end
  return kv, blocks.workspace(bytes)
end

return M
