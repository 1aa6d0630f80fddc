/* Token files (csrc/train/tokens.c): the writer's bytes against the layout
 * written out here by hand, reading back, windows, seeded random batches
 * against a plain re-computation of the starts, and hostile headers (each
 * refused with a message naming the file and the field, before any
 * allocation or out-of-bounds read). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "train/tokens.h"

static char dir[] = "/tmp/slm_test_tokens_XXXXXX";

static void path_of(char *buf, size_t cap, const char *name)
{
    snprintf(buf, cap, "%s/%s", dir, name);
}

static int file_exists(const char *p)
{
    FILE *f = fopen(p, "rb");
    if (f) fclose(f);
    return f != NULL;
}

static long file_bytes(const char *p, unsigned char *buf, long cap)
{
    FILE *f = fopen(p, "rb");
    if (!f) return -1;
    long n = (long)fread(buf, 1, (size_t)cap, f);
    fclose(f);
    return n;
}

/* A header written byte by byte, independently of the writer. */
static void header(unsigned char *h, const char *magic, uint32_t version, uint32_t width,
                   uint32_t vocab, uint32_t reserved, uint64_t count)
{
    memcpy(h, magic, 8);
    for (int i = 0; i < 4; i++) {
        h[8 + i] = (unsigned char)(version >> (8 * i));
        h[12 + i] = (unsigned char)(width >> (8 * i));
        h[16 + i] = (unsigned char)(vocab >> (8 * i));
        h[20 + i] = (unsigned char)(reserved >> (8 * i));
    }
    for (int i = 0; i < 8; i++) h[24 + i] = (unsigned char)(count >> (8 * i));
}

static void write_raw(const char *p, const unsigned char *h, size_t hn, size_t body)
{
    FILE *f = fopen(p, "wb");
    fwrite(h, 1, hn, f);
    for (size_t i = 0; i < body; i++) fputc((int)(i * 7 % 5), f);
    fclose(f);
}

static void test_write_read(void)
{
    char p[256];
    path_of(p, sizeof p, "a.tok");
    slm_error err;
    slm_tokens_writer *w = slm_tokens_writer_open(p, 300, &err);
    CHECK(w != NULL, "writer_open: %s", w ? "" : err.msg);
    if (!w) return;
    /* 1000 ids in chunks of 1, 10, 100, ...: ids[i] = (i * 37) % 300 */
    int32_t ids[1000];
    for (int i = 0; i < 1000; i++) ids[i] = (i * 37) % 300;
    size_t at = 0, chunk = 1;
    while (at < 1000) {
        size_t n = 1000 - at < chunk ? 1000 - at : chunk;
        CHECK(slm_tokens_writer_append(w, ids + at, n, &err) == SLM_OK, "append: %s", err.msg);
        at += n;
        chunk *= 10;
    }
    CHECK(slm_tokens_writer_count(w) == 1000, "writer count");
    /* an id out of range: an error naming it, nothing of the chunk written */
    int32_t bad[3] = {1, 300, 2};
    CHECK(slm_tokens_writer_append(w, bad, 3, &err) == SLM_EINVAL &&
              strstr(err.msg, "id 300 (at 2 of the chunk) is outside the vocabulary 0..299"),
          "bad id: %s", err.msg);
    int32_t neg = -1;
    CHECK(slm_tokens_writer_append(w, &neg, 1, &err) == SLM_EINVAL, "negative id refused");
    CHECK(slm_tokens_writer_count(w) == 1000, "count unchanged by refused chunks");
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp", p);
    CHECK(file_exists(tmp) && !file_exists(p), "writes go to PATH.tmp until finish");
    CHECK(slm_tokens_writer_finish(w, &err) == SLM_OK, "finish: %s", err.msg);
    CHECK(!file_exists(tmp) && file_exists(p), "finish renames PATH.tmp to PATH");

    /* the bytes: the layout of tokens.h */
    static unsigned char bytes[4096];
    long n = file_bytes(p, bytes, sizeof bytes);
    unsigned char h[32];
    header(h, "SLMTOKEN", 1, 2, 300, 0, 1000);
    CHECK(n == 32 + 2000, "file size %ld", n);
    CHECK(memcmp(bytes, h, 32) == 0, "header bytes");
    int body_ok = 1;
    for (int i = 0; i < 1000; i++)
        body_ok &= bytes[32 + 2 * i] == (ids[i] & 255) && bytes[33 + 2 * i] == (ids[i] >> 8);
    CHECK(body_ok, "ids stored as u16 little-endian");

    slm_tokens *t = slm_tokens_open(p, &err);
    CHECK(t != NULL, "open: %s", t ? "" : err.msg);
    if (!t) return;
    CHECK(slm_tokens_count(t) == 1000 && slm_tokens_vocab(t) == 300 && slm_tokens_width(t) == 2,
          "count/vocab/width");
    int32_t back[1000];
    CHECK(slm_tokens_read(t, 0, 1000, back, &err) == SLM_OK && !memcmp(back, ids, sizeof ids),
          "read back all ids");
    CHECK(slm_tokens_read(t, 990, 11, back, &err) == SLM_ERANGE &&
              strstr(err.msg, "ids 990..1000 are outside the file's 1000 ids"),
          "read past the end: %s", err.msg);
    CHECK(slm_tokens_read(t, 1000, 0, back, &err) == SLM_OK, "empty read at the end");

    /* windows */
    int64_t starts[3] = {0, 500, 1000 - 9};
    int32_t out[3 * 9];
    CHECK(slm_tokens_fill(t, starts, 3, 9, out, &err) == SLM_OK, "fill: %s", err.msg);
    int fill_ok = 1;
    for (int b = 0; b < 3; b++)
        for (int j = 0; j < 9; j++) fill_ok &= out[b * 9 + j] == ids[starts[b] + j];
    CHECK(fill_ok, "fill: row b = ids[starts[b] .. + T1)");
    int64_t past[2] = {0, 1000 - 8};
    CHECK(slm_tokens_fill(t, past, 2, 9, out, &err) == SLM_ERANGE &&
              strstr(err.msg, "window 1 (ids 992..1000) is outside the file's 1000 ids"),
          "window past the end: %s", err.msg);
    int64_t negs[1] = {-1};
    CHECK(slm_tokens_fill(t, negs, 1, 9, out, &err) == SLM_ERANGE, "negative start refused");
    slm_tokens_close(t);
}

static void test_u32(void)
{
    char p[256];
    path_of(p, sizeof p, "wide.tok");
    slm_error err;
    slm_tokens_writer *w = slm_tokens_writer_open(p, 70000, &err);
    int32_t ids[4] = {0, 65535, 65536, 69999};
    CHECK(w && slm_tokens_writer_append(w, ids, 4, &err) == SLM_OK &&
              slm_tokens_writer_finish(w, &err) == SLM_OK,
          "u32 write: %s", err.msg);
    unsigned char bytes[64], h[32];
    header(h, "SLMTOKEN", 1, 4, 70000, 0, 4);
    CHECK(file_bytes(p, bytes, sizeof bytes) == 48 && !memcmp(bytes, h, 32), "u32 header");
    CHECK(bytes[32 + 4 * 2] == 0 && bytes[32 + 4 * 2 + 2] == 1, "65536 stored as u32 LE");
    slm_tokens *t = slm_tokens_open(p, &err);
    int32_t back[4];
    CHECK(t && slm_tokens_width(t) == 4 && slm_tokens_read(t, 0, 4, back, &err) == SLM_OK &&
              !memcmp(back, ids, sizeof ids),
          "u32 read back");
    slm_tokens_close(t);
    CHECK(slm_tokens_writer_open(p, 0, &err) == NULL && strstr(err.msg, "vocabulary size 0"),
          "vocab 0 refused: %s", err.msg);
    CHECK(slm_tokens_writer_open(p, (int64_t)1 << 31, &err) == NULL, "vocab 2^31 refused");
    /* abort leaves neither the file nor PATH.tmp */
    char q[256], tmp[300];
    path_of(q, sizeof q, "aborted.tok");
    snprintf(tmp, sizeof tmp, "%s.tmp", q);
    w = slm_tokens_writer_open(q, 10, &err);
    slm_tokens_writer_append(w, ids, 1, &err);
    slm_tokens_writer_abort(w);
    CHECK(!file_exists(q) && !file_exists(tmp), "abort removes the partial file");
    path_of(q, sizeof q, "no/such/dir.tok");
    CHECK(slm_tokens_writer_open(q, 10, &err) == NULL && strstr(err.msg, "dir.tok.tmp: No such file"),
          "unwritable path: %s", err.msg);
}

/* Each hostile header is refused naming the file and the field. */
static void test_hostile(void)
{
    char p[256];
    path_of(p, sizeof p, "bad.tok");
    struct {
        const char *magic;
        uint32_t version, width, vocab, reserved;
        uint64_t count;
        size_t body;
        const char *want;
    } cases[] = {
        {"SLMTOKEX", 1, 2, 10, 0, 4, 8, "not a token file (magic"},
        {"SLMTOKEN", 2, 2, 10, 0, 4, 8, "field 'version' is 2"},
        {"SLMTOKEN", 1, 3, 10, 0, 4, 12, "field 'width' is 3"},
        {"SLMTOKEN", 1, 0, 10, 0, 0, 0, "field 'width' is 0"},
        {"SLMTOKEN", 1, 2, 0, 0, 4, 8, "field 'vocab' is 0"},
        {"SLMTOKEN", 1, 4, 0x80000000u, 0, 4, 16, "field 'vocab' is 2147483648"},
        {"SLMTOKEN", 1, 2, 65537, 0, 4, 8, "'vocab' is 65537, too large for 'width' 2"},
        {"SLMTOKEN", 1, 2, 10, 7, 4, 8, "field 'reserved' is 7"},
        {"SLMTOKEN", 1, 2, 10, 0, 5, 8, "field 'count' is 5 ids of 2 bytes, but the file holds 8"},
        {"SLMTOKEN", 1, 2, 10, 0, 3, 8, "field 'count' is 3 ids"},
        {"SLMTOKEN", 1, 2, 10, 0, 4, 9, "field 'count' is 4 ids of 2 bytes, but the file holds 9"},
        /* count * width wraps to 0 (and to the body size) in 64 bits */
        {"SLMTOKEN", 1, 2, 10, 0, (uint64_t)1 << 63, 0, "field 'count' is 9223372036854775808"},
        {"SLMTOKEN", 1, 4, 10, 0, ((uint64_t)1 << 62) + 2, 8, "field 'count' is 4611686018427387906"},
        {"SLMTOKEN", 1, 2, 10, 0, UINT64_MAX, 8, "field 'count' is 18446744073709551615"},
    };
    slm_error err;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        unsigned char h[32];
        header(h, cases[i].magic, cases[i].version, cases[i].width, cases[i].vocab,
               cases[i].reserved, cases[i].count);
        write_raw(p, h, 32, cases[i].body);
        slm_tokens *t = slm_tokens_open(p, &err);
        CHECK(t == NULL && strstr(err.msg, p) && strstr(err.msg, cases[i].want),
              "hostile case %zu: %s", i, t ? "opened" : err.msg);
        slm_tokens_close(t);
    }
    /* shorter than the header, empty, missing */
    unsigned char h[32];
    header(h, "SLMTOKEN", 1, 2, 10, 0, 0);
    write_raw(p, h, 31, 0);
    CHECK(slm_tokens_open(p, &err) == NULL && strstr(err.msg, "31 bytes, shorter than the 32-byte header"),
          "short file: %s", err.msg);
    write_raw(p, h, 0, 0);
    CHECK(slm_tokens_open(p, &err) == NULL && strstr(err.msg, "0 bytes"), "empty file: %s", err.msg);
    path_of(p, sizeof p, "missing.tok");
    CHECK(slm_tokens_open(p, &err) == NULL && strstr(err.msg, "missing.tok: No such file"),
          "missing file: %s", err.msg);

    /* a valid header over a body with an id >= vocab: refused when read */
    path_of(p, sizeof p, "body.tok");
    header(h, "SLMTOKEN", 1, 2, 5, 0, 4);
    FILE *f = fopen(p, "wb");
    fwrite(h, 1, 32, f);
    unsigned char body[8] = {1, 0, 4, 0, 5, 0, 0, 0};   /* ids 1, 4, 5, 0 */
    fwrite(body, 1, 8, f);
    fclose(f);
    slm_tokens *t = slm_tokens_open(p, &err);
    CHECK(t != NULL, "body.tok opens: %s", t ? "" : err.msg);
    if (!t) return;
    int32_t out[4];
    CHECK(slm_tokens_read(t, 0, 2, out, &err) == SLM_OK && out[0] == 1 && out[1] == 4,
          "the valid ids read");
    int64_t st[1] = {1};
    CHECK(slm_tokens_fill(t, st, 1, 3, out, &err) == SLM_EFORMAT &&
              strstr(err.msg, "body.tok: id 5 at index 2 is not below the vocabulary size 5"),
          "bad id in the body: %s", err.msg);
    slm_tokens_close(t);
    /* a header-only file holds zero ids */
    header(h, "SLMTOKEN", 1, 2, 5, 0, 0);
    write_raw(p, h, 32, 0);
    t = slm_tokens_open(p, &err);
    CHECK(t && slm_tokens_count(t) == 0, "zero ids");
    slm_tokens_close(t);
}

static void test_sample(void)
{
    char p[256];
    path_of(p, sizeof p, "s.tok");
    slm_error err;
    enum { N = 200 };
    int32_t ids[N];
    for (int i = 0; i < N; i++) ids[i] = i;   /* id = position: a window shows its start */
    slm_tokens_writer *w = slm_tokens_writer_open(p, N, &err);
    slm_tokens_writer_append(w, ids, N, &err);
    slm_tokens_writer_finish(w, &err);
    slm_tokens *t = slm_tokens_open(p, &err);
    if (!t) { CHECK(0, "open: %s", err.msg); return; }

    /* the starts as the header specifies them, recomputed with the same
     * generator: lo + next() % choices (2^64 mod 100 = 16, so a draw below
     * 16 would be rejected; none occurs in these streams) */
    int64_t lo = 50, hi = 180, T1 = 31, B = 7, choices = hi - lo - T1 + 1;   /* 100 */
    slm_rng r, ref;
    slm_rng_seed(&r, 1234);
    slm_rng_seed(&ref, 1234);
    int ok_all = 1;
    for (int step = 0; step < 50; step++) {
        int32_t out[7 * 31];
        int64_t starts[7];
        CHECK(slm_tokens_sample(t, &r, lo, hi, B, T1, out, starts, &err) == SLM_OK, "sample: %s",
              err.msg);
        for (int b = 0; b < B; b++) {
            uint64_t x = slm_rng_next(&ref);
            int64_t want = lo + (int64_t)(x % (uint64_t)choices);
            ok_all &= x >= 16 && starts[b] == want;
            for (int j = 0; j < T1; j++) ok_all &= out[b * T1 + j] == want + j;
        }
    }
    CHECK(ok_all, "sampled starts = lo + next %% choices, rows = windows at them");

    /* every start in [lo, hi - T1] is reachable and the counts are flat:
     * 20000 draws over 100 starts, 200 expected each */
    int counts[100] = {0}, in_range = 1;
    slm_rng_seed(&r, 7);
    for (int i = 0; i < 20000; i++) {
        int32_t out[31];
        int64_t s;
        slm_tokens_sample(t, &r, lo, hi, 1, T1, out, &s, &err);
        in_range &= s >= lo && s <= hi - T1;
        if (s >= lo && s <= hi - T1) counts[s - lo]++;
    }
    int cmin = 1 << 30, cmax = 0;
    for (int i = 0; i < 100; i++) {
        if (counts[i] < cmin) cmin = counts[i];
        if (counts[i] > cmax) cmax = counts[i];
    }
    CHECK(in_range && cmin >= 140 && cmax <= 260, "uniform starts: min %d max %d (200 expected)",
          cmin, cmax);

    /* the window exactly fills the range: one choice */
    int32_t out[31];
    int64_t s;
    CHECK(slm_tokens_sample(t, &r, 10, 41, 1, 31, out, &s, &err) == SLM_OK && s == 10, "one choice");
    CHECK(slm_tokens_sample(t, &r, 10, 40, 1, 31, out, &s, &err) == SLM_ERANGE &&
              strstr(err.msg, "the range holds 30 ids, fewer than a window of 31"),
          "range too short: %s", err.msg);
    CHECK(slm_tokens_sample(t, &r, 0, N + 1, 1, 31, out, &s, &err) == SLM_ERANGE,
          "range past the file refused");
    /* B larger than the on-stack starts buffer, no starts_out */
    int32_t *big = malloc(sizeof *big * 100 * 31);
    slm_rng_seed(&r, 3);
    slm_rng_seed(&ref, 3);
    CHECK(slm_tokens_sample(t, &r, 0, N, 100, 31, big, NULL, &err) == SLM_OK, "B = 100");
    int big_ok = 1;
    for (int b = 0; b < 100; b++)
        big_ok &= big[b * 31] == (int32_t)(slm_rng_next(&ref) % (N - 31 + 1));
    CHECK(big_ok, "B = 100 rows at the reference starts");
    free(big);
    slm_tokens_close(t);

    /* uniform(n) for n = 1 and for n above 2^63, where half the draws are rejected */
    slm_rng_seed(&r, 5);
    CHECK(slm_tokens_uniform(&r, 1) == 0, "uniform(1) = 0");
    uint64_t n = ((uint64_t)1 << 63) + 12345;
    int ok_u = 1;
    for (int i = 0; i < 1000; i++) ok_u &= slm_tokens_uniform(&r, n) < n;
    CHECK(ok_u, "uniform(2^63 + 12345) stays below n");
}

int main(void)
{
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    test_write_read();
    test_u32();
    test_hostile();
    test_sample();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) printf("note: could not remove %s\n", dir);
    return check_summary();
}
