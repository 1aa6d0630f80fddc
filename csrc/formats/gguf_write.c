/* GGUF writer (version 3): header, key-values, tensor infos, then the data
 * section, laid out as the reference writer (ggml's gguf_write_to_file)
 * does: the data section starts at the first multiple of the alignment
 * after the tensor infos and every tensor's data is padded with zeros to a
 * multiple of the alignment, so tensor i's offset is the sum of the padded
 * sizes before it. */
#include "gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The reference keeps tensor names in a fixed 64-byte buffer. */
#define NAME_MAX_BYTES 63

typedef struct wkv {
    char *key;
    slm_gguf_type type;            /* SLM_GGUF_ARRAY for arrays */
    slm_gguf_type arr_type;
    unsigned char *bytes;          /* the value exactly as written after the type */
    size_t nbytes;
} wkv;

typedef struct wtensor {
    char *name;
    slm_tensor view;               /* holds a storage reference */
    size_t nbytes;
} wtensor;

struct slm_gguf_writer {
    wkv *kvs;
    size_t n_kv, kv_cap;
    wtensor *tensors;
    size_t n_tensors, tensor_cap;
    size_t alignment;
};

slm_gguf_writer *slm_gguf_writer_new(slm_error *err)
{
    slm_gguf_writer *w = calloc(1, sizeof *w);
    if (!w) slm_error_set(err, SLM_ENOMEM, "out of memory");
    else w->alignment = SLM_GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void slm_gguf_writer_free(slm_gguf_writer *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kvs[i].key);
        free(w->kvs[i].bytes);
    }
    for (size_t i = 0; i < w->n_tensors; i++) {
        free(w->tensors[i].name);
        slm_storage_unref(w->tensors[i].view.storage);
    }
    free(w->kvs);
    free(w->tensors);
    free(w);
}

static void put_u64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

/* Host values of a numeric type as little-endian bytes (x86 and every
 * other host slm targets are little-endian, so this is a copy), after
 * checking bools. */
static slm_status check_values(const char *key, slm_gguf_type t, const void *data, uint64_t n,
                               slm_error *err)
{
    if (t > SLM_GGUF_FLOAT64 || t == SLM_GGUF_STRING || t == SLM_GGUF_ARRAY)
        return slm_error_set(err, SLM_EINVAL, "gguf key '%s': type %s is not a numeric or bool "
                             "type", key, slm_gguf_type_name(t));
    if (t == SLM_GGUF_BOOL)
        for (uint64_t j = 0; j < n; j++)
            if (((const unsigned char *)data)[j] > 1)
                return slm_error_set(err, SLM_EINVAL, "gguf key '%s': bool value %u is not 0 "
                                     "or 1", key, ((const unsigned char *)data)[j]);
    return SLM_OK;
}

/* Appends a key whose value bytes are allocated by the caller (taken over,
 * freed on failure). */
static slm_status add_kv(slm_gguf_writer *w, const char *key, slm_gguf_type type,
                         slm_gguf_type arr_type, unsigned char *bytes, size_t nbytes,
                         slm_error *err)
{
    slm_status st = SLM_OK;
    for (size_t i = 0; i < w->n_kv && st == SLM_OK; i++)
        if (strcmp(w->kvs[i].key, key) == 0)
            st = slm_error_set(err, SLM_EINVAL, "gguf key '%s' is set twice", key);
    if (st == SLM_OK && strcmp(key, "general.alignment") == 0) {
        uint32_t a = 0;
        if (type == SLM_GGUF_UINT32) memcpy(&a, bytes, 4);
        if (type != SLM_GGUF_UINT32 || a == 0 || (a & (a - 1)) != 0 ||
            a > SLM_GGUF_MAX_ALIGNMENT)
            st = slm_error_set(err, SLM_EINVAL, "general.alignment must be a u32 power of two "
                               "between 1 and %d", SLM_GGUF_MAX_ALIGNMENT);
        else w->alignment = a;
    }
    if (st == SLM_OK && w->n_kv == w->kv_cap) {
        size_t cap = w->kv_cap ? 2 * w->kv_cap : 16;
        wkv *p = realloc(w->kvs, cap * sizeof *p);
        if (!p) st = slm_error_set(err, SLM_ENOMEM, "out of memory");
        else {
            w->kvs = p;
            w->kv_cap = cap;
        }
    }
    char *k = st == SLM_OK ? strdup(key) : NULL;
    if (st == SLM_OK && !k) st = slm_error_set(err, SLM_ENOMEM, "out of memory");
    if (st != SLM_OK) {
        free(bytes);
        return st;
    }
    w->kvs[w->n_kv++] = (wkv){k, type, arr_type, bytes, nbytes};
    return SLM_OK;
}

slm_status slm_gguf_writer_set(slm_gguf_writer *w, const char *key, slm_gguf_type type,
                               const void *value, slm_error *err)
{
    slm_status st = check_values(key, type, value, 1, err);
    if (st != SLM_OK) return st;
    size_t n = slm_gguf_type_size(type);
    unsigned char *b = malloc(n);
    if (!b) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    memcpy(b, value, n);
    return add_kv(w, key, type, type, b, n, err);
}

slm_status slm_gguf_writer_set_str(slm_gguf_writer *w, const char *key, const char *s,
                                   size_t len, slm_error *err)
{
    if (len > SIZE_MAX - 8) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    unsigned char *b = malloc(8 + len);
    if (!b) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    put_u64(b, len);
    if (len) memcpy(b + 8, s, len);
    return add_kv(w, key, SLM_GGUF_STRING, SLM_GGUF_STRING, b, 8 + len, err);
}

slm_status slm_gguf_writer_set_arr(slm_gguf_writer *w, const char *key, slm_gguf_type elem_type,
                                   const void *data, uint64_t n, slm_error *err)
{
    slm_status st = check_values(key, elem_type, data, n, err);
    if (st != SLM_OK) return st;
    size_t esz = slm_gguf_type_size(elem_type);
    if (n > (SIZE_MAX - 12) / esz) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    unsigned char *b = malloc(12 + (size_t)n * esz);
    if (!b) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    uint32_t et = (uint32_t)elem_type;
    memcpy(b, &et, 4);
    put_u64(b + 4, n);
    if (n) memcpy(b + 12, data, (size_t)n * esz);
    return add_kv(w, key, SLM_GGUF_ARRAY, elem_type, b, 12 + (size_t)n * esz, err);
}

slm_status slm_gguf_writer_set_arr_str(slm_gguf_writer *w, const char *key,
                                       const char *const *strs, const size_t *lens, uint64_t n,
                                       slm_error *err)
{
    size_t total = 12;
    for (uint64_t j = 0; j < n; j++) {
        if (lens[j] > SIZE_MAX - 8 - total) return slm_error_set(err, SLM_ENOMEM, "out of memory");
        total += 8 + lens[j];
    }
    unsigned char *b = malloc(total), *p = b + 12;
    if (!b) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    uint32_t et = SLM_GGUF_STRING;
    memcpy(b, &et, 4);
    put_u64(b + 4, n);
    for (uint64_t j = 0; j < n; j++) {
        put_u64(p, lens[j]);
        if (lens[j]) memcpy(p + 8, strs[j], lens[j]);
        p += 8 + lens[j];
    }
    return add_kv(w, key, SLM_GGUF_ARRAY, SLM_GGUF_STRING, b, total, err);
}

slm_status slm_gguf_writer_add_tensor(slm_gguf_writer *w, const char *name,
                                      const slm_tensor *t, slm_error *err)
{
    size_t len = strlen(name);
    if (len > NAME_MAX_BYTES)
        return slm_error_set(err, SLM_EINVAL, "gguf tensor name '%.63s...' is %zu bytes (at "
                             "most %d)", name, len, NAME_MAX_BYTES);
    for (size_t i = 0; i < w->n_tensors; i++)
        if (strcmp(w->tensors[i].name, name) == 0)
            return slm_error_set(err, SLM_EINVAL, "gguf tensor '%s' is added twice", name);
    size_t nbytes;
    slm_status st = slm_shape_check(t->dtype, t->ndim, t->shape, &nbytes, err);
    if (st != SLM_OK) return st;
    if (w->n_tensors == w->tensor_cap) {
        size_t cap = w->tensor_cap ? 2 * w->tensor_cap : 16;
        wtensor *p = realloc(w->tensors, cap * sizeof *p);
        if (!p) return slm_error_set(err, SLM_ENOMEM, "out of memory");
        w->tensors = p;
        w->tensor_cap = cap;
    }
    char *nm = strdup(name);
    if (!nm) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    wtensor *wt = &w->tensors[w->n_tensors++];
    wt->name = nm;
    wt->view = *t;
    wt->nbytes = nbytes;
    slm_storage_ref(t->storage);
    return SLM_OK;
}

static size_t pad_to(size_t n, size_t a) { return (a - n % a) % a; }

static int put_str(FILE *f, const char *s, size_t len)
{
    unsigned char b[8];
    put_u64(b, len);
    return fwrite(b, 1, 8, f) == 8 && fwrite(s, 1, len, f) == len;
}

static int put_zeros(FILE *f, size_t n)
{
    static const unsigned char zeros[64];
    while (n > 0) {
        size_t k = n < sizeof zeros ? n : sizeof zeros;
        if (fwrite(zeros, 1, k, f) != k) return 0;
        n -= k;
    }
    return 1;
}

/* Writes t's elements as contiguous row-major bytes. Rows of the last
 * dimension are runs of whole blocks when its stride is 1 (always so for
 * block-quantized types); otherwise the row is gathered element by element. */
static int put_tensor_data(FILE *f, const slm_tensor *t, unsigned char *row)
{
    if (slm_tensor_is_contiguous(t))
        return fwrite(slm_tensor_data(t), 1, slm_tensor_nbytes(t), f) == slm_tensor_nbytes(t);
    const slm_dtype_traits *tr = slm_dtype_get((int)t->dtype);
    int last = t->ndim - 1;
    int ok;
    size_t row_bytes = slm_dtype_row_size(t->dtype, t->shape[last], &ok);
    int64_t idx[SLM_MAX_DIMS] = {0};
    int64_t rows = slm_tensor_numel(t) / t->shape[last];
    const unsigned char *base = slm_tensor_data(t);
    for (int64_t r = 0; r < rows; r++) {
        int64_t e = 0;                      /* element offset of the row start */
        for (int d = 0; d < last; d++) e += idx[d] * t->stride[d];
        const unsigned char *src = base + slm_tensor_elem_bytes(t, e);
        if (t->stride[last] == 1) {
            if (fwrite(src, 1, row_bytes, f) != row_bytes) return 0;
        } else {
            for (int64_t j = 0; j < t->shape[last]; j++)
                memcpy(row + j * tr->type_size, src + j * t->stride[last] * tr->type_size,
                       tr->type_size);
            if (fwrite(row, 1, row_bytes, f) != row_bytes) return 0;
        }
        for (int d = last - 1; d >= 0; d--) {   /* next row index, odometer style */
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return 1;
}

static int write_all(const slm_gguf_writer *w, FILE *f, unsigned char *row)
{
    unsigned char b[8];
    uint32_t v32;
    size_t pos = 0;
    int ok = fwrite("GGUF", 1, 4, f) == 4;
    v32 = 3;
    ok = ok && fwrite(&v32, 1, 4, f) == 4;
    put_u64(b, w->n_tensors);
    ok = ok && fwrite(b, 1, 8, f) == 8;
    put_u64(b, w->n_kv);
    ok = ok && fwrite(b, 1, 8, f) == 8;
    pos = 24;
    for (size_t i = 0; ok && i < w->n_kv; i++) {
        const wkv *kv = &w->kvs[i];
        v32 = (uint32_t)kv->type;
        ok = put_str(f, kv->key, strlen(kv->key)) && fwrite(&v32, 1, 4, f) == 4 &&
             fwrite(kv->bytes, 1, kv->nbytes, f) == kv->nbytes;
        pos += 8 + strlen(kv->key) + 4 + kv->nbytes;
    }
    size_t offset = 0;
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        v32 = (uint32_t)t->view.ndim;
        ok = put_str(f, t->name, strlen(t->name)) && fwrite(&v32, 1, 4, f) == 4;
        for (int d = t->view.ndim - 1; ok && d >= 0; d--) {   /* ne[0] = innermost */
            put_u64(b, (uint64_t)t->view.shape[d]);
            ok = fwrite(b, 1, 8, f) == 8;
        }
        v32 = (uint32_t)t->view.dtype;
        put_u64(b, offset);
        ok = ok && fwrite(&v32, 1, 4, f) == 4 && fwrite(b, 1, 8, f) == 8;
        pos += 8 + strlen(t->name) + 4 + 8 * (size_t)t->view.ndim + 4 + 8;
        offset += t->nbytes + pad_to(t->nbytes, w->alignment);
    }
    ok = ok && put_zeros(f, pad_to(pos, w->alignment));
    for (size_t i = 0; ok && i < w->n_tensors; i++) {
        const wtensor *t = &w->tensors[i];
        ok = put_tensor_data(f, &t->view, row) && put_zeros(f, pad_to(t->nbytes, w->alignment));
    }
    return ok;
}

typedef struct write_ctx {
    const slm_gguf_writer *w;
    unsigned char *row;
} write_ctx;

static int write_file(FILE *f, void *ctx)
{
    const write_ctx *c = ctx;
    return write_all(c->w, f, c->row);
}

slm_status slm_gguf_writer_write(const slm_gguf_writer *w, const char *path, slm_error *err)
{
    /* one row buffer for gathering strided rows of the widest tensor */
    size_t row_cap = 0;
    for (size_t i = 0; i < w->n_tensors; i++) {
        const slm_tensor *t = &w->tensors[i].view;
        int ok;
        size_t rb = slm_dtype_row_size(t->dtype, t->shape[t->ndim - 1], &ok);
        if (rb > row_cap) row_cap = rb;
    }
    write_ctx c = {w, row_cap ? malloc(row_cap) : NULL};
    if (row_cap && !c.row) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    slm_status st = slm_file_replace(path, write_file, &c, err);
    free(c.row);
    return st;
}
