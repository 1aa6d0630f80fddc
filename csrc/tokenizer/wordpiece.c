/* WordPiece, BERT's tokenizer, for GGUF vocabularies with
 * tokenizer.ggml.model = "bert", as llama.cpp's llm_tokenizer_wpm runs it
 * (which on ordinary text gives Hugging Face's BertTokenizer ids):
 *
 * 1. normalize each code point (BertNormalizer). With strip_accents: the
 *    canonical decomposition (NFD) and marks (\p{M}) dropped. Always:
 *    control characters (Cc Cf Co Cs that are not whitespace), U+0000 and
 *    U+FFFD dropped. With lowercase: the simple lowercase mapping.
 *    strip_accents follows lowercase unless the file says otherwise
 *    (tokenizer.ggml.normalizer.strip_accents), as in both references.
 * 2. split into words (BertPreTokenizer): whitespace ends a word; each
 *    punctuation character (\p{P}), each ASCII symbol (\p{S} below 0x7F:
 *    $ + < = > ^ ` | ~) and each CJK ideograph is a word of its own; other
 *    symbols (€, →) stay inside their word. The classes are those of the
 *    character before lowercasing.
 * 3. each word: greedy longest match from the left over "▁" + word. The
 *    converter stores whole-word entries as "▁word", "##x" continuations as
 *    "x" and control tokens unchanged, so the first piece is looked up with
 *    the prefix and the later ones without. A position where nothing
 *    matches makes the whole word [UNK]; so does a word of more than 100
 *    characters (BERT's max_input_chars_per_word; llama.cpp has no such
 *    limit and matches those words too).
 *
 * Bytes that are not valid UTF-8 are dropped: the reference reads each as
 * U+FFFD, which step 1 drops. The decomposition is utf8proc's full NFD,
 * as Hugging Face's; llama.cpp keeps only the first code point of each
 * decomposition, which differs for the few characters whose decomposition
 * continues with a non-mark (Hangul syllables: 한 is ᄒ ᅡ ᆫ here and in
 * Hugging Face, ᄒ in llama.cpp). */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "tok_internal.h"

/* "▁" (U+2581), the converter's word-start mark */
static const char WORD_MARK[] = "\xe2\x96\x81";
#define WORD_MARK_LEN 3

/* BERT's _is_chinese_char: the CJK Unified Ideographs blocks and their
 * extensions, the Compatibility Ideographs and their supplement. Extension
 * C starts at 0x2B920 as in Hugging Face's tokenizers (and llama.cpp),
 * where the Unicode block starts at 0x2B740 (covered by the row before). */
static int is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* \s as the reference's tables define it (Unicode White_Space) */
static int is_space(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

int slm_wpm_class(uint32_t c)
{
    if (is_space(c)) return SLM_WPM_SPACE;
    const utf8proc_category_t cat = utf8proc_category((utf8proc_int32_t)c);
    if (c == 0 || c == 0xFFFD || cat == UTF8PROC_CATEGORY_CC || cat == UTF8PROC_CATEGORY_CF ||
        cat == UTF8PROC_CATEGORY_CO || cat == UTF8PROC_CATEGORY_CS)
        return SLM_WPM_DROP;
    if (cat == UTF8PROC_CATEGORY_MN || cat == UTF8PROC_CATEGORY_MC || cat == UTF8PROC_CATEGORY_ME)
        return SLM_WPM_MARK;
    if ((cat >= UTF8PROC_CATEGORY_PC && cat <= UTF8PROC_CATEGORY_PO) ||
        (c < 0x7F && cat >= UTF8PROC_CATEGORY_SM && cat <= UTF8PROC_CATEGORY_SO) || is_cjk(c))
        return SLM_WPM_ALONE;
    return SLM_WPM_LETTER;
}

/* The word being built: its first WPM_WORD_BYTES bytes after the mark, and
 * its length in characters (a longer word is [UNK] anyway: its text is not
 * needed, so a huge word costs no memory). */
#define WPM_WORD_BYTES (4 * SLM_WPM_MAX_CHARS)
typedef struct word_buf {
    char b[WORD_MARK_LEN + WPM_WORD_BYTES];
    size_t len, nchars;      /* bytes kept after the mark; characters seen */
} word_buf;

static slm_status flush(word_buf *w, slm_wpm_word_fn fn, void *ctx, slm_error *err)
{
    if (!w->nchars) return SLM_OK;
    slm_status st = fn(ctx, w->b, WORD_MARK_LEN + w->len, w->nchars, err);
    w->len = w->nchars = 0;
    return st;
}

static void append(word_buf *w, uint32_t c)
{
    char u[4];
    const int l = slm_utf8_encode(c, u);
    if (w->len + (size_t)l <= WPM_WORD_BYTES) {
        memcpy(w->b + WORD_MARK_LEN + w->len, u, (size_t)l);
        w->len += (size_t)l;
    }
    w->nchars++;
}

slm_status slm_wpm_words(int lowercase, int strip_accents, const char *text, size_t n,
                         slm_wpm_word_fn fn, void *ctx, slm_error *err)
{
    word_buf w;
    slm_status st;
    memcpy(w.b, WORD_MARK, WORD_MARK_LEN);
    w.len = w.nchars = 0;
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < n;) {
        const int l = slm_utf8_len(s + i, n - i);
        if (!l) {   /* not UTF-8: U+FFFD for the reference, dropped */
            i++;
            continue;
        }
        const uint32_t cp = slm_utf8_decode(s + i, l);
        i += (size_t)l;
        /* canonical decomposition: at most 4 code points in Unicode 15 (the
         * buffer leaves room); a failure keeps the character as it is */
        utf8proc_int32_t d[16];
        utf8proc_ssize_t nd = 1;
        d[0] = (utf8proc_int32_t)cp;
        if (strip_accents) {
            nd = utf8proc_decompose_char((utf8proc_int32_t)cp, d, 16, UTF8PROC_DECOMPOSE, NULL);
            if (nd < 1 || nd > 16) {
                nd = 1;
                d[0] = (utf8proc_int32_t)cp;
            }
        }
        for (utf8proc_ssize_t k = 0; k < nd; k++) {
            const uint32_t c = (uint32_t)d[k];
            const int cls = slm_wpm_class(c);
            if (cls == SLM_WPM_DROP || (cls == SLM_WPM_MARK && strip_accents)) continue;
            if (cls == SLM_WPM_SPACE) {
                if ((st = flush(&w, fn, ctx, err))) return st;
                continue;
            }
            const uint32_t out = lowercase ? (uint32_t)utf8proc_tolower((utf8proc_int32_t)c) : c;
            if (cls == SLM_WPM_ALONE) {
                if ((st = flush(&w, fn, ctx, err))) return st;
                append(&w, out);
                if ((st = flush(&w, fn, ctx, err))) return st;
                continue;
            }
            append(&w, out);
        }
    }
    return flush(&w, fn, ctx, err);
}

/* a byte that can end a piece: the last one of a character */
static int ends_char(const char *s, size_t j, size_t n)
{
    return j == n || ((unsigned char)s[j] & 0xC0) != 0x80;
}

slm_status slm_wpm_match(const slm_tok *t, const char *word, size_t n, size_t nchars,
                         slm_tok_ids *out, slm_error *err)
{
    const int32_t unk = t->special[SLM_TOK_UNK];
    const size_t first = out->n;
    if (nchars <= SLM_WPM_MAX_CHARS) {
        size_t i = 0;
        while (i < n) {
            /* the longest vocabulary entry starting at byte i */
            int32_t id = -1;
            size_t end = n - i < t->max_piece ? n : i + t->max_piece;
            for (; end > i; end--)
                if (ends_char(word, end, n) && (id = slm_tok_find(t, word + i, end - i)) >= 0) break;
            if (id < 0) break;
            if (slm_tok_ids_push(out, id, err)) return SLM_ENOMEM;
            i = end;
        }
        if (i >= n) return SLM_OK;
    }
    /* some position matched nothing, or the word is too long: [UNK] */
    out->n = first;
    if (unk >= 0 && slm_tok_ids_push(out, unk, err)) return SLM_ENOMEM;
    return SLM_OK;
}

typedef struct encode_ctx {
    const slm_tok *t;
    slm_tok_ids *out;
} encode_ctx;

static slm_status encode_word(void *arg, const char *word, size_t n, size_t nchars, slm_error *err)
{
    const encode_ctx *c = arg;
    return slm_wpm_match(c->t, word, n, nchars, c->out, err);
}

slm_status slm_wpm_encode(const slm_tok *t, const char *s, size_t n, slm_tok_ids *out,
                          slm_error *err)
{
    encode_ctx c = {t, out};
    return slm_wpm_words(t->lowercase, t->strip_accents, s, n, encode_word, &c, err);
}

/* Hugging Face's clean_up_tokenization, applied to decoded text in place:
 * " ." " ?" " !" " ," lose their space, " ' " becomes "'", and " n't",
 * " 'm", " 's", " 've", " 're" lose theirs (each rule a replacement over the
 * whole text, in this order, as transformers does). Returns the new length. */
size_t slm_wpm_cleanup(char *s, size_t n)
{
    static const struct { const char *from, *to; } rules[] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    for (size_t r = 0; r < sizeof rules / sizeof rules[0]; r++) {
        const size_t fl = strlen(rules[r].from), tl = strlen(rules[r].to);
        size_t k = 0;
        for (size_t i = 0; i < n;) {
            if (i + fl <= n && !memcmp(s + i, rules[r].from, fl)) {
                memcpy(s + k, rules[r].to, tl);   /* k + tl < i + fl: only read bytes */
                k += tl;
                i += fl;
            } else {
                s[k++] = s[i++];
            }
        }
        n = k;
    }
    return n;
}
