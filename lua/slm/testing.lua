--- slm.testing: tools for tests and benchmarks.
--
--   slm.testing.random_model{path = "/tmp/m.gguf", arch = "llama", dtype = "q8_0",
--     vocab = 49152, dim = 576, n_layer = 30, n_head = 9, n_head_kv = 3, n_ff = 1536,
--     tied = true, seed = 1, ctx = 2048} -> path
-- writes a GGUF with random weights (normal, std 0.02 or `std`; norms uniform
-- in [0.9, 1.1)) quantized by slm's reference quantizers, plus a small
-- byte-level vocabulary when vocab >= 259. Tensors whose row length is not a
-- multiple of the dtype's block fall back as the reference quantizer does (a
-- K-quant to q5_0/q8_0). Each family is written in the layout the
-- reference's converter (convert_hf_to_gguf.py) gives the real checkpoints:
-- its metadata keys, tensor names and shapes, so that the reference loads
-- the file with no tensor missing or left over.
--
-- Options of every family (defaults in brackets): vocab [512], dim [64],
-- n_layer [2], n_head [4], n_head_kv [n_head], head_dim [dim / n_head],
-- n_ff [4 dim], ctx (context_length) [as the family], eps, rope_base [as the
-- family], tied [false, except gemma2/gemma3/phi3], seed [1], std [0.02],
-- name ["slm-random"], dtype ["f16"].
--
-- | arch      | writes                                                         |
-- | --------- | -------------------------------------------------------------- |
-- | "llama"   | llama (the default; same bytes as before the families existed) |
-- | "llama3"  | llama + rope_freqs.weight from rope_factor [8], low_freq_factor [1], high_freq_factor [4], original_ctx [8192]; rope_base [5e5] |
-- | "qwen3"   | attn_q_norm/attn_k_norm (head_dim), key/value_length, no rope.dimension_count; rope_base [1e6], eps [1e-6] |
-- | "gemma3"  | q/k norms, post_attention_norm/post_ffw_norm, window [512], rope_base [1e6] (global), rope_base_swa [1e4], rope_scale (linear factor, [none]), final_softcap [none] |
-- | "gemma2"  | post norms, attn_softcap [50], final_softcap [30], window [4096]; no rope.freq_base; always tied |
-- | "phi3"    | Phi-4-mini: attn_qkv, ffn_up = gate then up (2 n_ff rows), rope_dim [3/4 of the head], rope_factors_long/short (lists, [random]), original_ctx [4096], rope.scaling.attn_factor, window [262144 as Phi-4-mini, which the reader ignores with a warning; 0 as a config without one] |
-- | "smollm3" | the llama layout under its own name; rope_base [5e6], eps [1e-6] |
-- | "granite" | attention_scale [1/head_dim], embedding_scale [12], residual_scale [0.22], logit_scale [8] |
--
-- Gemma checkpoints multiply by 1 + w in their RMSNorm and the converter
-- stores 1 + w, so a norm near 1 is what a gemma file holds too. Which
-- gemma layers slide (period 6 for gemma3, 2 for gemma2) and which smollm3
-- layers skip RoPE (every 4th) has no key: the converter writes none and the
-- reference fixes them per architecture.
local core = require "slm.core"
local gguf = require "slm.gguf"
local tensor = require "slm.tensor"

local M = {}

M.randn = core.testing.randn
M.rand = core.testing.rand


--- vocab_metadata(n) -> list of {key, value} GGUF metadata pairs: a
-- SentencePiece-style vocabulary of n >= 259 tokens (<unk> <s> </s>, the 256
-- byte tokens <0x00>..<0xFF>, then filler pieces), so that slm's tokenizer
-- and the reference can both load a random model whatever its architecture
-- (the reference refuses a file without tokenizer.ggml.model).
function M.vocab_metadata(n)
  assert(n >= 259, "vocab_metadata: needs room for 3 specials and 256 byte tokens")
  local tokens, scores, types = { "<unk>", "<s>", "</s>" }, { 0, 0, 0 }, { 2, 3, 3 }
  for b = 0, 255 do
    tokens[#tokens + 1] = string.format("<0x%02X>", b)
    scores[#scores + 1] = 0
    types[#types + 1] = 6
  end
  for i = #tokens + 1, n do
    tokens[i] = "\u{2581}t" .. i
    scores[i] = -i
    types[i] = 1
  end
  return {
    { "tokenizer.ggml.model", "llama" },
    { "tokenizer.ggml.tokens", { type = "str", value = tokens } },
    { "tokenizer.ggml.scores", { type = "f32", value = scores } },
    { "tokenizer.ggml.token_type", { type = "i32", value = types } },
    { "tokenizer.ggml.bos_token_id", { type = "u32", value = 1 } },
    { "tokenizer.ggml.eos_token_id", { type = "u32", value = 2 } },
    { "tokenizer.ggml.unknown_token_id", { type = "u32", value = 0 } },
  }
end

-- float32 rounding of a Lua number (the converter computes in float32)
local function f32(x) return (string.unpack("<f", string.pack("<f", x))) end

--- llama3_rope_freqs{head_dim =, rope_base =, rope_factor =, low_freq_factor =,
-- high_freq_factor =, original_ctx =} -> list of head_dim / 2 factors f_i:
-- the angle of pair i is divided by f_i. The Llama-3 formula as the
-- converter (LlamaModel.generate_extra_tensors) applies it for rope_type
-- "llama3": f = 1 for wavelengths under original_ctx / high_freq_factor,
-- rope_factor above original_ctx / low_freq_factor, and a smooth blend
-- between. The frequencies are float32 (the converter's torch.arange tensor
-- is), the blend is computed in double and stored as float32: this gives
-- fixtures/gguf2/llama3's rope_freqs.weight bit for bit (rounding every step
-- to float32 moves 3 of its 32 values by an ulp).
function M.llama3_rope_freqs(o)
  local dim, base = o.head_dim, o.rope_base or 5e5
  local factor, low, high = o.rope_factor or 8.0, o.low_freq_factor or 1.0, o.high_freq_factor or 4.0
  local old_ctx = o.original_ctx or 8192
  local low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
  local out = {}
  for i = 0, dim - 1, 2 do
    local freq = f32(1 / f32(base ^ f32(i / dim)))
    local wavelen = 2 * math.pi / freq
    if wavelen < high_wavelen then
      out[#out + 1] = 1.0
    elseif wavelen > low_wavelen then
      out[#out + 1] = factor
    else
      local smooth = (old_ctx / wavelen - low) / (high - low)
      out[#out + 1] = f32(1 / ((1 - smooth) / factor + smooth))
    end
  end
  return out
end

local function u32(v) return { type = "u32", value = v } end
local function f32v(v) return { type = "f32", value = v } end

-- The families: general.architecture, the defaults of the real models, and
-- the metadata each one's converter class writes, in its order (h: the
-- resolved hyper-parameters, put(key, value) prefixes the architecture).
-- Keys of the generic writer (TextModel.set_gguf_parameters) come first.
local FAMILY = {}

-- The shape, first in every converter's list but phi3's.
local function shape_keys(put, h)
  put("context_length", u32(h.ctx))
  put("embedding_length", u32(h.dim))
  put("block_count", u32(h.n_layer))
  put("feed_forward_length", u32(h.n_ff))
  put("attention.head_count", u32(h.n_head))
  put("attention.head_count_kv", u32(h.n_head_kv))
end

-- LlamaModel (llama, llama3, smollm3, granite): vocab_size and
-- rope.dimension_count = head_dim; key/value_length only when the config
-- has a head_dim (here: when it differs from dim / n_head).
local function llama_keys(put, h)
  shape_keys(put, h)
  put("rope.dimension_count", u32(h.head_dim))
  put("rope.freq_base", f32v(h.rope_base))
  put("attention.layer_norm_rms_epsilon", f32v(h.eps))
  put("vocab_size", u32(h.vocab))
  if h.head_dim ~= h.dim // h.n_head then
    put("attention.key_length", u32(h.head_dim))
    put("attention.value_length", u32(h.head_dim))
  end
end

FAMILY.llama = { gguf = "llama", ctx = 2048, eps = 1e-5, rope_base = 1e4, keys = llama_keys }
FAMILY.llama3 = { gguf = "llama", ctx = 131072, eps = 1e-5, rope_base = 5e5, keys = llama_keys,
                  rope_freqs = true }
FAMILY.smollm3 = { gguf = "smollm3", ctx = 65536, eps = 1e-6, rope_base = 5e6, keys = llama_keys }
FAMILY.granite = {
  gguf = "granite", ctx = 131072, eps = 1e-5, rope_base = 1e4, fixed_head = true,
  keys = function(put, h, o)
    llama_keys(put, h)
    -- GraniteModel: the config's *_multiplier / logits_scaling, renamed
    put("attention.scale", f32v(o.attention_scale or 1 / h.head_dim))
    put("embedding_scale", f32v(o.embedding_scale or 12.0))
    put("residual_scale", f32v(o.residual_scale or 0.22))
    put("logit_scale", f32v(o.logit_scale or 8.0))
  end,
}

-- Qwen3Model: the generic keys plus key/value_length from head_dim; no
-- rope.dimension_count (the reader takes n_rot = key_length).
local function generic_keys(put, h)
  shape_keys(put, h)
  put("attention.layer_norm_rms_epsilon", f32v(h.eps))
end

FAMILY.qwen3 = {
  gguf = "qwen3", ctx = 40960, eps = 1e-6, rope_base = 1e6, qk_norm = true,
  keys = function(put, h)
    generic_keys(put, h)
    put("rope.freq_base", f32v(h.rope_base))
    put("attention.key_length", u32(h.head_dim))
    put("attention.value_length", u32(h.head_dim))
  end,
}

-- Qwen3MoeModel (Qwen2MoeModel's writer): Qwen3's keys, then the generic
-- expert_count / expert_used_count and the experts' own width; every layer
-- a MoE block (router ffn_gate_inp kept F32, 3-D ffn_*_exps stacks).
FAMILY.qwen3moe = {
  gguf = "qwen3moe", ctx = 40960, eps = 1e-6, rope_base = 1e6, qk_norm = true, experts = true,
  keys = function(put, h)
    generic_keys(put, h)
    put("rope.freq_base", f32v(h.rope_base))
    put("attention.key_length", u32(h.head_dim))
    put("attention.value_length", u32(h.head_dim))
    put("expert_count", u32(h.n_expert))
    put("expert_used_count", u32(h.n_expert_used))
    put("expert_feed_forward_length", u32(h.n_ff_exp))
  end,
}

-- Gemma3Model: rope.scaling.* only when the config scales RoPE (linear),
-- freq_base for the global layers and freq_base_swa for the sliding ones;
-- final_logit_softcapping only when set; sliding_window.
FAMILY.gemma3 = {
  gguf = "gemma3", ctx = 32768, eps = 1e-6, rope_base = 1e6, qk_norm = true, post_norm = true,
  tied = true,
  keys = function(put, h, o)
    generic_keys(put, h)
    if o.rope_scale then
      put("rope.scaling.type", "linear")
      put("rope.scaling.factor", f32v(o.rope_scale))
    end
    put("rope.freq_base", f32v(h.rope_base))
    put("rope.freq_base_swa", f32v(o.rope_base_swa or 1e4))
    put("attention.key_length", u32(h.head_dim))
    put("attention.value_length", u32(h.head_dim))
    if o.final_softcap then put("final_logit_softcapping", f32v(o.final_softcap)) end
    put("attention.sliding_window", u32(o.window or 512))
  end,
}

-- Gemma2Model writes its own short list: no rope.freq_base (the reader's
-- default 1e4), both soft caps and the window; its reader always ties the
-- head to token_embd.
FAMILY.gemma2 = {
  gguf = "gemma2", ctx = 8192, eps = 1e-6, post_norm = true, tied = true, always_tied = true,
  keys = function(put, h, o)
    generic_keys(put, h)
    put("attention.key_length", u32(h.head_dim))
    put("attention.value_length", u32(h.head_dim))
    put("attn_logit_softcapping", f32v(o.attn_softcap or 50.0))
    put("final_logit_softcapping", f32v(o.final_softcap or 30.0))
    put("attention.sliding_window", u32(o.window or 4096))
  end,
}

-- Phi3MiniModel as for Phi-4-mini: partial rotary (rope.dimension_count =
-- int(0.75 dim) / n_head), the original context, the LongRoPE attention
-- factor sqrt(1 + ln(ctx / original) / ln(original)) (1 when ctx <=
-- original), and sliding_window (262144 in Phi-4-mini's config; the reader
-- ignores it for phi3 with a warning). No rope.scaling.type.
FAMILY.phi3 = {
  gguf = "phi3", ctx = 131072, eps = 1e-5, rope_base = 1e4, fused = true, tied = true,
  fixed_head = true, rope_factors = true,
  keys = function(put, h, o)
    local scale = h.ctx / h.original_ctx
    local attn_factor = scale > 1 and math.sqrt(1 + math.log(scale) / math.log(h.original_ctx)) or 1.0
    put("context_length", u32(h.ctx))
    put("rope.scaling.original_context_length", u32(h.original_ctx))
    put("embedding_length", u32(h.dim))
    put("feed_forward_length", u32(h.n_ff))
    put("block_count", u32(h.n_layer))
    put("attention.head_count", u32(h.n_head))
    put("attention.head_count_kv", u32(h.n_head_kv))
    put("attention.layer_norm_rms_epsilon", f32v(h.eps))
    put("rope.dimension_count", u32(h.rope_dim))
    put("rope.freq_base", f32v(h.rope_base))
    put("attention.sliding_window", u32(o.window or 262144))
    put("rope.scaling.attn_factor", f32v(attn_factor))
  end,
}

M.families = {}
for name in pairs(FAMILY) do M.families[#M.families + 1] = name end
table.sort(M.families)

-- The hyper-parameters of o with the family's defaults; raises on a shape
-- the family's reader cannot take.
local function hparams(o, fam, arch)
  local function fail(msg) error("random_model{arch = '" .. arch .. "'}: " .. msg, 3) end
  local h = {
    vocab = o.vocab or 512, dim = o.dim or 64, n_layer = o.n_layer or 2, n_head = o.n_head or 4,
    ctx = o.ctx or fam.ctx, eps = o.eps or fam.eps, rope_base = o.rope_base or fam.rope_base,
  }
  h.n_head_kv = o.n_head_kv or o.n_head or 4
  h.n_ff = o.n_ff or 4 * h.dim
  h.head_dim = o.head_dim or h.dim // h.n_head
  h.tied = o.tied
  if h.tied == nil then h.tied = fam.tied or false end
  if h.n_head % h.n_head_kv ~= 0 then fail("n_head must be a multiple of n_head_kv") end
  -- phi3's reader sizes attn_output as dim x dim; granite's converter drops head_dim
  if fam.fixed_head and h.head_dim * h.n_head ~= h.dim then
    fail("head_dim must be dim / n_head (its reader has no separate head size)")
  end
  if fam.always_tied and not h.tied then fail("the reader always ties the head (no output.weight)") end
  if arch == "gemma2" and o.rope_base then fail("the converter writes no rope.freq_base") end
  if fam.experts then
    h.n_expert, h.n_expert_used = o.n_expert or 8, o.n_expert_used or 2
    h.n_ff_exp = o.n_ff_exp or h.n_ff
    if h.n_expert_used < 1 or h.n_expert_used > h.n_expert then fail("n_expert_used must be in 1..n_expert") end
  end
  if fam.rope_factors then
    h.rope_dim = o.rope_dim or (h.dim * 3 // 4) // h.n_head
    h.original_ctx = o.original_ctx or 4096
    if h.rope_dim % 2 ~= 0 or h.rope_dim > h.head_dim then fail("rope_dim must be even and <= head_dim") end
  end
  return h
end

function M.random_model(o)
  assert(type(o) == "table" and o.path, "random_model{path = ..., ...}")
  local arch = o.arch or "llama"
  local fam = FAMILY[arch]
  if not fam then
    error("random_model: unknown arch '" .. tostring(arch) .. "' (" .. table.concat(M.families, ", ") .. ")", 2)
  end
  local dtype = o.dtype or "f16"
  -- the dtypes a model file's weights come in: those with a general.file_type
  assert(core.dtypes[dtype] and core.dtypes[dtype].file_type, "random_model: unsupported dtype " .. tostring(dtype))
  local h = hparams(o, fam, arch)
  local vocab, dim, L, hd = h.vocab, h.dim, h.n_layer, h.head_dim
  local nh, nkv, ff = h.n_head, h.n_head_kv, h.n_ff
  local std = o.std or 0.02
  local seed = o.seed or 1
  local tensors = {}
  local function add(name, shape, kind)
    seed = seed + 1
    local t
    if kind == "norm" then
      t = M.rand(shape, seed, 0.9, 1.1)
    else
      t = M.randn(shape, seed, std)
      local ty = core.dtype_for_row(dtype, shape[#shape])
      if ty ~= "f32" then t = t:to(ty) end
    end
    tensors[#tensors + 1] = { name = name, tensor = t }
  end
  -- shapes outermost first: (out, in), a row per output feature
  add("token_embd.weight", { vocab, dim })
  for l = 0, L - 1 do
    local p = "blk." .. l .. "."
    add(p .. "attn_norm.weight", { dim }, "norm")
    if fam.fused then
      add(p .. "attn_qkv.weight", { (nh + 2 * nkv) * hd, dim })     -- q, k, v stacked by rows
    else
      add(p .. "attn_q.weight", { nh * hd, dim })
      add(p .. "attn_k.weight", { nkv * hd, dim })
      add(p .. "attn_v.weight", { nkv * hd, dim })
    end
    if fam.qk_norm then                                             -- one per head size, shared by the heads
      add(p .. "attn_q_norm.weight", { hd }, "norm")
      add(p .. "attn_k_norm.weight", { hd }, "norm")
    end
    add(p .. "attn_output.weight", { dim, nh * hd })
    if fam.post_norm then add(p .. "post_attention_norm.weight", { dim }, "norm") end
    add(p .. "ffn_norm.weight", { dim }, "norm")
    if fam.experts then
      local ne, fe = h.n_expert, h.n_ff_exp
      seed = seed + 1
      tensors[#tensors + 1] = { name = p .. "ffn_gate_inp.weight", tensor = M.randn({ ne, dim }, seed, std) }
      add(p .. "ffn_gate_exps.weight", { ne, fe, dim })             -- expert e: rows e*fe .. (e+1)*fe-1
      add(p .. "ffn_up_exps.weight", { ne, fe, dim })
      add(p .. "ffn_down_exps.weight", { ne, dim, fe })
    elseif fam.fused then
      add(p .. "ffn_up.weight", { 2 * ff, dim })                    -- gate rows, then up rows
    else
      add(p .. "ffn_gate.weight", { ff, dim })
      add(p .. "ffn_up.weight", { ff, dim })
    end
    if not fam.experts then add(p .. "ffn_down.weight", { dim, ff }) end
    if fam.post_norm then add(p .. "post_ffw_norm.weight", { dim }, "norm") end
  end
  add("output_norm.weight", { dim }, "norm")
  if not h.tied then add("output.weight", { vocab, dim }) end
  -- Global F32 factor tensors, shared by every layer (the reader duplicates them).
  if fam.rope_freqs then
    local freqs = M.llama3_rope_freqs { head_dim = hd, rope_base = h.rope_base, rope_factor = o.rope_factor,
                                        low_freq_factor = o.low_freq_factor,
                                        high_freq_factor = o.high_freq_factor, original_ctx = o.original_ctx }
    tensors[#tensors + 1] = { name = "rope_freqs.weight", tensor = tensor.new(freqs) }
  end
  if fam.rope_factors then
    local n = h.rope_dim // 2
    for _, which in ipairs { "long", "short" } do
      local given, t = o["rope_factors_" .. which], nil
      if given then
        assert(#given == n, string.format("random_model: rope_factors_%s needs %d values", which, n))
        t = tensor.new(given)
      else
        seed = seed + 1
        t = M.rand({ n }, seed, 1.0, which == "long" and 8.0 or 1.5)
      end
      tensors[#tensors + 1] = { name = "rope_factors_" .. which .. ".weight", tensor = t }
    end
  end
  local meta = {
    { "general.architecture", fam.gguf },
    { "general.name", o.name or "slm-random" },
  }
  fam.keys(function(key, value) meta[#meta + 1] = { fam.gguf .. "." .. key, value } end, h, o)
  -- What the converter adds to every file; left out of plain llama files,
  -- which keep the bytes they had before the families (the benchmarks' files).
  if arch ~= "llama" then
    meta[#meta + 1] = { "general.quantization_version", u32(2) }
    meta[#meta + 1] = { "general.file_type", u32(gguf.FILE_TYPE[dtype]) }
  end
  if vocab >= 259 then
    for _, kv in ipairs(M.vocab_metadata(vocab)) do meta[#meta + 1] = kv end
  end
  assert(gguf.write(o.path, { metadata = meta, tensors = tensors }))
  return o.path
end

return M
