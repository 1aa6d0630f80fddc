/* The tokenizer object: vocabulary tables, special tokens and the encode
 * driver that splits special-token text out before running an engine.
 * Follows llama.cpp's llama_vocab::impl::tokenize and tokenizer_st_partition
 * (special tokens searched longest first, each over every remaining raw
 * fragment; user-defined tokens always, control/unknown ones only when
 * parse_special). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

void slm_tok_ids_free(slm_tok_ids *ids)
{
    if (!ids) return;
    free(ids->v);
    ids->v = NULL;
    ids->n = ids->cap = 0;
}

slm_status slm_tok_ids_push(slm_tok_ids *ids, int32_t id, slm_error *err)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 64;
        int32_t *v = realloc(ids->v, sizeof *v * cap);
        if (!v) return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return SLM_OK;
}

slm_tok *slm_tok_alloc(slm_tok_kind kind, int32_t n_vocab, slm_error *err)
{
    if (n_vocab <= 0) {
        slm_error_set(err, SLM_EFORMAT, "tokenizer: empty vocabulary");
        return NULL;
    }
    slm_tok *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->kind = kind;
    t->n_vocab = n_vocab;
    t->scores = calloc((size_t)n_vocab, sizeof *t->scores);
    t->attr = calloc((size_t)n_vocab, 1);
    if (!t->scores || !t->attr) goto oom;
    for (int i = 0; i < SLM_TOK_N_SPECIAL; i++) t->special[i] = -1;
    t->fim_pad = t->fim_rep = t->fim_sep = -1;
    for (int i = 0; i < 256; i++) t->byte_tok[i] = t->byte_str[i] = -1;
    return t;
oom:
    slm_tok_free(t);
    slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
    return NULL;
}

void slm_tok_free(slm_tok *t)
{
    if (!t) return;
    slm_strtab_free(&t->str);
    slm_pairmap_free(&t->merges);
    slm_pairmap_free(&t->bigrams);
    slm_steps_free(&t->norm);
    slm_steps_free(&t->pre_steps);
    slm_trie_free(t->trie);
    free(t->scores);
    free(t->attr);
    free(t->specials);
    free(t->eog);
    free(t);
}

slm_status slm_tok_add_token(slm_tok *t, int32_t id, const char *text,
                             size_t len, float score, int attr, slm_error *err)
{
    if (id != t->str.n || id >= t->n_vocab)
        return slm_error_set(err, SLM_EINVAL, "tokenizer: token %d out of order",
                             (int)id);
    char empty[32];
    if (len == 0) {
        /* an empty piece could never be matched; give it a unique name as
         * the reference does */
        len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%d]", (int)id);
        text = empty;
    }
    int added = 0;
    int32_t got = slm_strtab_add(&t->str, text, len, &added);
    if (got < 0) return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
    if (!added)
        return slm_error_set(err, SLM_EFORMAT,
                             "tokenizer: duplicate token '%.*s' (ids %d and %d)",
                             (int)(len > 64 ? 64 : len), text, (int)got, (int)id);
    t->scores[id] = score;
    t->attr[id] = (uint8_t)attr;
    return SLM_OK;
}

void slm_tok_error_path(slm_error *err, const char *path)
{
    if (!err || err->code == SLM_ENOMEM || strstr(err->msg, path)) return;
    char msg[sizeof err->msg];
    memcpy(msg, err->msg, sizeof msg);
    snprintf(err->msg, sizeof err->msg, "%s: %.400s", path, msg);
}

static int32_t find_text(const slm_tok *t, const char *s)
{
    int32_t id = slm_strtab_find(&t->str, s, strlen(s));
    return id < t->n_vocab ? id : -1;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int add_eog(slm_tok *t, int32_t id)
{
    if (id < 0) return 0;
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 0;
    int32_t *v = realloc(t->eog, sizeof *v * (size_t)(t->n_eog + 1));
    if (!v) return -1;
    t->eog = v;
    t->eog[t->n_eog++] = id;
    return 0;
}

slm_status slm_tok_finish(slm_tok *t, slm_error *err)
{
    /* byte tokens: <0xNN> (SentencePiece), else the byte itself as a piece */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int32_t id = find_text(t, buf);
        if (id < 0 && t->byte_level) {
            char c[2];
            int n = slm_bytelevel_char((uint8_t)b, c);
            id = slm_strtab_find(&t->str, c, (size_t)n);
            if (id >= t->n_vocab) id = -1;
        }
        if (id < 0 && !t->byte_level && t->kind != SLM_TOK_BPE) {
            char c = (char)b;
            id = slm_strtab_find(&t->str, &c, 1);
            if (id >= t->n_vocab) id = -1;
        }
        t->byte_tok[b] = id;
        if (t->byte_level) {
            char c[2];
            int l = slm_bytelevel_char((uint8_t)b, c);
            t->byte_str[b] = slm_strtab_find(&t->str, c, (size_t)l);
        }
    }
    /* end-of-generation ids: the declared ones plus the texts the reference
     * recognizes */
    static const char *const eot_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
        "<|end_of_text|>", "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>",
        "<end_of_utterance>", NULL};
    if (t->special[SLM_TOK_EOT] < 0)
        for (int i = 0; eot_texts[i] && t->special[SLM_TOK_EOT] < 0; i++)
            t->special[SLM_TOK_EOT] = find_text(t, eot_texts[i]);
    if (t->special[SLM_TOK_EOM] < 0) t->special[SLM_TOK_EOM] = find_text(t, "<|eom_id|>");
    if (add_eog(t, t->special[SLM_TOK_EOS]) || add_eog(t, t->special[SLM_TOK_EOT]) ||
        add_eog(t, t->special[SLM_TOK_EOM]))
        goto oom;
    for (int i = 0; eot_texts[i]; i++)
        if (add_eog(t, find_text(t, eot_texts[i]))) goto oom;
    /* as the reference, the fill-in-the-middle pad, repository and file
     * separator tokens end generation too (Qwen's <|fim_pad|>,
     * <|repo_name|>, <|file_sep|>; StarCoder-style <fim_pad>, <reponame>):
     * the ids the file names, else the first text of each list found */
    static const char *const fim_texts[3][6] = {
        {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]", NULL},
        {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL},
        {"<|file_sep|>", NULL}};
    int32_t *fim[3] = {&t->fim_pad, &t->fim_rep, &t->fim_sep};
    for (int k = 0; k < 3; k++) {
        for (int i = 0; *fim[k] < 0 && fim_texts[k][i]; i++) *fim[k] = find_text(t, fim_texts[k][i]);
        if (add_eog(t, *fim[k])) goto oom;
    }
    /* tokens split out of raw text before the engine runs */
    int n = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->attr[id] & (SLM_TOKATTR_CONTROL | SLM_TOKATTR_USER | SLM_TOKATTR_UNKNOWN))
            n++;
    free(t->specials);
    t->specials = malloc(sizeof *t->specials * (size_t)(n ? n : 1));
    uint64_t *keys = malloc(sizeof *keys * (size_t)(n ? n : 1));
    if (!t->specials || !keys) {
        free(keys);
        goto oom;
    }
    /* longest text first, then by id: (~len, id) sorted ascending */
    t->n_specials = 0;
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->attr[id] & (SLM_TOKATTR_CONTROL | SLM_TOKATTR_USER | SLM_TOKATTR_UNKNOWN))
            keys[t->n_specials++] = ((uint64_t)(UINT32_MAX - t->str.len[id]) << 32) | (uint32_t)id;
    qsort(keys, (size_t)t->n_specials, sizeof *keys, cmp_u64);
    for (int k = 0; k < t->n_specials; k++) t->specials[k] = (int32_t)(uint32_t)keys[k];
    free(keys);
    if ((t->kind == SLM_TOK_SPM || (t->kind == SLM_TOK_BPE && !t->byte_level)) &&
        !t->ignore_merges) {
        /* SPM merges only into vocabulary pieces; rank BPE also through
         * intermediate merge strings */
        int32_t limit = t->kind == SLM_TOK_SPM ? t->n_vocab : t->str.n;
        for (int32_t id = 0; id < limit; id++) {
            size_t len;
            const unsigned char *s = (const unsigned char *)slm_strtab_str(&t->str, id, &len);
            int32_t prev = -1;
            for (size_t i = 0; i < len;) {
                int32_t cp;
                int l = slm_utf8_len(s + i, len - i);
                if (l) cp = (int32_t)slm_utf8_decode(s + i, l);
                else { cp = 0x110000 + s[i]; l = 1; }
                if (prev >= 0 && slm_pairmap_put(&t->bigrams, prev, cp, 0, 0)) goto oom;
                prev = cp;
                i += (size_t)l;
            }
        }
    }
    /* the newline token, as the reference determines it */
    if (t->kind == SLM_TOK_SPM) {
        t->special[SLM_TOK_NL] = t->byte_tok['\n'];
    } else {
        slm_tok_ids ids = {0};
        if (slm_tok_encode(t, "\n", 1, 0, 0, &ids, err)) return err ? err->code : SLM_ENOMEM;
        t->special[SLM_TOK_NL] = ids.n ? ids.v[0] : -1;
        slm_tok_ids_free(&ids);
    }
    return SLM_OK;
oom:
    return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
}

slm_tok_kind slm_tok_get_kind(const slm_tok *t) { return t->kind; }
int32_t slm_tok_n_vocab(const slm_tok *t) { return t->n_vocab; }
int slm_tok_adds_bos(const slm_tok *t) { return t->add_bos; }
int slm_tok_adds_eos(const slm_tok *t) { return t->add_eos; }
const char *slm_tok_model_name(const slm_tok *t) { return t->model; }
const char *slm_tok_pre_name(const slm_tok *t) { return t->pre; }

int32_t slm_tok_special_id(const slm_tok *t, slm_tok_special which)
{
    return (unsigned)which < SLM_TOK_N_SPECIAL ? t->special[which] : -1;
}

int slm_tok_attr(const slm_tok *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->attr[id] : 0;
}

int slm_tok_is_eog(const slm_tok *t, int32_t id)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == id) return 1;
    return 0;
}

const char *slm_tok_text(const slm_tok *t, int32_t id, size_t *len)
{
    if (id < 0 || id >= t->n_vocab) {
        *len = 0;
        return NULL;
    }
    return slm_strtab_str(&t->str, id, len);
}

int32_t slm_tok_find(const slm_tok *t, const char *text, size_t len)
{
    int32_t id = slm_strtab_find(&t->str, text, len);
    return id < t->n_vocab ? id : -1;
}

/* ---- special-token partition ------------------------------------------- */

typedef struct frag { size_t off, len; int32_t id; } frag;  /* id -1: raw */
typedef struct frags { frag *v; size_t n, cap; } frags;

static int frags_push(frags *f, size_t off, size_t len, int32_t id)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 16;
        frag *v = realloc(f->v, sizeof *v * cap);
        if (!v) return -1;
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = (frag){off, len, id};
    return 0;
}

static int is_cspace(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

/* Splits every raw fragment of *in at each occurrence of token id. */
static int split_special(const slm_tok *t, const char *text, int32_t id,
                         frags *in, frags *out)
{
    size_t tl;
    const char *tt = slm_strtab_str(&t->str, id, &tl);
    int attr = t->attr[id];
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        frag f = in->v[i];
        if (f.id >= 0 || f.len < tl) {
            if (frags_push(out, f.off, f.len, f.id)) return -1;
            continue;
        }
        size_t off = f.off, len = f.len;
        for (;;) {
            const char *m = len >= tl ? memmem(text + off, len, tt, tl) : NULL;
            if (!m) {
                if (len && frags_push(out, off, len, -1)) return -1;
                break;
            }
            size_t mpos = (size_t)(m - text);
            size_t left = mpos - off;
            if (attr & SLM_TOKATTR_LSTRIP)
                while (left > 0 && is_cspace(text[off + left - 1])) left--;
            if (left && frags_push(out, off, left, -1)) return -1;
            if (frags_push(out, mpos, tl, id)) return -1;
            size_t roff = mpos + tl, rlen = off + len - roff;
            if (attr & SLM_TOKATTR_RSTRIP)
                while (rlen > 0 && is_cspace(text[roff])) { roff++; rlen--; }
            off = roff;
            len = rlen;
            if (!len) break;
        }
    }
    return 0;
}

#define CACHE_MAX_WORD 64

/* One word through the engine, remembering short words' ids. */
static slm_status encode_word(const slm_tok *t, slm_tok_work *w, const char *p, size_t n,
                              slm_tok_ids *out, slm_error *err)
{
    uint64_t h = 0;
    if (n <= CACHE_MAX_WORD) {
        if (!w->cache && !(w->cache = slm_wcache_new()))
            return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        h = slm_hash_bytes(p, n);
        size_t nids;
        const int32_t *ids = slm_wcache_get(w->cache, p, n, h, &nids);
        if (ids) {
            for (size_t i = 0; i < nids; i++)
                if (slm_tok_ids_push(out, ids[i], err)) return SLM_ENOMEM;
            return SLM_OK;
        }
    }
    size_t first = out->n;
    slm_status st = t->kind == SLM_TOK_SPM ? slm_spm_encode(t, w, p, n, out, err)
                                           : slm_bpe_encode(t, w, p, n, out, err);
    /* (out->v is NULL while nothing was pushed: no arithmetic on it) */
    if (!st && n <= CACHE_MAX_WORD)
        slm_wcache_put(w->cache, p, n, h, out->n > first ? out->v + first : NULL, out->n - first);
    return st;
}

/* Cuts a piece where no merge can join two characters, then encodes the
 * words; the result is the same as merging the whole piece at once. */
static slm_status encode_piece(const slm_tok *t, slm_tok_work *w, const char *p, size_t n,
                               slm_tok_ids *out, slm_error *err)
{
    if (!t->bigrams.n) return encode_word(t, w, p, n, out, err);
    const unsigned char *s = (const unsigned char *)p;
    size_t start = 0, first = out->n;
    int32_t prev = -1, r, m;
    for (size_t i = 0; i <= n;) {
        int32_t cp = -1;
        int l = 1;
        if (i < n) {
            l = slm_utf8_len(s + i, n - i);
            if (l) cp = (int32_t)slm_utf8_decode(s + i, l);
            else { cp = 0x110000 + s[i]; l = 1; }
        }
        if (i == n || (prev >= 0 && !slm_pairmap_get(&t->bigrams, prev, cp, &r, &m))) {
            size_t before = out->n;
            slm_status st = encode_word(t, w, p + start, i - start, out, err);
            if (st) return st;
            /* fuse_unk joins unknowns across the cut, as over one word */
            int32_t unk = t->special[SLM_TOK_UNK];
            if (t->fuse_unk && unk >= 0 && before > first && out->n > before &&
                out->v[before - 1] == unk && out->v[before] == unk) {
                memmove(out->v + before, out->v + before + 1,
                        sizeof *out->v * (out->n - before - 1));
                out->n--;
            }
            start = i;
        }
        prev = cp;
        i += (size_t)l;
    }
    return SLM_OK;
}

static slm_status encode_raw(const slm_tok *t, slm_tok_work *w, const char *s,
                             size_t n, int prefix_space, int first,
                             slm_tok_ids *out, slm_error *err)
{
    if (t->kind == SLM_TOK_RWKV) return slm_rwkv_encode(t, s, n, out, err);
    if (t->kind == SLM_TOK_WPM) return slm_wpm_encode(t, s, n, out, err);
    if (t->escape_ws || prefix_space) {
        /* SentencePiece convention: optional dummy prefix, spaces -> U+2581
         * (llama2.c's vocabulary keeps plain spaces: escape_ws off) */
        char *buf = slm_work_buf(w, 3 * n + 3);
        if (!buf) return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
        const char *sp = t->escape_ws ? "\xe2\x96\x81" : " ";
        size_t spn = t->escape_ws ? 3 : 1, k = 0;
        if (prefix_space) { memcpy(buf, sp, spn); k = spn; }
        for (size_t i = 0; i < n; i++) {
            if (s[i] == ' ') { memcpy(buf + k, sp, spn); k += spn; }
            else buf[k++] = s[i];
        }
        s = buf;
        n = k;
    }
    if (t->kind == SLM_TOK_SPM) return encode_piece(t, w, s, n, out, err);
    slm_span sec = {s, n};
    if (t->norm.n) {
        slm_status st = slm_normalize(&t->norm, w, sec, &sec, err);
        if (st) return st;
    }
    slm_status st = slm_pretokenize(&t->pre_steps, w, sec, first, err);
    if (st) return st;
    /* the pieces live in w->a, which the engine does not touch */
    size_t np = w->na;
    for (size_t i = 0; i < np; i++) {
        st = encode_piece(t, w, w->a[i].p, w->a[i].n, out, err);
        if (st) return st;
    }
    return SLM_OK;
}

#define QUAD_BITS (1u << 20)

static uint32_t quad_slot(const char *p)
{
    uint32_t x;
    memcpy(&x, p, 4);
    return (x * 0x9E3779B1u) >> 12;
}

/* The ids add_special puts around the text: BOS ... EOS, or for WordPiece
 * [CLS] ... [SEP] (the file's cls and separator ids, else bos and eos) */
static int32_t lead_id(const slm_tok *t)
{
    if (t->kind == SLM_TOK_WPM && t->special[SLM_TOK_CLS] >= 0) return t->special[SLM_TOK_CLS];
    return t->special[SLM_TOK_BOS];
}

static int32_t tail_id(const slm_tok *t)
{
    if (t->kind == SLM_TOK_WPM && t->special[SLM_TOK_SEP] >= 0) return t->special[SLM_TOK_SEP];
    return t->special[SLM_TOK_EOS];
}

slm_status slm_tok_encode(const slm_tok *t, const char *text, size_t len,
                          int add_special, int parse_special, slm_tok_ids *out,
                          slm_error *err)
{
    slm_tok_work w = {0};
    slm_status st = slm_tok_encode_work(t, &w, text, len, add_special, parse_special, out, err);
    slm_tok_work_free(&w);
    return st;
}

slm_status slm_tok_encode_work(const slm_tok *t, slm_tok_work *wp, const char *text,
                               size_t len, int add_special, int parse_special,
                               slm_tok_ids *out, slm_error *err)
{
    slm_status st = SLM_OK;
    frags a = {0}, b = {0};
    if (len && frags_push(&a, 0, len, -1)) goto oom;
    if (len) {
        /* which bytes and adjacent byte pairs occur, to skip the specials
         * that cannot match without scanning the text for each */
        uint8_t seen[256] = {0}, pairs[65536 / 8] = {0};
        for (size_t i = 0; i < len; i++) {
            seen[(uint8_t)text[i]] = 1;
            if (i + 1 < len) {
                unsigned pr = (unsigned)(uint8_t)text[i] << 8 | (uint8_t)text[i + 1];
                pairs[pr >> 3] |= (uint8_t)(1u << (pr & 7));
            }
        }
        /* long texts: also a bit set of the 4-byte windows, checked with a
         * special's first and last four bytes */
        uint8_t *quads = NULL;
        if (len >= 4096 && t->n_specials > 8) {
            quads = calloc(QUAD_BITS / 8, 1);
            for (size_t i = 0; quads && i + 4 <= len; i++) {
                uint32_t q = quad_slot(text + i);
                quads[q >> 3] |= (uint8_t)(1u << (q & 7));
            }
        }
        for (int k = 0; k < t->n_specials; k++) {
            int32_t id = t->specials[k];
            if (!parse_special && (t->attr[id] & (SLM_TOKATTR_CONTROL | SLM_TOKATTR_UNKNOWN)))
                continue;
            size_t tl;
            const char *tt = slm_strtab_str(&t->str, id, &tl);
            if (!tl || !seen[(uint8_t)tt[0]]) continue;
            if (tl > 1) {
                unsigned pr = (unsigned)(uint8_t)tt[0] << 8 | (uint8_t)tt[1];
                if (!(pairs[pr >> 3] & (1u << (pr & 7)))) continue;
            }
            if (quads && tl >= 4) {
                uint32_t q0 = quad_slot(tt), q1 = quad_slot(tt + tl - 4);
                if (!(quads[q0 >> 3] & (1u << (q0 & 7))) || !(quads[q1 >> 3] & (1u << (q1 & 7))))
                    continue;
            }
            if (split_special(t, text, id, &a, &b)) {
                free(quads);
                goto oom;
            }
            frags tmp = a;
            a = b;
            b = tmp;
        }
        free(quads);
    }
    if (add_special && t->add_bos && lead_id(t) >= 0)
        if ((st = slm_tok_ids_push(out, lead_id(t), err))) goto done;
    int prev_special = 1;  /* the dummy prefix goes on the first raw text */
    for (size_t i = 0; i < a.n; i++) {
        if (a.v[i].id >= 0) {
            if ((st = slm_tok_ids_push(out, a.v[i].id, err))) goto done;
            prev_special = 1;
            continue;
        }
        st = encode_raw(t, wp, text + a.v[i].off, a.v[i].len,
                        t->add_space_prefix && prev_special, a.v[i].off == 0,
                        out, err);
        if (st) goto done;
        prev_special = 0;
    }
    if (add_special && t->add_eos && tail_id(t) >= 0)
        st = slm_tok_ids_push(out, tail_id(t), err);
    goto done;
oom:
    st = slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
done:
    free(a.v);
    free(b.v);
    /* texts made for this call go; buffers and the word cache stay */
    for (size_t i = 0; i < wp->nbufs; i++) free(wp->bufs[i]);
    wp->nbufs = 0;
    return st;
}
