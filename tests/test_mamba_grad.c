/* Training of the Mamba-1 mixer (train/mamba_grad.h):
 *  - the forward against a double-precision reference of the mixer written
 *    here from the formula (full conv window over the sequence, time-outer
 *    scan) and against the inference block (slm_mamba_forward) run on each
 *    sequence from a fresh state;
 *  - the backward against central differences in double of that reference's
 *    loss L = Σ out ⊙ R, for every entry of every parameter and of the input;
 *    and against central differences in f32 of the C forward itself, for a
 *    sample of entries;
 *  - the accumulate flag; every checkpoint stride giving the same floats;
 *    1 and 2 threads giving the same floats; the forward scan with δ given
 *    against blocks/mamba.c's; the AVX2 kernels against the generic ones;
 *    shape errors.
 * `test_mamba_grad bench` times forward + backward of a 4-layer student. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blocks/mamba.h"
#include "check.h"
#include "core/pool.h"
#include "core/tensor.h"
#include "kernels/vecdot.h"
#include "train/mamba_grad.h"

static uint64_t xs = 0x243f6a8885a308d3u;
static double drand(void)   /* uniform in [-1, 1) */
{
    xs ^= xs << 13;
    xs ^= xs >> 7;
    xs ^= xs << 17;
    return (double)(xs >> 11) * 0x1.0p-53 * 2.0 - 1.0;
}

/* ---- parameters ---------------------------------------------------------------- */

enum { P_IN, P_CONV, P_CONV_B, P_X, P_DT, P_DT_B, P_A, P_D, P_OUT, P_H, N_ARR };
static const char *const names[N_ARR] = {"ssm_in", "ssm_conv1d", "ssm_conv1d_b", "ssm_x", "ssm_dt",
                                         "ssm_dt_b", "ssm_a", "ssm_d", "ssm_out", "input h"};

/* every parameter and the input h, as f32 arrays */
typedef struct model {
    slm_mamba_grad_shape s;
    float *a[N_ARR];
    size_t len[N_ARR];
} model;

static void sizes(const slm_mamba_grad_shape *s, size_t *len)
{
    const size_t dim = (size_t)s->dim, di = (size_t)s->d_inner, S = (size_t)s->d_state;
    const size_t R = (size_t)s->dt_rank, n = (size_t)(s->B * s->T);
    len[P_IN] = 2 * di * dim;
    len[P_CONV] = di * (size_t)s->d_conv;
    len[P_CONV_B] = di;
    len[P_X] = (R + 2 * S) * di;
    len[P_DT] = di * R;
    len[P_DT_B] = di;
    len[P_A] = di * S;
    len[P_D] = di;
    len[P_OUT] = dim * di;
    len[P_H] = n * dim;
}

/* Weights at the scales of a trained Mamba: A = -(1..S) (the S4D-real
 * init) times a random factor, dt_b the inverse softplus of δ in
 * [1e-3, 0.1], so that the scan decays over a few to hundreds of tokens.
 * One channel gets dt_b = 25: the softplus threshold (dt above 20). */
static void model_init(model *m, const slm_mamba_grad_shape *s)
{
    m->s = *s;
    sizes(s, m->len);
    const double dim = (double)s->dim, di = (double)s->d_inner;
    for (int k = 0; k < N_ARR; k++) {
        m->a[k] = malloc(m->len[k] * sizeof(float));
        for (size_t e = 0; e < m->len[k]; e++) m->a[k][e] = (float)drand();
    }
    for (size_t e = 0; e < m->len[P_IN]; e++) m->a[P_IN][e] *= (float)(1.0 / sqrt(dim));
    for (size_t e = 0; e < m->len[P_CONV]; e++) m->a[P_CONV][e] *= 0.5f;
    for (size_t e = 0; e < m->len[P_X]; e++) m->a[P_X][e] *= (float)(1.0 / sqrt(di));
    for (size_t e = 0; e < m->len[P_DT]; e++) m->a[P_DT][e] *= (float)(1.0 / sqrt((double)s->dt_rank));
    for (size_t e = 0; e < m->len[P_OUT]; e++) m->a[P_OUT][e] *= (float)(1.0 / sqrt(di));
    for (int64_t i = 0; i < s->d_inner; i++) {
        const double delta = exp(log(1e-3) + (drand() + 1) / 2 * (log(0.1) - log(1e-3)));
        m->a[P_DT_B][i] = (float)log(expm1(delta));
        for (int64_t j = 0; j < s->d_state; j++)
            m->a[P_A][i * s->d_state + j] = (float)(-(double)(j + 1) * (1.0 + 0.5 * drand()));
    }
    m->a[P_DT_B][s->d_inner - 1] = 25.0f;
}

static void model_free(model *m)
{
    for (int k = 0; k < N_ARR; k++) free(m->a[k]);
}

static slm_mamba_grad_params params_of(const model *m)
{
    return (slm_mamba_grad_params){m->a[P_IN], m->a[P_CONV], m->a[P_CONV_B], m->a[P_X], m->a[P_DT],
                                   m->a[P_DT_B], m->a[P_A], m->a[P_D], m->a[P_OUT]};
}

static slm_mamba_grad_grads grads_of(float **g)
{
    return (slm_mamba_grad_grads){g[P_IN], g[P_CONV], g[P_CONV_B], g[P_X], g[P_DT],
                                  g[P_DT_B], g[P_A], g[P_D], g[P_OUT]};
}

/* ---- the double reference ---------------------------------------------------------- */

static double silu_d(double v) { return v / (1.0 + exp(-v)); }
static double softplus_d(double v) { return v <= 20.0 ? log1p(exp(v)) : v; }

/* out (n, dim) from double copies of the parameters and h (p[k]); loops
 * written from the formula in train/mamba_grad.h, each sequence from zero */
static void ref_forward(const slm_mamba_grad_shape *s, double *const *p, double *out)
{
    const int64_t dim = s->dim, di = s->d_inner, S = s->d_state, R = s->dt_rank, dc = s->d_conv;
    const int64_t nx = R + 2 * S, T = s->T, n = s->B * T;
    double *xz = calloc((size_t)(n * 2 * di), sizeof(double));
    double *xc = calloc((size_t)(n * di), sizeof(double));
    double *xdb = calloc((size_t)(n * nx), sizeof(double));
    double *g = calloc((size_t)(n * di), sizeof(double));
    double *st = calloc((size_t)(di * S), sizeof(double));
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < 2 * di; o++) {
            double acc = 0;
            for (int64_t k = 0; k < dim; k++) acc += p[P_IN][o * dim + k] * p[P_H][r * dim + k];
            xz[r * 2 * di + o] = acc;
        }
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = 0; i < di; i++) {
                double u = p[P_CONV_B][i];
                for (int64_t k = 0; k < dc; k++) {
                    const int64_t tt = t - (dc - 1) + k;
                    if (tt >= 0) u += p[P_CONV][i * dc + k] * xz[(b * T + tt) * 2 * di + i];
                }
                xc[(b * T + t) * di + i] = silu_d(u);
            }
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < nx; o++) {
            double acc = 0;
            for (int64_t k = 0; k < di; k++) acc += p[P_X][o * di + k] * xc[r * di + k];
            xdb[r * nx + o] = acc;
        }
    for (int64_t b = 0; b < s->B; b++) {
        memset(st, 0, (size_t)(di * S) * sizeof(double));
        for (int64_t t = 0; t < T; t++) {
            const int64_t r = b * T + t;
            const double *Bt = xdb + r * nx + R, *Ct = Bt + S;
            for (int64_t i = 0; i < di; i++) {
                double v = p[P_DT_B][i];
                for (int64_t k = 0; k < R; k++) v += p[P_DT][i * R + k] * xdb[r * nx + k];
                const double d = softplus_d(v), x = xc[r * di + i];
                double y = x * p[P_D][i];
                for (int64_t j = 0; j < S; j++) {
                    double *sj = st + i * S + j;
                    *sj = *sj * exp(d * p[P_A][i * S + j]) + Bt[j] * x * d;
                    y += *sj * Ct[j];
                }
                g[r * di + i] = y * silu_d(xz[r * 2 * di + di + i]);
            }
        }
    }
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < dim; o++) {
            double acc = 0;
            for (int64_t k = 0; k < di; k++) acc += p[P_OUT][o * di + k] * g[r * di + k];
            out[r * dim + o] = acc;
        }
    free(xz); free(xc); free(xdb); free(g); free(st);
}

static double ref_loss(const slm_mamba_grad_shape *s, double *const *p, const double *Rw, double *out)
{
    ref_forward(s, p, out);
    double L = 0;
    for (int64_t e = 0; e < s->B * s->T * s->dim; e++) L += out[e] * Rw[e];
    return L;
}

/* max |a - b| / max |b| */
static double rel_err_d(const float *a, const double *b, size_t n) { return check_relerr(a, b, n, 1e-300); }
static double rel_err_f(const float *a, const float *b, size_t n) { return check_relerr_f(a, b, n, 1e-300); }

/* ---- running the C code ------------------------------------------------------------ */

typedef struct run {
    float *out, *saved, *dh, *g[N_ARR - 1];
} run;

/* forward, then backward with dout = Rw into fresh (zero) gradients */
static slm_status run_both(slm_pool *pool, const model *m, const float *Rw, run *o, slm_error *err)
{
    const slm_mamba_grad_shape *s = &m->s;
    const size_t n = (size_t)(s->B * s->T), dim = (size_t)s->dim;
    o->out = malloc(n * dim * sizeof(float));
    o->dh = malloc(n * dim * sizeof(float));
    for (size_t e = 0; e < n * dim; e++) o->dh[e] = 1e30f;   /* overwritten (accumulate 0) */
    o->saved = malloc(slm_mamba_grad_saved_floats(s) * sizeof(float));
    for (int k = 0; k < N_ARR - 1; k++) o->g[k] = calloc(m->len[k], sizeof(float));
    slm_mamba_grad_params p = params_of(m);
    slm_mamba_grad_grads g = grads_of(o->g);
    slm_status st = slm_mamba_grad_forward(pool, s, &p, m->a[P_H], o->out, o->saved, err);
    if (!st) st = slm_mamba_grad_backward(pool, s, &p, &g, m->a[P_H], Rw, o->dh, 0, o->saved, err);
    return st;
}

static void run_free(run *o)
{
    free(o->out); free(o->saved); free(o->dh);
    for (int k = 0; k < N_ARR - 1; k++) free(o->g[k]);
}

static float *grad_of(run *o, int k)
{
    return k == P_H ? o->dh : o->g[k];
}

static float *rand_vec(size_t n)
{
    float *v = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) v[i] = (float)drand();
    return v;
}

/* ---- tests ---------------------------------------------------------------------- */

/* The C forward against the double reference and against slm_mamba_forward
 * on each sequence from a fresh state. */
static void test_forward(slm_pool *pool, const slm_mamba_grad_shape *s, const char *what)
{
    model m;
    model_init(&m, s);
    const size_t n = (size_t)(s->B * s->T), dim = (size_t)s->dim;
    float *out = malloc(n * dim * sizeof(float));
    float *saved = malloc(slm_mamba_grad_saved_floats(s) * sizeof(float));
    slm_mamba_grad_params p = params_of(&m);
    slm_error err = {0};
    CHECK(slm_mamba_grad_forward(pool, s, &p, m.a[P_H], out, saved, &err) == SLM_OK, "%s: forward: %s", what, err.msg);

    double *pd[N_ARR], *ref = malloc(n * dim * sizeof(double));
    for (int k = 0; k < N_ARR; k++) {
        pd[k] = malloc(m.len[k] * sizeof(double));
        for (size_t e = 0; e < m.len[k]; e++) pd[k][e] = m.a[k][e];
    }
    ref_forward(s, pd, ref);
    double e_ref = rel_err_d(out, ref, n * dim);
    CHECK(e_ref < 2e-5, "%s: forward vs double reference: %.3g", what, e_ref);

    /* the inference block, f32 weight tensors */
    slm_mamba_shape h = {.version = 1, .dim = s->dim, .d_inner = s->d_inner, .d_conv = s->d_conv,
                         .d_state = s->d_state, .dt_rank = s->dt_rank, .n_group = 1, .eps = 1e-5f};
    int64_t shp[4][2] = {{2 * s->d_inner, s->dim}, {s->dt_rank + 2 * s->d_state, s->d_inner},
                         {s->d_inner, s->dt_rank}, {s->dim, s->d_inner}};
    const int which[4] = {P_IN, P_X, P_DT, P_OUT};
    slm_tensor *w[4];
    for (int k = 0; k < 4; k++) {
        w[k] = slm_tensor_new(SLM_DTYPE_F32, 2, shp[k], &err);
        memcpy(slm_tensor_data(w[k]), m.a[which[k]], m.len[which[k]] * sizeof(float));
    }
    slm_mamba_block blk = {w[0], w[1], w[2], w[3], m.a[P_CONV], m.a[P_CONV_B], m.a[P_DT_B],
                           m.a[P_A], m.a[P_D], NULL, h};
    slm_mamba_state *st = slm_mamba_state_new(1, &h, &err);
    slm_mamba_work *wk = slm_mamba_work_new((int)s->T, &h, &err);
    float *inf = malloc(n * dim * sizeof(float));
    for (int64_t b = 0; b < s->B; b++) {
        slm_mamba_state_clear(st);
        slm_status rc = slm_mamba_forward(pool, &blk, st, 0, (int)s->T, m.a[P_H] + (size_t)(b * s->T) * dim,
                                          inf + (size_t)(b * s->T) * dim, wk, &err);
        CHECK(rc == SLM_OK, "%s: inference forward: %s", what, err.msg);
    }
    double e_inf = rel_err_f(out, inf, n * dim);
    CHECK(e_inf < 1e-5, "%s: forward vs slm_mamba_forward per sequence: %.3g", what, e_inf);
    printf("forward %s: vs double reference %.2e, vs inference block %.2e\n", what, e_ref, e_inf);

    for (int k = 0; k < 4; k++) slm_tensor_free(w[k]);
    slm_mamba_state_free(st);
    slm_mamba_work_free(wk);
    for (int k = 0; k < N_ARR; k++) free(pd[k]);
    free(ref); free(inf); free(out); free(saved);
    model_free(&m);
}

/* Every gradient entry against central differences (step 1e-5 relative to
 * the entry's scale) of the double reference's loss. */
static void test_backward_fd(slm_pool *pool, const slm_mamba_grad_shape *s, double tol, const char *what)
{
    model m;
    model_init(&m, s);
    const size_t n = (size_t)(s->B * s->T), dim = (size_t)s->dim;
    float *Rf = rand_vec(n * dim);
    double *Rw = malloc(n * dim * sizeof(double)), *out = malloc(n * dim * sizeof(double));
    for (size_t e = 0; e < n * dim; e++) Rw[e] = Rf[e];
    run o;
    slm_error err = {0};
    CHECK(run_both(pool, &m, Rf, &o, &err) == SLM_OK, "%s: %s", what, err.msg);
    double *pd[N_ARR];
    for (int k = 0; k < N_ARR; k++) {
        pd[k] = malloc(m.len[k] * sizeof(double));
        for (size_t e = 0; e < m.len[k]; e++) pd[k][e] = m.a[k][e];
    }
    double errs[N_ARR];
    for (int k = 0; k < N_ARR; k++) {
        double *fd = malloc(m.len[k] * sizeof(double));
        for (size_t e = 0; e < m.len[k]; e++) {
            const double v = pd[k][e], hstep = 1e-5 * fmax(1.0, fabs(v));
            pd[k][e] = v + hstep;
            const double lp = ref_loss(s, pd, Rw, out);
            pd[k][e] = v - hstep;
            const double lm = ref_loss(s, pd, Rw, out);
            pd[k][e] = v;
            fd[e] = (lp - lm) / (2 * hstep);
        }
        errs[k] = rel_err_d(grad_of(&o, k), fd, m.len[k]);
        free(fd);
    }
    printf("backward %s, max |C - fd| / max |fd| (double central differences, every entry):\n ", what);
    for (int k = 0; k < N_ARR; k++) printf(" %s %.1e", names[k], errs[k]);
    printf("\n");
    for (int k = 0; k < N_ARR; k++)
        CHECK(errs[k] < tol, "%s: gradient of %s vs finite differences: %.3g (tolerance %.1g)", what, names[k],
              errs[k], tol);
    for (int k = 0; k < N_ARR; k++) free(pd[k]);
    run_free(&o);
    free(Rf); free(Rw); free(out);
    model_free(&m);
}

/* A sample of entries against central differences of the C forward in f32
 * (step 2e-3 relative): a check of the code against itself at f32
 * precision, tolerance 2e-2 of the tensor's largest gradient plus 1e-5,
 * the noise of a difference of two f32 losses of size ~1 over 2 steps of
 * ~1e-2 (ssm_a's gradients are ~4e-5 here: δ A is small). */
static void test_backward_fd_f32(slm_pool *pool, const slm_mamba_grad_shape *s)
{
    model m;
    model_init(&m, s);
    const size_t n = (size_t)(s->B * s->T), dim = (size_t)s->dim;
    float *Rf = rand_vec(n * dim), *out = malloc(n * dim * sizeof(float));
    float *saved = malloc(slm_mamba_grad_saved_floats(s) * sizeof(float));
    run o;
    slm_error err = {0};
    CHECK(run_both(pool, &m, Rf, &o, &err) == SLM_OK, "f32 fd: %s", err.msg);
    slm_mamba_grad_params p = params_of(&m);
    double worsts[N_ARR], scales[N_ARR];
    for (int k = 0; k < N_ARR; k++) {
        const float *gk = grad_of(&o, k);
        double scale = 0, worst = 0;
        for (size_t e = 0; e < m.len[k]; e++) scale = fmax(scale, fabs(gk[e]));
        for (int q = 0; q < 12; q++) {
            const size_t e = (size_t)((drand() + 1) / 2 * (double)m.len[k]) % m.len[k];
            const float v = m.a[k][e], hstep = 2e-3f * fmaxf(1.0f, fabsf(v));
            double l[2];
            for (int side = 0; side < 2; side++) {
                m.a[k][e] = side ? v - hstep : v + hstep;
                slm_mamba_grad_forward(pool, s, &p, m.a[P_H], out, saved, &err);
                double L = 0;
                for (size_t r = 0; r < n * dim; r++) L += (double)out[r] * Rf[r];
                l[side] = L;
            }
            m.a[k][e] = v;
            const double fd = (l[0] - l[1]) / (2.0 * (double)hstep);
            worst = fmax(worst, fabs(fd - gk[e]));
        }
        worsts[k] = worst;
        scales[k] = scale;
    }
    printf("backward, f32 central differences of the C forward (12 entries per tensor), max |C - fd| / max |C|:\n ");
    for (int k = 0; k < N_ARR; k++) printf(" %s %.1e", names[k], worsts[k] / scales[k]);
    printf("\n");
    for (int k = 0; k < N_ARR; k++)
        CHECK(worsts[k] <= 2e-2 * scales[k] + 1e-5, "f32 fd: gradient of %s off by %.3g of %.3g", names[k],
              worsts[k], scales[k]);
    run_free(&o);
    free(Rf); free(out); free(saved);
    model_free(&m);
}

/* Same floats whatever the checkpoint stride and the number of threads;
 * accumulate 1 adds dh, parameter gradients always add. */
static void test_invariance(const slm_mamba_grad_shape *s0)
{
    slm_error err = {0};
    slm_pool *p1 = slm_pool_new(1, &err), *p2 = slm_pool_new(2, &err);
    slm_mamba_grad_shape s = *s0;
    model m;
    model_init(&m, &s);
    const size_t nd = (size_t)(s.B * s.T * s.dim);
    float *Rf = rand_vec(nd);
    run base;
    CHECK(run_both(p1, &m, Rf, &base, &err) == SLM_OK, "invariance: %s", err.msg);
    const int64_t chunks[] = {1, 3, 8, s.T - 1, s.T, 1000};
    const int pools[] = {1, 2};
    for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++)
        for (int q = 0; q < 2; q++) {
            m.s.chunk = chunks[c];
            run o;
            CHECK(run_both(pools[q] == 1 ? p1 : p2, &m, Rf, &o, &err) == SLM_OK, "invariance: %s", err.msg);
            int same = memcmp(o.out, base.out, nd * sizeof(float)) == 0;
            for (int k = 0; k < N_ARR; k++)
                same = same && memcmp(grad_of(&o, k), grad_of(&base, k), m.len[k] * sizeof(float)) == 0;
            CHECK(same, "chunk %lld with %d threads: outputs or gradients differ from chunk %lld with 1 thread",
                  (long long)chunks[c], pools[q], (long long)s.chunk);
            run_free(&o);
        }
    m.s.chunk = s.chunk;

    /* accumulate: dh += ; parameter gradients += (a second backward doubles them) */
    slm_mamba_grad_params p = params_of(&m);
    float *dh = malloc(nd * sizeof(float));
    for (size_t e = 0; e < nd; e++) dh[e] = 0.5f;
    slm_mamba_grad_grads g = grads_of(base.g);
    float *g_in = malloc(m.len[P_IN] * sizeof(float)), *g_a = malloc(m.len[P_A] * sizeof(float));
    memcpy(g_in, base.g[P_IN], m.len[P_IN] * sizeof(float));
    memcpy(g_a, base.g[P_A], m.len[P_A] * sizeof(float));
    CHECK(slm_mamba_grad_backward(p2, &m.s, &p, &g, m.a[P_H], Rf, dh, 1, base.saved, &err) == SLM_OK, "%s", err.msg);
    double e_dh = 0, e_g = 0;
    for (size_t e = 0; e < nd; e++) e_dh = fmax(e_dh, fabs(dh[e] - (0.5 + base.dh[e])));
    for (size_t e = 0; e < m.len[P_IN]; e++) e_g = fmax(e_g, fabs(base.g[P_IN][e] - 2.0 * g_in[e]));
    for (size_t e = 0; e < m.len[P_A]; e++) e_g = fmax(e_g, fabs(base.g[P_A][e] - 2.0 * g_a[e]));
    CHECK(e_dh < 1e-6, "accumulate 1: dh is not 0.5 + dh (off by %.3g)", e_dh);
    CHECK(e_g < 1e-6, "parameter gradients do not accumulate (off by %.3g)", e_g);
    printf("invariance: identical floats for chunks 1, 3, 8, T-1, T, 1000 at 1 and 2 threads; accumulate ok\n");
    free(dh); free(g_in); free(g_a);
    run_free(&base);
    free(Rf);
    model_free(&m);
    slm_pool_free(p1);
    slm_pool_free(p2);
}

/* The forward scan with δ given against blocks/mamba.c's scan on
 * softplus(dt) (the same floats, generic and AVX2 paths alike); the AVX2
 * kernels against their generic versions on random inputs. */
static void test_kernels(void)
{
    const int64_t di = 12, n = 23, K = 5, nck = (n - 1) / K;
    const int64_t states[2] = {16, 5};   /* the AVX2 path, the generic one */
    for (int q = 0; q < 2; q++) {
        const int64_t S = states[q];
        float *x = rand_vec((size_t)(n * di)), *dt = rand_vec((size_t)(n * di)), *bc = rand_vec((size_t)(n * 2 * S));
        float *A = rand_vec((size_t)(di * S)), *D = rand_vec((size_t)di);
        float *delta = malloc((size_t)(n * di) * sizeof(float));
        for (int64_t e = 0; e < di * S; e++) A[e] = -2.0f * fabsf(A[e]);
        for (int64_t e = 0; e < n * di; e++) {
            dt[e] = 3.0f * dt[e] - 2.0f;
            delta[e] = log1pf(expf(dt[e]));   /* blocks/mamba.c's softplus below 20 */
        }
        float *y[2], *st[2];
        for (int v = 0; v < 2; v++) {
            y[v] = calloc((size_t)(n * di), sizeof(float));
            st[v] = calloc((size_t)(di * S), sizeof(float));
        }
        slm_mamba_scan(y[0], di, st[0], x, di, dt, di, A, bc, 2 * S, D, (int)n, S, 0, di);
        slm_mamba_grad_scan(y[1], di, st[1], x, di, delta, di, A, bc, 2 * S, D, (int)n, S, 0, di);
        CHECK(memcmp(y[0], y[1], (size_t)(n * di) * sizeof(float)) == 0 &&
              memcmp(st[0], st[1], (size_t)(di * S) * sizeof(float)) == 0,
              "scan with δ given (d_state %lld) differs from slm_mamba_scan", (long long)S);
#if defined(__x86_64__)
        if (S % 8 == 0 && slm_kernels_use_avx2()) {
            memset(st[0], 0, (size_t)(di * S) * sizeof(float));
            memset(st[1], 0, (size_t)(di * S) * sizeof(float));
            slm_mamba_grad_scan_generic(y[0], di, st[0], x, di, delta, di, A, bc, 2 * S, D, (int)n, S, 0, di);
            slm_mamba_grad_scan_avx2(y[1], di, st[1], x, di, delta, di, A, bc, 2 * S, D, (int)n, S, 0, di);
            const double e = rel_err_f(y[1], y[0], (size_t)(n * di));
            CHECK(e < 1e-5, "forward scan: AVX2 vs generic %.3g", e);
            printf("forward scan: AVX2 vs generic, max rel %.2e\n", e);

            float *sig = malloc((size_t)(n * di) * sizeof(float)), *dy = rand_vec((size_t)(n * di));
            float *ck = rand_vec((size_t)(nck * di * S));
            slm_mamba_grad_sigmoid_generic(sig, dt, n * di);
            float *out[2][5];
            for (int v = 0; v < 2; v++) {
                out[v][0] = calloc((size_t)(n * di), sizeof(float));      /* dx */
                out[v][1] = calloc((size_t)(n * di), sizeof(float));      /* ddt */
                out[v][2] = calloc((size_t)(di * S), sizeof(float));      /* dA */
                out[v][3] = calloc((size_t)di, sizeof(float));            /* dD */
                out[v][4] = calloc((size_t)(n * 2 * S), sizeof(float));   /* dbc */
                float *buf = malloc((size_t)((2 * K + 3) * S) * sizeof(float));
                slm_mamba_grad_scan_args a = {x, delta, sig, bc, dy, A, D, ck, di, di, 2 * S, di, di * S,
                                              out[v][0], out[v][1], out[v][2], out[v][3], out[v][4],
                                              di, di, 2 * S, (int)n, K, S, buf};
                if (v) slm_mamba_grad_scan_back_avx2(&a, 0, di);
                else slm_mamba_grad_scan_back_generic(&a, 0, di);
                free(buf);
            }
            const size_t lens[5] = {(size_t)(n * di), (size_t)(n * di), (size_t)(di * S), (size_t)di,
                                    (size_t)(n * 2 * S)};
            double worst = 0;
            for (int k = 0; k < 5; k++) worst = fmax(worst, rel_err_f(out[1][k], out[0][k], lens[k]));
            CHECK(worst < 1e-5, "scan backward: AVX2 vs generic %.3g", worst);
            printf("scan backward: AVX2 vs generic, max rel %.2e\n", worst);
            for (int v = 0; v < 2; v++)
                for (int k = 0; k < 5; k++) free(out[v][k]);

            /* sigmoid over [-100, 100], and the tails */
            float *sx = malloc(1003 * sizeof(float)), *s0 = malloc(1003 * sizeof(float)), *s1 = malloc(1003 * sizeof(float));
            for (int q2 = 0; q2 < 1003; q2++) sx[q2] = -100.0f + 0.2f * (float)q2;
            slm_mamba_grad_sigmoid_generic(s0, sx, 1003);
            slm_mamba_grad_sigmoid_avx2(s1, sx, 1003);
            double es = 0;
            for (int q2 = 0; q2 < 1003; q2++) es = fmax(es, fabs((double)s1[q2] - s0[q2]) / fmax(s0[q2], 1e-30));
            CHECK(es < 1e-5, "sigmoid: AVX2 vs generic %.3g", es);
            printf("sigmoid: AVX2 vs generic, max rel %.2e\n", es);
            free(sx); free(s0); free(s1); free(sig); free(dy); free(ck);
        } else if (S % 8 == 0) {
            printf("skip: no AVX2, the AVX2 kernels are not tested\n");
        }
#endif
        for (int v = 0; v < 2; v++) {
            free(y[v]);
            free(st[v]);
        }
        free(x); free(dt); free(bc); free(A); free(D); free(delta);
    }
}

static void test_errors(void)
{
    slm_error err = {0};
    slm_mamba_grad_shape s = {2, 5, 8, 16, 4, 4, 2, 0};
    CHECK(slm_mamba_grad_shape_check(&s, &err) == SLM_OK, "good shape refused: %s", err.msg);
    slm_mamba_grad_shape b = s;
    b.B = 0;
    CHECK(slm_mamba_grad_shape_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "B 0 and T 5"), "B 0: %s", err.msg);
    CHECK(slm_mamba_grad_saved_floats(&b) == 0, "saved floats of a bad shape");
    b = s;
    b.chunk = -1;
    CHECK(slm_mamba_grad_shape_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "chunk -1"), "chunk: %s", err.msg);
    b = s;
    b.d_conv = 1000;
    CHECK(slm_mamba_grad_shape_check(&b, &err) == SLM_EINVAL && strstr(err.msg, "d_conv 1000"), "d_conv: %s", err.msg);
    b = s;
    b.B = 1 << 13;
    b.T = 1 << 12;
    CHECK(slm_mamba_grad_shape_check(&b, &err) == SLM_EINVAL, "B*T over 2^24 accepted");
    /* the memory formula: n (6 di + R + 2 S) + B (ceil(T / K) - 1) di S */
    s.chunk = 2;
    CHECK(slm_mamba_grad_saved_floats(&s) == (size_t)(10 * (6 * 16 + 2 + 8) + 2 * 2 * 16 * 4),
          "saved floats %zu", slm_mamba_grad_saved_floats(&s));
    s.chunk = 0;
    CHECK(slm_mamba_grad_saved_floats(&s) == (size_t)(10 * (6 * 16 + 2 + 8)), "saved floats, no checkpoint");
}

/* ---- bench ------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void bench(int n_threads)
{
    const int L = 4;
    slm_mamba_grad_shape s = {12, 64, 128, 256, 16, 4, 8, 0};
    slm_error err = {0};
    slm_pool *pool = slm_pool_new(n_threads, &err);
    model m[4];
    run o[4];
    const size_t nd = (size_t)(s.B * s.T * s.dim);
    float *dout = rand_vec(nd);
    size_t n_param = 0;
    for (int l = 0; l < L; l++) {
        model_init(&m[l], &s);
        for (int k = 0; k < N_ARR - 1; k++) n_param += m[l].len[k];
        o[l].out = malloc(nd * sizeof(float));
        o[l].dh = malloc(nd * sizeof(float));
        o[l].saved = malloc(slm_mamba_grad_saved_floats(&s) * sizeof(float));
        for (int k = 0; k < N_ARR - 1; k++) o[l].g[k] = calloc(m[l].len[k], sizeof(float));
    }
    double tf = 0, tb = 0;
    const int iters = 6;
    for (int it = 0; it <= iters; it++) {
        double t0 = now();
        for (int l = 0; l < L; l++) {
            slm_mamba_grad_params p = params_of(&m[l]);
            slm_mamba_grad_forward(pool, &s, &p, m[l].a[P_H], o[l].out, o[l].saved, &err);
        }
        double t1 = now();
        for (int l = L - 1; l >= 0; l--) {
            slm_mamba_grad_params p = params_of(&m[l]);
            slm_mamba_grad_grads g = grads_of(o[l].g);
            slm_mamba_grad_backward(pool, &s, &p, &g, m[l].a[P_H], dout, o[l].dh, 0, o[l].saved, &err);
        }
        double t2 = now();
        if (it) tf += t1 - t0, tb += t2 - t1;   /* the first is a warm-up */
    }
    const double tok = (double)(s.B * s.T) * iters;
    printf("bench: %d mixers of %zu params (dim 128, d_inner 256, d_state 16, d_conv 4, dt_rank 8), "
           "B 12, T 64, %d thread(s): forward %.2f us/token, backward %.2f us/token, total %.2f us/token "
           "(%.0f tokens/s); saved %.2f MB a layer\n",
           L, n_param / L, n_threads, 1e6 * tf / tok, 1e6 * tb / tok, 1e6 * (tf + tb) / tok,
           tok / (tf + tb), slm_mamba_grad_saved_floats(&s) * 4.0 / 1e6);
    for (int l = 0; l < L; l++) {
        run_free(&o[l]);
        model_free(&m[l]);
    }
    free(dout);
    slm_pool_free(pool);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench(1);
        bench(2);
        return 0;
    }
    slm_error err = {0};
    slm_pool *pool = slm_pool_new(2, &err);
    /* the brief's small shape, checkpoints every 2 tokens */
    const slm_mamba_grad_shape small = {2, 5, 8, 16, 4, 4, 2, 2};
    /* d_state 16: the AVX2 scans; d_conv 3, T not a multiple of the chunk */
    const slm_mamba_grad_shape wide = {3, 11, 12, 24, 16, 3, 3, 4};
    /* one sequence, d_conv 1, a chunk longer than the sequence */
    const slm_mamba_grad_shape one = {1, 7, 6, 8, 5, 1, 1, 100};
    test_forward(pool, &small, "dim 8, d_inner 16, d_state 4, B 2, T 5, chunk 2");
    test_forward(pool, &wide, "dim 12, d_inner 24, d_state 16, d_conv 3, B 3, T 11, chunk 4");
    test_forward(pool, &one, "d_conv 1, B 1, T 7, chunk 100");
    test_backward_fd(pool, &small, 1e-4, "dim 8, d_inner 16, d_state 4, B 2, T 5, chunk 2");
    test_backward_fd(pool, &wide, 1e-4, "dim 12, d_inner 24, d_state 16, d_conv 3, B 3, T 11, chunk 4");
    test_backward_fd(pool, &one, 1e-4, "d_conv 1, B 1, T 7, chunk 100");
    /* d_state 16 on the portable kernels too */
    slm_kernels_force_generic(1);
    test_forward(pool, &wide, "generic kernels, dim 12, d_inner 24, d_state 16, d_conv 3, B 3, T 11, chunk 4");
    test_backward_fd(pool, &wide, 1e-4, "generic kernels, dim 12, d_inner 24, d_state 16, d_conv 3, B 3, T 11, chunk 4");
    slm_kernels_force_generic(0);
    test_backward_fd_f32(pool, &small);
    test_invariance(&(slm_mamba_grad_shape){3, 37, 32, 64, 16, 4, 4, 8});
    test_invariance(&(slm_mamba_grad_shape){2, 9, 16, 40, 5, 4, 3, 2});
    test_kernels();
    test_errors();
    slm_pool_free(pool);
    return check_summary();
}
