/* Helpers shared by the fuzz targets (see fuzz.h). */
#include "fuzz.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/tensor.h"
#include "tokenizer/tokenizer.h"

void fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("fuzz: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

const char *fuzz_file(const uint8_t *data, size_t size)
{
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("slm-fuzz", MFD_CLOEXEC);
        FUZZ_CHECK(fd >= 0, "memfd_create failed");
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    FUZZ_CHECK(ftruncate(fd, 0) == 0, "ftruncate failed");
    size_t done = 0;
    while (done < size) {
        ssize_t w = pwrite(fd, data + done, size - done, (off_t)done);
        FUZZ_CHECK(w > 0, "writing the in-memory file failed");
        done += (size_t)w;
    }
    return path;
}

int fuzz_inside(const void *base, size_t size, const void *p, size_t n)
{
    const char *b = base, *q = p;
    return q >= b && (size_t)(q - b) <= size && n <= size - (size_t)(q - b);
}

const char *fuzz_fixtures(void)
{
    static int done;
    static const char *dir;
    if (done) return dir;
    done = 1;
    const char *d = getenv("SLM_FIXTURES");
    if (!d || !*d) d = "../shared/fixtures";
    struct stat st;
    if (stat(d, &st) == 0 && S_ISDIR(st.st_mode)) dir = d;
    else fprintf(stderr, "fuzz: no fixtures at %s (set SLM_FIXTURES): built-in inputs only\n", d);
    return dir;
}

void fuzz_tensor_rows(const slm_tensor *t)
{
    int64_t cols = t->shape[t->ndim - 1], rows = slm_tensor_numel(t) / cols;
    if (cols > 4096) return;
    float *row = malloc(sizeof *row * (size_t)cols);
    if (!row) return;
    slm_error err;
    slm_tensor_row_f32(t, 0, row, &err);
    slm_tensor_row_f32(t, rows - 1, row, &err);
    free(row);
}

static const char sample[] = "Hello  world! 123 4567 <s></s><|endoftext|><|im_end|><unk> \xe2\x96\x81x "
                             "caf\xc3\xa9 Ca\xcc\x81" "f \xef\xac\x81 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x98\x80\n\t "
                             "don't I'm \xff\xc3";

void fuzz_tokenizer(slm_tok *(*load)(const char *path, slm_error *err), const char *path)
{
    slm_error err;
    slm_tok *tok = load(path, &err);
    if (!tok) {
        FUZZ_CHECK(err.code != SLM_OK && err.msg[0], "load failed without a message");
        return;
    }
    int32_t nv = slm_tok_n_vocab(tok);
    for (int flags = 0; flags < 4; flags++) {
        slm_tok_ids ids = {0};
        if (slm_tok_encode(tok, sample, sizeof sample - 1, flags & 1, flags >> 1, &ids, &err) != SLM_OK)
            continue;
        for (size_t i = 0; i < ids.n; i++)
            FUZZ_CHECK(ids.v[i] >= 0 && ids.v[i] < nv, "encode gave id %d of %d", ids.v[i], nv);
        char *out;
        size_t len;
        FUZZ_CHECK(slm_tok_decode(tok, ids.v, ids.n, flags & 1, &out, &len, &err) == SLM_OK,
                   "decode of encode's ids: %s", err.msg);
        free(out);
        slm_tok_stream *s = slm_tok_stream_new(tok, flags & 1, &err);
        if (s) {
            const char *piece;
            size_t pn;
            for (size_t i = 0; i < ids.n; i++)
                FUZZ_CHECK(slm_tok_stream_add(s, ids.v[i], &piece, &pn, &err) == SLM_OK,
                           "stream_add(%d): %s", ids.v[i], err.msg);
            slm_tok_stream_flush(s, &piece, &pn, &err);
            slm_tok_stream_free(s);
        }
        slm_tok_ids_free(&ids);
    }
    slm_tok_free(tok);
}

static char tmpdir[256];

static void remove_tmpdir(void)
{
    DIR *d = opendir(tmpdir);
    if (d) {
        struct dirent *e;
        char p[512];
        while ((e = readdir(d)))
            if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
                snprintf(p, sizeof p, "%s/%s", tmpdir, e->d_name);
                unlink(p);
            }
        closedir(d);
    }
    rmdir(tmpdir);
}

const char *fuzz_tmpdir(void)
{
    if (tmpdir[0]) return tmpdir;
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/slm-fuzz-XXXXXX", t && *t ? t : "/tmp");
    FUZZ_CHECK(mkdtemp(tmpdir) != NULL, "mkdtemp %s failed", tmpdir);
    atexit(remove_tmpdir);
    return tmpdir;
}
