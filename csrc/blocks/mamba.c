#include "mamba.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/snapshot.h"
#include "seqbatch.h"
#include "../kernels/matmul.h"
#include "../kernels/ops.h"
#include "../kernels/vecdot.h"

/* Upper bounds that keep every size product far from overflow and the conv
 * window on the stack. The real models use d_conv 4, d_state 16. */
#define MAMBA_MAX_CONV SLM_OPS_MAX_CONV
#define MAMBA_MAX_STATE 1024

/* --- checks ------------------------------------------------------------------- */

int64_t slm_mamba_conv_channels(const slm_mamba_shape *h)
{
    return h->version == 2 ? h->d_inner + 2 * h->n_group * h->d_state : h->d_inner;
}

int64_t slm_mamba_in_rows(const slm_mamba_shape *h)
{
    return h->version == 2 ? h->d_inner + slm_mamba_conv_channels(h) + h->dt_rank : 2 * h->d_inner;
}

slm_status slm_mamba_shape_check(const slm_mamba_shape *h, slm_error *err)
{
    if (h->version != 1 && h->version != 2)
        return slm_error_set(err, SLM_EINVAL, "mamba: version %d (1 or 2)", h->version);
    if (h->dim < 1 || h->d_inner < 1 || h->dt_rank < 1 || h->dim > (1 << 20) ||
        h->d_inner > (1 << 20) || h->dt_rank > (1 << 20))
        return slm_error_set(err, SLM_EINVAL, "mamba: dims out of range (dim %lld, d_inner %lld, dt_rank %lld)",
                             (long long)h->dim, (long long)h->d_inner, (long long)h->dt_rank);
    if (h->d_conv < 1 || h->d_conv > MAMBA_MAX_CONV || h->d_state < 1 || h->d_state > MAMBA_MAX_STATE)
        return slm_error_set(err, SLM_EINVAL, "mamba: d_conv %lld or d_state %lld out of range (1..%d, 1..%d)",
                             (long long)h->d_conv, (long long)h->d_state, MAMBA_MAX_CONV, MAMBA_MAX_STATE);
    if (h->version == 2 && (h->n_group < 1 || h->n_group > h->dt_rank || h->dt_rank % h->n_group ||
                            h->d_inner % h->dt_rank))
        return slm_error_set(err, SLM_EINVAL, "mamba2: %lld heads must divide d_inner %lld and be a "
                             "multiple of the %lld groups", (long long)h->dt_rank,
                             (long long)h->d_inner, (long long)h->n_group);
    return SLM_OK;
}

slm_status slm_mamba_block_check(const slm_mamba_block *b, slm_error *err)
{
    const slm_mamba_shape *h = &b->shape;
    slm_status st = slm_mamba_shape_check(h, err);
    if (st) return st;
    if (!b->conv_w || !b->conv_b || !b->dt_b || !b->A || !b->D || (h->version == 2 && !b->norm_w))
        return slm_error_set(err, SLM_EINVAL, "mamba: missing conv, dt bias, A, D or norm vectors");
    if ((st = slm_matmul_check_weight(b->w_in, "ssm_in", slm_mamba_in_rows(h), h->dim, err))) return st;
    if (h->version == 1) {
        if ((st = slm_matmul_check_weight(b->w_x, "ssm_x", h->dt_rank + 2 * h->d_state, h->d_inner, err))) return st;
        if ((st = slm_matmul_check_weight(b->w_dt, "ssm_dt", h->d_inner, h->dt_rank, err))) return st;
    }
    return slm_matmul_check_weight(b->w_out, "ssm_out", h->dim, h->d_inner, err);
}

/* --- state and scratch ----------------------------------------------------------- */

slm_mamba_state *slm_mamba_state_new(int n_layer, const slm_mamba_shape *h, slm_error *err)
{
    if (slm_mamba_shape_check(h, err) != SLM_OK) return NULL;
    if (n_layer < 1 || n_layer > 4096) {
        slm_error_set(err, SLM_EINVAL, "mamba state: n_layer %d out of range 1..4096", n_layer);
        return NULL;
    }
    slm_mamba_state *s = calloc(1, sizeof *s);
    if (!s) goto oom;
    s->n_layer = n_layer;
    s->conv_ch = slm_mamba_conv_channels(h);
    s->d_inner = h->d_inner;
    s->d_conv = h->d_conv;
    s->d_state = h->d_state;
    /* d_conv 1 keeps no inputs; one float keeps the allocation non-empty */
    s->conv = calloc(slm_mamba_state_conv_len(s) + 1, sizeof(float));
    s->ssm = calloc(slm_mamba_state_ssm_len(s), sizeof(float));
    if (!s->conv || !s->ssm) goto oom;
    return s;
oom:
    slm_mamba_state_free(s);
    slm_error_set(err, SLM_ENOMEM, "out of memory allocating the mamba state of %d layers", n_layer);
    return NULL;
}

void slm_mamba_state_free(slm_mamba_state *s)
{
    if (!s) return;
    free(s->conv);
    free(s->ssm);
    free(s);
}

size_t slm_mamba_state_conv_len(const slm_mamba_state *s)
{
    return (size_t)s->n_layer * (size_t)s->conv_ch * (size_t)(s->d_conv - 1);
}

size_t slm_mamba_state_ssm_len(const slm_mamba_state *s)
{
    return (size_t)s->n_layer * (size_t)s->d_inner * (size_t)s->d_state;
}

void slm_mamba_state_clear(slm_mamba_state *s)
{
    memset(s->conv, 0, slm_mamba_state_conv_len(s) * sizeof(float));
    memset(s->ssm, 0, slm_mamba_state_ssm_len(s) * sizeof(float));
}

/* --- snapshots (layout in mamba.h) ----------------------------------------------- */

static const slm_snap_kind MB_SNAP = {
    {'M', 'A', 'M', 'B'}, 2, "a mamba state", 5,
    (const char *const[]){"n_layer", "conv channels", "d_inner", "d_conv", "d_state"},
    "SLMMB1\0\0", 6, 5};

static void state_dims(const slm_mamba_state *s, int64_t *d, size_t *lens)
{
    d[0] = s->n_layer;
    d[1] = s->conv_ch;
    d[2] = s->d_inner;
    d[3] = s->d_conv;
    d[4] = s->d_state;
    lens[0] = slm_mamba_state_conv_len(s) * sizeof(float);
    lens[1] = slm_mamba_state_ssm_len(s) * sizeof(float);
}

size_t slm_mamba_snapshot_size(const slm_mamba_state *s)
{
    int64_t d[5];
    size_t lens[2];
    state_dims(s, d, lens);
    return slm_snap_flat_size(&MB_SNAP, 2, lens);
}

void slm_mamba_snapshot(const slm_mamba_state *s, int n_past, void *buf)
{
    int64_t d[5];
    size_t lens[2];
    state_dims(s, d, lens);
    slm_snap_flat_write(&MB_SNAP, buf, n_past, d, 2, (const void *const[]){s->conv, s->ssm}, lens);
}

slm_status slm_mamba_restore(slm_mamba_state *s, const void *buf, size_t len, int *n_past, slm_error *err)
{
    int64_t d[5];
    size_t lens[2];
    state_dims(s, d, lens);
    return slm_snap_flat_read(&MB_SNAP, buf, len, d, 2, (void *const[]){s->conv, s->ssm}, lens, n_past, err);
}

slm_mamba_work *slm_mamba_work_new(int n_batch, const slm_mamba_shape *h, slm_error *err)
{
    if (slm_mamba_shape_check(h, err) != SLM_OK) return NULL;
    if (n_batch < 1 || n_batch > 65536) {
        slm_error_set(err, SLM_EINVAL, "mamba work: n_batch %d out of range 1..65536", n_batch);
        return NULL;
    }
    slm_mamba_work *w = calloc(1, sizeof *w);
    if (!w) goto oom;
    size_t nb = (size_t)n_batch;
    int v1 = h->version == 1;
    w->n_batch = n_batch;
    w->shape = *h;
    w->n_xdb = v1 ? h->dt_rank + 2 * h->d_state : 0;
    w->xz = malloc(nb * (size_t)slm_mamba_in_rows(h) * sizeof(float));
    w->xc = malloc(nb * (size_t)slm_mamba_conv_channels(h) * sizeof(float));
    w->xdb = malloc(nb * (size_t)(v1 ? w->n_xdb : 1) * sizeof(float));
    w->dtr = malloc(nb * (size_t)(v1 ? h->dt_rank : 1) * sizeof(float));
    w->dt = malloc(nb * (size_t)(v1 ? h->d_inner : h->dt_rank) * sizeof(float));
    w->y = malloc(nb * (size_t)h->d_inner * sizeof(float));
    if (!w->xz || !w->xc || !w->xdb || !w->dtr || !w->dt || !w->y) goto oom;
    return w;
oom:
    slm_mamba_work_free(w);
    slm_error_set(err, SLM_ENOMEM, "out of memory allocating a mamba batch of %d rows", n_batch);
    return NULL;
}

void slm_mamba_work_free(slm_mamba_work *w)
{
    if (!w) return;
    free(w->xz); free(w->xc); free(w->xdb); free(w->dtr); free(w->dt); free(w->y);
    free(w);
}

/* --- the recurrences ----------------------------------------------------------- */

void slm_mamba_conv(float *out, int64_t ld_out, const float *x, int64_t ld_x, int n,
                    float *state, const float *w, const float *bias, int64_t d_conv,
                    int64_t c0, int64_t c1)
{
    /* ggml_ssm_conv (a float sum from the oldest tap), then the bias as a
     * separate add, then silu */
    slm_ops_causal_conv(out, ld_out, x, ld_x, n, state, w, d_conv, c0, c1);
    for (int t = 0; t < n; t++) {
        float *row = out + t * ld_out + c0;
        slm_ops_add(row, row, c1 - c0, bias + c0, c1 - c0);
        slm_ops_silu(row, row, c1 - c0);
    }
}

void slm_mamba_scan_generic_ex(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                               const float *dt, int64_t ld_dt, const float *A, const float *bc,
                               int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                               int64_t c1, int softplus)
{
    /* channel outer, time inner: a channel's state row stays in L1 for the
     * whole sequence; channels are independent, so this order gives the
     * same floats as the reference's time-outer loop */
    for (int64_t i = c0; i < c1; i++) {
        float *s = state + i * d_state;
        const float *a = A + i * d_state;
        for (int t = 0; t < n; t++) {
            const float v = dt[t * ld_dt + i];
            /* softplus with the threshold of the reference's selective
             * state update (log1p(exp(v)) overflows to inf above ~88) */
            const float d = !softplus || v > 20.0f ? v : log1pf(expf(v));
            const float xi = x[t * ld_x + i];
            const float xd = xi * d;
            const float *B = bc + t * ld_bc, *C = B + d_state;
            float sum = 0.0f;
            for (int64_t j = 0; j < d_state; j++) {
                const float sj = s[j] * expf(d * a[j]) + B[j] * xd;
                sum += sj * C[j];
                s[j] = sj;
            }
            y[t * ld_y + i] = sum + xi * D[i];
        }
    }
}

void slm_mamba_scan_generic(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                            const float *dt, int64_t ld_dt, const float *A, const float *bc,
                            int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                            int64_t c1)
{
    slm_mamba_scan_generic_ex(y, ld_y, state, x, ld_x, dt, ld_dt, A, bc, ld_bc, D, n, d_state, c0, c1, 1);
}

void slm_mamba_scan(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                    const float *dt, int64_t ld_dt, const float *A, const float *bc,
                    int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                    int64_t c1)
{
#if defined(__x86_64__)
    if (d_state % 8 == 0 && slm_kernels_use_avx2()) {
        slm_mamba_scan_avx2(y, ld_y, state, x, ld_x, dt, ld_dt, A, bc, ld_bc, D, n, d_state, c0, c1);
        return;
    }
#endif
    slm_mamba_scan_generic(y, ld_y, state, x, ld_x, dt, ld_dt, A, bc, ld_bc, D, n, d_state, c0, c1);
}

void slm_mamba2_scan(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                     const float *dt, int64_t ld_dt, const float *dt_b, const float *A,
                     const float *bc, int64_t ld_bc, const float *D, int n, int64_t head_dim,
                     int64_t n_head, int64_t n_group, int64_t d_state, int64_t h0, int64_t h1)
{
    const int64_t heads_per_group = n_head / n_group;
    for (int64_t h = h0; h < h1; h++) {
        const int64_t g = h / heads_per_group;   /* B, C repeat_interleave'd over heads */
        for (int t = 0; t < n; t++) {
            const float v = dt[t * ld_dt + h] + dt_b[h];
            const float d = v <= 20.0f ? log1pf(expf(v)) : v;
            /* one decay per head: no exp inside the state loop */
            const float dA = expf(d * A[h]);
            const float *B = bc + t * ld_bc + g * d_state, *C = B + n_group * d_state;
            for (int64_t p = 0; p < head_dim; p++) {
                const int64_t i = h * head_dim + p;
                float *s = state + i * d_state;
                const float xi = x[t * ld_x + i], xd = xi * d;
                float sum = 0.0f;
                for (int64_t j = 0; j < d_state; j++) {
                    const float sj = s[j] * dA + B[j] * xd;
                    sum += sj * C[j];
                    s[j] = sj;
                }
                y[t * ld_y + i] = sum + xi * D[h];
            }
        }
    }
}

/* --- the block ------------------------------------------------------------------ */

/* One forward over the rows of n_seq sequences stacked in w's buffers
 * (a lone session is one sequence): the recurrences run per sequence over
 * its own rows and state, everything row-wise over all n rows. */
typedef struct mix_seq {
    float *conv_state, *ssm_state;   /* this layer's, of the sequence */
    int r0, n;                       /* its rows */
} mix_seq;

typedef struct mix_job {
    const slm_mamba_block *b;
    slm_mamba_work *w;
    const mix_seq *seqs;
    int n_seq;
    int n;                           /* all rows */
} mix_job;

/* range [*c0, *c1) of thread ith among count items, in chunks of `align`
 * (8 channels: threads write whole cache lines of each row) */
static void split(int64_t count, int64_t align, int ith, int nth, int64_t *c0, int64_t *c1)
{
    int64_t per = ((count + nth - 1) / nth + align - 1) / align * align;
    *c0 = per * ith < count ? per * ith : count;
    *c1 = *c0 + per < count ? *c0 + per : count;
}

static void conv_job(void *ctx, int ith, int nth)
{
    mix_job *j = ctx;
    const slm_mamba_shape *h = &j->b->shape;
    int64_t ch = slm_mamba_conv_channels(h), c0, c1;
    split(ch, 8, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    /* Mamba-1 convolves x (the first d_inner of in_proj's row), Mamba-2
     * xBC (after z's d_inner) */
    const int64_t ld = slm_mamba_in_rows(h);
    const float *in = j->w->xz + (h->version == 2 ? h->d_inner : 0);
    for (int q = 0; q < j->n_seq; q++) {
        const mix_seq *s = &j->seqs[q];
        slm_mamba_conv(j->w->xc + (size_t)s->r0 * (size_t)ch, ch, in + (size_t)s->r0 * (size_t)ld, ld, s->n,
                       s->conv_state, j->b->conv_w, j->b->conv_b, h->d_conv, c0, c1);
    }
}

/* y[t][c0..c1) *= silu(z[t][c0..c1)), z the first (Mamba-2) or second
 * (Mamba-1) d_inner of in_proj's row */
static void gate(mix_job *j, int64_t c0, int64_t c1)
{
    const slm_mamba_shape *h = &j->b->shape;
    slm_mamba_work *w = j->w;
    int64_t di = h->d_inner, zoff = h->version == 2 ? 0 : di, ld = slm_mamba_in_rows(h);
    for (int t = 0; t < j->n; t++) {
        float *z = w->xz + (size_t)t * (size_t)ld + zoff + c0;
        float *y = w->y + (size_t)t * (size_t)di + c0;
        slm_ops_silu(z, z, c1 - c0);
        slm_ops_mul(y, y, c1 - c0, z, c1 - c0);
    }
}

static void scan_job(void *ctx, int ith, int nth)
{
    mix_job *j = ctx;
    const slm_mamba_shape *h = &j->b->shape;
    slm_mamba_work *w = j->w;
    int64_t c0, c1, di = h->d_inner;
    split(di, 8, ith, nth, &c0, &c1);
    if (c0 >= c1) return;
    for (int q = 0; q < j->n_seq; q++) {
        const mix_seq *s = &j->seqs[q];
        const size_t r0 = (size_t)s->r0;
        slm_mamba_scan(w->y + r0 * (size_t)di, di, s->ssm_state, w->xc + r0 * (size_t)di, di,
                       w->dt + r0 * (size_t)di, di, j->b->A, w->xdb + r0 * (size_t)w->n_xdb + h->dt_rank,
                       w->n_xdb, j->b->D, s->n, h->d_state, c0, c1);
    }
    gate(j, c0, c1);
}

/* Mamba-2: threads split whole heads */
static void scan2_job(void *ctx, int ith, int nth)
{
    mix_job *j = ctx;
    const slm_mamba_shape *h = &j->b->shape;
    slm_mamba_work *w = j->w;
    int64_t h0, h1, di = h->d_inner, nh = h->dt_rank, hd = di / nh, ch = slm_mamba_conv_channels(h);
    split(nh, 1, ith, nth, &h0, &h1);
    if (h0 >= h1) return;
    for (int q = 0; q < j->n_seq; q++) {
        const mix_seq *s = &j->seqs[q];
        const size_t r0 = (size_t)s->r0;
        slm_mamba2_scan(w->y + r0 * (size_t)di, di, s->ssm_state, w->xc + r0 * (size_t)ch, ch,
                        w->dt + r0 * (size_t)nh, nh, j->b->dt_b, j->b->A, w->xc + r0 * (size_t)ch + di, ch,
                        j->b->D, s->n, hd, nh, h->n_group, h->d_state, h0, h1);
    }
    gate(j, h0 * hd, h1 * hd);
}

static int same_shape(const slm_mamba_shape *a, const slm_mamba_shape *b)
{
    return a->version == b->version && a->d_inner == b->d_inner && a->d_conv == b->d_conv &&
           a->d_state == b->d_state && a->dt_rank == b->dt_rank &&
           (a->version == 1 || a->n_group == b->n_group);
}

/* Mamba-1 between the conv and the scan: x_proj, dt_proj */
static slm_status mamba1_dt(slm_pool *pool, const slm_mamba_block *b, slm_mamba_work *w, int n,
                            slm_error *err)
{
    const slm_mamba_shape *h = &b->shape;
    const int64_t nx = w->n_xdb;
    slm_status st;
    /* xdb (n, dt_rank + 2 d_state) = x_proj(xc) */
    if ((st = slm_matmul_w(pool, w->xdb, b->w_x, -1, w->xc, n, err))) return st;
    for (int t = 0; t < n; t++) {
        float *row = w->xdb + (size_t)t * (size_t)nx;
        if (h->dt_b_c_rms) {
            slm_ops_rmsnorm(row, row, NULL, 1, h->dt_rank, h->eps);
            slm_ops_rmsnorm(row + h->dt_rank, row + h->dt_rank, NULL, 1, h->d_state, h->eps);
            slm_ops_rmsnorm(row + h->dt_rank + h->d_state, row + h->dt_rank + h->d_state, NULL, 1,
                            h->d_state, h->eps);
        }
        memcpy(w->dtr + (size_t)t * (size_t)h->dt_rank, row, (size_t)h->dt_rank * sizeof(float));
    }
    /* dt (n, d_inner) = dt_proj(dt_r) + bias; softplus is in the scan */
    if ((st = slm_matmul_w(pool, w->dt, b->w_dt, -1, w->dtr, n, err))) return st;
    slm_ops_add(w->dt, w->dt, (int64_t)n * h->d_inner, b->dt_b, h->d_inner);
    return SLM_OK;
}

/* the checks of a forward's state against the block and the work */
static slm_status check_state(const slm_mamba_block *b, const slm_mamba_state *s, int layer,
                              const slm_mamba_work *w, slm_error *err)
{
    const slm_mamba_shape *h = &b->shape;
    if (layer < 0 || layer >= s->n_layer)
        return slm_error_set(err, SLM_EINVAL, "mamba forward: layer %d out of range", layer);
    if (!same_shape(h, &w->shape) || s->conv_ch != slm_mamba_conv_channels(h) ||
        s->d_inner != h->d_inner || s->d_conv != h->d_conv || s->d_state != h->d_state)
        return slm_error_set(err, SLM_EINVAL, "mamba forward: state shaped for another model");
    return SLM_OK;
}

static slm_status mix_forward(slm_pool *pool, const slm_mamba_block *b, const mix_seq *seqs, int n_seq,
                              int n, const float *x, float *out, slm_mamba_work *w, slm_error *err)
{
    const slm_mamba_shape *h = &b->shape;
    const int64_t di = h->d_inner;
    mix_job job = {.b = b, .w = w, .seqs = seqs, .n_seq = n_seq, .n = n};
    slm_status st;
    /* in_proj: (n, in_rows) */
    if ((st = slm_matmul_w(pool, w->xz, b->w_in, -1, x, n, err))) return st;
    /* xc (n, conv channels) = silu(conv1d(x or xBC) + bias) */
    slm_pool_run(pool, slm_pool_size(pool), conv_job, &job);
    if (h->version == 1) {
        if ((st = mamba1_dt(pool, b, w, n, err))) return st;
        /* y (n, d_inner) = (scan + x D) * silu(z) */
        slm_pool_run(pool, slm_pool_size(pool), scan_job, &job);
    } else {
        /* dt (n, n_head): the last n_head of in_proj's row (bias in the scan) */
        const int64_t nh = h->dt_rank, ld = slm_mamba_in_rows(h);
        for (int t = 0; t < n; t++)
            memcpy(w->dt + (size_t)t * (size_t)nh, w->xz + (size_t)t * (size_t)ld + (ld - nh),
                   (size_t)nh * sizeof(float));
        slm_pool_run(pool, slm_pool_size(pool), scan2_job, &job);
        /* grouped RMS norm: each group of d_inner / n_group channels alone */
        const int64_t gs = di / h->n_group;
        for (int t = 0; t < n; t++)
            for (int64_t g = 0; g < h->n_group; g++) {
                float *row = w->y + (size_t)t * (size_t)di + g * gs;
                slm_ops_rmsnorm(row, row, b->norm_w + g * gs, 1, gs, h->eps);
            }
    }
    /* out (n, dim) = out_proj(y) */
    return slm_matmul_w(pool, out, b->w_out, -1, w->y, n, err);
}

static mix_seq layer_seq(const slm_mamba_state *s, int layer, int r0, int n)
{
    return (mix_seq){
        .conv_state = s->conv + (size_t)layer * (size_t)s->conv_ch * (size_t)(s->d_conv - 1),
        .ssm_state = s->ssm + (size_t)layer * (size_t)s->d_inner * (size_t)s->d_state,
        .r0 = r0, .n = n,
    };
}

slm_status slm_mamba_forward(slm_pool *pool, const slm_mamba_block *b, slm_mamba_state *s,
                             int layer, int n, const float *x, float *out,
                             slm_mamba_work *w, slm_error *err)
{
    if (n < 1 || n > w->n_batch)
        return slm_error_set(err, SLM_EINVAL, "mamba forward: %d rows out of range", n);
    slm_status st = check_state(b, s, layer, w, err);
    if (st) return st;
    const mix_seq one = layer_seq(s, layer, 0, n);
    return mix_forward(pool, b, &one, 1, n, x, out, w, err);
}

slm_status slm_mamba_forward_seqs(slm_pool *pool, const slm_mamba_block *b, const slm_seq *seqs,
                                  int n_seq, int layer, const float *x, float *out,
                                  slm_mamba_work *w, slm_error *err)
{
    if (n_seq < 1) return slm_error_set(err, SLM_EINVAL, "mamba forward: no sequences");
    const int n = slm_seq_rows(seqs, n_seq);
    if (n < 1 || n > w->n_batch)
        return slm_error_set(err, SLM_EINVAL, "mamba forward: %d rows out of range (work of %d)", n, w->n_batch);
    /* the per-sequence spans on the stack up to a few dozen, else the heap */
    mix_seq small[32], *ms = n_seq <= 32 ? small : malloc((size_t)n_seq * sizeof *ms);
    if (!ms) return slm_error_set(err, SLM_ENOMEM, "mamba forward: out of memory");
    slm_status st = SLM_OK;
    int r0 = 0;
    for (int q = 0; q < n_seq && !st; q++) {
        const slm_mamba_state *s = seqs[q].state;
        if (!s) st = slm_error_set(err, SLM_EINVAL, "mamba forward: sequence %d has no state", q + 1);
        else if (!(st = check_state(b, s, layer, w, err))) ms[q] = layer_seq(s, layer, r0, seqs[q].n);
        r0 += seqs[q].n;
    }
    if (!st) st = mix_forward(pool, b, ms, n_seq, n, x, out, w, err);
    if (ms != small) free(ms);
    return st;
}
