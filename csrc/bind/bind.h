/* Shared helpers of the Lua bindings (the only files that include lua.h).
 *
 * Each binding file registers its functions into the `slm.core` table via
 * an opener listed in l_core.c. Errors from the core arrive as slm_error and
 * are raised with slm_bind_error (misuse) or returned as nil, msg
 * (expected failures such as a missing or malformed file). */
#ifndef SLM_BIND_H
#define SLM_BIND_H

#include <lauxlib.h>
#include <lua.h>

#include "../core/status.h"
#include "../core/tensor.h"
#include "../core/work.h"
#include "../kernels/ops.h"

#define SLM_TENSOR_MT "slm.Tensor"

/* Raises a Lua error with err's message (never returns). */
int slm_bind_error(lua_State *L, const slm_error *err);
/* Pushes nil, err->msg and returns 2. */
int slm_bind_fail(lua_State *L, const slm_error *err);

/* Fields of an options table at idx: an integer (def when absent; an
 * error when required or not an integer) or a number. */
lua_Integer slm_bind_int_field(lua_State *L, int idx, const char *name, lua_Integer def,
                               int required);
double slm_bind_num_field(lua_State *L, int idx, const char *name, double def);
/* A writable contiguous f32 activation buffer seen as (rows, dim). */
float *slm_bind_check_buf(lua_State *L, int idx, int64_t *rows, int64_t *dim);
/* Sets fns as fields of the table `name` inside the table at the top of
 * the stack, made if absent: several binding files fill one sub-table
 * (slm.core.train) in whatever order their openers run. */
void slm_bind_set_subfuncs(lua_State *L, const char *name, const luaL_Reg *fns);
/* Registers metatable `name` for a userdata type whose __gc, __close and
 * :free() share the one idempotent `close`; methods go in __index. */
void slm_bind_new_meta(lua_State *L, const char *name, lua_CFunction close,
                       const luaL_Reg *methods);

/* Blocks (l_blocks.c): the workspace userdata at idx (raises when freed or
 * not one); field `name` of the table at idx as a new view the caller owns
 * (NULL when absent; raises when not a tensor). */
const slm_work *slm_bind_check_work(lua_State *L, int idx);
slm_tensor *slm_bind_opt_weight(lua_State *L, int idx, const char *name);

/* The RoPE options table at idx (blocks.attention's field `rope`, also
 * slm.core.train.rope's): mode "normal" (default) or "neox", n_rot
 * (default head_dim), base (10000), scale (1), attn_factor (1) into *p,
 * whose freq_factors is left NULL; returns the tensor in field `factors`,
 * borrowed from the table (NULL when absent; raises when not a tensor).
 * The caller checks n_rot and the factors' length. */
slm_tensor *slm_bind_rope_opts(lua_State *L, int idx, int head_dim, slm_rope_params *p);

/* Tensor userdata (l_tensor.c). push takes ownership of t (frees it if
 * pushing fails). check raises "bad argument #i (slm.Tensor expected...)" or
 * "attempt to use a freed tensor". */
void slm_bind_push_tensor(lua_State *L, slm_tensor *t);
slm_tensor *slm_bind_check_tensor(lua_State *L, int idx);
/* dtype argument by name ("f32", "q4_0", ...); raises on an unknown name. */
slm_dtype slm_bind_check_dtype(lua_State *L, int idx);

/* Batches of sessions (l_seqbatch.c): the sequences of the slm.SeqBatch at
 * idx (raises when none are set) and, pushed, the state of sequence i
 * (0-based) as given to its set(); the caller resolves and checks it. */
#define SLM_SEQBATCH_MT "slm.SeqBatch"
struct slm_seq;
struct slm_seq *slm_bind_check_seqs(lua_State *L, int idx, int *n_seq);
void slm_bind_push_seq_state(lua_State *L, int idx, int i);
/* The userdata (metatable mt) that sequence i of the SeqBatch at idx holds
 * as its state; "seqbatch: sequence N's state is not <what>" otherwise. It
 * stays alive: the SeqBatch keeps it. */
void *slm_bind_seq_state(lua_State *L, int idx, int i, const char *mt, const char *what);
/* The chain of the sampler userdata at idx (l_sampler.c); raises when
 * freed, not a sampler, or inside its own sample call. */
struct slm_chain;
struct slm_chain *slm_bind_check_chain(lua_State *L, int idx);

/* Openers: each sets its functions as fields of the table at the top. */
void slm_bind_open_tensor(lua_State *L);
void slm_bind_open_gguf(lua_State *L);
void slm_bind_open_safetensors(lua_State *L);
void slm_bind_open_kernels(lua_State *L);
void slm_bind_open_sampler(lua_State *L);
void slm_bind_open_tokenizer(lua_State *L);
void slm_bind_open_blocks(lua_State *L);
void slm_bind_open_files(lua_State *L);
void slm_bind_open_rwkv(lua_State *L);
void slm_bind_open_testing(lua_State *L);
void slm_bind_open_regex(lua_State *L);
void slm_bind_open_grammar(lua_State *L);   /* slm.core.grammar (get or create) */
void slm_bind_open_mamba(lua_State *L);
void slm_bind_open_moe(lua_State *L);   /* after blocks: adds to slm.core.blocks */
void slm_bind_open_shortconv(lua_State *L);
void slm_bind_open_tokens(lua_State *L);   /* slm.core.train: token files (l_tokens.c) */
void slm_bind_open_sdpa(lua_State *L);   /* adds to slm.core.train (get or create) */
void slm_bind_open_mamba_train(lua_State *L);   /* adds to slm.core.train (get or create) */
void slm_bind_open_rwkv_train(lua_State *L);   /* adds to slm.core.train (get or create) */
void slm_bind_open_train(lua_State *L);   /* adds to slm.core.train (get or create) */
void slm_bind_open_lora(lua_State *L);   /* slm.core.lora (get or create) */
void slm_bind_open_seqbatch(lua_State *L);   /* slm.core.seqbatch (l_seqbatch.c) */
void slm_bind_open_distill(lua_State *L);   /* adds to slm.core.train (get or create) */
void slm_bind_open_speculative(lua_State *L);   /* slm.core.speculative (l_speculative.c) */

#endif
