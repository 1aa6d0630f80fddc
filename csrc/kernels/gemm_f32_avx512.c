/* AVX-512 tile kernel for f32 weights in the tiles' order (gemm.h: one
 * 8-lane chain of FMAs per output over k = 0, 8, ..., then hsum8), the
 * order the generic gemm_f32 (gemm.c) defines and slm_gemm_f32_avx2
 * follows. A zmm register holds the 8-lane accumulators of two outputs
 * (its halves: two weight rows against one activation row), so each
 * output keeps its own chain and bits; the wider registers only hold more
 * outputs. The hsum8 of both halves is taken in the same register, in
 * hsum8's order: s_i = acc_i + acc_{i+4}, then (s0 + s2) + (s1 + s3).
 *
 * Tiles: 8 weight rows (4 pairs) by 4 activation rows, 16 accumulators;
 * per 8 elements of K, 4 weight pairs are assembled (two 256-bit loads
 * each) and 4 activation rows broadcast to both halves, feeding 16 FMAs
 * (32 outputs' lanes). A full tile's 32 sums are taken for two
 * activation rows at a time across registers (hsum8x16), which matters at
 * the small K of RWKV-7's low-rank up-projections (32..128: 4..16 steps of
 * K against 32 reductions). In RWKV-7 these low-rank mixes are the f32
 * products (f32 in the files), a twentieth of a prompt's multiply-adds. */
#if defined(__x86_64__)

#include <immintrin.h>

#include "gemm.h"

#define UNROLL _Pragma("GCC unroll 4")

/* lanes 0 and 8: hsum8 of each half of acc */
static inline __m512 hsum8x2(__m512 acc)
{
    /* s_i = acc_i + acc_{i+4}: swap the 128-bit quarters within each half */
    __m512 s = _mm512_add_ps(acc, _mm512_shuffle_f32x4(acc, acc, _MM_SHUFFLE(2, 3, 0, 1)));
    /* (s0 + s2), (s1 + s3) */
    __m512 u = _mm512_add_ps(s, _mm512_permute_ps(s, _MM_SHUFFLE(1, 0, 3, 2)));
    /* (s0 + s2) + (s1 + s3) */
    return _mm512_add_ps(u, _mm512_permute_ps(u, _MM_SHUFFLE(2, 3, 0, 1)));
}

/* hsum8 of the 16 outputs of eight accumulators (rows 0..7 of activation
 * row c in a0..a3, of c' in b0..b3, two rows per register) in three
 * steps of cross-register shuffles, each step one of hsum8's additions
 * for 4, 8 and 16 outputs at once; lanes 0..7: c's rows 0..7, lanes
 * 8..15: c''s. */
static inline __m512 hsum8x16(__m512 a0, __m512 a1, __m512 a2, __m512 a3, __m512 b0, __m512 b1,
                              __m512 b2, __m512 b3)
{
    /* s_i = acc_i + acc_{i+4}: quarter q of S01 is s of row q (rows 0..3) */
#define S4(x, y)                                                            \
    _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)),     \
                  _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)))
    const __m512 sa0 = S4(a0, a1), sa1 = S4(a2, a3), sb0 = S4(b0, b1), sb1 = S4(b2, b3);
#undef S4
    /* (s0 + s2), (s1 + s3) of row q, then of row 4 + q, in quarter q */
#define U(x, y)                                                             \
    _mm512_add_ps(_mm512_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),        \
                  _mm512_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)))
    const __m512 ua = U(sa0, sa1), ub = U(sb0, sb1);
#undef U
    /* (s0 + s2) + (s1 + s3): quarter q holds c's rows q, 4 + q, then c''s */
    const __m512 r = _mm512_add_ps(_mm512_shuffle_ps(ua, ub, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(ua, ub, _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    return _mm512_permutexvar_ps(order, r);
}

/* RP weight pairs (rows 2p, 2p + 1; a row past nr repeats the last one and
 * is not stored) by RN activation rows. RP and RN are constants at every
 * call site, so the loops unroll and the accumulators stay in registers. */
static inline __attribute__((always_inline)) void tile(int64_t K, const unsigned char *W, size_t ldw,
                                                       int nr, const unsigned char *A, size_t lda,
                                                       float *out, size_t ldo, const int RP,
                                                       const int RN)
{
    const float *w[8];
    UNROLL for (int r = 0; r < 2 * RP; r++)
        w[r] = (const float *)(const void *)(W + (size_t)(r < nr ? r : nr - 1) * ldw);
    __m512 acc[4][4];
    UNROLL for (int p = 0; p < RP; p++)
        UNROLL for (int c = 0; c < RN; c++) acc[p][c] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k += 8) {
        __m512 b[4];
        UNROLL for (int c = 0; c < RN; c++)
            b[c] = _mm512_broadcast_f32x8(_mm256_loadu_ps((const float *)(const void *)(A + (size_t)c * lda) + k));
        UNROLL for (int p = 0; p < RP; p++) {
            const __m512 a = _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(w[2 * p] + k)),
                                                _mm256_loadu_ps(w[2 * p + 1] + k), 1);
            UNROLL for (int c = 0; c < RN; c++) acc[p][c] = _mm512_fmadd_ps(a, b[c], acc[p][c]);
        }
    }
    if (RP == 4) {
        /* two activation rows (c, c + 1; a lone last one twice) at a time */
        const __mmask16 rows = (__mmask16)((1u << nr) - 1);
        UNROLL for (int c = 0; c < RN; c += 2) {
            const int c1 = c + 1 < RN ? c + 1 : c;
            __m512 r8 = hsum8x16(acc[0][c], acc[1][c], acc[2][c], acc[3][c], acc[0][c1], acc[1][c1],
                                 acc[2][c1], acc[3][c1]);
            _mm512_mask_storeu_ps(out + (size_t)c * ldo, rows, r8);
            if (c + 1 < RN)
                _mm512_mask_storeu_ps(out + (size_t)c1 * ldo, rows,
                                      _mm512_shuffle_f32x4(r8, r8, _MM_SHUFFLE(1, 0, 3, 2)));
        }
        return;
    }
    UNROLL for (int c = 0; c < RN; c++)
        UNROLL for (int p = 0; p < RP; p++) {
            float t[16];
            _mm512_storeu_ps(t, hsum8x2(acc[p][c]));
            out[(size_t)c * ldo + 2 * p] = t[0];
            if (2 * p + 1 < nr) out[(size_t)c * ldo + 2 * p + 1] = t[8];
        }
}

void slm_gemm_f32_avx512(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                         int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    const int rp = (nr + 1) / 2;
    switch (rp * 8 + nc) {
#define CASE(P, C) \
    case P * 8 + C: tile(K, W, ldw, nr, A, lda, out, ldo, P, C); break;
        CASE(4, 4) CASE(4, 3) CASE(4, 2) CASE(4, 1)
        CASE(3, 4) CASE(3, 3) CASE(3, 2) CASE(3, 1)
        CASE(2, 4) CASE(2, 3) CASE(2, 2) CASE(2, 1)
        CASE(1, 4) CASE(1, 3) CASE(1, 2) CASE(1, 1)
#undef CASE
    default: break;
    }
}

#endif
