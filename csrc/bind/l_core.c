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

lua_Integer slm_bind_int_field(lua_State *L, int idx, const char *name, lua_Integer def,
                               int required)
{
    lua_getfield(L, idx, name);
    int isnum;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    if (!isnum) {
        if (!lua_isnil(L, -1) || required) luaL_error(L, "field '%s' must be an integer", name);
        v = def;
    }
    lua_pop(L, 1);
    return v;
}

double slm_bind_num_field(lua_State *L, int idx, const char *name, double def)
{
    lua_getfield(L, idx, name);
    int isnum;
    double v = lua_tonumberx(L, -1, &isnum);
    if (!isnum) {
        if (!lua_isnil(L, -1)) luaL_error(L, "field '%s' must be a number", name);
        v = def;
    }
    lua_pop(L, 1);
    return v;
}

float *slm_bind_check_buf(lua_State *L, int idx, int64_t *rows, int64_t *dim)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    luaL_argcheck(L, t->dtype == SLM_DTYPE_F32 && slm_tensor_is_contiguous(t) &&
                     !t->storage->readonly, idx, "expected a writable contiguous f32 tensor");
    *dim = t->shape[t->ndim - 1];
    *rows = slm_tensor_numel(t) / *dim;
    return slm_tensor_data(t);
}

void slm_bind_set_subfuncs(lua_State *L, const char *name, const luaL_Reg *fns)
{
    if (lua_getfield(L, -1, name) != LUA_TTABLE) {
        lua_pop(L, 1);
        lua_newtable(L);
        lua_pushvalue(L, -1);
        lua_setfield(L, -3, name);
    }
    luaL_setfuncs(L, fns, 0);
    lua_pop(L, 1);
}

void slm_bind_new_meta(lua_State *L, const char *name, lua_CFunction close,
                       const luaL_Reg *methods)
{
    luaL_newmetatable(L, name);
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "__close");
    lua_newtable(L);
    luaL_setfuncs(L, methods, 0);
    lua_pushcfunction(L, close);
    lua_setfield(L, -2, "free");
    lua_setfield(L, -2, "__index");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "__name");
    lua_pop(L, 1);
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
    slm_bind_open_moe,
    slm_bind_open_files,
    slm_bind_open_testing,
    slm_bind_open_regex,
    slm_bind_open_grammar,
    slm_bind_open_mamba,
    slm_bind_open_mamba_train,
    slm_bind_open_shortconv,
    slm_bind_open_rwkv,
    slm_bind_open_tokens,
    slm_bind_open_sdpa,
    slm_bind_open_rwkv_train,
    slm_bind_open_train,
    slm_bind_open_lora,
    slm_bind_open_seqbatch,
    slm_bind_open_distill,
    slm_bind_open_speculative,
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
