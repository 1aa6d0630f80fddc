-- Every example runs against the fixtures (skipping when they are absent).
local helpers = require "spec.helpers"
local slm = require "slm"

local run = helpers.run

describe("examples", function()
  it("inspect.lua prints every fixture GGUF", function()
    local dir, why = helpers.fixture("gguf")
    if not dir then return pending(why) end
    local n = 0
    for name in io.popen("ls " .. dir):lines() do
      if name:match("%.gguf$") then
        local out, code = run("bin/slm examples/inspect.lua " .. dir .. "/" .. name)
        assert.equal(0, code, out)
        assert.matches("architecture", out, 1, true)
        assert.matches("token_embd.weight", out, 1, true)
        n = n + 1
      end
    end
    assert.is_true(n >= 20)
  end)

  it("inspect.lua fails with one clear line on a missing file", function()
    local out, code = run("bin/slm examples/inspect.lua /nonexistent.gguf")
    assert.equal(1, code)
    assert.equal("inspect.lua: /nonexistent.gguf: No such file or directory\n", out)
  end)

  it("generate.lua streams text and reports speed", function()
    local path, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not path then return pending(why) end
    local out, code = run("bin/slm examples/generate.lua " .. path .. " 'Once upon' 12")
    assert.equal(0, code, out)
    assert.matches("^Once upon", out)
    assert.matches("%[12 tokens, [%d.]+ tok/s%]", out)
  end)

  it("search.lua ranks a file's lines by cosine similarity to each query", function()
    local path, why = helpers.fixture("gguf3/bert-f16.gguf")
    if not path then return pending(why) end
    local lines = { "The weather is sunny today.", "I drank hot coffee in the morning.",
                    "The king and the queen lived in a large house.", "Machine learning models embed sentences.",
                    string.rep("word ", 700) }   -- longer than the context: cut to 512 tokens
    local file = helpers.tmpfile(table.concat(lines, "\n\n") .. "\n")
    local out, code = run("bin/slm examples/search.lua " .. path .. " " .. file .. " 'sunny weather' 'hot coffee' 'word word' --top 2")
    assert.equal(0, code, out)
    -- the expected order and scores, from model:embed in this process
    local slm = require "slm"
    local m = assert(slm.load(path))
    local vecs = {}
    for i, l in ipairs(lines) do
      local ids = m.tokenizer:encode(l)
      if #ids > 512 then   -- the first 511 ids and the last ([SEP])
        local last = ids[#ids]
        for k = #ids, 512, -1 do ids[k] = nil end
        ids[512] = last
      end
      vecs[i] = m:embed(ids)
    end
    local expect = {}
    for _, q in ipairs { "sunny weather", "hot coffee", "word word" } do
      local v = m:embed(q)
      local scored = {}
      for i = 1, #lines do
        local dot = 0
        for j = 1, v:numel() do dot = dot + v:get(j) * vecs[i]:get(j) end
        scored[i] = { dot, i }
      end
      table.sort(scored, function(a, b) return a[1] > b[1] end)
      expect[#expect + 1] = "query: " .. q
      for r = 1, 2 do expect[#expect + 1] = string.format("  %6.3f  %s", scored[r][1], lines[scored[r][2]]) end
    end
    assert.equal(table.concat(expect, "\n") .. "\n", out)
    -- queries from stdin
    local qf = helpers.tmpfile("sunny weather\n\nhot coffee\nword word\n")
    local out2 = run("bin/slm examples/search.lua " .. path .. " " .. file .. " --top 2 < " .. qf)
    assert.equal(out, out2)
    local bad, bcode = run("bin/slm examples/search.lua " .. path)
    assert.equal(1, bcode)
    assert.equal("usage: search.lua MODEL FILE [QUERY ...] [--top K]\n", bad)
  end)

  -- Each example either runs on a kind of model or says at once, in one
  -- line, what it needs (the table of every example on every fixture kind
  -- is in the issue note; these are the refusals, one per reason).
  describe("refuse at once, in one line, what they cannot run on", function()
    local F = helpers.fixtures
    local bert, l2c = F .. "/gguf3/bert-q8_0.gguf", F .. "/llama2c/stories260K.bin"
    local rwkvcpp, mamba = F .. "/rwkv/tiny-rwkv-7v0-834K-FP32.bin", F .. "/gguf/mamba-q8_0.gguf"
    local dense = F .. "/gguf/dense-q8_0.gguf"
    local ENCODER = " is a bert encoder (no logits); this example needs a decoder (llama family, gemma, lfm2, mamba, rwkv)"
    local NO_TOK = " has no tokenizer (a llama2.c checkpoint does not carry its vocabulary); this example needs text"
    local PLANS = "gemma, gemma2, gemma3, granite, lfm2, llama, olmoe, phi3, qwen2, qwen2moe, qwen3, qwen3moe, smollm3"
    local text = helpers.tmpfile("Once upon a time.\nThe weather is sunny.\n")
    local cases = {
      { "generate.lua " .. bert .. " hi", "generate.lua: " .. bert .. ENCODER },
      { "chat.lua " .. bert .. " < /dev/null", "chat.lua: " .. bert .. ENCODER },
      { "pipeline.lua " .. dense .. " " .. bert .. " q", "pipeline.lua: " .. bert .. ENCODER },
      { "hooks.lua " .. l2c, "hooks.lua: " .. l2c .. NO_TOK },
      { "perplexity.lua " .. l2c .. " " .. text, "perplexity.lua: " .. l2c .. NO_TOK },
      { "search.lua " .. l2c .. " " .. text .. " q", "search.lua: " .. l2c .. NO_TOK },
      { "layer_skip.lua " .. mamba, "layer_skip.lua: variant: mamba models have no layer plans (architectures with "
                                    .. "plans: " .. PLANS .. ")" },
      { "prune.lua " .. rwkvcpp, "prune.lua: " .. rwkvcpp .. " is a rwkv.cpp file; this example needs a GGUF file" },
      { "lora.lua " .. l2c, "lora.lua: " .. l2c .. " is a llama2.c file; this example needs a GGUF file" },
      { "quantize_policy.lua " .. rwkvcpp .. " /tmp/never.gguf",
        "quantize_policy.lua: " .. rwkvcpp .. " is a rwkv.cpp file; this example needs a GGUF file" },
      { "rwkv_tiny.lua " .. dense, "rwkv_tiny.lua: " .. dense .. " is not a byte-level model (llama, vocabulary 512); "
                                   .. "this example needs a 256-token vocabulary (rwkv.cpp's tiny files, rwkv6/rwkv7-tiny GGUFs)" },
      { "inspect.lua " .. rwkvcpp, "inspect.lua: " .. rwkvcpp .. ": not a GGUF file (magic bytes 66 6d 67 67, expected "
                                   .. "'GGUF') (bin/slm info describes rwkv.cpp and llama2.c files)" },
      { "perplexity.lua " .. dense .. " " .. text .. " 1", "perplexity.lua: ctx must be an integer >= 2, got 1" },
    }
    for _, c in ipairs(cases) do
      it(c[1]:match("^%S+") .. " on " .. c[1]:match("^%S+ (%S+)"):match("[^/]+$"), function()
        if not helpers.exists(c[1]:match("^%S+ (%S+)")) then return pending("fixtures not found") end
        local out, code = run("bin/slm examples/" .. c[1])
        assert.equal(1, code)
        assert.equal(c[2] .. "\n", out)
      end)
    end
  end)

  it("run where they apply, skipping (and saying) the parts that do not", function()
    local F = helpers.fixtures
    local mamba, rwkvcpp, bert = F .. "/gguf/mamba-q8_0.gguf", F .. "/rwkv/tiny-rwkv-7v0-834K-FP32.bin",
                                 F .. "/gguf3/bert-q8_0.gguf"
    if not (helpers.exists(mamba) and helpers.exists(rwkvcpp) and helpers.exists(bert)) then
      return pending("fixtures not found")
    end
    -- prune on mamba: magnitude pruning only, the other two said at the start
    local out, code = run("(bin/slm examples/prune.lua " .. mamba .. " 2>&1 >/dev/null)")
    assert.equal(0, code, out)
    assert.equal("prune.lua: mamba has no separate attn_q (fused attn_qkv, or no attention): no head pruning\n"
                 .. "prune.lua: mamba has no gated feed-forward of 64+ channels in every layer: no FFN-channel pruning\n",
                 out)
    out, code = run("(bin/slm examples/prune.lua " .. mamba .. " 2>/dev/null)")
    assert.equal(0, code, out)
    assert.matches("^original .*\nmagnitude 50%% global [^\n]+\n$", out)
    -- hooks on mamba: no ffn_out point, the middle layer's output becomes its input
    out, code = run("bin/slm examples/hooks.lua " .. mamba)
    assert.equal(0, code, out)
    local logit = tonumber(out:match("\nnext token %d+ .- %(logit ([%-%d.]+)%)\n"))
    local ablated = tonumber(out:match("\nablated blk%.2 %(output := input%): next token %d+ .- %(logit ([%-%d.]+)%)\n"))
    assert.is_truthy(logit and ablated, out)
    assert.are_not.equal(logit, ablated)   -- the middle layer's contribution is gone
    -- a byte-level rwkv.cpp file reads bytes
    out, code = run("(bin/slm examples/generate.lua " .. rwkvcpp .. " 'In the morning' 8 2>/dev/null)")
    assert.equal(0, code, out)
    local m = assert(slm.load(rwkvcpp, { tokenizer = slm.tokenizer.bytes() }))
    assert.equal("In the morning" .. m:session { ctx = 64 }:generate("In the morning", { max_tokens = 8 }, function() end)
                 .. "\n", out)
    -- lora on mamba adapts its in/out projections
    out, code = run("bin/slm examples/lora.lua " .. mamba)
    assert.equal(0, code, out)
    assert.matches("^wrote a random adapter of ssm_in, ssm_out: ", out)
    assert.is_true(tonumber(out:match("scale 1%.00: KL from base ([%d.]+)")) > 0)
    -- quantize_policy on an encoder compares sentence embeddings
    local dst = os.tmpname() .. ".gguf"
    out, code = run("bin/slm examples/quantize_policy.lua " .. bert .. " " .. dst)
    assert.equal(0, code, out)
    local cos = tonumber(out:match("cosine of the sentence embeddings %(source, quantized%) ([%d.]+)\n$"))
    assert.is_true(cos > 0.99 and cos <= 1.000001, out)
    os.remove(dst)
  end)

  it("train_tiny.lua trains, printing the loss and a sample as it goes and the validation loss at the end", function()
    local corpus
    for _, p in ipairs { "data/tinyshakespeare.txt", "../shared/corpora/tinyshakespeare.txt" } do
      if helpers.exists(p) then corpus = p break end
    end
    if not corpus then return pending("tinyshakespeare.txt not found (data/ or ../shared/corpora/)") end
    local out, code = run("bin/slm examples/train_tiny.lua " .. corpus .. " 8 2")
    assert.equal(0, code, out)
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.matches("^corpus: tinyshakespeare%.txt, %d+ characters, 65 distinct; %d+ train / %d+ validation$", lines[1])
    assert.equal("model: llama, dim 64, 2 layers, 4 heads, ff 160, context 128: 102848 parameters", lines[2])
    assert.matches("^training: 8 s on 2 threads, batches of 32 x 128 characters", lines[3])
    -- progress: [time] step N loss L "ROMEO:..." (a sample on one line), steps increasing
    local reports = {}
    for i = 4, #lines - 1 do
      local t, step, loss, sample = lines[i]:match('^%[%s*([%d.]+)s%] step%s+(%d+)  loss (%d+%.%d+)  (".*")$')
      assert(t, "not a progress line: " .. lines[i])
      assert.matches('^"ROMEO:', sample)
      reports[#reports + 1] = { step = tonumber(step), loss = tonumber(loss) }
    end
    assert.is_true(#reports >= 3, out)
    assert.equal(0, reports[1].step)
    for i = 2, #reports do assert.is_true(reports[i].step > reports[i - 1].step) end
    local val, before = lines[#lines]:match("^validation loss (%d+%.%d+) nats/char %((%d+%.%d+) before training%), "
                                            .. "20 batches of 32 x 128; %d+ steps in [%d.]+ s, %d+ characters/s$")
    assert(val, "not the validation line: " .. lines[#lines])
    -- the loss fell: ln 65 = 4.17 at the start; well below it after a few seconds
    assert.near(math.log(65), tonumber(before), 0.05)
    assert.is_true(reports[#reports].loss < reports[1].loss - 1, out)
    assert.is_true(tonumber(val) < tonumber(before) - 1, out)
    -- misuse: one line, status 1
    local bad, bcode = run("bin/slm examples/train_tiny.lua /nonexistent.txt")
    assert.equal(1, bcode)
    assert.equal("train_tiny.lua: /nonexistent.txt: No such file or directory\n", bad)
    bad, bcode = run("bin/slm examples/train_tiny.lua " .. corpus .. " soon")
    assert.equal(1, bcode)
    assert.equal("train_tiny.lua: SECONDS must be a positive number, got soon\n", bad)
    local short = helpers.tmpfile("To be, or not to be.\n")
    bad, bcode = run("bin/slm examples/train_tiny.lua " .. short .. " 1")
    assert.equal(1, bcode)
    assert.equal("train_tiny.lua: " .. short .. ": 21 characters are too few for training windows of 129 "
                 .. "(90 % of the text trains)\n", bad)
  end)

  it("generate.lua without a tokenizer says so", function()
    local path, why = helpers.fixture("llama2c/stories260K.bin")
    if not path then return pending(why) end
    local out, code = run("bin/slm examples/generate.lua " .. path .. " 'Once'")
    assert.equal(1, code)
    assert.matches("has no tokenizer", out, 1, true)
  end)
end)
