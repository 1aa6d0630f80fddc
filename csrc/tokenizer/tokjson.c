/* Hugging Face tokenizer.json (parsed with jansson), model type "BPE":
 *   model:         vocab {piece: id}, merges ["a b"] or [["a","b"]],
 *                  byte_fallback, fuse_unk, unk_token, ignore_merges
 *   added_tokens:  [{id, content, special, lstrip, rstrip, ...}] — special
 *                  ones become control tokens (split out with parse_special),
 *                  the others user-defined (always split out)
 *   normalizer:    Sequence | NFC | NFD | NFKC | NFKD | Lowercase | Prepend |
 *                  Replace (literal pattern) | Strip
 *   pre_tokenizer: Sequence | Split (Regex or String, behavior, invert) |
 *                  ByteLevel | Digits | Metaspace | Whitespace | WhitespaceSplit
 *   decoder:       ByteLevel, or Replace("▁", " ") / Metaspace / Strip(start 1)
 * A tokenizer_config.json beside it gives bos/eos and add_bos/add_eos.
 * Anything else is reported as unsupported rather than silently ignored. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

#define RE_BYTELEVEL "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int jbool(json_t *o, const char *k, int def)
{
    json_t *v = json_object_get(o, k);
    return json_is_boolean(v) ? json_is_true(v) : def;
}

static slm_status unsupported(slm_error *err, const char *path, const char *what,
                              const char *type)
{
    return slm_error_set(err, SLM_EUNSUPPORTED, "%s: %s type '%s' not supported", path, what,
                         type ? type : "?");
}

static char *dup_str(const char *s, size_t *n)
{
    *n = strlen(s);
    char *d = malloc(*n + 1);
    if (d) memcpy(d, s, *n + 1);
    return d;
}

static slm_status add_normalizer(slm_tok *t, json_t *n, const char *path, slm_error *err)
{
    if (!n || json_is_null(n)) return SLM_OK;
    const char *type = jstr(n, "type");
    if (!type) return unsupported(err, path, "normalizer", NULL);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(n, "normalizers");
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            slm_status st = add_normalizer(t, v, path, err);
            if (st) return st;
        }
        return SLM_OK;
    }
    static const struct { const char *name; slm_step_kind kind; } simple[] = {
        {"NFC", SLM_STEP_NFC}, {"NFD", SLM_STEP_NFD}, {"NFKC", SLM_STEP_NFKC},
        {"NFKD", SLM_STEP_NFKD}, {"Lowercase", SLM_STEP_LOWER}};
    for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++)
        if (!strcmp(type, simple[i].name))
            return slm_steps_push(&t->norm, simple[i].kind, err) ? SLM_OK : SLM_ENOMEM;
    if (!strcmp(type, "Prepend")) {
        const char *s = jstr(n, "prepend");
        if (!s) return slm_error_set(err, SLM_EFORMAT, "%s: Prepend without text", path);
        slm_step *st = slm_steps_push(&t->norm, SLM_STEP_PREPEND, err);
        if (!st) return SLM_ENOMEM;
        if (!(st->s1 = dup_str(s, &st->n1))) goto oom;
        return SLM_OK;
    }
    if (!strcmp(type, "Replace")) {
        const char *pat = jstr(json_object_get(n, "pattern"), "String");
        const char *content = jstr(n, "content");
        if (!pat || !content) return unsupported(err, path, "normalizer", "Replace(Regex)");
        slm_step *st = slm_steps_push(&t->norm, SLM_STEP_REPLACE, err);
        if (!st) return SLM_ENOMEM;
        if (!(st->s1 = dup_str(pat, &st->n1)) || !(st->s2 = dup_str(content, &st->n2))) goto oom;
        return SLM_OK;
    }
    if (!strcmp(type, "Strip")) {
        slm_step *st = slm_steps_push(&t->norm, SLM_STEP_STRIP, err);
        if (!st) return SLM_ENOMEM;
        st->left = jbool(n, "strip_left", 1);
        st->right = jbool(n, "strip_right", 1);
        return SLM_OK;
    }
    return unsupported(err, path, "normalizer", type);
oom:
    return slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
}

/* A literal split pattern as a PCRE2 regex. */
static slm_status add_literal(slm_tok *t, const char *lit, slm_split_behavior b, int invert,
                              slm_error *err)
{
    size_t n = strlen(lit);
    char *re = malloc(2 * n + 8);
    if (!re) return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (strchr("\\^$.|?*+()[]{}", lit[i])) re[k++] = '\\';
        re[k++] = lit[i];
    }
    re[k] = 0;
    slm_status st = slm_steps_add_regex(&t->pre_steps, re, b, invert, err);
    free(re);
    return st;
}

static slm_status add_pretok(slm_tok *t, json_t *p, const char *path, slm_error *err)
{
    if (!p || json_is_null(p)) return SLM_OK;
    const char *type = jstr(p, "type");
    if (!type) return unsupported(err, path, "pre_tokenizer", NULL);
    if (!strcmp(type, "Sequence")) {
        json_t *arr = json_object_get(p, "pretokenizers");
        size_t i;
        json_t *v;
        json_array_foreach(arr, i, v) {
            slm_status st = add_pretok(t, v, path, err);
            if (st) return st;
        }
        return SLM_OK;
    }
    if (!strcmp(type, "Split")) {
        static const char *const names[] = {"Isolated", "Removed", "MergedWithPrevious",
                                            "MergedWithNext", "Contiguous"};
        const char *bs = jstr(p, "behavior");
        int b = -1;
        for (int i = 0; i < 5 && bs; i++)
            if (!strcmp(bs, names[i])) b = i;
        if (b < 0) return unsupported(err, path, "Split behavior", bs);
        json_t *pat = json_object_get(p, "pattern");
        int invert = jbool(p, "invert", 0);
        if (jstr(pat, "Regex"))
            return slm_steps_add_regex(&t->pre_steps, jstr(pat, "Regex"), (slm_split_behavior)b,
                                       invert, err);
        if (jstr(pat, "String"))
            return add_literal(t, jstr(pat, "String"), (slm_split_behavior)b, invert, err);
        return slm_error_set(err, SLM_EFORMAT, "%s: Split without a pattern", path);
    }
    if (!strcmp(type, "ByteLevel")) {
        t->byte_level = 1;
        if (jbool(p, "add_prefix_space", 0) &&
            !slm_steps_push(&t->pre_steps, SLM_STEP_PREFIX_SPACE, err))
            return SLM_ENOMEM;
        if (jbool(p, "use_regex", 1))
            return slm_steps_add_regex(&t->pre_steps, RE_BYTELEVEL, SLM_SPLIT_ISOLATED, 0, err);
        return SLM_OK;
    }
    if (!strcmp(type, "Digits"))
        return slm_steps_add_regex(&t->pre_steps, jbool(p, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+",
                                   SLM_SPLIT_ISOLATED, 0, err);
    if (!strcmp(type, "Whitespace"))
        return slm_steps_add_regex(&t->pre_steps, "\\w+|[^\\w\\s]+", SLM_SPLIT_REMOVED, 1, err);
    if (!strcmp(type, "WhitespaceSplit"))
        return slm_steps_add_regex(&t->pre_steps, "\\s+", SLM_SPLIT_REMOVED, 0, err);
    if (!strcmp(type, "Metaspace")) {
        const char *rep = jstr(p, "replacement");
        if (rep && strcmp(rep, "\xe2\x96\x81"))
            return unsupported(err, path, "Metaspace replacement", rep);
        slm_step *st = slm_steps_push(&t->pre_steps, SLM_STEP_METASPACE, err);
        if (!st) return SLM_ENOMEM;
        const char *scheme = jstr(p, "prepend_scheme");
        if (scheme) st->prepend_scheme = !strcmp(scheme, "first") ? 1 : !strcmp(scheme, "never") ? 2 : 0;
        else st->prepend_scheme = jbool(p, "add_prefix_space", 1) ? 0 : 2;
        st->split = jbool(p, "split", 1);
        t->decode_meta = 1;
        if (st->prepend_scheme != 2) t->decode_strip_lead = 1;
        return SLM_OK;
    }
    return unsupported(err, path, "pre_tokenizer", type);
}

static void read_decoder(slm_tok *t, json_t *d)
{
    const char *type = jstr(d, "type");
    if (!type) return;
    if (!strcmp(type, "Sequence")) {
        size_t i;
        json_t *v;
        json_array_foreach(json_object_get(d, "decoders"), i, v) read_decoder(t, v);
    } else if (!strcmp(type, "ByteLevel")) {
        t->byte_level = 1;
    } else if (!strcmp(type, "Replace") || !strcmp(type, "Metaspace")) {
        t->decode_meta = 1;
        if (!strcmp(type, "Metaspace")) t->decode_strip_lead = 1;
    } else if (!strcmp(type, "Strip")) {
        json_t *start = json_object_get(d, "start");
        if (json_is_integer(start) && json_integer_value(start) > 0) t->decode_strip_lead = 1;
    }
}

/* bos/eos names from tokenizer_config.json next to the file, if any. */
static void read_config(slm_tok *t, const char *path)
{
    const char *slash = strrchr(path, '/');
    size_t dl = slash ? (size_t)(slash - path + 1) : 0;
    char cfg[4096];
    if (dl + 32 > sizeof cfg) return;
    memcpy(cfg, path, dl);
    strcpy(cfg + dl, "tokenizer_config.json");
    json_t *c = json_load_file(cfg, 0, NULL);
    if (!c) return;
    static const struct { const char *key; slm_tok_special which; } ks[] = {
        {"bos_token", SLM_TOK_BOS}, {"eos_token", SLM_TOK_EOS},
        {"unk_token", SLM_TOK_UNK}, {"pad_token", SLM_TOK_PAD}};
    for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
        json_t *v = json_object_get(c, ks[i].key);
        const char *s = json_is_string(v) ? json_string_value(v) : jstr(v, "content");
        if (s) {
            int32_t id = slm_tok_find(t, s, strlen(s));
            if (id >= 0) t->special[ks[i].which] = id;
        }
    }
    t->add_bos = jbool(c, "add_bos_token", t->add_bos);
    t->add_eos = jbool(c, "add_eos_token", t->add_eos);
    json_decref(c);
}

/* add_bos / add_eos from a TemplateProcessing post-processor. */
static void read_post(slm_tok *t, json_t *pp)
{
    const char *type = jstr(pp, "type");
    if (!type || strcmp(type, "TemplateProcessing")) return;
    json_t *single = json_object_get(pp, "single");
    size_t n = json_array_size(single);
    for (size_t i = 0; i < n; i++) {
        json_t *sp = json_object_get(json_array_get(single, i), "SpecialToken");
        const char *id = jstr(sp, "id");
        if (!id) continue;
        int32_t tid = slm_tok_find(t, id, strlen(id));
        if (tid < 0) continue;
        if (i == 0) {
            t->add_bos = 1;
            t->special[SLM_TOK_BOS] = tid;
        } else if (i == n - 1) {
            t->add_eos = 1;
            t->special[SLM_TOK_EOS] = tid;
        }
    }
}

static slm_tok *from_json(json_t *root, const char *path, slm_error *err)
{
    json_t *model = json_object_get(root, "model");
    const char *mtype = jstr(model, "type");
    json_t *vocab = json_object_get(model, "vocab");
    if (!mtype && json_is_object(vocab) && json_object_get(model, "merges")) mtype = "BPE";
    if (!mtype || strcmp(mtype, "BPE")) {
        unsupported(err, path, "model", mtype);
        return NULL;
    }
    if (!json_is_object(vocab)) {
        slm_error_set(err, SLM_EFORMAT, "%s: model.vocab is not an object", path);
        return NULL;
    }
    json_t *added = json_object_get(root, "added_tokens");
    /* ids: the vocabulary's and the added tokens'. Every id is below the
     * number of entries the file names, so what is allocated by id follows
     * the file's size, not a claim in it (one entry {"a": 2000000000}
     * would otherwise size the tables at 2^31 tokens); the few ids an added
     * token shares with the vocabulary leave gaps, given placeholders. */
    size_t named = json_object_size(vocab) + json_array_size(added);
    const char *k;
    json_t *v;
    json_object_foreach(vocab, k, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || (size_t)json_integer_value(v) >= named ||
            json_integer_value(v) > INT32_MAX - 1) {
            slm_error_set(err, SLM_EFORMAT, "%s: model.vocab: the id of '%.40s' is not an integer in 0..%zu "
                          "(the file names %zu tokens)", path, k, named - 1, named);
            return NULL;
        }
    }
    size_t i;
    json_array_foreach(added, i, v) {
        json_t *id = json_object_get(v, "id");
        if (!json_is_integer(id) || json_integer_value(id) < 0 || (size_t)json_integer_value(id) >= named ||
            json_integer_value(id) > INT32_MAX - 1 || !jstr(v, "content")) {
            slm_error_set(err, SLM_EFORMAT, "%s: added_tokens[%zu]: needs content and an id in 0..%zu (the "
                          "file names %zu tokens)", path, i, named - 1, named);
            return NULL;
        }
    }
    int32_t n = 0;
    json_object_foreach(vocab, k, v)
        if (json_integer_value(v) >= n) n = (int32_t)json_integer_value(v) + 1;
    json_array_foreach(added, i, v)
        if (json_integer_value(json_object_get(v, "id")) >= n)
            n = (int32_t)json_integer_value(json_object_get(v, "id")) + 1;
    const char **text = calloc((size_t)(n > 0 ? n : 1), sizeof *text);
    int *attr = calloc((size_t)(n > 0 ? n : 1), sizeof *attr);
    unsigned char *added_at = calloc((size_t)(n > 0 ? n : 1), 1);   /* id given by added_tokens */
    slm_tok *t = NULL;
    if (!text || !attr || !added_at) {
        slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    /* one piece per id within each list; an added token may restate (or
     * override, as Hugging Face's added vocabulary does) a vocabulary id */
    json_object_foreach(vocab, k, v) {
        json_int_t id = json_integer_value(v);
        if (text[id]) {
            slm_error_set(err, SLM_EFORMAT, "%s: model.vocab: id %lld is given to both '%.40s' and '%.40s'",
                          path, (long long)id, text[id], k);
            goto fail;
        }
        text[id] = k;
        attr[id] = SLM_TOKATTR_NORMAL;
    }
    json_array_foreach(added, i, v) {
        int32_t id = (int32_t)json_integer_value(json_object_get(v, "id"));
        if (added_at[id]) {
            slm_error_set(err, SLM_EFORMAT, "%s: added_tokens: id %d is given to both '%.40s' and '%.40s'",
                          path, (int)id, text[id], jstr(v, "content"));
            goto fail;
        }
        added_at[id] = 1;
        text[id] = jstr(v, "content");
        int a = jbool(v, "special", 0) ? SLM_TOKATTR_CONTROL : SLM_TOKATTR_USER;
        if (jbool(v, "lstrip", 0)) a |= SLM_TOKATTR_LSTRIP;
        if (jbool(v, "rstrip", 0)) a |= SLM_TOKATTR_RSTRIP;
        attr[id] = a;
    }
    if (!(t = slm_tok_alloc(SLM_TOK_BPE, n, err))) goto fail;
    snprintf(t->model, sizeof t->model, "json-bpe");
    t->byte_fallback = jbool(model, "byte_fallback", 0);
    t->fuse_unk = jbool(model, "fuse_unk", 0);
    t->ignore_merges = jbool(model, "ignore_merges", 0);
    for (int32_t id = 0; id < n; id++) {
        char ph[32];
        const char *s = text[id];
        if (!s) snprintf(ph, sizeof ph, "[UNUSED_%d]", (int)id);
        int a = attr[id];
        if (s && t->byte_fallback && strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>')
            a = SLM_TOKATTR_BYTE;
        if (slm_tok_add_token(t, id, s ? s : ph, strlen(s ? s : ph), 0, s ? a : SLM_TOKATTR_UNUSED, err))
            goto fail;
    }
    /* merges: rank = position */
    json_t *merges = json_object_get(model, "merges");
    json_array_foreach(merges, i, v) {
        const char *a, *b;
        size_t la, lb;
        if (json_is_string(v)) {
            const char *s = json_string_value(v);
            size_t len = json_string_length(v);
            const char *sp = len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
            if (!sp) {
                slm_error_set(err, SLM_EFORMAT, "%s: merge %zu has no space", path, i);
                goto fail;
            }
            a = s; la = (size_t)(sp - s); b = sp + 1; lb = len - la - 1;
        } else if (json_is_array(v) && json_array_size(v) == 2 &&
                   json_is_string(json_array_get(v, 0)) && json_is_string(json_array_get(v, 1))) {
            a = json_string_value(json_array_get(v, 0));
            la = json_string_length(json_array_get(v, 0));
            b = json_string_value(json_array_get(v, 1));
            lb = json_string_length(json_array_get(v, 1));
        } else {
            slm_error_set(err, SLM_EFORMAT, "%s: merge %zu is neither \"a b\" nor [a, b]", path, i);
            goto fail;
        }
        char *buf = malloc(la + lb + 1);
        if (!buf) goto oom;
        memcpy(buf, a, la);
        memcpy(buf + la, b, lb);
        /* as Hugging Face's BPE builder (MergeTokenOutOfVocabulary): both
         * sides and their merge are tokens of the vocabulary */
        const char *missing = slm_tok_find(t, a, la) < 0 ? a : slm_tok_find(t, b, lb) < 0 ? b
                            : slm_tok_find(t, buf, la + lb) < 0 ? buf : NULL;
        if (missing) {
            size_t lm = missing == a ? la : missing == b ? lb : la + lb;
            slm_error_set(err, SLM_EFORMAT, "%s: model.merges[%zu] ('%.*s' '%.*s'): '%.*s' is not in the "
                          "vocabulary", path, i, (int)(la > 40 ? 40 : la), a, (int)(lb > 40 ? 40 : lb), b,
                          (int)(lm > 80 ? 80 : lm), missing);
            free(buf);
            goto fail;
        }
        int32_t ia = slm_strtab_add(&t->str, a, la, NULL);
        int32_t ib = ia >= 0 ? slm_strtab_add(&t->str, b, lb, NULL) : -1;
        int32_t im = ib >= 0 ? slm_strtab_add(&t->str, buf, la + lb, NULL) : -1;
        free(buf);
        if (im < 0 || slm_pairmap_put(&t->merges, ia, ib, (int32_t)i, im)) goto oom;
    }
    if (add_normalizer(t, json_object_get(root, "normalizer"), path, err)) goto fail;
    if (add_pretok(t, json_object_get(root, "pre_tokenizer"), path, err)) goto fail;
    read_decoder(t, json_object_get(root, "decoder"));
    /* a SentencePiece-style vocabulary whose normalizer prepends "▁" */
    for (int s = 0; s < t->norm.n; s++)
        if (t->norm.v[s].kind == SLM_STEP_PREPEND) t->decode_strip_lead = 1;
    const char *unk = jstr(model, "unk_token");
    if (unk) t->special[SLM_TOK_UNK] = slm_tok_find(t, unk, strlen(unk));
    read_post(t, json_object_get(root, "post_processor"));
    read_config(t, path);
    free(text);
    free(attr);
    free(added_at);
    if (slm_tok_finish(t, err)) {
        slm_tok_error_path(err, path);
        slm_tok_free(t);
        return NULL;
    }
    return t;
oom:
    slm_error_set(err, SLM_ENOMEM, "%s: out of memory", path);
fail:
    slm_tok_error_path(err, path);
    free(text);
    free(attr);
    free(added_at);
    slm_tok_free(t);
    return NULL;
}

slm_tok *slm_tok_load_json(const char *path, slm_error *err)
{
    json_error_t je;
    json_t *root = json_load_file(path, JSON_ALLOW_NUL, &je);
    if (!root) {
        slm_error_set(err, SLM_EFORMAT, "%s: invalid JSON at line %d: %s", path, je.line, je.text);
        return NULL;
    }
    slm_tok *t = NULL;
    if (!json_is_object(root))
        slm_error_set(err, SLM_EFORMAT, "%s: not a tokenizer.json (top level is not an object)", path);
    else
        t = from_json(root, path, err);
    json_decref(root);
    return t;
}
