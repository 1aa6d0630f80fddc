/* AVX2/FMA twin of the selective scan (slm_mamba_scan_generic in mamba.c):
 * the d_state lanes of a channel in 8-wide vectors, exp evaluated in
 * registers instead of one libm call per element. The scan's exp is the
 * bulk of a Mamba prompt's non-matmul time (n * d_inner * d_state calls).
 *
 * Same recurrence and the same scalar softplus; the state update is fused
 * (s * e + B x d in one FMA) and the C dot is summed lane-wise, so results
 * differ from the generic scan by rounding only (tested in
 * tests/test_mamba.c against it and against a double reference). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>

#include "mamba.h"
#include "mamba_avx2.h"
#include "../kernels/simd_avx2.h"


/* d_state a multiple of 8 (the caller checks) */
void slm_mamba_scan_avx2_ex(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                            const float *dt, int64_t ld_dt, const float *A, const float *bc,
                            int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                            int64_t c1, int softplus)
{
    for (int64_t i = c0; i < c1; i++) {
        float *s = state + i * d_state;
        const float *a = A + i * d_state;
        for (int t = 0; t < n; t++) {
            const float v = dt[t * ld_dt + i];
            const float d = !softplus || v > 20.0f ? v : log1pf(expf(v));
            const float xi = x[t * ld_x + i];
            const __m256 vd = _mm256_set1_ps(d), vxd = _mm256_set1_ps(xi * d);
            const float *B = bc + t * ld_bc, *C = B + d_state;
            __m256 acc = _mm256_setzero_ps();
            for (int64_t j = 0; j < d_state; j += 8) {
                __m256 e = slm_mamba_exp_avx2(_mm256_mul_ps(vd, _mm256_loadu_ps(a + j)));
                __m256 sj = _mm256_fmadd_ps(_mm256_loadu_ps(s + j), e,
                                            _mm256_mul_ps(_mm256_loadu_ps(B + j), vxd));
                acc = _mm256_fmadd_ps(sj, _mm256_loadu_ps(C + j), acc);
                _mm256_storeu_ps(s + j, sj);
            }
            y[t * ld_y + i] = hsum_ps(acc) + xi * D[i];
        }
    }
}

void slm_mamba_scan_avx2(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                         const float *dt, int64_t ld_dt, const float *A, const float *bc,
                         int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                         int64_t c1)
{
    slm_mamba_scan_avx2_ex(y, ld_y, state, x, ld_x, dt, ld_dt, A, bc, ld_bc, D, n, d_state, c0, c1, 1);
}

#endif
