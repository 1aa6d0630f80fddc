/* Backward passes of the row ops of a transformer, the f32 linear layer of
 * training and the fused softmax-cross-entropy (the optimizer: adamw.h).
 *
 * Conventions (docs/TRAINING.md):
 *  - activations are contiguous f32 rows (rows, n); weights are stored
 *    (out, in) as in GGUF, so a linear layer is y = x W^T (+ b);
 *  - a backward with an `accumulate` flag adds into the gradients of its
 *    inputs (dx += ...) when it is 1 and overwrites them when it is 0;
 *    parameter gradients (dW, db, dw) always accumulate;
 *  - a batch is B sequences of T tokens, token t of sequence b being row
 *    b*T + t at position t.
 *
 * Every function takes the pool its big loop is split on by (ith, nth)
 * (NULL, or a pool busy with another job: the calling thread alone). Small
 * problems run on the calling thread. Outputs must not overlap inputs
 * unless a function says so. Functions returning a status check their
 * sizes (and ids, targets) before writing anything; the others are void on
 * inputs their caller has checked. */
#ifndef SLM_GRAD_H
#define SLM_GRAD_H

#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"
#include "../kernels/ops.h"

/* --- linear layer (slm_sgemm, kernels/sgemm.h, one per thread, on the pool) */

/* y (n, out) = x (n, in) . W^T + b;  W (out, in), b (out) or NULL.
 * SLM_ERANGE when a dimension exceeds what cblas takes (int). */
slm_status slm_grad_linear(slm_pool *pool, float *y, const float *x, const float *W,
                           const float *b, int64_t n, int64_t in, int64_t out, slm_error *err);

/* The adjoint of slm_grad_linear, given dy (n, out):
 *   dx (n, in)   (+)= dy . W          (overwritten when accumulate is 0)
 *   dW (out, in)  += dy^T . x
 *   db (out)      += sum over the n rows of dy
 * Any of dx, dW, db may be NULL (not wanted). dx is split by rows of n, dW
 * by rows of out (or by columns of in when in > out) and db by columns, so
 * no two threads write the same element; db's column sums run in double in
 * row order, independent of the thread count. */
slm_status slm_grad_linear_backward(slm_pool *pool, float *dx, float *dW, float *db,
                                    const float *dy, const float *x, const float *W, int64_t n,
                                    int64_t in, int64_t out, int accumulate, slm_error *err);

/* --- embedding ------------------------------------------------------------- */

/* Scatter-add of the forward x[i] = W[ids[i]]:  dW[ids[i]] += dy[i] for
 * i < n; dW (vocab, dim), dy (n, dim). Repeated ids add in order of i.
 * SLM_ERANGE (nothing written) when an id is outside 0..vocab-1. Threads
 * split the columns of dW, so repeated ids never race. */
slm_status slm_grad_embed_backward(slm_pool *pool, float *dW, int64_t vocab, int64_t dim,
                                   const int32_t *ids, const float *dy, int64_t n, slm_error *err);

/* --- RMSNorm --------------------------------------------------------------- */

/* Backward of y = x r w per row, r = 1 / sqrt(mean(x^2) + eps) as
 * slm_ops_rmsnorm computes it (w NULL: no weight). With g = dy w:
 *   dx = r g - x r^3 (g . x) / n          (+= when accumulate)
 *   dw += sum over rows of dy (x r)       (dw ignored when w is NULL)
 * x, dy, dx: (rows, n). dx must not overlap dy or x. Row sums are in
 * double; dw's column sums run in double in row order (independent of the
 * thread count). SLM_ENOMEM when the per-row scratch cannot be had. */
slm_status slm_grad_rmsnorm_backward(slm_pool *pool, float *dx, float *dw, const float *dy,
                                     const float *x, const float *w, int64_t rows, int64_t n,
                                     float eps, int accumulate, slm_error *err);

/* --- RoPE ------------------------------------------------------------------- */

/* x (n_tok, n_heads, head_dim) rotated in place as slm_ops_rope does at
 * position r % T for row r (T >= 1), bit for bit: the cos and sin of the
 * T positions come from slm_ops_rope itself (rotating unit pairs), once
 * per call instead of once per row. SLM_EINVAL on an odd n_rot or one
 * above head_dim; SLM_ENOMEM without scratch for the T x n_rot table. */
slm_status slm_grad_rope(slm_pool *pool, float *x, int64_t n_tok, int64_t T, int64_t n_heads,
                         int64_t head_dim, const slm_rope_params *p, slm_error *err);
/* Its adjoint, in place on the gradient dx: each pair's rotation R(theta)
 * (times attn_factor) is orthogonal, so its transpose is R(-theta):
 *   (d0, d1) <- (d0 c + d1 s, d1 c - d0 s)
 * with the forward's c and s (the same table). */
slm_status slm_grad_rope_backward(slm_pool *pool, float *dx, int64_t n_tok, int64_t T, int64_t n_heads,
                                  int64_t head_dim, const slm_rope_params *p, slm_error *err);

/* --- activations ------------------------------------------------------------ */

/* Gated feed-forward units, elementwise over n values:
 *   swiglu: out = silu(g) u,       silu(z) = z / (1 + e^-z)
 *   geglu:  out = gelu(g) u,       gelu(z) = 0.5 z (1 + tanh(k (z + a z^3))),
 *                                  k = sqrt(2/pi), a = 0.044715
 * with slm_ops_silu / slm_ops_gelu (the inference ops) for the activation;
 * out may be g or u. Backward, given dout:
 *   dg (+)= dout u act'(g),   du (+)= dout act(g)
 *   silu'(z) = s (1 + z (1 - s)),  s = 1 / (1 + e^-z)
 *   gelu'(z) = 0.5 (1 + t) + 0.5 z (1 - t^2) k (1 + 3 a z^2),  t = tanh(k (z + a z^3))
 * dg and du must differ; either may equal one of the inputs (each element
 * is read before it is written). */
void slm_grad_swiglu(slm_pool *pool, float *out, const float *g, const float *u, int64_t n);
void slm_grad_swiglu_backward(slm_pool *pool, float *dg, float *du, const float *dout,
                              const float *g, const float *u, int64_t n, int accumulate);
void slm_grad_geglu(slm_pool *pool, float *out, const float *g, const float *u, int64_t n);
void slm_grad_geglu_backward(slm_pool *pool, float *dg, float *du, const float *dout,
                             const float *g, const float *u, int64_t n, int accumulate);
/* Plain activations (non-gated feed-forwards): dx (+)= dy act'(x); dx may
 * equal dy or x. */
void slm_grad_silu_backward(slm_pool *pool, float *dx, const float *dy, const float *x, int64_t n,
                            int accumulate);
void slm_grad_gelu_backward(slm_pool *pool, float *dx, const float *dy, const float *x, int64_t n,
                            int accumulate);

/* Soft-capping (gemma2), y = cap tanh(x / cap), from the forward's output:
 * dx (+)= dy (1 - (y / cap)^2); dx may equal dy or y. */
void slm_grad_softcap_backward(slm_pool *pool, float *dx, const float *dy, const float *y, float cap,
                               int64_t n, int accumulate);

/* --- loss --------------------------------------------------------------------- */

/* Fused softmax-cross-entropy over logits (rows, V), overwritten in place by
 * the gradient of the summed loss times scale:
 *   logits[r] <- scale (softmax(logits[r]) - onehot(targets[r]))
 * and *loss = sum over rows of logsumexp(logits[r]) - logits[r][targets[r]]
 * (natural log; each row's term in double, summed in row order). A
 * negative target marks an ignored row: no loss, a zero gradient row.
 * SLM_ERANGE (nothing written) when a target is >= V; SLM_ENOMEM without
 * scratch for the per-row losses. Soft-capping and logit scaling are the
 * caller's (before, and on the gradient after). */
slm_status slm_grad_xent(slm_pool *pool, float *logits, const int32_t *targets, int64_t rows,
                         int64_t V, float scale, double *loss, slm_error *err);

/* One row of slm_grad_xent, the same bits: the AVX2 path when avx2 (the
 * value of slm_kernels_use_avx2() a caller read once), else the scalar
 * one. Returns the row's loss (0 for a negative target). Fused losses
 * built on the cross-entropy (train/distill.c) call it so that their CE
 * term is this kernel's. */
double slm_grad_xent_row(float *x, int64_t V, int32_t target, float scale, int avx2);

/* --- buffers -------------------------------------------------------------------- */

/* *out = sum of x[i]^2 in double (for global-norm clipping), summed per
 * chunk of fixed size and the chunks in order: the result does not depend
 * on the thread count. SLM_ENOMEM without scratch. */
slm_status slm_grad_sumsq(slm_pool *pool, const float *x, int64_t n, double *out, slm_error *err);
/* dst += s src;  x *= s;  x = 0 */
void slm_grad_axpy(slm_pool *pool, float *dst, const float *src, float s, int64_t n);
void slm_grad_scale(slm_pool *pool, float *x, float s, int64_t n);
void slm_grad_zero(slm_pool *pool, float *x, int64_t n);

/* AVX2 twins (grad_avx2.c), picked at run time by the functions above when
 * slm_kernels_use_avx2(); each is tested against the scalar version. They
 * work on a range of elements (or rows) of one call. */
#if defined(__x86_64__)
void slm_grad_swiglu_bwd_avx2(float *dg, float *du, const float *dout, const float *g,
                              const float *u, int64_t n, int accumulate);
void slm_grad_geglu_bwd_avx2(float *dg, float *du, const float *dout, const float *g,
                             const float *u, int64_t n, int accumulate);
void slm_grad_silu_bwd_avx2(float *dx, const float *dy, const float *x, int64_t n, int accumulate);
void slm_grad_gelu_bwd_avx2(float *dx, const float *dy, const float *x, int64_t n, int accumulate);
/* RMSNorm backward: r (and dx when non-NULL) of `rows` rows; dw's columns
 * [c0, c1) from r */
void slm_grad_rms_rows_avx2(float *dx, float *r, const float *dy, const float *x, const float *w, int64_t rows,
                            int64_t n, float eps, int accumulate);
void slm_grad_rms_cols_avx2(float *dw, const float *dy, const float *x, const float *r, int64_t rows, int64_t n,
                            int64_t c0, int64_t c1);
/* one row of V logits: returns logsumexp - logit[target] and writes the
 * gradient (target >= 0) */
double slm_grad_xent_row_avx2(float *x, int64_t V, int32_t target, float scale);
#endif

#endif
