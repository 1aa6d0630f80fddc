/* IEEE half (binary16) and bfloat16 <-> float conversions.
 *
 * Scalar, bit-exact with the hardware F16C conversion (round to nearest even,
 * NaN kept NaN), which is what the reference implementation uses, so that
 * quantizing through these conversions reproduces its blocks byte for byte. */
#ifndef SLM_FP16_H
#define SLM_FP16_H

#include <stdint.h>
#include <string.h>

typedef uint16_t slm_f16;
typedef uint16_t slm_bf16;

static inline uint32_t slm_f32_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float slm_bits_f32(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

static inline float slm_f16_to_f32(slm_f16 h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f)                      /* inf / nan (nan made quiet, as F16C) */
        return slm_bits_f32(sign | 0x7f800000u | (man << 13) | (man ? 0x400000u : 0));
    if (exp == 0) {
        if (man == 0) return slm_bits_f32(sign);
        /* subnormal: value = man * 2^-24 (exact in float) */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return slm_bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline slm_f16 slm_f32_to_f16(float f)
{
    uint32_t x = slm_f32_bits(f);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)                 /* nan: keep a quiet nan */
        return (slm_f16)(sign | 0x7e00 | ((ax >> 13) & 0x3ff));
    if (ax >= 0x477ff000u)                /* rounds to >= 65520: inf */
        return (slm_f16)(sign | 0x7c00);
    if (ax < 0x38800000u) {               /* result is subnormal or zero */
        /* add 0.5 so the float adder rounds to nearest even at 2^-24 units */
        float v = slm_bits_f32(ax) + 0.5f;
        return (slm_f16)(sign | (slm_f32_bits(v) - 0x3f000000u));
    }
    uint32_t mant_odd = (ax >> 13) & 1;
    ax += 0xc8000fffu + mant_odd;         /* rebias exponent (-112<<23) and round */
    return (slm_f16)(sign | (ax >> 13));
}

static inline float slm_bf16_to_f32(slm_bf16 h) { return slm_bits_f32((uint32_t)h << 16); }

/* Round to nearest even; NaN stays a quiet NaN (as ggml_compute_fp32_to_bf16). */
static inline slm_bf16 slm_f32_to_bf16(float f)
{
    uint32_t u = slm_f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (slm_bf16)((u >> 16) | 64);
    return (slm_bf16)((u + (0x7fffu + ((u >> 16) & 1))) >> 16);
}

#endif
