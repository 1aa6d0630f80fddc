/* Fuzz target: SentencePiece tokenizer.model loading
 * (csrc/tokenizer/tokspm.c: a ModelProto read field by field).
 *
 * Input: a tokenizer.model. When it loads, fuzz_tokenizer's fixed text is
 * encoded four ways: ids in range, decode and streaming decode take them. */
#include "fuzz.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_tokenizer(slm_tok_load_spm_model, fuzz_file(data, size));
    return 0;
}
