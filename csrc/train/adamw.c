/* AdamW (see adamw.h for the update and PyTorch's order of operations). The
 * scalar loop is the reference of the AVX2 one (adamw_avx2.c). */
#include "adamw.h"

#include <math.h>

#include "../kernels/vecdot.h"

/* below this many elements per thread a wake-up costs more than it saves */
#define MIN_ELEMS_PER_THREAD (8 * 1024)
/* ranges cut at multiples of 16 floats (a cache line) */
#define LINE 16

static void adamw_scalar(float *p, const float *g, float *m, float *v, int64_t n, const slm_adamw_consts *k)
{
    for (int64_t i = 0; i < n; i++) {
        const float gi = g[i] * k->c;
        const float pi = p[i] * k->decay;                        /* param.mul_(1 - lr wd) */
        const float mi = m[i] * k->b1 + k->one_minus_b1 * gi;    /* exp_avg.mul_(b1).add_(g, 1 - b1) */
        const float vi = v[i] * k->b2 + k->one_minus_b2 * gi * gi;   /* .addcmul_(g, g, 1 - b2) */
        const float denom = sqrtf(vi) / k->bc2_sqrt + k->eps;
        p[i] = pi - k->step_size * mi / denom;                   /* addcdiv_(m, denom, -step_size) */
        m[i] = mi;
        v[i] = vi;
    }
}

typedef struct adamw_ctx {
    float *p, *m, *v;
    const float *g;
    int64_t n;
    slm_adamw_consts k;
    int avx2;
} adamw_ctx;

static void adamw_task(void *vc, int ith, int nth)
{
    const adamw_ctx *c = vc;
    const int64_t lines = (c->n + LINE - 1) / LINE;
    int64_t lo = lines * ith / nth * LINE, hi = lines * (ith + 1) / nth * LINE;
    if (hi > c->n) hi = c->n;
    if (hi <= lo) return;
#if defined(__x86_64__)
    if (c->avx2) {
        slm_adamw_avx2(c->p + lo, c->g + lo, c->m + lo, c->v + lo, hi - lo, &c->k);
        return;
    }
#endif
    adamw_scalar(c->p + lo, c->g + lo, c->m + lo, c->v + lo, hi - lo, &c->k);
}

slm_status slm_adamw_step(slm_pool *pool, float *p, const float *g, float *m, float *v, int64_t n,
                          const slm_adamw_params *h, slm_error *err)
{
    if (h->step < 1)
        return slm_error_set(err, SLM_EINVAL, "adamw: step %lld (the first update is step 1)",
                             (long long)h->step);
    if (!(h->beta1 >= 0 && h->beta1 < 1) || !(h->beta2 >= 0 && h->beta2 < 1))
        return slm_error_set(err, SLM_EINVAL, "adamw: betas (%g, %g) outside [0, 1)", h->beta1, h->beta2);
    /* as PyTorch: Python floats (double) for the bias corrections and the
     * scalars, rounded to float where they meet a float tensor */
    const double t = (double)h->step;
    const double bc1 = 1.0 - pow(h->beta1, t), bc2 = 1.0 - pow(h->beta2, t);
    adamw_ctx c = {.p = p, .m = m, .v = v, .g = g, .n = n, .avx2 = slm_kernels_use_avx2()};
    c.k = (slm_adamw_consts){
        .c = (float)h->grad_scale,
        .decay = (float)(1.0 - h->lr * h->weight_decay),
        .b1 = (float)h->beta1,
        .one_minus_b1 = (float)(1.0 - h->beta1),
        .b2 = (float)h->beta2,
        .one_minus_b2 = (float)(1.0 - h->beta2),
        .step_size = (float)(h->lr / bc1),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = (float)h->eps,
    };
    if (n < 1) return SLM_OK;
    if (slm_pool_busy(pool)) pool = NULL;
    int nth = slm_pool_size(pool);
    if (n / MIN_ELEMS_PER_THREAD < nth) nth = n / MIN_ELEMS_PER_THREAD < 1 ? 1 : (int)(n / MIN_ELEMS_PER_THREAD);
    slm_pool_run(pool, nth, adamw_task, &c);
    return SLM_OK;
}
