/* Element types and their traits.
 *
 * The numeric values are ggml's `ggml_type` ids, which is what GGUF stores in
 * each tensor info, so a file's type id maps onto this enum unchanged.
 * Block-quantized types store `block_size` elements in `type_size` bytes; the
 * block layouts are in csrc/quant/blocks.h. */
#ifndef SLM_DTYPE_H
#define SLM_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum slm_dtype {
    SLM_DTYPE_F32  = 0,
    SLM_DTYPE_F16  = 1,
    SLM_DTYPE_Q4_0 = 2,
    SLM_DTYPE_Q4_1 = 3,
    SLM_DTYPE_Q5_0 = 6,
    SLM_DTYPE_Q5_1 = 7,
    SLM_DTYPE_Q8_0 = 8,
    SLM_DTYPE_Q8_1 = 9,
    SLM_DTYPE_Q2_K = 10,
    SLM_DTYPE_Q3_K = 11,
    SLM_DTYPE_Q4_K = 12,
    SLM_DTYPE_Q5_K = 13,
    SLM_DTYPE_Q6_K = 14,
    SLM_DTYPE_Q8_K = 15,
    SLM_DTYPE_I8   = 24,
    SLM_DTYPE_I16  = 25,
    SLM_DTYPE_I32  = 26,
    SLM_DTYPE_BF16 = 30,
    SLM_DTYPE_COUNT = 31
} slm_dtype;

/* Dequantize n elements (n a multiple of block_size) of a contiguous row. */
typedef void (*slm_to_f32_fn)(const void *src, float *dst, int64_t n);
/* Quantize n elements (n a multiple of block_size): the reference quantizer
 * (no importance matrix), byte-for-byte the reference implementation's. */
typedef void (*slm_from_f32_fn)(const float *src, void *dst, int64_t n);

typedef struct slm_dtype_traits {
    const char *name;        /* lower case, as in file names: "q4_0", "q4_k", "f16" */
    int64_t block_size;      /* elements per block (1 for scalar types) */
    size_t type_size;        /* bytes per block */
    int is_quantized;
    slm_to_f32_fn to_f32;    /* NULL if not convertible */
    slm_from_f32_fn from_f32;/* NULL if quantizing to it is not supported */
} slm_dtype_traits;

/* NULL for ids that are not a known dtype (holes in the ggml numbering). */
const slm_dtype_traits *slm_dtype_get(int id);
int slm_dtype_valid(int id);
const char *slm_dtype_name(slm_dtype t);
/* Returns -1 when the name is unknown. Accepts upper or lower case. */
int slm_dtype_from_name(const char *name);

/* Bytes needed for n elements; 0 with *ok = 0 if n is not a multiple of the
 * block size or the product overflows. */
size_t slm_dtype_row_size(slm_dtype t, int64_t n, int *ok);

#endif
