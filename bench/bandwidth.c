/* Memory read bandwidth measured on the spot: T threads each stream their
 * half (1/T) of a buffer far larger than the last-level cache with 256-bit
 * loads, summing the words so the loads cannot be dropped. The best of
 * `reps` passes is printed as "bw_gbs=X" (GB/s, 1e9 bytes), the figure
 * bench/run.lua divides a decode's weight traffic by.
 *
 *   cc -O2 -mavx2 -std=c11 -D_GNU_SOURCE bench/bandwidth.c -lpthread -o build/bench_bandwidth
 *   build/bench_bandwidth [threads=2] [MB=512] [reps=5]
 *
 * Every pass re-reads the whole buffer, so nothing of it is cached from the
 * previous one (32 MB of L3 against 512 MB). */
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct part {
    const __m256i *p;
    size_t n;        /* 32-byte words */
    long long sum;   /* keeps the loads alive */
} part;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void *stream(void *arg)
{
    part *t = arg;
    /* four sequential streams at once (as a matvec reads several weight
     * rows), two 32-byte loads from each per step: one 64-byte line */
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    const size_t q = t->n / 4 & ~(size_t)1;
    const __m256i *p0 = t->p, *p1 = p0 + q, *p2 = p1 + q, *p3 = p2 + q;
    for (size_t i = 0; i < q; i += 2) {
        a0 = _mm256_add_epi64(a0, _mm256_add_epi64(_mm256_load_si256(p0 + i), _mm256_load_si256(p0 + i + 1)));
        a1 = _mm256_add_epi64(a1, _mm256_add_epi64(_mm256_load_si256(p1 + i), _mm256_load_si256(p1 + i + 1)));
        a2 = _mm256_add_epi64(a2, _mm256_add_epi64(_mm256_load_si256(p2 + i), _mm256_load_si256(p2 + i + 1)));
        a3 = _mm256_add_epi64(a3, _mm256_add_epi64(_mm256_load_si256(p3 + i), _mm256_load_si256(p3 + i + 1)));
    }
    __m256i s = _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3));
    long long w[4];
    _mm256_storeu_si256((__m256i *)w, s);
    t->sum = w[0] + w[1] + w[2] + w[3];
    return NULL;
}

int main(int argc, char **argv)
{
    int nth = argc > 1 ? atoi(argv[1]) : 2;
    size_t mb = argc > 2 ? (size_t)atol(argv[2]) : 512;
    int reps = argc > 3 ? atoi(argv[3]) : 5;
    if (nth < 1 || nth > 64 || mb < 64 || reps < 1) {
        fprintf(stderr, "usage: bench_bandwidth [threads 1..64] [MB >= 64] [reps >= 1]\n");
        return 2;
    }
    size_t bytes = mb << 20;
    __m256i *buf = aligned_alloc(64, bytes);
    if (!buf) {
        fprintf(stderr, "bench_bandwidth: cannot allocate %zu MB\n", mb);
        return 1;
    }
    memset(buf, 1, bytes);  /* touch every page before timing */
    size_t words = bytes / sizeof(__m256i);
    part parts[64];
    pthread_t tid[64];
    double best = 0;
    long long check = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        for (int i = 0; i < nth; i++) {
            size_t lo = words * (size_t)i / (size_t)nth, hi = words * (size_t)(i + 1) / (size_t)nth;
            parts[i] = (part){buf + lo, hi - lo, 0};
            if (pthread_create(&tid[i], NULL, stream, &parts[i])) {
                fprintf(stderr, "bench_bandwidth: cannot start a thread\n");
                return 1;
            }
        }
        for (int i = 0; i < nth; i++) {
            pthread_join(tid[i], NULL);
            check += parts[i].sum;
        }
        double gbs = (double)bytes / (now() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    printf("bw_gbs=%.2f threads=%d mb=%zu check=%lld\n", best, nth, mb, check & 0xff);
    free(buf);
    return 0;
}
