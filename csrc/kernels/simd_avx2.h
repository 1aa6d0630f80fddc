/* Small AVX2 helpers shared by the *_avx2.c kernel files (include only
 * from files compiled with -mavx2 -mfma -mf16c). */
#ifndef SLM_SIMD_AVX2_H
#define SLM_SIMD_AVX2_H

#include <immintrin.h>

#include "../core/fp16.h"

/* (s0 + s2) + (s1 + s3), s_i = v_i + v_{i+4}: the reference's hsum */
static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline __m256 load_f16x8(const void *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

static inline __m256 load_bf16x8(const void *p)
{
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

#endif
