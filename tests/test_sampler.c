/* Samplers and chains, each stage against a plain double-precision
 * reference written here (sort everything, then apply the definition). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sampler/chain.h"
#include "sampler/rng.h"
#include "sampler/sampler.h"

static int passed, failed;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

/* Test data: an xorshift64 stream independent of the sampler's RNG. */
static uint64_t xs = 88172645463325252u;
static double frand(void)
{
    xs ^= xs << 13;
    xs ^= xs >> 7;
    xs ^= xs << 17;
    return (double)(xs >> 11) * 0x1.0p-53;
}

static void random_logits(float *l, size_t n, double scale)
{
    for (size_t i = 0; i < n; i++) l[i] = (float)((frand() * 2.0 - 1.0) * scale);
}

/* ---- the reference: indices sorted best first, probabilities in double */

static const float *ref_logits;
static int ref_cmp(const void *a, const void *b)
{
    int i = *(const int *)a, j = *(const int *)b;
    if (ref_logits[i] != ref_logits[j]) return ref_logits[i] > ref_logits[j] ? -1 : 1;
    return i - j;
}

static int *ref_order(const float *l, size_t n)
{
    int *o = malloc(n * sizeof *o);
    for (size_t i = 0; i < n; i++) o[i] = (int)i;
    ref_logits = l;
    qsort(o, n, sizeof *o, ref_cmp);
    return o;
}

static double *ref_softmax(const float *l, size_t n)
{
    double *p = malloc(n * sizeof *p), max = -INFINITY, sum = 0;
    for (size_t i = 0; i < n; i++) if (l[i] > max) max = l[i];
    for (size_t i = 0; i < n; i++) sum += (p[i] = exp((double)l[i] - max));
    for (size_t i = 0; i < n; i++) p[i] /= sum;
    return p;
}

/* kept[id] = 1 for the ids in c */
static char *kept_set(const slm_cands *c, size_t n_vocab)
{
    char *k = calloc(n_vocab, 1);
    for (size_t i = 0; i < c->n; i++) k[c->data[i].id] = 1;
    return k;
}

/* ---- RNG ----------------------------------------------------------------- */

static void test_rng(void)
{
    /* splitmix64 from 0: the published first outputs */
    uint64_t x = 0;
    uint64_t a = slm_rng_splitmix64(&x), b = slm_rng_splitmix64(&x);
    CHECK(a == 0xe220a8397b1dcdafu && b == 0x6e789e6aa1b965f4u,
          "splitmix64(0) = %016llx %016llx", (unsigned long long)a, (unsigned long long)b);
    /* xoshiro256** seeded with 42: pinned so that a seed means the same
     * stream forever (a change here changes every seeded generation) */
    static const uint64_t pin[4] = {0x15780b2e0c2ec716u, 0x6104d9866d113a7eu,
                                    0xae17533239e499a1u, 0xecb8ad4703b360a1u};
    slm_rng r;
    slm_rng_seed(&r, 42);
    int same = 1;
    for (int i = 0; i < 4; i++) {
        uint64_t v = slm_rng_next(&r);
        if (v != pin[i]) { same = 0; printf("xoshiro(42)[%d] = 0x%016llxu\n", i, (unsigned long long)v); }
    }
    CHECK(same, "xoshiro256** stream for seed 42 changed");
    double lo = 1, hi = 0, mean = 0;
    for (int i = 0; i < 100000; i++) {
        double u = slm_rng_uniform(&r);
        if (u < lo) lo = u;
        if (u > hi) hi = u;
        mean += u / 100000;
    }
    CHECK(lo >= 0 && hi < 1 && fabs(mean - 0.5) < 0.005, "uniform range/mean %g %g %g", lo, hi, mean);
}

/* ---- stages ---------------------------------------------------------------- */

static void test_greedy_temp(void)
{
    slm_error err;
    slm_cand buf[8];
    slm_cands c;
    float l[8] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f, -INFINITY, 2.0f, 0.0f};
    int32_t id = -1;
    slm_cands_init(&c, buf, l, 8, &err);
    CHECK(slm_sample_greedy(&c, &id, &err) == SLM_OK && id == 1, "greedy ties -> lowest id (%d)", id);

    float big[1000];
    random_logits(big, 1000, 5);
    slm_cand bb[1000];
    slm_cands_init(&c, bb, big, 1000, &err);
    slm_sample_temp(&c, 0.7f, &err);
    int exact = 1;
    for (int i = 0; i < 1000; i++) exact &= c.data[i].logit == big[i] / 0.7f && c.data[i].id == i;
    CHECK(exact && c.n == 1000, "temp divides every logit exactly");
    slm_cands_init(&c, bb, big, 1000, &err);
    int *o = ref_order(big, 1000);
    CHECK(slm_sample_temp(&c, 0.0f, &err) == SLM_OK && c.n == 1 && c.data[0].id == o[0],
          "temp 0 keeps only the argmax");
    free(o);
    CHECK(slm_sample_temp(&c, -1.0f, &err) == SLM_EINVAL && strstr(err.msg, ">= 0"),
          "temp < 0 is an error: %s", err.msg);

    float banned[3] = {-INFINITY, -INFINITY, -INFINITY};
    slm_cands_init(&c, buf, banned, 3, &err);
    CHECK(slm_sample_greedy(&c, &id, &err) == SLM_EINVAL && strstr(err.msg, "-inf"),
          "all banned: %s", err.msg);
    float nan[2] = {0.0f, NAN};
    CHECK(slm_cands_init(&c, buf, nan, 2, &err) == SLM_EINVAL && strstr(err.msg, "logit 1 is NaN"),
          "NaN logits rejected: %s", err.msg);
}

static void test_top_k(void)
{
    enum { N = 5000 };
    static float l[N];
    static slm_cand buf[N];
    slm_error err;
    int ok_set = 1, ok_sorted = 1;
    for (int trial = 0; trial < 20; trial++) {
        random_logits(l, N, 3);
        if (trial % 4 == 0)   /* many ties */
            for (int i = 0; i < N; i++) l[i] = floorf(l[i]);
        /* k <= n/16 takes the heap path, larger k quickselect */
        int k = trial % 2 ? 1 + (int)(frand() * 300) : 400 + (int)(frand() * 4000);
        slm_cands c;
        slm_cands_init(&c, buf, l, N, &err);
        slm_sample_top_k(&c, k, &err);
        int *o = ref_order(l, N);
        ok_set &= c.n == (size_t)k;
        for (int i = 0; i < k && i < (int)c.n; i++) ok_sorted &= c.data[i].id == o[i];
        free(o);
    }
    CHECK(ok_set && ok_sorted, "top_k keeps exactly the k best, best first (ties to lower ids)");

    /* over many seeded draws a top_k -> dist chain never leaves the top k */
    slm_chain *ch = slm_chain_new(&err);
    slm_chain_add_top_k(ch, 10, &err);
    slm_chain_add_temp(ch, 3.0f, &err);     /* flatten so that all 10 get drawn */
    slm_chain_add_dist(ch, 7, &err);
    random_logits(l, 1000, 2);
    int *o = ref_order(l, 1000);
    char top[1000] = {0};
    for (int i = 0; i < 10; i++) top[o[i]] = 1;
    int outside = 0, seen[1000] = {0}, distinct = 0;
    for (int d = 0; d < 5000; d++) {
        int32_t id;
        if (slm_chain_sample(ch, l, 1000, &id, &err) != SLM_OK) { outside++; continue; }
        outside += !top[id];
        distinct += !seen[id]++;
    }
    CHECK(outside == 0 && distinct == 10, "5000 top_k(10) draws: %d outside, %d distinct",
          outside, distinct);
    free(o);
    slm_chain_free(ch);
    slm_cands c;
    float two[2] = {0, 1};
    slm_cands_init(&c, buf, two, 2, &err);
    CHECK(slm_sample_top_k(&c, -1, &err) == SLM_EINVAL, "top_k < 0 is an error");
    CHECK(slm_sample_top_k(&c, 0, &err) == SLM_OK && c.n == 2, "top_k 0 disables");
}

static void test_top_p(void)
{
    enum { N = 3000 };
    static float l[N];
    static slm_cand buf[N];
    slm_error err;
    int bad = 0, checked = 0;
    for (int trial = 0; trial < 40; trial++) {
        random_logits(l, N, trial % 2 ? 8 : 2);    /* peaked and flat */
        float p = (float)(0.05 + 0.9 * frand());
        double *pr = ref_softmax(l, N);
        int *o = ref_order(l, N);
        size_t m = 0;
        double cum = 0;
        while (m < N && cum < p) cum += pr[o[m++]];
        /* skip the rare case where float rounding could decide */
        if (fabs(cum - p) < 1e-5 || fabs(cum - pr[o[m - 1]] - p) < 1e-5) { free(pr); free(o); continue; }
        slm_cands c;
        slm_cands_init(&c, buf, l, N, &err);
        if (trial % 3 == 0) slm_cands_sort(&c);    /* both paths: sorted and not */
        slm_sample_top_p(&c, p, 1, &err);
        checked++;
        char *k = kept_set(&c, N);
        int ok = c.n == m && (c.sorted || trial % 3 != 0);
        for (size_t i = 0; ok && i < m; i++) ok = k[o[i]];
        free(k);
        if (!ok) { bad++; printf("top_p %g: kept %zu, reference %zu\n", p, c.n, m); }
        free(pr);
        free(o);
    }
    CHECK(bad == 0 && checked > 30, "top_p keeps the smallest best-first set with mass >= p "
          "(%d of %d cases differ)", bad, checked);
    /* min_keep wins over the mass */
    float peaked[5] = {10, 0, 0, 0, 0};
    slm_cands c;
    slm_cands_init(&c, buf, peaked, 5, &err);
    slm_sample_top_p(&c, 0.5f, 3, &err);
    char *k3 = kept_set(&c, 5);
    CHECK(c.n == 3 && k3[0] && k3[1] && k3[2], "top_p min_keep 3 (%zu)", c.n);
    free(k3);
    CHECK(slm_sample_top_p(&c, 1.5f, 1, &err) == SLM_EINVAL && strstr(err.msg, "(0, 1]"),
          "top_p > 1 is an error: %s", err.msg);
    CHECK(slm_sample_top_p(&c, 0.0f, 1, &err) == SLM_EINVAL, "top_p 0 is an error");
}

static void test_min_p(void)
{
    enum { N = 4000 };
    static float l[N];
    static slm_cand buf[N];
    slm_error err;
    int bad = 0;
    for (int trial = 0; trial < 20; trial++) {
        random_logits(l, N, 6);
        float p = (float)(0.01 + 0.5 * frand());
        double *pr = ref_softmax(l, N), pmax = 0;
        for (int i = 0; i < N; i++) if (pr[i] > pmax) pmax = pr[i];
        slm_cands c;
        slm_cands_init(&c, buf, l, N, &err);
        slm_sample_min_p(&c, p, 1, &err);
        char *k = kept_set(&c, N);
        for (int i = 0; i < N; i++) {
            double r = pr[i] / (pmax * p);   /* kept iff r >= 1 */
            if (fabs(r - 1) < 1e-5) continue;
            if ((r >= 1) != (k[i] == 1)) bad++;
        }
        /* order is kept: ids increase along the unsorted set */
        for (size_t i = 1; i < c.n; i++) if (c.data[i].id <= c.data[i - 1].id) bad++;
        free(k);
        free(pr);
    }
    CHECK(bad == 0, "min_p keeps exactly p_i >= p * p_max, in order (%d wrong)", bad);
    float flat[6] = {5, 0, 0, 0, 0, 0};
    slm_cands c;
    slm_cands_init(&c, buf, flat, 6, &err);
    slm_sample_min_p(&c, 0.5f, 2, &err);
    CHECK(c.n == 2 && c.data[0].id == 0 && c.data[1].id == 1, "min_p min_keep 2");
}

static void test_typical(void)
{
    enum { N = 2000 };
    static float l[N];
    static slm_cand buf[N], scratch[N];
    slm_error err;
    int bad = 0, checked = 0;
    for (int trial = 0; trial < 20; trial++) {
        random_logits(l, N, trial % 2 ? 6 : 2);
        float p = (float)(0.2 + 0.75 * frand());
        double *pr = ref_softmax(l, N), h = 0;
        for (int i = 0; i < N; i++) h -= pr[i] * log(pr[i]);
        /* reference: order by |-log p - H| ascending, smallest prefix with mass >= p */
        int *o = malloc(N * sizeof *o);
        float *score = malloc(N * sizeof *score);
        for (int i = 0; i < N; i++) { o[i] = i; score[i] = (float)-fabs(-log(pr[i]) - h); }
        ref_logits = score;
        qsort(o, N, sizeof *o, ref_cmp);
        size_t m = 0;
        double cum = 0;
        while (m < N && cum < p) cum += pr[o[m++]];
        if (fabs(cum - p) < 1e-5 || fabs(cum - pr[o[m - 1]] - p) < 1e-5) { free(pr); free(o); free(score); continue; }
        slm_cands c;
        slm_cands_init(&c, buf, l, N, &err);
        slm_sample_typical(&c, p, 1, scratch, &err);
        checked++;
        char *k = kept_set(&c, N);
        int ok = c.n == m;
        for (size_t i = 0; ok && i < m; i++) ok = k[o[i]];
        for (size_t i = 0; ok && i < m; i++) ok = c.data[i].logit == l[c.data[i].id];
        free(k);
        bad += !ok;
        free(pr);
        free(o);
        free(score);
    }
    CHECK(bad == 0 && checked > 15, "typical keeps the most typical prefix with mass >= p "
          "(%d of %d differ)", bad, checked);
}

static float penalized(float x, int count, const slm_penalty *pen)
{
    if (count == 0) return x;
    x = x > 0 ? x / pen->repeat : x * pen->repeat;
    return x - ((float)count * pen->frequency + pen->presence);
}

static void test_penalties(void)
{
    enum { N = 500 };
    static float l[N];
    static slm_cand buf[N];
    static int32_t counts[N];
    slm_error err;
    int32_t hist[40];
    for (int i = 0; i < 40; i++) hist[i] = (int32_t)(frand() * 30);   /* many repeats */
    hist[39] = 499;
    slm_penalty pen = {32, 1.3f, 0.25f, 0.5f};
    /* count over the last 32 only */
    int cnt[N] = {0};
    for (int i = 8; i < 40; i++) cnt[hist[i]]++;
    for (int pass = 0; pass < 2; pass++) {
        random_logits(l, N, 4);
        slm_cands c;
        slm_cands_init(&c, buf, l, N, &err);
        if (pass == 1) slm_sample_top_k(&c, 300, &err);   /* the non-identity path */
        slm_sample_penalties(&c, &pen, hist, 40, counts, N, &err);
        int exact = 1, touched = 0;
        for (size_t i = 0; i < c.n; i++) {
            int id = c.data[i].id;
            exact &= c.data[i].logit == penalized(l[id], cnt[id], &pen);
            touched += c.data[i].logit != l[id];
        }
        int zero = 1;
        for (int i = 0; i < N; i++) zero &= counts[i] == 0;
        CHECK(exact && zero && touched > 5, "penalties (%s path) change exactly the penalized "
              "logits by the formula (%d touched)", pass ? "subset" : "identity", touched);
    }
}

static void test_logit_bias(void)
{
    slm_error err;
    slm_chain *ch = slm_chain_new(&err);
    int32_t ids[3] = {2, 5, 2};
    float bias[3] = {1.5f, -INFINITY, 0.25f};
    CHECK(slm_chain_add_logit_bias(ch, ids, bias, 3, &err) == SLM_OK, "add logit_bias");
    slm_chain_add_temp(ch, 5.0f, &err);
    slm_chain_add_dist(ch, 3, &err);
    float l[8] = {0, 0, 0, 0, 0, 10, 0, 0};
    int five = 0;
    for (int i = 0; i < 2000; i++) {
        int32_t id;
        slm_chain_sample(ch, l, 8, &id, &err);
        five += id == 5;
    }
    CHECK(five == 0, "a -inf bias bans the token (drawn %d times)", five);
    char d[256];
    slm_chain_describe(ch, d, sizeof d);
    CHECK(strcmp(d, "logit_bias(2=1.75, 5=-inf) -> temp(5) -> dist(seed=3)") == 0,
          "describe: %s", d);
    float small[4] = {0};
    int32_t id;
    CHECK(slm_chain_sample(ch, small, 4, &id, &err) == SLM_ERANGE && strstr(err.msg, "id 5"),
          "bias id past the vocabulary: %s", err.msg);
    slm_chain_free(ch);
}

/* ---- dist ------------------------------------------------------------------ */

static void test_dist(void)
{
    enum { V = 8, DRAWS = 20000 };
    float l[V] = {1.0f, 0.5f, 2.0f, -1.0f, 0.0f, 1.5f, -0.5f, 0.25f};
    double *pr = ref_softmax(l, V);
    slm_error err;
    slm_chain *ch = slm_chain_new(&err);
    slm_chain_add_dist(ch, 1234, &err);
    int n[V] = {0};
    for (int i = 0; i < DRAWS; i++) {
        int32_t id;
        slm_chain_sample(ch, l, V, &id, &err);
        n[id]++;
    }
    double chi2 = 0;
    for (int i = 0; i < V; i++) {
        double e = DRAWS * pr[i];
        chi2 += (n[i] - e) * (n[i] - e) / e;
    }
    /* 7 degrees of freedom: P(chi2 > 24.32) = 0.001 */
    CHECK(chi2 < 24.32, "dist frequencies match softmax: chi2 = %.2f (df 7, bound 24.32)", chi2);
    printf("dist: chi2 = %.3f over %d draws, vocab %d\n", chi2, DRAWS, V);
    free(pr);

    /* same seed -> same ids; reset replays; another seed differs */
    float big[300];
    random_logits(big, 300, 1);
    int32_t a[64], b[64], c[64];
    slm_chain_reset(ch);
    for (int i = 0; i < 64; i++) slm_chain_sample(ch, big, 300, &a[i], &err);
    slm_chain_reset(ch);
    for (int i = 0; i < 64; i++) slm_chain_sample(ch, big, 300, &b[i], &err);
    slm_chain *ch2 = slm_chain_new(&err);
    slm_chain_add_dist(ch2, 1235, &err);
    for (int i = 0; i < 64; i++) slm_chain_sample(ch2, big, 300, &c[i], &err);
    CHECK(memcmp(a, b, sizeof a) == 0, "same seed, same ids");
    CHECK(memcmp(a, c, sizeof a) != 0, "different seeds, different ids");
    slm_chain_free(ch);
    slm_chain_free(ch2);
}

/* ---- chains ------------------------------------------------------------------ */

static slm_status halve(void *ud, int stage, slm_cands *c, slm_error *err)
{
    *(int *)ud = stage;
    c->n = (c->n + 1) / 2;
    c->identity = 0;
    c->p_valid = 0;
    return SLM_OK;
}

static void test_chain(void)
{
    slm_error err;
    slm_chain *ch = slm_chain_new(&err);
    slm_penalty pen = {4, 1.1f, 0, 0};
    int seen = -1;
    CHECK(slm_chain_add_penalties(ch, &pen, &err) == SLM_OK, "penalties");
    CHECK(slm_chain_add_top_k(ch, 8, &err) == SLM_OK, "top_k");
    CHECK(slm_chain_add_custom(ch, "halve", halve, &seen, &err) == SLM_OK, "custom");
    CHECK(slm_chain_add_top_p(ch, 2.0f, 1, &err) == SLM_EINVAL && strstr(err.msg, "top_p"),
          "bad top_p at construction: %s", err.msg);
    CHECK(slm_chain_add_temp(ch, -0.5f, &err) == SLM_EINVAL, "bad temp at construction");
    int32_t id;
    float l[100];
    random_logits(l, 100, 1);
    CHECK(slm_chain_sample(ch, l, 100, &id, &err) == SLM_EINVAL && strstr(err.msg, "must end"),
          "no selection: %s", err.msg);
    slm_chain_add_greedy(ch, &err);
    CHECK(slm_chain_add_temp(ch, 1, &err) == SLM_EINVAL && strstr(err.msg, "last stage"),
          "nothing after a selection: %s", err.msg);
    int *o = ref_order(l, 100);
    CHECK(slm_chain_sample(ch, l, 100, &id, &err) == SLM_OK && id == o[0] && seen == 2,
          "chain with a custom stage");
    free(o);
    char d[256];
    slm_chain_describe(ch, d, sizeof d);
    CHECK(strcmp(d, "penalties(last_n=4, repeat=1.1, frequency=0, presence=0) -> top_k(8) -> "
                    "halve -> greedy") == 0, "describe: %s", d);
    CHECK(slm_chain_accept(ch, 100, &err) == SLM_ERANGE, "accept past the vocabulary");
    CHECK(slm_chain_accept(ch, -1, &err) == SLM_ERANGE, "accept a negative id");
    for (int i = 0; i < 10; i++) slm_chain_accept(ch, i, &err);
    const int32_t *h;
    size_t nh = slm_chain_history(ch, &h);
    CHECK(nh == 4 && h[0] == 6 && h[3] == 9, "history keeps the last 4");
    /* resizing: a bigger and a smaller vocabulary in turn */
    float big[20000];
    random_logits(big, 20000, 1);
    CHECK(slm_chain_sample(ch, big, 20000, &id, &err) == SLM_OK, "grow to 20000");
    CHECK(slm_chain_sample(ch, l, 50, &id, &err) == SLM_OK, "shrink to 50");
    slm_chain_reset(ch);
    CHECK(slm_chain_history(ch, &h) == 0, "reset empties the history");
    slm_chain_free(ch);

    /* state: restoring RNG and history reproduces the continuation */
    ch = slm_chain_new(&err);
    pen = (slm_penalty){16, 1.5f, 0.1f, 0.1f};
    slm_chain_add_penalties(ch, &pen, &err);
    slm_chain_add_top_k(ch, 20, &err);
    slm_chain_add_dist(ch, 99, &err);
    float v[64];
    random_logits(v, 64, 2);
    for (int i = 0; i < 10; i++) {
        slm_chain_sample(ch, v, 64, &id, &err);
        slm_chain_accept(ch, id, &err);
    }
    uint64_t rs[4];
    slm_chain_get_rng(ch, rs);
    int32_t saved[16];
    nh = slm_chain_history(ch, &h);
    memcpy(saved, h, nh * sizeof *h);
    int32_t first[20], second[20];
    for (int pass = 0; pass < 2; pass++) {
        int32_t *out = pass ? second : first;
        slm_chain_set_rng(ch, rs, &err);
        slm_chain_set_history(ch, saved, nh, &err);
        for (int i = 0; i < 20; i++) {
            slm_chain_sample(ch, v, 64, &out[i], &err);
            slm_chain_accept(ch, out[i], &err);
        }
    }
    CHECK(memcmp(first, second, sizeof first) == 0, "restored state replays the same ids");
    uint64_t zero[4] = {0};
    CHECK(slm_chain_set_rng(ch, zero, &err) == SLM_EINVAL, "all-zero RNG state rejected");
    slm_chain_free(ch);
}

/* ---- speed at n_vocab = 151936 (Qwen2) ----------------------------------- */

/* CPU time of this process: the machine is shared, wall time is noisy */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void bench_one(const char *name, slm_chain *ch, const float *l, size_t n)
{
    slm_error err;
    int32_t id;
    int reps = 20;
    double t0 = now();
    int ok = 1;
    for (int i = 0; i < reps; i++) {
        ok &= slm_chain_sample(ch, l, n, &id, &err) == SLM_OK;
        slm_chain_accept(ch, id, &err);
    }
    double ms = (now() - t0) * 1e3 / reps;
    printf("bench: %-48s %7.3f ms/sample\n", name, ms);
    CHECK(ok, "%s runs", name);
    slm_chain_free(ch);
}

static void test_speed(void)
{
    enum { N = 151936 };
    float *l = malloc(N * sizeof *l);
    random_logits(l, N, 8);
    slm_error err;
    slm_chain *ch = slm_chain_new(&err);
    slm_chain_add_greedy(ch, &err);
    bench_one("greedy", ch, l, N);
    ch = slm_chain_new(&err);
    slm_penalty pen = {64, 1.1f, 0, 0};
    slm_chain_add_penalties(ch, &pen, &err);
    slm_chain_add_top_k(ch, 40, &err);
    slm_chain_add_top_p(ch, 0.95f, 1, &err);
    slm_chain_add_min_p(ch, 0.05f, 1, &err);
    slm_chain_add_temp(ch, 0.8f, &err);
    slm_chain_add_dist(ch, 1, &err);
    bench_one("penalties top_k(40) top_p min_p temp dist", ch, l, N);
    ch = slm_chain_new(&err);
    slm_chain_add_temp(ch, 0.8f, &err);
    slm_chain_add_dist(ch, 1, &err);
    bench_one("temp dist (full softmax)", ch, l, N);
    ch = slm_chain_new(&err);
    slm_chain_add_top_p(ch, 0.95f, 1, &err);
    slm_chain_add_dist(ch, 1, &err);
    bench_one("top_p(0.95) dist on the full vocabulary", ch, l, N);
    ch = slm_chain_new(&err);
    slm_chain_add_min_p(ch, 0.05f, 1, &err);
    slm_chain_add_dist(ch, 1, &err);
    bench_one("min_p(0.05) dist on the full vocabulary", ch, l, N);
    ch = slm_chain_new(&err);
    slm_chain_add_typical(ch, 0.9f, 1, &err);
    slm_chain_add_dist(ch, 1, &err);
    bench_one("typical(0.9) dist on the full vocabulary", ch, l, N);
    free(l);
}

int main(void)
{
    test_rng();
    test_greedy_temp();
    test_top_k();
    test_top_p();
    test_min_p();
    test_typical();
    test_penalties();
    test_logit_bias();
    test_dist();
    test_chain();
    test_speed();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
