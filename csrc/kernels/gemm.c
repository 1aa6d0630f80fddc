/* Portable tile kernels: the specification of the orders in gemm.h, one
 * output at a time. fmaf is the fused multiply-add with one rounding, so
 * these match the AVX2 kernels bit for bit. */
#include "gemm.h"

#include <math.h>

#include "../core/fp16.h"
#include "../quant/blocks.h"
#include "gemm_q4_avx512.h"
#include "gemm_q4k_avx512.h"
#include "gemm_q8_avx512.h"
#include "vecdot.h"

#define ROW(T, p, ld, i) ((const T *)((const unsigned char *)(p) + (size_t)(i) * (ld)))

static float hsum8(const float a[8])
{
    float s[4];
    for (int i = 0; i < 4; i++) s[i] = a[i] + a[i + 4];
    return (s[0] + s[2]) + (s[1] + s[3]);
}

static float f32_value(float x) { return x; }

/* f16, bf16, f32 weights: one 8-lane chain of fmaf per output, then hsum8 */
#define DEFINE_GEMM_FLOAT(NAME, T, TO_F32)                                                     \
    static void NAME(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,  \
                     int nc, float *out, size_t ldo)                                           \
    {                                                                                          \
        for (int c = 0; c < nc; c++)                                                           \
            for (int r = 0; r < nr; r++) {                                                     \
                const T *w = ROW(T, W, ldw, r);                                                \
                const float *a = ROW(float, A, lda, c);                                        \
                float acc[8] = {0};                                                            \
                for (int64_t k = 0; k < K; k += 8)                                             \
                    for (int l = 0; l < 8; l++) acc[l] = fmaf(TO_F32(w[k + l]), a[k + l], acc[l]); \
                out[(size_t)c * ldo + r] = hsum8(acc);                                         \
            }                                                                                  \
    }

DEFINE_GEMM_FLOAT(gemm_f16, slm_f16, slm_f16_to_f32)
DEFINE_GEMM_FLOAT(gemm_bf16, slm_bf16, slm_bf16_to_f32)
DEFINE_GEMM_FLOAT(gemm_f32, float, f32_value)

static void gemm_q4_0(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                      int nc, float *out, size_t ldo)
{
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++) {
            const slm_block_q4_0 *w = ROW(slm_block_q4_0, W, ldw, r);
            const slm_block_q8_0 *a = ROW(slm_block_q8_0, A, lda, c);
            float acc = 0.0f;
            for (int64_t b = 0; b < K / SLM_QK4_0; b++) {
                int sumi = 0;
                for (int j = 0; j < SLM_QK4_0 / 2; j++)
                    sumi += ((w[b].qs[j] & 15) - 8) * a[b].qs[j] + ((w[b].qs[j] >> 4) - 8) * a[b].qs[j + 16];
                acc = fmaf((float)sumi, slm_f16_to_f32(w[b].d) * slm_f16_to_f32(a[b].d), acc);
            }
            out[(size_t)c * ldo + r] = acc;
        }
}

static void pack_q4_0(int64_t K, const void *W, size_t ldw, void *dst)
{
    slm_q4_0x8 *P = dst;
    for (int64_t b = 0; b < K / SLM_QK4_0; b++)
        for (int r = 0; r < 8; r++) {
            const slm_block_q4_0 *w = ROW(slm_block_q4_0, W, ldw, r) + b;
            for (int e = 0; e < SLM_QK4_0; e++)
                P[b].q[e / 4][r][e % 4] = e < 16 ? w->qs[e] & 15 : w->qs[e - 16] >> 4;
            P[b].d[r] = slm_f16_to_f32(w->d);
        }
}

/* gemm_q4_0 over a packed panel, the activation scales from side */
static void gemm_q4_0x8(int64_t K, const void *vP, int nr, const void *A, size_t lda,
                        const slm_q8_0_side *side, int nc, float *out, size_t ldo)
{
    const slm_q4_0x8 *P = vP;
    const int64_t nb = K / SLM_QK4_0;
    for (int c = 0; c < nc; c++)
        for (int r = 0; r < nr; r++) {
            const slm_block_q8_0 *a = ROW(slm_block_q8_0, A, lda, c);
            float acc = 0.0f;
            for (int64_t b = 0; b < nb; b++) {
                int sumi = 0;
                for (int e = 0; e < SLM_QK4_0; e++) sumi += (P[b].q[e / 4][r][e % 4] - 8) * a[b].qs[e];
                acc = fmaf((float)sumi, P[b].d[r] * side[c * nb + b].d, acc);
            }
            out[(size_t)c * ldo + r] = acc;
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

static const slm_gemm_kernel generic[] = {
    {.tile = gemm_f16, .act = act_f16, .tile_r = 4, .tile_c = 3, .k_multiple = 8},
    {.tile = gemm_bf16, .act = act_bf16, .tile_r = 4, .tile_c = 3, .k_multiple = 8},
    {.tile = gemm_q4_0, .tile_r = 8, .tile_c = 4, .k_multiple = SLM_QK4_0, .pack = pack_q4_0,
     .ptile = gemm_q4_0x8, .pack_block_bytes = sizeof(slm_q4_0x8), .q8_side = 1},
    {.tile = NULL},   /* q8_0, q5_0, q4_K: no tile order of their own */
    {.tile = NULL},
    {.tile = NULL},
    {.tile = gemm_f32, .tile_r = 4, .tile_c = 3, .k_multiple = 8},   /* reads the f32 rows */
};

#if defined(__x86_64__)
static const slm_gemm_kernel avx2[] = {
    {.tile = slm_gemm_f16_avx2, .act = slm_gemm_act_f16_avx2, .tile_r = 4, .tile_c = 3, .k_multiple = 8},
    {.tile = slm_gemm_bf16_avx2, .act = slm_gemm_act_bf16_avx2, .tile_r = 4, .tile_c = 3, .k_multiple = 8},
    {.tile = slm_gemm_q4_0_avx2, .tile_r = 8, .tile_c = 4, .k_multiple = SLM_QK4_0,
     .pack = slm_gemm_pack_q4_0_avx2, .ptile = slm_gemm_q4_0x8_avx2, .pack_block_bytes = sizeof(slm_q4_0x8),
     .q8_side = 1},
    {.tile = slm_gemm_q8_0_avx2, .tile_r = 2, .tile_c = 3, .k_multiple = SLM_QK8_0,
     .pack = slm_gemm_pack_tile_q8_0_avx2, .ptile = slm_gemm_qs8x2_avx2, .pack_block_bytes = sizeof(slm_qs8x2),
     .q8_side = 1},
    {.tile = slm_gemm_q5_0_avx2, .tile_r = 2, .tile_c = 3, .k_multiple = SLM_QK5_0,
     .pack = slm_gemm_pack_tile_q5_0_avx2, .ptile = slm_gemm_qs8x2_avx2, .pack_block_bytes = sizeof(slm_qs8x2),
     .q8_side = 1},
    {.tile = slm_gemm_q4_K_avx2, .tile_r = 8, .tile_c = 4, .k_multiple = SLM_QK_K, .pack = slm_gemm_pack_q4_K_avx2,
     .ptile = slm_gemm_q4_Kx8_avx2, .pack_block_bytes = sizeof(slm_q4_Kx8), .batch_only = 1},
    {.tile = slm_gemm_f32_avx2, .tile_r = 4, .tile_c = 3, .k_multiple = 8},
};

/* The AVX-512 tier, slot by slot as above: a kernel of its own (files
 * *_avx512.c, the same sums and bits as the generic one), or .tile = NULL
 * where the AVX2 kernel serves that tier too. */
static const slm_gemm_kernel avx512[] = {
    /* f16, bf16: decode (M = 1) streams 4 weight rows with the AVX2
     * tile faster than 8 (bench/gemm_rows.c: 0.050 against 0.059 ms per
     * 1536 x 576 f16 product on one Zen 5 core) */
    {.tile = slm_gemm_f16_avx512, .act = slm_gemm_act_f16_avx2, .tile_r = 8, .tile_c = 6, .k_multiple = 8,
     .min_m = 2},
    {.tile = slm_gemm_bf16_avx512, .act = slm_gemm_act_bf16_avx2, .tile_r = 8, .tile_c = 6, .k_multiple = 8,
     .min_m = 2},
    {.tile = slm_gemm_q4_0_avx512, .tile_r = 8, .tile_c = 4, .k_multiple = SLM_QK4_0,
     .pack = slm_gemm_pack_q4_0_avx512, .ptile = slm_gemm_q4_0x8w_avx512, .pack_block_bytes = sizeof(slm_q4_0x8w),
     .q8_side = 1},   /* q4_0 */
    {.tile = slm_gemm_q8_0_avx512, .tile_r = 8, .tile_c = 4, .k_multiple = SLM_QK8_0,
     .pack = slm_gemm_pack_q8_0_avx512, .ptile = slm_gemm_qs8x8_avx512, .pack_block_bytes = sizeof(slm_qs8x8),
     .q8_side = 1, .min_m = 2},   /* q8_0: decode on the AVX2 tile (2 streams; 8 measured slower) */
    {.tile = slm_gemm_q5_0_avx512, .tile_r = 8, .tile_c = 4, .k_multiple = SLM_QK5_0,
     .pack = slm_gemm_pack_q5_0_avx512, .ptile = slm_gemm_qs8x8_avx512, .pack_block_bytes = sizeof(slm_qs8x8),
     .q8_side = 1},   /* q5_0 */
    {.tile = slm_gemm_q4_K_avx512, .tile_r = 8, .tile_c = 4, .k_multiple = SLM_QK_K,
     .pack = slm_gemm_pack_q4_K_avx512, .ptile = slm_gemm_q4_Kx8v_avx512, .pack_block_bytes = sizeof(slm_q4_Kx8v),
     .batch_only = 1},   /* q4_K */
    {.tile = slm_gemm_f32_avx512, .tile_r = 8, .tile_c = 4, .k_multiple = 8},   /* f32 */
};
#endif

static int slot(slm_dtype w)
{
    switch (w) {
    case SLM_DTYPE_F16: return 0;
    case SLM_DTYPE_BF16: return 1;
    case SLM_DTYPE_Q4_0: return 2;
    case SLM_DTYPE_Q8_0: return 3;
    case SLM_DTYPE_Q5_0: return 4;
    case SLM_DTYPE_Q4_K: return 5;
    case SLM_DTYPE_F32: return 6;
    default: return -1;
    }
}

const slm_gemm_kernel *slm_gemm_get_generic(slm_dtype w)
{
    const int i = slot(w);
    return i < 0 || !generic[i].tile ? NULL : &generic[i];
}

const slm_gemm_kernel *slm_gemm_get(slm_dtype w)
{
    return slm_gemm_get_rows(w, INT64_MAX);
}

const slm_gemm_kernel *slm_gemm_get_rows(slm_dtype w, int64_t M)
{
    const int i = slot(w);
    if (i < 0) return NULL;
#if defined(__x86_64__)
    if (slm_kernels_use_avx512() && avx512[i].tile && M >= avx512[i].min_m) return &avx512[i];
    if (slm_kernels_use_avx2()) return &avx2[i];
#endif
    return slm_gemm_get_generic(w);
}
