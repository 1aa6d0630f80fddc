/* Tokenizer from GGUF metadata (tokenizer.ggml.*), as llama.cpp's
 * llama_vocab::impl::load reads it:
 *   model   "llama" (SentencePiece BPE) | "gpt2" (byte-level BPE) | "rwkv"
 *           | "bert" (WordPiece)
 *   tokens  [string], scores [f32|i32], token_type [i32], merges ["a b"]
 *   pre     pre-tokenizer name (byte-level BPE)
 *   bos/eos/unknown/padding/seperator/cls/mask/eot/eom/fim_pad/fim_rep/
 *   fim_sep_token_id, add_bos_token, add_eos_token, add_sep_token,
 *   add_space_prefix, normalizer.lowercase/strip_accents (WordPiece)
 * Every array length and type is checked before use. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/gguf.h"
#include "tok_internal.h"

static int64_t key(const slm_gguf *g, const char *k) { return slm_gguf_find_key(g, k); }

static int get_bool(const slm_gguf *g, const char *k, int def)
{
    int64_t i = key(g, k);
    if (i < 0) return def;
    int ok = 0;
    int64_t v = slm_gguf_get_int(g, i, &ok);
    return ok ? v != 0 : def;
}

static void get_id(const slm_gguf *g, const char *k, int32_t n_vocab, int32_t *id)
{
    if (*id >= n_vocab) *id = -1;
    int64_t i = key(g, k);
    if (i < 0) return;
    int ok = 0;
    int64_t v = slm_gguf_get_int(g, i, &ok);
    if (ok && v >= 0 && v < n_vocab) *id = (int32_t)v;
}

static void get_str(const slm_gguf *g, const char *k, char *buf, size_t cap)
{
    buf[0] = 0;
    int64_t i = key(g, k);
    if (i < 0 || slm_gguf_kv_type(g, i) != SLM_GGUF_STRING) return;
    size_t n;
    const char *s = slm_gguf_get_str(g, i, &n);
    if (!s) return;
    if (n >= cap) n = cap - 1;
    memcpy(buf, s, n);
    buf[n] = 0;
}

static int attr_of_type(int32_t type)
{
    switch (type) {
    case 1: return SLM_TOKATTR_NORMAL;
    case 2: return SLM_TOKATTR_UNKNOWN;
    case 3: return SLM_TOKATTR_CONTROL;
    case 4: return SLM_TOKATTR_USER;
    case 5: return SLM_TOKATTR_UNUSED;
    case 6: return SLM_TOKATTR_BYTE;
    default: return 0;
    }
}

/* BERT's normalizer options (tokenizer.ggml.normalizer.*): lowercase, and
 * strip_accents, which follows lowercase unless the file gives it (both
 * references do so). Any other normalizer key could change the tokens
 * without slm knowing: refused, naming the key. */
static slm_status wpm_options(slm_tok *t, const slm_gguf *g, const char *path, slm_error *err)
{
    static const char prefix[] = "tokenizer.ggml.normalizer.";
    for (int64_t i = 0; i < slm_gguf_n_kv(g); i++) {
        const char *k = slm_gguf_key(g, i);
        if (strncmp(k, prefix, sizeof prefix - 1)) continue;
        const char *name = k + sizeof prefix - 1;
        if (strcmp(name, "lowercase") && strcmp(name, "strip_accents"))
            return slm_error_set(err, SLM_EUNSUPPORTED,
                                 "%s: metadata key '%s' is not understood by slm's WordPiece tokenizer "
                                 "(it may change the tokens)", path, k);
        if (slm_gguf_kv_type(g, i) != SLM_GGUF_BOOL)
            return slm_error_set(err, SLM_EFORMAT, "%s: metadata %s must be a boolean", path, k);
    }
    t->lowercase = get_bool(g, "tokenizer.ggml.normalizer.lowercase", 0);
    t->strip_accents = get_bool(g, "tokenizer.ggml.normalizer.strip_accents", t->lowercase);
    /* the longest entry bounds the lengths greedy matching tries */
    for (int32_t id = 0; id < t->n_vocab; id++)
        if (t->str.len[id] > t->max_piece) t->max_piece = t->str.len[id];
    return SLM_OK;
}

/* Merges "left right" (split at the first space after the first byte). */
static slm_status load_merges(slm_tok *t, const slm_gguf *g, const char *path,
                              slm_error *err)
{
    int64_t i = key(g, "tokenizer.ggml.merges");
    if (i < 0)
        return slm_error_set(err, SLM_EFORMAT, "%s: tokenizer.ggml.merges missing", path);
    if (slm_gguf_kv_type(g, i) != SLM_GGUF_ARRAY || slm_gguf_arr_type(g, i) != SLM_GGUF_STRING)
        return slm_error_set(err, SLM_EFORMAT,
                             "%s: tokenizer.ggml.merges is not an array of strings", path);
    uint64_t n = slm_gguf_arr_len(g, i);
    if (n > INT32_MAX)
        return slm_error_set(err, SLM_EFORMAT, "%s: tokenizer.ggml.merges too long", path);
    for (uint64_t r = 0; r < n; r++) {
        size_t len;
        const char *s = slm_gguf_arr_str(g, i, r, &len);
        if (!s || len < 3) continue;
        const char *sp = memchr(s + 1, ' ', len - 1);
        if (!sp) continue;
        size_t la = (size_t)(sp - s), lb = len - la - 1;
        int32_t a = slm_strtab_add(&t->str, s, la, NULL);
        int32_t b = a >= 0 ? slm_strtab_add(&t->str, sp + 1, lb, NULL) : -1;
        if (b < 0) goto oom;
        /* the merged string: a then b, contiguous except for the space */
        char stack[256];
        char *buf = la + lb <= sizeof stack ? stack : malloc(la + lb);
        if (!buf) goto oom;
        memcpy(buf, s, la);
        memcpy(buf + la, sp + 1, lb);
        int32_t m = slm_strtab_add(&t->str, buf, la + lb, NULL);
        if (buf != stack) free(buf);
        if (m < 0 || slm_pairmap_put(&t->merges, a, b, (int32_t)r, m)) goto oom;
    }
    return SLM_OK;
oom:
    return slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
}

static slm_tok *from_gguf(const slm_gguf *g, const char *path, slm_error *err)
{
    char model[32], pre[64], name[128];
    get_str(g, "tokenizer.ggml.model", model, sizeof model);
    get_str(g, "tokenizer.ggml.pre", pre, sizeof pre);
    get_str(g, "general.name", name, sizeof name);
    slm_tok_kind kind;
    if (!strcmp(model, "llama")) kind = SLM_TOK_SPM;
    else if (!strcmp(model, "gpt2")) kind = SLM_TOK_BPE;
    else if (!strcmp(model, "rwkv")) kind = SLM_TOK_RWKV;
    else if (!strcmp(model, "bert")) kind = SLM_TOK_WPM;
    else if (!model[0]) {
        slm_error_set(err, SLM_EFORMAT, "%s: no tokenizer (tokenizer.ggml.model missing)", path);
        return NULL;
    } else {
        slm_error_set(err, SLM_EUNSUPPORTED,
                      "%s: tokenizer.ggml.model '%s' not supported (llama, gpt2, rwkv, bert)",
                      path, model);
        return NULL;
    }
    int64_t ti = key(g, "tokenizer.ggml.tokens");
    if (ti < 0 || slm_gguf_kv_type(g, ti) != SLM_GGUF_ARRAY ||
        slm_gguf_arr_type(g, ti) != SLM_GGUF_STRING) {
        slm_error_set(err, SLM_EFORMAT,
                      "%s: tokenizer.ggml.tokens missing or not an array of strings", path);
        return NULL;
    }
    uint64_t n = slm_gguf_arr_len(g, ti);
    if (n == 0 || n > INT32_MAX) {
        slm_error_set(err, SLM_EFORMAT, "%s: tokenizer.ggml.tokens has %llu entries", path,
                      (unsigned long long)n);
        return NULL;
    }
    const float *fscores = NULL;
    const int32_t *iscores = NULL, *types = NULL;
    int64_t si = key(g, "tokenizer.ggml.scores");
    if (si >= 0) {
        slm_gguf_type at = slm_gguf_kv_type(g, si) == SLM_GGUF_ARRAY ? slm_gguf_arr_type(g, si)
                                                                   : SLM_GGUF_ARRAY;
        if ((at != SLM_GGUF_FLOAT32 && at != SLM_GGUF_INT32) || slm_gguf_arr_len(g, si) < n) {
            slm_error_set(err, SLM_EFORMAT,
                          "%s: tokenizer.ggml.scores must be f32/i32 with one per token", path);
            return NULL;
        }
        if (at == SLM_GGUF_FLOAT32) fscores = slm_gguf_arr_data(g, si);
        else iscores = slm_gguf_arr_data(g, si);
    }
    int64_t yi = key(g, "tokenizer.ggml.token_type");
    if (yi >= 0) {
        if (slm_gguf_kv_type(g, yi) != SLM_GGUF_ARRAY || slm_gguf_arr_type(g, yi) != SLM_GGUF_INT32 ||
            slm_gguf_arr_len(g, yi) < n) {
            slm_error_set(err, SLM_EFORMAT,
                          "%s: tokenizer.ggml.token_type must be i32 with one per token", path);
            return NULL;
        }
        types = slm_gguf_arr_data(g, yi);
    }
    slm_tok *t = slm_tok_alloc(kind, (int32_t)n, err);
    if (!t) return NULL;
    snprintf(t->model, sizeof t->model, "%s", model);
    snprintf(t->pre, sizeof t->pre, "%s", pre);
    for (uint64_t id = 0; id < n; id++) {
        size_t len;
        const char *s = slm_gguf_arr_str(g, ti, id, &len);
        float score = 0;
        int32_t type = 1;
        /* numeric arrays may sit unaligned in the mapping: memcpy */
        if (fscores) memcpy(&score, fscores + id, sizeof score);
        if (iscores) { int32_t v; memcpy(&v, iscores + id, sizeof v); score = (float)v; }
        if (types) memcpy(&type, types + id, sizeof type);
        if (slm_tok_add_token(t, (int32_t)id, s ? s : "", s ? len : 0, score,
                              types ? attr_of_type(type) : SLM_TOKATTR_NORMAL, err))
            goto fail;
    }
    if (kind == SLM_TOK_SPM) {
        t->special[SLM_TOK_BOS] = 1;
        t->special[SLM_TOK_EOS] = 2;
        t->special[SLM_TOK_UNK] = 0;
        t->add_space_prefix = 1;
        t->escape_ws = 1;
        t->add_bos = 1;
    } else if (kind == SLM_TOK_BPE) {
        t->special[SLM_TOK_BOS] = t->special[SLM_TOK_EOS] = 11;
        t->byte_level = 1;
        if (load_merges(t, g, path, err)) goto fail;
        if (slm_pretok_for_gguf(&t->pre_steps, pre, err)) goto fail;
        static const char *const llama3[] = {"llama3", "llama-v3", "llama-bpe", "falcon3",
                                             "falcon-h1", "pixtral", "midm-2.0", "lfm2", NULL};
        for (int i = 0; llama3[i]; i++)
            if (!strcmp(pre, llama3[i])) t->ignore_merges = t->add_bos = 1;
    } else if (kind == SLM_TOK_WPM) {
        /* the reference's defaults (the ids of Google's BERT vocab.txt),
         * replaced by the file's keys below */
        t->special[SLM_TOK_PAD] = 0;
        t->special[SLM_TOK_UNK] = 100;
        t->special[SLM_TOK_CLS] = 101;
        t->special[SLM_TOK_SEP] = 102;
        t->special[SLM_TOK_MASK] = 103;
        t->add_bos = 1;
        t->decode_meta = t->decode_strip_lead = 1;   /* "▁" starts a word */
        if (wpm_options(t, g, path, err)) goto fail;
    } else {
        if (slm_rwkv_build(t, err)) goto fail;
    }
    t->add_space_prefix = get_bool(g, "tokenizer.ggml.add_space_prefix", t->add_space_prefix);
    int32_t nv = (int32_t)n;
    get_id(g, "tokenizer.ggml.bos_token_id", nv, &t->special[SLM_TOK_BOS]);
    get_id(g, "tokenizer.ggml.eos_token_id", nv, &t->special[SLM_TOK_EOS]);
    get_id(g, "tokenizer.ggml.unknown_token_id", nv, &t->special[SLM_TOK_UNK]);
    get_id(g, "tokenizer.ggml.padding_token_id", nv, &t->special[SLM_TOK_PAD]);
    get_id(g, "tokenizer.ggml.seperator_token_id", nv, &t->special[SLM_TOK_SEP]);
    get_id(g, "tokenizer.ggml.cls_token_id", nv, &t->special[SLM_TOK_CLS]);
    get_id(g, "tokenizer.ggml.mask_token_id", nv, &t->special[SLM_TOK_MASK]);
    get_id(g, "tokenizer.ggml.eot_token_id", nv, &t->special[SLM_TOK_EOT]);
    get_id(g, "tokenizer.ggml.eom_token_id", nv, &t->special[SLM_TOK_EOM]);
    get_id(g, "tokenizer.ggml.fim_pad_token_id", nv, &t->fim_pad);
    get_id(g, "tokenizer.ggml.fim_rep_token_id", nv, &t->fim_rep);
    get_id(g, "tokenizer.ggml.fim_sep_token_id", nv, &t->fim_sep);
    t->add_bos = get_bool(g, "tokenizer.ggml.add_bos_token", t->add_bos);
    t->add_eos = get_bool(g, "tokenizer.ggml.add_eos_token", t->add_eos);
    /* BERT ends with [SEP] when either key asks (the reference's default
     * for these vocabularies is add_sep_token on) */
    if (kind == SLM_TOK_WPM) t->add_eos = t->add_eos || get_bool(g, "tokenizer.ggml.add_sep_token", 1);
    /* llama.cpp marks phi-3's special tokens as eating whitespace on their
     * right, by model name */
    for (char *c = name; *c; c++) *c = (char)tolower((unsigned char)*c);
    if (strstr(name, "phi-3") || strstr(name, "phi3")) {
        for (int32_t id = 0; id < nv; id++)
            if (t->attr[id] & (SLM_TOKATTR_CONTROL | SLM_TOKATTR_USER | SLM_TOKATTR_UNKNOWN))
                t->attr[id] |= SLM_TOKATTR_RSTRIP;
        int32_t id = slm_tok_find(t, "</s>", 4);
        if (id >= 0) t->attr[id] |= SLM_TOKATTR_RSTRIP;
        static const char *const keep[] = {"<unk>", "<s>", "<|endoftext|>", NULL};
        for (int i = 0; keep[i]; i++)
            if ((id = slm_tok_find(t, keep[i], strlen(keep[i]))) >= 0)
                t->attr[id] &= (uint8_t)~SLM_TOKATTR_RSTRIP;
    }
    if (slm_tok_finish(t, err)) goto fail;
    return t;
fail:
    slm_tok_error_path(err, path);
    slm_tok_free(t);
    return NULL;
}

slm_tok *slm_tok_load_gguf(const char *path, slm_error *err)
{
    slm_gguf *g = slm_gguf_open(path, err);
    if (!g) return NULL;
    slm_tok *t = from_gguf(g, path, err);
    slm_gguf_close(g);
    return t;
}
