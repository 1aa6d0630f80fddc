/* Training a byte-level BPE vocabulary (the GPT-2 recipe):
 *   1. pre-tokenize the text with a named pre-tokenizer regex and count the
 *      distinct pre-tokens;
 *   2. start from the 256 byte tokens (token b = GPT-2 character of byte b);
 *   3. repeatedly merge the most frequent adjacent pair (weighted by word
 *      counts; ties: the smaller (left id, right id)), until the vocabulary
 *      has the requested size or no pair occurs min_frequency times;
 *   4. append the special tokens, write tokenizer.json and/or GGUF metadata
 *      (tokenizer.ggml.*) that slm_tok_load reads back.
 * Pair counts are recomputed over the distinct words at every step:
 * O(merges x symbols), fine for the small vocabularies this is meant for
 * (teaching, custom tiny models); deterministic for a given input. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../formats/gguf.h"
#include "tok_internal.h"

typedef struct word { int32_t *sym; int32_t n; int64_t count; } word;

typedef struct counts {           /* (a, b) -> count, open addressing */
    uint64_t *keys; int64_t *val; size_t mask, n;
} counts;

static int counts_reset(counts *c, size_t want)
{
    size_t ns = 1024;
    while (ns < want * 2) ns *= 2;
    if (ns != c->mask + 1 || !c->keys) {
        free(c->keys);
        free(c->val);
        c->keys = calloc(ns, sizeof *c->keys);
        c->val = malloc(sizeof *c->val * ns);
        if (!c->keys || !c->val) return -1;
        c->mask = ns - 1;
    } else {
        memset(c->keys, 0, sizeof *c->keys * ns);
    }
    c->n = 0;
    return 0;
}

static void counts_add(counts *c, int32_t a, int32_t b, int64_t v)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    size_t i = (size_t)((key * 0x9E3779B97F4A7C15ull) >> 20) & c->mask;
    while (c->keys[i] && c->keys[i] != key) i = (i + 1) & c->mask;
    if (!c->keys[i]) {
        c->keys[i] = key;
        c->val[i] = 0;
        c->n++;
    }
    c->val[i] += v;
}

static int read_file(const char *path, char **data, size_t *len, slm_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) return slm_error_set(err, SLM_EIO, "%s: cannot open for training", path), -1;
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        char *nb = realloc(b, cap * 2);
        if (!nb) { free(b); b = NULL; break; }
        b = nb;
        cap *= 2;
    }
    fclose(f);
    if (!b) return slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path), -1;
    *data = b;
    *len = n;
    return 0;
}

static char *concat(const char *a, size_t la, const char *b, size_t lb)
{
    char *s = malloc(la + lb + 1);
    if (!s) return NULL;
    memcpy(s, a, la);
    memcpy(s + la, b, lb);
    s[la + lb] = 0;
    return s;
}

static slm_status write_json(const slm_tok_train_opts *o, const char *regex, char **text,
                             int32_t ntok, const int32_t (*merges)[2], int32_t nmerges,
                             slm_error *err)
{
    json_t *root = json_object(), *vocab = json_object(), *jm = json_array(),
           *added = json_array();
    if (!root || !vocab || !jm || !added) goto oom;
    for (int32_t i = 0; i < ntok; i++) {
        if (i >= ntok - o->nspecials) {
            json_t *a = json_pack("{s:i, s:s, s:b, s:b, s:b, s:b, s:b}", "id", (json_int_t)i,
                                  "content", text[i], "single_word", 0, "lstrip", 0, "rstrip", 0,
                                  "normalized", 0, "special", 1);
            if (!a || json_array_append_new(added, a)) goto oom;
        }
        if (json_object_set_new(vocab, text[i], json_integer(i))) goto oom;
    }
    for (int32_t m = 0; m < nmerges; m++) {
        json_t *pair = json_pack("[s, s]", text[merges[m][0]], text[merges[m][1]]);
        if (!pair || json_array_append_new(jm, pair)) goto oom;
    }
    json_t *model = json_pack("{s:s, s:n, s:n, s:n, s:n, s:b, s:b, s:b, s:o, s:o}", "type", "BPE",
                              "dropout", "unk_token", "continuing_subword_prefix",
                              "end_of_word_suffix", "fuse_unk", 0, "byte_fallback", 0,
                              "ignore_merges", 0, "vocab", vocab, "merges", jm);
    vocab = jm = NULL;
    json_t *pre = json_pack(
        "{s:s, s:[{s:s, s:{s:s}, s:s, s:b}, {s:s, s:b, s:b, s:b}]}", "type", "Sequence",
        "pretokenizers", "type", "Split", "pattern", "Regex", regex, "behavior", "Isolated",
        "invert", 0, "type", "ByteLevel", "add_prefix_space", 0, "trim_offsets", 0, "use_regex", 0);
    json_t *dec = json_pack("{s:s, s:b, s:b, s:b}", "type", "ByteLevel", "add_prefix_space", 0,
                            "trim_offsets", 0, "use_regex", 0);
    if (!model || !pre || !dec) {
        json_decref(model);
        json_decref(pre);
        json_decref(dec);
        goto oom;
    }
    json_object_set_new(root, "version", json_string("1.0"));
    json_object_set_new(root, "added_tokens", added);
    added = NULL;
    json_object_set_new(root, "normalizer", json_null());
    json_object_set_new(root, "pre_tokenizer", pre);
    json_object_set_new(root, "post_processor", json_null());
    json_object_set_new(root, "decoder", dec);
    json_object_set_new(root, "model", model);
    if (json_dump_file(root, o->json_path, JSON_INDENT(1) | JSON_PRESERVE_ORDER)) {
        json_decref(root);
        return slm_error_set(err, SLM_EIO, "%s: cannot write", o->json_path);
    }
    json_decref(root);
    return SLM_OK;
oom:
    json_decref(root);
    json_decref(vocab);
    json_decref(jm);
    json_decref(added);
    return slm_error_set(err, SLM_ENOMEM, "tokenizer training: out of memory");
}

static slm_status write_gguf(const slm_tok_train_opts *o, char **text, int32_t ntok,
                             const int32_t (*merges)[2], int32_t nmerges, slm_error *err)
{
    slm_status st = SLM_ENOMEM;
    size_t *lens = malloc(sizeof *lens * (size_t)(ntok + nmerges + 1));
    int32_t *types = malloc(sizeof *types * (size_t)(ntok + 1));
    char **ms = calloc((size_t)nmerges + 1, sizeof *ms);
    slm_gguf_writer *w = slm_gguf_writer_new(err);
    if (!lens || !types || !ms || !w) goto done;
    for (int32_t i = 0; i < ntok; i++) {
        lens[i] = strlen(text[i]);
        types[i] = i >= ntok - o->nspecials ? 3 : 1;
    }
    for (int32_t m = 0; m < nmerges; m++) {
        const char *a = text[merges[m][0]], *b = text[merges[m][1]];
        size_t la = strlen(a);
        ms[m] = malloc(la + strlen(b) + 2);
        if (!ms[m]) goto done;
        memcpy(ms[m], a, la);
        ms[m][la] = ' ';
        strcpy(ms[m] + la + 1, b);
        lens[ntok + m] = strlen(ms[m]);
    }
    const char *arch = "gpt2";
    if ((st = slm_gguf_writer_set_str(w, "general.architecture", arch, strlen(arch), err)) ||
        (st = slm_gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2", 4, err)) ||
        (st = slm_gguf_writer_set_str(w, "tokenizer.ggml.pre", o->pre, strlen(o->pre), err)) ||
        (st = slm_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)text,
                                          lens, (uint64_t)ntok, err)) ||
        (st = slm_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", SLM_GGUF_INT32, types,
                                      (uint64_t)ntok, err)) ||
        (st = slm_gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", (const char *const *)ms,
                                          lens + ntok, (uint64_t)nmerges, err)))
        goto done;
    if (o->nspecials) {
        uint32_t eos = (uint32_t)(ntok - o->nspecials);
        if ((st = slm_gguf_writer_set(w, "tokenizer.ggml.eos_token_id", SLM_GGUF_UINT32, &eos, err)) ||
            (st = slm_gguf_writer_set(w, "tokenizer.ggml.bos_token_id", SLM_GGUF_UINT32, &eos, err)))
            goto done;
    }
    st = slm_gguf_writer_write(w, o->gguf_path, err);
done:
    if (st == SLM_ENOMEM && err && err->code != SLM_ENOMEM)
        slm_error_set(err, SLM_ENOMEM, "tokenizer training: out of memory");
    for (int32_t m = 0; ms && m < nmerges; m++) free(ms[m]);
    free(ms);
    free(lens);
    free(types);
    slm_gguf_writer_free(w);
    return st;
}

slm_status slm_tok_train(const slm_tok_train_opts *o, slm_error *err)
{
    if (!o->pre) return slm_error_set(err, SLM_EINVAL, "train: no pre-tokenizer name");
    const char *regex = slm_pretok_regex(o->pre);
    if (!regex)
        return slm_error_set(err, SLM_EINVAL,
                             "train: pre-tokenizer '%s' not usable (gpt-2, llama-bpe, qwen2)",
                             o->pre);
    if (o->vocab_size < 256 + o->nspecials || o->vocab_size > (1 << 24))
        return slm_error_set(err, SLM_EINVAL, "train: vocab_size %d must be 256 + specials (%d) .. 2^24",
                             o->vocab_size, o->nspecials);
    if (!o->json_path && !o->gguf_path)
        return slm_error_set(err, SLM_EINVAL, "train: nowhere to save (json or gguf path)");
    slm_status st = SLM_OK;
    slm_steps steps = {0};
    slm_tok_work w = {0};
    slm_strtab words = {0};
    int64_t *wcount = NULL;
    size_t capw = 0;
    word *ws = NULL;
    counts pc = {0};
    char **text = NULL;
    int32_t (*merges)[2] = NULL;
    int32_t ntok = 0, nmerges = 0, nw = 0;
    if ((st = slm_steps_add_regex(&steps, regex, SLM_SPLIT_ISOLATED, 0, err))) goto done;
    /* 1. count pre-tokens */
    for (int f = 0; f < o->nfiles; f++) {
        char *data;
        size_t len;
        if (read_file(o->files[f], &data, &len, err)) { st = err ? err->code : SLM_EIO; goto done; }
        st = slm_pretokenize(&steps, &w, (slm_span){data, len}, 1, err);
        for (size_t i = 0; !st && i < w.na; i++) {
            int added;
            int32_t id = slm_strtab_add(&words, w.a[i].p, w.a[i].n, &added);
            if (id < 0) { st = SLM_ENOMEM; break; }
            if ((size_t)id >= capw) {
                size_t nc = capw ? capw * 2 : 4096;
                int64_t *v = realloc(wcount, sizeof *v * nc);
                if (!v) { st = SLM_ENOMEM; break; }
                wcount = v;
                capw = nc;
            }
            if (added) wcount[id] = 0;
            wcount[id]++;
        }
        free(data);
        slm_tok_work_free(&w);
        if (st) goto done;
    }
    nw = words.n;
    /* 2. words as byte symbols; tokens 0..255 are the bytes */
    ws = calloc((size_t)(nw ? nw : 1), sizeof *ws);
    text = calloc((size_t)o->vocab_size, sizeof *text);
    merges = malloc(sizeof *merges * (size_t)o->vocab_size);
    if (!ws || !text || !merges) { st = SLM_ENOMEM; goto done; }
    for (int32_t i = 0; i < nw; i++) {
        size_t n;
        const char *s = slm_strtab_str(&words, i, &n);
        ws[i].sym = malloc(sizeof *ws[i].sym * (n ? n : 1));
        if (!ws[i].sym) { st = SLM_ENOMEM; goto done; }
        for (size_t j = 0; j < n; j++) ws[i].sym[j] = (uint8_t)s[j];
        ws[i].n = (int32_t)n;
        ws[i].count = wcount[i];
    }
    for (int b = 0; b < 256; b++) {
        char c[3] = {0};
        slm_bytelevel_char((uint8_t)b, c);
        if (!(text[ntok++] = concat(c, strlen(c), "", 0))) { st = SLM_ENOMEM; goto done; }
    }
    /* 3. merges */
    while (ntok < o->vocab_size - o->nspecials) {
        size_t total = 0;
        for (int32_t i = 0; i < nw; i++) total += (size_t)ws[i].n;
        if (counts_reset(&pc, total + 1)) { st = SLM_ENOMEM; goto done; }
        for (int32_t i = 0; i < nw; i++)
            for (int32_t j = 0; j + 1 < ws[i].n; j++)
                counts_add(&pc, ws[i].sym[j], ws[i].sym[j + 1], ws[i].count);
        uint64_t best = 0;
        int64_t bestc = 0;
        for (size_t k = 0; k <= pc.mask; k++) {
            if (!pc.keys[k]) continue;
            if (pc.val[k] > bestc || (pc.val[k] == bestc && pc.keys[k] < best)) {
                bestc = pc.val[k];
                best = pc.keys[k];
            }
        }
        if (!best || bestc < (o->min_frequency > 0 ? o->min_frequency : 2)) break;
        int32_t a = (int32_t)((best - 1) >> 32), b = (int32_t)((best - 1) & 0xffffffffu);
        int32_t id = ntok;
        if (!(text[ntok] = concat(text[a], strlen(text[a]), text[b], strlen(text[b])))) {
            st = SLM_ENOMEM;
            goto done;
        }
        ntok++;
        merges[nmerges][0] = a;
        merges[nmerges][1] = b;
        nmerges++;
        for (int32_t i = 0; i < nw; i++) {
            int32_t k = 0;
            for (int32_t j = 0; j < ws[i].n; j++) {
                if (j + 1 < ws[i].n && ws[i].sym[j] == a && ws[i].sym[j + 1] == b) {
                    ws[i].sym[k++] = id;
                    j++;
                } else {
                    ws[i].sym[k++] = ws[i].sym[j];
                }
            }
            ws[i].n = k;
        }
    }
    /* 4. specials, then save */
    for (int s = 0; s < o->nspecials; s++)
        if (!(text[ntok++] = concat(o->specials[s], strlen(o->specials[s]), "", 0))) {
            st = SLM_ENOMEM;
            goto done;
        }
    if (o->json_path &&
        (st = write_json(o, regex, text, ntok, (const int32_t(*)[2])merges, nmerges, err)))
        goto done;
    if (o->gguf_path &&
        (st = write_gguf(o, text, ntok, (const int32_t(*)[2])merges, nmerges, err)))
        goto done;
done:
    if (st == SLM_ENOMEM && err && err->code != SLM_ENOMEM)
        slm_error_set(err, SLM_ENOMEM, "tokenizer training: out of memory");
    for (int32_t i = 0; ws && i < nw; i++) free(ws[i].sym);
    free(ws);
    for (int32_t i = 0; text && i < ntok; i++) free(text[i]);
    free(text);
    free(merges);
    free(wcount);
    free(pc.keys);
    free(pc.val);
    slm_strtab_free(&words);
    slm_steps_free(&steps);
    slm_tok_work_free(&w);
    return st;
}
