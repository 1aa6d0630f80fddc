-- Refusing a hostile file costs little memory: each file below claims sizes
-- (counts, lengths, dimensions, vocabulary) far beyond what it holds, and is
-- loaded in a child process of its own (as `slm run` or a script would), whose
-- peak resident memory must stay under 100 MB while it refuses the file with
-- one line naming it. Before issue 14, the rwkv.cpp file with one header byte
-- changed made `slm run` reach 8.3 GB (under a 30 GB limit; the kernel
-- killed it without one). The child runs under a 2 GB address-space limit
-- (but under ASan), so a regression fails here instead of exhausting the
-- machine.
local helpers = require "spec.helpers"

local LIMIT_KB = 100 * 1024
-- AddressSanitizer (make asan) reserves terabytes of address space for its
-- shadow memory: no address-space limit under it (its allocator returns NULL
-- for huge requests instead)
local asan = ((os.getenv("LD_PRELOAD") or "") .. (os.getenv("SLM_PRELOAD") or "")):find("asan")
local ULIMIT = asan and "" or "ulimit -v 2000000; "

-- the child: loads the file as `kind`, prints its peak RSS and the outcome;
-- a model that loads is run one token as `slm run` would
local CHILD = [[
local slm = require "slm"
local kind, path = arg[1], arg[2]
local res, err
if kind == "model" then
  res, err = slm.load(path)
  if res then res:session{}:eval{ 0 } end
elseif kind == "tokenizer" then
  res, err = slm.tokenizer.load(path)
else
  res, err = slm[kind].open(path)
end
io.write(require("slm.bench").peak_rss_kb(), "\t", res and "LOADED" or tostring(err), "\n")
]]

local child_path
local function run_child(kind, path)
  if not child_path then   -- bin/slm runs a script by its .lua suffix
    child_path = os.tmpname() .. ".lua"
    helpers.tmpnames[#helpers.tmpnames + 1] = child_path
    local f = assert(io.open(child_path, "wb"))
    f:write(CHILD)
    f:close()
  end
  local p = io.popen(string.format("%sbin/slm %s %s '%s' 2>&1", ULIMIT, child_path, kind, path))
  local out = p:read("a")
  p:close()
  local kb, msg = out:match("^(%d+)\t([^\n]*)\n$")
  assert(kb, "the child failed: " .. out)
  return tonumber(kb), msg
end

local patched = helpers.patched

-- GGUF pieces
local function gstr(s) return string.pack("<I8", #s) .. s end
local function gguf_head(n_tensors, n_kv) return "GGUF" .. string.pack("<I4I8I8", 3, n_tensors, n_kv) end

local function with_key(rel, key, value)
  local src = helpers.fixture(rel)
  if not src then return nil end
  return helpers.altered(src, { drop = { [key] = true }, metadata = { { key, { type = "u32", value = value } } } })
end

-- protobuf pieces (SentencePiece tokenizer.model)
local function varint(n)
  local out = {}
  repeat
    local b = n & 0x7f
    n = n >> 7
    out[#out + 1] = string.char(n ~= 0 and (b | 0x80) or b)
  until n == 0
  return table.concat(out)
end
local function pbytes(num, s) return varint(num << 3 | 2) .. varint(#s) .. s end
local FIRST_PIECE = pbytes(1, pbytes(1, "<unk>") .. varint(3 << 3) .. varint(2))

-- {label, kind, make() -> path (nil: fixture absent), fragment of the message}
local CASES = {
  { "rwkv.cpp n_vocab 0x7f000100 (issue 14)", "model",
    function() return patched("rwkv/tiny-rwkv-4v0-660K-FP32.bin", { [11] = 0x7f }) end, "header n_vocab is 2130706688" },
  { "rwkv.cpp n_embed 0x7f000080", "model",
    function() return patched("rwkv/tiny-rwkv-4v0-660K-FP32.bin", { [15] = 0x7f }) end, "header n_embed" },
  { "rwkv.cpp n_layer 0x7f000004", "model",
    function() return patched("rwkv/tiny-rwkv-4v0-660K-FP32.bin", { [19] = 0x7f }) end, "header n_layer" },
  { "rwkv.cpp parameter dimension 0x7f......", "model",
    function() return patched("rwkv/tiny-rwkv-4v0-660K-FP32.bin", { [39] = 0x7f }) end, "past the end of the file" },
  { "llama2.c vocab_size 0x7f000200", "model",
    function() return patched("llama2c/stories260K.bin", { [23] = 0x7f }) end, "vocab_size is 2130706944" },
  { "llama2.c seq_len 0x00400000", "model",
    function() return patched("llama2c/stories260K.bin", { [25] = 0x00, [26] = 0x40 }) end, "describes" },
  { "llama2.c n_layers 1000", "model",
    function() return patched("llama2c/stories260K.bin", { [8] = 0xe8, [9] = 0x03 }) end, "describes" },
  { "GGUF n_tensors 2^40", "gguf", function() return helpers.tmpfile(gguf_head(1 << 40, 0)) end,
    "tensor infos cannot fit" },
  { "GGUF n_kv 2^62", "gguf", function() return helpers.tmpfile(gguf_head(0, 1 << 62)) end,
    "key-values cannot fit" },
  { "GGUF array of 2^40 u8", "gguf",
    function() return helpers.tmpfile(gguf_head(0, 1) .. gstr("a") .. string.pack("<I4I4I8", 9, 0, 1 << 40)) end,
    "past the end of the file" },
  { "GGUF array of 2^30 strings", "tokenizer",
    function() return helpers.tmpfile(gguf_head(0, 1) .. gstr("tokenizer.ggml.tokens")
                                      .. string.pack("<I4I4I8", 9, 8, 1 << 30) .. gstr("x")) end,
    "past the end of the file" },
  { "GGUF string of 2^40 bytes", "gguf",
    function() return helpers.tmpfile(gguf_head(0, 1) .. gstr("a") .. string.pack("<I4I8", 8, 1 << 40)) end,
    "past the end of the file" },
  { "GGUF tensor of 2^31 x 2^31 x 2^31", "gguf",
    function() return helpers.tmpfile(gguf_head(1, 0) .. gstr("t") .. string.pack("<I4I8I8I8I4I8", 3, 1 << 31,
                                      1 << 31, 1 << 31, 0, 0)) end, "tensor 0 ('t')" },
  { "GGUF block_count 4000", "model", function() return with_key("gguf/dense-q8_0.gguf", "llama.block_count", 4000) end,
    "llama.block_count is 4000" },
  { "GGUF embedding_length 2^20", "model",
    function() return with_key("gguf/dense-q8_0.gguf", "llama.embedding_length", 1 << 20) end,
    "llama.embedding_length is 1048576" },
  { "GGUF rwkv7 block_count 4000", "model",
    function() return with_key("gguf/rwkv7-tiny-q8_0.gguf", "rwkv7.block_count", 4000) end,
    "rwkv7.block_count is 4000" },
  { "safetensors header length 2^40", "safetensors",
    function() return helpers.tmpfile(string.pack("<I8", 1 << 40) .. "{}") end, "over the format's limit" },
  { "safetensors shape 65536 x 65536 in 4 bytes", "safetensors",
    function()
      local h = '{"w":{"dtype":"F32","shape":[65536,65536],"data_offsets":[0,4]}}'
      return helpers.tmpfile(string.pack("<I8", #h) .. h .. "\0\0\0\0")
    end, "hold 4 bytes but 4294967296 F32 elements need 17179869184" },
  { "safetensors overlapping tensors", "safetensors",
    function()
      local h = '{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                .. '"b":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
      return helpers.tmpfile(string.pack("<I8", #h) .. h .. "\0\0\0\0")
    end, "overlap tensor" },
  { "tokenizer.json id 2000000000", "tokenizer",
    function() return helpers.tmpfile('{"model":{"type":"BPE","vocab":{"a":0,"b":2000000000},"merges":[]}}') end,
    "model.vocab: the id of 'b'" },
  { "tokenizer.json added id 2147483646", "tokenizer",
    function() return helpers.tmpfile('{"added_tokens":[{"id":2147483646,"content":"x"}],'
                                      .. '"model":{"type":"BPE","vocab":{"a":0},"merges":[]}}') end,
    "added_tokens[0]" },
  { "tokenizer.model field of 2^40 bytes", "tokenizer",
    function() return helpers.tmpfile(FIRST_PIECE .. varint(1 << 3 | 2) .. varint(1 << 40) .. "xx") end,
    "malformed protobuf" },
  { "tokenizer.model bos_id 2^31-1", "tokenizer",
    function()
      local trainer = varint(3 << 3) .. varint(2) .. varint(35 << 3) .. varint(1) .. varint(41 << 3) .. varint(0x7fffffff)
      return helpers.tmpfile(FIRST_PIECE .. pbytes(2, trainer) .. pbytes(3, varint(4 << 3) .. varint(0)))
    end, "trainer_spec.bos_id is 2147483647" },
  { "tokenizer.bin record of 2^31-1 bytes", "tokenizer",
    function() return helpers.tmpfile(string.pack("<i4fi4", 16, 0, 0x7fffffff) .. "abc") end,
    "not a llama2.c tokenizer" },
}

describe("hostile files are refused in little memory", function()
  for _, c in ipairs(CASES) do
    it(c[1], function()
      local path = c[3]()
      if not path then return pending("fixture not found (set SLM_FIXTURES)") end
      local kb, msg = run_child(c[2], path)
      assert.equal(path .. ": ", msg:sub(1, #path + 2), msg)
      assert.is_truthy(msg:find(c[4], 1, true), msg)
      assert.is_true(kb < LIMIT_KB, string.format("%s: peak RSS %d kB", c[1], kb))
    end)
  end
end)
