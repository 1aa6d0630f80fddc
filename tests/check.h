/* What each C test program shares: the pass/fail counters, CHECK(cond,
 * fmt, ...) (a failed check prints "FAIL: " and the formatted message) and
 * the summary line tests/run.sh reads. */
#ifndef SLM_TESTS_CHECK_H
#define SLM_TESTS_CHECK_H

#include <stdio.h>

static int passed, failed;

#define CHECK(cond, ...)                                  \
    do {                                                  \
        if (cond) passed++;                               \
        else { failed++; printf("FAIL: " __VA_ARGS__); printf("\n"); } \
    } while (0)

/* Prints "N passed, N failed"; the exit status of main. */
static inline int check_summary(void)
{
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}

#endif
