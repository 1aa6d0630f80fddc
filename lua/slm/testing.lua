--- slm.testing: tools for tests and benchmarks.
--
--   slm.testing.random_model{path = "/tmp/m.gguf", dtype = "q8_0", vocab = 49152,
--     dim = 576, n_layer = 30, n_head = 9, n_head_kv = 3, n_ff = 1536,
--     tied = true, seed = 1, ctx = 2048} -> path
-- writes a llama-architecture GGUF with random weights (normal, std 0.02;
-- norms 1) quantized by slm's reference quantizers, plus a small byte-level
-- vocabulary when vocab >= 259. Tensors whose row length is not a multiple of
-- the dtype's block fall back as the reference quantizer does (a K-quant to
-- q5_0/q8_0).
local core = require "slm.core"
local gguf = require "slm.gguf"

local M = {}

M.randn = core.testing.randn
M.rand = core.testing.rand

local BLOCK = { q4_0 = 32, q4_1 = 32, q5_0 = 32, q5_1 = 32, q8_0 = 32, q2_k = 256, q3_k = 256,
                q4_k = 256, q5_k = 256, q6_k = 256, f16 = 1, bf16 = 1, f32 = 1 }
local FALLBACK = { q2_k = "q4_0", q3_k = "q4_0", q4_k = "q5_0", q5_k = "q5_1", q6_k = "q8_0" }

local function weight_type(dtype, cols)
  if cols % BLOCK[dtype] == 0 then return dtype end
  local fb = FALLBACK[dtype] or "f16"
  if cols % BLOCK[fb] == 0 then return fb end
  return "f16"
end

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

function M.random_model(o)
  assert(type(o) == "table" and o.path, "random_model{path = ..., ...}")
  local dtype = o.dtype or "f16"
  assert(BLOCK[dtype], "random_model: unsupported dtype " .. tostring(dtype))
  local vocab, dim, L = o.vocab or 512, o.dim or 64, o.n_layer or 2
  local nh, nkv, ff = o.n_head or 4, o.n_head_kv or o.n_head or 4, o.n_ff or 4 * (o.dim or 64)
  local hd = dim // nh
  local seed = o.seed or 1
  local tensors = {}
  local function add(name, shape, kind)
    seed = seed + 1
    local t
    if kind == "norm" then
      t = M.rand(shape, seed, 0.9, 1.1)
    else
      t = M.randn(shape, seed, 0.02)
      local ty = weight_type(dtype, shape[#shape])
      if ty ~= "f32" then t = t:to(ty) end
    end
    tensors[#tensors + 1] = { name = name, tensor = t }
  end
  add("token_embd.weight", { vocab, dim })
  for l = 0, L - 1 do
    local p = "blk." .. l .. "."
    add(p .. "attn_norm.weight", { dim }, "norm")
    add(p .. "attn_q.weight", { nh * hd, dim })
    add(p .. "attn_k.weight", { nkv * hd, dim })
    add(p .. "attn_v.weight", { nkv * hd, dim })
    add(p .. "attn_output.weight", { dim, nh * hd })
    add(p .. "ffn_norm.weight", { dim }, "norm")
    add(p .. "ffn_gate.weight", { ff, dim })
    add(p .. "ffn_up.weight", { ff, dim })
    add(p .. "ffn_down.weight", { dim, ff })
  end
  add("output_norm.weight", { dim }, "norm")
  if not o.tied then add("output.weight", { vocab, dim }) end
  local meta = {
    { "general.architecture", "llama" },
    { "general.name", o.name or "slm-random" },
    { "llama.context_length", { type = "u32", value = o.ctx or 2048 } },
    { "llama.embedding_length", { type = "u32", value = dim } },
    { "llama.block_count", { type = "u32", value = L } },
    { "llama.feed_forward_length", { type = "u32", value = ff } },
    { "llama.attention.head_count", { type = "u32", value = nh } },
    { "llama.attention.head_count_kv", { type = "u32", value = nkv } },
    { "llama.rope.dimension_count", { type = "u32", value = hd } },
    { "llama.rope.freq_base", { type = "f32", value = 10000.0 } },
    { "llama.attention.layer_norm_rms_epsilon", { type = "f32", value = 1e-5 } },
    { "llama.vocab_size", { type = "u32", value = vocab } },
  }
  if vocab >= 259 then
    for _, kv in ipairs(M.vocab_metadata(vocab)) do meta[#meta + 1] = kv end
  end
  assert(gguf.write(o.path, { metadata = meta, tensors = tensors }))
  return o.path
end

return M
