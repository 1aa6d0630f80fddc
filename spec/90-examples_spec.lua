-- Every example runs against the fixtures (skipping when they are absent).
local helpers = require "spec.helpers"

local function run(cmd)
  local p = io.popen(cmd .. " 2>&1; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local code = tonumber(out:match("exit=(%d+)%s*$"))
  return out:gsub("exit=%d+%s*$", ""), code
end

describe("examples", function()
  it("inspect.lua prints every fixture GGUF", function()
    local dir, why = helpers.fixture("gguf")
    if not dir then return pending(why) end
    local n = 0
    for name in io.popen("ls " .. dir):lines() do
      if name:match("%.gguf$") then
        local out, code = run("bin/slm examples/inspect.lua " .. dir .. "/" .. name)
        assert.equal(0, code, out)
        assert.matches("architecture", out, 1, true)
        assert.matches("token_embd.weight", out, 1, true)
        n = n + 1
      end
    end
    assert.is_true(n >= 20)
  end)

  it("inspect.lua fails with one clear line on a missing file", function()
    local out, code = run("bin/slm examples/inspect.lua /nonexistent.gguf")
    assert.equal(1, code)
    assert.equal("/nonexistent.gguf: No such file or directory\n", out)
  end)

  it("generate.lua streams text and reports speed", function()
    local path, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not path then return pending(why) end
    local out, code = run("bin/slm examples/generate.lua " .. path .. " 'Once upon' 12")
    assert.equal(0, code, out)
    assert.matches("^Once upon", out)
    assert.matches("%[12 tokens, [%d.]+ tok/s%]", out)
  end)

  it("generate.lua without a tokenizer says so", function()
    local path, why = helpers.fixture("llama2c/stories260K.bin")
    if not path then return pending(why) end
    local out, code = run("bin/slm examples/generate.lua " .. path .. " 'Once'")
    assert.equal(1, code)
    assert.matches("has no tokenizer", out, 1, true)
  end)
end)
