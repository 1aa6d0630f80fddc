/* AVX2 twins of the grad.c loops bound by exp or by sqrt and division:
 * the activations' backward and the softmax-cross-entropy row, and the
 * double-precision sums of the RMSNorm backward (which scalar code cannot
 * vectorize without reordering them).
 * Same formulas and the same order of operations as the scalar versions,
 * without fused multiply-adds; exp is exp_ps (simd_avx2.h, within 2 ulp of
 * expf), so the activations and the loss agree with the scalar code to
 * about 1e-6 relative, the RMSNorm weight gradient bit for bit
 * (tests/test_grad.c). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../kernels/simd_avx2.h"
#include "grad.h"

#define SQRT_2_OVER_PI 0.79788456080286535588f
#define GELU_A 0.044715f
#define EXP_MAX 88.0f

/* v, plus the old values at p when accumulating */
static inline __m256 plus_old(const float *p, __m256 v, int accumulate)
{
    return accumulate ? _mm256_add_ps(_mm256_loadu_ps(p), v) : v;
}

/* silu'(z) = s + z s (e s), s = 1 / (1 + e), e = e^-z (grad.c) */
static inline void silu_parts(__m256 z, __m256 *act, __m256 *dact)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    const __m256 e = exp_ps(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), z), _mm256_set1_ps(EXP_MAX)));
    const __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, e));
    *act = _mm256_mul_ps(z, s);
    *dact = _mm256_add_ps(s, _mm256_mul_ps(_mm256_mul_ps(z, s), _mm256_mul_ps(e, s)));
}

/* gelu(z) = z q, gelu'(z) = q + 2 z q (e q) k (1 + 3 a z^2),
 * q = 1 / (1 + e), e = e^-2y, y = k z (1 + a z^2) (grad.c) */
static inline void gelu_parts(__m256 z, __m256 *act, __m256 *dact)
{
    const __m256 one = _mm256_set1_ps(1.0f), k = _mm256_set1_ps(SQRT_2_OVER_PI);
    const __m256 z2 = _mm256_mul_ps(z, z);
    const __m256 y = _mm256_mul_ps(_mm256_mul_ps(k, z), _mm256_add_ps(one, _mm256_mul_ps(_mm256_set1_ps(GELU_A), z2)));
    const __m256 e = exp_ps(_mm256_min_ps(_mm256_mul_ps(_mm256_set1_ps(-2.0f), y), _mm256_set1_ps(EXP_MAX)));
    const __m256 q = _mm256_div_ps(one, _mm256_add_ps(one, e));
    *act = _mm256_mul_ps(z, q);
    __m256 d = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(2.0f), z), q);
    d = _mm256_mul_ps(_mm256_mul_ps(d, _mm256_mul_ps(e, q)), k);
    d = _mm256_mul_ps(d, _mm256_add_ps(one, _mm256_mul_ps(_mm256_set1_ps(3.0f * GELU_A), z2)));
    *dact = _mm256_add_ps(q, d);
}

/* A tail of n % 8 elements goes through padded blocks on the stack (a
 * full load would read past the buffers). Every element is loaded before
 * any is stored, so an output may be one of the inputs. */
static void glu_bwd(float *dg, float *du, const float *dout, const float *g, const float *u, int64_t n,
                    int accumulate, int gelu)
{
    for (int64_t i = 0; i < n; i += 8) {
        float tg[8] = {0}, tu[8] = {0}, td[8] = {0}, og[8] = {0}, ou[8] = {0};
        const float *pg = g + i, *pu = u + i, *pd = dout + i;
        float *qg = dg + i, *qu = du + i;
        const int64_t m = n - i;
        if (m < 8) {
            memcpy(tg, pg, (size_t)m * sizeof(float));
            memcpy(tu, pu, (size_t)m * sizeof(float));
            memcpy(td, pd, (size_t)m * sizeof(float));
            if (accumulate) {
                memcpy(og, qg, (size_t)m * sizeof(float));
                memcpy(ou, qu, (size_t)m * sizeof(float));
            }
            pg = tg; pu = tu; pd = td; qg = og; qu = ou;
        }
        const __m256 z = _mm256_loadu_ps(pg), uu = _mm256_loadu_ps(pu), d = _mm256_loadu_ps(pd);
        __m256 act, dact;
        if (gelu) gelu_parts(z, &act, &dact);
        else silu_parts(z, &act, &dact);
        const __m256 rg = plus_old(qg, _mm256_mul_ps(_mm256_mul_ps(d, uu), dact), accumulate);
        const __m256 ru = plus_old(qu, _mm256_mul_ps(d, act), accumulate);
        _mm256_storeu_ps(qg, rg);
        _mm256_storeu_ps(qu, ru);
        if (m < 8) {
            memcpy(dg + i, og, (size_t)m * sizeof(float));
            memcpy(du + i, ou, (size_t)m * sizeof(float));
        }
    }
}

void slm_grad_swiglu_bwd_avx2(float *dg, float *du, const float *dout, const float *g,
                              const float *u, int64_t n, int accumulate)
{
    glu_bwd(dg, du, dout, g, u, n, accumulate, 0);
}

void slm_grad_geglu_bwd_avx2(float *dg, float *du, const float *dout, const float *g,
                             const float *u, int64_t n, int accumulate)
{
    glu_bwd(dg, du, dout, g, u, n, accumulate, 1);
}

static void act_bwd(float *dx, const float *dy, const float *x, int64_t n, int accumulate, int gelu)
{
    for (int64_t i = 0; i < n; i += 8) {
        float tx[8] = {0}, td[8] = {0}, o[8] = {0};
        const float *px = x + i, *pd = dy + i;
        float *q = dx + i;
        const int64_t m = n - i;
        if (m < 8) {
            memcpy(tx, px, (size_t)m * sizeof(float));
            memcpy(td, pd, (size_t)m * sizeof(float));
            if (accumulate) memcpy(o, q, (size_t)m * sizeof(float));
            px = tx; pd = td; q = o;
        }
        __m256 act, dact;
        if (gelu) gelu_parts(_mm256_loadu_ps(px), &act, &dact);
        else silu_parts(_mm256_loadu_ps(px), &act, &dact);
        _mm256_storeu_ps(q, plus_old(q, _mm256_mul_ps(_mm256_loadu_ps(pd), dact), accumulate));
        if (m < 8) memcpy(dx + i, o, (size_t)m * sizeof(float));
    }
}

void slm_grad_silu_bwd_avx2(float *dx, const float *dy, const float *x, int64_t n, int accumulate)
{
    act_bwd(dx, dy, x, n, accumulate, 0);
}

void slm_grad_gelu_bwd_avx2(float *dx, const float *dy, const float *x, int64_t n, int accumulate)
{
    act_bwd(dx, dy, x, n, accumulate, 1);
}

/* --- RMSNorm ---------------------------------------------------------------- */

static inline double hsum_pd(__m256d v)
{
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

/* grad.c's rows pass on rows [0, rows): the sum of squares in the order of
 * slm_ops_rmsnorm_avx2 (two double accumulators, then the tail), so r is
 * the AVX2 forward's bits; g . x in double likewise */
void slm_grad_rms_rows_avx2(float *dx, float *r, const float *dy, const float *x, const float *w, int64_t rows,
                            int64_t n, float eps, int accumulate)
{
    for (int64_t row = 0; row < rows; row++, x += n, dy += n) {
        __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
        __m256d g0 = _mm256_setzero_pd(), g1 = _mm256_setzero_pd();
        int64_t i = 0;
        for (; i + 8 <= n; i += 8) {
            const __m256 v = _mm256_loadu_ps(x + i);
            const __m256d lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
            const __m256d hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
            s0 = _mm256_fmadd_pd(lo, lo, s0);
            s1 = _mm256_fmadd_pd(hi, hi, s1);
            __m256 g = _mm256_loadu_ps(dy + i);
            if (w) g = _mm256_mul_ps(g, _mm256_loadu_ps(w + i));
            g0 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(g)), lo, g0);
            g1 = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(g, 1)), hi, g1);
        }
        double ss = hsum_pd(_mm256_add_pd(s0, s1)), gx = hsum_pd(_mm256_add_pd(g0, g1));
        for (int64_t j = i; j < n; j++) {
            ss += (double)x[j] * x[j];
            gx += (double)(w ? dy[j] * w[j] : dy[j]) * x[j];
        }
        const float rs = 1.0f / sqrtf((float)(ss / (double)n) + eps);
        r[row] = rs;
        if (!dx) continue;
        const float k = (float)((double)rs * rs * rs * gx / (double)n);
        float *d = dx + row * n;
        const __m256 vr = _mm256_set1_ps(rs), vk = _mm256_set1_ps(k);
        for (i = 0; i + 8 <= n; i += 8) {
            __m256 g = _mm256_loadu_ps(dy + i);
            if (w) g = _mm256_mul_ps(g, _mm256_loadu_ps(w + i));
            __m256 v = _mm256_sub_ps(_mm256_mul_ps(vr, g), _mm256_mul_ps(vk, _mm256_loadu_ps(x + i)));
            if (accumulate) v = _mm256_add_ps(_mm256_loadu_ps(d + i), v);
            _mm256_storeu_ps(d + i, v);
        }
        for (; i < n; i++) {
            const float g = w ? dy[i] * w[i] : dy[i];
            const float v = rs * g - k * x[i];
            d[i] = accumulate ? d[i] + v : v;
        }
    }
}

/* dw[c0..c1) += sum over rows of dy (x r), each column's sum in double in
 * row order: a float product is exact in double, so the fused multiply-add
 * rounds as the scalar loop's add does (the same bits) */
void slm_grad_rms_cols_avx2(float *dw, const float *dy, const float *x, const float *r, int64_t rows, int64_t n,
                            int64_t c0, int64_t c1)
{
    double acc[256] __attribute__((aligned(32)));
    for (int64_t j0 = c0; j0 < c1; j0 += 256) {
        const int64_t m = c1 - j0 < 256 ? c1 - j0 : 256;
        memset(acc, 0, sizeof acc);
        for (int64_t row = 0; row < rows; row++) {
            const float *xr = x + row * n + j0, *d = dy + row * n + j0;
            const float rs = r[row];
            const __m256 vr = _mm256_set1_ps(rs);
            int64_t j = 0;
            for (; j + 8 <= m; j += 8) {
                const __m256 xs = _mm256_mul_ps(_mm256_loadu_ps(xr + j), vr), dv = _mm256_loadu_ps(d + j);
                const __m256d lo = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(dv)),
                                                   _mm256_cvtps_pd(_mm256_castps256_ps128(xs)), _mm256_load_pd(acc + j));
                const __m256d hi = _mm256_fmadd_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(dv, 1)),
                                                   _mm256_cvtps_pd(_mm256_extractf128_ps(xs, 1)), _mm256_load_pd(acc + j + 4));
                _mm256_store_pd(acc + j, lo);
                _mm256_store_pd(acc + j + 4, hi);
            }
            for (; j < m; j++) acc[j] += (double)d[j] * (xr[j] * rs);
        }
        for (int64_t j = 0; j < m; j++) dw[j0 + j] += (float)acc[j];
    }
}

/* --- softmax-cross-entropy row --------------------------------------------- */

double slm_grad_xent_row_avx2(float *x, int64_t V, int32_t t, float scale)
{
    if (t < 0) {
        memset(x, 0, (size_t)V * sizeof(float));
        return 0.0;
    }
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    int64_t i = 0;
    for (; i + 8 <= V; i += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmax), _mm256_extractf128_ps(vmax, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    const double xt = (double)x[t] - mx;
    const __m256 vm = _mm256_set1_ps(mx);
    __m256d acc = _mm256_setzero_pd();
    double sum = 0;
    for (i = 0; i + 8 <= V; i += 8) {
        const __m256 e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    for (; i < V; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    sum += hsum_pd(acc);
    const float k = (float)((double)scale / sum);
    const double pt = (double)x[t] / sum;
    const __m256 vk = _mm256_set1_ps(k);
    for (i = 0; i + 8 <= V; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vk));
    for (; i < V; i++) x[i] *= k;
    x[t] = (float)((pt - 1.0) * scale);
    return log(sum) - xt;
}

#endif
