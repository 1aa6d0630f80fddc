/* AVX-512 kernels of RWKV-7's sequence path (prefill): the WKV-7
 * recurrence over a run of tokens, the per-head steps around it
 * (decay, learning rate, value residual, kk, group norm, bonus, gate) and
 * the row-wise mixes of both blocks. The portable versions, which define
 * the results, are wkv7_heads_generic (rwkv.c), v7_heads (rwkv_tmix.c) and
 * rwkv_rows.c; rwkv_rows.c also picks between them at run time.
 *
 * The recurrence (slm_rwkv_wkv7_heads_avx512) gives the generic loop's
 * floats bit for bit. The generic loop walks a state row S[i][.] (i a
 * value index) and sums along it (sa = a . S[i], y[i] = S'[i] . r) one j
 * after the other; here the head's state is transposed into T[j][i] =
 * S[i][j] for the run, so that the 16 lanes hold 16 rows i and each sum is
 * taken over j in the same order, with the same separate multiply and add
 * (no FMA: this file is built with -std=c11, so the compiler contracts
 * nothing either). The next token's sa is summed while the current token's
 * update is written, so the state is read once per token.
 *
 * The per-head steps (slm_rwkv7_heads_avx512) take exp through slm_exp16
 * (within 2 ulp of expf) and sum the norms lane-wise, so they agree with
 * v7_heads to rounding (tests/test_rwkv7_seq.c states the tolerance). Tails
 * are masked lanes of the same vector code, so an element's result does
 * not depend on where it sits in a row or batch. */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "../kernels/simd_avx512.h"
#include "rwkv_internal.h"

/* 1 / (1 + e^-x), as sigmoidf in rwkv_tmix.c */
static inline __m512 sigmoid16(__m512 x)
{
    const __m512 one = _mm512_set1_ps(1.0f);
    return _mm512_div_ps(one, _mm512_add_ps(one, slm_exp16(_mm512_sub_ps(_mm512_setzero_ps(), x))));
}

/* --- row-wise mixes (rwkv_rows.c) -------------------------------------------------- */

void slm_rwkv_shift_diff_avx512(float *sx, const float *x, const float *carry, int n, int64_t dim)
{
    for (int t = 0; t < n; t++) {
        const float *xt = x + (size_t)t * (size_t)dim, *pv = slm_rwkv_prev(carry, x, t, dim);
        float *o = sx + (size_t)t * (size_t)dim;
        for (int64_t c = 0; c < dim; c += 16) {
            __mmask16 k = slm_tail16(c, dim);
            _mm512_mask_storeu_ps(o + c, k, _mm512_sub_ps(_mm512_maskz_loadu_ps(k, pv + c),
                                                          _mm512_maskz_loadu_ps(k, xt + c)));
        }
    }
}

void slm_rwkv_shift_mix_avx512(float *out, size_t out_stride, const float *x, const float *carry,
                               const float *const *m, int n_mix, int n, int64_t dim)
{
    for (int t = 0; t < n; t++) {
        const size_t o = (size_t)t * (size_t)dim;
        const float *xt = x + o, *pv = slm_rwkv_prev(carry, x, t, dim);
        for (int64_t c = 0; c < dim; c += 16) {
            __mmask16 k = slm_tail16(c, dim);
            __m512 xv = _mm512_maskz_loadu_ps(k, xt + c);
            __m512 sx = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, pv + c), xv);
            for (int i = 0; i < n_mix; i++)
                _mm512_mask_storeu_ps(out + (size_t)i * out_stride + o + c, k,
                                      _mm512_add_ps(_mm512_mul_ps(sx, _mm512_maskz_loadu_ps(k, m[i] + c)), xv));
        }
    }
}

void slm_rwkv_sigmoid_avx512(float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = slm_tail16(i, n);
        _mm512_mask_storeu_ps(y + i, k, sigmoid16(_mm512_maskz_loadu_ps(k, y + i)));
    }
}

void slm_rwkv_tanh_avx512(float *y, int64_t n)
{
    const __m512 one = _mm512_set1_ps(1.0f), two = _mm512_set1_ps(2.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = slm_tail16(i, n);
        /* 1 - 2 / (e^2y + 1): e^2y = inf gives 1, e^2y = 0 gives -1 */
        __m512 e = slm_exp16(_mm512_mul_ps(two, _mm512_maskz_loadu_ps(k, y + i)));
        _mm512_mask_storeu_ps(y + i, k, _mm512_sub_ps(one, _mm512_div_ps(two, _mm512_add_ps(e, one))));
    }
}

void slm_rwkv_relu_sq_avx512(float *y, int64_t n)
{
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = slm_tail16(i, n);
        /* max(y, 0) is 0 for NaN as y > 0 ? y : 0 is (NaN in the first operand) */
        __m512 v = _mm512_max_ps(_mm512_maskz_loadu_ps(k, y + i), zero);
        _mm512_mask_storeu_ps(y + i, k, _mm512_mul_ps(v, v));
    }
}

/* --- the WKV-7 recurrence ---------------------------------------------------------- */

/* The 16 x 16 block at src (rows ld floats apart) transposed into dst
 * (rows ld apart) */
static inline void transpose16(float *dst, const float *src, int64_t ld)
{
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ld);
    slm_transpose16(r);
    for (int k = 0; k < 16; k++) _mm512_storeu_ps(dst + k * ld, r[k]);
}

/* dst[j][i] = src[i][j], hs x hs (a multiple of 16), by 16 x 16 blocks */
static void transpose(float *restrict dst, const float *restrict src, int64_t hs)
{
    for (int64_t i = 0; i < hs; i += 16)
        for (int64_t j = 0; j < hs; j += 16) transpose16(dst + j * hs + i, src + i * hs + j, hs);
}

/* One head over n tokens on its transposed state T (hs x hs, T[j][i]);
 * NV = hs / 16 vectors of rows i. rows: the token's row of each input at
 * the head's offset, dim floats apart. */
static inline void wkv7_head_t(int n, int64_t hs, int nv, size_t dim, const float *r,
                               const float *w, const float *k, const float *v, const float *a,
                               const float *b, float *T, float *y)
{
    __m512 sa[8];
    /* sa of the first token: sum_j a[j] S[i][j], j in order */
    for (int q = 0; q < nv; q++) sa[q] = _mm512_setzero_ps();
    for (int64_t j = 0; j < hs; j++) {
        const __m512 aj = _mm512_set1_ps(a[j]);
        for (int q = 0; q < nv; q++)
            sa[q] = _mm512_add_ps(sa[q], _mm512_mul_ps(aj, _mm512_loadu_ps(T + j * hs + 16 * q)));
    }
    for (int t = 0; t < n; t++) {
        const size_t o = (size_t)t * dim;
        const float *rt = r + o, *wt = w + o, *kt = k + o, *at1 = a + o + dim, *bt = b + o;
        const int next = t + 1 < n;
        __m512 vv[8], yy[8], sn[8];
        for (int q = 0; q < nv; q++) {
            vv[q] = _mm512_loadu_ps(v + o + 16 * q);
            yy[q] = _mm512_setzero_ps();
            sn[q] = _mm512_setzero_ps();
        }
        for (int64_t j = 0; j < hs; j++) {
            const __m512 wj = _mm512_set1_ps(wt[j]), kj = _mm512_set1_ps(kt[j]);
            const __m512 bj = _mm512_set1_ps(bt[j]), rj = _mm512_set1_ps(rt[j]);
            float *Tj = T + j * hs;
            /* S[i][j] w[j] + v[i] k[j] + sa[i] b[j], left to right */
            for (int q = 0; q < nv; q++) {
                __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(_mm512_loadu_ps(Tj + 16 * q), wj),
                                                       _mm512_mul_ps(vv[q], kj)),
                                         _mm512_mul_ps(sa[q], bj));
                _mm512_storeu_ps(Tj + 16 * q, s);
                yy[q] = _mm512_add_ps(yy[q], _mm512_mul_ps(s, rj));
            }
            if (next) {
                const __m512 aj = _mm512_set1_ps(at1[j]);
                for (int q = 0; q < nv; q++)
                    sn[q] = _mm512_add_ps(sn[q], _mm512_mul_ps(aj, _mm512_loadu_ps(Tj + 16 * q)));
            }
        }
        for (int q = 0; q < nv; q++) {
            _mm512_storeu_ps(y + o + 16 * q, yy[q]);
            sa[q] = sn[q];
        }
    }
}

void slm_rwkv_wkv7_heads_avx512(int n, int64_t h0, int64_t h1, int64_t hs, size_t dim,
                                const float *r, const float *w, const float *k, const float *v,
                                const float *a, const float *b, float *S, float *y)
{
    float T[SLM_RWKV_AVX512_MAX_HS * SLM_RWKV_AVX512_MAX_HS] __attribute__((aligned(64)));
    for (int64_t h = h0; h < h1; h++) {
        size_t ho = (size_t)(h * hs);
        float *Sh = S + ho * (size_t)hs;
        transpose(T, Sh, hs);
        /* a literal lane count for the 64-wide heads of every RWKV-7 model,
         * so that the compiler keeps the accumulators in registers */
        if (hs == 64)
            wkv7_head_t(n, 64, 4, dim, r + ho, w + ho, k + ho, v + ho, a + ho, b + ho, T, y + ho);
        else
            wkv7_head_t(n, hs, (int)(hs / 16), dim, r + ho, w + ho, k + ho, v + ho, a + ho, b + ho,
                        T, y + ho);
        transpose(Sh, T, hs);
    }
}

/* --- the per-head steps of the v7 time mix ------------------------------------------- */

static inline float hsum16(__m512 v)
{
    return _mm512_reduce_add_ps(v);
}

/* sum of the 16 floats of v in double, added to acc (8 doubles) */
static inline __m512d add_pd16(__m512d acc, __m512 v)
{
    acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
    return _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)));
}

/* As v7_heads (rwkv_tmix.c) for heads h0..h1-1 of io's n rows; hs a
 * multiple of 16 no larger than SLM_RWKV_AVX512_MAX_HS. */
void slm_rwkv7_heads_avx512(const slm_rwkv7_io *io, int64_t h0, int64_t h1)
{
    const slm_rwkv_tmix *b = io->b;
    const int64_t d = b->dim, hs = b->head_size;
    const int n = io->n;
    float *r = io->r, *w = io->w, *k = io->k, *v = io->v, *a = io->a, *g = io->g, *y = io->y;
    const __m512 dscale = _mm512_set1_ps(-0.606531f);
    for (int t = 0; t < n; t++) {
        const size_t to = (size_t)t * (size_t)d;
        for (int64_t h = h0; h < h1; h++) {
            const size_t c0 = (size_t)(h * hs), o = to + c0;
            /* decay, learning rate, value residual per channel */
            for (int64_t q = 0; q < hs; q += 16) {
                const size_t i = o + (size_t)q, c = c0 + (size_t)q;
                __m512 sw = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(w + i), _mm512_loadu_ps(b->w0 + c)));
                _mm512_storeu_ps(w + i, slm_exp16(_mm512_mul_ps(dscale, sw)));
                _mm512_storeu_ps(a + i, sigmoid16(_mm512_add_ps(_mm512_loadu_ps(a + i),
                                                                _mm512_loadu_ps(b->a0 + c))));
                __m512 vi = _mm512_loadu_ps(v + i);
                if (b->first_layer) {
                    _mm512_storeu_ps(io->v_first + i, vi);
                } else {
                    __m512 mix = sigmoid16(_mm512_add_ps(_mm512_loadu_ps(io->nu + i),
                                                         _mm512_loadu_ps(b->v0 + c)));
                    __m512 dv = _mm512_sub_ps(_mm512_loadu_ps(io->v_first + i), vi);
                    _mm512_storeu_ps(v + i, _mm512_add_ps(vi, _mm512_mul_ps(dv, mix)));
                }
            }
            /* kk = l2-normalized k * k_k: na = -kk, nb = kk * a; then
             * k = k + (a * ka - ka), ka = k * k_a */
            __m512 ss = _mm512_setzero_ps();
            for (int64_t q = 0; q < hs; q += 16) {
                __m512 kk = _mm512_mul_ps(_mm512_loadu_ps(k + o + q), _mm512_loadu_ps(b->k_k + c0 + q));
                ss = _mm512_add_ps(ss, _mm512_mul_ps(kk, kk));
            }
            const __m512 scale = _mm512_set1_ps(1.0f / fmaxf(sqrtf(hsum16(ss)), 1e-12f));
            for (int64_t q = 0; q < hs; q += 16) {
                const size_t i = o + (size_t)q;
                __m512 ki = _mm512_loadu_ps(k + i), ai = _mm512_loadu_ps(a + i);
                __m512 kk = _mm512_mul_ps(_mm512_mul_ps(ki, _mm512_loadu_ps(b->k_k + c0 + q)), scale);
                _mm512_storeu_ps(io->na + i, _mm512_sub_ps(_mm512_setzero_ps(), kk));
                _mm512_storeu_ps(io->nb + i, _mm512_mul_ps(kk, ai));
                __m512 ka = _mm512_mul_ps(ki, _mm512_loadu_ps(b->k_a + c0 + q));
                _mm512_storeu_ps(k + i, _mm512_add_ps(ki, _mm512_sub_ps(_mm512_mul_ps(ai, ka), ka)));
            }
        }
    }
    slm_rwkv_wkv7_heads(n, h0, h1, hs, (size_t)d, r, w, k, v, io->na, io->nb, io->S, y);
    for (int t = 0; t < n; t++) {
        const size_t to = (size_t)t * (size_t)d;
        for (int64_t h = h0; h < h1; h++) {
            const size_t c0 = (size_t)(h * hs), o = to + c0;
            /* group norm over the head (ggml_norm; sums in double as
             * slm_ops_layernorm), * lnx_w + lnx_b */
            __m512d s1 = _mm512_setzero_pd();
            for (int64_t q = 0; q < hs; q += 16) s1 = add_pd16(s1, _mm512_loadu_ps(y + o + q));
            const float mean = (float)(_mm512_reduce_add_pd(s1) / (double)hs);
            const __m512 vm = _mm512_set1_ps(mean);
            __m512d s2 = _mm512_setzero_pd();
            for (int64_t q = 0; q < hs; q += 16) {
                __m512 dv = _mm512_sub_ps(_mm512_loadu_ps(y + o + q), vm);
                __m512d lo = _mm512_cvtps_pd(_mm512_castps512_ps256(dv));
                __m512d hi = _mm512_cvtps_pd(_mm512_extractf32x8_ps(dv, 1));
                s2 = _mm512_add_pd(s2, _mm512_add_pd(_mm512_mul_pd(lo, lo), _mm512_mul_pd(hi, hi)));
            }
            const __m512 sc = _mm512_set1_ps(1.0f / sqrtf((float)(_mm512_reduce_add_pd(s2) / (double)hs) +
                                                          b->gn_eps));
            /* the bonus: + v * sum over the head of (k * r * r_k) */
            __m512 bs = _mm512_setzero_ps();
            for (int64_t q = 0; q < hs; q += 16)
                bs = _mm512_add_ps(bs, _mm512_mul_ps(_mm512_mul_ps(_mm512_loadu_ps(k + o + q),
                                                                   _mm512_loadu_ps(r + o + q)),
                                                     _mm512_loadu_ps(b->r_k + c0 + q)));
            const __m512 bonus = _mm512_set1_ps(hsum16(bs));
            for (int64_t q = 0; q < hs; q += 16) {
                const size_t i = o + (size_t)q, c = c0 + (size_t)q;
                __m512 yv = _mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(y + i), vm), sc);
                yv = _mm512_add_ps(_mm512_mul_ps(yv, _mm512_loadu_ps(b->lnx_w + c)), _mm512_loadu_ps(b->lnx_b + c));
                yv = _mm512_add_ps(yv, _mm512_mul_ps(_mm512_loadu_ps(v + i), bonus));
                _mm512_storeu_ps(y + i, _mm512_mul_ps(yv, _mm512_loadu_ps(g + i)));
            }
        }
    }
}

#endif
