/* The selective scan of the Mamba-1 mixer for training: the forward with δ
 * given (inference's own loop, blocks/mamba.c, without its softplus), the
 * backward through one sequence, and the sigmoid rows of the backward's
 * gates (formulas in mamba_grad.h). Portable versions here, AVX2 twins in
 * mamba_grad_avx2.c, picked at run time. */
#include <math.h>
#include <string.h>

#include "../kernels/vecdot.h"
#include "../blocks/mamba.h"
#include "mamba_grad.h"

void slm_mamba_grad_scan_generic(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                                 const float *delta, int64_t ld_d, const float *A, const float *bc,
                                 int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0, int64_t c1)
{
    /* inference's loop, its softplus left out */
    slm_mamba_scan_generic_ex(y, ld_y, state, x, ld_x, delta, ld_d, A, bc, ld_bc, D, n, d_state, c0, c1, 0);
}

void slm_mamba_grad_scan(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                         const float *delta, int64_t ld_d, const float *A, const float *bc, int64_t ld_bc,
                         const float *D, int n, int64_t d_state, int64_t c0, int64_t c1)
{
#if defined(__x86_64__)
    /* the condition of slm_mamba_scan, so that both take the same path */
    if (d_state % 8 == 0 && slm_kernels_use_avx2()) {
        slm_mamba_grad_scan_avx2(y, ld_y, state, x, ld_x, delta, ld_d, A, bc, ld_bc, D, n, d_state, c0, c1);
        return;
    }
#endif
    slm_mamba_grad_scan_generic(y, ld_y, state, x, ld_x, delta, ld_d, A, bc, ld_bc, D, n, d_state, c0, c1);
}

void slm_mamba_grad_scan_back_generic(const slm_mamba_grad_scan_args *a, int64_t c0, int64_t c1)
{
    const int64_t S = a->d_state, K = a->K;
    float *st = a->buf;               /* (K + 1, S): s before the chunk, then after each token */
    float *ex = st + (K + 1) * S;     /* (K, S): exp(δ A) of each token */
    float *ds = ex + K * S;           /* (S): gradient of the state after the current token */
    float *gA = ds + S;               /* (S): this channel's dA */
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
            /* the chunk's states again, with the forward's expression */
            for (int64_t l = 0; l < m; l++) {
                const int64_t t = t0 + l;
                const float d = a->delta[t * a->ld_d + i];
                const float xd = a->x[t * a->ld_x + i] * d;
                const float *B = a->bc + t * a->ld_bc, *s0 = st + l * S;
                float *s1 = st + (l + 1) * S, *e = ex + l * S;
                for (int64_t j = 0; j < S; j++) {
                    e[j] = expf(d * Ai[j]);
                    s1[j] = s0[j] * e[j] + B[j] * xd;
                }
            }
            /* backwards through the chunk */
            for (int64_t l = m - 1; l >= 0; l--) {
                const int64_t t = t0 + l;
                const float dy = a->dy[t * a->ld_dy + i], xi = a->x[t * a->ld_x + i];
                const float d = a->delta[t * a->ld_d + i], xd = xi * d;
                const float *B = a->bc + t * a->ld_bc, *C = B + S;
                float *dB = a->dbc + t * a->ld_dbc, *dC = dB + S;
                const float *s0 = st + l * S, *s1 = s0 + S, *e = ex + l * S;
                float dxs = 0.0f, dd = 0.0f;
                gD += dy * xi;
                for (int64_t j = 0; j < S; j++) {
                    dC[j] += dy * s1[j];
                    const float g = ds[j] + dy * C[j];   /* d loss / d s_t */
                    const float se = s0[j] * e[j];
                    dB[j] += g * xd;
                    dxs += g * B[j];
                    dd += g * (se * Ai[j] + B[j] * xi);
                    gA[j] += g * se * d;
                    ds[j] = g * e[j];
                }
                a->dx[t * a->ld_dx + i] = dy * a->D[i] + dxs * d;
                a->ddt[t * a->ld_ddt + i] = dd * a->sig[t * a->ld_d + i];
            }
        }
        for (int64_t j = 0; j < S; j++) a->dA[i * S + j] += gA[j];
        a->dD[i] += gD;
    }
}

void slm_mamba_grad_scan_back(const slm_mamba_grad_scan_args *a, int64_t c0, int64_t c1)
{
#if defined(__x86_64__)
    /* the forward's condition: the states are recomputed as it made them */
    if (a->d_state % 8 == 0 && slm_kernels_use_avx2()) {
        slm_mamba_grad_scan_back_avx2(a, c0, c1);
        return;
    }
#endif
    slm_mamba_grad_scan_back_generic(a, c0, c1);
}

void slm_mamba_grad_sigmoid_generic(float *out, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + expf(-x[i]));
}

void slm_mamba_grad_sigmoid(float *out, const float *x, int64_t n)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) {
        slm_mamba_grad_sigmoid_avx2(out, x, n);
        return;
    }
#endif
    slm_mamba_grad_sigmoid_generic(out, x, n);
}
