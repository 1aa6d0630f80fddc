/* Status codes and error messages of the C core.
 *
 * The core never exits or aborts on user input: every fallible function
 * returns an slm_status and, when given a non-NULL slm_error, fills it with a
 * human-readable message naming what was wrong (file, field, problem).
 * Bindings turn the message into a Lua error or a `nil, msg` pair. */
#ifndef SLM_STATUS_H
#define SLM_STATUS_H

#include <stddef.h>

typedef enum slm_status {
    SLM_OK = 0,
    SLM_ENOMEM,       /* allocation failed */
    SLM_EIO,          /* open/read/mmap/write failed (errno in the message) */
    SLM_EFORMAT,      /* malformed or hostile file content */
    SLM_EINVAL,       /* invalid argument (shape, dtype, index...) */
    SLM_ERANGE,       /* index or size out of range / overflow */
    SLM_EUNSUPPORTED  /* valid but not supported (unknown dtype, version) */
} slm_status;

typedef struct slm_error {
    slm_status code;
    char msg[512];
} slm_error;

/* Formats the message into err (if non-NULL) and returns code. */
slm_status slm_error_set(slm_error *err, slm_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

const char *slm_status_name(slm_status s);

#endif
