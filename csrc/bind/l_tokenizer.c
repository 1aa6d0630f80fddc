/* Lua binding of the tokenizers: slm.Tokenizer and slm.TokDecoder userdata.
 *
 *   core.tokenizer_load(path)   -> tok | nil, msg
 *   core.tokenizer_bytes()      -> tok (256-byte vocabulary)
 *   tok:encode(text [, {add_special=true, parse_special=false}]) -> {ids}
 *   tok:decode(ids [, {special=false}]) -> string
 *   tok:encode_batch({texts} [, {threads=0, add_special, parse_special}])
 *                               -> {{ids}, ...} (threads 0: one per core)
 *   tok:piece(id [, special]) -> string, tok:text(id) -> vocabulary text
 *   tok:id(text) -> id | nil, #tok, tok:is_eog(id), tok:decoder([special])
 *   tok.bos / eos / unk / pad / eot / eom / sep / nl -> id | nil
 *   tok.model, tok.pre, tok.add_bos, tok.add_eos, tok:free()
 *   dec:add(id) -> complete UTF-8 text so far, dec:flush() -> the rest
 *   core.tokenizer_train{files=, vocab_size=, pre=, specials=, min_frequency=,
 *                        json=, gguf=} -> true | nil, msg
 *   core.tokenizer_pretokenize(pre, text) -> {pieces} | nil, msg: the split
 *                        of a GGUF tokenizer.ggml.pre name
 *   core.tokenizer_pretokenizers() -> {names}: every such name
 * Ids are 0-based as in the model files. */
#include <stdlib.h>
#include <string.h>

#include "../tokenizer/tokenizer.h"
#include "bind.h"

#define TOK_MT "slm.Tokenizer"
#define DEC_MT "slm.TokDecoder"
#define BOX_MT "slm.TokBox"

typedef struct tokud { slm_tok *t; } tokud;
typedef struct decud { slm_tok_stream *s; } decud;
/* Scratch owned by a userdata so that a Lua error never leaks it. */
typedef struct box { slm_tok_ids ids; char *str; } box;

static slm_tok *check_tok(lua_State *L, int i)
{
    tokud *u = luaL_checkudata(L, i, TOK_MT);
    if (!u->t) luaL_error(L, "attempt to use a freed tokenizer");
    return u->t;
}

static box *new_box(lua_State *L)
{
    box *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, BOX_MT);
    return b;
}

static int box_gc(lua_State *L)
{
    box *b = luaL_checkudata(L, 1, BOX_MT);
    slm_tok_ids_free(&b->ids);
    free(b->str);
    b->str = NULL;
    return 0;
}

static int l_load(lua_State *L)
{
    const char *path = luaL_checkstring(L, 1);
    tokud *u = lua_newuserdatauv(L, sizeof *u, 0);  /* owner first */
    u->t = NULL;
    luaL_setmetatable(L, TOK_MT);
    slm_error err = {0};
    u->t = slm_tok_load(path, &err);
    if (!u->t) return slm_bind_fail(L, &err);
    return 1;
}

static int l_bytes(lua_State *L)
{
    tokud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->t = NULL;
    luaL_setmetatable(L, TOK_MT);
    slm_error err = {0};
    u->t = slm_tok_new_bytes(&err);
    if (!u->t) return slm_bind_error(L, &err);
    return 1;
}

static int opt_flag(lua_State *L, int idx, const char *name, int def)
{
    if (lua_isnoneornil(L, idx)) return def;
    luaL_checktype(L, idx, LUA_TTABLE);
    int t = lua_getfield(L, idx, name);
    int v = t == LUA_TNIL ? def : lua_toboolean(L, -1);
    lua_pop(L, 1);
    return v;
}

static int l_encode(lua_State *L)
{
    slm_tok *t = check_tok(L, 1);
    size_t len;
    const char *text = luaL_checklstring(L, 2, &len);
    int add_special = opt_flag(L, 3, "add_special", 1);
    int parse_special = opt_flag(L, 3, "parse_special", 0);
    box *b = new_box(L);
    slm_error err = {0};
    if (slm_tok_encode(t, text, len, add_special, parse_special, &b->ids, &err))
        return slm_bind_error(L, &err);
    lua_createtable(L, (int)(b->ids.n < 0x7fffffff ? b->ids.n : 0), 0);
    for (size_t i = 0; i < b->ids.n; i++) {
        lua_pushinteger(L, b->ids.v[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    slm_tok_ids_free(&b->ids);
    return 1;
}

/* Scratch of encode_batch: texts and results owned by a userdata. */
typedef struct batch { const char **texts; size_t *lens; slm_tok_ids *out; size_t n; } batch;

static int batch_gc(lua_State *L)
{
    batch *b = luaL_checkudata(L, 1, "slm.TokBatch");
    for (size_t i = 0; b->out && i < b->n; i++) slm_tok_ids_free(&b->out[i]);
    free(b->out);
    free(b->texts);
    free(b->lens);
    memset(b, 0, sizeof *b);
    return 0;
}

static int l_encode_batch(lua_State *L)
{
    slm_tok *t = check_tok(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int add_special = opt_flag(L, 3, "add_special", 1);
    int parse_special = opt_flag(L, 3, "parse_special", 0);
    lua_Integer threads = 0;
    if (!lua_isnoneornil(L, 3)) {
        lua_getfield(L, 3, "threads");
        threads = luaL_optinteger(L, -1, 0);
        lua_pop(L, 1);
        luaL_argcheck(L, threads >= 0 && threads <= 256, 3, "threads must be 0..256");
    }
    lua_Integer n = luaL_len(L, 2);
    batch *b = lua_newuserdatauv(L, sizeof *b, 0);
    memset(b, 0, sizeof *b);
    luaL_setmetatable(L, "slm.TokBatch");
    size_t cnt = n > 0 ? (size_t)n : 0;
    b->texts = calloc(cnt ? cnt : 1, sizeof *b->texts);
    b->lens = calloc(cnt ? cnt : 1, sizeof *b->lens);
    b->out = calloc(cnt ? cnt : 1, sizeof *b->out);
    if (!b->texts || !b->lens || !b->out) return luaL_error(L, "tokenizer: out of memory");
    b->n = cnt;
    for (size_t i = 0; i < cnt; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            return luaL_error(L, "bad argument #2 to 'encode_batch' (text %d is not a string)",
                              (int)i + 1);
        /* the strings stay referenced by the argument table during the call */
        b->texts[i] = lua_tolstring(L, -1, &b->lens[i]);
        lua_pop(L, 1);
    }
    slm_error err = {0};
    if (slm_tok_encode_batch(t, b->texts, b->lens, cnt, add_special, parse_special, (int)threads,
                             b->out, &err))
        return slm_bind_error(L, &err);
    lua_createtable(L, (int)cnt, 0);
    for (size_t i = 0; i < cnt; i++) {
        lua_createtable(L, (int)b->out[i].n, 0);
        for (size_t j = 0; j < b->out[i].n; j++) {
            lua_pushinteger(L, b->out[i].v[j]);
            lua_rawseti(L, -2, (lua_Integer)j + 1);
        }
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* Reads a table of ids into b->ids, checking each against the vocabulary. */
static void read_ids(lua_State *L, slm_tok *t, int idx, box *b)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_Integer n = luaL_len(L, idx);
    slm_error err = {0};
    for (lua_Integer i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, i);
        int isnum;
        lua_Integer id = lua_tointegerx(L, -1, &isnum);
        lua_pop(L, 1);
        if (!isnum) luaL_error(L, "bad argument #%d to 'decode' (id %d is not an integer)", idx, (int)i);
        if (id < 0 || id >= slm_tok_n_vocab(t))
            luaL_error(L, "token id %d out of range (vocabulary of %d)", (int)id,
                       (int)slm_tok_n_vocab(t));
        if (slm_tok_ids_push(&b->ids, (int32_t)id, &err)) slm_bind_error(L, &err);
    }
}

static int l_decode(lua_State *L)
{
    slm_tok *t = check_tok(L, 1);
    int special = opt_flag(L, 3, "special", 0);
    box *b = new_box(L);
    read_ids(L, t, 2, b);
    size_t len;
    slm_error err = {0};
    if (slm_tok_decode(t, b->ids.v, b->ids.n, special, &b->str, &len, &err))
        return slm_bind_error(L, &err);
    lua_pushlstring(L, b->str, len);
    free(b->str);
    b->str = NULL;
    return 1;
}

static int32_t check_id(lua_State *L, slm_tok *t, int idx)
{
    lua_Integer id = luaL_checkinteger(L, idx);
    if (id < 0 || id >= slm_tok_n_vocab(t))
        luaL_error(L, "token id %d out of range (vocabulary of %d)", (int)id, (int)slm_tok_n_vocab(t));
    return (int32_t)id;
}

static int l_piece(lua_State *L)
{
    slm_tok *t = check_tok(L, 1);
    int32_t id = check_id(L, t, 2);
    int special = lua_toboolean(L, 3);
    char small[256];
    long n = slm_tok_piece(t, id, special, small, sizeof small);
    if ((size_t)n <= sizeof small) {
        lua_pushlstring(L, small, (size_t)n);
        return 1;
    }
    luaL_Buffer B;
    char *p = luaL_buffinitsize(L, &B, (size_t)n);
    slm_tok_piece(t, id, special, p, (size_t)n);
    luaL_pushresultsize(&B, (size_t)n);
    return 1;
}

static int l_text(lua_State *L)
{
    slm_tok *t = check_tok(L, 1);
    size_t n;
    const char *s = slm_tok_text(t, check_id(L, t, 2), &n);
    lua_pushlstring(L, s, n);
    return 1;
}

static int l_id(lua_State *L)
{
    slm_tok *t = check_tok(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    int32_t id = slm_tok_find(t, s, n);
    if (id < 0) luaL_pushfail(L);
    else lua_pushinteger(L, id);
    return 1;
}

static int l_is_eog(lua_State *L)
{
    slm_tok *t = check_tok(L, 1);
    lua_pushboolean(L, slm_tok_is_eog(t, (int32_t)luaL_checkinteger(L, 2)));
    return 1;
}

static int l_len(lua_State *L)
{
    lua_pushinteger(L, slm_tok_n_vocab(check_tok(L, 1)));
    return 1;
}

static int l_free(lua_State *L)
{
    tokud *u = luaL_checkudata(L, 1, TOK_MT);
    slm_tok_free(u->t);
    u->t = NULL;
    return 0;
}

static int l_tostring(lua_State *L)
{
    tokud *u = luaL_checkudata(L, 1, TOK_MT);
    if (!u->t) lua_pushliteral(L, "slm.Tokenizer(freed)");
    else
        lua_pushfstring(L, "slm.Tokenizer(%s%s%s, %d tokens)", slm_tok_model_name(u->t),
                        *slm_tok_pre_name(u->t) ? "/" : "", slm_tok_pre_name(u->t),
                        (int)slm_tok_n_vocab(u->t));
    return 1;
}

static int l_decoder(lua_State *L)
{
    slm_tok *t = check_tok(L, 1);
    int special = lua_toboolean(L, 2);
    decud *d = lua_newuserdatauv(L, sizeof *d, 1);
    d->s = NULL;
    luaL_setmetatable(L, DEC_MT);
    lua_pushvalue(L, 1);            /* keep the tokenizer alive */
    lua_setiuservalue(L, -2, 1);
    slm_error err = {0};
    d->s = slm_tok_stream_new(t, special, &err);
    if (!d->s) return slm_bind_error(L, &err);
    return 1;
}

static slm_tok_stream *check_dec(lua_State *L)
{
    decud *d = luaL_checkudata(L, 1, DEC_MT);
    if (!d->s) luaL_error(L, "attempt to use a freed decoder");
    lua_getiuservalue(L, 1, 1);
    tokud *u = lua_touserdata(L, -1);
    if (!u || !u->t) luaL_error(L, "attempt to use a freed tokenizer");
    lua_pop(L, 1);
    return d->s;
}

static int l_dec_add(lua_State *L)
{
    slm_tok_stream *s = check_dec(L);
    lua_getiuservalue(L, 1, 1);
    slm_tok *t = ((tokud *)lua_touserdata(L, -1))->t;
    lua_pop(L, 1);
    int32_t id = check_id(L, t, 2);
    const char *out;
    size_t n;
    slm_error err = {0};
    if (slm_tok_stream_add(s, id, &out, &n, &err)) return slm_bind_error(L, &err);
    lua_pushlstring(L, out, n);
    return 1;
}

static int l_dec_flush(lua_State *L)
{
    slm_tok_stream *s = check_dec(L);
    const char *out;
    size_t n;
    slm_error err = {0};
    if (slm_tok_stream_flush(s, &out, &n, &err)) return slm_bind_error(L, &err);
    lua_pushlstring(L, out, n);
    return 1;
}

static int l_dec_free(lua_State *L)
{
    decud *d = luaL_checkudata(L, 1, DEC_MT);
    slm_tok_stream_free(d->s);
    d->s = NULL;
    return 0;
}

/* Array of the strings in t[field] (a list), kept in a userdata so nothing
 * leaks on error; the strings stay referenced by the argument table. */
static const char **string_list(lua_State *L, int t, const char *field, int *n, int required)
{
    lua_getfield(L, t, field);
    if (lua_isnil(L, -1) && !required) {
        lua_pop(L, 1);
        *n = 0;
        return NULL;
    }
    if (!lua_istable(L, -1))
        luaL_error(L, "bad argument #1 to 'train' (field '%s' must be a list of strings)", field);
    lua_Integer len = luaL_len(L, -1);
    if (len > 100000) luaL_error(L, "bad argument #1 to 'train' (too many %s)", field);
    const char **v = lua_newuserdatauv(L, sizeof *v * (size_t)(len + 1), 0);
    for (lua_Integer i = 1; i <= len; i++) {
        lua_rawgeti(L, -2, i);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "bad argument #1 to 'train' (%s[%d] is not a string)", field, (int)i);
        v[i - 1] = lua_tostring(L, -1);
        lua_pop(L, 1);
    }
    lua_remove(L, -2);   /* the list; the userdata stays on the stack */
    *n = (int)len;
    return v;
}

static const char *opt_string(lua_State *L, int t, const char *field, const char *def)
{
    lua_getfield(L, t, field);
    const char *s = lua_isnil(L, -1) ? def : lua_tostring(L, -1);
    if (!lua_isnil(L, -1) && lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "bad argument #1 to 'train' (field '%s' must be a string)", field);
    lua_pop(L, 1);  /* still referenced by the table */
    return s;
}

static int l_train(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    slm_tok_train_opts o = {0};
    o.files = string_list(L, 1, "files", &o.nfiles, 1);
    if (o.nfiles == 0) luaL_error(L, "bad argument #1 to 'train' (no files)");
    o.specials = string_list(L, 1, "specials", &o.nspecials, 0);
    lua_getfield(L, 1, "vocab_size");
    lua_Integer vs = luaL_checkinteger(L, -1);
    lua_pop(L, 1);
    luaL_argcheck(L, vs >= 256 + o.nspecials && vs <= (1 << 24), 1,
                  "vocab_size must cover the 256 bytes and the specials");
    o.vocab_size = (int)vs;
    lua_getfield(L, 1, "min_frequency");
    o.min_frequency = (int)luaL_optinteger(L, -1, 2);
    lua_pop(L, 1);
    o.pre = opt_string(L, 1, "pre", "gpt-2");
    o.json_path = opt_string(L, 1, "json", NULL);
    o.gguf_path = opt_string(L, 1, "gguf", NULL);
    if (!o.json_path && !o.gguf_path) luaL_error(L, "bad argument #1 to 'train' (json or gguf path needed)");
    slm_error err = {0};
    slm_status st = slm_tok_train(&o, &err);
    if (st == SLM_EINVAL) return slm_bind_error(L, &err);
    if (st) return slm_bind_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_pretokenize(lua_State *L)
{
    const char *pre = luaL_checkstring(L, 1);
    size_t n;
    const char *text = luaL_checklstring(L, 2, &n);
    /* offsets live in a userdata: a Lua error below leaks nothing */
    size_t *offs = lua_newuserdatauv(L, sizeof *offs * 2 * (n ? n : 1), 0);
    size_t count = 0;
    slm_error err = {0};
    if (slm_pretok_split(pre, text, n, offs, n, &count, &err)) return slm_bind_fail(L, &err);
    lua_createtable(L, (int)count, 0);
    for (size_t i = 0; i < count; i++) {
        lua_pushlstring(L, text + offs[2 * i], offs[2 * i + 1]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    return 1;
}

/* Every tokenizer.ggml.pre name slm knows, in table order. */
static int l_pretokenizers(lua_State *L)
{
    lua_newtable(L);
    lua_Integer k = 0;
    const char *names;
    for (size_t i = 0; (names = slm_pretok_names(i)); i++)
        for (const char *p = names + 1, *bar; (bar = strchr(p, '|')); p = bar + 1) {
            lua_pushlstring(L, p, (size_t)(bar - p));
            lua_rawseti(L, -2, ++k);
        }
    return 1;
}

static const luaL_Reg tok_methods[] = {
    {"encode", l_encode}, {"encode_batch", l_encode_batch}, {"decode", l_decode}, {"piece", l_piece}, {"text", l_text},
    {"id", l_id}, {"is_eog", l_is_eog}, {"decoder", l_decoder}, {"free", l_free},
    {NULL, NULL}};

/* Fields: methods first, then special ids and properties. */
static int l_index(lua_State *L)
{
    lua_pushvalue(L, 2);
    if (lua_rawget(L, lua_upvalueindex(1)) != LUA_TNIL) return 1;
    lua_pop(L, 1);
    slm_tok *t = check_tok(L, 1);
    const char *k = lua_tostring(L, 2);
    if (!k) return 0;
    static const char *const names[] = {"bos", "eos", "unk", "pad", "eot", "eom", "sep", "nl", "cls", "mask"};
    for (int i = 0; i < SLM_TOK_N_SPECIAL; i++) {
        if (strcmp(k, names[i])) continue;
        int32_t id = slm_tok_special_id(t, (slm_tok_special)i);
        if (id < 0) lua_pushnil(L);
        else lua_pushinteger(L, id);
        return 1;
    }
    if (!strcmp(k, "model")) lua_pushstring(L, slm_tok_model_name(t));
    else if (!strcmp(k, "pre")) lua_pushstring(L, slm_tok_pre_name(t));
    else if (!strcmp(k, "add_bos")) lua_pushboolean(L, slm_tok_adds_bos(t));
    else if (!strcmp(k, "add_eos")) lua_pushboolean(L, slm_tok_adds_eos(t));
    else if (!strcmp(k, "n_vocab")) lua_pushinteger(L, slm_tok_n_vocab(t));
    else lua_pushnil(L);
    return 1;
}

void slm_bind_open_tokenizer(lua_State *L)
{
    luaL_newmetatable(L, BOX_MT);
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, "slm.TokBatch");
    lua_pushcfunction(L, batch_gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);

    luaL_newmetatable(L, TOK_MT);
    luaL_newlib(L, tok_methods);
    /* the methods table is also slm.core.tokenizer_methods, so that Lua
     * modules can add methods (slm.train.data adds gguf_metadata) */
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "tokenizer_methods");
    lua_pushcclosure(L, l_index, 1);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_len);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, l_free);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_free);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pop(L, 1);

    static const luaL_Reg dec_methods[] = {
        {"add", l_dec_add}, {"flush", l_dec_flush}, {"free", l_dec_free}, {NULL, NULL}};
    luaL_newmetatable(L, DEC_MT);
    luaL_newlib(L, dec_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_dec_free);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_dec_free);
    lua_setfield(L, -2, "__close");
    lua_pop(L, 1);

    lua_pushcfunction(L, l_load);
    lua_setfield(L, -2, "tokenizer_load");
    lua_pushcfunction(L, l_bytes);
    lua_setfield(L, -2, "tokenizer_bytes");
    lua_pushcfunction(L, l_train);
    lua_setfield(L, -2, "tokenizer_train");
    lua_pushcfunction(L, l_pretokenize);
    lua_setfield(L, -2, "tokenizer_pretokenize");
    lua_pushcfunction(L, l_pretokenizers);
    lua_setfield(L, -2, "tokenizer_pretokenizers");
}
