/* Token files: a corpus already encoded, as a flat array of token ids that
 * training reads windows from through a read-only memory mapping (the file
 * is never loaded whole, so a corpus larger than memory trains the same).
 *
 * Layout (all integers little-endian):
 *
 *   offset  size  field
 *        0     8  magic    "SLMTOKEN"
 *        8     4  version  u32, 1
 *       12     4  width    u32, bytes per id: 2 (u16) or 4 (u32); a writer
 *                          picks 2 when every id fits (vocab <= 65536)
 *       16     4  vocab    u32, vocabulary size, 1..2^31-1: every id < vocab
 *                          (ids become i32 tensor entries)
 *       20     4  reserved u32, 0
 *       24     8  count    u64, number of ids
 *       32     count * width bytes of ids
 *
 * Every header field is checked on open against the file size before any
 * pointer is made: the file must hold exactly 32 + count * width bytes, so a
 * hostile count can neither make a reader allocate nor read past the mapping.
 * A width of 2 with vocab > 65536 is refused (such ids could not be stored).
 * Ids themselves are checked (< vocab) as they are read, so a corrupt body is
 * an error naming the file and the index, never an out-of-range embedding
 * row later.
 *
 * Windows: a batch is B windows of T1 = T + 1 consecutive ids (inputs are the
 * first T, targets the last T); window b starting at id s fills row b of an
 * (B, T1) i32 array with ids[s .. s + T1). */
#ifndef SLM_TRAIN_TOKENS_H
#define SLM_TRAIN_TOKENS_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"
#include "../sampler/rng.h"

#define SLM_TOKENS_MAGIC "SLMTOKEN"
#define SLM_TOKENS_VERSION 1
#define SLM_TOKENS_HEADER 32

typedef struct slm_tokens slm_tokens;

/* Maps and checks a token file. NULL on failure with "PATH: ..." naming the
 * field that is wrong. */
slm_tokens *slm_tokens_open(const char *path, slm_error *err);
void slm_tokens_close(slm_tokens *t);   /* NULL is fine */

int64_t slm_tokens_count(const slm_tokens *t);
int32_t slm_tokens_vocab(const slm_tokens *t);
int slm_tokens_width(const slm_tokens *t);
const char *slm_tokens_path(const slm_tokens *t);

/* ids[start .. start + n) into out (0-based; the range must lie in the file). */
slm_status slm_tokens_read(const slm_tokens *t, int64_t start, int64_t n, int32_t *out,
                           slm_error *err);
/* B windows of T1 ids: row b of out (B x T1, row-major) = ids[starts[b] ..
 * starts[b] + T1). Every window must lie in the file. */
slm_status slm_tokens_fill(const slm_tokens *t, const int64_t *starts, int64_t B, int64_t T1,
                           int32_t *out, slm_error *err);
/* B windows at uniform random starts in [lo, hi - T1] (windows inside the
 * id range [lo, hi), nanoGPT's `randint(len(data) - block_size)` over a
 * split), drawn in order from r; the starts go to starts_out when it is not
 * NULL. hi - lo must be at least T1. */
slm_status slm_tokens_sample(const slm_tokens *t, slm_rng *r, int64_t lo, int64_t hi,
                             int64_t B, int64_t T1, int32_t *out, int64_t *starts_out,
                             slm_error *err);
/* Uniform integer in [0, n), n >= 1, without modulo bias: the draws below
 * 2^64 mod n are rejected (fewer than one in 2^32 for n < 2^32). */
uint64_t slm_tokens_uniform(slm_rng *r, uint64_t n);

/* Streaming writer: ids are appended in chunks to PATH.tmp, which finish
 * renames to path once the count is in the header; abort (or a failed
 * finish) removes it, so path is either the old file or a complete new one. */
typedef struct slm_tokens_writer slm_tokens_writer;

/* vocab in 1..2^31-1 sets the width (u16 when vocab <= 65536). */
slm_tokens_writer *slm_tokens_writer_open(const char *path, int64_t vocab, slm_error *err);
/* Appends n ids; an id outside [0, vocab) is an error naming it (nothing of
 * the chunk is written then). */
slm_status slm_tokens_writer_append(slm_tokens_writer *w, const int32_t *ids, size_t n,
                                    slm_error *err);
int64_t slm_tokens_writer_count(const slm_tokens_writer *w);
/* Completes the file and frees w (also on failure). */
slm_status slm_tokens_writer_finish(slm_tokens_writer *w, slm_error *err);
/* Removes the partial file and frees w; NULL is fine. */
void slm_tokens_writer_abort(slm_tokens_writer *w);

#endif
