/* LFM2's gated short convolution. The conv (slm_ops_causal_conv, shared
 * with Mamba's conv1d) against a plain double-precision reference written
 * here from the definition (full history of v instead of a rolling state),
 * in calls of every length and channel ranges; the whole block against a
 * double reference of in_proj, B*X, conv, C*, out_proj (f32 weights; q8_0
 * and f16 weights against their dequantized values); a prompt in one call,
 * in uneven chunks and token by token giving the same floats bit for bit
 * (q8_0/f16 weights, whose matmul rows do not depend on the batch), on 1
 * and 3 threads; snapshots continuing exactly; the checks and errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks/shortconv.h"
#include "core/pool.h"
#include "core/tensor.h"
#include "core/work.h"
#include "kernels/ops.h"

static int passed, failed;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

static uint64_t xs = 0x2545f4914f6cdd1du;
static float frand(float scale)
{
    xs ^= xs << 13;
    xs ^= xs >> 7;
    xs ^= xs << 17;
    return (float)(((double)(xs >> 11) * 0x1.0p-53 * 2.0 - 1.0) * scale);
}

static float *rvec(size_t n, float scale)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = frand(scale);
    return v;
}

static double rel_err(const float *a, const double *b, size_t n)
{
    double m = 0, s = 1e-30;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return m / s;
}

/* ---- the conv ------------------------------------------------------------------- */

/* out[t][c] = sum_k w[c][k] v[t - (K-1) + k][c], v = 0 before token 0 */
static void ref_conv(double *out, const float *v, int T, int D, const float *w, int K)
{
    for (int t = 0; t < T; t++)
        for (int c = 0; c < D; c++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                int tt = t - (K - 1) + k;
                if (tt >= 0) s += (double)w[c * K + k] * v[tt * D + c];
            }
            out[t * D + c] = s;
        }
}

static void test_conv(int K)
{
    enum { T = 13, D = 37 };
    float *v = rvec(T * D, 2), *w = rvec(D * K, 1);
    double ref[T * D];
    ref_conv(ref, v, T, D, w, K);
    float first[T * D];
    /* the sequence cut into calls of every length 1..T, channels in 3 ranges */
    for (int step = T; step >= 1; step--) {
        float state[D * SLM_SHORTCONV_MAX_CACHE], out[T * D];
        memset(state, 0, sizeof state);
        for (int t0 = 0; t0 < T; t0 += step) {
            int n = t0 + step <= T ? step : T - t0;
            const int64_t cuts[4] = {0, 5, 24, D};
            for (int c = 0; c < 3; c++)
                slm_ops_causal_conv(out + t0 * D, D, v + t0 * D, D, n, state, w, K, cuts[c], cuts[c + 1]);
        }
        if (step == T) memcpy(first, out, sizeof out);
        CHECK(rel_err(out, ref, T * D) < 1e-6, "conv (%d taps) in calls of %d: rel err %g", K, step,
              rel_err(out, ref, T * D));
        CHECK(memcmp(out, first, sizeof out) == 0, "conv (%d taps): calls of %d differ from one call", K, step);
        /* the state holds the last K-1 values of v, oldest first */
        int ok = 1;
        for (int c = 0; c < D; c++)
            for (int k = 0; k < K - 1; k++) ok &= state[c * (K - 1) + k] == v[(T - (K - 1) + k) * D + c];
        CHECK(ok, "conv (%d taps) state after calls of %d", K, step);
    }
    /* the last tap weighs the current token: a one-hot kernel on tap K-1
     * copies v, on tap 0 delays it by K-1 tokens */
    float *onehot = calloc((size_t)D * K, sizeof *onehot), state[D * SLM_SHORTCONV_MAX_CACHE], out[T * D];
    for (int c = 0; c < D; c++) onehot[c * K + K - 1] = 1.0f;
    memset(state, 0, sizeof state);
    slm_ops_causal_conv(out, D, v, D, T, state, onehot, K, 0, D);
    CHECK(memcmp(out, v, sizeof out) == 0, "conv (%d taps): the last tap is the current token", K);
    memset(onehot, 0, (size_t)D * K * sizeof *onehot);
    for (int c = 0; c < D; c++) onehot[c * K] = 1.0f;
    memset(state, 0, sizeof state);
    slm_ops_causal_conv(out, D, v, D, T, state, onehot, K, 0, D);
    int delayed = 1;
    for (int t = 0; t < T; t++)
        for (int c = 0; c < D; c++) delayed &= out[t * D + c] == (t >= K - 1 ? v[(t - K + 1) * D + c] : 0.0f);
    CHECK(delayed, "conv (%d taps): the first tap is K-1 tokens back", K);
    free(onehot); free(v); free(w);
}

/* ---- the block ------------------------------------------------------------------------ */

enum { D = 64, K = 3, T = 11 };

typedef struct model {
    slm_tensor *in_proj, *out_proj;
    float *conv;
    slm_shortconv_block b;
    float win[3 * D * D], wout[D * D];    /* the weights as the reference sees them */
} model;

static slm_tensor *rmat(int64_t rows, int64_t cols, float scale, slm_dtype dtype, float *deq)
{
    int64_t shape[2] = {rows, cols};
    slm_error err = {0};
    slm_tensor *t = slm_tensor_new(SLM_DTYPE_F32, 2, shape, &err);
    float *d = slm_tensor_data(t);
    for (int64_t i = 0; i < rows * cols; i++) d[i] = frand(scale);
    if (dtype != SLM_DTYPE_F32) {
        slm_tensor *q = slm_tensor_convert(t, dtype, &err);
        slm_tensor_free(t);
        t = q;
        slm_tensor *back = slm_tensor_convert(q, SLM_DTYPE_F32, &err);
        memcpy(deq, slm_tensor_data(back), (size_t)(rows * cols) * sizeof(float));
        slm_tensor_free(back);
    } else {
        memcpy(deq, d, (size_t)(rows * cols) * sizeof(float));
    }
    return t;
}

static void model_init(model *m, slm_dtype dtype)
{
    xs = 0x5eed;     /* the same weights for every dtype */
    m->in_proj = rmat(3 * D, D, 0.3f, dtype, m->win);
    m->out_proj = rmat(D, D, 0.3f, dtype, m->wout);
    m->conv = rvec(D * K, 0.8f);
    m->b = (slm_shortconv_block){m->in_proj, m->out_proj, m->conv, D, K};
}

static void model_free(model *m)
{
    slm_tensor_free(m->in_proj);
    slm_tensor_free(m->out_proj);
    free(m->conv);
}

/* the block over T tokens from a zero state, in double, from the definition
 * in shortconv.h (history of v kept whole) */
static void ref_block(double *out, const model *m, const float *x, int n)
{
    double *hist = calloc((size_t)n * D, sizeof *hist), bcx[3 * D], y[D];
    for (int t = 0; t < n; t++) {
        for (int r = 0; r < 3 * D; r++) {
            double s = 0;
            for (int k = 0; k < D; k++) s += (double)m->win[r * D + k] * x[t * D + k];
            bcx[r] = s;
        }
        for (int c = 0; c < D; c++) hist[t * D + c] = bcx[c] * bcx[2 * D + c];   /* v = B X */
        for (int c = 0; c < D; c++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                int tt = t - (K - 1) + k;
                if (tt >= 0) s += (double)m->conv[c * K + k] * hist[tt * D + c];
            }
            y[c] = bcx[D + c] * s;                                                /* C conv */
        }
        for (int r = 0; r < D; r++) {
            double s = 0;
            for (int k = 0; k < D; k++) s += (double)m->wout[r * D + k] * y[k];
            out[t * D + r] = s;
        }
    }
    free(hist);
}

/* the T tokens in calls of the given lengths (cycled), from a zero slot 1
 * of a 2-slot state */
static slm_status run(slm_pool *pool, const model *m, slm_shortconv_state *st, const slm_work *w,
                      const float *x, float *out, const int *lens, int nlens, slm_error *err)
{
    slm_shortconv_state_clear(st);
    slm_status s = SLM_OK;
    for (int t0 = 0, i = 0; t0 < T && !s; i++) {
        int n = lens[i % nlens] < T - t0 ? lens[i % nlens] : T - t0;
        s = slm_shortconv_forward(pool, &m->b, st, 1, n, x + t0 * D, out + t0 * D, w, err);
        t0 += n;
    }
    return s;
}

static void test_block(slm_dtype dtype, double tol)
{
    model m;
    model_init(&m, dtype);
    slm_error err = {0};
    CHECK(slm_shortconv_check(&m.b, &err) == SLM_OK, "block check: %s", err.msg);
    float *x = rvec(T * D, 1);
    double ref[T * D];
    ref_block(ref, &m, x, T);
    slm_shortconv_state *st = slm_shortconv_state_new(2, D, K, &err);
    slm_work *w = slm_work_new(slm_shortconv_work_size(&m.b, T), &err);
    slm_pool *pool3 = slm_pool_new(3, &err);
    const int all[1] = {T}, one[1] = {1}, uneven[3] = {3, 1, 4};
    float seq[T * D], got[T * D];
    CHECK(run(NULL, &m, st, w, x, seq, all, 1, &err) == SLM_OK, "forward: %s", err.msg);
    CHECK(rel_err(seq, ref, T * D) < tol, "block (%s) vs reference: rel err %g", slm_dtype_name(dtype),
          rel_err(seq, ref, T * D));
    /* slot 0 is untouched by slot 1 */
    int untouched = 1;
    for (int i = 0; i < D * (K - 1); i++) untouched &= st->v[i] == 0.0f;
    CHECK(untouched, "slot 0 untouched by slot 1");
    if (dtype != SLM_DTYPE_F32) {
        /* f32 weights take OpenBLAS from 4 rows on, so only the quantized
         * and f16 rows are the same floats in any batch */
        const int *plans[3] = {all, one, uneven};
        const int nplan[3] = {1, 1, 3};
        slm_pool *pools[2] = {NULL, pool3};
        for (int p = 0; p < 2; p++)
            for (int i = 0; i < 3; i++) {
                run(pools[p], &m, st, w, x, got, plans[i], nplan[i], &err);
                CHECK(memcmp(got, seq, sizeof seq) == 0, "block (%s): calls of %d%s on %d threads differ "
                      "from one call", slm_dtype_name(dtype), plans[i][0], nplan[i] > 1 ? ",..." : "",
                      p ? 3 : 1);
            }
    } else {
        run(pool3, &m, st, w, x, got, uneven, 3, &err);
        CHECK(rel_err(got, ref, T * D) < tol, "block (f32) in uneven calls: rel err %g", rel_err(got, ref, T * D));
    }

    /* snapshot after 6 tokens, restored into a fresh state, continues exactly */
    slm_shortconv_state_clear(st);
    slm_shortconv_forward(NULL, &m.b, st, 1, 6, x, got, w, &err);
    size_t sz = slm_shortconv_snapshot_size(st);
    unsigned char *snap = malloc(sz);
    slm_shortconv_snapshot(st, 6, snap);
    float a[T * D], b[T * D];
    slm_shortconv_forward(NULL, &m.b, st, 1, T - 6, x + 6 * D, a, w, &err);
    slm_shortconv_state *fresh = slm_shortconv_state_new(2, D, K, &err);
    int np = -1;
    CHECK(slm_shortconv_restore(fresh, snap, sz, &np, &err) == SLM_OK && np == 6, "restore: %s", err.msg);
    slm_shortconv_forward(NULL, &m.b, fresh, 1, T - 6, x + 6 * D, b, w, &err);
    CHECK(memcmp(a, b, (size_t)(T - 6) * D * sizeof(float)) == 0, "restored state continues exactly");
    CHECK(rel_err(a, ref + 6 * D, (T - 6) * D) < tol, "continuation vs reference");
    /* a state that forgot (cleared) does not: the test can fail */
    slm_shortconv_state_clear(fresh);
    slm_shortconv_forward(NULL, &m.b, fresh, 1, T - 6, x + 6 * D, b, w, &err);
    CHECK(memcmp(a, b, (size_t)(T - 6) * D * sizeof(float)) != 0, "a cleared state gives other rows");

    free(snap);
    slm_shortconv_state_free(fresh);
    slm_shortconv_state_free(st);
    slm_work_free(w);
    slm_pool_free(pool3);
    free(x);
    model_free(&m);
}

/* ---- snapshots, checks and errors -------------------------------------------------- */

static void test_errors(void)
{
    model m;
    model_init(&m, SLM_DTYPE_F32);
    slm_error err = {0};
    slm_shortconv_block b = m.b;
    b.in_proj = m.out_proj;
    CHECK(slm_shortconv_check(&b, &err) == SLM_EINVAL &&
          strcmp(err.msg, "shortconv.in_proj: expected shape 192x64, got 64x64") == 0, "wrong in_proj: %s", err.msg);
    b = m.b;
    b.out_proj = NULL;
    CHECK(slm_shortconv_check(&b, &err) == SLM_EINVAL && strcmp(err.msg, "shortconv.out_proj: missing weight") == 0,
          "missing out_proj: %s", err.msg);
    b = m.b;
    b.conv = NULL;
    CHECK(slm_shortconv_check(&b, &err) == SLM_EINVAL, "missing taps");
    b = m.b;
    b.l_cache = 65;
    CHECK(slm_shortconv_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "l_cache 65"), "l_cache 65: %s", err.msg);
    CHECK(slm_shortconv_state_new(0, D, K, &err) == NULL && err.code == SLM_EINVAL, "state of 0 layers");
    CHECK(slm_shortconv_state_new(1, D, 0, &err) == NULL && err.code == SLM_EINVAL, "state with l_cache 0");

    slm_shortconv_state *st = slm_shortconv_state_new(2, D, K, &err);
    slm_work *small = slm_work_new(slm_shortconv_work_size(&m.b, 2), &err);
    float x[4 * D], out[4 * D];
    memset(x, 0, sizeof x);
    CHECK(slm_shortconv_forward(NULL, &m.b, st, 0, 4, x, out, small, &err) == SLM_EINVAL &&
          strstr(err.msg, "workspace"), "4 rows in a workspace for 2: %s", err.msg);
    CHECK(slm_shortconv_forward(NULL, &m.b, st, 2, 1, x, out, small, &err) == SLM_EINVAL, "slot out of range");
    slm_shortconv_state *other = slm_shortconv_state_new(2, D, 4, &err);
    CHECK(slm_shortconv_forward(NULL, &m.b, other, 0, 1, x, out, small, &err) == SLM_EINVAL &&
          strstr(err.msg, "l_cache 4"), "state of another shape: %s", err.msg);

    /* snapshots: another shape, a truncated or foreign one leave the state as it was */
    for (size_t i = 0; i < slm_shortconv_state_len(st); i++) st->v[i] = (float)i;
    size_t sz = slm_shortconv_snapshot_size(other);
    unsigned char *snap = malloc(sz + 1);
    slm_shortconv_snapshot(other, 3, snap);
    int np = -1;
    CHECK(slm_shortconv_restore(st, snap, sz, &np, &err) == SLM_EINVAL &&
          strcmp(err.msg, "restore: snapshot of a conv state with conv layers 2, channels 64, l_cache 4; this "
                          "one has conv layers 2, channels 64, l_cache 3") == 0, "foreign shape: %s", err.msg);
    free(snap);
    sz = slm_shortconv_snapshot_size(st);
    snap = malloc(sz + 1);
    slm_shortconv_snapshot(st, 3, snap);
    CHECK(slm_shortconv_restore(st, snap, sz - 1, &np, &err) == SLM_EFORMAT && strstr(err.msg, "truncated"),
          "truncated: %s", err.msg);
    CHECK(slm_shortconv_restore(st, snap, sz + 1, &np, &err) == SLM_EFORMAT, "trailing byte");
    CHECK(slm_shortconv_restore(st, "SLMKV2\0\0xxxxxxxxxxxxxxxxxxxx", 28, &np, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: not an slm state snapshot") == 0, "foreign magic: %s", err.msg);
    const unsigned char kv[32] = {'S', 'L', 'M', 'S', 'K', 'V', 0, 0, 3, 0, 0, 0, 1};
    CHECK(slm_shortconv_restore(st, kv, sizeof kv, &np, &err) == SLM_EINVAL &&
          strcmp(err.msg, "restore: snapshot of a KV cache, not of a conv state") == 0, "KV snapshot: %s", err.msg);
    int64_t neg = -1;
    memcpy(snap + 16, &neg, 8);
    CHECK(slm_shortconv_restore(st, snap, sz, &np, &err) == SLM_EFORMAT, "negative n_past");
    int same = 1;
    for (size_t i = 0; i < slm_shortconv_state_len(st); i++) same &= st->v[i] == (float)i;
    CHECK(same && np == -1, "failed restores wrote nothing");
    /* the layout of earlier versions, "SLMSC1" | int32 n_slot, dim, l_cache,
     * n_past | floats, still restores */
    const size_t body = slm_shortconv_state_len(st) * sizeof(float);
    unsigned char *old = malloc(24 + body);
    const int32_t oh[4] = {2, (int32_t)D, 3, 7};
    memcpy(old, "SLMSC1\0\0", 8);
    memcpy(old + 8, oh, sizeof oh);
    memcpy(old + 24, st->v, body);
    slm_shortconv_state *fresh = slm_shortconv_state_new(2, D, 3, &err);
    CHECK(slm_shortconv_restore(fresh, old, 24 + body, &np, &err) == SLM_OK && np == 7 &&
          memcmp(fresh->v, st->v, body) == 0, "SLMSC1 snapshot restored: %s", err.msg);
    CHECK(slm_shortconv_restore(fresh, old, 24 + body - 4, &np, &err) == SLM_EFORMAT &&
          strstr(err.msg, "truncated snapshot of a conv state"), "truncated SLMSC1: %s", err.msg);
    slm_shortconv_state_free(fresh);
    free(old);
    free(snap);
    slm_shortconv_state_free(other);
    slm_shortconv_state_free(st);
    slm_work_free(small);
    model_free(&m);
}

int main(void)
{
    for (int k = 1; k <= 5; k++) test_conv(k);
    test_block(SLM_DTYPE_F32, 2e-6);
    test_block(SLM_DTYPE_F16, 2e-3);
    test_block(SLM_DTYPE_Q8_0, 2e-2);
    test_errors();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
