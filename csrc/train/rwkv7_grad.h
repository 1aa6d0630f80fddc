/* RWKV-7 blocks for training: a forward over B sequences of T tokens that
 * records what the backward needs, and the backward (reverse time through
 * the WKV-7 recurrence), for the time mix and the channel mix. The math is
 * the inference blocks' (csrc/blocks/rwkv_tmix.c tmix_v7, rwkv.c's channel
 * mix; llama.cpp's rwkv7 graph), each sequence starting from a zero state
 * (token shift from a zero row, WKV state zero).
 *
 * Rows: activation row b*T + t is token t of sequence b, `dim` f32 wide.
 * Parameters are f32, contiguous, weights (out, in): y = x W^T.
 *
 * Time mix, per token (sx = x[t-1] - x[t], x[-1] = 0; c = 0.606531):
 *   x_i = x + sx * maa[i]                 i = r w k v a g   (maa: (6, dim))
 *   r = Wr x_r    k = Wk x_k    v = Wv x_v
 *   w = exp(-c * sigmoid(w0 + W2 tanh(W1 x_w)))      (= exp(-exp(-softplus(-z) - 0.5)))
 *   a = sigmoid(a0 + A2 (A1 x_a))
 *   g = G2 sigmoid(G1 x_g)
 *   first layer: v_first = v;   later: v = v + (v_first - v) * sigmoid(v0 + V2 (V1 x_v))
 *   kk = l2-normalized (k * k_k) per head;   k = k + (a * k * k_a - k * k_a)
 *   per head, S (hs x hs, [value i][key j]), zero at t = 0:
 *     S = S diag(w) + v k^T + (S (-kk)) (kk * a)^T;   y = S r
 *   y = groupnorm(y) per head * lnx_w + lnx_b  (eps gn_eps)
 *   y = y + v * sum_head(k * r * r_k);   out = Wo (y * g)
 * Channel mix: x_k = x + sx * mix_k;  out = Wv relu(Wk x_k)^2.
 *
 * What the forward records (`saved`, *_saved_floats): the block input x
 * (the caller's buffer may be reused by the next layer), the projections
 * r k v, sigmoid(w0 + lora) (w is recomputed from it bit for bit, and its
 * derivative needs the sigmoid, which w near 1 loses), a, g, the low-rank
 * hiddens, v_first and the value-mix gate (later layers), the WKV output
 * before the group norm, and the WKV state of every head at every
 * `chunk`-th token. The rest (the mixed inputs, w, k', v', kk, the group
 * norm's statistics, the gate input) is recomputed. Keeping every state
 * would cost B*T*H*hs^2 floats; checkpoints cost B*H*ceil(T/chunk)*hs^2
 * and the backward recomputes the states within one chunk at a time
 * (one more pass of the recurrence; chunk+1 states per thread).
 *
 * Backward: dx is overwritten (accumulate 0) or added to (1); parameter
 * gradients are always added to; a NULL gradient pointer skips that
 * parameter (frozen). v_first: the first layer's forward writes it and its
 * backward reads dv_first (the sum the later layers added; NULL = none);
 * a later layer's forward reads it and its backward adds to dv_first.
 *
 * Threads: projections are sgemm calls split by fixed blocks of output
 * rows, everything between them runs per head (heads split across the
 * pool), the mixes per channel: the results do not depend on the number
 * of threads. */
#ifndef SLM_RWKV7_GRAD_H
#define SLM_RWKV7_GRAD_H

#include <stddef.h>
#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"

/* The decay's scale e^-0.5 as the inference block writes it. */
#define SLM_RWKV7_DECAY_SCALE 0.606531f
/* Default WKV checkpoint spacing (tokens). */
#define SLM_RWKV7_CHUNK 16

typedef struct slm_rwkv7_tmix_shape {
    int n_seq, n_tok;                    /* B sequences of T tokens */
    int64_t dim, head_size;              /* dim = n_head * head_size */
    int64_t rank_w, rank_a, rank_v, rank_g;   /* low-rank widths; rank_v 0 in the first layer */
    int chunk;                           /* state checkpoint every chunk tokens (0: default) */
    float gn_eps;                        /* group norm epsilon (64e-5 for v7) */
    int first_layer;                     /* sets v_first instead of mixing it in */
} slm_rwkv7_tmix_shape;

/* Parameters of a time mix, or their gradients (same layout). */
typedef struct slm_rwkv7_tmix_params {
    float *maa;                          /* (6, dim): r w k v a g */
    float *w0, *a0, *v0;                 /* (dim) */
    float *w1, *a1, *v1, *g1;            /* (rank, dim) */
    float *w2, *a2, *v2, *g2;            /* (dim, rank) */
    float *k_k, *k_a, *r_k;              /* (dim) */
    float *wr, *wk, *wv, *wo;            /* (dim, dim) */
    float *lnx_w, *lnx_b;                /* (dim) */
} slm_rwkv7_tmix_params;

typedef struct slm_rwkv7_cmix_shape {
    int n_seq, n_tok;
    int64_t dim, n_ff;
} slm_rwkv7_cmix_shape;

typedef struct slm_rwkv7_cmix_params {
    float *mix_k;                        /* (dim) */
    float *wk;                           /* (n_ff, dim) */
    float *wv;                           /* (dim, n_ff) */
} slm_rwkv7_cmix_params;

/* Checks the shape (sizes positive, dim a multiple of head_size, ranks,
 * chunk); the message names the field. */
slm_status slm_rwkv7_tmix_shape_check(const slm_rwkv7_tmix_shape *s, slm_error *err);
slm_status slm_rwkv7_cmix_shape_check(const slm_rwkv7_cmix_shape *s, slm_error *err);
/* Floats of `saved` (0 if the shape is invalid or the size overflows). */
size_t slm_rwkv7_tmix_saved_floats(const slm_rwkv7_tmix_shape *s);
size_t slm_rwkv7_cmix_saved_floats(const slm_rwkv7_cmix_shape *s);
/* Parameters a shape requires that p lacks: the first missing field's
 * name, or NULL when none is missing (v0/v1/v2 only after layer 0). */
const char *slm_rwkv7_tmix_missing(const slm_rwkv7_tmix_shape *s, const slm_rwkv7_tmix_params *p);

/* x, out: (B*T, dim), out must not alias x; v_first (B*T, dim): written by
 * the first layer, read by the others. saved: *_saved_floats floats. */
slm_status slm_rwkv7_tmix_forward(slm_pool *pool, const slm_rwkv7_tmix_shape *s,
                                  const slm_rwkv7_tmix_params *p, const float *x, float *out,
                                  float *v_first, float *saved, slm_error *err);
/* dout (B*T, dim) the gradient of out; dx (B*T, dim); dv_first as above.
 * saved: as the forward of the same shape and parameters left it
 * (checked: SLM_EINVAL if it holds no such forward). */
slm_status slm_rwkv7_tmix_backward(slm_pool *pool, const slm_rwkv7_tmix_shape *s,
                                   const slm_rwkv7_tmix_params *p, slm_rwkv7_tmix_params *grad,
                                   const float *saved, const float *dout, float *dx,
                                   float *dv_first, int accumulate, slm_error *err);

slm_status slm_rwkv7_cmix_forward(slm_pool *pool, const slm_rwkv7_cmix_shape *s,
                                  const slm_rwkv7_cmix_params *p, const float *x, float *out,
                                  float *saved, slm_error *err);
slm_status slm_rwkv7_cmix_backward(slm_pool *pool, const slm_rwkv7_cmix_shape *s,
                                   const slm_rwkv7_cmix_params *p, slm_rwkv7_cmix_params *grad,
                                   const float *saved, const float *dout, float *dx,
                                   int accumulate, slm_error *err);

#endif
