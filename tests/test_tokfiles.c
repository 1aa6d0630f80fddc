/* Tokenizer file readers on hostile input: every count, id and length a
 * tokenizer.json claims is checked before anything is sized from it, and the
 * message names the file, the field and the problem. Every pre-tokenizer
 * regex set compiles. SentencePiece tokenizer.model files (protobuf) load,
 * and truncated or corrupted ones are refused with a message. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "tokenizer/tokenizer.h"

static char tmp[64];

static void spit(const void *b, size_t n)
{
    FILE *fp = fopen(tmp, "wb");
    if (!fp) return;
    fwrite(b, 1, n, fp);
    fclose(fp);
}

/* Loads `content` from a file; the message must be "PATH: " + want. */
static void expect_refused(const char *content, const char *want)
{
    spit(content, strlen(content));
    slm_error err = {0};
    slm_tok *t = slm_tok_load(tmp, &err);
    char full[600];
    snprintf(full, sizeof full, "%s: %s", tmp, want);
    CHECK(!t && !strcmp(err.msg, full), "want '%s', got '%s'", full, err.msg);
    slm_tok_free(t);
}

static void tokjson(void)
{
    /* an id far past the entries would size the tables at 2^31 tokens */
    expect_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":2000000000},\"merges\":[]}}",
                   "model.vocab: the id of 'b' is not an integer in 0..1 (the file names 2 tokens)");
    expect_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":\"1\"},\"merges\":[]}}",
                   "model.vocab: the id of 'b' is not an integer in 0..1 (the file names 2 tokens)");
    expect_refused("{\"added_tokens\":[{\"id\":5,\"content\":\"X\"}],"
                   "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                   "added_tokens[0]: needs content and an id in 0..1 (the file names 2 tokens)");
    expect_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":1,\"b\":1,\"c\":0},\"merges\":[]}}",
                   "model.vocab: id 1 is given to both 'a' and 'b'");
    expect_refused("{\"added_tokens\":[{\"id\":1,\"content\":\"X\"},{\"id\":1,\"content\":\"Y\"}],"
                   "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                   "added_tokens: id 1 is given to both 'X' and 'Y'");
    expect_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1},\"merges\":[\"a b\"]}}",
                   "model.merges[0] ('a' 'b'): 'ab' is not in the vocabulary");
    expect_refused("{\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"ab\":1},\"merges\":[[\"a\",\"b\"]]}}",
                   "model.merges[0] ('a' 'b'): 'b' is not in the vocabulary");
    /* the vocabulary code's own message gets the file's name */
    expect_refused("{\"added_tokens\":[{\"id\":1,\"content\":\"a\"}],"
                   "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0},\"merges\":[]}}",
                   "tokenizer: duplicate token 'a' (ids 0 and 1)");
    /* an added token restating a vocabulary id is fine (BERT's files do) */
    const char *ok = "{\"added_tokens\":[{\"id\":0,\"content\":\"a\",\"special\":true}],"
                     "\"model\":{\"type\":\"BPE\",\"vocab\":{\"a\":0,\"b\":1,\"ab\":2},\"merges\":[\"a b\"]}}";
    spit(ok, strlen(ok));
    slm_error err = {0};
    slm_tok *t = slm_tok_load(tmp, &err);
    CHECK(t && slm_tok_n_vocab(t) == 3, "restated id: %s", err.msg);
    slm_tok_free(t);
}

/* llama2.c tokenizer.bin: the vocabulary code's message names the file. */
static void llama2c_bin(void)
{
    static const char *const pieces[] = {"<unk>", "<s>", "</s>", "a", "a"};
    unsigned char b[256];
    size_t n = 0;
    int32_t max_len = 5;
    memcpy(b, &max_len, 4);
    n = 4;
    for (int i = 0; i < 5; i++) {
        float score = 0;
        int32_t len = (int32_t)strlen(pieces[i]);
        memcpy(b + n, &score, 4);
        memcpy(b + n + 4, &len, 4);
        memcpy(b + n + 8, pieces[i], (size_t)len);
        n += 8 + (size_t)len;
    }
    spit(b, n);
    slm_error err = {0};
    char want[256];
    snprintf(want, sizeof want, "%s: tokenizer: duplicate token 'a' (ids 3 and 4)", tmp);
    slm_tok *t = slm_tok_load(tmp, &err);
    CHECK(!t && !strcmp(err.msg, want), "llama2.c duplicate: %s", err.msg);
    slm_tok_free(t);
}

/* Every pre-tokenizer set compiles, under each of its names, and its
 * pieces cover the text. */
static void pretok_sets(void)
{
    static const char text[] = "Hello, w\xc3\xb6rld! 123 \xe4\xb8\xad\n";
    size_t offs[2 * sizeof text], count;
    int names = 0;
    const char *set;
    for (size_t i = 0; (set = slm_pretok_names(i)); i++)
        for (const char *p = set + 1, *bar; (bar = strchr(p, '|')); p = bar + 1) {
            char name[64];
            snprintf(name, sizeof name, "%.*s", (int)(bar - p), p);
            slm_error err = {0};
            slm_status st = slm_pretok_split(name, text, sizeof text - 1, offs, sizeof text, &count, &err);
            size_t covered = 0;
            for (size_t k = 0; !st && k < count; k++) covered += offs[2 * k + 1];
            CHECK(!st && covered == sizeof text - 1, "pre-tokenizer '%s': %s", name, err.msg);
            names++;
        }
    CHECK(names >= 50, "%d pre-tokenizer names", names);
}

/* ---- SentencePiece tokenizer.model ---------------------------------------- */

typedef struct buf { unsigned char b[1 << 16]; size_t n; } buf;

static void put_varint(buf *o, uint64_t v)
{
    do {
        unsigned char c = v & 0x7f;
        v >>= 7;
        o->b[o->n++] = (unsigned char)(v ? c | 0x80 : c);
    } while (v);
}

static void put_bytes(buf *o, int num, const void *p, size_t n)
{
    put_varint(o, (uint64_t)num << 3 | 2);
    put_varint(o, n);
    memcpy(o->b + o->n, p, n);
    o->n += n;
}

static void put_int(buf *o, int num, int64_t v)
{
    put_varint(o, (uint64_t)num << 3);
    put_varint(o, (uint64_t)v);
}

/* A BPE model: <unk> <s> </s>, 256 byte pieces, "\u2581a"; trainer and
 * normalizer as Llama 2's, with bos_id as given. */
static void small_model(buf *o, int64_t bos_id)
{
    o->n = 0;
    for (int i = 0; i < 260; i++) {
        char text[16];
        int type = i == 0 ? 2 : i < 3 ? 3 : i < 259 ? 6 : 1;
        if (i < 3) snprintf(text, sizeof text, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259) snprintf(text, sizeof text, "<0x%02X>", i - 3);
        else snprintf(text, sizeof text, "\xe2\x96\x81" "a");
        buf m = {.n = 0};
        put_bytes(&m, 1, text, strlen(text));
        put_int(&m, 3, type);
        put_bytes(o, 1, m.b, m.n);
    }
    buf t = {.n = 0};
    put_int(&t, 3, 2);      /* BPE */
    put_int(&t, 35, 1);     /* byte_fallback */
    put_int(&t, 41, bos_id);
    put_bytes(o, 2, t.b, t.n);
    buf nz = {.n = 0};
    put_int(&nz, 4, 0);     /* remove_extra_whitespaces off */
    put_bytes(o, 3, nz.b, nz.n);
}

static void spm_model(const char *fixtures)
{
    static buf m;
    small_model(&m, 1);
    spit(m.b, m.n);
    slm_error err = {0};
    slm_tok *t = slm_tok_load(tmp, &err);
    slm_tok_ids ids = {0};
    CHECK(t && slm_tok_n_vocab(t) == 260 && !slm_tok_encode(t, "a", 1, 1, 0, &ids, &err) && ids.n == 2 &&
          ids.v[0] == 1 && ids.v[1] == 259, "small model: %s", err.msg);
    slm_tok_ids_free(&ids);
    slm_tok_free(t);
    /* a special id outside the pieces, the int32 -2 as protobuf writes it */
    small_model(&m, -2);
    spit(m.b, m.n);
    char want[256];
    snprintf(want, sizeof want, "%s: trainer_spec.bos_id is -2 (the model has pieces 0..259)", tmp);
    t = slm_tok_load(tmp, &err);
    CHECK(!t && !strcmp(err.msg, want), "bos_id -2: %s", err.msg);
    slm_tok_free(t);
    /* every truncation and every single-byte change of the model: refused
     * or loaded, never a crash or a read past the end (ASan run) */
    small_model(&m, 1);
    static buf c;
    int bad = 0;
    for (size_t cut = 0; cut < m.n; cut += 7) {
        spit(m.b, cut);
        t = slm_tok_load(tmp, &err);
        if (!t && !err.msg[0]) bad++;
        slm_tok_free(t);
    }
    for (size_t at = 0; at < m.n; at += 13) {
        memcpy(c.b, m.b, m.n);
        c.b[at] ^= (unsigned char)(0x55 + at);
        spit(c.b, m.n);
        err.msg[0] = 0;
        t = slm_tok_load(tmp, &err);
        if (!t && !err.msg[0]) bad++;
        slm_tok_free(t);
    }
    CHECK(bad == 0, "%d hostile models without a message", bad);
    /* the Llama 2 tokenizer.model beside llama2.c's checkpoints */
    char path[512];
    snprintf(path, sizeof path, "%s/llama2c/tokenizer.model", fixtures);
    if (access(path, R_OK) != 0) {
        printf("skip: %s not found (set SLM_FIXTURES)\n", path);
        return;
    }
    t = slm_tok_load(path, &err);
    CHECK(t && slm_tok_n_vocab(t) == 32000 && slm_tok_special_id(t, SLM_TOK_BOS) == 1 &&
          !strcmp(slm_tok_model_name(t), "sentencepiece"), "tokenizer.model: %s", err.msg);
    slm_tok_free(t);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/slm-tokfiles-%d", (int)getpid());
    const char *fx = getenv("SLM_FIXTURES");
    tokjson();
    llama2c_bin();
    pretok_sets();
    spm_model(fx ? fx : "../shared/fixtures");
    unlink(tmp);
    return check_summary();
}
