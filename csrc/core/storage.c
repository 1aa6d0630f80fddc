#include "storage.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

static void release_heap(slm_storage *s) { free(s->data); }

static void release_map(slm_storage *s)
{
    if (s->data && s->size) munmap(s->data, s->size);
}

slm_storage *slm_storage_wrap(void *data, size_t size, int readonly,
                              void (*release)(slm_storage *), void *handle,
                              slm_error *err)
{
    slm_storage *s = malloc(sizeof *s);
    if (!s) {
        slm_error_set(err, SLM_ENOMEM, "out of memory");
        return NULL;
    }
    s->refcount = 1;
    s->data = data;
    s->size = size;
    s->readonly = readonly;
    s->release = release;
    s->handle = handle;
    s->flags = 0;
    return s;
}

slm_storage *slm_storage_alloc(size_t size, slm_error *err)
{
    /* round up so that aligned_alloc's size rule holds; at least one line */
    size_t alloc = (size + 63) & ~(size_t)63;
    if (alloc < size) {
        slm_error_set(err, SLM_ENOMEM, "cannot allocate %zu bytes", size);
        return NULL;
    }
    if (alloc == 0) alloc = 64;
    void *p = aligned_alloc(64, alloc);
    if (!p) {
        slm_error_set(err, SLM_ENOMEM, "cannot allocate %zu bytes", size);
        return NULL;
    }
    memset(p, 0, alloc);
    slm_storage *s = slm_storage_wrap(p, size, 0, release_heap, NULL, err);
    if (!s) free(p);
    return s;
}

slm_storage *slm_storage_map_file(const char *path, slm_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        slm_error_set(err, SLM_EIO, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        slm_error_set(err, SLM_EIO, "%s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        slm_error_set(err, SLM_EIO, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    void *p = NULL;
    if (size > 0) {
        p = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (p == MAP_FAILED) {
            slm_error_set(err, SLM_EIO, "%s: mmap: %s", path, strerror(errno));
            close(fd);
            return NULL;
        }
    }
    close(fd);
    slm_storage *s = slm_storage_wrap(p, size, 1, release_map, NULL, err);
    if (!s && p) munmap(p, size);
    return s;
}

slm_storage *slm_storage_ref(slm_storage *s)
{
    __atomic_add_fetch(&s->refcount, 1, __ATOMIC_RELAXED);
    return s;
}

void slm_storage_unref(slm_storage *s)
{
    if (!s) return;
    if (__atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        if (s->release) s->release(s);
        free(s);
    }
}

slm_status slm_file_replace(const char *path, int (*write)(FILE *f, void *ctx), void *ctx,
                            slm_error *err)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 5);
    if (!tmp) return slm_error_set(err, SLM_ENOMEM, "out of memory");
    memcpy(tmp, path, plen);
    memcpy(tmp + plen, ".tmp", 5);
    slm_status st = SLM_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        st = slm_error_set(err, SLM_EIO, "%s: %s", tmp, strerror(errno));
    } else {
        int ok = write(f, ctx);
        int saved = errno;
        if (fclose(f) != 0 && ok) {
            ok = 0;
            saved = errno;
        }
        if (!ok) {
            st = slm_error_set(err, SLM_EIO, "%s: write failed: %s", tmp, strerror(saved));
            remove(tmp);
        } else if (rename(tmp, path) != 0) {
            st = slm_error_set(err, SLM_EIO, "%s: %s", path, strerror(errno));
            remove(tmp);
        }
    }
    free(tmp);
    return st;
}
