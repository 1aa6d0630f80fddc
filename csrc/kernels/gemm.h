/* Tile kernels: products of a few weight rows with a few activation rows in
 * one call, for the dtypes whose reference sums each output in a fixed order
 * that does not depend on how rows are grouped. Register tiles then share
 * loads and unpacking across rows, and every output still has the same bits
 * in any batch (decode included).
 *
 * f16, bf16 (K % 8 == 0): llama.cpp's tinyBLAS (llamafile sgemm), used by
 * ggml's CPU backend at every batch size:
 *   out = hsum8(acc),  acc = 8 lanes, acc += w[k..k+8) * a[k..k+8)
 *         (one fused multiply-add per lane, k = 0, 8, ..., K - 8)
 *   hsum8(acc) = (s0 + s2) + (s1 + s3),  s_i = acc_i + acc_{i+4}
 * Activations are f32 rows holding the f16- or bf16-rounded values (as the
 * reference converts them), so they are rounded once per row. Tiles: 4
 * weight rows by 3 activation rows (7 loads feed 12 FMAs).
 *
 * q4_0: ggml's repacked q4_0 kernels (8x8 interleaved rows, gemv and gemm),
 * which the reference uses on AVX2 for every q4_0 matrix with a multiple
 * of 8 rows:
 *   out = acc,  acc = fma((float)sumi_b, d_w[b] * d_a[b], acc)  for b = 0, 1, ...
 *   sumi_b = the exact integer dot of block b ((code - 8) x q8_0 code)
 * Activations are q8_0 blocks (the vec_dot encoding). Tiles: 8 weight rows
 * (one lane each) by up to 4 activation rows.
 *
 * q8_0, q5_0 (AVX2 only): the reference's x86 vec_dot, which it uses for
 * these types (no repacking): per output one 8-lane float accumulator,
 *   acc += (float)lanes_b * (d_w[b] * d_a[b]),  out = hsum8(acc)
 * where lane j of block b is the integer sum of its elements 4j..4j+3.
 * The results are those of slm_vec_dot_q8_0_avx2 / _q5_0_avx2 (vecdot.h):
 * without AVX2 there is no tile kernel and matmul calls the generic dots.
 * Tiles: 2 weight rows by 4 activation rows. */
#ifndef SLM_GEMM_H
#define SLM_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "../core/dtype.h"

#define SLM_GEMM_MAX_R 8    /* weight rows per tile, at most */
#define SLM_GEMM_MAX_C 4    /* activation rows per tile, at most */

/* out[c * ldo + r] = dot(W row r, A row c) for r < nr <= tile_r and
 * c < nc <= tile_c. W rows are ldw bytes apart, A rows lda bytes apart. */
typedef void (*slm_gemm_tile_fn)(int64_t K, const void *W, size_t ldw, int nr, const void *A,
                                 size_t lda, int nc, float *out, size_t ldo);
/* Rounds n floats to the f32 activation values of a float tile kernel. */
typedef void (*slm_gemm_act_fn)(const float *x, float *y, int64_t n);

typedef struct slm_gemm_kernel {
    slm_gemm_tile_fn tile;
    slm_gemm_act_fn act;   /* NULL: A rows are the vec_dot activation blocks */
    int tile_r, tile_c;
    int k_multiple;        /* K must be a multiple of this */
} slm_gemm_kernel;

/* The kernel for weights of this dtype on this CPU (AVX2 when available
 * and not forced off), NULL when the dtype has no tile path. */
const slm_gemm_kernel *slm_gemm_get(slm_dtype w);
/* The portable kernels: the specification the AVX2 ones match bit for bit. */
const slm_gemm_kernel *slm_gemm_get_generic(slm_dtype w);

#if defined(__x86_64__)
void slm_gemm_f16_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                       int nc, float *out, size_t ldo);
void slm_gemm_bf16_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_q4_0_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_q8_0_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_q5_0_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_act_f16_avx2(const float *x, float *y, int64_t n);
void slm_gemm_act_bf16_avx2(const float *x, float *y, int64_t n);
#endif

#endif
