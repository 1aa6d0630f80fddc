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
 * weight rows by 3 activation rows (7 loads feed 12 FMAs); AVX-512: 8 by
 * 6, two outputs' 8 lanes per zmm register (gemm_f16_avx512.c). f32 weights
 * have the same kernel (tinyBLAS's f32 order), taken only by the matmul
 * parts that ask for it (matmul.h, SLM_MATMUL_ORDER_TILES).
 *
 * q4_0: ggml's repacked q4_0 kernels (8x8 interleaved rows, gemv and gemm),
 * which the reference uses on AVX2 for every q4_0 matrix with a multiple
 * of 8 rows:
 *   out = acc,  acc = fma((float)sumi_b, d_w[b] * d_a[b], acc)  for b = 0, 1, ...
 *   sumi_b = the exact integer dot of block b ((code - 8) x q8_0 code)
 * Activations are q8_0 blocks (the vec_dot encoding). Tiles: 8 weight rows
 * (one lane each) by up to 4 activation rows.
 *
 * q4_K (AVX2 and AVX-512 only, batches): vec_dot's expression per
 * super-block, sum += d_a * (d_w * (float)isum - dmin_w * (float)msum), with
 * the exact integers isum and msum of eight rows computed in eight lanes
 * (AVX-512: slm_q4_Kx8v in gemm_q4k_avx512.h).
 *
 * q8_0, q5_0 (AVX2 only): the reference's x86 vec_dot, which it uses for
 * these types (no repacking): per output one 8-lane float accumulator,
 *   acc += (float)lanes_b * (d_w[b] * d_a[b]),  out = hsum8(acc)
 * where lane j of block b is the integer sum of its elements 4j..4j+3.
 * The results are those of slm_vec_dot_q8_0_avx2 / _q5_0_avx2 (vecdot.h):
 * without AVX2 there is no tile kernel and matmul calls the generic dots.
 * Tiles: 2 weight rows by 3 activation rows.
 *
 * Batches (M >= SLM_GEMM_PACK_MIN_M) may also pack tile_r weight rows once
 * per panel into the kernel's own layout (pack), which a second tile
 * function (ptile) reads instead of the file's rows; the sums keep the
 * same order and bits. q4_0: slm_q4_0x8 below, whose codes are already
 * unpacked and transposed so that 32-bit lane r holds four codes of row r:
 * a block's eight integer sums then take eight byte multiply-adds with
 * broadcast activation words, summed in 16 bits, with no horizontal adds. */
#ifndef SLM_GEMM_H
#define SLM_GEMM_H

#include <assert.h>
#include <stddef.h>
#include <stdint.h>

#include "../core/dtype.h"

#define SLM_GEMM_MAX_R 8    /* weight rows per tile, at most */
#define SLM_GEMM_MAX_C 6    /* activation rows per tile, at most */

#define SLM_GEMM_PACK_MIN_M 8

/* Eight q4_0 rows, one block: codes (0..15, offset 8 not applied) with
 * q[j][r][i] = element 4j + i of row r, and the rows' scales as floats. */
typedef struct slm_q4_0x8 {
    uint8_t q[8][8][4];
    float d[8];
} slm_q4_0x8;
static_assert(sizeof(slm_q4_0x8) == 288, "packed q4_0 block size");

/* Two q8_0 or q5_0 rows, one block: signed codes (q5_0's less 16), their
 * magnitudes and the rows' scales as floats. */
typedef struct slm_qs8x2 {
    int8_t q[2][32];
    uint8_t aq[2][32];
    float d[2];
} slm_qs8x2;
static_assert(sizeof(slm_qs8x2) == 136, "packed q8_0/q5_0 block size");

/* Eight q4_K rows, one super-block, unpacked: codes (0..15) in element
 * order per row, each sub-block's scale in 16 lanes, the mins as pairs of
 * sub-blocks (m[2p] | m[2p + 1] << 16), and the rows' d and dmin. */
typedef struct slm_q4_Kx8 {
    _Alignas(32) uint8_t q[8][256];
    int16_t sc[8][8][16];
    uint32_t mins[4][8];
    float d[8], dmin[8];
} slm_q4_Kx8;
static_assert(sizeof(slm_q4_Kx8) % 32 == 0, "packed q4_K block alignment");

/* out[c * ldo + r] = dot(W row r, A row c) for r < nr <= tile_r and
 * c < nc <= tile_c. W rows are ldw bytes apart, A rows lda bytes apart. */
typedef void (*slm_gemm_tile_fn)(int64_t K, const void *W, size_t ldw, int nr, const void *A,
                                 size_t lda, int nc, float *out, size_t ldo);
/* Rounds n floats to the f32 activation values of a float tile kernel. */
typedef void (*slm_gemm_act_fn)(const float *x, float *y, int64_t n);
/* Packs tile_r rows of W (ldw bytes apart) into dst: K / k_multiple blocks
 * of pack_block_bytes each. */
typedef void (*slm_gemm_pack_fn)(int64_t K, const void *W, size_t ldw, void *dst);
/* A q8_0 activation block's scale as a float and the sum of its codes,
 * computed once per product for the packed tiles that read them. */
typedef struct slm_q8_0_side {
    float d;
    int32_t sum;
} slm_q8_0_side;
/* The tile over a packed panel P (nr == tile_r rows) against nc activation
 * rows lda bytes apart; side: for kernels with q8_side, row c's block
 * values at side + c * (K / 32), else NULL. */
typedef void (*slm_gemm_ptile_fn)(int64_t K, const void *P, int nr, const void *A, size_t lda,
                                  const slm_q8_0_side *side, int nc, float *out, size_t ldo);

typedef struct slm_gemm_kernel {
    slm_gemm_tile_fn tile;
    slm_gemm_act_fn act;   /* NULL: A rows are the vec_dot activation blocks */
    int tile_r, tile_c;
    int k_multiple;        /* K must be a multiple of this */
    slm_gemm_pack_fn pack; /* NULL: no packed batch path */
    slm_gemm_ptile_fn ptile;  /* tile over a packed panel */
    size_t pack_block_bytes;
    int q8_side;           /* 1: ptile reads slm_q8_0_side per activation block */
    int batch_only;        /* 1: only for batches of SLM_GEMM_PACK_MIN_M rows
                              or more (fewer take the vec_dot kernels, which
                              stream one row at a time faster) */
    int min_m;             /* AVX-512 tier: products of fewer activation rows
                              take the slot's AVX2 kernel (same bits) */
} slm_gemm_kernel;

/* The kernel for weights of this dtype on this CPU (AVX2 when available
 * and not forced off), NULL when the dtype has no tile path. */
const slm_gemm_kernel *slm_gemm_get(slm_dtype w);
/* The same for a product of M activation rows (a kernel's min_m). */
const slm_gemm_kernel *slm_gemm_get_rows(slm_dtype w, int64_t M);
/* The portable kernels: the specification the AVX2 ones match bit for bit. */
const slm_gemm_kernel *slm_gemm_get_generic(slm_dtype w);

#if defined(__x86_64__)
void slm_gemm_f16_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                       int nc, float *out, size_t ldo);
void slm_gemm_bf16_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_f32_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                       int nc, float *out, size_t ldo);
void slm_gemm_q4_0_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_q8_0_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_q5_0_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_q4_K_avx2(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                        int nc, float *out, size_t ldo);
void slm_gemm_pack_tile_q8_0_avx2(int64_t K, const void *W, size_t ldw, void *dst);
void slm_gemm_pack_tile_q5_0_avx2(int64_t K, const void *W, size_t ldw, void *dst);
void slm_gemm_qs8x2_avx2(int64_t K, const void *P, int nr, const void *A, size_t lda,
                         const slm_q8_0_side *side, int nc, float *out, size_t ldo);
void slm_gemm_pack_q4_K_avx2(int64_t K, const void *W, size_t ldw, void *dst);
void slm_gemm_q4_Kx8_avx2(int64_t K, const void *P, int nr, const void *A, size_t lda,
                          const slm_q8_0_side *side, int nc, float *out, size_t ldo);
void slm_gemm_pack_q4_0_avx2(int64_t K, const void *W, size_t ldw, void *dst);
void slm_gemm_q4_0x8_avx2(int64_t K, const void *P, int nr, const void *A, size_t lda,
                          const slm_q8_0_side *side, int nc, float *out, size_t ldo);
void slm_gemm_act_f16_avx2(const float *x, float *y, int64_t n);
void slm_gemm_act_bf16_avx2(const float *x, float *y, int64_t n);
/* gemm_f16_avx512.c: 8 weight rows by 6 activation rows, two outputs per
 * zmm register, the generic chain's bits */
void slm_gemm_f16_avx512(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                         int nc, float *out, size_t ldo);
void slm_gemm_bf16_avx512(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                          int nc, float *out, size_t ldo);
/* f32, AVX-512 (gemm_f32_avx512.c): 8 weight rows by 4 activation rows */
void slm_gemm_f32_avx512(int64_t K, const void *W, size_t ldw, int nr, const void *A, size_t lda,
                         int nc, float *out, size_t ldo);
#endif

#endif
