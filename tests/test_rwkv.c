/* RWKV WKV recurrences against double-precision references written here
 * from the definitions (v4: the plain exponentially weighted average
 * without the max trick; v5/v6 and v7: per-head matrix states with the
 * loops in another order), over token runs split into calls of several
 * sizes (the state carries across calls); state reset, sizes and errors;
 * grouped matrix-vector products against the products one by one. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks/rwkv_internal.h"
#include "core/fp16.h"
#include "core/pool.h"
#include "kernels/vecdot.h"
#include "quant/quant.h"
#include "rwkv7_block.h"

static int passed, failed;
#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (cond) passed++;                                                \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); }     \
    } while (0)

static uint64_t xs = 0x243f6a8885a308d3u;
static float frand(float lo, float hi)
{
    xs ^= xs << 13;
    xs ^= xs >> 7;
    xs ^= xs << 17;
    return lo + (float)((double)(xs >> 11) * 0x1.0p-53) * (hi - lo);
}

static float *rvec(size_t n, float lo, float hi)
{
    float *v = malloc(n * sizeof *v);
    if (!v) exit(1);
    for (size_t i = 0; i < n; i++) v[i] = frand(lo, hi);
    return v;
}

static double rel_err(const float *got, const double *want, size_t n)
{
    double m = 0, scale = 1e-6;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs(got[i] - want[i]));
    return m / scale;
}

/* runs f over T tokens in calls of `chunk` tokens */
#define IN_CHUNKS(T, chunk, body)                                          \
    for (int t0 = 0; t0 < (T); t0 += (chunk)) {                            \
        int n = (T) - t0 < (chunk) ? (T) - t0 : (chunk);                   \
        body;                                                              \
    }

static void test_wkv4(void)
{
    const int T = 37, D = 24;
    float *k = rvec((size_t)T * D, -3, 3), *v = rvec((size_t)T * D, -1, 1);
    float *w = rvec(D, -2, -0.01f), *u = rvec(D, -1, 1);   /* w = -exp(decay) < 0 */
    double *want = malloc(sizeof(double) * (size_t)T * D);
    /* y_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (same with v = 1) */
    for (int c = 0; c < D; c++)
        for (int t = 0; t < T; t++) {
            double num = exp((double)u[c] + k[t * D + c]) * v[t * D + c];
            double den = exp((double)u[c] + k[t * D + c]);
            for (int i = 0; i < t; i++) {
                double e = exp((t - 1 - i) * (double)w[c] + k[i * D + c]);
                num += e * v[i * D + c];
                den += e;
            }
            want[t * D + c] = num / den;
        }
    int chunks[] = {1, 5, 37};
    for (int ci = 0; ci < 3; ci++) {
        float aa[24] = {0}, bb[24] = {0}, pp[24];
        for (int c = 0; c < D; c++) pp[c] = -1e30f;
        float *y = calloc((size_t)T * D, sizeof(float));
        IN_CHUNKS(T, chunks[ci], slm_rwkv_wkv4(n, D, w, u, k + (size_t)t0 * D, v + (size_t)t0 * D,
                                               aa, bb, pp, y + (size_t)t0 * D));
        double e = rel_err(y, want, (size_t)T * D);
        CHECK(e < 2e-5, "wkv4 in chunks of %d: rel err %g", chunks[ci], e);
        free(y);
    }
    free(k); free(v); free(w); free(u); free(want);
}

static void test_wkv6(void)
{
    const int T = 19, H = 3, N = 8, D = H * N;
    float *r = rvec((size_t)T * D, -1, 1), *k = rvec((size_t)T * D, -1, 1);
    float *v = rvec((size_t)T * D, -1, 1), *w = rvec((size_t)T * D, 0.3f, 0.999f);
    float *u = rvec(D, -1, 1);
    double *want = calloc((size_t)T * D, sizeof(double));
    double *S = calloc((size_t)H * N * N, sizeof(double));
    /* value-outer order: y[j] = sum_i r[i] (u[i] k[i] v[j] + S[i][j]) */
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const int o = t * D + h * N;
            for (int j = 0; j < N; j++) {
                double acc = 0;
                for (int i = 0; i < N; i++)
                    acc += r[o + i] * ((double)u[h * N + i] * k[o + i] * v[o + j] + S[(h * N + i) * N + j]);
                want[o + j] = acc;
            }
            for (int j = 0; j < N; j++)
                for (int i = 0; i < N; i++) {
                    double *s = &S[(h * N + i) * N + j];
                    *s = *s * w[o + i] + (double)k[o + i] * v[o + j];
                }
        }
    int chunks[] = {1, 4, 19};
    for (int ci = 0; ci < 3; ci++) {
        float *Sf = calloc((size_t)H * N * N, sizeof(float)), *y = calloc((size_t)T * D, sizeof(float));
        IN_CHUNKS(T, chunks[ci],
                  slm_rwkv_wkv6(n, H, N, r + (size_t)t0 * D, k + (size_t)t0 * D, v + (size_t)t0 * D,
                                w + (size_t)t0 * D, u, Sf, y + (size_t)t0 * D));
        double e = rel_err(y, want, (size_t)T * D);
        CHECK(e < 1e-5, "wkv6 in chunks of %d: rel err %g", chunks[ci], e);
        float Sl[3 * 8 * 8];
        for (int i = 0; i < H * N * N; i++) Sl[i] = Sf[i];
        double *Sd = S;
        double es = rel_err(Sl, Sd, (size_t)H * N * N);
        CHECK(es < 1e-5, "wkv6 final state in chunks of %d: rel err %g", chunks[ci], es);
        free(Sf); free(y);
    }
    free(r); free(k); free(v); free(w); free(u); free(want); free(S);
}

static void test_wkv7(void)
{
    const int T = 23, H = 2, N = 16, D = H * N;
    float *r = rvec((size_t)T * D, -1, 1), *k = rvec((size_t)T * D, -1, 1);
    float *v = rvec((size_t)T * D, -1, 1), *w = rvec((size_t)T * D, 0.55f, 0.999f);
    float *kk = rvec((size_t)T * D, -1, 1), *a = rvec((size_t)T * D, 0, 1);
    float *na = malloc(sizeof(float) * (size_t)T * D), *nb = malloc(sizeof(float) * (size_t)T * D);
    /* the model's a = -kk, b = kk * iclr with kk unit per head (keeps S bounded) */
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const int o = t * D + h * N;
            double s = 0;
            for (int j = 0; j < N; j++) s += (double)kk[o + j] * kk[o + j];
            for (int j = 0; j < N; j++) {
                float q = (float)(kk[o + j] / sqrt(s));
                na[o + j] = -q;
                nb[o + j] = q * a[o + j];
            }
        }
    double *want = calloc((size_t)T * D, sizeof(double));
    double *S = calloc((size_t)H * N * N, sizeof(double)), *Sn = calloc((size_t)N * N, sizeof(double));
    /* S' = S diag(w) + (S a) b^T + v k^T (S[i][j], i value, j key); y = S' r */
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            const int o = t * D + h * N;
            double *Sh = S + (size_t)h * N * N;
            for (int i = 0; i < N; i++) {
                double sa = 0;
                for (int j = 0; j < N; j++) sa += Sh[i * N + j] * na[o + j];
                for (int j = 0; j < N; j++)
                    Sn[i * N + j] = Sh[i * N + j] * w[o + j] + sa * nb[o + j] + (double)v[o + i] * k[o + j];
            }
            memcpy(Sh, Sn, sizeof(double) * (size_t)N * N);
            for (int i = 0; i < N; i++) {
                double acc = 0;
                for (int j = 0; j < N; j++) acc += Sh[i * N + j] * r[o + j];
                want[o + i] = acc;
            }
        }
    /* the generic loop, then (N = 16) the AVX2 twin where the CPU has it */
    for (int generic = 1; generic >= 0; generic--) {
        slm_kernels_force_generic(generic);
        if (!generic && !slm_kernels_use_avx2()) break;
        int chunks[] = {1, 6, 23};
        for (int ci = 0; ci < 3; ci++) {
            float *Sf = calloc((size_t)H * N * N, sizeof(float)), *y = calloc((size_t)T * D, sizeof(float));
            IN_CHUNKS(T, chunks[ci],
                      slm_rwkv_wkv7(n, H, N, r + (size_t)t0 * D, w + (size_t)t0 * D, k + (size_t)t0 * D,
                                    v + (size_t)t0 * D, na + (size_t)t0 * D, nb + (size_t)t0 * D, Sf,
                                    y + (size_t)t0 * D));
            double e = rel_err(y, want, (size_t)T * D);
            CHECK(e < 1e-5, "wkv7 (%s) in chunks of %d: rel err %g", generic ? "generic" : "avx2",
                  chunks[ci], e);
            free(Sf); free(y);
        }
    }
    slm_kernels_force_generic(0);
    free(r); free(k); free(v); free(w); free(kk); free(a); free(na); free(nb);
    free(want); free(S); free(Sn);
}

/* At the 0.1B model's head size (12 heads of 64, as the model feeds it:
 * a = -kk, b = kk * iclr with kk unit per head) over 40 tokens, the AVX2
 * twin stays within rounding of the generic loop: state and outputs. */
static void test_wkv7_avx2(void)
{
#if defined(__x86_64__)
    if (!slm_kernels_use_avx2()) {
        printf("skip: wkv7 avx2 vs generic (no AVX2/FMA)\n");
        return;
    }
    const int T = 40, H = 12, N = 64, D = H * N;
    float *r = rvec((size_t)T * D, -1, 1), *k = rvec((size_t)T * D, -1, 1);
    float *v = rvec((size_t)T * D, -1, 1), *w = rvec((size_t)T * D, 0.55f, 0.999f);
    float *a = rvec((size_t)T * D, -1, 1), *b = rvec((size_t)T * D, 0, 1);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            float *kk = a + t * D + h * N, s = 0;
            for (int j = 0; j < N; j++) s += kk[j] * kk[j];
            for (int j = 0; j < N; j++) {
                kk[j] /= sqrtf(s);
                b[t * D + h * N + j] *= kk[j];
                kk[j] = -kk[j];
            }
        }
    size_t ns = (size_t)H * N * N, ny = (size_t)T * D;
    float *S1 = calloc(ns, sizeof(float)), *S2 = calloc(ns, sizeof(float));
    float *y1 = calloc(ny, sizeof(float)), *y2 = calloc(ny, sizeof(float));
    slm_rwkv_wkv7_heads_generic(T, 0, H, N, (size_t)D, r, w, k, v, a, b, S1, y1);
    slm_rwkv_wkv7_heads_avx2(T, 0, H, N, (size_t)D, r, w, k, v, a, b, S2, y2);
    double ys = 1e-6, sm = 0, ym = 0, ss = 1e-6;
    for (size_t i = 0; i < ny; i++) ys = fmax(ys, fabs(y1[i])), ym = fmax(ym, fabs(y1[i] - y2[i]));
    for (size_t i = 0; i < ns; i++) ss = fmax(ss, fabs(S1[i])), sm = fmax(sm, fabs(S1[i] - S2[i]));
    CHECK(ym / ys < 1e-5 && sm / ss < 1e-5, "wkv7 avx2 vs generic (12 heads of 64): y %g, S %g",
          ym / ys, sm / ss);
    free(r); free(k); free(v); free(w); free(a); free(b); free(S1); free(S2); free(y1); free(y2);
#endif
}

/* heads split between threads give the very same floats */
static void test_threaded(void)
{
    const int T = 5, H = 6, N = 64, D = H * N;
    slm_error err = {0};
    slm_pool *pool = slm_pool_new(3, &err);
    CHECK(pool != NULL, "pool: %s", err.msg);
    if (!pool) return;
    float *r = rvec((size_t)T * D, -1, 1), *k = rvec((size_t)T * D, -0.2f, 0.2f);
    float *v = rvec((size_t)T * D, -1, 1), *w = rvec((size_t)T * D, 0.5f, 0.99f);
    float *a = rvec((size_t)T * D, -0.1f, 0.1f), *b = rvec((size_t)T * D, -0.1f, 0.1f);
    size_t ns = (size_t)H * N * N, ny = (size_t)T * D;
    float *S1 = calloc(ns, sizeof(float)), *S2 = calloc(ns, sizeof(float));
    float *y1 = calloc(ny, sizeof(float)), *y2 = calloc(ny, sizeof(float));
    slm_rwkv_wkv6(T, H, N, r, k, v, w, a, S1, y1);
    slm_rwkv_wkv6_pool(pool, T, H, N, r, k, v, w, a, S2, y2);
    CHECK(!memcmp(S1, S2, ns * sizeof(float)) && !memcmp(y1, y2, ny * sizeof(float)),
          "wkv6 threaded == serial");
    free(r); free(k); free(v); free(w); free(a); free(b); free(S1); free(S2); free(y1); free(y2);
    slm_pool_free(pool);
}

/* a (rows, cols) weight of random values in dtype (f32, f16 or q8_0) */
static slm_tensor *rweight(slm_dtype dt, int64_t rows, int64_t cols)
{
    int64_t shape[2] = {rows, cols};
    slm_tensor *t = slm_tensor_new(dt, 2, shape, NULL);
    if (!t) exit(1);
    float *v = rvec((size_t)(rows * cols), -0.1f, 0.1f);
    if (dt == SLM_DTYPE_F32) memcpy(slm_tensor_data(t), v, (size_t)(rows * cols) * sizeof(float));
    else if (dt == SLM_DTYPE_F16)
        for (int64_t i = 0; i < rows * cols; i++) ((slm_f16 *)slm_tensor_data(t))[i] = slm_f32_to_f16(v[i]);
    else slm_quantize_q8_0(v, slm_tensor_data(t), rows * cols);
    free(v);
    return t;
}

static void cube(float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = y[i] * y[i] * y[i];
}

/* The products of a group, run with the threads taking chunks of rows of
 * every matrix (row counts not multiples of the chunks), equal the products one by one bit for
 * bit, the first one with an elementwise post function: a big group on 2
 * and 3 threads, a small one (serial), and one whose f16 inputs exceed the
 * stack encoding (run one by one). */
static void test_mv_group(void)
{
    enum { NP = 5 };
    const slm_dtype dt[NP] = {SLM_DTYPE_F16, SLM_DTYPE_Q8_0, SLM_DTYPE_F32, SLM_DTYPE_F32, SLM_DTYPE_F16};
    const int64_t rows[3][NP] = {{301, 77, 63, 768, 5}, {7, 3, 2, 9, 1}, {33, 7, 5, 11, 3}};
    const int64_t cols[3][NP] = {{768, 768, 768, 64, 96}, {64, 32, 64, 16, 32}, {8192, 64, 8, 4, 8192}};
    const char *what[3] = {"big", "small", "wide f16"};
    for (int nth = 2; nth <= 3; nth++) {
        slm_error err = {0};
        slm_pool *pool = slm_pool_new(nth, &err);
        CHECK(pool != NULL, "pool: %s", err.msg);
        if (!pool) return;
        for (int c = 0; c < 3; c++) {
            slm_tensor *W[NP];
            float *x[NP], *got[NP], *want[NP];
            slm_rwkv_mv mv[NP];
            for (int i = 0; i < NP; i++) {
                W[i] = rweight(dt[i], rows[c][i], cols[c][i]);
                x[i] = rvec((size_t)cols[c][i], -1, 1);
                got[i] = calloc((size_t)rows[c][i], sizeof(float));
                want[i] = calloc((size_t)rows[c][i], sizeof(float));
                mv[i] = (slm_rwkv_mv){got[i], W[i], x[i], i == 0 ? cube : NULL};
                slm_rwkv_mm(NULL, want[i], W[i], -1, x[i], 1, &err);
                if (i == 0) cube(want[i], rows[c][i]);
            }
            CHECK(slm_rwkv_mv_group(pool, mv, NP, &err) == SLM_OK, "mv group (%s): %s", what[c], err.msg);
            int same = 1;
            for (int i = 0; i < NP; i++) {
                same = same && !memcmp(got[i], want[i], (size_t)rows[c][i] * sizeof(float));
                slm_tensor_free(W[i]);
                free(x[i]);
                free(got[i]);
                free(want[i]);
            }
            CHECK(same, "mv group (%s) on %d threads == products one by one", what[c], nth);
        }
        slm_pool_free(pool);
    }
}

/* v7's time mix runs everything between its projections and the output
 * projection as one job split by heads (for one token with the
 * up-projections inside): two layers (the first sets v_first, the second
 * mixes it in) over single tokens and a batch of 3 give the same outputs
 * and states bit for bit on 1, 2 and 3 threads. */
static void test_tmix_v7_threads(void)
{
    enum { H = 6, N = 64, D = H * N, R = 32, T = 5, LAYERS = 2 };
    slm_tensor *mats[LAYERS][12];
    float *vecs[LAYERS][15];
    slm_rwkv_tmix b[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        for (int i = 0; i < 4; i++) mats[l][i] = rweight(SLM_DTYPE_F16, D, D);
        for (int i = 4; i < 12; i += 2) {
            mats[l][i] = rweight(SLM_DTYPE_F32, R, D);
            mats[l][i + 1] = rweight(SLM_DTYPE_F32, D, R);
        }
        for (int i = 0; i < 15; i++) vecs[l][i] = rvec(D, -1, 1);
        for (int i = 0; i < D; i++) vecs[l][13][i] += 1.5f;   /* ln_x weight near 1 */
        b[l] = rwkv7_test_block(l == 0, D, H, N, mats[l], vecs[l]);
    }
    float *x = rvec((size_t)(T + 3) * D, -1, 1);
    size_t nout = (size_t)LAYERS * (T + 3) * D;
    float *out[3] = {0}, *state[3] = {0};
    size_t ns = 0;
    for (int p = 0; p < 3; p++) {
        slm_error err = {0};
        slm_pool *pool = slm_pool_new(p + 1, &err);
        slm_rwkv_state *st = slm_rwkv_state_new(SLM_RWKV_V7, LAYERS, D, H, 4 * D, R, 3, &err);
        CHECK(pool && st, "pool and v7 state: %s", err.msg);
        if (!pool || !st) return;
        out[p] = calloc(nout, sizeof(float));
        int ok = 1;
        for (int l = 0; l < LAYERS; l++) {
            CHECK(slm_rwkv_tmix_check(&b[l], &err) == SLM_OK, "v7 block %d: %s", l, err.msg);
            float *o = out[p] + (size_t)l * (T + 3) * D;
            for (int t = 0; t < T; t++)
                ok = ok && slm_rwkv_tmix_forward(pool, &b[l], st, l, 1, x + (size_t)t * D,
                                                 o + (size_t)t * D, &err) == SLM_OK;
            ok = ok && slm_rwkv_tmix_forward(pool, &b[l], st, l, 3, x + (size_t)T * D,
                                             o + (size_t)T * D, &err) == SLM_OK;
        }
        CHECK(ok, "v7 time mix on %d threads: %s", p + 1, err.msg);
        ns = slm_rwkv_state_floats(st);
        state[p] = malloc(ns * sizeof(float));
        memcpy(state[p], st->s, ns * sizeof(float));
        slm_rwkv_state_free(st);
        slm_pool_free(pool);
    }
    for (int p = 1; p < 3; p++)
        CHECK(!memcmp(out[0], out[p], nout * sizeof(float)) &&
                  !memcmp(state[0], state[p], ns * sizeof(float)),
              "v7 time mix on %d threads == 1 thread, bit for bit", p + 1);
    for (int p = 0; p < 3; p++) {
        free(out[p]);
        free(state[p]);
    }
    free(x);
    for (int l = 0; l < LAYERS; l++) {
        for (int i = 0; i < 12; i++) slm_tensor_free(mats[l][i]);
        for (int i = 0; i < 15; i++) free(vecs[l][i]);
    }
}

static void test_state(void)
{
    slm_error err = {0};
    slm_rwkv_state *st = slm_rwkv_state_new(SLM_RWKV_V4, 3, 16, 1, 64, 0, 4, &err);
    CHECK(st != NULL, "v4 state: %s", err.msg);
    if (st) {
        CHECK(slm_rwkv_state_floats(st) == 3 * 5 * 16, "v4 state holds 5 vectors per layer");
        float *pp = st->s + 2 * st->layer_floats + 4 * 16;
        CHECK(pp[15] == -1e30f && st->s[0] == 0, "v4 reset: pp = -1e30, the rest 0");
        slm_rwkv_state_free(st);
    }
    st = slm_rwkv_state_new(SLM_RWKV_V7, 2, 128, 2, 256, 32, 8, &err);
    CHECK(st && slm_rwkv_state_floats(st) == 2 * (2 * 128 + 2 * 64 * 64), "v7 state size");
    slm_rwkv_state_free(st);
    st = slm_rwkv_state_new(SLM_RWKV_V6, 2, 100, 3, 256, 32, 8, &err);
    CHECK(!st && err.code == SLM_EINVAL, "dim not a multiple of the heads is refused");
    st = slm_rwkv_state_new((slm_rwkv_version)99, 2, 64, 1, 256, 0, 8, &err);
    CHECK(!st && err.code == SLM_EUNSUPPORTED, "unknown version is refused");

    slm_rwkv_tmix b = {.version = SLM_RWKV_V5_2, .dim = 64, .n_head = 8, .head_size = 8};
    CHECK(slm_rwkv_tmix_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "receptance"),
          "time mix without weights names the first missing one: %s", err.msg);
    slm_rwkv_cmix c = {.version = SLM_RWKV_V7, .dim = 64, .n_ff = 256};
    CHECK(slm_rwkv_cmix_check(&c, &err) == SLM_EINVAL && strstr(err.msg, "time_mix_k"),
          "channel mix without mix_k: %s", err.msg);
}

int main(void)
{
    test_wkv4();
    test_wkv6();
    test_wkv7();
    test_wkv7_avx2();
    test_threaded();
    test_mv_group();
    test_tmix_v7_threads();
    test_state();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
