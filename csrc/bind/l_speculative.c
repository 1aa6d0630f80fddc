/* slm.core.speculative: the sampler side of speculative decoding
 * (sampler/speculative.h), used by lua/slm/speculative.lua.
 *
 *   speculative.draw(sampler, logits, q) -> id
 *       the distribution the sampler's stages make of logits
 *       (slm_chain_dist), written densely into q (a writable f32 tensor of
 *       n_vocab values), and a draw from it with the sampler's generator
 *   speculative.verify(sampler, logits, x [, q]) -> accepted, id
 *       the acceptance rule for the draft token x (0-based) against the
 *       target's logits: q is the draft's dense distribution from draw, nil
 *       for a draft without one (prompt lookup: the point mass at x)
 *   speculative.is_greedy(sampler) -> true when the chain ends with greedy
 *   speculative.lua_stage(sampler) -> the name of its first Lua stage, or nil
 *
 * logits are contiguous f32 tensors of n_vocab values. Neither function
 * accepts a token into the sampler's history (sampler:accept does). */
#include "../sampler/chain.h"
#include "../sampler/speculative.h"
#include "bind.h"

static const float *check_f32(lua_State *L, int idx, size_t *n, int writable)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    luaL_argcheck(L, t->dtype == SLM_DTYPE_F32 && slm_tensor_is_contiguous(t) &&
                     (!writable || !t->storage->readonly),
                  idx, writable ? "expected a writable contiguous f32 tensor" : "expected a contiguous f32 tensor");
    *n = (size_t)slm_tensor_numel(t);
    return slm_tensor_data(t);
}

static int l_draw(lua_State *L)
{
    slm_chain *ch = slm_bind_check_chain(L, 1);
    size_t n, nq;
    const float *logits = check_f32(L, 2, &n, 0);
    float *q = (float *)check_f32(L, 3, &nq, 1);
    luaL_argcheck(L, nq == n, 3, "q must hold as many values as the logits");
    slm_error err;
    slm_cands c;
    int32_t id;
    if (slm_chain_dist(ch, logits, n, &c, &err) != SLM_OK ||
        slm_sample_dist(&c, slm_chain_rng(ch), &id, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    slm_spec_dense(&c, q, n);
    lua_pushinteger(L, id);
    return 1;
}

static int l_verify(lua_State *L)
{
    slm_chain *ch = slm_bind_check_chain(L, 1);
    size_t n, nq = 0;
    const float *logits = check_f32(L, 2, &n, 0);
    lua_Integer x = luaL_checkinteger(L, 3);
    luaL_argcheck(L, x >= 0 && (size_t)x < n, 3, "token id out of range");
    const float *q = NULL;
    if (!lua_isnoneornil(L, 4)) {
        q = check_f32(L, 4, &nq, 0);
        luaL_argcheck(L, nq == n, 4, "q must hold as many values as the logits");
    }
    slm_error err;
    slm_cands c;
    int32_t id;
    int accepted;
    if (slm_chain_dist(ch, logits, n, &c, &err) != SLM_OK ||
        slm_spec_verify(&c, q, n, (int32_t)x, slm_chain_rng(ch), &id, &accepted, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    lua_pushboolean(L, accepted);
    lua_pushinteger(L, id);
    return 2;
}

static int l_is_greedy(lua_State *L)
{
    lua_pushboolean(L, slm_chain_is_greedy(slm_bind_check_chain(L, 1)));
    return 1;
}

static int l_lua_stage(lua_State *L)
{
    const char *name = slm_chain_lua_stage(slm_bind_check_chain(L, 1));
    if (name) lua_pushstring(L, name);
    else lua_pushnil(L);
    return 1;
}

void slm_bind_open_speculative(lua_State *L)
{
    static const luaL_Reg fns[] = {{"draw", l_draw}, {"verify", l_verify}, {"is_greedy", l_is_greedy},
                                   {"lua_stage", l_lua_stage},                                   {NULL, NULL}};
    slm_bind_set_subfuncs(L, "speculative", fns);
}
