/* llama2.c checkpoint reader: the stories260K fixture and hostile headers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/llama2c.h"

static int passed, failed;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

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

static void test_hostile(void)
{
    int32_t hdr[7] = {64, 172, 5, 8, 4, 512, 512};
    slm_error err = {0};
    const char *p = write_tmp(hdr, 20);
    CHECK(slm_llama2c_open(p, &err) == NULL && strstr(err.msg, "file too short"), "short: %s", err.msg);
    unlink(p);
    p = write_tmp(hdr, sizeof hdr);
    CHECK(slm_llama2c_open(p, &err) == NULL && strstr(err.msg, "truncated llama2.c file"),
          "truncated: %s", err.msg);
    unlink(p);
    int32_t bad[7] = {64, 172, 5, 8, 3, 512, 512};
    p = write_tmp(bad, sizeof bad);
    CHECK(slm_llama2c_open(p, &err) == NULL && strstr(err.msg, "invalid n_kv_heads"), "kv: %s", err.msg);
    unlink(p);
    int32_t neg[7] = {-1, 172, 5, 8, 4, 512, 512};
    p = write_tmp(neg, sizeof neg);
    CHECK(slm_llama2c_open(p, &err) == NULL && strstr(err.msg, "invalid dim"), "dim: %s", err.msg);
    unlink(p);
    CHECK(slm_llama2c_open("/nonexistent/x.bin", &err) == NULL && strstr(err.msg, "No such file"),
          "missing: %s", err.msg);
}

int main(void)
{
    test_fixture();
    test_hostile();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
