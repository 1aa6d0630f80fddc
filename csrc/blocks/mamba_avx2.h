/* The exp of the selective scan's AVX2 kernels (include only from files
 * compiled with -mavx2 -mfma): blocks/mamba_avx2.c's forward scan and
 * train/mamba_grad_avx2.c's backward, which recomputes the forward's
 * states with it and so gets the same floats. */
#ifndef SLM_MAMBA_AVX2_H
#define SLM_MAMBA_AVX2_H

#include <immintrin.h>

/* e^x for the scan's arguments d * A (<= 0 for real models, but any x is
 * handled): x = k ln2 + f with |f| <= ln2/2, e^f by its Taylor series to
 * degree 7 (Horner), 2^k put in the exponent bits. x below -87 (the result
 * would be subnormal) gives 0; above 88 the result saturates at 2^127 e^f,
 * i.e. stays finite: there the true value overflows float anyway. */
static inline __m256 slm_mamba_exp_avx2(__m256 x)
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

#endif
