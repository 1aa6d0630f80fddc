/* The header of every session-state snapshot: the bytes sess:snapshot()
 * holds for a KV cache, a Mamba state, an RWKV state or a short-conv state
 * (and what Snapshot:save writes inside its file).
 *
 * Layout (host byte order: little-endian on the machines slm builds for):
 *   char    magic[4]     "SLMS"
 *   char    kind[4]      which state: "KV\0\0" KV cache (blocks/kvcache.h),
 *                        "MAMB" Mamba (blocks/mamba.h), "RWKV" RWKV
 *                        (blocks/rwkv.h), "SCNV" short conv (blocks/shortconv.h)
 *   uint32  version      of that kind's body layout
 *   uint32  n_dim        how many dims follow (1..SLM_SNAP_MAX_DIMS)
 *   int64   n_past       tokens the state has seen
 *   int64   dims[n_dim]  the shape of the state the body was taken from,
 *                        listed (and named) by the kind
 *   body                 the kind's layout, documented in its header
 * 24 + 8 n_dim bytes, so a float body starts 8-aligned.
 *
 * A restore reads the header with slm_snap_parse, compares the dims with its
 * own (slm_snap_check_dims) and the body's length with what they imply
 * (slm_snap_check_len) before it writes anything, so a refused snapshot
 * leaves the state as it was. Each kind also reads the layout its snapshots
 * had before this header (their own 8-byte magic); see the kinds' headers. */
#ifndef SLM_SNAPSHOT_H
#define SLM_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>

#include "status.h"

#define SLM_SNAP_MAX_DIMS 8

typedef struct slm_snap {
    int64_t n_past;
    int n_dim;
    int64_t dims[SLM_SNAP_MAX_DIMS];
    const unsigned char *body;
    size_t body_len;
} slm_snap;

size_t slm_snap_header_size(int n_dim);
/* Writes the header into buf; returns where the body starts. */
unsigned char *slm_snap_put_header(void *buf, const char kind[4], uint32_t version, int64_t n_past,
                                   int n_dim, const int64_t *dims);

/* Reads the header of a snapshot that should be of kind (named `what` in
 * messages, with its article: "a mamba state"), version and n_dim dims.
 * Refusals (one line each): "restore: not an slm state snapshot",
 * "restore: snapshot of a KV cache, not of a mamba state", "restore:
 * snapshot of a mamba state of version 7 (this slm reads 2)", "restore:
 * truncated snapshot of a mamba state", "restore: corrupt snapshot of a
 * mamba state (n_past -1, 3 dims)". */
slm_status slm_snap_parse(const void *buf, size_t len, const char kind[4], uint32_t version,
                          const char *what, int n_dim, slm_snap *out, slm_error *err);
/* s->dims against want (named names[i]): "restore: snapshot of a mamba
 * state with n_layer 4, d_inner 64; this one has n_layer 2, d_inner 64". */
slm_status slm_snap_check_dims(const slm_snap *s, const int64_t *want, const char *const *names,
                               const char *what, slm_error *err);
/* The body holds exactly `want` bytes: "restore: truncated snapshot of a
 * mamba state (1000 bytes of state, 1024 expected)", "corrupt" for more. */
slm_status slm_snap_check_len(const slm_snap *s, size_t want, const char *what, slm_error *err);

/* The layouts before this header: an 8-byte magic of their own, then
 * n_field int32s, the dims in order with n_past at index past_at, then the
 * same body. has_magic says whether buf starts with magic; parse_old reads
 * the int32s into out (dims in the order of the new layout when the kind
 * kept it). */
int slm_snap_has_magic(const void *buf, size_t len, const char magic[8]);
slm_status slm_snap_parse_old(const void *buf, size_t len, int n_field, int past_at, const char *what,
                              slm_snap *out, slm_error *err);

/* A kind whose body is float arrays in a fixed order (Mamba, RWKV, short
 * conv): its description, and the whole write and read of such snapshots. */
typedef struct slm_snap_kind {
    char kind[4];
    uint32_t version;
    const char *what;               /* "a mamba state" */
    int n_dim;
    const char *const *dim_names;
    const char *old_magic;          /* the earlier layout's 8 bytes, or NULL */
    int old_fields, old_past_at;    /* its int32s and where n_past is */
} slm_snap_kind;

/* parts[i] holds lens[i] bytes; the body is the parts one after another. */
size_t slm_snap_flat_size(const slm_snap_kind *k, int n_part, const size_t *lens);
void slm_snap_flat_write(const slm_snap_kind *k, void *buf, int n_past, const int64_t *dims, int n_part,
                         const void *const *parts, const size_t *lens);
/* Parses (this layout or the earlier one), checks dims and length, and
 * only then copies the body into parts. */
slm_status slm_snap_flat_read(const slm_snap_kind *k, const void *buf, size_t len, const int64_t *dims,
                              int n_part, void *const *parts, const size_t *lens, int *n_past,
                              slm_error *err);

#endif
