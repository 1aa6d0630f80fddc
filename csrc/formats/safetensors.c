/* safetensors reader (layout in safetensors.h; the reference followed is
 * the format's own spec, huggingface/safetensors README). The JSON header is
 * parsed with jansson (duplicate keys refused) and every entry validated
 * before anything points into the mapping. */
#include "safetensors.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct st_meta {
    char *key, *value;
} st_meta;

struct slm_safetensors {
    char *path;
    slm_storage *map;
    size_t data_offset, data_size;
    slm_st_tensor_info *tensors;   /* name and dtype_name owned (name malloc'd) */
    int64_t n_tensors;
    st_meta *meta;
    int64_t n_meta;
};

/* The format's dtypes with their element sizes; slm is the slm dtype or -1. */
static const struct {
    const char *name;
    size_t size;
    int slm;
} dtypes[] = {
    {"F32", 4, SLM_DTYPE_F32}, {"F16", 2, SLM_DTYPE_F16}, {"BF16", 2, SLM_DTYPE_BF16},
    {"I8", 1, SLM_DTYPE_I8}, {"I16", 2, SLM_DTYPE_I16}, {"I32", 4, SLM_DTYPE_I32},
    {"F64", 8, -1}, {"I64", 8, -1}, {"U64", 8, -1}, {"U32", 4, -1}, {"U16", 2, -1},
    {"U8", 1, -1}, {"BOOL", 1, -1}, {"F8_E4M3", 1, -1}, {"F8_E5M2", 1, -1},
    {"F8_E8M0", 1, -1},
};
#define N_ST_DTYPES (sizeof dtypes / sizeof dtypes[0])

static uint64_t le_u64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

void slm_safetensors_close(slm_safetensors *f)
{
    if (!f) return;
    for (int64_t i = 0; i < f->n_tensors; i++) free((char *)f->tensors[i].name);
    for (int64_t i = 0; i < f->n_meta; i++) {
        free(f->meta[i].key);
        free(f->meta[i].value);
    }
    free(f->tensors);
    free(f->meta);
    slm_storage_unref(f->map);
    free(f->path);
    free(f);
}

static int cmp_meta(const void *a, const void *b)
{
    return strcmp(((const st_meta *)a)->key, ((const st_meta *)b)->key);
}

/* Data order, as the format's library sorts (begin, end): an empty tensor
 * comes before one starting at the same offset. */
static int cmp_tensor(const void *a, const void *b)
{
    const slm_st_tensor_info *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return strcmp(x->name, y->name);
}

/* The tensors, in data order, must tile the data section exactly: each
 * begins where the previous one ends, the first at 0, the last at the end
 * of the file. The format's own library refuses anything else (overlapping
 * or gapped offsets: InvalidOffset; bytes after the last tensor:
 * MetadataIncompleteBuffer), so a file it would not read is not read here. */
static slm_status check_tiling(const slm_safetensors *f, slm_error *err)
{
    uint64_t at = 0;
    for (int64_t i = 0; i < f->n_tensors; i++) {
        const slm_st_tensor_info *t = &f->tensors[i];
        uint64_t end = t->offset + t->nbytes;
        if (t->offset < at)
            return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': data_offsets [%" PRIu64 ", %"
                                 PRIu64 "] overlap tensor '%.100s', which ends at %" PRIu64,
                                 f->path, t->name, t->offset, end, f->tensors[i - 1].name, at);
        if (t->offset > at)
            return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': data_offsets [%" PRIu64 ", %"
                                 PRIu64 "] leave bytes %" PRIu64 "..%" PRIu64 " of the data section "
                                 "to no tensor", f->path, t->name, t->offset, end, at, t->offset - 1);
        at = end;
    }
    if (at != f->data_size)
        return slm_error_set(err, SLM_EFORMAT, "%s: the data section has %zu bytes, the tensors hold "
                             "%" PRIu64, f->path, f->data_size, at);
    return SLM_OK;
}

static slm_status read_metadata(slm_safetensors *f, json_t *m, slm_error *err)
{
    const char *k;
    json_t *v;
    if (!json_is_object(m))
        return slm_error_set(err, SLM_EFORMAT, "%s: __metadata__: not a JSON object", f->path);
    json_object_foreach(m, k, v)
        if (!json_is_string(v))
            return slm_error_set(err, SLM_EFORMAT, "%s: __metadata__: the value of '%.100s' is "
                                 "not a string", f->path, k);
    size_t n = json_object_size(m);
    if (n && !(f->meta = calloc(n, sizeof *f->meta)))
        return slm_error_set(err, SLM_ENOMEM, "%s: out of memory", f->path);
    json_object_foreach(m, k, v) {
        st_meta *e = &f->meta[f->n_meta++];
        e->key = strdup(k);
        e->value = strdup(json_string_value(v));
        if (!e->key || !e->value)
            return slm_error_set(err, SLM_ENOMEM, "%s: out of memory", f->path);
    }
    qsort(f->meta, n, sizeof *f->meta, cmp_meta);
    return SLM_OK;
}

/* Validates one header entry into ti (ti->name already set). */
static slm_status read_entry(slm_safetensors *f, slm_st_tensor_info *ti, json_t *e,
                             slm_error *err)
{
    const char *name = ti->name;
    if (!json_is_object(e))
        return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': entry is not a JSON object",
                             f->path, name);
    json_t *dt = json_object_get(e, "dtype");
    if (!json_is_string(dt))
        return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': dtype is missing or not a "
                             "string", f->path, name);
    size_t d = 0;
    while (d < N_ST_DTYPES && strcmp(dtypes[d].name, json_string_value(dt)) != 0) d++;
    if (d == N_ST_DTYPES)
        return slm_error_set(err, SLM_EUNSUPPORTED, "%s: tensor '%.100s': unknown dtype '%.32s'",
                             f->path, name, json_string_value(dt));
    ti->dtype_name = dtypes[d].name;
    ti->supported = dtypes[d].slm >= 0;
    ti->dtype = ti->supported ? (slm_dtype)dtypes[d].slm : SLM_DTYPE_F32;
    json_t *shape = json_object_get(e, "shape");
    if (!json_is_array(shape))
        return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': shape is missing or not an "
                             "array", f->path, name);
    size_t nd = json_array_size(shape);
    if (nd > SLM_MAX_DIMS)
        return slm_error_set(err, SLM_EUNSUPPORTED, "%s: tensor '%.100s': shape has %zu "
                             "dimensions (at most %d are supported)", f->path, name, nd,
                             SLM_MAX_DIMS);
    ti->ndim = (int)nd;
    uint64_t numel = 1;
    int overflow = 0;
    for (size_t i = 0; i < nd; i++) {
        json_t *x = json_array_get(shape, i);
        if (!json_is_integer(x) || json_integer_value(x) < 0)
            return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': shape[%zu] is not a "
                                 "non-negative integer", f->path, name, i);
        ti->shape[i] = (int64_t)json_integer_value(x);
        if (ti->shape[i] != 0 && numel > (uint64_t)INT64_MAX / (uint64_t)ti->shape[i])
            overflow = 1;
        else numel *= (uint64_t)ti->shape[i];
    }
    if (overflow || numel > SIZE_MAX / dtypes[d].size)
        return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': the number of elements of "
                             "its shape overflows", f->path, name);
    json_t *offs = json_object_get(e, "data_offsets");
    json_t *b = json_array_get(offs, 0), *en = json_array_get(offs, 1);
    if (!json_is_array(offs) || json_array_size(offs) != 2 || !json_is_integer(b) ||
        !json_is_integer(en) || json_integer_value(b) < 0 || json_integer_value(en) < 0)
        return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': data_offsets is missing or "
                             "not two non-negative integers", f->path, name);
    uint64_t begin = (uint64_t)json_integer_value(b), end = (uint64_t)json_integer_value(en);
    if (begin > end)
        return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': data_offsets [%" PRIu64
                             ", %" PRIu64 "]: begin is after end", f->path, name, begin, end);
    if (end > f->data_size)
        return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': data_offsets [%" PRIu64
                             ", %" PRIu64 "] are past the end of the data section (%zu bytes)",
                             f->path, name, begin, end, f->data_size);
    uint64_t need = numel * dtypes[d].size;
    if (end - begin != need)
        return slm_error_set(err, SLM_EFORMAT, "%s: tensor '%.100s': data_offsets [%" PRIu64
                             ", %" PRIu64 "] hold %" PRIu64 " bytes but %" PRIu64 " %s elements "
                             "need %" PRIu64, f->path, name, begin, end, end - begin, numel,
                             dtypes[d].name, need);
    ti->offset = begin;
    ti->nbytes = (size_t)need;
    return SLM_OK;
}

static slm_status parse(slm_safetensors *f, slm_error *err)
{
    const unsigned char *p = f->map->data;
    size_t size = f->map->size;
    if (size < 8)
        return slm_error_set(err, SLM_EFORMAT, "%s: header length: truncated: needs 8 bytes, "
                             "the file has %zu", f->path, size);
    uint64_t n = le_u64(p);
    /* the format's own limit (MAX_HEADER_SIZE): the JSON is parsed into
     * memory, so its size bounds what a header can make this reader hold */
    if (n > SLM_SAFETENSORS_MAX_HEADER)
        return slm_error_set(err, SLM_EFORMAT, "%s: header length %" PRIu64 " is over the format's "
                             "limit of %d bytes", f->path, n, SLM_SAFETENSORS_MAX_HEADER);
    if (n > size - 8)
        return slm_error_set(err, SLM_EFORMAT, "%s: header length %" PRIu64 " is past the end "
                             "of the file (%zu bytes)", f->path, n, size);
    f->data_offset = 8 + (size_t)n;
    f->data_size = size - f->data_offset;
    json_error_t jerr;
    json_t *root = json_loadb((const char *)p + 8, (size_t)n, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return slm_error_set(err, SLM_EFORMAT, "%s: header: invalid JSON: %s (line %d, column "
                             "%d)", f->path, jerr.text, jerr.line, jerr.column);
    slm_status st = SLM_OK;
    const char *k;
    json_t *v;
    size_t cap = json_is_object(root) ? json_object_size(root) : 0;
    if (!json_is_object(root))
        st = slm_error_set(err, SLM_EFORMAT, "%s: header: not a JSON object", f->path);
    else if (cap && !(f->tensors = calloc(cap, sizeof *f->tensors)))
        st = slm_error_set(err, SLM_ENOMEM, "%s: out of memory", f->path);
    if (st == SLM_OK) {
        json_object_foreach(root, k, v) {
            if (strcmp(k, "__metadata__") == 0) st = read_metadata(f, v, err);
            else {
                slm_st_tensor_info *ti = &f->tensors[f->n_tensors];
                if (!(ti->name = strdup(k)))
                    st = slm_error_set(err, SLM_ENOMEM, "%s: out of memory", f->path);
                else {
                    f->n_tensors++;
                    st = read_entry(f, ti, v, err);
                }
            }
            if (st != SLM_OK) break;
        }
    }
    json_decref(root);
    if (st == SLM_OK && f->n_tensors)
        qsort(f->tensors, (size_t)f->n_tensors, sizeof *f->tensors, cmp_tensor);
    if (st == SLM_OK) st = check_tiling(f, err);
    return st;
}

slm_safetensors *slm_safetensors_open(const char *path, slm_error *err)
{
    slm_safetensors *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
        free(f);
        return NULL;
    }
    slm_error local;
    if (!err) err = &local;
    f->map = slm_storage_map_file(path, err);
    if (!f->map || parse(f, err) != SLM_OK) {
        slm_safetensors_close(f);
        return NULL;
    }
    return f;
}

const char *slm_safetensors_path(const slm_safetensors *f) { return f->path; }
size_t slm_safetensors_data_offset(const slm_safetensors *f) { return f->data_offset; }
int64_t slm_safetensors_n_tensors(const slm_safetensors *f) { return f->n_tensors; }
int64_t slm_safetensors_n_meta(const slm_safetensors *f) { return f->n_meta; }

const slm_st_tensor_info *slm_safetensors_tensor_info(const slm_safetensors *f, int64_t i)
{
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

int64_t slm_safetensors_find_tensor(const slm_safetensors *f, const char *name)
{
    for (int64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return i;
    return -1;
}

const char *slm_safetensors_meta_key(const slm_safetensors *f, int64_t i)
{
    return i >= 0 && i < f->n_meta ? f->meta[i].key : NULL;
}

const char *slm_safetensors_meta_value(const slm_safetensors *f, int64_t i)
{
    return i >= 0 && i < f->n_meta ? f->meta[i].value : NULL;
}

slm_tensor *slm_safetensors_tensor(const slm_safetensors *f, int64_t i, slm_error *err)
{
    const slm_st_tensor_info *ti = slm_safetensors_tensor_info(f, i);
    if (!ti) {
        slm_error_set(err, SLM_ERANGE, "%s: tensor index %" PRId64 " out of range (%" PRId64
                      " tensors)", f->path, i, f->n_tensors);
        return NULL;
    }
    if (!ti->supported) {
        slm_error_set(err, SLM_EUNSUPPORTED, "%s: tensor '%.100s': dtype %s is not supported "
                      "(F32, F16, BF16, I8, I16 and I32 are)", f->path, ti->name, ti->dtype_name);
        return NULL;
    }
    int64_t one = 1;
    int ndim = ti->ndim ? ti->ndim : 1;
    const int64_t *shape = ti->ndim ? ti->shape : &one;
    for (int d = 0; d < ti->ndim; d++)
        if (ti->shape[d] == 0) {
            slm_error_set(err, SLM_EUNSUPPORTED, "%s: tensor '%.100s': shape[%d] is 0 (empty "
                          "tensors are not supported)", f->path, ti->name, d);
            return NULL;
        }
    size_t at = f->data_offset + (size_t)ti->offset;
    size_t esz = slm_dtype_get((int)ti->dtype)->type_size;
    if (at % esz == 0)
        return slm_tensor_from_storage(f->map, at, ti->dtype, ndim, shape, err);
    /* misaligned data: the kernels expect aligned elements, so copy */
    slm_tensor *t = slm_tensor_new(ti->dtype, ndim, shape, err);
    if (t) memcpy(slm_tensor_data(t), f->map->data + at, ti->nbytes);
    return t;
}
