#include "rwkvcpp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RWKVCPP_MAGIC 0x67676d66

typedef struct rc_tensor {
    char *name;
    slm_dtype dtype;
    int ndim;
    int64_t shape[3];
    size_t src;      /* offset of the data in the file */
    size_t dst;      /* offset in the aligned copy */
    size_t nbytes;
} rc_tensor;

struct slm_rwkvcpp {
    slm_rwkvcpp_header hdr;
    slm_storage *data;
    int n, cap;
    rc_tensor *t;
};

static int32_t rd_i32(const unsigned char *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* rwkv.cpp's type ids and the ggml dtypes they are; the ids missing are
 * retired formats (Q4_2, Q4_3, Q5_0 of version 100 ...) */
static const struct {
    int32_t id;
    slm_dtype dtype;
} types[] = {
    {0, SLM_DTYPE_F32}, {1, SLM_DTYPE_F16}, {2, SLM_DTYPE_Q4_0}, {3, SLM_DTYPE_Q4_1},
    {7, SLM_DTYPE_Q5_0}, {8, SLM_DTYPE_Q5_1}, {9, SLM_DTYPE_Q8_0},
};
#define N_TYPES (int)(sizeof types / sizeof types[0])

/* rwkv.cpp's type id -> dtype; -1 for the retired formats */
static int map_type(int32_t t)
{
    for (int i = 0; i < N_TYPES; i++)
        if (types[i].id == t) return (int)types[i].dtype;
    return -1;
}

int slm_rwkvcpp_type_id(slm_dtype t)
{
    for (int i = 0; i < N_TYPES; i++)
        if (types[i].dtype == t) return types[i].id;
    return -1;
}

void slm_rwkvcpp_close(slm_rwkvcpp *f)
{
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->t[i].name);
    free(f->t);
    slm_storage_unref(f->data);
    free(f);
}

static slm_rwkvcpp *fail(slm_rwkvcpp *f, slm_storage *map)
{
    slm_rwkvcpp_close(f);
    slm_storage_unref(map);
    return NULL;
}

/* Parses one parameter header at *off; fills *t (name allocated). */
static slm_status parse_param(const char *path, const slm_storage *map, size_t *off,
                              int index, rc_tensor *t, slm_error *err)
{
    const unsigned char *p = map->data;
    size_t size = map->size, o = *off;
    if (size - o < 12)
        return slm_error_set(err, SLM_EFORMAT, "%s: parameter %d: truncated header", path, index);
    int32_t nd = rd_i32(p + o), klen = rd_i32(p + o + 4), type = rd_i32(p + o + 8);
    o += 12;
    if (nd < 1 || nd > 3)
        return slm_error_set(err, SLM_EFORMAT, "%s: parameter %d: n_dims %d is not 1..3",
                             path, index, (int)nd);
    if (klen <= 0 || klen > 1024)
        return slm_error_set(err, SLM_EFORMAT, "%s: parameter %d: key length %d is not 1..1024",
                             path, index, (int)klen);
    int dt = map_type(type);
    if (dt < 0)
        return slm_error_set(err, SLM_EUNSUPPORTED, "%s: parameter %d: unsupported data type %d",
                             path, index, (int)type);
    if (size - o < (size_t)nd * 4 + (size_t)klen)
        return slm_error_set(err, SLM_EFORMAT, "%s: parameter %d: truncated shape or key", path, index);
    int64_t shape[3];
    for (int i = 0; i < nd; i++) {
        int32_t s = rd_i32(p + o + 4 * (size_t)i);
        if (s <= 0)
            return slm_error_set(err, SLM_EFORMAT, "%s: parameter %d: dimension %d is %d",
                                 path, index, i, (int)s);
        shape[nd - 1 - i] = s;              /* innermost first in the file */
    }
    o += (size_t)nd * 4;
    t->name = malloc((size_t)klen + 1);
    if (!t->name) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    memcpy(t->name, p + o, (size_t)klen);
    t->name[klen] = 0;
    o += (size_t)klen;
    size_t nbytes;
    slm_error e2;
    if (slm_shape_check((slm_dtype)dt, nd, shape, &nbytes, &e2) != SLM_OK)
        return slm_error_set(err, SLM_EFORMAT, "%s: parameter '%s': %s", path, t->name, e2.msg);
    if (nbytes > size - o)
        return slm_error_set(err, SLM_EFORMAT,
                             "%s: parameter '%s': %zu bytes of data past the end of the file",
                             path, t->name, nbytes);
    t->dtype = (slm_dtype)dt;
    t->ndim = nd;
    memcpy(t->shape, shape, sizeof shape);
    t->src = o;
    t->nbytes = nbytes;
    *off = o + nbytes;
    return SLM_OK;
}

/* A 2-D parameter that must be (n_vocab, n_embed): emb.weight, head.weight. */
static slm_status check_vocab_matrix(const char *path, const slm_rwkvcpp *f, const char *name,
                                     slm_error *err)
{
    int i = slm_rwkvcpp_find(f, name);
    if (i < 0) return slm_error_set(err, SLM_EFORMAT, "%s: no parameter '%s'", path, name);
    const rc_tensor *t = &f->t[i];
    if (t->ndim != 2)
        return slm_error_set(err, SLM_EFORMAT, "%s: parameter '%s' has %d dimensions, expected 2 "
                             "(n_vocab, n_embed)", path, name, t->ndim);
    if (t->shape[0] != f->hdr.n_vocab)
        return slm_error_set(err, SLM_EFORMAT, "%s: header n_vocab is %d, %s has %lld rows",
                             path, f->hdr.n_vocab, name, (long long)t->shape[0]);
    if (t->shape[1] != f->hdr.n_embed)
        return slm_error_set(err, SLM_EFORMAT, "%s: header n_embed is %d, %s has %lld columns",
                             path, f->hdr.n_embed, name, (long long)t->shape[1]);
    return SLM_OK;
}

/* The header's sizes against the parameters: whoever sizes a session from
 * n_vocab, n_embed or n_layer (logits, state) must get what the tensors
 * hold, not what a corrupt header claims (a one-byte change to n_vocab used
 * to size the logits and the sampler's candidates at 2^31 entries). The
 * blocks are numbered 0..n_layer-1 with none missing. */
static slm_status check_header(const char *path, const slm_rwkvcpp *f, slm_error *err)
{
    slm_status st = check_vocab_matrix(path, f, "emb.weight", err);
    if (st == SLM_OK) st = check_vocab_matrix(path, f, "head.weight", err);
    if (st != SLM_OK) return st;
    /* every index in 0..n_layer-1 has a block: seen[] is bounded by the
     * parameter count (each block has several), not by the header */
    int n_blocks = 0;
    unsigned char *seen = calloc((size_t)f->n + 1, 1);
    if (!seen) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    for (int i = 0; i < f->n; i++) {
        const char *s = f->t[i].name;
        if (strncmp(s, "blocks.", 7) != 0) continue;
        char *end;
        long b = strtol(s + 7, &end, 10);
        if (end == s + 7 || *end != '.' || b < 0 || b >= f->n) {
            free(seen);
            return slm_error_set(err, SLM_EFORMAT, "%s: parameter '%s': bad block number", path, s);
        }
        if (!seen[b]) n_blocks++;
        seen[b] = 1;
        if (b >= f->hdr.n_layer) {
            free(seen);
            return slm_error_set(err, SLM_EFORMAT, "%s: header n_layer is %d, the file has "
                                 "parameter '%s'", path, f->hdr.n_layer, s);
        }
    }
    free(seen);
    if (n_blocks != f->hdr.n_layer)
        return slm_error_set(err, SLM_EFORMAT, "%s: header n_layer is %d, the file has %d blocks",
                             path, f->hdr.n_layer, n_blocks);
    return SLM_OK;
}

slm_rwkvcpp *slm_rwkvcpp_open(const char *path, slm_error *err)
{
    slm_storage *map = slm_storage_map_file(path, err);
    if (!map) return NULL;
    const unsigned char *p = map->data;
    if (map->size < 24 || rd_i32(p) != RWKVCPP_MAGIC) {
        slm_error_set(err, SLM_EFORMAT, "%s: not an rwkv.cpp model file (bad magic)", path);
        return fail(NULL, map);
    }
    slm_rwkvcpp *f = calloc(1, sizeof *f);
    if (!f) {
        slm_error_set(err, SLM_ENOMEM, "out of memory");
        return fail(NULL, map);
    }
    f->hdr = (slm_rwkvcpp_header){rd_i32(p + 4), rd_i32(p + 8), rd_i32(p + 12),
                                  rd_i32(p + 16), rd_i32(p + 20)};
    if (f->hdr.version != 100 && f->hdr.version != 101) {
        slm_error_set(err, SLM_EUNSUPPORTED, "%s: unsupported rwkv.cpp file version %d",
                      path, f->hdr.version);
        return fail(f, map);
    }
    const char *field = f->hdr.n_vocab <= 0 ? "n_vocab" : f->hdr.n_embed <= 0 ? "n_embed"
                      : f->hdr.n_layer <= 0 ? "n_layer" : NULL;
    if (field) {
        int v = f->hdr.n_vocab <= 0 ? f->hdr.n_vocab : f->hdr.n_embed <= 0 ? f->hdr.n_embed
              : f->hdr.n_layer;
        slm_error_set(err, SLM_EFORMAT, "%s: header %s is %d (must be positive)", path, field, v);
        return fail(f, map);
    }
    size_t off = 24, total = 0;
    while (off < map->size) {
        if (f->n == f->cap) {
            int cap = f->cap ? 2 * f->cap : 64;
            rc_tensor *nt = realloc(f->t, (size_t)cap * sizeof *nt);
            if (!nt) {
                slm_error_set(err, SLM_ENOMEM, "out of memory");
                return fail(f, map);
            }
            f->t = nt;
            f->cap = cap;
        }
        rc_tensor *t = &f->t[f->n];
        memset(t, 0, sizeof *t);
        slm_status st = parse_param(path, map, &off, f->n, t, err);
        f->n++;                   /* owns t->name even on failure */
        if (st != SLM_OK) return fail(f, map);
        t->dst = total;
        total += (t->nbytes + 63) & ~(size_t)63;
    }
    if (check_header(path, f, err) != SLM_OK) return fail(f, map);
    f->data = slm_storage_alloc(total, err);
    if (!f->data) return fail(f, map);
    f->data->flags |= SLM_STORAGE_VECDOT_ORDER;
    for (int i = 0; i < f->n; i++)
        memcpy(f->data->data + f->t[i].dst, p + f->t[i].src, f->t[i].nbytes);
    slm_storage_unref(map);
    return f;
}

const slm_rwkvcpp_header *slm_rwkvcpp_header_get(const slm_rwkvcpp *f) { return &f->hdr; }
int slm_rwkvcpp_n_tensors(const slm_rwkvcpp *f) { return f->n; }

const char *slm_rwkvcpp_tensor_name(const slm_rwkvcpp *f, int i)
{
    return i >= 0 && i < f->n ? f->t[i].name : NULL;
}

int slm_rwkvcpp_find(const slm_rwkvcpp *f, const char *name)
{
    for (int i = 0; i < f->n; i++)
        if (strcmp(f->t[i].name, name) == 0) return i;
    return -1;
}

slm_tensor *slm_rwkvcpp_tensor(const slm_rwkvcpp *f, int i, slm_error *err)
{
    if (i < 0 || i >= f->n) {
        slm_error_set(err, SLM_ERANGE, "tensor index %d out of range", i);
        return NULL;
    }
    const rc_tensor *t = &f->t[i];
    return slm_tensor_from_storage(f->data, t->dst, t->dtype, t->ndim, t->shape, err);
}

static int put_i32(FILE *f, int32_t v) { return fwrite(&v, 4, 1, f) == 1; }

/* Checks every parameter before anything is written. */
static slm_status check_params(const char *path, int n, const char *const *names,
                               const slm_tensor *const *tensors, slm_error *err)
{
    for (int i = 0; i < n; i++) {
        const slm_tensor *t = tensors[i];
        size_t klen = strlen(names[i]);
        if (klen == 0 || klen > 1024)
            return slm_error_set(err, SLM_EINVAL, "%s: parameter %d: key length %zu is not 1..1024",
                                 path, i, klen);
        if (t->ndim < 1 || t->ndim > 3)
            return slm_error_set(err, SLM_EINVAL, "%s: parameter '%s': %d dimensions (rwkv.cpp files "
                                 "hold 1..3)", path, names[i], t->ndim);
        if (slm_rwkvcpp_type_id(t->dtype) < 0)
            return slm_error_set(err, SLM_EUNSUPPORTED, "%s: parameter '%s': rwkv.cpp files have no %s "
                                 "type", path, names[i], slm_dtype_name(t->dtype));
        if (!slm_tensor_is_contiguous(t))
            return slm_error_set(err, SLM_EINVAL, "%s: parameter '%s' is not contiguous", path, names[i]);
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] > INT32_MAX)
                return slm_error_set(err, SLM_EINVAL, "%s: parameter '%s': dimension %d does not fit "
                                     "an int32", path, names[i], d);
    }
    return SLM_OK;
}

typedef struct write_ctx {
    const slm_rwkvcpp_header *h;
    int n;
    const char *const *names;
    const slm_tensor *const *tensors;
} write_ctx;

static int write_file(FILE *f, void *ctx)
{
    const write_ctx *c = ctx;
    const slm_rwkvcpp_header *h = c->h;
    int ok = put_i32(f, RWKVCPP_MAGIC) && put_i32(f, 101) && put_i32(f, h->n_vocab) &&
             put_i32(f, h->n_embed) && put_i32(f, h->n_layer) && put_i32(f, h->data_type);
    for (int i = 0; ok && i < c->n; i++) {
        const slm_tensor *t = c->tensors[i];
        size_t klen = strlen(c->names[i]);
        ok = put_i32(f, t->ndim) && put_i32(f, (int32_t)klen) &&
             put_i32(f, slm_rwkvcpp_type_id(t->dtype));
        for (int d = t->ndim - 1; ok && d >= 0; d--) ok = put_i32(f, (int32_t)t->shape[d]);
        size_t nbytes = slm_tensor_nbytes(t);
        ok = ok && fwrite(c->names[i], 1, klen, f) == klen &&
             fwrite(slm_tensor_data(t), 1, nbytes, f) == nbytes;
    }
    return ok;
}

slm_status slm_rwkvcpp_write(const char *path, const slm_rwkvcpp_header *h, int n,
                             const char *const *names, const slm_tensor *const *tensors,
                             slm_error *err)
{
    if (check_params(path, n, names, tensors, err) != SLM_OK) return err->code;
    write_ctx c = {h, n, names, tensors};
    return slm_file_replace(path, write_file, &c, err);
}
