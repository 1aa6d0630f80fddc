/* Knowledge distillation loss (see distill.h for the formulas). Rows are
 * split over the pool by (ith, nth); each thread owns two scratch rows
 * (the student's tempered exponentials q and the teacher's pt). The
 * scalar passes here are the reference the AVX2 twins (distill_avx2.c) are
 * tested against (tests/test_distill.c). */
#include "distill.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/vecdot.h"
#include "grad.h"

/* below this many exponentials per thread a wake-up costs more than it saves */
#define DISTILL_MIN_EXPS_PER_THREAD (8 * 1024)

static void distill_split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

static int distill_threads(slm_pool **pool, double work)
{
    if (slm_pool_busy(*pool)) *pool = NULL;   /* called from a pool job: serial */
    const int nth = slm_pool_size(*pool);
    const double k = work / DISTILL_MIN_EXPS_PER_THREAD;
    return k < 1 ? 1 : k < nth ? (int)k : nth;
}

/* --- scalar passes (the reference of the AVX2 ones) ---------------------------- */

static double tempered_scalar(const float *z, int64_t V, float invT, float *q, float *mx)
{
    float m = -INFINITY;
    for (int64_t i = 0; i < V; i++) m = z[i] > m ? z[i] : m;
    double s = 0;
    for (int64_t i = 0; i < V; i++) {
        q[i] = expf((z[i] - m) * invT);
        s += q[i];
    }
    *mx = m;
    return s;
}

/* q, pt and sum_i pt_i (b_i - a_i), a_i = (zs_i - ms) / T, b_i = (zt_i - mt) / T */
static double pair_scalar(const float *zs, const float *zt, int64_t V, float invT, float *q, float *pt, double *sq,
                          double *st)
{
    float ms, mt;
    *sq = tempered_scalar(zs, V, invT, q, &ms);
    *st = tempered_scalar(zt, V, invT, pt, &mt);
    double cross = 0;
    for (int64_t i = 0; i < V; i++) {
        const float a = (zs[i] - ms) * invT, b = (zt[i] - mt) * invT;
        cross += (double)pt[i] * ((double)b - (double)a);
    }
    return cross;
}

static void add_scalar(float *x, const float *q, float kq, const float *pt, float kt, int64_t V)
{
    if (pt)
        for (int64_t i = 0; i < V; i++) x[i] += kq * q[i] - kt * pt[i];
    else
        for (int64_t i = 0; i < V; i++) x[i] += kq * q[i];
}

/* --- rows ----------------------------------------------------------------------- */

typedef struct distill_ctx {
    float *logits;
    const int32_t *targets;
    const float *teacher;            /* dense (rows, V), or NULL */
    const float *vals;               /* top-k (rows, k) */
    const int32_t *ids;
    int64_t rows, V, k;
    slm_distill_opts o;
    float *scratch;                  /* per thread: V + max(V, k) floats */
    int64_t scratch_per;
    double *loss, *ce, *kl;          /* (rows) */
    int avx2;
} distill_ctx;

/* One row: KL first (it reads the logits), then the CE row overwrites
 * them with (1 - alpha) scale (p - onehot), then the soft gradient
 * alpha T scale (q - p_t) is added. With alpha = 0 only the CE row runs. */
static void distill_row(const distill_ctx *c, int64_t r, float *q, float *pt)
{
    const int64_t V = c->V;
    float *x = c->logits + r * V;
    const int32_t t = c->targets[r];
    const float alpha = c->o.alpha, T = c->o.temperature, invT = 1.0f / T;
    if (alpha == 0.0f || t < 0) {
        c->ce[r] = slm_grad_xent_row(x, V, t, c->o.scale, c->avx2);
        c->loss[r] = c->ce[r];
        c->kl[r] = 0;
        return;
    }
    double sq, st, cross;
    if (c->teacher) {
        const float *zt = c->teacher + r * V;
#if defined(__x86_64__)
        if (c->avx2) cross = slm_distill_pair_avx2(x, zt, V, invT, q, pt, &sq, &st);
        else
#endif
            cross = pair_scalar(x, zt, V, invT, q, pt, &sq, &st);
    } else {
        float ms;
#if defined(__x86_64__)
        if (c->avx2) sq = slm_distill_tempered_avx2(x, V, invT, q, &ms);
        else
#endif
            sq = tempered_scalar(x, V, invT, q, &ms);
        /* the teacher's k values; the student's a_i at the teacher's ids */
        const float *v = c->vals + r * c->k;
        const int32_t *id = c->ids + r * c->k;
        float mt = -INFINITY;
        for (int64_t j = 0; j < c->k; j++) mt = v[j] > mt ? v[j] : mt;
        st = 0;
        cross = 0;
        for (int64_t j = 0; j < c->k; j++) {
            const float b = (v[j] - mt) * invT, a = (x[id[j]] - ms) * invT;
            pt[j] = expf(b);
            st += pt[j];
            cross += (double)pt[j] * ((double)b - (double)a);
        }
    }
    /* KL = sum_i (pt_i / st)(b_i - a_i) - log st + log sq: log p_t,i = b_i -
     * log st and log q_i = a_i - log sq, the p_t summing to 1 */
    const double kl = cross / st - log(st) + log(sq);
    const double ce = slm_grad_xent_row(x, V, t, (1.0f - alpha) * c->o.scale, c->avx2);
    c->ce[r] = ce;
    c->kl[r] = kl;
    c->loss[r] = (double)alpha * T * T * kl + (1.0 - alpha) * ce;
    /* alpha T scale (q_i / sq - pt_i / st) */
    const double g = (double)alpha * T * c->o.scale;
    const float kq = (float)(g / sq), kt = (float)(g / st);
    if (c->teacher) {
#if defined(__x86_64__)
        if (c->avx2) {
            slm_distill_add_avx2(x, q, kq, pt, kt, V);
            return;
        }
#endif
        add_scalar(x, q, kq, pt, kt, V);
    } else {
#if defined(__x86_64__)
        if (c->avx2) slm_distill_add_avx2(x, q, kq, NULL, 0, V);
        else
#endif
            add_scalar(x, q, kq, NULL, 0, V);
        const int32_t *id = c->ids + r * c->k;
        for (int64_t j = 0; j < c->k; j++) x[id[j]] -= kt * pt[j];
    }
}

static void distill_task(void *vc, int ith, int nth)
{
    const distill_ctx *c = vc;
    float *q = c->scratch + (int64_t)ith * c->scratch_per, *pt = q + c->V;
    int64_t r0, r1;
    distill_split(c->rows, ith, nth, &r0, &r1);
    for (int64_t r = r0; r < r1; r++) distill_row(c, r, q, pt);
}

static slm_status check_opts(const slm_distill_opts *o, int64_t V, slm_error *err)
{
    if (V < 1) return slm_error_set(err, SLM_EINVAL, "distill: %lld logits per row", (long long)V);
    if (!(o->alpha >= 0.0f && o->alpha <= 1.0f))
        return slm_error_set(err, SLM_EINVAL, "distill: alpha must be in [0, 1], got %g", (double)o->alpha);
    if (!(o->temperature > 0.0f) || isinf(o->temperature))
        return slm_error_set(err, SLM_EINVAL, "distill: temperature must be a positive number, got %g",
                             (double)o->temperature);
    return SLM_OK;
}

static slm_status check_targets(const int32_t *targets, int64_t rows, int64_t V, slm_error *err)
{
    for (int64_t r = 0; r < rows; r++)
        if (targets[r] >= V)
            return slm_error_set(err, SLM_ERANGE, "distill: target %d (row %lld) outside 0..%lld", (int)targets[r],
                                 (long long)r, (long long)V - 1);
    return SLM_OK;
}

static slm_status distill_run(slm_pool *pool, distill_ctx *c, slm_distill_sums *out, slm_error *err)
{
    const int nth = distill_threads(&pool, (double)c->rows * c->V * (c->o.alpha > 0 ? 3 : 1));
    const int64_t rows = c->rows;
    c->scratch_per = c->V + (c->k > c->V ? c->k : c->V);
    /* (3 rows doubles + nth scratch rows): V and k were checked by the caller */
    double *d = malloc((size_t)rows * 3 * sizeof(double));
    float *s = c->o.alpha > 0 ? malloc((size_t)nth * (size_t)c->scratch_per * sizeof(float)) : NULL;
    if (!d || (c->o.alpha > 0 && !s)) {
        free(d);
        free(s);
        return slm_error_set(err, SLM_ENOMEM, "distill: no memory for %lld rows of scratch", (long long)rows);
    }
    c->loss = d;
    c->ce = d + rows;
    c->kl = d + 2 * rows;
    c->scratch = s;
    c->avx2 = slm_kernels_use_avx2();
    slm_pool_run(pool, nth, distill_task, c);
    out->loss = out->ce = out->kl = 0;
    for (int64_t r = 0; r < rows; r++) {
        out->loss += c->loss[r];
        out->ce += c->ce[r];
        out->kl += c->kl[r];
    }
    free(d);
    free(s);
    return SLM_OK;
}

slm_status slm_distill_dense(slm_pool *pool, float *logits, const int32_t *targets, const float *teacher,
                             int64_t rows, int64_t V, const slm_distill_opts *o, slm_distill_sums *out,
                             slm_error *err)
{
    memset(out, 0, sizeof *out);
    slm_status st = check_opts(o, V, err);
    if (st != SLM_OK || rows < 1) return st;
    if ((st = check_targets(targets, rows, V, err)) != SLM_OK) return st;
    distill_ctx c = {.logits = logits, .targets = targets, .teacher = teacher, .rows = rows, .V = V, .k = 0, .o = *o};
    return distill_run(pool, &c, out, err);
}

slm_status slm_distill_topk(slm_pool *pool, float *logits, const int32_t *targets, const float *vals,
                            const int32_t *ids, int64_t k, int64_t rows, int64_t V, const slm_distill_opts *o,
                            slm_distill_sums *out, slm_error *err)
{
    memset(out, 0, sizeof *out);
    slm_status st = check_opts(o, V, err);
    if (st != SLM_OK || rows < 1) return st;
    if (k < 1 || k > V)
        return slm_error_set(err, SLM_EINVAL, "distill: top-k of %lld entries with %lld logits per row", (long long)k,
                             (long long)V);
    if ((st = check_targets(targets, rows, V, err)) != SLM_OK) return st;
    /* the teacher may come from a file: ids in range and distinct, values
     * finite, before anything is written */
    unsigned char *seen = calloc((size_t)V, 1);
    if (!seen) return slm_error_set(err, SLM_ENOMEM, "distill: no memory for %lld flags", (long long)V);
    for (int64_t r = 0; r < rows && st == SLM_OK; r++) {
        const int32_t *id = ids + r * k;
        const float *v = vals + r * k;
        int64_t j = 0;
        for (; j < k && st == SLM_OK; j++) {
            if (id[j] < 0 || id[j] >= V)
                st = slm_error_set(err, SLM_ERANGE, "distill: teacher id %d (row %lld, entry %lld) outside 0..%lld",
                                   (int)id[j], (long long)r, (long long)j, (long long)V - 1);
            else if (seen[id[j]])
                st = slm_error_set(err, SLM_EINVAL, "distill: teacher id %d repeated in row %lld", (int)id[j],
                                   (long long)r);
            else if (!isfinite(v[j]))
                st = slm_error_set(err, SLM_EINVAL, "distill: teacher value %g (row %lld, entry %lld) is not finite",
                                   (double)v[j], (long long)r, (long long)j);
            else seen[id[j]] = 1;
        }
        for (int64_t i = 0; i < j; i++)
            if (id[i] >= 0 && id[i] < V) seen[id[i]] = 0;
    }
    free(seen);
    if (st != SLM_OK) return st;
    distill_ctx c = {.logits = logits, .targets = targets, .vals = vals, .ids = ids, .rows = rows, .V = V, .k = k,
                     .o = *o};
    return distill_run(pool, &c, out, err);
}

/* --- top-k selection ---------------------------------------------------------------- */

typedef struct select_ctx {
    const float *logits;
    float *vals;
    int32_t *ids;
    int64_t rows, V, k;
    int64_t *bad;      /* per thread: the first row holding a NaN, or -1 */
} select_ctx;

/* A sorted insertion into the row's k slots (largest first; an equal value
 * does not displace an earlier, lower id): O(V) compares when few values
 * enter, as a teacher's logits after the first k mostly do not. */
static int select_row(const float *z, int64_t V, int64_t k, float *v, int32_t *id)
{
    int64_t n = 0;
    for (int64_t i = 0; i < V; i++) {
        const float x = z[i];
        if (x != x) return 0;
        if (n == k && !(x > v[k - 1])) continue;
        int64_t j = n < k ? n++ : k - 1;
        while (j > 0 && x > v[j - 1]) {
            v[j] = v[j - 1];
            id[j] = id[j - 1];
            j--;
        }
        v[j] = x;
        id[j] = (int32_t)i;
    }
    return 1;
}

static void select_task(void *vc, int ith, int nth)
{
    const select_ctx *c = vc;
    int64_t r0, r1;
    distill_split(c->rows, ith, nth, &r0, &r1);
    c->bad[ith] = -1;
    for (int64_t r = r0; r < r1; r++)
        if (!select_row(c->logits + r * c->V, c->V, c->k, c->vals + r * c->k, c->ids + r * c->k)) {
            c->bad[ith] = r;
            return;
        }
}

slm_status slm_distill_select_topk(slm_pool *pool, const float *logits, int64_t rows, int64_t V, int64_t k,
                                   float *vals, int32_t *ids, slm_error *err)
{
    if (k < 1 || k > V)
        return slm_error_set(err, SLM_EINVAL, "topk: k = %lld outside 1..%lld", (long long)k, (long long)V);
    if (rows < 1) return SLM_OK;
    int64_t bad[SLM_POOL_MAX_THREADS];
    const int nth = distill_threads(&pool, (double)rows * V / 4);
    select_ctx c = {logits, vals, ids, rows, V, k, bad};
    slm_pool_run(pool, nth, select_task, &c);
    for (int i = 0; i < nth; i++)
        if (bad[i] >= 0) return slm_error_set(err, SLM_EINVAL, "topk: row %lld holds a NaN", (long long)bad[i]);
    return SLM_OK;
}
