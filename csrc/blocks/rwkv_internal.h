/* Helpers shared by rwkv.c and rwkv_tmix.c (not part of the public API). */
#ifndef SLM_RWKV_INTERNAL_H
#define SLM_RWKV_INTERNAL_H

#include "rwkv.h"

/* Work (multiply-adds) below which a product or a job runs on the calling
 * thread: waking the pool costs more than the work (tiny models, low-rank
 * weights). */
#define SMALL_MATMUL (1 << 16)

/* out (M, N) = X (M, K) . W^T for a 2-D weight W (N, K) with contiguous
 * rows; slice selects W[slice] of a 3-D weight (v6 maa_w2), -1 for 2-D.
 * Each row's output has the same bits at every M (F32 weights in the
 * tiles' order, rwkv.cpp's files in vec_dot's). */
slm_status slm_rwkv_mm(slm_pool *pool, float *out, const slm_tensor *W, int slice,
                       const float *X, int64_t M, slm_error *err);

/* One matrix-vector product of a group: out (N) = W (N, K) . x (K), W 2-D
 * with contiguous rows; post, if set, is an elementwise function applied in
 * place to out (each thread to its own rows, right after computing them). */
typedef struct slm_rwkv_mv {
    float *out;
    const slm_tensor *W;
    const float *x;
    void (*post)(float *out, int64_t n);
} slm_rwkv_mv;

/* The n independent products mv[0..n) in one pool dispatch, for a single
 * token: the threads take chunks of rows (about 64 KB of weights, whole
 * tiles) of every matrix from a shared counter, so that the small
 * low-rank products (serial one by one) share the threads with the big
 * ones, a token pays one wake-up for all of them, and the threads finish
 * together. Every output is the
 * one slm_rwkv_mm gives for M = 1 (the same kernel on the same rows). */
slm_status slm_rwkv_mv_group(slm_pool *pool, const slm_rwkv_mv *mv, int n, slm_error *err);

/* Rows r0..r1-1 of one such product on the calling thread, as the group
 * computes them; from inside a pool job only when slm_rwkv_mv_in_job says
 * the products' encoded inputs fit the kernels' stack buffer. */
slm_status slm_rwkv_mv_rows(const slm_rwkv_mv *mv, int64_t r0, int64_t r1, slm_error *err);
int slm_rwkv_mv_in_job(const slm_rwkv_mv *mv, int n);

/* slm_rwkv_wkv6 with the heads split between the pool's threads when
 * there are several heads and enough work (same results). */
void slm_rwkv_wkv6_pool(slm_pool *pool, int n, int64_t n_head, int64_t hs, const float *r,
                        const float *k, const float *v, const float *w, const float *u, float *S,
                        float *y);

/* slm_rwkv_wkv7 for heads h0..h1-1 of rows dim floats apart, as picked at
 * run time (slm_rwkv_wkv7_heads): the portable loop, or on CPUs with AVX2
 * and FMA and hs a multiple of 8 its vectorized twin (rwkv_avx2.c; same
 * recurrence, sums taken lane-wise). */
void slm_rwkv_wkv7_heads(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim, const float *r,
                         const float *w, const float *k, const float *v, const float *a,
                         const float *b, float *S, float *y);
void slm_rwkv_wkv7_heads_generic(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim,
                                 const float *r, const float *w, const float *k, const float *v,
                                 const float *a, const float *b, float *S, float *y);
#if defined(__x86_64__)
void slm_rwkv_wkv7_heads_avx2(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim,
                              const float *r, const float *w, const float *k, const float *v,
                              const float *a, const float *b, float *S, float *y);
#endif

/* v7's per-head steps between the projections and the output projection
 * (v7_heads in rwkv_tmix.c): the n rows of the projections r w k v a g,
 * the value-residual term nu, the scratch rows na nb (-kk and kk * a), the
 * layer's head states S, the output y and the first layer's v_first. */
/* One sequence's rows in a forward over several (slm.batch): its layer's
 * state (slm_rwkv_layer of its own state: token shifts first) and its rows
 * [r0, r0 + n) of the stacked activations. */
typedef struct slm_rwkv_span {
    float *ls;
    int r0, n;
} slm_rwkv_span;
/* spans a forward keeps on its stack (more: the heap) */
#define SLM_RWKV_SPANS_STACK 32

typedef struct slm_rwkv7_io {
    const slm_rwkv_tmix *b;
    int n;
    float *r, *w, *k, *v, *a, *g, *nu, *na, *nb, *S, *y, *v_first;
} slm_rwkv7_io;

/* Row-wise pieces of the v6/v7 mixes, the portable loop or its AVX-512
 * twin (same floats) picked at run time (rwkv_rows.c), n rows of dim:
 *   shift_diff: sx[t] = prev(t) - x[t], prev the carried row for t = 0
 *   relu_sq:    y = max(y, 0)^2 in place (the channel mix's key)
 *   shift_mix:  mix i into out + i * out_stride, i < n_mix:
 *               out_i[t][c] = sx[t][c] * m[i][c] + x[t][c]  (sx not stored) */
void slm_rwkv_shift_diff(float *sx, const float *x, const float *carry, int n, int64_t dim);
void slm_rwkv_relu_sq(float *y, int64_t n);
void slm_rwkv_shift_mix(float *out, size_t out_stride, const float *x, const float *carry,
                        const float *const *m, int n_mix, int n, int64_t dim);
/* The low-rank hiddens' activations in place: tanh, and sigmoid
 * 1 / (1 + e^-y). Their AVX-512 twins agree to rounding, not bit for bit:
 * sigmoid within a few ulp, tanh within 2e-7 absolute (1 - 2 / (e^2y + 1)). */
void slm_rwkv_tanh(float *y, int64_t n);
void slm_rwkv_sigmoid(float *y, int64_t n);

/* The AVX-512 kernels (rwkv_avx512.c); call only when
 * slm_kernels_use_avx512(). wkv7_heads_avx512 gives
 * slm_rwkv_wkv7_heads_generic's floats bit for bit for hs a multiple of 16
 * up to SLM_RWKV_AVX512_MAX_HS (its transposed state lives on the stack);
 * slm_rwkv7_heads_avx512 agrees with the portable v7_heads to rounding
 * (its exp is exp16's, its head sums lane-wise). */
#define SLM_RWKV_AVX512_MAX_HS 128
#if defined(__x86_64__)
void slm_rwkv_wkv7_heads_avx512(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim,
                                const float *r, const float *w, const float *k, const float *v,
                                const float *a, const float *b, float *S, float *y);
void slm_rwkv7_heads_avx512(const slm_rwkv7_io *io, int64_t h0, int64_t h1);
void slm_rwkv_shift_diff_avx512(float *sx, const float *x, const float *carry, int n, int64_t dim);
void slm_rwkv_relu_sq_avx512(float *y, int64_t n);
void slm_rwkv_tanh_avx512(float *y, int64_t n);
void slm_rwkv_sigmoid_avx512(float *y, int64_t n);
void slm_rwkv_shift_mix_avx512(float *out, size_t out_stride, const float *x, const float *carry,
                               const float *const *m, int n_mix, int n, int64_t dim);
#endif

/* The token-shift row of token t of a batch: the carried row for t = 0,
 * else the previous input row. */
static inline const float *slm_rwkv_prev(const float *carry, const float *x, int t, int64_t dim)
{
    return t == 0 ? carry : x + (size_t)(t - 1) * (size_t)dim;
}

/* Per-layer pieces of the state. */
static inline float *slm_rwkv_layer(const slm_rwkv_state *st, int layer)
{
    return st->s + (size_t)layer * st->layer_floats;
}

/* The spans of a batch's n_seq sequences at layer (slm.batch): each
 * sequence's state must have work's layout (the same model's: work fits
 * the block, so they do). *out is small (n_seq <= SLM_RWKV_SPANS_STACK)
 * or a malloc'd array the caller frees. The message names `what`. */
struct slm_seq;
slm_status slm_rwkv_spans(const struct slm_seq *seqs, int n_seq, int layer, const slm_rwkv_state *work,
                          slm_rwkv_span *small, slm_rwkv_span **out, const char *what, slm_error *err);

#endif
