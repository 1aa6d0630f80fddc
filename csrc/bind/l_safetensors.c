/* `slm.core.safetensors`: the safetensors file userdata ("slm.Safetensors").
 *
 * core.safetensors.open(path) -> handle | nil, msg
 * handle methods (indices 1-based):
 *   close() (also __gc / __close; idempotent; tensor views stay valid)
 *   path() data_offset() n_tensors() (= #h)
 *   metadata() -> table string -> string (the __metadata__ object)
 *   info(i | name) -> {name=, dtype=, shape={...}, bytes=, offset=} | nil
 *     dtype is the slm name ("f32", "bf16", ...) or, for dtypes slm has
 *     not, the file's name in lower case ("i64", "f64", ...)
 *   tensor(i | name) -> slm.Tensor view | nil, msg */
#include <ctype.h>
#include <string.h>

#include "../formats/safetensors.h"
#include "bind.h"

#define ST_MT "slm.Safetensors"

typedef struct st_box {
    slm_safetensors *f;
} st_box;

static slm_safetensors *check_st(lua_State *L, int idx)
{
    st_box *b = luaL_checkudata(L, idx, ST_MT);
    if (!b->f) luaL_error(L, "attempt to use a closed safetensors file");
    return b->f;
}

static int l_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    st_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->f = NULL;
    luaL_setmetatable(L, ST_MT);
    slm_error err;
    b->f = slm_safetensors_open(path, &err);
    if (!b->f) return slm_bind_fail(L, &err);
    return 1;
}

static int l_close(lua_State *L)
{
    st_box *b = luaL_checkudata(L, 1, ST_MT);
    slm_safetensors_close(b->f);
    b->f = NULL;
    return 0;
}

static int l_path(lua_State *L)
{
    lua_pushstring(L, slm_safetensors_path(check_st(L, 1)));
    return 1;
}

static int l_data_offset(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_safetensors_data_offset(check_st(L, 1)));
    return 1;
}

static int l_n_tensors(lua_State *L)
{
    lua_pushinteger(L, slm_safetensors_n_tensors(check_st(L, 1)));
    return 1;
}

static int l_metadata(lua_State *L)
{
    slm_safetensors *f = check_st(L, 1);
    int64_t n = slm_safetensors_n_meta(f);
    lua_createtable(L, 0, (int)n);
    for (int64_t i = 0; i < n; i++) {
        lua_pushstring(L, slm_safetensors_meta_value(f, i));
        lua_setfield(L, -2, slm_safetensors_meta_key(f, i));
    }
    return 1;
}

static int64_t tensor_arg(lua_State *L, slm_safetensors *f, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer i = luaL_checkinteger(L, idx);
        return i >= 1 && i <= slm_safetensors_n_tensors(f) ? i - 1 : -1;
    }
    return slm_safetensors_find_tensor(f, luaL_checkstring(L, idx));
}

static int l_info(lua_State *L)
{
    slm_safetensors *f = check_st(L, 1);
    int64_t i = tensor_arg(L, f, 2);
    if (i < 0) return 0;
    const slm_st_tensor_info *ti = slm_safetensors_tensor_info(f, i);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, ti->name);
    lua_setfield(L, -2, "name");
    if (ti->supported) lua_pushstring(L, slm_dtype_name(ti->dtype));
    else {
        char low[16];
        size_t k = 0;
        for (; ti->dtype_name[k] && k + 1 < sizeof low; k++)
            low[k] = (char)tolower((unsigned char)ti->dtype_name[k]);
        low[k] = '\0';
        lua_pushstring(L, low);
    }
    lua_setfield(L, -2, "dtype");
    lua_createtable(L, ti->ndim, 0);
    for (int d = 0; d < ti->ndim; d++) {
        lua_pushinteger(L, ti->shape[d]);
        lua_rawseti(L, -2, d + 1);
    }
    lua_setfield(L, -2, "shape");
    lua_pushinteger(L, (lua_Integer)ti->nbytes);
    lua_setfield(L, -2, "bytes");
    lua_pushinteger(L, (lua_Integer)ti->offset);
    lua_setfield(L, -2, "offset");
    return 1;
}

static int l_tensor(lua_State *L)
{
    slm_safetensors *f = check_st(L, 1);
    int64_t i = tensor_arg(L, f, 2);
    if (i < 0) {
        luaL_pushfail(L);
        if (lua_type(L, 2) == LUA_TNUMBER)
            lua_pushfstring(L, "%s: no tensor %I", slm_safetensors_path(f), lua_tointeger(L, 2));
        else lua_pushfstring(L, "%s: no tensor '%s'", slm_safetensors_path(f), lua_tostring(L, 2));
        return 2;
    }
    slm_error err;
    slm_tensor *t = slm_safetensors_tensor(f, i, &err);
    if (!t) return slm_bind_fail(L, &err);
    slm_bind_push_tensor(L, t);
    lua_pushvalue(L, 1);              /* the view's owner is the file */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int l_tostring(lua_State *L)
{
    st_box *b = luaL_checkudata(L, 1, ST_MT);
    if (!b->f) lua_pushliteral(L, "slm.Safetensors(closed)");
    else lua_pushfstring(L, "slm.Safetensors(%s, %I tensors)", slm_safetensors_path(b->f),
                         (lua_Integer)slm_safetensors_n_tensors(b->f));
    return 1;
}

static const luaL_Reg methods[] = {
    {"close", l_close},
    {"path", l_path},
    {"data_offset", l_data_offset},
    {"n_tensors", l_n_tensors},
    {"metadata", l_metadata},
    {"info", l_info},
    {"tensor", l_tensor},
    {NULL, NULL}
};

static const luaL_Reg metamethods[] = {
    {"__gc", l_close},
    {"__close", l_close},
    {"__len", l_n_tensors},
    {"__tostring", l_tostring},
    {"__index", NULL},
    {NULL, NULL}
};

static const luaL_Reg functions[] = {
    {"open", l_open},
    {NULL, NULL}
};

/* Sets core.safetensors = {open}. */
void slm_bind_open_safetensors(lua_State *L)
{
    luaL_newmetatable(L, ST_MT);
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "safetensors");
}
