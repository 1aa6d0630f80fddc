#include "lora_link.h"

#include <stdlib.h>

#include "tensor.h"

static int f32_matrix(const slm_tensor *t)
{
    return t && t->dtype == SLM_DTYPE_F32 && t->ndim == 2 && slm_tensor_is_contiguous(t);
}

slm_lora_link *slm_lora_link_new(const slm_tensor *A, const slm_tensor *B, float scale, slm_error *err)
{
    if (!f32_matrix(A) || !f32_matrix(B)) {
        slm_error_set(err, SLM_EINVAL, "lora: A and B must be contiguous 2-D f32 tensors");
        return NULL;
    }
    if (A->shape[0] != B->shape[1]) {
        slm_error_set(err, SLM_EINVAL, "lora: A (r, in) has r = %lld, B (out, r) has r = %lld",
                      (long long)A->shape[0], (long long)B->shape[1]);
        return NULL;
    }
    slm_lora_link *l = calloc(1, sizeof *l);
    if (!l) {
        slm_error_set(err, SLM_ENOMEM, "out of memory");
        return NULL;
    }
    l->a_t = slm_tensor_view(A, err);
    l->b_t = l->a_t ? slm_tensor_view(B, err) : NULL;
    if (!l->b_t) {
        slm_tensor_free(l->a_t);
        free(l);
        return NULL;
    }
    l->refs = 1;
    l->scale = scale;
    l->rank = A->shape[0];
    l->in = A->shape[1];
    l->out = B->shape[0];
    l->A = slm_tensor_data(l->a_t);
    l->B = slm_tensor_data(l->b_t);
    return l;
}

void slm_lora_link_ref(slm_lora_link *l)
{
    if (l) l->refs++;
}

void slm_lora_link_unref(slm_lora_link *l)
{
    while (l && --l->refs == 0) {   /* a chain is released iteratively */
        slm_lora_link *next = l->next;
        slm_tensor_free(l->a_t);
        slm_tensor_free(l->b_t);
        free(l);
        l = next;
    }
}
