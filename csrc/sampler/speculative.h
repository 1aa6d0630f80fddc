/* Speculative sampling: the acceptance rule that lets a cheap draft propose
 * tokens and a target model keep exactly its own distribution.
 *
 * Leviathan, Kalman, Matias 2023 ("Fast Inference from Transformers via
 * Speculative Decoding", Algorithm 1) and Chen et al. 2023 ("Accelerating
 * Large Language Model Decoding with Speculative Sampling", Algorithm 2):
 * the draft draws x ~ q; with p the target's distribution at the same
 * position, x is accepted with probability min(1, p(x) / q(x)); on
 * rejection the token is drawn from the residual normalize(max(0, p - q)).
 * Either way the token emitted is distributed as p: P(x) = min(p, q)(x) +
 * (1 - sum min(p, q)) * (p - q)+(x) / sum (p - q)+ = p(x), since
 * sum (p - q)+ = 1 - sum min(p, q).
 *
 * p and q are what the sampler chain would sample from (slm_chain_dist:
 * every stage but the selection, then the softmax), so temperature, top-k,
 * top-p, min-p, penalties and biases shape both the same way. A draft that
 * is not a model (prompt lookup) proposes x with q the point mass at x:
 * accepted with probability p(x), else drawn from p without x.
 *
 * Uniforms come from the caller's rng (the chain's dist generator), one for
 * the test and one more for a residual draw. */
#ifndef SLM_SPECULATIVE_H
#define SLM_SPECULATIVE_H

#include <stddef.h>
#include <stdint.h>

#include "sampler.h"

/* q[0..n_vocab) = 0, then q[id] = p of each candidate of c (p valid). */
void slm_spec_dense(const slm_cands *c, float *q, size_t n_vocab);

/* The rule above for the proposed x, with p the target's candidates (p
 * valid) and q the draft's dense distribution (NULL: the point mass at x).
 * *accepted = 1 and *id = x, or *accepted = 0 and *id the residual draw.
 * Errors: x out of range, q(x) = 0 (x cannot have been drawn from q). */
slm_status slm_spec_verify(const slm_cands *p, const float *q, size_t n_vocab, int32_t x,
                           slm_rng *rng, int32_t *id, int *accepted, slm_error *err);

#endif
