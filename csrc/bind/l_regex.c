/* `slm.core.regex`: PCRE2 patterns for constrained decoding (the core is
 * csrc/sampler/regex.c).
 *
 *   re = regex.new(pattern)       -- UTF + UCP, compiled
 *   re:match(text) -> "full" | "partial" | nil
 *
 * The whole text is matched against the whole pattern (anchored at both
 * ends). "partial" means text is a prefix of some string the pattern
 * matches (PCRE2 soft partial matching), so generation may continue;
 * "full" that text itself matches. When PCRE2 gives up (its match limit:
 * a pattern that backtracks catastrophically) match raises an error. */
#include "../sampler/regex.h"
#include "bind.h"

#define REGEX_MT "slm.Regex"

static int regex_gc(lua_State *L)
{
    slm_regex **r = luaL_checkudata(L, 1, REGEX_MT);
    slm_regex_free(*r);
    *r = NULL;
    return 0;
}

static int regex_new(lua_State *L)
{
    size_t len;
    const char *pat = luaL_checklstring(L, 1, &len);
    slm_regex **r = lua_newuserdatauv(L, sizeof *r, 0);
    *r = NULL;
    luaL_setmetatable(L, REGEX_MT);
    slm_error err;
    if (!(*r = slm_regex_new(pat, len, &err))) return slm_bind_error(L, &err);
    return 1;
}

static int regex_match(lua_State *L)
{
    slm_regex **r = luaL_checkudata(L, 1, REGEX_MT);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    if (!*r) return luaL_error(L, "attempt to use a freed regex");
    switch (slm_regex_match(*r, s, len)) {
    case SLM_REGEX_FULL: lua_pushliteral(L, "full"); break;
    case SLM_REGEX_PARTIAL: lua_pushliteral(L, "partial"); break;
    case SLM_REGEX_LIMIT:
        return luaL_error(L, "regex: PCRE2 reached its match limit on a text of %d bytes: the pattern "
                          "backtracks too much to tell whether the text can match", (int)len);
    default: lua_pushnil(L);
    }
    return 1;
}

void slm_bind_open_regex(lua_State *L)
{
    luaL_newmetatable(L, REGEX_MT);
    lua_pushcfunction(L, regex_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, regex_gc);
    lua_setfield(L, -2, "__close");
    lua_newtable(L);
    lua_pushcfunction(L, regex_match);
    lua_setfield(L, -2, "match");
    lua_pushcfunction(L, regex_gc);
    lua_setfield(L, -2, "free");
    lua_setfield(L, -2, "__index");
    lua_pop(L, 1);
    lua_newtable(L);
    lua_pushcfunction(L, regex_new);
    lua_setfield(L, -2, "new");
    lua_setfield(L, -2, "regex");
}
