-- The shipped models (issue 16): the default model
-- models/default/shakespeare-bpe512.gguf (made by tools/default_model.lua,
-- `make default-model`: a byte-level BPE of 512 tokens, chosen over
-- characters by validation loss per character), the name "default" in
-- slm.load and in the slm commands, the figures recorded beside it; and the
-- character-level model of the same recipe, models/char/shakespeare-char.gguf
-- (the name "shakespeare-char").
local helpers = require "spec.helpers"
local slm = require "slm"

local FILE = "models/default/shakespeare-bpe512.gguf"
local CHAR_FILE = "models/char/shakespeare-char.gguf"

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- run(args [, stdin]) -> stdout, stderr, exit code
local function run(args, stdin)
  local errf = os.tmpname()
  local cmd = "SLM_PROGRESS=0 bin/slm " .. args .. " 2>" .. errf
  local inf
  if stdin then
    inf = helpers.tmpfile(stdin)
    cmd = cmd .. " <" .. inf
  end
  local p = io.popen(cmd .. "; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local err = helpers.read(errf)
  os.remove(errf)
  if inf then os.remove(inf) end
  return (out:gsub("exit=%d+%s*$", "")), err, tonumber(out:match("exit=(%d+)%s*$"))
end

-- the characters of the corpus (the model's vocabulary)
local CORPUS = helpers.read("data/tinyshakespeare.txt")
local VOCAB = {}
for c in CORPUS:gmatch(".") do VOCAB[c] = true end

local function only_corpus_chars(s)
  for c in s:gmatch(".") do
    if not VOCAB[c] then return false, c end
  end
  return true
end

describe("the default model", function()
  it("is shipped: a Q8_0 GGUF of at most 10 MB with its tokenizer and the recipe's metadata", function()
    local size = helpers.size(FILE)
    assert.is_truthy(size, FILE .. " is missing")
    assert.is_true(size <= 10 * 1000 * 1000, "larger than 10 MB: " .. tostring(size))
    local f = assert(slm.gguf.open(FILE))
    local md = f.metadata
    assert.equal("llama", md["general.architecture"])
    assert.equal(7, md["general.file_type"])                 -- LLAMA_FTYPE_MOSTLY_Q8_0
    assert.equal("slm-default-shakespeare-bpe512", md["general.name"])
    assert.equal("tools/default_model.lua", md["slm.recipe"])
    assert.equal("bpe:512", md["slm.recipe.tokenizer"])
    assert.matches("make default%-model", md["general.description"])
    assert.equal("gpt2", md["tokenizer.ggml.model"])          -- byte-level BPE
    assert.equal(512, f:arr_len("tokenizer.ggml.tokens"))
    local q8 = 0
    for _, t in ipairs(f.tensors) do
      if #t.shape == 2 then
        assert.equal("q8_0", t.dtype, t.name)
        q8 = q8 + 1
      end
    end
    assert.equal(6 * 7 + 2, q8)                                -- 7 matrices a layer, embedding, head
    f:close()
  end)

  it("is what slm.load('default') loads, from the checkout's models/default", function()
    assert.matches("models/default/shakespeare%-bpe512%.gguf$", slm.model.default_path())
    local m = assert(slm.load("default"))
    assert.equal(slm.model.default_path(), m.path)
    assert.equal(512, m.hp.n_vocab)
    assert.equal(128, m.hp.n_ctx_train)
    -- the BPE tokenizer: fewer tokens than characters, exact round trip
    local slice = CORPUS:sub(1001, 3000)
    local ids = m.tokenizer:encode(slice, { add_special = false })
    assert.is_true(#ids < 0.7 * #slice, #ids)
    assert.equal(slice, m.tokenizer:decode(ids))
    -- greedy text: 60 tokens, all of the corpus's alphabet, and mostly
    -- letters and spaces (a model that learnt nothing gives noise)
    local sess = m:session()
    local text = sess:generate("ROMEO:", { max_tokens = 60, sampler = slm.sampler.greedy() }, function() end)
    assert.is_true(#text >= 60, text)
    assert.is_true(only_corpus_chars(text))
    local letters = select(2, text:gsub("[%a%s]", ""))
    assert.is_true(letters >= 0.8 * #text, text)
    -- options are still checked first
    assert.has_error(function() slm.load("default", { bogus = 1 }) end)
  end)

  it("predicts the validation text as the record says (the figures are the file's)", function()
    local rec = helpers.json_decode(helpers.read("models/default/record.json"))
    assert.is_true(rec.val_loss_q8_0 <= 1.60, "validation loss " .. rec.val_loss_q8_0)
    assert.equal(helpers.size(FILE), rec.file_bytes)
    -- a slice of the validation text (the last 10 % of the characters):
    -- its loss per character (each scored token's loss spread over the
    -- characters it spells) is near the recorded one for the whole of it;
    -- an untrained or broken model is above 3
    local lo = math.floor(0.9 * #CORPUS) + 1
    local m = assert(slm.load("default"))
    local ids = m.tokenizer:encode(CORPUS:sub(lo, lo + 128 * 48), { add_special = false })
    ids = table.move(ids, 1, 128 * 24 + 1, 1, {})
    local r = slm.eval.perplexity(m, ids, { ctx = 129, stride = 128 })
    assert.equal(128 * 24, r.n)
    local chars = 0
    for i = 2, #ids do chars = chars + #m.tokenizer:decode({ ids[i] }) end
    local per_char = r.nll * r.n / chars
    assert.is_true(math.abs(per_char - rec.val_loss_q8_0) < 0.25, string.format("%.4f vs %.4f", per_char,
                                                                                rec.val_loss_q8_0))
  end)

  it("has a character-level sibling, the name shakespeare-char (the same recipe over characters)", function()
    local size = helpers.size(CHAR_FILE)
    assert.is_truthy(size, CHAR_FILE .. " is missing")
    assert.is_true(size <= 10 * 1000 * 1000)
    assert.equal(assert(slm.model.resolve("shakespeare-char")):match("models/char/shakespeare%-char%.gguf$") and true,
                 true)
    local m = assert(slm.load("shakespeare-char"))
    assert.equal(65, m.hp.n_vocab)
    -- the character tokenizer: one id per character, ids in code-point order
    assert.equal(6, #m.tokenizer:encode("ROMEO:", { add_special = false }))
    assert.equal(0, m.tokenizer:encode("\n", { add_special = false })[1])
    assert.equal(1, m.tokenizer:encode(" ", { add_special = false })[1])
    local rec = helpers.json_decode(helpers.read("models/char/record.json"))
    assert.equal(size, rec.file_bytes)
    -- the choice of the default: BPE's validation loss per character is lower
    local brec = helpers.json_decode(helpers.read("models/default/record.json"))
    assert.is_true(brec.val_loss_q8_0 < rec.val_loss_q8_0, string.format("%.4f vs %.4f", brec.val_loss_q8_0,
                                                                         rec.val_loss_q8_0))
    local text = m:session():generate("ROMEO:", { max_tokens = 40, sampler = slm.sampler.greedy() }, function() end)
    assert.equal(40, #text)
    assert.is_true(only_corpus_chars(text))
  end)

  it("is a one-line error naming make default-model when its file is missing", function()
    local saved = slm.model.default_path
    slm.model.default_path = function() return "/nonexistent/shakespeare-bpe512.gguf" end
    local m, err = slm.load("default")
    slm.model.default_path = saved
    assert.is_nil(m)
    assert.matches("^default: the default model is missing %(/nonexistent/shakespeare%-bpe512%.gguf; "
                   .. "`make default%-model` trains it%)$", err)
  end)
end)

describe("slm commands with the default model", function()
  it("run with no MODEL prints text from the default model (the same as `run default`)", function()
    local out, err, code = run("run -p 'ROMEO:' -n 100 --seed 7")
    assert.equal(0, code, err)
    assert.is_true(#out > 100, out)                            -- 100 tokens (of about 1.9 characters)
    assert.equal("\n", out:sub(-1))                            -- run's final newline
    assert.is_true(only_corpus_chars(out))
    local out2, _, code2 = run("run default -p 'ROMEO:' -n 100 --seed 7")
    assert.equal(0, code2)
    assert.equal(out, out2)
    local out4, _, code4 = run("run " .. sh_quote(slm.model.default_path()) .. " -p 'ROMEO:' -n 100 --seed 7")
    assert.equal(0, code4)
    assert.equal(out, out4)
  end)

  it("run without a prompt is still a usage error", function()
    local out, err, code = run("run")
    assert.equal(1, code)
    assert.equal("", out)
    assert.matches("^slm: usage: slm run %[MODEL%]", err)
  end)

  it("perplexity default FILE scores the file", function()
    local lo = math.floor(0.9 * #CORPUS) + 1
    local path = helpers.tmpfile(CORPUS:sub(lo, lo + 2000))
    local out, err, code = run("perplexity default " .. path)
    os.remove(path)
    assert.equal(0, code, err)
    local ppl = tonumber(out:match("^([%d.]+)\n$"))
    assert.is_truthy(ppl, out)
    -- per token: e^(1.5 nats/char x 1.9 chars/token) ≈ 17; an untrained model ≈ 512
    assert.is_true(ppl > 1 and ppl < 40, out)
    assert.matches("tokens scored in %d+ windows of up to 128", err)
  end)

  it("info default says where it came from", function()
    local out, err, code = run("info default")
    assert.equal(0, code, err)
    assert.matches("file +[^\n]*models/default/shakespeare%-bpe512%.gguf", out)
    assert.matches("\ndefault +slm's default model", out)
    assert.matches("\nmade by +tools/default_model%.lua %(slm%.recipe%): data/tinyshakespeare%.txt", out)
    assert.matches("general%.description +\"byte%-level BPE %(512 tokens%) llama trained by slm: make de", out)
    assert.matches("tokenizer bpe:512, 1800 steps, seed 1337, validation loss 1%.50%d%d nats/char", out)
    assert.matches("q8_0", out)
  end)

  it("examples/generate.lua with no arguments uses the default model", function()
    local out, err, code = run("examples/generate.lua")
    assert.equal(0, code, err)
    assert.equal("ROMEO:", out:sub(1, 6))
    assert.is_true(#out > 6 + 100 + 1, out)                    -- the prompt, 100 tokens, a newline
    assert.is_true(only_corpus_chars(out))
    assert.matches("%[100 tokens", err)
  end)

  it("the examples that take one model use the default model without one", function()
    local out, err, code = run("examples/inspect.lua")
    assert.equal(0, code, err)
    assert.matches("shakespeare%-bpe512%.gguf", out)
    out, err, code = run("examples/hooks.lua")
    assert.equal(0, code, err)
    assert.matches("ablated blk%.%d+%.ffn_out", out)
    out, err, code = run("examples/layer_skip.lua")
    assert.equal(0, code, err)
    assert.matches("recursion", out)
  end)

  it("repl with no MODEL binds the default model", function()
    local out, err, code = run("repl", "model.hp.n_vocab\n#encode('ROMEO:')\nmodel.path:match('[^/]*$')\n")
    assert.equal(0, code, err)
    local m = assert(slm.load("default"))
    assert.equal(string.format("512\n%d\nshakespeare-bpe512.gguf\n",
                               #m.tokenizer:encode("ROMEO:", { add_special = false })), out)
  end)
end)
