/* Thread pool: every (ith, nth) runs exactly once per run, across the spin
 * and the sleep paths, with clamped and nested runs, and the default pool's
 * lifecycle. */
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <pthread.h>
#include <time.h>

#include "core/pool.h"

static int passed, failed;

#define CHECK(cond, ...)                                   \
    do {                                                   \
        if (cond) {                                        \
            passed++;                                      \
            printf("ok   ");                               \
        } else {                                           \
            failed++;                                      \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);    \
        }                                                  \
        printf(__VA_ARGS__);                               \
        printf("\n");                                      \
    } while (0)

typedef struct {
    atomic_int calls[SLM_POOL_MAX_THREADS];
    atomic_int bad_nth;
    int expect_nth;
} count_ctx;

static void count_fn(void *vctx, int ith, int nth)
{
    count_ctx *c = vctx;
    atomic_fetch_add(&c->calls[ith], 1);
    if (nth != c->expect_nth) atomic_fetch_add(&c->bad_nth, 1);
}

static void reset(count_ctx *c, int nth)
{
    for (int i = 0; i < SLM_POOL_MAX_THREADS; i++) atomic_store(&c->calls[i], 0);
    atomic_store(&c->bad_nth, 0);
    c->expect_nth = nth;
}

/* 1 if calls[i] == runs for i < nth and 0 beyond */
static int counts_ok(count_ctx *c, int nth, int runs)
{
    for (int i = 0; i < SLM_POOL_MAX_THREADS; i++)
        if (atomic_load(&c->calls[i]) != (i < nth ? runs : 0)) return 0;
    return atomic_load(&c->bad_nth) == 0;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

/* a parallel sum: each thread adds its slice, results merged after run */
typedef struct {
    const int64_t *v;
    int64_t n;
    int64_t part[SLM_POOL_MAX_THREADS];
} sum_ctx;

static void sum_fn(void *vctx, int ith, int nth)
{
    sum_ctx *c = vctx;
    int64_t lo = c->n * ith / nth, hi = c->n * (ith + 1) / nth, s = 0;
    for (int64_t i = lo; i < hi; i++) s += c->v[i];
    c->part[ith] = s;
}

typedef struct {
    slm_pool *pool;
    count_ctx inner;
    atomic_int outer_calls;
} nest_ctx;

static void nest_fn(void *vctx, int ith, int nth)
{
    nest_ctx *c = vctx;
    atomic_fetch_add(&c->outer_calls, 1);
    if (ith == 0) slm_pool_run(c->pool, 4, count_fn, &c->inner); /* serial: nth 1 */
}

static count_ctx cc;

/* counts workers (ith > 0) that do not block SIGINT */
static void sigmask_fn(void *vctx, int ith, int nth)
{
    sigset_t cur;
    pthread_sigmask(SIG_BLOCK, NULL, &cur);
    if (ith > 0 && !sigismember(&cur, SIGINT)) atomic_fetch_add((atomic_int *)vctx, 1);
}

/* slm_pool_for: marks each element's visits and records the ranges */
typedef struct {
    atomic_int visits[1000];
    atomic_int ranges, bad_start;
    int64_t quantum;
} range_ctx;

static void range_fn(void *vctx, int64_t i0, int64_t i1)
{
    range_ctx *c = vctx;
    atomic_fetch_add(&c->ranges, 1);
    if (i0 % c->quantum) atomic_fetch_add(&c->bad_start, 1);
    for (int64_t i = i0; i < i1; i++) atomic_fetch_add(&c->visits[i], 1);
}

static void check_for(slm_pool *p, int64_t n, int64_t quantum, int64_t min_n)
{
    static range_ctx c;
    for (int i = 0; i < 1000; i++) atomic_store(&c.visits[i], 0);
    atomic_store(&c.ranges, 0);
    atomic_store(&c.bad_start, 0);
    c.quantum = quantum;
    slm_pool_for(p, n, quantum, min_n, range_fn, &c);
    int once = 1;
    for (int64_t i = 0; i < 1000; i++) once &= atomic_load(&c.visits[i]) == (i < n ? 1 : 0);
    const int serial = n < min_n || slm_pool_size(p) == 1 || n <= quantum;
    const int ranges = atomic_load(&c.ranges);
    CHECK(once && atomic_load(&c.bad_start) == 0 && (serial ? ranges == (n > 0) : ranges <= slm_pool_size(p) && ranges >= 1),
          "pool_for n=%lld quantum=%lld min=%lld on %d threads: each element once, ranges start at multiples "
          "of the quantum, %d range(s)", (long long)n, (long long)quantum, (long long)min_n, slm_pool_size(p), ranges);
}

int main(void)
{
    slm_error err;
    CHECK(slm_pool_new(0, &err) == NULL && err.code == SLM_EINVAL, "pool of 0 threads refused");

    for (int size = 1; size <= 4; size++) {
        slm_pool *p = slm_pool_new(size, &err);
        CHECK(p != NULL, "pool of %d: %s", size, p ? "" : err.msg);
        if (!p) continue;
        CHECK(slm_pool_size(p) == size, "size %d", slm_pool_size(p));
        for (int nth = 1; nth <= size; nth++) {
            reset(&cc, nth);
            for (int r = 0; r < 2000; r++) slm_pool_run(p, nth, count_fn, &cc);
            CHECK(counts_ok(&cc, nth, 2000), "pool %d nth %d: each ith once per run", size, nth);
        }
        /* nth above the size is clamped, below 1 means 1 */
        reset(&cc, size);
        slm_pool_run(p, size + 5, count_fn, &cc);
        CHECK(counts_ok(&cc, size, 1), "pool %d: nth clamped to size", size);
        reset(&cc, 1);
        slm_pool_run(p, 0, count_fn, &cc);
        CHECK(counts_ok(&cc, 1, 1), "pool %d: nth 0 runs once", size);

        /* after the workers have gone to sleep (spin window exceeded) */
        reset(&cc, size);
        for (int r = 0; r < 3; r++) {
            sleep_ms(5);
            slm_pool_run(p, size, count_fn, &cc);
        }
        CHECK(counts_ok(&cc, size, 3), "pool %d: runs after sleeping", size);

        /* results written by workers are visible after run returns */
        static int64_t v[100003];
        int64_t want = 0;
        for (int64_t i = 0; i < 100003; i++) want += v[i] = i * 7 % 1001;
        sum_ctx sc = {v, 100003, {0}};
        int ok = 1;
        for (int r = 0; r < 200; r++) {
            slm_pool_run(p, size, sum_fn, &sc);
            int64_t got = 0;
            for (int i = 0; i < size; i++) got += sc.part[i];
            ok &= got == want;
        }
        CHECK(ok, "pool %d: parallel sums", size);

        static nest_ctx nc;
        nc.pool = p;
        atomic_store(&nc.outer_calls, 0);
        reset(&nc.inner, 1);
        slm_pool_run(p, size, nest_fn, &nc);
        CHECK(atomic_load(&nc.outer_calls) == size && counts_ok(&nc.inner, 1, 1),
              "pool %d: nested run goes serial", size);

        atomic_int unblocked = 0;
        slm_pool_run(p, size, sigmask_fn, &unblocked);
        CHECK(atomic_load(&unblocked) == 0, "pool %d: workers block signals", size);

        unsigned char *s1 = slm_pool_scratch(p, 100, &err);
        CHECK(s1 && ((uintptr_t)s1 & 63) == 0, "scratch aligned");
        unsigned char *s2 = slm_pool_scratch(p, 50, &err);
        CHECK(s2 == s1, "smaller scratch request reuses the buffer");
        unsigned char *s3 = slm_pool_scratch(p, 1 << 20, &err);
        CHECK(s3 && ((uintptr_t)s3 & 63) == 0, "scratch grows");
        if (s3) s3[(1 << 20) - 1] = 1;
        slm_pool_free(p);
    }

    /* NULL pool: serial */
    reset(&cc, 1);
    slm_pool_run(NULL, 8, count_fn, &cc);
    CHECK(counts_ok(&cc, 1, 1), "NULL pool runs serially");

    /* range form: cover [0, n) once, cut at multiples of the quantum,
     * serial below min_n */
    for (int size = 1; size <= 3; size++) {
        slm_pool *p = slm_pool_new(size, &err);
        const int64_t ns[] = {0, 1, 5, 63, 64, 65, 200, 999};
        for (size_t a = 0; a < sizeof ns / sizeof ns[0]; a++)
            for (int64_t q = 1; q <= 64; q *= 8) {
                check_for(p, ns[a], q, 4);
                check_for(p, ns[a], q, 1000);
            }
        slm_pool_free(p);
    }

    /* default pool lifecycle */
    CHECK(slm_pool_threads() >= 1, "default size %d", slm_pool_threads());
    CHECK(slm_pool_set_threads(0, &err) == SLM_EINVAL, "set_threads(0) refused");
    CHECK(slm_pool_set_threads(3, &err) == SLM_OK && slm_pool_threads() == 3, "set 3");
    slm_pool *d = slm_pool_default(&err);
    CHECK(d && slm_pool_size(d) == 3, "default pool has 3 threads");
    reset(&cc, 3);
    slm_pool_run(d, 3, count_fn, &cc);
    CHECK(counts_ok(&cc, 3, 1), "default pool runs");
    CHECK(slm_pool_set_threads(2, &err) == SLM_OK && slm_pool_threads() == 2, "resize to 2");
    d = slm_pool_default(&err);
    CHECK(d && slm_pool_size(d) == 2, "recreated with 2 threads");
    slm_pool_shutdown();
    slm_pool_shutdown();   /* idempotent */
    CHECK(slm_pool_threads() == 2, "size kept after shutdown");

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
