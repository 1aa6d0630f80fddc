/* The gated short convolution block of LFM2 (Liquid AI's hybrid models),
 * as the reference implementation (llama.cpp's lfm2 graph with ggml's
 * ssm_conv CPU op) computes one such layer:
 *
 *   bcx = in_proj(u)                  (n, 3 dim): B = first dim values of a
 *                                     row, C = the next dim, X = the last dim
 *   v   = B * X                       (n, dim), elementwise
 *   conv_t[c] = sum_k w[c][k] v_{t - (L-1) + k}[c]     L = l_cache taps per
 *                                     channel, w[c][k] stored at L c + k: the
 *                                     last tap (k = L-1) weighs the current
 *                                     token; v is 0 before the first token
 *   out = out_proj(C * conv)          (n, dim)
 *
 * (The paper's "double-gated short convolution": B gates the input of a
 * depthwise causal conv, C its output.) What a layer carries from token to
 * token is the last L - 1 values of v per channel: a state O(dim), held per
 * session in an slm_shortconv_state with one slot per conv layer of the
 * model's layer plan. A forward over n tokens (a prompt batch) runs both
 * projections as one matmul over the n rows and the conv over time in one
 * call; n = 1 is the decode step, the same code, the same floats.
 *
 * Scratch (the projection rows and the gated conv output) comes from the
 * session's workspace (core/work.h): slm_shortconv_work_size(b, n) bytes.
 *
 * Snapshots of a state (slm_shortconv_snapshot) hold every slot's values:
 * the header of core/snapshot.h, kind "SCNV", version 2, dims conv layers
 * (n_slot), channels (dim), l_cache; then
 *   float32 v[n_slot][dim][l_cache - 1]     (per channel, oldest first)
 * Restore also reads the layout of earlier slm versions (Snapshot:save files):
 *   "SLMSC1\0\0" | int32 n_slot, dim, l_cache, n_past | the same floats */
#ifndef SLM_SHORTCONV_H
#define SLM_SHORTCONV_H

#include <stddef.h>
#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"
#include "../core/tensor.h"
#include "../core/work.h"
#include "../kernels/ops.h"

/* taps per channel a block may have (LFM2 uses 3): what the conv
 * (slm_ops_causal_conv, kernels/ops.h) keeps on its stack */
#define SLM_SHORTCONV_MAX_CACHE SLM_OPS_MAX_CONV

/* Weights as stored in GGUF: matrices (out, in) with contiguous rows, any
 * dtype with a matmul kernel; the taps f32. */
typedef struct slm_shortconv_block {
    const slm_tensor *in_proj;    /* shortconv.in_proj (3 dim, dim): rows B | C | X */
    const slm_tensor *out_proj;   /* shortconv.out_proj (dim, dim) */
    const float *conv;            /* shortconv.conv (dim, l_cache), oldest tap first */
    int64_t dim;
    int l_cache;
} slm_shortconv_block;

/* Checks dim and l_cache (1..SLM_SHORTCONV_MAX_CACHE), the taps, and the
 * matrices' shapes and dtypes; the message names the weight. */
slm_status slm_shortconv_check(const slm_shortconv_block *b, slm_error *err);

/* The conv states of one sequence: n_slot layers of dim channels. */
typedef struct slm_shortconv_state {
    int n_slot, l_cache;
    int64_t dim;
    float *v;      /* (n_slot, dim, l_cache - 1): last values of v, oldest first */
} slm_shortconv_state;

slm_shortconv_state *slm_shortconv_state_new(int n_slot, int64_t dim, int l_cache, slm_error *err);
void slm_shortconv_state_free(slm_shortconv_state *s);   /* NULL is fine */
void slm_shortconv_state_clear(slm_shortconv_state *s);  /* the state before any token */
size_t slm_shortconv_state_len(const slm_shortconv_state *s);   /* floats, all slots */

/* Snapshot (layout above): its size, the bytes written into buf (of that
 * size); restore checks the header, the shape against s and the length
 * before writing anything, and gives the snapshot's n_past. */
size_t slm_shortconv_snapshot_size(const slm_shortconv_state *s);
void slm_shortconv_snapshot(const slm_shortconv_state *s, int n_past, void *buf);
slm_status slm_shortconv_restore(slm_shortconv_state *s, const void *buf, size_t len, int *n_past,
                                 slm_error *err);

/* Bytes of workspace a forward of n rows needs. */
size_t slm_shortconv_work_size(const slm_shortconv_block *b, int n);

/* x (n, dim) -> out (n, dim) for the layer in slot of s, advancing that
 * slot by n tokens. out must not alias x. */
slm_status slm_shortconv_forward(slm_pool *pool, const slm_shortconv_block *b,
                                 slm_shortconv_state *s, int slot, int n, const float *x,
                                 float *out, const slm_work *work, slm_error *err);

#endif
