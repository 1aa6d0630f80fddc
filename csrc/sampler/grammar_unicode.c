/* PCRE2's \d \s \w under PCRE2_UCP as GBNF classes, so that generate{regex =}
 * can run such patterns on the grammar matcher (lua/slm/grammar.lua
 * from_regex). PCRE2 10.42's pcre2pattern(3) defines them with UCP as:
 *   \d  \p{Nd}
 *   \s  \p{Z} (Zs, Zl, Zp), \h and \v: U+0009-000D, U+0020, U+0085, U+00A0,
 *       U+1680, U+180E, U+2000-200A, U+2028, U+2029, U+202F, U+205F, U+3000
 *   \w  \p{L}, \p{N} and underscore
 * The categories come from utf8proc; a code point whose category differs
 * between utf8proc's Unicode version and PCRE2's would be classed as
 * utf8proc says (spec/93 compares the two on sample texts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "grammar.h"

static int in_class(char which, uint32_t c)
{
    utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    switch (which) {
    case 'd': return cat == UTF8PROC_CATEGORY_ND;
    case 'w':
        return c == '_' || (cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO) ||
               (cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO);
    default:   /* 's' */
        return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 || c == 0x180E ||
               (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
               c == 0x3000 || cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL ||
               cat == UTF8PROC_CATEGORY_ZP;
    }
}

char *slm_grammar_unicode_class(char which, slm_error *err)
{
    if (which != 'd' && which != 's' && which != 'w') {
        slm_error_set(err, SLM_EINVAL, "grammar: no class \\%c", which > 32 && which < 127 ? which : '?');
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *out = malloc(cap);
    if (!out) goto oom;
    for (uint32_t c = 0; c <= 0x10FFFF; c++) {
        if (!in_class(which, c)) continue;
        uint32_t hi = c;
        while (hi < 0x10FFFF && in_class(which, hi + 1)) hi++;
        if (n + 24 > cap) {
            char *no = realloc(out, cap *= 2);
            if (!no) goto oom;
            out = no;
        }
        n += (size_t)(hi > c ? snprintf(out + n, cap - n, "\\U%08X-\\U%08X", c, hi) : snprintf(out + n, cap - n, "\\U%08X", c));
        c = hi;
    }
    out[n] = 0;
    return out;
oom:
    free(out);
    slm_error_set(err, SLM_ENOMEM, "grammar: out of memory");
    return NULL;
}
