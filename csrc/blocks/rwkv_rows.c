/* Row-wise pieces of the RWKV v6/v7 mixes (rwkv_internal.h): the portable
 * loops, which define the floats, and the run-time choice of their
 * AVX-512 twins (rwkv_avx512.c, the same operations lane by lane, so the
 * same floats). At -O2 the compiler leaves these loops scalar, and
 * relu_sq's branch on the sign of random values mispredicts half the
 * time: in a 128-token prompt of the 0.1B model they were a tenth of the
 * time, on the calling thread while the pool waits. */
#include <math.h>

#include "../kernels/vecdot.h"
#include "rwkv_internal.h"

void slm_rwkv_shift_diff(float *sx, const float *x, const float *carry, int n, int64_t dim)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx512()) {
        slm_rwkv_shift_diff_avx512(sx, x, carry, n, dim);
        return;
    }
#endif
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * (size_t)dim, *pv = slm_rwkv_prev(carry, x, t, dim);
        float *o = sx + (size_t)t * (size_t)dim;
        for (int64_t c = 0; c < dim; c++) o[c] = pv[c] - xt[c];
    }
}

void slm_rwkv_relu_sq(float *y, int64_t n)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx512()) {
        slm_rwkv_relu_sq_avx512(y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        float v = y[i] > 0 ? y[i] : 0;
        y[i] = v * v;
    }
}

void slm_rwkv_shift_mix(float *out, size_t out_stride, const float *x, const float *carry,
                        const float *const *m, int n_mix, int n, int64_t dim)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx512()) {
        slm_rwkv_shift_mix_avx512(out, out_stride, x, carry, m, n_mix, n, dim);
        return;
    }
#endif
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * (size_t)dim, *pv = slm_rwkv_prev(carry, x, t, dim);
        for (int64_t c = 0; c < dim; c++) {
            float sx = pv[c] - xt[c];
            for (int i = 0; i < n_mix; i++)
                out[(size_t)i * out_stride + (size_t)t * (size_t)dim + (size_t)c] = sx * m[i][c] + xt[c];
        }
    }
}

void slm_rwkv_tanh(float *y, int64_t n)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx512()) {
        slm_rwkv_tanh_avx512(y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = tanhf(y[i]);
}

void slm_rwkv_sigmoid(float *y, int64_t n)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx512()) {
        slm_rwkv_sigmoid_avx512(y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-y[i]));
}
