/* Fuzz target: Hugging Face tokenizer.json loading (csrc/tokenizer/tokjson.c)
 * and its normalizer and pre-tokenizer steps (pretok.c).
 *
 * Input: a tokenizer.json. When it loads, a fixed text (spaces, digits,
 * special-token texts, accents, CJK, invalid UTF-8) is encoded with and
 * without special tokens; every id must be in range, decode and the
 * streaming decoder must take the ids. */
#include "fuzz.h"
#include "tokenizer/tokenizer.h"

static const char sample[] = "Hello  world! 123 4567 <s></s><|endoftext|><unk> \xe2\x96\x81x caf\xc3\xa9 "
                             "Ca\xcc\x81" "f \xef\xac\x81 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\n\t "
                             "don't I'm \xff\xc3";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *path = fuzz_file(data, size);
    slm_error err;
    slm_tok *tok = slm_tok_load_json(path, &err);
    if (!tok) {
        FUZZ_CHECK(err.code != SLM_OK && err.msg[0], "load failed without a message");
        return 0;
    }
    fuzz_encode_sample(tok, sample, sizeof sample - 1);
    slm_tok_free(tok);
    return 0;
}
