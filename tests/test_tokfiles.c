/* Tokenizer file readers on hostile input: every count, id and length a
 * tokenizer.json claims is checked before anything is sized from it, and the
 * message names the file, the field and the problem. Every pre-tokenizer
 * regex set compiles. */
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

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/slm-tokfiles-%d", (int)getpid());
    tokjson();
    pretok_sets();
    unlink(tmp);
    return check_summary();
}
