/* AVX2/FMA twin of the RWKV-7 WKV recurrence for heads h0..h1-1 (the
 * generic loop is wkv7_heads in rwkv.c). The generic loop's two sums per
 * state row (sa = a . S[i], y[i] = S'[i] . r) are chains of dependent
 * scalar adds the compiler may not reorder; here they run 8 lanes wide
 * (hs a multiple of 8), and the update S[i][j] w[j] + v[i] k[j] + sa b[j]
 * is two FMAs. Per token of the 0.1B model (12 heads of 64) that is the
 * bulk of the time mix outside the matmuls.
 *
 * Same recurrence and order of tokens, heads and rows; the sums are taken
 * lane-wise and the update fused, so results differ from the generic loop
 * by rounding only (tests/test_rwkv.c checks both against a double
 * reference and against each other). */
#if defined(__x86_64__)

#include <immintrin.h>

#include "../kernels/simd_avx2.h"
#include "rwkv_internal.h"

void slm_rwkv_wkv7_heads_avx2(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim,
                              const float *r, const float *w, const float *k, const float *v,
                              const float *a, const float *b, float *S, float *y)
{
    for (int t = 0; t < n; t++) {
        size_t to = (size_t)t * dim;
        for (int64_t h = h0; h < h1; h++) {
            size_t ho = to + (size_t)(h * hs);
            float *Sh = S + (size_t)(h * hs) * (size_t)hs;
            const float *rt = r + ho, *wt = w + ho, *kt = k + ho, *vt = v + ho;
            const float *at = a + ho, *bt = b + ho;
            for (int64_t i = 0; i < hs; i++) {
                float *Si = Sh + (size_t)(i * hs);
                __m256 acc = _mm256_setzero_ps();
                for (int64_t j = 0; j < hs; j += 8)
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(at + j), _mm256_loadu_ps(Si + j), acc);
                const __m256 sa = _mm256_set1_ps(hsum_ps(acc)), vi = _mm256_set1_ps(vt[i]);
                __m256 yacc = _mm256_setzero_ps();
                for (int64_t j = 0; j < hs; j += 8) {
                    __m256 u = _mm256_fmadd_ps(vi, _mm256_loadu_ps(kt + j),
                                               _mm256_mul_ps(sa, _mm256_loadu_ps(bt + j)));
                    __m256 s = _mm256_fmadd_ps(_mm256_loadu_ps(Si + j), _mm256_loadu_ps(wt + j), u);
                    _mm256_storeu_ps(Si + j, s);
                    yacc = _mm256_fmadd_ps(s, _mm256_loadu_ps(rt + j), yacc);
                }
                y[ho + i] = hsum_ps(yacc);
            }
        }
    }
}

#endif
