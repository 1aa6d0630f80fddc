/* tests/q8k_testdata.h: q8_K activation blocks for the K-quant kernel tests
 * (the raw bytes a kernel must take, beyond what the q8_K encoder emits),
 * and the bit comparison those tests make. Include after testrand.h. */
#ifndef SLM_TESTS_Q8K_TESTDATA_H
#define SLM_TESTS_Q8K_TESTDATA_H

#include <string.h>

#include "quant/blocks.h"

/* a uniform value in [lo, hi] */
static inline float q8k_uniform(float lo, float hi) { return lo + (hi - lo) * (frand() + 1.0f) * 0.5f; }

/* n activations as q8_K: random codes (-128 included) with their true
 * sub-block sums, or every code = v when v != 0; d in [0.001, 0.02] */
static inline void q8k_fill(slm_block_q8_K *a, int64_t n, int v)
{
    for (int64_t b = 0; b < n / SLM_QK_K; b++) {
        a[b].d = q8k_uniform(0.001f, 0.02f);
        for (int i = 0; i < SLM_QK_K; i++) a[b].qs[i] = (int8_t)(v ? v : (int)(urand() & 255) - 128);
        for (int j = 0; j < 16; j++) {
            int s = 0;
            for (int i = 0; i < 16; i++) s += a[b].qs[16 * j + i];
            a[b].bsums[j] = (int16_t)s;
        }
    }
}

/* 1 if a and b are the same float bit for bit */
static inline int q8k_same_bits(float a, float b) { return memcmp(&a, &b, sizeof a) == 0; }

#endif
