/* Helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c).
 *
 * Each target defines LLVMFuzzerTestOneInput. The same file links two ways:
 *   - with clang -fsanitize=fuzzer,address,undefined into build-fuzz/fuzz/
 *     (make fuzz: libFuzzer drives it);
 *   - with replay.c's main() into $(BUILD)/tests/test_fuzz_NAME (make test,
 *     any C compiler): every input of tests/fuzz/regress/NAME/ once.
 * A target reports a broken property (a pointer outside the file, an id out
 * of range, an undocumented Lua error...) through fuzz_fail, which aborts:
 * libFuzzer and the replay both count that as a crash. */
#ifndef SLM_FUZZ_H
#define SLM_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Prints "fuzz: " + the message and aborts. */
void fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
#define FUZZ_CHECK(cond, ...) ((cond) ? (void)0 : fuzz_fail(__VA_ARGS__))

/* The readers take paths: the input as an in-memory file (one memfd per
 * process, rewritten each call), named "/proc/self/fd/N". */
const char *fuzz_file(const uint8_t *data, size_t size);

/* Whether [p, p + n) lies inside [base, base + size). */
int fuzz_inside(const void *base, size_t size, const void *p, size_t n);

/* $SLM_FIXTURES, else ../shared/fixtures; NULL (after saying so on stderr,
 * once) when that directory does not exist. */
const char *fuzz_fixtures(void);

/* Reads the first and last rows of t as f32 (through the dequantizers)
 * when a row has at most 4096 elements; errors are allowed. */
struct slm_tensor;
void fuzz_tensor_rows(const struct slm_tensor *t);

/* Loads the tokenizer file at path with load; when it loads, encodes a
 * fixed text (spaces, digits, special-token texts, "▁", accents, CJK, an
 * emoji, invalid UTF-8) with each combination of add_special and
 * parse_special, checks that every id is in range and that decode and the
 * streaming decoder take the ids. A failed load must say why. */
struct slm_tok;
struct slm_error;
void fuzz_tokenizer(struct slm_tok *(*load)(const char *path, struct slm_error *err), const char *path);

/* A scratch directory (mkdtemp under $TMPDIR or /tmp), removed at exit with
 * the files the target put there. */
const char *fuzz_tmpdir(void);

#endif
