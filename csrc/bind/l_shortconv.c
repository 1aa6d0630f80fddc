/* `slm.core.shortconv`: LFM2's gated short convolution block and its
 * per-session conv state (blocks/shortconv.h).
 *
 *   shortconv.block{dim =, l_cache =, in_proj =, out_proj =, conv =}
 *     -> slm.ShortConvBlock   blk:forward(out, x, state, slot, n, work)
 *                             blk:work_size(n) bytes of workspace n rows need
 *     (in_proj (3 dim, dim) and out_proj (dim, dim) of any dtype, conv the
 *     f32 taps (dim, l_cache))
 *   shortconv.state{n_layer =, dim =, l_cache =}
 *     -> slm.ShortConvState   st:snapshot(n_past) -> string,
 *                             st:restore(string) -> n_past, st:clear(), st:bytes()
 *
 * forward runs rows 1..n of the f32 (n_batch, dim) buffers x -> out for the
 * conv layer in slot (1-based: the state has one slot per conv layer of
 * the layer plan) and advances that slot by n tokens; work is the
 * session's blocks.workspace. The snapshot layout is blocks/shortconv.h's. */
#include <stdint.h>
#include <string.h>

#include "../blocks/shortconv.h"
#include "../core/pool.h"
#include "bind.h"

#define BLOCK_MT "slm.ShortConvBlock"
#define STATE_MT "slm.ShortConvState"

/* --- block --------------------------------------------------------------------- */

enum { OWN_IN, OWN_OUT, OWN_CONV, N_OWN };

typedef struct block_ud {
    slm_shortconv_block b;
    slm_tensor *own[N_OWN];   /* views of in_proj, out_proj, conv */
    int closed;
} block_ud;

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
    if (u->closed) luaL_error(L, "attempt to use a freed shortconv block");
    return u;
}

static int l_block(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    /* the userdata owns the views from the start, so an error frees them */
    block_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, BLOCK_MT);
    static const char *const names[N_OWN] = {"in_proj", "out_proj", "conv"};
    for (int i = 0; i < N_OWN; i++) {
        lua_getfield(L, 1, names[i]);
        if (!luaL_testudata(L, -1, SLM_TENSOR_MT)) luaL_error(L, "shortconv.block: field '%s' must be a tensor", names[i]);
        slm_error err = {0};
        u->own[i] = slm_tensor_view(slm_bind_check_tensor(L, -1), &err);
        if (!u->own[i]) slm_bind_error(L, &err);
        lua_pop(L, 1);
    }
    slm_shortconv_block *b = &u->b;
    lua_Integer dim = slm_bind_int_field(L, 1, "dim", 0, 1), l_cache = slm_bind_int_field(L, 1, "l_cache", 0, 1);
    if (dim < 1 || dim > (1 << 20) || l_cache < 1 || l_cache > SLM_SHORTCONV_MAX_CACHE)
        return luaL_error(L, "shortconv.block: dim %I or l_cache %I out of range", dim, l_cache);
    b->dim = dim;
    b->l_cache = (int)l_cache;
    b->in_proj = u->own[OWN_IN];
    b->out_proj = u->own[OWN_OUT];
    const slm_tensor *c = u->own[OWN_CONV];
    if (c->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(c) || slm_tensor_numel(c) != dim * l_cache)
        return luaL_error(L, "shortconv.block: conv must hold %I contiguous f32 taps (dim x l_cache), got a %s "
                          "tensor of %I", dim * l_cache, slm_dtype_name(c->dtype), (lua_Integer)slm_tensor_numel(c));
    b->conv = slm_tensor_data(c);
    slm_error err = {0};
    if (slm_shortconv_check(b, &err) != SLM_OK) return slm_bind_error(L, &err);
    return 1;
}

static int block_work_size(lua_State *L)
{
    block_ud *u = check_block(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1 && n <= 65536, 2, "row count out of range 1..65536");
    lua_pushinteger(L, (lua_Integer)slm_shortconv_work_size(&u->b, (int)n));
    return 1;
}

/* --- state --------------------------------------------------------------------- */

typedef struct state_ud {
    slm_shortconv_state *st;
} state_ud;

static int state_close(lua_State *L)
{
    state_ud *s = luaL_checkudata(L, 1, STATE_MT);
    slm_shortconv_state_free(s->st);
    s->st = NULL;
    return 0;
}

static slm_shortconv_state *check_state(lua_State *L, int idx)
{
    state_ud *s = luaL_checkudata(L, idx, STATE_MT);
    if (!s->st) luaL_error(L, "attempt to use a freed session state");
    return s->st;
}

static int l_state(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n = slm_bind_int_field(L, 1, "n_layer", 0, 1), dim = slm_bind_int_field(L, 1, "dim", 0, 1);
    lua_Integer l_cache = slm_bind_int_field(L, 1, "l_cache", 0, 1);
    /* the constructor checks the ranges; these keep the int casts exact */
    if (n < 1 || n > 4096 || dim < 1 || dim > (1 << 20) || l_cache < 1 || l_cache > SLM_SHORTCONV_MAX_CACHE)
        return luaL_error(L, "shortconv.state: n_layer %I, dim %I or l_cache %I out of range", n, dim, l_cache);
    state_ud *s = lua_newuserdatauv(L, sizeof *s, 0);
    s->st = NULL;
    luaL_setmetatable(L, STATE_MT);
    slm_error err = {0};
    s->st = slm_shortconv_state_new((int)n, dim, (int)l_cache, &err);
    if (!s->st) return slm_bind_error(L, &err);
    return 1;
}

static int state_clear(lua_State *L)
{
    slm_shortconv_state_clear(check_state(L, 1));
    return 0;
}

static int state_bytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)(slm_shortconv_state_len(check_state(L, 1)) * sizeof(float)));
    return 1;
}

static int state_snapshot(lua_State *L)
{
    slm_shortconv_state *st = check_state(L, 1);
    lua_Integer n_past = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n_past >= 0 && n_past <= INT32_MAX, 2, "n_past out of range");
    size_t n = slm_shortconv_snapshot_size(st);
    luaL_Buffer B;
    char *p = luaL_buffinitsize(L, &B, n);
    slm_shortconv_snapshot(st, (int)n_past, p);
    luaL_pushresultsize(&B, n);
    return 1;
}

static int state_restore(lua_State *L)
{
    slm_shortconv_state *st = check_state(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    slm_error err = {0};
    int n_past = 0;
    if (slm_shortconv_restore(st, s, len, &n_past, &err) != SLM_OK) return slm_bind_error(L, &err);
    lua_pushinteger(L, n_past);
    return 1;
}

/* --- forward ------------------------------------------------------------------- */

static int block_forward(lua_State *L)
{
    block_ud *u = check_block(L, 1);
    int64_t orows, odim, xrows, xdim;
    float *out = slm_bind_check_buf(L, 2, &orows, &odim);
    float *x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    slm_shortconv_state *st = check_state(L, 4);
    lua_Integer slot = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 6);
    const slm_work *work = slm_bind_check_work(L, 7);
    luaL_argcheck(L, odim == u->b.dim && xdim == u->b.dim, 2, "buffer width differs from the model dim");
    luaL_argcheck(L, out != x, 2, "output aliases the input");
    luaL_argcheck(L, slot >= 1 && slot <= st->n_slot, 5, "conv layer slot out of range");
    luaL_argcheck(L, n >= 1 && n <= 65536 && n <= orows && n <= xrows, 6, "row count out of range");
    slm_error err = {0};
    slm_pool *pool = slm_pool_default(&err);
    if (!pool) return slm_bind_error(L, &err);
    if (slm_shortconv_forward(pool, &u->b, st, (int)slot - 1, (int)n, x, out, work, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

void slm_bind_open_shortconv(lua_State *L)
{
    static const luaL_Reg block_m[] = {{"forward", block_forward}, {"work_size", block_work_size},
                                       {NULL, NULL}};
    static const luaL_Reg state_m[] = {{"snapshot", state_snapshot}, {"restore", state_restore},
                                       {"clear", state_clear}, {"bytes", state_bytes}, {NULL, NULL}};
    slm_bind_new_meta(L, BLOCK_MT, block_gc, block_m);
    slm_bind_new_meta(L, STATE_MT, state_close, state_m);
    static const luaL_Reg fns[] = {{"block", l_block}, {"state", l_state}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "shortconv");
}
