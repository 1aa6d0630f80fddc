/* Single-precision GEMM for the training code (csrc/train/, kernels/lora.c):
 *
 *   C (M, N) = alpha * op(A) (M, K) . op(B) (K, N) + beta * C
 *
 * row-major, with cblas_sgemm(CblasRowMajor, ...)'s semantics: op(X) = X or
 * X^T, lda/ldb/ldc are row strides of the stored matrices (A is stored
 * (M, K), or (K, M) when trans_a; B (K, N), or (N, K) when trans_b);
 * beta == 0 means C is not read (NaN or garbage there is overwritten);
 * alpha == 0 or K == 0 leaves beta * C; M or N == 0 does nothing.
 * Single-threaded: the callers split their products over the pool's threads
 * by (ith, nth), one slm_sgemm call per thread and part.
 *
 * Why our own kernel: the environment pins OpenBLAS to its AVX2 (Haswell)
 * kernels (OPENBLAS_CORETYPE=Haswell in this environment), while the
 * training step is ~70 % sgemm and this CPU (Zen 5) has full-width AVX-512,
 * twice the FMA width. With AVX-512 (slm_kernels_use_avx512()) the products
 * run sgemm_avx512.c; otherwise cblas_sgemm (OpenBLAS on one thread), so
 * other CPUs and the capped tiers (slm.kernels("avx2")) keep OpenBLAS.
 *
 * Summation order of the AVX-512 path (what makes it deterministic): K is
 * cut into nk = ceil(K / SLM_SGEMM_KC) blocks of ceil(K / nk) (the last one
 * shorter), a function of K alone. Within a block each output is one float
 * FMA chain over k in increasing order from 0; the first block gives
 * C = alpha * s_0 + beta * C (C = alpha * s_0 when beta == 0), each later
 * block C = C + alpha * s_b (one FMA). Nothing depends on M, N, the tile an
 * output falls in or how a caller splits rows or columns among threads, so
 * results are bit-identical for any thread count. The cblas path has
 * OpenBLAS's own order (the two agree within float rounding, not bits). */
#ifndef SLM_SGEMM_H
#define SLM_SGEMM_H

/* K block of the AVX-512 path (see above: part of its summation order) */
#define SLM_SGEMM_KC 384

void slm_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc);

#if defined(__x86_64__)
/* The AVX-512 kernel (sgemm_avx512.c); call only when slm_cpu_has_avx512().
 * Returns 0 when it could not get its packing buffers (then nothing was
 * written and the caller falls back to cblas_sgemm). */
int slm_sgemm_avx512(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
                     const float *B, int ldb, float beta, float *C, int ldc);
#endif

#endif
