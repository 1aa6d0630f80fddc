/* Causal attention forward/backward for training (formulas in sdpa.h).
 *
 * Each (sequence, head) is walked in blocks of SLM_SDPA_QBLOCK query rows
 * [r0, r1); such a block sees the keys [c0, r1) with c0 = 0, or
 * max(0, r0 - W + 1) under a window W, so the products never touch the
 * keys after the block's last row. Inside a block, row t's visible keys are
 * [lo(t), t + 1) and the entries outside are masked (P = 0, dS = 0). */
#include "sdpa.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include "../kernels/sgemm.h"
#include "../kernels/vecdot.h"

/* --- row kernels (generic; AVX2 twins in sdpa_avx2.c) ----------------------- */

float slm_sdpa_softmax_row_generic(float *s, int n, int a, int b)
{
    float mx = -INFINITY;
    for (int j = a; j < b; j++) mx = s[j] > mx ? s[j] : mx;
    double sum = 0;
    for (int j = a; j < b; j++) {
        s[j] = expf(s[j] - mx);
        sum += s[j];
    }
    const float inv = (float)(1.0 / sum);
    for (int j = 0; j < a; j++) s[j] = 0;
    for (int j = a; j < b; j++) s[j] *= inv;
    for (int j = b; j < n; j++) s[j] = 0;
    return mx + (float)log(sum);
}

void slm_sdpa_probs_row_generic(float *s, int n, int a, int b, float lse)
{
    for (int j = 0; j < a; j++) s[j] = 0;
    for (int j = a; j < b; j++) s[j] = expf(s[j] - lse);
    for (int j = b; j < n; j++) s[j] = 0;
}

void slm_sdpa_dscore_row_generic(float *ds, const float *p, int n, int a, int b, float delta)
{
    for (int j = 0; j < a; j++) ds[j] = 0;
    for (int j = a; j < b; j++) ds[j] = p[j] * (ds[j] - delta);
    for (int j = b; j < n; j++) ds[j] = 0;
}

typedef struct row_kernels {
    float (*softmax)(float *s, int n, int a, int b);
    void (*probs)(float *s, int n, int a, int b, float lse);
    void (*dscore)(float *ds, const float *p, int n, int a, int b, float delta);
} row_kernels;

static row_kernels kernels(void)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2())
        return (row_kernels){slm_sdpa_softmax_row_avx2, slm_sdpa_probs_row_avx2,
                             slm_sdpa_dscore_row_avx2};
#endif
    return (row_kernels){slm_sdpa_softmax_row_generic, slm_sdpa_probs_row_generic,
                         slm_sdpa_dscore_row_generic};
}

/* --- shapes ------------------------------------------------------------------ */

slm_status slm_sdpa_check(const slm_sdpa_shape *sh, slm_error *err)
{
    const char *bad = sh->B < 1 ? "B" : sh->T < 1 ? "T" : sh->n_head < 1 ? "n_head"
                    : sh->n_head_kv < 1 ? "n_head_kv" : sh->head_dim < 1 ? "head_dim" : NULL;
    if (bad) return slm_error_set(err, SLM_EINVAL, "sdpa: %s must be positive", bad);
    if (sh->n_head % sh->n_head_kv)
        return slm_error_set(err, SLM_EINVAL, "sdpa: n_head %d is not a multiple of n_head_kv %d",
                             sh->n_head, sh->n_head_kv);
    if (!isfinite(sh->scale))
        return slm_error_set(err, SLM_EINVAL, "sdpa: scale must be finite");
    if (!(sh->softcap >= 0) || !isfinite(sh->softcap))
        return slm_error_set(err, SLM_EINVAL, "sdpa: softcap must be >= 0 (0: none)");
    if (sh->window < 0)
        return slm_error_set(err, SLM_EINVAL, "sdpa: window must be >= 0 (0: none)");
    /* every size below 2^62 bytes (B*H*T*T floats the largest), and the
     * row widths H*D within the int of cblas */
    const double rows = (double)sh->B * sh->T;
    const double big = fmax(rows * sh->n_head * sh->head_dim,
                            (double)sh->B * sh->n_head * sh->T * sh->T);
    if (big * sizeof(float) > 0x1p62 || (double)sh->n_head * sh->head_dim > INT32_MAX)
        return slm_error_set(err, SLM_ERANGE, "sdpa: shape B=%d T=%d H=%d D=%d too large", sh->B,
                             sh->T, sh->n_head, sh->head_dim);
    return SLM_OK;
}

static size_t probs_floats(const slm_sdpa_shape *sh)
{
    return (size_t)sh->B * (size_t)sh->n_head * (size_t)sh->T * (size_t)sh->T;
}

static size_t lse_floats(const slm_sdpa_shape *sh)
{
    return (size_t)sh->B * (size_t)sh->n_head * (size_t)sh->T;
}

int slm_sdpa_keep_probs_fits(const slm_sdpa_shape *sh, size_t budget)
{
    return probs_floats(sh) <= budget / sizeof(float);
}

size_t slm_sdpa_saved_bytes(const slm_sdpa_shape *sh)
{
    return (lse_floats(sh) + (sh->keep_probs ? probs_floats(sh) : 0)) * sizeof(float);
}

/* --- shared walk ------------------------------------------------------------- */

typedef struct sdpa_ctx {
    slm_sdpa_shape sh;
    const float *q, *k, *v, *o, *dO;
    float *out, *dq, *dk, *dv;
    float *lse, *P;          /* into saved: (B, H, T), (B, H, T, T) or NULL */
    int accumulate;
    float *scratch;          /* per thread, `stride` floats apart */
    size_t stride;
    int max_cols;            /* keys a query block sees at most */
    row_kernels rk;
} sdpa_ctx;

/* first key row t sees */
static int first_key(const slm_sdpa_shape *sh, int t)
{
    return sh->window > 0 && t - sh->window + 1 > 0 ? t - sh->window + 1 : 0;
}

static void split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

/* s' = c tanh(s / c) over the visible entries */
static void softcap_row(float *s, int a, int b, float c)
{
    for (int j = a; j < b; j++) s[j] = c * tanhf(s[j] / c);
}

/* S (rows, n) at ld = scale * Q[r0..r1) K[c0..c0+n)^T of query head h */
static void scores(const sdpa_ctx *c, int bseq, int h, int r0, int rows, int c0, int n,
                   float *S, int ld)
{
    const slm_sdpa_shape *sh = &c->sh;
    const int D = sh->head_dim, HD = sh->n_head * D, KD = sh->n_head_kv * D;
    const int g = h / (sh->n_head / sh->n_head_kv);
    const float *qh = c->q + ((size_t)bseq * sh->T + r0) * HD + (size_t)h * D;
    const float *kg = c->k + ((size_t)bseq * sh->T + c0) * KD + (size_t)g * D;
    slm_sgemm(0, 1, rows, n, D, sh->scale, qh, HD, kg, KD,
                0.0f, S, ld);
}

/* --- forward ---------------------------------------------------------------- */

static void forward_task(void *arg, int ith, int nth)
{
    const sdpa_ctx *c = arg;
    const slm_sdpa_shape *sh = &c->sh;
    const int T = sh->T, H = sh->n_head, D = sh->head_dim;
    const int HD = H * D, KD = sh->n_head_kv * D, group = H / sh->n_head_kv;
    float *scratch = c->scratch + (size_t)ith * c->stride;
    int64_t t0, t1;
    split((int64_t)sh->B * H, ith, nth, &t0, &t1);
    for (int64_t task = t0; task < t1; task++) {
        const int bseq = (int)(task / H), h = (int)(task % H), g = h / group;
        float *lse = c->lse + (size_t)task * T;
        float *P = c->P ? c->P + (size_t)task * T * T : NULL;
        for (int r0 = 0; r0 < T; r0 += SLM_SDPA_QBLOCK) {
            const int r1 = r0 + SLM_SDPA_QBLOCK < T ? r0 + SLM_SDPA_QBLOCK : T;
            const int rows = r1 - r0, c0 = first_key(sh, r0), n = r1 - c0;
            /* the block's scores, then its probabilities in place:
             * (rows, n) in P (row stride T, from column c0) or scratch */
            float *S = P ? P + (size_t)r0 * T + c0 : scratch;
            const int ld = P ? T : n;
            scores(c, bseq, h, r0, rows, c0, n, S, ld);
            for (int i = 0; i < rows; i++) {
                const int t = r0 + i, a = first_key(sh, t) - c0, b = t + 1 - c0;
                float *row = S + (size_t)i * ld;
                if (sh->softcap > 0) softcap_row(row, a, b, sh->softcap);
                lse[t] = c->rk.softmax(row, n, a, b);
                if (P) {
                    /* the rest of P's row: masked keys */
                    memset(P + (size_t)t * T, 0, (size_t)c0 * sizeof(float));
                    memset(P + (size_t)t * T + r1, 0, (size_t)(T - r1) * sizeof(float));
                }
            }
            /* o[r0..r1) of head h = P V[c0..r1) */
            const float *vg = c->v + ((size_t)bseq * T + c0) * KD + (size_t)g * D;
            float *oh = c->out + ((size_t)bseq * T + r0) * HD + (size_t)h * D;
            slm_sgemm(0, 0, rows, D, n, 1.0f, S, ld, vg,
                        KD, 0.0f, oh, HD);
        }
    }
}

/* the pool threads to use for n tasks, and each one's scratch */
static slm_status prepare(sdpa_ctx *c, slm_pool *pool, int64_t tasks, size_t per_thread,
                          int *nth, slm_error *err)
{
    slm_error local;
    if (!err) err = &local;
    *nth = slm_pool_size(pool);
    if (*nth > tasks) *nth = (int)tasks;
    c->stride = (per_thread + 15) & ~(size_t)15;
    /* SLM_EINVAL without a pool, SLM_ENOMEM when it cannot grow */
    c->scratch = slm_pool_scratch(pool, (size_t)*nth * c->stride * sizeof(float), err);
    return c->scratch ? SLM_OK : err->code;
}

static void init_ctx(sdpa_ctx *c, const slm_sdpa_shape *sh, const float *saved)
{
    memset(c, 0, sizeof *c);
    c->sh = *sh;
    c->lse = (float *)saved;
    c->P = sh->keep_probs ? (float *)saved + lse_floats(sh) : NULL;
    const int w = sh->window > 0 ? SLM_SDPA_QBLOCK + sh->window - 1 : sh->T;
    c->max_cols = w < sh->T ? w : sh->T;
    c->rk = kernels();
}

slm_status slm_sdpa_forward(slm_pool *pool, const slm_sdpa_shape *sh, const float *q,
                            const float *k, const float *v, float *o, float *saved,
                            slm_error *err)
{
    slm_status st = slm_sdpa_check(sh, err);
    if (st) return st;
    sdpa_ctx c;
    init_ctx(&c, sh, saved);
    c.q = q, c.k = k, c.v = v, c.out = o;
    int nth;
    /* scratch: one block's scores when P is not kept */
    st = prepare(&c, pool, (int64_t)sh->B * sh->n_head, (size_t)SLM_SDPA_QBLOCK * c.max_cols,
                 &nth, err);
    if (st) return st;
    slm_pool_run(pool, nth, forward_task, &c);
    return SLM_OK;
}

/* --- backward ---------------------------------------------------------------- */

/* rows [r0, r0 + rows) of a (T, width) slab at column col, zeroed */
static void zero_rows(float *x, int rows, int width, int col, int n)
{
    for (int r = 0; r < rows; r++) memset(x + (size_t)r * width + col, 0, (size_t)n * sizeof(float));
}

/* One query block [r0, r1) of head h in sequence bseq: every gradient it
 * contributes. P and dS are (rows, n) blocks; delta holds rows floats. */
static void backward_block(const sdpa_ctx *c, int bseq, int h, int r0, int r1, float *Pbuf,
                           float *dS, float *delta)
{
    const slm_sdpa_shape *sh = &c->sh;
    const int T = sh->T, D = sh->head_dim, HD = sh->n_head * D, KD = sh->n_head_kv * D;
    const int g = h / (sh->n_head / sh->n_head_kv);
    const int rows = r1 - r0, c0 = first_key(sh, r0), n = r1 - c0;
    const size_t task = (size_t)bseq * sh->n_head + (size_t)h;
    const float *lse = c->lse + task * T;
    const size_t qrow = ((size_t)bseq * T + r0) * HD + (size_t)h * D;
    const size_t krow = ((size_t)bseq * T + c0) * KD + (size_t)g * D;
    const float *P;
    int ldp;
    if (c->P) {
        P = c->P + task * T * T + (size_t)r0 * T + c0;
        ldp = T;
    } else {
        /* recompute: P = exp(s' - lse) */
        scores(c, bseq, h, r0, rows, c0, n, Pbuf, n);
        for (int i = 0; i < rows; i++) {
            const int t = r0 + i, a = first_key(sh, t) - c0, b = t + 1 - c0;
            float *row = Pbuf + (size_t)i * n;
            if (sh->softcap > 0) softcap_row(row, a, b, sh->softcap);
            c->rk.probs(row, n, a, b, lse[t]);
        }
        P = Pbuf;
        ldp = n;
    }
    /* delta_t = dO_t . O_t */
    for (int i = 0; i < rows; i++) {
        const float *x = c->dO + qrow + (size_t)i * HD, *y = c->o + qrow + (size_t)i * HD;
        float d = 0;
        for (int j = 0; j < D; j++) d += x[j] * y[j];
        delta[i] = d;
    }
    /* dV[c0..r1) += P^T dO */
    slm_sgemm(1, 0, n, D, rows, 1.0f, P, ldp, c->dO + qrow,
                HD, 1.0f, c->dv + krow, KD);
    /* dP = dO V^T, then dS' = P (dP - delta) in place */
    slm_sgemm(0, 1, rows, n, D, 1.0f, c->dO + qrow, HD,
                c->v + krow, KD, 0.0f, dS, n);
    for (int i = 0; i < rows; i++) {
        const int t = r0 + i, a = first_key(sh, t) - c0, b = t + 1 - c0;
        float *ds = dS + (size_t)i * n;
        const float *p = P + (size_t)i * ldp;
        c->rk.dscore(ds, p, n, a, b, delta[i]);
        if (sh->softcap > 0) {
            /* ds/ds' of c tanh(s/c) is 1 - (s'/c)^2, s' = log P + lse */
            const float cap = sh->softcap;
            for (int j = a; j < b; j++) {
                if (p[j] > 0) {
                    const float u = (logf(p[j]) + lse[t]) / cap;
                    ds[j] *= 1.0f - u * u;
                }
            }
        }
    }
    /* dQ[r0..r1) += scale dS K,  dK[c0..r1) += scale dS^T Q */
    slm_sgemm(0, 0, rows, D, n, sh->scale, dS, n,
                c->k + krow, KD, 1.0f, c->dq + qrow, HD);
    slm_sgemm(1, 0, n, D, rows, sh->scale, dS, n,
                c->q + qrow, HD, 1.0f, c->dk + krow, KD);
}

static void backward_task(void *arg, int ith, int nth)
{
    const sdpa_ctx *c = arg;
    const slm_sdpa_shape *sh = &c->sh;
    const int T = sh->T, D = sh->head_dim, HKV = sh->n_head_kv, group = sh->n_head / HKV;
    const int HD = sh->n_head * D, KD = HKV * D;
    float *Pbuf = c->scratch + (size_t)ith * c->stride;
    float *dS = Pbuf + (size_t)SLM_SDPA_QBLOCK * c->max_cols;
    float *delta = dS + (size_t)SLM_SDPA_QBLOCK * c->max_cols;
    int64_t t0, t1;
    split((int64_t)sh->B * HKV, ith, nth, &t0, &t1);
    for (int64_t task = t0; task < t1; task++) {
        /* this task owns dk, dv of kv head g and dq of its query heads */
        const int bseq = (int)(task / HKV), g = (int)(task % HKV);
        const size_t row0 = (size_t)bseq * T;
        if (!c->accumulate) {
            zero_rows(c->dk + row0 * KD, T, KD, g * D, D);
            zero_rows(c->dv + row0 * KD, T, KD, g * D, D);
            zero_rows(c->dq + row0 * HD, T, HD, g * group * D, group * D);
        }
        for (int h = g * group; h < (g + 1) * group; h++)
            for (int r0 = 0; r0 < T; r0 += SLM_SDPA_QBLOCK) {
                const int r1 = r0 + SLM_SDPA_QBLOCK < T ? r0 + SLM_SDPA_QBLOCK : T;
                backward_block(c, bseq, h, r0, r1, Pbuf, dS, delta);
            }
    }
}

slm_status slm_sdpa_backward(slm_pool *pool, const slm_sdpa_shape *sh, const float *q,
                             const float *k, const float *v, const float *o,
                             const float *saved, const float *dO, float *dq, float *dk,
                             float *dv, int accumulate, slm_error *err)
{
    slm_status st = slm_sdpa_check(sh, err);
    if (st) return st;
    sdpa_ctx c;
    init_ctx(&c, sh, saved);
    c.q = q, c.k = k, c.v = v, c.o = o, c.dO = dO;
    c.dq = dq, c.dk = dk, c.dv = dv;
    c.accumulate = accumulate;
    int nth;
    /* scratch: a recomputed P block, a dS block, the block's deltas */
    st = prepare(&c, pool, (int64_t)sh->B * sh->n_head_kv,
                 2 * (size_t)SLM_SDPA_QBLOCK * c.max_cols + SLM_SDPA_QBLOCK, &nth, err);
    if (st) return st;
    slm_pool_run(pool, nth, backward_task, &c);
    return SLM_OK;
}
