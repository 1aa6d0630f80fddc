/* RWKV time mixes, one function per version, as rwkv.cpp's rwkv_att_v4 /
 * _v5 / _v6 / _v7 (rwkv_graph.inc) and llama.cpp's rwkv6/rwkv7 time mix:
 * token shift, projections of all n rows as one matmul each, the WKV
 * recurrence over the rows in order, group norm (ln_x), output projection.
 *
 * Scratch (rwkv.h): xs holds up to six mixed inputs (n, dim) each, p up to
 * six projections, hid/tmp the low-rank hidden rows, y the WKV output. */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/ops.h"
#include "../kernels/vecdot.h"
#include "rwkv_internal.h"
#include "seqbatch.h"

#define TRY(expr)                          \
    do {                                   \
        slm_status s_ = (expr);            \
        if (s_ != SLM_OK) return s_;       \
    } while (0)

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* slot i of a (6, n, dim) scratch */
static float *slot(float *base, int i, int n, int64_t dim)
{
    return base + (size_t)i * (size_t)n * (size_t)dim;
}

/* x * m + (prev - prev * m): the v4/v5 lerp, written as rwkv.cpp does */
static void lerp_rows(float *out, const float *x, const float *carry, const float *m, int n,
                      int64_t dim)
{
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * (size_t)dim, *pv = slm_rwkv_prev(carry, x, t, dim);
        float *o = out + (size_t)t * (size_t)dim;
        for (int64_t c = 0; c < dim; c++) o[c] = xt[c] * m[c] + (pv[c] - pv[c] * m[c]);
    }
}

/* Group norm with one group per head (ggml_norm over head_size values),
 * then * w + b per channel. In place on n rows. */
static void group_norm(float *y, int n, const slm_rwkv_tmix *b)
{
    slm_ops_layernorm(y, y, NULL, NULL, (int64_t)n * b->n_head, b->head_size, b->gn_eps);
    for (int t = 0; t < n; t++) {
        float *yt = y + (size_t)t * (size_t)b->dim;
        for (int64_t c = 0; c < b->dim; c++) yt[c] = yt[c] * b->lnx_w[c] + b->lnx_b[c];
    }
}

static void silu_rows(float *x, size_t n)
{
    slm_ops_silu(x, x, (int64_t)n);
}

static slm_status tmix_v4(slm_pool *pool, const slm_rwkv_tmix *b, slm_rwkv_state *st, float *ls,
                          int n, const float *x, float *out, slm_error *err)
{
    int64_t d = b->dim;
    size_t nd = (size_t)n * (size_t)d;
    float *carry = ls;
    float *xk = slot(st->xs, 0, n, d), *xv = slot(st->xs, 1, n, d), *xr = slot(st->xs, 2, n, d);
    lerp_rows(xk, x, carry, b->mix_k, n, d);
    lerp_rows(xv, x, carry, b->mix_v, n, d);
    lerp_rows(xr, x, carry, b->mix_r, n, d);
    float *r = slot(st->p, 0, n, d), *k = slot(st->p, 1, n, d), *v = slot(st->p, 2, n, d);
    TRY(slm_rwkv_mm(pool, r, b->wr, -1, xr, n, err));
    TRY(slm_rwkv_mm(pool, k, b->wk, -1, xk, n, err));
    TRY(slm_rwkv_mm(pool, v, b->wv, -1, xv, n, err));
    float *aa = ls + 2 * (size_t)d, *bb = aa + d, *pp = bb + d;
    slm_rwkv_wkv4(n, d, b->decay, b->first, k, v, aa, bb, pp, st->y);
    for (size_t i = 0; i < nd; i++) st->y[i] *= sigmoidf(r[i]);
    return slm_rwkv_mm(pool, out, b->wo, -1, st->y, n, err);
}

static slm_status tmix_v5(slm_pool *pool, const slm_rwkv_tmix *b, slm_rwkv_state *st, float *ls,
                          int n, const float *x, float *out, slm_error *err)
{
    int64_t d = b->dim, hs = b->head_size;
    size_t nd = (size_t)n * (size_t)d;
    int v52 = b->version == SLM_RWKV_V5_2;
    float *carry = ls;
    float *xk = slot(st->xs, 0, n, d), *xv = slot(st->xs, 1, n, d), *xr = slot(st->xs, 2, n, d);
    float *xg = slot(st->xs, 3, n, d);
    lerp_rows(xk, x, carry, b->mix_k, n, d);
    lerp_rows(xv, x, carry, b->mix_v, n, d);
    lerp_rows(xr, x, carry, b->mix_r, n, d);
    if (v52) lerp_rows(xg, x, carry, b->mix_g, n, d);
    float *r = slot(st->p, 0, n, d), *k = slot(st->p, 1, n, d), *v = slot(st->p, 2, n, d);
    float *g = slot(st->p, 3, n, d), *w = slot(st->p, 4, n, d), *u = slot(st->p, 5, n, d);
    TRY(slm_rwkv_mm(pool, r, b->wr, -1, xr, n, err));
    TRY(slm_rwkv_mm(pool, k, b->wk, -1, xk, n, err));
    TRY(slm_rwkv_mm(pool, v, b->wv, -1, xv, n, err));
    if (v52) {
        TRY(slm_rwkv_mm(pool, g, b->wg, -1, xg, n, err));
        silu_rows(g, nd);
    }
    /* decay and bonus per channel: v5.1 stores one value per head */
    for (int64_t c = 0; c < d; c++) {
        u[c] = v52 ? b->first[c] : b->first[c / hs];
        w[c] = v52 ? b->decay[c] : b->decay[c / hs];
    }
    for (int t = 1; t < n; t++) memcpy(w + (size_t)t * (size_t)d, w, (size_t)d * sizeof(float));
    slm_rwkv_wkv6_pool(pool, n, b->n_head, hs, r, k, v, w, u, ls + 2 * (size_t)d, st->y);
    memcpy(carry, x + (size_t)(n - 1) * (size_t)d, (size_t)d * sizeof(float));
    group_norm(st->y, n, b);
    if (v52)
        for (size_t i = 0; i < nd; i++) st->y[i] *= g[i];
    return slm_rwkv_mm(pool, out, b->wo, -1, st->y, n, err);
}

static slm_status tmix_v6(slm_pool *pool, const slm_rwkv_tmix *b, slm_rwkv_state *st, float *ls,
                          int n, const float *x, float *out, slm_error *err)
{
    int64_t d = b->dim, extra = b->maa_w1->shape[0] / 5, rank = b->decay_w1->shape[0];
    size_t nd = (size_t)n * (size_t)d;
    float *carry = ls, *sx = slot(st->xs, 5, n, d), *xxx = st->y;
    slm_rwkv_shift_diff(sx, x, carry, n, d);
    for (size_t i = 0; i < nd; i++) xxx[i] = sx[i] * b->maa_x[i % (size_t)d] + x[i];
    /* five data-dependent mix offsets: maa_w2[i] . tanh(maa_w1 . xxx)[i] */
    TRY(slm_rwkv_mm(pool, st->hid, b->maa_w1, -1, xxx, n, err));
    for (size_t i = 0; i < (size_t)n * (size_t)(5 * extra); i++) st->hid[i] = tanhf(st->hid[i]);
    for (int i = 0; i < 5; i++) {
        for (int t = 0; t < n; t++)
            memcpy(st->tmp + (size_t)t * (size_t)extra,
                   st->hid + (size_t)t * (size_t)(5 * extra) + (size_t)(i * extra),
                   (size_t)extra * sizeof(float));
        float *m = slot(st->p, i, n, d), *xi = slot(st->xs, i, n, d);
        TRY(slm_rwkv_mm(pool, m, b->maa_w2, i, st->tmp, n, err));
        for (size_t j = 0; j < nd; j++) xi[j] = (m[j] + b->maa[i][j % (size_t)d]) * sx[j] + x[j];
    }
    const float *xw = slot(st->xs, 0, n, d), *xk = slot(st->xs, 1, n, d);
    const float *xv = slot(st->xs, 2, n, d), *xr = slot(st->xs, 3, n, d), *xg = slot(st->xs, 4, n, d);
    float *r = slot(st->p, 0, n, d), *k = slot(st->p, 1, n, d), *v = slot(st->p, 2, n, d);
    float *g = slot(st->p, 3, n, d), *w = slot(st->p, 4, n, d);
    TRY(slm_rwkv_mm(pool, r, b->wr, -1, xr, n, err));
    TRY(slm_rwkv_mm(pool, k, b->wk, -1, xk, n, err));
    TRY(slm_rwkv_mm(pool, v, b->wv, -1, xv, n, err));
    TRY(slm_rwkv_mm(pool, g, b->wg, -1, xg, n, err));
    silu_rows(g, nd);
    /* w = exp(-exp(time_decay + decay_w2 . tanh(decay_w1 . xw))) */
    TRY(slm_rwkv_mm(pool, st->hid, b->decay_w1, -1, xw, n, err));
    for (size_t i = 0; i < (size_t)n * (size_t)rank; i++) st->hid[i] = tanhf(st->hid[i]);
    TRY(slm_rwkv_mm(pool, w, b->decay_w2, -1, st->hid, n, err));
    for (size_t i = 0; i < nd; i++) w[i] = expf(-expf(w[i] + b->decay[i % (size_t)d]));
    slm_rwkv_wkv6_pool(pool, n, b->n_head, b->head_size, r, k, v, w, b->first, ls + 2 * (size_t)d,
                       st->y);
    memcpy(carry, x + (size_t)(n - 1) * (size_t)d, (size_t)d * sizeof(float));
    group_norm(st->y, n, b);
    for (size_t i = 0; i < nd; i++) st->y[i] *= g[i];
    return slm_rwkv_mm(pool, out, b->wo, -1, st->y, n, err);
}

/* out = W2 . f(W1 . x) for n rows, through hid; f an activation in place
 * (slm_rwkv_tanh, slm_rwkv_sigmoid) or NULL */
static slm_status lora(slm_pool *pool, slm_rwkv_state *st, float *out, const slm_tensor *W1,
                       const slm_tensor *W2, void (*f)(float *, int64_t), const float *x, int n,
                       slm_error *err)
{
    TRY(slm_rwkv_mm(pool, st->hid, W1, -1, x, n, err));
    if (f) f(st->hid, (int64_t)n * W1->shape[0]);
    return slm_rwkv_mm(pool, out, W2, -1, st->hid, n, err);
}

/* Everything of v7 between the projections and the output projection is
 * per head: the decay, learning rate and value residual per channel, kk's
 * norm and the bonus over a head, the WKV recurrence and the group norm
 * (one group per head). So it runs as one pool job split by heads, and for
 * a single token each thread first computes its heads' rows of the
 * up-projections (w a g nu, from the hiddens), which then need no barrier
 * of their own. Per element and per head the same operations in the same
 * order as on one thread: the results do not depend on the split. */
typedef struct v7_job {
    const slm_rwkv7_io *io;  /* per sequence: the rows and state its heads work on */
    int n_io;                /* sequences (a batch of sessions), 1 alone */
    const slm_rwkv_mv *up;   /* one row alone: the up-projections still to run, else NULL */
    int n_up;
    atomic_llong next;       /* the next head to take (v7_run) */
    atomic_int failed;       /* the first failing thread reports */
    slm_status code;
    slm_error *err;
} v7_job;

/* heads h0..h1-1 of every row: the portable loop, which defines the
 * results (slm_rwkv7_heads_avx512 is its vectorized twin) */
static void v7_heads_generic(const slm_rwkv7_io *j, int64_t h0, int64_t h1)
{
    const slm_rwkv_tmix *b = j->b;
    int64_t d = b->dim, hs = b->head_size;
    size_t c0 = (size_t)(h0 * hs), c1 = (size_t)(h1 * hs);
    float *r = j->r, *w = j->w, *k = j->k, *v = j->v, *a = j->a, *g = j->g, *y = j->y;
    float *v_first = j->v_first;
    for (int t = 0; t < j->n; t++) {
        size_t to = (size_t)t * (size_t)d;
        for (size_t c = c0; c < c1; c++) {
            size_t i = to + c;
            /* decay in (exp(-e^-0.5), 1): w = exp(-0.606531 * sigmoid(w0 + lora)) */
            w[i] = expf(-0.606531f * sigmoidf(w[i] + b->w0[c]));
            /* in-context learning rate a = sigmoid(a0 + lora) */
            a[i] = sigmoidf(a[i] + b->a0[c]);
            /* value residual: the first layer's v, mixed into every later
             * one (nu, the low-rank term, shares y with the WKV output) */
            if (b->first_layer) v_first[i] = v[i];
            else v[i] = v[i] + (v_first[i] - v[i]) * sigmoidf(j->nu[i] + b->v0[c]);
        }
        /* kk = l2-normalized (k * k_k) per head: na = -kk, nb = kk * a */
        for (int64_t h = h0; h < h1; h++) {
            size_t o = to + (size_t)(h * hs);
            float sum = 0;
            for (int64_t q = 0; q < hs; q++) {
                float kk = k[o + q] * b->k_k[h * hs + q];
                j->nb[o + q] = kk;
                sum += kk * kk;
            }
            float scale = 1.0f / fmaxf(sqrtf(sum), 1e-12f);
            for (int64_t q = 0; q < hs; q++) {
                float kk = j->nb[o + q] * scale;
                j->na[o + q] = -kk;
                j->nb[o + q] = kk * a[o + q];
            }
        }
        /* k = k + (a * ka - ka), ka = k * k_a */
        for (size_t c = c0; c < c1; c++) {
            size_t i = to + c;
            float ka = k[i] * b->k_a[c];
            k[i] = k[i] + (a[i] * ka - ka);
        }
    }
    slm_rwkv_wkv7_heads(j->n, h0, h1, hs, (size_t)d, r, w, k, v, j->na, j->nb, j->S, y);
    for (int t = 0; t < j->n; t++) {
        size_t to = (size_t)t * (size_t)d;
        /* group norm, then the bonus: + v * sum over the head of
         * (k * r * r_k), then the gate */
        slm_ops_layernorm(y + to + c0, y + to + c0, NULL, NULL, h1 - h0, hs, b->gn_eps);
        for (size_t c = c0; c < c1; c++) y[to + c] = y[to + c] * b->lnx_w[c] + b->lnx_b[c];
        for (int64_t h = h0; h < h1; h++) {
            size_t o = to + (size_t)(h * hs);
            float s = 0;
            for (int64_t q = 0; q < hs; q++) s += k[o + q] * r[o + q] * b->r_k[h * hs + q];
            for (int64_t q = 0; q < hs; q++) y[o + q] += v[o + q] * s;
        }
        for (size_t c = c0; c < c1; c++) y[to + c] *= g[to + c];
    }
}

static void v7_heads(const slm_rwkv7_io *j, int64_t h0, int64_t h1)
{
#if defined(__x86_64__)
    int64_t hs = j->b->head_size;
    if (hs % 16 == 0 && hs <= SLM_RWKV_AVX512_MAX_HS && slm_kernels_use_avx512()) {
        slm_rwkv7_heads_avx512(j, h0, h1);
        return;
    }
#endif
    v7_heads_generic(j, h0, h1);
}

/* The threads take heads from a shared counter (see mv_run in rwkv.c:
 * a late or slowed thread takes fewer). */
static void v7_run(void *ctx, int ith, int nth)
{
    v7_job *j = ctx;
    const int64_t hs = j->io[0].b->head_size, nh = j->io[0].b->n_head;
    for (;;) {
        /* units: (sequence, head) pairs, a sequence's heads together */
        int64_t u = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (u >= nh * j->n_io) return;
        const int64_t q = u / nh, h = u % nh;
        for (int i = 0; i < j->n_up; i++) {
            slm_error e;
            slm_status s = slm_rwkv_mv_rows(&j->up[i], h * hs, (h + 1) * hs, &e);
            if (s != SLM_OK) {
                if (!atomic_exchange(&j->failed, 1)) {
                    j->code = s;
                    if (j->err) *j->err = e;
                }
                return;
            }
        }
        v7_heads(&j->io[q], h, h + 1);
    }
}

/* One token's projections for v7: r k v and the four low-rank
 * down-projections, with the w and g hiddens' tanh and sigmoid, in one
 * dispatch (slm_rwkv_mv_group), the
 * up-projections into up[0..*n_up) for the heads job (or run here when
 * they cannot run inside a job, *n_up = 0). The same values as the
 * per-product path of tmix_v7; the hiddens sit side by side in st->hid
 * (4 * lora floats for v7). nu is left alone in the first layer. */
static slm_status project_one_v7(slm_pool *pool, const slm_rwkv_tmix *b, slm_rwkv_state *st,
                                 const float *xr, const float *xw, const float *xk,
                                 const float *xv, const float *xa, const float *xg, float *r,
                                 float *w, float *k, float *v, float *a, float *g, float *nu,
                                 slm_rwkv_mv up[4], int *n_up, slm_error *err)
{
    float *hw = st->hid, *ha = hw + st->lora, *hg = ha + st->lora, *hv = hg + st->lora;
    int nv = b->first_layer ? 0 : 1;
    slm_rwkv_mv down[7] = {{r, b->wr, xr, NULL},      {k, b->wk, xk, NULL},
                           {v, b->wv, xv, NULL},      {hw, b->w1, xw, slm_rwkv_tanh},
                           {ha, b->a1, xa, NULL},     {hg, b->g1, xg, slm_rwkv_sigmoid},
                           {hv, b->v1, xv, NULL}};
    TRY(slm_rwkv_mv_group(pool, down, 6 + nv, err));
    up[0] = (slm_rwkv_mv){w, b->w2, hw, NULL};
    up[1] = (slm_rwkv_mv){a, b->a2, ha, NULL};
    up[2] = (slm_rwkv_mv){g, b->g2, hg, NULL};
    up[3] = (slm_rwkv_mv){nu, b->v2, hv, NULL};
    *n_up = 3 + nv;
    if (slm_rwkv_mv_in_job(up, *n_up)) return SLM_OK;
    *n_up = 0;
    return slm_rwkv_mv_group(pool, up, 3 + nv, err);
}

/* The v7 time mix over the rows of n_span sequences stacked in st's
 * scratch (one sequence alone: one span): the token shift per sequence
 * from its own carried row, the projections over all n rows, the heads per
 * sequence on its own WKV state. */
static slm_status tmix_v7(slm_pool *pool, const slm_rwkv_tmix *b, slm_rwkv_state *st,
                          const slm_rwkv_span *sp, int n_span, int n, const float *x, float *out,
                          slm_error *err)
{
    int64_t d = b->dim, hs = b->head_size;
    /* xr xw xk xv xa xg = x + sx * x_{r,w,k,v,a,g}, sx = prev - x */
    for (int q = 0; q < n_span; q++) {
        const size_t o = (size_t)sp[q].r0 * (size_t)d;
        slm_rwkv_shift_mix(st->xs + o, (size_t)n * (size_t)d, x + o, sp[q].ls, b->maa, 6, sp[q].n, d);
    }
    const float *xr = slot(st->xs, 0, n, d), *xw = slot(st->xs, 1, n, d), *xk = slot(st->xs, 2, n, d);
    const float *xv = slot(st->xs, 3, n, d), *xa = slot(st->xs, 4, n, d), *xg = slot(st->xs, 5, n, d);
    float *r = slot(st->p, 0, n, d), *w = slot(st->p, 1, n, d), *k = slot(st->p, 2, n, d);
    float *v = slot(st->p, 3, n, d), *a = slot(st->p, 4, n, d), *g = slot(st->p, 5, n, d);
    /* the value-residual mix's low-rank term (not in the first layer) */
    float *nu = st->y;
    slm_rwkv_mv up[4];
    int n_up = 0;
    if (n == 1) {
        TRY(project_one_v7(pool, b, st, xr, xw, xk, xv, xa, xg, r, w, k, v, a, g, nu, up, &n_up,
                           err));
    } else {
        TRY(slm_rwkv_mm(pool, r, b->wr, -1, xr, n, err));
        TRY(lora(pool, st, w, b->w1, b->w2, slm_rwkv_tanh, xw, n, err));
        TRY(slm_rwkv_mm(pool, k, b->wk, -1, xk, n, err));
        TRY(slm_rwkv_mm(pool, v, b->wv, -1, xv, n, err));
        TRY(lora(pool, st, a, b->a1, b->a2, NULL, xa, n, err));
        TRY(lora(pool, st, g, b->g1, b->g2, slm_rwkv_sigmoid, xg, n, err));
        if (!b->first_layer) TRY(lora(pool, st, nu, b->v1, b->v2, NULL, xv, n, err));
    }
    /* the mixes' inputs are free now: xs slot 0 holds -kk, slot 1 kk * a */
    slm_rwkv7_io small[SLM_RWKV_SPANS_STACK], *io = n_span <= SLM_RWKV_SPANS_STACK ? small
                                                      : malloc((size_t)n_span * sizeof *io);
    if (!io) return slm_error_set(err, SLM_ENOMEM, "rwkv time mix: out of memory");
    float *na = slot(st->xs, 0, n, d), *nb = slot(st->xs, 1, n, d);
    for (int q = 0; q < n_span; q++) {
        const size_t o = (size_t)sp[q].r0 * (size_t)d;
        io[q] = (slm_rwkv7_io){.b = b, .n = sp[q].n, .r = r + o, .w = w + o, .k = k + o, .v = v + o,
                               .a = a + o, .g = g + o, .nu = nu + o, .na = na + o, .nb = nb + o,
                               .S = sp[q].ls + 2 * (size_t)d, .y = st->y + o, .v_first = st->v_first + o};
    }
    v7_job j = {.io = io, .n_io = n_span, .up = up, .n_up = n_up, .err = err};
    atomic_init(&j.next, 0);
    atomic_init(&j.failed, 0);
    /* as for the products: too little work is not worth waking the pool */
    int64_t work = (int64_t)n * b->n_head * hs * hs;
    for (int i = 0; i < n_up; i++) work += up[i].W->shape[0] * up[i].W->shape[1];
    int nth = work < SMALL_MATMUL || !pool || slm_pool_busy(pool) ? 1 : slm_pool_size(pool);
    const int64_t units = b->n_head * n_span;
    slm_pool_run(pool, nth < units ? nth : (int)units, v7_run, &j);
    if (io != small) free(io);
    if (atomic_load(&j.failed)) return j.code;
    for (int q = 0; q < n_span; q++)
        memcpy(sp[q].ls, x + (size_t)(sp[q].r0 + sp[q].n - 1) * (size_t)d, (size_t)d * sizeof(float));
    if (n > 1) return slm_rwkv_mm(pool, out, b->wo, -1, st->y, n, err);
    const slm_rwkv_mv o = {out, b->wo, st->y, NULL};   /* in chunks (slm_rwkv_mv_group) */
    return slm_rwkv_mv_group(pool, &o, 1, err);
}

/* whether the block's layer and n rows fit state st (shapes, and the
 * scratch of its low-rank hiddens) */
static slm_status tmix_check(const slm_rwkv_tmix *b, const slm_rwkv_state *st, int layer, int n, slm_error *err)
{
    if (layer < 0 || layer >= st->n_layer || n < 1 || n > st->n_batch || b->dim != st->dim ||
        b->version != st->version || (b->version != SLM_RWKV_V4 && b->n_head != st->n_head))
        return slm_error_set(err, SLM_EINVAL, "rwkv time mix: layer %d or %d rows do not fit the state",
                             layer, n);
    int64_t need = 0;
    if (b->version == SLM_RWKV_V6) {
        need = b->maa_w1->shape[0] > b->decay_w1->shape[0] ? b->maa_w1->shape[0] : b->decay_w1->shape[0];
    } else if (b->version == SLM_RWKV_V7) {
        const slm_tensor *lo[4] = {b->w1, b->a1, b->g1, b->first_layer ? NULL : b->v1};
        for (int i = 0; i < 4; i++)
            if (lo[i] && lo[i]->shape[0] > need) need = lo[i]->shape[0];
    }
    if (need > st->lora)
        return slm_error_set(err, SLM_EINVAL, "rwkv time mix: low-rank width %lld exceeds the state's %lld",
                             (long long)need, (long long)st->lora);
    return SLM_OK;
}

slm_status slm_rwkv_tmix_forward_seqs(slm_pool *pool, const slm_rwkv_tmix *b, const slm_seq *seqs,
                                      int n_seq, int layer, const float *x, float *out,
                                      slm_rwkv_state *work, slm_error *err)
{
    if (b->version != SLM_RWKV_V7)
        return slm_error_set(err, SLM_EUNSUPPORTED, "rwkv time mix: a batch of sessions needs RWKV-7 (v%d)",
                             (int)b->version);
    if (n_seq < 1) return slm_error_set(err, SLM_EINVAL, "rwkv time mix: no sequences");
    const int n = slm_seq_rows(seqs, n_seq);
    slm_status st = tmix_check(b, work, layer, n, err);
    if (st) return st;
    slm_rwkv_span small[SLM_RWKV_SPANS_STACK], *sp;
    if ((st = slm_rwkv_spans(seqs, n_seq, layer, work, small, &sp, "time mix", err))) return st;
    st = tmix_v7(pool, b, work, sp, n_seq, n, x, out, err);
    if (sp != small) free(sp);
    return st;
}

slm_status slm_rwkv_tmix_forward(slm_pool *pool, const slm_rwkv_tmix *b, slm_rwkv_state *st,
                                 int layer, int n, const float *x, float *out, slm_error *err)
{
    slm_status chk = tmix_check(b, st, layer, n, err);
    if (chk) return chk;
    float *ls = slm_rwkv_layer(st, layer);
    switch (b->version) {
    case SLM_RWKV_V4: {
        slm_status s = tmix_v4(pool, b, st, ls, n, x, out, err);
        memcpy(ls, x + (size_t)(n - 1) * (size_t)b->dim, (size_t)b->dim * sizeof(float));
        return s;
    }
    case SLM_RWKV_V5_1:
    case SLM_RWKV_V5_2: return tmix_v5(pool, b, st, ls, n, x, out, err);
    case SLM_RWKV_V6: return tmix_v6(pool, b, st, ls, n, x, out, err);
    case SLM_RWKV_V7: {
        const slm_rwkv_span one = {ls, 0, n};
        return tmix_v7(pool, b, st, &one, 1, n, x, out, err);
    }
    }
    return slm_error_set(err, SLM_EUNSUPPORTED, "rwkv: unknown version %d", (int)b->version);
}
