/* Dot products of a weight row with an activation row, the way the reference
 * implementation (ggml's CPU backend) computes matmuls: the F32 activations
 * are first converted to the weight type's "vec_dot_type" (8-bit blocks for
 * the quantized types, F16/BF16 for the half types) and the dot product runs
 * on the two encoded rows, with integer arithmetic inside each block.
 *
 *   weights         activations   per block
 *   q4_0 q5_0 q8_0  q8_0          sumi * d_w * d_a
 *   q4_1 q5_1       q8_1          sumi * d_w * d_a + m_w * s_a
 *   q2_K .. q6_K    q8_K          d_a * (d_w * sumi - dmin_w * sum(min * bsums))
 *   f16             f16           float products summed
 *   bf16            bf16          float products summed
 *   f32             f32           float products summed
 *
 * Every dtype has a portable generic kernel; on x86-64 CPUs with AVX2, FMA
 * and F16C an AVX2 twin (vecdot_avx2.c) is chosen at run time. The K-quant
 * AVX2 kernels compute the same per-block integers as the generic ones and
 * combine them with the same float expression, so they are bit-identical;
 * the others accumulate in a different order (tested within tolerance). */
#ifndef SLM_VECDOT_H
#define SLM_VECDOT_H

#include <stddef.h>
#include <stdint.h>

#include "../core/dtype.h"

/* *s = dot(w, a) over n elements (n a multiple of the block size): w holds n
 * weights of the weight dtype, a n activations of its act_type. */
typedef void (*slm_vec_dot_fn)(int64_t n, float *s, const void *w, const void *a);
/* Encodes n floats as act_type (n a multiple of its block size). */
typedef void (*slm_act_from_f32_fn)(const float *x, void *y, int64_t n);

/* s[r] = dot(w, a + r * a_stride bytes) for r < 4: one weight row against
 * four activation rows, bit-identical to four slm_vec_dot_fn calls. */
typedef void (*slm_vec_dot4_fn)(int64_t n, float *s, const void *w, const void *a, size_t a_stride);

typedef struct slm_vecdot_traits {
    slm_dtype act_type;          /* the reference's vec_dot_type */
    slm_vec_dot_fn dot_generic;
    slm_vec_dot_fn dot_avx2;     /* NULL without an AVX2 twin */
    slm_vec_dot4_fn dot4_avx2;   /* NULL without a four-row AVX2 kernel */
    /* the AVX-512 tier's kernels (files *_avx512.c), chosen over the AVX2
     * ones when the CPU has that tier; NULL: the AVX2 kernel serves it.
     * Same results as the AVX2 twin (bit for bit where that one is). */
    slm_vec_dot_fn dot_avx512;
    slm_vec_dot4_fn dot4_avx512;
} slm_vecdot_traits;

/* NULL if weights of this dtype cannot be multiplied. */
const slm_vecdot_traits *slm_vecdot_traits_get(slm_dtype w);
/* The kernel chosen for this CPU (AVX2 twin when available), NULL if none. */
slm_vec_dot_fn slm_vecdot_fn(slm_dtype w);
/* The four-row kernel for this CPU, NULL if none (then call slm_vecdot_fn
 * per row). */
slm_vec_dot4_fn slm_vecdot4_fn(slm_dtype w);

/* Activation encoders: the generic one and the AVX2 twin, which produces
 * identical bytes. q8_K, f16 and bf16 are the scalar reference conversions;
 * q8_0 and q8_1 follow the reference's run-time activation encoding on x86
 * (codes x * 127/amax rounded half to even; see vecdot.c), which differs from
 * its weight quantizer in quant.h. NULL when act is not an activation type
 * (q8_0, q8_1, q8_K, f16, bf16; f32 needs no encoding). */
slm_act_from_f32_fn slm_act_quant_generic(slm_dtype act);
slm_act_from_f32_fn slm_act_quant_avx2(slm_dtype act);
slm_act_from_f32_fn slm_act_quant_fn(slm_dtype act);

/* 1 if AVX2, FMA and F16C are usable (the AVX2 kernels are then chosen). */
int slm_cpu_has_avx2(void);
/* 1 if AVX2 and AVX-512 F, BW, VL, DQ and VNNI are usable (CPU and OS):
 * files named *_avx512.c hold kernels for that tier, chosen at run time. */
int slm_cpu_has_avx512(void);

/* Kernel tiers, lowest first. Every tier computes what the generic kernels
 * specify (bit for bit where a kernel's comment says so, else within the
 * tolerance its test states); a higher tier is only faster. */
#define SLM_KERNELS_GENERIC 0
#define SLM_KERNELS_AVX2 1
#define SLM_KERNELS_AVX512 2
/* Caps the tier the kernels may use (benchmarks and tests comparing tiers
 * end to end); the default allows every tier the CPU has. Process-wide:
 * call it while no product is running. */
void slm_kernels_set_level(int level);
/* The tier in use: the highest the CPU has, at most the cap. */
int slm_kernels_level(void);
/* "avx512", "avx2" or "generic" */
const char *slm_kernels_level_name(int level);
/* Forces the generic kernels (on = 1) or restores the CPU's choice (0). */
void slm_kernels_force_generic(int on);
/* 1 if the AVX2 (resp. AVX-512) kernels are to be used: the CPU has them
 * and the cap allows them. */
int slm_kernels_use_avx2(void);
int slm_kernels_use_avx512(void);

/* The AVX2 twins (vecdot_avx2.c); call only when slm_cpu_has_avx2(). */
#if defined(__x86_64__)
void slm_vec_dot_q4_0_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q4_1_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q5_0_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q5_1_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q8_0_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q2_K_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q3_K_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q4_K_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q5_K_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_q6_K_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_f16_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_bf16_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot_f32_avx2(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot4_f32_avx2(int64_t n, float *s, const void *w, const void *a, size_t as);
void slm_vec_dot4_q4_0_avx2(int64_t n, float *s, const void *w, const void *a, size_t as);
void slm_vec_dot4_q5_0_avx2(int64_t n, float *s, const void *w, const void *a, size_t as);
void slm_vec_dot4_q8_0_avx2(int64_t n, float *s, const void *w, const void *a, size_t as);
void slm_vec_dot4_q4_K_avx2(int64_t n, float *s, const void *w, const void *a, size_t as);
void slm_vec_dot4_q6_K_avx2(int64_t n, float *s, const void *w, const void *a, size_t as);
void slm_act_q8_0_avx2(const float *x, void *y, int64_t n);
void slm_act_q8_1_avx2(const float *x, void *y, int64_t n);
void slm_act_q8_K_avx2(const float *x, void *y, int64_t n);
void slm_act_f16_avx2(const float *x, void *y, int64_t n);
#endif

#endif
