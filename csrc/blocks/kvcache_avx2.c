/* AVX2 + F16C inner loops of the attention over the F16 cache. Same
 * products as the generic loops in kvcache.c, summed in another order. */
#include <immintrin.h>

#include "kvcache.h"

/* sum_j q[j] * k[j], q already rounded to f16 values (as floats) */
static inline float kv_dot(const float *q, const slm_f16 *k, int n)
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

float slm_kv_dot_avx2(const float *q, const slm_f16 *k, int n)
{
    return kv_dot(q, k, n);
}

/* s[t] = dot(q, k + t * stride) * scale for t < n_pos: the dot above, one
 * call for a whole row of scores */
void slm_kv_scores_avx2(float *s, const float *q, const slm_f16 *k, size_t stride, int n_pos,
                        int hd, float scale)
{
    for (int t = 0; t < n_pos; t++) s[t] = kv_dot(q, k + (size_t)t * stride, hd) * scale;
}

/* acc[j] += sum_t p[t] * v[t * stride + j], t in order, each step the FMA of
 * slm_kv_axpy_avx2 (so the same sums): 64 columns at a time stay in
 * registers over all t instead of a load and store per t */
void slm_kv_mix_avx2(float *acc, const float *p, const slm_f16 *v, size_t stride, int n_pos, int hd)
{
    int j = 0;
    for (; j + 64 <= hd; j += 64) {
        __m256 a0 = _mm256_loadu_ps(acc + j), a1 = _mm256_loadu_ps(acc + j + 8),
               a2 = _mm256_loadu_ps(acc + j + 16), a3 = _mm256_loadu_ps(acc + j + 24),
               a4 = _mm256_loadu_ps(acc + j + 32), a5 = _mm256_loadu_ps(acc + j + 40),
               a6 = _mm256_loadu_ps(acc + j + 48), a7 = _mm256_loadu_ps(acc + j + 56);
        for (int t = 0; t < n_pos; t++) {
            const slm_f16 *r = v + (size_t)t * stride + j;
            const __m256 pv = _mm256_set1_ps(p[t]);
            a0 = _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r))), a0);
            a1 = _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 8))), a1);
            a2 = _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 16))), a2);
            a3 = _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 24))), a3);
            a4 = _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 32))), a4);
            a5 = _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 40))), a5);
            a6 = _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 48))), a6);
            a7 = _mm256_fmadd_ps(pv, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(r + 56))), a7);
        }
        _mm256_storeu_ps(acc + j, a0);
        _mm256_storeu_ps(acc + j + 8, a1);
        _mm256_storeu_ps(acc + j + 16, a2);
        _mm256_storeu_ps(acc + j + 24, a3);
        _mm256_storeu_ps(acc + j + 32, a4);
        _mm256_storeu_ps(acc + j + 40, a5);
        _mm256_storeu_ps(acc + j + 48, a6);
        _mm256_storeu_ps(acc + j + 56, a7);
    }
    if (j < hd) {
        /* the remaining columns (fewer than 64) the way axpy does them */
        for (int t = 0; t < n_pos; t++) slm_kv_axpy_avx2(acc + j, p[t], v + (size_t)t * stride + j, hd - j);
    }
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

/* y[i] = x[i] * scale rounded to f16 and back (F16C rounds to nearest even
 * as slm_f32_to_f16 does); y may be x */
void slm_kv_round16_avx2(float *y, const float *x, float scale, int n)
{
    const __m256 sc = _mm256_set1_ps(scale);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_mul_ps(_mm256_loadu_ps(x + i), sc),
                                                                _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) y[i] = slm_f16_to_f32(slm_f32_to_f16(x[i] * scale));
}
