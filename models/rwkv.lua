--- RWKV language models, versions 4, 5.1, 5.2, 6 and 7: rwkv.cpp files
-- (every version) and GGUF files of the `rwkv6` / `rwkv7` architectures.
-- An RNN: per token, constant memory. The forward pass reads like the model:
--
--   x = ln0(embed(tokens))
--   for each layer:  x = x + time_mix(ln1(x))      -- token shift, WKV state
--                    x = x + channel_mix(ln2(x))   -- token shift, relu^2 FFN
--   logits = head(ln_out(x[last]))
--
-- Both mixes are C blocks (csrc/blocks/rwkv*.c) that carry their layer's
-- state in the session's RWKV state; this file only decides which weights
-- go where. The two file layouts name the same parameters differently, and
-- rwkv.cpp stores some of them pre-transformed (../shared/README.md): each
-- version's C code takes them as that file stores them.
local core = require "slm.core"
local blocks, rwkv_c = core.blocks, core.rwkv
local head = require("slm.hooks").head
local hparams = require("slm.models.hparams")

local rwkv = {
  name = "rwkv", archs = { "rwkvcpp", "rwkv6", "rwkv7" },
  -- keys the converter writes that the tensors already say: the low-rank
  -- sizes are the shapes of the *_w1/_w2 (v6) and w1..g2 (v7) tensors, which
  -- the blocks check; the heads are embedding_length / wkv.head_size, as the
  -- reference computes them
  ignored_keys = {
    ["time_mix_extra_dim"] = true, ["time_decay_extra_dim"] = true, ["attention.head_count"] = true,
    ["attention.decay_lora_rank"] = true, ["attention.iclr_lora_rank"] = true,
    ["attention.value_residual_mix_lora_rank"] = true, ["attention.gate_lora_rank"] = true,
  },
}

local LN_EPS = 1e-5   -- every LayerNorm of RWKV (rwkv.cpp, llama.cpp)
-- group norm (ln_x) epsilon per version: rwkv.cpp uses 1e-5 for v5 and
-- 64e-5 for v6/v7, as llama.cpp does for rwkv6/rwkv7
local GN_EPS = { ["v5.1"] = 1e-5, ["v5.2"] = 1e-5, v6 = 64e-5, v7 = 64e-5 }

local function f32(t)
  if t and t:dtype() ~= "f32" then return t:to("f32") end
  return t
end

--- rwkv.cpp files: the version is told by which keys exist (as rwkv.cpp).
-- The reader has checked the header's n_vocab, n_embed and n_layer against
-- emb.weight, head.weight and the blocks (csrc/formats/rwkvcpp.c).
function rwkv.hparams_rwkvcpp(src)
  local h = src.header
  local function has(k) return src.has("blocks.0." .. k) end
  local version = "v4"
  if has("att.ln_x.weight") then version = has("att.gate.weight") and "v5.2" or "v5.1" end
  if has("att.time_maa_x") then version = "v6" end
  if has("att.r_k") then version = "v7" end
  local hp = {
    arch = "rwkv" .. version:sub(2), version = version, layout = "rwkvcpp",
    n_vocab = h.n_vocab, dim = h.n_embed, n_layer = h.n_layer, n_ctx_train = 1 << 20,
    n_ff = src.tensor("blocks.0.ffn.key.weight"):size(1), n_head = 1,
  }
  local heads   -- the tensor whose first dimension is the number of heads
  if version == "v7" then heads = "blocks.0.att.r_k"
  elseif version ~= "v4" then heads = "blocks.0.att.time_decay" end
  if heads then
    hp.n_head = src.tensor(heads):size(1)
    if hp.dim % hp.n_head ~= 0 then
      error(string.format("%s: %s gives %d heads, which do not divide n_embed %d", src.path, heads, hp.n_head,
                          hp.dim), 0)
    end
  end
  hp.head_size = hp.dim // hp.n_head
  return hp
end

--- GGUF rwkv6 / rwkv7 (llama.cpp's converter layout). The sizes are
-- checked against the embedding and the first block before any block (or
-- a session) is made from them.
function rwkv.hparams(src)
  local arch = src.arch
  local k = hparams.reader(src)
  local hp = {
    arch = arch, version = arch == "rwkv6" and "v6" or "v7", layout = "gguf",
    dim = k.int("embedding_length"), n_layer = k.int("block_count"), n_ff = k.int("feed_forward_length"),
    n_ctx_train = k.int("context_length", 1 << 20), head_size = k.int("wkv.head_size"),
    eps = k.num("attention.layer_norm_epsilon", LN_EPS),
    rescale_every = k.int("rescale_every_n_layers", 0),
  }
  hparams.check_ranges(src, hp, {
    { "n_layer", "block_count", 1, 4096 }, { "n_ctx_train", "context_length", 1 },
    { "rescale_every", "rescale_every_n_layers", 0 }, { "eps", "attention.layer_norm_epsilon" },
  })
  local emb = src.tensor("token_embd.weight")
  hparams.check_dim(src, hp, emb)
  if hp.head_size < 1 or hp.dim % hp.head_size ~= 0 then
    error(string.format("%s: %s.wkv.head_size is %d (expected a divisor of embedding_length %d)", src.path, arch,
                        hp.head_size, hp.dim), 0)
  end
  hp.n_head = hp.dim // hp.head_size
  local key = src.tensor("blk.0.channel_mix_key.weight")
  if key:dim() ~= 2 or key:size(1) ~= hp.n_ff then
    error(string.format("%s: %s.feed_forward_length is %d, blk.0.channel_mix_key.weight has shape %s", src.path,
                        arch, hp.n_ff, table.concat(key:shape(), "x")), 0)
  end
  hp.n_vocab = emb:size(1)
  return hp
end

-- The parameters of layer l (0-based) under the block's own names.
local function layer_params_rwkvcpp(src, hp, l)
  local p = "blocks." .. l .. "."
  local function w(k) return src.tensor(p .. k) end
  local function opt(k) return src.has(p .. k) and src.tensor(p .. k) or nil end
  local v = hp.version
  local L = {
    ln1_w = w("ln1.weight"), ln1_b = w("ln1.bias"), ln2_w = w("ln2.weight"), ln2_b = w("ln2.bias"),
  }
  local att = {
    wr = w("att.receptance.weight"), wk = w("att.key.weight"), wv = w("att.value.weight"),
    wo = w("att.output.weight"), wg = opt("att.gate.weight"),
    lnx_w = opt("att.ln_x.weight"), lnx_b = opt("att.ln_x.bias"),
  }
  local ffn = { wk = w("ffn.key.weight"), wv = w("ffn.value.weight"), wr = opt("ffn.receptance.weight") }
  if v == "v4" or v == "v5.1" or v == "v5.2" then
    att.mix_k, att.mix_v, att.mix_r = w("att.time_mix_k"), w("att.time_mix_v"), w("att.time_mix_r")
    att.mix_g = opt("att.time_mix_g")
    att.decay = w("att.time_decay")                          -- v4 -exp(w), v5 exp(-exp(w))
    att.first = opt("att.time_first") or w("att.time_faaaa") -- v5.1 exp(u); raw u otherwise
    ffn.mix_k, ffn.mix_r = w("ffn.time_mix_k"), w("ffn.time_mix_r")
  elseif v == "v6" then
    att.maa_x = w("att.time_maa_x")
    att.maa = { w("att.time_maa_w"), w("att.time_maa_k"), w("att.time_maa_v"), w("att.time_maa_r"),
                w("att.time_maa_g") }
    att.maa_w1, att.maa_w2 = w("att.time_maa_w1"), w("att.time_maa_w2")
    att.decay, att.first = w("att.time_decay"), w("att.time_faaaa")
    att.decay_w1, att.decay_w2 = w("att.time_decay_w1"), w("att.time_decay_w2")
    ffn.mix_k, ffn.mix_r = w("ffn.time_maa_k"), w("ffn.time_maa_r")
  else -- v7
    att.maa = w("att.x_rwkvag")                              -- r w k v a g, fused
    for _, k in ipairs { "w0", "a0", "v0", "k_k", "k_a", "r_k", "w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2" } do
      att[k] = opt("att." .. k)
    end
    ffn.mix_k = w("ffn.x_k")
  end
  L.att, L.ffn = att, ffn
  return L
end

local function layer_params_gguf(src, hp, l)
  local p = "blk." .. l .. "."
  local function w(k) return src.tensor(p .. k .. ".weight") end
  local function b(k) return src.tensor(p .. k .. ".bias") end
  local L = { ln1_w = w("attn_norm"), ln1_b = b("attn_norm"), ln2_w = w("attn_norm_2"), ln2_b = b("attn_norm_2") }
  local att = {
    wr = w("time_mix_receptance"), wk = w("time_mix_key"), wv = w("time_mix_value"),
    wo = w("time_mix_output"), lnx_w = w("time_mix_ln"), lnx_b = b("time_mix_ln"),
  }
  -- mixing vectors, fused (v6: w k v r g; v7: r w k v a g) or, in older
  -- rwkv6 conversions, one tensor each
  if src.has(p .. "time_mix_lerp_fused.weight") then
    att.maa = w("time_mix_lerp_fused")
  else
    att.maa = {}
    for i, k in ipairs { "w", "k", "v", "r", "g" } do att.maa[i] = w("time_mix_lerp_" .. k) end
  end
  local ffn = { wk = w("channel_mix_key"), wv = w("channel_mix_value"), mix_k = w("channel_mix_lerp_k") }
  if hp.version == "v6" then
    att.wg = w("time_mix_gate")
    att.maa_x, att.maa_w1, att.maa_w2 = w("time_mix_lerp_x"), w("time_mix_w1"), w("time_mix_w2")
    att.decay, att.first = w("time_mix_decay"), w("time_mix_first")   -- raw w, raw u
    att.decay_w1, att.decay_w2 = w("time_mix_decay_w1"), w("time_mix_decay_w2")
    ffn.wr, ffn.mix_r = w("channel_mix_receptance"), w("channel_mix_lerp_r")
  else
    for _, k in ipairs { "w0", "a0", "v0", "k_k", "k_a", "r_k", "w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2" } do
      att[k] = w("time_mix_" .. k)
    end
  end
  L.att, L.ffn = att, ffn
  return L
end

-- 1-D parameters must be f32 for the blocks (FP16 files keep most in f32)
local VECTORS = { "mix_k", "mix_v", "mix_r", "mix_g", "maa_x", "decay", "first", "w0", "a0", "v0",
                  "k_k", "k_a", "r_k", "lnx_w", "lnx_b" }

--- The model's blocks, built once at load.
function rwkv.build(src, hp)
  local gguf = hp.layout == "gguf"
  local m = { hp = hp, layers = {}, lora = 0 }
  if gguf then
    m.emb = src.tensor("token_embd.weight")
    m.ln0_w, m.ln0_b = f32(src.tensor("token_embd_norm.weight")), f32(src.tensor("token_embd_norm.bias"))
    m.ln_out_w, m.ln_out_b = f32(src.tensor("output_norm.weight")), f32(src.tensor("output_norm.bias"))
    m.head = src.tensor("output.weight")
  else
    m.emb = src.tensor("emb.weight")
    m.ln0_w, m.ln0_b = f32(src.tensor("blocks.0.ln0.weight")), f32(src.tensor("blocks.0.ln0.bias"))
    m.ln_out_w, m.ln_out_b = f32(src.tensor("ln_out.weight")), f32(src.tensor("ln_out.bias"))
    m.head = src.tensor("head.weight")
  end
  hp.eps = hp.eps or LN_EPS
  for l = 0, hp.n_layer - 1 do
    local P = gguf and layer_params_gguf(src, hp, l) or layer_params_rwkvcpp(src, hp, l)
    local att = P.att
    for _, k in ipairs(VECTORS) do att[k] = f32(att[k]) end
    if type(att.maa) == "table" then
      for i, t in ipairs(att.maa) do att.maa[i] = f32(t) end
    else
      att.maa = f32(att.maa)
    end
    att.version, att.dim, att.n_head = hp.version, hp.dim, hp.n_head
    att.gn_eps, att.first_layer = GN_EPS[hp.version], l == 0
    if l == 0 then att.v0, att.v1, att.v2 = nil, nil, nil end  -- layer 0 sets v_first
    for _, k in ipairs { "maa_w1", "decay_w1", "w1", "a1", "g1", "v1" } do
      local t = att[k]
      if t then
        local width = t:size(1)
        if width > m.lora then m.lora = width end
      end
    end
    local ffn = P.ffn
    ffn.mix_k, ffn.mix_r = f32(ffn.mix_k), f32(ffn.mix_r)
    ffn.version, ffn.dim, ffn.n_ff = hp.version, hp.dim, hp.n_ff
    m.layers[l + 1] = {
      ln1_w = f32(P.ln1_w), ln1_b = f32(P.ln1_b), ln2_w = f32(P.ln2_w), ln2_b = f32(P.ln2_b),
      att = hparams.block(src, "layer " .. l .. ": ", rwkv_c.time_mix, att),
      ffn = hparams.block(src, "layer " .. l .. ": ", rwkv_c.channel_mix, ffn),
    }
  end
  return m
end

--- Per-session state: token shifts and WKV states of every layer.
function rwkv.state(m, opts)
  local hp = m.hp
  return rwkv_c.state {
    version = hp.version, n_layer = hp.n_layer, dim = hp.dim, n_head = hp.n_head,
    n_ff = hp.n_ff, lora = m.lora, n_batch = opts.n_batch,
  }
end

--- Runs tokens ids[first .. first+n-1], leaving the logits of the last one
-- in s.logits. The state restarts when the session is at position 0.
function rwkv.forward(m, s, ids, first, n)
  local hp, x, h, y, st = m.hp, s.x, s.h, s.y, s.state
  local blocks, head = s.blocks or blocks, s.head or head   -- a training session's recording ops (slm.train)
  if s.n_past == 0 then st:reset() end
  blocks.embed(x, m.emb, ids, first, n)
  blocks.layernorm(x, x, m.ln0_w, m.ln0_b, hp.eps, 1, n)
  for l, L in ipairs(m.layers) do
    blocks.layernorm(h, x, L.ln1_w, L.ln1_b, hp.eps, 1, n)
    -- s.work: a batch of sessions' scratch (slm.batch; st is then a SeqBatch)
    L.att:forward(y, h, st, l, n, s.work)
    blocks.add(x, y, 1, n)
    blocks.layernorm(h, x, L.ln2_w, L.ln2_b, hp.eps, 1, n)
    L.ffn:forward(y, h, st, l, n, s.work)
    blocks.add(x, y, 1, n)
    -- fp16-era checkpoints halve x every few layers (weights rescaled to match)
    if (hp.rescale_every or 0) > 0 and l % hp.rescale_every == 0 then blocks.scale(x, 0.5, 1, n) end
    local at = m.hooks and m.hooks:at(l, l, s, n)   -- model:hook("blk.N.out", fn)
    if at then at("out", x) end
  end
  local rows = (s.all_logits or s.embd) and 1 or n    -- every row for all logits or model:embed
  blocks.layernorm(h, x, m.ln_out_w, m.ln_out_b, hp.eps, rows, n - rows + 1)
  head(m, s, m.head, h, rows, n)
end

rwkv.all_logits = true   -- forward fills s.all_logits (slm.eval)
-- several sessions' rows in one forward (slm.batch): RWKV-7's mixes
rwkv.batched = function(m) return m.hp.version == "v7" end
rwkv.trainable = true    -- its forward records on a training tape (slm.train)

return rwkv
