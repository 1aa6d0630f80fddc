/* GGUF reader and writer: write -> read round trip of every value type and
 * dtype, a strided tensor written as contiguous rows, truncation at every
 * byte, random header corruption (must fail cleanly, never crash: run under
 * `make asan` for the out-of-bounds part), and every fixture file. The
 * safetensors reader gets the same truncation and corruption treatment
 * (its exact messages are asserted in spec/04-safetensors_spec.lua). */
#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/fp16.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"

static int passed, failed;

#define CHECK(cond, ...)                                                    \
    do {                                                                    \
        if (cond) passed++;                                                 \
        else {                                                              \
            failed++;                                                       \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                     \
            printf(__VA_ARGS__);                                            \
            printf("\n");                                                   \
        }                                                                   \
    } while (0)

static char tmpdir[64];

static char *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)sz + 1);
    if (buf && fread(buf, 1, (size_t)sz, f) != (size_t)sz) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    *n = (size_t)sz;
    return buf;
}

static void write_bytes(const char *path, const char *buf, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fwrite(buf, 1, n, f);
    fclose(f);
}

/* Fills a tensor's bytes with a deterministic pattern (valid for every
 * dtype's bit patterns except that f16/bf16 NaNs compare unequal: we only
 * compare bytes). */
static void fill(slm_tensor *t, unsigned seed)
{
    unsigned char *p = slm_tensor_data(t);
    for (size_t i = 0; i < slm_tensor_nbytes(t); i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (unsigned char)(seed >> 16);
    }
}

static const slm_dtype all_dtypes[] = {
    SLM_DTYPE_F32, SLM_DTYPE_F16, SLM_DTYPE_BF16, SLM_DTYPE_Q4_0, SLM_DTYPE_Q4_1,
    SLM_DTYPE_Q5_0, SLM_DTYPE_Q5_1, SLM_DTYPE_Q8_0, SLM_DTYPE_Q8_1, SLM_DTYPE_Q2_K,
    SLM_DTYPE_Q3_K, SLM_DTYPE_Q4_K, SLM_DTYPE_Q5_K, SLM_DTYPE_Q6_K, SLM_DTYPE_Q8_K,
    SLM_DTYPE_I8, SLM_DTYPE_I16, SLM_DTYPE_I32,
};
#define N_DTYPES (sizeof all_dtypes / sizeof all_dtypes[0])

/* Writes the round-trip file; returns its size in *size via the reader. */
static int write_sample(const char *path, slm_tensor **tensors)
{
    slm_error err;
    slm_gguf_writer *w = slm_gguf_writer_new(&err);
    if (!w) return 0;
    uint8_t u8 = 200; int8_t i8 = -100; uint16_t u16 = 60000; int16_t i16 = -30000;
    uint32_t u32 = 4000000000u; int32_t i32 = -2000000000; float f32 = 1.5f;
    uint8_t b = 1; uint64_t u64 = 18000000000000000000u; int64_t i64 = -9000000000000000000;
    double f64 = 3.25; uint32_t align = 64;
    int ok = slm_gguf_writer_set_str(w, "general.architecture", "llama", 5, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "general.alignment", SLM_GGUF_UINT32, &align, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.u8", SLM_GGUF_UINT8, &u8, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.i8", SLM_GGUF_INT8, &i8, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.u16", SLM_GGUF_UINT16, &u16, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.i16", SLM_GGUF_INT16, &i16, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.u32", SLM_GGUF_UINT32, &u32, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.i32", SLM_GGUF_INT32, &i32, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.f32", SLM_GGUF_FLOAT32, &f32, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.bool", SLM_GGUF_BOOL, &b, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.u64", SLM_GGUF_UINT64, &u64, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.i64", SLM_GGUF_INT64, &i64, &err) == SLM_OK &&
             slm_gguf_writer_set(w, "t.f64", SLM_GGUF_FLOAT64, &f64, &err) == SLM_OK &&
             slm_gguf_writer_set_str(w, "t.empty", "", 0, &err) == SLM_OK;
    int32_t ia[5] = {1, -2, 3, -4, 5};
    float fa[3] = {0.5f, -1.0f, 2.0f};
    uint8_t ba[2] = {0, 1};
    const char *sa[4] = {"<unk>", "", "hello", "w\xc3\xb6rld"};
    size_t sl[4] = {5, 0, 5, 6};
    ok = ok && slm_gguf_writer_set_arr(w, "t.arr.i32", SLM_GGUF_INT32, ia, 5, &err) == SLM_OK &&
         slm_gguf_writer_set_arr(w, "t.arr.f32", SLM_GGUF_FLOAT32, fa, 3, &err) == SLM_OK &&
         slm_gguf_writer_set_arr(w, "t.arr.bool", SLM_GGUF_BOOL, ba, 2, &err) == SLM_OK &&
         slm_gguf_writer_set_arr(w, "t.arr.empty", SLM_GGUF_UINT64, NULL, 0, &err) == SLM_OK &&
         slm_gguf_writer_set_arr_str(w, "t.arr.str", sa, sl, 4, &err) == SLM_OK;
    /* misuse is refused */
    CHECK(slm_gguf_writer_set(w, "t.u8", SLM_GGUF_UINT8, &u8, &err) == SLM_EINVAL &&
          strcmp(err.msg, "gguf key 't.u8' is set twice") == 0, "dup key: %s", err.msg);
    uint8_t bad = 2;
    CHECK(slm_gguf_writer_set(w, "t.bad", SLM_GGUF_BOOL, &bad, &err) == SLM_EINVAL,
          "bool 2 accepted");
    for (size_t d = 0; ok && d < N_DTYPES; d++) {
        const slm_dtype_traits *tr = slm_dtype_get((int)all_dtypes[d]);
        int64_t shape[2] = {3, 2 * tr->block_size};
        char name[32];
        snprintf(name, sizeof name, "w.%s", tr->name);
        tensors[d] = slm_tensor_new(all_dtypes[d], 2, shape, &err);
        ok = tensors[d] != NULL;
        if (ok) {
            fill(tensors[d], (unsigned)d + 1);
            ok = slm_gguf_writer_add_tensor(w, name, tensors[d], &err) == SLM_OK;
        }
    }
    CHECK(slm_gguf_writer_add_tensor(w, "w.f32", tensors[0], &err) == SLM_EINVAL,
          "duplicate tensor accepted");
    /* a transposed (strided) f32 view: written as its row-major values */
    slm_tensor tr = *tensors[0];
    tr.shape[0] = tensors[0]->shape[1];
    tr.shape[1] = tensors[0]->shape[0];
    tr.stride[0] = 1;
    tr.stride[1] = tensors[0]->shape[1];
    ok = ok && slm_gguf_writer_add_tensor(w, "w.f32.T", &tr, &err) == SLM_OK;
    ok = ok && slm_gguf_writer_write(w, path, &err) == SLM_OK;
    if (!ok) printf("write_sample: %s\n", err.msg);
    slm_gguf_writer_free(w);
    return ok;
}

static void test_round_trip(const char *path)
{
    slm_tensor *tensors[N_DTYPES] = {0};
    CHECK(write_sample(path, tensors), "write");
    slm_error err;
    slm_gguf *g = slm_gguf_open(path, &err);
    CHECK(g != NULL, "open written file: %s", err.msg);
    if (!g) goto done;
    CHECK(slm_gguf_version(g) == 3, "version");
    CHECK(slm_gguf_alignment(g) == 64, "alignment %zu", slm_gguf_alignment(g));
    CHECK(slm_gguf_data_offset(g) % 64 == 0, "data offset aligned");
    CHECK(slm_gguf_n_kv(g) == 19, "n_kv %" PRId64, slm_gguf_n_kv(g));
    int ok;
    CHECK(slm_gguf_get_int(g, slm_gguf_find_key(g, "t.u8"), &ok) == 200 && ok, "u8");
    CHECK(slm_gguf_get_int(g, slm_gguf_find_key(g, "t.i8"), &ok) == -100 && ok, "i8");
    CHECK(slm_gguf_get_int(g, slm_gguf_find_key(g, "t.u16"), &ok) == 60000 && ok, "u16");
    CHECK(slm_gguf_get_int(g, slm_gguf_find_key(g, "t.i16"), &ok) == -30000 && ok, "i16");
    CHECK(slm_gguf_get_uint(g, slm_gguf_find_key(g, "t.u32"), &ok) == 4000000000u && ok, "u32");
    CHECK(slm_gguf_get_int(g, slm_gguf_find_key(g, "t.i32"), &ok) == -2000000000 && ok, "i32");
    CHECK(slm_gguf_get_float(g, slm_gguf_find_key(g, "t.f32"), &ok) == 1.5 && ok, "f32");
    CHECK(slm_gguf_get_int(g, slm_gguf_find_key(g, "t.bool"), &ok) == 1 && ok, "bool");
    CHECK(slm_gguf_get_uint(g, slm_gguf_find_key(g, "t.u64"), &ok) == 18000000000000000000u && ok,
          "u64");
    slm_gguf_get_int(g, slm_gguf_find_key(g, "t.u64"), &ok);
    CHECK(!ok, "u64 above INT64_MAX is not an int");
    CHECK(slm_gguf_get_int(g, slm_gguf_find_key(g, "t.i64"), &ok) == -9000000000000000000 && ok,
          "i64");
    slm_gguf_get_uint(g, slm_gguf_find_key(g, "t.i64"), &ok);
    CHECK(!ok, "negative is not a uint");
    CHECK(slm_gguf_get_float(g, slm_gguf_find_key(g, "t.f64"), &ok) == 3.25 && ok, "f64");
    size_t len;
    const char *s = slm_gguf_get_str(g, slm_gguf_find_key(g, "general.architecture"), &len);
    CHECK(s && len == 5 && memcmp(s, "llama", 5) == 0, "string");
    s = slm_gguf_get_str(g, slm_gguf_find_key(g, "t.empty"), &len);
    CHECK(s && len == 0, "empty string");
    int64_t k = slm_gguf_find_key(g, "t.arr.i32");
    const unsigned char *raw = slm_gguf_arr_data(g, k);   /* unaligned: memcpy */
    int32_t ia[5] = {0};
    if (raw) memcpy(ia, raw, sizeof ia);
    CHECK(slm_gguf_arr_type(g, k) == SLM_GGUF_INT32 && slm_gguf_arr_len(g, k) == 5 &&
          ia[1] == -2 && ia[4] == 5, "i32 array");
    k = slm_gguf_find_key(g, "t.arr.str");
    CHECK(slm_gguf_arr_type(g, k) == SLM_GGUF_STRING && slm_gguf_arr_len(g, k) == 4, "str array");
    s = slm_gguf_arr_str(g, k, 3, &len);
    CHECK(s && len == 6 && memcmp(s, "w\xc3\xb6rld", 6) == 0, "str array element 3");
    s = slm_gguf_arr_str(g, k, 1, &len);
    CHECK(s && len == 0, "empty element");
    CHECK(slm_gguf_arr_str(g, k, 4, &len) == NULL, "element past the end");
    k = slm_gguf_find_key(g, "t.arr.empty");
    CHECK(slm_gguf_arr_len(g, k) == 0 && slm_gguf_arr_type(g, k) == SLM_GGUF_UINT64, "empty arr");
    CHECK(slm_gguf_find_key(g, "nope") == -1, "absent key");
    CHECK(slm_gguf_n_tensors(g) == (int64_t)N_DTYPES + 1, "n_tensors");
    for (size_t d = 0; d < N_DTYPES; d++) {
        const slm_gguf_tensor_info *ti = slm_gguf_get_tensor_info(g, (int64_t)d);
        slm_tensor *t = slm_gguf_tensor(g, (int64_t)d, &err);
        CHECK(t && ti->dtype == all_dtypes[d] && ti->ndim == 2 &&
              ti->shape[0] == 3 && ti->shape[1] == tensors[d]->shape[1] &&
              ti->offset % 64 == 0 && ti->nbytes == slm_tensor_nbytes(tensors[d]) &&
              memcmp(slm_tensor_data(t), slm_tensor_data(tensors[d]), ti->nbytes) == 0,
              "tensor %s", slm_dtype_name(all_dtypes[d]));
        CHECK(slm_gguf_find_tensor(g, ti->name) == (int64_t)d, "find %s", ti->name);
        slm_tensor_free(t);
    }
    /* the transposed view: element (i, j) = original (j, i) */
    slm_tensor *t = slm_gguf_tensor(g, slm_gguf_find_tensor(g, "w.f32.T"), &err);
    const float *src = slm_tensor_data(tensors[0]);
    int good = t && t->shape[0] == 2 && t->shape[1] == 3;
    for (int i = 0; good && i < 2; i++)
        for (int j = 0; j < 3; j++)
            if (memcmp((const float *)slm_tensor_data(t) + i * 3 + j, src + j * 2 + i, 4) != 0)
                good = 0;
    CHECK(good, "transposed tensor written row-major");
    slm_gguf_close(g);
    /* the view outlives the file object */
    CHECK(t && memcmp((const float *)slm_tensor_data(t) + 1, src + 2, 4) == 0, "view after close");
    slm_tensor_free(t);
done:
    for (size_t d = 0; d < N_DTYPES; d++) slm_tensor_free(tensors[d]);
}

/* Every proper prefix that cuts into the header or tensor data fails with
 * EFORMAT and a message naming the file. */
static void test_truncation(const char *path)
{
    size_t n;
    char *buf = read_file(path, &n);
    slm_error err;
    slm_gguf *g = slm_gguf_open(path, &err);
    if (!buf || !g) {
        CHECK(0, "truncation setup");
        free(buf);
        slm_gguf_close(g);
        return;
    }
    int64_t last = slm_gguf_n_tensors(g) - 1;
    size_t end = slm_gguf_data_offset(g) + slm_gguf_get_tensor_info(g, last)->offset +
                 slm_gguf_get_tensor_info(g, last)->nbytes;
    slm_gguf_close(g);
    char cut[96];
    snprintf(cut, sizeof cut, "%s/cut.gguf", tmpdir);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(cut, buf, len);
        g = slm_gguf_open(cut, &err);
        int want_ok = len >= end;
        if ((g != NULL) != want_ok || (!g && (err.code != SLM_EFORMAT ||
                                             strncmp(err.msg, cut, strlen(cut)) != 0))) {
            if (bad++ < 3) printf("prefix %zu: %s\n", len, g ? "opened" : err.msg);
        }
        slm_gguf_close(g);
    }
    CHECK(bad == 0, "%d of %zu truncations misbehaved", bad, n);
    free(buf);
}

/* Random byte changes in the header: open either succeeds or fails with a
 * message, and every view it hands out lies inside the file. */
static void test_corruption(const char *path)
{
    size_t n;
    char *buf = read_file(path, &n);
    slm_error err;
    slm_gguf *g = slm_gguf_open(path, &err);
    size_t hdr = g ? slm_gguf_data_offset(g) : 0;
    slm_gguf_close(g);
    char bad_path[96];
    snprintf(bad_path, sizeof bad_path, "%s/bad.gguf", tmpdir);
    unsigned seed = 12345;
    int failures = 0, opened = 0, bad = 0;
    for (int it = 0; buf && hdr && it < 3000; it++) {
        char *c = malloc(n);
        memcpy(c, buf, n);
        int flips = 1 + it % 4;
        for (int f = 0; f < flips; f++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % hdr;
            seed = seed * 1103515245u + 12345u;
            c[at] = (it & 1) ? (char)(seed >> 16) : (char)(c[at] ^ (1 << ((seed >> 16) & 7)));
        }
        write_bytes(bad_path, c, n);
        free(c);
        g = slm_gguf_open(bad_path, &err);
        if (!g) {
            failures++;
            if (err.msg[0] == '\0') bad++;
            continue;
        }
        opened++;
        for (int64_t i = 0; i < slm_gguf_n_tensors(g); i++) {
            slm_tensor *t = slm_gguf_tensor(g, i, &err);
            if (!t || t->offset + slm_tensor_nbytes(t) > n) bad++;
            slm_tensor_free(t);
        }
        for (int64_t i = 0; i < slm_gguf_n_kv(g); i++)
            for (uint64_t j = 0; slm_gguf_arr_type(g, i) == SLM_GGUF_STRING &&
                                 j < slm_gguf_arr_len(g, i); j++) {
                size_t len;
                const char *s = slm_gguf_arr_str(g, i, j, &len);
                if (!s || (size_t)(s - (const char *)slm_gguf_storage(g)->data) + len > n) bad++;
            }
        slm_gguf_close(g);
    }
    printf("corruption: %d rejected, %d still valid\n", failures, opened);
    CHECK(bad == 0 && failures > 0, "corruption: %d bad outcomes", bad);
    free(buf);
}

static void expect_error(const char *path, const char *content, size_t n, slm_status code,
                         const char *msg)
{
    write_bytes(path, content, n);
    slm_error err;
    slm_gguf *g = slm_gguf_open(path, &err);
    char want[600];
    snprintf(want, sizeof want, "%s: %s", path, msg);
    CHECK(!g && err.code == code && strcmp(err.msg, want) == 0, "want '%s' got '%s'", want,
          g ? "success" : err.msg);
    slm_gguf_close(g);
}

static void test_messages(void)
{
    char p[96];
    snprintf(p, sizeof p, "%s/msg.gguf", tmpdir);
    expect_error(p, "GGML\3\0\0\0", 8, SLM_EFORMAT,
                 "not a GGUF file (magic bytes 47 47 4d 4c, expected 'GGUF')");
    expect_error(p, "GGUF\1\0\0\0", 8, SLM_EUNSUPPORTED,
                 "version: GGUF version 1 is not supported (only 2 and 3)");
    expect_error(p, "GGUF\3\0\0\0\0\0", 10, SLM_EFORMAT,
                 "n_tensors: truncated: needs 8 bytes at offset 8, the file has 10 bytes");
    /* n_kv = 2^40 in a 24-byte file */
    expect_error(p, "GGUF\3\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\1\0\0", 24, SLM_EFORMAT,
                 "n_kv: 1099511627776 key-values cannot fit in the 0 bytes left in the file");
    slm_error err;
    CHECK(!slm_gguf_open("/nonexistent/x.gguf", &err) && err.code == SLM_EIO &&
          strcmp(err.msg, "/nonexistent/x.gguf: No such file or directory") == 0, "%s", err.msg);
}

static int ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void test_fixture_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        printf("skip: fixture directory %s not found (set SLM_FIXTURES)\n", dir);
        return;
    }
    struct dirent *e;
    int files = 0;
    while ((e = readdir(d))) {
        if (!ends_with(e->d_name, ".gguf")) continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        slm_error err;
        slm_gguf *g = slm_gguf_open(path, &err);
        CHECK(g != NULL, "%s", err.msg);
        if (!g) continue;
        files++;
        size_t len;
        const char *arch = slm_gguf_get_str(g, slm_gguf_find_key(g, "general.architecture"), &len);
        CHECK(arch && len > 0, "%s: general.architecture", path);
        int64_t tok = slm_gguf_find_key(g, "tokenizer.ggml.tokens");
        CHECK(tok >= 0 && slm_gguf_arr_type(g, tok) == SLM_GGUF_STRING &&
              slm_gguf_arr_len(g, tok) > 0, "%s: tokens", path);
        int good = 1;
        for (int64_t i = 0; i < slm_gguf_n_tensors(g); i++) {
            slm_tensor *t = slm_gguf_tensor(g, i, &err);
            if (!t) good = 0;
            slm_tensor_free(t);
        }
        CHECK(good, "%s: tensor views", path);
        if (strstr(e->d_name, "dense-") == e->d_name) {
            CHECK(len == 5 && memcmp(arch, "llama", 5) == 0 && slm_gguf_arr_len(g, tok) == 512,
                  "%s: llama with 512 tokens", path);
        }
        slm_gguf_close(g);
    }
    closedir(d);
    printf("%s: %d files\n", dir, files);
}

/* Truncations and random corruptions of a small valid safetensors file:
 * open fails with a message naming the file, or every view it gives lies
 * inside the file. */
static void test_safetensors_hostile(void)
{
    static const char header[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"F16\",\"shape\":[3],\"data_offsets\":[16,22]},"
        "\"c\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[22,24]}}";
    size_t hlen = sizeof header - 1, n = 8 + hlen + 24;
    char *buf = calloc(1, n);
    for (int i = 0; i < 8; i++) buf[i] = (char)((uint64_t)hlen >> (8 * i));
    memcpy(buf + 8, header, hlen);
    char path[96];
    snprintf(path, sizeof path, "%s/st.safetensors", tmpdir);
    write_bytes(path, buf, n);
    slm_error err;
    slm_safetensors *f = slm_safetensors_open(path, &err);
    CHECK(f && slm_safetensors_n_tensors(f) == 3 && slm_safetensors_n_meta(f) == 1,
          "valid safetensors: %s", f ? "counts" : err.msg);
    slm_safetensors_close(f);
    int bad = 0;
    for (size_t len = 0; len < n; len++) {
        write_bytes(path, buf, len);
        f = slm_safetensors_open(path, &err);
        if (f || strncmp(err.msg, path, strlen(path)) != 0) bad++;
        slm_safetensors_close(f);
    }
    CHECK(bad == 0, "%d safetensors truncations misbehaved", bad);
    unsigned seed = 777;
    int rejected = 0, opened = 0;
    bad = 0;
    char *c = malloc(n);
    for (int it = 0; it < 3000; it++) {
        memcpy(c, buf, n);
        for (int k = 0; k < 1 + it % 3; k++) {
            seed = seed * 1103515245u + 12345u;
            size_t at = (seed >> 8) % (8 + hlen);
            seed = seed * 1103515245u + 12345u;
            /* digits, quotes and brackets make the damage reach the fields */
            static const char alphabet[] = "0123456789\"[]{},:-. eE";
            c[at] = (it & 1) ? alphabet[(seed >> 16) % (sizeof alphabet - 1)] : (char)(seed >> 16);
        }
        write_bytes(path, c, n);
        f = slm_safetensors_open(path, &err);
        if (!f) {
            rejected++;
            if (strncmp(err.msg, path, strlen(path)) != 0) bad++;
            continue;
        }
        opened++;
        for (int64_t i = 0; i < slm_safetensors_n_tensors(f); i++) {
            const slm_st_tensor_info *ti = slm_safetensors_tensor_info(f, i);
            if (slm_safetensors_data_offset(f) + ti->offset + ti->nbytes > n) bad++;
            slm_tensor *t = slm_safetensors_tensor(f, i, &err);
            slm_tensor_free(t);
        }
        slm_safetensors_close(f);
    }
    printf("safetensors corruption: %d rejected, %d still valid\n", rejected, opened);
    CHECK(bad == 0 && rejected > 0 && opened > 0, "safetensors corruption: %d bad outcomes", bad);
    free(c);
    free(buf);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/slm-gguf-XXXXXX");
    if (!mkdtemp(tmpdir)) {
        printf("cannot make a temp dir\n0 passed, 1 failed\n");
        return 1;
    }
    char path[96];
    snprintf(path, sizeof path, "%s/sample.gguf", tmpdir);
    test_round_trip(path);
    test_truncation(path);
    test_corruption(path);
    test_messages();
    test_safetensors_hostile();
    const char *fx = getenv("SLM_FIXTURES");
    char dir[512];
    snprintf(dir, sizeof dir, "%s/gguf", fx ? fx : "../shared/fixtures");
    test_fixture_dir(dir);
    snprintf(dir, sizeof dir, "%s/vocab", fx ? fx : "../shared/fixtures");
    test_fixture_dir(dir);
    char cmd[160];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
