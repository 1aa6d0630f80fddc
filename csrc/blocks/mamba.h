/* The mixer block of Mamba-1 (selective state space model), as the
 * reference implementation (llama.cpp's mamba graph with ggml's ssm_conv and
 * ssm_scan CPU ops) computes it for one layer:
 *
 *   xz = in_proj(h)                      (n, 2 d_inner): x = first half, z = second
 *   x  = silu(conv1d(x) + conv_b)        causal depthwise conv, d_conv taps per
 *                                        channel over the last d_conv inputs
 *   (dt_r, B, C) = x_proj(x)             (n, dt_rank + 2 d_state)
 *   dt = dt_proj(dt_r) + dt_b            (n, d_inner), softplus inside the scan
 *   per channel i, state j, token t:
 *     d      = softplus(dt[t][i])        log1p(exp(v)), v itself above 20
 *     s[i][j] = s[i][j] * exp(d A[i][j]) + B[t][j] * (x[t][i] d)
 *     y[t][i] = sum_j s[i][j] C[t][j] + x[t][i] D[i]
 *   out = out_proj(y * silu(z))          (n, dim)
 *
 * A is stored in the file already as -exp(A_log) and used as stored. Falcon-
 * Mamba variants (dt_b_c_rms) RMS-normalize dt_r, B and C (no weight) first.
 *
 * The recurrent state of a layer is the last d_conv - 1 inputs of the conv
 * per channel and the (d_inner, d_state) scan state: O(1) in the sequence
 * length. A forward over n tokens ("sequence mode", a prompt) runs each
 * projection as one matmul over all n rows and the conv and scan over time
 * inside one call; n = 1 is the single-step (decode) mode, the same code. */
#ifndef SLM_MAMBA_H
#define SLM_MAMBA_H

#include <stddef.h>
#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"
#include "../core/tensor.h"

typedef struct slm_mamba_shape {
    int64_t dim, d_inner, d_conv, d_state, dt_rank;
    int dt_b_c_rms;       /* RMS-normalize dt_r, B, C (Falcon-Mamba) */
    float eps;            /* of that normalization */
} slm_mamba_shape;

/* Weights as stored in GGUF, (out, in) with contiguous rows; the small
 * vectors are f32. */
typedef struct slm_mamba_block {
    const slm_tensor *w_in;   /* ssm_in  (2 d_inner, dim) */
    const slm_tensor *w_x;    /* ssm_x   (dt_rank + 2 d_state, d_inner) */
    const slm_tensor *w_dt;   /* ssm_dt  (d_inner, dt_rank) */
    const slm_tensor *w_out;  /* ssm_out (dim, d_inner) */
    const float *conv_w;      /* ssm_conv1d.weight (d_inner, d_conv), oldest tap first */
    const float *conv_b;      /* ssm_conv1d.bias (d_inner) */
    const float *dt_b;        /* ssm_dt.bias (d_inner) */
    const float *A;           /* ssm_a (d_inner, d_state) = -exp(A_log) */
    const float *D;           /* ssm_d (d_inner) */
    slm_mamba_shape shape;
} slm_mamba_block;

/* Checks the dims (positive, bounded so size products cannot overflow). */
slm_status slm_mamba_shape_check(const slm_mamba_shape *h, slm_error *err);
/* Checks the shape, that the vectors are set and the four matrices against the shape (dims, a matmul kernel for
 * their dtype); the message names the offending weight by its GGUF name. */
slm_status slm_mamba_block_check(const slm_mamba_block *b, slm_error *err);

/* The recurrent state of all layers of one sequence. */
typedef struct slm_mamba_state {
    int n_layer;
    int64_t d_inner, d_conv, d_state;
    float *conv;   /* (n_layer, d_inner, d_conv - 1): last inputs, oldest first */
    float *ssm;    /* (n_layer, d_inner, d_state) */
} slm_mamba_state;

slm_mamba_state *slm_mamba_state_new(int n_layer, int64_t d_inner, int64_t d_conv,
                                     int64_t d_state, slm_error *err);
void slm_mamba_state_free(slm_mamba_state *s);   /* NULL is fine */
void slm_mamba_state_clear(slm_mamba_state *s);  /* the state before any token */
/* Floats of the conv states, of the scan states (all layers). */
size_t slm_mamba_state_conv_len(const slm_mamba_state *s);
size_t slm_mamba_state_ssm_len(const slm_mamba_state *s);

/* Scratch rows for a batch of up to n_batch tokens. */
typedef struct slm_mamba_work {
    int n_batch;
    int64_t d_inner, n_xdb, dt_rank;
    float *xz;    /* (n, 2 d_inner) in_proj output; z is silu'ed in place */
    float *xc;    /* (n, d_inner) conv output (after bias and silu) */
    float *xdb;   /* (n, dt_rank + 2 d_state) x_proj output */
    float *dtr;   /* (n, dt_rank) dt_r rows made contiguous for the matmul */
    float *dt;    /* (n, d_inner) */
    float *y;     /* (n, d_inner) gated scan output */
} slm_mamba_work;

slm_mamba_work *slm_mamba_work_new(int n_batch, int64_t d_inner, int64_t d_state,
                                   int64_t dt_rank, slm_error *err);
void slm_mamba_work_free(slm_mamba_work *w);

/* The two recurrences, exposed for tests. Channels c0..c1-1 only (callers
 * split channels between threads); every row pointer steps by its ld.
 *
 * conv: out[t][i] = silu(conv_b[i] + sum_k w[i][k] win[t][k]) where win[t]
 * is the window (state[i][0..d_conv-2], x[0..t][i]) ending at token t; the
 * state is left holding the last d_conv - 1 inputs. The taps are summed in
 * float from the oldest, as the reference does.
 *
 * scan: as in the header comment, with dt before softplus, B and C rows of
 * d_state at bc + t * ld_bc (C at bc + d_state), y[t][i] including the D
 * skip but not the gate. */
void slm_mamba_conv(float *out, int64_t ld_out, const float *x, int64_t ld_x, int n,
                    float *state, const float *w, const float *bias, int64_t d_conv,
                    int64_t c0, int64_t c1);
void slm_mamba_scan(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                    const float *dt, int64_t ld_dt, const float *A, const float *bc,
                    int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                    int64_t c1);
/* slm_mamba_scan picks one of these at run time: the portable loop (libm
 * expf, float sums in the reference's order) or, on CPUs with AVX2 and FMA
 * and d_state a multiple of 8, the vectorized twin (mamba_avx2.c). */
void slm_mamba_scan_generic(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                            const float *dt, int64_t ld_dt, const float *A, const float *bc,
                            int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                            int64_t c1);
#if defined(__x86_64__)
void slm_mamba_scan_avx2(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                         const float *dt, int64_t ld_dt, const float *A, const float *bc,
                         int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                         int64_t c1);
#endif

/* One layer's mixer over n tokens (1 <= n <= w->n_batch): x (n, dim) ->
 * out (n, dim), advancing layer's state by n tokens. out must not alias x. */
slm_status slm_mamba_forward(slm_pool *pool, const slm_mamba_block *b, slm_mamba_state *s,
                             int layer, int n, const float *x, float *out,
                             slm_mamba_work *w, slm_error *err);

#endif
