/* Fuzz target: chat template rendering (lua/slm/chat.lua) through
 * slm.chat.render and slm.chat.tokenize, in a Lua state embedded here with
 * slm linked in statically (as examples/host does: the binding objects
 * and libslm.a, "slm.core" in package.preload).
 *
 * The Lua half, tests/fuzz/fuzz_chat.lua, decodes the input into messages
 * and options and checks the results (its comment has the input format);
 * this file runs it and fails on what it reports. The Lua files are read
 * from $SLM_ROOT (default: the current directory, the checkout's root). */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <stdlib.h>

#include "fuzz.h"

int luaopen_slm_core(lua_State *L);   /* csrc/bind/l_core.c */

static lua_State *L;

static void init(void)
{
    const char *root = getenv("SLM_ROOT");
    if (!root || !*root) root = ".";
    L = luaL_newstate();
    FUZZ_CHECK(L != NULL, "cannot create a Lua state");
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_slm_core);
    lua_setfield(L, -2, "slm.core");
    lua_pop(L, 1);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/?.lua", root, root, root);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    lua_pushfstring(L, "%s/tests/fuzz/fuzz_chat.lua", root);
    const char *script = lua_tostring(L, -1);
    if (luaL_dofile(L, script) != LUA_OK || !lua_istable(L, -1))
        fuzz_fail("%s: %s", script, lua_isstring(L, -1) ? lua_tostring(L, -1) : "no table");
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_chat");
    lua_pop(L, 1);
    /* M.init(scratch dir, fixtures or nil) */
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_chat");
    lua_getfield(L, -1, "init");
    lua_pushstring(L, fuzz_tmpdir());
    const char *fx = fuzz_fixtures();
    if (fx) lua_pushstring(L, fx);
    else lua_pushnil(L);
    if (lua_pcall(L, 2, 0, 0) != LUA_OK) fuzz_fail("init: %s", lua_tostring(L, -1));
    lua_pop(L, 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!L) init();
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_chat");
    lua_getfield(L, -1, "run");
    lua_pushlstring(L, (const char *)data, size);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK)
        fuzz_fail("the driver raised: %s", lua_isstring(L, -1) ? lua_tostring(L, -1) : "?");
    if (!lua_isnil(L, -1)) fuzz_fail("%s", lua_tostring(L, -1));
    lua_pop(L, 2);
    /* keep the heap of a long run flat */
    lua_gc(L, LUA_GCSTEP, 0);
    return 0;
}
