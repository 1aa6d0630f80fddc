/* Generic float32 ops (see ops.h for the formulas and their reference).
 * Plain loops that the compiler vectorizes; sums that feed a normalization
 * are accumulated in double as the reference does (ggml_float). The ops
 * bound by libm calls hand over to their AVX2 twins (ops_avx2.c) when the
 * CPU has them. */
#include "ops.h"

#include <math.h>
#include <pthread.h>
#include <string.h>

#include "../core/fp16.h"

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

void slm_ops_causal_conv(float *out, int64_t ld_out, const float *x, int64_t ld_x, int n,
                         float *state, const float *w, int64_t K, int64_t c0, int64_t c1)
{
    const int64_t ns = K - 1;
    float win[SLM_OPS_MAX_CONV];
    for (int64_t c = c0; c < c1; c++) {
        float *st = state + c * ns;
        const float *wc = w + c * K;
        memcpy(win, st, (size_t)ns * sizeof(float));
        for (int t = 0; t < n; t++) {
            win[ns] = x[t * ld_x + c];
            float sum = 0.0f;
            for (int64_t k = 0; k < K; k++) sum += win[k] * wc[k];
            out[t * ld_out + c] = sum;
            memmove(win, win + 1, (size_t)ns * sizeof(float));
        }
        memcpy(st, win, (size_t)ns * sizeof(float));
    }
}

void slm_ops_add_scaled(float *out, const float *a, const float *b, float s, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        const float t = b[i] * s;
        out[i] = a[i] + t;
    }
}

void slm_ops_softcap(float *out, const float *x, int64_t n, float c)
{
    /* as the reference's graph: scale by 1/c, tanh, scale by c */
    const float inv = 1.0f / c;
    for (int64_t i = 0; i < n; i++) out[i] = tanhf(x[i] * inv) * c;
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
#if defined(__x86_64__)
    if (slm_kernels_use_avx512()) {
        slm_ops_layernorm_avx512(out, x, w, b, rows, n, eps);
        return;
    }
#endif
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

void slm_ops_mean_rows(float *out, const float *x, int64_t rows, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        double s = 0;
        for (int64_t r = 0; r < rows; r++) s += x[r * n + i];
        out[i] = rows > 0 ? (float)(s / (double)rows) : 0.0f;
    }
}

void slm_ops_l2norm(float *out, const float *x, int64_t rows, int64_t n)
{
    for (int64_t r = 0; r < rows; r++, x += n, out += n) {
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
        const double inv = s > 0 ? 1.0 / sqrt(s) : 0.0;
        for (int64_t i = 0; i < n; i++) out[i] = (float)(x[i] * inv);
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

/* The reference's table: GELU of every f16 value, rounded to f16, built once */
static slm_f16 gelu_table[1 << 16];
static pthread_once_t gelu_once = PTHREAD_ONCE_INIT;

static void gelu_table_init(void)
{
    for (uint32_t i = 0; i < (1u << 16); i++) {
        const float v = slm_f16_to_f32((slm_f16)i);
        gelu_table[i] = slm_f32_to_f16(0.5f * v * (1.0f + tanhf(SQRT_2_OVER_PI * v * (1.0f + GELU_COEF_A * v * v))));
    }
}

const slm_f16 *slm_ops_gelu_table(void)
{
    pthread_once(&gelu_once, gelu_table_init);
    return gelu_table;
}

void slm_ops_gelu_f16(float *out, const float *x, int64_t n)
{
    pthread_once(&gelu_once, gelu_table_init);
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) {
        slm_ops_gelu_f16_avx2(out, x, n, gelu_table);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        const float v = x[i];
        if (v <= -10.0f) out[i] = 0.0f;
        else if (v >= 10.0f) out[i] = v;
        else out[i] = slm_f16_to_f32(gelu_table[slm_f32_to_f16(v)]);
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
    const float *ff = p->freq_factors;
    const float mscale = p->attn_factor == 0.0f ? 1.0f : p->attn_factor;
    for (int64_t t = 0; t < n_tok; t++) {
        float theta = (float)pos[t];
        float *xt = x + t * n_heads * head_dim;
        for (int i0 = 0; i0 < half; i0 += ROPE_CHUNK) {
            float c[ROPE_CHUNK], s[ROPE_CHUNK];
            const int m = half - i0 < ROPE_CHUNK ? half - i0 : ROPE_CHUNK;
            for (int i = 0; i < m; i++) {
                const float th = (ff ? theta / ff[i0 + i] : theta) * p->freq_scale;
                c[i] = cosf(th) * mscale;
                s[i] = sinf(th) * mscale;
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
