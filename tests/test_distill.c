/* The distillation loss (train/distill.h) against a double-precision
 * reference written here from the formula (Hinton et al. 2015: alpha T^2
 * KL(softmax(z_t/T) || softmax(z_s/T)) + (1 - alpha) CE), central finite
 * differences of that reference, the AVX2 paths against the generic ones,
 * 1 and 2 threads, alpha = 0 against slm_grad_xent bit for bit, the top-k
 * teacher (renormalized over its k) with k = V against the dense one, the
 * top-k selection against a sort, and the refusals of a hostile teacher. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "core/pool.h"
#include "kernels/vecdot.h"
#include "train/distill.h"
#include "train/grad.h"

#define TESTRAND_SEED 777
#include "testrand.h"

static slm_pool *pool1, *pool2;
static int have_avx2;

/* A teacher in the reference's form: per row, n entries (id, logit); the
 * dense teacher has n = V with ids 0..V-1. */
typedef struct ref_teacher {
    const float *vals;
    const int32_t *ids;   /* NULL: dense, id = j */
    int64_t n;
} ref_teacher;

/* The loss of one row in double, and when g is not NULL its gradient
 * w.r.t. zs (written from the formula dL/dz = alpha T (q - p_t) + (1 -
 * alpha) (p - onehot), independently of the kernel's order of work). */
static double ref_row(const double *zs, int64_t V, int32_t t, const ref_teacher *te, int64_t r, double alpha,
                      double T, double *g, double *kl_out, double *ce_out)
{
    if (t < 0) {
        if (g) for (int64_t i = 0; i < V; i++) g[i] = 0;
        *kl_out = *ce_out = 0;
        return 0;
    }
    double mx = -INFINITY, mq = -INFINITY;
    for (int64_t i = 0; i < V; i++) {
        mx = fmax(mx, zs[i]);
        mq = fmax(mq, zs[i] / T);
    }
    double sp = 0, sq = 0;
    for (int64_t i = 0; i < V; i++) {
        sp += exp(zs[i] - mx);
        sq += exp(zs[i] / T - mq);
    }
    const double lsp = mx + log(sp), lsq = mq + log(sq);
    const double ce = lsp - zs[t];
    /* teacher log-probabilities over its n entries */
    const float *v = te->vals + r * te->n;
    const int32_t *id = te->ids ? te->ids + r * te->n : NULL;
    double mt = -INFINITY, stt = 0;
    for (int64_t j = 0; j < te->n; j++) mt = fmax(mt, v[j] / T);
    for (int64_t j = 0; j < te->n; j++) stt += exp(v[j] / T - mt);
    const double lst = mt + log(stt);
    double kl = 0;
    for (int64_t j = 0; j < te->n; j++) {
        const int64_t i = id ? id[j] : j;
        const double lpt = v[j] / T - lst, lq = zs[i] / T - lsq;
        kl += exp(lpt) * (lpt - lq);
    }
    if (g) {
        for (int64_t i = 0; i < V; i++)
            g[i] = alpha * T * exp(zs[i] / T - lsq) + (1 - alpha) * (exp(zs[i] - lsp) - (i == t));
        for (int64_t j = 0; j < te->n; j++) g[id ? id[j] : j] -= alpha * T * exp(v[j] / T - lst);
    }
    *kl_out = kl;
    *ce_out = ce;
    return alpha * T * T * kl + (1 - alpha) * ce;
}

static double ref_loss(const double *zs, int64_t rows, int64_t V, const int32_t *t, const ref_teacher *te,
                       double alpha, double T, double *g, double *kl, double *ce)
{
    double s = 0, k, c;
    *kl = *ce = 0;
    for (int64_t r = 0; r < rows; r++) {
        s += ref_row(zs + r * V, V, t[r], te, r, alpha, T, g ? g + r * V : NULL, &k, &c);
        *kl += k;
        *ce += c;
    }
    return s;
}

/* max |a - b| / max |b| */
static double relerr(const float *a, const double *b, int64_t n) { return check_relerr(a, b, (size_t)n, 1e-30); }
static double relerr_f(const float *a, const float *b, int64_t n) { return check_relerr_f(a, b, (size_t)n, 1e-30); }

/* the kernel on a copy of x: dense when ids is NULL */
static slm_status run(slm_pool *pool, float *l, const int32_t *t, const float *vals, const int32_t *ids, int64_t k,
                      int64_t rows, int64_t V, float alpha, float T, float scale, slm_distill_sums *s, slm_error *err)
{
    slm_distill_opts o = {alpha, T, scale};
    if (ids) return slm_distill_topk(pool, l, t, vals, ids, k, rows, V, &o, s, err);
    return slm_distill_dense(pool, l, t, vals, rows, V, &o, s, err);
}

/* The k largest of each row of the dense teacher (a plain selection
 * written here: repeated argmax, lower id first on ties). */
static void ref_topk(const float *zt, int64_t rows, int64_t V, int64_t k, float *vals, int32_t *ids)
{
    unsigned char *used = malloc((size_t)V);
    for (int64_t r = 0; r < rows; r++) {
        memset(used, 0, (size_t)V);
        for (int64_t j = 0; j < k; j++) {
            int64_t best = -1;
            for (int64_t i = 0; i < V; i++)
                if (!used[i] && (best < 0 || zt[r * V + i] > zt[r * V + best])) best = i;
            used[best] = 1;
            vals[r * k + j] = zt[r * V + best];
            ids[r * k + j] = (int32_t)best;
        }
    }
    free(used);
}

static void test_case(int64_t rows, int64_t V, int64_t k, float alpha, float T, float spread)
{
    float *zs = rvec(rows * V, spread), *zt = rvec(rows * V, spread * 1.5f);
    int32_t *t = malloc((size_t)rows * sizeof *t);
    for (int64_t r = 0; r < rows; r++) t[r] = r % 7 == 5 ? -1 : (int32_t)(urand() % (uint32_t)V);
    float *tv = NULL;
    int32_t *ti = NULL;
    if (k) {
        tv = malloc((size_t)(rows * k) * sizeof *tv);
        ti = malloc((size_t)(rows * k) * sizeof *ti);
        ref_topk(zt, rows, V, k, tv, ti);
    }
    ref_teacher te = {k ? tv : zt, k ? ti : NULL, k ? k : V};
    double *xd = malloc((size_t)(rows * V) * sizeof *xd), *rg = malloc((size_t)(rows * V) * sizeof *rg);
    for (int64_t i = 0; i < rows * V; i++) xd[i] = zs[i];
    double rkl, rce;
    const float scale = 0.125f;
    const double ref = ref_loss(xd, rows, V, t, &te, alpha, T, rg, &rkl, &rce);
    for (int64_t i = 0; i < rows * V; i++) rg[i] *= scale;
    double el = 0, ek = 0, ec = 0, eg = 0, efd = 0, eavx = 0;
    float *paths[2] = {NULL, NULL};
    slm_distill_sums sums[2];
    for (int path = 0; path < 2; path++) {
        if (path == 1 && !have_avx2) break;
        slm_kernels_force_generic(path == 0);
        float *l = paths[path] = fdup(zs, rows * V);
        slm_error err = {0};
        CHECK(run(pool2, l, t, k ? tv : zt, ti, k, rows, V, alpha, T, scale, &sums[path], &err) == SLM_OK, "%s",
              err.msg);
        el = fmax(el, fabs(sums[path].loss - ref) / fabs(ref));
        ek = fmax(ek, fabs(sums[path].kl - rkl) / fmax(fabs(rkl), 1e-12));
        ec = fmax(ec, fabs(sums[path].ce - rce) / fabs(rce));
        eg = fmax(eg, relerr(l, rg, rows * V));
        int zero = 1;
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; t[r] < 0 && i < V; i++) zero &= l[r * V + i] == 0.0f;
        CHECK(zero, "distill: an ignored row has a gradient");
    }
    slm_kernels_force_generic(0);
    if (paths[1]) eavx = relerr_f(paths[1], paths[0], rows * V);
    /* central finite differences of the double reference loss against the
     * kernel's gradient / scale: targets' own logits, teacher ids, anywhere */
    for (int n = 0; n < 40; n++) {
        const int64_t r = n % rows;
        int64_t i = (int64_t)(urand() % (uint32_t)(rows * V));
        if (n < 8 && t[r] >= 0) i = r * V + t[r];
        else if (n < 16 && k) i = r * V + ti[r * k + urand() % (uint32_t)k];
        const double h = 1e-5, keep = xd[i];
        double a, b;
        xd[i] = keep + h;
        const double lp = ref_loss(xd, rows, V, t, &te, alpha, T, NULL, &a, &b);
        xd[i] = keep - h;
        const double lm = ref_loss(xd, rows, V, t, &te, alpha, T, NULL, &a, &b);
        xd[i] = keep;
        efd = fmax(efd, fabs(paths[0][i] / scale - (lp - lm) / (2 * h)));
    }
    CHECK(el < 1e-6 && ek < 1e-5 && ec < 1e-6 && eg < 2e-5 && efd < 2e-6 && eavx < 1e-5,
          "distill %lldx%lld k %lld alpha %g T %g: loss %.3g kl %.3g ce %.3g grad %.3g fd %.3g avx2 %.3g",
          (long long)rows, (long long)V, (long long)k, alpha, T, el, ek, ec, eg, efd, eavx);
    printf("distill %lldx%lld %s%lld alpha %.2f T %.1f: loss rel err %.1e, KL %.1e, CE %.1e, grad %.1e, "
           "vs finite diff %.1e, AVX2 vs generic %.1e\n", (long long)rows, (long long)V, k ? "top-" : "dense ",
           (long long)(k ? k : V), alpha, T, el, ek, ec, eg, efd, eavx);
    /* 1 and 2 threads: the same bits */
    float *l1 = fdup(zs, rows * V), *l2 = fdup(zs, rows * V);
    slm_distill_sums s1, s2;
    slm_error err = {0};
    run(pool1, l1, t, k ? tv : zt, ti, k, rows, V, alpha, T, scale, &s1, &err);
    run(pool2, l2, t, k ? tv : zt, ti, k, rows, V, alpha, T, scale, &s2, &err);
    CHECK(s1.loss == s2.loss && s1.kl == s2.kl && !memcmp(l1, l2, (size_t)(rows * V) * sizeof(float)),
          "distill: 1 and 2 threads differ");
    free(zs); free(zt); free(t); free(tv); free(ti); free(xd); free(rg); free(paths[0]); free(paths[1]);
    free(l1); free(l2);
}

/* alpha = 0: slm_grad_xent's loss and gradient, bit for bit, on both paths
 * and for both teacher forms */
static void test_alpha0(int64_t rows, int64_t V)
{
    float *zs = rvec(rows * V, 4), *zt = rvec(rows * V, 4);
    int32_t *t = malloc((size_t)rows * sizeof *t);
    for (int64_t r = 0; r < rows; r++) t[r] = r % 9 == 4 ? -1 : (int32_t)(urand() % (uint32_t)V);
    const int64_t k = V < 5 ? V : 5;
    float *tv = malloc((size_t)(rows * k) * sizeof *tv);
    int32_t *ti = malloc((size_t)(rows * k) * sizeof *ti);
    ref_topk(zt, rows, V, k, tv, ti);
    int same = 1;
    for (int path = 0; path < 2; path++) {
        if (path == 1 && !have_avx2) break;
        slm_kernels_force_generic(path == 0);
        float *a = fdup(zs, rows * V), *b = fdup(zs, rows * V), *c = fdup(zs, rows * V);
        double ce;
        slm_distill_sums sb, sc;
        slm_error err = {0};
        slm_grad_xent(pool2, a, t, rows, V, 1.0f / rows, &ce, &err);
        run(pool2, b, t, zt, NULL, 0, rows, V, 0.0f, 2.0f, 1.0f / rows, &sb, &err);
        run(pool2, c, t, tv, ti, k, rows, V, 0.0f, 3.0f, 1.0f / rows, &sc, &err);
        same &= sb.loss == ce && sc.loss == ce && sb.ce == ce && !memcmp(a, b, (size_t)(rows * V) * sizeof(float)) &&
                !memcmp(a, c, (size_t)(rows * V) * sizeof(float));
        free(a); free(b); free(c);
    }
    slm_kernels_force_generic(0);
    CHECK(same, "distill alpha = 0 differs from xent (%lldx%lld)", (long long)rows, (long long)V);
    printf("distill alpha = 0 vs xent %lldx%lld: %s\n", (long long)rows, (long long)V, same ? "bit for bit" : "DIFFER");
    free(zs); free(zt); free(t); free(tv); free(ti);
}

/* top-k with k = V (every id, in the selection's order) gives the dense
 * kernel's loss and gradient up to the order of the additions */
static void test_topk_full(int64_t rows, int64_t V)
{
    float *zs = rvec(rows * V, 3), *zt = rvec(rows * V, 3);
    int32_t *t = malloc((size_t)rows * sizeof *t);
    for (int64_t r = 0; r < rows; r++) t[r] = (int32_t)(urand() % (uint32_t)V);
    float *tv = malloc((size_t)(rows * V) * sizeof *tv);
    int32_t *ti = malloc((size_t)(rows * V) * sizeof *ti);
    slm_error err = {0};
    CHECK(slm_distill_select_topk(pool2, zt, rows, V, V, tv, ti, &err) == SLM_OK, "%s", err.msg);
    float *a = fdup(zs, rows * V), *b = fdup(zs, rows * V);
    slm_distill_sums sa, sb;
    run(pool2, a, t, zt, NULL, 0, rows, V, 0.7f, 2.0f, 1.0f, &sa, &err);
    run(pool2, b, t, tv, ti, V, rows, V, 0.7f, 2.0f, 1.0f, &sb, &err);
    const double d = relerr_f(b, a, rows * V);
    CHECK(fabs(sa.loss - sb.loss) < 1e-9 * fabs(sa.loss) && d < 1e-6, "top-k with k = V vs dense: loss %.17g %.17g grad %.3g",
          sa.loss, sb.loss, d);
    printf("distill top-%lld (all) vs dense: loss %.2e relative, grad %.2e\n", (long long)V,
           fabs(sa.loss - sb.loss) / fabs(sa.loss), d);
    free(zs); free(zt); free(t); free(tv); free(ti); free(a); free(b);
}

static void test_select(void)
{
    const int64_t rows = 37, V = 301, k = 9;
    float *z = rvec(rows * V, 5);
    for (int64_t r = 0; r < rows; r += 3) z[r * V + 200] = z[r * V + 17] = 9.5f;   /* a tie at the top */
    float *v = malloc((size_t)(rows * k) * sizeof *v), *rv = malloc((size_t)(rows * k) * sizeof *rv);
    int32_t *id = malloc((size_t)(rows * k) * sizeof *id), *rid = malloc((size_t)(rows * k) * sizeof *rid);
    ref_topk(z, rows, V, k, rv, rid);
    slm_error err = {0};
    int ok = 1;
    for (int pi = 0; pi < 2; pi++) {
        CHECK(slm_distill_select_topk(pi ? pool2 : pool1, z, rows, V, k, v, id, &err) == SLM_OK, "%s", err.msg);
        ok &= !memcmp(v, rv, (size_t)(rows * k) * sizeof *v) && !memcmp(id, rid, (size_t)(rows * k) * sizeof *id);
    }
    CHECK(ok && id[0] == 17 && id[1] == 200, "topk selection differs from the sort (ties: %d %d)", id[0], id[1]);
    CHECK(slm_distill_select_topk(pool1, z, rows, V, 0, v, id, &err) == SLM_EINVAL &&
              slm_distill_select_topk(pool1, z, rows, V, V + 1, v, id, &err) == SLM_EINVAL,
          "topk: k outside 1..V accepted");
    z[5 * V + 3] = NAN;
    CHECK(slm_distill_select_topk(pool2, z, rows, V, k, v, id, &err) == SLM_EINVAL && strstr(err.msg, "row 5"),
          "topk: a NaN not refused (%s)", err.msg);
    printf("topk selection %lldx%lld k %lld: %s\n", (long long)rows, (long long)V, (long long)k,
           ok ? "as the sort" : "DIFFERS");
    free(z); free(v); free(rv); free(id); free(rid);
}

/* refusals: nothing is written to the logits */
static void test_refusals(void)
{
    const int64_t rows = 4, V = 10, k = 3;
    float *zs = rvec(rows * V, 2), *zt = rvec(rows * V, 2), *l = fdup(zs, rows * V);
    int32_t t[4] = {1, 2, 3, 4};
    float tv[12];
    int32_t ti[12];
    ref_topk(zt, rows, V, k, tv, ti);
    slm_distill_sums s;
    slm_error err = {0};
    struct {
        const char *what, *msg;
        slm_status want;
    } cases[] = {
        {"alpha 1.5", "alpha", SLM_EINVAL}, {"T 0", "temperature", SLM_EINVAL}, {"id 10", "outside 0..9", SLM_ERANGE},
        {"id -1", "outside 0..9", SLM_ERANGE}, {"repeated id", "repeated in row 2", SLM_EINVAL},
        {"inf value", "not finite", SLM_EINVAL}, {"target 10", "target 10", SLM_ERANGE},
    };
    for (int c = 0; c < 7; c++) {
        float v2[12];
        int32_t i2[12], t2[4];
        memcpy(v2, tv, sizeof v2);
        memcpy(i2, ti, sizeof i2);
        memcpy(t2, t, sizeof t2);
        float alpha = 0.5f, T = 2.0f;
        switch (c) {
        case 0: alpha = 1.5f; break;
        case 1: T = 0.0f; break;
        case 2: i2[7] = 10; break;
        case 3: i2[4] = -1; break;
        case 4: i2[8] = i2[6]; break;
        case 5: v2[10] = INFINITY; break;
        case 6: t2[3] = 10; break;
        }
        const slm_status st = run(pool2, l, t2, v2, i2, k, rows, V, alpha, T, 1.0f, &s, &err);
        CHECK(st == cases[c].want && strstr(err.msg, cases[c].msg) && !memcmp(l, zs, (size_t)(rows * V) * sizeof *l),
              "distill refusal '%s': status %d, '%s'", cases[c].what, (int)st, err.msg);
    }
    CHECK(run(pool2, l, t, tv, ti, V + 1, rows, V, 0.5f, 2.0f, 1.0f, &s, &err) == SLM_EINVAL,
          "distill: k > V accepted");
    free(zs); free(zt); free(l);
}

int main(void)
{
    slm_error err = {0};
    pool1 = slm_pool_new(1, &err);
    pool2 = slm_pool_new(2, &err);
    have_avx2 = slm_cpu_has_avx2();
    if (!have_avx2) printf("skip: no AVX2 on this CPU, the AVX2 paths are not compared\n");
    test_case(20, 65, 0, 0.5f, 2.0f, 3);
    test_case(33, 1003, 0, 0.9f, 1.0f, 4);
    test_case(16, 37, 0, 1.0f, 4.0f, 6);
    test_case(20, 65, 8, 0.5f, 2.0f, 3);
    test_case(25, 500, 32, 0.8f, 1.5f, 5);
    test_case(8, 17, 17, 0.3f, 1.0f, 2);
    test_alpha0(50, 65);
    test_alpha0(31, 1001);
    test_topk_full(12, 130);
    test_select();
    test_refusals();
    slm_pool_free(pool1);
    slm_pool_free(pool2);
    return check_summary();
}
