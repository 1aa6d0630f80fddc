/* Token masks (grammar.h): the vocabulary as a byte trie of the tokens'
 * texts, walked from a matcher state. A child is visited only when its
 * byte keeps some stack alive (or leaves an unfinished UTF-8 character
 * that some stack's set can still complete), so a rejected prefix prunes
 * every token below it at once; tokens sharing a prefix share its steps.
 *
 * Masks without a budget limit are cached per state, keyed by the sorted
 * stack set and the unfinished character: inside a JSON string or a long
 * list the state repeats and the mask costs one hash lookup. A cached mask
 * also records the largest distance to completion among the states its
 * tokens lead to, so a budget limit that all of them meet reuses it. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"

#define GR_INF (1 << 28)
#define CACHE_MAX 1024   /* entries before the cache starts over */

struct slm_gvocab {
    int32_t n_vocab;
    uint64_t serial;
    int32_t n_nodes;
    int32_t *child_off;     /* node v's children: [child_off[v], child_off[v+1]) */
    uint8_t *child_byte;
    int32_t *child_node;
    int32_t *tok_off;       /* tokens ending at node v: toks[tok_off[v] .. tok_off[v+1]) */
    int32_t *toks;
    int32_t *eog;
    int32_t n_eog;
};

struct gr_maskent {
    uint64_t hash;
    uint32_t n;
    uint32_t cp;
    uint8_t need, len;
    int32_t maxdist;
    long count;
    int32_t *stacks;
    uint8_t *mask;
};

static atomic_uint_fast64_t vocab_serial;

/* ---------- the trie ---------- */

typedef struct tokpiece { const uint8_t *s; size_t n; int32_t id; } tokpiece;

static int cmp_piece(const void *a, const void *b)
{
    const tokpiece *x = a, *y = b;
    size_t n = x->n < y->n ? x->n : y->n;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    if (x->n != y->n) return x->n < y->n ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

void slm_gvocab_free(slm_gvocab *v)
{
    if (!v) return;
    free(v->child_off);
    free(v->child_byte);
    free(v->child_node);
    free(v->tok_off);
    free(v->toks);
    free(v->eog);
    free(v);
}

int32_t slm_gvocab_size(const slm_gvocab *v) { return v->n_vocab; }
uint64_t slm_gvocab_serial(const slm_gvocab *v) { return v->serial; }

slm_gvocab *slm_gvocab_new(int32_t n, slm_gvocab_piece_fn piece, void *ud, const uint8_t *eog,
                           slm_error *err)
{
    slm_gvocab *v = calloc(1, sizeof *v);
    tokpiece *tp = malloc(sizeof *tp * ((size_t)n + 1));
    uint8_t **copies = calloc((size_t)n + 1, sizeof *copies);
    int32_t *parent = NULL, *tnode = NULL;
    uint8_t *byte = NULL;
    size_t total = 0, m = 0;
    if (!v || !tp || !copies || n < 0) goto oom;
    v->n_vocab = n;
    v->serial = atomic_fetch_add(&vocab_serial, 1) + 1;
    v->eog = malloc(sizeof *v->eog * ((size_t)n + 1));
    if (!v->eog) goto oom;
    for (int32_t id = 0; id < n; id++) {
        if (eog && eog[id]) { v->eog[v->n_eog++] = id; continue; }
        size_t len = 0;
        const char *s = piece(ud, id, &len);
        if (!s || !len) continue;
        if (!(copies[id] = malloc(len))) goto oom;
        memcpy(copies[id], s, len);
        tp[m++] = (tokpiece){ copies[id], len, id };
        total += len;
    }
    qsort(tp, m, sizeof *tp, cmp_piece);
    /* nodes in preorder: one per distinct prefix; a sorted list shares each
     * piece's longest common prefix with the one before */
    parent = malloc(sizeof *parent * (total + 1));
    byte = malloc(total + 1);
    tnode = malloc(sizeof *tnode * (m + 1));
    int32_t *path = malloc(sizeof *path * (total + 1));
    if (!parent || !byte || !tnode || !path) { free(path); goto oom; }
    int32_t nn = 1;
    parent[0] = -1;
    byte[0] = 0;
    path[0] = 0;
    for (size_t i = 0; i < m; i++) {
        size_t l = 0;
        if (i) {
            size_t lim = tp[i].n < tp[i - 1].n ? tp[i].n : tp[i - 1].n;
            while (l < lim && tp[i].s[l] == tp[i - 1].s[l]) l++;
        }
        for (size_t k = l; k < tp[i].n; k++) {
            parent[nn] = path[k];
            byte[nn] = tp[i].s[k];
            path[k + 1] = nn++;
        }
        tnode[i] = path[tp[i].n];
    }
    free(path);
    v->n_nodes = nn;
    v->child_off = calloc((size_t)nn + 1, sizeof *v->child_off);
    v->child_byte = malloc((size_t)nn);
    v->child_node = malloc(sizeof *v->child_node * (size_t)nn);
    v->tok_off = calloc((size_t)nn + 1, sizeof *v->tok_off);
    v->toks = malloc(sizeof *v->toks * (m + 1));
    if (!v->child_off || !v->child_byte || !v->child_node || !v->tok_off || !v->toks) goto oom;
    /* children in preorder come in increasing byte order */
    for (int32_t i = 1; i < nn; i++) v->child_off[parent[i] + 1]++;
    for (int32_t i = 0; i < nn; i++) v->child_off[i + 1] += v->child_off[i];
    int32_t *fill = calloc((size_t)nn, sizeof *fill);
    if (!fill) goto oom;
    for (int32_t i = 1; i < nn; i++) {
        int32_t at = v->child_off[parent[i]] + fill[parent[i]]++;
        v->child_byte[at] = byte[i];
        v->child_node[at] = i;
    }
    free(fill);
    for (size_t i = 0; i < m; i++) v->tok_off[tnode[i] + 1]++;
    for (int32_t i = 0; i < nn; i++) v->tok_off[i + 1] += v->tok_off[i];
    int32_t *tf = calloc((size_t)nn, sizeof *tf);
    if (!tf) goto oom;
    for (size_t i = 0; i < m; i++) v->toks[v->tok_off[tnode[i]] + tf[tnode[i]]++] = tp[i].id;
    free(tf);
    for (int32_t id = 0; id < n; id++) free(copies[id]);
    free(copies);
    free(tp);
    free(parent);
    free(byte);
    free(tnode);
    return v;
oom:
    if (copies)
        for (int32_t id = 0; id < n; id++) free(copies[id]);
    free(copies);
    free(tp);
    free(parent);
    free(byte);
    free(tnode);
    slm_gvocab_free(v);
    slm_error_set(err, SLM_ENOMEM, "grammar: out of memory for the vocabulary trie");
    return NULL;
}

/* ---------- the walk ---------- */

typedef struct walk {
    slm_grammar *g;
    const slm_gvocab *v;
    int32_t limit;        /* < 0: none */
    int32_t maxdist;
    long count;
    uint8_t *mask;
    slm_gstate *lv;       /* one state per depth */
    size_t n_lv;
    slm_error *err;
} walk;

static slm_gstate *level(walk *w, size_t d)
{
    if (d >= w->n_lv) {
        size_t nn = w->n_lv ? w->n_lv * 2 : 16;
        while (nn <= d) nn *= 2;
        slm_gstate *nl = realloc(w->lv, sizeof *nl * nn);
        if (!nl) return NULL;
        memset(nl + w->n_lv, 0, sizeof *nl * (nn - w->n_lv));
        w->lv = nl;
        w->n_lv = nn;
    }
    return &w->lv[d];
}

/* Visits the children of trie node at, whose state is lv[d]. */
static slm_status visit(walk *w, int32_t at, size_t d)
{
    const slm_gvocab *v = w->v;
    for (int32_t c = v->child_off[at]; c < v->child_off[at + 1]; c++) {
        slm_gstate *s = &w->lv[d], *t = level(w, d + 1);
        if (!t) return slm_error_set(w->err, SLM_ENOMEM, "grammar: out of memory");
        s = &w->lv[d];   /* level() may move the array */
        int ok = gr_accept_byte(w->g, s, t, v->child_byte[c], w->err);
        if (ok < 0) return w->err->code;
        if (ok == 0) continue;   /* the byte is rejected: so is every token below */
        int32_t node = v->child_node[c];
        if (v->tok_off[node] < v->tok_off[node + 1]) {
            int32_t dist = slm_gstate_distance(w->g, t);
            if (w->limit < 0 || dist <= w->limit) {
                if (dist > w->maxdist) w->maxdist = dist;
                for (int32_t k = v->tok_off[node]; k < v->tok_off[node + 1]; k++) {
                    int32_t id = v->toks[k];
                    w->mask[id >> 3] |= (uint8_t)(1u << (id & 7));
                    w->count++;
                }
            }
        }
        if (v->child_off[node] < v->child_off[node + 1] && slm_gstate_can_continue(t) &&
            visit(w, node, d + 1))
            return w->err->code;
    }
    return SLM_OK;
}

static long walk_mask(slm_grammar *g, const slm_gvocab *v, const slm_gstate *s, int32_t limit,
                      uint8_t *mask, int32_t *maxdist, slm_error *err)
{
    walk w = { .g = g, .v = v, .limit = limit, .mask = mask, .err = err };
    memset(mask, 0, ((size_t)v->n_vocab + 7) / 8);
    long rc = -1;
    slm_gstate *s0 = level(&w, 0);
    if (!s0) { slm_error_set(err, SLM_ENOMEM, "grammar: out of memory"); goto out; }
    if (slm_gstate_copy(s0, s, err)) goto out;
    if (slm_gstate_can_continue(s) && visit(&w, 0, 0)) goto out;
    if (slm_gstate_complete(s))
        for (int32_t k = 0; k < v->n_eog; k++) {
            mask[v->eog[k] >> 3] |= (uint8_t)(1u << (v->eog[k] & 7));
            w.count++;
        }
    *maxdist = w.maxdist;
    rc = w.count;
out:
    for (size_t i = 0; i < w.n_lv; i++) slm_gstate_free(&w.lv[i]);
    free(w.lv);
    return rc;
}

/* ---------- the cache ---------- */

static uint64_t state_hash(const slm_gstate *s)
{
    uint64_t h = 0xcbf29ce484222325ull ^ ((uint64_t)s->cp << 8 | s->need << 4 | s->len);
    for (uint32_t i = 0; i < s->n; i++) h = (h ^ (uint32_t)s->stacks[i]) * 0x100000001b3ull;
    return h ^ h >> 31;
}

static int same_state(const gr_maskent *e, uint64_t h, const slm_gstate *s)
{
    return e->hash == h && e->n == s->n && e->cp == s->cp && e->need == s->need && e->len == s->len &&
           memcmp(e->stacks, s->stacks, sizeof *s->stacks * s->n) == 0;
}

void gr_cache_free(slm_grammar *g)
{
    for (uint32_t i = 0; i < g->cache_cap; i++)
        if (g->cache[i]) {
            free(g->cache[i]->stacks);
            free(g->cache[i]->mask);
            free(g->cache[i]);
        }
    free(g->cache);
    g->cache = NULL;
    g->cache_cap = g->cache_n = 0;
}

static gr_maskent *cache_find(slm_grammar *g, uint64_t h, const slm_gstate *s, uint32_t *slot)
{
    uint32_t k = (uint32_t)h & (g->cache_cap - 1);
    for (; g->cache[k]; k = (k + 1) & (g->cache_cap - 1))
        if (same_state(g->cache[k], h, s)) return g->cache[k];
    *slot = k;
    return NULL;
}

long slm_grammar_mask(slm_grammar *g, const slm_gvocab *v, const slm_gstate *s, int32_t limit,
                      uint8_t *mask, slm_error *err)
{
    size_t bytes = ((size_t)v->n_vocab + 7) / 8;
    int32_t maxdist = 0;
    if (g->cache_vocab != v->serial || g->cache_n >= CACHE_MAX) {
        gr_cache_free(g);
        g->cache_vocab = v->serial;
    }
    if (!g->cache) {
        g->cache_cap = 2 * CACHE_MAX;
        g->cache = calloc(g->cache_cap, sizeof *g->cache);
        if (!g->cache) {
            g->cache_cap = 0;
            slm_error_set(err, SLM_ENOMEM, "grammar: out of memory");
            return -1;
        }
    }
    uint64_t h = state_hash(s);
    uint32_t slot = 0;
    gr_maskent *e = cache_find(g, h, s, &slot);
    if (!e) {
        gr_maskent *ne = calloc(1, sizeof *ne);
        if (ne) {
            ne->mask = malloc(bytes);
            ne->stacks = malloc(sizeof *ne->stacks * (s->n + 1));
        }
        if (!ne || !ne->mask || !ne->stacks) {
            if (ne) { free(ne->mask); free(ne->stacks); free(ne); }
            slm_error_set(err, SLM_ENOMEM, "grammar: out of memory");
            return -1;
        }
        ne->count = walk_mask(g, v, s, -1, ne->mask, &ne->maxdist, err);
        if (ne->count < 0) {
            free(ne->mask);
            free(ne->stacks);
            free(ne);
            return -1;
        }
        ne->hash = h;
        ne->n = s->n;
        memcpy(ne->stacks, s->stacks, sizeof *s->stacks * s->n);
        ne->cp = s->cp;
        ne->need = s->need;
        ne->len = s->len;
        g->cache[slot] = e = ne;
        g->cache_n++;
    }
    if (limit < 0 || e->maxdist <= limit) {
        memcpy(mask, e->mask, bytes);
        return e->count;
    }
    return walk_mask(g, v, s, limit, mask, &maxdist, err);
}
