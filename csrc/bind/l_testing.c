/* `slm.core.testing`: deterministic random tensors for tests and benchmarks,
 * and `slm.core.clock()`, monotonic seconds for timing.
 *
 *   testing.randn(shape, seed [, std = 1]) -> f32 tensor, normal(0, std)
 *   testing.rand(shape, seed [, lo = 0, hi = 1]) -> f32 tensor, uniform
 *
 * splitmix64 (Steele et al.) feeds Box-Muller (sampler/rng.h), so the same
 * seed gives the same values on every machine. */
#include <stdint.h>
#include <time.h>

#include "../sampler/rng.h"
#include "bind.h"

static slm_tensor *new_f32(lua_State *L, int idx)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    int64_t shape[SLM_MAX_DIMS];
    int n = (int)luaL_len(L, idx);
    luaL_argcheck(L, n >= 1 && n <= SLM_MAX_DIMS, idx, "1 to 4 dimensions expected");
    for (int i = 0; i < n; i++) {
        lua_geti(L, idx, i + 1);
        shape[i] = (int64_t)luaL_checkinteger(L, -1);
        lua_pop(L, 1);
    }
    slm_error err = {0};
    slm_tensor *t = slm_tensor_new(SLM_DTYPE_F32, n, shape, &err);
    if (!t) slm_bind_error(L, &err);
    return t;
}

static int l_randn(lua_State *L)
{
    uint64_t seed = (uint64_t)luaL_checkinteger(L, 2);
    double std = luaL_optnumber(L, 3, 1.0);
    slm_tensor *t = new_f32(L, 1);
    slm_bind_push_tensor(L, t);
    slm_rng_fill_normal(slm_tensor_data(t), slm_tensor_numel(t), seed, std);
    return 1;
}

static int l_rand(lua_State *L)
{
    uint64_t seed = (uint64_t)luaL_checkinteger(L, 2);
    double lo = luaL_optnumber(L, 3, 0.0), hi = luaL_optnumber(L, 4, 1.0);
    slm_tensor *t = new_f32(L, 1);
    slm_bind_push_tensor(L, t);
    slm_rng_fill_uniform(slm_tensor_data(t), slm_tensor_numel(t), seed, lo, hi);
    return 1;
}

static int l_clock(lua_State *L)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    lua_pushnumber(L, (lua_Number)ts.tv_sec + (lua_Number)ts.tv_nsec * 1e-9);
    return 1;
}

void slm_bind_open_testing(lua_State *L)
{
    lua_pushcfunction(L, l_clock);
    lua_setfield(L, -2, "clock");
    static const luaL_Reg fns[] = {{"randn", l_randn}, {"rand", l_rand}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "testing");
}
