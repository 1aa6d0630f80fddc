/* The blocks of a dense decoder-only transformer (llama, qwen2/3, phi3,
 * gemma 1/2/3, smollm3, granite and llama2.c layouts): token embedding,
 * attention with RoPE and a KV cache, gated or plain feed-forward; and the
 * same attention as an encoder's (BERT: no cache, no causal mask).
 *
 * A model definition in Lua (models/llama.lua) composes them per layer:
 *   x = embed(ids)
 *   for each layer: h = norm(x); x += attention(h); h = norm(x); x += ffn(h)
 *   logits = head(norm(x[last]))
 * (gemma adds post-norms, granite and gemma scale the stream; those are
 * elementwise ops the definition calls.) Each block runs all n rows of a
 * batch (prompt processing) or a single row (decode), parallelizes its
 * matmuls on the pool and takes its scratch from the session's workspace.
 *
 * Shapes: x (n, dim); q (n, n_head*head_dim); k, v (n, n_head_kv*head_dim);
 * weights as stored in GGUF, (out, in) with rows contiguous. */
#ifndef SLM_TRANSFORMER_H
#define SLM_TRANSFORMER_H

#include "../core/pool.h"
#include "../core/tensor.h"
#include "../core/work.h"
#include "../kernels/ops.h"
#include "kvcache.h"

typedef struct slm_attn_block {
    /* separate projections, or one fused wqkv (q_dim + 2 kv_dim, dim) whose
     * rows are q, then k, then v (phi3's attn_qkv) */
    const slm_tensor *wq, *wk, *wv, *wqkv, *wo;
    const float *bq, *bk, *bv, *bo;   /* optional biases (qwen2: q, k, v) */
    /* optional RMSNorm of q and of k after the projections and before
     * RoPE: per head (head_dim weights shared by the heads: qwen3, gemma3)
     * or, with qk_norm_full, over the whole projection (q_dim / kv_dim
     * weights, one RMS over all heads together: olmoe) */
    const float *q_norm, *k_norm;
    int qk_norm_full;
    float norm_eps;
    slm_attn_shape shape;   /* heads, score scale, soft cap, window */
    int use_rope;           /* 0: no rotation at all (SmolLM3's NoPE layers) */
    slm_rope_params rope;
    /* 1: an encoder's attention (BERT), run by slm_attn_encode over the rows
     * of one call, without a cache; shape.unmasked drops the causal mask */
    int encoder;
} slm_attn_block;

typedef enum slm_ffn_act { SLM_FFN_SILU = 0, SLM_FFN_GELU = 1 } slm_ffn_act;

typedef struct slm_ffn_block {
    /* gated: down(act(gate x) * up x); or fused gate_up (2 ff, dim) with the
     * gate in the first ff rows (phi3's ffn_up); plain: down(act(up x)) */
    const slm_tensor *gate, *up, *gate_up, *down;
    const float *b_up, *b_down;       /* optional biases of the plain form */
    int gated;
    slm_ffn_act act;
    int64_t n_ff;
} slm_ffn_block;

/* Checks a block's weights against its shape (dims, dtypes usable by the
 * matmul); the message names the offending weight. */
slm_status slm_attn_block_check(const slm_attn_block *b, int64_t dim, slm_error *err);
slm_status slm_ffn_block_check(const slm_ffn_block *b, int64_t dim, slm_error *err);

/* Bytes of workspace (core/work.h) a forward of n rows needs. */
size_t slm_attn_work_size(const slm_attn_block *b, int n);
size_t slm_ffn_work_size(const slm_ffn_block *b, int n);

/* x rows -> out rows (n, dim); appends n positions pos0.. to layer of the
 * cache (slm_kvcache_check_layer's rules). out must not alias x. */
slm_status slm_attn_forward(slm_pool *pool, const slm_attn_block *b, slm_kvcache *c,
                            int layer, int pos0, int n, const float *x, float *out,
                            int64_t dim, const slm_work *work, slm_error *err);
/* An encoder block's attention: x rows (n, dim) at positions 0..n-1 ->
 * out rows, every row attending to the n rows of the call (all of them
 * when shape.unmasked, else those up to its own). The keys and values live
 * in the workspace for the call, as F16 rows like a cache's, and go
 * through slm_attn_sdpa, so the arithmetic is the decoder's. */
slm_status slm_attn_encode(slm_pool *pool, const slm_attn_block *b, int n, const float *x,
                           float *out, int64_t dim, const slm_work *work, slm_error *err);
slm_status slm_ffn_forward(slm_pool *pool, const slm_ffn_block *b, int n, const float *x,
                           float *out, int64_t dim, const slm_work *work, slm_error *err);

/* out row i = row ids[i] of the embedding table emb (vocab, dim), any dtype.
 * Ids are checked against the vocabulary size. */
slm_status slm_embed_rows(const slm_tensor *emb, const int32_t *ids, int n, float *out,
                          slm_error *err);

#endif
