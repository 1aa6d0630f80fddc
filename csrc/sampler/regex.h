/* Regular-expression constraints for generation (PCRE2, UTF + UCP, its
 * interpreter; \C, one byte inside a character, is refused): the core of
 * `slm.core.regex` and generate{regex =}.
 *
 * A pattern constrains the whole text: slm_regex_match tells whether a text
 * matches the whole pattern (FULL), is a prefix of some text the pattern
 * matches so that generation may continue (PARTIAL: PCRE2 soft partial
 * matching), or neither (NONE). The empty text is PARTIAL at least.
 * Invalid UTF-8 in a text never matches (it is not an error).
 * FULL is exactly PCRE2's match anchored at both ends. PARTIAL runs the
 * pattern inside end anchors that PCRE2 adds (PCRE2_EXTRA_MATCH_LINE).
 * Two constructs defeat that, so that a prefix of a match may be NONE: a
 * recursion into the whole pattern ((?R), (?0)) meets the anchors too, and
 * a (*ACCEPT) reached before the end is a complete match that PCRE2 prefers
 * to the partial one ("a.|(*ACCEPT)": "ac" is FULL, "a" NONE).
 *
 * An slm_regex holds its own match data: one thread at a time. */
#ifndef SLM_REGEX_H
#define SLM_REGEX_H

#include <stddef.h>

#include "../core/status.h"

typedef struct slm_regex slm_regex;

typedef enum slm_regex_result {
    /* PCRE2 gave up before it could tell (its match or depth limit, or
     * memory): a pattern that backtracks catastrophically, as "(\w+)*\s"
     * does on a long word that is not yet followed by a space. Answering
     * NONE would refuse a text that may well match. */
    SLM_REGEX_LIMIT = -1,
    SLM_REGEX_NONE = 0,
    SLM_REGEX_PARTIAL,
    SLM_REGEX_FULL
} slm_regex_result;

/* Compiles pattern[0..len). NULL on failure: SLM_EINVAL with PCRE2's message
 * and the offset in the pattern ("regex: missing terminating ] for character
 * class at offset 4 of '[0-9'"), or SLM_ENOMEM. */
slm_regex *slm_regex_new(const char *pattern, size_t len, slm_error *err);
void slm_regex_free(slm_regex *re);   /* NULL is fine */

slm_regex_result slm_regex_match(slm_regex *re, const char *text, size_t len);

#endif
