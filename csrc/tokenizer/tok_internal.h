/* Internals shared by the tokenizer files (not part of the public API). */
#ifndef SLM_TOK_INTERNAL_H
#define SLM_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* ---- strtab.c: interned strings (id -> bytes, bytes -> id) ------------- */
typedef struct slm_strtab {
    char *bytes;            /* all strings back to back, each NUL-terminated */
    size_t nbytes, capbytes;
    uint32_t *off, *len;    /* by id */
    int32_t n, cap;
    int32_t *slots;         /* open addressing: id or -1 */
    uint32_t mask;
} slm_strtab;

uint64_t slm_hash_bytes(const void *p, size_t n);
void slm_strtab_free(slm_strtab *s);
/* Id of the string, or -1. */
int32_t slm_strtab_find(const slm_strtab *s, const char *p, size_t n);
/* Id of the string, adding it if new (*added set); -1 on ENOMEM. */
int32_t slm_strtab_add(slm_strtab *s, const char *p, size_t n, int *added);
static inline const char *slm_strtab_str(const slm_strtab *s, int32_t id,
                                         size_t *len)
{
    *len = s->len[id];
    return s->bytes + s->off[id];
}

/* Pair map for BPE merges: (left id, right id) -> (rank, merged id). */
typedef struct slm_pairmap {
    uint64_t *keys;         /* (a << 32 | b) + 1; 0 = empty */
    int32_t *rank, *merged;
    size_t n, mask;
} slm_pairmap;

void slm_pairmap_free(slm_pairmap *m);
/* Inserts unless present (the first rank wins, as in the references). */
int slm_pairmap_put(slm_pairmap *m, int32_t a, int32_t b, int32_t rank,
                    int32_t merged);
static inline int slm_pairmap_get(const slm_pairmap *m, int32_t a, int32_t b,
                                  int32_t *rank, int32_t *merged)
{
    if (!m->keys) return 0;
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & m->mask;
    for (;;) {
        uint64_t k = m->keys[i];
        if (k == key) { *rank = m->rank[i]; *merged = m->merged[i]; return 1; }
        if (k == 0) return 0;
        i = (i + 1) & m->mask;
    }
}

/* ---- pretok.c: pre-tokenizer and normalizer steps ------------------------ */
typedef struct slm_span { const char *p; size_t n; } slm_span;

/* Work buffers of one encode call (never shared between threads). */
typedef struct slm_tok_work {
    slm_span *a, *b;        /* piece lists (ping-pong) */
    size_t na, nb, capa, capb;
    char **bufs;            /* texts made by transforming steps */
    size_t nbufs, capbufs;
    void *match_data;       /* pcre2_match_data */
    /* bpe.c scratch */
    void *sym; size_t capsym;
    void *heap; size_t capheap;
    char *enc; size_t capenc;
    struct slm_wcache *cache;
} slm_tok_work;

typedef enum slm_split_behavior {
    SLM_SPLIT_ISOLATED = 0, SLM_SPLIT_REMOVED, SLM_SPLIT_MERGED_PREV,
    SLM_SPLIT_MERGED_NEXT, SLM_SPLIT_CONTIGUOUS
} slm_split_behavior;

typedef enum slm_step_kind {
    SLM_STEP_SPLIT = 0,     /* regex split with a behaviour */
    SLM_STEP_PREFIX_SPACE,  /* ByteLevel add_prefix_space */
    SLM_STEP_METASPACE,     /* ' ' -> replacement, prepend, split */
    /* normalizers (whole sections) */
    SLM_STEP_NFC, SLM_STEP_NFD, SLM_STEP_NFKC, SLM_STEP_NFKD,
    SLM_STEP_LOWER, SLM_STEP_PREPEND, SLM_STEP_REPLACE, SLM_STEP_STRIP
} slm_step_kind;

typedef struct slm_step {
    slm_step_kind kind;
    void *re;               /* pcre2_code (SPLIT) */
    int jit;                /* re was JIT-compiled: call the JIT directly */
    slm_split_behavior behavior;
    int invert;
    int prepend_scheme;     /* METASPACE: 0 always, 1 first, 2 never */
    int split;              /* METASPACE */
    int left, right;        /* STRIP */
    char *s1, *s2;          /* PREPEND text / REPLACE pattern, content */
    size_t n1, n2;
} slm_step;

typedef struct slm_steps {
    slm_step *v;
    int n, cap;
} slm_steps;

/* Compiles a regex split step (UTF, UCP, invalid-UTF tolerant, JIT). */
slm_status slm_steps_add_regex(slm_steps *s, const char *pattern,
                               slm_split_behavior behavior, int invert,
                               slm_error *err);
slm_step *slm_steps_push(slm_steps *s, slm_step_kind kind, slm_error *err);
void slm_steps_free(slm_steps *s);
/* The regex sequence llama.cpp uses for a tokenizer.ggml.pre name; returns
 * SLM_EUNSUPPORTED for an unknown name. */
slm_status slm_pretok_for_gguf(slm_steps *s, const char *pre, slm_error *err);
/* The regex of a single-regex pre-tokenizer name, or NULL. */
const char *slm_pretok_regex(const char *pre);
/* Runs normalizer steps over one section: returns a span that may point into
 * a work buffer. */
slm_status slm_normalize(const slm_steps *s, slm_tok_work *w, slm_span in,
                         slm_span *out, slm_error *err);
/* Runs pre-tokenizer steps over one section; the pieces end in w->a[0..na). */
slm_status slm_pretokenize(const slm_steps *s, slm_tok_work *w, slm_span in,
                           int first_section, slm_error *err);
void slm_tok_work_free(slm_tok_work *w);
/* slm_tok_encode with caller-owned work buffers (kept warm across calls). */
slm_status slm_tok_encode_work(const slm_tok *t, slm_tok_work *w, const char *text,
                               size_t len, int add_special, int parse_special,
                               slm_tok_ids *out, slm_error *err);
char *slm_work_buf(slm_tok_work *w, size_t n);  /* NULL on ENOMEM */

/* ---- the tokenizer object ------------------------------------------------ */
struct slm_tok {
    slm_tok_kind kind;
    char model[32], pre[64];
    int32_t n_vocab;
    slm_strtab str;         /* ids < n_vocab are tokens; more = merge parts */
    float *scores;          /* SPM */
    uint8_t *attr;          /* SLM_TOKATTR_* by id */
    int32_t special[SLM_TOK_N_SPECIAL];
    int32_t *eog; int n_eog;
    /* fill-in-the-middle pad, repository and file-separator ids the file
     * names (-1: found by text in slm_tok_finish); they end generation */
    int32_t fim_pad, fim_rep, fim_sep;
    int add_bos, add_eos, add_space_prefix, escape_ws, ignore_merges;
    int byte_level;         /* GPT-2 byte characters */
    int byte_fallback;      /* unknown characters -> <0xNN> tokens */
    int fuse_unk;
    int32_t byte_tok[256];  /* token of each byte (or -1) */
    int32_t byte_str[256];  /* byte-level: strtab id of each byte's char */
    slm_pairmap merges;
    /* Pairs of adjacent characters that occur inside some piece: between
     * two characters not in this set no merge can ever happen, so the text
     * is cut there into independent words (SPM and character-level BPE). */
    slm_pairmap bigrams;
    slm_steps norm, pre_steps;
    int32_t *specials; int n_specials; /* split-out candidates, longest first */
    /* Hugging Face decoders: U+2581 -> ' ', strip the first leading space */
    int decode_meta, decode_strip_lead;
    struct slm_trie *trie;  /* RWKV */
    /* WordPiece: BertNormalizer's options; the longest token in bytes */
    int lowercase, strip_accents;
    size_t max_piece;
};

/* vocab.c */
slm_tok *slm_tok_alloc(slm_tok_kind kind, int32_t n_vocab, slm_error *err);
/* Adds token id (must be called for ids 0..n_vocab-1 in order). */
slm_status slm_tok_add_token(slm_tok *t, int32_t id, const char *text,
                             size_t len, float score, int attr,
                             slm_error *err);
/* After all tokens: byte tables, special-token cache, eog ids. */
slm_status slm_tok_finish(slm_tok *t, slm_error *err);
/* tokspm.c: whether a file's first bytes look like a SentencePiece
 * ModelProto (its first piece) rather than a llama2.c tokenizer.bin. */
int slm_tok_is_spm_model(const unsigned char *head, size_t n);
/* Puts "path: " before a message of the vocabulary code that does not name
 * the file yet (those say "tokenizer: ..."), so loaders' errors name it. */
void slm_tok_error_path(slm_error *err, const char *path);

/* The GPT-2 byte <-> character mapping (bpe.c) */
int slm_bytelevel_char(uint8_t b, char out[2]);      /* UTF-8 of the char */
int slm_bytelevel_byte(uint32_t cp);                 /* byte or -1 */

/* Engines: encode one raw-text section (no special tokens inside). */
slm_status slm_spm_encode(const slm_tok *t, slm_tok_work *w, const char *s,
                          size_t n, slm_tok_ids *out, slm_error *err);
slm_status slm_bpe_encode(const slm_tok *t, slm_tok_work *w, const char *s,
                          size_t n, slm_tok_ids *out, slm_error *err);
slm_status slm_rwkv_encode(const slm_tok *t, const char *s, size_t n,
                           slm_tok_ids *out, slm_error *err);
/* wordpiece.c: BERT's WordPiece (the steps are in the file's comment). */
#define SLM_WPM_MAX_CHARS 100   /* longer words are [UNK] (BERT's limit) */
enum { SLM_WPM_LETTER = 0, SLM_WPM_SPACE, SLM_WPM_DROP, SLM_WPM_MARK, SLM_WPM_ALONE };
/* What step 1-2 do with a code point: ends a word (SPACE), is dropped
 * (DROP: controls, U+0000, U+FFFD), dropped when stripping accents (MARK),
 * is a word of its own (ALONE: punctuation, ASCII symbols, CJK), or joins
 * the word (LETTER). */
int slm_wpm_class(uint32_t cp);
/* Called per word with "▁" + the word's normalized text (n bytes, at most
 * the first 4 * SLM_WPM_MAX_CHARS bytes after the mark) and its length in
 * characters (nchars > SLM_WPM_MAX_CHARS: the text is cut). */
typedef slm_status (*slm_wpm_word_fn)(void *ctx, const char *word, size_t n, size_t nchars,
                                      slm_error *err);
/* Steps 1-2 over text[0..n): normalizes and splits, calling fn per word. */
slm_status slm_wpm_words(int lowercase, int strip_accents, const char *text, size_t n,
                         slm_wpm_word_fn fn, void *ctx, slm_error *err);
/* Step 3 for one word from slm_wpm_words: its ids, or [UNK], appended. */
slm_status slm_wpm_match(const slm_tok *t, const char *word, size_t n, size_t nchars,
                         slm_tok_ids *out, slm_error *err);
slm_status slm_wpm_encode(const slm_tok *t, const char *s, size_t n, slm_tok_ids *out,
                          slm_error *err);
/* Hugging Face's clean_up_tokenization over decoded text, in place; the
 * new length. */
size_t slm_wpm_cleanup(char *s, size_t n);
void slm_trie_free(struct slm_trie *tr);
slm_status slm_rwkv_build(slm_tok *t, slm_error *err);
/* Bytes of a token of an RWKV vocabulary (for decoding). */
const char *slm_rwkv_piece(const slm_tok *t, int32_t id, size_t *len);
/* Cache of word -> ids for one encode call (bpe.c). */
struct slm_wcache *slm_wcache_new(void);
void slm_wcache_free(struct slm_wcache *c);
const int32_t *slm_wcache_get(const struct slm_wcache *c, const char *p, size_t n,
                              uint64_t h, size_t *nids);
void slm_wcache_put(struct slm_wcache *c, const char *p, size_t n, uint64_t h,
                    const int32_t *ids, size_t nids);

/* utf8.c helpers: length of the valid UTF-8 sequence at s (1..4), or 0 if
 * s[0] does not start a complete valid sequence within n bytes. */
int slm_utf8_len(const unsigned char *s, size_t n);
uint32_t slm_utf8_decode(const unsigned char *s, int len);
int slm_utf8_encode(uint32_t cp, char out[4]);

#endif
