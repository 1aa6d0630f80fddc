/* Byte-exactness of the quantizers against files written by the reference
 * quantizer (llama-quantize, no importance matrix).
 *
 * For each (float file, quantized file) pair of the fixtures, every tensor
 * stored as F16/F32 in the float file and as a quantized type in the other
 * is converted to float32 row by row, quantized with slm's quantizer for
 * that type, and compared byte for byte with the reference's row - exactly
 * what llama-quantize does. Tensors kept in the same type (norms, small
 * tensors) are skipped. One check per tensor; a per-type summary line
 * "q4_k: N tensors compared, N matched". Fixtures are found through
 * SLM_FIXTURES (default ../shared/fixtures); absent files are skipped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/dtype.h"
#include "core/fp16.h"
#include "core/tensor.h"
#include "formats/gguf.h"

static int passed, failed;

/* The float file each quantized file was made from (the README of the
 * fixtures: dense and mamba from their f16 files; the rwkv7 files match
 * the f32 one - its f16 file holds an f16-rounded token embedding). */
static const struct { const char *src, *dst; } pairs[] = {
    {"dense-f16", "dense-q8_0"},   {"dense-f16", "dense-q4_0"},
    {"dense-f16", "dense-q4_1"},   {"dense-f16", "dense-q5_0"},
    {"dense-f16", "dense-q5_1"},   {"dense-f16", "dense-q2_k"},
    {"dense-f16", "dense-q3_k_m"}, {"dense-f16", "dense-q4_k_m"},
    {"dense-f16", "dense-q5_k_m"}, {"dense-f16", "dense-q6_k"},
    {"mamba-f16", "mamba-q8_0"},   {"mamba-f16", "mamba-q4_0"},
    {"mamba-f16", "mamba-q5_1"},   {"mamba-f16", "mamba-q4_k_m"},
    {"mamba-f16", "mamba-q6_k"},
    {"rwkv7-tiny-f32", "rwkv7-tiny-q8_0"}, {"rwkv7-tiny-f32", "rwkv7-tiny-q4_0"},
};

static const slm_dtype checked[] = {
    SLM_DTYPE_Q8_0, SLM_DTYPE_Q4_0, SLM_DTYPE_Q4_1, SLM_DTYPE_Q5_0, SLM_DTYPE_Q5_1,
    SLM_DTYPE_Q2_K, SLM_DTYPE_Q3_K, SLM_DTYPE_Q4_K, SLM_DTYPE_Q5_K, SLM_DTYPE_Q6_K,
};
#define N_CHECKED (sizeof checked / sizeof checked[0])

static int compared[N_CHECKED], matched[N_CHECKED];

static int checked_index(slm_dtype t)
{
    for (size_t i = 0; i < N_CHECKED; i++)
        if (checked[i] == t) return (int)i;
    return -1;
}

/* Quantizes tensor src (F16/F32) row by row to ref's dtype and compares
 * with ref's bytes. Returns 1 if every row matches, 0 if not, -1 on error
 * (reported). */
static int compare_tensor(const slm_gguf_tensor_info *si, const void *src,
                          const slm_gguf_tensor_info *qi, const void *ref)
{
    const slm_dtype_traits *st = slm_dtype_get((int)si->dtype);
    const slm_dtype_traits *qt = slm_dtype_get((int)qi->dtype);
    const int64_t ne0 = si->shape[si->ndim - 1];
    int64_t rows = 1;
    for (int d = 0; d < si->ndim - 1; d++) rows *= si->shape[d];
    int ok;
    const size_t qrow = slm_dtype_row_size(qi->dtype, ne0, &ok);
    if (!ok || qrow * (size_t)rows != qi->nbytes) {
        printf("FAIL: %s: row of %lld not a whole number of %s blocks\n", si->name,
               (long long)ne0, qt->name);
        return -1;
    }
    float *row = malloc((size_t)ne0 * sizeof *row);
    unsigned char *q = malloc(qrow);
    if (!row || !q) {
        free(row);
        free(q);
        printf("FAIL: out of memory\n");
        return -1;
    }
    int64_t bad_rows = 0;
    for (int64_t r = 0; r < rows; r++) {
        st->to_f32((const char *)src + (size_t)r * (size_t)ne0 * st->type_size, row, ne0);
        qt->from_f32(row, q, ne0);
        if (memcmp(q, (const char *)ref + (size_t)r * qrow, qrow) != 0) bad_rows++;
    }
    free(row);
    free(q);
    if (bad_rows)
        printf("FAIL: %s (%s): %lld of %lld rows differ\n", si->name, qt->name,
               (long long)bad_rows, (long long)rows);
    return bad_rows == 0;
}

static int same_shape(const slm_gguf_tensor_info *a, const slm_gguf_tensor_info *b)
{
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

static void run_pair(const char *dir, const char *src_stem, const char *dst_stem)
{
    char sp[4096], dp[4096];
    snprintf(sp, sizeof sp, "%s/gguf/%s.gguf", dir, src_stem);
    snprintf(dp, sizeof dp, "%s/gguf/%s.gguf", dir, dst_stem);
    slm_error err;
    slm_gguf *s = slm_gguf_open(sp, &err);
    if (!s) {
        printf("skip %s -> %s: %s\n", src_stem, dst_stem, err.msg);
        return;
    }
    slm_gguf *d = slm_gguf_open(dp, &err);
    if (!d) {
        printf("skip %s -> %s: %s\n", src_stem, dst_stem, err.msg);
        slm_gguf_close(s);
        return;
    }
    int n_pair = 0, ok_pair = 0;
    for (int64_t i = 0; i < slm_gguf_n_tensors(d); i++) {
        const slm_gguf_tensor_info *qi = slm_gguf_get_tensor_info(d, i);
        int ci = checked_index(qi->dtype);
        int64_t j = slm_gguf_find_tensor(s, qi->name);
        if (ci < 0 || j < 0) continue;
        const slm_gguf_tensor_info *si = slm_gguf_get_tensor_info(s, j);
        if (si->dtype != SLM_DTYPE_F16 && si->dtype != SLM_DTYPE_F32) continue;
        if (!same_shape(si, qi)) {
            failed++;
            printf("FAIL: %s: shapes differ between %s and %s\n", qi->name, src_stem, dst_stem);
            continue;
        }
        slm_tensor *st = slm_gguf_tensor(s, j, &err);
        slm_tensor *qt = st ? slm_gguf_tensor(d, i, &err) : NULL;
        int r = -1;
        if (st && qt) r = compare_tensor(si, slm_tensor_data(st), qi, slm_tensor_data(qt));
        else printf("FAIL: %s: %s\n", qi->name, err.msg);
        slm_tensor_free(st);
        slm_tensor_free(qt);
        compared[ci]++;
        n_pair++;
        if (r == 1) {
            matched[ci]++;
            ok_pair++;
            passed++;
        } else {
            failed++;
        }
    }
    printf("%s -> %s: %d tensors compared, %d matched\n", src_stem, dst_stem, n_pair, ok_pair);
    slm_gguf_close(d);
    slm_gguf_close(s);
}

int main(void)
{
    const char *dir = getenv("SLM_FIXTURES");
    if (!dir || !*dir) dir = "../shared/fixtures";
    char probe[4096];
    snprintf(probe, sizeof probe, "%s/gguf/dense-f16.gguf", dir);
    FILE *f = fopen(probe, "rb");
    if (!f) {
        printf("skip: fixtures not found (%s); set SLM_FIXTURES\n", probe);
        printf("0 passed, 0 failed\n");
        return 0;
    }
    fclose(f);
    for (size_t i = 0; i < sizeof pairs / sizeof pairs[0]; i++)
        run_pair(dir, pairs[i].src, pairs[i].dst);
    for (size_t i = 0; i < N_CHECKED; i++)
        printf("%s: %d tensors compared, %d matched\n", slm_dtype_name(checked[i]),
               compared[i], matched[i]);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
