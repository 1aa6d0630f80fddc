/* slm_sgemm: the AVX-512 kernel when the tier is in use, else OpenBLAS
 * (sgemm.h). */
#include "sgemm.h"

#include <cblas.h>
#include <pthread.h>

#include "vecdot.h"

/* OpenBLAS on one thread: the callers are pool threads, each with its part */
static void sgemm_blas_single(void)
{
    openblas_set_num_threads(1);
}

void slm_sgemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
#if defined(__x86_64__)
    if (slm_kernels_use_avx512() &&
        slm_sgemm_avx512(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc))
        return;
#endif
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sgemm_blas_single);
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, M, N, K,
                alpha, A, lda, B, ldb, beta, C, ldc);
}
