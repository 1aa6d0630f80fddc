/* Decoding ids to bytes, and the incremental decoder for streaming.
 * Pieces follow llama.cpp's token_to_piece: "▁" -> " " for SentencePiece
 * vocabularies, <0xNN> -> the byte, GPT-2 characters -> their bytes,
 * control and unknown tokens only when asked, user-defined tokens as text. */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

static size_t put(char *buf, size_t cap, size_t k, const char *s, size_t n)
{
    if (k < cap) memcpy(buf + k, s, k + n <= cap ? n : cap - k);
    return k + n;
}

long slm_tok_piece(const slm_tok *t, int32_t id, int special, char *buf, size_t cap)
{
    if (id < 0 || id >= t->n_vocab) return -1;
    size_t n;
    if (t->kind == SLM_TOK_RWKV) {
        const char *s = slm_rwkv_piece(t, id, &n);
        put(buf, cap, 0, s, n);
        return (long)n;
    }
    const char *s = slm_strtab_str(&t->str, id, &n);
    int attr = t->attr[id];
    if (attr & (SLM_TOKATTR_CONTROL | SLM_TOKATTR_UNKNOWN)) {
        if (!special) return 0;
        put(buf, cap, 0, s, n);
        return (long)n;
    }
    if (attr & SLM_TOKATTR_USER) {
        put(buf, cap, 0, s, n);
        return (long)n;
    }
    if (attr & SLM_TOKATTR_BYTE) {
        if (n == 6 && hexv(s[3]) >= 0 && hexv(s[4]) >= 0) {
            char c = (char)(hexv(s[3]) * 16 + hexv(s[4]));
            put(buf, cap, 0, &c, 1);
            return 1;
        }
        put(buf, cap, 0, s, n);
        return (long)n;
    }
    if (!(attr & SLM_TOKATTR_NORMAL)) return 0;
    size_t k = 0;
    if (t->byte_level) {
        for (size_t i = 0; i < n;) {
            int l = slm_utf8_len((const unsigned char *)s + i, n - i);
            if (!l) l = 1;
            int b = l > 1 || (unsigned char)s[i] < 0x80
                        ? slm_bytelevel_byte(slm_utf8_decode((const unsigned char *)s + i, l))
                        : -1;
            if (b >= 0) {
                char c = (char)b;
                k = put(buf, cap, k, &c, 1);
            } else {
                k = put(buf, cap, k, s + i, (size_t)l);
            }
            i += (size_t)l;
        }
        return (long)k;
    }
    if (t->escape_ws || t->decode_meta) {
        for (size_t i = 0; i < n;) {
            if (i + 3 <= n && !memcmp(s + i, "\xe2\x96\x81", 3)) {
                k = put(buf, cap, k, " ", 1);
                i += 3;
            } else {
                k = put(buf, cap, k, s + i, 1);
                i++;
            }
        }
        return (long)k;
    }
    put(buf, cap, 0, s, n);
    return (long)n;
}

/* Appends the piece of id to a growable buffer. */
static slm_status append_piece(const slm_tok *t, int32_t id, int special, char **buf,
                               size_t *len, size_t *cap, slm_error *err)
{
    for (;;) {
        long r = slm_tok_piece(t, id, special, *buf + *len, *cap - *len);
        if (r < 0)
            return slm_error_set(err, SLM_ERANGE, "token id %ld out of range (vocabulary of %d)",
                                 (long)id, (int)t->n_vocab);
        if ((size_t)r <= *cap - *len) {
            *len += (size_t)r;
            return SLM_OK;
        }
        size_t nc = *cap * 2 + (size_t)r + 16;
        char *nb = realloc(*buf, nc);
        if (!nb) return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        *buf = nb;
        *cap = nc;
    }
}

/* The dummy prefix space belongs to the first text token, after any BOS. */
static int is_control(const slm_tok *t, int32_t id)
{
    return (t->attr[id] & (SLM_TOKATTR_CONTROL | SLM_TOKATTR_UNKNOWN)) != 0;
}

static int strips_lead(const slm_tok *t)
{
    return t->add_space_prefix || t->decode_strip_lead;
}

slm_status slm_tok_decode(const slm_tok *t, const int32_t *ids, size_t n, int special,
                          char **out, size_t *out_len, slm_error *err)
{
    size_t cap = n * 4 + 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
    int strip = strips_lead(t);
    for (size_t i = 0; i < n; i++) {
        size_t before = len;
        slm_status st = append_piece(t, ids[i], special, &buf, &len, &cap, err);
        if (st) {
            free(buf);
            return st;
        }
        if (strip && len > before && !is_control(t, ids[i])) {
            /* the dummy prefix space of the first word is not part of the text */
            if (buf[before] == ' ') {
                memmove(buf + before, buf + before + 1, len - before - 1);
                len--;
            }
            strip = 0;
        }
    }
    if (t->kind == SLM_TOK_WPM) len = slm_wpm_cleanup(buf, len);
    if (len == cap) {
        char *nb = realloc(buf, cap + 1);
        if (!nb) {
            free(buf);
            return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        }
        buf = nb;
    }
    buf[len] = 0;
    *out = buf;
    *out_len = len;
    return SLM_OK;
}

/* ---- streaming ------------------------------------------------------------ */
struct slm_tok_stream {
    const slm_tok *t;
    int special, strip;
    char *pend; size_t npend, cappend;   /* bytes not yet returned */
    char *outb; size_t capout;
};

slm_tok_stream *slm_tok_stream_new(const slm_tok *t, int special, slm_error *err)
{
    slm_tok_stream *s = calloc(1, sizeof *s);
    if (!s) {
        slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        return NULL;
    }
    s->t = t;
    s->special = special;
    s->strip = strips_lead(t);
    return s;
}

void slm_tok_stream_free(slm_tok_stream *s)
{
    if (!s) return;
    free(s->pend);
    free(s->outb);
    free(s);
}

/* Could s[0..n) still become a valid sequence once more bytes arrive? */
static int incomplete_prefix(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t need = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
    if (!need || n >= need) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    if (n >= 2) {
        if (c == 0xE0 && s[1] < 0xA0) return 0;
        if (c == 0xED && s[1] > 0x9F) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;
        if (c == 0xF4 && s[1] > 0x8F) return 0;
    }
    return 1;
}

/* Moves the complete part of pend to outb; final: nothing may wait. */
static slm_status drain(slm_tok_stream *s, int final, const char **out, size_t *out_len,
                        slm_error *err)
{
    size_t need = s->npend * 3 + 1;
    if (need > s->capout) {
        char *b = realloc(s->outb, need);
        if (!b) return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        s->outb = b;
        s->capout = need;
    }
    const unsigned char *p = (const unsigned char *)s->pend;
    size_t i = 0, k = 0;
    while (i < s->npend) {
        int l = slm_utf8_len(p + i, s->npend - i);
        if (l) {
            memcpy(s->outb + k, p + i, (size_t)l);
            k += (size_t)l;
            i += (size_t)l;
            continue;
        }
        if (!final && incomplete_prefix(p + i, s->npend - i)) break;
        memcpy(s->outb + k, "\xef\xbf\xbd", 3);  /* U+FFFD */
        k += 3;
        i++;
    }
    if (i < s->npend) memmove(s->pend, s->pend + i, s->npend - i);
    s->npend -= i;
    *out = s->outb;
    *out_len = k;
    return SLM_OK;
}

slm_status slm_tok_stream_add(slm_tok_stream *s, int32_t id, const char **out,
                              size_t *out_len, slm_error *err)
{
    size_t before = s->npend;
    if (s->cappend - s->npend < 64) {
        size_t nc = s->cappend * 2 + 64;
        char *b = realloc(s->pend, nc);
        if (!b) return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        s->pend = b;
        s->cappend = nc;
    }
    slm_status st = append_piece(s->t, id, s->special, &s->pend, &s->npend, &s->cappend, err);
    if (st) return st;
    if (s->strip && s->npend > before && !is_control(s->t, id)) {
        if (s->pend[before] == ' ') {
            memmove(s->pend + before, s->pend + before + 1, s->npend - before - 1);
            s->npend--;
        }
        s->strip = 0;
    }
    return drain(s, 0, out, out_len, err);
}

slm_status slm_tok_stream_flush(slm_tok_stream *s, const char **out, size_t *out_len,
                                slm_error *err)
{
    return drain(s, 1, out, out_len, err);
}
