/* Tokenizers: text <-> token ids.
 *
 * One object, slm_tok, covers the vocabularies small models ship with:
 *   - SentencePiece-style BPE (GGUF tokenizer.ggml.model = "llama", llama2.c
 *     tokenizer.bin): score-ordered merging of adjacent pieces, "▁" for
 *     spaces, a dummy prefix space, byte fallback to <0xNN> tokens;
 *   - byte-level BPE (GGUF "gpt2", Hugging Face tokenizer.json "BPE"): the
 *     GPT-2 byte<->character mapping, merges ordered by rank, pre-tokenizer
 *     regexes run with PCRE2 (JIT, UTF + UCP);
 *   - RWKV "world" vocabularies (GGUF "rwkv"): greedy longest match on bytes;
 *   - WordPiece (GGUF "bert"): BERT's normalizer and word splitting, then
 *     greedy longest match per word (wordpiece.c).
 * Behaviour follows the reference implementations: llama.cpp's
 * llama-vocab.cpp / unicode.cpp for GGUF files, Hugging Face tokenizers for
 * tokenizer.json.
 *
 * Invalid UTF-8 in the input is handled by one deterministic rule: a byte
 * that does not start a complete, valid UTF-8 sequence is a character of its
 * own that no pre-tokenizer regex and no normalizer matches, and it is
 * encoded through the byte tokens (GPT-2 byte characters or <0xNN>). So
 * encode never fails on any byte string, and decode(encode(s)) == s whenever
 * the vocabulary has a token for every byte that decodes to that byte
 * (deepseek-coder's token for 0xC0 is the user-defined "\u00c0", which
 * decodes as its text) and no normalizer changes s; with SentencePiece,
 * also when s has no "▁" (it comes back as a space) and no user-defined
 * token text (the text after one gets the dummy-prefix space), both as in
 * the references. WordPiece has no byte tokens: it drops such bytes, as the
 * reference does.
 *
 * An slm_tok is immutable after loading: encode/decode may run concurrently
 * from several threads on one object. */
#ifndef SLM_TOKENIZER_H
#define SLM_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"

typedef struct slm_tok slm_tok;

typedef enum slm_tok_kind {
    SLM_TOK_SPM = 0,   /* SentencePiece-style BPE ordered by scores */
    SLM_TOK_BPE,       /* BPE ordered by merge ranks (byte-level or not) */
    SLM_TOK_RWKV,      /* greedy longest match over a byte trie */
    SLM_TOK_WPM        /* WordPiece: BERT's normalizer, greedy per word */
} slm_tok_kind;

/* Special ids; -1 when the vocabulary has none. CLS and MASK are BERT's
 * [CLS] (what a WordPiece encode puts first) and [MASK]. */
typedef enum slm_tok_special {
    SLM_TOK_BOS = 0, SLM_TOK_EOS, SLM_TOK_UNK, SLM_TOK_PAD, SLM_TOK_EOT,
    SLM_TOK_EOM, SLM_TOK_SEP, SLM_TOK_NL, SLM_TOK_CLS, SLM_TOK_MASK, SLM_TOK_N_SPECIAL
} slm_tok_special;

/* Token attributes (bit set), as llama.cpp derives them from token types. */
enum {
    SLM_TOKATTR_NORMAL = 1 << 0,
    SLM_TOKATTR_UNKNOWN = 1 << 1,
    SLM_TOKATTR_CONTROL = 1 << 2,
    SLM_TOKATTR_USER = 1 << 3,     /* user-defined: always split out of text */
    SLM_TOKATTR_UNUSED = 1 << 4,
    SLM_TOKATTR_BYTE = 1 << 5,
    SLM_TOKATTR_LSTRIP = 1 << 6,   /* eats whitespace on its left */
    SLM_TOKATTR_RSTRIP = 1 << 7    /* eats whitespace on its right */
};

/* A growable id array owned by the caller (free with slm_tok_ids_free). */
typedef struct slm_tok_ids {
    int32_t *v;
    size_t n, cap;
} slm_tok_ids;

void slm_tok_ids_free(slm_tok_ids *ids);
slm_status slm_tok_ids_push(slm_tok_ids *ids, int32_t id, slm_error *err);

/* Loads a tokenizer from a GGUF file (tokenizer.ggml.*), a Hugging Face
 * tokenizer.json, a SentencePiece tokenizer.model (BPE) or a llama2.c
 * tokenizer.bin, recognized by content. NULL on failure with a message naming
 * the file and the problem. */
slm_tok *slm_tok_load(const char *path, slm_error *err);
slm_tok *slm_tok_load_gguf(const char *path, slm_error *err);
slm_tok *slm_tok_load_json(const char *path, slm_error *err);
slm_tok *slm_tok_load_spm_model(const char *path, slm_error *err);
slm_tok *slm_tok_load_llama2c(const char *path, slm_error *err);
/* A 256-token vocabulary where token i is byte i (tiny RWKV models). */
slm_tok *slm_tok_new_bytes(slm_error *err);
void slm_tok_free(slm_tok *t);

slm_tok_kind slm_tok_get_kind(const slm_tok *t);
int32_t slm_tok_n_vocab(const slm_tok *t);
int32_t slm_tok_special_id(const slm_tok *t, slm_tok_special which);
/* Whether encode adds BOS / EOS when asked to add special tokens. */
int slm_tok_adds_bos(const slm_tok *t);
int slm_tok_adds_eos(const slm_tok *t);
/* "llama", "gpt2", "rwkv", "json-bpe", "bytes"... and the pre-tokenizer name */
const char *slm_tok_model_name(const slm_tok *t);
const char *slm_tok_pre_name(const slm_tok *t);
int slm_tok_attr(const slm_tok *t, int32_t id);   /* 0 if out of range */
/* True for end-of-generation ids (eos, eot, eom and <|im_end|>-like). */
int slm_tok_is_eog(const slm_tok *t, int32_t id);

/* Vocabulary text of a token as stored ("▁Hello", "Ġworld", "<0x0A>"). */
const char *slm_tok_text(const slm_tok *t, int32_t id, size_t *len);
/* Id of an exact vocabulary text, or -1. */
int32_t slm_tok_find(const slm_tok *t, const char *text, size_t len);

/* Appends the ids of text[0..len) to out. add_special adds BOS/EOS as the
 * vocabulary asks (WordPiece: [CLS] ... [SEP], the file's cls and
 * separator ids, else its bos and eos); parse_special turns special-token text ("<s>",
 * "<|eot_id|>") into those ids (user-defined tokens are always split out,
 * as the references do). Fails only on memory. */
slm_status slm_tok_encode(const slm_tok *t, const char *text, size_t len,
                          int add_special, int parse_special,
                          slm_tok_ids *out, slm_error *err);

/* Encodes n texts on up to nthreads threads (<= 0: one per core); out[i]
 * receives the ids of texts[i]. The same result as n calls of encode. */
slm_status slm_tok_encode_batch(const slm_tok *t, const char *const *texts,
                                const size_t *lens, size_t n, int add_special,
                                int parse_special, int nthreads,
                                slm_tok_ids *out, slm_error *err);

/* Bytes a token stands for when decoding: "▁Hello" -> " Hello", "<0x0A>" ->
 * "\n", GPT-2 characters -> their bytes. Control/unknown tokens give their
 * text only when special is true, otherwise nothing. Writes at most cap bytes
 * and returns the full length (call again with a larger buffer if needed).
 * Returns -1 for an id out of range. */
long slm_tok_piece(const slm_tok *t, int32_t id, int special, char *buf,
                   size_t cap);

/* Decodes ids into a malloc'ed byte string (*out, *out_len; NUL-terminated).
 * special: render control tokens' text. The single leading space that the
 * SentencePiece dummy prefix introduced is removed from the first token.
 * WordPiece: a "▁" piece starts a word (a space), the others continue it;
 * then spaces before . , ! ? and in contractions go as Hugging Face's
 * clean_up_tokenization removes them ("hello , world !" -> "hello, world!";
 * the streaming decoder below does not do this clean-up).
 * An id out of range is SLM_ERANGE. */
slm_status slm_tok_decode(const slm_tok *t, const int32_t *ids, size_t n,
                          int special, char **out, size_t *out_len,
                          slm_error *err);

/* The pieces the pre-tokenizer of a GGUF tokenizer.ggml.pre name cuts
 * text[0..n) into before BPE: piece i is text[offs[2i]..offs[2i] + offs[2i+1]).
 * At most cap pieces (n suffice: pieces are never empty); SLM_EUNSUPPORTED
 * for an unknown name. */
slm_status slm_pretok_split(const char *pre, const char *text, size_t n,
                            size_t *offs, size_t cap, size_t *count, slm_error *err);
/* The tokenizer.ggml.pre names of set i, as "|name|name|...|" (the names
 * that share one regex sequence), or NULL past the last set. */
const char *slm_pretok_names(size_t i);

/* Incremental decoder for streaming: add one id, receive the bytes that now
 * form complete UTF-8 characters. Bytes that can never become valid UTF-8 are
 * replaced by U+FFFD; flush returns what is left (an incomplete tail becomes
 * U+FFFD). */
typedef struct slm_tok_stream slm_tok_stream;
slm_tok_stream *slm_tok_stream_new(const slm_tok *t, int special,
                                   slm_error *err);
void slm_tok_stream_free(slm_tok_stream *s);
/* On success *out points to an internal buffer valid until the next call. */
slm_status slm_tok_stream_add(slm_tok_stream *s, int32_t id,
                              const char **out, size_t *out_len,
                              slm_error *err);
slm_status slm_tok_stream_flush(slm_tok_stream *s, const char **out,
                                size_t *out_len, slm_error *err);

/* Learns a byte-level BPE vocabulary from text files (see train.c) and saves
 * it as tokenizer.json (json_path) and/or GGUF tokenizer metadata
 * (gguf_path); load either back with slm_tok_load. pre names the
 * pre-tokenizer regex: "gpt-2", "llama-bpe" or "qwen2". vocab_size counts the
 * 256 byte tokens, the merges and the specials (appended last, as control
 * tokens; the first special also becomes bos/eos in GGUF). Training stops
 * early when no pair occurs min_frequency (default 2) times. */
typedef struct slm_tok_train_opts {
    const char *const *files;
    int nfiles;
    int vocab_size;
    const char *pre;
    const char *const *specials;
    int nspecials;
    int min_frequency;
    const char *json_path, *gguf_path;
} slm_tok_train_opts;

slm_status slm_tok_train(const slm_tok_train_opts *o, slm_error *err);

#endif
