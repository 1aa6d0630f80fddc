/* xoshiro256** 1.0 and splitmix64, written from their published definitions
 * (Blackman & Vigna, "Scrambled linear pseudorandom number generators"). */
#include "rng.h"

#include <math.h>

uint64_t slm_rng_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15u);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9u;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebu;
    return z ^ (z >> 31);
}

void slm_rng_seed(slm_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++) r->s[i] = slm_rng_splitmix64(&x);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t slm_rng_next(slm_rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return out;
}

double slm_rng_uniform(slm_rng *r)
{
    return (double)(slm_rng_next(r) >> 11) * 0x1.0p-53;
}

/* uniform in (0, 1): 53 random bits, never 0 */
static double open_unit(uint64_t *x)
{
    return ((double)(slm_rng_splitmix64(x) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

void slm_rng_fill_normal(float *p, int64_t n, uint64_t seed, double std)
{
    for (int64_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(open_unit(&seed))), a = 2.0 * M_PI * open_unit(&seed);
        p[i] = (float)(std * r * cos(a));
        if (i + 1 < n) p[i + 1] = (float)(std * r * sin(a));
    }
}

void slm_rng_fill_uniform(float *p, int64_t n, uint64_t seed, double lo, double hi)
{
    for (int64_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * open_unit(&seed));
}
