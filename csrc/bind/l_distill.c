/* `slm.core.train`: the distillation loss of train/distill.h.
 *
 *   distill_loss(logits, targets, teacher, {alpha =, temperature =, scale = 1})
 *       -> loss_sum, ce_sum, kl_sum
 *     logits: f32 (rows, V), overwritten by scale * dL/dlogits;
 *     targets: i32 tensor of rows ids (negative: an ignored row);
 *     teacher: f32 (rows, V) logits, or {values = f32 (rows, k),
 *     ids = i32 (rows, k)} (its top k, renormalized over the k).
 *     The sums are over rows of L = alpha T^2 KL + (1 - alpha) CE, of CE,
 *     and of KL(softmax(teacher / T) || softmax(logits / T)).
 *   distill_topk(logits, values, ids)
 *     the k largest logits of each row (k = the last dimension of values
 *     and ids), largest first, ties by the lower id.
 *
 * Misuse raises "bad argument #i to 'name' (...)"; an unknown option key
 * is an error naming it. */
#include <string.h>

#include "../core/pool.h"
#include "../train/distill.h"
#include "bind.h"

static slm_pool *distill_pool(lua_State *L)
{
    slm_error err = {0};
    slm_pool *p = slm_pool_default(&err);
    if (!p) slm_bind_error(L, &err);
    return p;
}

/* a contiguous tensor of dtype dt at i (writable when out) */
static slm_tensor *distill_tensor(lua_State *L, const char *fn, int i, slm_dtype dt, int out, const char *what)
{
    if (!luaL_testudata(L, i, SLM_TENSOR_MT))
        luaL_error(L, "bad argument #%d to '%s' (%s: slm.Tensor expected, got %s)", i, fn, what, luaL_typename(L, i));
    slm_tensor *t = slm_bind_check_tensor(L, i);
    if (t->dtype != dt)
        luaL_error(L, "bad argument #%d to '%s' (%s: expected %s, got %s)", i, fn, what, slm_dtype_name(dt),
                   slm_dtype_name(t->dtype));
    if (!slm_tensor_is_contiguous(t)) luaL_error(L, "bad argument #%d to '%s' (%s: not contiguous)", i, fn, what);
    if (out && t->storage->readonly) luaL_error(L, "bad argument #%d to '%s' (%s: read-only)", i, fn, what);
    if (t->ndim < 1) luaL_error(L, "bad argument #%d to '%s' (%s: a scalar)", i, fn, what);
    return t;
}

static int64_t distill_width(const slm_tensor *t)
{
    return t->shape[t->ndim - 1];
}

/* t must be rows of width (rows * width values) */
static void distill_shape(lua_State *L, const char *fn, int i, const slm_tensor *t, int64_t rows, int64_t width,
                          const char *what)
{
    if (distill_width(t) != width || slm_tensor_numel(t) != rows * width)
        luaL_error(L, "bad argument #%d to '%s' (%s: expected %I rows of %I, got %I values in rows of %I)", i, fn,
                   what, (lua_Integer)rows, (lua_Integer)width, (lua_Integer)slm_tensor_numel(t),
                   (lua_Integer)distill_width(t));
}

/* the tensor in field `name` of the table at idx, pushed (the caller pops) */
static slm_tensor *distill_field(lua_State *L, const char *fn, int idx, const char *name, slm_dtype dt)
{
    lua_getfield(L, idx, name);
    const int top = lua_gettop(L);
    if (lua_isnil(L, top)) luaL_error(L, "bad argument #%d to '%s' (teacher: field '%s' missing)", idx, fn, name);
    return distill_tensor(L, fn, top, dt, 0, name);
}

static int l_distill_loss(lua_State *L)
{
    const char *fn = "distill_loss";
    slm_tensor *logits = distill_tensor(L, fn, 1, SLM_DTYPE_F32, 1, "logits");
    const int64_t V = distill_width(logits), rows = slm_tensor_numel(logits) / (V > 0 ? V : 1);
    if (V < 1 || V > INT32_MAX) luaL_error(L, "bad argument #1 to '%s' (rows of %I logits)", fn, (lua_Integer)V);
    slm_tensor *tg = distill_tensor(L, fn, 2, SLM_DTYPE_I32, 0, "targets");
    if (slm_tensor_numel(tg) != rows)
        luaL_error(L, "bad argument #2 to '%s' (targets: expected %I, got %I)", fn, (lua_Integer)rows,
                   (lua_Integer)slm_tensor_numel(tg));
    /* options: every key known, alpha and temperature required */
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_pushnil(L);
    while (lua_next(L, 4)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k || (strcmp(k, "alpha") && strcmp(k, "temperature") && strcmp(k, "scale")))
            luaL_error(L, "bad argument #4 to '%s' (unknown option '%s' (known: alpha, temperature, scale))", fn,
                       k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
    lua_getfield(L, 4, "alpha");
    lua_getfield(L, 4, "temperature");
    if (!lua_isnumber(L, -2) || !lua_isnumber(L, -1))
        luaL_error(L, "bad argument #4 to '%s' (alpha and temperature must be numbers)", fn);
    slm_distill_opts o = {(float)lua_tonumber(L, -2), (float)lua_tonumber(L, -1),
                          (float)slm_bind_num_field(L, 4, "scale", 1.0)};
    lua_pop(L, 2);
    slm_distill_sums s;
    slm_error err = {0};
    slm_status st;
    if (lua_istable(L, 3)) {
        slm_tensor *vals = distill_field(L, fn, 3, "values", SLM_DTYPE_F32);
        slm_tensor *ids = distill_field(L, fn, 3, "ids", SLM_DTYPE_I32);
        const int64_t k = distill_width(vals);
        distill_shape(L, fn, 3, vals, rows, k, "teacher values");
        distill_shape(L, fn, 3, ids, rows, k, "teacher ids");
        st = slm_distill_topk(distill_pool(L), slm_tensor_data(logits), slm_tensor_data(tg), slm_tensor_data(vals),
                              slm_tensor_data(ids), k, rows, V, &o, &s, &err);
        lua_pop(L, 2);
    } else {
        slm_tensor *te = distill_tensor(L, fn, 3, SLM_DTYPE_F32, 0, "teacher");
        distill_shape(L, fn, 3, te, rows, V, "teacher");
        if (te->storage == logits->storage) luaL_error(L, "bad argument #3 to '%s' (teacher: shares the logits' memory)", fn);
        st = slm_distill_dense(distill_pool(L), slm_tensor_data(logits), slm_tensor_data(tg), slm_tensor_data(te),
                               rows, V, &o, &s, &err);
    }
    if (st != SLM_OK) slm_bind_error(L, &err);
    lua_pushnumber(L, s.loss);
    lua_pushnumber(L, s.ce);
    lua_pushnumber(L, s.kl);
    return 3;
}

static int l_distill_topk(lua_State *L)
{
    const char *fn = "distill_topk";
    slm_tensor *logits = distill_tensor(L, fn, 1, SLM_DTYPE_F32, 0, "logits");
    slm_tensor *vals = distill_tensor(L, fn, 2, SLM_DTYPE_F32, 1, "values");
    slm_tensor *ids = distill_tensor(L, fn, 3, SLM_DTYPE_I32, 1, "ids");
    const int64_t V = distill_width(logits), k = distill_width(vals);
    if (V < 1 || V > INT32_MAX) luaL_error(L, "bad argument #1 to '%s' (rows of %I logits)", fn, (lua_Integer)V);
    const int64_t rows = slm_tensor_numel(logits) / V;
    if (k < 1 || k > V) luaL_error(L, "bad argument #2 to '%s' (k = %I outside 1..%I)", fn, (lua_Integer)k, (lua_Integer)V);
    distill_shape(L, fn, 2, vals, rows, k, "values");
    distill_shape(L, fn, 3, ids, rows, k, "ids");
    slm_error err = {0};
    if (slm_distill_select_topk(distill_pool(L), slm_tensor_data(logits), rows, V, k, slm_tensor_data(vals),
                                slm_tensor_data(ids), &err) != SLM_OK)
        slm_bind_error(L, &err);
    return 0;
}

void slm_bind_open_distill(lua_State *L)
{
    static const luaL_Reg fns[] = {{"distill_loss", l_distill_loss}, {"distill_topk", l_distill_topk}, {NULL, NULL}};
    slm_bind_set_subfuncs(L, "train", fns);
}
