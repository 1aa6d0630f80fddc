/* RWKV: the recurrent state, the WKV recurrences of every version, the
 * channel mix, and the checks of both mixes. The time mixes are in
 * rwkv_tmix.c. Math as rwkv.cpp's rwkv_graph.inc and ggml's rwkv_wkv6 /
 * rwkv.cpp's wkv_v7 operators (see rwkv.h). */
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../core/snapshot.h"
#include "../kernels/gemm.h"
#include "../kernels/matmul.h"
#include "../kernels/vecdot.h"
#include "rwkv_internal.h"
#include "seqbatch.h"

#define TRY(expr)                          \
    do {                                   \
        slm_status s_ = (expr);            \
        if (s_ != SLM_OK) return s_;       \
    } while (0)

/* --- state ------------------------------------------------------------------ */

static int valid_version(slm_rwkv_version v)
{
    return v == SLM_RWKV_V4 || v == SLM_RWKV_V5_1 || v == SLM_RWKV_V5_2 || v == SLM_RWKV_V6 ||
           v == SLM_RWKV_V7;
}

slm_rwkv_state *slm_rwkv_state_new(slm_rwkv_version version, int n_layer, int64_t dim,
                                   int64_t n_head, int64_t n_ff, int64_t lora, int n_batch,
                                   slm_error *err)
{
    if (!valid_version(version)) {
        slm_error_set(err, SLM_EUNSUPPORTED, "rwkv state: unknown version %d", (int)version);
        return NULL;
    }
    if (n_layer < 1 || n_layer > 4096 || dim < 1 || dim > (1 << 20) || n_head < 1 ||
        dim % n_head != 0 || n_ff < 1 || n_ff > (1 << 22) || lora < 0 || lora > (1 << 20) ||
        n_batch < 1 || n_batch > 65536) {
        slm_error_set(err, SLM_EINVAL,
                      "rwkv state: bad shape (layers %d, dim %lld, heads %lld, ff %lld, lora %lld, batch %d)",
                      n_layer, (long long)dim, (long long)n_head, (long long)n_ff,
                      (long long)lora, n_batch);
        return NULL;
    }
    int64_t hs = dim / n_head;
    size_t lf = 2 * (size_t)dim + (version == SLM_RWKV_V4 ? 3 * (size_t)dim
                                                          : (size_t)n_head * (size_t)(hs * hs));
    size_t nb = (size_t)n_batch, d = (size_t)dim;
    slm_rwkv_state *st = calloc(1, sizeof *st);
    if (!st) goto nomem;
    st->version = version;
    st->n_layer = n_layer;
    st->n_batch = n_batch;
    st->dim = dim;
    st->n_head = n_head;
    st->head_size = hs;
    st->n_ff = n_ff;
    st->lora = lora;
    st->layer_floats = lf;
    st->s = malloc((size_t)n_layer * lf * sizeof(float));
    st->xs = malloc(6 * nb * d * sizeof(float));
    st->p = malloc(6 * nb * d * sizeof(float));
    /* v7 decodes its four low-rank hiddens side by side (slm_rwkv_mv_group) */
    size_t n_hid = version == SLM_RWKV_V7 ? 4 : 1;
    st->hid = malloc((n_hid * nb * (size_t)lora + 1) * sizeof(float));
    st->tmp = malloc((nb * (size_t)lora + 1) * sizeof(float));
    st->y = malloc(nb * d * sizeof(float));
    st->ff = malloc(nb * (size_t)n_ff * sizeof(float));
    st->v_first = malloc(nb * d * sizeof(float));
    if (!st->s || !st->xs || !st->p || !st->hid || !st->tmp || !st->y || !st->ff || !st->v_first) {
        slm_rwkv_state_free(st);
        goto nomem;
    }
    slm_rwkv_state_reset(st);
    return st;
nomem:
    slm_error_set(err, SLM_ENOMEM, "rwkv state: out of memory");
    return NULL;
}

void slm_rwkv_state_free(slm_rwkv_state *st)
{
    if (!st) return;
    free(st->s);
    free(st->xs);
    free(st->p);
    free(st->hid);
    free(st->tmp);
    free(st->y);
    free(st->ff);
    free(st->v_first);
    free(st);
}

size_t slm_rwkv_state_floats(const slm_rwkv_state *st)
{
    return (size_t)st->n_layer * st->layer_floats;
}

/* --- snapshots (layout in rwkv.h) -------------------------------------------------- */

static const slm_snap_kind RWKV_SNAP = {
    {'R', 'W', 'K', 'V'}, 2, "an RWKV state", 4, (const char *const[]){"version", "n_layer", "dim", "n_head"},
    "SLMRWKV1", 5, 4};

static void state_dims(const slm_rwkv_state *st, int64_t *d, size_t *len)
{
    d[0] = st->version;
    d[1] = st->n_layer;
    d[2] = st->dim;
    d[3] = st->n_head;
    *len = slm_rwkv_state_floats(st) * sizeof(float);
}

size_t slm_rwkv_snapshot_size(const slm_rwkv_state *st)
{
    int64_t d[4];
    size_t len;
    state_dims(st, d, &len);
    return slm_snap_flat_size(&RWKV_SNAP, 1, &len);
}

void slm_rwkv_snapshot(const slm_rwkv_state *st, int n_past, void *buf)
{
    int64_t d[4];
    size_t len;
    state_dims(st, d, &len);
    slm_snap_flat_write(&RWKV_SNAP, buf, n_past, d, 1, (const void *const[]){st->s}, &len);
}

slm_status slm_rwkv_restore(slm_rwkv_state *st, const void *buf, size_t len, int *n_past, slm_error *err)
{
    int64_t d[4];
    size_t body;
    state_dims(st, d, &body);
    return slm_snap_flat_read(&RWKV_SNAP, buf, len, d, 1, (void *const[]){st->s}, &body, n_past, err);
}

void slm_rwkv_state_reset(slm_rwkv_state *st)
{
    memset(st->s, 0, slm_rwkv_state_floats(st) * sizeof(float));
    if (st->version != SLM_RWKV_V4) return;
    for (int l = 0; l < st->n_layer; l++) {
        float *pp = slm_rwkv_layer(st, l) + 4 * (size_t)st->dim;
        for (int64_t i = 0; i < st->dim; i++) pp[i] = -1e30f;
    }
}

/* --- matmul -------------------------------------------------------------------- */

/* rwkv.cpp's files follow ggml's vec_dot order (core/storage.h). F32
 * weights take the tiles' order at every batch size: the data-dependent
 * mixes and decays amplify summation differences, and a prompt must give
 * the same state however it is batched (OpenBLAS's batches and vec_dot's
 * single rows sum differently). */
static int order_of(const slm_tensor *W)
{
    if (W->storage->flags & SLM_STORAGE_VECDOT_ORDER) return SLM_MATMUL_ORDER_VECDOT;
    return W->dtype == SLM_DTYPE_F32 ? SLM_MATMUL_ORDER_TILES : SLM_MATMUL_ORDER_DEFAULT;
}

slm_status slm_rwkv_mm(slm_pool *pool, float *out, const slm_tensor *W, int slice,
                       const float *X, int64_t M, slm_error *err)
{
    slm_matmul_part part = slm_matmul_part_of(W, slice, out);
    part.order = order_of(W);
    const int64_t K = W->shape[W->ndim - 1];
    /* small products run on the calling thread: waking the pool costs more
     * than the work (tiny models, low-rank weights) */
    const int64_t work = M * part.N * K;
    return slm_matmul_multi(work < SMALL_MATMUL ? NULL : pool, &part, 1, X, M, K, err);
}

/* --- independent matrix-vector products in one dispatch ---------------------------- */

/* Weight bytes per chunk of a group's products: enough that the input's
 * encoding, the call and the restart of the memory streams per chunk cost
 * little, small enough that the last chunks even out the threads' finish.
 * Measured on RWKV-7 0.1B f16 decode (2 threads, Zen 5; per layer: the
 * down-projection group / the output product): 32 KB 127 / 36 us, 64 KB
 * 104 / 29 us (137 tok/s), 128 KB ~95 / 27 us, 256 KB 77-88 / 22-25 us
 * (151-181 tok/s), 512 KB no better than 256. */
#define MV_CHUNK_BYTES (256 * 1024)

typedef struct mv_job {
    const slm_rwkv_mv *mv;
    int n;
    atomic_llong next;     /* the next chunk to take (mv_run) */
    atomic_int failed;     /* the first failing thread reports */
    slm_status code;
    slm_error *err;
} mv_job;

/* rows [r0, r1) of a group's product as one matmul part */
static slm_matmul_part mv_part(const slm_rwkv_mv *mv, int64_t r0, int64_t r1)
{
    slm_matmul_part p = slm_matmul_part_of(mv->W, -1, mv->out + r0);
    p.W = (const char *)p.W + (size_t)r0 * p.w_row_bytes;
    p.N = r1 - r0;
    p.order = order_of(mv->W);
    return p;
}

slm_status slm_rwkv_mv_rows(const slm_rwkv_mv *mv, int64_t r0, int64_t r1, slm_error *err)
{
    const slm_matmul_part part = mv_part(mv, r0, r1);
    TRY(slm_matmul_multi(NULL, &part, 1, mv->x, 1, mv->W->shape[1], err));
    if (mv->post) mv->post(mv->out + r0, r1 - r0);
    return SLM_OK;
}

/* A product run from inside a pool job encodes its input on matmul's stack
 * buffer; a group whose inputs need more runs its products one by one
 * instead, so that decode never allocates. */
int slm_rwkv_mv_in_job(const slm_rwkv_mv *mv, int n)
{
    for (int i = 0; i < n; i++) {
        const slm_matmul_part part = mv_part(&mv[i], 0, mv[i].W->shape[0]);
        if (slm_matmul_act_row_bytes(&part, mv[i].W->shape[1]) > SLM_MATMUL_STACK_ACT_BYTES) return 0;
    }
    return 1;
}

/* Rows per chunk of a product: about MV_CHUNK_BYTES of weights, a
 * multiple of SLM_GEMM_MAX_R rows so that tiles are not cut. */
static int64_t chunk_rows(const slm_tensor *W)
{
    size_t rb = slm_tensor_elem_bytes(W, W->stride[0]);
    int64_t r = (int64_t)((MV_CHUNK_BYTES + rb - 1) / rb);
    return (r + SLM_GEMM_MAX_R - 1) / SLM_GEMM_MAX_R * SLM_GEMM_MAX_R;
}

/* The threads take the chunks of all products in order from a shared
 * counter until none is left: a thread that starts late or is slowed (a
 * worker's wake-up, a busy neighbour on the machine, the f32 low-rank rows
 * costing more per byte than the f16 tiles) takes fewer, and no thread
 * waits long for another at the end. */
static void mv_run(void *ctx, int ith, int nth)
{
    mv_job *j = ctx;
    for (;;) {
        int64_t c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed), cr = 0;
        int i = 0;
        for (; i < j->n; i++) {
            int64_t N = j->mv[i].W->shape[0];
            cr = chunk_rows(j->mv[i].W);
            int64_t nc = (N + cr - 1) / cr;
            if (c < nc) break;
            c -= nc;
        }
        if (i == j->n) return;
        int64_t N = j->mv[i].W->shape[0], r0 = c * cr, r1 = r0 + cr < N ? r0 + cr : N;
        slm_error e;
        slm_status s = slm_rwkv_mv_rows(&j->mv[i], r0, r1, &e);
        if (s != SLM_OK && !atomic_exchange(&j->failed, 1)) {
            j->code = s;
            if (j->err) *j->err = e;
        }
    }
}

slm_status slm_rwkv_mv_group(slm_pool *pool, const slm_rwkv_mv *mv, int n, slm_error *err)
{
    mv_job j = {.mv = mv, .n = n, .err = err};
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    if (!slm_rwkv_mv_in_job(mv, n)) {
        for (int k = 0; k < n; k++) {
            TRY(slm_rwkv_mm(pool, mv[k].out, mv[k].W, -1, mv[k].x, 1, err));
            if (mv[k].post) mv[k].post(mv[k].out, mv[k].W->shape[0]);
        }
        return SLM_OK;
    }
    int64_t work = 0;
    for (int i = 0; i < n; i++) work += mv[i].W->shape[0] * mv[i].W->shape[1];
    /* as for one product: a small group is not worth waking the pool */
    int nth = work < SMALL_MATMUL || !pool || slm_pool_busy(pool) ? 1 : slm_pool_size(pool);
    slm_pool_run(pool, nth, mv_run, &j);
    return atomic_load(&j.failed) ? j.code : SLM_OK;
}

/* --- WKV recurrences ---------------------------------------------------------------- */

void slm_rwkv_wkv4(int n, int64_t dim, const float *w, const float *u, const float *k,
                   const float *v, float *aa, float *bb, float *pp, float *y)
{
    /* The weighted average of past values with weights exp(k + decays),
     * kept as aa / bb scaled by exp(-pp) so no exponent overflows. */
    for (int t = 0; t < n; t++) {
        const float *kt = k + (size_t)t * (size_t)dim, *vt = v + (size_t)t * (size_t)dim;
        float *yt = y + (size_t)t * (size_t)dim;
        for (int64_t c = 0; c < dim; c++) {
            float ww = u[c] + kt[c];
            float qq = fmaxf(pp[c], ww);
            float e1 = expf(pp[c] - qq), e2 = expf(ww - qq);
            float a = e1 * aa[c] + e2 * vt[c];
            float b = e1 * bb[c] + e2;
            yt[c] = a / b;
            ww = pp[c] + w[c];
            qq = fmaxf(ww, kt[c]);
            e1 = expf(ww - qq);
            e2 = expf(kt[c] - qq);
            aa[c] = e1 * aa[c] + e2 * vt[c];
            bb[c] = e1 * bb[c] + e2;
            pp[c] = qq;
        }
    }
}

/* Heads h0..h1-1 of n tokens; rows are dim = n_head * hs wide. */
static void wkv6_heads(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim, const float *r,
                       const float *k, const float *v, const float *w, const float *u, float *S,
                       float *y)
{
    for (int t = 0; t < n; t++) {
        size_t to = (size_t)t * dim;
        for (int64_t h = h0; h < h1; h++) {
            size_t ho = (size_t)(h * hs);
            float *Sh = S + ho * (size_t)hs;
            float *yt = y + to + ho;
            const float *rt = r + to + ho, *kt = k + to + ho, *vt = v + to + ho;
            const float *wt = w + to + ho, *ut = u + ho;
            for (int64_t j = 0; j < hs; j++) yt[j] = 0;
            for (int64_t i = 0; i < hs; i++) {
                float *Si = Sh + (size_t)(i * hs);
                float ki = kt[i], ri = rt[i], ui = ut[i], wi = wt[i];
                for (int64_t j = 0; j < hs; j++) {
                    float kv = ki * vt[j];
                    yt[j] += (kv * ui + Si[j]) * ri;
                    Si[j] = Si[j] * wi + kv;
                }
            }
        }
    }
}

void slm_rwkv_wkv7_heads_generic(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim,
                                 const float *r, const float *w, const float *k, const float *v,
                                 const float *a, const float *b, float *S, float *y)
{
    for (int t = 0; t < n; t++) {
        size_t to = (size_t)t * dim;
        for (int64_t h = h0; h < h1; h++) {
            size_t ho = to + (size_t)(h * hs);
            float *Sh = S + (size_t)(h * hs) * (size_t)hs;
            const float *rt = r + ho, *wt = w + ho, *kt = k + ho, *vt = v + ho;
            const float *at = a + ho, *bt = b + ho;
            for (int64_t i = 0; i < hs; i++) {
                float *Si = Sh + (size_t)(i * hs);
                float sa = 0;
                for (int64_t j = 0; j < hs; j++) sa += at[j] * Si[j];
                float vi = vt[i], yi = 0;
                for (int64_t j = 0; j < hs; j++) {
                    Si[j] = Si[j] * wt[j] + vi * kt[j] + sa * bt[j];
                    yi += Si[j] * rt[j];
                }
                y[ho + i] = yi;
            }
        }
    }
}

void slm_rwkv_wkv6(int n, int64_t n_head, int64_t hs, const float *r, const float *k,
                   const float *v, const float *w, const float *u, float *S, float *y)
{
    wkv6_heads(n, 0, n_head, hs, (size_t)(n_head * hs), r, k, v, w, u, S, y);
}

void slm_rwkv_wkv7_heads(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim, const float *r,
                         const float *w, const float *k, const float *v, const float *a,
                         const float *b, float *S, float *y)
{
#if defined(__x86_64__)
    /* AVX-512: the generic loop's floats on a transposed state
     * (rwkv_avx512.c), at every n, so that a run's states do not depend on
     * how it is cut into calls (prompt chunks, decode, the training
     * backward's checkpoints); else AVX2's row-wise loop, also at every n */
    if (hs % 16 == 0 && hs <= SLM_RWKV_AVX512_MAX_HS && slm_kernels_use_avx512()) {
        slm_rwkv_wkv7_heads_avx512(n, h0, h1, hs, dim, r, w, k, v, a, b, S, y);
        return;
    }
    if (hs % 8 == 0 && slm_kernels_use_avx2()) {
        slm_rwkv_wkv7_heads_avx2(n, h0, h1, hs, dim, r, w, k, v, a, b, S, y);
        return;
    }
#endif
    slm_rwkv_wkv7_heads_generic(n, h0, h1, hs, dim, r, w, k, v, a, b, S, y);
}

void slm_rwkv_wkv7(int n, int64_t n_head, int64_t hs, const float *r, const float *w,
                   const float *k, const float *v, const float *a, const float *b, float *S,
                   float *y)
{
    slm_rwkv_wkv7_heads(n, 0, n_head, hs, (size_t)(n_head * hs), r, w, k, v, a, b, S, y);
}

/* Threaded over heads (independent: the same floats as one thread). v7's
 * recurrence runs in the time mix's heads job (rwkv_tmix.c). */
typedef struct wkv_job {
    int n;
    int64_t n_head, hs;
    const float *r, *k, *v, *w, *u;
    float *S, *y;
} wkv_job;

static void wkv_run(void *ctx, int ith, int nth)
{
    const wkv_job *j = ctx;
    int64_t h0 = j->n_head * ith / nth, h1 = j->n_head * (ith + 1) / nth;
    wkv6_heads(j->n, h0, h1, j->hs, (size_t)(j->n_head * j->hs), j->r, j->k, j->v, j->w, j->u,
               j->S, j->y);
}

static int wkv_threads(slm_pool *pool, int n, int64_t n_head, int64_t hs)
{
    if (!pool || slm_pool_busy(pool) || n_head < 2 || (int64_t)n * n_head * hs * hs < SMALL_MATMUL)
        return 1;
    int nth = slm_pool_size(pool);
    return nth < n_head ? nth : (int)n_head;
}

void slm_rwkv_wkv6_pool(slm_pool *pool, int n, int64_t n_head, int64_t hs, const float *r,
                        const float *k, const float *v, const float *w, const float *u, float *S,
                        float *y)
{
    wkv_job j = {.n = n, .n_head = n_head, .hs = hs, .r = r, .k = k, .v = v, .w = w, .u = u,
                 .S = S, .y = y};
    slm_pool_run(pool, wkv_threads(pool, n, n_head, hs), wkv_run, &j);
}

/* --- checks ------------------------------------------------------------------------ */

static slm_status check_w(const slm_tensor *W, int64_t rows, int64_t cols, const char *name,
                          slm_error *err)
{
    if (!W) return slm_error_set(err, SLM_EINVAL, "rwkv: missing weight %s", name);
    const slm_dtype_traits *tr = slm_dtype_get((int)W->dtype);
    if (W->ndim != 2 || W->shape[0] != rows || W->shape[1] != cols || W->stride[1] != 1 ||
        W->shape[1] % tr->block_size != 0)
        return slm_error_set(err, SLM_EINVAL,
                             "rwkv: weight %s must be (%lld, %lld) with contiguous rows, got %dd (%lld, %lld)",
                             name, (long long)rows, (long long)cols, W->ndim,
                             (long long)W->shape[0], (long long)(W->ndim > 1 ? W->shape[1] : 0));
    return SLM_OK;
}

#define NEED(p, name) \
    if (!(p)) return slm_error_set(err, SLM_EINVAL, "rwkv v%d: missing parameter %s", (int)b->version, name)
#define CHECK(W, r, c, name) \
    if (check_w(W, r, c, name, err) != SLM_OK) return SLM_EINVAL

slm_status slm_rwkv_tmix_check(const slm_rwkv_tmix *b, slm_error *err)
{
    if (!valid_version(b->version))
        return slm_error_set(err, SLM_EUNSUPPORTED, "rwkv: unknown version %d", (int)b->version);
    int64_t d = b->dim;
    if (d < 1 || b->n_head < 1 || b->head_size < 1 || b->n_head * b->head_size != d)
        return slm_error_set(err, SLM_EINVAL, "rwkv: dim %lld is not %lld heads of %lld",
                             (long long)d, (long long)b->n_head, (long long)b->head_size);
    CHECK(b->wr, d, d, "receptance");
    CHECK(b->wk, d, d, "key");
    CHECK(b->wv, d, d, "value");
    CHECK(b->wo, d, d, "output");
    switch (b->version) {
    case SLM_RWKV_V4:
        NEED(b->mix_k && b->mix_v && b->mix_r, "time_mix_k/v/r");
        NEED(b->decay && b->first, "time_decay/time_first");
        break;
    case SLM_RWKV_V5_1:
    case SLM_RWKV_V5_2:
        NEED(b->mix_k && b->mix_v && b->mix_r, "time_mix_k/v/r");
        NEED(b->decay && b->first, "time_decay/time_first");
        NEED(b->lnx_w && b->lnx_b, "ln_x");
        if (b->version == SLM_RWKV_V5_2) {
            NEED(b->mix_g, "time_mix_g");
            CHECK(b->wg, d, d, "gate");
        }
        break;
    case SLM_RWKV_V6: {
        NEED(b->maa_x && b->maa[0] && b->maa[1] && b->maa[2] && b->maa[3] && b->maa[4], "time_maa");
        NEED(b->decay && b->first && b->lnx_w && b->lnx_b, "time_decay/time_faaaa/ln_x");
        CHECK(b->wg, d, d, "gate");
        const slm_tensor *w1 = b->maa_w1, *w2 = b->maa_w2;
        NEED(w1 && w2 && b->decay_w1 && b->decay_w2, "time_maa_w1/w2, time_decay_w1/w2");
        if (w1->ndim != 2 || w1->shape[0] % 5 != 0)
            return slm_error_set(err, SLM_EINVAL, "rwkv v6: time_maa_w1 must be (5*extra, dim)");
        int64_t extra = w1->shape[0] / 5;
        CHECK(w1, 5 * extra, d, "time_maa_w1");
        if (w2->ndim != 3 || w2->shape[0] != 5 || w2->shape[1] != d || w2->shape[2] != extra ||
            w2->stride[2] != 1 || w2->stride[0] != w2->shape[1] * w2->stride[1] ||
            w2->shape[2] % slm_dtype_get((int)w2->dtype)->block_size != 0)
            return slm_error_set(err, SLM_EINVAL, "rwkv v6: time_maa_w2 must be (5, %lld, %lld), contiguous",
                                 (long long)d, (long long)extra);
        int64_t rank = b->decay_w1->ndim == 2 ? b->decay_w1->shape[0] : 0;
        CHECK(b->decay_w1, rank, d, "time_decay_w1");
        CHECK(b->decay_w2, d, rank, "time_decay_w2");
        break;
    }
    case SLM_RWKV_V7: {
        for (int i = 0; i < 6; i++) NEED(b->maa[i], "x_r/w/k/v/a/g (lerp)");
        NEED(b->w0 && b->a0 && b->k_k && b->k_a && b->r_k && b->lnx_w && b->lnx_b,
             "w0/a0/k_k/k_a/r_k/ln_x");
        const slm_tensor *lo[4][2] = {{b->w1, b->w2}, {b->a1, b->a2}, {b->g1, b->g2}, {b->v1, b->v2}};
        static const char *const names[4][2] = {{"w1", "w2"}, {"a1", "a2"}, {"g1", "g2"}, {"v1", "v2"}};
        for (int i = 0; i < 4; i++) {
            if (i == 3 && b->first_layer) break;   /* layer 0 has no value residual */
            const slm_tensor *A = lo[i][0];
            int64_t rank = A && A->ndim == 2 ? A->shape[0] : 0;
            CHECK(A, rank, d, names[i][0]);
            CHECK(lo[i][1], d, rank, names[i][1]);
        }
        if (!b->first_layer) NEED(b->v0, "v0");
        break;
    }
    }
    return SLM_OK;
}

slm_status slm_rwkv_cmix_check(const slm_rwkv_cmix *b, slm_error *err)
{
    if (!valid_version(b->version))
        return slm_error_set(err, SLM_EUNSUPPORTED, "rwkv: unknown version %d", (int)b->version);
    NEED(b->mix_k, "ffn time_mix_k");
    CHECK(b->wk, b->n_ff, b->dim, "ffn key");
    CHECK(b->wv, b->dim, b->n_ff, "ffn value");
    if (b->version != SLM_RWKV_V7) {
        NEED(b->mix_r, "ffn time_mix_r");
        CHECK(b->wr, b->dim, b->dim, "ffn receptance");
    }
    return SLM_OK;
}

/* --- channel mix ---------------------------------------------------------------------- */

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

static int cmix_fits(const slm_rwkv_cmix *b, const slm_rwkv_state *st, int layer, int n)
{
    return layer >= 0 && layer < st->n_layer && n >= 1 && n <= st->n_batch && b->dim == st->dim &&
           b->n_ff <= st->n_ff;
}

/* The channel mix over n rows of n_span sequences in st's scratch (one
 * sequence alone: one span): token shift per sequence from its own carried
 * row (sp[q].ls + dim: the ffn shift), then the products over all rows. */
static slm_status cmix_rows(slm_pool *pool, const slm_rwkv_cmix *b, slm_rwkv_state *st,
                            const slm_rwkv_span *sp, int n_span, int n, const float *x, float *out,
                            slm_error *err)
{
    size_t d = (size_t)b->dim;
    float *xk = st->xs, *xr = st->xs + (size_t)n * d;
    for (int q = 0; q < n_span; q++) {
        const size_t o = (size_t)sp[q].r0 * d;
        const int m_rows = sp[q].n;
        float *carry = sp[q].ls + d;   /* ffn shift */
        if (b->version >= SLM_RWKV_V6) {   /* x + (prev - x) * maa into xk (and xr) */
            const float *m[2] = {b->mix_k, b->mix_r};
            slm_rwkv_shift_mix(xk + o, (size_t)n * d, x + o, carry, m, b->mix_r ? 2 : 1, m_rows, b->dim);
        } else {                           /* x * m + (prev - prev * m) */
            for (int t = 0; t < m_rows; t++) {
                const float *xt = x + o + (size_t)t * d, *pv = slm_rwkv_prev(carry, x + o, t, b->dim);
                float *ok = xk + o + (size_t)t * d, *orr = xr + o + (size_t)t * d;
                for (size_t c = 0; c < d; c++) {
                    ok[c] = xt[c] * b->mix_k[c] + (pv[c] - pv[c] * b->mix_k[c]);
                    orr[c] = xt[c] * b->mix_r[c] + (pv[c] - pv[c] * b->mix_r[c]);
                }
            }
        }
        memcpy(carry, x + o + (size_t)(m_rows - 1) * d, d * sizeof(float));
    }
    /* k = relu(Wk xk)^2; out = Wv k, gated by sigmoid(Wr xr) before v7. One
     * token squares its rows in the product's threads (slm_rwkv_mv_group). */
    if (n == 1) {
        const slm_rwkv_mv mv = {st->ff, b->wk, xk, slm_rwkv_relu_sq};
        TRY(slm_rwkv_mv_group(pool, &mv, 1, err));
    } else {
        TRY(slm_rwkv_mm(pool, st->ff, b->wk, -1, xk, n, err));
        slm_rwkv_relu_sq(st->ff, (int64_t)n * b->n_ff);
    }
    TRY(slm_rwkv_mm(pool, out, b->wv, -1, st->ff, n, err));
    if (b->version == SLM_RWKV_V7) return SLM_OK;
    float *r = st->p;
    TRY(slm_rwkv_mm(pool, r, b->wr, -1, xr, n, err));
    for (size_t i = 0; i < (size_t)n * d; i++) out[i] *= sigmoidf(r[i]);
    return SLM_OK;
}

slm_status slm_rwkv_cmix_forward(slm_pool *pool, const slm_rwkv_cmix *b, slm_rwkv_state *st,
                                 int layer, int n, const float *x, float *out, slm_error *err)
{
    if (!cmix_fits(b, st, layer, n))
        return slm_error_set(err, SLM_EINVAL, "rwkv channel mix: layer %d or %d rows do not fit the state",
                             layer, n);
    const slm_rwkv_span one = {slm_rwkv_layer(st, layer), 0, n};
    return cmix_rows(pool, b, st, &one, 1, n, x, out, err);
}

slm_status slm_rwkv_cmix_forward_seqs(slm_pool *pool, const slm_rwkv_cmix *b, const slm_seq *seqs,
                                      int n_seq, int layer, const float *x, float *out,
                                      slm_rwkv_state *work, slm_error *err)
{
    if (n_seq < 1) return slm_error_set(err, SLM_EINVAL, "rwkv channel mix: no sequences");
    const int n = slm_seq_rows(seqs, n_seq);
    if (!cmix_fits(b, work, layer, n))
        return slm_error_set(err, SLM_EINVAL, "rwkv channel mix: layer %d or %d rows do not fit the work state",
                             layer, n);
    slm_rwkv_span small[SLM_RWKV_SPANS_STACK], *sp;
    slm_status st = slm_rwkv_spans(seqs, n_seq, layer, work, small, &sp, "channel mix", err);
    if (st) return st;
    st = cmix_rows(pool, b, work, sp, n_seq, n, x, out, err);
    if (sp != small) free(sp);
    return st;
}

slm_status slm_rwkv_spans(const slm_seq *seqs, int n_seq, int layer, const slm_rwkv_state *work,
                          slm_rwkv_span *small, slm_rwkv_span **out, const char *what, slm_error *err)
{
    slm_rwkv_span *sp = n_seq <= SLM_RWKV_SPANS_STACK ? small : malloc((size_t)n_seq * sizeof *sp);
    if (!sp) return slm_error_set(err, SLM_ENOMEM, "rwkv %s: out of memory", what);
    int r0 = 0;
    for (int q = 0; q < n_seq; q++) {
        const slm_rwkv_state *s = seqs[q].state;
        if (!s || s->version != work->version || s->n_layer != work->n_layer || s->dim != work->dim ||
            s->n_head != work->n_head || s->n_ff != work->n_ff || s->lora != work->lora ||
            s->layer_floats != work->layer_floats) {
            if (sp != small) free(sp);
            return slm_error_set(err, SLM_EINVAL, "rwkv %s: sequence %d's state is of another model", what,
                                 q + 1);
        }
        sp[q] = (slm_rwkv_span){slm_rwkv_layer(s, layer), r0, seqs[q].n};
        r0 += seqs[q].n;
    }
    *out = sp;
    return SLM_OK;
}
