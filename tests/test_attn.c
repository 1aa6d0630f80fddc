/* KV cache + scaled dot-product attention against a plain double-precision
 * reference (causal, grouped-query, sliding windows with and without ring
 * storage, soft caps, unmasked), on 1 and 2 threads; snapshots restored
 * into caches of another ring length continue bit for bit. The encoder
 * block (slm_attn_encode: projections with biases, no cache, no mask)
 * against a double-precision reference of the whole block, and its causal
 * form against the decoder's forward over a fresh cache. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks/kvcache.h"
#include "blocks/transformer.h"
#include "core/pool.h"
#include "kernels/vecdot.h"

static int passed, failed;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

#define TESTRAND_SEED 12345
#define TESTRAND_GRID 10000
#include "testrand.h"

static double r16(double x) { return slm_f16_to_f32(slm_f32_to_f16((float)x)); }

/* reference on f16-rounded keys and values (what the cache holds), with q
 * and the probabilities rounded to f16 as the reference implementation does;
 * the query at position p sees positions lo..last (lo = p - window + 1 in a
 * sliding-window layer; last = p when causal), scores soft-capped
 * c tanh(s / c) when cap > 0 */
/* a probability p computed in float (its exp and sum not the double ones:
 * a relative error below 1e-6) may round to the f16 neighbour of r16(p):
 * the most that moves the product with value w */
static double flip_slack(double p, double w)
{
    const double a = fabs(r16(p * (1 + 1e-6)) - r16(p)), b = fabs(r16(p * (1 - 1e-6)) - r16(p));
    return (a > b ? a : b) * fabs(w);
}

/* *slack (if not NULL): the sum of flip_slack over the positions */
static double ref_out_slack(const float *q, const float *k, const float *v, int p, int last, int window,
                            int kv_dim, int kvh, int hd, float scale, int prescale, float cap, int j,
                            double *slack)
{
    double s[512], mx = -1e300, sum = 0, o = 0;
    const int lo = window > 0 && p - window + 1 > 0 ? p - window + 1 : 0;
    p = last;
    for (int t = lo; t <= p; t++) {
        double d = 0;
        for (int x = 0; x < hd; x++)
            d += r16(prescale ? q[x] * scale : q[x]) * r16(k[(size_t)t * kv_dim + kvh * hd + x]);
        s[t] = prescale ? d : d * scale;
        if (cap > 0) s[t] = cap * tanh(s[t] / cap);
        if (s[t] > mx) mx = s[t];
    }
    for (int t = lo; t <= p; t++) sum += s[t] = exp(s[t] - mx);
    if (slack) *slack = 0;
    for (int t = lo; t <= p; t++) {
        const double w = r16(v[(size_t)t * kv_dim + kvh * hd + j]);
        o += r16(s[t] / sum) * w;
        if (slack) *slack += flip_slack(s[t] / sum, w);
    }
    return o;
}

static double ref_out(const float *q, const float *k, const float *v, int p, int last, int window,
                      int kv_dim, int kvh, int hd, float scale, int prescale, float cap, int j)
{
    return ref_out_slack(q, k, v, p, last, window, kv_dim, kvh, hd, scale, prescale, cap, j, NULL);
}

typedef struct attn_case {
    int threads, n_head, n_head_kv, hd, pos0, n;
    int prescale;
    int window;      /* 0: full causal */
    float cap;       /* 0: no soft cap */
    int ring;        /* windowed layers as rings (else n_ctx rows) */
    int unmasked;    /* every row sees all positions 0..pos0+n-1 */
} attn_case;

/* Stores positions 0..pos0+n-1 as a session with batch n does (the prefix
 * in calls of at most n rows, then the n new rows), runs the attention of
 * the new rows and compares with the reference; then a snapshot restored
 * into a cache made for batch 1 gives the same decode step bit for bit. */
static void run_case(attn_case t)
{
    slm_error err = {0};
    int kv_dim = t.n_head_kv * t.hd, n_ctx = 256, q_dim = t.n_head * t.hd, layer = 1;
    const int dims[2] = {kv_dim + 8, kv_dim}, windows[2] = {0, t.window};
    slm_pool *pool = slm_pool_new(t.threads, &err);
    slm_kvcache *c = slm_kvcache_new(2, dims, windows, n_ctx, t.n, t.ring, &err);
    int total = t.pos0 + t.n + 1;
    float *k = rvec((int64_t)(total * kv_dim), 1.0f), *v = rvec((int64_t)(total * kv_dim), 1.0f);
    float *q = rvec((int64_t)((t.n + 1) * q_dim), 1.0f), *out = calloc((size_t)t.n * q_dim, sizeof *out);
    for (int p = 0; p < t.pos0; p += t.n) {
        int m = t.pos0 - p < t.n ? t.pos0 - p : t.n;
        slm_kvcache_store(c, layer, p, m, k + (size_t)p * kv_dim, v + (size_t)p * kv_dim);
    }
    slm_kvcache_store(c, layer, t.pos0, t.n, k + (size_t)t.pos0 * kv_dim, v + (size_t)t.pos0 * kv_dim);
    slm_attn_shape sh = {t.n_head, t.n_head_kv, t.hd, 1.0f / sqrtf((float)t.hd), t.prescale, t.cap, t.window,
                         t.unmasked};
    slm_status st = slm_attn_sdpa(pool, c, layer, &sh, t.pos0, t.n, q, out, &err);
    double maxd = 0, maxraw = 0;
    for (int i = 0; i < t.n; i++)
        for (int h = 0; h < t.n_head; h++)
            for (int j = 0; j < t.hd; j++) {
                double slack;
                double r = ref_out_slack(q + (size_t)i * q_dim + h * t.hd, k, v, t.pos0 + i,
                                         t.unmasked ? t.pos0 + t.n - 1 : t.pos0 + i, t.window, kv_dim,
                                         h / (t.n_head / t.n_head_kv), t.hd, sh.scale, t.prescale, t.cap, j,
                                         &slack);
                double d = fabs(r - out[(size_t)i * q_dim + h * t.hd + j]);
                if (d > maxraw) maxraw = d;
                if (d - slack > maxd) maxd = d - slack;
            }
    /* beyond the flips of probabilities that sit at an f16 rounding
     * boundary (flip_slack: the float softmax's exp and sum are not the
     * double ones), within 1e-5 of the double reference */
    CHECK(st == SLM_OK && maxd < 1e-5,
          "sdpa %s threads=%d heads=%d/%d hd=%d pos0=%d n=%d prescale=%d window=%d cap=%g ring=%d unmasked=%d: "
          "max diff %g beyond the f16 flips' slack (%g in all) (%s)",
          slm_kernels_level_name(slm_kernels_level()), t.threads, t.n_head, t.n_head_kv, t.hd, t.pos0, t.n,
          t.prescale, t.window, (double)t.cap, t.ring, t.unmasked, maxd, maxraw, err.msg);
    /* batch invariance: each row alone (a call of one row, as decode) has
     * the bits it had in the call of n rows */
    if (!t.unmasked) {
        float *o1 = calloc((size_t)q_dim, sizeof *o1);
        int same = 1;
        for (int i = 0; i < t.n; i++) {
            st |= slm_attn_sdpa(pool, c, layer, &sh, t.pos0 + i, 1, q + (size_t)i * q_dim, o1, &err);
            same &= memcmp(o1, out + (size_t)i * q_dim, (size_t)q_dim * sizeof *o1) == 0;
        }
        CHECK(st == SLM_OK && same, "sdpa %s hd=%d heads=%d/%d pos0=%d n=%d window=%d: each row alone has "
              "the bits of the batch", slm_kernels_level_name(slm_kernels_level()), t.hd, t.n_head, t.n_head_kv,
              t.pos0, t.n, t.window);
        free(o1);
    }
    if (t.window && t.ring)
        CHECK(c->layer[1].cap == (t.window + t.n - 1 < n_ctx ? t.window + t.n - 1 : n_ctx) &&
              c->layer[0].cap == n_ctx, "ring of %d rows for window %d, batch %d", c->layer[1].cap,
              t.window, t.n);

    /* snapshot -> a cache for batch 1 (another ring length) -> one more step */
    const int np = t.pos0 + t.n;
    size_t sz = slm_kvcache_snapshot_size(c, np);
    unsigned char *snap = malloc(sz);
    slm_kvcache_snapshot(c, np, snap);
    slm_kvcache *d = slm_kvcache_new(2, dims, windows, n_ctx, 1, 1, &err);
    int got = -1;
    st = slm_kvcache_restore(d, snap, sz, &got, &err);
    CHECK(st == SLM_OK && got == np, "restore %d positions: %s", np, err.msg);
    float *o1 = calloc((size_t)q_dim, sizeof *o1), *o2 = calloc((size_t)q_dim, sizeof *o2);
    const float *qn = q + (size_t)t.n * q_dim;
    slm_kvcache_store(c, layer, np, 1, k + (size_t)np * kv_dim, v + (size_t)np * kv_dim);
    slm_kvcache_store(d, layer, np, 1, k + (size_t)np * kv_dim, v + (size_t)np * kv_dim);
    st = slm_attn_sdpa(pool, c, layer, &sh, np, 1, qn, o1, &err);
    st |= slm_attn_sdpa(pool, d, layer, &sh, np, 1, qn, o2, &err);
    CHECK(st == SLM_OK && memcmp(o1, o2, (size_t)q_dim * sizeof *o1) == 0,
          "decode after a restored snapshot equals decode without (window %d, ring %d)", t.window, t.ring);
    /* the layout of earlier versions: "SLMKV2" | int32 n_layer, n_past | the
     * same layers (the new header is 24 + 8 * 2 bytes) */
    unsigned char *old = malloc(sz - 40 + 16);
    const int32_t oh[2] = {2, np};
    memcpy(old, "SLMKV2\0\0", 8);
    memcpy(old + 8, oh, sizeof oh);
    memcpy(old + 16, snap + 40, sz - 40);
    slm_kvcache *d2 = slm_kvcache_new(2, dims, windows, n_ctx, 1, 1, &err);
    CHECK(slm_kvcache_restore(d2, old, sz - 24, &got, &err) == SLM_OK && got == np, "SLMKV2: %s", err.msg);
    slm_kvcache_store(d2, layer, np, 1, k + (size_t)np * kv_dim, v + (size_t)np * kv_dim);
    st = slm_attn_sdpa(pool, d2, layer, &sh, np, 1, qn, o2, &err);
    CHECK(st == SLM_OK && memcmp(o1, o2, (size_t)q_dim * sizeof *o1) == 0,
          "decode after an SLMKV2 snapshot equals decode without (window %d, ring %d)", t.window, t.ring);
    slm_kvcache_free(d2);
    free(old);
    /* truncated or foreign snapshots are refused */
    CHECK(slm_kvcache_restore(d, snap, sz - 1, &got, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: truncated snapshot of a KV cache") == 0, "truncated snapshot: %s", err.msg);
    CHECK(slm_kvcache_restore(d, snap, 20, &got, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: truncated snapshot of a KV cache") == 0, "header cut: %s", err.msg);
    if (t.window) {
        const int nowin[2] = {0, 0};
        slm_kvcache *e = slm_kvcache_new(2, dims, nowin, n_ctx, 1, 1, &err);
        CHECK(slm_kvcache_restore(e, snap, sz, &got, &err) == SLM_EINVAL && strstr(err.msg, "window"),
              "snapshot of a windowed layer into a full one: %s", err.msg);
        slm_kvcache_free(e);
    }
    free(snap); free(o1); free(o2);
    slm_kvcache_free(d);
    free(k); free(v); free(q); free(out);
    slm_kvcache_free(c);
    slm_pool_free(pool);
}

#if defined(__x86_64__)
/* the whole-row AVX2 loops give the bits of the per-position ones (so decode
 * and prefill numerics are those of the kernels they replaced) */
static void check_row_kernels(int hd, int n_pos)
{
    enum { STRIDE = 200 };
    static slm_f16 k[300 * STRIDE], v[300 * STRIDE];
    static float q[STRIDE], p[300], s1[300], acc1[STRIDE], acc2[STRIDE];
    for (int i = 0; i < n_pos * STRIDE; i++) {
        k[i] = slm_f32_to_f16(frand());
        v[i] = slm_f32_to_f16(frand());
    }
    for (int j = 0; j < hd; j++) q[j] = (float)r16(frand());
    for (int t = 0; t < n_pos; t++) p[t] = (float)r16(frand() * 0.5 + 0.5);
    slm_kv_scores_avx2(s1, q, k, STRIDE, n_pos, hd, 0.125f);
    int same = 1;
    for (int t = 0; t < n_pos; t++) {
        float d = slm_kv_dot_avx2(q, k + t * STRIDE, hd) * 0.125f;
        same &= memcmp(&d, &s1[t], 4) == 0;
    }
    memset(acc1, 0, sizeof acc1);
    for (int t = 0; t < n_pos; t++) slm_kv_axpy_avx2(acc1, p[t], v + t * STRIDE, hd);
    memset(acc2, 0, sizeof acc2);
    slm_kv_mix_avx2(acc2, p, v, STRIDE, n_pos, hd);
    same &= memcmp(acc1, acc2, (size_t)hd * sizeof(float)) == 0;
    CHECK(same, "AVX2 score row and value mix equal per-position dot/axpy (hd=%d n_pos=%d)", hd, n_pos);
    /* scale and round to f16 values: the scalar conversion's bits, in place
     * too, including values that overflow or turn subnormal */
    static float x[300], y[300];
    /* (not from frand: the sdpa cases below keep their data) */
    for (int t = 0; t < n_pos; t++)
        x[t] = (float)((t * 37 % 101 - 50) / 50.0 * (t % 3 == 0 ? 7e4 : t % 3 == 1 ? 1e-6 : 1.0));
    slm_kv_round16_avx2(y, x, 1.5f, n_pos);
    int r = 1;
    for (int t = 0; t < n_pos; t++) {
        const float e = slm_f16_to_f32(slm_f32_to_f16(x[t] * 1.5f));
        r &= memcmp(&e, &y[t], 4) == 0;
    }
    slm_kv_round16_avx2(x, x, 1.5f, n_pos);
    r &= memcmp(x, y, (size_t)n_pos * sizeof(float)) == 0;
    CHECK(r, "AVX2 f16 rounding of scaled values equals the scalar conversion (n=%d)", n_pos);
}
#endif


/* ---- the encoder block ------------------------------------------------------ */

static slm_tensor *f32_matrix(int64_t rows, int64_t cols, float **data)
{
    slm_error err = {0};
    const int64_t shape[2] = {rows, cols};
    slm_tensor *t = slm_tensor_new(SLM_DTYPE_F32, 2, shape, &err);
    *data = slm_tensor_data(t);
    for (int64_t i = 0; i < rows * cols; i++) (*data)[i] = frand() * 0.5f;
    return t;
}

/* y (out) = W (out, in) . x + b in double */
static void ref_linear(double *y, const float *W, const float *b, const double *x, int out, int in)
{
    for (int o = 0; o < out; o++) {
        double d = b ? b[o] : 0;
        for (int i = 0; i < in; i++) d += (double)W[(size_t)o * in + i] * x[i];
        y[o] = d;
    }
}

/* slm_attn_encode of n rows against a double-precision reference of the
 * block: q, k, v with biases, f16 rounding of q, k, v and the probabilities
 * as the cache's sdpa, every row attending to every row (unmasked) or to
 * those up to its own; then the output projection with its bias. */
static void encoder_case(int threads, int n, int n_head, int n_head_kv, int hd, int dim, int unmasked)
{
    slm_error err = {0};
    const int q_dim = n_head * hd, kv_dim = n_head_kv * hd;
    float *wq, *wk, *wv, *wo;
    slm_tensor *tq = f32_matrix(q_dim, dim, &wq), *tk = f32_matrix(kv_dim, dim, &wk);
    slm_tensor *tv = f32_matrix(kv_dim, dim, &wv), *to = f32_matrix(dim, q_dim, &wo);
    float *bq = rvec((int64_t)q_dim, 1.0f), *bk = rvec((int64_t)kv_dim, 1.0f), *bv = rvec((int64_t)kv_dim, 1.0f);
    float *bo = rvec((int64_t)dim, 1.0f), *x = rvec((int64_t)(n * dim), 1.0f);
    slm_attn_block b = {0};
    b.wq = tq; b.wk = tk; b.wv = tv; b.wo = to;
    b.bq = bq; b.bk = bk; b.bv = bv; b.bo = bo;
    b.shape = (slm_attn_shape){n_head, n_head_kv, hd, 1.0f / sqrtf((float)hd), 0, 0, 0, unmasked};
    b.encoder = 1;
    slm_pool *pool = slm_pool_new(threads, &err);
    slm_work *work = slm_work_new(slm_attn_work_size(&b, n), &err);
    float *out = calloc((size_t)n * dim, sizeof *out);
    slm_status st = slm_attn_block_check(&b, dim, &err);
    if (!st) st = slm_attn_encode(pool, &b, n, x, out, dim, work, &err);
    /* the reference: projections in double, then ref_out on them */
    float *q = malloc(sizeof *q * (size_t)n * q_dim), *k = malloc(sizeof *k * (size_t)n * kv_dim);
    float *v = malloc(sizeof *v * (size_t)n * kv_dim);
    double xd[256], y[256], att[256];
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < dim; j++) xd[j] = x[(size_t)i * dim + j];
        ref_linear(y, wq, bq, xd, q_dim, dim);
        for (int j = 0; j < q_dim; j++) q[(size_t)i * q_dim + j] = (float)y[j];
        ref_linear(y, wk, bk, xd, kv_dim, dim);
        for (int j = 0; j < kv_dim; j++) k[(size_t)i * kv_dim + j] = (float)y[j];
        ref_linear(y, wv, bv, xd, kv_dim, dim);
        for (int j = 0; j < kv_dim; j++) v[(size_t)i * kv_dim + j] = (float)y[j];
    }
    double maxd = 0, maxo = 0;
    for (int i = 0; i < n; i++) {
        for (int h = 0; h < n_head; h++)
            for (int j = 0; j < hd; j++)
                att[h * hd + j] = ref_out(q + (size_t)i * q_dim + h * hd, k, v, i, unmasked ? n - 1 : i, 0,
                                          kv_dim, h / (n_head / n_head_kv), hd, b.shape.scale, 0, 0, j);
        ref_linear(y, wo, bo, att, dim, q_dim);
        for (int j = 0; j < dim; j++) {
            double d = fabs(y[j] - out[(size_t)i * dim + j]);
            if (d > maxd) maxd = d;
            if (fabs(y[j]) > maxo) maxo = fabs(y[j]);
        }
    }
    /* f32 projections may round q, k or v to the neighbouring f16 value
     * where the double ones do not: up to 5e-4 on outputs near 20 here */
    CHECK(st == SLM_OK && maxd < 1e-4 * (1 + maxo),
          "encoder block threads=%d n=%d heads=%d/%d hd=%d dim=%d unmasked=%d: max diff %g of %g (%s)", threads,
          n, n_head, n_head_kv, hd, dim, unmasked, maxd, maxo, err.msg);
    if (!unmasked) {
        /* causal: the decoder's forward over a fresh cache, bit for bit */
        slm_attn_block d = b;
        d.encoder = 0;
        const int dims[1] = {kv_dim};
        slm_kvcache *c = slm_kvcache_new(1, dims, NULL, n, n, 1, &err);
        slm_work *w2 = slm_work_new(slm_attn_work_size(&d, n), &err);
        float *o2 = calloc((size_t)n * dim, sizeof *o2);
        st = slm_attn_forward(pool, &d, c, 0, 0, n, x, o2, dim, w2, &err);
        CHECK(st == SLM_OK && memcmp(out, o2, sizeof *o2 * (size_t)n * dim) == 0,
              "causal encode equals the cached forward (n=%d): %s", n, err.msg);
        /* and the wrong entry points are refused */
        CHECK(slm_attn_encode(pool, &d, n, x, o2, dim, w2, &err) == SLM_EINVAL &&
                  slm_attn_forward(pool, &b, c, 0, 0, n, x, o2, dim, work, &err) == SLM_EINVAL,
              "encode needs an encoder block, forward a decoder one");
        free(o2);
        slm_work_free(w2);
        slm_kvcache_free(c);
    }
    /* too small a workspace is an error, not an overrun */
    if (n > 1) {
        slm_work *small = slm_work_new(slm_attn_work_size(&b, n - 1), &err);
        CHECK(slm_attn_encode(pool, &b, n, x, out, dim, small, &err) == SLM_EINVAL &&
                  strstr(err.msg, "workspace"),
              "encode with a workspace for n-1 rows: %s", err.msg);
        slm_work_free(small);
    }
    free(q); free(k); free(v); free(out); free(x);
    free(bq); free(bk); free(bv); free(bo);
    slm_tensor_free(tq); slm_tensor_free(tk); slm_tensor_free(tv); slm_tensor_free(to);
    slm_work_free(work);
    slm_pool_free(pool);
}

int main(void)
{
#if defined(__x86_64__)
    if (slm_cpu_has_avx2()) {
        check_row_kernels(64, 1);
        check_row_kernels(64, 257);
        check_row_kernels(128, 33);
        check_row_kernels(200, 9);
        check_row_kernels(20, 5);
    }
#endif
    /* every tier this CPU has: AVX-512 (kvcache_avx512.c), AVX2/F16C, generic */
    for (int level = SLM_KERNELS_AVX512; level >= SLM_KERNELS_GENERIC; level--) {
    if ((level == SLM_KERNELS_AVX512 && !slm_cpu_has_avx512()) || (level == SLM_KERNELS_AVX2 && !slm_cpu_has_avx2())) {
        printf("skip: attention at the %s tier (this CPU lacks it)\n", level == SLM_KERNELS_AVX512 ? "AVX-512" : "AVX2");
        continue;
    }
    slm_kernels_set_level(level);
    run_case((attn_case){1, 1, 1, 8, 0, 1, 0, 0, 0, 1, 0});
    run_case((attn_case){1, 8, 2, 16, 0, 5, 0, 0, 0, 1, 0});
    run_case((attn_case){2, 8, 2, 16, 7, 1, 0, 0, 0, 1, 0});
    run_case((attn_case){2, 9, 3, 64, 30, 17, 0, 0, 0, 1, 0});
    run_case((attn_case){2, 4, 4, 32, 100, 3, 0, 0, 0, 1, 0});
    run_case((attn_case){2, 8, 1, 8, 0, 40, 0, 0, 0, 1, 0});
    run_case((attn_case){2, 8, 8, 32, 20, 4, 1, 0, 0, 1, 0});
    run_case((attn_case){2, 4, 2, 20, 9, 2, 0, 0, 0, 1, 0});   /* head_dim not a multiple of 8 */
    /* sliding windows: rings that wrap (pos0 well past the ring), windows
     * longer than the context so far, a window of 1; the same without rings */
    for (int ring = 0; ring <= 1; ring++) {
        run_case((attn_case){2, 8, 2, 16, 37, 5, 0, 4, 0, ring, 0});
        run_case((attn_case){1, 4, 1, 64, 100, 3, 1, 6, 0, ring, 0});
        run_case((attn_case){2, 4, 2, 32, 3, 2, 0, 50, 0, ring, 0});
        run_case((attn_case){2, 4, 4, 8, 20, 7, 0, 1, 0, ring, 0});
        run_case((attn_case){2, 8, 4, 64, 61, 8, 1, 6, 5.0f, ring, 0});   /* gemma2: cap + window */
    }
    run_case((attn_case){2, 8, 2, 16, 12, 4, 0, 0, 3.0f, 1, 0});
    /* several 64-key chunks and units of 8 rows: groups of 8 (score and
     * mix tiles of 6 + 2 queries), 5 and 6; heads of 128, 48 and 80
     * (column passes of 4 + 4, 3, 4 + 1 vectors); a window across chunks */
    run_case((attn_case){2, 16, 2, 128, 150, 40, 0, 0, 0, 1, 0});
    run_case((attn_case){2, 10, 2, 48, 70, 20, 1, 0, 0, 1, 0});
    run_case((attn_case){1, 6, 1, 80, 90, 13, 0, 0, 0, 1, 0});
    for (int ring = 0; ring <= 1; ring++) run_case((attn_case){2, 8, 2, 64, 180, 30, 0, 70, 0, ring, 0});
    }
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    /* unmasked (encoders): every row sees the whole call, and a prefix;
     * the encoder block (after the cases above, which keep their data) */
    for (int generic = 0; generic <= 1; generic++) {
    slm_kernels_force_generic(generic);
    run_case((attn_case){1, 4, 4, 32, 0, 9, 0, 0, 0, 1, 1});
    run_case((attn_case){2, 8, 2, 16, 0, 40, 0, 0, 0, 1, 1});
    run_case((attn_case){2, 4, 2, 20, 6, 5, 1, 0, 0, 1, 1});
    run_case((attn_case){2, 2, 1, 8, 0, 1, 0, 0, 0, 1, 1});
    encoder_case(1, 7, 4, 4, 32, 128, 1);
    encoder_case(2, 33, 4, 2, 16, 64, 1);
    encoder_case(2, 1, 2, 2, 8, 16, 1);
    encoder_case(2, 12, 4, 4, 32, 128, 0);
    }
    slm_kernels_force_generic(0);
    slm_error err = {0};
    const int d1[1] = {10}, w1[1] = {0}, d0[1] = {0};
    CHECK(slm_kvcache_new(0, d1, w1, 10, 1, 1, &err) == NULL && err.code == SLM_EINVAL, "bad dims");
    CHECK(slm_kvcache_new(1, d0, w1, 10, 1, 1, &err) == NULL && err.code == SLM_EINVAL, "kv_dim 0");
    /* an unmasked attention is an encoder's, without a window */
    slm_attn_block ub = {0};
    ub.shape = (slm_attn_shape){4, 4, 8, 0.35f, 0, 0, 0, 1};
    CHECK(slm_attn_block_check(&ub, 32, &err) == SLM_EINVAL && strstr(err.msg, "encoder"),
          "unmasked decoder block refused: %s", err.msg);
    ub.encoder = 1;
    ub.shape.window = 4;
    CHECK(slm_attn_block_check(&ub, 32, &err) == SLM_EINVAL, "unmasked window refused: %s", err.msg);
    const int big[1] = {1 << 30};
    CHECK(slm_kvcache_new(1, big, NULL, 1 << 30, 1, 1, &err) == NULL, "overflow/huge: %s", err.msg);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
