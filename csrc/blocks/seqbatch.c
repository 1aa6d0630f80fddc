#include "seqbatch.h"

#include "../kernels/matmul.h"
#include "attn_internal.h"

int slm_seq_rows(const slm_seq *seqs, int n_seq)
{
    int rows = 0;
    for (int i = 0; i < n_seq; i++) rows += seqs[i].n;
    return rows;
}

slm_status slm_attn_forward_seqs(slm_pool *pool, const slm_attn_block *b, const slm_seq *seqs,
                                 int n_seq, int layer, const float *x, float *out, int64_t dim,
                                 const slm_work *work, slm_error *err)
{
    const slm_attn_shape *s = &b->shape;
    slm_status st;
    if (b->encoder)
        return slm_error_set(err, SLM_EINVAL, "attention: an encoder block runs without a KV cache (encode)");
    if (n_seq < 1) return slm_error_set(err, SLM_EINVAL, "attention: a batch of %d sequences", n_seq);
    /* every sequence's cache, positions and row count first: nothing is
     * stored when one of them is wrong */
    int rows = 0;
    for (int i = 0; i < n_seq; i++) {
        const slm_seq *q = &seqs[i];
        if (!q->kv || q->n < 1 || q->pos0 < 0)
            return slm_error_set(err, SLM_EINVAL, "attention: sequence %d of the batch has no cache or no rows", i + 1);
        if ((st = slm_kvcache_check_layer(q->kv, layer, s, q->n, err))) return st;
        if (q->pos0 + q->n > q->kv->n_ctx)
            return slm_error_set(err, SLM_EINVAL, "attention: sequence %d: context full (%d + %d tokens exceed n_ctx %d)",
                                 i + 1, q->pos0, q->n, q->kv->n_ctx);
        rows += q->n;
    }
    slm_attn_scratch w;
    if (!slm_attn_carve(b, rows, work, &w))
        return slm_error_set(err, SLM_EINVAL, "attention: the workspace holds %zu bytes, %d rows need %zu",
                             work ? work->bytes : 0, rows, slm_attn_work_size(b, rows));
    for (int i = 0, r = 0; i < n_seq; i++)
        for (int j = 0; j < seqs[i].n; j++) w.pos[r++] = seqs[i].pos0 + j;
    if ((st = slm_attn_project(pool, b, rows, x, dim, &w, err))) return st;
    /* per sequence: (rows of q, k, v from r) its cache, its attention */
    const size_t q_dim = (size_t)s->n_head * (size_t)s->head_dim;
    const size_t kv_dim = (size_t)s->n_head_kv * (size_t)s->head_dim;
    for (int i = 0, r = 0; i < n_seq; r += seqs[i].n, i++) {
        const slm_seq *q = &seqs[i];
        slm_kvcache_store(q->kv, layer, q->pos0, q->n, w.k + (size_t)r * kv_dim, w.v + (size_t)r * kv_dim);
        if ((st = slm_attn_sdpa(pool, q->kv, layer, s, q->pos0, q->n, w.q + (size_t)r * q_dim,
                                w.att + (size_t)r * q_dim, err)))
            return st;
    }
    if ((st = slm_matmul_w(pool, out, b->wo, -1, w.att, rows, err))) return st;
    if (b->bo) slm_ops_add(out, out, (int64_t)rows * dim, b->bo, dim);
    return SLM_OK;
}
