-- Perplexity and KL divergence (slm.eval), checked against references
-- computed here from sess:eval logits one token at a time.
local helpers = require "spec.helpers"
local slm = require "slm"

local TEXT = "Once upon a time there was a little girl who lived in a village near the forest. "
          .. "Whenever she went out, she wore a red riding cloak."

local function load(rel, opts)
  local p, why = helpers.fixture(rel)
  if not p then return nil, why end
  return assert(slm.load(p, opts))
end

-- -log softmax(logits)[target] in double, written out here
local function nll_of(logits, target)
  local z = logits:totable()
  local mx = -math.huge
  for _, v in ipairs(z) do mx = math.max(mx, v) end
  local sum = 0
  for _, v in ipairs(z) do sum = sum + math.exp(v - mx) end
  return -(z[target + 1] - mx - math.log(sum))
end

-- the reference: target j (2..N) is predicted from toks[a..j-1], a = the
-- start of the first window (starts 1, 1+stride, ...) holding j after its
-- first token; a token only ever first in a window is not scored
local function reference_ppl(model, toks, ctx, stride)
  local total, n = 0, 0
  for j = 2, #toks do
    local a = 1
    while a < j and a + ctx - 1 < j do a = a + stride end
    if a < j then
      local s = model:session { ctx = ctx }
      local logits
      for i = a, j - 1 do logits = s:eval({ toks[i] }) end
      total = total + nll_of(logits, toks[j])
      n = n + 1
    end
  end
  return math.exp(total / n), n
end

local run = helpers.run

describe("perplexity", function()
  it("equals exp(mean NLL) from token-by-token logits (one window)", function()
    local m, why = load("gguf/dense-q8_0.gguf")
    if not m then return pending(why) end
    local toks = m.tokenizer:encode("Once upon a time there was a girl")
    local ref, n = reference_ppl(m, toks, 64, 64)
    local r = slm.eval.perplexity(m, "Once upon a time there was a girl", { ctx = 64 })
    assert.equal(n, r.n)
    assert.is_true(math.abs(r.ppl - ref) / ref < 1e-4, r.ppl .. " vs " .. ref)
    assert.is_true(math.abs(math.exp(r.nll) - r.ppl) < 1e-9 * r.ppl)
  end)

  it("sliding windows (ctx 8, stride 3 and 8) score every token once with the right context", function()
    local m, why = load("gguf/dense-f16.gguf")
    if not m then return pending(why) end
    local toks = m.tokenizer:encode(TEXT:sub(1, 60))
    for _, stride in ipairs { 3, 8 } do
      local ref, n = reference_ppl(m, toks, 8, stride)
      local r = slm.eval.perplexity(m, toks, { ctx = 8, stride = stride, batch = 5 })
      -- disjoint windows cannot score their first tokens
      assert.equal(stride == 8 and #toks - 1 - (#toks - 1) // 8 or #toks - 1, n)
      assert.equal(n, r.n)
      assert.is_true(math.abs(r.ppl - ref) / ref < 1e-4, stride .. ": " .. r.ppl .. " vs " .. ref)
    end
  end)

  it("works for recurrent models (RWKV, Mamba) through their all-logits heads", function()
    local rw, why = load("rwkv/tiny-rwkv-5v2-730K-FP32.bin", { tokenizer = slm.tokenizer.bytes() })
    if not rw then return pending(why) end
    local toks = rw.tokenizer:encode(TEXT:sub(1, 40))
    local ref = reference_ppl(rw, toks, 16, 8)
    local r = slm.eval.perplexity(rw, toks, { ctx = 16, stride = 8 })
    assert.is_true(math.abs(r.ppl - ref) / ref < 1e-4, r.ppl .. " vs " .. ref)
    assert.is_true(r.ppl < 30)   -- a trained model on English: far below the 256 of chance
    local mb = load("gguf/mamba-q8_0.gguf")
    if not mb then return pending("fixture gguf/mamba-q8_0.gguf not found") end
    local mt = { 5, 9, 200, 31, 7, 77, 12, 3, 90, 41 }
    local mref = reference_ppl(mb, mt, 6, 2)
    local mr = slm.eval.perplexity(mb, mt, { ctx = 6, stride = 2 })
    assert.is_true(math.abs(mr.ppl - mref) / mref < 1e-4, mr.ppl .. " vs " .. mref)
  end)

  it("is what bin/slm perplexity prints; disjoint windows skip a last window of one token", function()
    local p, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local m = assert(slm.load(p))
    local toks = m.tokenizer:encode(TEXT)
    -- ctx such that the last window would hold the last token alone
    local ctx = 8
    while (#toks - 1) % ctx ~= 0 do ctx = ctx + 1 end
    local calls = {}
    local r = slm.eval.perplexity(m, TEXT, { ctx = ctx, progress = function(done, total) calls[#calls + 1] = done end })
    local windows = (#toks - 1) // ctx
    assert.equal(windows, #calls)                  -- no window without a token to score
    assert.equal(#toks - 1 - windows, r.n)
    local txt = helpers.tmpfile(TEXT)
    local out, code = run("SLM_PROGRESS=0 bin/slm perplexity " .. p .. " " .. txt .. " --ctx " .. ctx)
    assert.equal(0, code, out)
    assert.equal(string.format("%d tokens scored in %d windows of up to %d\n%.4f\n", r.n, windows, ctx, r.ppl), out)
    os.remove(txt)
  end)

  it("rejects bad options and texts", function()
    local m, why = load("gguf/dense-q8_0.gguf")
    if not m then return pending(why) end
    assert.has_error(function() slm.eval.perplexity(m, { 1 }) end, "perplexity: the text has fewer than 2 tokens")
    assert.has_error(function() slm.eval.perplexity(m, TEXT, { ctx = 8, stride = 9 }) end,
                     "eval: stride must be an integer in 1..ctx")
    assert.has_error(function() slm.eval.perplexity(m, TEXT, { ctx = 1 }) end, "eval: ctx must be an integer >= 2")
  end)
end)

describe("KL divergence", function()
  it("of a model from itself is 0 with full top-1 agreement", function()
    local m, why = load("gguf/dense-q8_0.gguf")
    if not m then return pending(why) end
    local k = slm.eval.kl(m, m, TEXT, { ctx = 32 })
    assert.equal(0, k.mean)
    assert.equal(0, k.max)
    assert.equal(1, k.top1)
    assert.is_true(math.abs(k.ppl - k.ppl_base) < 1e-9)
  end)

  it("between f16 and q4_0 dense fixtures is positive and small; matches a hand computation", function()
    local base, why = load("gguf/dense-f16.gguf")
    if not base then return pending(why) end
    local q = load("gguf/dense-q4_0.gguf")
    if not q then return pending("fixture gguf/dense-q4_0.gguf not found") end
    local k = slm.eval.kl(base, q, TEXT, { ctx = 64 })
    assert.is_true(k.mean > 0 and k.mean < 0.05, "mean " .. k.mean)
    assert.is_true(k.max >= k.mean)
    assert.is_true(k.top1 > 0.6, "top1 " .. k.top1)
    -- by hand, one token at a time: KL(p || q) = sum p (log p - log q)
    local function logsm(z)
      local mx, s = -math.huge, 0
      for _, v in ipairs(z) do mx = math.max(mx, v) end
      for _, v in ipairs(z) do s = s + math.exp(v - mx) end
      local out = {}
      for i, v in ipairs(z) do out[i] = v - mx - math.log(s) end
      return out
    end
    local toks = base.tokenizer:encode("Once upon a time there")
    local sp, sq = base:session { ctx = 16 }, q:session { ctx = 16 }
    local sum, mx = 0, 0
    for i = 1, #toks - 1 do
      local p = logsm(sp:eval({ toks[i] }):totable())
      local qq = logsm(sq:eval({ toks[i] }):totable())
      local d = 0
      for v = 1, #p do d = d + math.exp(p[v]) * (p[v] - qq[v]) end
      sum, mx = sum + d, math.max(mx, d)
    end
    local k1 = slm.eval.kl(base, q, toks, { ctx = 16 })
    assert.equal(#toks - 1, k1.n)
    local mean = sum / (#toks - 1)
    assert.is_true(math.abs(k1.mean - mean) < 1e-3 * mean, k1.mean .. " vs " .. mean)
    assert.is_true(math.abs(k1.max - mx) < 1e-3 * mx)
  end)

  it("needs equal vocabularies", function()
    local a, why = load("gguf/dense-q8_0.gguf")
    if not a then return pending(why) end
    local b = load("gguf/mamba-q8_0.gguf")
    if not b or b.hp.n_vocab == a.hp.n_vocab then return pending("no model with another vocabulary") end
    assert.has_error(function() slm.eval.kl(a, b, { 1, 2, 3 }) end)
  end)
end)

describe("examples", function()
  it("perplexity.lua prints perplexity and KL against a base", function()
    local p, why = helpers.fixture("rwkv/tiny-rwkv-5v2-730K-Q5_1.bin")
    if not p then return pending(why) end
    local base = helpers.fixtures .. "/rwkv/tiny-rwkv-5v2-730K-FP32.bin"
    local txt = helpers.tmpfile(TEXT)
    local out, code = run("bin/slm examples/perplexity.lua " .. p .. " " .. txt .. " 32 16 " .. base)
    os.remove(txt)
    assert.equal(0, code, out)
    assert.matches("perplexity [%d.]+ over %d+ tokens", out)
    assert.matches("KL%(base || model%): mean [%d.]+", out)
    local out2, code2 = run("bin/slm examples/perplexity.lua " .. p .. " /nonexistent.txt")
    assert.equal(1, code2)
    assert.matches("nonexistent.txt", out2, 1, true)
  end)
end)
