/* Tiled products for float weights (f16, bf16), in the order of the
 * reference's tinyBLAS (llamafile sgemm), which ggml's CPU backend uses for
 * these types at every batch size, decode included, when K % 8 == 0:
 *
 *   out[c][r] = hsum8(acc),  acc = 8 lanes, acc += w[k..k+8) * a[k..k+8)
 *               (one fused multiply-add per lane, k = 0, 8, ..., K - 8)
 *   hsum8(acc) = (s0 + s2) + (s1 + s3),  s_i = acc_i + acc_{i+4}
 *
 * Each output is one chain, so its value does not depend on the tile it is
 * computed in (nor on the batch): register tiles of up to 4 weight rows by
 * 3 activation rows share their loads (7 loads feed 12 FMAs), which is what
 * makes prefill compute-bound instead of load-bound.
 *
 * Activations are f32 rows holding the values of the weight type's
 * activation encoding (f16- or bf16-rounded, as the reference converts them),
 * so they are rounded once per row instead of once per weight row. */
#ifndef SLM_GEMM_H
#define SLM_GEMM_H

#include <stddef.h>
#include <stdint.h>

#include "../core/dtype.h"

#define SLM_GEMM_TILE_R 4   /* weight rows per tile, at most */
#define SLM_GEMM_TILE_C 3   /* activation rows per tile, at most */
#define SLM_GEMM_K_MULTIPLE 8

/* out[c * ldo + r] = dot(W row r, A row c) for r < nr <= 4, c < nc <= 3.
 * W rows are ldw bytes apart, A rows lda floats apart; K % 8 == 0. */
typedef void (*slm_gemm_tile_fn)(int64_t K, const void *W, size_t ldw, int nr, const float *A,
                                 size_t lda, int nc, float *out, size_t ldo);
/* Rounds n floats to the activation values of the tile path (y may be x). */
typedef void (*slm_gemm_act_fn)(const float *x, float *y, int64_t n);

/* The kernel for weights of this dtype on this CPU (the AVX2 twin when
 * available and not forced off), NULL when the dtype has no tile path. */
slm_gemm_tile_fn slm_gemm_tile(slm_dtype w);
slm_gemm_act_fn slm_gemm_act(slm_dtype w);
/* The portable kernels: the specification the AVX2 ones match bit for bit. */
slm_gemm_tile_fn slm_gemm_tile_generic(slm_dtype w);
slm_gemm_act_fn slm_gemm_act_generic(slm_dtype w);

#if defined(__x86_64__)
void slm_gemm_f16_avx2(int64_t K, const void *W, size_t ldw, int nr, const float *A, size_t lda,
                       int nc, float *out, size_t ldo);
void slm_gemm_bf16_avx2(int64_t K, const void *W, size_t ldw, int nr, const float *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_act_f16_avx2(const float *x, float *y, int64_t n);
void slm_gemm_act_bf16_avx2(const float *x, float *y, int64_t n);
#endif

#endif
