/* Fuzz target: GBNF grammars (csrc/sampler/grammar*.c, behind slm.grammar
 * and generate{grammar =}).
 *
 * Input: grammar text, a 0 byte, text (no 0 byte: the whole input is the
 * grammar and the text is empty). Checks:
 *   - compilation returns a grammar or a message starting with "grammar"
 *     (never a crash, never an allocation sized by the input unchecked);
 *   - the text fed whole and fed in two pieces cut at every byte accepts
 *     the same number of bytes and ends in the same completeness (the
 *     incremental matcher keeps split UTF-8 and state across calls);
 *   - the mask over a small vocabulary (single bytes, pieces of the text,
 *     multi-byte UTF-8) equals feeding each token to a copy of the state,
 *     with and without a completion limit. */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "sampler/grammar.h"

#define NV 48

static char vocab[NV][8];
static size_t vlen[NV];

static const char *piece(void *ud, int32_t id, size_t *len)
{
    (void)ud;
    *len = vlen[id];
    return vocab[id];
}

/* bytes accepted, completeness */
static long feed(slm_grammar *g, const uint8_t *t, size_t n, size_t cut, int *complete)
{
    slm_gstate s;
    slm_error err;
    FUZZ_CHECK(slm_gstate_init(g, &s, &err) == SLM_OK, "init: %s", err.msg);
    long a = slm_gstate_accept(g, &s, t, cut, &err);
    if (a == (long)cut) {
        long b = slm_gstate_accept(g, &s, t + cut, n - cut, &err);
        a = b < 0 ? -1 : a + b;
    }
    *complete = slm_gstate_complete(&s);
    slm_gstate_free(&s);
    return a;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *zero = memchr(data, 0, size);
    size_t glen = zero ? (size_t)(zero - data) : size;
    const uint8_t *text = zero ? zero + 1 : data + size;
    size_t tlen = zero ? size - glen - 1 : 0;
    if (tlen > 64) tlen = 64;
    slm_error err;
    slm_grammar *g = slm_grammar_compile((const char *)data, glen, NULL, &err);
    if (!g) {
        FUZZ_CHECK(strncmp(err.msg, "grammar", 7) == 0, "message without 'grammar': %s", err.msg);
        return 0;
    }
    int c0;
    long whole = feed(g, text, tlen, tlen, &c0);
    if (whole < 0) {   /* the pool limit: an error, not a crash */
        slm_grammar_free(g);
        return 0;
    }
    for (size_t cut = 0; cut <= tlen; cut++) {
        int c;
        long got = feed(g, text, tlen, cut, &c);
        /* (a refusal inside the first piece stops there, at the same byte) */
        FUZZ_CHECK(got == whole && c == c0, "cut %zu: %ld bytes (whole: %ld), complete %d (%d)", cut, got, whole, c, c0);
    }

    /* a vocabulary: bytes, then 2-4 byte pieces of the text, then UTF-8 */
    static const char *fixed[] = { "\xc3\xa9", "\xc3", "\xa9", "\xe2\x80\xa8", "\xf0\x9f\x98\x80", "ab", "{\"", "\"}", "" };
    int32_t n = 0;
    for (int b = 0; b < 24; b++) { vocab[n][0] = (char)(b < 12 ? ' ' + b * 8 : 'a' + b - 12); vlen[n++] = 1; }
    for (size_t i = 0; i + 1 < tlen && n < NV - 9; i += 2) {
        size_t l = tlen - i < 4 ? tlen - i : 4;
        memcpy(vocab[n], text + i, l);
        vlen[n++] = l;
    }
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed && n < NV; i++) {
        vlen[n] = strlen(fixed[i]);
        memcpy(vocab[n], fixed[i], vlen[n]);
        n++;
    }
    uint8_t eog[NV] = { 0 };
    eog[n - 1] = 1;   /* the empty piece: an end token */
    slm_gvocab *v = slm_gvocab_new(n, piece, NULL, eog, &err);
    FUZZ_CHECK(v != NULL, "vocab: %s", err.msg);
    slm_gstate s;
    FUZZ_CHECK(slm_gstate_init(g, &s, &err) == SLM_OK, "init");
    size_t upto = (size_t)whole < tlen ? (size_t)whole : tlen;
    for (size_t step = 0; step <= upto; step += 1 + upto / 4) {
        slm_gstate at = { 0 };
        FUZZ_CHECK(slm_gstate_copy(&at, &s, &err) == SLM_OK, "copy");
        long fed = slm_gstate_accept(g, &at, text, step, &err);
        if (fed != (long)step) { slm_gstate_free(&at); break; }
        for (int32_t limit = -1; limit <= 2; limit += 3) {
            uint8_t mask[(NV + 7) / 8];
            long cnt = slm_grammar_mask(g, v, &at, limit, mask, &err);
            if (cnt < 0) break;
            for (int32_t id = 0; id < n; id++) {
                int want;
                if (eog[id]) want = slm_gstate_complete(&at);
                else {
                    slm_gstate t = { 0 };
                    FUZZ_CHECK(slm_gstate_copy(&t, &at, &err) == SLM_OK, "copy");
                    want = slm_gstate_accept(g, &t, (const uint8_t *)vocab[id], vlen[id], &err) == (long)vlen[id] &&
                           (limit < 0 || slm_gstate_distance(g, &t) <= limit);
                    slm_gstate_free(&t);
                }
                FUZZ_CHECK(((mask[id >> 3] >> (id & 7)) & 1) == want, "mask of token %d after %zu bytes, limit %d: %d, "
                           "want %d", id, step, limit, (mask[id >> 3] >> (id & 7)) & 1, want);
            }
        }
        slm_gstate_free(&at);
    }
    slm_gstate_free(&s);
    slm_gvocab_free(v);
    slm_grammar_free(g);
    return 0;
}
