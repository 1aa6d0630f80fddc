/* `slm.core.lora`: unmerged adapters on weights (core/lora_link.h) and the
 * LoRA training kernels over a frozen base of any dtype (train/lora_grad.h).
 *
 *   link(A, B, scale) -> link            A (r, in), B (out, r) f32 contiguous
 *   link:set_scale(s)  link:scale() -> s (acts on every product at once)
 *   attach(W, link) -> W'                a view of W whose products add
 *                                        scale (x A^T) B^T; a link attaches once
 *   links(W) -> n                        links on W's chain
 *   deq_linear(y, x, W [, b])            y = x deq(W)^T (+ b), W any dtype
 *   deq_linear_dx(dx, dy, W, acc)        dx (+)= dy deq(W)
 *   dropout(out, x, p, seed)             out = mask(seed) x / (1 - p); out may be x
 *
 * Misuse raises "bad argument #i to 'name' (...)". */
#include <string.h>

#include "../core/lora_link.h"
#include "../core/pool.h"
#include "../kernels/matmul.h"
#include "../train/lora_grad.h"
#include "bind.h"

#define LINK_MT "slm.LoraLink"

typedef struct link_ud {
    slm_lora_link *l;
} link_ud;

static slm_lora_link *check_link(lua_State *L, int i)
{
    link_ud *u = luaL_checkudata(L, i, LINK_MT);
    if (!u->l) luaL_error(L, "attempt to use a freed LoRA link");
    return u->l;
}

static int link_close(lua_State *L)
{
    link_ud *u = luaL_checkudata(L, 1, LINK_MT);
    slm_lora_link_unref(u->l);   /* the tensors it is attached to keep their references */
    u->l = NULL;
    return 0;
}

static slm_tensor *f32_arg(lua_State *L, int i, const char *what, int out)
{
    slm_tensor *t = slm_bind_check_tensor(L, i);
    luaL_argcheck(L, t->dtype == SLM_DTYPE_F32, i, lua_pushfstring(L, "%s: expected f32, got %s", what,
                                                                   slm_dtype_name(t->dtype)));
    luaL_argcheck(L, slm_tensor_is_contiguous(t), i, lua_pushfstring(L, "%s: expected a contiguous tensor", what));
    luaL_argcheck(L, !out || !t->storage->readonly, i, lua_pushfstring(L, "%s: tensor is read-only", what));
    return t;
}

static int l_link(lua_State *L)
{
    slm_tensor *A = f32_arg(L, 1, "A", 0), *B = f32_arg(L, 2, "B", 0);
    const float s = (float)luaL_checknumber(L, 3);
    link_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->l = NULL;
    luaL_setmetatable(L, LINK_MT);
    slm_error err = {0};
    u->l = slm_lora_link_new(A, B, s, &err);
    if (!u->l) slm_bind_error(L, &err);
    return 1;
}

static int link_set_scale(lua_State *L)
{
    check_link(L, 1)->scale = (float)luaL_checknumber(L, 2);
    return 0;
}

static int link_scale(lua_State *L)
{
    lua_pushnumber(L, check_link(L, 1)->scale);
    return 1;
}

static slm_tensor *weight_arg(lua_State *L, int i)
{
    slm_tensor *W = slm_bind_check_tensor(L, i);
    luaL_argcheck(L, W->ndim == 2, i, "expected a 2-D weight (out, in)");
    slm_error err = {0};
    if (slm_matmul_check_weight(W, "weight", W->shape[0], W->shape[1], &err))
        luaL_argerror(L, i, err.msg);
    return W;
}

static int l_attach(lua_State *L)
{
    slm_tensor *W = weight_arg(L, 1);
    slm_lora_link *l = check_link(L, 2);
    if (l->attached) luaL_argerror(L, 2, "the link is attached already (make one per weight)");
    if (l->in != W->shape[1] || l->out != W->shape[0])
        return luaL_error(L, "bad argument #2 to 'attach' (adapter %I -> %I does not fit the weight %I -> %I)",
                          (lua_Integer)l->in, (lua_Integer)l->out, (lua_Integer)W->shape[1],
                          (lua_Integer)W->shape[0]);
    slm_error err = {0};
    slm_tensor *v = slm_tensor_view(W, &err);
    if (!v) return slm_bind_error(L, &err);
    /* the view owns one reference to the new head, which holds the old chain */
    l->next = v->lora;   /* v's reference to the old chain passes to l */
    l->attached = 1;
    slm_lora_link_ref(l);
    v->lora = l;
    slm_bind_push_tensor(L, v);
    lua_getiuservalue(L, 1, 1);   /* the same owner as W */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int l_links(lua_State *L)
{
    const slm_tensor *W = slm_bind_check_tensor(L, 1);
    lua_Integer n = 0;
    for (const slm_lora_link *l = W->lora; l; l = l->next) n++;
    lua_pushinteger(L, n);
    return 1;
}

static slm_pool *pool_of(lua_State *L)
{
    slm_error err = {0};
    slm_pool *p = slm_pool_default(&err);
    if (!p) slm_bind_error(L, &err);
    return p;
}

static int64_t rows_of(lua_State *L, int i, const slm_tensor *t, int64_t cols, const char *what)
{
    const int64_t last = t->shape[t->ndim - 1];
    if (last != cols)
        luaL_argerror(L, i, lua_pushfstring(L, "%s: rows of %I, expected %I", what, (lua_Integer)last,
                                            (lua_Integer)cols));
    return slm_tensor_numel(t) / cols;
}

static int l_deq_linear(lua_State *L)
{
    slm_tensor *y = f32_arg(L, 1, "y", 1), *x = f32_arg(L, 2, "x", 0);
    slm_tensor *W = weight_arg(L, 3);
    slm_tensor *b = lua_isnoneornil(L, 4) ? NULL : f32_arg(L, 4, "b", 0);
    const int64_t out = W->shape[0], in = W->shape[1];
    const int64_t n = rows_of(L, 2, x, in, "x");
    if (rows_of(L, 1, y, out, "y") != n) luaL_argerror(L, 1, "y: not as many rows as x");
    if (b && slm_tensor_numel(b) != out) luaL_argerror(L, 4, "b: expected one value per output");
    if (y->storage == x->storage || y->storage == W->storage) luaL_argerror(L, 1, "y must not share memory with x or W");
    slm_error err = {0};
    if (slm_lora_deq_linear(pool_of(L), slm_tensor_data(y), slm_tensor_data(x), W, b ? slm_tensor_data(b) : NULL,
                            n, &err))
        slm_bind_error(L, &err);
    return 0;
}

static int l_deq_linear_dx(lua_State *L)
{
    slm_tensor *dx = f32_arg(L, 1, "dx", 1), *dy = f32_arg(L, 2, "dy", 0);
    slm_tensor *W = weight_arg(L, 3);
    luaL_checktype(L, 4, LUA_TBOOLEAN);
    const int acc = lua_toboolean(L, 4);
    const int64_t n = rows_of(L, 2, dy, W->shape[0], "dy");
    if (rows_of(L, 1, dx, W->shape[1], "dx") != n) luaL_argerror(L, 1, "dx: not as many rows as dy");
    if (dx->storage == dy->storage || dx->storage == W->storage) luaL_argerror(L, 1, "dx must not share memory with dy or W");
    slm_error err = {0};
    if (slm_lora_deq_linear_dx(pool_of(L), slm_tensor_data(dx), slm_tensor_data(dy), W, n, acc, &err))
        slm_bind_error(L, &err);
    return 0;
}

static int l_dropout(lua_State *L)
{
    slm_tensor *out = f32_arg(L, 1, "out", 1), *x = f32_arg(L, 2, "x", 0);
    const double p = luaL_checknumber(L, 3);
    const lua_Integer seed = luaL_checkinteger(L, 4);
    luaL_argcheck(L, p >= 0 && p < 1, 3, "p must be in [0, 1)");
    luaL_argcheck(L, slm_tensor_numel(out) == slm_tensor_numel(x), 1, "out: not the size of x");
    luaL_argcheck(L, out->storage != x->storage || slm_tensor_data(out) == slm_tensor_data(x), 1,
                  "out: overlaps x without being x");
    slm_lora_dropout(slm_tensor_data(out), slm_tensor_data(x), slm_tensor_numel(x), (float)p, (uint64_t)seed);
    return 0;
}

void slm_bind_open_lora(lua_State *L)
{
    static const luaL_Reg link_methods[] = {{"set_scale", link_set_scale}, {"scale", link_scale}, {NULL, NULL}};
    slm_bind_new_meta(L, LINK_MT, link_close, link_methods);
    static const luaL_Reg fns[] = {{"link", l_link},
                                   {"attach", l_attach},
                                   {"links", l_links},
                                   {"deq_linear", l_deq_linear},
                                   {"deq_linear_dx", l_deq_linear_dx},
                                   {"dropout", l_dropout},
                                   {NULL, NULL}};
    slm_bind_set_subfuncs(L, "lora", fns);
}
