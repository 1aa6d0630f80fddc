--- Text generation on a session: streaming pieces, stop conditions,
-- samplers and regex-constrained decoding.
--
--   for piece, id in sess:generate("Once upon a time", {max_tokens = 50,
--       sampler = slm.sampler.default{temp = 0.8, seed = 1}, stop = {"\n\n"}}) do
--     io.write(piece)
--   end
--   local text = sess:generate(prompt, opts, function(piece, id) ... end)
--
-- prompt: a string (encoded with the model's tokenizer; BOS added when the
--   session is empty and the vocabulary asks for it), a table of ids, or
--   nil to continue from the session's current logits.
-- opts: max_tokens (default 256), sampler (a chain, a list of stages as
--   slm.sampler.chain takes, or nil for greedy), stop (a string or list of
--   strings: generation ends before the first occurrence, which is not
--   emitted), stop_ids (extra end ids; the vocabulary's end-of-generation
--   ids always stop), regex (a PCRE2 pattern the output must match: only
--   tokens that keep it matchable are sampled, and generation ends when it
--   is complete: patterns in slm.grammar.from_regex's subset run on the
--   grammar matcher, others re-match the text with PCRE2 partial matching
--   among the best candidates), regex_width (candidates the PCRE2 path
--   keeps per step, default 40), grammar (GBNF text or a compiled slm.grammar: tokens whose text
--   the grammar cannot continue get -inf logits before the sampler runs,
--   end-of-generation tokens are allowed only where the grammar is
--   complete; generation ends once it is complete and nothing can follow,
--   or when an end token is chosen there; near max_tokens only tokens
--   after which the grammar can still complete in the tokens left are
--   allowed, as long as there are such tokens), json_schema (a JSON Schema,
--   table or JSON text: the grammar slm.grammar.from_json_schema makes of
--   it; the subset: docs/STRUCTURED.md), special (render control tokens, default false), parse_special
--   (special-token text in a string prompt becomes those tokens, default
--   false), draft (a session of a model sharing the vocabulary, or
--   "ngram" for prompt lookup: speculative decoding, slm.speculative) and
--   n_draft (the most tokens drafted per round, default 6; the length
--   adapts to the acceptance). An unknown option or a
--   value of the wrong kind is an error
--   naming it ("generate: max_tokens must be a non-negative integer, got -1").
-- Pieces are complete UTF-8: a character split across tokens comes out
-- whole with the token that completes it. Breaking out of the loop (or an
-- error) releases what the generator holds; the session keeps every token
-- evaluated so far.
--
-- info: the callback form returns text, info; the loop form's second value
-- (the generic for's state, which the loop ignores) is the same table,
-- filled in as generation goes:
--   seed           the seed of the sampler's dist stage (nil when greedy):
--                  without one given, a fresh seed each run (slm.sampler)
--   stopped        why generation ended: "max_tokens", "end" (an
--                  end-of-generation or stop_ids token), "stop" (a stop
--                  string), "regex" (the match is complete), "ctx" (the
--                  session's context is full), "callback" (it returned false),
--                  "grammar" (the grammar is complete: nothing can follow or
--                  an end token was chosen), "grammar_incomplete" (max_tokens
--                  or the context ran out before the grammar was complete)
--   grammar        with a grammar: "complete" or "incomplete" at the end
--   prompt_tokens, tokens     tokens evaluated for the prompt, generated
--   prompt_seconds, seconds   time spent on each
--   speculative    with a draft: rounds, drafted, accepted, acceptance
--                  (accepted / drafted), forwards (of the target), tokens,
--                  tokens_per_forward, skipped (rounds without drafts
--                  while the draft length backs off); complete once
--                  generation has ended
local core = require "slm.core"
local sampler_mod = require "slm.sampler"
local options = require "slm.options"
local speculative = require "slm.speculative"
local grammar_mod = require "slm.grammar"
local tensor = require "slm.tensor"

local M = {}

--- M.pcre_regex = true sends every regex through PCRE2 re-matching (the
-- bench compares the two paths with it).
M.pcre_regex = false

--- The options of generate (sess:chat and pipeline steps pass them on).
M.OPTIONS = { "max_tokens", "sampler", "stop", "stop_ids", "regex", "regex_width", "grammar", "json_schema",
              "special", "parse_special", "draft", "n_draft" }
local KNOWN = options.known(M.OPTIONS)

--- problem(what, opts) -> nil, or the message "<what>: <option> must be
-- ..., got ..." for the first of generate's options in opts whose value is
-- of the wrong kind.
function M.problem(what, opts)
  local function bad(key, expected) return options.message(what, key, expected, opts[key]) end
  if not options.is_int(opts.max_tokens, 0) then return bad("max_tokens", "a non-negative integer") end
  local smp = opts.sampler
  if smp ~= nil and type(smp) ~= "table" and type(smp) ~= "userdata" then
    return bad("sampler", "a sampler or a list of stages")
  end
  local stop = opts.stop
  if type(stop) == "table" then
    for i, x in ipairs(stop) do
      if type(x) ~= "string" or x == "" then return options.message(what, "stop[" .. i .. "]", "a non-empty string", x) end
    end
  elseif stop ~= nil and (type(stop) ~= "string" or stop == "") then
    return bad("stop", "a non-empty string or a list of them")
  end
  if opts.stop_ids ~= nil then
    if type(opts.stop_ids) ~= "table" then return bad("stop_ids", "a list of token ids") end
    for i, id in ipairs(opts.stop_ids) do
      if math.type(id) ~= "integer" then return options.message(what, "stop_ids[" .. i .. "]", "a token id", id) end
    end
  end
  if not options.is_string(opts.regex) then return bad("regex", "a string (a PCRE2 pattern)") end
  if not options.is_int(opts.regex_width, 1) then return bad("regex_width", "a positive integer") end
  if opts.grammar ~= nil and type(opts.grammar) ~= "string" and not grammar_mod.is_grammar(opts.grammar) then
    return bad("grammar", "GBNF text or a compiled grammar")
  end
  if opts.grammar ~= nil and opts.regex ~= nil then
    return what .. ": give grammar or regex, not both"
  end
  local js = opts.json_schema
  if js ~= nil and type(js) ~= "table" and type(js) ~= "string" and type(js) ~= "boolean" then
    return bad("json_schema", "a schema (a table or JSON text)")
  end
  if js ~= nil and (opts.grammar ~= nil or opts.regex ~= nil) then
    return what .. ": give one of json_schema, grammar and regex"
  end
  if not options.is_bool(opts.special) then return bad("special", "a boolean") end
  if not options.is_bool(opts.parse_special) then return bad("parse_special", "a boolean") end
  return speculative.problem(what, opts)
end

--- check(what, opts [, level]) -> opts (a table): generate's keys and
-- values, else an error at level (as the caller would pass to error(),
-- default 2: the caller's caller).
function M.check(what, opts, level)
  level = level or 2
  opts = options.check(what, opts, KNOWN, level + 2)
  local msg = M.problem(what, opts)
  if msg then error(msg, level + 1) end
  return opts
end

local function as_sampler(s)
  if s == nil then return sampler_mod.greedy(), true end
  if type(s) == "table" and getmetatable(s) == nil then return sampler_mod.chain(s), true end
  return s, false
end

-- Longest suffix of text that is a proper prefix of some stop string.
local function held_back(text, stops)
  local keep = 0
  for _, s in ipairs(stops) do
    for n = math.min(#s - 1, #text), 1, -1 do
      if n > keep and text:sub(-n) == s:sub(1, n) then
        keep = n
        break
      end
    end
  end
  return keep
end

-- A Lua sampler stage that keeps only tokens whose text keeps the regex
-- matchable (PCRE2 partial matching) after what was generated so far. It
-- walks the candidates from the most likely down and stops after `width`
-- survivors, banning the rejected ones, so a step costs width + rejected
-- matches, not a pass over the vocabulary.
local function regex_stage(gen, re, tok, width)
  return function(c)
    c:sort()
    local keep = 0
    for i = 1, #c do
      -- tokens without text (end of generation, controls) never advance the
      -- match: the match's completion ends generation instead
      local piece = tok:piece(c:id(i))
      if piece ~= "" and re:match(gen.text .. piece) then
        keep = keep + 1
        if keep >= width then
          c:truncate(i)
          break
        end
      else
        c:set_logit(i, -math.huge)
      end
    end
    if keep == 0 then error("generate: no token can continue a match of the regex", 0) end
  end
end

--- sess:generate(prompt, opts [, callback])
function M.generate(sess, prompt, opts, callback)
  opts = M.check("generate", opts)
  if callback ~= nil and type(callback) ~= "function" then
    error("bad argument #3 to 'generate' (function expected, got " .. type(callback) .. ")", 2)
  end
  local model = sess.model
  local tok = model.tokenizer
  local max_tokens = opts.max_tokens or 256
  local stops = opts.stop or {}
  if type(stops) == "string" then stops = { stops } end
  local stop_ids = {}
  for _, id in ipairs(opts.stop_ids or {}) do stop_ids[id] = true end
  if opts.draft ~= nil then speculative.check(sess, opts, 3) end   -- before the prompt is evaluated
  local clock = core.clock
  local info = { prompt_tokens = 0, tokens = 0, prompt_seconds = 0, seconds = 0 }

  -- the prompt
  local ids
  if type(prompt) == "string" then
    if not tok then error("generate: this model has no tokenizer; pass token ids", 2) end
    ids = tok:encode(prompt, { add_special = sess.n_past == 0, parse_special = opts.parse_special })
  elseif type(prompt) == "table" then
    ids = prompt
  elseif prompt ~= nil then
    error("bad argument #1 to 'generate' (string, table of ids or nil expected)", 2)
  end
  if ids and #ids > 0 then
    if sess.n_past + #ids > sess.n_ctx then
      error(string.format("generate: prompt of %d tokens does not fit the context (%d of %d in use)", #ids,
                          sess.n_past, sess.n_ctx), 2)
    end
    local t0 = clock()
    sess:eval(ids)
    info.prompt_tokens, info.prompt_seconds = #ids, clock() - t0
  elseif sess.n_past == 0 then error("generate: empty session and no prompt", 2) end

  local gen = { text = "", count = 0, done = false }
  local sampler, owned, re, gm, masked
  if opts.json_schema ~= nil then
    -- a schema is a grammar (docs/STRUCTURED.md); its errors name the keyword
    local ok, g = pcall(grammar_mod.from_json_schema, opts.json_schema)
    if not ok then error("generate: " .. tostring(g), 2) end
    opts = setmetatable({ grammar = g }, { __index = opts })
  end
  if opts.grammar then
    if not tok then error("generate: grammar needs a tokenizer", 2) end
    local g = opts.grammar
    if type(g) == "string" then
      local ok, c = pcall(grammar_mod.compile, g)
      if not ok then error("generate: " .. tostring(c), 2) end
      g = c
    end
    gm = g:matcher()
    masked = tensor.zeros({ sess.logits:numel() })
  end
  local regex_grammar
  if opts.regex then
    if not tok then error("generate: regex needs a tokenizer", 2) end
    re = core.regex.new(opts.regex)   -- PCRE2 checks the pattern and words its errors
    -- within the subset slm.grammar.from_regex translates, the regex runs
    -- on the grammar matcher: a constant cost per token
    if not M.pcre_regex then regex_grammar = grammar_mod.from_regex(opts.regex) end
    if regex_grammar then
      re:free()
      re = nil
      gm = regex_grammar:matcher()
      masked = tensor.zeros({ sess.logits:numel() })
    end
  end
  if re then
    -- the constraint runs first, then the user's stages pick among survivors
    local stages = opts.sampler or { "greedy" }
    if type(stages) ~= "table" or getmetatable(stages) ~= nil then
      error("generate: with regex, give the sampler as a list of stages", 2)
    end
    sampler = sampler_mod.chain { regex_stage(gen, re, tok, opts.regex_width or 40), table.unpack(stages) }
    owned = true
  else
    sampler, owned = as_sampler(opts.sampler)
  end
  info.seed = sampler_mod.seed(sampler)
  local spec
  if opts.draft ~= nil then
    spec = speculative.new(sess, opts, sampler, function(id) return stop_ids[id] or (tok and tok:is_eog(id)) end)
    info.speculative = spec.stats
  end
  local decoder = tok and tok:decoder(opts.special)
  local pending = ""

  local function release(why)
    if spec then spec:settle() end
    if owned and sampler.free then sampler:free() end
    owned = false
    if gm and not gen.done then
      info.grammar = gm:complete() and "complete" or "incomplete"
      -- running out of tokens or context before the grammar is complete is
      -- said, not left as a silent cut
      if info.grammar == "incomplete" and (why == "max_tokens" or why == "ctx") then why = "grammar_incomplete" end
    end
    gen.done = true
    info.stopped = info.stopped or why
  end

  -- at the end, text still held back (a possible stop-string prefix, bytes
  -- of an unfinished UTF-8 character) comes out as one last piece carrying
  -- the id of the last token
  local function finish(why)
    release(why)
    local rest = pending .. (decoder and decoder:flush() or "")
    pending = ""
    if rest ~= "" then return rest, gen.last_id end
    return nil
  end

  -- one step: returns the next piece (possibly "") and id, or nil when done
  local function step()
    if gen.done then return nil end
    if gen.count >= max_tokens then return finish("max_tokens") end
    if (spec and spec.n_past or sess.n_past) >= sess.n_ctx then return finish("ctx") end
    local t0 = clock()
    local id
    if spec then
      id = spec:next(max_tokens - gen.count)   -- sampled, accepted and (but the last) evaluated
    else
      local logits = sess.logits
      if gm then
        -- tokens left after this one bound the bytes still needed to complete
        local n = gm:apply(tok, logits, masked, max_tokens - gen.count - 1)
        if n == 0 then n = gm:apply(tok, logits, masked) end
        if n == 0 then
          if gm:complete() then return finish(regex_grammar and "regex" or "grammar") end
          error(regex_grammar and "generate: no token can continue a match of the regex"
                or "generate: no token of the vocabulary can continue the grammar", 0)
        end
        logits = masked
      end
      id = sampler:sample(logits)
      sampler:accept(id)
    end
    gen.count = gen.count + 1
    if stop_ids[id] or (tok and tok:is_eog(id)) then
      return finish(gm and gm:complete() and (regex_grammar and "regex" or "grammar") or "end")
    end
    gen.last_id = id
    local piece = decoder and decoder:add(id) or ""
    if not spec then sess:eval { id } end
    info.tokens, info.seconds = info.tokens + 1, info.seconds + (clock() - t0)
    if gm then
      assert(gm:accept(tok:piece(id)), "generate: the grammar refused a token its mask allowed")
      -- a regex ends at its first complete match (as with PCRE2)
      if gm:complete() and (regex_grammar or not gm:can_continue()) then
        local before = pending
        pending = ""
        return before .. piece .. (finish(regex_grammar and "regex" or "grammar") or ""), id
      end
    end
    gen.text = gen.text .. piece
    if re and re:match(gen.text) == "full" then
      release("regex")
      return pending .. piece, id
    end
    if #stops == 0 then return piece, id end
    pending = pending .. piece
    for _, s in ipairs(stops) do
      local at = pending:find(s, 1, true)
      if at then
        release("stop")
        return pending:sub(1, at - 1), id
      end
    end
    local keep = held_back(pending, stops)
    local out = pending:sub(1, #pending - keep)
    pending = pending:sub(#pending - keep + 1)
    return out, id
  end

  if callback then
    local parts = {}
    while true do
      local piece, id = step()
      if piece == nil then break end
      parts[#parts + 1] = piece
      if callback(piece, id) == false then release("callback") break end
    end
    release()
    return table.concat(parts), info
  end
  local closer = setmetatable({}, { __close = function() release() end })
  return function()
    local piece, id = step()
    return piece, id
  end, info, nil, closer
end

return M
