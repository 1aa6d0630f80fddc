/* AdamW exactly as torch.optim.AdamW (single-tensor loop, amsgrad off),
 * over flat f32 buffers: the optimizer's state is the tensors m and v and
 * the step count, so saving and resuming is bit for bit. */
#ifndef SLM_ADAMW_H
#define SLM_ADAMW_H

#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"

/* torch.optim.AdamW (amsgrad off) with the gradient multiplied by
 * grad_scale first (the clip coefficient of clip_grad_norm_). Hyper-
 * parameters are doubles as PyTorch's Python floats are; the bias
 * corrections are computed in double once per call and every elementwise
 * step in float, each constant rounded to float, in PyTorch's order:
 *   g <- g c
 *   p <- p (1 - lr wd)
 *   m <- m b1 + (1 - b1) g
 *   v <- v b2 + ((1 - b2) g) g
 *   p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
 * (m: exp_avg, v: exp_avg_sq; t = step >= 1, the count of updates including
 * this one). */
typedef struct slm_adamw_params {
    double lr, beta1, beta2, eps, weight_decay;
    double grad_scale;     /* c; 1 for none */
    int64_t step;          /* t >= 1 */
} slm_adamw_params;

/* p, g, m, v: n floats each (g is read only). SLM_EINVAL on a step < 1 or
 * betas outside [0, 1). */
slm_status slm_adamw_step(slm_pool *pool, float *p, const float *g, float *m, float *v, int64_t n,
                          const slm_adamw_params *h, slm_error *err);

/* The float constants of one AdamW call (slm_adamw_step computes them):
 * c, 1 - lr wd, b1, 1 - b1, b2, 1 - b2, lr / (1 - b1^t), sqrt(1 - b2^t),
 * eps, each computed in double and rounded to float. */
typedef struct slm_adamw_consts {
    float c, decay, b1, one_minus_b1, b2, one_minus_b2, step_size, bc2_sqrt, eps;
} slm_adamw_consts;

#if defined(__x86_64__)
/* AVX2 twin of the elementwise loop (adamw_avx2.c): the same operations
 * in the same order, no fused multiply-add, so the same bits */
void slm_adamw_avx2(float *p, const float *g, float *m, float *v, int64_t n, const slm_adamw_consts *k);
#endif

#endif
