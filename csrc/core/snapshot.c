#include "snapshot.h"

#include <stdio.h>
#include <string.h>

#define SNAP_MAGIC "SLMS"

/* the kinds, for naming a foreign snapshot */
static const struct {
    char kind[4];
    const char *name;
} kinds[] = {
    {{'K', 'V', 0, 0}, "a KV cache"},
    {{'M', 'A', 'M', 'B'}, "a mamba state"},
    {{'R', 'W', 'K', 'V'}, "an RWKV state"},
    {{'S', 'C', 'N', 'V'}, "a conv state"},
};

size_t slm_snap_header_size(int n_dim) { return 24 + 8 * (size_t)n_dim; }

unsigned char *slm_snap_put_header(void *buf, const char kind[4], uint32_t version, int64_t n_past,
                                   int n_dim, const int64_t *dims)
{
    unsigned char *p = buf;
    const uint32_t v[2] = {version, (uint32_t)n_dim};
    memcpy(p, SNAP_MAGIC, 4);
    memcpy(p + 4, kind, 4);
    memcpy(p + 8, v, sizeof v);
    memcpy(p + 16, &n_past, 8);
    memcpy(p + 24, dims, 8 * (size_t)n_dim);
    return p + slm_snap_header_size(n_dim);
}

static const char *kind_name(const unsigned char *k)
{
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (memcmp(kinds[i].kind, k, 4) == 0) return kinds[i].name;
    return "a state slm does not know";
}

slm_status slm_snap_parse(const void *buf, size_t len, const char kind[4], uint32_t version,
                          const char *what, int n_dim, slm_snap *out, slm_error *err)
{
    const unsigned char *p = buf;
    if (len < 4 || memcmp(p, SNAP_MAGIC, 4) != 0)
        return slm_error_set(err, SLM_EFORMAT, "restore: not an slm state snapshot");
    if (len < 24) return slm_error_set(err, SLM_EFORMAT, "restore: truncated snapshot of %s", what);
    if (memcmp(p + 4, kind, 4) != 0)
        return slm_error_set(err, SLM_EINVAL, "restore: snapshot of %s, not of %s", kind_name(p + 4), what);
    uint32_t v[2];
    memcpy(v, p + 8, sizeof v);
    if (v[0] != version)
        return slm_error_set(err, SLM_EUNSUPPORTED, "restore: snapshot of %s of version %u (this slm reads %u)",
                             what, (unsigned)v[0], (unsigned)version);
    memcpy(&out->n_past, p + 16, 8);
    if (v[1] != (uint32_t)n_dim || out->n_past < 0 || out->n_past > INT32_MAX)
        return slm_error_set(err, SLM_EFORMAT, "restore: corrupt snapshot of %s (n_past %lld, %u dims)", what,
                             (long long)out->n_past, (unsigned)v[1]);
    if (len < slm_snap_header_size(n_dim))
        return slm_error_set(err, SLM_EFORMAT, "restore: truncated snapshot of %s", what);
    out->n_dim = n_dim;
    memcpy(out->dims, p + 24, 8 * (size_t)n_dim);
    out->body = p + slm_snap_header_size(n_dim);
    out->body_len = len - slm_snap_header_size(n_dim);
    return SLM_OK;
}

/* "name value, name value" into buf */
static void list_dims(char *buf, size_t cap, const int64_t *d, const char *const *names, int n)
{
    size_t off = 0;
    buf[0] = 0;
    for (int i = 0; i < n && off < cap; i++) {
        int w = snprintf(buf + off, cap - off, "%s%s %lld", i ? ", " : "", names[i], (long long)d[i]);
        if (w < 0) break;
        off += (size_t)w;
    }
}

slm_status slm_snap_check_dims(const slm_snap *s, const int64_t *want, const char *const *names,
                               const char *what, slm_error *err)
{
    if (memcmp(s->dims, want, 8 * (size_t)s->n_dim) == 0) return SLM_OK;
    char have[200], mine[200];
    list_dims(have, sizeof have, s->dims, names, s->n_dim);
    list_dims(mine, sizeof mine, want, names, s->n_dim);
    return slm_error_set(err, SLM_EINVAL, "restore: snapshot of %s with %s; this one has %s", what, have, mine);
}

slm_status slm_snap_check_len(const slm_snap *s, size_t want, const char *what, slm_error *err)
{
    if (s->body_len == want) return SLM_OK;
    return slm_error_set(err, SLM_EFORMAT, "restore: %s snapshot of %s (%zu bytes of state, %zu expected)",
                         s->body_len < want ? "truncated" : "corrupt", what, s->body_len, want);
}

int slm_snap_has_magic(const void *buf, size_t len, const char magic[8])
{
    return len >= 8 && memcmp(buf, magic, 8) == 0;
}

slm_status slm_snap_parse_old(const void *buf, size_t len, int n_field, int past_at, const char *what,
                              slm_snap *out, slm_error *err)
{
    const unsigned char *p = buf;
    const size_t head = 8 + 4 * (size_t)n_field;
    if (len < head) return slm_error_set(err, SLM_EFORMAT, "restore: truncated snapshot of %s", what);
    out->n_dim = 0;
    for (int i = 0; i < n_field; i++) {
        int32_t v;
        memcpy(&v, p + 8 + 4 * (size_t)i, 4);
        if (i == past_at) out->n_past = v;
        else out->dims[out->n_dim++] = v;
    }
    if (out->n_past < 0)
        return slm_error_set(err, SLM_EFORMAT, "restore: corrupt snapshot of %s (n_past %lld)", what,
                             (long long)out->n_past);
    out->body = p + head;
    out->body_len = len - head;
    return SLM_OK;
}

size_t slm_snap_flat_size(const slm_snap_kind *k, int n_part, const size_t *lens)
{
    size_t n = slm_snap_header_size(k->n_dim);
    for (int i = 0; i < n_part; i++) n += lens[i];
    return n;
}

void slm_snap_flat_write(const slm_snap_kind *k, void *buf, int n_past, const int64_t *dims, int n_part,
                         const void *const *parts, const size_t *lens)
{
    unsigned char *p = slm_snap_put_header(buf, k->kind, k->version, n_past, k->n_dim, dims);
    for (int i = 0; i < n_part; p += lens[i], i++) memcpy(p, parts[i], lens[i]);
}

slm_status slm_snap_flat_read(const slm_snap_kind *k, const void *buf, size_t len, const int64_t *dims,
                              int n_part, void *const *parts, const size_t *lens, int *n_past,
                              slm_error *err)
{
    slm_snap snap;
    slm_status st = k->old_magic && slm_snap_has_magic(buf, len, k->old_magic)
                        ? slm_snap_parse_old(buf, len, k->old_fields, k->old_past_at, k->what, &snap, err)
                        : slm_snap_parse(buf, len, k->kind, k->version, k->what, k->n_dim, &snap, err);
    size_t body = 0;
    for (int i = 0; i < n_part; i++) body += lens[i];
    if (st != SLM_OK || (st = slm_snap_check_dims(&snap, dims, k->dim_names, k->what, err)) != SLM_OK ||
        (st = slm_snap_check_len(&snap, body, k->what, err)) != SLM_OK)
        return st;
    const unsigned char *p = snap.body;
    for (int i = 0; i < n_part; p += lens[i], i++) memcpy(parts[i], p, lens[i]);
    *n_past = (int)snap.n_past;
    return SLM_OK;
}
