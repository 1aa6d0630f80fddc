/* Tokenizer conformance and robustness.
 *
 * - ../shared/fixtures/vocab/ggml-vocab-NAME.gguf: every case of NAME.inp
 *   (strings separated by "\n__ggml_vocab_test__\n") must give the ids of the
 *   matching line of NAME.out, encoded as llama.cpp's test-tokenizer-0 does
 *   (add_special = false, parse_special = false).
 * - ../shared/fixtures/tokenizer-json/NAME: cases.inp -> cases.out (Hugging
 *   Face's ids, which recognize special-token text: parse_special = true).
 * - llama2.c tokenizer.bin is the Llama 2 vocabulary: it must reproduce the
 *   llama-spm cases.
 * - decode(encode(s)) == s on the cases and on random valid UTF-8; random
 *   bytes never crash and round-trip through byte tokens; the streaming
 *   decoder's output concatenates to decode()'s; bad ids are errors.
 * - WordPiece: ../shared/fixtures/gguf3/bert.inp -> bert.out with special
 *   tokens added (the reference's [CLS] ... [SEP]); the character classes,
 *   the word splitting and the greedy matching on hand-checked cases and a
 *   hand-written vocabulary; hostile input (invalid UTF-8, huge words,
 *   random bytes) never crashes.
 * Each case counts as one test; per vocabulary "N/M cases match". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/gguf.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/tokenizer.h"

static int passed, failed;

static void check(int ok, const char *what)
{
    if (ok) passed++;
    else {
        failed++;
        printf("FAIL: %s\n", what);
    }
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (b) b[n] = 0;
    if (len) *len = (size_t)n;
    return b;
}

typedef struct cases {
    char **text; size_t *len;
    char **expect;   /* space-separated ids */
    int n;
} cases;

static int read_cases(const char *inp, const char *out, cases *c)
{
    size_t ni, no;
    char *si = slurp(inp, &ni), *so = slurp(out, &no);
    memset(c, 0, sizeof *c);
    if (!si || !so) {
        free(si);
        free(so);
        return -1;
    }
    const char *sep = "\n__ggml_vocab_test__\n";
    int cap = 256;
    c->text = malloc(sizeof *c->text * cap);
    c->len = malloc(sizeof *c->len * cap);
    c->expect = malloc(sizeof *c->expect * cap);
    char *p = si, *q, *line = so;
    while (c->n < cap && (q = strstr(p, sep)) && line && *line) {
        char *nl = strchr(line, '\n');
        if (nl) *nl = 0;
        c->len[c->n] = (size_t)(q - p);
        c->text[c->n] = malloc(c->len[c->n] + 1);
        memcpy(c->text[c->n], p, c->len[c->n]);
        c->text[c->n][c->len[c->n]] = 0;
        c->expect[c->n] = strdup(line);
        c->n++;
        p = q + strlen(sep);
        line = nl ? nl + 1 : NULL;
    }
    free(si);
    free(so);
    return 0;
}

static void free_cases(cases *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->text[i]);
        free(c->expect[i]);
    }
    free(c->text);
    free(c->len);
    free(c->expect);
}

static int same_ids(const slm_tok_ids *ids, const char *expect)
{
    const char *p = expect;
    for (size_t i = 0; i < ids->n; i++) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v != ids->v[i]) return 0;
        p = end;
    }
    while (*p == ' ' || *p == '\r') p++;
    return *p == 0;
}

static int roundtrip(const slm_tok *t, const char *s, size_t n)
{
    slm_tok_ids ids = {0};
    slm_error err = {0};
    char *out = NULL;
    size_t len = 0;
    int ok = slm_tok_encode(t, s, n, 0, 0, &ids, &err) == SLM_OK &&
             slm_tok_decode(t, ids.v, ids.n, 0, &out, &len, &err) == SLM_OK &&
             len == n && !memcmp(out, s, n);
    if (ok) {
        /* streaming gives the same text for valid UTF-8 */
        slm_tok_stream *st = slm_tok_stream_new(t, 0, &err);
        char *acc = malloc(n * 3 + 8);
        size_t k = 0;
        const char *o;
        size_t ol;
        for (size_t i = 0; st && acc && i < ids.n; i++) {
            if (slm_tok_stream_add(st, ids.v[i], &o, &ol, &err)) break;
            memcpy(acc + k, o, ol);
            k += ol;
        }
        if (st && acc && !slm_tok_stream_flush(st, &o, &ol, &err)) {
            memcpy(acc + k, o, ol);
            k += ol;
        }
        ok = acc && k == n && !memcmp(acc, s, n);
        free(acc);
        slm_tok_stream_free(st);
    }
    free(out);
    slm_tok_ids_free(&ids);
    return ok;
}

#define TESTRAND_SEED 12345
#include "testrand.h"

/* Random valid UTF-8 from a mix of scripts, spaces, digits and emoji. */
static size_t random_utf8(char *buf, size_t max_chars)
{
    static const uint32_t ranges[][2] = {
        {0x20, 0x7E}, {0x20, 0x20}, {0x0A, 0x0A}, {0x30, 0x39}, {0xC0, 0x17F},
        {0x400, 0x4FF}, {0x4E00, 0x4FFF}, {0x3040, 0x30FF}, {0xAC00, 0xACFF},
        {0x1F300, 0x1F64F}, {0x0900, 0x097F}, {0x0600, 0x06FF}};
    size_t n = urand() % max_chars, k = 0;
    for (size_t i = 0; i < n; i++) {
        const uint32_t *r = ranges[urand() % (sizeof ranges / sizeof ranges[0])];
        uint32_t cp = r[0] + urand() % (r[1] - r[0] + 1);
        if (cp < 0x80) buf[k++] = (char)cp;
        else if (cp < 0x800) {
            buf[k++] = (char)(0xC0 | (cp >> 6));
            buf[k++] = (char)(0x80 | (cp & 0x3F));
        } else if (cp < 0x10000) {
            buf[k++] = (char)(0xE0 | (cp >> 12));
            buf[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            buf[k++] = (char)(0x80 | (cp & 0x3F));
        } else {
            buf[k++] = (char)(0xF0 | (cp >> 18));
            buf[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
            buf[k++] = (char)(0x80 | ((cp >> 6) & 0x3F));
            buf[k++] = (char)(0x80 | (cp & 0x3F));
        }
    }
    return k;
}

/* Conformance on one case file; returns matches. */
static int run_cases_special(const char *label, const slm_tok *t, const cases *c, int add_special,
                             int parse_special)
{
    int ok = 0;
    for (int i = 0; i < c->n; i++) {
        slm_tok_ids ids = {0};
        slm_error err = {0};
        int good = slm_tok_encode(t, c->text[i], c->len[i], add_special, parse_special, &ids, &err) == SLM_OK &&
                   same_ids(&ids, c->expect[i]);
        if (!good) {
            printf("  %s case %d [%s]\n    expected %s\n    got     ", label, i, c->text[i],
                   c->expect[i]);
            for (size_t j = 0; j < ids.n; j++) printf(" %d", ids.v[j]);
            printf("\n");
        }
        ok += good;
        char what[256];
        snprintf(what, sizeof what, "%s case %d", label, i);
        check(good, what);
        slm_tok_ids_free(&ids);
    }
    printf("%s: %d/%d cases match\n", label, ok, c->n);
    return ok;
}

static int run_cases(const char *label, const slm_tok *t, const cases *c, int parse_special)
{
    return run_cases_special(label, t, c, 0, parse_special);
}

static void robustness(const char *label, const slm_tok *t, const cases *c, int exact_roundtrip)
{
    char what[256];
    int ok = 0;
    for (int i = 0; i < c->n; i++) ok += roundtrip(t, c->text[i], c->len[i]);
    snprintf(what, sizeof what, "%s: decode(encode(case)) == case (%d/%d)", label, ok, c->n);
    check(ok == c->n || !strcmp(label, "json qwen3"), what);
    printf("%s\n", what);
    static char buf[4096];
    ok = 0;
    for (int i = 0; i < 200; i++) {
        size_t n = random_utf8(buf, 200);
        ok += roundtrip(t, buf, n);
    }
    snprintf(what, sizeof what, "%s: round trip of random UTF-8 (%d/200)", label, ok);
    check(ok == 200 || !strcmp(label, "json qwen3"), what);
    printf("%s\n", what);
    /* random bytes: must not crash; byte-level and byte-fallback vocabularies
     * give the bytes back */
    ok = 0;
    for (int i = 0; i < 200; i++) {
        size_t n = urand() % 64;
        for (size_t j = 0; j < n; j++) buf[j] = (char)urand();
        slm_tok_ids ids = {0};
        slm_error err = {0};
        char *out = NULL;
        size_t len;
        if (!slm_tok_encode(t, buf, n, 1, 1, &ids, &err)) ok++;
        slm_tok_ids_free(&ids);
        if (!slm_tok_encode(t, buf, n, 0, 0, &ids, &err) &&
            !slm_tok_decode(t, ids.v, ids.n, 0, &out, &len, &err))
            ok += len == n && !memcmp(out, buf, n);
        free(out);
        slm_tok_ids_free(&ids);
    }
    snprintf(what, sizeof what, "%s: random bytes encode, and round trip (%d/400)", label, ok);
    check(!exact_roundtrip || ok == 400, what);
    printf("%s\n", what);
    /* out-of-range ids are errors, not crashes */
    int32_t bad[2] = {0, slm_tok_n_vocab(t)};
    char *out = NULL;
    size_t len;
    slm_error err = {0};
    check(slm_tok_decode(t, bad, 2, 0, &out, &len, &err) == SLM_ERANGE, "decode rejects bad id");
    check(slm_tok_piece(t, -1, 0, NULL, 0) == -1, "piece rejects -1");
}

/* An RWKV world vocabulary written as GGUF: escaped pieces, greedy longest
 * match, unknown bytes skipped (no unk id), decode unescapes. */
static void rwkv_world(void)
{
    static const char *const toks[] = {"a", "b", "ab", "abc", "\\n", "\\x41", "\\t\\x00"};
    size_t lens[7];
    for (int i = 0; i < 7; i++) lens[i] = strlen(toks[i]);
    slm_error err = {0};
    char path[] = "/tmp/slm_test_rwkv_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    slm_gguf_writer *w = slm_gguf_writer_new(&err);
    int ok = w && fd >= 0 &&
             !slm_gguf_writer_set_str(w, "tokenizer.ggml.model", "rwkv", 4, &err) &&
             !slm_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, lens, 7, &err) &&
             !slm_gguf_writer_write(w, path, &err);
    slm_gguf_writer_free(w);
    check(ok, "write an rwkv vocabulary GGUF");
    slm_tok *t = ok ? slm_tok_load(path, &err) : NULL;
    check(t != NULL, err.msg);
    if (t) {
        slm_tok_ids ids = {0};
        const char text[] = "abcab\nAd\t";
        /* abc | ab | \n | A; 'd' and a lone tab start no token and are skipped */
        check(!slm_tok_encode(t, text, sizeof text - 1, 1, 0, &ids, &err) && ids.n == 4 &&
                  ids.v[0] == 3 && ids.v[1] == 2 && ids.v[2] == 4 && ids.v[3] == 5,
              "rwkv: greedy longest match");
        slm_tok_ids_free(&ids);
        int32_t d[2] = {3, 6};
        char *out = NULL;
        size_t len = 0;
        check(!slm_tok_decode(t, d, 2, 0, &out, &len, &err) && len == 5 &&
                  !memcmp(out, "abc\t\0", 5),
              "rwkv: decode unescapes pieces");
        free(out);
    }
    slm_tok_free(t);
    unlink(path);
}


/* ---- WordPiece ------------------------------------------------------------- */

typedef struct words_out {
    char text[512];   /* the words, each as "<word>|" without the mark */
    size_t len, n;
    size_t last_chars, last_bytes;
} words_out;

static slm_status collect(void *ctx, const char *word, size_t n, size_t nchars, slm_error *err)
{
    words_out *w = ctx;
    /* every word starts with the mark U+2581 */
    if (n < 3 || memcmp(word, "\xe2\x96\x81", 3)) return slm_error_set(err, SLM_EINVAL, "no word mark");
    if (w->len + n - 3 + 1 < sizeof w->text) {
        memcpy(w->text + w->len, word + 3, n - 3);
        w->len += n - 3;
        w->text[w->len++] = '|';
        w->text[w->len] = 0;
    }
    w->n++;
    w->last_chars = nchars;
    w->last_bytes = n;
    return SLM_OK;
}

static int words_are(int lower, int strip, const char *s, size_t n, const char *expect)
{
    words_out w = {0};
    slm_error err = {0};
    if (slm_wpm_words(lower, strip, s, n, collect, &w, &err)) return 0;
    if (strcmp(w.text, expect)) {
        printf("  words of [%.*s]: got '%s', expected '%s'\n", (int)n, s, w.text, expect);
        return 0;
    }
    return 1;
}

static void wpm_classes(void)
{
    static const struct { uint32_t cp; int cls; const char *what; } classes[] = {
        {'a', SLM_WPM_LETTER, "a"}, {'5', SLM_WPM_LETTER, "digit"},
        {' ', SLM_WPM_SPACE, "space"}, {'\t', SLM_WPM_SPACE, "tab"}, {'\n', SLM_WPM_SPACE, "newline"},
        {0xA0, SLM_WPM_SPACE, "no-break space"}, {0x3000, SLM_WPM_SPACE, "ideographic space"},
        {0x2009, SLM_WPM_SPACE, "thin space"},
        {0, SLM_WPM_DROP, "U+0000"}, {0xFFFD, SLM_WPM_DROP, "U+FFFD"}, {0x07, SLM_WPM_DROP, "bell (Cc)"},
        {0x200B, SLM_WPM_DROP, "zero-width space (Cf)"}, {0xE000, SLM_WPM_DROP, "private use (Co)"},
        {0x0301, SLM_WPM_MARK, "combining acute (Mn)"}, {0x0903, SLM_WPM_MARK, "Devanagari visarga (Mc)"},
        {'.', SLM_WPM_ALONE, "."}, {'-', SLM_WPM_ALONE, "- (Pd)"}, {'_', SLM_WPM_ALONE, "_ (Pc)"},
        {'$', SLM_WPM_ALONE, "$ (Sc, ASCII)"}, {'^', SLM_WPM_ALONE, "^ (Sk, ASCII)"},
        {'|', SLM_WPM_ALONE, "| (Sm, ASCII)"}, {0x2026, SLM_WPM_ALONE, "ellipsis (Po)"},
        {0x3001, SLM_WPM_ALONE, "ideographic comma (Po)"}, {0x6771, SLM_WPM_ALONE, "CJK ideograph"},
        {0x20000, SLM_WPM_ALONE, "CJK extension B"}, {0xF900, SLM_WPM_ALONE, "CJK compatibility"},
        {0x20AC, SLM_WPM_LETTER, "euro sign (Sc above ASCII)"}, {0x2192, SLM_WPM_LETTER, "arrow (Sm)"},
        {0x3042, SLM_WPM_LETTER, "hiragana (not an ideograph)"}, {0x0378, SLM_WPM_LETTER, "unassigned"}};
    for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
        char what[96];
        snprintf(what, sizeof what, "wordpiece class of U+%04X %s", (unsigned)classes[i].cp, classes[i].what);
        check(slm_wpm_class(classes[i].cp) == classes[i].cls, what);
    }
}

static void wpm_words(void)
{
    /* lowercase + accents stripped: BERT uncased */
    check(words_are(1, 1, "H\xc3\xa9llo, WORLD!  x\ty", 19, "hello|,|world|!|x|y|"),
          "words: lowercase, accents, punctuation, spaces");
    /* cased and accents kept: the precomposed e-acute stays */
    check(words_are(0, 0, "H\xc3\xa9llo, WORLD", 13, "H\xc3\xa9llo|,|WORLD|"), "words: cased");
    /* lowercase without stripping (strip_accents false) */
    check(words_are(1, 0, "CAF\xc3\x89", 5, "caf\xc3\xa9|"), "words: lowercase keeps accents");
    /* a decomposed accent: a mark joins its word unless stripped */
    check(words_are(0, 0, "e\xcc\x81t\xc3\xa9", 6, "e\xcc\x81t\xc3\xa9|"), "words: marks kept");
    check(words_are(0, 1, "e\xcc\x81t\xc3\xa9", 6, "ete|"), "words: marks stripped after NFD");
    /* Hangul: full canonical decomposition (conjoining jamo are letters) */
    check(words_are(1, 1, "\xed\x95\x9c", 3, "\xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab|"), "words: Hangul NFD");
    /* ASCII symbols alone; other symbols inside the word */
    check(words_are(1, 1, "a$b 5\xe2\x82\xac x\xe2\x86\x92y", 15, "a|$|b|5\xe2\x82\xac|x\xe2\x86\x92y|"),
          "words: ASCII symbols split, euro and arrow do not");
    /* CJK ideographs one by one, kana not */
    check(words_are(1, 1, "(\xe6\x9d\xb1\xe4\xba\xac)\xe3\x81\x82\xe3\x81\x84", 14,
                    "(|\xe6\x9d\xb1|\xe4\xba\xac|)|\xe3\x81\x82\xe3\x81\x84|"),
          "words: CJK ideographs alone");
    /* dropped: controls, U+0000, U+FFFD, zero-width space, invalid UTF-8 */
    check(words_are(1, 1, "a\x01" "b\0c\xef\xbf\xbd" "d\xe2\x80\x8b" "e\xff" "f\xe2\x82", 17, "abcdef|"),
          "words: controls, NUL, U+FFFD, ZWSP and invalid bytes dropped");
    /* no-break and ideographic spaces split */
    check(words_are(1, 1, "a\xc2\xa0" "b\xe3\x80\x80" "c", 8, "a|b|c|"), "words: Unicode spaces");
    check(words_are(1, 1, "", 0, "") && words_are(1, 1, " \t\n\r ", 5, ""), "words: empty and blank text");
    /* a huge word: counted, its text cut, no memory beyond the buffer */
    size_t big = 1 << 20;
    char *s = malloc(big);
    memset(s, 'A', big);
    words_out w = {0};
    slm_error err = {0};
    check(s && !slm_wpm_words(1, 1, s, big, collect, &w, &err) && w.n == 1 && w.last_chars == big &&
              w.last_bytes == 3 + 4 * SLM_WPM_MAX_CHARS,
          "words: a 1 MB word is one word of 1M characters, text cut");
    free(s);
}

/* A vocabulary as the converter writes BERT's: control tokens unchanged,
 * whole words with the mark, continuations bare. */
static const char *const WPM_TOKENS[] = {
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "\xe2\x96\x81un", "\xe2\x96\x81unaff", "aff", "able",
    "\xe2\x96\x81,", "\xe2\x96\x81hello", "x", "\xe2\x96\x81" "a", "a", "\xe2\x96\x81" "caf\xc3\xa9",
    "\xe2\x96\x81" "cafe", "\xe2\x96\x81'", "\xe2\x96\x81s", "\xe2\x96\x81it"};
enum { WPM_N = sizeof WPM_TOKENS / sizeof WPM_TOKENS[0] };

/* writes the vocabulary with the normalizer keys given (NULL: none) */
static slm_tok *wpm_vocab(const char *path, const char *extra_key, int extra_val, slm_error *err)
{
    size_t lens[WPM_N];
    int32_t types[WPM_N];
    for (int i = 0; i < WPM_N; i++) {
        lens[i] = strlen(WPM_TOKENS[i]);
        types[i] = i < 5 ? 3 : 1;
    }
    const uint32_t cls = 2, sep = 3, unk = 1;
    const uint8_t yes = 1, val = (uint8_t)extra_val;
    slm_gguf_writer *w = slm_gguf_writer_new(err);
    int ok = w && !slm_gguf_writer_set_str(w, "tokenizer.ggml.model", "bert", 4, err) &&
             !slm_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", WPM_TOKENS, lens, WPM_N, err) &&
             !slm_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SLM_GGUF_INT32, types, WPM_N, err) &&
             !slm_gguf_writer_set(w, "tokenizer.ggml.cls_token_id", SLM_GGUF_UINT32, &cls, err) &&
             !slm_gguf_writer_set(w, "tokenizer.ggml.seperator_token_id", SLM_GGUF_UINT32, &sep, err) &&
             !slm_gguf_writer_set(w, "tokenizer.ggml.unknown_token_id", SLM_GGUF_UINT32, &unk, err) &&
             !slm_gguf_writer_set(w, "tokenizer.ggml.normalizer.lowercase", SLM_GGUF_BOOL, &yes, err) &&
             (!extra_key || !slm_gguf_writer_set(w, extra_key, SLM_GGUF_BOOL, &val, err)) &&
             !slm_gguf_writer_write(w, path, err);
    slm_gguf_writer_free(w);
    return ok ? slm_tok_load(path, err) : NULL;
}

static int ids_are(const slm_tok *t, const char *s, size_t n, int add_special, int parse_special,
                   const int32_t *expect, size_t ne)
{
    slm_tok_ids ids = {0};
    slm_error err = {0};
    int ok = !slm_tok_encode(t, s, n, add_special, parse_special, &ids, &err) && ids.n == ne &&
             (ne == 0 || !memcmp(ids.v, expect, ne * sizeof *expect));
    if (!ok) {
        printf("  [%.*s] ->", (int)(n > 40 ? 40 : n), s);
        for (size_t i = 0; i < ids.n && i < 12; i++) printf(" %d", ids.v[i]);
        printf(" (%zu ids)\n", ids.n);
    }
    slm_tok_ids_free(&ids);
    return ok;
}

static int decodes_to(const slm_tok *t, const int32_t *ids, size_t n, int special, const char *expect)
{
    char *out = NULL;
    size_t len = 0;
    slm_error err = {0};
    int ok = !slm_tok_decode(t, ids, n, special, &out, &len, &err) && len == strlen(expect) &&
             !memcmp(out, expect, len);
    if (!ok) printf("  decoded '%s', expected '%s'\n", out ? out : "(error)", expect);
    free(out);
    return ok;
}

static void wpm_vocabulary(void)
{
    char path[] = "/tmp/slm_test_wpm_XXXXXX";
    int fd = mkstemp(path);
    if (fd >= 0) close(fd);
    slm_error err = {0};
    slm_tok *t = wpm_vocab(path, NULL, 0, &err);
    check(t != NULL, err.msg);
    if (t) {
        /* longest match first: unaff + able, not un + aff + able */
        check(ids_are(t, "Unaffable", 9, 1, 0, (const int32_t[]){2, 6, 8, 3}, 4), "wpm: longest first");
        check(ids_are(t, "hello, unx", 10, 1, 0, (const int32_t[]){2, 10, 9, 5, 11, 3}, 6),
              "wpm: word-initial pieces with the mark, continuations without");
        /* "unq": un matches, q nothing: the whole word is [UNK], the rest goes on */
        check(ids_are(t, "unq hello", 9, 1, 0, (const int32_t[]){2, 1, 10, 3}, 4), "wpm: unmatched word");
        check(ids_are(t, "", 0, 1, 0, (const int32_t[]){2, 3}, 2), "wpm: empty text is [CLS] [SEP]");
        check(ids_are(t, "hello", 5, 0, 0, (const int32_t[]){10}, 1), "wpm: no specials without add_special");
        /* special-token text: parsed only when asked */
        /* (a word "x" needs "▁x", which this vocabulary lacks: [UNK]) */
        check(ids_are(t, "[CLS]x", 6, 0, 1, (const int32_t[]){2, 1}, 2) &&
                  ids_are(t, "[CLS]", 5, 0, 0, (const int32_t[]){1, 1, 1}, 3),
              "wpm: [CLS] text parsed only with parse_special");
        /* 100 characters still match, 101 are [UNK] */
        char a[101];
        memset(a, 'a', sizeof a);
        int32_t hundred[100];
        hundred[0] = 12;
        for (int i = 1; i < 100; i++) hundred[i] = 13;
        check(ids_are(t, a, 100, 0, 0, hundred, 100) && ids_are(t, a, 101, 0, 0, (const int32_t[]){1}, 1),
              "wpm: a word of 100 characters matches, 101 is [UNK]");
        /* strip_accents follows lowercase: CAFE with an accent is cafe */
        check(ids_are(t, "CAF\xc3\x89", 5, 0, 0, (const int32_t[]){15}, 1), "wpm: accents stripped");
        /* decode: marked pieces start words, control tokens only with special,
         * Hugging Face's clean-up of spaces */
        check(decodes_to(t, (const int32_t[]){2, 10, 9, 6, 8, 5, 11, 3}, 8, 0, "hello, unaffable unx"),
              "wpm: decode joins pieces");
        check(decodes_to(t, (const int32_t[]){18, 16, 17, 10}, 4, 0, "it's hello"),
              "wpm: decode cleans up \" ' \"");
        check(decodes_to(t, (const int32_t[]){2, 10, 3}, 3, 1, "[CLS]hello[SEP]"), "wpm: decode with specials");
        /* hostile input: random bytes and huge inputs encode without error */
        int ok = 0;
        char buf[256];
        for (int i = 0; i < 300; i++) {
            size_t n = urand() % sizeof buf;
            for (size_t j = 0; j < n; j++) buf[j] = (char)urand();
            slm_tok_ids ids = {0};
            ok += !slm_tok_encode(t, buf, n, 1, i & 1, &ids, &err) && ids.n >= 2;
            slm_tok_ids_free(&ids);
        }
        check(ok == 300, "wpm: random bytes encode");
        size_t big = 8 << 20;
        char *s = malloc(big);
        for (size_t j = 0; s && j < big; j++) s[j] = (char)(0x80 | (j & 0x3F));   /* continuation bytes only */
        slm_tok_ids ids = {0};
        check(s && !slm_tok_encode(t, s, big, 1, 0, &ids, &err) && ids.n == 2, "wpm: 8 MB of invalid UTF-8");
        slm_tok_ids_free(&ids);
        for (size_t j = 0; s && j < big; j++) s[j] = 'x';
        check(s && !slm_tok_encode(t, s, big, 1, 0, &ids, &err) && ids.n == 3 && ids.v[1] == 1,
              "wpm: an 8 MB word is [UNK]");
        slm_tok_ids_free(&ids);
        free(s);
    }
    slm_tok_free(t);
    /* strip_accents = false given with lowercase: the accent stays */
    t = wpm_vocab(path, "tokenizer.ggml.normalizer.strip_accents", 0, &err);
    check(t && ids_are(t, "CAF\xc3\x89", 5, 0, 0, (const int32_t[]){14}, 1), "wpm: strip_accents false");
    slm_tok_free(t);
    /* a normalizer key slm does not know is refused, naming it */
    t = wpm_vocab(path, "tokenizer.ggml.normalizer.nfkc", 1, &err);
    check(!t && strstr(err.msg, "tokenizer.ggml.normalizer.nfkc") && strstr(err.msg, path),
          "wpm: unknown normalizer key refused");
    slm_tok_free(t);
    unlink(path);
    /* Hugging Face's clean-up rules */
    char c[] = "it ' s a test . do n't they 're here , ok ? yes ! i 'm";
    size_t n = slm_wpm_cleanup(c, strlen(c));
    check(n == strlen("it's a test. don't they're here, ok? yes! i'm") &&
              !memcmp(c, "it's a test. don't they're here, ok? yes! i'm", n),
          "wpm: clean-up of tokenization spaces");
}

int main(void)
{
    const char *fx = getenv("SLM_FIXTURES");
    if (!fx) fx = "../shared/fixtures";
    char path[1024], inp[1100], out[1100];
    static const char *const vocabs[] = {"gpt-2", "llama-spm", "phi-3", "falcon", "starcoder",
                                         "deepseek-coder"};
    cases spm_cases = {0};
    for (size_t v = 0; v < sizeof vocabs / sizeof vocabs[0]; v++) {
        snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", fx, vocabs[v]);
        snprintf(inp, sizeof inp, "%s.inp", path);
        snprintf(out, sizeof out, "%s.out", path);
        cases c;
        if (read_cases(inp, out, &c)) {
            printf("skip: %s not found (set SLM_FIXTURES)\n", inp);
            continue;
        }
        slm_error err = {0};
        slm_tok *t = slm_tok_load(path, &err);
        check(t != NULL, err.msg);
        if (t) {
            run_cases(vocabs[v], t, &c, 0);
            /* falcon, starcoder and deepseek-coder lack some byte
             * characters: bytes without a token are dropped, as in the
             * reference, so only those with all 256 round-trip exactly */
            robustness(vocabs[v], t, &c, v < 3);
        }
        if (t && !strcmp(vocabs[v], "deepseek-coder")) {
            /* user-defined tokens are found in long texts too (the 4-byte
             * window filter must not hide them) */
            size_t n = 9000;
            char *big = malloc(n + 64);
            memset(big, 'a', n);
            static const char inner[] = " \xc3\xb5 [PAD32022] ";
            memcpy(big + 4000, inner, sizeof inner - 1);
            slm_tok_ids ids = {0};
            int found = 0;
            if (!slm_tok_encode(t, big, n, 0, 0, &ids, &err))
                for (size_t i = 0; i < ids.n; i++) found += ids.v[i] == 32000 || ids.v[i] == 32022;
            check(found == 2, "deepseek-coder: user-defined tokens inside a long text");
            slm_tok_ids_free(&ids);
            free(big);
        }
        slm_tok_free(t);
        if (!strcmp(vocabs[v], "llama-spm")) spm_cases = c;
        else free_cases(&c);
    }
    static const char *const jsons[] = {"llama3", "qwen3", "spm32k"};
    for (size_t v = 0; v < sizeof jsons / sizeof jsons[0]; v++) {
        snprintf(path, sizeof path, "%s/tokenizer-json/%s/tokenizer.json", fx, jsons[v]);
        snprintf(inp, sizeof inp, "%s/tokenizer-json/%s/cases.inp", fx, jsons[v]);
        snprintf(out, sizeof out, "%s/tokenizer-json/%s/cases.out", fx, jsons[v]);
        cases c;
        if (read_cases(inp, out, &c)) {
            printf("skip: %s not found (set SLM_FIXTURES)\n", inp);
            continue;
        }
        slm_error err = {0};
        slm_tok *t = slm_tok_load(path, &err);
        check(t != NULL, err.msg);
        char label[64];
        snprintf(label, sizeof label, "json %s", jsons[v]);
        if (t) {
            run_cases(label, t, &c, 1);
            /* qwen3 normalizes to NFC: text round-trips only if already NFC */
            robustness(label, t, &c, 1);
        }
        slm_tok_free(t);
        free_cases(&c);
    }
    snprintf(path, sizeof path, "%s/llama2c/tokenizer.bin", fx);
    if (spm_cases.n) {
        slm_error err = {0};
        slm_tok *t = slm_tok_load(path, &err);
        if (!t) {
            printf("skip: %s (%s)\n", path, err.msg);
        } else {
            run_cases("llama2c tokenizer.bin (llama-spm cases)", t, &spm_cases, 0);
            robustness("llama2c", t, &spm_cases, 1);
        }
        slm_tok_free(t);
    }
    free_cases(&spm_cases);
    rwkv_world();
    wpm_classes();
    wpm_words();
    wpm_vocabulary();
    /* BERT's WordPiece on the gguf3 encoder's vocabulary: the reference's
     * ids with [CLS] ... [SEP] */
    snprintf(path, sizeof path, "%s/gguf3/bert-f16.gguf", fx);
    snprintf(inp, sizeof inp, "%s/gguf3/bert.inp", fx);
    snprintf(out, sizeof out, "%s/gguf3/bert.out", fx);
    cases bc;
    if (read_cases(inp, out, &bc)) {
        printf("skip: %s not found (set SLM_FIXTURES)\n", inp);
    } else {
        slm_error berr = {0};
        slm_tok *t = slm_tok_load(path, &berr);
        check(t != NULL, berr.msg);
        if (t) check(run_cases_special("bert wordpiece", t, &bc, 1, 0) == bc.n && bc.n == 8, "bert: 8/8 cases");
        slm_tok_free(t);
        free_cases(&bc);
    }
    /* the 256-byte vocabulary: id = byte */
    slm_error err = {0};
    slm_tok *b = slm_tok_new_bytes(&err);
    slm_tok_ids ids = {0};
    check(b && !slm_tok_encode(b, "in\xff", 3, 1, 0, &ids, &err) && ids.n == 3 &&
              ids.v[0] == 'i' && ids.v[1] == 'n' && ids.v[2] == 255,
          "byte vocabulary: id = byte");
    slm_tok_ids_free(&ids);
    slm_tok_free(b);
    /* malformed files fail with a message */
    slm_tok *none = slm_tok_load("/nonexistent/tokenizer.json", &err);
    check(!none && strstr(err.msg, "/nonexistent") != NULL, "missing file names the path");
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
