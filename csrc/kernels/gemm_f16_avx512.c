/* AVX-512 tile kernels for f16 and bf16 weights (gemm.h; f32: gemm_f32_avx512.c): the same
 * outputs, bit for bit, as the generic chain in gemm.c and the AVX2 tiles.
 *
 * Every output keeps its own 8-lane accumulator in tinyBLAS's order,
 *   acc += w[k..k+8) * a[k..k+8)   (one FMA per lane, k = 0, 8, ...)
 *   out  = (s0 + s2) + (s1 + s3),  s_i = acc_i + acc_{i+4},
 * so the 16 lanes of a zmm register hold two outputs, not one output's
 * longer sum: a zmm accumulator is [row 2p | row 2p+1] of the weights
 * (eight lanes each) against one activation row, whose eight values are
 * broadcast into both halves. A tile is 8 weight rows (4 row pairs) by up
 * to 6 activation rows: 24 accumulators, 4 weight pairs and 1 activation
 * vector among the 32 registers; per 8 elements of K it loads 4 weight
 * pairs and 6 activation vectors for 24 FMAs (48 outputs' lanes).
 *
 * The horizontal sums at the end keep hsum8's tree: the additions are
 * the same pairs of the same values (only the lane each sum lands in
 * differs), and a float addition is commutative, so the bits are those of
 * gemm.c's hsum8.
 *
 * Rows past nr (a ragged last tile) repeat row nr - 1, whose outputs are
 * not stored: no read outside the caller's rows, no branch in the loop. */
#if defined(__x86_64__)

#include <immintrin.h>

#include "gemm.h"

#define UNROLL _Pragma("GCC unroll 8")

#define F16X_TILE_R 8
#define F16X_TILE_C 6
/* Bytes ahead in each weight row that a tile prefetches, once per 64-byte
 * line: small batches (matmul.c decode_part) read 8 rows as 8 streams
 * from separate segments, more than the hardware prefetchers follow well;
 * this halves the cost per row at M = 4 (bench/gemm_rows.c, one Zen 5
 * core: 0.0235 against 0.0118 ms per 1536 x 576 f16 row). A prefetch past
 * the end of the weights is harmless: prefetches never fault. */
#define F16X_PREFETCH 2048

/* Weight rows r and r' (8 elements at k) as [row r | row r'] floats. */
static inline __m512 f16x_pair_f16(const unsigned char *wr, const unsigned char *wr2, int64_t k)
{
    const __m128i lo = _mm_loadu_si128((const __m128i *)(const void *)(wr + 2 * k));
    const __m128i hi = _mm_loadu_si128((const __m128i *)(const void *)(wr2 + 2 * k));
    return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

static inline __m512 f16x_pair_bf16(const unsigned char *wr, const unsigned char *wr2, int64_t k)
{
    const __m128i lo = _mm_loadu_si128((const __m128i *)(const void *)(wr + 2 * k));
    const __m128i hi = _mm_loadu_si128((const __m128i *)(const void *)(wr2 + 2 * k));
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

/* Rows 0..7 of one activation row's outputs from its 4 pair accumulators
 * (acc[p] = [row 2p | row 2p+1]), each output by hsum8's tree. */
static inline __m256 f16x_hsum_rows(const __m512 a0, const __m512 a1, const __m512 a2, const __m512 a3)
{
    /* s_i = x_i + x_{i+4}: 128-bit lanes [r lo4 | r hi4 | r' lo4 | r' hi4]
     * give u = [s(row 0) | s(row 1) | s(row 2) | s(row 3)] */
    const __m512 u = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(a0, a1, _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512 v = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_f32x4(a2, a3, _MM_SHUFFLE(3, 1, 3, 1)));
    /* per 128-bit lane l: x = [s0 + s2, s1 + s3] of row l (from u) and of
     * row l + 4 (from v) */
    const __m512 x = _mm512_add_ps(_mm512_shuffle_ps(u, v, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(u, v, _MM_SHUFFLE(3, 2, 3, 2)));
    /* (s0 + s2) + (s1 + s3): element 0 of lane l is row l, element 1 row l + 4 */
    const __m512 y = _mm512_add_ps(_mm512_shuffle_ps(x, x, _MM_SHUFFLE(2, 0, 2, 0)),
                                   _mm512_shuffle_ps(x, x, _MM_SHUFFLE(3, 1, 3, 1)));
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_castps512_ps256(_mm512_permutexvar_ps(order, y));
}

/* The tile: 8 weight rows (ragged: repeats of row nr - 1) by RN activation
 * rows, weight elements ESZ bytes wide; RN is a constant at every call site, so the loops unroll and the
 * accumulators stay in registers. */
#define DEFINE_TILE(NAME, PAIR, ESZ)                                                                 \
    static inline __attribute__((always_inline)) void NAME(                                     \
        int64_t K, const unsigned char *W, size_t ldw, int nr, const unsigned char *A,          \
        size_t lda, float *out, size_t ldo, const int RN)                                       \
    {                                                                                           \
        const unsigned char *w[F16X_TILE_R];                                                    \
        for (int r = 0; r < F16X_TILE_R; r++) w[r] = W + (size_t)(r < nr ? r : nr - 1) * ldw;   \
        __m512 acc[4][F16X_TILE_C];                                                             \
        UNROLL for (int p = 0; p < 4; p++)                                                      \
            UNROLL for (int c = 0; c < RN; c++) acc[p][c] = _mm512_setzero_ps();                \
        for (int64_t k = 0; k < K; k += 8) {                                                    \
            if ((k * ESZ & 63) == 0)                                                            \
                UNROLL for (int r = 0; r < F16X_TILE_R; r++)                                    \
                    _mm_prefetch((const char *)w[r] + ESZ * k + F16X_PREFETCH, _MM_HINT_T0);    \
            __m512 wp[4];                                                                       \
            UNROLL for (int p = 0; p < 4; p++) wp[p] = PAIR(w[2 * p], w[2 * p + 1], k);         \
            UNROLL for (int c = 0; c < RN; c++) {                                               \
                const __m512 b = _mm512_broadcast_f32x8(                                        \
                    _mm256_loadu_ps((const float *)(const void *)(A + (size_t)c * lda) + k));   \
                UNROLL for (int p = 0; p < 4; p++) acc[p][c] = _mm512_fmadd_ps(wp[p], b, acc[p][c]); \
            }                                                                                   \
        }                                                                                       \
        const __mmask8 keep = (__mmask8)((1u << nr) - 1);                                       \
        UNROLL for (int c = 0; c < RN; c++)                                                     \
            _mm256_mask_storeu_ps(out + (size_t)c * ldo, keep,                                  \
                                  f16x_hsum_rows(acc[0][c], acc[1][c], acc[2][c], acc[3][c]));  \
    }

DEFINE_TILE(f16x_tile_f16, f16x_pair_f16, 2)
DEFINE_TILE(f16x_tile_bf16, f16x_pair_bf16, 2)

#define DISPATCH(TILE)                                                      \
    switch (nc) {                                                           \
    case 6: TILE(K, W, ldw, nr, A, lda, out, ldo, 6); break;                \
    case 5: TILE(K, W, ldw, nr, A, lda, out, ldo, 5); break;                \
    case 4: TILE(K, W, ldw, nr, A, lda, out, ldo, 4); break;                \
    case 3: TILE(K, W, ldw, nr, A, lda, out, ldo, 3); break;                \
    case 2: TILE(K, W, ldw, nr, A, lda, out, ldo, 2); break;                \
    case 1: TILE(K, W, ldw, nr, A, lda, out, ldo, 1); break;                \
    default: break;                                                         \
    }

void slm_gemm_f16_avx512(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                         int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    if (nr < 1 || nr > F16X_TILE_R) return;
    DISPATCH(f16x_tile_f16)
}

void slm_gemm_bf16_avx512(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                          int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    if (nr < 1 || nr > F16X_TILE_R) return;
    DISPATCH(f16x_tile_bf16)
}

#endif
