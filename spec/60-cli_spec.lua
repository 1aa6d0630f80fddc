-- The `slm` command, run through bin/slm (which honours BUILD and
-- SLM_PRELOAD, so this also runs under the ASan build).
local helpers = require "spec.helpers"
local slm = require "slm"

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

-- run(args [, env] [, stdin]) -> stdout, stderr, exit code
local function run(args, env, stdin)
  local errf = os.tmpname()
  local prefix = (env and env.SLM_PROGRESS == false) and "unset SLM_PROGRESS; " or "SLM_PROGRESS=0 "
  for k, v in pairs(env or {}) do
    if v then prefix = prefix .. k .. "=" .. sh_quote(v) .. " " end
  end
  local cmd = prefix .. "bin/slm " .. args .. " 2>" .. errf
  if stdin then
    local inf = helpers.tmpfile(stdin)
    cmd = cmd .. " <" .. inf
  end
  local p = io.popen(cmd .. "; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local err = helpers.read(errf)
  os.remove(errf)
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return (out:gsub("exit=%d+%s*$", "")), err, code
end

local function fx(rel)
  local p, why = helpers.fixture(rel)
  return p, why
end

-- Plain English prose (written for these tests) for perplexity.
local ENGLISH = [[
In the morning, the little cat walked along the garden wall and looked at the birds in the old apple
tree. The sun was warm, and the grass was still wet from the rain of the night before. A boy came out
of the house with a bowl of milk, and the cat jumped down to meet him. They sat together by the door,
and the boy told the cat about the long day he would have at school, about his friends and his
teacher, and about the story he had read the evening before. When the bell rang in the village, he
said goodbye, and the cat went back to the wall to sleep in the sun until he came home again.
]]

describe("slm command", function()
  it("help lists every command; no command and --help too", function()
    for _, args in ipairs { "help", "--help", "" } do
      local out, err, code = run(args == "" and "help" or args)
      assert.equal(0, code, err)
      for _, c in ipairs { "run", "chat", "info", "tokenize", "embed", "bench", "quantize", "perplexity", "repl", "pull" } do
        assert.matches("\n  " .. c .. " ", out, 1, true)
      end
    end
  end)

  it("run streams the greedy continuation rwkv.cpp computed (.ref ids)", function()
    local p, why = fx("rwkv/tiny-rwkv-5v1-730K-FP32.bin")
    if not p then return pending(why) end
    local ref = helpers.read_ref(p:gsub("%.bin$", ".ref"))
    local out, err, code = run("run " .. p .. [[ -p '"in the morning, the little cat' -n 40 --temp 0]])
    assert.equal(0, code, err)
    assert.equal("", err)
    local want = {}
    for i, id in ipairs(ref.gen) do want[i] = string.char(id) end
    want = table.concat(want)
    assert.equal(16, #want)   -- "egories and the "
    assert.equal(want, out:sub(1, #want))
    assert.equal(41, #out)   -- 40 bytes and the final newline
  end)

  it("run with sampler flags is reproducible with a seed", function()
    local p, why = fx("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local args = "run " .. p .. " -p 'Once upon' -n 16 --temp 0.9 --top-k 20 --top-p 0.9 --min-p 0.01 "
                 .. "--repeat-penalty 1.1 --seed 7 --ctx 64 --threads 1"
    local a, err, code = run(args)
    assert.equal(0, code, err)
    local b = run(args)
    assert.equal(a, b)
    assert.is_true(#a > 1)
  end)

  it("run --kv-type gives the session that cache type (the same text as sess:generate with it)", function()
    local p, why = fx("gguf/dense-f16.gguf")
    if not p then return pending(why) end
    local slm = require "slm"
    local m = assert(slm.load(p))
    for _, kt in ipairs { "q8_0", "q4_0" } do
      local out, err, code = run("run " .. p .. " -p 'Once upon' -n 24 --temp 0 --ctx 64 --kv-type " .. kt)
      assert.equal(0, code, err)
      local s = m:session { ctx = 64, kv_type = kt }
      local want = s:generate("Once upon", { max_tokens = 24, sampler = slm.sampler.greedy() }, function() end)
      assert.equal(want .. "\n", out)
    end
  end)

  it("info shows architecture, parameters, dtypes, metadata and tokenizer", function()
    local p, why = fx("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local out, err, code = run("info " .. p)
    assert.equal(0, code, err)
    assert.matches("architecture  llama", out, 1, true)
    assert.matches("parameters    3.28M (39 tensors)", out, 1, true)
    assert.matches("\n  q8_0     30 tensors", out, 1, true)
    assert.matches("\n  f32       9 tensors", out, 1, true)
    assert.matches("tokenizer.ggml.tokens%s+%[str x 512%]", out)
    assert.matches("tokenizer     llama, 512 tokens, bos 1, eos 2", out, 1, true)
    local r = fx("rwkv/tiny-rwkv-5v2-730K-FP16.bin")
    if r then
      out, err, code = run("info " .. r)
      assert.equal(0, code, err)
      assert.matches("format        rwkv.cpp v", out, 1, true)
      assert.matches("architecture  rwkv5", out, 1, true)
      assert.matches("\n  f16 ", out, 1, true)
    end
  end)

  it("tokenize prints ids and pieces as the tokenizer encodes", function()
    local p, why = fx("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local out, err, code = run("tokenize " .. p .. " 'Hello world'")
    assert.equal(0, code, err)
    local tok = assert(slm.tokenizer.load(p))
    local ids = tok:encode("Hello world")
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(#ids + 1, #lines)
    assert.equal(#ids .. " tokens", lines[#lines])
    assert.equal('     1 "<s>"', lines[1])
    for i, id in ipairs(ids) do assert.equal(id, tonumber(lines[i]:match("^%s*(%d+)"))) end
    out = run("tokenize " .. p .. " 'Hello world' --no-bos")
    assert.equal(#ids - 1 .. " tokens\n", out:match("[^\n]+\n$"))
  end)

  it("embed prints one vector per text, the cosine matrix with --similarity", function()
    local p, why = fx("gguf3/bert-f16.gguf")
    if not p then return pending(why) end
    local texts = { "hello world", "good morning", "the weather is sunny today" }
    local out, err, code = run("embed " .. p .. " '" .. table.concat(texts, "' '") .. "'")
    assert.equal(0, code, err)
    local m = assert(slm.load(p))
    local lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(#texts, #lines)
    local vecs = {}
    for i, l in ipairs(lines) do
      local v = {}
      for x in l:gmatch("%S+") do v[#v + 1] = tonumber(x) end
      vecs[i] = m:embed(texts[i])
      assert.equal(128, #v)
      for j = 1, 128 do assert.near(vecs[i]:get(j), v[j], 1e-6) end   -- %.6g of values below 1
    end
    out, err, code = run("embed " .. p .. " '" .. table.concat(texts, "' '") .. "' --similarity")
    assert.equal(0, code, err)
    lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("         [1]    [2]    [3]", lines[1])
    for i = 1, 3 do
      local row = {}
      for x in lines[i + 1]:sub(6, 26):gmatch("%S+") do row[#row + 1] = tonumber(x) end
      for j = 1, 3 do
        local dot = 0
        for k = 1, 128 do dot = dot + vecs[i]:get(k) * vecs[j]:get(k) end
        assert.near(dot, row[j], 0.0006)
      end
      assert.equal("  " .. texts[i], lines[i + 1]:sub(27))
    end
    -- pooling none: a block of rows (tokens) per text; unnormalized
    out = run("embed " .. p .. " 'hi there' --pooling none --no-normalize")
    local rows = m:embed("hi there", { pooling = "none", normalize = false })
    lines = {}
    for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal(rows:size(1), #lines)
    assert.near(rows:get(2, 1), tonumber(lines[2]:match("^%S+")), 1e-5 * (1 + math.abs(rows:get(2, 1))))
    -- misuse: one line on stderr
    out, err, code = run("embed " .. p .. " hi --pooling max")
    assert.equal(1, code)
    assert.equal("slm: option --pooling must be mean, cls, last or none (got max)\n", err)
    out, err, code = run("embed " .. p)
    assert.equal(1, code)
    assert.matches("^slm: usage: slm embed MODEL TEXT", err)
    out, err, code = run("embed " .. p .. " a b --similarity --pooling none")
    assert.equal(1, code)
    assert.equal("slm: embed: --similarity needs one vector per text (not --pooling none)\n", err)
  end)

  it("bench prints pp and tg speeds", function()
    local p, why = fx("gguf/stories260K-f32.gguf")
    if not p then return pending(why) end
    local out, err, code = run("bench " .. p .. " --pp 16 --tg 8 --threads 1")
    assert.equal(0, code, err)
    local pp, tg = out:match("pp16 ([%d.]+) tok/s  tg8 ([%d.]+) tok/s  threads 1")
    assert.is_truthy(pp, out)
    assert.is_true(tonumber(pp) > 0 and tonumber(tg) > 0)
  end)

  it("chat reads turns from a pipe and answers each", function()
    local p, why = fx("rwkv/tiny-rwkv-4v0-660K-FP32.bin")
    if not p then return pending(why) end
    local out, err, code = run("chat " .. p .. " -n 8 --temp 0", nil, "Hello\n\nHow are you?\n")
    assert.equal(0, code, err)
    assert.equal("", err)
    -- each non-empty turn's answer ends with a newline
    assert.matches("\n$", out)
    assert.is_true(select(2, out:gsub("\n", "")) >= 2)
  end)

  it("draws progress bars on stderr only when asked or on a terminal", function()
    local p, why = fx("rwkv/tiny-rwkv-4v0-660K-FP32.bin")
    if not p then return pending(why) end
    local out = os.tmpname()
    -- forced on: carriage-return redraws ending at 100%, stdout untouched
    local so, err, code = run(string.format("quantize %s %s q8_0", p, out), { SLM_PROGRESS = "1" })
    assert.equal(0, code, err)
    assert.matches("\rquantize %[#+%] 100%% 661504/661504 ", err)
    assert.is_nil(so:find("\r", 1, true))
    so, err, code = run("info " .. p, { SLM_PROGRESS = "1" })
    assert.equal(0, code, err)
    assert.matches("^\rload %[%-+%]   0%% 0 B/2%.5 MB", err)
    assert.matches("\rload %[#+%] 100%% 2%.5 MB/2%.5 MB", err)
    assert.is_nil(so:find("\r", 1, true))
    -- default, stderr a file (not a terminal): no bars at all
    so, err, code = run(string.format("quantize %s %s q8_0", p, out), { SLM_PROGRESS = false })
    assert.equal(0, code, err)
    assert.equal("", err)
    os.remove(out)
  end)

  describe("errors: one line on stderr, exit status 1", function()
    local p = fx("gguf/dense-q8_0.gguf") or "missing.gguf"
    local cases = {
      { "run /nonexistent.gguf -p hi", "^slm: /nonexistent.gguf: no such file, and no model of that name in the registry" },
      { "frobnicate", "^slm: unknown command 'frobnicate'" },
      { "run " .. p .. " -p hi -n abc", "^slm: option %-n: 'abc' is not an integer\n$" },
      { "run " .. p .. " -p hi --temp warm", "^slm: option %-%-temp: 'warm' is not a number\n$" },
      { "run " .. p .. " -p hi --bogus", "^slm: unknown option '%-%-bogus'" },
      { "run " .. p .. " -p hi -n 0", "^slm: option %-n must be at least 1" },
      { "run " .. p, "^slm: usage: slm run %[MODEL%]" },
      { "run " .. p .. " -p 'a prompt of many tokens' --ctx 3",
        "^slm: context full: the prompt is 14 tokens, the context 3 %(raise %-%-ctx%)\n$",
        needs = "gguf/dense-q8_0.gguf" },
      { "run " .. p .. " -p 'a prompt of many tokens' --ctx 3 --system hi",
        "^slm: context full: the prompt is %d+ tokens as a chat, the context 3 %(raise %-%-ctx%)\n$",
        needs = "gguf/dense-q8_0.gguf" },
      { "run " .. p .. " -p hi --temp -1", "^slm: option %-%-temp must be a finite number >= 0 %(got %-1%)\n$" },
      { "run " .. p .. " -p hi --kv-type q5_0",
        "^slm: %-%-kv%-type must be \"f16\", \"f32\", \"q8_0\" or \"q4_0\", got \"q5_0\"\n$", needs = "gguf/dense-q8_0.gguf" },
      { "run " .. p .. " -p hi --top-p 2", "^slm: option %-%-top%-p must be a number in %(0, 1%] %(got 2%)\n$" },
      { "run " .. p .. " -p hi --min-p 1.5", "^slm: option %-%-min%-p must be a number in %[0, 1%] %(got 1.5%)\n$" },
      { "run " .. p .. " -p hi --seed -3", "^slm: option %-%-seed must be an integer >= 0 %(got %-3%)\n$" },
      { "run " .. p .. " -p hi --top-k -2", "^slm: option %-%-top%-k must be an integer >= 0 %(0 disables%) %(got %-2%)\n$" },
      { "run " .. p .. " -p hi --repeat-penalty 0",
        "^slm: option %-%-repeat%-penalty must be a finite number > 0 %(1 disables%) %(got 0%)\n$" },
      { "run " .. p .. " -p hi -f /nonexistent.txt", "^slm: give the prompt with %-p or %-f, not both\n$" },
      { "run " .. p .. " -f /nonexistent.txt", "^slm: option %-f: /nonexistent.txt: No such file or directory\n$" },
      { "run " .. p .. " -p hi --regex '[0-9'",
        "^slm: option %-%-regex: missing terminating %] for character class at offset 4 of '%[0%-9'\n$" },
      { "run " .. p .. " -p hi --stop ''", "^slm: option %-%-stop needs a non%-empty value\n$" },
      { "run " .. p .. " -p hi --template vicuna", "^slm: option %-%-template: unknown template 'vicuna' %(known: chatml, " },
      { "chat " .. p .. " --template vicuna", "^slm: option %-%-template: unknown template 'vicuna' %(known: chatml, " },
      { "chat " .. p .. " --temp -1", "^slm: option %-%-temp must be a finite number >= 0 %(got %-1%)\n$" },
      { "tokenize --tokenizer /nonexistent.json hi", "^slm: option %-%-tokenizer: /nonexistent.json: " },
      { "tokenize hi", "^slm: usage: slm tokenize %(MODEL | %-%-tokenizer FILE%) TEXT" },
      { "run " .. p .. " -p hi --tokenizer /nonexistent.json", "^slm: option %-%-tokenizer: /nonexistent.json: ",
        needs = "gguf/dense-q8_0.gguf" },
      { "repl " .. p .. " --ctx 0", "^slm: option %-%-ctx must be at least 1 %(got 0%)\n$", needs = "gguf/dense-q8_0.gguf" },
      { "bench " .. (fx("gguf3/bert-q8_0.gguf") or "missing.gguf") .. " --pp 4 --tg 2",
        "^slm: [^\n]*bert%-q8_0.gguf is a bert encoder: it has no logits to generate with %(`slm embed` gives its vectors%)\n$",
        needs = "gguf3/bert-q8_0.gguf" },
      { "run SmolLM2-135M-Instruct -p hi", "^slm: model 'SmolLM2%-135M%-Instruct' is not downloaded: run `slm pull" },
      { "pull no-such-model", "^slm: pull: no model 'no%-such%-model' in the registry" },
      { "info README.md", "^slm: README.md: not a GGUF file" },
      { "quantize " .. p .. " /tmp/never.gguf q9_9", "^slm: quantize: unknown type 'q9_9'" },
      { "perplexity " .. p .. " /nonexistent.txt", "^slm: /nonexistent.txt: No such file or directory\n$" },
    }
    for _, c in ipairs(cases) do
      it(c[1], function()
        if c.needs and not fx(c.needs) then return pending(select(2, fx(c.needs))) end   -- loads the model
        local out, err, code = run(c[1], { SLM_CACHE = os.tmpname() .. ".d" })
        assert.equal(1, code)
        assert.equal("", out)
        assert.matches(c[2], err)
        assert.equal(1, select(2, err:gsub("\n", "")), err)   -- one line, no traceback
      end)
    end
  end)

  it("a bert encoder has nothing to generate with: run and chat say so in one line", function()
    local b, why = fx("gguf3/bert-q8_0.gguf")
    if not b then return pending(why) end
    for _, args in ipairs { "run " .. b .. " -p hi", "chat " .. b } do
      local out, err, code = run(args, nil, "hi\n")
      assert.equal(1, code)
      assert.equal("", out)
      assert.equal("slm: " .. b .. " is a bert encoder: it has no logits to generate with (`slm embed` gives its "
                   .. "vectors)\n", err)
    end
  end)

  describe("run", function()
    local p = fx("gguf/dense-q8_0.gguf")
    local function need() if not p then pending("fixture gguf/dense-q8_0.gguf not found") end return p end

    it("draws a fresh seed without --seed, prints it with --verbose, and --seed repeats the run", function()
      if not need() then return end
      local args = "run " .. p .. " -p 'Once upon' -n 16 --temp 1.5 --verbose"
      local a, ea, ca = run(args)
      local b, eb = run(args)
      assert.equal(0, ca, ea)
      local sa, sb = ea:match("slm: seed (%d+) %(%-%-seed %d+ repeats this run%)"), eb:match("slm: seed (%d+)")
      assert.is_truthy(sa, ea)
      assert.are_not.equal(sa, sb)
      assert.are_not.equal(a, b)   -- 16 tokens at temperature 1.5 of a 512-token vocabulary
      local c = run(args .. " --seed " .. sa)
      assert.equal(a, c)
      -- the other --verbose lines: load time, prompt and generation tokens/s, why it stopped
      assert.matches("^slm: load [%d.]+ s\nslm: seed %d+ %(%-%-seed %d+ repeats this run%)\n"
                     .. "slm: prompt 7 tokens in [%d.]+ s %([%d.]+ tok/s%)\n"
                     -- a fresh seed may draw the end-of-text token before the 16th
                     .. "slm: generation %d+ tokens in [%d.]+ s %([%d.]+ tok/s%), stopped: [%w_]+\n$", ea)
      local _, eg = run("run " .. p .. " -p 'Once upon' -n 4 --temp 0 --verbose")
      assert.matches("slm: greedy %(no seed%)\n", eg)
    end)

    it("says when the context is full, and warns about --ctx above the training context", function()
      if not need() then return end
      local out, err, code = run("run " .. p .. " -p 'Once upon' -n 100 --ctx 20 --temp 0")
      assert.equal(0, code, err)
      assert.equal("slm: generation stopped: the context is full (20 tokens); raise --ctx for longer output\n", err)
      local m = assert(slm.load(p))
      local want = m:session { ctx = 20 }:generate("Once upon", { max_tokens = 100 }, function() end)
      assert.equal(want .. "\n", out)
      out, err, code = run("run " .. p .. " -p 'Once upon' -n 2 --temp 0 --ctx 1024")
      assert.equal(0, code, err)
      assert.equal("slm: warning: --ctx 1024 is above the model's training context (512): past 512 tokens its "
                   .. "output may degrade\n", err)
    end)

    it("-f reads the prompt from a file; --stop and --regex as generate's options", function()
      if not need() then return end
      local m = assert(slm.load(p))
      local function gen(o) return m:session {}:generate("Once upon a time", o, function() end) end
      local file = helpers.tmpfile("Once upon a time")
      local full = gen { max_tokens = 24 }
      local a = run("run " .. p .. " -f " .. file .. " -n 24 --temp 0")
      assert.equal(full .. "\n", a)
      local stop = full:sub(5, 6)
      local out, err, code = run("run " .. p .. " -f " .. file .. " -n 24 --temp 0 --stop " .. sh_quote(stop)
                                 .. " --stop zzz")
      assert.equal(0, code, err)
      assert.equal(gen { max_tokens = 24, stop = { stop, "zzz" } } .. "\n", out)
      out, err, code = run("run " .. p .. " -p 'Call me at' -n 24 --temp 0 --regex '[0-9]{3}-[0-9]{2}'")
      assert.equal(0, code, err)
      assert.matches("^%d%d%d%-%d%d\n$", out)
      out = run("run " .. p .. " -p 'Call me at' -n 24 --temp 0.7 --seed 4 --regex '[0-9]{3}'")
      assert.matches("^%d%d%d\n$", out)
    end)

    it("--system (and --template) answers the prompt as a chat reply", function()
      if not need() then return end
      local m = assert(slm.load(p))
      local msgs = { { role = "system", content = "Be brief." }, { role = "user", content = "Hello" } }
      local want = m:session {}:chat(msgs, { max_tokens = 12 })
      local out, err, code = run("run " .. p .. " -p Hello --system 'Be brief.' -n 12 --temp 0")
      assert.equal(0, code, err)
      assert.equal(want .. "\n", out)
      want = m:session {}:chat(msgs, { max_tokens = 12, template = "llama2" })
      out = run("run " .. p .. " -p Hello --system 'Be brief.' --template llama2 -n 12 --temp 0")
      assert.equal(want .. "\n", out)
    end)
  end)

  it("tokenize --tokenizer FILE needs no model", function()
    local v, why = fx("vocab/ggml-vocab-gpt-2.gguf")
    if not v then return pending(why) end
    local out, err, code = run("tokenize --tokenizer " .. v .. " 'Hello world'")
    assert.equal(0, code, err)
    assert.equal(' 15496 "Hello"\n   995 " world"\n2 tokens\n', out)
    local j = fx("tokenizer-json/llama3/tokenizer.json")
    if j then
      out = run("tokenize --tokenizer " .. j .. " 'Hello world' --no-bos")
      assert.equal('  9906 "Hello"\n  1917 " world"\n2 tokens\n', out)
    end
  end)

  it("info on vocabulary-only GGUF files: metadata and tokenizer, no model", function()
    local dir, why = fx("vocab")
    if not dir then return pending(why) end
    local want = {
      ["gpt-2"] = { "gpt2", "gpt2, 50257 tokens, bos 50256, eos 50256" },
      ["llama-spm"] = { "llama", "llama, 32000 tokens, bos 1, eos 2" },
      ["phi-3"] = { "phi3", "llama, 32064 tokens, bos 1, eos 32000" },
      falcon = { "falcon", "gpt2, 65024 tokens, bos 11, eos 11" },
      starcoder = { "starcoder2", "gpt2, 49152 tokens, bos 0, eos 0" },
      ["deepseek-coder"] = { "llama", "gpt2, 32256 tokens, bos 32013, eos 32014" },
    }
    for name, w in pairs(want) do
      local out, err, code = run("info " .. dir .. "/ggml-vocab-" .. name .. ".gguf")
      assert.equal(0, code, err)
      assert.matches("\nformat        GGUF v3, vocabulary only %(no tensors%)\n", out)
      assert.matches("\narchitecture  " .. w[1]:gsub("%-", "%%-") .. "\n", out)
      assert.matches("\n  tokenizer.ggml.tokens%s+%[str x %d+%]\n", out)
      assert.matches("\ntokenizer     " .. w[2] .. "\n$", out)
    end
  end)

  it("chat: /exit, /reset, /system TEXT; an unknown command is said and skipped", function()
    local p, why = fx("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local m = assert(slm.load(p))
    local function reply(msgs) return m:session { ctx = 300 }:chat(msgs, { max_tokens = 4 }) end
    local u = function(t) return { role = "user", content = t } end
    local out, err, code = run("chat " .. p .. " -n 4 --temp 0 --ctx 300",
                               nil, "Hello\n/system Be terse.\nHi\n/reset\n/bogus\nOne\n/exit\nNever\n")
    assert.equal(0, code, err)
    local sys = { role = "system", content = "Be terse." }
    assert.equal(table.concat({ reply { u "Hello" }, reply { sys, u "Hi" }, (reply { sys, u "One" }) }, "\n") .. "\n", out)
    assert.equal("slm: new system message; conversation forgotten\nslm: conversation forgotten\n"
                 .. "slm: unknown command /bogus (/exit, /reset, /system TEXT)\n", err)
  end)

  it("chat drops the oldest turns when the history outgrows --ctx, keeping the system message, and says so", function()
    local p, why = fx("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local turns = "Tell me about cats one\nTell me about cats two\nTell me about cats three\nTell me about cats four\n"
    local out, err, code = run("chat " .. p .. " -n 8 --temp 0 --ctx 130 --system 'Be brief.'", nil, turns)
    assert.equal(0, code, err)
    assert.equal(4, select(2, out:gsub("\n", "")))
    assert.matches("^slm: the conversation outgrew the context %(130 tokens%): dropped the 2 oldest messages "
                   .. "%(raise %-%-ctx to keep more%)\n", err)
    -- the same turns through a chat session in this process
    local m = assert(slm.load(p))
    local chat = m:session { ctx = 130 }:chat_session { system = "Be brief.", max_tokens = 8 }
    local want, notes = {}, 0
    for line in turns:gmatch("[^\n]+") do
      local r, info = chat:say(line)
      want[#want + 1] = r
      if info.trimmed > 0 then notes = notes + 1 end
    end
    assert.equal(table.concat(want, "\n") .. "\n", out)
    assert.equal(notes, select(2, err:gsub("\n", "")))
    assert.equal("system", chat.messages[1].role)
  end)

  describe("pull", function()
    local dir, src, reg, sum, size
    setup(function()
      local p = fx("rwkv/tiny-rwkv-4v0-660K-Q5_0.bin")
      if not p then return end
      dir = os.tmpname()
      os.remove(dir)
      assert(os.execute("mkdir -p " .. dir .. "/cache"))
      src = dir .. "/model.bin"
      assert(os.execute("cp " .. p .. " " .. src))
      sum = io.popen("LD_PRELOAD= sha256sum " .. src):read("a"):match("^(%x+)")
      size = #helpers.read(src)
      local bad = sum:sub(1, -2) .. (sum:sub(-1) == "0" and "1" or "0")
      reg = dir .. "/registry.lua"
      local f = assert(io.open(reg, "w"))
      f:write(string.format([[
return {
  { name = "tiny-ok", file = "tiny-ok.bin", url = "file://%s", size = %d, sha256 = "%s" },
  { name = "tiny-badsum", file = "tiny-badsum.bin", url = "file://%s", size = %d, sha256 = "%s" },
  { name = "tiny-badsize", file = "tiny-badsize.bin", url = "file://%s", size = %d },
  { name = "tiny-nosum", file = "tiny-nosum.bin", url = "file://%s" },
  { name = "tiny-gone", file = "tiny-gone.bin", url = "file://%s/absent.bin" },
}
]], src, size, sum, src, size, bad, src, size + 1, src, dir))
      f:close()
    end)
    teardown(function()
      if dir then os.execute("rm -rf " .. dir) end
    end)
    local function env() return { SLM_REGISTRY = reg, SLM_CACHE = dir .. "/cache" } end

    it("downloads from a file:// URL, verifies size and sha256, then runs by name", function()
      if not dir then return pending("fixture rwkv/tiny-rwkv-4v0-660K-Q5_0.bin not found") end
      local out, err, code = run("pull tiny-ok", env())
      assert.equal(0, code, err)
      assert.equal(string.format("tiny-ok -> %s/cache/tiny-ok.bin (%d bytes, sha256 %s verified)\n", dir, size, sum), out)
      assert.equal(helpers.read(src), helpers.read(dir .. "/cache/tiny-ok.bin"))
      out, err, code = run("pull tiny-ok", env())
      assert.equal(0, code, err)
      assert.matches("^tiny%-ok is already pulled", out)
      -- the name now resolves to the cached file
      out, err, code = run("run TINY-OK -p 'The cat' -n 5 --temp 0", env())
      assert.equal(0, code, err)
      assert.equal(6, #out)
      out, err, code = run("pull --list", env())
      assert.equal(0, code, err)
      assert.matches("tiny%-ok%s+%?%s+pulled", out)
    end)

    it("a checksum mismatch fails with one line and removes the download", function()
      if not dir then return pending("fixture rwkv/tiny-rwkv-4v0-660K-Q5_0.bin not found (set SLM_FIXTURES)") end
      local out, err, code = run("pull tiny-badsum", env())
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("^slm: pull tiny%-badsum: sha256 mismatch: got " .. sum .. ", expected %x+ %(download removed%)\n$", err)
      assert.is_false(helpers.exists(dir .. "/cache/tiny-badsum.bin"))
      assert.is_false(helpers.exists(dir .. "/cache/tiny-badsum.bin.part"))
    end)

    it("a size mismatch fails the same way", function()
      if not dir then return pending("fixture rwkv/tiny-rwkv-4v0-660K-Q5_0.bin not found (set SLM_FIXTURES)") end
      local _, err, code = run("pull tiny-badsize", env())
      assert.equal(1, code)
      assert.matches("^slm: pull tiny%-badsize: size mismatch: got %d+ bytes, expected %d+ %(download removed%)\n$", err)
      assert.is_false(helpers.exists(dir .. "/cache/tiny-badsize.bin"))
    end)

    it("without a listed checksum it downloads and prints the digest it computed", function()
      if not dir then return pending("fixture rwkv/tiny-rwkv-4v0-660K-Q5_0.bin not found (set SLM_FIXTURES)") end
      local out, err, code = run("pull tiny-nosum", env())
      assert.equal(0, code, err)
      assert.matches("unverified%)\n$", out)
      assert.matches("no sha256 for tiny%-nosum; downloaded file has " .. sum, err)
    end)

    it("a failed download (as offline) is one clear line", function()
      if not dir then return pending("fixture rwkv/tiny-rwkv-4v0-660K-Q5_0.bin not found (set SLM_FIXTURES)") end
      local out, err, code = run("pull tiny-gone", env())
      assert.equal(1, code)
      assert.equal("", out)
      assert.matches("^slm: pull tiny%-gone: download failed %(offline%?%): curl: %(37%)", err)
      assert.equal(1, select(2, err:gsub("\n", "")))
      assert.is_false(helpers.exists(dir .. "/cache/tiny-gone.bin.part"))
    end)
  end)

  describe("quantize", function()
    -- logits of 16 tokens (one at a time) and their standard deviation
    local function logits(path, bytes)
      local m = assert(slm.load(path, bytes and { tokenizer = slm.tokenizer.bytes() } or nil))
      local s = m:session { ctx = 32 }
      local out = {}
      for i = 1, 16 do out[i] = s:eval { (i * 37) % m.hp.n_vocab }:totable() end
      return out
    end
    local function rel_diff(a, b)
      local sum, sum2, n, mx = 0, 0, 0, 0
      for i = 1, #a do
        for v = 1, #a[i] do
          sum, sum2, n = sum + a[i][v], sum2 + a[i][v] ^ 2, n + 1
          mx = math.max(mx, math.abs(a[i][v] - b[i][v]))
        end
      end
      return mx / math.sqrt(sum2 / n - (sum / n) ^ 2)
    end

    it("f16 GGUF -> q8_0 and q4_0: loads, logits close, tensors as the reference quantizes them", function()
      local p, why = fx("gguf/dense-f16.gguf")
      if not p then return pending(why) end
      local base = logits(p)
      -- the reference's q4_0 file type keeps the output matrix in q6_k
      for _, case in ipairs { { "q8_0", 0.06, "30 q8_0, 9 f32" }, { "q4_0", 0.9, "1 q6_k, 29 q4_0, 9 f32" } } do
        local ty, bound = case[1], case[2]
        local out = os.tmpname()
        local so, err, code = run(string.format("quantize %s %s %s", p, out, ty))
        assert.equal(0, code, err)
        assert.matches("%(" .. ty .. "%): " .. case[3] .. " tensors", so)
        local f = assert(slm.gguf.open(out))
        assert.equal(f:typed("general.name").value, "dense-gqa-test")
        assert.equal(ty == "q8_0" and 7 or 2, f:get("general.file_type"))
        local d = rel_diff(base, logits(out))
        assert.is_true(d < bound, ty .. ": max |diff| / sd = " .. d)
        -- every tensor as the reference's own file of that type holds it
        -- (spec/84-quantize_spec.lua compares whole files)
        local ref = fx("gguf/dense-" .. ty .. ".gguf")
        if ref then
          local r = assert(slm.gguf.open(ref))
          for _, info in ipairs(r.tensors) do
            local a, b = f:tensor(info.name), r:tensor(info.name)
            assert.equal(b:dtype(), a:dtype(), info.name)
            assert.equal(b:tobytes(), a:tobytes(), info.name)
          end
          r:close()
        end
        f:close()
        os.remove(out)
      end
    end)

    it("rows that are not whole blocks fall back (K-quant -> 32-block type -> f16)", function()
      local p, why = fx("gguf/stories260K-f32.gguf")
      if not p then return pending(why) end
      -- dim 64 rows: not a multiple of 256, so q4_k falls back to q5_0; the
      -- ffn_down rows (172 = hidden) are not a multiple of 32 either: f16
      local out = os.tmpname()
      local _, err, code = run(string.format("quantize %s %s q4_k", p, out))
      assert.equal(0, code, err)
      local f = assert(slm.gguf.open(out))
      assert.equal("q5_0", f:info("blk.0.attn_q.weight").dtype)
      assert.equal("f16", f:info("blk.0.ffn_down.weight").dtype)
      assert.equal("f32", f:info("blk.0.attn_norm.weight").dtype)
      f:close()
      assert.is_truthy(slm.load(out))
      os.remove(out)
    end)

    it("rwkv.cpp FP32 -> q8_0 / q4_0 rwkv.cpp files that load and stay close", function()
      local p, why = fx("rwkv/tiny-rwkv-4v0-660K-FP32.bin")
      if not p then return pending(why) end
      local base = logits(p, true)
      for _, case in ipairs { { "q8_0", 0.03, 9 }, { "q4_0", 0.3, 2 } } do
        local out = os.tmpname()
        local _, err, code = run(string.format("quantize %s %s %s", p, out, case[1]))
        assert.equal(0, code, err)
        local m = assert(slm.core.rwkvcpp.open(out))
        assert.equal(101, m.header.version)
        assert.equal(case[3], m.header.data_type)
        assert.equal(case[1], m.tensors["blocks.0.att.key.weight"]:dtype())
        assert.equal("f32", m.tensors["emb.weight"]:dtype())
        assert.equal("f32", m.tensors["blocks.0.att.time_decay"]:dtype())
        local d = rel_diff(base, logits(out, true))
        assert.is_true(d < case[2], case[1] .. ": max |diff| / sd = " .. d)
        os.remove(out)
      end
    end)
  end)

  describe("perplexity", function()
    it("of the tiny RWKV over English text is finite and below 256 (byte vocabulary)", function()
      local p, why = fx("rwkv/tiny-rwkv-4v0-660K-FP32.bin")
      if not p then return pending(why) end
      local txt = helpers.tmpfile(ENGLISH)
      local out, err, code = run("perplexity " .. p .. " " .. txt .. " --ctx 256")
      assert.equal(0, code, err)
      local ppl = tonumber(out:match("^([%d.]+)\n$"))
      assert.is_truthy(ppl, out)
      assert.is_true(ppl > 1 and ppl < 256, out)
      assert.matches("tokens scored in 3 windows of up to 256", err)
      -- independent check: the mean negative log-likelihood from the library
      local m = assert(slm.load(p, { tokenizer = slm.tokenizer.bytes() }))
      local ids = m.tokenizer:encode(ENGLISH)
      local nll, n = 0, 0
      local s = m:session { ctx = 256 }
      for w = 0, (#ids - 1) // 256 do
        s:reset()
        for i = w * 256 + 1, math.min(w * 256 + 255, #ids - 1) do
          local l = s:eval { ids[i] }
          local z = 0
          for v = 1, 256 do z = z + math.exp(l:get(v)) end
          nll = nll + math.log(z) - l:get(ids[i + 1] + 1)
          n = n + 1
        end
      end
      assert.near(math.exp(nll / n), ppl, 1e-3 * ppl)
      os.remove(txt)
    end)
  end)
end)
