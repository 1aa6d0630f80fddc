/* `slm.core.train`: the backward kernels, the f32 linear layer, the fused
 * softmax-cross-entropy and AdamW of train/grad.h.
 *
 *   linear(y, x, W [, b])                        y = x W^T + b
 *   linear_backward(dx, dW, db, dy, x, W, acc)   dx (+)= dy W, dW += dy^T x,
 *                                                db += sum_rows dy (nil: not wanted)
 *   embed_backward(dW, ids, dy)                  dW[ids[i]] += dy[i]
 *   rmsnorm_backward(dx, dw, dy, x, w, eps, acc) (dx, dw, w may be nil)
 *   rope(x, T, n_heads, head_dim, opts)          in place, position of row r = r % T
 *   rope_backward(dx, T, n_heads, head_dim, opts)
 *   swiglu(out, g, u) / geglu(out, g, u)         out = act(g) u
 *   swiglu_backward(dg, du, dout, g, u, acc) / geglu_backward(...)
 *   silu_backward(dx, dy, x, acc) / gelu_backward(dx, dy, x, acc)
 *   xent(logits, targets [, scale = 1]) -> loss  logits <- scale (softmax - onehot)
 *   sumsq(t) -> number   axpy(dst, src, s)   scale(t, s)   zero(t)
 *   adamw(p, g, m, v, {lr =, step =, beta1 = 0.9, beta2 = 0.999, eps = 1e-8,
 *                      weight_decay = 0.01, grad_scale = 1})
 *
 * Tensors are f32 and contiguous; a tensor's rows are its last dimension
 * (x of shape (B, T, E) is B*T rows of E). Outputs must be writable and
 * must not share memory with the inputs, except that the elementwise ops
 * may write over an input of the same size (out = g, dg = g). ids and
 * targets are an i32 tensor or a Lua list of integers (0-based token ids,
 * as blocks.embed takes them; a negative target is an ignored row). `acc`
 * is a boolean: add into the input gradients (true) or overwrite them.
 * Misuse raises "bad argument #i to 'name' (...)". */
#include <stdarg.h>
#include <string.h>

#include "../core/pool.h"
#include "../train/adamw.h"
#include "../train/grad.h"
#include "../train/layernorm_grad.h"
#include "bind.h"

/* "bad argument #i to 'fn' (msg)", whatever name the caller used */
static int argfail(lua_State *L, const char *fn, int i, const char *fmt, ...)
{
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return luaL_error(L, "bad argument #%d to '%s' (%s)", i, fn, msg);
}

static slm_pool *pool_of(lua_State *L)
{
    slm_error err = {0};
    slm_pool *p = slm_pool_default(&err);
    if (!p) slm_bind_error(L, &err);
    return p;
}

/* A contiguous f32 tensor at i; writable when out. */
static slm_tensor *f32_arg(lua_State *L, const char *fn, int i, int out)
{
    if (!luaL_testudata(L, i, SLM_TENSOR_MT))
        argfail(L, fn, i, "slm.Tensor expected, got %s", luaL_typename(L, i));
    slm_tensor *t = slm_bind_check_tensor(L, i);
    if (t->dtype != SLM_DTYPE_F32) argfail(L, fn, i, "expected an f32 tensor, got %s", slm_dtype_name(t->dtype));
    if (!slm_tensor_is_contiguous(t)) argfail(L, fn, i, "expected a contiguous tensor");
    if (out && t->storage->readonly) argfail(L, fn, i, "tensor is read-only");
    return t;
}

static slm_tensor *opt_f32_arg(lua_State *L, const char *fn, int i, int out)
{
    return lua_isnoneornil(L, i) ? NULL : f32_arg(L, fn, i, out);
}

static int64_t last_dim(const slm_tensor *t)
{
    return t->shape[t->ndim - 1];
}

static float *fdata(const slm_tensor *t)
{
    return t ? slm_tensor_data(t) : NULL;
}

/* t (at i) must hold n values, rows of `width` when width > 0 */
static void check_size(lua_State *L, const char *fn, int i, const slm_tensor *t, int64_t n, int64_t width,
                       const char *what)
{
    if (!t) return;
    if (width > 0 && (slm_tensor_numel(t) != n || last_dim(t) != width))
        argfail(L, fn, i, "%s: expected %lld values in rows of %lld, got %lld in rows of %lld", what,
                (long long)n, (long long)width, (long long)slm_tensor_numel(t), (long long)last_dim(t));
    if (width <= 0 && slm_tensor_numel(t) != n)
        argfail(L, fn, i, "%s: expected %lld values, got %lld", what, (long long)n, (long long)slm_tensor_numel(t));
}

/* output a (at i) and b (at j) must not share bytes; the same range is
 * allowed when same_ok (elementwise ops in place) */
static void check_apart(lua_State *L, const char *fn, int i, const slm_tensor *a, int j, const slm_tensor *b,
                        int same_ok)
{
    if (!a || !b || a->storage != b->storage) return;
    const size_t a0 = a->offset, a1 = a0 + slm_tensor_nbytes(a), b0 = b->offset, b1 = b0 + slm_tensor_nbytes(b);
    if (same_ok && a0 == b0 && a1 == b1) return;
    if (a0 < b1 && b0 < a1) argfail(L, fn, i, "shares memory with argument #%d", j);
}

/* the accumulate flag: a boolean (nil is false) */
static int flag_arg(lua_State *L, const char *fn, int i)
{
    if (lua_isnoneornil(L, i)) return 0;
    if (!lua_isboolean(L, i)) argfail(L, fn, i, "boolean expected, got %s", luaL_typename(L, i));
    return lua_toboolean(L, i);
}

static void raise_status(lua_State *L, slm_status st, const slm_error *err)
{
    if (st != SLM_OK) slm_bind_error(L, err);
}

/* entry k (0-based) of the ids at i is x, outside lo..hi (lo = INT32_MIN:
 * no lower bound, negative targets are ignored rows) */
static void bad_id(lua_State *L, const char *fn, int i, const char *what, lua_Integer x, int64_t k, int64_t lo,
                   int64_t hi)
{
    if (lo == INT32_MIN && x >= lo)
        argfail(L, fn, i, "%s %lld at index %lld is not below %lld", what, (long long)x, (long long)k + 1,
                (long long)hi + 1);
    argfail(L, fn, i, "%s %lld at index %lld outside %lld..%lld", what, (long long)x, (long long)k + 1,
            (long long)lo, (long long)hi);
}

/* n integers at i (an i32 tensor or a Lua list) in lo..hi, as an int32
 * array owned by the GC (a userdata left on the stack) or the tensor's */
static const int32_t *ids_arg(lua_State *L, const char *fn, int i, int64_t n, int64_t lo, int64_t hi,
                              const char *what)
{
    const int32_t *ids;
    if (lua_istable(L, i)) {
        if ((int64_t)luaL_len(L, i) != n)
            argfail(L, fn, i, "expected %lld %ss, got a list of %lld", (long long)n, what, (long long)luaL_len(L, i));
        int32_t *v = lua_newuserdatauv(L, (size_t)(n > 0 ? n : 1) * sizeof *v, 0);
        for (int64_t k = 0; k < n; k++) {
            int isint;
            lua_geti(L, i, k + 1);
            lua_Integer x = lua_tointegerx(L, -1, &isint);
            lua_pop(L, 1);
            if (!isint) argfail(L, fn, i, "%s at index %lld is not an integer", what, (long long)k + 1);
            if (x < lo || x > hi) bad_id(L, fn, i, what, x, k, lo, hi);
            v[k] = (int32_t)x;
        }
        ids = v;
    } else {
        if (!luaL_testudata(L, i, SLM_TENSOR_MT))
            argfail(L, fn, i, "i32 tensor or list of integers expected, got %s", luaL_typename(L, i));
        slm_tensor *t = slm_bind_check_tensor(L, i);
        if (t->dtype != SLM_DTYPE_I32 || !slm_tensor_is_contiguous(t))
            argfail(L, fn, i, "expected a contiguous i32 tensor, got %s", slm_dtype_name(t->dtype));
        if (slm_tensor_numel(t) != n)
            argfail(L, fn, i, "expected %lld %ss, got %lld", (long long)n, what, (long long)slm_tensor_numel(t));
        ids = slm_tensor_data(t);
        for (int64_t k = 0; k < n; k++)
            if (ids[k] < lo || ids[k] > hi) bad_id(L, fn, i, what, ids[k], k, lo, hi);
    }
    return ids;
}

/* --- linear ------------------------------------------------------------------- */

static int l_linear(lua_State *L)
{
    const char *fn = "linear";
    slm_tensor *y = f32_arg(L, fn, 1, 1), *x = f32_arg(L, fn, 2, 0), *W = f32_arg(L, fn, 3, 0);
    slm_tensor *b = opt_f32_arg(L, fn, 4, 0);
    if (W->ndim != 2) argfail(L, fn, 3, "expected a 2-D weight (out, in), got %d-D", W->ndim);
    const int64_t out = W->shape[0], in = W->shape[1], n = slm_tensor_numel(x) / last_dim(x);
    if (last_dim(x) != in) argfail(L, fn, 2, "rows of %lld, the weight takes %lld", (long long)last_dim(x), (long long)in);
    check_size(L, fn, 1, y, n * out, out, "output");
    check_size(L, fn, 4, b, out, 0, "bias");
    check_apart(L, fn, 1, y, 2, x, 0);
    check_apart(L, fn, 1, y, 3, W, 0);
    check_apart(L, fn, 1, y, 4, b, 0);
    slm_error err = {0};
    raise_status(L, slm_grad_linear(pool_of(L), fdata(y), fdata(x), fdata(W), fdata(b), n, in, out, &err), &err);
    return 0;
}

static int l_linear_backward(lua_State *L)
{
    const char *fn = "linear_backward";
    slm_tensor *dx = opt_f32_arg(L, fn, 1, 1), *dW = opt_f32_arg(L, fn, 2, 1), *db = opt_f32_arg(L, fn, 3, 1);
    slm_tensor *dy = f32_arg(L, fn, 4, 0), *x = f32_arg(L, fn, 5, 0), *W = f32_arg(L, fn, 6, 0);
    const int acc = flag_arg(L, fn, 7);
    if (W->ndim != 2) argfail(L, fn, 6, "expected a 2-D weight (out, in), got %d-D", W->ndim);
    const int64_t out = W->shape[0], in = W->shape[1], n = slm_tensor_numel(dy) / last_dim(dy);
    if (last_dim(dy) != out)
        argfail(L, fn, 4, "rows of %lld, the weight gives %lld", (long long)last_dim(dy), (long long)out);
    check_size(L, fn, 5, x, n * in, in, "input");
    check_size(L, fn, 1, dx, n * in, in, "input gradient");
    check_size(L, fn, 2, dW, out * in, in, "weight gradient");
    check_size(L, fn, 3, db, out, 0, "bias gradient");
    slm_tensor *const args[7] = {dx, dW, db, dy, x, W, NULL};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++)
            if (j != i) check_apart(L, fn, i + 1, args[i], j + 1, args[j], 0);
    slm_error err = {0};
    raise_status(L, slm_grad_linear_backward(pool_of(L), fdata(dx), fdata(dW), fdata(db), fdata(dy), fdata(x),
                                             fdata(W), n, in, out, acc, &err), &err);
    return 0;
}

/* --- embedding, rmsnorm ------------------------------------------------------------- */

static int l_embed_backward(lua_State *L)
{
    const char *fn = "embed_backward";
    slm_tensor *dW = f32_arg(L, fn, 1, 1);
    slm_tensor *dy = f32_arg(L, fn, 3, 0);
    if (dW->ndim != 2) argfail(L, fn, 1, "expected a 2-D gradient (vocab, dim), got %d-D", dW->ndim);
    const int64_t V = dW->shape[0], dim = dW->shape[1], n = slm_tensor_numel(dy) / last_dim(dy);
    if (last_dim(dy) != dim)
        argfail(L, fn, 3, "rows of %lld, the embedding has %lld", (long long)last_dim(dy), (long long)dim);
    const int32_t *ids = ids_arg(L, fn, 2, n, 0, V - 1, "id");
    check_apart(L, fn, 1, dW, 3, dy, 0);
    slm_error err = {0};
    raise_status(L, slm_grad_embed_backward(pool_of(L), fdata(dW), V, dim, ids, fdata(dy), n, &err), &err);
    return 0;
}

static int l_rmsnorm_backward(lua_State *L)
{
    const char *fn = "rmsnorm_backward";
    slm_tensor *dx = opt_f32_arg(L, fn, 1, 1), *dw = opt_f32_arg(L, fn, 2, 1);
    slm_tensor *dy = f32_arg(L, fn, 3, 0), *x = f32_arg(L, fn, 4, 0), *w = opt_f32_arg(L, fn, 5, 0);
    const float eps = (float)luaL_checknumber(L, 6);
    const int acc = flag_arg(L, fn, 7);
    const int64_t n = last_dim(x), rows = slm_tensor_numel(x) / n;
    check_size(L, fn, 3, dy, rows * n, n, "output gradient");
    check_size(L, fn, 1, dx, rows * n, n, "input gradient");
    check_size(L, fn, 5, w, n, 0, "weight");
    check_size(L, fn, 2, dw, n, 0, "weight gradient");
    if (dw && !w) argfail(L, fn, 2, "a weight gradient without a weight (argument #5 is nil)");
    slm_tensor *const args[5] = {dx, dw, dy, x, w};
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 5; j++)
            if (j != i) check_apart(L, fn, i + 1, args[i], j + 1, args[j], 0);
    slm_error err = {0};
    raise_status(L, slm_grad_rmsnorm_backward(pool_of(L), fdata(dx), fdata(dw), fdata(dy), fdata(x), fdata(w),
                                              rows, n, eps, acc, &err), &err);
    return 0;
}

/* layernorm_backward(dx|nil, dw|nil, db|nil, dy, x, w|nil, eps, acc): LayerNorm's
 * backward (train/layernorm_grad.h); the row statistics are recomputed from x */
static int l_layernorm_backward(lua_State *L)
{
    const char *fn = "layernorm_backward";
    slm_tensor *dx = opt_f32_arg(L, fn, 1, 1), *dw = opt_f32_arg(L, fn, 2, 1), *db = opt_f32_arg(L, fn, 3, 1);
    slm_tensor *dy = f32_arg(L, fn, 4, 0), *x = f32_arg(L, fn, 5, 0), *w = opt_f32_arg(L, fn, 6, 0);
    const float eps = (float)luaL_checknumber(L, 7);
    const int acc = flag_arg(L, fn, 8);
    const int64_t n = last_dim(x), rows = slm_tensor_numel(x) / n;
    check_size(L, fn, 4, dy, rows * n, n, "output gradient");
    check_size(L, fn, 1, dx, rows * n, n, "input gradient");
    check_size(L, fn, 6, w, n, 0, "weight");
    check_size(L, fn, 2, dw, n, 0, "weight gradient");
    check_size(L, fn, 3, db, n, 0, "bias gradient");
    if (dw && !w) argfail(L, fn, 2, "a weight gradient without a weight (argument #6 is nil)");
    if (!dx) return 0;
    slm_tensor *const args[6] = {dx, dw, db, dy, x, w};
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 6; j++)
            if (j != i) check_apart(L, fn, i + 1, args[i], j + 1, args[j], j == 3 && i == 0);
    slm_layernorm_backward(fdata(dx), fdata(dw), fdata(db), fdata(dy), fdata(x), fdata(w), rows, n, eps, acc);
    return 0;
}

/* --- rope --------------------------------------------------------------------------- */

static int rope_call(lua_State *L, const char *fn, int inverse)
{
    slm_tensor *x = f32_arg(L, fn, 1, 1);
    const lua_Integer T = luaL_checkinteger(L, 2), H = luaL_checkinteger(L, 3), D = luaL_checkinteger(L, 4);
    luaL_checktype(L, 5, LUA_TTABLE);
    if (H < 1 || H > (1 << 20)) argfail(L, fn, 3, "n_heads %lld out of range 1..1048576", (long long)H);
    if (D < 2 || D > (1 << 20)) argfail(L, fn, 4, "head_dim %lld out of range 2..1048576", (long long)D);
    if (slm_tensor_numel(x) % (H * D) != 0)
        argfail(L, fn, 1, "%lld values are not whole tokens of %lld heads of %lld", (long long)slm_tensor_numel(x),
                (long long)H, (long long)D);
    const int64_t n_tok = slm_tensor_numel(x) / (H * D);
    if (T < 1 || n_tok % T != 0)
        argfail(L, fn, 2, "%lld tokens are not whole sequences of T = %lld", (long long)n_tok, (long long)T);
    slm_rope_params p;
    slm_tensor *ff = slm_bind_rope_opts(L, 5, (int)D, &p);
    if (p.n_rot < 2 || p.n_rot > D || p.n_rot % 2)
        argfail(L, fn, 5, "n_rot %d must be even and in 2..head_dim (%lld)", p.n_rot, (long long)D);
    if (ff) {
        if (ff->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(ff) || slm_tensor_numel(ff) != p.n_rot / 2)
            argfail(L, fn, 5, "factors must hold n_rot / 2 = %d contiguous f32 values", p.n_rot / 2);
        p.freq_factors = slm_tensor_data(ff);
    }
    slm_error err = {0};
    raise_status(L, inverse ? slm_grad_rope_backward(pool_of(L), fdata(x), n_tok, T, H, D, &p, &err)
                            : slm_grad_rope(pool_of(L), fdata(x), n_tok, T, H, D, &p, &err), &err);
    return 0;
}

static int l_rope(lua_State *L)
{
    return rope_call(L, "rope", 0);
}

static int l_rope_backward(lua_State *L)
{
    return rope_call(L, "rope_backward", 1);
}

/* --- activations --------------------------------------------------------------------- */

/* (out, g, u) of one size; out may be g or u */
static int glu_call(lua_State *L, const char *fn, int gelu)
{
    slm_tensor *out = f32_arg(L, fn, 1, 1), *g = f32_arg(L, fn, 2, 0), *u = f32_arg(L, fn, 3, 0);
    const int64_t n = slm_tensor_numel(g);
    check_size(L, fn, 3, u, n, 0, "up");
    check_size(L, fn, 1, out, n, 0, "output");
    check_apart(L, fn, 1, out, 2, g, 1);
    check_apart(L, fn, 1, out, 3, u, 1);
    if (gelu) slm_grad_geglu(pool_of(L), fdata(out), fdata(g), fdata(u), n);
    else slm_grad_swiglu(pool_of(L), fdata(out), fdata(g), fdata(u), n);
    return 0;
}

static int l_swiglu(lua_State *L) { return glu_call(L, "swiglu", 0); }
static int l_geglu(lua_State *L) { return glu_call(L, "geglu", 1); }

/* (dg, du, dout, g, u, acc) */
static int glu_backward_call(lua_State *L, const char *fn, int gelu)
{
    slm_tensor *dg = f32_arg(L, fn, 1, 1), *du = f32_arg(L, fn, 2, 1);
    slm_tensor *dout = f32_arg(L, fn, 3, 0), *g = f32_arg(L, fn, 4, 0), *u = f32_arg(L, fn, 5, 0);
    const int acc = flag_arg(L, fn, 6);
    const int64_t n = slm_tensor_numel(g);
    check_size(L, fn, 5, u, n, 0, "up");
    check_size(L, fn, 3, dout, n, 0, "output gradient");
    check_size(L, fn, 1, dg, n, 0, "gate gradient");
    check_size(L, fn, 2, du, n, 0, "up gradient");
    check_apart(L, fn, 1, dg, 2, du, 0);
    slm_tensor *const in[3] = {dout, g, u};
    for (int j = 0; j < 3; j++) {
        check_apart(L, fn, 1, dg, j + 3, in[j], 1);
        check_apart(L, fn, 2, du, j + 3, in[j], 1);
    }
    if (gelu) slm_grad_geglu_backward(pool_of(L), fdata(dg), fdata(du), fdata(dout), fdata(g), fdata(u), n, acc);
    else slm_grad_swiglu_backward(pool_of(L), fdata(dg), fdata(du), fdata(dout), fdata(g), fdata(u), n, acc);
    return 0;
}

static int l_swiglu_backward(lua_State *L) { return glu_backward_call(L, "swiglu_backward", 0); }
static int l_geglu_backward(lua_State *L) { return glu_backward_call(L, "geglu_backward", 1); }

/* (dx, dy, x, acc) */
static int act_backward_call(lua_State *L, const char *fn, int gelu)
{
    slm_tensor *dx = f32_arg(L, fn, 1, 1), *dy = f32_arg(L, fn, 2, 0), *x = f32_arg(L, fn, 3, 0);
    const int acc = flag_arg(L, fn, 4);
    const int64_t n = slm_tensor_numel(x);
    check_size(L, fn, 2, dy, n, 0, "output gradient");
    check_size(L, fn, 1, dx, n, 0, "input gradient");
    check_apart(L, fn, 1, dx, 2, dy, 1);
    check_apart(L, fn, 1, dx, 3, x, 1);
    if (gelu) slm_grad_gelu_backward(pool_of(L), fdata(dx), fdata(dy), fdata(x), n, acc);
    else slm_grad_silu_backward(pool_of(L), fdata(dx), fdata(dy), fdata(x), n, acc);
    return 0;
}

/* softcap_backward(dx, dy, y, cap, acc): y the forward's capped output */
static int l_softcap_backward(lua_State *L)
{
    const char *fn = "softcap_backward";
    slm_tensor *dx = f32_arg(L, fn, 1, 1), *dy = f32_arg(L, fn, 2, 0), *y = f32_arg(L, fn, 3, 0);
    const lua_Number cap = luaL_checknumber(L, 4);
    if (!(cap > 0)) argfail(L, fn, 4, "the cap must be positive");
    const int acc = flag_arg(L, fn, 5);
    const int64_t n = slm_tensor_numel(y);
    check_size(L, fn, 2, dy, n, 0, "output gradient");
    check_size(L, fn, 1, dx, n, 0, "input gradient");
    check_apart(L, fn, 1, dx, 2, dy, 1);
    check_apart(L, fn, 1, dx, 3, y, 1);
    slm_grad_softcap_backward(pool_of(L), fdata(dx), fdata(dy), fdata(y), (float)cap, n, acc);
    return 0;
}

static int l_silu_backward(lua_State *L) { return act_backward_call(L, "silu_backward", 0); }
static int l_gelu_backward(lua_State *L) { return act_backward_call(L, "gelu_backward", 1); }

/* --- loss and buffers ------------------------------------------------------------------- */

static int l_xent(lua_State *L)
{
    const char *fn = "xent";
    slm_tensor *logits = f32_arg(L, fn, 1, 1);
    const float scale = (float)luaL_optnumber(L, 3, 1.0);
    const int64_t V = last_dim(logits), rows = slm_tensor_numel(logits) / V;
    if (V > INT32_MAX) argfail(L, fn, 1, "rows of %lld logits (at most %d)", (long long)V, INT32_MAX);
    const int32_t *t = ids_arg(L, fn, 2, rows, INT32_MIN, V - 1, "target");
    double loss = 0;
    slm_error err = {0};
    raise_status(L, slm_grad_xent(pool_of(L), fdata(logits), t, rows, V, scale, &loss, &err), &err);
    lua_pushnumber(L, loss);
    return 1;
}

static int l_sumsq(lua_State *L)
{
    slm_tensor *t = f32_arg(L, "sumsq", 1, 0);
    double s = 0;
    slm_error err = {0};
    raise_status(L, slm_grad_sumsq(pool_of(L), fdata(t), slm_tensor_numel(t), &s, &err), &err);
    lua_pushnumber(L, s);
    return 1;
}

static int l_axpy(lua_State *L)
{
    const char *fn = "axpy";
    slm_tensor *dst = f32_arg(L, fn, 1, 1), *src = f32_arg(L, fn, 2, 0);
    const float s = (float)luaL_checknumber(L, 3);
    check_size(L, fn, 2, src, slm_tensor_numel(dst), 0, "source");
    check_apart(L, fn, 1, dst, 2, src, 1);
    slm_grad_axpy(pool_of(L), fdata(dst), fdata(src), s, slm_tensor_numel(dst));
    return 0;
}

static int l_scale(lua_State *L)
{
    slm_tensor *t = f32_arg(L, "scale", 1, 1);
    slm_grad_scale(pool_of(L), fdata(t), (float)luaL_checknumber(L, 2), slm_tensor_numel(t));
    return 0;
}

static int l_zero(lua_State *L)
{
    slm_tensor *t = f32_arg(L, "zero", 1, 1);
    slm_grad_zero(pool_of(L), fdata(t), slm_tensor_numel(t));
    return 0;
}

/* --- AdamW ------------------------------------------------------------------------------- */

static double opt_num(lua_State *L, const char *fn, const char *name, double def, int required)
{
    lua_getfield(L, 5, name);
    int isnum;
    const double v = lua_tonumberx(L, -1, &isnum);
    if (!isnum && (required || !lua_isnil(L, -1)))
        argfail(L, fn, 5, "field '%s' must be a number%s", name, required ? " (required)" : "");
    lua_pop(L, 1);
    return isnum ? v : def;
}

static int l_adamw(lua_State *L)
{
    const char *fn = "adamw";
    slm_tensor *p = f32_arg(L, fn, 1, 1), *g = f32_arg(L, fn, 2, 0);
    slm_tensor *m = f32_arg(L, fn, 3, 1), *v = f32_arg(L, fn, 4, 1);
    luaL_checktype(L, 5, LUA_TTABLE);
    const int64_t n = slm_tensor_numel(p);
    check_size(L, fn, 2, g, n, 0, "gradient");
    check_size(L, fn, 3, m, n, 0, "first moment");
    check_size(L, fn, 4, v, n, 0, "second moment");
    slm_tensor *const args[4] = {p, g, m, v};
    for (int i = 0; i < 4; i++)
        for (int j = i + 1; j < 4; j++) check_apart(L, fn, i + 1, args[i], j + 1, args[j], 0);
    /* torch.optim.AdamW's defaults, except lr and step which are required */
    slm_adamw_params h;
    h.lr = opt_num(L, fn, "lr", 0, 1);
    h.beta1 = opt_num(L, fn, "beta1", 0.9, 0);
    h.beta2 = opt_num(L, fn, "beta2", 0.999, 0);
    h.eps = opt_num(L, fn, "eps", 1e-8, 0);
    h.weight_decay = opt_num(L, fn, "weight_decay", 0.01, 0);
    h.grad_scale = opt_num(L, fn, "grad_scale", 1.0, 0);
    lua_getfield(L, 5, "step");
    int isint;
    h.step = (int64_t)lua_tointegerx(L, -1, &isint);
    lua_pop(L, 1);
    if (!isint || h.step < 1) argfail(L, fn, 5, "field 'step' must be an integer >= 1 (the update's number)");
    if (!(h.beta1 >= 0 && h.beta1 < 1) || !(h.beta2 >= 0 && h.beta2 < 1))
        argfail(L, fn, 5, "betas (%g, %g) outside [0, 1)", h.beta1, h.beta2);
    slm_error err = {0};
    raise_status(L, slm_adamw_step(pool_of(L), fdata(p), fdata(g), fdata(m), fdata(v), n, &h, &err), &err);
    return 0;
}

void slm_bind_open_train(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"linear", l_linear}, {"linear_backward", l_linear_backward},
        {"embed_backward", l_embed_backward}, {"rmsnorm_backward", l_rmsnorm_backward},
        {"layernorm_backward", l_layernorm_backward},
        {"rope", l_rope}, {"rope_backward", l_rope_backward},
        {"swiglu", l_swiglu}, {"geglu", l_geglu},
        {"swiglu_backward", l_swiglu_backward}, {"geglu_backward", l_geglu_backward},
        {"silu_backward", l_silu_backward}, {"gelu_backward", l_gelu_backward},
        {"softcap_backward", l_softcap_backward},
        {"xent", l_xent}, {"sumsq", l_sumsq}, {"axpy", l_axpy}, {"scale", l_scale}, {"zero", l_zero},
        {"adamw", l_adamw}, {NULL, NULL}};
    slm_bind_set_subfuncs(L, "train", fns);   /* shared with the other training bindings */
}
