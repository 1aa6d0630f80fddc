/* A persistent pool of worker threads for the data-parallel kernels.
 *
 * slm_pool_run(p, nth, fn, ctx) calls fn(ctx, ith, nth) once for every ith in
 * 0..nth-1 and returns when all calls have returned. The calling thread takes
 * part as ith 0; the workers take 1..nth-1. A kernel splits its big loop by
 * (ith, nth) and never locks (ggml's compute threads, llama2.c's one pragma
 * on the matmul rows).
 *
 * Dispatch and completion are two atomic counters: idle workers spin briefly
 * on a generation number (so back-to-back kernels of one token wake them in
 * well under a microsecond) and then sleep on a condition variable, so an
 * idle pool costs no CPU. There is no lock on the hot path.
 *
 * A pool serves one calling thread at a time. A nested slm_pool_run from
 * inside fn runs serially on the caller (nth = 1), and so does a run from a
 * second thread while the pool is busy: slm_pool_run itself is safe from any
 * thread. The scratch buffer is not: it belongs to the thread that owns the
 * pool, so a pool made with slm_pool_new must not be used by two threads.
 *
 * The default pool (slm_pool_default) is per OS thread: each thread that
 * runs kernels (each Lua state running in its own thread) gets its own pool,
 * created on first use with one thread per online CPU, or with the count
 * that thread gave to slm_pool_set_threads. slm_pool_shutdown joins the
 * calling thread's pool and frees it (the Lua module does it from the __gc
 * of a registry sentinel); a thread that exits without it has its pool freed
 * at exit. Called from a pool's worker thread (inside a job) it returns that
 * pool, which is busy, so the kernel runs serially there. */
#ifndef SLM_POOL_H
#define SLM_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

/* Upper bound on threads per pool; larger requests are clamped. */
#define SLM_POOL_MAX_THREADS 256

typedef struct slm_pool slm_pool;
typedef void (*slm_pool_fn)(void *ctx, int ith, int nth);

/* A pool of n_threads (>= 1, the caller counts as one: n_threads - 1 worker
 * threads are started). NULL on failure (err filled). */
slm_pool *slm_pool_new(int n_threads, slm_error *err);
void slm_pool_free(slm_pool *p);          /* joins the workers; NULL is fine */
int slm_pool_size(const slm_pool *p);     /* 1 for NULL */

/* Runs fn(ctx, ith, nth) for ith in 0..nth-1; nth is clamped to
 * [1, slm_pool_size(p)]. p may be NULL: fn(ctx, 0, 1) on the caller. */
void slm_pool_run(slm_pool *p, int nth, slm_pool_fn fn, void *ctx);

/* Range form: calls fn(ctx, i0, i1) on disjoint ranges covering [0, n), one
 * per thread, every boundary but n a multiple of quantum (>= 1), so that a
 * kernel whose result depends on an element's offset modulo its vector
 * width (a vector body and a scalar tail) gives the bits of one call over
 * [0, n). Below min_n (small work: decode's rows) one call on the caller. */
typedef void (*slm_pool_range_fn)(void *ctx, int64_t i0, int64_t i1);
void slm_pool_for(slm_pool *p, int64_t n, int64_t quantum, int64_t min_n, slm_pool_range_fn fn, void *ctx);
/* 1 while a run is in progress (from any thread): a kernel called from
 * inside a pool job must not use the pool or its scratch. */
int slm_pool_busy(slm_pool *p);

/* A 64-byte aligned scratch buffer of at least size bytes owned by the pool,
 * grown on demand and kept (no allocation in steady state). Valid until the
 * next slm_pool_scratch call on the same pool. NULL on failure. */
void *slm_pool_scratch(slm_pool *p, size_t size, slm_error *err);

/* The calling thread's default pool, created on first call. NULL (err
 * filled) only if even a one-thread pool cannot be allocated. */
slm_pool *slm_pool_default(slm_error *err);
/* Sets the size of the calling thread's default pool
 * (1..SLM_POOL_MAX_THREADS); an existing default pool of another size is
 * shut down and recreated lazily. Other threads keep their own size. */
slm_status slm_pool_set_threads(int n, slm_error *err);
/* Size of the calling thread's default pool (the size it will have if not
 * created yet). */
int slm_pool_threads(void);
/* Joins and frees the calling thread's default pool; it is recreated on
 * next use. */
void slm_pool_shutdown(void);

#endif
