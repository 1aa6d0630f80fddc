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

/* e^x for the scan's arguments d * A (<= 0 for real models, but any x is
 * handled): x = k ln2 + f with |f| <= ln2/2, e^f by its Taylor series to
 * degree 7 (Horner), 2^k put in the exponent bits. x below -87 (the result
 * would be subnormal) gives 0; above 88 the result saturates at 2^127 e^f,
 * i.e. stays finite: there the true value overflows float anyway. */
static inline __m256 scan_exp(__m256 x)
{
    const __m256 xmin = _mm256_set1_ps(-87.0f), xmax = _mm256_set1_ps(88.0f);
    __m256 tiny = _mm256_cmp_ps(x, xmin, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, xmin), xmax);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.4426950408889634f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* f = x - k ln2 with ln2 = C1 + C2, C1 short enough that k C1 is exact */
    __m256 f = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
    f = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187e-06f), f);
    static const float c[8] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24,
                               1.0f / 6, 0.5f, 1.0f, 1.0f};
    __m256 p = _mm256_set1_ps(c[0]);
    for (int i = 1; i < 8; i++) p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(c[i]));
    /* k in [-126, 127]: 2^k is a normal float */
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(tiny, y);
}

static inline float hsum(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* d_state a multiple of 8 (the caller checks) */
void slm_mamba_scan_avx2(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                         const float *dt, int64_t ld_dt, const float *A, const float *bc,
                         int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                         int64_t c1)
{
    for (int64_t i = c0; i < c1; i++) {
        float *s = state + i * d_state;
        const float *a = A + i * d_state;
        for (int t = 0; t < n; t++) {
            const float v = dt[t * ld_dt + i];
            const float d = v <= 20.0f ? log1pf(expf(v)) : v;
            const float xi = x[t * ld_x + i];
            const __m256 vd = _mm256_set1_ps(d), vxd = _mm256_set1_ps(xi * d);
            const float *B = bc + t * ld_bc, *C = B + d_state;
            __m256 acc = _mm256_setzero_ps();
            for (int64_t j = 0; j < d_state; j += 8) {
                __m256 e = scan_exp(_mm256_mul_ps(vd, _mm256_loadu_ps(a + j)));
                __m256 sj = _mm256_fmadd_ps(_mm256_loadu_ps(s + j), e,
                                            _mm256_mul_ps(_mm256_loadu_ps(B + j), vxd));
                acc = _mm256_fmadd_ps(sj, _mm256_loadu_ps(C + j), acc);
                _mm256_storeu_ps(s + j, sj);
            }
            y[t * ld_y + i] = hsum(acc) + xi * D[i];
        }
    }
}

#endif
