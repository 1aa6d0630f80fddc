/* AdamW (train/adamw.h) against torch.optim.AdamW's single-tensor step
 * written out here op by op in float (the same bits expected, on the AVX2
 * and the generic path, 1 and 2 threads), and against a short example
 * computed by hand; bad steps and betas refused. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/pool.h"
#include "kernels/vecdot.h"
#include "train/adamw.h"

#define TESTRAND_SEED 77
#include "testrand.h"

static slm_pool *pool1, *pool2;

/* torch.optim.AdamW's single-tensor step, written out op by op in float */
static void adamw_ref(float *p, const float *g, float *m, float *v, int64_t n, double lr, double b1, double b2,
                      double eps, double wd, double c, int t)
{
    const double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
    for (int64_t i = 0; i < n; i++) {
        float gi = g[i] * (float)c;                                      /* clip_grad_norm_'s mul_ */
        p[i] = p[i] * (float)(1 - lr * wd);                              /* param.mul_(1 - lr wd) */
        m[i] = m[i] * (float)b1;                                         /* exp_avg.mul_(b1) */
        m[i] = m[i] + (float)(1 - b1) * gi;                              /* .add_(g, alpha = 1 - b1) */
        v[i] = v[i] * (float)b2;                                         /* exp_avg_sq.mul_(b2) */
        v[i] = v[i] + (float)(1 - b2) * gi * gi;                         /* .addcmul_(g, g, value = 1 - b2) */
        float denom = sqrtf(v[i]) / (float)sqrt(bc2);                    /* exp_avg_sq.sqrt() / bc2_sqrt */
        denom = denom + (float)eps;                                      /* .add_(eps) */
        p[i] = p[i] + (float)(-(lr / bc1)) * m[i] / denom;               /* addcdiv_(m, denom, -lr / bc1) */
    }
}

static void test_adamw(void)
{
    const int64_t n = 70001;
    float *p = rvec(n, 0.1f), *m = calloc((size_t)n, sizeof(float)), *v = calloc((size_t)n, sizeof(float));
    float *rp = fdup(p, n), *rm = fdup(m, n), *rv = fdup(v, n);
    int same = 1;
    slm_error err = {0};
    for (int t = 1; t <= 5; t++) {
        float *g = rvec(n, t == 3 ? 1e-4f : 2.0f);
        g[0] = 0.0f;
        const double c = t % 2 ? 0.37 : 1.0;
        slm_adamw_params h = {3e-3, 0.9, 0.95, 1e-8, 0.1, c, t};
        slm_kernels_force_generic(t % 2);   /* both paths, same bits */
        CHECK(slm_adamw_step(t % 2 ? pool1 : pool2, p, g, m, v, n, &h, &err) == SLM_OK, "%s", err.msg);
        adamw_ref(rp, g, rm, rv, n, 3e-3, 0.9, 0.95, 1e-8, 0.1, c, t);
        same &= !memcmp(p, rp, (size_t)n * sizeof(float)) && !memcmp(m, rm, (size_t)n * sizeof(float)) &&
                !memcmp(v, rv, (size_t)n * sizeof(float));
        free(g);
    }
    slm_kernels_force_generic(0);
    CHECK(same, "adamw: differs from the op-by-op float reference");
    /* one value by hand: p = 1, lr 0.1, betas (0.9, 0.95), eps 1e-8, wd 0.1;
     * gradients 0.5, -0.25, then 2 clipped by 0.125 (0.25):
     *   t=1: p = 0.99 - 0.1 * 0.5 / (0.5 + 1e-8)                   = 0.890000002
     *        (m = 0.05, v = 0.0125; m / 0.1 = 0.5, sqrt(v / 0.05) = 0.5)
     *   t=2: m = 0.045 - 0.025 = 0.02, v = 0.011875 + 0.003125 = 0.015,
     *        p = 0.890000002 * 0.99 - 0.1 (0.02 / 0.19) / (sqrt(0.015 / 0.0975) + 1e-8)
     *          = 0.88110000198 - 0.0268369441...                  = 0.85426305786
     *   t=3: m = 0.018 + 0.025 = 0.043, v = 0.01425 + 0.003125 = 0.017375,
     *        p = 0.85426305786 * 0.99 - 0.1 (0.043 / 0.271) / (sqrt(0.017375 / 0.142625) + 1e-8)
     *                                                             = 0.80025988893 */
    const double want[3] = {0.890000002, 0.85426305786, 0.80025988893};
    const float gs[3] = {0.5f, -0.25f, 2.0f};
    const double cs[3] = {1, 1, 0.125};
    for (int path = 0; path < 2; path++) {
        float P[9], G[9], M[9] = {0}, Vv[9] = {0};   /* 9 lanes: the vector loop and its tail */
        for (int i = 0; i < 9; i++) P[i] = 1.0f;
        slm_kernels_force_generic(path);
        double worst = 0;
        for (int t = 1; t <= 3; t++) {
            for (int i = 0; i < 9; i++) G[i] = gs[t - 1];
            slm_adamw_params h = {0.1, 0.9, 0.95, 1e-8, 0.1, cs[t - 1], t};
            slm_adamw_step(NULL, P, G, M, Vv, 9, &h, &err);
            for (int i = 0; i < 9; i++) worst = fmax(worst, fabs(P[i] - want[t - 1]));
        }
        CHECK(worst < 2e-7, "adamw by hand: off by %.3g (path %d)", worst, path);
        printf("adamw: by-hand example within %.2e (%s)\n", worst, path ? "generic" : "default path");
    }
    slm_kernels_force_generic(0);
    slm_adamw_params bad = {0.1, 0.9, 0.95, 1e-8, 0.1, 1, 0};
    CHECK(slm_adamw_step(NULL, p, p, m, v, 1, &bad, &err) == SLM_EINVAL && strstr(err.msg, "step"),
          "adamw: step 0 accepted");
    bad.step = 1;
    bad.beta2 = 1.0;
    CHECK(slm_adamw_step(NULL, p, p, m, v, 1, &bad, &err) == SLM_EINVAL, "adamw: beta2 = 1 accepted");
    free(p); free(m); free(v); free(rp); free(rm); free(rv);
}

int main(void)
{
    slm_error err = {0};
    pool1 = slm_pool_new(1, &err);
    pool2 = slm_pool_new(2, &err);
    test_adamw();
    slm_pool_free(pool1);
    slm_pool_free(pool2);
    return check_summary();
}
