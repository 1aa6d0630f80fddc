/* The slm.Sampler userdata (a sampler chain) and slm.Candidates views.
 *
 * A sampler box owns its slm_chain (and so every buffer the stages use):
 * `__gc`, `__close` and `free` share one idempotent close. Lua functions in
 * the chain live in the box's user value (a table indexed by stage
 * position) and run as custom stages: each call gets a fresh Candidates
 * view over the chain's buffer, invalidated when the function returns or
 * raises, so a view kept past its call raises instead of reading freed or
 * reused memory. A Lua error in a stage is caught by lua_pcall inside the
 * stage, the chain returns, and the original error object is re-raised
 * from `sample`: nothing is longjmp'd over, and the chain stays usable.
 *
 * Token ids are 0-based as in the model files; positions in a Candidates
 * view are 1-based as in Lua. */
#include <math.h>
#include <stdint.h>

#include "../sampler/chain.h"
#include "bind.h"

#define SLM_SAMPLER_MT "slm.Sampler"
#define SLM_CANDS_MT "slm.Candidates"

typedef struct cands_box {
    slm_cands *c;          /* NULL outside the stage call that made it */
} cands_box;

typedef struct sampler_box {
    slm_chain *ch;
    lua_State *L;          /* the running sample call's state */
    int fn_idx;            /* stack index of the stage-function table then */
    int busy;              /* inside sample (guards re-entry and free) */
    int lua_err;           /* a Lua stage raised; its error is on the stack */
    cands_box *view;       /* the live view of the running Lua stage */
} sampler_box;

static sampler_box *check_box(lua_State *L, int idx)
{
    sampler_box *b = luaL_checkudata(L, idx, SLM_SAMPLER_MT);
    if (!b->ch) luaL_error(L, "attempt to use a freed sampler");
    return b;
}

static sampler_box *check_idle(lua_State *L, int idx)
{
    sampler_box *b = check_box(L, idx);
    if (b->busy)
        luaL_error(L, "sampler is running: a stage cannot use its own sampler chain");
    return b;
}

slm_chain *slm_bind_check_chain(lua_State *L, int idx)
{
    return check_idle(L, idx)->ch;
}

static int raise_core(lua_State *L, const slm_error *err)
{
    return slm_bind_error(L, err);
}

/* ---- Candidates views ---------------------------------------------------- */

static slm_cands *check_cands(lua_State *L, int idx)
{
    cands_box *v = luaL_checkudata(L, idx, SLM_CANDS_MT);
    if (!v->c)
        luaL_error(L, "candidates view used after its sampler stage returned "
                      "(a view is valid only during the call)");
    return v->c;
}

/* 1-based position argument -> 0-based index */
static size_t check_pos(lua_State *L, int idx, const slm_cands *c)
{
    lua_Integer i = luaL_checkinteger(L, idx);
    luaL_argcheck(L, i >= 1 && (lua_Unsigned)i <= c->n, idx,
                  lua_pushfstring(L, "position %I out of range [1, %I]", i, (lua_Integer)c->n));
    return (size_t)(i - 1);
}

static int c_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)check_cands(L, 1)->n);
    return 1;
}

static int c_id(lua_State *L)
{
    slm_cands *c = check_cands(L, 1);
    lua_pushinteger(L, c->data[check_pos(L, 2, c)].id);
    return 1;
}

static int c_logit(lua_State *L)
{
    slm_cands *c = check_cands(L, 1);
    lua_pushnumber(L, c->data[check_pos(L, 2, c)].logit);
    return 1;
}

static int c_p(lua_State *L)
{
    slm_cands *c = check_cands(L, 1);
    size_t i = check_pos(L, 2, c);
    if (!c->p_valid) {
        slm_error err;
        if (slm_cands_softmax(c, &err) != SLM_OK) return raise_core(L, &err);
    }
    lua_pushnumber(L, c->data[i].p);
    return 1;
}

static int c_set_logit(lua_State *L)
{
    slm_cands *c = check_cands(L, 1);
    size_t i = check_pos(L, 2, c);
    float v = (float)luaL_checknumber(L, 3);
    luaL_argcheck(L, v == v && v != INFINITY, 3,
                  "logit must be a float32 value or -math.huge (not NaN, not +inf)");
    c->data[i].logit = v;
    c->sorted = c->n == 1;
    c->p_valid = 0;
    return 0;
}

static int c_truncate(lua_State *L)
{
    slm_cands *c = check_cands(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1 && (lua_Unsigned)n <= c->n, 2,
                  lua_pushfstring(L, "keep between 1 and %I candidates", (lua_Integer)c->n));
    if ((size_t)n < c->n) {
        c->n = (size_t)n;
        c->identity = 0;
        c->p_valid = 0;
    }
    return 0;
}

static int c_sort(lua_State *L)
{
    slm_cands_sort(check_cands(L, 1));
    return 0;
}

static int c_sorted(lua_State *L)
{
    lua_pushboolean(L, check_cands(L, 1)->sorted);
    return 1;
}

static int c_tostring(lua_State *L)
{
    cands_box *v = luaL_checkudata(L, 1, SLM_CANDS_MT);
    if (!v->c) lua_pushliteral(L, "slm.Candidates(invalid)");
    else lua_pushfstring(L, "slm.Candidates(%I%s)", (lua_Integer)v->c->n,
                         v->c->sorted ? ", sorted" : "");
    return 1;
}

/* Runs one Lua stage, protected: (cands lightuserdata, function, box). */
static int run_stage(lua_State *L)
{
    slm_cands *c = lua_touserdata(L, 1);
    sampler_box *b = lua_touserdata(L, 3);
    cands_box *v = lua_newuserdatauv(L, sizeof *v, 0);
    v->c = NULL;
    luaL_setmetatable(L, SLM_CANDS_MT);
    v->c = c;
    b->view = v;
    lua_pushvalue(L, 2);
    lua_pushvalue(L, -2);
    lua_call(L, 1, 0);
    return 0;
}

static slm_status lua_stage(void *ud, int stage, slm_cands *c, slm_error *err)
{
    sampler_box *b = ud;
    lua_State *L = b->L;
    if (!lua_checkstack(L, 4))
        return slm_error_set(err, SLM_ENOMEM, "sampler: Lua stack overflow");
    lua_pushcfunction(L, run_stage);
    lua_pushlightuserdata(L, c);
    lua_rawgeti(L, b->fn_idx, stage);
    lua_pushlightuserdata(L, b);
    int rc = lua_pcall(L, 3, 0, 0);
    if (b->view) {
        b->view->c = NULL;
        b->view = NULL;
    }
    if (rc != LUA_OK) {
        b->lua_err = 1;    /* the error object stays on top for sample */
        return slm_error_set(err, SLM_EINVAL, "sampler: Lua stage %d raised", stage + 1);
    }
    return SLM_OK;
}

/* ---- the sampler --------------------------------------------------------- */

static int s_new(lua_State *L)
{
    sampler_box *b = lua_newuserdatauv(L, sizeof *b, 1);
    b->ch = NULL;
    b->L = NULL;
    b->busy = b->lua_err = b->fn_idx = 0;
    b->view = NULL;
    luaL_setmetatable(L, SLM_SAMPLER_MT);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    slm_error err;
    b->ch = slm_chain_new(&err);
    if (!b->ch) return raise_core(L, &err);
    return 1;
}

static const char *const stage_names[] = {
    "greedy", "dist", "temp", "top_k", "top_p", "min_p", "typical", "penalties",
    "logit_bias", "lua", NULL
};

static int32_t check_i32(lua_State *L, int idx, const char *what)
{
    lua_Integer v = luaL_checkinteger(L, idx);
    if (v < INT32_MIN || v > INT32_MAX)
        luaL_error(L, "%s %I out of range", what, v);
    return (int32_t)v;
}

static size_t check_min_keep(lua_State *L, int idx)
{
    lua_Integer v = luaL_optinteger(L, idx, 1);
    if (v < 0) luaL_error(L, "min_keep must be >= 0 (got %I)", v);
    return (size_t)v;
}

/* logit_bias table {[id] = bias} -> arrays in a scratch userdata (collected
 * by Lua, so a raise below leaks nothing) */
static slm_status add_logit_bias(lua_State *L, slm_chain *ch, int idx, slm_error *err)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        n++;
        lua_pop(L, 1);
    }
    char *mem = lua_newuserdatauv(L, n * (sizeof(int32_t) + sizeof(float)) + 1, 0);
    int32_t *ids = (int32_t *)(void *)mem;
    float *bias = (float *)(void *)(mem + n * sizeof(int32_t));
    size_t j = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (!lua_isinteger(L, -2))
            luaL_error(L, "logit_bias: keys must be integer token ids (got %s)",
                       luaL_typename(L, -2));
        lua_Integer id = lua_tointeger(L, -2);
        if (id < 0 || id > INT32_MAX)
            luaL_error(L, "logit_bias: token id %I out of range", id);
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "logit_bias: bias of token %I is a %s, not a number", id,
                       luaL_typename(L, -1));
        ids[j] = (int32_t)id;
        bias[j] = (float)lua_tonumber(L, -1);
        j++;
        lua_pop(L, 1);
    }
    return slm_chain_add_logit_bias(ch, ids, bias, n, err);
}

/* s:_add(name, params...): the raw stage constructor behind
 * slm.sampler.chain (which names the parameters). */
static int s_add(lua_State *L)
{
    sampler_box *b = check_idle(L, 1);
    int kind = luaL_checkoption(L, 2, NULL, stage_names);
    slm_chain *ch = b->ch;
    slm_error err;
    slm_status st = SLM_OK;
    switch (kind) {
    case 0: st = slm_chain_add_greedy(ch, &err); break;
    case 1: st = slm_chain_add_dist(ch, (uint64_t)luaL_optinteger(L, 3, 0), &err); break;
    case 2: st = slm_chain_add_temp(ch, (float)luaL_checknumber(L, 3), &err); break;
    case 3: st = slm_chain_add_top_k(ch, check_i32(L, 3, "top_k: k"), &err); break;
    case 4: st = slm_chain_add_top_p(ch, (float)luaL_checknumber(L, 3), check_min_keep(L, 4), &err); break;
    case 5: st = slm_chain_add_min_p(ch, (float)luaL_checknumber(L, 3), check_min_keep(L, 4), &err); break;
    case 6: st = slm_chain_add_typical(ch, (float)luaL_checknumber(L, 3), check_min_keep(L, 4), &err); break;
    case 7: {
        slm_penalty pen = {check_i32(L, 3, "penalties: last_n"), (float)luaL_checknumber(L, 4),
                           (float)luaL_checknumber(L, 5), (float)luaL_checknumber(L, 6)};
        st = slm_chain_add_penalties(ch, &pen, &err);
        break;
    }
    case 8: st = add_logit_bias(L, ch, 3, &err); break;
    default: {
        luaL_checktype(L, 3, LUA_TFUNCTION);
        const char *name = luaL_optstring(L, 4, "lua");
        int pos = (int)slm_chain_n_stages(ch);
        lua_getiuservalue(L, 1, 1);
        lua_pushvalue(L, 3);
        lua_rawseti(L, -2, pos);
        st = slm_chain_add_custom(ch, name, lua_stage, b, &err);
        if (st != SLM_OK) {
            lua_pushnil(L);
            lua_rawseti(L, -2, pos);
        }
        break;
    }
    }
    if (st != SLM_OK) return raise_core(L, &err);
    lua_settop(L, 1);
    return 1;
}

/* Logits argument: an F32 tensor of n_vocab elements (contiguous) or an
 * array of numbers (copied into a scratch userdata left on the stack). */
static const float *check_logits(lua_State *L, int idx, size_t *n)
{
    if (lua_istable(L, idx)) {
        lua_Unsigned len = lua_rawlen(L, idx);
        luaL_argcheck(L, len > 0 && len <= INT32_MAX, idx, "logits table is empty or too long");
        float *buf = lua_newuserdatauv(L, (size_t)len * sizeof *buf, 0);
        for (lua_Unsigned i = 0; i < len; i++) {
            if (lua_rawgeti(L, idx, (lua_Integer)i + 1) != LUA_TNUMBER)
                luaL_error(L, "logits[%I] is a %s, not a number", (lua_Integer)i + 1,
                           luaL_typename(L, -1));
            buf[i] = (float)lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        *n = (size_t)len;
        return buf;
    }
    if (!luaL_testudata(L, idx, SLM_TENSOR_MT))
        luaL_argerror(L, idx, lua_pushfstring(L, "logits must be an f32 tensor or a table "
                                                 "of numbers (got %s)", luaL_typename(L, idx)));
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    luaL_argcheck(L, t->dtype == SLM_DTYPE_F32 && slm_tensor_is_contiguous(t), idx,
                  "logits must be a contiguous f32 tensor");
    *n = (size_t)slm_tensor_numel(t);
    return slm_tensor_data(t);
}

/* s:sample(logits) -> id (not accepted: call s:accept(id) once it is used) */
static int s_sample(lua_State *L)
{
    sampler_box *b = check_idle(L, 1);
    size_t n;
    const float *logits = check_logits(L, 2, &n);
    lua_getiuservalue(L, 1, 1);
    b->fn_idx = lua_gettop(L);
    b->L = L;
    b->lua_err = 0;
    b->busy = 1;
    slm_error err;
    int32_t id = -1;
    slm_status st = slm_chain_sample(b->ch, logits, n, &id, &err);
    b->busy = 0;
    b->L = NULL;
    if (st != SLM_OK) {
        if (b->lua_err) return lua_error(L);
        return raise_core(L, &err);
    }
    lua_pushinteger(L, id);
    return 1;
}

static int s_accept(lua_State *L)
{
    sampler_box *b = check_idle(L, 1);
    lua_Integer id = luaL_checkinteger(L, 2);
    slm_error err;
    if (id < 0 || id > INT32_MAX)
        return luaL_error(L, "accept: token id %I out of range", id);
    if (slm_chain_accept(b->ch, (int32_t)id, &err) != SLM_OK) return raise_core(L, &err);
    return 0;
}

static int s_reset(lua_State *L)
{
    slm_chain_reset(check_idle(L, 1)->ch);
    return 0;
}

/* s:state() -> {rng = {4 integers}, history = {ids, oldest first}} */
static int s_state(lua_State *L)
{
    sampler_box *b = check_idle(L, 1);
    uint64_t rng[4];
    slm_chain_get_rng(b->ch, rng);
    const int32_t *h;
    size_t nh = slm_chain_history(b->ch, &h);
    lua_createtable(L, 0, 2);
    lua_createtable(L, 4, 0);
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, (lua_Integer)rng[i]);    /* two's complement wrap */
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -2, "rng");
    lua_createtable(L, (int)nh, 0);
    for (size_t i = 0; i < nh; i++) {
        lua_pushinteger(L, h[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "history");
    return 1;
}

static int s_set_state(lua_State *L)
{
    sampler_box *b = check_idle(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    uint64_t rng[4];
    if (lua_getfield(L, 2, "rng") != LUA_TTABLE || lua_rawlen(L, -1) != 4)
        return luaL_error(L, "set_state: state.rng must be a table of 4 integers");
    for (int i = 0; i < 4; i++) {
        lua_rawgeti(L, -1, i + 1);
        if (!lua_isinteger(L, -1))
            return luaL_error(L, "set_state: state.rng[%d] is not an integer", i + 1);
        rng[i] = (uint64_t)lua_tointeger(L, -1);
        lua_pop(L, 1);
    }
    if (lua_getfield(L, 2, "history") != LUA_TTABLE)
        return luaL_error(L, "set_state: state.history must be a table of token ids");
    size_t nh = (size_t)lua_rawlen(L, -1);
    int32_t *h = lua_newuserdatauv(L, (nh ? nh : 1) * sizeof *h, 0);
    for (size_t i = 0; i < nh; i++) {
        lua_rawgeti(L, -2, (lua_Integer)i + 1);
        lua_Integer v = lua_tointeger(L, -1);
        if (!lua_isinteger(L, -1) || v < 0 || v > INT32_MAX)
            return luaL_error(L, "set_state: state.history[%I] is not a token id",
                              (lua_Integer)i + 1);
        h[i] = (int32_t)v;
        lua_pop(L, 1);
    }
    slm_error err;
    if (!(rng[0] | rng[1] | rng[2] | rng[3]))
        return luaL_error(L, "set_state: an all-zero RNG state is invalid");
    if (slm_chain_set_history(b->ch, h, nh, &err) != SLM_OK ||
        slm_chain_set_rng(b->ch, rng, &err) != SLM_OK)
        return raise_core(L, &err);
    return 0;
}

static int s_close(lua_State *L)
{
    sampler_box *b = luaL_checkudata(L, 1, SLM_SAMPLER_MT);
    if (b->busy) return luaL_error(L, "cannot free a sampler while it is sampling");
    slm_chain_free(b->ch);
    b->ch = NULL;
    return 0;
}

static int s_tostring(lua_State *L)
{
    sampler_box *b = luaL_checkudata(L, 1, SLM_SAMPLER_MT);
    if (!b->ch) {
        lua_pushliteral(L, "slm.Sampler(freed)");
        return 1;
    }
    size_t len = slm_chain_describe(b->ch, NULL, 0);
    luaL_Buffer B;
    char *p = luaL_buffinitsize(L, &B, len + 1);
    slm_chain_describe(b->ch, p, len + 1);
    luaL_pushresultsize(&B, len);
    lua_pushfstring(L, "slm.Sampler(%s)", lua_tostring(L, -1));
    return 1;
}

static const luaL_Reg sampler_methods[] = {
    {"_add", s_add},
    {"sample", s_sample},
    {"accept", s_accept},
    {"reset", s_reset},
    {"state", s_state},
    {"set_state", s_set_state},
    {"free", s_close},
    {NULL, NULL}
};

static const luaL_Reg sampler_meta[] = {
    {"__gc", s_close},
    {"__close", s_close},
    {"__tostring", s_tostring},
    {"__index", NULL},
    {NULL, NULL}
};

static const luaL_Reg cands_methods[] = {
    {"id", c_id},
    {"logit", c_logit},
    {"p", c_p},
    {"set_logit", c_set_logit},
    {"truncate", c_truncate},
    {"sort", c_sort},
    {"sorted", c_sorted},
    {NULL, NULL}
};

static const luaL_Reg cands_meta[] = {
    {"__len", c_len},
    {"__tostring", c_tostring},
    {"__index", NULL},
    {NULL, NULL}
};

static void new_type(lua_State *L, const char *name, const luaL_Reg *meta,
                     const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    luaL_setfuncs(L, meta, 0);
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
}

/* Sets core.sampler = {new = ...}; lua/slm/sampler.lua builds chains. */
void slm_bind_open_sampler(lua_State *L)
{
    new_type(L, SLM_SAMPLER_MT, sampler_meta, sampler_methods);
    new_type(L, SLM_CANDS_MT, cands_meta, cands_methods);
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, s_new);
    lua_setfield(L, -2, "new");
    lua_setfield(L, -2, "sampler");
}
