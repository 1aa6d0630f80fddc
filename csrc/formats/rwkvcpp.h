/* rwkv.cpp model files (the format of rwkv.cpp's converter), all versions.
 *
 * Layout (little-endian): int32 magic 0x67676d66 | int32 version (100, 101)
 * | int32 n_vocab | int32 n_embed | int32 n_layer | int32 data_type, then
 * parameters until end of file, each:
 *   int32 n_dims (1..3) | int32 key_len | int32 data_type | int32 shape[n_dims]
 *   (innermost first) | key bytes | data (no padding).
 * Data types: 0 F32, 1 F16, 2 Q4_0, 3 Q4_1, 7 Q5_0, 8 Q5_1, 9 Q8_0 (ggml
 * block layouts). Several parameters are stored pre-transformed by the
 * converter (see ../shared/README.md); this reader returns them as stored.
 *
 * The header's n_vocab and n_embed must be the shape of emb.weight and
 * head.weight, and n_layer the number of blocks (blocks.0 .. blocks.n_layer-1):
 * a file whose header says otherwise is refused at open.
 *
 * The data is not aligned in the file, so the reader copies every tensor into
 * one 64-byte aligned heap block (each tensor 64-aligned). Shapes are
 * outermost first, as everywhere in slm. */
#ifndef SLM_RWKVCPP_H
#define SLM_RWKVCPP_H

#include "../core/status.h"
#include "../core/tensor.h"

typedef struct slm_rwkvcpp_header {
    int version, n_vocab, n_embed, n_layer, data_type;
} slm_rwkvcpp_header;

typedef struct slm_rwkvcpp slm_rwkvcpp;

slm_rwkvcpp *slm_rwkvcpp_open(const char *path, slm_error *err);
void slm_rwkvcpp_close(slm_rwkvcpp *f);   /* views stay valid */

const slm_rwkvcpp_header *slm_rwkvcpp_header_get(const slm_rwkvcpp *f);
int slm_rwkvcpp_n_tensors(const slm_rwkvcpp *f);
const char *slm_rwkvcpp_tensor_name(const slm_rwkvcpp *f, int i);
int slm_rwkvcpp_find(const slm_rwkvcpp *f, const char *name);   /* -1 */
slm_tensor *slm_rwkvcpp_tensor(const slm_rwkvcpp *f, int i, slm_error *err);

/* rwkv.cpp's data type id of a dtype (the list above); -1 when the format
 * has none for it. */
int slm_rwkvcpp_type_id(slm_dtype t);

/* Writes a file of the layout above, version 101 (the current block
 * layouts): h's n_vocab, n_embed, n_layer and data_type, then tensors[i]
 * (contiguous, 1..3 dims, a dtype the format has) as parameter names[i].
 * The bytes go to path.tmp, renamed to path when complete, so a failed
 * write leaves path as it was and path may be the file being rewritten. */
slm_status slm_rwkvcpp_write(const char *path, const slm_rwkvcpp_header *h, int n,
                             const char *const *names, const slm_tensor *const *tensors,
                             slm_error *err);

#endif
