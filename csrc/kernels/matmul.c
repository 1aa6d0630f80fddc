#include "matmul.h"

#include <cblas.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../core/fp16.h"
#include "../quant/blocks.h"
#include "gemm.h"
#include "lora.h"
#include "vecdot.h"

/* Activation rows per tile: 16 q8_0 rows of K = 4096 take 70 KB, which
 * stays in L2 while a thread walks its weight rows over them. */
#define TILE_M 16
/* Below this many multiply-adds the wake-up of the workers costs more than
 * it saves. */
#define MIN_PARALLEL_WORK (64 * 1024)
/* Weight rows per panel of the tile path: 16 f16 rows of K = 576 take
 * 18 KB, which stay in L1 while every activation row passes over them. */
#define PANEL_ROWS 16
/* Units of SLM_GEMM_MAX_R rows per chunk a batch thread takes at a time:
 * 64 rows of K = 576 by 128 activation rows are ~10 MFLOP */
#define CHUNK_UNITS 8
/* Activation rows per block of the tile path: at most 128 KB of them, so
 * that a block stays in L2 (512 KB per core on Zen 3) beside the weight
 * panels: 128 f32 rows of K = 1536 (768 KB) would stream from L3 once per
 * panel. */
#define ACT_BLOCK_BYTES (128 * 1024)
/* Activation rows up to which the tile path streams weight segments as
 * decode does (decode_part), each thread its own share of the rows */
#ifndef SMALL_M
#define SMALL_M 16
#endif

/* One weight matrix of a (possibly fused) product: rows [row0, row0 + N)
 * of the concatenated output rows. */
typedef struct mm_part {
    float *out;              /* (M, N) */
    const unsigned char *W;  /* N rows, w_row_bytes apart */
    size_t w_row_bytes;
    int64_t N, row0;
    slm_vec_dot_fn dot;
    slm_vec_dot4_fn dot4;    /* NULL: one row at a time */
    const slm_gemm_kernel *gk;   /* non-NULL: the tile path (gemm.h) */
} mm_part;

typedef struct mm_ctx {
    mm_part part[SLM_MATMUL_MAX_PARTS];
    int n_parts;
    int64_t rows;            /* sum of the parts' N */
    const float *X;          /* (M, K) */
    const unsigned char *A;  /* (M, a_row_bytes): X encoded as act_type */
    unsigned char *abuf;     /* the same buffer while it is being encoded */
    size_t a_row_bytes;
    int64_t M, K;
    atomic_int_fast64_t next_chunk;   /* batches: the next chunk of rows */
    unsigned char *panels;   /* per thread panel_bytes: packed weight rows */
    size_t panel_bytes;      /* 0: no packed path in this product */
    slm_q8_0_side *side;     /* non-NULL: (M, K / 32) side values of the
                                q8_0 rows, for packed kernels with q8_side */
    slm_act_from_f32_fn encode;
    slm_gemm_act_fn tile_act;    /* non-NULL: A holds the f32 rows of a
                                    float tile kernel instead */
    int small;               /* 1: M == 1, or M <= SMALL_M rows and every
                                part a tile kernel without packing: weight
                                segments per thread (decode_part) */
} mm_ctx;

static void split(int64_t n, int ith, int nth, int64_t *lo, int64_t *hi)
{
    *lo = n * ith / nth;
    *hi = n * (ith + 1) / nth;
}

static void encode_rows(void *vctx, int ith, int nth)
{
    const mm_ctx *c = vctx;
    int64_t m0, m1;
    split(c->M, ith, nth, &m0, &m1);
    for (int64_t m = m0; m < m1; m++) {
        unsigned char *y = c->abuf + m * c->a_row_bytes;
        if (c->tile_act) c->tile_act(c->X + m * c->K, (float *)(void *)y, c->K);
        else c->encode(c->X + m * c->K, y, c->K);
        /* the blocks' float scales and code sums, once per product
         * instead of once per tile */
        if (c->side) {
            const int64_t nb = c->K / SLM_QK8_0;
            const slm_block_q8_0 *a = (const slm_block_q8_0 *)(const void *)y;
            for (int64_t b = 0; b < nb; b++) {
                int32_t sum = 0;
                for (int i = 0; i < SLM_QK8_0; i++) sum += a[b].qs[i];
                c->side[m * nb + b] = (slm_q8_0_side){slm_f16_to_f32(a[b].d), sum};
            }
        }
    }
}

/* weight rows [n0, n1) of one part against activation rows [m0, m1) */
static void dot_tile(const mm_ctx *c, const mm_part *p, int64_t n0, int64_t n1, int64_t m0, int64_t m1)
{
    for (int64_t n = n0; n < n1; n++) {
        const unsigned char *w = p->W + n * p->w_row_bytes;
        int64_t m = m0;
        if (p->dot4)
            for (; m + 4 <= m1; m += 4) {
                float s[4];
                p->dot4(c->K, s, w, c->A + m * c->a_row_bytes, c->a_row_bytes);
                for (int r = 0; r < 4; r++) p->out[(m + r) * p->N + n] = s[r];
            }
        for (; m < m1; m++) p->dot(c->K, p->out + m * p->N + n, w, c->A + m * c->a_row_bytes);
    }
}

/* weight rows [n0, n1) (one panel) against activation rows [m0, m1) */
static void panel_tiles(const mm_ctx *c, const mm_part *p, int64_t n0, int64_t n1, int64_t m0, int64_t m1)
{
    const slm_gemm_kernel *g = p->gk;
    for (int64_t m = m0; m < m1; m += g->tile_c) {
        const int nc = m1 - m < g->tile_c ? (int)(m1 - m) : g->tile_c;
        for (int64_t n = n0; n < n1; n += g->tile_r) {
            const int nr = n1 - n < g->tile_r ? (int)(n1 - n) : g->tile_r;
            g->tile(c->K, p->W + n * p->w_row_bytes, p->w_row_bytes, nr, c->A + m * c->a_row_bytes,
                    c->a_row_bytes, nc, p->out + m * p->N + n, (size_t)p->N);
        }
    }
}

/* Tile path for a few activation rows (decode, batched decode: c->small)
 * over weight rows [n0, n1): the range is cut into tile_r equal segments and each tile takes one row from every segment (ldw = the
 * segment's size), so a thread reads tile_r sequential streams in separate
 * pages; every group of tile_c activation rows passes over a tile's rows
 * while they are in L1. Tiles of adjacent rows read the same bytes as
 * tile_r streams interleaved 1 row apart, which the hardware prefetchers
 * follow badly: f16 rows of K = 576 stream at 8-10 GB/s per core that way
 * against 15-18 GB/s from 4 separate segments (bench/kernels.c), and 2..8
 * activation rows over panels of adjacent rows cost more per weight byte
 * than one row does (bench/gemm_rows.c). */
static void decode_part(const mm_ctx *c, const mm_part *p, int64_t n0, int64_t n1)
{
    const slm_gemm_kernel *g = p->gk;
    const int64_t seg = (n1 - n0) / g->tile_r;
    const size_t rb = p->w_row_bytes;
    float t[SLM_GEMM_MAX_C][SLM_GEMM_MAX_R];
    for (int64_t i = 0; i < seg; i++)
        for (int64_t m = 0; m < c->M; m += g->tile_c) {
            const int nc = c->M - m < g->tile_c ? (int)(c->M - m) : g->tile_c;
            g->tile(c->K, p->W + (size_t)(n0 + i) * rb, (size_t)seg * rb, g->tile_r, c->A + m * c->a_row_bytes,
                    c->a_row_bytes, nc, t[0], SLM_GEMM_MAX_R);
            for (int j = 0; j < nc; j++)
                for (int r = 0; r < g->tile_r; r++) p->out[(m + j) * p->N + n0 + i + r * seg] = t[j][r];
        }
    for (int64_t n = n0 + seg * g->tile_r; n < n1; n++)
        for (int64_t m = 0; m < c->M; m += g->tile_c) {
            const int nc = c->M - m < g->tile_c ? (int)(c->M - m) : g->tile_c;
            g->tile(c->K, p->W + (size_t)n * rb, rb, 1, c->A + m * c->a_row_bytes, c->a_row_bytes, nc,
                    p->out + m * p->N + n, (size_t)p->N);
        }
}

/* Tile path for weight rows [n0, n1) of one part. Batches: with a pack
 * function (and a panel buffer), whole tiles of rows are packed once and
 * every activation row passes over them; the other rows go per panel of
 * PANEL_ROWS rows (held in L1), every activation row of a block (held in
 * L2) passing in groups of tile_c. */
static void tile_part(const mm_ctx *c, const mm_part *p, int64_t n0, int64_t n1, unsigned char *panel,
                      const slm_q8_0_side *side)
{
    const slm_gemm_kernel *g = p->gk;
    if (c->small) {
        decode_part(c, p, n0, n1);
        return;
    }
    /* packed path: tile_r rows packed once, then every activation row */
    if (g->pack && panel)
        for (; n0 + g->tile_r <= n1; n0 += g->tile_r) {
            g->pack(c->K, p->W + (size_t)n0 * p->w_row_bytes, p->w_row_bytes, panel);
            for (int64_t m = 0; m < c->M; m += g->tile_c) {
                const int nc = c->M - m < g->tile_c ? (int)(c->M - m) : g->tile_c;
                g->ptile(c->K, panel, g->tile_r, c->A + m * c->a_row_bytes, c->a_row_bytes,
                         g->q8_side ? side + m * (c->K / SLM_QK8_0) : NULL, nc, p->out + m * p->N + n0,
                         (size_t)p->N);
            }
        }
    /* activation rows in blocks of at most ACT_BLOCK_BYTES, so that a
     * block stays in L2 while the weight panels pass over it */
    int64_t mb = (int64_t)(ACT_BLOCK_BYTES / c->a_row_bytes) / g->tile_c * g->tile_c;
    if (mb < g->tile_c) mb = g->tile_c;
    for (int64_t m0 = 0; m0 < c->M; m0 += mb)
        for (int64_t p0 = n0; p0 < n1; p0 += PANEL_ROWS)
            panel_tiles(c, p, p0, p0 + PANEL_ROWS < n1 ? p0 + PANEL_ROWS : n1, m0,
                        m0 + mb < c->M ? m0 + mb : c->M);
}

/* Rows [r0, r1) of the concatenated weight rows (so a fused q|k|v or
 * gate|up product is one dispatch), cut at whole units of SLM_GEMM_MAX_R
 * rows so that tiles are not cut between threads. Dot parts walk their
 * range once per tile of TILE_M activation rows. */
static void rows_range(const mm_ctx *c, int64_t r0, int64_t r1, unsigned char *panel,
                       const slm_q8_0_side *side)
{
    for (int i = 0; i < c->n_parts; i++) {
        const mm_part *p = &c->part[i];
        const int64_t lo = (r0 > p->row0 ? r0 : p->row0) - p->row0;
        const int64_t hi = (r1 < p->row0 + p->N ? r1 : p->row0 + p->N) - p->row0;
        if (lo >= hi) continue;
        if (p->gk) {
            tile_part(c, p, lo, hi, panel, side);
            continue;
        }
        for (int64_t m0 = 0; m0 < c->M; m0 += TILE_M)
            dot_tile(c, p, lo, hi, m0, m0 + TILE_M < c->M ? m0 + TILE_M : c->M);
    }
}

static void dot_rows(void *vctx, int ith, int nth)
{
    mm_ctx *c = vctx;
    unsigned char *panel = c->panel_bytes ? c->panels + (size_t)ith * c->panel_bytes : NULL;
    const int64_t units = (c->rows + SLM_GEMM_MAX_R - 1) / SLM_GEMM_MAX_R;
    if (c->small) {
        int64_t u0, u1;
        split(units, ith, nth, &u0, &u1);
        rows_range(c, u0 * SLM_GEMM_MAX_R, u1 * SLM_GEMM_MAX_R < c->rows ? u1 * SLM_GEMM_MAX_R : c->rows, panel,
                   NULL);
        return;
    }
    /* batches: chunks of up to CHUNK_UNITS units (fewer for small
     * products, so that every thread gets work) from a shared counter
     * (thread ith starts with chunk ith): a thread slowed down by the
     * machine leaves the rest of its share to the others */
    int64_t cu = units / (4 * (int64_t)nth);   /* at least ~4 chunks per thread */
    cu = cu < 1 ? 1 : cu > CHUNK_UNITS ? CHUNK_UNITS : cu;
    const int64_t chunks = (units + cu - 1) / cu;
    for (int64_t k = ith; k < chunks; k = atomic_fetch_add_explicit(&c->next_chunk, 1, memory_order_relaxed)) {
        const int64_t r0 = k * cu * SLM_GEMM_MAX_R, r1 = r0 + cu * SLM_GEMM_MAX_R;
        rows_range(c, r0, r1 < c->rows ? r1 : c->rows, panel, c->side);
    }
}

static void blas_rows(void *vctx, int ith, int nth)
{
    const mm_ctx *c = vctx;
    const mm_part *p = &c->part[0];
    int64_t n0, n1;
    split(p->N, ith, nth, &n0, &n1);
    if (n1 <= n0) return;
    /* out[:, n0:n1] = X . W[n0:n1, :]^T */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->M, (int)(n1 - n0), (int)c->K,
                1.0f, c->X, (int)c->K, (const float *)(p->W + n0 * p->w_row_bytes),
                (int)(p->w_row_bytes / sizeof(float)), 0.0f, p->out + n0, (int)p->N);
}

const char *slm_matmul_blas_core(void)
{
    const char *name = openblas_get_corename();
    return name ? name : "unknown";
}

static void blas_single_thread(void)
{
    openblas_set_num_threads(1);
}

/* once per process, whichever thread (Lua state) gets here first */
static void blas_single_thread_once(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_single_thread);
}

static int threads_for(const slm_pool *pool, int64_t M, int64_t N, int64_t K)
{
    int nth = slm_pool_size(pool);
    if ((double)M * (double)N * (double)K < MIN_PARALLEL_WORK) return 1;
    return N < nth ? (int)N : nth;
}

static slm_status check_part(const slm_matmul_part *p, int64_t M, int64_t K, slm_error *err)
{
    const slm_vecdot_traits *t = slm_vecdot_traits_get(p->wtype);
    const slm_dtype_traits *wt = slm_dtype_get((int)p->wtype);
    if (!t || !wt)
        return slm_error_set(err, SLM_EUNSUPPORTED, "matmul: no kernel for %s weights",
                             wt ? wt->name : "unknown");
    if (M < 1 || p->N < 1 || K < 1)
        return slm_error_set(err, SLM_EINVAL, "matmul: empty operand (M=%lld N=%lld K=%lld)",
                             (long long)M, (long long)p->N, (long long)K);
    int ok;
    size_t w_row = slm_dtype_row_size(p->wtype, K, &ok);
    if (!ok)
        return slm_error_set(err, SLM_EINVAL, "matmul: K=%lld is not a multiple of the %s block size %lld",
                             (long long)K, wt->name, (long long)wt->block_size);
    if (p->w_row_bytes < w_row)
        return slm_error_set(err, SLM_EINVAL, "matmul: weight rows %zu bytes apart, need %zu",
                             p->w_row_bytes, w_row);
    if (M > INT32_MAX || p->N > INT32_MAX || K > INT32_MAX)
        return slm_error_set(err, SLM_ERANGE, "matmul: dimension too large");
    return SLM_OK;
}

/* The tile kernel of a part, NULL for the vec_dot path. */
static const slm_gemm_kernel *tile_kernel(const slm_matmul_part *p, int64_t M, int64_t K)
{
    if (p->order == SLM_MATMUL_ORDER_VECDOT) return NULL;
    /* f32 takes its tiles only when asked (else OpenBLAS / vec_dot) */
    if (p->wtype == SLM_DTYPE_F32 && p->order != SLM_MATMUL_ORDER_TILES) return NULL;
    const slm_gemm_kernel *g = slm_gemm_get_rows(p->wtype, M);
    return g && K % g->k_multiple == 0 && !(g->batch_only && M < SLM_GEMM_PACK_MIN_M) ? g : NULL;
}

size_t slm_matmul_act_row_bytes(const slm_matmul_part *p, int64_t K)
{
    const slm_vecdot_traits *t = slm_vecdot_traits_get(p->wtype);
    if (!t) return SIZE_MAX;
    if (t->act_type == SLM_DTYPE_F32) return 0;
    /* (no kernel limited to batches reads rounded f32 rows) */
    const slm_gemm_kernel *g = tile_kernel(p, 1, K);
    if (g && g->act) return (size_t)K * sizeof(float);
    int ok;
    const size_t n = slm_dtype_row_size(t->act_type, K, &ok);
    return ok ? n : SIZE_MAX;
}

/* 1 if the parts can share one encoding of X: the same vec_dot activation
 * type, and f32 rows for both or neither (float tile kernels) */
static int same_encoding(const slm_matmul_part *a, const slm_matmul_part *b, int64_t M, int64_t K)
{
    const slm_gemm_kernel *ga = tile_kernel(a, M, K), *gb = tile_kernel(b, M, K);
    return slm_vecdot_traits_get(a->wtype)->act_type == slm_vecdot_traits_get(b->wtype)->act_type &&
           (ga ? ga->act : NULL) == (gb ? gb->act : NULL);
}

/* f32 batches go to OpenBLAS, unless the part asks for another order */
static int uses_blas(const slm_matmul_part *p, int64_t M)
{
    return p->wtype == SLM_DTYPE_F32 && M >= SLM_MATMUL_BLAS_MIN_M && p->order == SLM_MATMUL_ORDER_DEFAULT;
}

/* All parts already checked and sharing one activation encoding. */
/* Weight bytes the products have read since the last reset: each call
 * reads its parts' rows once (a batch passes its activation rows over each
 * panel of weights). One relaxed add per call, not per row. */
static _Atomic unsigned long long weight_bytes;

unsigned long long slm_matmul_weight_bytes(int reset)
{
    return reset ? atomic_exchange_explicit(&weight_bytes, 0, memory_order_relaxed)
                 : atomic_load_explicit(&weight_bytes, memory_order_relaxed);
}

static slm_status run_parts(slm_pool *pool, const slm_matmul_part *parts, int n_parts,
                            const float *X, int64_t M, int64_t K, slm_error *err)
{
    {
        int ok;
        unsigned long long bytes = 0;
        for (int i = 0; i < n_parts; i++)
            bytes += (unsigned long long)parts[i].N * slm_dtype_row_size(parts[i].wtype, K, &ok);
        atomic_fetch_add_explicit(&weight_bytes, bytes, memory_order_relaxed);
    }
    /* called from inside a pool job: run serially with a private buffer */
    if (slm_pool_busy(pool)) pool = NULL;
    const slm_vecdot_traits *t = slm_vecdot_traits_get(parts[0].wtype);
    mm_ctx c;
    memset(&c, 0, sizeof c);
    c.X = X;
    c.M = M;
    c.K = K;
    c.n_parts = n_parts;
    for (int i = 0; i < n_parts; i++) {
        c.part[i] = (mm_part){parts[i].out, parts[i].W, parts[i].w_row_bytes, parts[i].N, c.rows,
                              slm_vecdot_fn(parts[i].wtype), M >= 4 ? slm_vecdot4_fn(parts[i].wtype) : NULL,
                              tile_kernel(&parts[i], M, K)};
        c.rows += parts[i].N;
    }
    c.tile_act = c.part[0].gk ? c.part[0].gk->act : NULL;
    /* segmented weight streams (decode_part) for one row, for batches too
     * small to pack (below SLM_GEMM_PACK_MIN_M: packed kernels' panels of
     * adjacent rows cost more per row there), and up to SMALL_M rows when
     * no part packs */
    c.small = M < SLM_GEMM_PACK_MIN_M;
    if (!c.small && M <= SMALL_M) {
        c.small = 1;
        for (int i = 0; i < n_parts; i++) c.small &= c.part[i].gk && !c.part[i].gk->pack;
    }
    const int nth = threads_for(pool, M, c.rows, K);

    if (n_parts == 1 && uses_blas(&parts[0], M) &&
        parts[0].w_row_bytes % sizeof(float) == 0) {
        blas_single_thread_once();
        slm_pool_run(pool, nth, blas_rows, &c);
        return SLM_OK;
    }

    /* without a usable pool, small activation buffers (a few rows) live on
     * the stack so that serial calls do not allocate either */
    _Alignas(64) unsigned char local[SLM_MATMUL_STACK_ACT_BYTES];
    void *tmp = NULL;
    if (t->act_type == SLM_DTYPE_F32) {
        c.A = (const unsigned char *)X;
        c.a_row_bytes = (size_t)K * sizeof(float);
    } else {
        c.a_row_bytes = slm_matmul_act_row_bytes(&parts[0], K);
        if (c.a_row_bytes == SIZE_MAX || c.a_row_bytes > (SIZE_MAX - 64) / (size_t)M)
            return slm_error_set(err, SLM_ERANGE, "matmul: activation buffer too large");
        /* after the activations: the side values, then packed panels, one per thread */
        size_t act = (c.a_row_bytes * (size_t)M + 63) & ~(size_t)63;
        int q8_side = 0;
        if (M >= SLM_GEMM_PACK_MIN_M)
            for (int i = 0; i < n_parts; i++) {
                const slm_gemm_kernel *g = c.part[i].gk;
                size_t pb = g && g->pack ? ((size_t)(K / g->k_multiple) * g->pack_block_bytes + 63) & ~(size_t)63 : 0;
                if (pb > c.panel_bytes) c.panel_bytes = pb;
                if (g && g->pack && g->q8_side) q8_side = 1;
            }
        /* (no overflow: smaller than the activations, checked above) */
        const size_t side_bytes =
            q8_side ? ((size_t)M * (size_t)(K / SLM_QK8_0) * sizeof(slm_q8_0_side) + 63) & ~(size_t)63 : 0;
        if (c.panel_bytes > (SIZE_MAX - act - side_bytes - 64) / (size_t)nth)
            return slm_error_set(err, SLM_ERANGE, "matmul: activation buffer too large");
        size_t need = act + side_bytes + c.panel_bytes * (size_t)nth;   /* (+ 63 does not overflow) */
        if (pool) {
            c.abuf = slm_pool_scratch(pool, need, err);
            if (!c.abuf) return err ? err->code : SLM_ENOMEM;
        } else if (need <= sizeof local) {
            c.abuf = local;
        } else {
            c.abuf = tmp = aligned_alloc(64, (need + 63) & ~(size_t)63);   /* packed panels */
            if (!tmp)
                return slm_error_set(err, SLM_ENOMEM, "matmul: out of memory for %zu bytes", need);
        }
        c.A = c.abuf;
        c.side = side_bytes ? (slm_q8_0_side *)(void *)(c.abuf + act) : NULL;
        c.panels = c.abuf + act + side_bytes;
        c.encode = slm_act_quant_fn(t->act_type);
        /* one row (decode) is encoded by the caller: no wake-up for it */
        if (M > 1) slm_pool_run(pool, nth, encode_rows, &c);
        else encode_rows(&c, 0, 1);
    }
    atomic_init(&c.next_chunk, nth);
    slm_pool_run(pool, nth, dot_rows, &c);
    free(tmp);
    return SLM_OK;
}

slm_status slm_matmul_check_weight(const slm_tensor *t, const char *what, int64_t rows,
                                   int64_t cols, slm_error *err)
{
    if (!t) return slm_error_set(err, SLM_EINVAL, "%s: missing weight", what);
    if (t->ndim != 2 || t->shape[0] != rows || t->shape[1] != cols)
        return slm_error_set(err, SLM_EINVAL, "%s: expected shape %lldx%lld, got %lldx%lld",
                             what, (long long)rows, (long long)cols,
                             (long long)t->shape[0], (long long)(t->ndim > 1 ? t->shape[1] : 1));
    if (t->stride[1] != 1 || !slm_vecdot_fn(t->dtype))
        return slm_error_set(err, SLM_EINVAL, "%s: %s weights with non-contiguous rows or no kernel",
                             what, slm_dtype_name(t->dtype));
    return SLM_OK;
}

slm_status slm_matmul_raw(slm_pool *pool, float *out, const void *W, slm_dtype wtype,
                          size_t w_row_bytes, const float *X, int64_t M, int64_t N,
                          int64_t K, slm_error *err)
{
    slm_matmul_part p = {out, W, wtype, w_row_bytes, N, 0, NULL};
    slm_status st = check_part(&p, M, K, err);
    return st ? st : run_parts(pool, &p, 1, X, M, K, err);
}

slm_matmul_part slm_matmul_part_of(const slm_tensor *W, int64_t slice, float *out)
{
    const int r = slice < 0 ? 0 : 1;   /* index of the row dim */
    const unsigned char *data = slm_tensor_data(W);
    if (slice > 0) data += slm_tensor_elem_bytes(W, slice * W->stride[0]);
    const int order = W->storage->flags & SLM_STORAGE_VECDOT_ORDER ? SLM_MATMUL_ORDER_VECDOT
                                                                   : SLM_MATMUL_ORDER_DEFAULT;
    return (slm_matmul_part){out, data, W->dtype, slm_tensor_elem_bytes(W, W->stride[r]),
                             W->shape[r], order, slice < 0 ? W->lora : NULL};
}

slm_status slm_matmul_w(slm_pool *pool, float *out, const slm_tensor *W, int64_t slice,
                        const float *X, int64_t M, slm_error *err)
{
    const slm_matmul_part p = slm_matmul_part_of(W, slice, out);
    return slm_matmul_multi(pool, &p, 1, X, M, W->shape[W->ndim - 1], err);
}

slm_status slm_matmul_multi(slm_pool *pool, const slm_matmul_part *parts, int n_parts,
                            const float *X, int64_t M, int64_t K, slm_error *err)
{
    if (n_parts < 1 || n_parts > SLM_MATMUL_MAX_PARTS)
        return slm_error_set(err, SLM_EINVAL, "matmul: %d parts (1..%d)", n_parts, SLM_MATMUL_MAX_PARTS);
    slm_status st;
    for (int i = 0; i < n_parts; i++)
        if ((st = check_part(&parts[i], M, K, err))) return st;
    /* fuse the longest runs of parts that share an activation encoding
     * (and are not f32 batches, which go to OpenBLAS one by one) */
    for (int i = 0; i < n_parts;) {
        int j = i + 1;
        while (!uses_blas(&parts[i], M) && j < n_parts && same_encoding(&parts[i], &parts[j], M, K) &&
               !uses_blas(&parts[j], M))
            j++;
        if ((st = run_parts(pool, parts + i, j - i, X, M, K, err))) return st;
        i = j;
    }
    for (int i = 0; i < n_parts; i++)   /* unmerged LoRA adapters (core/lora_link.h) */
        if (parts[i].lora && (st = slm_lora_apply(parts[i].out, X, M, K, parts[i].N, parts[i].lora, err)))
            return st;
    return SLM_OK;
}

/* 1 if the byte ranges [a, a + na) and [b, b + nb) intersect */
static int overlaps(const slm_tensor *x, const slm_tensor *y)
{
    if (x->storage != y->storage) return 0;
    size_t a = x->offset, na = slm_tensor_nbytes(x);
    size_t b = y->offset, nb = slm_tensor_nbytes(y);
    if (y->ndim == 2) nb = (size_t)(y->shape[0] - 1) * slm_tensor_elem_bytes(y, y->stride[0])
                           + slm_tensor_elem_bytes(y, y->shape[1]);
    return a < b + nb && b < a + na;
}

slm_status slm_matmul(slm_tensor *out, const slm_tensor *W, const slm_tensor *X,
                      slm_error *err)
{
    if (W->ndim != 2)
        return slm_error_set(err, SLM_EINVAL, "matmul: weight must be 2-D (N, K), got %d-D", W->ndim);
    if (!slm_vecdot_traits_get(W->dtype))
        return slm_error_set(err, SLM_EUNSUPPORTED, "matmul: no kernel for %s weights",
                             slm_dtype_name(W->dtype));
    if (W->stride[1] != 1 || W->stride[0] < W->shape[1])
        return slm_error_set(err, SLM_EINVAL, "matmul: weight rows must be contiguous");
    const int64_t N = W->shape[0], K = W->shape[1];
    if (X->dtype != SLM_DTYPE_F32 || out->dtype != SLM_DTYPE_F32)
        return slm_error_set(err, SLM_EINVAL, "matmul: input and output must be f32 (got %s and %s)",
                             slm_dtype_name(X->dtype), slm_dtype_name(out->dtype));
    if (!slm_tensor_is_contiguous(X) || !slm_tensor_is_contiguous(out))
        return slm_error_set(err, SLM_EINVAL, "matmul: input and output must be contiguous");
    if (X->shape[X->ndim - 1] != K)
        return slm_error_set(err, SLM_EINVAL, "matmul: input rows have %lld elements, weight has K=%lld",
                             (long long)X->shape[X->ndim - 1], (long long)K);
    const int64_t M = slm_tensor_numel(X) / K;
    if (out->shape[out->ndim - 1] != N || slm_tensor_numel(out) != M * N)
        return slm_error_set(err, SLM_EINVAL, "matmul: output must hold %lld rows of N=%lld",
                             (long long)M, (long long)N);
    if (overlaps(out, X) || overlaps(out, W))
        return slm_error_set(err, SLM_EINVAL, "matmul: output overlaps an operand");
    slm_pool *pool = slm_pool_default(err);
    if (!pool) return err ? err->code : SLM_ENOMEM;
    return slm_matmul_w(pool, slm_tensor_data(out), W, -1, slm_tensor_data(X), M, err);
}
