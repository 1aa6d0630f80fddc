/* AVX2/FMA twin of the WKV-7 step backward (slm_rwkv7_wkv_back_step_generic
 * in rwkv7_heads.c, whose comment has the formulas), for head sizes that
 * are a multiple of 8. Per state row i the generic loop takes three sums
 * over j (sa, dsa, dv[i]) as chains of dependent scalar adds; here they run
 * 8 lanes wide, and the updates of the gradient rows are FMAs. Same
 * operations per element otherwise, so the results differ from the
 * generic loop by rounding only (tests/test_rwkv7_grad.c compares both). */
#if defined(__x86_64__)

#include <immintrin.h>

#include "../kernels/simd_avx2.h"
#include "rwkv7_grad_internal.h"

void slm_rwkv7_wkv_back_step_avx2(int64_t n, const float *Sp, const float *Sn, float *dS,
                                  const float *r, const float *w, const float *k, const float *v,
                                  const float *na, const float *nb, const float *dy, float *dr,
                                  float *dw, float *dk, float *dv, float *dna, float *dnb)
{
    for (int64_t i = 0; i < n; i++) {
        const float *Spi = Sp + (size_t)(i * n), *Sni = Sn + (size_t)(i * n);
        float *G = dS + (size_t)(i * n);
        __m256 acc = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j += 8)
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(na + j), _mm256_loadu_ps(Spi + j), acc);
        const __m256 sa = _mm256_set1_ps(hsum_ps(acc)), dyi = _mm256_set1_ps(dy[i]);
        __m256 dsa_acc = _mm256_setzero_ps(), dv_acc = _mm256_setzero_ps();
        for (int64_t j = 0; j < n; j += 8) {
            const __m256 g = _mm256_fmadd_ps(dyi, _mm256_loadu_ps(r + j), _mm256_loadu_ps(G + j));
            _mm256_storeu_ps(G + j, g);
            _mm256_storeu_ps(dr + j, _mm256_fmadd_ps(_mm256_loadu_ps(Sni + j), dyi, _mm256_loadu_ps(dr + j)));
            dsa_acc = _mm256_fmadd_ps(g, _mm256_loadu_ps(nb + j), dsa_acc);
            dv_acc = _mm256_fmadd_ps(g, _mm256_loadu_ps(k + j), dv_acc);
        }
        dv[i] += hsum_ps(dv_acc);
        const __m256 dsa = _mm256_set1_ps(hsum_ps(dsa_acc)), vi = _mm256_set1_ps(v[i]);
        for (int64_t j = 0; j < n; j += 8) {
            const __m256 g = _mm256_loadu_ps(G + j), sp = _mm256_loadu_ps(Spi + j);
            _mm256_storeu_ps(dw + j, _mm256_fmadd_ps(g, sp, _mm256_loadu_ps(dw + j)));
            _mm256_storeu_ps(dk + j, _mm256_fmadd_ps(g, vi, _mm256_loadu_ps(dk + j)));
            _mm256_storeu_ps(dnb + j, _mm256_fmadd_ps(g, sa, _mm256_loadu_ps(dnb + j)));
            _mm256_storeu_ps(dna + j, _mm256_fmadd_ps(dsa, sp, _mm256_loadu_ps(dna + j)));
            _mm256_storeu_ps(G + j, _mm256_fmadd_ps(g, _mm256_loadu_ps(w + j),
                                                    _mm256_mul_ps(dsa, _mm256_loadu_ps(na + j))));
        }
    }
}

#endif
