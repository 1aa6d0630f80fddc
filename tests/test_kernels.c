/* Dot-product kernels, activation encoders, matmul and ops.
 *
 * - each AVX2 activation encoder against the scalar reference: same bytes;
 * - each generic vec_dot against a plain scalar reference (weights expanded
 *   to float by the dequantizers below, dotted with the float activations in
 *   double) within a per-format bound derived from the activation encoding;
 * - each AVX2 vec_dot against its generic twin: bit-identical for the
 *   K-quants, within 1e-5 of sum |w x| for the others;
 * - matmul (1..3 threads, tiles, the BLAS path) against per-element dots;
 * - RMSNorm, softmax and both RoPE layouts against double formulas.
 * Weights are random bytes with sane scales: every bit pattern of the codes
 * is a valid block. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "core/pool.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/vecdot.h"
#include "quant/quant.h"

static int passed, failed;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (cond) {                                        \
            passed++;                                      \
            printf("ok   ");                               \
        } else {                                           \
            failed++;                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
        }                                                  \
        printf(__VA_ARGS__);                               \
        printf("\n");                                      \
    } while (0)

#define TESTRAND_SEED 12345
#include "testrand.h"
static float uniform(float lo, float hi) { return lo + (hi - lo) * (float)(urand() >> 8) / 16777216.0f; }

/* ---- reference dequantizers, written as the reference's loops ----------- */

static void deq_q4_0(const void *v, float *y, int64_t n)
{
    const slm_block_q4_0 *x = v;
    for (int64_t i = 0; i < n / 32; i++)
        for (int j = 0; j < 16; j++) {
            float d = slm_f16_to_f32(x[i].d);
            y[32 * i + j] = ((x[i].qs[j] & 15) - 8) * d;
            y[32 * i + j + 16] = ((x[i].qs[j] >> 4) - 8) * d;
        }
}

static void deq_q4_1(const void *v, float *y, int64_t n)
{
    const slm_block_q4_1 *x = v;
    for (int64_t i = 0; i < n / 32; i++)
        for (int j = 0; j < 16; j++) {
            float d = slm_f16_to_f32(x[i].d), m = slm_f16_to_f32(x[i].m);
            y[32 * i + j] = (x[i].qs[j] & 15) * d + m;
            y[32 * i + j + 16] = (x[i].qs[j] >> 4) * d + m;
        }
}

static void deq_q5(const uint8_t *qs, const uint8_t *qhb, float d, float m, int off, float *y)
{
    uint32_t qh;
    memcpy(&qh, qhb, 4);
    for (int j = 0; j < 16; j++) {
        int h0 = ((qh >> j) << 4) & 0x10, h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((qs[j] & 15) | h0) - off) * d + m;
        y[j + 16] = (((qs[j] >> 4) | h1) - off) * d + m;
    }
}

static void deq_q5_0(const void *v, float *y, int64_t n)
{
    const slm_block_q5_0 *x = v;
    for (int64_t i = 0; i < n / 32; i++) deq_q5(x[i].qs, x[i].qh, slm_f16_to_f32(x[i].d), 0, 16, y + 32 * i);
}

static void deq_q5_1(const void *v, float *y, int64_t n)
{
    const slm_block_q5_1 *x = v;
    for (int64_t i = 0; i < n / 32; i++)
        deq_q5(x[i].qs, x[i].qh, slm_f16_to_f32(x[i].d), slm_f16_to_f32(x[i].m), 0, y + 32 * i);
}

static void deq_q8_0(const void *v, float *y, int64_t n)
{
    const slm_block_q8_0 *x = v;
    for (int64_t i = 0; i < n / 32; i++)
        for (int j = 0; j < 32; j++) y[32 * i + j] = x[i].qs[j] * slm_f16_to_f32(x[i].d);
}

static void deq_q2_K(const void *v, float *y, int64_t n)
{
    const slm_block_q2_K *x = v;
    for (int64_t i = 0; i < n / 256; i++) {
        float d = slm_f16_to_f32(x[i].d), mn = slm_f16_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        int is = 0;
        for (int c = 0; c < 256; c += 128, q += 32)
            for (int shift = 0; shift < 8; shift += 2)
                for (int half = 0; half < 2; half++) {
                    uint8_t sc = x[i].scales[is++];
                    for (int l = 0; l < 16; l++)
                        *y++ = d * (sc & 15) * ((q[l + 16 * half] >> shift) & 3) - mn * (sc >> 4);
                }
    }
}

static void deq_q3_K(const void *v, float *y, int64_t n)
{
    const slm_block_q3_K *x = v;
    for (int64_t i = 0; i < n / 256; i++) {
        uint32_t aux[4];
        memcpy(aux, x[i].scales, 12);
        uint32_t tmp = aux[2];
        aux[2] = ((aux[0] >> 4) & 0x0f0f0f0f) | (((tmp >> 4) & 0x03030303) << 4);
        aux[3] = ((aux[1] >> 4) & 0x0f0f0f0f) | (((tmp >> 6) & 0x03030303) << 4);
        aux[0] = (aux[0] & 0x0f0f0f0f) | (((tmp >> 0) & 0x03030303) << 4);
        aux[1] = (aux[1] & 0x0f0f0f0f) | (((tmp >> 2) & 0x03030303) << 4);
        const int8_t *sc = (const int8_t *)aux;
        float d = slm_f16_to_f32(x[i].d);
        const uint8_t *q = x[i].qs;
        uint8_t m = 1;
        int is = 0;
        for (int c = 0; c < 256; c += 128, q += 32)
            for (int shift = 0; shift < 8; shift += 2, m <<= 1)
                for (int half = 0; half < 2; half++) {
                    float dl = d * (sc[is++] - 32);
                    for (int l = 16 * half; l < 16 * half + 16; l++)
                        *y++ = dl * (((q[l] >> shift) & 3) - ((x[i].hmask[l] & m) ? 0 : 4));
                }
    }
}

static void scale_min_k4(int j, const uint8_t *q, float *d, float *m)
{
    if (j < 4) {
        *d = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
        *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
    }
}

static void deq_q4_K(const void *v, float *y, int64_t n)
{
    const slm_block_q4_K *x = v;
    for (int64_t i = 0; i < n / 256; i++) {
        float d = slm_f16_to_f32(x[i].d), mn = slm_f16_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        for (int j = 0, is = 0; j < 256; j += 64, q += 32, is += 2) {
            float s1, m1, s2, m2;
            scale_min_k4(is, x[i].scales, &s1, &m1);
            scale_min_k4(is + 1, x[i].scales, &s2, &m2);
            for (int l = 0; l < 32; l++) *y++ = d * s1 * (q[l] & 15) - mn * m1;
            for (int l = 0; l < 32; l++) *y++ = d * s2 * (q[l] >> 4) - mn * m2;
        }
    }
}

static void deq_q5_K(const void *v, float *y, int64_t n)
{
    const slm_block_q5_K *x = v;
    for (int64_t i = 0; i < n / 256; i++) {
        float d = slm_f16_to_f32(x[i].d), mn = slm_f16_to_f32(x[i].dmin);
        const uint8_t *q = x[i].qs;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < 256; j += 64, q += 32, is += 2, u1 <<= 2, u2 <<= 2) {
            float s1, m1, s2, m2;
            scale_min_k4(is, x[i].scales, &s1, &m1);
            scale_min_k4(is + 1, x[i].scales, &s2, &m2);
            for (int l = 0; l < 32; l++) *y++ = d * s1 * ((q[l] & 15) + (x[i].qh[l] & u1 ? 16 : 0)) - mn * m1;
            for (int l = 0; l < 32; l++) *y++ = d * s2 * ((q[l] >> 4) + (x[i].qh[l] & u2 ? 16 : 0)) - mn * m2;
        }
    }
}

static void deq_q6_K(const void *v, float *y, int64_t n)
{
    const slm_block_q6_K *x = v;
    for (int64_t i = 0; i < n / 256; i++) {
        float d = slm_f16_to_f32(x[i].d);
        const uint8_t *ql = x[i].ql, *qh = x[i].qh;
        const int8_t *sc = x[i].scales;
        for (int c = 0; c < 256; c += 128, y += 128, ql += 64, qh += 32, sc += 8)
            for (int l = 0; l < 32; l++) {
                int is = l / 16;
                y[l] = d * sc[is] * ((int8_t)((ql[l] & 15) | ((qh[l] & 3) << 4)) - 32);
                y[l + 32] = d * sc[is + 2] * ((int8_t)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4)) - 32);
                y[l + 64] = d * sc[is + 4] * ((int8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
                y[l + 96] = d * sc[is + 6] * ((int8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
            }
    }
}

static void deq_f16(const void *v, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = slm_f16_to_f32(((const slm_f16 *)v)[i]);
}
static void deq_bf16(const void *v, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = slm_bf16_to_f32(((const slm_bf16 *)v)[i]);
}
static void deq_f32(const void *v, float *y, int64_t n) { memcpy(y, v, (size_t)n * 4); }

typedef struct {
    slm_dtype t;
    const char *name;
    int bs;
    size_t ts;
    void (*deq)(const void *, float *, int64_t);
    void (*lib_deq)(const void *, float *, int64_t);  /* csrc/quant's, cross-checked */
    size_t dfield[2];   /* offsets of the f16 scale fields (0 = none) */
    int nd;
} wtype;

#define OFF(type, f) offsetof(type, f)
static const wtype WTYPES[] = {
    {SLM_DTYPE_Q4_0, "q4_0", 32, 18, deq_q4_0, slm_dequantize_q4_0, {OFF(slm_block_q4_0, d)}, 1},
    {SLM_DTYPE_Q4_1, "q4_1", 32, 20, deq_q4_1, slm_dequantize_q4_1, {OFF(slm_block_q4_1, d), OFF(slm_block_q4_1, m)}, 2},
    {SLM_DTYPE_Q5_0, "q5_0", 32, 22, deq_q5_0, slm_dequantize_q5_0, {OFF(slm_block_q5_0, d)}, 1},
    {SLM_DTYPE_Q5_1, "q5_1", 32, 24, deq_q5_1, slm_dequantize_q5_1, {OFF(slm_block_q5_1, d), OFF(slm_block_q5_1, m)}, 2},
    {SLM_DTYPE_Q8_0, "q8_0", 32, 34, deq_q8_0, slm_dequantize_q8_0, {OFF(slm_block_q8_0, d)}, 1},
    {SLM_DTYPE_Q2_K, "q2_K", 256, 84, deq_q2_K, slm_dequantize_q2_K, {OFF(slm_block_q2_K, d), OFF(slm_block_q2_K, dmin)}, 2},
    {SLM_DTYPE_Q3_K, "q3_K", 256, 110, deq_q3_K, slm_dequantize_q3_K, {OFF(slm_block_q3_K, d)}, 1},
    {SLM_DTYPE_Q4_K, "q4_K", 256, 144, deq_q4_K, slm_dequantize_q4_K, {OFF(slm_block_q4_K, d), OFF(slm_block_q4_K, dmin)}, 2},
    {SLM_DTYPE_Q5_K, "q5_K", 256, 176, deq_q5_K, slm_dequantize_q5_K, {OFF(slm_block_q5_K, d), OFF(slm_block_q5_K, dmin)}, 2},
    {SLM_DTYPE_Q6_K, "q6_K", 256, 210, deq_q6_K, slm_dequantize_q6_K, {OFF(slm_block_q6_K, d)}, 1},
    {SLM_DTYPE_F16, "f16", 1, 2, deq_f16, NULL, {0}, 0},
    {SLM_DTYPE_BF16, "bf16", 1, 2, deq_bf16, NULL, {0}, 0},
    {SLM_DTYPE_F32, "f32", 1, 4, deq_f32, NULL, {0}, 0},
};
#define N_WTYPES (int)(sizeof WTYPES / sizeof WTYPES[0])

static int is_kquant(slm_dtype t) { return t >= SLM_DTYPE_Q2_K && t <= SLM_DTYPE_Q6_K; }

/* n random weights: random code bytes, scales in a sane range */
static void fill_weights(const wtype *w, void *dst, int64_t n)
{
    unsigned char *p = dst;
    if (w->t == SLM_DTYPE_F32) {
        for (int64_t i = 0; i < n; i++) ((float *)dst)[i] = uniform(-1, 1);
        return;
    }
    if (w->t == SLM_DTYPE_F16 || w->t == SLM_DTYPE_BF16) {
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = w->t == SLM_DTYPE_F16 ? slm_f32_to_f16(uniform(-1, 1))
                                                         : slm_f32_to_bf16(uniform(-1, 1));
        return;
    }
    for (int64_t b = 0; b < n / w->bs; b++, p += w->ts) {
        for (size_t i = 0; i < w->ts; i++) p[i] = (unsigned char)urand();
        for (int k = 0; k < w->nd; k++) {
            /* the second field of q4_1/q5_1 is the (signed) block minimum */
            float v = k == 1 && !is_kquant(w->t) ? uniform(-0.5f, 0.5f) : uniform(0.001f, 0.05f);
            slm_f16 h = slm_f32_to_f16(v);
            memcpy(p + w->dfield[k], &h, 2);
        }
    }
}

static void fill_acts(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) x[i] = uniform(-1, 1) * (i % 7 == 0 ? 3.0f : 1.0f);
}

/* bound on |sum w (x - encoded x)| for the activation type, plus 1e-5 of
 * sum |w x| for the float accumulation */
static double act_bound(slm_dtype act, const float *w, const float *x, int64_t n, slm_dtype wt)
{
    double b = 0, s = 0;
    int bs = act == SLM_DTYPE_Q8_K ? 256 : 32;
    for (int64_t i = 0; i < n; i++) s += fabs((double)w[i] * x[i]);
    if (act == SLM_DTYPE_F32) return 1e-5 * s + 1e-9;
    if (act == SLM_DTYPE_F16 || act == SLM_DTYPE_BF16) {
        double rel = act == SLM_DTYPE_F16 ? 1.0 / 2048 : 1.0 / 256;
        return rel * s + 1e-5 * s + 1e-9;
    }
    for (int64_t i0 = 0; i0 < n; i0 += bs) {
        double amax = 0, sw = 0;
        for (int64_t i = i0; i < i0 + bs; i++) {
            amax = fmax(amax, fabs(x[i]));
            sw += fabs(w[i]);
        }
        /* rounding to the step d = amax/127 (d itself rounded to f16 for
         * q8_0/q8_1: up to 127 * d * 2^-11 more) */
        b += sw * amax * (0.5 / 127 + (act == SLM_DTYPE_Q8_K ? 0 : 1.0 / 2048));
        /* q8_1's block sum s = f16(d * sum(q)) is used for the minimum:
         * m = the block's smallest weight, bounded by max |w| */
        if (act == SLM_DTYPE_Q8_1) {
            double mw = 0;
            for (int64_t i = i0; i < i0 + bs; i++) mw = fmax(mw, fabs(w[i]));
            b += mw * 32 * amax / 1024;
        }
    }
    (void)wt;
    return b + 1e-5 * s + 1e-9;
}

static size_t row_bytes(const wtype *w, int64_t n) { return (size_t)(n / w->bs) * w->ts; }

static size_t act_row_bytes(slm_dtype act, int64_t n)
{
    switch (act) {
    case SLM_DTYPE_Q8_0: return (size_t)(n / 32) * sizeof(slm_block_q8_0);
    case SLM_DTYPE_Q8_1: return (size_t)(n / 32) * sizeof(slm_block_q8_1);
    case SLM_DTYPE_Q8_K: return (size_t)(n / 256) * sizeof(slm_block_q8_K);
    case SLM_DTYPE_F16: case SLM_DTYPE_BF16: return (size_t)n * 2;
    default: return (size_t)n * 4;
    }
}

static void test_act_encoders(void)
{
    const slm_dtype acts[] = {SLM_DTYPE_Q8_0, SLM_DTYPE_Q8_1, SLM_DTYPE_Q8_K, SLM_DTYPE_F16};
    if (!slm_cpu_has_avx2()) {
        printf("skip: no AVX2/FMA/F16C, AVX2 encoders not tested\n");
        return;
    }
    enum { N = 256 * 8 };
    static float x[N];
    static unsigned char a[N * 4], b[N * 4];
    for (int k = 0; k < 4; k++) {
        int same = 1;
        for (int trial = 0; trial < 50; trial++) {
            fill_acts(x, N);
            if (trial == 1) memset(x, 0, 256 * sizeof(float));              /* all-zero blocks */
            if (trial == 2) { x[5] = 2.5f; x[9] = -2.5f; x[300] = -4; x[301] = 4; } /* ties of |max| */
            if (trial == 3)                                                  /* exact halves */
                for (int i = 0; i < N; i++) x[i] = (float)((int)(urand() % 255) - 127) * 0.5f;
            size_t nb = act_row_bytes(acts[k], N);
            memset(a, 0, nb);
            memset(b, 0, nb);
            slm_act_quant_generic(acts[k])(x, a, N);
            slm_act_quant_avx2(acts[k])(x, b, N);
            if (memcmp(a, b, nb) != 0) {
                same = 0;
                printf("  encoder %d differs on trial %d\n", (int)acts[k], trial);
                break;
            }
        }
        CHECK(same, "AVX2 activation encoder for dtype %d matches the generic bytes", (int)acts[k]);
    }
}

/* The q8_0/q8_1 activation encoders follow the reference's run-time
 * encoding (codes x * 127 / amax, halves to even), not its weight quantizer
 * (x / d, halves away from zero): a block where the two differ. */
static void test_act_runtime_rule(void)
{
    float x[32] = {127.0f, 2.5f, -3.5f, 0.5f, -0.5f, 1.5f};
    slm_block_q8_0 a, w;
    slm_block_q8_1 b;
    slm_act_quant_generic(SLM_DTYPE_Q8_0)(x, &a, 32);
    slm_act_quant_generic(SLM_DTYPE_Q8_1)(x, &b, 32);
    slm_quantize_q8_0(x, &w, 32);
    CHECK(a.qs[0] == 127 && a.qs[1] == 2 && a.qs[2] == -4 && a.qs[3] == 0 && a.qs[4] == 0 &&
          a.qs[5] == 2 && slm_f16_to_f32(a.d) == 1.0f,
          "q8_0 activations round halves to even (%d %d %d %d %d %d)", a.qs[0], a.qs[1], a.qs[2],
          a.qs[3], a.qs[4], a.qs[5]);
    CHECK(memcmp(a.qs, b.qs, 32) == 0 && slm_f16_to_f32(b.s) == 127.0f,
          "q8_1 activations: same codes, s = d * sum (%g)", (double)slm_f16_to_f32(b.s));
    CHECK(w.qs[1] == 3 && w.qs[3] == 1, "the weight quantizer rounds halves away from zero");
}

static void test_dequantizers(void)
{
    enum { N = 256 * 4 };
    static unsigned char w[N * 4];
    static float a[N], b[N];
    for (int k = 0; k < N_WTYPES; k++) {
        const wtype *t = &WTYPES[k];
        if (!t->lib_deq) continue;
        fill_weights(t, w, N);
        t->deq(w, a, N);
        t->lib_deq(w, b, N);
        CHECK(memcmp(a, b, sizeof a) == 0, "%s: csrc/quant dequantizer agrees with the test's", t->name);
    }
}

static void test_vec_dots(void)
{
    enum { MAXN = 256 * 48 };
    static unsigned char w[MAXN * 4], act[MAXN * 4];
    static float x[MAXN], wf[MAXN];
    int have_avx2 = slm_cpu_has_avx2();
    for (int k = 0; k < N_WTYPES; k++) {
        const wtype *t = &WTYPES[k];
        const slm_vecdot_traits *tr = slm_vecdot_traits_get(t->t);
        CHECK(tr != NULL, "%s has a vec_dot", t->name);
        if (!tr) continue;
        int gen_ok = 1, avx_ok = 1, bitexact = 1;
        double worst = 0;
        for (int trial = 0; trial < 40; trial++) {
            int64_t nblk = trial == 0 ? 1 : 1 + urand() % (MAXN / t->bs / (t->bs == 1 ? 8 : 1));
            int64_t n = nblk * t->bs;
            if (t->bs == 1 && trial > 1 && trial % 3 == 0) n = 1 + urand() % 77; /* odd tails */
            fill_weights(t, w, n);
            fill_acts(x, n);
            t->deq(w, wf, n);
            if (tr->act_type == SLM_DTYPE_F32) memcpy(act, x, (size_t)n * 4);
            else slm_act_quant_generic(tr->act_type)(x, act, n);
            double ref = 0;
            for (int64_t i = 0; i < n; i++) ref += (double)wf[i] * x[i];
            float g;
            tr->dot_generic(n, &g, w, act);
            double bound = act_bound(tr->act_type, wf, x, n, t->t);
            if (fabs(g - ref) > bound) {
                gen_ok = 0;
                printf("  %s n=%lld generic %.9g ref %.9g bound %.3g\n", t->name, (long long)n, g, ref, bound);
            }
            worst = fmax(worst, fabs(g - ref) / bound);
            if (have_avx2 && tr->dot_avx2) {
                float v;
                tr->dot_avx2(n, &v, w, act);
                double s = 0;
                for (int64_t i = 0; i < n; i++) s += fabs((double)wf[i] * x[i]);
                if (memcmp(&v, &g, 4) != 0) bitexact = 0;
                if (fabs(v - g) > 1e-5 * s + 1e-9) {
                    avx_ok = 0;
                    printf("  %s n=%lld avx2 %.9g generic %.9g\n", t->name, (long long)n, v, g);
                }
            }
        }
        CHECK(gen_ok, "%s: generic vec_dot within the activation-encoding bound of the scalar reference (worst %.2f of bound)",
              t->name, worst);
        if (have_avx2 && tr->dot_avx2) {
            CHECK(avx_ok, "%s: AVX2 vec_dot matches generic", t->name);
            if (is_kquant(t->t)) CHECK(bitexact, "%s: AVX2 vec_dot bit-identical to generic", t->name);
        }
    }
    if (!have_avx2) printf("skip: no AVX2/FMA/F16C, AVX2 vec_dots not tested\n");
}

/* four-row kernels: bit-identical to four one-row calls */
/* the AVX2 activation encoding (f32 rows are read as they are) */
static void encode(slm_dtype act, const float *x, unsigned char *y, int64_t n)
{
    if (act == SLM_DTYPE_F32) memcpy(y, x, sizeof(float) * (size_t)n);
    else slm_act_quant_avx2(act)(x, y, n);
}

static void test_vec_dot4(void)
{
    enum { MAXN = 256 * 20 };
    static unsigned char w[MAXN * 4], act[4][MAXN * 4], act1[MAXN * 4];
    static float x[4][MAXN];
    if (!slm_cpu_has_avx2()) return;
    for (int k = 0; k < N_WTYPES; k++) {
        const wtype *t = &WTYPES[k];
        const slm_vecdot_traits *tr = slm_vecdot_traits_get(t->t);
        if (!tr || !tr->dot4_avx2) continue;
        /* f32, f16 (no blocks) also get lengths with 8-element and scalar tails */
        const int tails = t->bs == 1;
        int same = 1;
        for (int trial = 0; trial < 20; trial++) {
            int64_t n = (trial == 0 ? 1 : 1 + urand() % (MAXN / 256 - 1)) * 256;
            if (tails && trial % 3 == 1) n += 8 + trial % 8;
            fill_weights(t, w, n);
            for (int r = 0; r < 4; r++) {
                fill_acts(x[r], n);
                encode(tr->act_type, x[r], act[r], n);
            }
            float s4[4], s1, s0[4];
            tr->dot4_avx2(n, s4, w, act[0], sizeof act[0]);
            for (int r = 0; r < 4; r++) {
                encode(tr->act_type, x[r], act1, n);
                tr->dot_avx2(n, &s1, w, act1);
                same &= memcmp(&s1, &s4[r], 4) == 0;
            }
            /* stride 0: one row four times (matmul's rows left over) */
            tr->dot4_avx2(n, s0, w, act[2], 0);
            for (int r = 0; r < 4; r++) same &= memcmp(&s0[r], &s4[2], 4) == 0;
        }
        CHECK(same, "%s: four-row AVX2 kernel bit-identical to four one-row calls", t->name);
    }
}

/* The side values of q8_0 activation rows (lda bytes apart) for packed
 * tiles: each block's scale as a float and the sum of its codes, written
 * out here from the block format. */
static const slm_q8_0_side *q8_sides(const void *A, size_t lda, int rows, int64_t K)
{
    static slm_q8_0_side side[SLM_GEMM_MAX_C * 1024 / 32];
    const int64_t nb = K / 32;
    for (int c = 0; c < rows; c++)
        for (int64_t b = 0; b < nb; b++) {
            const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)((const unsigned char *)A + c * lda) + b;
            int32_t sum = 0;
            for (int i = 0; i < 32; i++) sum += a->qs[i];
            side[c * nb + b] = (slm_q8_0_side){slm_f16_to_f32(a->d), sum};
        }
    return side;
}

/* Tile kernels (gemm.h): every tile shape gives each output the bits of the
 * generic one-output chain, AVX2 and generic alike; the chain is within
 * float rounding of a double dot of the encoded operands; the float
 * kernels' encoders round as the scalar conversions do. */
static const wtype *wtype_of(slm_dtype t)
{
    for (int k = 0; k < N_WTYPES; k++)
        if (WTYPES[k].t == t) return &WTYPES[k];
    return NULL;
}

static void test_gemm_tiles(void)
{
    enum { MAXK = 1024, MAXR = SLM_GEMM_MAX_R, MAXC = SLM_GEMM_MAX_C };
    static const slm_dtype types[4] = {SLM_DTYPE_F16, SLM_DTYPE_BF16, SLM_DTYPE_Q4_0, SLM_DTYPE_F32};
    static unsigned char W[MAXR][MAXK * 4], A[MAXC][MAXK * 4], A1[MAXK * 4];
    static float X[MAXC][MAXK], wf[MAXK], af[MAXK];
    static const int64_t Ks[] = {32, 96, 576, 1024};
    for (int t = 0; t < 4; t++) {
        const slm_dtype ty = types[t];
        const int f32 = ty == SLM_DTYPE_F32;   /* activations read as they are */
        const wtype *wt = wtype_of(ty);
        const slm_gemm_kernel *gen = slm_gemm_get_generic(ty);
        const slm_gemm_kernel *avx = slm_kernels_use_avx2() ? slm_gemm_get(ty) : NULL;
        int same_gen = 1, same_avx = 1, close = 1, enc = 1, packed = 1;
        const size_t ldw = MAXK * 4, lda = MAXK * 4;
        for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
            const int64_t K = Ks[ki];
            for (int r = 0; r < gen->tile_r; r++) fill_weights(wt, W[r], K);
            for (int c = 0; c < gen->tile_c; c++) {
                fill_acts(X[c], K);
                if (f32) {
                    memcpy(A[c], X[c], sizeof(float) * (size_t)K);
                    continue;
                }
                if (!gen->act) {
                    slm_act_quant_generic(SLM_DTYPE_Q8_0)(X[c], A[c], K);
                    continue;
                }
                /* row 0 first gets overflow, subnormal and -0 for the
                 * encoder check only */
                for (int pass = 0; pass < (c == 0 ? 2 : 1); pass++) {
                    if (c == 0 && pass == 0) { X[0][3] = 65520.0f; X[0][5] = 1e-6f; X[0][7] = -0.0f; }
                    if (c == 0 && pass == 1) fill_acts(X[0], K);
                    float *y = (float *)(void *)A[c];
                    gen->act(X[c], y, K);
                    for (int64_t i = 0; i < K; i++) {
                        const float r = ty == SLM_DTYPE_F16 ? slm_f16_to_f32(slm_f32_to_f16(X[c][i]))
                                                            : slm_bf16_to_f32(slm_f32_to_bf16(X[c][i]));
                        enc &= memcmp(&r, &y[i], 4) == 0;
                    }
                    if (avx) {
                        avx->act(X[c], (float *)(void *)A1, K);
                        enc &= memcmp(A[c], A1, sizeof(float) * (size_t)K) == 0;
                    }
                }
            }
            /* one output at a time: the specification */
            float one[MAXC][MAXR];
            for (int c = 0; c < gen->tile_c; c++) {
                if (gen->act || f32) memcpy(af, A[c], sizeof(float) * (size_t)K);
                else deq_q8_0(A[c], af, K);
                for (int r = 0; r < gen->tile_r; r++) {
                    gen->tile(K, W[r], ldw, 1, A[c], lda, 1, &one[c][r], 1);
                    wt->deq(W[r], wf, K);
                    double ref = 0, mag = 0;
                    for (int64_t i = 0; i < K; i++) {
                        ref += (double)wf[i] * af[i];
                        mag += fabs((double)wf[i] * af[i]);
                    }
                    /* a chain of K/8 (floats) or K/32 (blocks) roundings */
                    close &= fabs(one[c][r] - ref) <= (double)(K / 8 + 3) * 0x1p-24 * mag;
                }
            }
            for (int nr = 1; nr <= gen->tile_r; nr++)
                for (int nc = 1; nc <= gen->tile_c; nc++) {
                    float out[MAXC][MAXR];
                    memset(out, 0xff, sizeof out);
                    gen->tile(K, W, ldw, nr, A, lda, nc, out[0], MAXR);
                    for (int c = 0; c < nc; c++) same_gen &= memcmp(out[c], one[c], sizeof(float) * nr) == 0;
                    if (avx) {
                        memset(out, 0xff, sizeof out);
                        avx->tile(K, W, ldw, nr, A, lda, nc, out[0], MAXR);
                        for (int c = 0; c < nc; c++) same_avx &= memcmp(out[c], one[c], sizeof(float) * nr) == 0;
                        /* nothing written past the tile */
                        for (int c = 0; c < MAXC; c++)
                            for (int r = 0; r < MAXR; r++)
                                if (c >= nc || r >= nr) same_avx &= isnan(out[c][r]);
                    }
                }
            /* packed batch path: both packings give the same bytes, and
             * the packed tiles the same bits as one output at a time */
            if (gen->pack) {
                static _Alignas(64) unsigned char P[2][MAXK / 32 * 288 + 64];
                const size_t pbytes = (size_t)(K / gen->k_multiple) * gen->pack_block_bytes;
                memset(P, 0x5a, sizeof P);
                gen->pack(K, W, ldw, P[0]);
                if (avx) {
                    memset(P[1], 0xa5, sizeof P[1]);
                    avx->pack(K, W, ldw, P[1]);
                    packed &= memcmp(P[0], P[1], pbytes) == 0 && P[1][pbytes] == 0xa5;
                }
                packed &= P[0][pbytes] == 0x5a;
                for (int nc = 1; nc <= gen->tile_c; nc++)
                    for (int v = 0; v < (avx ? 2 : 1); v++) {
                        float out[MAXC][MAXR];
                        memset(out, 0xff, sizeof out);
                        (v ? avx : gen)->ptile(K, P[0], gen->tile_r, A, lda, q8_sides(A, lda, MAXC, K), nc,
                                               out[0], MAXR);
                        for (int c = 0; c < MAXC; c++)
                            packed &= c < nc ? memcmp(out[c], one[c], sizeof(float) * gen->tile_r) == 0
                                             : isnan(out[c][0]);
                    }
            }
        }
        const char *name = wt->name;
        if (gen->pack)
            CHECK(packed, "%s packed panels: generic and AVX2 pack alike, packed tiles (%d x 1..%d) "
                  "bit-identical to one output at a time", name, gen->tile_r, gen->tile_c);
        if (gen->act) CHECK(enc, "%s tile activations: generic and AVX2 round as the scalar conversion", name);
        CHECK(close, "%s tile chain within float rounding of a double dot of the encoded operands", name);
        CHECK(same_gen, "%s generic tiles (1..%d x 1..%d) bit-identical to one output at a time", name,
              gen->tile_r, gen->tile_c);
        if (avx)
            CHECK(same_avx, "%s AVX2 tiles (1..%d x 1..%d) bit-identical to the generic chain, nothing written outside",
                  name, avx->tile_r, avx->tile_c);
    }
    /* q8_0, q5_0, q4_K: AVX2 tiles only, each output the AVX2 vec_dot's bits */
    static const slm_dtype lane_types[3] = {SLM_DTYPE_Q8_0, SLM_DTYPE_Q5_0, SLM_DTYPE_Q4_K};
    for (int t = 0; t < 3 && slm_kernels_use_avx2(); t++) {
        const wtype *wt = wtype_of(lane_types[t]);
        const slm_gemm_kernel *g = slm_gemm_get(lane_types[t]);
        int same = g && !slm_gemm_get_generic(lane_types[t]);
        const slm_dtype act = slm_vecdot_traits_get(lane_types[t])->act_type;
        static const int64_t Kk[] = {256, 512, 1024};   /* K-quants: whole super-blocks */
        const int kquant = g && g->k_multiple == 256;
        const size_t nk = kquant ? sizeof Kk / sizeof Kk[0] : sizeof Ks / sizeof Ks[0];
        for (size_t ki = 0; ki < nk && same; ki++) {
            const int64_t K = kquant ? Kk[ki] : Ks[ki];
            const size_t ldw = MAXK * 4, lda = MAXK * 4;
            for (int r = 0; r < g->tile_r; r++) fill_weights(wt, W[r], K);
            for (int c = 0; c < g->tile_c; c++) {
                fill_acts(X[c], K);
                slm_act_quant_fn(act)(X[c], A[c], K);
            }
            for (int nr = 1; nr <= g->tile_r; nr++)
                for (int nc = 1; nc <= g->tile_c; nc++) {
                    float out[MAXC][MAXR];
                    memset(out, 0xff, sizeof out);
                    g->tile(K, W, ldw, nr, A, lda, nc, out[0], MAXR);
                    for (int c = 0; c < MAXC; c++)
                        for (int r = 0; r < MAXR; r++) {
                            if (c >= nc || r >= nr) {
                                same &= isnan(out[c][r]);
                                continue;
                            }
                            float s1;
                            slm_vecdot_fn(lane_types[t])(K, &s1, W[r], A[c]);
                            same &= memcmp(&s1, &out[c][r], 4) == 0;
                        }
                }
            /* the packed batch path: the same bits */
            if (g->pack) {
                static _Alignas(64) unsigned char P[MAXK / 256 * sizeof(slm_q4_Kx8)];
                g->pack(K, W, ldw, P);
                for (int nc = 1; nc <= g->tile_c; nc++) {
                    float out[MAXC][MAXR];
                    memset(out, 0xff, sizeof out);
                    g->ptile(K, P, g->tile_r, A, lda, g->q8_side ? q8_sides(A, lda, MAXC, K) : NULL, nc,
                             out[0], MAXR);
                    for (int c = 0; c < MAXC; c++)
                        for (int r = 0; r < g->tile_r; r++) {
                            if (c >= nc) {
                                same &= isnan(out[c][r]);
                                continue;
                            }
                            float s1;
                            slm_vecdot_fn(lane_types[t])(K, &s1, W[r], A[c]);
                            same &= memcmp(&s1, &out[c][r], 4) == 0;
                        }
                }
            }
        }
        CHECK(same, "%s AVX2 tiles (1..%d x 1..%d%s): each output the AVX2 vec_dot's bits, nothing written outside",
              wt->name, g ? g->tile_r : 0, g ? g->tile_c : 0, g && g->pack ? ", packed too" : "");
    }

    /* K not a multiple of 8: the one-row dot path, still right */
    enum { K = 20, N = 5, M = 6 };
    uint16_t w[N * K];
    float x[M * K], out[M * N];
    for (int i = 0; i < N * K; i++) w[i] = slm_f32_to_f16(uniform(-1.0f, 1.0f));
    fill_acts(x, M * K);
    int ok = slm_matmul_raw(NULL, out, w, SLM_DTYPE_F16, K * 2, x, M, N, K, NULL) == SLM_OK;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double ref = 0;
            for (int i = 0; i < K; i++)
                ref += (double)slm_f16_to_f32(w[n * K + i]) * slm_f16_to_f32(slm_f32_to_f16(x[m * K + i]));
            ok &= fabs(out[m * N + n] - ref) < 1e-4;
        }
    CHECK(ok, "f16 matmul with K = 20 (no tile path) matches double dots");

    /* vecdot_order: each output is slm_vecdot_fn's dot of the f16-encoded row */
    enum { K2 = 64 };
    uint16_t w2[N * K2], a2[K2];
    float x2[M * K2], o2[M * N], tiled[M * N];
    for (int i = 0; i < N * K2; i++) w2[i] = slm_f32_to_f16(uniform(-1.0f, 1.0f));
    fill_acts(x2, M * K2);
    slm_matmul_part part = {o2, w2, SLM_DTYPE_F16, K2 * 2, N, 1, NULL};
    ok = slm_matmul_multi(NULL, &part, 1, x2, M, K2, NULL) == SLM_OK;
    ok &= slm_matmul_raw(NULL, tiled, w2, SLM_DTYPE_F16, K2 * 2, x2, M, N, K2, NULL) == SLM_OK;
    int differs = 0;
    for (int m = 0; m < M; m++) {
        slm_act_quant_fn(SLM_DTYPE_F16)(x2 + m * K2, a2, K2);
        for (int n = 0; n < N; n++) {
            float s1;
            slm_vecdot_fn(SLM_DTYPE_F16)(K2, &s1, w2 + n * K2, a2);
            ok &= memcmp(&s1, &o2[m * N + n], 4) == 0;
            differs |= memcmp(&tiled[m * N + n], &o2[m * N + n], 4) != 0;
        }
    }
    CHECK(ok, "f16 matmul part with vecdot_order: the bits of slm_vecdot_fn per output");
    CHECK(differs, "f16 tile order and vec_dot order are distinguishable on these inputs");
}

/* fused products: each part exactly as slm_matmul_raw computes it alone,
 * also when parts need different activation encodings */
static void test_matmul_multi(void)
{
    static const slm_dtype types[4] = {SLM_DTYPE_Q5_0, SLM_DTYPE_Q8_0, SLM_DTYPE_Q4_K, SLM_DTYPE_Q8_0};
    static const int64_t Ns[4] = {24, 8, 8, 33};
    const int64_t K = 512;
    slm_pool *pool = slm_pool_new(2, NULL);
    int ok = pool != NULL;
    for (int mi = 0; mi < 3 && ok; mi++) {
        const int64_t M = mi == 0 ? 1 : mi == 1 ? 7 : 16;
        float *X = malloc(sizeof(float) * (size_t)(M * K));
        fill_acts(X, M * K);
        slm_matmul_part parts[4];
        float *outs[4], *refs[4];
        unsigned char *Ws[4];
        for (int i = 0; i < 4; i++) {
            const wtype *t = NULL;
            for (int k = 0; k < N_WTYPES; k++)
                if (WTYPES[k].t == types[i]) t = &WTYPES[k];
            size_t rb = row_bytes(t, K);
            Ws[i] = malloc(rb * (size_t)Ns[i]);
            for (int64_t n = 0; n < Ns[i]; n++) fill_weights(t, Ws[i] + n * rb, K);
            outs[i] = malloc(sizeof(float) * (size_t)(M * Ns[i]));
            refs[i] = malloc(sizeof(float) * (size_t)(M * Ns[i]));
            parts[i] = (slm_matmul_part){outs[i], Ws[i], types[i], rb, Ns[i], 0, NULL};
            ok &= slm_matmul_raw(pool, refs[i], Ws[i], types[i], rb, X, M, Ns[i], K, NULL) == SLM_OK;
        }
        ok &= slm_matmul_multi(pool, parts, 4, X, M, K, NULL) == SLM_OK;
        for (int i = 0; i < 4; i++) {
            ok &= memcmp(outs[i], refs[i], sizeof(float) * (size_t)(M * Ns[i])) == 0;
            free(Ws[i]);
            free(outs[i]);
            free(refs[i]);
        }
        free(X);
    }
    slm_error err;
    ok &= slm_matmul_multi(pool, NULL, 0, NULL, 1, K, &err) == SLM_EINVAL;
    CHECK(ok, "fused matmul (q5_0|q8_0|q4_K|q8_0, M = 1, 7, 16) equals the parts computed alone");
    slm_pool_free(pool);
}

/* vecdot_order keeps f32 batches off OpenBLAS: every row has the bits of
 * the one-row kernel, at 1-3 threads, with the four-row kernel's rows and
 * the rows left over */
static void test_matmul_f32_vecdot_order(void)
{
    enum { M = 7, N = 70, K = 200 };
    static float W[N * K], X[M * K], out[M * N], one[N];
    for (int i = 0; i < N * K; i++) W[i] = (float)(urand() % 2001) / 1000.0f - 1;
    fill_acts(X, M * K);
    slm_pool *pools[3] = {NULL, slm_pool_new(2, NULL), slm_pool_new(3, NULL)};
    int ok = 1;
    for (int p = 0; p < 3; p++) {
        slm_matmul_part part = {out, W, SLM_DTYPE_F32, K * sizeof(float), N, 1, NULL};
        ok &= slm_matmul_multi(pools[p], &part, 1, X, M, K, NULL) == SLM_OK;
        for (int m = 0; m < M; m++) {
            part.out = one;
            ok &= slm_matmul_multi(pools[p], &part, 1, X + m * K, 1, K, NULL) == SLM_OK;
            ok &= memcmp(one, out + m * N, sizeof one) == 0;
        }
    }
    CHECK(ok, "f32 matmul in vec_dot order: batch rows bit-identical to M = 1 (1-3 threads)");
    for (int p = 1; p < 3; p++) slm_pool_free(pools[p]);
}

/* SLM_MATMUL_ORDER_TILES: f32 weights in the tiles' order at every M:
 * every row has the bits of the generic one-output chain, at 1-3 threads,
 * one row (decode segments) and batches alike */
static void test_matmul_f32_tiles(void)
{
    enum { M = 7, N = 70, K = 200 };
    static float W[N * K], X[M * K], out[M * N], one[N];
    for (int i = 0; i < N * K; i++) W[i] = (float)(urand() % 2001) / 1000.0f - 1;
    fill_acts(X, M * K);
    const slm_gemm_kernel *gen = slm_gemm_get_generic(SLM_DTYPE_F32);
    slm_pool *pools[3] = {NULL, slm_pool_new(2, NULL), slm_pool_new(3, NULL)};
    int ok = gen != NULL;
    for (int p = 0; p < 3 && ok; p++) {
        slm_matmul_part part = {out, W, SLM_DTYPE_F32, K * sizeof(float), N, SLM_MATMUL_ORDER_TILES, NULL};
        ok &= slm_matmul_multi(pools[p], &part, 1, X, M, K, NULL) == SLM_OK;
        for (int m = 0; m < M; m++) {
            part.out = one;
            ok &= slm_matmul_multi(pools[p], &part, 1, X + m * K, 1, K, NULL) == SLM_OK;
            ok &= memcmp(one, out + m * N, sizeof one) == 0;
            for (int n = 0; n < N; n++) {
                float e;
                gen->tile(K, W + n * K, 0, 1, X + m * K, 0, 1, &e, 1);
                ok &= memcmp(&e, &one[n], 4) == 0;
            }
        }
    }
    CHECK(ok, "f32 matmul in the tiles' order: batch rows and single rows carry the generic chain's bits (1-3 threads)");
    for (int p = 1; p < 3; p++) slm_pool_free(pools[p]);
}

/* matmul from inside a pool job: each thread its own product */
typedef struct {
    slm_pool *pool;
    const unsigned char *W;
    const float *X;
    float *out[4];
    int64_t M, N, K;
    int st[4];
} nested_ctx;

static void nested_fn(void *vctx, int ith, int nth)
{
    nested_ctx *c = vctx;
    c->st[ith] = slm_matmul_raw(c->pool, c->out[ith], c->W, SLM_DTYPE_Q4_K,
                                (size_t)(c->K / 256) * sizeof(slm_block_q4_K), c->X, c->M, c->N, c->K, NULL);
}

static void test_matmul_nested(void)
{
    enum { M = 5, N = 70, K = 512 };
    static unsigned char W[N * (K / 256) * sizeof(slm_block_q4_K)];
    static float X[M * K], ref[M * N], outs[3][M * N];
    slm_pool *pool = slm_pool_new(3, NULL);
    for (int64_t n = 0; n < N; n++) fill_weights(&WTYPES[7], W + n * (K / 256) * sizeof(slm_block_q4_K), K);
    fill_acts(X, M * K);
    int ok = pool && slm_matmul_raw(pool, ref, W, SLM_DTYPE_Q4_K, (K / 256) * sizeof(slm_block_q4_K), X, M, N, K,
                                    NULL) == SLM_OK;
    nested_ctx c = {pool, W, X, {outs[0], outs[1], outs[2]}, M, N, K, {1, 1, 1}};
    slm_pool_run(pool, 3, nested_fn, &c);
    for (int i = 0; i < 3; i++) ok &= c.st[i] == SLM_OK && memcmp(outs[i], ref, sizeof ref) == 0;
    CHECK(ok, "matmul called from inside a pool job runs serially with the same results");
    slm_pool_free(pool);
}

/* matmul against per-element reference dots */
static void test_matmul(void)
{
    static const int64_t shapes[][3] = {{1, 1, 256}, {1, 37, 512}, {3, 5, 256}, {17, 9, 512},
                                        {20, 33, 256}, {4, 64, 768}, {1, 300, 1024}, {9, 200, 256}};
    slm_pool *pools[3] = {NULL, slm_pool_new(2, NULL), slm_pool_new(3, NULL)};
    for (int k = 0; k < N_WTYPES; k++) {
        const wtype *t = &WTYPES[k];
        int ok = 1;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            const int64_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            size_t wrb = row_bytes(t, K) + (s % 2 ? t->ts : 0);   /* padded rows too */
            unsigned char *W = malloc(wrb * (size_t)N);
            float *X = malloc(sizeof(float) * (size_t)(M * K));
            float *out = malloc(sizeof(float) * (size_t)(M * N));
            float *wf = malloc(sizeof(float) * (size_t)K);
            for (int64_t n = 0; n < N; n++) fill_weights(t, W + n * wrb, K);
            fill_acts(X, M * K);
            for (int p = 0; p < 3; p++) {
                memset(out, 0xff, sizeof(float) * (size_t)(M * N));
                slm_error err;
                slm_status st = slm_matmul_raw(pools[p], out, W, t->t, wrb, X, M, N, K, &err);
                if (st != SLM_OK) {
                    ok = 0;
                    printf("  %s: %s\n", t->name, err.msg);
                    continue;
                }
                const slm_vecdot_traits *tr = slm_vecdot_traits_get(t->t);
                /* a row's result does not depend on its batch: each row
                 * alone (M = 1, the one-row kernel) gives the same bits
                 * (not f32, whose batches go to OpenBLAS) */
                for (int64_t m = 0; m < M && M > 1 && t->t != SLM_DTYPE_F32; m++) {
                    float *o1 = malloc(sizeof(float) * (size_t)N);
                    if (!o1 || slm_matmul_raw(pools[p], o1, W, t->t, wrb, X + m * K, 1, N, K, &err) ||
                        memcmp(o1, out + m * N, sizeof(float) * (size_t)N)) {
                        if (ok)
                            printf("  %s M=%lld N=%lld K=%lld pool %d: row %lld differs from M=1\n", t->name,
                                   (long long)M, (long long)N, (long long)K, p, (long long)m);
                        ok = 0;
                    }
                    free(o1);
                }
                for (int64_t n = 0; n < N; n++) {
                    t->deq(W + n * wrb, wf, K);
                    for (int64_t m = 0; m < M; m++) {
                        double ref = 0;
                        for (int64_t i = 0; i < K; i++) ref += (double)wf[i] * X[m * K + i];
                        double bound = act_bound(tr->act_type, wf, X + m * K, K, t->t);
                        if (!(fabs(out[m * N + n] - ref) <= bound)) {
                            if (ok)
                                printf("  %s M=%lld N=%lld K=%lld pool %d: out[%lld][%lld] = %g, ref %g\n",
                                       t->name, (long long)M, (long long)N, (long long)K, p,
                                       (long long)m, (long long)n, out[m * N + n], ref);
                            ok = 0;
                        }
                    }
                }
            }
            free(W);
            free(X);
            free(out);
            free(wf);
        }
        CHECK(ok, "%s: matmul (1-3 threads, tiles, padded rows) matches reference dots, rows as with M = 1", t->name);
    }
    slm_error err;
    float o[4], xx[256];
    unsigned char ww[256 * 4] = {0};
    CHECK(slm_matmul_raw(NULL, o, ww, SLM_DTYPE_Q4_0, 18, xx, 1, 1, 100, &err) == SLM_EINVAL,
          "K not a multiple of the block size is refused");
    CHECK(slm_matmul_raw(NULL, o, ww, SLM_DTYPE_I8, 256, xx, 1, 1, 256, &err) == SLM_EUNSUPPORTED,
          "i8 weights refused: %s", err.msg);
    CHECK(slm_matmul_raw(NULL, o, ww, SLM_DTYPE_Q8_0, 10, xx, 1, 1, 256, &err) == SLM_EINVAL,
          "row stride shorter than a row is refused");
    for (int p = 0; p < 3; p++) slm_pool_free(pools[p]);
}

static void test_ops(void)
{
    enum { R = 3, N = 96 };
    static float x[R * N], w[N], b[N], y[R * N];
    fill_acts(x, R * N);
    fill_acts(w, N);
    fill_acts(b, N);

    slm_ops_rmsnorm(y, x, w, R, N, 1e-5f);
    double err = 0;
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int i = 0; i < N; i++) ss += (double)x[r * N + i] * x[r * N + i];
        double sc = 1 / sqrt(ss / N + 1e-5);
        for (int i = 0; i < N; i++) err = fmax(err, fabs(y[r * N + i] - x[r * N + i] * sc * w[i]));
    }
    CHECK(err < 1e-5, "rmsnorm (max err %g)", err);

    slm_ops_layernorm(y, x, w, b, R, N, 1e-5f);
    err = 0;
    for (int r = 0; r < R; r++) {
        double m = 0, v = 0;
        for (int i = 0; i < N; i++) m += x[r * N + i];
        m /= N;
        for (int i = 0; i < N; i++) v += (x[r * N + i] - m) * (x[r * N + i] - m);
        v /= N;
        for (int i = 0; i < N; i++)
            err = fmax(err, fabs(y[r * N + i] - ((x[r * N + i] - m) / sqrt(v + 1e-5) * w[i] + b[i])));
    }
    CHECK(err < 1e-5, "layernorm (max err %g)", err);

    memcpy(y, x, sizeof y);
    y[N + 3] = -INFINITY;
    for (int i = 0; i < N; i++) y[2 * N + i] = -INFINITY;
    slm_ops_softmax(y, R, N);
    err = 0;
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < N; i++) mx = fmax(mx, x[i]);
    for (int i = 0; i < N; i++) s += exp(x[i] - mx);
    for (int i = 0; i < N; i++) err = fmax(err, fabs(y[i] - exp(x[i] - mx) / s));
    CHECK(err < 1e-6, "softmax (max err %g)", err);
    CHECK(y[N + 3] == 0 && y[2 * N] == 0 && y[3 * N - 1] == 0, "softmax: -inf gives 0, masked row zeros");

    /* RoPE: 2 tokens, 3 heads of 16, rotating 12 dims */
    enum { T = 2, H = 3, D = 16, NR = 12 };
    static float q[T * H * D], q0[T * H * D];
    int64_t pos[T] = {7, 41};
    /* frequency factors (Llama 3 / LongRoPE) divide each pair's angle, the
     * attention factor multiplies cos and sin; without them: plain RoPE */
    static const float ff[NR / 2] = {1.0f, 1.5f, 3.25f, 8.0f, 32.0f, 0.75f};
    for (int variant = 0; variant < 4; variant++)
    for (int mode = 0; mode < 2; mode++) {
        const int use_ff = variant & 1;
        const float af = variant & 2 ? 1.1952286f : 1.0f;
        fill_acts(q0, T * H * D);
        memcpy(q, q0, sizeof q);
        slm_rope_params rp = {.mode = (slm_rope_mode)mode, .n_rot = NR, .freq_base = 10000.0f,
                              .freq_scale = 0.5f, .freq_factors = use_ff ? ff : NULL,
                              .attn_factor = variant & 2 ? af : 0.0f};
        slm_ops_rope(q, T, H, D, pos, &rp);
        err = 0;
        for (int t = 0; t < T; t++)
            for (int h = 0; h < H; h++) {
                const float *src = q0 + (t * H + h) * D;
                const float *dst = q + (t * H + h) * D;
                for (int i = 0; i < NR / 2; i++) {
                    double th = pos[t] * 0.5 * pow(10000.0, -2.0 * i / NR) / (use_ff ? ff[i] : 1.0);
                    int a = mode ? i : 2 * i, bb = mode ? i + NR / 2 : 2 * i + 1;
                    err = fmax(err, fabs(dst[a] - af * (src[a] * cos(th) - src[bb] * sin(th))));
                    err = fmax(err, fabs(dst[bb] - af * (src[a] * sin(th) + src[bb] * cos(th))));
                }
                for (int i = NR; i < D; i++) err = fmax(err, fabs(dst[i] - src[i]));
            }
        CHECK(err < 1e-4, "rope %s%s%s (max err %g)", mode ? "neox" : "normal",
              use_ff ? " with factors" : "", variant & 2 ? " with attn factor" : "", err);
    }

    /* soft cap and scaled add */
    for (int i = 0; i < N; i++) x[i] = uniform(-80, 80);
    slm_ops_softcap(y, x, N, 30.0f);
    err = 0;
    for (int i = 0; i < N; i++) err = fmax(err, fabs(y[i] - 30.0 * tanh(x[i] / 30.0)));
    CHECK(err < 1e-5, "softcap (max err %g)", err);
    static float a2[N];
    for (int i = 0; i < N; i++) a2[i] = uniform(-3, 3);
    slm_ops_add_scaled(y, a2, x, 0.22f, N);
    err = 0;
    for (int i = 0; i < N; i++) err = fmax(err, fabs(y[i] - (a2[i] + (double)x[i] * 0.22f)));
    CHECK(err < 1e-5, "add_scaled (max err %g)", err);

    for (int i = 0; i < N; i++) x[i] = uniform(-6, 6);
    slm_ops_silu(y, x, N);
    err = 0;
    for (int i = 0; i < N; i++) err = fmax(err, fabs(y[i] - x[i] / (1 + exp(-x[i]))));
    CHECK(err < 1e-5, "silu (max err %g)", err);
    slm_ops_gelu(y, x, N);
    err = 0;
    for (int i = 0; i < N; i++)
        err = fmax(err, fabs(y[i] - 0.5 * x[i] * (1 + tanh(sqrt(2 / M_PI) * (x[i] + 0.044715 * pow(x[i], 3))))));
    CHECK(err < 1e-5, "gelu tanh (max err %g)", err);
    /* the reference's table GELU: the formula at f16(x), rounded to f16
     * (within one f16 step of the double formula there, or 4e-7 where the
     * float formula's 1 + tanh cancels), 0 below -10 and x above 10;
     * generic and AVX2 the same bits */
    for (int i = 0; i < N; i++) x[i] = uniform(-12, 12);
    x[0] = -10.0f; x[1] = 10.0f; x[2] = -10.5f; x[3] = 11.0f; x[4] = 0.0f; x[5] = 1e-6f;
    static float y2[N];
    const int was_generic = !slm_kernels_use_avx2();
    slm_kernels_force_generic(1);
    slm_ops_gelu_f16(y2, x, N);
    slm_kernels_force_generic(0);
    slm_ops_gelu_f16(y, x, N);
    slm_kernels_force_generic(was_generic);
    err = 0;
    int same = memcmp(y, y2, N * sizeof(float)) == 0;
    for (int i = 0; i < N; i++) {
        double v = slm_f16_to_f32(slm_f32_to_f16(x[i]));
        double g = x[i] <= -10 ? 0 : x[i] >= 10 ? x[i] : 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
        double ulp = fmax(fabs(g) * 0x1p-10, 4e-7);
        err = fmax(err, fabs(y[i] - g) / ulp);
    }
    CHECK(err <= 1.0 && same, "gelu f16 table (max err %g f16 steps, generic == avx2: %d)", err, same);
    for (int i = 0; i < N; i++) x[i] = uniform(-6, 6);
    slm_ops_gelu_erf(y, x, N);
    err = 0;
    for (int i = 0; i < N; i++) err = fmax(err, fabs(y[i] - 0.5 * x[i] * (1 + erf(x[i] / sqrt(2)))));
    CHECK(err < 1e-5, "gelu erf (max err %g)", err);
}

/* the AVX2 ops against the generic ones, extremes included */
static void test_ops_avx2(void)
{
    if (!slm_cpu_has_avx2()) {
        printf("skip: no AVX2, AVX2 ops not tested\n");
        return;
    }
    enum { R = 4, N = 203 };
    static float x[R * N], w[N], g[R * N], v[R * N];
    for (int i = 0; i < R * N; i++) x[i] = uniform(-12, 12);
    x[0] = -100; x[1] = 100; x[2] = -88; x[3] = 89; x[4] = 0; x[5] = -1e-30f;
    for (int i = 0; i < N; i++) w[i] = uniform(-2, 2);
    double err;
    const char *names[] = {"silu", "gelu", "softmax", "rmsnorm"};
    for (int op = 0; op < 4; op++) {
        for (int pass = 0; pass < 2; pass++) {
            float *y = pass ? v : g;
            slm_kernels_force_generic(!pass);
            memcpy(y, x, sizeof x);
            if (op == 2) y[N + 7] = -INFINITY;
            switch (op) {
            case 0: slm_ops_silu(y, x, R * N); break;
            case 1: slm_ops_gelu(y, x, R * N); break;
            case 2: slm_ops_softmax(y, R, N); break;
            default: slm_ops_rmsnorm(y, x, w, R, N, 1e-6f); break;
            }
        }
        slm_kernels_force_generic(0);
        err = 0;
        int finite = 1;
        for (int i = 0; i < R * N; i++) {
            finite &= isfinite(v[i]);
            /* relative, except that 1 + tanh(u) in the generic gelu loses
             * up to 1e-7 |x| by cancellation for negative x */
            double scale = fabs(g[i]) + (op < 2 ? 0.03 * fabs(x[i]) : 0) + 1e-6;
            err = fmax(err, fabs(v[i] - g[i]) / scale);
        }
        CHECK(finite && err < 4e-6, "AVX2 %s matches generic (max rel err %.2g)", names[op], err);
    }
}

int main(void)
{
    printf("AVX2 kernels: %s\n", slm_cpu_has_avx2() ? "yes" : "no");
    test_act_encoders();
    test_act_runtime_rule();
    test_dequantizers();
    test_vec_dots();
    test_vec_dot4();
    /* the AVX2 tier's tiles (AVX-512 kernels, whose packed layouts may
     * differ, have their own tests: test_gemm_*_avx512) */
    slm_kernels_set_level(SLM_KERNELS_AVX2);
    test_gemm_tiles();
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    test_matmul();
    test_matmul_nested();
    test_matmul_f32_vecdot_order();
    test_matmul_f32_tiles();
    test_matmul_multi();
    printf("generic kernels:\n");
    slm_kernels_force_generic(1);
    test_matmul();
    slm_kernels_force_generic(0);
    test_ops();
    slm_kernels_force_generic(1);
    printf("generic ops:\n");
    test_ops();
    slm_kernels_force_generic(0);
    test_ops_avx2();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
