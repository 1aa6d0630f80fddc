/* `slm.core.regex`: PCRE2 patterns for constrained decoding.
 *
 *   re = regex.new(pattern)       -- UTF + UCP, compiled (JIT when available)
 *   re:match(text) -> "full" | "partial" | nil
 *
 * The whole text is matched against the whole pattern (anchored at both
 * ends). "partial" means text is a prefix of some string the pattern
 * matches (PCRE2 soft partial matching), so generation may continue;
 * "full" that text itself matches. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "bind.h"

#define REGEX_MT "slm.Regex"

typedef struct regex_ud {
    pcre2_code *code;
    pcre2_match_data *md;
} regex_ud;

static int regex_gc(lua_State *L)
{
    regex_ud *r = luaL_checkudata(L, 1, REGEX_MT);
    if (r->md) pcre2_match_data_free(r->md);
    if (r->code) pcre2_code_free(r->code);
    r->md = NULL;
    r->code = NULL;
    return 0;
}

static int regex_new(lua_State *L)
{
    size_t len;
    const char *pat = luaL_checklstring(L, 1, &len);
    regex_ud *r = lua_newuserdatauv(L, sizeof *r, 0);
    r->code = NULL;
    r->md = NULL;
    luaL_setmetatable(L, REGEX_MT);
    int errcode;
    PCRE2_SIZE erroff;
    /* the pattern alone first, so errors name offsets in what the user wrote */
    pcre2_code *check = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &errcode,
                                      &erroff, NULL);
    if (!check) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        return luaL_error(L, "regex: %s at offset %d of '%s'", (const char *)msg, (int)erroff, pat);
    }
    pcre2_code_free(check);
    /* end-anchoring by a trailing \z rather than PCRE2_ENDANCHORED, which
     * PCRE2 refuses together with partial matching */
    luaL_Buffer B;
    luaL_buffinit(L, &B);
    luaL_addstring(&B, "(?:");
    luaL_addlstring(&B, pat, len);
    luaL_addstring(&B, ")\\z");
    luaL_pushresult(&B);
    size_t wlen;
    const char *wrapped = lua_tolstring(L, -1, &wlen);
    r->code = pcre2_compile((PCRE2_SPTR)wrapped, wlen, PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED,
                            &errcode, &erroff, NULL);
    lua_pop(L, 1);
    if (!r->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(errcode, msg, sizeof msg);
        return luaL_error(L, "regex: %s at offset %d of '%s'", (const char *)msg, (int)erroff, pat);
    }
    pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_SOFT);
    r->md = pcre2_match_data_create_from_pattern(r->code, NULL);
    if (!r->md) return luaL_error(L, "regex: out of memory");
    return 1;
}

static int regex_match(lua_State *L)
{
    regex_ud *r = luaL_checkudata(L, 1, REGEX_MT);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    if (!r->code) return luaL_error(L, "attempt to use a freed regex");
    /* NO_UTF_CHECK is not passed: invalid UTF-8 text simply does not match */
    int rc = pcre2_match(r->code, (PCRE2_SPTR)s, len, 0, PCRE2_PARTIAL_SOFT, r->md, NULL);
    if (rc >= 0) lua_pushliteral(L, "full");
    /* the empty text inspects no character, so PCRE2 reports no partial
     * match; it is a prefix of every match */
    else if (rc == PCRE2_ERROR_PARTIAL || len == 0) lua_pushliteral(L, "partial");
    else lua_pushnil(L);
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
