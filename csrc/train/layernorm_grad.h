/* Backward of LayerNorm (RWKV's ln0/ln1/ln2/ln_out, BERT's norms), the
 * forward being slm_ops_layernorm (kernels/ops.h, ggml_norm then * w + b):
 *
 *   mu = mean(x), r = 1 / sqrt(mean((x - mu)^2) + eps), xh = (x - mu) r
 *   y  = xh * w + b                      per row of n, rows x n
 *
 * Backward per row, with g = dy * w (w NULL: g = dy):
 *   dx = r (g - mean(g) - xh mean(g xh))
 *   dw += dy * xh,  db += dy             (summed over rows)
 * The row statistics are recomputed from x (two passes, sums in double as
 * the forward's), so the forward keeps only its input. */
#ifndef SLM_LAYERNORM_GRAD_H
#define SLM_LAYERNORM_GRAD_H

#include <stdint.h>

/* x, dy, dx: (rows, n); w, dw, db: (n) or NULL. dx is overwritten
 * (accumulate 0) or added to (1); dw and db are always added to. dx may
 * equal dy (in place). Runs on the calling thread: memory-bound and a
 * small share of a training step next to the matmuls. */
void slm_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, int64_t rows, int64_t n, float eps, int accumulate);

#endif
