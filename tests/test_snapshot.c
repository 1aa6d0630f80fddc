/* The state snapshots' common header (core/snapshot.h) and the Mamba and
 * RWKV states' snapshots (blocks/mamba.h, blocks/rwkv.h): round trips, the
 * layouts of earlier versions, and every refusal, which must leave the state
 * as it was. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocks/mamba.h"
#include "blocks/rwkv.h"
#include "core/snapshot.h"

static int passed, failed;
#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

static const char KIND[4] = {'T', 'E', 'S', 'T'};

static void test_header(void)
{
    const int64_t dims[2] = {3, 17};
    unsigned char buf[64 + 8];
    unsigned char *body = slm_snap_put_header(buf, KIND, 5, 42, 2, dims);
    CHECK(body - buf == 40 && slm_snap_header_size(2) == 40, "header of 2 dims is 40 bytes");
    memset(body, 0xab, 8);
    slm_snap s;
    slm_error err = {0};
    CHECK(slm_snap_parse(buf, 48, KIND, 5, "a test state", 2, &s, &err) == SLM_OK && s.n_past == 42 &&
          s.dims[0] == 3 && s.dims[1] == 17 && s.body == body && s.body_len == 8, "parse: %s", err.msg);
    CHECK(slm_snap_check_dims(&s, dims, (const char *const[]){"a", "b"}, "a test state", &err) == SLM_OK,
          "same dims");
    const int64_t other[2] = {3, 16};
    CHECK(slm_snap_check_dims(&s, other, (const char *const[]){"n_layer", "dim"}, "a test state", &err) == SLM_EINVAL &&
          strcmp(err.msg, "restore: snapshot of a test state with n_layer 3, dim 17; this one has n_layer 3, "
                          "dim 16") == 0, "other dims: %s", err.msg);
    CHECK(slm_snap_check_len(&s, 8, "a test state", &err) == SLM_OK, "length");
    CHECK(slm_snap_check_len(&s, 12, "a test state", &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: truncated snapshot of a test state (8 bytes of state, 12 expected)") == 0,
          "short body: %s", err.msg);
    CHECK(slm_snap_check_len(&s, 4, "a test state", &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: corrupt snapshot of a test state (8 bytes of state, 4 expected)") == 0,
          "long body: %s", err.msg);
    /* refusals of the header itself */
    CHECK(slm_snap_parse("garbage", 7, KIND, 5, "a test state", 2, &s, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: not an slm state snapshot") == 0, "garbage: %s", err.msg);
    CHECK(slm_snap_parse(buf, 48, "MAMB", 5, "a mamba state", 2, &s, &err) == SLM_EINVAL &&
          strcmp(err.msg, "restore: snapshot of a state slm does not know, not of a mamba state") == 0,
          "unknown kind: %s", err.msg);
    CHECK(slm_snap_parse(buf, 48, KIND, 6, "a test state", 2, &s, &err) == SLM_EUNSUPPORTED &&
          strcmp(err.msg, "restore: snapshot of a test state of version 5 (this slm reads 6)") == 0,
          "version: %s", err.msg);
    CHECK(slm_snap_parse(buf, 48, KIND, 5, "a test state", 3, &s, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: corrupt snapshot of a test state (n_past 42, 2 dims)") == 0, "n_dim: %s", err.msg);
    CHECK(slm_snap_parse(buf, 39, KIND, 5, "a test state", 2, &s, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: truncated snapshot of a test state") == 0, "cut in the dims: %s", err.msg);
    const int64_t neg = -3;
    memcpy(buf + 16, &neg, 8);
    CHECK(slm_snap_parse(buf, 48, KIND, 5, "a test state", 2, &s, &err) == SLM_EFORMAT &&
          strstr(err.msg, "n_past -3"), "negative n_past: %s", err.msg);
}

/* a state filled with recognizable values */
static void fill(float *p, size_t n, float base)
{
    for (size_t i = 0; i < n; i++) p[i] = base + (float)i * 0.5f;
}

static void test_mamba(void)
{
    slm_error err = {0};
    slm_mamba_shape h = {.version = 1, .dim = 8, .d_inner = 16, .d_conv = 4, .d_state = 4, .dt_rank = 2,
                         .n_group = 1, .eps = 1e-5f};
    slm_mamba_state *a = slm_mamba_state_new(3, &h, &err), *b = slm_mamba_state_new(3, &h, &err);
    slm_mamba_shape h2 = h;
    h2.d_state = 8;
    slm_mamba_state *c = slm_mamba_state_new(3, &h2, &err);
    if (!a || !b || !c) { CHECK(0, "mamba states: %s", err.msg); return; }
    const size_t nc = slm_mamba_state_conv_len(a), ns = slm_mamba_state_ssm_len(a);
    fill(a->conv, nc, 1.0f);
    fill(a->ssm, ns, -7.0f);
    size_t sz = slm_mamba_snapshot_size(a);
    CHECK(sz == 64 + (nc + ns) * 4, "mamba snapshot: header + floats");
    unsigned char *snap = malloc(sz + 4);
    slm_mamba_snapshot(a, 11, snap);
    CHECK(memcmp(snap, "SLMSMAMB", 8) == 0, "mamba snapshot magic and kind");
    int np = -1;
    CHECK(slm_mamba_restore(b, snap, sz, &np, &err) == SLM_OK && np == 11 &&
          memcmp(a->conv, b->conv, nc * 4) == 0 && memcmp(a->ssm, b->ssm, ns * 4) == 0, "round trip: %s", err.msg);
    /* refusals leave c as it was */
    fill(c->conv, slm_mamba_state_conv_len(c), 3.0f);
    CHECK(slm_mamba_restore(c, snap, sz, &np, &err) == SLM_EINVAL &&
          strcmp(err.msg, "restore: snapshot of a mamba state with n_layer 3, conv channels 16, d_inner 16, "
                          "d_conv 4, d_state 4; this one has n_layer 3, conv channels 16, d_inner 16, d_conv 4, "
                          "d_state 8") == 0, "other shape: %s", err.msg);
    CHECK(slm_mamba_restore(b, snap, sz - 1, &np, &err) == SLM_EFORMAT &&
          strstr(err.msg, "restore: truncated snapshot of a mamba state ("), "truncated: %s", err.msg);
    CHECK(slm_mamba_restore(b, snap, 30, &np, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: truncated snapshot of a mamba state") == 0, "cut in the header: %s", err.msg);
    CHECK(slm_mamba_restore(b, "garbage", 7, &np, &err) == SLM_EFORMAT &&
          strcmp(err.msg, "restore: not an slm state snapshot") == 0, "garbage: %s", err.msg);
    float c0 = c->conv[0];
    CHECK(c0 == 3.0f, "refused restores wrote nothing");
    /* an RWKV snapshot into a mamba state */
    slm_rwkv_state *r = slm_rwkv_state_new(SLM_RWKV_V7, 2, 16, 2, 32, 0, 1, &err);
    if (r) {
        size_t rs = slm_rwkv_snapshot_size(r);
        unsigned char *rb = malloc(rs);
        slm_rwkv_snapshot(r, 2, rb);
        CHECK(slm_mamba_restore(b, rb, rs, &np, &err) == SLM_EINVAL &&
              strcmp(err.msg, "restore: snapshot of an RWKV state, not of a mamba state") == 0, "rwkv into mamba: %s",
              err.msg);
        free(rb);
        slm_rwkv_state_free(r);
    }
    /* the layout before the common header (Snapshot:save files of earlier
     * versions): "SLMMB1" | int32 n_layer, conv_ch, d_inner, d_conv, d_state,
     * n_past | the same floats */
    unsigned char *old = malloc(32 + (nc + ns) * 4);
    const int32_t oh[6] = {3, 16, 16, 4, 4, 9};
    memcpy(old, "SLMMB1\0\0", 8);
    memcpy(old + 8, oh, sizeof oh);
    memcpy(old + 32, a->conv, nc * 4);
    memcpy(old + 32 + nc * 4, a->ssm, ns * 4);
    slm_mamba_state_clear(b);
    CHECK(slm_mamba_restore(b, old, 32 + (nc + ns) * 4, &np, &err) == SLM_OK && np == 9 &&
          memcmp(a->conv, b->conv, nc * 4) == 0 && memcmp(a->ssm, b->ssm, ns * 4) == 0, "SLMMB1: %s", err.msg);
    CHECK(slm_mamba_restore(c, old, 32 + (nc + ns) * 4, &np, &err) == SLM_EINVAL && strstr(err.msg, "d_state 8"),
          "SLMMB1 of another shape: %s", err.msg);
    free(old);
    free(snap);
    slm_mamba_state_free(a);
    slm_mamba_state_free(b);
    slm_mamba_state_free(c);
}

static void test_rwkv(void)
{
    slm_error err = {0};
    slm_rwkv_state *a = slm_rwkv_state_new(SLM_RWKV_V6, 2, 16, 2, 32, 8, 1, &err);
    slm_rwkv_state *b = slm_rwkv_state_new(SLM_RWKV_V6, 2, 16, 2, 32, 8, 1, &err);
    slm_rwkv_state *c = slm_rwkv_state_new(SLM_RWKV_V7, 2, 16, 2, 32, 8, 1, &err);
    if (!a || !b || !c) { CHECK(0, "rwkv states: %s", err.msg); return; }
    const size_t n = slm_rwkv_state_floats(a);
    fill(a->s, n, 2.0f);
    size_t sz = slm_rwkv_snapshot_size(a);
    CHECK(sz == 56 + n * 4, "rwkv snapshot: header + floats");
    unsigned char *snap = malloc(sz);
    slm_rwkv_snapshot(a, 5, snap);
    int np = -1;
    CHECK(slm_rwkv_restore(b, snap, sz, &np, &err) == SLM_OK && np == 5 && memcmp(a->s, b->s, n * 4) == 0,
          "round trip: %s", err.msg);
    slm_rwkv_state_reset(c);
    CHECK(slm_rwkv_restore(c, snap, sz, &np, &err) == SLM_EINVAL &&
          strcmp(err.msg, "restore: snapshot of an RWKV state with version 60, n_layer 2, dim 16, n_head 2; this "
                          "one has version 70, n_layer 2, dim 16, n_head 2") == 0, "v6 into v7: %s", err.msg);
    CHECK(slm_rwkv_restore(b, snap, sz - 4, &np, &err) == SLM_EFORMAT &&
          strstr(err.msg, "restore: truncated snapshot of an RWKV state ("), "truncated: %s", err.msg);
    CHECK(c->s[0] == 0.0f, "refused restores wrote nothing");
    /* "SLMRWKV1" | int32 version, n_layer, dim, n_head, n_past | floats */
    unsigned char *old = malloc(28 + n * 4);
    const int32_t oh[5] = {60, 2, 16, 2, 13};
    memcpy(old, "SLMRWKV1", 8);
    memcpy(old + 8, oh, sizeof oh);
    memcpy(old + 28, a->s, n * 4);
    slm_rwkv_state_reset(b);
    CHECK(slm_rwkv_restore(b, old, 28 + n * 4, &np, &err) == SLM_OK && np == 13 && memcmp(a->s, b->s, n * 4) == 0,
          "SLMRWKV1: %s", err.msg);
    CHECK(slm_rwkv_restore(b, old, 28 + n * 4 + 1, &np, &err) == SLM_EFORMAT &&
          strstr(err.msg, "restore: corrupt snapshot of an RWKV state ("), "SLMRWKV1 with a trailing byte: %s", err.msg);
    free(old);
    free(snap);
    slm_rwkv_state_free(a);
    slm_rwkv_state_free(b);
    slm_rwkv_state_free(c);
}

int main(void)
{
    test_header();
    test_mamba();
    test_rwkv();
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
