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
-- Templates (each renders as the family's published Jinja template renders,
-- without tools): chatml; qwen2.5 and smollm2 (ChatML with their default
-- system turns); qwen3 (ChatML, reasoning in <think> blocks); smollm3 (the
-- Hugging Face template: metadata system turn, /think and /no_think) and
-- smollm3-edited (the edited copy llama.cpp tests with); llama2; llama3
-- (3.0), llama3.1 (3.1 and 3.3) and llama3.2 (a system turn with the
-- knowledge cutoff and a date); phi3 (Phi-3.5), phi4 (Phi-4-mini); mistral;
-- zephyr; gemma (1, 2, 3); granite (3.3). By default the one the model's
-- GGUF `tokenizer.chat_template` is recognized as (M.recognize: fragments of
-- each published template), chatml when the file has no template, an error
-- when it has one that is none of these. opts.template may also be a Lua
-- function `f(messages, add_generation_prompt, vars) -> parts` or a table
-- {render = f, stop = {...}, specials = {...}, reasoning = bool}: parts is a
-- list whose strings are template text and whose tables {text} are message
-- content; vars has bos and eos (the tokenizer's texts), think and date.
--
-- Template options (in sess:chat, chat_session, render and tokenize opts; a
-- wrong type, or one the template does not have, is an error):
--   think = false   qwen3: enable_thinking = false (an empty think block
--                   ends the prompt); smollm3: /no_think mode (default
--                   /think); granite: think = true asks for <think> and
--                   <response> sections in its default system turn.
--   date            os.time() seconds or {year =, month =, day =}: the date
--                   smollm3, granite, llama3.1 and llama3.2 print; default
--                   today (local time) as their strftime_now() does, except
--                   llama3.1, whose template says 26 Jul 2024.
-- Messages may carry reasoning_content (qwen3) and, for phi4's system
-- message, tools (a string); assistant messages' tool_calls ({name =,
-- arguments =} or OpenAI's {["function"] = ...}) render with qwen2.5 and
-- qwen3 and are an error elsewhere; opts.tools lists tools in those two
-- (see sess:chat).
--
-- Reasoning: with qwen3 and smollm3 the reply is the answer and
-- info.reasoning the text of its <think> block, read as Qwen3's template
-- reads an assistant message (a block max_tokens cut is all reasoning); a
-- chat session stores it as the message's reasoning_content. The callback
-- streams the raw text (think markers included when they are not control
-- tokens). A reply that thought is not rendered back as the session holds
-- it (Qwen3's template drops earlier reasoning; a chat session stores the
-- answer, which smollm3 renders without the think block): the next turn
-- starts over.
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
-- it back (llama2, llama3.x and gemma strip surrounding spaces, qwen3 drops
-- reasoning, smollm3 leading newlines) or max_tokens cut a character in two.
-- The end-of-turn token that stopped generation is never evaluated, so the
-- next turn starts by evaluating it from the template. The new part is
-- encoded on its own: when it continues a text run (llama2's " " after a
-- reply), a SentencePiece vocabulary's dummy prefix space may make its
-- tokens differ from encoding the whole prompt at once.
-- The state is kept in sess.chat_state.
--
-- sess:chat never modifies `messages`; it returns the reply text and an info
-- table {template =, reused = tokens kept, evaluated = prompt tokens
-- evaluated, generated = tokens generated, reset = true when the session was
-- reset, reasoning = see above, seed =, stopped =, prompt_seconds =,
-- seconds = as sess:generate's info}.
-- A conversation longer than the session's context is an error; a chat
-- session (sess:chat_session) keeps the history in chat.messages, appends
-- each user turn and reply to it and, when the history no longer fits,
-- drops its oldest turns (see chat:say).
--
-- Options are checked: an unknown key, or a value of the wrong kind, is an
-- error naming it ("chat: unknown option 'max_token' (known: ...)").
local options = require "slm.options"
local generate = require "slm.generate"

local M = {}

-- Text -----------------------------------------------------------------------

-- Python's str.isspace characters: what Jinja's trim and str.strip(),
-- rstrip(), lstrip() remove (Lua's %s knows only the ASCII ones)
local PY_SPACE = {}
for _, c in ipairs { 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680,
                     0x2028, 0x2029, 0x202F, 0x205F, 0x3000 } do PY_SPACE[c] = true end
for c = 0x2000, 0x200A do PY_SPACE[c] = true end

-- s without the leading (left) and/or trailing (right) characters that
-- `drop(codepoint)` accepts; bytes that are not UTF-8 are kept
local function py_strip(s, left, right, drop)
  drop = drop or PY_SPACE
  local a, b = 1, #s
  if left then
    while a <= b do
      local ok, c = pcall(utf8.codepoint, s, a)
      if not ok or not drop[c] then break end
      a = a + #utf8.char(c)
    end
  end
  if right then
    while b >= a do
      local start = b
      while start > a and (s:byte(start) & 0xC0) == 0x80 do start = start - 1 end
      local ok, c = pcall(utf8.codepoint, s, start)
      if not ok or start + #utf8.char(c) - 1 ~= b or not drop[c] then break end
      b = start - 1
    end
  end
  return s:sub(a, b)
end

local function strip(s) return py_strip(s, true, true) end
local NEWLINE = { [0x0A] = true }   -- str.strip('\n') and friends

-- Dates ----------------------------------------------------------------------
--
-- Templates that print a date get it from opts.date: os.time() seconds or a
-- table {year =, month =, day =}; without it, today in local time, as the
-- templates' strftime_now() gives it (vars.date is nil then). Month names
-- are English whatever the C locale, as the published renderings have them.

local MONTHS = { "January", "February", "March", "April", "May", "June", "July", "August",
                 "September", "October", "November", "December" }

local function check_date(d)
  if d == nil then return nil end
  if math.type(d) == "integer" then
    -- os.date raises its own error ("date result cannot be represented")
    -- for seconds the C library cannot convert: say which option it was
    local ok, t = pcall(os.date, "*t", d)
    if not ok then error("chat: option 'date' (" .. d .. " seconds) is out of the range of dates", 0) end
    return t
  end
  if type(d) ~= "table" then
    error(options.message("chat", "date", "os.time() seconds or {year =, month =, day =}", d), 0)
  end
  local y, m, day = d.year, d.month, d.day
  local ok = math.type(y) == "integer" and math.type(m) == "integer" and math.type(day) == "integer"
    and m >= 1 and m <= 12 and day >= 1 and y >= 1 and y <= 9999
  if ok then
    local days = { 31, (y % 4 == 0 and y % 100 ~= 0 or y % 400 == 0) and 29 or 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 }
    ok = day <= days[m]
  end
  if not ok then error("chat: date needs integer year, month (1-12) and day of a real date", 0) end
  return { year = y, month = m, day = day }
end

-- strftime for %d, %b, %B and %Y only (what the templates use)
local function format_date(d, fmt)
  return (fmt:gsub("%%(.)", function(c)
    if c == "d" then return string.format("%02d", d.day)
    elseif c == "b" then return MONTHS[d.month]:sub(1, 3)
    elseif c == "B" then return MONTHS[d.month]
    elseif c == "Y" then return string.format("%04d", d.year)
    end
    error("chat: date format %" .. c .. " not supported", 0)
  end))
end

-- JSON text of a string as Hugging Face's tojson filter writes it
-- (json.dumps with ensure_ascii=False)
local JSON_ESC = { ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
                   ["\r"] = "\\r", ["\t"] = "\\t" }
local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return JSON_ESC[c] or (c:byte() < 0x20 and string.format("\\u%04x", c:byte())) or c
  end) .. '"'
end

-- Templates ------------------------------------------------------------------
--
-- Each render(messages, add_generation_prompt, vars) returns parts: strings
-- are template text, {text} tables are message content. vars: bos, eos (the
-- tokenizer's texts), think (nil: the template's default) and date (nil:
-- today), the options the template lists in `options`.

local function split_system(messages)
  if messages[1] and messages[1].role == "system" then
    return messages[1].content, table.move(messages, 2, #messages, 1, {})
  end
  return nil, messages
end

-- the templates' rule: user turns at odd places (after an optional
-- system message), other roles at even ones
local function check_alternation(name, msgs)
  for i, m in ipairs(msgs) do
    if (m.role == "user") ~= (i % 2 == 1) then
      error(string.format("chat: the %s template needs user/assistant turns alternating after an optional system message (message %d is '%s')",
                          name, i, tostring(m.role)), 0)
    end
  end
end

local function no_tool_calls(name, messages)
  for i, m in ipairs(messages) do
    if m.tool_calls ~= nil then
      error(string.format("chat: the %s template's tool calls are not supported (message %d has tool_calls)", name, i), 0)
    end
  end
end

-- Reasoning as Qwen3's template reads it out of an assistant message: the
-- text after the last </think> (leading newlines dropped) is the answer, the
-- text between the last <think> and the first </think> the reasoning.
-- Without </think>: all answer, reasoning nil.
local function read_reasoning(text)
  local first = text:find("</think>", 1, true)
  if not first then return text, nil end
  local last = first
  while true do
    local nxt = text:find("</think>", last + 1, true)
    if not nxt then break end
    last = nxt
  end
  local content = py_strip(text:sub(last + #"</think>"), true, false, NEWLINE)
  local before = py_strip(text:sub(1, first - 1), false, true, NEWLINE)
  local open = 0
  while true do
    local nxt = before:find("<think>", open + 1, true)
    if not nxt then break end
    open = nxt
  end
  if open > 0 then before = before:sub(open + #"<think>") end
  return content, py_strip(before, true, false, NEWLINE)
end
M.read_reasoning = read_reasoning

local T = {}

-- slm.tools, required when a template meets tools (it requires the JSON
-- Schema converter, which plain chats do not need)
local function tools_mod() return require "slm.tools" end
local function slm_grammar() return require "slm.grammar" end

-- ChatML (OpenHermes and others): no BOS in the template. default_system:
-- the system turn a family's template writes first when the conversation
-- does not open with one.
local function chatml(default_system)
  return {
    stop = { "<|im_end|>" }, specials = { "<|im_start|>", "<|im_end|>" },
    render = function(messages, gen)
      local p = {}
      if default_system and messages[1] and messages[1].role ~= "system" then
        p[1] = "<|im_start|>system\n" .. default_system .. "<|im_end|>\n"
      end
      for _, m in ipairs(messages) do
        p[#p + 1] = "<|im_start|>" .. m.role .. "\n"
        p[#p + 1] = { m.content }
        p[#p + 1] = "<|im_end|>\n"
      end
      if gen then p[#p + 1] = "<|im_start|>assistant\n" end
      return p
    end,
  }
end
T.chatml = chatml()
-- SmolLM2-Instruct
T.smollm2 = chatml("You are a helpful AI assistant named SmolLM, trained by Hugging Face")

-- Qwen2.5-Instruct and Qwen3 (ChatML; without tools). A first system
-- message opens the prompt (Qwen2.5 writes its own when there is none);
-- other system messages are ordinary turns; runs of tool messages become one
-- user turn of <tool_response> blocks; other roles are left out, as the
-- templates do. Qwen3 also: assistant turns after the last user query keep
-- their reasoning (the message's reasoning_content, or the <think> block of
-- its content) as a <think> block, earlier ones lose it; think = false
-- (enable_thinking) appends an empty think block to the generation prompt.
local function qwen(name, default_system, thinking)
  return {
    stop = { "<|im_end|>" }, specials = { "<|im_start|>", "<|im_end|>", "<think>", "</think>" },
    options = thinking and { think = true } or {}, reasoning = thinking, tools = true,
    render = function(messages, gen, v)
      local p = {}
      if v.tools then
        -- the system turn lists the tools (slm.tools renders each)
        p[#p + 1] = "<|im_start|>system\n"
        if messages[1] and messages[1].role == "system" then
          p[#p + 1] = { messages[1].content }
          p[#p + 1] = thinking and "\n\n" or ""
        elseif default_system then
          p[#p + 1] = default_system
        end
        p[#p + 1] = (thinking and "" or "\n\n") .. "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
                    .. "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
        for _, t in ipairs(v.tools) do
          p[#p + 1] = "\n"
          p[#p + 1] = { t }
        end
        p[#p + 1] = "\n</tools>\n\nFor each function call, return a json object with function name and arguments "
                    .. "within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, "
                    .. "\"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n"
      elseif messages[1] and messages[1].role == "system" then
        p[#p + 1] = "<|im_start|>system\n"
        p[#p + 1] = { messages[1].content }
        p[#p + 1] = "<|im_end|>\n"
      elseif default_system and messages[1] then
        p[#p + 1] = "<|im_start|>system\n" .. default_system .. "<|im_end|>\n"
      end
      -- the last user message that is not a wrapped tool response
      local last_query = #messages
      for i = #messages, 1, -1 do
        local m = messages[i]
        if m.role == "user" and not (m.content:sub(1, 15) == "<tool_response>" and m.content:sub(-16) == "</tool_response>") then
          last_query = i
          break
        end
      end
      for i, m in ipairs(messages) do
        if m.role == "user" or (m.role == "system" and i > 1) then
          p[#p + 1] = "<|im_start|>" .. m.role .. "\n"
          p[#p + 1] = { m.content }
          p[#p + 1] = "<|im_end|>\n"
        elseif m.role == "assistant" then
          local content, reasoning = m.content, m.reasoning_content
          if thinking and reasoning == nil then content, reasoning = read_reasoning(content) end
          reasoning = reasoning or ""
          local calls = m.tool_calls
          if calls ~= nil and type(calls) ~= "table" then
            error("chat: message " .. i .. "'s tool_calls must be a list", 0)
          end
          if not thinking and calls and #calls > 0 then
            -- Qwen2.5: no newline after the role unless there is content
            p[#p + 1] = "<|im_start|>assistant"
            if content ~= "" then p[#p + 1] = "\n"; p[#p + 1] = { content } end
          elseif thinking and i > last_query and (i == #messages or reasoning ~= "") then
            p[#p + 1] = "<|im_start|>assistant\n<think>\n"
            p[#p + 1] = { py_strip(reasoning, true, true, NEWLINE) }
            p[#p + 1] = "\n</think>\n\n"
            p[#p + 1] = { py_strip(content, true, false, NEWLINE) }
          else
            p[#p + 1] = "<|im_start|>assistant\n"
            p[#p + 1] = { content }
          end
          for j, call in ipairs(calls or {}) do
            -- Qwen3 separates calls from content and each other by "\n";
            -- Qwen2.5 puts "\n" before every call
            if not thinking or j > 1 or content ~= "" then p[#p + 1] = "\n" end
            p[#p + 1] = "<tool_call>\n"
            p[#p + 1] = { tools_mod().call_text(call, j, thinking) }
            p[#p + 1] = "\n</tool_call>"
          end
          p[#p + 1] = "<|im_end|>\n"
        elseif m.role == "tool" then
          if i == 1 or messages[i - 1].role ~= "tool" then p[#p + 1] = "<|im_start|>user" end
          p[#p + 1] = "\n<tool_response>\n"
          p[#p + 1] = { m.content }
          p[#p + 1] = "\n</tool_response>"
          if i == #messages or messages[i + 1].role ~= "tool" then p[#p + 1] = "<|im_end|>\n" end
        end
      end
      if gen then
        p[#p + 1] = "<|im_start|>assistant\n"
        if thinking and v.think == false then p[#p + 1] = "<think>\n\n</think>\n\n" end
      end
      return p
    end,
  }
end
T["qwen2.5"] = qwen("qwen2.5", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
T.qwen3 = qwen("qwen3", nil, true)

-- SmolLM3 (ChatML with a generated system turn). The system turn carries
-- metadata lines, the reasoning mode - /think unless think = false, or a
-- system message containing /no_think (/think) - and the system message
-- (without those flags, right-trimmed) or the default instructions of the
-- mode; system messages are not turns. In /no_think mode assistant turns
-- and the generation prompt get an empty think block. Two published
-- versions differ: the Hugging Face template (the one in the GGUF files,
-- "smollm3") prints "Today Date: <date>" and, without tools, leaves the
-- system turn without <|im_end|>; the edited copy in llama.cpp's tests
-- ("smollm3-edited") has no date line and closes the system turn. A system
-- message containing /system_override replaces the whole system text (HF).
local SMOLLM3_THINK = "You are a helpful AI assistant named SmolLM, trained by Hugging Face. Your role as an "
  .. "assistant involves thoroughly exploring questions through a systematic thinking process "
  .. "before providing the final precise and accurate solutions. This requires engaging in a "
  .. "comprehensive cycle of analysis, summarizing, exploration, reassessment, reflection, "
  .. "backtracking, and iteration to develop well-considered thinking process. Please "
  .. "structure your response into two main sections: Thought and Solution using the "
  .. "specified format: <think> Thought section </think> Solution section. In the Thought "
  .. "section, detail your reasoning process in steps. Each step should include detailed "
  .. "considerations such as analysing questions, summarizing relevant findings, "
  .. "brainstorming new ideas, verifying the accuracy of the current steps, refining any "
  .. "errors, and revisiting previous steps. In the Solution section, based on various "
  .. "attempts, explorations, and reflections from the Thought section, systematically "
  .. "present the final solution that you deem correct. The Solution section should be "
  .. "logical, accurate, and concise and detail necessary steps needed to reach the "
  .. "conclusion."
local SMOLLM3_NO_THINK = "You are a helpful AI assistant named SmolLM, trained by Hugging Face."

local function smollm3(hf)
  return {
    stop = { "<|im_end|>" }, specials = { "<|im_start|>", "<|im_end|>", "<think>", "</think>" },
    options = hf and { think = true, date = true } or { think = true }, reasoning = true,
    render = function(messages, gen, v)
      no_tool_calls(hf and "smollm3" or "smollm3-edited", messages)
      local mode = v.think == false and "/no_think" or "/think"
      local sys = messages[1] and messages[1].role == "system" and messages[1].content
      local custom
      if sys then
        if sys:find("/no_think", 1, true) then mode = "/no_think"
        elseif sys:find("/think", 1, true) then mode = "/think" end
        custom = py_strip((sys:gsub("/no_think", ""):gsub("/think", "")), false, true)
      end
      local p = { "<|im_start|>system\n" }
      if hf and sys and sys:find("/system_override", 1, true) then
        p[#p + 1] = { py_strip((custom:gsub("/system_override", "")), false, true) }
        p[#p + 1] = "<|im_end|>\n"
      else
        p[#p + 1] = "## Metadata\n\nKnowledge Cutoff Date: June 2025\n"
        if hf then p[#p + 1] = "Today Date: " .. format_date(v.date or os.date("*t"), "%d %B %Y") .. "\n" end
        p[#p + 1] = "Reasoning Mode: " .. mode .. "\n\n## Custom Instructions\n\n"
        if custom and custom ~= "" then
          p[#p + 1] = { custom }
          p[#p + 1] = "\n\n"
        else
          p[#p + 1] = (mode == "/think" and SMOLLM3_THINK or SMOLLM3_NO_THINK) .. "\n\n"
        end
        if not hf then p[#p + 1] = "<|im_end|>\n" end
      end
      local empty_think = mode == "/no_think" and "<think>\n\n</think>\n" or ""
      for _, m in ipairs(messages) do
        if m.role == "user" or m.role == "tool" then
          p[#p + 1] = "<|im_start|>user\n"
          p[#p + 1] = { m.content }
          p[#p + 1] = "<|im_end|>\n"
        elseif m.role == "assistant" then
          p[#p + 1] = "<|im_start|>assistant\n" .. empty_think
          p[#p + 1] = { py_strip(m.content, true, false, NEWLINE) }
          p[#p + 1] = "<|im_end|>\n"
        end
      end
      if gen then p[#p + 1] = "<|im_start|>assistant\n" .. empty_think end
      return p
    end,
  }
end
T.smollm3 = smollm3(true)
T["smollm3-edited"] = smollm3(false)

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
          p[#p + 1] = { py_strip(m.content, false, true) }
        else
          p[#p + 1] = { strip(m.content) }
        end
        p[#p + 1] = " [/INST]"
      elseif m.role == "assistant" then   -- other roles: nothing, as the template
        p[#p + 1] = " "
        p[#p + 1] = { strip(m.content) }
        p[#p + 1] = " " .. v.eos
      end
    end
    return p
  end,
}

local LLAMA3_SPECIALS = { "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>" }

-- Llama 3 Instruct: BOS first, header per turn, contents trimmed.
T.llama3 = {
  stop = { "<|eot_id|>" }, bos = "<|begin_of_text|>", specials = LLAMA3_SPECIALS,
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

-- Llama 3.1 / 3.2 / 3.3 Instruct (without tools): a system turn always,
-- with the knowledge cutoff and a date before the (trimmed) system message;
-- tool and ipython messages become ipython turns of their content as a JSON
-- string (the template's tojson: a string is iterable to Jinja). The date:
-- opts.date, else 26 Jul 2024 (3.1 and 3.3 templates) or today (3.2's,
-- through strftime_now).
local function llama31(name, today)
  return {
    stop = { "<|eot_id|>" }, bos = "<|begin_of_text|>", specials = LLAMA3_SPECIALS,
    options = { date = true },
    render = function(messages, gen, v)
      no_tool_calls(name, messages)
      local sys, msgs = split_system(messages)
      local date = (v.date or today) and format_date(v.date or os.date("*t"), "%d %b %Y") or "26 Jul 2024"
      local p = { v.bos, "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\nToday Date: "
                         .. date .. "\n\n" }
      p[#p + 1] = { sys and strip(sys) or "" }
      p[#p + 1] = "<|eot_id|>"
      for _, m in ipairs(msgs) do
        if m.role == "tool" or m.role == "ipython" then
          p[#p + 1] = "<|start_header_id|>ipython<|end_header_id|>\n\n"
          p[#p + 1] = { json_string(m.content) }
        else
          p[#p + 1] = "<|start_header_id|>" .. m.role .. "<|end_header_id|>\n\n"
          p[#p + 1] = { strip(m.content) }
        end
        p[#p + 1] = "<|eot_id|>"
      end
      if gen then p[#p + 1] = "<|start_header_id|>assistant<|end_header_id|>\n\n" end
      return p
    end,
  }
end
T["llama3.1"] = llama31("llama3.1", false)
T["llama3.2"] = llama31("llama3.2", true)

-- the roles Phi-3.5's and Zephyr's templates write (others are left out)
local SUA = { system = true, user = true, assistant = true }

-- Phi-3.5-mini-instruct (Phi-3 with a system turn): no BOS in the template
-- (the tokenizer adds it); without the generation prompt it ends with EOS.
T.phi3 = {
  stop = { "<|end|>" }, specials = { "<|system|>", "<|user|>", "<|assistant|>", "<|end|>" },
  render = function(messages, gen, v)
    local p = {}
    for _, m in ipairs(messages) do
      if SUA[m.role] and (m.role ~= "system" or m.content ~= "") then
        p[#p + 1] = "<|" .. m.role .. "|>\n"
        p[#p + 1] = { m.content }
        p[#p + 1] = "<|end|>\n"
      end
    end
    p[#p + 1] = gen and "<|assistant|>\n" or v.eos
    return p
  end,
}

-- Phi-4-mini-instruct: "<|role|>content<|end|>" with no newlines, every role
-- as written; a system message's `tools` (a string) goes between <|tool|>
-- and <|/tool|>; without the generation prompt it ends with EOS.
T.phi4 = {
  stop = { "<|end|>" }, eos = "<|endoftext|>",
  specials = { "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|tool|>", "<|/tool|>" },
  render = function(messages, gen, v)
    local p = {}
    for i, m in ipairs(messages) do
      p[#p + 1] = "<|" .. m.role .. "|>"
      p[#p + 1] = { m.content }
      if m.role == "system" and m.tools ~= nil then
        if type(m.tools) ~= "string" then
          error("chat: message " .. i .. "'s tools must be a string for the phi4 template", 0)
        end
        p[#p + 1] = "<|tool|>"
        p[#p + 1] = { m.tools }
        p[#p + 1] = "<|/tool|>"
      end
      p[#p + 1] = "<|end|>"
    end
    p[#p + 1] = gen and "<|assistant|>" or v.eos
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
      elseif m.role == "assistant" then
        p[#p + 1] = { m.content }
        p[#p + 1] = v.eos
      else
        error("chat: the mistral template supports only user and assistant roles (message " .. i .. " is '" .. m.role .. "')", 0)
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
      if SUA[m.role] then
        p[#p + 1] = "<|" .. m.role .. "|>\n"
        p[#p + 1] = { m.content }
        p[#p + 1] = v.eos .. "\n"
      end
    end
    if gen then p[#p + 1] = "<|assistant|>\n" end
    return p
  end,
}

-- Gemma (gemma-it 1/2/3): BOS, roles user/model, contents trimmed. Gemma 1
-- and 2 refuse a system message; as Gemma 3's template does, it is put
-- before the first user message (untrimmed) followed by a blank line.
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

-- Granite 3.3 Instruct (without tools or documents): a system turn always -
-- the system message, else the default one with the knowledge cutoff,
-- today's date (opts.date) and, with think = true (the template's
-- `thinking`), the instructions to think in <think></think> and answer in
-- <response></response>; contents as they are. The generation prompt
-- follows the last message only (none when there are only system messages).
local GRANITE_THINK = " You are a helpful AI assistant.\nRespond to every user query in a comprehensive and "
  .. "detailed way. You can write down your thoughts and reasoning process before responding. "
  .. "In the thought process, engage in a comprehensive cycle of analysis, summarization, "
  .. "exploration, reassessment, reflection, backtracing, and iteration to develop "
  .. "well-considered thinking process. In the response section, based on various attempts, "
  .. "explorations, and reflections from the thoughts section, systematically present the "
  .. "final solution that you deem correct. The response should summarize the thought "
  .. "process. Write your thoughts between <think></think> and write your response between "
  .. "<response></response> for each user query."
T.granite = {
  stop = { "<|end_of_text|>" }, eos = "<|end_of_text|>",
  specials = { "<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>" },
  options = { think = true, date = true },
  render = function(messages, gen, v)
    no_tool_calls("granite", messages)
    local sys, msgs = split_system(messages)
    local p = { "<|start_of_role|>system<|end_of_role|>" }
    if sys then
      p[#p + 1] = { sys }
    else
      p[#p + 1] = "Knowledge Cutoff Date: April 2024. Today's Date: " .. format_date(v.date or os.date("*t"), "%B %d, %Y")
        .. ". You are Granite, developed by IBM." .. (v.think and GRANITE_THINK or " You are a helpful AI assistant.")
    end
    p[#p + 1] = "<|end_of_text|>\n"
    for _, m in ipairs(msgs) do
      p[#p + 1] = "<|start_of_role|>" .. m.role .. "<|end_of_role|>"
      p[#p + 1] = { m.content }
      p[#p + 1] = "<|end_of_text|>\n"
    end
    if gen and #msgs > 0 then p[#p + 1] = "<|start_of_role|>assistant<|end_of_role|>" end
    return p
  end,
}

for name, t in pairs(T) do t.name = name end
M.templates = T

local NAMES = {}
for name in pairs(T) do NAMES[#NAMES + 1] = name end
table.sort(NAMES)
NAMES = table.concat(NAMES, ", ")

-- How each published template is recognized in a GGUF's
-- tokenizer.chat_template: fragments of its text that must all be there
-- (has) and fragments of related templates that render differently and
-- must not be (lacks); the first entry that fits wins. A template that fits
-- none is not guessed at: sess:chat asks for opts.template.
local KNOWN = {
  { "smollm3", has = { "Reasoning Mode: ", "/no_think", "strftime_now", "/system_override" } },
  { "smollm3-edited", has = { "Reasoning Mode: ", "/no_think" }, lacks = { "strftime_now", "/system_override" } },
  { "qwen3", has = { "<|im_start|>", "enable_thinking is defined and enable_thinking is false", "last_query_index",
                     "reasoning_content", "<tool_response>" },
    lacks = { "bos_token", "vision", "enable_thinking is true" } },
  { "qwen2.5", has = { "<|im_start|>", "You are Qwen, created by Alibaba Cloud. You are a helpful assistant." },
    lacks = { "think" } },
  { "smollm2", has = { "<|im_start|>", "You are a helpful AI assistant named SmolLM, trained by Hugging Face" },
    lacks = { "Reasoning Mode", "tool" } },
  -- plain ChatML: no system default, tools, thinking, BOS or other markers
  { "chatml", has = { "<|im_start|>", "<|im_end|>" },
    lacks = { "tool", "think", "bos_token", "You are", "<|im_sep|>", "image", "namespace" } },
  { "llama3.2", has = { "<|start_header_id|>", "Cutting Knowledge Date: December 2023", "strftime_now" },
    lacks = { "builtin_tools" } },
  { "llama3.1", has = { "<|start_header_id|>", "Cutting Knowledge Date: December 2023", "26 Jul 2024" },
    lacks = { "strftime_now", "functionary" } },
  { "llama3", has = { "<|start_header_id|>", "<|eot_id|>", "'<|start_header_id|>' + message['role'] + '<|end_header_id|>" },
    lacks = { "Cutting Knowledge", "tool", "function" } },
  { "gemma", has = { "<start_of_turn>", "<end_of_turn>", "model" }, lacks = { "tool" } },
  { "granite", has = { "<|start_of_role|>", "Knowledge Cutoff Date: April 2024. Today's Date: ",
                       "You are Granite, developed by IBM." } },
  { "phi4", has = { "'<|' + message['role'] + '|>' + message['content']", "<|end|>", "<|assistant|>" },
    lacks = { "<|im_start|>" } },
  { "phi3", has = { "<|user|>", "<|end|>", "<|assistant|>" }, lacks = { "tool", "<|im_start|>" } },
  { "zephyr", has = { "<|user|>", "<|assistant|>", "eos_token" }, lacks = { "<|end|>", "tool", "[gMASK]" } },
  { "llama2", has = { "[INST]", "[/INST]", "<<SYS>>" }, lacks = { "tool" } },
  { "mistral", has = { "[INST]", "[/INST]", "eos_token" },
    lacks = { "<<SYS>>", "tool", "TOOL", "SYSTEM_PROMPT" } },
}

--- The template name a Jinja chat template (GGUF tokenizer.chat_template)
-- is recognized as (see KNOWN); nil if none.
function M.recognize(jinja)
  if type(jinja) ~= "string" then return nil end
  local function has(s) return jinja:find(s, 1, true) ~= nil end
  for _, k in ipairs(KNOWN) do
    local fits = true
    for _, s in ipairs(k.has) do fits = fits and has(s) end
    for _, s in ipairs(k.lacks or {}) do fits = fits and not has(s) end
    if fits then return k[1] end
  end
  return nil
end

-- user templates as template tables, one per function/table (so that a
-- session sees the same template from one turn to the next)
local wrapped = setmetatable({}, { __mode = "k" })

-- opts.template (a name, a function or a table) or the model's own -> template table
local function resolve(tpl, model)
  if type(tpl) == "string" then
    return T[tpl] or error("chat: unknown template '" .. tpl .. "' (known: " .. NAMES .. ")", 0)
  elseif type(tpl) == "function" then
    wrapped[tpl] = wrapped[tpl] or { name = "function", render = tpl, stop = {}, specials = {}, options = true }
    return wrapped[tpl]
  elseif type(tpl) == "table" then
    if type(tpl.render) ~= "function" then error("chat: a template table needs a render function", 0) end
    wrapped[tpl] = wrapped[tpl] or { name = tpl.name or "custom", render = tpl.render, stop = tpl.stop or {},
                                     specials = tpl.specials or {}, bos = tpl.bos, eos = tpl.eos,
                                     options = true, reasoning = tpl.reasoning }
    return wrapped[tpl]
  elseif tpl ~= nil then
    error(options.message("chat", "template", "a name, a function or a table", tpl), 0)
  end
  local jinja = model and model.source and model.source.meta("tokenizer.chat_template")
  if jinja == nil then return T.chatml end
  local name = M.recognize(jinja)
  if not name then
    error("chat: the model's chat template is not one of " .. NAMES .. "; pass opts.template", 0)
  end
  return T[name]
end
M.resolve = resolve

-- The vars a template renders with: bos/eos texts (the tokenizer's, else the
-- family's) and the template options in opts, checked: a wrong type, or an
-- option the template does not have (it would be ignored), is an error.
-- Functions and tables given as templates receive every option.
local function vars_for(tpl, tok, opts)
  local v = { bos = tpl.bos or "<s>", eos = tpl.eos or "</s>" }
  if tok and tok.bos then v.bos = tok:text(tok.bos) end
  if tok and tok.eos then v.eos = tok:text(tok.eos) end
  opts = opts or {}
  if not options.is_bool(opts.think) then error(options.message("chat", "think", "a boolean", opts.think), 0) end
  v.think, v.date = opts.think, check_date(opts.date)
  for _, k in ipairs { "think", "date" } do
    if opts[k] ~= nil and tpl.options ~= true and not (tpl.options and tpl.options[k]) then
      error("chat: the " .. tpl.name .. " template has no option '" .. k .. "'", 0)
    end
  end
  if opts.tools ~= nil then
    -- each tool as the template prints it (slm.tools)
    if not tpl.tools and tpl.options ~= true then
      error("chat: the " .. tpl.name .. " template does not render tools (qwen2.5 and qwen3 do)", 0)
    end
    v.tools = {}
    for i, t in ipairs(tools_mod().check(opts.tools)) do v.tools[i] = t.json end
  end
  return v
end

local function check_messages(messages)
  if type(messages) ~= "table" then error("chat: messages must be a list of {role =, content =}", 0) end
  for i, m in ipairs(messages) do
    if type(m) ~= "table" or type(m.role) ~= "string" or type(m.content) ~= "string" then
      error("chat: message " .. i .. " needs a string role and a string content", 0)
    end
    if m.reasoning_content ~= nil and type(m.reasoning_content) ~= "string" then
      error("chat: message " .. i .. "'s reasoning_content must be a string", 0)
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
-- the default template), and the template's options: think (qwen3,
-- smollm3, granite), date (smollm3, granite, llama3.1, llama3.2).
local RENDER_OPTS = options.known { "add_generation_prompt", "bos", "eos", "model", "think", "date", "tools" }

function M.render(template, messages, opts)
  opts = options.check("render", opts, RENDER_OPTS)
  local tpl = resolve(template, opts.model)
  local v = vars_for(tpl, nil, opts)
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
-- evaluate on an empty session (opts: template, add_generation_prompt, model
-- (for the default template) and the template's options, as render).
local TOKENIZE_OPTS = options.known { "template", "add_generation_prompt", "model", "think", "date", "tools" }

-- The units of a conversation as sess:chat sees them on an empty session
-- (BOS from the vocabulary unless the template renders it) and its template.
local function prompt_units(tok, model, messages, opts, gen)
  local tpl = resolve(opts.template, model)
  local parts = render_parts(tpl, messages, gen, vars_for(tpl, tok, opts))
  local units = to_units(parts, marker_ids(tpl, tok))
  if tok.add_bos and tok.bos and units[1] ~= tok.bos then table.insert(units, 1, tok.bos) end
  return units, tpl
end

function M.tokenize(tok, messages, opts)
  opts = options.check("tokenize", opts, TOKENIZE_OPTS)
  local units = prompt_units(tok, opts.model, messages, opts, opts.add_generation_prompt ~= false)
  return encode_units(tok, units), units
end

-- generate's options a chat passes on (not parse_special: message text is
-- never parsed for special tokens)
local GEN_KEYS = { "max_tokens", "sampler", "stop", "stop_ids", "regex", "regex_width", "grammar", "json_schema",
                   "special" }
local CHAT_KEYS = { "template", "think", "date", "tools", "tool_choice", table.unpack(GEN_KEYS) }
local CHAT_OPTS = options.known(CHAT_KEYS)
local SESSION_OPTS = options.known { "system", table.unpack(CHAT_KEYS) }

-- opts.stop / opts.stop_ids as lists
local function user_stops(opts)
  local stop = opts.stop
  if type(stop) == "string" then stop = { stop } end
  return stop or {}, opts.stop_ids or {}
end

-- A reply split as reasoning templates read it (read_reasoning); a <think>
-- block that max_tokens cut before its </think> is all reasoning.
local function split_reply(text)
  local answer, reasoning = read_reasoning(text)
  if reasoning == nil then
    local open = text:find("<think>", 1, true)
    if open then return "", py_strip(text:sub(open + #"<think>"), true, false, NEWLINE) end
  end
  return answer, reasoning
end

--- sess:chat(messages, opts [, callback]) -> reply, info
-- opts: template, the template's options (think, date: see render), and
-- generate's max_tokens, sampler, stop, stop_ids, regex, grammar,
-- json_schema, special. tools (a list of {name =, description =,
-- parameters = JSON Schema}; templates qwen2.5, qwen3): the template lists
-- them, generation is free until the model writes <tool_call>, the call
-- then follows the grammar of the tools' names and parameters; the reply is
-- the text without its calls, info.tool_calls the calls ({name =,
-- arguments = table}, decoded with cjson) and info.tool_call_problems the
-- blocks that are not complete calls (cut by max_tokens). tool_choice =
-- "required": a call from the first token ("auto", the default: lazy).
-- See slm.tools and docs/STRUCTURED.md.
-- callback(piece, id) streams the reply (return false to stop). With a
-- reasoning template (qwen3, smollm3) the reply is the answer and
-- info.reasoning the text of its <think> block (nil when there is none);
-- the callback streams the raw text, think block included.
function M.chat(sess, messages, opts, callback)
  opts = options.check("chat", opts, CHAT_OPTS)
  if opts.tool_choice ~= nil and opts.tool_choice ~= "auto" and opts.tool_choice ~= "required" then
    options.fail("chat", "tool_choice", '"auto" or "required"', opts.tool_choice, 2)
  end
  if opts.tool_choice ~= nil and opts.tools == nil then error("chat: tool_choice without tools", 2) end
  local bad = generate.problem("chat", opts)
  if bad then error(bad, 2) end
  if callback ~= nil and type(callback) ~= "function" then
    error("bad argument #3 to 'chat' (function expected)", 2)
  end
  local tok = sess.model.tokenizer
  if not tok then error("chat: this model has no tokenizer", 2) end
  local units, tpl = prompt_units(tok, sess.model, messages, opts, true)
  local user_stop, user_stop_ids = user_stops(opts)

  -- what the session holds from the last call, if it is still untouched
  local last = sess.chat_state
  local rest
  if last and last.tokens == sess.tokens and last.n_past == sess.n_past and last.template == tpl then
    rest = extension(last.units, units)
  end
  local info = { template = tpl.name, reset = false }
  local kept = rest and sess.n_past or 0
  local ids = encode_units(tok, rest or units)
  -- checked before the session is touched
  if kept + #ids > sess.n_ctx then
    error(string.format("chat: the conversation is %d tokens, more than the session's context of %d "
                        .. "(a chat session drops the oldest turns)", kept + #ids, sess.n_ctx), 2)
  end
  if not rest then
    if sess.n_past > 0 then info.reset = true end
    sess:reset()
  end
  info.reused = sess.n_past
  info.evaluated = #ids

  -- end of turn: ids when the vocabulary has them, else stop strings
  local stops, stop_ids = {}, {}
  for _, s in ipairs(tpl.stop) do
    local id = tok:id(s)
    if id then stop_ids[#stop_ids + 1] = id else stops[#stops + 1] = s end
  end
  for _, s in ipairs(user_stop) do stops[#stops + 1] = s end
  for _, id in ipairs(user_stop_ids) do stop_ids[#stop_ids + 1] = id end
  local gopts = {}
  for _, k in ipairs(GEN_KEYS) do gopts[k] = opts[k] end
  gopts.stop, gopts.stop_ids = stops, stop_ids
  local tools = opts.tools and tools_mod()
  if tools then
    -- calls follow their tools' parameters from the opener on (slm.tools)
    if gopts.grammar or gopts.json_schema or gopts.regex then
      error("chat: tools constrain the calls; give no grammar, json_schema or regex with them", 2)
    end
    local g = slm_grammar().compile(tools.gbnf(tools.check(opts.tools), opts.tool_choice == "required"))
    gopts.grammar = opts.tool_choice == "required" and g or tools.lazy(g, tools.OPEN)
  end

  local n0 = sess.n_past + #ids
  local reply, ginfo = sess:generate(#ids > 0 and ids or nil, gopts, callback or function() end)
  info.seed, info.stopped, info.prompt_seconds, info.seconds = ginfo.seed, ginfo.stopped, ginfo.prompt_seconds,
                                                                ginfo.seconds

  -- the session now holds the prompt and the reply's tokens: remember them
  -- for the next turn's comparison, as text decoded as generate decodes it
  -- (so that a reply rendered back as it was returned matches), control
  -- tokens as ids, and a character cut by max_tokens as its flushed bytes
  -- (which no rendering matches: the next turn starts over)
  local held = table.move(units, 1, #units, 1, {})
  local dec = tok:decoder(opts.special)
  -- think markers that are control tokens are not in the reply's text:
  -- note where they were (bytes of decoded text before them)
  local hidden, marks, decoded = {}, {}, 0
  if tpl.reasoning then
    for _, m in ipairs { "<think>", "</think>" } do
      local id = tok:id(m)
      if id and tok:piece(id, opts.special) == "" then hidden[id] = m end
    end
  end
  for i = n0 + 1, sess.n_past do
    local id = sess.tokens[i]
    if hidden[id] then marks[#marks + 1] = { at = decoded, text = hidden[id] } end
    if not opts.special and tok:piece(id) == "" and tok:piece(id, true) ~= "" then
      held[#held + 1] = id
    else
      local s = dec:add(id)
      decoded = decoded + #s
      push_raw(held, s)
    end
  end
  push_raw(held, dec:flush())
  info.generated = sess.n_past - n0
  sess.chat_state = { tokens = sess.tokens, n_past = sess.n_past, units = held, template = tpl }

  if tpl.reasoning then
    -- the reply is a prefix of the decoded text (a stop string cuts it)
    local text, from = {}, 1
    for _, m in ipairs(marks) do
      if m.at > #reply then break end
      text[#text + 1] = reply:sub(from, m.at)
      text[#text + 1] = m.text
      from = m.at + 1
    end
    text[#text + 1] = reply:sub(from)
    reply, info.reasoning = split_reply(table.concat(text))
  end
  if tools then reply, info.tool_calls, info.tool_call_problems = tools.parse(reply) end
  return reply, info
end

-- Chat sessions --------------------------------------------------------------

local Chat = {}
Chat.__index = Chat

--- sess:chat_session{template =, system =, <chat opts>} -> chat
-- The options other than system become the defaults of every say().
function M.session(sess, opts)
  opts = options.check("chat_session", opts, SESSION_OPTS)
  if not options.is_string(opts.system) then options.fail("chat_session", "system", "a string", opts.system) end
  local defaults = {}
  for k, v in pairs(opts) do if k ~= "system" then defaults[k] = v end end
  -- fail now, not at the first say
  local bad = generate.problem("chat_session", defaults)
  if bad then error(bad, 2) end
  vars_for(resolve(defaults.template, sess.model), nil, defaults)
  local chat = setmetatable({ session = sess, messages = {}, defaults = defaults }, Chat)
  chat:reset(opts.system)
  return chat
end

--- chat:reset([system]): forgets the conversation; the system message
-- stays, or becomes `system` when one is given ("" removes it).
function Chat:reset(system)
  if not options.is_string(system) then options.fail("reset", "system", "a string", system) end
  local old = self.messages[1]
  if system == nil then system = old and old.role == "system" and old.content or "" end
  self.messages = {}
  if system ~= "" then self.messages[1] = { role = "system", content = system } end
end

-- Tokens the conversation takes as a prompt on an empty session.
local function prompt_tokens(chat, messages, o)
  local sess = chat.session
  local tok = sess.model.tokenizer
  if not tok then error("chat: this model has no tokenizer", 0) end
  return #encode_units(tok, (prompt_units(tok, sess.model, messages, o, true)))
end

-- msgs without the `n` messages from `first` (a new list)
local function without(msgs, first, n)
  local out = table.move(msgs, 1, first - 1, 1, {})
  return table.move(msgs, first + n, #msgs, first, out)
end

-- Which oldest turns to drop (the first index and how many) when the
-- conversation and room for the reply (max_tokens, at most half the
-- context) do not fit the session. It drops down to half of what is left
-- after that room, so that the next turns extend the session again instead
-- of evaluating everything each time. The system message and the new turn
-- (the last message) stay.
local function turns_to_drop(chat, o)
  local msgs = chat.messages
  local n_ctx = chat.session.n_ctx
  local room = math.min(o.max_tokens or 256, n_ctx // 2)
  local first = msgs[1].role == "system" and 2 or 1
  local n = prompt_tokens(chat, msgs, o)
  if n + room <= n_ctx then return first, 0 end
  local goal, dropped = (n_ctx - room) // 2, 0
  while n > goal and first + dropped < #msgs do
    -- the oldest turn: its message and the ones up to the next user turn
    local next_user = first + dropped + 1
    while next_user < #msgs and msgs[next_user].role ~= "user" do next_user = next_user + 1 end
    dropped = next_user - first
    n = prompt_tokens(chat, without(msgs, first, dropped), o)
  end
  if n >= n_ctx then
    error(string.format("chat: the message does not fit the context: %d tokens%s, the session holds %d", n,
                        first == 2 and " with the system message" or "", n_ctx), 0)
  end
  return first, dropped
end

--- chat:say(text [, opts [, callback]]) -> reply, info
-- Appends {role = "user", content = text} and the reply to chat.messages
-- ({role = "assistant", content = reply, reasoning_content = info.reasoning}).
-- When the conversation no longer fits the session's context with room for
-- the reply (max_tokens, at most half the context), the oldest turns are
-- dropped from chat.messages - the system message stays - until it takes
-- at most half of what is left, and the session evaluates it again;
-- info.trimmed is the number of messages dropped (0 when none). A message
-- that does not fit even alone is an error, which leaves the history as it
-- was (as any error of say does).
function Chat:say(text, opts, callback)
  if type(text) ~= "string" then error("bad argument #1 to 'say' (string expected)", 2) end
  if type(opts) == "function" and callback == nil then opts, callback = nil, opts end
  options.check("say", opts, CHAT_OPTS)
  local o = {}
  for k, v in pairs(self.defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  local msgs = self.messages
  msgs[#msgs + 1] = { role = "user", content = text }
  local ok, first, dropped = pcall(turns_to_drop, self, o)
  local reply, info = first, nil
  if ok then
    ok, reply, info = pcall(M.chat, self.session, dropped > 0 and without(msgs, first, dropped) or msgs, o, callback)
  end
  if not ok then
    msgs[#msgs] = nil
    error(reply, 2)
  end
  for _ = 1, dropped do table.remove(msgs, first) end
  info.trimmed = dropped
  msgs[#msgs + 1] = { role = "assistant", content = reply, reasoning_content = info.reasoning }
  -- the calls stay in the history, as the template renders them back
  if info.tool_calls and #info.tool_calls > 0 then msgs[#msgs].tool_calls = info.tool_calls end
  return reply, info
end

function Chat:__tostring()
  return string.format("slm.Chat(%d messages, %s)", #self.messages, tostring(self.session))
end

M.Chat = Chat
return M
