/* Loading entry points: format detection, llama2.c tokenizer.bin and the
 * 256-byte vocabulary.
 *
 * llama2.c tokenizer.bin (little-endian): int32 max_token_length, then per
 * token until EOF: float32 score, int32 len, len bytes. Ids 0..2 are <unk>,
 * <s>, </s>; "<0xNN>" pieces are byte tokens. Encoding is SentencePiece BPE
 * with a dummy prefix, as llama2.c's encode(). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

static int read_all(const char *path, char **data, size_t *len, slm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return slm_error_set(err, SLM_EIO, "%s: cannot open: %s", path, strerror(errno)), -1;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = cap < ((size_t)1 << 31) ? realloc(buf, cap * 2) : NULL;
        if (!nb) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = nb;
        cap *= 2;
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf) return slm_error_set(err, SLM_ENOMEM, "%s: out of memory or too large", path), -1;
    if (bad) {
        free(buf);
        return slm_error_set(err, SLM_EIO, "%s: read error", path), -1;
    }
    *data = buf;
    *len = n;
    return 0;
}

slm_tok *slm_tok_load_llama2c(const char *path, slm_error *err)
{
    char *d;
    size_t n;
    if (read_all(path, &d, &n, err)) return NULL;
    slm_tok *t = NULL;
    /* first pass: count and validate */
    int32_t count = 0;
    size_t off = 4;
    if (n < 4) goto bad;
    while (off < n) {
        int32_t len;
        if (n - off < 8) goto bad;
        memcpy(&len, d + off + 4, 4);
        if (len < 0 || (size_t)len > n - off - 8) goto bad;
        off += 8 + (size_t)len;
        count++;
    }
    if (count < 3) goto bad;
    if (!(t = slm_tok_alloc(SLM_TOK_SPM, count, err))) goto fail;
    snprintf(t->model, sizeof t->model, "llama2c");
    off = 4;
    for (int32_t id = 0; id < count; id++) {
        float score;
        int32_t len;
        memcpy(&score, d + off, 4);
        memcpy(&len, d + off + 4, 4);
        const char *s = d + off + 8;
        int attr = SLM_TOKATTR_NORMAL;
        if (id == 0) attr = SLM_TOKATTR_UNKNOWN;
        else if (id <= 2) attr = SLM_TOKATTR_CONTROL;
        else if (len == 6 && !memcmp(s, "<0x", 3) && s[5] == '>') attr = SLM_TOKATTR_BYTE;
        if (slm_tok_add_token(t, id, s, (size_t)len, score, attr, err)) goto fail;
        off += 8 + (size_t)len;
    }
    t->special[SLM_TOK_UNK] = 0;
    t->special[SLM_TOK_BOS] = 1;
    t->special[SLM_TOK_EOS] = 2;
    t->add_bos = 1;
    t->add_space_prefix = 1;
    if (slm_tok_finish(t, err)) goto fail;
    free(d);
    return t;
bad:
    slm_error_set(err, SLM_EFORMAT, "%s: not a llama2.c tokenizer (bad token record at byte %zu)",
                  path, off);
fail:
    slm_tok_error_path(err, path);
    free(d);
    slm_tok_free(t);
    return NULL;
}

slm_tok *slm_tok_new_bytes(slm_error *err)
{
    slm_tok *t = slm_tok_alloc(SLM_TOK_RWKV, 256, err);
    if (!t) return NULL;
    snprintf(t->model, sizeof t->model, "bytes");
    for (int b = 0; b < 256; b++) {
        /* the escaped form, so the trie builder sees the real byte */
        char s[8];
        int n = snprintf(s, sizeof s, "\\x%02x", b);
        if (slm_tok_add_token(t, b, s, (size_t)n, 0, SLM_TOKATTR_NORMAL, err)) goto fail;
    }
    if (slm_rwkv_build(t, err) || slm_tok_finish(t, err)) goto fail;
    return t;
fail:
    slm_tok_free(t);
    return NULL;
}

slm_tok *slm_tok_load(const char *path, slm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        slm_error_set(err, SLM_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char head[16] = {0};
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    if (n >= 4 && !memcmp(head, "GGUF", 4)) return slm_tok_load_gguf(path, err);
    size_t i = 0;
    if (n >= 3 && head[0] == 0xEF && head[1] == 0xBB && head[2] == 0xBF) i = 3;
    while (i < n && (head[i] == ' ' || head[i] == '\n' || head[i] == '\r' || head[i] == '\t')) i++;
    if (i < n && head[i] == '{') return slm_tok_load_json(path, err);
    if (slm_tok_is_spm_model(head, n)) return slm_tok_load_spm_model(path, err);
    return slm_tok_load_llama2c(path, err);
}
