--- The `slm` command (bin/slm runs this file for any first argument that is
-- not a Lua script or a lua5.4 flag). `slm help` lists the commands.
--
-- Every failure is one line on stderr, "slm: ...", and exit status 1;
-- `slm --debug CMD ...` shows the Lua traceback instead.
local loaded, slm = pcall(require, "slm")
if not loaded then
  -- a broken build or install: still one line, not a traceback
  io.stderr:write("slm: cannot load the slm module: ", (tostring(slm):gsub("\n%s*", " ")), "\n")
  os.exit(1)
end
local progress = require "slm.progress"

local cli = {}

-- An expected failure: reported as one line, without a traceback.
local Fail = {}
local function fail(fmt, ...)
  error(setmetatable({ msg = string.format(fmt, ...) }, Fail), 0)
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

-- single-quoted for sh
local function shq(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- ---- flags -------------------------------------------------------------------

-- flag -> {key, type}; types: int, num, str, bool, list (a str that may
-- be given several times)
local FLAGS = {
  ["-p"] = { "prompt", "str" }, ["--prompt"] = { "prompt", "str" },
  ["-f"] = { "file", "str" }, ["--file"] = { "file", "str" },
  ["--stop"] = { "stop", "list" }, ["--regex"] = { "regex", "str" },
  ["--grammar"] = { "grammar", "str" },
  ["--verbose"] = { "verbose", "bool" }, ["-v"] = { "verbose", "bool" },
  ["-n"] = { "n", "int" }, ["--n-predict"] = { "n", "int" },
  ["--temp"] = { "temp", "num" }, ["--top-k"] = { "top_k", "int" },
  ["--top-p"] = { "top_p", "num" }, ["--min-p"] = { "min_p", "num" },
  ["--seed"] = { "seed", "int" }, ["--repeat-penalty"] = { "repeat_penalty", "num" },
  ["--ctx"] = { "ctx", "int" }, ["-c"] = { "ctx", "int" }, ["--kv-type"] = { "kv_type", "str" },
  ["--threads"] = { "threads", "int" }, ["-t"] = { "threads", "int" },
  ["--tokenizer"] = { "tokenizer", "str" },
  ["--template"] = { "template", "str" }, ["--system"] = { "system", "str" },
  ["--pp"] = { "pp", "int" }, ["--tg"] = { "tg", "int" },
  ["--no-bos"] = { "no_bos", "bool" }, ["--special"] = { "special", "bool" },
  ["--similarity"] = { "similarity", "bool" }, ["--pooling"] = { "pooling", "str" },
  ["--no-normalize"] = { "no_normalize", "bool" },
  ["--list"] = { "list", "bool" }, ["--debug"] = { "debug", "bool" },
  ["--help"] = { "help", "bool" }, ["-h"] = { "help", "bool" },
}

-- Splits argv into positional arguments and typed options (slm.flags).
local function parse(argv)
  return require("slm.flags").parse(argv, FLAGS, fail, { numbers = true, unknown = "unknown option '%s' (see `slm help`)" })
end

local function positive(opt, key, flag)
  local v = opt[key]
  if v ~= nil and v < 1 then fail("option %s must be at least 1 (got %s)", flag, tostring(v)) end
end

-- ---- registry and model resolution -------------------------------------------

local function registry()
  local path = os.getenv("SLM_REGISTRY")
  if path then
    local chunk, err = loadfile(path)
    if not chunk then fail("SLM_REGISTRY: %s", err) end
    local ok, reg = pcall(chunk)
    if not ok or type(reg) ~= "table" then fail("SLM_REGISTRY %s: does not return a table of models", path) end
    return reg
  end
  -- slm.models.registry: models/registry.lua in a checkout (slm.model's
  -- searcher), slm/models/registry.lua when installed
  require "slm.model"
  local ok, reg = pcall(require, "slm.models.registry")
  if ok then return reg end
  fail("the model registry (slm.models.registry) is not on package.path")
end

local function cache_dir()
  local c = os.getenv("SLM_CACHE")
  if c and c ~= "" then return c end
  return (os.getenv("HOME") or ".") .. "/.cache/slm"
end

local function find_entry(name)
  for _, e in ipairs(registry()) do
    if e.name:lower() == name:lower() then return e end
  end
end

--- A model argument: "default" or "shakespeare-char" (the models shipped with
-- slm, slm.model.resolve),
-- a path, or a registry name that was pulled.
function cli.resolve(name)
  if slm.model.SHIPPED[name] then
    local p, err = slm.model.resolve(name)
    if not p then fail("%s", err) end
    return p
  end
  if exists(name) then return name end
  local e = find_entry(name)
  if e then
    local p = cache_dir() .. "/" .. e.file
    if exists(p) then return p end
    fail("model '%s' is not downloaded: run `slm pull %s`", e.name, e.name)
  end
  fail("%s: no such file, and no model of that name in the registry (`slm pull --list`)", name)
end

local function read_magic(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local m = f:read(4) or ""
  f:close()
  return m
end

--- Loads MODEL (path or name) with a load bar; byte-level models (rwkv.cpp
-- files, 256-token vocabularies without a tokenizer) get the byte tokenizer.
local function load_model(name, opt)
  local path = cli.resolve(name)
  local bar = progress.new("load", file_size(path), "B")
  bar:update(0)
  local lopts = {}
  if opt.tokenizer then
    local tok, err = slm.tokenizer.load(opt.tokenizer)
    if not tok then fail("option --tokenizer: %s", err) end
    lopts.tokenizer = tok
  elseif read_magic(path) == "fmgg" then lopts.tokenizer = slm.tokenizer.bytes() end
  local model, err = slm.load(path, lopts)
  if not model then fail("%s", err) end
  if not model.tokenizer and model.hp.n_vocab == 256 then model.tokenizer = slm.tokenizer.bytes() end
  bar:finish()
  return model
end

local function need_tokenizer(model)
  if not model.tokenizer then
    fail("%s has no tokenizer: pass --tokenizer FILE", model.path)
  end
end

-- the sampler flags and the slm.sampler.default options they set
local SAMPLER_FLAGS = { temp = "--temp", top_k = "--top-k", top_p = "--top-p", min_p = "--min-p",
                        seed = "--seed", repeat_penalty = "--repeat-penalty" }

-- The sampler the flags ask for, each value checked as slm.sampler.default
-- checks it but named by its flag. Without --seed a fresh seed is drawn
-- (slm.sampler.seed tells it, --verbose prints it).
local function sampler_of(opt)
  local o = {}
  for key in pairs(SAMPLER_FLAGS) do o[key] = opt[key] end
  local key, expected, got = slm.sampler.check_default(o)
  if key then fail("option %s must be %s (got %s)", SAMPLER_FLAGS[key], expected, tostring(got)) end
  -- with --regex, generate puts the regex stage before these
  if opt.regex then return slm.sampler.default_stages(o) end
  return slm.sampler.default(o)
end

-- --template, checked before anything loads
local function check_template(opt)
  local t = opt.template
  if t and not slm.chat.templates[t] then
    local names = {}
    for name in pairs(slm.chat.templates) do names[#names + 1] = name end
    table.sort(names)
    fail("option --template: unknown template '%s' (known: %s)", t, table.concat(names, ", "))
  end
end

local function need_decoder(model)
  if model.def.encoder then
    fail("%s is a %s encoder: it has no logits to generate with (`slm embed` gives its vectors)", model.path,
         model.hp.arch)
  end
end

-- A session of --ctx tokens (default: as model:session) and --kv-type's
-- cache (f16 by default), with a warning when the context is more than the
-- model was trained on.
local function session_of(model, opt)
  need_decoder(model)
  positive(opt, "ctx", "--ctx")
  local train = model.hp.n_ctx_train
  if opt.ctx and train and opt.ctx > train then
    io.stderr:write(string.format("slm: warning: --ctx %d is above the model's training context (%d): "
                                  .. "past %d tokens its output may degrade\n", opt.ctx, train, train))
  end
  local ok, sess = pcall(model.session, model, { ctx = opt.ctx, kv_type = opt.kv_type })
  if not ok then fail("%s", (tostring(sess):gsub("^session: kv_type", "--kv-type"))) end
  return sess
end

-- "N tokens in S s (R tok/s)"
local function rate(n, seconds)
  return string.format("%d tokens in %.3f s (%.1f tok/s)", n, seconds, seconds > 0 and n / seconds or 0)
end

-- --verbose: the seed (or greedy) and the timings of one generation
local function report(info, t_load)
  local seed = info.seed and string.format("seed %d (--seed %d repeats this run)", info.seed, info.seed)
               or "greedy (no seed)"
  if t_load then io.stderr:write(string.format("slm: load %.3f s\n", t_load)) end
  -- generate's info counts tokens; sess:chat's says evaluated and generated
  io.stderr:write(string.format("slm: %s\nslm: prompt %s\nslm: generation %s, stopped: %s\n", seed,
                                rate(info.prompt_tokens or info.evaluated, info.prompt_seconds),
                                rate(info.tokens or info.generated, info.seconds), tostring(info.stopped)))
end

-- --json-schema FILE: the schema's text, converted once here so that a
-- file that is not a schema of the subset fails before the model loads
FLAGS["--json-schema"] = { "json_schema", "str" }
local function read_schema(path)
  local fh, err = io.open(path, "rb")
  if not fh then fail("option --json-schema: %s", err) end
  local text = fh:read("a")
  fh:close()
  local ok, msg = pcall(slm.grammar.json_schema_to_gbnf, text)
  if not ok then fail("option --json-schema: %s: %s", path, tostring(msg)) end
  return text
end

-- --stop and --regex as generate options (a regex that does not compile
-- fails here, named by its flag)
local function stop_options(opt, gen)
  gen.stop = opt.stop
  if opt.regex then
    local ok, err = pcall(slm.core.regex.new, opt.regex)
    if not ok then fail("option --regex: %s", tostring(err):gsub("^regex: ", "")) end
    gen.regex = opt.regex
  end
  if opt.json_schema then gen.json_schema = read_schema(opt.json_schema) end
  if opt.grammar then   -- a .gbnf file; its errors name the file
    if opt.regex then fail("give --grammar or --regex, not both") end
    local ok, g, err = pcall(slm.grammar.load, opt.grammar)
    if not ok then fail("option --grammar: %s: %s", opt.grammar, tostring(g)) end
    if not g then fail("option --grammar: %s", err) end
    gen.grammar = g
  end
  return gen
end

-- ---- commands --------------------------------------------------------------------

local commands = {}
local order = {}
-- raw: fn(argv) receives the arguments unparsed (a command with flags of its own)
local function command(name, usage, help, fn, raw)
  commands[name] = { usage = usage, help = help, fn = fn, raw = raw }
  order[#order + 1] = name
end

local function usage_fail(name)
  fail("usage: slm %s", commands[name].usage)
end

command("run", "run [MODEL] (-p PROMPT | -f FILE) [-n N] [--temp T] [--top-k K] [--top-p P] [--min-p P] [--seed S] "
        .. "[--repeat-penalty R] [--ctx N] [--kv-type f16|q8_0|q4_0|f32] [--stop TEXT]... [--regex RE] [--grammar FILE] [--json-schema FILE] "
        .. "[--system TEXT [--template NAME]] [--verbose]",
        "generate text from a prompt, streamed to stdout (--system: as a chat reply; no MODEL: the default model)",
function(pos, opt)
  if #pos > 1 or not (opt.prompt or opt.file) then usage_fail("run") end
  if opt.prompt and opt.file then fail("give the prompt with -p or -f, not both") end
  positive(opt, "n", "-n")
  positive(opt, "ctx", "--ctx")
  local prompt = opt.prompt
  if opt.file then
    local fh, err = io.open(opt.file, "rb")
    if not fh then fail("option -f: %s", err) end
    prompt = fh:read("a")
    fh:close()
  end
  check_template(opt)
  local sampler = sampler_of(opt)
  local gen = stop_options(opt, { max_tokens = opt.n or 128, sampler = sampler })
  local chat = opt.system or opt.template
  local t0 = slm.core.clock()
  local model = load_model(pos[1] or slm.model.DEFAULT_NAME, opt)
  local t_load = slm.core.clock() - t0
  need_tokenizer(model)
  local sess = session_of(model, opt)
  local write = function(piece) io.write(piece) io.flush() end
  local ok, err = pcall(function()
    if chat then
      local messages = { { role = "user", content = prompt } }
      if opt.system then table.insert(messages, 1, { role = "system", content = opt.system }) end
      gen.template = opt.template
      local n = #slm.chat.tokenize(model.tokenizer, messages, { template = opt.template, model = model })
      if n > sess.n_ctx then fail("context full: the prompt is %d tokens as a chat, the context %d (raise --ctx)", n, sess.n_ctx) end
      local _, info = sess:chat(messages, gen, write)
      return info
    end
    local n = #model.tokenizer:encode(prompt)
    if n > sess.n_ctx then fail("context full: the prompt is %d tokens, the context %d (raise --ctx)", n, sess.n_ctx) end
    local _, info = sess:generate(prompt, gen, write)
    return info
  end)
  if sampler.free then sampler:free() end
  if not ok then
    if getmetatable(err) == Fail then error(err, 0) end
    fail("%s", (tostring(err):gsub("^.-:%d+: ", "")))
  end
  io.write("\n")
  local info = err
  if opt.verbose then report(info, t_load) end
  if info.stopped == "ctx" then
    io.stderr:write(string.format("slm: generation stopped: the context is full (%d tokens); raise --ctx for longer "
                                  .. "output\n", sess.n_ctx))
  end
  if info.stopped == "grammar_incomplete" then
    io.stderr:write("slm: generation stopped before the grammar was complete (raise -n or --ctx)\n")
  end
end)

local function is_tty(fd) return os.execute("test -t " .. fd) == true end

local CHAT_COMMANDS = "/exit, /reset, /system TEXT"

command("chat", "chat MODEL [--template NAME] [--system TEXT] [-n N] [sampler flags] [--json-schema FILE] [--ctx N] "
        .. "[--verbose]",
        "chat on stdin, one line per user turn; /exit, /reset (forget the conversation), /system TEXT",
function(pos, opt)
  if #pos ~= 1 then usage_fail("chat") end
  positive(opt, "n", "-n")
  positive(opt, "ctx", "--ctx")
  check_template(opt)
  sampler_of(opt)   -- the flags, checked before the model loads
  local schema = opt.json_schema and read_schema(opt.json_schema)
  local model = load_model(pos[1], opt)
  need_tokenizer(model)
  local sess = session_of(model, opt)
  local ok, chat = pcall(sess.chat_session, sess, { template = opt.template, system = opt.system })
  if not ok then fail("%s", (tostring(chat):gsub("^.-:%d+: ", ""))) end
  local tty = is_tty(0)
  while true do
    if tty then io.write("> ") io.flush() end
    local line = io.read("l")
    if not line or line == "/exit" then break end
    local cmd, rest = line:match("^(/%a+)%s*(.-)%s*$")
    if cmd == "/reset" then
      chat:reset()
      io.stderr:write("slm: conversation forgotten\n")
    elseif cmd == "/system" then
      chat:reset(rest)
      io.stderr:write(rest == "" and "slm: no system message; conversation forgotten\n"
                      or "slm: new system message; conversation forgotten\n")
    elseif cmd then
      io.stderr:write(string.format("slm: unknown command %s (%s)\n", cmd, CHAT_COMMANDS))
    elseif line ~= "" then
      local sampler = sampler_of(opt)
      local gen = { max_tokens = opt.n or 256, sampler = sampler, json_schema = schema }
      local sok, err, info = pcall(chat.say, chat, line, gen, function(piece) io.write(piece) io.flush() end)
      if sampler.free then sampler:free() end
      if not sok then fail("%s", (tostring(err):gsub("^.-:%d+: ", ""))) end
      io.write("\n")
      io.flush()
      if info.trimmed > 0 then
        io.stderr:write(string.format("slm: the conversation outgrew the context (%d tokens): dropped the %d oldest "
                                      .. "messages (raise --ctx to keep more)\n", sess.n_ctx, info.trimmed))
      end
      if opt.verbose then report(info) end
      if info.stopped == "ctx" then
        io.stderr:write(string.format("slm: the reply stopped: the context is full (%d tokens)\n", sess.n_ctx))
      end
    end
  end
end)

local function human_bytes(n)
  if n >= 1 << 30 then return string.format("%.2f GB", n / (1 << 30)) end
  if n >= 1 << 20 then return string.format("%.2f MB", n / (1 << 20)) end
  if n >= 1 << 10 then return string.format("%.1f kB", n / (1 << 10)) end
  return string.format("%d B", n)
end

local function human_count(n)
  if n >= 1e9 then return string.format("%.2fB", n / 1e9) end
  if n >= 1e6 then return string.format("%.2fM", n / 1e6) end
  if n >= 1e3 then return string.format("%.1fK", n / 1e3) end
  return tostring(n)
end

-- {name=, dtype=, shape=, bytes=} of every tensor in the model's file
local function tensors_of(model)
  local src, out = model.source, {}
  if src.kind == "gguf" then
    for i, t in ipairs(src.file.tensors) do out[i] = t end
    return out
  end
  local names, get = src.names, src.tensor
  if src.kind == "llama2c" then
    local m = slm.core.llama2c.open(model.path)
    names, get = m and m.names or {}, function(n) return m.tensors[n] end
  end
  for i, n in ipairs(names) do
    local t = get(n)
    out[i] = { name = n, dtype = t:dtype(), shape = t:shape(), bytes = t:nbytes() }
  end
  return out
end

local function numel(shape)
  local n = 1
  for _, d in ipairs(shape) do n = n * d end
  return n
end

-- The metadata lines of a GGUF file: each key with its value (arrays by
-- their type and length, long strings cut).
local function metadata_lines(f, p)
  p("metadata      %d keys", #f.keys)
  for _, k in ipairs(f.keys) do
    local ty, et = f:type(k)
    local v
    if ty == "arr" then
      v = string.format("[%s x %d]", et or "?", f:arr_len(k))
    else
      v = f:get(k)
      if type(v) == "string" then
        v = v:gsub("\n", "\\n")
        if #v > 60 then v = v:sub(1, 57) .. "..." end
        v = '"' .. v .. '"'
      else
        v = tostring(v)
      end
    end
    p("  %-40s %s", k, v)
  end
end

local function tokenizer_line(tok, p)
  if tok then
    p("tokenizer     %s, %d tokens, bos %s, eos %s", tostring(tok.model or "bytes"), #tok,
      tostring(tok.bos or "none"), tostring(tok.eos or "none"))
  else
    p("tokenizer     none")
  end
end

-- info on a GGUF without tensors (a vocabulary, as llama.cpp's
-- ggml-vocab-*.gguf files): no model to load, its metadata and tokenizer
local function vocab_info(path, f, p)
  p("file          %s (%s)", path, human_bytes(file_size(path) or 0))
  p("format        GGUF v%d, vocabulary only (no tensors)", f.version)
  p("architecture  %s", tostring(f.metadata["general.architecture"] or "none"))
  metadata_lines(f, p)
  local tok, err = slm.tokenizer.load(path)
  if not tok and f.metadata["tokenizer.ggml.model"] ~= nil then fail("%s", err) end
  tokenizer_line(tok, p)
end

command("info", "info MODEL", "architecture, parameters, dtypes, metadata and tokenizer (also of vocabulary-only GGUF files)",
function(pos, opt)
  if #pos ~= 1 then usage_fail("info") end
  local out = {}
  local function p(fmt, ...) out[#out + 1] = string.format(fmt, ...) end
  local path = cli.resolve(pos[1])
  if read_magic(path) == "GGUF" then
    local f, err = slm.gguf.open(path)
    if not f then fail("%s", err) end
    if #f.tensors == 0 then
      vocab_info(path, f, p)
      io.write(table.concat(out, "\n"), "\n")
      return
    end
    f:close()
  end
  local model = load_model(pos[1], opt)
  local hp, src = model.hp, model.source
  local formats = { gguf = "GGUF v" .. (src.file and src.file.version or "?"),
                    rwkvcpp = "rwkv.cpp v" .. (src.header and src.header.version or "?"),
                    llama2c = "llama2.c checkpoint" }
  p("file          %s (%s)", model.path, human_bytes(file_size(model.path) or 0))
  p("format        %s", formats[src.kind] or src.kind)
  p("architecture  %s", hp.arch)
  local ts = tensors_of(model)
  local params, by = 0, {}
  for _, t in ipairs(ts) do
    local n = numel(t.shape)
    params = params + n
    local d = by[t.dtype] or { dtype = t.dtype, n = 0, params = 0, bytes = 0 }
    d.n, d.params, d.bytes = d.n + 1, d.params + n, d.bytes + (t.bytes or 0)
    by[t.dtype] = d
  end
  p("parameters    %s (%d tensors)", human_count(params), #ts)
  local shape = {}
  for _, k in ipairs { "n_layer", "dim", "n_head", "n_head_kv", "head_dim", "n_ff", "n_vocab",
                       "n_ctx_train", "d_state", "d_conv", "d_inner", "version" } do
    if hp[k] ~= nil then shape[#shape + 1] = k .. "=" .. tostring(hp[k]) end
  end
  p("hparams       %s", table.concat(shape, " "))
  if model.def.describe then p("layers        %s", model.def.describe(model.net)) end
  p("dtypes")
  local list = {}
  for _, d in pairs(by) do list[#list + 1] = d end
  table.sort(list, function(a, b) return a.bytes > b.bytes end)
  for _, d in ipairs(list) do
    p("  %-6s %4d tensors %10s params %12s", d.dtype, d.n, human_count(d.params), human_bytes(d.bytes))
  end
  if pos[1] == slm.model.DEFAULT_NAME then
    p("default       slm's default model (the name `default` stands for this file)")
  elseif slm.model.SHIPPED[pos[1]] then
    p("shipped       a model shipped with slm (the name `%s` stands for this file)", pos[1])
  end
  local md = src.kind == "gguf" and src.file.metadata
  if md and md["slm.recipe"] then
    -- a model slm trained itself: where it came from
    local vl = md["slm.recipe.val_loss"]
    -- (tools/default_model.lua measures per character, whatever the tokenizer)
    local tk = md["slm.recipe.tokenizer"]
    p("made by       %s (slm.recipe): %s, %s%s steps, seed %s%s", md["slm.recipe"], tostring(md["slm.recipe.corpus"]),
      tk and "tokenizer " .. tostring(tk) .. ", " or "", tostring(md["slm.recipe.steps"]), tostring(md["slm.recipe.seed"]),
      vl and string.format(", validation loss %.4f nats/char", vl) or "")
  end
  if src.kind == "gguf" then
    metadata_lines(src.file, p)
  else
    p("metadata      none (%s files carry a header only)", formats[src.kind] or src.kind)
  end
  tokenizer_line(model.tokenizer, p)
  io.write(table.concat(out, "\n"), "\n")
end)

command("tokenize", "tokenize (MODEL | --tokenizer FILE) TEXT [--no-bos] [--special]",
        "token ids and pieces of a text (--tokenizer: a GGUF, tokenizer.json or tokenizer.bin, no model needed)",
function(pos, opt)
  if #pos ~= 2 and not (opt.tokenizer and #pos == 1) then usage_fail("tokenize") end
  local tok, err
  if opt.tokenizer then
    tok, err = slm.tokenizer.load(opt.tokenizer)
    if not tok then fail("option --tokenizer: %s", err) end
  end
  local path = not tok and cli.resolve(pos[1])
  if tok then
    -- the model, if one was named too, is not needed
  elseif read_magic(path) == "fmgg" then
    tok = slm.tokenizer.bytes()
  elseif read_magic(path) == "GGUF" then
    tok, err = slm.tokenizer.load(path)
  else
    tok = load_model(pos[1], opt).tokenizer
    err = path .. " has no tokenizer: pass --tokenizer FILE"
  end
  if not tok then fail("%s", err) end
  local ids = tok:encode(pos[#pos], { add_special = not opt.no_bos, parse_special = opt.special })
  for _, id in ipairs(ids) do
    local piece = tok:piece(id)
    if piece == "" then piece = tok:decode({ id }, { special = true }) end
    io.write(string.format("%6d %s\n", id, (string.format("%q", piece):gsub("\\\n", "\\n"))))
  end
  io.write(string.format("%d tokens\n", #ids))
end)

-- one line of numbers per vector (rows of a 2-D tensor)
local function write_rows(t)
  local rows = t:dim() == 1 and t:reshape({ 1, t:numel() }) or t
  for r = 1, rows:size(1) do
    local line = {}
    for j = 1, rows:size(2) do line[j] = string.format("%.6g", rows:get(r, j)) end
    io.write(table.concat(line, " "), "\n")
  end
end

command("embed", "embed MODEL TEXT... [--similarity] [--pooling mean|cls|last|none] [--no-normalize]",
        "embedding vectors of texts, one line each (--similarity: their cosine matrix)",
function(pos, opt)
  if #pos < 2 then usage_fail("embed") end
  local POOLINGS = { none = true, mean = true, cls = true, last = true }
  if opt.pooling and not POOLINGS[opt.pooling] then
    fail("option --pooling must be mean, cls, last or none (got %s)", opt.pooling)
  end
  if opt.similarity and opt.pooling == "none" then fail("embed: --similarity needs one vector per text (not --pooling none)") end
  local model = load_model(pos[1], opt)
  need_tokenizer(model)
  local vecs = {}
  for i = 2, #pos do
    local ok, v = pcall(model.embed, model, pos[i], { pooling = opt.pooling, normalize = not opt.no_normalize })
    if not ok then fail("%s", tostring(v):gsub("^.-:%d+: ", "")) end
    vecs[#vecs + 1] = v
  end
  if not opt.similarity then
    for i, v in ipairs(vecs) do
      if i > 1 and v:dim() == 2 then io.write("\n") end   -- --pooling none: a block of rows per text
      write_rows(v)
    end
    return
  end
  -- cosine similarities: dot products of the vectors over their lengths
  local unit = {}
  for i, v in ipairs(vecs) do unit[i] = slm.core.ops.l2norm(v) end
  io.write("     ")
  for j = 1, #unit do io.write(string.format(" %6s", "[" .. j .. "]")) end
  io.write("\n")
  for i = 1, #unit do
    io.write(string.format("%-5s", "[" .. i .. "]"))
    for j = 1, #unit do
      local dot = 0
      for k = 1, unit[i]:numel() do dot = dot + unit[i]:get(k) * unit[j]:get(k) end
      io.write(string.format(" %6.3f", dot))
    end
    io.write("  ", (pos[i + 1]:gsub("%s+", " ")), "\n")
  end
end)

command("bench", "bench MODEL [--pp N] [--tg N] [--threads N]",
        "prompt processing and generation speed (tokens/s)",
function(pos, opt)
  if #pos ~= 1 then usage_fail("bench") end
  positive(opt, "pp", "--pp")
  positive(opt, "tg", "--tg")
  local n_prompt, n_gen = opt.pp or 128, opt.tg or 64
  local model = load_model(pos[1], opt)
  need_decoder(model)
  local clock = require("slm.bench").clock
  local nv = model.hp.n_vocab
  local ids = {}
  for i = 1, n_prompt do ids[i] = (i * 7919) % nv end
  -- as bench/llama.lua: pp is the best of 3 fresh sessions evaluating the
  -- prompt as one batch, tg the best of 2 runs of one token per eval
  local pp = 0
  for _ = 1, 3 do
    local s = model:session { ctx = n_prompt + n_gen + 8, batch = n_prompt }
    local t0 = clock()
    s:eval(ids)
    pp = math.max(pp, n_prompt / (clock() - t0))
  end
  local tg = 0
  for _ = 1, 2 do
    local s = model:session { ctx = n_prompt + n_gen + 8, batch = 16 }
    s:eval { 1 % nv, 2 % nv, 3 % nv, 4 % nv }
    local t0 = clock()
    for i = 1, n_gen do s:eval { (i * 31) % nv } end
    tg = math.max(tg, n_gen / (clock() - t0))
  end
  local rss = require("slm.bench").peak_rss_kb()
  io.write(string.format("%s  pp%d %.1f tok/s  tg%d %.1f tok/s  threads %d  peak rss %.1f MB\n",
                         model.path:match("[^/]+$"), n_prompt, pp, n_gen, tg, slm.threads(), rss / 1024))
end)

-- ---- quantize --------------------------------------------------------------------

command("quantize", "quantize IN OUT TYPE   (TYPE: " .. table.concat(slm.quantize.names(), " ") .. ")",
        "write a copy of a model quantized as the reference's quantizer does (slm.quantize)",
function(pos, opt)
  if #pos ~= 3 then usage_fail("quantize") end
  local ty, names, known = pos[3]:lower(), slm.quantize.names(), false
  for _, n in ipairs(names) do known = known or n == ty end
  if not known then fail("quantize: unknown type '%s' (one of %s)", pos[3], table.concat(names, " ")) end
  local inp, out = cli.resolve(pos[1]), pos[2]
  local in_size = file_size(inp) or 0          -- before OUT (which may be IN) is written
  local bar
  local ok, counts = slm.quantize(inp, out, ty, { progress = function(done, total)
    bar = bar or progress.new("quantize", total)
    bar:update(done)
  end })
  if bar then bar:finish() end
  if not ok then fail("%s", counts) end
  local parts = {}
  for d, n in pairs(counts) do parts[#parts + 1] = string.format("%d %s", n, d) end
  table.sort(parts)
  io.write(string.format("%s -> %s (%s): %s tensors, %s -> %s\n", inp, out, ty, table.concat(parts, ", "),
                         human_bytes(in_size), human_bytes(file_size(out) or 0)))
end)

-- ---- perplexity --------------------------------------------------------------------

command("perplexity", "perplexity MODEL FILE [--ctx N]", "perplexity of a model over a text file (slm.eval.perplexity)",
function(pos, opt)
  if #pos ~= 2 then usage_fail("perplexity") end
  positive(opt, "ctx", "--ctx")
  local fh, err = io.open(pos[2], "rb")
  if not fh then fail("%s", err) end
  local text = fh:read("a")
  fh:close()
  local model = load_model(pos[1], opt)
  need_tokenizer(model)
  local ids = model.tokenizer:encode(text, { add_special = true })
  if #ids < 2 then fail("perplexity: %s holds fewer than 2 tokens", pos[2]) end
  local ctx = opt.ctx or math.min(model.hp.n_ctx_train or 512, 512)
  if ctx < 2 then fail("perplexity: --ctx must be at least 2") end
  -- disjoint windows of ctx tokens, each from an empty context; the first
  -- token of each is not scored
  local bar = progress.new("perplexity", #ids)
  local r = slm.eval.perplexity(model, ids, { ctx = ctx, progress = function(done) bar:update(done) end })
  bar:finish()
  io.stderr:write(string.format("%d tokens scored in %d windows of up to %d\n", r.n, (#ids + ctx - 2) // ctx, ctx))
  io.write(string.format("%.4f\n", r.ppl))
end)

-- ---- train (lua/slm/train/cli.lua: its own flags) --------------------------------------

do
  local train_cli = require "slm.train.cli"
  command("train", train_cli.usage, train_cli.help, function(argv) train_cli.main(argv) end, true)
  local distill_cli = require "slm.train.distill_cli"
  command("distill", distill_cli.usage, distill_cli.help, function(argv) distill_cli.main(argv) end, true)
end

do   -- finetune --lora (lua/slm/train/finetune_cli.lua: its own flags)
  local ft = require "slm.train.finetune_cli"
  command("finetune", ft.usage, ft.help, function(argv) ft.main(argv) end, true)
end

-- ---- serve (lua/slm/server/cli.lua: its own flags) ------------------------------------

command("serve", require("slm.server.cli").usage, require("slm.server.cli").help,
        function(argv) require("slm.server.cli").main(argv, cli.resolve) end, true)

-- ---- repl, pull, help ----------------------------------------------------------------

command("repl", "repl [MODEL]", "Lua REPL with slm loaded (and `model`, `sess` bound; no MODEL: the default model)",
function(pos, opt)
  if #pos > 1 then usage_fail("repl") end
  local model, sess
  local name = pos[1]
  if not name then
    -- the default model when it is there; a bare REPL otherwise
    if slm.model.resolve(slm.model.DEFAULT_NAME) then
      name = slm.model.DEFAULT_NAME
    else
      io.stderr:write("slm: note: no default model (", slm.model.default_path(), "): `model` and `sess` are unbound\n")
    end
  end
  if name then
    model = load_model(name, opt)
    -- an encoder has no session: only `model` is bound
    if not model.def.encoder then sess = session_of(model, opt) end
  end
  require("slm.repl").run { model = model, sess = sess }
end)

-- External tools run without the sanitizer runtimes that bin/slm may
-- preload into lua5.4 (SLM_PRELOAD): curl deadlocks with ASan preloaded.
local NO_PRELOAD = "LD_PRELOAD= "

local function sha256(path)
  local p = io.popen(NO_PRELOAD .. "sha256sum " .. shq(path) .. " 2>/dev/null")
  local out = p and p:read("a") or ""
  if p then p:close() end
  return out:match("^(%x+)")
end

command("pull", "pull NAME | pull --list", "download a registry model into the cache ($SLM_CACHE)",
function(pos, opt)
  if opt.list or #pos == 0 then
    for _, e in ipairs(registry()) do
      local have = exists(cache_dir() .. "/" .. e.file)
      io.write(string.format("%-24s %-7s %-9s %s\n", e.name, e.arch or "?",
                             have and "pulled" or (e.listed_size or ""), e.url))
    end
    return
  end
  if #pos ~= 1 then usage_fail("pull") end
  local e = find_entry(pos[1])
  if not e then fail("pull: no model '%s' in the registry (`slm pull --list`)", pos[1]) end
  local dir = cache_dir()
  if not os.execute("mkdir -p " .. shq(dir)) then fail("pull: cannot create the cache directory %s", dir) end
  local final = dir .. "/" .. e.file
  if exists(final) then
    -- already pulled: keep it when it still matches what the registry lists
    local sum = sha256(final)
    local size = file_size(final)
    if (not e.sha256 or sum == e.sha256:lower()) and (not e.size or size == e.size) then
      io.write(string.format("%s is already pulled: %s (%d bytes, sha256 %s)\n", e.name, final, size, sum))
      return
    end
  end
  local part = final .. ".part"
  local errf = os.tmpname()
  -- curl draws its own bar on stderr when that is a terminal
  local quiet = progress.enabled() and "-#" or "-sS"
  local ok = os.execute(string.format("%scurl -fL %s --retry 2 -o %s %s 2>%s", NO_PRELOAD, quiet, shq(part), shq(e.url),
                                      progress.enabled() and "/dev/stderr" or shq(errf)))
  local cerr = ""
  local ef = io.open(errf, "r")
  if ef then cerr = ef:read("a") ef:close() end
  os.remove(errf)
  if not ok then
    os.remove(part)
    local last = ""
    for l in cerr:gmatch("[^\r\n]+") do last = l end
    if last == "" then last = "curl failed" end
    fail("pull %s: download failed (offline?): %s", e.name, last)
  end
  local size = file_size(part)
  if e.size and size ~= e.size then
    os.remove(part)
    fail("pull %s: size mismatch: got %d bytes, expected %d (download removed)", e.name, size, e.size)
  end
  local sum = sha256(part)
  if not sum then os.remove(part) fail("pull %s: sha256sum failed", e.name) end
  if e.sha256 and sum:lower() ~= e.sha256:lower() then
    os.remove(part)
    fail("pull %s: sha256 mismatch: got %s, expected %s (download removed)", e.name, sum, e.sha256)
  end
  local rok, rerr = os.rename(part, final)
  if not rok then os.remove(part) fail("pull %s: %s", e.name, rerr) end
  if not e.sha256 then
    io.stderr:write(string.format("slm: note: the registry lists no sha256 for %s; downloaded file has %s\n",
                                  e.name, sum))
  end
  io.write(string.format("%s -> %s (%d bytes, sha256 %s%s)\n", e.name, final, size, sum,
                         e.sha256 and " verified" or " unverified"))
end)

command("help", "help", "this list", function()
  io.write("usage: slm COMMAND [ARGS]   (MODEL: a file, or a name from `slm pull --list` once pulled)\n\n")
  for _, name in ipairs(order) do
    io.write(string.format("  %-11s %s\n              slm %s\n", name, commands[name].help, commands[name].usage))
  end
  io.write("\n  global options: --threads N, --tokenizer FILE, --debug (tracebacks)\n"
           .. "  sampling: without --seed each run draws a fresh seed (--verbose prints it); --seed N repeats a run,\n"
           .. "            --temp 0 is greedy\n"
           .. "  also: slm SCRIPT.lua [args], slm -e 'lua code', slm (no arguments: lua5.4 REPL with slm)\n"
           .. "  env: SLM_CACHE (model cache, default ~/.cache/slm), SLM_REGISTRY (a registry file),\n"
           .. "       SLM_PROGRESS=0/1 (progress bars off/on; default: when stderr is a terminal)\n")
end)

--- main(argv) -> exit status
function cli.main(argv)
  local show_tb = false
  for _, a in ipairs(argv) do if a == "--debug" then show_tb = true end end
  local ok, err = xpcall(function()
    local name = argv[1]
    if name == nil or name == "--help" or name == "-h" or name == "--debug" and argv[2] == nil then
      name = "help"
    end
    local rest = table.move(argv, 2, #argv, 1, {})
    if name == "--debug" then
      name = argv[2]
      rest = table.move(argv, 3, #argv, 1, {})
    end
    local cmd = commands[name]
    if not cmd then fail("unknown command '%s' (`slm help` lists them)", name) end
    if cmd.raw then
      cmd.fn(rest)
      return
    end
    local pos, opt = parse(rest)
    if opt.help then commands.help.fn() return end
    if opt.threads then
      positive(opt, "threads", "--threads")
      slm.threads(opt.threads)
    end
    cmd.fn(pos, opt)
  end, function(e)
    if getmetatable(e) == Fail then return e end
    if show_tb then return debug.traceback(tostring(e), 2) end
    return e
  end)
  if ok then
    io.stdout:flush()
    return 0
  end
  io.stdout:flush()
  if getmetatable(err) == Fail then
    io.stderr:write("slm: ", err.msg, "\n")
  else
    local msg = tostring(err)
    if not show_tb then msg = msg:gsub("^[^\n]-%.lua:%d+: ", ""):gsub("\n.*", "") end
    io.stderr:write("slm: ", msg, "\n")
  end
  return 1
end

if arg and arg[0] and arg[0]:match("cli%.lua$") then
  os.exit(cli.main({ table.unpack(arg, 1) }))
end

return cli
