/* `slm.core.ops` (matmul and the float ops) and `slm.core.threads`.
 *
 * Every op validates its tensors here, before any allocation, and raises
 * "ops.NAME: problem" on misuse. Functions return a new f32 tensor; the
 * variants ending in `_` work in place on their first argument and return
 * it. Results are created (owned by a Lua userdata) before the kernel runs,
 * so an error can never leak them. */
#include <string.h>

#include "../core/pool.h"
#include "../kernels/matmul.h"
#include "../kernels/ops.h"
#include "../kernels/vecdot.h"
#include "bind.h"

/* The tensor at idx, which must be f32 and contiguous. */
static slm_tensor *check_f32(lua_State *L, int idx, const char *fn, const char *what)
{
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    if (t->dtype != SLM_DTYPE_F32)
        luaL_error(L, "ops.%s: %s must be an f32 tensor (got %s)", fn, what, slm_dtype_name(t->dtype));
    if (!slm_tensor_is_contiguous(t))
        luaL_error(L, "ops.%s: %s must be contiguous (call :contiguous())", fn, what);
    return t;
}

/* Like check_f32 for an argument that may be nil (returns NULL). */
static slm_tensor *opt_f32(lua_State *L, int idx, const char *fn, const char *what)
{
    return lua_isnoneornil(L, idx) ? NULL : check_f32(L, idx, fn, what);
}

static void check_writable(lua_State *L, const slm_tensor *t, const char *fn)
{
    if (t->storage->readonly) luaL_error(L, "ops.%s: tensor is read-only (clone() it first)", fn);
}

/* A new f32 tensor shaped like t (pushed), or t itself for in-place ops. */
static slm_tensor *result_like(lua_State *L, int idx, const slm_tensor *t, int inplace)
{
    if (inplace) {
        lua_pushvalue(L, idx);
        return (slm_tensor *)t;
    }
    slm_error err;
    slm_tensor *r = slm_tensor_new(SLM_DTYPE_F32, t->ndim, t->shape, &err);
    if (!r) slm_bind_error(L, &err);
    slm_bind_push_tensor(L, r);
    return r;
}

static int64_t last_dim(const slm_tensor *t)
{
    return t->shape[t->ndim - 1];
}

/* ---- matmul --------------------------------------------------------------- */

/* matmul(W, X [, out]): W (N, K) of any supported dtype, X f32 (..., K)
 * -> (..., N); into out (f32, contiguous, X's leading dims and N) when
 * given, which avoids an allocation per call in a forward pass */
static int l_matmul(lua_State *L)
{
    slm_tensor *W = slm_bind_check_tensor(L, 1);
    slm_tensor *X = check_f32(L, 2, "matmul", "X");
    if (W->ndim != 2)
        return luaL_error(L, "ops.matmul: W must be 2-D (N, K), got %d-D", W->ndim);
    if (last_dim(X) != W->shape[1])
        return luaL_error(L, "ops.matmul: X rows have %I elements but W has K = %I",
                          (lua_Integer)last_dim(X), (lua_Integer)W->shape[1]);
    int64_t shape[SLM_MAX_DIMS];
    memcpy(shape, X->shape, sizeof shape);
    shape[X->ndim - 1] = W->shape[0];
    slm_error err;
    slm_tensor *out;
    if (!lua_isnoneornil(L, 3)) {
        out = check_f32(L, 3, "matmul", "out");
        if (out->ndim != X->ndim || memcmp(out->shape, shape, sizeof(int64_t) * (size_t)X->ndim))
            return luaL_error(L, "ops.matmul: out must have X's shape with last dim N = %I",
                              (lua_Integer)W->shape[0]);
        check_writable(L, out, "matmul");
        lua_pushvalue(L, 3);
    } else {
        out = slm_tensor_new(SLM_DTYPE_F32, X->ndim, shape, &err);
        if (!out) return slm_bind_error(L, &err);
        slm_bind_push_tensor(L, out);
    }
    if (slm_matmul(out, W, X, &err) != SLM_OK) {
        lua_pushfstring(L, "ops.%s", err.msg);
        return lua_error(L);
    }
    return 1;
}

/* ---- elementwise ----------------------------------------------------------- */

typedef void (*binary_fn)(float *, const float *, int64_t, const float *, int64_t);

/* a op b with b of a's shape or a row vector of a's last dim */
static int binary(lua_State *L, const char *fn, binary_fn op, int inplace)
{
    slm_tensor *a = check_f32(L, 1, fn, "a");
    slm_tensor *b = check_f32(L, 2, fn, "b");
    const int64_t na = slm_tensor_numel(a), nb = slm_tensor_numel(b);
    int same = a->ndim == b->ndim && !memcmp(a->shape, b->shape, sizeof(int64_t) * (size_t)a->ndim);
    if (!same && !(b->ndim == 1 && nb == last_dim(a)))
        return luaL_error(L, "ops.%s: b must have a's shape or be a vector of its last dim (%I), got %I elements",
                          fn, (lua_Integer)last_dim(a), (lua_Integer)nb);
    if (inplace) check_writable(L, a, fn);
    slm_tensor *r = result_like(L, 1, a, inplace);
    op(slm_tensor_data(r), slm_tensor_data(a), na, slm_tensor_data(b), nb);
    return 1;
}

static int l_add(lua_State *L) { return binary(L, "add", slm_ops_add, 0); }
static int l_add_(lua_State *L) { return binary(L, "add", slm_ops_add, 1); }
static int l_mul(lua_State *L) { return binary(L, "mul", slm_ops_mul, 0); }
static int l_mul_(lua_State *L) { return binary(L, "mul", slm_ops_mul, 1); }

static int scale(lua_State *L, int inplace)
{
    slm_tensor *a = check_f32(L, 1, "scale", "a");
    float s = (float)luaL_checknumber(L, 2);
    if (inplace) check_writable(L, a, "scale");
    slm_tensor *r = result_like(L, 1, a, inplace);
    slm_ops_scale(slm_tensor_data(r), slm_tensor_data(a), slm_tensor_numel(a), s);
    return 1;
}

static int l_scale(lua_State *L) { return scale(L, 0); }
static int l_scale_(lua_State *L) { return scale(L, 1); }

typedef void (*unary_fn)(float *, const float *, int64_t);

static int unary(lua_State *L, const char *fn, unary_fn op, int inplace)
{
    slm_tensor *x = check_f32(L, 1, fn, "x");
    if (inplace) check_writable(L, x, fn);
    slm_tensor *r = result_like(L, 1, x, inplace);
    op(slm_tensor_data(r), slm_tensor_data(x), slm_tensor_numel(x));
    return 1;
}

static int l_silu(lua_State *L) { return unary(L, "silu", slm_ops_silu, 0); }
static int l_silu_(lua_State *L) { return unary(L, "silu", slm_ops_silu, 1); }
static int l_gelu(lua_State *L) { return unary(L, "gelu", slm_ops_gelu, 0); }
static int l_gelu_(lua_State *L) { return unary(L, "gelu", slm_ops_gelu, 1); }
static int l_gelu_erf(lua_State *L) { return unary(L, "gelu_erf", slm_ops_gelu_erf, 0); }
static int l_gelu_erf_(lua_State *L) { return unary(L, "gelu_erf", slm_ops_gelu_erf, 1); }

static int softmax(lua_State *L, int inplace)
{
    slm_tensor *x = check_f32(L, 1, "softmax", "x");
    if (inplace) check_writable(L, x, "softmax");
    slm_tensor *r = result_like(L, 1, x, inplace);
    if (!inplace) memcpy(slm_tensor_data(r), slm_tensor_data(x), slm_tensor_nbytes(x));
    const int64_t n = last_dim(x);
    slm_ops_softmax(slm_tensor_data(r), slm_tensor_numel(x) / n, n);
    return 1;
}

static int l_softmax(lua_State *L) { return softmax(L, 0); }
static int l_softmax_(lua_State *L) { return softmax(L, 1); }

/* ---- pooling ---------------------------------------------------------------- */

/* mean_rows(x) -> (n): the mean of the rows of x (..., n) */
static int l_mean_rows(lua_State *L)
{
    slm_tensor *x = check_f32(L, 1, "mean_rows", "x");
    const int64_t n = last_dim(x);
    slm_error err;
    slm_tensor *r = slm_tensor_new(SLM_DTYPE_F32, 1, &n, &err);
    if (!r) return slm_bind_error(L, &err);
    slm_bind_push_tensor(L, r);
    slm_ops_mean_rows(slm_tensor_data(r), slm_tensor_data(x), n ? slm_tensor_numel(x) / n : 0, n);
    return 1;
}

/* l2norm(x): each row of x over its Euclidean length */
static int l2norm(lua_State *L, int inplace)
{
    slm_tensor *x = check_f32(L, 1, "l2norm", "x");
    if (inplace) check_writable(L, x, "l2norm");
    slm_tensor *r = result_like(L, 1, x, inplace);
    const int64_t n = last_dim(x);
    slm_ops_l2norm(slm_tensor_data(r), slm_tensor_data(x), n ? slm_tensor_numel(x) / n : 0, n);
    return 1;
}

static int l_l2norm(lua_State *L) { return l2norm(L, 0); }
static int l_l2norm_(lua_State *L) { return l2norm(L, 1); }

/* ---- norms ------------------------------------------------------------------ */

static void check_vec(lua_State *L, const slm_tensor *v, int64_t n, const char *fn, const char *what)
{
    if (v && slm_tensor_numel(v) != n)
        luaL_error(L, "ops.%s: %s must have %I elements (the last dim of x), got %I", fn, what,
                   (lua_Integer)n, (lua_Integer)slm_tensor_numel(v));
}

static float check_eps(lua_State *L, int idx, const char *fn)
{
    lua_Number eps = luaL_optnumber(L, idx, 1e-5);
    if (!(eps >= 0)) luaL_error(L, "ops.%s: eps must be >= 0", fn);
    return (float)eps;
}

/* rmsnorm(x [, w [, eps = 1e-5]]) */
static int rmsnorm(lua_State *L, int inplace)
{
    slm_tensor *x = check_f32(L, 1, "rmsnorm", "x");
    slm_tensor *w = opt_f32(L, 2, "rmsnorm", "w");
    const int64_t n = last_dim(x);
    check_vec(L, w, n, "rmsnorm", "w");
    float eps = check_eps(L, 3, "rmsnorm");
    if (inplace) check_writable(L, x, "rmsnorm");
    slm_tensor *r = result_like(L, 1, x, inplace);
    slm_ops_rmsnorm(slm_tensor_data(r), slm_tensor_data(x), w ? slm_tensor_data(w) : NULL,
                    slm_tensor_numel(x) / n, n, eps);
    return 1;
}

static int l_rmsnorm(lua_State *L) { return rmsnorm(L, 0); }
static int l_rmsnorm_(lua_State *L) { return rmsnorm(L, 1); }

/* layernorm(x [, w [, b [, eps = 1e-5]]]) */
static int layernorm(lua_State *L, int inplace)
{
    slm_tensor *x = check_f32(L, 1, "layernorm", "x");
    slm_tensor *w = opt_f32(L, 2, "layernorm", "w");
    slm_tensor *b = opt_f32(L, 3, "layernorm", "b");
    const int64_t n = last_dim(x);
    check_vec(L, w, n, "layernorm", "w");
    check_vec(L, b, n, "layernorm", "b");
    float eps = check_eps(L, 4, "layernorm");
    if (inplace) check_writable(L, x, "layernorm");
    slm_tensor *r = result_like(L, 1, x, inplace);
    slm_ops_layernorm(slm_tensor_data(r), slm_tensor_data(x), w ? slm_tensor_data(w) : NULL,
                      b ? slm_tensor_data(b) : NULL, slm_tensor_numel(x) / n, n, eps);
    return 1;
}

static int l_layernorm(lua_State *L) { return layernorm(L, 0); }
static int l_layernorm_(lua_State *L) { return layernorm(L, 1); }

/* ---- rope ------------------------------------------------------------------- */

/* Positions from a table of integers or a tensor of seq elements, into a
 * buffer owned by a userdata pushed on the stack. */
static int64_t *check_positions(lua_State *L, int idx, int64_t seq)
{
    int64_t *pos = lua_newuserdatauv(L, sizeof(int64_t) * (size_t)seq, 0);
    if (lua_istable(L, idx)) {
        if ((int64_t)lua_rawlen(L, idx) != seq)
            luaL_error(L, "ops.rope: %I positions for %I tokens", (lua_Integer)lua_rawlen(L, idx),
                       (lua_Integer)seq);
        for (int64_t i = 0; i < seq; i++) {
            lua_rawgeti(L, idx, (lua_Integer)i + 1);
            int isint;
            lua_Integer p = lua_tointegerx(L, -1, &isint);
            if (!isint) luaL_error(L, "ops.rope: position %I is not an integer", (lua_Integer)i + 1);
            pos[i] = p;
            lua_pop(L, 1);
        }
        return pos;
    }
    if (!luaL_testudata(L, idx, SLM_TENSOR_MT))
        luaL_error(L, "ops.rope: positions must be a table or a tensor (got %s)", luaL_typename(L, idx));
    slm_tensor *t = slm_bind_check_tensor(L, idx);
    if (slm_tensor_numel(t) != seq)
        luaL_error(L, "ops.rope: %I positions for %I tokens", (lua_Integer)slm_tensor_numel(t),
                   (lua_Integer)seq);
    if (t->ndim != 1) luaL_error(L, "ops.rope: the positions tensor must be 1-D");
    for (int64_t i = 0; i < seq; i++) {
        double v;
        slm_error err;
        if (slm_tensor_get(t, &i, &v, &err) != SLM_OK) slm_bind_error(L, &err);
        if (v != (double)(int64_t)v) luaL_error(L, "ops.rope: position %I is not an integer", (lua_Integer)i + 1);
        pos[i] = (int64_t)v;
    }
    return pos;
}

static lua_Number opt_field(lua_State *L, int idx, const char *key, lua_Number def)
{
    lua_Number v = def;
    if (lua_getfield(L, idx, key) != LUA_TNIL) {
        int ok;
        v = lua_tonumberx(L, -1, &ok);
        if (!ok) luaL_error(L, "ops.rope: option '%s' must be a number", key);
    }
    lua_pop(L, 1);
    return v;
}

/* rope(x, pos [, {mode = "normal"|"neox", base = 10000, scale = 1, n_rot = head_dim}])
 * x: (seq, heads, head_dim); base is freq_base, scale is freq_scale (the
 * inverse of a linear RoPE scaling factor) */
static int rope(lua_State *L, int inplace)
{
    slm_tensor *x = check_f32(L, 1, "rope", "x");
    if (x->ndim != 3) return luaL_error(L, "ops.rope: x must be 3-D (seq, heads, head_dim), got %d-D", x->ndim);
    const int64_t seq = x->shape[0], heads = x->shape[1], hd = x->shape[2];
    if (hd > 1 << 20) return luaL_error(L, "ops.rope: head_dim %I too large", (lua_Integer)hd);
    slm_rope_params p = {.mode = SLM_ROPE_NORMAL, .n_rot = (int)hd, .freq_base = 10000.0f, .freq_scale = 1.0f};
    if (!lua_isnoneornil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        if (lua_getfield(L, 3, "mode") != LUA_TNIL) {
            const char *m = lua_tostring(L, -1);
            if (m && !strcmp(m, "neox")) p.mode = SLM_ROPE_NEOX;
            else if (!m || strcmp(m, "normal"))
                return luaL_error(L, "ops.rope: mode must be \"normal\" or \"neox\"");
        }
        lua_pop(L, 1);
        p.freq_base = (float)opt_field(L, 3, "base", 10000);
        p.freq_scale = (float)opt_field(L, 3, "scale", 1);
        lua_Number nr = opt_field(L, 3, "n_rot", (lua_Number)hd);
        if (nr != (lua_Number)(int)nr || nr < 2 || nr > (lua_Number)hd || (int)nr % 2)
            return luaL_error(L, "ops.rope: n_rot must be an even integer in 2..%I", (lua_Integer)hd);
        p.n_rot = (int)nr;
    }
    if (p.n_rot < 2 || p.n_rot % 2)
        return luaL_error(L, "ops.rope: head_dim must be even (got %I)", (lua_Integer)hd);
    if (!(p.freq_base > 0)) return luaL_error(L, "ops.rope: base must be > 0");
    const int64_t *pos = check_positions(L, 2, seq);
    if (inplace) check_writable(L, x, "rope");
    slm_tensor *r = result_like(L, 1, x, inplace);
    if (!inplace) memcpy(slm_tensor_data(r), slm_tensor_data(x), slm_tensor_nbytes(x));
    slm_ops_rope(slm_tensor_data(r), seq, heads, hd, pos, &p);
    return 1;
}

static int l_rope(lua_State *L) { return rope(L, 0); }
static int l_rope_(lua_State *L) { return rope(L, 1); }

/* ---- threads ---------------------------------------------------------------- */

/* blas_core() -> the OpenBLAS kernel family in use ("Haswell", "SkylakeX", ...) */
static int l_blas_core(lua_State *L)
{
    lua_pushstring(L, slm_matmul_blas_core());
    return 1;
}

/* kernels([name]) -> the kernel tier in use ("avx512", "avx2", "generic"),
 * after capping it at name (benchmarks and tests comparing tiers) */
static int l_kernels(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        static const char *const names[] = {"generic", "avx2", "avx512", NULL};
        slm_kernels_set_level(luaL_checkoption(L, 1, NULL, names));
    }
    lua_pushstring(L, slm_kernels_level_name(slm_kernels_level()));
    return 1;
}

/* threads([n]) -> size of the default pool, after setting it to n */
static int l_threads(lua_State *L)
{
    if (!lua_isnoneornil(L, 1)) {
        lua_Integer n = luaL_checkinteger(L, 1);
        luaL_argcheck(L, n >= 1 && n <= SLM_POOL_MAX_THREADS, 1, "thread count out of range");
        slm_error err;
        if (slm_pool_set_threads((int)n, &err) != SLM_OK) return slm_bind_error(L, &err);
    }
    lua_pushinteger(L, slm_pool_threads());
    return 1;
}

/* __gc of a registry sentinel: joins the pool's threads when the Lua state
 * closes (finalized before the module's shared library is unloaded, which
 * was registered earlier) */
static int pool_gc(lua_State *L)
{
    (void)L;
    slm_pool_shutdown();
    return 0;
}

/* matmul_bytes([reset]) -> bytes of weights the products read (since the
 * last reset; reset = true returns them and starts again) */
static int l_matmul_bytes(lua_State *L)
{
    lua_pushinteger(L, (lua_Integer)slm_matmul_weight_bytes(lua_toboolean(L, 1)));
    return 1;
}

static const luaL_Reg ops_functions[] = {
    {"matmul", l_matmul}, {"matmul_bytes", l_matmul_bytes},
    {"add", l_add}, {"add_", l_add_},
    {"mul", l_mul}, {"mul_", l_mul_},
    {"scale", l_scale}, {"scale_", l_scale_},
    {"rmsnorm", l_rmsnorm}, {"rmsnorm_", l_rmsnorm_},
    {"layernorm", l_layernorm}, {"layernorm_", l_layernorm_},
    {"mean_rows", l_mean_rows}, {"l2norm", l_l2norm}, {"l2norm_", l_l2norm_},
    {"softmax", l_softmax}, {"softmax_", l_softmax_},
    {"silu", l_silu}, {"silu_", l_silu_},
    {"gelu", l_gelu}, {"gelu_", l_gelu_},
    {"gelu_erf", l_gelu_erf}, {"gelu_erf_", l_gelu_erf_},
    {"rope", l_rope}, {"rope_", l_rope_},
    {NULL, NULL}
};

/* Sets core.ops, core.threads, core.blas_core and core.kernels. */
void slm_bind_open_kernels(lua_State *L)
{
    luaL_newlib(L, ops_functions);
    lua_setfield(L, -2, "ops");
    lua_pushcfunction(L, l_threads);
    lua_setfield(L, -2, "threads");
    lua_pushcfunction(L, l_blas_core);
    lua_setfield(L, -2, "blas_core");
    lua_pushcfunction(L, l_kernels);
    lua_setfield(L, -2, "kernels");
    if (lua_getfield(L, LUA_REGISTRYINDEX, "slm.pool_sentinel") == LUA_TNIL) {
        lua_newuserdatauv(L, 1, 0);
        lua_newtable(L);
        lua_pushcfunction(L, pool_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_setfield(L, LUA_REGISTRYINDEX, "slm.pool_sentinel");
    }
    lua_pop(L, 1);
}
