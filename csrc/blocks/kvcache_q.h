/* Attention over an F32, Q8_0 or Q4_0 KV cache (kvcache_q.c), as the
 * reference's CPU flash attention computes it over such a cache (ggml's
 * ggml_compute_forward_flash_attn_ext_f16_one_chunk, the path llama.cpp
 * takes for a quantized V cache): per query row and head
 *   qa = q (x scale with prescale_q) encoded as the K type's vec_dot_type
 *   s[t] = dot(k_t, qa) * scale  (with a soft cap c: c tanh(dot * scale / c))
 *   p[t] = exp(s[t] - max s),  S = sum p[t]
 *   out = (sum_t p[t] * float(v_t)) / S
 * The reference keeps a running maximum and rescales (online softmax);
 * the two-pass form here gives the same values up to float rounding.
 *
 * Also what kvcache.c and kvcache_q.c share: the task's arguments and the
 * ring arithmetic. Shapes: a layer's rows are kv_dim elements of the
 * cache's type, row_bytes = slm_kv_row_bytes(type, kv_dim); head h of a
 * row starts at byte h * slm_kv_row_bytes(type, head_dim). */
#ifndef SLM_KVCACHE_Q_H
#define SLM_KVCACHE_Q_H

#include "../kernels/vecdot.h"
#include "kvcache.h"

typedef struct slm_kv_sdpa_ctx {
    const slm_kvcache *c;
    int layer, pos0, n;
    slm_attn_shape sh;
    const float *q;
    float *out;
    float *scratch;      /* per thread: n_ctx scores, then 3 head_dim floats (accumulator, q, encoded q) */
    size_t scratch_stride;
    int unit_rows, unit_heads;   /* AVX-512 F16 path: its units (slm_kv_avx512_plan) */
} slm_kv_sdpa_ctx;

/* byte offset of position pos's row in layer L */
static inline size_t slm_kv_row_at(const slm_kv_layer *L, size_t row_bytes, int pos)
{
    return (size_t)(pos % L->cap) * row_bytes;
}

/* Positions [p0, p0 + n) of a layer as at most two runs of consecutive
 * rows (a ring wraps once: n <= cap): run[0] starts at row p0 % cap. */
static inline int slm_kv_runs(const slm_kv_layer *L, int p0, int n, int len[2])
{
    const int r0 = p0 % L->cap;
    len[0] = n < L->cap - r0 ? n : L->cap - r0;
    len[1] = n - len[0];
    return len[1] > 0 ? 2 : 1;
}

/* Task = i * n_head + h of an attention call: row i (position pos0 + i)
 * and head h; the positions it attends to are lo .. lo + *n_pos - 1 (from
 * the window's start, or 0, to its own position, or, unmasked, to the
 * call's last). Returns lo. */
static inline int slm_kv_task_span(const slm_kv_sdpa_ctx *a, int task, int *i, int *h, int *n_pos)
{
    *i = task / a->sh.n_head;
    *h = task % a->sh.n_head;
    const int p = a->pos0 + *i;
    const int lo = a->sh.window > 0 && p - a->sh.window + 1 > 0 ? p - a->sh.window + 1 : 0;
    const int last = a->sh.unmasked ? a->pos0 + a->n - 1 : p;
    *n_pos = last - lo + 1;
    return lo;
}

/* The pool task of slm_attn_sdpa for a cache of type F32, Q8_0 or Q4_0:
 * (row, head) pairs split by (ith, nth). */
void slm_kvq_sdpa_task(void *arg, int ith, int nth);

#if defined(__x86_64__)
/* The AVX-512 attention over the F16 cache (kvcache_avx512.c; head sizes
 * that are multiples of 16): its units of *rows rows by *heads query heads
 * of one KV head for a call of n rows from pos0 on nth threads, and the
 * floats of scratch each thread needs. */
void slm_kv_avx512_plan(const slm_kvcache *c, const slm_attn_shape *sh, int pos0, int n, int nth,
                        int *rows, int *heads, size_t *floats);
/* its pool task: units split by (ith, nth) */
void slm_kv_sdpa_task_avx512(void *arg, int ith, int nth);
#endif

/* n floats (a multiple of the type's block) encoded as cache rows of type t
 * (not F16: kvcache.c converts those itself), each chunk of rot floats
 * rotated by slm_kv_fwht first (rot 0: none; a multiple of 32 otherwise) */
void slm_kvq_store(slm_kv_type t, void *dst, const float *src, size_t n, int rot);

/* s[t] = score of qa against the hd elements at k + t * stride bytes, for
 * t < n_pos, with dot the K type's vec_dot (kernels/vecdot.h: its generic
 * or AVX2 kernel) */
void slm_kvq_scores(slm_vec_dot_fn dot, float *s, const void *qa, const unsigned char *k, size_t stride,
                    int n_pos, int hd, float scale, float cap);

/* acc[j] += sum over t < n_pos, in order, of p[t] * float(v_t)[j], j < hd,
 * v_t the hd elements at v + t * stride bytes (float(): the reference's
 * dequantization, exact in f32). The generic kernels multiply and add;
 * the AVX2 twins fuse the two (as the reference's ggml_vec_mad_f32 does on
 * such CPUs), so the two agree to rounding. hd is a multiple of 32 for the
 * quantized types. */
typedef void (*slm_kvq_mix_fn)(float *acc, const float *p, const unsigned char *v, size_t stride, int n_pos,
                               int hd);
slm_kvq_mix_fn slm_kvq_mix_generic(slm_kv_type t);
#if defined(__x86_64__)
slm_kvq_mix_fn slm_kvq_mix_avx2(slm_kv_type t);
#endif

#endif
