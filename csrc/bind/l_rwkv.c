/* `slm.core.rwkv`: the RWKV blocks a Lua model definition composes.
 *
 *   rwkv.time_mix{version=, dim=, n_head=, gn_eps=, first_layer=, <params>}
 *       -> slm.RWKVTimeMix      blk:forward(out, x, state, layer, n)
 *   rwkv.channel_mix{version=, dim=, n_ff=, mix_k=, mix_r=, wk=, wv=, wr=}
 *       -> slm.RWKVChannelMix   blk:forward(out, x, state, layer, n)
 *   rwkv.state{version=, n_layer=, dim=, n_head=, n_ff=, lora=, n_batch=}
 *       -> slm.RWKVState        st:reset(), st:bytes(), st:snapshot(n_past)
 *                               -> string, st:restore(string) -> n_past
 *
 * version is "v4", "v5.1", "v5.2", "v6" or "v7". Parameters are tensors
 * (names as the fields of slm_rwkv_tmix in csrc/blocks/rwkv.h); `maa` is a
 * list of tensors or one fused tensor of k*dim values. Vectors must be f32;
 * matrices any matmul dtype. Blocks keep their own views of the weights.
 * Layers are 1-based here. */
#include <stddef.h>
#include <string.h>

#include "../blocks/rwkv.h"
#include "../blocks/seqbatch.h"
#include "bind.h"

#define TMIX_MT "slm.RWKVTimeMix"
#define CMIX_MT "slm.RWKVChannelMix"
#define STATE_MT "slm.RWKVState"
#define MAX_OWN 48

typedef struct mix_ud {
    slm_rwkv_tmix t;
    slm_rwkv_cmix c;
    slm_tensor *own[MAX_OWN];
    int n_own, closed;
} mix_ud;

typedef struct state_ud {
    slm_rwkv_state *st;
} state_ud;

static const char *const version_names[] = {"v4", "v5.1", "v5.2", "v6", "v7", NULL};
static const slm_rwkv_version version_ids[] = {SLM_RWKV_V4, SLM_RWKV_V5_1, SLM_RWKV_V5_2,
                                               SLM_RWKV_V6, SLM_RWKV_V7};

static slm_rwkv_version check_version(lua_State *L, int idx)
{
    lua_getfield(L, idx, "version");
    int v = luaL_checkoption(L, -1, NULL, version_names);
    lua_pop(L, 1);
    return version_ids[v];
}

/* --- blocks ---------------------------------------------------------------------- */

static int mix_gc(lua_State *L)
{
    mix_ud *m = lua_touserdata(L, 1);
    for (int i = 0; i < m->n_own; i++) slm_tensor_free(m->own[i]);
    m->n_own = 0;
    m->closed = 1;
    return 0;
}

/* A view of the tensor at the top of the stack, owned by m. */
static slm_tensor *own_view(lua_State *L, mix_ud *m, const char *name)
{
    slm_tensor *t = luaL_testudata(L, -1, SLM_TENSOR_MT) ? slm_bind_check_tensor(L, -1) : NULL;
    if (!t) luaL_error(L, "field '%s' must be a tensor", name);
    if (m->n_own >= MAX_OWN) luaL_error(L, "rwkv: too many parameters");
    slm_error err = {0};
    slm_tensor *v = slm_tensor_view(t, &err);
    if (!v) slm_bind_error(L, &err);
    m->own[m->n_own++] = v;
    return v;
}

static const float *vec_of(lua_State *L, slm_tensor *t, int64_t n, const char *name)
{
    if (t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t) || slm_tensor_numel(t) != n)
        luaL_error(L, "rwkv: %s must hold %I contiguous f32 values, got a %s tensor of %I",
                   name, (lua_Integer)n, slm_dtype_name(t->dtype), (lua_Integer)slm_tensor_numel(t));
    return slm_tensor_data(t);
}

/* Optional f32 vector field of n values. */
static const float *vec_field(lua_State *L, mix_ud *m, int idx, const char *name, int64_t n)
{
    const float *p = NULL;
    if (lua_getfield(L, idx, name) != LUA_TNIL) p = vec_of(L, own_view(L, m, name), n, name);
    lua_pop(L, 1);
    return p;
}

static const slm_tensor *mat_field(lua_State *L, mix_ud *m, int idx, const char *name)
{
    const slm_tensor *t = NULL;
    if (lua_getfield(L, idx, name) != LUA_TNIL) t = own_view(L, m, name);
    lua_pop(L, 1);
    return t;
}

/* maa: a list of k vectors, or one fused tensor of k*dim values */
static void maa_field(lua_State *L, mix_ud *m, int idx, int k, int64_t dim, const float **out)
{
    int ty = lua_getfield(L, idx, "maa");
    if (ty == LUA_TTABLE) {
        for (int i = 0; i < k; i++) {
            lua_geti(L, -1, i + 1);
            out[i] = vec_of(L, own_view(L, m, "maa[i]"), dim, "maa[i]");
            lua_pop(L, 1);
        }
    } else if (ty != LUA_TNIL) {
        const float *p = vec_of(L, own_view(L, m, "maa"), k * dim, "maa (fused)");
        for (int i = 0; i < k; i++) out[i] = p + (size_t)i * (size_t)dim;
    }
    lua_pop(L, 1);
}

static mix_ud *new_mix(lua_State *L, const char *mt)
{
    mix_ud *m = lua_newuserdatauv(L, sizeof *m, 0);
    memset(m, 0, sizeof *m);
    luaL_setmetatable(L, mt);
    return m;
}

static int l_time_mix(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    mix_ud *m = new_mix(L, TMIX_MT);
    slm_rwkv_tmix *b = &m->t;
    b->version = check_version(L, 1);
    b->dim = slm_bind_int_field(L, 1, "dim", 0, 1);
    b->n_head = slm_bind_int_field(L, 1, "n_head", 1, 0);
    if (b->dim < 1 || b->n_head < 1 || b->dim % b->n_head != 0)
        return luaL_error(L, "time_mix: dim %I is not a multiple of n_head %I",
                          (lua_Integer)b->dim, (lua_Integer)b->n_head);
    b->head_size = b->dim / b->n_head;
    lua_getfield(L, 1, "gn_eps");
    b->gn_eps = (float)luaL_optnumber(L, -1, 1e-5);
    lua_pop(L, 1);
    lua_getfield(L, 1, "first_layer");
    b->first_layer = lua_toboolean(L, -1);
    lua_pop(L, 1);
    int64_t d = b->dim, per_head = b->version == SLM_RWKV_V5_1 ? b->n_head : d;
    b->mix_k = vec_field(L, m, 1, "mix_k", d);
    b->mix_v = vec_field(L, m, 1, "mix_v", d);
    b->mix_r = vec_field(L, m, 1, "mix_r", d);
    b->mix_g = vec_field(L, m, 1, "mix_g", d);
    b->maa_x = vec_field(L, m, 1, "maa_x", d);
    maa_field(L, m, 1, b->version == SLM_RWKV_V7 ? 6 : 5, d, b->maa);
    b->decay = vec_field(L, m, 1, "decay", per_head);
    b->first = vec_field(L, m, 1, "first", per_head);
    b->w0 = vec_field(L, m, 1, "w0", d);
    b->a0 = vec_field(L, m, 1, "a0", d);
    b->v0 = vec_field(L, m, 1, "v0", d);
    b->k_k = vec_field(L, m, 1, "k_k", d);
    b->k_a = vec_field(L, m, 1, "k_a", d);
    b->r_k = vec_field(L, m, 1, "r_k", d);
    b->lnx_w = vec_field(L, m, 1, "lnx_w", d);
    b->lnx_b = vec_field(L, m, 1, "lnx_b", d);
    b->maa_w1 = mat_field(L, m, 1, "maa_w1");
    b->maa_w2 = mat_field(L, m, 1, "maa_w2");
    b->decay_w1 = mat_field(L, m, 1, "decay_w1");
    b->decay_w2 = mat_field(L, m, 1, "decay_w2");
    static const char *const lo[8] = {"w1", "w2", "a1", "a2", "v1", "v2", "g1", "g2"};
    const slm_tensor **lop[8] = {&b->w1, &b->w2, &b->a1, &b->a2, &b->v1, &b->v2, &b->g1, &b->g2};
    for (int i = 0; i < 8; i++) *lop[i] = mat_field(L, m, 1, lo[i]);
    b->wr = mat_field(L, m, 1, "wr");
    b->wk = mat_field(L, m, 1, "wk");
    b->wv = mat_field(L, m, 1, "wv");
    b->wo = mat_field(L, m, 1, "wo");
    b->wg = mat_field(L, m, 1, "wg");
    slm_error err = {0};
    if (slm_rwkv_tmix_check(b, &err) != SLM_OK) return slm_bind_error(L, &err);
    return 1;
}

static int l_channel_mix(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    mix_ud *m = new_mix(L, CMIX_MT);
    slm_rwkv_cmix *b = &m->c;
    b->version = check_version(L, 1);
    b->dim = slm_bind_int_field(L, 1, "dim", 0, 1);
    b->wk = mat_field(L, m, 1, "wk");
    b->n_ff = slm_bind_int_field(L, 1, "n_ff", b->wk && b->wk->ndim == 2 ? b->wk->shape[0] : 0, 0);
    if (b->dim < 1) return luaL_error(L, "channel_mix: dim must be positive");
    b->mix_k = vec_field(L, m, 1, "mix_k", b->dim);
    b->mix_r = vec_field(L, m, 1, "mix_r", b->dim);
    b->wv = mat_field(L, m, 1, "wv");
    b->wr = mat_field(L, m, 1, "wr");
    slm_error err = {0};
    if (slm_rwkv_cmix_check(b, &err) != SLM_OK) return slm_bind_error(L, &err);
    return 1;
}

/* --- state ----------------------------------------------------------------------------- */

static int state_gc(lua_State *L)
{
    state_ud *s = lua_touserdata(L, 1);
    slm_rwkv_state_free(s->st);
    s->st = NULL;
    return 0;
}

static slm_rwkv_state *check_state(lua_State *L, int idx)
{
    state_ud *s = luaL_checkudata(L, idx, STATE_MT);
    if (!s->st) luaL_error(L, "attempt to use a freed RWKV state");
    return s->st;
}

static int l_state(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    slm_rwkv_version v = check_version(L, 1);
    lua_Integer n_layer = slm_bind_int_field(L, 1, "n_layer", 0, 1), dim = slm_bind_int_field(L, 1, "dim", 0, 1);
    lua_Integer n_head = slm_bind_int_field(L, 1, "n_head", 1, 0), n_ff = slm_bind_int_field(L, 1, "n_ff", 0, 1);
    lua_Integer lora = slm_bind_int_field(L, 1, "lora", 0, 0), n_batch = slm_bind_int_field(L, 1, "n_batch", 1, 0);
    if (n_layer < 1 || n_layer > 4096 || n_batch < 1 || n_batch > 65536)
        return luaL_error(L, "rwkv.state: n_layer or n_batch out of range");
    state_ud *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->st = NULL;
    luaL_setmetatable(L, STATE_MT);
    slm_error err = {0};
    s->st = slm_rwkv_state_new(v, (int)n_layer, dim, n_head, n_ff, lora, (int)n_batch, &err);
    if (!s->st) return slm_bind_error(L, &err);
    return 1;
}

static int state_reset(lua_State *L)
{
    slm_rwkv_state_reset(check_state(L, 1));
    return 0;
}

static int state_bytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)(slm_rwkv_state_floats(check_state(L, 1)) * sizeof(float)));
    return 1;
}

/* snapshot(n_past) -> string (the layout of blocks/rwkv.h) */
static int state_snapshot(lua_State *L)
{
    slm_rwkv_state *st = check_state(L, 1);
    lua_Integer n_past = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n_past >= 0 && n_past <= INT32_MAX, 2, "n_past out of range");
    size_t n = slm_rwkv_snapshot_size(st);
    luaL_Buffer B;
    char *p = luaL_buffinitsize(L, &B, n);
    slm_rwkv_snapshot(st, (int)n_past, p);
    luaL_pushresultsize(&B, n);
    return 1;
}

/* restore(str) -> n_past */
static int state_restore(lua_State *L)
{
    slm_rwkv_state *st = check_state(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int n_past;
    slm_error err = {0};
    if (slm_rwkv_restore(st, s, len, &n_past, &err) != SLM_OK) return slm_bind_error(L, &err);
    lua_pushinteger(L, n_past);
    return 1;
}

/* --- forward calls ------------------------------------------------------------------------ */

static float *check_buf(lua_State *L, int idx, int64_t dim, int64_t n)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    luaL_argcheck(L, t->dtype == SLM_DTYPE_F32 && slm_tensor_is_contiguous(t) &&
                     !t->storage->readonly, idx, "expected a writable contiguous f32 tensor");
    luaL_argcheck(L, t->shape[t->ndim - 1] == dim, idx, "buffer width differs from the model dim");
    luaL_argcheck(L, slm_tensor_numel(t) / dim >= n, idx, "buffer has fewer rows than n");
    return slm_tensor_data(t);
}

/* mix:forward(out, x, seqbatch, layer, n, work): the rows of several
 * sessions (slm.batch), each against its own state; work is a state whose
 * scratch holds the n = seqbatch:rows() rows */
static int mix_forward_seqs(lua_State *L, mix_ud *m, int is_time)
{
    int64_t dim = is_time ? m->t.dim : m->c.dim;
    int n_seq;
    struct slm_seq *seqs = slm_bind_check_seqs(L, 4, &n_seq);
    lua_Integer layer = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 6);
    slm_rwkv_state *work = check_state(L, 7);
    luaL_argcheck(L, n == slm_seq_rows(seqs, n_seq) && n <= work->n_batch, 6,
                  "row count differs from the batch's rows or exceeds the work state");
    float *out = check_buf(L, 2, dim, n);
    float *x = check_buf(L, 3, dim, n);
    luaL_argcheck(L, out != x, 2, "out must not alias x");
    for (int i = 0; i < n_seq; i++) {
        const state_ud *s = slm_bind_seq_state(L, 4, i, STATE_MT, "an RWKV state");
        if (!s->st) return luaL_error(L, "attempt to use a freed RWKV state");
        seqs[i].state = s->st;
        luaL_argcheck(L, layer >= 1 && layer <= ((slm_rwkv_state *)seqs[i].state)->n_layer, 5,
                      "layer out of range");
    }
    slm_error err = {0};
    slm_pool *pool = slm_pool_default(&err);
    if (!pool) return slm_bind_error(L, &err);
    slm_status s = is_time ? slm_rwkv_tmix_forward_seqs(pool, &m->t, seqs, n_seq, (int)layer - 1, x, out, work, &err)
                           : slm_rwkv_cmix_forward_seqs(pool, &m->c, seqs, n_seq, (int)layer - 1, x, out, work, &err);
    if (s != SLM_OK) return slm_bind_error(L, &err);
    return 0;
}

static int mix_forward(lua_State *L, const char *mt, int is_time)
{
    mix_ud *m = luaL_checkudata(L, 1, mt);
    if (m->closed) return luaL_error(L, "attempt to use a freed RWKV block");
    if (luaL_testudata(L, 4, SLM_SEQBATCH_MT)) return mix_forward_seqs(L, m, is_time);
    int64_t dim = is_time ? m->t.dim : m->c.dim;
    slm_rwkv_state *st = check_state(L, 4);
    lua_Integer layer = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 6);
    luaL_argcheck(L, layer >= 1 && layer <= st->n_layer, 5, "layer out of range");
    luaL_argcheck(L, n >= 1 && n <= st->n_batch, 6, "row count out of range");
    float *out = check_buf(L, 2, dim, n);
    float *x = check_buf(L, 3, dim, n);
    luaL_argcheck(L, out != x, 2, "out must not alias x");
    slm_error err = {0};
    slm_pool *pool = slm_pool_default(&err);
    if (!pool) return slm_bind_error(L, &err);
    slm_status s = is_time ? slm_rwkv_tmix_forward(pool, &m->t, st, (int)layer - 1, (int)n, x, out, &err)
                           : slm_rwkv_cmix_forward(pool, &m->c, st, (int)layer - 1, (int)n, x, out, &err);
    if (s != SLM_OK) return slm_bind_error(L, &err);
    return 0;
}

static int tmix_forward(lua_State *L) { return mix_forward(L, TMIX_MT, 1); }
static int cmix_forward(lua_State *L) { return mix_forward(L, CMIX_MT, 0); }

void slm_bind_open_rwkv(lua_State *L)
{
    static const luaL_Reg tmix_m[] = {{"forward", tmix_forward}, {NULL, NULL}};
    static const luaL_Reg cmix_m[] = {{"forward", cmix_forward}, {NULL, NULL}};
    static const luaL_Reg state_m[] = {{"reset", state_reset}, {"bytes", state_bytes},
                                       {"snapshot", state_snapshot}, {"restore", state_restore},
                                       {NULL, NULL}};
    slm_bind_new_meta(L, TMIX_MT, mix_gc, tmix_m);
    slm_bind_new_meta(L, CMIX_MT, mix_gc, cmix_m);
    slm_bind_new_meta(L, STATE_MT, state_gc, state_m);
    static const luaL_Reg fns[] = {{"time_mix", l_time_mix}, {"channel_mix", l_channel_mix},
                                   {"state", l_state}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "rwkv");
}
