/* Attention over an F32, Q8_0 or Q4_0 KV cache: the formula and the
 * reference path are in kvcache_q.h. The quantization rules are not
 * repeated here: rows are encoded by quant/quant.h (Q4_0) and the
 * activation encoder of kernels/vecdot.h (Q8_0, and q for the dots), and
 * the scores are the matmul kernels' dot products. */
#include "kvcache_q.h"

#include <math.h>
#include <string.h>

#include "../quant/quant.h"

/* the dtype whose vec_dot scores a K row of type t (kernels/vecdot.h) */
static slm_dtype k_dtype(slm_kv_type t)
{
    return t == SLM_KV_Q8_0 ? SLM_DTYPE_Q8_0 : t == SLM_KV_Q4_0 ? SLM_DTYPE_Q4_0 : SLM_DTYPE_F32;
}

int slm_kv_rot_k(slm_kv_type t, int head_dim)
{
    /* llama.cpp (llama-kv-cache.cpp): a quantized K type and a head size
     * that is a multiple of 64; chunks of its largest power-of-two divisor */
    if ((t != SLM_KV_Q8_0 && t != SLM_KV_Q4_0) || head_dim <= 0 || head_dim % 64) return 0;
    int n = 64;
    while (head_dim % (2 * n) == 0) n *= 2;
    return n;
}

int slm_kv_rot_v(slm_kv_type t, int head_dim)
{
    /* ... and for V always chunks of 64 (smaller rotations measured better) */
    return (t == SLM_KV_Q8_0 || t == SLM_KV_Q4_0) && head_dim > 0 && head_dim % 64 == 0 ? 64 : 0;
}

void slm_kv_fwht(float *x, int n)
{
    /* ggml-cpu ops.cpp ggml_compute_forward_fwht_f32: the scale first, then
     * the passes in order of length; each u + v, u - v rounds once however
     * it is vectorized, so this order gives the reference's bits */
    const float scale = 1.0f / sqrtf((float)n);
    for (int j = 0; j < n; j++) x[j] *= scale;
    for (int len = 1; len < n; len <<= 1)
        for (int i = 0; i < n; i += 2 * len)
            for (int j = i; j < i + len; j++) {
                const float u = x[j], v = x[j + len];
                x[j] = u + v;
                x[j + len] = u - v;
            }
}

/* n floats (no rotation) as rows of type t */
static void encode(slm_kv_type t, void *dst, const float *src, size_t n)
{
    switch (t) {
    case SLM_KV_Q8_0:
        /* ggml's set_rows encodes with the CPU type traits' from_float,
         * which for Q8_0 on x86 is the run-time activation encoder */
        slm_act_quant_fn(SLM_DTYPE_Q8_0)(src, dst, (int64_t)n);
        break;
    case SLM_KV_Q4_0:
        /* ... and for Q4_0 the reference quantizer */
        slm_quantize_q4_0(src, dst, (int64_t)n);
        break;
    default:
        memcpy(dst, src, n * sizeof(float));
        break;
    }
}

void slm_kvq_store(slm_kv_type t, void *dst, const float *src, size_t n, int rot)
{
    if (!rot) {
        encode(t, dst, src, n);
        return;
    }
    /* chunk by chunk: a chunk of rot floats is rot / 32 whole blocks */
    float tmp[SLM_KV_ROT_MAX];
    const size_t cb = slm_kv_row_bytes(t, rot);
    unsigned char *d = dst;
    for (size_t i = 0; i < n; i += (size_t)rot, d += cb) {
        memcpy(tmp, src + i, (size_t)rot * sizeof *tmp);
        slm_kv_fwht(tmp, rot);
        encode(t, d, tmp, (size_t)rot);
    }
}

void slm_kvq_scores(slm_vec_dot_fn dot, float *s, const void *qa, const unsigned char *k, size_t stride,
                    int n_pos, int hd, float scale, float cap)
{
    if (cap > 0) {
        /* the reference folds the cap into the scale: c tanh(dot * (scale / c)) */
        const float sc = scale / cap;
        for (int t = 0; t < n_pos; t++) {
            float d;
            dot(hd, &d, k + (size_t)t * stride, qa);
            s[t] = cap * tanhf(d * sc);
        }
    } else {
        for (int t = 0; t < n_pos; t++) {
            dot(hd, &s[t], k + (size_t)t * stride, qa);
            s[t] *= scale;
        }
    }
}

/* --- value mixes, generic ----------------------------------------------------- */

/* rows are read with memcpy: a row's start need not be 4-byte aligned (the
 * cache packs rows of any type at its own stride) */
static void mix_f32(float *acc, const float *p, const unsigned char *v, size_t stride, int n_pos, int hd)
{
    for (int t = 0; t < n_pos; t++) {
        const unsigned char *r = v + (size_t)t * stride;
        for (int j = 0; j < hd; j++) {
            float x;
            memcpy(&x, r + (size_t)j * sizeof x, sizeof x);
            acc[j] += p[t] * x;
        }
    }
}

/* element j of a block: d * q, exact in f32 (an f16 times an int of 8 bits) */
static void mix_q8_0(float *acc, const float *p, const unsigned char *v, size_t stride, int n_pos, int hd)
{
    for (int t = 0; t < n_pos; t++) {
        const slm_block_q8_0 *b = (const slm_block_q8_0 *)(v + (size_t)t * stride);
        for (int i = 0; i < hd / SLM_QK8_0; i++) {
            const float d = slm_f16_to_f32(b[i].d);
            float *a = acc + i * SLM_QK8_0;
            for (int j = 0; j < SLM_QK8_0; j++) a[j] += p[t] * (d * (float)b[i].qs[j]);
        }
    }
}

/* element j < 16 in the low nibble of qs[j], j + 16 in its high nibble */
static void mix_q4_0(float *acc, const float *p, const unsigned char *v, size_t stride, int n_pos, int hd)
{
    for (int t = 0; t < n_pos; t++) {
        const slm_block_q4_0 *b = (const slm_block_q4_0 *)(v + (size_t)t * stride);
        for (int i = 0; i < hd / SLM_QK4_0; i++) {
            const float d = slm_f16_to_f32(b[i].d);
            float *a = acc + i * SLM_QK4_0;
            for (int j = 0; j < SLM_QK4_0 / 2; j++) {
                a[j] += p[t] * (d * (float)((b[i].qs[j] & 15) - 8));
                a[j + 16] += p[t] * (d * (float)((b[i].qs[j] >> 4) - 8));
            }
        }
    }
}

slm_kvq_mix_fn slm_kvq_mix_generic(slm_kv_type t)
{
    return t == SLM_KV_Q8_0 ? mix_q8_0 : t == SLM_KV_Q4_0 ? mix_q4_0 : mix_f32;
}

/* --- the task -------------------------------------------------------------------- */

void slm_kvq_sdpa_task(void *arg, int ith, int nth)
{
    const slm_kv_sdpa_ctx *a = arg;
    const slm_kvcache *c = a->c;
    const slm_kv_layer *L = &c->layer[a->layer];
    const slm_kv_type type = c->type;
    const int hd = a->sh.head_dim, nh = a->sh.n_head, group = nh / a->sh.n_head_kv;
    float *s = a->scratch + (size_t)ith * a->scratch_stride;
    float *acc = s + c->n_ctx, *qf = acc + hd;
    /* q encoded for the dots: Q8_0 blocks (34 bytes per 32 floats) after
     * qf, or the floats themselves */
    void *qa = type == SLM_KV_F32 ? (void *)qf : (void *)(qf + hd);
    const float qscale = a->sh.prescale_q ? a->sh.scale : 1.0f;
    const float sscale = a->sh.prescale_q ? 1.0f : a->sh.scale;
    const slm_dtype kd = k_dtype(type);
    const slm_vec_dot_fn dot = slm_vecdot_fn(kd);
    const slm_act_from_f32_fn enc = type == SLM_KV_F32 ? NULL : slm_act_quant_fn(slm_vecdot_traits_get(kd)->act_type);
    slm_kvq_mix_fn mix = slm_kvq_mix_generic(type);
#if defined(__x86_64__)
    if (slm_kernels_use_avx2()) mix = slm_kvq_mix_avx2(type);
#endif
    const size_t rb = slm_kv_row_bytes(type, L->kv_dim), hb = slm_kv_row_bytes(type, hd);
    const int rot_k = slm_kv_rot_k(type, L->head_dim), rot_v = slm_kv_rot_v(type, L->head_dim);
    const unsigned char *K = L->k, *V = L->v;
    const int total = a->n * nh;
    for (int task = ith; task < total; task += nth) {
        int i, h, n_pos;
        const int lo = slm_kv_task_span(a, task, &i, &h, &n_pos), kvh = h / group;
        int len[2];
        const int nrun = slm_kv_runs(L, lo, n_pos, len);
        const float *q = a->q + (size_t)i * (size_t)(nh * hd) + (size_t)h * (size_t)hd;
        for (int j = 0; j < hd; j++) qf[j] = q[j] * qscale;
        for (int j = 0; rot_k && j < hd; j += rot_k) slm_kv_fwht(qf + j, rot_k);   /* as the stored keys */
        if (enc) enc(qf, qa, hd);
        const size_t head = (size_t)kvh * hb;
        slm_kvq_scores(dot, s, qa, K + slm_kv_row_at(L, rb, lo) + head, rb, len[0], hd, sscale, a->sh.softcap);
        if (nrun == 2) slm_kvq_scores(dot, s + len[0], qa, K + head, rb, len[1], hd, sscale, a->sh.softcap);
        float mx = -INFINITY;
        for (int t = 0; t < n_pos; t++)
            if (s[t] > mx) mx = s[t];
        float sum = 0;
        for (int t = 0; t < n_pos; t++) {
            s[t] = expf(s[t] - mx);
            sum += s[t];
        }
        memset(acc, 0, (size_t)hd * sizeof *acc);
        mix(acc, s, V + slm_kv_row_at(L, rb, lo) + head, rb, len[0], hd);
        if (nrun == 2) mix(acc, s + len[0], V + head, rb, len[1], hd);
        const float inv = 1.0f / sum;
        float *o = a->out + (size_t)i * (size_t)(nh * hd) + (size_t)h * (size_t)hd;
        for (int j = 0; j < hd; j++) o[j] = acc[j] * inv;
        for (int j = 0; rot_v && j < hd; j += rot_v) slm_kv_fwht(o + j, rot_v);   /* the values' rotation undone */
    }
}
