/* Encoding many texts in parallel: texts are dealt to threads round-robin;
 * the tokenizer is read-only, each call has its own work buffers. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tok_internal.h"

typedef struct job {
    const slm_tok *t;
    const char *const *texts;
    const size_t *lens;
    size_t n, first, step;
    int add_special, parse_special;
    slm_tok_ids *out;
    slm_status st;
    slm_error err;
} job;

static void *run(void *arg)
{
    job *j = arg;
    slm_tok_work w = {0};   /* one per thread: its word cache stays warm */
    for (size_t i = j->first; i < j->n && !j->st; i += j->step)
        j->st = slm_tok_encode_work(j->t, &w, j->texts[i], j->lens[i], j->add_special,
                                    j->parse_special, &j->out[i], &j->err);
    slm_tok_work_free(&w);
    return NULL;
}

slm_status slm_tok_encode_batch(const slm_tok *t, const char *const *texts, const size_t *lens,
                                size_t n, int add_special, int parse_special, int nthreads,
                                slm_tok_ids *out, slm_error *err)
{
    if (nthreads <= 0) {
        long c = sysconf(_SC_NPROCESSORS_ONLN);
        nthreads = c > 0 ? (int)c : 1;
    }
    if ((size_t)nthreads > n) nthreads = n ? (int)n : 1;
    if (nthreads > 256) nthreads = 256;
    job jobs[256];
    pthread_t tid[256];
    int running[256] = {0};
    for (int k = 0; k < nthreads; k++)
        jobs[k] = (job){t, texts, lens, n, (size_t)k, (size_t)nthreads, add_special,
                        parse_special, out, SLM_OK, {0}};
    /* job 0 runs on the calling thread, as does any job whose thread
     * could not be started */
    for (int k = 1; k < nthreads; k++)
        running[k] = pthread_create(&tid[k], NULL, run, &jobs[k]) == 0;
    run(&jobs[0]);
    slm_status st = jobs[0].st;
    slm_error e0 = jobs[0].err;
    for (int k = 1; k < nthreads; k++) {
        if (running[k]) pthread_join(tid[k], NULL);
        else run(&jobs[k]);
        if (!st && jobs[k].st) {
            st = jobs[k].st;
            e0 = jobs[k].err;
        }
    }
    if (st && err) *err = e0;
    return st;
}
