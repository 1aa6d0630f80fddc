/* Elementwise and row-wise float32 operations of a transformer forward pass.
 *
 * All take contiguous float rows; out may equal the input (in place) unless
 * stated. A "row" is the last dimension of a tensor (n elements). These are
 * memory-bound and cheap next to the matmuls, so they run on the calling
 * thread. Formulas follow the reference implementation's (ggml) ops. */
#ifndef SLM_OPS_H
#define SLM_OPS_H

#include <stdint.h>

#include "../core/fp16.h"

/* out[i] = a[i] + b[i % nb] for i < na: nb == na is elementwise, nb == the
 * row length broadcasts a row vector over the rows (na % nb == 0). */
void slm_ops_add(float *out, const float *a, int64_t na, const float *b, int64_t nb);
/* out[i] = a[i] * b[i % nb], same broadcasting */
void slm_ops_mul(float *out, const float *a, int64_t na, const float *b, int64_t nb);
/* out[i] = a[i] * s */
void slm_ops_scale(float *out, const float *a, int64_t n, float s);

/* RMSNorm per row (ggml_rms_norm then a multiply by the weight):
 *   out = x / sqrt(mean(x^2) + eps) * w        (w NULL: no weight)
 * x, out: (rows, n); w: (n). The mean is accumulated in double. */
void slm_ops_rmsnorm(float *out, const float *x, const float *w, int64_t rows,
                     int64_t n, float eps);
/* LayerNorm per row (ggml_norm, then * w + b):
 *   out = (x - mean(x)) / sqrt(var(x) + eps) * w + b    (w, b may be NULL)
 * var is the biased variance mean((x - mean)^2). */
void slm_ops_layernorm(float *out, const float *x, const float *w, const float *b,
                       int64_t rows, int64_t n, float eps);

/* Pooling and normalization of embeddings (the reference's mean pooling and
 * its embeddings' L2 normalization, common_embd_normalize with norm 2):
 *   mean_rows: out (n) = the mean of the rows of x (rows, n), summed in double
 *   l2norm: each row of x (rows, n) times 1 / its Euclidean length (the sum
 *   of squares in double); a row of zeros stays zeros. out may be x. */
void slm_ops_mean_rows(float *out, const float *x, int64_t rows, int64_t n);
void slm_ops_l2norm(float *out, const float *x, int64_t rows, int64_t n);

/* Softmax of each row in place, stable: exp(x - max) / sum. -inf entries
 * give 0 (masking); a row of only -inf gives zeros. */
void slm_ops_softmax(float *x, int64_t rows, int64_t n);

/* out[i] = a[i] + s * b[i], the product rounded to float before the sum (the
 * reference scales a branch, then adds it: granite's residual_scale) */
void slm_ops_add_scaled(float *out, const float *a, const float *b, float s, int64_t n);
/* Soft-capping (gemma2's attention logits and final logits):
 *   out = c * tanh(x / c),   c > 0 */
void slm_ops_softcap(float *out, const float *x, int64_t n, float c);

/* out = x * sigmoid(x) = x / (1 + exp(-x)) */
void slm_ops_silu(float *out, const float *x, int64_t n);
/* GELU, tanh approximation (ggml_gelu):
 *   0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) */
void slm_ops_gelu(float *out, const float *x, int64_t n);
/* GELU as the reference's CPU backend evaluates it: x rounded to f16 and
 * looked up in a table of the tanh formula rounded to f16 (0 below -10, x
 * above 10); what its GeGLU feed-forwards (gemma) compute */
void slm_ops_gelu_f16(float *out, const float *x, int64_t n);
/* that table (65536 f16 GELU values indexed by the f16 bits of x) */
const slm_f16 *slm_ops_gelu_table(void);
/* GELU, exact (ggml_gelu_erf): 0.5 x (1 + erf(x / sqrt(2))) */
void slm_ops_gelu_erf(float *out, const float *x, int64_t n);

/* Depthwise causal convolution over time with a rolling state, the conv of
 * Mamba's conv1d and of LFM2's short convolution (ggml_ssm_conv). For the
 * channels c0..c1-1 of n rows (rows of x and out step by ld_x, ld_out):
 *   out[t][c] = sum_k w[c][k] win_t[k],  k = 0..K-1,
 * win_t = (state[c][0..K-2], x[0..t][c]) ending at token t, so w[c][K-1]
 * (element K c + K - 1) weighs the current token; summed in float from the
 * oldest tap. state (channels, K - 1) is left holding each channel's last
 * K - 1 inputs, oldest first. 1 <= K <= SLM_OPS_MAX_CONV. */
#define SLM_OPS_MAX_CONV 64
void slm_ops_causal_conv(float *out, int64_t ld_out, const float *x, int64_t ld_x, int n,
                         float *state, const float *w, int64_t K, int64_t c0, int64_t c1);

/* Rotary position embedding (ggml_rope_ext with ext_factor 0: plain RoPE
 * with linear position scaling, frequency factors and an attention factor).
 *
 * x: (n_tok, n_heads, head_dim), rotated in place; pos[t] is the position of
 * token t. Only the first n_rot dims of each head rotate (n_rot even,
 * <= head_dim); the rest pass through. For pair index i < n_rot/2:
 *   theta_i = pos * freq_scale * freq_base^(-2i / n_rot) / ff_i
 * computed as the reference does, theta_0 = pos and theta_{i+1} = theta_i *
 * freq_base^(-2/n_rot) in float, then divided by ff_i (freq_factors[i], 1
 * without factors) and multiplied by freq_scale. The pair (x0, x1) becomes
 *   (x0 cos - x1 sin, x0 sin + x1 cos) with cos, sin times attn_factor
 * where the pair is (2i, 2i+1) in the "normal" layout (llama: adjacent
 * pairs) and (i, i + n_rot/2) in the NeoX layout (split halves).
 * Frequency factors are Llama 3's rope_freqs.weight and Phi-3/4's LongRoPE
 * rope_factors_long/short; the attention factor is LongRoPE's (sqrt(1 +
 * ln(ctx / original ctx) / ln(original ctx)), rope.scaling.attn_factor). */
typedef enum slm_rope_mode { SLM_ROPE_NORMAL = 0, SLM_ROPE_NEOX = 1 } slm_rope_mode;

typedef struct slm_rope_params {
    slm_rope_mode mode;
    int n_rot;            /* rotated dims per head (even, <= head_dim) */
    float freq_base;      /* 10000 for llama, 1e6 for qwen2 */
    float freq_scale;     /* 1 / linear scaling factor; 1 for none */
    const float *freq_factors;  /* n_rot/2 divisors of the angles, or NULL */
    float attn_factor;    /* multiplies cos and sin; 0 stands for 1 (none) */
} slm_rope_params;

void slm_ops_rope(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim,
                  const int64_t *pos, const slm_rope_params *p);

/* AVX2 twins (ops_avx2.c) of the ops above whose scalar loops are bound by
 * libm calls; the public functions pick them at run time like the dot
 * products (slm_kernels_use_avx2). */
#if defined(__x86_64__)
void slm_ops_silu_avx2(float *out, const float *x, int64_t n);
void slm_ops_gelu_avx2(float *out, const float *x, int64_t n);
void slm_ops_gelu_f16_avx2(float *out, const float *x, int64_t n, const slm_f16 *table);
void slm_ops_softmax_avx2(float *x, int64_t rows, int64_t n);
void slm_ops_rmsnorm_avx2(float *out, const float *x, const float *w, int64_t rows,
                          int64_t n, float eps);
/* AVX-512 (ops_avx512.c): LayerNorm with its sums in 16 double lanes */
void slm_ops_layernorm_avx512(float *out, const float *x, const float *w, const float *b,
                              int64_t rows, int64_t n, float eps);
#endif

#endif
