/* Pre-tokenizers and normalizers.
 *
 * A pre-tokenizer is a list of steps applied one after another to a list of
 * pieces; a regex step splits every piece separately (its lookarounds see
 * only that piece), keeping matches and the gaps between them as pieces
 * ("Isolated"), which is how llama.cpp's unicode_regex_split chains several
 * regexes and how Hugging Face's Split works. Regexes run with PCRE2 in UTF +
 * UCP mode with PCRE2_MATCH_INVALID_UTF, so invalid UTF-8 bytes are never
 * matched and end up in gaps; JIT-compiled when available.
 *
 * Normalizers (Hugging Face): NFC/NFD/NFKC/NFKD and lowercase through
 * utf8proc, Prepend, Replace (literal), Strip. A section that is not valid
 * UTF-8 is left as is by the Unicode normalizers. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

char *slm_work_buf(slm_tok_work *w, size_t n)
{
    if (w->nbufs == w->capbufs) {
        size_t cap = w->capbufs ? w->capbufs * 2 : 8;
        char **v = realloc(w->bufs, sizeof *v * cap);
        if (!v) return NULL;
        w->bufs = v;
        w->capbufs = cap;
    }
    char *b = malloc(n ? n : 1);
    if (b) w->bufs[w->nbufs++] = b;
    return b;
}

void slm_tok_work_free(slm_tok_work *w)
{
    for (size_t i = 0; i < w->nbufs; i++) free(w->bufs[i]);
    free(w->bufs);
    free(w->a);
    free(w->b);
    if (w->match_data) pcre2_match_data_free(w->match_data);
    free(w->sym);
    free(w->heap);
    free(w->enc);
    slm_wcache_free(w->cache);
    memset(w, 0, sizeof *w);
}

void slm_steps_free(slm_steps *s)
{
    for (int i = 0; i < s->n; i++) {
        if (s->v[i].re) pcre2_code_free(s->v[i].re);
        free(s->v[i].s1);
        free(s->v[i].s2);
    }
    free(s->v);
    memset(s, 0, sizeof *s);
}

slm_step *slm_steps_push(slm_steps *s, slm_step_kind kind, slm_error *err)
{
    if (s->n == s->cap) {
        int cap = s->cap ? s->cap * 2 : 4;
        slm_step *v = realloc(s->v, sizeof *v * (size_t)cap);
        if (!v) {
            slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
            return NULL;
        }
        s->v = v;
        s->cap = cap;
    }
    slm_step *st = &s->v[s->n++];
    memset(st, 0, sizeof *st);
    st->kind = kind;
    return st;
}

slm_status slm_steps_add_regex(slm_steps *s, const char *pattern,
                               slm_split_behavior behavior, int invert,
                               slm_error *err)
{
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF |
                                   PCRE2_DOLLAR_ENDONLY,
                                   &ec, &eo, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return slm_error_set(err, SLM_EFORMAT,
                             "tokenizer: bad pre-tokenizer regex at offset %zu: %s",
                             (size_t)eo, (const char *)msg);
    }
    /* JIT is an optimization: the interpreter gives the same matches */
    int jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    slm_step *st = slm_steps_push(s, SLM_STEP_SPLIT, err);
    if (!st) {
        pcre2_code_free(re);
        return SLM_ENOMEM;
    }
    st->re = re;
    st->jit = jit;
    st->behavior = behavior;
    st->invert = invert;
    return SLM_OK;
}

/* The regex sequences of llama.cpp's llm_tokenizer_bpe for each pre name. */
#define RE_GPT2 "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define RE_LLAMA3 "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define RE_QWEN2 "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
/* o200k (gpt-4o, Phi-4-mini): the tokenizer.json regex itself. llama.cpp
 * rewrites its letter classes for std::regex ("any letter but a-z" for the
 * upper-case run), which splits differently from Hugging Face on non-ASCII
 * case changes ("ПриветМир") and on combining marks ("e\u0301"); PCRE2 runs
 * the original, so slm follows the tokenizer the model was trained with. */
#define RE_O200K "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|" \
                 "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|" \
                 "\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

typedef struct pre_set { const char *names; const char *re[6]; } pre_set;

static const pre_set pre_sets[] = {
    {"|gpt-2|phi-2|mpt|olmo|jais|jina-es|jina-de|jina-v2-es|jina-v2-de|"
     "gigachat|exaone4|trillion|granite-docling|roberta-bpe|jina-v1-en|"
     "jina-v2-code|modern-bert|mellum|a.x-4.0|",
     {RE_GPT2}},
    {"|llama3|llama-v3|llama-bpe|falcon3|falcon-h1|pixtral|midm-2.0|lfm2|"
     "dbrx|smaug-bpe|chatglm-bpe|glm4|",
     {RE_LLAMA3}},
    {"|qwen2|deepseek-r1-qwen|stablelm2|megrez|hunyuan|kormo|",
     {RE_QWEN2}},
    {"|gpt-4o|llama4|kanana2|talkie|", {RE_O200K}},
    /* Six letters of this class have canonical equivalents (U+1F7D, U+1FBE,
     * U+1FD3, U+1FDB, U+2126 and U+212A normalize to U+03CE, U+03B9,
     * U+0390, U+038A, U+03A9 and 'K'): a tool that normalizes the file
     * replaces them, which turned three ranges backwards and "K-ℭ" into
     * everything from 'K' on. They are written as escapes, which survive. */
    {"|deepseek-llm|",
     {"[\\r\\n]",
      "\\s?[A-Za-zµÀ-ÖØ-öø-ƺƼ-ƿǄ-ʓʕ-ʯͰ-ͳͶͷͻ-ͽͿΆΈ-ΊΌΎ-ΡΣ-ϵϷ-ҁҊ-ԯԱ-ՖႠ-ჅᎠ-Ᏽᏸ-ᏽᲐ-ᲺᲽ-Ჿᴀ-ᴫᵫ-ᵷᵹ-ᶚḀ-ἕἘ-Ἕἠ-ὅὈ-Ὅὐ-ὗὙὛὝὟ-\\x{1F7D}ᾀ-ᾴᾶ-ᾼ\\x{1FBE}ῂ-ῄῆ-ῌῐ-\\x{1FD3}ῖ-\\x{1FDB}ῠ-Ῥῲ-ῴῶ-ῼℂℇℊ-ℓℕℙ-ℝℤ\\x{2126}ℨ\\x{212A}-ℭℯ-ℴℹℼ-ℿⅅ-ⅉⅎↃↄⰀ-ⱻⱾ-ⳤⳫ-ⳮⳲⳳꙀ-ꙭꚀ-ꚛꜢ-ꝯꝱ-ꞇꞋ-ꞎꭰ-ꮿﬀ-ﬆﬓ-ﬗＡ-Ｚａ-ｚ𐐀-𐑏𐒰-𐓓𐓘-𐓻𐲀-𐲲𐳀-𐳲𑢠-𑣟𞤀-𞥃]+",
      "\\s?[!-/:-~！-／：-～‘-‟　-。]+", "\\s+$", "[一-龥ࠀ-一가-퟿]+",
      "\\p{N}+"}},
    {"|deepseek-coder|",
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}},
    {"|falcon|",
     {"[\\p{P}\\$\\+<=>\\^~\\|`]+", RE_GPT2, "[0-9][0-9][0-9]"}},
    {"|starcoder|refact|command-r|smollm|codeshell|exaone|minerva-7b|",
     {"\\p{N}", RE_GPT2}},
    {"|poro-chat|bloom|gpt3-finnish|",
     {" ?[^(\\s|.,!?…。，、।۔،)]+"}},
    {"|viking|", {" ?[^(\\s|.,!?…。，、।۔،)]+", "\\p{N}"}},
    {"|default|",
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", RE_GPT2, "\\p{N}+", "[0-9][0-9][0-9]"}},
};

slm_status slm_pretok_for_gguf(slm_steps *s, const char *pre, slm_error *err)
{
    char key[64];
    snprintf(key, sizeof key, "|%s|", pre && *pre ? pre : "default");
    for (size_t i = 0; i < sizeof pre_sets / sizeof pre_sets[0]; i++) {
        if (!strstr(pre_sets[i].names, key)) continue;
        for (int j = 0; j < 6 && pre_sets[i].re[j]; j++) {
            slm_status st = slm_steps_add_regex(s, pre_sets[i].re[j],
                                                SLM_SPLIT_ISOLATED, 0, err);
            if (st) return st;
        }
        return SLM_OK;
    }
    return slm_error_set(err, SLM_EUNSUPPORTED,
                         "tokenizer: unknown pre-tokenizer '%s'", pre);
}

const char *slm_pretok_names(size_t i)
{
    return i < sizeof pre_sets / sizeof pre_sets[0] ? pre_sets[i].names : NULL;
}

const char *slm_pretok_regex(const char *pre)
{
    char key[64];
    snprintf(key, sizeof key, "|%s|", pre);
    for (size_t i = 0; i < sizeof pre_sets / sizeof pre_sets[0]; i++)
        if (strstr(pre_sets[i].names, key))
            return pre_sets[i].re[1] ? NULL : pre_sets[i].re[0];
    return NULL;
}

slm_status slm_pretok_split(const char *pre, const char *text, size_t n,
                            size_t *offs, size_t cap, size_t *count, slm_error *err)
{
    slm_steps s = {0};
    slm_tok_work w = {0};
    *count = 0;
    slm_status st = slm_pretok_for_gguf(&s, pre, err);
    if (!st) st = slm_pretokenize(&s, &w, (slm_span){text, n}, 1, err);
    /* the GGUF sets are regex splits only: every piece lies inside text */
    for (size_t i = 0; !st && i < w.na; i++) {
        if (i == cap) {
            st = slm_error_set(err, SLM_ERANGE, "tokenizer: more than %zu pieces", cap);
            break;
        }
        offs[2 * i] = (size_t)(w.a[i].p - text);
        offs[2 * i + 1] = w.a[i].n;
        *count = i + 1;
    }
    slm_tok_work_free(&w);
    slm_steps_free(&s);
    return st;
}

/* ---- piece lists ---------------------------------------------------------- */

static int push_b(slm_tok_work *w, const char *p, size_t n)
{
    if (w->nb == w->capb) {
        size_t cap = w->capb ? w->capb * 2 : 256;
        slm_span *v = realloc(w->b, sizeof *v * cap);
        if (!v) return -1;
        w->b = v;
        w->capb = cap;
    }
    w->b[w->nb++] = (slm_span){p, n};
    return 0;
}

static void swap_ab(slm_tok_work *w)
{
    slm_span *v = w->a;
    size_t cap = w->capa;
    w->a = w->b;
    w->capa = w->capb;
    w->na = w->nb;
    w->b = v;
    w->capb = cap;
    w->nb = 0;
}

/* Appends piece [p, p+n) as a match (m = 1) or gap (m = 0) under the step's
 * behaviour; *pend holds a piece waiting to merge with the next one. */
static int emit(slm_tok_work *w, const slm_step *st, const char *p, size_t n,
                int m, slm_span *pend)
{
    if (!n) return 0;
    if (st->invert) m = !m;
    switch (st->behavior) {
    case SLM_SPLIT_REMOVED:
        return m ? 0 : push_b(w, p, n);
    case SLM_SPLIT_MERGED_PREV:
        if (m && w->nb && w->b[w->nb - 1].p + w->b[w->nb - 1].n == p) {
            w->b[w->nb - 1].n += n;
            return 0;
        }
        return push_b(w, p, n);
    case SLM_SPLIT_MERGED_NEXT:
        if (pend->n) {
            p = pend->p;
            n += pend->n;
            pend->n = 0;
        }
        if (m) {
            *pend = (slm_span){p, n};
            return 0;
        }
        return push_b(w, p, n);
    case SLM_SPLIT_CONTIGUOUS:
        if (m && pend->n && pend->p + pend->n == p) {
            pend->n += n;
            return 0;
        }
        if (pend->n && push_b(w, pend->p, pend->n)) return -1;
        pend->n = 0;
        if (m) {
            *pend = (slm_span){p, n};
            return 0;
        }
        return push_b(w, p, n);
    default:
        return push_b(w, p, n);
    }
}

static slm_status split_regex(const slm_step *st, slm_tok_work *w, slm_error *err)
{
    if (!w->match_data) {
        w->match_data = pcre2_match_data_create(8, NULL);
        if (!w->match_data) goto oom;
    }
    w->nb = 0;
    for (size_t i = 0; i < w->na; i++) {
        const char *p = w->a[i].p;
        size_t n = w->a[i].n, gap = 0, pos = 0;
        slm_span pend = {NULL, 0};
        while (pos < n) {
            int rc = st->jit ? pcre2_jit_match(st->re, (PCRE2_SPTR)p, n, pos, 0, w->match_data, NULL)
                             : pcre2_match(st->re, (PCRE2_SPTR)p, n, pos, 0, w->match_data, NULL);
            if (rc < 0) break;
            PCRE2_SIZE *ov = pcre2_get_ovector_pointer(w->match_data);
            size_t m0 = ov[0], m1 = ov[1];
            if (m1 <= m0) {
                /* empty match: move on by one character */
                int l = slm_utf8_len((const unsigned char *)p + pos, n - pos);
                pos += l ? (size_t)l : 1;
                continue;
            }
            if (m0 > gap && emit(w, st, p + gap, m0 - gap, 0, &pend)) goto oom;
            if (emit(w, st, p + m0, m1 - m0, 1, &pend)) goto oom;
            gap = pos = m1;
        }
        if (n > gap && emit(w, st, p + gap, n - gap, 0, &pend)) goto oom;
        if (pend.n && push_b(w, pend.p, pend.n)) goto oom;
    }
    swap_ab(w);
    return SLM_OK;
oom:
    return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
}

static const char META[] = "\xe2\x96\x81";

static slm_status metaspace(const slm_step *st, slm_tok_work *w, int first,
                            slm_error *err)
{
    w->nb = 0;
    for (size_t i = 0; i < w->na; i++) {
        const char *p = w->a[i].p;
        size_t n = w->a[i].n;
        size_t nsp = 0;
        for (size_t j = 0; j < n; j++) nsp += p[j] == ' ';
        int pre = 0;
        if (st->prepend_scheme == 0 || (st->prepend_scheme == 1 && first && i == 0))
            pre = !(n && (p[0] == ' ' || (n >= 3 && !memcmp(p, META, 3))));
        char *buf = slm_work_buf(w, n + 2 * nsp + 3 * (size_t)pre);
        if (!buf) goto oom;
        size_t k = 0;
        if (pre) { memcpy(buf, META, 3); k = 3; }
        for (size_t j = 0; j < n; j++) {
            if (p[j] == ' ') { memcpy(buf + k, META, 3); k += 3; }
            else buf[k++] = p[j];
        }
        if (!st->split) {
            if (push_b(w, buf, k)) goto oom;
            continue;
        }
        /* split before every U+2581 (MergedWithNext) */
        size_t start = 0;
        for (size_t j = 1; j + 3 <= k; j++) {
            if (!memcmp(buf + j, META, 3)) {
                if (push_b(w, buf + start, j - start)) goto oom;
                start = j;
            }
        }
        if (k > start && push_b(w, buf + start, k - start)) goto oom;
    }
    swap_ab(w);
    return SLM_OK;
oom:
    return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
}

slm_status slm_pretokenize(const slm_steps *s, slm_tok_work *w, slm_span in,
                           int first, slm_error *err)
{
    w->nb = 0;
    if (push_b(w, in.p, in.n))
        return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
    swap_ab(w);
    for (int i = 0; i < s->n; i++) {
        const slm_step *st = &s->v[i];
        slm_status rc = SLM_OK;
        if (st->kind == SLM_STEP_SPLIT) {
            rc = split_regex(st, w, err);
        } else if (st->kind == SLM_STEP_METASPACE) {
            rc = metaspace(st, w, first, err);
        } else if (st->kind == SLM_STEP_PREFIX_SPACE) {
            w->nb = 0;
            for (size_t j = 0; j < w->na; j++) {
                slm_span sp = w->a[j];
                if (sp.n && sp.p[0] == ' ') {
                    if (push_b(w, sp.p, sp.n)) goto oom;
                    continue;
                }
                char *buf = slm_work_buf(w, sp.n + 1);
                if (!buf) goto oom;
                buf[0] = ' ';
                memcpy(buf + 1, sp.p, sp.n);
                if (push_b(w, buf, sp.n + 1)) goto oom;
            }
            swap_ab(w);
        }
        if (rc) return rc;
    }
    return SLM_OK;
oom:
    return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
}

static int valid_utf8(const char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        int l = slm_utf8_len((const unsigned char *)p + i, n - i);
        if (!l) return 0;
        i += (size_t)l;
    }
    return 1;
}

/* Applies one normalizer to s, possibly into a new work buffer. */
static slm_status normalize_one(const slm_step *st, slm_tok_work *w, slm_span *s,
                                slm_error *err)
{
    switch (st->kind) {
    case SLM_STEP_NFC: case SLM_STEP_NFD: case SLM_STEP_NFKC: case SLM_STEP_NFKD:
    case SLM_STEP_LOWER: {
        if (!s->n || !valid_utf8(s->p, s->n)) return SLM_OK;
        if (st->kind == SLM_STEP_LOWER) {
            char *buf = slm_work_buf(w, s->n * 3 + 4);
            if (!buf) goto oom;
            size_t k = 0;
            for (size_t i = 0; i < s->n;) {
                int l = slm_utf8_len((const unsigned char *)s->p + i, s->n - i);
                uint32_t cp = slm_utf8_decode((const unsigned char *)s->p + i, l);
                k += (size_t)slm_utf8_encode((uint32_t)utf8proc_tolower((utf8proc_int32_t)cp), buf + k);
                i += (size_t)l;
            }
            *s = (slm_span){buf, k};
            return SLM_OK;
        }
        utf8proc_option_t opt = UTF8PROC_STABLE;
        if (st->kind == SLM_STEP_NFC) opt |= UTF8PROC_COMPOSE;
        else if (st->kind == SLM_STEP_NFD) opt |= UTF8PROC_DECOMPOSE;
        else if (st->kind == SLM_STEP_NFKC) opt |= UTF8PROC_COMPOSE | UTF8PROC_COMPAT;
        else opt |= UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT;
        utf8proc_uint8_t *out = NULL;
        utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s->p,
                                          (utf8proc_ssize_t)s->n, &out, opt);
        if (r < 0) {
            free(out);
            return r == UTF8PROC_ERROR_NOMEM ? SLM_ENOMEM : SLM_OK;
        }
        char *buf = slm_work_buf(w, (size_t)r);
        if (!buf) {
            free(out);
            goto oom;
        }
        memcpy(buf, out, (size_t)r);
        free(out);
        *s = (slm_span){buf, (size_t)r};
        return SLM_OK;
    }
    case SLM_STEP_PREPEND: {
        if (!s->n) return SLM_OK;
        char *buf = slm_work_buf(w, s->n + st->n1);
        if (!buf) goto oom;
        memcpy(buf, st->s1, st->n1);
        memcpy(buf + st->n1, s->p, s->n);
        *s = (slm_span){buf, s->n + st->n1};
        return SLM_OK;
    }
    case SLM_STEP_REPLACE: {
        if (!st->n1 || s->n < st->n1) return SLM_OK;
        size_t count = 0;
        for (size_t i = 0; i + st->n1 <= s->n;) {
            if (!memcmp(s->p + i, st->s1, st->n1)) { count++; i += st->n1; }
            else i++;
        }
        if (!count) return SLM_OK;
        size_t cap = s->n + count * st->n2;
        char *buf = slm_work_buf(w, cap);
        if (!buf) goto oom;
        size_t k = 0;
        for (size_t i = 0; i < s->n;) {
            if (i + st->n1 <= s->n && !memcmp(s->p + i, st->s1, st->n1)) {
                memcpy(buf + k, st->s2, st->n2);
                k += st->n2;
                i += st->n1;
            } else {
                buf[k++] = s->p[i++];
            }
        }
        *s = (slm_span){buf, k};
        return SLM_OK;
    }
    case SLM_STEP_STRIP: {
        size_t a = 0, b = s->n;
        if (st->left)
            while (a < b && (s->p[a] == ' ' || s->p[a] == '\t' || s->p[a] == '\n' || s->p[a] == '\r')) a++;
        if (st->right)
            while (b > a && (s->p[b - 1] == ' ' || s->p[b - 1] == '\t' || s->p[b - 1] == '\n' || s->p[b - 1] == '\r')) b--;
        *s = (slm_span){s->p + a, b - a};
        return SLM_OK;
    }
    default:
        return SLM_OK;
    }
oom:
    return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
}

slm_status slm_normalize(const slm_steps *s, slm_tok_work *w, slm_span in,
                         slm_span *out, slm_error *err)
{
    *out = in;
    for (int i = 0; i < s->n; i++) {
        slm_status st = normalize_one(&s->v[i], w, out, err);
        if (st == SLM_ENOMEM && !(err && err->code == SLM_ENOMEM))
            return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        if (st) return st;
    }
    return SLM_OK;
}
