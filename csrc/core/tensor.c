#include "tensor.h"

#include "lora_link.h"

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
    slm_lora_link_unref(t->lora);
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

/* ---- views -------------------------------------------------------------
 *
 * Every view keeps the invariants of the header: its elements lie inside
 * the parent's (so inside the storage), and for block-quantized dtypes the
 * last dim stays contiguous whole blocks. Views never allocate data. */

static slm_tensor *tensor_dup(const slm_tensor *t, slm_error *err)
{
    slm_tensor *v = tensor_alloc(err);
    if (!v) return NULL;
    *v = *t;
    slm_storage_ref(v->storage);
    slm_lora_link_ref(v->lora);
    return v;
}

static slm_status check_dim(const slm_tensor *t, const char *op, int dim,
                            slm_error *err)
{
    if (dim < 0 || dim >= t->ndim)
        return slm_error_set(err, SLM_ERANGE, "%s: dim %d out of range [0, %d)",
                             op, dim, t->ndim);
    return SLM_OK;
}

slm_tensor *slm_tensor_view(const slm_tensor *t, slm_error *err)
{
    return tensor_dup(t, err);
}

slm_tensor *slm_tensor_narrow(const slm_tensor *t, int dim, int64_t start,
                              int64_t len, slm_error *err)
{
    if (check_dim(t, "narrow", dim, err) != SLM_OK) return NULL;
    int64_t size = t->shape[dim];
    if (start < 0 || start >= size || len < 1 || len > size - start) {
        slm_error_set(err, SLM_ERANGE,
                      "narrow: start %lld, length %lld is outside dim %d of size %lld",
                      (long long)start, (long long)len, dim, (long long)size);
        return NULL;
    }
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    if (dim == t->ndim - 1 && (start % tr->block_size || len % tr->block_size)) {
        slm_error_set(err, SLM_EINVAL,
                      "narrow: start %lld and length %lld of the last dim must be "
                      "multiples of the %s block size %lld",
                      (long long)start, (long long)len, tr->name,
                      (long long)tr->block_size);
        return NULL;
    }
    slm_tensor *v = tensor_dup(t, err);
    if (!v) return NULL;
    /* start * stride is a multiple of the block size: on the last dim by the
     * check above, on the others because their strides are */
    v->offset += slm_tensor_elem_bytes(t, start * t->stride[dim]);
    v->shape[dim] = len;
    return v;
}

slm_tensor *slm_tensor_select(const slm_tensor *t, int dim, int64_t index,
                              slm_error *err)
{
    if (check_dim(t, "select", dim, err) != SLM_OK) return NULL;
    if (t->ndim == 1) {
        slm_error_set(err, SLM_EINVAL,
                      "select: cannot select from a 1-D tensor (a tensor has at "
                      "least one dim); read the element instead");
        return NULL;
    }
    if (index < 0 || index >= t->shape[dim]) {
        slm_error_set(err, SLM_ERANGE, "select: index %lld out of range [0, %lld) in dim %d",
                      (long long)index, (long long)t->shape[dim], dim);
        return NULL;
    }
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    if (tr->is_quantized && dim == t->ndim - 1) {
        slm_error_set(err, SLM_EINVAL,
                      "select: cannot select along the last dim of a %s tensor "
                      "(it is stored in blocks of %lld); convert it first",
                      tr->name, (long long)tr->block_size);
        return NULL;
    }
    slm_tensor *v = tensor_dup(t, err);
    if (!v) return NULL;
    v->offset += slm_tensor_elem_bytes(t, index * t->stride[dim]);
    for (int i = dim; i < t->ndim - 1; i++) {
        v->shape[i] = t->shape[i + 1];
        v->stride[i] = t->stride[i + 1];
    }
    v->ndim = t->ndim - 1;
    v->shape[v->ndim] = 0;
    v->stride[v->ndim] = 0;
    return v;
}

slm_tensor *slm_tensor_transpose(const slm_tensor *t, int d0, int d1,
                                 slm_error *err)
{
    if (check_dim(t, "transpose", d0, err) != SLM_OK ||
        check_dim(t, "transpose", d1, err) != SLM_OK)
        return NULL;
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    if (tr->is_quantized && d0 != d1 && (d0 == t->ndim - 1 || d1 == t->ndim - 1)) {
        slm_error_set(err, SLM_EINVAL,
                      "transpose: cannot move the last dim of a %s tensor (its "
                      "blocks are contiguous); convert it first",
                      tr->name);
        return NULL;
    }
    slm_tensor *v = tensor_dup(t, err);
    if (!v) return NULL;
    v->shape[d0] = t->shape[d1];
    v->stride[d0] = t->stride[d1];
    v->shape[d1] = t->shape[d0];
    v->stride[d1] = t->stride[d0];
    return v;
}

slm_tensor *slm_tensor_reshape(const slm_tensor *t, int ndim,
                               const int64_t *shape, slm_error *err)
{
    if (ndim < 1 || ndim > SLM_MAX_DIMS) {
        slm_error_set(err, SLM_EINVAL, "reshape: tensor must have 1 to %d dims, got %d",
                      SLM_MAX_DIMS, ndim);
        return NULL;
    }
    if (!slm_tensor_is_contiguous(t)) {
        slm_error_set(err, SLM_EINVAL,
                      "reshape: tensor is not contiguous; call contiguous() first");
        return NULL;
    }
    int64_t numel = slm_tensor_numel(t), known = 1, s[SLM_MAX_DIMS];
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (shape[i] == -1 && infer < 0) {
            infer = i;
        } else if (shape[i] <= 0) {
            slm_error_set(err, SLM_EINVAL,
                          "reshape: dim %d has size %lld (must be positive, or -1 once)",
                          i, (long long)shape[i]);
            return NULL;
        } else {
            /* known <= numel keeps the product from overflowing */
            if (shape[i] > numel / known) known = numel + 1;
            else known *= shape[i];
        }
    }
    if (infer >= 0) {
        if (numel % known != 0) {
            slm_error_set(err, SLM_EINVAL,
                          "reshape: cannot infer dim %d: %lld elements are not a "
                          "multiple of %lld", infer, (long long)numel, (long long)known);
            return NULL;
        }
        s[infer] = numel / known;
    } else if (known != numel) {
        slm_error_set(err, SLM_EINVAL,
                      "reshape: shape does not match the %lld elements of the tensor",
                      (long long)numel);
        return NULL;
    }
    if (slm_shape_check(t->dtype, ndim, s, NULL, err) != SLM_OK) return NULL;
    slm_tensor *v = tensor_dup(t, err);
    if (!v) return NULL;
    v->ndim = ndim;
    memset(v->shape, 0, sizeof v->shape);
    memcpy(v->shape, s, (size_t)ndim * sizeof *s);
    set_contiguous_strides(v);
    return v;
}

/* ---- rows and elements ---------------------------------------------------
 *
 * A row is the run of the last dim at a fixed outer multi-index; rows are
 * numbered in row-major order, so row r of a contiguous tensor starts at
 * element r * shape[ndim-1]. */

static int64_t row_count(const slm_tensor *t)
{
    return slm_tensor_numel(t) / t->shape[t->ndim - 1];
}

/* Element offset of the first element of row r. */
static int64_t row_start(const slm_tensor *t, int64_t r)
{
    int64_t off = 0;
    for (int i = t->ndim - 2; i >= 0; i--) {
        off += (r % t->shape[i]) * t->stride[i];
        r /= t->shape[i];
    }
    return off;
}

static unsigned char *elem_addr(const slm_tensor *t, int64_t e)
{
    return (unsigned char *)slm_tensor_data(t) + slm_tensor_elem_bytes(t, e);
}

/* Reads row r as floats; the dtype must have to_f32. Quantized rows are
 * contiguous whole blocks (header invariant), scalar rows may be strided. */
static void read_row(const slm_tensor *t, int64_t r, float *out)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    int64_t n = t->shape[t->ndim - 1], st = t->stride[t->ndim - 1];
    int64_t e = row_start(t, r);
    if (st == 1 || n == 1) {
        tr->to_f32(elem_addr(t, e), out, n);
        return;
    }
    for (int64_t j = 0; j < n; j++) tr->to_f32(elem_addr(t, e + j * st), out + j, 1);
}

/* Writes row r from floats; the dtype must have from_f32. */
static void write_row(slm_tensor *t, int64_t r, const float *in)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    int64_t n = t->shape[t->ndim - 1], st = t->stride[t->ndim - 1];
    int64_t e = row_start(t, r);
    if (st == 1 || n == 1) {
        tr->from_f32(in, elem_addr(t, e), n);
        return;
    }
    for (int64_t j = 0; j < n; j++) tr->from_f32(in + j, elem_addr(t, e + j * st), 1);
}

slm_status slm_tensor_row_f32(const slm_tensor *t, int64_t r, float *out,
                              slm_error *err)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    if (!tr->to_f32)
        return slm_error_set(err, SLM_EUNSUPPORTED, "cannot read %s as float32", tr->name);
    int64_t rows = row_count(t);
    if (r < 0 || r >= rows)
        return slm_error_set(err, SLM_ERANGE, "row %lld out of range [0, %lld)",
                             (long long)r, (long long)rows);
    read_row(t, r, out);
    return SLM_OK;
}

static slm_status check_writable(const slm_tensor *t, slm_error *err)
{
    if (t->storage->readonly)
        return slm_error_set(err, SLM_EINVAL,
                             "tensor is read-only (it views a read-only file "
                             "mapping); clone() it for a writable copy");
    return SLM_OK;
}

static slm_status elem_offset(const slm_tensor *t, const int64_t *idx,
                              int64_t *e, slm_error *err)
{
    int64_t off = 0;
    for (int i = 0; i < t->ndim; i++) {
        if (idx[i] < 0 || idx[i] >= t->shape[i])
            return slm_error_set(err, SLM_ERANGE,
                                 "index %lld out of range [0, %lld) in dim %d",
                                 (long long)idx[i], (long long)t->shape[i], i);
        off += idx[i] * t->stride[i];
    }
    *e = off;
    return SLM_OK;
}

/* Largest block size of the dtype table (the K-quants' 256). */
#define MAX_BLOCK 256

slm_status slm_tensor_get(const slm_tensor *t, const int64_t *idx, double *v,
                          slm_error *err)
{
    int64_t e;
    slm_status s = elem_offset(t, idx, &e, err);
    if (s != SLM_OK) return s;
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    const unsigned char *p = elem_addr(t, e);
    /* integers are read exactly: i32 does not fit in a float */
    switch (t->dtype) {
    case SLM_DTYPE_I8: { int8_t x; memcpy(&x, p, 1); *v = x; return SLM_OK; }
    case SLM_DTYPE_I16: { int16_t x; memcpy(&x, p, 2); *v = x; return SLM_OK; }
    case SLM_DTYPE_I32: { int32_t x; memcpy(&x, p, 4); *v = x; return SLM_OK; }
    default: break;
    }
    if (!tr->to_f32 || tr->block_size > MAX_BLOCK)
        return slm_error_set(err, SLM_EUNSUPPORTED, "cannot read %s as float32", tr->name);
    float blk[MAX_BLOCK];
    tr->to_f32(p, blk, tr->block_size);   /* p is the start of e's block */
    *v = blk[e % tr->block_size];
    return SLM_OK;
}

static slm_status set_int(unsigned char *p, slm_dtype dt, double v, slm_error *err)
{
    double lo = dt == SLM_DTYPE_I8 ? INT8_MIN : dt == SLM_DTYPE_I16 ? INT16_MIN : INT32_MIN;
    double hi = dt == SLM_DTYPE_I8 ? INT8_MAX : dt == SLM_DTYPE_I16 ? INT16_MAX : INT32_MAX;
    if (!(v >= lo && v <= hi) || v != (double)(int64_t)v)
        return slm_error_set(err, SLM_ERANGE,
                             "value %.17g is not an integer in [%.0f, %.0f] for %s",
                             v, lo, hi, slm_dtype_name(dt));
    if (dt == SLM_DTYPE_I8) { int8_t x = (int8_t)v; memcpy(p, &x, 1); }
    else if (dt == SLM_DTYPE_I16) { int16_t x = (int16_t)v; memcpy(p, &x, 2); }
    else { int32_t x = (int32_t)v; memcpy(p, &x, 4); }
    return SLM_OK;
}

slm_status slm_tensor_set(slm_tensor *t, const int64_t *idx, double v,
                          slm_error *err)
{
    int64_t e;
    slm_status s = check_writable(t, err);
    if (s == SLM_OK) s = elem_offset(t, idx, &e, err);
    if (s != SLM_OK) return s;
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    unsigned char *p = elem_addr(t, e);
    if (t->dtype == SLM_DTYPE_I8 || t->dtype == SLM_DTYPE_I16 || t->dtype == SLM_DTYPE_I32)
        return set_int(p, t->dtype, v, err);
    if (!tr->to_f32 || !tr->from_f32 || tr->block_size > MAX_BLOCK)
        return slm_error_set(err, SLM_EUNSUPPORTED, "cannot write %s elements", tr->name);
    /* a quantized element cannot change alone: dequantize its block, change
     * the value and quantize the block again (the other values of the
     * block may move by up to a quantization step) */
    float blk[MAX_BLOCK];
    tr->to_f32(p, blk, tr->block_size);
    blk[e % tr->block_size] = (float)v;
    tr->from_f32(blk, p, tr->block_size);
    return SLM_OK;
}

/* ---- copy and convert ---------------------------------------------------- */

/* Same dtype: copy blocks (single elements for scalar dtypes) in row-major
 * order; the two shapes may differ, only the element order matters. */
static void copy_raw(slm_tensor *dst, const slm_tensor *src)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)dst->dtype);
    if (slm_tensor_is_contiguous(dst) && slm_tensor_is_contiguous(src)) {
        memcpy(slm_tensor_data(dst), slm_tensor_data(src), slm_tensor_nbytes(src));
        return;
    }
    int64_t bs = tr->block_size;
    int64_t dn = dst->shape[dst->ndim - 1] / bs, sn = src->shape[src->ndim - 1] / bs;
    int64_t dst_st = dst->stride[dst->ndim - 1] * bs, src_st = src->stride[src->ndim - 1] * bs;
    int64_t drows = row_count(dst), sr = 0, sj = sn, se = 0;
    if (dn == sn && dst_st == bs && src_st == bs) {
        /* rows of the same length, each contiguous (column slices of a
         * matrix, as training's fused projections take): a row at a time */
        size_t row_bytes = (size_t)dn * tr->type_size;
        for (int64_t r = 0; r < drows; r++)
            memcpy(elem_addr(dst, row_start(dst, r)), elem_addr(src, row_start(src, r)), row_bytes);
        return;
    }
    for (int64_t r = 0; r < drows; r++) {
        int64_t de = row_start(dst, r);
        for (int64_t j = 0; j < dn; j++) {
            if (sj == sn) {
                se = row_start(src, sr++);
                sj = 0;
            }
            memcpy(elem_addr(dst, de + j * dst_st), elem_addr(src, se + sj * src_st),
                   tr->type_size);
            sj++;
        }
    }
}

/* Different dtypes: stream float32 rows of src into float32 rows of dst. */
static slm_status copy_convert(slm_tensor *dst, const slm_tensor *src, slm_error *err)
{
    int64_t dn = dst->shape[dst->ndim - 1], sn = src->shape[src->ndim - 1];
    float *dbuf = malloc((size_t)dn * sizeof *dbuf);
    float *sbuf = malloc((size_t)sn * sizeof *sbuf);
    if (!dbuf || !sbuf) {
        free(dbuf);
        free(sbuf);
        return slm_error_set(err, SLM_ENOMEM, "copy: out of memory for row buffers");
    }
    int64_t drows = row_count(dst), sr = 0, sj = sn;
    for (int64_t r = 0; r < drows; r++) {
        for (int64_t k = 0; k < dn;) {
            if (sj == sn) {
                read_row(src, sr++, sbuf);
                sj = 0;
            }
            int64_t n = dn - k < sn - sj ? dn - k : sn - sj;
            memcpy(dbuf + k, sbuf + sj, (size_t)n * sizeof *dbuf);
            k += n;
            sj += n;
        }
        write_row(dst, r, dbuf);
    }
    free(dbuf);
    free(sbuf);
    return SLM_OK;
}

slm_status slm_tensor_copy(slm_tensor *dst, const slm_tensor *src,
                           slm_error *err)
{
    int64_t dn = slm_tensor_numel(dst), sn = slm_tensor_numel(src);
    if (dn != sn)
        return slm_error_set(err, SLM_EINVAL,
                             "copy: size mismatch: destination has %lld elements, source %lld",
                             (long long)dn, (long long)sn);
    if (check_writable(dst, err) != SLM_OK) return SLM_EINVAL;
    const slm_dtype_traits *dt = slm_dtype_get((int)dst->dtype);
    const slm_dtype_traits *st = slm_dtype_get((int)src->dtype);
    if (dst->dtype != src->dtype && (!st->to_f32 || !dt->from_f32))
        return slm_error_set(err, SLM_EUNSUPPORTED, "copy: cannot convert %s to %s",
                             st->name, dt->name);
    if (dst->storage == src->storage) {
        /* the two may overlap (t:copy_(t:t())): read from a private copy */
        slm_tensor *tmp = slm_tensor_convert(src, src->dtype, err);
        if (!tmp) return err ? err->code : SLM_ENOMEM;
        slm_status s = slm_tensor_copy(dst, tmp, err);
        slm_tensor_free(tmp);
        return s;
    }
    if (dst->dtype == src->dtype) {
        copy_raw(dst, src);
        return SLM_OK;
    }
    return copy_convert(dst, src, err);
}

slm_tensor *slm_tensor_convert(const slm_tensor *t, slm_dtype dtype,
                               slm_error *err)
{
    const slm_dtype_traits *dt = slm_dtype_get((int)dtype);
    const slm_dtype_traits *st = slm_dtype_get((int)t->dtype);
    if (!dt) {
        slm_error_set(err, SLM_EUNSUPPORTED, "convert: unknown dtype %d", (int)dtype);
        return NULL;
    }
    if (dtype != t->dtype && (!st->to_f32 || !dt->from_f32)) {
        slm_error_set(err, SLM_EUNSUPPORTED, "convert: cannot convert %s to %s",
                      st->name, dt->name);
        return NULL;
    }
    slm_tensor *out = slm_tensor_new(dtype, t->ndim, t->shape, err);
    if (!out) return NULL;
    if (slm_tensor_copy(out, t, err) != SLM_OK) {
        slm_tensor_free(out);
        return NULL;
    }
    return out;
}
