/* Fuzz target: the regex constraint of generation (csrc/sampler/regex.c,
 * behind slm.core.regex and generate{regex =}).
 *
 * Input: pattern, a 0 byte, text (no 0 byte: the whole input is the
 * pattern and the text is empty). Checks, against PCRE2 used directly:
 *   - the constraint compiles exactly the patterns PCRE2 compiles (UTF,
 *     UCP, no \C);
 *   - "full" exactly when the whole text matches the whole pattern
 *     (PCRE2_ANCHORED | PCRE2_ENDANCHORED, no partial matching);
 *   - a text that is "full" or "partial" has every prefix (at character
 *     boundaries) "full" or "partial": generation only ever extends a text
 *     the constraint kept (not asked of patterns that recurse into the
 *     whole pattern or have a (*ACCEPT), the limits regex.h states).
 * Texts whose answer takes PCRE2 over 100000 backtracking steps are skipped
 * (the constraint then answers slowly or SLM_REGEX_LIMIT, not wrongly). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "fuzz.h"
#include "sampler/regex.h"

static const char *const names[] = {"none", "partial", "full"};   /* by result >= 0 */

#define OPTIONS (PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C)
#define BUDGET 100000

/* PCRE2 on text[0..n) within BUDGET steps: the pattern as the constraint's
 * "full" code (anchored at both ends) or "prefix" code (inside PCRE2's
 * line anchors, soft partial matching). The return code; *gave_up when
 * PCRE2 stopped at the budget or another limit. */
static int budget_match(const pcre2_code *code, const char *text, size_t n, uint32_t opts, int *gave_up)
{
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(code, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    FUZZ_CHECK(md && mc, "out of memory");
    pcre2_set_match_limit(mc, BUDGET);
    int rc = pcre2_match(code, (PCRE2_SPTR)text, n, 0, opts, md, mc);
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    *gave_up = rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
               rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_NOMEMORY;
    return rc;
}

/* Whether PCRE2 needs more than BUDGET steps to answer for text[0..n) as
 * the constraint asks: a pattern that backtracks catastrophically costs the
 * constraint up to PCRE2's default limit (10 million steps) per call, which
 * would leave the fuzzer little time for anything else; such texts are
 * skipped. */
static int costly(const pcre2_code *full, const pcre2_code *prefix, const char *text, size_t n)
{
    int gave_up;
    budget_match(full, text, n, PCRE2_ANCHORED | PCRE2_ENDANCHORED, &gave_up);
    if (!gave_up && n) budget_match(prefix, text, n, PCRE2_PARTIAL_SOFT, &gave_up);
    return gave_up;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *pat = (const char *)data, *text = "";
    size_t plen = size, tlen = 0;
    const uint8_t *z = memchr(data, 0, size);
    if (z) {
        plen = (size_t)(z - data);
        text = (const char *)z + 1;
        tlen = size - plen - 1;
    }
    int errcode;
    PCRE2_SIZE erroff;
    pcre2_code *direct = pcre2_compile((PCRE2_SPTR)pat, plen, OPTIONS, &errcode, &erroff, NULL);
    slm_error err;
    slm_regex *re = slm_regex_new(pat, plen, &err);
    FUZZ_CHECK(!re == !direct, "PCRE2 %s the pattern, slm_regex_new %s it%s%s",
               direct ? "compiles" : "refuses", re ? "compiles" : "refuses", re ? "" : ": ",
               re ? "" : err.msg);
    if (!re) return 0;
    /* the constraint's prefix code, to measure the cost of its questions */
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    FUZZ_CHECK(cc != NULL, "out of memory");
    pcre2_set_compile_extra_options(cc, PCRE2_EXTRA_MATCH_LINE);
    pcre2_code *prefix = pcre2_compile((PCRE2_SPTR)pat, plen,
                                       OPTIONS | PCRE2_ANCHORED | PCRE2_DOLLAR_ENDONLY, &errcode,
                                       &erroff, cc);
    pcre2_compile_context_free(cc);
    FUZZ_CHECK(prefix != NULL, "the pattern compiles alone but not inside line anchors");
    if (!costly(direct, prefix, text, tlen)) {
        int gave_up;
        int rc = budget_match(direct, text, tlen, PCRE2_ANCHORED | PCRE2_ENDANCHORED, &gave_up);
        /* (SLM_REGEX_LIMIT: the constraint's own codes gave up, which the
         * budget cannot always foresee - "(*LIMIT_MATCH=10)" in the pattern,
         * a recursion that costs more when anchored at compile time) */
        slm_regex_result r = slm_regex_match(re, text, tlen);
        FUZZ_CHECK(r == SLM_REGEX_LIMIT || (rc >= 0) == (r == SLM_REGEX_FULL),
                   "the constraint says %d, PCRE2's anchored match %s (rc %d)", (int)r,
                   rc >= 0 ? "matches" : "does not", rc);
        int limited = 0;
        static const char *const lim[] = {"(?R", "(?0", "(?+0", "(?-0", "\\g<0", "\\g'0", "\\g<+0",
                                          "\\g'+0", "\\g<-0", "\\g'-0", "(*ACCEPT", NULL};
        for (int i = 0; lim[i] && !limited; i++) limited = memmem(pat, plen, lim[i], strlen(lim[i])) != NULL;
        if (r > SLM_REGEX_NONE && tlen <= 64 && !limited)
            for (size_t n = 0; n < tlen; n++) {
                if (((unsigned char)text[n] & 0xC0) == 0x80) continue;   /* inside a character */
                if (costly(direct, prefix, text, n)) continue;
                FUZZ_CHECK(slm_regex_match(re, text, n) != SLM_REGEX_NONE,
                           "the text is %s but its prefix of %zu bytes is none", names[r], n);
            }
    }
    pcre2_code_free(prefix);
    pcre2_code_free(direct);
    slm_regex_free(re);
    return 0;
}
