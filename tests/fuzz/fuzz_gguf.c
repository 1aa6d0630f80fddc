/* Fuzz target: the GGUF reader (csrc/formats/gguf.c) and the tokenizer it
 * feeds (csrc/tokenizer/tokgguf.c).
 *
 * Input: a GGUF file. When slm_gguf_open accepts it, every accessor is
 * called and must stay inside the mapping: keys and strings, every element
 * of every array, each tensor's bytes (a view or a copy, first and last
 * row converted to f32). Then the file is loaded as a tokenizer; when that
 * works, a fixed text is encoded and decoded and every id must be in range. */
#include <string.h>

#include "formats/gguf.h"
#include "fuzz.h"
#include "tokenizer/tokenizer.h"

static void check_kvs(const slm_gguf *g, const slm_storage *map)
{
    const unsigned char *base = map->data;
    for (int64_t i = 0; i < slm_gguf_n_kv(g); i++) {
        const char *k = slm_gguf_key(g, i);
        FUZZ_CHECK(k != NULL, "key %lld is NULL", (long long)i);
        FUZZ_CHECK(slm_gguf_find_key(g, k) == i, "find_key('%s') is not %lld", k, (long long)i);
        slm_gguf_type t = slm_gguf_kv_type(g, i);
        int ok;
        (void)slm_gguf_get_int(g, i, &ok);
        (void)slm_gguf_get_uint(g, i, &ok);
        (void)slm_gguf_get_float(g, i, &ok);
        size_t len;
        const char *s = slm_gguf_get_str(g, i, &len);
        FUZZ_CHECK(!s || fuzz_inside(base, map->size, s, len), "string of key %lld outside the file",
                   (long long)i);
        if (t != SLM_GGUF_ARRAY) continue;
        slm_gguf_type et = slm_gguf_arr_type(g, i);
        uint64_t n = slm_gguf_arr_len(g, i);
        if (et == SLM_GGUF_STRING) {
            for (uint64_t j = 0; j < n; j++) {
                s = slm_gguf_arr_str(g, i, j, &len);
                FUZZ_CHECK(s && fuzz_inside(base, map->size, s, len),
                           "element %llu of key %lld outside the file", (unsigned long long)j,
                           (long long)i);
            }
        } else {
            const void *d = slm_gguf_arr_data(g, i);
            size_t esz = slm_gguf_type_size(et);
            FUZZ_CHECK(esz > 0 && d && n <= map->size / esz && fuzz_inside(base, map->size, d, n * esz),
                       "array of key %lld outside the file", (long long)i);
        }
    }
    FUZZ_CHECK(slm_gguf_find_key(g, "no such key \x01") < 0, "found a key that is not there");
}

static void check_tensors(const slm_gguf *g, const slm_storage *map)
{
    for (int64_t i = 0; i < slm_gguf_n_tensors(g); i++) {
        const slm_gguf_tensor_info *ti = slm_gguf_get_tensor_info(g, i);
        FUZZ_CHECK(ti && ti->name, "tensor %lld has no info", (long long)i);
        FUZZ_CHECK(slm_gguf_find_tensor(g, ti->name) == i, "find_tensor('%s') is not %lld", ti->name,
                   (long long)i);
        size_t at = slm_gguf_data_offset(g) + (size_t)ti->offset;
        FUZZ_CHECK(at >= ti->offset && fuzz_inside(map->data, map->size, map->data + at, ti->nbytes),
                   "tensor '%s' outside the file", ti->name);
        slm_error err;
        slm_tensor *t = slm_gguf_tensor(g, i, &err);
        if (!t) continue;   /* an error (with a message) is allowed */
        FUZZ_CHECK(slm_tensor_nbytes(t) == ti->nbytes, "tensor '%s': %zu bytes, info says %zu",
                   ti->name, slm_tensor_nbytes(t), ti->nbytes);
        if (t->storage == map)
            FUZZ_CHECK(fuzz_inside(map->data, map->size, slm_tensor_data(t), ti->nbytes),
                       "view of tensor '%s' outside the file", ti->name);
        fuzz_tensor_rows(t);
        slm_tensor_free(t);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    slm_error err;
    slm_gguf *g = slm_gguf_open(path, &err);
    if (!g) {
        FUZZ_CHECK(err.code != SLM_OK && err.msg[0], "open failed without a message");
        return 0;
    }
    const slm_storage *map = slm_gguf_storage(g);
    FUZZ_CHECK(map->size == size, "the mapping has %zu bytes, the input %zu", map->size, size);
    FUZZ_CHECK(slm_gguf_data_offset(g) <= size, "data offset past the end");
    check_kvs(g, map);
    check_tensors(g, map);
    slm_gguf_close(g);
    fuzz_tokenizer(slm_tok_load_gguf, path);
    return 0;
}
