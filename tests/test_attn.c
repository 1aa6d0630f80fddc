/* KV cache + scaled dot-product attention against a plain double-precision
 * reference (causal, grouped-query), on 1 and 2 threads. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks/kvcache.h"
#include "kernels/vecdot.h"

static int passed, failed;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

static uint32_t rng = 12345;
static float frand(void)
{
    rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5;
    return (float)(rng % 20001) / 10000.0f - 1.0f;
}

static float *rand_vec(size_t n)
{
    float *v = malloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = frand();
    return v;
}

static double r16(double x) { return slm_f16_to_f32(slm_f32_to_f16((float)x)); }

/* reference on f16-rounded keys and values (what the cache holds), with q
 * and the probabilities rounded to f16 as the reference implementation does */
static double ref_out(const float *q, const float *k, const float *v, int n_pos,
                      int kv_dim, int kvh, int hd, float scale, int prescale, int j)
{
    double s[512], mx = -1e300, sum = 0, o = 0;
    for (int t = 0; t < n_pos; t++) {
        double d = 0;
        for (int x = 0; x < hd; x++)
            d += r16(prescale ? q[x] * scale : q[x]) * r16(k[(size_t)t * kv_dim + kvh * hd + x]);
        s[t] = prescale ? d : d * scale;
        if (s[t] > mx) mx = s[t];
    }
    for (int t = 0; t < n_pos; t++) sum += s[t] = exp(s[t] - mx);
    for (int t = 0; t < n_pos; t++)
        o += r16(s[t] / sum) * r16(v[(size_t)t * kv_dim + kvh * hd + j]);
    return o;
}

static void run_case(int threads, int n_head, int n_head_kv, int hd, int pos0, int n, int prescale)
{
    slm_error err = {0};
    int kv_dim = n_head_kv * hd, n_ctx = 256, q_dim = n_head * hd, layers = 2, layer = 1;
    slm_pool *pool = slm_pool_new(threads, &err);
    slm_kvcache *c = slm_kvcache_new(layers, n_ctx, kv_dim, &err);
    int total = pos0 + n;
    float *k = rand_vec((size_t)total * kv_dim), *v = rand_vec((size_t)total * kv_dim);
    float *q = rand_vec((size_t)n * q_dim), *out = calloc((size_t)n * q_dim, sizeof *out);
    /* the prefix in one call, then the new rows, as a session does */
    if (pos0) slm_kvcache_store(c, layer, 0, pos0, k, v);
    slm_kvcache_store(c, layer, pos0, n, k + (size_t)pos0 * kv_dim, v + (size_t)pos0 * kv_dim);
    slm_attn_shape sh = {n_head, n_head_kv, hd, 1.0f / sqrtf((float)hd), prescale};
    slm_status st = slm_attn_sdpa(pool, c, layer, &sh, pos0, n, q, out, &err);
    double maxd = 0;
    for (int i = 0; i < n; i++)
        for (int h = 0; h < n_head; h++)
            for (int j = 0; j < hd; j++) {
                double r = ref_out(q + (size_t)i * q_dim + h * hd, k, v, pos0 + i + 1, kv_dim,
                                   h / (n_head / n_head_kv), hd, sh.scale, prescale, j);
                double d = fabs(r - out[(size_t)i * q_dim + h * hd + j]);
                if (d > maxd) maxd = d;
            }
    CHECK(st == SLM_OK && maxd < 1e-5, "sdpa threads=%d heads=%d/%d hd=%d pos0=%d n=%d prescale=%d: max diff %g",
          threads, n_head, n_head_kv, hd, pos0, n, prescale, maxd);
    free(k); free(v); free(q); free(out);
    slm_kvcache_free(c);
    slm_pool_free(pool);
}

#if defined(__x86_64__)
/* the whole-row AVX2 loops give the bits of the per-position ones (so decode
 * and prefill numerics are those of the kernels they replaced) */
static void check_row_kernels(int hd, int n_pos)
{
    enum { STRIDE = 200 };
    static slm_f16 k[300 * STRIDE], v[300 * STRIDE];
    static float q[STRIDE], p[300], s1[300], acc1[STRIDE], acc2[STRIDE];
    for (int i = 0; i < n_pos * STRIDE; i++) {
        k[i] = slm_f32_to_f16(frand());
        v[i] = slm_f32_to_f16(frand());
    }
    for (int j = 0; j < hd; j++) q[j] = (float)r16(frand());
    for (int t = 0; t < n_pos; t++) p[t] = (float)r16(frand() * 0.5 + 0.5);
    slm_kv_scores_avx2(s1, q, k, STRIDE, n_pos, hd, 0.125f);
    int same = 1;
    for (int t = 0; t < n_pos; t++) {
        float d = slm_kv_dot_avx2(q, k + t * STRIDE, hd) * 0.125f;
        same &= memcmp(&d, &s1[t], 4) == 0;
    }
    memset(acc1, 0, sizeof acc1);
    for (int t = 0; t < n_pos; t++) slm_kv_axpy_avx2(acc1, p[t], v + t * STRIDE, hd);
    slm_kv_mix_avx2(acc2, p, v, STRIDE, n_pos, hd);
    same &= memcmp(acc1, acc2, (size_t)hd * sizeof(float)) == 0;
    CHECK(same, "AVX2 score row and value mix equal per-position dot/axpy (hd=%d n_pos=%d)", hd, n_pos);
    /* scale and round to f16 values: the scalar conversion's bits, in place
     * too, including values that overflow or turn subnormal */
    static float x[300], y[300];
    /* (not from frand: the sdpa cases below keep their data) */
    for (int t = 0; t < n_pos; t++)
        x[t] = (float)((t * 37 % 101 - 50) / 50.0 * (t % 3 == 0 ? 7e4 : t % 3 == 1 ? 1e-6 : 1.0));
    slm_kv_round16_avx2(y, x, 1.5f, n_pos);
    int r = 1;
    for (int t = 0; t < n_pos; t++) {
        const float e = slm_f16_to_f32(slm_f32_to_f16(x[t] * 1.5f));
        r &= memcmp(&e, &y[t], 4) == 0;
    }
    slm_kv_round16_avx2(x, x, 1.5f, n_pos);
    r &= memcmp(x, y, (size_t)n_pos * sizeof(float)) == 0;
    CHECK(r, "AVX2 f16 rounding of scaled values equals the scalar conversion (n=%d)", n_pos);
}
#endif

int main(void)
{
#if defined(__x86_64__)
    if (slm_cpu_has_avx2()) {
        check_row_kernels(64, 1);
        check_row_kernels(64, 257);
        check_row_kernels(128, 33);
        check_row_kernels(200, 9);
        check_row_kernels(20, 5);
    }
#endif
    /* the AVX2/F16C loops (when the CPU has them), then the generic ones */
    for (int generic = 0; generic <= 1; generic++) {
    slm_kernels_force_generic(generic);
    run_case(1, 1, 1, 8, 0, 1, 0);
    run_case(1, 8, 2, 16, 0, 5, 0);
    run_case(2, 8, 2, 16, 7, 1, 0);
    run_case(2, 9, 3, 64, 30, 17, 0);
    run_case(2, 4, 4, 32, 100, 3, 0);
    run_case(2, 8, 1, 8, 0, 40, 0);
    run_case(2, 8, 8, 32, 20, 4, 1);
    run_case(2, 4, 2, 20, 9, 2, 0);   /* head_dim not a multiple of 8 */
    }
    slm_kernels_force_generic(0);
    slm_error err = {0};
    CHECK(slm_kvcache_new(0, 10, 10, &err) == NULL && err.code == SLM_EINVAL, "bad dims");
    CHECK(slm_kvcache_new(1 << 20, 1 << 20, 1 << 20, &err) == NULL, "overflow/huge: %s", err.msg);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
