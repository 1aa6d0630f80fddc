/* AVX2/FMA twins of mamba_grad_scan.c's kernels: a channel's d_state
 * lanes in 8-wide vectors (d_state a multiple of 8, the callers check).
 *
 * The forward scan is blocks/mamba_avx2.c's slm_mamba_scan_avx2 with δ
 * given: its exp, s e + B (x δ) in one FMA, the C dot summed lane-wise, so
 * the same floats. The backward recomputes a chunk's states with that
 * expression, so they are the floats the forward made; its sums over the
 * lanes (dx, dδ) are lane-wise, so it differs from the generic backward by
 * rounding only (tested in tests/test_mamba_grad.c). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../blocks/mamba.h"
#include "../blocks/mamba_avx2.h"
#include "../kernels/simd_avx2.h"
#include "mamba_grad.h"


void slm_mamba_grad_scan_avx2(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                              const float *delta, int64_t ld_d, const float *A, const float *bc,
                              int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0, int64_t c1)
{
    /* inference's loop, its softplus left out */
    slm_mamba_scan_avx2_ex(y, ld_y, state, x, ld_x, delta, ld_d, A, bc, ld_bc, D, n, d_state, c0, c1, 0);
}

void slm_mamba_grad_scan_back_avx2(const slm_mamba_grad_scan_args *a, int64_t c0, int64_t c1)
{
    const int64_t S = a->d_state, K = a->K;
    /* the generic kernel's buffer layout */
    float *st = a->buf, *ex = st + (K + 1) * S, *ds = ex + K * S, *gA = ds + S;
    const int64_t n_chunk = (a->n + K - 1) / K;
    for (int64_t i = c0; i < c1; i++) {
        const float *Ai = a->A + i * S;
        memset(ds, 0, (size_t)S * sizeof(float));
        memset(gA, 0, (size_t)S * sizeof(float));
        float gD = 0.0f;
        for (int64_t c = n_chunk - 1; c >= 0; c--) {
            const int64_t t0 = c * K, m = a->n - t0 < K ? a->n - t0 : K;
            if (c == 0) memset(st, 0, (size_t)S * sizeof(float));
            else memcpy(st, a->ckpt + (c - 1) * a->ld_ckpt + i * S, (size_t)S * sizeof(float));
            for (int64_t l = 0; l < m; l++) {
                const int64_t t = t0 + l;
                const float d = a->delta[t * a->ld_d + i];
                const __m256 vd = _mm256_set1_ps(d), vxd = _mm256_set1_ps(a->x[t * a->ld_x + i] * d);
                const float *B = a->bc + t * a->ld_bc;
                for (int64_t j = 0; j < S; j += 8) {
                    const __m256 e = slm_mamba_exp_avx2(_mm256_mul_ps(vd, _mm256_loadu_ps(Ai + j)));
                    _mm256_storeu_ps(ex + l * S + j, e);
                    _mm256_storeu_ps(st + (l + 1) * S + j,
                                     _mm256_fmadd_ps(_mm256_loadu_ps(st + l * S + j), e,
                                                     _mm256_mul_ps(_mm256_loadu_ps(B + j), vxd)));
                }
            }
            for (int64_t l = m - 1; l >= 0; l--) {
                const int64_t t = t0 + l;
                const float dy = a->dy[t * a->ld_dy + i], xi = a->x[t * a->ld_x + i];
                const float d = a->delta[t * a->ld_d + i];
                const __m256 vdy = _mm256_set1_ps(dy), vxi = _mm256_set1_ps(xi), vd = _mm256_set1_ps(d),
                             vxd = _mm256_set1_ps(xi * d);
                const float *B = a->bc + t * a->ld_bc, *C = B + S;
                float *dB = a->dbc + t * a->ld_dbc, *dC = dB + S;
                const float *s0 = st + l * S, *s1 = s0 + S, *e = ex + l * S;
                __m256 vdx = _mm256_setzero_ps(), vdd = _mm256_setzero_ps();
                gD += dy * xi;
                for (int64_t j = 0; j < S; j += 8) {
                    const __m256 vB = _mm256_loadu_ps(B + j), ve = _mm256_loadu_ps(e + j);
                    _mm256_storeu_ps(dC + j, _mm256_fmadd_ps(vdy, _mm256_loadu_ps(s1 + j), _mm256_loadu_ps(dC + j)));
                    const __m256 g = _mm256_fmadd_ps(vdy, _mm256_loadu_ps(C + j), _mm256_loadu_ps(ds + j));
                    const __m256 se = _mm256_mul_ps(_mm256_loadu_ps(s0 + j), ve);
                    _mm256_storeu_ps(dB + j, _mm256_fmadd_ps(g, vxd, _mm256_loadu_ps(dB + j)));
                    vdx = _mm256_fmadd_ps(g, vB, vdx);
                    vdd = _mm256_fmadd_ps(g, _mm256_fmadd_ps(se, _mm256_loadu_ps(Ai + j), _mm256_mul_ps(vB, vxi)), vdd);
                    _mm256_storeu_ps(gA + j, _mm256_fmadd_ps(_mm256_mul_ps(g, se), vd, _mm256_loadu_ps(gA + j)));
                    _mm256_storeu_ps(ds + j, _mm256_mul_ps(g, ve));
                }
                a->dx[t * a->ld_dx + i] = dy * a->D[i] + hsum_ps(vdx) * d;
                a->ddt[t * a->ld_ddt + i] = hsum_ps(vdd) * a->sig[t * a->ld_d + i];
            }
        }
        for (int64_t j = 0; j < S; j++) a->dA[i * S + j] += gA[j];
        a->dD[i] += gD;
    }
}

/* 1 / (1 + exp(-x)) with the scan's exp */
void slm_mamba_grad_sigmoid_avx2(float *out, const float *x, int64_t n)
{
    const __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 e = slm_mamba_exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(x + i)));
        _mm256_storeu_ps(out + i, _mm256_div_ps(one, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++) out[i] = 1.0f / (1.0f + expf(-x[i]));
}

#endif
