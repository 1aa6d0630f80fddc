/* Workspace: scratch memory a block's forward carves its buffers from.
 *
 * Blocks own the layout of their scratch (slm_*_work_size(block, n) says
 * how many bytes n rows need); the session owns the memory, one buffer
 * sized by the model for the largest block and batch, shared by all its
 * blocks since they run one after the other. So nothing is allocated per
 * call, and a block's scratch never lives in another block's state. */
#ifndef SLM_WORK_H
#define SLM_WORK_H

#include <stddef.h>

#include "status.h"

/* every buffer starts on a cache line */
#define SLM_WORK_ALIGN 64

typedef struct slm_work {
    unsigned char *base;
    size_t bytes;
} slm_work;

/* bytes a buffer of n bytes takes in a workspace (rounded up to the
 * alignment); add these up for a block's slm_*_work_size */
static inline size_t slm_work_round(size_t n)
{
    return (n + SLM_WORK_ALIGN - 1) & ~(size_t)(SLM_WORK_ALIGN - 1);
}

/* A carving cursor over a workspace: take() hands out consecutive aligned
 * buffers and NULL once the workspace is exhausted (the block then fails
 * with the size it needed). */
typedef struct slm_work_cursor {
    unsigned char *p;
    size_t left;
} slm_work_cursor;

static inline slm_work_cursor slm_work_begin(const slm_work *w)
{
    return (slm_work_cursor){w->base, w->bytes};
}

static inline void *slm_work_take(slm_work_cursor *c, size_t n)
{
    const size_t r = slm_work_round(n);
    if (!c->p || r > c->left) return NULL;
    void *out = c->p;
    c->p += r;
    c->left -= r;
    return out;
}

/* A workspace of at least bytes (aligned); NULL with err on failure. */
slm_work *slm_work_new(size_t bytes, slm_error *err);
void slm_work_free(slm_work *w);

#endif
