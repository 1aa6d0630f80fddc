/* AVX2 twins of distill.c's vocabulary-wide passes: the tempered
 * exponentials of a row (max, exp, sum in double), the KL cross term and
 * the gradient update. Same formulas as the scalar passes; exp is exp_ps
 * (simd_avx2.h, within 2 ulp of expf) and the double sums are taken four
 * lanes at a time, so results agree with the scalar code to about 1e-6
 * relative (tests/test_distill.c). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>

#include "../kernels/simd_avx2.h"
#include "distill.h"

static inline double distill_hsum_pd(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

static inline float distill_max(const float *z, int64_t V)
{
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= V; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(z + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float m = _mm_cvtss_f32(m4);
    for (; i < V; i++) m = z[i] > m ? z[i] : m;
    return m;
}

/* acc += the 8 floats of v, widened to double */
static inline __m256d distill_acc(__m256d acc, __m256 v)
{
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

double slm_distill_tempered_avx2(const float *z, int64_t V, float invT, float *q, float *mx)
{
    const float m = distill_max(z, V);
    const __m256 vm = _mm256_set1_ps(m), vt = _mm256_set1_ps(invT);
    __m256d acc = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= V; i += 8) {
        const __m256 e = exp_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(z + i), vm), vt));
        _mm256_storeu_ps(q + i, e);
        acc = distill_acc(acc, e);
    }
    double s = 0;
    for (; i < V; i++) {
        q[i] = expf((z[i] - m) * invT);
        s += q[i];
    }
    *mx = m;
    return s + distill_hsum_pd(acc);
}

double slm_distill_pair_avx2(const float *zs, const float *zt, int64_t V, float invT, float *q, float *pt,
                             double *sq, double *st)
{
    float ms, mt;
    *sq = slm_distill_tempered_avx2(zs, V, invT, q, &ms);
    *st = slm_distill_tempered_avx2(zt, V, invT, pt, &mt);
    /* sum pt_i (b_i - a_i): the differences of the floats a, b taken in
     * double as the scalar pass does */
    const __m256 vms = _mm256_set1_ps(ms), vmt = _mm256_set1_ps(mt), vt = _mm256_set1_ps(invT);
    __m256d acc = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 8 <= V; i += 8) {
        const __m256 a = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(zs + i), vms), vt);
        const __m256 b = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(zt + i), vmt), vt);
        const __m256 p = _mm256_loadu_ps(pt + i);
        const __m256d dlo = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(b)),
                                          _mm256_cvtps_pd(_mm256_castps256_ps128(a)));
        const __m256d dhi = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(b, 1)),
                                          _mm256_cvtps_pd(_mm256_extractf128_ps(a, 1)));
        acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(p)), dlo));
        acc = _mm256_add_pd(acc, _mm256_mul_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(p, 1)), dhi));
    }
    double cross = 0;
    for (; i < V; i++) {
        const float a = (zs[i] - ms) * invT, b = (zt[i] - mt) * invT;
        cross += (double)pt[i] * ((double)b - (double)a);
    }
    return cross + distill_hsum_pd(acc);
}

void slm_distill_add_avx2(float *x, const float *q, float kq, const float *pt, float kt, int64_t V)
{
    const __m256 vq = _mm256_set1_ps(kq), vk = _mm256_set1_ps(kt);
    int64_t i = 0;
    if (pt) {
        /* no fused multiply-add: the scalar pass rounds each product */
        for (; i + 8 <= V; i += 8) {
            const __m256 d = _mm256_sub_ps(_mm256_mul_ps(vq, _mm256_loadu_ps(q + i)),
                                           _mm256_mul_ps(vk, _mm256_loadu_ps(pt + i)));
            _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), d));
        }
        for (; i < V; i++) x[i] += kq * q[i] - kt * pt[i];
    } else {
        for (; i + 8 <= V; i += 8)
            _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_mul_ps(vq, _mm256_loadu_ps(q + i))));
        for (; i < V; i++) x[i] += kq * q[i];
    }
}

#endif
