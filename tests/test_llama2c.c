/* llama2.c checkpoint reader: the stories260K fixture and hostile headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "formats/llama2c.h"

static const char *write_tmp(const void *data, size_t n)
{
    static char path[64];
    strcpy(path, "/tmp/slm-l2c-XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0 || write(fd, data, n) != (ssize_t)n) return NULL;
    close(fd);
    return path;
}

static void test_fixture(void)
{
    const char *dir = getenv("SLM_FIXTURES");
    char path[512];
    snprintf(path, sizeof path, "%s/llama2c/stories260K.bin", dir ? dir : "../shared/fixtures");
    if (access(path, R_OK) != 0) {
        printf("skip: %s not found (set SLM_FIXTURES)\n", path);
        return;
    }
    slm_error err = {0};
    slm_llama2c *m = slm_llama2c_open(path, &err);
    CHECK(m != NULL, "open: %s", err.msg);
    if (!m) return;
    const slm_llama2c_config *c = slm_llama2c_config_get(m);
    CHECK(c->dim == 64 && c->hidden_dim == 172 && c->n_layers == 5 && c->n_heads == 8 &&
          c->n_kv_heads == 4 && c->vocab_size == 512 && c->seq_len == 512 && c->shared_classifier,
          "stories260K config");
    CHECK(slm_llama2c_n_tensors(m) == 2 + 9 * 5, "tensor count %d", slm_llama2c_n_tensors(m));
    CHECK(strcmp(slm_llama2c_tensor_name(m, 6), "blk.0.attn_q.weight") == 0, "name order");
    slm_tensor *t = slm_llama2c_tensor(m, 0, &err);
    CHECK(t && t->shape[0] == 512 && t->shape[1] == 64, "token_embd shape");
    slm_llama2c_close(m);
    /* the view outlives the file object: its first float is the file's 29th byte on */
    if (t) {
        float f;
        memcpy(&f, slm_tensor_data(t), 4);
        CHECK(f < -0.29f && f > -0.30f, "first embedding value %f", (double)f);
    }
    slm_tensor_free(t);
}

/* The bytes of stories260K.bin, through the library's own mapping (NULL
 * when the fixture is absent). */
static unsigned char *fixture_bytes(size_t *n)
{
    const char *dir = getenv("SLM_FIXTURES");
    char path[512];
    snprintf(path, sizeof path, "%s/llama2c/stories260K.bin", dir ? dir : "../shared/fixtures");
    slm_storage *map = slm_storage_map_file(path, NULL);
    if (!map) return NULL;
    *n = map->size;
    unsigned char *b = malloc(*n);
    if (b) memcpy(b, map->data, *n);
    slm_storage_unref(map);
    return b;
}

/* Opens the fixture with header fields replaced (field index, value pairs
 * ending at -1) and `extra` zero bytes appended; the message must contain want. */
static void expect_refused(const unsigned char *fix, size_t n, const int *change, size_t extra,
                           const char *want)
{
    unsigned char *b = malloc(n + extra);
    memcpy(b, fix, n);
    memset(b + n, 0, extra);
    for (int i = 0; change[i] >= 0; i += 2) memcpy(b + 4 * change[i], &change[i + 1], 4);
    const char *p = write_tmp(b, n + extra);
    slm_error err = {0};
    slm_llama2c *m = p ? slm_llama2c_open(p, &err) : NULL;
    CHECK(p && !m && strstr(err.msg, want) && strncmp(err.msg, p, strlen(p)) == 0,
          "want '%s', got '%s'", want, err.msg);
    slm_llama2c_close(m);
    if (p) unlink(p);
    free(b);
}

static void test_hostile(void)
{
    int32_t hdr[7] = {64, 172, 5, 8, 4, 512, 512};
    slm_error err = {0};
    const char *p = write_tmp(hdr, 20);
    CHECK(slm_llama2c_open(p, &err) == NULL && strstr(err.msg, "file too short"), "short: %s", err.msg);
    unlink(p);
    /* the header alone: the sizes it implies, against the file */
    p = write_tmp(hdr, sizeof hdr);
    CHECK(slm_llama2c_open(p, &err) == NULL &&
          strstr(err.msg, "llama2.c header (dim 64, hidden_dim 172, n_layers 5, n_heads 8, n_kv_heads 4, "
                          "vocab_size 512, seq_len 512) describes 1056540 bytes, the file has 28"),
          "truncated: %s", err.msg);
    unlink(p);
    CHECK(slm_llama2c_open("/nonexistent/x.bin", &err) == NULL && strstr(err.msg, "No such file"),
          "missing: %s", err.msg);
    size_t n;
    unsigned char *fix = fixture_bytes(&n);
    if (!fix) {
        printf("skip: llama2c/stories260K.bin not found (set SLM_FIXTURES)\n");
        return;
    }
    /* each field out of range or inconsistent, named with its value */
    expect_refused(fix, n, (int[]){0, -1, -1}, 0, "llama2.c header: dim is -1 (expected 1..65536)");
    expect_refused(fix, n, (int[]){1, 1 << 20, -1}, 0,
                   "llama2.c header: hidden_dim is 1048576 (expected 1..262144)");
    expect_refused(fix, n, (int[]){2, 0, -1}, 0, "llama2.c header: n_layers is 0 (expected 1..1024)");
    expect_refused(fix, n, (int[]){3, 7, -1}, 0, "llama2.c header: n_heads 7 does not divide dim 64");
    expect_refused(fix, n, (int[]){4, 3, -1}, 0, "llama2.c header: n_kv_heads 3 does not divide n_heads 8");
    expect_refused(fix, n, (int[]){3, 64, -1}, 0,
                   "llama2.c header: dim 64 / n_heads 64 gives heads of 1 (RoPE needs an even size)");
    /* one byte of vocab_size changed (512 -> 0x7f000200) */
    expect_refused(fix, n, (int[]){5, 0x7f000200, -1}, 0,
                   "llama2.c header: vocab_size is 2130706944 (expected 1..4194304, negative for an "
                   "unshared classifier)");
    expect_refused(fix, n, (int[]){5, -(1 << 23), -1}, 0, "vocab_size is -8388608 (expected");
    expect_refused(fix, n, (int[]){6, 0, -1}, 0, "llama2.c header: seq_len is 0 (expected 1..4194304)");
    /* in range, but not the file's sizes: 512*64*4 more bytes of embedding,
     * 512*8*4 more of RoPE tables */
    expect_refused(fix, n, (int[]){5, 1024, -1}, 0, "vocab_size 1024, seq_len 512) describes 1187612 bytes, "
                   "the file has 1056540");
    expect_refused(fix, n, (int[]){5, -512, -1}, 0, "vocab_size -512, seq_len 512) describes 1187612 bytes, "
                   "the file has 1056540");
    expect_refused(fix, n, (int[]){6, 1024, -1}, 0, "seq_len 1024) describes 1072924 bytes, the file has "
                   "1056540");
    expect_refused(fix, n, (int[]){-1}, 1, "describes 1056540 bytes, the file has 1056541");
    /* a classifier after the weights, with a positive vocab_size */
    expect_refused(fix, n, (int[]){-1}, 512 * 64 * 4,
                   "llama2.c header: vocab_size 512 says the classifier is shared, but the file holds one "
                   "more (512, 64) matrix: an unshared classifier is written as vocab_size -512");
    /* export.py's versioned formats */
    expect_refused(fix, n, (int[]){0, 0x616b3432, 1, 2, -1}, 0,
                   "llama2.c export version 2 is not supported (only the legacy version 0 checkpoints)");
    /* the unshared layout reads: the same file with a classifier appended */
    unsigned char *b = malloc(n + 512 * 64 * 4);
    memcpy(b, fix, n);
    memcpy(b + n, fix + 28, 512 * 64 * 4);   /* the embedding again as the classifier */
    int32_t v = -512;
    memcpy(b + 20, &v, 4);
    p = write_tmp(b, n + 512 * 64 * 4);
    slm_llama2c *m = slm_llama2c_open(p, &err);
    CHECK(m && !slm_llama2c_config_get(m)->shared_classifier && slm_llama2c_n_tensors(m) == 3 + 9 * 5,
          "unshared: %s", m ? "wrong layout" : err.msg);
    slm_llama2c_close(m);
    unlink(p);
    free(b);
    free(fix);
}

int main(void)
{
    test_fixture();
    test_hostile();
    return check_summary();
}
