--- slm.tokenizer: text <-> token ids.
--
--   local tok = assert(slm.tokenizer.load("model.gguf"))  -- or tokenizer.json,
--                           -- a SentencePiece tokenizer.model, llama2.c tokenizer.bin
--   local ids = tok:encode("Hello", {add_special = true, parse_special = false})
--   print(tok:decode(ids), #tok, tok.bos, tok.eos)
--   local dec = tok:decoder()          -- streaming: dec:add(id) returns only
--   io.write(dec:add(id)) ... io.write(dec:flush())  -- complete UTF-8
--
-- encode options: add_special (default true) adds BOS/EOS as the vocabulary
-- asks; parse_special (default false) turns special-token text such as
-- "<|eot_id|>" into its id (user-defined tokens are always recognized, as in
-- the reference implementations). Ids are 0-based as in the model files.
-- Invalid UTF-8 never fails: such bytes are encoded through byte tokens
-- (WordPiece drops them, as the reference does).
-- BERT's WordPiece vocabularies (GGUF tokenizer.ggml.model "bert") encode as
-- [CLS] words... [SEP] with add_special (tok.cls, tok.sep, tok.mask, tok.unk);
-- decode joins the pieces into words and removes the spaces before
-- punctuation as Hugging Face's clean_up_tokenization does.
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

--- The pieces the pre-tokenizer of a GGUF `tokenizer.ggml.pre` name cuts
-- text into before BPE (e.g. pretokenize("gpt-4o", "Hello World") gives
-- {"Hello", " World"}); an unknown name is an error.
function tokenizer.pretokenize(pre, text)
  if type(pre) ~= "string" then
    error("bad argument #1 to 'pretokenize' (string expected, got " .. type(pre) .. ")", 2)
  end
  if type(text) ~= "string" then
    error("bad argument #2 to 'pretokenize' (string expected, got " .. type(text) .. ")", 2)
  end
  local pieces, msg = core.tokenizer_pretokenize(pre, text)
  if not pieces then error(msg, 2) end
  return pieces
end

--- The tokenizer.ggml.pre names slm has a pre-tokenizer for, sorted.
function tokenizer.pretokenizers()
  local names = core.tokenizer_pretokenizers()
  table.sort(names)
  return names
end

--- Learns a byte-level BPE vocabulary from text files and returns it loaded.
--   tokenizer.train{files = {"a.txt", ...}, vocab_size = 1000,
--                   pre = "gpt-2" | "llama-bpe" | "qwen2",   -- regex preset
--                   specials = {"<|endoftext|>"}, min_frequency = 2,
--                   json = "out/tokenizer.json", gguf = "out/vocab.gguf"}
-- Saves tokenizer.json and/or GGUF tokenizer metadata (at least one; with
-- neither, a temporary tokenizer.json is used and removed). Returns the
-- tokenizer loaded back from the saved file, or nil, msg if a file cannot be
-- read or written.
function tokenizer.train(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'train' (table expected, got " .. type(opts) .. ")", 2)
  end
  local o, tmp = {}, nil
  for k, v in pairs(opts) do o[k] = v end
  if o.specials == nil then o.specials = { "<|endoftext|>" } end
  if not o.json and not o.gguf then
    tmp = os.tmpname()
    o.json = tmp
  end
  local ok, msg = core.tokenizer_train(o)
  if not ok then
    if tmp then os.remove(tmp) end
    return nil, msg
  end
  local tok, err = core.tokenizer_load(o.json or o.gguf)
  if tmp then os.remove(tmp) end
  return tok, err
end

return tokenizer
