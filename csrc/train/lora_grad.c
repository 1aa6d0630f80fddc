#include "lora_grad.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "../kernels/matmul.h"
#include "../kernels/sgemm.h"

typedef struct deq_ctx {
    float *y, *dx;
    const float *x, *b, *dy;
    const unsigned char *W;    /* row 0 */
    size_t row_bytes;          /* between rows */
    slm_to_f32_fn to_f32;
    int64_t bs;                /* elements per block */
    size_t type_size;          /* bytes per block */
    int64_t n, in, out;
    int64_t cols_per_thread;   /* dx: whole blocks of columns per thread */
    float *buf;                /* per thread: SLM_LORA_CHUNK * buf_stride floats */
    int64_t buf_stride;
    int accumulate;
} deq_ctx;

static void split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

/* y[:, o0:o1] = x . deq(W[o0:o1])^T (+ b), chunk by chunk of rows */
static void forward_task(void *vc, int ith, int nth)
{
    const deq_ctx *c = vc;
    float *buf = c->buf + (size_t)ith * SLM_LORA_CHUNK * c->buf_stride;
    int64_t lo, hi;
    split(c->out, ith, nth, &lo, &hi);
    for (int64_t o0 = lo; o0 < hi; o0 += SLM_LORA_CHUNK) {
        const int64_t m = hi - o0 < SLM_LORA_CHUNK ? hi - o0 : SLM_LORA_CHUNK;
        for (int64_t r = 0; r < m; r++) c->to_f32(c->W + (o0 + r) * c->row_bytes, buf + r * c->in, c->in);
        float *y = c->y + o0;
        if (c->b)
            for (int64_t i = 0; i < c->n; i++) memcpy(y + i * c->out, c->b + o0, (size_t)m * sizeof(float));
        slm_sgemm(0, 1, (int)c->n, (int)m, (int)c->in, 1.0f, c->x, (int)c->in,
                    buf, (int)c->in, c->b ? 1.0f : 0.0f, y, (int)c->out);
    }
}

/* dx[:, i0:i1] (+)= dy . deq(W[:, i0:i1]): each thread whole blocks of
 * columns, so it dequantizes only its part of each row */
static void dx_task(void *vc, int ith, int nth)
{
    const deq_ctx *c = vc;
    (void)nth;
    const int64_t i0 = ith * c->cols_per_thread;
    const int64_t i1 = i0 + c->cols_per_thread < c->in ? i0 + c->cols_per_thread : c->in;
    if (i1 <= i0) return;
    const int64_t w = i1 - i0;
    float *buf = c->buf + (size_t)ith * SLM_LORA_CHUNK * c->buf_stride;
    const size_t col_bytes = (size_t)(i0 / c->bs) * c->type_size;
    for (int64_t o0 = 0; o0 < c->out; o0 += SLM_LORA_CHUNK) {
        const int64_t m = c->out - o0 < SLM_LORA_CHUNK ? c->out - o0 : SLM_LORA_CHUNK;
        for (int64_t r = 0; r < m; r++) c->to_f32(c->W + (o0 + r) * c->row_bytes + col_bytes, buf + r * w, w);
        const float beta = (o0 == 0 && !c->accumulate) ? 0.0f : 1.0f;
        slm_sgemm(0, 0, (int)c->n, (int)w, (int)m, 1.0f, c->dy + o0,
                    (int)c->out, buf, (int)w, beta, c->dx + i0, (int)c->in);
    }
}

static slm_status setup(deq_ctx *c, slm_pool **pool, const slm_tensor *W, int64_t n, slm_error *err)
{
    const slm_dtype_traits *t = slm_dtype_get((int)W->dtype);
    if (W->ndim != 2 || !t || !t->to_f32)
        return slm_error_set(err, SLM_EINVAL, "lora: the base weight must be a 2-D tensor of a dequantizable dtype");
    if (n < 0 || n > (1 << 30) || W->shape[0] > (1 << 30) || W->shape[1] > (1 << 30))
        return slm_error_set(err, SLM_ERANGE, "lora: shape out of range");
    const slm_matmul_part p = slm_matmul_part_of(W, -1, NULL);
    c->W = p.W;
    c->row_bytes = p.w_row_bytes;
    c->to_f32 = t->to_f32;
    c->bs = t->block_size;
    c->type_size = t->type_size;
    c->n = n;
    c->out = W->shape[0];
    c->in = W->shape[1];
    if (slm_pool_busy(*pool)) *pool = NULL;
    return SLM_OK;
}

static int threads_for(slm_pool *pool, double work)
{
    const int nth = slm_pool_size(pool);
    const double k = work / (64.0 * 1024);
    return k < 1 ? 1 : k < nth ? (int)k : nth;
}

static float *scratch(slm_pool *pool, size_t floats, void **owned, slm_error *err)
{
    *owned = NULL;
    if (pool) return slm_pool_scratch(pool, floats * sizeof(float), err);
    float *p = *owned = malloc(floats ? floats * sizeof(float) : 1);
    if (!p) slm_error_set(err, SLM_ENOMEM, "lora: out of memory for %zu floats of scratch", floats);
    return p;
}

slm_status slm_lora_deq_linear(slm_pool *pool, float *y, const float *x, const slm_tensor *W, const float *b,
                               int64_t n, slm_error *err)
{
    deq_ctx c = {.y = y, .x = x, .b = b};
    slm_status st = setup(&c, &pool, W, n, err);
    if (st || n == 0) return st;
    const int nth = threads_for(pool, (double)n * c.in * c.out);
    c.buf_stride = c.in;
    void *owned;
    c.buf = scratch(pool, (size_t)nth * SLM_LORA_CHUNK * c.buf_stride, &owned, err);
    if (!c.buf) return err->code ? err->code : SLM_ENOMEM;
    slm_pool_run(pool, nth, forward_task, &c);
    free(owned);
    return SLM_OK;
}

slm_status slm_lora_deq_linear_dx(slm_pool *pool, float *dx, const float *dy, const slm_tensor *W, int64_t n,
                                  int accumulate, slm_error *err)
{
    deq_ctx c = {.dx = dx, .dy = dy, .accumulate = accumulate};
    slm_status st = setup(&c, &pool, W, n, err);
    if (st || n == 0) return st;
    const int64_t blocks = c.in / c.bs;
    int nth = threads_for(pool, (double)n * c.in * c.out);
    if (nth > blocks) nth = (int)blocks;
    c.cols_per_thread = (blocks + nth - 1) / nth * c.bs;
    c.buf_stride = c.cols_per_thread;
    void *owned;
    c.buf = scratch(pool, (size_t)nth * SLM_LORA_CHUNK * c.buf_stride, &owned, err);
    if (!c.buf) return err->code ? err->code : SLM_ENOMEM;
    slm_pool_run(pool, nth, dx_task, &c);
    free(owned);
    return SLM_OK;
}

/* splitmix64 (Steele, Lea, Flood 2014): a counter-based stream, so the
 * element i's draw does not depend on the order or the thread */
static uint64_t mix64(uint64_t z)
{
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void slm_lora_dropout(float *out, const float *x, int64_t count, float p, uint64_t seed)
{
    const float keep_scale = 1.0f / (1.0f - p);
    const uint64_t key = mix64(seed);
    for (int64_t i = 0; i < count; i++) {
        /* a uniform in [0, 1) from the top 24 bits */
        const float u = (float)(mix64(key ^ (uint64_t)i) >> 40) * (1.0f / 16777216.0f);
        out[i] = u < p ? 0.0f : x[i] * keep_scale;
    }
}
