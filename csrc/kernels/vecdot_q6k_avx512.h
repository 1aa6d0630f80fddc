/* AVX-512 VNNI vec_dot for q6_K weights (vecdot_q6k_avx512.c): one and four
 * activation rows, bit-identical to the generic dot_q6_K (vecdot.h's K-quant
 * expression). Call only when slm_cpu_has_avx512(). */
#ifndef SLM_VECDOT_Q6K_AVX512_H
#define SLM_VECDOT_Q6K_AVX512_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__)
void slm_vec_dot_q6_K_avx512(int64_t n, float *s, const void *w, const void *a);
void slm_vec_dot4_q6_K_avx512(int64_t n, float *s, const void *w, const void *a, size_t as);
#endif

#endif
