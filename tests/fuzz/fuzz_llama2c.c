/* Fuzz target: the llama2.c checkpoint reader (csrc/formats/llama2c.c) and
 * the llama2.c tokenizer.bin loader (csrc/tokenizer/tokload.c), which take
 * the same kind of input: a little-endian binary without a magic.
 *
 * As a checkpoint: when it opens, every tensor view must lie inside the
 * file, and the first and last rows are read as f32. As a tokenizer: when
 * it loads, a fixed text is encoded and every id must be in range. */
#include "formats/llama2c.h"
#include "fuzz.h"
#include "tokenizer/tokenizer.h"

static void check_checkpoint(const char *path, size_t size)
{
    slm_error err;
    slm_llama2c *m = slm_llama2c_open(path, &err);
    if (!m) {
        FUZZ_CHECK(err.code != SLM_OK && err.msg[0], "open failed without a message");
        return;
    }
    const slm_llama2c_config *c = slm_llama2c_config_get(m);
    FUZZ_CHECK(c->dim > 0 && c->vocab_size > 0 && c->n_layers > 0, "config accepted with a size <= 0");
    for (int i = 0; i < slm_llama2c_n_tensors(m); i++) {
        FUZZ_CHECK(slm_llama2c_tensor_name(m, i) != NULL, "tensor %d has no name", i);
        slm_tensor *t = slm_llama2c_tensor(m, i, &err);
        FUZZ_CHECK(t != NULL, "tensor %d of an opened file: %s", i, err.msg);
        FUZZ_CHECK(t->storage->size == size &&
                   fuzz_inside(t->storage->data, size, slm_tensor_data(t), slm_tensor_nbytes(t)),
                   "tensor '%s' outside the file", slm_llama2c_tensor_name(m, i));
        fuzz_tensor_rows(t);
        slm_tensor_free(t);
    }
    slm_llama2c_close(m);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    check_checkpoint(path, size);
    fuzz_tokenizer(slm_tok_load_llama2c, path);
    return 0;
}
