/* Mamba-1 mixer: the conv and the scan against plain double-precision
 * references written here from the definitions (full input history instead
 * of a rolling state, time-outer loops), split into calls of every size and
 * channel ranges; the whole block (f32 weights) against a scalar reference
 * of the mixer; sequence mode (n tokens in one call) against steps;
 * threaded against serial; state and shape errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks/mamba.h"
#include "core/pool.h"
#include "core/tensor.h"
#include "kernels/vecdot.h"

static int passed, failed;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

static uint64_t xs = 0x9e3779b97f4a7c15u;
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

static double silu_d(double v) { return v / (1.0 + exp(-v)); }
static double softplus_d(double v) { return v <= 20.0 ? log1p(exp(v)) : v; }

static double rel_err(const float *a, const double *b, size_t n)
{
    double m = 0, s = 1e-30;
    for (size_t i = 0; i < n; i++) {
        m = fmax(m, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return m / s;
}

/* ---- references: T tokens, DI channels -------------------------------------- */

/* out[t][i] = silu(b[i] + sum_k w[i][k] x[t - (K-1) + k][i]); inputs before
 * token 0 are zero (a fresh state) */
static void ref_conv(double *out, const float *x, int T, int DI, const float *w, const float *b, int K)
{
    for (int t = 0; t < T; t++)
        for (int i = 0; i < DI; i++) {
            double s = 0;
            for (int k = 0; k < K; k++) {
                int tt = t - (K - 1) + k;
                if (tt >= 0) s += (double)w[i * K + k] * x[tt * DI + i];
            }
            out[t * DI + i] = silu_d(s + b[i]);
        }
}

/* time outer, as the recurrence is written; bc rows: B (NS) then C (NS) */
static void ref_scan(double *y, const float *x, const float *dt, const float *A, const float *bc,
                     const float *D, int T, int DI, int NS)
{
    double *s = calloc((size_t)DI * NS, sizeof *s);
    for (int t = 0; t < T; t++)
        for (int i = 0; i < DI; i++) {
            double d = softplus_d(dt[t * DI + i]), acc = 0;
            for (int j = 0; j < NS; j++) {
                double *sj = &s[i * NS + j];
                *sj = *sj * exp(d * A[i * NS + j]) + bc[t * 2 * NS + j] * x[t * DI + i] * d;
                acc += *sj * bc[t * 2 * NS + NS + j];
            }
            y[t * DI + i] = acc + (double)x[t * DI + i] * D[i];
        }
    free(s);
}

static void test_conv(void)
{
    enum { T = 13, DI = 37, K = 4 };
    float *x = rvec(T * DI, 2), *w = rvec(DI * K, 1), *b = rvec(DI, 0.5f);
    double ref[T * DI];
    ref_conv(ref, x, T, DI, w, b, K);
    /* the sequence cut into calls of every length 1..T, channels in 3 ranges */
    for (int step = 1; step <= T; step++) {
        float state[DI * (K - 1)], out[T * DI];
        memset(state, 0, sizeof state);
        for (int t0 = 0; t0 < T; t0 += step) {
            int n = t0 + step <= T ? step : T - t0;
            const int64_t cuts[4] = {0, 5, 24, DI};
            for (int c = 0; c < 3; c++)
                slm_mamba_conv(out + t0 * DI, DI, x + t0 * DI, DI, n, state, w, b, K, cuts[c], cuts[c + 1]);
        }
        CHECK(rel_err(out, ref, T * DI) < 1e-6, "conv in calls of %d: rel err %g", step,
              rel_err(out, ref, T * DI));
        /* the state holds the last K-1 inputs, oldest first */
        int ok = 1;
        for (int i = 0; i < DI; i++)
            for (int k = 0; k < K - 1; k++) ok &= state[i * (K - 1) + k] == x[(T - (K - 1) + k) * DI + i];
        CHECK(ok, "conv state after calls of %d", step);
    }
    /* strided rows (the x half of in_proj's output) */
    float *xz = calloc(T * 2 * DI, sizeof *xz), out[T * DI], state[DI * (K - 1)];
    for (int t = 0; t < T; t++) memcpy(xz + t * 2 * DI, x + t * DI, DI * sizeof *x);
    memset(state, 0, sizeof state);
    slm_mamba_conv(out, DI, xz, 2 * DI, T, state, w, b, K, 0, DI);
    CHECK(rel_err(out, ref, T * DI) < 1e-6, "conv over strided rows");
    free(xz); free(x); free(w); free(b);
}

typedef void (*scan_fn)(float *, int64_t, float *, const float *, int64_t, const float *, int64_t,
                        const float *, const float *, int64_t, const float *, int, int64_t,
                        int64_t, int64_t);

/* fn against the double reference, in calls of every length and two
 * channel ranges; returns the outputs of the one-call run (T * DI) */
static float *check_scan(scan_fn fn, const char *name, int NS)
{
    enum { T = 11, DI = 21 };
    xs = 0x1234567u;      /* the same data for every fn */
    float *x = rvec(T * DI, 1.5f), *dt = rvec(T * DI, 3), *bc = rvec(T * 2 * NS, 1), *D = rvec(DI, 1);
    float *A = malloc(DI * NS * sizeof *A);
    for (int i = 0; i < DI * NS; i++) A[i] = -(float)exp(frand(2));   /* -exp(A_log) */
    dt[3] = 25.0f;          /* above the softplus threshold; d A far below -87 */
    dt[4] = -30.0f;         /* softplus underflows to ~0 */
    double ref[T * DI];
    ref_scan(ref, x, dt, A, bc, D, T, DI, NS);
    float *state = malloc(DI * NS * sizeof *state), *y = malloc(T * DI * sizeof *y);
    float *first = malloc(T * DI * sizeof *first);
    for (int step = T; step >= 1; step--) {
        memset(state, 0, DI * NS * sizeof *state);
        for (int t0 = 0; t0 < T; t0 += step) {
            int n = t0 + step <= T ? step : T - t0;
            fn(y + t0 * DI, DI, state, x + t0 * DI, DI, dt + t0 * DI, DI, A, bc + t0 * 2 * NS, 2 * NS,
               D, n, NS, 0, 8);
            fn(y + t0 * DI, DI, state, x + t0 * DI, DI, dt + t0 * DI, DI, A, bc + t0 * 2 * NS, 2 * NS,
               D, n, NS, 8, DI);
        }
        if (step == T) memcpy(first, y, T * DI * sizeof *y);
        CHECK(rel_err(y, ref, T * DI) < 1e-5, "%s scan (d_state %d) in calls of %d: rel err %g", name,
              NS, step, rel_err(y, ref, T * DI));
        CHECK(memcmp(y, first, T * DI * sizeof *y) == 0, "%s scan (d_state %d): calls of %d differ "
              "from one call", name, NS, step);
    }
    free(x); free(dt); free(bc); free(D); free(A); free(state); free(y);
    return first;
}

static void test_scan(void)
{
    for (int NS = 8; NS <= 24; NS += 4) {
        float *g = check_scan(slm_mamba_scan_generic, "generic", NS);
        float *d = check_scan(slm_mamba_scan, "dispatched", NS);
        free(d);
#if defined(__x86_64__)
        if (NS % 8 == 0 && slm_kernels_use_avx2()) {
            float *v = check_scan(slm_mamba_scan_avx2, "avx2", NS);
            double gd[11 * 21];
            for (int i = 0; i < 11 * 21; i++) gd[i] = g[i];
            CHECK(rel_err(v, gd, 11 * 21) < 2e-6, "avx2 vs generic scan (d_state %d): rel err %g", NS,
                  rel_err(v, gd, 11 * 21));
            free(v);
        }
#endif
        free(g);
    }
}

/* ---- the whole block with f32 weights ----------------------------------------- */

typedef struct model {
    slm_mamba_shape h;
    slm_tensor *w_in, *w_x, *w_dt, *w_out;
    float *conv_w, *conv_b, *dt_b, *A, *D, *norm;
    slm_mamba_block b;
} model;

static slm_tensor *rmat(int64_t rows, int64_t cols, float scale)
{
    int64_t shape[2] = {rows, cols};
    slm_tensor *t = slm_tensor_new(SLM_DTYPE_F32, 2, shape, NULL);
    float *d = slm_tensor_data(t);
    for (int64_t i = 0; i < rows * cols; i++) d[i] = frand(scale);
    return t;
}

/* Mamba-1: dim 24, d_inner 40, dt_rank 8; Mamba-2: 8 heads of 5, 2 groups */
static void model_init(model *m, int version, int rms)
{
    slm_mamba_shape h = {.version = version, .dim = 24, .d_inner = 40, .d_conv = 4, .d_state = 16,
                         .dt_rank = 8, .n_group = version == 2 ? 2 : 1, .dt_b_c_rms = rms,
                         .eps = 1e-5f};
    memset(m, 0, sizeof *m);
    m->h = h;
    int64_t ch = slm_mamba_conv_channels(&h), per = version == 2 ? h.dt_rank : h.d_inner;
    m->w_in = rmat(slm_mamba_in_rows(&h), h.dim, 0.3f);
    if (version == 1) {
        m->w_x = rmat(h.dt_rank + 2 * h.d_state, h.d_inner, 0.3f);
        m->w_dt = rmat(h.d_inner, h.dt_rank, 0.5f);
    }
    m->w_out = rmat(h.dim, h.d_inner, 0.3f);
    m->conv_w = rvec(ch * h.d_conv, 0.6f);
    m->conv_b = rvec(ch, 0.2f);
    m->dt_b = rvec(per, 1);
    int64_t na = version == 2 ? h.dt_rank : h.d_inner * h.d_state;
    m->A = malloc(na * sizeof(float));
    for (int64_t i = 0; i < na; i++) m->A[i] = -(float)(i % h.d_state + 1);
    m->D = rvec(per, 1);
    if (version == 2) {
        m->norm = rvec(h.d_inner, 1);
        for (int64_t i = 0; i < h.d_inner; i++) m->norm[i] += 1.5f;
    }
    slm_mamba_block b = {m->w_in, m->w_x, m->w_dt, m->w_out, m->conv_w, m->conv_b, m->dt_b,
                         m->A, m->D, m->norm, h};
    m->b = b;
}

static void model_free(model *m)
{
    slm_tensor_free(m->w_in); slm_tensor_free(m->w_x); slm_tensor_free(m->w_dt);
    slm_tensor_free(m->w_out);
    free(m->conv_w); free(m->conv_b); free(m->dt_b); free(m->A); free(m->D); free(m->norm);
}

/* y = W x for an f32 (N, K) tensor, in double */
static void ref_lin(double *y, const slm_tensor *W, const double *x)
{
    const float *w = slm_tensor_data(W);
    for (int64_t r = 0; r < W->shape[0]; r++) {
        double s = 0;
        for (int64_t k = 0; k < W->shape[1]; k++) s += (double)w[r * W->shape[1] + k] * x[k];
        y[r] = s;
    }
}

static void ref_rms(double *v, int n, double eps, const float *w)
{
    double ss = 0;
    for (int i = 0; i < n; i++) ss += v[i] * v[i];
    double sc = 1.0 / sqrt(ss / n + eps);
    for (int i = 0; i < n; i++) v[i] *= sc * (w ? w[i] : 1.0);
}

/* the mixer over T tokens from a zero state, all in double, time outer,
 * written from the equations in mamba.h (full conv input history) */
static void ref_block(double *out, const model *m, const float *x, int T)
{
    const slm_mamba_shape *h = &m->h;
    int v2 = h->version == 2;
    int DI = (int)h->d_inner, NS = (int)h->d_state, R = (int)h->dt_rank, K = (int)h->d_conv;
    int DIM = (int)h->dim, CH = (int)slm_mamba_conv_channels(h), NG = (int)h->n_group;
    double *hist = calloc((size_t)(T + K) * CH, sizeof *hist);  /* conv inputs, K-1 zeros first */
    double *s = calloc((size_t)DI * NS, sizeof *s);
    double xin[64], xz[256], xc[128], xdb[64], dt[64], y[64];
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < DIM; k++) xin[k] = x[t * DIM + k];
        ref_lin(xz, m->w_in, xin);
        const double *cin = v2 ? xz + DI : xz, *z = v2 ? xz : xz + DI;
        for (int i = 0; i < CH; i++) hist[(t + K - 1) * CH + i] = cin[i];
        for (int i = 0; i < CH; i++) {
            double a = m->conv_b[i];
            for (int k = 0; k < K; k++) a += m->conv_w[i * K + k] * hist[(t + k) * CH + i];
            xc[i] = silu_d(a);
        }
        if (!v2) {
            ref_lin(xdb, m->w_x, xc);
            if (h->dt_b_c_rms) {
                ref_rms(xdb, R, h->eps, NULL);
                ref_rms(xdb + R, NS, h->eps, NULL);
                ref_rms(xdb + R + NS, NS, h->eps, NULL);
            }
            ref_lin(dt, m->w_dt, xdb);
        }
        for (int i = 0; i < DI; i++) {
            int head = v2 ? i / (DI / R) : i, g = v2 ? head / (R / NG) : 0;
            double d = v2 ? softplus_d(xz[DI + CH + head] + m->dt_b[head]) : softplus_d(dt[i] + m->dt_b[i]);
            const double *B = v2 ? xc + DI + g * NS : xdb + R;
            const double *C = v2 ? xc + DI + NG * NS + g * NS : xdb + R + NS;
            double acc = 0;
            for (int j = 0; j < NS; j++) {
                double a = v2 ? m->A[head] : m->A[i * NS + j];
                double *sj = &s[i * NS + j];
                *sj = *sj * exp(d * a) + B[j] * xc[i] * d;
                acc += *sj * C[j];
            }
            y[i] = (acc + xc[i] * m->D[head]) * silu_d(z[i]);
        }
        if (v2)
            for (int g = 0; g < NG; g++) ref_rms(y + g * (DI / NG), DI / NG, h->eps, m->norm + g * (DI / NG));
        ref_lin(out + (size_t)t * DIM, m->w_out, y);
    }
    free(hist);
    free(s);
}

static void test_block(slm_pool *pool, int version, int rms)
{
    model m;
    model_init(&m, version, rms);
    enum { T = 9 };
    int DIM = (int)m.h.dim;
    slm_error err = {0};
    CHECK(slm_mamba_block_check(&m.b, &err) == SLM_OK, "block check: %s", err.msg);
    float *x = rvec((size_t)T * DIM, 1);
    double ref[T * 24];
    ref_block(ref, &m, x, T);

    /* sequence mode: all T in one call */
    slm_mamba_state *st = slm_mamba_state_new(2, &m.h, &err);
    slm_mamba_work *w = slm_mamba_work_new(T, &m.h, &err);
    float seq[T * 24], step[T * 24];
    CHECK(slm_mamba_forward(pool, &m.b, st, 1, T, x, seq, w, &err) == SLM_OK, "forward: %s", err.msg);
    CHECK(rel_err(seq, ref, (size_t)T * DIM) < 1e-5, "block v%d (rms %d, pool %d) vs reference: rel err %g",
          version, rms, slm_pool_size(pool), rel_err(seq, ref, (size_t)T * DIM));
    /* the other layer's state is untouched */
    int untouched = 1;
    for (int64_t i = 0; i < m.h.d_inner * m.h.d_state; i++) untouched &= st->ssm[i] == 0.0f;
    CHECK(untouched, "layer 0 state untouched by layer 1");

    /* single steps from a cleared state give the same rows */
    slm_mamba_state_clear(st);
    for (int t = 0; t < T; t++)
        slm_mamba_forward(pool, &m.b, st, 1, 1, x + t * DIM, step + t * DIM, w, &err);
    double seqd[T * 24];
    for (int i = 0; i < T * DIM; i++) seqd[i] = seq[i];
    CHECK(rel_err(step, seqd, (size_t)T * DIM) < 1e-6, "v%d steps vs sequence: rel err %g", version,
          rel_err(step, seqd, (size_t)T * DIM));

    /* errors: a state shaped for another model, rows beyond the batch */
    slm_mamba_shape o = m.h;
    o.d_state = 8;
    slm_mamba_state *other = slm_mamba_state_new(2, &o, &err);
    CHECK(slm_mamba_forward(pool, &m.b, other, 0, 1, x, seq, w, &err) == SLM_EINVAL &&
          strstr(err.msg, "another model"), "forward with a foreign state: %s", err.msg);
    CHECK(slm_mamba_forward(pool, &m.b, st, 0, T + 1, x, seq, w, &err) == SLM_EINVAL,
          "forward beyond n_batch");
    CHECK(slm_mamba_forward(pool, &m.b, st, 2, 1, x, seq, w, &err) == SLM_EINVAL, "layer out of range");
    slm_mamba_state_free(other);
    slm_mamba_state_free(st);
    slm_mamba_work_free(w);
    free(x);
    model_free(&m);
}

static void test_checks(void)
{
    model m;
    model_init(&m, 1, 0);
    slm_error err = {0};
    slm_mamba_block b = m.b;
    b.w_x = m.w_dt;
    CHECK(slm_mamba_block_check(&b, &err) == SLM_EINVAL &&
          strstr(err.msg, "ssm_x: expected shape 40x40, got 40x8"), "wrong ssm_x shape: %s", err.msg);
    b = m.b;
    b.w_out = NULL;
    CHECK(slm_mamba_block_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "ssm_out: missing"),
          "missing ssm_out: %s", err.msg);
    b = m.b;
    b.D = NULL;
    CHECK(slm_mamba_block_check(&b, &err) == SLM_EINVAL, "missing D");
    b = m.b;
    b.shape.d_conv = 1000;
    CHECK(slm_mamba_block_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "d_conv"), "huge d_conv");
    b = m.b;
    b.shape.version = 3;
    CHECK(slm_mamba_block_check(&b, &err) == SLM_EINVAL, "version 3");
    slm_mamba_shape h = m.h;
    CHECK(slm_mamba_state_new(0, &h, &err) == NULL && err.code == SLM_EINVAL, "state of 0 layers");
    CHECK(slm_mamba_work_new(0, &h, &err) == NULL && err.code == SLM_EINVAL, "work of 0 rows");
    model_free(&m);
    model_init(&m, 2, 0);
    b = m.b;
    b.shape.n_group = 3;      /* 8 heads in 3 groups */
    CHECK(slm_mamba_block_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "groups"), "mamba2 groups: %s",
          err.msg);
    b = m.b;
    b.norm_w = NULL;
    CHECK(slm_mamba_block_check(&b, &err) == SLM_EINVAL, "mamba2 without norm");
    b = m.b;
    b.shape.dim = 12;
    CHECK(slm_mamba_block_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "ssm_in: expected shape 152x12"),
          "mamba2 in_proj shape: %s", err.msg);
    model_free(&m);
}

int main(void)
{
    test_conv();
    test_scan();
    slm_error err = {0};
    slm_pool *pool = slm_pool_new(3, &err);
    test_block(NULL, 1, 0);
    test_block(pool, 1, 0);
    test_block(pool, 1, 1);
    test_block(NULL, 2, 0);
    test_block(pool, 2, 0);
    test_checks();
    slm_pool_free(pool);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
