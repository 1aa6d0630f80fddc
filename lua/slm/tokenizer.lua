--- slm.tokenizer: text <-> token ids.
--
--   local tok = assert(slm.tokenizer.load("model.gguf"))  -- or tokenizer.json,
--                                                          -- or llama2.c tokenizer.bin
--   local ids = tok:encode("Hello", {add_special = true, parse_special = false})
--   print(tok:decode(ids), #tok, tok.bos, tok.eos)
--   local dec = tok:decoder()          -- streaming: dec:add(id) returns only
--   io.write(dec:add(id)) ... io.write(dec:flush())  -- complete UTF-8
--
-- encode options: add_special (default true) adds BOS/EOS as the vocabulary
-- asks; parse_special (default false) turns special-token text such as
-- "<|eot_id|>" into its id (user-defined tokens are always recognized, as in
-- the reference implementations). Ids are 0-based as in the model files.
-- Invalid UTF-8 never fails: such bytes are encoded through byte tokens.
-- decode(ids, {special = false}) renders control tokens only when special is
-- true; an id out of range is an error.
local core = require "slm.core"

local tokenizer = {}

--- Loads a tokenizer; returns nil, message when the file is missing or malformed.
function tokenizer.load(path)
  if type(path) ~= "string" then
    error("bad argument #1 to 'load' (string expected, got " .. type(path) .. ")", 2)
  end
  return core.tokenizer_load(path)
end

--- The 256-token byte vocabulary (id = byte), used by tiny RWKV models.
function tokenizer.bytes()
  return core.tokenizer_bytes()
end

return tokenizer
