/* Low-rank adapters attached to a weight tensor, applied unmerged.
 *
 * A weight W (out, in) may carry a chain of links; every product with W
 * through slm_matmul_part_of / slm_matmul_w then computes
 *
 *     out = X W^T + sum over links of  scale * (X A^T) B^T
 *
 * with A (r, in) and B (out, r) f32 (the LoRA layout of lora_a / lora_b).
 * A link of scale 0 is skipped, so the product is then the base's bit for
 * bit. Views of W made after the attach share its chain (tensor_dup takes
 * a reference), so the C blocks built from such a view honour it; the
 * scale is read at every product, so changing it acts at once.
 *
 * References are counted without atomics: links are made, attached, and
 * released from the thread that owns the Lua state, never from a pool job. */
#ifndef SLM_LORA_LINK_H
#define SLM_LORA_LINK_H

#include <stdint.h>

#include "status.h"

struct slm_tensor;

typedef struct slm_lora_link {
    int refs;
    int attached;              /* 1 once it heads or sits in a chain */
    float scale;               /* s; 0 skips the link */
    int64_t rank, in, out;
    const float *A;            /* (rank, in), rows contiguous */
    const float *B;            /* (out, rank) */
    struct slm_tensor *a_t, *b_t;   /* owned views keeping A's and B's storage alive */
    struct slm_lora_link *next;     /* the links attached before this one */
} slm_lora_link;

/* A link over A (r, in) and B (out, r): both f32 contiguous 2-D with the
 * same r (checked). One reference, owned by the caller. */
slm_lora_link *slm_lora_link_new(const struct slm_tensor *A, const struct slm_tensor *B, float scale,
                                 slm_error *err);
void slm_lora_link_ref(slm_lora_link *l);     /* NULL is fine */
void slm_lora_link_unref(slm_lora_link *l);   /* NULL is fine; frees at 0 */

#endif
