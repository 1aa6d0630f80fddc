/* `slm.core.seqbatch`: which sessions a batched forward runs (slm.batch).
 *
 *   local sb = core.seqbatch()          -> slm.SeqBatch
 *   sb:set(states, pos, counts)         the sessions' states (KV caches or
 *                                       recurrent states), each one's first
 *                                       position and row count; rows are
 *                                       stacked in that order
 *   sb:rows(), sb:count()               total rows, sequences
 *   sb:clear(), sb:reset()              calls clear / reset on the states of
 *                                       the sequences starting at position 0
 *
 * A SeqBatch goes where a block's forward takes a session's state
 * (blk:forward(out, x, sb, layer, pos, n, work) for attention: pos is then
 * unused, n must be sb:rows()): the block runs every row at once and each
 * sequence against its own state (blocks/seqbatch.h). The states are kept
 * in the userdata's user value and checked again at each forward, so a
 * state freed since set() raises instead of being read. */
#include <stdlib.h>

#include "../blocks/seqbatch.h"
#include "bind.h"

typedef struct seqbatch_ud {
    slm_seq *seqs;
    int n_seq, cap;
} seqbatch_ud;

static int sb_close(lua_State *L)
{
    seqbatch_ud *u = luaL_checkudata(L, 1, SLM_SEQBATCH_MT);
    free(u->seqs);
    u->seqs = NULL;
    u->n_seq = u->cap = 0;
    return 0;
}

static int l_seqbatch(lua_State *L)
{
    seqbatch_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->seqs = NULL;
    u->n_seq = u->cap = 0;
    luaL_setmetatable(L, SLM_SEQBATCH_MT);
    lua_newtable(L);
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* integer i of the list at idx, in lo..hi (the message names the list) */
static int list_int(lua_State *L, int idx, lua_Integer i, const char *what, lua_Integer lo, lua_Integer hi)
{
    lua_geti(L, idx, i);
    int isnum = 0;
    lua_Integer v = lua_tointegerx(L, -1, &isnum);
    lua_pop(L, 1);
    if (!isnum || v < lo || v > hi)
        luaL_error(L, "seqbatch: %s[%I] must be an integer in %I..%I", what, i, lo, hi);
    return (int)v;
}

/* sb:set(states, pos, counts) */
static int sb_set(lua_State *L)
{
    seqbatch_ud *u = luaL_checkudata(L, 1, SLM_SEQBATCH_MT);
    luaL_checktype(L, 2, LUA_TTABLE);
    luaL_checktype(L, 3, LUA_TTABLE);
    luaL_checktype(L, 4, LUA_TTABLE);
    lua_Integer n = luaL_len(L, 2);
    if (n < 1 || n > 65536) return luaL_error(L, "seqbatch: %I sequences (1..65536)", n);
    if (luaL_len(L, 3) != n || luaL_len(L, 4) != n)
        return luaL_error(L, "seqbatch: %I states, %I positions and %I counts", n, luaL_len(L, 3), luaL_len(L, 4));
    /* validate everything before touching the userdata */
    lua_Integer rows = 0;
    for (lua_Integer i = 1; i <= n; i++) {
        if (lua_geti(L, 2, i) != LUA_TUSERDATA) luaL_error(L, "seqbatch: states[%I] is not a session state", i);
        lua_pop(L, 1);
        list_int(L, 3, i, "pos", 0, (1 << 24));
        rows += list_int(L, 4, i, "counts", 1, 65536);
    }
    if (rows > 65536) return luaL_error(L, "seqbatch: %I rows in one batch (at most 65536)", rows);
    if (n > u->cap) {
        slm_seq *s = realloc(u->seqs, (size_t)n * sizeof *s);
        if (!s) return luaL_error(L, "seqbatch: out of memory");
        u->seqs = s;
        u->cap = (int)n;
    }
    lua_createtable(L, (int)n, 0);
    for (lua_Integer i = 1; i <= n; i++) {
        slm_seq *q = &u->seqs[i - 1];
        q->kv = NULL;
        q->state = NULL;
        q->pos0 = list_int(L, 3, i, "pos", 0, (1 << 24));
        q->n = list_int(L, 4, i, "counts", 1, 65536);
        lua_geti(L, 2, i);
        lua_rawseti(L, -2, i);
    }
    lua_setiuservalue(L, 1, 1);
    u->n_seq = (int)n;
    return 0;
}

slm_seq *slm_bind_check_seqs(lua_State *L, int idx, int *n_seq)
{
    seqbatch_ud *u = luaL_checkudata(L, idx, SLM_SEQBATCH_MT);
    if (u->n_seq < 1) luaL_error(L, "seqbatch: no sequences set");
    *n_seq = u->n_seq;
    return u->seqs;
}

void slm_bind_push_seq_state(lua_State *L, int idx, int i)
{
    lua_getiuservalue(L, idx, 1);
    lua_rawgeti(L, -1, i + 1);
    lua_remove(L, -2);
}

void *slm_bind_seq_state(lua_State *L, int idx, int i, const char *mt, const char *what)
{
    slm_bind_push_seq_state(L, idx, i);
    void *u = luaL_testudata(L, -1, mt);
    if (!u) luaL_error(L, "seqbatch: sequence %d's state is not %s", i + 1, what);
    lua_pop(L, 1);
    return u;
}

static int sb_rows(lua_State *L)
{
    seqbatch_ud *u = luaL_checkudata(L, 1, SLM_SEQBATCH_MT);
    lua_pushinteger(L, slm_seq_rows(u->seqs, u->n_seq));
    return 1;
}

static int sb_count(lua_State *L)
{
    seqbatch_ud *u = luaL_checkudata(L, 1, SLM_SEQBATCH_MT);
    lua_pushinteger(L, u->n_seq);
    return 1;
}

/* calls method `name` of every state whose sequence starts at position 0:
 * a recurrent model's forward restarts its state at position 0 (mamba's
 * clear, rwkv's reset), which in a batch concerns only those sequences */
static int restart(lua_State *L, const char *name)
{
    seqbatch_ud *u = luaL_checkudata(L, 1, SLM_SEQBATCH_MT);
    for (int i = 0; i < u->n_seq; i++) {
        if (u->seqs[i].pos0 != 0) continue;
        slm_bind_push_seq_state(L, 1, i);
        if (lua_getfield(L, -1, name) == LUA_TNIL)
            return luaL_error(L, "seqbatch: the state of sequence %d has no %s method", i + 1, name);
        lua_insert(L, -2);
        lua_call(L, 1, 0);
    }
    return 0;
}

static int sb_clear(lua_State *L) { return restart(L, "clear"); }
static int sb_reset(lua_State *L) { return restart(L, "reset"); }

void slm_bind_open_seqbatch(lua_State *L)
{
    static const luaL_Reg methods[] = {{"set", sb_set}, {"rows", sb_rows}, {"count", sb_count},
                                       {"clear", sb_clear}, {"reset", sb_reset}, {NULL, NULL}};
    slm_bind_new_meta(L, SLM_SEQBATCH_MT, sb_close, methods);
    lua_pushcfunction(L, l_seqbatch);
    lua_setfield(L, -2, "seqbatch");
}
