/* Backward kernels, f32 linear and softmax-cross-entropy (train/grad.h)
 * against references written here: each kernel is compared with a plain
 * double-precision version of its formula and with central finite
 * differences of a scalar loss (in double on this file's double forward,
 * and for the row ops also in float on the library's own forward); the AVX2
 * paths with the generic ones; 1 and 2 threads with each other. The max
 * errors are printed. (AdamW: tests/test_adamw.c.) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/pool.h"
#include "kernels/ops.h"
#include "kernels/vecdot.h"
#include "train/grad.h"

#define TESTRAND_SEED 2024
#include "testrand.h"

static double *dcopy(const float *x, int64_t n)
{
    double *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = x[i];
    return v;
}

/* max |a - b| / max |b| (b the reference) */
static double relerr(const float *a, const double *b, int64_t n) { return check_relerr(a, b, (size_t)n, 1e-30); }
static double relerr_f(const float *a, const float *b, int64_t n) { return check_relerr_f(a, b, (size_t)n, 1e-30); }

static slm_pool *pool1, *pool2;
static int have_avx2;

/* --- linear --------------------------------------------------------------- */

/* y = x W^T + b in double */
static void ref_linear(double *y, const double *x, const double *W, const double *b, int64_t n, int64_t in,
                       int64_t out)
{
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0;
            for (int64_t i = 0; i < in; i++) s += x[r * in + i] * W[o * in + i];
            y[r * out + o] = s;
        }
}

/* sum of y R over all elements, the scalar loss of the finite differences */
static double dot_d(const double *a, const double *b, int64_t n)
{
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static double lin_loss(const double *x, const double *W, const double *b, const double *R, int64_t n,
                       int64_t in, int64_t out)
{
    double *y = malloc((size_t)(n * out) * sizeof *y);
    ref_linear(y, x, W, b, n, in, out);
    double s = dot_d(y, R, n * out);
    free(y);
    return s;
}

/* central difference of lin_loss in element i of p (one of x, W, b) */
static double lin_fd(double *p, int64_t i, const double *x, const double *W, const double *b, const double *R,
                     int64_t n, int64_t in, int64_t out)
{
    const double h = 1e-3, keep = p[i];
    p[i] = keep + h;
    double lp = lin_loss(x, W, b, R, n, in, out);
    p[i] = keep - h;
    double lm = lin_loss(x, W, b, R, n, in, out);
    p[i] = keep;
    return (lp - lm) / (2 * h);
}

static double worst_lin_fwd, worst_lin_dx, worst_lin_dW, worst_lin_db, worst_lin_fd;

static void test_linear(slm_pool *pool, int64_t n, int64_t in, int64_t out, int bias)
{
    float *x = rvec(n * in, 1), *W = rvec(out * in, 0.2f), *b = bias ? rvec(out, 1) : NULL;
    float *y = rvec(n * out, 1), *dy = rvec(n * out, 1);
    double *xd = dcopy(x, n * in), *Wd = dcopy(W, out * in), *bd = b ? dcopy(b, out) : NULL;
    double *dyd = dcopy(dy, n * out);
    double *yr = malloc((size_t)(n * out) * sizeof *yr);
    slm_error err = {0};
    CHECK(slm_grad_linear(pool, y, x, W, b, n, in, out, &err) == SLM_OK, "linear: %s", err.msg);
    ref_linear(yr, xd, Wd, bd, n, in, out);
    double e = relerr(y, yr, n * out);
    worst_lin_fwd = fmax(worst_lin_fwd, e);
    CHECK(e < 1e-5, "linear %lldx%lld->%lld bias %d: forward error %.3g", (long long)n, (long long)in,
          (long long)out, bias, e);

    /* backward, accumulating onto prefilled gradients */
    float *dx = rvec(n * in, 1), *dW = rvec(out * in, 1), *db = rvec(out, 1);
    float *dx0 = fdup(dx, n * in), *dW0 = fdup(dW, out * in), *db0 = fdup(db, out);
    CHECK(slm_grad_linear_backward(pool, dx, dW, db, dy, x, W, n, in, out, 1, &err) == SLM_OK, "%s", err.msg);
    double *rdx = calloc((size_t)(n * in), sizeof *rdx), *rdW = calloc((size_t)(out * in), sizeof *rdW);
    double *rdb = calloc((size_t)out, sizeof *rdb);
    for (int64_t r = 0; r < n; r++)
        for (int64_t o = 0; o < out; o++) {
            const double g = dyd[r * out + o];
            rdb[o] += g;
            for (int64_t i = 0; i < in; i++) {
                rdx[r * in + i] += g * Wd[o * in + i];
                rdW[o * in + i] += g * xd[r * in + i];
            }
        }
    /* compare the added parts: (new - old) against the reference */
    for (int64_t i = 0; i < n * in; i++) dx[i] -= dx0[i];
    for (int64_t i = 0; i < out * in; i++) dW[i] -= dW0[i];
    for (int64_t i = 0; i < out; i++) db[i] -= db0[i];
    double ex = relerr(dx, rdx, n * in), eW = relerr(dW, rdW, out * in), eb = relerr(db, rdb, out);
    worst_lin_dx = fmax(worst_lin_dx, ex);
    worst_lin_dW = fmax(worst_lin_dW, eW);
    worst_lin_db = fmax(worst_lin_db, eb);
    CHECK(ex < 1e-5 && eW < 1e-5 && eb < 1e-5, "linear %lldx%lld->%lld backward errors dx %.3g dW %.3g db %.3g",
          (long long)n, (long long)in, (long long)out, ex, eW, eb);

    /* overwrite: dx = dy W whatever was there (NaN included); NULL dW, db */
    for (int64_t i = 0; i < n * in; i++) dx[i] = NAN;
    CHECK(slm_grad_linear_backward(pool, dx, NULL, NULL, dy, x, W, n, in, out, 0, &err) == SLM_OK, "%s", err.msg);
    e = relerr(dx, rdx, n * in);
    CHECK(e < 1e-5, "linear backward overwrite: dx error %.3g", e);
    /* only dW and db, from zero: against finite differences of sum(y dy) */
    memset(dW, 0, (size_t)(out * in) * sizeof *dW);
    memset(db, 0, (size_t)out * sizeof *db);
    CHECK(slm_grad_linear_backward(pool, NULL, dW, bias ? db : NULL, dy, x, W, n, in, out, 0, &err) == SLM_OK,
          "%s", err.msg);
    double fd_err = 0;
    for (int k = 0; k < 12; k++) {
        const int64_t i = (int64_t)(urand() % (uint32_t)(out * in));
        double fd = lin_fd(Wd, i, xd, Wd, bd, dyd, n, in, out);
        fd_err = fmax(fd_err, fabs(dW[i] - fd) / (fabs(fd) + 1));
        const int64_t j = (int64_t)(urand() % (uint32_t)(n * in));
        fd = lin_fd(xd, j, xd, Wd, bd, dyd, n, in, out);
        fd_err = fmax(fd_err, fabs(dx[j] - fd) / (fabs(fd) + 1));
        if (bias) {
            const int64_t o = (int64_t)(urand() % (uint32_t)out);
            fd = lin_fd(bd, o, xd, Wd, bd, dyd, n, in, out);
            fd_err = fmax(fd_err, fabs(db[o] - fd) / (fabs(fd) + 1));
        }
    }
    worst_lin_fd = fmax(worst_lin_fd, fd_err);
    CHECK(fd_err < 1e-4, "linear %lldx%lld->%lld: finite differences differ by %.3g", (long long)n, (long long)in,
          (long long)out, fd_err);
    free(x); free(W); free(b); free(y); free(dy); free(xd); free(Wd); free(bd); free(dyd); free(yr);
    free(dx); free(dW); free(db); free(dx0); free(dW0); free(db0); free(rdx); free(rdW); free(rdb);
}

static void test_linear_all(void)
{
    /* rows split (n >= out), columns split (n < out), dW by rows (out >=
     * in) and by columns (out < in), one row, odd sizes */
    const int64_t shapes[][3] = {{96, 32, 24}, {5, 24, 40}, {1, 7, 3}, {130, 48, 65}, {64, 65, 17}};
    for (int s = 0; s < 5; s++)
        for (int bias = 0; bias < 2; bias++) {
            test_linear(pool1, shapes[s][0], shapes[s][1], shapes[s][2], bias);
            test_linear(pool2, shapes[s][0], shapes[s][1], shapes[s][2], bias);
        }
    slm_error err = {0};
    CHECK(slm_grad_linear(pool1, NULL, NULL, NULL, NULL, 4, (int64_t)1 << 32, 3, &err) == SLM_ERANGE,
          "linear: in = 2^32 accepted");
    CHECK(slm_grad_linear_backward(pool1, NULL, NULL, NULL, NULL, NULL, NULL, 4, 0, 3, 0, &err) == SLM_EINVAL,
          "linear_backward: in = 0 accepted");
    printf("linear: max rel error fwd %.2e dx %.2e dW %.2e db %.2e; vs finite differences %.2e\n",
           worst_lin_fwd, worst_lin_dx, worst_lin_dW, worst_lin_db, worst_lin_fd);
}

/* --- embedding -------------------------------------------------------------- */

static void test_embed(slm_pool *pool, int64_t vocab, int64_t dim, int64_t n)
{
    float *dW = rvec(vocab * dim, 1), *dy = rvec(n * dim, 1);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    for (int64_t i = 0; i < n; i++) ids[i] = (int32_t)(urand() % (uint32_t)(vocab < 8 ? vocab : vocab / 4));
    /* in double, and in float adding in order of i (the same bits) */
    double *ref = dcopy(dW, vocab * dim);
    float *ref32 = fdup(dW, vocab * dim);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < dim; j++) {
            ref[ids[i] * dim + j] += dy[i * dim + j];
            ref32[ids[i] * dim + j] += dy[i * dim + j];
        }
    slm_error err = {0};
    CHECK(slm_grad_embed_backward(pool, dW, vocab, dim, ids, dy, n, &err) == SLM_OK, "%s", err.msg);
    double e = relerr(dW, ref, vocab * dim);
    CHECK(e < 1e-5 && !memcmp(dW, ref32, (size_t)(vocab * dim) * sizeof *dW),
          "embed_backward V=%lld dim=%lld n=%lld: error %.3g", (long long)vocab, (long long)dim, (long long)n, e);
    printf("embed_backward V=%lld dim=%lld n=%lld: rel error vs double %.2e, equal to the in-order float sum\n",
           (long long)vocab, (long long)dim, (long long)n, e);
    /* an id out of range: an error naming it, dW untouched */
    float *before = fdup(dW, vocab * dim);
    ids[n / 2] = (int32_t)vocab;
    CHECK(slm_grad_embed_backward(pool, dW, vocab, dim, ids, dy, n, &err) == SLM_ERANGE &&
              strstr(err.msg, "outside") && !memcmp(before, dW, (size_t)(vocab * dim) * sizeof *dW),
          "embed_backward: bad id not refused cleanly (%s)", err.msg);
    ids[n / 2] = -1;
    CHECK(slm_grad_embed_backward(pool, dW, vocab, dim, ids, dy, n, &err) == SLM_ERANGE, "negative id accepted");
    free(dW); free(dy); free(ids); free(ref); free(ref32); free(before);
}

/* --- RMSNorm ------------------------------------------------------------------- */

static void rms_fwd_d(double *y, const double *x, const double *w, int64_t rows, int64_t n, double eps)
{
    for (int64_t r = 0; r < rows; r++) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += x[r * n + i] * x[r * n + i];
        const double s = 1 / sqrt(ss / n + eps);
        for (int64_t i = 0; i < n; i++) y[r * n + i] = x[r * n + i] * s * (w ? w[i] : 1);
    }
}

static double rms_loss(const double *x, const double *w, const double *R, int64_t rows, int64_t n, double eps)
{
    double *y = malloc((size_t)(rows * n) * sizeof *y);
    rms_fwd_d(y, x, w, rows, n, eps);
    double s = dot_d(y, R, rows * n);
    free(y);
    return s;
}

/* dx = r g - x r^3 (g . x) / n, dw = sum dy x r (double) */
static void rms_bwd_d(double *dx, double *dw, const double *dy, const double *x, const double *w, int64_t rows,
                      int64_t n, double eps)
{
    for (int64_t r = 0; r < rows; r++) {
        const double *xr = x + r * n, *dyr = dy + r * n;
        double ss = 0, gx = 0;
        for (int64_t i = 0; i < n; i++) ss += xr[i] * xr[i];
        const double s = 1 / sqrt(ss / n + eps);
        for (int64_t i = 0; i < n; i++) gx += dyr[i] * (w ? w[i] : 1) * xr[i];
        for (int64_t i = 0; i < n; i++) {
            dx[r * n + i] = s * dyr[i] * (w ? w[i] : 1) - xr[i] * s * s * s * gx / n;
            if (dw) dw[i] += dyr[i] * xr[i] * s;
        }
    }
}

static void test_rmsnorm(slm_pool *pool, int64_t rows, int64_t n, int weighted)
{
    const float eps = 1e-5f;
    float *x = rvec(rows * n, 2), *dy = rvec(rows * n, 1), *w = weighted ? rvec(n, 0.5f) : NULL;
    if (w)
        for (int64_t i = 0; i < n; i++) w[i] += 1.0f;
    /* one row near zero, where eps matters */
    for (int64_t i = 0; i < n; i++) x[i] *= 1e-3f;
    double *xd = dcopy(x, rows * n), *dyd = dcopy(dy, rows * n), *wd = w ? dcopy(w, n) : NULL;
    double *rdx = malloc((size_t)(rows * n) * sizeof *rdx), *rdw = calloc((size_t)n, sizeof *rdw);
    rms_bwd_d(rdx, w ? rdw : NULL, dyd, xd, wd, rows, n, eps);
    float *dx = rvec(rows * n, 1), *dw = calloc((size_t)n, sizeof *dw);
    float *dxg = rvec(rows * n, 1), *dwg = calloc((size_t)n, sizeof *dwg);
    slm_error err = {0};
    /* the generic path, then the default one (AVX2 when the CPU has it) */
    slm_kernels_force_generic(1);
    CHECK(slm_grad_rmsnorm_backward(pool, dxg, dwg, dy, x, w, rows, n, eps, 0, &err) == SLM_OK, "%s", err.msg);
    slm_kernels_force_generic(0);
    CHECK(slm_grad_rmsnorm_backward(pool, dx, dw, dy, x, w, rows, n, eps, 0, &err) == SLM_OK, "%s", err.msg);
    double ex = fmax(relerr(dx, rdx, rows * n), relerr(dxg, rdx, rows * n));
    double ew = w ? fmax(relerr(dw, rdw, n), relerr(dwg, rdw, n)) : 0;
    /* dw's column sums are the same bits on both paths; dx's row sums
     * differ in order only */
    const double eavx = relerr_f(dx, dxg, rows * n);
    CHECK(eavx < 1e-6 && !memcmp(dw, dwg, (size_t)n * sizeof *dw), "rmsnorm: AVX2 vs generic dx %.3g, dw %s", eavx,
          memcmp(dw, dwg, (size_t)n * sizeof *dw) ? "differs" : "same");
    CHECK(ex < 2e-5 && ew < 2e-5, "rmsnorm %lldx%lld w %d: dx error %.3g dw error %.3g", (long long)rows,
          (long long)n, weighted, ex, ew);
    /* finite differences in double of sum(y dy): a few x, every w */
    const double h = 1e-5;
    double fe = 0;
    for (int k = 0; k < 24; k++) {
        const int64_t i = k < 4 ? (int64_t)k : (int64_t)(urand() % (uint32_t)(rows * n));   /* row 0 too */
        const double keep = xd[i];
        xd[i] = keep + h;
        const double lp = rms_loss(xd, wd, dyd, rows, n, eps);
        xd[i] = keep - h;
        const double lm = rms_loss(xd, wd, dyd, rows, n, eps);
        xd[i] = keep;
        const double fd = (lp - lm) / (2 * h);
        fe = fmax(fe, fabs(dx[i] - fd) / (fabs(fd) + 1e-2));
    }
    for (int64_t i = 0; w && i < n; i++) {
        const double keep = wd[i];
        wd[i] = keep + h;
        const double lp = rms_loss(xd, wd, dyd, rows, n, eps);
        wd[i] = keep - h;
        const double lm = rms_loss(xd, wd, dyd, rows, n, eps);
        wd[i] = keep;
        const double fd = (lp - lm) / (2 * h);
        fe = fmax(fe, fabs(dw[i] - fd) / (fabs(fd) + 1e-2));
    }
    CHECK(fe < 1e-4, "rmsnorm %lldx%lld: kernel vs finite differences %.3g", (long long)rows, (long long)n, fe);
    /* finite differences in float on the library's forward */
    float *yp = malloc((size_t)n * sizeof *yp), *xr = malloc((size_t)n * sizeof *xr);
    double fe32 = 0, gmax = 0;
    for (int64_t i = 0; i < rows * n; i++) gmax = fmax(gmax, fabs(rdx[i]));
    for (int k = 0; k < 16; k++) {
        const int64_t r = 1 + (int64_t)(urand() % (uint32_t)(rows - 1)), i = (int64_t)(urand() % (uint32_t)n);
        const float hf = 4e-3f;
        double l[2];
        for (int sgn = 0; sgn < 2; sgn++) {
            memcpy(xr, x + r * n, (size_t)n * sizeof *xr);
            xr[i] += sgn ? -hf : hf;
            slm_ops_rmsnorm(yp, xr, w, 1, n, eps);
            l[sgn] = 0;
            for (int64_t j = 0; j < n; j++) l[sgn] += (double)yp[j] * dy[r * n + j];
        }
        const double fd = (l[0] - l[1]) / (2 * (double)hf);
        fe32 = fmax(fe32, fabs(dx[r * n + i] - fd) / gmax);
    }
    CHECK(fe32 < 3e-3, "rmsnorm: kernel vs float finite differences of slm_ops_rmsnorm %.3g", fe32);
    /* accumulate: dx += the same again; dw += again */
    float *dx1 = fdup(dx, rows * n), *dw1 = fdup(dw, n);
    CHECK(slm_grad_rmsnorm_backward(pool, dx, dw, dy, x, w, rows, n, eps, 1, &err) == SLM_OK, "%s", err.msg);
    int ok = 1;
    for (int64_t i = 0; i < rows * n; i++) ok &= dx[i] == dx1[i] + dx1[i];
    for (int64_t i = 0; w && i < n; i++) ok &= dw[i] == dw1[i] + dw1[i];
    CHECK(ok, "rmsnorm: accumulate does not add the same gradient again");
    printf("rmsnorm %lldx%lld w %d: rel error dx %.2e dw %.2e; vs finite differences %.2e (float %.2e); "
           "AVX2 vs generic %.2e\n", (long long)rows, (long long)n, weighted, ex, ew, fe, fe32, eavx);
    free(x); free(dy); free(w); free(xd); free(dyd); free(wd); free(rdx); free(rdw); free(dx); free(dw);
    free(yp); free(xr); free(dx1); free(dw1); free(dxg); free(dwg);
}

/* the same gradients from 1 and 2 threads, bit for bit */
static void test_rmsnorm_threads(void)
{
    const int64_t rows = 400, n = 100;
    float *x = rvec(rows * n, 2), *dy = rvec(rows * n, 1), *w = rvec(n, 1);
    float *dx1 = calloc((size_t)(rows * n), sizeof(float)), *dx2 = calloc((size_t)(rows * n), sizeof(float));
    float *dw1 = calloc((size_t)n, sizeof(float)), *dw2 = calloc((size_t)n, sizeof(float));
    slm_error err = {0};
    slm_grad_rmsnorm_backward(pool1, dx1, dw1, dy, x, w, rows, n, 1e-6f, 0, &err);
    slm_grad_rmsnorm_backward(pool2, dx2, dw2, dy, x, w, rows, n, 1e-6f, 0, &err);
    CHECK(!memcmp(dx1, dx2, (size_t)(rows * n) * sizeof(float)) && !memcmp(dw1, dw2, (size_t)n * sizeof(float)),
          "rmsnorm: 1 and 2 threads differ");
    free(x); free(dy); free(w); free(dx1); free(dx2); free(dw1); free(dw2);
}

/* --- RoPE ----------------------------------------------------------------------- */

/* the rotation of rope(x) in double, angle sign s (1: forward, -1: inverse) */
static void rope_ref(double *out, const float *x, int64_t n_tok, int64_t T, int64_t H, int64_t D,
                     const slm_rope_params *p, int s)
{
    const int half = p->n_rot / 2;
    const double m = p->attn_factor == 0 ? 1 : p->attn_factor;
    for (int64_t t = 0; t < n_tok; t++)
        for (int64_t h = 0; h < H; h++) {
            const float *v = x + (t * H + h) * D;
            double *o = out + (t * H + h) * D;
            for (int64_t i = 0; i < D; i++) o[i] = v[i];
            for (int i = 0; i < half; i++) {
                double th = (double)(t % T) * pow(p->freq_base, -2.0 * i / p->n_rot) * p->freq_scale;
                if (p->freq_factors) th /= p->freq_factors[i];
                const int a = p->mode == SLM_ROPE_NEOX ? i : 2 * i, b = p->mode == SLM_ROPE_NEOX ? i + half : 2 * i + 1;
                const double c = cos(th) * m, sn = sin(th) * m * s;
                o[a] = v[a] * c - v[b] * sn;
                o[b] = v[a] * sn + v[b] * c;
            }
        }
}

static double rope_worst[4];

static void test_rope(slm_pool *pool, slm_rope_mode mode, int n_rot, int factors, float attn, float fscale)
{
    const int64_t T = 37, B = 7, H = 4, D = 32, n = T * B, N = n * H * D;
    float ff[16];
    for (int i = 0; i < 16; i++) ff[i] = 1.0f + (float)i * 0.25f;
    slm_rope_params p = {mode, n_rot, 10000.0f, fscale, factors ? ff : NULL, attn};
    float *x = rvec(N, 1), *a = fdup(x, N), *b = fdup(x, N);
    int64_t *pos = malloc((size_t)n * sizeof *pos);
    for (int64_t t = 0; t < n; t++) pos[t] = t % T;
    slm_error err = {0};
    CHECK(slm_grad_rope(pool, a, n, T, H, D, &p, &err) == SLM_OK, "%s", err.msg);
    slm_ops_rope(b, n, H, D, pos, &p);
    CHECK(!memcmp(a, b, (size_t)N * sizeof *a), "rope: not slm_ops_rope's bits (mode %d n_rot %d)", mode, n_rot);
    /* T longer than the batch (C callers may; the binding wants whole
     * sequences): positions 0..n-1 */
    float *c = fdup(x, N), *e = fdup(x, N);
    for (int64_t t = 0; t < n; t++) pos[t] = t;
    CHECK(slm_grad_rope(pool, c, n, 100000, H, D, &p, &err) == SLM_OK, "%s", err.msg);
    slm_ops_rope(e, n, H, D, pos, &p);
    CHECK(!memcmp(c, e, (size_t)N * sizeof *c), "rope with T > n_tok: not slm_ops_rope's bits");
    free(c); free(e);
    double *ref = malloc((size_t)N * sizeof *ref);
    rope_ref(ref, x, n, T, H, D, &p, 1);
    const double ef = relerr(a, ref, N);
    /* (the library's angles are float products: ~1e-6 relative per step) */
    CHECK(ef < 1e-5, "rope forward vs double reference: %.3g", ef);
    /* the adjoint: <rope(x), y> == <x, rope_backward(y)> */
    float *y = rvec(N, 1), *g = fdup(y, N);
    CHECK(slm_grad_rope_backward(pool, g, n, T, H, D, &p, &err) == SLM_OK, "%s", err.msg);
    double l = 0, r = 0, nx = 0, ny = 0;
    for (int64_t i = 0; i < N; i++) {
        l += (double)a[i] * y[i];
        r += (double)x[i] * g[i];
        nx += (double)x[i] * x[i];
        ny += (double)y[i] * y[i];
    }
    const double eadj = fabs(l - r) / sqrt(nx * ny);
    CHECK(eadj < 1e-6, "rope: <rope(x), y> = %.9g but <x, rope_backward(y)> = %.9g", l, r);
    /* the backward is the inverse rotation in double */
    rope_ref(ref, y, n, T, H, D, &p, -1);
    const double eb = relerr(g, ref, N);
    CHECK(eb < 1e-5, "rope backward vs double inverse rotation: %.3g", eb);
    /* finite differences of sum(rope(x) y) on the library's float forward */
    double efd = 0;
    for (int k = 0; k < 16; k++) {
        const int64_t t = (int64_t)(urand() % (uint32_t)n), i = (t * H + (int64_t)(urand() % H)) * D + (int64_t)(urand() % D);
        const float hf = 1e-2f;
        double lv[2];
        float row[4 * 32];   /* token t alone: the loss's other terms cancel */
        for (int sgn = 0; sgn < 2; sgn++) {
            memcpy(row, x + t * H * D, sizeof row);
            row[i - t * H * D] += sgn ? -hf : hf;
            int64_t pt = t % T;
            slm_ops_rope(row, 1, H, D, &pt, &p);
            lv[sgn] = 0;
            for (int64_t j = 0; j < H * D; j++) lv[sgn] += (double)row[j] * y[t * H * D + j];
        }
        const double fd = (lv[0] - lv[1]) / (2 * (double)hf);
        efd = fmax(efd, fabs(g[i] - fd));
    }
    CHECK(efd < 1e-4, "rope backward vs float finite differences: %.3g", efd);
    rope_worst[0] = fmax(rope_worst[0], ef);
    rope_worst[1] = fmax(rope_worst[1], eadj);
    rope_worst[2] = fmax(rope_worst[2], eb);
    rope_worst[3] = fmax(rope_worst[3], efd);
    free(x); free(a); free(b); free(pos); free(ref); free(y); free(g);
}

/* --- activations ---------------------------------------------------------------------- */

static double silu_d(double z) { return z / (1 + exp(-z)); }
static double dsilu_d(double z) { const double s = 1 / (1 + exp(-z)); return s * (1 + z * (1 - s)); }
#define KG 0.79788456080286535588
#define AG 0.044715
static double gelu_d(double z) { return 0.5 * z * (1 + tanh(KG * (z + AG * z * z * z))); }
static double dgelu_d(double z)
{
    const double t = tanh(KG * (z + AG * z * z * z));
    return 0.5 * (1 + t) + 0.5 * z * (1 - t * t) * KG * (1 + 3 * AG * z * z);
}

typedef void (*glu_fwd_fn)(slm_pool *, float *, const float *, const float *, int64_t);
typedef void (*glu_bwd_fn)(slm_pool *, float *, float *, const float *, const float *, const float *, int64_t,
                           int);
typedef void (*act_bwd_fn)(slm_pool *, float *, const float *, const float *, int64_t, int);

/* one gated unit: forward, backward vs double, finite differences in
 * double and on the float forward, AVX2 vs generic, accumulate, aliasing */
static void test_glu(const char *name, glu_fwd_fn fwd, glu_bwd_fn bwd, act_bwd_fn abwd, double (*act)(double),
                     double (*dact)(double), slm_pool *pool, int64_t n)
{
    float *g = rvec(n, 6), *u = rvec(n, 2), *dout = rvec(n, 1), *out = malloc((size_t)n * sizeof(float));
    g[0] = -30.0f; g[1] = 30.0f; g[2] = 0.0f; g[3] = -12.0f;   /* tails of the activation */
    double *ro = malloc((size_t)n * sizeof *ro), *rg = malloc((size_t)n * sizeof *rg);
    double *ru = malloc((size_t)n * sizeof *ru), *rx = malloc((size_t)n * sizeof *rx);
    for (int64_t i = 0; i < n; i++) {
        ro[i] = act(g[i]) * u[i];
        rg[i] = (double)dout[i] * u[i] * dact(g[i]);
        ru[i] = (double)dout[i] * act(g[i]);
        rx[i] = (double)dout[i] * dact(g[i]);
    }
    fwd(pool, out, g, u, n);
    const double ef = relerr(out, ro, n);
    CHECK(ef < 1e-5, "%s forward: %.3g", name, ef);
    float *dg = malloc((size_t)n * sizeof(float)), *du = malloc((size_t)n * sizeof(float));
    float *dx = malloc((size_t)n * sizeof(float));
    double eg = 0, eu = 0, ex = 0, eavx = 0;
    for (int path = 0; path < 2; path++) {
        if (path == 1 && !have_avx2) break;
        slm_kernels_force_generic(path == 0);
        bwd(pool, dg, du, dout, g, u, n, 0);
        abwd(pool, dx, dout, g, n, 0);
        int finite = 1;
        for (int64_t i = 0; i < n; i++) finite &= isfinite(dg[i]) && isfinite(du[i]) && isfinite(dx[i]);
        CHECK(finite, "%s backward: not finite (path %d)", name, path);
        eg = fmax(eg, relerr(dg, rg, n));
        eu = fmax(eu, relerr(du, ru, n));
        ex = fmax(ex, relerr(dx, rx, n));
        /* accumulate adds the same again; in place (dg = g, du = u) */
        float *dg1 = fdup(dg, n), *du1 = fdup(du, n), *dx1 = fdup(dx, n);
        bwd(pool, dg, du, dout, g, u, n, 1);
        abwd(pool, dx, dout, g, n, 1);
        int ok = 1;
        for (int64_t i = 0; i < n; i++) ok &= dg[i] == 2 * dg1[i] && du[i] == 2 * du1[i] && dx[i] == 2 * dx1[i];
        CHECK(ok, "%s backward: accumulate (path %d)", name, path);
        float *gi = fdup(g, n), *ui = fdup(u, n);
        bwd(pool, gi, ui, dout, gi, ui, n, 0);
        CHECK(!memcmp(gi, dg1, (size_t)n * sizeof(float)) && !memcmp(ui, du1, (size_t)n * sizeof(float)),
              "%s backward in place (dg = g, du = u) differs (path %d)", name, path);
        if (path == 1) {
            slm_kernels_force_generic(1);
            float *sg = malloc((size_t)n * sizeof(float)), *su = malloc((size_t)n * sizeof(float));
            float *sx = malloc((size_t)n * sizeof(float));
            bwd(pool, sg, su, dout, g, u, n, 0);
            abwd(pool, sx, dout, g, n, 0);
            eavx = fmax(fmax(relerr_f(dg1, sg, n), relerr_f(du1, su, n)), relerr_f(dx1, sx, n));
            CHECK(eavx < 1e-6, "%s backward: AVX2 vs generic %.3g", name, eavx);
            free(sg); free(su); free(sx);
        }
        free(dg1); free(du1); free(dx1); free(gi); free(ui);
    }
    slm_kernels_force_generic(0);
    CHECK(eg < 1e-5 && eu < 1e-5 && ex < 1e-5, "%s backward vs double: dg %.3g du %.3g dx %.3g", name, eg, eu, ex);
    /* finite differences: in double of sum(act(g) u dout), and in float of
     * the library's forward (h = 1e-2) */
    bwd(pool, dg, du, dout, g, u, n, 0);
    double efd = 0, efd32 = 0, gmax = 0;
    for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(rg[i]));
    for (int k = 0; k < 40; k++) {
        const int64_t i = (int64_t)(urand() % (uint32_t)n);
        const double h = 1e-6;
        const double fd = (act(g[i] + h) - act(g[i] - h)) / (2 * h) * u[i] * dout[i];
        efd = fmax(efd, fabs(dg[i] - fd) / gmax);
        const float hf = 1e-2f;
        float gp[2] = {g[i] + hf, g[i] - hf}, op[2];
        fwd(NULL, op, gp, (float[2]){u[i], u[i]}, 2);
        const double fd32 = ((double)op[0] - op[1]) / ((double)gp[0] - gp[1]) * dout[i];
        efd32 = fmax(efd32, fabs(dg[i] - fd32) / gmax);
    }
    CHECK(efd < 1e-5 && efd32 < 2e-3, "%s: kernel vs finite differences %.3g (float %.3g)", name, efd, efd32);
    printf("%s (n=%lld): fwd %.2e, dg %.2e du %.2e, plain act %.2e; AVX2 vs generic %.2e; finite diff %.2e "
           "(float %.2e)\n", name, (long long)n, ef, eg, eu, ex, eavx, efd, efd32);
    free(g); free(u); free(dout); free(out); free(ro); free(rg); free(ru); free(rx); free(dg); free(du); free(dx);
}

/* --- cross-entropy ----------------------------------------------------------------------- */

static double lse_loss(const double *x, const int32_t *t, int64_t rows, int64_t V)
{
    double s = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (t[r] < 0) continue;
        double mx = -INFINITY, e = 0;
        for (int64_t i = 0; i < V; i++) mx = fmax(mx, x[r * V + i]);
        for (int64_t i = 0; i < V; i++) e += exp(x[r * V + i] - mx);
        s += mx + log(e) - x[r * V + t[r]];
    }
    return s;
}

static void test_xent(slm_pool *pool, int64_t rows, int64_t V, float spread)
{
    float *x = rvec(rows * V, spread);
    int32_t *t = malloc((size_t)rows * sizeof *t);
    for (int64_t r = 0; r < rows; r++) t[r] = r % 5 == 3 ? -1 : (int32_t)(urand() % (uint32_t)V);
    double *xd = dcopy(x, rows * V);
    const double ref = lse_loss(xd, t, rows, V);
    const float scale = 0.25f;
    double *rg = malloc((size_t)(rows * V) * sizeof *rg);
    for (int64_t r = 0; r < rows; r++) {
        double mx = -INFINITY, e = 0;
        for (int64_t i = 0; i < V; i++) mx = fmax(mx, xd[r * V + i]);
        for (int64_t i = 0; i < V; i++) e += exp(xd[r * V + i] - mx);
        for (int64_t i = 0; i < V; i++)
            rg[r * V + i] = t[r] < 0 ? 0 : scale * (exp(xd[r * V + i] - mx) / e - (i == t[r]));
    }
    double el = 0, eg = 0, efd = 0, eavx = 0;
    float *paths[2] = {NULL, NULL};
    double losses[2] = {0, 0};
    for (int path = 0; path < 2; path++) {
        if (path == 1 && !have_avx2) break;
        slm_kernels_force_generic(path == 0);
        float *l = paths[path] = fdup(x, rows * V);
        slm_error err = {0};
        CHECK(slm_grad_xent(pool, l, t, rows, V, scale, &losses[path], &err) == SLM_OK, "%s", err.msg);
        el = fmax(el, fabs(losses[path] - ref) / fabs(ref));
        eg = fmax(eg, relerr(l, rg, rows * V));
        int zero = 1;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; t[r] < 0 && i < V; i++) zero &= l[r * V + i] == 0.0f;
        CHECK(zero, "xent: an ignored row has a gradient");
    }
    slm_kernels_force_generic(0);
    if (paths[1]) eavx = relerr_f(paths[1], paths[0], rows * V);
    /* finite differences of the double loss against the gradient / scale */
    for (int k = 0; k < 30; k++) {
        /* a few targets' own logits (the onehot's entry), then anywhere */
        const int64_t r = k % rows;
        const int64_t i = k < 6 && t[r] >= 0 ? r * V + t[r] : (int64_t)(urand() % (uint32_t)(rows * V));
        const double h = 1e-5, keep = xd[i];
        xd[i] = keep + h;
        const double lp = lse_loss(xd, t, rows, V);
        xd[i] = keep - h;
        const double lm = lse_loss(xd, t, rows, V);
        xd[i] = keep;
        efd = fmax(efd, fabs(paths[0][i] / scale - (lp - lm) / (2 * h)));
    }
    CHECK(el < 1e-6 && eg < 1e-5 && efd < 1e-6 && eavx < 1e-5,
          "xent %lldx%lld: loss %.3g grad %.3g finite diff %.3g avx2 %.3g", (long long)rows, (long long)V, el, eg,
          efd, eavx);
    printf("xent %lldx%lld (spread %g): loss rel error %.2e, grad %.2e, vs finite diff %.2e, AVX2 vs generic %.2e\n",
           (long long)rows, (long long)V, spread, el, eg, efd, eavx);
    /* the loss does not depend on the thread count (per-row terms summed in
     * row order) */
    float *l1 = fdup(x, rows * V), *l2 = fdup(x, rows * V);
    double s1, s2;
    slm_error err = {0};
    slm_grad_xent(pool1, l1, t, rows, V, scale, &s1, &err);
    slm_grad_xent(pool2, l2, t, rows, V, scale, &s2, &err);
    CHECK(s1 == s2 && !memcmp(l1, l2, (size_t)(rows * V) * sizeof(float)), "xent: 1 and 2 threads differ");
    /* a target >= V: refused, logits untouched */
    t[rows - 1] = (int32_t)V;
    CHECK(slm_grad_xent(pool, l1, t, rows, V, scale, &s1, &err) == SLM_ERANGE && strstr(err.msg, "target") &&
              !memcmp(l1, l2, (size_t)(rows * V) * sizeof(float)),
          "xent: target V not refused cleanly");
    free(x); free(t); free(xd); free(rg); free(paths[0]); free(paths[1]); free(l1); free(l2);
}

/* xent from inside a pool job: the pool is busy, the call runs serially */
typedef struct nested_ctx {
    float *l[2];
    const int32_t *t;
    double s[2];
} nested_ctx;

static void nested_task(void *vc, int ith, int nth)
{
    nested_ctx *c = vc;
    slm_error err = {0};
    slm_grad_xent(pool2, c->l[ith], c->t, 300, 65, 1.0f, &c->s[ith], &err);
}

static void test_nested(void)
{
    float *x = rvec(300 * 65, 3);
    int32_t t[300];
    for (int i = 0; i < 300; i++) t[i] = i % 65;
    nested_ctx c = {{fdup(x, 300 * 65), fdup(x, 300 * 65)}, t, {0, 0}};
    slm_pool_run(pool2, 2, nested_task, &c);
    float *l = fdup(x, 300 * 65);
    double s;
    slm_error err = {0};
    slm_grad_xent(pool1, l, t, 300, 65, 1.0f, &s, &err);
    CHECK(c.s[0] == s && c.s[1] == s && !memcmp(c.l[1], l, 300 * 65 * sizeof(float)),
          "xent inside a pool job differs");
    free(x); free(c.l[0]); free(c.l[1]); free(l);
}

/* --- buffers ---------------------------------------------------------------------------- */

static void test_buffers(void)
{
    const int64_t n = 100003;
    float *x = rvec(n, 3), *y = rvec(n, 1);
    double ref = 0, s1, s2;
    for (int64_t i = 0; i < n; i++) ref += (double)x[i] * x[i];
    slm_error err = {0};
    slm_grad_sumsq(pool1, x, n, &s1, &err);
    slm_grad_sumsq(pool2, x, n, &s2, &err);
    CHECK(fabs(s1 - ref) < 1e-12 * ref && s1 == s2, "sumsq %.17g %.17g vs %.17g", s1, s2, ref);
    float *z = fdup(y, n);
    slm_grad_axpy(pool2, z, x, -0.5f, n);
    int ok = 1;
    for (int64_t i = 0; i < n; i++) ok &= z[i] == y[i] + -0.5f * x[i];
    CHECK(ok, "axpy");
    slm_grad_scale(pool2, z, 3.0f, n);
    for (int64_t i = 0; i < n; i++) ok &= z[i] == (y[i] + -0.5f * x[i]) * 3.0f;
    CHECK(ok, "scale");
    slm_grad_zero(pool2, z, n - 1);
    for (int64_t i = 0; i < n - 1; i++) ok &= z[i] == 0.0f;
    CHECK(ok && z[n - 1] != 0.0f, "zero");
    free(x); free(y); free(z);
}

/* soft-cap backward: from the forward's output, against double central
 * differences of c tanh(x / c), overwrite and accumulate */
static void test_softcap(slm_pool *pool, int64_t n, float cap)
{
    float *x = malloc((size_t)n * sizeof *x), *y = malloc((size_t)n * sizeof *y);
    float *dy = malloc((size_t)n * sizeof *dy), *dx = malloc((size_t)n * sizeof *dx);
    for (int64_t i = 0; i < n; i++) {
        x[i] = (float)(((i * 7919) % 2001) - 1000) / 1000.0f * 3.0f * cap;   /* -3c .. 3c */
        y[i] = cap * tanhf(x[i] / cap);
        dy[i] = (float)((i * 104729) % 17) / 8.0f - 1.0f;
        dx[i] = 1.0f;
    }
    slm_grad_softcap_backward(pool, dx, dy, y, cap, n, 1);
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        const double h = 1e-4 * cap, xd = x[i];
        const double fd = (cap * tanh((xd + h) / cap) - cap * tanh((xd - h) / cap)) / (2 * h) * dy[i];
        const double e = fabs((dx[i] - 1.0) - fd);
        if (e > worst) worst = e;
    }
    CHECK(worst <= 2e-5, "softcap backward (cap %g): worst |dx - finite difference| %.3g", (double)cap, worst);
    slm_grad_softcap_backward(pool, dx, dy, y, cap, n, 0);
    int same = 1;
    for (int64_t i = 0; i < n; i++)
        if (fabsf(dx[i] - dy[i] * (1.0f - (y[i] / cap) * (y[i] / cap))) > 1e-6f) same = 0;
    CHECK(same, "softcap backward without accumulate is not dy (1 - (y/c)^2)");
    printf("softcap backward (cap %g, n %lld): worst vs finite differences %.2e\n", (double)cap, (long long)n, worst);
    free(x); free(y); free(dy); free(dx);
}

int main(void)
{
    slm_error err = {0};
    pool1 = slm_pool_new(1, &err);
    pool2 = slm_pool_new(2, &err);
    have_avx2 = slm_cpu_has_avx2();
    if (!have_avx2) printf("skip: no AVX2 on this CPU, the AVX2 paths are not compared\n");
    test_linear_all();
    test_embed(pool1, 50, 37, 200);
    test_embed(pool2, 300, 64, 3000);
    test_embed(pool2, 3, 5, 1);
    test_rmsnorm(pool1, 9, 100, 1);
    test_rmsnorm(pool2, 400, 64, 1);
    test_rmsnorm(pool1, 9, 33, 0);
    test_rmsnorm_threads();
    for (int pi = 0; pi < 2; pi++) {
        slm_pool *pool = pi ? pool2 : pool1;
        test_rope(pool, SLM_ROPE_NORMAL, 32, 0, 0.0f, 1.0f);
        test_rope(pool, SLM_ROPE_NEOX, 32, 0, 0.0f, 1.0f);
        test_rope(pool, SLM_ROPE_NORMAL, 16, 1, 1.2f, 0.25f);
        test_rope(pool, SLM_ROPE_NEOX, 24, 1, 0.9f, 0.5f);
    }
    printf("rope: forward vs double %.2e, adjoint identity %.2e, backward vs double %.2e, vs finite diff %.2e\n",
           rope_worst[0], rope_worst[1], rope_worst[2], rope_worst[3]);
    for (int pi = 0; pi < 2; pi++) {
        slm_pool *pool = pi ? pool2 : pool1;
        const int64_t n = pi ? 50021 : 1003;
        test_glu("swiglu", slm_grad_swiglu, slm_grad_swiglu_backward, slm_grad_silu_backward, silu_d, dsilu_d, pool, n);
        test_glu("geglu", slm_grad_geglu, slm_grad_geglu_backward, slm_grad_gelu_backward, gelu_d, dgelu_d, pool, n);
    }
    test_xent(pool1, 20, 65, 3);
    test_xent(pool2, 257, 512, 5);
    test_xent(pool2, 31, 7, 40);
    test_nested();
    test_buffers();
    test_softcap(pool1, 1001, 30.0f);
    test_softcap(pool2, 100003, 50.0f);
    slm_pool_free(pool1);
    slm_pool_free(pool2);
    return check_summary();
}
