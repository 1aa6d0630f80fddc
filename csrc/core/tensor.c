#include "tensor.h"

#include <stdlib.h>
#include <string.h>

slm_status slm_shape_check(slm_dtype dtype, int ndim, const int64_t *shape,
                           size_t *nbytes, slm_error *err)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)dtype);
    if (!tr)
        return slm_error_set(err, SLM_EUNSUPPORTED, "unknown dtype %d", (int)dtype);
    if (ndim < 1 || ndim > SLM_MAX_DIMS)
        return slm_error_set(err, SLM_EINVAL, "tensor must have 1 to %d dimensions, got %d",
                             SLM_MAX_DIMS, ndim);
    uint64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0)
            return slm_error_set(err, SLM_EINVAL, "dimension %d has size %lld (must be positive)",
                                 i + 1, (long long)shape[i]);
        if ((uint64_t)shape[i] > (uint64_t)INT64_MAX / n)
            return slm_error_set(err, SLM_ERANGE, "shape overflows: number of elements too large");
        n *= (uint64_t)shape[i];
    }
    if (shape[ndim - 1] % tr->block_size != 0)
        return slm_error_set(err, SLM_EINVAL,
                             "last dimension %lld is not a multiple of the %s block size %lld",
                             (long long)shape[ndim - 1], tr->name, (long long)tr->block_size);
    uint64_t blocks = n / (uint64_t)tr->block_size;
    if (blocks > SIZE_MAX / tr->type_size)
        return slm_error_set(err, SLM_ERANGE, "shape overflows: byte size too large");
    if (nbytes) *nbytes = (size_t)blocks * tr->type_size;
    return SLM_OK;
}

static void set_contiguous_strides(slm_tensor *t)
{
    int64_t st = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = st;
        st *= t->shape[i];
    }
}

static slm_tensor *tensor_alloc(slm_error *err)
{
    slm_tensor *t = calloc(1, sizeof *t);
    if (!t) slm_error_set(err, SLM_ENOMEM, "out of memory");
    return t;
}

slm_tensor *slm_tensor_from_storage(slm_storage *s, size_t offset,
                                    slm_dtype dtype, int ndim,
                                    const int64_t *shape, slm_error *err)
{
    size_t nbytes;
    if (slm_shape_check(dtype, ndim, shape, &nbytes, err) != SLM_OK) return NULL;
    if (offset > s->size || nbytes > s->size - offset) {
        slm_error_set(err, SLM_ERANGE,
                      "tensor data [%zu, +%zu) is past the end of its storage (%zu bytes)",
                      offset, nbytes, s->size);
        return NULL;
    }
    slm_tensor *t = tensor_alloc(err);
    if (!t) return NULL;
    t->dtype = dtype;
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    set_contiguous_strides(t);
    t->offset = offset;
    t->storage = slm_storage_ref(s);
    return t;
}

slm_tensor *slm_tensor_new(slm_dtype dtype, int ndim, const int64_t *shape,
                           slm_error *err)
{
    size_t nbytes;
    if (slm_shape_check(dtype, ndim, shape, &nbytes, err) != SLM_OK) return NULL;
    slm_storage *s = slm_storage_alloc(nbytes, err);
    if (!s) return NULL;
    slm_tensor *t = slm_tensor_from_storage(s, 0, dtype, ndim, shape, err);
    slm_storage_unref(s);
    return t;
}

void slm_tensor_free(slm_tensor *t)
{
    if (!t) return;
    slm_storage_unref(t->storage);
    free(t);
}

int64_t slm_tensor_numel(const slm_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int slm_tensor_is_contiguous(const slm_tensor *t)
{
    int64_t st = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != st) return 0;
        st *= t->shape[i];
    }
    return 1;
}

size_t slm_tensor_elem_bytes(const slm_tensor *t, int64_t e)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    return (size_t)(e / tr->block_size) * tr->type_size;
}

size_t slm_tensor_nbytes(const slm_tensor *t)
{
    return slm_tensor_elem_bytes(t, slm_tensor_numel(t));
}

void *slm_tensor_data(const slm_tensor *t)
{
    return t->storage->data + t->offset;
}
