/* The AVX-512 q4_K kernels (csrc/kernels/gemm_q4k_avx512.c) against the
 * generic vec_dot of vecdot.c, which specifies each output's bits:
 *
 * - one-row and four-row vec_dot: bit-identical to the generic dot for K =
 *   256 (the minimum) .. 4096, on random blocks (every code and 6-bit
 *   scale pattern), random q8_K bytes including -128, and the extremes
 *   (codes 15, scales and mins 63, activations all -128 or all 127);
 * - the 8x4 tile, plain (every nr <= 8, nc <= 4) and over a packed panel
 *   (every nc): each output the generic dot's bits, nothing written
 *   outside the tile;
 * - whole products slm_matmul_raw at M = 1..20 and 128, N = 37 (ragged
 *   tiles), 1 and 2 threads: the AVX-512 tier, the AVX2 tier and the
 *   generic tier (slm_kernels_set_level) give the same bits as the
 *   generic dot of each (weight row, activation row) pair, so a row's
 *   output does not depend on its batch.
 * Without AVX-512 the AVX-512 cases print "skip:" and the AVX2 tier is
 * still checked against the generic one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#define TESTRAND_SEED 4096
#include "testrand.h"
#include "q8k_testdata.h"
#include "core/fp16.h"
#include "core/pool.h"
#include "kernels/gemm.h"
#include "kernels/gemm_q4k_avx512.h"
#include "kernels/matmul.h"
#include "kernels/vecdot.h"
#include "quant/blocks.h"

enum { MAXK = 4096, NB = MAXK / SLM_QK_K, ROWS = 8, COLS = 4 };


/* n weights: random code and scale bytes, d and dmin in a sane range */
static void fill_q4_K(slm_block_q4_K *w, int64_t n)
{
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        unsigned char *p = (unsigned char *)&w[b];
        for (size_t i = 0; i < sizeof w[b]; i++) p[i] = (unsigned char)urand();
        w[b].d = slm_f32_to_f16(q8k_uniform(0.001f, 0.05f));
        w[b].dmin = slm_f32_to_f16(q8k_uniform(0.001f, 0.05f));
    }
}

static slm_block_q4_K W[ROWS][NB];
static slm_block_q8_K A[COLS][NB];

/* the generic dot of weight row r and activation row c (the expected bits) */
static float expect(int64_t K, int r, int c)
{
    float s;
    slm_vecdot_traits_get(SLM_DTYPE_Q4_K)->dot_generic(K, &s, W[r], A[c]);
    return s;
}

/* case: 0 random, 1 random q8_K bytes, 2 extremes with acts -128, 3 with 127 */
static void fill_case(int which, int64_t K)
{
    for (int r = 0; r < ROWS; r++) {
        fill_q4_K(W[r], K);
        if (which >= 2)
            for (int64_t b = 0; b < K / SLM_QK_K; b++) {
                memset(W[r][b].scales, 0xff, sizeof W[r][b].scales);   /* scales and mins 63 */
                memset(W[r][b].qs, 0xff, sizeof W[r][b].qs);           /* codes 15 */
            }
    }
    for (int c = 0; c < COLS; c++) {
        if (which == 0) {
            float x[MAXK];
            for (int64_t i = 0; i < K; i++) x[i] = q8k_uniform(-1, 1) * (i % 7 == 0 ? 3.0f : 1.0f);
            slm_act_quant_generic(SLM_DTYPE_Q8_K)(x, A[c], K);
        } else {
            q8k_fill(A[c], K, which == 2 ? -128 : which == 3 ? 127 : 0);
        }
    }
}

static const int64_t Ks[] = {256, 512, 768, 1536, 4096};
#define NKS (int)(sizeof Ks / sizeof Ks[0])

static void test_vec_dots(void)
{
    const slm_vecdot_traits *t = slm_vecdot_traits_get(SLM_DTYPE_Q4_K);
    CHECK(t && t->dot_avx512 && t->dot4_avx512, "q4_K has AVX-512 dot and dot4 kernels in the traits");
    if (!t || !t->dot_avx512 || !t->dot4_avx512) return;
    int one = 1, four = 1, avx2 = 1, cases = 0;
    for (int ki = 0; ki < NKS; ki++)
        for (int which = 0; which < 4; which++) {
            const int64_t K = Ks[ki];
            fill_case(which, K);
            for (int r = 0; r < ROWS; r++) {
                float s4[4];
                /* four activation rows sizeof A[0] bytes apart */
                t->dot4_avx512(K, s4, W[r], A[0], sizeof A[0]);
                for (int c = 0; c < COLS; c++) {
                    const float e = expect(K, r, c);
                    float s, s2;
                    t->dot_avx512(K, &s, W[r], A[c]);
                    t->dot_avx2(K, &s2, W[r], A[c]);
                    if (!q8k_same_bits(s, e) && one) {
                        printf("  dot K=%lld case %d row %d col %d: %.9g, generic %.9g\n", (long long)K, which, r, c,
                               (double)s, (double)e);
                        one = 0;
                    }
                    four &= q8k_same_bits(s4[c], e);
                    avx2 &= q8k_same_bits(s2, e);
                    cases++;
                }
            }
        }
    CHECK(one, "AVX-512 q4_K dot: bits of the generic dot (%d cases, K = 256..4096, extremes)", cases);
    CHECK(four, "AVX-512 q4_K dot4: each of four rows the generic dot's bits");
    CHECK(avx2, "AVX2 q4_K dot: bits of the generic dot (the tier compared below)");
}

static void test_tiles(void)
{
    const slm_gemm_kernel *g = slm_gemm_get(SLM_DTYPE_Q4_K);
    CHECK(g && g->tile == slm_gemm_q4_K_avx512 && g->ptile == slm_gemm_q4_Kx8v_avx512 && g->tile_r == 8 &&
              g->tile_c == 4 && g->batch_only,
          "the AVX-512 tier's q4_K tile kernel is slm_gemm_q4_K_avx512 (8 x 4, packed, batches only)");
    if (!g || g->tile != slm_gemm_q4_K_avx512) return;
    static _Alignas(64) slm_q4_Kx8v P[NB];
    int plain = 1, packed = 1, outside = 1;
    for (int ki = 0; ki < NKS; ki++)
        for (int which = 0; which < 4; which++) {
            const int64_t K = Ks[ki];
            fill_case(which, K);
            for (int nr = 1; nr <= 8; nr++)
                for (int nc = 1; nc <= 4; nc++) {
                    float out[COLS + 1][ROWS + 1];
                    memset(out, 0xff, sizeof out);   /* NaN: not written */
                    g->tile(K, W, sizeof W[0], nr, A, sizeof A[0], nc, out[0], ROWS + 1);
                    for (int c = 0; c <= COLS; c++)
                        for (int r = 0; r <= ROWS; r++) {
                            if (c >= nc || r >= nr) outside &= isnan(out[c][r]);
                            else plain &= q8k_same_bits(out[c][r], expect(K, r, c));
                        }
                }
            g->pack(K, W, sizeof W[0], P);
            for (int nc = 1; nc <= 4; nc++) {
                float out[COLS + 1][ROWS + 1];
                memset(out, 0xff, sizeof out);
                g->ptile(K, P, 8, A, sizeof A[0], NULL, nc, out[0], ROWS + 1);
                for (int c = 0; c <= COLS; c++)
                    for (int r = 0; r <= ROWS; r++) {
                        if (c >= nc || r >= 8) outside &= isnan(out[c][r]);
                        else packed &= q8k_same_bits(out[c][r], expect(K, r, c));
                    }
            }
        }
    CHECK(plain, "AVX-512 q4_K tile: every nr <= 8, nc <= 4 gives the generic dot's bits");
    CHECK(packed, "AVX-512 q4_K packed tile: every nc <= 4 gives the generic dot's bits");
    CHECK(outside, "AVX-512 q4_K tiles write nothing outside nr x nc");
}

/* slm_matmul_raw at every tier against the generic dots, pair by pair */
static void test_matmul(int have512)
{
    enum { N = 37, K = 1536, MMAX = 128 };
    static slm_block_q4_K w[N][K / SLM_QK_K];
    static slm_block_q8_K a[MMAX][K / SLM_QK_K];
    static float x[MMAX][K], ref[MMAX][N], out[MMAX][N];
    for (int n = 0; n < N; n++) fill_q4_K(w[n], K);
    for (int m = 0; m < MMAX; m++) {
        for (int i = 0; i < K; i++) x[m][i] = q8k_uniform(-1, 1) * (i % 5 == 0 ? 4.0f : 1.0f);
        slm_act_quant_generic(SLM_DTYPE_Q8_K)(x[m], a[m], K);
        for (int n = 0; n < N; n++) slm_vecdot_traits_get(SLM_DTYPE_Q4_K)->dot_generic(K, &ref[m][n], w[n], a[m]);
    }
    slm_pool *pool = slm_pool_new(2, NULL);
    static const int levels[] = {SLM_KERNELS_AVX512, SLM_KERNELS_AVX2, SLM_KERNELS_GENERIC};
    for (int li = 0; li < 3; li++) {
        if (levels[li] == SLM_KERNELS_AVX512 && !have512) {
            printf("skip: matmul at the AVX-512 tier (this CPU has no AVX-512 VNNI)\n");
            continue;
        }
        if (levels[li] == SLM_KERNELS_AVX2 && !slm_cpu_has_avx2()) {
            printf("skip: matmul at the AVX2 tier (this CPU has no AVX2)\n");
            continue;
        }
        slm_kernels_set_level(levels[li]);
        int ok = 1, runs = 0;
        for (int mi = 1; mi <= 21; mi++)
            for (int th = 0; th < 2; th++) {
                const int M = mi <= 20 ? mi : MMAX;
                memset(out, 0xff, sizeof out);
                ok &= slm_matmul_raw(th ? pool : NULL, out[0], w, SLM_DTYPE_Q4_K, sizeof w[0], x[0], M, N, K, NULL) ==
                      SLM_OK;
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) ok &= q8k_same_bits(out[m][n], ref[m][n]);
                runs++;
            }
        CHECK(ok, "matmul q4_K at the %s tier, M = 1..20 and 128, N = 37, 1 and 2 threads (%d runs): "
                  "every output the generic dot's bits",
              slm_kernels_level_name(slm_kernels_level()), runs);
    }
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    slm_pool_free(pool);
}

int main(void)
{
    const int have512 = slm_cpu_has_avx512();
    if (have512) {
        test_vec_dots();
        test_tiles();
    } else {
        printf("skip: AVX-512 q4_K kernels (this CPU has no AVX-512 F/BW/VL/DQ/VNNI)\n");
    }
    test_matmul(have512);
    return check_summary();
}
