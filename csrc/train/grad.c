/* Backward kernels, f32 linear layer and softmax-cross-entropy (see grad.h
 * for the formulas). The scalar loops here are the reference the
 * AVX2 twins (grad_avx2.c) are tested against; the public functions pick
 * the AVX2 path at run time when slm_kernels_use_avx2(). */
#include "grad.h"

#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/sgemm.h"
#include "../kernels/vecdot.h"

/* Below these amounts of work per thread a wake-up of the workers costs
 * more than it saves: multiply-adds of a product, elements of a memory-
 * bound loop, elements of a loop with an exp per element. */
#define MIN_FLOPS_PER_THREAD (64 * 1024)
#define MIN_ELEMS_PER_THREAD (32 * 1024)
#define MIN_EXPS_PER_THREAD (8 * 1024)
/* Elementwise ranges are cut at multiples of 16 floats (a cache line), so
 * that two threads never write the same line. */
#define LINE 16
/* Columns summed at a time into double accumulators (db, dw). */
#define COL_BLOCK 256
/* Elements per chunk of slm_grad_sumsq (fixed: the sum does not depend on
 * the thread count). */
#define SUMSQ_CHUNK 8192

static void split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

/* [lo, hi) of n elements for thread ith, cut at whole cache lines */
static void split_lines(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
    const int64_t lines = (n + LINE - 1) / LINE;
    split(lines, ith, nth, lo, hi);
    *lo *= LINE;
    *hi = *hi * LINE < n ? *hi * LINE : n;
}

/* The pool to run on (NULL when busy with another job: the caller's
 * thread alone) and how many threads `work` units deserve at `min` each. */
static int threads_for(slm_pool **pool, double work, double min)
{
    if (slm_pool_busy(*pool)) *pool = NULL;
    const int nth = slm_pool_size(*pool);
    const double k = work / min;
    return k < 1 ? 1 : k < nth ? (int)k : nth;
}

/* bytes of scratch: the pool's (it is not busy: threads_for ran first) or
 * a malloc'd block left in *owned for the caller to free */
static void *scratch(slm_pool *pool, size_t bytes, void **owned, slm_error *err)
{
    *owned = NULL;
    if (pool) return slm_pool_scratch(pool, bytes, err);
    void *p = *owned = malloc(bytes ? bytes : 1);
    if (!p) slm_error_set(err, SLM_ENOMEM, "grad: out of memory for %zu bytes of scratch", bytes);
    return p;
}

/* --- linear ------------------------------------------------------------------ */

typedef struct lin_ctx {
    float *y, *dx, *dW, *db;
    const float *x, *W, *b, *dy;
    int n, in, out;
    int accumulate;
} lin_ctx;

/* y = x W^T + b: by rows of y when there are more rows than columns, else
 * by columns (W's rows); the bias is copied in first and sgemm adds to it */
static void linear_task(void *vc, int ith, int nth)
{
    const lin_ctx *c = vc;
    int64_t lo, hi;
    const int by_rows = c->n >= c->out;
    split(by_rows ? c->n : c->out, ith, nth, &lo, &hi);
    if (hi <= lo) return;
    const int64_t r0 = by_rows ? lo : 0, r1 = by_rows ? hi : c->n;
    const int64_t o0 = by_rows ? 0 : lo, o1 = by_rows ? c->out : hi;
    float *y = c->y + r0 * c->out + o0;
    if (c->b)
        for (int64_t r = 0; r < r1 - r0; r++) memcpy(y + r * c->out, c->b + o0, (size_t)(o1 - o0) * sizeof(float));
    slm_sgemm(0, 1, (int)(r1 - r0), (int)(o1 - o0), c->in, 1.0f,
                c->x + r0 * c->in, c->in, c->W + o0 * c->in, c->in, c->b ? 1.0f : 0.0f, y, c->out);
}

/* db[c0..c1) += column sums of dy (rows, ld), in double, rows in order */
static void col_sums(float *db, const float *dy, int64_t rows, int64_t ld, int64_t c0, int64_t c1)
{
    double acc[COL_BLOCK];
    for (int64_t j0 = c0; j0 < c1; j0 += COL_BLOCK) {
        const int64_t m = c1 - j0 < COL_BLOCK ? c1 - j0 : COL_BLOCK;
        memset(acc, 0, sizeof acc);
        for (int64_t r = 0; r < rows; r++) {
            const float *row = dy + r * ld + j0;
            for (int64_t j = 0; j < m; j++) acc[j] += row[j];
        }
        for (int64_t j = 0; j < m; j++) db[j0 + j] += (float)acc[j];
    }
}

/* every thread its slice of dx (rows of n), of dW (rows of out, or
 * columns of in) and of db (columns): no element has two writers */
static void linear_backward_task(void *vc, int ith, int nth)
{
    const lin_ctx *c = vc;
    int64_t lo, hi;
    if (c->dx) {
        /* dx[r0:r1] (+)= dy[r0:r1] (rows, out) . W (out, in) */
        split(c->n, ith, nth, &lo, &hi);
        if (hi > lo)
            slm_sgemm(0, 0, (int)(hi - lo), c->in, c->out, 1.0f,
                        c->dy + lo * c->out, c->out, c->W, c->in, c->accumulate ? 1.0f : 0.0f,
                        c->dx + lo * c->in, c->in);
    }
    if (c->dW) {
        if (c->out >= c->in) {
            /* dW[o0:o1] += dy[:, o0:o1]^T (o, n) . x (n, in) */
            split(c->out, ith, nth, &lo, &hi);
            if (hi > lo)
                slm_sgemm(1, 0, (int)(hi - lo), c->in, c->n, 1.0f,
                            c->dy + lo, c->out, c->x, c->in, 1.0f, c->dW + lo * c->in, c->in);
        } else {
            /* dW[:, i0:i1] += dy^T (out, n) . x[:, i0:i1] */
            split(c->in, ith, nth, &lo, &hi);
            if (hi > lo)
                slm_sgemm(1, 0, c->out, (int)(hi - lo), c->n, 1.0f,
                            c->dy, c->out, c->x + lo, c->in, 1.0f, c->dW + lo, c->in);
        }
    }
    if (c->db) {
        split(c->out, ith, nth, &lo, &hi);
        col_sums(c->db, c->dy, c->n, c->out, lo, hi);
    }
}

static slm_status linear_dims(int64_t n, int64_t in, int64_t out, slm_error *err)
{
    if (n < 0 || in < 1 || out < 1)
        return slm_error_set(err, SLM_EINVAL, "linear: bad shape n=%lld in=%lld out=%lld", (long long)n,
                             (long long)in, (long long)out);
    if (n > INT_MAX || in > INT_MAX || out > INT_MAX)
        return slm_error_set(err, SLM_ERANGE, "linear: a dimension exceeds %d (n=%lld in=%lld out=%lld)",
                             INT_MAX, (long long)n, (long long)in, (long long)out);
    return SLM_OK;
}

slm_status slm_grad_linear(slm_pool *pool, float *y, const float *x, const float *W,
                           const float *b, int64_t n, int64_t in, int64_t out, slm_error *err)
{
    slm_status st = linear_dims(n, in, out, err);
    if (st || n == 0) return st;
    lin_ctx c = {.y = y, .x = x, .W = W, .b = b, .n = (int)n, .in = (int)in, .out = (int)out};
    const int nth = threads_for(&pool, (double)n * in * out, MIN_FLOPS_PER_THREAD);
    slm_pool_run(pool, nth, linear_task, &c);
    return SLM_OK;
}

slm_status slm_grad_linear_backward(slm_pool *pool, float *dx, float *dW, float *db,
                                    const float *dy, const float *x, const float *W, int64_t n,
                                    int64_t in, int64_t out, int accumulate, slm_error *err)
{
    slm_status st = linear_dims(n, in, out, err);
    if (st) return st;
    if (n == 0) {   /* no rows: dx is empty, dW and db get nothing */
        return SLM_OK;
    }
    lin_ctx c = {.dx = dx, .dW = dW, .db = db, .dy = dy, .x = x, .W = W, .n = (int)n, .in = (int)in,
                 .out = (int)out, .accumulate = accumulate};
    const double work = (double)n * in * out * ((dx != NULL) + (dW != NULL)) + (db ? (double)n * out : 0);
    const int nth = threads_for(&pool, work, MIN_FLOPS_PER_THREAD);
    slm_pool_run(pool, nth, linear_backward_task, &c);
    return SLM_OK;
}

/* --- embedding ------------------------------------------------------------------ */

typedef struct embed_ctx {
    float *dW;
    const int32_t *ids;
    const float *dy;
    int64_t n, dim;
} embed_ctx;

/* every thread walks all the ids for its own columns of dW */
static void embed_task(void *vc, int ith, int nth)
{
    const embed_ctx *c = vc;
    int64_t c0, c1;
    split_lines(c->dim, ith, nth, &c0, &c1);
    for (int64_t i = 0; i < c->n; i++) {
        float *d = c->dW + (int64_t)c->ids[i] * c->dim;
        const float *s = c->dy + i * c->dim;
        for (int64_t j = c0; j < c1; j++) d[j] += s[j];
    }
}

slm_status slm_grad_embed_backward(slm_pool *pool, float *dW, int64_t vocab, int64_t dim,
                                   const int32_t *ids, const float *dy, int64_t n, slm_error *err)
{
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return slm_error_set(err, SLM_ERANGE, "embed_backward: id %d (entry %lld) outside 0..%lld",
                                 (int)ids[i], (long long)i, (long long)vocab - 1);
    embed_ctx c = {dW, ids, dy, n, dim};
    /* whole cache lines per thread: at most one thread per 16 columns */
    int nth = threads_for(&pool, (double)n * dim, MIN_ELEMS_PER_THREAD);
    if (nth > (dim + LINE - 1) / LINE) nth = (int)((dim + LINE - 1) / LINE);
    slm_pool_run(pool, nth, embed_task, &c);
    return SLM_OK;
}

/* --- RMSNorm -------------------------------------------------------------------- */

typedef struct rms_ctx {
    float *dx, *dw;
    const float *dy, *x, *w;
    float *r;            /* (rows) 1 / sqrt(mean(x^2) + eps) per row */
    int64_t rows, n;
    float eps;
    int accumulate, avx2;
} rms_ctx;

/* rows: r and dx = r g - x r^3 (g . x) / n, g = dy w */
static void rms_rows_task(void *vc, int ith, int nth)
{
    const rms_ctx *c = vc;
    const int64_t n = c->n;
    int64_t r0, r1;
    split(c->rows, ith, nth, &r0, &r1);
#if defined(__x86_64__)
    if (c->avx2) {
        slm_grad_rms_rows_avx2(c->dx ? c->dx + r0 * n : NULL, c->r + r0, c->dy + r0 * n, c->x + r0 * n, c->w,
                               r1 - r0, n, c->eps, c->accumulate);
        return;
    }
#endif
    for (int64_t r = r0; r < r1; r++) {
        const float *x = c->x + r * n, *dy = c->dy + r * n;
        /* the forward's r, rounded as slm_ops_rmsnorm rounds it */
        double ss = 0, gx = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
        const float rs = 1.0f / sqrtf((float)(ss / (double)n) + c->eps);
        c->r[r] = rs;
        if (!c->dx) continue;
        if (c->w)
            for (int64_t i = 0; i < n; i++) gx += (double)(dy[i] * c->w[i]) * x[i];
        else
            for (int64_t i = 0; i < n; i++) gx += (double)dy[i] * x[i];
        const float k = (float)((double)rs * rs * rs * gx / (double)n);
        float *dx = c->dx + r * n;
        for (int64_t i = 0; i < n; i++) {
            const float g = c->w ? dy[i] * c->w[i] : dy[i];
            const float v = rs * g - k * x[i];
            dx[i] = c->accumulate ? dx[i] + v : v;
        }
    }
}

/* columns: dw[j] += sum over rows of dy[r][j] (x[r][j] r[r]), in double */
static void rms_cols_task(void *vc, int ith, int nth)
{
    const rms_ctx *c = vc;
    int64_t c0, c1;
    split_lines(c->n, ith, nth, &c0, &c1);
#if defined(__x86_64__)
    if (c->avx2) {
        slm_grad_rms_cols_avx2(c->dw, c->dy, c->x, c->r, c->rows, c->n, c0, c1);
        return;
    }
#endif
    double acc[COL_BLOCK];
    for (int64_t j0 = c0; j0 < c1; j0 += COL_BLOCK) {
        const int64_t m = c1 - j0 < COL_BLOCK ? c1 - j0 : COL_BLOCK;
        memset(acc, 0, sizeof acc);
        for (int64_t r = 0; r < c->rows; r++) {
            const float *x = c->x + r * c->n + j0, *dy = c->dy + r * c->n + j0;
            const float rs = c->r[r];
            for (int64_t j = 0; j < m; j++) acc[j] += (double)dy[j] * (x[j] * rs);
        }
        for (int64_t j = 0; j < m; j++) c->dw[j0 + j] += (float)acc[j];
    }
}

slm_status slm_grad_rmsnorm_backward(slm_pool *pool, float *dx, float *dw, const float *dy,
                                     const float *x, const float *w, int64_t rows, int64_t n,
                                     float eps, int accumulate, slm_error *err)
{
    if (rows < 1 || n < 1) return SLM_OK;
    if (!w) dw = NULL;
    if (!dx && !dw) return SLM_OK;
    const int nth = threads_for(&pool, (double)rows * n, MIN_ELEMS_PER_THREAD / 2);
    void *owned;
    float *r = scratch(pool, (size_t)rows * sizeof(float), &owned, err);
    if (!r) return err ? err->code : SLM_ENOMEM;
    rms_ctx c = {dx, dw, dy, x, w, r, rows, n, eps, accumulate, slm_kernels_use_avx2()};
    slm_pool_run(pool, nth, rms_rows_task, &c);
    if (dw) {
        int ncol = nth;
        if (ncol > (n + LINE - 1) / LINE) ncol = (int)((n + LINE - 1) / LINE);
        slm_pool_run(pool, ncol, rms_cols_task, &c);
    }
    free(owned);
    return SLM_OK;
}

/* --- RoPE ------------------------------------------------------------------------- */

/* Positions repeat every T rows, so the cos and sin of the T positions are
 * computed once per call, by slm_ops_rope itself: rotating the unit pair
 * (1, 0) leaves (1 c - 0 s, 1 s + 0 c) = (c, s) exactly, with attn_factor,
 * freq_scale and the factors folded in. The table has the layout of a
 * head of n_rot dims, c where the pair's first element is, s at its
 * second; each row is then rotated with the same two products and sum as
 * slm_ops_rope's, so the result is its bits. */
typedef struct rope_ctx {
    float *x;
    const float *tab;    /* (T, n_rot) */
    int64_t n_tok, T, n_heads, head_dim;
    int n_rot, neox, inverse;
} rope_ctx;

static void rope_task(void *vc, int ith, int nth)
{
    const rope_ctx *c = vc;
    const int half = c->n_rot / 2;
    /* normal: pair i = (2i, 2i+1); neox: pair i = (i, i + n_rot/2) */
    const int64_t stride = c->neox ? 1 : 2, off = c->neox ? half : 1;
    int64_t t0, t1;
    split(c->n_tok, ith, nth, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        const float *cs = c->tab + (t % c->T) * c->n_rot;
        for (int64_t h = 0; h < c->n_heads; h++) {
            float *v = c->x + (t * c->n_heads + h) * c->head_dim;
            if (!c->inverse)
                for (int i = 0; i < half; i++) {
                    float *a = v + i * stride;
                    const float co = cs[i * stride], si = cs[i * stride + off], x0 = a[0], x1 = a[off];
                    a[0] = x0 * co - x1 * si;
                    a[off] = x0 * si + x1 * co;
                }
            else   /* the transpose R(-theta): x0 c + x1 s, x1 c - x0 s */
                for (int i = 0; i < half; i++) {
                    float *a = v + i * stride;
                    const float co = cs[i * stride], si = cs[i * stride + off], x0 = a[0], x1 = a[off];
                    a[0] = x0 * co + x1 * si;
                    a[off] = x1 * co - x0 * si;
                }
        }
    }
}

static slm_status rope_run(slm_pool *pool, float *x, int64_t n_tok, int64_t T, int64_t n_heads,
                           int64_t head_dim, const slm_rope_params *p, int inverse, slm_error *err)
{
    if (n_tok < 1 || n_heads < 1 || p->n_rot < 2) return SLM_OK;
    if (T < 1 || p->n_rot % 2 || p->n_rot > head_dim)
        return slm_error_set(err, SLM_EINVAL, "rope: T = %lld, n_rot = %d, head_dim = %lld", (long long)T,
                             p->n_rot, (long long)head_dim);
    const int64_t Tt = T < n_tok ? T : n_tok;   /* positions in use */
    const int half = p->n_rot / 2, neox = p->mode == SLM_ROPE_NEOX;
    const int nth = threads_for(&pool, (double)n_tok * n_heads * p->n_rot, MIN_ELEMS_PER_THREAD);
    void *owned;
    float *tab = scratch(pool, (size_t)Tt * ((size_t)p->n_rot * sizeof(float) + sizeof(int64_t)), &owned, err);
    if (!tab) return err ? err->code : SLM_ENOMEM;
    int64_t *pos = (int64_t *)(void *)(tab + Tt * p->n_rot);
    for (int64_t t = 0; t < Tt; t++) {
        pos[t] = t;
        float *u = tab + t * p->n_rot;
        for (int i = 0; i < half; i++) {
            u[neox ? i : 2 * i] = 1.0f;
            u[neox ? i + half : 2 * i + 1] = 0.0f;
        }
    }
    slm_ops_rope(tab, Tt, 1, p->n_rot, pos, p);
    rope_ctx c = {x, tab, n_tok, Tt, n_heads, head_dim, p->n_rot, neox, inverse};
    slm_pool_run(pool, nth, rope_task, &c);
    free(owned);
    return SLM_OK;
}

slm_status slm_grad_rope(slm_pool *pool, float *x, int64_t n_tok, int64_t T, int64_t n_heads,
                         int64_t head_dim, const slm_rope_params *p, slm_error *err)
{
    return rope_run(pool, x, n_tok, T, n_heads, head_dim, p, 0, err);
}

slm_status slm_grad_rope_backward(slm_pool *pool, float *dx, int64_t n_tok, int64_t T, int64_t n_heads,
                                  int64_t head_dim, const slm_rope_params *p, slm_error *err)
{
    return rope_run(pool, dx, n_tok, T, n_heads, head_dim, p, 1, err);
}

/* --- elementwise ops ------------------------------------------------------------------ */

#define SQRT_2_OVER_PI 0.79788456080286535588f
#define GELU_A 0.044715f
/* exp arguments above this are clamped (e^88 = 1.65e38 is finite), so
 * 1 / (1 + e) and e / (1 + e) never give inf * 0 */
#define EXP_MAX 88.0f

/* silu'(z) from e = e^-z: s = 1 / (1 + e), 1 - s = e s (no cancellation),
 * silu' = s (1 + z (1 - s)) */
static void swiglu_bwd_scalar(float *dg, float *du, const float *dout, const float *g, const float *u,
                              int64_t n, int accumulate)
{
    for (int64_t i = 0; i < n; i++) {
        const float z = g[i], d = dout[i], ui = u[i];
        const float e = expf(fminf(-z, EXP_MAX));
        const float s = 1.0f / (1.0f + e);
        const float act = z * s, dact = s + z * s * (e * s);
        const float vg = d * ui * dact, vu = d * act;
        if (accumulate) {
            dg[i] += vg;
            du[i] += vu;
        } else {
            dg[i] = vg;
            du[i] = vu;
        }
    }
}

/* gelu(z) = z q with q = 0.5 (1 + tanh(y)) = 1 / (1 + e^-2y), y = k (z +
 * a z^3); 1 - tanh^2 = 4 q (1 - q) and 1 - q = e q, so
 * gelu'(z) = q + 2 z q (e q) k (1 + 3 a z^2), without the cancellation of
 * 1 + tanh for negative z */
static inline void gelu_parts(float z, float *act, float *dact)
{
    const float z2 = z * z;
    const float y = SQRT_2_OVER_PI * z * (1.0f + GELU_A * z2);
    const float e = expf(fminf(-2.0f * y, EXP_MAX));
    const float q = 1.0f / (1.0f + e);
    *act = z * q;
    *dact = q + 2.0f * z * q * (e * q) * SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_A * z2);
}

static void geglu_bwd_scalar(float *dg, float *du, const float *dout, const float *g, const float *u,
                             int64_t n, int accumulate)
{
    for (int64_t i = 0; i < n; i++) {
        const float d = dout[i], ui = u[i];
        float act, dact;
        gelu_parts(g[i], &act, &dact);
        const float vg = d * ui * dact, vu = d * act;
        if (accumulate) {
            dg[i] += vg;
            du[i] += vu;
        } else {
            dg[i] = vg;
            du[i] = vu;
        }
    }
}

static void silu_bwd_scalar(float *dx, const float *dy, const float *x, int64_t n, int accumulate)
{
    for (int64_t i = 0; i < n; i++) {
        const float z = x[i];
        const float e = expf(fminf(-z, EXP_MAX));
        const float s = 1.0f / (1.0f + e);
        const float v = dy[i] * (s + z * s * (e * s));
        dx[i] = accumulate ? dx[i] + v : v;
    }
}

static void gelu_bwd_scalar(float *dx, const float *dy, const float *x, int64_t n, int accumulate)
{
    for (int64_t i = 0; i < n; i++) {
        float act, dact;
        gelu_parts(x[i], &act, &dact);
        const float v = dy[i] * dact;
        dx[i] = accumulate ? dx[i] + v : v;
    }
}

typedef enum ew_op {
    EW_SWIGLU, EW_GEGLU, EW_SWIGLU_BWD, EW_GEGLU_BWD, EW_SILU_BWD, EW_GELU_BWD,
    EW_AXPY, EW_SCALE, EW_ZERO, EW_SOFTCAP_BWD
} ew_op;

typedef struct ew_ctx {
    ew_op op;
    float *a, *b;                 /* outputs: out / dg / dx / dst; du */
    const float *d, *x, *u;       /* dout / dy / src; g / x; u */
    float s;
    int64_t n;
    int accumulate, avx2;
} ew_ctx;

/* out = act(g) u on [0, n): the activation into a block on the stack
 * first, so that out may be g or u */
static void glu_fwd(float *out, const float *g, const float *u, int64_t n, int gelu)
{
    float t[256];
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        const int64_t m = n - i0 < 256 ? n - i0 : 256;
        if (gelu) slm_ops_gelu(t, g + i0, m);
        else slm_ops_silu(t, g + i0, m);
        for (int64_t i = 0; i < m; i++) out[i0 + i] = t[i] * u[i0 + i];
    }
}

static void ew_range(const ew_ctx *c, int64_t i0, int64_t m)
{
    float *a = c->a ? c->a + i0 : NULL, *b = c->b ? c->b + i0 : NULL;
    const float *d = c->d ? c->d + i0 : NULL, *x = c->x ? c->x + i0 : NULL, *u = c->u ? c->u + i0 : NULL;
#if defined(__x86_64__)
    if (c->avx2) switch (c->op) {
        case EW_SWIGLU_BWD: slm_grad_swiglu_bwd_avx2(a, b, d, x, u, m, c->accumulate); return;
        case EW_GEGLU_BWD: slm_grad_geglu_bwd_avx2(a, b, d, x, u, m, c->accumulate); return;
        case EW_SILU_BWD: slm_grad_silu_bwd_avx2(a, d, x, m, c->accumulate); return;
        case EW_GELU_BWD: slm_grad_gelu_bwd_avx2(a, d, x, m, c->accumulate); return;
        default: break;
        }
#endif
    switch (c->op) {
    case EW_SWIGLU: glu_fwd(a, x, u, m, 0); break;
    case EW_GEGLU: glu_fwd(a, x, u, m, 1); break;
    case EW_SWIGLU_BWD: swiglu_bwd_scalar(a, b, d, x, u, m, c->accumulate); break;
    case EW_GEGLU_BWD: geglu_bwd_scalar(a, b, d, x, u, m, c->accumulate); break;
    case EW_SILU_BWD: silu_bwd_scalar(a, d, x, m, c->accumulate); break;
    case EW_GELU_BWD: gelu_bwd_scalar(a, d, x, m, c->accumulate); break;
    case EW_AXPY:
        for (int64_t i = 0; i < m; i++) a[i] += c->s * d[i];
        break;
    case EW_SCALE:
        for (int64_t i = 0; i < m; i++) a[i] *= c->s;
        break;
    case EW_ZERO: memset(a, 0, (size_t)m * sizeof(float)); break;
    case EW_SOFTCAP_BWD:   /* y = c tanh(x / c): dy/dx = 1 - tanh^2 = 1 - (y / c)^2 */
        for (int64_t i = 0; i < m; i++) {
            const float t = x[i] * c->s, g = d[i] * (1.0f - t * t);
            a[i] = c->accumulate ? a[i] + g : g;
        }
        break;
    }
}

static void ew_task(void *vc, int ith, int nth)
{
    const ew_ctx *c = vc;
    int64_t lo, hi;
    split_lines(c->n, ith, nth, &lo, &hi);
    if (hi > lo) ew_range(c, lo, hi - lo);
}

static void ew_run(slm_pool *pool, ew_ctx *c)
{
    if (c->n < 1) return;
    const int exps = c->op <= EW_GELU_BWD;
    c->avx2 = slm_kernels_use_avx2();
    const int nth = threads_for(&pool, (double)c->n, exps ? MIN_EXPS_PER_THREAD : MIN_ELEMS_PER_THREAD);
    slm_pool_run(pool, nth, ew_task, c);
}

void slm_grad_swiglu(slm_pool *pool, float *out, const float *g, const float *u, int64_t n)
{
    ew_ctx c = {.op = EW_SWIGLU, .a = out, .x = g, .u = u, .n = n};
    ew_run(pool, &c);
}

void slm_grad_geglu(slm_pool *pool, float *out, const float *g, const float *u, int64_t n)
{
    ew_ctx c = {.op = EW_GEGLU, .a = out, .x = g, .u = u, .n = n};
    ew_run(pool, &c);
}

void slm_grad_swiglu_backward(slm_pool *pool, float *dg, float *du, const float *dout,
                              const float *g, const float *u, int64_t n, int accumulate)
{
    ew_ctx c = {.op = EW_SWIGLU_BWD, .a = dg, .b = du, .d = dout, .x = g, .u = u, .n = n,
                .accumulate = accumulate};
    ew_run(pool, &c);
}

void slm_grad_geglu_backward(slm_pool *pool, float *dg, float *du, const float *dout,
                             const float *g, const float *u, int64_t n, int accumulate)
{
    ew_ctx c = {.op = EW_GEGLU_BWD, .a = dg, .b = du, .d = dout, .x = g, .u = u, .n = n,
                .accumulate = accumulate};
    ew_run(pool, &c);
}

void slm_grad_silu_backward(slm_pool *pool, float *dx, const float *dy, const float *x, int64_t n,
                            int accumulate)
{
    ew_ctx c = {.op = EW_SILU_BWD, .a = dx, .d = dy, .x = x, .n = n, .accumulate = accumulate};
    ew_run(pool, &c);
}

void slm_grad_gelu_backward(slm_pool *pool, float *dx, const float *dy, const float *x, int64_t n,
                            int accumulate)
{
    ew_ctx c = {.op = EW_GELU_BWD, .a = dx, .d = dy, .x = x, .n = n, .accumulate = accumulate};
    ew_run(pool, &c);
}

void slm_grad_softcap_backward(slm_pool *pool, float *dx, const float *dy, const float *y, float cap,
                               int64_t n, int accumulate)
{
    ew_ctx c = {.op = EW_SOFTCAP_BWD, .a = dx, .d = dy, .x = y, .s = 1.0f / cap, .n = n,
                .accumulate = accumulate};
    ew_run(pool, &c);
}

void slm_grad_axpy(slm_pool *pool, float *dst, const float *src, float s, int64_t n)
{
    ew_ctx c = {.op = EW_AXPY, .a = dst, .d = src, .s = s, .n = n};
    ew_run(pool, &c);
}

void slm_grad_scale(slm_pool *pool, float *x, float s, int64_t n)
{
    ew_ctx c = {.op = EW_SCALE, .a = x, .s = s, .n = n};
    ew_run(pool, &c);
}

void slm_grad_zero(slm_pool *pool, float *x, int64_t n)
{
    ew_ctx c = {.op = EW_ZERO, .a = x, .n = n};
    ew_run(pool, &c);
}

/* --- softmax-cross-entropy ----------------------------------------------------------- */

/* One row: the loss logsumexp(x) - x[t] (0 when t < 0) and, in place,
 * scale (softmax(x) - onehot(t)). exp(x - max) is summed in double; the
 * target's entry is (p - 1) scale computed in double (p near 1 would
 * cancel in float). */
static double xent_row_scalar(float *x, int64_t V, int32_t t, float scale)
{
    if (t < 0) {
        memset(x, 0, (size_t)V * sizeof(float));
        return 0.0;
    }
    float mx = -INFINITY;
    for (int64_t i = 0; i < V; i++) mx = x[i] > mx ? x[i] : mx;
    const double xt = (double)x[t] - mx;
    double sum = 0;
    for (int64_t i = 0; i < V; i++) {
        x[i] = expf(x[i] - mx);
        sum += x[i];
    }
    const float k = (float)((double)scale / sum);
    const double pt = (double)x[t] / sum;
    for (int64_t i = 0; i < V; i++) x[i] *= k;
    x[t] = (float)((pt - 1.0) * scale);
    return log(sum) - xt;
}

/* one row through the path a call of slm_grad_xent takes (grad.h) */
double slm_grad_xent_row(float *x, int64_t V, int32_t t, float scale, int avx2)
{
#if defined(__x86_64__)
    if (avx2) return slm_grad_xent_row_avx2(x, V, t, scale);
#endif
    (void)avx2;
    return xent_row_scalar(x, V, t, scale);
}

typedef struct xent_ctx {
    float *logits;
    const int32_t *targets;
    double *loss;        /* (rows) */
    int64_t rows, V;
    float scale;
    int avx2;
} xent_ctx;

static void xent_task(void *vc, int ith, int nth)
{
    const xent_ctx *c = vc;
    int64_t r0, r1;
    split(c->rows, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *x = c->logits + r * c->V;
#if defined(__x86_64__)
        if (c->avx2) {
            c->loss[r] = slm_grad_xent_row_avx2(x, c->V, c->targets[r], c->scale);
            continue;
        }
#endif
        c->loss[r] = xent_row_scalar(x, c->V, c->targets[r], c->scale);
    }
}

slm_status slm_grad_xent(slm_pool *pool, float *logits, const int32_t *targets, int64_t rows,
                         int64_t V, float scale, double *loss, slm_error *err)
{
    *loss = 0;
    if (rows < 1) return SLM_OK;
    if (V < 1) return slm_error_set(err, SLM_EINVAL, "xent: %lld logits per row", (long long)V);
    for (int64_t r = 0; r < rows; r++)
        if (targets[r] >= V)
            return slm_error_set(err, SLM_ERANGE, "xent: target %d (row %lld) outside 0..%lld",
                                 (int)targets[r], (long long)r, (long long)V - 1);
    const int nth = threads_for(&pool, (double)rows * V, MIN_EXPS_PER_THREAD);
    void *owned;
    double *l = scratch(pool, (size_t)rows * sizeof(double), &owned, err);
    if (!l) return err ? err->code : SLM_ENOMEM;
    xent_ctx c = {logits, targets, l, rows, V, scale, slm_kernels_use_avx2()};
    slm_pool_run(pool, nth, xent_task, &c);
    double sum = 0;
    for (int64_t r = 0; r < rows; r++) sum += l[r];
    *loss = sum;
    free(owned);
    return SLM_OK;
}

/* --- sum of squares ------------------------------------------------------------------- */

typedef struct sumsq_ctx {
    const float *x;
    double *part;        /* one per chunk */
    int64_t n, chunks;
} sumsq_ctx;

static void sumsq_task(void *vc, int ith, int nth)
{
    const sumsq_ctx *c = vc;
    int64_t k0, k1;
    split(c->chunks, ith, nth, &k0, &k1);
    for (int64_t k = k0; k < k1; k++) {
        const int64_t i0 = k * SUMSQ_CHUNK, i1 = i0 + SUMSQ_CHUNK < c->n ? i0 + SUMSQ_CHUNK : c->n;
        /* four accumulators: squares of floats are exact in double, the
         * order is fixed by the chunk alone */
        double s[4] = {0, 0, 0, 0};
        int64_t i = i0;
        for (; i + 4 <= i1; i += 4)
            for (int j = 0; j < 4; j++) s[j] += (double)c->x[i + j] * c->x[i + j];
        for (; i < i1; i++) s[0] += (double)c->x[i] * c->x[i];
        c->part[k] = (s[0] + s[1]) + (s[2] + s[3]);
    }
}

slm_status slm_grad_sumsq(slm_pool *pool, const float *x, int64_t n, double *out, slm_error *err)
{
    *out = 0;
    if (n < 1) return SLM_OK;
    const int64_t chunks = (n + SUMSQ_CHUNK - 1) / SUMSQ_CHUNK;
    const int nth = threads_for(&pool, (double)n, MIN_ELEMS_PER_THREAD);
    void *owned;
    double *part = scratch(pool, (size_t)chunks * sizeof(double), &owned, err);
    if (!part) return err ? err->code : SLM_ENOMEM;
    sumsq_ctx c = {x, part, n, chunks};
    slm_pool_run(pool, nth, sumsq_task, &c);
    double s = 0;
    for (int64_t k = 0; k < chunks; k++) s += part[k];
    *out = s;
    free(owned);
    return SLM_OK;
}
