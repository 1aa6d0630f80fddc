/* A host program embedding Lua 5.4 and slm, as a game or tool engine would:
 * a frame loop that gives text generation a time slice per frame.
 *
 *   build/host [options] MODEL
 *     --frames N       frames of the loop (200)
 *     --frame-ms MS    nominal frame length; the rest of a frame is slept (16)
 *     --budget MS      generation budget per frame (4)
 *     --max-tokens N   tokens to generate (64)
 *     --prompt TEXT    ("Once upon a time")
 *     --cancel-at F    second run, cancelled at frame F (0: none; default frames/4)
 *     --threads N      then N pthreads, each with its own Lua state loading
 *                      the model and generating the same greedy text (0: none)
 *     --pool N         threads of the frame loop's pool (slm.threads; 0: one
 *                      per core); the N pthreads get cores / N each
 *     --root DIR       slm checkout (lua/, models/, examples/host/host.lua) (.)
 *
 * Each frame calls the script's frame(budget) through lua_pcall and times
 * the call here, in C: that is what the frame loses. The output is one
 * "key value..." line per result, for people and for spec/70-host_spec.lua.
 *
 * slm is linked in statically (the binding objects and libslm.a) and
 * registered in package.preload as "slm.core", so the binary does not need
 * build/slm/core.so; the Lua half of slm is read from DIR/lua.
 *
 * Threading rules (README.md, "Embedding slm in a host program"): a Lua
 * state is used by one thread at a time; each thread gets its own Lua state,
 * model handle and session. The model file is mapped read-only, so the
 * weights of N states are in memory once (the page cache); every thread
 * runs kernels on its own default pool. */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int luaopen_slm_core(lua_State *L);   /* csrc/bind/l_core.c */

typedef struct {
    const char *model, *prompt, *root;
    int frames, max_tokens, cancel_at, threads, pool;
    double frame_ms, budget_ms;
} config;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* CPU time of the calling thread: a step's wall time minus the time the
 * OS ran other processes (on a loaded machine the two differ) */
static double cpu_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms)
{
    if (ms <= 0) return;
    struct timespec ts = {(time_t)(ms / 1e3), (long)((ms - (double)(time_t)(ms / 1e3) * 1e3) * 1e6)};
    nanosleep(&ts, NULL);
}

/* A Lua state with slm preloaded and the script's table in the registry
 * under "host"; NULL after printing why. */
static lua_State *host_state(const config *c)
{
    lua_State *L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "host: cannot create a Lua state\n");
        return NULL;
    }
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_slm_core);
    lua_setfield(L, -2, "slm.core");
    lua_pop(L, 1);
    lua_getglobal(L, "package");
    lua_pushfstring(L, "%s/lua/?.lua;%s/lua/?/init.lua;%s/?.lua", c->root, c->root, c->root);
    lua_setfield(L, -2, "path");
    lua_pop(L, 1);
    char script[4096];
    snprintf(script, sizeof script, "%s/examples/host/host.lua", c->root);
    if (luaL_dofile(L, script) != LUA_OK || !lua_istable(L, -1)) {
        fprintf(stderr, "host: %s: %s\n", script, lua_isstring(L, -1) ? lua_tostring(L, -1) : "no table");
        lua_close(L);
        return NULL;
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "host");
    return L;
}

/* Pushes host[name]. */
static void get_fn(lua_State *L, const char *name)
{
    lua_getfield(L, LUA_REGISTRYINDEX, "host");
    lua_getfield(L, -1, name);
    lua_remove(L, -2);
}

/* Calls the function on the stack with nargs arguments; on error prints
 * it and returns 0. */
static int call(lua_State *L, int nargs, int nres, const char *what)
{
    if (lua_pcall(L, nargs, nres, 0) != LUA_OK) {
        fprintf(stderr, "host: %s: %s\n", what, lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    return 1;
}

/* Pushes {model=, prompt=, max_tokens=}. */
static void push_opts(lua_State *L, const config *c)
{
    lua_createtable(L, 0, 3);
    lua_pushstring(L, c->model);
    lua_setfield(L, -2, "model");
    lua_pushstring(L, c->prompt);
    lua_setfield(L, -2, "prompt");
    lua_pushinteger(L, c->max_tokens);
    lua_setfield(L, -2, "max_tokens");
}

static int set_threads(lua_State *L, int n)
{
    get_fn(L, "threads");
    lua_pushinteger(L, n);
    return call(L, 1, 0, "threads");
}

static int start(lua_State *L, const config *c)
{
    get_fn(L, "start");
    push_opts(L, c);
    return call(L, 1, 0, "start");
}

/* One frame's slice; returns the status ("running", "done", "cancelled")
 * as a static string, NULL on error; *piece_len gets the slice's length. */
static const char *frame(lua_State *L, double budget_ms, size_t *piece_len)
{
    get_fn(L, "frame");
    lua_pushnumber(L, budget_ms);
    if (!call(L, 1, 2, "frame")) return NULL;
    size_t len = 0;
    lua_tolstring(L, -2, &len);
    const char *st = lua_tostring(L, -1);
    const char *res = !st ? NULL
                      : strcmp(st, "running") == 0 ? "running"
                      : strcmp(st, "done") == 0 ? "done"
                      : strcmp(st, "cancelled") == 0 ? "cancelled" : NULL;
    lua_pop(L, 2);
    *piece_len = len;
    return res;
}

/* Returns a malloc'd copy of the string returned by host[name](opts?). */
static char *string_call(lua_State *L, const char *name, const config *with_opts)
{
    get_fn(L, name);
    if (with_opts) push_opts(L, with_opts);
    if (!call(L, with_opts ? 1 : 0, 1, name)) return NULL;
    size_t n;
    const char *s = lua_tolstring(L, -1, &n);
    char *r = s ? malloc(n + 1) : NULL;
    if (r) memcpy(r, s, n + 1);
    lua_pop(L, 1);
    return r;
}

static void token_stats(lua_State *L, double *ms_token, double *ms_prompt, long *tokens)
{
    get_fn(L, "stats");
    if (!call(L, 0, 3, "stats")) return;
    *ms_token = lua_tonumber(L, -3);
    *ms_prompt = lua_tonumber(L, -2);
    *tokens = (long)lua_tointeger(L, -1);
    lua_pop(L, 3);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The frame loop: generation stepped with the budget, cancelled at frame
 * cancel_at (0: never). Prints the step times of the frames in which the
 * generator was running. Returns 0 on error. */
static int frame_loop(lua_State *L, const config *c, int cancel_at, const char *label, const char *reference)
{
    double *dt = calloc(2 * (size_t)c->frames, sizeof *dt);
    if (!dt || !start(L, c)) {
        free(dt);
        return 0;
    }
    double *cpu = dt + c->frames;
    int n = 0, end_frame = 0, empty_after_cancel = 1;
    const char *status = "running";
    size_t text_len = 0;
    for (int f = 1; f <= c->frames; f++) {
        double t0 = now_ms(), c0 = cpu_ms();
        size_t len = 0;
        const char *st = frame(L, c->budget_ms, &len);
        double t1 = now_ms(), c1 = cpu_ms();
        if (!st) {
            free(dt);
            return 0;
        }
        if (strcmp(status, "running") == 0) {
            cpu[n] = c1 - c0;
            dt[n++] = t1 - t0;
            text_len += len;
            if (strcmp(st, "running") != 0) end_frame = f;
        } else if (len != 0) {
            empty_after_cancel = 0;
        }
        status = st;
        if (f == cancel_at && strcmp(status, "running") == 0) {
            get_fn(L, "cancel");
            if (!call(L, 0, 0, "cancel")) {
                free(dt);
                return 0;
            }
        }
        sleep_ms(c->frame_ms - (now_ms() - t0));   /* the rest of the frame */
    }
    double ms_token = 0, ms_prompt = 0;
    long tokens = 0;
    token_stats(L, &ms_token, &ms_prompt, &tokens);
    double sum = 0, csum = 0, bound = c->budget_ms + ms_token;
    int over = 0, over_cpu = 0;
    for (int i = 0; i < n; i++) {
        sum += dt[i];
        csum += cpu[i];
        if (dt[i] > bound) over++;
        if (cpu[i] > bound) over_cpu++;
    }
    qsort(dt, (size_t)n, sizeof *dt, cmp_double);
    qsort(cpu, (size_t)n, sizeof *cpu, cmp_double);
    int i99 = n > 0 ? (int)((99 * (long)n + 99) / 100) - 1 : 0;
    printf("%s budget_ms %.2f frames %d running_frames %d end_frame %d status %s\n", label, c->budget_ms,
           c->frames, n, end_frame, status);
    if (n > 0) {
        printf("%s step_ms max %.3f p99 %.3f mean %.3f median %.3f\n", label, dt[n - 1], dt[i99], sum / n,
               dt[n / 2]);
        printf("%s step_cpu_ms max %.3f p99 %.3f mean %.3f median %.3f\n", label, cpu[n - 1], cpu[i99],
               csum / n, cpu[n / 2]);
    }
    printf("%s token_ms %.3f prompt_token_ms %.3f tokens %ld over_budget_plus_token %d cpu %d\n", label,
           ms_token, ms_prompt, tokens, over, over_cpu);
    char *text = string_call(L, "text", NULL);
    if (!text) {
        free(dt);
        return 0;
    }
    size_t rl = reference ? strlen(reference) : 0;
    printf("%s text_len %zu slices_len %zu\n", label, strlen(text), text_len);
    if (reference) {
        if (strcmp(status, "cancelled") == 0)
            printf("%s prefix_of_generate %s empty_after_cancel %s\n", label,
                   strlen(text) < rl && strncmp(text, reference, strlen(text)) == 0 ? "yes" : "no",
                   empty_after_cancel ? "yes" : "no");
        else
            printf("%s equals_generate %s\n", label, strcmp(text, reference) == 0 ? "yes" : "no");
    }
    free(text);
    free(dt);
    return 1;
}

/* ---- threads ---------------------------------------------------------------- */

typedef struct {
    const config *c;
    int pool_threads;
    pthread_barrier_t *loaded, *measured;
    char *text;
    double ms;
    int ok;
} thread_arg;

/* Each thread: its own Lua state, model and session; steps the generation
 * to its end in budget slices (no sleeping), then waits while the main
 * thread measures memory with every model loaded. */
static void *thread_main(void *varg)
{
    thread_arg *a = varg;
    lua_State *L = host_state(a->c);
    if (L && set_threads(L, a->pool_threads) && start(L, a->c)) {
        double t0 = now_ms();
        const char *st;
        size_t len;
        while ((st = frame(L, a->c->budget_ms, &len)) && strcmp(st, "running") == 0) continue;
        a->ms = now_ms() - t0;
        a->text = st ? string_call(L, "text", NULL) : NULL;
        a->ok = a->text != NULL;
    }
    pthread_barrier_wait(a->loaded);
    pthread_barrier_wait(a->measured);
    if (L) lua_close(L);
    return NULL;
}

/* Rss, Pss, Pss_Anon and Pss_File of the process in kB (-1 if unknown). */
static void memory_kb(long v[4])
{
    static const char *keys[4] = {"Rss:", "Pss:", "Pss_Anon:", "Pss_File:"};
    for (int i = 0; i < 4; i++) v[i] = -1;
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f))
        for (int i = 0; i < 4; i++)
            if (strncmp(line, keys[i], strlen(keys[i])) == 0) v[i] = atol(line + strlen(keys[i]));
    fclose(f);
}

static int run_threads(const config *c, const char *reference)
{
    int n = c->threads;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int per = cpus > n ? (int)(cpus / n) : 1;
    thread_arg *a = calloc((size_t)n, sizeof *a);
    pthread_t *t = calloc((size_t)n, sizeof *t);
    pthread_barrier_t loaded, measured;
    if (!a || !t) {
        free(a);
        free(t);
        fprintf(stderr, "host: out of memory\n");
        return 0;
    }
    long before[4], after[4];
    memory_kb(before);
    pthread_barrier_init(&loaded, NULL, (unsigned)n + 1);
    pthread_barrier_init(&measured, NULL, (unsigned)n + 1);
    int started = 0;
    for (int i = 0; i < n; i++) {
        a[i] = (thread_arg){c, per, &loaded, &measured, NULL, 0, 0};
        if (pthread_create(&t[i], NULL, thread_main, &a[i]) != 0) break;
        started++;
    }
    int ok = started == n;
    if (ok) {
        pthread_barrier_wait(&loaded);
        memory_kb(after);
        pthread_barrier_wait(&measured);
    } else {
        fprintf(stderr, "host: cannot start %d threads\n", n);
        /* the started threads wait on barriers sized for n: not joinable */
        exit(1);
    }
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    int agree = 0;
    for (int i = 0; i < n; i++) {
        if (!a[i].ok) ok = 0;
        else if (reference && strcmp(a[i].text, reference) == 0) agree++;
        printf("thread %d pool_threads %d ms %.1f text_len %zu equals_single_thread %s\n", i + 1, per, a[i].ms,
               a[i].text ? strlen(a[i].text) : 0,
               a[i].text && reference && strcmp(a[i].text, reference) == 0 ? "yes" : "no");
        free(a[i].text);
    }
    printf("threads %d agree %d\n", n, agree);
    printf("memory_kb before rss %ld pss %ld pss_anon %ld pss_file %ld\n", before[0], before[1], before[2],
           before[3]);
    printf("memory_kb with_%d_more_states rss %ld pss %ld pss_anon %ld pss_file %ld\n", n, after[0], after[1],
           after[2], after[3]);
    pthread_barrier_destroy(&loaded);
    pthread_barrier_destroy(&measured);
    free(a);
    free(t);
    return ok;
}

static void usage(void)
{
    fprintf(stderr, "usage: host [--frames N] [--frame-ms MS] [--budget MS] [--max-tokens N] [--prompt TEXT]\n"
                    "            [--cancel-at F] [--threads N] [--pool N] [--root DIR] MODEL\n");
    exit(2);
}

int main(int argc, char **argv)
{
    config c = {NULL, "Once upon a time", ".", 200, 64, -1, 0, 0, 16.0, 4.0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (a[0] != '-') {
            c.model = a;
            continue;
        }
        if (!v) usage();
        i++;
        if (strcmp(a, "--frames") == 0) c.frames = atoi(v);
        else if (strcmp(a, "--frame-ms") == 0) c.frame_ms = atof(v);
        else if (strcmp(a, "--budget") == 0) c.budget_ms = atof(v);
        else if (strcmp(a, "--max-tokens") == 0) c.max_tokens = atoi(v);
        else if (strcmp(a, "--prompt") == 0) c.prompt = v;
        else if (strcmp(a, "--cancel-at") == 0) c.cancel_at = atoi(v);
        else if (strcmp(a, "--threads") == 0) c.threads = atoi(v);
        else if (strcmp(a, "--pool") == 0) c.pool = atoi(v);
        else if (strcmp(a, "--root") == 0) c.root = v;
        else usage();
    }
    if (!c.model || c.frames < 1 || c.max_tokens < 0 || c.budget_ms < 0 || c.threads < 0 || c.pool < 0)
        usage();
    if (c.cancel_at < 0) c.cancel_at = c.frames / 4;

    lua_State *L = host_state(&c);
    if (!L) return 1;
    if (c.pool > 0 && !set_threads(L, c.pool)) {
        lua_close(L);
        return 1;
    }
    char *reference = string_call(L, "reference", &c);
    int ok = reference != NULL;
    if (ok) printf("model %s prompt_len %zu max_tokens %d reference_len %zu\n", c.model, strlen(c.prompt),
                   c.max_tokens, strlen(reference));
    if (ok) ok = frame_loop(L, &c, 0, "full", reference);
    if (ok && c.cancel_at > 0) ok = frame_loop(L, &c, c.cancel_at, "cancel", reference);
    if (ok && c.threads > 0) ok = run_threads(&c, reference);
    free(reference);
    lua_close(L);
    return ok ? 0 : 1;
}
