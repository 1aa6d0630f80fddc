/* Row-wise ops split over a pool (ops_rows.h). */
#include "ops_rows.h"

#include "ops.h"

/* rows from which a call is split: below, one dispatch costs about what
 * the rows do */
#define ROWS_MIN 4

typedef struct rows_job {
    float *out;
    const float *x, *w, *b;
    int64_t n;
    float eps, alpha;
} rows_job;

static void rmsnorm_range(void *ctx, int64_t r0, int64_t r1)
{
    const rows_job *j = ctx;
    slm_ops_rmsnorm(j->out + r0 * j->n, j->x + r0 * j->n, j->w, r1 - r0, j->n, j->eps);
}

void slm_ops_rmsnorm_rows(slm_pool *pool, float *out, const float *x, const float *w, int64_t rows,
                          int64_t n, float eps)
{
    rows_job j = {out, x, w, NULL, n, eps, 0};
    slm_pool_for(pool, rows, 1, ROWS_MIN, rmsnorm_range, &j);
}

static void layernorm_range(void *ctx, int64_t r0, int64_t r1)
{
    const rows_job *j = ctx;
    slm_ops_layernorm(j->out + r0 * j->n, j->x + r0 * j->n, j->w, j->b, r1 - r0, j->n, j->eps);
}

void slm_ops_layernorm_rows(slm_pool *pool, float *out, const float *x, const float *w, const float *b,
                            int64_t rows, int64_t n, float eps)
{
    rows_job j = {out, x, w, b, n, eps, 0};
    slm_pool_for(pool, rows, 1, ROWS_MIN, layernorm_range, &j);
}

static void add_range(void *ctx, int64_t r0, int64_t r1)
{
    const rows_job *j = ctx;
    float *x = j->out + r0 * j->n;
    const float *y = j->x + r0 * j->n;
    const int64_t m = (r1 - r0) * j->n;
    if (j->alpha == 1.0f) slm_ops_add(x, x, m, y, m);
    else slm_ops_add_scaled(x, x, y, j->alpha, m);
}

void slm_ops_add_rows(slm_pool *pool, float *x, const float *y, float alpha, int64_t rows, int64_t n)
{
    rows_job j = {x, y, NULL, NULL, n, 0, alpha};
    slm_pool_for(pool, rows, 1, ROWS_MIN, add_range, &j);
}
