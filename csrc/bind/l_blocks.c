/* `slm.core.blocks`: the C blocks a Lua model definition composes.
 *
 *   blocks.attention{...} -> slm.AttnBlock   blk:forward(out, x, kv, layer, pos, n, work)
 *                            {encoder = true [, causal = false]}: blk:encode(out, x, work, n),
 *                            the n rows attending to each other, no cache
 *                            (blocks.moe{...} -> slm.MoEBlock: l_moe.c)
 *   blocks.ffn{...}       -> slm.FFNBlock    blk:forward(out, x, work, n)
 *                            blk:work_size(n) bytes of workspace n rows need
 *   blocks.kv_state{n_ctx =, n_batch =, layers = {{kv_dim =, window =}, ...},
 *                   ring = true}     -> slm.KVState (the KV cache)
 *   blocks.workspace(bytes) -> slm.Workspace (scratch the blocks share)
 *   blocks.embed(x, emb, ids, first, n)      x rows 1..n = emb rows of ids[first..]
 *   blocks.rmsnorm(out, x, w, eps, first, n) rows first..first+n-1
 *   blocks.layernorm(out, x, w, b, eps, first, n)
 *   blocks.add(x, y, first, n [, alpha])     x += alpha * y on those rows
 *   blocks.scale(x, s, first, n)             x *= s on those rows
 *   blocks.softcap(x, c, first, n)           x = c * tanh(x / c) on those rows
 *   blocks.linear(out, W, x, row)            out (N) = W (N, K) . x[row]
 *
 * Activation buffers are F32 tensors of shape (n_batch, dim) owned by the
 * Lua session, so hooks can read and modify them. Blocks keep their own
 * views of the weights (the storage is reference counted), so freeing a
 * Lua tensor never leaves a block with a dangling pointer. Rows and layers
 * are 1-based here, positions are token counts (0-based). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../blocks/seqbatch.h"
#include "../blocks/transformer.h"
#include "../kernels/matmul.h"
#include "../core/pool.h"
#include "../kernels/ops_rows.h"
#include "bind.h"

#define ATTN_MT "slm.AttnBlock"
#define FFN_MT "slm.FFNBlock"
#define KV_MT "slm.KVState"
#define WORK_MT "slm.Workspace"

/* --- helpers --------------------------------------------------------------- */

static slm_pool *pool_or_raise(lua_State *L)
{
    slm_error err = {0};
    slm_pool *p = slm_pool_default(&err);
    if (!p) slm_bind_error(L, &err);
    return p;
}

/* An F32 activation buffer: contiguous, 2-D (rows, dim). */
/* rows first..first+n-1 (1-based first) must lie inside a buffer of rows */
static void check_rows(lua_State *L, int64_t first, int64_t n, int64_t rows, int arg)
{
    if (first < 1 || n < 1 || first - 1 + n > rows)
        luaL_error(L, "bad argument #%d: rows %I..%I outside 1..%I", arg,
                   (lua_Integer)first, (lua_Integer)(first + n - 1), (lua_Integer)rows);
}

/* A 1-D f32 contiguous vector of length n (norm weights, biases). */
static const float *check_vec(lua_State *L, int idx, int64_t n, const char *what)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    if (t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t) || slm_tensor_numel(t) != n)
        luaL_error(L, "%s: expected %I contiguous f32 values, got a %s tensor of %I",
                   what, (lua_Integer)n, slm_dtype_name(t->dtype), (lua_Integer)slm_tensor_numel(t));
    return slm_tensor_data(t);
}

/* Field `name` of the table at idx as a new view (NULL if absent). */
slm_tensor *slm_bind_opt_weight(lua_State *L, int idx, const char *name)
{
    slm_tensor *v = NULL;
    if (lua_getfield(L, idx, name) != LUA_TNIL) {
        slm_tensor *t = luaL_testudata(L, -1, SLM_TENSOR_MT) ? slm_bind_check_tensor(L, -1) : NULL;
        if (!t) luaL_error(L, "field '%s' must be a tensor", name);
        slm_error err = {0};
        v = slm_tensor_view(t, &err);
        if (!v) slm_bind_error(L, &err);
    }
    lua_pop(L, 1);
    return v;
}

/* --- attention ----------------------------------------------------------- */

slm_tensor *slm_bind_rope_opts(lua_State *L, int idx, int head_dim, slm_rope_params *p)
{
    idx = lua_absindex(L, idx);
    lua_getfield(L, idx, "mode");
    const char *mode = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!lua_isnil(L, -1) && (!mode || (strcmp(mode, "normal") && strcmp(mode, "neox"))))
        luaL_error(L, "field 'mode' must be \"normal\" or \"neox\"");
    p->mode = mode && !strcmp(mode, "neox") ? SLM_ROPE_NEOX : SLM_ROPE_NORMAL;
    lua_pop(L, 1);
    p->n_rot = (int)slm_bind_int_field(L, idx, "n_rot", head_dim, 0);
    p->freq_base = (float)slm_bind_num_field(L, idx, "base", 10000.0);
    p->freq_scale = (float)slm_bind_num_field(L, idx, "scale", 1.0);
    p->attn_factor = (float)slm_bind_num_field(L, idx, "attn_factor", 1.0);
    p->freq_factors = NULL;
    slm_tensor *f = NULL;
    if (lua_getfield(L, idx, "factors") != LUA_TNIL) {
        if (!luaL_testudata(L, -1, SLM_TENSOR_MT)) luaL_error(L, "field 'factors' must be a tensor");
        f = slm_bind_check_tensor(L, -1);
    }
    lua_pop(L, 1);   /* (the table at idx keeps the tensor alive) */
    return f;
}

#define ATTN_OWN 12
typedef struct attn_ud {
    slm_attn_block b;
    /* views it holds: wq wk wv wqkv wo bq bk bv bo q_norm k_norm freq_factors */
    slm_tensor *own[ATTN_OWN];
    int64_t dim;
    int closed;
} attn_ud;

static void attn_release(attn_ud *a)
{
    for (int i = 0; i < ATTN_OWN; i++) {
        slm_tensor_free(a->own[i]);
        a->own[i] = NULL;
    }
    a->closed = 1;
}

static int attn_gc(lua_State *L)
{
    attn_release(luaL_checkudata(L, 1, ATTN_MT));
    return 0;
}

static attn_ud *check_attn(lua_State *L, int idx)
{
    attn_ud *a = luaL_checkudata(L, idx, ATTN_MT);
    if (a->closed) luaL_error(L, "attempt to use a freed attention block");
    return a;
}

/* an f32 vector of n values held by the block (biases, norms, factors) */
static const float *vec_ptr(lua_State *L, slm_tensor *t, int64_t n, const char *what)
{
    if (!t) return NULL;
    if (t->dtype != SLM_DTYPE_F32 || !slm_tensor_is_contiguous(t) || slm_tensor_numel(t) != n)
        luaL_error(L, "attention: %s must hold %I contiguous f32 values", what, (lua_Integer)n);
    return slm_tensor_data(t);
}

static int l_attention(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    /* the userdata exists before any view, so an error frees them via __gc */
    attn_ud *a = lua_newuserdatauv(L, sizeof *a, 0);
    memset(a, 0, sizeof *a);
    luaL_setmetatable(L, ATTN_MT);
    static const char *const names[11] = {"wq", "wk", "wv", "wqkv", "wo", "bq", "bk", "bv", "bo",
                                          "q_norm", "k_norm"};
    for (int i = 0; i < 11; i++) a->own[i] = slm_bind_opt_weight(L, 1, names[i]);
    slm_attn_block *b = &a->b;
    b->wq = a->own[0]; b->wk = a->own[1]; b->wv = a->own[2]; b->wqkv = a->own[3]; b->wo = a->own[4];
    a->dim = slm_bind_int_field(L, 1, "dim", 0, 1);
    b->shape.n_head = (int)slm_bind_int_field(L, 1, "n_head", 0, 1);
    b->shape.n_head_kv = (int)slm_bind_int_field(L, 1, "n_head_kv", b->shape.n_head, 0);
    b->shape.head_dim = (int)slm_bind_int_field(L, 1, "head_dim", b->shape.n_head ? a->dim / b->shape.n_head : 0, 0);
    b->shape.scale = (float)slm_bind_num_field(L, 1, "scale", b->shape.head_dim > 0 ? 1.0 / sqrt(b->shape.head_dim) : 1.0);
    b->shape.softcap = (float)slm_bind_num_field(L, 1, "softcap", 0.0);
    lua_Integer window = slm_bind_int_field(L, 1, "window", 0, 0);
    if (window < 0 || window > (1 << 24)) luaL_error(L, "attention: window %I out of range 0..16777216", window);
    b->shape.window = (int)window;
    b->norm_eps = (float)slm_bind_num_field(L, 1, "norm_eps", 1e-6);
    lua_getfield(L, 1, "prescale_q");
    b->shape.prescale_q = lua_toboolean(L, -1);
    lua_pop(L, 1);
    /* encoders (BERT): no cache; causal = false drops the mask */
    lua_getfield(L, 1, "encoder");
    b->encoder = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, 1, "causal");
    b->shape.unmasked = !lua_isnil(L, -1) && !lua_toboolean(L, -1);
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "rope") == LUA_TTABLE) {
        b->use_rope = 1;
        slm_bind_rope_opts(L, lua_gettop(L), b->shape.head_dim, &b->rope);
        a->own[11] = slm_bind_opt_weight(L, lua_gettop(L), "factors");
    } else if (!lua_isnil(L, -1) && lua_toboolean(L, -1)) {
        luaL_error(L, "field 'rope' must be a table or false");
    }
    lua_pop(L, 1);
    slm_error err = {0};
    if (slm_attn_block_check(b, a->dim, &err) != SLM_OK) slm_bind_error(L, &err);
    int64_t q_dim = (int64_t)b->shape.n_head * b->shape.head_dim;
    int64_t kv_dim = (int64_t)b->shape.n_head_kv * b->shape.head_dim;
    b->bq = vec_ptr(L, a->own[5], q_dim, "bq");
    b->bk = vec_ptr(L, a->own[6], kv_dim, "bk");
    b->bv = vec_ptr(L, a->own[7], kv_dim, "bv");
    b->bo = vec_ptr(L, a->own[8], a->dim, "bo");
    static const char *const qk_modes[] = {"head", "full", NULL};
    lua_getfield(L, 1, "qk_norm");
    b->qk_norm_full = lua_isnil(L, -1) ? 0 : luaL_checkoption(L, -1, NULL, qk_modes);
    lua_pop(L, 1);
    b->q_norm = vec_ptr(L, a->own[9], b->qk_norm_full ? q_dim : b->shape.head_dim, "q_norm");
    b->k_norm = vec_ptr(L, a->own[10], b->qk_norm_full ? kv_dim : b->shape.head_dim, "k_norm");
    b->rope.freq_factors = vec_ptr(L, a->own[11], b->rope.n_rot / 2, "rope factors (n_rot / 2)");
    return 1;
}

static int attn_work_size(lua_State *L)
{
    attn_ud *a = check_attn(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1 && n <= 65536, 2, "row count out of range 1..65536");
    lua_pushinteger(L, (lua_Integer)slm_attn_work_size(&a->b, (int)n));
    return 1;
}

/* --- feed-forward ---------------------------------------------------------- */

typedef struct ffn_ud {
    slm_ffn_block b;
    slm_tensor *own[6];     /* gate up gate_up down b_up b_down */
    int64_t dim;
    int closed;
} ffn_ud;

static int ffn_gc(lua_State *L)
{
    ffn_ud *f = luaL_checkudata(L, 1, FFN_MT);
    for (int i = 0; i < 6; i++) {
        slm_tensor_free(f->own[i]);
        f->own[i] = NULL;
    }
    f->closed = 1;
    return 0;
}

static ffn_ud *check_ffn(lua_State *L, int idx)
{
    ffn_ud *f = luaL_checkudata(L, idx, FFN_MT);
    if (f->closed) luaL_error(L, "attempt to use a freed ffn block");
    return f;
}

static int l_ffn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    ffn_ud *f = lua_newuserdatauv(L, sizeof *f, 0);
    memset(f, 0, sizeof *f);
    luaL_setmetatable(L, FFN_MT);
    static const char *const names[6] = {"gate", "up", "gate_up", "down", "b_up", "b_down"};
    for (int i = 0; i < 6; i++) f->own[i] = slm_bind_opt_weight(L, 1, names[i]);
    slm_ffn_block *b = &f->b;
    b->gate = f->own[0]; b->up = f->own[1]; b->gate_up = f->own[2]; b->down = f->own[3];
    f->dim = slm_bind_int_field(L, 1, "dim", 0, 1);
    b->gated = b->gate || b->gate_up;
    lua_getfield(L, 1, "act");
    static const char *const acts[] = {"silu", "gelu", NULL};
    b->act = lua_isnil(L, -1) ? SLM_FFN_SILU : (slm_ffn_act)luaL_checkoption(L, -1, NULL, acts);
    lua_pop(L, 1);
    const slm_tensor *down = b->down;
    b->n_ff = slm_bind_int_field(L, 1, "n_ff", down && down->ndim == 2 ? down->shape[1] : 0, 0);
    slm_error err = {0};
    if (slm_ffn_block_check(b, f->dim, &err) != SLM_OK) slm_bind_error(L, &err);
    if (f->own[4]) {
        if (f->own[4]->dtype != SLM_DTYPE_F32 || slm_tensor_numel(f->own[4]) != b->n_ff)
            luaL_error(L, "ffn: b_up must hold %I f32 values", (lua_Integer)b->n_ff);
        b->b_up = slm_tensor_data(f->own[4]);
    }
    if (f->own[5]) {
        if (f->own[5]->dtype != SLM_DTYPE_F32 || slm_tensor_numel(f->own[5]) != f->dim)
            luaL_error(L, "ffn: b_down must hold %I f32 values", (lua_Integer)f->dim);
        b->b_down = slm_tensor_data(f->own[5]);
    }
    return 1;
}

static int ffn_work_size(lua_State *L)
{
    ffn_ud *f = check_ffn(L, 1);
    lua_Integer n = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n >= 1 && n <= 65536, 2, "row count out of range 1..65536");
    lua_pushinteger(L, (lua_Integer)slm_ffn_work_size(&f->b, (int)n));
    return 1;
}

/* --- KV state and workspace ------------------------------------------------- */

typedef struct kv_ud {
    slm_kvcache *cache;
} kv_ud;

static int kv_close(lua_State *L)
{
    kv_ud *k = luaL_checkudata(L, 1, KV_MT);
    slm_kvcache_free(k->cache);
    k->cache = NULL;
    return 0;
}

static kv_ud *check_kv(lua_State *L, int idx)
{
    kv_ud *k = luaL_checkudata(L, idx, KV_MT);
    if (!k->cache) luaL_error(L, "attempt to use a freed session state");
    return k;
}

/* kv_state{n_ctx =, n_batch =, layers = {{kv_dim =, window =, head_dim =}, ...}, ring =,
 *          type = "f16" | "f32" | "q8_0" | "q4_0"} */
static int l_kv_state(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_Integer n_ctx = slm_bind_int_field(L, 1, "n_ctx", 0, 1);
    lua_Integer n_batch = slm_bind_int_field(L, 1, "n_batch", 1, 0);
    if (n_ctx < 1 || n_ctx > (1 << 24)) luaL_error(L, "kv_state: n_ctx %I out of range 1..16777216", n_ctx);
    if (n_batch < 1 || n_batch > 65536) luaL_error(L, "kv_state: n_batch %I out of range 1..65536", n_batch);
    lua_getfield(L, 1, "ring");
    int ring = lua_isnil(L, -1) ? 1 : lua_toboolean(L, -1);
    lua_pop(L, 1);
    int type = SLM_KV_F16;
    if (lua_getfield(L, 1, "type") != LUA_TNIL) {
        const char *tn = lua_tostring(L, -1);
        for (type = 0; tn && type < SLM_KV_TYPE_COUNT && strcmp(tn, slm_kv_type_names[type]); type++) {}
        if (!tn || type == SLM_KV_TYPE_COUNT)
            luaL_error(L, "kv_state: type must be one of f16, f32, q8_0, q4_0, got %s", luaL_tolstring(L, -1, NULL));
    }
    lua_pop(L, 1);
    if (lua_getfield(L, 1, "layers") != LUA_TTABLE) luaL_error(L, "kv_state: field 'layers' must be a list of {kv_dim =, window =}");
    lua_Integer n_layer = luaL_len(L, -1);
    if (n_layer < 1 || n_layer > 4096) luaL_error(L, "kv_state: %I layers out of range 1..4096", n_layer);
    int *dims = lua_newuserdatauv(L, 3 * (size_t)n_layer * sizeof(int), 0);   /* freed by the GC */
    int *windows = dims + n_layer, *heads = windows + n_layer;
    for (lua_Integer l = 1; l <= n_layer; l++) {
        if (lua_geti(L, -2, l) != LUA_TTABLE) luaL_error(L, "kv_state: layers[%I] must be a table", l);
        lua_Integer d = slm_bind_int_field(L, -1, "kv_dim", 0, 1), w = slm_bind_int_field(L, -1, "window", 0, 0);
        lua_Integer hd = slm_bind_int_field(L, -1, "head_dim", 0, 0);
        if (d < 1 || d > (1 << 20) || w < 0 || w > (1 << 24) || hd < 0 || hd > d)
            luaL_error(L, "kv_state: layers[%I] has kv_dim %I, window %I and head_dim %I (out of range)", l, d, w, hd);
        dims[l - 1] = (int)d;
        windows[l - 1] = (int)w;
        heads[l - 1] = (int)hd;
        lua_pop(L, 1);
    }
    kv_ud *k = lua_newuserdatauv(L, sizeof *k, 0);
    k->cache = NULL;
    luaL_setmetatable(L, KV_MT);
    slm_error err = {0};
    k->cache = slm_kvcache_new_typed((int)n_layer, dims, heads, windows, (int)n_ctx, (int)n_batch, ring,
                                     (slm_kv_type)type, &err);
    if (!k->cache) slm_bind_error(L, &err);
    return 1;
}

static int kv_bytes(lua_State *L)
{
    kv_ud *k = check_kv(L, 1);
    lua_pushinteger(L, (lua_Integer)slm_kvcache_bytes(k->cache));
    return 1;
}

/* bytes one more position costs (every layer's key and value row) */
static int kv_bytes_per_token(lua_State *L)
{
    kv_ud *k = check_kv(L, 1);
    lua_pushinteger(L, (lua_Integer)slm_kvcache_bytes_per_token(k->cache));
    return 1;
}

/* the rows' type: "f16", "f32", "q8_0" or "q4_0" */
static int kv_type(lua_State *L)
{
    kv_ud *k = check_kv(L, 1);
    lua_pushstring(L, slm_kv_type_names[k->cache->type]);
    return 1;
}

/* rows a layer holds (1-based layer): n_ctx, or its ring's length */
static int kv_rows(lua_State *L)
{
    kv_ud *k = check_kv(L, 1);
    lua_Integer l = luaL_checkinteger(L, 2);
    luaL_argcheck(L, l >= 1 && l <= k->cache->n_layer, 2, "layer out of range");
    lua_pushinteger(L, k->cache->layer[l - 1].cap);
    return 1;
}

/* snapshot(n_past) -> string (the layout of blocks/kvcache.h) */
static int kv_snapshot(lua_State *L)
{
    kv_ud *k = check_kv(L, 1);
    lua_Integer n_past = luaL_checkinteger(L, 2);
    luaL_argcheck(L, n_past >= 0 && n_past <= k->cache->n_ctx, 2, "n_past out of range");
    size_t n = slm_kvcache_snapshot_size(k->cache, (int)n_past);
    luaL_Buffer B;
    char *p = luaL_buffinitsize(L, &B, n);
    slm_kvcache_snapshot(k->cache, (int)n_past, p);
    luaL_pushresultsize(&B, n);
    return 1;
}

/* restore(str) -> n_past; the string must come from a state of this shape */
static int kv_restore(lua_State *L)
{
    kv_ud *k = check_kv(L, 1);
    size_t len;
    const char *s = luaL_checklstring(L, 2, &len);
    slm_error err = {0};
    int n_past = 0;
    if (slm_kvcache_restore(k->cache, s, len, &n_past, &err) != SLM_OK) return slm_bind_error(L, &err);
    lua_pushinteger(L, n_past);
    return 1;
}

typedef struct work_ud {
    slm_work *w;
} work_ud;

static int work_close(lua_State *L)
{
    work_ud *u = luaL_checkudata(L, 1, WORK_MT);
    slm_work_free(u->w);
    u->w = NULL;
    return 0;
}

const slm_work *slm_bind_check_work(lua_State *L, int idx)
{
    work_ud *u = luaL_checkudata(L, idx, WORK_MT);
    if (!u->w) luaL_error(L, "attempt to use a freed workspace");
    return u->w;
}

static int l_workspace(lua_State *L)
{
    lua_Integer bytes = luaL_checkinteger(L, 1);
    luaL_argcheck(L, bytes >= 0 && bytes <= ((lua_Integer)1 << 40), 1, "size out of range");
    work_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
    u->w = NULL;
    luaL_setmetatable(L, WORK_MT);
    slm_error err = {0};
    u->w = slm_work_new((size_t)bytes, &err);
    if (!u->w) slm_bind_error(L, &err);
    return 1;
}

static int work_bytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_bind_check_work(L, 1)->bytes);
    return 1;
}

/* --- forward calls ------------------------------------------------------------ */

/* blk:forward(out, x, seqbatch, layer, pos, n, work): the rows of several
 * sessions, each against its own cache (l_seqbatch.c); pos is unused, n
 * must be the batch's rows */
static int attn_forward_seqs(lua_State *L, attn_ud *a)
{
    int64_t orows, odim, xrows, xdim;
    float *out = slm_bind_check_buf(L, 2, &orows, &odim);
    float *x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    int n_seq;
    struct slm_seq *seqs = slm_bind_check_seqs(L, 4, &n_seq);
    lua_Integer layer = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 7);
    const slm_work *work = slm_bind_check_work(L, 8);
    luaL_argcheck(L, odim == a->dim && xdim == a->dim, 2, "buffer width differs from the model dim");
    luaL_argcheck(L, out != x, 2, "output aliases the input");
    luaL_argcheck(L, n == slm_seq_rows(seqs, n_seq) && n <= orows && n <= xrows, 7,
                  "row count differs from the batch's rows or exceeds the buffers");
    for (int i = 0; i < n_seq; i++) {
        const kv_ud *k = slm_bind_seq_state(L, 4, i, KV_MT, "a KV cache");
        if (!k->cache) return luaL_error(L, "attempt to use a freed session state");
        seqs[i].kv = k->cache;
        luaL_argcheck(L, layer >= 1 && layer <= seqs[i].kv->n_layer, 5, "layer out of range");
    }
    slm_error err = {0};
    if (slm_attn_forward_seqs(pool_or_raise(L), &a->b, seqs, n_seq, (int)layer - 1, x, out, a->dim, work,
                              &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

static int attn_forward(lua_State *L)
{
    attn_ud *a = check_attn(L, 1);
    if (luaL_testudata(L, 4, SLM_SEQBATCH_MT)) return attn_forward_seqs(L, a);
    int64_t orows, odim, xrows, xdim;
    float *out = slm_bind_check_buf(L, 2, &orows, &odim);
    float *x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    kv_ud *k = check_kv(L, 4);
    lua_Integer layer = luaL_checkinteger(L, 5), pos = luaL_checkinteger(L, 6);
    lua_Integer n = luaL_checkinteger(L, 7);
    const slm_work *work = slm_bind_check_work(L, 8);
    luaL_argcheck(L, odim == a->dim && xdim == a->dim, 2, "buffer width differs from the model dim");
    luaL_argcheck(L, out != x, 2, "output aliases the input");
    luaL_argcheck(L, layer >= 1 && layer <= k->cache->n_layer, 5, "layer out of range");
    luaL_argcheck(L, n >= 1 && n <= k->cache->n_batch && n <= orows && n <= xrows, 7,
                  "row count out of range");
    if (pos < 0 || pos + n > k->cache->n_ctx)
        return luaL_error(L, "context full: %I + %I tokens exceed n_ctx %d", (lua_Integer)pos,
                          (lua_Integer)n, k->cache->n_ctx);
    slm_error err = {0};
    if (slm_attn_forward(pool_or_raise(L), &a->b, k->cache, (int)layer - 1, (int)pos, (int)n, x,
                         out, a->dim, work, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

/* The arguments (out, x, work, n) at 2..5 of a block of width dim that
 * runs over rows 1..n of its buffers; returns n. */
typedef struct rows_call {
    float *out, *x;
    const slm_work *work;
} rows_call;

static int rows_args(lua_State *L, int64_t dim, rows_call *c)
{
    int64_t orows, odim, xrows, xdim;
    c->out = slm_bind_check_buf(L, 2, &orows, &odim);
    c->x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    c->work = slm_bind_check_work(L, 4);
    lua_Integer n = luaL_checkinteger(L, 5);
    luaL_argcheck(L, odim == dim && xdim == dim, 2, "buffer width differs from the model dim");
    luaL_argcheck(L, c->out != c->x, 2, "output aliases the input");
    luaL_argcheck(L, n >= 1 && n <= 65536 && n <= orows && n <= xrows, 5, "row count out of range");
    return (int)n;
}

/* blk:encode(out, x, work, n): an encoder block over rows 1..n */
static int attn_encode(lua_State *L)
{
    attn_ud *a = check_attn(L, 1);
    rows_call c;
    const int n = rows_args(L, a->dim, &c);
    slm_error err = {0};
    if (slm_attn_encode(pool_or_raise(L), &a->b, n, c.x, c.out, a->dim, c.work, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

static int ffn_forward(lua_State *L)
{
    ffn_ud *f = check_ffn(L, 1);
    rows_call c;
    const int n = rows_args(L, f->dim, &c);
    slm_error err = {0};
    if (slm_ffn_forward(pool_or_raise(L), &f->b, n, c.x, c.out, f->dim, c.work, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

static int l_embed(lua_State *L)
{
    int64_t rows, dim;
    float *x = slm_bind_check_buf(L, 1, &rows, &dim);
    slm_tensor *emb = slm_bind_check_tensor(L, 2);
    luaL_checktype(L, 3, LUA_TTABLE);
    lua_Integer first = luaL_checkinteger(L, 4), n = luaL_checkinteger(L, 5);
    luaL_argcheck(L, emb->ndim == 2 && emb->shape[1] == dim, 2, "embedding width differs from the buffer");
    luaL_argcheck(L, n >= 1 && n <= rows && n <= 65536, 5, "row count out of range");
    int32_t ids[256];
    for (lua_Integer done = 0; done < n; done += 256) {
        int m = (int)(n - done < 256 ? n - done : 256);
        for (int i = 0; i < m; i++) {
            int isnum;
            lua_Integer id = (lua_geti(L, 3, first + done + i), lua_tointegerx(L, -1, &isnum));
            lua_pop(L, 1);
            if (!isnum) return luaL_error(L, "token %I is not an integer", (lua_Integer)(first + done + i));
            if (id < 0 || id >= emb->shape[0])
                return luaL_error(L, "token id %I out of range 0..%I", (lua_Integer)id,
                                  (lua_Integer)emb->shape[0] - 1);
            ids[i] = (int32_t)id;
        }
        slm_error err = {0};
        if (slm_embed_rows(emb, ids, m, x + (size_t)done * (size_t)dim, &err) != SLM_OK)
            return slm_bind_error(L, &err);
    }
    return 0;
}

static int l_rmsnorm(lua_State *L)
{
    int64_t orows, odim, xrows, xdim;
    float *out = slm_bind_check_buf(L, 1, &orows, &odim);
    float *x = slm_bind_check_buf(L, 2, &xrows, &xdim);
    const float *w = check_vec(L, 3, xdim, "rmsnorm weight");
    float eps = (float)luaL_checknumber(L, 4);
    lua_Integer first = luaL_checkinteger(L, 5), n = luaL_checkinteger(L, 6);
    luaL_argcheck(L, odim == xdim, 1, "width differs from the input");
    check_rows(L, first, n, orows < xrows ? orows : xrows, 5);
    size_t off = (size_t)(first - 1) * (size_t)xdim;
    slm_ops_rmsnorm_rows(pool_or_raise(L), out + off, x + off, w, n, xdim, eps);
    return 0;
}

static int l_layernorm(lua_State *L)
{
    int64_t orows, odim, xrows, xdim;
    float *out = slm_bind_check_buf(L, 1, &orows, &odim);
    float *x = slm_bind_check_buf(L, 2, &xrows, &xdim);
    const float *w = check_vec(L, 3, xdim, "layernorm weight");
    const float *b = lua_isnil(L, 4) ? NULL : check_vec(L, 4, xdim, "layernorm bias");
    float eps = (float)luaL_checknumber(L, 5);
    lua_Integer first = luaL_checkinteger(L, 6), n = luaL_checkinteger(L, 7);
    luaL_argcheck(L, odim == xdim, 1, "width differs from the input");
    check_rows(L, first, n, orows < xrows ? orows : xrows, 6);
    size_t off = (size_t)(first - 1) * (size_t)xdim;
    slm_ops_layernorm_rows(pool_or_raise(L), out + off, x + off, w, b, n, xdim, eps);
    return 0;
}

static int l_add(lua_State *L)
{
    int64_t xrows, xdim, yrows, ydim;
    float *x = slm_bind_check_buf(L, 1, &xrows, &xdim);
    float *y = slm_bind_check_buf(L, 2, &yrows, &ydim);
    lua_Integer first = luaL_checkinteger(L, 3), n = luaL_checkinteger(L, 4);
    float alpha = (float)luaL_optnumber(L, 5, 1.0);
    luaL_argcheck(L, xdim == ydim, 2, "width differs");
    check_rows(L, first, n, xrows < yrows ? xrows : yrows, 3);
    size_t off = (size_t)(first - 1) * (size_t)xdim;
    slm_ops_add_rows(pool_or_raise(L), x + off, y + off, alpha, n, xdim);
    return 0;
}

/* rows first..first+n-1 of the buffer at 1, as (pointer, count) */
static float *rows_of(lua_State *L, int64_t *count)
{
    int64_t rows, dim;
    float *x = slm_bind_check_buf(L, 1, &rows, &dim);
    lua_Integer first = luaL_checkinteger(L, 3), n = luaL_checkinteger(L, 4);
    check_rows(L, first, n, rows, 3);
    *count = n * dim;
    return x + (size_t)(first - 1) * (size_t)dim;
}

static int l_scale(lua_State *L)
{
    float s = (float)luaL_checknumber(L, 2);
    int64_t count;
    float *x = rows_of(L, &count);
    slm_ops_scale(x, x, count, s);
    return 0;
}

static int l_softcap(lua_State *L)
{
    lua_Number c = luaL_checknumber(L, 2);
    luaL_argcheck(L, c > 0, 2, "soft cap must be positive");
    int64_t count;
    float *x = rows_of(L, &count);
    slm_ops_softcap(x, x, count, (float)c);
    return 0;
}

static int l_linear(lua_State *L)
{
    int64_t orows, odim, xrows, xdim;
    float *out = slm_bind_check_buf(L, 1, &orows, &odim);
    slm_tensor *W = slm_bind_check_tensor(L, 2);
    float *x = slm_bind_check_buf(L, 3, &xrows, &xdim);
    lua_Integer row = luaL_checkinteger(L, 4);
    luaL_argcheck(L, W->ndim == 2 && W->shape[1] == xdim && W->stride[1] == 1, 2,
                  "weight must be (N, K) with K the input width");
    luaL_argcheck(L, odim * orows >= W->shape[0], 1, "output too small");
    check_rows(L, row, 1, xrows, 4);
    slm_error err = {0};
    if (slm_matmul_w(pool_or_raise(L), out, W, -1, x + (size_t)(row - 1) * (size_t)xdim, 1, &err) != SLM_OK)
        return slm_bind_error(L, &err);
    return 0;
}

void slm_bind_open_blocks(lua_State *L)
{
    static const luaL_Reg attn_m[] = {{"forward", attn_forward}, {"encode", attn_encode},
                                      {"work_size", attn_work_size}, {NULL, NULL}};
    static const luaL_Reg ffn_m[] = {{"forward", ffn_forward}, {"work_size", ffn_work_size}, {NULL, NULL}};
    static const luaL_Reg kv_m[] = {{"bytes", kv_bytes}, {"rows", kv_rows}, {"snapshot", kv_snapshot},
                                    {"restore", kv_restore}, {"bytes_per_token", kv_bytes_per_token},
                                    {"kv_type", kv_type}, {NULL, NULL}};
    static const luaL_Reg work_m[] = {{"bytes", work_bytes}, {NULL, NULL}};
    slm_bind_new_meta(L, ATTN_MT, attn_gc, attn_m);
    slm_bind_new_meta(L, FFN_MT, ffn_gc, ffn_m);
    slm_bind_new_meta(L, KV_MT, kv_close, kv_m);
    slm_bind_new_meta(L, WORK_MT, work_close, work_m);
    static const luaL_Reg fns[] = {
        {"attention", l_attention}, {"ffn", l_ffn}, {"kv_state", l_kv_state},
        {"workspace", l_workspace}, {"embed", l_embed}, {"rmsnorm", l_rmsnorm},
        {"layernorm", l_layernorm}, {"add", l_add}, {"scale", l_scale}, {"softcap", l_softcap},
        {"linear", l_linear}, {NULL, NULL}};
    lua_newtable(L);
    luaL_setfuncs(L, fns, 0);
    lua_setfield(L, -2, "blocks");
}
