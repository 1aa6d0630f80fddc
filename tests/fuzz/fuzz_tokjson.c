/* Fuzz target: Hugging Face tokenizer.json loading (csrc/tokenizer/tokjson.c)
 * and its normalizer and pre-tokenizer steps (pretok.c).
 *
 * Input: a tokenizer.json. When it loads, fuzz_tokenizer's fixed text
 * (spaces, digits, special-token texts, accents, CJK, invalid UTF-8) is
 * encoded with and without special tokens; every id must be in range,
 * decode and the streaming decoder must take the ids. */
#include "fuzz.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_tokenizer(slm_tok_load_json, fuzz_file(data, size));
    return 0;
}
