/* RWKV-7 training blocks (csrc/train/rwkv7_grad.h) against references
 * written here:
 *  - a double-precision forward of both blocks from the definitions
 *    (llama.cpp's rwkv7 graph: the decay as exp(-exp(-softplus(-z) - 0.5)),
 *    the WKV-7 state update S = S diag(w) + v k^T + (S a) b^T in matrix
 *    form); the training forward matches it, and matches the inference
 *    blocks (csrc/blocks/rwkv*.c) run on each sequence from a fresh state;
 *  - central finite differences of that double forward, of
 *    L = sum(out * R) (+ sum(v_first * Rv) for the first layer), for every
 *    entry of every parameter, of the input and of v_first (2 heads of 8
 *    for the AVX2 kernels, of 6 for the portable ones,
 *    ranks 4, B = 2 sequences of T = 5 tokens, checkpoints every 2 tokens);
 *  - accumulation rules, checkpoint spacings (the same gradients bit for
 *    bit), 1, 2 and 3 threads (bit for bit), the AVX2 step backward against
 *    the portable one, and errors on bad shapes.
 * SLM_BENCH_RWKV7=1 also times a 4-layer student (dim 128, heads of 32,
 * B = 12, T = 64) forward + backward on 1 and 2 threads
 * (SLM_BENCH_RWKV7_THREADS=1 or 2: that count only). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "blocks/rwkv.h"
#include "check.h"
#include "core/pool.h"
#include "core/tensor.h"
#include "kernels/vecdot.h"
#include "train/rwkv7_grad.h"
#include "train/rwkv7_grad_internal.h"

static uint64_t rng = 0x9e3779b97f4a7c15u;
static double urand(double lo, double hi)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return lo + (double)(rng >> 11) * 0x1.0p-53 * (hi - lo);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (!p) {
        printf("out of memory\n");
        exit(1);
    }
    return p;
}

/* --- a time mix and its double mirror ------------------------------------- */

enum { P_MAA, P_W0, P_A0, P_V0, P_W1, P_A1, P_V1, P_G1, P_W2, P_A2, P_V2, P_G2,
       P_KK, P_KA, P_RK, P_WR, P_WK, P_WV, P_WO, P_LNW, P_LNB, NP };
static const char *const pname[NP] = {"maa", "w0", "a0", "v0", "w1", "a1", "v1", "g1", "w2", "a2", "v2",
                                      "g2", "k_k", "k_a", "r_k", "wr", "wk", "wv", "wo", "lnx_w", "lnx_b"};

typedef struct tmx {
    slm_rwkv7_tmix_shape s;
    size_t len[NP];
    float *f[NP], *g[NP];   /* parameters, gradients (f32) */
    double *d[NP];          /* the same parameters in double (perturbed by the FD) */
} tmx;

static slm_rwkv7_tmix_params as_params(float **a)
{
    return (slm_rwkv7_tmix_params){
        .maa = a[P_MAA], .w0 = a[P_W0], .a0 = a[P_A0], .v0 = a[P_V0], .w1 = a[P_W1], .a1 = a[P_A1],
        .v1 = a[P_V1], .g1 = a[P_G1], .w2 = a[P_W2], .a2 = a[P_A2], .v2 = a[P_V2], .g2 = a[P_G2],
        .k_k = a[P_KK], .k_a = a[P_KA], .r_k = a[P_RK], .wr = a[P_WR], .wk = a[P_WK], .wv = a[P_WV],
        .wo = a[P_WO], .lnx_w = a[P_LNW], .lnx_b = a[P_LNB]};
}

static void tm_init(tmx *m, int B, int T, int D, int N, int R, int first, int chunk)
{
    memset(m, 0, sizeof *m);
    m->s = (slm_rwkv7_tmix_shape){.n_seq = B, .n_tok = T, .dim = D, .head_size = N, .rank_w = R,
                                  .rank_a = R, .rank_v = first ? 0 : R, .rank_g = R,
                                  .chunk = chunk, .gn_eps = 64e-5f, .first_layer = first};
    const size_t d = (size_t)D, r = (size_t)R, rv = first ? 0 : r;
    const size_t len[NP] = {6 * d, d, d, first ? 0 : d, r * d, r * d, rv * d, r * d, d * r, d * r, d * rv,
                            d * r, d, d, d, d * d, d * d, d * d, d * d, d, d};
    for (int i = 0; i < NP; i++) {
        m->len[i] = len[i];
        if (!len[i]) continue;
        m->f[i] = xcalloc(len[i], sizeof(float));
        m->g[i] = xcalloc(len[i], sizeof(float));
        m->d[i] = xcalloc(len[i], sizeof(double));
        /* matrices ~ U(-1, 1) / sqrt(in); mixes in (0, 1); k_k away from 0 */
        double lo = -1, hi = 1, sc = 1;
        if (i == P_MAA) lo = 0.05;
        if (i == P_W1 || i == P_A1 || i == P_V1 || i == P_G1 || i >= P_WR) sc = 1 / sqrt((double)d);
        if (i == P_W2 || i == P_A2 || i == P_V2 || i == P_G2) sc = 1 / sqrt((double)r);
        if (i == P_KK) lo = 0.3, hi = 1.5;
        if (i == P_LNW) lo = 0.5, hi = 1.5;
        if (i == P_LNW || i == P_LNB || i == P_MAA || i == P_KK) sc = 1;
        for (size_t e = 0; e < len[i]; e++) {
            m->f[i][e] = (float)(urand(lo, hi) * sc);
            m->d[i][e] = m->f[i][e];
        }
    }
}

static void tm_free(tmx *m)
{
    for (int i = 0; i < NP; i++) {
        free(m->f[i]);
        free(m->g[i]);
        free(m->d[i]);
    }
}

static void dlin(double *y, const double *W, const double *x, int out, int in)
{
    for (int o = 0; o < out; o++) {
        double s = 0;
        for (int i = 0; i < in; i++) s += W[(size_t)o * in + i] * x[i];
        y[o] = s;
    }
}

static double dsig(double x) { return 1 / (1 + exp(-x)); }

/* The time mix in double, from the definitions. vf: written by the first
 * layer, read by the others; out (B*T, D). */
static void ref_tmix(const tmx *m, const double *x, double *vf, double *out)
{
    const slm_rwkv7_tmix_shape *s = &m->s;
    const int B = s->n_seq, T = s->n_tok, D = (int)s->dim, N = (int)s->head_size, H = D / N;
    const int R = (int)s->rank_w;
    double *const *P = m->d;
    double *S = xcalloc((size_t)H * N * N, sizeof(double)), *xi = xcalloc(6 * (size_t)D, sizeof(double));
    double *r = xcalloc((size_t)D, 8), *k = xcalloc((size_t)D, 8), *v = xcalloc((size_t)D, 8);
    double *w = xcalloc((size_t)D, 8), *a = xcalloc((size_t)D, 8), *g = xcalloc((size_t)D, 8);
    double *hid = xcalloc((size_t)R, 8), *tmp = xcalloc((size_t)D, 8), *kk = xcalloc((size_t)D, 8);
    double *kp = xcalloc((size_t)D, 8), *y = xcalloc((size_t)D, 8), *z = xcalloc((size_t)D, 8);
    for (int b = 0; b < B; b++) {
        memset(S, 0, sizeof(double) * (size_t)H * N * N);
        for (int t = 0; t < T; t++) {
            const size_t row = (size_t)b * T + t;
            const double *xt = x + row * D;
            for (int i = 0; i < 6; i++)
                for (int c = 0; c < D; c++) {
                    double prev = t ? xt[c - D] : 0;
                    xi[i * D + c] = xt[c] + (prev - xt[c]) * P[P_MAA][i * D + c];
                }
            const double *xr = xi, *xw = xi + D, *xk = xi + 2 * D, *xv = xi + 3 * D, *xa = xi + 4 * D,
                         *xg = xi + 5 * D;
            dlin(r, P[P_WR], xr, D, D);
            dlin(k, P[P_WK], xk, D, D);
            dlin(v, P[P_WV], xv, D, D);
            dlin(hid, P[P_W1], xw, R, D);
            for (int q = 0; q < R; q++) hid[q] = tanh(hid[q]);
            dlin(tmp, P[P_W2], hid, D, R);
            for (int c = 0; c < D; c++) {   /* llama.cpp: w = -softplus(-(w0 + lora)) - 0.5; exp(-exp(w)) */
                double zz = P[P_W0][c] + tmp[c];
                w[c] = exp(-exp(-log1p(exp(-zz)) - 0.5));
            }
            dlin(hid, P[P_A1], xa, R, D);
            dlin(tmp, P[P_A2], hid, D, R);
            for (int c = 0; c < D; c++) a[c] = dsig(P[P_A0][c] + tmp[c]);
            dlin(hid, P[P_G1], xg, R, D);
            for (int q = 0; q < R; q++) hid[q] = dsig(hid[q]);
            dlin(g, P[P_G2], hid, D, R);
            if (s->first_layer) {
                memcpy(vf + row * D, v, sizeof(double) * D);
            } else {
                dlin(hid, P[P_V1], xv, R, D);
                dlin(tmp, P[P_V2], hid, D, R);
                for (int c = 0; c < D; c++) {
                    double mix = dsig(P[P_V0][c] + tmp[c]);
                    v[c] = v[c] * (1 - mix) + vf[row * D + c] * mix;
                }
            }
            for (int h = 0; h < H; h++) {
                double n2 = 0;
                for (int q = 0; q < N; q++) {
                    kk[h * N + q] = k[h * N + q] * P[P_KK][h * N + q];
                    n2 += kk[h * N + q] * kk[h * N + q];
                }
                for (int q = 0; q < N; q++) kk[h * N + q] /= fmax(sqrt(n2), 1e-12);
            }
            for (int c = 0; c < D; c++) kp[c] = k[c] * (1 + (a[c] - 1) * P[P_KA][c]);
            for (int h = 0; h < H; h++) {
                double *Sh = S + (size_t)h * N * N, sa[64];
                const int o = h * N;
                /* S = S (diag(w) - kk (kk a)^T) + v kp^T, [value i][key j] */
                for (int i = 0; i < N; i++) {
                    sa[i] = 0;
                    for (int j = 0; j < N; j++) sa[i] -= Sh[i * N + j] * kk[o + j];
                }
                for (int i = 0; i < N; i++)
                    for (int j = 0; j < N; j++)
                        Sh[i * N + j] = Sh[i * N + j] * w[o + j] + v[o + i] * kp[o + j] +
                                        sa[i] * kk[o + j] * a[o + j];
                double mean = 0, var = 0, bonus = 0;
                for (int i = 0; i < N; i++) {
                    y[o + i] = 0;
                    for (int j = 0; j < N; j++) y[o + i] += Sh[i * N + j] * r[o + j];
                    mean += y[o + i] / N;
                }
                for (int i = 0; i < N; i++) var += (y[o + i] - mean) * (y[o + i] - mean) / N;
                for (int j = 0; j < N; j++) bonus += r[o + j] * kp[o + j] * P[P_RK][o + j];
                for (int i = 0; i < N; i++) {
                    double yn = (y[o + i] - mean) / sqrt(var + (double)s->gn_eps);
                    z[o + i] = (yn * P[P_LNW][o + i] + P[P_LNB][o + i] + bonus * v[o + i]) * g[o + i];
                }
            }
            dlin(out + row * D, P[P_WO], z, D, D);
        }
    }
    double *fr[] = {S, xi, r, k, v, w, a, g, hid, tmp, kk, kp, y, z};
    for (size_t i = 0; i < sizeof fr / sizeof *fr; i++) free(fr[i]);
}

/* --- the channel mix ----------------------------------------------------- */

typedef struct cm {
    slm_rwkv7_cmix_shape s;
    float *f[3], *g[3];
    double *d[3];
    size_t len[3];
} cm;
static const char *const cname[3] = {"mix_k", "wk", "wv"};

static void cm_init(cm *m, int B, int T, int D, int F)
{
    m->s = (slm_rwkv7_cmix_shape){.n_seq = B, .n_tok = T, .dim = D, .n_ff = F};
    const size_t len[3] = {(size_t)D, (size_t)F * D, (size_t)D * F};
    const double sc[3] = {1, 1 / sqrt((double)D), 1 / sqrt((double)F)};
    for (int i = 0; i < 3; i++) {
        m->len[i] = len[i];
        m->f[i] = xcalloc(len[i], sizeof(float));
        m->g[i] = xcalloc(len[i], sizeof(float));
        m->d[i] = xcalloc(len[i], sizeof(double));
        for (size_t e = 0; e < len[i]; e++) {
            m->f[i][e] = (float)(i == 0 ? urand(0.05, 1) : urand(-1, 1) * sc[i]);
            m->d[i][e] = m->f[i][e];
        }
    }
}

static void cm_free(cm *m)
{
    for (int i = 0; i < 3; i++) {
        free(m->f[i]);
        free(m->g[i]);
        free(m->d[i]);
    }
}

static slm_rwkv7_cmix_params cm_params(float **a)
{
    return (slm_rwkv7_cmix_params){.mix_k = a[0], .wk = a[1], .wv = a[2]};
}

static void ref_cmix(const cm *m, const double *x, double *out)
{
    const int B = m->s.n_seq, T = m->s.n_tok, D = (int)m->s.dim, F = (int)m->s.n_ff;
    double *xk = xcalloc((size_t)D, 8), *h = xcalloc((size_t)F, 8);
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++) {
            const size_t row = (size_t)b * T + t;
            const double *xt = x + row * D;
            for (int c = 0; c < D; c++) xk[c] = xt[c] + ((t ? xt[c - D] : 0) - xt[c]) * m->d[0][c];
            dlin(h, m->d[1], xk, F, D);
            for (int f = 0; f < F; f++) h[f] = h[f] > 0 ? h[f] * h[f] : 0;
            dlin(out + row * D, m->d[2], h, D, F);
        }
    free(xk);
    free(h);
}

/* --- helpers ----------------------------------------------------------------- */

/* max |got - want| / max |want| */
static double rel_err(const float *got, const double *want, size_t n) { return check_relerr(got, want, n, 1e-30); }

static float *fvec(size_t n, double lo, double hi, double *mirror)
{
    float *v = xcalloc(n, sizeof(float));
    for (size_t i = 0; i < n; i++) {
        v[i] = (float)urand(lo, hi);
        if (mirror) mirror[i] = v[i];
    }
    return v;
}

static slm_pool *pool_of(int n)
{
    slm_error err = {0};
    slm_pool *p = slm_pool_new(n, &err);
    if (!p) {
        printf("pool: %s\n", err.msg);
        exit(1);
    }
    return p;
}

/* The loss the finite differences take: the reference forward of a block
 * with its double parameters as they are now. */
typedef struct loss_ctx {
    const tmx *t;
    const cm *c;
    const double *x, *R, *Rv;
    double *vf;   /* first layer: scratch for the written v_first; later: the input */
    size_t n;     /* B*T*D */
} loss_ctx;

static double loss(const loss_ctx *L)
{
    double *out = xcalloc(L->n, sizeof(double)), s = 0;
    if (L->t) ref_tmix(L->t, L->x, L->vf, out);
    else ref_cmix(L->c, L->x, out);
    for (size_t i = 0; i < L->n; i++) s += out[i] * L->R[i];
    if (L->t && L->t->s.first_layer)
        for (size_t i = 0; i < L->n; i++) s += L->vf[i] * L->Rv[i];
    free(out);
    return s;
}

/* central differences of the loss w.r.t. every entry of v (len), against
 * the analytic gradient: max |g - fd| / max |fd| */
static double fd_check(const loss_ctx *L, double *v, size_t len, const float *g)
{
    const double h = 1e-5;
    double m = 0, scale = 1e-30;
    for (size_t e = 0; e < len; e++) {
        const double keep = v[e];
        v[e] = keep + h;
        const double lp = loss(L);
        v[e] = keep - h;
        const double lm = loss(L);
        v[e] = keep;
        const double fd = (lp - lm) / (2 * h);
        scale = fmax(scale, fabs(fd));
        m = fmax(m, fabs(g[e] - fd));
    }
    return m / scale;
}

#define FD_TOL 2e-5   /* f32 gradients against the double FD (seen: <= 1.3e-6); a wrong term is O(1) */

/* --- time mix: forward and gradients against the references ------------------ */

/* one layer (first or not) on the small shape: forward vs the reference,
 * backward vs FD of everything */
static void test_tmix_fd(int first, int N)
{
    enum { B = 2, T = 5, R = 4 };
    const int D = 2 * N;
    const size_t n = (size_t)B * T * D;
    tmx m;
    tm_init(&m, B, T, D, N, R, first, 2);
    double *xd = xcalloc(n, 8), *vfd = xcalloc(n, 8), *Rd = xcalloc(n, 8), *Rvd = xcalloc(n, 8);
    float *x = fvec(n, -1, 1, xd), *vf = fvec(n, -1, 1, first ? NULL : vfd);
    float *Rf = fvec(n, -1, 1, Rd), *Rv = fvec(n, -1, 1, Rvd);
    float *out = xcalloc(n, 4), *dx = xcalloc(n, 4), *dvf = xcalloc(n, 4);
    double *want = xcalloc(n, 8);
    float *saved = xcalloc(slm_rwkv7_tmix_saved_floats(&m.s), 4);
    slm_pool *pool = pool_of(1);
    slm_error err = {0};
    slm_rwkv7_tmix_params p = as_params(m.f), g = as_params(m.g);
    CHECK(slm_rwkv7_tmix_forward(pool, &m.s, &p, x, out, vf, saved, &err) == SLM_OK, "tmix forward: %s", err.msg);
    ref_tmix(&m, xd, vfd, want);
    double e = rel_err(out, want, n);
    printf("tmix (%s layer, heads of %d) forward vs double reference: rel err %.2e\n", first ? "first" : "later",
           N, e);
    CHECK(e < 1e-5, "tmix forward vs reference: %g", e);
    if (first) {
        e = rel_err(vf, vfd, n);
        CHECK(e < 1e-5, "tmix first layer v_first vs reference: %g", e);
    }
    /* backward with dout = R (and dv_first = Rv for the first layer) */
    if (first) memcpy(dvf, Rv, n * 4);
    CHECK(slm_rwkv7_tmix_backward(pool, &m.s, &p, &g, saved, Rf, dx, dvf, 0, &err) == SLM_OK,
          "tmix backward: %s", err.msg);
    loss_ctx L = {.t = &m, .x = xd, .R = Rd, .Rv = Rvd, .vf = vfd, .n = n};
    double worst = 0;
    const char *wname = "";
    for (int i = 0; i < NP; i++) {
        if (!m.len[i]) continue;
        e = fd_check(&L, m.d[i], m.len[i], m.g[i]);
        CHECK(e < FD_TOL, "tmix (%s layer) d%s vs FD: rel err %g", first ? "first" : "later", pname[i], e);
        if (e > worst) worst = e, wname = pname[i];
    }
    e = fd_check(&L, xd, n, dx);
    CHECK(e < FD_TOL, "tmix dx vs FD: rel err %g", e);
    if (e > worst) worst = e, wname = "x";
    if (!first) {
        e = fd_check(&L, vfd, n, dvf);
        CHECK(e < FD_TOL, "tmix dv_first vs FD: rel err %g", e);
        if (e > worst) worst = e, wname = "v_first";
    }
    printf("tmix (%s layer, heads of %d) backward vs FD of the double reference, %d tensors + x%s: worst rel err "
           "%.2e (%s)\n", first ? "first" : "later", N, first ? 18 : 21, first ? "" : " + v_first", worst, wname);

    /* accumulate: dx += (dx preset to 1); parameter gradients add up */
    float *g1 = xcalloc(m.len[P_WO], 4), *dx2 = xcalloc(n, 4), *dvf2 = xcalloc(n, 4);
    memcpy(g1, m.g[P_WO], m.len[P_WO] * 4);
    for (size_t i = 0; i < n; i++) dx2[i] = 1;
    if (first) memcpy(dvf2, Rv, n * 4);
    slm_rwkv7_tmix_backward(pool, &m.s, &p, &g, saved, Rf, dx2, dvf2, 1, &err);
    double ea = 0;
    for (size_t i = 0; i < n; i++) ea = fmax(ea, fabs((dx2[i] - 1.0f) - dx[i]));
    CHECK(ea < 1e-6, "tmix accumulate = 1 adds to dx: %g", ea);
    int twice = 1;
    for (size_t i = 0; i < m.len[P_WO]; i++) twice = twice && m.g[P_WO][i] == 2 * g1[i];
    CHECK(twice, "tmix parameter gradients accumulate");
    if (!first) {
        for (size_t i = 0; i < n; i++) ea = fmax(ea, fabs(dvf2[i] - dvf[i]));
        CHECK(ea < 1e-6, "tmix later layer adds its v_first gradient: %g", ea);
    }
    free(g1); free(dx2); free(dvf2);
    slm_pool_free(pool);
    free(xd); free(vfd); free(Rd); free(Rvd); free(x); free(vf); free(Rf); free(Rv);
    free(out); free(dx); free(dvf); free(want); free(saved);
    tm_free(&m);
}

static slm_tensor *ftensor(const float *data, int64_t rows, int64_t cols)
{
    int64_t shape[2] = {rows, cols};
    slm_tensor *t = slm_tensor_new(SLM_DTYPE_F32, 2, shape, NULL);
    if (!t) exit(1);
    memcpy(slm_tensor_data(t), data, (size_t)(rows * cols) * sizeof(float));
    return t;
}

/* The inference blocks on each sequence from a fresh state (layer 0 sets
 * v_first, layer 1 mixes it in, then a channel mix) against the training
 * forwards of the same three blocks over the batch. */
static void test_vs_inference(void)
{
    enum { B = 3, T = 7, D = 32, N = 8, H = D / N, R = 4, F = 64 };
    const size_t n = (size_t)B * T * D;
    tmx m[2];
    tm_init(&m[0], B, T, D, N, R, 1, 3);
    tm_init(&m[1], B, T, D, N, R, 0, 3);
    cm c;
    cm_init(&c, B, T, D, F);
    float *x[3], *out[3], *vf = xcalloc(n, 4);
    for (int i = 0; i < 3; i++) {
        x[i] = fvec(n, -1, 1, NULL);
        out[i] = xcalloc(n, 4);
    }
    slm_error err = {0};
    slm_pool *pool = pool_of(2);
    for (int l = 0; l < 2; l++) {
        float *saved = xcalloc(slm_rwkv7_tmix_saved_floats(&m[l].s), 4);
        slm_rwkv7_tmix_params p = as_params(m[l].f);
        CHECK(slm_rwkv7_tmix_forward(pool, &m[l].s, &p, x[l], out[l], vf, saved, &err) == SLM_OK,
              "tmix forward: %s", err.msg);
        free(saved);
    }
    float *csaved = xcalloc(slm_rwkv7_cmix_saved_floats(&c.s), 4);
    slm_rwkv7_cmix_params cp = cm_params(c.f);
    CHECK(slm_rwkv7_cmix_forward(pool, &c.s, &cp, x[2], out[2], csaved, &err) == SLM_OK, "cmix forward: %s",
          err.msg);
    free(csaved);

    slm_tensor *mats[2][12] = {{0}};
    slm_rwkv_tmix b[2];
    for (int l = 0; l < 2; l++) {
        float **f = m[l].f;
        const int pi[12][3] = {{P_WR, D, D}, {P_WK, D, D}, {P_WV, D, D}, {P_WO, D, D}, {P_W1, R, D},
                               {P_W2, D, R}, {P_A1, R, D}, {P_A2, D, R}, {P_G1, R, D}, {P_G2, D, R},
                               {P_V1, R, D}, {P_V2, D, R}};
        for (int i = 0; i < 12; i++)
            if (f[pi[i][0]]) mats[l][i] = ftensor(f[pi[i][0]], pi[i][1], pi[i][2]);
        b[l] = (slm_rwkv_tmix){.version = SLM_RWKV_V7, .dim = D, .n_head = H, .head_size = N,
                               .gn_eps = 64e-5f, .first_layer = l == 0, .wr = mats[l][0],
                               .wk = mats[l][1], .wv = mats[l][2], .wo = mats[l][3], .w1 = mats[l][4],
                               .w2 = mats[l][5], .a1 = mats[l][6], .a2 = mats[l][7], .g1 = mats[l][8],
                               .g2 = mats[l][9], .v1 = mats[l][10], .v2 = mats[l][11], .w0 = f[P_W0],
                               .a0 = f[P_A0], .v0 = f[P_V0], .k_k = f[P_KK], .k_a = f[P_KA],
                               .r_k = f[P_RK], .lnx_w = f[P_LNW], .lnx_b = f[P_LNB]};
        for (int i = 0; i < 6; i++) b[l].maa[i] = f[P_MAA] + i * D;
        CHECK(slm_rwkv_tmix_check(&b[l], &err) == SLM_OK, "inference block %d: %s", l, err.msg);
    }
    slm_tensor *ck = ftensor(c.f[1], F, D), *cv = ftensor(c.f[2], D, F);
    slm_rwkv_cmix cb = {.version = SLM_RWKV_V7, .dim = D, .n_ff = F, .mix_k = c.f[0], .wk = ck, .wv = cv};
    slm_rwkv_state *st = slm_rwkv_state_new(SLM_RWKV_V7, 2, D, H, F, R, T, &err);
    CHECK(st != NULL, "inference state: %s", err.msg);
    float *want[3] = {xcalloc(n, 4), xcalloc(n, 4), xcalloc(n, 4)};
    for (int s = 0; s < B && st; s++) {
        /* per sequence from a fresh state: layer 1 reads layer 0's v_first */
        const size_t o = (size_t)s * T * D;
        slm_rwkv_state_reset(st);
        int ok = slm_rwkv_tmix_forward(pool, &b[0], st, 0, T, x[0] + o, want[0] + o, &err) == SLM_OK;
        ok = ok && slm_rwkv_tmix_forward(pool, &b[1], st, 1, T, x[1] + o, want[1] + o, &err) == SLM_OK;
        ok = ok && slm_rwkv_cmix_forward(pool, &cb, st, 0, T, x[2] + o, want[2] + o, &err) == SLM_OK;
        CHECK(ok, "inference blocks: %s", err.msg);
    }
    const char *what[3] = {"time mix (first layer)", "time mix (later layer)", "channel mix"};
    for (int i = 0; i < 3; i++) {
        double e = 0, sc = 1e-30;
        for (size_t q = 0; q < n; q++) {
            e = fmax(e, fabs(want[i][q] - out[i][q]));
            sc = fmax(sc, fabs(want[i][q]));
        }
        printf("%s training forward vs inference block on each sequence: rel err %.2e\n", what[i], e / sc);
        CHECK(e / sc < 1e-5, "%s vs inference: rel err %g", what[i], e / sc);
        free(want[i]);
    }
    slm_rwkv_state_free(st);
    slm_tensor_free(ck);
    slm_tensor_free(cv);
    for (int l = 0; l < 2; l++)
        for (int i = 0; i < 12; i++) slm_tensor_free(mats[l][i]);
    slm_pool_free(pool);
    for (int i = 0; i < 3; i++) {
        free(x[i]);
        free(out[i]);
    }
    free(vf);
    tm_free(&m[0]);
    tm_free(&m[1]);
    cm_free(&c);
}

static void test_cmix_fd(void)
{
    enum { B = 2, T = 5, D = 16, F = 32 };
    const size_t n = (size_t)B * T * D;
    cm c;
    cm_init(&c, B, T, D, F);
    double *xd = xcalloc(n, 8), *Rd = xcalloc(n, 8), *want = xcalloc(n, 8);
    float *x = fvec(n, -1, 1, xd), *Rf = fvec(n, -1, 1, Rd), *out = xcalloc(n, 4), *dx = xcalloc(n, 4);
    float *saved = xcalloc(slm_rwkv7_cmix_saved_floats(&c.s), 4);
    slm_error err = {0};
    slm_pool *pool = pool_of(1);
    slm_rwkv7_cmix_params p = cm_params(c.f), g = cm_params(c.g);
    CHECK(slm_rwkv7_cmix_forward(pool, &c.s, &p, x, out, saved, &err) == SLM_OK, "cmix forward: %s", err.msg);
    ref_cmix(&c, xd, want);
    double e = rel_err(out, want, n);
    printf("cmix forward vs double reference: rel err %.2e\n", e);
    CHECK(e < 1e-5, "cmix forward vs reference: %g", e);
    CHECK(slm_rwkv7_cmix_backward(pool, &c.s, &p, &g, saved, Rf, dx, 0, &err) == SLM_OK, "cmix backward: %s",
          err.msg);
    loss_ctx L = {.c = &c, .x = xd, .R = Rd, .n = n};
    double worst = 0;
    for (int i = 0; i < 3; i++) {
        e = fd_check(&L, c.d[i], c.len[i], c.g[i]);
        CHECK(e < FD_TOL, "cmix d%s vs FD: rel err %g", cname[i], e);
        worst = fmax(worst, e);
    }
    e = fd_check(&L, xd, n, dx);
    CHECK(e < FD_TOL, "cmix dx vs FD: rel err %g", e);
    printf("cmix backward vs FD of the double reference (3 tensors + x): worst rel err %.2e\n", fmax(worst, e));
    slm_pool_free(pool);
    free(xd); free(Rd); free(want); free(x); free(Rf); free(out); free(dx); free(saved);
    cm_free(&c);
}

/* --- determinism: threads and checkpoint spacing -------------------------- */

typedef struct run_out {
    float *out, *vf, *dx, *dvf, *grads;
} run_out;

/* forward + backward of one layer; the outputs and every gradient */
static run_out run_tmix(tmx *m, slm_pool *pool, const float *x, const float *vf_in, const float *R)
{
    const size_t n = (size_t)m->s.n_seq * m->s.n_tok * m->s.dim;
    size_t ng = 0;
    for (int i = 0; i < NP; i++) ng += m->len[i];
    run_out r = {xcalloc(n, 4), xcalloc(n, 4), xcalloc(n, 4), xcalloc(n, 4), xcalloc(ng, 4)};
    float *gp[NP] = {0};
    for (int i = 0, off = 0; i < NP; off += (int)m->len[i], i++)
        if (m->len[i]) gp[i] = r.grads + off;
    if (!m->s.first_layer) memcpy(r.vf, vf_in, n * 4);
    float *saved = xcalloc(slm_rwkv7_tmix_saved_floats(&m->s), 4);
    slm_error err = {0};
    slm_rwkv7_tmix_params p = as_params(m->f), g = as_params(gp);
    int ok = slm_rwkv7_tmix_forward(pool, &m->s, &p, x, r.out, r.vf, saved, &err) == SLM_OK;
    ok = ok && slm_rwkv7_tmix_backward(pool, &m->s, &p, &g, saved, R, r.dx, r.dvf, 0, &err) == SLM_OK;
    CHECK(ok, "tmix run: %s", err.msg);
    free(saved);
    return r;
}

static int same_run(const run_out *a, const run_out *b, size_t n, size_t ng)
{
    return !memcmp(a->out, b->out, n * 4) && !memcmp(a->vf, b->vf, n * 4) && !memcmp(a->dx, b->dx, n * 4) &&
           !memcmp(a->dvf, b->dvf, n * 4) && !memcmp(a->grads, b->grads, ng * 4);
}

static void free_run(run_out *r)
{
    free(r->out); free(r->vf); free(r->dx); free(r->dvf); free(r->grads);
}

static void test_determinism(void)
{
    enum { B = 3, T = 64, D = 64, N = 16, R = 8 };
    const size_t n = (size_t)B * T * D;
    float *x = fvec(n, -1, 1, NULL), *vf = fvec(n, -1, 1, NULL), *Rf = fvec(n, -1, 1, NULL);
    for (int first = 1; first >= 0; first--) {
        tmx m;
        tm_init(&m, B, T, D, N, R, first, 5);
        size_t ng = 0;
        for (int i = 0; i < NP; i++) ng += m.len[i];
        slm_pool *p1 = pool_of(1);
        run_out ref = run_tmix(&m, p1, x, vf, Rf);
        for (int th = 2; th <= 3; th++) {
            slm_pool *p = pool_of(th);
            run_out r = run_tmix(&m, p, x, vf, Rf);
            CHECK(same_run(&ref, &r, n, ng), "tmix (%s layer) on %d threads == 1 thread, bit for bit",
                  first ? "first" : "later", th);
            free_run(&r);
            slm_pool_free(p);
        }
        /* checkpoint spacing changes memory, not results */
        const int chunks[4] = {1, 3, 16, T};
        for (int i = 0; i < 4; i++) {
            m.s.chunk = chunks[i];
            run_out r = run_tmix(&m, p1, x, vf, Rf);
            CHECK(same_run(&ref, &r, n, ng), "tmix (%s layer) checkpoints every %d tokens == every 5",
                  first ? "first" : "later", chunks[i]);
            free_run(&r);
        }
        free_run(&ref);
        slm_pool_free(p1);
        tm_free(&m);
    }
    /* channel mix on 1 and 2 threads */
    cm c;
    cm_init(&c, B, T, D, 4 * D);
    float *out[2], *dx[2], *gr[2][3];
    for (int th = 1; th <= 2; th++) {
        slm_pool *p = pool_of(th);
        out[th - 1] = xcalloc(n, 4);
        dx[th - 1] = xcalloc(n, 4);
        for (int i = 0; i < 3; i++) gr[th - 1][i] = xcalloc(c.len[i], 4);
        float *saved = xcalloc(slm_rwkv7_cmix_saved_floats(&c.s), 4);
        slm_rwkv7_cmix_params cp = cm_params(c.f), cg = cm_params(gr[th - 1]);
        slm_error err = {0};
        int ok = slm_rwkv7_cmix_forward(p, &c.s, &cp, x, out[th - 1], saved, &err) == SLM_OK;
        ok = ok && slm_rwkv7_cmix_backward(p, &c.s, &cp, &cg, saved, Rf, dx[th - 1], 0, &err) == SLM_OK;
        CHECK(ok, "cmix run: %s", err.msg);
        free(saved);
        slm_pool_free(p);
    }
    int same = !memcmp(out[0], out[1], n * 4) && !memcmp(dx[0], dx[1], n * 4);
    for (int i = 0; i < 3; i++) same = same && !memcmp(gr[0][i], gr[1][i], c.len[i] * 4);
    CHECK(same, "cmix on 2 threads == 1 thread, bit for bit");
    for (int th = 0; th < 2; th++) {
        free(out[th]);
        free(dx[th]);
        for (int i = 0; i < 3; i++) free(gr[th][i]);
    }
    cm_free(&c);
    free(x); free(vf); free(Rf);
}

/* the AVX2 step backward against the portable one (heads of 64) */
static void test_back_step_avx2(void)
{
#if defined(__x86_64__)
    if (!slm_kernels_use_avx2()) {
        printf("skip: wkv7 step backward avx2 vs generic (no AVX2/FMA)\n");
        return;
    }
    enum { N = 64, NN = N * N };
    float *Sp = fvec(NN, -1, 1, NULL), *Sn = fvec(NN, -1, 1, NULL), *dS0 = fvec(NN, -1, 1, NULL);
    float *in = fvec(7 * N, -1, 1, NULL);   /* r w k v na nb dy */
    float *out[2], *dS[2];
    for (int v = 0; v < 2; v++) {
        out[v] = xcalloc(6 * N, 4);   /* dr dw dk dv dna dnb, preset */
        for (int i = 0; i < 6 * N; i++) out[v][i] = (float)(i % 7) * 0.1f;
        dS[v] = xcalloc(NN, 4);
        memcpy(dS[v], dS0, NN * 4);
        float *o = out[v];
        (v ? slm_rwkv7_wkv_back_step_avx2 : slm_rwkv7_wkv_back_step_generic)(
            N, Sp, Sn, dS[v], in, in + N, in + 2 * N, in + 3 * N, in + 4 * N, in + 5 * N, in + 6 * N, o,
            o + N, o + 2 * N, o + 3 * N, o + 4 * N, o + 5 * N);
    }
    double eo = 0, so = 0, es = 0, ss = 0;
    for (int i = 0; i < 6 * N; i++) eo = fmax(eo, fabs(out[0][i] - out[1][i])), so = fmax(so, fabs(out[0][i]));
    for (int i = 0; i < NN; i++) es = fmax(es, fabs(dS[0][i] - dS[1][i])), ss = fmax(ss, fabs(dS[0][i]));
    CHECK(eo / so < 1e-5 && es / ss < 1e-5, "wkv7 step backward avx2 vs generic: grads %g, dS %g", eo / so,
          es / ss);
    for (int v = 0; v < 2; v++) free(out[v]), free(dS[v]);
    free(Sp); free(Sn); free(dS0); free(in);
#endif
}

/* --- errors ------------------------------------------------------------------- */

static void test_errors(void)
{
    slm_error err = {0};
    tmx m;
    tm_init(&m, 1, 4, 16, 8, 4, 0, 0);
    slm_rwkv7_tmix_params p = as_params(m.f);
    float x[64] = {0}, out[64], vf[64] = {0};
    float *saved = xcalloc(slm_rwkv7_tmix_saved_floats(&m.s), 4);
    slm_rwkv7_tmix_shape s = m.s;
    s.head_size = 5;
    CHECK(slm_rwkv7_tmix_forward(NULL, &s, &p, x, out, vf, saved, &err) == SLM_EINVAL &&
              strstr(err.msg, "head_size 5 does not divide dim 16"), "bad head size: %s", err.msg);
    CHECK(slm_rwkv7_tmix_saved_floats(&s) == 0, "saved floats of a bad shape are 0");
    s = m.s;
    s.first_layer = 1;
    CHECK(slm_rwkv7_tmix_shape_check(&s, &err) == SLM_EINVAL && strstr(err.msg, "rank_v 4"),
          "a first layer has no value-mix rank: %s", err.msg);
    s = m.s;
    s.n_tok = 0;
    CHECK(slm_rwkv7_tmix_shape_check(&s, &err) == SLM_EINVAL && strstr(err.msg, "0 tokens"), "no tokens: %s",
          err.msg);
    CHECK(slm_rwkv7_tmix_forward(NULL, &m.s, &p, x, out, NULL, saved, &err) == SLM_EINVAL &&
              strstr(err.msg, "needs v_first"), "later layer without v_first: %s", err.msg);
    slm_rwkv7_tmix_params q = p;
    q.k_a = NULL;
    CHECK(slm_rwkv7_tmix_forward(NULL, &m.s, &q, x, out, vf, saved, &err) == SLM_EINVAL &&
              strstr(err.msg, "missing parameter k_a"), "missing k_a: %s", err.msg);
    float dx[64];
    CHECK(slm_rwkv7_tmix_backward(NULL, &m.s, &p, NULL, saved, x, dx, vf, 0, &err) == SLM_EINVAL &&
              strstr(err.msg, "does not hold a finished forward"), "backward before forward: %s", err.msg);
    CHECK(slm_rwkv7_tmix_forward(NULL, &m.s, &p, x, out, vf, saved, &err) == SLM_OK, "forward: %s", err.msg);
    CHECK(slm_rwkv7_tmix_backward(NULL, &m.s, &p, NULL, saved, x, dx, vf, 0, &err) == SLM_OK,
          "backward without parameter gradients: %s", err.msg);
    s = m.s;
    s.chunk = 3;
    CHECK(slm_rwkv7_tmix_backward(NULL, &s, &p, NULL, saved, x, dx, vf, 0, &err) == SLM_EINVAL,
          "backward with another checkpoint spacing than the forward's: %s", err.msg);
    slm_rwkv7_cmix_shape cs = {.n_seq = 1, .n_tok = 4, .dim = 16, .n_ff = 0};
    CHECK(slm_rwkv7_cmix_shape_check(&cs, &err) == SLM_EINVAL && strstr(err.msg, "n_ff 0"), "cmix n_ff: %s",
          err.msg);
    free(saved);
    tm_free(&m);
}

/* --- speed ----------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void bench(void)
{
    enum { L = 4, B = 12, T = 64, D = 128, N = 32, R = 16, F = 4 * D };
    const size_t n = (size_t)B * T * D;
    tmx m[L];
    cm c[L];
    size_t params = 0, saved_floats = 0;
    float *tsaved[L], *csaved[L], *x = fvec(n, -1, 1, NULL), *out = xcalloc(n, 4), *vf = xcalloc(n, 4);
    float *dvf = xcalloc(n, 4), *dx = xcalloc(n, 4), *Rf = fvec(n, -1, 1, NULL);
    for (int l = 0; l < L; l++) {
        tm_init(&m[l], B, T, D, N, R, l == 0, 0);
        cm_init(&c[l], B, T, D, F);
        for (int i = 0; i < NP; i++) params += m[l].len[i];
        for (int i = 0; i < 3; i++) params += c[l].len[i];
        tsaved[l] = xcalloc(slm_rwkv7_tmix_saved_floats(&m[l].s), 4);
        csaved[l] = xcalloc(slm_rwkv7_cmix_saved_floats(&c[l].s), 4);
        saved_floats += slm_rwkv7_tmix_saved_floats(&m[l].s) + slm_rwkv7_cmix_saved_floats(&c[l].s);
    }
    printf("bench: %d layers, dim %d, heads of %d, ranks %d, ffn %d: %zu block parameters; B=%d T=%d; saved %.1f MB\n",
           L, D, N, R, F, params, B, T, (double)saved_floats * 4 / 1e6);
    const char *only = getenv("SLM_BENCH_RWKV7_THREADS");   /* "1" or "2": that count only */
    for (int th = 1; th <= 2; th++) {
        if (only && atoi(only) != th) continue;
        slm_pool *pool = pool_of(th);
        slm_error err = {0};
        double best = 1e30, bf = 0, bb = 0, part[4] = {1e30, 1e30, 1e30, 1e30};
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now(), acc[4] = {0};
            for (int l = 0; l < L; l++) {   /* the blocks only (no norms or residual) */
                slm_rwkv7_tmix_params p = as_params(m[l].f);
                slm_rwkv7_cmix_params cp = cm_params(c[l].f);
                double a = now();
                slm_rwkv7_tmix_forward(pool, &m[l].s, &p, x, out, vf, tsaved[l], &err);
                double b = now();
                slm_rwkv7_cmix_forward(pool, &c[l].s, &cp, x, out, csaved[l], &err);
                acc[0] += b - a, acc[1] += now() - b;
            }
            double t1 = now();
            memset(dvf, 0, n * 4);
            for (int l = L - 1; l >= 0; l--) {
                slm_rwkv7_tmix_params p = as_params(m[l].f), g = as_params(m[l].g);
                slm_rwkv7_cmix_params cp = cm_params(c[l].f), cg = cm_params(c[l].g);
                double a = now();
                slm_rwkv7_cmix_backward(pool, &c[l].s, &cp, &cg, csaved[l], Rf, dx, 0, &err);
                double b = now();
                slm_rwkv7_tmix_backward(pool, &m[l].s, &p, &g, tsaved[l], Rf, dx, dvf, 1, &err);
                acc[3] += b - a, acc[2] += now() - b;
            }
            double t2 = now();
            if (t2 - t0 < best) best = t2 - t0, bf = t1 - t0, bb = t2 - t1;
            for (int i = 0; i < 4; i++) part[i] = fmin(part[i], acc[i]);
        }
        printf("bench: %d thread%s: (best of 5) time mix forward %.1f ms, backward %.1f ms; channel mix forward %.1f ms, "
               "backward %.1f ms\n", th, th > 1 ? "s" : "", part[0] * 1e3, part[2] * 1e3, part[1] * 1e3, part[3] * 1e3);
        printf("bench: %d thread%s: forward %.1f ms + backward %.1f ms = %.1f ms per batch (%.0f tokens/s)\n", th,
               th > 1 ? "s" : "", bf * 1e3, bb * 1e3, best * 1e3, B * T / best);
        slm_pool_free(pool);
    }
    for (int l = 0; l < L; l++) {
        tm_free(&m[l]);
        cm_free(&c[l]);
        free(tsaved[l]);
        free(csaved[l]);
    }
    free(x); free(out); free(vf); free(dvf); free(dx); free(Rf);
}

int main(void)
{
    /* heads of 8 take the AVX2 recurrence kernels where the CPU has them,
     * heads of 6 the portable ones */
    test_tmix_fd(1, 8);
    test_tmix_fd(0, 8);
    test_tmix_fd(1, 6);
    test_tmix_fd(0, 6);
    test_cmix_fd();
    test_vs_inference();
    test_determinism();
    test_back_step_avx2();
    test_errors();
    const char *b = getenv("SLM_BENCH_RWKV7");
    if (b && *b == '1') bench();
    return check_summary();
}
