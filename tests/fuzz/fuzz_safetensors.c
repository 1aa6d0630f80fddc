/* Fuzz target: the safetensors reader (csrc/formats/safetensors.c).
 *
 * Input: a safetensors file. When it opens, every tensor's info, name
 * lookup and view (or copy) is checked against the file: bytes inside the
 * data section, the size the dtype and shape imply, the first and last
 * rows readable as f32; the metadata strings are read. */
#include <string.h>

#include "formats/safetensors.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    slm_error err;
    slm_safetensors *f = slm_safetensors_open(path, &err);
    if (!f) {
        FUZZ_CHECK(err.code != SLM_OK && err.msg[0], "open failed without a message");
        return 0;
    }
    size_t doff = slm_safetensors_data_offset(f);
    FUZZ_CHECK(doff >= 8 && doff <= size, "data offset %zu of %zu bytes", doff, size);
    for (int64_t i = 0; i < slm_safetensors_n_meta(f); i++) {
        const char *k = slm_safetensors_meta_key(f, i), *v = slm_safetensors_meta_value(f, i);
        FUZZ_CHECK(k && v, "metadata %lld is NULL", (long long)i);
        (void)strlen(k);
        (void)strlen(v);
    }
    for (int64_t i = 0; i < slm_safetensors_n_tensors(f); i++) {
        const slm_st_tensor_info *ti = slm_safetensors_tensor_info(f, i);
        FUZZ_CHECK(ti && ti->name && ti->dtype_name, "tensor %lld has no info", (long long)i);
        FUZZ_CHECK(ti->ndim >= 0 && ti->ndim <= SLM_MAX_DIMS, "tensor '%s': ndim %d", ti->name, ti->ndim);
        FUZZ_CHECK(ti->offset <= size - doff && ti->nbytes <= size - doff - ti->offset,
                   "tensor '%s' outside the data section", ti->name);
        int64_t j = slm_safetensors_find_tensor(f, ti->name);
        FUZZ_CHECK(j >= 0 && strcmp(slm_safetensors_tensor_info(f, j)->name, ti->name) == 0,
                   "find_tensor('%s') failed", ti->name);
        slm_tensor *t = slm_safetensors_tensor(f, i, &err);
        if (!t) continue;   /* unsupported dtypes and empty shapes are errors */
        FUZZ_CHECK(ti->supported, "tensor '%s' of dtype %s was viewed", ti->name, ti->dtype_name);
        FUZZ_CHECK(slm_tensor_nbytes(t) == ti->nbytes, "tensor '%s': %zu bytes, info says %zu",
                   ti->name, slm_tensor_nbytes(t), ti->nbytes);
        if (t->storage->readonly)
            FUZZ_CHECK(fuzz_inside(t->storage->data + doff, size - doff, slm_tensor_data(t), ti->nbytes),
                       "view of tensor '%s' outside the data section", ti->name);
        fuzz_tensor_rows(t);
        slm_tensor_free(t);
    }
    slm_safetensors_close(f);
    return 0;
}
