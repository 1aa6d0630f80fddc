#include "llama2c.h"

#include <limits.h>
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
    c.dim = rd_i32(p); c.hidden_dim = rd_i32(p + 4); c.n_layers = rd_i32(p + 8);
    c.n_heads = rd_i32(p + 12); c.n_kv_heads = rd_i32(p + 16);
    c.vocab_size = rd_i32(p + 20); c.seq_len = rd_i32(p + 24);
    c.shared_classifier = c.vocab_size > 0;
    /* INT_MIN has no positive twin: it stays negative and is refused below
     * (negating it overflows) */
    if (c.vocab_size < 0 && c.vocab_size != INT_MIN) c.vocab_size = -c.vocab_size;
    const char *bad = NULL;
    /* generous limits keep every size product far from overflow */
    if (c.dim <= 0 || c.dim > 65536) bad = "dim";
    else if (c.hidden_dim <= 0 || c.hidden_dim > 1 << 18) bad = "hidden_dim";
    else if (c.n_layers <= 0 || c.n_layers > 1024) bad = "n_layers";
    else if (c.n_heads <= 0 || c.dim % c.n_heads != 0) bad = "n_heads";
    else if (c.n_kv_heads <= 0 || c.n_kv_heads > c.n_heads || c.n_heads % c.n_kv_heads) bad = "n_kv_heads";
    else if (c.vocab_size <= 0 || c.vocab_size > 1 << 22) bad = "vocab_size";
    else if (c.seq_len <= 0 || c.seq_len > 1 << 22) bad = "seq_len";
    else if ((c.dim / c.n_heads) % 2) bad = "n_heads (head size must be even)";
    if (bad) {
        slm_error_set(err, SLM_EFORMAT, "%s: llama2.c header: invalid %s", path, bad);
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
    if (off > map->size) {
        slm_error_set(err, SLM_EFORMAT,
                      "%s: truncated llama2.c file: the header implies %zu bytes, the file has %zu",
                      path, off, map->size);
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
