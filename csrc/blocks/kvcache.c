#include "kvcache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/snapshot.h"
#include "../kernels/ops.h"
#include "../kernels/vecdot.h"

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
    if (n_layer <= 0 || n_ctx <= 0 || n_batch <= 0) {
        slm_error_set(err, SLM_EINVAL, "kv cache: n_layer, n_ctx and n_batch must be positive");
        return NULL;
    }
    /* the size of every layer first, checked, then one block */
    size_t total = 0;
    for (int l = 0; l < n_layer; l++) {
        const int w = window ? window[l] : 0;
        if (kv_dim[l] <= 0 || w < 0) {
            slm_error_set(err, SLM_EINVAL, "kv cache: layer %d has kv_dim %d and window %d", l,
                          kv_dim[l], w);
            return NULL;
        }
        const size_t rows = (size_t)layer_cap(n_ctx, n_batch, w, ring);
        if ((size_t)kv_dim[l] > (SIZE_MAX / 4 - total) / rows / 2) {
            slm_error_set(err, SLM_ERANGE, "kv cache: size overflows");
            return NULL;
        }
        total += 2 * rows * (size_t)kv_dim[l];
    }
    slm_kvcache *c = calloc(1, sizeof *c);
    if (c) {
        c->layer = calloc((size_t)n_layer, sizeof *c->layer);
        c->mem = malloc(total * sizeof(slm_f16));
    }
    if (!c || !c->layer || !c->mem) {
        slm_kvcache_free(c);
        slm_error_set(err, SLM_ENOMEM, "kv cache: cannot allocate %zu bytes (n_ctx %d)",
                      total * sizeof(slm_f16), n_ctx);
        return NULL;
    }
    c->n_layer = n_layer;
    c->n_ctx = n_ctx;
    c->n_batch = n_batch;
    c->bytes = total * sizeof(slm_f16);
    slm_f16 *p = c->mem;
    for (int l = 0; l < n_layer; l++) {
        slm_kv_layer *L = &c->layer[l];
        L->kv_dim = kv_dim[l];
        L->window = window ? window[l] : 0;
        L->cap = layer_cap(n_ctx, n_batch, L->window, ring);
        L->k = p;
        L->v = p + (size_t)L->cap * (size_t)L->kv_dim;
        p += 2 * (size_t)L->cap * (size_t)L->kv_dim;
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

/* position pos of layer L as a row index */
static size_t row_of(const slm_kv_layer *L, int pos)
{
    return (size_t)(pos % L->cap) * (size_t)L->kv_dim;
}

/* Positions [p0, p0 + n) of a layer as at most two runs of consecutive
 * rows (a ring wraps once: n <= cap): run[0] starts at row p0 % cap. */
static int runs_of(const slm_kv_layer *L, int p0, int n, int len[2])
{
    const int r0 = p0 % L->cap;
    len[0] = n < L->cap - r0 ? n : L->cap - r0;
    len[1] = n - len[0];
    return len[1] > 0 ? 2 : 1;
}

void slm_kvcache_store(slm_kvcache *c, int layer, int pos0, int n,
                       const float *k, const float *v)
{
    const slm_kv_layer *L = &c->layer[layer];
    const size_t d = (size_t)L->kv_dim;
    kv_kernels kk = kernels();
    int len[2];
    runs_of(L, pos0, n, len);
    kk.to_f16(L->k + row_of(L, pos0), k, (size_t)len[0] * d);
    kk.to_f16(L->v + row_of(L, pos0), v, (size_t)len[0] * d);
    if (len[1]) {   /* wrapped: the rest from row 0 */
        kk.to_f16(L->k, k + (size_t)len[0] * d, (size_t)len[1] * d);
        kk.to_f16(L->v, v + (size_t)len[0] * d, (size_t)len[1] * d);
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
    return SLM_OK;
}

typedef struct sdpa_ctx {
    const slm_kvcache *c;
    int layer, pos0, n;
    slm_attn_shape sh;
    const float *q;
    float *out;
    float *scratch;      /* per thread: n_ctx scores + head_dim accumulator */
    size_t scratch_stride;
} sdpa_ctx;

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
        const int i = task / nh, h = task % nh, kvh = h / group;
        const int p = a->pos0 + i;
        const int lo = a->sh.window > 0 && p - a->sh.window + 1 > 0 ? p - a->sh.window + 1 : 0;
        /* the last position row i sees: its own, or (unmasked) the call's last */
        const int last = a->sh.unmasked ? a->pos0 + a->n - 1 : p;
        const int n_pos = last - lo + 1;
        int len[2];
        const int nrun = runs_of(L, lo, n_pos, len);
        const float *q = a->q + (size_t)i * (size_t)(nh * hd) + (size_t)h * (size_t)hd;
        /* the reference multiplies the F16 cache by q converted to F16 */
        kk.round16(qh, q, qscale, hd);
        const slm_f16 *k0 = L->k + row_of(L, lo) + (size_t)kvh * (size_t)hd;
        const slm_f16 *v0 = L->v + row_of(L, lo) + (size_t)kvh * (size_t)hd;
        kk.scores(s, qh, k0, stride, len[0], hd, sscale);
        if (nrun == 2) kk.scores(s + len[0], qh, L->k + (size_t)kvh * (size_t)hd, stride, len[1], hd, sscale);
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
        if (nrun == 2) kk.mix(acc, s + len[0], L->v + (size_t)kvh * (size_t)hd, stride, len[1], hd);
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
    sdpa_ctx a = {c, layer, pos0, n, *sh, q, out, NULL, 0};
    int nth = slm_pool_size(pool);
    a.scratch_stride = ((size_t)c->n_ctx + 2 * (size_t)sh->head_dim + 15) & ~(size_t)15;
    a.scratch = slm_pool_scratch(pool, (size_t)nth * a.scratch_stride * sizeof(float), err);
    if (!a.scratch) return SLM_ENOMEM;
    slm_pool_run(pool, nth, sdpa_task, &a);
    return SLM_OK;
}

/* --- snapshots ------------------------------------------------------------------ */

static const char KV_KIND[4] = {'K', 'V', 0, 0};
#define KV_VERSION 3
#define KV_MAGIC2 "SLMKV2\0\0"
#define KV_MAGIC1 "SLMKV1\0\0"

/* the first position a continuation after n_past can still see */
static int first_kept(const slm_kv_layer *L, int n_past)
{
    return L->window > 0 && n_past - (L->window - 1) > 0 ? n_past - (L->window - 1) : 0;
}

size_t slm_kvcache_snapshot_size(const slm_kvcache *c, int n_past)
{
    size_t n = slm_snap_header_size(1);
    for (int l = 0; l < c->n_layer; l++) {
        const slm_kv_layer *L = &c->layer[l];
        n += 12 + 2 * (size_t)(n_past - first_kept(L, n_past)) * (size_t)L->kv_dim * sizeof(slm_f16);
    }
    return n;
}

/* positions [p0, p0 + n) of a layer's rows (keys or values) to buf, and back */
static void rows_to(const slm_kv_layer *L, const slm_f16 *rows, int p0, int n, unsigned char *buf)
{
    int len[2];
    const int nrun = runs_of(L, p0, n, len);
    const size_t rb = (size_t)L->kv_dim * sizeof(slm_f16);
    memcpy(buf, rows + row_of(L, p0), (size_t)len[0] * rb);
    if (nrun == 2) memcpy(buf + (size_t)len[0] * rb, rows, (size_t)len[1] * rb);
}

static void rows_from(const slm_kv_layer *L, slm_f16 *rows, int p0, int n, const unsigned char *buf)
{
    int len[2];
    const int nrun = runs_of(L, p0, n, len);
    const size_t rb = (size_t)L->kv_dim * sizeof(slm_f16);
    memcpy(rows + row_of(L, p0), buf, (size_t)len[0] * rb);
    if (nrun == 2) memcpy(rows, buf + (size_t)len[0] * rb, (size_t)len[1] * rb);
}

void slm_kvcache_snapshot(const slm_kvcache *c, int n_past, void *buf)
{
    const int64_t dims[1] = {c->n_layer};
    unsigned char *p = slm_snap_put_header(buf, KV_KIND, KV_VERSION, n_past, 1, dims);
    for (int l = 0; l < c->n_layer; l++) {
        const slm_kv_layer *L = &c->layer[l];
        const int first = first_kept(L, n_past), n = n_past - first;
        const int32_t lh[3] = {L->kv_dim, L->window, first};
        memcpy(p, lh, sizeof lh);
        p += 12;
        const size_t block = (size_t)n * (size_t)L->kv_dim * sizeof(slm_f16);
        if (n) {
            rows_to(L, L->k, first, n, p);
            rows_to(L, L->v, first, n, p + block);
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

slm_status slm_kvcache_restore(slm_kvcache *c, const void *buf, size_t len, int *n_past,
                               slm_error *err)
{
    static const char *const names[1] = {"n_layer"};
    if (slm_snap_has_magic(buf, len, KV_MAGIC1)) return restore_v1(c, buf, len, n_past, err);
    slm_snap snap;
    slm_status st = slm_snap_has_magic(buf, len, KV_MAGIC2)
                        ? slm_snap_parse_old(buf, len, 2, 1, "a KV cache", &snap, err)
                        : slm_snap_parse(buf, len, KV_KIND, KV_VERSION, "a KV cache", 1, &snap, err);
    if (st != SLM_OK) return st;
    const int64_t dims[1] = {c->n_layer};
    if ((st = slm_snap_check_dims(&snap, dims, names, "a KV cache", err)) != SLM_OK) return st;
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
            const size_t block = (size_t)n * (size_t)L->kv_dim * sizeof(slm_f16);
            if ((len_body - off) / 2 < block) return slm_error_set(err, SLM_EFORMAT, "restore: truncated snapshot of a KV cache");
            if (pass == 1 && n) {
                rows_from(L, L->k, lh[2], n, s + off);
                rows_from(L, L->v, lh[2], n, s + off + block);
            }
            off += 2 * block;
        }
        if (off != len_body) return slm_error_set(err, SLM_EFORMAT, "restore: corrupt snapshot of a KV cache (%zu bytes past its rows)", len_body - off);
    }
    *n_past = np;
    return SLM_OK;
}
