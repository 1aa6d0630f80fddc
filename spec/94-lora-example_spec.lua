-- examples/lora_finetune.lua at a small size: the held-out perplexity of the
-- shipping-forecast text falls for an f32 copy of the character model and for
-- the Q8_0 shipped file itself, and the adapter is a few percent of the base.
local helpers = require "spec.helpers"
local run = helpers.run

describe("examples/lora_finetune.lua", function()
  it("lowers the target text's perplexity over an f32 and a q8_0 base", function()
    local out, code = run("bin/slm examples/lora_finetune.lua shakespeare-char 12 4 4")
    assert.equal(0, code, out)
    local rows = {}
    for label, before, after, bytes, share, steps in
        out:gmatch("|%s*([%w_]+)%s*|%s*([%d.]+)%s*|%s*([%d.]+)%s*|%s*(%d+)%s*|%s*([%d.]+) %%%s*|%s*(%d+)%s*|") do
      rows[label] = { before = tonumber(before), after = tonumber(after), bytes = tonumber(bytes),
                      share = tonumber(share), steps = tonumber(steps) }
    end
    for _, label in ipairs { "f32", "q8_0" } do
      local r = rows[label]
      assert.truthy(r, out)
      assert.equal(12, r.steps)
      assert.is_true(r.after < 0.8 * r.before, out)
      -- rank 4 on q and v (256 x 256) of 6 layers: 12 x (4 x 256 + 256 x 4) f32 values, plus the header
      assert.is_true(r.bytes >= 12 * 2048 * 4 and r.bytes < 12 * 2048 * 4 + 8192, out)
    end
    -- the same bytes are a larger share of the smaller (q8_0) file
    assert.is_true(rows.q8_0.share > 3 * rows.f32.share)
  end)

  it("refuses a bad argument in one line", function()
    local out, code = run("bin/slm examples/lora_finetune.lua shakespeare-char 0")
    assert.equal(1, code)
    assert.equal("lora_finetune.lua: STEPS must be a positive integer, got 0\n", out)
  end)
end)
