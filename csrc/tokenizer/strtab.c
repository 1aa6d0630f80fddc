/* Hash tables of the tokenizers (interned strings, merge pairs) and small
 * UTF-8 helpers. Open addressing with linear probing, power-of-two sizes,
 * load factor <= 1/2. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

uint64_t slm_hash_bytes(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, s, 8);
        h = (h ^ v) * 0xff51afd7ed558ccdull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    /* the 0..7 tail bytes in at most three loads, not a byte loop */
    uint64_t v = 0;
    if (n & 4) {
        uint32_t x;
        memcpy(&x, s, 4);
        v = x;
        s += 4;
    }
    if (n & 2) {
        uint16_t x;
        memcpy(&x, s, 2);
        v = (v << 16) | x;
        s += 2;
    }
    if (n & 1) v = (v << 8) | *s;
    /* MurmurHash3's 64-bit finalizer: every input bit reaches the low bits
     * that index the tables */
    h ^= v;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

void slm_strtab_free(slm_strtab *s)
{
    free(s->bytes);
    free(s->off);
    free(s->len);
    free(s->slots);
    memset(s, 0, sizeof *s);
}

int32_t slm_strtab_find(const slm_strtab *s, const char *p, size_t n)
{
    if (!s->slots) return -1;
    size_t i = (size_t)slm_hash_bytes(p, n) & s->mask;
    for (;;) {
        int32_t id = s->slots[i];
        if (id < 0) return -1;
        if (s->len[id] == n && memcmp(s->bytes + s->off[id], p, n) == 0)
            return id;
        i = (i + 1) & s->mask;
    }
}

static int strtab_grow_slots(slm_strtab *s)
{
    uint32_t nslots = s->slots ? (s->mask + 1) * 2 : 1024;
    int32_t *slots = malloc(sizeof *slots * nslots);
    if (!slots) return -1;
    memset(slots, 0xff, sizeof *slots * nslots);
    for (int32_t id = 0; id < s->n; id++) {
        size_t i = (size_t)slm_hash_bytes(s->bytes + s->off[id], s->len[id]) &
                   (nslots - 1);
        while (slots[i] >= 0) i = (i + 1) & (nslots - 1);
        slots[i] = id;
    }
    free(s->slots);
    s->slots = slots;
    s->mask = nslots - 1;
    return 0;
}

int32_t slm_strtab_add(slm_strtab *s, const char *p, size_t n, int *added)
{
    int32_t id = slm_strtab_find(s, p, n);
    if (added) *added = id < 0;
    if (id >= 0) return id;
    if (n > UINT32_MAX / 2 || s->n == INT32_MAX) return -1;
    if (!s->slots || (uint32_t)(s->n + 1) * 2 > s->mask + 1)
        if (strtab_grow_slots(s)) return -1;
    if (s->n == s->cap) {
        int32_t cap = s->cap ? s->cap * 2 : 1024;
        uint32_t *off = realloc(s->off, sizeof *off * (size_t)cap);
        if (!off) return -1;
        s->off = off;
        uint32_t *len = realloc(s->len, sizeof *len * (size_t)cap);
        if (!len) return -1;
        s->len = len;
        s->cap = cap;
    }
    if (s->nbytes + n + 1 > s->capbytes) {
        size_t cap = s->capbytes ? s->capbytes : 65536;
        while (cap < s->nbytes + n + 1) cap *= 2;
        if (cap > UINT32_MAX) return -1;
        char *b = realloc(s->bytes, cap);
        if (!b) return -1;
        s->bytes = b;
        s->capbytes = cap;
    }
    id = s->n++;
    s->off[id] = (uint32_t)s->nbytes;
    s->len[id] = (uint32_t)n;
    memcpy(s->bytes + s->nbytes, p, n);
    s->bytes[s->nbytes + n] = 0;
    s->nbytes += n + 1;
    size_t i = (size_t)slm_hash_bytes(p, n) & s->mask;
    while (s->slots[i] >= 0) i = (i + 1) & s->mask;
    s->slots[i] = id;
    return id;
}

void slm_pairmap_free(slm_pairmap *m)
{
    free(m->keys);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

static size_t pair_slot(uint64_t key, size_t mask)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & mask;
}

static int pairmap_grow(slm_pairmap *m)
{
    size_t nslots = m->keys ? (m->mask + 1) * 2 : 4096;
    uint64_t *keys = calloc(nslots, sizeof *keys);
    int32_t *rank = malloc(sizeof *rank * nslots);
    int32_t *merged = malloc(sizeof *merged * nslots);
    if (!keys || !rank || !merged) {
        free(keys);
        free(rank);
        free(merged);
        return -1;
    }
    if (m->keys) {
        for (size_t j = 0; j <= m->mask; j++) {
            if (!m->keys[j]) continue;
            size_t i = pair_slot(m->keys[j], nslots - 1);
            while (keys[i]) i = (i + 1) & (nslots - 1);
            keys[i] = m->keys[j];
            rank[i] = m->rank[j];
            merged[i] = m->merged[j];
        }
    }
    free(m->keys);
    free(m->rank);
    free(m->merged);
    m->keys = keys;
    m->rank = rank;
    m->merged = merged;
    m->mask = nslots - 1;
    return 0;
}

int slm_pairmap_put(slm_pairmap *m, int32_t a, int32_t b, int32_t rank,
                    int32_t merged)
{
    if (!m->keys || (m->n + 1) * 2 > m->mask + 1)
        if (pairmap_grow(m)) return -1;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = pair_slot(key, m->mask);
    while (m->keys[i]) {
        if (m->keys[i] == key) return 0;
        i = (i + 1) & m->mask;
    }
    m->keys[i] = key;
    m->rank[i] = rank;
    m->merged[i] = merged;
    m->n++;
    return 0;
}

int slm_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    uint32_t min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; min = 0x10000; }
    else return 0;
    if ((size_t)len > n) return 0;
    for (int i = 1; i < len; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    uint32_t cp = slm_utf8_decode(s, len);
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return len;
}

uint32_t slm_utf8_decode(const unsigned char *s, int len)
{
    switch (len) {
    case 1: return s[0];
    case 2: return ((uint32_t)(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    case 3:
        return ((uint32_t)(s[0] & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) |
               (s[2] & 0x3F);
    default:
        return ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) |
               ((uint32_t)(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    }
}

int slm_utf8_encode(uint32_t cp, char out[4])
{
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}
