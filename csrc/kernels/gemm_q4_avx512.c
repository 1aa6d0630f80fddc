/* AVX-512 VNNI tile kernels for q4_0 weights (gemm_q4_avx512.h): every
 * output is the chain of gemm.c's gemm_q4_0 / gemm_q4_0x8,
 *   acc = fma((float)sumi_b, d_w[b] * d_a[b], acc)  for b = 0, 1, ...
 * sumi_b = sum over the block of (code - 8) * a, an exact integer (at most
 * 32 * 15 * 128 in magnitude, exact in int32 and in a float), so only the
 * order of the float steps matters, and it is the generic one.
 *
 * vpdpbusd multiplies unsigned bytes (the codes 0..15, without the offset)
 * by signed bytes (the q8_0 activation codes) and adds each four products
 * into a dword exactly; the -8 offset enters as -8 * sum(a) in the start
 * value of the dword sums.
 *
 * Unpacked tile (decode, small batches, rows left over by the packed path):
 * a zmm holds one block of four rows (16 nibble bytes per 128-bit lane);
 * the low nibbles meet the activation's elements 0..15 and the high ones
 * 16..31, both broadcast to the four lanes, so each lane ends with four
 * dwords whose sum is that row's sumi. Two blocks are reduced together
 * (unpack-and-add twice), which leaves lane L holding rows 2L and 2L + 1
 * of block b and of block b + 1; the two FMAs of a row then run in order
 * in that layout (an in-lane shuffle brings block b + 1 under block b).
 *
 * Packed tile (batches of at least SLM_GEMM_PACK_MIN_M rows): slm_q4_0x8w
 * puts eight consecutive codes of a row in one qword, so the broadcast
 * 8-byte activation word p meets row r in dwords 2r and 2r + 1 of q[p];
 * four vpdpbusd per block and activation row, then one pair-add (two
 * permutes for two activation rows), and the float step for two
 * activation rows at once (16 lanes). */
#if defined(__x86_64__)

#include "gemm_q4_avx512.h"

#include <immintrin.h>
#include <string.h>

#include "../quant/blocks.h"

#define UNROLL _Pragma("GCC unroll 4")
/* bytes ahead of each weight row the unpacked tile prefetches */
#define PREFETCH_BYTES 1024

/* one block (16 nibble bytes) of four rows, one per 128-bit lane */
static inline __m512i load_rows4(const slm_block_q4_0 *r0, const slm_block_q4_0 *r1, const slm_block_q4_0 *r2,
                                 const slm_block_q4_0 *r3)
{
    __m512i z = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)(const void *)r0->qs));
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(const void *)r1->qs), 1);
    z = _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(const void *)r2->qs), 2);
    return _mm512_inserti32x4(z, _mm_loadu_si128((const __m128i *)(const void *)r3->qs), 3);
}

/* four f16 values in one qword, a first */
static inline long long halves4(slm_f16 a, slm_f16 b, slm_f16 c, slm_f16 d)
{
    return (long long)((uint64_t)a | (uint64_t)b << 16 | (uint64_t)c << 32 | (uint64_t)d << 48);
}

/* the f16 scales of rows 2L, 2L + 1 (e, o) in blocks b and b1 */
static inline long long scales4(const slm_block_q4_0 *e, const slm_block_q4_0 *o, int64_t b, int64_t b1)
{
    return halves4(e[b].d, o[b].d, e[b1].d, o[b1].d);
}

/* Lane sums of two blocks: s0/s1 hold rows (2L, 2L + 1) of block b in
 * lane L (four dwords each), t0/t1 the same of block b1; the result's lane
 * L is (row 2L b, row 2L+1 b, row 2L b1, row 2L+1 b1). */
static inline __m512i reduce_2x2(__m512i s0, __m512i s1, __m512i t0, __m512i t1)
{
    const __m512i s = _mm512_add_epi32(_mm512_unpacklo_epi32(s0, s1), _mm512_unpackhi_epi32(s0, s1));
    const __m512i t = _mm512_add_epi32(_mm512_unpacklo_epi32(t0, t1), _mm512_unpackhi_epi32(t0, t1));
    return _mm512_add_epi32(_mm512_unpacklo_epi64(s, t), _mm512_unpackhi_epi64(s, t));
}

/* Row r of the 8-row tile (rows past nr repeat the last one, whose lanes
 * are not stored). */
#define Q4_ROW(r) ((const slm_block_q4_0 *)(const void *)(W + (size_t)((r) < nr ? (r) : nr - 1) * ldw))

static inline __attribute__((always_inline)) void tile_q4_0(int64_t K, const unsigned char *W, size_t ldw,
                                                            int nr, const unsigned char *A, size_t lda,
                                                            float *out, size_t ldo, const int RN)
{
    const slm_block_q4_0 *w0 = Q4_ROW(0), *w1 = Q4_ROW(1), *w2 = Q4_ROW(2), *w3 = Q4_ROW(3);
    const slm_block_q4_0 *w4 = Q4_ROW(4), *w5 = Q4_ROW(5), *w6 = Q4_ROW(6), *w7 = Q4_ROW(7);
    const int64_t nb = K / SLM_QK4_0;
    const __m512i m4 = _mm512_set1_epi8(15), eight = _mm512_set1_epi8(8);
    __m512 acc[4];
    UNROLL for (int c = 0; c < RN; c++) acc[c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b += 2) {
        /* an odd last block is computed twice and accumulated once */
        const int64_t b1 = b + 1 < nb ? b + 1 : b;
        /* software prefetch of the eight streams: at M = 1 they are eight
         * separate segments (matmul.c decode_part), which the hardware
         * prefetchers follow too late at this speed: 27 -> 30-36 GB/s on
         * one core (Zen 5, 48 MB of weights, best of 12; 512..2048 bytes
         * ahead were within noise of each other) */
        _mm_prefetch((const char *)(w0 + b) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w1 + b) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w2 + b) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w3 + b) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w4 + b) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w5 + b) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w6 + b) + PREFETCH_BYTES, _MM_HINT_T0);
        _mm_prefetch((const char *)(w7 + b) + PREFETCH_BYTES, _MM_HINT_T0);
        /* even rows in z0, odd rows in z1 (block b); y0, y1 block b1 */
        const __m512i z0 = load_rows4(w0 + b, w2 + b, w4 + b, w6 + b), z1 = load_rows4(w1 + b, w3 + b, w5 + b, w7 + b);
        const __m512i y0 = load_rows4(w0 + b1, w2 + b1, w4 + b1, w6 + b1);
        const __m512i y1 = load_rows4(w1 + b1, w3 + b1, w5 + b1, w7 + b1);
        const __m512i z0l = _mm512_and_si512(z0, m4), z0h = _mm512_and_si512(_mm512_srli_epi16(z0, 4), m4);
        const __m512i z1l = _mm512_and_si512(z1, m4), z1h = _mm512_and_si512(_mm512_srli_epi16(z1, 4), m4);
        const __m512i y0l = _mm512_and_si512(y0, m4), y0h = _mm512_and_si512(_mm512_srli_epi16(y0, 4), m4);
        const __m512i y1l = _mm512_and_si512(y1, m4), y1h = _mm512_and_si512(_mm512_srli_epi16(y1, 4), m4);
        /* d_w in the layout of reduce_2x2's result */
        const __m512 dw = _mm512_cvtph_ps(_mm256_setr_epi64x(scales4(w0, w1, b, b1), scales4(w2, w3, b, b1),
                                                             scales4(w4, w5, b, b1), scales4(w6, w7, b, b1)));
        UNROLL for (int c = 0; c < RN; c++) {
            const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)(A + (size_t)c * lda);
            const __m512i alo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)a[b].qs));
            const __m512i ahi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)(a[b].qs + 16)));
            const __m512i blo = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)a[b1].qs));
            const __m512i bhi = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)(const void *)(a[b1].qs + 16)));
            /* -8 * sum(a) spread over each lane's four dwords: the start */
            const __m512i na = _mm512_sub_epi32(
                _mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, alo), eight, ahi));
            const __m512i nb1 = _mm512_sub_epi32(
                _mm512_setzero_si512(), _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), eight, blo), eight, bhi));
            const __m512i s0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(na, z0l, alo), z0h, ahi);
            const __m512i s1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(na, z1l, alo), z1h, ahi);
            const __m512i t0 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(nb1, y0l, blo), y0h, bhi);
            const __m512i t1 = _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(nb1, y1l, blo), y1h, bhi);
            const __m512 f = _mm512_cvtepi32_ps(reduce_2x2(s0, s1, t0, t1));
            const float da = _cvtsh_ss(a[b].d), db = _cvtsh_ss(a[b1].d);
            /* d_w * d_a rounded to float, as the generic product */
            const __m512 sc = _mm512_mul_ps(dw, _mm512_broadcast_f32x4(_mm_setr_ps(da, da, db, db)));
            /* block b in dwords 0, 1 of each lane (2, 3 take junk, never
             * stored), then block b1 shuffled under it */
            acc[c] = _mm512_fmadd_ps(f, sc, acc[c]);
            if (b1 != b)
                acc[c] = _mm512_fmadd_ps(_mm512_shuffle_ps(f, f, _MM_SHUFFLE(3, 2, 3, 2)),
                                         _mm512_shuffle_ps(sc, sc, _MM_SHUFFLE(3, 2, 3, 2)), acc[c]);
        }
    }
    /* rows 2L, 2L + 1 sit in dwords 4L, 4L + 1 */
    const __m512i gather = _mm512_setr_epi32(0, 1, 4, 5, 8, 9, 12, 13, 0, 1, 4, 5, 8, 9, 12, 13);
    const __mmask8 keep = (__mmask8)((1u << nr) - 1);
    UNROLL for (int c = 0; c < RN; c++)
        _mm256_mask_storeu_ps(out + (size_t)c * ldo, keep,
                              _mm512_castps512_ps256(_mm512_permutexvar_ps(gather, acc[c])));
}
#undef Q4_ROW

void slm_gemm_q4_0_avx512(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda, int nc,
                          float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    switch (nc) {
    case 4: tile_q4_0(K, W, ldw, nr, A, lda, out, ldo, 4); break;
    case 3: tile_q4_0(K, W, ldw, nr, A, lda, out, ldo, 3); break;
    case 2: tile_q4_0(K, W, ldw, nr, A, lda, out, ldo, 2); break;
    case 1: tile_q4_0(K, W, ldw, nr, A, lda, out, ldo, 1); break;
    default: break;
    }
}

/* Rows r and r + 1 of block b unpacked into one zmm, qword 4i + p = row
 * r + i's codes 8p .. 8p + 7 (low nibbles are elements 0..15, high ones
 * 16..31, so lanes 1 and 3 take the shifted bytes). */
static inline __m512i unpack_rows2(const slm_block_q4_0 *r0, const slm_block_q4_0 *r1)
{
    const __m512i z = _mm512_inserti64x4(
        _mm512_castsi256_si512(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)r0->qs))),
        _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(const void *)r1->qs)), 1);
    /* 16-bit words 8..15 and 24..31 are lanes 1 and 3 */
    return _mm512_and_si512(_mm512_mask_srli_epi16(z, 0xFF00FF00u, z, 4), _mm512_set1_epi8(15));
}

void slm_gemm_pack_q4_0_avx512(int64_t K, const void *vW, size_t ldw, void *dst)
{
    const unsigned char *W = vW;
    slm_q4_0x8w *P = dst;
    const slm_block_q4_0 *w[8];
    for (int r = 0; r < 8; r++) w[r] = (const slm_block_q4_0 *)(const void *)(W + (size_t)r * ldw);
    for (int64_t b = 0; b < K / SLM_QK4_0; b++) {
        /* the same block of the next eight rows, which a batch thread
         * packs next (matmul.c takes chunks of whole tiles), is fetched
         * while this panel's products run */
        for (int r = 0; r < 8; r++) _mm_prefetch((const char *)(w[r] + b) + 8 * ldw, _MM_HINT_T1);
        const __m512i r01 = unpack_rows2(w[0] + b, w[1] + b), r23 = unpack_rows2(w[2] + b, w[3] + b);
        const __m512i r45 = unpack_rows2(w[4] + b, w[5] + b), r67 = unpack_rows2(w[6] + b, w[7] + b);
        for (int p = 0; p < 4; p++) {
            /* qword p of rows 0..3 (then 4..7): index p, 4 + p of each pair;
             * the upper four indices fill lanes that are dropped */
            const __m512i idx = _mm512_setr_epi64(p, 4 + p, 8 + p, 12 + p, p, 4 + p, 8 + p, 12 + p);
            const __m512i lo = _mm512_permutex2var_epi64(r01, idx, r23);
            const __m512i hi = _mm512_permutex2var_epi64(r45, idx, r67);
            _mm512_storeu_si512(P[b].q[p], _mm512_inserti64x4(lo, _mm512_castsi512_si256(hi), 1));
        }
        /* the scales gathered in registers (eight 2-byte stores read back
         * as one vector would stall on store forwarding) */
        const __m128i dv = _mm_set_epi64x(halves4(w[4][b].d, w[5][b].d, w[6][b].d, w[7][b].d),
                                          halves4(w[0][b].d, w[1][b].d, w[2][b].d, w[3][b].d));
        _mm256_storeu_ps(P[b].d, _mm256_cvtph_ps(dv));
    }
}

/* activation word p (8 codes) of a q8_0 block, in every qword */
static inline __m512i act_word(const slm_block_q8_0 *a, int p)
{
    long long v;
    memcpy(&v, a->qs + 8 * p, 8);
    return _mm512_set1_epi64(v);
}

/* dword pair sums of row r: -8 * sum(a) in the even dword of the start,
 * then four vpdpbusd (dwords 2r, 2r + 1 belong to row r) */
static inline __m512i dot_rows8(const __m512i q[4], const slm_block_q8_0 *a, int32_t sum)
{
    __m512i s = _mm512_set1_epi64((long long)(uint32_t)(-8 * sum));
    UNROLL for (int p = 0; p < 4; p++) s = _mm512_dpbusd_epi32(s, q[p], act_word(a, p));
    return s;
}

static inline __attribute__((always_inline)) void tile_q4_0x8w(int64_t K, const slm_q4_0x8w *P,
                                                               const unsigned char *A, size_t lda,
                                                               const slm_q8_0_side *side, float *out,
                                                               size_t ldo, const int RN)
{
    const int64_t nb = K / SLM_QK4_0;
    /* dwords 2r of x then of y, and dwords 2r + 1 */
    const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    /* acc[i]: activation rows 2i (low 8 lanes) and 2i + 1 (high) */
    __m512 acc[2];
    UNROLL for (int i = 0; i < (RN + 1) / 2; i++) acc[i] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const slm_q4_0x8w *p = P + b;
        __m512i q[4];
        UNROLL for (int j = 0; j < 4; j++) q[j] = _mm512_loadu_si512(p->q[j]);
        const __m512 dw = _mm512_broadcast_f32x8(_mm256_loadu_ps(p->d));
        UNROLL for (int i = 0; i < (RN + 1) / 2; i++) {
            const int c = 2 * i, two = c + 1 < RN;
            const slm_block_q8_0 *a0 = (const slm_block_q8_0 *)(const void *)(A + (size_t)c * lda) + b;
            const slm_q8_0_side *s0 = side + c * nb + b, *s1 = two ? s0 + nb : s0;
            const __m512i x = dot_rows8(q, a0, s0->sum);
            const __m512i y = two ? dot_rows8(q, (const slm_block_q8_0 *)(const void *)((const unsigned char *)a0 + lda),
                                              s1->sum)
                                  : _mm512_setzero_si512();
            const __m512i sumi = _mm512_add_epi32(_mm512_permutex2var_epi32(x, even, y),
                                                  _mm512_permutex2var_epi32(x, odd, y));
            const __m512 da = _mm512_mask_broadcastss_ps(_mm512_set1_ps(s0->d), 0xFF00, _mm_load_ss(&s1->d));
            acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sumi), _mm512_mul_ps(dw, da), acc[i]);
        }
    }
    UNROLL for (int i = 0; i < (RN + 1) / 2; i++) {
        _mm256_storeu_ps(out + (size_t)(2 * i) * ldo, _mm512_castps512_ps256(acc[i]));
        if (2 * i + 1 < RN) _mm256_storeu_ps(out + (size_t)(2 * i + 1) * ldo, _mm512_extractf32x8_ps(acc[i], 1));
    }
}

void slm_gemm_q4_0x8w_avx512(int64_t K, const void *vP, int nr, const void *vA, size_t lda,
                             const slm_q8_0_side *side, int nc, float *out, size_t ldo)
{
    (void)nr;   /* a packed panel has 8 rows */
    const slm_q4_0x8w *P = vP;
    const unsigned char *A = vA;
    switch (nc) {
    case 4: tile_q4_0x8w(K, P, A, lda, side, out, ldo, 4); break;
    case 3: tile_q4_0x8w(K, P, A, lda, side, out, ldo, 3); break;
    case 2: tile_q4_0x8w(K, P, A, lda, side, out, ldo, 2); break;
    case 1: tile_q4_0x8w(K, P, A, lda, side, out, ldo, 1); break;
    default: break;
    }
}

#endif
