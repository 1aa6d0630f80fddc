/* Several sessions' rows in one forward (slm.batch, issue 19).
 *
 * A batch stacks the rows of n_seq sequences into one (n_rows, dim)
 * matrix: rows 0 .. n[0]-1 are sequence 0's, the next n[1] sequence 1's,
 * and so on. Everything row-wise (norms, feed-forward, experts, the head)
 * and every matmul then runs once over all rows, so each weight is read
 * once per batch instead of once per sequence. What depends on a
 * sequence's past runs per sequence: attention reads and extends that
 * sequence's own KV cache at its own positions; the recurrent blocks
 * (Mamba, RWKV) carry that sequence's own state.
 *
 * The matmul kernels are batch-invariant (a row's sums run in one order at
 * any batch size) and the per-sequence steps are the ones a lone session
 * runs, so a row's result is bit-identical to evaluating its session alone. */
#ifndef SLM_SEQBATCH_H
#define SLM_SEQBATCH_H

#include "mamba.h"
#include "rwkv.h"
#include "transformer.h"

typedef struct slm_seq {
    slm_kvcache *kv;     /* attention: the sequence's cache */
    void *state;         /* recurrent blocks: the sequence's state */
    int pos0;            /* position of the sequence's first row in this batch */
    int n;               /* its rows (>= 1) */
} slm_seq;

/* Total rows of a batch. */
int slm_seq_rows(const slm_seq *seqs, int n_seq);

/* x rows -> out rows (n_rows, dim) for the attention block b over the
 * sequences' caches at layer (each checked as slm_attn_forward checks its
 * one): projections and the output matmul over all rows, then per
 * sequence its keys and values stored at pos0.. and its queries attending
 * to its own cache. The workspace must hold slm_attn_work_size(b, n_rows). */
slm_status slm_attn_forward_seqs(slm_pool *pool, const slm_attn_block *b, const slm_seq *seqs,
                                 int n_seq, int layer, const float *x, float *out, int64_t dim,
                                 const slm_work *work, slm_error *err);

/* x rows -> out rows (n_rows, dim) for the Mamba mixer b at layer over the
 * sequences' states (seqs[i].state: slm_mamba_state *, each checked as
 * slm_mamba_forward checks its one): the projections over all rows, the
 * conv and scan per sequence over its rows and its state. w holds at least
 * n_rows rows. */
slm_status slm_mamba_forward_seqs(slm_pool *pool, const slm_mamba_block *b, const slm_seq *seqs,
                                  int n_seq, int layer, const float *x, float *out,
                                  slm_mamba_work *w, slm_error *err);

/* The RWKV time and channel mixes of layer over the sequences' states
 * (seqs[i].state: slm_rwkv_state *, each checked against the block): the
 * token shift per sequence from its own carried rows, the projections over
 * all rows in work's scratch (n_batch >= the rows), the time mix's heads
 * per sequence on its own WKV state. The time mix batches RWKV-7 only
 * (other versions: SLM_EUNSUPPORTED; their sessions run one at a time). */
slm_status slm_rwkv_tmix_forward_seqs(slm_pool *pool, const slm_rwkv_tmix *b, const slm_seq *seqs,
                                      int n_seq, int layer, const float *x, float *out,
                                      slm_rwkv_state *work, slm_error *err);
slm_status slm_rwkv_cmix_forward_seqs(slm_pool *pool, const slm_rwkv_cmix *b, const slm_seq *seqs,
                                      int n_seq, int layer, const float *x, float *out,
                                      slm_rwkv_state *work, slm_error *err);

#endif
