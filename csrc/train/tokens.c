/* Token files (layout in tokens.h): open and check, windows, random
 * batches, streaming writer. */
#include "tokens.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/storage.h"

struct slm_tokens {
    slm_storage *map;          /* the whole file, read-only */
    const unsigned char *ids;  /* map->data + SLM_TOKENS_HEADER */
    int64_t count;
    int32_t vocab;
    int width;
    char *path;
};

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p)
{
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

static void put_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v)
{
    put_u32(p, (uint32_t)v);
    put_u32(p + 4, (uint32_t)(v >> 32));
}

slm_tokens *slm_tokens_open(const char *path, slm_error *err)
{
    slm_storage *map = slm_storage_map_file(path, err);
    if (!map) return NULL;
    const unsigned char *h = map->data;
    size_t size = map->size;
    slm_status st = SLM_EFORMAT;
    if (size < SLM_TOKENS_HEADER) {
        slm_error_set(err, st, "%s: not a token file (%zu bytes, shorter than the %d-byte header)",
                      path, size, SLM_TOKENS_HEADER);
        goto fail;
    }
    if (memcmp(h, SLM_TOKENS_MAGIC, 8)) {
        slm_error_set(err, st, "%s: not a token file (magic is not \"" SLM_TOKENS_MAGIC "\")", path);
        goto fail;
    }
    uint32_t version = get_u32(h + 8), width = get_u32(h + 12), vocab = get_u32(h + 16);
    uint32_t reserved = get_u32(h + 20);
    uint64_t count = get_u64(h + 24);
    if (version != SLM_TOKENS_VERSION) {
        slm_error_set(err, SLM_EUNSUPPORTED, "%s: token file field 'version' is %u (slm reads %d)",
                      path, version, SLM_TOKENS_VERSION);
        goto fail;
    }
    if (width != 2 && width != 4) {
        slm_error_set(err, st, "%s: token file field 'width' is %u (2 or 4 bytes per id)", path,
                      width);
        goto fail;
    }
    if (vocab < 1 || vocab > INT32_MAX) {
        slm_error_set(err, st, "%s: token file field 'vocab' is %u (1 to %d)", path, vocab,
                      INT32_MAX);
        goto fail;
    }
    if (width == 2 && vocab > 65536) {
        slm_error_set(err, st, "%s: token file field 'vocab' is %u, too large for 'width' 2", path,
                      vocab);
        goto fail;
    }
    if (reserved != 0) {
        slm_error_set(err, st, "%s: token file field 'reserved' is %u (must be 0)", path, reserved);
        goto fail;
    }
    /* compare counts, not byte sizes: count * width may overflow */
    size_t body = size - SLM_TOKENS_HEADER;
    if (body % width || count != body / width) {
        slm_error_set(err, st,
                      "%s: token file field 'count' is %llu ids of %u bytes, but the file holds "
                      "%zu bytes after the header",
                      path, (unsigned long long)count, width, body);
        goto fail;
    }
    slm_tokens *t = calloc(1, sizeof *t);
    char *p = strdup(path);
    if (!t || !p) {
        free(t);
        free(p);
        slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    t->map = map;
    t->ids = h + SLM_TOKENS_HEADER;
    t->count = (int64_t)count;
    t->vocab = (int32_t)vocab;
    t->width = (int)width;
    t->path = p;
    return t;
fail:
    slm_storage_unref(map);
    return NULL;
}

void slm_tokens_close(slm_tokens *t)
{
    if (!t) return;
    slm_storage_unref(t->map);
    free(t->path);
    free(t);
}

int64_t slm_tokens_count(const slm_tokens *t) { return t->count; }
int32_t slm_tokens_vocab(const slm_tokens *t) { return t->vocab; }
int slm_tokens_width(const slm_tokens *t) { return t->width; }
const char *slm_tokens_path(const slm_tokens *t) { return t->path; }

/* ids[start .. start + n) with each id checked against the vocabulary;
 * the caller has checked the range. */
static slm_status copy_ids(const slm_tokens *t, int64_t start, int64_t n, int32_t *out,
                           slm_error *err)
{
    const unsigned char *p = t->ids + (size_t)start * (size_t)t->width;
    uint32_t v;
    for (int64_t i = 0; i < n; i++) {
        if (t->width == 2) v = (uint32_t)p[2 * i] | (uint32_t)p[2 * i + 1] << 8;
        else v = get_u32(p + 4 * i);
        if (v >= (uint32_t)t->vocab)
            return slm_error_set(err, SLM_EFORMAT,
                                 "%s: id %u at index %lld is not below the vocabulary size %d",
                                 t->path, v, (long long)(start + i), t->vocab);
        out[i] = (int32_t)v;
    }
    return SLM_OK;
}

slm_status slm_tokens_read(const slm_tokens *t, int64_t start, int64_t n, int32_t *out,
                           slm_error *err)
{
    if (start < 0 || n < 0 || start > t->count || n > t->count - start)
        return slm_error_set(err, SLM_ERANGE,
                             "%s: ids %lld..%lld are outside the file's %lld ids", t->path,
                             (long long)start, (long long)start + n - 1, (long long)t->count);
    return copy_ids(t, start, n, out, err);
}

slm_status slm_tokens_fill(const slm_tokens *t, const int64_t *starts, int64_t B, int64_t T1,
                           int32_t *out, slm_error *err)
{
    if (B < 1 || T1 < 1)
        return slm_error_set(err, SLM_EINVAL, "%s: a batch needs B >= 1 and T1 >= 1 (got %lld, %lld)",
                             t->path, (long long)B, (long long)T1);
    for (int64_t b = 0; b < B; b++) {
        int64_t s = starts[b];
        if (s < 0 || T1 > t->count || s > t->count - T1)
            return slm_error_set(err, SLM_ERANGE,
                                 "%s: window %lld (ids %lld..%lld) is outside the file's %lld ids",
                                 t->path, (long long)b, (long long)s, (long long)(s + T1 - 1),
                                 (long long)t->count);
    }
    for (int64_t b = 0; b < B; b++) {
        slm_status st = copy_ids(t, starts[b], T1, out + b * T1, err);
        if (st) return st;
    }
    return SLM_OK;
}

uint64_t slm_tokens_uniform(slm_rng *r, uint64_t n)
{
    /* 2^64 mod n without 128-bit arithmetic: (2^64 - n) mod n */
    uint64_t threshold = (0 - n) % n;
    for (;;) {
        uint64_t x = slm_rng_next(r);
        if (x >= threshold) return x % n;
    }
}

slm_status slm_tokens_sample(const slm_tokens *t, slm_rng *r, int64_t lo, int64_t hi,
                             int64_t B, int64_t T1, int32_t *out, int64_t *starts_out,
                             slm_error *err)
{
    if (lo < 0 || hi > t->count || lo > hi)
        return slm_error_set(err, SLM_ERANGE, "%s: id range %lld..%lld is outside the file's %lld ids",
                             t->path, (long long)lo, (long long)hi, (long long)t->count);
    if (B < 1 || T1 < 1)
        return slm_error_set(err, SLM_EINVAL, "%s: a batch needs B >= 1 and T1 >= 1 (got %lld, %lld)",
                             t->path, (long long)B, (long long)T1);
    if (hi - lo < T1)
        return slm_error_set(err, SLM_ERANGE,
                             "%s: the range holds %lld ids, fewer than a window of %lld", t->path,
                             (long long)(hi - lo), (long long)T1);
    uint64_t choices = (uint64_t)(hi - lo - T1 + 1);
    int64_t stack[64];
    int64_t *starts = starts_out ? starts_out : B <= 64 ? stack : malloc(sizeof *starts * (size_t)B);
    if (!starts) return slm_error_set(err, SLM_ENOMEM, "%s: out of memory", t->path);
    for (int64_t b = 0; b < B; b++) starts[b] = lo + (int64_t)slm_tokens_uniform(r, choices);
    slm_status st = slm_tokens_fill(t, starts, B, T1, out, err);
    if (starts != stack && starts != starts_out) free(starts);
    return st;
}

/* ---- writer ------------------------------------------------------------------ */

struct slm_tokens_writer {
    FILE *f;
    char *path, *tmp;
    int32_t vocab;
    int width;
    int64_t count;
};

slm_tokens_writer *slm_tokens_writer_open(const char *path, int64_t vocab, slm_error *err)
{
    if (vocab < 1 || vocab > INT32_MAX) {
        slm_error_set(err, SLM_EINVAL, "%s: vocabulary size %lld is not in 1..%d", path,
                      (long long)vocab, INT32_MAX);
        return NULL;
    }
    slm_tokens_writer *w = calloc(1, sizeof *w);
    size_t n = strlen(path);
    if (w) w->path = strdup(path);
    if (w) w->tmp = malloc(n + 5);
    if (!w || !w->path || !w->tmp) goto oom;
    memcpy(w->tmp, path, n);
    memcpy(w->tmp + n, ".tmp", 5);
    w->vocab = (int32_t)vocab;
    w->width = vocab <= 65536 ? 2 : 4;
    w->f = fopen(w->tmp, "wb");
    if (!w->f) {
        slm_error_set(err, SLM_EIO, "%s: %s", w->tmp, strerror(errno));
        slm_tokens_writer_abort(w);
        return NULL;
    }
    /* the header with count 0; finish writes the real count */
    unsigned char h[SLM_TOKENS_HEADER] = {0};
    memcpy(h, SLM_TOKENS_MAGIC, 8);
    put_u32(h + 8, SLM_TOKENS_VERSION);
    put_u32(h + 12, (uint32_t)w->width);
    put_u32(h + 16, (uint32_t)vocab);
    if (fwrite(h, 1, sizeof h, w->f) != sizeof h) {
        slm_error_set(err, SLM_EIO, "%s: %s", w->tmp, strerror(errno));
        slm_tokens_writer_abort(w);
        return NULL;
    }
    return w;
oom:
    slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
    slm_tokens_writer_abort(w);
    return NULL;
}

slm_status slm_tokens_writer_append(slm_tokens_writer *w, const int32_t *ids, size_t n,
                                    slm_error *err)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= w->vocab)
            return slm_error_set(err, SLM_EINVAL,
                                 "%s: id %d (at %zu of the chunk) is outside the vocabulary 0..%d",
                                 w->path, ids[i], i + 1, w->vocab - 1);
    unsigned char buf[8192];
    size_t per = sizeof buf / (size_t)w->width;
    for (size_t i = 0; i < n; i += per) {
        size_t m = n - i < per ? n - i : per;
        for (size_t j = 0; j < m; j++) {
            uint32_t v = (uint32_t)ids[i + j];
            if (w->width == 2) {
                buf[2 * j] = (unsigned char)v;
                buf[2 * j + 1] = (unsigned char)(v >> 8);
            } else {
                put_u32(buf + 4 * j, v);
            }
        }
        if (fwrite(buf, (size_t)w->width, m, w->f) != m)
            return slm_error_set(err, SLM_EIO, "%s: %s", w->tmp, strerror(errno));
        w->count += (int64_t)m;
    }
    return SLM_OK;
}

int64_t slm_tokens_writer_count(const slm_tokens_writer *w) { return w->count; }

slm_status slm_tokens_writer_finish(slm_tokens_writer *w, slm_error *err)
{
    unsigned char c[8];
    put_u64(c, (uint64_t)w->count);
    if (fflush(w->f) || fseek(w->f, 24, SEEK_SET) || fwrite(c, 1, 8, w->f) != 8) {
        slm_error_set(err, SLM_EIO, "%s: %s", w->tmp, strerror(errno));
        slm_tokens_writer_abort(w);
        return SLM_EIO;
    }
    int rc = fclose(w->f);
    w->f = NULL;
    if (rc) {
        slm_error_set(err, SLM_EIO, "%s: %s", w->tmp, strerror(errno));
        slm_tokens_writer_abort(w);
        return SLM_EIO;
    }
    if (rename(w->tmp, w->path)) {
        slm_error_set(err, SLM_EIO, "%s: %s", w->path, strerror(errno));
        slm_tokens_writer_abort(w);
        return SLM_EIO;
    }
    free(w->path);
    free(w->tmp);
    free(w);
    return SLM_OK;
}

void slm_tokens_writer_abort(slm_tokens_writer *w)
{
    if (!w) return;
    if (w->f) fclose(w->f);
    if (w->tmp) remove(w->tmp);
    free(w->path);
    free(w->tmp);
    free(w);
}
