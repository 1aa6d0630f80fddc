/* Generic float32 ops (see ops.h for the formulas and their reference).
 * Plain loops that the compiler vectorizes; sums that feed a normalization
 * are accumulated in double as the reference does (ggml_float). The ops
 * bound by libm calls hand over to their AVX2 twins (ops_avx2.c) when the
 * CPU has them. */
#include "ops.h"

#include <math.h>

#include "vecdot.h"

void slm_ops_add(float *out, const float *a, int64_t na, const float *b, int64_t nb)
{
    for (int64_t r = 0; r < na; r += nb)
        for (int64_t i = 0; i < nb; i++) out[r + i] = a[r + i] + b[i];
}

void slm_ops_mul(float *out, const float *a, int64_t na, const float *b, int64_t nb)
{
    for (int64_t r = 0; r < na; r += nb)
        for (int64_t i = 0; i < nb; i++) out[r + i] = a[r + i] * b[i];
}

void slm_ops_scale(float *out, const float *a, int64_t n, float s)
{
    for (int64_t i = 0; i < n; i++) out[i] = a[i] * s;
}

void slm_ops_rmsnorm(float *out, const float *x, const float *w, int64_t rows,
                     int64_t n, float eps)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) {
        slm_ops_rmsnorm_avx2(out, x, w, rows, n, eps);
        return;
    }
#endif
    for (int64_t r = 0; r < rows; r++, x += n, out += n) {
        double ss = 0;
        for (int64_t i = 0; i < n; i++) ss += (double)x[i] * x[i];
        const float scale = 1.0f / sqrtf((float)(ss / (double)n) + eps);
        if (w)
            for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale * w[i];
        else
            for (int64_t i = 0; i < n; i++) out[i] = x[i] * scale;
    }
}

void slm_ops_layernorm(float *out, const float *x, const float *w, const float *b,
                       int64_t rows, int64_t n, float eps)
{
    for (int64_t r = 0; r < rows; r++, x += n, out += n) {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += x[i];
        const float mean = (float)(s / (double)n);
        double s2 = 0;
        for (int64_t i = 0; i < n; i++) s2 += (double)(x[i] - mean) * (x[i] - mean);
        const float scale = 1.0f / sqrtf((float)(s2 / (double)n) + eps);
        for (int64_t i = 0; i < n; i++) {
            float v = (x[i] - mean) * scale;
            if (w) v *= w[i];
            if (b) v += b[i];
            out[i] = v;
        }
    }
}

void slm_ops_softmax(float *x, int64_t rows, int64_t n)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) {
        slm_ops_softmax_avx2(x, rows, n);
        return;
    }
#endif
    for (int64_t r = 0; r < rows; r++, x += n) {
        float max = -INFINITY;
        for (int64_t i = 0; i < n; i++) max = x[i] > max ? x[i] : max;
        if (max == -INFINITY) {          /* fully masked row */
            for (int64_t i = 0; i < n; i++) x[i] = 0;
            continue;
        }
        double sum = 0;
        for (int64_t i = 0; i < n; i++) {
            x[i] = expf(x[i] - max);
            sum += x[i];
        }
        const float inv = (float)(1.0 / sum);
        for (int64_t i = 0; i < n; i++) x[i] *= inv;
    }
}

void slm_ops_silu(float *out, const float *x, int64_t n)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) {
        slm_ops_silu_avx2(out, x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) out[i] = x[i] / (1.0f + expf(-x[i]));
}

#define SQRT_2_OVER_PI 0.79788456080286535588f
#define GELU_COEF_A 0.044715f
#define SQRT_1_2 0.70710678118654752440f

void slm_ops_gelu(float *out, const float *x, int64_t n)
{
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) {
        slm_ops_gelu_avx2(out, x, n);
        return;
    }
#endif
    /* the reference evaluates this formula (through an F16 lookup table on
     * CPU; we evaluate it directly in float) */
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        out[i] = 0.5f * v * (1.0f + tanhf(SQRT_2_OVER_PI * v * (1.0f + GELU_COEF_A * v * v)));
    }
}

void slm_ops_gelu_erf(float *out, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * SQRT_1_2));
}

/* pairs rotated per chunk: their cos/sin are computed once per token and
 * reused for every head */
#define ROPE_CHUNK 64

void slm_ops_rope(float *x, int64_t n_tok, int64_t n_heads, int64_t head_dim,
                  const int64_t *pos, const slm_rope_params *p)
{
    const int half = p->n_rot / 2;
    const float theta_scale = powf(p->freq_base, -2.0f / (float)p->n_rot);
    /* normal: pair i = (2i, 2i+1); neox: pair i = (i, i + n_rot/2) */
    const int64_t stride = p->mode == SLM_ROPE_NEOX ? 1 : 2;
    const int64_t offset = p->mode == SLM_ROPE_NEOX ? half : 1;
    for (int64_t t = 0; t < n_tok; t++) {
        float theta = (float)pos[t];
        float *xt = x + t * n_heads * head_dim;
        for (int i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            float c[ROPE_CHUNK], s[ROPE_CHUNK];
            const int m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
            for (int i = 0; i < m; i++) {
                c[i] = cosf(theta * p->freq_scale);
                s[i] = sinf(theta * p->freq_scale);
                theta *= theta_scale;
            }
            for (int64_t h = 0; h < n_heads; h++) {
                float *xh = xt + h * head_dim;
                for (int i = 0; i < m; i++) {
                    float *v = xh + (i0 + i) * stride;
                    const float x0 = v[0], x1 = v[offset];
                    v[0] = x0 * c[i] - x1 * s[i];
                    v[offset] = x0 * s[i] + x1 * c[i];
                }
            }
        }
    }
}
