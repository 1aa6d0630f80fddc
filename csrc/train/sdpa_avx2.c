/* AVX2/FMA twins of sdpa.c's row kernels (same formulas; exp by exp_ps of
 * simd_avx2.h, within 2 ulp of expf; the softmax's sum in eight float
 * lanes instead of one double), tested against the generic ones in
 * tests/test_sdpa.c. A row has n entries, [a, b) visible; the last
 * (b - a) % 8 visible entries go through masked loads and stores. */
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

/* lanes 0..r-1 set (0 < r < 8): the tail of a row, loaded and stored with
 * masks instead of a scalar loop (rows of every length occur) */
static __m256i tail_mask(int r)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

float slm_sdpa_softmax_row_avx2(float *s, int n, int a, int b)
{
    float *x = s + a;
    const int m = b - a, r = m & 7, full = m - r;
    const __m256i mask = tail_mask(r);
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    __m256 vmx = ninf;
    for (int j = 0; j < full; j += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + j));
    /* masked lanes read as -inf: they take no part in the max and exp to 0 */
    const __m256 tail = r ? _mm256_blendv_ps(ninf, _mm256_maskload_ps(x + full, mask),
                                             _mm256_castsi256_ps(mask))
                          : ninf;
    vmx = _mm256_max_ps(vmx, tail);
    const float mx = hmax_ps(vmx);
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 acc = _mm256_setzero_ps();
    for (int j = 0; j < full; j += 8) {
        __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm));
        _mm256_storeu_ps(x + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    const __m256 et = exp_ps(_mm256_sub_ps(tail, vm));
    acc = _mm256_add_ps(acc, et);
    const float sum = hsum_ps(acc);
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    for (int j = 0; j < full; j += 8) _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(x + j), inv));
    if (r) _mm256_maskstore_ps(x + full, mask, _mm256_mul_ps(et, inv));
    zero_outside(s, n, a, b);
    return mx + logf(sum);
}

void slm_sdpa_probs_row_avx2(float *s, int n, int a, int b, float lse)
{
    float *x = s + a;
    const int m = b - a, r = m & 7, full = m - r;
    const __m256 vl = _mm256_set1_ps(lse);
    for (int j = 0; j < full; j += 8)
        _mm256_storeu_ps(x + j, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vl)));
    if (r) {
        const __m256i mask = tail_mask(r);
        _mm256_maskstore_ps(x + full, mask,
                            exp_ps(_mm256_sub_ps(_mm256_maskload_ps(x + full, mask), vl)));
    }
    zero_outside(s, n, a, b);
}

void slm_sdpa_dscore_row_avx2(float *ds, const float *p, int n, int a, int b, float delta)
{
    float *x = ds + a;
    const float *y = p + a;
    const int m = b - a, r = m & 7, full = m - r;
    const __m256 vd = _mm256_set1_ps(delta);
    for (int j = 0; j < full; j += 8)
        _mm256_storeu_ps(x + j, _mm256_mul_ps(_mm256_loadu_ps(y + j),
                                              _mm256_sub_ps(_mm256_loadu_ps(x + j), vd)));
    if (r) {
        const __m256i mask = tail_mask(r);
        _mm256_maskstore_ps(x + full, mask,
                            _mm256_mul_ps(_mm256_maskload_ps(y + full, mask),
                                          _mm256_sub_ps(_mm256_maskload_ps(x + full, mask), vd)));
    }
    zero_outside(ds, n, a, b);
}

#endif
