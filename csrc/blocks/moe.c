#include "moe.h"

#include <math.h>
#include <string.h>

#include "../kernels/matmul.h"
#include "../kernels/ops.h"
#include "../kernels/vecdot.h"

/* a 3-D expert stack (n_expert, rows, cols) with contiguous rows */
static slm_status check_stack(const slm_tensor *t, const char *what, int64_t e, int64_t rows,
                              int64_t cols, slm_error *err)
{
    if (!t) return slm_error_set(err, SLM_EINVAL, "moe: missing %s", what);
    if (t->ndim != 3 || t->shape[0] != e || t->shape[1] != rows || t->shape[2] != cols)
        return slm_error_set(err, SLM_EINVAL, "moe: %s must be %lldx%lldx%lld (experts x out x in)", what,
                             (long long)e, (long long)rows, (long long)cols);
    if (t->stride[2] != 1 || !slm_vecdot_fn(t->dtype))
        return slm_error_set(err, SLM_EINVAL, "moe: %s: %s weights with non-contiguous rows or no kernel",
                             what, slm_dtype_name(t->dtype));
    return SLM_OK;
}

slm_status slm_moe_block_check(const slm_moe_block *b, int64_t dim, slm_error *err)
{
    const int64_t ne = b->n_expert, ff = b->n_ff;
    if (ne < 1 || ne > SLM_MOE_MAX_EXPERTS || b->n_used < 1 || b->n_used > ne)
        return slm_error_set(err, SLM_EINVAL, "moe: %d of %d experts per token (experts 1..%d)", b->n_used,
                             b->n_expert, SLM_MOE_MAX_EXPERTS);
    if (ff < 1) return slm_error_set(err, SLM_EINVAL, "moe: expert width must be positive");
    if (!(b->scale > 0) || !isfinite(b->scale))
        return slm_error_set(err, SLM_EINVAL, "moe: weights scale %g out of range", (double)b->scale);
    slm_status st;
    if ((st = slm_matmul_check_weight(b->router, "ffn_gate_inp", ne, dim, err))) return st;
    if ((st = check_stack(b->gate, "ffn_gate_exps", ne, ff, dim, err))) return st;
    if ((st = check_stack(b->up, "ffn_up_exps", ne, ff, dim, err))) return st;
    if ((st = check_stack(b->down, "ffn_down_exps", ne, dim, ff, err))) return st;
    if (b->has_shared) {
        if ((st = slm_ffn_block_check(&b->shared, dim, err))) return st;
        if (b->shexp_gate && (st = slm_matmul_check_weight(b->shexp_gate, "ffn_gate_inp_shexp", 1, dim, err)))
            return st;
    }
    return SLM_OK;
}

/* out (n, N) = W . x for the small f32 matrices of the block (the router,
 * the shared expert's gate): in the f32 tiles' order at every batch size,
 * so that a row's routing does not depend on its batch (OpenBLAS sums a
 * batch in another order than a single row); other dtypes as usual */
static slm_status small_f32(slm_pool *pool, float *out, const slm_tensor *W, const float *x, int n,
                            slm_error *err)
{
    slm_matmul_part p = slm_matmul_part_of(W, -1, out);
    if (W->dtype == SLM_DTYPE_F32 && p.order == SLM_MATMUL_ORDER_DEFAULT) p.order = SLM_MATMUL_ORDER_TILES;
    return slm_matmul_multi(pool, &p, 1, x, n, W->shape[1], err);
}

slm_status slm_moe_route(slm_pool *pool, const slm_moe_block *b, int n, const float *x,
                         float *logits, slm_error *err)
{
    return small_f32(pool, logits, b->router, x, n, err);
}

void slm_moe_select(const slm_moe_block *b, const float *logits, const uint8_t *modes, int *sel,
                    float *w)
{
    const int ne = b->n_expert, k = b->n_used;
    float p[SLM_MOE_MAX_EXPERTS];
    memcpy(p, logits, (size_t)ne * sizeof *p);
    if (b->gating == SLM_MOE_SIGMOID)
        for (int e = 0; e < ne; e++) p[e] = 1.0f / (1.0f + expf(-p[e]));
    else
        slm_ops_softmax(p, 1, ne);   /* over all experts, sum in double (ggml_soft_max) */
    /* slot order: forced experts, then the others by decreasing p; ties go
     * to the lower index (a stable descending sort) */
    unsigned char taken[SLM_MOE_MAX_EXPERTS] = {0};
    int s = 0;
    for (int pass = 0; pass < 2 && s < k; pass++) {
        const int want = pass == 0 ? SLM_MOE_FORCED : SLM_MOE_NORMAL;
        while (s < k) {
            int best = -1;
            for (int e = 0; e < ne; e++) {
                const int mode = modes ? modes[e] : SLM_MOE_NORMAL;
                if (taken[e] || mode != want) continue;
                if (best < 0 || p[e] > p[best]) best = e;
            }
            if (best < 0) break;
            taken[best] = 1;
            sel[s++] = best;
        }
    }
    /* fewer selectable experts than slots cannot happen with checked modes;
     * fill with the first free ones so that sel stays valid */
    for (int e = 0; s < k && e < ne; e++)
        if (!taken[e]) taken[e] = 1, sel[s++] = e;
    for (int i = 0; i < k; i++) w[i] = p[sel[i]];
    if (b->norm_topk) {
        double sum = 0;
        for (int i = 0; i < k; i++) sum += w[i];
        /* the reference clamps the sum below at 2^-14 */
        float fs = (float)sum;
        if (fs < 6.103515625e-5f) fs = 6.103515625e-5f;
        for (int i = 0; i < k; i++) w[i] /= fs;
    }
    if (b->scale != 1.0f)
        for (int i = 0; i < k; i++) w[i] *= b->scale;
}

/* The forward's scratch for n rows. */
typedef struct moe_scratch {
    int *sel;        /* (n, k) chosen experts */
    float *w;        /* (n, k) their weights */
    int *start;      /* n_expert + 1: expert e's (row, slot) pairs are pair[start[e] .. start[e+1]) */
    int *pair;       /* (n k) row * k + slot, grouped by expert */
    float *xg;       /* (n, dim) the rows of one expert, gathered */
    float *g, *u;    /* (max(n, k), n_ff) gate and up outputs */
    float *d;        /* (n, dim) down output */
    float *y;        /* (n, k, dim) weighted expert outputs per slot */
    float *sh, *shg; /* (n, dim) shared expert output, (n) its gate */
    slm_work rest;   /* the shared expert's own workspace */
} moe_scratch;

static size_t moe_carve(const slm_moe_block *b, int n, int64_t dim, const slm_work *work, moe_scratch *m)
{
    const size_t nn = (size_t)n, k = (size_t)b->n_used, ff = (size_t)b->n_ff, d = (size_t)dim;
    const size_t shared = b->has_shared ? slm_ffn_work_size(&b->shared, n) : 0;
    /* g and u: n rows of one expert, or (decode) one row of each of k experts */
    const size_t gu = (nn > k ? nn : k) * ff * sizeof(float);
    const size_t sizes[11] = {
        nn * k * sizeof(int), nn * k * sizeof(float), ((size_t)b->n_expert + 1) * sizeof(int),
        nn * k * sizeof(int), nn * d * sizeof(float), gu, gu,
        nn * d * sizeof(float), nn * k * d * sizeof(float),
        b->has_shared ? nn * d * sizeof(float) : 0, b->has_shared ? nn * sizeof(float) : 0};
    size_t total = slm_work_round(shared);
    for (int i = 0; i < 11; i++) total += slm_work_round(sizes[i]);
    if (!work) return total;
    slm_work_cursor c = slm_work_begin(work);
    void **p[11] = {(void **)&m->sel, (void **)&m->w, (void **)&m->start, (void **)&m->pair,
                    (void **)&m->xg, (void **)&m->g, (void **)&m->u, (void **)&m->d, (void **)&m->y,
                    (void **)&m->sh, (void **)&m->shg};
    for (int i = 0; i < 11; i++) {
        *p[i] = sizes[i] ? slm_work_take(&c, sizes[i]) : NULL;
        if (sizes[i] && !*p[i]) return 0;
    }
    m->rest = (slm_work){NULL, 0};
    if (shared) {
        m->rest.base = slm_work_take(&c, shared);
        m->rest.bytes = slm_work_round(shared);
        if (!m->rest.base) return 0;
    }
    return total;
}

size_t slm_moe_work_size(const slm_moe_block *b, int n, int64_t dim)
{
    return moe_carve(b, n, dim, NULL, NULL);
}

static void act_gated(slm_ffn_act a, float *g, const float *u, int64_t n)
{
    if (a == SLM_FFN_GELU) slm_ops_gelu_f16(g, g, n);
    else slm_ops_silu(g, g, n);
    slm_ops_mul(g, g, n, u, n);
}

slm_status slm_moe_forward(slm_pool *pool, const slm_moe_block *b, int n, const float *x,
                           const float *logits, const uint8_t *modes, int64_t *const *counts,
                           float *out, int64_t dim, const slm_work *work, slm_error *err)
{
    const int ne = b->n_expert, k = b->n_used;
    const int64_t ff = b->n_ff;
    moe_scratch m;
    if (!moe_carve(b, n, dim, work, &m))
        return slm_error_set(err, SLM_EINVAL, "moe: the workspace holds %zu bytes, %d rows need %zu",
                             work ? work->bytes : 0, n, slm_moe_work_size(b, n, dim));
    /* routing, then (row, slot) pairs grouped by expert (rows in order) */
    memset(m.start, 0, ((size_t)ne + 1) * sizeof *m.start);
    for (int i = 0; i < n; i++) {
        slm_moe_select(b, logits + (size_t)i * (size_t)ne, modes, m.sel + (size_t)i * k, m.w + (size_t)i * k);
        for (int s = 0; s < k; s++) m.start[m.sel[(size_t)i * k + s] + 1]++;
    }
    for (int e = 0; e < ne; e++) m.start[e + 1] += m.start[e];
    int fill[SLM_MOE_MAX_EXPERTS];
    memcpy(fill, m.start, (size_t)ne * sizeof *fill);
    for (int i = 0; i < n; i++)
        for (int s = 0; s < k; s++) m.pair[fill[m.sel[(size_t)i * k + s]]++] = i * k + s;
    slm_status st;
    if (counts)
        for (int i = 0; i < n; i++)
            for (int s = 0; s < k; s++) counts[i][m.sel[(size_t)i * k + s]]++;
    if (n == 1 && k > 1 && 2 * k <= SLM_MATMUL_MAX_PARTS) {
        /* decode: every chosen expert reads the one row, so their gate and
         * up products share one dispatch (one encoding of x); their g and u
         * go to consecutive n_ff slices (slot order) */
        slm_matmul_part p[SLM_MATMUL_MAX_PARTS];
        for (int s = 0; s < k; s++) {
            p[2 * s] = slm_matmul_part_of(b->gate, m.sel[s], m.g + (size_t)s * (size_t)ff);
            p[2 * s + 1] = slm_matmul_part_of(b->up, m.sel[s], m.u + (size_t)s * (size_t)ff);
        }
        if ((st = slm_matmul_multi(pool, p, 2 * k, x, 1, dim, err))) return st;
        act_gated(b->act, m.g, m.u, (int64_t)k * ff);
        for (int s = 0; s < k; s++) {
            float *ys = m.y + (size_t)s * (size_t)dim;
            if ((st = slm_matmul_w(pool, ys, b->down, m.sel[s], m.g + (size_t)s * (size_t)ff, 1, err))) return st;
            slm_ops_scale(ys, ys, dim, m.w[s]);
        }
    } else
    for (int e = 0; e < ne; e++) {
        const int cnt = m.start[e + 1] - m.start[e];
        if (!cnt) continue;
        const int *pr = m.pair + m.start[e];
        /* one row needs no gathering */
        const float *xe = x + (size_t)(pr[0] / k) * (size_t)dim;
        if (cnt > 1) {
            for (int j = 0; j < cnt; j++)
                memcpy(m.xg + (size_t)j * (size_t)dim, x + (size_t)(pr[j] / k) * (size_t)dim,
                       (size_t)dim * sizeof(float));
            xe = m.xg;
        }
        const slm_matmul_part p[2] = {slm_matmul_part_of(b->gate, e, m.g), slm_matmul_part_of(b->up, e, m.u)};
        if ((st = slm_matmul_multi(pool, p, 2, xe, cnt, dim, err))) return st;
        act_gated(b->act, m.g, m.u, (int64_t)cnt * ff);
        if ((st = slm_matmul_w(pool, m.d, b->down, e, m.g, cnt, err))) return st;
        for (int j = 0; j < cnt; j++) {
            const float we = m.w[pr[j]];
            const float *dj = m.d + (size_t)j * (size_t)dim;
            float *yj = m.y + (size_t)pr[j] * (size_t)dim;   /* pair index = row * k + slot */
            for (int64_t c = 0; c < dim; c++) yj[c] = dj[c] * we;
        }
    }
    /* out = y_0 + y_1 + ... in slot order */
    for (int i = 0; i < n; i++) {
        float *o = out + (size_t)i * (size_t)dim;
        const float *yi = m.y + (size_t)i * k * (size_t)dim;
        memcpy(o, yi, (size_t)dim * sizeof *o);
        for (int s = 1; s < k; s++) slm_ops_add(o, o, dim, yi + (size_t)s * (size_t)dim, dim);
    }
    if (b->has_shared) {
        if ((st = slm_ffn_forward(pool, &b->shared, n, x, m.sh, dim, &m.rest, err))) return st;
        if (b->shexp_gate) {
            if ((st = small_f32(pool, m.shg, b->shexp_gate, x, n, err))) return st;
            for (int i = 0; i < n; i++) {
                const float sg = 1.0f / (1.0f + expf(-m.shg[i]));
                slm_ops_scale(m.sh + (size_t)i * (size_t)dim, m.sh + (size_t)i * (size_t)dim, dim, sg);
            }
        }
        slm_ops_add(out, out, (int64_t)n * dim, m.sh, (int64_t)n * dim);
    }
    return SLM_OK;
}
