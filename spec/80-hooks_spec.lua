-- Activation hooks and layer plans (layer skipping, early exit, recursion).
local helpers = require "spec.helpers"
local slm = require "slm"

local function fixture_model(rel, opts)
  local p, why = helpers.fixture(rel)
  if not p then return nil, why end
  return assert(slm.load(p, opts))
end

local function logits_of(model, ids, ctx)
  local s = model:session { ctx = ctx or 64 }
  return s:eval(ids):totable()
end

local function max_diff(a, b)
  local d = 0
  for i = 1, #a do d = math.max(d, math.abs(a[i] - b[i])) end
  return d
end

local run = helpers.run

describe("hooks", function()
  local model, ids, base
  setup(function()
    model = fixture_model("gguf/dense-f16.gguf")
    if model then
      ids = model.tokenizer:encode("Once upon a time there was a little girl")
      base = logits_of(model, ids)
    end
  end)

  it("fire at every point of every layer in forward order, on (n, dim) views", function()
    if not model then return pending("fixture gguf/dense-f16.gguf not found") end
    local seen, handles = {}, {}
    local names = {}
    for l = 0, model.hp.n_layer - 1 do
      for _, p in ipairs { "attn_in", "attn_out", "ffn_in", "ffn_out", "out" } do
        names[#names + 1] = "blk." .. l .. "." .. p
      end
    end
    names[#names + 1] = "output_norm"
    names[#names + 1] = "logits"
    for _, name in ipairs(names) do
      handles[#handles + 1] = model:hook(name, function(t, info)
        seen[#seen + 1] = { name = name, t = t, info = info }
      end)
    end
    local s = model:session { ctx = 64 }
    local l = s:eval(ids):totable()
    assert.equal(#names, #seen)
    for i, e in ipairs(seen) do
      assert.equal(names[i], e.name)
      if e.name:match("^blk") then
        assert.same({ #ids, model.hp.dim }, { e.t:size(1), e.t:size(2) })
        assert.equal(tonumber(e.name:match("blk%.(%d+)")), e.info.layer)
        assert.equal(#ids, e.info.n)
        assert.equal(0, e.info.pos)
      end
    end
    -- views share the session buffers: no copies
    assert.is_true(seen[1].t:shares_storage(s.h))
    assert.is_true(seen[2].t:shares_storage(s.y))
    assert.is_true(seen[5].t:shares_storage(s.x))
    assert.equal(1, seen[#seen - 1].t:size(1))            -- output_norm: the last row
    assert.equal(model.hp.n_vocab, seen[#seen].t:numel())  -- logits
    assert.equal(0, max_diff(base, l))                     -- reading changes nothing
    -- a second call continues at pos = n_past
    seen = {}
    s:eval({ 5 })
    assert.equal(#ids, seen[1].info.pos)
    assert.equal(1, seen[1].info.n)
    for _, h in ipairs(handles) do h:remove() end
    assert.is_nil(model.net.hooks)
  end)

  it("modify activations in place; removing restores the model exactly", function()
    if not model then return pending("fixture gguf/dense-f16.gguf not found") end
    local zeros = slm.tensor.zeros
    local h = model:hook("blk.2.ffn_out", function(t) t:copy_(zeros({ t:size(1), t:size(2) })) end)
    local ablated = logits_of(model, ids)
    assert.is_true(max_diff(base, ablated) > 1e-3)
    h:remove()
    h:remove() -- idempotent
    assert.equal(0, max_diff(base, logits_of(model, ids)))
    -- a logits hook edits what eval returns
    local h2 = model:hook("logits", function(t) t:set(1, 1000) end)
    assert.equal(1000, logits_of(model, ids)[1])
    h2:remove()
  end)

  it("zeroing attention output of a layer equals pruning all its heads", function()
    if not model then return pending("fixture gguf/dense-f16.gguf not found") end
    local zeros = slm.tensor.zeros
    local h = model:hook("blk.1.attn_out", function(t) t:copy_(zeros({ t:size(1), t:size(2) })) end)
    local hooked = logits_of(model, ids)
    h:remove()
    local all = {}
    for i = 0, model.hp.n_head - 1 do all[#all + 1] = i end
    local pruned = slm.prune.heads(model, { [1] = all }, { dtype = "f32" })
    assert.is_true(max_diff(hooked, logits_of(pruned, ids)) < 1e-4)
  end)

  it("reject unknown names and points", function()
    if not model then return pending("fixture gguf/dense-f16.gguf not found") end
    assert.has_error(function() model:hook("blk.9.out", function() end) end,
                     "hook 'blk.9.out': the model has layers 0..3")
    assert.has_error(function() model:hook("blk.0.mlp", function() end) end,
                     "hook 'blk.0.mlp': unknown point 'mlp'")
    assert.has_error(function() model:hook("embed", function() end) end)
    assert.has_error(function() model:hook("logits", 5) end, "bad argument #2 to 'hook' (function expected)")
  end)

  it("work on Mamba and RWKV models (blk.N.out, logits)", function()
    local mamba = fixture_model("gguf/mamba-f16.gguf")
    if not mamba then return pending("fixture gguf/mamba-f16.gguf not found") end
    local n = 0
    local h = mamba:hook("blk.1.out", function(t, info)
      n = n + 1
      assert.equal(mamba.hp.dim, t:size(2))
      assert.equal(1, info.layer)
    end)
    local mids = { 1, 2, 3, 4 }
    local ref = logits_of(mamba, mids)
    h:remove()
    assert.equal(1, n)
    assert.equal(0, max_diff(ref, logits_of(mamba, mids)))
    assert.has_error(function() mamba:hook("blk.0.attn_in", function() end) end,
                     "hook 'blk.0.attn_in': mamba models only have blk.N.out")
    local rwkv = fixture_model("rwkv/tiny-rwkv-5v2-730K-FP32.bin", { tokenizer = slm.tokenizer.bytes() })
    if not rwkv then return pending("fixture rwkv/tiny-rwkv-5v2-730K-FP32.bin not found") end
    local got
    local h2 = rwkv:hook("logits", function(t) got = t:totable() end)
    local r = logits_of(rwkv, { 72, 105 })
    h2:remove()
    assert.same(r, got)
  end)
end)

describe("layer plans", function()
  local model, ids, base
  setup(function()
    model = fixture_model("gguf/dense-q8_0.gguf")
    if model then
      ids = model.tokenizer:encode("One day a cat sat on the mat")
      base = logits_of(model, ids)
    end
  end)

  it("the identity plan gives identical logits", function()
    if not model then return pending("fixture gguf/dense-q8_0.gguf not found") end
    assert.equal(0, max_diff(base, logits_of(model:variant { layers = { 0, 1, 2, 3 } }, ids)))
    assert.equal(0, max_diff(base, logits_of(model:variant { skip = {} }, ids)))
    assert.equal(0, max_diff(base, logits_of(model:variant { exit = 4 }, ids)))
    assert.same({ 0, 1, 2, 3 }, slm.experiment.plan(model))
  end)

  it("skipping and early exit are plans, and change the output", function()
    if not model then return pending("fixture gguf/dense-q8_0.gguf not found") end
    local skip = model:variant { skip = { 1, 2 } }
    assert.same({ 0, 3 }, slm.experiment.plan(skip))
    assert.equal(0, max_diff(logits_of(skip, ids), logits_of(model:variant { layers = { 0, 3 } }, ids)))
    local exit2 = model:variant { exit = 2 }
    assert.same({ 0, 1 }, slm.experiment.plan(exit2))
    assert.is_true(max_diff(base, logits_of(exit2, ids)) > 1e-3)
    -- the variant shares the weights and leaves the model alone
    assert.equal(model.net.layers, exit2.net.layers)
    assert.equal(0, max_diff(base, logits_of(model, ids)))
  end)

  it("a repeated layer gets its own KV slot: batch and token-by-token agree", function()
    if not model then return pending("fixture gguf/dense-q8_0.gguf not found") end
    local rec = model:variant { layers = { 0, 1, 1, 1, 2, 3 } }
    local batch = logits_of(rec, ids)
    assert.is_true(max_diff(base, batch) > 1e-3)
    local s = rec:session { ctx = 64 }
    local l
    for _, id in ipairs(ids) do l = s:eval({ id }) end
    assert.is_true(max_diff(batch, l:totable()) < 1e-3)
    -- hooks on a repeated layer fire once per step
    local steps = {}
    local h = rec:hook("blk.1.out", function(_, info) steps[#steps + 1] = info.step end)
    logits_of(rec, ids)
    h:remove()
    assert.same({ 2, 3, 4 }, steps)
  end)

  it("reject bad plans", function()
    if not model then return pending("fixture gguf/dense-q8_0.gguf not found") end
    assert.has_error(function() model:variant { layers = { 0, 4 } } end,
                     "variant: layers entry 4 is not a layer (0..3)")
    assert.has_error(function() model:variant { exit = 9 } end, "variant: exit must be an integer in 0..4, got 9")
    assert.has_error(function() model:variant { skp = { 1 } } end,
                     "variant: unknown option 'skp' (known: exit, experts, layers, skip)")
    assert.has_error(function() model:variant { skip = 1 } end, "variant: skip must be a list of layer numbers, got 1")
    assert.has_error(function() model:variant { layers = "0,1" } end,
                     'variant: layers must be a list of layer numbers, got "0,1"')
    local mamba = fixture_model("gguf/mamba-f16.gguf")
    if mamba then
      assert.has_error(function() mamba:variant { skip = { 0 } } end,
                       "variant: mamba models have no layer plans (architectures with plans: gemma, gemma2, gemma3, "
                       .. "granite, lfm2, llama, olmoe, phi3, qwen2, qwen2moe, qwen3, qwen3moe, smollm3)")
    end
  end)
end)

describe("examples", function()
  it("hooks.lua and layer_skip.lua run on the dense fixture", function()
    local p, why = helpers.fixture("gguf/dense-q8_0.gguf")
    if not p then return pending(why) end
    local out, code = run("bin/slm examples/hooks.lua " .. p)
    assert.equal(0, code, out)
    assert.matches("blk.0.out", out, 1, true)
    assert.matches("ablated", out, 1, true)
    out, code = run("bin/slm examples/layer_skip.lua " .. p)
    assert.equal(0, code, out)
    assert.matches("recursion", out, 1, true)
    assert.matches("early exit", out, 1, true)
  end)
end)
