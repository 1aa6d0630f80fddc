/* Shared by rwkv7_grad.c (projections, mixes, the public functions) and
 * rwkv7_heads.c (everything per head between the projections: decay,
 * learning rate, value mix, kk, the WKV-7 recurrence forward and
 * backward, group norm, bonus, gate). Not part of the public API. */
#ifndef SLM_RWKV7_GRAD_INTERNAL_H
#define SLM_RWKV7_GRAD_INTERNAL_H

#include <stdatomic.h>

#include "rwkv7_grad.h"

/* The parts of a time mix's `saved` buffer (rows n = B*T):
 *   header        SLM_RWKV7_HEADER floats: the shape it was written for
 *   x r sw k v a g y          (n, dim) each
 *   vf vmix                   (n, dim) each, later layers only
 *   hw ha hg [hv]             (n, rank_*) each (hv later layers only)
 *   states        (B, H, n_chunk, hs, hs): the WKV state entering token
 *                 c*chunk of each sequence and head
 * sw = sigmoid(w0 + lora_w), y = the WKV output before the group norm. */
#define SLM_RWKV7_HEADER 16
typedef struct slm_rwkv7_saved {
    float *x, *r, *sw, *k, *v, *a, *g, *y, *vf, *vmix;
    float *hw, *ha, *hg, *hv, *states;
    int n_chunk;
} slm_rwkv7_saved;

/* The per-head job of a forward (bwd = 0) or backward (bwd = 1). Arrays are
 * (n, dim) rows; each thread touches only its heads' columns. */
typedef struct slm_rwkv7_heads_job {
    const slm_rwkv7_tmix_shape *s;
    const slm_rwkv7_tmix_params *p;
    slm_rwkv7_saved sv;
    int64_t n_head;
    int chunk;
    /* forward: the low-rank outputs before their biases (nu later layers),
     * v_first (written by the first layer, read by the others), and the
     * per-token inputs of the recurrence the job builds: w, k', v', -kk,
     * kk*a */
    const float *wl, *al, *nu;
    float *v_first;
    float *W, *KP, *VP, *NA, *NB;
    /* both: z = gated output rows (the output projection's input) */
    float *z;
    /* backward: dz = dout Wo; the gradients of r, of w0 + lora_w, of k and
     * v (raw projections), of a0 + lora_a, of g, of v0 + lora_v; dv_first;
     * the vector parameters' gradients (grad's w0 a0 v0 k_k k_a r_k lnx_*) */
    const float *dz;
    float *dr, *dzw, *dk, *dv, *dza, *dg, *dzv;
    float *dv_first;
    slm_rwkv7_tmix_params *grad;
    /* per-thread scratch of the backward, slm_rwkv7_heads_scratch_floats each */
    float *scratch;
    size_t scratch_floats;
} slm_rwkv7_heads_job;

size_t slm_rwkv7_heads_scratch_floats(const slm_rwkv7_tmix_shape *s, int chunk);
/* pool jobs: the heads split by (ith, nth) */
void slm_rwkv7_heads_forward(void *job, int ith, int nth);
void slm_rwkv7_heads_backward(void *job, int ith, int nth);

/* One token's step of the WKV backward for one head (hs = n):
 *   Sp = the state before the token, Sn = after, dS = the gradient of Sn
 *   (on return, of Sp); dy the gradient of y = Sn r.
 * Adds to dr, dw, dk, dv, dna, dnb (the gradients of r, w, k', v', -kk,
 * kk*a). slm_rwkv7_wkv_back_step picks the AVX2 twin (rwkv7_heads_avx2.c, n a
 * multiple of 8) at run time; the portable loop is its reference. */
void slm_rwkv7_wkv_back_step(int64_t n, const float *Sp, const float *Sn, float *dS, const float *r,
                      const float *w, const float *k, const float *v, const float *na,
                      const float *nb, const float *dy, float *dr, float *dw, float *dk, float *dv,
                      float *dna, float *dnb);
void slm_rwkv7_wkv_back_step_generic(int64_t n, const float *Sp, const float *Sn, float *dS,
                              const float *r, const float *w, const float *k, const float *v,
                              const float *na, const float *nb, const float *dy, float *dr,
                              float *dw, float *dk, float *dv, float *dna, float *dnb);
#if defined(__x86_64__)
void slm_rwkv7_wkv_back_step_avx2(int64_t n, const float *Sp, const float *Sn, float *dS, const float *r,
                           const float *w, const float *k, const float *v, const float *na,
                           const float *nb, const float *dy, float *dr, float *dw, float *dk,
                           float *dv, float *dna, float *dnb);
#endif

#endif
