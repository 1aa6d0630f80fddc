/* safetensors files, read through a read-only mapping.
 *
 * Layout: uint64 N (little-endian) | N bytes of UTF-8 JSON | data section.
 * The JSON is an object: each key but "__metadata__" names a tensor,
 *   "name": {"dtype": "F32", "shape": [d0, d1, ...] (outermost first),
 *            "data_offsets": [begin, end]}   (bytes, relative to the data section)
 * and the optional "__metadata__" maps strings to strings.
 *
 * Every entry is validated at open: known dtype name, integer shape entries
 * >= 0, at most 4 dims, begin <= end inside the data section, and
 * end - begin = numel * element size; the tensors, in data order, must
 * tile the data section exactly (no overlap, no gap, no trailing bytes) and
 * the header be at most SLM_SAFETENSORS_MAX_HEADER bytes, as the format's
 * own library requires. Tensors of dtypes slm has (F32, F16,
 * BF16, I8, I16, I32) become zero-copy views; the others (F64, I64, BOOL,
 * U8, ...) are listed but slm_safetensors_tensor refuses them with
 * EUNSUPPORTED naming the tensor. A 0-dimensional (scalar) tensor is viewed
 * as shape {1}. Tensors are listed in data order (by begin offset). */
#ifndef SLM_SAFETENSORS_H
#define SLM_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"
#include "../core/tensor.h"

/* The format's limit on the JSON header (safetensors' MAX_HEADER_SIZE). */
#define SLM_SAFETENSORS_MAX_HEADER 100000000

typedef struct slm_safetensors slm_safetensors;

typedef struct slm_st_tensor_info {
    const char *name;          /* NUL-terminated */
    const char *dtype_name;    /* as in the file: "F32", "BF16", "I64", ... */
    int supported;             /* dtype maps onto an slm dtype */
    slm_dtype dtype;           /* valid when supported */
    int ndim;                  /* 0..SLM_MAX_DIMS, as in the file */
    int64_t shape[SLM_MAX_DIMS];  /* outermost first */
    uint64_t offset;           /* begin, relative to the data section */
    size_t nbytes;
} slm_st_tensor_info;

/* NULL on failure with a message naming the file, the field and the problem. */
slm_safetensors *slm_safetensors_open(const char *path, slm_error *err);
void slm_safetensors_close(slm_safetensors *f);   /* NULL is fine; views stay valid */

const char *slm_safetensors_path(const slm_safetensors *f);
size_t slm_safetensors_data_offset(const slm_safetensors *f);  /* 8 + header length */

int64_t slm_safetensors_n_tensors(const slm_safetensors *f);
const slm_st_tensor_info *slm_safetensors_tensor_info(const slm_safetensors *f, int64_t i);
int64_t slm_safetensors_find_tensor(const slm_safetensors *f, const char *name); /* -1 */
/* Zero-copy view over the mapping; a copy when the data is not aligned to
 * its element size (the format does not promise alignment). */
slm_tensor *slm_safetensors_tensor(const slm_safetensors *f, int64_t i, slm_error *err);

/* __metadata__ entries, in file order. */
int64_t slm_safetensors_n_meta(const slm_safetensors *f);
const char *slm_safetensors_meta_key(const slm_safetensors *f, int64_t i);
const char *slm_safetensors_meta_value(const slm_safetensors *f, int64_t i);

#endif
