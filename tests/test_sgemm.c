/* slm_sgemm (kernels/sgemm.h) against references written here:
 *
 * - a double-precision scalar product, elementwise within the bound
 *   |C - ref| <= (K + 4) u (|alpha| sum_k |a_ik b_kj| + |beta c_ij|),
 *   u = 2^-24: any order of K fused multiply-adds makes at most K roundings
 *   of partial sums bounded by that sum (Higham, Accuracy and Stability,
 *   3.1: |fl(sum) - sum| <= gamma_K sum |x_k|), and alpha/beta and the
 *   combination of the K blocks add at most 4 more (nk <= 4 here); holds
 *   for OpenBLAS's order as well as ours;
 * - for the AVX-512 path, the summation order sgemm.h specifies, written
 *   here as scalar fmaf chains: the same bits are required;
 * - the AVX-512 path against the cblas path (slm_kernels_set_level AVX2)
 *   within twice the bound;
 * - determinism: the same bits when the product is computed in column or
 *   row pieces (as callers split it over threads), and nothing outside
 *   the M x N window of C written (guard values in the padding of ldc and
 *   after the last row).
 * Shapes: all four transposes, M, N, K from 1, every tile edge (14 x 32
 * and the 16-column variant), K across the K blocks, leading dimensions
 * larger than the widths, and the speed anchor's training shapes. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "kernels/sgemm.h"
#include "kernels/vecdot.h"

#define TESTRAND_SEED 1515
#include "testrand.h"

#define GUARD 12345.0f

typedef struct mats {
    int ta, tb, M, N, K, lda, ldb, ldc;
    float *A, *B, *C0; /* C0: C's values before the product */
    double *S, *SA;    /* per output: sum_k a b and sum_k |a b|, in double */
} mats;

static float opa(const mats *m, int i, int k) { return m->ta ? m->A[(size_t)k * m->lda + i] : m->A[(size_t)i * m->lda + k]; }
static float opb(const mats *m, int k, int j) { return m->tb ? m->B[(size_t)j * m->ldb + k] : m->B[(size_t)k * m->ldb + j]; }

static void mats_make(mats *m, int ta, int tb, int M, int N, int K)
{
    m->ta = ta; m->tb = tb; m->M = M; m->N = N; m->K = K;
    /* leading dimensions larger than the stored widths */
    m->lda = (ta ? M : K) + 3;
    m->ldb = (tb ? K : N) + 5;
    m->ldc = N + 7;
    const size_t na = (size_t)(ta ? K : M) * m->lda, nb = (size_t)(tb ? N : K) * m->ldb;
    m->A = malloc((na + 1) * sizeof(float));
    m->B = malloc((nb + 1) * sizeof(float));
    m->C0 = malloc(((size_t)M * m->ldc + 1) * sizeof(float));
    for (size_t i = 0; i < na + 1; i++) m->A[i] = frand();
    for (size_t i = 0; i < nb + 1; i++) m->B[i] = frand();
    for (size_t i = 0; i < (size_t)M * m->ldc + 1; i++) m->C0[i] = frand();
    m->S = malloc(((size_t)M * N + 1) * sizeof(double));
    m->SA = malloc(((size_t)M * N + 1) * sizeof(double));
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, sa = 0;
            for (int k = 0; k < K; k++) {
                const double p = (double)opa(m, i, k) * opb(m, k, j);
                s += p;
                sa += fabs(p);
            }
            m->S[(size_t)i * N + j] = s;
            m->SA[(size_t)i * N + j] = sa;
        }
}

static void mats_free(mats *m)
{
    free(m->A); free(m->B); free(m->C0); free(m->S); free(m->SA);
}

/* C as the caller hands it over: NaN in the window when beta == 0 (it must
 * not be read), guards outside it (padding columns and one extra float) */
static float *c_init(const mats *m, float beta)
{
    const size_t n = (size_t)m->M * m->ldc + 1;
    float *C = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) C[i] = GUARD;
    for (int i = 0; i < m->M; i++)
        for (int j = 0; j < m->N; j++) C[(size_t)i * m->ldc + j] = beta == 0.0f ? NAN : m->C0[(size_t)i * m->ldc + j];
    return C;
}

static int guards_intact(const mats *m, const float *C)
{
    for (int i = 0; i < m->M; i++)
        for (int j = m->N; j < m->ldc; j++)
            if (C[(size_t)i * m->ldc + j] != GUARD) return 0;
    return C[(size_t)m->M * m->ldc] == GUARD;
}

/* worst |C - ref| / bound over the window (<= 1 passes) */
static double bound_ratio(const mats *m, const float *C, float alpha, float beta)
{
    const double u = ldexp(1.0, -24);
    double worst = 0;
    for (int i = 0; i < m->M; i++)
        for (int j = 0; j < m->N; j++) {
            const double s = m->S[(size_t)i * m->N + j], sa = m->SA[(size_t)i * m->N + j];
            const double c0 = beta == 0.0f ? 0.0 : m->C0[(size_t)i * m->ldc + j];
            const double ref = (double)alpha * s + (double)beta * c0;
            const double bound = (m->K + 4) * u * (fabs(alpha) * sa + fabs(beta * c0)) + 1e-37;
            const double r = fabs((double)C[(size_t)i * m->ldc + j] - ref) / bound;
            if (!(r <= worst)) worst = isnan(r) ? INFINITY : r;
        }
    return worst;
}

/* sgemm.h's order, scalar: K in nk equal blocks, an fmaf chain per block,
 * first block alpha * s + beta * c (alpha * s if beta == 0), then
 * c + alpha * s per block; alpha == 0 or K == 0: beta * c */
static float spec_value(const mats *m, int i, int j, float alpha, float beta)
{
    const float c0 = m->C0[(size_t)i * m->ldc + j];
    if (m->K == 0 || alpha == 0.0f) return beta == 0.0f ? 0.0f : beta * c0;
    const int nk = (m->K + SLM_SGEMM_KC - 1) / SLM_SGEMM_KC, kb = (m->K + nk - 1) / nk;
    float c = 0;
    for (int p0 = 0; p0 < m->K; p0 += kb) {
        const int p1 = p0 + kb < m->K ? p0 + kb : m->K;
        float s = 0;
        for (int k = p0; k < p1; k++) s = fmaf(opa(m, i, k), opb(m, k, j), s);
        if (p0 > 0) c = fmaf(alpha, s, c);
        else c = beta == 0.0f ? alpha * s : fmaf(alpha, s, beta * c0);
    }
    return c;
}

static int spec_mismatches(const mats *m, const float *C, float alpha, float beta)
{
    int bad = 0;
    for (int i = 0; i < m->M; i++)
        for (int j = 0; j < m->N; j++) {
            const float want = spec_value(m, i, j, alpha, beta), got = C[(size_t)i * m->ldc + j];
            if (memcmp(&want, &got, sizeof got) != 0) bad++;
        }
    return bad;
}

static float *run(const mats *m, float alpha, float beta)
{
    float *C = c_init(m, beta);
    slm_sgemm(m->ta, m->tb, m->M, m->N, m->K, alpha, m->A, m->lda, m->B, m->ldb, beta, C, m->ldc);
    return C;
}

/* the product computed in pieces: columns cut at `cuts` (by_cols) or rows */
static float *run_pieces(const mats *m, float alpha, float beta, int by_cols, const int *cuts, int ncuts)
{
    float *C = c_init(m, beta);
    int lo = 0;
    for (int c = 0; c <= ncuts; c++) {
        const int lim = by_cols ? m->N : m->M;
        int hi = c < ncuts ? cuts[c] : lim;
        if (hi > lim) hi = lim;
        if (hi <= lo) continue;
        if (by_cols) {
            const float *B = m->tb ? m->B + (size_t)lo * m->ldb : m->B + lo;
            slm_sgemm(m->ta, m->tb, m->M, hi - lo, m->K, alpha, m->A, m->lda, B, m->ldb, beta, C + lo, m->ldc);
        } else {
            const float *A = m->ta ? m->A + lo : m->A + (size_t)lo * m->lda;
            slm_sgemm(m->ta, m->tb, hi - lo, m->N, m->K, alpha, A, m->lda, m->B, m->ldb, beta,
                      C + (size_t)lo * m->ldc, m->ldc);
        }
        lo = hi;
    }
    return C;
}

static int same_window(const mats *m, const float *x, const float *y)
{
    for (int i = 0; i < m->M; i++)
        if (memcmp(x + (size_t)i * m->ldc, y + (size_t)i * m->ldc, (size_t)m->N * sizeof(float)) != 0) return 0;
    return 1;
}

static const float alphas[][2] = { { 1.0f, 0.0f }, { 1.0f, 1.0f }, { 0.5f, -2.0f }, { -1.25f, 0.0f }, { 0.0f, 0.75f } };
#define N_AB ((int)(sizeof alphas / sizeof alphas[0]))

static double worst_avx512, worst_blas, worst_cross;

static void case_shape(int M, int N, int K, int have512)
{
    for (int t = 0; t < 4; t++) {
        const int ta = t >> 1, tb = t & 1;
        mats m;
        mats_make(&m, ta, tb, M, N, K);
        for (int ab = 0; ab < N_AB; ab++) {
            const float alpha = alphas[ab][0], beta = alphas[ab][1];
            slm_kernels_set_level(SLM_KERNELS_AVX2);
            float *Cb = run(&m, alpha, beta);
            const double rb = bound_ratio(&m, Cb, alpha, beta);
            if (rb > worst_blas) worst_blas = rb;
            CHECK(rb <= 1.0, "cblas path %dx%dx%d ta=%d tb=%d alpha=%g beta=%g: error %.3g x the bound", M, N, K,
                  ta, tb, alpha, beta, rb);
            CHECK(guards_intact(&m, Cb), "cblas path %dx%dx%d ta=%d tb=%d: wrote outside C", M, N, K, ta, tb);
            slm_kernels_set_level(SLM_KERNELS_AVX512);
            if (have512) {
                float *C = run(&m, alpha, beta);
                const double r = bound_ratio(&m, C, alpha, beta);
                if (r > worst_avx512) worst_avx512 = r;
                CHECK(r <= 1.0, "avx512 %dx%dx%d ta=%d tb=%d alpha=%g beta=%g: error %.3g x the bound", M, N, K, ta,
                      tb, alpha, beta, r);
                CHECK(guards_intact(&m, C), "avx512 %dx%dx%d ta=%d tb=%d: wrote outside C", M, N, K, ta, tb);
                const int bad = spec_mismatches(&m, C, alpha, beta);
                CHECK(bad == 0, "avx512 %dx%dx%d ta=%d tb=%d alpha=%g beta=%g: %d outputs differ from sgemm.h's "
                      "order", M, N, K, ta, tb, alpha, beta, bad);
                /* against the cblas path: both within the bound of the
                 * same reference, so within twice it of each other */
                double d = 0;
                for (int i = 0; i < M; i++)
                    for (int j = 0; j < N; j++) {
                        const double x = fabs((double)C[(size_t)i * m.ldc + j] - Cb[(size_t)i * m.ldc + j]);
                        if (x > d) d = x;
                    }
                const double rel = d / ((K + 4) * ldexp(1.0, -24) * (fabs(alpha) * K + fabs(beta)) + 1e-37);
                if (rel > worst_cross) worst_cross = rel;
                CHECK(rel <= 2.0, "avx512 vs cblas %dx%dx%d ta=%d tb=%d: max diff %.3g", M, N, K, ta, tb, d);
                /* callers' splits: columns, then rows, at tile-unaligned cuts */
                static const int ccuts[] = { 1, 13, 17, 48, 95 }, rcuts[] = { 3, 14, 15, 40, 341 };
                float *Cc = run_pieces(&m, alpha, beta, 1, ccuts, 5);
                float *Cr = run_pieces(&m, alpha, beta, 0, rcuts, 5);
                CHECK(same_window(&m, C, Cc) && same_window(&m, C, Cr),
                      "avx512 %dx%dx%d ta=%d tb=%d: bits change when split by columns or rows", M, N, K, ta, tb);
                free(Cc); free(Cr);
                free(C);
            }
            free(Cb);
        }
        mats_free(&m);
    }
}

int main(void)
{
    const int have512 = slm_cpu_has_avx512();
    if (!have512) printf("skip: no AVX-512 on this CPU: only the cblas path is tested\n");
    /* tile edges (14 x 32, the 16-column variant), K from 1 and across the
     * K blocks (SLM_SGEMM_KC 384: 385 and 768 two blocks, 1153 four) */
    static const int shapes[][3] = {
        { 1, 1, 1 },    { 1, 17, 3 },   { 13, 31, 7 },  { 14, 32, 1 },   { 15, 33, 64 },
        { 14, 16, 5 },  { 28, 48, 9 },  { 29, 64, 2 },  { 27, 65, 128 }, { 3, 95, 385 },
        { 17, 20, 768 }, { 5, 7, 1153 }, { 350, 40, 11 }, { 2, 1030, 3 },
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) case_shape(shapes[s][0], shapes[s][1], shapes[s][2], have512);
    /* K == 0: beta * C (beta 0: zeros over NaN) */
    case_shape(9, 21, 0, have512);
    /* the speed anchor's shapes (dim 128, ff 352, vocab 65, 768 tokens, two
     * threads: 384 rows each; dW: K = 768 tokens) */
    static const int train[][3] = { { 384, 352, 128 }, { 384, 128, 352 }, { 352, 64, 768 }, { 65, 128, 384 },
                                     { 64, 64, 32 } };
    for (size_t s = 0; s < sizeof train / sizeof train[0]; s++) case_shape(train[s][0], train[s][1], train[s][2], have512);
    /* M or N == 0: nothing read or written, in both tiers (the pointers
     * given are guards only) */
    for (int l = 0; l < 2; l++) {
        slm_kernels_set_level(l ? SLM_KERNELS_AVX512 : SLM_KERNELS_AVX2);
        float a[4] = { 1, 2, 3, 4 }, b[4] = { 5, 6, 7, 8 }, c[4] = { GUARD, GUARD, GUARD, GUARD };
        slm_sgemm(0, 0, 0, 2, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
        slm_sgemm(1, 1, 2, 0, 2, 1.0f, a, 2, b, 2, 0.0f, c, 2);
        CHECK(c[0] == GUARD && c[1] == GUARD && c[2] == GUARD && c[3] == GUARD,
              "%s: M or N == 0 wrote C", l ? "avx512" : "cblas path");
    }
    slm_kernels_set_level(SLM_KERNELS_AVX512);
    printf("worst error / bound: avx512 %.3g, cblas %.3g; avx512 vs cblas %.3g of the bound\n", worst_avx512,
           worst_blas, worst_cross);
    return check_summary();
}
