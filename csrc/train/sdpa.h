/* Causal scaled dot-product attention for training: forward over B
 * sequences of T tokens with GQA that keeps what the backward needs, and
 * the backward (llama.cpp's attention, as the training fixtures' README
 * "Semantics" states).
 *
 * Layout (f32 rows, token t of sequence b is row b*T + t, at position t):
 *   q, o, dq, dO   (B*T, H*D)      head j is columns j*D .. j*D + D - 1
 *   k, v, dk, dv   (B*T, HKV*D)    query head j reads kv head j / (H/HKV)
 * For query row t and key t' of the same sequence:
 *   s  = (q_t . k_t') * scale
 *   s' = c tanh(s / c)             (soft-cap c > 0; s' = s when c = 0)
 *   visible when t' <= t and (W = 0 or t' > t - W)   (causal, sliding window)
 *   P  = softmax over the visible keys of s',   o_t = sum_t' P_tt' v_t'
 * Backward (dO given), per query head, with delta_t = sum_d dO_td O_td:
 *   dV  = P^T dO,  dP = dO V^T,  dS' = P * (dP - delta)   (per row t)
 *   dS  = dS' * (1 - (s'/c)^2)     (soft-cap chain rule; dS = dS' at c = 0)
 *   dQ  = dS K * scale,  dK = dS^T Q * scale
 * dk and dv of a kv head sum the contributions of the H/HKV query heads
 * that share it.
 *
 * What is saved between forward and backward (`saved`, f32, sized by
 * slm_sdpa_saved_bytes and reusable across steps of the same shape):
 *   lse   (B, H, T)      log-sum-exp of each row's visible s' (always)
 *   P     (B, H, T, T)   the probabilities, only when shape.keep_probs;
 *                        row t holds P_tt' at column t', 0 where masked
 * With keep_probs the backward reads P; without, it recomputes the scores
 * from q and k and P = exp(s' - lse) (flash-attention style), which costs
 * one more T x T product per head but only B*H*T floats of memory.
 * slm_sdpa_keep_probs_fits picks the mode for a memory budget: P is kept
 * when its B*H*T*T floats fit in the budget (the Lua binding's default
 * budget is SLM_SDPA_PROBS_BUDGET). The soft-cap's derivative needs s',
 * which the P mode recovers as log(P) + lse (exact to float rounding;
 * entries with P = 0 contribute 0).
 *
 * Threads: the forward splits (sequence, query head) pairs across the
 * pool; the backward splits (sequence, kv head) pairs, so the query heads
 * sharing a kv head run on one thread and dk, dv need no locks. The T x T
 * products go to slm_sgemm (kernels/sgemm.h, one thread per call), one block of
 * SLM_SDPA_QBLOCK query rows at a time against only the keys that block
 * sees, so the causal mask skips most of the upper triangle. The row
 * operations (softmax, exp, the dS rows) have AVX2 twins in sdpa_avx2.c
 * chosen at run time (slm_kernels_use_avx2), tested against the generic
 * ones; soft-capped rows always take the generic path. */
#ifndef SLM_SDPA_H
#define SLM_SDPA_H

#include <stddef.h>

#include "../core/pool.h"
#include "../core/status.h"

/* Query rows per block of the T x T products */
#define SLM_SDPA_QBLOCK 16
/* Default memory budget for keeping P (bytes): 64 MiB, e.g. B=12, H=4,
 * T=512 (50 MB) keeps P; B=12, H=4, T=1024 (201 MB) recomputes */
#define SLM_SDPA_PROBS_BUDGET ((size_t)64 << 20)

typedef struct slm_sdpa_shape {
    int B, T;                /* sequences, tokens per sequence */
    int n_head, n_head_kv;   /* H, HKV: H a multiple of HKV */
    int head_dim;            /* D */
    float scale;             /* usually 1 / sqrt(D) */
    float softcap;           /* c > 0, or 0: none */
    int window;              /* W > 0, or 0: none */
    int keep_probs;          /* 1: saved holds P (see above); 0: lse only */
} slm_sdpa_shape;

/* Checks a shape (positive sizes, H % HKV == 0, finite scale, softcap >= 0,
 * window >= 0, every buffer size representable); the message names the
 * field. */
slm_status slm_sdpa_check(const slm_sdpa_shape *sh, slm_error *err);

/* 1 when P of this shape (B*H*T*T floats) fits in budget bytes. */
int slm_sdpa_keep_probs_fits(const slm_sdpa_shape *sh, size_t budget);

/* Bytes of `saved` for a checked shape (keep_probs included). */
size_t slm_sdpa_saved_bytes(const slm_sdpa_shape *sh);

/* o = attention(q, k, v); fills saved. All buffers contiguous f32 of the
 * sizes above; o must not alias q, k or v. pool is required (its scratch
 * holds the score blocks): SLM_EINVAL without one or for a bad shape,
 * SLM_ENOMEM when the scratch cannot grow. */
slm_status slm_sdpa_forward(slm_pool *pool, const slm_sdpa_shape *sh, const float *q,
                            const float *k, const float *v, float *o, float *saved,
                            slm_error *err);

/* Gradients of q, k, v from dO, given the forward's q, k, v, o and saved
 * (the same shape, keep_probs included). accumulate = 1: dq, dk, dv +=
 * their gradients; 0: overwritten. The gradients must not alias the
 * inputs. */
slm_status slm_sdpa_backward(slm_pool *pool, const slm_sdpa_shape *sh, const float *q,
                             const float *k, const float *v, const float *o,
                             const float *saved, const float *dO, float *dq, float *dk,
                             float *dv, int accumulate, slm_error *err);

/* Row kernels (internal to sdpa.c and sdpa_avx2.c; exported so that the
 * tests can compare the two paths directly). A row has n entries of which
 * [a, b) are visible.
 *   softmax:  s[a..b) = exp(s - max) / sum, the rest 0; returns log-sum-exp
 *   probs:    s[a..b) = exp(s - lse), the rest 0
 *   dscore:   ds[j] = p[j] * (ds[j] - delta) for j in [a, b), the rest 0 */
float slm_sdpa_softmax_row_generic(float *s, int n, int a, int b);
void slm_sdpa_probs_row_generic(float *s, int n, int a, int b, float lse);
void slm_sdpa_dscore_row_generic(float *ds, const float *p, int n, int a, int b, float delta);
#if defined(__x86_64__)
float slm_sdpa_softmax_row_avx2(float *s, int n, int a, int b);
void slm_sdpa_probs_row_avx2(float *s, int n, int a, int b, float lse);
void slm_sdpa_dscore_row_avx2(float *ds, const float *p, int n, int a, int b, float delta);
#endif

#endif
