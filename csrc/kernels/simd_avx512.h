/* Small AVX-512 helpers shared by the *_avx512.c kernel files (include
 * only from files compiled with the AVX-512 flags): e^x, the 16 x 16
 * in-register transpose and tail masks. One copy, so that the kernels that
 * use them (RWKV-7's per-head steps, sgemm's packing, the attention over
 * the F16 cache) cannot drift apart. */
#ifndef SLM_SIMD_AVX512_H
#define SLM_SIMD_AVX512_H

#include <immintrin.h>
#include <stdint.h>

/* e^x as exp_ps (simd_avx2.h): x = n ln2 + r, |r| <= ln2/2, e^r by its
 * Taylor polynomial to degree 7, times 2^n by scalef (which gives 0 below
 * and inf above the range without special cases). Within 2 ulp of expf;
 * lane-wise, so an element's result does not depend on its lane. */
static inline __m512 slm_exp16(__m512 x)
{
    const __m512 lo = _mm512_set1_ps(-104.0f), hi = _mm512_set1_ps(89.0f);
    __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    /* ln2 split in two so that n * ln2_hi is exact */
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* lanes of the 16 elements from i on that are below n */
static inline __mmask16 slm_tail16(int64_t i, int64_t n)
{
    return n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
}

/* In-register transpose of 16 rows of 16 floats: on return r[k] holds
 * element k of rows 0..15 (in lanes 0..15). Three stages: 2x2 blocks of
 * floats (unpack ps), of pairs (unpack pd), then of 128-bit lanes. Exact
 * (moves only). */
static inline __attribute__((always_inline)) void slm_transpose16(__m512 r[16])
{
    __m512 t[16];
    _Pragma("GCC unroll 8") for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* r[4i + j], 128-bit lane L: element 4L + j of rows 4i..4i+3 */
    _Pragma("GCC unroll 4") for (int i = 0; i < 4; i++) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
        const __m512 e0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0x88);      /* lanes 0, 2 */
        const __m512 o0 = _mm512_shuffle_f32x4(r[j], r[4 + j], 0xDD);      /* lanes 1, 3 */
        const __m512 e1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0x88);
        const __m512 o1 = _mm512_shuffle_f32x4(r[8 + j], r[12 + j], 0xDD);
        t[j] = _mm512_shuffle_f32x4(e0, e1, 0x88);       /* k = j */
        t[8 + j] = _mm512_shuffle_f32x4(e0, e1, 0xDD);   /* k = 8 + j */
        t[4 + j] = _mm512_shuffle_f32x4(o0, o1, 0x88);   /* k = 4 + j */
        t[12 + j] = _mm512_shuffle_f32x4(o0, o1, 0xDD);  /* k = 12 + j */
    }
    _Pragma("GCC unroll 16") for (int k = 0; k < 16; k++) r[k] = t[k];
}

#endif
