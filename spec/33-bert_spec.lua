-- BERT encoders and model:embed: the reference's token ids for every case
-- of fixtures/gguf3/bert.inp, its per-token and pooled embeddings
-- (bert-f16.emb, bert-q8_0.emb; README bounds), the loader's rules for
-- bert.* keys, hooks; and embeddings of decoders (llama family with and
-- without experts, gemma, lfm2, mamba 1/2, rwkv), whose rows must be what
-- their head reads (output . row = the session's logits, bit for bit).
local helpers = require "spec.helpers"
local slm = require "slm"
local ops = slm.core.ops

local function fixture(rel)
  return helpers.fixture("gguf3/" .. rel)
end

-- the cases of bert.inp and the ids of bert.out
local function cases()
  return helpers.vocab_cases(assert(fixture("bert.inp")), assert(fixture("bert.out")))
end

-- .emb: int32 n_case, n_embd, pooling_type; per case int32 n_tok, ids,
-- float32 tok[n_tok][n_embd], pooled[n_embd]; s = std of all tok values
local function read_emb(path)
  local s = helpers.read(path)
  local n_case, d, pooling, off = string.unpack("<i4i4i4", s)
  local out, sum, sum2, cnt = { d = d, pooling = pooling }, 0, 0, 0
  local row = "<" .. string.rep("f", d)
  for c = 1, n_case do
    local n
    n, off = string.unpack("<i4", s, off)
    local e = { ids = { string.unpack("<" .. string.rep("i4", n), s, off) }, tok = {} }
    off = e.ids[n + 1]
    e.ids[n + 1] = nil
    for t = 1, n do
      e.tok[t] = { string.unpack(row, s, off) }
      off = e.tok[t][d + 1]
      e.tok[t][d + 1] = nil
      for j = 1, d do
        sum, sum2, cnt = sum + e.tok[t][j], sum2 + e.tok[t][j] ^ 2, cnt + 1
      end
    end
    e.pooled = { string.unpack(row, s, off) }
    off = e.pooled[d + 1]
    e.pooled[d + 1] = nil
    out[c] = e
  end
  assert(off == #s + 1, "trailing bytes in " .. path)
  out.s = math.sqrt(sum2 / cnt - (sum / cnt) ^ 2)
  return out
end

-- cosine and max |a - b| of a Lua array and a row of a tensor (get(j))
local function compare(ref, get)
  local dot, na, nb, md = 0, 0, 0, 0
  for j = 1, #ref do
    local b = get(j)
    dot, na, nb = dot + ref[j] * b, na + ref[j] ^ 2, nb + b * b
    md = math.max(md, math.abs(ref[j] - b))
  end
  return dot / math.sqrt(na * nb), md
end

local function load_bert(q)
  local p, why = fixture("bert-" .. q .. ".gguf")
  if not p then return nil, why end
  return assert(slm.load(p)), p
end

describe("bert: WordPiece", function()
  it("gives the reference's ids for every case of bert.inp ([CLS] ... [SEP])", function()
    local model, why = load_bert("f16")
    if not model then return pending(why) end
    local texts, ids = cases()
    assert.equal(8, #texts)
    local tok, ok = model.tokenizer, 0
    for i, text in ipairs(texts) do
      if table.concat(tok:encode(text), " ") == table.concat(ids[i], " ") then ok = ok + 1 end
    end
    print(string.format("\nbert WordPiece: %d/%d cases give the reference's ids", ok, #texts))
    assert.equal(#texts, ok)
    assert.equal("bert", tok.model)
    assert.same({ 2, 3, 1, 4 }, { tok.cls, tok.sep, tok.unk, tok.mask })
    -- decoding joins pieces into words and cleans the spaces before punctuation
    assert.equal("hello, world! the quick brown fox jumps over the lazy dog.", tok:decode(ids[1]))
    assert.equal("i can't believe it's already 2024!!", tok:decode(ids[3]))
  end)
end)

describe("bert: embeddings against the reference", function()
  -- README: f16 cosine >= 0.9999 and max |d| <= 0.01 s; q8_0 0.9995, 0.05 s
  for _, c in ipairs { { "f16", 0.9999, 0.01 }, { "q8_0", 0.9995, 0.05 } } do
    local q, min_cos, max_d = c[1], c[2], c[3]
    it("bert-" .. q .. ": every token and every mean-pooled sentence", function()
      local model, why = load_bert(q)
      if not model then return pending(why) end
      local ref = read_emb(assert(fixture("bert-" .. q .. ".emb")))
      assert.equal(1, ref.pooling)
      assert.equal("mean", model.net.pooling)
      local texts, ids = cases()
      local tc, td, pc, pd = 1, 0, 1, 0
      for i, e in ipairs(ref) do
        assert.same(ids[i], e.ids)
        local rows = model:embed(e.ids, { pooling = "none", normalize = false })
        assert.same({ #e.ids, ref.d }, rows:shape())
        for t = 1, #e.ids do
          local cos, d = compare(e.tok[t], function(j) return rows:get(t, j) end)
          tc, td = math.min(tc, cos), math.max(td, d)
        end
        -- the file's pooling (mean) and L2 normalization, from the text
        local v = model:embed(texts[i])
        assert.same({ ref.d }, v:shape())
        local cos, d = compare(e.pooled, function(j) return v:get(j) end)
        pc, pd = math.min(pc, cos), math.max(pd, d)
      end
      print(string.format("\nbert-%s (s = %.4f): per token worst cosine %.8f, max |d| %.5f s; "
                          .. "pooled worst cosine %.8f, max |d| %.5f s", q, ref.s, tc, td / ref.s, pc, pd / ref.s))
      assert.is_true(tc >= min_cos, "per-token cosine " .. tc)
      assert.is_true(pc >= min_cos, "pooled cosine " .. pc)
      assert.is_true(td <= max_d * ref.s, "per-token max |d| " .. td / ref.s .. " s")
      assert.is_true(pd <= max_d * ref.s, "pooled max |d| " .. pd / ref.s .. " s")
    end)
  end

  it("pools cls, last and none from the same rows, normalized or not", function()
    local model, why = load_bert("f16")
    if not model then return pending(why) end
    local text = "The quick brown fox."
    local rows = model:embed(text, { pooling = "none", normalize = false })
    local n, d = rows:size(1), rows:size(2)
    local function unit(t)
      local q = 0
      for j = 1, d do q = q + rows:get(t, j) ^ 2 end
      return function(j) return rows:get(t, j) / math.sqrt(q) end
    end
    for _, c in ipairs { { "cls", 1 }, { "last", n } } do
      local v = model:embed(text, { pooling = c[1] })
      local u = unit(c[2])
      for j = 1, d do assert.near(u(j), v:get(j), 1e-6) end
    end
    local raw = model:embed(text, { pooling = "mean", normalize = false })
    for j = 1, d do
      local s = 0
      for t = 1, n do s = s + rows:get(t, j) end
      assert.near(s / n, raw:get(j), 1e-5)
    end
    local normed = model:embed(text, { pooling = "none" })
    for t = 1, n do
      local u = unit(t)
      for j = 1, d do assert.near(u(j), normed:get(t, j), 1e-6) end
    end
    -- a result is a new tensor: the next embed does not change it
    local keep = model:embed("one")
    local before = keep:tobytes()
    model:embed("two words here")
    assert.equal(before, keep:tobytes())
  end)

  it("hooks see and change the layers' rows", function()
    local model, why = load_bert("f16")
    if not model then return pending(why) end
    local base = model:embed("hello world")
    local seen
    local h = model:hook("blk.3.out", function(t, info)
      seen = { t:size(1), info.layer, info.n }
      t:narrow(1, 1, info.n):copy_(slm.tensor.zeros({ info.n, t:size(2) }))
    end)
    local zeroed = model:embed("hello world", { normalize = false })
    h:remove()
    assert.same({ 4, 3, 4 }, seen)   -- [CLS] hello world [SEP]
    for j = 1, zeroed:numel() do assert.equal(0, zeroed:get(j)) end
    assert.equal(base:tobytes(), model:embed("hello world"):tobytes())
    assert.equal("hook 'logits': bert models are encoders (blk.N points only)",
                 helpers.errmsg(model.hook, model, "logits", function() end))
  end)

  it("refuses what it cannot do, naming the option, limit or key", function()
    local model, path = load_bert("f16")
    if not model then return pending(path) end
    local e = helpers.errmsg
    assert.equal("embed: unknown option 'pool' (known: normalize, pooling)", e(model.embed, model, "x", { pool = "mean" }))
    assert.equal('embed: pooling must be "none", "mean", "cls" or "last", got "max"',
                 e(model.embed, model, "x", { pooling = "max" }))
    assert.equal("embed: normalize must be a boolean, got 1", e(model.embed, model, "x", { normalize = 1 }))
    assert.equal("embed: no tokens", e(model.embed, model, {}))
    assert.equal("embed: token id 600 at position 2 out of range 0..599", e(model.embed, model, { 2, 600 }))
    local long = {}
    for i = 1, 513 do long[i] = 109 end
    assert.equal("embed: 513 tokens exceed the model's context length 512 (bert.context_length)",
                 e(model.embed, model, long))
    long[513] = nil
    assert.same({ 512, 128 }, model:embed(long, { pooling = "none" }):shape())
    assert.equal("bert models are encoders (no KV cache, no logits): use model:embed(text)", e(model.session, model))
    -- file keys: pooling types the reference has and slm does not, unknown keys
    local rank = helpers.altered(path, { drop = { ["bert.pooling_type"] = true },
                                              metadata = { { "bert.pooling_type", { type = "u32", value = 4 } } } })
    local m, err = slm.load(rank)
    assert.is_nil(m)
    assert.equal(rank .. ": bert.pooling_type 4 is not supported (0 none, 1 mean, 2 cls, 3 last)", err)
    local extra = helpers.altered(path, { metadata = { { "bert.foo", { type = "u32", value = 1 } } } })
    m, err = slm.load(extra)
    assert.is_nil(m)
    assert.matches("metadata key 'bert.foo' is not understood", err, 1, true)
    local head = helpers.altered(path, { tensors = { { name = "cls.weight", tensor = slm.tensor.zeros { 128, 128 } } } })
    m, err = slm.load(head)
    assert.is_nil(m)
    assert.matches("tensor 'cls.weight' is not used by slm's bert definition", err, 1, true)
    local norm = helpers.altered(path, { metadata = { { "tokenizer.ggml.normalizer.nfkc", { type = "bool", value = true } } } })
    m, err = slm.load(norm)
    assert.is_nil(m)
    assert.equal(norm .. ": metadata key 'tokenizer.ggml.normalizer.nfkc' is not understood by slm's WordPiece "
                 .. "tokenizer (it may change the tokens)", err)
  end)

  it("honours bert.attention.causal = true: a row sees only the tokens up to it", function()
    local model, path = load_bert("f16")
    if not model then return pending(path) end
    local causal = assert(slm.load(helpers.altered(path, {
      drop = { ["bert.attention.causal"] = true },
      metadata = { { "bert.attention.causal", { type = "bool", value = true } } } })))
    local ids = { 2, 255, 6, 219, 7, 3 }
    local prefix = { 2, 255, 6 }
    local function rows(m, t) return m:embed(t, { pooling = "none", normalize = false }) end
    local full, part = rows(causal, ids), rows(causal, prefix)
    for t = 1, 3 do
      for j = 1, 128 do assert.near(full:get(t, j), part:get(t, j), 1e-5) end
    end
    -- the file's own (bidirectional) rows of the prefix change with what follows
    local bfull, bpart = rows(model, ids), rows(model, prefix)
    local md = 0
    for j = 1, 128 do md = math.max(md, math.abs(bfull:get(1, j) - bpart:get(1, j))) end
    assert.is_true(md > 0.01, "bidirectional row 1 moved by " .. md)
  end)
end)

describe("model:embed on decoders", function()
  -- output . (row i of the unnormalized, unpooled embedding) must be the
  -- logits a session gives after token i (the same ids in one batch, as
  -- embed runs them: mixtral's experts give other bits one token at a
  -- time): the rows are the normed hidden states the head reads
  local files = { "gguf/dense-q8_0.gguf", "gguf/qwen2-q8_0.gguf", "gguf2/gemma3-f16.gguf",
                  "gguf3/mixtral-f16.gguf", "gguf3/qwen3moe-q8_0.gguf", "gguf3/lfm2-f16.gguf",
                  "gguf/mamba-f16.gguf", "gguf3/mamba2-f16.gguf", "gguf/rwkv7-tiny-f16.gguf",
                  "rwkv/tiny-rwkv-5v2-730K-FP16.bin" }
  for _, rel in ipairs(files) do
    it(rel .. ": rows are what the head reads; last and mean pooling", function()
      local p, why = helpers.fixture(rel)
      if not p then return pending(why) end
      local model = assert(slm.load(p))
      local ids = { 1, 72, 200, 45, 190, 201, 17, 99 }
      local rows = model:embed(ids, { pooling = "none", normalize = false })
      assert.same({ #ids, model.hp.dim }, rows:shape())
      -- the same batch through a session that keeps every position's logits
      local W = model.net.output or model.net.head
      local sess = model:session { ctx = 16 }
      sess.all_logits = slm.tensor.zeros({ sess.n_batch, model.hp.n_vocab })
      sess:eval(ids)
      for i = 1, #ids do
        assert.equal(sess.all_logits:narrow(1, i, 1):tobytes(), ops.matmul(W, rows:narrow(1, i, 1)):tobytes())
      end
      -- default pooling "last", normalized
      local v = model:embed(ids)
      local q = 0
      for j = 1, model.hp.dim do q = q + rows:get(#ids, j) ^ 2 end
      for j = 1, model.hp.dim do assert.near(rows:get(#ids, j) / math.sqrt(q), v:get(j), 1e-6) end
      local mean = model:embed(ids, { pooling = "mean", normalize = false })
      for j = 1, model.hp.dim do
        local s = 0
        for t = 1, #ids do s = s + rows:get(t, j) end
        assert.near(s / #ids, mean:get(j), 1e-5)
      end
    end)
  end

  for _, rel in ipairs { "gguf2/llama3-f16.gguf", "gguf/mamba-f16.gguf" } do
    it(rel .. ": inputs longer than a batch keep every position's row (600 tokens)", function()
      local p, why = helpers.fixture(rel)
      if not p then return pending(why) end
      local model = assert(slm.load(p))
      local ids = {}
      for i = 1, 600 do ids[i] = (i * 37) % 512 end
      local rows = model:embed(ids, { pooling = "none", normalize = false })
      local W = model.net.output
      local sess = model:session { ctx = 600, batch = 100 }
      sess:eval(table.move(ids, 1, 599, 1, {}))
      local logits = sess:eval { ids[600] }
      assert.equal(logits:tobytes(), ops.matmul(W, rows:narrow(1, 600, 1)):tobytes())
      sess:reset()
      logits = sess:eval(table.move(ids, 1, 513, 1, {}))
      assert.equal(logits:tobytes(), ops.matmul(W, rows:narrow(1, 513, 1)):tobytes())
    end)
  end

  it("text goes through the model's tokenizer with its BOS", function()
    local p, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local model = assert(slm.load(p))
    local ids = model.tokenizer:encode("Hello world")
    assert.equal(1, ids[1])
    assert.equal(model:embed(ids):tobytes(), model:embed("Hello world"):tobytes())
  end)
end)
