#include "work.h"

#include <stdlib.h>

slm_work *slm_work_new(size_t bytes, slm_error *err)
{
    if (bytes > ((size_t)1 << 40)) {
        slm_error_set(err, SLM_ERANGE, "workspace: %zu bytes is too large", bytes);
        return NULL;
    }
    slm_work *w = calloc(1, sizeof *w);
    const size_t n = slm_work_round(bytes ? bytes : 1);
    if (w) w->base = aligned_alloc(SLM_WORK_ALIGN, n);
    if (!w || !w->base) {
        free(w);
        slm_error_set(err, SLM_ENOMEM, "workspace: cannot allocate %zu bytes", n);
        return NULL;
    }
    w->bytes = n;
    return w;
}

void slm_work_free(slm_work *w)
{
    if (!w) return;
    free(w->base);
    free(w);
}
