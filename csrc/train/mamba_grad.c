#include "mamba_grad.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../blocks/mamba.h"
#include "../kernels/ops.h"
#include "../kernels/vecdot.h"

/* Rows of a batch: B T <= 2^24 keeps every product below in int for
 * cblas and every size far from overflow. */
#define MAX_ROWS (1 << 24)
/* B and C gradients are summed over channels: one partial per block of
 * channels, at most this many blocks (so threads beyond it idle in the
 * scan's backward). */
#define MAX_BLOCKS 16
/* Below this many multiply-adds a product runs on the calling thread. */
#define MIN_PARALLEL_WORK (64 * 1024)

/* --- shapes ------------------------------------------------------------------ */

static int64_t chunk_of(const slm_mamba_grad_shape *s)
{
    return s->chunk > 0 ? s->chunk : SLM_MAMBA_GRAD_CHUNK;
}

/* checkpoints per sequence: the states before chunks 1 .. ceil(T/K)-1 */
static int64_t n_ckpt(const slm_mamba_grad_shape *s)
{
    return (s->T + chunk_of(s) - 1) / chunk_of(s) - 1;
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

/* offsets of the saved arrays (layout in mamba_grad.h) */
typedef struct saved_view {
    int64_t n, di, S, R, nx, dc, nck, K;
    size_t xz, xc, xdb, dt, y, ckpt, total;
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
    v.nck = n_ckpt(s);
    v.K = chunk_of(s);
    const size_t n = (size_t)v.n, di = (size_t)v.di;
    v.xz = 0;
    v.xc = v.xz + n * 2 * di;
    v.xdb = v.xc + n * di;
    v.dt = v.xdb + n * (size_t)v.nx;
    v.y = v.dt + n * di;
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

static void blas_single_thread(void)
{
    openblas_set_num_threads(1);
}

/* C (M, N) = op(A) op(B) + beta C with op(A) = A (M, K) or, ta, Aᵀ for A
 * stored (K, M), and op(B) = B (K, N) or, tb, Bᵀ for B stored (N, K). A
 * local helper until csrc/train/grad.c's f32 linear kernels are shared.
 *
 * OpenBLAS's floats depend on the shape of the call (a product cut in two
 * slices of rows or columns differs in the last bits from the whole), so
 * C is cut into fixed tiles of GEMM_TM x GEMM_TN whatever the threads, and
 * the pool's threads share the tiles, each calling a one-thread sgemm per
 * tile: the results do not depend on the number of threads. */
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
        cblas_sgemm(CblasRowMajor, g->ta ? CblasTrans : CblasNoTrans, g->tb ? CblasTrans : CblasNoTrans, (int)m,
                    (int)n, (int)g->K, 1.0f, A, (int)g->lda, B, (int)g->ldb, g->beta, g->C + m0 * g->ldc + n0,
                    (int)g->ldc);
    }
}

static void gemm(slm_pool *pool, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                 const float *B, int64_t ldb, float beta, float *C, int64_t ldc)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_single_thread);
    gemm_job g = {ta, tb, M, N, K, lda, ldb, ldc, A, B, beta, C};
    int nth = (double)M * (double)N * (double)K < MIN_PARALLEL_WORK ? 1 : slm_pool_size(pool);
    slm_pool_run(pool, nth, gemm_tiles, &g);
}

static float sigmoidf(float v)
{
    return 1.0f / (1.0f + expf(-v));
}

/* --- forward ----------------------------------------------------------------- */

typedef struct fwd_job {
    const slm_mamba_grad_shape *s;
    const slm_mamba_grad_params *p;
    saved_view v;
    float *saved;
    float *g;        /* (n, di) gated scan output, out_proj's input */
    float *cstate;   /* (di, d_conv - 1) conv state of the current sequence */
    float *sstate;   /* (di, S) scan state of the current sequence */
} fwd_job;

static void conv_fwd_job(void *ctx, int ith, int nth)
{
    const fwd_job *j = ctx;
    const saved_view *v = &j->v;
    int64_t c0, c1;
    split(v->di, 8, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    const size_t ns = (size_t)(v->dc - 1);
    for (int64_t b = 0; b < j->s->B; b++) {
        const size_t r0 = (size_t)(b * j->s->T);
        /* each sequence starts from a zero state */
        memset(j->cstate + (size_t)c0 * ns, 0, (size_t)(c1 - c0) * ns * sizeof(float));
        slm_mamba_conv(j->saved + v->xc + r0 * (size_t)v->di, v->di, j->saved + v->xz + r0 * 2 * (size_t)v->di,
                       2 * v->di, (int)j->s->T, j->cstate, j->p->conv, j->p->conv_b, v->dc, c0, c1);
    }
}

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
    float *dt = j->saved + v->dt, *y = j->saved + v->y, *ckpt = j->saved + v->ckpt;
    for (int64_t b = 0; b < j->s->B; b++) {
        memset(j->sstate + (size_t)c0 * S, 0, (size_t)(c1 - c0) * S * sizeof(float));
        for (int64_t c = 0; c <= v->nck; c++) {
            const int64_t t0 = c * v->K, m = T - t0 < v->K ? T - t0 : v->K;
            const size_t r0 = (size_t)(b * T + t0);
            slm_mamba_scan(y + r0 * di, v->di, j->sstate, xc + r0 * di, v->di, dt + r0 * di, v->di, j->p->A,
                           xdb + r0 * nx + (size_t)v->R, v->nx, j->p->D, (int)m, v->S, c0, c1);
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

slm_status slm_mamba_grad_forward(slm_pool *pool, const slm_mamba_grad_shape *s,
                                  const slm_mamba_grad_params *p, const float *h, float *out,
                                  float *saved, slm_error *err)
{
    slm_status st = slm_mamba_grad_shape_check(s, err);
    if (st) return st;
    fwd_job j = {.s = s, .p = p, .v = saved_layout(s), .saved = saved};
    const saved_view *v = &j.v;
    const size_t n = (size_t)v->n, di = (size_t)v->di;
    /* scratch: g (n, di) | conv state | scan state */
    const size_t floats = n * di + di * (size_t)(v->dc - 1) + di * (size_t)v->S;
    float *work = malloc(floats * sizeof(float));
    if (!work) return slm_error_set(err, SLM_ENOMEM, "mamba train: out of memory for %zu floats of scratch", floats);
    j.g = work;
    j.cstate = j.g + n * di;
    j.sstate = j.cstate + di * (size_t)(v->dc - 1);
    float *xz = saved + v->xz, *xc = saved + v->xc, *xdb = saved + v->xdb, *dt = saved + v->dt;

    /* xz (n, 2 di) = h W_inᵀ */
    gemm(pool, 0, 1, v->n, 2 * v->di, s->dim, h, s->dim, p->in, s->dim, 0.0f, xz, 2 * v->di);
    /* xc (n, di) = silu(conv(x) + conv_b) */
    slm_pool_run(pool, slm_pool_size(pool), conv_fwd_job, &j);
    /* xdb (n, R + 2 S) = xc W_xᵀ */
    gemm(pool, 0, 1, v->n, v->nx, v->di, xc, v->di, p->x, v->di, 0.0f, xdb, v->nx);
    /* dt (n, di) = dt_r W_dtᵀ + dt_b (softplus is in the scan) */
    gemm(pool, 0, 1, v->n, v->di, v->R, xdb, v->nx, p->dt, v->R, 0.0f, dt, v->di);
    slm_ops_add(dt, dt, v->n * v->di, p->dt_b, v->di);
    /* y (n, di) = scan + xc D, checkpoints, g = y silu(z) */
    slm_pool_run(pool, slm_pool_size(pool), scan_fwd_job, &j);
    /* out (n, dim) = g W_outᵀ */
    gemm(pool, 0, 1, v->n, s->dim, v->di, j.g, v->di, p->out, v->di, 0.0f, out, s->dim);
    free(work);
    return SLM_OK;
}

/* --- the scan's backward ------------------------------------------------------- */

void slm_mamba_grad_scan_back_generic(const slm_mamba_grad_scan_args *a, int64_t c0, int64_t c1)
{
    const int64_t S = a->d_state, K = a->K;
    float *st = a->buf;               /* (K + 1, S): s before the chunk, then after each token */
    float *ex = st + (K + 1) * S;     /* (K, S): exp(δ A) of each token */
    float *ds = ex + K * S;           /* (S): gradient of the state after the current token */
    float *gA = ds + S;               /* (S): this channel's dA */
    float *dl = gA + S;               /* (K): δ */
    float *sg = dl + K;               /* (K): dδ/d dt = σ(dt) */
    const int64_t n_chunk = (a->n + K - 1) / K;
    for (int64_t i = c0; i < c1; i++) {
        const float *Ai = a->A + i * S;
        memset(ds, 0, (size_t)S * sizeof(float));
        memset(gA, 0, (size_t)S * sizeof(float));
        float gD = 0.0f;
        for (int64_t c = n_chunk - 1; c >= 0; c--) {
            const int64_t t0 = c * K, m = a->n - t0 < K ? a->n - t0 : K;
            if (c == 0) memset(st, 0, (size_t)S * sizeof(float));
            else memcpy(st, a->ckpt + (c - 1) * a->ld_ckpt + i * S, (size_t)S * sizeof(float));
            /* the chunk's states again, as slm_mamba_scan_generic makes them */
            for (int64_t l = 0; l < m; l++) {
                const int64_t t = t0 + l;
                const float v = a->dt[t * a->ld_dt + i];
                const float d = v <= 20.0f ? log1pf(expf(v)) : v;
                const float xd = a->x[t * a->ld_x + i] * d;
                const float *B = a->bc + t * a->ld_bc;
                const float *s0 = st + l * S;
                float *s1 = st + (l + 1) * S, *e = ex + l * S;
                dl[l] = d;
                sg[l] = v <= 20.0f ? sigmoidf(v) : 1.0f;
                for (int64_t j = 0; j < S; j++) {
                    e[j] = expf(d * Ai[j]);
                    s1[j] = s0[j] * e[j] + B[j] * xd;
                }
            }
            /* backwards through the chunk */
            for (int64_t l = m - 1; l >= 0; l--) {
                const int64_t t = t0 + l;
                const float dy = a->dy[t * a->ld_dy + i], xi = a->x[t * a->ld_x + i], d = dl[l];
                const float xd = xi * d;
                const float *B = a->bc + t * a->ld_bc, *C = B + S;
                float *dB = a->dbc + t * a->ld_dbc, *dC = dB + S;
                const float *s0 = st + l * S, *s1 = s0 + S, *e = ex + l * S;
                float dxs = 0.0f, dd = 0.0f;
                gD += dy * xi;
                for (int64_t j = 0; j < S; j++) {
                    dC[j] += dy * s1[j];
                    const float g = ds[j] + dy * C[j];   /* d loss / d s_t */
                    const float se = s0[j] * e[j];
                    dB[j] += g * xd;
                    dxs += g * B[j];
                    dd += g * (se * Ai[j] + B[j] * xi);
                    gA[j] += g * se * d;
                    ds[j] = g * e[j];
                }
                a->dx[t * a->ld_dx + i] = dy * a->D[i] + dxs * d;
                a->ddt[t * a->ld_ddt + i] = dd * sg[l];
            }
        }
        for (int64_t j = 0; j < S; j++) a->dA[i * S + j] += gA[j];
        a->dD[i] += gD;
    }
}

void slm_mamba_grad_scan_back(const slm_mamba_grad_scan_args *a, int64_t c0, int64_t c1)
{
#if defined(__x86_64__)
    if (a->d_state % 8 == 0 && slm_kernels_use_avx2()) {
        slm_mamba_grad_scan_back_avx2(a, c0, c1);
        return;
    }
#endif
    slm_mamba_grad_scan_back_generic(a, c0, c1);
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
    float *buf;     /* per thread: the scan's chunk buffer */
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
    int64_t b0, b1;
    split(j->n_blk, 1, ith, nth, &b0, &b1);
    for (int64_t blk = b0; blk < b1; blk++) {
        const int64_t c0 = blk * j->blk, c1 = c0 + j->blk < v->di ? c0 + j->blk : v->di;
        float *part = j->part + (size_t)blk * n * 2 * S;
        memset(part, 0, n * 2 * S * sizeof(float));
        for (size_t r = 0; r < n; r++)
            for (int64_t i = c0; i < c1; i++) {
                const float z = xz[r * 2 * di + di + (size_t)i], sz = sigmoidf(z);
                const float dgv = j->dg[r * di + (size_t)i];
                j->dxz[r * 2 * di + di + (size_t)i] = dgv * y[r * di + (size_t)i] * sz * (1.0f + z * (1.0f - sz));
                j->dg[r * di + (size_t)i] = dgv * z * sz;
            }
        for (int64_t b = 0; b < j->s->B; b++) {
            const size_t r0 = (size_t)(b * T);
            slm_mamba_grad_scan_args a = {
                .x = j->saved + v->xc + r0 * di, .ld_x = v->di,
                .dt = j->saved + v->dt + r0 * di, .ld_dt = v->di,
                .bc = j->saved + v->xdb + r0 * nx + (size_t)v->R, .ld_bc = v->nx,
                .dy = j->dg + r0 * di, .ld_dy = v->di,
                .A = j->p->A, .D = j->p->D,
                .ckpt = j->saved + v->ckpt + (size_t)b * (size_t)v->nck * di * S, .ld_ckpt = v->di * v->S,
                .dx = j->G + r0 * di, .ld_dx = v->di,
                .ddt = j->ddt + r0 * di, .ld_ddt = v->di,
                .dA = j->gr->A, .dD = j->gr->D,
                .dbc = part + r0 * 2 * S, .ld_dbc = 2 * v->S,
                .n = (int)T, .K = v->K < T ? v->K : T, .d_state = v->S,
                .buf = j->buf + (size_t)ith * j->buf_floats,
            };
            slm_mamba_grad_scan_back(&a, c0, c1);
        }
        for (int64_t i = c0; i < c1; i++) {
            float sum = 0.0f;
            for (size_t r = 0; r < n; r++) sum += j->ddt[r * di + (size_t)i];
            j->gr->dt_b[i] += sum;
        }
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

/* per channel: du = dxc silu'(u) (u recomputed as the forward's conv made
 * it), conv weight and bias gradients, dx = the conv's transpose of du */
static void conv_bwd_job(void *ctx, int ith, int nth)
{
    const bwd_job *j = ctx;
    const saved_view *v = &j->v;
    const size_t di = (size_t)v->di;
    const int64_t T = j->s->T, dc = v->dc;
    const float *xz = j->saved + v->xz;
    int64_t c0, c1;
    split(v->di, 8, ith, nth, &c0, &c1);
    for (int64_t i = c0; i < c1; i++) {
        const float *w = j->p->conv + i * dc;
        float gw[SLM_OPS_MAX_CONV] = {0}, gb = 0.0f;
        for (int64_t b = 0; b < j->s->B; b++) {
            const float *x = xz + (size_t)(b * T) * 2 * di + (size_t)i;   /* step 2 di */
            float *du = j->G + (size_t)(b * T) * di + (size_t)i;          /* step di */
            for (int64_t t = 0; t < T; t++) {
                float u = 0.0f;   /* the oldest tap first, zeros before t = 0 */
                for (int64_t k = 0; k < dc; k++) {
                    const int64_t tt = t - (dc - 1) + k;
                    u += (tt >= 0 ? x[(size_t)tt * 2 * di] : 0.0f) * w[k];
                }
                u += j->p->conv_b[i];
                const float su = sigmoidf(u);
                const float g = du[(size_t)t * di] * su * (1.0f + u * (1.0f - su));
                du[(size_t)t * di] = g;
                gb += g;
                for (int64_t k = 0; k < dc; k++) {
                    const int64_t tt = t - (dc - 1) + k;
                    if (tt >= 0) gw[k] += g * x[(size_t)tt * 2 * di];
                }
            }
            float *dx = j->dxz + (size_t)(b * T) * 2 * di + (size_t)i;
            for (int64_t t = 0; t < T; t++) {
                float sum = 0.0f;
                for (int64_t k = 0; k < dc; k++) {
                    const int64_t tq = t + (dc - 1) - k;
                    if (tq < T) sum += du[(size_t)tq * di] * w[k];
                }
                dx[(size_t)t * 2 * di] = sum;
            }
        }
        for (int64_t k = 0; k < dc; k++) j->gr->conv[i * dc + k] += gw[k];
        j->gr->conv_b[i] += gb;
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
    const int64_t n = v->n, di = v->di, nx = v->nx, dim = s->dim;
    /* fixed blocks of channels (multiples of 8), whatever the threads */
    j.blk = ((di + MAX_BLOCKS - 1) / MAX_BLOCKS + 7) / 8 * 8;
    j.n_blk = (di + j.blk - 1) / j.blk;
    const int64_t K = v->K < s->T ? v->K : s->T;
    j.buf_floats = (size_t)((2 * K + 3) * v->S + 2 * K);
    const int nth = slm_pool_busy(pool) ? 1 : slm_pool_size(pool);
    const size_t N = (size_t)n;
    const size_t floats = N * (size_t)(5 * di + nx) + (size_t)j.n_blk * N * 2 * (size_t)v->S +
                          (size_t)nth * j.buf_floats;
    float *work = malloc(floats * sizeof(float));
    if (!work) return slm_error_set(err, SLM_ENOMEM, "mamba train: out of memory for %zu floats of scratch", floats);
    j.G = work;
    j.dg = j.G + N * (size_t)di;
    j.dxz = j.dg + N * (size_t)di;
    j.ddt = j.dxz + N * 2 * (size_t)di;
    j.dxdb = j.ddt + N * (size_t)di;
    j.part = j.dxdb + N * (size_t)nx;
    j.buf = j.part + (size_t)j.n_blk * N * 2 * (size_t)v->S;
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
    slm_pool_run(pool, nth, conv_bwd_job, &j);
    /* in_proj: dW_in += dxzᵀ h, dh (+)= dxz W_in */
    gemm(pool, 1, 0, 2 * di, dim, n, j.dxz, 2 * di, h, dim, 1.0f, g->in, dim);
    gemm(pool, 0, 0, n, dim, 2 * di, j.dxz, 2 * di, p->in, dim, accumulate ? 1.0f : 0.0f, dh, dim);
    free(work);
    return SLM_OK;
}
