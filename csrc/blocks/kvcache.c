#include "kvcache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/snapshot.h"
#include "../kernels/ops.h"
#include "../kernels/vecdot.h"
#include "../quant/blocks.h"
#include "kvcache_q.h"

const char *const slm_kv_type_names[SLM_KV_TYPE_COUNT + 1] = {"f16", "f32", "q8_0", "q4_0", NULL};

int slm_kv_type_block(slm_kv_type t)
{
    return t == SLM_KV_Q8_0 || t == SLM_KV_Q4_0 ? 32 : 1;
}

size_t slm_kv_row_bytes(slm_kv_type t, int n)
{
    switch (t) {
    case SLM_KV_F32: return (size_t)n * sizeof(float);
    case SLM_KV_Q8_0: return (size_t)(n / 32) * sizeof(slm_block_q8_0);
    case SLM_KV_Q4_0: return (size_t)(n / 32) * sizeof(slm_block_q4_0);
    default: return (size_t)n * sizeof(slm_f16);
    }
}

int slm_kv_type_ggml(slm_kv_type t)
{
    static const int ids[SLM_KV_TYPE_COUNT] = {SLM_DTYPE_F16, SLM_DTYPE_F32, SLM_DTYPE_Q8_0, SLM_DTYPE_Q4_0};
    return ids[t];
}

/* Inner loops: generic here, AVX2/F16C twins in kvcache_avx2.c (chosen at
 * run time; tested against these). */
static float dot_generic(const float *q, const slm_f16 *k, int n)
{
    float d = 0;
    for (int j = 0; j < n; j++) d += q[j] * slm_f16_to_f32(k[j]);
    return d;
}

static void axpy_generic(float *acc, float p, const slm_f16 *v, int n)
{
    for (int j = 0; j < n; j++) acc[j] += p * slm_f16_to_f32(v[j]);
}

static void scores_generic(float *s, const float *q, const slm_f16 *k, size_t stride, int n_pos,
                           int hd, float scale)
{
    for (int t = 0; t < n_pos; t++) s[t] = dot_generic(q, k + (size_t)t * stride, hd) * scale;
}

static void mix_generic(float *acc, const float *p, const slm_f16 *v, size_t stride, int n_pos, int hd)
{
    for (int t = 0; t < n_pos; t++) axpy_generic(acc, p[t], v + (size_t)t * stride, hd);
}

static void to_f16_generic(slm_f16 *dst, const float *src, size_t n)
{
    for (size_t i = 0; i < n; i++) dst[i] = slm_f32_to_f16(src[i]);
}

static void round16_generic(float *y, const float *x, float scale, int n)
{
    for (int i = 0; i < n; i++) y[i] = slm_f16_to_f32(slm_f32_to_f16(x[i] * scale));
}

typedef struct kv_kernels {
    void (*scores)(float *s, const float *q, const slm_f16 *k, size_t stride, int n_pos, int hd,
                   float scale);
    void (*mix)(float *acc, const float *p, const slm_f16 *v, size_t stride, int n_pos, int hd);
    void (*to_f16)(slm_f16 *dst, const float *src, size_t n);
    void (*round16)(float *y, const float *x, float scale, int n);
} kv_kernels;

static kv_kernels kernels(void)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2())
        return (kv_kernels){slm_kv_scores_avx2, slm_kv_mix_avx2, slm_kv_to_f16_avx2, slm_kv_round16_avx2};
#endif
    return (kv_kernels){scores_generic, mix_generic, to_f16_generic, round16_generic};
}

/* rows a layer holds: n_ctx, or the ring of a windowed layer */
static int layer_cap(int n_ctx, int n_batch, int window, int ring)
{
    if (window <= 0 || !ring) return n_ctx;
    const int64_t need = (int64_t)window + n_batch - 1;
    return need < n_ctx ? (int)need : n_ctx;
}

slm_kvcache *slm_kvcache_new(int n_layer, const int *kv_dim, const int *window, int n_ctx,
                             int n_batch, int ring, slm_error *err)
{
    return slm_kvcache_new_typed(n_layer, kv_dim, NULL, window, n_ctx, n_batch, ring, SLM_KV_F16, err);
}

slm_kvcache *slm_kvcache_new_typed(int n_layer, const int *kv_dim, const int *head_dim, const int *window,
                                   int n_ctx, int n_batch, int ring, slm_kv_type type, slm_error *err)
{
    if (n_layer <= 0 || n_ctx <= 0 || n_batch <= 0) {
        slm_error_set(err, SLM_EINVAL, "kv cache: n_layer, n_ctx and n_batch must be positive");
        return NULL;
    }
    if ((unsigned)type >= SLM_KV_TYPE_COUNT) {
        slm_error_set(err, SLM_EINVAL, "kv cache: unknown kv_type %d", (int)type);
        return NULL;
    }
    const int blk = slm_kv_type_block(type);
    /* the size of every layer first, checked, then one block */
    size_t total = 0;
    for (int l = 0; l < n_layer; l++) {
        const int w = window ? window[l] : 0;
        if (kv_dim[l] <= 0 || w < 0) {
            slm_error_set(err, SLM_EINVAL, "kv cache: layer %d has kv_dim %d and window %d", l,
                          kv_dim[l], w);
            return NULL;
        }
        const int hd = head_dim ? head_dim[l] : 0;
        if (hd < 0 || (hd && kv_dim[l] % hd)) {
            slm_error_set(err, SLM_EINVAL, "kv cache: layer %d has head_dim %d, which does not divide kv_dim %d", l,
                          hd, kv_dim[l]);
            return NULL;
        }
        if (blk > 1 && (hd == 0 || hd % blk)) {
            slm_error_set(err, SLM_EINVAL, "kv cache: kv_type %s needs a head size that is a multiple of %d, "
                          "layer %d has %d", slm_kv_type_names[type], blk, l, hd);
            return NULL;
        }
        if (slm_kv_rot_k(type, hd) > SLM_KV_ROT_MAX) {
            slm_error_set(err, SLM_EINVAL, "kv cache: head size %d is too large for kv_type %s", hd,
                          slm_kv_type_names[type]);
            return NULL;
        }
        const size_t rows = (size_t)layer_cap(n_ctx, n_batch, w, ring);
        /* row bytes <= 4 kv_dim (f32) */
        if ((size_t)kv_dim[l] > (SIZE_MAX / 4 - total) / rows / 8) {
            slm_error_set(err, SLM_ERANGE, "kv cache: size overflows");
            return NULL;
        }
        total += 2 * rows * slm_kv_row_bytes(type, kv_dim[l]);
    }
    slm_kvcache *c = calloc(1, sizeof *c);
    if (c) {
        c->layer = calloc((size_t)n_layer, sizeof *c->layer);
        c->mem = malloc(total);
    }
    if (!c || !c->layer || !c->mem) {
        slm_kvcache_free(c);
        slm_error_set(err, SLM_ENOMEM, "kv cache: cannot allocate %zu bytes (n_ctx %d)", total, n_ctx);
        return NULL;
    }
    c->n_layer = n_layer;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->bytes = total;
    c->type = type;
    unsigned char *p = c->mem;
    for (int l = 0; l < n_layer; l++) {
        slm_kv_layer *L = &c->layer[l];
        L->kv_dim = kv_dim[l];
        L->window = window ? window[l] : 0;
        L->head_dim = head_dim ? head_dim[l] : 0;
        L->cap = layer_cap(n_ctx, n_batch, L->window, ring);
        const size_t half = (size_t)L->cap * slm_kv_row_bytes(type, L->kv_dim);
        L->k = p;
        L->v = p + half;
        p += 2 * half;
    }
    return c;
}

void slm_kvcache_free(slm_kvcache *c)
{
    if (!c) return;
    free(c->mem);
    free(c->layer);
    free(c);
}

size_t slm_kvcache_bytes(const slm_kvcache *c)
{
    return c->bytes;
}

size_t slm_kvcache_bytes_per_token(const slm_kvcache *c)
{
    size_t n = 0;
    for (int l = 0; l < c->n_layer; l++) n += 2 * slm_kv_row_bytes(c->type, c->layer[l].kv_dim);
    return n;
}

/* position pos of an F16 layer L as an element index */
static size_t row_of(const slm_kv_layer *L, int pos)
{
    return (size_t)(pos % L->cap) * (size_t)L->kv_dim;
}

#define runs_of slm_kv_runs

/* n rows of floats (kv_dim each) as rows of the cache's type at dst,
 * rotated in chunks of rot first (0: none) */
static void store_rows(const slm_kvcache *c, const slm_kv_layer *L, unsigned char *dst, const float *src,
                       int n, int rot)
{
    const size_t cnt = (size_t)n * (size_t)L->kv_dim;
    if (c->type == SLM_KV_F16) kernels().to_f16((slm_f16 *)dst, src, cnt);
    else slm_kvq_store(c->type, dst, src, cnt, rot);
}

void slm_kvcache_store(slm_kvcache *c, int layer, int pos0, int n,
                       const float *k, const float *v)
{
    const slm_kv_layer *L = &c->layer[layer];
    const size_t d = (size_t)L->kv_dim, rb = slm_kv_row_bytes(c->type, L->kv_dim);
    unsigned char *K = L->k, *V = L->v;
    int len[2];
    runs_of(L, pos0, n, len);
    const int rk = slm_kv_rot_k(c->type, L->head_dim), rv = slm_kv_rot_v(c->type, L->head_dim);
    store_rows(c, L, K + slm_kv_row_at(L, rb, pos0), k, len[0], rk);
    store_rows(c, L, V + slm_kv_row_at(L, rb, pos0), v, len[0], rv);
    if (len[1]) {   /* wrapped: the rest from row 0 */
        store_rows(c, L, K, k + (size_t)len[0] * d, len[1], rk);
        store_rows(c, L, V, v + (size_t)len[0] * d, len[1], rv);
    }
}

slm_status slm_kvcache_check_layer(const slm_kvcache *c, int layer, const slm_attn_shape *sh,
                                   int n, slm_error *err)
{
    if (layer < 0 || layer >= c->n_layer)
        return slm_error_set(err, SLM_EINVAL, "kv cache: layer %d outside 0..%d", layer, c->n_layer - 1);
    const slm_kv_layer *L = &c->layer[layer];
    const int64_t kv_dim = (int64_t)sh->n_head_kv * sh->head_dim;
    if (L->kv_dim != kv_dim || L->window != sh->window)
        return slm_error_set(err, SLM_EINVAL,
                             "kv cache: layer %d holds %d kv dims with window %d, the block needs %lld "
                             "with window %d (state of another model)",
                             layer, L->kv_dim, L->window, (long long)kv_dim, sh->window);
    if (n > c->n_batch)
        return slm_error_set(err, SLM_EINVAL, "kv cache: %d rows in one call, the cache takes %d", n,
                             c->n_batch);
    if (sh->unmasked && sh->window)
        return slm_error_set(err, SLM_EINVAL, "kv cache: an unmasked attention has no window");
    /* quantized rows were encoded (and rotated) for heads of this size */
    if ((L->head_dim || c->type == SLM_KV_Q8_0 || c->type == SLM_KV_Q4_0) && L->head_dim != sh->head_dim)
        return slm_error_set(err, SLM_EINVAL, "kv cache: layer %d holds heads of %d, the block needs %d", layer,
                             L->head_dim, sh->head_dim);
    return SLM_OK;
}

typedef slm_kv_sdpa_ctx sdpa_ctx;

/* the F16 cache (the reference's default, non flash path) */
static void sdpa_task(void *arg, int ith, int nth)
{
    const sdpa_ctx *a = arg;
    const slm_kv_layer *L = &a->c->layer[a->layer];
    const int hd = a->sh.head_dim, nh = a->sh.n_head, group = nh / a->sh.n_head_kv;
    float *s = a->scratch + (size_t)ith * a->scratch_stride;
    float *acc = s + a->c->n_ctx, *qh = acc + hd;
    const float qscale = a->sh.prescale_q ? a->sh.scale : 1.0f;
    const float sscale = a->sh.prescale_q ? 1.0f : a->sh.scale;
    const float cap = a->sh.softcap;
    const int total = a->n * nh;
    const size_t stride = (size_t)L->kv_dim;
    const kv_kernels kk = kernels();
    for (int task = ith; task < total; task += nth) {
        int i, h, n_pos;
        const int lo = slm_kv_task_span(a, task, &i, &h, &n_pos), kvh = h / group;
        int len[2];
        const int nrun = runs_of(L, lo, n_pos, len);
        const float *q = a->q + (size_t)i * (size_t)(nh * hd) + (size_t)h * (size_t)hd;
        /* the reference multiplies the F16 cache by q converted to F16 */
        kk.round16(qh, q, qscale, hd);
        const slm_f16 *K = L->k, *V = L->v;
        const slm_f16 *k0 = K + row_of(L, lo) + (size_t)kvh * (size_t)hd;
        const slm_f16 *v0 = V + row_of(L, lo) + (size_t)kvh * (size_t)hd;
        kk.scores(s, qh, k0, stride, len[0], hd, sscale);
        if (nrun == 2) kk.scores(s + len[0], qh, K + (size_t)kvh * (size_t)hd, stride, len[1], hd, sscale);
        if (cap > 0) slm_ops_softcap(s, s, n_pos, cap);
        float mx = -INFINITY;
        for (int t = 0; t < n_pos; t++)
            if (s[t] > mx) mx = s[t];
        double sum = 0;
        for (int t = 0; t < n_pos; t++) {
            s[t] = expf(s[t] - mx);
            sum += s[t];
        }
        /* ... and the F16 values by the probabilities converted to F16 */
        const float inv = (float)(1.0 / sum);
        kk.round16(s, s, inv, n_pos);
        memset(acc, 0, (size_t)hd * sizeof *acc);
        kk.mix(acc, s, v0, stride, len[0], hd);
        if (nrun == 2) kk.mix(acc, s + len[0], V + (size_t)kvh * (size_t)hd, stride, len[1], hd);
        float *o = a->out + (size_t)i * (size_t)(nh * hd) + (size_t)h * (size_t)hd;
        memcpy(o, acc, (size_t)hd * sizeof *o);
    }
}

slm_status slm_attn_sdpa(slm_pool *pool, const slm_kvcache *c, int layer,
                         const slm_attn_shape *sh, int pos0, int n,
                         const float *q, float *out, slm_error *err)
{
    slm_status st = slm_kvcache_check_layer(c, layer, sh, n, err);
    if (st) return st;
    sdpa_ctx a = {c, layer, pos0, n, *sh, q, out, NULL, 0, 0, 0};
    int nth = slm_pool_size(pool);
#if defined(__x86_64__)
    /* decode takes the same path as prefill (the same units' arithmetic),
     * so a row's output does not depend on the batch */
    if (c->type == SLM_KV_F16 && sh->head_dim % 16 == 0 && slm_kernels_use_avx512()) {
        size_t floats;
        slm_kv_avx512_plan(c, sh, pos0, n, nth, &a.unit_rows, &a.unit_heads, &floats);
        a.scratch_stride = (floats + 15) & ~(size_t)15;
        a.scratch = slm_pool_scratch(pool, (size_t)nth * a.scratch_stride * sizeof(float), err);
        if (!a.scratch) return SLM_ENOMEM;
        slm_pool_run(pool, nth, slm_kv_sdpa_task_avx512, &a);
        return SLM_OK;
    }
#endif
    a.scratch_stride = ((size_t)c->n_ctx + 3 * (size_t)sh->head_dim + 15) & ~(size_t)15;
    a.scratch = slm_pool_scratch(pool, (size_t)nth * a.scratch_stride * sizeof(float), err);
    if (!a.scratch) return SLM_ENOMEM;
    slm_pool_run(pool, nth, c->type == SLM_KV_F16 ? sdpa_task : slm_kvq_sdpa_task, &a);
    return SLM_OK;
}

/* --- snapshots ------------------------------------------------------------------ */

static const char KV_KIND[4] = {'K', 'V', 0, 0};
#define KV_VERSION 4
#define KV_VERSION_F16 3     /* before cache types: one dim, F16 rows */
#define KV_MAGIC2 "SLMKV2\0\0"
#define KV_MAGIC1 "SLMKV1\0\0"

/* the first position a continuation after n_past can still see */
static int first_kept(const slm_kv_layer *L, int n_past)
{
    return L->window > 0 && n_past - (L->window - 1) > 0 ? n_past - (L->window - 1) : 0;
}

size_t slm_kvcache_snapshot_size(const slm_kvcache *c, int n_past)
{
    size_t n = slm_snap_header_size(2);
    for (int l = 0; l < c->n_layer; l++) {
        const slm_kv_layer *L = &c->layer[l];
        n += 12 + 2 * (size_t)(n_past - first_kept(L, n_past)) * slm_kv_row_bytes(c->type, L->kv_dim);
    }
    return n;
}

/* positions [p0, p0 + n) of a layer's rows (keys or values, rb bytes each)
 * to buf, and back */
static void rows_to(const slm_kv_layer *L, size_t rb, const unsigned char *rows, int p0, int n,
                    unsigned char *buf)
{
    int len[2];
    const int nrun = runs_of(L, p0, n, len);
    memcpy(buf, rows + slm_kv_row_at(L, rb, p0), (size_t)len[0] * rb);
    if (nrun == 2) memcpy(buf + (size_t)len[0] * rb, rows, (size_t)len[1] * rb);
}

static void rows_from(const slm_kv_layer *L, size_t rb, unsigned char *rows, int p0, int n,
                      const unsigned char *buf)
{
    int len[2];
    const int nrun = runs_of(L, p0, n, len);
    memcpy(rows + slm_kv_row_at(L, rb, p0), buf, (size_t)len[0] * rb);
    if (nrun == 2) memcpy(rows, buf + (size_t)len[0] * rb, (size_t)len[1] * rb);
}

void slm_kvcache_snapshot(const slm_kvcache *c, int n_past, void *buf)
{
    const int64_t dims[2] = {c->n_layer, slm_kv_type_ggml(c->type)};
    unsigned char *p = slm_snap_put_header(buf, KV_KIND, KV_VERSION, n_past, 2, dims);
    for (int l = 0; l < c->n_layer; l++) {
        const slm_kv_layer *L = &c->layer[l];
        const int first = first_kept(L, n_past), n = n_past - first;
        const int32_t lh[3] = {L->kv_dim, L->window, first};
        memcpy(p, lh, sizeof lh);
        p += 12;
        const size_t rb = slm_kv_row_bytes(c->type, L->kv_dim), block = (size_t)n * rb;
        if (n) {
            rows_to(L, rb, L->k, first, n, p);
            rows_to(L, rb, L->v, first, n, p + block);
        }
        p += 2 * block;
    }
}

/* SLMKV1: full layers of one kv_dim */
static slm_status restore_v1(slm_kvcache *c, const unsigned char *s, size_t len, int *n_past,
                             slm_error *err)
{
    int32_t hdr[3];
    if (len < 20) return slm_error_set(err, SLM_EFORMAT, "restore: truncated snapshot of a KV cache");
    memcpy(hdr, s + 8, sizeof hdr);
    for (int l = 0; l < c->n_layer; l++)
        if (c->layer[l].window || c->layer[l].kv_dim != hdr[1] || hdr[0] != c->n_layer)
            return slm_error_set(err, SLM_EINVAL,
                                 "restore: snapshot of a model with %d layers x %d kv dims, this one differs",
                                 (int)hdr[0], (int)hdr[1]);
    if (hdr[2] < 0 || hdr[2] > c->n_ctx)
        return slm_error_set(err, SLM_EINVAL, "restore: snapshot holds %d positions, the context has room for %d",
                             (int)hdr[2], c->n_ctx);
    const size_t block = (size_t)hdr[2] * (size_t)hdr[1] * sizeof(slm_f16);
    if (len != 20 + 2 * (size_t)c->n_layer * block)
        return slm_error_set(err, SLM_EFORMAT, "restore: truncated snapshot of a KV cache");
    s += 20;
    for (int l = 0; l < c->n_layer; l++, s += 2 * block) {
        memcpy(c->layer[l].k, s, block);
        memcpy(c->layer[l].v, s + block, block);
    }
    *n_past = hdr[2];
    return SLM_OK;
}

/* the name of a snapshot's kv_type (a GGUF type id), or NULL */
static const char *ggml_kv_name(int64_t id)
{
    for (int t = 0; t < SLM_KV_TYPE_COUNT; t++)
        if (slm_kv_type_ggml((slm_kv_type)t) == id) return slm_kv_type_names[t];
    return NULL;
}

/* The header of a snapshot in this layout (version 4) or version 3's (F16
 * rows, one dim), refused unless its rows are of the cache's type. */
static slm_status parse_header(const slm_kvcache *c, const void *buf, size_t len, slm_snap *snap,
                               slm_error *err)
{
    static const char *const names[2] = {"n_layer", "kv_type"};
    uint32_t version = 0;
    if (len >= 12) memcpy(&version, (const unsigned char *)buf + 8, 4);
    slm_status st;
    int64_t type = SLM_DTYPE_F16;
    if (slm_snap_has_magic(buf, len, KV_MAGIC2)) {
        st = slm_snap_parse_old(buf, len, 2, 1, "a KV cache", snap, err);
    } else if (len >= 12 && memcmp((const unsigned char *)buf + 4, KV_KIND, 4) == 0 &&
               version == KV_VERSION_F16) {
        st = slm_snap_parse(buf, len, KV_KIND, KV_VERSION_F16, "a KV cache", 1, snap, err);
    } else {
        st = slm_snap_parse(buf, len, KV_KIND, KV_VERSION, "a KV cache", 2, snap, err);
        type = snap->dims[1];
    }
    if (st != SLM_OK) return st;
    if (type != slm_kv_type_ggml(c->type)) {
        const char *name = ggml_kv_name(type);
        if (!name) return slm_error_set(err, SLM_EFORMAT, "restore: corrupt snapshot of a KV cache (kv_type %lld)",
                                        (long long)type);
        return slm_error_set(err, SLM_EINVAL, "restore: snapshot of a KV cache of kv_type %s, this one is %s",
                             name, slm_kv_type_names[c->type]);
    }
    /* the type agrees: what is left to compare is n_layer */
    const int64_t dims[2] = {c->n_layer, type};
    return slm_snap_check_dims(snap, dims, names, "a KV cache", err);
}

slm_status slm_kvcache_restore(slm_kvcache *c, const void *buf, size_t len, int *n_past,
                               slm_error *err)
{
    if (slm_snap_has_magic(buf, len, KV_MAGIC1)) {
        if (c->type != SLM_KV_F16)
            return slm_error_set(err, SLM_EINVAL, "restore: snapshot of a KV cache of kv_type f16, this one is %s",
                                 slm_kv_type_names[c->type]);
        return restore_v1(c, buf, len, n_past, err);
    }
    slm_snap snap;
    slm_status st = parse_header(c, buf, len, &snap, err);
    if (st != SLM_OK) return st;
    if (snap.n_past > c->n_ctx)
        return slm_error_set(err, SLM_EINVAL, "restore: snapshot holds %lld positions, the context has room for %d",
                             (long long)snap.n_past, c->n_ctx);
    const int np = (int)snap.n_past;
    const unsigned char *s = snap.body;
    const size_t len_body = snap.body_len;
    /* check every layer's header and the total length before copying */
    size_t off = 0;
    for (int pass = 0; pass < 2; pass++) {
        off = 0;
        for (int l = 0; l < c->n_layer; l++) {
            slm_kv_layer *L = &c->layer[l];
            int32_t lh[3];
            if (len_body - off < 12) return slm_error_set(err, SLM_EFORMAT, "restore: truncated snapshot of a KV cache");
            memcpy(lh, s + off, sizeof lh);
            off += 12;
            if (lh[0] != L->kv_dim || lh[1] != L->window)
                return slm_error_set(err, SLM_EINVAL,
                                     "restore: snapshot layer %d has %d kv dims with window %d, this one %d with window %d",
                                     l, (int)lh[0], (int)lh[1], L->kv_dim, L->window);
            if (lh[2] != first_kept(L, np))
                return slm_error_set(err, SLM_EFORMAT, "restore: corrupt snapshot of a KV cache (layer %d)", l);
            const int n = np - lh[2];
            const size_t rb = slm_kv_row_bytes(c->type, L->kv_dim), block = (size_t)n * rb;
            if ((len_body - off) / 2 < block) return slm_error_set(err, SLM_EFORMAT, "restore: truncated snapshot of a KV cache");
            if (pass == 1 && n) {
                rows_from(L, rb, L->k, lh[2], n, s + off);
                rows_from(L, rb, L->v, lh[2], n, s + off + block);
            }
            off += 2 * block;
        }
        if (off != len_body) return slm_error_set(err, SLM_EFORMAT, "restore: corrupt snapshot of a KV cache (%zu bytes past its rows)", len_body - off);
    }
    *n_past = np;
    return SLM_OK;
}
