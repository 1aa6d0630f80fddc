/* Per-activation-row cost of a float-weight product at small and prefill
 * batch sizes (M = 1, 2, 4, 8, 16, 32, 128), AVX2 tier against AVX-512 tier
 * measured back to back (alternating, best of several rounds), so that the
 * load of a shared machine hits both alike.
 *
 *   make && cc -O2 -std=c11 -D_GNU_SOURCE -Icsrc bench/gemm_rows.c build/libslm.a \
 *        $(pkg-config --libs openblas) -lpthread -lm -o build/bench_gemm_rows
 *   build/bench_gemm_rows [N K [threads [dtype]]]   (default 1536 576 2 f16: the
 *                                                    135M model's ffn_up)
 *
 * The weights are `copies` copies of the matrix (more than the last-level
 * cache holds) used in turn, as a forward walks its layers: each call
 * streams its weights from memory, as decode and batched decode do. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "core/pool.h"
#include "kernels/matmul.h"
#include "kernels/vecdot.h"

#include "bench_clock.h"

int main(int argc, char **argv)
{
    const int64_t N = argc > 2 ? atoll(argv[1]) : 1536, K = argc > 2 ? atoll(argv[2]) : 576;
    const int nth = argc > 3 ? atoi(argv[3]) : 2;
    const char *tname = argc > 4 ? argv[4] : "f16";
    slm_dtype t = !strcmp(tname, "bf16") ? SLM_DTYPE_BF16 : !strcmp(tname, "f32") ? SLM_DTYPE_F32 : SLM_DTYPE_F16;
    static const int64_t Ms[] = {1, 2, 4, 8, 16, 32, 128};
    const int64_t MMAX = 128;
    int ok;
    const size_t rb = slm_dtype_row_size(t, K, &ok), mat = rb * (size_t)N;
    const int copies = (int)(256e6 / (double)mat) < 2 ? 2 : (int)(256e6 / (double)mat);
    unsigned char *W = aligned_alloc(64, (mat * (size_t)copies + 63) / 64 * 64);
    float *X = malloc(sizeof(float) * (size_t)(MMAX * K)), *out = malloc(sizeof(float) * (size_t)(MMAX * N));
    slm_pool *pool = slm_pool_new(nth, NULL);
    if (nth == 1) bench_clock_id = CLOCK_THREAD_CPUTIME_ID;
    if (!ok || !W || !X || !out || !pool) return 1;
    for (size_t i = 0; i < mat * (size_t)copies / 2; i++) {
        const float v = bench_frand();
        ((uint16_t *)(void *)W)[i] = t == SLM_DTYPE_BF16 ? slm_f32_to_bf16(v) : slm_f32_to_f16(v);
    }
    if (t == SLM_DTYPE_F32)
        for (size_t i = 0; i < mat * (size_t)copies / 4; i++) ((float *)(void *)W)[i] = bench_frand();
    for (int64_t i = 0; i < MMAX * K; i++) X[i] = bench_frand();
    printf("%s N=%lld K=%lld threads=%d, %d copies of %.1f MB; ms per activation row (best of 9 rounds, %s)\n",
           tname, (long long)N, (long long)K, nth, copies, (double)mat / 1e6, nth == 1 ? "thread CPU time" : "wall time");
    printf("%5s %10s %10s %8s\n", "M", "avx2", "avx512", "ratio");
    const int levels[2] = {SLM_KERNELS_AVX2, SLM_KERNELS_AVX512};
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
        const int64_t M = Ms[mi];
        double best[2] = {1e9, 1e9};
        int cp = 0;
        for (int round = 0; round < 9; round++)
            for (int l = 0; l < 2; l++) {
                slm_kernels_set_level(levels[l]);
                /* ~60 ms of calls per round and tier */
                const int reps = (int)(2e8 / (double)(2 * N * K * (M < 8 ? 8 : M))) + 4;
                const double t0 = bench_now();
                for (int r = 0; r < reps; r++, cp = (cp + 1) % copies)
                    slm_matmul_raw(pool, out, W + (size_t)cp * mat, t, rb, X, M, N, K, NULL);
                const double dt = (bench_now() - t0) / reps / (double)M * 1e3;
                if (dt < best[l]) best[l] = dt;
            }
        printf("%5lld %10.4f %10.4f %8.2f\n", (long long)M, best[0], best[1], best[0] / best[1]);
    }
    slm_pool_free(pool);
    free(W);
    free(X);
    free(out);
    return 0;
}
