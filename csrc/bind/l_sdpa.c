/* `slm.core.train`: causal attention for training (csrc/train/sdpa.h).
 *
 *   train.sdpa_saved_bytes(opts) -> bytes, keep_probs
 *   train.sdpa(o, q, k, v, opts, saved)
 *   train.sdpa_backward(dq, dk, dv, dO, q, k, v, o, opts, saved [, accumulate])
 *
 * opts = {B =, T =, n_head =, n_head_kv = n_head, head_dim =,
 *         scale = 1/sqrt(head_dim), softcap = 0, window = 0,
 *         keep_probs = nil | true | false, probs_budget = 64 MiB}
 * q, o, dq, dO: f32 (B*T, n_head*head_dim); k, v, dk, dv: f32
 * (B*T, n_head_kv*head_dim); token t of sequence b is row b*T + t (any
 * contiguous tensor whose last dimension is the row width and whose rows
 * number B*T). saved: an f32 tensor of at least sdpa_saved_bytes(opts) / 4
 * elements, filled by sdpa and read by sdpa_backward with the same opts;
 * allocate it once and reuse it. keep_probs = nil keeps P when its
 * B*n_head*T*T floats fit in probs_budget bytes (slm_sdpa_keep_probs_fits),
 * else the backward recomputes the scores. accumulate: true or 1 adds the
 * gradients to dq, dk, dv; false, 0 or absent overwrites them. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../core/pool.h"
#include "../train/sdpa.h"
#include "bind.h"

/* a size field within 1..INT32_MAX (0..INT32_MAX when zero_ok) */
static int size_field(lua_State *L, int idx, const char *name, lua_Integer def, int required,
                      int zero_ok)
{
    lua_Integer v = slm_bind_int_field(L, idx, name, def, required);
    if (v < (zero_ok ? 0 : 1) || v > INT32_MAX)
        luaL_error(L, "field '%s' out of range %d..2147483647", name, zero_ok ? 0 : 1);
    return (int)v;
}

/* opts (table at idx) as a checked shape, keep_probs decided */
static slm_sdpa_shape check_opts(lua_State *L, int idx)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    slm_sdpa_shape sh;
    memset(&sh, 0, sizeof sh);
    sh.B = size_field(L, idx, "B", 0, 1, 0);
    sh.T = size_field(L, idx, "T", 0, 1, 0);
    sh.n_head = size_field(L, idx, "n_head", 0, 1, 0);
    sh.n_head_kv = size_field(L, idx, "n_head_kv", sh.n_head, 0, 0);
    sh.head_dim = size_field(L, idx, "head_dim", 0, 1, 0);
    sh.scale = (float)slm_bind_num_field(L, idx, "scale", 1.0 / sqrt((double)sh.head_dim));
    sh.softcap = (float)slm_bind_num_field(L, idx, "softcap", 0.0);
    sh.window = size_field(L, idx, "window", 0, 0, 1);
    slm_error err = {0};
    if (slm_sdpa_check(&sh, &err) != SLM_OK) luaL_argerror(L, idx, err.msg);
    lua_Integer budget = slm_bind_int_field(L, idx, "probs_budget", (lua_Integer)SLM_SDPA_PROBS_BUDGET, 0);
    if (budget < 0) luaL_error(L, "field 'probs_budget' must be >= 0");
    lua_getfield(L, idx, "keep_probs");
    if (lua_isnil(L, -1)) sh.keep_probs = slm_sdpa_keep_probs_fits(&sh, (size_t)budget);
    else if (lua_isboolean(L, -1)) sh.keep_probs = lua_toboolean(L, -1);
    else luaL_error(L, "field 'keep_probs' must be a boolean or nil");
    lua_pop(L, 1);
    return sh;
}

/* "AxBxC" of a tensor's shape, pushed */
static const char *push_shape(lua_State *L, const slm_tensor *t)
{
    luaL_Buffer b;
    luaL_buffinit(L, &b);
    for (int i = 0; i < t->ndim; i++) {
        if (i) luaL_addchar(&b, 'x');
        lua_pushfstring(L, "%I", (lua_Integer)t->shape[i]);
        luaL_addvalue(&b);
    }
    luaL_pushresult(&b);
    return lua_tostring(L, -1);
}

typedef struct arg_buf {
    const char *name;
    float *data;
    size_t bytes;
} arg_buf;

/* argument idx: a contiguous f32 tensor of rows rows of cols floats
 * (writable when it is written) */
static arg_buf check_act(lua_State *L, int idx, const char *name, int64_t rows, int64_t cols,
                         int writable)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    if (t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t))
        luaL_argerror(L, idx, lua_pushfstring(L, "%s: expected a contiguous f32 tensor, got a %s one",
                                              name, t->dtype == SLM_DTYPE_F32 ? "strided" : slm_dtype_name(t->dtype)));
    if (writable && t->storage->readonly)
        luaL_argerror(L, idx, lua_pushfstring(L, "%s: the tensor is read-only", name));
    if (t->shape[t->ndim - 1] != cols || slm_tensor_numel(t) != rows * cols)
        luaL_argerror(L, idx, lua_pushfstring(L, "%s: expected %I rows of %I floats (B*T, heads*head_dim), got %s",
                                              name, (lua_Integer)rows, (lua_Integer)cols, push_shape(L, t)));
    return (arg_buf){name, slm_tensor_data(t), slm_tensor_nbytes(t)};
}

/* argument idx: the saved buffer, f32, contiguous, writable, large enough */
static arg_buf check_saved(lua_State *L, int idx, const slm_sdpa_shape *sh)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    const size_t need = slm_sdpa_saved_bytes(sh);
    if (t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t) || t->storage->readonly)
        luaL_argerror(L, idx, "saved: expected a writable contiguous f32 tensor");
    if (slm_tensor_nbytes(t) < need)
        luaL_argerror(L, idx, lua_pushfstring(L, "saved: holds %I floats, these opts need %I (sdpa_saved_bytes / 4)",
                                              (lua_Integer)slm_tensor_numel(t), (lua_Integer)(need / sizeof(float))));
    return (arg_buf){"saved", slm_tensor_data(t), need};
}

static int overlap(const arg_buf *a, const arg_buf *b)
{
    const char *x = (const char *)a->data, *y = (const char *)b->data;
    return x < y + b->bytes && y < x + a->bytes;
}

/* the written buffers w[0..nw) overlap neither each other nor the read
 * ones r[0..nr) (which may share memory among themselves) */
static void check_disjoint(lua_State *L, const arg_buf *w, int nw, const arg_buf *r, int nr)
{
    for (int i = 0; i < nw; i++) {
        for (int j = i + 1; j < nw; j++)
            if (overlap(&w[i], &w[j])) luaL_error(L, "%s and %s must not overlap", w[i].name, w[j].name);
        for (int j = 0; j < nr; j++)
            if (overlap(&w[i], &r[j])) luaL_error(L, "%s and %s must not overlap", w[i].name, r[j].name);
    }
}

static slm_pool *pool_or_raise(lua_State *L)
{
    slm_error err = {0};
    slm_pool *p = slm_pool_default(&err);
    if (!p) slm_bind_error(L, &err);
    return p;
}

/* sdpa_saved_bytes(opts) -> bytes, keep_probs */
static int l_saved_bytes(lua_State *L)
{
    slm_sdpa_shape sh = check_opts(L, 1);
    lua_pushinteger(L, (lua_Integer)slm_sdpa_saved_bytes(&sh));
    lua_pushboolean(L, sh.keep_probs);
    return 2;
}

/* sdpa(o, q, k, v, opts, saved) */
static int l_sdpa(lua_State *L)
{
    slm_sdpa_shape sh = check_opts(L, 5);
    const int64_t rows = (int64_t)sh.B * sh.T;
    const int64_t qd = (int64_t)sh.n_head * sh.head_dim, kd = (int64_t)sh.n_head_kv * sh.head_dim;
    arg_buf w[2], r[3];
    w[0] = check_act(L, 1, "o", rows, qd, 1);
    r[0] = check_act(L, 2, "q", rows, qd, 0);
    r[1] = check_act(L, 3, "k", rows, kd, 0);
    r[2] = check_act(L, 4, "v", rows, kd, 0);
    w[1] = check_saved(L, 6, &sh);
    check_disjoint(L, w, 2, r, 3);
    slm_pool *pool = pool_or_raise(L);
    slm_error err = {0};
    if (slm_sdpa_forward(pool, &sh, r[0].data, r[1].data, r[2].data, w[0].data, w[1].data, &err))
        return slm_bind_error(L, &err);
    return 0;
}

/* sdpa_backward(dq, dk, dv, dO, q, k, v, o, opts, saved [, accumulate]) */
static int l_sdpa_backward(lua_State *L)
{
    slm_sdpa_shape sh = check_opts(L, 9);
    const int64_t rows = (int64_t)sh.B * sh.T;
    const int64_t qd = (int64_t)sh.n_head * sh.head_dim, kd = (int64_t)sh.n_head_kv * sh.head_dim;
    arg_buf w[3], r[6];
    w[0] = check_act(L, 1, "dq", rows, qd, 1);
    w[1] = check_act(L, 2, "dk", rows, kd, 1);
    w[2] = check_act(L, 3, "dv", rows, kd, 1);
    r[0] = check_act(L, 4, "dO", rows, qd, 0);
    r[1] = check_act(L, 5, "q", rows, qd, 0);
    r[2] = check_act(L, 6, "k", rows, kd, 0);
    r[3] = check_act(L, 7, "v", rows, kd, 0);
    r[4] = check_act(L, 8, "o", rows, qd, 0);
    r[5] = check_saved(L, 10, &sh);
    int accumulate = 0;
    if (lua_isboolean(L, 11)) {
        accumulate = lua_toboolean(L, 11);
    } else if (!lua_isnoneornil(L, 11)) {
        lua_Integer a = luaL_checkinteger(L, 11);
        luaL_argcheck(L, a == 0 || a == 1, 11, "accumulate: expected a boolean, 0 or 1");
        accumulate = (int)a;
    }
    check_disjoint(L, w, 3, r, 6);
    slm_pool *pool = pool_or_raise(L);
    slm_error err = {0};
    if (slm_sdpa_backward(pool, &sh, r[1].data, r[2].data, r[3].data, r[4].data, r[5].data,
                          r[0].data, w[0].data, w[1].data, w[2].data, accumulate, &err))
        return slm_bind_error(L, &err);
    return 0;
}

static const luaL_Reg functions[] = {
    {"sdpa_saved_bytes", l_saved_bytes},
    {"sdpa", l_sdpa},
    {"sdpa_backward", l_sdpa_backward},
    {NULL, NULL}
};

void slm_bind_open_sdpa(lua_State *L)
{
    slm_bind_set_subfuncs(L, "train", functions);   /* shared with the other training bindings */
}
