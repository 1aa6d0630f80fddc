/* The AVX-512 LayerNorm (kernels/ops_avx512.c) against the generic one
 * (ops.c, the tier forced with slm_kernels_set_level) and against a
 * double-precision LayerNorm written here from the definition
 * (x - mean) / sqrt(var + eps) * w + b, var the biased variance: rows of
 * lengths around the 16 lanes, with and without weight and bias, one row
 * of a wide dynamic range, in place and not. Without AVX-512 the case says
 * "skip:". */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#define TESTRAND_SEED 5151u
#include "testrand.h"
#include "kernels/ops.h"
#include "kernels/vecdot.h"

/* uniform in [lo, hi] (testrand.h's stream) */
static float urange(float lo, float hi)
{
    return lo + (frand() + 1.0f) * 0.5f * (hi - lo);
}

static void test_layernorm(void)
{
    if (!(slm_cpu_has_avx512() && slm_kernels_use_avx512())) {
        printf("skip: layernorm avx512 vs generic (no AVX-512)\n");
        return;
    }
    const int64_t ns[] = {1, 7, 16, 17, 64, 768, 1000};
    const int rows = 5;
    const float eps = 1e-5f;
    double worst_gen = 0, worst_ref = 0;
    size_t same = 0, total = 0;
    for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
        const int64_t n = ns[ni];
        const size_t nx = (size_t)rows * (size_t)n;
        float *x = malloc(nx * sizeof(float)), *w = malloc((size_t)n * sizeof(float));
        float *b = malloc((size_t)n * sizeof(float)), *o[2] = {malloc(nx * sizeof(float)), malloc(nx * sizeof(float))};
        for (size_t i = 0; i < nx; i++) x[i] = urange(-3, 3) + 0.5f;
        /* row 1: magnitudes from 1e-6 to 1e3 */
        for (int64_t i = 0; i < n; i++) x[n + i] = frand() * powf(10.0f, (float)(i % 10) - 6);
        for (int64_t i = 0; i < n; i++) {
            w[i] = urange(0.5f, 1.5f);
            b[i] = urange(-0.1f, 0.1f);
        }
        for (int wb = 0; wb < 2; wb++) {
            const float *ww = wb ? w : NULL, *bb = wb ? b : NULL;
            slm_kernels_set_level(SLM_KERNELS_GENERIC);
            slm_ops_layernorm(o[0], x, ww, bb, rows, n, eps);
            slm_kernels_set_level(SLM_KERNELS_AVX512);
            /* in place on a copy when wb: the same values */
            if (wb) {
                memcpy(o[1], x, nx * sizeof(float));
                slm_ops_layernorm(o[1], o[1], ww, bb, rows, n, eps);
            } else {
                slm_ops_layernorm(o[1], x, ww, bb, rows, n, eps);
            }
            for (int r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * (size_t)n;
                double mean = 0, var = 0;
                for (int64_t i = 0; i < n; i++) mean += xr[i];
                mean /= (double)n;
                for (int64_t i = 0; i < n; i++) var += (xr[i] - mean) * (xr[i] - mean);
                var /= (double)n;
                for (int64_t i = 0; i < n; i++) {
                    size_t j = (size_t)r * (size_t)n + (size_t)i;
                    double ref = (xr[i] - mean) / sqrt(var + eps) * (ww ? ww[i] : 1) + (bb ? bb[i] : 0);
                    /* outputs are O(1): errors relative to max(1, |ref|) */
                    double s = fmax(1.0, fabs(ref));
                    worst_gen = fmax(worst_gen, fabs((double)o[1][j] - o[0][j]) / s);
                    worst_ref = fmax(worst_ref, fabs((double)o[1][j] - ref) / s);
                    same += !memcmp(&o[1][j], &o[0][j], 4);
                    total++;
                }
            }
        }
        free(x); free(w); free(b); free(o[0]); free(o[1]);
    }
    CHECK(worst_gen <= 1e-6, "layernorm avx512 vs generic: max err %g (<= 1e-6)", worst_gen);
    CHECK(worst_ref <= 2e-6, "layernorm avx512 vs a double layernorm: max err %g (<= 2e-6)", worst_ref);
    printf("layernorm avx512: %zu of %zu outputs the generic's bits, max err vs generic %.2e, vs double %.2e\n",
           same, total, worst_gen, worst_ref);
}

int main(void)
{
    test_layernorm();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
