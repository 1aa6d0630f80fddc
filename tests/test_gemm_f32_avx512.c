/* The AVX-512 f32 tile kernel (kernels/gemm_f32_avx512.c) against the
 * generic one (gemm.c), which defines each output's bits:
 *   - the tile itself at every edge (nr = 1..8 weight rows, nc = 1..4
 *     activation rows), K from its minimum (8) to 1000, rows at odd
 *     strides: each output the bits of the generic chain computed one
 *     output at a time, nothing written outside the tile, and the chain
 *     within float rounding of a double dot product;
 *   - whole products through slm_matmul_multi in the tiles' order at odd
 *     shapes, with the tier forced to generic, AVX2 and AVX-512: the same
 *     bits at every tier, and a row's output the same in a batch as alone
 *     (batch invariance).
 * Without AVX-512 the AVX-512 cases say "skip:" and the tiers that exist
 * are still compared. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#define TESTRAND_SEED 3131u
#include "testrand.h"
#include "core/pool.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "kernels/vecdot.h"

static void fill(float *v, size_t n)
{
    for (size_t i = 0; i < n; i++) v[i] = frand();
}

static int has512;

static void test_tile(void)
{
    if (!has512) {
        printf("skip: f32 avx512 tile vs generic (no AVX-512)\n");
        return;
    }
    enum { MAXK = 1000, LDW = MAXK + 3, LDA = MAXK + 5 };   /* odd strides: unaligned rows */
    static float W[8 * LDW], A[4 * LDA];
    const slm_gemm_kernel *gen = slm_gemm_get_generic(SLM_DTYPE_F32);
    const int64_t Ks[] = {8, 16, 24, 64, 200, 1000};
    int same = 1, inside = 1, close = 1;
    for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
        const int64_t K = Ks[ki];
        fill(W, sizeof W / sizeof W[0]);
        fill(A, sizeof A / sizeof A[0]);
        float one[4][8];
        for (int c = 0; c < 4; c++)
            for (int r = 0; r < 8; r++) {
                gen->tile(K, W + r * LDW, LDW * 4, 1, A + c * LDA, LDA * 4, 1, &one[c][r], 1);
                double ref = 0, mag = 0;
                for (int64_t k = 0; k < K; k++) {
                    ref += (double)W[r * LDW + k] * A[c * LDA + k];
                    mag += fabs((double)W[r * LDW + k] * A[c * LDA + k]);
                }
                close &= fabs(one[c][r] - ref) <= (double)(K / 8 + 3) * 0x1p-24 * mag;
            }
        for (int nr = 1; nr <= 8; nr++)
            for (int nc = 1; nc <= 4; nc++) {
                float out[4][8];
                memset(out, 0xff, sizeof out);   /* NaN: nothing may be left there */
                slm_gemm_f32_avx512(K, W, LDW * 4, nr, A, LDA * 4, nc, out[0], 8);
                for (int c = 0; c < 4; c++)
                    for (int r = 0; r < 8; r++) {
                        if (c < nc && r < nr) {
                            if (memcmp(&out[c][r], &one[c][r], 4)) {
                                if (same)
                                    printf("  K %lld tile %dx%d: out[%d][%d] %a, generic %a\n", (long long)K, nr,
                                           nc, c, r, out[c][r], one[c][r]);
                                same = 0;
                            }
                        } else {
                            inside &= isnan(out[c][r]);
                        }
                    }
            }
    }
    CHECK(same, "f32 avx512 tile == generic chain bit for bit (nr 1..8, nc 1..4, K 8..1000)");
    CHECK(inside, "f32 avx512 tile writes only its nr x nc outputs");
    CHECK(close, "generic f32 chain within K/8+3 roundings of a double dot");
}

/* out (M, N) = X (M, K) . W^T in the tiles' order at the given tier */
static int product(slm_pool *pool, int level, float *out, const float *W, int64_t N, const float *X,
                   int64_t M, int64_t K)
{
    slm_kernels_set_level(level);
    slm_matmul_part part = {.out = out, .W = W, .wtype = SLM_DTYPE_F32, .w_row_bytes = (size_t)K * 4,
                            .N = N, .order = SLM_MATMUL_ORDER_TILES};
    int ok = slm_matmul_multi(pool, &part, 1, X, M, K, NULL) == SLM_OK;
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    return ok;
}

static void test_products(void)
{
    slm_error err = {0};
    slm_pool *pool = slm_pool_new(2, &err);
    CHECK(pool != NULL, "pool: %s", err.msg);
    if (!pool) return;
    const int64_t Ms[] = {1, 3, 7, 128}, Ns[] = {1, 5, 13, 64, 771}, Ks[] = {8, 32, 72, 768};
    int tiers = 1 + (slm_cpu_has_avx2() ? 1 : 0) + (has512 ? 1 : 0);
    const int levels[3] = {SLM_KERNELS_GENERIC, SLM_KERNELS_AVX2, SLM_KERNELS_AVX512};
    int ok = 1, same = 1, alone = 1;
    for (int mi = 0; mi < 4; mi++)
        for (int ni = 0; ni < 5; ni++)
            for (int ki = 0; ki < 4; ki++) {
                const int64_t M = Ms[mi], N = Ns[ni], K = Ks[ki];
                float *W = malloc(sizeof(float) * (size_t)(N * K)), *X = malloc(sizeof(float) * (size_t)(M * K));
                float *out[3], *row = malloc(sizeof(float) * (size_t)N);
                fill(W, (size_t)(N * K));
                fill(X, (size_t)(M * K));
                for (int t = 0; t < tiers; t++) {
                    out[t] = malloc(sizeof(float) * (size_t)(M * N));
                    ok &= product(pool, levels[t], out[t], W, N, X, M, K);
                    if (t) same &= !memcmp(out[t], out[0], sizeof(float) * (size_t)(M * N));
                }
                /* the last row alone, at the highest tier */
                ok &= product(pool, levels[tiers - 1], row, W, N, X + (M - 1) * K, 1, K);
                alone &= !memcmp(row, out[tiers - 1] + (M - 1) * N, sizeof(float) * (size_t)N);
                for (int t = 0; t < tiers; t++) free(out[t]);
                free(W); free(X); free(row);
            }
    CHECK(ok, "f32 products in the tiles' order run");
    CHECK(same, "f32 products (M 1..128, N 1..771, K 8..768): the same bits at all %d tiers", tiers);
    CHECK(alone, "f32 products: a batch's last row == that row alone");
    slm_pool_free(pool);
}

int main(void)
{
    has512 = slm_cpu_has_avx512() && (slm_kernels_set_level(SLM_KERNELS_AVX512), slm_kernels_use_avx512());
    if (!has512) printf("skip: f32 avx512 products (no AVX-512)\n");
    test_tile();
    test_products();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
