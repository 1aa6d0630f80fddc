/* The AVX-512 q6_K vec_dot pair (csrc/kernels/vecdot_q6k_avx512.c) against
 * the generic dot_q6_K of vecdot.c, which specifies each output's bits:
 *
 * - one-row and four-row kernels bit-identical to the generic dot for K =
 *   256 (the minimum) .. 4096 (the four-block groups and the tail), on
 *   random blocks (every 6-bit code and int8 scale pattern), random q8_K
 *   bytes including -128, and the extremes (codes 63 and 0, scales -128 and
 *   127, activations all -128 or all 127);
 * - slm_matmul_raw at M = 1..9, N = 13, 1 and 2 threads, at the AVX-512,
 *   AVX2 and generic tiers: every output the generic dot's bits.
 * Without AVX-512 the AVX-512 cases print "skip:" and the other tiers are
 * still checked. */
#include <stdio.h>
#include <string.h>

#include "check.h"
#define TESTRAND_SEED 6256
#include "testrand.h"
#include "q8k_testdata.h"
#include "core/fp16.h"
#include "core/pool.h"
#include "kernels/matmul.h"
#include "kernels/vecdot.h"
#include "kernels/vecdot_q6k_avx512.h"
#include "quant/blocks.h"

enum { MAXK = 4096, NB = MAXK / SLM_QK_K, ROWS = 4, COLS = 4 };


/* which: 0 random bytes, 1 codes 63 scales 127, 2 codes 0 scales -128 */
static void fill_q6_K(slm_block_q6_K *w, int64_t n, int which)
{
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        unsigned char *p = (unsigned char *)&w[b];
        for (size_t i = 0; i < sizeof w[b]; i++) p[i] = (unsigned char)urand();
        if (which) {
            memset(w[b].ql, which == 1 ? 0xff : 0, sizeof w[b].ql);
            memset(w[b].qh, which == 1 ? 0xff : 0, sizeof w[b].qh);
            memset(w[b].scales, which == 1 ? 127 : 0x80, sizeof w[b].scales);
        }
        w[b].d = slm_f32_to_f16(q8k_uniform(0.001f, 0.05f));
    }
}

static void test_dots(void)
{
    const slm_vecdot_traits *t = slm_vecdot_traits_get(SLM_DTYPE_Q6_K);
    CHECK(t && t->dot_avx512 == slm_vec_dot_q6_K_avx512 && t->dot4_avx512 == slm_vec_dot4_q6_K_avx512,
          "q6_K has the AVX-512 dot and dot4 kernels in the traits");
    if (!t || !t->dot_avx512 || !t->dot4_avx512) return;
    static const int64_t Ks[] = {256, 512, 768, 1024, 1280, 1536, 4096};
    static slm_block_q6_K W[ROWS][NB];
    static slm_block_q8_K A[COLS][NB];
    int one = 1, four = 1, cases = 0;
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++)
        for (int wc = 0; wc < 3; wc++)
            for (int ac = 0; ac < 4; ac++) {
                const int64_t K = Ks[ki];
                for (int r = 0; r < ROWS; r++) fill_q6_K(W[r], K, wc);
                for (int c = 0; c < COLS; c++) {
                    if (ac == 0) {
                        float x[MAXK];
                        for (int64_t i = 0; i < K; i++) x[i] = q8k_uniform(-1, 1) * (i % 7 == 0 ? 3.0f : 1.0f);
                        slm_act_quant_generic(SLM_DTYPE_Q8_K)(x, A[c], K);
                    } else {
                        q8k_fill(A[c], K, ac == 1 ? 0 : ac == 2 ? -128 : 127);
                    }
                }
                for (int r = 0; r < ROWS; r++) {
                    float s4[4];
                    t->dot4_avx512(K, s4, W[r], A[0], sizeof A[0]);
                    for (int c = 0; c < COLS; c++) {
                        float e, s;
                        t->dot_generic(K, &e, W[r], A[c]);
                        t->dot_avx512(K, &s, W[r], A[c]);
                        if (!q8k_same_bits(s, e) && one)
                            printf("  dot K=%lld case %d/%d row %d col %d: %.9g, generic %.9g\n", (long long)K, wc,
                                   ac, r, c, (double)s, (double)e);
                        one &= q8k_same_bits(s, e);
                        four &= q8k_same_bits(s4[c], e);
                        cases++;
                    }
                }
            }
    CHECK(one, "AVX-512 q6_K dot: bits of the generic dot (%d cases, K = 256..4096, extremes)", cases);
    CHECK(four, "AVX-512 q6_K dot4: each of four rows the generic dot's bits");
}

static void test_matmul(int have512)
{
    enum { N = 13, K = 1536, MMAX = 9 };
    static slm_block_q6_K w[N][K / SLM_QK_K];
    static slm_block_q8_K a[MMAX][K / SLM_QK_K];
    static float x[MMAX][K], ref[MMAX][N], out[MMAX][N];
    for (int n = 0; n < N; n++) fill_q6_K(w[n], K, 0);
    for (int m = 0; m < MMAX; m++) {
        for (int i = 0; i < K; i++) x[m][i] = q8k_uniform(-1, 1) * (i % 5 == 0 ? 4.0f : 1.0f);
        slm_act_quant_generic(SLM_DTYPE_Q8_K)(x[m], a[m], K);
        for (int n = 0; n < N; n++) slm_vecdot_traits_get(SLM_DTYPE_Q6_K)->dot_generic(K, &ref[m][n], w[n], a[m]);
    }
    slm_pool *pool = slm_pool_new(2, NULL);
    static const int levels[] = {SLM_KERNELS_AVX512, SLM_KERNELS_AVX2, SLM_KERNELS_GENERIC};
    for (int li = 0; li < 3; li++) {
        if ((levels[li] == SLM_KERNELS_AVX512 && !have512) || (levels[li] == SLM_KERNELS_AVX2 && !slm_cpu_has_avx2())) {
            printf("skip: q6_K matmul at the %s tier (not on this CPU)\n", slm_kernels_level_name(levels[li]));
            continue;
        }
        slm_kernels_set_level(levels[li]);
        int ok = 1;
        for (int M = 1; M <= MMAX; M++)
            for (int th = 0; th < 2; th++) {
                memset(out, 0xff, sizeof out);
                ok &= slm_matmul_raw(th ? pool : NULL, out[0], w, SLM_DTYPE_Q6_K, sizeof w[0], x[0], M, N, K, NULL) ==
                      SLM_OK;
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) ok &= q8k_same_bits(out[m][n], ref[m][n]);
            }
        CHECK(ok, "matmul q6_K at the %s tier, M = 1..9, N = 13, 1 and 2 threads: every output the generic dot's bits",
              slm_kernels_level_name(slm_kernels_level()));
    }
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    slm_pool_free(pool);
}

int main(void)
{
    const int have512 = slm_cpu_has_avx512();
    if (have512) test_dots();
    else printf("skip: AVX-512 q6_K kernels (this CPU has no AVX-512 F/BW/VL/DQ/VNNI)\n");
    test_matmul(have512);
    return check_summary();
}
