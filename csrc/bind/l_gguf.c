/* `slm.core.gguf`: the GGUF file userdata ("slm.GGUF") and the writer.
 *
 * core.gguf.open(path) -> handle | nil, msg
 * handle methods (indices 1-based):
 *   close() (also __gc / __close; idempotent; tensor views stay valid)
 *   version() alignment() data_offset() path() n_kv() n_tensors() (= #h)
 *   key(i) -> name; type(key) -> type name [, element type name for arrays]
 *   get(key) -> value (arrays as tables) | nil when absent
 *   arr_len(key), arr_get(key, j) -> element j (lazy access to big arrays)
 *   info(i | name) -> {name=, dtype=, shape={...}, bytes=, offset=} | nil
 *   tensor(i | name) -> slm.Tensor view over the mapping | nil, msg
 * core.gguf.write(path, kvs, tensors)
 *   kvs: sequence of {key=, type=, value=, array=bool}: type is a scalar
 *   type name ("u8" ... "f64", "bool", "str") and, for arrays, the element
 *   type with value a sequence; tensors: sequence of {name=, tensor=}.
 *   Type inference for plain Lua values lives in lua/slm/gguf.lua.
 * Values that do not fit their type, or wrong Lua types, raise errors. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "../formats/gguf.h"
#include "bind.h"

#define GGUF_MT "slm.GGUF"
#define WRITER_MT "slm.GGUFWriter"

typedef struct gguf_box {
    slm_gguf *g;
} gguf_box;

static slm_gguf *check_gguf(lua_State *L, int idx)
{
    gguf_box *b = luaL_checkudata(L, idx, GGUF_MT);
    if (!b->g) luaL_error(L, "attempt to use a closed gguf file");
    return b->g;
}

static int l_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    gguf_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->g = NULL;
    luaL_setmetatable(L, GGUF_MT);
    slm_error err;
    b->g = slm_gguf_open(path, &err);
    if (!b->g) return slm_bind_fail(L, &err);
    return 1;
}

static int l_close(lua_State *L)
{
    gguf_box *b = luaL_checkudata(L, 1, GGUF_MT);
    slm_gguf_close(b->g);
    b->g = NULL;
    return 0;
}

static int l_version(lua_State *L)
{
    lua_pushinteger(L, slm_gguf_version(check_gguf(L, 1)));
    return 1;
}

static int l_alignment(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_gguf_alignment(check_gguf(L, 1)));
    return 1;
}

static int l_data_offset(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_gguf_data_offset(check_gguf(L, 1)));
    return 1;
}

static int l_path(lua_State *L)
{
    lua_pushstring(L, slm_gguf_path(check_gguf(L, 1)));
    return 1;
}

static int l_n_kv(lua_State *L)
{
    lua_pushinteger(L, slm_gguf_n_kv(check_gguf(L, 1)));
    return 1;
}

static int l_n_tensors(lua_State *L)
{
    lua_pushinteger(L, slm_gguf_n_tensors(check_gguf(L, 1)));
    return 1;
}

static int l_key(lua_State *L)
{
    slm_gguf *g = check_gguf(L, 1);
    lua_Integer i = luaL_checkinteger(L, 2);
    luaL_argcheck(L, i >= 1 && i <= slm_gguf_n_kv(g), 2, "key index out of range");
    lua_pushstring(L, slm_gguf_key(g, i - 1));
    return 1;
}

static int l_type(lua_State *L)
{
    slm_gguf *g = check_gguf(L, 1);
    int64_t i = slm_gguf_find_key(g, luaL_checkstring(L, 2));
    if (i < 0) return 0;
    slm_gguf_type t = slm_gguf_kv_type(g, i);
    lua_pushstring(L, slm_gguf_type_name(t));
    if (t != SLM_GGUF_ARRAY) return 1;
    lua_pushstring(L, slm_gguf_type_name(slm_gguf_arr_type(g, i)));
    return 2;
}

/* Pushes element j of a numeric array (raw little-endian, unaligned). */
static void push_elem(lua_State *L, slm_gguf_type t, const unsigned char *p)
{
    switch (t) {
    case SLM_GGUF_UINT8: lua_pushinteger(L, p[0]); break;
    case SLM_GGUF_INT8: lua_pushinteger(L, (int8_t)p[0]); break;
    case SLM_GGUF_BOOL: lua_pushboolean(L, p[0]); break;
    case SLM_GGUF_UINT16: { uint16_t v; memcpy(&v, p, 2); lua_pushinteger(L, v); break; }
    case SLM_GGUF_INT16: { int16_t v; memcpy(&v, p, 2); lua_pushinteger(L, v); break; }
    case SLM_GGUF_UINT32: { uint32_t v; memcpy(&v, p, 4); lua_pushinteger(L, v); break; }
    case SLM_GGUF_INT32: { int32_t v; memcpy(&v, p, 4); lua_pushinteger(L, v); break; }
    case SLM_GGUF_FLOAT32: { float v; memcpy(&v, p, 4); lua_pushnumber(L, v); break; }
    case SLM_GGUF_INT64: { int64_t v; memcpy(&v, p, 8); lua_pushinteger(L, v); break; }
    case SLM_GGUF_FLOAT64: { double v; memcpy(&v, p, 8); lua_pushnumber(L, v); break; }
    case SLM_GGUF_UINT64: {
        /* above INT64_MAX a Lua integer would wrap: give a float instead */
        uint64_t v;
        memcpy(&v, p, 8);
        if (v > INT64_MAX) lua_pushnumber(L, (lua_Number)v);
        else lua_pushinteger(L, (lua_Integer)v);
        break;
    }
    default: lua_pushnil(L);
    }
}

static void push_arr_elem(lua_State *L, slm_gguf *g, int64_t i, uint64_t j)
{
    slm_gguf_type et = slm_gguf_arr_type(g, i);
    if (et == SLM_GGUF_STRING) {
        size_t len;
        const char *s = slm_gguf_arr_str(g, i, j, &len);
        lua_pushlstring(L, s, len);
    } else {
        const unsigned char *p = slm_gguf_arr_data(g, i);
        push_elem(L, et, p + j * slm_gguf_type_size(et));
    }
}

static int l_get(lua_State *L)
{
    slm_gguf *g = check_gguf(L, 1);
    int64_t i = slm_gguf_find_key(g, luaL_checkstring(L, 2));
    if (i < 0) return 0;
    slm_gguf_type t = slm_gguf_kv_type(g, i);
    if (t == SLM_GGUF_STRING) {
        size_t len;
        const char *s = slm_gguf_get_str(g, i, &len);
        lua_pushlstring(L, s, len);
    } else if (t == SLM_GGUF_ARRAY) {
        uint64_t n = slm_gguf_arr_len(g, i);
        lua_createtable(L, n < INT32_MAX ? (int)n : 0, 0);
        for (uint64_t j = 0; j < n; j++) {
            push_arr_elem(L, g, i, j);
            lua_rawseti(L, -2, (lua_Integer)j + 1);
        }
    } else {
        /* scalars: the same decoding as array elements */
        slm_gguf_type et = t;
        int ok;
        if (et == SLM_GGUF_FLOAT32 || et == SLM_GGUF_FLOAT64)
            lua_pushnumber(L, slm_gguf_get_float(g, i, &ok));
        else if (et == SLM_GGUF_BOOL)
            lua_pushboolean(L, (int)slm_gguf_get_int(g, i, &ok));
        else if (et == SLM_GGUF_UINT64) {
            uint64_t v = slm_gguf_get_uint(g, i, &ok);
            if (v > INT64_MAX) lua_pushnumber(L, (lua_Number)v);
            else lua_pushinteger(L, (lua_Integer)v);
        } else lua_pushinteger(L, slm_gguf_get_int(g, i, &ok));
    }
    return 1;
}

static int64_t check_array_key(lua_State *L, slm_gguf *g, int idx)
{
    const char *key = luaL_checkstring(L, idx);
    int64_t i = slm_gguf_find_key(g, key);
    if (i < 0 || slm_gguf_kv_type(g, i) != SLM_GGUF_ARRAY)
        luaL_error(L, "%s: no array key '%s'", slm_gguf_path(g), key);
    return i;
}

static int l_arr_len(lua_State *L)
{
    slm_gguf *g = check_gguf(L, 1);
    lua_pushinteger(L, (lua_Integer)slm_gguf_arr_len(g, check_array_key(L, g, 2)));
    return 1;
}

static int l_arr_get(lua_State *L)
{
    slm_gguf *g = check_gguf(L, 1);
    int64_t i = check_array_key(L, g, 2);
    lua_Integer j = luaL_checkinteger(L, 3);
    if (j < 1 || (uint64_t)j > slm_gguf_arr_len(g, i)) return 0;
    push_arr_elem(L, g, i, (uint64_t)j - 1);
    return 1;
}

/* Tensor index from a 1-based index or a name; -1 when there is none. */
static int64_t tensor_arg(lua_State *L, slm_gguf *g, int idx)
{
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Integer i = luaL_checkinteger(L, idx);
        return i >= 1 && i <= slm_gguf_n_tensors(g) ? i - 1 : -1;
    }
    return slm_gguf_find_tensor(g, luaL_checkstring(L, idx));
}

static int l_info(lua_State *L)
{
    slm_gguf *g = check_gguf(L, 1);
    int64_t i = tensor_arg(L, g, 2);
    if (i < 0) return 0;
    const slm_gguf_tensor_info *ti = slm_gguf_get_tensor_info(g, i);
    lua_createtable(L, 0, 5);
    lua_pushstring(L, ti->name);
    lua_setfield(L, -2, "name");
    lua_pushstring(L, slm_dtype_name(ti->dtype));
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
    slm_gguf *g = check_gguf(L, 1);
    int64_t i = tensor_arg(L, g, 2);
    if (i < 0) {
        luaL_pushfail(L);
        if (lua_type(L, 2) == LUA_TNUMBER)
            lua_pushfstring(L, "%s: no tensor %I", slm_gguf_path(g), lua_tointeger(L, 2));
        else lua_pushfstring(L, "%s: no tensor '%s'", slm_gguf_path(g), lua_tostring(L, 2));
        return 2;
    }
    slm_error err;
    slm_tensor *t = slm_gguf_tensor(g, i, &err);
    if (!t) return slm_bind_fail(L, &err);
    slm_bind_push_tensor(L, t);
    lua_pushvalue(L, 1);              /* the view's owner is the file */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int l_tostring(lua_State *L)
{
    gguf_box *b = luaL_checkudata(L, 1, GGUF_MT);
    if (!b->g) lua_pushliteral(L, "slm.GGUF(closed)");
    else lua_pushfstring(L, "slm.GGUF(%s, %I keys, %I tensors)", slm_gguf_path(b->g),
                         (lua_Integer)slm_gguf_n_kv(b->g), (lua_Integer)slm_gguf_n_tensors(b->g));
    return 1;
}

/* ---- writer ------------------------------------------------------------ */

typedef struct writer_box {
    slm_gguf_writer *w;
} writer_box;

static int writer_gc(lua_State *L)
{
    writer_box *b = luaL_checkudata(L, 1, WRITER_MT);
    slm_gguf_writer_free(b->w);
    b->w = NULL;
    return 0;
}

/* Value at the top of the stack as a host value of type t into out;
 * raises naming the key (and element j >= 1 for arrays) when it does not
 * fit. */
static void to_value(lua_State *L, slm_gguf_type t, const char *key, lua_Integer j,
                     unsigned char *out)
{
    char where[32] = "";
    if (j > 0) snprintf(where, sizeof where, " element %lld", (long long)j);
    if (t == SLM_GGUF_BOOL) {
        if (!lua_isboolean(L, -1))
            luaL_error(L, "gguf key '%s'%s: bool expected, got %s", key, where, luaL_typename(L, -1));
        out[0] = (unsigned char)lua_toboolean(L, -1);
        return;
    }
    if (lua_type(L, -1) != LUA_TNUMBER)
        luaL_error(L, "gguf key '%s'%s: number expected, got %s", key, where, luaL_typename(L, -1));
    if (t == SLM_GGUF_FLOAT32) {
        float f = (float)lua_tonumber(L, -1);
        memcpy(out, &f, 4);
        return;
    }
    if (t == SLM_GGUF_FLOAT64) {
        double d = lua_tonumber(L, -1);
        memcpy(out, &d, 8);
        return;
    }
    int isint;
    lua_Integer v = lua_tointegerx(L, -1, &isint);
    static const struct { lua_Integer lo, hi; } range[] = {
        [SLM_GGUF_UINT8] = {0, UINT8_MAX}, [SLM_GGUF_INT8] = {INT8_MIN, INT8_MAX},
        [SLM_GGUF_UINT16] = {0, UINT16_MAX}, [SLM_GGUF_INT16] = {INT16_MIN, INT16_MAX},
        [SLM_GGUF_UINT32] = {0, UINT32_MAX}, [SLM_GGUF_INT32] = {INT32_MIN, INT32_MAX},
        [SLM_GGUF_UINT64] = {0, INT64_MAX}, [SLM_GGUF_INT64] = {INT64_MIN, INT64_MAX},
    };
    if (!isint || v < range[t].lo || v > range[t].hi)
        luaL_error(L, "gguf key '%s'%s: %s does not fit in %s", key, where,
                   lua_tostring(L, -1), slm_gguf_type_name(t));
    switch (slm_gguf_type_size(t)) {
    case 1: out[0] = (unsigned char)v; break;
    case 2: { uint16_t x = (uint16_t)v; memcpy(out, &x, 2); break; }
    case 4: { uint32_t x = (uint32_t)v; memcpy(out, &x, 4); break; }
    default: memcpy(out, &v, 8);
    }
}

static slm_gguf_type check_type(lua_State *L, const char *key, const char *name)
{
    int t = slm_gguf_type_from_name(name);
    if (t < 0 || t == SLM_GGUF_ARRAY)
        luaL_error(L, "gguf key '%s': unknown type '%s' (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 "
                   "bool str)", key, name);
    return (slm_gguf_type)t;
}

/* Adds kvs[i] = {key=, type=, value=, array=} (at the top of the stack). */
static void add_kv(lua_State *L, slm_gguf_writer *w)
{
    slm_error err;
    lua_getfield(L, -1, "key");
    const char *key = luaL_checkstring(L, -1);
    lua_getfield(L, -2, "type");
    slm_gguf_type t = check_type(L, key, luaL_checkstring(L, -1));
    lua_getfield(L, -3, "array");
    int array = lua_toboolean(L, -1);
    lua_getfield(L, -4, "value");            /* stack: entry key type array value */
    slm_status st;
    if (!array && t == SLM_GGUF_STRING) {
        size_t len;
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "gguf key '%s': string expected, got %s", key, luaL_typename(L, -1));
        const char *s = lua_tolstring(L, -1, &len);
        st = slm_gguf_writer_set_str(w, key, s, len, &err);
    } else if (!array) {
        unsigned char v[8];
        to_value(L, t, key, 0, v);
        st = slm_gguf_writer_set(w, key, t, v, &err);
    } else {
        if (!lua_istable(L, -1))
            luaL_error(L, "gguf key '%s': array value must be a table", key);
        lua_Integer n = luaL_len(L, -1);
        if (t == SLM_GGUF_STRING) {
            /* pointers into the strings, which the table keeps alive */
            const char **strs = lua_newuserdatauv(L, (size_t)n * sizeof *strs + 1, 0);
            size_t *lens = lua_newuserdatauv(L, (size_t)n * sizeof *lens + 1, 0);
            for (lua_Integer j = 1; j <= n; j++) {
                if (lua_geti(L, -3, j) != LUA_TSTRING)
                    luaL_error(L, "gguf key '%s' element %I: string expected, got %s", key, j,
                               luaL_typename(L, -1));
                strs[j - 1] = lua_tolstring(L, -1, &lens[j - 1]);
                lua_pop(L, 1);
            }
            st = slm_gguf_writer_set_arr_str(w, key, strs, lens, (uint64_t)n, &err);
            lua_pop(L, 2);
        } else {
            size_t esz = slm_gguf_type_size(t);
            unsigned char *buf = lua_newuserdatauv(L, (size_t)n * esz + 1, 0);
            for (lua_Integer j = 1; j <= n; j++) {
                lua_geti(L, -2, j);
                to_value(L, t, key, j, buf + (j - 1) * esz);
                lua_pop(L, 1);
            }
            st = slm_gguf_writer_set_arr(w, key, t, buf, (uint64_t)n, &err);
            lua_pop(L, 1);
        }
    }
    if (st != SLM_OK) slm_bind_error(L, &err);
    lua_pop(L, 4);
}

static int l_write(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    writer_box *b = lua_newuserdatauv(L, sizeof *b, 0);   /* index 4, closed on error */
    b->w = NULL;
    luaL_setmetatable(L, WRITER_MT);
    lua_toclose(L, 4);
    slm_error err;
    if (!(b->w = slm_gguf_writer_new(&err))) return slm_bind_error(L, &err);
    lua_Integer n = luaL_len(L, 2);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, 2, i) != LUA_TTABLE) luaL_error(L, "gguf metadata entry %I: table expected", i);
        add_kv(L, b->w);
        lua_pop(L, 1);
    }
    n = luaL_len(L, 3);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, 3, i) != LUA_TTABLE) luaL_error(L, "gguf tensor entry %I: table expected", i);
        lua_getfield(L, -1, "name");
        const char *name = luaL_checkstring(L, -1);
        lua_getfield(L, -2, "tensor");
        slm_tensor *t = slm_bind_check_tensor(L, -1);
        if (slm_gguf_writer_add_tensor(b->w, name, t, &err) != SLM_OK) slm_bind_error(L, &err);
        lua_pop(L, 3);
    }
    if (slm_gguf_writer_write(b->w, path, &err) != SLM_OK) return slm_bind_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static const luaL_Reg methods[] = {
    {"close", l_close},
    {"version", l_version},
    {"alignment", l_alignment},
    {"data_offset", l_data_offset},
    {"path", l_path},
    {"n_kv", l_n_kv},
    {"n_tensors", l_n_tensors},
    {"key", l_key},
    {"type", l_type},
    {"get", l_get},
    {"arr_len", l_arr_len},
    {"arr_get", l_arr_get},
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
    {"write", l_write},
    {NULL, NULL}
};

/* Sets core.gguf = {open, write}. */
void slm_bind_open_gguf(lua_State *L)
{
    luaL_newmetatable(L, GGUF_MT);
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    luaL_newmetatable(L, WRITER_MT);
    lua_pushcfunction(L, writer_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, writer_gc);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);
    luaL_newlib(L, functions);
    lua_setfield(L, -2, "gguf");
}
