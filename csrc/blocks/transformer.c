#include "transformer.h"

#include <stdlib.h>
#include <string.h>

#include "../kernels/matmul.h"
#include "attn_internal.h"

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
    if (!(s->softcap >= 0) || s->window < 0 || !(s->scale > 0))
        return slm_error_set(err, SLM_EINVAL, "attention: scale %g, soft cap %g and window %d out of range",
                             (double)s->scale, (double)s->softcap, s->window);
    if (s->unmasked && (!b->encoder || s->window))
        return slm_error_set(err, SLM_EINVAL,
                             "attention: an unmasked attention must be an encoder's (no KV cache, no window)");
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

static void add_bias(float *x, const float *b, int n, int64_t dim)
{
    if (b) slm_ops_add(x, x, (int64_t)n * dim, b, dim);
}

size_t slm_attn_carve(const slm_attn_block *b, int n, const slm_work *work, slm_attn_scratch *a)
{
    const slm_attn_shape *s = &b->shape;
    const size_t nn = (size_t)n, q = nn * (size_t)s->n_head * (size_t)s->head_dim * sizeof(float);
    const size_t kv = nn * (size_t)s->n_head_kv * (size_t)s->head_dim * sizeof(float);
    const size_t sizes[7] = {q, kv, kv, q, b->wqkv ? q + 2 * kv : 0, nn * sizeof(int64_t),
                             b->encoder ? kv : 0 /* 2 rows of f16 per f32 row */};
    size_t total = 0;
    for (int i = 0; i < 7; i++) total += slm_work_round(sizes[i]);
    if (work) {
        slm_work_cursor c = slm_work_begin(work);
        float **f[5] = {&a->q, &a->k, &a->v, &a->att, &a->qkv};
        for (int i = 0; i < 5; i++) *f[i] = sizes[i] ? slm_work_take(&c, sizes[i]) : NULL;
        a->pos = slm_work_take(&c, sizes[5]);
        a->kv16 = sizes[6] ? slm_work_take(&c, sizes[6]) : NULL;
        if (!a->q || !a->k || !a->v || !a->att || (b->wqkv && !a->qkv) || !a->pos ||
            (b->encoder && !a->kv16))
            return 0;
    }
    return total;
}

size_t slm_attn_work_size(const slm_attn_block *b, int n)
{
    return slm_attn_carve(b, n, NULL, NULL);
}

/* Row-wise steps of a batch are split over the pool from this many rows
 * (decode's single rows stay on the caller: a dispatch costs more than
 * they do). Every step is per row or per element, so the bits are those
 * of one call. */
#define PAR_MIN_ROWS 4

typedef struct project_rows {
    const slm_attn_block *b;
    const slm_attn_scratch *w;
    int64_t q_dim, kv_dim;
} project_rows;

/* after the projections, rows [r0, r1): biases, q/k norms, RoPE */
static void project_tail(void *ctx, int64_t r0, int64_t r1)
{
    const project_rows *pr = ctx;
    const slm_attn_block *b = pr->b;
    const slm_attn_shape *s = &b->shape;
    const int64_t q_dim = pr->q_dim, kv_dim = pr->kv_dim;
    const int n = (int)(r1 - r0);
    float *q = pr->w->q + r0 * q_dim, *k = pr->w->k + r0 * kv_dim, *v = pr->w->v + r0 * kv_dim;
    add_bias(q, b->bq, n, q_dim);
    add_bias(k, b->bk, n, kv_dim);
    add_bias(v, b->bv, n, kv_dim);
    /* qwen3 / gemma3: every head of q and of k RMS-normalized on its own
     * (rows of head_dim); olmoe: each token's whole q and k (rows of q_dim,
     * kv_dim); v untouched */
    if (b->qk_norm_full) {
        if (b->q_norm) slm_ops_rmsnorm(q, q, b->q_norm, n, q_dim, b->norm_eps);
        if (b->k_norm) slm_ops_rmsnorm(k, k, b->k_norm, n, kv_dim, b->norm_eps);
    } else {
        if (b->q_norm) slm_ops_rmsnorm(q, q, b->q_norm, (int64_t)n * s->n_head, s->head_dim, b->norm_eps);
        if (b->k_norm) slm_ops_rmsnorm(k, k, b->k_norm, (int64_t)n * s->n_head_kv, s->head_dim, b->norm_eps);
    }
    if (b->use_rope) {
        slm_ops_rope(q, n, s->n_head, s->head_dim, pr->w->pos + r0, &b->rope);
        slm_ops_rope(k, n, s->n_head_kv, s->head_dim, pr->w->pos + r0, &b->rope);
    }
}

slm_status slm_attn_project(slm_pool *pool, const slm_attn_block *b, int n, const float *x,
                            int64_t dim, const slm_attn_scratch *ws, slm_error *err)
{
    const slm_attn_shape *s = &b->shape;
    const int64_t q_dim = (int64_t)s->n_head * s->head_dim;
    const int64_t kv_dim = (int64_t)s->n_head_kv * s->head_dim;
    const slm_attn_scratch w = *ws;
    slm_status st;
    if (b->wqkv) {
        /* one matmul, then split the rows (q | k | v) into contiguous blocks */
        const int64_t all = q_dim + 2 * kv_dim;
        if ((st = slm_matmul_w(pool, w.qkv, b->wqkv, -1, x, n, err))) return st;
        for (int i = 0; i < n; i++) {
            const float *r = w.qkv + (size_t)i * (size_t)all;
            memcpy(w.q + (size_t)i * (size_t)q_dim, r, (size_t)q_dim * sizeof(float));
            memcpy(w.k + (size_t)i * (size_t)kv_dim, r + q_dim, (size_t)kv_dim * sizeof(float));
            memcpy(w.v + (size_t)i * (size_t)kv_dim, r + q_dim + kv_dim,
                   (size_t)kv_dim * sizeof(float));
        }
    } else {
        /* one dispatch for the three (one encoding of x) */
        const slm_matmul_part p[3] = {slm_matmul_part_of(b->wq, -1, w.q), slm_matmul_part_of(b->wk, -1, w.k),
                                      slm_matmul_part_of(b->wv, -1, w.v)};
        if ((st = slm_matmul_multi(pool, p, 3, x, n, dim, err))) return st;
    }
    const project_rows pr = {b, &w, q_dim, kv_dim};
    slm_pool_for(pool, n, 1, PAR_MIN_ROWS, project_tail, (void *)&pr);
    return SLM_OK;
}

static slm_status no_room(const slm_attn_block *b, int n, const slm_work *work, slm_error *err)
{
    return slm_error_set(err, SLM_EINVAL, "attention: the workspace holds %zu bytes, %d rows need %zu",
                         work ? work->bytes : 0, n, slm_attn_work_size(b, n));
}

slm_status slm_attn_forward(slm_pool *pool, const slm_attn_block *b, slm_kvcache *c,
                            int layer, int pos0, int n, const float *x, float *out,
                            int64_t dim, const slm_work *work, slm_error *err)
{
    const slm_attn_shape *s = &b->shape;
    slm_status st;
    if (b->encoder)
        return slm_error_set(err, SLM_EINVAL, "attention: an encoder block runs without a KV cache (encode)");
    if ((st = slm_kvcache_check_layer(c, layer, s, n, err))) return st;
    slm_attn_scratch w;
    if (!slm_attn_carve(b, n, work, &w)) return no_room(b, n, work, err);
    for (int i = 0; i < n; i++) w.pos[i] = pos0 + i;
    if ((st = slm_attn_project(pool, b, n, x, dim, &w, err))) return st;
    slm_kvcache_store(c, layer, pos0, n, w.k, w.v);
    if ((st = slm_attn_sdpa(pool, c, layer, s, pos0, n, w.q, w.att, err))) return st;
    if ((st = slm_matmul_w(pool, out, b->wo, -1, w.att, n, err))) return st;
    add_bias(out, b->bo, n, dim);
    return SLM_OK;
}

slm_status slm_attn_encode(slm_pool *pool, const slm_attn_block *b, int n, const float *x,
                           float *out, int64_t dim, const slm_work *work, slm_error *err)
{
    const slm_attn_shape *s = &b->shape;
    slm_status st;
    if (!b->encoder)
        return slm_error_set(err, SLM_EINVAL, "attention: encode needs an encoder block (this one has a KV cache)");
    if (n < 1) return slm_error_set(err, SLM_EINVAL, "attention: encode of %d rows", n);
    slm_attn_scratch w;
    if (!slm_attn_carve(b, n, work, &w)) return no_room(b, n, work, err);
    for (int i = 0; i < n; i++) w.pos[i] = i;
    if ((st = slm_attn_project(pool, b, n, x, dim, &w, err))) return st;
    /* the call's keys and values as a one-layer cache of n rows in the
     * workspace: the scores, softmax and rounding are the cache's sdpa */
    const int kv_dim = s->n_head_kv * s->head_dim;
    slm_kv_layer layer = {.kv_dim = kv_dim, .cap = n, .k = w.kv16, .v = w.kv16 + (size_t)n * (size_t)kv_dim};
    slm_kvcache c = {.n_layer = 1, .n_ctx = n, .n_batch = n, .layer = &layer, .type = SLM_KV_F16};
    slm_kvcache_store(&c, 0, 0, n, w.k, w.v);
    if ((st = slm_attn_sdpa(pool, &c, 0, s, 0, n, w.q, w.att, err))) return st;
    if ((st = slm_matmul_w(pool, out, b->wo, -1, w.att, n, err))) return st;
    add_bias(out, b->bo, n, dim);
    return SLM_OK;
}

static void act_fn(slm_ffn_act a, float *out, const float *x, int64_t n)
{
    if (a == SLM_FFN_GELU) slm_ops_gelu_f16(out, x, n);
    else slm_ops_silu(out, x, n);
}

typedef struct glu_job {
    slm_ffn_act act;
    float *g, *u;
    int64_t ff;
} glu_job;

/* u[i] = act(g[i]) * u[i] for elements [e0, e1) */
static void glu_elems(void *ctx, int64_t e0, int64_t e1)
{
    const glu_job *j = ctx;
    act_fn(j->act, j->g + e0, j->g + e0, e1 - e0);
    slm_ops_mul(j->u + e0, j->u + e0, e1 - e0, j->g + e0, e1 - e0);
}

/* rows [r0, r1) of the fused form: u row = act(gate) * up */
static void glu_fused_rows(void *ctx, int64_t r0, int64_t r1)
{
    const glu_job *j = ctx;
    for (int64_t i = r0; i < r1; i++) {
        const float *r = j->g + (size_t)i * (size_t)(2 * j->ff);
        float *ui = j->u + (size_t)i * (size_t)j->ff;
        act_fn(j->act, ui, r, j->ff);
        slm_ops_mul(ui, ui, j->ff, r + j->ff, j->ff);
    }
}

/* The feed-forward's scratch for n rows: g (gate rows, or gate | up rows of
 * the fused form) and u (up rows, then the activated product). */
static size_t ffn_carve(const slm_ffn_block *b, int n, const slm_work *work, float **g, float **u)
{
    const size_t rows = (size_t)n * (size_t)b->n_ff * sizeof(float);
    const size_t gb = !b->gated ? 0 : b->gate_up ? 2 * rows : rows;
    if (work) {
        slm_work_cursor c = slm_work_begin(work);
        *g = gb ? slm_work_take(&c, gb) : NULL;
        *u = slm_work_take(&c, rows);
        if ((gb && !*g) || !*u) return 0;
    }
    return slm_work_round(gb) + slm_work_round(rows);
}

size_t slm_ffn_work_size(const slm_ffn_block *b, int n)
{
    return ffn_carve(b, n, NULL, NULL, NULL);
}

slm_status slm_ffn_forward(slm_pool *pool, const slm_ffn_block *b, int n, const float *x,
                           float *out, int64_t dim, const slm_work *work, slm_error *err)
{
    const int64_t ff = b->n_ff;
    slm_status st;
    float *g = NULL, *u = NULL;
    if (!ffn_carve(b, n, work, &g, &u))
        return slm_error_set(err, SLM_EINVAL, "ffn: the workspace holds %zu bytes, %d rows need %zu",
                             work ? work->bytes : 0, n, slm_ffn_work_size(b, n));
    if (!b->gated) {
        if ((st = slm_matmul_w(pool, u, b->up, -1, x, n, err))) return st;
        add_bias(u, b->b_up, n, ff);
        act_fn(b->act, u, u, (int64_t)n * ff);
    } else if (b->gate_up) {
        /* rows of g are [gate (ff) | up (ff)] */
        if ((st = slm_matmul_w(pool, g, b->gate_up, -1, x, n, err))) return st;
        const glu_job j = {b->act, g, u, ff};
        slm_pool_for(pool, n, 1, PAR_MIN_ROWS, glu_fused_rows, (void *)&j);
    } else {
        const slm_matmul_part p[2] = {slm_matmul_part_of(b->gate, -1, g), slm_matmul_part_of(b->up, -1, u)};
        if ((st = slm_matmul_multi(pool, p, 2, x, n, dim, err))) return st;
        /* element ranges cut at multiples of 64: the vector kernels' lanes
         * (and scalar tail) as in one call over the n rows */
        const glu_job j = {b->act, g, u, ff};
        slm_pool_for(pool, (int64_t)n * ff, 64, PAR_MIN_ROWS * ff, glu_elems, (void *)&j);
    }
    if ((st = slm_matmul_w(pool, out, b->down, -1, u, n, err))) return st;
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
