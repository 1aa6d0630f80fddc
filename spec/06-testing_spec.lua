-- slm.testing.random_model: every family's file against literal expectations
-- written from fixtures/gguf2/README.md (its shapes table, "What each feature
-- means" and the converter's keys as the fixtures hold them), not from the
-- generator: metadata keys, types and values, tensor names and shapes, the
-- Llama-3 and Phi-4-mini factors; the same keys and tensors as the gguf2
-- fixture of the same shape when the fixtures are there; and llama files
-- byte-identical to those written before the families existed.
local testing = require "slm.testing"
local gguf = require "slm.gguf"
local helpers = require "spec.helpers"
local errmsg = helpers.errmsg

-- The fixtures' shapes (README "Files" table) with the options that give
-- their features; vocab 512 as theirs.
local SHAPES = {
  qwen3 = { arch = "qwen3", n_layer = 4, dim = 256, n_head = 8, n_head_kv = 2, head_dim = 64, n_ff = 768,
            tied = true },
  gemma3 = { arch = "gemma3", n_layer = 6, dim = 256, n_head = 8, n_head_kv = 2, head_dim = 64, n_ff = 512,
             window = 4, rope_scale = 8, ctx = 131072 },
  gemma2 = { arch = "gemma2", n_layer = 4, dim = 256, n_head = 8, n_head_kv = 4, head_dim = 64, n_ff = 512,
             window = 6, attn_softcap = 5, final_softcap = 30 },
  llama3 = { arch = "llama3", n_layer = 4, dim = 256, n_head = 4, n_head_kv = 1, n_ff = 768, tied = true,
             rope_factor = 32, low_freq_factor = 1, high_freq_factor = 4, original_ctx = 8192 },
  phi4mini = { arch = "phi3", n_layer = 4, dim = 256, n_head = 4, n_head_kv = 2, n_ff = 768, ctx = 1024,
               original_ctx = 128 },
  smollm3 = { arch = "smollm3", n_layer = 4, dim = 256, n_head = 8, n_head_kv = 2, n_ff = 768, tied = true },
  granite = { arch = "granite", n_layer = 4, dim = 256, n_head = 4, n_head_kv = 1, n_ff = 768, tied = true,
              attention_scale = 0.015625, embedding_scale = 12, residual_scale = 0.22, logit_scale = 8 },
}

-- Expected metadata apart from tokenizer.* and general.name: key -> {type, value}.
local function u(v) return { "u32", v } end
local function f(v) return { "f32", v } end
local KEYS = {
  qwen3 = {
    ["general.architecture"] = { "str", "qwen3" },
    ["qwen3.context_length"] = u(40960), ["qwen3.embedding_length"] = u(256),
    ["qwen3.block_count"] = u(4), ["qwen3.feed_forward_length"] = u(768),
    ["qwen3.attention.head_count"] = u(8), ["qwen3.attention.head_count_kv"] = u(2),
    ["qwen3.attention.layer_norm_rms_epsilon"] = f(1e-6), ["qwen3.rope.freq_base"] = f(1e6),
    ["qwen3.attention.key_length"] = u(64), ["qwen3.attention.value_length"] = u(64),
    ["general.quantization_version"] = u(2), ["general.file_type"] = u(1),
  },
  gemma3 = {
    ["general.architecture"] = { "str", "gemma3" },
    ["gemma3.context_length"] = u(131072), ["gemma3.embedding_length"] = u(256),
    ["gemma3.block_count"] = u(6), ["gemma3.feed_forward_length"] = u(512),
    ["gemma3.attention.head_count"] = u(8), ["gemma3.attention.head_count_kv"] = u(2),
    ["gemma3.attention.layer_norm_rms_epsilon"] = f(1e-6),
    ["gemma3.rope.scaling.type"] = { "str", "linear" }, ["gemma3.rope.scaling.factor"] = f(8),
    ["gemma3.rope.freq_base"] = f(1e6), ["gemma3.rope.freq_base_swa"] = f(1e4),
    ["gemma3.attention.key_length"] = u(64), ["gemma3.attention.value_length"] = u(64),
    ["gemma3.attention.sliding_window"] = u(4),
    ["general.quantization_version"] = u(2), ["general.file_type"] = u(1),
  },
  gemma2 = {
    ["general.architecture"] = { "str", "gemma2" },
    ["gemma2.context_length"] = u(8192), ["gemma2.embedding_length"] = u(256),
    ["gemma2.block_count"] = u(4), ["gemma2.feed_forward_length"] = u(512),
    ["gemma2.attention.head_count"] = u(8), ["gemma2.attention.head_count_kv"] = u(4),
    ["gemma2.attention.layer_norm_rms_epsilon"] = f(1e-6),
    ["gemma2.attention.key_length"] = u(64), ["gemma2.attention.value_length"] = u(64),
    ["gemma2.attn_logit_softcapping"] = f(5), ["gemma2.final_logit_softcapping"] = f(30),
    ["gemma2.attention.sliding_window"] = u(6),
    ["general.quantization_version"] = u(2), ["general.file_type"] = u(1),
  },
  llama3 = {
    ["general.architecture"] = { "str", "llama" },
    ["llama.context_length"] = u(131072), ["llama.embedding_length"] = u(256),
    ["llama.block_count"] = u(4), ["llama.feed_forward_length"] = u(768),
    ["llama.attention.head_count"] = u(4), ["llama.attention.head_count_kv"] = u(1),
    ["llama.attention.layer_norm_rms_epsilon"] = f(1e-5), ["llama.rope.freq_base"] = f(5e5),
    ["llama.vocab_size"] = u(512), ["llama.rope.dimension_count"] = u(64),
    ["general.quantization_version"] = u(2), ["general.file_type"] = u(1),
  },
  phi4mini = {
    ["general.architecture"] = { "str", "phi3" },
    ["phi3.context_length"] = u(1024), ["phi3.rope.scaling.original_context_length"] = u(128),
    ["phi3.embedding_length"] = u(256), ["phi3.feed_forward_length"] = u(768),
    ["phi3.block_count"] = u(4), ["phi3.attention.head_count"] = u(4),
    ["phi3.attention.head_count_kv"] = u(2), ["phi3.attention.layer_norm_rms_epsilon"] = f(1e-5),
    ["phi3.rope.dimension_count"] = u(48), ["phi3.rope.freq_base"] = f(1e4),
    ["phi3.attention.sliding_window"] = u(262144), ["phi3.rope.scaling.attn_factor"] = f(1.1952286),
    ["general.quantization_version"] = u(2), ["general.file_type"] = u(1),
  },
  smollm3 = {
    ["general.architecture"] = { "str", "smollm3" },
    ["smollm3.context_length"] = u(65536), ["smollm3.embedding_length"] = u(256),
    ["smollm3.block_count"] = u(4), ["smollm3.feed_forward_length"] = u(768),
    ["smollm3.attention.head_count"] = u(8), ["smollm3.attention.head_count_kv"] = u(2),
    ["smollm3.attention.layer_norm_rms_epsilon"] = f(1e-6), ["smollm3.rope.freq_base"] = f(5e6),
    ["smollm3.vocab_size"] = u(512), ["smollm3.rope.dimension_count"] = u(32),
    ["general.quantization_version"] = u(2), ["general.file_type"] = u(1),
  },
  granite = {
    ["general.architecture"] = { "str", "granite" },
    ["granite.context_length"] = u(131072), ["granite.embedding_length"] = u(256),
    ["granite.block_count"] = u(4), ["granite.feed_forward_length"] = u(768),
    ["granite.attention.head_count"] = u(4), ["granite.attention.head_count_kv"] = u(1),
    ["granite.attention.layer_norm_rms_epsilon"] = f(1e-5), ["granite.rope.freq_base"] = f(1e4),
    ["granite.vocab_size"] = u(512), ["granite.rope.dimension_count"] = u(64),
    ["granite.attention.scale"] = f(0.015625), ["granite.embedding_scale"] = f(12),
    ["granite.residual_scale"] = f(0.22), ["granite.logit_scale"] = f(8),
    ["general.quantization_version"] = u(2), ["general.file_type"] = u(1),
  },
}

-- Expected tensors: the file-level ones and those of each block (name
-- without "blk.N.") -> shape, outermost first (rows = output features).
local LLAMA_BLOCK = {
  attn_norm = { 256 }, attn_q = { 256, 256 }, attn_k = { 64, 256 }, attn_v = { 64, 256 },
  attn_output = { 256, 256 }, ffn_norm = { 256 }, ffn_gate = { 768, 256 }, ffn_up = { 768, 256 },
  ffn_down = { 256, 768 },
}
local TENSORS = {
  qwen3 = {
    top = { token_embd = { 512, 256 }, output_norm = { 256 } },
    block = { attn_norm = { 256 }, attn_q = { 512, 256 }, attn_k = { 128, 256 }, attn_v = { 128, 256 },
              attn_q_norm = { 64 }, attn_k_norm = { 64 }, attn_output = { 256, 512 }, ffn_norm = { 256 },
              ffn_gate = { 768, 256 }, ffn_up = { 768, 256 }, ffn_down = { 256, 768 } },
  },
  gemma3 = {
    top = { token_embd = { 512, 256 }, output_norm = { 256 } },
    block = { attn_norm = { 256 }, attn_q = { 512, 256 }, attn_k = { 128, 256 }, attn_v = { 128, 256 },
              attn_q_norm = { 64 }, attn_k_norm = { 64 }, attn_output = { 256, 512 },
              post_attention_norm = { 256 }, ffn_norm = { 256 }, ffn_gate = { 512, 256 },
              ffn_up = { 512, 256 }, ffn_down = { 256, 512 }, post_ffw_norm = { 256 } },
  },
  gemma2 = {
    top = { token_embd = { 512, 256 }, output_norm = { 256 } },
    block = { attn_norm = { 256 }, attn_q = { 512, 256 }, attn_k = { 256, 256 }, attn_v = { 256, 256 },
              attn_output = { 256, 512 }, post_attention_norm = { 256 }, ffn_norm = { 256 },
              ffn_gate = { 512, 256 }, ffn_up = { 512, 256 }, ffn_down = { 256, 512 }, post_ffw_norm = { 256 } },
  },
  llama3 = {
    top = { token_embd = { 512, 256 }, output_norm = { 256 }, rope_freqs = { 32 } },
    block = LLAMA_BLOCK,
  },
  phi4mini = {
    top = { token_embd = { 512, 256 }, output_norm = { 256 }, rope_factors_long = { 24 },
            rope_factors_short = { 24 } },
    block = { attn_norm = { 256 }, attn_qkv = { 512, 256 }, attn_output = { 256, 256 }, ffn_norm = { 256 },
              ffn_up = { 1536, 256 }, ffn_down = { 256, 768 } },
  },
  smollm3 = {
    top = { token_embd = { 512, 256 }, output_norm = { 256 } },
    block = LLAMA_BLOCK,
  },
  granite = {
    top = { token_embd = { 512, 256 }, output_norm = { 256 } },
    block = LLAMA_BLOCK,
  },
}

local files = {}
local function file(stem)
  if not files[stem] then
    local o = {}
    for k, v in pairs(SHAPES[stem]) do o[k] = v end
    o.path, o.vocab, o.name, o.dtype = os.tmpname(), 512, stem .. "-test", "f16"
    files[stem] = testing.random_model(o)
  end
  return files[stem]
end

local function close(a, b) return math.abs(a - b) <= 1e-6 * math.max(1, math.abs(b)) end

describe("slm.testing.random_model families", function()
  local stems = {}
  for stem in pairs(SHAPES) do stems[#stems + 1] = stem end
  table.sort(stems)

  for _, stem in ipairs(stems) do
    it(stem .. ": the converter's metadata keys, types and values", function()
      local fh <close> = assert(gguf.open(file(stem)))
      local want, seen = KEYS[stem], {}
      for _, k in ipairs(fh.keys) do
        if not k:match("^tokenizer%.") and k ~= "general.name" then
          local e = want[k]
          assert(e, stem .. ": unexpected key " .. k)
          assert.equal(e[1], fh:type(k), k)
          if e[1] == "f32" then
            assert(close(fh.metadata[k], e[2]), string.format("%s = %s, expected %s", k, fh.metadata[k], e[2]))
          else
            assert.equal(e[2], fh.metadata[k], k)
          end
          seen[k] = true
        end
      end
      for k in pairs(want) do assert(seen[k], stem .. ": missing key " .. k) end
      assert.equal(stem .. "-test", fh.metadata["general.name"])
      assert.equal(512, fh:arr_len("tokenizer.ggml.tokens"))
    end)

    it(stem .. ": the converter's tensor names and shapes, norms and factors in f32", function()
      local fh <close> = assert(gguf.open(file(stem)))
      local want = TENSORS[stem]
      local n_layer = SHAPES[stem].n_layer
      local n_block = 0
      for _ in pairs(want.block) do n_block = n_block + 1 end
      local n_top = 0
      for _ in pairs(want.top) do n_top = n_top + 1 end
      assert.equal(n_top + n_layer * n_block, #fh.tensors)
      for name, shape in pairs(want.top) do
        local info = fh:info(name .. ".weight")
        assert(info, stem .. ": no " .. name .. ".weight")
        assert.same(shape, info.shape, name)
      end
      for l = 0, n_layer - 1 do
        for name, shape in pairs(want.block) do
          local full = string.format("blk.%d.%s.weight", l, name)
          local info = fh:info(full)
          assert(info, stem .. ": no " .. full)
          assert.same(shape, info.shape, full)
          assert.equal(#shape == 1 and "f32" or "f16", info.dtype, full)
        end
      end
      assert.is_nil(fh:info("output.weight"))   -- every fixture family is tied
    end)
  end

  it("llama3: rope_freqs.weight holds README's factors (factor 32, low 1, high 4, original 8192)", function()
    local fh <close> = assert(gguf.open(file("llama3")))
    local t = fh:tensor("rope_freqs.weight")
    for i = 0, 14 do assert.equal(1, t[i + 1], "f" .. i) end
    assert.near(1.6513, t[16], 5e-5)
    assert.near(3.2923, t[17], 5e-5)
    assert.near(9.6667, t[18], 5e-5)
    for i = 18, 31 do assert.equal(32, t[i + 1], "f" .. i) end
  end)

  it("llama3 and phi4mini: factor tensors equal the gguf2 fixtures' bit for bit", function()
    local p3, why = helpers.fixture("gguf2/llama3-f16.gguf")
    if not p3 then return pending(why) end
    local ref <close> = assert(gguf.open(p3))
    local fh <close> = assert(gguf.open(file("llama3")))
    local a, b = fh:tensor("rope_freqs.weight"), ref:tensor("rope_freqs.weight")
    for i = 1, 32 do assert.equal(b[i], a[i], "rope_freqs " .. i) end
    local pp = assert(helpers.fixture("gguf2/phi4mini-f16.gguf"))
    local pref <close> = assert(gguf.open(pp))
    local long, short = {}, {}
    local lt, st = pref:tensor("rope_factors_long.weight"), pref:tensor("rope_factors_short.weight")
    for i = 1, 24 do long[i], short[i] = lt[i], st[i] end
    local o = {}
    for k, v in pairs(SHAPES.phi4mini) do o[k] = v end
    o.path, o.vocab, o.rope_factors_long, o.rope_factors_short = os.tmpname(), 512, long, short
    local mine <close> = assert(gguf.open(testing.random_model(o)))
    for _, w in ipairs { "long", "short" } do
      local x, y = mine:tensor("rope_factors_" .. w .. ".weight"), pref:tensor("rope_factors_" .. w .. ".weight")
      for i = 1, 24 do assert.equal(y[i], x[i], w .. " " .. i) end
    end
    assert.equal(pref.metadata["phi3.rope.scaling.attn_factor"], mine.metadata["phi3.rope.scaling.attn_factor"])
    os.remove(o.path)
  end)

  for _, stem in ipairs(stems) do
    -- (the fixtures' vocabulary has a key or two more: only the family's keys count)
    it(stem .. ": the same keys and tensors as the gguf2 fixture of that shape", function()
      local p, why = helpers.fixture("gguf2/" .. stem .. "-f16.gguf")
      if not p then return pending(why) end
      local ref <close> = assert(gguf.open(p))
      local fh <close> = assert(gguf.open(file(stem)))
      local function keyset(g)
        local s = {}
        for _, k in ipairs(g.keys) do
          if k ~= "general.alignment" and not k:match("^tokenizer%.") then s[k] = g:type(k) end
        end
        return s
      end
      assert.same(keyset(ref), keyset(fh))
      for _, k in ipairs(ref.keys) do
        if k ~= "general.alignment" and not k:match("^tokenizer%.") then
          assert.equal(ref.metadata[k], fh.metadata[k], k)
        end
      end
      local function tensors(g)
        local s = {}
        for _, t in ipairs(g.tensors) do s[t.name] = table.concat(t.shape, "x") end
        return s
      end
      assert.same(tensors(ref), tensors(fh))
    end)
  end

  it("weights are normal with std 0.02 (or std), norms in [0.9, 1.1), matrices in the dtype", function()
    local p = testing.random_model { path = os.tmpname(), arch = "gemma3", dtype = "f32", dim = 256,
                                     n_head = 4, n_head_kv = 1, n_layer = 1, vocab = 1024 }
    local fh <close> = assert(gguf.open(p))
    local function stats(name)
      local t = fh:tensor(name)
      t = t:reshape { t:numel() }
      local n, s, s2, lo, hi = 0, 0, 0, math.huge, -math.huge
      for i = 1, #t do
        local v = t[i]
        n, s, s2 = n + 1, s + v, s2 + v * v
        lo, hi = math.min(lo, v), math.max(hi, v)
      end
      return s / n, math.sqrt(s2 / n - (s / n) ^ 2), lo, hi
    end
    local mean, sd = stats("token_embd.weight")
    assert.near(0, mean, 1e-3)
    assert.near(0.02, sd, 5e-4)
    for _, name in ipairs { "blk.0.attn_norm.weight", "blk.0.attn_q_norm.weight", "blk.0.post_ffw_norm.weight",
                            "output_norm.weight" } do
      local _, _, lo, hi = stats(name)
      assert(lo >= 0.9 and hi < 1.1, name)
    end
    local p2 = testing.random_model { path = os.tmpname(), arch = "qwen3", dtype = "q8_0", dim = 128,
                                      n_head = 2, head_dim = 96, n_layer = 1, vocab = 300, std = 0.5 }
    local q <close> = assert(gguf.open(p2))
    assert.equal("q8_0", q:info("blk.0.attn_q.weight").dtype)
    assert.same({ 192, 128 }, q:info("blk.0.attn_q.weight").shape)   -- H·d = 192 ≠ E = 128
    assert.same({ 128, 192 }, q:info("blk.0.attn_output.weight").shape)
    assert.equal("f32", q:info("blk.0.attn_k_norm.weight").dtype)
    assert.equal(7, q.metadata["general.file_type"])
    local emb = q:tensor("token_embd.weight"):to("f32")
    emb = emb:reshape { emb:numel() }
    local s2 = 0
    for i = 1, #emb do s2 = s2 + emb[i] ^ 2 end
    assert.near(0.5, math.sqrt(s2 / emb:numel()), 0.02)
    os.remove(p)
    os.remove(p2)
  end)

  it("gemma3 defaults: the 270m's window 512 and local base 1e4, no rope scaling keys", function()
    local p = testing.random_model { path = os.tmpname(), arch = "gemma3", n_layer = 1 }
    local fh <close> = assert(gguf.open(p))
    assert.equal(512, fh.metadata["gemma3.attention.sliding_window"])
    assert.equal(1e4, fh.metadata["gemma3.rope.freq_base_swa"])
    assert.is_nil(fh.metadata["gemma3.rope.scaling.type"])
    assert.is_nil(fh.metadata["gemma3.rope.scaling.factor"])
    assert.is_nil(fh.metadata["gemma3.final_logit_softcapping"])
    os.remove(p)
  end)

  it("refuses what the reference's reader cannot take, naming it", function()
    assert.equal("random_model: unknown arch 'gemma4' (gemma2, gemma3, granite, llama, llama3, phi3, qwen3, qwen3moe, smollm3)",
                 errmsg(testing.random_model, { path = "/nonexistent", arch = "gemma4" }))
    assert.equal("random_model{arch = 'gemma2'}: the reader always ties the head (no output.weight)",
                 errmsg(testing.random_model, { path = "/nonexistent", arch = "gemma2", tied = false }))
    assert.equal("random_model{arch = 'gemma2'}: the converter writes no rope.freq_base",
                 errmsg(testing.random_model, { path = "/nonexistent", arch = "gemma2", rope_base = 1e4 }))
    assert.equal("random_model{arch = 'phi3'}: head_dim must be dim / n_head (its reader has no separate head size)",
                 errmsg(testing.random_model, { path = "/nonexistent", arch = "phi3", head_dim = 32 }))
    assert.equal("random_model{arch = 'qwen3'}: n_head must be a multiple of n_head_kv",
                 errmsg(testing.random_model, { path = "/nonexistent", arch = "qwen3", n_head = 4, n_head_kv = 3 }))
  end)

  it("arch = 'llama' writes the bytes it wrote before the families (sha256)", function()
    -- digests of files written by slm.testing at commit 5bb4c54, before arch existed
    local cases = {
      { {}, "f0708ff4136f5606e15d5a3c38bcd4cac6cf9173874e7117ab163699bbe22199" },
      { { dtype = "q8_0", vocab = 300, dim = 64, n_layer = 2, n_head = 4, n_head_kv = 2, n_ff = 96, tied = true,
          seed = 7, ctx = 256 }, "547be6ac6982d6cf4c28786a7cbb4feaa5e70a99f6634c24648b2840819ebb98" },
      { { arch = "llama", dtype = "q4_k", vocab = 260, dim = 256, n_layer = 1, n_head = 4, n_ff = 320, name = "x" },
        "9680478f91691fc9e9b430d44c3f7cd66626cffb2e5dbe10e3b6b92be17395e9" },
    }
    for i, c in ipairs(cases) do
      local o = c[1]
      o.path = os.tmpname()
      testing.random_model(o)
      local pipe = io.popen("sha256sum " .. o.path)
      local sum = pipe:read("a"):match("^(%x+)")
      pipe:close()
      os.remove(o.path)
      assert.equal(c[2], sum, "case " .. i)
    end
  end)

  teardown(function()
    for _, p in pairs(files) do os.remove(p) end
  end)
end)
