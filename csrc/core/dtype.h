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
    int fallback;            /* K-quants: the 32-element type the reference's
                                quantizer uses for a row that is not a whole
                                number of super-blocks; -1 for the others */
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

/* The dtype a row of ncols elements is quantized to when t is asked for, as
 * the reference quantizer falls back (llama-quant.cpp,
 * tensor_type_fallback): t when ncols is a whole number of its blocks, else
 * its fallback (Q2_K, Q3_K -> Q4_0, Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K ->
 * Q8_0) when that divides the row, else F16. (The reference refuses a
 * 32-element type whose rows are not whole blocks; slm keeps such rows F16.) */
slm_dtype slm_dtype_for_row(slm_dtype t, int64_t ncols);

/* File types: the value of a GGUF file's general.file_type, the reference's
 * llama_ftype (include/llama.h), under the name its quantizer gives the
 * choice ("q4_k_m" = LLAMA_FTYPE_MOSTLY_Q4_K_M = 15). dtype is the type
 * most weights get; names_dtype marks the one file type that labels a file
 * mostly of that dtype (q4_k -> q4_k_m). */
typedef struct slm_file_type {
    const char *name;
    int id;
    slm_dtype dtype;
    int names_dtype;
} slm_file_type;

/* The i-th file type (0-based, in id order); NULL past the last. */
const slm_file_type *slm_file_type_at(int i);
/* The file type labelling a file mostly of dtype t; NULL when none does. */
const slm_file_type *slm_file_type_of(slm_dtype t);

#endif
