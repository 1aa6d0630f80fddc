/* AVX2/FMA twins of sdpa.c's row kernels (same formulas; exp by exp_ps of
 * simd_avx2.h, within 2 ulp of expf; the softmax's sum in eight float
 * lanes instead of one double), tested against the generic ones in
 * tests/test_sdpa.c. A row has n entries, [a, b) visible. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../kernels/simd_avx2.h"
#include "sdpa.h"

/* the masked entries of a row: [0, a) and [b, n) */
static void zero_outside(float *s, int n, int a, int b)
{
    memset(s, 0, (size_t)a * sizeof *s);
    memset(s + b, 0, (size_t)(n - b) * sizeof *s);
}

static float hmax_ps(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

float slm_sdpa_softmax_row_avx2(float *s, int n, int a, int b)
{
    float *x = s + a;
    const int m = b - a;
    int j = 0;
    __m256 vmx = _mm256_set1_ps(-INFINITY);
    for (; j + 8 <= m; j += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + j));
    float mx = hmax_ps(vmx);
    for (; j < m; j++) mx = x[j] > mx ? x[j] : mx;
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (j = 0; j + 8 <= m; j += 8) {
        __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
        _mm256_storeu_ps(x + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = hsum_ps(acc);
    for (; j < m; j++) {
        x[j] = expf(x[j] - mx);
        sum += x[j];
    }
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (j = 0; j + 8 <= m; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
    for (; j < m; j++) x[j] *= 1.0f / sum;
    zero_outside(s, n, a, b);
    return mx + logf(sum);
}

void slm_sdpa_probs_row_avx2(float *s, int n, int a, int b, float lse)
{
    float *x = s + a;
    const int m = b - a;
    const __m256 vl = _mm256_set1_ps(lse);
    int j = 0;
    for (; j + 8 <= m; j += 8)
        _mm256_storeu_ps(x + j, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vl)));
    for (; j < m; j++) x[j] = expf(x[j] - lse);
    zero_outside(s, n, a, b);
}

void slm_sdpa_dscore_row_avx2(float *ds, const float *p, int n, int a, int b, float delta)
{
    float *x = ds + a;
    const float *y = p + a;
    const int m = b - a;
    const __m256 vd = _mm256_set1_ps(delta);
    int j = 0;
    for (; j + 8 <= m; j += 8)
        _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(y + j),
                                              _mm256_sub_ps(_mm256_loadu_ps(x + j), vd)));
    for (; j < m; j++) x[j] = y[j] * (x[j] - delta);
    zero_outside(ds, n, a, b);
}

#endif
