/* RWKV "world" vocabularies: greedy longest match over a byte trie, as
 * llama.cpp's llm_tokenizer_rwkv. GGUF stores each token escaped the way
 * Python prints bytes (\t \n \r \xNN \\); the trie holds the real bytes.
 * A byte that starts no token becomes the unknown id (if any). */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct tnode { int32_t child, sibling, value; uint8_t byte; } tnode;

struct slm_trie {
    tnode *v;
    size_t n, cap;
    char *bytes;            /* unescaped pieces back to back */
    uint32_t *off, *len;    /* by id */
};

void slm_trie_free(struct slm_trie *tr)
{
    if (!tr) return;
    free(tr->v);
    free(tr->bytes);
    free(tr->off);
    free(tr->len);
    free(tr);
}

static int32_t new_node(struct slm_trie *tr, uint8_t b)
{
    if (tr->n == tr->cap) {
        size_t cap = tr->cap ? tr->cap * 2 : 4096;
        tnode *v = realloc(tr->v, sizeof *v * cap);
        if (!v) return -1;
        tr->v = v;
        tr->cap = cap;
    }
    tr->v[tr->n] = (tnode){-1, -1, -1, b};
    return (int32_t)tr->n++;
}

static int32_t child(const struct slm_trie *tr, int32_t node, uint8_t b)
{
    for (int32_t c = tr->v[node].child; c >= 0; c = tr->v[c].sibling)
        if (tr->v[c].byte == b) return c;
    return -1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Unescapes s into out (at most n bytes); returns the length. */
static size_t unescape(const char *s, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            out[k++] = s[i];
            continue;
        }
        char c = s[++i];
        if (c == 't') out[k++] = '\t';
        else if (c == 'n') out[k++] = '\n';
        else if (c == 'r') out[k++] = '\r';
        else if (c == 'x' && i + 2 < n && hexval(s[i + 1]) >= 0 && hexval(s[i + 2]) >= 0) {
            out[k++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
            i += 2;
        } else out[k++] = c;
    }
    return k;
}

slm_status slm_rwkv_build(slm_tok *t, slm_error *err)
{
    struct slm_trie *tr = calloc(1, sizeof *tr);
    if (!tr) goto oom;
    t->trie = tr;
    tr->bytes = malloc(t->str.nbytes + 1);
    tr->off = malloc(sizeof *tr->off * (size_t)t->n_vocab);
    tr->len = malloc(sizeof *tr->len * (size_t)t->n_vocab);
    if (!tr->bytes || !tr->off || !tr->len || new_node(tr, 0) < 0) goto oom;
    size_t k = 0;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        size_t n;
        const char *s = slm_strtab_str(&t->str, id, &n);
        size_t m = unescape(s, n, tr->bytes + k);
        tr->off[id] = (uint32_t)k;
        tr->len[id] = (uint32_t)m;
        int32_t node = 0;
        for (size_t i = 0; i < m; i++) {
            uint8_t b = (uint8_t)tr->bytes[k + i];
            int32_t c = child(tr, node, b);
            if (c < 0) {
                if ((c = new_node(tr, b)) < 0) goto oom;
                tr->v[c].sibling = tr->v[node].child;
                tr->v[node].child = c;
            }
            node = c;
        }
        if (m && tr->v[node].value < 0) tr->v[node].value = id;
        k += m;
    }
    return SLM_OK;
oom:
    return slm_error_set(err, SLM_ENOMEM, "tokenizer: out of memory");
}

const char *slm_rwkv_piece(const slm_tok *t, int32_t id, size_t *len)
{
    *len = t->trie->len[id];
    return t->trie->bytes + t->trie->off[id];
}

slm_status slm_rwkv_encode(const slm_tok *t, const char *s, size_t n,
                           slm_tok_ids *out, slm_error *err)
{
    const struct slm_trie *tr = t->trie;
    size_t pos = 0;
    while (pos < n) {
        int32_t node = 0, best = -1;
        size_t best_end = pos + 1;
        for (size_t i = pos; i < n; i++) {
            node = child(tr, node, (uint8_t)s[i]);
            if (node < 0) break;
            if (tr->v[node].value >= 0) {
                best = tr->v[node].value;
                best_end = i + 1;
            }
        }
        if (best < 0) best = t->special[SLM_TOK_UNK];
        if (best >= 0 && slm_tok_ids_push(out, best, err)) return SLM_ENOMEM;
        pos = best_end;
    }
    return SLM_OK;
}
