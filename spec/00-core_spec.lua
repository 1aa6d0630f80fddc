describe("slm module", function()
  it("loads and reports a version", function()
    local slm = require "slm"
    assert.is_string(slm.version)
    assert.matches("^%d+%.%d+%.%d+$", slm.version)
  end)
end)
