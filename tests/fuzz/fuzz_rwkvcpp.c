/* Fuzz target: the rwkv.cpp file reader (csrc/formats/rwkvcpp.c).
 *
 * Input: an rwkv.cpp model file. When it opens, every parameter is found
 * by name and viewed; its bytes must lie inside the reader's copy, and the
 * first and last rows are converted to f32. */
#include <string.h>

#include "formats/rwkvcpp.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    slm_error err;
    slm_rwkvcpp *f = slm_rwkvcpp_open(path, &err);
    if (!f) {
        FUZZ_CHECK(err.code != SLM_OK && err.msg[0], "open failed without a message");
        return 0;
    }
    const slm_rwkvcpp_header *h = slm_rwkvcpp_header_get(f);
    FUZZ_CHECK(h->n_vocab > 0 && h->n_embed > 0 && h->n_layer > 0, "header accepted with a size <= 0");
    size_t total = 0;
    for (int i = 0; i < slm_rwkvcpp_n_tensors(f); i++) {
        const char *name = slm_rwkvcpp_tensor_name(f, i);
        FUZZ_CHECK(name != NULL, "parameter %d has no name", i);
        int j = slm_rwkvcpp_find(f, name);
        FUZZ_CHECK(j >= 0 && j <= i, "find('%s') gave %d for parameter %d", name, j, i);
        slm_tensor *t = slm_rwkvcpp_tensor(f, i, &err);
        FUZZ_CHECK(t != NULL, "parameter '%s' of an opened file: %s", name, err.msg);
        size_t nb = slm_tensor_nbytes(t);
        total += nb;
        FUZZ_CHECK(total <= size, "parameters hold %zu bytes, the file has %zu", total, size);
        FUZZ_CHECK(fuzz_inside(t->storage->data, t->storage->size, slm_tensor_data(t), nb),
                   "parameter '%s' outside its storage", name);
        fuzz_tensor_rows(t);
        slm_tensor_free(t);
    }
    slm_rwkvcpp_close(f);
    return 0;
}
