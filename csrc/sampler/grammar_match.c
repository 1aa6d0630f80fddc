/* The incremental matcher of grammar.h: hash-consed stacks, their
 * expansion through rule references, and states over bytes.
 *
 * Expansion follows the reference's pushdown automaton (llama.cpp's
 * llama_grammar_advance_stack): a stack whose top is a reference is
 * replaced by one stack per alternative of the referenced rule, over the
 * element after the reference (left out when that is the end of an
 * alternative, so right recursion does not grow the stack); an empty
 * alternative continues with what lies below. Only stacks whose top is a
 * character set, and the empty stack, are kept. Visited nodes are marked,
 * so each distinct stack is expanded once per expansion whatever the
 * ambiguity of the grammar. */
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"

#define GR_INF (1 << 28)

int gr_set_meets(const slm_grammar *g, const gr_set *s, uint32_t lo, uint32_t hi)
{
    const uint32_t *r = s->n ? g->ranges + s->off : NULL;   /* (no ranges at all: ranges is NULL) */
    if (!s->neg) {
        for (uint32_t i = 0; i < s->n; i++)
            if (r[2 * i] <= hi && r[2 * i + 1] >= lo) return 1;
        return 0;
    }
    /* complement: [lo, hi] is not covered by the ranges */
    uint64_t c = lo;
    for (int moved = 1; moved;) {
        moved = 0;
        for (uint32_t i = 0; i < s->n; i++)
            if (c >= r[2 * i] && c <= r[2 * i + 1]) { c = (uint64_t)r[2 * i + 1] + 1; moved = 1; }
        if (c > hi) return 0;
    }
    return 1;
}

int gr_set_has(const slm_grammar *g, const gr_set *s, uint32_t cp)
{
    if (cp < 128) return (int)(s->ascii[cp >> 6] >> (cp & 63) & 1);
    return gr_set_meets(g, s, cp, cp);
}

/* ---------- the pool ---------- */

static uint32_t hash2(int32_t a, int32_t b)
{
    uint64_t x = (uint64_t)(uint32_t)a * 0x9E3779B97F4A7C15ull ^ (uint64_t)(uint32_t)b * 0xC2B2AE3D27D4EB4Full;
    x ^= x >> 29;
    return (uint32_t)(x ^ x >> 32);
}

static slm_status pool_fail(slm_error *err, int full)
{
    if (full) return slm_error_set(err, SLM_ERANGE, "grammar: more than %d parser stacks (an ambiguous "
                                   "grammar or a very long match)", GR_MAX_NODES);
    return slm_error_set(err, SLM_ENOMEM, "grammar: out of memory");
}

static slm_status rehash(slm_grammar *g, uint32_t cap, slm_error *err)
{
    int32_t *h = malloc(sizeof *h * cap);
    if (!h) return pool_fail(err, 0);
    memset(h, 0xff, sizeof *h * cap);
    for (int32_t i = 1; i < g->n_nodes; i++) {
        uint32_t k = hash2(g->nodes[i].pos, g->nodes[i].parent) & (cap - 1);
        while (h[k] >= 0) k = (k + 1) & (cap - 1);
        h[k] = i;
    }
    free(g->hash);
    g->hash = h;
    g->hash_cap = cap;
    return SLM_OK;
}

/* The node (pos, parent), made if new; -1 with err on failure. */
static int32_t cons(slm_grammar *g, int32_t pos, int32_t parent, slm_error *err)
{
    uint32_t k = hash2(pos, parent) & (g->hash_cap - 1);
    for (int32_t id; (id = g->hash[k]) >= 0; k = (k + 1) & (g->hash_cap - 1))
        if (g->nodes[id].pos == pos && g->nodes[id].parent == parent) return id;
    if (g->n_nodes >= GR_MAX_NODES) return pool_fail(err, 1), -1;
    if (g->n_nodes == g->cap_nodes) {
        int32_t nc = g->cap_nodes * 2;
        gr_node *nn = realloc(g->nodes, sizeof *nn * (size_t)nc);
        if (!nn) return pool_fail(err, 0), -1;
        g->nodes = nn;
        uint32_t *nm = realloc(g->mark, sizeof *nm * (size_t)nc);
        if (!nm) return pool_fail(err, 0), -1;
        memset(nm + g->cap_nodes, 0, sizeof *nm * (size_t)(nc - g->cap_nodes));
        g->mark = nm;
        g->cap_nodes = nc;
    }
    int32_t id = g->n_nodes++;
    int32_t pd = g->nodes[parent].dist, sd = g->suffix[pos];
    g->nodes[id] = (gr_node){ pos, parent, 0, -1, pd >= GR_INF - sd ? GR_INF : pd + sd };
    g->hash[k] = id;
    if ((uint32_t)g->n_nodes * 2 > g->hash_cap && rehash(g, g->hash_cap * 2, err)) return -1;
    return id;
}

static slm_status push_work(slm_grammar *g, size_t *n, int32_t id, slm_error *err)
{
    if (*n == g->cap_work) {
        size_t nc = g->cap_work * 2;
        int32_t *nw = realloc(g->work, sizeof *nw * nc);
        if (!nw) return pool_fail(err, 0);
        g->work = nw;
        g->cap_work = nc;
    }
    g->work[(*n)++] = id;
    return SLM_OK;
}

static slm_status push_succ(slm_grammar *g, int32_t id, slm_error *err)
{
    if (g->n_succ == g->cap_succ) {
        size_t nc = g->cap_succ * 2;
        int32_t *ns = realloc(g->succ, sizeof *ns * nc);
        if (!ns) return pool_fail(err, 0);
        g->succ = ns;
        g->cap_succ = nc;
    }
    g->succ[g->n_succ++] = id;
    return SLM_OK;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Expands the stacks on the worklist (n of them) and appends the resulting
 * set-topped and empty stacks to g->succ, sorted and distinct. */
static slm_status expand(slm_grammar *g, size_t n, slm_error *err)
{
    size_t first = g->n_succ;
    if (++g->epoch == 0) {   /* wrapped: forget every mark */
        memset(g->mark, 0, sizeof *g->mark * (size_t)g->cap_nodes);
        g->epoch = 1;
    }
    while (n) {
        int32_t id = g->work[--n];
        if (g->mark[id] == g->epoch) continue;
        g->mark[id] = g->epoch;
        int32_t pos = g->nodes[id].pos, parent = g->nodes[id].parent;
        if (id == 0 || g->el[pos].kind == GR_SET) {
            if (push_succ(g, id, err)) return SLM_ENOMEM;
            continue;
        }
        /* a reference: one stack per alternative over the return point */
        int32_t r = g->el[pos].arg, base = parent;
        if (g->el[pos + 1].kind != GR_END && (base = cons(g, pos + 1, parent, err)) < 0) return err->code;
        for (int32_t a = g->rule_alt[r]; a < g->rule_alt[r + 1]; a++) {
            int32_t start = g->alt[a], t = base;
            if (g->el[start].kind != GR_END && (t = cons(g, start, base, err)) < 0) return err->code;
            if (push_work(g, &n, t, err)) return SLM_ENOMEM;
        }
    }
    qsort(g->succ + first, g->n_succ - first, sizeof *g->succ, cmp_i32);
    return SLM_OK;
}

const int32_t *gr_succ(slm_grammar *g, int32_t id, int32_t *n, slm_error *err)
{
    if (g->nodes[id].succ_n < 0) {
        int32_t pos = g->nodes[id].pos, next = g->nodes[id].parent;
        if (g->el[pos + 1].kind != GR_END && (next = cons(g, pos + 1, next, err)) < 0) return NULL;
        size_t first = g->n_succ, nw = 0;
        if (push_work(g, &nw, next, err) || expand(g, nw, err)) {
            g->n_succ = first;
            return NULL;
        }
        g->nodes[id].succ_off = (int32_t)first;
        g->nodes[id].succ_n = (int32_t)(g->n_succ - first);
    }
    *n = g->nodes[id].succ_n;
    return g->succ + g->nodes[id].succ_off;
}

slm_status gr_pool_init(slm_grammar *g, slm_error *err)
{
    g->cap_nodes = 1024;
    g->nodes = malloc(sizeof *g->nodes * (size_t)g->cap_nodes);
    g->mark = calloc((size_t)g->cap_nodes, sizeof *g->mark);
    g->cap_work = 256;
    g->work = malloc(sizeof *g->work * g->cap_work);
    g->cap_succ = 1024;
    g->succ = malloc(sizeof *g->succ * g->cap_succ);
    g->hash_cap = 4096;
    g->hash = malloc(sizeof *g->hash * g->hash_cap);
    if (!g->nodes || !g->mark || !g->work || !g->succ || !g->hash) return pool_fail(err, 0);
    memset(g->hash, 0xff, sizeof *g->hash * g->hash_cap);
    g->nodes[0] = (gr_node){ -1, -1, 0, 0, 0 };   /* the empty stack: no successors */
    g->n_nodes = 1;
    /* the start: the root rule's alternatives over the empty stack */
    size_t nw = 0, first = g->n_succ;
    for (int32_t a = g->rule_alt[g->root]; a < g->rule_alt[g->root + 1]; a++) {
        int32_t start = g->alt[a], t = 0;
        if (g->el[start].kind != GR_END && (t = cons(g, start, 0, err)) < 0) return err->code;
        if (push_work(g, &nw, t, err)) return SLM_ENOMEM;
    }
    if (expand(g, nw, err)) return err->code;
    g->n_init = (uint32_t)(g->n_succ - first);
    g->init = malloc(sizeof *g->init * (g->n_init + 1));
    if (!g->init) return pool_fail(err, 0);
    memcpy(g->init, g->succ + first, sizeof *g->init * g->n_init);
    g->n_succ = first;
    return SLM_OK;
}

void gr_pool_free(slm_grammar *g)
{
    free(g->nodes);
    free(g->mark);
    free(g->work);
    free(g->succ);
    free(g->hash);
    free(g->init);
}

/* ---------- states ---------- */

static slm_status reserve(int32_t **v, uint32_t *cap, size_t need, slm_error *err)
{
    if (need <= *cap) return SLM_OK;
    size_t nc = *cap ? *cap : 8;
    while (nc < need) nc *= 2;
    if (nc > UINT32_MAX / 2) return pool_fail(err, 1);
    int32_t *nv = realloc(*v, sizeof *nv * nc);
    if (!nv) return pool_fail(err, 0);
    *v = nv;
    *cap = (uint32_t)nc;
    return SLM_OK;
}

slm_status gr_step(slm_grammar *g, const int32_t *in, uint32_t n, uint32_t cp, int32_t **out,
                   uint32_t *out_n, uint32_t *out_cap, slm_error *err)
{
    size_t m = 0;
    int lists = 0;
    for (uint32_t i = 0; i < n; i++) {
        int32_t id = in[i];
        if (id == 0 || !gr_set_has(g, &g->sets[g->el[g->nodes[id].pos].arg], cp)) continue;
        lists++;
        int32_t k;
        const int32_t *s = gr_succ(g, id, &k, err);
        if (!s) return err->code;
        if (reserve(out, out_cap, m + (size_t)k, err)) return err->code;
        s = g->succ + g->nodes[id].succ_off;   /* reserve does not move g->succ; kept explicit */
        memcpy(*out + m, s, sizeof **out * (size_t)k);
        m += (size_t)k;
    }
    /* the union, sorted and distinct (each list is sorted; lists overlap) */
    if (m > 1 && lists > 1) {
        qsort(*out, m, sizeof **out, cmp_i32);
        size_t w = 1;
        for (size_t i = 1; i < m; i++)
            if ((*out)[i] != (*out)[w - 1]) (*out)[w++] = (*out)[i];
        m = w;
    }
    *out_n = (uint32_t)m;
    return SLM_OK;
}

void gr_partial_range(uint32_t cp, uint8_t need, uint8_t len, uint32_t *lo, uint32_t *hi)
{
    static const uint32_t least[5] = { 0, 0, 0x80, 0x800, 0x10000 };
    *lo = cp << (6 * need);
    *hi = *lo | ((1u << (6 * need)) - 1);
    if (*lo < least[len]) *lo = least[len];
    if (*hi > 0x10FFFF) *hi = 0x10FFFF;
}

slm_status slm_gstate_init(slm_grammar *g, slm_gstate *s, slm_error *err)
{
    memset(s, 0, sizeof *s);
    if (reserve(&s->stacks, &s->cap, g->n_init, err)) return err->code;
    memcpy(s->stacks, g->init, sizeof *s->stacks * g->n_init);
    s->n = g->n_init;
    return SLM_OK;
}

void slm_gstate_free(slm_gstate *s)
{
    free(s->stacks);
    memset(s, 0, sizeof *s);
}

slm_status slm_gstate_copy(slm_gstate *dst, const slm_gstate *src, slm_error *err)
{
    if (reserve(&dst->stacks, &dst->cap, src->n, err)) return err->code;
    memcpy(dst->stacks, src->stacks, sizeof *src->stacks * src->n);
    dst->n = src->n;
    dst->cp = src->cp;
    dst->need = src->need;
    dst->len = src->len;
    return SLM_OK;
}

/* Some stack's top set admits a character in the unfinished one's range. */
static int partial_viable(const slm_grammar *g, const slm_gstate *s)
{
    uint32_t lo, hi;
    gr_partial_range(s->cp, s->need, s->len, &lo, &hi);
    for (uint32_t i = 0; i < s->n; i++) {
        int32_t id = s->stacks[i];
        if (id && gr_set_meets(g, &g->sets[g->el[g->nodes[id].pos].arg], lo, hi)) return 1;
    }
    return 0;
}

int gr_accept_byte(slm_grammar *g, const slm_gstate *s, slm_gstate *t, uint8_t byte, slm_error *err)
{
    unsigned c = byte;
    uint32_t cp;
    uint8_t need = s->need, len = s->len;
    if (need == 0) {
        if (c < 0x80) cp = c;
        else {
            len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
            if (!len) return 0;
            cp = c & (len == 2 ? 0x1F : len == 3 ? 0x0F : 0x07);
            need = (uint8_t)(len - 1);
        }
    } else {
        if ((c & 0xC0) != 0x80) return 0;
        if (need == len - 1) {   /* second byte: overlong forms and surrogates */
            if (len == 3 && s->cp == 0 && c < 0xA0) return 0;
            if (len == 3 && s->cp == 0xD && c > 0x9F) return 0;
            if (len == 4 && s->cp == 0 && c < 0x90) return 0;
            if (len == 4 && s->cp == 4 && c > 0x8F) return 0;
        }
        cp = s->cp << 6 | (c & 0x3F);
        need--;
    }
    if (need) {   /* an unfinished character: the same stacks, if one can take it */
        slm_gstate probe = *s;
        probe.cp = cp;
        probe.need = need;
        probe.len = len;
        if (!partial_viable(g, &probe)) return 0;
        if (slm_gstate_copy(t, &probe, err)) return -1;
        return 1;
    }
    if (gr_step(g, s->stacks, s->n, cp, &t->stacks, &t->n, &t->cap, err)) return -1;
    if (t->n == 0) return 0;
    t->cp = 0;
    t->need = 0;
    t->len = 0;
    return 1;
}

long slm_gstate_accept(slm_grammar *g, slm_gstate *s, const uint8_t *b, size_t n, slm_error *err)
{
    slm_gstate t = { 0 };
    long done = 0;
    for (; (size_t)done < n; done++) {
        int r = gr_accept_byte(g, s, &t, b[done], err);
        if (r < 0) {
            slm_gstate_free(&t);
            return -1;
        }
        if (r == 0) break;
        slm_gstate sw = *s;   /* t becomes the state; the old buffer is reused */
        *s = t;
        t = sw;
    }
    slm_gstate_free(&t);
    return done;
}

int slm_gstate_complete(const slm_gstate *s)
{
    return s->need == 0 && s->n > 0 && s->stacks[0] == 0;   /* sorted: node 0 comes first */
}

int slm_gstate_can_continue(const slm_gstate *s)
{
    return s->need > 0 || s->n > 1 || (s->n == 1 && s->stacks[0] != 0);
}

int32_t slm_gstate_distance(slm_grammar *g, const slm_gstate *s)
{
    int32_t best = GR_INF;
    uint32_t lo = 0, hi = 0;
    if (s->need) gr_partial_range(s->cp, s->need, s->len, &lo, &hi);
    for (uint32_t i = 0; i < s->n; i++) {
        const gr_node *nd = &g->nodes[s->stacks[i]];
        int32_t d = nd->dist;
        if (s->need) {
            if (s->stacks[i] == 0) continue;
            const gr_set *set = &g->sets[g->el[nd->pos].arg];
            if (!gr_set_meets(g, set, lo, hi)) continue;
            d = d >= GR_INF ? GR_INF : d - set->minbytes + s->need;
        }
        if (d < best) best = d;
    }
    return best >= GR_INF ? INT32_MAX : best;
}
