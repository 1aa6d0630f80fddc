/* Reference-counted byte storage shared by tensors and their views.
 *
 * A storage is either owned heap memory (64-byte aligned), a read-only file
 * mapping (the weights of a GGUF or safetensors file, used in place) or
 * borrowed memory with a release callback. Tensors hold a reference, so a
 * view keeps its bytes alive after the file object that made it is closed. */
#ifndef SLM_STORAGE_H
#define SLM_STORAGE_H

#include <stddef.h>
#include <stdio.h>

#include "status.h"

typedef struct slm_storage slm_storage;

struct slm_storage {
    int refcount;                 /* atomic */
    unsigned char *data;
    size_t size;
    int readonly;                 /* mapped files are read-only */
    void (*release)(slm_storage *s); /* frees data (and any handle) */
    void *handle;
    unsigned flags;               /* SLM_STORAGE_* */
};

/* The file's reference implementation sums the products of float weights
 * (f16, bf16) in ggml's vec_dot order (rwkv.cpp's ggml), not in the tile
 * order of llama.cpp (kernels/gemm.h); matmuls on its tensors follow it. */
#define SLM_STORAGE_VECDOT_ORDER 1u

/* size bytes of zeroed heap memory; NULL on failure (err filled). */
slm_storage *slm_storage_alloc(size_t size, slm_error *err);
/* Maps the whole file read-only. NULL on failure with "PATH: reason". */
slm_storage *slm_storage_map_file(const char *path, slm_error *err);
/* Wraps memory owned elsewhere; release(s) is called at the last unref. */
slm_storage *slm_storage_wrap(void *data, size_t size, int readonly,
                              void (*release)(slm_storage *), void *handle,
                              slm_error *err);

slm_storage *slm_storage_ref(slm_storage *s);
void slm_storage_unref(slm_storage *s);   /* NULL is fine */

/* Writes a whole file: write(f, ctx) (nonzero when every byte went out)
 * fills path.tmp, which is renamed to path once complete. A failed write
 * leaves path as it was, and path may be a file the caller has mapped (its
 * mapping keeps the old bytes). Errors: "PATH.tmp: reason" or "PATH: reason". */
slm_status slm_file_replace(const char *path, int (*write)(FILE *f, void *ctx), void *ctx,
                            slm_error *err);

#endif
