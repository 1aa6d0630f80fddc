/* Key/value cache and scaled dot-product attention over it.
 *
 * The cache keeps, per layer, the keys and values of every position seen so
 * far as F16 rows of kv_dim = n_head_kv * head_dim (the reference's default
 * cache type): k[layer][pos][kv_dim], v[layer][pos][kv_dim].
 *
 * Attention for query rows at positions pos0 .. pos0+n-1 (causal: row i sees
 * cache positions 0 .. pos0+i), grouped-query: query head h reads kv head
 * h / (n_head / n_head_kv). Per head:
 *   s[t] = scale * q_h . k_t ;  p = softmax(s) ;  out_h = sum_t p[t] v_t
 * as in "Attention Is All You Need" with the GQA grouping of Ainslie et al.
 * Rounding follows the reference's default (non flash) path, which the
 * logit parity depends on: q is converted to F16 for the dot with the F16
 * keys, and the normalized probabilities to F16 for the sum over values.
 * Models that scale q before attention (phi3) set prescale_q: q * scale is
 * rounded instead of q. */
#ifndef SLM_KVCACHE_H
#define SLM_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../core/fp16.h"
#include "../core/pool.h"
#include "../core/status.h"

typedef struct slm_kvcache {
    int n_layer, n_ctx, kv_dim;
    int n_used;          /* positions filled (the session's length) */
    slm_f16 *k, *v;      /* n_layer * n_ctx * kv_dim each */
} slm_kvcache;

slm_kvcache *slm_kvcache_new(int n_layer, int n_ctx, int kv_dim, slm_error *err);
void slm_kvcache_free(slm_kvcache *c);
size_t slm_kvcache_bytes(const slm_kvcache *c);

/* Stores n rows of keys and values (f32, row stride kv_dim) at pos0.. of
 * layer. The caller has checked pos0 + n <= n_ctx. */
void slm_kvcache_store(slm_kvcache *c, int layer, int pos0, int n,
                       const float *k, const float *v);

typedef struct slm_attn_shape {
    int n_head, n_head_kv, head_dim;
    float scale;         /* usually 1/sqrt(head_dim) */
    int prescale_q;      /* apply scale to q before its F16 rounding */
} slm_attn_shape;

/* out (n, n_head*head_dim) = attention of q (n, n_head*head_dim) over the
 * cached positions of layer, threaded over (row, head) pairs on pool.
 * Returns SLM_ENOMEM if the pool's scratch cannot grow. */
slm_status slm_attn_sdpa(slm_pool *pool, const slm_kvcache *c, int layer,
                         const slm_attn_shape *sh, int pos0, int n,
                         const float *q, float *out, slm_error *err);

/* AVX2 + F16C twins of the inner loops (kvcache_avx2.c) */
float slm_kv_dot_avx2(const float *q, const slm_f16 *k, int n);
void slm_kv_axpy_avx2(float *acc, float p, const slm_f16 *v, int n);
void slm_kv_to_f16_avx2(slm_f16 *dst, const float *src, size_t n);
/* y[i] = x[i] * scale rounded to an f16 value, for i < n (y may be x) */
void slm_kv_round16_avx2(float *y, const float *x, float scale, int n);
/* s[t] = slm_kv_dot_avx2(q, k + t * stride, hd) * scale for t < n_pos */
void slm_kv_scores_avx2(float *s, const float *q, const slm_f16 *k, size_t stride, int n_pos,
                        int hd, float scale);
/* acc[0..hd) = sum over t < n_pos, in order, of p[t] * v[t * stride + j]:
 * the sums of slm_kv_axpy_avx2 calls from acc = 0 */
void slm_kv_mix_avx2(float *acc, const float *p, const slm_f16 *v, size_t stride, int n_pos, int hd);

#endif
