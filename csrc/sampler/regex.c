/* Regular-expression constraints (see regex.h) on PCRE2. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

/* Two compilations of the pattern (the reason is in slm_regex_new):
 *   full:   anchored at both ends, for "does the whole text match";
 *   prefix: PCRE2 wraps it as ^(?:pattern)$ itself (PCRE2_EXTRA_MATCH_LINE,
 *           with $ meaning the very end), for soft partial matching. */
/* UTF-8 text, Unicode properties; no \C (one byte, even inside a
 * character): a constrained text is characters, and PCRE2 10.42 drops the
 * partial match of a repeated \C at the end of the text ("\d(.\C+)?"
 * on "3.", found by the regex fuzz target) */
#define SLM_REGEX_OPTIONS (PCRE2_UTF | PCRE2_UCP | PCRE2_NEVER_BACKSLASH_C)

struct slm_regex {
    pcre2_code *full, *prefix;
    pcre2_match_data *md;
};

void slm_regex_free(slm_regex *re)
{
    if (!re) return;
    if (re->md) pcre2_match_data_free(re->md);
    if (re->full) pcre2_code_free(re->full);
    if (re->prefix) pcre2_code_free(re->prefix);
    free(re);
}

static slm_regex *compile_error(slm_regex *re, int errcode, size_t erroff, const char *pat,
                                size_t len, slm_error *err)
{
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(errcode, msg, sizeof msg);
    /* the pattern as far as it is text (a NUL ends it) and fits the message */
    size_t shown = strnlen(pat, len);
    slm_error_set(err, SLM_EINVAL, "regex: %s at offset %d of '%.*s'", (const char *)msg,
                  (int)erroff, (int)(shown > 300 ? 300 : shown), pat);
    slm_regex_free(re);
    return NULL;
}

static slm_regex *out_of_memory(slm_regex *re, slm_error *err)
{
    slm_regex_free(re);
    slm_error_set(err, SLM_ENOMEM, "regex: out of memory");
    return NULL;
}

slm_regex *slm_regex_new(const char *pat, size_t len, slm_error *err)
{
    slm_regex *re = calloc(1, sizeof *re);
    if (!re) return out_of_memory(re, err);
    int errcode;
    PCRE2_SIZE erroff;
    /* "full" is exactly PCRE2's anchored match of the whole text. Partial
     * matching needs the end anchor inside the pattern (PCRE2 refuses
     * PCRE2_ENDANCHORED with it). slm used to write "(?:" pattern ")\z",
     * which broke valid patterns (the fuzz target found "\Q..." quoting the
     * added ")\z"; a (?x) "# comment" swallows it; leading (*UTF)-style
     * items must come first) and let (*ACCEPT) or a recursion into the
     * whole pattern end a match early, which was then taken for "full".
     * PCRE2_EXTRA_MATCH_LINE adds the anchors after parsing instead. */
    re->full = pcre2_compile((PCRE2_SPTR)pat, len,
                             SLM_REGEX_OPTIONS | PCRE2_ANCHORED | PCRE2_ENDANCHORED,
                             &errcode, &erroff, NULL);
    if (!re->full) return compile_error(re, errcode, erroff, pat, len, err);
    pcre2_compile_context *cc = pcre2_compile_context_create(NULL);
    if (!cc) return out_of_memory(re, err);
    pcre2_set_compile_extra_options(cc, PCRE2_EXTRA_MATCH_LINE);
    re->prefix = pcre2_compile((PCRE2_SPTR)pat, len,
                               SLM_REGEX_OPTIONS | PCRE2_ANCHORED | PCRE2_DOLLAR_ENDONLY,
                               &errcode, &erroff, cc);
    pcre2_compile_context_free(cc);
    if (!re->prefix) return compile_error(re, errcode, erroff, pat, len, err);
    /* No JIT: the regex fuzz target found PCRE2 10.42's JIT disagreeing
     * with its interpreter - no match where the interpreter reports the
     * partial one after a backtracking verb ("(*COMMIT)abc" on "a"), a
     * whole match ending past (*ACCEPT) (".(*ACCEPT)" on "ab"). The texts
     * a constraint sees are short; the interpreter is fast enough. */
    re->md = pcre2_match_data_create_from_pattern(re->full, NULL);
    if (!re->md) return out_of_memory(re, err);
    return re;
}

/* PCRE2 stopped before it knew: its match, depth or heap limit, memory */
static int gave_up(int rc)
{
    return rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ||
           rc == PCRE2_ERROR_HEAPLIMIT || rc == PCRE2_ERROR_NOMEMORY;
}

slm_regex_result slm_regex_match(slm_regex *re, const char *s, size_t len)
{
    /* NO_UTF_CHECK is not passed: invalid UTF-8 text simply does not match */
    int rc = pcre2_match(re->full, (PCRE2_SPTR)s, len, 0, 0, re->md, NULL);
    if (rc >= 0) return SLM_REGEX_FULL;
    if (gave_up(rc)) return SLM_REGEX_LIMIT;
    /* the empty text inspects no character, so PCRE2 reports no partial
     * match; it is a prefix of every match */
    if (len == 0) return SLM_REGEX_PARTIAL;
    /* a complete match of the prefix code here is not a whole match (the
     * full code said so: (*ACCEPT), a recursion through the anchors) */
    rc = pcre2_match(re->prefix, (PCRE2_SPTR)s, len, 0, PCRE2_PARTIAL_SOFT, re->md, NULL);
    if (gave_up(rc)) return SLM_REGEX_LIMIT;
    return rc == PCRE2_ERROR_PARTIAL ? SLM_REGEX_PARTIAL : SLM_REGEX_NONE;
}
