/* The blocks of RWKV language models, versions 4, 5.1, 5.2, 6 and 7, as
 * rwkv.cpp computes them (rwkv_graph.inc) and as the reference GGUF
 * implementation (llama.cpp's rwkv6/rwkv7 graphs) does for v6 and v7.
 *
 * A layer is   x += time_mix(ln1(x));   x += channel_mix(ln2(x))
 * and both mixes read the previous token's (normalized) input: the "token
 * shift". The time mix carries a recurrent state per layer:
 *   v4    aa, bb, pp (dim each): numerator, denominator and running max of
 *         the exponentially decayed sum over past tokens (max trick)
 *   v5+   one (head_size x head_size) matrix per head
 * and v7 passes the first layer's value vector to every later layer
 * ("v first" residual).
 *
 * Shapes (slm order, outermost first): activations (n, dim) rows of f32;
 * projection weights (out, in) as stored, any matmul dtype; mixing vectors
 * and other 1-D parameters f32 of dim elements (v5.1 decay and first: one
 * value per head). Parameters are used as the file stores them: the Lua
 * definition (models/rwkv.lua) passes rwkv.cpp's pre-transformed values
 * (v4 decay = -exp(w), v5 decay = exp(-exp(w)), v5.1 first = exp(u)) and
 * GGUF's raw ones to the matching version code. */
#ifndef SLM_RWKV_H
#define SLM_RWKV_H

#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"
#include "../core/tensor.h"

typedef enum slm_rwkv_version {
    SLM_RWKV_V4 = 40,
    SLM_RWKV_V5_1 = 51,
    SLM_RWKV_V5_2 = 52,
    SLM_RWKV_V6 = 60,
    SLM_RWKV_V7 = 70
} slm_rwkv_version;

/* Time mix of one layer. Unused fields are NULL for a version. */
typedef struct slm_rwkv_tmix {
    slm_rwkv_version version;
    int64_t dim, n_head, head_size;   /* dim = n_head * head_size (v4: 1 head) */
    float gn_eps;                     /* group norm (ln_x) epsilon */
    int first_layer;                  /* v7: this layer sets v_first */

    /* v4, v5: lerp mixes x*m + prev*(1-m) */
    const float *mix_k, *mix_v, *mix_r, *mix_g;
    /* v6: x + sx*(maa[i] + lora_i), order w k v r g; maa_x for the lora input.
     * v7: x + sx*maa[i], order r w k v a g. sx = prev - x. */
    const float *maa_x, *maa[6];
    const slm_tensor *maa_w1;         /* v6 (5*extra, dim) */
    const slm_tensor *maa_w2;         /* v6 (5, dim, extra) */

    const float *decay, *first;       /* v4..v6; v5.1: n_head values each */
    const slm_tensor *decay_w1, *decay_w2;   /* v6 (rank, dim), (dim, rank) */

    /* v7 */
    const float *w0, *a0, *v0, *k_k, *k_a, *r_k;
    const slm_tensor *w1, *w2, *a1, *a2, *v1, *v2, *g1, *g2;

    const slm_tensor *wr, *wk, *wv, *wo, *wg;
    const float *lnx_w, *lnx_b;       /* group norm weight and bias (v5+) */
} slm_rwkv_tmix;

/* Channel mix of one layer. */
typedef struct slm_rwkv_cmix {
    slm_rwkv_version version;
    int64_t dim, n_ff;
    const float *mix_k, *mix_r;       /* v4/v5 lerp, v6 maa; v7 only mix_k */
    const slm_tensor *wk, *wv, *wr;   /* (n_ff, dim), (dim, n_ff), (dim, dim) */
} slm_rwkv_cmix;

/* Recurrent state of all layers plus the scratch of one batch. */
typedef struct slm_rwkv_state {
    slm_rwkv_version version;
    int n_layer, n_batch;
    int64_t dim, n_head, head_size, n_ff, lora;
    size_t layer_floats;   /* per layer: att shift, ffn shift, then v4 aa bb pp
                              or v5+ n_head * head_size^2 */
    float *s;              /* n_layer * layer_floats */
    float *xs;             /* 6 * n_batch * dim: mixed inputs */
    float *p;              /* 6 * n_batch * dim: projections */
    float *hid, *tmp;      /* n_batch * lora each */
    float *y;              /* n_batch * dim: wkv output */
    float *ff;             /* n_batch * n_ff */
    float *v_first;        /* n_batch * dim (v7) */
} slm_rwkv_state;

/* lora: the widest low-rank hidden size (v6 5*extra and decay rank, v7
 * ranks); 0 if none. */
slm_rwkv_state *slm_rwkv_state_new(slm_rwkv_version version, int n_layer, int64_t dim,
                                   int64_t n_head, int64_t n_ff, int64_t lora, int n_batch,
                                   slm_error *err);
void slm_rwkv_state_free(slm_rwkv_state *st);
/* The state before the first token: zeros, v4 pp = -1e30 (rwkv.cpp). */
void slm_rwkv_state_reset(slm_rwkv_state *st);
size_t slm_rwkv_state_floats(const slm_rwkv_state *st);   /* n_layer * layer_floats */

/* Snapshots: O(state) bytes whatever the number of tokens seen. The header
 * of core/snapshot.h, kind "RWKV", version 2, dims version (40, 51, 52, 60,
 * 70), n_layer, dim, n_head; then the state's floats as st->s holds them
 * (per layer: the time mix's and the channel mix's token shift, then v4's
 * aa, bb, pp or the heads' matrices), float32. Restore checks the header,
 * the dims against st and the length before it writes anything, and gives
 * the snapshot's n_past. It also reads the layout of earlier slm versions
 * (Snapshot:save files):
 *   "SLMRWKV1" | int32 version, n_layer, dim, n_head, n_past | the same floats */
size_t slm_rwkv_snapshot_size(const slm_rwkv_state *st);
void slm_rwkv_snapshot(const slm_rwkv_state *st, int n_past, void *buf);
slm_status slm_rwkv_restore(slm_rwkv_state *st, const void *buf, size_t len, int *n_past, slm_error *err);

/* Checks a block against its version and shapes; the message names the
 * offending parameter. */
slm_status slm_rwkv_tmix_check(const slm_rwkv_tmix *b, slm_error *err);
slm_status slm_rwkv_cmix_check(const slm_rwkv_cmix *b, slm_error *err);

/* x: n rows (already layer-normed), out: n rows of the mix's output. The
 * token shift and the layer's recurrent state advance by n tokens; layer
 * is 0-based. The projections of all n rows are one matmul each; the
 * recurrence runs over them in order. out must not alias x. */
slm_status slm_rwkv_tmix_forward(slm_pool *pool, const slm_rwkv_tmix *b, slm_rwkv_state *st,
                                 int layer, int n, const float *x, float *out, slm_error *err);
slm_status slm_rwkv_cmix_forward(slm_pool *pool, const slm_rwkv_cmix *b, slm_rwkv_state *st,
                                 int layer, int n, const float *x, float *out, slm_error *err);

/* The WKV recurrences over n tokens, exposed for tests. Rows of dim.
 * v4: w = decay (-exp(w)), u = first; aa, bb, pp: state (dim each).
 * v5/v6: y[j] = sum_i r[i] (u[i] k[i] v[j] + S[i][j]); S = S*w[i] + k[i]v[j]
 *   per head, S (head_size x head_size) indexed [i = key][j = value]; w
 *   holds n rows of per-channel decays (already exp(-exp(.))).
 * v7: S[i][j] (i = value, j = key): sa = sum_j a[j] S[i][j];
 *   S[i][j] = S[i][j] w[j] + v[i] k[j] + sa b[j];  y[i] = sum_j S[i][j] r[j] */
void slm_rwkv_wkv4(int n, int64_t dim, const float *w, const float *u, const float *k,
                   const float *v, float *aa, float *bb, float *pp, float *y);
void slm_rwkv_wkv6(int n, int64_t n_head, int64_t hs, const float *r, const float *k,
                   const float *v, const float *w, const float *u, float *S, float *y);
void slm_rwkv_wkv7(int n, int64_t n_head, int64_t hs, const float *r, const float *w,
                   const float *k, const float *v, const float *a, const float *b, float *S,
                   float *y);

#endif
