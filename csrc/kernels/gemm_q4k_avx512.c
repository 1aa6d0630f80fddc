/* AVX-512 VNNI kernels for q4_K weights against q8_K activations: the
 * one- and four-row vec_dot (decode, batches of 1..7) and the 8x4 tiles of
 * batches, packed once per panel (slm_q4_Kx8v) or unpacked per call.
 *
 * The specification is dot_q4_K in vecdot.c: per super-block the exact
 * integers
 *   isum = sum over sub-blocks sb of sc[sb] * sum(code * qa)
 *   msum = sum over sb of m[sb] * (bsums[2sb] + bsums[2sb + 1])
 * then sum += d_a * (d_w * (float)isum - dmin_w * (float)msum), super-block
 * after super-block. Integer sums are exact in any grouping (|isum| <=
 * 256 * 15 * 128 * 63 < 2^31), so the kernels below regroup them freely for
 * the wide registers and keep only the float expression and its order:
 * their results are bit-identical to the generic and AVX2 kernels', and a
 * row's result does not depend on the batch it is computed in.
 *
 * Element e = 64c + 32k + l of a super-block (c < 4, k < 2, l < 32) is
 * nibble k of qs[32c + l]; sub-block e / 32 = 2c + k. */
#if defined(__x86_64__)

#include "gemm_q4k_avx512.h"

#include <immintrin.h>
#include <string.h>

#include "../quant/blocks.h"
#include "simd_avx2.h"
#include "vecdot.h"

#define UNROLL _Pragma("GCC unroll 8")
#define INLINE static inline __attribute__((always_inline))

/* The 64 codes of elements 64c .. 64c + 63 in element order, from the 32
 * bytes qs + 32c: low nibbles (sub-block 2c) in bytes 0..31, high nibbles
 * (sub-block 2c + 1) in bytes 32..63. */
INLINE __m512i codes64(const uint8_t *qs)
{
    const __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(const void *)qs));
    const __m512i shift = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(4), 1);
    return _mm512_and_si512(_mm512_srlv_epi16(v, shift), _mm512_set1_epi8(15));
}

/* The eight 6-bit scales (byte j: sub-block j) and mins of a q4_K block,
 * as slm_k4_scale_min unpacks them, four per 32-bit word: bytes 0..3 of
 * the scales array hold scales 0..3 and the top bits of 4..7, bytes 4..7
 * the mins likewise, bytes 8..11 the low bits of scales (low nibbles) and
 * mins (high nibbles) 4..7. */
INLINE void k4_unpack(const uint8_t *scales, uint64_t *sc, uint64_t *m)
{
    uint32_t u[3];
    memcpy(u, scales, sizeof u);
    const uint32_t s03 = u[0] & 0x3f3f3f3fu, m03 = u[1] & 0x3f3f3f3fu;
    const uint32_t s47 = (u[2] & 0x0f0f0f0fu) | ((u[0] >> 6) & 0x03030303u) << 4;
    const uint32_t m47 = ((u[2] >> 4) & 0x0f0f0f0fu) | ((u[1] >> 6) & 0x03030303u) << 4;
    *sc = s03 | (uint64_t)s47 << 32;
    *m = m03 | (uint64_t)m47 << 32;
}

/* ---- vec_dot: one weight row against one or four activation rows ------ *
 * A super-block is four vectors X[c] = codes64(qs + 32c), which line up with
 * the activation bytes a.qs[64c .. 64c + 64): vpmaddubsw gives 16-bit pair
 * sums (|sum| <= 2 * 15 * 128), vpdpwssd multiplies them by the sub-block's
 * scale (words 0..15: scale 2c, 16..31: scale 2c + 1) and accumulates in
 * 32 bits. msum is one vpmaddwd of the activation's bsums with the mins
 * doubled to pairs; one horizontal reduction gives isum and msum together. */
typedef struct q4k_row {
    __m512i x[4], s[4];   /* codes and scale words per 64 elements */
    __m256i mm;           /* m[j] | m[j] << 16 in dword j */
    float d, dmin;
} q4k_row;

INLINE void q4k_row_load(const slm_block_q4_K *w, q4k_row *R)
{
    uint64_t sc, m;
    k4_unpack(w->scales, &sc, &m);
    /* vpshufb within each 128-bit lane of the broadcast scale bytes: word
     * lanes 0..15 take byte 2c, 16..31 byte 2c + 1 (0x80: a zero byte) */
    const __m512i scv = _mm512_set1_epi64((long long)sc);
    UNROLL for (int c = 0; c < 4; c++) {
        R->x[c] = codes64(w->qs + 32 * c);
        const __m512i ctl = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_set1_epi16((short)(0x8000 | (2 * c)))),
                                               _mm256_set1_epi16((short)(0x8000 | (2 * c + 1))), 1);
        R->s[c] = _mm512_shuffle_epi8(scv, ctl);
    }
    const __m256i md = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)m));
    R->mm = _mm256_or_si256(md, _mm256_slli_epi32(md, 16));
    R->d = f16f(w->d);
    R->dmin = f16f(w->dmin);
}

/* isum and msum of one activation block, each still spread over 8 lanes */
INLINE void q4k_row_ints(const q4k_row *R, const slm_block_q8_K *a, __m256i *iv, __m256i *mv)
{
    /* two chains of vpdpwssd, so that they overlap */
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    UNROLL for (int c = 0; c < 4; c += 2) {
        const __m512i p0 = _mm512_maddubs_epi16(R->x[c], _mm512_loadu_si512((const void *)(a->qs + 64 * c)));
        const __m512i p1 = _mm512_maddubs_epi16(R->x[c + 1], _mm512_loadu_si512((const void *)(a->qs + 64 * c + 64)));
        acc0 = _mm512_dpwssd_epi32(acc0, p0, R->s[c]);
        acc1 = _mm512_dpwssd_epi32(acc1, p1, R->s[c + 1]);
    }
    const __m512i acc = _mm512_add_epi32(acc0, acc1);
    *iv = _mm256_add_epi32(_mm512_castsi512_si256(acc), _mm512_extracti64x4_epi64(acc, 1));
    *mv = _mm256_madd_epi16(load32(a->bsums), R->mm);
}

/* the super-block's term of one activation block, dot_q4_K's expression */
INLINE float q4k_row_term(const q4k_row *R, const slm_block_q8_K *a)
{
    __m256i i8, m8;
    q4k_row_ints(R, a, &i8, &m8);
    /* [i01 i23 m01 m23 | i45 i67 m45 m67] -> [i0123 m0123 .. | i4567 m4567 ..] */
    __m256i h = _mm256_hadd_epi32(i8, m8);
    h = _mm256_hadd_epi32(h, h);
    const __m128i t = _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
    const int isum = _mm_cvtsi128_si32(t), msum = _mm_extract_epi32(t, 1);
    return a->d * (R->d * (float)isum - R->dmin * (float)msum);
}

/* lane j: the sum of the 8 lanes of v[j] */
INLINE __m128i hsum4_i32(const __m256i v[4])
{
    const __m256i h = _mm256_hadd_epi32(_mm256_hadd_epi32(v[0], v[1]), _mm256_hadd_epi32(v[2], v[3]));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

void slm_vec_dot_q4_K_avx512(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q4_K *w = vw;
    const slm_block_q8_K *a = va;
    const int64_t nb = n / SLM_QK_K;
    float sum = 0;
    int64_t b = 0;
    /* four super-blocks at a time: their integers reduced together and
     * their terms formed in four lanes (the scalar expression lane by lane,
     * the same roundings), then added to sum one after the other */
    for (; b + 4 <= nb; b += 4) {
        __m256i iv[4], mv[4];
        UNROLL for (int j = 0; j < 4; j++) {
            q4k_row R;
            q4k_row_load(&w[b + j], &R);
            q4k_row_ints(&R, &a[b + j], &iv[j], &mv[j]);
        }
        const __m128 is = _mm_cvtepi32_ps(hsum4_i32(iv)), ms = _mm_cvtepi32_ps(hsum4_i32(mv));
        const __m128 d = _mm_cvtph_ps(_mm_setr_epi16((short)w[b].d, (short)w[b + 1].d, (short)w[b + 2].d,
                                                     (short)w[b + 3].d, 0, 0, 0, 0));
        const __m128 dmin = _mm_cvtph_ps(_mm_setr_epi16((short)w[b].dmin, (short)w[b + 1].dmin,
                                                        (short)w[b + 2].dmin, (short)w[b + 3].dmin, 0, 0, 0, 0));
        const __m128 ad = _mm_setr_ps(a[b].d, a[b + 1].d, a[b + 2].d, a[b + 3].d);
        float t[4];
        _mm_storeu_ps(t, _mm_mul_ps(ad, _mm_sub_ps(_mm_mul_ps(d, is), _mm_mul_ps(dmin, ms))));
        sum += t[0];
        sum += t[1];
        sum += t[2];
        sum += t[3];
    }
    for (; b < nb; b++) {
        q4k_row R;
        q4k_row_load(&w[b], &R);
        sum += q4k_row_term(&R, &a[b]);
    }
    *s = sum;
}

#define AROW(a, as, r) ((const slm_block_q8_K *)(const void *)((const unsigned char *)(a) + (size_t)(r) * (as)))

/* each weight super-block unpacked once for four activation rows; row r's
 * terms in lane r (the scalar expression lane by lane, the same roundings)
 * added to its own sum in lane r, in the one-row kernel's order */
void slm_vec_dot4_q4_K_avx512(int64_t n, float *s, const void *vw, const void *va, size_t as)
{
    const slm_block_q4_K *w = vw;
    const slm_block_q8_K *a[4] = {AROW(va, as, 0), AROW(va, as, 1), AROW(va, as, 2), AROW(va, as, 3)};
    __m128 sum = _mm_setzero_ps();
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        q4k_row R;
        q4k_row_load(&w[b], &R);
        __m256i iv[4], mv[4];
        UNROLL for (int r = 0; r < 4; r++) q4k_row_ints(&R, &a[r][b], &iv[r], &mv[r]);
        const __m128 is = _mm_cvtepi32_ps(hsum4_i32(iv)), ms = _mm_cvtepi32_ps(hsum4_i32(mv));
        const __m128 ad = _mm_setr_ps(a[0][b].d, a[1][b].d, a[2][b].d, a[3][b].d);
        const __m128 t = _mm_sub_ps(_mm_mul_ps(_mm_set1_ps(R.d), is), _mm_mul_ps(_mm_set1_ps(R.dmin), ms));
        sum = _mm_add_ps(sum, _mm_mul_ps(ad, t));
    }
    _mm_storeu_ps(s, sum);
}

/* ---- tiles: eight weight rows by up to four activation rows ------------- *
 * Rows in lanes (slm_q4_Kx8v): per group of 8 elements one vpdpbusd adds,
 * in lanes 2r and 2r + 1, row r's two 4-element products with a 64-bit
 * broadcast of the activation bytes; after the 4 groups of a sub-block the
 * sums are multiplied by the rows' scales (vpmulld) into isum. Lanes 2r
 * and 2r + 1 are added per super-block, so lane r of an 8-lane vector holds
 * row r's isum, and msum comes from vpdpwssd of the paired mins with the
 * activation's paired sub-block sums. The float combine then runs on the
 * eight rows at once with dot_q4_K's multiply, subtract, multiply and add. */

/* 8x8 transpose of 64-bit words: out[j] word r = in[r] word j */
INLINE void transpose8x8_q(__m512i v[8])
{
    __m512i t[8], u[8];
    UNROLL for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm512_unpacklo_epi64(v[2 * i], v[2 * i + 1]);     /* words 0 2 4 6 of rows 2i, 2i+1 */
        t[2 * i + 1] = _mm512_unpackhi_epi64(v[2 * i], v[2 * i + 1]); /* words 1 3 5 7 */
    }
    /* 128-bit lanes: 0x88 takes lanes 0, 2 of each source, 0xdd lanes 1, 3 */
    UNROLL for (int h = 0; h < 2; h++)
        UNROLL for (int o = 0; o < 2; o++) {
            u[4 * h + o] = _mm512_shuffle_i64x2(t[4 * h + o], t[4 * h + 2 + o], 0x88);       /* words o, 4+o */
            u[4 * h + 2 + o] = _mm512_shuffle_i64x2(t[4 * h + o], t[4 * h + 2 + o], 0xdd);   /* words 2+o, 6+o */
        }
    UNROLL for (int j = 0; j < 4; j++) {
        /* u[j] (u[4 + j]) holds words j and j + 4 of rows 0..3 (4..7) */
        v[j] = _mm512_shuffle_i64x2(u[j], u[4 + j], 0x88);
        v[j + 4] = _mm512_shuffle_i64x2(u[j], u[4 + j], 0xdd);
    }
}

/* super-block b of the eight rows w[r] into P */
static void q4k8_unpack(const slm_block_q4_K *const w[8], int64_t b, slm_q4_Kx8v *P)
{
    uint64_t sc[8], m[8];
    for (int r = 0; r < 8; r++) {
        const slm_block_q4_K *x = w[r] + b;
        k4_unpack(x->scales, &sc[r], &m[r]);
        P->mins[0][r] = (uint32_t)(m[r] & 0xff) | (uint32_t)(m[r] >> 8 & 0xff) << 16;
        P->mins[1][r] = (uint32_t)(m[r] >> 16 & 0xff) | (uint32_t)(m[r] >> 24 & 0xff) << 16;
        P->mins[2][r] = (uint32_t)(m[r] >> 32 & 0xff) | (uint32_t)(m[r] >> 40 & 0xff) << 16;
        P->mins[3][r] = (uint32_t)(m[r] >> 48 & 0xff) | (uint32_t)(m[r] >> 56 & 0xff) << 16;
        P->d[r] = f16f(x->d);
        P->dmin[r] = f16f(x->dmin);
    }
    /* scale bytes of rows 2L, 2L + 1 in 128-bit lane L; dwords 4L .. 4L + 3
     * of sc[sb] take byte sb of row 2L twice, then of row 2L + 1 twice */
    const __m512i scv = _mm512_loadu_si512((const void *)sc);
    for (int sb = 0; sb < 8; sb++) {
        const int lo = 0xffffff00 | sb, hi = 0xffffff00 | (8 + sb);
        _mm512_storeu_si512((void *)P->sc[sb], _mm512_shuffle_epi8(scv, _mm512_set4_epi32(hi, hi, lo, lo)));
    }
    /* codes: 64 elements (8 groups) of the eight rows at a time, transposed
     * so that group g holds 8 bytes of each row */
    for (int c = 0; c < 4; c++) {
        __m512i v[8];
        UNROLL for (int r = 0; r < 8; r++) v[r] = codes64((w[r] + b)->qs + 32 * c);
        transpose8x8_q(v);
        UNROLL for (int j = 0; j < 8; j++) _mm512_storeu_si512((void *)P->q[8 * c + j], v[j]);
    }
}

/* sum[c] += the eight rows' terms of super-block P against activation
 * block b of rows A + c * lda, c < NC (a constant after inlining) */
INLINE void q4k8_block(const slm_q4_Kx8v *P, const unsigned char *A, size_t lda, int64_t b, const int NC,
                       __m256 *sum)
{
    const slm_block_q8_K *a[4];
    UNROLL for (int c = 0; c < NC; c++) a[c] = (const slm_block_q8_K *)(const void *)(A + (size_t)c * lda) + b;
    __m512i isum[4];
    UNROLL for (int c = 0; c < NC; c++) isum[c] = _mm512_setzero_si512();
    UNROLL for (int sb = 0; sb < 8; sb++) {
        __m512i t[4];
        UNROLL for (int c = 0; c < NC; c++) t[c] = _mm512_setzero_si512();
        UNROLL for (int i = 0; i < 4; i++) {
            const int g = 4 * sb + i;
            const __m512i wq = _mm512_loadu_si512((const void *)P->q[g]);
            UNROLL for (int c = 0; c < NC; c++) {
                long long av;
                memcpy(&av, a[c]->qs + 8 * g, sizeof av);
                t[c] = _mm512_dpbusd_epi32(t[c], wq, _mm512_set1_epi64(av));
            }
        }
        const __m512i s = _mm512_loadu_si512((const void *)P->sc[sb]);
        UNROLL for (int c = 0; c < NC; c++) isum[c] = _mm512_add_epi32(isum[c], _mm512_mullo_epi32(t[c], s));
    }
    const __m256 d = _mm256_loadu_ps(P->d), dmin = _mm256_loadu_ps(P->dmin);
    UNROLL for (int c = 0; c < NC; c++) {
        /* lanes 2r + 2r+1 -> lane r (the sum in the low dword of each qword) */
        const __m512i pr = _mm512_add_epi32(isum[c], _mm512_srli_epi64(isum[c], 32));
        const __m256i is = _mm512_cvtepi64_epi32(pr);
        /* the activation's sub-block sums in pairs, two pairs per dword */
        const __m256i sums = _mm256_madd_epi16(load32(a[c]->bsums), _mm256_set1_epi16(1));
        int32_t pk[4];
        _mm_storeu_si128((__m128i *)(void *)pk,
                         _mm_packs_epi32(_mm256_castsi256_si128(sums), _mm256_extracti128_si256(sums, 1)));
        __m256i ms = _mm256_setzero_si256();
        UNROLL for (int p = 0; p < 4; p++)
            ms = _mm256_dpwssd_epi32(ms, _mm256_loadu_si256((const __m256i *)(const void *)P->mins[p]),
                                     _mm256_set1_epi32(pk[p]));
        const __m256 t = _mm256_sub_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(is)), _mm256_mul_ps(dmin, _mm256_cvtepi32_ps(ms)));
        sum[c] = _mm256_add_ps(sum[c], _mm256_mul_ps(_mm256_set1_ps(a[c]->d), t));
    }
}

/* lanes r < nr of sum[c] to out[c * ldo + r] */
static void store_rows(const __m256 *sum, int nr, int nc, float *out, size_t ldo)
{
    for (int c = 0; c < nc; c++) {
        float t[8];
        _mm256_storeu_ps(t, sum[c]);
        memcpy(out + (size_t)c * ldo, t, (size_t)nr * sizeof(float));
    }
}

/* every super-block of panel P (stride pstride blocks: 1 packed, 0 for the
 * one block a plain tile refills) with NC activation rows */
#define Q4K8_RUN(NC, REFILL)                                                                  \
    for (int64_t b = 0; b < nb; b++) {                                                        \
        REFILL;                                                                               \
        q4k8_block(P + b * pstride, A, lda, b, NC, sum);                                       \
    }

void slm_gemm_q4_K_avx512(int64_t K, const void *vW, size_t ldw, int nr, const void *vA, size_t lda, int nc,
                          float *out, size_t ldo)
{
    const unsigned char *W = vW, *A = vA;
    const slm_block_q4_K *w[8];
    /* rows past nr repeat the last one; their lanes are not stored */
    for (int r = 0; r < 8; r++) w[r] = (const slm_block_q4_K *)(const void *)(W + (size_t)(r < nr ? r : nr - 1) * ldw);
    slm_q4_Kx8v Pbuf, *P = &Pbuf;
    const int64_t nb = K / SLM_QK_K, pstride = 0;
    __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    switch (nc) {
    case 1: Q4K8_RUN(1, q4k8_unpack(w, b, P)) break;
    case 2: Q4K8_RUN(2, q4k8_unpack(w, b, P)) break;
    case 3: Q4K8_RUN(3, q4k8_unpack(w, b, P)) break;
    default: Q4K8_RUN(4, q4k8_unpack(w, b, P)) break;
    }
    store_rows(sum, nr, nc, out, ldo);
}

void slm_gemm_pack_q4_K_avx512(int64_t K, const void *vW, size_t ldw, void *dst)
{
    const unsigned char *W = vW;
    const slm_block_q4_K *w[8];
    for (int r = 0; r < 8; r++) w[r] = (const slm_block_q4_K *)(const void *)(W + (size_t)r * ldw);
    for (int64_t b = 0; b < K / SLM_QK_K; b++) q4k8_unpack(w, b, (slm_q4_Kx8v *)dst + b);
}

void slm_gemm_q4_Kx8v_avx512(int64_t K, const void *vP, int nr, const void *vA, size_t lda,
                             const slm_q8_0_side *side, int nc, float *out, size_t ldo)
{
    (void)side;   /* q8_K blocks carry a float scale */
    const slm_q4_Kx8v *P = vP;
    const unsigned char *A = vA;
    const int64_t nb = K / SLM_QK_K, pstride = 1;
    __m256 sum[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
    switch (nc) {
    case 1: Q4K8_RUN(1, (void)0) break;
    case 2: Q4K8_RUN(2, (void)0) break;
    case 3: Q4K8_RUN(3, (void)0) break;
    default: Q4K8_RUN(4, (void)0) break;
    }
    store_rows(sum, nr, nc, out, ldo);
}

#endif
