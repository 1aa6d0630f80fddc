/* AVX2/FMA/F16C tile kernels for gemm.h; every output is the chain of the
 * generic kernel in gemm.c.
 *
 * f16/bf16/f32: a tile of RM weight rows by RN activation rows keeps RM * RN
 * accumulators in registers (at most 12 of the 16 ymm registers), loads RN
 * activation vectors and converts RM weight vectors per 8 elements of K.
 *
 * q4_0: eight weight rows, one per float lane. Per block and activation
 * row, the 32 products of each weight row are summed exactly in 16-bit
 * lanes (maddubs, then a tree of hadds that leaves row r in lane r), so
 * the only float work is one FMA per block for all eight rows. */
#if defined(__x86_64__)

#include "../quant/blocks.h"
#include "gemm.h"
#include "simd_avx2.h"

#define UNROLL _Pragma("GCC unroll 4")

/* RM and RN are constants at every call site, so the loops unroll and the
 * accumulator array lives in registers. */
#define DEFINE_TILE(NAME, LOAD, ESIZE)                                                          \
    static inline __attribute__((always_inline)) void NAME(                                     \
        int64_t K, const unsigned char *W, size_t ldw, const unsigned char *A, size_t lda,      \
        float *out,                                                                             \
        size_t ldo, const int RM, const int RN)                                                 \
    {                                                                                           \
        __m256 acc[4][3];                                                                       \
        UNROLL for (int r = 0; r < RM; r++)                                                     \
            UNROLL for (int c = 0; c < RN; c++) acc[r][c] = _mm256_setzero_ps();                \
        for (int64_t k = 0; k < K; k += 8) {                                                    \
            __m256 b[3];                                                                        \
            UNROLL for (int c = 0; c < RN; c++)                                                 \
                b[c] = _mm256_loadu_ps((const float *)(const void *)(A + (size_t)c * lda) + k); \
            UNROLL for (int r = 0; r < RM; r++) {                                               \
                const __m256 a = LOAD(W + (size_t)r * ldw + ESIZE * k);                         \
                UNROLL for (int c = 0; c < RN; c++) acc[r][c] = _mm256_fmadd_ps(a, b[c], acc[r][c]); \
            }                                                                                   \
        }                                                                                       \
        UNROLL for (int c = 0; c < RN; c++)                                                     \
            UNROLL for (int r = 0; r < RM; r++) out[(size_t)c * ldo + r] = hsum_ps(acc[r][c]);  \
    }

static inline __m256 load_f32x8(const void *p) { return _mm256_loadu_ps((const float *)p); }

DEFINE_TILE(tile_f16, load_f16x8, 2)
DEFINE_TILE(tile_bf16, load_bf16x8, 2)
DEFINE_TILE(tile_f32, load_f32x8, 4)

#define DISPATCH(TILE)                                                                          \
    switch (nr * 4 + nc) {                                                                      \
    case 4 * 4 + 3: TILE(K, W, ldw, A, lda, out, ldo, 4, 3); break;                            \
    case 4 * 4 + 2: TILE(K, W, ldw, A, lda, out, ldo, 4, 2); break;                            \
    case 4 * 4 + 1: TILE(K, W, ldw, A, lda, out, ldo, 4, 1); break;                            \
    case 3 * 4 + 3: TILE(K, W, ldw, A, lda, out, ldo, 3, 3); break;                            \
    case 3 * 4 + 2: TILE(K, W, ldw, A, lda, out, ldo, 3, 2); break;                            \
    case 3 * 4 + 1: TILE(K, W, ldw, A, lda, out, ldo, 3, 1); break;                            \
    case 2 * 4 + 3: TILE(K, W, ldw, A, lda, out, ldo, 2, 3); break;                            \
    case 2 * 4 + 2: TILE(K, W, ldw, A, lda, out, ldo, 2, 2); break;                            \
    case 2 * 4 + 1: TILE(K, W, ldw, A, lda, out, ldo, 2, 1); break;                            \
    case 1 * 4 + 3: TILE(K, W, ldw, A, lda, out, ldo, 1, 3); break;                            \
    case 1 * 4 + 2: TILE(K, W, ldw, A, lda, out, ldo, 1, 2); break;                            \
    case 1 * 4 + 1: TILE(K, W, ldw, A, lda, out, ldo, 1, 1); break;                            \
    default: break;                                                                             \
    }

void slm_gemm_f16_avx2(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                       int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    DISPATCH(tile_f16)
}

void slm_gemm_bf16_avx2(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                        int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    DISPATCH(tile_bf16)
}

void slm_gemm_f32_avx2(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                       int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    DISPATCH(tile_f32)
}

/* out[c * ldo + r] = lane r of acc[c], for r < nr and c < nc */
static inline __attribute__((always_inline)) void store_lanes(const __m256 *acc, int nr, int nc, float *out,
                                                              size_t ldo)
{
    for (int c = 0; c < nc; c++) {
        if (nr == 8) {
            _mm256_storeu_ps(out + (size_t)c * ldo, acc[c]);
        } else {
            float t[8];
            _mm256_storeu_ps(t, acc[c]);
            for (int r = 0; r < nr; r++) out[(size_t)c * ldo + r] = t[r];
        }
    }
}

/* Row r of an 8-row q4_0 tile (rows past nr repeat the last one, whose
 * lanes are not stored). */
#define Q4_ROW(r) ((const slm_block_q4_0 *)(W + (size_t)((r) < nr ? (r) : nr - 1) * ldw))

static inline __attribute__((always_inline)) void tile_q4_0(int64_t K, const unsigned char *W,
                                                            size_t ldw, int nr,
                                                            const unsigned char *A, size_t lda,
                                                            float *out, size_t ldo, const int RN)
{
    const slm_block_q4_0 *w0 = Q4_ROW(0), *w1 = Q4_ROW(1), *w2 = Q4_ROW(2), *w3 = Q4_ROW(3);
    const slm_block_q4_0 *w4 = Q4_ROW(4), *w5 = Q4_ROW(5), *w6 = Q4_ROW(6), *w7 = Q4_ROW(7);
#undef Q4_ROW
    const __m256i eight = _mm256_set1_epi8(8);
    __m256 acc[4];
    UNROLL for (int c = 0; c < RN; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < K / SLM_QK4_0; b++) {
        const __m256 dw = _mm256_cvtph_ps(_mm_setr_epi16(
            (short)w0[b].d, (short)w1[b].d, (short)w2[b].d, (short)w3[b].d, (short)w4[b].d,
            (short)w5[b].d, (short)w6[b].d, (short)w7[b].d));
        /* codes 0..15, unsigned for maddubs; the -8 goes through s8 */
        const __m256i q0 = unpack_nibbles(w0[b].qs), q1 = unpack_nibbles(w1[b].qs);
        const __m256i q2 = unpack_nibbles(w2[b].qs), q3 = unpack_nibbles(w3[b].qs);
        const __m256i q4 = unpack_nibbles(w4[b].qs), q5 = unpack_nibbles(w5[b].qs);
        const __m256i q6 = unpack_nibbles(w6[b].qs), q7 = unpack_nibbles(w7[b].qs);
        UNROLL for (int c = 0; c < RN; c++) {
            const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)(A + (size_t)c * lda) + b;
            const __m256i av = load32(a->qs);
            /* 8 (a_2i + a_2i+1): |(q - 8) a| pair sums stay within 2032 and
             * the 16-element sums of the tree within 16256 */
            const __m256i s8 = _mm256_maddubs_epi16(eight, av);
#define P(q) _mm256_sub_epi16(_mm256_maddubs_epi16(q, av), s8)
            const __m256i h01 = _mm256_hadd_epi16(P(q0), P(q1)), h23 = _mm256_hadd_epi16(P(q2), P(q3));
            const __m256i h45 = _mm256_hadd_epi16(P(q4), P(q5)), h67 = _mm256_hadd_epi16(P(q6), P(q7));
#undef P
            /* lane r of each 128-bit half: row r's sum over elements 0..15
             * (low half) or 16..31 (high half) */
            const __m256i h = _mm256_hadd_epi16(_mm256_hadd_epi16(h01, h23), _mm256_hadd_epi16(h45, h67));
            const __m256i sumi = _mm256_add_epi32(_mm256_cvtepi16_epi32(_mm256_castsi256_si128(h)),
                                                  _mm256_cvtepi16_epi32(_mm256_extracti128_si256(h, 1)));
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(dw, _mm256_set1_ps(f16f(a->d))),
                                     acc[c]);
        }
    }
    store_lanes(acc, nr, RN, out, ldo);
}

void slm_gemm_q4_0_avx2(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                        int nc, float *out, size_t ldo)
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

/* Packs 8 q4_0 rows (slm_q4_0x8): per block, each row's 32 codes in
 * element order (dword j = elements 4j..4j+3), then an 8x8 transpose of
 * dwords so that vector j holds dword j of rows 0..7. */
void slm_gemm_pack_q4_0_avx2(int64_t K, const void *vW, size_t ldw, void *dst)
{
    const unsigned char *W = vW;
    slm_q4_0x8 *P = dst;
    for (int64_t b = 0; b < K / SLM_QK4_0; b++) {
        __m256i r[8];
        uint16_t d[8];
        for (int i = 0; i < 8; i++) {
            const slm_block_q4_0 *w = (const slm_block_q4_0 *)(const void *)(W + (size_t)i * ldw) + b;
            r[i] = unpack_nibbles(w->qs);
            d[i] = w->d;
        }
        _mm256_storeu_ps(P[b].d, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)d)));
        __m256i t[8], u[8];
        for (int i = 0; i < 8; i += 2) {
            t[i] = _mm256_unpacklo_epi32(r[i], r[i + 1]);
            t[i + 1] = _mm256_unpackhi_epi32(r[i], r[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
            u[i] = _mm256_unpacklo_epi64(t[i], t[i + 2]);
            u[i + 1] = _mm256_unpackhi_epi64(t[i], t[i + 2]);
            u[i + 2] = _mm256_unpacklo_epi64(t[i + 1], t[i + 3]);
            u[i + 3] = _mm256_unpackhi_epi64(t[i + 1], t[i + 3]);
        }
        for (int j = 0; j < 4; j++) {
            _mm256_storeu_si256((__m256i *)(void *)P[b].q[j], _mm256_permute2x128_si256(u[j], u[j + 4], 0x20));
            _mm256_storeu_si256((__m256i *)(void *)P[b].q[j + 4], _mm256_permute2x128_si256(u[j], u[j + 4], 0x31));
        }
    }
}

/* Tile over a packed panel: lane r of byte multiply-add j is row r's four
 * codes times activation word j (broadcast); the eight products' 16-bit
 * pair sums add up exactly (|sum| <= 16 * 15 * 128 < 2^15), then one
 * madd gives each row's sum of codes times activations, less 8 * sum(a)
 * (the block's code sum and float scale come from side). */
static inline __attribute__((always_inline)) void tile_q4_0x8(int64_t K, const slm_q4_0x8 *P,
                                                              const unsigned char *A, size_t lda,
                                                              const slm_q8_0_side *side, float *out,
                                                              size_t ldo, const int RN)
{
    const __m256i ones = _mm256_set1_epi16(1);
    const int64_t nb = K / SLM_QK4_0;
    __m256 acc[4];
    UNROLL for (int c = 0; c < RN; c++) acc[c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nb; b++) {
        const slm_q4_0x8 *p = P + b;
        const __m256 dw = _mm256_loadu_ps(p->d);
        UNROLL for (int c = 0; c < RN; c++) {
            const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)(A + (size_t)c * lda) + b;
            const slm_q8_0_side *sd = side + c * nb + b;
            const __m256i s = _mm256_set1_epi32(8 * sd->sum);   /* 8 * sum(a) */
            __m256i h = _mm256_setzero_si256();
            UNROLL for (int j = 0; j < 8; j++) {
                int32_t aw;
                memcpy(&aw, a->qs + 4 * j, 4);
                h = _mm256_add_epi16(h, _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(const void *)p->q[j]),
                                                             _mm256_set1_epi32(aw)));
            }
            const __m256i sumi = _mm256_sub_epi32(_mm256_madd_epi16(h, ones), s);
            acc[c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sumi), _mm256_mul_ps(dw, _mm256_set1_ps(sd->d)), acc[c]);
        }
    }
    store_lanes(acc, 8, RN, out, ldo);
}

void slm_gemm_q4_0x8_avx2(int64_t K, const void *vP, int nr, const void *vA, size_t lda,
                          const slm_q8_0_side *side, int nc, float *out, size_t ldo)
{
    (void)nr;
    const slm_q4_0x8 *P = vP;
    const unsigned char *A = vA;
    switch (nc) {
    case 4: tile_q4_0x8(K, P, A, lda, side, out, ldo, 4); break;
    case 3: tile_q4_0x8(K, P, A, lda, side, out, ldo, 3); break;
    case 2: tile_q4_0x8(K, P, A, lda, side, out, ldo, 2); break;
    case 1: tile_q4_0x8(K, P, A, lda, side, out, ldo, 1); break;
    default: break;
    }
}

/* q8_0 and q5_0: the order of the reference's x86 vec_dot (no repacking
 * for these types): per output one 8-lane accumulator, lane j += the
 * integer sum of elements 4j..4j+3 of block b times (d_w * d_a), then
 * hsum. Tiles of 2 weight rows by up to 4 activation rows (matmul asks
 * for 3: fewer live registers measured faster) share the unpacking of a
 * weight block over the activation rows and an activation block's load
 * and scale over 2 weight rows; the accumulators stay in registers. */
static inline __m256i q8_0_codes(const slm_block_q8_0 *w) { return load32(w->qs); }
static inline __m256i q5_0_codes(const slm_block_q5_0 *w)
{
    return _mm256_sub_epi8(q5_codes(w->qs, w->qh), _mm256_set1_epi8(16));
}

/* one block of RM weight rows (codes q, magnitudes aq, scales dw) against
 * RN activation rows; their scales from side (SIDE: row c's at
 * side + c * nb) or from the blocks */
static inline __attribute__((always_inline)) void lane_block(const __m256i *q, const __m256i *aq,
                                                             const __m256 *dw, const unsigned char *A,
                                                             size_t lda, const slm_q8_0_side *side,
                                                             int64_t nb, int64_t b, __m256 acc[2][4],
                                                             const int RM, const int RN, const int SIDE)
{
    UNROLL for (int c = 0; c < RN; c++) {
        const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)(A + (size_t)c * lda) + b;
        const __m256i av = load32(a->qs);
        const __m256 da = SIDE ? _mm256_broadcast_ss(&side[c * nb + b].d) : _mm256_set1_ps(f16f(a->d));
        UNROLL for (int r = 0; r < RM; r++) {
            const __m256i p = dot_u8_i8(aq[r], _mm256_sign_epi8(av, q[r]));
            acc[r][c] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_mul_ps(dw[r], da), acc[r][c]);
        }
    }
}

static inline __attribute__((always_inline)) void lane_store(__m256 acc[2][4], float *out, size_t ldo,
                                                             const int RM, const int RN)
{
    UNROLL for (int c = 0; c < RN; c++)
        UNROLL for (int r = 0; r < RM; r++) out[(size_t)c * ldo + r] = hsum_ps(acc[r][c]);
}

#define DEFINE_LANE_TILE(NAME, WBLOCK, CODES)                                                   \
    static inline __attribute__((always_inline)) void NAME(                                     \
        int64_t K, const unsigned char *W, size_t ldw, const unsigned char *A, size_t lda,      \
        float *out, size_t ldo, const int RM, const int RN)                                     \
    {                                                                                           \
        __m256 acc[2][4];                                                                       \
        UNROLL for (int r = 0; r < RM; r++)                                                     \
            UNROLL for (int c = 0; c < RN; c++) acc[r][c] = _mm256_setzero_ps();                \
        for (int64_t b = 0; b < K / 32; b++) {                                                  \
            __m256i q[2], aq[2];                                                                \
            __m256 dw[2];                                                                       \
            UNROLL for (int r = 0; r < RM; r++) {                                               \
                const WBLOCK *w = (const WBLOCK *)(const void *)(W + (size_t)r * ldw) + b;      \
                /* adjacent rows of a batch tile: fetch the next tile's */                      \
                if (RN > 1) _mm_prefetch((const char *)w + (size_t)RM * ldw, _MM_HINT_T0);      \
                q[r] = CODES(w);                                                                \
                aq[r] = _mm256_sign_epi8(q[r], q[r]);                                           \
                dw[r] = _mm256_set1_ps(f16f(w->d));                                             \
            }                                                                                   \
            lane_block(q, aq, dw, A, lda, NULL, 0, b, acc, RM, RN, 0);                          \
        }                                                                                       \
        lane_store(acc, out, ldo, RM, RN);                                                      \
    }                                                                                           \
                                                                                                \
    /* batches: two rows' codes, magnitudes and scales, once per panel */                      \
    void slm_gemm_pack_##NAME##_avx2(int64_t K, const void *vW, size_t ldw, void *dst)          \
    {                                                                                           \
        const unsigned char *W = vW;                                                            \
        slm_qs8x2 *P = dst;                                                                     \
        for (int64_t b = 0; b < K / 32; b++)                                                    \
            for (int r = 0; r < 2; r++) {                                                       \
                const WBLOCK *w = (const WBLOCK *)(const void *)(W + (size_t)r * ldw) + b;      \
                const __m256i q = CODES(w);                                                     \
                _mm256_storeu_si256((__m256i *)(void *)P[b].q[r], q);                           \
                _mm256_storeu_si256((__m256i *)(void *)P[b].aq[r], _mm256_sign_epi8(q, q));     \
                P[b].d[r] = f16f(w->d);                                                         \
            }                                                                                   \
    }

/* the tile over a packed panel of two rows (q8_0 and q5_0 alike) */
static inline __attribute__((always_inline)) void tile_qs8x2(int64_t K, const slm_qs8x2 *P, const unsigned char *A,
                                                             size_t lda, const slm_q8_0_side *side, float *out,
                                                             size_t ldo, const int RN)
{
    __m256 acc[2][4];
    UNROLL for (int r = 0; r < 2; r++)
        UNROLL for (int c = 0; c < RN; c++) acc[r][c] = _mm256_setzero_ps();
    for (int64_t b = 0; b < K / 32; b++) {
        const __m256i q[2] = {_mm256_loadu_si256((const __m256i *)(const void *)P[b].q[0]),
                              _mm256_loadu_si256((const __m256i *)(const void *)P[b].q[1])};
        const __m256i aq[2] = {_mm256_loadu_si256((const __m256i *)(const void *)P[b].aq[0]),
                               _mm256_loadu_si256((const __m256i *)(const void *)P[b].aq[1])};
        const __m256 dw[2] = {_mm256_set1_ps(P[b].d[0]), _mm256_set1_ps(P[b].d[1])};
        lane_block(q, aq, dw, A, lda, side, K / 32, b, acc, 2, RN, 1);
    }
    lane_store(acc, out, ldo, 2, RN);
}

void slm_gemm_qs8x2_avx2(int64_t K, const void *vP, int nr, const void *vA, size_t lda,
                         const slm_q8_0_side *side, int nc, float *out, size_t ldo)
{
    (void)nr;
    const slm_qs8x2 *P = vP;
    const unsigned char *A = vA;
    switch (nc) {
    case 4: tile_qs8x2(K, P, A, lda, side, out, ldo, 4); break;
    case 3: tile_qs8x2(K, P, A, lda, side, out, ldo, 3); break;
    case 2: tile_qs8x2(K, P, A, lda, side, out, ldo, 2); break;
    case 1: tile_qs8x2(K, P, A, lda, side, out, ldo, 1); break;
    default: break;
    }
}

DEFINE_LANE_TILE(tile_q8_0, slm_block_q8_0, q8_0_codes)
DEFINE_LANE_TILE(tile_q5_0, slm_block_q5_0, q5_0_codes)

#define LANE_DISPATCH(TILE)                                                                     \
    switch (nr * 8 + nc) {                                                                      \
    case 2 * 8 + 4: TILE(K, W, ldw, A, lda, out, ldo, 2, 4); break;                            \
    case 2 * 8 + 3: TILE(K, W, ldw, A, lda, out, ldo, 2, 3); break;                            \
    case 2 * 8 + 2: TILE(K, W, ldw, A, lda, out, ldo, 2, 2); break;                            \
    case 2 * 8 + 1: TILE(K, W, ldw, A, lda, out, ldo, 2, 1); break;                            \
    case 1 * 8 + 4: TILE(K, W, ldw, A, lda, out, ldo, 1, 4); break;                            \
    case 1 * 8 + 3: TILE(K, W, ldw, A, lda, out, ldo, 1, 3); break;                            \
    case 1 * 8 + 2: TILE(K, W, ldw, A, lda, out, ldo, 1, 2); break;                            \
    case 1 * 8 + 1: TILE(K, W, ldw, A, lda, out, ldo, 1, 1); break;                            \
    default: break;                                                                             \
    }

void slm_gemm_q8_0_avx2(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                        int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    LANE_DISPATCH(tile_q8_0)
}

void slm_gemm_q5_0_avx2(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                        int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    LANE_DISPATCH(tile_q5_0)
}

/* q4_K (AVX2 only): the expression of slm_vec_dot_q4_K_avx2 per output and
 * super-block, sum += d_a * (d_w * (float)isum - dmin_w * (float)msum),
 * whose isum (codes times activations, scaled per sub-block) and msum
 * (mins times the activations' sub-block sums) are exact integers, so any
 * grouping gives them. Eight weight rows go in eight lanes: a super-block
 * of the eight rows is first unpacked (slm_q4_Kx8: codes, scales already
 * in 16 lanes, mins paired), each row's integer products are then summed
 * in one vector, a tree of hadds puts row r in lane r, and the float
 * combine runs on all eight rows with the scalar code's multiply,
 * subtract, multiply and add. Batches unpack a panel once (pack) for all
 * activation rows; the plain tile unpacks per call. */
static void q4_K_unpack(const slm_block_q4_K *const w[8], int64_t b, slm_q4_Kx8 *P)
{
    const __m256i m4 = _mm256_set1_epi8(15);
    for (int r = 0; r < 8; r++) {
        const slm_block_q4_K *x = w[r] + b;
        /* the 6-bit scales and mins of slm_k4_scale_min, four per word:
         * bytes 0..3 hold scales (4..7: mins) 0..3 and the top bits of
         * 4..7, bytes 8..11 the low bits of 4..7 */
        uint32_t u[3];
        memcpy(u, x->scales, sizeof u);
        const uint32_t s03 = u[0] & 0x3f3f3f3fu, m03 = u[1] & 0x3f3f3f3fu;
        const uint32_t s47 = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 6) & 0x03030303u) << 4;
        const uint32_t m47 = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 6) & 0x03030303u) << 4;
        for (int j = 0; j < 4; j++) {
            _mm256_store_si256((__m256i *)(void *)P->sc[r][j], _mm256_set1_epi16((short)(s03 >> 8 * j & 0xff)));
            _mm256_store_si256((__m256i *)(void *)P->sc[r][j + 4], _mm256_set1_epi16((short)(s47 >> 8 * j & 0xff)));
        }
        P->mins[0][r] = (m03 & 0xff) | (m03 >> 8 & 0xff) << 16;
        P->mins[1][r] = (m03 >> 16 & 0xff) | (m03 >> 24) << 16;
        P->mins[2][r] = (m47 & 0xff) | (m47 >> 8 & 0xff) << 16;
        P->mins[3][r] = (m47 >> 16 & 0xff) | (m47 >> 24) << 16;
        for (int q = 0; q < 4; q++) {
            const __m256i v = load32(x->qs + 32 * q);
            _mm256_store_si256((__m256i *)(void *)(P->q[r] + 64 * q), _mm256_and_si256(v, m4));
            _mm256_store_si256((__m256i *)(void *)(P->q[r] + 64 * q + 32), _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
        }
        P->d[r] = f16f(x->d);
        P->dmin[r] = f16f(x->dmin);
    }
}

/* sum += the eight rows' terms of one super-block against activation block a */
static inline __attribute__((always_inline)) __m256 q4_K_block(const slm_q4_Kx8 *P, const slm_block_q8_K *a,
                                                               __m256 sum)
{
    __m256i acc[8];
    _Pragma("GCC unroll 8") for (int r = 0; r < 8; r++) {
        acc[r] = _mm256_setzero_si256();
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            const __m256i p = _mm256_maddubs_epi16(_mm256_load_si256((const __m256i *)(const void *)(P->q[r] + 32 * j)),
                                                   load32(a->qs + 32 * j));
            acc[r] = _mm256_add_epi32(acc[r], _mm256_madd_epi16(p, _mm256_load_si256((const __m256i *)(const void *)P->sc[r][j])));
        }
    }
    /* lane r of each half: row r's sum over that half's lanes */
    const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[0], acc[1]), _mm256_hadd_epi32(acc[2], acc[3]));
    const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(acc[4], acc[5]), _mm256_hadd_epi32(acc[6], acc[7]));
    const __m256i isum = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20), _mm256_permute2x128_si256(h0, h1, 0x31));
    /* the activation's eight sub-block sums, two per 32-bit word */
    int32_t pk[4];
    const __m256i sums = _mm256_madd_epi16(load32(a->bsums), _mm256_set1_epi16(1));
    _mm_storeu_si128((__m128i *)(void *)pk, _mm_packs_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1)));
    __m256i msum = _mm256_setzero_si256();
    UNROLL for (int p = 0; p < 4; p++)
        msum = _mm256_add_epi32(msum, _mm256_madd_epi16(_mm256_load_si256((const __m256i *)(const void *)P->mins[p]),
                                                        _mm256_set1_epi32(pk[p])));
    const __m256 t = _mm256_sub_ps(_mm256_mul_ps(_mm256_load_ps(P->d), _mm256_cvtepi32_ps(isum)),
                                   _mm256_mul_ps(_mm256_load_ps(P->dmin), _mm256_cvtepi32_ps(msum)));
    return _mm256_add_ps(sum, _mm256_mul_ps(_mm256_set1_ps(a->d), t));
}

void slm_gemm_q4_K_avx2(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda,
                        int nc, float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    const slm_block_q4_K *w[8];
    for (int r = 0; r < 8; r++) w[r] = (const slm_block_q4_K *)(const void *)(W + (size_t)(r < nr ? r : nr - 1) * ldw);
    slm_q4_Kx8 P;
    __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < K / SLM_QK_K; b++) {
        q4_K_unpack(w, b, &P);
        for (int c = 0; c < nc; c++)
            sum[c] = q4_K_block(&P, (const slm_block_q8_K *)(const void *)(A + (size_t)c * lda) + b, sum[c]);
    }
    store_lanes(sum, nr, nc, out, ldo);
}

void slm_gemm_pack_q4_K_avx2(int64_t K, const void *vW, size_t ldw, void *dst)
{
    const unsigned char *W = vW;
    const slm_block_q4_K *w[8];
    for (int r = 0; r < 8; r++) w[r] = (const slm_block_q4_K *)(const void *)(W + (size_t)r * ldw);
    for (int64_t b = 0; b < K / SLM_QK_K; b++) q4_K_unpack(w, b, (slm_q4_Kx8 *)dst + b);
}

void slm_gemm_q4_Kx8_avx2(int64_t K, const void *vP, int nr, const void *vA, size_t lda,
                          const slm_q8_0_side *side, int nc, float *out, size_t ldo)
{
    (void)side;   /* q8_K blocks carry a float scale */
    const slm_q4_Kx8 *P = vP;
    const unsigned char *A = vA;
    __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t b = 0; b < K / SLM_QK_K; b++)
        for (int c = 0; c < nc; c++)
            sum[c] = q4_K_block(P + b, (const slm_block_q8_K *)(const void *)(A + (size_t)c * lda) + b, sum[c]);
    store_lanes(sum, nr, nc, out, ldo);
}

void slm_gemm_act_f16_avx2(const float *x, float *y, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_cvtph_ps(_mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT)));
    for (; i < n; i++) y[i] = slm_f16_to_f32(slm_f32_to_f16(x[i]));
}

void slm_gemm_act_bf16_avx2(const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++) y[i] = slm_bf16_to_f32(slm_f32_to_bf16(x[i]));
}

#endif
