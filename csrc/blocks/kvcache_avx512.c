/* AVX-512 attention over the F16 cache (the reference's default cache
 * type), for head sizes that are multiples of 16. It keeps the reference's
 * roundings (q and the probabilities converted to f16 before their
 * products with the f16 keys and values) and replaces kvcache.c's loop of
 * one query against one key, which spent most of its time in horizontal
 * sums, with tiles:
 *
 *   unit    = up to R rows (consecutive positions) x the H query heads of
 *             one KV head that they share;
 *   keys    in chunks of KC = 64 positions: the chunk's keys converted and
 *             transposed once per unit, KT[j][t] (hd x 64 floats), its
 *             values converted once, VF[t][j];
 *   scores  s[q][t] = (sum_j qh[q][j] k[t][j]) * scale, one FMA chain per
 *             (query, key) over j = 0, 1, ..., hd - 1 from 0: a query's
 *             row of H <= 6 queries x 4 zmm of keys per tile;
 *   softmax per query over its own positions lo..lo+n_pos-1: max, e^(s -
 *             max) by slm_exp16, the sum in 16 lanes (lane = (t - lo) mod
 *             16) then _mm512_reduce_add_ps, p = f16(e * (1 / sum));
 *   mix     out[q][j] = sum over t of p[q][t] v[t][j], one FMA chain per
 *             output in the order of t from 0 (the F16 path's mix order).
 *
 * Every number a query gets is computed from its own positions in an order
 * fixed by them alone, never by the unit's other rows: a row's output has
 * the same bits in any batch and at any split into units (decode is a unit
 * of one row). The products are the scalar definition's (one fmaf chain)
 * and the softmax differs from the generic tier's expf and double sum by a
 * few ulp (tests/test_attn.c bounds both against a double reference). */
#if defined(__x86_64__)

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "../kernels/ops.h"
#include "../kernels/simd_avx512.h"
#include "kvcache_q.h"

#define KC 64          /* keys per chunk */
#define MAXQ 6         /* queries per score or mix tile */

/* Unit plan: rows per unit and query heads per unit (see the header). */
void slm_kv_avx512_plan(const slm_kvcache *c, const slm_attn_shape *sh, int pos0, int n, int nth,
                        int *rows, int *heads, size_t *floats)
{
    const int group = sh->n_head / sh->n_head_kv, hd = sh->head_dim;
    /* the widest key span of a unit of R rows */
    int span_all = pos0 + n;
    int R = n < 8 ? n : 8;
    for (;;) {
        int span = span_all;
        if (sh->window > 0 && sh->window + R - 1 < span) span = sh->window + R - 1;
        /* a unit's scores start at a chunk boundary: up to KC - 1 more */
        const size_t spr = ((size_t)span + 2 * KC - 2) / KC * KC;
        /* S holds R * group rows of spr floats: keep it within 512 KB */
        if (R == 1 || (size_t)R * (size_t)group * spr <= 131072) {
            int H = group;
            const int blocks = (n + R - 1) / R;
            /* decode and short calls: split a group's heads only when some
             * thread would have no unit, since every part converts and
             * transposes the same keys (decode at 256 positions, 9 heads /
             * 3 KV heads, 2 threads: 8.9 us per layer unsplit, 12.7 split
             * across 6 units; the AVX2 path takes 11.0) */
            if (blocks * sh->n_head_kv < nth) {
                const int parts = (nth + blocks * sh->n_head_kv - 1) / (blocks * sh->n_head_kv);
                H = (group + parts - 1) / parts;
            }
            if (H > 64) H = 64;   /* the task's per-row arrays */
            *rows = R;
            *heads = H;
            *floats = (size_t)R * (size_t)H * (2 * (size_t)hd + spr) + 2 * (size_t)KC * (size_t)hd + 16;
            return;
        }
        R /= 2;
    }
}

/* the f16 row of position t, head kvh, in a K or V block of layer L */
static inline const slm_f16 *row16(const slm_kv_layer *L, const void *base, int t, int kvh, int hd)
{
    return (const slm_f16 *)base + (size_t)(t % L->cap) * (size_t)L->kv_dim + (size_t)kvh * (size_t)hd;
}

/* KT[j * KC + (t - c0)] = k[t][j] for t in [t0, t1) within the chunk at
 * c0, zeros for the chunk's other keys */
static void keys_t(float *KT, const slm_kv_layer *L, int kvh, int hd, int c0, int t0, int t1)
{
    for (int g = 0; g < KC; g += 16) {
        /* the group's 16 rows, found once (a ring's row is t % cap: one
         * division per key, not one per 16 dims) */
        const slm_f16 *row[16];
        int live = 0;
        for (int i = 0; i < 16; i++) {
            const int t = c0 + g + i;
            row[i] = t >= t0 && t < t1 ? row16(L, L->k, t, kvh, hd) : NULL;
            live |= row[i] != NULL;
        }
        if (!live) {
            for (int j = 0; j < hd; j++) _mm512_store_ps(KT + (size_t)j * KC + g, _mm512_setzero_ps());
            continue;
        }
        for (int jb = 0; jb < hd; jb += 16) {
            __m512 r[16];
            for (int i = 0; i < 16; i++)
                r[i] = row[i] ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(row[i] + jb)))
                              : _mm512_setzero_ps();
            slm_transpose16(r);
            for (int k = 0; k < 16; k++) _mm512_store_ps(KT + (size_t)(jb + k) * KC + g, r[k]);
        }
    }
}

/* VF[(t - c0) * hd + j] = v[t][j] for t in [t0, t1) */
static void values_f32(float *VF, const slm_kv_layer *L, int kvh, int hd, int c0, int t0, int t1)
{
    for (int t = t0; t < t1; t++) {
        const slm_f16 *v = row16(L, L->v, t, kvh, hd);
        float *d = VF + (size_t)(t - c0) * (size_t)hd;
        for (int j = 0; j < hd; j += 16)
            _mm512_store_ps(d + j, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)(v + j))));
    }
}

/* s[q][0..64) = (qh[q] . KT columns) * scale for NQ queries: per key one
 * FMA chain over j in order */
static inline __attribute__((always_inline)) void score_tile(const float *const *qh, float *const *s,
                                                           const float *KT, int hd, float scale,
                                                           const int NQ)
{
    __m512 acc[MAXQ][4];
    _Pragma("GCC unroll 6") for (int q = 0; q < NQ; q++)
        _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++) acc[q][v] = _mm512_setzero_ps();
    for (int j = 0; j < hd; j++) {
        const float *kt = KT + (size_t)j * KC;
        const __m512 k0 = _mm512_load_ps(kt), k1 = _mm512_load_ps(kt + 16), k2 = _mm512_load_ps(kt + 32),
                     k3 = _mm512_load_ps(kt + 48);
        _Pragma("GCC unroll 6") for (int q = 0; q < NQ; q++) {
            const __m512 b = _mm512_set1_ps(qh[q][j]);
            acc[q][0] = _mm512_fmadd_ps(b, k0, acc[q][0]);
            acc[q][1] = _mm512_fmadd_ps(b, k1, acc[q][1]);
            acc[q][2] = _mm512_fmadd_ps(b, k2, acc[q][2]);
            acc[q][3] = _mm512_fmadd_ps(b, k3, acc[q][3]);
        }
    }
    const __m512 sc = _mm512_set1_ps(scale);
    _Pragma("GCC unroll 6") for (int q = 0; q < NQ; q++)
        _Pragma("GCC unroll 4") for (int v = 0; v < 4; v++)
            _mm512_storeu_ps(s[q] + 16 * v, _mm512_mul_ps(acc[q][v], sc));
}

static void scores(const float *const *qh, float *const *s, int nq, const float *KT, int hd, float scale)
{
    for (int q0 = 0; q0 < nq; q0 += MAXQ) {
        const int m = nq - q0 < MAXQ ? nq - q0 : MAXQ;
        switch (m) {
        case 6: score_tile(qh + q0, s + q0, KT, hd, scale, 6); break;
        case 5: score_tile(qh + q0, s + q0, KT, hd, scale, 5); break;
        case 4: score_tile(qh + q0, s + q0, KT, hd, scale, 4); break;
        case 3: score_tile(qh + q0, s + q0, KT, hd, scale, 3); break;
        case 2: score_tile(qh + q0, s + q0, KT, hd, scale, 2); break;
        default: score_tile(qh + q0, s + q0, KT, hd, scale, 1); break;
        }
    }
}

/* acc[q][c .. c + 16 NC) += sum over t in [0, n) of p[q][t] VF[t][c ..],
 * t in order, for NQ queries */
static inline __attribute__((always_inline)) void mix_tile(float *const *acc, const float *const *p,
                                                         const float *VF, int hd, int n, int c,
                                                         const int NQ, const int NC)
{
    __m512 a[MAXQ][4];
    _Pragma("GCC unroll 6") for (int q = 0; q < NQ; q++)
        _Pragma("GCC unroll 4") for (int v = 0; v < NC; v++) a[q][v] = _mm512_loadu_ps(acc[q] + c + 16 * v);
    for (int t = 0; t < n; t++) {
        const float *vr = VF + (size_t)t * (size_t)hd + c;
        __m512 vv[4];
        _Pragma("GCC unroll 4") for (int v = 0; v < NC; v++) vv[v] = _mm512_load_ps(vr + 16 * v);
        _Pragma("GCC unroll 6") for (int q = 0; q < NQ; q++) {
            const __m512 b = _mm512_set1_ps(p[q][t]);
            _Pragma("GCC unroll 4") for (int v = 0; v < NC; v++) a[q][v] = _mm512_fmadd_ps(b, vv[v], a[q][v]);
        }
    }
    _Pragma("GCC unroll 6") for (int q = 0; q < NQ; q++)
        _Pragma("GCC unroll 4") for (int v = 0; v < NC; v++) _mm512_storeu_ps(acc[q] + c + 16 * v, a[q][v]);
}

#define MIX_NC(NQ)                                                          \
    switch (nc) {                                                           \
    case 4: mix_tile(acc + q0, p + q0, VF, hd, n, c, NQ, 4); break;         \
    case 3: mix_tile(acc + q0, p + q0, VF, hd, n, c, NQ, 3); break;         \
    case 2: mix_tile(acc + q0, p + q0, VF, hd, n, c, NQ, 2); break;         \
    default: mix_tile(acc + q0, p + q0, VF, hd, n, c, NQ, 1); break;        \
    }

static void mix(float *const *acc, const float *const *p, int nq, const float *VF, int hd, int n)
{
    for (int q0 = 0; q0 < nq; q0 += MAXQ) {
        const int m = nq - q0 < MAXQ ? nq - q0 : MAXQ;
        for (int c = 0; c < hd; c += 64) {
            const int nc = (hd - c) / 16 < 4 ? (hd - c) / 16 : 4;
            switch (m) {
            case 6: MIX_NC(6) break;
            case 5: MIX_NC(5) break;
            case 4: MIX_NC(4) break;
            case 3: MIX_NC(3) break;
            case 2: MIX_NC(2) break;
            default: MIX_NC(1) break;
            }
        }
    }
}

/* the keys [ta, tb) of the chunk at c0 (values in VF) mixed into nq
 * queries' accumulators, their probabilities S[q] from c_first on */
static void mix_range(float *const *acc, float *const *S, int nq, const float *VF, int c0, int c_first, int hd,
                      int ta, int tb)
{
    if (ta >= tb) return;
    const float *pp[8 * 64];
    for (int q = 0; q < nq; q++) pp[q] = S[q] + (ta - c_first);
    mix(acc, pp, nq, VF + (size_t)(ta - c0) * (size_t)hd, hd, tb - ta);
}

/* s[0..n) -> the f16-rounded probabilities, in place */
static void softmax16(float *s, int n)
{
    __m512 mx = _mm512_set1_ps(-INFINITY);
    for (int t = 0; t < n; t += 16)
        mx = _mm512_max_ps(mx, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), slm_tail16(t, n), s + t));
    const __m512 m = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 sum = _mm512_setzero_ps();
    for (int t = 0; t < n; t += 16) {
        const __mmask16 k = slm_tail16(t, n);
        const __m512 e = _mm512_maskz_mov_ps(k, slm_exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, s + t), m)));
        _mm512_mask_storeu_ps(s + t, k, e);
        sum = _mm512_add_ps(sum, e);
    }
    const __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
    for (int t = 0; t < n; t += 16) {
        const __mmask16 k = slm_tail16(t, n);
        const __m512 p = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, s + t), inv);
        _mm512_mask_storeu_ps(s + t, k, _mm512_cvtph_ps(_mm512_cvtps_ph(p, _MM_FROUND_TO_NEAREST_INT)));
    }
}

/* the positions row i attends to: [*lo, *end) */
static inline void row_span(const slm_kv_sdpa_ctx *a, int i, int *lo, int *end)
{
    int h, n_pos;
    *lo = slm_kv_task_span(a, i * a->sh.n_head, &i, &h, &n_pos);
    *end = *lo + n_pos;
}

void slm_kv_sdpa_task_avx512(void *arg, int ith, int nth)
{
    const slm_kv_sdpa_ctx *a = arg;
    const slm_kv_layer *L = &a->c->layer[a->layer];
    const int hd = a->sh.head_dim, nh = a->sh.n_head, nkv = a->sh.n_head_kv, group = nh / nkv;
    const int R = a->unit_rows, H = a->unit_heads, hsub = (group + H - 1) / H;
    const int blocks = (a->n + R - 1) / R, units = blocks * nkv * hsub;
    const float qscale = a->sh.prescale_q ? a->sh.scale : 1.0f;
    const float sscale = a->sh.prescale_q ? 1.0f : a->sh.scale;
    float *base = a->scratch + (size_t)ith * a->scratch_stride;
    /* 64-byte aligned pieces: KT, VF (KC x hd each), then per query qh and
     * acc (hd each), then S */
    float *KT = (float *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
    float *VF = KT + (size_t)KC * (size_t)hd;
    float *qbuf = VF + (size_t)KC * (size_t)hd;
    for (int u = ith; u < units; u += nth) {
        const int b = u / (nkv * hsub), kvh = (u / hsub) % nkv, hs = u % hsub;
        const int i0 = b * R, nr = a->n - i0 < R ? a->n - i0 : R;
        const int h0 = kvh * group + hs * H, nhq = group - hs * H < H ? group - hs * H : H;
        const int nq = nr * nhq;
        int lo[8], end[8];
        int lo_min = 1 << 30, hi_max = 0;
        for (int r = 0; r < nr; r++) {
            row_span(a, i0 + r, &lo[r], &end[r]);
            if (lo[r] < lo_min) lo_min = lo[r];
            if (end[r] > hi_max) hi_max = end[r];
        }
        const int c_first = lo_min / KC * KC;
        const size_t spr = (size_t)(hi_max - c_first + KC - 1) / KC * KC;
        float *qh[8 * 64], *S[8 * 64], *acc[8 * 64];
        for (int q = 0; q < nq; q++) {
            const int r = q / nhq, h = h0 + q % nhq;
            qh[q] = qbuf + (size_t)q * 2 * (size_t)hd;
            acc[q] = qh[q] + hd;
            S[q] = qbuf + (size_t)nq * 2 * (size_t)hd + (size_t)q * spr;
            /* the reference multiplies the F16 cache by q converted to F16 */
            const float *qs = a->q + (size_t)(i0 + r) * (size_t)(nh * hd) + (size_t)h * (size_t)hd;
            for (int j = 0; j < hd; j += 16)
                _mm512_storeu_ps(qh[q] + j, _mm512_cvtph_ps(_mm512_cvtps_ph(
                                                _mm512_mul_ps(_mm512_loadu_ps(qs + j), _mm512_set1_ps(qscale)),
                                                _MM_FROUND_TO_NEAREST_INT)));
            memset(acc[q], 0, (size_t)hd * sizeof(float));
        }
        /* scores, chunk by chunk; S[q][t - c_first] */
        for (int c0 = c_first; c0 < hi_max; c0 += KC) {
            keys_t(KT, L, kvh, hd, c0, c0 > lo_min ? c0 : lo_min, c0 + KC < hi_max ? c0 + KC : hi_max);
            /* every query whose row sees a key of the chunk, in tiles of
             * up to 6 across rows (a key outside a row's span gets a score
             * nobody reads) */
            const float *qs[8 * 64];
            float *sp[8 * 64];
            int m = 0;
            for (int r = 0; r < nr; r++) {
                if (c0 + KC <= lo[r] || c0 >= end[r]) continue;
                for (int g = 0; g < nhq; g++, m++) {
                    qs[m] = qh[r * nhq + g];
                    sp[m] = S[r * nhq + g] + (c0 - c_first);
                }
            }
            scores(qs, sp, m, KT, hd, sscale);
        }
        /* softmax per query over its own positions */
        for (int q = 0; q < nq; q++) {
            const int r = q / nhq;
            float *s = S[q] + (lo[r] - c_first);
            if (a->sh.softcap > 0) slm_ops_softcap(s, s, end[r] - lo[r], a->sh.softcap);
            softmax16(s, end[r] - lo[r]);
        }
        /* ... and the F16 values by the probabilities converted to F16 */
        for (int c0 = c_first; c0 < hi_max; c0 += KC) {
            const int t0 = c0 > lo_min ? c0 : lo_min, t1 = c0 + KC < hi_max ? c0 + KC : hi_max;
            values_f32(VF, L, kvh, hd, c0, t0, t1);
            /* rows in groups whose queries fill a tile (6): the keys all
             * of a group's rows see go through one tile; each row's keys
             * before and after those, through its own (in the order of
             * the keys, so every output's chain is the row-alone one) */
            const int grp = nhq < MAXQ ? MAXQ / nhq : 1;
            for (int r0 = 0; r0 < nr; r0 += grp) {
                const int r1 = r0 + grp < nr ? r0 + grp : nr;
                int ta[8], tb[8], ca = t0, cb = t1;
                for (int r = r0; r < r1; r++) {
                    ta[r] = t0 > lo[r] ? t0 : lo[r];
                    tb[r] = t1 < end[r] ? t1 : end[r];
                    if (ta[r] > ca) ca = ta[r];
                    if (tb[r] < cb) cb = tb[r];
                }
                if (ca >= cb) ca = cb = t1;   /* nothing in common: each row alone */
                for (int r = r0; r < r1; r++)   /* before the common keys */
                    mix_range(acc + r * nhq, S + r * nhq, nhq, VF, c0, c_first, hd, ta[r],
                              tb[r] < ca ? tb[r] : ca);
                if (ca < cb) mix_range(acc + r0 * nhq, S + r0 * nhq, (r1 - r0) * nhq, VF, c0, c_first, hd, ca, cb);
                for (int r = r0; r < r1; r++)   /* after them */
                    mix_range(acc + r * nhq, S + r * nhq, nhq, VF, c0, c_first, hd, ta[r] > cb ? ta[r] : cb, tb[r]);
            }
        }
        for (int q = 0; q < nq; q++) {
            const int r = q / nhq, h = h0 + q % nhq;
            memcpy(a->out + (size_t)(i0 + r) * (size_t)(nh * hd) + (size_t)h * (size_t)hd, acc[q],
                   (size_t)hd * sizeof(float));
        }
    }
}

#endif
