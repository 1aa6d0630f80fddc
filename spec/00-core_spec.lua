describe("slm module", function()
  it("loads and reports a version", function()
    local slm = require "slm"
    assert.is_string(slm.version)
    assert.matches("^%d+%.%d+%.%d+$", slm.version)
  end)
end)

describe("slm.kernels", function()
  local slm = require "slm"
  -- the tier the CPU has, read from /proc/cpuinfo independently of the
  -- library's CPUID check (Linux x86-64 only; elsewhere just the names)
  local function cpu_tier()
    local f = io.open("/proc/cpuinfo")
    if not f then return nil end
    local flags = f:read("a"):match("\nflags%s*:%s*([^\n]*)")
    f:close()
    if not flags then return nil end
    local set = {}
    for w in flags:gmatch("%S+") do set[w] = true end
    if not (set.avx2 and set.fma and set.f16c) then return "generic" end
    if set.avx512f and set.avx512bw and set.avx512vl and set.avx512dq and set.avx512_vnni then
      return "avx512"
    end
    return "avx2"
  end

  after_each(function() slm.kernels("avx512") end)

  it("reports the CPU's highest tier and caps it on request", function()
    local want = cpu_tier()
    if want then assert.equal(want, slm.kernels()) end
    assert.equal("generic", slm.kernels("generic"))
    local avx2 = slm.kernels("avx2")
    assert.is_true(avx2 == "avx2" or avx2 == "generic")
    assert.equal(want or slm.kernels("avx512"), slm.kernels("avx512"))
  end)

  it("takes the cap from SLM_KERNELS for a whole process, and refuses a bad one", function()
    local helpers = require "spec.helpers"
    local out, code = helpers.run("SLM_KERNELS=generic bin/slm -e 'print(require(\"slm\").kernels())'")
    assert.equal(0, code)
    assert.equal("generic\n", out)
    out, code = helpers.run("SLM_KERNELS=sse9 bin/slm -e 'require(\"slm\")'")
    assert.is_not.equal(0, code)
    assert.matches('SLM_KERNELS must be generic, avx2 or avx512 %(got "sse9"%)', out)
  end)

  it("refuses an unknown tier by name", function()
    local ok, e = pcall(slm.kernels, "sse9")
    assert.is_false(ok)
    assert.matches("invalid option 'sse9'", tostring(e))
  end)
end)
