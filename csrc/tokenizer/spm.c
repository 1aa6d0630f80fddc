/* SentencePiece-style BPE (llama, phi-3, llama2.c vocabularies).
 *
 * As llama.cpp's llm_tokenizer_spm_session: the text (spaces already
 * U+2581) is cut into UTF-8 characters; every adjacent pair whose
 * concatenation is a vocabulary piece goes into a queue ordered by that
 * piece's score (ties: leftmost first); the best pair is merged, its
 * neighbours re-queued, until the queue is empty. Final symbols that are not
 * pieces are emitted as their bytes' <0xNN> tokens (byte fallback).
 * Symbols are always adjacent spans of the text, so a pair's concatenation
 * is the span from the left start to the right end: no string building. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct sym { int32_t prev, next; uint32_t start, n; } sym;
typedef struct bigram { int32_t left, right; float score; uint32_t size; } bigram;

static int better(const bigram *a, const bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
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
        if (!better(&b, &h->v[p])) break;
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
        if (c + 1 < h->n && better(&h->v[c + 1], &h->v[c])) c++;
        if (!better(&h->v[c], &last)) break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n) h->v[i] = last;
    return top;
}

static int try_add(const slm_tok *t, const char *s, const sym *sy, int32_t l,
                   int32_t r, heap *h)
{
    if (l < 0 || r < 0) return 0;
    size_t len = sy[l].n + sy[r].n;
    int32_t id = slm_strtab_find(&t->str, s + sy[l].start, len);
    if (id < 0 || id >= t->n_vocab) return 0;
    return heap_push(h, (bigram){l, r, t->scores[id], (uint32_t)len});
}

slm_status slm_spm_encode(const slm_tok *t, slm_tok_work *w, const char *s,
                          size_t n, slm_tok_ids *out, slm_error *err)
{
    if (!n) return SLM_OK;
    if (n > UINT32_MAX) return slm_error_set(err, SLM_ERANGE, "tokenizer: text too long");
    if (w->capsym < n) {
        free(w->sym);
        w->sym = malloc(sizeof(sym) * n);
        w->capsym = w->sym ? n : 0;
        if (!w->sym) goto oom;
    }
    sym *sy = w->sym;
    heap h = {w->heap, 0, w->capheap};
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        int l = slm_utf8_len((const unsigned char *)s + off, n - off);
        if (!l) l = 1;  /* invalid byte: a symbol of its own */
        sy[ns] = (sym){ns - 1, off + (size_t)l == n ? -1 : ns + 1, (uint32_t)off,
                       (uint32_t)l};
        ns++;
        off += (size_t)l;
    }
    for (int32_t i = 1; i < ns; i++)
        if (try_add(t, s, sy, i - 1, i, &h)) goto oom_h;
    while (h.n) {
        bigram b = heap_pop(&h);
        sym *L = &sy[b.left], *R = &sy[b.right];
        if (!L->n || !R->n || L->n + R->n != b.size) continue;
        L->n += R->n;
        R->n = 0;
        L->next = R->next;
        if (R->next >= 0) sy[R->next].prev = b.left;
        if (try_add(t, s, sy, L->prev, b.left, &h)) goto oom_h;
        if (try_add(t, s, sy, b.left, L->next, &h)) goto oom_h;
    }
    w->heap = h.v;
    w->capheap = h.cap;
    for (int32_t i = 0; i != -1; i = sy[i].next) {
        int32_t id = slm_strtab_find(&t->str, s + sy[i].start, sy[i].n);
        if (id >= 0 && id < t->n_vocab) {
            if (slm_tok_ids_push(out, id, err)) return SLM_ENOMEM;
            continue;
        }
        for (uint32_t j = 0; j < sy[i].n; j++) {
            int32_t bt = t->byte_tok[(uint8_t)s[sy[i].start + j]];
            if (bt < 0) bt = t->special[SLM_TOK_UNK];
            if (bt >= 0 && slm_tok_ids_push(out, bt, err)) return SLM_ENOMEM;
        }
    }
    return SLM_OK;
oom_h:
    w->heap = h.v;
    w->capheap = h.cap;
oom:
    return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
}
