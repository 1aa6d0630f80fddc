/* `slm.core.mamba`: the Mamba-1 mixer block and its recurrent state.
 *
 *   mamba.block{version=1|2, dim=, d_inner=, d_conv=, d_state=, dt_rank=,
 *               n_group=, eps=, dt_b_c_rms=,
 *               ssm_in=, ssm_x=, ssm_dt=, ssm_out=,    -- matrices, any dtype
 *               conv_w=, conv_b=, dt_b=, A=, D=, norm=} -- f32 tensors
 *     -> slm.MambaBlock     blk:forward(out, x, state, layer, n)
 *     (Mamba-2: dt_rank = n_head, no ssm_x / ssm_dt, norm = ssm_norm.weight)
 *   mamba.state{n_layer=, n_batch=, and the block's version/shape fields}
 *     -> slm.MambaState     st:snapshot(n_past) -> string, st:restore(string)
 *                           -> n_past, st:clear(), st:bytes()
 *
 * forward runs rows 1..n of the f32 (n_batch, dim) buffers x -> out for
 * layer (1-based) and advances that layer's state by n tokens. A snapshot
 * holds the conv and scan states of every layer: O(state), independent of
 * the number of tokens seen. */
#include <stdint.h>
#include <string.h>

#include "../blocks/mamba.h"
#include "../blocks/seqbatch.h"
#include "../core/pool.h"
#include "bind.h"

#define BLOCK_MT "slm.MambaBlock"
#define STATE_MT "slm.MambaState"

enum { W_IN, W_X, W_DT, W_OUT, V_CONV_W, V_CONV_B, V_DT_B, V_A, V_D, V_NORM, N_OWN };

typedef struct block_ud {
    slm_mamba_block b;
    slm_tensor *own[N_OWN];
    int closed;
} block_ud;

typedef struct state_ud {
    slm_mamba_state *st;
    slm_mamba_work *work;
} state_ud;

/* version, dims and options of a block (dim only when with_dim) */
static void shape_fields(lua_State *L, int idx, slm_mamba_shape *h, int with_dim)
{
    h->version = (int)slm_bind_int_field(L, idx, "version", 1, 0);
    h->dim = with_dim ? slm_bind_int_field(L, idx, "dim", 0, 1) : 1;
    h->d_inner = slm_bind_int_field(L, idx, "d_inner", 0, 1);
    h->d_conv = slm_bind_int_field(L, idx, "d_conv", 4, 0);
    h->d_state = slm_bind_int_field(L, idx, "d_state", 16, 0);
    h->dt_rank = slm_bind_int_field(L, idx, "dt_rank", 0, 1);
    h->n_group = slm_bind_int_field(L, idx, "n_group", 1, 0);
    lua_getfield(L, idx, "eps");
    h->eps = lua_isnil(L, -1) ? 1e-5f : (float)luaL_checknumber(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, idx, "dt_b_c_rms");
    h->dt_b_c_rms = lua_toboolean(L, -1);
    lua_pop(L, 1);
}

/* field name of the table at idx as a new view of the tensor (required) */
static slm_tensor *weight_field(lua_State *L, int idx, const char *name)
{
    lua_getfield(L, idx, name);
    if (!luaL_testudata(L, -1, SLM_TENSOR_MT))
        luaL_error(L, "mamba.block: field '%s' must be a tensor", name);
    slm_tensor *t = slm_bind_check_tensor(L, -1);
    slm_error err = {0};
    slm_tensor *v = slm_tensor_view(t, &err);
    if (!v) slm_bind_error(L, &err);
    lua_pop(L, 1);
    return v;
}

static const float *f32_vec(lua_State *L, const slm_tensor *t, int64_t n, const char *name)
{
    if (t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t) || slm_tensor_numel(t) != n)
        luaL_error(L, "mamba.block: %s must hold %lld contiguous f32 values, got a %s tensor of %lld",
                   name, (long long)n, slm_dtype_name(t->dtype), (long long)slm_tensor_numel(t));
    return slm_tensor_data(t);
}

/* --- block ------------------------------------------------------------------- */

static int block_gc(lua_State *L)
{
    block_ud *u = luaL_checkudata(L, 1, BLOCK_MT);
    for (int i = 0; i < N_OWN; i++) {
        slm_tensor_free(u->own[i]);
        u->own[i] = NULL;
    }
    u->closed = 1;
    return 0;
}

static block_ud *check_block(lua_State *L, int idx)
{
    block_ud *u = luaL_checkudata(L, idx, BLOCK_MT);
    if (u->closed) luaL_error(L, "attempt to use a freed mamba block");
    return u;
}

static int l_block(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    /* the userdata owns the views from the start, so an error frees them */
    block_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, BLOCK_MT);
    slm_mamba_shape *h = &u->b.shape;
    shape_fields(L, 1, h, 1);
    slm_error err = {0};
    /* dims first (bounded, so the products below cannot overflow) */
    if (slm_mamba_shape_check(h, &err) != SLM_OK) return slm_bind_error(L, &err);
    int v2 = h->version == 2;
    static const char *const names[N_OWN] = {"ssm_in", "ssm_x", "ssm_dt", "ssm_out", "conv_w",
                                             "conv_b", "dt_b", "A", "D", "norm"};
    for (int i = 0; i < N_OWN; i++) {
        int unused = v2 ? (i == W_X || i == W_DT) : i == V_NORM;
        if (!unused) u->own[i] = weight_field(L, 1, names[i]);
    }
    slm_mamba_block *b = &u->b;
    b->w_in = u->own[W_IN];
    b->w_x = u->own[W_X];
    b->w_dt = u->own[W_DT];
    b->w_out = u->own[W_OUT];
    int64_t ch = slm_mamba_conv_channels(h), per = v2 ? h->dt_rank : h->d_inner;
    b->conv_w = f32_vec(L, u->own[V_CONV_W], ch * h->d_conv, "conv_w");
    b->conv_b = f32_vec(L, u->own[V_CONV_B], ch, "conv_b");
    b->dt_b = f32_vec(L, u->own[V_DT_B], per, "dt_b");
    b->A = f32_vec(L, u->own[V_A], v2 ? h->dt_rank : h->d_inner * h->d_state, "A");
    b->D = f32_vec(L, u->own[V_D], per, "D");
    if (v2) b->norm_w = f32_vec(L, u->own[V_NORM], h->d_inner, "norm");
    if (slm_mamba_block_check(b, &err) != SLM_OK) return slm_bind_error(L, &err);
    return 1;
}

/* --- state ------------------------------------------------------------------- */

static int state_close(lua_State *L)
{
    state_ud *s = luaL_checkudata(L, 1, STATE_MT);
    slm_mamba_state_free(s->st);
    slm_mamba_work_free(s->work);
    s->st = NULL;
    s->work = NULL;
    return 0;
}

static state_ud *check_state(lua_State *L, int idx)
{
    state_ud *s = luaL_checkudata(L, idx, STATE_MT);
    if (!s->st) luaL_error(L, "attempt to use a freed session state");
    return s;
}

static int l_state(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n_layer = slm_bind_int_field(L, 1, "n_layer", 0, 1), n_batch = slm_bind_int_field(L, 1, "n_batch", 1, 0);
    slm_mamba_shape h;
    shape_fields(L, 1, &h, 0);
    /* the constructors check the rest; these keep the int casts exact */
    if (n_layer < 1 || n_layer > 4096 || n_batch < 1 || n_batch > 65536)
        return luaL_error(L, "mamba.state: n_layer %lld or n_batch %lld out of range",
                          (long long)n_layer, (long long)n_batch);
    state_ud *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->st = NULL;
    s->work = NULL;
    luaL_setmetatable(L, STATE_MT);
    slm_error err = {0};
    s->st = slm_mamba_state_new((int)n_layer, &h, &err);
    if (!s->st) return slm_bind_error(L, &err);
    s->work = slm_mamba_work_new((int)n_batch, &h, &err);
    if (!s->work) return slm_bind_error(L, &err);
    return 1;
}

static int state_clear(lua_State *L)
{
    slm_mamba_state_clear(check_state(L, 1)->st);
    return 0;
}

static int state_bytes(lua_State *L)
{
    const slm_mamba_state *st = check_state(L, 1)->st;
    lua_pushinteger(L, (lua_Integer)((slm_mamba_state_conv_len(st) + slm_mamba_state_ssm_len(st)) * sizeof(float)));
    return 1;
}

/* snapshot(n_past) -> string (the layout of blocks/mamba.h) */
static int state_snapshot(lua_State *L)
{
    slm_mamba_state *st = check_state(L, 1)->st;
    lua_Integer n_past = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n_past >= 0 && n_past <= INT32_MAX, 2, "n_past out of range");
    size_t n = slm_mamba_snapshot_size(st);
    luaL_Buffer B;
    char *p = luaL_buffinitsize(L, &B, n);
    slm_mamba_snapshot(st, (int)n_past, p);
    luaL_pushresultsize(&B, n);
    return 1;
}

/* restore(str) -> n_past */
static int state_restore(lua_State *L)
{
    slm_mamba_state *st = check_state(L, 1)->st;
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    int n_past;
    slm_error err = {0};
    if (slm_mamba_restore(st, s, len, &n_past, &err) != SLM_OK) return slm_bind_error(L, &err);
    lua_pushinteger(L, n_past);
    return 1;
}

/* --- forward ------------------------------------------------------------------- */

/* mixer:forward(out, x, seqbatch, layer, n, work): the rows of several
 * sessions (slm.batch), each against its own state; work is a state (of
 * any sessions' count) whose scratch holds the n = seqbatch:rows() rows */
static int block_forward_seqs(lua_State *L, block_ud *u)
{
    int64_t orows, odim, xrows, xdim;
    float *out = slm_bind_check_buf(L, 2, &orows, &odim);
    float *x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    int n_seq;
    struct slm_seq *seqs = slm_bind_check_seqs(L, 4, &n_seq);
    lua_Integer layer = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 6);
    state_ud *w = check_state(L, 7);
    const slm_mamba_shape *h = &u->b.shape;
    luaL_argcheck(L, odim == h->dim && xdim == h->dim, 2, "buffer width differs from the model dim");
    luaL_argcheck(L, out != x, 2, "out must not be the input buffer");
    luaL_argcheck(L, n == slm_seq_rows(seqs, n_seq) && n <= w->work->n_batch && n <= orows && n <= xrows, 6,
                  "row count differs from the batch's rows or exceeds the buffers");
    for (int i = 0; i < n_seq; i++) {
        const state_ud *s = slm_bind_seq_state(L, 4, i, STATE_MT, "a Mamba state");
        if (!s->st) return luaL_error(L, "attempt to use a freed session state");
        seqs[i].state = s->st;
        luaL_argcheck(L, layer >= 1 && layer <= ((slm_mamba_state *)seqs[i].state)->n_layer, 5,
                      "layer out of range");
    }
    slm_error err = {0};
    slm_pool *pool = slm_pool_default(&err);
    if (!pool) return slm_bind_error(L, &err);
    if (slm_mamba_forward_seqs(pool, &u->b, seqs, n_seq, (int)layer - 1, x, out, w->work, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

/* An f32 activation buffer: writable, contiguous, (rows, dim). */
static int block_forward(lua_State *L)
{
    block_ud *u = check_block(L, 1);
    if (luaL_testudata(L, 4, SLM_SEQBATCH_MT)) return block_forward_seqs(L, u);
    int64_t orows, odim, xrows, xdim;
    float *out = slm_bind_check_buf(L, 2, &orows, &odim);
    float *x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    state_ud *s = check_state(L, 4);
    lua_Integer layer = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 6);
    const slm_mamba_shape *h = &u->b.shape;
    luaL_argcheck(L, odim == h->dim && xdim == h->dim, 2, "buffer width differs from the model dim");
    luaL_argcheck(L, out != x, 2, "out must not be the input buffer");
    luaL_argcheck(L, layer >= 1 && layer <= s->st->n_layer, 5, "layer out of range");
    luaL_argcheck(L, n >= 1 && n <= s->work->n_batch && n <= orows && n <= xrows, 6,
                  "row count out of range");
    slm_error err = {0};
    slm_pool *pool = slm_pool_default(&err);
    if (!pool) return slm_bind_error(L, &err);
    if (slm_mamba_forward(pool, &u->b, s->st, (int)layer - 1, (int)n, x, out, s->work, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

void slm_bind_open_mamba(lua_State *L)
{
    static const luaL_Reg block_m[] = {{"forward", block_forward}, {NULL, NULL}};
    static const luaL_Reg state_m[] = {{"snapshot", state_snapshot}, {"restore", state_restore},
                                       {"clear", state_clear}, {"bytes", state_bytes},
                                       {NULL, NULL}};
    slm_bind_new_meta(L, BLOCK_MT, block_gc, block_m);
    slm_bind_new_meta(L, STATE_MT, state_close, state_m);
    static const luaL_Reg fns[] = {{"block", l_block}, {"state", l_state}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "mamba");
}
