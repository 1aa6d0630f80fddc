--- A multi-turn chat: user turns from stdin (one per line), replies streamed.
--   bin/slm examples/chat.lua MODEL.gguf [template] [max_tokens=64] [system prompt]
-- template: a name of slm.chat.templates (chatml, qwen3, llama3.2, gemma,
-- phi4, granite, smollm3, ...) or "auto" (the GGUF's own). After each reply,
-- a line on stderr tells how many tokens the turn evaluated and how many it
-- kept from the previous turns (and how many old messages it dropped when
-- the conversation outgrew the context). Any decoder with a tokenizer
-- (byte-level rwkv.cpp files read bytes); encoders and llama2.c checkpoints
-- are refused.
local common = require "examples.common"

local path = arg[1]
if not path then
  io.stderr:write("usage: chat.lua MODEL [template|auto] [max_tokens=64] [system]\n")
  os.exit(2)
end
local template = arg[2] ~= "auto" and arg[2] or nil
local max_tokens = math.tointeger(tonumber(arg[3] or 64)) or 64

local model = common.model(path, { text = true, decoder = true })
local sess = model:session { ctx = 2048 }
local ok, chat = pcall(sess.chat_session, sess, { template = template, system = arg[4], max_tokens = max_tokens })
if not ok then
  io.stderr:write("chat.lua: ", chat, "\n")
  os.exit(1)
end
local turn = 0
for line in io.lines() do
  turn = turn + 1
  io.write("> ", line, "\n")
  local _, info = chat:say(line, nil, function(piece) io.write(piece) io.flush() end)
  io.write("\n")
  io.stderr:write(string.format("[turn %d (%s): %d tokens evaluated, %d kept%s, %d generated%s]\n", turn,
                                info.template, info.evaluated, info.reused, info.reset and ", history changed" or "",
                                info.generated,
                                info.trimmed > 0 and (", " .. info.trimmed .. " old messages dropped") or ""))
end
