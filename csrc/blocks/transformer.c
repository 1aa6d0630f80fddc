#include "transformer.h"

#include <stdlib.h>
#include <string.h>

#include "../kernels/matmul.h"

slm_tf_work *slm_tf_work_new(int n_batch, int64_t q_dim, int64_t kv_dim, int64_t n_ff,
                             slm_error *err)
{
    slm_tf_work *w = calloc(1, sizeof *w);
    if (!w) goto oom;
    size_t nb = (size_t)n_batch;
    w->n_batch = n_batch;
    w->q_dim = q_dim;
    w->kv_dim = kv_dim;
    w->n_ff = n_ff;
    w->q = malloc(nb * (size_t)q_dim * sizeof(float));
    w->att = malloc(nb * (size_t)q_dim * sizeof(float));
    w->k = malloc(nb * (size_t)kv_dim * sizeof(float));
    w->v = malloc(nb * (size_t)kv_dim * sizeof(float));
    w->qkv = malloc(nb * (size_t)(q_dim + 2 * kv_dim) * sizeof(float));
    w->g = malloc(nb * (size_t)(2 * n_ff) * sizeof(float));
    w->u = malloc(nb * (size_t)n_ff * sizeof(float));
    w->pos = malloc(nb * sizeof(int64_t));
    if (!w->q || !w->att || !w->k || !w->v || !w->qkv || !w->g || !w->u || !w->pos) goto oom;
    return w;
oom:
    slm_tf_work_free(w);
    slm_error_set(err, SLM_ENOMEM, "out of memory allocating a batch of %d rows", n_batch);
    return NULL;
}

void slm_tf_work_free(slm_tf_work *w)
{
    if (!w) return;
    free(w->q); free(w->att); free(w->k); free(w->v);
    free(w->qkv); free(w->g); free(w->u); free(w->pos);
    free(w);
}

slm_status slm_attn_block_check(const slm_attn_block *b, int64_t dim, slm_error *err)
{
    const slm_attn_shape *s = &b->shape;
    if (s->n_head <= 0 || s->n_head_kv <= 0 || s->head_dim <= 0 || s->n_head % s->n_head_kv)
        return slm_error_set(err, SLM_EINVAL,
                             "attention: n_head %d must be a positive multiple of n_head_kv %d",
                             s->n_head, s->n_head_kv);
    if (b->use_rope && (b->rope.n_rot <= 0 || b->rope.n_rot > s->head_dim || b->rope.n_rot % 2))
        return slm_error_set(err, SLM_EINVAL, "attention: rope n_rot %d must be even and <= head_dim %d",
                             b->rope.n_rot, s->head_dim);
    int64_t q_dim = (int64_t)s->n_head * s->head_dim, kv_dim = (int64_t)s->n_head_kv * s->head_dim;
    slm_status st;
    if (b->wqkv) {
        if ((st = slm_matmul_check_weight(b->wqkv, "attn_qkv", q_dim + 2 * kv_dim, dim, err))) return st;
    } else {
        if ((st = slm_matmul_check_weight(b->wq, "attn_q", q_dim, dim, err))) return st;
        if ((st = slm_matmul_check_weight(b->wk, "attn_k", kv_dim, dim, err))) return st;
        if ((st = slm_matmul_check_weight(b->wv, "attn_v", kv_dim, dim, err))) return st;
    }
    return slm_matmul_check_weight(b->wo, "attn_output", dim, q_dim, err);
}

slm_status slm_ffn_block_check(const slm_ffn_block *b, int64_t dim, slm_error *err)
{
    slm_status st;
    int64_t ff = b->n_ff;
    if (ff <= 0) return slm_error_set(err, SLM_EINVAL, "ffn: n_ff must be positive");
    if (b->gated && b->gate_up) {
        if ((st = slm_matmul_check_weight(b->gate_up, "ffn_up (fused gate|up)", 2 * ff, dim, err))) return st;
    } else {
        if (b->gated && (st = slm_matmul_check_weight(b->gate, "ffn_gate", ff, dim, err))) return st;
        if ((st = slm_matmul_check_weight(b->up, "ffn_up", ff, dim, err))) return st;
    }
    return slm_matmul_check_weight(b->down, "ffn_down", dim, ff, err);
}

static slm_status mm(slm_pool *pool, float *out, const slm_tensor *W, const float *x,
                     int64_t m, slm_error *err)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)W->dtype);
    size_t row_bytes = (size_t)(W->stride[0] / tr->block_size) * tr->type_size;
    return slm_matmul_raw(pool, out, slm_tensor_data(W), W->dtype, row_bytes, x, m,
                          W->shape[0], W->shape[1], err);
}

static slm_matmul_part part_of(const slm_tensor *W, float *out)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)W->dtype);
    return (slm_matmul_part){out, slm_tensor_data(W), W->dtype,
                             (size_t)(W->stride[0] / tr->block_size) * tr->type_size, W->shape[0], 0};
}

static void add_bias(float *x, const float *b, int n, int64_t dim)
{
    if (b) slm_ops_add(x, x, (int64_t)n * dim, b, dim);
}

slm_status slm_attn_forward(slm_pool *pool, const slm_attn_block *b, slm_kvcache *c,
                            int layer, int pos0, int n, const float *x, float *out,
                            int64_t dim, slm_tf_work *w, slm_error *err)
{
    const slm_attn_shape *s = &b->shape;
    const int64_t q_dim = (int64_t)s->n_head * s->head_dim;
    const int64_t kv_dim = (int64_t)s->n_head_kv * s->head_dim;
    slm_status st;
    if (b->wqkv) {
        /* one matmul, then split the rows (q | k | v) into contiguous blocks */
        const int64_t all = q_dim + 2 * kv_dim;
        if ((st = mm(pool, w->qkv, b->wqkv, x, n, err))) return st;
        for (int i = 0; i < n; i++) {
            const float *r = w->qkv + (size_t)i * (size_t)all;
            memcpy(w->q + (size_t)i * (size_t)q_dim, r, (size_t)q_dim * sizeof(float));
            memcpy(w->k + (size_t)i * (size_t)kv_dim, r + q_dim, (size_t)kv_dim * sizeof(float));
            memcpy(w->v + (size_t)i * (size_t)kv_dim, r + q_dim + kv_dim,
                   (size_t)kv_dim * sizeof(float));
        }
    } else {
        /* one dispatch for the three (one encoding of x) */
        const slm_matmul_part p[3] = {part_of(b->wq, w->q), part_of(b->wk, w->k), part_of(b->wv, w->v)};
        if ((st = slm_matmul_multi(pool, p, 3, x, n, dim, err))) return st;
    }
    add_bias(w->q, b->bq, n, q_dim);
    add_bias(w->k, b->bk, n, kv_dim);
    add_bias(w->v, b->bv, n, kv_dim);
    if (b->use_rope) {
        for (int i = 0; i < n; i++) w->pos[i] = pos0 + i;
        slm_ops_rope(w->q, n, s->n_head, s->head_dim, w->pos, &b->rope);
        slm_ops_rope(w->k, n, s->n_head_kv, s->head_dim, w->pos, &b->rope);
    }
    slm_kvcache_store(c, layer, pos0, n, w->k, w->v);
    if ((st = slm_attn_sdpa(pool, c, layer, s, pos0, n, w->q, w->att, err))) return st;
    if ((st = mm(pool, out, b->wo, w->att, n, err))) return st;
    add_bias(out, b->bo, n, dim);
    return SLM_OK;
}

static void act_fn(slm_ffn_act a, float *out, const float *x, int64_t n)
{
    if (a == SLM_FFN_GELU) slm_ops_gelu(out, x, n);
    else slm_ops_silu(out, x, n);
}

slm_status slm_ffn_forward(slm_pool *pool, const slm_ffn_block *b, int n, const float *x,
                           float *out, int64_t dim, slm_tf_work *w, slm_error *err)
{
    const int64_t ff = b->n_ff;
    slm_status st;
    if (!b->gated) {
        if ((st = mm(pool, w->u, b->up, x, n, err))) return st;
        add_bias(w->u, b->b_up, n, ff);
        act_fn(b->act, w->u, w->u, (int64_t)n * ff);
    } else if (b->gate_up) {
        /* rows of g are [gate (ff) | up (ff)] */
        if ((st = mm(pool, w->g, b->gate_up, x, n, err))) return st;
        for (int i = 0; i < n; i++) {
            const float *r = w->g + (size_t)i * (size_t)(2 * ff);
            float *u = w->u + (size_t)i * (size_t)ff;
            act_fn(b->act, u, r, ff);
            slm_ops_mul(u, u, ff, r + ff, ff);
        }
    } else {
        const slm_matmul_part p[2] = {part_of(b->gate, w->g), part_of(b->up, w->u)};
        if ((st = slm_matmul_multi(pool, p, 2, x, n, dim, err))) return st;
        act_fn(b->act, w->g, w->g, (int64_t)n * ff);
        slm_ops_mul(w->u, w->u, (int64_t)n * ff, w->g, (int64_t)n * ff);
    }
    if ((st = mm(pool, out, b->down, w->u, n, err))) return st;
    add_bias(out, b->b_down, n, dim);
    return SLM_OK;
}

slm_status slm_embed_rows(const slm_tensor *emb, const int32_t *ids, int n, float *out,
                          slm_error *err)
{
    const int64_t vocab = emb->shape[0], dim = emb->shape[1];
    const slm_dtype_traits *tr = slm_dtype_get((int)emb->dtype);
    if (emb->ndim != 2 || emb->stride[1] != 1 || !tr->to_f32)
        return slm_error_set(err, SLM_EINVAL, "token embedding: need a 2-D table with contiguous rows");
    const unsigned char *base = slm_tensor_data(emb);
    const size_t row_bytes = (size_t)(emb->stride[0] / tr->block_size) * tr->type_size;
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= vocab)
            return slm_error_set(err, SLM_ERANGE, "token id %d out of range (vocabulary size %lld)",
                                 (int)ids[i], (long long)vocab);
        tr->to_f32(base + (size_t)ids[i] * row_bytes, out + (size_t)i * (size_t)dim, dim);
    }
    return SLM_OK;
}
