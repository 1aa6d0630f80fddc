/* AVX2 twins of the value mixes of kvcache_q.c: acc += p[t] * float(v_t)
 * over the positions t in order, one 32-column block (4 registers) held
 * across all t. float(v_t) is the reference's dequantization (d * q, exact
 * in f32), and each step is one FMA as the reference's ggml_vec_mad_f32 does
 * it on AVX2 CPUs; the generic loops round the product first, so the two
 * agree to rounding (tests/test_kvquant.c). */
#include <immintrin.h>
#include <string.h>
#include <math.h>

#include "kvcache_q.h"
#include "../quant/blocks.h"

/* 8 int8 at q as 8 floats */
static inline __m256 i8x8(const int8_t *q)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

static void mix_q8_0_avx2(float *acc, const float *p, const unsigned char *v, size_t stride, int n_pos, int hd)
{
    for (int i = 0; i < hd / SLM_QK8_0; i++) {
        float *a = acc + i * SLM_QK8_0;
        __m256 a0 = _mm256_loadu_ps(a), a1 = _mm256_loadu_ps(a + 8), a2 = _mm256_loadu_ps(a + 16),
               a3 = _mm256_loadu_ps(a + 24);
        for (int t = 0; t < n_pos; t++) {
            const slm_block_q8_0 *b = (const slm_block_q8_0 *)(v + (size_t)t * stride) + i;
            const __m256 d = _mm256_set1_ps(slm_f16_to_f32(b->d)), pv = _mm256_set1_ps(p[t]);
            a0 = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8(b->qs)), pv, a0);
            a1 = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8(b->qs + 8)), pv, a1);
            a2 = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8(b->qs + 16)), pv, a2);
            a3 = _mm256_fmadd_ps(_mm256_mul_ps(d, i8x8(b->qs + 24)), pv, a3);
        }
        _mm256_storeu_ps(a, a0);
        _mm256_storeu_ps(a + 8, a1);
        _mm256_storeu_ps(a + 16, a2);
        _mm256_storeu_ps(a + 24, a3);
    }
}

/* q4_0: the 16 bytes' low nibbles are elements 0..15, high nibbles 16..31 */
static void mix_q4_0_avx2(float *acc, const float *p, const unsigned char *v, size_t stride, int n_pos, int hd)
{
    const __m128i m4 = _mm_set1_epi8(15), off = _mm_set1_epi8(8);
    for (int i = 0; i < hd / SLM_QK4_0; i++) {
        float *a = acc + i * SLM_QK4_0;
        __m256 a0 = _mm256_loadu_ps(a), a1 = _mm256_loadu_ps(a + 8), a2 = _mm256_loadu_ps(a + 16),
               a3 = _mm256_loadu_ps(a + 24);
        for (int t = 0; t < n_pos; t++) {
            const slm_block_q4_0 *b = (const slm_block_q4_0 *)(v + (size_t)t * stride) + i;
            const __m128i raw = _mm_loadu_si128((const __m128i *)b->qs);
            const __m128i lo = _mm_sub_epi8(_mm_and_si128(raw, m4), off);
            const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(raw, 4), m4), off);
            const __m256 d = _mm256_set1_ps(slm_f16_to_f32(b->d)), pv = _mm256_set1_ps(p[t]);
            const __m256 v0 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
            const __m256 v1 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
            const __m256 v2 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
            const __m256 v3 = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
            a0 = _mm256_fmadd_ps(_mm256_mul_ps(d, v0), pv, a0);
            a1 = _mm256_fmadd_ps(_mm256_mul_ps(d, v1), pv, a1);
            a2 = _mm256_fmadd_ps(_mm256_mul_ps(d, v2), pv, a2);
            a3 = _mm256_fmadd_ps(_mm256_mul_ps(d, v3), pv, a3);
        }
        _mm256_storeu_ps(a, a0);
        _mm256_storeu_ps(a + 8, a1);
        _mm256_storeu_ps(a + 16, a2);
        _mm256_storeu_ps(a + 24, a3);
    }
}

/* f32 rows: any hd; 32 columns at a time, then 8, then one by one */
static void mix_f32_avx2(float *acc, const float *p, const unsigned char *v, size_t stride, int n_pos, int hd)
{
    int j = 0;
    for (; j + 32 <= hd; j += 32) {
        __m256 a0 = _mm256_loadu_ps(acc + j), a1 = _mm256_loadu_ps(acc + j + 8),
               a2 = _mm256_loadu_ps(acc + j + 16), a3 = _mm256_loadu_ps(acc + j + 24);
        for (int t = 0; t < n_pos; t++) {
            const float *r = (const float *)(v + (size_t)t * stride) + j;
            const __m256 pv = _mm256_set1_ps(p[t]);
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps(r), pv, a0);
            a1 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 8), pv, a1);
            a2 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 16), pv, a2);
            a3 = _mm256_fmadd_ps(_mm256_loadu_ps(r + 24), pv, a3);
        }
        _mm256_storeu_ps(acc + j, a0);
        _mm256_storeu_ps(acc + j + 8, a1);
        _mm256_storeu_ps(acc + j + 16, a2);
        _mm256_storeu_ps(acc + j + 24, a3);
    }
    for (; j + 8 <= hd; j += 8) {
        __m256 a0 = _mm256_loadu_ps(acc + j);
        for (int t = 0; t < n_pos; t++)
            a0 = _mm256_fmadd_ps(_mm256_loadu_ps((const float *)(v + (size_t)t * stride) + j), _mm256_set1_ps(p[t]), a0);
        _mm256_storeu_ps(acc + j, a0);
    }
    for (; j < hd; j++)   /* memcpy: a row need not be 4-byte aligned (loadu above needs no alignment) */
        for (int t = 0; t < n_pos; t++) {
            float x;
            memcpy(&x, v + (size_t)t * stride + (size_t)j * sizeof x, sizeof x);
            acc[j] = fmaf(x, p[t], acc[j]);
        }
}

slm_kvq_mix_fn slm_kvq_mix_avx2(slm_kv_type t)
{
    return t == SLM_KV_Q8_0 ? mix_q8_0_avx2 : t == SLM_KV_Q4_0 ? mix_q4_0_avx2 : mix_f32_avx2;
}
