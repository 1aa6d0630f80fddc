#include "llama2c.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct l2c_tensor {
    char name[48];
    int ndim;
    int64_t shape[2];
    size_t offset;          /* bytes into the file */
} l2c_tensor;

struct slm_llama2c {
    slm_storage *map;
    slm_llama2c_config cfg;
    int n_tensors;
    l2c_tensor *tensors;
};

static int32_t rd_i32(const unsigned char *p)
{
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Appends a tensor at *off and advances it; checks the file size later. */
static void add(slm_llama2c *m, size_t *off, const char *name, int64_t rows, int64_t cols)
{
    l2c_tensor *t = &m->tensors[m->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = rows ? 2 : 1;
    if (rows) { t->shape[0] = rows; t->shape[1] = cols; }
    else t->shape[0] = cols;
    t->offset = *off;
    *off += (size_t)(rows ? rows : 1) * (size_t)cols * 4;
}

/* Per-layer tensors are stored layer-major as one block per kind. */
static void add_layers(slm_llama2c *m, size_t *off, const char *kind, int64_t rows, int64_t cols)
{
    char name[48];
    for (int l = 0; l < m->cfg.n_layers; l++) {
        snprintf(name, sizeof name, "blk.%d.%s.weight", l, kind);
        add(m, off, name, rows, cols);
    }
}

/* The export script's versioned formats (llama2.c export.py version 1 and
 * 2) start with this magic ("ak42") and a 256-byte header. */
#define L2C_VERSIONED_MAGIC 0x616b3432

/* The header's fields against their ranges and each other. The limits are
 * generous (65536-wide, 1024 layers, 4M tokens) and keep every size product
 * far from overflow; the sizes are then checked against the file. */
static slm_status check_config(const char *path, const slm_llama2c_config *c, slm_error *err)
{
    static const char *const names[] = {"dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads",
                                        "vocab_size", "seq_len"};
    const int v[7] = {c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->vocab_size,
                      c->seq_len};
    static const int max[7] = {65536, 1 << 18, 1024, 65536, 65536, 1 << 22, 1 << 22};
    for (int i = 0; i < 7; i++)
        if (v[i] < 1 || v[i] > max[i])   /* vocab_size: its magnitude, as stored with its sign */
            return slm_error_set(err, SLM_EFORMAT, "%s: llama2.c header: %s is %lld (expected 1..%d%s)",
                                 path, names[i],
                                 i == 5 && !c->shared_classifier && v[i] != INT32_MIN ? -(long long)v[i]
                                                                                     : (long long)v[i],
                                 max[i], i == 5 ? ", negative for an unshared classifier" : "");
    if (c->dim % c->n_heads != 0)
        return slm_error_set(err, SLM_EFORMAT, "%s: llama2.c header: n_heads %d does not divide dim %d",
                             path, c->n_heads, c->dim);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return slm_error_set(err, SLM_EFORMAT, "%s: llama2.c header: n_kv_heads %d does not divide "
                             "n_heads %d", path, c->n_kv_heads, c->n_heads);
    if ((c->dim / c->n_heads) % 2)
        return slm_error_set(err, SLM_EFORMAT, "%s: llama2.c header: dim %d / n_heads %d gives heads "
                             "of %d (RoPE needs an even size)", path, c->dim, c->n_heads,
                             c->dim / c->n_heads);
    return SLM_OK;
}

slm_llama2c *slm_llama2c_open(const char *path, slm_error *err)
{
    slm_storage *map = slm_storage_map_file(path, err);
    if (!map) return NULL;
    if (map->size < 28) {
        slm_error_set(err, SLM_EFORMAT, "%s: file too short for a llama2.c header (%zu bytes)",
                      path, map->size);
        slm_storage_unref(map);
        return NULL;
    }
    slm_llama2c_config c;
    const unsigned char *p = map->data;
    if ((uint32_t)rd_i32(p) == L2C_VERSIONED_MAGIC) {
        slm_error_set(err, SLM_EUNSUPPORTED, "%s: llama2.c export version %d is not supported "
                      "(only the legacy version 0 checkpoints)", path, (int)rd_i32(p + 4));
        slm_storage_unref(map);
        return NULL;
    }
    c.dim = rd_i32(p); c.hidden_dim = rd_i32(p + 4); c.n_layers = rd_i32(p + 8);
    c.n_heads = rd_i32(p + 12); c.n_kv_heads = rd_i32(p + 16);
    c.vocab_size = rd_i32(p + 20); c.seq_len = rd_i32(p + 24);
    c.shared_classifier = c.vocab_size > 0;
    /* negative: the classifier follows the weights (INT32_MIN stays out of range) */
    if (c.vocab_size < 0 && c.vocab_size != INT32_MIN) c.vocab_size = -c.vocab_size;
    if (check_config(path, &c, err) != SLM_OK) {
        slm_storage_unref(map);
        return NULL;
    }
    slm_llama2c *m = calloc(1, sizeof *m);
    int cap = 3 + 9 * c.n_layers + 1;
    if (m) m->tensors = calloc((size_t)cap, sizeof *m->tensors);
    if (!m || !m->tensors) {
        if (m) free(m);
        slm_storage_unref(map);
        slm_error_set(err, SLM_ENOMEM, "out of memory");
        return NULL;
    }
    m->map = map;
    m->cfg = c;
    int64_t head = c.dim / c.n_heads, kv_dim = head * c.n_kv_heads;
    size_t off = 28;
    add(m, &off, "token_embd.weight", c.vocab_size, c.dim);
    add_layers(m, &off, "attn_norm", 0, c.dim);
    add_layers(m, &off, "attn_q", c.dim, c.dim);
    add_layers(m, &off, "attn_k", kv_dim, c.dim);
    add_layers(m, &off, "attn_v", kv_dim, c.dim);
    add_layers(m, &off, "attn_output", c.dim, c.dim);
    add_layers(m, &off, "ffn_norm", 0, c.dim);
    add_layers(m, &off, "ffn_gate", c.hidden_dim, c.dim);    /* w1 */
    add_layers(m, &off, "ffn_down", c.dim, c.hidden_dim);    /* w2 */
    add_layers(m, &off, "ffn_up", c.hidden_dim, c.dim);      /* w3 */
    add(m, &off, "output_norm.weight", 0, c.dim);
    off += (size_t)c.seq_len * (size_t)head * 4;   /* freq_cis_real + imag */
    if (!c.shared_classifier) add(m, &off, "output.weight", c.vocab_size, c.dim);
    /* The export writes exactly these bytes: any other size means a header
     * that does not describe the weights (seq_len sizes the RoPE tables, so
     * it is checked here too). Extra bytes the size of a classifier are a
     * shared/unshared mix-up, which the sign of vocab_size tells. */
    size_t cls = (size_t)c.vocab_size * (size_t)c.dim * 4;
    if (off != map->size) {
        if (c.shared_classifier && map->size > off && map->size - off == cls)
            slm_error_set(err, SLM_EFORMAT, "%s: llama2.c header: vocab_size %d says the classifier "
                          "is shared, but the file holds one more (%d, %d) matrix: an unshared "
                          "classifier is written as vocab_size -%d", path, c.vocab_size, c.vocab_size,
                          c.dim, c.vocab_size);
        else
            slm_error_set(err, SLM_EFORMAT, "%s: llama2.c header (dim %d, hidden_dim %d, n_layers %d, "
                          "n_heads %d, n_kv_heads %d, vocab_size %d, seq_len %d) describes %zu bytes, "
                          "the file has %zu", path, c.dim, c.hidden_dim, c.n_layers, c.n_heads,
                          c.n_kv_heads, c.shared_classifier ? c.vocab_size : -c.vocab_size, c.seq_len,
                          off, map->size);
        slm_llama2c_close(m);
        return NULL;
    }
    return m;
}

void slm_llama2c_close(slm_llama2c *m)
{
    if (!m) return;
    slm_storage_unref(m->map);
    free(m->tensors);
    free(m);
}

const slm_llama2c_config *slm_llama2c_config_get(const slm_llama2c *m) { return &m->cfg; }
int slm_llama2c_n_tensors(const slm_llama2c *m) { return m->n_tensors; }

const char *slm_llama2c_tensor_name(const slm_llama2c *m, int i)
{
    return i >= 0 && i < m->n_tensors ? m->tensors[i].name : NULL;
}

slm_tensor *slm_llama2c_tensor(const slm_llama2c *m, int i, slm_error *err)
{
    if (i < 0 || i >= m->n_tensors) {
        slm_error_set(err, SLM_ERANGE, "tensor index %d out of range", i);
        return NULL;
    }
    const l2c_tensor *t = &m->tensors[i];
    return slm_tensor_from_storage(m->map, t->offset, SLM_DTYPE_F32, t->ndim, t->shape, err);
}
