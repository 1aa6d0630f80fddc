/* Training of the Mamba-1 mixer (blocks/mamba.h) in sequence mode: a
 * forward over B sequences of T tokens, each from a zero state, that keeps
 * what the backward needs, and the backward through the gate, the selective
 * scan, softplus, the depthwise causal conv and the four projections.
 *
 * Forward (n = B T rows; row b T + t is token t of sequence b), all f32,
 * weights (out, in) as stored in GGUF:
 *   xz  = h W_inᵀ                 (n, 2 di): x = xz[:, :di], z = xz[:, di:]
 *   u   = conv_b + Σ_k conv_w[i][k] x[t - (d_conv-1) + k][i]   (0 before t = 0)
 *   xc  = silu(u)                 (n, di)
 *   xdb = xc W_xᵀ                 (n, R + 2 S): dt_r | B | C
 *   dt  = dt_r W_dtᵀ + dt_b       (n, di), δ = softplus(dt) (dt itself above 20)
 *   s_t[i][j] = s_{t-1}[i][j] exp(δ_t[i] A[i][j]) + B_t[j] xc_t[i] δ_t[i],  s_{-1} = 0
 *   y_t[i]    = Σ_j s_t[i][j] C_t[j] + xc_t[i] D[i]
 *   out = (y ⊙ silu(z)) W_outᵀ    (n, dim)
 * with di = d_inner, S = d_state, R = dt_rank. A is the stored ssm_a
 * (= -exp(A_log)); its gradient is with respect to that stored tensor.
 * The conv, the softplus and the scan compute what blocks/mamba.c computes
 * (the same float expressions, in the same order, the scan's exp included),
 * so the outputs are those of slm_mamba_forward run on each sequence from a
 * fresh state, up to the products' rounding.
 *
 * Backward, given dout (n, dim) (reverse of the steps above):
 *   dW_out += doutᵀ (y ⊙ silu(z)),  dg = dout W_out
 *   dy = dg silu(z),  dz = dg y silu'(z),  silu'(v) = σ(v) (1 + v (1 - σ(v)))
 *   scan, per channel i, backwards in time with the state gradient ds (S):
 *     ds += dy_t C_t;   dC_t += dy_t s_t;   dD += dy_t xc_t;  dxc_t = dy_t D + Σ_j ds B_t δ_t
 *     dB_t += ds xc_t δ_t;   dA += ds s_{t-1} e_t δ_t   (e_t = exp(δ_t A))
 *     dδ_t = Σ_j ds (s_{t-1} e_t A + B_t xc_t);   ds ← ds e_t
 *   ddt = dδ σ(dt) (1 above 20);  ddt_b += Σ_rows ddt
 *   dW_dt += ddtᵀ dt_r,  d dt_r = ddt W_dt;  dW_x += dxdbᵀ xc,  dxc += dxdb W_x
 *   du = dxc silu'(u);  dconv_b += Σ_t du;  dconv_w[i][k] += Σ_t du_t x_{t-(d_conv-1)+k}
 *   dx_t = Σ_k du_{t+(d_conv-1)-k} conv_w[i][k];   dW_in += dxzᵀ h,  dh (+)= dxz W_in
 *
 * What the forward keeps ("saved", slm_mamba_grad_saved_floats floats):
 *   xz (n, 2 di) | xc (n, di) | xdb (n, R + 2 S) | δ (n, di) | σ(dt) (n, di) |
 *   y (n, di) scan output with the D skip, before the gate |
 *   ckpt (B, ceil(T / K) - 1, di, S): the scan state after every K-th token
 * that is n (6 di + R + 2 S) + B (ceil(T / K) - 1) di S floats. Keeping every
 * state would cost n di S (4096 floats a token for di 256, S 16, against
 * 1576 for the rest). The backward recomputes, per channel, the states of
 * one chunk of K tokens from its checkpoint (and the exps exp(δ A)) into a
 * per-thread buffer of (2 K + 3) S floats, then walks the chunk
 * backwards: one extra scan in all, whatever K. K only trades the
 * checkpoints' memory against that buffer; the default K = 64 keeps it in
 * L1 for S = 16 and keeps no checkpoint at all for T <= 64. δ and σ(dt) are
 * kept because softplus costs a log1p and an exp per value (as much as the
 * rest of the scan's backward); u = conv(x) + conv_b is recomputed from x
 * (d_conv multiply-adds a value).
 *
 * Threads: the conv, the scan and their backwards split channels; the
 * backward's B and C gradients (sums over channels) go to one partial per
 * fixed block of channels (at most 16 blocks), added in block order, so
 * results do not depend on the number of threads. Products go to
 * slm_sgemm (kernels/sgemm.h, one thread per call) on fixed tiles of the
 * output that the pool's threads share (mamba_grad.c says why). */
#ifndef SLM_MAMBA_GRAD_H
#define SLM_MAMBA_GRAD_H

#include <stddef.h>
#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"

#define SLM_MAMBA_GRAD_CHUNK 64    /* default checkpoint stride K */

typedef struct slm_mamba_grad_shape {
    int64_t B, T;                  /* sequences, tokens per sequence */
    int64_t dim, d_inner, d_state, d_conv, dt_rank;
    int64_t chunk;                 /* checkpoint stride K; 0: SLM_MAMBA_GRAD_CHUNK */
} slm_mamba_grad_shape;

/* Weights, f32 and contiguous, named after their GGUF tensors. */
typedef struct slm_mamba_grad_params {
    const float *in;       /* ssm_in.weight      (2 di, dim) */
    const float *conv;     /* ssm_conv1d.weight  (di, d_conv), oldest tap first */
    const float *conv_b;   /* ssm_conv1d.bias    (di) */
    const float *x;        /* ssm_x.weight       (R + 2 S, di) */
    const float *dt;       /* ssm_dt.weight      (di, R) */
    const float *dt_b;     /* ssm_dt.bias        (di) */
    const float *A;        /* ssm_a              (di, S) */
    const float *D;        /* ssm_d              (di) */
    const float *out;      /* ssm_out.weight     (dim, di) */
} slm_mamba_grad_params;

/* Their gradients, same shapes; the backward adds into them. */
typedef struct slm_mamba_grad_grads {
    float *in, *conv, *conv_b, *x, *dt, *dt_b, *A, *D, *out;
} slm_mamba_grad_grads;

/* Checks the dims (as slm_mamba_shape_check for Mamba-1) and B, T, chunk
 * (B T <= 2^24 rows). */
slm_status slm_mamba_grad_shape_check(const slm_mamba_grad_shape *s, slm_error *err);
/* Floats of the saved buffer (layout above); 0 for a shape the check refuses. */
size_t slm_mamba_grad_saved_floats(const slm_mamba_grad_shape *s);

/* h (n, dim) -> out (n, dim), filling saved (neither may overlap h or each
 * other). Scratch (n di + di (d_conv + S) floats) is allocated per call;
 * SLM_ENOMEM when it cannot be. */
slm_status slm_mamba_grad_forward(slm_pool *pool, const slm_mamba_grad_shape *s,
                                  const slm_mamba_grad_params *p, const float *h, float *out,
                                  float *saved, slm_error *err);

/* dout (n, dim) -> dh (n, dim): overwritten when accumulate is 0, added to
 * when 1; every parameter gradient in g is added to. h, p and saved are the
 * forward's. dh must not overlap h, dout or saved. Scratch (n (5 di + R +
 * 2 S) + n_blocks n 2 S floats, n_blocks <= 16, and a few rows a thread) is
 * allocated per call; SLM_ENOMEM when it cannot be. */
slm_status slm_mamba_grad_backward(slm_pool *pool, const slm_mamba_grad_shape *s,
                                   const slm_mamba_grad_params *p, const slm_mamba_grad_grads *g,
                                   const float *h, const float *dout, float *dh, int accumulate,
                                   const float *saved, slm_error *err);

/* The kernels, exposed for tests (each AVX2 twin is checked against its
 * generic version). Channels c0..c1-1 only; rows step by their ld.
 *
 * scan: slm_mamba_scan with δ given instead of dt (the softplus done):
 * the same floats as slm_mamba_scan_generic / slm_mamba_scan_avx2 on
 * softplus(dt). The AVX2 twin needs d_state a multiple of 8.
 *
 * scan_back: one sequence of n tokens. x = xc, delta and sig (δ and σ(dt)),
 * bc = B then C rows of S, dy the gradient of the scan output (gate
 * applied), ckpt the states before each chunk of K tokens after the first
 * ((n - 1) / K of them, each (channels, S) at ckpt + c ld_ckpt). Writes dx
 * (dy D + the scan's part) and ddt (before softplus), adds into dA rows
 * (di, S), dD, and dbc (n rows of the B then C gradients, ld_dbc). buf
 * holds (2 K + 3) S floats.
 *
 * sigmoid: out[i] = 1 / (1 + exp(-x[i])) (the AVX2 twin with the scan's
 * exp, within a few ulp). */
void slm_mamba_grad_scan(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                         const float *delta, int64_t ld_d, const float *A, const float *bc, int64_t ld_bc,
                         const float *D, int n, int64_t d_state, int64_t c0, int64_t c1);
void slm_mamba_grad_scan_generic(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                                 const float *delta, int64_t ld_d, const float *A, const float *bc,
                                 int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0, int64_t c1);

typedef struct slm_mamba_grad_scan_args {
    const float *x, *delta, *sig, *bc, *dy, *A, *D, *ckpt;
    int64_t ld_x, ld_d, ld_bc, ld_dy, ld_ckpt;
    float *dx, *ddt, *dA, *dD, *dbc;
    int64_t ld_dx, ld_ddt, ld_dbc;
    int n;
    int64_t K, d_state;
    float *buf;
} slm_mamba_grad_scan_args;

void slm_mamba_grad_scan_back(const slm_mamba_grad_scan_args *a, int64_t c0, int64_t c1);
void slm_mamba_grad_scan_back_generic(const slm_mamba_grad_scan_args *a, int64_t c0, int64_t c1);

void slm_mamba_grad_sigmoid(float *out, const float *x, int64_t n);
void slm_mamba_grad_sigmoid_generic(float *out, const float *x, int64_t n);

#if defined(__x86_64__)
void slm_mamba_grad_scan_avx2(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                              const float *delta, int64_t ld_d, const float *A, const float *bc,
                              int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0, int64_t c1);
void slm_mamba_grad_scan_back_avx2(const slm_mamba_grad_scan_args *a, int64_t c0, int64_t c1);
void slm_mamba_grad_sigmoid_avx2(float *out, const float *x, int64_t n);
#endif

#endif
