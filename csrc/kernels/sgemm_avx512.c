/* The AVX-512 f32 GEMM of sgemm.h: GotoBLAS/BLIS blocking with a 14x32
 * register tile.
 *
 *   for each column block j0 (SGEMM_NC columns of op(B))
 *     for each K block p0 (kc of K, sgemm.h: a function of K alone)
 *       pack op(B)[p0.., j0..] into Bp: panels of 32 columns, k-major
 *         (Bp[panel][k][32], columns past N zero)
 *       for each row block i0 (SGEMM_MC rows of op(A))
 *         pack op(A)[i0.., p0..] into Ap: panels of 14 rows, k-major
 *           (Ap[panel][k][14], rows past M zero)
 *         for each B panel, for each A panel: the microkernel
 *
 * Operands already stored k-major (A stored (K, M), B stored (K, N)) are
 * not copied: their full panels are read in place with their row stride,
 * and only a ragged last panel is packed (zero-padded, so the tile never
 * reads past the matrix). The transposed layouts are packed by 16x16
 * in-register transposes.
 *
 * The microkernel keeps a 14x32 tile of C in 28 zmm accumulators; per k
 * it loads two B vectors (32 columns) and broadcasts 14 A values: 28 FMAs
 * for 16 loads. The B panel (kc * 128 bytes, 48 KB at kc 384) is reused
 * across the A panels of the row block; the A block (<= 336 x 384 floats,
 * 504 KB) stays in L2. Ragged edges: the packed padding is zero and the
 * stores are masked (columns) or skipped (rows), so a tile's lanes always
 * run the same chain whatever their position: each output is
 * acc = fma(a[k], b[k], acc) for k = p0, p0 + 1, ... from acc = 0, and
 * the K blocks combine as sgemm.h states. A last panel of at most 16
 * columns takes the 14x16 variant (half the FMAs, same chains).
 *
 * Packing buffers are per thread (a pthread key frees them when the thread
 * ends), allocated once at their fixed maximum: no allocation per call. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sgemm.h"
#include "simd_avx512.h"

#define SGEMM_UNROLL _Pragma("GCC unroll 16")

#define SGEMM_MR 14
#define SGEMM_NR 32
#define SGEMM_MC (SGEMM_MR * 24)
#define SGEMM_NC (SGEMM_NR * 32)

typedef struct sgemm_bufs {
    float *a; /* SGEMM_MC x SGEMM_KC */
    float *b; /* SGEMM_KC x SGEMM_NC */
} sgemm_bufs;

static pthread_key_t sgemm_key;
static int sgemm_key_ok;
static pthread_once_t sgemm_key_once = PTHREAD_ONCE_INIT;

static void sgemm_bufs_free(void *p)
{
    sgemm_bufs *b = p;
    free(b->a);
    free(b->b);
    free(b);
}

static void sgemm_key_make(void)
{
    sgemm_key_ok = pthread_key_create(&sgemm_key, sgemm_bufs_free) == 0;
}

/* this thread's packing buffers, NULL if out of memory */
static sgemm_bufs *sgemm_bufs_get(void)
{
    pthread_once(&sgemm_key_once, sgemm_key_make);
    if (!sgemm_key_ok) return NULL;
    sgemm_bufs *b = pthread_getspecific(sgemm_key);
    if (b) return b;
    b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->a = aligned_alloc(64, (size_t)SGEMM_MC * SLM_SGEMM_KC * sizeof(float));
    b->b = aligned_alloc(64, (size_t)SLM_SGEMM_KC * SGEMM_NC * sizeof(float));
    if (!b->a || !b->b || pthread_setspecific(sgemm_key, b) != 0) {
        sgemm_bufs_free(b);
        return NULL;
    }
    return b;
}

/* dst[k * ldd + i] = src[i * lds + k] for i < rows (<= 16; lanes rows..15
 * zero), k < kc, storing the 16 lanes under mask `lanes` */
static void sgemm_transpose_rows(float *dst, int ldd, __mmask16 lanes, const float *src, int lds, int rows, int kc)
{
    for (int k0 = 0; k0 < kc; k0 += 16) {
        const int kn = kc - k0 < 16 ? kc - k0 : 16;
        const __mmask16 km = (__mmask16)(kn == 16 ? 0xFFFF : (1u << kn) - 1);
        __m512 r[16];
        SGEMM_UNROLL for (int i = 0; i < 16; i++) {
            if (i < rows) {
                /* the rows are 14-16 streams, more than the hardware
                 * prefetchers follow: ask for 4 lines ahead */
                _mm_prefetch((const char *)(src + (size_t)i * lds + k0 + 64), _MM_HINT_T0);
                r[i] = _mm512_maskz_loadu_ps(km, src + (size_t)i * lds + k0);
            } else {
                r[i] = _mm512_setzero_ps();
            }
        }
        slm_transpose16(r);
        if (kn == 16)
            SGEMM_UNROLL for (int k = 0; k < 16; k++) _mm512_mask_storeu_ps(dst + (size_t)(k0 + k) * ldd, lanes, r[k]);
        else
            for (int k = 0; k < kn; k++) _mm512_mask_storeu_ps(dst + (size_t)(k0 + k) * ldd, lanes, r[k]);
    }
}

/* Ap[p][k][14] = op(A)[i0 + 14p + r][p0 + k], rows past mc zero */
static void sgemm_pack_a(float *Ap, int trans_a, const float *A, int lda, int i0, int mc, int p0, int kc)
{
    for (int p = 0; p < mc; p += SGEMM_MR) {
        const int mr = mc - p < SGEMM_MR ? mc - p : SGEMM_MR;
        float *dst = Ap + (size_t)p * kc;
        if (trans_a) {
            /* A stored (K, M): op(A)'s rows are contiguous per k, so full
             * panels are read in place (sgemm_run); only a ragged one is
             * copied, zero-padded */
            if (mr == SGEMM_MR) continue;
            const __mmask16 m = (__mmask16)((1u << mr) - 1);
            const float *src = A + (size_t)p0 * lda + i0 + p;
            for (int k = 0; k < kc; k++) {
                _mm_prefetch((const char *)(src + (size_t)(k + 8) * lda), _MM_HINT_T0);
                const __m512 v = _mm512_maskz_loadu_ps(m, src + (size_t)k * lda);
                _mm512_mask_storeu_ps(dst + (size_t)k * SGEMM_MR, (__mmask16)0x3FFF, v);
            }
        } else {
            /* A stored (M, K): a transpose of 14 rows */
            sgemm_transpose_rows(dst, SGEMM_MR, (__mmask16)0x3FFF, A + (size_t)(i0 + p) * lda + p0, lda, mr, kc);
        }
    }
}

/* Bp[q][k][32] = op(B)[p0 + k][j0 + 32q + c], columns past nc zero */
static void sgemm_pack_b(float *Bp, int trans_b, const float *B, int ldb, int j0, int nc, int p0, int kc)
{
    for (int q = 0; q < nc; q += SGEMM_NR) {
        const int nr = nc - q < SGEMM_NR ? nc - q : SGEMM_NR;
        float *dst = Bp + (size_t)q * kc;
        if (!trans_b) {
            /* B stored (K, N): 32 contiguous columns per k, so full panels
             * are read in place (sgemm_run); only a ragged one is copied,
             * zero-padded */
            if (nr == SGEMM_NR) continue;
            const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
            const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
            const float *src = B + (size_t)p0 * ldb + j0 + q;
            for (int k = 0; k < kc; k++) {
                _mm_prefetch((const char *)(src + (size_t)(k + 8) * ldb), _MM_HINT_T0);
                _mm512_store_ps(dst + (size_t)k * SGEMM_NR, _mm512_maskz_loadu_ps(m0, src + (size_t)k * ldb));
                _mm512_store_ps(dst + (size_t)k * SGEMM_NR + 16,
                                _mm512_maskz_loadu_ps(m1, src + (size_t)k * ldb + 16));
            }
        } else {
            /* B stored (N, K): columns of op(B) are rows of B, transposed
             * 16 at a time */
            for (int h = 0; h < 2; h++) {
                const int rows = nr - 16 * h < 0 ? 0 : nr - 16 * h > 16 ? 16 : nr - 16 * h;
                sgemm_transpose_rows(dst + 16 * h, SGEMM_NR, (__mmask16)0xFFFF,
                                     B + (size_t)(j0 + q + 16 * h) * ldb + p0, ldb, rows, kc);
            }
        }
    }
}

/* How a tile's sums go into C (sgemm.h): first K block with beta == 0,
 * first with beta != 0, later blocks. */
enum { SGEMM_SET, SGEMM_SCALE, SGEMM_ADD };

static inline __attribute__((always_inline)) void sgemm_store(float *c, __mmask16 m, __m512 acc, __m512 alpha,
                                                              __m512 beta, int mode)
{
    if (m == 0) return;
    if (mode == SGEMM_SET) {
        _mm512_mask_storeu_ps(c, m, _mm512_mul_ps(alpha, acc));
    } else if (mode == SGEMM_SCALE) {
        const __m512 old = _mm512_maskz_loadu_ps(m, c);
        _mm512_mask_storeu_ps(c, m, _mm512_fmadd_ps(alpha, acc, _mm512_mul_ps(beta, old)));
    } else {
        const __m512 old = _mm512_maskz_loadu_ps(m, c);
        _mm512_mask_storeu_ps(c, m, _mm512_fmadd_ps(alpha, acc, old));
    }
}

/* C[0..mr)[0..nr) from a 14-row A panel and a (NV * 16)-column B panel,
 * kc long. NV is 1 or 2 at each call site, so the accumulators are
 * registers. */
static inline __attribute__((always_inline)) void sgemm_tile(const float *Ap, size_t a_ks, const float *Bp,
                                                             size_t b_ks, int kc, float *C, int ldc, int mr, int nr,
                                                             float alpha, float beta, int mode, const int NV)
{
    __m512 acc[SGEMM_MR][2];
    SGEMM_UNROLL for (int r = 0; r < SGEMM_MR; r++)
        SGEMM_UNROLL for (int v = 0; v < NV; v++) acc[r][v] = _mm512_setzero_ps();
    for (int k = 0; k < kc; k++) {
        __m512 b[2];
        SGEMM_UNROLL for (int v = 0; v < NV; v++) b[v] = _mm512_loadu_ps(Bp + (size_t)k * b_ks + 16 * v);
        SGEMM_UNROLL for (int r = 0; r < SGEMM_MR; r++) {
            const __m512 a = _mm512_set1_ps(Ap[(size_t)k * a_ks + r]);
            SGEMM_UNROLL for (int v = 0; v < NV; v++) acc[r][v] = _mm512_fmadd_ps(a, b[v], acc[r][v]);
        }
    }
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    const __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xFFFF : (1u << nr) - 1);
    const __mmask16 m1 = (__mmask16)(nr >= 32 ? 0xFFFF : nr > 16 ? (1u << (nr - 16)) - 1 : 0);
    SGEMM_UNROLL for (int r = 0; r < SGEMM_MR; r++) {
        if (r >= mr) break;
        float *c = C + (size_t)r * ldc;
        sgemm_store(c, m0, acc[r][0], va, vb, mode);
        if (NV == 2) sgemm_store(c + 16, m1, acc[r][1], va, vb, mode);
    }
}

static void sgemm_tile_14x32(const float *Ap, size_t a_ks, const float *Bp, size_t b_ks, int kc, float *C, int ldc,
                             int mr, int nr, float alpha, float beta, int mode)
{
    sgemm_tile(Ap, a_ks, Bp, b_ks, kc, C, ldc, mr, nr, alpha, beta, mode, 2);
}

static void sgemm_tile_14x16(const float *Ap, size_t a_ks, const float *Bp, size_t b_ks, int kc, float *C, int ldc,
                             int mr, int nr, float alpha, float beta, int mode)
{
    sgemm_tile(Ap, a_ks, Bp, b_ks, kc, C, ldc, mr, nr, alpha, beta, mode, 1);
}

/* C = beta * C over M x N (alpha == 0 or K == 0); beta == 0 writes zeros */
static void sgemm_scale(int M, int N, float beta, float *C, int ldc)
{
    for (int i = 0; i < M; i++) {
        float *c = C + (size_t)i * ldc;
        if (beta == 0.0f) memset(c, 0, (size_t)N * sizeof(float));
        else if (beta != 1.0f)
            for (int j = 0; j < N; j++) c[j] *= beta;
    }
}

int slm_sgemm_avx512(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return 1;
    if (K <= 0 || alpha == 0.0f) {
        sgemm_scale(M, N, beta, C, ldc);
        return 1;
    }
    sgemm_bufs *bufs = sgemm_bufs_get();
    if (!bufs) return 0;
    /* K blocks: nk equal blocks of at most SLM_SGEMM_KC (sgemm.h) */
    const int nk = (K + SLM_SGEMM_KC - 1) / SLM_SGEMM_KC;
    const int kb = (K + nk - 1) / nk;
    for (int j0 = 0; j0 < N; j0 += SGEMM_NC) {
        const int nc = N - j0 < SGEMM_NC ? N - j0 : SGEMM_NC;
        for (int p0 = 0; p0 < K; p0 += kb) {
            const int kc = K - p0 < kb ? K - p0 : kb;
            const int mode = p0 > 0 ? SGEMM_ADD : beta == 0.0f ? SGEMM_SET : SGEMM_SCALE;
            sgemm_pack_b(bufs->b, trans_b, B, ldb, j0, nc, p0, kc);
            for (int i0 = 0; i0 < M; i0 += SGEMM_MC) {
                const int mc = M - i0 < SGEMM_MC ? M - i0 : SGEMM_MC;
                sgemm_pack_a(bufs->a, trans_a, A, lda, i0, mc, p0, kc);
                for (int q = 0; q < nc; q += SGEMM_NR) {
                    const int nr = nc - q < SGEMM_NR ? nc - q : SGEMM_NR;
                    /* full panels of k-major operands in place, else packed */
                    const int b_direct = !trans_b && nr == SGEMM_NR;
                    const float *Bp = b_direct ? B + (size_t)p0 * ldb + j0 + q : bufs->b + (size_t)q * kc;
                    const size_t b_ks = b_direct ? (size_t)ldb : SGEMM_NR;
                    for (int p = 0; p < mc; p += SGEMM_MR) {
                        const int mr = mc - p < SGEMM_MR ? mc - p : SGEMM_MR;
                        float *Ct = C + (size_t)(i0 + p) * ldc + j0 + q;
                        const int a_direct = trans_a && mr == SGEMM_MR;
                        const float *Ap = a_direct ? A + (size_t)p0 * lda + i0 + p : bufs->a + (size_t)p * kc;
                        const size_t a_ks = a_direct ? (size_t)lda : SGEMM_MR;
                        if (nr > 16) sgemm_tile_14x32(Ap, a_ks, Bp, b_ks, kc, Ct, ldc, mr, nr, alpha, beta, mode);
                        else sgemm_tile_14x16(Ap, a_ks, Bp, b_ks, kc, Ct, ldc, mr, nr, alpha, beta, mode);
                    }
                }
            }
        }
    }
    return 1;
}

#endif
