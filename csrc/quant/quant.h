/* Scalar reference quantizers and dequantizers: the specification of each
 * block format. n is the number of elements, a multiple of the block size.
 *
 * slm_quantize_* reproduce the reference implementation's quantizers without
 * an importance matrix (ggml's quantize_row_*_ref), byte for byte.
 * slm_dequantize_* expand blocks to float exactly as the reference does. */
#ifndef SLM_QUANT_H
#define SLM_QUANT_H

#include <stdint.h>

#include "blocks.h"

#define SLM_QUANT_DECL(t) \
    void slm_quantize_##t(const float *x, void *y, int64_t n); \
    void slm_dequantize_##t(const void *x, float *y, int64_t n);

SLM_QUANT_DECL(q4_0)
SLM_QUANT_DECL(q4_1)
SLM_QUANT_DECL(q5_0)
SLM_QUANT_DECL(q5_1)
SLM_QUANT_DECL(q8_0)
SLM_QUANT_DECL(q8_1)
SLM_QUANT_DECL(q2_K)
SLM_QUANT_DECL(q3_K)
SLM_QUANT_DECL(q4_K)
SLM_QUANT_DECL(q5_K)
SLM_QUANT_DECL(q6_K)
SLM_QUANT_DECL(q8_K)

#undef SLM_QUANT_DECL

#endif
