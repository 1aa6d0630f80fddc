/* `slm.core.train`: RWKV-7 time mix and channel mix for training
 * (csrc/train/rwkv7_grad.h has the math and what `saved` holds).
 *
 *   train.rwkv7_tmix_saved_bytes(w, opts) -> bytes
 *   train.rwkv7_tmix_forward(w, x, out, v_first, opts, saved)
 *   train.rwkv7_tmix_backward(w, g, saved, dout, dx, dv_first, opts, accumulate)
 *   train.rwkv7_cmix_saved_bytes(w, opts) -> bytes
 *   train.rwkv7_cmix_forward(w, x, out, opts, saved)
 *   train.rwkv7_cmix_backward(w, g, saved, dout, dx, opts, accumulate)
 *
 * w: a layer's f32 tensors named as in a GGUF file without the "blk.N."
 * prefix ("time_mix_key.weight", "time_mix_ln.bias",
 * "channel_mix_lerp_k.weight", ...); 1-D parameters may have any shape of
 * the right size (the GGUF's lerp vectors are 6x1x1xdim and 1x1xdim). g:
 * their gradient tensors under the same names (f32, same shape,
 * writable), added to; a name absent from g is a frozen parameter.
 * opts: B (sequences), T (tokens each) as train.sdpa's, and for the time
 * mix head_size, first_layer (false), chunk (WKV checkpoint spacing, 16),
 * gn_eps (64e-5).
 * x, out, v_first, dout, dx, dv_first: f32 (B*T, dim) rows, token t of
 * sequence b in row b*T + t (buffers may have more rows; the first B*T
 * are used). v_first: written by the first layer's forward (nil: not
 * kept), read by the others'; dv_first: read by the first layer's
 * backward (nil: none), added to by the others'. dx is overwritten unless
 * accumulate is true or 1. saved: a writable f32 tensor of at least
 * *_saved_bytes, filled by the forward and read by the backward. */
#include <stddef.h>
#include <string.h>

#include "../core/pool.h"
#include "../train/rwkv7_grad.h"
#include "bind.h"

/* sizes a parameter's shape refers to */
enum { SZ_NONE, SZ_DIM, SZ_SIX, SZ_FF, SZ_RW, SZ_RA, SZ_RV, SZ_RG, SZ_N };

typedef struct pspec {
    const char *key;
    size_t off;        /* the field of the params struct */
    int rows, cols;    /* rows SZ_NONE: a vector of `cols` values, any shape */
    int later;         /* only after the first layer (the value mix) */
} pspec;

#define TP(f) offsetof(slm_rwkv7_tmix_params, f)
static const pspec TMIX[] = {
    {"time_mix_lerp_fused.weight", TP(maa), SZ_NONE, SZ_SIX, 0},
    {"time_mix_w0.weight", TP(w0), SZ_NONE, SZ_DIM, 0},
    {"time_mix_w1.weight", TP(w1), SZ_RW, SZ_DIM, 0},
    {"time_mix_w2.weight", TP(w2), SZ_DIM, SZ_RW, 0},
    {"time_mix_a0.weight", TP(a0), SZ_NONE, SZ_DIM, 0},
    {"time_mix_a1.weight", TP(a1), SZ_RA, SZ_DIM, 0},
    {"time_mix_a2.weight", TP(a2), SZ_DIM, SZ_RA, 0},
    {"time_mix_v0.weight", TP(v0), SZ_NONE, SZ_DIM, 1},
    {"time_mix_v1.weight", TP(v1), SZ_RV, SZ_DIM, 1},
    {"time_mix_v2.weight", TP(v2), SZ_DIM, SZ_RV, 1},
    {"time_mix_g1.weight", TP(g1), SZ_RG, SZ_DIM, 0},
    {"time_mix_g2.weight", TP(g2), SZ_DIM, SZ_RG, 0},
    {"time_mix_k_k.weight", TP(k_k), SZ_NONE, SZ_DIM, 0},
    {"time_mix_k_a.weight", TP(k_a), SZ_NONE, SZ_DIM, 0},
    {"time_mix_r_k.weight", TP(r_k), SZ_NONE, SZ_DIM, 0},
    {"time_mix_receptance.weight", TP(wr), SZ_DIM, SZ_DIM, 0},
    {"time_mix_key.weight", TP(wk), SZ_DIM, SZ_DIM, 0},
    {"time_mix_value.weight", TP(wv), SZ_DIM, SZ_DIM, 0},
    {"time_mix_output.weight", TP(wo), SZ_DIM, SZ_DIM, 0},
    {"time_mix_ln.weight", TP(lnx_w), SZ_NONE, SZ_DIM, 0},
    {"time_mix_ln.bias", TP(lnx_b), SZ_NONE, SZ_DIM, 0},
};
#define CP(f) offsetof(slm_rwkv7_cmix_params, f)
static const pspec CMIX[] = {
    {"channel_mix_lerp_k.weight", CP(mix_k), SZ_NONE, SZ_DIM, 0},
    {"channel_mix_key.weight", CP(wk), SZ_FF, SZ_DIM, 0},
    {"channel_mix_value.weight", CP(wv), SZ_DIM, SZ_FF, 0},
};
#define N_TMIX (sizeof TMIX / sizeof *TMIX)
#define N_CMIX (sizeof CMIX / sizeof *CMIX)

/* The tensor at w[key] (table at idx), or NULL when absent; raises when it
 * is not a tensor. Leaves the stack as it was. */
static slm_tensor *field_tensor(lua_State *L, int idx, const char *fn, const char *tname, const char *key)
{
    slm_tensor *t = NULL;
    if (lua_getfield(L, idx, key) != LUA_TNIL) {
        t = luaL_testudata(L, -1, SLM_TENSOR_MT) ? slm_bind_check_tensor(L, -1) : NULL;
        if (!t) luaL_error(L, "%s: %s[\"%s\"] must be a tensor", fn, tname, key);
    }
    lua_pop(L, 1);
    return t;
}

static void shape_str(const slm_tensor *t, char *buf, size_t n)
{
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < t->ndim && o < n; i++)
        o += (size_t)snprintf(buf + o, n - o, "%s%lld", i ? "x" : "", (long long)t->shape[i]);
}

/* The row count of the low-rank down-projection w[key] (rank, dim). */
static int64_t rank_of(lua_State *L, int idx, const char *fn, const char *key)
{
    slm_tensor *t = field_tensor(L, idx, fn, "w", key);
    if (!t) luaL_error(L, "%s: w[\"%s\"] is missing", fn, key);
    if (t->ndim != 2) luaL_error(L, "%s: w[\"%s\"] must be 2-D (rank, dim), got %dD", fn, key, t->ndim);
    return t->shape[0];
}

/* Fills the float pointers of a params struct from the table at idx
 * against the sizes; weights (g = 0) must all be present, gradients
 * (g = 1) may be absent and must be writable. */
static void read_params(lua_State *L, int idx, const char *fn, int g, const pspec *spec, size_t n_spec,
                        const int64_t *sz, int first_layer, void *params, size_t params_size)
{
    const char *tname = g ? "g" : "w";
    luaL_checktype(L, idx, LUA_TTABLE);
    memset(params, 0, params_size);
    for (size_t i = 0; i < n_spec; i++) {
        const pspec *p = &spec[i];
        if (p->later && first_layer) continue;
        slm_tensor *t = field_tensor(L, idx, fn, tname, p->key);
        if (!t) {
            if (g) continue;
            luaL_error(L, "%s: w[\"%s\"] is missing", fn, p->key);
        }
        const int64_t rows = sz[p->rows], cols = sz[p->cols];
        const int ok_shape = p->rows == SZ_NONE ? slm_tensor_numel(t) == cols
                                                 : t->ndim == 2 && t->shape[0] == rows && t->shape[1] == cols;
        if (!ok_shape || t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t) || (g && t->storage->readonly)) {
            char want[64], got[96];
            if (p->rows == SZ_NONE) snprintf(want, sizeof want, "%lld values", (long long)cols);
            else snprintf(want, sizeof want, "%lldx%lld", (long long)rows, (long long)cols);
            shape_str(t, got, sizeof got);
            luaL_error(L, "%s: %s[\"%s\"] must be a contiguous%s f32 tensor of %s, got %s%s %s", fn, tname,
                       p->key, g ? " writable" : "", want, t->storage->readonly ? "read-only " : "",
                       slm_dtype_name(t->dtype), got);
        }
        *(float **)((char *)params + p->off) = slm_tensor_data(t);
    }
}

/* opts.name: a positive integer (def when absent and def > 0) */
static int opt_int(lua_State *L, int idx, const char *fn, const char *name, int def, int lo)
{
    lua_getfield(L, idx, name);
    int isnum;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    if (lua_isnil(L, -1) && def >= lo) v = def, isnum = 1;
    lua_pop(L, 1);
    if (!isnum || v < lo || v > (1 << 24))
        luaL_error(L, "%s: opts.%s must be an integer from %d to %d", fn, name, lo, 1 << 24);
    return (int)v;
}

static const char *const TMIX_FN[3] = {"rwkv7_tmix_saved_bytes", "rwkv7_tmix_forward", "rwkv7_tmix_backward"};
static const char *const CMIX_FN[3] = {"rwkv7_cmix_saved_bytes", "rwkv7_cmix_forward", "rwkv7_cmix_backward"};

/* The time mix's shape from w (table at wi) and opts (table at oi); the
 * weights into *p. */
static void tmix_setup(lua_State *L, int wi, int oi, const char *fn, slm_rwkv7_tmix_shape *s,
                       slm_rwkv7_tmix_params *p)
{
    luaL_checktype(L, wi, LUA_TTABLE);
    luaL_checktype(L, oi, LUA_TTABLE);
    memset(s, 0, sizeof *s);
    s->n_seq = opt_int(L, oi, fn, "B", 0, 1);
    s->n_tok = opt_int(L, oi, fn, "T", 0, 1);
    s->head_size = opt_int(L, oi, fn, "head_size", 0, 1);
    s->chunk = opt_int(L, oi, fn, "chunk", SLM_RWKV7_CHUNK, 1);
    lua_getfield(L, oi, "first_layer");
    s->first_layer = lua_toboolean(L, -1);
    lua_pop(L, 1);
    s->gn_eps = (float)slm_bind_num_field(L, oi, "gn_eps", 64e-5);
    slm_tensor *wr = field_tensor(L, wi, fn, "w", "time_mix_receptance.weight");
    if (!wr) luaL_error(L, "%s: w[\"time_mix_receptance.weight\"] is missing", fn);
    if (wr->ndim != 2) luaL_error(L, "%s: w[\"time_mix_receptance.weight\"] must be 2-D (dim, dim)", fn);
    s->dim = wr->shape[0];
    s->rank_w = rank_of(L, wi, fn, "time_mix_w1.weight");
    s->rank_a = rank_of(L, wi, fn, "time_mix_a1.weight");
    s->rank_g = rank_of(L, wi, fn, "time_mix_g1.weight");
    s->rank_v = s->first_layer ? 0 : rank_of(L, wi, fn, "time_mix_v1.weight");
    slm_error err = {0};
    if (slm_rwkv7_tmix_shape_check(s, &err) != SLM_OK) luaL_error(L, "%s: %s", fn, err.msg);
    const int64_t sz[SZ_N] = {0, s->dim, 6 * s->dim, 0, s->rank_w, s->rank_a, s->rank_v, s->rank_g};
    read_params(L, wi, fn, 0, TMIX, N_TMIX, sz, s->first_layer, p, sizeof *p);
}

static void cmix_setup(lua_State *L, int wi, int oi, const char *fn, slm_rwkv7_cmix_shape *s,
                       slm_rwkv7_cmix_params *p)
{
    luaL_checktype(L, wi, LUA_TTABLE);
    luaL_checktype(L, oi, LUA_TTABLE);
    s->n_seq = opt_int(L, oi, fn, "B", 0, 1);
    s->n_tok = opt_int(L, oi, fn, "T", 0, 1);
    slm_tensor *wk = field_tensor(L, wi, fn, "w", "channel_mix_key.weight");
    if (!wk) luaL_error(L, "%s: w[\"channel_mix_key.weight\"] is missing", fn);
    if (wk->ndim != 2) luaL_error(L, "%s: w[\"channel_mix_key.weight\"] must be 2-D (n_ff, dim)", fn);
    s->n_ff = wk->shape[0];
    s->dim = wk->shape[1];
    slm_error err = {0};
    if (slm_rwkv7_cmix_shape_check(s, &err) != SLM_OK) luaL_error(L, "%s: %s", fn, err.msg);
    const int64_t sz[SZ_N] = {0, s->dim, 0, s->n_ff};
    read_params(L, wi, fn, 0, CMIX, N_CMIX, sz, 0, p, sizeof *p);
}

/* An f32 (rows, dim) buffer at idx with at least n rows; writable when
 * asked; nil allowed when optional (returns NULL). */
static float *rows_arg(lua_State *L, int idx, const char *fn, const char *name, int64_t dim, int64_t n,
                       int writable, int optional)
{
    if (optional && lua_isnoneornil(L, idx)) return NULL;
    slm_tensor *t = luaL_testudata(L, idx, SLM_TENSOR_MT) ? slm_bind_check_tensor(L, idx) : NULL;
    if (!t || t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t) || (writable && t->storage->readonly) ||
        t->shape[t->ndim - 1] != dim || slm_tensor_numel(t) / dim < n)
        luaL_error(L, "%s: %s must be a contiguous%s f32 tensor of at least %I rows of %I", fn, name,
                   writable ? " writable" : "", (lua_Integer)n, (lua_Integer)dim);
    return slm_tensor_data(t);
}

static float *saved_arg(lua_State *L, int idx, const char *fn, size_t floats, int writable)
{
    slm_tensor *t = luaL_testudata(L, idx, SLM_TENSOR_MT) ? slm_bind_check_tensor(L, idx) : NULL;
    if (!t || t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t) || (writable && t->storage->readonly) ||
        (size_t)slm_tensor_numel(t) < floats)
        luaL_error(L, "%s: saved must be a contiguous%s f32 tensor of at least %I values (%s_saved_bytes / 4)", fn,
                   writable ? " writable" : "", (lua_Integer)floats, strstr(fn, "tmix") ? "rwkv7_tmix" : "rwkv7_cmix");
    return slm_tensor_data(t);
}

/* accumulate: true/false, 1/0 (the C convention), or nil (false) */
static int flag_arg(lua_State *L, int idx, const char *fn)
{
    if (lua_isnoneornil(L, idx)) return 0;
    if (lua_isboolean(L, idx)) return lua_toboolean(L, idx);
    int isnum;
    lua_Integer v = lua_tointegerx(L, idx, &isnum);
    if (!isnum || (v != 0 && v != 1)) luaL_error(L, "%s: accumulate must be a boolean, 0 or 1", fn);
    return (int)v;
}

static slm_pool *pool_or_raise(lua_State *L)
{
    slm_error err = {0};
    slm_pool *p = slm_pool_default(&err);
    if (!p) slm_bind_error(L, &err);
    return p;
}

static int raise_status(lua_State *L, const char *fn, const slm_error *err)
{
    return luaL_error(L, "%s: %s", fn, err->msg);
}

/* --- time mix ------------------------------------------------------------- */

static int l_tmix_saved_bytes(lua_State *L)
{
    slm_rwkv7_tmix_shape s;
    slm_rwkv7_tmix_params p;
    tmix_setup(L, 1, 2, TMIX_FN[0], &s, &p);
    lua_pushinteger(L, (lua_Integer)(slm_rwkv7_tmix_saved_floats(&s) * sizeof(float)));
    return 1;
}

/* (w, x, out, v_first, opts, saved) */
static int l_tmix_forward(lua_State *L)
{
    const char *fn = TMIX_FN[1];
    slm_rwkv7_tmix_shape s;
    slm_rwkv7_tmix_params p;
    tmix_setup(L, 1, 5, fn, &s, &p);
    const int64_t n = (int64_t)s.n_seq * s.n_tok;
    const float *x = rows_arg(L, 2, fn, "x", s.dim, n, 0, 0);
    float *out = rows_arg(L, 3, fn, "out", s.dim, n, 1, 0);
    float *vf = rows_arg(L, 4, fn, "v_first", s.dim, n, s.first_layer, s.first_layer);
    float *saved = saved_arg(L, 6, fn, slm_rwkv7_tmix_saved_floats(&s), 1);
    if (out == x) luaL_error(L, "%s: out must not alias x", fn);
    slm_error err = {0};
    if (slm_rwkv7_tmix_forward(pool_or_raise(L), &s, &p, x, out, vf, saved, &err) != SLM_OK)
        return raise_status(L, fn, &err);
    return 0;
}

/* (w, g, saved, dout, dx, dv_first, opts, accumulate) */
static int l_tmix_backward(lua_State *L)
{
    const char *fn = TMIX_FN[2];
    slm_rwkv7_tmix_shape s;
    slm_rwkv7_tmix_params p, g;
    tmix_setup(L, 1, 7, fn, &s, &p);
    const int64_t sz[SZ_N] = {0, s.dim, 6 * s.dim, 0, s.rank_w, s.rank_a, s.rank_v, s.rank_g};
    read_params(L, 2, fn, 1, TMIX, N_TMIX, sz, s.first_layer, &g, sizeof g);
    const int64_t n = (int64_t)s.n_seq * s.n_tok;
    const float *saved = saved_arg(L, 3, fn, slm_rwkv7_tmix_saved_floats(&s), 0);
    const float *dout = rows_arg(L, 4, fn, "dout", s.dim, n, 0, 0);
    float *dx = rows_arg(L, 5, fn, "dx", s.dim, n, 1, 0);
    float *dvf = rows_arg(L, 6, fn, "dv_first", s.dim, n, !s.first_layer, s.first_layer);
    const int acc = flag_arg(L, 8, fn);
    slm_error err = {0};
    if (slm_rwkv7_tmix_backward(pool_or_raise(L), &s, &p, &g, saved, dout, dx, dvf, acc, &err) != SLM_OK)
        return raise_status(L, fn, &err);
    return 0;
}

/* --- channel mix ---------------------------------------------------------- */

static int l_cmix_saved_bytes(lua_State *L)
{
    slm_rwkv7_cmix_shape s;
    slm_rwkv7_cmix_params p;
    cmix_setup(L, 1, 2, CMIX_FN[0], &s, &p);
    lua_pushinteger(L, (lua_Integer)(slm_rwkv7_cmix_saved_floats(&s) * sizeof(float)));
    return 1;
}

/* (w, x, out, opts, saved) */
static int l_cmix_forward(lua_State *L)
{
    const char *fn = CMIX_FN[1];
    slm_rwkv7_cmix_shape s;
    slm_rwkv7_cmix_params p;
    cmix_setup(L, 1, 4, fn, &s, &p);
    const int64_t n = (int64_t)s.n_seq * s.n_tok;
    const float *x = rows_arg(L, 2, fn, "x", s.dim, n, 0, 0);
    float *out = rows_arg(L, 3, fn, "out", s.dim, n, 1, 0);
    float *saved = saved_arg(L, 5, fn, slm_rwkv7_cmix_saved_floats(&s), 1);
    if (out == x) luaL_error(L, "%s: out must not alias x", fn);
    slm_error err = {0};
    if (slm_rwkv7_cmix_forward(pool_or_raise(L), &s, &p, x, out, saved, &err) != SLM_OK)
        return raise_status(L, fn, &err);
    return 0;
}

/* (w, g, saved, dout, dx, opts, accumulate) */
static int l_cmix_backward(lua_State *L)
{
    const char *fn = CMIX_FN[2];
    slm_rwkv7_cmix_shape s;
    slm_rwkv7_cmix_params p, g;
    cmix_setup(L, 1, 6, fn, &s, &p);
    const int64_t sz[SZ_N] = {0, s.dim, 0, s.n_ff};
    read_params(L, 2, fn, 1, CMIX, N_CMIX, sz, 0, &g, sizeof g);
    const int64_t n = (int64_t)s.n_seq * s.n_tok;
    const float *saved = saved_arg(L, 3, fn, slm_rwkv7_cmix_saved_floats(&s), 0);
    const float *dout = rows_arg(L, 4, fn, "dout", s.dim, n, 0, 0);
    float *dx = rows_arg(L, 5, fn, "dx", s.dim, n, 1, 0);
    const int acc = flag_arg(L, 7, fn);
    slm_error err = {0};
    if (slm_rwkv7_cmix_backward(pool_or_raise(L), &s, &p, &g, saved, dout, dx, acc, &err) != SLM_OK)
        return raise_status(L, fn, &err);
    return 0;
}

void slm_bind_open_rwkv_train(lua_State *L)
{
    static const luaL_Reg fns[] = {
        {"rwkv7_tmix_saved_bytes", l_tmix_saved_bytes}, {"rwkv7_tmix_forward", l_tmix_forward},
        {"rwkv7_tmix_backward", l_tmix_backward},       {"rwkv7_cmix_saved_bytes", l_cmix_saved_bytes},
        {"rwkv7_cmix_forward", l_cmix_forward},         {"rwkv7_cmix_backward", l_cmix_backward},
        {NULL, NULL}};
    slm_bind_set_subfuncs(L, "train", fns);   /* shared with the other training bindings */
}
