--- slm.train.tape: reverse-mode differentiation over a model file's own
-- forward pass (docs/TRAINING.md).
--
-- A training session runs `def.forward(view, s, ids, 1, n)` of the model's
-- definition (models/llama.lua, ...) unchanged. Two things differ from
-- inference:
--   * s.blocks and s.head replace slm.core.blocks' row ops (embed, rmsnorm,
--     add, scale) and the head: each runs the same C op and pushes onto the
--     tape the closure that computes its backward;
--   * the model view's layers carry training twins of the C blocks (the
--     attention and feed-forward of the llama family), built from the
--     options the loader made the C block with (hparams.block records them),
--     with the C block's `forward` signature.
-- backward() runs the closures in reverse.
--
-- Gradients of activations: the forward overwrites buffers (the residual
-- stream x is updated in place, h and y are rewritten by every layer), so
-- a buffer's gradient is "the gradient of the value it holds at this point
-- of the walk". Walking back over an op that wrote buffer o: read grad(o),
-- accumulate into the inputs' gradients, then clear grad(o) (the value
-- before the write did not reach the loss through o) unless o was also an
-- input (in-place ops keep or transform it). Inputs a later op overwrites
-- are copied when recorded (the op's "saved" tensors).
--
-- Buffers are keyed by the op's index on the tape, so a second step of the
-- same shape reuses every tensor of the first (no allocation per step).
local core = require "slm.core"
local tensor = require "slm.tensor"

local K = core.train
local ops = core.ops
local cblocks = core.blocks

local M = {}

local Tape = {}
Tape.__index = Tape

--- new(params_grad) -> tape. params_grad maps each parameter tensor to its
-- gradient tensor (accumulated by the backward closures).
function M.new(pgrad)
  return setmetatable({ fns = {}, n = 0, bufs = {}, grads = setmetatable({}, { __mode = "k" }),
                        pgrad = pgrad, key = 0 }, Tape)
end

--- Starts a new forward: the closures of the previous one are dropped, the
-- buffers kept for reuse.
function Tape:reset()
  for i = self.n, 1, -1 do self.fns[i] = nil end
  self.n, self.key = 0, 0
end

--- push(fn): fn() runs when backward reaches this point.
function Tape:push(fn)
  self.n = self.n + 1
  self.fns[self.n] = fn
end

--- backward(): the closures in reverse order.
function Tape:backward()
  for i = self.n, 1, -1 do self.fns[i]() end
end

local function zero(t) K.zero(t) end
M.zero = zero

--- buf(rows, cols) -> a tensor owned by the tape at the next key (the
-- same one, same shape, at the same point of every forward).
function Tape:buf(rows, cols)
  self.key = self.key + 1
  local b = self.bufs[self.key]
  if not b or b:size(1) ~= rows or b:size(2) ~= cols then
    b = tensor.zeros { rows, cols }
    self.bufs[self.key] = b
  end
  return b
end

--- scratch(tag, rows, cols) -> a tensor shared by every op that asks with
-- the same tag and shape: for gradients an op's backward computes and
-- consumes before it returns (one layer's at a time), so a model of L
-- layers holds one set instead of L.
function Tape:scratch(tag, rows, cols)
  local key = tag .. ":" .. rows .. "x" .. cols
  local b = self.bufs[key]
  if not b then
    b = tensor.zeros { rows, cols }
    self.bufs[key] = b
  end
  return b
end

--- save(t) -> a tape-owned copy of the 2-D tensor t (its value now).
function Tape:save(t)
  local b = self:buf(t:size(1), t:size(2))
  b:copy_(t)
  return b
end

--- grad(t) -> the gradient buffer of activation or parameter t (zeros when
-- first asked for; a parameter's is the trainer's).
function Tape:grad(t)
  local g = self.pgrad[t] or self.grads[t]
  if not g then
    g = tensor.zeros(t:shape())
    self.grads[t] = g
  end
  return g
end

--- pgrad(t) -> the gradient of t if it is a trained parameter, else nil
-- (a constant: no gradient is computed for it).
function Tape:param_grad(t)
  if t == nil then return nil end
  return self.pgrad[t]
end

--- Clears the gradients of activations (between steps).
function Tape:clear_activation_grads()
  for _, g in pairs(self.grads) do zero(g) end
end

-- The row ops of slm.core.blocks, recording. Training runs every row of
-- the batch at once: first is 1 and n the rows of the buffers.
local function whole(t, first, n, what)
  if first ~= 1 or n ~= t:size(1) then
    error("train: " .. what .. " on rows " .. first .. ".." .. (first + n - 1) .. " of " .. t:size(1)
          .. " (a training forward runs every row)", 3)
  end
end

--- blocks(tape, s) -> the table of recording row ops for session s
-- (s.blocks), with s.ids32 the batch's input ids as an i32 tensor.
function M.blocks(tape, s)
  local B = {}

  function B.embed(x, W, ids, first, n)
    whole(x, first, n, "embed")
    cblocks.embed(x, W, ids, first, n)
    local gW = tape:param_grad(W)
    tape:push(function()
      local gx = tape:grad(x)
      if gW then K.embed_backward(gW, s.ids32, gx) end
      zero(gx)
    end)
  end

  function B.rmsnorm(out, x, w, eps, first, n)
    whole(x, first, n, "rmsnorm")
    local saved = tape:save(x)
    local tmp = rawequal(out, x) and tape:scratch("norm", x:size(1), x:size(2)) or nil
    cblocks.rmsnorm(out, x, w, eps, first, n)
    local gw = tape:param_grad(w)
    tape:push(function()
      local gout = tape:grad(out)
      if tmp then   -- in place: grad(x) replaces grad(out)
        K.rmsnorm_backward(tmp, gw, gout, saved, w, eps, false)
        gout:copy_(tmp)
      else
        K.rmsnorm_backward(tape:grad(x), gw, gout, saved, w, eps, true)
        zero(gout)
      end
    end)
  end

  function B.add(x, y, first, n, scale)
    whole(x, first, n, "add")
    cblocks.add(x, y, first, n, scale)
    tape:push(function()   -- x += scale y: grad(x) passes, grad(y) += scale grad(x)
      K.axpy(tape:grad(y), tape:grad(x), scale or 1)
    end)
  end

  function B.scale(x, c, first, n)
    whole(x, first, n, "scale")
    cblocks.scale(x, c, first, n)
    tape:push(function() ops.scale_(tape:grad(x), c) end)
  end

  function B.softcap(x, c, first, n)
    whole(x, first, n, "softcap")
    cblocks.softcap(x, c, first, n)
    local y = tape:save(x)   -- the capped values: the derivative is 1 - (y / c)^2
    tape:push(function()
      local g = tape:grad(x)
      K.softcap_backward(g, g, y, c, false)
    end)
  end
  function B.layernorm(out, x, w, b, eps, first, n)
    whole(x, first, n, "layernorm")
    local saved = tape:save(x)
    local tmp = rawequal(out, x) and tape:scratch("norm", x:size(1), x:size(2)) or nil
    cblocks.layernorm(out, x, w, b, eps, first, n)
    local gw, gb = tape:param_grad(w), tape:param_grad(b)
    tape:push(function()
      local gout = tape:grad(out)
      if tmp then   -- in place (RWKV's ln0 on the embedding)
        K.layernorm_backward(tmp, gw, gb, gout, saved, w, eps, false)
        gout:copy_(tmp)
      else
        K.layernorm_backward(tape:grad(x), gw, gb, gout, saved, w, eps, true)
        zero(gout)
      end
    end)
  end
  function B.linear()
    error("train: blocks.linear is for one row; the training head computes every row", 2)
  end

  return B
end

--- head(tape, s) -> s.head: logits of every row into s.all_logits
-- (rows, vocab) = h . Wᵀ, times the model's logit multiplier; the loss's
-- gradient is written over those logits (slm.core.train.xent), which are
-- then grad(s.all_logits) itself.
function M.head(tape, s)
  local K = tape.K or K   -- a LoRA trainer's products (slm.train.lora)
  return function(m, _, W, h, rows, n)
    if rows ~= 1 then error("train: the head runs every row", 2) end
    local logits = s.all_logits
    K.linear(logits, h, W, nil)
    if m.logit_mul then ops.scale_(logits, m.logit_mul) end
    local capped
    if m.logit_softcap then   -- gemma2: c tanh(logits / c), kept for its derivative
      cblocks.softcap(logits, m.logit_softcap, 1, logits:size(1))
      capped = tape:save(logits)
    end
    local gW = tape:param_grad(W)
    tape:push(function()
      -- logits hold d loss / d logits: back through the cap and the multiplier
      if capped then K.softcap_backward(logits, logits, capped, m.logit_softcap, false) end
      if m.logit_mul then ops.scale_(logits, m.logit_mul) end
      K.linear_backward(tape:grad(h), gW, nil, logits, h, W, true)
    end)
  end
end

-- Training twins of the C blocks -------------------------------------------

--- attention(tape, s, args) -> an object with the C attention block's
-- forward(y, h, state, step, n_past, n, work): q/k/v projections (+ biases),
-- q/k RMSNorm, RoPE at positions row % T, causal attention over each of the
-- s.B sequences of s.T rows, output projection; each recorded.
function M.attention(tape, s, args)
  local K = tape.K or K   -- a LoRA trainer's products (slm.train.lora)
  local H, KV, D = args.n_head, args.n_head_kv, args.head_dim
  local scale = args.scale or 1 / math.sqrt(D)
  local eps = args.norm_eps or 1e-6
  local full_norm = args.qk_norm == "full"
  local A = {}
  function A.forward(_, y, h, _, _, _, n)
    whole(h, 1, n, "attention")
    local T, Bn = s.T, s.B
    local hin = tape:save(h)
    local q, k, v = tape:buf(n, H * D), tape:buf(n, KV * D), tape:buf(n, KV * D)
    local qkv
    if args.wqkv then   -- phi3: one product, its columns q | k | v copied apart
      qkv = tape:buf(n, (H + 2 * KV) * D)
      K.linear(qkv, hin, args.wqkv, nil)
      q:copy_(qkv:narrow(2, 1, H * D))
      k:copy_(qkv:narrow(2, H * D + 1, KV * D))
      v:copy_(qkv:narrow(2, (H + KV) * D + 1, KV * D))
    else
      K.linear(q, hin, args.wq, args.bq)
      K.linear(k, hin, args.wk, args.bk)
      K.linear(v, hin, args.wv, args.bv)
    end
    -- q/k norm: per head (rows of D) or over the whole projection
    local qpre, kpre, qv, kv, qpv, kpv
    if args.q_norm then
      qpre, kpre = tape:save(q), tape:save(k)
      if full_norm then qv, kv, qpv, kpv = q, k, qpre, kpre
      else
        qv, kv = q:reshape(n * H, D), k:reshape(n * KV, D)
        qpv, kpv = qpre:reshape(n * H, D), kpre:reshape(n * KV, D)
      end
      cblocks.rmsnorm(qv, qpv, args.q_norm, eps, 1, qv:size(1))
      cblocks.rmsnorm(kv, kpv, args.k_norm, eps, 1, kv:size(1))
    end
    if args.rope then
      K.rope(q, T, H, D, args.rope)
      K.rope(k, T, KV, D, args.rope)
    end
    local o = tape:buf(n, H * D)
    local sopt = s.sdpa_opts[args] or { B = Bn, T = T, n_head = H, n_head_kv = KV, head_dim = D, scale = scale,
                                        window = args.window or 0, softcap = args.softcap or 0 }
    sopt.B, sopt.T = Bn, T
    s.sdpa_opts[args] = sopt
    local nb = K.sdpa_saved_bytes(sopt)
    local saved = tape:buf(1, math.max(1, (nb + 3) // 4))
    K.sdpa(o, q, k, v, sopt, saved)
    K.linear(y, o, args.wo, args.bo)
    local gq, gk = tape:scratch("gq", n, H * D), tape:scratch("gk", n, KV * D)
    local gv, go = tape:scratch("gv", n, KV * D), tape:scratch("go", n, H * D)
    local gtq, gtk = args.q_norm and tape:scratch("gtq", n, H * D), args.q_norm and tape:scratch("gtk", n, KV * D)
    tape:push(function()
      local gy = tape:grad(y)
      K.linear_backward(go, tape:param_grad(args.wo), tape:param_grad(args.bo), gy, o, args.wo, false)
      zero(gy)
      K.sdpa_backward(gq, gk, gv, go, q, k, v, o, sopt, saved, false)
      if args.rope then
        K.rope_backward(gq, T, H, D, args.rope)
        K.rope_backward(gk, T, KV, D, args.rope)
      end
      local dq, dk = gq, gk
      if args.q_norm then
        local shape_q = full_norm and gq or gq:reshape(n * H, D)
        local shape_k = full_norm and gk or gk:reshape(n * KV, D)
        local tq = full_norm and gtq or gtq:reshape(n * H, D)
        local tk = full_norm and gtk or gtk:reshape(n * KV, D)
        K.rmsnorm_backward(tq, tape:param_grad(args.q_norm), shape_q, qpv, args.q_norm, eps, false)
        K.rmsnorm_backward(tk, tape:param_grad(args.k_norm), shape_k, kpv, args.k_norm, eps, false)
        dq, dk = gtq, gtk
      end
      local gh = tape:grad(h)
      if qkv then   -- the three gradients side by side as the fused product's
        local g = qkv   -- the forward's qkv is not needed any more: reuse it
        g:narrow(2, 1, H * D):copy_(dq)
        g:narrow(2, H * D + 1, KV * D):copy_(dk)
        g:narrow(2, (H + KV) * D + 1, KV * D):copy_(gv)
        K.linear_backward(gh, tape:param_grad(args.wqkv), nil, g, hin, args.wqkv, true)
        return
      end
      K.linear_backward(gh, tape:param_grad(args.wq), tape:param_grad(args.bq), dq, hin, args.wq, true)
      K.linear_backward(gh, tape:param_grad(args.wk), tape:param_grad(args.bk), dk, hin, args.wk, true)
      K.linear_backward(gh, tape:param_grad(args.wv), tape:param_grad(args.bv), gv, hin, args.wv, true)
    end)
  end
  return A
end

--- ffn(tape, s, args) -> the feed-forward's twin: down(act(gate h) * up h)
-- with act silu (SwiGLU) or tanh-GELU (GeGLU), or down(act(up h)).
function M.ffn(tape, s, args)
  local K = tape.K or K   -- a LoRA trainer's products (slm.train.lora)
  if not args.gate and not args.gate_up then error("train: an ungated feed-forward has no backward yet", 2) end
  local F = args.n_ff
  local act = args.act == "gelu" and "geglu" or "swiglu"
  local fwd, bwd = K[act], K[act .. "_backward"]
  local A = {}
  function A.forward(_, y, h, _, n)
    whole(h, 1, n, "ffn")
    local hin = tape:save(h)
    local g, u, a = tape:buf(n, F), tape:buf(n, F), tape:buf(n, F)
    local gu
    if args.gate_up then   -- phi3: gate rows then up rows in one product
      gu = tape:buf(n, 2 * F)
      K.linear(gu, hin, args.gate_up, nil)
      g:copy_(gu:narrow(2, 1, F))
      u:copy_(gu:narrow(2, F + 1, F))
    else
      K.linear(g, hin, args.gate, nil)
      K.linear(u, hin, args.up, nil)
    end
    fwd(a, g, u)
    K.linear(y, a, args.down, nil)
    local ga, gg, gup = tape:scratch("ga", n, F), tape:scratch("gg", n, F), tape:scratch("gup", n, F)
    tape:push(function()
      local gy = tape:grad(y)
      K.linear_backward(ga, tape:param_grad(args.down), nil, gy, a, args.down, false)
      zero(gy)
      bwd(gg, gup, ga, g, u, false)
      local gh = tape:grad(h)
      if gu then
        gu:narrow(2, 1, F):copy_(gg)
        gu:narrow(2, F + 1, F):copy_(gup)
        K.linear_backward(gh, tape:param_grad(args.gate_up), nil, gu, hin, args.gate_up, true)
        return
      end
      K.linear_backward(gh, tape:param_grad(args.gate), nil, gg, hin, args.gate, true)
      K.linear_backward(gh, tape:param_grad(args.up), nil, gup, hin, args.up, true)
    end)
  end
  return A
end

--- mamba(tape, s, args) -> the Mamba-1 mixer's twin (slm.core.train
-- mamba_forward/backward: the selective scan over each of the s.B
-- sequences from a zero state, states checkpointed every 64 tokens and
-- recomputed in the backward; csrc/train/mamba_grad.h).
function M.mamba(tape, s, args)
  if args.version ~= 1 then error("train: Mamba-2 mixers have no backward yet", 2) end
  if args.dt_b_c_rms then error("train: Falcon-Mamba's dt/B/C RMS norms have no backward yet", 2) end
  local w = { ssm_in = args.ssm_in, ssm_conv1d = args.conv_w, ssm_conv1d_b = args.conv_b, ssm_x = args.ssm_x,
              ssm_dt = args.ssm_dt, ssm_dt_b = args.dt_b, ssm_a = args.A, ssm_d = args.D, ssm_out = args.ssm_out }
  local g = {}
  for k, t in pairs(w) do
    g[k] = tape:param_grad(t)
    if not g[k] then error("train: the mixer's " .. k .. " is not a trained parameter", 2) end
  end
  local A = {}
  function A.forward(_, y, h, _, _, n)
    whole(h, 1, n, "mamba")
    local opts = { B = s.B, T = s.T, d_inner = args.d_inner, d_state = args.d_state, d_conv = args.d_conv,
                   dt_rank = args.dt_rank }
    local hin = tape:save(h)
    local saved = tape:buf(1, math.max(1, (K.mamba_saved_bytes(opts) + 3) // 4))
    K.mamba_forward(w, hin, y, opts, saved)
    tape:push(function()
      local gy = tape:grad(y)
      K.mamba_backward(w, g, hin, gy, tape:grad(h), opts, saved, true)
      zero(gy)
    end)
  end
  return A
end

-- The tensors of a block's options that are trained parameters, under
-- their GGUF names without the "blk.N." prefix (the names the RWKV-7
-- kernels take), and their gradients.
local function named(tape, s, args)
  local w, g = {}, {}
  for _, t in pairs(args) do
    local name = tensor.is_tensor(t) and s.param_name[t]
    if name then
      local short = name:gsub("^blk%.%d+%.", "")
      w[short], g[short] = t, tape:param_grad(t)
    end
  end
  return w, g
end

--- rwkv7_tmix(tape, s, args) / rwkv7_cmix(tape, s, args): RWKV-7's time
-- mix and channel mix twins (slm.core.train.rwkv7_*: each of the s.B
-- sequences from a zero state; WKV states checkpointed every 16 tokens).
-- The first layer's value is every later layer's v_first: its gradient
-- (s.dv_first) is cleared by the first layer's forward, added to by the
-- later layers' backward and read by the first layer's backward, which
-- runs after theirs.
function M.rwkv7_tmix(tape, s, args)
  if args.version ~= "v7" then error("train: RWKV " .. tostring(args.version) .. " has no backward (RWKV-7 only)", 2) end
  local w, g = named(tape, s, args)
  local A = {}
  function A.forward(_, y, h, _, _, n)
    whole(h, 1, n, "time mix")
    local opts = { B = s.B, T = s.T, head_size = args.dim // args.n_head, first_layer = args.first_layer,
                   gn_eps = args.gn_eps }
    local vf, dvf = s.v_first, s.dv_first
    if args.first_layer then zero(dvf) end
    local saved = tape:buf(1, math.max(1, (K.rwkv7_tmix_saved_bytes(w, opts) + 3) // 4))
    K.rwkv7_tmix_forward(w, h, y, vf, opts, saved)
    tape:push(function()
      local gy = tape:grad(y)
      K.rwkv7_tmix_backward(w, g, saved, gy, tape:grad(h), dvf, opts, true)
      zero(gy)
    end)
  end
  return A
end

function M.rwkv7_cmix(tape, s, args)
  local w, g = named(tape, s, args)
  local A = {}
  function A.forward(_, y, h, _, _, n)
    whole(h, 1, n, "channel mix")
    local opts = { B = s.B, T = s.T }
    local saved = tape:buf(1, math.max(1, (K.rwkv7_cmix_saved_bytes(w, opts) + 3) // 4))
    K.rwkv7_cmix_forward(w, h, y, opts, saved)
    tape:push(function()
      local gy = tape:grad(y)
      K.rwkv7_cmix_backward(w, g, saved, gy, tape:grad(h), opts, true)
      zero(gy)
    end)
  end
  return A
end

return M
