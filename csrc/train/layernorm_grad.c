/* LayerNorm backward (layernorm_grad.h). */
#include "layernorm_grad.h"

#include <math.h>

void slm_layernorm_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                            const float *w, int64_t rows, int64_t n, float eps, int accumulate)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x + r * n, *gy = dy + r * n;
        float *out = dx + r * n;
        /* the forward's statistics: mean, then the biased variance */
        double sum = 0.0;
        for (int64_t i = 0; i < n; i++) sum += xr[i];
        float mu = (float)(sum / (double)n);
        double var = 0.0;
        for (int64_t i = 0; i < n; i++) {
            float d = xr[i] - mu;
            var += (double)d * d;
        }
        float rs = 1.0f / sqrtf((float)(var / (double)n) + eps);
        /* mean(g) and mean(g xh), g = dy w */
        double sg = 0.0, sgx = 0.0;
        for (int64_t i = 0; i < n; i++) {
            float xh = (xr[i] - mu) * rs;
            float g = w ? gy[i] * w[i] : gy[i];
            sg += g;
            sgx += (double)g * xh;
            if (dw) dw[i] += gy[i] * xh;
            if (db) db[i] += gy[i];
        }
        float mg = (float)(sg / (double)n), mgx = (float)(sgx / (double)n);
        for (int64_t i = 0; i < n; i++) {
            float xh = (xr[i] - mu) * rs;
            float g = w ? gy[i] * w[i] : gy[i];
            float d = rs * (g - mg - xh * mgx);
            out[i] = accumulate ? out[i] + d : d;
        }
    }
}
