/* The C micro-benchmarks' clock and random numbers (bench/kernels.c,
 * bench/gemm_rows.c). bench_clock_id: wall time, or the calling thread's
 * CPU time (CLOCK_THREAD_CPUTIME_ID), which on a machine shared with other
 * jobs still measures what one core does (single-threaded runs only). */
#ifndef SLM_BENCH_CLOCK_H
#define SLM_BENCH_CLOCK_H

#include <stdint.h>
#include <time.h>

static clockid_t bench_clock_id = CLOCK_MONOTONIC;

static inline double bench_now(void)
{
    struct timespec ts;
    clock_gettime(bench_clock_id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* xorshift32: a fixed stream (the data need not be random, only varied) */
static uint32_t bench_rng = 1;

static inline uint32_t bench_u32(void)
{
    bench_rng ^= bench_rng << 13;
    bench_rng ^= bench_rng >> 17;
    bench_rng ^= bench_rng << 5;
    return bench_rng;
}

/* a float in [-1, 1] in steps of 0.001 */
static inline float bench_frand(void)
{
    return (float)(bench_u32() % 2001) / 1000.0f - 1;
}

#endif
