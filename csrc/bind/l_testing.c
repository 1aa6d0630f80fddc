/* `slm.core.testing`: deterministic random tensors for tests and benchmarks,
 * and `slm.core.clock()`, monotonic seconds for timing.
 *
 *   testing.randn(shape, seed [, std = 1]) -> f32 tensor, normal(0, std)
 *   testing.rand(shape, seed [, lo = 0, hi = 1]) -> f32 tensor, uniform
 *
 * splitmix64 (Steele et al.) feeds Box-Muller, so the same seed gives the
 * same values on every machine. */
#include <math.h>
#include <stdint.h>
#include <time.h>

#include "bind.h"

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* uniform in (0, 1): 53 random bits, never 0 */
static double unif(uint64_t *s)
{
    return ((double)(splitmix64(s) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

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
    float *p = slm_tensor_data(t);
    int64_t n = slm_tensor_numel(t);
    for (int64_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(unif(&seed))), a = 2.0 * M_PI * unif(&seed);
        p[i] = (float)(std * r * cos(a));
        if (i + 1 < n) p[i + 1] = (float)(std * r * sin(a));
    }
    return 1;
}

static int l_rand(lua_State *L)
{
    uint64_t seed = (uint64_t)luaL_checkinteger(L, 2);
    double lo = luaL_optnumber(L, 3, 0.0), hi = luaL_optnumber(L, 4, 1.0);
    slm_tensor *t = new_f32(L, 1);
    slm_bind_push_tensor(L, t);
    float *p = slm_tensor_data(t);
    int64_t n = slm_tensor_numel(t);
    for (int64_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * unif(&seed));
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
