/* LayerNorm backward (csrc/train/layernorm_grad.h) against central finite
 * differences of a double-precision forward of the loss sum(y * R). */
#include <math.h>
#include <stdlib.h>

#include "check.h"
#include "train/layernorm_grad.h"

static double urand(unsigned *s)
{
    *s = *s * 1103515245u + 12345u;
    return ((*s >> 8) & 0xffffff) / (double)0x1000000 * 2.0 - 1.0;
}

/* sum over rows of sum_i y_i R_i, y = layernorm(x) * w + b, in double */
static double loss(const double *x, const double *w, const double *b, const double *R, int rows, int n, double eps)
{
    double L = 0.0;
    for (int r = 0; r < rows; r++) {
        const double *xr = x + r * n;
        double mu = 0.0, var = 0.0;
        for (int i = 0; i < n; i++) mu += xr[i];
        mu /= n;
        for (int i = 0; i < n; i++) var += (xr[i] - mu) * (xr[i] - mu);
        double rs = 1.0 / sqrt(var / n + eps);
        for (int i = 0; i < n; i++) L += ((xr[i] - mu) * rs * w[i] + b[i]) * R[r * n + i];
    }
    return L;
}

int main(void)
{
    enum { ROWS = 3, N = 7 };
    const double eps = 1e-5, h = 1e-5;
    unsigned seed = 7;
    double x[ROWS * N], R[ROWS * N], w[N], b[N];
    for (int i = 0; i < ROWS * N; i++) { x[i] = urand(&seed) * 2.0; R[i] = urand(&seed); }
    for (int i = 0; i < N; i++) { w[i] = 1.0 + 0.5 * urand(&seed); b[i] = 0.1 * urand(&seed); }
    float xf[ROWS * N], Rf[ROWS * N], wf[N], dx[ROWS * N], dw[N] = {0}, db[N] = {0};
    for (int i = 0; i < ROWS * N; i++) { xf[i] = (float)x[i]; Rf[i] = (float)R[i]; x[i] = xf[i]; R[i] = Rf[i]; }
    for (int i = 0; i < N; i++) { wf[i] = (float)w[i]; w[i] = wf[i]; }
    slm_layernorm_backward(dx, dw, db, Rf, xf, wf, ROWS, N, (float)eps, 0);
    double worst = 0.0;
    for (int i = 0; i < ROWS * N; i++) {
        double s = x[i];
        x[i] = s + h; double lp = loss(x, w, b, R, ROWS, N, eps);
        x[i] = s - h; double lm = loss(x, w, b, R, ROWS, N, eps);
        x[i] = s;
        double fd = (lp - lm) / (2 * h), e = fabs(fd - dx[i]);
        if (e > worst) worst = e;
        CHECK(e <= 1e-4 * (1 + fabs(fd)), "dx[%d] = %g, finite difference %g", i, dx[i], fd);
    }
    for (int i = 0; i < N; i++) {
        double s = w[i];
        w[i] = s + h; double lp = loss(x, w, b, R, ROWS, N, eps);
        w[i] = s - h; double lm = loss(x, w, b, R, ROWS, N, eps);
        w[i] = s;
        double fd = (lp - lm) / (2 * h);
        CHECK(fabs(fd - dw[i]) <= 1e-4 * (1 + fabs(fd)), "dw[%d] = %g, finite difference %g", i, dw[i], fd);
        s = b[i];
        b[i] = s + h; lp = loss(x, w, b, R, ROWS, N, eps);
        b[i] = s - h; lm = loss(x, w, b, R, ROWS, N, eps);
        b[i] = s;
        fd = (lp - lm) / (2 * h);
        CHECK(fabs(fd - db[i]) <= 1e-4 * (1 + fabs(fd)), "db[%d] = %g, finite difference %g", i, db[i], fd);
    }
    /* accumulate adds; in place (dx == dy) gives the same values */
    float acc[ROWS * N], inpl[ROWS * N], dw2[N] = {0};
    for (int i = 0; i < ROWS * N; i++) { acc[i] = 1.0f; inpl[i] = Rf[i]; }
    slm_layernorm_backward(acc, NULL, NULL, Rf, xf, wf, ROWS, N, (float)eps, 1);
    slm_layernorm_backward(inpl, dw2, NULL, inpl, xf, wf, ROWS, N, (float)eps, 0);
    int same = 1, added = 1;
    for (int i = 0; i < ROWS * N; i++) {
        if (inpl[i] != dx[i]) same = 0;
        if (fabsf(acc[i] - 1.0f - dx[i]) > 1e-6f) added = 0;
    }
    CHECK(same, "in place (dx == dy) differs");
    CHECK(added, "accumulate does not add");
    printf("layernorm backward: worst |dx - finite difference| %.2e\n", worst);
    return check_summary();
}
