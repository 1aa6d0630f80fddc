/* AVX2 twin of AdamW's elementwise loop (adamw.c): the same operations in
 * the same order without fused multiply-adds, and IEEE sqrt and division,
 * so the same bits as the scalar loop (tests/test_adamw.c). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>

#include "adamw.h"

void slm_adamw_avx2(float *p, const float *g, float *m, float *v, int64_t n, const slm_adamw_consts *k)
{
    const __m256 c = _mm256_set1_ps(k->c), decay = _mm256_set1_ps(k->decay);
    const __m256 b1 = _mm256_set1_ps(k->b1), omb1 = _mm256_set1_ps(k->one_minus_b1);
    const __m256 b2 = _mm256_set1_ps(k->b2), omb2 = _mm256_set1_ps(k->one_minus_b2);
    const __m256 ss = _mm256_set1_ps(k->step_size), bc2 = _mm256_set1_ps(k->bc2_sqrt);
    const __m256 eps = _mm256_set1_ps(k->eps);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 gi = _mm256_mul_ps(_mm256_loadu_ps(g + i), c);
        const __m256 pi = _mm256_mul_ps(_mm256_loadu_ps(p + i), decay);
        const __m256 mi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(m + i), b1), _mm256_mul_ps(omb1, gi));
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(v + i), b2),
                                        _mm256_mul_ps(_mm256_mul_ps(omb2, gi), gi));
        const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), bc2), eps);
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_div_ps(_mm256_mul_ps(ss, mi), denom)));
        _mm256_storeu_ps(m + i, mi);
        _mm256_storeu_ps(v + i, vi);
    }
    for (; i < n; i++) {
        const float gi = g[i] * k->c;
        const float pi = p[i] * k->decay;
        const float mi = m[i] * k->b1 + k->one_minus_b1 * gi;
        const float vi = v[i] * k->b2 + k->one_minus_b2 * gi * gi;
        const float denom = sqrtf(vi) / k->bc2_sqrt + k->eps;
        p[i] = pi - k->step_size * mi / denom;
        m[i] = mi;
        v[i] = vi;
    }
}

#endif
