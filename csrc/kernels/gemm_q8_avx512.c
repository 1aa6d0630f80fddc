/* AVX-512 VNNI tiles and dots for q8_0 and q5_0 weights (gemm_q8_avx512.h).
 *
 * The order is the AVX2 kernels' (gemm.h, vecdot_avx2.c): per output an
 * 8-lane float accumulator, lane j += (float)(integer sum of elements
 * 4j..4j+3 of block b) * (d_w[b] * d_a[b]) with one FMA, blocks in order,
 * then hsum8 = (s0 + s2) + (s1 + s3), s_i = lane i + lane i+4. The integer
 * lane sums are exact in any grouping, so only the float steps must be
 * those of the AVX2 kernel, and they are: one zmm holds the 8 lanes of two
 * outputs side by side (a wider register holds more outputs, never a
 * different order for one output).
 *
 * vpdpbusd sums four products of an unsigned byte by a signed byte into
 * each int32 lane: exactly the 4-element lane sums above. The weight codes
 * are signed, so they go in as code + 128 (u8) and the excess 128 * (sum of
 * the four activation codes of the lane) is subtracted by starting the
 * accumulation at its negation, computed once per activation block by a
 * vpdpbusd of 128s with the activation codes. Every value stays exact in
 * int32 (|lane| <= 4 * 255 * 128).
 *
 * Tiles: 8 weight rows by up to 4 activation rows, 16 zmm accumulators
 * (pair p = rows p and p + 4, so that the final transposing reduction
 * leaves rows 0..7 of one activation row in order). */
#if defined(__x86_64__)

#include "gemm_q8_avx512.h"

#include <immintrin.h>
#include <string.h>

#include "../quant/blocks.h"
#include "simd_avx2.h"

#define UNROLL _Pragma("GCC unroll 4")

/* ---- weight blocks as u8 codes plus 128 ------------------------------- */

/* q8_0: code + 128 == code ^ 0x80 as a byte */
static inline __m256i u8_codes_q8_0(const void *blk)
{
    const slm_block_q8_0 *w = blk;
    return _mm256_xor_si256(load32(w->qs), _mm256_set1_epi8((char)0x80));
}

/* two rows' 32 codes in one zmm: lo in bytes 0..31, hi in 32..63 */
static inline __m512i join(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* q5_0, two rows (lo in bytes 0..31, hi in 32..63): (nibble | fifth bit
 * << 4) - 16 + 128. Both rows unpacked side by side in one zmm: [qs | qs |
 * qs' | qs'] shifted right by 0 or 4 per 64-bit word and masked (each
 * byte's low or high nibble: elements 0..15, then 16..31), the fifth bits
 * (bit j of a row's little-endian qh word for element j) of both rows as
 * one 64-bit byte mask: half the instructions of two one-row unpacks,
 * which decode (one activation row) is bound by. */
static inline __m512i u8_codes_q5_0x2(const void *blo, const void *bhi)
{
    const slm_block_q5_0 *a = blo, *b = bhi;
    const __m128i qa = _mm_loadu_si128((const __m128i *)(const void *)a->qs);
    const __m128i qb = _mm_loadu_si128((const __m128i *)(const void *)b->qs);
    const __m512i q = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_inserti128_si256(_mm256_castsi128_si256(qa), qa, 1)),
        _mm256_inserti128_si256(_mm256_castsi128_si256(qb), qb, 1), 1);
    const __m512i nib = _mm512_and_si512(_mm512_srlv_epi64(q, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)),
                                         _mm512_set1_epi8(0x0f));
    uint32_t ha, hb;
    memcpy(&ha, a->qh, 4);
    memcpy(&hb, b->qh, 4);
    const __m512i fifth = _mm512_maskz_mov_epi8((__mmask64)ha | (__mmask64)hb << 32, _mm512_set1_epi8(0x10));
    return _mm512_add_epi8(_mm512_or_si512(nib, fifth), _mm512_set1_epi8(112));
}

/* [d[p] x 8, d[p + 4] x 8] from the eight rows' scales */
static inline __m512 pair_scales(__m512 d8, int p)
{
    const __m512i idx = _mm512_setr_epi32(p, p, p, p, p, p, p, p, p + 4, p + 4, p + 4, p + 4, p + 4, p + 4,
                                          p + 4, p + 4);
    return _mm512_permutexvar_ps(idx, d8);
}

/* ---- the block step and the final reduction --------------------------- */

/* One block of the four row pairs (u8 codes wq, scales dw) against RN
 * activation rows (row c's block at A + c * lda, its float scale from side
 * when SIDE, else from the block). */
static inline __attribute__((always_inline)) void block_step(const __m512i wq[4], const __m512 dw[4],
                                                             const unsigned char *A, size_t lda,
                                                             const slm_q8_0_side *side, int64_t nb, int64_t b,
                                                             __m512 acc[4][4], const int RN, const int SIDE)
{
    const __m512i k128 = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    UNROLL for (int c = 0; c < RN; c++) {
        const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)(A + (size_t)c * lda) + b;
        const __m512i av = _mm512_broadcast_i64x4(load32(a->qs));
        /* -128 * (sum of the lane's four activation codes) */
        const __m512i neg = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k128, av));
        const __m512 da = _mm512_set1_ps(SIDE ? side[c * nb + b].d : f16f(a->d));
        UNROLL for (int p = 0; p < 4; p++) {
            const __m512i s = _mm512_dpbusd_epi32(neg, wq[p], av);
            acc[p][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw[p], da), acc[p][c]);
        }
    }
}

/* hsum8 of the 16 outputs held by x[p] = acc[p][c], y[p] = acc[p][c + 1]
 * (each: row p's 8 lanes, then row p + 4's), by three rounds of
 * shuffles and adds that pair the lanes as hsum_ps does (float addition is
 * commutative, so the operand order within a pair does not matter):
 * the result is rows 0..7 of activation row c, then those of row c + 1. */
static inline __m512 reduce16(const __m512 x[4], const __m512 y[4])
{
    __m512 s[4];
    for (int p = 0; p < 4; p++)   /* quarters: s of (c, p), (c, p+4), (c+1, p), (c+1, p+4) */
        s[p] = _mm512_add_ps(_mm512_shuffle_f32x4(x[p], y[p], 0x88), _mm512_shuffle_f32x4(x[p], y[p], 0xdd));
    /* per quarter: s0 + s2, s1 + s3 of two outputs */
    const __m512 t0 = _mm512_add_ps(_mm512_shuffle_ps(s[0], s[1], 0x44), _mm512_shuffle_ps(s[0], s[1], 0xee));
    const __m512 t1 = _mm512_add_ps(_mm512_shuffle_ps(s[2], s[3], 0x44), _mm512_shuffle_ps(s[2], s[3], 0xee));
    /* per quarter: (s0 + s2) + (s1 + s3) of four outputs */
    return _mm512_add_ps(_mm512_shuffle_ps(t0, t1, 0x88), _mm512_shuffle_ps(t0, t1, 0xdd));
}

/* out[c * ldo + r] for r < nr, c < RN */
static inline __attribute__((always_inline)) void store_tile(__m512 acc[4][4], int nr, float *out, size_t ldo,
                                                             const int RN)
{
    const __mmask8 m = (__mmask8)((1u << nr) - 1);
    UNROLL for (int c = 0; c < RN; c += 2) {
        const __m512 x[4] = {acc[0][c], acc[1][c], acc[2][c], acc[3][c]};
        const __m512 z = _mm512_setzero_ps();
        const __m512 y[4] = {c + 1 < RN ? acc[0][c + 1] : z, c + 1 < RN ? acc[1][c + 1] : z,
                             c + 1 < RN ? acc[2][c + 1] : z, c + 1 < RN ? acc[3][c + 1] : z};
        const __m512 r = reduce16(x, y);
        _mm256_mask_storeu_ps(out + (size_t)c * ldo, m, _mm512_castps512_ps256(r));
        if (c + 1 < RN) _mm256_mask_storeu_ps(out + (size_t)(c + 1) * ldo, m, _mm512_extractf32x8_ps(r, 1));
    }
}

/* ---- tiles over the file's rows (decode, small batches, ragged rows) -- */

/* nr <= 8 weight rows ldw bytes apart (rows past nr repeat the last one;
 * their outputs are not stored) against RN activation rows */
static inline __attribute__((always_inline)) void tile_rows(int64_t K, const unsigned char *W, size_t ldw, int nr,
                                                            const unsigned char *A, size_t lda, float *out,
                                                            size_t ldo, const int RN, const int Q5)
{
    const size_t bs = Q5 ? sizeof(slm_block_q5_0) : sizeof(slm_block_q8_0);
    const unsigned char *w[8];
    for (int r = 0; r < 8; r++) w[r] = W + (size_t)(r < nr ? r : nr - 1) * ldw;
    __m512 acc[4][4];
    UNROLL for (int p = 0; p < 4; p++)
        UNROLL for (int c = 0; c < 4; c++) acc[p][c] = _mm512_setzero_ps();
    const int64_t nb = K / 32;
    for (int64_t b = 0; b < nb; b++) {
        __m512i wq[4];
        __m512 dw[4];
        uint16_t d[8];
        _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) memcpy(&d[r], w[r] + b * bs, 2);   /* d first in both */
        const __m512 d8 = _mm512_castps256_ps512(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)d)));
        UNROLL for (int p = 0; p < 4; p++) {
            const void *lo = w[p] + b * bs, *hi = w[p + 4] + b * bs;
            wq[p] = Q5 ? u8_codes_q5_0x2(lo, hi) : join(u8_codes_q8_0(lo), u8_codes_q8_0(hi));
            dw[p] = pair_scales(d8, p);
        }
        block_step(wq, dw, A, lda, NULL, 0, b, acc, RN, 0);
    }
    store_tile(acc, nr, out, ldo, RN);
}

#define ROWS_DISPATCH(Q5)                                                                     \
    switch (nc) {                                                                             \
    case 4: tile_rows(K, W, ldw, nr, A, lda, out, ldo, 4, Q5); break;                         \
    case 3: tile_rows(K, W, ldw, nr, A, lda, out, ldo, 3, Q5); break;                         \
    case 2: tile_rows(K, W, ldw, nr, A, lda, out, ldo, 2, Q5); break;                         \
    case 1: tile_rows(K, W, ldw, nr, A, lda, out, ldo, 1, Q5); break;                         \
    default: break;                                                                           \
    }

void slm_gemm_q8_0_avx512(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda, int nc,
                          float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    ROWS_DISPATCH(0)
}

void slm_gemm_q5_0_avx512(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda, int nc,
                          float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    ROWS_DISPATCH(1)
}

/* ---- packed panels (batches) ------------------------------------------ */

static inline __attribute__((always_inline)) void pack_rows(int64_t K, const unsigned char *W, size_t ldw,
                                                            slm_qs8x8 *P, const int Q5)
{
    const size_t bs = Q5 ? sizeof(slm_block_q5_0) : sizeof(slm_block_q8_0);
    for (int64_t b = 0; b < K / 32; b++) {
        for (int p = 0; p < 4; p++) {
            const void *lo = W + (size_t)p * ldw + b * bs, *hi = W + (size_t)(p + 4) * ldw + b * bs;
            const __m512i v = Q5 ? u8_codes_q5_0x2(lo, hi) : join(u8_codes_q8_0(lo), u8_codes_q8_0(hi));
            _mm512_storeu_si512((void *)P[b].q[p], v);
        }
        uint16_t d[8];
        for (int r = 0; r < 8; r++) memcpy(&d[r], W + (size_t)r * ldw + b * bs, 2);
        _mm256_storeu_ps(P[b].d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)d)));
    }
}

void slm_gemm_pack_q8_0_avx512(int64_t K, const void *W, size_t ldw, void *dst)
{
    pack_rows(K, W, ldw, dst, 0);
}

void slm_gemm_pack_q5_0_avx512(int64_t K, const void *W, size_t ldw, void *dst)
{
    pack_rows(K, W, ldw, dst, 1);
}

static inline __attribute__((always_inline)) void tile_packed(int64_t K, const slm_qs8x8 *P, const unsigned char *A,
                                                              size_t lda, const slm_q8_0_side *side, float *out,
                                                              size_t ldo, const int RN)
{
    __m512 acc[4][4];
    UNROLL for (int p = 0; p < 4; p++)
        UNROLL for (int c = 0; c < 4; c++) acc[p][c] = _mm512_setzero_ps();
    const int64_t nb = K / 32;
    for (int64_t b = 0; b < nb; b++) {
        __m512i wq[4];
        __m512 dw[4];
        const __m512 d8 = _mm512_castps256_ps512(_mm256_loadu_ps(P[b].d));
        UNROLL for (int p = 0; p < 4; p++) {
            wq[p] = _mm512_loadu_si512((const void *)P[b].q[p]);
            dw[p] = pair_scales(d8, p);
        }
        block_step(wq, dw, A, lda, side, nb, b, acc, RN, 1);
    }
    store_tile(acc, 8, out, ldo, RN);
}

/* The tile over a packed panel (q8_0 and q5_0 alike); nr is 8. */
void slm_gemm_qs8x8_avx512(int64_t K, const void *vP, int nr, const void *vA, size_t lda,
                           const slm_q8_0_side *side, int nc, float *out, size_t ldo)
{
    (void)nr;
    const slm_qs8x8 *P = vP;
    const unsigned char *A = vA;
    switch (nc) {
    case 4: tile_packed(K, P, A, lda, side, out, ldo, 4); break;
    case 3: tile_packed(K, P, A, lda, side, out, ldo, 3); break;
    case 2: tile_packed(K, P, A, lda, side, out, ldo, 2); break;
    case 1: tile_packed(K, P, A, lda, side, out, ldo, 1); break;
    default: break;
    }
}

/* ---- vec_dot: one weight row against one or four activation rows ----- */

/* slm_vec_dot_q8_0_avx2's chain with the lane sums of one vpdpbusd on
 * |w| and a * sign(w) (ymm: one output, one accumulator) */
void slm_vec_dot_q8_0_avx512(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q8_0 *w = vw;
    const slm_block_q8_0 *a = va;
    __m256 acc = _mm256_setzero_ps();
    for (int64_t b = 0; b < n / SLM_QK8_0; b++) {
        const __m256i q = load32(w[b].qs);
        const __m256i p = _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(q),
                                              _mm256_sign_epi8(load32(a[b].qs), q));
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_set1_ps(f16f(w[b].d) * f16f(a[b].d)), acc);
    }
    *s = hsum_ps(acc);
}

/* Four activation rows (as bytes apart), two per zmm: [row 2i | row 2i+1]
 * against the weight block (plus 128) in both halves. */
void slm_vec_dot4_q8_0_avx512(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const slm_block_q8_0 *w = vw;
    const slm_block_q8_0 *a[4];
    for (int r = 0; r < 4; r++) a[r] = (const slm_block_q8_0 *)(const void *)((const unsigned char *)va + r * as);
    const __m512i k128 = _mm512_set1_epi8((char)0x80), zero = _mm512_setzero_si512();
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    for (int64_t b = 0; b < n / SLM_QK8_0; b++) {
        const __m512i wq = _mm512_broadcast_i64x4(u8_codes_q8_0(&w[b]));
        const __m512 dw = _mm512_set1_ps(f16f(w[b].d));
        const __m512i a01 = join(load32(a[0][b].qs), load32(a[1][b].qs));
        const __m512i a23 = join(load32(a[2][b].qs), load32(a[3][b].qs));
        const __m512i s01 = _mm512_dpbusd_epi32(_mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k128, a01)), wq, a01);
        const __m512i s23 = _mm512_dpbusd_epi32(_mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, k128, a23)), wq, a23);
        const __m512 d01 = _mm512_insertf32x8(_mm512_set1_ps(f16f(a[0][b].d)), _mm256_set1_ps(f16f(a[1][b].d)), 1);
        const __m512 d23 = _mm512_insertf32x8(_mm512_set1_ps(f16f(a[2][b].d)), _mm256_set1_ps(f16f(a[3][b].d)), 1);
        acc0 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s01), _mm512_mul_ps(dw, d01), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s23), _mm512_mul_ps(dw, d23), acc1);
    }
    s[0] = hsum_ps(_mm512_castps512_ps256(acc0));
    s[1] = hsum_ps(_mm512_extractf32x8_ps(acc0, 1));
    s[2] = hsum_ps(_mm512_castps512_ps256(acc1));
    s[3] = hsum_ps(_mm512_extractf32x8_ps(acc1, 1));
}

#endif
