#include "dtype.h"

#include <ctype.h>
#include <string.h>

#include "../quant/quant.h"
#include "fp16.h"

static void f32_to_f32(const void *src, float *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f32_from_f32(const float *src, void *dst, int64_t n)
{
    memcpy(dst, src, (size_t)n * sizeof(float));
}

static void f16_to_f32(const void *src, float *dst, int64_t n)
{
    const slm_f16 *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = slm_f16_to_f32(s[i]);
}

static void f16_from_f32(const float *src, void *dst, int64_t n)
{
    slm_f16 *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = slm_f32_to_f16(src[i]);
}

static void bf16_to_f32(const void *src, float *dst, int64_t n)
{
    const slm_bf16 *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = slm_bf16_to_f32(s[i]);
}

static void bf16_from_f32(const float *src, void *dst, int64_t n)
{
    slm_bf16 *d = dst;
    for (int64_t i = 0; i < n; i++) d[i] = slm_f32_to_bf16(src[i]);
}

static void i8_to_f32(const void *src, float *dst, int64_t n)
{
    const int8_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}

static void i16_to_f32(const void *src, float *dst, int64_t n)
{
    const int16_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}

static void i32_to_f32(const void *src, float *dst, int64_t n)
{
    const int32_t *s = src;
    for (int64_t i = 0; i < n; i++) dst[i] = (float)s[i];
}

#define QROW(id, nm, bs, blk)                                              \
    [SLM_DTYPE_##id] = {nm, bs, sizeof(slm_block_##blk), 1,                 \
                        slm_dequantize_##blk, slm_quantize_##blk}

static const slm_dtype_traits traits[SLM_DTYPE_COUNT] = {
    [SLM_DTYPE_F32]  = {"f32", 1, 4, 0, f32_to_f32, f32_from_f32},
    [SLM_DTYPE_F16]  = {"f16", 1, 2, 0, f16_to_f32, f16_from_f32},
    [SLM_DTYPE_BF16] = {"bf16", 1, 2, 0, bf16_to_f32, bf16_from_f32},
    [SLM_DTYPE_I8]   = {"i8", 1, 1, 0, i8_to_f32, NULL},
    [SLM_DTYPE_I16]  = {"i16", 1, 2, 0, i16_to_f32, NULL},
    [SLM_DTYPE_I32]  = {"i32", 1, 4, 0, i32_to_f32, NULL},
    QROW(Q4_0, "q4_0", SLM_QK4_0, q4_0),
    QROW(Q4_1, "q4_1", SLM_QK4_1, q4_1),
    QROW(Q5_0, "q5_0", SLM_QK5_0, q5_0),
    QROW(Q5_1, "q5_1", SLM_QK5_1, q5_1),
    QROW(Q8_0, "q8_0", SLM_QK8_0, q8_0),
    QROW(Q8_1, "q8_1", SLM_QK8_1, q8_1),
    QROW(Q2_K, "q2_k", SLM_QK_K, q2_K),
    QROW(Q3_K, "q3_k", SLM_QK_K, q3_K),
    QROW(Q4_K, "q4_k", SLM_QK_K, q4_K),
    QROW(Q5_K, "q5_k", SLM_QK_K, q5_K),
    QROW(Q6_K, "q6_k", SLM_QK_K, q6_K),
    QROW(Q8_K, "q8_k", SLM_QK_K, q8_K),
};

const slm_dtype_traits *slm_dtype_get(int id)
{
    if (id < 0 || id >= SLM_DTYPE_COUNT || !traits[id].name) return NULL;
    return &traits[id];
}

int slm_dtype_valid(int id) { return slm_dtype_get(id) != NULL; }

const char *slm_dtype_name(slm_dtype t)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)t);
    return tr ? tr->name : "?";
}

int slm_dtype_from_name(const char *name)
{
    char low[16];
    size_t n = strlen(name);
    if (n == 0 || n >= sizeof low) return -1;
    for (size_t i = 0; i <= n; i++) low[i] = (char)tolower((unsigned char)name[i]);
    for (int i = 0; i < SLM_DTYPE_COUNT; i++)
        if (traits[i].name && strcmp(traits[i].name, low) == 0) return i;
    return -1;
}

size_t slm_dtype_row_size(slm_dtype t, int64_t n, int *ok)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)t);
    *ok = 0;
    if (!tr || n < 0 || n % tr->block_size != 0) return 0;
    uint64_t blocks = (uint64_t)(n / tr->block_size);
    if (blocks > SIZE_MAX / tr->type_size) return 0;
    *ok = 1;
    return (size_t)blocks * tr->type_size;
}
