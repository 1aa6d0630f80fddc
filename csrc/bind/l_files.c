/* `slm.core.llama2c` and `slm.core.rwkvcpp`: the model files that are read
 * whole at open (no lazy metadata), returned as plain Lua tables:
 *
 *   llama2c.open(path) -> {config = {dim=, hidden_dim=, n_layers=, n_heads=,
 *                          n_kv_heads=, vocab_size=, seq_len=, shared_classifier=},
 *                          tensors = {name -> slm.Tensor}, names = {...}}
 *   rwkvcpp.open(path) -> {header = {version=, n_vocab=, n_embed=, n_layer=,
 *                          data_type=}, tensors = {...}, names = {...}}
 * or nil, msg for a missing or malformed file. The tensors are views that
 * keep the file's bytes alive on their own.
 *
 *   rwkvcpp.write(path, {n_vocab=, n_embed=, n_layer=, data_type=},
 *                 {{name=, tensor=}, ...}) -> true | nil, msg
 *   rwkvcpp.type_ids = {f32 = 0, f16 = 1, q4_0 = 2, ...}: the dtypes the
 *                 format holds, by rwkv.cpp's data type id */
#include "../formats/llama2c.h"
#include "../formats/rwkvcpp.h"
#include "bind.h"

#define L2C_MT "slm.llama2c.handle"
#define RWKV_MT "slm.rwkvcpp.handle"

/* The open file lives in a userdata until the tables are built, so a Lua
 * error part-way (out of memory) still closes it. */
typedef struct file_box {
    void *f;
} file_box;

static int l2c_gc(lua_State *L)
{
    file_box *b = luaL_checkudata(L, 1, L2C_MT);
    slm_llama2c_close(b->f);
    b->f = NULL;
    return 0;
}

static int rwkv_gc(lua_State *L)
{
    file_box *b = luaL_checkudata(L, 1, RWKV_MT);
    slm_rwkvcpp_close(b->f);
    b->f = NULL;
    return 0;
}

static void set_int(lua_State *L, const char *k, lua_Integer v)
{
    lua_pushinteger(L, v);
    lua_setfield(L, -2, k);
}

static int l_llama2c_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    file_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->f = NULL;
    luaL_setmetatable(L, L2C_MT);
    slm_error err = {0};
    slm_llama2c *m = slm_llama2c_open(path, &err);
    if (!m) return slm_bind_fail(L, &err);
    b->f = m;
    const slm_llama2c_config *c = slm_llama2c_config_get(m);
    lua_newtable(L);
    lua_newtable(L);
    set_int(L, "dim", c->dim);
    set_int(L, "hidden_dim", c->hidden_dim);
    set_int(L, "n_layers", c->n_layers);
    set_int(L, "n_heads", c->n_heads);
    set_int(L, "n_kv_heads", c->n_kv_heads);
    set_int(L, "vocab_size", c->vocab_size);
    set_int(L, "seq_len", c->seq_len);
    lua_pushboolean(L, c->shared_classifier);
    lua_setfield(L, -2, "shared_classifier");
    lua_setfield(L, -2, "config");
    lua_newtable(L);   /* tensors */
    lua_newtable(L);   /* names */
    for (int i = 0; i < slm_llama2c_n_tensors(m); i++) {
        slm_tensor *t = slm_llama2c_tensor(m, i, &err);
        if (!t) return slm_bind_error(L, &err);
        slm_bind_push_tensor(L, t);
        lua_setfield(L, -3, slm_llama2c_tensor_name(m, i));
        lua_pushstring(L, slm_llama2c_tensor_name(m, i));
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -3, "names");
    lua_setfield(L, -2, "tensors");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "path");
    slm_llama2c_close(m);
    b->f = NULL;
    return 1;
}

static int l_rwkvcpp_open(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    file_box *b = lua_newuserdatauv(L, sizeof *b, 0);
    b->f = NULL;
    luaL_setmetatable(L, RWKV_MT);
    slm_error err = {0};
    slm_rwkvcpp *f = slm_rwkvcpp_open(path, &err);
    if (!f) return slm_bind_fail(L, &err);
    b->f = f;
    const slm_rwkvcpp_header *h = slm_rwkvcpp_header_get(f);
    lua_newtable(L);
    lua_newtable(L);
    set_int(L, "version", h->version);
    set_int(L, "n_vocab", h->n_vocab);
    set_int(L, "n_embed", h->n_embed);
    set_int(L, "n_layer", h->n_layer);
    set_int(L, "data_type", h->data_type);
    lua_setfield(L, -2, "header");
    lua_newtable(L);
    lua_newtable(L);
    for (int i = 0; i < slm_rwkvcpp_n_tensors(f); i++) {
        slm_tensor *t = slm_rwkvcpp_tensor(f, i, &err);
        if (!t) return slm_bind_error(L, &err);
        slm_bind_push_tensor(L, t);
        lua_setfield(L, -3, slm_rwkvcpp_tensor_name(f, i));
        lua_pushstring(L, slm_rwkvcpp_tensor_name(f, i));
        lua_rawseti(L, -2, i + 1);
    }
    lua_setfield(L, -3, "names");
    lua_setfield(L, -2, "tensors");
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "path");
    slm_rwkvcpp_close(f);
    b->f = NULL;
    return 1;
}

static int l_rwkvcpp_write(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    slm_rwkvcpp_header h = {101, 0, 0, 0, 0};
    h.n_vocab = (int)slm_bind_int_field(L, 2, "n_vocab", 0, 1);
    h.n_embed = (int)slm_bind_int_field(L, 2, "n_embed", 0, 1);
    h.n_layer = (int)slm_bind_int_field(L, 2, "n_layer", 0, 1);
    h.data_type = (int)slm_bind_int_field(L, 2, "data_type", 0, 1);
    lua_Integer n = luaL_len(L, 3);
    luaL_argcheck(L, n >= 0 && n <= 1 << 20, 3, "too many parameters");
    /* the arrays live in userdata, so a Lua error below frees them */
    const char **names = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *names, 0);
    const slm_tensor **tensors = lua_newuserdatauv(L, (size_t)(n ? n : 1) * sizeof *tensors, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, 3, i) != LUA_TTABLE) return luaL_error(L, "rwkvcpp.write: parameter %I: table expected", i);
        lua_getfield(L, -1, "name");
        names[i - 1] = luaL_checkstring(L, -1);   /* kept alive by the table */
        lua_getfield(L, -2, "tensor");
        tensors[i - 1] = slm_bind_check_tensor(L, -1);
        lua_pop(L, 3);
    }
    slm_error err = {0};
    if (slm_rwkvcpp_write(path, &h, (int)n, names, tensors, &err) != SLM_OK) return slm_bind_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

void slm_bind_open_files(lua_State *L)
{
    luaL_newmetatable(L, L2C_MT);
    lua_pushcfunction(L, l2c_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    luaL_newmetatable(L, RWKV_MT);
    lua_pushcfunction(L, rwkv_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, l_llama2c_open);
    lua_setfield(L, -2, "open");
    lua_setfield(L, -2, "llama2c");
    lua_newtable(L);
    lua_pushcfunction(L, l_rwkvcpp_open);
    lua_setfield(L, -2, "open");
    lua_pushcfunction(L, l_rwkvcpp_write);
    lua_setfield(L, -2, "write");
    lua_newtable(L);
    for (int i = 0; i < SLM_DTYPE_COUNT; i++) {
        int id = slm_dtype_valid(i) ? slm_rwkvcpp_type_id((slm_dtype)i) : -1;
        if (id < 0) continue;
        lua_pushinteger(L, id);
        lua_setfield(L, -2, slm_dtype_name((slm_dtype)i));
    }
    lua_setfield(L, -2, "type_ids");
    lua_setfield(L, -2, "rwkvcpp");
}
