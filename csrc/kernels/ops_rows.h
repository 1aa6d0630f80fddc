/* The row-wise ops of ops.h over a batch's rows, split across a pool's
 * threads when the batch is large enough to pay for a dispatch (decode's
 * single rows stay on the caller). Each thread runs the ops.h kernel on
 * whole rows, so every row has the bits of the serial call. Used by the
 * bindings that models call once per layer (rmsnorm, layernorm, add). */
#ifndef SLM_OPS_ROWS_H
#define SLM_OPS_ROWS_H

#include <stdint.h>

#include "../core/pool.h"

/* slm_ops_rmsnorm over rows */
void slm_ops_rmsnorm_rows(slm_pool *pool, float *out, const float *x, const float *w, int64_t rows,
                          int64_t n, float eps);
/* slm_ops_layernorm over rows */
void slm_ops_layernorm_rows(slm_pool *pool, float *out, const float *x, const float *w, const float *b,
                            int64_t rows, int64_t n, float eps);
/* x += alpha * y over rows of n (alpha 1: slm_ops_add, else slm_ops_add_scaled) */
void slm_ops_add_rows(slm_pool *pool, float *x, const float *y, float alpha, int64_t rows, int64_t n);

#endif
