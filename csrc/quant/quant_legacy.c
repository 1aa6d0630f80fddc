/* The 32-element block formats: Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1.
 *
 * Reference followed: ggml's quantize_row_<t>_ref / dequantize_row_<t>
 * (ggml-quants.c). The quantizers must produce the reference's blocks byte
 * for byte, so every float expression below keeps the reference's operation
 * order and types (float32 throughout, no fused multiply-add: the Makefile
 * builds ISO C11, where GCC does not contract), and each scale goes through
 * the same round-to-nearest-even fp16 conversion.
 *
 * Block layout shared by all six (blocks.h): element j of the block is in
 * the low nibble of qs[j] and element j + 16 in the high nibble; for the
 * 5-bit types bit 4 of element j is bit j of the little-endian uint32 qh. */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <string.h>

/* Symmetric 4/5-bit types: the element of largest magnitude, with its sign,
 * maps to the most negative level (-8 or -16), so d = max / -2^(bits-1). */
static float signed_absmax(const float *x, int n)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < n; j++) {
        if (amax < fabsf(x[j])) {        /* first element wins ties */
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    return max;
}

static void min_max(const float *x, int n, float *mn, float *mx)
{
    float lo = FLT_MAX, hi = -FLT_MAX;
    for (int j = 0; j < n; j++) {
        if (x[j] < lo) lo = x[j];
        if (x[j] > hi) hi = x[j];
    }
    *mn = lo;
    *mx = hi;
}

static float abs_max(const float *x, int n)
{
    float amax = 0.0f;
    for (int j = 0; j < n; j++) {
        float a = fabsf(x[j]);
        if (a > amax) amax = a;
    }
    return amax;
}

/* The legacy quantizers round by adding 0.5 (plus the level offset) and
 * truncating toward zero, as the reference's cast does; the shifted value is
 * never below zero, so this is round-half-up. */
static int trunc_level(float v) { return (int)v; }

void slm_quantize_q4_0(const float *x, void *vy, int64_t n)
{
    slm_block_q4_0 *y = vy;
    for (int64_t i = 0; i < n / SLM_QK4_0; i++, x += SLM_QK4_0) {
        const float d = signed_absmax(x, SLM_QK4_0) / -8;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = slm_f32_to_f16(d);
        for (int j = 0; j < SLM_QK4_0 / 2; j++) {
            int q0 = trunc_level(x[j] * id + 8.5f);
            int q1 = trunc_level(x[j + SLM_QK4_0 / 2] * id + 8.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void slm_dequantize_q4_0(const void *vx, float *y, int64_t n)
{
    const slm_block_q4_0 *x = vx;
    for (int64_t i = 0; i < n / SLM_QK4_0; i++, y += SLM_QK4_0) {
        const float d = slm_f16_to_f32(x[i].d);
        for (int j = 0; j < SLM_QK4_0 / 2; j++) {
            y[j] = (float)((x[i].qs[j] & 0x0f) - 8) * d;
            y[j + SLM_QK4_0 / 2] = (float)((x[i].qs[j] >> 4) - 8) * d;
        }
    }
}

void slm_quantize_q4_1(const float *x, void *vy, int64_t n)
{
    slm_block_q4_1 *y = vy;
    for (int64_t i = 0; i < n / SLM_QK4_1; i++, x += SLM_QK4_1) {
        float mn, mx;
        min_max(x, SLM_QK4_1, &mn, &mx);
        const float d = (mx - mn) / 15;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = slm_f32_to_f16(d);
        y[i].m = slm_f32_to_f16(mn);
        for (int j = 0; j < SLM_QK4_1 / 2; j++) {
            int q0 = trunc_level((x[j] - mn) * id + 0.5f);
            int q1 = trunc_level((x[j + SLM_QK4_1 / 2] - mn) * id + 0.5f);
            if (q0 > 15) q0 = 15;
            if (q1 > 15) q1 = 15;
            y[i].qs[j] = (uint8_t)(q0 | (q1 << 4));
        }
    }
}

void slm_dequantize_q4_1(const void *vx, float *y, int64_t n)
{
    const slm_block_q4_1 *x = vx;
    for (int64_t i = 0; i < n / SLM_QK4_1; i++, y += SLM_QK4_1) {
        const float d = slm_f16_to_f32(x[i].d);
        const float m = slm_f16_to_f32(x[i].m);
        for (int j = 0; j < SLM_QK4_1 / 2; j++) {
            y[j] = (float)(x[i].qs[j] & 0x0f) * d + m;
            y[j + SLM_QK4_1 / 2] = (float)(x[i].qs[j] >> 4) * d + m;
        }
    }
}

/* Packs 32 five-bit levels: low nibbles into qs, bit 4 into qh. */
static void pack_q5(const int *q, uint8_t qs[16], uint8_t qh_bytes[4])
{
    uint32_t qh = 0;
    for (int j = 0; j < 16; j++) {
        qs[j] = (uint8_t)((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
        qh |= (uint32_t)((q[j] >> 4) & 1) << j;
        qh |= (uint32_t)((q[j + 16] >> 4) & 1) << (j + 16);
    }
    for (int b = 0; b < 4; b++) qh_bytes[b] = (uint8_t)(qh >> (8 * b));
}

/* The 5-bit level of element j (0..31) of a block. */
static int unpack_q5(const uint8_t qs[16], const uint8_t qh_bytes[4], int j)
{
    uint32_t qh = (uint32_t)qh_bytes[0] | (uint32_t)qh_bytes[1] << 8 |
                  (uint32_t)qh_bytes[2] << 16 | (uint32_t)qh_bytes[3] << 24;
    int lo = j < 16 ? (qs[j] & 0x0f) : (qs[j - 16] >> 4);
    return lo | (int)((qh >> j) & 1) << 4;
}

void slm_quantize_q5_0(const float *x, void *vy, int64_t n)
{
    slm_block_q5_0 *y = vy;
    int q[SLM_QK5_0];
    for (int64_t i = 0; i < n / SLM_QK5_0; i++, x += SLM_QK5_0) {
        const float d = signed_absmax(x, SLM_QK5_0) / -16;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = slm_f32_to_f16(d);
        for (int j = 0; j < SLM_QK5_0; j++) {
            q[j] = trunc_level(x[j] * id + 16.5f);
            if (q[j] > 31) q[j] = 31;
        }
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

void slm_dequantize_q5_0(const void *vx, float *y, int64_t n)
{
    const slm_block_q5_0 *x = vx;
    for (int64_t i = 0; i < n / SLM_QK5_0; i++, y += SLM_QK5_0) {
        const float d = slm_f16_to_f32(x[i].d);
        for (int j = 0; j < SLM_QK5_0; j++)
            y[j] = (float)(unpack_q5(x[i].qs, x[i].qh, j) - 16) * d;
    }
}

void slm_quantize_q5_1(const float *x, void *vy, int64_t n)
{
    slm_block_q5_1 *y = vy;
    int q[SLM_QK5_1];
    for (int64_t i = 0; i < n / SLM_QK5_1; i++, x += SLM_QK5_1) {
        float mn, mx;
        min_max(x, SLM_QK5_1, &mn, &mx);
        const float d = (mx - mn) / 31;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = slm_f32_to_f16(d);
        y[i].m = slm_f32_to_f16(mn);
        /* no clamp, as in the reference: (x - min) * id <= 31 + eps */
        for (int j = 0; j < SLM_QK5_1; j++)
            q[j] = trunc_level((x[j] - mn) * id + 0.5f);
        pack_q5(q, y[i].qs, y[i].qh);
    }
}

void slm_dequantize_q5_1(const void *vx, float *y, int64_t n)
{
    const slm_block_q5_1 *x = vx;
    for (int64_t i = 0; i < n / SLM_QK5_1; i++, y += SLM_QK5_1) {
        const float d = slm_f16_to_f32(x[i].d);
        const float m = slm_f16_to_f32(x[i].m);
        for (int j = 0; j < SLM_QK5_1; j++)
            y[j] = (float)unpack_q5(x[i].qs, x[i].qh, j) * d + m;
    }
}

/* Q8_0: d = absmax / 127, q = round-half-away(x / d). */
void slm_quantize_q8_0(const float *x, void *vy, int64_t n)
{
    slm_block_q8_0 *y = vy;
    for (int64_t i = 0; i < n / SLM_QK8_0; i++, x += SLM_QK8_0) {
        const float d = abs_max(x, SLM_QK8_0) / 127;
        const float id = d ? 1.0f / d : 0.0f;
        y[i].d = slm_f32_to_f16(d);
        for (int j = 0; j < SLM_QK8_0; j++)
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
    }
}

void slm_dequantize_q8_0(const void *vx, float *y, int64_t n)
{
    const slm_block_q8_0 *x = vx;
    for (int64_t i = 0; i < n / SLM_QK8_0; i++, y += SLM_QK8_0) {
        const float d = slm_f16_to_f32(x[i].d);
        for (int j = 0; j < SLM_QK8_0; j++) y[j] = (float)x[i].qs[j] * d;
    }
}

/* Q8_1: as Q8_0, plus s = d * sum(q) with the unrounded float d, which the
 * dot products with Q4_1/Q5_1 use to apply the other side's minimum. */
void slm_quantize_q8_1(const float *x, void *vy, int64_t n)
{
    slm_block_q8_1 *y = vy;
    for (int64_t i = 0; i < n / SLM_QK8_1; i++, x += SLM_QK8_1) {
        const float d = abs_max(x, SLM_QK8_1) / 127;
        const float id = d ? 1.0f / d : 0.0f;
        int sum = 0;
        y[i].d = slm_f32_to_f16(d);
        for (int j = 0; j < SLM_QK8_1; j++) {
            y[i].qs[j] = (int8_t)roundf(x[j] * id);
            sum += y[i].qs[j];
        }
        y[i].s = slm_f32_to_f16((float)sum * d);
    }
}

/* The reference has no Q8_1 dequantizer; the values are q * d (s is derived). */
void slm_dequantize_q8_1(const void *vx, float *y, int64_t n)
{
    const slm_block_q8_1 *x = vx;
    for (int64_t i = 0; i < n / SLM_QK8_1; i++, y += SLM_QK8_1) {
        const float d = slm_f16_to_f32(x[i].d);
        for (int j = 0; j < SLM_QK8_1; j++) y[j] = (float)x[i].qs[j] * d;
    }
}
