/* rwkv.cpp file reader: every fixture file, and truncation/corruption at
 * every offset of a real file never crashes or reads out of bounds. The
 * writer: what it writes reads back the same; refusals. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "formats/rwkvcpp.h"

static char dir[512];

static unsigned char *slurp(const char *path, size_t *n)
{
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    fseek(fp, 0, SEEK_END);
    *n = (size_t)ftell(fp);
    fseek(fp, 0, SEEK_SET);
    unsigned char *b = malloc(*n);
    if (b && fread(b, 1, *n, fp) != *n) { free(b); b = NULL; }
    fclose(fp);
    return b;
}

static void spit(const char *path, const unsigned char *b, size_t n)
{
    FILE *fp = fopen(path, "wb");
    if (!fp) return;
    fwrite(b, 1, n, fp);
    fclose(fp);
}

static void test_fixtures(void)
{
    DIR *d = opendir(dir);
    int files = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        if (!strstr(e->d_name, ".bin") || strncmp(e->d_name, "tiny-rwkv-", 10)) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        slm_error err = {0};
        slm_rwkvcpp *f = slm_rwkvcpp_open(path, &err);
        CHECK(f != NULL, "%s: %s", e->d_name, err.msg);
        if (!f) continue;
        const slm_rwkvcpp_header *h = slm_rwkvcpp_header_get(f);
        CHECK(h->n_vocab == 256, "%s: n_vocab %d", e->d_name, h->n_vocab);
        int emb = slm_rwkvcpp_find(f, "emb.weight");
        slm_tensor *t = emb >= 0 ? slm_rwkvcpp_tensor(f, emb, &err) : NULL;
        CHECK(t && t->shape[0] == 256 && t->shape[1] == h->n_embed, "%s: emb.weight shape", e->d_name);
        slm_tensor_free(t);
        CHECK(slm_rwkvcpp_find(f, "head.weight") >= 0, "%s: head.weight", e->d_name);
        slm_rwkvcpp_close(f);
        files++;
    }
    if (d) closedir(d);
    if (!files) printf("skip: no rwkv.cpp fixtures in %s (set SLM_FIXTURES)\n", dir);
}

static void test_hostile(void)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/tiny-rwkv-4v0-660K-FP16.bin", dir);
    size_t n;
    unsigned char *b = slurp(path, &n);
    if (!b) { printf("skip: %s not found\n", path); return; }
    /* a private name: a concurrent run rewriting a file this one has mapped
     * would raise SIGBUS */
    char tmp[64];
    snprintf(tmp, sizeof tmp, "/tmp/slm-rwkvcpp-%d.bin", (int)getpid());
    /* truncation at every offset in the first 4 KiB and at a stride after:
     * an error, or (at a parameter boundary) a smaller valid file */
    int bad = 0, errors = 0;
    for (size_t cut = 0; cut < n; cut += cut < 4096 ? 1 : 997) {
        spit(tmp, b, cut);
        slm_error err = {0};
        slm_rwkvcpp *f = slm_rwkvcpp_open(tmp, &err);
        if (f) { if (slm_rwkvcpp_n_tensors(f) >= 78) bad++; slm_rwkvcpp_close(f); }
        else if (!err.msg[0]) bad++;
        else errors++;
    }
    CHECK(bad == 0 && errors > 0, "truncations: %d bad, %d errors", bad, errors);
    slm_error err = {0};
    unsigned char *c = malloc(n);
    memcpy(c, b, n);
    c[0] ^= 1;
    spit(tmp, c, n);
    CHECK(!slm_rwkvcpp_open(tmp, &err) && strstr(err.msg, "bad magic"), "magic: %s", err.msg);
    memcpy(c, b, n);
    c[4] = 99;
    spit(tmp, c, n);
    CHECK(!slm_rwkvcpp_open(tmp, &err) && strstr(err.msg, "unsupported rwkv.cpp file version"),
          "version: %s", err.msg);
    memcpy(c, b, n);
    c[24] = 9;   /* first parameter's n_dims */
    spit(tmp, c, n);
    CHECK(!slm_rwkvcpp_open(tmp, &err) && strstr(err.msg, "parameter 0: n_dims 9"), "ndims: %s", err.msg);
    memcpy(c, b, n);
    c[32] = 5;   /* first parameter's data type: a retired format */
    spit(tmp, c, n);
    CHECK(!slm_rwkvcpp_open(tmp, &err) && strstr(err.msg, "unsupported data type 5"), "type: %s", err.msg);
    memcpy(c, b, n);
    c[36 + 3] = 0x7f;   /* first dimension huge */
    spit(tmp, c, n);
    CHECK(!slm_rwkvcpp_open(tmp, &err) && strstr(err.msg, "past the end of the file"), "size: %s", err.msg);
    /* the header's sizes against the parameters (this file: n_vocab 256,
     * n_embed 128, n_layer 4): one changed byte used to size the session's
     * logits at 2^31 floats */
    static const struct { int at; unsigned char byte; const char *want; } hdr[] = {
        {11, 0x7f, "header n_vocab is 2130706688, emb.weight has 256 rows"},
        {9, 0x00, "header n_vocab is 0 (must be positive)"},
        {9, 0x02, "header n_vocab is 512, emb.weight has 256 rows"},
        {15, 0x7f, "header n_embed is 2130706560, emb.weight has 128 columns"},
        {19, 0x7f, "header n_layer is 2130706436, the file has 4 blocks"},
        {16, 0x03, "header n_layer is 3, the file has parameter 'blocks.3."},
        {17, 0x7f, "header n_layer is 32516, the file has 4 blocks"},
        {19, 0x80, "header n_layer is -2147483644 (must be positive)"},
    };
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) {
        memcpy(c, b, n);
        c[hdr[i].at] = hdr[i].byte;
        spit(tmp, c, n);
        err.msg[0] = 0;
        slm_rwkvcpp *f = slm_rwkvcpp_open(tmp, &err);
        CHECK(!f && strstr(err.msg, hdr[i].want) && strncmp(err.msg, tmp, strlen(tmp)) == 0,
              "header byte %d = 0x%02x: %s", hdr[i].at, hdr[i].byte, err.msg);
        slm_rwkvcpp_close(f);
    }
    /* head.weight renamed: its absence is named */
    memcpy(c, b, n);
    for (size_t o = 24; o + 11 <= n; o++)
        if (memcmp(c + o, "head.weight", 11) == 0) { c[o] = 'x'; break; }
    spit(tmp, c, n);
    CHECK(!slm_rwkvcpp_open(tmp, &err) && strstr(err.msg, "no parameter 'head.weight'"), "head: %s", err.msg);
    free(c);
    free(b);
    unlink(tmp);
}

/* writes two parameters, reads them back; then the refusals, which leave
 * no file behind */
static void test_write(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/slm-test-rwkvcpp-%d.bin", (int)getpid());
    slm_error err = {0};
    int64_t s2[2] = {2, 256}, s1[1] = {5};
    slm_tensor *a = slm_tensor_new(SLM_DTYPE_F32, 2, s2, &err);
    slm_tensor *b = slm_tensor_new(SLM_DTYPE_F16, 1, s1, &err);
    slm_tensor *q = NULL;
    if (!a || !b) { CHECK(0, "alloc: %s", err.msg); return; }
    float *pa = slm_tensor_data(a);
    for (int i = 0; i < 512; i++) pa[i] = (float)(i % 97) * 0.25f - 3.0f;
    q = slm_tensor_convert(a, SLM_DTYPE_Q8_0, &err);
    CHECK(q != NULL, "convert: %s", err.msg);
    /* the reader checks the header against emb.weight, head.weight and
     * the blocks: a file it opens has them (4 tokens of 32 here) */
    int64_t se[2] = {4, 32};
    slm_tensor *emb = slm_tensor_new(SLM_DTYPE_F32, 2, se, &err);
    if (!emb) { CHECK(0, "alloc: %s", err.msg); return; }
    const char *names[4] = {"blocks.0.att.key.weight", "ln_out.bias", "emb.weight", "head.weight"};
    const slm_tensor *ts[4] = {q, b, emb, emb};
    slm_rwkvcpp_header h = {101, 4, 32, 1, 9};
    CHECK(slm_rwkvcpp_write(path, &h, 4, names, ts, &err) == SLM_OK, "write: %s", err.msg);
    slm_rwkvcpp *f = slm_rwkvcpp_open(path, &err);
    CHECK(f != NULL, "reopen: %s", err.msg);
    if (f) {
        const slm_rwkvcpp_header *g = slm_rwkvcpp_header_get(f);
        CHECK(g->version == 101 && g->n_vocab == 4 && g->n_embed == 32 && g->n_layer == 1 &&
              g->data_type == 9, "header read back");
        CHECK(slm_rwkvcpp_n_tensors(f) == 4 && slm_rwkvcpp_find(f, "ln_out.bias") == 1, "names read back");
        slm_tensor *r = slm_rwkvcpp_tensor(f, 0, &err);
        CHECK(r && r->dtype == SLM_DTYPE_Q8_0 && r->ndim == 2 && r->shape[0] == 2 && r->shape[1] == 256 &&
              memcmp(slm_tensor_data(r), slm_tensor_data(q), slm_tensor_nbytes(q)) == 0,
              "q8_0 parameter read back byte for byte");
        slm_tensor_free(r);
        slm_rwkvcpp_close(f);
    }
    /* refused before anything is written: a dtype the format lacks */
    slm_tensor *k = slm_tensor_convert(a, SLM_DTYPE_Q2_K, &err);
    const slm_tensor *bad[1] = {k ? k : a};
    remove(path);
    CHECK(k && slm_rwkvcpp_write(path, &h, 1, names, bad, &err) == SLM_EUNSUPPORTED &&
              strstr(err.msg, "parameter 'blocks.0.att.key.weight': rwkv.cpp files have no q2_k type"),
          "q2_k refused: %s", err.msg);
    FILE *fp = fopen(path, "rb");
    CHECK(fp == NULL, "nothing written after a refusal");
    if (fp) fclose(fp);
    slm_tensor_free(k);
    slm_tensor_free(q);
    slm_tensor_free(a);
    slm_tensor_free(b);
    slm_tensor_free(emb);
    remove(path);
}

int main(void)
{
    const char *fx = getenv("SLM_FIXTURES");
    snprintf(dir, sizeof dir, "%s/rwkv", fx ? fx : "../shared/fixtures");
    test_fixtures();
    test_hostile();
    test_write();
    return check_summary();
}
