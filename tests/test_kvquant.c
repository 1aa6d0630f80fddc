/* KV caches of type F32, Q8_0 and Q4_0 (blocks/kvcache_q.[ch]):
 *  - the value mixes, generic and AVX2, against each other and against a
 *    double sum over the rows expanded by quant.h's dequantizers;
 *  - the scores through the vec_dot kernels, generic and AVX2;
 *  - the Walsh-Hadamard transform against the Sylvester matrix / sqrt(n);
 *  - attention over each type (GQA, windows with and without rings, soft
 *    caps, prescaled q, rotated and unrotated head sizes, 1 and 2 threads)
 *    against a double-precision reference that rotates with the explicit
 *    matrix, encodes rows with the reference quantizers and expands them;
 *  - snapshots: round trip bit for bit into a cache of another ring length,
 *    version 3 (F16) snapshots still read, another type refused by name;
 *  - bad shapes refused, bytes per token. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "blocks/kvcache.h"
#include "blocks/kvcache_q.h"
#include "core/pool.h"
#include "core/snapshot.h"
#include "kernels/vecdot.h"
#include "quant/quant.h"
#include "check.h"

#define TESTRAND_SEED 777
#define TESTRAND_GRID 10000
#include "testrand.h"

static const char *tname(slm_kv_type t) { return slm_kv_type_names[t]; }

/* n floats encoded as type t by the specification's functions (q4_0: the
 * reference quantizer; q8_0: the activation encoder the reference's CPU
 * set_rows uses), then expanded back */
static void roundtrip(slm_kv_type t, const float *x, float *y, int n)
{
    unsigned char buf[4096];
    if (t == SLM_KV_Q8_0) {
        slm_act_quant_generic(SLM_DTYPE_Q8_0)(x, buf, n);
        slm_dequantize_q8_0(buf, y, n);
    } else if (t == SLM_KV_Q4_0) {
        slm_quantize_q4_0(x, buf, n);
        slm_dequantize_q4_0(buf, y, n);
    } else {
        memcpy(y, x, (size_t)n * sizeof *y);
    }
}

/* x <- (H_n / sqrt(n)) x with the Sylvester matrix H_n[i][j] = (-1)^popcount(i & j), in double */
static void hadamard_ref(double *x, int n)
{
    double y[1024];
    for (int i = 0; i < n; i++) {
        double s = 0;
        for (int j = 0; j < n; j++) s += (__builtin_popcount((unsigned)(i & j)) & 1 ? -x[j] : x[j]);
        y[i] = s / sqrt((double)n);
    }
    memcpy(x, y, (size_t)n * sizeof *x);
}

static void check_fwht(void)
{
    for (int n = 64; n <= 1024; n *= 2) {
        float x[1024];
        double r[1024], maxd = 0;
        for (int i = 0; i < n; i++) r[i] = x[i] = frand();
        slm_kv_fwht(x, n);
        hadamard_ref(r, n);
        for (int i = 0; i < n; i++) maxd = fmax(maxd, fabs(x[i] - r[i]));
        CHECK(maxd < 1e-5, "fwht n=%d against the Sylvester matrix / sqrt(n): max diff %g", n, maxd);
    }
}

#if defined(__x86_64__)
/* generic and AVX2 value mixes, and the double sum over expanded rows */
static void check_mix(slm_kv_type t, int hd, int n_pos)
{
    const size_t rb = slm_kv_row_bytes(t, hd) + 6;   /* rows not packed */
    unsigned char *v = calloc((size_t)n_pos, rb);
    float *p = rvec((int64_t)n_pos, 1.0f), *x = rvec((int64_t)hd, 1.0f);
    float a1[256], a2[256], e[256];
    double ref[256] = {0};
    for (int tt = 0; tt < n_pos; tt++) {
        for (int j = 0; j < hd; j++) x[j] = frand() * 3;
        slm_kvq_store(t, v + (size_t)tt * rb, x, (size_t)hd, 0);
        roundtrip(t, x, e, hd);
        for (int j = 0; j < hd; j++) ref[j] += (double)p[tt] * e[j];
    }
    for (int j = 0; j < hd; j++) a1[j] = a2[j] = (float)j * 0.25f;   /* adds to what acc holds */
    slm_kvq_mix_generic(t)(a1, p, v, rb, n_pos, hd);
    slm_kvq_mix_avx2(t)(a2, p, v, rb, n_pos, hd);
    double d12 = 0, dr = 0;
    for (int j = 0; j < hd; j++) {
        d12 = fmax(d12, fabs((double)a1[j] - a2[j]));
        dr = fmax(dr, fabs(a2[j] - (ref[j] + j * 0.25)));
    }
    /* n_pos float roundings of sums of size ~ sqrt(n_pos) * 3 */
    const double tol = 4e-7 * 3 * n_pos;
    CHECK(d12 <= tol && dr <= tol, "mix %s hd=%d n_pos=%d: generic vs avx2 %g, avx2 vs double %g (tol %g)",
          tname(t), hd, n_pos, d12, dr, tol);
    free(v); free(p); free(x);
}

/* scores via the vec_dot kernels: generic and AVX2 against the double dot
 * of the expanded rows with the expanded encoded q */
static void check_scores(slm_kv_type t, int hd, int n_pos)
{
    const slm_dtype kd = t == SLM_KV_Q8_0 ? SLM_DTYPE_Q8_0 : t == SLM_KV_Q4_0 ? SLM_DTYPE_Q4_0 : SLM_DTYPE_F32;
    const slm_vecdot_traits *tr = slm_vecdot_traits_get(kd);
    const size_t rb = slm_kv_row_bytes(t, hd);
    unsigned char *k = malloc((size_t)n_pos * rb), qa[1024];
    float *q = rvec((int64_t)hd, 1.0f), qe[256], e[256], s1[300], s2[300], x[256];
    if (t == SLM_KV_F32) memcpy(qa, q, (size_t)hd * sizeof *q), memcpy(qe, q, (size_t)hd * sizeof *q);
    else {
        slm_act_quant_generic(SLM_DTYPE_Q8_0)(q, qa, hd);
        slm_dequantize_q8_0(qa, qe, hd);
    }
    double maxd = 0;
    for (int tt = 0; tt < n_pos; tt++) {
        for (int j = 0; j < hd; j++) x[j] = frand();
        slm_kvq_store(t, k + (size_t)tt * rb, x, (size_t)hd, 0);
    }
    slm_kvq_scores(tr->dot_generic, s1, qa, k, rb, n_pos, hd, 0.125f, 0);
    slm_kvq_scores(tr->dot_avx2, s2, qa, k, rb, n_pos, hd, 0.125f, 0);
    for (int tt = 0; tt < n_pos; tt++) {
        if (t == SLM_KV_Q8_0) slm_dequantize_q8_0(k + (size_t)tt * rb, e, hd);
        else if (t == SLM_KV_Q4_0) slm_dequantize_q4_0(k + (size_t)tt * rb, e, hd);
        else memcpy(e, k + (size_t)tt * rb, (size_t)hd * sizeof *e);
        double d = 0;
        for (int j = 0; j < hd; j++) d += (double)qe[j] * e[j];
        maxd = fmax(maxd, fabs(s1[tt] - d * 0.125) + fabs(s2[tt] - d * 0.125));
    }
    CHECK(maxd < 1e-5, "scores %s hd=%d: generic and avx2 vec_dot vs double: %g", tname(t), hd, maxd);
    /* the soft cap as the reference folds it: c tanh(dot * scale / c) */
    slm_kvq_scores(tr->dot_avx2, s1, qa, k, rb, n_pos, hd, 0.125f, 0.5f);
    double dc = 0;
    for (int tt = 0; tt < n_pos; tt++) dc = fmax(dc, fabs(s1[tt] - 0.5 * tanh(s2[tt] / 0.5)));
    CHECK(dc < 1e-6, "soft-capped scores %s: %g", tname(t), dc);
    free(k); free(q);
}
#endif

typedef struct qcase {
    slm_kv_type type;
    int threads, n_head, n_head_kv, hd, pos0, n, prescale, window;
    float cap;
    int ring;
} qcase;

/* the double reference of one output element row (hd values) of query
 * head h at position p: every stored row is what the cache holds (rotated,
 * encoded, expanded), q rotated and encoded as the cache does, the output
 * rotated back by the explicit matrix. The rotations before an encoding
 * use slm_kv_fwht (checked against the matrix in check_fwht): a double
 * rotation rounds to other floats, which can move a q8_0 code by one step
 * and a score by ~1e-3. */
static void ref_head(const qcase *t, const float *q, const float *ke, const float *ve, int p, int kvh,
                     float scale, double *out)
{
    const int kv_dim = t->n_head_kv * t->hd, hd = t->hd;
    const int rk = slm_kv_rot_k(t->type, hd), rv = slm_kv_rot_v(t->type, hd);
    double s[600], mx = -1e300, sum = 0;
    float qf[256], qe[256];
    for (int j = 0; j < hd; j++) qf[j] = t->prescale ? q[j] * scale : q[j];
    for (int j = 0; rk && j < hd; j += rk) slm_kv_fwht(qf + j, rk);
    if (t->type == SLM_KV_F32) memcpy(qe, qf, sizeof qe);
    else {
        unsigned char buf[1024];
        slm_act_quant_generic(SLM_DTYPE_Q8_0)(qf, buf, hd);
        slm_dequantize_q8_0(buf, qe, hd);
    }
    const int lo = t->window > 0 && p - t->window + 1 > 0 ? p - t->window + 1 : 0;
    for (int tt = lo; tt <= p; tt++) {
        double d = 0;
        for (int j = 0; j < hd; j++) d += (double)qe[j] * ke[(size_t)tt * kv_dim + kvh * hd + j];
        s[tt] = t->prescale ? d : d * scale;
        if (t->cap > 0) s[tt] = t->cap * tanh(s[tt] / t->cap);
        mx = fmax(mx, s[tt]);
    }
    for (int j = 0; j < hd; j++) out[j] = 0;
    for (int tt = lo; tt <= p; tt++) sum += s[tt] = exp(s[tt] - mx);
    for (int tt = lo; tt <= p; tt++)
        for (int j = 0; j < hd; j++) out[j] += s[tt] / sum * ve[(size_t)tt * kv_dim + kvh * hd + j];
    for (int j = 0; rv && j < hd; j += rv) hadamard_ref(out + j, rv);
}

/* what the cache holds of rows x (rotated in chunks of rot, encoded, expanded) */
static void held_rows(slm_kv_type t, const float *x, float *e, int rows, int kv_dim, int rot)
{
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < kv_dim; c += rot ? rot : kv_dim) {
            const int n = rot ? rot : kv_dim;
            float f[1024];
            memcpy(f, x + (size_t)r * kv_dim + c, (size_t)n * sizeof *f);
            if (rot) slm_kv_fwht(f, rot);
            roundtrip(t, f, e + (size_t)r * kv_dim + c, n);
        }
}

static void run_case(qcase t)
{
    slm_error err = {0};
    const int kv_dim = t.n_head_kv * t.hd, q_dim = t.n_head * t.hd, n_ctx = 200, layer = 1;
    const int dims[2] = {kv_dim + 32, kv_dim}, heads[2] = {32, t.hd}, windows[2] = {0, t.window};
    slm_pool *pool = slm_pool_new(t.threads, &err);
    slm_kvcache *c = slm_kvcache_new_typed(2, dims, heads, windows, n_ctx, t.n, t.ring, t.type, &err);
    CHECK(c != NULL, "cache %s: %s", tname(t.type), err.msg);
    if (!c) return;
    const int total = t.pos0 + t.n + 1;
    float *k = rvec((int64_t)(total * kv_dim), 1.0f), *v = rvec((int64_t)(total * kv_dim), 1.0f);
    float *q = rvec((int64_t)((t.n + 1) * q_dim), 1.0f), *out = calloc((size_t)t.n * q_dim, sizeof *out);
    float *ke = malloc((size_t)total * kv_dim * sizeof *ke), *ve = malloc((size_t)total * kv_dim * sizeof *ve);
    held_rows(t.type, k, ke, total, kv_dim, slm_kv_rot_k(t.type, t.hd));
    held_rows(t.type, v, ve, total, kv_dim, slm_kv_rot_v(t.type, t.hd));
    for (int p = 0; p < t.pos0; p += t.n) {
        int m = t.pos0 - p < t.n ? t.pos0 - p : t.n;
        slm_kvcache_store(c, layer, p, m, k + (size_t)p * kv_dim, v + (size_t)p * kv_dim);
    }
    slm_kvcache_store(c, layer, t.pos0, t.n, k + (size_t)t.pos0 * kv_dim, v + (size_t)t.pos0 * kv_dim);
    slm_attn_shape sh = {t.n_head, t.n_head_kv, t.hd, 1.0f / sqrtf((float)t.hd), t.prescale, t.cap, t.window, 0};
    slm_status st = slm_attn_sdpa(pool, c, layer, &sh, t.pos0, t.n, q, out, &err);
    double maxd = 0;
    for (int i = 0; i < t.n; i++)
        for (int h = 0; h < t.n_head; h++) {
            double r[256];
            ref_head(&t, q + (size_t)i * q_dim + h * t.hd, ke, ve, t.pos0 + i, h / (t.n_head / t.n_head_kv),
                     sh.scale, r);
            for (int j = 0; j < t.hd; j++) maxd = fmax(maxd, fabs(r[j] - out[(size_t)i * q_dim + h * t.hd + j]));
        }
    /* float sums of up to ~200 terms; a wrong row, head, block or rotation
     * moves outputs by ~0.1 */
    CHECK(st == SLM_OK && maxd < 1e-5,
          "sdpa %s threads=%d heads=%d/%d hd=%d pos0=%d n=%d prescale=%d window=%d cap=%g ring=%d: max diff %g (%s)",
          tname(t.type), t.threads, t.n_head, t.n_head_kv, t.hd, t.pos0, t.n, t.prescale, t.window, (double)t.cap,
          t.ring, maxd, err.msg);

    /* snapshot -> a cache for batch 1 (another ring length) -> one more step, bit for bit */
    const int np = t.pos0 + t.n;
    size_t sz = slm_kvcache_snapshot_size(c, np);
    unsigned char *snap = malloc(sz);
    slm_kvcache_snapshot(c, np, snap);
    slm_kvcache *d = slm_kvcache_new_typed(2, dims, heads, windows, n_ctx, 1, 1, t.type, &err);
    int got = -1;
    st = slm_kvcache_restore(d, snap, sz, &got, &err);
    CHECK(st == SLM_OK && got == np, "restore %s %d positions: %s", tname(t.type), np, err.msg);
    float *o1 = calloc((size_t)q_dim, sizeof *o1), *o2 = calloc((size_t)q_dim, sizeof *o2);
    const float *qn = q + (size_t)t.n * q_dim;
    slm_kvcache_store(c, layer, np, 1, k + (size_t)np * kv_dim, v + (size_t)np * kv_dim);
    slm_kvcache_store(d, layer, np, 1, k + (size_t)np * kv_dim, v + (size_t)np * kv_dim);
    st = slm_attn_sdpa(pool, c, layer, &sh, np, 1, qn, o1, &err);
    st |= slm_attn_sdpa(pool, d, layer, &sh, np, 1, qn, o2, &err);
    CHECK(st == SLM_OK && memcmp(o1, o2, (size_t)q_dim * sizeof *o1) == 0,
          "%s: decode after a restored snapshot equals decode without (window %d, ring %d)", tname(t.type), t.window,
          t.ring);
    /* a snapshot of another type is refused by name, the cache untouched */
    const slm_kv_type other = t.type == SLM_KV_Q8_0 ? SLM_KV_Q4_0 : SLM_KV_Q8_0;
    slm_kvcache *e = slm_kvcache_new_typed(2, dims, heads, windows, n_ctx, 1, 1, other, &err);
    char want[160];
    snprintf(want, sizeof want, "restore: snapshot of a KV cache of kv_type %s, this one is %s", tname(t.type),
             tname(other));
    CHECK(e && slm_kvcache_restore(e, snap, sz, &got, &err) == SLM_EINVAL && strcmp(err.msg, want) == 0,
          "snapshot of another type: '%s'", err.msg);
    slm_kvcache_free(e);
    free(snap); free(o1); free(o2);
    slm_kvcache_free(d);
    free(k); free(v); free(q); free(out); free(ke); free(ve);
    slm_kvcache_free(c);
    slm_pool_free(pool);
}

/* F16 snapshots: the version-3 header (one dim) still restores into an F16
 * cache; a corrupt type id and an F16 snapshot into a q8_0 cache are refused */
static void check_snapshot_versions(void)
{
    slm_error err = {0};
    const int dims[1] = {64}, heads[1] = {32};
    slm_kvcache *c = slm_kvcache_new_typed(1, dims, heads, NULL, 16, 4, 1, SLM_KV_F16, &err);
    float *k = rvec((int64_t)(4 * 64), 1.0f), *v = rvec((int64_t)(4 * 64), 1.0f);
    slm_kvcache_store(c, 0, 0, 4, k, v);
    size_t sz = slm_kvcache_snapshot_size(c, 4);
    unsigned char *snap = malloc(sz), *v3 = malloc(sz);
    slm_kvcache_snapshot(c, 4, snap);
    /* version 3: 24 + 8 bytes of header with dims {n_layer} */
    const int64_t d1[1] = {1};
    unsigned char *body = slm_snap_put_header(v3, (const char[4]){'K', 'V', 0, 0}, 3, 4, 1, d1);
    memcpy(body, snap + slm_snap_header_size(2), sz - slm_snap_header_size(2));
    slm_kvcache *d = slm_kvcache_new_typed(1, dims, heads, NULL, 16, 4, 1, SLM_KV_F16, &err);
    int got = -1;
    CHECK(slm_kvcache_restore(d, v3, sz - 8, &got, &err) == SLM_OK && got == 4 &&
          memcmp(d->layer[0].k, c->layer[0].k, 4 * 64 * 2) == 0 && memcmp(d->layer[0].v, c->layer[0].v, 4 * 64 * 2) == 0,
          "version 3 snapshot restores into an f16 cache: %s", err.msg);
    slm_kvcache *q = slm_kvcache_new_typed(1, dims, heads, NULL, 16, 4, 1, SLM_KV_Q8_0, &err);
    CHECK(slm_kvcache_restore(q, v3, sz - 8, &got, &err) == SLM_EINVAL &&
          strcmp(err.msg, "restore: snapshot of a KV cache of kv_type f16, this one is q8_0") == 0,
          "version 3 into q8_0: %s", err.msg);
    int64_t bad = 5;   /* q5_1: not a cache type */
    memcpy(snap + 32, &bad, 8);
    CHECK(slm_kvcache_restore(d, snap, sz, &got, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: corrupt snapshot of a KV cache (kv_type 5)") == 0, "bad type id: %s", err.msg);
    slm_kvcache_free(q); slm_kvcache_free(d); slm_kvcache_free(c);
    free(snap); free(v3); free(k); free(v);
}

static void check_shapes(void)
{
    slm_error err = {0};
    const int d48[1] = {96}, h48[1] = {48}, d64[1] = {128}, h64[1] = {64}, h0[1] = {0}, h3[1] = {3};
    CHECK(!slm_kvcache_new_typed(1, d48, h48, NULL, 8, 1, 1, SLM_KV_Q4_0, &err) &&
          strcmp(err.msg, "kv cache: kv_type q4_0 needs a head size that is a multiple of 32, layer 0 has 48") == 0,
          "head 48 in q4_0: %s", err.msg);
    CHECK(!slm_kvcache_new_typed(1, d64, h0, NULL, 8, 1, 1, SLM_KV_Q8_0, &err) && strstr(err.msg, "multiple of 32"),
          "q8_0 without a head size: %s", err.msg);
    CHECK(!slm_kvcache_new_typed(1, d64, h3, NULL, 8, 1, 1, SLM_KV_F32, &err) && strstr(err.msg, "does not divide"),
          "head size not dividing kv_dim: %s", err.msg);
    CHECK(!slm_kvcache_new_typed(1, d64, h64, NULL, 8, 1, 1, (slm_kv_type)9, &err) && strstr(err.msg, "unknown kv_type"),
          "unknown type: %s", err.msg);
    /* F32 takes any head size; q8_0 rows of 128: 4 blocks of 34 bytes, K and V */
    slm_kvcache *c = slm_kvcache_new_typed(1, d48, h48, NULL, 8, 1, 1, SLM_KV_F32, &err);
    CHECK(c && slm_kvcache_bytes_per_token(c) == 2 * 96 * 4, "f32 bytes per token");
    slm_kvcache_free(c);
    const int two[2] = {128, 64}, hh[2] = {64, 64};
    c = slm_kvcache_new_typed(2, two, hh, NULL, 8, 1, 1, SLM_KV_Q8_0, &err);
    CHECK(c && slm_kvcache_bytes_per_token(c) == 2 * (4 + 2) * 34 && slm_kvcache_bytes(c) == 8 * 2 * 6 * 34,
          "q8_0 bytes per token %zu", c ? slm_kvcache_bytes_per_token(c) : 0);
    /* an attention of another head size over it */
    slm_attn_shape sh = {4, 4, 32, 0.1f, 0, 0, 0, 0};
    CHECK(slm_kvcache_check_layer(c, 0, &sh, 1, &err) == SLM_EINVAL &&
          strcmp(err.msg, "kv cache: layer 0 holds heads of 64, the block needs 32") == 0, "head mismatch: %s", err.msg);
    slm_kvcache_free(c);
    c = slm_kvcache_new_typed(1, d64, h64, NULL, 8, 1, 1, SLM_KV_Q4_0, &err);
    CHECK(c && slm_kvcache_bytes_per_token(c) == 2 * 4 * 18, "q4_0 bytes per token");
    slm_kvcache_free(c);
    CHECK(slm_kv_rot_k(SLM_KV_Q8_0, 64) == 64 && slm_kv_rot_k(SLM_KV_Q8_0, 128) == 128 &&
          slm_kv_rot_k(SLM_KV_Q4_0, 192) == 64 && slm_kv_rot_k(SLM_KV_Q8_0, 32) == 0 &&
          slm_kv_rot_k(SLM_KV_F32, 128) == 0 && slm_kv_rot_v(SLM_KV_Q8_0, 256) == 64 &&
          slm_kv_rot_v(SLM_KV_Q4_0, 96) == 0, "rotation sizes as the reference picks them");
}

int main(void)
{
    check_fwht();
#if defined(__x86_64__)
    if (slm_cpu_has_avx2()) {
        for (int t = SLM_KV_F32; t <= SLM_KV_Q4_0; t++) {
            check_mix((slm_kv_type)t, 32, 1);
            check_mix((slm_kv_type)t, 64, 33);
            check_mix((slm_kv_type)t, 128, 257);
            check_scores((slm_kv_type)t, 64, 40);
            check_scores((slm_kv_type)t, 256, 3);
        }
        check_mix(SLM_KV_F32, 20, 5);    /* f32 heads of any size: the 8- and 1-column tails */
        check_mix(SLM_KV_F32, 200, 9);
    }
#endif
    check_shapes();
    check_snapshot_versions();
    for (int generic = 0; generic <= 1; generic++) {
        slm_kernels_force_generic(generic);
        for (int t = SLM_KV_F32; t <= SLM_KV_Q4_0; t++) {
            const slm_kv_type ty = (slm_kv_type)t;
            run_case((qcase){ty, 1, 1, 1, 32, 0, 1, 0, 0, 0, 1});
            run_case((qcase){ty, 2, 8, 2, 32, 7, 5, 0, 0, 0, 1});
            run_case((qcase){ty, 2, 4, 2, 64, 30, 17, 0, 0, 0, 1});    /* rotated, 64 */
            run_case((qcase){ty, 2, 2, 1, 128, 20, 3, 1, 0, 0, 1});    /* rotated, 128 / 64, prescaled q */
            run_case((qcase){ty, 1, 4, 4, 96, 9, 2, 0, 0, 0, 1});      /* 96: not rotated */
            for (int ring = 0; ring <= 1; ring++) {
                run_case((qcase){ty, 2, 8, 2, 32, 37, 5, 0, 4, 0, ring});
                run_case((qcase){ty, 2, 8, 4, 64, 61, 8, 1, 6, 5.0f, ring});   /* gemma2: cap + window */
            }
        }
    }
    slm_kernels_force_generic(0);
    return check_summary();
}
