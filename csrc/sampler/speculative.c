/* Speculative sampling's acceptance rule (see speculative.h). */
#include "speculative.h"

#include <string.h>

void slm_spec_dense(const slm_cands *c, float *q, size_t n_vocab)
{
    memset(q, 0, n_vocab * sizeof *q);
    for (size_t i = 0; i < c->n; i++) {
        const int32_t id = c->data[i].id;
        if (id >= 0 && (size_t)id < n_vocab) q[id] = c->data[i].p;
    }
}

/* q(id) of the draft: dense, or the point mass at x */
static double q_of(const float *q, int32_t x, int32_t id)
{
    if (q) return q[id];
    return id == x ? 1.0 : 0.0;
}

slm_status slm_spec_verify(const slm_cands *p, const float *q, size_t n_vocab, int32_t x,
                           slm_rng *rng, int32_t *id, int *accepted, slm_error *err)
{
    if (x < 0 || (size_t)x >= n_vocab)
        return slm_error_set(err, SLM_ERANGE, "speculative: draft token %d out of range [0, %zu)",
                             (int)x, n_vocab);
    if (!p->p_valid)
        return slm_error_set(err, SLM_EINVAL, "speculative: the target's probabilities are not computed");
    const double qx = q_of(q, x, x);
    if (!(qx > 0.0))
        return slm_error_set(err, SLM_EINVAL,
                             "speculative: draft token %d has probability 0 under the draft", (int)x);
    double px = 0.0;
    for (size_t i = 0; i < p->n; i++)
        if (p->data[i].id == x) {
            px = p->data[i].p;
            break;
        }
    /* u < p(x) / q(x), written without the division; p(x) >= q(x) always
     * passes since u < 1 */
    if (slm_rng_uniform(rng) * qx < px) {
        *id = x;
        *accepted = 1;
        return SLM_OK;
    }
    *accepted = 0;
    /* residual (p - q)+ over p's candidates (p is 0 elsewhere), in double */
    double total = 0.0;
    for (size_t i = 0; i < p->n; i++) {
        const double r = p->data[i].p - q_of(q, x, p->data[i].id);
        if (r > 0.0) total += r;
    }
    const int residual = total > 0.0;   /* 0 only by rounding: then draw from p */
    if (!residual)
        for (size_t i = 0; i < p->n; i++) total += p->data[i].p;
    const double target = slm_rng_uniform(rng) * total;
    double cum = 0.0;
    size_t pick = p->n;
    for (size_t i = 0; i < p->n; i++) {
        const double r = residual ? p->data[i].p - q_of(q, x, p->data[i].id) : p->data[i].p;
        if (!(r > 0.0)) continue;
        pick = i;    /* rounding fallback: the last candidate with mass */
        cum += r;
        if (cum > target) break;
    }
    if (pick == p->n)
        return slm_error_set(err, SLM_EINVAL, "speculative: the target's distribution has no mass");
    *id = p->data[pick].id;
    return SLM_OK;
}
