/* fp16/bf16 conversions against the hardware F16C conversion (the one the
 * reference implementation uses) and against hand-checked values. */
#include <immintrin.h>
#include <math.h>
#include <stdio.h>

#include "core/fp16.h"

static int passed, failed;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

__attribute__((target("f16c"))) static uint16_t hw_to_f16(float f) { return _cvtss_sh(f, 0); }
__attribute__((target("f16c"))) static float hw_to_f32(uint16_t h) { return _cvtsh_ss(h); }

static void test_against_f16c(void)
{
    if (!__builtin_cpu_supports("f16c")) {
        printf("skip: no F16C on this CPU\n");
        return;
    }
    unsigned long bad = 0, n = 0;
    /* a stride coprime with 2^32 visits values of every exponent and many mantissas */
    for (uint64_t u = 0; u <= 0xffffffffull; u += 4093) {
        float f = slm_bits_f32((uint32_t)u);
        if (slm_f32_to_f16(f) != hw_to_f16(f)) bad++;
        n++;
    }
    /* every value near the f16 rounding boundaries: around each half ulp */
    for (uint32_t h = 0; h < 0x7c00; h++) {
        uint32_t mid = slm_f32_bits(slm_f16_to_f32((uint16_t)h));
        for (int d = -3; d <= 3; d++) {
            uint32_t u = mid + 0x1000u + (uint32_t)d; /* half an f16 ulp above */
            float f = slm_bits_f32(u);
            if (slm_f32_to_f16(f) != hw_to_f16(f)) bad++;
            if (slm_f32_to_f16(-f) != hw_to_f16(-f)) bad++;
            n += 2;
        }
    }
    CHECK(bad == 0, "f32->f16: %lu of %lu differ from F16C", bad, n);
    bad = 0;
    for (uint32_t h = 0; h < 65536; h++)
        if (slm_f32_bits(slm_f16_to_f32((uint16_t)h)) != slm_f32_bits(hw_to_f32((uint16_t)h))) bad++;
    CHECK(bad == 0, "f16->f32: %lu of 65536 differ from F16C", bad);
}

static void test_known_values(void)
{
    CHECK(slm_f32_to_f16(1.0f) == 0x3c00, "1.0");
    CHECK(slm_f32_to_f16(-2.0f) == 0xc000, "-2.0");
    CHECK(slm_f32_to_f16(65504.0f) == 0x7bff, "max half");
    CHECK(slm_f32_to_f16(65520.0f) == 0x7c00, "65520 rounds to inf");
    CHECK(slm_f32_to_f16(5.9604644775390625e-8f) == 0x0001, "smallest subnormal");
    CHECK(slm_f32_to_f16(2.98023223876953125e-8f) == 0x0000, "half of smallest rounds to even (0)");
    CHECK(slm_f32_to_f16(1.0f + 1.0f / 2048) == 0x3c00, "tie rounds to even (down)");
    CHECK(slm_f32_to_f16(1.0f + 3.0f / 2048) == 0x3c02, "tie rounds to even (up)");
    CHECK(isnan(slm_f16_to_f32(slm_f32_to_f16(NAN))), "nan stays nan");
    CHECK(slm_f32_to_bf16(1.0f) == 0x3f80, "bf16 1.0");
    CHECK(slm_f32_to_bf16(slm_bits_f32(0x3f808000u)) == 0x3f80, "bf16 tie to even (down)");
    CHECK(slm_f32_to_bf16(slm_bits_f32(0x3f818000u)) == 0x3f82, "bf16 tie to even (up)");
    CHECK(slm_f32_to_bf16(slm_bits_f32(0x3f808001u)) == 0x3f81, "bf16 above tie rounds up");
    CHECK(isnan(slm_bf16_to_f32(slm_f32_to_bf16(NAN))), "bf16 nan stays nan");
    CHECK(slm_bf16_to_f32(0xc040) == -3.0f, "bf16 -3");
}

int main(void)
{
    test_known_values();
    test_against_f16c();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
