/* AVX-512 (F BW VL DQ VNNI) tile kernels for q4_0 weights: the gemm.h q4_0
 * order (per output acc = fma((float)sumi_b, d_w[b] * d_a[b], acc), block
 * by block, sumi_b the exact integer dot of block b), bit for bit as the
 * generic kernels in gemm.c, with vpdpbusd for the byte products.
 * Call only when slm_cpu_has_avx512(). */
#ifndef SLM_GEMM_Q4_AVX512_H
#define SLM_GEMM_Q4_AVX512_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

/* Eight q4_0 rows, one block, the packed layout of the AVX-512 batch tile:
 * codes (0..15, offset 8 not applied) with q[p][r][i] = element 8p + i of
 * row r, so that the 64 bytes of q[p] hold eight consecutive codes per
 * row and one broadcast 8-byte activation word meets them in two dword
 * lanes per row; then the rows' scales as floats. */
typedef struct slm_q4_0x8w {
    uint8_t q[4][8][8];
    float d[8];
} slm_q4_0x8w;
static_assert(sizeof(slm_q4_0x8w) == 288, "packed q4_0 (AVX-512) block size");

#if defined(__x86_64__)
/* gemm.h slm_gemm_tile_fn over the file's q4_0 rows (tile 8 x 4) */
void slm_gemm_q4_0_avx512(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                          int nc, float *out, size_t ldo);
/* slm_gemm_pack_fn: 8 rows into K / 32 slm_q4_0x8w blocks */
void slm_gemm_pack_q4_0_avx512(int64_t K, const void *W, size_t ldw, void *dst);
/* slm_gemm_ptile_fn over a slm_q4_0x8w panel (reads the q8 side values) */
void slm_gemm_q4_0x8w_avx512(int64_t K, const void *P, int nr, const void *A, size_t lda,
                             const slm_q8_0_side *side, int nc, float *out, size_t ldo);
#endif

#endif
