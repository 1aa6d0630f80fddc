#include "shortconv.h"

#include <stdlib.h>
#include <string.h>

#include "../core/snapshot.h"
#include "../kernels/matmul.h"
#include "../kernels/ops.h"

/* keeps dim * 3 * n_batch * 4 bytes far from overflow */
#define SHORTCONV_MAX_DIM (1 << 20)
#define SHORTCONV_MAX_SLOTS 4096

/* --- checks --------------------------------------------------------------------- */

static slm_status shape_check(int64_t dim, int l_cache, slm_error *err)
{
    if (dim < 1 || dim > SHORTCONV_MAX_DIM || l_cache < 1 || l_cache > SLM_SHORTCONV_MAX_CACHE)
        return slm_error_set(err, SLM_EINVAL, "shortconv: dim %lld (1..%d) or l_cache %d (1..%d) out of range",
                             (long long)dim, SHORTCONV_MAX_DIM, l_cache, SLM_SHORTCONV_MAX_CACHE);
    return SLM_OK;
}

slm_status slm_shortconv_check(const slm_shortconv_block *b, slm_error *err)
{
    slm_status st = shape_check(b->dim, b->l_cache, err);
    if (st) return st;
    if (!b->conv) return slm_error_set(err, SLM_EINVAL, "shortconv.conv: missing taps");
    if ((st = slm_matmul_check_weight(b->in_proj, "shortconv.in_proj", 3 * b->dim, b->dim, err))) return st;
    return slm_matmul_check_weight(b->out_proj, "shortconv.out_proj", b->dim, b->dim, err);
}

/* --- state ------------------------------------------------------------------------ */

slm_shortconv_state *slm_shortconv_state_new(int n_slot, int64_t dim, int l_cache, slm_error *err)
{
    if (shape_check(dim, l_cache, err) != SLM_OK) return NULL;
    if (n_slot < 1 || n_slot > SHORTCONV_MAX_SLOTS) {
        slm_error_set(err, SLM_EINVAL, "shortconv state: %d layers out of range 1..%d", n_slot,
                      SHORTCONV_MAX_SLOTS);
        return NULL;
    }
    slm_shortconv_state *s = calloc(1, sizeof *s);
    if (s) {
        s->n_slot = n_slot;
        s->dim = dim;
        s->l_cache = l_cache;
        /* l_cache 1 keeps nothing; one float keeps the allocation non-empty */
        s->v = calloc(slm_shortconv_state_len(s) + 1, sizeof(float));
    }
    if (!s || !s->v) {
        slm_shortconv_state_free(s);
        slm_error_set(err, SLM_ENOMEM, "out of memory allocating the conv state of %d layers", n_slot);
        return NULL;
    }
    return s;
}

void slm_shortconv_state_free(slm_shortconv_state *s)
{
    if (!s) return;
    free(s->v);
    free(s);
}

size_t slm_shortconv_state_len(const slm_shortconv_state *s)
{
    return (size_t)s->n_slot * (size_t)s->dim * (size_t)(s->l_cache - 1);
}

void slm_shortconv_state_clear(slm_shortconv_state *s)
{
    memset(s->v, 0, slm_shortconv_state_len(s) * sizeof(float));
}

/* --- snapshots (layout in shortconv.h) ------------------------------------------------ */

static const slm_snap_kind SC_SNAP = {
    {'S', 'C', 'N', 'V'}, 2, "a conv state", 3, (const char *const[]){"conv layers", "channels", "l_cache"},
    "SLMSC1\0\0", 4, 3};

static void state_dims(const slm_shortconv_state *s, int64_t *d, size_t *len)
{
    d[0] = s->n_slot;
    d[1] = s->dim;
    d[2] = s->l_cache;
    *len = slm_shortconv_state_len(s) * sizeof(float);
}

size_t slm_shortconv_snapshot_size(const slm_shortconv_state *s)
{
    int64_t d[3];
    size_t len;
    state_dims(s, d, &len);
    return slm_snap_flat_size(&SC_SNAP, 1, &len);
}

void slm_shortconv_snapshot(const slm_shortconv_state *s, int n_past, void *buf)
{
    int64_t d[3];
    size_t len;
    state_dims(s, d, &len);
    slm_snap_flat_write(&SC_SNAP, buf, n_past, d, 1, (const void *const[]){s->v}, &len);
}

slm_status slm_shortconv_restore(slm_shortconv_state *s, const void *buf, size_t len, int *n_past,
                                 slm_error *err)
{
    int64_t d[3];
    size_t body;
    state_dims(s, d, &body);
    return slm_snap_flat_read(&SC_SNAP, buf, len, d, 1, (void *const[]){s->v}, &body, n_past, err);
}

/* --- the block ------------------------------------------------------------------------ */

/* The scratch of n rows: bcx (n, 3 dim), in_proj's rows (v = B * X is
 * written over B), and y (n, dim), the gated conv output out_proj reads. */
static size_t carve(const slm_shortconv_block *b, int n, const slm_work *work, float **bcx, float **y)
{
    const size_t row = (size_t)n * (size_t)b->dim * sizeof(float);
    if (work) {
        slm_work_cursor c = slm_work_begin(work);
        *bcx = slm_work_take(&c, 3 * row);
        *y = slm_work_take(&c, row);
        if (!*bcx || !*y) return 0;
    }
    return slm_work_round(3 * row) + slm_work_round(row);
}

size_t slm_shortconv_work_size(const slm_shortconv_block *b, int n)
{
    return carve(b, n, NULL, NULL, NULL);
}

slm_status slm_shortconv_forward(slm_pool *pool, const slm_shortconv_block *b,
                                 slm_shortconv_state *s, int slot, int n, const float *x,
                                 float *out, const slm_work *work, slm_error *err)
{
    const int64_t d = b->dim, ld = 3 * d;
    if (slot < 0 || slot >= s->n_slot || n < 1)
        return slm_error_set(err, SLM_EINVAL, "shortconv forward: slot %d or %d rows out of range", slot, n);
    if (s->dim != d || s->l_cache != b->l_cache)
        return slm_error_set(err, SLM_EINVAL, "shortconv forward: state of %lld channels (l_cache %d) for a "
                             "block of %lld (l_cache %d)", (long long)s->dim, s->l_cache, (long long)d,
                             b->l_cache);
    float *bcx = NULL, *y = NULL;
    if (!carve(b, n, work, &bcx, &y))
        return slm_error_set(err, SLM_EINVAL, "shortconv: the workspace holds %zu bytes, %d rows need %zu",
                             work ? work->bytes : 0, n, slm_shortconv_work_size(b, n));
    slm_status st;
    /* bcx (n, 3 dim) = in_proj(x): B | C | X per row */
    if ((st = slm_matmul_w(pool, bcx, b->in_proj, -1, x, n, err))) return st;
    /* v = B * X, over B */
    for (int t = 0; t < n; t++) {
        float *row = bcx + (size_t)t * (size_t)ld;
        slm_ops_mul(row, row, d, row + 2 * d, d);
    }
    /* y = conv(v) over time, then y *= C; the conv is O(n dim l_cache),
     * small beside the projections, so it runs on this thread */
    float *state = s->v + (size_t)slot * (size_t)d * (size_t)(b->l_cache - 1);
    slm_ops_causal_conv(y, d, bcx, ld, n, state, b->conv, b->l_cache, 0, d);
    for (int t = 0; t < n; t++) {
        float *yt = y + (size_t)t * (size_t)d;
        slm_ops_mul(yt, yt, d, bcx + (size_t)t * (size_t)ld + d, d);
    }
    /* out (n, dim) = out_proj(C * conv) */
    return slm_matmul_w(pool, out, b->out_proj, -1, y, n, err);
}
