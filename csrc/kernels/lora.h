/* The unmerged LoRA term of a product (core/lora_link.h):
 *
 *     out (M, N) += scale * (X (M, K) A^T) B^T      for each link of the chain
 *
 * in f32 on the calling thread (slm_sgemm, sgemm.h): r is small, so the
 * two thin products cost (K + N) r M multiply-adds against the base's
 * K N M. Links of scale 0 are skipped. A link whose shape does not fit
 * (in != K or out != N) is an error, not an out-of-bounds read. */
#ifndef SLM_KERNELS_LORA_H
#define SLM_KERNELS_LORA_H

#include <stdint.h>

#include "../core/lora_link.h"
#include "../core/status.h"

slm_status slm_lora_apply(float *out, const float *X, int64_t M, int64_t K, int64_t N,
                          const slm_lora_link *chain, slm_error *err);

#endif
