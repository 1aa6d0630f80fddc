/* Sampler chains: stages in any order, ending with a selection.
 *
 * Each stage sits behind a small interface (name, apply, describe, free: the
 * shape of the reference's llama_sampler_i), so built-in stages and custom
 * ones (a Lua function, through the binding) compose the same way. The
 * chain owns every buffer the stages need, sized to the vocabulary of the
 * last call: sampling allocates only when the vocabulary grows.
 *
 * It also owns the state a session must be able to save and restore: the
 * RNG of the dist stage and the history of accepted tokens that penalties
 * look at. The history keeps the most recent H tokens, H the largest last_n
 * of the chain's penalty stages (0 without penalties). reset() empties the
 * history and reseeds the RNG with the dist stage's seed, so a reset chain
 * repeats itself exactly. */
#ifndef SLM_CHAIN_H
#define SLM_CHAIN_H

#include <stddef.h>
#include <stdint.h>

#include "sampler.h"

typedef struct slm_chain slm_chain;

/* A custom stage: called with the stage's 0-based position in the chain and
 * the candidates, which it may rewrite or shrink (n >= 1). */
typedef slm_status (*slm_stage_fn)(void *ud, int stage, slm_cands *c,
                                   slm_error *err);

slm_chain *slm_chain_new(slm_error *err);
void slm_chain_free(slm_chain *ch);   /* NULL is fine */

/* Appending stages. Each checks its parameters (the errors name the stage
 * and the value). Nothing may follow a selection (greedy, dist). */
slm_status slm_chain_add_greedy(slm_chain *ch, slm_error *err);
slm_status slm_chain_add_dist(slm_chain *ch, uint64_t seed, slm_error *err);
slm_status slm_chain_add_temp(slm_chain *ch, float t, slm_error *err);
slm_status slm_chain_add_top_k(slm_chain *ch, int32_t k, slm_error *err);
slm_status slm_chain_add_top_p(slm_chain *ch, float p, size_t min_keep, slm_error *err);
slm_status slm_chain_add_min_p(slm_chain *ch, float p, size_t min_keep, slm_error *err);
slm_status slm_chain_add_typical(slm_chain *ch, float p, size_t min_keep, slm_error *err);
slm_status slm_chain_add_penalties(slm_chain *ch, const slm_penalty *pen, slm_error *err);
/* n pairs (ids[j], bias[j]); ids >= 0 (checked against the vocabulary at
 * sampling time), bias finite or -inf (a ban); a repeated id sums. */
slm_status slm_chain_add_logit_bias(slm_chain *ch, const int32_t *ids,
                                    const float *bias, size_t n, slm_error *err);
/* name is shown by describe (copied, truncated to 31 bytes). */
slm_status slm_chain_add_custom(slm_chain *ch, const char *name, slm_stage_fn fn,
                                void *ud, slm_error *err);

size_t slm_chain_n_stages(const slm_chain *ch);

/* Runs the chain over logits[0..n_vocab) and stores the selected id. The
 * chain must end with a selection. Does not accept the id. */
slm_status slm_chain_sample(slm_chain *ch, const float *logits, size_t n_vocab,
                            int32_t *id, slm_error *err);
/* Pushes an accepted token into the history. id must be >= 0 and, once the
 * chain has sampled, < the vocabulary size. */
slm_status slm_chain_accept(slm_chain *ch, int32_t id, slm_error *err);
void slm_chain_reset(slm_chain *ch);

/* "top_k(40) -> temp(0.8) -> dist(seed=42)"; returns the length it needed
 * (snprintf-like: the output is truncated to size). */
size_t slm_chain_describe(const slm_chain *ch, char *buf, size_t size);

/* Speculative decoding (sampler/speculative.h). dist runs every stage but
 * the selection over logits and leaves the candidates, p the softmax of
 * their logits, in *c over the chain's buffer (valid until the next call);
 * a greedy selection makes it the point mass at the best candidate. Chains
 * with Lua stages are refused: those would also see draft positions
 * (lua_stage: the name of the first one, NULL without). rng is the dist
 * stage's generator; is_greedy tells a chain ending with greedy. */
slm_status slm_chain_dist(slm_chain *ch, const float *logits, size_t n_vocab, slm_cands *c,
                          slm_error *err);
const char *slm_chain_lua_stage(const slm_chain *ch);
slm_rng *slm_chain_rng(slm_chain *ch);
int slm_chain_is_greedy(const slm_chain *ch);

/* Session state. */
void slm_chain_get_rng(const slm_chain *ch, uint64_t s[4]);
slm_status slm_chain_set_rng(slm_chain *ch, const uint64_t s[4], slm_error *err);
/* The kept history, oldest first; returns its length. */
size_t slm_chain_history(const slm_chain *ch, const int32_t **ids);
size_t slm_chain_history_capacity(const slm_chain *ch);
/* Replaces the history (keeping the last capacity ids); ids are checked as
 * in accept. */
slm_status slm_chain_set_history(slm_chain *ch, const int32_t *ids, size_t n,
                                 slm_error *err);

#endif
