/* The attention block's steps, shared by its forwards: one session's rows
 * (transformer.c) and the rows of several sessions at once (seqbatch.c).
 * Not part of the blocks' public interface. */
#ifndef SLM_ATTN_INTERNAL_H
#define SLM_ATTN_INTERNAL_H

#include "transformer.h"

/* The attention's scratch for n rows: q, k, v and the heads' outputs, the
 * fused projection's rows (attn_qkv only), each row's position and, in an
 * encoder, the call's keys then values as F16 rows (what a cache holds). */
typedef struct slm_attn_scratch {
    float *q, *k, *v, *att, *qkv;
    int64_t *pos;
    slm_f16 *kv16;
} slm_attn_scratch;

/* Bytes of workspace n rows need; with work, also carves *a from it (0 when
 * the workspace is too small). */
size_t slm_attn_carve(const slm_attn_block *b, int n, const slm_work *work, slm_attn_scratch *a);

/* q (n, q_dim), k, v (n, kv_dim) of x rows, row i at position ws->pos[i]
 * (the caller fills them): the projections, their biases, the q/k norms and
 * RoPE. Every step is row-wise or a batch-invariant matmul, so a row's
 * q, k, v do not depend on the other rows of the call. */
slm_status slm_attn_project(slm_pool *pool, const slm_attn_block *b, int n, const float *x,
                            int64_t dim, const slm_attn_scratch *ws, slm_error *err);

#endif
