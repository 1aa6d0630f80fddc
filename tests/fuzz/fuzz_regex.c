/* Fuzz target: the regex constraint of generation (csrc/sampler/regex.c,
 * behind slm.core.regex and generate{regex =}).
 *
 * Input: pattern, a 0 byte, text (no 0 byte: the whole input is the
 * pattern and the text is empty). Checks, against PCRE2 used directly:
 *   - the constraint compiles exactly the patterns PCRE2 compiles (UTF,
 *     UCP, no \C);
 *   - "full" exactly when the whole text matches the whole pattern
 *     (PCRE2_ANCHORED | PCRE2_ENDANCHORED, no partial matching); inputs
 *     whose match takes PCRE2 more than 100000 backtracking steps are
 *     skipped (slow, see below);
 *   - a text that is "full" or "partial" has every prefix (at character
 *     boundaries) "full" or "partial": generation only ever extends a text
 *     the constraint kept (not asked of patterns that recurse into the
 *     whole pattern or have a (*ACCEPT), the limits regex.h states). */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <string.h>

#include "fuzz.h"
#include "sampler/regex.h"

static const char *const names[] = {"none", "partial", "full"};

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
    pcre2_code *direct = pcre2_compile((PCRE2_SPTR)pat, plen,
                                       PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C, &errcode,
                                       &erroff, NULL);
    slm_error err;
    slm_regex *re = slm_regex_new(pat, plen, &err);
    FUZZ_CHECK(!re == !direct, "PCRE2 %s the pattern, slm_regex_new %s it%s%s",
               direct ? "compiles" : "refuses", re ? "compiles" : "refuses", re ? "" : ": ",
               re ? "" : err.msg);
    if (!re) return 0;
    /* PCRE2's anchored match, with a budget: a pattern that backtracks
     * catastrophically costs the constraint up to PCRE2's default limit
     * (10 million steps) per call, which would leave the fuzzer little time
     * for anything else: such inputs are skipped */
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(direct, NULL);
    pcre2_match_context *mc = pcre2_match_context_create(NULL);
    FUZZ_CHECK(md && mc, "out of memory");
    pcre2_set_match_limit(mc, 100000);
    int rc = pcre2_match(direct, (PCRE2_SPTR)text, tlen, 0, PCRE2_ANCHORED | PCRE2_ENDANCHORED, md, mc);
    pcre2_match_data_free(md);
    pcre2_match_context_free(mc);
    if (rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT || rc == PCRE2_ERROR_HEAPLIMIT ||
        rc == PCRE2_ERROR_NOMEMORY) {
        pcre2_code_free(direct);
        slm_regex_free(re);
        return 0;
    }
    slm_regex_result r = slm_regex_match(re, text, tlen);
    FUZZ_CHECK((rc >= 0) == (r == SLM_REGEX_FULL), "the constraint says %s, PCRE2's anchored match %s (rc %d)",
               names[r], rc >= 0 ? "matches" : "does not", rc);
    int limited = 0;
    static const char *const lim[] = {"(?R", "(?0", "(?+0", "(?-0", "\\g<0", "\\g'0", "\\g<+0",
                                      "\\g'+0", "\\g<-0", "\\g'-0", "(*ACCEPT", NULL};
    for (int i = 0; lim[i] && !limited; i++) limited = memmem(pat, plen, lim[i], strlen(lim[i])) != NULL;
    if (r != SLM_REGEX_NONE && tlen <= 64 && !limited)
        for (size_t n = 0; n < tlen; n++) {
            if (((unsigned char)text[n] & 0xC0) == 0x80) continue;   /* inside a character */
            FUZZ_CHECK(slm_regex_match(re, text, n) != SLM_REGEX_NONE,
                       "the text is %s but its prefix of %zu bytes is none", names[r], n);
        }
    pcre2_code_free(direct);
    slm_regex_free(re);
    return 0;
}
