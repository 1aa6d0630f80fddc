--- What the examples share (not an example itself): loading a model, and
-- refusing at once, in one line, what an example cannot run on - before it
-- does any work, and never with a Lua traceback.
--
--   local common = require "examples.common"
--   local model = common.model(arg[1], { text = true, decoder = true })
--
-- needs:
--   text     a tokenizer. A model without one whose vocabulary is 256
--            tokens (rwkv.cpp's tiny files) reads bytes; any other (a
--            llama2.c checkpoint: its vocabulary is not in the file) is
--            refused.
--   decoder  logits to generate or score with: an encoder (BERT) is refused.
--   gguf     a GGUF file (rwkv.cpp and llama2.c files are refused).
--   plans    layer plans (model:variant): the architectures that have them.
local slm = require "slm"

local M = {}

--- The running script's file name, for messages.
M.name = ((arg and arg[0]) or "example"):match("[^/\\]+$")

--- die(fmt, ...): one line on stderr, exit status 1.
function M.die(fmt, ...)
  io.stderr:write(M.name, ": ", string.format(fmt, ...), "\n")
  os.exit(1)
end

local function check(model, path, needs)
  local hp = model.hp
  if needs.decoder and model.def.encoder then
    M.die("%s is a %s encoder (no logits); this example needs a decoder (llama family, gemma, lfm2, mamba, rwkv)",
          path, hp.arch)
  end
  if needs.gguf and model.source.kind ~= "gguf" then
    M.die("%s is a %s file; this example needs a GGUF file", path,
          model.source.kind == "rwkvcpp" and "rwkv.cpp" or "llama2.c")
  end
  if needs.plans then
    local ok, err = pcall(model.variant, model, {})
    if not ok then M.die("%s", tostring(err):gsub("^[^\n]-%.lua:%d+: ", "")) end
  end
  if needs.text and not model.tokenizer then
    if hp.n_vocab ~= 256 then
      M.die("%s has no tokenizer (a llama2.c checkpoint does not carry its vocabulary); this example needs text", path)
    end
    model.tokenizer = slm.tokenizer.bytes()   -- token id = byte
  end
  return model
end

--- The size of a file in bytes.
function M.file_size(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

--- model(path [, needs]) -> the model, or exits with one line saying why not.
function M.model(path, needs)
  local model, err = slm.load(path)
  if not model then M.die("%s", err) end
  return check(model, path, needs or {})
end

return M
