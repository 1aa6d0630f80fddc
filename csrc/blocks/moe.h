/* Mixture-of-experts feed-forward (Mixtral, Qwen2-MoE, Qwen3-MoE, OLMoE),
 * as the reference's build_moe_ffn computes it.
 *
 * For each token row u (dim):
 *   r = router . u                              (n_expert logits; router is
 *                                                ffn_gate_inp, usually f32)
 *   p = softmax(r) over all experts (or sigmoid(r) per expert)
 *   S = the n_used experts with the largest p, in decreasing order (ties:
 *       the lower index first); an expert's mode may exclude it from S
 *       (disabled) or put it in S ahead of the others (forced), without
 *       changing any p
 *   w_s = p[S_s], / sum_s p[S_s] where the family renormalizes, * scale
 *   y_s = w_s * down_e . act(gate_e . u) * (up_e . u)     e = S_s
 *   out = y_0 + y_1 + ... in slot order (the reference's order of adds)
 *       + sigmoid(shexp_gate . u) * shared_ffn(u)  (Qwen2-MoE's shared expert)
 * gate_e, up_e, down_e are expert e's slices of the 3-D tensors
 * ffn_{gate,up,down}_exps (n_expert, n_ff, dim) / (n_expert, dim, n_ff), read
 * in place through the matmul entry point (any dtype, never copied).
 *
 * Decode (one row) reads only the chosen experts' rows. A batch groups its
 * rows by expert: each chosen expert's gate/up/down run once over the rows
 * that chose it (their inputs gathered into one block), so its weights are
 * read once per batch. A row's result does not depend on its batch (the
 * matmul kernels are batch-invariant). */
#ifndef SLM_MOE_H
#define SLM_MOE_H

#include <stdint.h>

#include "../core/pool.h"
#include "../core/tensor.h"
#include "../core/work.h"
#include "transformer.h"

#define SLM_MOE_MAX_EXPERTS 256

typedef enum slm_moe_gating { SLM_MOE_SOFTMAX = 0, SLM_MOE_SIGMOID = 1 } slm_moe_gating;

/* an expert's mode in a layer (variants) */
enum { SLM_MOE_NORMAL = 0, SLM_MOE_DISABLED = 1, SLM_MOE_FORCED = 2 };

typedef struct slm_moe_block {
    const slm_tensor *router;               /* (n_expert, dim) */
    const slm_tensor *gate, *up, *down;     /* (n_expert, n_ff, dim) x2, (n_expert, dim, n_ff) */
    int n_expert, n_used;
    int64_t n_ff;
    slm_moe_gating gating;
    int norm_topk;                          /* renormalize the selected weights */
    float scale;                            /* weights multiplier (1: none) */
    slm_ffn_act act;
    /* optional shared expert: a SwiGLU FFN on every row, times
     * sigmoid(shexp_gate . u) when shexp_gate (1, dim) is given */
    int has_shared;
    slm_ffn_block shared;
    const slm_tensor *shexp_gate;
} slm_moe_block;

/* Checks the tensors against the shapes (the message names the tensor). */
slm_status slm_moe_block_check(const slm_moe_block *b, int64_t dim, slm_error *err);

/* Router logits of n rows: logits (n, n_expert) = router . x. */
slm_status slm_moe_route(slm_pool *pool, const slm_moe_block *b, int n, const float *x,
                         float *logits, slm_error *err);

/* Bytes of workspace a forward of n rows needs. */
size_t slm_moe_work_size(const slm_moe_block *b, int n, int64_t dim);

/* out (n, dim) = the experts' mixture for x (n, dim) given its router
 * logits (n, n_expert, as slm_moe_route left them or a hook changed them).
 * modes: n_expert SLM_MOE_* bytes or NULL (all normal). counts: NULL, or
 * one pointer per row to n_expert counters (the row's session's for this
 * layer: rows of a batch of sessions point to different ones), each counter
 * incremented once per row that chose its expert. out must not alias x. */
slm_status slm_moe_forward(slm_pool *pool, const slm_moe_block *b, int n, const float *x,
                           const float *logits, const uint8_t *modes, int64_t *const *counts,
                           float *out, int64_t dim, const slm_work *work, slm_error *err);

/* The routing of one row alone, exposed for tests: sel[n_used] experts in
 * slot order and their weights w[n_used]. */
void slm_moe_select(const slm_moe_block *b, const float *logits, const uint8_t *modes, int *sel,
                    float *w);

#endif
