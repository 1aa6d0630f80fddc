/* csrc/train/sdpa: the training attention against a plain double-precision
 * reference written here (forward outputs, saved lse and P, the three
 * gradients), against central finite differences of the scalar loss
 * L = sum(o * R) (so dO = R), generic against AVX2 row kernels, 1 against
 * 2 threads (identical bits), accumulate = 0 / 1, and the shape checks.
 *
 *   test_sdpa          the tests
 *   test_sdpa bench    times of forward and backward for the training
 *                      speed anchor's shape (B=12, T=64, H=HKV=4, D=32) */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"
#include "core/pool.h"
#include "kernels/vecdot.h"
#include "train/sdpa.h"

/* --- data ------------------------------------------------------------------ */

static uint64_t rng_state = 88172645463325252ULL;

/* uniform in [-1, 1) */
static double urand(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (double)(rng_state >> 11) / 9007199254740992.0 * 2.0 - 1.0;
}

static float *frand(size_t n, double amp)
{
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++) x[i] = (float)(amp * urand());
    return x;
}

static double *to_double(const float *x, size_t n)
{
    double *y = malloc(n * sizeof *y);
    for (size_t i = 0; i < n; i++) y[i] = x[i];
    return y;
}

/* max |a - b| / max(max |b|, 1e-2): relative to the largest value, with
 * a floor for all-zero references (dq and dk of T = 1 or window 1, where
 * the single visible key makes dS = 0 exactly and the kernel's rounding
 * leaves ~1e-8) */
static double rel_err(const float *a, const double *b, size_t n) { return check_relerr(a, b, n, 1e-2); }

/* --- the reference, in double ------------------------------------------------ */

typedef struct cfg {
    const char *name;
    int B, T, H, HKV, D;
    double scale, cap;
    int W;
} cfg;

static int visible(const cfg *c, int t, int u)
{
    return u <= t && (c->W == 0 || u > t - c->W);
}

/* raw score q_t . k_u * scale of head h in sequence b */
static double raw_score(const cfg *c, const double *q, const double *k, int b, int h, int t, int u)
{
    const int D = c->D, g = h / (c->H / c->HKV);
    const double *qt = q + ((size_t)b * c->T + t) * c->H * D + (size_t)h * D;
    const double *ku = k + ((size_t)b * c->T + u) * c->HKV * D + (size_t)g * D;
    double s = 0;
    for (int d = 0; d < D; d++) s += qt[d] * ku[d];
    return s * c->scale;
}

/* P row t of head h (T entries, 0 where masked); returns log-sum-exp */
static double ref_probs(const cfg *c, const double *q, const double *k, int b, int h, int t,
                        double *p)
{
    double mx = -INFINITY;
    for (int u = 0; u < c->T; u++) {
        if (!visible(c, t, u)) continue;
        double s = raw_score(c, q, k, b, h, t, u);
        if (c->cap > 0) s = c->cap * tanh(s / c->cap);
        p[u] = s;
        mx = fmax(mx, s);
    }
    double sum = 0;
    for (int u = 0; u < c->T; u++) sum += visible(c, t, u) ? exp(p[u] - mx) : 0;
    for (int u = 0; u < c->T; u++) p[u] = visible(c, t, u) ? exp(p[u] - mx) / sum : 0;
    return mx + log(sum);
}

/* o (B*T, H*D); lse (B, H, T) and P (B, H, T, T) when not NULL */
static void ref_forward(const cfg *c, const double *q, const double *k, const double *v, double *o,
                        double *lse, double *P)
{
    const int T = c->T, D = c->D, HD = c->H * D, KD = c->HKV * D;
    double *p = malloc((size_t)T * sizeof *p);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int t = 0; t < T; t++) {
                const int g = h / (c->H / c->HKV);
                const size_t bh = (size_t)b * c->H + h;
                double l = ref_probs(c, q, k, b, h, t, p);
                if (lse) lse[bh * T + t] = l;
                if (P) memcpy(P + (bh * T + t) * T, p, (size_t)T * sizeof *p);
                double *ot = o + ((size_t)b * T + t) * HD + (size_t)h * D;
                for (int d = 0; d < D; d++) {
                    double acc = 0;
                    for (int u = 0; u < T; u++)
                        acc += p[u] * v[((size_t)b * T + u) * KD + (size_t)g * D + d];
                    ot[d] = acc;
                }
            }
    free(p);
}

/* gradients (overwritten) of L with dL/do = dO. Written from the chain
 * rule with delta_t = sum_u P_tu dP_tu (the kernel uses dO_t . o_t: the
 * same number by o_t = sum_u P_tu v_u, computed another way here). */
static void ref_backward(const cfg *c, const double *q, const double *k, const double *v,
                         const double *dO, double *dq, double *dk, double *dv)
{
    const int T = c->T, D = c->D, HD = c->H * D, KD = c->HKV * D;
    memset(dq, 0, (size_t)c->B * T * HD * sizeof *dq);
    memset(dk, 0, (size_t)c->B * T * KD * sizeof *dk);
    memset(dv, 0, (size_t)c->B * T * KD * sizeof *dv);
    double *p = malloc((size_t)T * sizeof *p), *dp = malloc((size_t)T * sizeof *dp);
    for (int b = 0; b < c->B; b++)
        for (int h = 0; h < c->H; h++)
            for (int t = 0; t < T; t++) {
                const int g = h / (c->H / c->HKV);
                ref_probs(c, q, k, b, h, t, p);
                const double *dot = dO + ((size_t)b * T + t) * HD + (size_t)h * D;
                const double *qt = q + ((size_t)b * T + t) * HD + (size_t)h * D;
                double delta = 0;
                for (int u = 0; u < T; u++) {
                    const double *vu = v + ((size_t)b * T + u) * KD + (size_t)g * D;
                    double s = 0;
                    for (int d = 0; d < D; d++) s += dot[d] * vu[d];
                    dp[u] = s;
                    delta += p[u] * s;
                }
                for (int u = 0; u < T; u++) {
                    if (!visible(c, t, u)) continue;
                    double ds = p[u] * (dp[u] - delta);
                    if (c->cap > 0) {
                        double th = tanh(raw_score(c, q, k, b, h, t, u) / c->cap);
                        ds *= 1 - th * th;
                    }
                    const size_t ku = ((size_t)b * T + u) * KD + (size_t)g * D;
                    double *dqt = dq + ((size_t)b * T + t) * HD + (size_t)h * D;
                    for (int d = 0; d < D; d++) {
                        dqt[d] += c->scale * ds * k[ku + d];
                        dk[ku + d] += c->scale * ds * qt[d];
                        dv[ku + d] += p[u] * dot[d];
                    }
                }
            }
    free(p);
    free(dp);
}

static double ref_loss(const cfg *c, const double *q, const double *k, const double *v,
                       const double *R, double *o)
{
    const size_t n = (size_t)c->B * c->T * c->H * c->D;
    ref_forward(c, q, k, v, o, NULL, NULL);
    double L = 0;
    for (size_t i = 0; i < n; i++) L += o[i] * R[i];
    return L;
}

/* central differences of ref_loss w.r.t. every `step`-th entry of x (one
 * of q, k, v); other entries of fd are NaN */
static void ref_fd(const cfg *c, double *q, double *k, double *v, const double *R, double *x,
                   size_t n, size_t step, double *fd)
{
    const double eps = 1e-5;
    double *o = malloc((size_t)c->B * c->T * c->H * c->D * sizeof *o);
    for (size_t i = 0; i < n; i++) fd[i] = NAN;
    for (size_t i = 0; i < n; i += step) {
        const double x0 = x[i];
        x[i] = x0 + eps;
        const double lp = ref_loss(c, q, k, v, R, o);
        x[i] = x0 - eps;
        const double lm = ref_loss(c, q, k, v, R, o);
        x[i] = x0;
        fd[i] = (lp - lm) / (2 * eps);
    }
    free(o);
}

/* max |g - fd| / max(max |fd|, 1e-2) over the entries fd holds */
static double fd_err(const float *g, const double *fd, size_t n)
{
    double e = 0, m = 1e-2;
    for (size_t i = 0; i < n; i++) {
        if (isnan(fd[i])) continue;
        e = fmax(e, fabs(g[i] - fd[i]));
        m = fmax(m, fabs(fd[i]));
    }
    return e / m;
}

/* --- one configuration ---------------------------------------------------------- */

static slm_sdpa_shape shape_of(const cfg *c, int keep)
{
    return (slm_sdpa_shape){c->B, c->T, c->H, c->HKV, c->D, (float)c->scale, (float)c->cap,
                            c->W, keep};
}

/* everything the kernel computes for one (mode, pool, path) */
typedef struct run {
    float *o, *saved, *dq, *dk, *dv;
} run;

static void run_free(run *r)
{
    free(r->o), free(r->saved), free(r->dq), free(r->dk), free(r->dv);
}

static int same_bits(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

static double worst_fwd, worst_grad, worst_fd, worst_fd32, worst_path;

static run run_kernel(const cfg *c, int keep, slm_pool *pool, const float *q, const float *k,
                      const float *v, const float *dO)
{
    const slm_sdpa_shape sh = shape_of(c, keep);
    const size_t nq = (size_t)c->B * c->T * c->H * c->D, nk = (size_t)c->B * c->T * c->HKV * c->D;
    run r;
    r.o = malloc(nq * sizeof(float));
    r.saved = malloc(slm_sdpa_saved_bytes(&sh));
    r.dq = malloc(nq * sizeof(float));
    r.dk = malloc(nk * sizeof(float));
    r.dv = malloc(nk * sizeof(float));
    /* garbage in the outputs: the kernel must overwrite all of it */
    for (size_t i = 0; i < nq; i++) r.o[i] = r.dq[i] = 1e30f;
    for (size_t i = 0; i < nk; i++) r.dk[i] = r.dv[i] = -1e30f;
    memset(r.saved, 0xff, slm_sdpa_saved_bytes(&sh));
    slm_error err = {0};
    CHECK(slm_sdpa_forward(pool, &sh, q, k, v, r.o, r.saved, &err) == SLM_OK, "%s: forward: %s",
          c->name, err.msg);
    CHECK(slm_sdpa_backward(pool, &sh, q, k, v, r.o, r.saved, dO, r.dq, r.dk, r.dv, 0, &err) ==
              SLM_OK, "%s: backward: %s", c->name, err.msg);
    return r;
}

static void test_cfg(const cfg *c, slm_pool *pool1, slm_pool *pool2)
{
    const int T = c->T;
    const size_t nq = (size_t)c->B * T * c->H * c->D, nk = (size_t)c->B * T * c->HKV * c->D;
    const size_t nl = (size_t)c->B * c->H * T, np = nl * T;
    float *q = frand(nq, 1.0), *k = frand(nk, 1.0), *v = frand(nk, 1.0), *R = frand(nq, 1.0);
    double *qd = to_double(q, nq), *kd = to_double(k, nk), *vd = to_double(v, nk);
    double *Rd = to_double(R, nq);
    double *o = malloc(nq * sizeof *o), *lse = malloc(nl * sizeof *lse), *P = malloc(np * sizeof *P);
    double *dq = malloc(nq * sizeof *dq), *dk = malloc(nk * sizeof *dk), *dv = malloc(nk * sizeof *dv);
    ref_forward(c, qd, kd, vd, o, lse, P);
    ref_backward(c, qd, kd, vd, Rd, dq, dk, dv);

    /* the reference backward against finite differences of the reference
     * forward (every entry for small tensors, a spread otherwise) */
    double *fq = malloc(nq * sizeof *fq), *fk = malloc(nk * sizeof *fk), *fv = malloc(nk * sizeof *fv);
    const size_t sq = nq > 1500 ? 7 : 1, sk = nk > 1500 ? 7 : 1;
    ref_fd(c, qd, kd, vd, Rd, qd, nq, sq, fq);
    ref_fd(c, qd, kd, vd, Rd, kd, nk, sk, fk);
    ref_fd(c, qd, kd, vd, Rd, vd, nk, sk, fv);
    double e_ref = 0;
    for (size_t i = 0; i < nq; i += sq) e_ref = fmax(e_ref, fabs(dq[i] - fq[i]));
    for (size_t i = 0; i < nk; i += sk) e_ref = fmax(e_ref, fmax(fabs(dk[i] - fk[i]), fabs(dv[i] - fv[i])));
    CHECK(e_ref < 1e-7, "%s: reference gradients vs finite differences: %g", c->name, e_ref);

    double cfg_fwd = 0, cfg_grad = 0, cfg_fd = 0;
    for (int keep = 0; keep <= 1; keep++) {
        for (int generic = 0; generic <= 1; generic++) {
            slm_kernels_force_generic(generic);
            run r1 = run_kernel(c, keep, pool1, q, k, v, R);
            run r2 = run_kernel(c, keep, pool2, q, k, v, R);
            slm_kernels_force_generic(0);
            const char *mode = keep ? "keep P" : "lse only";
            const char *path = generic ? "generic" : "avx2";
            /* forward: o, lse and P against the reference */
            double eo = rel_err(r1.o, o, nq), el = 0, ep = 0;
            for (size_t i = 0; i < nl; i++) el = fmax(el, fabs(r1.saved[i] - lse[i]));
            if (keep) ep = rel_err(r1.saved + nl, P, np);
            cfg_fwd = fmax(cfg_fwd, fmax(eo, fmax(el, ep)));
            CHECK(eo < 2e-6 && el < 2e-6 && ep < 2e-6, "%s (%s, %s): forward o %g, lse %g, P %g",
                  c->name, mode, path, eo, el, ep);
            /* gradients against the reference and the finite differences */
            double eq = rel_err(r1.dq, dq, nq), ek = rel_err(r1.dk, dk, nk), ev = rel_err(r1.dv, dv, nk);
            cfg_grad = fmax(cfg_grad, fmax(eq, fmax(ek, ev)));
            CHECK(eq < 2e-5 && ek < 2e-5 && ev < 2e-5, "%s (%s, %s): dq %g, dk %g, dv %g vs reference",
                  c->name, mode, path, eq, ek, ev);
            double fdq = fd_err(r1.dq, fq, nq), fdk = fd_err(r1.dk, fk, nk), fdv = fd_err(r1.dv, fv, nk);
            cfg_fd = fmax(cfg_fd, fmax(fdq, fmax(fdk, fdv)));
            CHECK(fdq < 2e-5 && fdk < 2e-5 && fdv < 2e-5,
                  "%s (%s, %s): dq %g, dk %g, dv %g vs finite differences", c->name, mode, path, fdq,
                  fdk, fdv);
            /* 2 threads give the same bits as 1 */
            const size_t ns = slm_sdpa_saved_bytes(&(slm_sdpa_shape){c->B, T, c->H, c->HKV, c->D,
                                                                     1, 0, 0, keep}) / sizeof(float);
            CHECK(same_bits(r1.o, r2.o, nq) && same_bits(r1.saved, r2.saved, ns) &&
                      same_bits(r1.dq, r2.dq, nq) && same_bits(r1.dk, r2.dk, nk) &&
                      same_bits(r1.dv, r2.dv, nk),
                  "%s (%s, %s): 2 threads differ from 1", c->name, mode, path);
            run_free(&r1);
            run_free(&r2);
        }
    }

    printf("%-22s B=%d T=%2d H=%d HKV=%d D=%2d cap=%g W=%3d: forward %.2g, gradients vs "
           "reference %.2g, vs finite differences %.2g (reference vs fd %.2g abs)\n",
           c->name, c->B, T, c->H, c->HKV, c->D, c->cap, c->W, cfg_fwd, cfg_grad, cfg_fd, e_ref);
    worst_fwd = fmax(worst_fwd, cfg_fwd);
    worst_grad = fmax(worst_grad, cfg_grad);
    worst_fd = fmax(worst_fd, cfg_fd);

    /* the AVX2 path against the generic one, and the two modes against
     * each other (same math, same order of the products) */
    {
        slm_kernels_force_generic(1);
        run g = run_kernel(c, 0, pool2, q, k, v, R);
        slm_kernels_force_generic(0);
        run a = run_kernel(c, 0, pool2, q, k, v, R);
        run p = run_kernel(c, 1, pool2, q, k, v, R);
        double *gd = to_double(g.o, nq);
        const double eo = rel_err(a.o, gd, nq);
        free(gd);
        gd = to_double(g.dq, nq);
        double e = rel_err(a.dq, gd, nq);
        free(gd);
        gd = to_double(g.dk, nk);
        e = fmax(e, rel_err(a.dk, gd, nk));
        free(gd);
        worst_path = fmax(worst_path, fmax(eo, e));
        /* the tiers' GEMMs differ too (kernels/sgemm.h: AVX-512 kernel or
         * OpenBLAS, different summation orders), so the gradients, where
         * dS = P (dP - delta) cancels (window 1: to rounding noise), get
         * the bound each path has against the reference above */
        CHECK(eo < 2e-6 && e < 2e-5, "%s: avx2 vs generic: o %g, dq dk %g", c->name, eo, e);
        CHECK(same_bits(a.o, p.o, nq), "%s: o differs between the two modes", c->name);
        run_free(&g);
        run_free(&a);
        run_free(&p);
    }

    /* accumulate = 1 adds onto what the gradients hold */
    for (int keep = 0; keep <= 1; keep++) {
        const slm_sdpa_shape sh = shape_of(c, keep);
        float *of = malloc(nq * sizeof *of), *saved = malloc(slm_sdpa_saved_bytes(&sh));
        float *gq = frand(nq, 1.0), *gk = frand(nk, 1.0), *gv = frand(nk, 1.0);
        double *g0q = to_double(gq, nq), *g0k = to_double(gk, nk), *g0v = to_double(gv, nk);
        slm_error err = {0};
        slm_sdpa_forward(pool2, &sh, q, k, v, of, saved, &err);
        CHECK(slm_sdpa_backward(pool2, &sh, q, k, v, of, saved, R, gq, gk, gv, 1, &err) == SLM_OK,
              "%s: backward accumulate: %s", c->name, err.msg);
        for (size_t i = 0; i < nq; i++) g0q[i] += dq[i];
        for (size_t i = 0; i < nk; i++) g0k[i] += dk[i], g0v[i] += dv[i];
        double e = fmax(rel_err(gq, g0q, nq), fmax(rel_err(gk, g0k, nk), rel_err(gv, g0v, nk)));
        CHECK(e < 2e-5, "%s (keep %d): accumulate = 1 is off by %g", c->name, keep, e);
        free(of), free(saved), free(gq), free(gk), free(gv), free(g0q), free(g0k), free(g0v);
    }

    free(q), free(k), free(v), free(R), free(qd), free(kd), free(vd), free(Rd);
    free(o), free(lse), free(P), free(dq), free(dk), free(dv), free(fq), free(fk), free(fv);
}

/* Finite differences through the f32 kernel itself (step 1e-2, loss summed
 * in double): a check that needs no reference at all. */
static void test_fd_f32(const cfg *c, int keep, slm_pool *pool)
{
    const slm_sdpa_shape sh = shape_of(c, keep);
    const size_t nq = (size_t)c->B * c->T * c->H * c->D, nk = (size_t)c->B * c->T * c->HKV * c->D;
    float *q = frand(nq, 1.0), *k = frand(nk, 1.0), *v = frand(nk, 1.0), *R = frand(nq, 1.0);
    float *o = malloc(nq * sizeof *o), *saved = malloc(slm_sdpa_saved_bytes(&sh));
    float *dq = malloc(nq * sizeof *dq), *dk = malloc(nk * sizeof *dk), *dv = malloc(nk * sizeof *dv);
    slm_error err = {0};
    slm_sdpa_forward(pool, &sh, q, k, v, o, saved, &err);
    slm_sdpa_backward(pool, &sh, q, k, v, o, saved, R, dq, dk, dv, 0, &err);
    float *xs[3] = {q, k, v}, *gs[3] = {dq, dk, dv};
    const size_t ns[3] = {nq, nk, nk};
    double e = 0, m = 1e-30;
    for (int w = 0; w < 3; w++)
        for (size_t i = 3; i < ns[w]; i += ns[w] / 17 + 1) {
            const float x0 = xs[w][i], h = 1e-2f;
            double l[2];
            for (int s = 0; s < 2; s++) {
                xs[w][i] = x0 + (s ? -h : h);
                slm_sdpa_forward(pool, &sh, q, k, v, o, saved, &err);
                l[s] = 0;
                for (size_t j = 0; j < nq; j++) l[s] += (double)o[j] * R[j];
            }
            xs[w][i] = x0;
            const double fd = (l[0] - l[1]) / (2.0 * h);
            e = fmax(e, fabs(fd - gs[w][i]));
            m = fmax(m, fabs(fd));
        }
    worst_fd32 = fmax(worst_fd32, e / m);
    CHECK(e / m < 1e-3, "%s (keep %d): f32 finite differences off by %g", c->name, keep, e / m);
    free(q), free(k), free(v), free(R), free(o), free(saved), free(dq), free(dk), free(dv);
}

/* --- row kernels: AVX2 against generic ------------------------------------------ */

static void test_rows(void)
{
#if defined(__x86_64__)
    if (!slm_cpu_has_avx2()) {
        printf("skip: no AVX2, row kernels not compared\n");
        return;
    }
    double worst = 0;
    float g[80], a[80], pg[80];
    for (int n = 1; n <= 70; n += 3)
        for (int lo = 0; lo < n; lo += 5)
            for (int hi = lo + 1; hi <= n; hi += 4) {
                for (int j = 0; j < n; j++) g[j] = a[j] = (float)(4 * urand());
                float lg = slm_sdpa_softmax_row_generic(g, n, lo, hi);
                float la = slm_sdpa_softmax_row_avx2(a, n, lo, hi);
                double e = fabs(lg - la);
                for (int j = 0; j < n; j++) e = fmax(e, fabs(g[j] - a[j]));
                for (int j = 0; j < n; j++) pg[j] = g[j];
                for (int j = 0; j < n; j++) g[j] = a[j] = (float)(4 * urand());
                slm_sdpa_probs_row_generic(g, n, lo, hi, 1.5f);
                slm_sdpa_probs_row_avx2(a, n, lo, hi, 1.5f);
                for (int j = 0; j < n; j++) e = fmax(e, fabs(g[j] - a[j]) / fmax(1, fabs(g[j])));
                for (int j = 0; j < n; j++) g[j] = a[j] = (float)urand();
                slm_sdpa_dscore_row_generic(g, pg, n, lo, hi, 0.3f);
                slm_sdpa_dscore_row_avx2(a, pg, n, lo, hi, 0.3f);
                for (int j = 0; j < n; j++) e = fmax(e, fabs(g[j] - a[j]));
                worst = fmax(worst, e);
            }
    CHECK(worst < 1e-6, "row kernels: avx2 vs generic %g", worst);
    printf("row kernels: avx2 vs generic, max error %.3g\n", worst);
#endif
}

/* --- shape checks ------------------------------------------------------------------ */

static void expect_msg(slm_sdpa_shape sh, const char *msg)
{
    slm_error err = {0};
    slm_status st = slm_sdpa_check(&sh, &err);
    CHECK(st != SLM_OK && strcmp(err.msg, msg) == 0, "check: expected \"%s\", got \"%s\"", msg,
          err.msg);
}

static void test_checks(void)
{
    const slm_sdpa_shape ok = {2, 8, 4, 2, 16, 0.25f, 0, 0, 0};
    slm_error err = {0};
    CHECK(slm_sdpa_check(&ok, &err) == SLM_OK, "check: a good shape refused: %s", err.msg);
    slm_sdpa_shape s = ok;
    s.B = 0;
    expect_msg(s, "sdpa: B must be positive");
    s = ok, s.T = -1;
    expect_msg(s, "sdpa: T must be positive");
    s = ok, s.head_dim = 0;
    expect_msg(s, "sdpa: head_dim must be positive");
    s = ok, s.n_head_kv = 3;
    expect_msg(s, "sdpa: n_head 4 is not a multiple of n_head_kv 3");
    s = ok, s.softcap = -1;
    expect_msg(s, "sdpa: softcap must be >= 0 (0: none)");
    s = ok, s.window = -2;
    expect_msg(s, "sdpa: window must be >= 0 (0: none)");
    s = ok, s.scale = INFINITY;
    expect_msg(s, "sdpa: scale must be finite");
    s = ok, s.B = 1 << 30, s.T = 1 << 20;
    expect_msg(s, "sdpa: shape B=1073741824 T=1048576 H=4 D=16 too large");
    /* sizes: lse always, P with keep_probs */
    CHECK(slm_sdpa_saved_bytes(&ok) == 2 * 4 * 8 * 4, "saved bytes (lse): %zu",
          slm_sdpa_saved_bytes(&ok));
    s = ok, s.keep_probs = 1;
    CHECK(slm_sdpa_saved_bytes(&s) == (2 * 4 * 8 + 2 * 4 * 8 * 8) * 4, "saved bytes (P): %zu",
          slm_sdpa_saved_bytes(&s));
    CHECK(slm_sdpa_keep_probs_fits(&ok, 2 * 4 * 8 * 8 * 4) &&
              !slm_sdpa_keep_probs_fits(&ok, 2 * 4 * 8 * 8 * 4 - 1),
          "keep_probs_fits at the budget's edge");
    /* forward and backward refuse a bad shape too */
    float x[4] = {0};
    s = ok, s.n_head_kv = 3;
    CHECK(slm_sdpa_forward(NULL, &s, x, x, x, x, x, &err) == SLM_EINVAL &&
              slm_sdpa_backward(NULL, &s, x, x, x, x, x, x, x, x, x, 0, &err) == SLM_EINVAL,
          "forward/backward accept a bad shape");
    /* the pool is required */
    const slm_sdpa_shape one = {1, 1, 1, 1, 4, 0.5f, 0, 0, 0};
    float y[4], sv[4];
    CHECK(slm_sdpa_forward(NULL, &one, x, x, x, y, sv, &err) == SLM_EINVAL &&
              strcmp(err.msg, "no pool for scratch memory") == 0,
          "forward without a pool: %s", err.msg);
}

/* --- bench ------------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void bench(void)
{
    const cfg c = {"anchor", 12, 64, 4, 4, 32, 1 / sqrt(32.0), 0, 0};
    const size_t nq = (size_t)c.B * c.T * c.H * c.D, nk = (size_t)c.B * c.T * c.HKV * c.D;
    float *q = frand(nq, 1), *k = frand(nk, 1), *v = frand(nk, 1), *dO = frand(nq, 1);
    float *o = malloc(nq * 4), *dq = malloc(nq * 4), *dk = malloc(nk * 4), *dv = malloc(nk * 4);
    /* passes 0, 1: 1 and 2 threads; pass 2: the generic row kernels, 1 thread */
    for (int pass = 0; pass < 3; pass++) {
        const int threads = pass == 1 ? 2 : 1, generic = pass == 2;
        slm_error err = {0};
        slm_pool *pool = slm_pool_new(threads, &err);
        slm_kernels_force_generic(generic);
        for (int keep = 0; keep <= 1; keep++) {
            const slm_sdpa_shape sh = shape_of(&c, keep);
            float *saved = malloc(slm_sdpa_saved_bytes(&sh));
            enum { N = 200 };
            double tf[N], tb[N];
            for (int i = 0; i < N + 10; i++) {
                double t0 = now();
                slm_sdpa_forward(pool, &sh, q, k, v, o, saved, &err);
                double t1 = now();
                slm_sdpa_backward(pool, &sh, q, k, v, o, saved, dO, dq, dk, dv, 0, &err);
                double t2 = now();
                if (i >= 10) tf[i - 10] = t1 - t0, tb[i - 10] = t2 - t1;
            }
            qsort(tf, N, sizeof *tf, cmp_double);
            qsort(tb, N, sizeof *tb, cmp_double);
            printf("B=12 T=64 H=HKV=4 D=32, %d thread%s, %s%s: forward %.3f ms, backward %.3f ms "
                   "(medians of %d)\n",
                   threads, threads > 1 ? "s" : "", keep ? "keep P" : "lse only",
                   generic ? ", generic rows" : "", tf[N / 2] * 1e3, tb[N / 2] * 1e3, N);
            free(saved);
        }
        slm_kernels_force_generic(0);
        slm_pool_free(pool);
    }
    free(q), free(k), free(v), free(dO), free(o), free(dq), free(dk), free(dv);
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "bench") == 0) {
        bench();
        return 0;
    }
    slm_error err = {0};
    slm_pool *p1 = slm_pool_new(1, &err), *p2 = slm_pool_new(2, &err);
    if (!p1 || !p2) {
        printf("FAIL: pools: %s\n", err.msg);
        return 1;
    }
    /* T values not multiples of 8 or of the query block (16); D of 8, 12,
     * 16; scale 1 with soft-cap 1.5 so that the cap bends the scores */
    const cfg cases[] = {
        {"MHA", 2, 21, 2, 2, 8, 1 / sqrt(8.0), 0, 0},
        {"GQA H=4 HKV=2", 2, 19, 4, 2, 12, 1 / sqrt(12.0), 0, 0},
        {"GQA H=4 HKV=1", 1, 37, 4, 1, 16, 0.25, 0, 0},
        {"T=1", 3, 1, 4, 2, 8, 1 / sqrt(8.0), 0, 0},
        {"softcap", 2, 21, 2, 2, 8, 1.0, 1.5, 0},
        {"GQA softcap", 1, 35, 4, 2, 8, 1.0, 1.5, 0},
        {"window 5", 2, 23, 4, 2, 8, 1 / sqrt(8.0), 0, 5},
        {"window 1", 1, 9, 2, 1, 8, 1 / sqrt(8.0), 0, 1},
        {"window 20 of 37", 1, 37, 2, 2, 8, 0.5, 0, 20},
        {"window > T", 1, 13, 2, 2, 8, 0.5, 0, 100},
        {"window 7 softcap GQA", 2, 33, 4, 1, 8, 1.0, 2.0, 7},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) test_cfg(&cases[i], p1, p2);
    for (int keep = 0; keep <= 1; keep++) {
        test_fd_f32(&cases[1], keep, p2);
        test_fd_f32(&cases[10], keep, p2);
    }
    test_rows();
    test_checks();
    printf("max errors: forward %.3g (o rel, lse abs, P rel), gradients vs double reference "
           "%.3g, vs double finite differences %.3g, vs f32 finite differences %.3g, avx2 vs "
           "generic %.3g\n",
           worst_fwd, worst_grad, worst_fd, worst_fd32, worst_path);
    slm_pool_free(p1);
    slm_pool_free(p2);
    return check_summary();
}
