/* Block layouts of the ggml quantized types, byte-compatible with GGUF files.
 *
 * Each block holds block_size consecutive elements of one row. `d` is the
 * scale, `m`/`dmin` the minimum (offset) for the asymmetric types, `qs` the
 * low bits packed two 4-bit values per byte (element j in the low nibble of
 * qs[j], element j+16 in the high nibble, for the 32-element types), `qh` the
 * fifth bits. K-quants group 256 elements into sub-blocks of 16 or 32 with
 * 6-bit (Q4_K/Q5_K, packed in 12 bytes) or 4-bit (Q2_K) or 8-bit (Q6_K)
 * sub-block scales. Sizes are asserted: they are the file format. */
#ifndef SLM_BLOCKS_H
#define SLM_BLOCKS_H

#include <assert.h>
#include <stdint.h>

#include "../core/fp16.h"

#define SLM_QK4_0 32
#define SLM_QK4_1 32
#define SLM_QK5_0 32
#define SLM_QK5_1 32
#define SLM_QK8_0 32
#define SLM_QK8_1 32
#define SLM_QK_K 256
#define SLM_K_SCALE_SIZE 12

typedef struct { slm_f16 d; uint8_t qs[SLM_QK4_0 / 2]; } slm_block_q4_0;
static_assert(sizeof(slm_block_q4_0) == 18, "q4_0 block size");

typedef struct { slm_f16 d, m; uint8_t qs[SLM_QK4_1 / 2]; } slm_block_q4_1;
static_assert(sizeof(slm_block_q4_1) == 20, "q4_1 block size");

typedef struct { slm_f16 d; uint8_t qh[4]; uint8_t qs[SLM_QK5_0 / 2]; } slm_block_q5_0;
static_assert(sizeof(slm_block_q5_0) == 22, "q5_0 block size");

typedef struct { slm_f16 d, m; uint8_t qh[4]; uint8_t qs[SLM_QK5_1 / 2]; } slm_block_q5_1;
static_assert(sizeof(slm_block_q5_1) == 24, "q5_1 block size");

typedef struct { slm_f16 d; int8_t qs[SLM_QK8_0]; } slm_block_q8_0;
static_assert(sizeof(slm_block_q8_0) == 34, "q8_0 block size");

/* s = d * sum(qs), used by the dot products with the asymmetric types */
typedef struct { slm_f16 d, s; int8_t qs[SLM_QK8_1]; } slm_block_q8_1;
static_assert(sizeof(slm_block_q8_1) == 36, "q8_1 block size");

/* 16 sub-blocks of 16: scales[i] = 4-bit scale | 4-bit min << 4; 2-bit quants */
typedef struct {
    uint8_t scales[SLM_QK_K / 16];
    uint8_t qs[SLM_QK_K / 4];
    slm_f16 d, dmin;
} slm_block_q2_K;
static_assert(sizeof(slm_block_q2_K) == 84, "q2_K block size");

/* 16 sub-blocks of 16, 6-bit signed scales packed in 12 bytes; 3-bit quants
 * as 2 low bits in qs plus the high bit in hmask */
typedef struct {
    uint8_t hmask[SLM_QK_K / 8];
    uint8_t qs[SLM_QK_K / 4];
    uint8_t scales[12];
    slm_f16 d;
} slm_block_q3_K;
static_assert(sizeof(slm_block_q3_K) == 110, "q3_K block size");

/* 8 sub-blocks of 32, 6-bit scales and mins packed in 12 bytes; 4-bit quants */
typedef struct {
    slm_f16 d, dmin;
    uint8_t scales[SLM_K_SCALE_SIZE];
    uint8_t qs[SLM_QK_K / 2];
} slm_block_q4_K;
static_assert(sizeof(slm_block_q4_K) == 144, "q4_K block size");

/* 6-bit scale and min of sub-block j (0..7) of q4_K/q5_K: bytes 0..3 hold
 * scales 0..3, bytes 4..7 mins 0..3 (low 6 bits each); bytes 8..11 hold
 * scale 4+j (low nibble) and min 4+j (high nibble), whose top two bits go
 * into bits 6..7 of bytes j and 4+j. */
static inline void slm_k4_scale_min(int j, const uint8_t *q, int *sc, int *m)
{
    if (j < 4) {
        *sc = q[j] & 63;
        *m = q[j + 4] & 63;
    } else {
        *sc = (q[j + 4] & 15) | (q[j - 4] >> 6) << 4;
        *m = (q[j + 4] >> 4) | (q[j] >> 6) << 4;
    }
}

typedef struct {
    slm_f16 d, dmin;
    uint8_t scales[SLM_K_SCALE_SIZE];
    uint8_t qh[SLM_QK_K / 8];
    uint8_t qs[SLM_QK_K / 2];
} slm_block_q5_K;
static_assert(sizeof(slm_block_q5_K) == 176, "q5_K block size");

/* 16 sub-blocks of 16 with int8 scales; 6-bit quants = 4 low bits in ql,
 * 2 high bits in qh */
typedef struct {
    uint8_t ql[SLM_QK_K / 2];
    uint8_t qh[SLM_QK_K / 4];
    int8_t scales[SLM_QK_K / 16];
    slm_f16 d;
} slm_block_q6_K;
static_assert(sizeof(slm_block_q6_K) == 210, "q6_K block size");

/* activation blocks for the K-quant dot products; bsums = sums of 16 quants */
typedef struct {
    float d;
    int8_t qs[SLM_QK_K];
    int16_t bsums[SLM_QK_K / 16];
} slm_block_q8_K;
static_assert(sizeof(slm_block_q8_K) == 292, "q8_K block size");

#endif
