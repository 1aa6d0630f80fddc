/* `slm.core.train`: the Mamba-1 mixer's training forward and backward
 * (csrc/train/mamba_grad.h has the formulas and what is saved).
 *
 *   train.mamba_saved_bytes(opts) -> bytes of the saved buffer
 *   train.mamba_forward(w, x, out, opts, saved)
 *   train.mamba_backward(w, g, x, dout, dx, opts, saved [, accumulate])
 *
 * opts = {B=, T=, d_inner=, d_state=, d_conv=, dt_rank= [, chunk=]}: B
 * sequences of T tokens, rows b*T + t of the (rows, dim) f32 buffers x,
 * out, dout, dx (rows >= B*T; dim is x's width); chunk is the checkpoint
 * stride of the scan (default 64). opts.dt_b_c_rms (Falcon-Mamba) is
 * refused. w holds f32 contiguous tensors named as in the GGUF layer:
 * ssm_in (2 d_inner, dim), ssm_conv1d (d_inner, d_conv), ssm_conv1d_b
 * (d_inner), ssm_x (dt_rank + 2 d_state, d_inner), ssm_dt (d_inner,
 * dt_rank), ssm_dt_b (d_inner), ssm_a (d_inner, d_state) (the stored
 * -exp(A_log)), ssm_d (d_inner), ssm_out (dim, d_inner); g their gradients
 * under the same names (writable), which the backward adds to. saved is a
 * writable contiguous f32 tensor of at least mamba_saved_bytes(opts) bytes,
 * filled by the forward and read by the backward with the same w, x and
 * opts. dx is overwritten, or added to when accumulate is true (or 1). */
#include <stdint.h>
#include <stdio.h>

#include "../core/pool.h"
#include "../train/mamba_grad.h"
#include "bind.h"

enum { W_IN, W_CONV, W_CONV_B, W_X, W_DT, W_DT_B, W_A, W_D, W_OUT, N_W };
static const char *const w_names[N_W] = {"ssm_in", "ssm_conv1d", "ssm_conv1d_b", "ssm_x", "ssm_dt",
                                         "ssm_dt_b", "ssm_a", "ssm_d", "ssm_out"};

/* opts at idx -> shape; dim is set by the caller (1 for the byte count) */
static void check_opts(lua_State *L, int idx, slm_mamba_grad_shape *s)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    s->B = slm_bind_int_field(L, idx, "B", 0, 1);
    s->T = slm_bind_int_field(L, idx, "T", 0, 1);
    s->d_inner = slm_bind_int_field(L, idx, "d_inner", 0, 1);
    s->d_state = slm_bind_int_field(L, idx, "d_state", 0, 1);
    s->d_conv = slm_bind_int_field(L, idx, "d_conv", 0, 1);
    s->dt_rank = slm_bind_int_field(L, idx, "dt_rank", 0, 1);
    s->chunk = slm_bind_int_field(L, idx, "chunk", 0, 0);
    s->dim = 1;
    lua_getfield(L, idx, "dt_b_c_rms");
    if (lua_toboolean(L, -1))
        luaL_argerror(L, idx, "dt_b_c_rms (Falcon-Mamba's normalized dt, B, C) is not supported in training");
    lua_pop(L, 1);
    slm_error err = {0};
    if (slm_mamba_grad_shape_check(s, &err) != SLM_OK) luaL_argerror(L, idx, err.msg);
}

/* field k of the table at idx: an f32 contiguous tensor of shape (rows,
 * cols), or of any shape with rows elements when cols is 0 (vectors) */
static float *tensor_field(lua_State *L, int idx, int k, int64_t rows, int64_t cols, int writable)
{
    const char *name = w_names[k];
    lua_getfield(L, idx, name);
    if (!luaL_testudata(L, -1, SLM_TENSOR_MT))
        luaL_argerror(L, idx, lua_pushfstring(L, "field '%s' must be a tensor, got %s", name, luaL_typename(L, -1)));
    slm_tensor *t = slm_bind_check_tensor(L, -1);
    lua_pop(L, 1);   /* the table keeps it alive */
    int ok = t->dtype == SLM_DTYPE_F32 && slm_tensor_is_contiguous(t) && !(writable && t->storage->readonly);
    ok = ok && (cols ? t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols : slm_tensor_numel(t) == rows);
    if (!ok) {
        char want[64], got[96];
        if (cols) snprintf(want, sizeof want, "%lldx%lld", (long long)rows, (long long)cols);
        else snprintf(want, sizeof want, "%lld elements", (long long)rows);
        int n = snprintf(got, sizeof got, "%s", slm_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim && n < (int)sizeof got; d++)
            n += snprintf(got + n, sizeof got - (size_t)n, "%c%lld", d ? 'x' : ' ', (long long)t->shape[d]);
        const char *why = !slm_tensor_is_contiguous(t) ? " (not contiguous)"
                          : writable && t->storage->readonly ? " (read-only)" : "";
        luaL_argerror(L, idx, lua_pushfstring(L, "'%s' must be a %scontiguous f32 tensor of %s, got %s%s", name,
                                              writable ? "writable " : "", want, got, why));
    }
    return slm_tensor_data(t);
}

/* all nine tensors of the table at idx against the shape */
static void check_weights(lua_State *L, int idx, const slm_mamba_grad_shape *s, float **p, int writable)
{
    const int64_t di = s->d_inner, S = s->d_state, R = s->dt_rank;
    luaL_checktype(L, idx, LUA_TTABLE);
    p[W_IN] = tensor_field(L, idx, W_IN, 2 * di, s->dim, writable);
    p[W_CONV] = tensor_field(L, idx, W_CONV, di, s->d_conv, writable);
    p[W_CONV_B] = tensor_field(L, idx, W_CONV_B, di, 0, writable);
    p[W_X] = tensor_field(L, idx, W_X, R + 2 * S, di, writable);
    p[W_DT] = tensor_field(L, idx, W_DT, di, R, writable);
    p[W_DT_B] = tensor_field(L, idx, W_DT_B, di, 0, writable);
    p[W_A] = tensor_field(L, idx, W_A, di, S, writable);
    p[W_D] = tensor_field(L, idx, W_D, di, 0, writable);
    p[W_OUT] = tensor_field(L, idx, W_OUT, s->dim, di, writable);
}

/* an f32 contiguous (rows, dim) buffer with rows >= n; dim 0: set it */
static float *check_rows(lua_State *L, int idx, int64_t n, int64_t *dim, int writable)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    luaL_argcheck(L, t->dtype == SLM_DTYPE_F32 && slm_tensor_is_contiguous(t) && !(writable && t->storage->readonly),
                  idx, writable ? "expected a writable contiguous f32 tensor" : "expected a contiguous f32 tensor");
    const int64_t w = t->shape[t->ndim - 1];
    if (*dim == 0) *dim = w;
    if (w != *dim)
        luaL_argerror(L, idx, lua_pushfstring(L, "width %I differs from the model dim %I", (lua_Integer)w, (lua_Integer)*dim));
    if (slm_tensor_numel(t) / w < n)
        luaL_argerror(L, idx, lua_pushfstring(L, "%I rows, B*T = %I needed", (lua_Integer)(slm_tensor_numel(t) / w), (lua_Integer)n));
    return slm_tensor_data(t);
}

/* the saved buffer: f32 contiguous, at least floats */
static float *check_saved(lua_State *L, int idx, size_t floats, int writable)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    luaL_argcheck(L, t->dtype == SLM_DTYPE_F32 && slm_tensor_is_contiguous(t) && !(writable && t->storage->readonly),
                  idx, "expected a writable contiguous f32 tensor");
    if ((size_t)slm_tensor_numel(t) < floats)
        luaL_argerror(L, idx, lua_pushfstring(L, "%I bytes, mamba_saved_bytes gives %I",
                                              (lua_Integer)slm_tensor_nbytes(t), (lua_Integer)(floats * sizeof(float))));
    return slm_tensor_data(t);
}

/* 1 if [a, a + na) and [b, b + nb) (floats) overlap */
static int overlap(const float *a, size_t na, const float *b, size_t nb)
{
    return (uintptr_t)a < (uintptr_t)(b + nb) && (uintptr_t)b < (uintptr_t)(a + na);
}

static int l_saved_bytes(lua_State *L)
{
    slm_mamba_grad_shape s;
    check_opts(L, 1, &s);
    lua_pushinteger(L, (lua_Integer)(slm_mamba_grad_saved_floats(&s) * sizeof(float)));
    return 1;
}

static slm_mamba_grad_params params_of(float *const *p)
{
    return (slm_mamba_grad_params){p[W_IN], p[W_CONV], p[W_CONV_B], p[W_X], p[W_DT],
                                   p[W_DT_B], p[W_A], p[W_D], p[W_OUT]};
}

/* mamba_forward(w, x, out, opts, saved) */
static int l_forward(lua_State *L)
{
    slm_mamba_grad_shape s;
    check_opts(L, 4, &s);
    const int64_t n = s.B * s.T;
    int64_t dim = 0;
    const float *x = check_rows(L, 2, n, &dim, 0);
    float *out = check_rows(L, 3, n, &dim, 1);
    s.dim = dim;
    slm_error err = {0};
    if (slm_mamba_grad_shape_check(&s, &err) != SLM_OK) luaL_argerror(L, 2, err.msg);
    float *w[N_W];
    check_weights(L, 1, &s, w, 0);
    const size_t floats = slm_mamba_grad_saved_floats(&s), nd = (size_t)(n * dim);
    float *saved = check_saved(L, 5, floats, 1);
    luaL_argcheck(L, !overlap(out, nd, x, nd), 3, "out must not overlap x");
    luaL_argcheck(L, !overlap(saved, floats, x, nd) && !overlap(saved, floats, out, nd), 5,
                  "saved must not overlap x or out");
    slm_pool *pool = slm_pool_default(&err);
    if (!pool) return slm_bind_error(L, &err);
    slm_mamba_grad_params p = params_of(w);
    if (slm_mamba_grad_forward(pool, &s, &p, x, out, saved, &err) != SLM_OK) return slm_bind_error(L, &err);
    return 0;
}

/* mamba_backward(w, g, x, dout, dx, opts, saved [, accumulate]) */
static int l_backward(lua_State *L)
{
    slm_mamba_grad_shape s;
    check_opts(L, 6, &s);
    const int64_t n = s.B * s.T;
    int64_t dim = 0;
    const float *x = check_rows(L, 3, n, &dim, 0);
    const float *dout = check_rows(L, 4, n, &dim, 0);
    float *dx = check_rows(L, 5, n, &dim, 1);
    s.dim = dim;
    slm_error err = {0};
    if (slm_mamba_grad_shape_check(&s, &err) != SLM_OK) luaL_argerror(L, 3, err.msg);
    float *w[N_W], *gw[N_W];
    check_weights(L, 1, &s, w, 0);
    check_weights(L, 2, &s, gw, 1);
    const size_t floats = slm_mamba_grad_saved_floats(&s), nd = (size_t)(n * dim);
    const float *saved = check_saved(L, 7, floats, 0);
    int accumulate = 0;
    if (lua_isboolean(L, 8)) accumulate = lua_toboolean(L, 8);
    else if (!lua_isnoneornil(L, 8)) {
        int isnum;
        lua_Integer a = lua_tointegerx(L, 8, &isnum);
        luaL_argcheck(L, isnum && (a == 0 || a == 1), 8, "accumulate must be a boolean, 0 or 1");
        accumulate = (int)a;
    }
    luaL_argcheck(L, !overlap(dx, nd, x, nd) && !overlap(dx, nd, dout, nd) && !overlap(dx, nd, saved, floats), 5,
                  "dx must not overlap x, dout or saved");
    slm_pool *pool = slm_pool_default(&err);
    if (!pool) return slm_bind_error(L, &err);
    slm_mamba_grad_params p = params_of(w);
    slm_mamba_grad_grads g = {gw[W_IN], gw[W_CONV], gw[W_CONV_B], gw[W_X], gw[W_DT],
                              gw[W_DT_B], gw[W_A], gw[W_D], gw[W_OUT]};
    if (slm_mamba_grad_backward(pool, &s, &p, &g, x, dout, dx, accumulate, saved, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

void slm_bind_open_mamba_train(lua_State *L)
{
    static const luaL_Reg fns[] = {{"mamba_saved_bytes", l_saved_bytes}, {"mamba_forward", l_forward},
                                   {"mamba_backward", l_backward}, {NULL, NULL}};
    slm_bind_set_subfuncs(L, "train", fns);   /* shared with the other training bindings */
}
