#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* How long an idle thread spins before it sleeps. Long enough to bridge the
 * gap between the kernels of one forward pass (norms and attention between
 * two matmuls take tens of microseconds), short enough not to steal a core
 * from other processes when the model is idle. */
#define SPIN_NS 200000

#define CACHE_LINE 64

typedef struct worker {
    slm_pool *pool;
    int ith;
    pthread_t thread;
} worker;

struct slm_pool {
    /* written by the caller per run, read by the workers after they see a
     * new generation (release/acquire on gen orders them) */
    slm_pool_fn fn;
    void *ctx;
    int nth;                   /* threads taking part in the current run */
    int size;
    int stop;
    worker *workers;           /* size - 1 entries */

    _Alignas(CACHE_LINE) atomic_int gen;      /* bumped once per run */
    _Alignas(CACHE_LINE) atomic_int pending;  /* workers still running */
    _Alignas(CACHE_LINE) atomic_int sleepers; /* workers asleep on wake_cv */
    atomic_int caller_sleeping;
    atomic_int busy;           /* a run is in progress (nested runs go serial) */

    pthread_mutex_t mu;        /* only for the sleep/wake slow paths */
    pthread_cond_t wake_cv;    /* workers wait here for a new generation */
    pthread_cond_t done_cv;    /* the caller waits here for pending == 0 */

    void *scratch;
    size_t scratch_size;
};

/* set in a pool's worker threads: a kernel that asks them for the default
 * pool from inside a job gets the (busy) pool it runs on, and so runs
 * serially, instead of starting a pool per worker */
static _Thread_local slm_pool *worker_pool;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Spins until *a != v or SPIN_NS elapse; returns the last value read. Every
 * 64 iterations it reads the clock and yields, so that with more threads
 * than free cores (other processes, or a pool larger than the machine) the
 * thread it waits for gets to run: 8 us per run instead of 200 us for a
 * 4-thread pool on 2 busy cores, at no cost (1.3 us/run) on free cores. */
static int spin_while_equal(atomic_int *a, int v)
{
    uint64_t t0 = 0;
    for (unsigned i = 1;; i++) {
        int cur = atomic_load_explicit(a, memory_order_acquire);
        if (cur != v) return cur;
        cpu_relax();
        if ((i & 63) == 0) {
            uint64_t t = now_ns();
            if (!t0) t0 = t;
            else if (t - t0 > SPIN_NS) return v;
            if (i >= 512) sched_yield();
        }
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    slm_pool *p = w->pool;
    worker_pool = p;
    int seen = 0;
    for (;;) {
        if (spin_while_equal(&p->gen, seen) == seen) {
            /* Announce the sleep before re-checking gen (both seq_cst): the
             * caller bumps gen before reading sleepers, so either we see the
             * new generation or it sees us and broadcasts under mu. */
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen)
                pthread_cond_wait(&p->wake_cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        seen = atomic_load_explicit(&p->gen, memory_order_acquire);
        if (p->stop) break;
        if (w->ith < p->nth) p->fn(p->ctx, w->ith, p->nth);
        if (atomic_fetch_sub(&p->pending, 1) == 1 && atomic_load(&p->caller_sleeping)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->done_cv);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

/* Publishes the fields set by the caller and wakes the workers. */
static void dispatch(slm_pool *p)
{
    atomic_store(&p->pending, p->size - 1);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->wake_cv);
        pthread_mutex_unlock(&p->mu);
    }
}

static void wait_done(slm_pool *p)
{
    int left;
    while ((left = atomic_load_explicit(&p->pending, memory_order_acquire)) != 0) {
        if (spin_while_equal(&p->pending, left) != left) continue;  /* progress */
        /* no progress for SPIN_NS: sleep. The flag is set before pending is
         * re-read (seq_cst), the last worker decrements before reading it. */
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->caller_sleeping, 1);
        while (atomic_load(&p->pending) != 0)
            pthread_cond_wait(&p->done_cv, &p->mu);
        atomic_store(&p->caller_sleeping, 0);
        pthread_mutex_unlock(&p->mu);
    }
}

static void pool_stop(slm_pool *p, int started)
{
    p->stop = 1;
    p->nth = 0;
    dispatch(p);
    for (int i = 0; i < started; i++) pthread_join(p->workers[i].thread, NULL);
}

slm_pool *slm_pool_new(int n_threads, slm_error *err)
{
    if (n_threads < 1) {
        slm_error_set(err, SLM_EINVAL, "thread count must be >= 1 (got %d)", n_threads);
        return NULL;
    }
    if (n_threads > SLM_POOL_MAX_THREADS) n_threads = SLM_POOL_MAX_THREADS;
    slm_pool *p = aligned_alloc(CACHE_LINE, (sizeof *p + CACHE_LINE - 1) / CACHE_LINE * CACHE_LINE);
    if (!p) goto nomem;
    memset(p, 0, sizeof *p);
    p->size = n_threads;
    atomic_init(&p->gen, 0);
    atomic_init(&p->pending, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->caller_sleeping, 0);
    atomic_init(&p->busy, 0);
    if (n_threads > 1) {
        p->workers = calloc((size_t)n_threads - 1, sizeof *p->workers);
        if (!p->workers) {
            free(p);
            goto nomem;
        }
    }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->wake_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    /* workers start with every signal blocked, so that signals (Ctrl-C in
     * an interpreter) keep going to the threads that expect them */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    for (int i = 0; i < n_threads - 1; i++) {
        p->workers[i].pool = p;
        p->workers[i].ith = i + 1;
        if (pthread_create(&p->workers[i].thread, NULL, worker_main, &p->workers[i]) != 0) {
            /* size counts the started workers + caller so the stop run's
             * pending count matches the threads that exist */
            pthread_sigmask(SIG_SETMASK, &old, NULL);
            p->size = i + 1;
            pool_stop(p, i);
            slm_pool_free(p);
            slm_error_set(err, SLM_ENOMEM, "cannot start thread %d of %d", i + 1, n_threads);
            return NULL;
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return p;
nomem:
    slm_error_set(err, SLM_ENOMEM, "out of memory creating a pool of %d threads", n_threads);
    return NULL;
}

void slm_pool_free(slm_pool *p)
{
    if (!p) return;
    if (!p->stop) pool_stop(p, p->size - 1);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->wake_cv);
    pthread_cond_destroy(&p->done_cv);
    free(p->workers);
    free(p->scratch);
    free(p);
}

int slm_pool_size(const slm_pool *p)
{
    return p ? p->size : 1;
}

void slm_pool_run(slm_pool *p, int nth, slm_pool_fn fn, void *ctx)
{
    if (nth < 1 || !p) nth = 1;
    if (p && nth > p->size) nth = p->size;
    if (nth == 1 || atomic_exchange(&p->busy, 1)) {
        fn(ctx, 0, 1);
        return;
    }
    p->fn = fn;
    p->ctx = ctx;
    p->nth = nth;
    dispatch(p);
    fn(ctx, 0, nth);
    wait_done(p);
    atomic_store(&p->busy, 0);
}

typedef struct range_job {
    slm_pool_range_fn fn;
    void *ctx;
    int64_t n, quantum;
} range_job;

static void range_task(void *arg, int ith, int nth)
{
    const range_job *j = arg;
    const int64_t units = (j->n + j->quantum - 1) / j->quantum;
    const int64_t u0 = units * ith / nth, u1 = units * (ith + 1) / nth;
    const int64_t i0 = u0 * j->quantum, i1 = u1 * j->quantum < j->n ? u1 * j->quantum : j->n;
    if (i0 < i1) j->fn(j->ctx, i0, i1);
}

void slm_pool_for(slm_pool *p, int64_t n, int64_t quantum, int64_t min_n, slm_pool_range_fn fn, void *ctx)
{
    if (n <= 0) return;
    if (quantum < 1) quantum = 1;
    if (n < min_n || slm_pool_size(p) == 1 || n <= quantum) {
        fn(ctx, 0, n);
        return;
    }
    range_job j = {fn, ctx, n, quantum};
    slm_pool_run(p, slm_pool_size(p), range_task, &j);
}

int slm_pool_busy(slm_pool *p)
{
    return p && atomic_load(&p->busy);
}

void *slm_pool_scratch(slm_pool *p, size_t size, slm_error *err)
{
    if (!p) {
        slm_error_set(err, SLM_EINVAL, "no pool for scratch memory");
        return NULL;
    }
    if (size <= p->scratch_size && p->scratch) return p->scratch;
    /* grow geometrically so a sequence of slightly larger requests does
     * not reallocate each time */
    size_t want = size < 2 * p->scratch_size ? 2 * p->scratch_size : size;
    want = (want + 63) & ~(size_t)63;
    void *m = aligned_alloc(64, want ? want : 64);
    if (!m) {
        slm_error_set(err, SLM_ENOMEM, "out of memory for %zu bytes of scratch", size);
        return NULL;
    }
    free(p->scratch);
    p->scratch = m;
    p->scratch_size = want;
    return m;
}

/* The default pools: one per OS thread that runs kernels, so that Lua
 * states in different threads (each with its own sessions) never share a
 * pool's dispatch fields or its scratch buffer. Thread-local storage needs
 * no lock for the lazy creation. A pthread key frees a thread's pool when
 * the thread exits without calling slm_pool_shutdown. */
static _Thread_local slm_pool *default_pool;
static _Thread_local int default_threads;   /* 0 = one per online CPU */

static pthread_once_t exit_key_once = PTHREAD_ONCE_INIT;
static pthread_key_t exit_key;
static int exit_key_ok;

static void free_at_thread_exit(void *p)
{
    slm_pool_free(p);
    default_pool = NULL;
}

static void exit_key_create(void)
{
    exit_key_ok = pthread_key_create(&exit_key, free_at_thread_exit) == 0;
}

static int cpu_count(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1) return 1;
    return n > SLM_POOL_MAX_THREADS ? SLM_POOL_MAX_THREADS : (int)n;
}

int slm_pool_threads(void)
{
    if (default_pool) return default_pool->size;
    return default_threads ? default_threads : cpu_count();
}

slm_pool *slm_pool_default(slm_error *err)
{
    if (default_pool) return default_pool;
    if (worker_pool) return worker_pool;
    int n = slm_pool_threads();
    /* fewer threads if the system refuses to start as many */
    while (!default_pool && n >= 1) {
        default_pool = slm_pool_new(n, err);
        n /= 2;
    }
    pthread_once(&exit_key_once, exit_key_create);
    if (default_pool && exit_key_ok) pthread_setspecific(exit_key, default_pool);
    return default_pool;
}

slm_status slm_pool_set_threads(int n, slm_error *err)
{
    if (n < 1 || n > SLM_POOL_MAX_THREADS)
        return slm_error_set(err, SLM_EINVAL, "thread count must be in 1..%d (got %d)",
                             SLM_POOL_MAX_THREADS, n);
    default_threads = n;
    if (default_pool && default_pool->size != n) slm_pool_shutdown();
    return SLM_OK;
}

void slm_pool_shutdown(void)
{
    if (!default_pool) return;
    slm_pool_free(default_pool);
    default_pool = NULL;
    if (exit_key_ok) pthread_setspecific(exit_key, NULL);
}
