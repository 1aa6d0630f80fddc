/* llama2.c checkpoints (Karpathy's run.c format), read through a mapping.
 *
 * Legacy layout (version 0), all little-endian:
 *   int32 dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
 *   (vocab_size < 0 means the classifier is not shared with the embedding)
 *   float32 token_embedding (vocab, dim)
 *   rms_att (L, dim) | wq (L, dim, dim) | wk (L, kv_dim, dim) | wv (L, kv_dim, dim)
 *   wo (L, dim, dim) | rms_ffn (L, dim) | w1 (L, hidden, dim) | w2 (L, dim, hidden)
 *   w3 (L, hidden, dim) | rms_final (dim) | freq_cis_real, freq_cis_imag
 *   (seq_len, head_size/2 each, unused: RoPE is recomputed) | wcls (vocab, dim)
 *   if unshared.
 * Matrices are (out, in) row-major, the same orientation as GGUF weights, so
 * each becomes a zero-copy view named as in GGUF (blk.N.attn_q.weight, ...).
 * RoPE in run.c rotates adjacent pairs with base 10000 (the "normal" layout). */
#ifndef SLM_LLAMA2C_H
#define SLM_LLAMA2C_H

#include "../core/status.h"
#include "../core/tensor.h"

typedef struct slm_llama2c_config {
    int dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len;
    int shared_classifier;
} slm_llama2c_config;

typedef struct slm_llama2c slm_llama2c;

slm_llama2c *slm_llama2c_open(const char *path, slm_error *err);
void slm_llama2c_close(slm_llama2c *m);   /* views stay valid */

const slm_llama2c_config *slm_llama2c_config_get(const slm_llama2c *m);
int slm_llama2c_n_tensors(const slm_llama2c *m);
const char *slm_llama2c_tensor_name(const slm_llama2c *m, int i);
/* New view of tensor i (caller frees). */
slm_tensor *slm_llama2c_tensor(const slm_llama2c *m, int i, slm_error *err);

#endif
