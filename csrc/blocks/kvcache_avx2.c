/* AVX2 + F16C inner loops of the attention over the F16 cache. Same
 * products as the generic loops in kvcache.c, summed in another order. */
#include <immintrin.h>

#include "kvcache.h"

/* sum_j q[j] * k[j], q already rounded to f16 values (as floats) */
float slm_kv_dot_avx2(const float *q, const slm_f16 *k, int n)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + j)));
        __m256 k1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + j + 8)));
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), k0, acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j + 8), k1, acc1);
    }
    for (; j + 8 <= n; j += 8) {
        __m256 k0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(k + j)));
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(q + j), k0, acc0);
    }
    acc0 = _mm256_add_ps(acc0, acc1);
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(acc0), _mm256_extractf128_ps(acc0, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    float r = _mm_cvtss_f32(s);
    for (; j < n; j++) r += q[j] * slm_f16_to_f32(k[j]);
    return r;
}

/* acc[j] += p * v[j] */
void slm_kv_axpy_avx2(float *acc, float p, const slm_f16 *v, int n)
{
    const __m256 pv = _mm256_set1_ps(p);
    int j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 v0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(v + j)));
        _mm256_storeu_ps(acc + j, _mm256_fmadd_ps(pv, v0, _mm256_loadu_ps(acc + j)));
    }
    for (; j < n; j++) acc[j] += p * slm_f16_to_f32(v[j]);
}

/* dst[i] = f16(src[i]), exact like the scalar conversion */
void slm_kv_to_f16_avx2(slm_f16 *dst, const float *src, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) dst[i] = slm_f32_to_f16(src[i]);
}
