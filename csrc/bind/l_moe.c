/* Mixture-of-experts blocks in `slm.core.blocks` (blocks/moe.h):
 *
 *   blocks.moe{dim =, n_expert =, n_used =, n_ff =, router =, gate =, up =,
 *              down =, gating = "softmax"|"sigmoid", norm = bool, scale = 1,
 *              act = "silu"|"gelu", shared = {gate =, up =, down =},
 *              shared_gate =}                     -> slm.MoEBlock
 *     blk:route(logits, x, n)        logits rows 1..n = router . x rows
 *     blk:forward(out, x, logits, work, n [, modes [, counts, layer]])
 *         modes: a string of n_expert bytes (0 normal, 1 disabled, 2 forced)
 *         counts: an slm.ExpertCounts; layer (1-based) its row
 *     blk:work_size(n)
 *   blocks.expert_counts(n_layer, n_expert) -> slm.ExpertCounts
 *     c:get() -> {[layer] = {[expert] = count}} (0-based keys), c:reset()
 *
 * Buffers are f32 tensors (rows, width) as in l_blocks.c. */
#include <stdlib.h>
#include <string.h>

#include "../blocks/moe.h"
#include "bind.h"

#define MOE_MT "slm.MoEBlock"
#define COUNTS_MT "slm.ExpertCounts"

enum { OWN_ROUTER, OWN_GATE, OWN_UP, OWN_DOWN, OWN_SH_GATE, OWN_SH_UP, OWN_SH_DOWN, OWN_SH_INP, N_OWN };

typedef struct moe_ud {
    slm_moe_block b;
    slm_tensor *own[N_OWN];
    int64_t dim;
    int closed;
} moe_ud;

static int moe_gc(lua_State *L)
{
    moe_ud *u = luaL_checkudata(L, 1, MOE_MT);
    for (int i = 0; i < N_OWN; i++) {
        slm_tensor_free(u->own[i]);
        u->own[i] = NULL;
    }
    u->closed = 1;
    return 0;
}

static moe_ud *check_moe(lua_State *L, int idx)
{
    moe_ud *u = luaL_checkudata(L, idx, MOE_MT);
    if (u->closed) luaL_error(L, "attempt to use a freed moe block");
    return u;
}

static int l_moe(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    moe_ud *u = lua_newuserdatauv(L, sizeof *u, 0);   /* owns the views: an error frees them */
    memset(u, 0, sizeof *u);
    luaL_setmetatable(L, MOE_MT);
    static const char *const names[4] = {"router", "gate", "up", "down"};
    for (int i = 0; i < 4; i++) u->own[i] = slm_bind_opt_weight(L, 1, names[i]);
    slm_moe_block *b = &u->b;
    b->router = u->own[OWN_ROUTER];
    b->gate = u->own[OWN_GATE];
    b->up = u->own[OWN_UP];
    b->down = u->own[OWN_DOWN];
    u->dim = slm_bind_int_field(L, 1, "dim", 0, 1);
    lua_Integer ne = slm_bind_int_field(L, 1, "n_expert", 0, 1), nu = slm_bind_int_field(L, 1, "n_used", 0, 1);
    lua_Integer ff = slm_bind_int_field(L, 1, "n_ff", 0, 1);
    if (ne < 1 || ne > SLM_MOE_MAX_EXPERTS || nu < 1 || nu > ne)
        return luaL_error(L, "moe: %I of %I experts per token (experts 1..%d)", nu, ne, SLM_MOE_MAX_EXPERTS);
    if (ff < 1 || ff > (1 << 24) || u->dim < 1) return luaL_error(L, "moe: n_ff %I or dim out of range", ff);
    b->n_expert = (int)ne;
    b->n_used = (int)nu;
    b->n_ff = ff;
    static const char *const gatings[] = {"softmax", "sigmoid", NULL};
    lua_getfield(L, 1, "gating");
    b->gating = lua_isnil(L, -1) ? SLM_MOE_SOFTMAX : (slm_moe_gating)luaL_checkoption(L, -1, NULL, gatings);
    lua_pop(L, 1);
    static const char *const acts[] = {"silu", "gelu", NULL};
    lua_getfield(L, 1, "act");
    b->act = lua_isnil(L, -1) ? SLM_FFN_SILU : (slm_ffn_act)luaL_checkoption(L, -1, NULL, acts);
    lua_pop(L, 1);
    lua_getfield(L, 1, "norm");
    b->norm_topk = lua_toboolean(L, -1);
    lua_pop(L, 1);
    b->scale = (float)slm_bind_num_field(L, 1, "scale", 1.0);
    if (lua_getfield(L, 1, "shared") == LUA_TTABLE) {
        int t = lua_gettop(L);
        u->own[OWN_SH_GATE] = slm_bind_opt_weight(L, t, "gate");
        u->own[OWN_SH_UP] = slm_bind_opt_weight(L, t, "up");
        u->own[OWN_SH_DOWN] = slm_bind_opt_weight(L, t, "down");
        b->has_shared = 1;
        b->shared = (slm_ffn_block){.gate = u->own[OWN_SH_GATE], .up = u->own[OWN_SH_UP],
                                    .down = u->own[OWN_SH_DOWN], .gated = 1, .act = b->act};
        const slm_tensor *d = b->shared.down;
        b->shared.n_ff = d && d->ndim == 2 ? d->shape[1] : 0;
    } else if (!lua_isnil(L, -1)) {
        return luaL_error(L, "moe: field 'shared' must be a table of gate, up, down");
    }
    lua_pop(L, 1);
    u->own[OWN_SH_INP] = slm_bind_opt_weight(L, 1, "shared_gate");
    b->shexp_gate = u->own[OWN_SH_INP];
    if (b->shexp_gate && !b->has_shared) return luaL_error(L, "moe: shared_gate without a shared expert");
    slm_error err = {0};
    if (slm_moe_block_check(b, u->dim, &err) != SLM_OK) return slm_bind_error(L, &err);
    return 1;
}

static int moe_route(lua_State *L)
{
    moe_ud *u = check_moe(L, 1);
    int64_t lrows, lw, xrows, xdim;
    float *logits = slm_bind_check_buf(L, 2, &lrows, &lw);
    float *x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    lua_Integer n = luaL_checkinteger(L, 4);
    luaL_argcheck(L, lw == u->b.n_expert, 2, "width differs from the number of experts");
    luaL_argcheck(L, xdim == u->dim, 3, "buffer width differs from the model dim");
    luaL_argcheck(L, n >= 1 && n <= lrows && n <= xrows, 4, "row count out of range");
    slm_error err = {0};
    slm_pool *pool = slm_pool_default(&err);
    if (!pool || slm_moe_route(pool, &u->b, (int)n, x, logits, &err) != SLM_OK) return slm_bind_error(L, &err);
    return 0;
}

typedef struct counts_ud {
    int n_layer, n_expert;
    int64_t *c;     /* n_layer * n_expert */
} counts_ud;

static int counts_gc(lua_State *L)
{
    counts_ud *c = luaL_checkudata(L, 1, COUNTS_MT);
    free(c->c);
    c->c = NULL;
    return 0;
}

static counts_ud *check_counts(lua_State *L, int idx)
{
    counts_ud *c = luaL_checkudata(L, idx, COUNTS_MT);
    if (!c->c) luaL_error(L, "attempt to use freed expert counts");
    return c;
}

static int moe_forward(lua_State *L)
{
    moe_ud *u = check_moe(L, 1);
    const slm_moe_block *b = &u->b;
    int64_t orows, odim, xrows, xdim, lrows, lw;
    float *out = slm_bind_check_buf(L, 2, &orows, &odim);
    float *x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    float *logits = slm_bind_check_buf(L, 4, &lrows, &lw);
    const slm_work *work = slm_bind_check_work(L, 5);
    lua_Integer n = luaL_checkinteger(L, 6);
    luaL_argcheck(L, odim == u->dim && xdim == u->dim, 2, "buffer width differs from the model dim");
    luaL_argcheck(L, out != x, 2, "output aliases the input");
    luaL_argcheck(L, lw == b->n_expert, 4, "width differs from the number of experts");
    luaL_argcheck(L, n >= 1 && n <= orows && n <= xrows && n <= lrows && n <= 65536, 6, "row count out of range");
    const uint8_t *modes = NULL;
    if (!lua_isnoneornil(L, 7)) {
        size_t len;
        modes = (const uint8_t *)luaL_checklstring(L, 7, &len);
        luaL_argcheck(L, len == (size_t)b->n_expert, 7, "expert modes must hold one byte per expert");
        int forced = 0, usable = 0;
        for (size_t e = 0; e < len; e++) {
            luaL_argcheck(L, modes[e] <= SLM_MOE_FORCED, 7, "expert mode out of range");
            forced += modes[e] == SLM_MOE_FORCED;
            usable += modes[e] != SLM_MOE_DISABLED;
        }
        luaL_argcheck(L, forced <= b->n_used && usable >= b->n_used, 7,
                      "more forced experts than slots, or fewer usable experts than slots");
    }
    /* counts: one session's ExpertCounts, or (a batch of sessions) a list
     * of {ExpertCounts, rows} covering the n rows in order */
    int64_t **counts = NULL, *few[64];   /* decode and small batches: no allocation per layer */
    if (!lua_isnoneornil(L, 8)) {
        lua_Integer layer = luaL_checkinteger(L, 9);
        counts = n <= 64 ? few : lua_newuserdatauv(L, (size_t)n * sizeof *counts, 0);
        const int list = lua_type(L, 8) == LUA_TTABLE;
        lua_Integer filled = 0;
        for (lua_Integer j = 1; filled < n; j++) {
            lua_Integer rows = n;
            if (list) {
                luaL_argcheck(L, lua_rawgeti(L, 8, j) == LUA_TTABLE, 8, "counts list ends before the rows do");
                lua_rawgeti(L, -1, 1);
                lua_rawgeti(L, -2, 2);
                rows = lua_tointeger(L, -1);
                luaL_argcheck(L, rows >= 1 && rows <= n - filled, 8, "a counts entry's row count is out of range");
                lua_pop(L, 1);
            } else {
                lua_pushvalue(L, 8);
            }
            counts_ud *c = check_counts(L, -1);
            luaL_argcheck(L, c->n_expert == b->n_expert && layer >= 1 && layer <= c->n_layer, 9,
                          "counts shaped for another model or layer out of range");
            for (lua_Integer r = 0; r < rows; r++)
                counts[filled + r] = c->c + (size_t)(layer - 1) * (size_t)c->n_expert;
            filled += rows;
            lua_pop(L, list ? 2 : 1);
        }
    }
    slm_error err = {0};
    slm_pool *pool = slm_pool_default(&err);
    if (!pool || slm_moe_forward(pool, b, (int)n, x, logits, modes, (int64_t *const *)counts, out, u->dim, work, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

static int moe_work_size(lua_State *L)
{
    moe_ud *u = check_moe(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1 && n <= 65536, 2, "row count out of range 1..65536");
    lua_pushinteger(L, (lua_Integer)slm_moe_work_size(&u->b, (int)n, u->dim));
    return 1;
}

static int l_expert_counts(lua_State *L)
{
    lua_Integer nl = luaL_checkinteger(L, 1), ne = luaL_checkinteger(L, 2);
    luaL_argcheck(L, nl >= 1 && nl <= 4096, 1, "layer count out of range");
    luaL_argcheck(L, ne >= 1 && ne <= SLM_MOE_MAX_EXPERTS, 2, "expert count out of range");
    counts_ud *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->c = NULL;
    luaL_setmetatable(L, COUNTS_MT);
    c->c = calloc((size_t)(nl * ne), sizeof *c->c);
    if (!c->c) return luaL_error(L, "expert counts: out of memory");
    c->n_layer = (int)nl;
    c->n_expert = (int)ne;
    return 1;
}

static int counts_get(lua_State *L)
{
    counts_ud *c = check_counts(L, 1);
    lua_createtable(L, 0, c->n_layer);
    for (int l = 0; l < c->n_layer; l++) {
        lua_createtable(L, 0, c->n_expert);
        for (int e = 0; e < c->n_expert; e++) {
            lua_pushinteger(L, c->c[(size_t)l * (size_t)c->n_expert + (size_t)e]);
            lua_rawseti(L, -2, e);
        }
        lua_rawseti(L, -2, l);
    }
    return 1;
}

static int counts_reset(lua_State *L)
{
    counts_ud *c = check_counts(L, 1);
    memset(c->c, 0, (size_t)c->n_layer * (size_t)c->n_expert * sizeof *c->c);
    return 0;
}

void slm_bind_open_moe(lua_State *L)
{
    static const luaL_Reg moe_m[] = {{"route", moe_route}, {"forward", moe_forward},
                                     {"work_size", moe_work_size}, {NULL, NULL}};
    static const luaL_Reg counts_m[] = {{"get", counts_get}, {"reset", counts_reset}, {NULL, NULL}};
    slm_bind_new_meta(L, MOE_MT, moe_gc, moe_m);
    slm_bind_new_meta(L, COUNTS_MT, counts_gc, counts_m);
    lua_getfield(L, -1, "blocks");
    lua_pushcfunction(L, l_moe);
    lua_setfield(L, -2, "moe");
    lua_pushcfunction(L, l_expert_counts);
    lua_setfield(L, -2, "expert_counts");
    lua_pop(L, 1);
}
