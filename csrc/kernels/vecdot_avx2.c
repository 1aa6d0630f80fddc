/* AVX2/FMA/F16C twins of the generic dot products and activation encoders
 * in vecdot.c (same element layouts; see the comments there).
 *
 * Integer block dot products use _mm256_maddubs_epi16 (unsigned 8-bit x
 * signed 8-bit, adjacent pairs summed into 16 bits) followed by
 * _mm256_madd_epi16 (pairs summed into 32 bits, optionally times a scale).
 * maddubs needs one unsigned operand: the unsigned weight codes are used as
 * they are (offsets such as the -32 of q6_K are applied through the
 * activation block sums), and signed codes use the sign trick
 * |w| * (a * sign(w)). No pair sum exceeds 2 * 128 * 127, so no saturation. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "../core/fp16.h"
#include "../quant/blocks.h"
#include "simd_avx2.h"
#include "vecdot.h"

static inline float hmax_ps(__m256 v)
{
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* ---- 32-element blocks ------------------------------------------------ */

void slm_vec_dot_q4_0_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q4_0 *w = vw;
    const slm_block_q8_0 *a = va;
    const int64_t nb = n / SLM_QK4_0;
    /* two blocks per iteration into two accumulators: independent chains */
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m256i q0 = _mm256_sub_epi8(unpack_nibbles(w[b].qs), _mm256_set1_epi8(8));
        __m256i q1 = _mm256_sub_epi8(unpack_nibbles(w[b + 1].qs), _mm256_set1_epi8(8));
        __m256i p0 = dot_i8_i8(q0, load32(a[b].qs));
        __m256i p1 = dot_i8_i8(q1, load32(a[b + 1].qs));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p0), _mm256_set1_ps(f16f(w[b].d) * f16f(a[b].d)), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p1), _mm256_set1_ps(f16f(w[b + 1].d) * f16f(a[b + 1].d)), acc1);
    }
    for (; b < nb; b++) {
        __m256i q = _mm256_sub_epi8(unpack_nibbles(w[b].qs), _mm256_set1_epi8(8));
        __m256i p = dot_i8_i8(q, load32(a[b].qs));
        acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(f16f(w[b].d) * f16f(a[b].d)), acc0);
    }
    *s = hsum_ps(_mm256_add_ps(acc0, acc1));
}

void slm_vec_dot_q4_1_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q4_1 *w = vw;
    const slm_block_q8_1 *a = va;
    __m256 acc = _mm256_setzero_ps();
    float summ = 0;
    for (int64_t b = 0; b < n / SLM_QK4_1; b++) {
        __m256i p = dot_u8_i8(unpack_nibbles(w[b].qs), load32(a[b].qs));
        __m256 d = _mm256_set1_ps(f16f(w[b].d) * f16f(a[b].d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, acc);
        summ += f16f(w[b].m) * f16f(a[b].s);
    }
    *s = hsum_ps(acc) + summ;
}

void slm_vec_dot_q5_0_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q5_0 *w = vw;
    const slm_block_q8_0 *a = va;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / SLM_QK5_0; b++) {
        __m256i q = _mm256_sub_epi8(q5_codes(w[b].qs, w[b].qh), _mm256_set1_epi8(16));
        __m256i p = dot_i8_i8(q, load32(a[b].qs));
        __m256 d = _mm256_set1_ps(f16f(w[b].d) * f16f(a[b].d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, acc);
    }
    *s = hsum_ps(acc);
}

void slm_vec_dot_q5_1_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q5_1 *w = vw;
    const slm_block_q8_1 *a = va;
    __m256 acc = _mm256_setzero_ps();
    float summ = 0;
    for (int64_t b = 0; b < n / SLM_QK5_1; b++) {
        __m256i p = dot_u8_i8(q5_codes(w[b].qs, w[b].qh), load32(a[b].qs));
        __m256 d = _mm256_set1_ps(f16f(w[b].d) * f16f(a[b].d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, acc);
        summ += f16f(w[b].m) * f16f(a[b].s);
    }
    *s = hsum_ps(acc) + summ;
}

void slm_vec_dot_q8_0_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q8_0 *w = vw;
    const slm_block_q8_0 *a = va;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / SLM_QK8_0; b++) {
        __m256i p = dot_i8_i8(load32(w[b].qs), load32(a[b].qs));
        __m256 d = _mm256_set1_ps(f16f(w[b].d) * f16f(a[b].d));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), d, acc);
    }
    *s = hsum_ps(acc);
}

/* ---- K-quants ---------------------------------------------------------- */

/* two i16 scales: the first for the 16 elements of the low 128-bit lane,
 * the second for the high lane */
static inline __m256i scale_pair(int lo, int hi)
{
    return _mm256_set_m128i(_mm_set1_epi16((short)hi), _mm_set1_epi16((short)lo));
}

/* sum over the 16 sub-blocks of bsums[j] * v[j] (v: 16 int16) */
static inline int bsums_dot(const int16_t *bsums, __m256i v)
{
    return hsum_i32(_mm256_madd_epi16(load32(bsums), v));
}

/* sum over 32 elements of scale(sub-block) * u * a, as 8 int32 */
static inline __m256i scaled_dot(__m256i u, __m256i a, __m256i scales16)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, a), scales16);
}

void slm_vec_dot_q2_K_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q2_K *w = vw;
    const slm_block_q8_K *a = va;
    const __m256i m3 = _mm256_set1_epi8(3);
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        const uint8_t *sc = w[b].scales;
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q = load32(w[b].qs + 32 * h);
            for (int k = 0; k < 4; k++) {
                __m256i u = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3);
                int sb = 8 * h + 2 * k;
                acc = _mm256_add_epi32(acc, scaled_dot(u, load32(a[b].qs + 128 * h + 32 * k),
                                                       scale_pair(sc[sb] & 15, sc[sb + 1] & 15)));
            }
        }
        __m128i mins = _mm_and_si128(_mm_srli_epi16(_mm_loadu_si128((const __m128i *)sc), 4),
                                     _mm_set1_epi8(15));
        int msum = bsums_dot(a[b].bsums, _mm256_cvtepu8_epi16(mins));
        sum += a[b].d * (f16f(w[b].d) * (float)hsum_i32(acc) - f16f(w[b].dmin) * (float)msum);
    }
    *s = sum;
}

void slm_vec_dot_q3_K_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q3_K *w = vw;
    const slm_block_q8_K *a = va;
    const __m256i m3 = _mm256_set1_epi8(3), m1 = _mm256_set1_epi8(1);
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        /* the 16 6-bit scales (vecdot.c q3_scales): low nibbles of bytes
         * 0..7 then their high nibbles; high 2 bits of scale j at bits
         * 2*(j/4) of byte 8 + j%4 */
        uint8_t raw[16] = {0};
        memcpy(raw, w[b].scales, 12);
        __m128i r = _mm_loadu_si128((const __m128i *)raw);
        const __m128i m4 = _mm_set1_epi8(15);
        __m128i slo = _mm_unpacklo_epi64(_mm_and_si128(r, m4), _mm_and_si128(_mm_srli_epi16(r, 4), m4));
        __m128i shi = _mm_srlv_epi32(_mm_set1_epi32((int)(raw[8] | raw[9] << 8 | raw[10] << 16 | (uint32_t)raw[11] << 24)),
                                    _mm_setr_epi32(0, 2, 4, 6));
        shi = _mm_and_si128(shi, _mm_set1_epi8(3));
        __m128i sc8 = _mm_sub_epi8(_mm_or_si128(slo, _mm_slli_epi16(shi, 4)), _mm_set1_epi8(32));
        int8_t sc[16];
        _mm_storeu_si128((__m128i *)sc, sc8);
        __m256i hm = load32(w[b].hmask);
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i q = load32(w[b].qs + 32 * h);
            for (int k = 0; k < 4; k++) {
                /* code = low 2 bits | high bit << 2, in 0..7; value = code - 4 */
                __m256i lo = _mm256_and_si256(_mm256_srli_epi16(q, 2 * k), m3);
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hm, 4 * h + k), m1);
                __m256i u = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 2));
                int sb = 8 * h + 2 * k;
                acc = _mm256_add_epi32(acc, scaled_dot(u, load32(a[b].qs + 128 * h + 32 * k),
                                                       scale_pair(sc[sb], sc[sb + 1])));
            }
        }
        int off = bsums_dot(a[b].bsums, _mm256_cvtepi8_epi16(sc8));
        int isum = hsum_i32(acc) - 4 * off;
        sum += a[b].d * (f16f(w[b].d) * (float)isum);
    }
    *s = sum;
}

static inline void k4_scales(const uint8_t *q, int sc[8], int m[8])
{
    for (int j = 0; j < 8; j++) slm_k4_scale_min(j, q, &sc[j], &m[j]);
}

void slm_vec_dot_q4_K_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q4_K *w = vw;
    const slm_block_q8_K *a = va;
    const __m256i m4 = _mm256_set1_epi8(15);
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        int sc[8], m[8];
        k4_scales(w[b].scales, sc, m);
        __m256i acc = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = load32(w[b].qs + 32 * c);
            __m256i lo = _mm256_and_si256(q, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i p0 = scaled_dot(lo, load32(a[b].qs + 64 * c), _mm256_set1_epi16((short)sc[2 * c]));
            __m256i p1 = scaled_dot(hi, load32(a[b].qs + 64 * c + 32),
                                    _mm256_set1_epi16((short)sc[2 * c + 1]));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        /* mins per pair of bsums */
        __m256i pairs = _mm256_madd_epi16(load32(a[b].bsums), _mm256_set1_epi16(1));
        int msum = hsum_i32(_mm256_mullo_epi32(pairs, _mm256_loadu_si256((const __m256i *)m)));
        sum += a[b].d * (f16f(w[b].d) * (float)hsum_i32(acc) - f16f(w[b].dmin) * (float)msum);
    }
    *s = sum;
}

void slm_vec_dot_q5_K_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q5_K *w = vw;
    const slm_block_q8_K *a = va;
    const __m256i m4 = _mm256_set1_epi8(15), m1 = _mm256_set1_epi8(1);
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        int sc[8], m[8];
        k4_scales(w[b].scales, sc, m);
        __m256i qh = load32(w[b].qh);
        __m256i acc = _mm256_setzero_si256();
        for (int c = 0; c < 4; c++) {
            __m256i q = load32(w[b].qs + 32 * c);
            __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), m1);
            __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * c + 1), m1);
            __m256i lo = _mm256_or_si256(_mm256_and_si256(q, m4), _mm256_slli_epi16(h0, 4));
            __m256i hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(q, 4), m4),
                                         _mm256_slli_epi16(h1, 4));
            __m256i p0 = scaled_dot(lo, load32(a[b].qs + 64 * c), _mm256_set1_epi16((short)sc[2 * c]));
            __m256i p1 = scaled_dot(hi, load32(a[b].qs + 64 * c + 32),
                                    _mm256_set1_epi16((short)sc[2 * c + 1]));
            acc = _mm256_add_epi32(acc, _mm256_add_epi32(p0, p1));
        }
        /* mins per pair of bsums */
        __m256i pairs = _mm256_madd_epi16(load32(a[b].bsums), _mm256_set1_epi16(1));
        int msum = hsum_i32(_mm256_mullo_epi32(pairs, _mm256_loadu_si256((const __m256i *)m)));
        sum += a[b].d * (f16f(w[b].d) * (float)hsum_i32(acc) - f16f(w[b].dmin) * (float)msum);
    }
    *s = sum;
}

void slm_vec_dot_q6_K_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q6_K *w = vw;
    const slm_block_q8_K *a = va;
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        const int8_t *sc = w[b].scales;
        __m256i acc = _mm256_setzero_si256();
        for (int h = 0; h < 2; h++) {
            __m256i l0 = load32(w[b].ql + 64 * h), l1 = load32(w[b].ql + 64 * h + 32);
            __m256i qh = load32(w[b].qh + 32 * h);
            __m256i low[4] = {
                _mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
            };
            for (int k = 0; k < 4; k++) {
                /* code in 0..63; value = code - 32, applied below via bsums */
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m3);
                __m256i u = _mm256_or_si256(low[k], _mm256_slli_epi16(hi, 4));
                int sb = 8 * h + 2 * k;
                acc = _mm256_add_epi32(acc, scaled_dot(u, load32(a[b].qs + 128 * h + 32 * k),
                                                       scale_pair(sc[sb], sc[sb + 1])));
            }
        }
        int off = bsums_dot(a[b].bsums, _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc)));
        int isum = hsum_i32(acc) - 32 * off;
        sum += a[b].d * (f16f(w[b].d) * (float)isum);
    }
    *s = sum;
}

/* ---- four activation rows at once --------------------------------------- *
 * For batches (M > 1): each weight block is loaded and unpacked once and
 * dotted with the same block of 4 activation rows (a + r * as bytes). Per
 * row the integer sums, accumulators and float expressions are those of
 * the one-row kernels above, so the results are bit-identical to 4 calls of
 * them: a row's result does not depend on the batch it is computed in. */

#define ROW(T, a, as, r) ((const T *)((const unsigned char *)(a) + (size_t)(r) * (as)))

/* One q8_0 block pair of a 4-row kernel: acc += cvt(|w| . (a * sign w)) * (dw * da).
 * The scale product is formed in a vector (the same single rounding as the
 * scalar product of the one-row kernels). The four rows are written out
 * rather than looped over so that the accumulators stay in registers. */
#define Q0_PAIR(acc, ablk, aw, q, dwv)                                                        \
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot_u8_i8(aw, _mm256_sign_epi8(load32((ablk).qs), q))), \
                          _mm256_mul_ps(dwv, _mm256_set1_ps(f16f((ablk).d))), acc)

void slm_vec_dot4_q4_0_avx2(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const slm_block_q4_0 *w = vw;
    const slm_block_q8_0 *a0 = ROW(slm_block_q8_0, va, as, 0), *a1 = ROW(slm_block_q8_0, va, as, 1),
                         *a2 = ROW(slm_block_q8_0, va, as, 2), *a3 = ROW(slm_block_q8_0, va, as, 3);
    const int64_t nb = n / SLM_QK4_0;
    const __m256i off = _mm256_set1_epi8(8);
    /* block b goes to accumulator set b % 2, as in the one-row kernel (whose
     * odd last block, of even index, also goes to set 0) */
    __m256 e0 = _mm256_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
    __m256 o0 = e0, o1 = e0, o2 = e0, o3 = e0;
    int64_t b = 0;
    for (; b + 2 <= nb; b += 2) {
        __m256i q = _mm256_sub_epi8(unpack_nibbles(w[b].qs), off);
        __m256i aw = _mm256_sign_epi8(q, q);
        __m256 dw = _mm256_set1_ps(f16f(w[b].d));
        Q0_PAIR(e0, a0[b], aw, q, dw);
        Q0_PAIR(e1, a1[b], aw, q, dw);
        Q0_PAIR(e2, a2[b], aw, q, dw);
        Q0_PAIR(e3, a3[b], aw, q, dw);
        q = _mm256_sub_epi8(unpack_nibbles(w[b + 1].qs), off);
        aw = _mm256_sign_epi8(q, q);
        dw = _mm256_set1_ps(f16f(w[b + 1].d));
        Q0_PAIR(o0, a0[b + 1], aw, q, dw);
        Q0_PAIR(o1, a1[b + 1], aw, q, dw);
        Q0_PAIR(o2, a2[b + 1], aw, q, dw);
        Q0_PAIR(o3, a3[b + 1], aw, q, dw);
    }
    if (b < nb) {
        const __m256i q = _mm256_sub_epi8(unpack_nibbles(w[b].qs), off);
        const __m256i aw = _mm256_sign_epi8(q, q);
        const __m256 dw = _mm256_set1_ps(f16f(w[b].d));
        Q0_PAIR(e0, a0[b], aw, q, dw);
        Q0_PAIR(e1, a1[b], aw, q, dw);
        Q0_PAIR(e2, a2[b], aw, q, dw);
        Q0_PAIR(e3, a3[b], aw, q, dw);
    }
    s[0] = hsum_ps(_mm256_add_ps(e0, o0));
    s[1] = hsum_ps(_mm256_add_ps(e1, o1));
    s[2] = hsum_ps(_mm256_add_ps(e2, o2));
    s[3] = hsum_ps(_mm256_add_ps(e3, o3));
}

void slm_vec_dot4_q5_0_avx2(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const slm_block_q5_0 *w = vw;
    const slm_block_q8_0 *a0 = ROW(slm_block_q8_0, va, as, 0), *a1 = ROW(slm_block_q8_0, va, as, 1),
                         *a2 = ROW(slm_block_q8_0, va, as, 2), *a3 = ROW(slm_block_q8_0, va, as, 3);
    const __m256i off = _mm256_set1_epi8(16);
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t b = 0; b < n / SLM_QK5_0; b++) {
        const __m256i q = _mm256_sub_epi8(q5_codes(w[b].qs, w[b].qh), off);
        const __m256i aw = _mm256_sign_epi8(q, q);
        const __m256 dw = _mm256_set1_ps(f16f(w[b].d));
        Q0_PAIR(c0, a0[b], aw, q, dw);
        Q0_PAIR(c1, a1[b], aw, q, dw);
        Q0_PAIR(c2, a2[b], aw, q, dw);
        Q0_PAIR(c3, a3[b], aw, q, dw);
    }
    s[0] = hsum_ps(c0);
    s[1] = hsum_ps(c1);
    s[2] = hsum_ps(c2);
    s[3] = hsum_ps(c3);
}

void slm_vec_dot4_q8_0_avx2(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const slm_block_q8_0 *w = vw;
    const slm_block_q8_0 *a0 = ROW(slm_block_q8_0, va, as, 0), *a1 = ROW(slm_block_q8_0, va, as, 1),
                         *a2 = ROW(slm_block_q8_0, va, as, 2), *a3 = ROW(slm_block_q8_0, va, as, 3);
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    for (int64_t b = 0; b < n / SLM_QK8_0; b++) {
        const __m256i q = load32(w[b].qs);
        const __m256i aw = _mm256_sign_epi8(q, q);
        const __m256 dw = _mm256_set1_ps(f16f(w[b].d));
        Q0_PAIR(c0, a0[b], aw, q, dw);
        Q0_PAIR(c1, a1[b], aw, q, dw);
        Q0_PAIR(c2, a2[b], aw, q, dw);
        Q0_PAIR(c3, a3[b], aw, q, dw);
    }
    s[0] = hsum_ps(c0);
    s[1] = hsum_ps(c1);
    s[2] = hsum_ps(c2);
    s[3] = hsum_ps(c3);
}

void slm_vec_dot4_q4_K_avx2(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const slm_block_q4_K *w = vw;
    const slm_block_q8_K *a[4] = {ROW(slm_block_q8_K, va, as, 0), ROW(slm_block_q8_K, va, as, 1),
                                  ROW(slm_block_q8_K, va, as, 2), ROW(slm_block_q8_K, va, as, 3)};
    const __m256i m4 = _mm256_set1_epi8(15);
    float sum[4] = {0, 0, 0, 0};
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        int sc[8], m[8];
        k4_scales(w[b].scales, sc, m);
        __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                          _mm256_setzero_si256()};
        for (int c = 0; c < 4; c++) {
            __m256i q = load32(w[b].qs + 32 * c);
            __m256i lo = _mm256_and_si256(q, m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(q, 4), m4);
            __m256i s0 = _mm256_set1_epi16((short)sc[2 * c]), s1 = _mm256_set1_epi16((short)sc[2 * c + 1]);
            for (int r = 0; r < 4; r++) {
                __m256i p0 = scaled_dot(lo, load32(a[r][b].qs + 64 * c), s0);
                __m256i p1 = scaled_dot(hi, load32(a[r][b].qs + 64 * c + 32), s1);
                acc[r] = _mm256_add_epi32(acc[r], _mm256_add_epi32(p0, p1));
            }
        }
        __m256i mv = _mm256_loadu_si256((const __m256i *)m);
        for (int r = 0; r < 4; r++) {
            __m256i pairs = _mm256_madd_epi16(load32(a[r][b].bsums), _mm256_set1_epi16(1));
            int msum = hsum_i32(_mm256_mullo_epi32(pairs, mv));
            sum[r] += a[r][b].d * (f16f(w[b].d) * (float)hsum_i32(acc[r]) - f16f(w[b].dmin) * (float)msum);
        }
    }
    for (int r = 0; r < 4; r++) s[r] = sum[r];
}

void slm_vec_dot4_q6_K_avx2(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const slm_block_q6_K *w = vw;
    const slm_block_q8_K *a[4] = {ROW(slm_block_q8_K, va, as, 0), ROW(slm_block_q8_K, va, as, 1),
                                  ROW(slm_block_q8_K, va, as, 2), ROW(slm_block_q8_K, va, as, 3)};
    const __m256i m4 = _mm256_set1_epi8(15), m3 = _mm256_set1_epi8(3);
    float sum[4] = {0, 0, 0, 0};
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        const int8_t *sc = w[b].scales;
        __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                          _mm256_setzero_si256()};
        for (int h = 0; h < 2; h++) {
            __m256i l0 = load32(w[b].ql + 64 * h), l1 = load32(w[b].ql + 64 * h + 32);
            __m256i qh = load32(w[b].qh + 32 * h);
            __m256i low[4] = {
                _mm256_and_si256(l0, m4), _mm256_and_si256(l1, m4),
                _mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                _mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
            };
            for (int k = 0; k < 4; k++) {
                __m256i hi = _mm256_and_si256(_mm256_srli_epi16(qh, 2 * k), m3);
                __m256i u = _mm256_or_si256(low[k], _mm256_slli_epi16(hi, 4));
                int sb = 8 * h + 2 * k;
                __m256i scl = scale_pair(sc[sb], sc[sb + 1]);
                for (int r = 0; r < 4; r++)
                    acc[r] = _mm256_add_epi32(acc[r], scaled_dot(u, load32(a[r][b].qs + 128 * h + 32 * k), scl));
            }
        }
        __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)sc));
        for (int r = 0; r < 4; r++) {
            int isum = hsum_i32(acc[r]) - 32 * bsums_dot(a[r][b].bsums, sc16);
            sum[r] += a[r][b].d * (f16f(w[b].d) * (float)isum);
        }
    }
    for (int r = 0; r < 4; r++) s[r] = sum[r];
}

/* ---- float types: 4 independent FMA chains of 8 ----------------------- */

void slm_vec_dot_f16_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_f16 *w = vw, *a = va;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++)
            acc[k] = _mm256_fmadd_ps(load_f16x8(w + i + 8 * k), load_f16x8(a + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_fmadd_ps(load_f16x8(w + i), load_f16x8(a + i), acc[0]);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) sum += f16f(w[i]) * f16f(a[i]);
    *s = sum;
}

void slm_vec_dot_bf16_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_bf16 *w = vw, *a = va;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++)
            acc[k] = _mm256_fmadd_ps(load_bf16x8(w + i + 8 * k), load_bf16x8(a + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_fmadd_ps(load_bf16x8(w + i), load_bf16x8(a + i), acc[0]);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) sum += slm_bf16_to_f32(w[i]) * slm_bf16_to_f32(a[i]);
    *s = sum;
}

void slm_vec_dot_f32_avx2(int64_t n, float *s, const void *vw, const void *va)
{
    const float *w = vw, *a = va;
    __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    int64_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int k = 0; k < 4; k++)
            acc[k] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i + 8 * k), _mm256_loadu_ps(a + i + 8 * k), acc[k]);
    for (; i + 8 <= n; i += 8)
        acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(w + i), _mm256_loadu_ps(a + i), acc[0]);
    float sum = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (; i < n; i++) sum += w[i] * a[i];
    *s = sum;
}

/* slm_vec_dot_f32_avx2 for four activation rows (as bytes apart), two at
 * a time: each output keeps its four accumulators and the same steps and
 * reduction, while the weight row is loaded once per pair. Batches of
 * short rows (RWKV's low-rank products, K = 32..768) no longer pay a call
 * and a reduction chain per output. */
void slm_vec_dot4_f32_avx2(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const float *w = vw;
    for (int p = 0; p < 4; p += 2) {
        const float *a0 = (const float *)(const void *)((const char *)va + (size_t)p * as);
        const float *a1 = (const float *)(const void *)((const char *)va + (size_t)(p + 1) * as);
        __m256 x[4], y[4];
        for (int k = 0; k < 4; k++) x[k] = y[k] = _mm256_setzero_ps();
        int64_t i = 0;
        for (; i + 32 <= n; i += 32)
            for (int k = 0; k < 4; k++) {
                const __m256 wv = _mm256_loadu_ps(w + i + 8 * k);
                x[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a0 + i + 8 * k), x[k]);
                y[k] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a1 + i + 8 * k), y[k]);
            }
        for (; i + 8 <= n; i += 8) {
            const __m256 wv = _mm256_loadu_ps(w + i);
            x[0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a0 + i), x[0]);
            y[0] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(a1 + i), y[0]);
        }
        float s0 = hsum_ps(_mm256_add_ps(_mm256_add_ps(x[0], x[1]), _mm256_add_ps(x[2], x[3])));
        float s1 = hsum_ps(_mm256_add_ps(_mm256_add_ps(y[0], y[1]), _mm256_add_ps(y[2], y[3])));
        for (; i < n; i++) {
            s0 += w[i] * a0[i];
            s1 += w[i] * a1[i];
        }
        s[p] = s0;
        s[p + 1] = s1;
    }
}

/* ---- activation encoders ----------------------------------------------- *
 * Byte-identical to the scalar references: the same float operations in the
 * same order per element (x * id, one rounding), and the reference's
 * rounding mode: roundf (half away from zero) for q8_0/q8_1, nearest-even
 * (the 1.5 * 2^23 trick) for q8_K. */

static inline __m256 abs_ps(__m256 v)
{
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

/* roundf on 8 floats: truncate, then step away from zero when the dropped
 * fraction (exact in float) is at least one half */
static inline __m256i roundf_epi32(__m256 v)
{
    __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    __m256 frac = abs_ps(_mm256_sub_ps(v, t));
    __m256 up = _mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_and_ps(v, _mm256_set1_ps(-0.0f)));
    return _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(up, one)));
}

/* 4 x 8 int32 (elements 0..31 in order) -> 32 int8 */
static inline __m256i pack_i8(__m256i a, __m256i b, __m256i c, __m256i d)
{
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i x = _mm256_packs_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(x, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* one 32-element q8_0/q8_1 activation block as the reference encodes it at
 * run time (vecdot.c act_q8_block): codes x * (127 / amax) rounded half to
 * even; returns d = amax / 127 and the sum of the codes */
static inline float q8_block(const float *x, int8_t *qs, int *qsum)
{
    __m256 v[4];
    __m256 amax = _mm256_setzero_ps();
    for (int k = 0; k < 4; k++) {
        v[k] = _mm256_loadu_ps(x + 8 * k);
        amax = _mm256_max_ps(amax, abs_ps(v[k]));
    }
    const float am = hmax_ps(amax);
    const float d = am / 127.f;
    const float id = am != 0.0f ? 127.f / am : 0.0f;
    __m256 vid = _mm256_set1_ps(id);
    __m256i q[4];
    for (int k = 0; k < 4; k++)
        q[k] = _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v[k], vid),
                                                  _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (qsum)
        *qsum = hsum_i32(_mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3])));
    _mm256_storeu_si256((__m256i *)qs, pack_i8(q[0], q[1], q[2], q[3]));
    return d;
}

void slm_act_q8_0_avx2(const float *x, void *vy, int64_t n)
{
    slm_block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / SLM_QK8_0; b++)
        y[b].d = slm_f32_to_f16(q8_block(x + b * SLM_QK8_0, y[b].qs, NULL));
}

void slm_act_q8_1_avx2(const float *x, void *vy, int64_t n)
{
    slm_block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / SLM_QK8_1; b++) {
        int sum;
        float d = q8_block(x + b * SLM_QK8_1, y[b].qs, &sum);
        y[b].d = slm_f32_to_f16(d);
        y[b].s = slm_f32_to_f16((float)sum * d);
    }
}

/* q8_K: scale from the signed value of largest magnitude (the first one in
 * order on ties), iscale = -127 / max, codes min(127, nearest(iscale * x)) */
void slm_act_q8_K_avx2(const float *x, void *vy, int64_t n)
{
    slm_block_q8_K *y = vy;
    for (int64_t b = 0; b < n / SLM_QK_K; b++, x += SLM_QK_K) {
        __m256 amax = _mm256_setzero_ps();
        for (int k = 0; k < SLM_QK_K; k += 8) amax = _mm256_max_ps(amax, abs_ps(_mm256_loadu_ps(x + k)));
        const float am = hmax_ps(amax);
        if (!am) {
            memset(&y[b], 0, sizeof y[b]);
            continue;
        }
        float max = 0;
        __m256 vam = _mm256_set1_ps(am);
        for (int k = 0; k < SLM_QK_K; k += 8) {
            int m = _mm256_movemask_ps(_mm256_cmp_ps(abs_ps(_mm256_loadu_ps(x + k)), vam, _CMP_EQ_OQ));
            if (m) {
                max = x[k + __builtin_ctz((unsigned)m)];
                break;
            }
        }
        const float iscale = -127.f / max;
        __m256 vis = _mm256_set1_ps(iscale);
        const __m256i top = _mm256_set1_epi32(127);
        for (int k = 0; k < SLM_QK_K; k += 32) {
            __m256i q[4];
            for (int j = 0; j < 4; j++) {
                __m256 t = _mm256_mul_ps(_mm256_loadu_ps(x + k + 8 * j), vis);
                t = _mm256_round_ps(t, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                q[j] = _mm256_min_epi32(_mm256_cvtps_epi32(t), top);
            }
            __m256i codes = pack_i8(q[0], q[1], q[2], q[3]);
            _mm256_storeu_si256((__m256i *)(y[b].qs + k), codes);
            /* two sums of 16 codes each */
            __m256i s16 = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), codes),
                                            _mm256_set1_epi16(1));
            int lo = hsum_i32(_mm256_and_si256(s16, _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0)));
            int hi = hsum_i32(_mm256_and_si256(s16, _mm256_setr_epi32(0, 0, 0, 0, -1, -1, -1, -1)));
            y[b].bsums[k / 16] = (int16_t)lo;
            y[b].bsums[k / 16 + 1] = (int16_t)hi;
        }
        y[b].d = 1 / iscale;
    }
}

void slm_act_f16_avx2(const float *x, void *vy, int64_t n)
{
    slm_f16 *y = vy;
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) y[i] = slm_f32_to_f16(x[i]);
}

#endif
