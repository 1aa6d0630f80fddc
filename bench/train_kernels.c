/* Speed of the training kernels (train/grad.h) on the shapes of the small
 * character-level Shakespeare llama (E = 128, F = 352, V = 65, 12 x 64 =
 * 768 rows per batch), on 1 and 2 threads:
 *   - the f32 linear layer, forward and backward, in GFLOP/s (2 n in out
 *     flops per product: 1 product forward, 2 backward), beside
 *     slm_matmul_raw on the same f32 weights (inference's forward);
 *   - the row ops and AdamW in microseconds per call, AVX2 and generic.
 *
 *   make && cc -O2 -std=c11 -D_GNU_SOURCE -Icsrc bench/train_kernels.c build/libslm.a \
 *        $(pkg-config --libs openblas) -lpthread -lm -o build/bench_train
 *   build/bench_train
 *
 * Each figure is the best of 7 runs of at least 50 ms (the machine is
 * shared: the best is the least disturbed).
 *
 * Measured on the 2-core AMD EPYC VM while it was quiet (GFLOP/s;
 * slm_matmul = slm_matmul_raw with f32 weights, OpenBLAS split by weight
 * rows):
 *                           fwd 1t  fwd 2t   bwd 1t  bwd 2t   slm_matmul 1t 2t
 *   n=768 in=128 out=128    131     248      132     238      126   219
 *   n=768 in=128 out=352    132     252      130     243      128   240
 *   n=768 in=352 out=128    125     250      125     246      125   238
 *   n=768 in=128 out=65     117     226      116     225      115   163
 * and microseconds per call (1 thread AVX2, 2 threads AVX2, 1 thread
 * generic): xent 768x65 38 / 20 / 199, xent 768x512 289 / 130 / 1397,
 * rmsnorm_bwd 768x128 37 / 23 / 188, swiglu_bwd 768x352 190 / 103 / 941,
 * geglu_bwd 768x352 273 / 138 / 1303, rope_bwd 768x4x32 39 / 23 / 40,
 * adamw 820k params 268 / 145 / 2096, sumsq 820k 128 / 66 / 127. While
 * other jobs ran, the 2-thread figures fell to about the 1-thread ones. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "core/pool.h"
#include "kernels/matmul.h"
#include "kernels/vecdot.h"
#include "train/adamw.h"
#include "train/grad.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static float *rvec(int64_t n, float scale)
{
    static uint32_t s = 7;
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) {
        s ^= s << 13; s ^= s >> 17; s ^= s << 5;
        v[i] = ((float)(s % 20001) / 10000.0f - 1.0f) * scale;
    }
    return v;
}

typedef struct job {
    int kind;
    slm_pool *pool;
    float *y, *x, *W, *dy, *dx, *dW, *a, *b, *c, *d;
    int32_t *t;
    int64_t n, in, out;
} job;

enum { FWD, BWD, MATMUL, XENT, RMS, SWIGLU, GEGLU, ADAMW, SUMSQ, ROPE };

static void run(job *j)
{
    slm_error err;
    double loss;
    switch (j->kind) {
    case FWD: slm_grad_linear(j->pool, j->y, j->x, j->W, NULL, j->n, j->in, j->out, &err); break;
    case BWD:
        slm_grad_linear_backward(j->pool, j->dx, j->dW, NULL, j->dy, j->x, j->W, j->n, j->in, j->out, 0, &err);
        break;
    case MATMUL:
        slm_matmul_raw(j->pool, j->y, j->W, SLM_DTYPE_F32, (size_t)j->in * 4, j->x, j->n, j->out, j->in, &err);
        break;
    case XENT: slm_grad_xent(j->pool, j->a, j->t, j->n, j->in, 1.0f / (float)j->n, &loss, &err); break;
    case RMS: slm_grad_rmsnorm_backward(j->pool, j->a, j->b, j->c, j->d, j->x, j->n, j->in, 1e-5f, 0, &err); break;
    case SWIGLU: slm_grad_swiglu_backward(j->pool, j->a, j->b, j->c, j->d, j->x, j->n * j->in, 0); break;
    case GEGLU: slm_grad_geglu_backward(j->pool, j->a, j->b, j->c, j->d, j->x, j->n * j->in, 0); break;
    case ADAMW: {
        slm_adamw_params h = {1e-3, 0.9, 0.99, 1e-8, 0.1, 1.0, 10};
        slm_adamw_step(j->pool, j->a, j->b, j->c, j->d, j->n, &h, &err);
        break;
    }
    case SUMSQ: slm_grad_sumsq(j->pool, j->a, j->n, &loss, &err); break;
    case ROPE: {
        slm_rope_params p = {SLM_ROPE_NORMAL, 32, 10000.0f, 1.0f, NULL, 1.0f};
        slm_grad_rope_backward(j->pool, j->a, j->n, 64, 4, 32, &p, &err);
        break;
    }
    }
}

/* best seconds per call */
static double timeit(job *j)
{
    double best = 1e30;
    run(j);
    for (int rep = 0; rep < 7; rep++) {
        int calls = 0;
        const double t0 = now();
        double t;
        do {
            run(j);
            calls++;
        } while ((t = now() - t0) < 0.05);
        if (t / calls < best) best = t / calls;
    }
    return best;
}

int main(void)
{
    slm_error err;
    slm_pool *pools[2] = {slm_pool_new(1, &err), slm_pool_new(2, &err)};
    const int64_t shapes[][3] = {{768, 128, 128}, {768, 128, 352}, {768, 352, 128}, {768, 128, 65}, {768, 128, 384}};
    printf("linear (GFLOP/s)        fwd 1t  fwd 2t   bwd 1t  bwd 2t   slm_matmul 1t 2t\n");
    for (int s = 0; s < 5; s++) {
        const int64_t n = shapes[s][0], in = shapes[s][1], out = shapes[s][2];
        job j = {.n = n, .in = in, .out = out, .x = rvec(n * in, 1), .W = rvec(out * in, 0.1f),
                 .y = rvec(n * out, 1), .dy = rvec(n * out, 1), .dx = rvec(n * in, 1), .dW = rvec(out * in, 1)};
        double g[6];
        const double flops = 2.0 * (double)n * in * out;
        for (int p = 0; p < 2; p++) {
            j.pool = pools[p];
            j.kind = FWD;
            g[p] = flops / timeit(&j) * 1e-9;
            j.kind = BWD;
            g[2 + p] = 2 * flops / timeit(&j) * 1e-9;
            j.kind = MATMUL;
            g[4 + p] = flops / timeit(&j) * 1e-9;
        }
        printf("n=%lld in=%-4lld out=%-4lld %6.1f  %6.1f   %6.1f  %6.1f   %6.1f %6.1f\n", (long long)n,
               (long long)in, (long long)out, g[0], g[1], g[2], g[3], g[4], g[5]);
        free(j.x); free(j.W); free(j.y); free(j.dy); free(j.dx); free(j.dW);
    }
    /* row ops per call, on the shapes of one step of the Shakespeare model */
    const int64_t rows = 768, P = 820000;
    int32_t *t = malloc(rows * sizeof *t);
    for (int64_t r = 0; r < rows; r++) t[r] = (int32_t)(r % 65);
    struct { const char *name; int kind; int64_t n, in; } ops[] = {
        {"xent 768x65", XENT, rows, 65},        {"xent 768x512", XENT, rows, 512},
        {"rmsnorm_bwd 768x128", RMS, rows, 128}, {"swiglu_bwd 768x352", SWIGLU, rows, 352},
        {"geglu_bwd 768x352", GEGLU, rows, 352}, {"rope_bwd 768x4x32", ROPE, rows, 128},
        {"adamw 820k", ADAMW, P, 1},             {"sumsq 820k", SUMSQ, P, 1},
    };
    printf("\nrow ops (us per call)    1t avx2   2t avx2   1t generic\n");
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        const int64_t m = ops[k].n * ops[k].in;
        job j = {.kind = ops[k].kind, .n = ops[k].n, .in = ops[k].in, .t = t, .a = rvec(m, 3), .b = rvec(m, 1),
                 .c = rvec(m, 1), .d = rvec(m, 1), .x = rvec(m, 1)};
        if (j.kind == ADAMW)
            for (int64_t i = 0; i < m; i++) j.d[i] = j.d[i] * j.d[i];   /* v >= 0 */
        double us[3];
        for (int p = 0; p < 3; p++) {
            j.pool = pools[p == 1];
            slm_kernels_force_generic(p == 2);
            us[p] = timeit(&j) * 1e6;
            /* xent overwrote its logits with gradients: fresh ones */
            if (j.kind == XENT)
                for (int64_t i = 0; i < m; i++) j.a[i] = (float)(i % 7) - 3.0f;
        }
        slm_kernels_force_generic(0);
        printf("%-22s %8.1f  %8.1f  %8.1f\n", ops[k].name, us[0], us[1], us[2]);
        free(j.a); free(j.b); free(j.c); free(j.d); free(j.x);
    }
    free(t);
    slm_pool_free(pools[0]);
    slm_pool_free(pools[1]);
    return 0;
}
