/* Scalar quantizers and dequantizers: known answers on hand-built blocks,
 * round-trip error bounds on random data, and idempotence of the legacy
 * formats. Byte-exactness against the reference's files is
 * test_quant_fixtures.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "quant/quant.h"

static int passed, failed;

#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        if (cond) passed++;                                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); }    \
    } while (0)

/* Deterministic data: xorshift64* uniform, normals from Box-Muller. */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static double uniform01(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545f4914f6cdd1dull) >> 11) / 9007199254740992.0;
}

static float normal(void)
{
    double u = uniform01(), v = uniform01();
    if (u < 1e-300) u = 1e-300;
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* ---- known answers -------------------------------------------------------- */

static void test_q8_0_known(void)
{
    /* d = 0.0625 (exact in fp16: 0x2c00), so x = q * d and x / d are exact;
     * levels 127, 119, ..., -121 plus two halves to see round-half-away. */
    float x[32];
    int8_t want[32];
    for (int j = 0; j < 32; j++) want[j] = (int8_t)(127 - 8 * j);
    want[1] = 3;              /* x = 2.5 d rounds away from zero to 3 */
    want[2] = -3;             /* x = -2.5 d to -3 */
    for (int j = 0; j < 32; j++) x[j] = (float)want[j] * 0.0625f;
    x[1] = 2.5f * 0.0625f;
    x[2] = -2.5f * 0.0625f;
    slm_block_q8_0 b;
    slm_quantize_q8_0(x, &b, 32);
    CHECK(b.d == 0x2c00, "q8_0 known: d = %#x, want 0x2c00", b.d);
    CHECK(memcmp(b.qs, want, 32) == 0, "q8_0 known: quants differ");
    float y[32];
    slm_dequantize_q8_0(&b, y, 32);
    CHECK(y[0] == 7.9375f && y[1] == 0.1875f && y[31] == -121 * 0.0625f,
          "q8_0 known: dequantized %g %g %g", y[0], y[1], y[31]);
}

static void test_q4_0_known(void)
{
    /* The largest magnitude, 4.0 at element 3, sets d = 4 / -8 = -0.5 and
     * id = -2; level = trunc(x * -2 + 8.5), clamped to 15. */
    static const float xv[32] = {
        0.0f, 1.0f, -1.0f, 4.0f, -3.5f, 1.25f, -3.75f, 0.25f,
        2.0f, -2.0f, 0.75f, -0.75f, 3.0f, -3.0f, 0.5f, -0.5f,
        1.5f, -1.5f, 2.5f, -2.5f, 3.5f, 0.1f, -0.1f, 2.25f,
        -2.25f, 1.75f, -1.75f, 3.25f, -3.25f, 0.0f, -4.0f, 2.75f};
    /* hand-computed: e.g. 1.0 -> 6.5 -> 6, -1.0 -> 10.5 -> 10, -3.75 ->
     * 16 -> 15, -4.0 -> 16.5 -> 15, 0.1 -> 8.3 -> 8, -0.1 -> 8.7 -> 8 */
    static const int lv[32] = {
        8, 6, 10, 0, 15, 6, 15, 8, 4, 12, 7, 10, 2, 14, 7, 9,
        5, 11, 3, 13, 1, 8, 8, 4, 13, 5, 12, 2, 15, 8, 15, 3};
    slm_block_q4_0 b;
    slm_quantize_q4_0(xv, &b, 32);
    CHECK(b.d == 0xb800, "q4_0 known: d = %#x, want 0xb800 (-0.5)", b.d);
    int bad = 0;
    for (int j = 0; j < 16; j++)
        if (b.qs[j] != (uint8_t)(lv[j] | lv[j + 16] << 4)) bad++;
    CHECK(bad == 0, "q4_0 known: %d of 16 bytes differ", bad);
    float y[32];
    slm_dequantize_q4_0(&b, y, 32);
    CHECK(y[3] == 4.0f && y[6] == -3.5f && y[1] == 1.0f && y[30] == -3.5f,
          "q4_0 known: dequantized %g %g %g %g", y[3], y[6], y[1], y[30]);
}

static void test_q4_1_known(void)
{
    /* min -1, max 14: d = 1, m = -1, level = trunc(x + 1 + 0.5) */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j % 16) - 1.0f;
    x[5] = 0.5f;    /* 1.5 + 0.5 = 2 */
    x[6] = 0.49f;   /* 1.49 + 0.5 = 1.99 -> 1 */
    slm_block_q4_1 b;
    slm_quantize_q4_1(x, &b, 32);
    CHECK(b.d == 0x3c00 && b.m == 0xbc00, "q4_1 known: d %#x m %#x", b.d, b.m);
    CHECK(b.qs[0] == 0x00 && b.qs[15] == 0xff && b.qs[5] == 0x52 && b.qs[6] == 0x61,
          "q4_1 known: qs %#x %#x %#x %#x", b.qs[0], b.qs[15], b.qs[5], b.qs[6]);
    float y[32];
    slm_dequantize_q4_1(&b, y, 32);
    CHECK(y[5] == 1.0f && y[21] == 4.0f && y[31] == 14.0f, "q4_1 known: %g %g %g",
          y[5], y[21], y[31]);
}

static void test_q5_0_known(void)
{
    /* max magnitude -8 at element 0: d = -8 / -16 = 0.5, id = 2, level =
     * trunc(2x + 16.5) clamped to 31; bit 4 of element j is bit j of qh */
    float x[32] = {0};
    x[0] = -8.0f;     /* 0.5 -> 0 */
    x[1] = 7.75f;     /* 32 -> 31 */
    x[17] = 0.25f;    /* 17 -> 17: qh bit 17, low nibble 1 */
    x[20] = -0.25f;   /* 16 -> 16 */
    x[31] = -0.5f;    /* 15.5 -> 15 */
    slm_block_q5_0 b;
    slm_quantize_q5_0(x, &b, 32);
    /* elements 0 and 31 are below 16, every other level is >= 16 */
    uint32_t qh = (uint32_t)b.qh[0] | (uint32_t)b.qh[1] << 8 |
                  (uint32_t)b.qh[2] << 16 | (uint32_t)b.qh[3] << 24;
    CHECK(b.d == 0x3800, "q5_0 known: d = %#x", b.d);
    CHECK(qh == 0x7ffffffeu, "q5_0 known: qh = %#x, want 0x7ffffffe", qh);
    /* qs[1]: element 1 (31 -> 0xf) low, element 17 (17 -> 1) high */
    CHECK(b.qs[0] == 0x00 && b.qs[1] == 0x1f && b.qs[4] == 0x00 && b.qs[15] == 0xf0,
          "q5_0 known: qs %#x %#x %#x %#x", b.qs[0], b.qs[1], b.qs[4], b.qs[15]);
    float y[32];
    slm_dequantize_q5_0(&b, y, 32);
    CHECK(y[0] == -8.0f && y[1] == 7.5f && y[17] == 0.5f && y[31] == -0.5f,
          "q5_0 known: %g %g %g %g", y[0], y[1], y[17], y[31]);
}

static void test_q5_1_known(void)
{
    /* min 0, max 31: d = 1, m = 0; level = trunc(x + 0.5) */
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)j;
    x[3] = 2.5f;    /* 3 */
    slm_block_q5_1 b;
    slm_quantize_q5_1(x, &b, 32);
    CHECK(b.d == 0x3c00 && b.m == 0, "q5_1 known: d %#x m %#x", b.d, b.m);
    CHECK(b.qh[0] == 0 && b.qh[1] == 0 && b.qh[2] == 0xff && b.qh[3] == 0xff,
          "q5_1 known: qh %02x%02x%02x%02x", b.qh[0], b.qh[1], b.qh[2], b.qh[3]);
    CHECK(b.qs[3] == 0x33 && b.qs[15] == 0xff, "q5_1 known: qs %#x %#x", b.qs[3], b.qs[15]);
    float y[32];
    slm_dequantize_q5_1(&b, y, 32);
    int bad = 0;
    for (int j = 0; j < 32; j++) bad += y[j] != (float)(j == 3 ? 3 : j);
    CHECK(bad == 0, "q5_1 known: %d values differ", bad);
}

static void test_q8_1_known(void)
{
    float x[32];
    for (int j = 0; j < 32; j++) x[j] = (float)(j - 16) * 0.0625f;
    x[0] = -127 * 0.0625f;     /* d = 0.0625 */
    slm_block_q8_1 b;
    slm_quantize_q8_1(x, &b, 32);
    int sum = 0;
    for (int j = 0; j < 32; j++) sum += b.qs[j];
    /* sum = -127 + sum over j = 1..31 of (j - 16), which is 0 */
    CHECK(sum == -127 && b.d == 0x2c00, "q8_1 known: sum %d d %#x", sum, b.d);
    CHECK(slm_f16_to_f32(b.s) == -127 * 0.0625f, "q8_1 known: s = %g", slm_f16_to_f32(b.s));
}

/* K-quant dequantizers on hand-built blocks; expected values computed from
 * the layouts documented in blocks.h / quant_k.c. */
static void test_k_dequant_known(void)
{
    float y[256];

    slm_block_q2_K q2;
    memset(&q2, 0, sizeof q2);
    q2.d = slm_f32_to_f16(0.25f);
    q2.dmin = slm_f32_to_f16(1.0f);
    q2.scales[12] = 0x35;      /* sub-block 12: scale 5, min 3 */
    q2.qs[40] = 2 << 4;        /* element 200 = half 1, group 2, byte 8 */
    slm_dequantize_q2_K(&q2, y, 256);
    CHECK(y[200] == 0.25f * 5 * 2 - 3 && y[201] == -3.0f && y[0] == 0.0f,
          "q2_K known: %g %g %g", y[200], y[201], y[0]);

    slm_block_q3_K q3;
    memset(&q3, 0, sizeof q3);
    q3.d = slm_f32_to_f16(0.5f);
    /* sub-block 12 scale -5, stored 27 = 0b01'1011: low nibble in the high
     * nibble of byte 4, top bits 01 in byte 8 bits 6..7 */
    q3.scales[4] = 0xb0;
    q3.scales[8] = 0x40;
    q3.qs[40] = 3 << 4;        /* element 200: low bits 3 */
    q3.hmask[8] = 1 << 6;      /* and the high bit: level 7 -> +3 */
    q3.qs[41] = 1 << 4;        /* element 201: low bits 1, no high bit -> -3 */
    slm_dequantize_q3_K(&q3, y, 256);
    CHECK(y[200] == -7.5f && y[201] == 7.5f, "q3_K known: %g %g", y[200], y[201]);
    /* sub-block 0 stores 0 -> scale -32; levels 0 -> -4: 0.5 * -32 * -4 */
    CHECK(y[0] == 64.0f, "q3_K known: y[0] = %g", y[0]);

    slm_block_q4_K q4;
    memset(&q4, 0, sizeof q4);
    q4.d = slm_f32_to_f16(1.0f);
    q4.dmin = slm_f32_to_f16(0.5f);
    q4.scales[1] = 3;          /* sub-block 1: scale 3, min 2 */
    q4.scales[5] = 2;
    /* sub-block 6: scale 45 = 0b10'1101, min 33 = 0b10'0001 */
    q4.scales[10] = 0x1d;
    q4.scales[2] = 0x80;
    q4.scales[6] = 0x80;
    q4.qs[5] = 0x70;           /* element 37 (sub-block 1): level 7 */
    q4.qs[98] = 0x0b;          /* element 194 (sub-block 6): level 11 */
    slm_dequantize_q4_K(&q4, y, 256);
    CHECK(y[37] == 20.0f && y[194] == 478.5f && y[64] == 0.0f,
          "q4_K known: %g %g %g", y[37], y[194], y[64]);

    slm_block_q5_K q5;
    memset(&q5, 0, sizeof q5);
    q5.d = q4.d;
    q5.dmin = q4.dmin;
    memcpy(q5.scales, q4.scales, 12);
    q5.qs[5] = 0x70;
    q5.qs[98] = 0x0b;
    q5.qh[5] = 2;              /* element 37 = chunk 0 high half: bit 1 */
    q5.qh[2] = 1 << 6;         /* element 194 = chunk 3 low half: bit 6 */
    slm_dequantize_q5_K(&q5, y, 256);
    CHECK(y[37] == 3 * 23 - 1.0f && y[194] == 45 * 27 - 16.5f && y[36] == -1.0f,
          "q5_K known: %g %g %g", y[37], y[194], y[36]);

    slm_block_q6_K q6;
    memset(&q6, 0, sizeof q6);
    q6.d = slm_f32_to_f16(0.5f);
    q6.scales[0] = 1;
    q6.scales[2] = 127;
    q6.scales[12] = -3;
    /* element 200 = half 1, group 2, l 8: level 45 = 0b10'1101 */
    q6.ql[64 + 8] = 0xd0;
    q6.qh[32 + 8] = 2 << 4;
    /* element 40 = half 0, group 1, l 8: level 63 */
    q6.ql[40] = 0x0f;
    q6.qh[8] = 3 << 2;
    slm_dequantize_q6_K(&q6, y, 256);
    CHECK(y[200] == -19.5f && y[40] == 1968.5f && y[0] == -16.0f,
          "q6_K known: %g %g %g", y[200], y[40], y[0]);

    slm_block_q8_K q8;
    memset(&q8, 0, sizeof q8);
    q8.d = 0.125f;
    q8.qs[3] = -7;
    slm_dequantize_q8_K(&q8, y, 256);
    CHECK(y[3] == -0.875f && y[4] == 0.0f, "q8_K known: %g", y[3]);
}

static void test_q8_K_sums(void)
{
    float x[512];
    for (int j = 0; j < 512; j++) x[j] = normal();
    slm_block_q8_K b[2];
    slm_quantize_q8_K(x, b, 512);
    int bad = 0, top = 0;
    for (int i = 0; i < 2; i++) {
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int l = 0; l < 16; l++) s += b[i].qs[16 * j + l];
            bad += s != b[i].bsums[j];
        }
        for (int j = 0; j < 256; j++) top += abs(b[i].qs[j]) == 127;
    }
    CHECK(bad == 0, "q8_K: %d bsums wrong", bad);
    CHECK(top >= 2, "q8_K: the largest element of each block maps to +-127");
}

/* ---- round trips ---------------------------------------------------------- */

/* Measured RMS error relative to RMS(x) on this data (normal, plus one
 * offset block, one spike and one zero block): q4_0 0.085, q4_1 0.073,
 * q5_0 0.046, q5_1 0.035, q8_0/q8_1 0.0058, q2_K 0.263, q3_K 0.140,
 * q4_K 0.066, q5_K 0.034, q6_K 0.0185, q8_K 0.0108 (its 256-element blocks
 * share one scale with the spike). The bounds leave about 30 %. */
static const struct { slm_dtype t; double rel_rms; } rt_cases[] = {
    {SLM_DTYPE_Q4_0, 0.11}, {SLM_DTYPE_Q4_1, 0.095}, {SLM_DTYPE_Q5_0, 0.060},
    {SLM_DTYPE_Q5_1, 0.045}, {SLM_DTYPE_Q8_0, 0.0075}, {SLM_DTYPE_Q8_1, 0.0075},
    {SLM_DTYPE_Q2_K, 0.34}, {SLM_DTYPE_Q3_K, 0.18}, {SLM_DTYPE_Q4_K, 0.085},
    {SLM_DTYPE_Q5_K, 0.044}, {SLM_DTYPE_Q6_K, 0.024}, {SLM_DTYPE_Q8_K, 0.014},
};

#define RT_N 8192

static void test_round_trip(void)
{
    float *x = malloc(RT_N * sizeof *x), *y = malloc(RT_N * sizeof *y);
    void *q = malloc(RT_N * 2);
    if (!x || !y || !q) { CHECK(0, "out of memory"); free(x); free(y); free(q); return; }
    for (int i = 0; i < RT_N; i++) x[i] = normal();
    /* a few blocks with an offset, a spike and zeros, where the formats
     * differ most */
    for (int i = 0; i < 256; i++) x[i] += 3.0f;
    x[300] = 25.0f;
    for (int i = 512; i < 768; i++) x[i] = 0.0f;
    for (size_t c = 0; c < sizeof rt_cases / sizeof rt_cases[0]; c++) {
        const slm_dtype_traits *tr = slm_dtype_get((int)rt_cases[c].t);
        tr->from_f32(x, q, RT_N);
        tr->to_f32(q, y, RT_N);
        double se = 0, sx = 0;
        int finite = 1, zeros = 1;
        for (int i = 0; i < RT_N; i++) {
            se += (double)(y[i] - x[i]) * (y[i] - x[i]);
            sx += (double)x[i] * x[i];
            if (!isfinite(y[i])) finite = 0;
            if (i >= 512 && i < 768 && y[i] != 0.0f) zeros = 0;
        }
        double rel = sqrt(se / sx);
        printf("%-5s round trip: rms error / rms = %.4f (bound %.4f)\n", tr->name, rel,
               rt_cases[c].rel_rms);
        CHECK(finite && rel < rt_cases[c].rel_rms, "%s round trip: %.4f", tr->name, rel);
        CHECK(zeros, "%s: an all-zero block does not come back as zeros", tr->name);
    }
    free(x); free(y); free(q);
}

/* Per-block worst case of the 32-element formats: at most half a step (a
 * whole step on the clamped side of Q4_0/Q5_0) plus the fp16 rounding of d
 * and m, relative to the block's largest magnitude. */
static void test_legacy_block_bounds(void)
{
    float x[32 * 64], y[32 * 64];
    _Alignas(16) uint8_t q[34 * 64];
    for (int i = 0; i < 32 * 64; i++) x[i] = normal() * (float)(1 + i / 256);
    static const struct { slm_dtype t; double steps; int levels; int asym; } c[] = {
        {SLM_DTYPE_Q4_0, 1.0, 8, 0}, {SLM_DTYPE_Q5_0, 1.0, 16, 0},
        {SLM_DTYPE_Q4_1, 0.5, 15, 1}, {SLM_DTYPE_Q5_1, 0.5, 31, 1},
        {SLM_DTYPE_Q8_0, 0.5, 127, 0},
    };
    for (size_t k = 0; k < sizeof c / sizeof c[0]; k++) {
        const slm_dtype_traits *tr = slm_dtype_get((int)c[k].t);
        tr->from_f32(x, q, 32 * 64);
        tr->to_f32(q, y, 32 * 64);
        int bad = 0;
        for (int b = 0; b < 64; b++) {
            float mn = x[32 * b], mx = x[32 * b], amax = 0, err = 0;
            for (int j = 0; j < 32; j++) {
                float v = x[32 * b + j];
                if (v < mn) mn = v;
                if (v > mx) mx = v;
                if (fabsf(v) > amax) amax = fabsf(v);
                float e = fabsf(y[32 * b + j] - v);
                if (e > err) err = e;
            }
            double step = c[k].asym ? (mx - mn) / c[k].levels : amax / c[k].levels;
            double bound = c[k].steps * step + amax / 1024.0;
            bad += err > bound;
        }
        CHECK(bad == 0, "%s: %d blocks over the per-block error bound", tr->name, bad);
    }
}

/* quantize(dequantize(quantize(x))) == quantize(x) for the legacy formats:
 * the dequantized block sits exactly on the grid the quantizer picks. Q8_1's
 * s is d * sum(q) with the unrounded d of the first pass, so it may move by
 * an fp16 ulp: only its d and quants are compared. */
static void test_legacy_idempotent(void)
{
    enum { N = 32 * 256 };
    static float x[N], y[N];
    static _Alignas(16) uint8_t q1[N * 2], q2[N * 2];
    for (int i = 0; i < N; i++) x[i] = normal() * (float)(1 + i % 7) + (i % 3 ? 0.0f : 0.5f);
    static const slm_dtype types[] = {SLM_DTYPE_Q4_0, SLM_DTYPE_Q4_1, SLM_DTYPE_Q5_0,
                                      SLM_DTYPE_Q5_1, SLM_DTYPE_Q8_0, SLM_DTYPE_Q8_1};
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        const slm_dtype_traits *tr = slm_dtype_get((int)types[k]);
        size_t bytes = N / 32 * tr->type_size;
        tr->from_f32(x, q1, N);
        tr->to_f32(q1, y, N);
        tr->from_f32(y, q2, N);
        int diff = 0;
        for (size_t b = 0; b < bytes; b += tr->type_size) {
            if (types[k] == SLM_DTYPE_Q8_1) {
                const slm_block_q8_1 *a = (const void *)(q1 + b), *c = (const void *)(q2 + b);
                diff += a->d != c->d || memcmp(a->qs, c->qs, sizeof a->qs) != 0;
            } else {
                diff += memcmp(q1 + b, q2 + b, tr->type_size) != 0;
            }
        }
        CHECK(diff == 0, "%s: %d of %d blocks change when requantized", tr->name, diff, N / 32);
    }
}

static void test_traits_wired(void)
{
    static const int ids[] = {2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    int bad = 0;
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++) {
        const slm_dtype_traits *tr = slm_dtype_get(ids[i]);
        if (!tr || !tr->to_f32 || !tr->from_f32 || !tr->is_quantized) bad++;
    }
    CHECK(bad == 0, "%d quantized dtypes without converters", bad);
}

int main(void)
{
    test_traits_wired();
    test_q8_0_known();
    test_q4_0_known();
    test_q4_1_known();
    test_q5_0_known();
    test_q5_1_known();
    test_q8_1_known();
    test_k_dequant_known();
    test_q8_K_sums();
    test_round_trip();
    test_legacy_block_bounds();
    test_legacy_idempotent();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
