#include "lora.h"

#include <pthread.h>
#include <stdlib.h>

#include "sgemm.h"

/* t (M, r) on the stack up to this many floats, else on the heap */
#define LORA_STACK_FLOATS 4096

slm_status slm_lora_apply(float *out, const float *X, int64_t M, int64_t K, int64_t N,
                          const slm_lora_link *chain, slm_error *err)
{
    for (const slm_lora_link *l = chain; l; l = l->next) {
        if (l->scale == 0.0f) continue;
        if (l->in != K || l->out != N)
            return slm_error_set(err, SLM_EINVAL, "lora: adapter (%lld -> %lld) does not fit a %lld -> %lld product",
                                 (long long)l->in, (long long)l->out, (long long)K, (long long)N);
        const int64_t r = l->rank;
        float stack[LORA_STACK_FLOATS];
        float *t = M * r <= LORA_STACK_FLOATS ? stack : malloc((size_t)(M * r) * sizeof(float));
        if (!t) return slm_error_set(err, SLM_ENOMEM, "lora: out of memory for %lld x %lld", (long long)M, (long long)r);
        /* t = s X A^T (M, r), then out += t B^T (M, N) */
        slm_sgemm(0, 1, (int)M, (int)r, (int)K, l->scale, X, (int)K, l->A,
                    (int)K, 0.0f, t, (int)r);
        slm_sgemm(0, 1, (int)M, (int)N, (int)r, 1.0f, t, (int)r, l->B, (int)r,
                    1.0f, out, (int)N);
        if (t != stack) free(t);
    }
    return SLM_OK;
}
