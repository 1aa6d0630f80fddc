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

  it("search.lua ranks a file's lines by cosine similarity to each query", function()
    local path, why = helpers.fixture("gguf3/bert-f16.gguf")
    if not path then return pending(why) end
    local lines = { "The weather is sunny today.", "I drank hot coffee in the morning.",
                    "The king and the queen lived in a large house.", "Machine learning models embed sentences.",
                    string.rep("word ", 700) }   -- longer than the context: cut to 512 tokens
    local file = helpers.tmpfile(table.concat(lines, "\n\n") .. "\n")
    local out, code = run("bin/slm examples/search.lua " .. path .. " " .. file .. " 'sunny weather' 'hot coffee' 'word word' --top 2")
    assert.equal(0, code, out)
    -- the expected order and scores, from model:embed in this process
    local slm = require "slm"
    local m = assert(slm.load(path))
    local vecs = {}
    for i, l in ipairs(lines) do
      local ids = m.tokenizer:encode(l)
      if #ids > 512 then   -- the first 511 ids and the last ([SEP])
        local last = ids[#ids]
        for k = #ids, 512, -1 do ids[k] = nil end
        ids[512] = last
      end
      vecs[i] = m:embed(ids)
    end
    local expect = {}
    for _, q in ipairs { "sunny weather", "hot coffee", "word word" } do
      local v = m:embed(q)
      local scored = {}
      for i = 1, #lines do
        local dot = 0
        for j = 1, v:numel() do dot = dot + v:get(j) * vecs[i]:get(j) end
        scored[i] = { dot, i }
      end
      table.sort(scored, function(a, b) return a[1] > b[1] end)
      expect[#expect + 1] = "query: " .. q
      for r = 1, 2 do expect[#expect + 1] = string.format("  %6.3f  %s", scored[r][1], lines[scored[r][2]]) end
    end
    assert.equal(table.concat(expect, "\n") .. "\n", out)
    -- queries from stdin
    local qf = helpers.tmpfile("sunny weather\n\nhot coffee\nword word\n")
    local out2 = run("bin/slm examples/search.lua " .. path .. " " .. file .. " --top 2 < " .. qf)
    assert.equal(out, out2)
    local bad, bcode = run("bin/slm examples/search.lua " .. path)
    assert.equal(1, bcode)
    assert.equal("usage: search.lua MODEL FILE [QUERY ...] [--top K]\n", bad)
  end)

  it("generate.lua without a tokenizer says so", function()
    local path, why = helpers.fixture("llama2c/stories260K.bin")
    if not path then return pending(why) end
    local out, code = run("bin/slm examples/generate.lua " .. path .. " 'Once'")
    assert.equal(1, code)
    assert.matches("has no tokenizer", out, 1, true)
  end)
end)
