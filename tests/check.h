/* What each C test program shares: the pass/fail counters, CHECK(cond,
 * fmt, ...) (a failed check prints "FAIL: " and the formatted message) and
 * the summary line tests/run.sh reads. */
#ifndef SLM_TESTS_CHECK_H
#define SLM_TESTS_CHECK_H

#include <math.h>
#include <stddef.h>
#include <stdio.h>

static int passed, failed;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

/* max |a - b| / max(floor, max |b|): a float result against a reference
 * (b double, or float in check_relerr_f); floor keeps an all-zero
 * reference from dividing by zero (each test chooses it) */
static inline double check_relerr(const float *a, const double *b, size_t n, double floor)
{
    double d = 0, m = floor;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs(b[i]));
    }
    return d / m;
}

static inline double check_relerr_f(const float *a, const float *b, size_t n, double floor)
{
    double d = 0, m = floor;
    for (size_t i = 0; i < n; i++) {
        d = fmax(d, fabs((double)a[i] - b[i]));
        m = fmax(m, fabs((double)b[i]));
    }
    return d / m;
}

/* Prints "N passed, N failed"; the exit status of main. */
static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}

#endif
