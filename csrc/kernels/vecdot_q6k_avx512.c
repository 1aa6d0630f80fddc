/* AVX-512 VNNI vec_dot for q6_K weights against q8_K activations, one and
 * four activation rows (decode and batches of 1..7; q6_K has no tile
 * kernel). Q4_K_M files keep some tensors (often output and ffn_down) in
 * q6_K, so this kernel shares their decode with the q4_K ones.
 *
 * The specification is dot_q6_K in vecdot.c: per super-block the exact
 * integer isum = sum over the 16 sub-blocks of sc[sb] * sum((code - 32) * qa),
 * then sum += d_a * (d_w * (float)isum), super-block after super-block.
 * Here isum = sum(sc * code * qa) - 32 * sum(sc[sb] * bsums[sb]), the same
 * integer (|isum| < 2^31), so the results are bit-identical to the generic
 * and AVX2 kernels'.
 *
 * Element e = 128h + 32k + l (h < 2, k < 4, l < 32): low 4 bits in
 * ql[64h + 32(k & 1) + l] (low nibble for k < 2), high 2 bits in
 * qh[32h + l] >> 2k; sub-block e / 16 has the int8 scale scales[e / 16]. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <string.h>

#include "../quant/blocks.h"
#include "simd_avx2.h"
#include "vecdot.h"
#include "vecdot_q6k_avx512.h"

#define UNROLL _Pragma("GCC unroll 8")
#define INLINE static inline __attribute__((always_inline))

/* One weight super-block unpacked: codes (0..63) of elements 64v .. 64v + 63
 * in x[v], in the order of the activation bytes; the scale of each 16-byte
 * lane's sub-block (4v + lane) in the words of s[v]; the scales as 16
 * words for the offset term. */
typedef struct q6k_row {
    __m512i x[4], s[4];
    __m256i sc16;
    float d;
} q6k_row;

INLINE void q6k_row_load(const slm_block_q6_K *w, q6k_row *R)
{
    const __m512i m4 = _mm512_set1_epi8(15), m3 = _mm512_set1_epi8(3);
    UNROLL for (int h = 0; h < 2; h++) {
        /* bytes 0..31: k = 0 (low nibbles) / k = 2 (high); 32..63: k = 1 / 3 */
        const __m512i l = _mm512_loadu_si512((const void *)(w->ql + 64 * h));
        const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)(w->qh + 32 * h)));
        /* high bits: shift 2k, i.e. 0 | 2 for the low nibbles' vector and
         * 4 | 6 for the high nibbles' (words 0..15 | 16..31) */
        const __m512i sh_lo = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
        const __m512i sh_hi = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(6), 1);
        const __m512i hb_lo = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_lo), m3), 4);
        const __m512i hb_hi = _mm512_slli_epi16(_mm512_and_si512(_mm512_srlv_epi16(qh, sh_hi), m3), 4);
        R->x[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4), hb_lo);
        R->x[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), hb_hi);
    }
    const __m128i sc8 = _mm_loadu_si128((const __m128i *)(const void *)w->scales);
    R->sc16 = _mm256_cvtepi8_epi16(sc8);
    const __m512i s32 = _mm512_broadcast_i64x4(R->sc16);   /* words 0..15 twice */
    UNROLL for (int v = 0; v < 4; v++) {
        /* word i of s[v]: scale of sub-block 4v + i / 8 */
        const long long o = 0x0001000100010001LL, j = 4 * v;   /* o: a word in each of 4 */
        const __m512i idx = _mm512_set_epi64((j + 3) * o, (j + 3) * o, (j + 2) * o, (j + 2) * o, (j + 1) * o,
                                             (j + 1) * o, j * o, j * o);
        R->s[v] = _mm512_permutexvar_epi16(idx, s32);
    }
    R->d = f16f(w->d);
}

/* sum(sc * code * qa) and sum(sc * bsums), each spread over 8 lanes */
INLINE void q6k_row_ints(const q6k_row *R, const slm_block_q8_K *a, __m256i *iv, __m256i *ov)
{
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    UNROLL for (int v = 0; v < 4; v += 2) {
        /* pair sums <= 2 * 63 * 128: no saturation */
        const __m512i p0 = _mm512_maddubs_epi16(R->x[v], _mm512_loadu_si512((const void *)(a->qs + 64 * v)));
        const __m512i p1 = _mm512_maddubs_epi16(R->x[v + 1], _mm512_loadu_si512((const void *)(a->qs + 64 * v + 64)));
        acc0 = _mm512_dpwssd_epi32(acc0, p0, R->s[v]);
        acc1 = _mm512_dpwssd_epi32(acc1, p1, R->s[v + 1]);
    }
    const __m512i acc = _mm512_add_epi32(acc0, acc1);
    *iv = _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    *ov = _mm256_madd_epi16(load32(a->bsums), R->sc16);
}

/* lane j: the sum of the 8 lanes of v[j] */
INLINE __m128i hsum4_i32(const __m256i v[4])
{
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* isum of four (row, activation) pairs, one per lane */
INLINE __m128i q6k_isum4(const __m256i iv[4], const __m256i ov[4])
{
    return _mm_sub_epi32(hsum4_i32(iv), _mm_slli_epi32(hsum4_i32(ov), 5));
}

void slm_vec_dot_q6_K_avx512(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q6_K *w = vw;
    const slm_block_q8_K *a = va;
    const int64_t nb = n / SLM_QK_K;
    float sum = 0;
    int64_t b = 0;
    /* four super-blocks at a time: integers reduced together, terms formed
     * in four lanes (dot_q6_K's expression lane by lane), added in order */
    for (; b + 4 <= nb; b += 4) {
        __m256i iv[4], ov[4];
        float dw[4];
        UNROLL for (int j = 0; j < 4; j++) {
            q6k_row R;
            q6k_row_load(&w[b + j], &R);
            q6k_row_ints(&R, &a[b + j], &iv[j], &ov[j]);
            dw[j] = R.d;
        }
        const __m128 is = _mm_cvtepi32_ps(q6k_isum4(iv, ov));
        const __m128 ad = _mm_setr_ps(a[b].d, a[b + 1].d, a[b + 2].d, a[b + 3].d);
        float t[4];
        _mm_storeu_ps(t, _mm_mul_ps(ad, _mm_mul_ps(_mm_loadu_ps(dw), is)));
        sum += t[0];
        sum += t[1];
        sum += t[2];
        sum += t[3];
    }
    for (; b < nb; b++) {
        q6k_row R;
        q6k_row_load(&w[b], &R);
        __m256i iv[4], ov[4];
        q6k_row_ints(&R, &a[b], &iv[0], &ov[0]);
        iv[1] = iv[2] = iv[3] = ov[1] = ov[2] = ov[3] = _mm256_setzero_si256();
        const int isum = _mm_cvtsi128_si32(q6k_isum4(iv, ov));
        sum += a[b].d * (R.d * (float)isum);
    }
    *s = sum;
}

#define AROW(a, as, r) ((const slm_block_q8_K *)(const void *)((const unsigned char *)(a) + (size_t)(r) * (as)))

/* each weight super-block unpacked once for four activation rows; row r's
 * term and sum in lane r, in the one-row kernel's order */
void slm_vec_dot4_q6_K_avx512(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const slm_block_q6_K *w = vw;
    const slm_block_q8_K *a[4] = {AROW(va, as, 0), AROW(va, as, 1), AROW(va, as, 2), AROW(va, as, 3)};
    __m128 sum = _mm_setzero_ps();
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        q6k_row R;
        q6k_row_load(&w[b], &R);
        __m256i iv[4], ov[4];
        UNROLL for (int r = 0; r < 4; r++) q6k_row_ints(&R, &a[r][b], &iv[r], &ov[r]);
        const __m128 is = _mm_cvtepi32_ps(q6k_isum4(iv, ov));
        const __m128 ad = _mm_setr_ps(a[0][b].d, a[1][b].d, a[2][b].d, a[3][b].d);
        sum = _mm_add_ps(sum, _mm_mul_ps(ad, _mm_mul_ps(_mm_set1_ps(R.d), is)));
    }
    _mm_storeu_ps(s, sum);
}

#endif
