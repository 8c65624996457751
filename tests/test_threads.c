/* One engine, many threads: 4 threads each run the same 20 generations
 * (images, plain text, two-turn conversations with cache reuse, seeded
 * sampling) on sessions of one shared engine, for two families. Every
 * answer must equal the one the same generation gives when run alone.
 * Run under TSan (make tsan) and ASan (make test SAN=1) too. */
#include "test_util.h"
#include "vlm.h"

#include <pthread.h>

#define N_JOBS 20
#define N_THREADS 4


static const char *const images[] = {"tests/golden/qwen2_5_vl/image.png", "tests/golden/gemma4/image.png"};

/* Job k: what it asks and how it samples; two turns when k % 4 == 3. */
static vlm_status run_job(vlm_engine *e, int k, test_sink *out, vlm_error *err) {
    memset(out, 0, sizeof *out);
    vlm_session *s = NULL;
    vlm_status rc = vlm_session_new(e, NULL, &s, err);
    vlm_generate_params gp = vlm_generate_default();
    gp.max_tokens = 6 + k % 5;
    gp.ignore_eos = 1;
    gp.sampling.temperature = k % 3 == 2 ? 0.8f : 0.0f;
    gp.sampling.seed = (uint64_t)k;
    char prompt[64];
    snprintf(prompt, sizeof prompt, "Question %d: what do you see?", k);
    if (rc == VLM_OK && k % 2 == 0) rc = vlm_session_add_image_file(s, images[(k / 2) % 2], err);
    if (rc == VLM_OK) rc = vlm_session_add_text(s, prompt, err);
    if (rc == VLM_OK) rc = vlm_session_generate(s, &gp, test_collect, out, NULL, err);
    if (rc == VLM_OK && k % 4 == 3) {
        test_collect(out, "|", 1);
        rc = vlm_session_add_text(s, "And then?", err);
        if (rc == VLM_OK) rc = vlm_session_generate(s, &gp, test_collect, out, NULL, err);
    }
    int n = 0;
    const int32_t *ids = s ? vlm_session_tokens(s, &n) : NULL;
    char tail[32]; /* the cached ids, summed, so a wrong prompt shows up even if the text agrees */
    unsigned long sum = 0;
    for (int i = 0; i < n; i++) sum = sum * 31 + (unsigned)ids[i];
    snprintf(tail, sizeof tail, "#%d:%lu", n, sum);
    test_collect(out, tail, strlen(tail));
    vlm_session_free(s);
    return rc;
}

typedef struct {
    vlm_engine *e;
    int thread;
    test_sink got[N_JOBS];
    vlm_status rc[N_JOBS];
    char msg[N_JOBS][sizeof(((vlm_error *)0)->msg)];
} worker;

static void *work(void *p) {
    worker *w = (worker *)p;
    for (int i = 0; i < N_JOBS; i++) {
        int k = (i + w->thread * 5) % N_JOBS; /* each thread walks the jobs from its own start */
        vlm_error err = {0};
        w->rc[k] = run_job(w->e, k, &w->got[k], &err);
        snprintf(w->msg[k], sizeof w->msg[k], "%s", err.msg);
    }
    return NULL;
}

static void check_family(const char *dir) {
    vlm_error err = {0};
    vlm_engine *e = NULL;
    vlm_engine_params ep = {.n_threads = 2};
    if (vlm_engine_open(&e, dir, &ep, &err) != VLM_OK) {
        CHECK(0, "open %s: %s", dir, err.msg);
        return;
    }
    static test_sink alone[N_JOBS];
    for (int k = 0; k < N_JOBS; k++) {
        vlm_error e2 = {0};
        CHECK(run_job(e, k, &alone[k], &e2) == VLM_OK, "%s job %d alone: %s", dir, k, e2.msg);
    }
    static worker w[N_THREADS];
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].e = e;
        w[t].thread = t;
        CHECK(pthread_create(&th[t], NULL, work, &w[t]) == 0, "start thread %d", t);
    }
    int differ = 0;
    for (int t = 0; t < N_THREADS; t++) {
        pthread_join(th[t], NULL);
        for (int k = 0; k < N_JOBS; k++) {
            CHECK(w[t].rc[k] == VLM_OK, "%s thread %d job %d: %s", dir, t, k, w[t].msg[k]);
            if (strcmp(w[t].got[k].text, alone[k].text) != 0) {
                if (differ++ < 3)
                    fprintf(stderr, "%s thread %d job %d:\n  alone:    %s\n  threaded: %s\n", dir, t, k, alone[k].text,
                            w[t].got[k].text);
            }
        }
    }
    CHECK(differ == 0, "%s: %d of %d threaded answers differ from the same generation run alone", dir, differ,
          N_THREADS * N_JOBS);
    printf("%s: %d threads x %d generations on one engine, %d differ from alone\n", dir, N_THREADS, N_JOBS, differ);
    vlm_engine_close(e);
}

int main(void) {
    check_family("tests/data/tiny_qwen");
    check_family("tests/data/tiny_gemma4");
    TEST_MAIN_END();
}
