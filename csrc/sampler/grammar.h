/* GBNF grammars for constrained decoding: a parser for the reference's
 * dialect (llama.cpp's grammars/README.md), an incremental matcher over
 * bytes, and masks of the vocabulary tokens that keep a match alive.
 *
 * Compilation (grammar_parse.c) turns the text into rules whose
 * alternatives are flat sequences of two kinds of element: a character set
 * (literals are one set per code point, `.` and classes one set each) and a
 * reference to a rule. Groups and repetitions become generated rules
 * (x* -> R ::= x R | empty; x{2,4} -> x x R2, R2 ::= x R1 | empty, ...).
 * Left recursion is refused: the matcher expands references eagerly and
 * would never stop.
 *
 * Matching (grammar_match.c) is a pushdown automaton over code points: the
 * state is a set of stacks, each stack a path of positions in the rules
 * whose top is a character set. Stacks are hash-consed nodes (position,
 * parent) in a pool owned by the grammar, so a stack is one int32, a state
 * is a small sorted array of them, and copying a state is cheap. The stacks
 * that follow a node once its top set has matched do not depend on which
 * code point matched; they are computed once per node and remembered. The
 * empty stack (node 0) means the grammar can stop here.
 *
 * A grammar and its matchers are used by one thread at a time (the pool and
 * the caches grow as matching goes). */
#ifndef SLM_GRAMMAR_H
#define SLM_GRAMMAR_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

typedef struct slm_grammar slm_grammar;

/* Compiles text[0..len) with start rule root (NULL: "root"). NULL on
 * failure with SLM_EINVAL and "grammar:LINE:COL: what" (1-based), or a
 * message naming the rule (undefined, left-recursive), or SLM_ENOMEM. */
slm_grammar *slm_grammar_compile(const char *text, size_t len, const char *root,
                                 slm_error *err);
void slm_grammar_free(slm_grammar *g);   /* NULL is fine */

/* The rules as GBNF-like text, generated rules included (malloc'ed, NUL-
 * terminated; NULL on memory). */
char *slm_grammar_describe(const slm_grammar *g);

/* A matcher state: a sorted set of stacks plus the bytes of an unfinished
 * UTF-8 character. Plain data: copy with slm_gstate_copy. */
typedef struct slm_gstate {
    int32_t *stacks;
    uint32_t n, cap;
    uint32_t cp;      /* bits of the unfinished character so far */
    uint8_t need;     /* continuation bytes still expected (0: none) */
    uint8_t len;      /* the unfinished character's total length */
} slm_gstate;

/* The state before any input. */
slm_status slm_gstate_init(slm_grammar *g, slm_gstate *s, slm_error *err);
void slm_gstate_free(slm_gstate *s);
slm_status slm_gstate_copy(slm_gstate *dst, const slm_gstate *src, slm_error *err);

/* Feeds bytes. Returns the number of bytes accepted: n when all were, less
 * when byte [ret] is not a valid continuation (the state is then left as
 * it was after byte ret-1). SLM_ENOMEM-like failures return -1 with err. */
long slm_gstate_accept(slm_grammar *g, slm_gstate *s, const uint8_t *bytes, size_t n,
                       slm_error *err);
/* The grammar may stop here (an empty stack, no unfinished character). */
int slm_gstate_complete(const slm_gstate *s);
/* Some continuation exists (a non-empty stack or an unfinished character). */
int slm_gstate_can_continue(const slm_gstate *s);
/* Fewest bytes still needed to complete (0 when complete; INT32_MAX when
 * the grammar can never complete from here). */
int32_t slm_gstate_distance(slm_grammar *g, const slm_gstate *s);

/* Vocabularies seen as a byte trie of the tokens' texts (grammar_mask.c). */
typedef struct slm_gvocab slm_gvocab;
/* n tokens; piece(ud, id, &len) gives token id's bytes (NULL or len 0:
 * the token never matches grammar text: controls, unused); eog[id] != 0
 * for end-of-generation ids (may be NULL). */
typedef const char *(*slm_gvocab_piece_fn)(void *ud, int32_t id, size_t *len);
slm_gvocab *slm_gvocab_new(int32_t n, slm_gvocab_piece_fn piece, void *ud,
                           const uint8_t *eog, slm_error *err);
void slm_gvocab_free(slm_gvocab *v);
int32_t slm_gvocab_size(const slm_gvocab *v);

/* The tokens allowed after state s: bit id of mask (n_vocab bits, the
 * caller's buffer of (n+7)/8 bytes) is set when the token's bytes keep the
 * match alive; end-of-generation ids when s is complete. limit >= 0 keeps
 * only tokens after which the grammar can still complete within limit
 * bytes (generation with a token budget); < 0: no limit. Masks without a
 * limit are cached per state (stack set and unfinished character). Returns
 * the number of allowed ids, or -1 with err. */
long slm_grammar_mask(slm_grammar *g, const slm_gvocab *v, const slm_gstate *s, int32_t limit,
                      uint8_t *mask, slm_error *err);

/* The ranges of PCRE2's \d, \s or \w under UCP (which: 'd', 's', 'w') as
 * the inside of a GBNF class ("\U00000030-\U00000039..."; malloc'ed; NULL
 * with err on a bad name or memory). grammar_unicode.c */
char *slm_grammar_unicode_class(char which, slm_error *err);

/* Internal: the vocabulary serial number that identifies v in caches. */
uint64_t slm_gvocab_serial(const slm_gvocab *v);

#endif
