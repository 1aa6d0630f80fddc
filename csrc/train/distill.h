/* Knowledge distillation loss, fused over the vocabulary (Hinton, Vinyals,
 * Dean 2015, "Distilling the Knowledge in a Neural Network").
 *
 * Per row r of student logits z_s (V), teacher logits z_t, target y,
 * temperature T and weight alpha:
 *
 *   p_t = softmax(z_t / T)    q = softmax(z_s / T)    p = softmax(z_s)
 *   KL  = sum_i p_t,i (log p_t,i - log q_i)                    (nats)
 *   CE  = logsumexp(z_s) - z_s,y                                (slm_grad_xent's)
 *   L   = alpha T^2 KL + (1 - alpha) CE
 *
 * The gradient w.r.t. the student logits: d log q_i / d z_s,j =
 * (delta_ij - q_j) / T, so d KL / d z_s,j = -sum_i p_t,i (delta_ij - q_j) / T
 * = (q_j - p_t,j) / T (sum_i p_t,i = 1), and
 *
 *   dL / dz_s = alpha T (q - p_t) + (1 - alpha) (p - onehot(y)).
 *
 * The T^2 keeps the soft term's gradient on the scale of the hard one as T
 * grows (Hinton et al. section 2). The kernels overwrite the logits with
 * scale * dL/dz_s (scale = 1/rows: the gradient of the mean, as the
 * trainer's cross-entropy); the CE term is computed by slm_grad_xent_row
 * itself with scale (1 - alpha) scale, so alpha = 0 gives slm_grad_xent's
 * loss and gradient bit for bit (the teacher is then not read). A
 * negative target marks an ignored row (padding): no loss, no gradient, no
 * KL either.
 *
 * Top-k teacher (slm_distill_topk): the teacher is given per row as its k
 * largest logits (values, ids). p_t is the softmax of values / T over
 * those k ids alone (renormalized over the k, as "sparse" distillation of
 * stored top-k logits does; the mass the teacher put outside the k is
 * dropped, not spread), zero elsewhere; q is still the student's softmax
 * over all V, so the gradient is alpha T (q - p_t) with p_t sparse. With
 * k = V the loss is the dense one.
 *
 * Sums: per-row terms in double, added in row order (the result does not
 * depend on the thread count). */
#ifndef SLM_TRAIN_DISTILL_H
#define SLM_TRAIN_DISTILL_H

#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"

typedef struct slm_distill_opts {
    float alpha;         /* weight of the soft term, in [0, 1] */
    float temperature;   /* T > 0, finite */
    float scale;         /* the gradient written is scale * dL/dz (the trainer: 1 / rows) */
} slm_distill_opts;

typedef struct slm_distill_sums {
    double loss;   /* sum over rows of L */
    double ce;     /* sum of CE */
    double kl;     /* sum of KL(p_t || q) (without alpha T^2); 0 when alpha = 0 */
} slm_distill_sums;

/* Dense teacher (rows, V). logits (rows, V) are overwritten by the
 * gradient. SLM_EINVAL for alpha outside [0, 1] or T not > 0;
 * SLM_ERANGE for a target >= V (nothing written); SLM_ENOMEM. */
slm_status slm_distill_dense(slm_pool *pool, float *logits, const int32_t *targets, const float *teacher,
                             int64_t rows, int64_t V, const slm_distill_opts *o, slm_distill_sums *out,
                             slm_error *err);

/* Top-k teacher: vals (rows, k) f32, ids (rows, k) i32, 1 <= k <= V. Every
 * id must be in 0..V-1 and distinct within its row and every value
 * finite (SLM_ERANGE / SLM_EINVAL naming the row, nothing written): the
 * teacher may come from a file. */
slm_status slm_distill_topk(slm_pool *pool, float *logits, const int32_t *targets, const float *vals,
                            const int32_t *ids, int64_t k, int64_t rows, int64_t V, const slm_distill_opts *o,
                            slm_distill_sums *out, slm_error *err);

/* The k largest logits of each row (rows, V) into vals, ids (rows, k),
 * largest first, ties by the lower id. SLM_EINVAL when k is outside 1..V
 * or a row holds a NaN. */
slm_status slm_distill_select_topk(slm_pool *pool, const float *logits, int64_t rows, int64_t V, int64_t k,
                                   float *vals, int32_t *ids, slm_error *err);

/* AVX2 twins (distill_avx2.c) of the two vocabulary-wide passes, tested
 * against the scalar ones in distill.c. */
#if defined(__x86_64__)
/* q_i = exp((z_i - max z) / T) into q (unnormalized), returns the sum in
 * double and the max in *mx */
double slm_distill_tempered_avx2(const float *z, int64_t V, float invT, float *q, float *mx);
/* dense pass: q from zs and pt from zt as above (sums in *sq, *st) and
 * returns sum_i pt_i ((zt_i - mt) / T - (zs_i - ms) / T) in double */
double slm_distill_pair_avx2(const float *zs, const float *zt, int64_t V, float invT, float *q, float *pt,
                             double *sq, double *st);
/* x_i += kq q_i - kt pt_i (pt NULL: x_i += kq q_i) */
void slm_distill_add_avx2(float *x, const float *q, float kq, const float *pt, float kt, int64_t V);
#endif

#endif
