/* SentencePiece tokenizer.model files: a serialized ModelProto (protobuf,
 * sentencepiece_model.proto), read here field by field without a protobuf
 * library. The parts slm uses:
 *
 *   ModelProto      1 pieces (repeated SentencePiece), 2 trainer_spec,
 *                   3 normalizer_spec
 *   SentencePiece   1 piece (string), 2 score (float), 3 type (enum: 1
 *                   NORMAL, 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED,
 *                   6 BYTE; default NORMAL)
 *   TrainerSpec     3 model_type (1 UNIGRAM (default), 2 BPE, 3 WORD, 4 CHAR),
 *                   24 treat_whitespace_as_suffix, 35 byte_fallback,
 *                   40 unk_id (0), 41 bos_id (1), 42 eos_id (2), 43 pad_id
 *                   (-1); -1 disables an id
 *   NormalizerSpec  1 name, 2 precompiled_charsmap (bytes), 3
 *                   add_dummy_prefix (true), 4 remove_extra_whitespaces
 *                   (true), 5 escape_whitespaces (true)
 *
 * Wire format: each field is a varint key (field << 3 | wire type) then a
 * varint (type 0), 8 bytes (1), a varint length and that many bytes (2) or
 * 4 bytes (5). Every varint is at most 10 bytes and every length is checked
 * against what is left of its message before it is used; unknown fields are
 * skipped, groups (types 3, 4) refused. Nothing is sized from a count in the
 * file: the pieces are counted by walking the message first.
 *
 * The SentencePiece tokenizer here is the BPE one (llama.cpp's): a model of
 * another type, or with options it does not implement (a precompiled
 * normalization map, removing extra whitespace, whitespace as a suffix, no
 * byte fallback), is refused by name rather than tokenized differently. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../core/storage.h"
#include "tok_internal.h"

/* A cursor over one message: [p, end). */
typedef struct pb {
    const unsigned char *p, *end;
} pb;

/* One field: its number, wire type and value (varint / fixed, or the bytes
 * of a length-delimited one). */
typedef struct pb_field {
    uint32_t num, wire;
    uint64_t v;
    const unsigned char *data;
    size_t len;
} pb_field;

static int pb_varint(pb *c, uint64_t *v)
{
    uint64_t r = 0;
    for (int i = 0; i < 10; i++) {
        if (c->p == c->end) return -1;
        unsigned char b = *c->p++;
        r |= (uint64_t)(b & 0x7f) << (7 * i);
        if (!(b & 0x80)) {
            *v = r;
            return 0;
        }
    }
    return -1;   /* more than 10 bytes: not a varint */
}

/* Next field of the message; 1 on a field, 0 at the end, -1 if malformed. */
static int pb_next(pb *c, pb_field *f)
{
    if (c->p == c->end) return 0;
    uint64_t key;
    if (pb_varint(c, &key) || key >> 3 == 0 || key >> 3 > UINT32_MAX) return -1;
    f->num = (uint32_t)(key >> 3);
    f->wire = (uint32_t)(key & 7);
    size_t left;
    switch (f->wire) {
    case 0:
        return pb_varint(c, &f->v) ? -1 : 1;
    case 1:
    case 5: {
        size_t n = f->wire == 1 ? 8 : 4;
        if ((size_t)(c->end - c->p) < n) return -1;
        f->v = 0;
        for (size_t i = 0; i < n; i++) f->v |= (uint64_t)c->p[i] << (8 * i);
        c->p += n;
        return 1;
    }
    case 2:
        if (pb_varint(c, &f->v)) return -1;
        left = (size_t)(c->end - c->p);
        if (f->v > left) return -1;
        f->data = c->p;
        f->len = (size_t)f->v;
        c->p += f->len;
        return 1;
    default:
        return -1;   /* groups (3, 4) and unknown wire types */
    }
}

/* The options of trainer_spec and normalizer_spec slm reads, with the
 * proto's defaults. */
typedef struct spm_spec {
    int64_t model_type, unk_id, bos_id, eos_id;
    int byte_fallback, ws_suffix;
    int add_dummy_prefix, remove_extra_ws, escape_ws;
    size_t charsmap_len;
    char norm_name[64];
} spm_spec;

static slm_status bad(slm_error *err, const char *path, const char *where)
{
    return slm_error_set(err, SLM_EFORMAT, "%s: not a SentencePiece model (malformed protobuf in %s)",
                         path, where);
}

static slm_status read_trainer(spm_spec *s, const unsigned char *d, size_t n, const char *path,
                               slm_error *err)
{
    pb c = {d, d + n};
    pb_field f;
    int r;
    while ((r = pb_next(&c, &f)) > 0) {
        if (f.wire != 0) continue;
        /* int32 fields are sign-extended 64-bit varints (-1 is 10 bytes) */
        int64_t v = (int64_t)f.v;
        switch (f.num) {
        case 3: s->model_type = v; break;
        case 24: s->ws_suffix = v != 0; break;
        case 35: s->byte_fallback = v != 0; break;
        case 40: s->unk_id = v; break;
        case 41: s->bos_id = v; break;
        case 42: s->eos_id = v; break;
        default: break;
        }
    }
    return r < 0 ? bad(err, path, "trainer_spec") : SLM_OK;
}

static slm_status read_normalizer(spm_spec *s, const unsigned char *d, size_t n, const char *path,
                                  slm_error *err)
{
    pb c = {d, d + n};
    pb_field f;
    int r;
    while ((r = pb_next(&c, &f)) > 0) {
        if (f.num == 1 && f.wire == 2)
            snprintf(s->norm_name, sizeof s->norm_name, "%.*s", (int)(f.len < 60 ? f.len : 60),
                     (const char *)f.data);
        else if (f.num == 2 && f.wire == 2) s->charsmap_len = f.len;
        else if (f.num == 3 && f.wire == 0) s->add_dummy_prefix = f.v != 0;
        else if (f.num == 4 && f.wire == 0) s->remove_extra_ws = f.v != 0;
        else if (f.num == 5 && f.wire == 0) s->escape_ws = f.v != 0;
    }
    return r < 0 ? bad(err, path, "normalizer_spec") : SLM_OK;
}

/* One SentencePiece message: the piece's bytes, score and type. */
static slm_status read_piece(const unsigned char *d, size_t n, const char **text, size_t *len,
                             float *score, int64_t *type, const char *path, int32_t id,
                             slm_error *err)
{
    pb c = {d, d + n};
    pb_field f;
    int r;
    *text = NULL;
    *len = 0;
    *score = 0;
    *type = 1;
    while ((r = pb_next(&c, &f)) > 0) {
        if (f.num == 1 && f.wire == 2) {
            *text = (const char *)f.data;
            *len = f.len;
        } else if (f.num == 2 && f.wire == 5) {
            uint32_t b = (uint32_t)f.v;
            memcpy(score, &b, 4);
        } else if (f.num == 3 && f.wire == 0) {
            *type = (int64_t)f.v;
        }
    }
    if (r < 0) return slm_error_set(err, SLM_EFORMAT, "%s: piece %d: malformed protobuf", path, (int)id);
    if (!*text || !*len) return slm_error_set(err, SLM_EFORMAT, "%s: piece %d is empty", path, (int)id);
    if (*type < 1 || *type > 6)
        return slm_error_set(err, SLM_EFORMAT, "%s: piece %d ('%.*s') has type %lld (1..6 are defined)",
                             path, (int)id, (int)(*len > 40 ? 40 : *len), *text, (long long)*type);
    return SLM_OK;
}

/* What slm's SentencePiece (BPE) tokenizer can compute; else the field. */
static slm_status check_spec(const spm_spec *s, const char *path, slm_error *err)
{
    static const char *const types[] = {"?", "UNIGRAM", "BPE", "WORD", "CHAR"};
    if (s->model_type != 2)
        return slm_error_set(err, SLM_EUNSUPPORTED, "%s: trainer_spec.model_type %s is not supported "
                             "(slm's SentencePiece tokenizer is BPE)", path,
                             s->model_type >= 1 && s->model_type <= 4 ? types[s->model_type] : "unknown");
    if (!s->byte_fallback)
        return slm_error_set(err, SLM_EUNSUPPORTED, "%s: trainer_spec.byte_fallback is false: slm's "
                             "SentencePiece tokenizer falls back to byte pieces", path);
    if (s->ws_suffix)
        return slm_error_set(err, SLM_EUNSUPPORTED, "%s: trainer_spec.treat_whitespace_as_suffix is not "
                             "supported", path);
    if (s->charsmap_len)
        return slm_error_set(err, SLM_EUNSUPPORTED, "%s: normalizer_spec '%s' has a precompiled character "
                             "map (a normalization slm does not apply)", path, s->norm_name);
    if (s->remove_extra_ws)
        return slm_error_set(err, SLM_EUNSUPPORTED, "%s: normalizer_spec.remove_extra_whitespaces is true: "
                             "slm's SentencePiece tokenizer keeps every space", path);
    return SLM_OK;
}

static slm_tok *from_model(const unsigned char *d, size_t n, const char *path, slm_error *err)
{
    spm_spec s = {.model_type = 1, .unk_id = 0, .bos_id = 1, .eos_id = 2,
                  .add_dummy_prefix = 1, .remove_extra_ws = 1, .escape_ws = 1};
    snprintf(s.norm_name, sizeof s.norm_name, "?");
    /* first pass: count the pieces, read the specs */
    pb c = {d, d + n};
    pb_field f;
    int r;
    int64_t count = 0;
    while ((r = pb_next(&c, &f)) > 0) {
        if (f.num == 1 && f.wire == 2) count++;
        else if (f.num == 2 && f.wire == 2 && read_trainer(&s, f.data, f.len, path, err)) return NULL;
        else if (f.num == 3 && f.wire == 2 && read_normalizer(&s, f.data, f.len, path, err)) return NULL;
    }
    if (r < 0) {
        bad(err, path, "the model");
        return NULL;
    }
    if (count == 0 || count > INT32_MAX) {
        slm_error_set(err, SLM_EFORMAT, "%s: not a SentencePiece model (%lld pieces)", path, (long long)count);
        return NULL;
    }
    if (check_spec(&s, path, err)) return NULL;
    const struct { const char *name; int64_t id; } ids[] = {
        {"unk_id", s.unk_id}, {"bos_id", s.bos_id}, {"eos_id", s.eos_id}};
    for (int i = 0; i < 3; i++)
        if (ids[i].id < -1 || ids[i].id >= count || (i == 0 && ids[i].id < 0)) {
            slm_error_set(err, SLM_EFORMAT, "%s: trainer_spec.%s is %lld (the model has pieces 0..%lld)",
                          path, ids[i].name, (long long)ids[i].id, (long long)count - 1);
            return NULL;
        }
    slm_tok *t = slm_tok_alloc(SLM_TOK_SPM, (int32_t)count, err);
    if (!t) return NULL;
    snprintf(t->model, sizeof t->model, "sentencepiece");
    /* second pass: the pieces, in order (the id is the position) */
    c = (pb){d, d + n};
    int32_t id = 0;
    static const int attr_of[7] = {0, SLM_TOKATTR_NORMAL, SLM_TOKATTR_UNKNOWN, SLM_TOKATTR_CONTROL,
                                   SLM_TOKATTR_USER, SLM_TOKATTR_UNUSED, SLM_TOKATTR_BYTE};
    while (pb_next(&c, &f) > 0) {
        if (f.num != 1 || f.wire != 2) continue;
        const char *text;
        size_t len;
        float score;
        int64_t type;
        if (read_piece(f.data, f.len, &text, &len, &score, &type, path, id, err) ||
            slm_tok_add_token(t, id, text, len, score, attr_of[type], err))
            goto fail;
        id++;
    }
    t->special[SLM_TOK_UNK] = (int32_t)s.unk_id;
    t->special[SLM_TOK_BOS] = (int32_t)s.bos_id;
    t->special[SLM_TOK_EOS] = (int32_t)s.eos_id;
    /* as llama.cpp for these vocabularies: BOS first when there is one */
    t->add_bos = s.bos_id >= 0;
    t->add_space_prefix = s.add_dummy_prefix;
    t->escape_ws = s.escape_ws;
    t->byte_fallback = 1;
    if (!slm_tok_finish(t, err)) return t;
fail:
    slm_tok_error_path(err, path);
    slm_tok_free(t);
    return NULL;
}

int slm_tok_is_spm_model(const unsigned char *head, size_t n)
{
    /* field 1 (pieces), length-delimited, a non-empty first piece whose
     * first field is its text (1, length-delimited): a llama2.c
     * tokenizer.bin starts with a small little-endian int32 instead */
    if (n < 3 || head[0] != 0x0a) return 0;
    size_t i = 1;
    while (i < n && (head[i] & 0x80)) i++;
    return head[1] != 0 && i + 1 < n && head[i + 1] == 0x0a;
}

slm_tok *slm_tok_load_spm_model(const char *path, slm_error *err)
{
    slm_storage *map = slm_storage_map_file(path, err);
    if (!map) return NULL;
    /* an empty file maps to no memory (data NULL): no cursor over it */
    slm_tok *t = map->size ? from_model(map->data, map->size, path, err) : NULL;
    if (!map->size) slm_error_set(err, SLM_EFORMAT, "%s: not a SentencePiece model (empty file)", path);
    slm_storage_unref(map);
    return t;
}
