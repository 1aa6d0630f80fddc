/* The K-quant super-block formats: Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and the
 * Q8_K activation blocks. One super-block holds 256 elements of a row.
 *
 * Reference followed: ggml's quantize_row_<t>_ref and dequantize_row_<t>
 * (ggml-quants.c), i.e. what llama-quantize writes when it is given no
 * importance matrix. The quantizers search each sub-block's scale (and
 * minimum) with the reference's least-squares searches, quantize those
 * scales to 4, 6 or 8 bits against one fp16 super-block scale, then
 * requantize every element against the rounded scales. To come out byte for
 * byte the same, every float expression keeps the reference's operation
 * order and float32 types, accumulations run in index order, and rounding
 * uses the same add-a-magic-number trick (round to nearest, ties to even).
 *
 * Element order inside a super-block (blocks.h): for Q2_K/Q3_K/Q6_K the
 * 256 elements are two halves of 128; in a half, element 32*k + l (k = 0..3,
 * l = 0..31) sits in byte l of the half's quant bytes at bit position 2k
 * (Q2_K/Q3_K) or nibble/2-bit-group k (Q6_K). For Q4_K/Q5_K, chunk c of 64
 * elements keeps element l in the low nibble of byte 32c + l and element
 * 32 + l in its high nibble. */
#include "quant.h"

#include <math.h>
#include <string.h>

/* Smaller than any meaningful group maximum: the group is treated as zero. */
#define GROUP_MAX_EPS 1e-15f

/* Round to nearest, ties to even, for |f| <= 2^22: adding 1.5 * 2^23 leaves
 * the integer in the low mantissa bits. Same results as the reference's
 * rounding (rintf would agree in range, but this is the reference's). */
static inline int round_nearest(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static inline int clamp_int(int v, int lo, int hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* The first element of largest magnitude, with its sign. */
static float signed_absmax(const float *x, int n, float *amax_out)
{
    float amax = 0, max = 0;
    for (int i = 0; i < n; i++) {
        float ax = fabsf(x[i]);
        if (ax > amax) { amax = ax; max = x[i]; }
    }
    *amax_out = amax;
    return max;
}

/* ---- scale searches ------------------------------------------------------ */

/* Symmetric search with weights x^2 (the reference's make_qx_quants with
 * rmse_type 1 and no importance): levels l in [-nmax, nmax-1], stored as
 * l + nmax in L. Starts from iscale = -nmax / max (the largest-magnitude
 * element on the most negative level), then tries the 18 scales
 * -(nmax + 0.1 * is) / max, is = -9..9, keeping the one whose least-squares
 * fit sum(w x l)^2 / sum(w l^2) is largest. Returns the fitted scale. */
static float search_symmetric(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
        float w = x[i] * x[i];
        L[i] = (int8_t)(l + nmax);
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    float scale = suml2 ? sumlx / suml2 : 0.0f;
    float best = scale * sumlx;
    for (int is = -9; is <= 9; is++) {
        if (is == 0) continue;
        iscale = -((float)nmax + 0.1f * (float)is) / max;
        sumlx = suml2 = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
            float w = x[i] * x[i];
            sumlx += w * x[i] * (float)l;
            suml2 += w * (float)l * (float)l;
        }
        if (suml2 > 0 && sumlx * sumlx > best * suml2) {
            for (int i = 0; i < n; i++) {
                int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
                L[i] = (int8_t)(l + nmax);
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    return scale;
}

/* Symmetric 3-bit search (the reference's make_q3_quants with do_rmse):
 * start from iscale = -nmax / max, then up to 5 sweeps of coordinate
 * descent, moving one level at a time to the value that is optimal for the
 * least-squares scale of the others, kept only if the weighted fit improves.
 * Weights are x^2. L gets l + nmax. Returns sum(w x l) / sum(w l^2). */
static float search_q3(int n, int nmax, const float *x, int8_t *L)
{
    float amax;
    const float max = signed_absmax(x, n, &amax);
    if (amax < GROUP_MAX_EPS) {
        memset(L, 0, (size_t)n);
        return 0.f;
    }
    const float iscale = (float)-nmax / max;
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(round_nearest(iscale * x[i]), -nmax, nmax - 1);
        float w = x[i] * x[i];
        L[i] = (int8_t)l;
        sumlx += w * x[i] * (float)l;
        suml2 += w * (float)l * (float)l;
    }
    for (int itry = 0; itry < 5; itry++) {
        int n_changed = 0;
        for (int i = 0; i < n; i++) {
            float w = x[i] * x[i];
            float slx = sumlx - w * x[i] * (float)L[i];
            if (!(slx > 0)) continue;
            float sl2 = suml2 - w * (float)L[i] * (float)L[i];
            int new_l = clamp_int(round_nearest(x[i] * sl2 / slx), -nmax, nmax - 1);
            if (new_l == L[i]) continue;
            slx += w * x[i] * (float)new_l;
            sl2 += w * (float)new_l * (float)new_l;
            if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
                L[i] = (int8_t)new_l;
                sumlx = slx;
                suml2 = sl2;
                n_changed++;
            }
        }
        if (!n_changed) break;
    }
    for (int i = 0; i < n; i++) L[i] = (int8_t)(L[i] + nmax);
    return sumlx / suml2;
}

/* Asymmetric search (the reference's make_qkx2_quants): x ~ scale * l - m
 * with l in [0, nmax] and m >= 0. Starts from the min/max mapping, then for
 * iscale = (rmin + rdelta * is + nmax) / (max - min), is = 0..nstep, takes
 * the weighted least-squares scale and offset of the resulting levels (the
 * offset forced to <= 0), and keeps whichever gives the smallest weighted
 * error (absolute if use_mad, else squared). Returns the scale; *neg_min
 * gets m (the negated offset). L gets the levels; Laux is scratch of n. */
static float search_asym(int n, int nmax, const float *x, const float *w,
                         uint8_t *L, float *neg_min, uint8_t *Laux,
                         float rmin, float rdelta, int nstep, int use_mad)
{
    float min = x[0], max = x[0];
    float sum_w = w[0];
    float sum_x = sum_w * x[0];
    for (int i = 1; i < n; i++) {
        if (x[i] < min) min = x[i];
        if (x[i] > max) max = x[i];
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if (min > 0) min = 0;
    if (max == min) {
        memset(L, 0, (size_t)n);
        *neg_min = -min;
        return 0.f;
    }
    float iscale = (float)nmax / (max - min);
    float scale = 1 / iscale;
    float best_err = 0;
    for (int i = 0; i < n; i++) {
        int l = clamp_int(round_nearest(iscale * (x[i] - min)), 0, nmax);
        L[i] = (uint8_t)l;
        float diff = scale * (float)l + min - x[i];
        diff = use_mad ? fabsf(diff) : diff * diff;
        best_err += w[i] * diff;
    }
    for (int is = 0; is <= nstep; is++) {
        iscale = (rmin + rdelta * (float)is + (float)nmax) / (max - min);
        float sum_l = 0, sum_l2 = 0, sum_xl = 0;
        for (int i = 0; i < n; i++) {
            int l = clamp_int(round_nearest(iscale * (x[i] - min)), 0, nmax);
            Laux[i] = (uint8_t)l;
            sum_l += w[i] * (float)l;
            sum_l2 += w[i] * (float)l * (float)l;
            sum_xl += w[i] * (float)l * x[i];
        }
        float D = sum_w * sum_l2 - sum_l * sum_l;
        if (!(D > 0)) continue;
        float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
        float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
        if (this_min > 0) {
            this_min = 0;
            this_scale = sum_xl / sum_l2;
        }
        float err = 0;
        for (int i = 0; i < n; i++) {
            float diff = this_scale * (float)Laux[i] + this_min - x[i];
            diff = use_mad ? fabsf(diff) : diff * diff;
            err += w[i] * diff;
        }
        if (err < best_err) {
            memcpy(L, Laux, (size_t)n);
            best_err = err;
            scale = this_scale;
            min = this_min;
        }
    }
    *neg_min = -min;
    return scale;
}

/* ---- packing helpers ----------------------------------------------------- */

/* 2-bit fields of 128 levels (each 0..3) into 32 bytes: level 32k + l goes
 * to byte l, bits 2k..2k+1. Shared by Q2_K and the low bits of Q3_K. */
static void pack_2bit_half(const uint8_t *L, uint8_t *qs)
{
    for (int l = 0; l < 32; l++)
        qs[l] = (uint8_t)(L[l] | L[l + 32] << 2 | L[l + 64] << 4 | L[l + 96] << 6);
}

static void k4_get(int j, const uint8_t *q, uint8_t *sc, uint8_t *m)
{
    int s6, m6;
    slm_k4_scale_min(j, q, &s6, &m6);
    *sc = (uint8_t)s6;
    *m = (uint8_t)m6;
}

/* the inverse of slm_k4_scale_min (blocks.h) */
static void put_scale_min_k4(int j, uint8_t *q, uint8_t sc, uint8_t m)
{
    if (j < 4) {
        q[j] = sc;
        q[j + 4] = m;
    } else {
        q[j + 4] = (uint8_t)((sc & 0x0f) | (m & 0x0f) << 4);
        q[j - 4] |= (uint8_t)((sc >> 4) << 6);
        q[j] |= (uint8_t)((m >> 4) << 6);
    }
}

/* Q3_K: sixteen 6-bit scales (stored + 32) in 12 bytes: low nibbles of
 * scales 0..7 in the low nibbles of bytes 0..7, of scales 8..15 in their
 * high nibbles; the top two bits of scale j in byte 8 + j % 4, bits
 * 2 * (j / 4). Returns the signed scale. */
static int get_scale_q3(int j, const uint8_t *q)
{
    int lo = j < 8 ? (q[j] & 0x0f) : (q[j - 8] >> 4);
    int hi = (q[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* ---- Q2_K ---------------------------------------------------------------- */

void slm_quantize_q2_K(const float *x, void *vy, int64_t n)
{
    slm_block_q2_K *y = vy;
    uint8_t L[SLM_QK_K], Laux[16];
    float weights[16], mins[16], scales[16];
    const float q4scale = 15.f;

    for (int64_t i = 0; i < n / SLM_QK_K; i++, x += SLM_QK_K) {
        float max_scale = 0, max_min = 0;
        for (int j = 0; j < 16; j++) {
            for (int l = 0; l < 16; l++) weights[l] = fabsf(x[16 * j + l]);
            scales[j] = search_asym(16, 3, x + 16 * j, weights, L + 16 * j,
                                    &mins[j], Laux, -0.5f, 0.1f, 15, 1);
            if (scales[j] > max_scale) max_scale = scales[j];
            if (mins[j] > max_min) max_min = mins[j];
        }
        /* 4-bit sub-block scales (low nibble) and mins (high nibble) */
        if (max_scale > 0) {
            float iscale = q4scale / max_scale;
            for (int j = 0; j < 16; j++)
                y[i].scales[j] = (uint8_t)round_nearest(iscale * scales[j]);
            y[i].d = slm_f32_to_f16(max_scale / q4scale);
        } else {
            memset(y[i].scales, 0, sizeof y[i].scales);
            y[i].d = slm_f32_to_f16(0.f);
        }
        if (max_min > 0) {
            float iscale = q4scale / max_min;
            for (int j = 0; j < 16; j++)
                y[i].scales[j] |= (uint8_t)(round_nearest(iscale * mins[j]) << 4);
            y[i].dmin = slm_f32_to_f16(max_min / q4scale);
        } else {
            y[i].dmin = slm_f32_to_f16(0.f);
        }
        /* requantize against the rounded scales; a zero scale keeps the
         * search's levels */
        for (int j = 0; j < 16; j++) {
            const float d = slm_f16_to_f32(y[i].d) * (float)(y[i].scales[j] & 0x0f);
            if (!d) continue;
            const float dm = slm_f16_to_f32(y[i].dmin) * (float)(y[i].scales[j] >> 4);
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (uint8_t)clamp_int(round_nearest((x[16 * j + l] + dm) / d), 0, 3);
        }
        pack_2bit_half(L, y[i].qs);
        pack_2bit_half(L + 128, y[i].qs + 32);
    }
}

void slm_dequantize_q2_K(const void *vx, float *y, int64_t n)
{
    const slm_block_q2_K *x = vx;
    for (int64_t i = 0; i < n / SLM_QK_K; i++) {
        const float d = slm_f16_to_f32(x[i].d);
        const float dmin = slm_f16_to_f32(x[i].dmin);
        for (int e = 0; e < SLM_QK_K; e++) {
            const int half = e / 128, k = (e % 128) / 32, l = e % 32;
            const uint8_t sc = x[i].scales[e / 16];
            const float dl = d * (float)(sc & 0x0f), ml = dmin * (float)(sc >> 4);
            const int q = (x[i].qs[32 * half + l] >> (2 * k)) & 3;
            *y++ = dl * (float)q - ml;
        }
    }
}

/* ---- Q3_K ---------------------------------------------------------------- */

void slm_quantize_q3_K(const float *x, void *vy, int64_t n)
{
    slm_block_q3_K *y = vy;
    int8_t L[SLM_QK_K];
    float scales[16];

    for (int64_t i = 0; i < n / SLM_QK_K; i++, x += SLM_QK_K) {
        float max_scale = 0, amax = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = search_q3(16, 4, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > amax) {
                amax = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        /* 6-bit signed sub-block scales: the largest maps to -32 */
        memset(y[i].scales, 0, sizeof y[i].scales);
        if (max_scale) {
            const float iscale = -32.f / max_scale;
            for (int j = 0; j < 16; j++) {
                /* the reference narrows to int8 before clamping */
                int8_t l8 = (int8_t)round_nearest(iscale * scales[j]);
                int l = clamp_int(l8, -32, 31) + 32;
                if (j < 8) y[i].scales[j] = (uint8_t)(l & 0x0f);
                else y[i].scales[j - 8] |= (uint8_t)((l & 0x0f) << 4);
                y[i].scales[8 + j % 4] |= (uint8_t)((l >> 4) << (2 * (j / 4)));
            }
            y[i].d = slm_f32_to_f16(1 / iscale);
        } else {
            y[i].d = slm_f32_to_f16(0.f);
        }
        for (int j = 0; j < 16; j++) {
            const float d = slm_f16_to_f32(y[i].d) * (float)get_scale_q3(j, y[i].scales);
            if (!d) continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(clamp_int(round_nearest(x[16 * j + l] / d), -4, 3) + 4);
        }
        /* levels 0..7: bit 2 into hmask (element e: byte e % 32, bit e / 32),
         * bits 0..1 into qs */
        uint8_t low[SLM_QK_K];
        memset(y[i].hmask, 0, sizeof y[i].hmask);
        for (int e = 0; e < SLM_QK_K; e++) {
            int l = L[e];
            if (l > 3) {
                y[i].hmask[e % 32] |= (uint8_t)(1 << (e / 32));
                l -= 4;
            }
            low[e] = (uint8_t)l;
        }
        pack_2bit_half(low, y[i].qs);
        pack_2bit_half(low + 128, y[i].qs + 32);
    }
}

void slm_dequantize_q3_K(const void *vx, float *y, int64_t n)
{
    const slm_block_q3_K *x = vx;
    for (int64_t i = 0; i < n / SLM_QK_K; i++) {
        const float d_all = slm_f16_to_f32(x[i].d);
        for (int j = 0; j < 16; j++) {
            const float dl = d_all * (float)get_scale_q3(j, x[i].scales);
            for (int t = 0; t < 16; t++) {
                const int e = 16 * j + t;
                const int half = e / 128, k = (e % 128) / 32, l = e % 32;
                const int q = (x[i].qs[32 * half + l] >> (2 * k)) & 3;
                const int h = (x[i].hmask[l] >> (e / 32)) & 1;
                *y++ = dl * (float)(q - (h ? 0 : 4));
            }
        }
    }
}

/* ---- Q4_K and Q5_K ------------------------------------------------------- */

/* Shared first stage of Q4_K/Q5_K: per sub-block of 32, the asymmetric
 * search with weights sqrt(mean(x^2)) + |x|, then 6-bit scales and mins
 * against d = max_scale / 63 and dmin = max_min / 63, then the levels
 * requantized against the rounded values. */
static void quantize_k_asym(const float *x, int nmax, float rmin, int nstep,
                            uint8_t scales_out[SLM_K_SCALE_SIZE],
                            slm_f16 *d_out, slm_f16 *dmin_out, uint8_t L[SLM_QK_K])
{
    uint8_t Laux[32];
    float weights[32], mins[8], scales[8];
    float max_scale = 0, max_min = 0;

    for (int j = 0; j < 8; j++) {
        const float *xb = x + 32 * j;
        float sum_x2 = 0;
        for (int l = 0; l < 32; l++) sum_x2 += xb[l] * xb[l];
        const float av_x = sqrtf(sum_x2 / 32);
        for (int l = 0; l < 32; l++) weights[l] = av_x + fabsf(xb[l]);
        scales[j] = search_asym(32, nmax, xb, weights, L + 32 * j, &mins[j],
                                Laux, rmin, 0.1f, nstep, 0);
        if (scales[j] > max_scale) max_scale = scales[j];
        if (mins[j] > max_min) max_min = mins[j];
    }
    const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
    const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
    for (int j = 0; j < 8; j++) {
        /* the reference narrows to uint8 before clamping to 63 */
        uint8_t ls = (uint8_t)round_nearest(inv_scale * scales[j]);
        uint8_t lm = (uint8_t)round_nearest(inv_min * mins[j]);
        put_scale_min_k4(j, scales_out, ls < 63 ? ls : 63, lm < 63 ? lm : 63);
    }
    *d_out = slm_f32_to_f16(max_scale / 63.f);
    *dmin_out = slm_f32_to_f16(max_min / 63.f);

    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        k4_get(j, scales_out, &sc, &m);
        const float d = slm_f16_to_f32(*d_out) * (float)sc;
        if (!d) continue;
        const float dm = slm_f16_to_f32(*dmin_out) * (float)m;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clamp_int(round_nearest((x[32 * j + l] + dm) / d), 0, nmax);
    }
}

void slm_quantize_q4_K(const float *x, void *vy, int64_t n)
{
    slm_block_q4_K *y = vy;
    uint8_t L[SLM_QK_K];
    for (int64_t i = 0; i < n / SLM_QK_K; i++, x += SLM_QK_K) {
        quantize_k_asym(x, 15, -1.f, 20, y[i].scales, &y[i].d, &y[i].dmin, L);
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                y[i].qs[32 * c + l] = (uint8_t)(L[64 * c + l] | L[64 * c + 32 + l] << 4);
    }
}

void slm_dequantize_q4_K(const void *vx, float *y, int64_t n)
{
    const slm_block_q4_K *x = vx;
    for (int64_t i = 0; i < n / SLM_QK_K; i++) {
        const float d = slm_f16_to_f32(x[i].d);
        const float dmin = slm_f16_to_f32(x[i].dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *q = x[i].qs + 32 * c;
            uint8_t sc, m;
            k4_get(2 * c, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            k4_get(2 * c + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++) *y++ = d1 * (float)(q[l] & 0x0f) - m1;
            for (int l = 0; l < 32; l++) *y++ = d2 * (float)(q[l] >> 4) - m2;
        }
    }
}

void slm_quantize_q5_K(const float *x, void *vy, int64_t n)
{
    slm_block_q5_K *y = vy;
    uint8_t L[SLM_QK_K];
    for (int64_t i = 0; i < n / SLM_QK_K; i++, x += SLM_QK_K) {
        quantize_k_asym(x, 31, -0.5f, 15, y[i].scales, &y[i].d, &y[i].dmin, L);
        /* chunk c of 64: bit 4 of element l in qh[l] bit 2c, of element
         * 32 + l in qh[l] bit 2c + 1 */
        memset(y[i].qh, 0, sizeof y[i].qh);
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                int l1 = L[64 * c + l], l2 = L[64 * c + 32 + l];
                if (l1 > 15) { l1 -= 16; y[i].qh[l] |= (uint8_t)(1 << (2 * c)); }
                if (l2 > 15) { l2 -= 16; y[i].qh[l] |= (uint8_t)(2 << (2 * c)); }
                y[i].qs[32 * c + l] = (uint8_t)(l1 | l2 << 4);
            }
        }
    }
}

void slm_dequantize_q5_K(const void *vx, float *y, int64_t n)
{
    const slm_block_q5_K *x = vx;
    for (int64_t i = 0; i < n / SLM_QK_K; i++) {
        const float d = slm_f16_to_f32(x[i].d);
        const float dmin = slm_f16_to_f32(x[i].dmin);
        for (int c = 0; c < 4; c++) {
            const uint8_t *ql = x[i].qs + 32 * c, *qh = x[i].qh;
            const uint8_t u1 = (uint8_t)(1 << (2 * c)), u2 = (uint8_t)(2 << (2 * c));
            uint8_t sc, m;
            k4_get(2 * c, x[i].scales, &sc, &m);
            const float d1 = d * (float)sc, m1 = dmin * (float)m;
            k4_get(2 * c + 1, x[i].scales, &sc, &m);
            const float d2 = d * (float)sc, m2 = dmin * (float)m;
            for (int l = 0; l < 32; l++)
                *y++ = d1 * (float)((ql[l] & 0x0f) + (qh[l] & u1 ? 16 : 0)) - m1;
            for (int l = 0; l < 32; l++)
                *y++ = d2 * (float)((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
        }
    }
}

/* ---- Q6_K ---------------------------------------------------------------- */

void slm_quantize_q6_K(const float *x, void *vy, int64_t n)
{
    slm_block_q6_K *y = vy;
    int8_t L[SLM_QK_K];
    float scales[16];

    for (int64_t i = 0; i < n / SLM_QK_K; i++, x += SLM_QK_K) {
        float max_scale = 0, max_abs_scale = 0;
        for (int j = 0; j < 16; j++) {
            scales[j] = search_symmetric(16, 32, x + 16 * j, L + 16 * j);
            if (fabsf(scales[j]) > max_abs_scale) {
                max_abs_scale = fabsf(scales[j]);
                max_scale = scales[j];
            }
        }
        if (max_abs_scale < GROUP_MAX_EPS) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* int8 sub-block scales: the largest maps to -128 */
        const float iscale = -128.f / max_scale;
        y[i].d = slm_f32_to_f16(1 / iscale);
        for (int j = 0; j < 16; j++) {
            int s = round_nearest(iscale * scales[j]);
            y[i].scales[j] = (int8_t)(s < 127 ? s : 127);
        }
        for (int j = 0; j < 16; j++) {
            const float d = slm_f16_to_f32(y[i].d) * (float)y[i].scales[j];
            if (!d) continue;
            for (int l = 0; l < 16; l++)
                L[16 * j + l] = (int8_t)(clamp_int(round_nearest(x[16 * j + l] / d), -32, 31) + 32);
        }
        /* levels 0..63: in half h, element 32k + l has its low nibble in
         * ql[64h + l + 32 * (k & 1)] (low nibble for k < 2, high for k >= 2)
         * and its top two bits in qh[32h + l], bits 2k..2k+1 */
        for (int h = 0; h < 2; h++) {
            const int8_t *Lh = L + 128 * h;
            uint8_t *ql = y[i].ql + 64 * h, *qh = y[i].qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((Lh[l] & 0x0f) | (Lh[l + 64] & 0x0f) << 4);
                ql[l + 32] = (uint8_t)((Lh[l + 32] & 0x0f) | (Lh[l + 96] & 0x0f) << 4);
                qh[l] = (uint8_t)((Lh[l] >> 4) | (Lh[l + 32] >> 4) << 2 |
                                  (Lh[l + 64] >> 4) << 4 | (Lh[l + 96] >> 4) << 6);
            }
        }
    }
}

void slm_dequantize_q6_K(const void *vx, float *y, int64_t n)
{
    const slm_block_q6_K *x = vx;
    for (int64_t i = 0; i < n / SLM_QK_K; i++) {
        const float d = slm_f16_to_f32(x[i].d);
        for (int h = 0; h < 2; h++, y += 128) {
            const uint8_t *ql = x[i].ql + 64 * h, *qh = x[i].qh + 32 * h;
            const int8_t *sc = x[i].scales + 8 * h;
            for (int l = 0; l < 32; l++) {
                const int is = l / 16;
                const int q1 = ((ql[l] & 0x0f) | ((qh[l] >> 0) & 3) << 4) - 32;
                const int q2 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2) & 3) << 4) - 32;
                const int q3 = ((ql[l] >> 4) | ((qh[l] >> 4) & 3) << 4) - 32;
                const int q4 = ((ql[l + 32] >> 4) | ((qh[l] >> 6) & 3) << 4) - 32;
                /* (d * scale) * q, in that order */
                y[l] = d * (float)sc[is] * (float)q1;
                y[l + 32] = d * (float)sc[is + 2] * (float)q2;
                y[l + 64] = d * (float)sc[is + 4] * (float)q3;
                y[l + 96] = d * (float)sc[is + 6] * (float)q4;
            }
        }
    }
}

/* ---- Q8_K ---------------------------------------------------------------- */

/* Activation blocks: q = round(-127 / max * x), d = max / -127 as a float32,
 * and bsums[j] = sum of quants 16j..16j+15 for the K-quant dot products.
 * An all-zero block gets d = 0 and zero quants and sums (the reference
 * leaves its sums unset there). */
void slm_quantize_q8_K(const float *x, void *vy, int64_t n)
{
    slm_block_q8_K *y = vy;
    for (int64_t i = 0; i < n / SLM_QK_K; i++, x += SLM_QK_K) {
        float amax;
        const float max = signed_absmax(x, SLM_QK_K, &amax);
        if (!amax) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        const float iscale = -127.f / max;
        for (int j = 0; j < SLM_QK_K; j++) {
            int v = round_nearest(iscale * x[j]);
            y[i].qs[j] = (int8_t)(v < 127 ? v : 127);
        }
        for (int j = 0; j < SLM_QK_K / 16; j++) {
            int sum = 0;
            for (int l = 0; l < 16; l++) sum += y[i].qs[16 * j + l];
            y[i].bsums[j] = (int16_t)sum;
        }
        y[i].d = 1 / iscale;
    }
}

void slm_dequantize_q8_K(const void *vx, float *y, int64_t n)
{
    const slm_block_q8_K *x = vx;
    for (int64_t i = 0; i < n / SLM_QK_K; i++)
        for (int j = 0; j < SLM_QK_K; j++) *y++ = x[i].d * (float)x[i].qs[j];
}
