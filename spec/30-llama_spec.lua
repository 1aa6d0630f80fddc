-- Dense transformers (llama, qwen2, phi3, llama2.c) against the reference
-- implementation's logits and greedy ids (../shared/fixtures/gguf/*.ref).
-- Bounds from the fixtures' README: f16/bf16/f32 weights within 0.01 s,
-- quantized within 0.05 s (s = std of the reference logits), and every
-- greedy id the .ref holds.
local helpers = require "spec.helpers"
local slm = require "slm"

local PROMPT = { 1, 72, 300, 45, 290, 301, 17, 99 }

local cases = {}
for _, q in ipairs { "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k_m",
                     "q4_k_m", "q5_k_m", "q6_k" } do
  cases[#cases + 1] = { "dense-" .. q, q }
end
for _, q in ipairs { "q8_0", "q4_k_m" } do
  cases[#cases + 1] = { "qwen2-" .. q, q }
  cases[#cases + 1] = { "phi3-" .. q, q }
end

local function bound(q) return (q == "f16" or q == "bf16" or q == "f32") and 0.01 or 0.05 end

-- Feeds the prompt one token at a time (as the reference did), checking the
-- logits after each position, then continues greedily.
local function check_file(path, prompt, q)
  local ref = helpers.read_ref(path:gsub("%.gguf$", ".ref"))
  local model = assert(slm.load(path))
  local sess = model:session { ctx = 64 }
  local worst = 0
  local logits
  for p = 1, ref.n_pos do
    logits = sess:eval { prompt[p] }
    local d = helpers.max_diff(logits, ref.logits[p]) / ref.sd
    if d > worst then worst = d end
  end
  assert.is_true(worst <= bound(q), string.format("max|d|/s = %.4f > %.2f", worst, bound(q)))
  local got = {}
  for i = 1, #ref.gen do
    got[i] = helpers.argmax(logits)
    logits = sess:eval { got[i] }
  end
  assert.same(ref.gen, got)
  return worst
end

describe("dense transformer parity", function()
  for _, c in ipairs(cases) do
    local stem, q = c[1], c[2]
    it(stem .. " logits and greedy ids", function()
      local path, why = helpers.fixture("gguf/" .. stem .. ".gguf")
      if not path then return pending(why) end
      check_file(path, PROMPT, q)
    end)
  end

  it("batched prompt equals token by token", function()
    local path, why = helpers.fixture("gguf/dense-q4_k_m.gguf")
    if not path then return pending(why) end
    local model = assert(slm.load(path))
    local a = model:session { ctx = 64 }
    local b = model:session { ctx = 64, batch = 3 }  -- 8 tokens as 3 + 3 + 2
    for _, id in ipairs(PROMPT) do a:eval { id } end
    local la, lb = a.logits:clone(), b:eval(PROMPT)
    local ref = {}
    for i = 1, la:numel() do ref[i] = la:get(i) end
    assert.is_true(helpers.max_diff(lb, ref) < 1e-3)
  end)

  -- every kernel sums a row's products in one order at any batch size
  -- (README: summation order), so a whole prompt in one batch (8 rows: the
  -- packed panel paths) gives the logits of token-by-token decode bit for bit
  for _, stem in ipairs { "dense-f16", "dense-bf16", "dense-q8_0", "dense-q4_0", "dense-q5_0",
                          "dense-q4_k_m", "dense-q6_k" } do
    it(stem .. ": one batch of the prompt gives token-by-token logits exactly", function()
      local path, why = helpers.fixture("gguf/" .. stem .. ".gguf")
      if not path then return pending(why) end
      local model = assert(slm.load(path))
      local a = model:session { ctx = 64 }
      for _, id in ipairs(PROMPT) do a:eval { id } end
      local lb = model:session({ ctx = 64, batch = #PROMPT }):eval(PROMPT)
      local ref = {}
      for i = 1, a.logits:numel() do ref[i] = a.logits:get(i) end
      assert.are.equal(0, helpers.max_diff(lb, ref))
    end)
  end
end)

describe("stories260K (real weights)", function()
  local IDS = { 461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264,
                283, 452, 288, 13, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431, 431,
                293, 430, 417, 363, 416, 315, 342 }
  local function greedy(path)
    local model = assert(slm.load(path))
    local sess = model:session { ctx = 64 }
    local logits, got = sess:eval { 1 }, {}
    for i = 1, #IDS do
      got[i] = helpers.argmax(logits)
      logits = sess:eval { got[i] }
    end
    return got
  end
  it("40 greedy ids from BOS, from the GGUF", function()
    local path, why = helpers.fixture("gguf/stories260K-f32.gguf")
    if not path then return pending(why) end
    assert.same(IDS, greedy(path))
  end)
  it("40 greedy ids from BOS, from the llama2.c checkpoint", function()
    local path, why = helpers.fixture("llama2c/stories260K.bin")
    if not path then return pending(why) end
    assert.same(IDS, greedy(path))
  end)
end)

describe("model loading errors", function()
  it("missing file", function()
    local m, err = slm.load("/nonexistent/model.gguf")
    assert.is_nil(m)
    assert.equal("/nonexistent/model.gguf: No such file or directory", err)
  end)
  it("unsupported architecture names the supported ones", function()
    local path = os.tmpname()
    assert(slm.gguf.write(path, { metadata = { ["general.architecture"] = "gpt2" }, tensors = {} }))
    local m, err = slm.load(path)
    os.remove(path)
    assert.is_nil(m)
    assert.equal(path .. ": unsupported architecture 'gpt2' (supported: " .. slm.model.supported() .. ")", err)
    for _, a in ipairs { "llama", "phi3", "qwen2" } do assert.matches(a, slm.model.supported(), 1, true) end
  end)
  it("a file that is neither GGUF nor llama2.c", function()
    local path = helpers.tmpfile("hello world, not a model")
    local m, err = slm.load(path)
    os.remove(path)
    assert.is_nil(m)
    assert.matches("not a GGUF file or llama2.c checkpoint", err, 1, true)
  end)
  it("load refuses unknown options and values of the wrong kind, naming them", function()
    local path, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not path then return pending(why) end
    assert.has_error(function() slm.load(path, { tokeniser = "x" }) end,
                     "load: unknown option 'tokeniser' (known: lora, tokenizer, train)")
    assert.has_error(function() slm.load(path, { tokenizer = 5 }) end,
                     "load: tokenizer must be a file name or a tokenizer, got 5")
    assert.has_error(function() slm.load(path, { lora = "a.gguf" }) end,
                     'load: lora must be a list of {path =, scale =}, got "a.gguf"')
    assert.has_error(function() slm.load(path, 3) end, "load: options must be a table, got 3")
    local m = assert(slm.load(path))
    assert.has_error(function() m:session { ctx = 0 } end, "session: ctx must be a positive integer, got 0")
    assert.has_error(function() m:session { batch = 1.5 } end, "session: batch must be a positive integer, got 1.5")
  end)

  it("out-of-range token ids and a full context are errors", function()
    local path, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not path then return pending(why) end
    local sess = assert(slm.load(path)):session { ctx = 4 }
    assert.has_error(function() sess:eval { 512 } end, "token id 512 at position 1 out of range 0..511")
    assert.has_error(function() sess:eval { -1 } end, "token id -1 at position 1 out of range 0..511")
    assert.has_error(function() sess:eval {} end, "bad argument #1 to 'eval' (no tokens)")
    assert.has_error(function() sess:eval { 1.5 } end, "token id 1.5 at position 1 is not an integer")
    assert.has_error(function() sess:eval { 1, "x" } end, "token id x at position 2 is not an integer")
    sess:eval { 1, 2, 3 }
    assert.has_error(function() sess:eval { 1, 2 } end, "context full: 3 tokens + 2 new exceed ctx 4")
    sess:eval { 4 }
    assert.equal(4, sess.n_past)
  end)
end)

describe("session state (KV cache)", function()
  local function argmax_run(sess, n)
    local ids, logits = {}, sess.logits
    for i = 1, n do
      ids[i] = helpers.argmax(logits)
      logits = sess:eval { ids[i] }
    end
    return ids
  end
  it("snapshot/restore/fork/save continue exactly", function()
    local path, why = helpers.fixture("gguf/dense-q4_0.gguf")
    if not path then return pending(why) end
    local model = assert(slm.load(path))
    local s = model:session { ctx = 64 }
    s:eval(PROMPT)
    local snap = s:snapshot()
    local a = argmax_run(s, 10)
    -- restore into the same session
    s:restore(snap)
    assert.equal(#PROMPT, s.n_past)
    assert.same(a, argmax_run(s, 10))
    -- fork from a restored point, and a fresh session restored from a file
    s:restore(snap)
    local f = s:fork()
    assert.same(a, argmax_run(f, 10))
    local file = os.tmpname()
    assert(snap:save(file))
    local snap2 = assert(slm.model.load_snapshot(file))
    local t = model:session { ctx = 64 }
    t:restore(snap2)
    assert.same(a, argmax_run(t, 10))
    -- the snapshot holds only the rows in use: a header, then per layer 12
    -- bytes and 2 x 8 positions x 64 dims x 2 bytes (4 layers)
    assert.equal(40 + 4 * (12 + 2 * 8 * 64 * 2), #snap.state)   -- header of 2 dims (n_layer, kv_type): 40 bytes
    os.remove(file)
  end)
  it("rejects foreign or corrupt snapshots", function()
    local path, why = helpers.fixture("gguf/dense-q4_0.gguf")
    if not path then return pending(why) end
    local model = assert(slm.load(path))
    local s = model:session { ctx = 64 }
    s:eval(PROMPT)
    local small = model:session { ctx = 4 }
    assert.has_error(function() small:restore(s:snapshot()) end,
                     "restore: snapshot holds 8 tokens, the context has room for 4")
    assert.has_error(function() small:restore({}) end, "bad argument #1 to 'restore' (snapshot expected)")
    local file = helpers.tmpfile("SLMSNAP1garbage")
    local snap, err = slm.model.load_snapshot(file)
    assert.is_nil(snap)
    assert.equal(file .. ": truncated or corrupt snapshot", err)
    os.remove(file)
  end)
end)

describe("C block misuse", function()
  local blocks = slm.core.blocks
  it("gives clear errors", function()
    local path, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not path then return pending(why) end
    local m = assert(slm.load(path))
    local x = slm.tensor.zeros { 4, 256 }
    local emb = m.net.tok_embd
    assert.has_error(function() blocks.embed(x, emb, { 1, 9999 }, 1, 2) end,
                     "token id 9999 out of range 0..511")
    assert.has_error(function() blocks.embed(x, emb, { 1, "a" }, 1, 2) end, "token 2 is not an integer")
    assert.has_error(function() blocks.rmsnorm(x, x, m.net.output_norm, 1e-5, 3, 4) end,
                     "bad argument #5: rows 3..6 outside 1..4")
    assert.has_error(function() blocks.rmsnorm(x, x, emb, 1e-5, 1, 1) end,
                     "rmsnorm weight: expected 256 contiguous f32 values, got a q8_0 tensor of 131072")
    assert.has_error(function() blocks.attention { dim = 256, n_head = 8, wq = emb } end,
                     "attn_q: expected shape 256x256, got 512x256")
    assert.has_error(function() blocks.attention { dim = 256, n_head = 8, n_head_kv = 3 } end,
                     "attention: n_head 8 must be a positive multiple of n_head_kv 3")
    assert.has_error(function() blocks.kv_state { n_layer = 1, n_ctx = 0, n_head = 1, head_dim = 8, n_ff = 8 } end,
                     "kv_state: n_ctx 0 out of range 1..16777216")
    assert.has_error(function() blocks.ffn { dim = 256, n_ff = 768 } end, "ffn_up: missing weight")
    local ro = emb:narrow(1, 1, 4)
    assert.has_error(function() blocks.add(ro, x, 1, 1) end)
  end)
end)
