/* Generic (portable scalar) dot products and the dispatch table.
 *
 * Element layouts follow the dequantizers in csrc/quant (the specification);
 * each kernel states, for element e of a 256-element K-quant block, where its
 * bits live. Integer sums are exact; only the per-block scaling is float. */
#include "vecdot.h"

#include <math.h>
#include <string.h>
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#endif

#include "../core/fp16.h"
#include "../quant/quant.h"
#include "gemm_q4k_avx512.h"
#include "gemm_q8_avx512.h"
#include "vecdot_q6k_avx512.h"

/* ---- 32-element blocks ------------------------------------------------ */

/* q4_0: w = (nibble - 8) * d; element j in the low nibble of qs[j], j+16 in
 * the high nibble. */
static void dot_q4_0(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q4_0 *w = vw;
    const slm_block_q8_0 *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK4_0; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += ((w[b].qs[j] & 15) - 8) * a[b].qs[j];
            sumi += ((w[b].qs[j] >> 4) - 8) * a[b].qs[j + 16];
        }
        sum += (float)sumi * (slm_f16_to_f32(w[b].d) * slm_f16_to_f32(a[b].d));
    }
    *s = sum;
}

/* q4_1: w = nibble * d + m; with a = qa * da and s_a = da * sum(qa):
 * sum(w * a) = d * da * sum(nibble * qa) + m * s_a. */
static void dot_q4_1(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q4_1 *w = vw;
    const slm_block_q8_1 *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK4_1; b++) {
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            sumi += (w[b].qs[j] & 15) * a[b].qs[j];
            sumi += (w[b].qs[j] >> 4) * a[b].qs[j + 16];
        }
        sum += (float)sumi * (slm_f16_to_f32(w[b].d) * slm_f16_to_f32(a[b].d))
             + slm_f16_to_f32(w[b].m) * slm_f16_to_f32(a[b].s);
    }
    *s = sum;
}

/* fifth bits of a q5 block: bit j of the little-endian qh word belongs to
 * element j (j < 32) */
static uint32_t q5_high(const uint8_t qh[4])
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

/* q5_0: w = ((nibble | fifth bit << 4) - 16) * d */
static void dot_q5_0(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q5_0 *w = vw;
    const slm_block_q8_0 *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK5_0; b++) {
        uint32_t qh = q5_high(w[b].qh);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (int)((w[b].qs[j] & 15) | ((qh >> j) & 1) << 4) - 16;
            int hi = (int)((w[b].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4) - 16;
            sumi += lo * a[b].qs[j] + hi * a[b].qs[j + 16];
        }
        sum += (float)sumi * (slm_f16_to_f32(w[b].d) * slm_f16_to_f32(a[b].d));
    }
    *s = sum;
}

/* q5_1: w = (nibble | fifth bit << 4) * d + m */
static void dot_q5_1(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q5_1 *w = vw;
    const slm_block_q8_1 *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK5_1; b++) {
        uint32_t qh = q5_high(w[b].qh);
        int sumi = 0;
        for (int j = 0; j < 16; j++) {
            int lo = (int)((w[b].qs[j] & 15) | ((qh >> j) & 1) << 4);
            int hi = (int)((w[b].qs[j] >> 4) | ((qh >> (j + 16)) & 1) << 4);
            sumi += lo * a[b].qs[j] + hi * a[b].qs[j + 16];
        }
        sum += (float)sumi * (slm_f16_to_f32(w[b].d) * slm_f16_to_f32(a[b].d))
             + slm_f16_to_f32(w[b].m) * slm_f16_to_f32(a[b].s);
    }
    *s = sum;
}

static void dot_q8_0(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q8_0 *w = vw;
    const slm_block_q8_0 *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK8_0; b++) {
        int sumi = 0;
        for (int j = 0; j < SLM_QK8_0; j++) sumi += w[b].qs[j] * a[b].qs[j];
        sum += (float)sumi * (slm_f16_to_f32(w[b].d) * slm_f16_to_f32(a[b].d));
    }
    *s = sum;
}

/* ---- K-quants: 256-element super-blocks against q8_K ------------------ *
 * Each kernel computes per block the exact integers isum (sum over
 * sub-blocks of scale * sum(q * qa)) and, for the types with mins, msum
 * (sum of min * bsums), then adds da * (d * isum - dmin * msum) in this
 * order; the AVX2 twins reproduce the same integers and expression. */

/* q2_K: element e = 128h + 32k + l (h < 2, k < 4, l < 32): 2 bits at
 * qs[32h + l] >> 2k; sub-block e/16 = 8h + 2k + l/16 has scale
 * scales[sb] & 15 and min scales[sb] >> 4. */
static void dot_q2_K(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q2_K *w = vw;
    const slm_block_q8_K *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        int isum = 0, msum = 0;
        for (int sb = 0; sb < 16; sb++) {
            const int h = sb / 8, k = (sb / 2) % 4, l0 = 16 * (sb % 2);
            const uint8_t *q = w[b].qs + 32 * h + l0;
            const int8_t *y = a[b].qs + 16 * sb;
            int si = 0;
            for (int l = 0; l < 16; l++) si += ((q[l] >> (2 * k)) & 3) * y[l];
            isum += (w[b].scales[sb] & 15) * si;
            msum += (w[b].scales[sb] >> 4) * a[b].bsums[sb];
        }
        sum += a[b].d * (slm_f16_to_f32(w[b].d) * (float)isum
                         - slm_f16_to_f32(w[b].dmin) * (float)msum);
    }
    *s = sum;
}

/* The 16 signed 6-bit scales of a q3_K block (stored +32): the low 4 bits
 * of scale j are in byte j%8 (low nibble for j < 8, high for j >= 8) and
 * the high 2 bits in byte 8 + j%4 at bit 2*(j/4). */
static void q3_scales(const uint8_t sc[12], int out[16])
{
    for (int j = 0; j < 16; j++) {
        int lo = j < 8 ? sc[j] & 15 : sc[j - 8] >> 4;
        int hi = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        out[j] = (lo | hi << 4) - 32;
    }
}

/* q3_K: element e = 128h + 32k + l: 2 low bits as q2_K, high bit at
 * hmask[l] bit e/32 = 4h + k; value = low | high << 2, minus 4; sub-block
 * e/16 scale from q3_scales. */
static void dot_q3_K(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q3_K *w = vw;
    const slm_block_q8_K *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        int sc[16];
        q3_scales(w[b].scales, sc);
        int isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            const int h = sb / 8, k = (sb / 2) % 4, l0 = 16 * (sb % 2);
            const uint8_t *q = w[b].qs + 32 * h + l0, *hm = w[b].hmask + l0;
            const int8_t *y = a[b].qs + 16 * sb;
            int si = 0;
            for (int l = 0; l < 16; l++) {
                int v = ((q[l] >> (2 * k)) & 3) | ((hm[l] >> (4 * h + k)) & 1) << 2;
                si += (v - 4) * y[l];
            }
            isum += sc[sb] * si;
        }
        sum += a[b].d * (slm_f16_to_f32(w[b].d) * (float)isum);
    }
    *s = sum;
}

/* q4_K: element e = 64c + 32k + l (c < 4, k < 2, l < 32): nibble k (low
 * first) of qs[32c + l]; 8 sub-blocks of 32 (e/32 = 2c + k):
 * w = d * sc * q - dmin * m. q5_K adds a fifth bit at qh[l] bit e/32. */
static float block_q45_K(const uint8_t *scales, const uint8_t *qs, const uint8_t *qh,
                         slm_f16 d, slm_f16 dmin, const slm_block_q8_K *a)
{
    int isum = 0, msum = 0;
    for (int sb = 0; sb < 8; sb++) {
        int sc, m, si = 0;
        slm_k4_scale_min(sb, scales, &sc, &m);
        const uint8_t *q = qs + 32 * (sb / 2);
        const int8_t *y = a->qs + 32 * sb;
        const int shift = 4 * (sb % 2);
        if (qh)
            for (int l = 0; l < 32; l++) si += (((q[l] >> shift) & 15) | ((qh[l] >> sb) & 1) << 4) * y[l];
        else
            for (int l = 0; l < 32; l++) si += ((q[l] >> shift) & 15) * y[l];
        isum += sc * si;
        msum += m * (a->bsums[2 * sb] + a->bsums[2 * sb + 1]);
    }
    return a->d * (slm_f16_to_f32(d) * (float)isum - slm_f16_to_f32(dmin) * (float)msum);
}

static void dot_q4_K(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q4_K *w = vw;
    const slm_block_q8_K *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++)
        sum += block_q45_K(w[b].scales, w[b].qs, NULL, w[b].d, w[b].dmin, &a[b]);
    *s = sum;
}

static void dot_q5_K(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q5_K *w = vw;
    const slm_block_q8_K *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++)
        sum += block_q45_K(w[b].scales, w[b].qs, w[b].qh, w[b].d, w[b].dmin, &a[b]);
    *s = sum;
}

/* q6_K: element e = 128h + 32k + l (h < 2, k < 4, l < 32): 4 low bits in
 * ql[64h + l + 32(k&1)] (low nibble for k < 2), 2 high bits in
 * qh[32h + l] >> 2k; value - 32; int8 scale per sub-block of 16 (e/16). */
static void dot_q6_K(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_block_q6_K *w = vw;
    const slm_block_q8_K *a = va;
    float sum = 0;
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        int isum = 0;
        for (int sb = 0; sb < 16; sb++) {
            const int h = sb / 8, k = (sb / 2) % 4, l0 = 16 * (sb % 2);
            const uint8_t *ql = w[b].ql + 64 * h + 32 * (k & 1) + l0, *qh = w[b].qh + 32 * h + l0;
            const int8_t *y = a[b].qs + 16 * sb;
            const int shift = 4 * (k >> 1);
            int si = 0;
            for (int l = 0; l < 16; l++)
                si += ((((ql[l] >> shift) & 15) | ((qh[l] >> (2 * k)) & 3) << 4) - 32) * y[l];
            isum += w[b].scales[sb] * si;
        }
        sum += a[b].d * (slm_f16_to_f32(w[b].d) * (float)isum);
    }
    *s = sum;
}

/* ---- float types: products summed in double --------------------------- */

static void dot_f16(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_f16 *w = vw, *a = va;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)slm_f16_to_f32(w[i]) * (double)slm_f16_to_f32(a[i]);
    *s = (float)sum;
}

static void dot_bf16(int64_t n, float *s, const void *vw, const void *va)
{
    const slm_bf16 *w = vw, *a = va;
    double sum = 0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)slm_bf16_to_f32(w[i]) * (double)slm_bf16_to_f32(a[i]);
    *s = (float)sum;
}

static void dot_f32(int64_t n, float *s, const void *vw, const void *va)
{
    const float *w = vw, *a = va;
    double sum = 0;
    for (int64_t i = 0; i < n; i++) sum += (double)w[i] * (double)a[i];
    *s = (float)sum;
}

/* ---- activation encoders for the half types --------------------------- */

static void act_f16(const float *x, void *vy, int64_t n)
{
    slm_f16 *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = slm_f32_to_f16(x[i]);
}

static void act_bf16(const float *x, void *vy, int64_t n)
{
    slm_bf16 *y = vy;
    for (int64_t i = 0; i < n; i++) y[i] = slm_f32_to_bf16(x[i]);
}

/* ---- dispatch ---------------------------------------------------------- */

#if defined(__x86_64__)
#define AVX2(f) f
#define AVX512(f) f
#else
#define AVX2(f) NULL
#define AVX512(f) NULL
#endif

static const slm_vecdot_traits traits[SLM_DTYPE_COUNT] = {
    [SLM_DTYPE_Q4_0] = {SLM_DTYPE_Q8_0, dot_q4_0, AVX2(slm_vec_dot_q4_0_avx2), AVX2(slm_vec_dot4_q4_0_avx2)},
    [SLM_DTYPE_Q4_1] = {SLM_DTYPE_Q8_1, dot_q4_1, AVX2(slm_vec_dot_q4_1_avx2)},
    [SLM_DTYPE_Q5_0] = {SLM_DTYPE_Q8_0, dot_q5_0, AVX2(slm_vec_dot_q5_0_avx2), AVX2(slm_vec_dot4_q5_0_avx2)},
    [SLM_DTYPE_Q5_1] = {SLM_DTYPE_Q8_1, dot_q5_1, AVX2(slm_vec_dot_q5_1_avx2)},
    [SLM_DTYPE_Q8_0] = {SLM_DTYPE_Q8_0, dot_q8_0, AVX2(slm_vec_dot_q8_0_avx2), AVX2(slm_vec_dot4_q8_0_avx2),
                        AVX512(slm_vec_dot_q8_0_avx512), AVX512(slm_vec_dot4_q8_0_avx512)},
    [SLM_DTYPE_Q2_K] = {SLM_DTYPE_Q8_K, dot_q2_K, AVX2(slm_vec_dot_q2_K_avx2)},
    [SLM_DTYPE_Q3_K] = {SLM_DTYPE_Q8_K, dot_q3_K, AVX2(slm_vec_dot_q3_K_avx2)},
    [SLM_DTYPE_Q4_K] = {SLM_DTYPE_Q8_K, dot_q4_K, AVX2(slm_vec_dot_q4_K_avx2), AVX2(slm_vec_dot4_q4_K_avx2),
                        AVX512(slm_vec_dot_q4_K_avx512), AVX512(slm_vec_dot4_q4_K_avx512)},
    [SLM_DTYPE_Q5_K] = {SLM_DTYPE_Q8_K, dot_q5_K, AVX2(slm_vec_dot_q5_K_avx2)},
    [SLM_DTYPE_Q6_K] = {SLM_DTYPE_Q8_K, dot_q6_K, AVX2(slm_vec_dot_q6_K_avx2), AVX2(slm_vec_dot4_q6_K_avx2),
                        AVX512(slm_vec_dot_q6_K_avx512), AVX512(slm_vec_dot4_q6_K_avx512)},
    [SLM_DTYPE_F16]  = {SLM_DTYPE_F16,  dot_f16,  AVX2(slm_vec_dot_f16_avx2)},
    [SLM_DTYPE_BF16] = {SLM_DTYPE_BF16, dot_bf16, AVX2(slm_vec_dot_bf16_avx2)},
    [SLM_DTYPE_F32]  = {SLM_DTYPE_F32,  dot_f32,  AVX2(slm_vec_dot_f32_avx2), AVX2(slm_vec_dot4_f32_avx2)},
};

/* the highest kernel tier the caller allows (slm_kernels_set_level) */
static int max_level = SLM_KERNELS_AVX512;

int slm_cpu_has_avx2(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    /* several threads may ask first at once: the answer is the same, and
     * relaxed atomics make the benign race a defined one */
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        /* F16C from CPUID leaf 1 (ECX bit 29): clang before 16 has no
         * "f16c" for __builtin_cpu_supports, and make fuzz builds with it */
        unsigned a, b, c, d;
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 29));
        v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
#else
    return 0;
#endif
}

int slm_cpu_has_avx512(void)
{
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    static int cached = -1;
    int v = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (v < 0) {
        /* libgcc's answers include the OS check (XCR0 saves the zmm and
         * mask state), so a kernel that does not enable AVX-512 says no */
        v = slm_cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
            __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
            __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vnni");
        __atomic_store_n(&cached, v, __ATOMIC_RELAXED);
    }
    return v;
#else
    return 0;
#endif
}

void slm_kernels_set_level(int level)
{
    max_level = level < SLM_KERNELS_GENERIC ? SLM_KERNELS_GENERIC
              : level > SLM_KERNELS_AVX512 ? SLM_KERNELS_AVX512 : level;
}

int slm_kernels_level(void)
{
    if (max_level >= SLM_KERNELS_AVX512 && slm_cpu_has_avx512()) return SLM_KERNELS_AVX512;
    if (max_level >= SLM_KERNELS_AVX2 && slm_cpu_has_avx2()) return SLM_KERNELS_AVX2;
    return SLM_KERNELS_GENERIC;
}

const char *slm_kernels_level_name(int level)
{
    switch (level) {
    case SLM_KERNELS_AVX512: return "avx512";
    case SLM_KERNELS_AVX2: return "avx2";
    default: return "generic";
    }
}

void slm_kernels_force_generic(int on)
{
    slm_kernels_set_level(on ? SLM_KERNELS_GENERIC : SLM_KERNELS_AVX512);
}

int slm_kernels_use_avx2(void)
{
    return slm_kernels_level() >= SLM_KERNELS_AVX2;
}

int slm_kernels_use_avx512(void)
{
    return slm_kernels_level() >= SLM_KERNELS_AVX512;
}

const slm_vecdot_traits *slm_vecdot_traits_get(slm_dtype w)
{
    if ((int)w < 0 || w >= SLM_DTYPE_COUNT || !traits[w].dot_generic) return NULL;
    return &traits[w];
}

slm_vec_dot_fn slm_vecdot_fn(slm_dtype w)
{
    const slm_vecdot_traits *t = slm_vecdot_traits_get(w);
    if (!t) return NULL;
    if (slm_kernels_use_avx512() && t->dot_avx512) return t->dot_avx512;
    return slm_kernels_use_avx2() && t->dot_avx2 ? t->dot_avx2 : t->dot_generic;
}

slm_vec_dot4_fn slm_vecdot4_fn(slm_dtype w)
{
    const slm_vecdot_traits *t = slm_vecdot_traits_get(w);
    if (!t) return NULL;
    if (slm_kernels_use_avx512() && t->dot4_avx512) return t->dot4_avx512;
    return slm_kernels_use_avx2() ? t->dot4_avx2 : NULL;
}

/* Activation blocks for the 32-element types, encoded as the reference
 * implementation encodes activations at run time on x86 (its vectorized
 * quantize_row_q8_0/q8_1), which differs from its reference quantizer of
 * weights in two details: the codes are x * (127 / amax) rather than
 * x * (1 / d), and halves round to even rather than away from zero. Matching
 * it keeps our logits on quantized models equal to the reference's; a flipped
 * code changes a logit by up to a few hundredths of its spread. */
static float act_q8_block(const float *x, int8_t *qs, int *qsum)
{
    float amax = 0;
    for (int j = 0; j < 32; j++) {
        float a = fabsf(x[j]);
        if (a > amax) amax = a;
    }
    const float d = amax / 127.f;
    const float id = amax != 0.0f ? 127.f / amax : 0.0f;
    int sum = 0;
    for (int j = 0; j < 32; j++) {
        /* nearbyintf: round half to even in the default rounding mode */
        qs[j] = (int8_t)nearbyintf(x[j] * id);
        sum += qs[j];
    }
    if (qsum) *qsum = sum;
    return d;
}

static void act_q8_0(const float *x, void *vy, int64_t n)
{
    slm_block_q8_0 *y = vy;
    for (int64_t b = 0; b < n / SLM_QK8_0; b++)
        y[b].d = slm_f32_to_f16(act_q8_block(x + b * SLM_QK8_0, y[b].qs, NULL));
}

static void act_q8_1(const float *x, void *vy, int64_t n)
{
    slm_block_q8_1 *y = vy;
    for (int64_t b = 0; b < n / SLM_QK8_1; b++) {
        int sum;
        const float d = act_q8_block(x + b * SLM_QK8_1, y[b].qs, &sum);
        y[b].d = slm_f32_to_f16(d);
        y[b].s = slm_f32_to_f16(d * (float)sum);
    }
}

slm_act_from_f32_fn slm_act_quant_generic(slm_dtype act)
{
    switch (act) {
    case SLM_DTYPE_Q8_0: return act_q8_0;
    case SLM_DTYPE_Q8_1: return act_q8_1;
    case SLM_DTYPE_Q8_K: return slm_quantize_q8_K;
    case SLM_DTYPE_F16: return act_f16;
    case SLM_DTYPE_BF16: return act_bf16;
    default: return NULL;
    }
}

slm_act_from_f32_fn slm_act_quant_avx2(slm_dtype act)
{
#if defined(__x86_64__)
    switch (act) {
    case SLM_DTYPE_Q8_0: return slm_act_q8_0_avx2;
    case SLM_DTYPE_Q8_1: return slm_act_q8_1_avx2;
    case SLM_DTYPE_Q8_K: return slm_act_q8_K_avx2;
    case SLM_DTYPE_F16: return slm_act_f16_avx2;
    default: return NULL;
    }
#else
    (void)act;
    return NULL;
#endif
}

slm_act_from_f32_fn slm_act_quant_fn(slm_dtype act)
{
    slm_act_from_f32_fn f = slm_kernels_use_avx2() ? slm_act_quant_avx2(act) : NULL;
    return f ? f : slm_act_quant_generic(act);
}
