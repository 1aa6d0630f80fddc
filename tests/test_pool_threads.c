/* Thread pool used from several OS threads at once (issue 6: Lua states in
 * threads, each with its own session):
 *   - runs on one shared pool from two threads: every (ith, nth) of every
 *     run still happens exactly once (a run that finds the pool busy goes
 *     serial on its own thread);
 *   - default pools are per thread: distinct, sized per thread, and
 *     matmuls through them in two threads at once give the same bits as on
 *     one thread (the activation scratch is not shared);
 *   - a thread that exits without slm_pool_shutdown has its pool's workers
 *     joined (the process's thread count returns to where it was);
 *   - a kernel asking for the default pool from inside a job (a worker
 *     thread) gets the busy pool it runs on.
 * Run it under TSan too (outside the suite): README.md, "Embedding slm". */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/pool.h"
#include "kernels/matmul.h"
#include "quant/quant.h"

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

/* ---- one pool, two calling threads ----------------------------------------- */

enum { SHARED_RUNS = 2000, SHARED_NTH = 4 };

typedef struct {
    int calls[SLM_POOL_MAX_THREADS];   /* each slot written by its ith only */
    int nth_seen;
} run_ctx;

static void mark_fn(void *vctx, int ith, int nth)
{
    run_ctx *c = vctx;
    c->calls[ith]++;
    if (ith == 0) c->nth_seen = nth;
}

typedef struct {
    slm_pool *pool;
    int bad;        /* runs where some ith was not called exactly once */
    int serial;     /* runs that went serial (pool busy on the other thread) */
} shared_arg;

static void *shared_main(void *varg)
{
    shared_arg *a = varg;
    for (int r = 0; r < SHARED_RUNS; r++) {
        run_ctx c;
        memset(&c, 0, sizeof c);
        slm_pool_run(a->pool, SHARED_NTH, mark_fn, &c);
        if (c.nth_seen == 1) a->serial++;
        for (int i = 0; i < c.nth_seen; i++)
            if (c.calls[i] != 1) a->bad++;
        for (int i = c.nth_seen; i < SLM_POOL_MAX_THREADS; i++)
            if (c.calls[i] != 0) a->bad++;
    }
    return NULL;
}

static void test_shared_pool(void)
{
    slm_error err;
    slm_pool *p = slm_pool_new(SHARED_NTH, &err);
    CHECK(p != NULL, "pool of %d", SHARED_NTH);
    if (!p) return;
    shared_arg a[2] = {{p, 0, 0}, {p, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, shared_main, &a[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK(a[0].bad == 0 && a[1].bad == 0, "2 threads x %d runs on one pool: every ith once (bad %d, %d)",
          SHARED_RUNS, a[0].bad, a[1].bad);
    printf("     serial runs (pool busy on the other thread): %d, %d\n", a[0].serial, a[1].serial);
    CHECK(!slm_pool_busy(p), "pool idle after both threads");
    slm_pool_free(p);
}

/* ---- default pools per thread ---------------------------------------------- */

enum { MM_M = 5, MM_N = 256, MM_K = 512, MM_REPS = 60 };

static float mm_x[MM_M * MM_K];
static unsigned char *mm_w;
static size_t mm_row;
static float mm_ref[MM_M * MM_N];

typedef struct {
    int threads;           /* slm_pool_set_threads for this thread */
    slm_pool *pool;        /* its default pool */
    int size;
    int mismatches;
    int errors;
} mm_arg;

static void *mm_main(void *varg)
{
    mm_arg *a = varg;
    slm_error err;
    if (slm_pool_set_threads(a->threads, &err) != SLM_OK) a->errors++;
    a->pool = slm_pool_default(&err);
    a->size = slm_pool_size(a->pool);
    float out[MM_M * MM_N];
    for (int r = 0; r < MM_REPS; r++) {
        if (slm_matmul_raw(a->pool, out, mm_w, SLM_DTYPE_Q8_0, mm_row, mm_x, MM_M, MM_N, MM_K,
                           &err) != SLM_OK) {
            a->errors++;
            continue;
        }
        if (memcmp(out, mm_ref, sizeof out) != 0) a->mismatches++;
    }
    slm_pool_shutdown();
    return NULL;
}

static void test_default_pools(void)
{
    slm_error err;
    uint32_t s = 12345;
    float w[MM_N * MM_K];
    for (int i = 0; i < MM_N * MM_K; i++) {
        s = s * 1664525u + 1013904223u;
        w[i] = (float)((int)(s >> 8) % 2001 - 1000) / 1000.0f;
    }
    for (int i = 0; i < MM_M * MM_K; i++) {
        s = s * 1664525u + 1013904223u;
        mm_x[i] = (float)((int)(s >> 8) % 2001 - 1000) / 500.0f;
    }
    int ok;
    mm_row = slm_dtype_row_size(SLM_DTYPE_Q8_0, MM_K, &ok);
    mm_w = malloc(mm_row * MM_N);
    if (!ok || !mm_w) {
        CHECK(0, "q8_0 weights");
        free(mm_w);
        return;
    }
    for (int n = 0; n < MM_N; n++) slm_quantize_q8_0(w + (size_t)n * MM_K, mm_w + (size_t)n * mm_row, MM_K);
    /* reference: the same product on the calling thread, no pool */
    CHECK(slm_matmul_raw(NULL, mm_ref, mm_w, SLM_DTYPE_Q8_0, mm_row, mm_x, MM_M, MM_N, MM_K, &err) == SLM_OK,
          "serial reference matmul");

    mm_arg a[2] = {{2, NULL, 0, 0, 0}, {3, NULL, 0, 0, 0}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++) pthread_create(&t[i], NULL, mm_main, &a[i]);
    for (int i = 0; i < 2; i++) pthread_join(t[i], NULL);
    CHECK(a[0].pool && a[1].pool && a[0].pool != a[1].pool, "two threads get two default pools");
    CHECK(a[0].size == 2 && a[1].size == 3, "each thread's pool has its own size (%d, %d)", a[0].size, a[1].size);
    CHECK(a[0].errors == 0 && a[1].errors == 0, "no matmul errors");
    CHECK(a[0].mismatches == 0 && a[1].mismatches == 0,
          "q8_0 matmul %dx%dx%d, %d times in each of 2 threads at once: same bits as serial (mismatches %d, %d)",
          MM_M, MM_N, MM_K, MM_REPS, a[0].mismatches, a[1].mismatches);

    /* the main thread's size is untouched by the threads' settings */
    int before = slm_pool_threads();
    slm_pool *mine = slm_pool_default(&err);
    CHECK(mine && mine != a[0].pool && slm_pool_size(mine) == before, "main thread keeps its own pool (%d threads)",
          before);
    slm_pool_shutdown();
    free(mm_w);
}

/* ---- a thread exiting with its pool alive ---------------------------------- */

static int task_count(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void *exit_main(void *varg)
{
    int *size = varg;
    slm_error err;
    slm_pool_set_threads(4, &err);
    *size = slm_pool_size(slm_pool_default(&err));
    return NULL;   /* no slm_pool_shutdown: the thread-exit hook joins it */
}

static void test_thread_exit(void)
{
    int base = task_count();
    if (base < 0) {
        printf("skip thread-exit check: no /proc/self/task\n");
        return;
    }
    int size = 0;
    pthread_t t;
    pthread_create(&t, NULL, exit_main, &size);
    pthread_join(t, NULL);
    CHECK(size == 4, "thread's pool had 4 threads");
    CHECK(task_count() == base, "its 3 workers are gone after the thread exits (%d threads, was %d)",
          task_count(), base);
}

/* ---- default pool asked for from inside a job ------------------------------ */

typedef struct {
    slm_pool *seen[2];
    int busy[2];
} inner_ctx;

static void inner_fn(void *vctx, int ith, int nth)
{
    inner_ctx *c = vctx;
    slm_error err;
    slm_pool *p = slm_pool_default(&err);
    c->seen[ith] = p;
    c->busy[ith] = slm_pool_busy(p);
}

static void test_inside_job(void)
{
    slm_error err;
    slm_pool_set_threads(2, &err);
    slm_pool *p = slm_pool_default(&err);
    inner_ctx c;
    memset(&c, 0, sizeof c);
    slm_pool_run(p, 2, inner_fn, &c);
    CHECK(c.seen[0] == p && c.seen[1] == p, "caller and worker both see the running pool");
    CHECK(c.busy[0] && c.busy[1], "and it is busy there, so nested kernels go serial");
    slm_pool_shutdown();
}

int main(void)
{
    test_shared_pool();
    test_default_pools();
    test_thread_exit();
    test_inside_job();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
