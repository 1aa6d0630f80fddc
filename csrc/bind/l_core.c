/* luaopen_slm_core: the C half of `require "slm"`. */
#include "bind.h"

#define SLM_VERSION "0.1.0"

int slm_bind_error(lua_State *L, const slm_error *err)
{
    return luaL_error(L, "%s", err->msg);
}

int slm_bind_fail(lua_State *L, const slm_error *err)
{
    luaL_pushfail(L);
    lua_pushstring(L, err->msg);
    return 2;
}

typedef void (*opener)(lua_State *L);

static const opener openers[] = {
    slm_bind_open_tensor,
    slm_bind_open_gguf,
    slm_bind_open_safetensors,
    slm_bind_open_tokenizer,
    slm_bind_open_kernels,
    slm_bind_open_sampler,
    slm_bind_open_blocks,
    slm_bind_open_files,
    slm_bind_open_testing,
    slm_bind_open_regex,
    slm_bind_open_mamba,
    slm_bind_open_rwkv,
    NULL
};

int luaopen_slm_core(lua_State *L);
int luaopen_slm_core(lua_State *L)
{
    lua_newtable(L);
    lua_pushliteral(L, SLM_VERSION);
    lua_setfield(L, -2, "version");
    for (const opener *o = openers; *o; o++) (*o)(L);
    return 1;
}
