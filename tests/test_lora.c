/* Unmerged LoRA links (core/lora_link.h, kernels/lora.h) and the frozen-base
 * products of LoRA training (train/lora_grad.h), against plain double loops:
 *   - slm_matmul_w over a weight carrying a link = the product without it
 *     + s (X A^T) B^T; scale 0 = the product without it, bit for bit;
 *   - a view shares the chain (one reference each), freeing in any order;
 *   - deq_linear / deq_linear_dx over q4_0 and q4_K = loops over the
 *     dequantized weight (the reference dequantizer, slm_tensor_convert). */
#include <math.h>
#include <string.h>

#include "../csrc/core/lora_link.h"
#include "../csrc/core/tensor.h"
#include "../csrc/kernels/matmul.h"
#include "../csrc/train/lora_grad.h"
#include "check.h"

static slm_tensor *filled(int64_t rows, int64_t cols, unsigned seed)
{
    slm_error err = {0};
    const int64_t shape[2] = {rows, cols};
    slm_tensor *t = slm_tensor_new(SLM_DTYPE_F32, 2, shape, &err);
    float *d = slm_tensor_data(t);
    unsigned x = seed;
    for (int64_t i = 0; i < rows * cols; i++) {
        x = x * 1103515245u + 12345u;
        d[i] = ((float)((x >> 8) & 0xffff) / 65536.0f - 0.5f);
    }
    return t;
}

static void test_link(void)
{
    enum { M = 3, K = 64, N = 40, R = 4 };
    slm_error err = {0};
    slm_tensor *W = filled(N, K, 1), *X = filled(M, K, 2), *A = filled(R, K, 3), *B = filled(N, R, 4);
    const float s = 0.75f;
    float base[M * N], with[M * N], zero[M * N];
    CHECK(slm_matmul_w(NULL, base, W, -1, slm_tensor_data(X), M, &err) == SLM_OK, "base product: %s", err.msg);
    slm_lora_link *l = slm_lora_link_new(A, B, s, &err);
    CHECK(l != NULL, "link: %s", err.msg);
    slm_tensor *V = slm_tensor_view(W, &err);
    V->lora = l;   /* V owns the reference link_new gave */
    slm_tensor *V2 = slm_tensor_view(V, &err);   /* shares the chain */
    CHECK(l->refs == 2, "a view takes a reference (refs %d)", l->refs);
    CHECK(slm_matmul_w(NULL, with, V2, -1, slm_tensor_data(X), M, &err) == SLM_OK, "lora product: %s", err.msg);
    const float *x = slm_tensor_data(X), *a = slm_tensor_data(A), *b = slm_tensor_data(B);
    double worst = 0;
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++) {
            double t = 0;
            for (int r = 0; r < R; r++) {
                double xa = 0;
                for (int k = 0; k < K; k++) xa += (double)x[m * K + k] * a[r * K + k];
                t += xa * b[n * R + r];
            }
            worst = fmax(worst, fabs(with[m * N + n] - (base[m * N + n] + s * t)));
        }
    CHECK(worst < 1e-5, "W x + s B A x: max error %g", worst);
    l->scale = 0.0f;
    CHECK(slm_matmul_w(NULL, zero, V2, -1, slm_tensor_data(X), M, &err) == SLM_OK, "scale 0: %s", err.msg);
    CHECK(memcmp(zero, base, sizeof base) == 0, "scale 0 is the base bit for bit");
    slm_tensor_free(V);
    CHECK(l->refs == 1, "freeing one view leaves the other's reference");
    slm_tensor_free(V2);   /* frees the link (ASan: no leak, no use after free) */
    CHECK(slm_lora_link_new(A, A, 1, &err) == NULL && err.code == SLM_EINVAL, "r of A and B must agree");
    slm_tensor_free(W); slm_tensor_free(X); slm_tensor_free(A); slm_tensor_free(B);
}

static void test_deq(slm_dtype dt)
{
    enum { n = 5, in = 256, out = 70 };
    slm_error err = {0};
    slm_tensor *Wf = filled(out, in, 7), *x = filled(n, in, 8), *dy = filled(n, out, 9);
    slm_tensor *W = slm_tensor_convert(Wf, dt, &err);
    slm_tensor *Wd = slm_tensor_convert(W, SLM_DTYPE_F32, &err);   /* the reference dequantizer */
    const float *w = slm_tensor_data(Wd), *xv = slm_tensor_data(x), *g = slm_tensor_data(dy);
    float y[n * out], dx[n * in];
    CHECK(slm_lora_deq_linear(NULL, y, xv, W, NULL, n, &err) == SLM_OK, "deq_linear: %s", err.msg);
    CHECK(slm_lora_deq_linear_dx(NULL, dx, g, W, n, 0, &err) == SLM_OK, "deq_linear_dx: %s", err.msg);
    double ey = 0, ex = 0;
    for (int i = 0; i < n; i++) {
        for (int o = 0; o < out; o++) {
            double t = 0;
            for (int k = 0; k < in; k++) t += (double)xv[i * in + k] * w[o * in + k];
            ey = fmax(ey, fabs(y[i * out + o] - t));
        }
        for (int k = 0; k < in; k++) {
            double t = 0;
            for (int o = 0; o < out; o++) t += (double)g[i * out + o] * w[o * in + k];
            ex = fmax(ex, fabs(dx[i * in + k] - t));
        }
    }
    CHECK(ey < 1e-4, "%s: y = x deq(W)^T: max error %g", slm_dtype_name(dt), ey);
    CHECK(ex < 1e-4, "%s: dx = dy deq(W): max error %g", slm_dtype_name(dt), ex);
    slm_tensor_free(Wf); slm_tensor_free(x); slm_tensor_free(dy); slm_tensor_free(W); slm_tensor_free(Wd);
}

int main(void)
{
    test_link();
    test_deq(SLM_DTYPE_Q4_0);
    test_deq(SLM_DTYPE_Q4_K);
    test_deq(SLM_DTYPE_F16);
    return check_summary();
}
