--- slm.chat: chat templates and multi-turn chat on a session.
--
--   local reply, info = sess:chat({
--     {role = "system", content = "You are terse."},
--     {role = "user", content = "Hi"},
--   }, {template = "chatml", max_tokens = 64}, function(piece) io.write(piece) end)
--
--   local chat = sess:chat_session{template = "llama3", system = "You are terse."}
--   local r1 = chat:say("Hi")               -- appends the user turn and the reply
--   local r2 = chat:say("And then?", {max_tokens = 20}, function(piece) io.write(piece) end)
--   -- chat.messages holds the whole history
--
-- Templates: chatml, llama2, llama3, phi3, mistral, zephyr, gemma (rendered as
-- the families' published Jinja templates render them); by default the one
-- the model's GGUF `tokenizer.chat_template` is recognized as (by its
-- markers), chatml when the file has no template, an error when it has one
-- that is none of these. opts.template may also be a Lua function
-- `f(messages, add_generation_prompt, vars) -> parts` or a table
-- {render = f, stop = {...}, specials = {...}}: parts is a list whose strings
-- are template text and whose tables {text} are message content; vars has
-- bos and eos (the tokenizer's texts).
--
-- Tokens: template text is split at special-token texts (the template's
-- markers and end of turn - a table template lists its own in `specials` and
-- `stop` - and the tokenizer's BOS/EOS/EOT texts) that the vocabulary holds
-- as tokens, which become those ids; the text between them - template text and
-- message content together - is encoded with parse_special = false, so a
-- user who types "<|im_end|>" gets the characters, never the control token.
-- BOS comes from the template when it renders one, else from the tokenizer
-- when its vocabulary asks for one: never both. Generation stops at the
-- template's end of turn (a stop id when the vocabulary has it as a token,
-- a stop string otherwise) and at the vocabulary's end-of-generation ids;
-- the end of turn is not part of the reply.
--
-- Reuse: the session remembers what the last chat call left in it (the
-- rendered prompt and the reply's tokens). When the new rendering extends
-- that text - the usual next turn - only the new part is evaluated. When it
-- does not (history edited, another template, the session evaluated or
-- restored in between), the session is reset and the whole conversation is
-- evaluated again; so also when a template changes the reply as it renders
-- it back (llama2, llama3 and gemma strip surrounding spaces) or max_tokens
-- cut a character in two. The end-of-turn token that stopped generation is
-- never evaluated, so the next turn starts by evaluating it from the
-- template. The new part is encoded on its own: when it continues a text run
-- (llama2's " " after a reply), a SentencePiece vocabulary's dummy prefix
-- space may make its tokens differ from encoding the whole prompt at once.
-- The state is kept in sess.chat_state.
--
-- sess:chat never modifies `messages`; it returns the reply text and an info
-- table {template =, reused = tokens kept, evaluated = prompt tokens
-- evaluated, generated = tokens generated, reset = true when the session was
-- reset}. A chat session (sess:chat_session) keeps the history in
-- chat.messages and appends each user turn and reply to it.
local M = {}

-- Templates ------------------------------------------------------------------
--
-- Each render(messages, add_generation_prompt, vars) returns parts: strings
-- are template text, {text} tables are message content.

local function strip(s) return (s:gsub("^%s+", ""):gsub("%s+$", "")) end

local function split_system(messages)
  if messages[1] and messages[1].role == "system" then
    return messages[1].content, table.move(messages, 2, #messages, 1, {})
  end
  return nil, messages
end

local function check_alternation(name, msgs)
  for i, m in ipairs(msgs) do
    local want = i % 2 == 1 and "user" or "assistant"
    if m.role ~= want then
      error(string.format("chat: the %s template needs user/assistant turns alternating after an optional system message (message %d is '%s')",
                          name, i, tostring(m.role)), 0)
    end
  end
end

local T = {}

-- ChatML (Qwen2, SmolLM2, OpenHermes): no BOS in the template.
T.chatml = {
  stop = { "<|im_end|>" }, specials = { "<|im_start|>", "<|im_end|>" },
  render = function(messages, gen)
    local p = {}
    for _, m in ipairs(messages) do
      p[#p + 1] = "<|im_start|>" .. m.role .. "\n"
      p[#p + 1] = { m.content }
      p[#p + 1] = "<|im_end|>\n"
    end
    if gen then p[#p + 1] = "<|im_start|>assistant\n" end
    return p
  end,
}

-- Llama-2-chat: the system prompt goes inside the first [INST] in <<SYS>>;
-- every user turn opens with BOS, every reply ends with EOS; contents are
-- stripped. The generation prompt is the closing [/INST] itself.
T.llama2 = {
  stop = { "</s>" }, specials = {},
  render = function(messages, _, v)
    local sys, msgs = split_system(messages)
    check_alternation("llama2", msgs)
    local p = {}
    for i, m in ipairs(msgs) do
      if m.role == "user" then
        p[#p + 1] = v.bos .. "[INST] "
        if i == 1 and sys then
          -- content.strip() applies to the whole "<<SYS>>...user" string:
          -- the system text stays as it is, the user text loses its tail
          p[#p + 1] = "<<SYS>>\n"
          p[#p + 1] = { sys }
          p[#p + 1] = "\n<</SYS>>\n\n"
          p[#p + 1] = { (m.content:gsub("%s+$", "")) }
        else
          p[#p + 1] = { strip(m.content) }
        end
        p[#p + 1] = " [/INST]"
      else
        p[#p + 1] = " "
        p[#p + 1] = { strip(m.content) }
        p[#p + 1] = " " .. v.eos
      end
    end
    return p
  end,
}

-- Llama 3 / 3.x Instruct: BOS first, header per turn, contents trimmed.
T.llama3 = {
  stop = { "<|eot_id|>" }, bos = "<|begin_of_text|>",
  specials = { "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>" },
  render = function(messages, gen, v)
    local p = { v.bos }
    for _, m in ipairs(messages) do
      p[#p + 1] = "<|start_header_id|>" .. m.role .. "<|end_header_id|>\n\n"
      p[#p + 1] = { strip(m.content) }
      p[#p + 1] = "<|eot_id|>"
    end
    if gen then p[#p + 1] = "<|start_header_id|>assistant<|end_header_id|>\n\n" end
    return p
  end,
}

-- Phi-3.5-mini-instruct (Phi-3 with a system turn): no BOS in the template
-- (the tokenizer adds it); without the generation prompt it ends with EOS.
T.phi3 = {
  stop = { "<|end|>" }, specials = { "<|system|>", "<|user|>", "<|assistant|>", "<|end|>" },
  render = function(messages, gen, v)
    local p = {}
    for _, m in ipairs(messages) do
      if m.role ~= "system" or m.content ~= "" then
        p[#p + 1] = "<|" .. m.role .. "|>\n"
        p[#p + 1] = { m.content }
        p[#p + 1] = "<|end|>\n"
      end
    end
    p[#p + 1] = gen and "<|assistant|>\n" or v.eos
    return p
  end,
}

-- Mistral-7B-Instruct-v0.2 / Mixtral-8x7B-Instruct-v0.1: BOS once, replies
-- end with EOS. Those templates have no system role; as Mistral's later
-- templates do, a system message is put before the first user message,
-- followed by a blank line.
T.mistral = {
  stop = { "</s>" }, specials = { "[INST]", "[/INST]" },
  render = function(messages, _, v)
    local sys, msgs = split_system(messages)
    check_alternation("mistral", msgs)
    local p = { v.bos }
    for i, m in ipairs(msgs) do
      if m.role == "user" then
        p[#p + 1] = "[INST] "
        if i == 1 and sys then
          p[#p + 1] = { sys }
          p[#p + 1] = "\n\n"
        end
        p[#p + 1] = { m.content }
        p[#p + 1] = " [/INST]"
      else
        p[#p + 1] = { m.content }
        p[#p + 1] = v.eos
      end
    end
    return p
  end,
}

-- Zephyr-7b-beta: each turn ends with EOS and a newline; no BOS.
T.zephyr = {
  stop = { "</s>" }, specials = { "<|system|>", "<|user|>", "<|assistant|>" },
  render = function(messages, gen, v)
    local p = {}
    for _, m in ipairs(messages) do
      p[#p + 1] = "<|" .. m.role .. "|>\n"
      p[#p + 1] = { m.content }
      p[#p + 1] = v.eos .. "\n"
    end
    if gen then p[#p + 1] = "<|assistant|>\n" end
    return p
  end,
}

-- Gemma (gemma-it 1/2/3): BOS, roles user/model, contents trimmed. Gemma 1
-- and 2 refuse a system message; as Gemma 3's template does, it is put
-- before the first user message followed by a blank line.
T.gemma = {
  stop = { "<end_of_turn>" }, bos = "<bos>", eos = "<eos>",
  specials = { "<start_of_turn>", "<end_of_turn>" },
  render = function(messages, gen, v)
    local sys, msgs = split_system(messages)
    check_alternation("gemma", msgs)
    local p = { v.bos }
    for i, m in ipairs(msgs) do
      p[#p + 1] = "<start_of_turn>" .. (m.role == "assistant" and "model" or m.role) .. "\n"
      if i == 1 and sys then
        p[#p + 1] = { sys .. "\n\n" .. strip(m.content) }
      else
        p[#p + 1] = { strip(m.content) }
      end
      p[#p + 1] = "<end_of_turn>\n"
    end
    if gen then p[#p + 1] = "<start_of_turn>model\n" end
    return p
  end,
}

for name, t in pairs(T) do t.name = name end
M.templates = T

--- The template name a Jinja chat template (GGUF tokenizer.chat_template)
-- is recognized as, from the markers each family uses; nil if none.
function M.recognize(jinja)
  if type(jinja) ~= "string" then return nil end
  local function has(s) return jinja:find(s, 1, true) ~= nil end
  if has("<|im_start|>") then return "chatml" end
  if has("<|start_header_id|>") then return "llama3" end
  if has("<start_of_turn>") then return "gemma" end
  if has("<|user|>") then return has("<|end|>") and "phi3" or "zephyr" end
  if has("[INST]") then return has("<<SYS>>") and "llama2" or "mistral" end
  return nil
end

-- user templates as template tables, one per function/table (so that a
-- session sees the same template from one turn to the next)
local wrapped = setmetatable({}, { __mode = "k" })

-- opts.template (a name, a function or a table) or the model's own -> template table
local function resolve(tpl, model)
  if type(tpl) == "string" then
    return T[tpl] or error("chat: unknown template '" .. tpl .. "' (known: chatml, gemma, llama2, llama3, mistral, phi3, zephyr)", 0)
  elseif type(tpl) == "function" then
    wrapped[tpl] = wrapped[tpl] or { name = "function", render = tpl, stop = {}, specials = {} }
    return wrapped[tpl]
  elseif type(tpl) == "table" then
    if type(tpl.render) ~= "function" then error("chat: a template table needs a render function", 0) end
    wrapped[tpl] = wrapped[tpl] or { name = tpl.name or "custom", render = tpl.render, stop = tpl.stop or {},
                                     specials = tpl.specials or {}, bos = tpl.bos, eos = tpl.eos }
    return wrapped[tpl]
  elseif tpl ~= nil then
    error("chat: template must be a name, a function or a table (got " .. type(tpl) .. ")", 0)
  end
  local jinja = model and model.source and model.source.meta("tokenizer.chat_template")
  if jinja == nil then return T.chatml end
  local name = M.recognize(jinja)
  if not name then
    error("chat: the model's chat template is not one of chatml, gemma, llama2, llama3, mistral, phi3, zephyr; pass opts.template", 0)
  end
  return T[name]
end
M.resolve = resolve

-- bos/eos texts the template sees: the tokenizer's, else the family's
local function vars_for(tpl, tok)
  local v = { bos = tpl.bos or "<s>", eos = tpl.eos or "</s>" }
  if tok and tok.bos then v.bos = tok:text(tok.bos) end
  if tok and tok.eos then v.eos = tok:text(tok.eos) end
  return v
end

local function check_messages(messages)
  if type(messages) ~= "table" then error("chat: messages must be a list of {role =, content =}", 0) end
  for i, m in ipairs(messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" or type(m.content) ~= "string" then
      error("chat: message " .. i .. " needs a string role and a string content", 0)
    end
  end
end

local function render_parts(tpl, messages, gen, vars)
  check_messages(messages)
  local parts = tpl.render(messages, gen, vars)
  if type(parts) == "string" then parts = { parts } end
  if type(parts) ~= "table" then error("chat: the template returned " .. type(parts) .. ", not a list of parts", 0) end
  return parts
end

--- render(template, messages [, opts]) -> text, parts
-- opts: add_generation_prompt (default true), bos, eos (texts, default the
-- family's: "<s>"/"</s>", "<|begin_of_text|>", "<bos>"/"<eos>"), model (for
-- the default template).
function M.render(template, messages, opts)
  opts = opts or {}
  local tpl = resolve(template, opts.model)
  local v = vars_for(tpl, nil)
  v.bos, v.eos = opts.bos or v.bos, opts.eos or v.eos
  local parts = render_parts(tpl, messages, opts.add_generation_prompt ~= false, v)
  local out = {}
  for i, p in ipairs(parts) do out[i] = type(p) == "table" and p[1] or p end
  return table.concat(out), parts
end

-- Units ----------------------------------------------------------------------
--
-- A rendering as the tokenizer sees it: a list of special token ids
-- (integers) and raw texts (strings, adjacent ones merged).

local function push_raw(units, s)
  if s == "" then return end
  local n = #units
  if type(units[n]) == "string" then units[n] = units[n] .. s else units[n + 1] = s end
end

-- the marker texts of tpl that this vocabulary has as tokens, longest first
local function marker_ids(tpl, tok)
  local texts = {}
  for _, s in ipairs(tpl.specials) do texts[#texts + 1] = s end
  for _, s in ipairs(tpl.stop) do texts[#texts + 1] = s end
  for _, k in ipairs { "bos", "eos", "eot" } do
    if tok[k] then texts[#texts + 1] = tok:text(tok[k]) end
  end
  local list, seen = {}, {}
  for _, s in ipairs(texts) do
    local id = s ~= "" and not seen[s] and tok:id(s)
    if id then
      seen[s] = true
      list[#list + 1] = { text = s, id = id }
    end
  end
  table.sort(list, function(a, b) return #a.text > #b.text end)
  return list
end

local function to_units(parts, markers)
  local units = {}
  for i, p in ipairs(parts) do
    if type(p) == "table" then
      if type(p[1]) ~= "string" then error("chat: part " .. i .. " of the template is a table without a content string", 0) end
      push_raw(units, p[1])
    elseif type(p) == "string" then
      local pos = 1
      while pos <= #p do
        local at, best
        for _, m in ipairs(markers) do
          local a = p:find(m.text, pos, true)
          if a and (not at or a < at) then at, best = a, m end
        end
        if not at then push_raw(units, p:sub(pos)) break end
        push_raw(units, p:sub(pos, at - 1))
        units[#units + 1] = best.id
        pos = at + #best.text
      end
    else
      error("chat: part " .. i .. " of the template is a " .. type(p), 0)
    end
  end
  return units
end

-- When `new` starts with `old` (specials equal, texts equal, the last old
-- text a prefix of the new text at its place), the units left to evaluate.
local function extension(old, new)
  local rest = {}
  for i, o in ipairs(old) do
    local n = new[i]
    if math.type(o) == "integer" then
      if n ~= o then return nil end
    elseif type(n) ~= "string" then
      return nil
    elseif i < #old then
      if n ~= o then return nil end
    else
      if n:sub(1, #o) ~= o then return nil end
      if #n > #o then rest[1] = n:sub(#o + 1) end
    end
  end
  for i = #old + 1, #new do rest[#rest + 1] = new[i] end
  return rest
end

local function encode_units(tok, units)
  local ids = {}
  for _, u in ipairs(units) do
    if math.type(u) == "integer" then
      ids[#ids + 1] = u
    else
      for _, id in ipairs(tok:encode(u, { add_special = false, parse_special = false })) do ids[#ids + 1] = id end
    end
  end
  return ids
end

--- tokenize(tok, messages [, opts]) -> ids, units: the ids sess:chat would
-- evaluate on an empty session (opts: template, add_generation_prompt).
function M.tokenize(tok, messages, opts)
  opts = opts or {}
  local tpl = resolve(opts.template or "chatml")
  local parts = render_parts(tpl, messages, opts.add_generation_prompt ~= false, vars_for(tpl, tok))
  local units = to_units(parts, marker_ids(tpl, tok))
  if tok.add_bos and tok.bos and units[1] ~= tok.bos then table.insert(units, 1, tok.bos) end
  return encode_units(tok, units), units
end

local GEN_KEYS = { "max_tokens", "sampler", "regex", "regex_width", "special" }

--- sess:chat(messages, opts [, callback]) -> reply, info
-- opts: template, and generate's max_tokens, sampler, stop, stop_ids,
-- regex, special. callback(piece, id) streams the reply (return false to stop).
function M.chat(sess, messages, opts, callback)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #2 to 'chat' (table expected)", 2) end
  local tok = sess.model.tokenizer
  if not tok then error("chat: this model has no tokenizer", 2) end
  local tpl = resolve(opts.template, sess.model)
  local parts = render_parts(tpl, messages, true, vars_for(tpl, tok))
  local units = to_units(parts, marker_ids(tpl, tok))
  if tok.add_bos and tok.bos and units[1] ~= tok.bos then table.insert(units, 1, tok.bos) end

  -- what the session holds from the last call, if it is still untouched
  local last = sess.chat_state
  local rest
  if last and last.tokens == sess.tokens and last.n_past == sess.n_past and last.template == tpl then
    rest = extension(last.units, units)
  end
  local info = { template = tpl.name, reset = false }
  if not rest then
    if sess.n_past > 0 then info.reset = true end
    sess:reset()
    rest = units
  end
  info.reused = sess.n_past
  local ids = encode_units(tok, rest)
  info.evaluated = #ids

  -- end of turn: ids when the vocabulary has them, else stop strings
  local stops, stop_ids = {}, {}
  for _, s in ipairs(tpl.stop) do
    local id = tok:id(s)
    if id then stop_ids[#stop_ids + 1] = id else stops[#stops + 1] = s end
  end
  local user_stop = opts.stop
  if type(user_stop) == "string" then user_stop = { user_stop } end
  for _, s in ipairs(user_stop or {}) do stops[#stops + 1] = s end
  for _, id in ipairs(opts.stop_ids or {}) do stop_ids[#stop_ids + 1] = id end
  local gopts = { stop = stops, stop_ids = stop_ids }
  for _, k in ipairs(GEN_KEYS) do gopts[k] = opts[k] end

  local n0 = sess.n_past + #ids
  local reply = sess:generate(#ids > 0 and ids or nil, gopts, callback or function() end)

  -- the session now holds the prompt and the reply's tokens: remember them
  -- for the next turn's comparison, as text decoded as generate decodes it
  -- (so that a reply rendered back as it was returned matches), control
  -- tokens as ids, and a character cut by max_tokens as its flushed bytes
  -- (which no rendering matches: the next turn starts over)
  local held = table.move(units, 1, #units, 1, {})
  local dec = tok:decoder(opts.special)
  for i = n0 + 1, sess.n_past do
    local id = sess.tokens[i]
    if not opts.special and tok:piece(id) == "" and tok:piece(id, true) ~= "" then
      held[#held + 1] = id
    else
      push_raw(held, dec:add(id))
    end
  end
  push_raw(held, dec:flush())
  info.generated = sess.n_past - n0
  sess.chat_state = { tokens = sess.tokens, n_past = sess.n_past, units = held, template = tpl }
  return reply, info
end

-- Chat sessions --------------------------------------------------------------

local Chat = {}
Chat.__index = Chat

--- sess:chat_session{template =, system =, <generate opts>} -> chat
-- The options other than system become the defaults of every say().
function M.session(sess, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #1 to 'chat_session' (table expected)", 2) end
  local defaults = {}
  for k, v in pairs(opts) do if k ~= "system" then defaults[k] = v end end
  resolve(defaults.template, sess.model)   -- fail now, not at the first say
  local messages = {}
  if opts.system then messages[1] = { role = "system", content = opts.system } end
  return setmetatable({ session = sess, messages = messages, defaults = defaults }, Chat)
end

--- chat:say(text [, opts [, callback]]) -> reply, info
-- Appends {role = "user", content = text} and the reply to chat.messages.
function Chat:say(text, opts, callback)
  if type(text) ~= "string" then error("bad argument #1 to 'say' (string expected)", 2) end
  if type(opts) == "function" and callback == nil then opts, callback = nil, opts end
  local o = {}
  for k, v in pairs(self.defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  self.messages[#self.messages + 1] = { role = "user", content = text }
  local ok, reply, info = pcall(M.chat, self.session, self.messages, o, callback)
  if not ok then
    self.messages[#self.messages] = nil
    error(reply, 2)
  end
  self.messages[#self.messages + 1] = { role = "assistant", content = reply }
  return reply, info
end

function Chat:__tostring()
  return string.format("slm.Chat(%d messages, %s)", #self.messages, tostring(self.session))
end

M.Chat = Chat
return M
