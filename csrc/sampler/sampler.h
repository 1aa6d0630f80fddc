/* Sampling stages: pure functions on a candidate set.
 *
 * A candidate set starts as the whole vocabulary (one entry per logit, in id
 * order) and each stage rewrites logits or shrinks the set in place; the
 * final selection (greedy or dist) picks one id. As in llama2.c's
 * sample_topp(..., coin), randomness comes only from an explicit slm_rng, so
 * the stages are deterministic functions of their inputs.
 *
 * Order conventions. "Better" means a higher logit, ties broken by the lower
 * id; every sort and selection here uses that total order, so results never
 * depend on the sort algorithm. Greedy picks the best candidate: the argmax,
 * the lowest id among equal maxima.
 *
 * Cost. Nothing here allocates: stages that need room take a caller's
 * scratch buffer (the chain owns them, sized to n_vocab). Nothing sorts the
 * whole vocabulary: top-k keeps a heap of the best k (introselect when k is
 * large) and sorts only the k kept; top-p and typical select by mass (quickselect that sums the better
 * side), O(n) expected whatever the shape of the distribution. */
#ifndef SLM_SAMPLER_H
#define SLM_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"
#include "rng.h"

typedef struct slm_cand {
    int32_t id;      /* token id, 0-based */
    float logit;
    float p;         /* softmax of the logits when slm_cands.p_valid */
} slm_cand;

typedef struct slm_cands {
    slm_cand *data;  /* n entries, owned by the caller */
    size_t n;        /* >= 1 */
    int sorted;      /* logits non-increasing along data (best first) */
    int p_valid;     /* p is the softmax of the current logits over data */
    int identity;    /* data[i].id == i for all i: the untouched vocabulary */
} slm_cands;

/* Fills c over buf (n entries) from logits[0..n). NaN and +inf logits are
 * rejected (they have no place in a probability); -inf is a banned token. */
slm_status slm_cands_init(slm_cands *c, slm_cand *buf, const float *logits,
                          size_t n, slm_error *err);

/* p = softmax(logit) over the set, summed in double. Fails when every logit
 * is -inf (nothing left to sample). */
slm_status slm_cands_softmax(slm_cands *c, slm_error *err);
/* Full sort, best first. */
void slm_cands_sort(slm_cands *c);
/* Index of the best candidate (argmax, ties to the lowest id). */
size_t slm_cands_argmax(const slm_cands *c);

/* Temperature: logit / t, exactly (a division, not a multiplication by 1/t).
 * t = 0 keeps only the argmax (greedy). t < 0 or NaN is an error. */
slm_status slm_sample_temp(slm_cands *c, float t, slm_error *err);
/* Keeps the k best, sorted; k = 0 or k >= n leaves the set unchanged. */
slm_status slm_sample_top_k(slm_cands *c, int32_t k, slm_error *err);
/* Nucleus: keeps the smallest set of best candidates whose probability mass
 * is >= p and that holds at least min_keep; p in (0, 1], p = 1 keeps
 * everything. A sorted set stays sorted; otherwise the kept ones are found
 * by selection (no sort) and left in no particular order. */
slm_status slm_sample_top_p(slm_cands *c, float p, size_t min_keep,
                            slm_error *err);
/* Keeps the candidates whose probability is >= p times the largest one
 * (computed on logits: logit >= max + log p); if fewer than min_keep pass,
 * keeps the min_keep best. p in [0, 1], p = 0 keeps everything. Order is
 * preserved. */
slm_status slm_sample_min_p(slm_cands *c, float p, size_t min_keep,
                            slm_error *err);
/* Locally typical sampling (Meister et al. 2022): with H the entropy of the
 * softmax, orders candidates by |-log p_i - H| (smallest first, ties to the
 * lower id) and keeps the shortest prefix of that order whose mass is >= p
 * and that holds at least min_keep. p in (0, 1], p = 1 keeps everything.
 * scratch holds c->n entries. The kept set is in no particular order. */
slm_status slm_sample_typical(slm_cands *c, float p, size_t min_keep,
                              slm_cand *scratch, slm_error *err);

typedef struct slm_penalty {
    int32_t last_n;          /* how many of the most recent tokens count; 0 disables */
    float repeat;            /* > 0; 1 disables */
    float frequency;         /* subtracted once per occurrence */
    float presence;          /* subtracted once if the token occurs at all */
} slm_penalty;

/* Penalties over the tokens hist[0..n_hist) (the most recent last_n of the
 * history, oldest first). For each candidate whose id occurs count > 0 times:
 *   logit = logit > 0 ? logit / repeat : logit * repeat      (the reference's
 *                                                   repetition penalty, CTRL)
 *   logit -= count * frequency + presence                   (OpenAI's rule)
 * Every other logit is untouched. Ids outside [0, n_vocab) are ignored.
 * counts holds n_vocab zeros and is left zeroed. */
slm_status slm_sample_penalties(slm_cands *c, const slm_penalty *pen,
                                const int32_t *hist, size_t n_hist,
                                int32_t *counts, int32_t n_vocab,
                                slm_error *err);

/* Adds bias[j] to the logit of id ids[j] (ids unique, each in [0, n_vocab));
 * -inf bans the token. marks holds n_vocab zeros and is left zeroed. */
slm_status slm_sample_logit_bias(slm_cands *c, const int32_t *ids,
                                 const float *bias, size_t n, int32_t *marks,
                                 int32_t n_vocab, slm_error *err);

/* Final selections. */
slm_status slm_sample_greedy(const slm_cands *c, int32_t *id, slm_error *err);
/* Categorical draw from softmax(logits) with one uniform u = slm_rng_uniform:
 * the first candidate, in set order, whose cumulative mass exceeds u * total. */
slm_status slm_sample_dist(slm_cands *c, slm_rng *rng, int32_t *id,
                           slm_error *err);

#endif
