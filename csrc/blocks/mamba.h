/* The mixer blocks of Mamba-1 and Mamba-2 (selective state space models),
 * as the reference implementation (llama.cpp's mamba and mamba2 graphs with
 * ggml's ssm_conv and ssm_scan CPU ops) computes them for one layer.
 *
 * Mamba-1:
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
 * A is stored in the file already as -exp(A_log) and used as stored. Falcon-
 * Mamba variants (dt_b_c_rms) RMS-normalize dt_r, B and C (no weight) first.
 *
 * Mamba-2 (n_head = the file's time_step_rank heads of head_dim = d_inner /
 * n_head channels, n_group groups of B and C shared by n_head / n_group
 * consecutive heads):
 *   (z, xBC, dt) = in_proj(h)            (n, d_inner + conv_dim + n_head),
 *                                        conv_dim = d_inner + 2 n_group d_state
 *   (x, B, C) = silu(conv1d(xBC) + conv_b)   x (d_inner), B, C (n_group, d_state)
 *   per head h (group g), channel i of h, state j:
 *     d = softplus(dt[t][h] + dt_b[h]);  dA = exp(d A[h])   (one scalar per head)
 *     s[i][j] = s[i][j] dA + B[t][g][j] (x[t][i] d)
 *     y[t][i] = sum_j s[i][j] C[t][g][j] + x[t][i] D[h]
 *   y = y * silu(z), RMS-normalized per group of d_inner / n_group channels,
 *       times norm_w;  out = out_proj(y)
 *
 * The recurrent state of a layer is the last d_conv - 1 inputs of the conv
 * per conv channel and the (d_inner, d_state) scan state: O(1) in the
 * sequence length. A forward over n tokens ("sequence mode", a prompt) runs
 * each projection as one matmul over all n rows and the conv and scan over
 * time inside one call; n = 1 is the single-step (decode) mode, same code. */
#ifndef SLM_MAMBA_H
#define SLM_MAMBA_H

#include <stddef.h>
#include <stdint.h>

#include "../core/pool.h"
#include "../core/status.h"
#include "../core/tensor.h"

typedef struct slm_mamba_shape {
    int version;          /* 1 or 2 */
    int64_t dim, d_inner, d_conv, d_state;
    int64_t dt_rank;      /* Mamba-1: rank of dt_proj; Mamba-2: n_head */
    int64_t n_group;      /* Mamba-2: groups of B and C (1 for Mamba-1) */
    int dt_b_c_rms;       /* Mamba-1: RMS-normalize dt_r, B, C (Falcon-Mamba) */
    float eps;            /* of the RMS norms inside the block */
} slm_mamba_shape;

/* Channels of the conv: d_inner (Mamba-1), d_inner + 2 n_group d_state (2). */
int64_t slm_mamba_conv_channels(const slm_mamba_shape *h);
/* Rows of in_proj: 2 d_inner (Mamba-1), d_inner + conv channels + n_head (2). */
int64_t slm_mamba_in_rows(const slm_mamba_shape *h);

/* Weights as stored in GGUF, (out, in) with contiguous rows; the small
 * vectors are f32. Sizes for Mamba-1 / Mamba-2 (H = n_head = dt_rank). */
typedef struct slm_mamba_block {
    const slm_tensor *w_in;   /* ssm_in  (in_rows, dim) */
    const slm_tensor *w_x;    /* ssm_x   (dt_rank + 2 d_state, d_inner) / NULL */
    const slm_tensor *w_dt;   /* ssm_dt  (d_inner, dt_rank) / NULL */
    const slm_tensor *w_out;  /* ssm_out (dim, d_inner) */
    const float *conv_w;      /* ssm_conv1d.weight (conv channels, d_conv), oldest tap first */
    const float *conv_b;      /* ssm_conv1d.bias (conv channels) */
    const float *dt_b;        /* ssm_dt.bias (d_inner) / (H) */
    const float *A;           /* ssm_a (d_inner, d_state) / (H), = -exp(A_log) */
    const float *D;           /* ssm_d (d_inner) / (H) */
    const float *norm_w;      /* NULL / ssm_norm.weight (n_group, d_inner / n_group) */
    slm_mamba_shape shape;
} slm_mamba_block;

/* Checks the dims (positive, divisible as the version needs, bounded so
 * size products cannot overflow). */
slm_status slm_mamba_shape_check(const slm_mamba_shape *h, slm_error *err);
/* Checks the shape, that the vectors are set, and the matrices against the
 * shape (dims, a matmul kernel for their dtype); the message names the
 * offending weight by its GGUF name. */
slm_status slm_mamba_block_check(const slm_mamba_block *b, slm_error *err);

/* The recurrent state of all layers of one sequence. */
typedef struct slm_mamba_state {
    int n_layer;
    int64_t conv_ch, d_inner, d_conv, d_state;
    float *conv;   /* (n_layer, conv_ch, d_conv - 1): last inputs, oldest first */
    float *ssm;    /* (n_layer, d_inner, d_state) */
} slm_mamba_state;

slm_mamba_state *slm_mamba_state_new(int n_layer, const slm_mamba_shape *h, slm_error *err);
void slm_mamba_state_free(slm_mamba_state *s);   /* NULL is fine */
void slm_mamba_state_clear(slm_mamba_state *s);  /* the state before any token */
/* Floats of the conv states, of the scan states (all layers). */
size_t slm_mamba_state_conv_len(const slm_mamba_state *s);
size_t slm_mamba_state_ssm_len(const slm_mamba_state *s);

/* Snapshots: O(state) bytes whatever the number of tokens seen. The header
 * of core/snapshot.h, kind "MAMB", version 2, dims n_layer, conv channels,
 * d_inner, d_conv, d_state; then
 *   float32 conv[n_layer][conv_ch][d_conv - 1]   (the last inputs, oldest first)
 *   float32 ssm[n_layer][d_inner][d_state]
 * Restore checks the header, the dims against s and the length before it
 * writes anything, and gives the snapshot's n_past. It also reads the
 * layout of earlier slm versions (Snapshot:save files):
 *   "SLMMB1\0\0" | int32 n_layer, conv_ch, d_inner, d_conv, d_state, n_past |
 *   the same floats */
size_t slm_mamba_snapshot_size(const slm_mamba_state *s);
void slm_mamba_snapshot(const slm_mamba_state *s, int n_past, void *buf);
slm_status slm_mamba_restore(slm_mamba_state *s, const void *buf, size_t len, int *n_past, slm_error *err);

/* Scratch rows for a batch of up to n_batch tokens of one block shape. */
typedef struct slm_mamba_work {
    int n_batch;
    slm_mamba_shape shape;
    int64_t n_xdb;   /* Mamba-1: dt_rank + 2 d_state */
    float *xz;    /* (n, in_rows) in_proj output; z is silu'ed in place */
    float *xc;    /* (n, conv channels) conv output (after bias and silu) */
    float *xdb;   /* Mamba-1: (n, dt_rank + 2 d_state) x_proj output */
    float *dtr;   /* Mamba-1: (n, dt_rank) dt_r rows made contiguous for the matmul */
    float *dt;    /* (n, d_inner) / (n, n_head) */
    float *y;     /* (n, d_inner) gated scan output */
} slm_mamba_work;

slm_mamba_work *slm_mamba_work_new(int n_batch, const slm_mamba_shape *h, slm_error *err);
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
/* The same scans with the softplus left out when softplus is 0 (dt then
 * holds delta = softplus(dt + dt_b) already): training's forward and its
 * backward's recomputation (train/mamba_grad.h) run the inference loop
 * itself, so their states are the same floats. */
void slm_mamba_scan_generic_ex(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                               const float *dt, int64_t ld_dt, const float *A, const float *bc,
                               int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                               int64_t c1, int softplus);
#if defined(__x86_64__)
void slm_mamba_scan_avx2_ex(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                            const float *dt, int64_t ld_dt, const float *A, const float *bc,
                            int64_t ld_bc, const float *D, int n, int64_t d_state, int64_t c0,
                            int64_t c1, int softplus);
#endif
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

/* Mamba-2's scan for heads h0..h1-1: x (d_inner) and bc (B then C, each
 * n_group * d_state) rows, dt (n_head) rows before the bias and softplus,
 * A, D, dt_b (n_head); y including the D skip but not the gate. */
void slm_mamba2_scan(float *y, int64_t ld_y, float *state, const float *x, int64_t ld_x,
                     const float *dt, int64_t ld_dt, const float *dt_b, const float *A,
                     const float *bc, int64_t ld_bc, const float *D, int n, int64_t head_dim,
                     int64_t n_head, int64_t n_group, int64_t d_state, int64_t h0, int64_t h1);

/* One layer's mixer over n tokens (1 <= n <= w->n_batch): x (n, dim) ->
 * out (n, dim), advancing layer's state by n tokens. out must not alias x. */
slm_status slm_mamba_forward(slm_pool *pool, const slm_mamba_block *b, slm_mamba_state *s,
                             int layer, int n, const float *x, float *out,
                             slm_mamba_work *w, slm_error *err);

#endif
