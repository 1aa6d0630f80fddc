/* The AVX-512 VNNI q8_0 / q5_0 kernels (kernels/gemm_q8_avx512.c) give
 * every output the bits of the order in gemm.h, written out here from the
 * block formats:
 *
 *   acc[8] = 0; for each block b: lane j = sum_{i<4} w[4j+i] * a[4j+i]
 *   (exact integers), acc[j] = fmaf((float)lane, d_w * d_a, acc[j]);
 *   out = (s0 + s2) + (s1 + s3), s_i = acc[i] + acc[i + 4]
 *
 * - tiles of every shape nr <= tile_r, nc <= tile_c over rows with odd
 *   strides, K from one block to 37, and packed panels, both tiers'
 *   kernels (AVX-512 and AVX2) against that scalar chain, nothing written
 *   outside the tile;
 * - whole slm_matmul_raw products (2 threads, M = 1..20 and 128) at the
 *   AVX-512 tier equal to the AVX2 tier and to the chain (so a row's output
 *   does not depend on its batch);
 * - the q8_0 vec_dot and four-row vec_dot equal to the AVX2 ones.
 * Without AVX-512 on the CPU the AVX-512 cases print "skip:" and the AVX2
 * tier is still checked against the chain. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TESTRAND_SEED 80808
#include "check.h"
#include "testrand.h"

#include "core/fp16.h"
#include "core/pool.h"
#include "kernels/gemm.h"
#include "kernels/gemm_q8_avx512.h"
#include "kernels/matmul.h"
#include "kernels/vecdot.h"
#include "quant/blocks.h"

enum { MAXK = 32 * 37, MAXR = 8, MAXC = 4 };

/* element codes of one weight block, from the formats (quant/blocks.h):
 * q8_0 the bytes; q5_0 nibble (low nibbles: elements 0..15, high: 16..31)
 * with bit j of the little-endian qh word as element j's fifth bit, -16 */
static float block_codes(slm_dtype t, const unsigned char *row, int64_t b, int code[32])
{
    if (t == SLM_DTYPE_Q8_0) {
        const slm_block_q8_0 *w = (const slm_block_q8_0 *)(const void *)row + b;
        for (int j = 0; j < 32; j++) code[j] = w->qs[j];
        return slm_f16_to_f32(w->d);
    }
    const slm_block_q5_0 *w = (const slm_block_q5_0 *)(const void *)row + b;
    const uint32_t qh = (uint32_t)w->qh[0] | (uint32_t)w->qh[1] << 8 | (uint32_t)w->qh[2] << 16 |
                        (uint32_t)w->qh[3] << 24;
    for (int j = 0; j < 32; j++) {
        const int nib = j < 16 ? w->qs[j] & 15 : w->qs[j - 16] >> 4;
        code[j] = (nib | (int)((qh >> j) & 1) << 4) - 16;
    }
    return slm_f16_to_f32(w->d);
}

/* the chain of the file comment for one weight row and one q8_0 row */
static float chain(slm_dtype t, const unsigned char *wrow, const unsigned char *arow, int64_t K)
{
    float acc[8] = {0};
    for (int64_t b = 0; b < K / 32; b++) {
        int code[32];
        const float dw = block_codes(t, wrow, b, code);
        const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)arow + b;
        const float sc = dw * slm_f16_to_f32(a->d);
        for (int j = 0; j < 8; j++) {
            int lane = 0;
            for (int i = 0; i < 4; i++) lane += code[4 * j + i] * a->qs[4 * j + i];
            acc[j] = fmaf((float)lane, sc, acc[j]);
        }
    }
    float s[4];
    for (int i = 0; i < 4; i++) s[i] = acc[i] + acc[i + 4];
    return (s[0] + s[2]) + (s[1] + s[3]);
}

static size_t wblock(slm_dtype t) { return t == SLM_DTYPE_Q8_0 ? sizeof(slm_block_q8_0) : sizeof(slm_block_q5_0); }

/* random code bytes (every pattern, -128 included) and scales in [2^-10, 2^-5] */
static void fill_row(slm_dtype t, unsigned char *row, int64_t K)
{
    const size_t bs = wblock(t);
    for (int64_t b = 0; b < K / 32; b++) {
        unsigned char *blk = row + b * bs;
        for (size_t i = 2; i < bs; i++) blk[i] = (unsigned char)urand();
        const slm_f16 d = slm_f32_to_f16(ldexpf(1.0f + (float)(urand() % 1000) / 1000.0f, -10 + (int)(urand() % 5)));
        memcpy(blk, &d, 2);
    }
}

/* activation row c: random floats as the reference encodes them (row 1 of
 * every tile all zeros: scale 0) */
static void fill_act(unsigned char *arow, int64_t K, int zero)
{
    static float x[MAXK];
    const float scale = 0.1f + (float)(urand() % 100);
    for (int64_t i = 0; i < K; i++) x[i] = zero ? 0.0f : frand() * scale;
    slm_act_quant_generic(SLM_DTYPE_Q8_0)(x, arow, K);
}

static const slm_q8_0_side *sides(const unsigned char *A, size_t lda, int rows, int64_t K)
{
    static slm_q8_0_side side[MAXC * MAXK / 32];
    for (int c = 0; c < rows; c++)
        for (int64_t b = 0; b < K / 32; b++) {
            const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)(A + c * lda) + b;
            int32_t sum = 0;
            for (int i = 0; i < 32; i++) sum += a->qs[i];
            side[c * (K / 32) + b] = (slm_q8_0_side){slm_f16_to_f32(a->d), sum};
        }
    return side;
}

static const char *tname(slm_dtype t) { return t == SLM_DTYPE_Q8_0 ? "q8_0" : "q5_0"; }

/* one tier's tile kernel for t against the chain */
static void test_tiles(slm_dtype t, int level)
{
    /* odd strides: rows not aligned to anything */
    const size_t ldw = MAXK / 32 * sizeof(slm_block_q8_0) + 6, lda = MAXK / 32 * sizeof(slm_block_q8_0) + 2;
    static unsigned char W[MAXR * (MAXK / 32 * 34 + 6)], A[MAXC * (MAXK / 32 * 34 + 2)];
    static _Alignas(64) unsigned char P[MAXK / 32 * 320 + 64];
    static const int64_t Ks[] = {32, 64, 96, 160, 576, 1024, MAXK};
    slm_kernels_set_level(level);
    const slm_gemm_kernel *g = slm_gemm_get(t);
    const char *lv = slm_kernels_level_name(level);
    if (!g || slm_kernels_level() != level) {
        CHECK(0, "%s: no %s tile kernel", tname(t), lv);
        return;
    }
    int same = 1, edges = 1, packed = 1, shapes = 0;
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
        const int64_t K = Ks[ki];
        for (int r = 0; r < MAXR; r++) fill_row(t, W + r * ldw, K);
        for (int c = 0; c < MAXC; c++) fill_act(A + c * lda, K, c == 1);
        float ref[MAXC][MAXR];
        for (int c = 0; c < MAXC; c++)
            for (int r = 0; r < MAXR; r++) ref[c][r] = chain(t, W + r * ldw, A + c * lda, K);
        for (int nr = 1; nr <= g->tile_r; nr++)
            for (int nc = 1; nc <= g->tile_c; nc++) {
                float out[MAXC][MAXR];
                memset(out, 0xff, sizeof out);
                g->tile(K, W, ldw, nr, A, lda, nc, out[0], MAXR);
                for (int c = 0; c < MAXC; c++)
                    for (int r = 0; r < MAXR; r++) {
                        if (c < nc && r < nr) same &= memcmp(&out[c][r], &ref[c][r], 4) == 0;
                        else edges &= isnan(out[c][r]);
                    }
                shapes++;
            }
        if (g->pack) {
            const size_t pbytes = (size_t)(K / 32) * g->pack_block_bytes;
            memset(P, 0x5a, sizeof P);
            g->pack(K, W, ldw, P);
            packed &= P[pbytes] == 0x5a && pbytes + 64 <= sizeof P;
            for (int nc = 1; nc <= g->tile_c; nc++) {
                float out[MAXC][MAXR];
                memset(out, 0xff, sizeof out);
                g->ptile(K, P, g->tile_r, A, lda, sides(A, lda, MAXC, K), nc, out[0], MAXR);
                for (int c = 0; c < MAXC; c++)
                    for (int r = 0; r < MAXR; r++) {
                        if (c < nc && r < g->tile_r) packed &= memcmp(&out[c][r], &ref[c][r], 4) == 0;
                        else edges &= isnan(out[c][r]);
                    }
            }
        }
    }
    CHECK(same, "%s %s tiles (%d shapes x K): bits of the scalar chain", tname(t), lv, shapes / 7);
    CHECK(edges, "%s %s tiles: nothing written outside nr x nc", tname(t), lv);
    CHECK(packed, "%s %s packed panels: bits of the scalar chain, pack within its size", tname(t), lv);
}

/* whole products: the AVX-512 tier against the AVX2 tier and the chain */
static void test_matmul(slm_dtype t, int have512)
{
    enum { N = 203, K = 576, MMAX = 128 };
    slm_pool *pool = slm_pool_new(2, NULL);
    const size_t rb = (size_t)(K / 32) * wblock(t);
    unsigned char *W = malloc((size_t)N * rb), *A = malloc((size_t)MMAX * (K / 32) * 34);
    float *X = rvec((int64_t)MMAX * K, 3.0f);
    float *o2 = malloc(sizeof(float) * MMAX * N), *o5 = malloc(sizeof(float) * MMAX * N);
    for (int n = 0; n < N; n++) fill_row(t, W + n * rb, K);
    const size_t arb = (size_t)(K / 32) * 34;
    for (int m = 0; m < MMAX; m++) slm_act_quant_generic(SLM_DTYPE_Q8_0)(X + (size_t)m * K, A + m * arb, K);
    int tiers = 1, spec = 1, ok = 1, checked = 0;
    for (int M = 1; M <= MMAX; M = M == 20 ? MMAX : M + 1) {
        slm_kernels_set_level(SLM_KERNELS_AVX2);
        ok &= slm_matmul_raw(pool, o2, W, t, rb, X, M, N, K, NULL) == SLM_OK;
        for (int m = 0; m < M; m++)
            for (int n = 0; n < N; n++) {
                const float r = chain(t, W + n * rb, A + m * arb, K);
                spec &= memcmp(&r, &o2[(size_t)m * N + n], 4) == 0;
            }
        if (have512) {
            slm_kernels_set_level(SLM_KERNELS_AVX512);
            ok &= slm_matmul_raw(pool, o5, W, t, rb, X, M, N, K, NULL) == SLM_OK;
            tiers &= memcmp(o2, o5, sizeof(float) * (size_t)M * N) == 0;
        }
        checked++;
    }
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    CHECK(ok, "%s matmul runs", tname(t));
    CHECK(spec, "%s matmul, AVX2 tier, M = 1..20 and 128: every output the scalar chain", tname(t));
    if (have512)
        CHECK(tiers, "%s matmul (N=%d K=%d, 2 threads), %d batch sizes: AVX-512 tier == AVX2 tier bit for bit",
              tname(t), N, K, checked);
    free(W), free(A), free(X), free(o2), free(o5);
    slm_pool_free(pool);
}

static void test_vec_dot(void)
{
    static unsigned char w[MAXK / 32 * 34], a[4][MAXK / 32 * 34];
    const slm_vecdot_traits *tr = slm_vecdot_traits_get(SLM_DTYPE_Q8_0);
    int one = 1, four = 1, stride0 = 1;
    for (int64_t K = 32; K <= MAXK; K += 32 * 6) {
        fill_row(SLM_DTYPE_Q8_0, w, K);
        for (int r = 0; r < 4; r++) fill_act(a[r], K, r == 3);
        float s5[4], s0[4];
        tr->dot4_avx512(K, s5, w, a[0], sizeof a[0]);
        for (int r = 0; r < 4; r++) {
            float x5, x2;
            tr->dot_avx512(K, &x5, w, a[r]);
            tr->dot_avx2(K, &x2, w, a[r]);
            const float ref = chain(SLM_DTYPE_Q8_0, w, a[r], K);
            one &= memcmp(&x5, &x2, 4) == 0 && memcmp(&x5, &ref, 4) == 0;
            four &= memcmp(&s5[r], &x2, 4) == 0;
        }
        tr->dot4_avx512(K, s0, w, a[2], 0);
        for (int r = 0; r < 4; r++) stride0 &= memcmp(&s0[r], &s5[2], 4) == 0;
    }
    CHECK(one, "q8_0 vec_dot: AVX-512 == AVX2 == scalar chain bit for bit");
    CHECK(four, "q8_0 four-row vec_dot: AVX-512 == four AVX2 dots bit for bit");
    CHECK(stride0, "q8_0 four-row vec_dot, stride 0: one row four times");
}

int main(void)
{
    const int have512 = slm_cpu_has_avx512(), have2 = slm_cpu_has_avx2();
    printf("AVX2: %s, AVX-512 VNNI: %s\n", have2 ? "yes" : "no", have512 ? "yes" : "no");
    if (!have2) {
        printf("skip: no AVX2 on this CPU: the q8_0/q5_0 tile kernels are not used\n");
        printf("%d passed, %d failed\n", passed, failed);
        return 0;
    }
    static const slm_dtype types[2] = {SLM_DTYPE_Q8_0, SLM_DTYPE_Q5_0};
    for (int i = 0; i < 2; i++) {
        if (have512) {
            test_tiles(types[i], SLM_KERNELS_AVX512);
            slm_kernels_set_level(SLM_KERNELS_AVX512);
            const slm_gemm_kernel *g = slm_gemm_get(types[i]);
            CHECK(g && g->tile == (types[i] == SLM_DTYPE_Q8_0 ? slm_gemm_q8_0_avx512 : slm_gemm_q5_0_avx512),
                  "%s: the AVX-512 tier takes the VNNI tile kernel", tname(types[i]));
        } else {
            printf("skip: %s AVX-512 tiles (the CPU has no AVX-512 VNNI)\n", tname(types[i]));
        }
        test_tiles(types[i], SLM_KERNELS_AVX2);
        test_matmul(types[i], have512);
    }
    if (have512) test_vec_dot();
    else printf("skip: q8_0 AVX-512 vec_dot (the CPU has no AVX-512 VNNI)\n");
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
