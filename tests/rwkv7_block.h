/* tests/rwkv7_block.h: the RWKV-7 time-mix block of a C test, over the
 * weights and vectors the test made (one copy of the field list).
 *   mats: wr wk wv wo (D x D), then w1 w2, a1 a2, g1 g2, v1 v2 (R x D, D x R)
 *   vecs: the six mixes r w k v a g, then w0 a0 v0 k_k k_a r_k, [12] unused,
 *         lnx_w lnx_b (D each)
 * The first layer sets v_first and takes no v0, v1, v2. */
#ifndef SLM_TESTS_RWKV7_BLOCK_H
#define SLM_TESTS_RWKV7_BLOCK_H

#include "blocks/rwkv.h"

static inline slm_rwkv_tmix rwkv7_test_block(int first, int64_t D, int64_t H, int64_t N,
                                             slm_tensor *const *mats, float *const *vecs)
{
    slm_rwkv_tmix t = {.version = SLM_RWKV_V7, .dim = D, .n_head = H, .head_size = N,
                       .gn_eps = 64e-5f, .first_layer = first,
                       .wr = mats[0], .wk = mats[1], .wv = mats[2], .wo = mats[3],
                       .w1 = mats[4], .w2 = mats[5], .a1 = mats[6], .a2 = mats[7],
                       .g1 = mats[8], .g2 = mats[9],
                       .v1 = first ? NULL : mats[10], .v2 = first ? NULL : mats[11],
                       .w0 = vecs[6], .a0 = vecs[7], .v0 = first ? NULL : vecs[8],
                       .k_k = vecs[9], .k_a = vecs[10], .r_k = vecs[11],
                       .lnx_w = vecs[13], .lnx_b = vecs[14]};
    for (int i = 0; i < 6; i++) t.maa[i] = vecs[i];
    return t;
}

#endif
