-- slm.quantize and `slm quantize`: one quantizer; the reference's file
-- types (per-tensor mixtures, fallbacks, metadata and tensor order) checked
-- against files the reference quantizer (llama-quantize) wrote from the same
-- sources; the dtype facts it uses come from the C traits table.
local helpers = require "spec.helpers"
local slm = require "slm"
local core = slm.core

local size = helpers.size

local function copy(from, to)
  local f = assert(io.open(to, "wb"))
  f:write(helpers.read(from))
  f:close()
  return to
end

-- run(args) -> stdout, stderr, exit status of bin/slm
local function run(args)
  local errf = os.tmpname()
  local p = io.popen("SLM_PROGRESS=0 bin/slm " .. args .. " 2>" .. errf .. "; echo \"exit=$?\"")
  local out = p:read("a")
  p:close()
  local err = helpers.read(errf)
  os.remove(errf)
  return (out:gsub("exit=%d+%s*$", "")), err, tonumber(out:match("exit=(%d+)%s*$"))
end

-- A stand-in for an open GGUF file: tensor infos and metadata, no data
-- (the plan needs only names, shapes and hparams).
local function fake(arch, meta, tensors)
  local f = { tensors = {} }
  local by = {}
  for _, t in ipairs(tensors) do
    local info = { name = t[1], shape = t[2], dtype = t[3] or (#t[2] == 1 and "f32" or "f16") }
    f.tensors[#f.tensors + 1] = info
    by[info.name] = info
  end
  function f:info(name) return by[name] end
  function f:get(key)
    if key == "general.architecture" then return arch end
    return meta[key:gsub("^[^.]+%.", "")]
  end
  return f
end

-- A llama of n layers: dim 256, n_head / n_head_kv heads of 64.
local function llama(n, n_head, n_head_kv, o)
  o = o or {}
  local dim, kv = 256, 64 * n_head_kv
  local t = { { "token_embd.weight", { 512, dim } }, { "output_norm.weight", { dim } } }
  if not o.tied then t[#t + 1] = { "output.weight", { 512, dim } } end
  for l = 0, n - 1 do
    local p = "blk." .. l .. "."
    for _, x in ipairs { { "attn_norm", { dim } }, { "attn_q", { dim, dim } }, { "attn_k", { kv, dim } },
                         { "attn_v", { kv, dim } }, { "attn_output", { dim, dim } }, { "ffn_norm", { dim } },
                         { "ffn_gate", { 512, dim } }, { "ffn_up", { 512, dim } },
                         { "ffn_down", { dim, o.n_ff or 512 } } } do
      t[#t + 1] = { p .. x[1] .. ".weight", x[2] }
    end
  end
  return fake("llama", { block_count = n, ["attention.head_count"] = n_head,
                         ["attention.head_count_kv"] = n_head_kv, expert_count = o.n_expert }, t)
end

-- layers (0-based, sorted) whose tensor `part` got dtype dt
local function layers_with(plan, part, dt)
  local out = {}
  for name, d in pairs(plan) do
    local l = name:match("^blk%.(%d+)%." .. part .. "%.weight$")
    if l and d == dt then out[#out + 1] = tonumber(l) end
  end
  table.sort(out)
  return out
end

describe("the reference's mixtures, per tensor", function()
  local Q = slm.quantize

  it("tells which tensors are quantized", function()
    local cases = {
      { "blk.0.attn_q.weight", { 64, 64 }, true }, { "blk.0.ffn_up_exps.weight", { 8, 64, 64 }, true },
      { "blk.0.attn_norm.weight", { 64 }, false }, { "blk.0.attn_q_norm.weight", { 1, 64 }, false },
      { "blk.0.ffn_gate_inp.weight", { 8, 64 }, false }, { "blk.0.ssm_conv1d.weight", { 64, 4 }, false },
      { "blk.0.shortconv.conv.weight", { 64, 3 }, false }, { "position_embd.weight", { 512, 64 }, false },
      { "token_types.weight", { 2, 64 }, false }, { "blk.0.time_mix_w1.weight", { 64, 64 }, false },
      { "blk.0.time_mix_lerp_fused.weight", { 6, 1, 1, 64 }, false },
      { "blk.0.time_mix_lerp_k.weight", { 1, 1, 64 }, false }, { "blk.0.ssm_a", { 64, 16 }, false },
      { "blk.0.time_mix_key.weight", { 64, 64 }, true }, { "blk.0.attn_q_norm.weight", { 2, 64 }, false },
    }
    for _, c in ipairs(cases) do assert.equal(c[3], Q.quantizable(c[1], c[2]), c[1]) end
  end)

  it("q4_k_m: q6_k attention values and ffn_down where more_bits, q6_k output", function()
    local plan = Q.plan(llama(8, 4, 2), "q4_k_m")
    -- more_bits(i, 8): i < 1, i >= 7, (i - 1) % 3 == 2
    assert.same({ 0, 3, 6, 7 }, layers_with(plan, "attn_v", "q6_k"))
    assert.same({ 0, 3, 6, 7 }, layers_with(plan, "ffn_down", "q6_k"))
    assert.same({ 1, 2, 4, 5 }, layers_with(plan, "ffn_down", "q4_k"))
    assert.same({ 0, 1, 2, 3, 4, 5, 6, 7 }, layers_with(plan, "attn_q", "q4_k"))
    assert.equal("q6_k", plan["output.weight"])
    assert.equal("q4_k", plan["token_embd.weight"])
    assert.equal("f32", plan["blk.0.attn_norm.weight"])
  end)

  it("q3_k_m, q2_k and q5_k_m follow their own rules", function()
    local plan = Q.plan(llama(32, 4, 2), "q3_k_m")
    assert.same({ 0, 1 }, layers_with(plan, "attn_v", "q5_k"))
    assert.same({ 0, 1 }, layers_with(plan, "ffn_down", "q5_k"))   -- the first n/16
    assert.equal(30, #layers_with(plan, "ffn_down", "q4_k"))
    assert.equal(32, #layers_with(plan, "attn_output", "q4_k"))
    assert.equal(32, #layers_with(plan, "ffn_up", "q3_k"))
    -- q2_k: attn_v q3_k, or q4_k when 4+ query heads share a kv head
    plan = Q.plan(llama(4, 4, 2), "q2_k")
    assert.equal(4, #layers_with(plan, "attn_v", "q3_k"))
    assert.equal(4, #layers_with(plan, "ffn_down", "q3_k"))
    assert.equal(4, #layers_with(plan, "attn_output", "q3_k"))
    assert.equal(4, #layers_with(plan, "attn_q", "q2_k"))
    plan = Q.plan(llama(4, 4, 1), "q2_k")
    assert.equal(4, #layers_with(plan, "attn_v", "q4_k"))
    plan = Q.plan(llama(8, 4, 2), "q5_k_m")
    assert.same({ 0, 3, 6, 7 }, layers_with(plan, "attn_v", "q6_k"))
    assert.same({ 1, 2, 4, 5 }, layers_with(plan, "ffn_down", "q5_k"))
  end)

  it("tied heads, fallbacks, experts and 70B models", function()
    -- no output.weight: token_embd gets the head's q6_k
    assert.equal("q6_k", Q.plan(llama(2, 4, 2, { tied = true }), "q4_k_m")["token_embd.weight"])
    -- ffn_down rows of 96: q4_k -> q5_0, q6_k -> q8_0
    local plan = Q.plan(llama(8, 4, 2, { n_ff = 96 }), "q4_k_m")
    assert.same({ 1, 2, 4, 5 }, layers_with(plan, "ffn_down", "q5_0"))
    assert.same({ 0, 3, 6, 7 }, layers_with(plan, "ffn_down", "q8_0"))
    -- 8 experts: attn_v and attn_k q8_0, attn_output q5_k; layers from the names
    local t = {}
    for l = 0, 1 do
      local p = "blk." .. l .. "."
      for _, x in ipairs { "attn_q", "attn_k", "attn_v", "attn_output" } do t[#t + 1] = { p .. x .. ".weight", { 256, 256 } } end
      t[#t + 1] = { p .. "ffn_down_exps.weight", { 8, 256, 256 } }
      t[#t + 1] = { p .. "ffn_gate_inp.weight", { 8, 256 }, "f32" }
    end
    plan = Q.plan(fake("qwen3moe", { block_count = 2, ["attention.head_count"] = 4, ["attention.head_count_kv"] = 2,
                                     expert_count = 8 }, t), "q4_k_m")
    assert.equal("q8_0", plan["blk.1.attn_v.weight"])
    assert.equal("q8_0", plan["blk.1.attn_k.weight"])
    assert.equal("q5_k", plan["blk.1.attn_output.weight"])
    assert.equal("q6_k", plan["blk.1.ffn_down_exps.weight"])   -- more_bits(1, 2)
    assert.equal("f32", plan["blk.0.ffn_gate_inp.weight"])
    -- 80-layer llama with grouped kv heads (the reference's 70B): q5_k values
    assert.equal(80, #layers_with(Q.plan(llama(80, 4, 2), "q3_k_s"), "attn_v", "q5_k"))
    assert.equal(80, #layers_with(Q.plan(llama(80, 4, 4), "q3_k_s"), "attn_v", "q3_k"))
  end)

  it("pure, f16 and plain K dtypes give every quantizable tensor one dtype", function()
    for _, c in ipairs { { "q4_k_m", { pure = true }, "q4_k" }, { "q4_k" }, { "f16", nil, "f16" } } do
      local plan = Q.plan(llama(8, 4, 2), c[1], c[2])
      local want = c[3] or c[1]
      for name, dt in pairs(plan) do
        assert.equal(name:match("norm") and "f32" or want, dt, c[1] .. " " .. name)
      end
    end
  end)

  it("tensors in the reference's order: by layer number, then name", function()
    assert.same({ "output.weight", "token_embd.weight", "blk.2.attn_q.weight", "blk.2.ffn_up.weight",
                  "blk.10.attn_q.weight" },
                Q.order { "blk.10.attn_q.weight", "token_embd.weight", "blk.2.ffn_up.weight", "output.weight",
                          "blk.2.attn_q.weight" })
  end)
end)

describe("file types against the reference quantizer's files", function()
  -- {source, reference file, file type}: every reference file of the
  -- fixtures that llama-quantize made from a source file here
  local cases = {}
  for _, ty in ipairs { "q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "bf16" } do
    cases[#cases + 1] = { "gguf/dense-f16.gguf", "gguf/dense-" .. ty .. ".gguf", ty }
  end
  for _, ty in ipairs { "q8_0", "q4_0", "q5_1", "q4_k_m", "q6_k" } do
    cases[#cases + 1] = { "gguf/mamba-f16.gguf", "gguf/mamba-" .. ty .. ".gguf", ty }
  end
  for _, ty in ipairs { "f16", "q8_0", "q4_0" } do
    cases[#cases + 1] = { "gguf/rwkv7-tiny-f32.gguf", "gguf/rwkv7-tiny-" .. ty .. ".gguf", ty }
  end
  for _, fam in ipairs { "gemma2", "gemma3", "granite", "llama3", "phi4mini", "qwen3", "smollm3" } do
    for _, ty in ipairs { "q4_k_m", "q8_0" } do
      cases[#cases + 1] = { "gguf2/" .. fam .. "-f16.gguf", "gguf2/" .. fam .. "-" .. ty .. ".gguf", ty }
    end
  end
  for _, fam in ipairs { "lfm2", "mamba2", "mixtral", "olmoe", "qwen2moe", "qwen3moe" } do
    for _, ty in ipairs { "q4_k_m", "q8_0" } do
      cases[#cases + 1] = { "gguf3/" .. fam .. "-f16.gguf", "gguf3/" .. fam .. "-" .. ty .. ".gguf", ty }
    end
  end
  cases[#cases + 1] = { "gguf3/bert-f16.gguf", "gguf3/bert-q8_0.gguf", "q8_0" }

  for _, c in ipairs(cases) do
    it(c[3] .. " of " .. c[1] .. ": every tensor's dtype and bytes, and the whole file", function()
      local src, why = helpers.fixture(c[1])
      if not src then return pending(why) end
      local ref, why2 = helpers.fixture(c[2])
      if not ref then return pending(why2) end
      local out = os.tmpname()
      assert.is_true(slm.quantize(src, out, c[3]))
      local a, b = assert(slm.gguf.open(out)), assert(slm.gguf.open(ref))
      assert.equal(#b.tensors, #a.tensors)
      for i, info in ipairs(b.tensors) do
        assert.equal(info.name, a.tensors[i].name)
        assert.equal(info.dtype, a.tensors[i].dtype, info.name)
      end
      for _, info in ipairs(b.tensors) do
        assert.is_true(a:tensor(info.name):tobytes() == b:tensor(info.name):tobytes(), info.name .. ": bytes differ")
      end
      a:close()
      b:close()
      assert.is_true(helpers.read(out) == helpers.read(ref), "files differ")
      os.remove(out)
    end)
  end
end)

describe("one quantizer", function()
  it("bin/slm quantize writes the file slm.quantize writes", function()
    local p, why = helpers.fixture("gguf/dense-f16.gguf")
    if not p then return pending(why) end
    for _, ty in ipairs { "q4_k_m", "q3_k", "f16" } do
      local a, b = os.tmpname(), os.tmpname()
      local so, err, code = run(string.format("quantize %s %s %s", p, a, ty))
      assert.equal(0, code, err)
      assert.equal("", err)
      assert.is_true(slm.quantize(p, b, ty))
      assert.is_true(helpers.read(a) == helpers.read(b), ty .. ": the files differ")
      assert.matches("%(" .. ty .. "%): ", so)
      os.remove(a)
      os.remove(b)
    end
    local r, why2 = helpers.fixture("rwkv/tiny-rwkv-4v0-660K-FP32.bin")
    if not r then return pending(why2) end
    local a, b = os.tmpname(), os.tmpname()
    local _, err, code = run(string.format("quantize %s %s q5_1", r, a))
    assert.equal(0, code, err)
    assert.is_true(slm.quantize(r, b, "q5_1"))
    assert.is_true(helpers.read(a) == helpers.read(b), "rwkv.cpp: the files differ")
    local m = assert(core.rwkvcpp.open(b))
    assert.equal(8, m.header.data_type)
    assert.equal("q5_1", m.tensors["blocks.0.ffn.key.weight"]:dtype())
    assert.equal("f32", m.tensors["emb.weight"]:dtype())
    os.remove(a)
    os.remove(b)
  end)

  it("quantizes in place: the file as out of place, sizes before and after", function()
    for _, c in ipairs { { "gguf/dense-f16.gguf", "q8_0", "6.27 MB %-> 3.34 MB" },
                         { "rwkv/tiny-rwkv-4v0-660K-FP32.bin", "q8_0", "2.53 MB %-> 895.1 kB" } } do
      local p, why = helpers.fixture(c[1])
      if not p then return pending(why) end
      local place, want = copy(p, os.tmpname()), os.tmpname()
      assert.is_true(slm.quantize(p, want, c[2]))
      local so, err, code = run(string.format("quantize %s %s %s", place, place, c[2]))
      assert.equal(0, code, err)
      assert.matches(c[3] .. "\n$", so)
      assert.equal(size(want), size(place))
      assert.is_true(helpers.read(want) == helpers.read(place), c[1] .. ": differs from out of place")
      assert.is_nil(size(place .. ".tmp"))
      os.remove(place)
      os.remove(want)
    end
  end)

  it("refuses, naming the problem", function()
    local names = table.concat(slm.quantize.names(), " ")
    assert.equal("f32 f16 q4_0 q4_1 q8_0 q5_0 q5_1 q2_k q3_k_s q3_k_m q3_k_l q4_k_s q4_k_m q5_k_s q5_k_m q6_k bf16 "
                 .. "q3_k q4_k q5_k", names)
    assert.equal("quantize: unknown type 'q9_9' (one of " .. names .. ")",
                 helpers.errmsg(slm.quantize, "in.gguf", "out.gguf", "q9_9"))
    assert.equal("quantize: unknown type 'q8_k' (one of " .. names .. ")",
                 helpers.errmsg(slm.quantize, "in.gguf", "out.gguf", "q8_k"))
    assert.equal("bad argument #3 to 'quantize' (type name or policy function expected)",
                 helpers.errmsg(slm.quantize, "in.gguf", "out.gguf", 4))
    local _, err, code = run("quantize README.md /tmp/never.gguf q4_k_m")
    assert.equal(1, code)
    assert.matches("^slm: README.md: not a GGUF file %(magic bytes 23 20 73 6c, expected 'GGUF'%)\n$", err)
    local r, why = helpers.fixture("rwkv/tiny-rwkv-4v0-660K-FP32.bin")
    if not r then return pending(why) end
    assert.equal("quantize: rwkv.cpp files hold only f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0 (not q4_k_m)",
                 helpers.errmsg(slm.quantize, r, "out.bin", "q4_k_m"))
    -- a write that fails leaves nothing behind and says where
    local ok, werr = slm.quantize(r, "/nonexistent/dir/out.bin", "q8_0")
    assert.is_nil(ok)
    assert.equal("/nonexistent/dir/out.bin.tmp: No such file or directory", werr)
  end)
end)
