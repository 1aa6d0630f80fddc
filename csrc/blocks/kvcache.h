/* Key/value cache and scaled dot-product attention over it.
 *
 * The cache keeps, per layer (a step of the model's layer plan), the keys
 * and values of the positions its attention can still see, as F16 rows of
 * kv_dim = n_head_kv * head_dim (the reference's default cache type). Layers
 * differ: each has its own kv_dim and its own window.
 *   - window 0: every earlier position is seen; the layer holds n_ctx rows,
 *     position p in row p.
 *   - window W > 0 (sliding-window attention, Gemma 2/3): the query at
 *     position p sees positions p - W < j <= p. The layer is a ring of
 *     cap = min(n_ctx, W + n_batch - 1) rows, position p in row p % cap:
 *     a call stores at most n_batch rows, and its first query still needs
 *     the W - 1 rows before them. So a long Gemma context costs memory for
 *     its global layers only. With ring = 0 at creation every layer holds
 *     n_ctx rows (the same results, for measuring what the ring saves).
 *
 * Attention for query rows at positions pos0 .. pos0+n-1 (causal: row i sees
 * positions lo .. pos0+i, lo = 0 or pos0+i-W+1; unmasked, as an encoder's:
 * every row sees 0 .. pos0+n-1), grouped-query: query head h reads kv head
 * h / (n_head / n_head_kv). Per head:
 *   s[t] = scale * q_h . k_t ;  s[t] = c tanh(s[t] / c) with a soft cap c
 *   p = softmax(s) ;  out_h = sum_t p[t] v_t
 * as in "Attention Is All You Need" with the GQA grouping of Ainslie et al.
 * and Gemma 2's logit soft-capping. Rounding follows the reference's
 * default (non flash) path, which the logit parity depends on: q is
 * converted to F16 for the dot with the F16 keys, and the normalized
 * probabilities to F16 for the sum over values. Models that scale q before
 * attention (phi3, gemma) set prescale_q: q * scale is rounded instead of q.
 *
 * Cache types (slm_kv_type, the reference's -ctk/-ctv): rows are F16 by
 * default as above; F32, Q8_0 or Q4_0 rows compute as the reference's
 * flash-attention path over such a cache (kvcache_q.c): a row is encoded
 * when stored (Q8_0 as ggml's CPU set_rows encodes it, which on x86 is the
 * run-time activation encoder of kernels/vecdot.h; Q4_0 by the reference
 * quantizer of quant/quant.h), q is encoded to the K type's vec_dot_type
 * (Q8_0 for both quantized types, F32 for F32) and the scores are the
 * matmul kernels' dot products; the values are expanded to f32 and summed
 * with the unnormalized exp(s - max), divided by their sum at the end.
 * Quantized rows need every head's size to be a multiple of 32 (a block
 * never straddles two heads), as the reference requires. When the head size
 * is a multiple of 64 the reference also rotates (llama.cpp's attn_rot_k/v,
 * on unless LLAMA_ATTN_ROT_DISABLE): q and each stored k by an orthonormal
 * Walsh-Hadamard transform over chunks of n_k = the largest power of two
 * dividing the head size, each stored v and the attention's output over
 * chunks of 64 (H = H^T = H^-1, so the exact result is unchanged; the
 * rotation spreads outliers over a block before it is quantized). So does
 * this cache (slm_kv_fwht, as ggml's CPU op: scale by 1/sqrt(n), then the
 * butterflies of length 1, 2, 4, ...).
 *
 * Snapshots (slm_kvcache_snapshot) hold, per layer, the rows a continuation
 * can still see: all n_past rows of a full layer, the last W - 1 of a
 * windowed one. Layout: the header of core/snapshot.h, kind "KV\0\0",
 * version 4, two dims (n_layer, kv_type as its GGUF/ggml type id: f32 0,
 * f16 1, q4_0 2, q8_0 8); then
 *   per layer: int32 kv_dim, window, first | (n_past - first) key rows,
 *              then as many value rows (slm_kv_row_bytes each)
 * where first is the first position held. A snapshot of another type is
 * refused by name. Restore also reads the layouts of earlier slm versions
 * (all F16): version 3 (one dim, n_layer), "SLMKV2\0\0" | int32 n_layer,
 * n_past | the same per-layer body, and "SLMKV1\0\0" | int32 n_layer,
 * kv_dim, n_past | per layer keys, values (caches without windows). */
#ifndef SLM_KVCACHE_H
#define SLM_KVCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "../core/fp16.h"
#include "../core/pool.h"
#include "../core/status.h"

/* The element type of the rows; 0 is F16 so that a zeroed cache (the
 * encoder's one-call cache in transformer.c) is today's. */
typedef enum slm_kv_type {
    SLM_KV_F16 = 0,
    SLM_KV_F32 = 1,
    SLM_KV_Q8_0 = 2,
    SLM_KV_Q4_0 = 3,
    SLM_KV_TYPE_COUNT
} slm_kv_type;

/* "f16", "f32", "q8_0", "q4_0" in enum order, then NULL (luaL_checkoption) */
extern const char *const slm_kv_type_names[SLM_KV_TYPE_COUNT + 1];
/* elements per block: 1, or 32 for the quantized types */
int slm_kv_type_block(slm_kv_type t);
/* bytes of a row of n elements (n a multiple of the block) */
size_t slm_kv_row_bytes(slm_kv_type t, int n);
/* the GGUF/ggml type id of t (f32 0, f16 1, q4_0 2, q8_0 8) */
int slm_kv_type_ggml(slm_kv_type t);
/* the reference's rotation chunks for heads of head_dim in a cache of type
 * t: of keys (and q), of values (and the output); 0 = no rotation */
int slm_kv_rot_k(slm_kv_type t, int head_dim);
int slm_kv_rot_v(slm_kv_type t, int head_dim);
#define SLM_KV_ROT_MAX 1024
/* x[0..n) <- H_n x / sqrt(n), n a power of two: the Walsh-Hadamard
 * transform of the reference's CPU op (exact same float operations) */
void slm_kv_fwht(float *x, int n);

typedef struct slm_kv_layer {
    int kv_dim;
    int window;          /* 0: full causal; W: the W latest positions */
    int cap;             /* rows held; position p is in row p % cap */
    void *k, *v;         /* cap rows each of the cache's type, inside its block */
    int head_dim;        /* of the attention it serves; 0: not given (F16, F32 caches) */
} slm_kv_layer;

typedef struct slm_kvcache {
    int n_layer, n_ctx, n_batch;
    slm_kv_layer *layer;
    void *mem;           /* every layer's rows */
    size_t bytes;
    slm_kv_type type;    /* every layer's rows */
} slm_kvcache;

/* A cache of n_layer layers, layer l with kv_dim[l] and window[l] (window
 * may be NULL: no windows), for positions 0 .. n_ctx-1 stored at most
 * n_batch at a time. ring = 0 keeps n_ctx rows in windowed layers too.
 * F16 rows; slm_kvcache_new_typed takes the type and each layer's head size
 * (head_dim may be NULL for F16 and F32; quantized types need a head size
 * that is a multiple of 32 and divides kv_dim). */
slm_kvcache *slm_kvcache_new(int n_layer, const int *kv_dim, const int *window, int n_ctx,
                             int n_batch, int ring, slm_error *err);
slm_kvcache *slm_kvcache_new_typed(int n_layer, const int *kv_dim, const int *head_dim, const int *window,
                                   int n_ctx, int n_batch, int ring, slm_kv_type type, slm_error *err);
void slm_kvcache_free(slm_kvcache *c);
size_t slm_kvcache_bytes(const slm_kvcache *c);
/* bytes one more position costs: a key and a value row in every layer
 * (a windowed layer's ring stops growing at its length) */
size_t slm_kvcache_bytes_per_token(const slm_kvcache *c);

/* Stores n rows of keys and values (f32, row stride kv_dim) for positions
 * pos0.. of layer. The caller has checked pos0 + n <= n_ctx and
 * n <= n_batch. */
void slm_kvcache_store(slm_kvcache *c, int layer, int pos0, int n,
                       const float *k, const float *v);

typedef struct slm_attn_shape {
    int n_head, n_head_kv, head_dim;
    float scale;         /* usually 1/sqrt(head_dim) */
    int prescale_q;      /* apply scale to q before its F16 rounding */
    float softcap;       /* 0: none; c > 0: scores become c tanh(s / c) */
    int window;          /* 0: full causal; W: sliding window of W positions */
    int unmasked;        /* 1: no causal mask, every row sees every position
                          * held (encoders, BERT); needs window 0 */
} slm_attn_shape;

/* Checks that layer of c can serve an attention of shape sh over calls of
 * up to n rows: same kv_dim, same window, a ring long enough, and for a
 * quantized cache a head size that is a multiple of the block. */
slm_status slm_kvcache_check_layer(const slm_kvcache *c, int layer, const slm_attn_shape *sh,
                                   int n, slm_error *err);

/* out (n, n_head*head_dim) = attention of q (n, n_head*head_dim) over the
 * cached positions of layer, threaded over (row, head) pairs on pool.
 * Returns SLM_ENOMEM if the pool's scratch cannot grow. */
slm_status slm_attn_sdpa(slm_pool *pool, const slm_kvcache *c, int layer,
                         const slm_attn_shape *sh, int pos0, int n,
                         const float *q, float *out, slm_error *err);

/* Snapshot of the first n_past positions (layout above): its size, and the
 * bytes written into buf (of that size). */
size_t slm_kvcache_snapshot_size(const slm_kvcache *c, int n_past);
void slm_kvcache_snapshot(const slm_kvcache *c, int n_past, void *buf);
/* Restores a snapshot taken of a cache of the same layer shapes; *n_past
 * receives its length. The message says how the shapes differ. */
slm_status slm_kvcache_restore(slm_kvcache *c, const void *buf, size_t len, int *n_past,
                               slm_error *err);

/* AVX2 + F16C twins of the inner loops (kvcache_avx2.c) */
float slm_kv_dot_avx2(const float *q, const slm_f16 *k, int n);
void slm_kv_axpy_avx2(float *acc, float p, const slm_f16 *v, int n);
void slm_kv_to_f16_avx2(slm_f16 *dst, const float *src, size_t n);
/* y[i] = x[i] * scale rounded to an f16 value, for i < n (y may be x) */
void slm_kv_round16_avx2(float *y, const float *x, float scale, int n);
/* s[t] = slm_kv_dot_avx2(q, k + t * stride, hd) * scale for t < n_pos */
void slm_kv_scores_avx2(float *s, const float *q, const slm_f16 *k, size_t stride, int n_pos,
                        int hd, float scale);
/* acc[0..hd) += sum over t < n_pos, in order, of p[t] * v[t * stride + j]:
 * the sums of slm_kv_axpy_avx2 calls (from the acc given) */
void slm_kv_mix_avx2(float *acc, const float *p, const slm_f16 *v, size_t stride, int n_pos, int hd);

#endif
