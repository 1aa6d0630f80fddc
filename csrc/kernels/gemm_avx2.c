/* AVX2/FMA/F16C tile kernels for gemm.h: a tile of RM weight rows by RN
 * activation rows keeps RM * RN accumulators in registers (at most 12 of the
 * 16 ymm registers), loads RN activation vectors and converts RM weight
 * vectors per 8 elements of K. Every output is the one chain of gemm.c. */
#if defined(__x86_64__)

#include "gemm.h"
#include "simd_avx2.h"

#define UNROLL _Pragma("GCC unroll 4")

/* RM and RN are constants at every call site, so the loops unroll and the
 * accumulator array lives in registers. */
#define DEFINE_TILE(NAME, LOAD)                                                                 \
    static inline __attribute__((always_inline)) void NAME(                                     \
        int64_t K, const unsigned char *W, size_t ldw, const float *A, size_t lda, float *out,  \
        size_t ldo, const int RM, const int RN)                                                 \
    {                                                                                           \
        __m256 acc[SLM_GEMM_TILE_R][SLM_GEMM_TILE_C];                                           \
        UNROLL for (int r = 0; r < RM; r++)                                                     \
            UNROLL for (int c = 0; c < RN; c++) acc[r][c] = _mm256_setzero_ps();                \
        for (int64_t k = 0; k < K; k += 8) {                                                    \
            __m256 b[SLM_GEMM_TILE_C];                                                          \
            UNROLL for (int c = 0; c < RN; c++) b[c] = _mm256_loadu_ps(A + (size_t)c * lda + k); \
            UNROLL for (int r = 0; r < RM; r++) {                                               \
                const __m256 a = LOAD(W + (size_t)r * ldw + 2 * k);                             \
                UNROLL for (int c = 0; c < RN; c++) acc[r][c] = _mm256_fmadd_ps(a, b[c], acc[r][c]); \
            }                                                                                   \
        }                                                                                       \
        UNROLL for (int c = 0; c < RN; c++)                                                     \
            UNROLL for (int r = 0; r < RM; r++) out[(size_t)c * ldo + r] = hsum_ps(acc[r][c]);  \
    }

DEFINE_TILE(tile_f16, load_f16x8)
DEFINE_TILE(tile_bf16, load_bf16x8)

#define DISPATCH(TILE)                                                                          \
    switch (nr * 4 + nc) {                                                                      \
    case 4 * 4 + 3: TILE(K, W, ldw, A, lda, out, ldo, 4, 3); break;                            \
    case 4 * 4 + 2: TILE(K, W, ldw, A, lda, out, ldo, 4, 2); break;                            \
    case 4 * 4 + 1: TILE(K, W, ldw, A, lda, out, ldo, 4, 1); break;                            \
    case 3 * 4 + 3: TILE(K, W, ldw, A, lda, out, ldo, 3, 3); break;                            \
    case 3 * 4 + 2: TILE(K, W, ldw, A, lda, out, ldo, 3, 2); break;                            \
    case 3 * 4 + 1: TILE(K, W, ldw, A, lda, out, ldo, 3, 1); break;                            \
    case 2 * 4 + 3: TILE(K, W, ldw, A, lda, out, ldo, 2, 3); break;                            \
    case 2 * 4 + 2: TILE(K, W, ldw, A, lda, out, ldo, 2, 2); break;                            \
    case 2 * 4 + 1: TILE(K, W, ldw, A, lda, out, ldo, 2, 1); break;                            \
    case 1 * 4 + 3: TILE(K, W, ldw, A, lda, out, ldo, 1, 3); break;                            \
    case 1 * 4 + 2: TILE(K, W, ldw, A, lda, out, ldo, 1, 2); break;                            \
    case 1 * 4 + 1: TILE(K, W, ldw, A, lda, out, ldo, 1, 1); break;                            \
    default: break;                                                                             \
    }

void slm_gemm_f16_avx2(int64_t K, const void *vW, size_t ldw, int nr, const float *A, size_t lda,
                       int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW;
    DISPATCH(tile_f16)
}

void slm_gemm_bf16_avx2(int64_t K, const void *vW, size_t ldw, int nr, const float *A, size_t lda,
                        int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW;
    DISPATCH(tile_bf16)
}

void slm_gemm_act_f16_avx2(const float *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) y[i] = slm_f16_to_f32(slm_f32_to_f16(x[i]));
}

void slm_gemm_act_bf16_avx2(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = slm_bf16_to_f32(slm_f32_to_bf16(x[i]));
}

#endif
