/* GGUF files (versions 2 and 3), read through a read-only mapping and written
 * from metadata plus tensors.
 *
 * Layout (little-endian):
 *   uint32 magic "GGUF" | uint32 version | uint64 n_tensors | uint64 n_kv
 *   n_kv x { string key | uint32 type | value }
 *   n_tensors x { string name | uint32 n_dims | uint64 ne[n_dims] (ne[0]
 *                 innermost) | uint32 ggml_type | uint64 offset }
 *   padding to general.alignment (default 32) | tensor data
 * string = uint64 len + bytes (no NUL); array = uint32 elem_type, uint64 n,
 * elements. Every length, count, offset and size is bounds-checked against
 * the file before any pointer into the mapping is made.
 *
 * Shapes here are outermost first (ne reversed), as everywhere in slm. */
#ifndef SLM_GGUF_H
#define SLM_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "../core/status.h"
#include "../core/tensor.h"

typedef enum slm_gguf_type {
    SLM_GGUF_UINT8 = 0, SLM_GGUF_INT8 = 1, SLM_GGUF_UINT16 = 2,
    SLM_GGUF_INT16 = 3, SLM_GGUF_UINT32 = 4, SLM_GGUF_INT32 = 5,
    SLM_GGUF_FLOAT32 = 6, SLM_GGUF_BOOL = 7, SLM_GGUF_STRING = 8,
    SLM_GGUF_ARRAY = 9, SLM_GGUF_UINT64 = 10, SLM_GGUF_INT64 = 11,
    SLM_GGUF_FLOAT64 = 12
} slm_gguf_type;

/* general.alignment when the key is absent; larger values are refused. */
#define SLM_GGUF_DEFAULT_ALIGNMENT 32
#define SLM_GGUF_MAX_ALIGNMENT (1 << 30)

/* Short names used by messages and the Lua API: "u8" "i8" "u16" "i16" "u32"
 * "i32" "f32" "bool" "str" "arr" "u64" "i64" "f64". */
const char *slm_gguf_type_name(slm_gguf_type t);
int slm_gguf_type_from_name(const char *name);       /* -1 if unknown */
size_t slm_gguf_type_size(slm_gguf_type t);          /* 0 for str and arr */

typedef struct slm_gguf slm_gguf;

typedef struct slm_gguf_tensor_info {
    const char *name;       /* NUL-terminated */
    slm_dtype dtype;
    int ndim;
    int64_t shape[SLM_MAX_DIMS];   /* outermost first */
    uint64_t offset;        /* bytes from the start of the data section */
    size_t nbytes;
} slm_gguf_tensor_info;

/* Opens and validates the whole header. NULL on failure with a message that
 * names the file, the field and the problem. */
slm_gguf *slm_gguf_open(const char *path, slm_error *err);
void slm_gguf_close(slm_gguf *g);    /* NULL is fine; views stay valid */

uint32_t slm_gguf_version(const slm_gguf *g);
size_t slm_gguf_alignment(const slm_gguf *g);
size_t slm_gguf_data_offset(const slm_gguf *g);  /* file offset of tensor data */
const char *slm_gguf_path(const slm_gguf *g);
slm_storage *slm_gguf_storage(const slm_gguf *g);  /* the whole-file mapping */

/* Metadata: keys are indexed 0..n_kv-1 in file order. */
int64_t slm_gguf_n_kv(const slm_gguf *g);
const char *slm_gguf_key(const slm_gguf *g, int64_t i);   /* NUL-terminated */
int64_t slm_gguf_find_key(const slm_gguf *g, const char *key); /* -1 if absent */
slm_gguf_type slm_gguf_kv_type(const slm_gguf *g, int64_t i);  /* -1 if no such key */
/* Scalars: return 0 when the value has another type (*ok set accordingly).
 * get_int accepts every integer type and bool; get_float float32/64. */
int64_t slm_gguf_get_int(const slm_gguf *g, int64_t i, int *ok);
uint64_t slm_gguf_get_uint(const slm_gguf *g, int64_t i, int *ok);
double slm_gguf_get_float(const slm_gguf *g, int64_t i, int *ok);
/* String value: pointer into the mapping (not NUL-terminated) and length. */
const char *slm_gguf_get_str(const slm_gguf *g, int64_t i, size_t *len);
/* Arrays (nested arrays are refused at open: EUNSUPPORTED) */
slm_gguf_type slm_gguf_arr_type(const slm_gguf *g, int64_t i);
uint64_t slm_gguf_arr_len(const slm_gguf *g, int64_t i);
/* Raw little-endian elements of a numeric array (NULL for string arrays),
 * in the mapping and possibly unaligned: read them with memcpy. */
const void *slm_gguf_arr_data(const slm_gguf *g, int64_t i);
/* Element j of a string array (O(1): offsets are indexed at open). */
const char *slm_gguf_arr_str(const slm_gguf *g, int64_t i, uint64_t j, size_t *len);

/* Tensors */
int64_t slm_gguf_n_tensors(const slm_gguf *g);
/* (named get_ because slm_gguf_tensor_info is the struct type) */
const slm_gguf_tensor_info *slm_gguf_get_tensor_info(const slm_gguf *g, int64_t i);
int64_t slm_gguf_find_tensor(const slm_gguf *g, const char *name); /* -1 */
/* Zero-copy view of tensor i over the mapping (keeps the mapping alive);
 * a copy in the rare file whose general.alignment (< 8) leaves the data
 * misaligned for its element type. */
slm_tensor *slm_gguf_tensor(const slm_gguf *g, int64_t i, slm_error *err);

/* Writer: collects metadata and tensors, then writes a GGUF v3 file with
 * keys in the order they were set, tensors in the order they were added,
 * the data section and each tensor's data padded to the alignment
 * (general.alignment if set, else 32), as the reference writer lays it out.
 * Values are copied; tensors are referenced (their storage stays alive
 * until the writer is freed) and written as contiguous row-major bytes
 * whatever their strides. Setting a key twice, a tensor name twice, a
 * general.alignment that is not a u32 power of two, or a tensor name of 64
 * bytes or more (the reference's limit) is an error (EINVAL). */
typedef struct slm_gguf_writer slm_gguf_writer;

slm_gguf_writer *slm_gguf_writer_new(slm_error *err);
void slm_gguf_writer_free(slm_gguf_writer *w);   /* NULL is fine */
/* Scalar of a numeric or bool type; value points at a host value of that
 * type (uint8_t, int8_t, ..., float, double; bool as a uint8_t 0 or 1). */
slm_status slm_gguf_writer_set(slm_gguf_writer *w, const char *key, slm_gguf_type type,
                               const void *value, slm_error *err);
slm_status slm_gguf_writer_set_str(slm_gguf_writer *w, const char *key, const char *s,
                                   size_t len, slm_error *err);
/* Numeric or bool array of n host values of elem_type. */
slm_status slm_gguf_writer_set_arr(slm_gguf_writer *w, const char *key, slm_gguf_type elem_type,
                                   const void *data, uint64_t n, slm_error *err);
/* String array; lens[j] is the byte length of strs[j]. */
slm_status slm_gguf_writer_set_arr_str(slm_gguf_writer *w, const char *key,
                                       const char *const *strs, const size_t *lens, uint64_t n,
                                       slm_error *err);
slm_status slm_gguf_writer_add_tensor(slm_gguf_writer *w, const char *name,
                                      const slm_tensor *t, slm_error *err);
/* Writes PATH.tmp then renames it to path, so a failed write leaves no
 * partial file under the final name. */
slm_status slm_gguf_writer_write(const slm_gguf_writer *w, const char *path, slm_error *err);

#endif
