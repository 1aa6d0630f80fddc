/* Matrix products with a weight matrix of any supported dtype.
 *
 *   out (M, N) = X (M, K) . W (N, K)^T      out[m][n] = sum_k X[m][k] W[n][k]
 *
 * W is a weight matrix as stored in model files (N rows of K elements, rows
 * contiguous, any dtype with a vec_dot kernel: f32 f16 bf16 q4_0 q4_1 q5_0
 * q5_1 q8_0 q2_K..q6_K); X and out are float32. M == 1 is a matvec.
 *
 * As in the reference implementation, X is first encoded once into the
 * weight type's activation type (q8_0/q8_1/q8_K blocks, f16, bf16) in a
 * scratch buffer owned by the pool (grown, never freed per call), shared by
 * all threads; then the rows of W are split between the pool's threads: a
 * matvec (decode) by (ith, nth) in whole units of 8 rows, a batch in
 * chunks of 64 rows handed out from a shared counter. A single activation
 * row is encoded on the calling thread, so a matvec is one dispatch.
 *
 * f16, bf16, q4_0 (and with AVX2 q8_0, q5_0, and q4_K in batches) take
 * the tile kernels of gemm.h: a few weight rows against a few activation
 * rows per call, in panels of weight rows kept in L1 while every
 * activation row passes over them (q4_0 and q4_K unpack a panel once),
 * each output summed in the reference's own order for that dtype. The
 * other dtypes walk their weight rows once per tile of activation rows, q6_K
 * (and q4_K in batches of 4 to 7 rows) with a four-row AVX2 kernel that
 * unpacks each weight block once for four activation rows. Either way a row's output
 * does not depend on the batch it is computed in. A part may ask for
 * vec_dot's order instead of the tiles' (order, below), as rwkv.cpp's
 * files need.
 *
 * F32 weights with M >= SLM_MATMUL_BLAS_MIN_M go to OpenBLAS cblas_sgemm,
 * each pool thread calling it on its own slice of W's rows. OpenBLAS is set
 * to one thread (openblas_set_num_threads(1), process-wide, on first use):
 * our pool already occupies every core, and OpenBLAS's own spinning threads
 * on top of it would oversubscribe them. */
#ifndef SLM_MATMUL_H
#define SLM_MATMUL_H

#include <stddef.h>
#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"
#include "../core/tensor.h"

#define SLM_MATMUL_BLAS_MIN_M 4
/* encoded activations a serial call (no usable pool) keeps on its stack */
#define SLM_MATMUL_STACK_ACT_BYTES 8192

/* Checks that t can be the W of a matmul with the given shape (rows, cols):
 * present, 2-D, rows contiguous, a dtype with a dot-product kernel. The
 * message names the weight (`what`) and the problem. */
slm_status slm_matmul_check_weight(const slm_tensor *t, const char *what, int64_t rows,
                                   int64_t cols, slm_error *err);

/* Raw form. w_row_bytes is the byte distance between rows of W (at least
 * the row size of K elements). out must not overlap X or W. Pass the pool
 * even for small products: below 64K multiply-adds they run on the calling
 * thread anyway, with the pool's scratch. pool may be NULL, or busy (a call
 * from inside a pool job): the product then runs on the calling thread with
 * a stack buffer (up to SLM_MATMUL_STACK_ACT_BYTES of encoded
 * activations) or a temporary one. */
slm_status slm_matmul_raw(slm_pool *pool, float *out, const void *W, slm_dtype wtype,
                          size_t w_row_bytes, const float *X, int64_t M, int64_t N,
                          int64_t K, slm_error *err);

/* Several products of one X (same K) in one dispatch, e.g. q|k|v or
 * gate|up of a layer: X is encoded once and the threads split the
 * concatenated rows of all weights. Parts whose weights take another
 * activation encoding (say q4_K next to q5_0 in one file: q8_K vs q8_0
 * blocks) run as separate dispatches; results are those of
 * slm_matmul_raw on each part. */
#define SLM_MATMUL_MAX_PARTS 16
/* A part's summation order. DEFAULT: the tile or vec_dot order of its
 * dtype (above), f32 batches through OpenBLAS. VECDOT: vec_dot's order at
 * every M (f16/bf16 not in tiles, f32 batches not through OpenBLAS), as
 * rwkv.cpp's files need. TILES: f32 weights in the f16 tiles' order
 * (llama.cpp's tinyBLAS) at every M, so a row's output does not depend on
 * its batch and batches stay fast; other dtypes as DEFAULT. */
#define SLM_MATMUL_ORDER_DEFAULT 0
#define SLM_MATMUL_ORDER_VECDOT 1
#define SLM_MATMUL_ORDER_TILES 2

typedef struct slm_matmul_part {
    float *out;           /* (M, N) */
    const void *W;        /* N rows of K, w_row_bytes apart */
    slm_dtype wtype;
    size_t w_row_bytes;
    int64_t N;
    int order;            /* SLM_MATMUL_ORDER_* */
    const struct slm_lora_link *lora;   /* unmerged adapters added after the
                                           product (kernels/lora.h); NULL: none */
} slm_matmul_part;
slm_status slm_matmul_multi(slm_pool *pool, const slm_matmul_part *parts, int n_parts,
                            const float *X, int64_t M, int64_t K, slm_error *err);

/* Bytes of one activation row (K floats) as the part's kernel reads it:
 * 0 when it reads the floats themselves (f32 weights), K * 4 for a float
 * tile kernel's rounded rows, else the activation type's blocks; SIZE_MAX
 * for a dtype without a kernel or a K that is not whole blocks. */
size_t slm_matmul_act_row_bytes(const slm_matmul_part *p, int64_t K);

/* The product with a weight tensor, the entry point of the blocks: W is a
 * 2-D (N, K) tensor or view with contiguous rows (slice < 0), or slice s of
 * a 3-D (S, N, K) one (a stack of matrices: experts, RWKV's per-mix
 * low-rank weights). The part's order is VECDOT when W's storage asks for
 * it (rwkv.cpp files), else DEFAULT; a caller may change part.order. The
 * caller has checked W (slm_matmul_check_weight or the shapes). */
slm_matmul_part slm_matmul_part_of(const slm_tensor *W, int64_t slice, float *out);
/* out (M, N) = X (M, K) . W^T with W as in slm_matmul_part_of, on pool. */
slm_status slm_matmul_w(slm_pool *pool, float *out, const slm_tensor *W, int64_t slice,
                        const float *X, int64_t M, slm_error *err);

/* Bytes of weights the products have read since the last reset (reset
 * nonzero: return them and start again from 0). Process-wide, for
 * benchmarks: what a decoded token reads (a MoE reads only its chosen
 * experts' rows). */
unsigned long long slm_matmul_weight_bytes(int reset);

/* Tensor form on the default pool. W: 2-D (N, K) with contiguous rows;
 * X: f32, contiguous, last dim K (all leading dims are rows, M = numel / K);
 * out: f32, contiguous, M * N elements with last dim N. */
slm_status slm_matmul(slm_tensor *out, const slm_tensor *W, const slm_tensor *X,
                      slm_error *err);

/* The name of the kernel family OpenBLAS chose for f32 products
 * ("Haswell", "SkylakeX", ...: its CPU detection or OPENBLAS_CORETYPE),
 * which the training benchmarks report beside their speeds. */
const char *slm_matmul_blas_core(void);

#endif
