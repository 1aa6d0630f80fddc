/* RWKV-7 time mix for training, the part that runs per head: everything
 * between the projections (r k v and the low-rank outputs) and the output
 * projection. Forward (slm_rwkv7_heads_forward): decay, learning rate,
 * value mix, kk, k', the WKV-7 recurrence (the inference kernel,
 * slm_rwkv_wkv7_heads, so that the states are those of the inference
 * block), group norm, bonus, gate. Backward (slm_rwkv7_heads_backward):
 * the same steps' adjoints, walking each sequence back in time one
 * checkpoint chunk at a time.
 *
 * The forward and the backward build the recurrence's inputs with the same
 * functions (prep, post) from the same saved values, so the states the
 * backward recomputes from a checkpoint are the forward's, bit for bit.
 * A thread takes whole heads: every per-channel parameter gradient is
 * written by one thread, summed over (sequence, token) in a fixed order. */
#include <math.h>
#include <string.h>

#include "../blocks/rwkv_internal.h"
#include "../kernels/vecdot.h"
#include "rwkv7_grad_internal.h"

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }

/* The recurrence's inputs of one token of one head (n = head_size), as
 * tmix_v7's v7_heads computes them:
 *   w  = exp(-c sw)                      sw = sigmoid(w0 + lora_w), saved
 *   vp = v + (vf - v) vmix               (v when vf is NULL: first layer)
 *   kk = k k_k / max(|k k_k|, 1e-12);  na = -kk;  nb = kk a
 *   kp = k + (a ka - ka),  ka = k k_a
 * Returns the norm's scale 1 / max(|k k_k|, 1e-12); *clamped is 1 when the
 * max took 1e-12 (then the scale is a constant for the backward). */
static float prep(int64_t n, const float *k, const float *a, const float *sw, const float *v,
                  const float *vf, const float *vmix, const float *k_k, const float *k_a,
                  float *w, float *kp, float *vp, float *na, float *nb, int *clamped)
{
    for (int64_t q = 0; q < n; q++) w[q] = expf(-SLM_RWKV7_DECAY_SCALE * sw[q]);
    for (int64_t q = 0; q < n; q++) vp[q] = vf ? v[q] + (vf[q] - v[q]) * vmix[q] : v[q];
    float sum = 0;
    for (int64_t q = 0; q < n; q++) {
        float kk = k[q] * k_k[q];
        nb[q] = kk;
        sum += kk * kk;
    }
    float norm = sqrtf(sum), scale = 1.0f / fmaxf(norm, 1e-12f);
    *clamped = !(norm > 1e-12f);
    for (int64_t q = 0; q < n; q++) {
        float kk = nb[q] * scale;
        na[q] = -kk;
        nb[q] = kk * a[q];
    }
    for (int64_t q = 0; q < n; q++) {
        float ka = k[q] * k_a[q];
        kp[q] = k[q] + (a[q] * ka - ka);
    }
    return scale;
}

/* After the recurrence, one token of one head: the group norm of y as
 * slm_ops_layernorm computes it (double sums), into yh; the bonus sum
 * ss = sum(kp r r_k); z = ((yh lnx_w + lnx_b) + vp ss) g. Returns the
 * norm's 1/sqrt(var + eps). */
static float post(int64_t n, const float *y, const float *r, const float *kp, const float *vp,
                  const float *g, const float *lnx_w, const float *lnx_b, const float *r_k,
                  float eps, float *yh, float *ss, float *z)
{
    double s = 0;
    for (int64_t q = 0; q < n; q++) s += y[q];
    const float mean = (float)(s / (double)n);
    double s2 = 0;
    for (int64_t q = 0; q < n; q++) s2 += (double)(y[q] - mean) * (y[q] - mean);
    const float rstd = 1.0f / sqrtf((float)(s2 / (double)n) + eps);
    for (int64_t q = 0; q < n; q++) yh[q] = (y[q] - mean) * rstd;
    float sum = 0;
    for (int64_t q = 0; q < n; q++) sum += kp[q] * r[q] * r_k[q];
    for (int64_t q = 0; q < n; q++) z[q] = (yh[q] * lnx_w[q] + lnx_b[q] + vp[q] * sum) * g[q];
    *ss = sum;
    return rstd;
}

/* the per-thread scratch of the backward (floats): per token of one
 * sequence and head w kp vp na nb yh (T*hs each) and rstd ss scale
 * clamped (T each); the states of one chunk (chunk + 1) and dS; per-token
 * vectors (hs each) */
enum { TOK_ARRAYS = 6, TOK_SCALARS = 4, VECS = 10 };

size_t slm_rwkv7_heads_scratch_floats(const slm_rwkv7_tmix_shape *s, int chunk)
{
    size_t T = (size_t)s->n_tok, N = (size_t)s->head_size;
    size_t bwd = TOK_ARRAYS * T * N + TOK_SCALARS * T + ((size_t)chunk + 2) * N * N + VECS * N;
    return (bwd + 15) / 16 * 16;   /* each thread's part 64-byte aligned */
}

static void head_range(const slm_rwkv7_heads_job *j, int ith, int nth, int64_t *h0, int64_t *h1)
{
    *h0 = j->n_head * ith / nth;
    *h1 = j->n_head * (ith + 1) / nth;
}

/* the checkpoint of (sequence b, head h, chunk c) */
static float *checkpoint(const slm_rwkv7_heads_job *j, int b, int64_t h, int c)
{
    size_t N = (size_t)j->s->head_size;
    return j->sv.states + (((size_t)b * (size_t)j->n_head + (size_t)h) * (size_t)j->sv.n_chunk +
                           (size_t)c) * N * N;
}

void slm_rwkv7_heads_forward(void *job, int ith, int nth)
{
    const slm_rwkv7_heads_job *j = job;
    const slm_rwkv7_tmix_shape *s = j->s;
    const slm_rwkv7_tmix_params *p = j->p;
    const slm_rwkv7_saved *sv = &j->sv;
    const int64_t D = s->dim, N = s->head_size;
    const int T = s->n_tok, K = j->chunk, first = s->first_layer;
    float *S = j->scratch + (size_t)ith * j->scratch_floats;
    float *yh = S + (size_t)(N * N), *dummy = yh + N;   /* post's yh, unused here */
    int64_t h0, h1;
    head_range(j, ith, nth, &h0, &h1);
    for (int64_t h = h0; h < h1; h++) {
        const size_t c0 = (size_t)(h * N);
        for (int b = 0; b < s->n_seq; b++) {
            const size_t base = (size_t)b * (size_t)T;
            for (int t = 0; t < T; t++) {
                const size_t o = (base + (size_t)t) * (size_t)D + c0;
                for (int64_t q = 0; q < N; q++) {
                    const size_t i = o + (size_t)q, c = c0 + (size_t)q;
                    sv->sw[i] = sigmoidf(j->wl[i] + p->w0[c]);
                    sv->a[i] = sigmoidf(j->al[i] + p->a0[c]);
                    if (first) {
                        if (j->v_first) j->v_first[i] = sv->v[i];
                    } else {
                        sv->vmix[i] = sigmoidf(j->nu[i] + p->v0[c]);
                        sv->vf[i] = j->v_first[i];
                    }
                }
                int clamped;
                prep(N, sv->k + o, sv->a + o, sv->sw + o, sv->v + o, first ? NULL : sv->vf + o,
                     first ? NULL : sv->vmix + o, p->k_k + c0, p->k_a + c0, j->W + o, j->KP + o,
                     j->VP + o, j->NA + o, j->NB + o, &clamped);
            }
            /* the recurrence in chunks, keeping the state entering each */
            memset(S, 0, (size_t)(N * N) * sizeof(float));
            for (int c = 0; c < sv->n_chunk; c++) {
                const int t0 = c * K, len = T - t0 < K ? T - t0 : K;
                const size_t o = (base + (size_t)t0) * (size_t)D + c0;
                memcpy(checkpoint(j, b, h, c), S, (size_t)(N * N) * sizeof(float));
                slm_rwkv_wkv7_heads(len, 0, 1, N, (size_t)D, sv->r + o, j->W + o, j->KP + o,
                                    j->VP + o, j->NA + o, j->NB + o, S, sv->y + o);
            }
            for (int t = 0; t < T; t++) {
                const size_t o = (base + (size_t)t) * (size_t)D + c0;
                post(N, sv->y + o, sv->r + o, j->KP + o, j->VP + o, sv->g + o, p->lnx_w + c0,
                     p->lnx_b + c0, p->r_k + c0, s->gn_eps, yh, dummy, j->z + o);
            }
        }
    }
}

/* --- the WKV-7 step backward -------------------------------------------- */

/* S'[i][j] = S[i][j] w[j] + v[i] k[j] + sa[i] nb[j],  sa[i] = sum_j na[j] S[i][j],
 * y[i] = sum_j S'[i][j] r[j]. With G = dS (the gradient of S'):
 *   G += dy r^T;  dr[j] += sum_i S'[i][j] dy[i]
 *   dw[j] += sum_i G[i][j] S[i][j];  dk[j] += sum_i G[i][j] v[i];  dv[i] += sum_j G[i][j] k[j]
 *   dsa[i] = sum_j G[i][j] nb[j];  dnb[j] += sum_i G[i][j] sa[i];  dna[j] += sum_i dsa[i] S[i][j]
 *   dS[i][j] = G[i][j] w[j] + dsa[i] na[j]   (the gradient of S) */
void slm_rwkv7_wkv_back_step_generic(int64_t n, const float *Sp, const float *Sn, float *dS,
                                     const float *r, const float *w, const float *k,
                                     const float *v, const float *na, const float *nb,
                                     const float *dy, float *dr, float *dw, float *dk, float *dv,
                                     float *dna, float *dnb)
{
    for (int64_t i = 0; i < n; i++) {
        const float *Spi = Sp + (size_t)(i * n), *Sni = Sn + (size_t)(i * n);
        float *G = dS + (size_t)(i * n);
        const float dyi = dy[i], vi = v[i];
        float sa = 0, dsa = 0, dvi = 0;
        for (int64_t j = 0; j < n; j++) sa += na[j] * Spi[j];
        for (int64_t j = 0; j < n; j++) {
            G[j] += dyi * r[j];
            dr[j] += Sni[j] * dyi;
            dsa += G[j] * nb[j];
            dvi += G[j] * k[j];
        }
        dv[i] += dvi;
        for (int64_t j = 0; j < n; j++) {
            dw[j] += G[j] * Spi[j];
            dk[j] += G[j] * vi;
            dnb[j] += G[j] * sa;
            dna[j] += dsa * Spi[j];
            G[j] = G[j] * w[j] + dsa * na[j];
        }
    }
}

void slm_rwkv7_wkv_back_step(int64_t n, const float *Sp, const float *Sn, float *dS, const float *r,
                             const float *w, const float *k, const float *v, const float *na,
                             const float *nb, const float *dy, float *dr, float *dw, float *dk,
                             float *dv, float *dna, float *dnb)
{
#if defined(__x86_64__)
    if (n % 8 == 0 && slm_kernels_use_avx2()) {
        slm_rwkv7_wkv_back_step_avx2(n, Sp, Sn, dS, r, w, k, v, na, nb, dy, dr, dw, dk, dv, dna,
                                     dnb);
        return;
    }
#endif
    slm_rwkv7_wkv_back_step_generic(n, Sp, Sn, dS, r, w, k, v, na, nb, dy, dr, dw, dk, dv, dna,
                                    dnb);
}

/* --- backward -------------------------------------------------------------- */

static void add_to(float *g, size_t c, float v)
{
    if (g) g[c] += v;
}

/* The per-thread arrays of the backward (see slm_rwkv7_heads_scratch_floats). */
typedef struct bwd_tmp {
    float *w, *kp, *vp, *na, *nb, *yh;   /* (T, hs) */
    float *rstd, *ss, *scale, *clamped;  /* (T) */
    float *states, *dS;                  /* (chunk + 1, hs, hs), (hs, hs) */
    float *dy, *dyh, *ytmp, *dr, *dw, *dkp, *dvp, *dna, *dnb, *dkk;   /* (hs) */
} bwd_tmp;

static bwd_tmp bwd_arrays(float *base, size_t T, size_t N, int K)
{
    bwd_tmp a;
    float **tok[TOK_ARRAYS] = {&a.w, &a.kp, &a.vp, &a.na, &a.nb, &a.yh};
    for (int i = 0; i < TOK_ARRAYS; i++, base += T * N) *tok[i] = base;
    float **sc[TOK_SCALARS] = {&a.rstd, &a.ss, &a.scale, &a.clamped};
    for (int i = 0; i < TOK_SCALARS; i++, base += T) *sc[i] = base;
    a.states = base;
    base += ((size_t)K + 1) * N * N;
    a.dS = base;
    base += N * N;
    float **v[VECS] = {&a.dy, &a.dyh, &a.ytmp, &a.dr, &a.dw, &a.dkp, &a.dvp, &a.dna, &a.dnb, &a.dkk};
    for (int i = 0; i < VECS; i++, base += N) *v[i] = base;
    return a;
}

/* One token t (row `row`) of head h backward; Sp, Sn the states before and
 * after it, A.dS the gradient of Sn (on return, of Sp). */
static void token_back(const slm_rwkv7_heads_job *j, const bwd_tmp *A, size_t t, size_t row,
                       size_t c0, const float *Sp, const float *Sn)
{
    const slm_rwkv7_tmix_shape *s = j->s;
    const slm_rwkv7_tmix_params *p = j->p;
    slm_rwkv7_tmix_params *gr = j->grad;
    const slm_rwkv7_saved *sv = &j->sv;
    const int64_t N = s->head_size;
    const size_t o = row * (size_t)s->dim + c0, to = t * (size_t)N;
    const float *dz = j->dz + o, *g = sv->g + o, *r = sv->r + o, *k = sv->k + o, *a = sv->a + o;
    const float *sw = sv->sw + o, *v = sv->v + o;
    const float *w = A->w + to, *kp = A->kp + to, *vp = A->vp + to, *na = A->na + to;
    const float *nb = A->nb + to, *yh = A->yh + to;
    const float ss = A->ss[t], rstd = A->rstd[t];
    const float *lw = p->lnx_w + c0, *lb = p->lnx_b + c0, *r_k = p->r_k + c0;
    /* gate z = yb g, bonus yb = yn + vp ss, group norm yn = yh lnx_w + lnx_b */
    float ds = 0, m1 = 0, m2 = 0;
    for (int64_t q = 0; q < N; q++) {
        const float yb = yh[q] * lw[q] + lb[q] + vp[q] * ss;
        const float dyb = dz[q] * g[q];
        j->dg[o + q] = dz[q] * yb;
        A->dvp[q] = dyb * ss;
        ds += dyb * vp[q];
        add_to(gr->lnx_w, c0 + q, dyb * yh[q]);
        add_to(gr->lnx_b, c0 + q, dyb);
        A->dyh[q] = dyb * lw[q];
        m1 += A->dyh[q];
        m2 += A->dyh[q] * yh[q];
    }
    m1 /= (float)N;
    m2 /= (float)N;
    for (int64_t q = 0; q < N; q++) {
        A->dkp[q] = ds * r[q] * r_k[q];
        A->dr[q] = ds * kp[q] * r_k[q];
        add_to(gr->r_k, c0 + q, ds * kp[q] * r[q]);
        /* layer norm: dy = rstd (dyh - mean(dyh) - yh mean(dyh yh)) */
        A->dy[q] = rstd * (A->dyh[q] - m1 - yh[q] * m2);
        A->dw[q] = A->dna[q] = A->dnb[q] = 0;
    }
    slm_rwkv7_wkv_back_step(N, Sp, Sn, A->dS, r, w, kp, vp, na, nb, A->dy, A->dr, A->dw, A->dkp,
                            A->dvp, A->dna, A->dnb);
    /* kk = -na (normalized k k_k): dkk = -dna + dnb a; through the norm
     * dkk_raw = scale (dkk - kk (kk . dkk)) (scale alone when clamped) */
    float dot = 0;
    for (int64_t q = 0; q < N; q++) {
        A->dkk[q] = -A->dna[q] + A->dnb[q] * a[q];
        dot += -na[q] * A->dkk[q];
    }
    const float scale = A->scale[t];
    const int clamped = A->clamped[t] != 0;
    const float *k_k = p->k_k + c0, *k_a = p->k_a + c0;
    for (int64_t q = 0; q < N; q++) {
        const size_t i = o + (size_t)q, c = c0 + (size_t)q;
        const float kk = -na[q];
        const float dkk = clamped ? A->dkk[q] * scale : scale * (A->dkk[q] - kk * dot);
        /* kp = k (1 + (a - 1) k_a), nb = kk a */
        const float da = A->dnb[q] * kk + A->dkp[q] * k[q] * k_a[q];
        add_to(gr->k_a, c, A->dkp[q] * k[q] * (a[q] - 1.0f));
        add_to(gr->k_k, c, dkk * k[q]);
        j->dk[i] = A->dkp[q] * (1.0f + (a[q] - 1.0f) * k_a[q]) + dkk * k_k[q];
        /* a = sigmoid(za);  w = exp(-c sw), sw = sigmoid(zw) */
        const float dza = da * a[q] * (1.0f - a[q]);
        const float dzw = A->dw[q] * w[q] * -SLM_RWKV7_DECAY_SCALE * sw[q] * (1.0f - sw[q]);
        j->dza[i] = dza;
        j->dzw[i] = dzw;
        add_to(gr->a0, c, dza);
        add_to(gr->w0, c, dzw);
        j->dr[i] = A->dr[q];
        /* vp = v + (vf - v) vmix, vmix = sigmoid(zv); first layer: vp = v = v_first */
        if (s->first_layer) {
            j->dv[i] = A->dvp[q] + (j->dv_first ? j->dv_first[i] : 0.0f);
        } else {
            const float vmix = sv->vmix[i];
            j->dv[i] = A->dvp[q] * (1.0f - vmix);
            if (j->dv_first) j->dv_first[i] += A->dvp[q] * vmix;
            const float dzv = A->dvp[q] * (sv->vf[i] - v[q]) * vmix * (1.0f - vmix);
            j->dzv[i] = dzv;
            add_to(gr->v0, c, dzv);
        }
    }
}

void slm_rwkv7_heads_backward(void *job, int ith, int nth)
{
    const slm_rwkv7_heads_job *j = job;
    const slm_rwkv7_tmix_shape *s = j->s;
    const slm_rwkv7_tmix_params *p = j->p;
    const slm_rwkv7_saved *sv = &j->sv;
    const int64_t D = s->dim, N = s->head_size;
    const size_t NN = (size_t)(N * N);
    const int T = s->n_tok, K = j->chunk, first = s->first_layer;
    bwd_tmp A = bwd_arrays(j->scratch + (size_t)ith * j->scratch_floats, (size_t)T, (size_t)N, K);
    int64_t h0, h1;
    head_range(j, ith, nth, &h0, &h1);
    for (int64_t h = h0; h < h1; h++) {
        const size_t c0 = (size_t)(h * N);
        for (int b = 0; b < s->n_seq; b++) {
            const size_t base = (size_t)b * (size_t)T;
            /* the forward's per-token values, from what it saved */
            for (int t = 0; t < T; t++) {
                const size_t o = (base + (size_t)t) * (size_t)D + c0, to = (size_t)t * (size_t)N;
                int clamped;
                A.scale[t] = prep(N, sv->k + o, sv->a + o, sv->sw + o, sv->v + o,
                                  first ? NULL : sv->vf + o, first ? NULL : sv->vmix + o,
                                  p->k_k + c0, p->k_a + c0, A.w + to, A.kp + to, A.vp + to,
                                  A.na + to, A.nb + to, &clamped);
                A.clamped[t] = (float)clamped;
                A.rstd[t] = post(N, sv->y + o, sv->r + o, A.kp + to, A.vp + to, sv->g + o,
                                 p->lnx_w + c0, p->lnx_b + c0, p->r_k + c0, s->gn_eps, A.yh + to,
                                 &A.ss[t], j->z + o);
            }
            /* back in time, one chunk at a time: its states recomputed
             * from the checkpoint, states[m] entering token t0 + m */
            memset(A.dS, 0, NN * sizeof(float));
            for (int c = sv->n_chunk - 1; c >= 0; c--) {
                const int t0 = c * K, len = T - t0 < K ? T - t0 : K;
                memcpy(A.states, checkpoint(j, b, h, c), NN * sizeof(float));
                for (int m = 0; m < len; m++) {
                    const size_t t = (size_t)(t0 + m), to = t * (size_t)N;
                    const size_t o = (base + t) * (size_t)D + c0;
                    float *Sn = A.states + (size_t)(m + 1) * NN;
                    memcpy(Sn, Sn - NN, NN * sizeof(float));
                    slm_rwkv_wkv7_heads(1, 0, 1, N, (size_t)N, sv->r + o, A.w + to, A.kp + to,
                                        A.vp + to, A.na + to, A.nb + to, Sn, A.ytmp);
                }
                for (int m = len - 1; m >= 0; m--) {
                    const size_t t = (size_t)(t0 + m);
                    token_back(j, &A, t, base + t, c0, A.states + (size_t)m * NN,
                               A.states + (size_t)(m + 1) * NN);
                }
            }
        }
    }
}
