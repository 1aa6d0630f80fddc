/* RWKV-7's AVX-512 sequence kernels (csrc/blocks/rwkv_avx512.c) against
 * the portable loops that define them:
 *   - the WKV-7 recurrence over runs of tokens: the generic loop's state
 *     and outputs bit for bit, at head sizes 16..128, on a sub-range of
 *     heads, in calls of several sizes, and through the dispatcher with the
 *     tier forced (slm_kernels_set_level);
 *   - the row-wise mixes (shift_diff, shift_mix) and relu^2: bit for bit
 *     at lengths around the 16-lane tails, with NaN, infinities and signed zeros for relu^2;
 *   - the hiddens' tanh (2e-7 absolute) and sigmoid (1e-6 relative)
 *     against the double functions;
 *   - the whole v7 time mix (two layers: v_first set, then mixed in, f32
 *     weights) at the AVX-512 tier against the generic tier: outputs and
 *     states within 2e-6 of their scale (exp16 is within 2 ulp of expf and
 *     the head sums are lane-wise; the products are bit-identical across
 *     tiers by contract, kernels/gemm.h; measured 2.5e-7).
 * Without AVX-512 the cases say "skip:" and only the portable paths run. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blocks/rwkv_internal.h"
#include "check.h"
#define TESTRAND_SEED 7070u
#include "testrand.h"
#include "core/pool.h"
#include "kernels/vecdot.h"
#include "rwkv7_block.h"

/* n values uniform in [lo, hi] (testrand.h's stream) */
static float *rrange(size_t n, float lo, float hi)
{
    float *v = malloc(n * sizeof *v);
    if (!v) exit(1);
    for (size_t i = 0; i < n; i++) v[i] = lo + (frand() + 1.0f) * 0.5f * (hi - lo);
    return v;
}

static int has512;

/* T tokens of H heads of N, as the model feeds the recurrence: a = -kk,
 * b = kk * iclr with kk unit per head; the state starts from a random
 * matrix (a prompt that continues a session). Heads 1..H-1 run, in calls
 * of `chunk` tokens; head 0 must stay as it was. */
static void wkv7_case(int T, int H, int64_t N, int chunk)
{
    const int64_t D = H * N;
    const size_t ny = (size_t)T * (size_t)D, ns = (size_t)H * (size_t)(N * N);
    float *r = rrange(ny, -1, 1), *k = rrange(ny, -1, 1), *v = rrange(ny, -1, 1);
    float *w = rrange(ny, 0.55f, 0.999f), *a = rrange(ny, -1, 1), *b = rrange(ny, 0, 1);
    for (int t = 0; t < T; t++)
        for (int h = 0; h < H; h++) {
            float *kk = a + (size_t)(t * D + h * N), s = 0;
            for (int64_t j = 0; j < N; j++) s += kk[j] * kk[j];
            for (int64_t j = 0; j < N; j++) {
                kk[j] /= sqrtf(s);
                b[(size_t)(t * D + h * N + j)] *= kk[j];
                kk[j] = -kk[j];
            }
        }
    float *S1 = rrange(ns, -0.5f, 0.5f), *S2 = fdup(S1, (int64_t)ns), *S0 = fdup(S1, (int64_t)ns);
    float *y1 = calloc(ny, sizeof(float)), *y2 = calloc(ny, sizeof(float));
    for (int t0 = 0; t0 < T; t0 += chunk) {
        int n = T - t0 < chunk ? T - t0 : chunk;
        size_t o = (size_t)t0 * (size_t)D;
        slm_rwkv_wkv7_heads_generic(n, 1, H, N, (size_t)D, r + o, w + o, k + o, v + o, a + o, b + o,
                                    S1, y1 + o);
        slm_rwkv_wkv7_heads_avx512(n, 1, H, N, (size_t)D, r + o, w + o, k + o, v + o, a + o, b + o,
                                   S2, y2 + o);
    }
    CHECK(!memcmp(S1, S2, ns * sizeof(float)) && !memcmp(y1, y2, ny * sizeof(float)),
          "wkv7 avx512 == generic bit for bit (T %d, %d heads of %lld, calls of %d)", T, H,
          (long long)N, chunk);
    CHECK(!memcmp(S2, S0, (size_t)(N * N) * sizeof(float)), "wkv7 avx512 leaves head 0 alone (N %lld)",
          (long long)N);
    free(r); free(k); free(v); free(w); free(a); free(b);
    free(S0); free(S1); free(S2); free(y1); free(y2);
}

static void test_wkv7_bits(void)
{
    if (!has512) {
        printf("skip: wkv7 avx512 vs generic (no AVX-512)\n");
        return;
    }
    const int64_t sizes[] = {16, 48, 64, 128};
    const int runs[][2] = {{2, 2}, {3, 3}, {17, 5}, {40, 40}, {9, 1}};
    for (int si = 0; si < 4; si++)
        for (int ri = 0; ri < 5; ri++) wkv7_case(runs[ri][0], 3, sizes[si], runs[ri][1]);
}

/* The dispatcher with the tier forced: a run of 33 tokens of 12 heads of
 * 64 (the 0.1B model's) gives the same floats at the generic and the
 * AVX-512 tier. */
static void test_wkv7_dispatch(void)
{
    if (!has512) {
        printf("skip: wkv7 dispatch at the avx512 tier (no AVX-512)\n");
        return;
    }
    const int T = 33, H = 12;
    const int64_t N = 64, D = H * N;
    const size_t ny = (size_t)T * (size_t)D, ns = (size_t)H * (size_t)(N * N);
    float *r = rrange(ny, -1, 1), *k = rrange(ny, -1, 1), *v = rrange(ny, -1, 1);
    float *w = rrange(ny, 0.55f, 0.999f), *a = rrange(ny, -0.1f, 0.1f), *b = rrange(ny, -0.1f, 0.1f);
    float *S[2], *y[2];
    const int levels[2] = {SLM_KERNELS_GENERIC, SLM_KERNELS_AVX512};
    for (int i = 0; i < 2; i++) {
        S[i] = calloc(ns, sizeof(float));
        y[i] = calloc(ny, sizeof(float));
        slm_kernels_set_level(levels[i]);
        slm_rwkv_wkv7(T, H, N, r, w, k, v, a, b, S[i], y[i]);
    }
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    CHECK(!memcmp(S[0], S[1], ns * sizeof(float)) && !memcmp(y[0], y[1], ny * sizeof(float)),
          "slm_rwkv_wkv7 of 33 tokens: the same floats at the generic and avx512 tiers");
    /* token by token (decode, the training backward's checkpoints) as in one call */
    memset(S[0], 0, ns * sizeof(float));
    for (int t = 0; t < T; t++) {
        size_t o = (size_t)t * (size_t)D;
        slm_rwkv_wkv7(1, H, N, r + o, w + o, k + o, v + o, a + o, b + o, S[0], y[0] + o);
    }
    CHECK(!memcmp(S[0], S[1], ns * sizeof(float)) && !memcmp(y[0], y[1], ny * sizeof(float)),
          "slm_rwkv_wkv7 at the avx512 tier: token by token == 33 tokens in one call, bit for bit");
    for (int i = 0; i < 2; i++) {
        free(S[i]);
        free(y[i]);
    }
    free(r); free(k); free(v); free(w); free(a); free(b);
}

/* shift_diff, shift_mix (1 to 6 mixes) and relu_sq at both tiers, rows
 * of lengths around the 16 lanes */
static void test_rows(void)
{
    if (!has512) {
        printf("skip: rwkv row mixes avx512 vs generic (no AVX-512)\n");
        return;
    }
    const int64_t dims[] = {1, 15, 16, 17, 33, 768};
    const int levels[2] = {SLM_KERNELS_GENERIC, SLM_KERNELS_AVX512};
    for (int di = 0; di < 6; di++) {
        const int64_t d = dims[di];
        const int n = 3;
        const size_t nd = (size_t)n * (size_t)d;
        float *x = rrange(nd, -2, 2), *carry = rrange((size_t)d, -2, 2), *relu = rrange(nd, -3, 3);
        const float *m[6];
        for (int i = 0; i < 6; i++) m[i] = rrange((size_t)d, 0, 1);
        /* NaN and -inf square to 0, +inf to +inf, -0 to +0 (y > 0 ? y : 0) */
        const float special[4] = {NAN, -INFINITY, INFINITY, -0.0f};
        for (size_t i = 0; i < 4 && i < nd; i++) relu[nd - 1 - i] = special[i];
        float *sx[2], *mix[2][6], *rq[2];
        for (int i = 0; i < 2; i++) {
            slm_kernels_set_level(levels[i]);
            sx[i] = calloc(nd, sizeof(float));
            rq[i] = fdup(relu, (int64_t)nd);
            slm_rwkv_shift_diff(sx[i], x, carry, n, d);
            slm_rwkv_relu_sq(rq[i], (int64_t)nd);
            /* n_mix mixes into one buffer of 6 slots, for each n_mix */
            for (int nm = 1; nm <= 6; nm++) {
                mix[i][nm - 1] = calloc(6 * nd, sizeof(float));
                slm_rwkv_shift_mix(mix[i][nm - 1], nd, x, carry, m, nm, n, d);
            }
        }
        slm_kernels_set_level(SLM_KERNELS_AVX512);
        int same = !memcmp(sx[0], sx[1], nd * sizeof(float));
        for (int nm = 0; nm < 6; nm++) same = same && !memcmp(mix[0][nm], mix[1][nm], 6 * nd * sizeof(float));
        CHECK(same, "shift_diff and shift_mix (3 rows of %lld): avx512 == generic bit for bit", (long long)d);
        /* the mixes are sx * m + x with the sx that shift_diff gives */
        int mixed = 1;
        for (int i = 0; i < 6; i++)
            for (size_t j = 0; j < nd; j++)
                mixed = mixed && mix[1][5][(size_t)i * nd + j] == sx[1][j] * m[i][j % (size_t)d] + x[j];
        CHECK(mixed, "shift_mix (3 rows of %lld) == shift_diff then sx * m + x", (long long)d);
        CHECK(!memcmp(rq[0], rq[1], nd * sizeof(float)), "relu_sq (%zu values): avx512 == generic bit for bit",
              nd);
        /* the values themselves, where they are plain */
        CHECK(rq[1][nd - 1] == 0 && !signbit(rq[1][nd - 1]) && (nd < 2 || rq[1][nd - 2] == 0) &&
                  (nd < 3 || isinf(rq[1][nd - 3])),
              "relu_sq of NaN, -inf, +inf (%zu values): 0, 0, inf", nd);
        for (int i = 0; i < 2; i++) {
            free(sx[i]);
            free(rq[i]);
            for (int nm = 0; nm < 6; nm++) free(mix[i][nm]);
        }
        for (int i = 0; i < 6; i++) free((void *)m[i]);
        free(x); free(carry); free(relu);
    }
}

/* tanh and sigmoid of the low-rank hiddens: the AVX-512 twins against
 * the double functions (and so against tanhf / the generic sigmoid) over
 * -20..20, the tails' lengths, and the saturated ends */
static void test_activations(void)
{
    if (!has512) {
        printf("skip: rwkv tanh/sigmoid avx512 (no AVX-512)\n");
        return;
    }
    const int64_t n = 4001;   /* 250 vectors and a tail of 1 */
    float *x = malloc(sizeof(float) * (size_t)n), *t = malloc(sizeof(float) * (size_t)n);
    float *sg = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++) x[i] = -20.0f + 40.0f * (float)i / (float)(n - 1);
    x[1] = -1e-6f, x[2] = 3e-4f, x[3] = -100.0f, x[4] = 100.0f, x[5] = -0.0f;
    memcpy(t, x, sizeof(float) * (size_t)n);
    memcpy(sg, x, sizeof(float) * (size_t)n);
    slm_rwkv_tanh(t, n);
    slm_rwkv_sigmoid(sg, n);
    double et = 0, es = 0;
    for (int64_t i = 0; i < n; i++) {
        et = fmax(et, fabs(t[i] - tanh((double)x[i])));
        double s = 1.0 / (1.0 + exp(-(double)x[i]));
        es = fmax(es, fabs(sg[i] - s) / fmax(s, 1e-30));   /* sigmoid(-100) is subnormal */
    }
    CHECK(et <= 2e-7, "tanh avx512 within 2e-7 of tanh (absolute): %g", et);
    CHECK(es <= 1e-6, "sigmoid avx512 within 1e-6 of the sigmoid (relative): %g", es);
    CHECK(t[3] == -1 && t[4] == 1 && sg[3] >= 0 && sg[3] < 1e-40 && sg[4] == 1,
          "tanh and sigmoid saturate: tanh(-100) = -1, tanh(100) = 1, sigmoid(-100) ~ 0, sigmoid(100) = 1");
    free(x); free(t); free(sg);
}

/* a (rows, cols) f32 weight of random values: f32 so that no product
 * rounds its inputs to f16, which would hide small differences in some
 * rows and turn others into a whole f16 step */
static slm_tensor *rweight(int64_t rows, int64_t cols)
{
    int64_t shape[2] = {rows, cols};
    slm_tensor *t = slm_tensor_new(SLM_DTYPE_F32, 2, shape, NULL);
    if (!t) exit(1);
    float *v = rrange((size_t)(rows * cols), -0.1f, 0.1f);
    memcpy(slm_tensor_data(t), v, (size_t)(rows * cols) * sizeof(float));
    free(v);
    return t;
}

static double relerr(const float *got, const float *want, size_t n)
{
    return check_relerr_f(got, want, n, 1e-6);
}

/* Two v7 layers (heads of N) over T tokens in calls of 4 then the rest,
 * at the generic and the avx512 tier on 2 threads: outputs and states. */
static void tmix_case(int H, int64_t N, int T)
{
    enum { R = 32, LAYERS = 2 };
    const int64_t D = H * N;
    slm_tensor *mats[LAYERS][12];
    float *vecs[LAYERS][15];
    slm_rwkv_tmix b[LAYERS];
    for (int l = 0; l < LAYERS; l++) {
        for (int i = 0; i < 4; i++) mats[l][i] = rweight(D, D);
        for (int i = 4; i < 12; i += 2) {
            mats[l][i] = rweight(R, D);
            mats[l][i + 1] = rweight(D, R);
        }
        for (int i = 0; i < 15; i++) vecs[l][i] = rrange((size_t)D, -1, 1);
        for (int64_t i = 0; i < D; i++) vecs[l][13][i] += 1.5f;   /* ln_x weight near 1 */
        b[l] = rwkv7_test_block(l == 0, D, H, N, mats[l], vecs[l]);
    }
    float *x = rrange((size_t)T * (size_t)D, -1, 1);
    const size_t nout = (size_t)LAYERS * (size_t)T * (size_t)D;
    const int levels[2] = {SLM_KERNELS_GENERIC, SLM_KERNELS_AVX512};
    float *out[2], *state[2];
    size_t ns = 0;
    slm_error err = {0};
    slm_pool *pool = slm_pool_new(2, &err);
    CHECK(pool != NULL, "pool: %s", err.msg);
    if (!pool) return;
    for (int p = 0; p < 2; p++) {
        slm_kernels_set_level(levels[p]);
        slm_rwkv_state *st = slm_rwkv_state_new(SLM_RWKV_V7, LAYERS, D, H, 4 * D, R, T, &err);
        CHECK(st != NULL, "v7 state: %s", err.msg);
        if (!st) return;
        out[p] = calloc(nout, sizeof(float));
        int ok = 1;
        for (int l = 0; l < LAYERS; l++) {
            float *o = out[p] + (size_t)l * (size_t)T * (size_t)D;
            ok = ok && slm_rwkv_tmix_forward(pool, &b[l], st, l, 4, x, o, &err) == SLM_OK;
            ok = ok && slm_rwkv_tmix_forward(pool, &b[l], st, l, T - 4, x + 4 * (size_t)D,
                                             o + 4 * (size_t)D, &err) == SLM_OK;
        }
        CHECK(ok, "v7 time mix at tier %d: %s", levels[p], err.msg);
        ns = slm_rwkv_state_floats(st);
        state[p] = fdup(st->s, (int64_t)ns);
        slm_rwkv_state_free(st);
    }
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    double eo = relerr(out[1], out[0], nout), es = relerr(state[1], state[0], ns);
    CHECK(eo < 2e-6 && es < 2e-6, "v7 time mix (%d heads of %lld, %d tokens) avx512 vs generic: out %g, state %g",
          H, (long long)N, T, eo, es);
    printf("v7 time mix (%d heads of %lld, %d tokens) avx512 vs generic: out %.2e, state %.2e\n", H,
           (long long)N, T, eo, es);
    for (int p = 0; p < 2; p++) {
        free(out[p]);
        free(state[p]);
    }
    free(x);
    slm_pool_free(pool);
    for (int l = 0; l < LAYERS; l++) {
        for (int i = 0; i < 12; i++) slm_tensor_free(mats[l][i]);
        for (int i = 0; i < 15; i++) free(vecs[l][i]);
    }
}

static void test_tmix(void)
{
    if (!has512) {
        printf("skip: v7 time mix avx512 vs generic tier (no AVX-512)\n");
        return;
    }
    tmix_case(6, 64, 21);
    tmix_case(3, 32, 7);
}

/* without AVX-512 the portable paths still run through the dispatchers */
static void test_portable(void)
{
    slm_kernels_set_level(SLM_KERNELS_GENERIC);
    float y[5] = {-1, 2, -0.0f, 3, NAN};
    slm_rwkv_relu_sq(y, 5);
    CHECK(y[0] == 0 && y[1] == 4 && y[2] == 0 && y[3] == 9 && y[4] == 0, "relu_sq generic: 0 4 0 9 0");
    float x[4] = {1, 2, 3, 4}, carry[2] = {10, 20}, sx[4], m0[2] = {0.5f, 0.25f}, o[8];
    const float *m[2] = {m0, m0};
    slm_rwkv_shift_diff(sx, x, carry, 2, 2);
    slm_rwkv_shift_mix(o, 4, x, carry, m, 2, 2, 2);
    CHECK(sx[0] == 9 && sx[1] == 18 && sx[2] == -2 && sx[3] == -2, "shift_diff generic: 9 18 -2 -2");
    CHECK(o[0] == 5.5f && o[1] == 6.5f && o[2] == 2 && o[3] == 3.5f && !memcmp(o, o + 4, 4 * sizeof(float)),
          "shift_mix generic: 5.5 6.5 2 3.5, twice");
    slm_kernels_set_level(SLM_KERNELS_AVX512);
}

int main(void)
{
    has512 = slm_cpu_has_avx512() && (slm_kernels_set_level(SLM_KERNELS_AVX512), slm_kernels_use_avx512());
    test_portable();
    test_wkv7_bits();
    test_wkv7_dispatch();
    test_rows();
    test_activations();
    test_tmix();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
