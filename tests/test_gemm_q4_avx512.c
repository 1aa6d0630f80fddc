/* The AVX-512 VNNI q4_0 kernels (gemm_q4_avx512.c) against the generic
 * kernels of gemm.c, which specify each output's bits:
 *   - the unpacked tile at every tile shape (nr 1..8 x nc 1..4), K from
 *     one block (odd and even block counts), odd row strides; nothing
 *     written outside the tile;
 *   - the packed layout against its definition in gemm_q4_avx512.h, and
 *     the packed tile against the generic packed and unpacked tiles;
 *   - whole products (slm_matmul_raw, two threads) at M = 1..20 and 128:
 *     the same bits at the AVX-512, AVX2 and generic tiers, and each row
 *     of a batch equal to that row alone (batch invariance).
 * Weights and activations are random bytes (every code, scales of both
 * signs), so the integer sums reach the ends of their range. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../csrc/core/fp16.h"
#include "../csrc/core/pool.h"
#include "../csrc/kernels/gemm.h"
#include "../csrc/kernels/gemm_q4_avx512.h"
#include "../csrc/kernels/matmul.h"
#include "../csrc/kernels/vecdot.h"
#include "../csrc/quant/blocks.h"
#include "check.h"
#define TESTRAND_SEED 4051
#include "testrand.h"

/* a scale in [2^-12, 2^-4) of either sign, as f16 */
static slm_f16 rscale(void)
{
    return slm_f32_to_f16((urand() & 1 ? -1.0f : 1.0f) * ldexpf(1.0f + (float)(urand() % 1024) / 1024.0f,
                                                                   -12 + (int)(urand() % 8)));
}

static void fill_q4_0(void *row, int64_t K)
{
    slm_block_q4_0 *w = row;
    for (int64_t b = 0; b < K / SLM_QK4_0; b++) {
        w[b].d = rscale();
        for (int j = 0; j < SLM_QK4_0 / 2; j++) w[b].qs[j] = (uint8_t)urand();
    }
}

/* random q8_0 codes over the whole int8 range, -128 included */
static void fill_q8_0(void *row, int64_t K)
{
    slm_block_q8_0 *a = row;
    for (int64_t b = 0; b < K / SLM_QK8_0; b++) {
        a[b].d = rscale();
        for (int j = 0; j < SLM_QK8_0; j++) a[b].qs[j] = (int8_t)(uint8_t)urand();
    }
}

/* the packed tiles' side values, from the block definition */
static void side_of(const void *row, int64_t K, slm_q8_0_side *s)
{
    const slm_block_q8_0 *a = row;
    for (int64_t b = 0; b < K / SLM_QK8_0; b++) {
        int sum = 0;
        for (int j = 0; j < SLM_QK8_0; j++) sum += a[b].qs[j];
        s[b] = (slm_q8_0_side){slm_f16_to_f32(a[b].d), sum};
    }
}

enum { MAXK = 1024, MAXR = 8, MAXC = 4, PAD = 2 };
/* rows PAD bytes longer than the blocks: loads at every alignment */
#define LDW ((size_t)(MAXK / 32 * 18 + PAD))
#define LDA ((size_t)(MAXK / 32 * 34 + PAD))

static void test_tiles(const slm_gemm_kernel *gen, const slm_gemm_kernel *k5)
{
    static unsigned char W[MAXR * LDW], A[MAXC * LDA];
    static slm_q8_0_side side[MAXC * MAXK / 32];
    static _Alignas(64) slm_q4_0x8w P5[MAXK / 32];
    static _Alignas(64) slm_q4_0x8 P2[MAXK / 32];
    static const int64_t Ks[] = {32, 64, 96, 160, 576, 1024};
    int same = 1, inside = 1, layout = 1, psame = 1, pgen = 1, cases = 0;
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
        const int64_t K = Ks[ki], nb = K / 32;
        for (int r = 0; r < MAXR; r++) fill_q4_0(W + r * LDW, K);
        for (int c = 0; c < MAXC; c++) {
            fill_q8_0(A + c * LDA, K);
            side_of(A + c * LDA, K, side + c * nb);
        }
        for (int nr = 1; nr <= MAXR; nr++)
            for (int nc = 1; nc <= MAXC; nc++) {
                float ref[MAXC][MAXR], out[MAXC][MAXR];
                gen->tile(K, W, LDW, nr, A, LDA, nc, ref[0], MAXR);
                memset(out, 0xff, sizeof out);   /* NaN: untouched */
                k5->tile(K, W, LDW, nr, A, LDA, nc, out[0], MAXR);
                for (int c = 0; c < MAXC; c++)
                    for (int r = 0; r < MAXR; r++) {
                        if (c < nc && r < nr) same &= memcmp(&out[c][r], &ref[c][r], 4) == 0;
                        else inside &= isnan(out[c][r]);
                    }
                cases++;
            }
        /* packed: the layout as gemm_q4_avx512.h defines it */
        k5->pack(K, W, LDW, P5);
        for (int64_t b = 0; b < nb; b++)
            for (int r = 0; r < 8; r++) {
                const slm_block_q4_0 *w = (const slm_block_q4_0 *)(const void *)(W + r * LDW) + b;
                for (int e = 0; e < 32; e++)
                    layout &= P5[b].q[e / 8][r][e % 8] == (e < 16 ? w->qs[e] & 15 : w->qs[e - 16] >> 4);
                layout &= memcmp(&P5[b].d[r], &(float){slm_f16_to_f32(w->d)}, 4) == 0;
            }
        gen->pack(K, W, LDW, P2);
        for (int nc = 1; nc <= MAXC; nc++) {
            float ref[MAXC][MAXR], gp[MAXC][MAXR], out[MAXC][MAXR];
            gen->tile(K, W, LDW, 8, A, LDA, nc, ref[0], MAXR);
            gen->ptile(K, P2, 8, A, LDA, side, nc, gp[0], MAXR);
            memset(out, 0xff, sizeof out);
            k5->ptile(K, P5, 8, A, LDA, side, nc, out[0], MAXR);
            for (int c = 0; c < MAXC; c++) {
                if (c < nc) {
                    psame &= memcmp(out[c], gp[c], sizeof out[c]) == 0;
                    pgen &= memcmp(gp[c], ref[c], sizeof ref[c]) == 0;
                } else {
                    for (int r = 0; r < MAXR; r++) inside &= isnan(out[c][r]);
                }
            }
        }
    }
    CHECK(same, "avx512 q4_0 tile: bits differ from the generic tile");
    CHECK(inside, "avx512 q4_0 tiles wrote outside the tile");
    CHECK(layout, "avx512 q4_0 pack: layout differs from slm_q4_0x8w's definition");
    CHECK(psame, "avx512 q4_0 packed tile: bits differ from the generic packed tile");
    CHECK(pgen, "generic q4_0 packed tile differs from the generic unpacked tile");
    printf("tiles: %d shapes over %zu K values, packed tiles nc 1..4\n", cases, sizeof Ks / sizeof Ks[0]);
}

/* whole products at the three tiers, and batch invariance */
static void test_matmul(slm_pool *pool, int have512)
{
    static const int64_t Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 128};
    const int64_t N = 8 * 13 + 5, K = 576, nb = K / 32;   /* rows past whole tiles */
    slm_block_q4_0 *W = malloc((size_t)(N * nb) * sizeof *W);
    float *X = rvec(128 * K, 3.0f);
    float *o5 = malloc(sizeof(float) * 128 * N), *o2 = malloc(sizeof(float) * 128 * N);
    float *og = malloc(sizeof(float) * 128 * N), *one = malloc(sizeof(float) * 128 * N);
    for (int64_t n = 0; n < N; n++) fill_q4_0(W + n * nb, K);
    int tiers = 1, inv = 1, ok = 1;
    /* each row alone (M = 1) at the top tier: the batch-invariance reference */
    for (int64_t m = 0; m < 128; m++)
        ok &= slm_matmul_raw(pool, one + m * N, W, SLM_DTYPE_Q4_0, (size_t)nb * 18, X + m * K, 1, N, K, NULL) == SLM_OK;
    for (size_t i = 0; i < sizeof Ms / sizeof Ms[0]; i++) {
        const int64_t M = Ms[i];
        const size_t bytes = sizeof(float) * (size_t)(M * N);
        slm_kernels_set_level(SLM_KERNELS_AVX512);
        ok &= slm_matmul_raw(pool, o5, W, SLM_DTYPE_Q4_0, (size_t)nb * 18, X, M, N, K, NULL) == SLM_OK;
        slm_kernels_set_level(SLM_KERNELS_AVX2);
        ok &= slm_matmul_raw(pool, o2, W, SLM_DTYPE_Q4_0, (size_t)nb * 18, X, M, N, K, NULL) == SLM_OK;
        slm_kernels_set_level(SLM_KERNELS_GENERIC);
        ok &= slm_matmul_raw(pool, og, W, SLM_DTYPE_Q4_0, (size_t)nb * 18, X, M, N, K, NULL) == SLM_OK;
        slm_kernels_set_level(SLM_KERNELS_AVX512);
        tiers &= memcmp(o5, og, bytes) == 0 && memcmp(o2, og, bytes) == 0;
        inv &= memcmp(o5, one, bytes) == 0;
    }
    CHECK(ok, "q4_0 matmul failed");
    CHECK(tiers, "q4_0 matmul: tiers (%s, avx2, generic) differ at some M in 1..20, 128",
          have512 ? "avx512" : "capped");
    CHECK(inv, "q4_0 matmul: a row's output depends on its batch");
    free(W), free(X), free(o5), free(o2), free(og), free(one);
}

int main(void)
{
    const slm_gemm_kernel *gen = slm_gemm_get_generic(SLM_DTYPE_Q4_0);
    slm_error err;
    slm_pool *pool = slm_pool_new(2, &err);
    CHECK(gen && pool, "generic q4_0 kernel and pool");
    const int have512 = slm_cpu_has_avx512();
    if (have512) {
        slm_kernels_set_level(SLM_KERNELS_AVX512);
        const slm_gemm_kernel *k5 = slm_gemm_get(SLM_DTYPE_Q4_0);
        CHECK(k5 && k5->tile == slm_gemm_q4_0_avx512 && k5->ptile == slm_gemm_q4_0x8w_avx512,
              "the AVX-512 tier serves q4_0 with its own kernels");
        if (k5 && k5->tile == slm_gemm_q4_0_avx512) test_tiles(gen, k5);
    } else {
        printf("skip: no AVX-512 VNNI on this CPU: tile tests, and the AVX-512 tier of the products\n");
    }
    /* without AVX-512 the top tier is AVX2 (or generic): still compared */
    test_matmul(pool, have512);
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    slm_pool_free(pool);
    return check_summary();
}
