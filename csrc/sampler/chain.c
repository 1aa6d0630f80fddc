/* Sampler chains (see chain.h). */
#include "chain.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct slm_stage slm_stage;

/* The interface of a stage. apply rewrites the candidates; a selecting
 * stage also stores the chosen id. */
typedef struct slm_stage_i {
    const char *name;
    int selects;
    slm_status (*apply)(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                        slm_error *err);
    int (*describe)(const slm_stage *st, char *buf, size_t size);
    void (*free)(slm_stage *st);                 /* NULL: nothing owned */
} slm_stage_i;

struct slm_stage {
    const slm_stage_i *iface;
    union {
        float t;                                         /* temp */
        int32_t k;                                       /* top_k */
        struct { float p; size_t min_keep; } mass;       /* top_p, min_p, typical */
        slm_penalty pen;                                 /* penalties */
        struct { int32_t *ids; float *bias; size_t n; } bias;
        uint64_t seed;                                   /* dist */
        struct { slm_stage_fn fn; void *ud; char name[32]; } custom;
    } u;
};

struct slm_chain {
    slm_stage *stages;
    size_t n_stages, cap_stages;
    int32_t n_vocab;           /* of the last sample call; 0 before the first */
    size_t cap_vocab;          /* entries of buf, scratch, marks */
    slm_cand *buf, *scratch;
    int32_t *marks;            /* zeros between stages (penalties, logit_bias) */
    /* history: hist[0..hist_len), the last hist_cap of them are kept;
     * storage is 2 * hist_cap so the window stays contiguous and a push is
     * amortized O(1) (one memmove per hist_cap pushes) */
    int32_t *hist;
    size_t hist_len, hist_cap;
    slm_rng rng;
    uint64_t seed;
};

/* ---- stage implementations ------------------------------------------- */

static slm_status ap_greedy(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                            slm_error *err)
{
    return slm_sample_greedy(c, id, err);
}

static slm_status ap_dist(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                          slm_error *err)
{
    return slm_sample_dist(c, &ch->rng, id, err);
}

static slm_status ap_temp(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                          slm_error *err)
{
    return slm_sample_temp(c, st->u.t, err);
}

static slm_status ap_top_k(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                           slm_error *err)
{
    return slm_sample_top_k(c, st->u.k, err);
}

static slm_status ap_top_p(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                           slm_error *err)
{
    return slm_sample_top_p(c, st->u.mass.p, st->u.mass.min_keep, err);
}

static slm_status ap_min_p(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                           slm_error *err)
{
    return slm_sample_min_p(c, st->u.mass.p, st->u.mass.min_keep, err);
}

static slm_status ap_typical(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                             slm_error *err)
{
    return slm_sample_typical(c, st->u.mass.p, st->u.mass.min_keep, ch->scratch, err);
}

static slm_status ap_penalties(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                               slm_error *err)
{
    const int32_t *h;
    size_t n = slm_chain_history(ch, &h);
    return slm_sample_penalties(c, &st->u.pen, h, n, ch->marks, ch->n_vocab, err);
}

static slm_status ap_logit_bias(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                                slm_error *err)
{
    return slm_sample_logit_bias(c, st->u.bias.ids, st->u.bias.bias, st->u.bias.n,
                                 ch->marks, ch->n_vocab, err);
}

static slm_status ap_custom(slm_stage *st, slm_chain *ch, slm_cands *c, int32_t *id,
                            slm_error *err)
{
    slm_status s = st->u.custom.fn(st->u.custom.ud, (int)(st - ch->stages), c, err);
    if (s == SLM_OK && (c->n == 0 || c->n > (size_t)ch->n_vocab))
        return slm_error_set(err, SLM_EINVAL, "%s: left %zu candidates", st->u.custom.name,
                             c->n);
    return s;
}

static int ds_none(const slm_stage *st, char *buf, size_t size)
{
    return snprintf(buf, size, "%s", st->iface->name);
}

static int ds_dist(const slm_stage *st, char *buf, size_t size)
{
    return snprintf(buf, size, "dist(seed=%llu)", (unsigned long long)st->u.seed);
}

static int ds_temp(const slm_stage *st, char *buf, size_t size)
{
    return snprintf(buf, size, "temp(%g)", st->u.t);
}

static int ds_top_k(const slm_stage *st, char *buf, size_t size)
{
    return snprintf(buf, size, "top_k(%d)", (int)st->u.k);
}

static int ds_mass(const slm_stage *st, char *buf, size_t size)
{
    return snprintf(buf, size, "%s(%g, min_keep=%zu)", st->iface->name, st->u.mass.p,
                    st->u.mass.min_keep);
}

static int ds_penalties(const slm_stage *st, char *buf, size_t size)
{
    const slm_penalty *p = &st->u.pen;
    return snprintf(buf, size, "penalties(last_n=%d, repeat=%g, frequency=%g, presence=%g)",
                    (int)p->last_n, p->repeat, p->frequency, p->presence);
}

static int ds_logit_bias(const slm_stage *st, char *buf, size_t size)
{
    size_t n = st->u.bias.n, shown = n < 4 ? n : 4;
    int len = snprintf(buf, size, "logit_bias(");
    for (size_t j = 0; j < shown; j++) {
        size_t at = (size_t)len < size ? (size_t)len : size;
        len += snprintf(buf + at, size - at, "%s%d=%g", j ? ", " : "",
                        (int)st->u.bias.ids[j], st->u.bias.bias[j]);
    }
    size_t at = (size_t)len < size ? (size_t)len : size;
    len += snprintf(buf + at, size - at, n > shown ? ", ... %zu ids)" : ")", n);
    return len;
}

static int ds_custom(const slm_stage *st, char *buf, size_t size)
{
    return snprintf(buf, size, "%s", st->u.custom.name);
}

static void fr_logit_bias(slm_stage *st)
{
    free(st->u.bias.ids);
    free(st->u.bias.bias);
}

static const slm_stage_i GREEDY = {"greedy", 1, ap_greedy, ds_none, NULL};
static const slm_stage_i DIST = {"dist", 1, ap_dist, ds_dist, NULL};
static const slm_stage_i TEMP = {"temp", 0, ap_temp, ds_temp, NULL};
static const slm_stage_i TOP_K = {"top_k", 0, ap_top_k, ds_top_k, NULL};
static const slm_stage_i TOP_P = {"top_p", 0, ap_top_p, ds_mass, NULL};
static const slm_stage_i MIN_P = {"min_p", 0, ap_min_p, ds_mass, NULL};
static const slm_stage_i TYPICAL = {"typical", 0, ap_typical, ds_mass, NULL};
static const slm_stage_i PENALTIES = {"penalties", 0, ap_penalties, ds_penalties, NULL};
static const slm_stage_i LOGIT_BIAS = {"logit_bias", 0, ap_logit_bias, ds_logit_bias,
                                       fr_logit_bias};
static const slm_stage_i CUSTOM = {"custom", 0, ap_custom, ds_custom, NULL};

/* ---- construction ------------------------------------------------------ */

slm_chain *slm_chain_new(slm_error *err)
{
    slm_chain *ch = calloc(1, sizeof *ch);
    if (!ch) {
        slm_error_set(err, SLM_ENOMEM, "sampler: out of memory");
        return NULL;
    }
    slm_rng_seed(&ch->rng, 0);
    return ch;
}

void slm_chain_free(slm_chain *ch)
{
    if (!ch) return;
    for (size_t i = 0; i < ch->n_stages; i++)
        if (ch->stages[i].iface->free) ch->stages[i].iface->free(&ch->stages[i]);
    free(ch->stages);
    free(ch->buf);
    free(ch->scratch);
    free(ch->marks);
    free(ch->hist);
    free(ch);
}

size_t slm_chain_n_stages(const slm_chain *ch)
{
    return ch->n_stages;
}

/* Checks that a stage may be appended and makes room for it. */
static slm_status can_append(slm_chain *ch, const char *name, slm_error *err)
{
    if (ch->n_stages && ch->stages[ch->n_stages - 1].iface->selects)
        return slm_error_set(err, SLM_EINVAL,
                             "%s cannot follow %s, which selects the token and "
                             "must be the last stage", name,
                             ch->stages[ch->n_stages - 1].iface->name);
    if (ch->n_stages == ch->cap_stages) {
        size_t cap = ch->cap_stages ? 2 * ch->cap_stages : 8;
        slm_stage *s = realloc(ch->stages, cap * sizeof *s);
        if (!s) return slm_error_set(err, SLM_ENOMEM, "sampler: out of memory");
        ch->stages = s;
        ch->cap_stages = cap;
    }
    return SLM_OK;
}

static slm_status append(slm_chain *ch, const slm_stage *st, slm_error *err)
{
    slm_status s = can_append(ch, st->iface->name, err);
    if (s != SLM_OK) return s;
    ch->stages[ch->n_stages++] = *st;
    return SLM_OK;
}

slm_status slm_chain_add_greedy(slm_chain *ch, slm_error *err)
{
    slm_stage st = {.iface = &GREEDY};
    return append(ch, &st, err);
}

slm_status slm_chain_add_dist(slm_chain *ch, uint64_t seed, slm_error *err)
{
    slm_stage st = {.iface = &DIST, .u.seed = seed};
    slm_status s = append(ch, &st, err);
    if (s == SLM_OK) {
        ch->seed = seed;
        slm_rng_seed(&ch->rng, seed);
    }
    return s;
}

slm_status slm_chain_add_temp(slm_chain *ch, float t, slm_error *err)
{
    if (!(t >= 0.0f) || !isfinite(t))
        return slm_error_set(err, SLM_EINVAL,
                             "temp: temperature must be finite and >= 0 (got %g)", t);
    slm_stage st = {.iface = &TEMP, .u.t = t};
    return append(ch, &st, err);
}

slm_status slm_chain_add_top_k(slm_chain *ch, int32_t k, slm_error *err)
{
    if (k < 0)
        return slm_error_set(err, SLM_EINVAL, "top_k: k must be >= 0 (got %d; 0 disables)",
                             (int)k);
    slm_stage st = {.iface = &TOP_K, .u.k = k};
    return append(ch, &st, err);
}

static slm_status add_mass(slm_chain *ch, const slm_stage_i *iface, float p,
                           size_t min_keep, int zero_ok, slm_error *err)
{
    if (!(zero_ok ? p >= 0.0f : p > 0.0f) || !(p <= 1.0f))
        return slm_error_set(err, SLM_EINVAL, "%s: p must be in %s, 1] (got %g)",
                             iface->name, zero_ok ? "[0" : "(0", p);
    slm_stage st = {.iface = iface, .u.mass = {p, min_keep}};
    return append(ch, &st, err);
}

slm_status slm_chain_add_top_p(slm_chain *ch, float p, size_t min_keep, slm_error *err)
{
    return add_mass(ch, &TOP_P, p, min_keep, 0, err);
}

slm_status slm_chain_add_min_p(slm_chain *ch, float p, size_t min_keep, slm_error *err)
{
    return add_mass(ch, &MIN_P, p, min_keep, 1, err);
}

slm_status slm_chain_add_typical(slm_chain *ch, float p, size_t min_keep, slm_error *err)
{
    return add_mass(ch, &TYPICAL, p, min_keep, 0, err);
}

slm_status slm_chain_add_penalties(slm_chain *ch, const slm_penalty *pen, slm_error *err)
{
    if (pen->last_n < 0)
        return slm_error_set(err, SLM_EINVAL, "penalties: last_n must be >= 0 (got %d)",
                             (int)pen->last_n);
    if (!(pen->repeat > 0.0f) || !isfinite(pen->repeat))
        return slm_error_set(err, SLM_EINVAL,
                             "penalties: repeat must be finite and > 0 (got %g; 1 disables)",
                             pen->repeat);
    if (!isfinite(pen->frequency) || !isfinite(pen->presence))
        return slm_error_set(err, SLM_EINVAL,
                             "penalties: frequency and presence must be finite (got %g, %g)",
                             pen->frequency, pen->presence);
    slm_status s = can_append(ch, "penalties", err);
    if (s != SLM_OK) return s;
    size_t cap = (size_t)pen->last_n;
    if (cap > ch->hist_cap) {
        /* grow the history, keeping what it holds */
        int32_t *h = realloc(ch->hist, 2 * cap * sizeof *h);
        if (!h) return slm_error_set(err, SLM_ENOMEM, "sampler: out of memory");
        ch->hist = h;
        ch->hist_cap = cap;
    }
    slm_stage st = {.iface = &PENALTIES, .u.pen = *pen};
    return append(ch, &st, err);
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

slm_status slm_chain_add_logit_bias(slm_chain *ch, const int32_t *ids,
                                    const float *bias, size_t n, slm_error *err)
{
    for (size_t j = 0; j < n; j++) {
        if (ids[j] < 0)
            return slm_error_set(err, SLM_ERANGE, "logit_bias: token id %d is negative",
                                 (int)ids[j]);
        if (isnan(bias[j]) || bias[j] == INFINITY)
            return slm_error_set(err, SLM_EINVAL,
                                 "logit_bias: bias of token %d is %g (finite or -inf only)",
                                 (int)ids[j], bias[j]);
    }
    slm_status s = can_append(ch, "logit_bias", err);
    if (s != SLM_OK) return s;
    /* sorted unique ids, each with the sum of the biases given for it */
    int32_t *sid = malloc((n ? n : 1) * sizeof *sid);
    float *sb = malloc((n ? n : 1) * sizeof *sb);
    if (!sid || !sb) {
        free(sid);
        free(sb);
        return slm_error_set(err, SLM_ENOMEM, "sampler: out of memory");
    }
    memcpy(sid, ids, n * sizeof *sid);
    qsort(sid, n, sizeof *sid, cmp_i32);
    size_t m = 0;
    for (size_t j = 0; j < n; j++)
        if (m == 0 || sid[m - 1] != sid[j]) sid[m++] = sid[j];
    for (size_t j = 0; j < m; j++) sb[j] = 0.0f;
    for (size_t j = 0; j < n; j++) {
        int32_t *at = bsearch(&ids[j], sid, m, sizeof *sid, cmp_i32);
        sb[at - sid] += bias[j];
    }
    slm_stage st = {.iface = &LOGIT_BIAS, .u.bias = {sid, sb, m}};
    return append(ch, &st, err);
}

slm_status slm_chain_add_custom(slm_chain *ch, const char *name, slm_stage_fn fn,
                                void *ud, slm_error *err)
{
    if (!fn) return slm_error_set(err, SLM_EINVAL, "sampler: custom stage without a function");
    slm_stage st = {.iface = &CUSTOM, .u.custom = {fn, ud, {0}}};
    snprintf(st.u.custom.name, sizeof st.u.custom.name, "%s", name ? name : "custom");
    return append(ch, &st, err);
}

/* ---- running ----------------------------------------------------------- */

/* Grows the per-vocabulary buffers to n entries (marks zero-filled). */
static slm_status reserve(slm_chain *ch, size_t n, slm_error *err)
{
    if (n <= ch->cap_vocab) return SLM_OK;
    slm_cand *b = malloc(n * sizeof *b), *s = malloc(n * sizeof *s);
    int32_t *m = calloc(n, sizeof *m);
    if (!b || !s || !m) {
        free(b);
        free(s);
        free(m);
        return slm_error_set(err, SLM_ENOMEM, "sampler: out of memory for %zu candidates", n);
    }
    free(ch->buf);
    free(ch->scratch);
    free(ch->marks);
    ch->buf = b;
    ch->scratch = s;
    ch->marks = m;
    ch->cap_vocab = n;
    return SLM_OK;
}

slm_status slm_chain_sample(slm_chain *ch, const float *logits, size_t n_vocab,
                            int32_t *id, slm_error *err)
{
    if (ch->n_stages == 0 || !ch->stages[ch->n_stages - 1].iface->selects)
        return slm_error_set(err, SLM_EINVAL,
                             "sampler: the chain must end with a selection (greedy or dist)");
    slm_cands c;
    slm_status s;
    if (n_vocab == 0 || n_vocab > INT32_MAX)
        return slm_error_set(err, SLM_EINVAL, "sampler: %zu logits (need 1..2^31-1)", n_vocab);
    if ((s = reserve(ch, n_vocab, err)) != SLM_OK) return s;
    if ((s = slm_cands_init(&c, ch->buf, logits, n_vocab, err)) != SLM_OK) return s;
    ch->n_vocab = (int32_t)n_vocab;
    for (size_t i = 0; i < ch->n_stages; i++) {
        slm_stage *st = &ch->stages[i];
        if ((s = st->iface->apply(st, ch, &c, id, err)) != SLM_OK) return s;
    }
    return SLM_OK;
}

static slm_status check_id(const slm_chain *ch, int32_t id, const char *what,
                           slm_error *err)
{
    if (id < 0 || (ch->n_vocab && id >= ch->n_vocab))
        return slm_error_set(err, SLM_ERANGE, "%s: token id %d out of range [0, %d)", what,
                             (int)id, (int)(ch->n_vocab ? ch->n_vocab : INT32_MAX));
    return SLM_OK;
}

slm_status slm_chain_accept(slm_chain *ch, int32_t id, slm_error *err)
{
    slm_status s = check_id(ch, id, "accept", err);
    if (s != SLM_OK || ch->hist_cap == 0) return s;
    if (ch->hist_len == 2 * ch->hist_cap) {
        memmove(ch->hist, ch->hist + ch->hist_cap, ch->hist_cap * sizeof *ch->hist);
        ch->hist_len = ch->hist_cap;
    }
    ch->hist[ch->hist_len++] = id;
    return SLM_OK;
}

void slm_chain_reset(slm_chain *ch)
{
    ch->hist_len = 0;
    slm_rng_seed(&ch->rng, ch->seed);
}

/* ---- state and description --------------------------------------------- */

void slm_chain_get_rng(const slm_chain *ch, uint64_t s[4])
{
    memcpy(s, ch->rng.s, sizeof ch->rng.s);
}

slm_status slm_chain_set_rng(slm_chain *ch, const uint64_t s[4], slm_error *err)
{
    if (!(s[0] | s[1] | s[2] | s[3]))
        return slm_error_set(err, SLM_EINVAL, "sampler: an all-zero RNG state is invalid");
    memcpy(ch->rng.s, s, sizeof ch->rng.s);
    return SLM_OK;
}

size_t slm_chain_history(const slm_chain *ch, const int32_t **ids)
{
    size_t w = ch->hist_len < ch->hist_cap ? ch->hist_len : ch->hist_cap;
    *ids = ch->hist ? ch->hist + ch->hist_len - w : NULL;
    return w;
}

size_t slm_chain_history_capacity(const slm_chain *ch)
{
    return ch->hist_cap;
}

slm_status slm_chain_set_history(slm_chain *ch, const int32_t *ids, size_t n,
                                 slm_error *err)
{
    for (size_t i = 0; i < n; i++) {
        slm_status s = check_id(ch, ids[i], "set_history", err);
        if (s != SLM_OK) return s;
    }
    if (n > ch->hist_cap) {
        ids += n - ch->hist_cap;
        n = ch->hist_cap;
    }
    if (n) memcpy(ch->hist, ids, n * sizeof *ids);
    ch->hist_len = n;
    return SLM_OK;
}

size_t slm_chain_describe(const slm_chain *ch, char *buf, size_t size)
{
    char dummy[1];
    if (!buf || !size) {    /* measuring only: never offset a null pointer */
        buf = dummy;
        size = 1;
    }
    size_t len = 0;
    for (size_t i = 0; i < ch->n_stages; i++) {
        const slm_stage *st = &ch->stages[i];
        size_t at = len < size ? len : size;
        if (i) len += (size_t)snprintf(buf + at, size - at, " -> ");
        at = len < size ? len : size;
        len += (size_t)st->iface->describe(st, buf + at, size - at);
    }
    if (len == 0) buf[0] = '\0';
    return len;
}

/* ---- distributions for speculative decoding (sampler/speculative.h) ---- */

slm_status slm_chain_dist(slm_chain *ch, const float *logits, size_t n_vocab, slm_cands *c,
                          slm_error *err)
{
    if (ch->n_stages == 0 || !ch->stages[ch->n_stages - 1].iface->selects)
        return slm_error_set(err, SLM_EINVAL,
                             "sampler: the chain must end with a selection (greedy or dist)");
    const char *lua = slm_chain_lua_stage(ch);
    if (lua)
        return slm_error_set(err, SLM_EINVAL,
                             "sampler: speculative decoding cannot run the Lua stage '%s' "
                             "(it would also see the draft's positions)", lua);
    if (n_vocab == 0 || n_vocab > INT32_MAX)
        return slm_error_set(err, SLM_EINVAL, "sampler: %zu logits (need 1..2^31-1)", n_vocab);
    slm_status s;
    if ((s = reserve(ch, n_vocab, err)) != SLM_OK) return s;
    if ((s = slm_cands_init(c, ch->buf, logits, n_vocab, err)) != SLM_OK) return s;
    ch->n_vocab = (int32_t)n_vocab;
    for (size_t i = 0; i + 1 < ch->n_stages; i++) {
        slm_stage *st = &ch->stages[i];
        if ((s = st->iface->apply(st, ch, c, NULL, err)) != SLM_OK) return s;
    }
    /* a greedy selection is the point mass at the best candidate */
    if (ch->stages[ch->n_stages - 1].iface == &GREEDY) {
        if ((s = slm_sample_temp(c, 0.0f, err)) != SLM_OK) return s;
    }
    return slm_cands_softmax(c, err);
}

const char *slm_chain_lua_stage(const slm_chain *ch)
{
    for (size_t i = 0; i < ch->n_stages; i++)
        if (ch->stages[i].iface == &CUSTOM) return ch->stages[i].u.custom.name;
    return NULL;
}

slm_rng *slm_chain_rng(slm_chain *ch)
{
    return &ch->rng;
}

int slm_chain_is_greedy(const slm_chain *ch)
{
    return ch->n_stages > 0 && ch->stages[ch->n_stages - 1].iface == &GREEDY;
}
