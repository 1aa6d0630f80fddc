/* AVX2/FMA twins of the ops whose scalar versions are dominated by libm
 * calls or by a double-precision sum (silu, gelu, softmax, rmsnorm). Same
 * formulas as ops.c; exp is evaluated by exp_ps (simd_avx2.h, within 2 ulp of
 * expf), so results agree with the generic ops to about 1e-6 relative
 * (tested in tests/test_kernels.c), like the reference's own vectorized
 * silu and softmax. Sums feeding a normalization stay in double. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>

#include "ops.h"
#include "simd_avx2.h"

void slm_ops_silu_avx2(float *out, const float *x, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), v));
        _mm256_storeu_ps(out + i, _mm256_div_ps(v, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++) out[i] = x[i] / (1.0f + expf(-x[i]));
}

/* 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)): the same function without the
 * cancellation of 1 + tanh(u) for negative x */
void slm_ops_gelu_avx2(float *out, const float *x, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f), m2c = _mm256_set1_ps(-2 * 0.79788456080286535588f);
    const __m256 a = _mm256_set1_ps(0.044715f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        /* -2u = -2 sqrt(2/pi) (x + 0.044715 x^3) */
        __m256 m2u = _mm256_mul_ps(_mm256_mul_ps(m2c, v), _mm256_fmadd_ps(_mm256_mul_ps(a, v), v, one));
        _mm256_storeu_ps(out + i, _mm256_div_ps(v, _mm256_add_ps(one, exp_ps(m2u))));
    }
    for (; i < n; i++)
        out[i] = 0.5f * x[i] * (1.0f + tanhf(0.79788456080286535588f * x[i] * (1.0f + 0.044715f * x[i] * x[i])));
}

/* slm_ops_gelu_f16 with F16C conversions: the same table lookups, so the
 * same bits */
void slm_ops_gelu_f16_avx2(float *out, const float *x, int64_t n, const slm_f16 *table)
{
    const __m256 lo = _mm256_set1_ps(-10.0f), hi = _mm256_set1_ps(10.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 v = _mm256_loadu_ps(x + i);
        uint16_t h[8], g[8];
        _mm_storeu_si128((__m128i *)h, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
        for (int j = 0; j < 8; j++) g[j] = table[h[j]];
        __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g));
        /* x <= -10: 0; x >= 10: x */
        y = _mm256_blendv_ps(y, v, _mm256_cmp_ps(v, hi, _CMP_GE_OQ));
        y = _mm256_andnot_ps(_mm256_cmp_ps(v, lo, _CMP_LE_OQ), y);
        _mm256_storeu_ps(out + i, y);
    }
    for (; i < n; i++) {
        const float v = x[i];
        out[i] = v <= -10.0f ? 0.0f : v >= 10.0f ? v : slm_f16_to_f32(table[slm_f32_to_f16(v)]);
    }
}

/* sum of the 8 lanes of v into a double accumulator pair */
static inline __m256d add_pd8(__m256d acc, __m256 v)
{
    acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
    return _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
}

static inline double hsum_pd(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

void slm_ops_softmax_avx2(float *x, int64_t rows, int64_t n)
{
    for (int64_t r = 0; r < rows; r++, x += n) {
        __m256 vmax = _mm256_set1_ps(-INFINITY);
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
        float max = _mm_cvtss_f32(m4);
        for (; i < n; i++) max = x[i] > max ? x[i] : max;
        if (max == -INFINITY) {          /* fully masked row */
            for (i = 0; i < n; i++) x[i] = 0;
            continue;
        }
        __m256 vm = _mm256_set1_ps(max);
        __m256d acc = _mm256_setzero_pd();
        double sum = 0;
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
            _mm256_storeu_ps(x + i, e);
            acc = add_pd8(acc, e);
        }
        for (; i < n; i++) {
            x[i] = expf(x[i] - max);
            sum += x[i];
        }
        sum += hsum_pd(acc);
        const __m256 inv = _mm256_set1_ps((float)(1.0 / sum));
        for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), inv));
        for (; i < n; i++) x[i] *= (float)(1.0 / sum);
    }
}

void slm_ops_rmsnorm_avx2(float *out, const float *x, const float *w, int64_t rows,
                          int64_t n, float eps)
{
    for (int64_t r = 0; r < rows; r++, x += n, out += n) {
        /* squares are exact in double: the sum matches the generic one up
         * to the order of the additions */
        __m256d acc0 = _mm256_setzero_pd(), acc1 = _mm256_setzero_pd();
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
            __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
            acc0 = _mm256_fmadd_pd(lo, lo, acc0);
            acc1 = _mm256_fmadd_pd(hi, hi, acc1);
        }
        double ss = hsum_pd(_mm256_add_pd(acc0, acc1));
        for (; i < n; i++) ss += (double)x[i] * x[i];
        const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
        const __m256 vs = _mm256_set1_ps(scale);
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + i), vs);
            if (w) v = _mm256_mul_ps(v, _mm256_loadu_ps(w + i));
            _mm256_storeu_ps(out + i, v);
        }
        for (; i < n; i++) out[i] = w ? x[i] * scale * w[i] : x[i] * scale;
    }
}

#endif
