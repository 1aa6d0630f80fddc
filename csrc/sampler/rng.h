/* The sampler's random number generator: xoshiro256** seeded by splitmix64.
 *
 * Both are Sebastiano Vigna's public-domain generators (prng.di.unimi.it),
 * specified by a few lines of integer arithmetic on uint64_t, so a seed gives
 * the same stream on every machine and compiler, forever; the C library's
 * rand() gives no such promise. The state is four plain words so that a
 * session can save and restore it exactly (snapshots). */
#ifndef SLM_RNG_H
#define SLM_RNG_H

#include <stdint.h>

typedef struct slm_rng {
    uint64_t s[4];    /* never all zero */
} slm_rng;

/* One step of splitmix64: advances *x and returns the next output. */
uint64_t slm_rng_splitmix64(uint64_t *x);
/* State from a 64-bit seed: four successive splitmix64 outputs (never all
 * zero, since splitmix64 is a bijection of its counter). */
void slm_rng_seed(slm_rng *r, uint64_t seed);
/* Next 64 random bits (xoshiro256**). */
uint64_t slm_rng_next(slm_rng *r);
/* Uniform double in [0, 1): the top 53 bits of the next output. */
double slm_rng_uniform(slm_rng *r);

/* Test data (slm.core.testing.randn / rand): n floats from splitmix64
 * counting from seed, the same on every machine. normal: Box-Muller, two
 * values per pair of uniforms u1, u2 in (0, 1) (53 bits, never 0):
 * std sqrt(-2 ln u1) cos(2 pi u2), then the sin; uniform: lo + (hi - lo) u. */
void slm_rng_fill_normal(float *p, int64_t n, uint64_t seed, double std);
void slm_rng_fill_uniform(float *p, int64_t n, uint64_t seed, double lo, double hi);

#endif
