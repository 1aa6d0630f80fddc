/* RWKV-7 time mix and channel mix for training (rwkv7_grad.h): shapes and
 * the `saved` layout, the f32 products (sgemm split across the pool), the
 * token-shift mixes, and the order of the steps of each forward and
 * backward. The per-head steps (decay, kk, the WKV-7 recurrence and its
 * backward, group norm, bonus, gate) are in rwkv7_heads.c.
 *
 * Products follow the weights' (out, in) layout: y = x W^T, dx = dy W,
 * dW += dy^T x. The temporaries of a call (about 20 floats per token and
 * channel for the time mix's backward) are the pool's scratch buffer. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/sgemm.h"
#include "rwkv7_grad_internal.h"

#define TRY(expr)                          \
    do {                                   \
        slm_status s_ = (expr);            \
        if (s_ != SLM_OK) return s_;       \
    } while (0)

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* --- shapes and the saved buffer ----------------------------------------- */

#define MAX_ROWS (1 << 24)   /* B*T */
#define MAX_DIM (1 << 16)

static int chunk_of(const slm_rwkv7_tmix_shape *s)
{
    int k = s->chunk > 0 ? s->chunk : SLM_RWKV7_CHUNK;
    return k < s->n_tok ? k : s->n_tok;
}

static slm_status rows_check(int n_seq, int n_tok, const char *what, slm_error *err)
{
    if (n_seq < 1 || n_tok < 1 || (int64_t)n_seq * n_tok > MAX_ROWS)
        return slm_error_set(err, SLM_EINVAL, "%s: %d sequences of %d tokens (need 1 or more of each, at most %d rows)",
                             what, n_seq, n_tok, MAX_ROWS);
    return SLM_OK;
}

slm_status slm_rwkv7_tmix_shape_check(const slm_rwkv7_tmix_shape *s, slm_error *err)
{
    const char *w = "rwkv7 time mix";
    TRY(rows_check(s->n_seq, s->n_tok, w, err));
    if (s->dim < 1 || s->dim > MAX_DIM)
        return slm_error_set(err, SLM_EINVAL, "%s: dim %lld out of range", w, (long long)s->dim);
    if (s->head_size < 1 || s->dim % s->head_size != 0)
        return slm_error_set(err, SLM_EINVAL, "%s: head_size %lld does not divide dim %lld", w,
                             (long long)s->head_size, (long long)s->dim);
    const int64_t ranks[4] = {s->rank_w, s->rank_a, s->rank_g, s->rank_v};
    static const char *const names[4] = {"rank_w", "rank_a", "rank_g", "rank_v"};
    for (int i = 0; i < 4; i++) {
        int unused = i == 3 && s->first_layer;
        if (unused ? ranks[i] != 0 : ranks[i] < 1 || ranks[i] > MAX_DIM)
            return slm_error_set(err, SLM_EINVAL, "%s: %s %lld out of range%s", w, names[i],
                                 (long long)ranks[i], unused ? " (0 in the first layer)" : "");
    }
    if (s->chunk < 0) return slm_error_set(err, SLM_EINVAL, "%s: chunk %d is negative", w, s->chunk);
    if (!(s->gn_eps > 0) || !isfinite(s->gn_eps))
        return slm_error_set(err, SLM_EINVAL, "%s: gn_eps must be a positive number", w);
    return SLM_OK;
}

slm_status slm_rwkv7_cmix_shape_check(const slm_rwkv7_cmix_shape *s, slm_error *err)
{
    const char *w = "rwkv7 channel mix";
    TRY(rows_check(s->n_seq, s->n_tok, w, err));
    if (s->dim < 1 || s->dim > MAX_DIM)
        return slm_error_set(err, SLM_EINVAL, "%s: dim %lld out of range", w, (long long)s->dim);
    if (s->n_ff < 1 || s->n_ff > 4 * (int64_t)MAX_DIM)
        return slm_error_set(err, SLM_EINVAL, "%s: n_ff %lld out of range", w, (long long)s->n_ff);
    return SLM_OK;
}

/* Lays out a time mix's saved buffer from base (NULL: sizes only) and
 * returns its floats (0 on overflow). */
static size_t tmix_layout(const slm_rwkv7_tmix_shape *s, float *base, slm_rwkv7_saved *sv)
{
    const size_t n = (size_t)s->n_seq * (size_t)s->n_tok, D = (size_t)s->dim;
    const size_t N = (size_t)s->head_size, H = D / N;
    const int K = chunk_of(s), n_chunk = (s->n_tok + K - 1) / K;
    const int later = !s->first_layer;
    size_t off = SLM_RWKV7_HEADER;
    float *none = NULL;
    float **rowsD[10] = {&sv->x, &sv->r, &sv->sw, &sv->k, &sv->v, &sv->a, &sv->g, &sv->y,
                         later ? &sv->vf : &none, later ? &sv->vmix : &none};
    memset(sv, 0, sizeof *sv);
    sv->n_chunk = n_chunk;
    for (int i = 0; i < 10; i++) {
        if (rowsD[i] == &none) continue;
        *rowsD[i] = base ? base + off : NULL;
        off += n * D;
    }
    const int64_t ranks[4] = {s->rank_w, s->rank_a, s->rank_g, later ? s->rank_v : 0};
    float **hid[4] = {&sv->hw, &sv->ha, &sv->hg, &sv->hv};
    for (int i = 0; i < 4; i++) {
        *hid[i] = base && ranks[i] ? base + off : NULL;
        off += n * (size_t)ranks[i];
    }
    sv->states = base ? base + off : NULL;
    off += (size_t)s->n_seq * H * (size_t)n_chunk * N * N;
    /* the sizes are bounded by the shape check: a few terms of at most
     * 2^24 rows times 2^16 wide, or states of 2^24 * 2^16 floats: no
     * size_t overflow on 64-bit hosts */
    return off;
}

size_t slm_rwkv7_tmix_saved_floats(const slm_rwkv7_tmix_shape *s)
{
    if (slm_rwkv7_tmix_shape_check(s, NULL) != SLM_OK) return 0;
    slm_rwkv7_saved sv;
    return tmix_layout(s, NULL, &sv);
}

size_t slm_rwkv7_cmix_saved_floats(const slm_rwkv7_cmix_shape *s)
{
    if (slm_rwkv7_cmix_shape_check(s, NULL) != SLM_OK) return 0;
    return SLM_RWKV7_HEADER + (size_t)s->n_seq * (size_t)s->n_tok * (size_t)(s->dim + s->n_ff);
}

/* The header of a saved buffer: a magic and the shape the forward ran
 * with, written when the forward has finished (cleared when it starts), so
 * that a backward refuses a buffer from another shape or a failed forward. */
enum { MAGIC_TMIX = 0x37764d54, MAGIC_CMIX = 0x37764d43, HEADER_INTS = 11 };

static void header_ints(int32_t magic, const slm_rwkv7_tmix_shape *t, const slm_rwkv7_cmix_shape *c,
                        int32_t *h)
{
    memset(h, 0, HEADER_INTS * sizeof *h);
    h[0] = magic;
    if (t) {
        const int32_t v[10] = {t->n_seq, t->n_tok, (int32_t)t->dim, (int32_t)t->head_size,
                               chunk_of(t), t->first_layer, (int32_t)t->rank_w,
                               (int32_t)t->rank_a, (int32_t)t->rank_v, (int32_t)t->rank_g};
        memcpy(h + 1, v, sizeof v);
    } else {
        const int32_t v[4] = {c->n_seq, c->n_tok, (int32_t)c->dim, (int32_t)c->n_ff};
        memcpy(h + 1, v, sizeof v);
    }
}

static slm_status header_matches(const float *saved, const int32_t *want, const char *what,
                                 slm_error *err)
{
    if (memcmp(saved, want, HEADER_INTS * sizeof(int32_t)) != 0)
        return slm_error_set(err, SLM_EINVAL,
                             "%s backward: saved does not hold a finished forward of this shape", what);
    return SLM_OK;
}

const char *slm_rwkv7_tmix_missing(const slm_rwkv7_tmix_shape *s, const slm_rwkv7_tmix_params *p)
{
    const float *need[] = {p->maa, p->w0, p->a0, p->w1, p->a1, p->g1, p->w2, p->a2, p->g2,
                           p->k_k, p->k_a, p->r_k, p->wr, p->wk, p->wv, p->wo, p->lnx_w, p->lnx_b,
                           p->v0, p->v1, p->v2};
    static const char *const names[] = {"maa", "w0", "a0", "w1", "a1", "g1", "w2", "a2", "g2",
                                        "k_k", "k_a", "r_k", "wr", "wk", "wv", "wo", "lnx_w",
                                        "lnx_b", "v0", "v1", "v2"};
    const int n = s->first_layer ? 18 : 21;
    for (int i = 0; i < n; i++)
        if (!need[i]) return names[i];
    return NULL;
}

/* --- f32 products on the pool -------------------------------------------- */

/* C (M, N) = op(A) (M, K) . op(B) (K, N) + beta C, all row-major; op
 * transposes when ta / tb. The output rows are cut in blocks whose size
 * depends on the shape only, and the threads take blocks from a counter:
 * each block is the same slm_sgemm call whatever the number of threads, so
 * the results are too. */
typedef struct mm_job {
    int ta, tb;
    int64_t M, N, K, lda, ldb, ldc, rows;
    const float *A, *B;
    float beta;
    float *C;
    atomic_llong next;
} mm_job;

static void mm_run(void *ctx, int ith, int nth)
{
    mm_job *j = ctx;
    for (;;) {
        int64_t m0 = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed) * j->rows;
        if (m0 >= j->M) return;
        int64_t m1 = m0 + j->rows < j->M ? m0 + j->rows : j->M;
        const float *A = j->ta ? j->A + m0 : j->A + m0 * j->lda;
        slm_sgemm(j->ta, j->tb,
                    (int)(m1 - m0), (int)j->N, (int)j->K, 1.0f, A, (int)j->lda, j->B, (int)j->ldb,
                    j->beta, j->C + m0 * j->ldc, (int)j->ldc);
    }
}

static void mm(slm_pool *pool, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
               const float *B, float beta, float *C)
{
    mm_job j = {.ta = ta, .tb = tb, .M = M, .N = N, .K = K, .lda = ta ? M : K, .ldb = tb ? K : N,
                .ldc = N, .A = A, .B = B, .beta = beta, .C = C};
    j.rows = (M + 15) / 16 < 16 ? 16 : (M + 15) / 16;
    atomic_init(&j.next, 0);
    int64_t blocks = (M + j.rows - 1) / j.rows;
    int nth = slm_pool_size(pool);
    if ((double)M * (double)N * (double)K < 65536.0) nth = 1;   /* not worth a wake-up */
    slm_pool_run(pool, blocks < nth ? (int)blocks : nth, mm_run, &j);
}

/* y (n, out) = x (n, in) W^T for W (out, in) */
static void linear(slm_pool *pool, float *y, const float *x, const float *W, int64_t n,
                   int64_t out, int64_t in)
{
    mm(pool, 0, 1, n, out, in, x, W, 0.0f, y);
}

/* For y = x W^T: dx (n, in) (= or +=) dy (n, out) W, and dW += dy^T x
 * (skipped when dW is NULL). */
static void linear_back(slm_pool *pool, const float *dy, const float *x, const float *W, float *dW,
                        float *dx, int dx_acc, int64_t n, int64_t out, int64_t in)
{
    if (dW) mm(pool, 1, 0, out, in, n, dy, x, 1.0f, dW);
    if (dx) mm(pool, 0, 0, n, in, out, dy, W, dx_acc ? 1.0f : 0.0f, dx);
}

/* --- token-shift mixes ------------------------------------------------------ */

/* x_i = x + (x[t-1] - x) m_i for n_mix mixing vectors m (n_mix, dim)
 * (written as the inference blocks do: sx m_i + x, sx = x[t-1] - x), and
 * its backward: dm_i += sum_rows dx_i sx; dx = sum_i dx_i (1 - m_i) at t
 * plus dx_i m_i from t + 1. The threads split the channels, so that each
 * dm_i sum runs over the rows in order on one thread. */
typedef struct mix_job {
    int n_seq, n_tok, n_mix;
    int64_t dim;
    const float *x, *m;
    float *const *xs;          /* forward: the n_mix outputs */
    const float *const *dxs;   /* backward: their gradients */
    float *dm, *dx;            /* dm (n_mix, dim) NULL: skipped */
    int accumulate;
} mix_job;

static void mix_fwd_run(void *ctx, int ith, int nth)
{
    const mix_job *j = ctx;
    const int64_t D = j->dim, c0 = D * ith / nth, c1 = D * (ith + 1) / nth;
    for (int b = 0; b < j->n_seq; b++)
        for (int t = 0; t < j->n_tok; t++) {
            const size_t o = ((size_t)b * (size_t)j->n_tok + (size_t)t) * (size_t)D;
            const float *xt = j->x + o;
            for (int i = 0; i < j->n_mix; i++) {
                const float *m = j->m + (size_t)i * (size_t)D;
                float *y = j->xs[i] + o;
                if (t == 0)
                    for (int64_t c = c0; c < c1; c++) y[c] = (0.0f - xt[c]) * m[c] + xt[c];
                else
                    for (int64_t c = c0; c < c1; c++) y[c] = (xt[c - D] - xt[c]) * m[c] + xt[c];
            }
        }
}

static void mix_bwd_run(void *ctx, int ith, int nth)
{
    const mix_job *j = ctx;
    const int64_t D = j->dim, c0 = D * ith / nth, c1 = D * (ith + 1) / nth;
    const int T = j->n_tok;
    for (int b = 0; b < j->n_seq; b++)
        for (int t = 0; t < T; t++) {
            const size_t o = ((size_t)b * (size_t)T + (size_t)t) * (size_t)D;
            const float *xt = j->x + o;
            float *dx = j->dx + o;
            if (!j->accumulate)
                for (int64_t c = c0; c < c1; c++) dx[c] = 0;
            for (int i = 0; i < j->n_mix; i++) {
                const float *m = j->m + (size_t)i * (size_t)D, *g = j->dxs[i] + o;
                float *dm = j->dm ? j->dm + (size_t)i * (size_t)D : NULL;
                if (dm)
                    for (int64_t c = c0; c < c1; c++) dm[c] += g[c] * ((t ? xt[c - D] : 0.0f) - xt[c]);
                for (int64_t c = c0; c < c1; c++) dx[c] += g[c] * (1.0f - m[c]);
                if (t + 1 < T)
                    for (int64_t c = c0; c < c1; c++) dx[c] += g[c + D] * m[c];
            }
        }
}

static void mix(slm_pool *pool, mix_job *j)
{
    int nth = slm_pool_size(pool);
    if ((int64_t)j->n_seq * j->n_tok * j->dim * j->n_mix < 65536) nth = 1;
    slm_pool_run(pool, nth < j->dim ? nth : (int)j->dim, j->xs ? mix_fwd_run : mix_bwd_run, j);
}

/* Temporaries of one call: the pool's scratch buffer (kept between calls,
 * so that big buffers are not mapped and faulted in again each time), or
 * when there is no pool or the call runs inside one of its jobs, memory
 * owned by the call (*owned, to free). 64-byte aligned. */
static float *temporaries(slm_pool *pool, size_t floats, float **owned, slm_error *err)
{
    *owned = NULL;
    floats = (floats + 15) / 16 * 16;
    if (pool && !slm_pool_busy(pool)) return slm_pool_scratch(pool, floats * sizeof(float), err);
    *owned = aligned_alloc(64, floats * sizeof(float));
    if (!*owned) slm_error_set(err, SLM_ENOMEM, "rwkv7: out of memory for %zu floats of temporaries", floats);
    return *owned;
}

static void map_rows(float *y, size_t n, int op)
{
    for (size_t i = 0; i < n; i++) y[i] = op == 0 ? tanhf(y[i]) : sigmoidf(y[i]);
}

static int heads_threads(slm_pool *pool, int64_t n_head)
{
    int nth = slm_pool_size(pool);
    return nth < n_head ? nth : (int)n_head;
}

/* --- time mix ----------------------------------------------------------------- */

static slm_status tmix_args(const slm_rwkv7_tmix_shape *s, const slm_rwkv7_tmix_params *p,
                            const float *x, const float *out, const float *v_first,
                            const void *saved, slm_error *err)
{
    TRY(slm_rwkv7_tmix_shape_check(s, err));
    const char *miss = slm_rwkv7_tmix_missing(s, p);
    if (miss) return slm_error_set(err, SLM_EINVAL, "rwkv7 time mix: missing parameter %s", miss);
    if (!x || !out || !saved)
        return slm_error_set(err, SLM_EINVAL, "rwkv7 time mix: missing %s", !x ? "x" : !out ? "out" : "saved");
    if (!s->first_layer && !v_first)
        return slm_error_set(err, SLM_EINVAL,
                             "rwkv7 time mix: a layer after the first needs v_first (forward) and dv_first (backward)");
    return SLM_OK;
}

slm_status slm_rwkv7_tmix_forward(slm_pool *pool, const slm_rwkv7_tmix_shape *s,
                                  const slm_rwkv7_tmix_params *p, const float *x, float *out,
                                  float *v_first, float *saved, slm_error *err)
{
    TRY(tmix_args(s, p, x, out, v_first, saved, err));
    const int64_t n = (int64_t)s->n_seq * s->n_tok, D = s->dim;
    const size_t nD = (size_t)n * (size_t)D;
    const int first = s->first_layer, K = chunk_of(s);
    const int nth = heads_threads(pool, D / s->head_size);
    const size_t hsf = slm_rwkv7_heads_scratch_floats(s, K);
    /* six mixed inputs, then the recurrence's inputs and z in their
     * place; the low-rank outputs wl al nu */
    float *owned, *tmp = temporaries(pool, (9 * nD + 15) / 16 * 16 + (size_t)nth * hsf, &owned, err);
    if (!tmp) return SLM_ENOMEM;
    float *xs[6];
    for (int i = 0; i < 6; i++) xs[i] = tmp + (size_t)i * nD;
    float *wl = tmp + 6 * nD, *al = wl + nD, *nu = al + nD;
    slm_rwkv7_saved sv;
    tmix_layout(s, saved, &sv);
    memset(saved, 0, SLM_RWKV7_HEADER * sizeof(float));
    memcpy(sv.x, x, nD * sizeof(float));

    mix_job mj = {.n_seq = s->n_seq, .n_tok = s->n_tok, .n_mix = 6, .dim = D, .x = x, .m = p->maa, .xs = xs};
    mix(pool, &mj);
    const float *xr = xs[0], *xw = xs[1], *xk = xs[2], *xv = xs[3], *xa = xs[4], *xg = xs[5];
    linear(pool, sv.r, xr, p->wr, n, D, D);
    linear(pool, sv.k, xk, p->wk, n, D, D);
    linear(pool, sv.v, xv, p->wv, n, D, D);
    linear(pool, sv.hw, xw, p->w1, n, s->rank_w, D);   /* w: W2 tanh(W1 x_w) */
    map_rows(sv.hw, (size_t)n * (size_t)s->rank_w, 0);
    linear(pool, wl, sv.hw, p->w2, n, D, s->rank_w);
    linear(pool, sv.ha, xa, p->a1, n, s->rank_a, D);   /* a: A2 A1 x_a */
    linear(pool, al, sv.ha, p->a2, n, D, s->rank_a);
    linear(pool, sv.hg, xg, p->g1, n, s->rank_g, D);   /* g: G2 sigmoid(G1 x_g) */
    map_rows(sv.hg, (size_t)n * (size_t)s->rank_g, 1);
    linear(pool, sv.g, sv.hg, p->g2, n, D, s->rank_g);
    if (!first) {                                       /* nu: V2 V1 x_v */
        linear(pool, sv.hv, xv, p->v1, n, s->rank_v, D);
        linear(pool, nu, sv.hv, p->v2, n, D, s->rank_v);
    }

    slm_rwkv7_heads_job j = {.s = s, .p = p, .sv = sv, .n_head = D / s->head_size, .chunk = K,
                             .wl = wl, .al = al, .nu = nu, .v_first = v_first,
                             .W = xs[0], .KP = xs[1], .VP = xs[2], .NA = xs[3], .NB = xs[4],
                             .z = xs[5], .scratch = tmp + (9 * nD + 15) / 16 * 16,
                             .scratch_floats = hsf};
    slm_pool_run(pool, nth, slm_rwkv7_heads_forward, &j);
    linear(pool, out, j.z, p->wo, n, D, D);
    free(owned);
    int32_t h[HEADER_INTS];
    header_ints(MAGIC_TMIX, s, NULL, h);
    memcpy(saved, h, sizeof h);
    return SLM_OK;
}

slm_status slm_rwkv7_tmix_backward(slm_pool *pool, const slm_rwkv7_tmix_shape *s,
                                   const slm_rwkv7_tmix_params *p, slm_rwkv7_tmix_params *grad,
                                   const float *saved, const float *dout, float *dx,
                                   float *dv_first, int accumulate, slm_error *err)
{
    TRY(tmix_args(s, p, dout, dx, s->first_layer ? dout : dv_first, saved, err));
    int32_t h[HEADER_INTS];
    header_ints(MAGIC_TMIX, s, NULL, h);
    TRY(header_matches(saved, h, "rwkv7 time mix", err));
    const int64_t n = (int64_t)s->n_seq * s->n_tok, D = s->dim;
    const size_t nD = (size_t)n * (size_t)D;
    const int first = s->first_layer, K = chunk_of(s);
    int64_t R = s->rank_w;
    const int64_t ranks[3] = {s->rank_a, s->rank_g, s->rank_v};
    for (int i = 0; i < 3; i++) R = ranks[i] > R ? ranks[i] : R;
    const int nth = heads_threads(pool, D / s->head_size);
    const size_t hsf = slm_rwkv7_heads_scratch_floats(s, K);
    /* dz z, the per-head job's seven gradients, six mixed inputs and their
     * gradients, one low-rank hidden's gradient, the job's scratch */
    enum { ND_ARRAYS = 2 + 7 + 6 + 6 };
    const size_t big = (ND_ARRAYS * nD + (size_t)n * (size_t)R + 15) / 16 * 16;
    float *owned, *tmp = temporaries(pool, big + (size_t)nth * hsf, &owned, err);
    if (!tmp) return SLM_ENOMEM;
    float *a_[ND_ARRAYS];
    for (int i = 0; i < ND_ARRAYS; i++) a_[i] = tmp + (size_t)i * nD;
    float *dz = a_[0], *z = a_[1], *dr = a_[2], *dzw = a_[3], *dk = a_[4], *dv = a_[5];
    float *dza = a_[6], *dg = a_[7], *dzv = a_[8];
    float **xs = a_ + 9, **dxs = a_ + 15;
    float *dh = tmp + ND_ARRAYS * nD;
    slm_rwkv7_saved sv;
    tmix_layout(s, (float *)saved, &sv);
    static const slm_rwkv7_tmix_params none;
    slm_rwkv7_tmix_params *gr = grad ? grad : (slm_rwkv7_tmix_params *)&none;

    /* out = Wo z:  dz = dout Wo, dWo += dout^T z (z from the heads job) */
    mm(pool, 0, 0, n, D, D, dout, p->wo, 0.0f, dz);
    slm_rwkv7_heads_job j = {.s = s, .p = p, .sv = sv, .n_head = D / s->head_size, .chunk = K,
                             .z = z, .dz = dz, .dr = dr, .dzw = dzw, .dk = dk, .dv = dv,
                             .dza = dza, .dg = dg, .dzv = dzv, .dv_first = dv_first, .grad = gr,
                             .scratch = tmp + big, .scratch_floats = hsf};
    slm_pool_run(pool, nth, slm_rwkv7_heads_backward, &j);
    if (gr->wo) mm(pool, 1, 0, D, D, n, dout, z, 1.0f, gr->wo);

    /* the mixed inputs again, then each projection's backward into the
     * gradient of its input */
    mix_job mj = {.n_seq = s->n_seq, .n_tok = s->n_tok, .n_mix = 6, .dim = D, .x = sv.x, .m = p->maa, .xs = xs};
    mix(pool, &mj);
    linear_back(pool, dr, xs[0], p->wr, gr->wr, dxs[0], 0, n, D, D);
    linear_back(pool, dk, xs[2], p->wk, gr->wk, dxs[2], 0, n, D, D);
    linear_back(pool, dv, xs[3], p->wv, gr->wv, dxs[3], 0, n, D, D);
    /* w: zw = w0 + W2 hw, hw = tanh(W1 x_w) */
    linear_back(pool, dzw, sv.hw, p->w2, gr->w2, dh, 0, n, D, s->rank_w);
    for (size_t i = 0; i < (size_t)n * (size_t)s->rank_w; i++) dh[i] *= 1.0f - sv.hw[i] * sv.hw[i];
    linear_back(pool, dh, xs[1], p->w1, gr->w1, dxs[1], 0, n, s->rank_w, D);
    /* a: za = a0 + A2 (A1 x_a) */
    linear_back(pool, dza, sv.ha, p->a2, gr->a2, dh, 0, n, D, s->rank_a);
    linear_back(pool, dh, xs[4], p->a1, gr->a1, dxs[4], 0, n, s->rank_a, D);
    /* g = G2 hg, hg = sigmoid(G1 x_g) */
    linear_back(pool, dg, sv.hg, p->g2, gr->g2, dh, 0, n, D, s->rank_g);
    for (size_t i = 0; i < (size_t)n * (size_t)s->rank_g; i++) dh[i] *= sv.hg[i] * (1.0f - sv.hg[i]);
    linear_back(pool, dh, xs[5], p->g1, gr->g1, dxs[5], 0, n, s->rank_g, D);
    if (!first) {   /* zv = v0 + V2 (V1 x_v): into x_v's gradient too */
        linear_back(pool, dzv, sv.hv, p->v2, gr->v2, dh, 0, n, D, s->rank_v);
        linear_back(pool, dh, xs[3], p->v1, gr->v1, dxs[3], 1, n, s->rank_v, D);
    }
    mix_job mb = {.n_seq = s->n_seq, .n_tok = s->n_tok, .n_mix = 6, .dim = D, .x = sv.x, .m = p->maa,
                  .dxs = (const float *const *)dxs, .dm = gr->maa, .dx = dx, .accumulate = accumulate};
    mix(pool, &mb);
    free(owned);
    return SLM_OK;
}

/* --- channel mix ----------------------------------------------------------------- */

static slm_status cmix_args(const slm_rwkv7_cmix_shape *s, const slm_rwkv7_cmix_params *p,
                            const float *x, const float *out, const void *saved, slm_error *err)
{
    TRY(slm_rwkv7_cmix_shape_check(s, err));
    if (!p->mix_k || !p->wk || !p->wv)
        return slm_error_set(err, SLM_EINVAL, "rwkv7 channel mix: missing parameter %s",
                             !p->mix_k ? "mix_k" : !p->wk ? "wk" : "wv");
    if (!x || !out || !saved)
        return slm_error_set(err, SLM_EINVAL, "rwkv7 channel mix: missing %s", !x ? "x" : !out ? "out" : "saved");
    return SLM_OK;
}

/* max(k, 0) without a branch (on the random signs of k a branch
 * mispredicts half the time, and fmaxf is a libm call for its NaN rules):
 * (k + |k|) / 2 is exactly k or 0 for every finite |k| < 2^127 */
static inline float relu(float k) { return 0.5f * (k + fabsf(k)); }

/* y = relu(k)^2 */
static void relu_sq(float *y, const float *k, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const float v = relu(k[i]);
        y[i] = v * v;
    }
}

/* saved: header, x (n, dim), the key projection before relu^2 (n, n_ff) */
slm_status slm_rwkv7_cmix_forward(slm_pool *pool, const slm_rwkv7_cmix_shape *s,
                                  const slm_rwkv7_cmix_params *p, const float *x, float *out,
                                  float *saved, slm_error *err)
{
    TRY(cmix_args(s, p, x, out, saved, err));
    const int64_t n = (int64_t)s->n_seq * s->n_tok, D = s->dim, F = s->n_ff;
    const size_t nD = (size_t)n * (size_t)D, nF = (size_t)n * (size_t)F;
    float *owned, *tmp = temporaries(pool, nD + nF, &owned, err);
    if (!tmp) return SLM_ENOMEM;
    float *xk = tmp, *hk = tmp + nD;
    float *sx = saved + SLM_RWKV7_HEADER, *kpre = sx + nD;
    memset(saved, 0, SLM_RWKV7_HEADER * sizeof(float));
    memcpy(sx, x, nD * sizeof(float));
    mix_job mj = {.n_seq = s->n_seq, .n_tok = s->n_tok, .n_mix = 1, .dim = D, .x = x, .m = p->mix_k, .xs = &xk};
    mix(pool, &mj);
    linear(pool, kpre, xk, p->wk, n, F, D);
    relu_sq(hk, kpre, nF);
    linear(pool, out, hk, p->wv, n, D, F);
    free(owned);
    int32_t h[HEADER_INTS];
    header_ints(MAGIC_CMIX, NULL, s, h);
    memcpy(saved, h, sizeof h);
    return SLM_OK;
}

slm_status slm_rwkv7_cmix_backward(slm_pool *pool, const slm_rwkv7_cmix_shape *s,
                                   const slm_rwkv7_cmix_params *p, slm_rwkv7_cmix_params *grad,
                                   const float *saved, const float *dout, float *dx,
                                   int accumulate, slm_error *err)
{
    TRY(cmix_args(s, p, dout, dx, saved, err));
    int32_t h[HEADER_INTS];
    header_ints(MAGIC_CMIX, NULL, s, h);
    TRY(header_matches(saved, h, "rwkv7 channel mix", err));
    const int64_t n = (int64_t)s->n_seq * s->n_tok, D = s->dim, F = s->n_ff;
    const size_t nD = (size_t)n * (size_t)D, nF = (size_t)n * (size_t)F;
    float *owned, *tmp = temporaries(pool, 2 * nD + 2 * nF, &owned, err);
    if (!tmp) return SLM_ENOMEM;
    float *xk = tmp, *dxk = tmp + nD, *hk = dxk + nD, *dh = hk + nF;
    const float *sx = saved + SLM_RWKV7_HEADER, *kpre = sx + nD;
    static const slm_rwkv7_cmix_params none;
    const slm_rwkv7_cmix_params *gr = grad ? grad : &none;
    relu_sq(hk, kpre, nF);
    /* out = Wv hk: dh = dout Wv, dWv += dout^T hk; hk = relu(kpre)^2 */
    linear_back(pool, dout, hk, p->wv, gr->wv, dh, 0, n, D, F);
    for (size_t i = 0; i < nF; i++) dh[i] *= 2.0f * relu(kpre[i]);
    mix_job mj = {.n_seq = s->n_seq, .n_tok = s->n_tok, .n_mix = 1, .dim = D, .x = sx, .m = p->mix_k, .xs = &xk};
    mix(pool, &mj);
    linear_back(pool, dh, xk, p->wk, gr->wk, dxk, 0, n, F, D);
    const float *dxs[1] = {dxk};
    mix_job mb = {.n_seq = s->n_seq, .n_tok = s->n_tok, .n_mix = 1, .dim = D, .x = sx, .m = p->mix_k,
                  .dxs = dxs, .dm = gr->mix_k, .dx = dx, .accumulate = accumulate};
    mix(pool, &mb);
    free(owned);
    return SLM_OK;
}
