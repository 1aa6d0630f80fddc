/* Token files (csrc/train/tokens.h) in `slm.core.train`:
 *
 *   tokens_open(path) -> file | nil, msg
 *     file:count() file:vocab() file:width() file:path()
 *     file:read(start, n) -> {ids}               positions 1-based, as in Lua
 *     file:fill(out, starts) -> out              out: i32 tensor (B, T1), starts:
 *                                                {B positions}; row b = ids at
 *                                                starts[b] .. starts[b] + T1 - 1
 *     file:sample(out, rng, lo, hi) -> out, starts
 *                                                B windows at uniform random starts
 *                                                in lo .. hi - T1 + 1 (windows inside
 *                                                positions lo..hi); rng = {4 integers},
 *                                                the generator's state, advanced in place
 *     file:close() (= free, __close, __gc)
 *   tokens_writer(path, vocab) -> writer | nil, msg
 *     writer:write(ids) -> writer                ids: a table of integers or an i32
 *                                                tensor; a bad id raises, naming it,
 *                                                and nothing of that call is written
 *     writer:count()
 *     writer:close() -> count | nil, msg         completes the file (PATH.tmp -> PATH)
 *     writer:abort() (= free, __close, __gc)     removes PATH.tmp unless closed
 *   rng_seed(seed) -> {4 integers}               the state slm_rng_seed gives
 *
 * Ids are 0-based as in the model files; positions in the file are 1-based
 * here and 0-based in C (converted and range-checked below). */
#include <string.h>

#include "../train/tokens.h"
#include "bind.h"

#define TOKENS_MT "slm.TokenFile"
#define WRITER_MT "slm.TokenWriter"

typedef struct tokens_box { slm_tokens *t; } tokens_box;
typedef struct writer_box { slm_tokens_writer *w; } writer_box;

static slm_tokens *check_tokens(lua_State *L)
{
    tokens_box *b = luaL_checkudata(L, 1, TOKENS_MT);
    if (!b->t) luaL_error(L, "attempt to use a closed token file");
    return b->t;
}

static slm_tokens_writer *check_writer(lua_State *L)
{
    writer_box *b = luaL_checkudata(L, 1, WRITER_MT);
    if (!b->w) luaL_error(L, "attempt to use a closed token writer");
    return b->w;
}

/* The batch tensor at idx: a writable contiguous i32 (B, T1). */
static int32_t *check_batch(lua_State *L, int idx, int64_t *B, int64_t *T1)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    if (t->dtype != SLM_DTYPE_I32 || t->ndim != 2 || !slm_tensor_is_contiguous(t) ||
        t->storage->readonly)
        luaL_argerror(L, idx, lua_pushfstring(L, "expected a writable contiguous i32 tensor (B, T+1), "
                                                 "got %s with %d dims",
                                              slm_dtype_name(t->dtype), t->ndim));
    *B = t->shape[0];
    *T1 = t->shape[1];
    return slm_tensor_data(t);
}

/* A scratch buffer owned by the Lua GC (pushed on the stack), so that a
 * raised error cannot leak it. */
static void *scratch(lua_State *L, size_t bytes)
{
    return lua_newuserdatauv(L, bytes ? bytes : 1, 0);
}

static int l_tokens_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    tokens_box *b = lua_newuserdatauv(L, sizeof *b, 0);   /* closed until opened */
    b->t = NULL;
    luaL_setmetatable(L, TOKENS_MT);
    slm_error err;
    b->t = slm_tokens_open(path, &err);
    if (!b->t) return slm_bind_fail(L, &err);
    return 1;
}

static int l_tokens_close(lua_State *L)
{
    tokens_box *b = luaL_checkudata(L, 1, TOKENS_MT);
    slm_tokens_close(b->t);
    b->t = NULL;
    return 0;
}

static int l_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_tokens_count(check_tokens(L)));
    return 1;
}

static int l_vocab(lua_State *L)
{
    lua_pushinteger(L, slm_tokens_vocab(check_tokens(L)));
    return 1;
}

static int l_width(lua_State *L)
{
    lua_pushinteger(L, slm_tokens_width(check_tokens(L)));
    return 1;
}

static int l_path(lua_State *L)
{
    lua_pushstring(L, slm_tokens_path(check_tokens(L)));
    return 1;
}

/* read(start, n): n ids from position start (1-based) */
static int l_read(lua_State *L)
{
    slm_tokens *t = check_tokens(L);
    lua_Integer start = luaL_checkinteger(L, 2), n = luaL_checkinteger(L, 3);
    int64_t count = slm_tokens_count(t);
    luaL_argcheck(L, start >= 1 && start <= count + 1, 2,
                  lua_pushfstring(L, "position %I out of range 1..%I", start, (lua_Integer)count + 1));
    luaL_argcheck(L, n >= 0 && n <= count - (start - 1), 3,
                  lua_pushfstring(L, "%I ids from position %I pass the end (%I ids)", n, start,
                                  (lua_Integer)count));
    int32_t *ids = scratch(L, sizeof *ids * (size_t)n);
    slm_error err;
    if (slm_tokens_read(t, start - 1, n, ids, &err)) return slm_bind_error(L, &err);
    lua_createtable(L, n < (1 << 24) ? (int)n : 0, 0);
    for (lua_Integer i = 0; i < n; i++) {
        lua_pushinteger(L, ids[i]);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

/* fill(out, starts) */
static int l_fill(lua_State *L)
{
    slm_tokens *t = check_tokens(L);
    int64_t B, T1;
    int32_t *out = check_batch(L, 2, &B, &T1);
    luaL_checktype(L, 3, LUA_TTABLE);
    if ((int64_t)lua_rawlen(L, 3) != B)
        luaL_argerror(L, 3, lua_pushfstring(L, "%I starts for a batch of %I rows",
                                            (lua_Integer)lua_rawlen(L, 3), (lua_Integer)B));
    int64_t *starts = scratch(L, sizeof *starts * (size_t)B);
    int64_t count = slm_tokens_count(t);
    for (int64_t b = 0; b < B; b++) {
        lua_rawgeti(L, 3, (lua_Integer)b + 1);
        int isint;
        lua_Integer s = lua_tointegerx(L, -1, &isint);
        if (!isint || lua_type(L, -1) != LUA_TNUMBER)
            luaL_argerror(L, 3, lua_pushfstring(L, "starts[%I] is not an integer", (lua_Integer)b + 1));
        if (s < 1 || s - 1 > count - T1)
            luaL_argerror(L, 3, lua_pushfstring(L, "starts[%I] = %I: a window of %I ids must start in 1..%I",
                                                (lua_Integer)b + 1, s, (lua_Integer)T1,
                                                (lua_Integer)(count - T1 + 1)));
        starts[b] = s - 1;
        lua_pop(L, 1);
    }
    slm_error err;
    if (slm_tokens_fill(t, starts, B, T1, out, &err)) return slm_bind_error(L, &err);
    lua_settop(L, 2);
    return 1;
}

/* The generator state {4 integers} at idx (two's complement for the u64s). */
static void check_rng(lua_State *L, int idx, slm_rng *r)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    if (lua_rawlen(L, idx) != 4) luaL_argerror(L, idx, "rng state must be a table of 4 integers");
    uint64_t any = 0;
    for (int i = 0; i < 4; i++) {
        lua_rawgeti(L, idx, i + 1);
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || lua_type(L, -1) != LUA_TNUMBER)
            luaL_argerror(L, idx, lua_pushfstring(L, "rng state[%d] is not an integer", i + 1));
        r->s[i] = (uint64_t)v;
        any |= r->s[i];
        lua_pop(L, 1);
    }
    if (!any) luaL_argerror(L, idx, "rng state is all zero (not a state rng_seed gives)");
}

static void store_rng(lua_State *L, int idx, const slm_rng *r)
{
    for (int i = 0; i < 4; i++) {
        lua_pushinteger(L, (lua_Integer)r->s[i]);
        lua_rawseti(L, idx, i + 1);
    }
}

/* sample(out, rng, lo, hi) -> out, starts */
static int l_sample(lua_State *L)
{
    slm_tokens *t = check_tokens(L);
    int64_t B, T1;
    int32_t *out = check_batch(L, 2, &B, &T1);
    slm_rng r;
    check_rng(L, 3, &r);
    lua_Integer lo = luaL_checkinteger(L, 4), hi = luaL_checkinteger(L, 5);
    int64_t count = slm_tokens_count(t);
    luaL_argcheck(L, lo >= 1 && lo <= count + 1, 4,
                  lua_pushfstring(L, "position %I out of range 1..%I", lo, (lua_Integer)count + 1));
    luaL_argcheck(L, hi >= lo - 1 && hi <= count, 5,
                  lua_pushfstring(L, "position %I out of range %I..%I", hi, lo - 1, (lua_Integer)count));
    if (hi - lo + 1 < T1)
        return luaL_error(L, "sample: positions %I..%I hold %I ids, fewer than a window of %I", lo, hi,
                          hi - lo + 1, (lua_Integer)T1);
    int64_t *starts = scratch(L, sizeof *starts * (size_t)B);
    slm_error err;
    if (slm_tokens_sample(t, &r, lo - 1, hi, B, T1, out, starts, &err))
        return slm_bind_error(L, &err);
    store_rng(L, 3, &r);
    lua_pushvalue(L, 2);
    lua_createtable(L, (int)B, 0);
    for (int64_t b = 0; b < B; b++) {
        lua_pushinteger(L, (lua_Integer)starts[b] + 1);
        lua_rawseti(L, -2, (lua_Integer)b + 1);
    }
    return 2;
}

/* ---- writer ---------------------------------------------------------------- */

static int l_writer_new(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    lua_Integer vocab = luaL_checkinteger(L, 2);
    luaL_argcheck(L, vocab >= 1 && vocab <= INT32_MAX, 2,
                  lua_pushfstring(L, "vocabulary size %I is not in 1..%d", vocab, INT32_MAX));
    writer_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->w = NULL;
    luaL_setmetatable(L, WRITER_MT);
    slm_error err;
    b->w = slm_tokens_writer_open(path, vocab, &err);
    if (!b->w) return slm_bind_fail(L, &err);
    return 1;
}

/* write(ids): a table of integers or an i32 tensor */
static int l_write(lua_State *L)
{
    slm_tokens_writer *w = check_writer(L);
    slm_error err;
    if (lua_type(L, 2) == LUA_TUSERDATA) {
        slm_tensor *t = slm_bind_check_tensor(L, 2);
        if (t->dtype != SLM_DTYPE_I32 || !slm_tensor_is_contiguous(t))
            luaL_argerror(L, 2, "expected a contiguous i32 tensor or a table of ids");
        if (slm_tokens_writer_append(w, slm_tensor_data(t), (size_t)slm_tensor_numel(t), &err))
            return slm_bind_error(L, &err);
        lua_settop(L, 1);
        return 1;
    }
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t n = lua_rawlen(L, 2);
    int32_t *ids = scratch(L, sizeof *ids * n);
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        int isint;
        lua_Integer v = lua_tointegerx(L, -1, &isint);
        if (!isint || lua_type(L, -1) != LUA_TNUMBER)
            luaL_argerror(L, 2, lua_pushfstring(L, "ids[%I] is not an integer", (lua_Integer)i + 1));
        if (v < 0 || v > INT32_MAX)
            luaL_argerror(L, 2, lua_pushfstring(L, "ids[%I] = %I is not a token id", (lua_Integer)i + 1, v));
        ids[i] = (int32_t)v;
        lua_pop(L, 1);
    }
    if (slm_tokens_writer_append(w, ids, n, &err)) return slm_bind_error(L, &err);
    lua_settop(L, 1);
    return 1;
}

static int l_writer_count(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_tokens_writer_count(check_writer(L)));
    return 1;
}

/* close() -> count | nil, msg: the file is complete */
static int l_writer_close(lua_State *L)
{
    slm_tokens_writer *w = check_writer(L);
    writer_box *b = lua_touserdata(L, 1);
    int64_t n = slm_tokens_writer_count(w);
    b->w = NULL;   /* finish frees w, also on failure */
    slm_error err;
    if (slm_tokens_writer_finish(w, &err)) return slm_bind_fail(L, &err);
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

/* abort (= free, __close, __gc): drops an unfinished file */
static int l_writer_abort(lua_State *L)
{
    writer_box *b = luaL_checkudata(L, 1, WRITER_MT);
    slm_tokens_writer_abort(b->w);
    b->w = NULL;
    return 0;
}

static int l_rng_seed(lua_State *L)
{
    lua_Integer seed = luaL_checkinteger(L, 1);
    slm_rng r;
    slm_rng_seed(&r, (uint64_t)seed);
    lua_createtable(L, 4, 0);
    store_rng(L, lua_gettop(L), &r);
    return 1;
}

static int tostring_tokens(lua_State *L)
{
    tokens_box *b = luaL_checkudata(L, 1, TOKENS_MT);
    if (!b->t) lua_pushliteral(L, "slm.TokenFile(closed)");
    else
        lua_pushfstring(L, "slm.TokenFile(%s, %I ids, vocab %d)", slm_tokens_path(b->t),
                        (lua_Integer)slm_tokens_count(b->t), (int)slm_tokens_vocab(b->t));
    return 1;
}

void slm_bind_open_tokens(lua_State *L)
{
    static const luaL_Reg file_methods[] = {
        {"count", l_count}, {"vocab", l_vocab}, {"width", l_width}, {"path", l_path},
        {"read", l_read},   {"fill", l_fill},   {"sample", l_sample}, {"close", l_tokens_close},
        {NULL, NULL}};
    slm_bind_new_meta(L, TOKENS_MT, l_tokens_close, file_methods);
    luaL_getmetatable(L, TOKENS_MT);
    lua_pushcfunction(L, tostring_tokens);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    static const luaL_Reg writer_methods[] = {
        {"write", l_write}, {"count", l_writer_count}, {"close", l_writer_close},
        {"abort", l_writer_abort}, {NULL, NULL}};
    slm_bind_new_meta(L, WRITER_MT, l_writer_abort, writer_methods);

    static const luaL_Reg fns[] = {
        {"tokens_open", l_tokens_open}, {"tokens_writer", l_writer_new}, {"rng_seed", l_rng_seed},
        {NULL, NULL}};
    slm_bind_set_subfuncs(L, "train", fns);   /* shared with the other training bindings */
}
