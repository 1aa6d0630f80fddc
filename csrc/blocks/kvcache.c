#include "kvcache.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
    memset(acc, 0, (size_t)hd * sizeof *acc);
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

slm_kvcache *slm_kvcache_new(int n_layer, int n_ctx, int kv_dim, slm_error *err)
{
    if (n_layer <= 0 || n_ctx <= 0 || kv_dim <= 0) {
        slm_error_set(err, SLM_EINVAL, "kv cache: n_layer, n_ctx and kv_dim must be positive");
        return NULL;
    }
    size_t n = (size_t)n_layer * (size_t)n_ctx * (size_t)kv_dim;
    if (n / (size_t)n_layer / (size_t)n_ctx != (size_t)kv_dim || n > SIZE_MAX / 4) {
        slm_error_set(err, SLM_ERANGE, "kv cache: size overflows");
        return NULL;
    }
    slm_kvcache *c = calloc(1, sizeof *c);
    if (c) {
        c->k = malloc(n * sizeof(slm_f16));
        c->v = malloc(n * sizeof(slm_f16));
    }
    if (!c || !c->k || !c->v) {
        slm_kvcache_free(c);
        slm_error_set(err, SLM_ENOMEM, "kv cache: cannot allocate %zu bytes (n_ctx %d)",
                      2 * n * sizeof(slm_f16), n_ctx);
        return NULL;
    }
    c->n_layer = n_layer;
    c->n_ctx = n_ctx;
    c->kv_dim = kv_dim;
    return c;
}

void slm_kvcache_free(slm_kvcache *c)
{
    if (!c) return;
    free(c->k);
    free(c->v);
    free(c);
}

size_t slm_kvcache_bytes(const slm_kvcache *c)
{
    return 2 * (size_t)c->n_layer * (size_t)c->n_ctx * (size_t)c->kv_dim * sizeof(slm_f16);
}

static size_t row_index(const slm_kvcache *c, int layer, int pos)
{
    return ((size_t)layer * (size_t)c->n_ctx + (size_t)pos) * (size_t)c->kv_dim;
}

void slm_kvcache_store(slm_kvcache *c, int layer, int pos0, int n,
                       const float *k, const float *v)
{
    size_t m = (size_t)n * (size_t)c->kv_dim;
    kv_kernels kk = kernels();
    kk.to_f16(c->k + row_index(c, layer, pos0), k, m);
    kk.to_f16(c->v + row_index(c, layer, pos0), v, m);
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
    const slm_kvcache *c = a->c;
    const int hd = a->sh.head_dim, nh = a->sh.n_head, group = nh / a->sh.n_head_kv;
    float *s = a->scratch + (size_t)ith * a->scratch_stride;
    float *acc = s + c->n_ctx, *qh = acc + hd;
    const float qscale = a->sh.prescale_q ? a->sh.scale : 1.0f;
    const float sscale = a->sh.prescale_q ? 1.0f : a->sh.scale;
    const int total = a->n * nh;
    const kv_kernels kk = kernels();
    for (int task = ith; task < total; task += nth) {
        const int i = task / nh, h = task % nh, kvh = h / group;
        const int n_pos = a->pos0 + i + 1;
        const float *q = a->q + (size_t)i * (size_t)(nh * hd) + (size_t)h * (size_t)hd;
        /* the reference multiplies the F16 cache by q converted to F16 */
        kk.round16(qh, q, qscale, hd);
        const slm_f16 *k = c->k + row_index(c, a->layer, 0) + (size_t)kvh * (size_t)hd;
        kk.scores(s, qh, k, (size_t)c->kv_dim, n_pos, hd, sscale);
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
        const slm_f16 *v = c->v + row_index(c, a->layer, 0) + (size_t)kvh * (size_t)hd;
        kk.mix(acc, s, v, (size_t)c->kv_dim, n_pos, hd);
        float *o = a->out + (size_t)i * (size_t)(nh * hd) + (size_t)h * (size_t)hd;
        memcpy(o, acc, (size_t)hd * sizeof *o);
    }
}

slm_status slm_attn_sdpa(slm_pool *pool, const slm_kvcache *c, int layer,
                         const slm_attn_shape *sh, int pos0, int n,
                         const float *q, float *out, slm_error *err)
{
    sdpa_ctx a = {c, layer, pos0, n, *sh, q, out, NULL, 0};
    int nth = slm_pool_size(pool);
    a.scratch_stride = ((size_t)c->n_ctx + 2 * (size_t)sh->head_dim + 15) & ~(size_t)15;
    a.scratch = slm_pool_scratch(pool, (size_t)nth * a.scratch_stride * sizeof(float), err);
    if (!a.scratch) return SLM_ENOMEM;
    slm_pool_run(pool, nth, sdpa_task, &a);
    return SLM_OK;
}
