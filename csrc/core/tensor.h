/* N-dimensional tensors over a shared storage.
 *
 * Shapes are listed outermost first, as in Torch and NumPy: a GGUF matrix
 * with ggml ne = [576, 49152] (ne[0] contiguous) is shape {49152, 576} here.
 * Strides are in elements. For block-quantized dtypes the last dimension is
 * always contiguous (stride 1) and a whole number of blocks, every other
 * stride is a multiple of the block size, and the byte address of element
 * offset e is (e / block_size) * type_size: rows are runs of whole blocks.
 *
 * A tensor holds one reference to its storage; views (narrow, select,
 * transpose, reshape) share it. A tensor is a small struct the caller frees
 * with slm_tensor_free; freeing never invalidates other views. */
#ifndef SLM_TENSOR_H
#define SLM_TENSOR_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "status.h"
#include "storage.h"

struct slm_lora_link;

#define SLM_MAX_DIMS 4

typedef struct slm_tensor {
    slm_dtype dtype;
    int ndim;                        /* 1..SLM_MAX_DIMS */
    int64_t shape[SLM_MAX_DIMS];     /* outermost first */
    int64_t stride[SLM_MAX_DIMS];    /* elements */
    size_t offset;                   /* bytes from storage->data to element 0 */
    slm_storage *storage;
    struct slm_lora_link *lora;      /* unmerged adapters (lora_link.h), NULL: none;
                                        views share it (one reference each) */
} slm_tensor;

/* Zero-filled contiguous tensor. Checks the shape (positive dims, product
 * without overflow, last dim a multiple of the block size). */
slm_tensor *slm_tensor_new(slm_dtype dtype, int ndim, const int64_t *shape,
                           slm_error *err);
/* Contiguous tensor over bytes [offset, offset + nbytes) of s, which must
 * lie inside s (checked). Takes a new reference to s. */
slm_tensor *slm_tensor_from_storage(slm_storage *s, size_t offset,
                                    slm_dtype dtype, int ndim,
                                    const int64_t *shape, slm_error *err);
void slm_tensor_free(slm_tensor *t);   /* NULL is fine */

/* Checks a shape for dtype and returns the bytes of a contiguous tensor. */
slm_status slm_shape_check(slm_dtype dtype, int ndim, const int64_t *shape,
                           size_t *nbytes, slm_error *err);

int64_t slm_tensor_numel(const slm_tensor *t);
int slm_tensor_is_contiguous(const slm_tensor *t);
size_t slm_tensor_nbytes(const slm_tensor *t);     /* numel in bytes */
void *slm_tensor_data(const slm_tensor *t);        /* address of element 0 */
/* Byte offset of element offset e (in elements) relative to element 0. */
size_t slm_tensor_elem_bytes(const slm_tensor *t, int64_t e);

/* Views. dim indices are 0-based, outermost first. */
slm_tensor *slm_tensor_view(const slm_tensor *t, slm_error *err); /* same view */
slm_tensor *slm_tensor_narrow(const slm_tensor *t, int dim, int64_t start,
                              int64_t len, slm_error *err);
slm_tensor *slm_tensor_select(const slm_tensor *t, int dim, int64_t index,
                              slm_error *err);
slm_tensor *slm_tensor_transpose(const slm_tensor *t, int d0, int d1,
                                 slm_error *err);
/* View with a new shape; the tensor must be contiguous. One dim may be -1. */
slm_tensor *slm_tensor_reshape(const slm_tensor *t, int ndim,
                               const int64_t *shape, slm_error *err);

/* New contiguous tensor of dtype holding t's values (dequantized and
 * requantized through float32 rows when dtypes differ). */
slm_tensor *slm_tensor_convert(const slm_tensor *t, slm_dtype dtype,
                               slm_error *err);
/* dst and src must have the same number of elements; any dtypes. */
slm_status slm_tensor_copy(slm_tensor *dst, const slm_tensor *src,
                           slm_error *err);

/* Row r of t viewed as a matrix (numel / last dim) x last dim, as float32.
 * out holds shape[ndim-1] floats. */
slm_status slm_tensor_row_f32(const slm_tensor *t, int64_t r, float *out,
                              slm_error *err);

/* Element access by multi-index (ndim entries, 0-based, checked). Setting an
 * element of a block-quantized tensor requantizes its block. */
slm_status slm_tensor_get(const slm_tensor *t, const int64_t *idx, double *v,
                          slm_error *err);
slm_status slm_tensor_set(slm_tensor *t, const int64_t *idx, double v,
                          slm_error *err);

#endif
