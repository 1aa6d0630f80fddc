/* BPE ordered by merge ranks: byte-level (GPT-2 family, llama3, qwen2, ...)
 * and character-level with byte fallback (Hugging Face SentencePiece-like
 * BPE).
 *
 * Follows llama.cpp's llm_tokenizer_bpe_session and Hugging Face's
 * BPE::merge_word: a pre-token is cut into characters (byte-level: one
 * symbol per byte, standing for its GPT-2 character), every adjacent pair
 * found in the merge table is queued by rank (ties: leftmost first), the
 * lowest rank is merged and its neighbours re-queued until nothing merges.
 * Symbols carry interned ids, so a pair lookup is one hash probe on two
 * integers. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes for U+0100.. in byte order. */
static int printable(int b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

static uint32_t byte_cp(uint8_t b)
{
    if (printable(b)) return b;
    uint32_t n = 0;
    for (int c = 0; c < b; c++) n += !printable(c);
    return 256 + n;
}

int slm_bytelevel_char(uint8_t b, char out[2])
{
    uint32_t cp = byte_cp(b);
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    out[0] = (char)(0xC0 | (cp >> 6));
    out[1] = (char)(0x80 | (cp & 0x3F));
    return 2;
}

int slm_bytelevel_byte(uint32_t cp)
{
    if (cp < 256) return printable((int)cp) ? (int)cp : -1;
    uint32_t n = 256;
    for (int c = 0; c < 256; c++)
        if (!printable(c) && n++ == cp) return c;
    return -1;
}

/* ---- per-call cache of word -> ids (used by vocab.c for every engine) ---- */
/* Records live back to back in one int32 arena, so a hit touches one slot
 * and one record: [hash lo, hash hi, key length, n ids, ids..., key bytes
 * padded to whole int32]. A slot holds the hash's high half as a tag and the
 * record offset + 1 (0 = empty). */
struct slm_wcache {
    uint64_t *slots;
    size_t mask, ne;
    int32_t *rec; size_t nrec, caprec;
};

void slm_wcache_free(struct slm_wcache *c)
{
    if (!c) return;
    free(c->slots);
    free(c->rec);
    free(c);
}

#define WCACHE_MAX_ENTRIES (1u << 18)
#define WCACHE_MAX_REC ((size_t)1 << 24)   /* int32s: 64 MB */

const int32_t *slm_wcache_get(const struct slm_wcache *c, const char *p, size_t n,
                              uint64_t h, size_t *nids)
{
    uint32_t tag = (uint32_t)(h >> 32);
    size_t i = (size_t)h & c->mask;
    for (;;) {
        uint64_t sl = c->slots[i];
        if (!sl) return NULL;
        if ((uint32_t)(sl >> 32) == tag) {
            const int32_t *r = c->rec + (uint32_t)sl - 1;
            if ((size_t)r[2] == n && !memcmp(r + 4 + r[3], p, n)) {
                *nids = (size_t)r[3];
                return r + 4;
            }
        }
        i = (i + 1) & c->mask;
    }
}

/* Grows buffer p to hold need elements; NULL on failure (p stays valid). */
static void *grow(void *p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return p;
    size_t c = *cap ? *cap : 1024;
    while (c < need) c *= 2;
    void *v = realloc(p, c * elem);
    if (v) *cap = c;
    return v;
}

static void slot_put(uint64_t *slots, size_t mask, uint64_t h, size_t off)
{
    size_t i = (size_t)h & mask;
    while (slots[i]) i = (i + 1) & mask;
    slots[i] = ((h >> 32) << 32) | (uint64_t)(off + 1);
}

void slm_wcache_put(struct slm_wcache *c, const char *p, size_t n, uint64_t h,
                    const int32_t *ids, size_t nids)
{
    size_t words = 4 + nids + (n + 3) / 4;
    if (c->ne >= WCACHE_MAX_ENTRIES || c->nrec + words > WCACHE_MAX_REC) {
        /* full: start over rather than grow without bound */
        c->ne = c->nrec = 0;
        memset(c->slots, 0, sizeof *c->slots * (c->mask + 1));
    }
    if ((c->ne + 1) * 2 > c->mask + 1) {
        size_t ns = (c->mask + 1) * 2;
        uint64_t *slots = calloc(ns, sizeof *slots);
        if (!slots) return;
        for (size_t off = 0; off < c->nrec;) {
            const int32_t *r = c->rec + off;
            uint64_t rh = (uint32_t)r[0] | ((uint64_t)(uint32_t)r[1] << 32);
            slot_put(slots, ns - 1, rh, off);
            off += 4 + (size_t)r[3] + ((size_t)r[2] + 3) / 4;
        }
        free(c->slots);
        c->slots = slots;
        c->mask = ns - 1;
    }
    /* caching is optional: on failure the entry is simply not kept */
    int32_t *rec = grow(c->rec, &c->caprec, c->nrec + words, sizeof *c->rec);
    if (!rec) return;
    c->rec = rec;
    int32_t *r = rec + c->nrec;
    r[0] = (int32_t)(uint32_t)h;
    r[1] = (int32_t)(uint32_t)(h >> 32);
    r[2] = (int32_t)n;
    r[3] = (int32_t)nids;
    if (nids) memcpy(r + 4, ids, sizeof *ids * nids);
    memcpy(r + 4 + nids, p, n);
    slot_put(c->slots, c->mask, h, c->nrec);
    c->nrec += words;
    c->ne++;
}

struct slm_wcache *slm_wcache_new(void)
{
    struct slm_wcache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->slots = calloc(4096, sizeof *c->slots);
    if (!c->slots) {
        free(c);
        return NULL;
    }
    c->mask = 4095;
    return c;
}

/* ---- merging -------------------------------------------------------------- */
typedef struct sym { int32_t prev, next; uint32_t start, n; int32_t id; } sym;
typedef struct bigram { int32_t left, right, rank, a, b, merged; } bigram;

static int before(const bigram *x, const bigram *y)
{
    return x->rank < y->rank || (x->rank == y->rank && x->left < y->left);
}

typedef struct heap { bigram *v; size_t n, cap; } heap;

static int heap_push(heap *h, bigram b)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 256;
        bigram *v = realloc(h->v, sizeof *v * cap);
        if (!v) return -1;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!before(&b, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = b;
    return 0;
}

static bigram heap_pop(heap *h)
{
    bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c])) c++;
        if (!before(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static int add_pair(const slm_tok *t, const sym *sy, int32_t l, int32_t r, heap *h)
{
    if (l < 0 || r < 0 || sy[l].id < 0 || sy[r].id < 0) return 0;
    int32_t rank, merged;
    if (!slm_pairmap_get(&t->merges, sy[l].id, sy[r].id, &rank, &merged)) return 0;
    return heap_push(h, (bigram){l, r, rank, sy[l].id, sy[r].id, merged});
}

/* Byte-level text of raw bytes p[0..n) into w->enc; returns its length. */
static size_t encode_bytes(slm_tok_work *w, const char *p, size_t n)
{
    char *e = grow(w->enc, &w->capenc, 2 * n + 1, 1);
    if (!e) return (size_t)-1;
    w->enc = e;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) k += (size_t)slm_bytelevel_char((uint8_t)p[i], w->enc + k);
    return k;
}

slm_status slm_bpe_encode(const slm_tok *t, slm_tok_work *w, const char *p,
                          size_t n, slm_tok_ids *out, slm_error *err)
{
    if (!n) return SLM_OK;
    if (n > UINT32_MAX) return slm_error_set(err, SLM_ERANGE, "tokenizer: text too long");
    if (t->ignore_merges) {
        /* the whole pre-token is a piece: take it as is */
        int32_t id;
        if (t->byte_level) {
            size_t k = encode_bytes(w, p, n);
            if (k == (size_t)-1) goto oom;
            id = slm_strtab_find(&t->str, w->enc, k);
        } else {
            id = slm_strtab_find(&t->str, p, n);
        }
        if (id >= 0 && id < t->n_vocab) return slm_tok_ids_push(out, id, err);
    }
    sym *sy = grow(w->sym, &w->capsym, n, sizeof(sym));
    if (!sy) goto oom;
    w->sym = sy;
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        size_t l = 1;
        int32_t id;
        if (t->byte_level) {
            id = t->byte_str[(uint8_t)p[off]];
        } else {
            int u = slm_utf8_len((const unsigned char *)p + off, n - off);
            l = u ? (size_t)u : 1;
            id = slm_strtab_find(&t->str, p + off, l);
            if (id >= t->n_vocab) id = -1;
            if (id < 0 && t->byte_fallback) {
                int all = 1;
                for (size_t j = 0; j < l; j++) all &= t->byte_tok[(uint8_t)p[off + j]] >= 0;
                if (all) {
                    /* one symbol per byte token; they take part in no merge
                     * unless the merge table names them */
                    for (size_t j = 0; j < l; j++, ns++)
                        sy[ns] = (sym){ns - 1, ns + 1, (uint32_t)(off + j), 1,
                                       t->byte_tok[(uint8_t)p[off + j]]};
                    off += l;
                    continue;
                }
            }
        }
        sy[ns] = (sym){ns - 1, ns + 1, (uint32_t)off, (uint32_t)l, id};
        ns++;
        off += l;
    }
    sy[ns - 1].next = -1;
    heap hp = {w->heap, 0, w->capheap};
    for (int32_t i = 1; i < ns; i++)
        if (add_pair(t, sy, i - 1, i, &hp)) goto oom_h;
    while (hp.n) {
        bigram b = heap_pop(&hp);
        sym *L = &sy[b.left], *R = &sy[b.right];
        if (!L->n || !R->n || L->next != b.right || L->id != b.a || R->id != b.b)
            continue;
        L->n += R->n;
        L->id = b.merged;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) sy[R->next].prev = b.left;
        if (add_pair(t, sy, L->prev, b.left, &hp)) goto oom_h;
        if (add_pair(t, sy, b.left, L->next, &hp)) goto oom_h;
    }
    w->heap = hp.v;
    w->capheap = hp.cap;
    int prev_unk = 0;
    for (int32_t i = 0; i != -1; i = sy[i].next) {
        int32_t id = sy[i].id;
        if (id >= 0 && id < t->n_vocab) {
            if (slm_tok_ids_push(out, id, err)) return SLM_ENOMEM;
            prev_unk = 0;
            continue;
        }
        if (t->byte_level) {
            /* a merge produced a string that is not a token: the reference
             * then looks up each byte of its text as a one-byte token */
            size_t k = encode_bytes(w, p + sy[i].start, sy[i].n);
            if (k == (size_t)-1) goto oom;
            for (size_t j = 0; j < k; j++) {
                int32_t bt = slm_strtab_find(&t->str, w->enc + j, 1);
                if (bt >= 0 && bt < t->n_vocab && slm_tok_ids_push(out, bt, err))
                    return SLM_ENOMEM;
            }
            continue;
        }
        int32_t unk = t->special[SLM_TOK_UNK];
        if (unk >= 0 && !(t->fuse_unk && prev_unk))
            if (slm_tok_ids_push(out, unk, err)) return SLM_ENOMEM;
        prev_unk = 1;
    }
    return SLM_OK;
oom_h:
    w->heap = hp.v;
    w->capheap = hp.cap;
oom:
    return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
}
