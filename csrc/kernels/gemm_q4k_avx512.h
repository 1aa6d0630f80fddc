/* AVX-512 VNNI kernels for q4_K weights (gemm_q4k_avx512.c): the vec_dot
 * pair of the AVX-512 tier (one and four activation rows, decode and small
 * batches) and its tile kernels (batches), all giving the bits of the
 * generic q4_K vec_dot (vecdot.h): per super-block the exact integers
 * isum and msum, then sum += d_a * (d_w * (float)isum - dmin_w * (float)msum)
 * over the super-blocks in order. Call only when slm_cpu_has_avx512(). */
#ifndef SLM_GEMM_Q4K_AVX512_H
#define SLM_GEMM_Q4K_AVX512_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

/* Eight q4_K rows, one super-block, laid out for vpdpbusd: 32-bit lane
 * 2r + h of q[g] holds the codes (0..15) of elements 8g + 4h .. 8g + 4h + 3
 * of row r, so one 64-bit activation broadcast feeds all eight rows; sc[sb]
 * holds row r's 6-bit scale of sub-block sb in lanes 2r and 2r + 1; the
 * mins come in pairs of sub-blocks (m[2p] | m[2p + 1] << 16) as in
 * slm_q4_Kx8; d and dmin are the rows' scales as floats. */
typedef struct slm_q4_Kx8v {
    _Alignas(64) uint8_t q[32][8][8];
    int32_t sc[8][16];
    uint32_t mins[4][8];
    float d[8], dmin[8];
} slm_q4_Kx8v;
static_assert(sizeof(slm_q4_Kx8v) == 2752, "packed q4_K (AVX-512) block size");

#if defined(__x86_64__)
void slm_vec_dot_q4_K_avx512(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot4_q4_K_avx512(int64_t n, float *s, const void *w, const void *a, size_t as);
/* tile_r = 8, tile_c = 4 (gemm.h's slm_gemm_tile_fn / pack_fn / ptile_fn) */
void slm_gemm_q4_K_avx512(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                          int nc, float *out, size_t ldo);
void slm_gemm_pack_q4_K_avx512(int64_t K, const void *W, size_t ldw, void *dst);
void slm_gemm_q4_Kx8v_avx512(int64_t K, const void *P, int nr, const void *A, size_t lda,
                             const slm_q8_0_side *side, int nc, float *out, size_t ldo);
#endif

#endif
