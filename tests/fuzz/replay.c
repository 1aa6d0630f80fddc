/* Replays a fuzz target's regression inputs without libFuzzer: linked with
 * one tests/fuzz/fuzz_NAME.c into $(BUILD)/tests/test_fuzz_NAME, it runs
 * LLVMFuzzerTestOneInput on the empty input and on every file of
 * tests/fuzz/regress/NAME/ (or of the directories given as arguments),
 * each in a child process, so that a crash is one failure among the
 * others. Prints "ok"/"FAIL" per input and "N passed, N failed".
 * FUZZ_TARGET (the NAME) is set by the Makefile. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

#ifndef FUZZ_TARGET
#error "FUZZ_TARGET must name the target"
#endif

static int passed, failed;

static unsigned char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    unsigned char *b = malloc(cap);
    while (b) {
        n += fread(b + n, 1, cap - n, f);
        if (n < cap) break;
        unsigned char *nb = realloc(b, cap * 2);
        if (!nb) {
            free(b);
            b = NULL;
            break;
        }
        b = nb;
        cap *= 2;
    }
    fclose(f);
    *len = n;
    return b;
}

/* Runs one input (path NULL: the empty input) in a child process. */
static void run(const char *path, const char *label)
{
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        printf("FAIL %s: fork failed\n", label);
        failed++;
        return;
    }
    if (pid == 0) {
        alarm(120);   /* a hang is a failure too */
        size_t n = 0;
        unsigned char *data = path ? slurp(path, &n) : malloc(1);
        if (!data) {
            fprintf(stderr, "%s: cannot read\n", label);
            exit(2);
        }
        LLVMFuzzerTestOneInput(data, n);
        free(data);
        exit(0);
    }
    int st;
    while (waitpid(pid, &st, 0) < 0) {}
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        printf("ok %s\n", label);
        passed++;
    } else {
        if (WIFSIGNALED(st)) printf("FAIL %s: signal %d (%s)\n", label, WTERMSIG(st), strsignal(WTERMSIG(st)));
        else printf("FAIL %s: exit status %d\n", label, WEXITSTATUS(st));
        failed++;
    }
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) {
        printf("%s: no regression inputs\n", dir);
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !strcmp(e->d_name, "README")) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 32;
            char **nn = realloc(names, cap * sizeof *nn);
            if (!nn) break;
            names = nn;
        }
        if (!(names[n] = strdup(e->d_name))) break;
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, cmp_str);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        run(path, path);
        free(names[i]);
    }
    free(names);
}

int main(int argc, char **argv)
{
    printf("fuzz target %s: regression inputs\n", FUZZ_TARGET);
    run(NULL, FUZZ_TARGET ": the empty input");
    if (argc > 1)
        for (int i = 1; i < argc; i++) run_dir(argv[i]);
    else
        run_dir("tests/fuzz/regress/" FUZZ_TARGET);
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
