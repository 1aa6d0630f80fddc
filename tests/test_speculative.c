/* Speculative sampling (sampler/speculative.h): the chain's distribution
 * against a double-precision softmax written here, and the acceptance
 * rule's defining property -- tokens proposed from q and passed through
 * the rule are distributed as p -- checked by a chi-square test over many
 * seeded trials, for dense drafts and for point-mass (prompt lookup) ones. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sampler/chain.h"
#include "sampler/rng.h"
#include "sampler/sampler.h"
#include "sampler/speculative.h"

#define NV 8

/* a categorical draw from dense q, independent of the code under test */
static int32_t draw_dense(const double *q, int n, slm_rng *r)
{
    double u = slm_rng_uniform(r), cum = 0.0;
    for (int i = 0; i < n; i++) {
        cum += q[i];
        if (u < cum) return i;
    }
    return n - 1;
}

/* candidates holding p (dense, double) over the ids where p > 0 */
static void make_cands(slm_cands *c, slm_cand *buf, const double *p, int n)
{
    size_t k = 0;
    for (int i = 0; i < n; i++)
        if (p[i] > 0) buf[k++] = (slm_cand){.id = i, .logit = (float)log(p[i]), .p = (float)p[i]};
    *c = (slm_cands){.data = buf, .n = k, .sorted = 0, .p_valid = 1, .identity = 0};
}

/* chi-square statistic of counts against p over n cells with p > 0, and
 * the count of draws falling where p = 0 */
static double chi2(const long *count, const double *p, int n, long total, long *outside)
{
    double x = 0.0;
    *outside = 0;
    for (int i = 0; i < n; i++) {
        if (p[i] > 0) {
            const double e = p[i] * (double)total;
            x += (count[i] - e) * (count[i] - e) / e;
        } else {
            *outside += count[i];
        }
    }
    return x;
}

/* Runs trials: x ~ q (or x fixed, q NULL), then the rule; returns the
 * chi-square of the emitted tokens against p and the acceptance rate. */
static double run_trials(const double *p, const double *qd, int32_t fixed_x, long trials,
                         double *acc_rate, long *outside)
{
    slm_cand buf[NV];
    slm_cands c;
    make_cands(&c, buf, p, NV);
    float qf[NV];
    for (int i = 0; i < NV; i++) qf[i] = qd ? (float)qd[i] : 0.0f;
    slm_rng draft, rule;
    slm_rng_seed(&draft, 7);
    slm_rng_seed(&rule, 11);
    long count[NV] = {0}, acc = 0;
    for (long t = 0; t < trials; t++) {
        int32_t x = qd ? draw_dense(qd, NV, &draft) : fixed_x, id = -1;
        int a = -1;
        slm_error err;
        if (slm_spec_verify(&c, qd ? qf : NULL, NV, x, &rule, &id, &a, &err) != SLM_OK) {
            printf("FAIL: verify: %s\n", err.msg);
            failed++;
            return INFINITY;
        }
        acc += a;
        count[id]++;
    }
    *acc_rate = (double)acc / (double)trials;
    return chi2(count, p, NV, trials, outside);
}

static void test_rule(void)
{
    /* 99.9th percentiles of chi-square: 7 dof 24.32, 5 dof 20.52, 2 dof 13.82 */
    const long N = 200000;
    const double p[NV] = {0.30, 0.05, 0.20, 0.10, 0.15, 0.05, 0.10, 0.05};
    const double q[NV] = {0.05, 0.40, 0.10, 0.10, 0.05, 0.20, 0.05, 0.05};
    double acc, overlap = 0.0;
    long outside;
    for (int i = 0; i < NV; i++) overlap += fmin(p[i], q[i]);
    double x = run_trials(p, q, 0, N, &acc, &outside);
    CHECK(x < 24.32, "dense draft: chi-square %.2f over 7 dof (emitted tokens are not distributed as p)", x);
    CHECK(fabs(acc - overlap) < 0.005, "dense draft: acceptance %.4f, expected sum min(p, q) = %.4f", acc, overlap);
    printf("dense draft: chi2 %.2f (7 dof), acceptance %.4f (expected %.4f)\n", x, acc, overlap);

    /* the target's stages cut its support (p = 0 on ids 5..7): the draft
     * still proposes them, and they must never come out */
    const double pt[NV] = {0.50, 0.20, 0.15, 0.10, 0.05, 0, 0, 0};
    overlap = 0.0;
    for (int i = 0; i < NV; i++) overlap += fmin(pt[i], q[i]);
    x = run_trials(pt, q, 0, N, &acc, &outside);
    CHECK(x < 18.47 && outside == 0, "truncated target: chi-square %.2f over 4 dof, %ld draws outside", x,
          outside);
    CHECK(fabs(acc - overlap) < 0.005, "truncated target: acceptance %.4f, expected %.4f", acc, overlap);

    /* point-mass drafts (prompt lookup): accepted with p(x), else p without x */
    for (int32_t fx = 0; fx < NV; fx += 5) {
        x = run_trials(p, NULL, fx, N, &acc, &outside);
        CHECK(x < 24.32, "point mass at %d: chi-square %.2f over 7 dof", fx, x);
        CHECK(fabs(acc - p[fx]) < 0.005, "point mass at %d: acceptance %.4f, expected p = %.4f", fx, acc, p[fx]);
    }
    /* a proposal outside p's support is always rejected */
    x = run_trials(pt, NULL, 6, N, &acc, &outside);
    CHECK(acc == 0.0 && outside == 0 && x < 18.47, "point mass outside the support: acceptance %.4f, chi2 %.2f",
          acc, x);

    /* p = q: everything is accepted */
    x = run_trials(q, q, 0, 20000, &acc, &outside);
    CHECK(acc == 1.0, "p = q: acceptance %.4f, expected 1", acc);
}

static void test_errors(void)
{
    const double p[NV] = {0.5, 0.5, 0, 0, 0, 0, 0, 0};
    slm_cand buf[NV];
    slm_cands c;
    make_cands(&c, buf, p, NV);
    float q[NV] = {1, 0, 0, 0, 0, 0, 0, 0};
    slm_rng r;
    slm_rng_seed(&r, 1);
    int32_t id;
    int a;
    slm_error err;
    CHECK(slm_spec_verify(&c, q, NV, NV, &r, &id, &a, &err) == SLM_ERANGE && strstr(err.msg, "out of range"),
          "x = n_vocab is refused");
    CHECK(slm_spec_verify(&c, q, NV, 1, &r, &id, &a, &err) == SLM_EINVAL && strstr(err.msg, "probability 0"),
          "x with q(x) = 0 is refused");
}

static slm_status keep_all(void *ud, int stage, slm_cands *c, slm_error *err)
{
    return SLM_OK;
}

/* slm_chain_dist: the stages but the selection, against top-k + softmax(l / t) */
static void test_chain_dist(void)
{
    const float l[NV] = {1.0f, 3.0f, -2.0f, 2.5f, 0.5f, 3.0f, -1.0f, 2.0f};
    slm_error err;
    slm_chain *ch = slm_chain_new(&err);
    slm_chain_add_top_k(ch, 4, &err);
    slm_chain_add_temp(ch, 0.7f, &err);
    slm_chain_add_dist(ch, 3, &err);
    slm_cands c;
    CHECK(slm_chain_dist(ch, l, NV, &c, &err) == SLM_OK, "dist: %s", err.msg);
    /* the 4 best: ids 1, 5 (3.0), 3 (2.5), 7 (2.0) */
    const int kept[4] = {1, 5, 3, 7};
    double ref[NV] = {0}, sum = 0.0;
    for (int i = 0; i < 4; i++) sum += (ref[kept[i]] = exp((l[kept[i]] - 3.0) / 0.7));
    for (int i = 0; i < 4; i++) ref[kept[i]] /= sum;
    float dense[NV];
    slm_spec_dense(&c, dense, NV);
    double worst = 0.0;
    for (int i = 0; i < NV; i++) worst = fmax(worst, fabs(dense[i] - ref[i]));
    CHECK(c.n == 4 && worst < 1e-6, "dist: %zu candidates, max |p - ref| %.3g", c.n, worst);
    CHECK(!slm_chain_is_greedy(ch), "a dist chain is not greedy");
    slm_chain_free(ch);

    /* greedy: the point mass at the argmax (ties to the lower id: 1) */
    ch = slm_chain_new(&err);
    slm_chain_add_temp(ch, 0.5f, &err);
    slm_chain_add_greedy(ch, &err);
    CHECK(slm_chain_dist(ch, l, NV, &c, &err) == SLM_OK && c.n == 1 && c.data[0].id == 1 &&
              c.data[0].p == 1.0f, "greedy dist is the point mass at id 1");
    CHECK(slm_chain_is_greedy(ch), "a greedy chain is greedy");
    slm_chain_free(ch);

    /* Lua (custom) stages are refused, naming the stage */
    ch = slm_chain_new(&err);
    slm_chain_add_custom(ch, "mystage", keep_all, NULL, &err);
    slm_chain_add_dist(ch, 1, &err);
    CHECK(slm_chain_dist(ch, l, NV, &c, &err) == SLM_EINVAL && strstr(err.msg, "mystage"),
          "custom stages are refused");
    slm_chain_free(ch);
}

int main(void)
{
    test_chain_dist();
    test_rule();
    test_errors();
    return check_summary();
}
