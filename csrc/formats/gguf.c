/* GGUF reader: validates the whole header of a read-only mapping at open, so
 * that every accessor afterwards is a plain lookup. The layout is documented
 * in gguf.h; the reference followed is ggml's gguf.cpp / docs/gguf.md.
 *
 * Hostile input: every count is checked against the bytes left in the file
 * before anything is allocated for it, every length before a pointer is
 * made, and every error names the file, the field and the problem. */
#include "gguf.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Little-endian loads (GGUF is little-endian whatever the host). */
static uint32_t le_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le_u64(const unsigned char *p)
{
    return (uint64_t)le_u32(p) | (uint64_t)le_u32(p + 4) << 32;
}

/* Open-addressing hash index from names to item ids, built once a section
 * is parsed: it finds duplicates at open and serves find_key/find_tensor. */
typedef struct name_index {
    int64_t *slots;                /* -1 = empty */
    size_t mask;
} name_index;

typedef struct gguf_kv {
    size_t key_off, key_len;       /* into g->names (NUL-terminated there) */
    slm_gguf_type type;
    const unsigned char *data;     /* scalar bytes, string bytes or array elements */
    uint64_t len;                  /* string length or array element count */
    slm_gguf_type arr_type;
    size_t str_first;              /* string arrays: first index into g->str_offs */
} gguf_kv;

typedef struct gguf_tensor {
    size_t name_off, name_len;
    slm_gguf_tensor_info info;     /* info.name set once the name pool is final */
} gguf_tensor;

struct slm_gguf {
    char *path;
    slm_storage *map;
    uint32_t version;
    size_t alignment;
    size_t data_offset;
    int64_t n_kv, n_tensors;
    gguf_kv *kvs;
    gguf_tensor *tensors;
    char *names;                   /* pool of NUL-terminated keys and tensor names */
    size_t names_len, names_cap;
    uint64_t *str_offs;            /* file offsets of string-array elements' bytes */
    size_t str_len, str_cap;
    size_t kv_cap, tensor_cap;
    name_index key_index, tensor_index;
};

/* Name and length of item id of the key (tensors = 0) or tensor section. */
static const char *item_name(const slm_gguf *g, int tensors, int64_t id, size_t *len)
{
    if (tensors) {
        *len = g->tensors[id].name_len;
        return g->names + g->tensors[id].name_off;
    }
    *len = g->kvs[id].key_len;
    return g->names + g->kvs[id].key_off;
}

static uint64_t name_hash(const char *s, size_t n)
{
    uint64_t h = 14695981039346656037u;         /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211u;
    return h;
}

/* Slot holding name, or the empty slot where it belongs. */
static size_t index_slot(const slm_gguf *g, const name_index *ix, int tensors,
                         const char *name, size_t len)
{
    size_t k = (size_t)name_hash(name, len) & ix->mask;
    for (;; k = (k + 1) & ix->mask) {
        int64_t id = ix->slots[k];
        size_t l;
        if (id < 0) return k;
        const char *s = item_name(g, tensors, id, &l);
        if (l == len && memcmp(s, name, len) == 0) return k;
    }
}

/* Indexes the n items of a section; returns the first duplicate's id (and
 * its earlier twin in *prev), -1 when all are distinct, -2 without memory. */
static int64_t index_build(const slm_gguf *g, name_index *ix, int tensors, int64_t n,
                           int64_t *prev)
{
    size_t cap = 16;
    while (cap < 2 * (size_t)n) cap *= 2;   /* n is bounded by the file size */
    ix->slots = malloc(cap * sizeof *ix->slots);
    if (!ix->slots) return -2;
    ix->mask = cap - 1;
    memset(ix->slots, 0xff, cap * sizeof *ix->slots);
    for (int64_t id = 0; id < n; id++) {
        size_t len;
        const char *s = item_name(g, tensors, id, &len);
        size_t k = index_slot(g, ix, tensors, s, len);
        if (ix->slots[k] >= 0) {
            *prev = ix->slots[k];
            return id;
        }
        ix->slots[k] = id;
    }
    return -1;
}

static int64_t index_find(const slm_gguf *g, const name_index *ix, int tensors,
                          const char *name)
{
    if (!ix->slots) return -1;
    return ix->slots[index_slot(g, ix, tensors, name, strlen(name))];
}

/* Parser state: a cursor over the mapping plus the field being read, which
 * every message names. */
typedef struct parser {
    const unsigned char *base;
    size_t size, pos;
    const char *path;
    slm_error *err;
    char what[192];
} parser;

static const size_t type_sizes[] = {
    [SLM_GGUF_UINT8] = 1, [SLM_GGUF_INT8] = 1, [SLM_GGUF_UINT16] = 2,
    [SLM_GGUF_INT16] = 2, [SLM_GGUF_UINT32] = 4, [SLM_GGUF_INT32] = 4,
    [SLM_GGUF_FLOAT32] = 4, [SLM_GGUF_BOOL] = 1, [SLM_GGUF_STRING] = 0,
    [SLM_GGUF_ARRAY] = 0, [SLM_GGUF_UINT64] = 8, [SLM_GGUF_INT64] = 8,
    [SLM_GGUF_FLOAT64] = 8,
};

static const char *const type_names[] = {
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "str", "arr",
    "u64", "i64", "f64",
};

const char *slm_gguf_type_name(slm_gguf_type t)
{
    return (unsigned)t <= SLM_GGUF_FLOAT64 ? type_names[t] : "?";
}

int slm_gguf_type_from_name(const char *name)
{
    for (int t = 0; t <= SLM_GGUF_FLOAT64; t++)
        if (strcmp(type_names[t], name) == 0) return t;
    return -1;
}

size_t slm_gguf_type_size(slm_gguf_type t)
{
    return (unsigned)t <= SLM_GGUF_FLOAT64 ? type_sizes[t] : 0;
}

static slm_status truncated(parser *ps, uint64_t n)
{
    return slm_error_set(ps->err, SLM_EFORMAT,
                         "%s: %s: truncated: needs %" PRIu64 " bytes at offset %zu, "
                         "the file has %zu bytes", ps->path, ps->what, n, ps->pos, ps->size);
}

static slm_status read_u32(parser *ps, uint32_t *v)
{
    if (ps->size - ps->pos < 4) return truncated(ps, 4);
    *v = le_u32(ps->base + ps->pos);
    ps->pos += 4;
    return SLM_OK;
}

static slm_status read_u64(parser *ps, uint64_t *v)
{
    if (ps->size - ps->pos < 8) return truncated(ps, 8);
    *v = le_u64(ps->base + ps->pos);
    ps->pos += 8;
    return SLM_OK;
}

/* A length-prefixed string left in the mapping; *s points at its bytes. */
static slm_status read_str(parser *ps, const unsigned char **s, uint64_t *len)
{
    slm_status st = read_u64(ps, len);
    if (st != SLM_OK) return st;
    if (*len > ps->size - ps->pos)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: %s: string length %" PRIu64 " is past the end of the file "
                             "(offset %zu, the file has %zu bytes)",
                             ps->path, ps->what, *len, ps->pos, ps->size);
    *s = ps->base + ps->pos;
    ps->pos += (size_t)*len;
    return SLM_OK;
}

/* Copies a key or tensor name into the pool; names are C strings for the
 * API, so an embedded NUL is a format error. */
static slm_status pool_name(slm_gguf *g, parser *ps, const unsigned char *s,
                            uint64_t len, size_t *off)
{
    if (memchr(s, 0, (size_t)len))
        return slm_error_set(ps->err, SLM_EFORMAT, "%s: %s: name contains a NUL byte",
                             ps->path, ps->what);
    /* len < file size, so this cannot overflow */
    size_t need = g->names_len + (size_t)len + 1;
    if (need > g->names_cap) {
        size_t cap = g->names_cap ? g->names_cap : 1024;
        while (cap < need) cap *= 2;
        char *p = realloc(g->names, cap);
        if (!p) return slm_error_set(ps->err, SLM_ENOMEM, "%s: out of memory", ps->path);
        g->names = p;
        g->names_cap = cap;
    }
    memcpy(g->names + g->names_len, s, (size_t)len);
    g->names[g->names_len + len] = '\0';
    *off = g->names_len;
    g->names_len = need;
    return SLM_OK;
}

/* Shortens a name for messages so that a hostile 1 MB key still yields a
 * readable message. */
static const char *short_name(const char *s, char *buf, size_t n)
{
    size_t len = strlen(s);
    if (len < n) return s;
    memcpy(buf, s, n - 4);
    memcpy(buf + n - 4, "...", 4);
    return buf;
}

static slm_status read_array(slm_gguf *g, parser *ps, gguf_kv *kv)
{
    uint32_t et;
    uint64_t n;
    slm_status st = read_u32(ps, &et);
    if (st == SLM_OK) st = read_u64(ps, &n);
    if (st != SLM_OK) return st;
    if (et == SLM_GGUF_ARRAY)
        return slm_error_set(ps->err, SLM_EUNSUPPORTED,
                             "%s: %s: nested arrays are not supported", ps->path, ps->what);
    if (et > SLM_GGUF_FLOAT64)
        return slm_error_set(ps->err, SLM_EFORMAT, "%s: %s: unknown array element type %" PRIu32,
                             ps->path, ps->what, et);
    kv->arr_type = (slm_gguf_type)et;
    kv->len = n;
    size_t left = ps->size - ps->pos;
    size_t esz = type_sizes[et] ? type_sizes[et] : 8;  /* a string is >= its 8-byte length */
    if (n > left / esz)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: %s: array of %" PRIu64 " %s elements is past the end of the "
                             "file (offset %zu, the file has %zu bytes)",
                             ps->path, ps->what, n, type_names[et], ps->pos, ps->size);
    kv->data = ps->base + ps->pos;
    if (et != SLM_GGUF_STRING) {
        if (et == SLM_GGUF_BOOL)
            for (uint64_t j = 0; j < n; j++)
                if (kv->data[j] > 1)
                    return slm_error_set(ps->err, SLM_EFORMAT,
                                         "%s: %s: element %" PRIu64 ": invalid bool byte %u "
                                         "(must be 0 or 1)", ps->path, ps->what, j, kv->data[j]);
        ps->pos += (size_t)n * esz;
        return SLM_OK;
    }
    /* string array: index each element so that slm_gguf_arr_str is O(1) */
    if (g->str_len + n > g->str_cap) {
        size_t cap = g->str_cap ? g->str_cap : 256;
        while (cap < g->str_len + n) cap *= 2;
        uint64_t *p = realloc(g->str_offs, cap * sizeof *p);
        if (!p) return slm_error_set(ps->err, SLM_ENOMEM, "%s: out of memory", ps->path);
        g->str_offs = p;
        g->str_cap = cap;
    }
    kv->str_first = g->str_len;
    size_t what_len = strlen(ps->what);
    for (uint64_t j = 0; j < n; j++) {
        const unsigned char *s;
        uint64_t len;
        left = ps->size - ps->pos;
        if (left < 8 || le_u64(ps->base + ps->pos) > left - 8) {
            /* name the element only on failure: formatting it for each of
             * 150k tokens would cost more than the parse */
            snprintf(ps->what + what_len, sizeof ps->what - what_len, " element %" PRIu64, j);
            return read_str(ps, &s, &len);
        }
        read_str(ps, &s, &len);
        g->str_offs[g->str_len++] = (uint64_t)(s - ps->base);
    }
    return SLM_OK;
}

/* Grows an array of items to hold one more (amortized doubling), so that
 * memory follows what the file really holds, not what its counts claim. */
static int grow(void **arr, size_t *cap, size_t n, size_t item)
{
    if (n < *cap) return 0;
    size_t c = *cap ? *cap * 2 : 16;
    void *p = realloc(*arr, c * item);
    if (!p) return -1;
    *arr = p;
    *cap = c;
    return 0;
}

static slm_status read_kv(slm_gguf *g, parser *ps, int64_t i)
{
    if (grow((void **)&g->kvs, &g->kv_cap, (size_t)i, sizeof *g->kvs) != 0)
        return slm_error_set(ps->err, SLM_ENOMEM, "%s: out of memory", ps->path);
    gguf_kv *kv = &g->kvs[i];
    memset(kv, 0, sizeof *kv);
    const unsigned char *s;
    uint64_t len;
    char sn[96];
    snprintf(ps->what, sizeof ps->what, "key %" PRId64, i);
    slm_status st = read_str(ps, &s, &len);
    if (st == SLM_OK) st = pool_name(g, ps, s, len, &kv->key_off);
    if (st != SLM_OK) return st;
    kv->key_len = (size_t)len;
    g->n_kv = i + 1;
    snprintf(ps->what, sizeof ps->what, "key %" PRId64 " ('%s')", i,
             short_name(g->names + kv->key_off, sn, sizeof sn));
    uint32_t t;
    st = read_u32(ps, &t);
    if (st != SLM_OK) return st;
    if (t > SLM_GGUF_FLOAT64)
        return slm_error_set(ps->err, SLM_EFORMAT, "%s: %s: unknown value type %" PRIu32,
                             ps->path, ps->what, t);
    kv->type = (slm_gguf_type)t;
    if (t == SLM_GGUF_STRING) return read_str(ps, &kv->data, &kv->len);
    if (t == SLM_GGUF_ARRAY) return read_array(g, ps, kv);
    if (ps->size - ps->pos < type_sizes[t]) return truncated(ps, type_sizes[t]);
    kv->data = ps->base + ps->pos;
    kv->len = 1;
    if (t == SLM_GGUF_BOOL && kv->data[0] > 1)
        return slm_error_set(ps->err, SLM_EFORMAT, "%s: %s: invalid bool byte %u (must be 0 or 1)",
                             ps->path, ps->what, kv->data[0]);
    ps->pos += type_sizes[t];
    return SLM_OK;
}

/* general.alignment: a u32 (the reference refuses other types), a power
 * of two. */
static slm_status read_alignment(slm_gguf *g, parser *ps)
{
    g->alignment = SLM_GGUF_DEFAULT_ALIGNMENT;
    int64_t i = slm_gguf_find_key(g, "general.alignment");
    if (i < 0) return SLM_OK;
    if (g->kvs[i].type != SLM_GGUF_UINT32)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: general.alignment: has type %s (must be u32)",
                             ps->path, type_names[g->kvs[i].type]);
    uint32_t a = le_u32(g->kvs[i].data);
    if (a == 0 || (a & (a - 1)) != 0 || a > SLM_GGUF_MAX_ALIGNMENT)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: general.alignment: %" PRIu32 " is not a power of two "
                             "between 1 and %d", ps->path, a, SLM_GGUF_MAX_ALIGNMENT);
    g->alignment = a;
    return SLM_OK;
}

static slm_status read_tensor_info(slm_gguf *g, parser *ps, int64_t i)
{
    if (grow((void **)&g->tensors, &g->tensor_cap, (size_t)i, sizeof *g->tensors) != 0)
        return slm_error_set(ps->err, SLM_ENOMEM, "%s: out of memory", ps->path);
    gguf_tensor *t = &g->tensors[i];
    memset(t, 0, sizeof *t);
    const unsigned char *s;
    uint64_t len;
    char sn[96];
    slm_status st;
    snprintf(ps->what, sizeof ps->what, "tensor %" PRId64, i);
    if ((st = read_str(ps, &s, &len)) != SLM_OK) return st;
    if ((st = pool_name(g, ps, s, len, &t->name_off)) != SLM_OK) return st;
    t->name_len = (size_t)len;
    g->n_tensors = i + 1;
    snprintf(ps->what, sizeof ps->what, "tensor %" PRId64 " ('%s')", i,
             short_name(g->names + t->name_off, sn, sizeof sn));
    uint32_t nd;
    if ((st = read_u32(ps, &nd)) != SLM_OK) return st;
    if (nd < 1 || nd > SLM_MAX_DIMS)
        return slm_error_set(ps->err, SLM_EFORMAT, "%s: %s: n_dims %" PRIu32 " is out of range "
                             "(1 to %d)", ps->path, ps->what, nd, SLM_MAX_DIMS);
    slm_gguf_tensor_info *ti = &t->info;
    ti->ndim = (int)nd;
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; d++) {
        uint64_t ne;
        if ((st = read_u64(ps, &ne)) != SLM_OK) return st;
        if (ne == 0 || ne > INT64_MAX)
            return slm_error_set(ps->err, SLM_EFORMAT, "%s: %s: ne[%" PRIu32 "] is %" PRId64
                                 " (must be positive)", ps->path, ps->what, d, (int64_t)ne);
        if (ne > (uint64_t)INT64_MAX / numel)
            return slm_error_set(ps->err, SLM_EFORMAT,
                                 "%s: %s: the number of elements overflows (ne[%" PRIu32 "] = %"
                                 PRIu64 ")", ps->path, ps->what, d, ne);
        numel *= ne;
        ti->shape[nd - 1 - d] = (int64_t)ne;   /* ne[0] innermost = last here */
    }
    uint32_t type;
    if ((st = read_u32(ps, &type)) != SLM_OK) return st;
    const slm_dtype_traits *tr = slm_dtype_get((int)type);
    if (!tr)
        return slm_error_set(ps->err, SLM_EUNSUPPORTED, "%s: %s: unknown dtype id %" PRIu32,
                             ps->path, ps->what, type);
    ti->dtype = (slm_dtype)type;
    if (ti->shape[nd - 1] % tr->block_size != 0)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: %s: ne[0] = %" PRId64 " is not a multiple of the %s block "
                             "size %" PRId64, ps->path, ps->what, ti->shape[nd - 1], tr->name,
                             tr->block_size);
    slm_error tmp;
    if (slm_shape_check(ti->dtype, ti->ndim, ti->shape, &ti->nbytes, &tmp) != SLM_OK)
        return slm_error_set(ps->err, SLM_EFORMAT, "%s: %s: %s", ps->path, ps->what, tmp.msg);
    if ((st = read_u64(ps, &ti->offset)) != SLM_OK) return st;
    if (ti->offset % g->alignment != 0)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: %s: data offset %" PRIu64 " is not a multiple of the "
                             "alignment %zu", ps->path, ps->what, ti->offset, g->alignment);
    return SLM_OK;
}

/* Tensor data must lie inside the file once the data section is placed. */
static slm_status check_tensor_data(slm_gguf *g, parser *ps, int64_t i)
{
    const slm_gguf_tensor_info *ti = &g->tensors[i].info;
    char sn[96];
    uint64_t start = (uint64_t)g->data_offset + ti->offset;
    if (start < ti->offset || start > ps->size || ti->nbytes > ps->size - start)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: tensor %" PRId64 " ('%s'): data offset %" PRIu64 " + %zu bytes "
                             "is past the end of the file (%zu bytes)", ps->path, i,
                             short_name(g->names + g->tensors[i].name_off, sn, sizeof sn),
                             start, ti->nbytes, ps->size);
    return SLM_OK;
}

static slm_status parse(slm_gguf *g, parser *ps)
{
    slm_status st;
    uint32_t magic;
    uint64_t n_tensors, n_kv;
    snprintf(ps->what, sizeof ps->what, "magic");
    if ((st = read_u32(ps, &magic)) != SLM_OK) return st;
    if (memcmp(ps->base, "GGUF", 4) != 0)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: not a GGUF file (magic bytes %02x %02x %02x %02x, expected "
                             "'GGUF')", ps->path, ps->base[0], ps->base[1], ps->base[2],
                             ps->base[3]);
    snprintf(ps->what, sizeof ps->what, "version");
    if ((st = read_u32(ps, &g->version)) != SLM_OK) return st;
    if (g->version == 1)
        return slm_error_set(ps->err, SLM_EUNSUPPORTED,
                             "%s: version: GGUF version 1 is not supported (only 2 and 3)",
                             ps->path);
    if (g->version != 2 && g->version != 3)
        return slm_error_set(ps->err, SLM_EUNSUPPORTED,
                             "%s: version: unknown GGUF version %" PRIu32 " (only 2 and 3 are "
                             "supported)", ps->path, g->version);
    snprintf(ps->what, sizeof ps->what, "n_tensors");
    if ((st = read_u64(ps, &n_tensors)) != SLM_OK) return st;
    snprintf(ps->what, sizeof ps->what, "n_kv");
    if ((st = read_u64(ps, &n_kv)) != SLM_OK) return st;
    /* Each key-value takes at least 13 bytes (key length, type, one byte of
     * value) and each tensor info at least 32, so larger counts cannot be
     * real: refuse them before allocating anything for them. */
    size_t left = ps->size - ps->pos;
    if (n_kv > left / 13)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: n_kv: %" PRIu64 " key-values cannot fit in the %zu bytes left "
                             "in the file", ps->path, n_kv, left);
    if (n_tensors > left / 32)
        return slm_error_set(ps->err, SLM_EFORMAT,
                             "%s: n_tensors: %" PRIu64 " tensor infos cannot fit in the %zu bytes "
                             "left in the file", ps->path, n_tensors, left);
    int64_t dup, prev = 0;
    for (int64_t i = 0; i < (int64_t)n_kv; i++)
        if ((st = read_kv(g, ps, i)) != SLM_OK) return st;
    if ((dup = index_build(g, &g->key_index, 0, g->n_kv, &prev)) == -2)
        return slm_error_set(ps->err, SLM_ENOMEM, "%s: out of memory", ps->path);
    if (dup >= 0)
        return slm_error_set(ps->err, SLM_EFORMAT, "%s: key %" PRId64 " ('%s'): duplicate key "
                             "(also key %" PRId64 ")", ps->path, dup,
                             g->names + g->kvs[dup].key_off, prev);
    if ((st = read_alignment(g, ps)) != SLM_OK) return st;
    for (int64_t i = 0; i < (int64_t)n_tensors; i++)
        if ((st = read_tensor_info(g, ps, i)) != SLM_OK) return st;
    if ((dup = index_build(g, &g->tensor_index, 1, g->n_tensors, &prev)) == -2)
        return slm_error_set(ps->err, SLM_ENOMEM, "%s: out of memory", ps->path);
    if (dup >= 0)
        return slm_error_set(ps->err, SLM_EFORMAT, "%s: tensor %" PRId64 " ('%s'): duplicate "
                             "tensor name (also tensor %" PRId64 ")", ps->path, dup,
                             g->names + g->tensors[dup].name_off, prev);
    /* the data section starts at the next multiple of the alignment; as in
     * the reference, a file without tensors has no padding after its header */
    size_t pad = (g->alignment - ps->pos % g->alignment) % g->alignment;
    g->data_offset = ps->pos + (g->n_tensors ? pad : 0);
    for (int64_t i = 0; i < g->n_tensors; i++)
        if ((st = check_tensor_data(g, ps, i)) != SLM_OK) return st;
    for (int64_t i = 0; i < g->n_tensors; i++)
        g->tensors[i].info.name = g->names + g->tensors[i].name_off;
    return SLM_OK;
}

slm_gguf *slm_gguf_open(const char *path, slm_error *err)
{
    slm_gguf *g = calloc(1, sizeof *g);
    if (!g) {
        slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
        return NULL;
    }
    g->path = strdup(path);
    if (!g->path) {
        slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
        free(g);
        return NULL;
    }
    g->map = slm_storage_map_file(path, err);
    if (!g->map) {
        slm_gguf_close(g);
        return NULL;
    }
    slm_error local;
    parser ps = {g->map->data, g->map->size, 0, path, err ? err : &local, ""};
    if (parse(g, &ps) != SLM_OK) {
        slm_gguf_close(g);
        return NULL;
    }
    return g;
}

void slm_gguf_close(slm_gguf *g)
{
    if (!g) return;
    slm_storage_unref(g->map);
    free(g->path);
    free(g->kvs);
    free(g->tensors);
    free(g->names);
    free(g->str_offs);
    free(g->key_index.slots);
    free(g->tensor_index.slots);
    free(g);
}

uint32_t slm_gguf_version(const slm_gguf *g) { return g->version; }
size_t slm_gguf_alignment(const slm_gguf *g) { return g->alignment; }
size_t slm_gguf_data_offset(const slm_gguf *g) { return g->data_offset; }
const char *slm_gguf_path(const slm_gguf *g) { return g->path; }
slm_storage *slm_gguf_storage(const slm_gguf *g) { return g->map; }

int64_t slm_gguf_n_kv(const slm_gguf *g) { return g->n_kv; }

static const gguf_kv *kv_at(const slm_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_kv ? &g->kvs[i] : NULL;
}

const char *slm_gguf_key(const slm_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv ? g->names + kv->key_off : NULL;
}

int64_t slm_gguf_find_key(const slm_gguf *g, const char *key)
{
    return index_find(g, &g->key_index, 0, key);
}

slm_gguf_type slm_gguf_kv_type(const slm_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv ? kv->type : (slm_gguf_type)-1;
}

/* Integer value of a scalar of integer or bool type, as a sign flag and
 * magnitude-preserving pair so that u64 > INT64_MAX is representable. */
static int scalar_int(const gguf_kv *kv, int64_t *s, uint64_t *u, int *neg)
{
    const unsigned char *p = kv->data;
    int64_t v;
    switch (kv->type) {
    case SLM_GGUF_UINT8: case SLM_GGUF_BOOL: v = p[0]; break;
    case SLM_GGUF_INT8: v = (int8_t)p[0]; break;
    case SLM_GGUF_UINT16: v = (uint16_t)(p[0] | p[1] << 8); break;
    case SLM_GGUF_INT16: v = (int16_t)(uint16_t)(p[0] | p[1] << 8); break;
    case SLM_GGUF_UINT32: v = le_u32(p); break;
    case SLM_GGUF_INT32: v = (int32_t)le_u32(p); break;
    case SLM_GGUF_INT64: v = (int64_t)le_u64(p); break;
    case SLM_GGUF_UINT64:
        *u = le_u64(p);
        *neg = 0;
        *s = (int64_t)*u;
        return 1;
    default: return 0;
    }
    *s = v;
    *neg = v < 0;
    *u = (uint64_t)v;
    return 1;
}

int64_t slm_gguf_get_int(const slm_gguf *g, int64_t i, int *ok)
{
    const gguf_kv *kv = kv_at(g, i);
    int64_t s;
    uint64_t u;
    int neg, good = kv && scalar_int(kv, &s, &u, &neg);
    if (good && kv->type == SLM_GGUF_UINT64 && u > INT64_MAX) good = 0;
    if (ok) *ok = good;
    return good ? s : 0;
}

uint64_t slm_gguf_get_uint(const slm_gguf *g, int64_t i, int *ok)
{
    const gguf_kv *kv = kv_at(g, i);
    int64_t s;
    uint64_t u;
    int neg, good = kv && scalar_int(kv, &s, &u, &neg) && !neg;
    if (ok) *ok = good;
    return good ? u : 0;
}

double slm_gguf_get_float(const slm_gguf *g, int64_t i, int *ok)
{
    const gguf_kv *kv = kv_at(g, i);
    int good = kv && (kv->type == SLM_GGUF_FLOAT32 || kv->type == SLM_GGUF_FLOAT64);
    if (ok) *ok = good;
    if (!good) return 0;
    if (kv->type == SLM_GGUF_FLOAT32) {
        uint32_t b = le_u32(kv->data);
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    uint64_t b = le_u64(kv->data);
    double d;
    memcpy(&d, &b, 8);
    return d;
}

const char *slm_gguf_get_str(const slm_gguf *g, int64_t i, size_t *len)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv || kv->type != SLM_GGUF_STRING) return NULL;
    if (len) *len = (size_t)kv->len;
    return (const char *)kv->data;
}

slm_gguf_type slm_gguf_arr_type(const slm_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == SLM_GGUF_ARRAY ? kv->arr_type : (slm_gguf_type)-1;
}

uint64_t slm_gguf_arr_len(const slm_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    return kv && kv->type == SLM_GGUF_ARRAY ? kv->len : 0;
}

const void *slm_gguf_arr_data(const slm_gguf *g, int64_t i)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv || kv->type != SLM_GGUF_ARRAY || kv->arr_type == SLM_GGUF_STRING) return NULL;
    return kv->data;
}

const char *slm_gguf_arr_str(const slm_gguf *g, int64_t i, uint64_t j, size_t *len)
{
    const gguf_kv *kv = kv_at(g, i);
    if (!kv || kv->type != SLM_GGUF_ARRAY || kv->arr_type != SLM_GGUF_STRING || j >= kv->len)
        return NULL;
    uint64_t off = g->str_offs[kv->str_first + j];
    if (len) *len = (size_t)le_u64(g->map->data + off - 8);
    return (const char *)g->map->data + off;
}

int64_t slm_gguf_n_tensors(const slm_gguf *g) { return g->n_tensors; }

const slm_gguf_tensor_info *slm_gguf_get_tensor_info(const slm_gguf *g, int64_t i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i].info : NULL;
}

int64_t slm_gguf_find_tensor(const slm_gguf *g, const char *name)
{
    return index_find(g, &g->tensor_index, 1, name);
}

slm_tensor *slm_gguf_tensor(const slm_gguf *g, int64_t i, slm_error *err)
{
    const slm_gguf_tensor_info *ti = slm_gguf_get_tensor_info(g, i);
    if (!ti) {
        slm_error_set(err, SLM_ERANGE, "%s: tensor index %" PRId64 " out of range (%" PRId64
                      " tensors)", g->path, i, g->n_tensors);
        return NULL;
    }
    size_t at = g->data_offset + (size_t)ti->offset;
    /* Kernels load elements (and a block's fp16/f32 scales) as aligned
     * values. Any general.alignment >= 8 guarantees that; a file written
     * with a smaller one may place data off that alignment: copy it then. */
    size_t tsz = slm_dtype_get((int)ti->dtype)->type_size;
    size_t need = tsz & (~tsz + 1);          /* lowest set bit of the size */
    if (need > 8) need = 8;
    if (at % need == 0)
        return slm_tensor_from_storage(g->map, at, ti->dtype, ti->ndim, ti->shape, err);
    slm_tensor *t = slm_tensor_new(ti->dtype, ti->ndim, ti->shape, err);
    if (t) memcpy(slm_tensor_data(t), g->map->data + at, ti->nbytes);
    return t;
}
