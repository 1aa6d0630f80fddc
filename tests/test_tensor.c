/* Tensor core tests: view arithmetic against an independent index model,
 * bounds checks, block-quantized invariants, copies across dtypes and
 * shapes, element access and read-only storage. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fp16.h"
#include "core/tensor.h"

static int passed, failed;

#define CHECK(cond, ...)                                              \
    do {                                                              \
        if (cond) {                                                   \
            passed++;                                                 \
        } else {                                                      \
            failed++;                                                 \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);               \
            printf(__VA_ARGS__);                                      \
            printf("\n");                                             \
        }                                                             \
    } while (0)

/* ---- an independent model of views ------------------------------------
 * A view is modelled as its shape plus the list, in row-major order, of
 * the flat indices (into the original contiguous tensor) of its elements.
 * Ops on the model are written by enumerating multi-indices, not with
 * strides, so they check the stride arithmetic of tensor.c. */

#define MAXN 720

typedef struct model {
    int ndim;
    int64_t shape[SLM_MAX_DIMS];
    int64_t n;
    int64_t flat[MAXN];
} model;

static int64_t shape_numel(int ndim, const int64_t *shape)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) n *= shape[i];
    return n;
}

/* multi-index of row-major position p */
static void unravel(int ndim, const int64_t *shape, int64_t p, int64_t *idx)
{
    for (int i = ndim - 1; i >= 0; i--) {
        idx[i] = p % shape[i];
        p /= shape[i];
    }
}

static int64_t ravel(int ndim, const int64_t *shape, const int64_t *idx)
{
    int64_t p = 0;
    for (int i = 0; i < ndim; i++) p = p * shape[i] + idx[i];
    return p;
}

static void model_narrow(const model *m, int dim, int64_t start, int64_t len, model *o)
{
    *o = *m;
    o->shape[dim] = len;
    o->n = shape_numel(o->ndim, o->shape);
    for (int64_t p = 0; p < o->n; p++) {
        int64_t idx[SLM_MAX_DIMS];
        unravel(o->ndim, o->shape, p, idx);
        idx[dim] += start;
        o->flat[p] = m->flat[ravel(m->ndim, m->shape, idx)];
    }
}

static void model_select(const model *m, int dim, int64_t index, model *o)
{
    o->ndim = m->ndim - 1;
    for (int i = 0, j = 0; i < m->ndim; i++)
        if (i != dim) o->shape[j++] = m->shape[i];
    o->n = shape_numel(o->ndim, o->shape);
    for (int64_t p = 0; p < o->n; p++) {
        int64_t idx[SLM_MAX_DIMS], full[SLM_MAX_DIMS];
        unravel(o->ndim, o->shape, p, idx);
        for (int i = 0, j = 0; i < m->ndim; i++) full[i] = i == dim ? index : idx[j++];
        o->flat[p] = m->flat[ravel(m->ndim, m->shape, full)];
    }
}

static void model_transpose(const model *m, int d0, int d1, model *o)
{
    *o = *m;
    o->shape[d0] = m->shape[d1];
    o->shape[d1] = m->shape[d0];
    for (int64_t p = 0; p < o->n; p++) {
        int64_t idx[SLM_MAX_DIMS];
        unravel(o->ndim, o->shape, p, idx);
        int64_t tmp = idx[d0];
        idx[d0] = idx[d1];
        idx[d1] = tmp;
        o->flat[p] = m->flat[ravel(m->ndim, m->shape, idx)];
    }
}

/* Compares a view with its model: same shape, every element's value (the
 * original tensor holds its flat index as value) and every element's bytes
 * inside the storage. */
static int view_matches(const slm_tensor *t, const model *m)
{
    if (t->ndim != m->ndim) return 0;
    for (int i = 0; i < m->ndim; i++)
        if (t->shape[i] != m->shape[i]) return 0;
    const unsigned char *base = t->storage->data;
    for (int64_t p = 0; p < m->n; p++) {
        int64_t idx[SLM_MAX_DIMS], e = 0;
        unravel(m->ndim, m->shape, p, idx);
        for (int i = 0; i < t->ndim; i++) e += idx[i] * t->stride[i];
        const unsigned char *a = (const unsigned char *)slm_tensor_data(t) +
                                 slm_tensor_elem_bytes(t, e);
        if (a < base || a + 4 > base + t->storage->size) return 0;
        double v;
        if (slm_tensor_get(t, idx, &v, NULL) != SLM_OK || v != (double)m->flat[p]) return 0;
    }
    return 1;
}

#define TESTRAND_SEED 12345
#include "testrand.h"
static int64_t rnd(int64_t lo, int64_t hi)   /* uniform in [lo, hi] */
{
    return lo + (int64_t)(urand() % (uint32_t)(hi - lo + 1));
}

/* Random chains of views, valid and invalid parameters mixed: an op must
 * fail exactly when the model says its arguments are out of range, and a
 * view that is made must match the model everywhere. */
static void test_random_views(void)
{
    const int64_t shape[4] = {3, 4, 5, 6};
    slm_error err;
    slm_tensor *base = slm_tensor_new(SLM_DTYPE_F32, 4, shape, &err);
    float *p = slm_tensor_data(base);
    for (int i = 0; i < 360; i++) p[i] = (float)i;
    model m0 = {4, {3, 4, 5, 6}, 360, {0}};
    for (int i = 0; i < 360; i++) m0.flat[i] = i;

    int bad_views = 0, wrong_accept = 0, made = 0, refused = 0;
    for (int chain = 0; chain < 300; chain++) {
        slm_tensor *t = slm_tensor_view(base, &err);
        model m = m0, o;
        for (int step = 0; step < 4 && t; step++) {
            slm_tensor *v = NULL;
            int ok = 0;
            int op = (int)rnd(0, 3);
            if (op == 0) {
                int dim = (int)rnd(-1, t->ndim);
                int64_t start = rnd(-1, 6), len = rnd(-1, 7);
                ok = dim >= 0 && dim < t->ndim && start >= 0 && len >= 1 &&
                     start + len <= t->shape[dim];
                v = slm_tensor_narrow(t, dim, start, len, &err);
                if (ok) model_narrow(&m, dim, start, len, &o);
            } else if (op == 1) {
                int dim = (int)rnd(-1, t->ndim);
                int64_t index = rnd(-1, 6);
                ok = t->ndim > 1 && dim >= 0 && dim < t->ndim && index >= 0 &&
                     index < t->shape[dim];
                v = slm_tensor_select(t, dim, index, &err);
                if (ok) model_select(&m, dim, index, &o);
            } else if (op == 2) {
                int d0 = (int)rnd(-1, t->ndim), d1 = (int)rnd(0, t->ndim);
                ok = d0 >= 0 && d0 < t->ndim && d1 < t->ndim;
                v = slm_tensor_transpose(t, d0, d1, &err);
                if (ok) model_transpose(&m, d0, d1, &o);
            } else {
                /* reshape to (n/k, k) or flat when contiguous */
                int64_t k = rnd(1, 6), s2[2] = {-1, k};
                ok = slm_tensor_is_contiguous(t) && m.n % k == 0;
                v = slm_tensor_reshape(t, 2, s2, &err);
                if (ok) {
                    o = m;
                    o.ndim = 2;
                    o.shape[0] = m.n / k;
                    o.shape[1] = k;
                }
            }
            if (ok != (v != NULL)) wrong_accept++;
            if (v) {
                made++;
                if (ok && !view_matches(v, &o)) bad_views++;
                m = o;
            } else {
                refused++;
            }
            slm_tensor_free(t);
            t = v;
        }
        slm_tensor_free(t);
    }
    CHECK(bad_views == 0, "%d views disagree with the index model", bad_views);
    CHECK(wrong_accept == 0, "%d ops accepted/refused against the model", wrong_accept);
    CHECK(made > 100 && refused > 100, "made %d, refused %d: both paths exercised", made,
          refused);
    CHECK(base->storage->refcount == 1, "views released their storage references (%d)",
          base->storage->refcount);
    slm_tensor_free(base);
    printf("random views: %d made, %d refused\n", made, refused);
}

static void test_bounds(void)
{
    const int64_t shape[2] = {4, 6};
    slm_error err;
    slm_tensor *t = slm_tensor_new(SLM_DTYPE_F32, 2, shape, &err);
    CHECK(slm_tensor_narrow(t, 1, 4, 3, &err) == NULL && err.code == SLM_ERANGE,
          "narrow past the end is refused");
    CHECK(strstr(err.msg, "outside dim 1 of size 6") != NULL, "message: %s", err.msg);
    CHECK(slm_tensor_narrow(t, 0, 0, 0, &err) == NULL, "narrow to length 0 is refused");
    CHECK(slm_tensor_narrow(t, 0, INT64_MAX, 2, &err) == NULL, "narrow start overflow");
    CHECK(slm_tensor_narrow(t, 0, 1, INT64_MAX, &err) == NULL, "narrow length overflow");
    CHECK(slm_tensor_narrow(t, 2, 0, 1, &err) == NULL && err.code == SLM_ERANGE,
          "narrow dim out of range");
    CHECK(slm_tensor_select(t, 0, 4, &err) == NULL, "select past the end");
    CHECK(slm_tensor_transpose(t, 0, 2, &err) == NULL, "transpose dim out of range");
    int64_t bad[2] = {5, 5}, neg[2] = {-1, -1}, inf[2] = {-1, 7}, big[2] = {INT64_MAX, 2};
    CHECK(slm_tensor_reshape(t, 2, bad, &err) == NULL, "reshape to the wrong numel");
    CHECK(slm_tensor_reshape(t, 2, neg, &err) == NULL, "reshape with two -1");
    CHECK(slm_tensor_reshape(t, 2, inf, &err) == NULL, "reshape: -1 not inferable");
    CHECK(slm_tensor_reshape(t, 2, big, &err) == NULL, "reshape: product overflow");
    CHECK(slm_tensor_reshape(t, 5, shape, &err) == NULL, "reshape: too many dims");
    slm_tensor *tt = slm_tensor_transpose(t, 0, 1, &err);
    int64_t flat[1] = {24};
    CHECK(slm_tensor_reshape(tt, 1, flat, &err) == NULL && strstr(err.msg, "contiguous"),
          "reshape of a transposed view is refused: %s", err.msg);
    int64_t idx[2] = {4, 0};
    double v;
    CHECK(slm_tensor_get(t, idx, &v, &err) == SLM_ERANGE, "get past the end");
    idx[0] = -1;
    CHECK(slm_tensor_set(t, idx, 1, &err) == SLM_ERANGE, "set before the start");
    float row[6];
    CHECK(slm_tensor_row_f32(t, 4, row, &err) == SLM_ERANGE, "row past the end");
    int64_t s3[1] = {4};
    slm_tensor *small = slm_tensor_new(SLM_DTYPE_F32, 1, s3, &err);
    CHECK(slm_tensor_copy(t, small, &err) == SLM_EINVAL && strstr(err.msg, "size mismatch"),
          "copy with different numel: %s", err.msg);
    CHECK(slm_tensor_select(small, 0, 0, &err) == NULL, "select on a 1-D tensor");
    /* a storage too small for the tensor */
    slm_storage *s = slm_storage_alloc(95, &err);
    CHECK(slm_tensor_from_storage(s, 0, SLM_DTYPE_F32, 2, shape, &err) == NULL,
          "from_storage past the end");
    CHECK(slm_tensor_from_storage(s, SIZE_MAX, SLM_DTYPE_F32, 1, s3, &err) == NULL,
          "from_storage offset overflow");
    slm_storage_unref(s);
    slm_tensor_free(small);
    slm_tensor_free(tt);
    slm_tensor_free(t);
}

/* q8_0 (32-element blocks of 34 bytes) constraints and element access */
static void test_quantized(void)
{
    const int64_t shape[3] = {2, 3, 64};
    slm_error err;
    slm_tensor *f = slm_tensor_new(SLM_DTYPE_F32, 3, shape, &err);
    float *p = slm_tensor_data(f);
    for (int i = 0; i < 384; i++) p[i] = (float)((i * 37) % 101 - 50) / 10.0f;
    slm_tensor *q = slm_tensor_convert(f, SLM_DTYPE_Q8_0, &err);
    CHECK(q && slm_tensor_nbytes(q) == 12 * 34, "q8_0 bytes");

    CHECK(slm_tensor_narrow(q, 2, 16, 32, &err) == NULL, "narrow inside a block");
    CHECK(slm_tensor_narrow(q, 2, 0, 48, &err) == NULL, "narrow to part of a block");
    slm_tensor *n = slm_tensor_narrow(q, 2, 32, 32, &err);
    CHECK(n && n->offset == 34, "narrow by a block moves 34 bytes (%zu)", n ? n->offset : 0);
    CHECK(slm_tensor_select(q, 2, 0, &err) == NULL && strstr(err.msg, "last dim"),
          "select on the last dim: %s", err.msg);
    CHECK(slm_tensor_transpose(q, 1, 2, &err) == NULL, "transpose moving the last dim");
    slm_tensor *tq = slm_tensor_transpose(q, 0, 1, &err);
    CHECK(tq != NULL, "transpose of the outer dims");
    int64_t odd[2] = {12, 32}, bad[2] = {24, 16};
    slm_tensor *rq = slm_tensor_reshape(q, 2, odd, &err);
    CHECK(rq != NULL, "reshape to whole blocks");
    CHECK(slm_tensor_reshape(q, 2, bad, &err) == NULL, "reshape splitting blocks");

    /* get = the dequantized row; checked on the transposed view too */
    float row[64];
    int same = 1;
    for (int64_t r = 0; r < 6; r++) {
        slm_tensor_row_f32(tq, r, row, &err);
        for (int64_t j = 0; j < 64; j++) {
            int64_t idx[3] = {r / 2, r % 2, j};
            double v;
            slm_tensor_get(tq, idx, &v, &err);
            if (v != row[j]) same = 0;
        }
    }
    CHECK(same, "get agrees with row_f32 on a transposed q8_0 view");
    /* q8_0 round trip: at most half a step d = max|x|/127 per block, plus
     * d's own f16 rounding (relative 2^-11) times |q| <= 127: 0.56 steps */
    slm_tensor *back = slm_tensor_convert(q, SLM_DTYPE_F32, &err);
    const float *b = slm_tensor_data(back);
    double worst = 0;
    for (int blk = 0; blk < 12; blk++) {
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(p[blk * 32 + j]));
        for (int j = 0; j < 32; j++) {
            double e = fabs(b[blk * 32 + j] - p[blk * 32 + j]) / (amax / 127.0);
            if (e > worst) worst = e;
        }
    }
    CHECK(worst <= 0.5 + 127.0 / 2048, "q8_0 round trip within half a step (%.3f steps)", worst);

    /* set requantizes only the element's block */
    slm_tensor *before = slm_tensor_convert(q, SLM_DTYPE_Q8_0, &err);
    int64_t idx[3] = {1, 2, 40};
    CHECK(slm_tensor_set(q, idx, 4.5, &err) == SLM_OK, "set on q8_0");
    double v;
    slm_tensor_get(q, idx, &v, &err);
    CHECK(fabs(v - 4.5) <= 4.5 / 127, "set value reads back within a step (%g)", v);
    const unsigned char *a = slm_tensor_data(q), *c = slm_tensor_data(before);
    int other_same = memcmp(a, c, 11 * 34) == 0;
    CHECK(other_same, "blocks other than the element's are unchanged");

    /* same-dtype copy is byte exact, even through views */
    slm_tensor *cl = slm_tensor_convert(tq, SLM_DTYPE_Q8_0, &err);
    slm_tensor *cl2 = slm_tensor_transpose(cl, 0, 1, &err);
    slm_tensor *q2 = slm_tensor_new(SLM_DTYPE_Q8_0, 3, shape, &err);
    CHECK(slm_tensor_copy(q2, cl2, &err) == SLM_OK &&
          memcmp(slm_tensor_data(q2), slm_tensor_data(q), slm_tensor_nbytes(q)) == 0,
          "q8_0 clone of a transposed view, transposed back, is byte exact");

    slm_tensor *views[] = {n, tq, rq, back, before, cl, cl2, q2, q, f};
    for (size_t i = 0; i < sizeof views / sizeof *views; i++) slm_tensor_free(views[i]);
}

/* f32 -> f16 / bf16 through copy, on a strided source, against the scalar
 * conversions element by element */
static void test_convert(void)
{
    const int64_t shape[2] = {5, 7};
    slm_error err;
    slm_tensor *f = slm_tensor_new(SLM_DTYPE_F32, 2, shape, &err);
    float *p = slm_tensor_data(f);
    for (int i = 0; i < 35; i++) p[i] = (float)(i - 17) * 0.3337f + (i == 3 ? 70000.0f : 0);
    slm_tensor *ft = slm_tensor_transpose(f, 0, 1, &err);   /* 7x5, strided */
    slm_tensor *h = slm_tensor_convert(ft, SLM_DTYPE_F16, &err);
    slm_tensor *bf = slm_tensor_convert(ft, SLM_DTYPE_BF16, &err);
    const slm_f16 *hp = slm_tensor_data(h);
    const slm_bf16 *bp = slm_tensor_data(bf);
    int ok = 1;
    for (int i = 0; i < 7; i++)
        for (int j = 0; j < 5; j++) {
            float x = p[j * 7 + i];
            if (hp[i * 5 + j] != slm_f32_to_f16(x) || bp[i * 5 + j] != slm_f32_to_bf16(x))
                ok = 0;
        }
    CHECK(ok, "strided f32 -> f16/bf16 matches the scalar conversions");
    CHECK(isinf(slm_f16_to_f32(hp[3 * 5 + 0])), "70000 overflows f16 to inf");

    /* copy between different shapes streams in row-major order: 5x7 f16
     * into 35 f32 and into 7x5 */
    int64_t flat[1] = {35};
    slm_tensor *g = slm_tensor_new(SLM_DTYPE_F32, 1, flat, &err);
    CHECK(slm_tensor_copy(g, h, &err) == SLM_OK, "copy f16 7x5 -> f32 35");
    const float *gp = slm_tensor_data(g);
    ok = 1;
    for (int i = 0; i < 35; i++)
        if (gp[i] != slm_f16_to_f32(hp[i])) ok = 0;
    CHECK(ok, "copy across shapes keeps row-major order");

    /* in-place overlap: t:copy_(t:t()) on a square matrix */
    const int64_t sq[2] = {3, 3};
    slm_tensor *s = slm_tensor_new(SLM_DTYPE_F32, 2, sq, &err);
    float *sp = slm_tensor_data(s);
    for (int i = 0; i < 9; i++) sp[i] = (float)i;
    slm_tensor *st = slm_tensor_transpose(s, 0, 1, &err);
    CHECK(slm_tensor_copy(s, st, &err) == SLM_OK, "overlapping copy");
    ok = 1;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            if (sp[i * 3 + j] != (float)(j * 3 + i)) ok = 0;
    CHECK(ok, "overlapping copy transposes correctly");

    /* integer dtypes: exact get/set, no conversion into them */
    int64_t four[1] = {4};
    slm_tensor *iv = slm_tensor_new(SLM_DTYPE_I32, 1, four, &err);
    int64_t i1[1] = {1};
    double v;
    CHECK(slm_tensor_set(iv, i1, 2147483647.0, &err) == SLM_OK &&
          slm_tensor_get(iv, i1, &v, &err) == SLM_OK && v == 2147483647.0,
          "i32 holds INT32_MAX exactly");
    CHECK(slm_tensor_set(iv, i1, 2147483648.0, &err) == SLM_ERANGE, "i32 overflow refused");
    CHECK(slm_tensor_set(iv, i1, 0.5, &err) == SLM_ERANGE, "i32 fraction refused");
    CHECK(slm_tensor_convert(f, SLM_DTYPE_I32, &err) == NULL &&
          err.code == SLM_EUNSUPPORTED, "f32 -> i32 is unsupported: %s", err.msg);
    slm_tensor *ivf = slm_tensor_convert(iv, SLM_DTYPE_F32, &err);
    CHECK(ivf && ((float *)slm_tensor_data(ivf))[1] == 2147483648.0f, "i32 -> f32");

    slm_tensor *all[] = {f, ft, h, bf, g, s, st, iv, ivf};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) slm_tensor_free(all[i]);
}

static void release_none(slm_storage *s) { (void)s; }

static void test_readonly(void)
{
    static float mem[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    slm_error err;
    slm_storage *s = slm_storage_wrap(mem, sizeof mem, 1, release_none, NULL, &err);
    int64_t shape[2] = {2, 4};
    slm_tensor *t = slm_tensor_from_storage(s, 0, SLM_DTYPE_F32, 2, shape, &err);
    slm_storage_unref(s);
    slm_tensor *n = slm_tensor_narrow(t, 1, 1, 2, &err);
    int64_t idx[2] = {0, 0};
    CHECK(slm_tensor_set(n, idx, 9, &err) == SLM_EINVAL && strstr(err.msg, "read-only"),
          "set on a read-only view: %s", err.msg);
    slm_tensor *c = slm_tensor_convert(n, SLM_DTYPE_F32, &err);
    CHECK(slm_tensor_copy(t, t, &err) == SLM_EINVAL, "copy into read-only storage");
    CHECK(c && slm_tensor_set(c, idx, 9, &err) == SLM_OK, "its clone is writable");
    double v;
    slm_tensor_get(n, idx, &v, &err);
    CHECK(v == 2 && mem[1] == 2, "read-only memory unchanged");
    slm_tensor_free(c);
    slm_tensor_free(n);
    slm_tensor_free(t);
}

int main(void)
{
    test_random_views();
    test_bounds();
    test_quantized();
    test_convert();
    test_readonly();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
