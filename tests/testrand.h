/* tests/testrand.h: the C tests' seeded random data, one copy.
 *
 * A xorshift32 stream (Marsaglia 2003, shifts 13/17/5) whose seed each test
 * file chooses (TESTRAND_SEED, defined before including this), so every
 * test keeps the data it was written and tuned with; frand() draws uniform
 * values in [-1, 1] on a grid of 1/TESTRAND_GRID (default 1e-6). */
#ifndef SLM_TESTS_TESTRAND_H
#define SLM_TESTS_TESTRAND_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#ifndef TESTRAND_SEED
#define TESTRAND_SEED 12345
#endif
#ifndef TESTRAND_GRID
#define TESTRAND_GRID 1000000
#endif

static uint32_t rng = TESTRAND_SEED;

static inline uint32_t urand(void)
{
    rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5;
    return rng;
}

static inline float frand(void)
{
    return (float)(urand() % (2u * TESTRAND_GRID + 1)) / (float)TESTRAND_GRID - 1.0f;
}

/* n values frand() * scale (malloc'ed) */
static inline float *rvec(int64_t n, float scale)
{
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++) v[i] = frand() * scale;
    return v;
}

static inline float *fdup(const float *x, int64_t n)
{
    float *v = malloc((size_t)n * sizeof *v);
    memcpy(v, x, (size_t)n * sizeof *v);
    return v;
}

#endif
