/* Portable tile kernels: the specification of the order in gemm.h, one
 * output at a time. fmaf is the fused multiply-add with one rounding, so
 * these match the AVX2 kernels bit for bit. */
#include "gemm.h"

#include <math.h>

#include "../core/fp16.h"
#include "vecdot.h"

static float hsum8(const float a[8])
{
    float s[4];
    for (int i = 0; i < 4; i++) s[i] = a[i] + a[i + 4];
    return (s[0] + s[2]) + (s[1] + s[3]);
}

static void gemm_f16(int64_t K, const void *W, size_t ldw, int nr, const float *A, size_t lda,
                     int nc, float *out, size_t ldo)
{
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++) {
            const slm_f16 *w = (const slm_f16 *)((const unsigned char *)W + (size_t)r * ldw);
            const float *a = A + (size_t)c * lda;
            float acc[8] = {0};
            for (int64_t k = 0; k < K; k += 8)
                for (int l = 0; l < 8; l++) acc[l] = fmaf(slm_f16_to_f32(w[k + l]), a[k + l], acc[l]);
            out[(size_t)c * ldo + r] = hsum8(acc);
        }
}

static void gemm_bf16(int64_t K, const void *W, size_t ldw, int nr, const float *A, size_t lda,
                      int nc, float *out, size_t ldo)
{
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++) {
            const slm_bf16 *w = (const slm_bf16 *)((const unsigned char *)W + (size_t)r * ldw);
            const float *a = A + (size_t)c * lda;
            float acc[8] = {0};
            for (int64_t k = 0; k < K; k += 8)
                for (int l = 0; l < 8; l++) acc[l] = fmaf(slm_bf16_to_f32(w[k + l]), a[k + l], acc[l]);
            out[(size_t)c * ldo + r] = hsum8(acc);
        }
}

static void act_f16(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = slm_f16_to_f32(slm_f32_to_f16(x[i]));
}

static void act_bf16(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = slm_bf16_to_f32(slm_f32_to_bf16(x[i]));
}

slm_gemm_tile_fn slm_gemm_tile_generic(slm_dtype w)
{
    return w == SLM_DTYPE_F16 ? gemm_f16 : w == SLM_DTYPE_BF16 ? gemm_bf16 : NULL;
}

slm_gemm_act_fn slm_gemm_act_generic(slm_dtype w)
{
    return w == SLM_DTYPE_F16 ? act_f16 : w == SLM_DTYPE_BF16 ? act_bf16 : NULL;
}

slm_gemm_tile_fn slm_gemm_tile(slm_dtype w)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) {
        if (w == SLM_DTYPE_F16) return slm_gemm_f16_avx2;
        if (w == SLM_DTYPE_BF16) return slm_gemm_bf16_avx2;
    }
#endif
    return slm_gemm_tile_generic(w);
}

slm_gemm_act_fn slm_gemm_act(slm_dtype w)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) {
        if (w == SLM_DTYPE_F16) return slm_gemm_act_f16_avx2;
        if (w == SLM_DTYPE_BF16) return slm_gemm_act_bf16_avx2;
    }
#endif
    return slm_gemm_act_generic(w);
}
