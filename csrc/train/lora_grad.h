/* Kernels of LoRA / QLoRA training over a frozen base weight of any dtype.
 *
 * The base W (out, in) stays as stored (f32, f16, bf16, q4_0 ... q8_0,
 * q2_K ... q6_K); its products are computed against the dequantized weight,
 * a chunk of SLM_LORA_CHUNK rows at a time, never a whole f32 copy:
 *
 *   deq_linear     y (n, out) = x (n, in) deq(W)^T (+ b)
 *   deq_linear_dx  dx (n, in) (+)= dy (n, out) deq(W)
 *
 * This is QLoRA's forward (bitsandbytes dequantizes the 4-bit weight and
 * multiplies in 16/32-bit), not the inference kernels' (which round the
 * activations to q8 blocks first), so the backward is the exact adjoint of
 * the forward. Memory: one chunk of SLM_LORA_CHUNK x in (forward) or
 * SLM_LORA_CHUNK x in / threads (dx) floats per thread, from the pool's
 * scratch.
 *
 *   dropout        out[i] = keep(seed, i) ? x[i] / (1 - p) : 0
 *
 * keep(seed, i) is a hash of (seed, i) (splitmix64) compared with p, so a
 * mask is never stored: the backward applies the same call to the
 * gradient (dropout is diagonal, its adjoint is itself). out may be x. */
#ifndef SLM_TRAIN_LORA_GRAD_H
#define SLM_TRAIN_LORA_GRAD_H

#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"
#include "../core/tensor.h"

#define SLM_LORA_CHUNK 64

/* W: 2-D (out, in) with contiguous rows (checked by the caller with
 * slm_matmul_check_weight); x, y, b, dy, dx f32 contiguous. */
slm_status slm_lora_deq_linear(slm_pool *pool, float *y, const float *x, const slm_tensor *W, const float *b,
                               int64_t n, slm_error *err);
slm_status slm_lora_deq_linear_dx(slm_pool *pool, float *dx, const float *dy, const slm_tensor *W, int64_t n,
                                  int accumulate, slm_error *err);
void slm_lora_dropout(float *out, const float *x, int64_t count, float p, uint64_t seed);

#endif
