/* AVX-512 VNNI kernels for q8_0 and q5_0 weights (gemm_q8_avx512.c): the
 * tile slots q8_0/q5_0 of gemm.c's avx512[] table and q8_0's dot_avx512 /
 * dot4_avx512 in vecdot.c. Every output has the bits of the AVX2 kernels
 * (gemm.h: the reference's x86 vec_dot order, one 8-lane accumulator per
 * output, acc += (float)lanes_b * (d_w * d_a), out = hsum8(acc)). Call only
 * when slm_cpu_has_avx512(). */
#ifndef SLM_GEMM_Q8_AVX512_H
#define SLM_GEMM_Q8_AVX512_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

/* Eight q8_0 or q5_0 rows, one block, as the tile reads them: pair p holds
 * rows p (bytes 0..31) and p + 4 (bytes 32..63), each code plus 128 as an
 * unsigned byte (the u8 operand of vpdpbusd), then the eight rows' scales
 * as floats; padded to a multiple of 64 bytes so that every block's pairs
 * start on a cache line. */
typedef struct slm_qs8x8 {
    _Alignas(64) uint8_t q[4][64];
    float d[8];
} slm_qs8x8;
static_assert(sizeof(slm_qs8x8) == 320, "packed q8_0/q5_0 block of eight rows");

#if defined(__x86_64__)
void slm_gemm_q8_0_avx512(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                          int nc, float *out, size_t ldo);
void slm_gemm_q5_0_avx512(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                          int nc, float *out, size_t ldo);
void slm_gemm_pack_q8_0_avx512(int64_t K, const void *W, size_t ldw, void *dst);
void slm_gemm_pack_q5_0_avx512(int64_t K, const void *W, size_t ldw, void *dst);
void slm_gemm_qs8x8_avx512(int64_t K, const void *P, int nr, const void *A, size_t lda,
                           const slm_q8_0_side *side, int nc, float *out, size_t ldo);
void slm_vec_dot_q8_0_avx512(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot4_q8_0_avx512(int64_t n, float *s, const void *w, const void *a, size_t as);
#endif

#endif
