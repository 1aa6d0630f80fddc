/* The slm.Tensor userdata and the `slm.core.tensor` constructors.
 *
 * A tensor userdata is a box holding one slm_tensor pointer plus one user
 * value: the object that owns what the tensor views (a GGUF file, ...).
 * Views made here copy the parent's user value, so an owner stays alive as
 * long as any view of it does; the bytes themselves are kept alive by the
 * storage's reference count. `__gc`, `__close` and `free` share one
 * idempotent close that nulls the pointer.
 *
 * Dims and indices are 1-based in Lua and 0-based in C: every argument is
 * checked and converted here, so range errors name the Lua values. */
#include <stdlib.h>
#include <string.h>

#include "bind.h"

typedef struct tensor_box {
    slm_tensor *t;
} tensor_box;

static int box_new(lua_State *L)
{
    slm_tensor *t = lua_touserdata(L, 1);
    tensor_box *b = lua_newuserdatauv(L, sizeof *b, 1);
    b->t = NULL;
    luaL_setmetatable(L, SLM_TENSOR_MT);
    b->t = t;
    return 1;
}

void slm_bind_push_tensor(lua_State *L, slm_tensor *t)
{
    /* the userdata is made in a protected call so that a memory error
     * cannot leak t */
    lua_pushcfunction(L, box_new);
    lua_pushlightuserdata(L, t);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        slm_tensor_free(t);
        lua_error(L);
    }
}

slm_tensor *slm_bind_check_tensor(lua_State *L, int idx)
{
    tensor_box *b = luaL_checkudata(L, idx, SLM_TENSOR_MT);
    if (!b->t) luaL_error(L, "attempt to use a freed tensor");
    return b->t;
}

/* Dtype names in id order, "f32, f16, q4_0, ..." (for error messages). */
static const char *push_dtype_names(lua_State *L)
{
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    int first = 1;
    for (int i = 0; i < SLM_DTYPE_COUNT; i++) {
        const slm_dtype_traits *tr = slm_dtype_get(i);
        if (!tr) continue;
        if (!first) luaL_addstring(&B, ", ");
        luaL_addstring(&B, tr->name);
        first = 0;
    }
    luaL_pushresult(&B);
    return lua_tostring(L, -1);
}

slm_dtype slm_bind_check_dtype(lua_State *L, int idx)
{
    const char *name = luaL_checkstring(L, idx);
    int id = slm_dtype_from_name(name);
    if (id < 0) {
        const char *names = push_dtype_names(L);
        luaL_argerror(L, idx, lua_pushfstring(L, "unknown dtype '%s' (valid: %s)",
                                              name, names));
    }
    return (slm_dtype)id;
}

static slm_dtype opt_dtype(lua_State *L, int idx)
{
    return lua_isnoneornil(L, idx) ? SLM_DTYPE_F32 : slm_bind_check_dtype(L, idx);
}

/* A shape: a table of 1..SLM_MAX_DIMS integers (checked for positivity by
 * the core, which knows the block sizes). Returns ndim. */
static int check_shape(lua_State *L, int idx, int64_t *shape)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    if (n < 1 || n > SLM_MAX_DIMS)
        luaL_argerror(L, idx, lua_pushfstring(L, "shape must have 1 to %d dims, got %I",
                                              SLM_MAX_DIMS, n));
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || lua_type(L, -1) != LUA_TNUMBER)
            luaL_argerror(L, idx, lua_pushfstring(L, "shape[%I] is not an integer", i));
        shape[i - 1] = (int64_t)v;
        lua_pop(L, 1);
    }
    return (int)n;
}

/* 1-based dim argument -> 0-based. */
static int check_dim(lua_State *L, int idx, const slm_tensor *t)
{
    lua_Integer d = luaL_checkinteger(L, idx);
    if (d < 1 || d > t->ndim)
        luaL_argerror(L, idx, lua_pushfstring(L, "dim %I out of range 1..%d", d, t->ndim));
    return (int)d - 1;
}

/* 1-based index into a dim of size n -> 0-based. */
static int64_t check_index(lua_State *L, int idx, int64_t n)
{
    lua_Integer i = luaL_checkinteger(L, idx);
    if (i < 1 || i > n)
        luaL_argerror(L, idx, lua_pushfstring(L, "index %I out of range 1..%I", i,
                                              (lua_Integer)n));
    return (int64_t)i - 1;
}

/* "2x3" */
static const char *push_shape_string(lua_State *L, int ndim, const int64_t *shape)
{
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    for (int i = 0; i < ndim; i++) {
        if (i) luaL_addchar(&B, 'x');
        lua_pushinteger(L, (lua_Integer)shape[i]);
        luaL_addvalue(&B);
    }
    luaL_pushresult(&B);
    return lua_tostring(L, -1);
}

/* Pushes a view v of the tensor at idx 1, sharing its owner. */
static int push_view(lua_State *L, slm_tensor *v, const slm_error *err)
{
    if (!v) return slm_bind_error(L, err);
    slm_bind_push_tensor(L, v);
    lua_getiuservalue(L, 1, 1);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* ---- constructors (slm.core.tensor) ---------------------------------- */

/* zeros(shape [, dtype = "f32"]) */
static int l_zeros(lua_State *L)
{
    int64_t shape[SLM_MAX_DIMS];
    int ndim = check_shape(L, 1, shape);
    slm_dtype dt = opt_dtype(L, 2);
    slm_error err;
    slm_tensor *t = slm_tensor_new(dt, ndim, shape, &err);
    if (!t) return slm_bind_error(L, &err);
    slm_bind_push_tensor(L, t);
    return 1;
}

/* frombytes(str, dtype, shape): a new tensor holding a copy of the bytes */
static int l_frombytes(lua_State *L)
{
    size_t len;
    const char *s = luaL_checklstring(L, 1, &len);
    slm_dtype dt = slm_bind_check_dtype(L, 2);
    int64_t shape[SLM_MAX_DIMS];
    int ndim = check_shape(L, 3, shape);
    size_t nbytes;
    slm_error err;
    if (slm_shape_check(dt, ndim, shape, &nbytes, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    if (len != nbytes)
        return luaL_error(L, "frombytes: got %I bytes, a %s tensor of shape %s needs %I",
                          (lua_Integer)len, slm_dtype_name(dt),
                          push_shape_string(L, ndim, shape),
                          (lua_Integer)nbytes);
    slm_tensor *t = slm_tensor_new(dt, ndim, shape, &err);
    if (!t) return slm_bind_error(L, &err);
    slm_bind_push_tensor(L, t);
    memcpy(slm_tensor_data(t), s, nbytes);
    return 1;
}

/* fromtable(flat, dtype, shape): values in row-major order, converted to
 * dtype through float32 (integer dtypes are written exactly) */
static int l_fromtable(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    slm_dtype dt = slm_bind_check_dtype(L, 2);
    int64_t shape[SLM_MAX_DIMS];
    int ndim = check_shape(L, 3, shape);
    slm_error err;
    if (slm_shape_check(dt, ndim, shape, NULL, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) numel *= shape[i];
    lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    if (n != numel)
        return luaL_error(L, "fromtable: %I values for %I elements", n, (lua_Integer)numel);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_rawgeti(L, 1, i) != LUA_TNUMBER)
            return luaL_error(L, "fromtable: value %I is a %s, not a number", i,
                              luaL_typename(L, -1));
        lua_pop(L, 1);
    }
    const slm_dtype_traits *tr = slm_dtype_get((int)dt);
    if (!tr->from_f32) {
        /* integer dtypes: exact element writes (checked by the core) */
        slm_tensor *t = slm_tensor_new(dt, 1, &numel, &err);
        if (!t) return slm_bind_error(L, &err);
        slm_bind_push_tensor(L, t);
        for (int64_t i = 0; i < numel; i++) {
            lua_rawgeti(L, 1, (lua_Integer)i + 1);
            double v = lua_tonumber(L, -1);
            lua_pop(L, 1);
            if (slm_tensor_set(t, &i, v, &err) != SLM_OK) return slm_bind_error(L, &err);
        }
        slm_tensor *r = slm_tensor_reshape(t, ndim, shape, &err);
        if (!r) return slm_bind_error(L, &err);
        slm_bind_push_tensor(L, r);
        return 1;
    }
    slm_tensor *f = slm_tensor_new(SLM_DTYPE_F32, ndim, shape, &err);
    if (!f) return slm_bind_error(L, &err);
    slm_bind_push_tensor(L, f);
    float *p = slm_tensor_data(f);
    for (int64_t i = 0; i < numel; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        p[i] = (float)lua_tonumber(L, -1);
        lua_pop(L, 1);
    }
    if (dt == SLM_DTYPE_F32) return 1;
    slm_tensor *t = slm_tensor_convert(f, dt, &err);
    if (!t) return slm_bind_error(L, &err);
    slm_bind_push_tensor(L, t);
    return 1;
}

/* ---- methods ------------------------------------------------------------ */

static int l_close(lua_State *L)
{
    tensor_box *b = luaL_checkudata(L, 1, SLM_TENSOR_MT);
    slm_tensor_free(b->t);
    b->t = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    tensor_box *b = luaL_checkudata(L, 1, SLM_TENSOR_MT);
    if (!b->t) {
        lua_pushliteral(L, "slm.Tensor(freed)");
        return 1;
    }
    const char *shape = push_shape_string(L, b->t->ndim, b->t->shape);
    lua_pushfstring(L, "slm.Tensor(%s, %s)", slm_dtype_name(b->t->dtype), shape);
    return 1;
}

static void push_dims(lua_State *L, const int64_t *v, int n)
{
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        lua_pushinteger(L, (lua_Integer)v[i]);
        lua_rawseti(L, -2, i + 1);
    }
}

static int l_shape(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    push_dims(L, t->shape, t->ndim);
    return 1;
}

/* size(dim) -> number; size() -> shape table */
static int l_size(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    if (lua_isnoneornil(L, 2)) {
        push_dims(L, t->shape, t->ndim);
        return 1;
    }
    lua_pushinteger(L, (lua_Integer)t->shape[check_dim(L, 2, t)]);
    return 1;
}

static int l_stride(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    push_dims(L, t->stride, t->ndim);
    return 1;
}

static int l_dtype(lua_State *L)
{
    lua_pushstring(L, slm_dtype_name(slm_bind_check_tensor(L, 1)->dtype));
    return 1;
}

static int l_dim(lua_State *L)
{
    lua_pushinteger(L, slm_bind_check_tensor(L, 1)->ndim);
    return 1;
}

static int l_numel(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_tensor_numel(slm_bind_check_tensor(L, 1)));
    return 1;
}

static int l_len(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_bind_check_tensor(L, 1)->shape[0]);
    return 1;
}

static int l_nbytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_tensor_nbytes(slm_bind_check_tensor(L, 1)));
    return 1;
}

static int l_is_contiguous(lua_State *L)
{
    lua_pushboolean(L, slm_tensor_is_contiguous(slm_bind_check_tensor(L, 1)));
    return 1;
}

static int l_is_readonly(lua_State *L)
{
    lua_pushboolean(L, slm_bind_check_tensor(L, 1)->storage->readonly);
    return 1;
}

static int l_shares_storage(lua_State *L)
{
    slm_tensor *a = slm_bind_check_tensor(L, 1), *b = slm_bind_check_tensor(L, 2);
    lua_pushboolean(L, a->storage == b->storage);
    return 1;
}

/* narrow(dim, start, len): elements start..start+len-1 of dim */
static int l_narrow(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    int d = check_dim(L, 2, t);
    int64_t start = check_index(L, 3, t->shape[d]);
    lua_Integer len = luaL_checkinteger(L, 4);
    if (len < 1 || len > t->shape[d] - start)
        luaL_argerror(L, 4, lua_pushfstring(L, "length %I out of range 1..%I", len,
                                            (lua_Integer)(t->shape[d] - start)));
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    if (d == t->ndim - 1 && start % tr->block_size != 0)
        luaL_argerror(L, 3, lua_pushfstring(L, "start %I is not at a %s block boundary "
                                            "(1 + a multiple of %I)", (lua_Integer)start + 1,
                                            tr->name, (lua_Integer)tr->block_size));
    if (d == t->ndim - 1 && len % tr->block_size != 0)
        luaL_argerror(L, 4, lua_pushfstring(L, "length %I is not a multiple of the %s "
                                            "block size %I", len, tr->name,
                                            (lua_Integer)tr->block_size));
    slm_error err;
    return push_view(L, slm_tensor_narrow(t, d, start, (int64_t)len, &err), &err);
}

static int l_select(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    int d = check_dim(L, 2, t);
    int64_t i = check_index(L, 3, t->shape[d]);
    slm_error err;
    return push_view(L, slm_tensor_select(t, d, i, &err), &err);
}

static int l_transpose(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    int d0 = check_dim(L, 2, t), d1 = check_dim(L, 3, t);
    slm_error err;
    return push_view(L, slm_tensor_transpose(t, d0, d1, &err), &err);
}

static int l_t(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    if (t->ndim != 2)
        return luaL_error(L, "t() expects a 2-D tensor, got %d-D (use transpose)", t->ndim);
    slm_error err;
    return push_view(L, slm_tensor_transpose(t, 0, 1, &err), &err);
}

/* reshape(shape) or reshape(d1, d2, ...); one dim may be -1 */
static int l_reshape(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    int64_t shape[SLM_MAX_DIMS];
    int ndim;
    if (lua_type(L, 2) == LUA_TTABLE) {
        ndim = check_shape(L, 2, shape);
    } else {
        ndim = lua_gettop(L) - 1;
        if (ndim < 1 || ndim > SLM_MAX_DIMS)
            return luaL_error(L, "reshape: expected 1 to %d sizes, got %d", SLM_MAX_DIMS, ndim);
        for (int i = 0; i < ndim; i++) shape[i] = (int64_t)luaL_checkinteger(L, i + 2);
    }
    slm_error err;
    return push_view(L, slm_tensor_reshape(t, ndim, shape, &err), &err);
}

/* copy_(src): in place, any dtypes, same number of elements; returns self */
static int l_copy_(lua_State *L)
{
    slm_tensor *dst = slm_bind_check_tensor(L, 1);
    slm_tensor *src = slm_bind_check_tensor(L, 2);
    slm_error err;
    if (slm_tensor_copy(dst, src, &err) != SLM_OK) return slm_bind_error(L, &err);
    lua_settop(L, 1);
    return 1;
}

static int l_to(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    slm_dtype dt = slm_bind_check_dtype(L, 2);
    slm_error err;
    slm_tensor *r = slm_tensor_convert(t, dt, &err);
    if (!r) return slm_bind_error(L, &err);
    slm_bind_push_tensor(L, r);
    return 1;
}

static int l_clone(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    slm_error err;
    slm_tensor *r = slm_tensor_convert(t, t->dtype, &err);
    if (!r) return slm_bind_error(L, &err);
    slm_bind_push_tensor(L, r);
    return 1;
}

/* contiguous(): self when already contiguous, else a contiguous copy */
static int l_contiguous(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    if (slm_tensor_is_contiguous(t)) {
        lua_settop(L, 1);
        return 1;
    }
    return l_clone(L);
}

/* Reads t:ndim 1-based indices from stack slots first.. (nargs given). */
static void check_indices(lua_State *L, const slm_tensor *t, int first, int nargs,
                          const char *op, int64_t *idx)
{
    if (nargs != t->ndim)
        luaL_error(L, "%s: a %d-D tensor needs %d indices, got %d", op, t->ndim, t->ndim,
                   nargs);
    for (int i = 0; i < t->ndim; i++) idx[i] = check_index(L, first + i, t->shape[i]);
}

static int l_get(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    int64_t idx[SLM_MAX_DIMS];
    check_indices(L, t, 2, lua_gettop(L) - 1, "get", idx);
    double v;
    slm_error err;
    if (slm_tensor_get(t, idx, &v, &err) != SLM_OK) return slm_bind_error(L, &err);
    if (t->dtype == SLM_DTYPE_I8 || t->dtype == SLM_DTYPE_I16 || t->dtype == SLM_DTYPE_I32)
        lua_pushinteger(L, (lua_Integer)v);
    else
        lua_pushnumber(L, v);
    return 1;
}

/* set(i, j, ..., v); quantized tensors requantize the element's block */
static int l_set(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    int top = lua_gettop(L);
    if (top < 2) return luaL_error(L, "set: expected %d indices and a value", t->ndim);
    double v = luaL_checknumber(L, top);
    int64_t idx[SLM_MAX_DIMS];
    check_indices(L, t, 2, top - 2, "set", idx);
    slm_error err;
    if (slm_tensor_set(t, idx, v, &err) != SLM_OK) return slm_bind_error(L, &err);
    lua_settop(L, 1);
    return 1;
}

/* row(i): row i of t viewed as (numel / last dim) x last dim, as a table of
 * floats (dequantized), or of integers for the integer dtypes */
static int l_row(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    int64_t n = t->shape[t->ndim - 1];
    int64_t r = check_index(L, 2, slm_tensor_numel(t) / n);
    slm_error err;
    if (t->dtype == SLM_DTYPE_I8 || t->dtype == SLM_DTYPE_I16 || t->dtype == SLM_DTYPE_I32) {
        /* exact integers: i32 does not fit in a float */
        int64_t idx[SLM_MAX_DIMS];
        for (int i = t->ndim - 2; i >= 0; i--) {
            idx[i] = r % t->shape[i];
            r /= t->shape[i];
        }
        lua_createtable(L, (int)(n < 1 << 24 ? n : 0), 0);
        for (int64_t j = 0; j < n; j++) {
            double v;
            idx[t->ndim - 1] = j;
            if (slm_tensor_get(t, idx, &v, &err) != SLM_OK) return slm_bind_error(L, &err);
            lua_pushinteger(L, (lua_Integer)v);
            lua_rawseti(L, -2, (lua_Integer)j + 1);
        }
        return 1;
    }
    float *buf = lua_newuserdatauv(L, (size_t)n * sizeof *buf, 0);  /* GC-owned */
    if (slm_tensor_row_f32(t, r, buf, &err) != SLM_OK) return slm_bind_error(L, &err);
    lua_createtable(L, (int)(n < 1 << 24 ? n : 0), 0);
    for (int64_t j = 0; j < n; j++) {
        lua_pushnumber(L, buf[j]);
        lua_rawseti(L, -2, (lua_Integer)j + 1);
    }
    return 1;
}

/* tobytes(): the elements in row-major order in the dtype's own encoding */
static int l_tobytes(lua_State *L)
{
    slm_tensor *t = slm_bind_check_tensor(L, 1);
    if (!slm_tensor_is_contiguous(t)) {
        slm_error err;
        t = slm_tensor_convert(t, t->dtype, &err);
        if (!t) return slm_bind_error(L, &err);
        slm_bind_push_tensor(L, t);
    }
    lua_pushlstring(L, slm_tensor_data(t), slm_tensor_nbytes(t));
    return 1;
}

static const luaL_Reg methods[] = {
    {"free", l_close},
    {"shape", l_shape},
    {"size", l_size},
    {"stride", l_stride},
    {"dtype", l_dtype},
    {"dim", l_dim},
    {"numel", l_numel},
    {"nbytes", l_nbytes},
    {"is_contiguous", l_is_contiguous},
    {"is_readonly", l_is_readonly},
    {"shares_storage", l_shares_storage},
    {"narrow", l_narrow},
    {"select", l_select},
    {"transpose", l_transpose},
    {"t", l_t},
    {"reshape", l_reshape},
    {"view", l_reshape},
    {"copy_", l_copy_},
    {"to", l_to},
    {"clone", l_clone},
    {"contiguous", l_contiguous},
    {"get", l_get},
    {"set", l_set},
    {"row", l_row},
    {"tobytes", l_tobytes},
    {NULL, NULL}
};

static const luaL_Reg metamethods[] = {
    {"__gc", l_close},
    {"__close", l_close},
    {"__tostring", l_tostring},
    {"__len", l_len},
    {"__index", NULL},
    {NULL, NULL}
};

static const luaL_Reg functions[] = {
    {"zeros", l_zeros},
    {"frombytes", l_frombytes},
    {"fromtable", l_fromtable},
    {NULL, NULL}
};

/* dtype_for_row(dtype, ncols) -> the dtype a row of ncols gets when dtype
 * is asked for (core/dtype.h: the reference quantizer's fallbacks) */
static int l_dtype_for_row(lua_State *L)
{
    slm_dtype t = slm_bind_check_dtype(L, 1);
    lua_Integer ncols = luaL_checkinteger(L, 2);
    luaL_argcheck(L, ncols > 0, 2, "row length must be positive");
    lua_pushstring(L, slm_dtype_name(slm_dtype_for_row(t, (int64_t)ncols)));
    return 1;
}

/* core.dtypes[name] = {id =, block_size =, type_size =, quantized =,
 * fallback = name | nil, file_type = id | nil} and core.file_types[name] =
 * {id =, dtype =}: the traits tables of core/dtype.c, the one place these
 * facts are written down. */
static void push_dtype_tables(lua_State *L)
{
    lua_newtable(L);
    for (int i = 0; i < SLM_DTYPE_COUNT; i++) {
        const slm_dtype_traits *tr = slm_dtype_get(i);
        if (!tr) continue;
        lua_createtable(L, 0, 6);
        lua_pushinteger(L, i);
        lua_setfield(L, -2, "id");
        lua_pushinteger(L, tr->block_size);
        lua_setfield(L, -2, "block_size");
        lua_pushinteger(L, (lua_Integer)tr->type_size);
        lua_setfield(L, -2, "type_size");
        lua_pushboolean(L, tr->is_quantized);
        lua_setfield(L, -2, "quantized");
        if (slm_dtype_get(tr->fallback)) {
            lua_pushstring(L, slm_dtype_name((slm_dtype)tr->fallback));
            lua_setfield(L, -2, "fallback");
        }
        const slm_file_type *ft = slm_file_type_of((slm_dtype)i);
        if (ft) {
            lua_pushinteger(L, ft->id);
            lua_setfield(L, -2, "file_type");
        }
        lua_setfield(L, -2, tr->name);
    }
    lua_setfield(L, -2, "dtypes");
    lua_newtable(L);
    const slm_file_type *ft;
    for (int i = 0; (ft = slm_file_type_at(i)) != NULL; i++) {
        lua_createtable(L, 0, 2);
        lua_pushinteger(L, ft->id);
        lua_setfield(L, -2, "id");
        lua_pushstring(L, slm_dtype_name(ft->dtype));
        lua_setfield(L, -2, "dtype");
        lua_setfield(L, -2, ft->name);
    }
    lua_setfield(L, -2, "file_types");
    lua_pushcfunction(L, l_dtype_for_row);
    lua_setfield(L, -2, "dtype_for_row");
}

/* Sets core.tensor = {zeros, frombytes, fromtable, metatable}, and the dtype
 * tables above. The metatable's __index is the methods table;
 * lua/slm/tensor.lua adds methods to it and wraps __index for t[i]. */
void slm_bind_open_tensor(lua_State *L)
{
    luaL_newlib(L, functions);
    luaL_newmetatable(L, SLM_TENSOR_MT);
    luaL_setfuncs(L, metamethods, 0);
    luaL_newlib(L, methods);
    lua_setfield(L, -2, "__index");
    lua_setfield(L, -2, "metatable");
    lua_setfield(L, -2, "tensor");
    push_dtype_tables(L);
}
