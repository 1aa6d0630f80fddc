/* The Mamba-1 mixer's training forward and backward (formulas, saved
 * layout and threading in mamba_grad.h): the projections, the conv, the
 * gates and the order of the steps. The scan's kernels are in
 * mamba_grad_scan.c. */
#include "mamba_grad.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../blocks/mamba.h"
#include "../kernels/ops.h"
#include "../kernels/sgemm.h"

/* Rows of a batch: B T <= 2^24 keeps every product below in int for
 * cblas and every size far from overflow. */
#define MAX_ROWS (1 << 24)
/* B and C gradients are summed over channels: one partial per block of
 * channels, at most this many blocks (threads beyond it idle in the
 * scan's backward). */
#define MAX_BLOCKS 16
/* Below this many multiply-adds a product runs on the calling thread. */
#define MIN_PARALLEL_WORK (64 * 1024)

/* --- shapes ------------------------------------------------------------------ */

static int64_t chunk_of(const slm_mamba_grad_shape *s)
{
    return s->chunk > 0 ? s->chunk : SLM_MAMBA_GRAD_CHUNK;
}

slm_status slm_mamba_grad_shape_check(const slm_mamba_grad_shape *s, slm_error *err)
{
    slm_mamba_shape h = {.version = 1, .dim = s->dim, .d_inner = s->d_inner, .d_conv = s->d_conv,
                         .d_state = s->d_state, .dt_rank = s->dt_rank, .n_group = 1};
    slm_status st = slm_mamba_shape_check(&h, err);
    if (st) return st;
    if (s->B < 1 || s->T < 1 || s->B > MAX_ROWS || s->T > MAX_ROWS || s->B * s->T > MAX_ROWS)
        return slm_error_set(err, SLM_EINVAL, "mamba train: B %lld and T %lld must be positive, B*T at most %d",
                             (long long)s->B, (long long)s->T, MAX_ROWS);
    if (s->chunk < 0)
        return slm_error_set(err, SLM_EINVAL, "mamba train: chunk %lld must be positive (0: default %d)",
                             (long long)s->chunk, SLM_MAMBA_GRAD_CHUNK);
    return SLM_OK;
}

/* dims and offsets of the saved arrays (layout in mamba_grad.h) */
typedef struct saved_view {
    int64_t n, di, S, R, nx, dc, K, nck;   /* K <= T; nck checkpoints a sequence */
    size_t xz, xc, xdb, delta, sig, y, ckpt, total;
} saved_view;

static saved_view saved_layout(const slm_mamba_grad_shape *s)
{
    saved_view v;
    v.n = s->B * s->T;
    v.di = s->d_inner;
    v.S = s->d_state;
    v.R = s->dt_rank;
    v.nx = v.R + 2 * v.S;
    v.dc = s->d_conv;
    v.K = chunk_of(s) < s->T ? chunk_of(s) : s->T;
    v.nck = (s->T + v.K - 1) / v.K - 1;
    const size_t n = (size_t)v.n, di = (size_t)v.di;
    v.xz = 0;
    v.xc = v.xz + n * 2 * di;
    v.xdb = v.xc + n * di;
    v.delta = v.xdb + n * (size_t)v.nx;
    v.sig = v.delta + n * di;
    v.y = v.sig + n * di;
    v.ckpt = v.y + n * di;
    v.total = v.ckpt + (size_t)s->B * (size_t)v.nck * di * (size_t)v.S;
    return v;
}

size_t slm_mamba_grad_saved_floats(const slm_mamba_grad_shape *s)
{
    if (slm_mamba_grad_shape_check(s, NULL) != SLM_OK) return 0;
    return saved_layout(s).total;
}

/* --- helpers ----------------------------------------------------------------- */

/* range [*c0, *c1) of thread ith among count items, in units of align (8
 * channels: threads write whole cache lines of each row) */
static void split(int64_t count, int64_t align, int ith, int nth, int64_t *c0, int64_t *c1)
{
    int64_t per = ((count + nth - 1) / nth + align - 1) / align * align;
    *c0 = per * ith < count ? per * ith : count;
    *c1 = *c0 + per < count ? *c0 + per : count;
}

/* C (M, N) = op(A) op(B) + beta C with op(A) = A (M, K) or, ta, Aᵀ for A
 * stored (K, M), and op(B) = B (K, N) or, tb, Bᵀ for B stored (N, K). A
 * local helper until csrc/train/grad.c's f32 linear kernels are shared.
 *
 * OpenBLAS's floats depend on the shape of the call (a product cut in two
 * slices of rows or columns differs in the last bits from the whole; the
 * AVX-512 path of slm_sgemm's do not, but other CPUs take OpenBLAS), so
 * C is cut into fixed tiles of GEMM_TM x GEMM_TN whatever the threads, and
 * the pool's threads share the tiles, each calling a one-thread slm_sgemm
 * per tile: the results do not depend on the number of threads. */
#define GEMM_TM 64
#define GEMM_TN 64

typedef struct gemm_job {
    int ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    const float *A, *B;
    float beta, *C;
} gemm_job;

static void gemm_tiles(void *ctx, int ith, int nth)
{
    const gemm_job *g = ctx;
    const int64_t tm = (g->M + GEMM_TM - 1) / GEMM_TM, tn = (g->N + GEMM_TN - 1) / GEMM_TN;
    int64_t q0, q1;
    split(tm * tn, 1, ith, nth, &q0, &q1);
    for (int64_t q = q0; q < q1; q++) {
        const int64_t m0 = q / tn * GEMM_TM, n0 = q % tn * GEMM_TN;
        const int64_t m = g->M - m0 < GEMM_TM ? g->M - m0 : GEMM_TM, n = g->N - n0 < GEMM_TN ? g->N - n0 : GEMM_TN;
        const float *A = g->ta ? g->A + m0 : g->A + m0 * g->lda;
        const float *B = g->tb ? g->B + n0 * g->ldb : g->B + n0;
        slm_sgemm(g->ta, g->tb, (int)m,
                    (int)n, (int)g->K, 1.0f, A, (int)g->lda, B, (int)g->ldb, g->beta, g->C + m0 * g->ldc + n0,
                    (int)g->ldc);
    }
}

static void gemm(slm_pool *pool, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    gemm_job g = {ta, tb, M, N, K, lda, ldb, ldc, A, B, beta, C};
    int nth = (double)M * (double)N * (double)K < MIN_PARALLEL_WORK ? 1 : slm_pool_size(pool);
    slm_pool_run(pool, nth, gemm_tiles, &g);
}

/* u[c0..c1) of row t of one sequence: the conv before its silu, summed as
 * slm_ops_causal_conv sums it (in float from the oldest tap; the taps
 * before token 0 add zeros there and are skipped here), then the bias.
 * x steps 2 di a row (in_proj's output), wT is the weight (d_conv, di). */
static void conv_row(float *u, const float *x, int64_t t, int64_t di, const float *wT, const float *bias,
                     int64_t dc, int64_t c0, int64_t c1)
{
    for (int64_t i = c0; i < c1; i++) u[i] = 0.0f;
    for (int64_t k = 0; k < dc; k++) {
        const int64_t tt = t - (dc - 1) + k;
        if (tt < 0) continue;
        const float *xr = x + tt * 2 * di, *w = wT + k * di;
        for (int64_t i = c0; i < c1; i++) u[i] += xr[i] * w[i];
    }
    slm_ops_add(u + c0, u + c0, c1 - c0, bias + c0, c1 - c0);
}

/* --- forward ----------------------------------------------------------------- */

typedef struct fwd_job {
    const slm_mamba_grad_shape *s;
    const slm_mamba_grad_params *p;
    saved_view v;
    float *saved;
    float *g;        /* (n, di) gated scan output, out_proj's input */
    float *wT;       /* (d_conv, di) the conv weights transposed */
    float *sstate;   /* (di, S) scan state of the current sequence */
} fwd_job;

/* xc = silu(conv(x) + conv_b), row by row over a range of channels */
static void conv_fwd_job(void *ctx, int ith, int nth)
{
    const fwd_job *j = ctx;
    const saved_view *v = &j->v;
    int64_t c0, c1;
    split(v->di, 8, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    for (int64_t b = 0; b < j->s->B; b++) {
        const size_t r0 = (size_t)(b * j->s->T);
        const float *x = j->saved + v->xz + r0 * 2 * (size_t)v->di;
        for (int64_t t = 0; t < j->s->T; t++) {
            float *u = j->saved + v->xc + (r0 + (size_t)t) * (size_t)v->di;
            conv_row(u, x, t, v->di, j->wT, j->p->conv_b, v->dc, c0, c1);
            slm_ops_silu(u + c0, u + c0, c1 - c0);
        }
    }
}

/* δ = softplus(dt + dt_b) as slm_mamba_scan makes it, and σ(dt + dt_b)
 * (its derivative) from the same exp */
static void softplus_job(void *ctx, int ith, int nth)
{
    const fwd_job *j = ctx;
    const size_t di = (size_t)j->v.di;
    int64_t r0, r1;
    split(j->v.n, 1, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *d = j->saved + j->v.delta + (size_t)r * di, *sg = j->saved + j->v.sig + (size_t)r * di;
        slm_ops_add(d, d, (int64_t)di, j->p->dt_b, (int64_t)di);
        for (size_t i = 0; i < di; i++) {
            const float v = d[i], e = expf(v);
            d[i] = v <= 20.0f ? log1pf(e) : v;
            sg[i] = v <= 20.0f ? e / (1.0f + e) : 1.0f;
        }
    }
}

/* y = scan + xc D chunk by chunk, keeping the checkpoints; g = y silu(z) */
static void scan_fwd_job(void *ctx, int ith, int nth)
{
    const fwd_job *j = ctx;
    const saved_view *v = &j->v;
    int64_t c0, c1;
    split(v->di, 8, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    const size_t di = (size_t)v->di, S = (size_t)v->S, nx = (size_t)v->nx;
    const int64_t T = j->s->T;
    float *xz = j->saved + v->xz, *xc = j->saved + v->xc, *xdb = j->saved + v->xdb;
    float *delta = j->saved + v->delta, *y = j->saved + v->y, *ckpt = j->saved + v->ckpt;
    for (int64_t b = 0; b < j->s->B; b++) {
        memset(j->sstate + (size_t)c0 * S, 0, (size_t)(c1 - c0) * S * sizeof(float));
        for (int64_t c = 0; c <= v->nck; c++) {
            const int64_t t0 = c * v->K, m = T - t0 < v->K ? T - t0 : v->K;
            const size_t r0 = (size_t)(b * T + t0);
            slm_mamba_grad_scan(y + r0 * di, v->di, j->sstate, xc + r0 * di, v->di, delta + r0 * di, v->di,
                                j->p->A, xdb + r0 * nx + (size_t)v->R, v->nx, j->p->D, (int)m, v->S, c0, c1);
            /* the state before chunk c + 1 */
            if (c < v->nck)
                memcpy(ckpt + (((size_t)b * (size_t)v->nck + (size_t)c) * di + (size_t)c0) * S,
                       j->sstate + (size_t)c0 * S, (size_t)(c1 - c0) * S * sizeof(float));
        }
        /* g = y * silu(z), as slm_mamba_forward's gate */
        for (int64_t t = 0; t < T; t++) {
            const size_t r = (size_t)(b * T + t);
            float *g = j->g + r * di + c0;
            slm_ops_silu(g, xz + r * 2 * di + di + c0, c1 - c0);
            slm_ops_mul(g, g, c1 - c0, y + r * di + c0, c1 - c0);
        }
    }
}

static void transpose_conv(float *wT, const float *w, int64_t di, int64_t dc)
{
    for (int64_t i = 0; i < di; i++)
        for (int64_t k = 0; k < dc; k++) wT[k * di + i] = w[i * dc + k];
}

slm_status slm_mamba_grad_forward(slm_pool *pool, const slm_mamba_grad_shape *s,
                                  const slm_mamba_grad_params *p, const float *h, float *out,
                                  float *saved, slm_error *err)
{
    slm_status st = slm_mamba_grad_shape_check(s, err);
    if (st) return st;
    fwd_job j = {.s = s, .p = p, .v = saved_layout(s), .saved = saved};
    const saved_view *v = &j.v;
    const size_t n = (size_t)v->n, di = (size_t)v->di;
    /* scratch: g (n, di) | conv weights (d_conv, di) | scan state (di, S) */
    const size_t floats = n * di + di * (size_t)v->dc + di * (size_t)v->S;
    float *work = malloc(floats * sizeof(float));
    if (!work) return slm_error_set(err, SLM_ENOMEM, "mamba train: out of memory for %zu floats of scratch", floats);
    j.g = work;
    j.wT = j.g + n * di;
    j.sstate = j.wT + di * (size_t)v->dc;
    float *xz = saved + v->xz, *xc = saved + v->xc, *xdb = saved + v->xdb;
    const int nth = slm_pool_size(pool);

    /* xz (n, 2 di) = h W_inᵀ */
    gemm(pool, 0, 1, v->n, 2 * v->di, s->dim, h, s->dim, p->in, s->dim, 0.0f, xz, 2 * v->di);
    /* xc (n, di) = silu(conv(x) + conv_b) */
    transpose_conv(j.wT, p->conv, v->di, v->dc);
    slm_pool_run(pool, nth, conv_fwd_job, &j);
    /* xdb (n, R + 2 S) = xc W_xᵀ */
    gemm(pool, 0, 1, v->n, v->nx, v->di, xc, v->di, p->x, v->di, 0.0f, xdb, v->nx);
    /* dt (n, di) = dt_r W_dtᵀ + dt_b (into δ's place), then δ and σ */
    gemm(pool, 0, 1, v->n, v->di, v->R, xdb, v->nx, p->dt, v->R, 0.0f, saved + v->delta, v->di);
    slm_pool_run(pool, nth, softplus_job, &j);
    /* y (n, di) = scan + xc D, checkpoints, g = y silu(z) */
    slm_pool_run(pool, nth, scan_fwd_job, &j);
    /* out (n, dim) = g W_outᵀ */
    gemm(pool, 0, 1, v->n, s->dim, v->di, j.g, v->di, p->out, v->di, 0.0f, out, s->dim);
    free(work);
    return SLM_OK;
}

/* --- backward ---------------------------------------------------------------- */

typedef struct bwd_job {
    const slm_mamba_grad_shape *s;
    const slm_mamba_grad_params *p;
    const slm_mamba_grad_grads *gr;
    saved_view v;
    const float *saved;
    float *G;       /* (n, di): y silu(z), then dxc, then du */
    float *dg;      /* (n, di): gradient of g, then of y */
    float *dxz;     /* (n, 2 di): dx (conv input) | dz */
    float *ddt;     /* (n, di): gradient of dt before softplus */
    float *dxdb;    /* (n, R + 2 S) */
    float *part;    /* (n_blk, n, 2 S): dB | dC partial of each block of channels */
    float *wT, *gwT, *gb;   /* (d_conv, di) x 2, (di): conv weights transposed, their gradient */
    float *buf;     /* per thread buf_floats: the scan's chunk buffer, then 2 rows of di */
    size_t buf_floats;
    int64_t blk, n_blk;   /* channels per block, blocks */
} bwd_job;

/* G = y silu(z), rows split (the input of out_proj again) */
static void gate_fwd_job(void *ctx, int ith, int nth)
{
    const bwd_job *j = ctx;
    const size_t di = (size_t)j->v.di;
    int64_t r0, r1;
    split(j->v.n, 1, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *g = j->G + (size_t)r * di;
        slm_ops_silu(g, j->saved + j->v.xz + (size_t)r * 2 * di + di, (int64_t)di);
        slm_ops_mul(g, g, (int64_t)di, j->saved + j->v.y + (size_t)r * di, (int64_t)di);
    }
}

/* per block of channels: the gate's backward (dg -> dy in place, dz), the
 * scan's backward sequence by sequence, ddt_b */
static void scan_bwd_job(void *ctx, int ith, int nth)
{
    const bwd_job *j = ctx;
    const saved_view *v = &j->v;
    const size_t di = (size_t)v->di, S = (size_t)v->S, nx = (size_t)v->nx, n = (size_t)v->n;
    const int64_t T = j->s->T;
    const float *xz = j->saved + v->xz, *y = j->saved + v->y;
    float *buf = j->buf + (size_t)ith * j->buf_floats;
    float *sz = buf + (2 * v->K + 3) * v->S, *acc = sz + di;   /* rows of di, indexed by channel */
    int64_t b0, b1;
    split(j->n_blk, 1, ith, nth, &b0, &b1);
    for (int64_t blk = b0; blk < b1; blk++) {
        const int64_t c0 = blk * j->blk, c1 = c0 + j->blk < v->di ? c0 + j->blk : v->di;
        float *part = j->part + (size_t)blk * n * 2 * S;
        memset(part, 0, n * 2 * S * sizeof(float));
        /* dy = dg silu(z), dz = dg y silu'(z) */
        for (size_t r = 0; r < n; r++) {
            const float *z = xz + r * 2 * di + di;
            float *dg = j->dg + r * di, *dz = j->dxz + r * 2 * di + di;
            slm_mamba_grad_sigmoid(sz + c0, z + c0, c1 - c0);
            for (int64_t i = c0; i < c1; i++) {
                const float gi = dg[i], si = sz[i];
                dz[i] = gi * y[r * di + (size_t)i] * si * (1.0f + z[i] * (1.0f - si));
                dg[i] = gi * z[i] * si;
            }
        }
        for (int64_t b = 0; b < j->s->B; b++) {
            const size_t r0 = (size_t)(b * T);
            slm_mamba_grad_scan_args a = {
                .x = j->saved + v->xc + r0 * di, .ld_x = v->di,
                .delta = j->saved + v->delta + r0 * di, .sig = j->saved + v->sig + r0 * di, .ld_d = v->di,
                .bc = j->saved + v->xdb + r0 * nx + (size_t)v->R, .ld_bc = v->nx,
                .dy = j->dg + r0 * di, .ld_dy = v->di,
                .A = j->p->A, .D = j->p->D,
                .ckpt = j->saved + v->ckpt + (size_t)b * (size_t)v->nck * di * S, .ld_ckpt = v->di * v->S,
                .dx = j->G + r0 * di, .ld_dx = v->di,
                .ddt = j->ddt + r0 * di, .ld_ddt = v->di,
                .dA = j->gr->A, .dD = j->gr->D,
                .dbc = part + r0 * 2 * S, .ld_dbc = 2 * v->S,
                .n = (int)T, .K = v->K, .d_state = v->S, .buf = buf,
            };
            slm_mamba_grad_scan_back(&a, c0, c1);
        }
        /* ddt_b += Σ_rows ddt, rows in order */
        for (int64_t i = c0; i < c1; i++) acc[i] = 0.0f;
        for (size_t r = 0; r < n; r++)
            for (int64_t i = c0; i < c1; i++) acc[i] += j->ddt[r * di + (size_t)i];
        for (int64_t i = c0; i < c1; i++) j->gr->dt_b[i] += acc[i];
    }
}

/* dxdb[:, R:] = the blocks' B and C partials, added in block order */
static void reduce_bc_job(void *ctx, int ith, int nth)
{
    const bwd_job *j = ctx;
    const size_t S2 = 2 * (size_t)j->v.S, n = (size_t)j->v.n;
    int64_t r0, r1;
    split(j->v.n, 1, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) {
        float *o = j->dxdb + (size_t)r * (size_t)j->v.nx + (size_t)j->v.R;
        memcpy(o, j->part + (size_t)r * S2, S2 * sizeof(float));
        for (int64_t blk = 1; blk < j->n_blk; blk++) {
            const float *q = j->part + ((size_t)blk * n + (size_t)r) * S2;
            for (size_t k = 0; k < S2; k++) o[k] += q[k];
        }
    }
}

/* per range of channels, row by row: du = dxc silu'(u) with u recomputed
 * as the forward made it, the conv's weight and bias gradients, and
 * dx_t = Σ_k du_{t + d_conv - 1 - k} w[k] into dxz[:, :di] */
static void conv_bwd_job(void *ctx, int ith, int nth)
{
    const bwd_job *j = ctx;
    const saved_view *v = &j->v;
    const int64_t di = v->di, T = j->s->T, dc = v->dc;
    int64_t c0, c1;
    split(di, 8, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    float *u = j->buf + (size_t)ith * j->buf_floats + (2 * v->K + 3) * v->S, *su = u + di;
    for (int64_t k = 0; k < dc; k++)
        for (int64_t i = c0; i < c1; i++) j->gwT[k * di + i] = 0.0f;
    for (int64_t i = c0; i < c1; i++) j->gb[i] = 0.0f;
    for (int64_t b = 0; b < j->s->B; b++) {
        const float *x = j->saved + v->xz + (size_t)(b * T) * 2 * (size_t)di;
        float *du = j->G + (size_t)(b * T) * (size_t)di;
        for (int64_t t = 0; t < T; t++) {
            conv_row(u, x, t, di, j->wT, j->p->conv_b, dc, c0, c1);
            slm_mamba_grad_sigmoid(su + c0, u + c0, c1 - c0);
            float *d = du + t * di;
            for (int64_t i = c0; i < c1; i++) {
                d[i] *= su[i] * (1.0f + u[i] * (1.0f - su[i]));
                j->gb[i] += d[i];
            }
            for (int64_t k = 0; k < dc; k++) {
                const int64_t tt = t - (dc - 1) + k;
                if (tt < 0) continue;
                const float *xr = x + tt * 2 * di;
                float *gw = j->gwT + k * di;
                for (int64_t i = c0; i < c1; i++) gw[i] += d[i] * xr[i];
            }
        }
        for (int64_t t = 0; t < T; t++) {
            float *dx = j->dxz + (size_t)(b * T + t) * 2 * (size_t)di;
            for (int64_t i = c0; i < c1; i++) dx[i] = 0.0f;
            for (int64_t k = 0; k < dc; k++) {
                const int64_t tq = t + (dc - 1) - k;
                if (tq >= T) continue;
                const float *d = du + tq * di, *w = j->wT + k * di;
                for (int64_t i = c0; i < c1; i++) dx[i] += d[i] * w[i];
            }
        }
    }
    for (int64_t i = c0; i < c1; i++) {
        for (int64_t k = 0; k < dc; k++) j->gr->conv[i * dc + k] += j->gwT[k * di + i];
        j->gr->conv_b[i] += j->gb[i];
    }
}

slm_status slm_mamba_grad_backward(slm_pool *pool, const slm_mamba_grad_shape *s,
                                   const slm_mamba_grad_params *p, const slm_mamba_grad_grads *g,
                                   const float *h, const float *dout, float *dh, int accumulate,
                                   const float *saved, slm_error *err)
{
    slm_status st = slm_mamba_grad_shape_check(s, err);
    if (st) return st;
    bwd_job j = {.s = s, .p = p, .gr = g, .v = saved_layout(s), .saved = saved};
    const saved_view *v = &j.v;
    const int64_t n = v->n, di = v->di, nx = v->nx, dim = s->dim, dc = v->dc;
    /* fixed blocks of channels (multiples of 8), whatever the threads */
    j.blk = ((di + MAX_BLOCKS - 1) / MAX_BLOCKS + 7) / 8 * 8;
    j.n_blk = (di + j.blk - 1) / j.blk;
    j.buf_floats = (size_t)((2 * v->K + 3) * v->S + 2 * di);
    const int nth = slm_pool_busy(pool) ? 1 : slm_pool_size(pool);
    const size_t N = (size_t)n;
    const size_t floats = N * (size_t)(5 * di + nx) + (size_t)j.n_blk * N * 2 * (size_t)v->S +
                          (size_t)(2 * dc + 1) * (size_t)di + (size_t)nth * j.buf_floats;
    float *work = malloc(floats * sizeof(float));
    if (!work) return slm_error_set(err, SLM_ENOMEM, "mamba train: out of memory for %zu floats of scratch", floats);
    j.G = work;
    j.dg = j.G + N * (size_t)di;
    j.dxz = j.dg + N * (size_t)di;
    j.ddt = j.dxz + N * 2 * (size_t)di;
    j.dxdb = j.ddt + N * (size_t)di;
    j.part = j.dxdb + N * (size_t)nx;
    j.wT = j.part + (size_t)j.n_blk * N * 2 * (size_t)v->S;
    j.gwT = j.wT + (size_t)(dc * di);
    j.gb = j.gwT + (size_t)(dc * di);
    j.buf = j.gb + (size_t)di;
    const float *xc = saved + v->xc, *xdb = saved + v->xdb;

    /* out_proj: dW_out += doutᵀ G, dg = dout W_out */
    slm_pool_run(pool, nth, gate_fwd_job, &j);
    gemm(pool, 1, 0, dim, di, n, dout, dim, j.G, di, 1.0f, g->out, di);
    gemm(pool, 0, 0, n, di, dim, dout, dim, p->out, di, 0.0f, j.dg, di);
    /* gate and scan: dz, dxc (into G), ddt, dA, dD, ddt_b, dB and dC */
    slm_pool_run(pool, nth, scan_bwd_job, &j);
    slm_pool_run(pool, nth, reduce_bc_job, &j);
    /* dt_proj: dW_dt += ddtᵀ dt_r, d dt_r = ddt W_dt (into dxdb[:, :R]) */
    gemm(pool, 1, 0, di, v->R, n, j.ddt, di, xdb, nx, 1.0f, g->dt, v->R);
    gemm(pool, 0, 0, n, v->R, di, j.ddt, di, p->dt, v->R, 0.0f, j.dxdb, nx);
    /* x_proj: dW_x += dxdbᵀ xc, dxc += dxdb W_x */
    gemm(pool, 1, 0, nx, di, n, j.dxdb, nx, xc, di, 1.0f, g->x, di);
    gemm(pool, 0, 0, n, di, nx, j.dxdb, nx, p->x, di, 1.0f, j.G, di);
    /* conv and its silu: dx into dxz[:, :di] */
    transpose_conv(j.wT, p->conv, di, dc);
    slm_pool_run(pool, nth, conv_bwd_job, &j);
    /* in_proj: dW_in += dxzᵀ h, dh (+)= dxz W_in */
    gemm(pool, 1, 0, 2 * di, dim, n, j.dxz, 2 * di, h, dim, 1.0f, g->in, dim);
    gemm(pool, 0, 0, n, dim, 2 * di, j.dxz, 2 * di, p->in, dim, accumulate ? 1.0f : 0.0f, dh, dim);
    free(work);
    return SLM_OK;
}
