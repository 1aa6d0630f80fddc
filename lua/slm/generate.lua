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
--   is complete), special (render control tokens, default false).
-- Pieces are complete UTF-8: a character split across tokens comes out
-- whole with the token that completes it. Breaking out of the loop (or an
-- error) releases what the generator holds; the session keeps every token
-- evaluated so far.
local core = require "slm.core"
local sampler_mod = require "slm.sampler"

local M = {}

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
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'generate' (table expected)", 2) end
  local model = sess.model
  local tok = model.tokenizer
  local max_tokens = opts.max_tokens or 256
  if math.type(max_tokens) ~= "integer" or max_tokens < 0 then
    error("generate: max_tokens must be a non-negative integer", 2)
  end
  local stops = opts.stop or {}
  if type(stops) == "string" then stops = { stops } end
  for i, s in ipairs(stops) do
    if type(s) ~= "string" or s == "" then error("generate: stop[" .. i .. "] must be a non-empty string", 2) end
  end
  local stop_ids = {}
  for _, id in ipairs(opts.stop_ids or {}) do stop_ids[id] = true end

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
  if ids and #ids > 0 then sess:eval(ids)
  elseif sess.n_past == 0 then error("generate: empty session and no prompt", 2) end

  local gen = { text = "", count = 0, done = false }
  local sampler, owned, re
  if opts.regex then
    if not tok then error("generate: regex needs a tokenizer", 2) end
    re = core.regex.new(opts.regex)
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
  local decoder = tok and tok:decoder(opts.special)
  local pending = ""

  local function release()
    if owned and sampler.free then sampler:free() end
    owned = false
    gen.done = true
  end

  -- at the end, text still held back (a possible stop-string prefix, bytes
  -- of an unfinished UTF-8 character) comes out as one last piece carrying
  -- the id of the last token
  local function finish()
    release()
    local rest = pending .. (decoder and decoder:flush() or "")
    pending = ""
    if rest ~= "" then return rest, gen.last_id end
    return nil
  end

  -- one step: returns the next piece (possibly "") and id, or nil when done
  local function step()
    if gen.done then return nil end
    if gen.count >= max_tokens or sess.n_past >= sess.n_ctx then return finish() end
    local id = sampler:sample(sess.logits)
    sampler:accept(id)
    gen.count = gen.count + 1
    if stop_ids[id] or (tok and tok:is_eog(id)) then return finish() end
    gen.last_id = id
    local piece = decoder and decoder:add(id) or ""
    sess:eval { id }
    gen.text = gen.text .. piece
    if re and re:match(gen.text) == "full" then
      release()
      return pending .. piece, id
    end
    if #stops == 0 then return piece, id end
    pending = pending .. piece
    for _, s in ipairs(stops) do
      local at = pending:find(s, 1, true)
      if at then
        release()
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
      if callback(piece, id) == false then release() break end
    end
    release()
    return table.concat(parts)
  end
  local closer = setmetatable({}, { __close = release })
  return function()
    local piece, id = step()
    return piece, id
  end, nil, nil, closer
end

return M
