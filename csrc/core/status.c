#include "status.h"

#include <stdarg.h>
#include <stdio.h>

slm_status slm_error_set(slm_error *err, slm_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

const char *slm_status_name(slm_status s)
{
    switch (s) {
    case SLM_OK: return "ok";
    case SLM_ENOMEM: return "out of memory";
    case SLM_EIO: return "i/o error";
    case SLM_EFORMAT: return "bad format";
    case SLM_EINVAL: return "invalid argument";
    case SLM_ERANGE: return "out of range";
    case SLM_EUNSUPPORTED: return "unsupported";
    }
    return "unknown status";
}
