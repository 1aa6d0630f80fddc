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

#define NONE (-1)
#define QROW(id, nm, bs, blk, fb)                                          \
    [SLM_DTYPE_##id] = {nm, bs, sizeof(slm_block_##blk), 1,                 \
                        slm_dequantize_##blk, slm_quantize_##blk, fb}

static const slm_dtype_traits traits[SLM_DTYPE_COUNT] = {
    [SLM_DTYPE_F32]  = {"f32", 1, 4, 0, f32_to_f32, f32_from_f32, NONE},
    [SLM_DTYPE_F16]  = {"f16", 1, 2, 0, f16_to_f32, f16_from_f32, NONE},
    [SLM_DTYPE_BF16] = {"bf16", 1, 2, 0, bf16_to_f32, bf16_from_f32, NONE},
    [SLM_DTYPE_I8]   = {"i8", 1, 1, 0, i8_to_f32, NULL, NONE},
    [SLM_DTYPE_I16]  = {"i16", 1, 2, 0, i16_to_f32, NULL, NONE},
    [SLM_DTYPE_I32]  = {"i32", 1, 4, 0, i32_to_f32, NULL, NONE},
    QROW(Q4_0, "q4_0", SLM_QK4_0, q4_0, NONE),
    QROW(Q4_1, "q4_1", SLM_QK4_1, q4_1, NONE),
    QROW(Q5_0, "q5_0", SLM_QK5_0, q5_0, NONE),
    QROW(Q5_1, "q5_1", SLM_QK5_1, q5_1, NONE),
    QROW(Q8_0, "q8_0", SLM_QK8_0, q8_0, NONE),
    QROW(Q8_1, "q8_1", SLM_QK8_1, q8_1, NONE),
    /* K-quants fall back to a 32-element type of about the same size
     * (IQ4_NL for Q2_K/Q3_K in 2025 builds of the reference, Q4_0 since) */
    QROW(Q2_K, "q2_k", SLM_QK_K, q2_K, SLM_DTYPE_Q4_0),
    QROW(Q3_K, "q3_k", SLM_QK_K, q3_K, SLM_DTYPE_Q4_0),
    QROW(Q4_K, "q4_k", SLM_QK_K, q4_K, SLM_DTYPE_Q5_0),
    QROW(Q5_K, "q5_k", SLM_QK_K, q5_K, SLM_DTYPE_Q5_1),
    QROW(Q6_K, "q6_k", SLM_QK_K, q6_K, SLM_DTYPE_Q8_0),
    QROW(Q8_K, "q8_k", SLM_QK_K, q8_K, NONE),
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

slm_dtype slm_dtype_for_row(slm_dtype t, int64_t ncols)
{
    const slm_dtype_traits *tr = slm_dtype_get((int)t);
    if (!tr || ncols % tr->block_size == 0) return t;
    const slm_dtype_traits *fb = slm_dtype_get(tr->fallback);
    if (fb && ncols % fb->block_size == 0) return (slm_dtype)tr->fallback;
    return SLM_DTYPE_F16;
}

/* llama_ftype values; the ids missing here are types slm has no quantizer
 * for (IQ*, TQ*, MXFP4) or retired ones. */
static const slm_file_type file_types[] = {
    {"f32", 0, SLM_DTYPE_F32, 1},
    {"f16", 1, SLM_DTYPE_F16, 1},
    {"q4_0", 2, SLM_DTYPE_Q4_0, 1},
    {"q4_1", 3, SLM_DTYPE_Q4_1, 1},
    {"q8_0", 7, SLM_DTYPE_Q8_0, 1},
    {"q5_0", 8, SLM_DTYPE_Q5_0, 1},
    {"q5_1", 9, SLM_DTYPE_Q5_1, 1},
    {"q2_k", 10, SLM_DTYPE_Q2_K, 1},
    {"q3_k_s", 11, SLM_DTYPE_Q3_K, 0},
    {"q3_k_m", 12, SLM_DTYPE_Q3_K, 1},
    {"q3_k_l", 13, SLM_DTYPE_Q3_K, 0},
    {"q4_k_s", 14, SLM_DTYPE_Q4_K, 0},
    {"q4_k_m", 15, SLM_DTYPE_Q4_K, 1},
    {"q5_k_s", 16, SLM_DTYPE_Q5_K, 0},
    {"q5_k_m", 17, SLM_DTYPE_Q5_K, 1},
    {"q6_k", 18, SLM_DTYPE_Q6_K, 1},
    {"bf16", 32, SLM_DTYPE_BF16, 1},
};

const slm_file_type *slm_file_type_at(int i)
{
    if (i < 0 || i >= (int)(sizeof file_types / sizeof file_types[0])) return NULL;
    return &file_types[i];
}

const slm_file_type *slm_file_type_of(slm_dtype t)
{
    for (const slm_file_type *f = file_types; f < file_types + sizeof file_types / sizeof file_types[0]; f++)
        if (f->dtype == t && f->names_dtype) return f;
    return NULL;
}
