/* Regular-expression constraints (see regex.h) on PCRE2. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "regex.h"

#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

struct slm_regex {
    pcre2_code *code;
    pcre2_match_data *md;
};

void slm_regex_free(slm_regex *re)
{
    if (!re) return;
    if (re->md) pcre2_match_data_free(re->md);
    if (re->code) pcre2_code_free(re->code);
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

slm_regex *slm_regex_new(const char *pat, size_t len, slm_error *err)
{
    slm_regex *re = calloc(1, sizeof *re);
    if (!re) {
        slm_error_set(err, SLM_ENOMEM, "regex: out of memory");
        return NULL;
    }
    int errcode;
    PCRE2_SIZE erroff;
    /* the pattern alone first, so errors name offsets in what the user wrote */
    pcre2_code *check = pcre2_compile((PCRE2_SPTR)pat, len, PCRE2_UTF | PCRE2_UCP, &errcode,
                                      &erroff, NULL);
    if (!check) return compile_error(re, errcode, erroff, pat, len, err);
    pcre2_code_free(check);
    /* end-anchoring by a trailing \z rather than PCRE2_ENDANCHORED, which
     * PCRE2 refuses together with partial matching */
    char *wrapped = malloc(len + 8);
    if (!wrapped) {
        slm_regex_free(re);
        slm_error_set(err, SLM_ENOMEM, "regex: out of memory");
        return NULL;
    }
    memcpy(wrapped, "(?:", 3);
    memcpy(wrapped + 3, pat, len);
    memcpy(wrapped + 3 + len, ")\\z", 3);
    re->code = pcre2_compile((PCRE2_SPTR)wrapped, len + 6, PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED,
                             &errcode, &erroff, NULL);
    free(wrapped);
    if (!re->code) return compile_error(re, errcode, erroff, pat, len, err);
    pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE | PCRE2_JIT_PARTIAL_SOFT);
    re->md = pcre2_match_data_create_from_pattern(re->code, NULL);
    if (!re->md) {
        slm_regex_free(re);
        slm_error_set(err, SLM_ENOMEM, "regex: out of memory");
        return NULL;
    }
    return re;
}

slm_regex_result slm_regex_match(slm_regex *re, const char *s, size_t len)
{
    /* NO_UTF_CHECK is not passed: invalid UTF-8 text simply does not match */
    int rc = pcre2_match(re->code, (PCRE2_SPTR)s, len, 0, PCRE2_PARTIAL_SOFT, re->md, NULL);
    if (rc >= 0) return SLM_REGEX_FULL;
    /* the empty text inspects no character, so PCRE2 reports no partial
     * match; it is a prefix of every match */
    if (rc == PCRE2_ERROR_PARTIAL || len == 0) return SLM_REGEX_PARTIAL;
    return SLM_REGEX_NONE;
}
