/* GBNF grammars (csrc/sampler/grammar*.c): parser errors with line:col,
 * matching against hand-labelled strings, UTF-8 split across calls,
 * distances to completion, and trie masks against testing every token. */
#include <stdlib.h>
#include <string.h>

#include "../csrc/sampler/grammar.h"
#include "check.h"

/* 1 complete, 0 prefix, -1 rejected */
static int match(slm_grammar *g, const char *s)
{
    slm_gstate st;
    slm_error err;
    if (slm_gstate_init(g, &st, &err)) return -2;
    long n = slm_gstate_accept(g, &st, (const uint8_t *)s, strlen(s), &err);
    int r = n < (long)strlen(s) ? -1 : slm_gstate_complete(&st);
    slm_gstate_free(&st);
    return r;
}

static slm_grammar *compile(const char *text)
{
    slm_error err;
    slm_grammar *g = slm_grammar_compile(text, strlen(text), NULL, &err);
    CHECK(g != NULL, "compile '%s': %s", text, g ? "" : err.msg);
    return g;
}

static void check_error(const char *text, const char *want)
{
    slm_error err;
    slm_grammar *g = slm_grammar_compile(text, strlen(text), NULL, &err);
    CHECK(!g && strcmp(err.msg, want) == 0, "error of '%s': got '%s', want '%s'", text, g ? "(none)" : err.msg, want);
    slm_grammar_free(g);
}

static void test_errors(void)
{
    check_error("root ::= \"a\\y\"", "grammar:1:12: unknown escape '\\y'");
    check_error("root ::= x\n", "grammar:1:10: undefined rule: x");
    check_error("root ::= \"a\" |\n  \"b\" (\n", "grammar:3:1: expected ')'");
    check_error("root ::= \"a\"\n  | \"b\"\n", "grammar:2:3: expected a rule name");   /* a newline ends a rule */
    check_error("root ::= [\\u00e9-\\u00e0]", "grammar:1:11: range out of order in the class");
    check_error("a ::= \"x\"", "grammar: no rule 'root' (the start rule)");
    check_error("root ::= a\na ::= a? \"b\" | \"c\"", "grammar: rule 'a' is left-recursive (it can begin with itself); "
                "write it right-recursive or with a repetition");
    check_error("root ::= \"\\xFF\xff\"", "grammar:1:15: invalid UTF-8 in the grammar");
}

static void test_match(void)
{
    /* labels worked out by hand from the grammar */
    slm_grammar *g = compile("root ::= item (\",\" item)*\n"
                             "item ::= [a-z]+ | \"\\\"\" [^\"]* \"\\\"\" | \"é\"{2}\n");
    if (!g) return;
    struct { const char *s; int want; } c[] = {
        {"", 0}, {"a", 1}, {"ab,c", 1}, {"ab,", 0}, {"ab,,", -1}, {"\"x,y\"", 1}, {"\"x", 0},
        {"éé", 1}, {"é", 0}, {"ééé", -1}, {"A", -1}, {"a,\"\",zz", 1}, {"\xc3", 0}, {"\xc3\xa8", -1},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++)
        CHECK(match(g, c[i].s) == c[i].want, "match '%s': got %d, want %d", c[i].s, match(g, c[i].s), c[i].want);
    /* every byte split of "a,éé" gives the same state */
    const char *s = "a,éé";
    for (size_t cut = 0; cut <= strlen(s); cut++) {
        slm_gstate st;
        slm_error err;
        slm_gstate_init(g, &st, &err);
        long a = slm_gstate_accept(g, &st, (const uint8_t *)s, cut, &err);
        long b = slm_gstate_accept(g, &st, (const uint8_t *)s + cut, strlen(s) - cut, &err);
        CHECK(a == (long)cut && b == (long)(strlen(s) - cut) && slm_gstate_complete(&st), "split at %zu", cut);
        slm_gstate_free(&st);
    }
    /* distances: fewest bytes to complete */
    slm_gstate st;
    slm_error err;
    slm_gstate_init(g, &st, &err);
    CHECK(slm_gstate_distance(g, &st) == 1, "distance at start %d", slm_gstate_distance(g, &st));
    slm_gstate_accept(g, &st, (const uint8_t *)"a,\"", 3, &err);
    CHECK(slm_gstate_distance(g, &st) == 1, "distance in a string %d", slm_gstate_distance(g, &st));
    slm_gstate_accept(g, &st, (const uint8_t *)"\",\xc3", 3, &err);
    /* inside the first é of é{2}: one continuation byte, then é (2 bytes) */
    CHECK(slm_gstate_distance(g, &st) == 3, "distance inside é %d", slm_gstate_distance(g, &st));
    slm_gstate_free(&st);
    slm_grammar_free(g);

    /* deep right recursion: a stack of 10000 nested brackets, linear */
    g = compile("root ::= \"[\" root? \"]\"\n");
    if (!g) return;
    size_t n = 10000;
    char *deep = malloc(2 * n + 2);
    memset(deep, '[', n);
    memset(deep + n, ']', n);
    deep[2 * n] = 0;
    CHECK(match(g, deep) == 1, "10000 nested brackets");
    deep[2 * n - 1] = 0;
    CHECK(match(g, deep) == 0, "one bracket short");
    free(deep);
    slm_grammar_free(g);
}

/* A small vocabulary: every byte below 128 plus multi-byte pieces. */
static const char *vocab[] = {
    "a", "b", "ab", "abc", "\"", "\",", ",", "é", "\xc3", "\xa9", "é,", "x", "ééé", "\xc3\xa9\xc3", "",
    "z\"", "]", "[", "[\"", "aaaa", "bc", ",\"",
};
#define NV (int32_t)(sizeof vocab / sizeof *vocab)

static const char *piece(void *ud, int32_t id, size_t *len)
{
    (void)ud;
    *len = strlen(vocab[id]);
    return vocab[id];
}

static void test_masks(void)
{
    slm_grammar *g = compile("root ::= item (\",\" item)*\n"
                             "item ::= [a-z]+ | \"\\\"\" [^\"]* \"\\\"\" | \"é\"{2}\n");
    if (!g) return;
    slm_error err;
    uint8_t eog[NV] = { 0 };
    eog[14] = 1;   /* the empty piece stands for an end-of-generation token */
    slm_gvocab *v = slm_gvocab_new(NV, piece, NULL, eog, &err);
    CHECK(v != NULL, "vocab");
    const char *prefixes[] = { "", "a", "a,", "\"", "\"x", "\xc3", "é", "a,\"\xc3", "éé" };
    for (size_t p = 0; p < sizeof prefixes / sizeof *prefixes; p++) {
        slm_gstate st;
        slm_gstate_init(g, &st, &err);
        slm_gstate_accept(g, &st, (const uint8_t *)prefixes[p], strlen(prefixes[p]), &err);
        for (int32_t limit = -1; limit < 4; limit++) {
            uint8_t mask[(NV + 7) / 8];
            long n = slm_grammar_mask(g, v, &st, limit, mask, &err);
            long want_n = 0;
            for (int32_t id = 0; id < NV; id++) {
                /* brute force: feed the token to a copy of the state */
                slm_gstate t = { 0 };
                slm_gstate_copy(&t, &st, &err);
                size_t len = strlen(vocab[id]);
                int ok;
                if (eog[id]) ok = slm_gstate_complete(&st);
                else ok = len > 0 && slm_gstate_accept(g, &t, (const uint8_t *)vocab[id], len, &err) == (long)len &&
                          (limit < 0 || slm_gstate_distance(g, &t) <= limit);
                slm_gstate_free(&t);
                want_n += ok;
                CHECK(((mask[id >> 3] >> (id & 7)) & 1) == ok, "prefix '%s' limit %d token '%s': mask %d, want %d",
                      prefixes[p], limit, vocab[id], (mask[id >> 3] >> (id & 7)) & 1, ok);
            }
            CHECK(n == want_n, "prefix '%s': count %ld want %ld", prefixes[p], n, want_n);
        }
        slm_gstate_free(&st);
    }
    slm_gvocab_free(v);
    slm_grammar_free(g);
}

int main(void)
{
    test_errors();
    test_match();
    test_masks();
    return check_summary();
}
