/* AVX-512 twins of ops.c's row operations whose scalar loops are latency
 * chains. slm_ops_layernorm_avx512: LayerNorm as ops.c computes it (mean
 * and variance summed in double, then (x - mean) * scale, * w, + b as
 * separate roundings), with the two sums taken in 16 double lanes instead
 * of one chain. Every term is a float widened to double (or the square of
 * one), so the sums differ from the generic chain only where a double
 * addition rounds; the floats they give agree to about 1e-7 relative, and
 * are most often the same (tests/test_ops_avx512.c). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>

#include "ops.h"

static inline __mmask16 tail(int64_t i, int64_t n)
{
    return n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
}

void slm_ops_layernorm_avx512(float *out, const float *x, const float *w, const float *b,
                              int64_t rows, int64_t n, float eps)
{
    for (int64_t r = 0; r < rows; r++, x += n, out += n) {
        __m512d s0 = _mm512_setzero_pd(), s1 = _mm512_setzero_pd();
        for (int64_t i = 0; i < n; i += 16) {
            __m512 v = _mm512_maskz_loadu_ps(tail(i, n), x + i);
            s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
            s1 = _mm512_add_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
        }
        const float mean = (float)(_mm512_reduce_add_pd(_mm512_add_pd(s0, s1)) / (double)n);
        const __m512 vm = _mm512_set1_ps(mean);
        s0 = s1 = _mm512_setzero_pd();
        for (int64_t i = 0; i < n; i += 16) {
            const __mmask16 k = tail(i, n);
            /* masked lanes: 0 - mean, zeroed before they are squared */
            __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + i), vm);
            __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
            __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(d, 1));
            s0 = _mm512_add_pd(s0, _mm512_mul_pd(lo, lo));
            s1 = _mm512_add_pd(s1, _mm512_mul_pd(hi, hi));
        }
        const double s2 = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
        const __m512 scale = _mm512_set1_ps(1.0f / sqrtf((float)(s2 / (double)n) + eps));
        for (int64_t i = 0; i < n; i += 16) {
            const __mmask16 k = tail(i, n);
            __m512 v = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm), scale);
            if (w) v = _mm512_mul_ps(v, _mm512_maskz_loadu_ps(k, w + i));
            if (b) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b + i));
            _mm512_mask_storeu_ps(out + i, k, v);
        }
    }
}

#endif
