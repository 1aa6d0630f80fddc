/* Sampling stages (see sampler.h for the contract of each).
 *
 * The stage semantics follow the reference implementation's samplers
 * (llama.cpp src/llama-sampling.cpp: top-k, top-p, min-p, typical,
 * penalties, logit bias, dist), re-derived here; where a rule differs it is
 * said in sampler.h (typical keeps the prefix whose mass is >= p, as top-p
 * does). */
#include "sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* NaN sorts last (as -inf), so the order stays total even if a custom stage
 * writes garbage; the final selections then refuse a set without a finite
 * logit. */
static inline float key(float x)
{
    return x != x ? -INFINITY : x;
}

/* The total order of the whole file: higher logit first, then lower id. */
static inline int better(const slm_cand *a, const slm_cand *b)
{
    float ka = key(a->logit), kb = key(b->logit);
    return ka > kb || (ka == kb && a->id < b->id);
}

static int cmp_best_first(const void *pa, const void *pb)
{
    const slm_cand *a = pa, *b = pb;
    if (better(a, b)) return -1;
    if (better(b, a)) return 1;
    return 0;
}

static void sort_best_first(slm_cand *a, size_t n)
{
    if (n > 1) qsort(a, n, sizeof *a, cmp_best_first);
}

static inline void swap(slm_cand *a, slm_cand *b)
{
    slm_cand t = *a;
    *a = *b;
    *b = t;
}

static void insertion_sort(slm_cand *a, size_t n)
{
    for (size_t i = 1; i < n; i++) {
        slm_cand x = a[i];
        size_t j = i;
        while (j > 0 && better(&x, &a[j - 1])) {
            a[j] = a[j - 1];
            j--;
        }
        a[j] = x;
    }
}

/* Partitions a[lo..hi) (hi - lo >= 3) around the median of its first,
 * middle and last entries; returns the pivot's final index s: a[lo..s)
 * beat it, a(s..hi) lose to it. */
static size_t partition(slm_cand *a, size_t lo, size_t hi)
{
    size_t mid = lo + (hi - lo) / 2, last = hi - 1;
    if (better(&a[mid], &a[lo])) swap(&a[mid], &a[lo]);
    if (better(&a[last], &a[lo])) swap(&a[last], &a[lo]);
    if (better(&a[mid], &a[last])) swap(&a[mid], &a[last]);
    const slm_cand pivot = a[last];
    size_t store = lo;
    for (size_t i = lo; i < last; i++)
        if (better(&a[i], &pivot)) swap(&a[i], &a[store++]);
    swap(&a[store], &a[last]);
    return store;
}

/* Rearranges a[0..n) so that a[0..k) holds the k best, in no particular
 * order (0 < k < n). Quickselect with a median-of-three pivot; if the
 * partitions stop shrinking (depth > 2 log2 n), sorts the rest instead, so
 * the worst case is O(n log n) (introselect). */
static void select_best(slm_cand *a, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    int budget = 8;
    for (size_t m = n; m > 1; m >>= 1) budget += 2;
    while (hi - lo > 16) {
        if (budget-- == 0) {
            sort_best_first(a + lo, hi - lo);
            return;
        }
        size_t store = partition(a, lo, hi);
        if (k < store) hi = store;
        else if (k > store + 1) lo = store + 1;
        else return;
    }
    insertion_sort(a + lo, hi - lo);
}

/* Sifts a[i] down the min-heap a[0..k) whose root is the worst entry. */
static void sift_down(slm_cand *a, size_t k, size_t i)
{
    for (;;) {
        size_t w = i, l = 2 * i + 1, r = l + 1;
        if (l < k && better(&a[w], &a[l])) w = l;
        if (r < k && better(&a[w], &a[r])) w = r;
        if (w == i) return;
        swap(&a[i], &a[w]);
        i = w;
    }
}

/* Moves the k best of a[0..n) to a[0..k) (unordered) with a min-heap of
 * the best k so far: for k much smaller than n almost every entry costs
 * one well-predicted comparison with the heap's root, where quickselect's
 * partitions mispredict half their branches. O(n log k) at worst. Entries
 * past k are overwritten (the caller truncates to k). */
static void heap_best(slm_cand *a, size_t n, size_t k)
{
    for (size_t i = k / 2; i-- > 0;) sift_down(a, k, i);
    float root = key(a[0].logit);
    for (size_t i = k; i < n; i++) {
        float x = a[i].logit;     /* NaN fails both tests: never enters */
        if (x > root || (x == root && a[i].id < a[0].id)) {
            a[0] = a[i];
            sift_down(a, k, 0);
            root = key(a[0].logit);
        }
    }
}

/* Length of the shortest prefix of a[0..n) whose mass reaches target, n if
 * none does. */
static size_t mass_prefix(const slm_cand *a, size_t n, double target)
{
    double cum = 0.0;
    for (size_t i = 0; i < n; i++) {
        cum += a[i].p;
        if (cum >= target) return i + 1;
    }
    return n;
}

/* Moves to the front of a[0..n) the smallest set of best entries whose mass
 * (sum of .p) reaches target and that holds at least min_keep; returns its
 * size (n if the mass is never reached). A sorted array is walked. Otherwise
 * this is quickselect on mass rather than on rank: partition around a
 * pivot, and if the better side alone reaches the target the answer lies
 * there, else take it whole and continue in the worse side. O(n) expected,
 * with no sort, so a flat distribution over 150k ids costs what a peaked one
 * does; the kept entries are left in no particular order. */
static size_t best_mass(slm_cand *a, size_t n, double target, size_t min_keep,
                        int sorted)
{
    size_t k = n;
    if (sorted) {
        k = mass_prefix(a, n, target);
    } else {
        size_t lo = 0, hi = n;
        double need = target;
        for (;;) {
            if (hi - lo <= 16) {
                insertion_sort(a + lo, hi - lo);
                k = lo + mass_prefix(a + lo, hi - lo, need);
                break;
            }
            size_t store = partition(a, lo, hi);
            double mass = 0.0;
            for (size_t i = lo; i < store; i++) mass += a[i].p;
            if (mass >= need) {
                hi = store;
            } else if (mass + a[store].p >= need) {
                k = store + 1;
                break;
            } else {
                need -= mass + a[store].p;
                lo = store + 1;
            }
        }
    }
    if (k < min_keep) {
        /* a[0..k) are the best already; min_keep of them are wanted */
        k = min_keep < n ? min_keep : n;
        if (!sorted && k < n) select_best(a, n, k);
    }
    return k;
}

slm_status slm_cands_init(slm_cands *c, slm_cand *buf, const float *logits,
                          size_t n, slm_error *err)
{
    if (n == 0 || n > INT32_MAX)
        return slm_error_set(err, SLM_EINVAL, "sampler: %zu logits (need 1..2^31-1)", n);
    for (size_t i = 0; i < n; i++) {
        float x = logits[i];
        if (x != x || x == INFINITY)
            return slm_error_set(err, SLM_EINVAL, "sampler: logit %zu is %s", i,
                                 x != x ? "NaN" : "+inf");
        buf[i].id = (int32_t)i;
        buf[i].logit = x;
        buf[i].p = 0.0f;
    }
    c->data = buf;
    c->n = n;
    c->sorted = n == 1;
    c->p_valid = 0;
    c->identity = 1;
    return SLM_OK;
}

size_t slm_cands_argmax(const slm_cands *c)
{
    /* better() inlined for the scan: a NaN fails both comparisons, as it
     * would after key() */
    const slm_cand *d = c->data;
    size_t best = 0;
    float max = key(d[0].logit);
    for (size_t i = 1; i < c->n; i++) {
        float x = d[i].logit;
        if (x > max || (x == max && d[i].id < d[best].id)) {
            best = i;
            max = x;
        }
    }
    return best;
}

void slm_cands_sort(slm_cands *c)
{
    if (!c->sorted) sort_best_first(c->data, c->n);
    c->sorted = 1;
    c->identity = c->identity && c->n == 1;
}

static slm_status all_banned(slm_error *err)
{
    return slm_error_set(err, SLM_EINVAL,
                         "sampler: no candidate left (every logit is -inf)");
}

slm_status slm_cands_softmax(slm_cands *c, slm_error *err)
{
    slm_cand *d = c->data;
    float max = key(d[c->sorted ? 0 : slm_cands_argmax(c)].logit);
    if (max == -INFINITY) return all_banned(err);
    double sum = 0.0;
    if (max == INFINITY) {
        /* only an overflowing temperature gets here: the +inf logits share
         * the mass equally */
        for (size_t i = 0; i < c->n; i++) {
            d[i].p = d[i].logit == INFINITY ? 1.0f : 0.0f;
            sum += d[i].p;
        }
    } else {
        for (size_t i = 0; i < c->n; i++) {
            float l = key(d[i].logit);
            d[i].p = l == -INFINITY ? 0.0f : expf(l - max);
            sum += d[i].p;
        }
    }
    for (size_t i = 0; i < c->n; i++) d[i].p = (float)(d[i].p / sum);
    c->p_valid = 1;
    return SLM_OK;
}

/* Keeps the first k entries. */
static void truncate_to(slm_cands *c, size_t k)
{
    if (k >= c->n) return;
    c->n = k;
    c->p_valid = 0;
    c->identity = 0;
}

slm_status slm_sample_temp(slm_cands *c, float t, slm_error *err)
{
    if (!(t >= 0.0f))
        return slm_error_set(err, SLM_EINVAL, "temp: temperature must be >= 0 (got %g)", t);
    if (t == 0.0f) {
        size_t best = slm_cands_argmax(c);
        swap(&c->data[0], &c->data[best]);
        if (best != 0) c->identity = 0;
        truncate_to(c, 1);
        c->sorted = 1;
        return SLM_OK;
    }
    if (t == 1.0f) return SLM_OK;
    /* division keeps the order (non-increasing stays non-increasing) */
    for (size_t i = 0; i < c->n; i++) c->data[i].logit /= t;
    c->p_valid = 0;
    return SLM_OK;
}

slm_status slm_sample_top_k(slm_cands *c, int32_t k, slm_error *err)
{
    if (k < 0) return slm_error_set(err, SLM_EINVAL, "top_k: k must be >= 0 (got %d)", (int)k);
    if (k == 0 || (size_t)k >= c->n) return SLM_OK;
    if (!c->sorted) {
        if ((size_t)k <= c->n / 16) heap_best(c->data, c->n, (size_t)k);
        else select_best(c->data, c->n, (size_t)k);
        sort_best_first(c->data, (size_t)k);
        c->sorted = 1;
    }
    truncate_to(c, (size_t)k);
    return SLM_OK;
}

slm_status slm_sample_top_p(slm_cands *c, float p, size_t min_keep,
                            slm_error *err)
{
    if (!(p > 0.0f && p <= 1.0f))
        return slm_error_set(err, SLM_EINVAL, "top_p: p must be in (0, 1] (got %g)", p);
    if (p == 1.0f) return SLM_OK;
    if (!c->p_valid) {
        slm_status st = slm_cands_softmax(c, err);
        if (st != SLM_OK) return st;
    }
    size_t k = best_mass(c->data, c->n, p, min_keep, c->sorted);
    if (!c->sorted) c->identity = 0;
    c->sorted = c->sorted || k == 1;
    truncate_to(c, k);
    return SLM_OK;
}

slm_status slm_sample_min_p(slm_cands *c, float p, size_t min_keep,
                            slm_error *err)
{
    if (!(p >= 0.0f && p <= 1.0f))
        return slm_error_set(err, SLM_EINVAL, "min_p: p must be in [0, 1] (got %g)", p);
    if (p == 0.0f) return SLM_OK;
    slm_cand *d = c->data;
    float max = key(d[c->sorted ? 0 : slm_cands_argmax(c)].logit);
    if (max == -INFINITY) return SLM_OK;   /* the selection reports it */
    /* p_i >= p * p_max  <=>  logit_i - logit_max >= log p */
    float thr = max + logf(p);
    size_t kept = 0;
    for (size_t i = 0; i < c->n; i++) kept += key(d[i].logit) >= thr;
    if (kept < min_keep) return slm_sample_top_k(c, (int32_t)(min_keep < c->n ? min_keep : c->n), err);
    if (kept == c->n) return SLM_OK;
    size_t j = 0;
    for (size_t i = 0; i < c->n; i++)
        if (key(d[i].logit) >= thr) d[j++] = d[i];
    truncate_to(c, j);
    return SLM_OK;
}

slm_status slm_sample_typical(slm_cands *c, float p, size_t min_keep,
                              slm_cand *scratch, slm_error *err)
{
    if (!(p > 0.0f && p <= 1.0f))
        return slm_error_set(err, SLM_EINVAL, "typical: p must be in (0, 1] (got %g)", p);
    if (p == 1.0f) return SLM_OK;
    if (!c->p_valid) {
        slm_status st = slm_cands_softmax(c, err);
        if (st != SLM_OK) return st;
    }
    size_t n = c->n;
    /* log p_i = logit_i - max + log p_max: one log instead of n */
    const slm_cand *top = &c->data[slm_cands_argmax(c)];
    double shift = log((double)top->p) - (double)top->logit;
    double h = 0.0;
    for (size_t i = 0; i < n; i++)
        if (c->data[i].p > 0.0f) h -= c->data[i].p * ((double)c->data[i].logit + shift);
    /* scratch entry: id = position in c, logit = -|surprise - H| so that
     * "best first" is "most typical first", ties to the lower position */
    for (size_t i = 0; i < n; i++) {
        const slm_cand *x = &c->data[i];
        scratch[i].id = (int32_t)i;
        scratch[i].logit = x->p > 0.0f ? (float)-fabs(-((double)x->logit + shift) - h)
                                       : -INFINITY;
        scratch[i].p = x->p;
    }
    size_t k = best_mass(scratch, n, p, min_keep, 0);
    for (size_t j = 0; j < k; j++) scratch[j] = c->data[scratch[j].id];
    memcpy(c->data, scratch, k * sizeof *scratch);
    c->n = k;
    c->sorted = k == 1;
    c->identity = 0;
    c->p_valid = 0;
    return SLM_OK;
}

static void penalize(slm_cand *x, int32_t count, const slm_penalty *pen)
{
    if (x->logit > 0.0f) x->logit /= pen->repeat;
    else x->logit *= pen->repeat;
    x->logit -= (float)count * pen->frequency + pen->presence;
}

slm_status slm_sample_penalties(slm_cands *c, const slm_penalty *pen,
                                const int32_t *hist, size_t n_hist,
                                int32_t *counts, int32_t n_vocab,
                                slm_error *err)
{
    if (!(pen->repeat > 0.0f) || !isfinite(pen->repeat) || !isfinite(pen->frequency) ||
        !isfinite(pen->presence) || pen->last_n < 0)
        return slm_error_set(err, SLM_EINVAL,
                             "penalties: need last_n >= 0, repeat > 0, finite frequency "
                             "and presence (got %d, %g, %g, %g)", (int)pen->last_n,
                             pen->repeat, pen->frequency, pen->presence);
    if (pen->last_n == 0 || n_hist == 0 ||
        (pen->repeat == 1.0f && pen->frequency == 0.0f && pen->presence == 0.0f))
        return SLM_OK;
    if (n_hist > (size_t)pen->last_n) {
        hist += n_hist - (size_t)pen->last_n;
        n_hist = (size_t)pen->last_n;
    }
    for (size_t i = 0; i < n_hist; i++)
        if (hist[i] >= 0 && hist[i] < n_vocab) counts[hist[i]]++;
    if (c->identity) {
        /* data[id] is token id: visit each distinct token once, zeroing its
         * count as it is applied */
        for (size_t i = 0; i < n_hist; i++) {
            int32_t t = hist[i];
            if (t < 0 || t >= n_vocab || counts[t] == 0) continue;
            if ((size_t)t < c->n) penalize(&c->data[t], counts[t], pen);
            counts[t] = 0;
        }
    } else {
        for (size_t i = 0; i < c->n; i++) {
            int32_t cnt = counts[c->data[i].id];
            if (cnt > 0) penalize(&c->data[i], cnt, pen);
        }
        for (size_t i = 0; i < n_hist; i++)
            if (hist[i] >= 0 && hist[i] < n_vocab) counts[hist[i]] = 0;
    }
    c->sorted = c->n == 1;
    c->p_valid = 0;
    return SLM_OK;
}

slm_status slm_sample_logit_bias(slm_cands *c, const int32_t *ids,
                                 const float *bias, size_t n, int32_t *marks,
                                 int32_t n_vocab, slm_error *err)
{
    for (size_t j = 0; j < n; j++)
        if (ids[j] < 0 || ids[j] >= n_vocab)
            return slm_error_set(err, SLM_ERANGE,
                                 "logit_bias: token id %d out of range for a vocabulary of %d",
                                 (int)ids[j], (int)n_vocab);
    if (n == 0) return SLM_OK;
    if (c->identity) {
        for (size_t j = 0; j < n; j++)
            if ((size_t)ids[j] < c->n) c->data[ids[j]].logit += bias[j];
    } else {
        /* marks[id] = 1 + index of its bias, for one pass over the set */
        for (size_t j = 0; j < n; j++) marks[ids[j]] = (int32_t)j + 1;
        for (size_t i = 0; i < c->n; i++) {
            int32_t m = marks[c->data[i].id];
            if (m) c->data[i].logit += bias[m - 1];
        }
        for (size_t j = 0; j < n; j++) marks[ids[j]] = 0;
    }
    c->sorted = c->n == 1;
    c->p_valid = 0;
    return SLM_OK;
}

slm_status slm_sample_greedy(const slm_cands *c, int32_t *id, slm_error *err)
{
    const slm_cand *best = &c->data[slm_cands_argmax(c)];
    if (key(best->logit) == -INFINITY) return all_banned(err);
    *id = best->id;
    return SLM_OK;
}

slm_status slm_sample_dist(slm_cands *c, slm_rng *rng, int32_t *id,
                           slm_error *err)
{
    if (!c->p_valid) {
        slm_status st = slm_cands_softmax(c, err);
        if (st != SLM_OK) return st;
    }
    double total = 0.0;
    for (size_t i = 0; i < c->n; i++) total += c->data[i].p;
    double target = slm_rng_uniform(rng) * total, cum = 0.0;
    size_t pick = c->n;
    for (size_t i = 0; i < c->n; i++) {
        if (c->data[i].p <= 0.0f) continue;
        pick = i;    /* rounding fallback: the last candidate with mass */
        cum += c->data[i].p;
        if (cum > target) break;
    }
    if (pick == c->n) return all_banned(err);
    *id = c->data[pick].id;
    return SLM_OK;
}
