-- `slm repl`: Lua lines piped into bin/slm repl (stdin not a terminal, so
-- no prompts), and the pretty printers of slm.repl.
local helpers = require "spec.helpers"
local slm = require "slm"
local repl = require "slm.repl"

local function repl_run(model, input)
  local inf = helpers.tmpfile(input)
  local errf = os.tmpname()
  local p = io.popen("SLM_PROGRESS=0 bin/slm repl " .. (model or "") .. " <" .. inf .. " 2>" .. errf
                     .. "; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local err = helpers.read(errf)
  os.remove(inf)
  os.remove(errf)
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return (out:gsub("exit=%d+%s*$", "")), err, code
end

describe("slm repl", function()
  it("evaluates expressions and statements, continues incomplete chunks, reports errors", function()
    local out, err, code = repl_run(nil, table.concat({
      "1 + 1",
      "x = 40 +",
      "  2",
      "x",
      "'a string'",
      "{1, 2, k = 'v'}",
      "error('boom')",
      "for i = 1, 2 do print(i) end",
      "slm.version",
      "nil",
      "= 3 * 3",
    }, "\n") .. "\n")
    assert.equal(0, code, err)
    assert.equal(table.concat({
      "2", "42", "a string", '{1, 2, k = "v"}', "error: repl:1: boom", "1", "2", slm.version, "nil", "9",
    }, "\n") .. "\n", out)
  end)

  it("prints the model as a tree of blocks; encodings as pieces with ids; tensors truncated", function()
    local p, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local out, err, code = repl_run(p, table.concat({
      "model",
      "encode('Hello')",
      "e = encode('Hello')",
      "#e, e[1]",
      "show({1, 374})",
      "sess:eval(encode('Hello')):size(1)",
      "print(sess)",
      "slm.tensor.zeros({3, 100})",
    }, "\n") .. "\n")
    assert.equal(0, code, err)
    local want_tree = table.concat({
      "llama {  4 layers, dim 256, vocab 512, 3.28M parameters, dense-q8_0.gguf",
      "  (output.weight)       q8_0  512x256",
      "  (output_norm.weight)  f32   256",
      "  (token_embd.weight)   q8_0  512x256",
      "  (1): blk.0 {",
      "    attn_k.weight         q8_0  64x256",
      "    attn_norm.weight      f32   256",
      "    attn_output.weight    q8_0  256x256",
      "    attn_q.weight         q8_0  256x256",
      "    attn_v.weight         q8_0  64x256",
      "    ffn_down.weight       q8_0  256x768",
      "    ffn_gate.weight       q8_0  768x256",
      "    ffn_norm.weight       f32   256",
      "    ffn_up.weight         q8_0  768x256",
      "  }",
      "  (2)..(4): blk.1 .. blk.3 { as (1) }",
      "}",
    }, "\n")
    assert.equal(want_tree, out:sub(1, #want_tree))
    local rest = out:sub(#want_tree + 2)
    local lines = {}
    for l in rest:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal('6 tokens: 1:"<s>" 374:" " 339:"H" 310:"e" 444:"ll" 320:"o"', lines[1])
    assert.equal("6\t1", lines[2])
    assert.equal('2 tokens: 1:"<s>" 374:" "', lines[3])
    assert.equal("512", lines[4])
    assert.matches("^slm%.Session%(llama, 6/", lines[5])
    -- a 3x100 tensor prints columns elided and its type line
    assert.matches("...", rest, 1, true)
    assert.matches("[slm.Tensor f32 3x100]", rest, 1, true)
  end)

  it("folds identical layers and lists rwkv.cpp blocks with their stored dtypes", function()
    local p, why = helpers.fixture("rwkv/tiny-rwkv-7v0-834K-Q5_1.bin")
    if not p then return pending(why) end
    local m = assert(slm.load(p, { tokenizer = slm.tokenizer.bytes() }))
    local t = repl.tree(m)
    assert.matches("^rwkv7 {  %d+ layers, dim 64, vocab 256, ", t)
    assert.matches("\n  %(emb%.weight%)%s+f32%s+256x64\n", t)
    assert.matches("\n    att%.key%.weight%s+q5_1%s+64x64\n", t)
    assert.matches("\n  %(head%.weight%)%s+f32%s+256x64\n}$", t)
    -- layer 1 has no v1/v2/v0 (rwkv-7's value residual starts at layer 2);
    -- the layers after 2 have the same tensors and fold into one line
    assert.matches("\n    att%.v1 ", t:match("%(2%): blocks%.1 {.-}"))
    assert.is_nil(t:match("%(1%): blocks%.0 {.-}"):find("att.v1", 1, true))
    assert.matches("\n  (3)..(12): blocks.2 .. blocks.11 { as (2) }\n", t, 1, true)
  end)

  it("show: ids as pieces with a tokenizer, other values inline", function()
    local tok = slm.tokenizer.bytes()
    assert.equal('3 tokens: 72:"H" 105:"i" 10:"\\n"', repl.show({ 72, 105, 10 }, tok))
    assert.equal("{72, 105}", repl.show({ 72, 105 }))
    local e = repl.encoding({ 104, 105 }, tok)
    assert.equal(2, #e)
    assert.equal(104, e[1])
    assert.equal('2 tokens: 104:"h" 105:"i"', tostring(e))
    assert.equal('{a = {b = "c"}}', repl.show({ a = { b = "c" } }))
  end)
end)
