/* `slm.core.grammar`: GBNF grammars, matchers and token masks (the core is
 * csrc/sampler/grammar*.c; the documented API is lua/slm/grammar.lua).
 *
 *   g = grammar.compile(text [, root])  -> slm.Grammar | nil, msg
 *   g:match(s)        -> "complete" | "prefix" | nil, n (s:sub(1, n) is the
 *                        longest prefix of s that is still a valid prefix)
 *   g:rules()         -> the rules as text (generated ones included)
 *   g:matcher()       -> slm.GrammarMatcher at the start
 *   m:accept(bytes)   -> true | false, n (nothing is accepted unless all is)
 *   m:complete(), m:can_continue(), m:distance(), m:clone(), m:reset()
 *   m:allowed(tok [, limit])               -> {ids} (0-based, ascending)
 *   m:apply(tok, logits, out [, limit])    -> number of allowed ids: out
 *       gets logits where allowed and -inf elsewhere (ids past the
 *       tokenizer's vocabulary are never allowed)
 * tok is an slm.Tokenizer; its trie is built once and kept while tok lives. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../sampler/grammar.h"
#include "../tokenizer/tokenizer.h"
#include "bind.h"

#define GRAMMAR_MT "slm.Grammar"
#define MATCHER_MT "slm.GrammarMatcher"
#define GVOCAB_MT "slm.GrammarVocab"
#define TOK_MT "slm.Tokenizer"   /* l_tokenizer.c's: a struct whose first member is the slm_tok * */
#define VOCABS_KEY "slm.grammar.vocabs"

typedef struct gud { slm_grammar *g; } gud;
typedef struct mud { slm_gstate st; int live; uint8_t *mask; size_t mask_bytes; } mud;
typedef struct vud { slm_gvocab *v; } vud;

static slm_grammar *check_grammar(lua_State *L, int i)
{
    gud *u = luaL_checkudata(L, i, GRAMMAR_MT);
    if (!u->g) luaL_error(L, "attempt to use a freed grammar");
    return u->g;
}

static int grammar_close(lua_State *L)
{
    gud *u = luaL_checkudata(L, 1, GRAMMAR_MT);
    slm_grammar_free(u->g);
    u->g = NULL;
    return 0;
}

static int l_compile(lua_State *L)
{
    size_t len;
    const char *text = luaL_checklstring(L, 1, &len);
    const char *root = luaL_optstring(L, 2, "root");
    gud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->g = NULL;
    luaL_setmetatable(L, GRAMMAR_MT);
    slm_error err;
    if (!(u->g = slm_grammar_compile(text, len, root, &err))) return slm_bind_fail(L, &err);
    return 1;
}

static int g_match(lua_State *L)
{
    slm_grammar *g = check_grammar(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    slm_gstate st;
    slm_error err;
    if (slm_gstate_init(g, &st, &err)) return slm_bind_error(L, &err);
    long n = slm_gstate_accept(g, &st, (const uint8_t *)s, len, &err);
    int complete = slm_gstate_complete(&st);
    slm_gstate_free(&st);
    if (n < 0) return slm_bind_error(L, &err);
    if ((size_t)n < len) {
        luaL_pushfail(L);
        lua_pushinteger(L, n);
        return 2;
    }
    lua_pushstring(L, complete ? "complete" : "prefix");
    return 1;
}

static int g_rules(lua_State *L)
{
    char *s = slm_grammar_describe(check_grammar(L, 1));
    if (!s) return luaL_error(L, "grammar: out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int g_tostring(lua_State *L)
{
    gud *u = luaL_checkudata(L, 1, GRAMMAR_MT);
    lua_pushstring(L, u->g ? "slm.Grammar" : "slm.Grammar (freed)");
    return 1;
}

/* ---------- matchers ---------- */

static mud *check_matcher(lua_State *L, int i, slm_grammar **g)
{
    mud *m = luaL_checkudata(L, i, MATCHER_MT);
    if (!m->live) luaL_error(L, "attempt to use a freed grammar matcher");
    lua_getiuservalue(L, i, 1);
    gud *u = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (!u || !u->g) luaL_error(L, "attempt to use a matcher of a freed grammar");
    *g = u->g;
    return m;
}

static int matcher_close(lua_State *L)
{
    mud *m = luaL_checkudata(L, 1, MATCHER_MT);
    if (m->live) slm_gstate_free(&m->st);
    free(m->mask);
    m->mask = NULL;
    m->live = 0;
    return 0;
}

/* A new matcher over grammar userdata at gi, its state a copy of src (or
 * the start when NULL). */
static mud *push_matcher(lua_State *L, int gi, slm_grammar *g, const slm_gstate *src)
{
    mud *m = lua_newuserdatauv(L, sizeof *m, 1);
    memset(m, 0, sizeof *m);
    luaL_setmetatable(L, MATCHER_MT);
    lua_pushvalue(L, gi);
    lua_setiuservalue(L, -2, 1);
    slm_error err;
    slm_status st = src ? slm_gstate_copy(&m->st, src, &err) : slm_gstate_init(g, &m->st, &err);
    if (st) {
        slm_gstate_free(&m->st);
        slm_bind_error(L, &err);
    }
    m->live = 1;
    return m;
}

static int g_matcher(lua_State *L)
{
    slm_grammar *g = check_grammar(L, 1);
    push_matcher(L, 1, g, NULL);
    return 1;
}

static int m_clone(lua_State *L)
{
    slm_grammar *g;
    mud *m = check_matcher(L, 1, &g);
    lua_getiuservalue(L, 1, 1);
    push_matcher(L, lua_gettop(L), g, &m->st);
    return 1;
}

static int m_reset(lua_State *L)
{
    slm_grammar *g;
    mud *m = check_matcher(L, 1, &g);
    slm_gstate_free(&m->st);
    slm_error err;
    if (slm_gstate_init(g, &m->st, &err)) {
        m->live = 0;
        return slm_bind_error(L, &err);
    }
    return 0;
}

static int m_accept(lua_State *L)
{
    slm_grammar *g;
    mud *m = check_matcher(L, 1, &g);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    slm_gstate t = { 0 };
    slm_error err;
    if (slm_gstate_copy(&t, &m->st, &err)) {
        slm_gstate_free(&t);
        return slm_bind_error(L, &err);
    }
    long n = slm_gstate_accept(g, &t, (const uint8_t *)s, len, &err);
    if (n < 0) {
        slm_gstate_free(&t);
        return slm_bind_error(L, &err);
    }
    if ((size_t)n < len) {
        slm_gstate_free(&t);
        lua_pushboolean(L, 0);
        lua_pushinteger(L, n);
        return 2;
    }
    slm_gstate_free(&m->st);
    m->st = t;
    lua_pushboolean(L, 1);
    return 1;
}

static int m_complete(lua_State *L)
{
    slm_grammar *g;
    lua_pushboolean(L, slm_gstate_complete(&check_matcher(L, 1, &g)->st));
    return 1;
}

static int m_can_continue(lua_State *L)
{
    slm_grammar *g;
    lua_pushboolean(L, slm_gstate_can_continue(&check_matcher(L, 1, &g)->st));
    return 1;
}

static int m_distance(lua_State *L)
{
    slm_grammar *g;
    mud *m = check_matcher(L, 1, &g);
    int32_t d = slm_gstate_distance(g, &m->st);
    if (d == INT32_MAX) lua_pushnumber(L, HUGE_VAL);
    else lua_pushinteger(L, d);
    return 1;
}

/* ---------- vocabularies ---------- */

static int vocab_close(lua_State *L)
{
    vud *u = luaL_checkudata(L, 1, GVOCAB_MT);
    slm_gvocab_free(u->v);
    u->v = NULL;
    return 0;
}

typedef struct piecebuf { const slm_tok *t; char *buf; size_t cap; } piecebuf;

/* Token id's text as generation emits it; controls, unknown and unused
 * tokens have none (they never spell grammar text). */
static const char *tok_piece(void *ud, int32_t id, size_t *len)
{
    piecebuf *p = ud;
    *len = 0;
    if (slm_tok_attr(p->t, id) & (SLM_TOKATTR_CONTROL | SLM_TOKATTR_UNKNOWN | SLM_TOKATTR_UNUSED)) return NULL;
    long n = slm_tok_piece(p->t, id, 0, p->buf, p->cap);
    if (n < 0) return NULL;
    if ((size_t)n > p->cap) {
        char *nb = realloc(p->buf, (size_t)n * 2);
        if (!nb) return NULL;
        p->buf = nb;
        p->cap = (size_t)n * 2;
        n = slm_tok_piece(p->t, id, 0, p->buf, p->cap);
    }
    *len = (size_t)n;
    return p->buf;
}

/* The trie of the tokenizer at ti (made on first use, kept in a weak
 * table while the tokenizer lives). */
static slm_gvocab *check_vocab(lua_State *L, int ti)
{
    slm_tok **tp = luaL_checkudata(L, ti, TOK_MT);
    if (!*tp) luaL_error(L, "attempt to use a freed tokenizer");
    lua_getfield(L, LUA_REGISTRYINDEX, VOCABS_KEY);
    lua_pushvalue(L, ti);
    if (lua_rawget(L, -2) == LUA_TUSERDATA) {
        vud *u = lua_touserdata(L, -1);
        lua_pop(L, 2);
        return u->v;
    }
    lua_pop(L, 1);
    vud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->v = NULL;
    luaL_setmetatable(L, GVOCAB_MT);
    const slm_tok *t = *tp;
    int32_t n = slm_tok_n_vocab(t);
    uint8_t *eog = calloc((size_t)n + 1, 1);
    piecebuf pb = { t, malloc(256), 256 };
    slm_error err;
    if (!eog || !pb.buf) {
        free(eog);
        free(pb.buf);
        return luaL_error(L, "grammar: out of memory"), NULL;
    }
    for (int32_t id = 0; id < n; id++) eog[id] = (uint8_t)(slm_tok_is_eog(t, id) != 0);
    u->v = slm_gvocab_new(n, tok_piece, &pb, eog, &err);
    free(eog);
    free(pb.buf);
    if (!u->v) slm_bind_error(L, &err);
    lua_pushvalue(L, ti);
    lua_pushvalue(L, -2);
    lua_rawset(L, -4);
    lua_pop(L, 2);
    return u->v;
}

static int32_t opt_limit(lua_State *L, int i)
{
    if (lua_isnoneornil(L, i)) return -1;
    lua_Integer l = luaL_checkinteger(L, i);
    luaL_argcheck(L, l >= 0, i, "limit must be a non-negative integer");
    return l > INT32_MAX - 1 ? INT32_MAX - 1 : (int32_t)l;
}

/* The mask of m's state over vocabulary v, in m's buffer. */
static long mask_of(lua_State *L, mud *m, slm_grammar *g, const slm_gvocab *v, int32_t limit)
{
    size_t bytes = ((size_t)slm_gvocab_size(v) + 7) / 8;
    if (m->mask_bytes < bytes) {
        uint8_t *nm = realloc(m->mask, bytes);
        if (!nm) return luaL_error(L, "grammar: out of memory");
        m->mask = nm;
        m->mask_bytes = bytes;
    }
    slm_error err;
    long n = slm_grammar_mask(g, v, &m->st, limit, m->mask, &err);
    if (n < 0) return slm_bind_error(L, &err);
    return n;
}

static int m_allowed(lua_State *L)
{
    slm_grammar *g;
    mud *m = check_matcher(L, 1, &g);
    const slm_gvocab *v = check_vocab(L, 2);
    int32_t limit = opt_limit(L, 3);
    long n = mask_of(L, m, g, v, limit);
    lua_createtable(L, (int)n, 0);
    lua_Integer k = 0;
    for (int32_t id = 0; id < slm_gvocab_size(v); id++)
        if (m->mask[id >> 3] >> (id & 7) & 1) {
            lua_pushinteger(L, id);
            lua_rawseti(L, -2, ++k);
        }
    return 1;
}

static int m_apply(lua_State *L)
{
    slm_grammar *g;
    mud *m = check_matcher(L, 1, &g);
    const slm_gvocab *v = check_vocab(L, 2);
    slm_tensor *in = slm_bind_check_tensor(L, 3);
    int64_t rows, dim;
    float *out = slm_bind_check_buf(L, 4, &rows, &dim);
    int32_t limit = opt_limit(L, 5);
    luaL_argcheck(L, in->dtype == SLM_DTYPE_F32 && slm_tensor_is_contiguous(in), 3,
                  "logits must be a contiguous f32 tensor");
    int64_t n = slm_tensor_numel(in);
    luaL_argcheck(L, rows * dim == n, 4, "out must have as many values as logits");
    mask_of(L, m, g, v, limit);
    const float *x = slm_tensor_data(in);
    int64_t nv = slm_gvocab_size(v), allowed = 0;
    for (int64_t id = 0; id < n; id++) {
        int ok = id < nv && (m->mask[id >> 3] >> (id & 7) & 1);
        out[id] = ok ? x[id] : -INFINITY;
        allowed += ok;
    }
    lua_pushinteger(L, allowed);
    return 1;
}

/* grammar.unicode_class("d" | "s" | "w") -> the inside of a GBNF class */
static int l_unicode_class(lua_State *L)
{
    const char *w = luaL_checkstring(L, 1);
    slm_error err;
    char *s = slm_grammar_unicode_class(w[0] && !w[1] ? w[0] : '?', &err);
    if (!s) return slm_bind_error(L, &err);
    lua_pushstring(L, s);
    free(s);
    return 1;
}

void slm_bind_open_grammar(lua_State *L)
{
    static const luaL_Reg gm[] = {
        {"match", g_match}, {"rules", g_rules}, {"matcher", g_matcher}, {NULL, NULL}};
    slm_bind_new_meta(L, GRAMMAR_MT, grammar_close, gm);
    luaL_getmetatable(L, GRAMMAR_MT);
    lua_pushcfunction(L, g_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);
    static const luaL_Reg mm[] = {
        {"accept", m_accept}, {"complete", m_complete}, {"can_continue", m_can_continue},
        {"distance", m_distance}, {"clone", m_clone}, {"reset", m_reset},
        {"allowed", m_allowed}, {"apply", m_apply}, {NULL, NULL}};
    slm_bind_new_meta(L, MATCHER_MT, matcher_close, mm);
    static const luaL_Reg vm[] = {{NULL, NULL}};
    slm_bind_new_meta(L, GVOCAB_MT, vocab_close, vm);
    lua_newtable(L);                    /* tokenizer -> its trie, weak keys */
    lua_newtable(L);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_setfield(L, LUA_REGISTRYINDEX, VOCABS_KEY);
    static const luaL_Reg fns[] = {{"compile", l_compile}, {"unicode_class", l_unicode_class}, {NULL, NULL}};
    slm_bind_set_subfuncs(L, "grammar", fns);
}
