/* Matmul throughput per weight dtype: GB/s of weights streamed by a matvec
 * (M = 1, the per-token case) and GFLOP/s of a 32-row batch (prompt
 * processing), on 1 and 2 threads, AVX2 and generic kernels.
 *
 *   make && cc -O2 -std=c11 -D_GNU_SOURCE -Icsrc bench/kernels.c build/libslm.a \
 *        $(pkg-config --libs openblas) -lpthread -lm -o build/bench_kernels
 *   build/bench_kernels [N K [cpu]]    (default 4096 4096)
 *
 * With "cpu", single-thread times are the thread's CPU time instead of wall
 * time (meaningful on a machine shared with other jobs); the 2-thread
 * columns are always wall time.
 *
 * Weights are random bytes with sane scales (values do not change the
 * speed of the integer kernels) in a 64-byte aligned buffer larger than the
 * last-level cache, so the matvec numbers measure memory streaming. */
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

/* random valid contents: floats for the float types; for block types
 * random bytes, then every 16-bit word set to a small f16 (keeps scales
 * finite without knowing the field offsets) */
static void fill(slm_dtype t, unsigned char *p, size_t nbytes)
{
    if (t == SLM_DTYPE_F32) {
        for (size_t i = 0; i < nbytes / 4; i++) ((float *)p)[i] = bench_frand();
        return;
    }
    if (t == SLM_DTYPE_F16 || t == SLM_DTYPE_BF16) {
        for (size_t i = 0; i < nbytes / 2; i++) {
            float v = bench_frand();
            ((uint16_t *)p)[i] = t == SLM_DTYPE_F16 ? slm_f32_to_f16(v) : slm_f32_to_bf16(v);
        }
        return;
    }
    for (size_t i = 0; i < nbytes; i++) p[i] = (unsigned char)bench_u32();
    for (size_t i = 0; i + 1 < nbytes; i += 2) {
        uint16_t h = slm_f32_to_f16((float)(bench_u32() % 1000) * 1e-5f);
        if (bench_u32() & 1) memcpy(p + i, &h, 2);
    }
}

/* seconds per call, timed over enough repetitions for ~0.3 s */
static double time_matmul(slm_pool *pool, float *out, const unsigned char *W, slm_dtype t,
                          size_t rb, const float *X, int64_t M, int64_t N, int64_t K)
{
    slm_matmul_raw(pool, out, W, t, rb, X, M, N, K, NULL);   /* warm up */
    int reps = 1;
    for (;;) {
        double t0 = bench_now();
        for (int r = 0; r < reps; r++) slm_matmul_raw(pool, out, W, t, rb, X, M, N, K, NULL);
        double dt = bench_now() - t0;
        if (dt > 0.3 || reps > 1 << 20) return dt / reps;
        reps *= dt < 0.03 ? 10 : 2;
    }
}

int main(int argc, char **argv)
{
    int64_t N = argc > 2 ? atoll(argv[1]) : 4096, K = argc > 2 ? atoll(argv[2]) : 4096;
    const int cpu_time = argc > 3 && !strcmp(argv[3], "cpu");
    const slm_dtype types[] = {SLM_DTYPE_F32, SLM_DTYPE_F16, SLM_DTYPE_BF16, SLM_DTYPE_Q8_0,
                               SLM_DTYPE_Q4_0, SLM_DTYPE_Q4_1, SLM_DTYPE_Q5_0, SLM_DTYPE_Q5_1,
                               SLM_DTYPE_Q2_K, SLM_DTYPE_Q3_K, SLM_DTYPE_Q4_K, SLM_DTYPE_Q5_K,
                               SLM_DTYPE_Q6_K};
    const int64_t MB = 32;
    slm_pool *pools[2] = {slm_pool_new(1, NULL), slm_pool_new(2, NULL)};
    float *X = malloc(sizeof(float) * (size_t)(MB * K));
    float *out = malloc(sizeof(float) * (size_t)(MB * N));
    if (!X || !out || !pools[0] || !pools[1]) return 1;
    for (int64_t i = 0; i < MB * K; i++) X[i] = bench_frand();
    printf("N=%lld K=%lld, AVX2 %s, 1-thread times: %s\n", (long long)N, (long long)K,
           slm_cpu_has_avx2() ? "yes" : "no", cpu_time ? "thread CPU time" : "wall");
    printf("%-6s %8s | %-27s | %-27s | %-15s\n", "dtype", "MB", "matvec GB/s (1t / 2t)",
           "batch-32 GFLOP/s (1t / 2t)", "generic 1t GB/s");
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        int ok;
        size_t rb = slm_dtype_row_size(types[i], K, &ok);
        unsigned char *W = aligned_alloc(64, (rb * (size_t)N + 63) / 64 * 64);
        if (!ok || !W) return 1;
        fill(types[i], W, rb * (size_t)N);
        double gbs[2], gfl[2];
        for (int p = 0; p < 2; p++) {
            bench_clock_id = p == 0 && cpu_time ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
            gbs[p] = (double)rb * (double)N / time_matmul(pools[p], out, W, types[i], rb, X, 1, N, K) / 1e9;
            gfl[p] = 2.0 * (double)MB * (double)N * (double)K
                     / time_matmul(pools[p], out, W, types[i], rb, X, MB, N, K) / 1e9;
        }
        bench_clock_id = cpu_time ? CLOCK_THREAD_CPUTIME_ID : CLOCK_MONOTONIC;
        slm_kernels_force_generic(1);
        double gen = (double)rb * (double)N / time_matmul(pools[0], out, W, types[i], rb, X, 1, N, K) / 1e9;
        slm_kernels_force_generic(0);
        printf("%-6s %8.1f | %11.2f / %-13.2f | %11.1f / %-13.1f | %-15.2f\n", slm_dtype_name(types[i]),
               (double)rb * (double)N / 1e6, gbs[0], gbs[1], gfl[0], gfl[1], gen);
        free(W);
    }
    slm_pool_free(pools[0]);
    slm_pool_free(pools[1]);
    free(X);
    free(out);
    return 0;
}
