-- Every size a model file claims is checked against its tensors and the
-- file before anything is sized from it, and a file that fails is refused
-- with one line naming the file, the field and the problem (issue 14). The
-- cases are copies of the fixtures with one key, one tensor or one header
-- byte changed; the expected messages are written from the fixtures' known
-- shapes (dense: dim 256, ffn 768, 4 blocks, 8 heads of 32, 2 kv heads).
local helpers = require "spec.helpers"
local slm = require "slm"

-- The error of loading path, checked to be one line that names the file
-- and carries neither a Lua runtime error nor a path inside the library.
local function refused(path, opts)
  local m, err = slm.load(path, opts)
  assert.is_nil(m)
  assert.is_string(err)
  assert.equal(path .. ": ", err:sub(1, #path + 2))
  assert.is_nil(err:find("\n", 1, true))
  assert.is_nil(err:find("attempt to", 1, true))
  assert.is_nil(err:find("%.lua:%d+:"))
  return err:sub(#path + 3)
end

-- A fixture copy with metadata key `key` replaced by {type, value}.
local function with_key(fixture, key, ty, value)
  return helpers.altered(fixture, { drop = { [key] = true }, metadata = { { key, { type = ty, value = value } } } })
end

-- {fixture, key, type, value, message after "path: "}
local KEYS = {
  { "gguf/dense-f16.gguf", "llama.context_length", "u32", 0, "llama.context_length is 0 (expected 1..2147483647)" },
  { "gguf/dense-f16.gguf", "llama.embedding_length", "u32", 320,
    "llama.embedding_length is 320, token_embd.weight has shape 512x256" },
  { "gguf/dense-f16.gguf", "llama.feed_forward_length", "u32", 512,
    "llama.feed_forward_length is 512, blk.0.ffn_down.weight has shape 256x768" },
  { "gguf/dense-f16.gguf", "llama.block_count", "u32", 6, "llama.block_count is 6, the file has tensors of blocks 0..3" },
  { "gguf/dense-f16.gguf", "llama.block_count", "u32", 2, "llama.block_count is 2, the file has tensors of blocks 0..3" },
  { "gguf/dense-f16.gguf", "llama.attention.head_count", "u32", 16,
    "llama.attention.head_count_kv 2 with heads of 16 (embedding_length / head_count) needs 32 rows in "
    .. "blk.0.attn_k.weight, it has 64" },
  { "gguf/dense-f16.gguf", "llama.attention.head_count_kv", "u32", 4,
    "llama.attention.head_count_kv 4 with heads of 32 (embedding_length / head_count) needs 128 rows in "
    .. "blk.0.attn_k.weight, it has 64" },
  { "gguf/dense-f16.gguf", "llama.attention.key_length", "u32", 16,
    "llama.attention.head_count 8 with heads of 16 needs 128 rows in blk.0.attn_q.weight, it has 256" },
  { "gguf/phi3-q8_0.gguf", "phi3.attention.head_count_kv", "u32", 4,
    "phi3.attention.head_count 8 and head_count_kv 4 with heads of 32 (embedding_length / head_count) needs 512 "
    .. "rows in blk.0.attn_qkv.weight, it has 768" },
  { "gguf2/gemma3-f16.gguf", "gemma3.context_length", "u32", 0, "gemma3.context_length is 0 (expected 1..2147483647)" },
  { "gguf2/gemma3-f16.gguf", "gemma3.feed_forward_length", "u32", 1024,
    "gemma3.feed_forward_length is 1024, blk.0.ffn_down.weight has shape 256x512" },
  { "gguf2/gemma3-f16.gguf", "gemma3.attention.head_count", "u32", 4,
    "gemma3.attention.head_count 4 with heads of 64 needs 256 rows in blk.0.attn_q.weight, it has 512" },
  { "gguf3/lfm2-f16.gguf", "lfm2.context_length", "u32", 0, "lfm2.context_length is 0 (expected 1..2147483647)" },
  { "gguf3/lfm2-f16.gguf", "lfm2.embedding_length", "u32", 64,
    "lfm2.embedding_length is 64, token_embd.weight has shape 512x128" },
  -- lfm2's first attention layer is blk.2 (head_count_kv 0,0,2,0)
  { "gguf3/lfm2-f16.gguf", "lfm2.attention.head_count", "u32", 8,
    "lfm2.attention.head_count_kv 2 with heads of 16 (embedding_length / head_count) needs 32 rows in "
    .. "blk.2.attn_k.weight, it has 64" },
  { "gguf3/qwen3moe-f16.gguf", "qwen3moe.expert_feed_forward_length", "u32", 64,
    "qwen3moe.expert_feed_forward_length is 64, blk.0.ffn_down_exps.weight has shape 8x256x32" },
  { "gguf3/mixtral-f16.gguf", "llama.feed_forward_length", "u32", 96,
    "llama.feed_forward_length is 96, blk.0.ffn_down_exps.weight has shape 4x256x64" },
  { "gguf/mamba-f16.gguf", "mamba.context_length", "u32", 0, "mamba.context_length is 0 (expected 1..2147483647)" },
  { "gguf/mamba-f16.gguf", "mamba.attention.layer_norm_rms_epsilon", "f32", -1,
    "mamba.attention.layer_norm_rms_epsilon is -1.0 (expected a positive number)" },
  { "gguf/mamba-f16.gguf", "mamba.ssm.conv_kernel", "u32", 0, "mamba.ssm.conv_kernel is 0 (expected 1..2147483647)" },
  { "gguf3/mamba2-f16.gguf", "mamba2.block_count", "u32", 5, "mamba2.block_count is 5, the file has tensors of blocks 0..3" },
  { "gguf/rwkv7-tiny-f16.gguf", "rwkv7.context_length", "u32", 0, "rwkv7.context_length is 0 (expected 1..2147483647)" },
  { "gguf/rwkv7-tiny-f16.gguf", "rwkv7.wkv.head_size", "u32", 0,
    "rwkv7.wkv.head_size is 0 (expected a divisor of embedding_length 64)" },
  { "gguf/rwkv7-tiny-f16.gguf", "rwkv7.wkv.head_size", "str", "x", "metadata rwkv7.wkv.head_size is x, expected an integer" },
  { "gguf/rwkv7-tiny-f16.gguf", "rwkv7.embedding_length", "u32", 128,
    "rwkv7.embedding_length is 128, token_embd.weight has shape 256x64" },
  { "gguf/rwkv7-tiny-f16.gguf", "rwkv7.feed_forward_length", "u32", 64,
    "rwkv7.feed_forward_length is 64, blk.0.channel_mix_key.weight has shape 256x64" },
  { "gguf/rwkv6-tiny-f16.gguf", "rwkv6.attention.layer_norm_epsilon", "f32", 0,
    "rwkv6.attention.layer_norm_epsilon is 0.0 (expected a positive number)" },
  { "gguf/rwkv6-tiny-f16.gguf", "rwkv6.rescale_every_n_layers", "i32", -1,
    "rwkv6.rescale_every_n_layers is -1 (expected 0..2147483647)" },
  { "gguf/rwkv6-tiny-f16.gguf", "rwkv6.block_count", "u32", 0, "rwkv6.block_count is 0 (expected 1..4096)" },
  { "gguf3/bert-f16.gguf", "bert.block_count", "u32", 3, "bert.block_count is 3, the file has tensors of blocks 0..3" },
}

describe("GGUF hyper-parameters are checked against the tensors", function()
  for _, c in ipairs(KEYS) do
    it(string.format("%s: %s = %s", c[1], c[2], tostring(c[4])), function()
      local src, why = helpers.fixture(c[1])
      if not src then return pending(why) end
      assert.equal(c[5], refused(with_key(src, c[2], c[3], c[4])))
    end)
  end
end)

describe("a block's own check names the file and the layer", function()
  -- {fixture, tensor, replacement shape, message}
  local cases = {
    { "gguf/dense-f16.gguf", "blk.1.ffn_gate.weight", { 700, 256 }, "blk.1.ffn_gate: expected shape 768x256, got 700x256" },
    { "gguf/dense-f16.gguf", "blk.2.attn_k.weight", { 32, 256 }, "blk.2.attn_k: expected shape 64x256, got 32x256" },
    { "gguf/rwkv7-tiny-f16.gguf", "blk.3.channel_mix_key.weight", { 128, 64 },
      "layer 3: rwkv: weight ffn key must be (256, 64) with contiguous rows, got 2d (128, 64)" },
    { "gguf3/qwen3moe-f16.gguf", "blk.1.ffn_up_exps.weight", { 8, 16, 256 },
      "layer 1: moe: ffn_up_exps must be 8x32x256 (experts x out x in)" },
    -- raised by a tensor method in the definition: the loader puts the file
    -- where the library's chunk and line were
    { "gguf3/qwen2moe-f16.gguf", "blk.1.ffn_gate_inp_shexp.weight", { 3 },
      "reshape: shape does not match the 3 elements of the tensor" },
  }
  for _, c in ipairs(cases) do
    it(c[2] .. " of the wrong shape", function()
      local src, why = helpers.fixture(c[1])
      if not src then return pending(why) end
      local path = helpers.altered(src, { replace = { [c[2]] = slm.tensor.zeros(c[3]) } })
      assert.equal(c[4], refused(path))
    end)
  end
end)

local patched = helpers.patched

describe("rwkv.cpp headers", function()
  -- tiny-rwkv-4v0-660K: n_vocab 256, n_embed 128, n_layer 4 at bytes 8, 12, 16
  local cases = {
    { { [11] = 0x7f }, "header n_vocab is 2130706688, emb.weight has 256 rows" },
    { { [9] = 0x02 }, "header n_vocab is 512, emb.weight has 256 rows" },
    { { [15] = 0x7f }, "header n_embed is 2130706560, emb.weight has 128 columns" },
    { { [17] = 0x7f }, "header n_layer is 32516, the file has 4 blocks" },
    { { [16] = 0x03 }, "header n_layer is 3, the file has parameter 'blocks.3.ln1.weight'" },
    { { [16] = 0x00 }, "header n_layer is 0 (must be positive)" },
  }
  for _, c in ipairs(cases) do
    it(c[2], function()
      local path, why = patched("rwkv/tiny-rwkv-4v0-660K-FP32.bin", c[1])
      if not path then return pending(why) end
      assert.equal(c[2], refused(path))
    end)
  end
end)

describe("llama2.c headers", function()
  -- stories260K: dim 64, hidden 172, 5 layers, 8 heads, 4 kv heads, vocab 512, seq_len 512
  local cases = {
    { { [23] = 0x7f }, nil, "llama2.c header: vocab_size is 2130706944 (expected 1..4194304, negative for an "
      .. "unshared classifier)" },
    { { [12] = 7 }, nil, "llama2.c header: n_heads 7 does not divide dim 64" },
    { { [21] = 0x04 }, nil, "llama2.c header (dim 64, hidden_dim 172, n_layers 5, n_heads 8, n_kv_heads 4, "
      .. "vocab_size 1024, seq_len 512) describes 1187612 bytes, the file has 1056540" },
    { {}, string.rep("\0", 512 * 64 * 4), "llama2.c header: vocab_size 512 says the classifier is shared, but "
      .. "the file holds one more (512, 64) matrix: an unshared classifier is written as vocab_size -512" },
  }
  for _, c in ipairs(cases) do
    it(c[3], function()
      local path, why = patched("llama2c/stories260K.bin", c[1], c[2])
      if not path then return pending(why) end
      assert.equal("not a GGUF file or llama2.c checkpoint (" .. c[3] .. ")", refused(path))
    end)
  end
end)

describe("a tokenizer of another vocabulary", function()
  it("is refused at load, naming both sizes", function()
    local model, why = helpers.fixture("llama2c/stories260K.bin")
    local tok = helpers.fixture("llama2c/tokenizer.bin")
    if not model or not tok then return pending(why or "llama2c/tokenizer.bin not found") end
    assert.equal("the tokenizer " .. tok .. " has 32000 tokens, the model's vocabulary 512",
                 refused(model, { tokenizer = tok }))
    assert.equal("the tokenizer has 256 tokens, the model's vocabulary 512",
                 refused(model, { tokenizer = slm.tokenizer.bytes() }))
  end)

  it("of the same size is taken", function()
    local path, why = helpers.fixture("rwkv/tiny-rwkv-4v0-660K-FP32.bin")
    if not path then return pending(why) end
    local tok = slm.tokenizer.bytes()
    local m = assert(slm.load(path, { tokenizer = tok }))
    assert.equal(tok, m.tokenizer)
  end)
end)
