/* What grammar_parse.c, grammar_match.c and grammar_mask.c share: the
 * compiled form of a grammar and its stack pool (see grammar.h). */
#ifndef SLM_GRAMMAR_INTERNAL_H
#define SLM_GRAMMAR_INTERNAL_H

#include "grammar.h"

/* Element kinds of a rule's flattened alternatives. */
enum { GR_END = 0, GR_SET, GR_REF };

typedef struct gr_elem {
    int32_t kind;
    int32_t arg;   /* GR_SET: index of the set; GR_REF: index of the rule */
} gr_elem;

/* A character set: ranges[off .. off + n) as (lo, hi) pairs, inclusive;
 * neg: the complement. ascii: the answer for code points < 128. minbytes:
 * the UTF-8 length of the smallest code point it admits (5 when none). */
typedef struct gr_set {
    uint32_t off, n;
    uint8_t neg, minbytes;
    uint64_t ascii[2];
} gr_set;

/* A stack node: top position pos (an element index) over parent (node 0
 * is the empty stack: pos -1). succ: the stacks after the top set matched
 * (computed on first use; succ_n < 0 until then). dist: fewest bytes to
 * complete from this stack. */
typedef struct gr_node {
    int32_t pos, parent;
    int32_t succ_off, succ_n;
    int32_t dist;
} gr_node;

typedef struct gr_maskent gr_maskent;

struct slm_grammar {
    /* compiled rules */
    gr_elem *el;            /* all alternatives, each ended by GR_END */
    int32_t n_el;
    int32_t *alt;           /* start element of each alternative */
    int32_t *rule_alt;      /* rule r's alternatives: alt[rule_alt[r] .. rule_alt[r+1]) */
    int32_t n_rules;
    char **names;           /* rule names (generated ones say where they come from) */
    gr_set *sets;
    int32_t n_sets;
    uint32_t *ranges;
    int32_t root;
    int32_t *suffix;        /* per element: fewest bytes from it to its END */
    int32_t *minlen;        /* per rule: fewest bytes it matches */

    /* stack pool */
    gr_node *nodes;
    int32_t n_nodes, cap_nodes;
    int32_t *hash;          /* open addressing over (pos, parent): node ids, -1 free */
    uint32_t hash_cap;
    int32_t *succ;          /* successor lists */
    size_t n_succ, cap_succ;
    uint32_t *mark;         /* per node: epoch of the last visit */
    uint32_t epoch;
    int32_t *work;          /* scratch worklist */
    size_t cap_work;
    int32_t *init;          /* the initial stack set */
    uint32_t n_init;

    /* mask cache (grammar_mask.c) */
    gr_maskent **cache;
    uint32_t cache_cap, cache_n;
    uint64_t cache_vocab;
};

/* Pool limit: a grammar whose matching would need more stacks fails with
 * an error instead of growing without bound. */
#define GR_MAX_NODES (1 << 24)

/* grammar_match.c */
int gr_set_has(const slm_grammar *g, const gr_set *s, uint32_t cp);
/* Some code point in [lo, hi] is in the set. */
int gr_set_meets(const slm_grammar *g, const gr_set *s, uint32_t lo, uint32_t hi);
/* The successors of node id (a stack whose top is a set); NULL with err on
 * memory or pool exhaustion. */
const int32_t *gr_succ(slm_grammar *g, int32_t id, int32_t *n, slm_error *err);
/* Prepares the pool after compilation (initial set, node 0). */
slm_status gr_pool_init(slm_grammar *g, slm_error *err);
void gr_pool_free(slm_grammar *g);
/* Steps a sorted stack set over one code point: out gets the sorted set
 * (capacity grown as needed). */
slm_status gr_step(slm_grammar *g, const int32_t *in, uint32_t n, uint32_t cp,
                   int32_t **out, uint32_t *out_n, uint32_t *out_cap, slm_error *err);
/* Feeds one byte to state s, writing the next state into t (t's buffer is
 * reused; t != s): 1 accepted, 0 refused (t unspecified), -1 error. */
int gr_accept_byte(slm_grammar *g, const slm_gstate *s, slm_gstate *t, uint8_t byte, slm_error *err);
/* The range of code points an unfinished character can still become. */
void gr_partial_range(uint32_t cp, uint8_t need, uint8_t len, uint32_t *lo, uint32_t *hi);

/* grammar_mask.c */
void gr_cache_free(slm_grammar *g);

#endif
