/* The AVX-512 f16/bf16/f32 tile kernels (kernels/gemm_f16_avx512.c)
 * against the specification, the generic kernels of gemm.c:
 *   - every tile shape 1..8 weight rows by 1..6 activation rows, over K
 *     from its minimum (8) to several multiples, with row strides that are
 *     not multiples of a cache line: the same bits as the generic chain,
 *     nothing written outside the tile;
 *   - whole products (slm_matmul_multi, 2 threads) at M = 1..20 and 128 on
 *     a ragged N: the AVX-512 tier's bits equal the AVX2 tier's and the
 *     generic tier's (slm_kernels_set_level);
 *   - batch invariance: row m of an M-row product has the bits of that row
 *     alone (M = 1), at every M and tier.
 * Without AVX-512 (or AVX2) the cases of the missing tier are skipped,
 * saying so; the generic ones still run. */
#define TESTRAND_SEED 0x5eed16u
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/fp16.h"
#include "core/pool.h"
#include "kernels/gemm.h"
#include "kernels/matmul.h"
#include "kernels/vecdot.h"
#include "testrand.h"

enum { MAXK = 1536, TR = 8, TC = 6, PAD = 24 };

static const slm_dtype types[3] = {SLM_DTYPE_F16, SLM_DTYPE_BF16, SLM_DTYPE_F32};

static size_t esize(slm_dtype t) { return t == SLM_DTYPE_F32 ? 4 : 2; }

/* n weights of type t from values in [-scale, scale] */
static void fill_w(slm_dtype t, unsigned char *p, int64_t n, float scale)
{
    for (int64_t i = 0; i < n; i++) {
        const float v = frand() * scale;
        if (t == SLM_DTYPE_F32) {
            memcpy(p + 4 * i, &v, 4);
        } else {
            const uint16_t h = t == SLM_DTYPE_F16 ? slm_f32_to_f16(v) : slm_f32_to_bf16(v);
            memcpy(p + 2 * i, &h, 2);
        }
    }
}

#if defined(__x86_64__)
static slm_gemm_tile_fn avx512_tile(slm_dtype t)
{
    return t == SLM_DTYPE_F16 ? slm_gemm_f16_avx512 : slm_gemm_bf16_avx512;
}
#endif

/* Tiles: every (nr, nc) at several K against the generic tile (the
 * order's definition), row strides padded by odd amounts. */
static void test_tiles(void)
{
#if defined(__x86_64__)
    if (!slm_cpu_has_avx512()) {
        printf("skip: AVX-512 tiles (this CPU or OS has no AVX-512 F/BW/VL/DQ/VNNI)\n");
        return;
    }
    static const int64_t Ks[] = {8, 16, 24, 64, 200, 576, 1536};
    /* f16 and bf16 here; the f32 tile (8 x 4) has its own test
     * (test_gemm_f32_avx512), and whole f32 products are checked below */
    for (int t = 0; t < 2; t++) {
        const slm_dtype ty = types[t];
        const slm_gemm_kernel *gen = slm_gemm_get_generic(ty);
        const slm_gemm_tile_fn tile = avx512_tile(ty);
        /* rows (2 + t) elements longer than K: strides off the 64-byte grid */
        const size_t ldw = (MAXK + 2 + t) * esize(ty), lda = (MAXK + 4) * sizeof(float);
        unsigned char *W = malloc(ldw * TR);
        float *A = malloc(lda * TC);
        int same = 1, inside = 1, cases = 0;
        for (size_t ki = 0; ki < sizeof Ks / sizeof Ks[0]; ki++) {
            const int64_t K = Ks[ki];
            for (int r = 0; r < TR; r++) fill_w(ty, W + r * ldw, (int64_t)(ldw / esize(ty)), 1.0f + r);
            for (int c = 0; c < TC; c++) {
                float *x = (float *)(void *)((unsigned char *)A + c * lda);
                for (int64_t i = 0; i < MAXK + 4; i++) x[i] = frand() * (0.5f + (float)c);
                /* f32 rows read as they are; f16/bf16 rows hold the rounded values */
                if (gen->act) gen->act(x, x, MAXK + 4);
            }
            for (int nr = 1; nr <= TR; nr++)
                for (int nc = 1; nc <= TC; nc++) {
                    enum { LDO = TR + PAD };
                    float ref[TC][LDO], got[TC][LDO];
                    memset(got, 0xff, sizeof got);   /* NaN: not written */
                    /* the reference one output at a time (the generic tile
                     * at 1 x 1 is the chain of gemm.h) */
                    for (int c = 0; c < nc; c++)
                        for (int r = 0; r < nr; r++)
                            gen->tile(K, W + r * ldw, ldw, 1, (unsigned char *)A + c * lda, lda, 1, &ref[c][r], 1);
                    tile(K, W, ldw, nr, A, lda, nc, got[0], LDO);
                    for (int c = 0; c < TC; c++)
                        for (int r = 0; r < LDO; r++) {
                            if (c < nc && r < nr) same &= memcmp(&got[c][r], &ref[c][r], 4) == 0;
                            else inside &= isnan(got[c][r]);
                        }
                    cases++;
                }
        }
        const char *name = slm_dtype_name(ty);
        CHECK(same, "%s AVX-512 tiles bit-identical to the generic chain (%d tiles: 1..8 x 1..6, K = 8..1536)",
              name, cases);
        CHECK(inside, "%s AVX-512 tiles write only their nr x nc outputs", name);
        free(W);
        free(A);
    }
#else
    printf("skip: AVX-512 tiles (not x86-64)\n");
#endif
}

/* out = W . X^T at one tier (2 threads); f32 weights asked for the tile order */
static void product(slm_pool *pool, int level, slm_dtype ty, const unsigned char *W, size_t ldw, int64_t N,
                    const float *X, int64_t M, int64_t K, float *out)
{
    slm_kernels_set_level(level);
    const slm_matmul_part p = {out, W, ty, ldw, N,
                               ty == SLM_DTYPE_F32 ? SLM_MATMUL_ORDER_TILES : SLM_MATMUL_ORDER_DEFAULT, NULL};
    slm_error err = {0};
    if (slm_matmul_multi(pool, &p, 1, X, M, K, &err) != SLM_OK) printf("matmul: %s\n", err.msg);
}

/* Products at M = 1..20 and 128 (N = 75: segments with a tail, ragged
 * tiles): each tier's bits equal the generic tier's; row m equals the
 * same row alone. */
static void test_products(void)
{
    enum { N = 75, K = 576, MMAX = 128 };
    slm_pool *pool = slm_pool_new(2, NULL);
    float *X = rvec((int64_t)MMAX * K, 2.0f);
    float *ref = malloc(sizeof(float) * MMAX * N), *got = malloc(sizeof(float) * MMAX * N);
    float *alone = malloc(sizeof(float) * MMAX * N);
    const int has[3] = {1, slm_cpu_has_avx2(), slm_cpu_has_avx512()};
    const char *tier[3] = {"generic", "AVX2", "AVX-512"};
    if (!has[2]) printf("skip: AVX-512 products (this CPU or OS has no AVX-512)\n");
    if (!has[1]) printf("skip: AVX2 products (this CPU has no AVX2/FMA/F16C)\n");
    for (int t = 0; t < 3; t++) {
        const slm_dtype ty = types[t];
        const size_t ldw = (K + 8) * esize(ty);
        unsigned char *W = malloc(ldw * N);
        fill_w(ty, W, (int64_t)(ldw / esize(ty)) * N, 0.25f);
        int same[3] = {1, 1, 1}, inv[3] = {1, 1, 1}, n_m = 0;
        /* each row alone at the generic tier: the reference of every row */
        for (int64_t m = 0; m < MMAX; m++)
            product(pool, SLM_KERNELS_GENERIC, ty, W, ldw, N, X + m * K, 1, K, alone + m * N);
        for (int64_t M = 1; M <= MMAX; M = M < 20 ? M + 1 : MMAX + (M == MMAX)) {
            product(pool, SLM_KERNELS_GENERIC, ty, W, ldw, N, X, M, K, ref);
            inv[0] &= memcmp(ref, alone, sizeof(float) * M * N) == 0;
            for (int l = 1; l < 3; l++) {
                if (!has[l]) continue;
                memset(got, 0xff, sizeof(float) * MMAX * N);
                product(pool, l, ty, W, ldw, N, X, M, K, got);
                same[l] &= memcmp(got, ref, sizeof(float) * M * N) == 0;
                inv[l] &= memcmp(got, alone, sizeof(float) * M * N) == 0;
            }
            n_m++;
        }
        const char *name = slm_dtype_name(ty);
        CHECK(inv[0], "%s generic products: each row's bits at M = 1..20, 128 equal the row alone", name);
        for (int l = 1; l < 3; l++) {
            if (!has[l]) continue;
            CHECK(same[l], "%s %s products (75 x 576, %d values of M in 1..128) bit-identical to the generic tier",
                  name, tier[l], n_m);
            CHECK(inv[l], "%s %s products: each row's bits at every M equal the row alone (batch invariance)",
                  name, tier[l]);
        }
        free(W);
    }
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    free(X);
    free(ref);
    free(got);
    free(alone);
    slm_pool_free(pool);
}

int main(void)
{
    test_tiles();
    test_products();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
