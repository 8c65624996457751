/* Minimal test helpers: CHECK records a failure and continues; TEST_MAIN_END
 * prints the tally and returns non-zero on any failure. */
#ifndef VLM_TEST_UTIL_H
#define VLM_TEST_UTIL_H
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vlm.h"

static int test_failures, test_checks;

/* Windows (MinGW, under Wine): system() and popen() speak cmd.exe, so the
 * checks that prepare files with sh commands (sed, cp, ln) or run the CLI
 * through a shell are skipped there, saying so; the CLI itself is checked
 * by tests/check_*.sh, which the host's sh runs. */
#if defined(_WIN32)
#include <direct.h>
#define TEST_SHELL 0
#define test_rmdir _rmdir
#else
#include <unistd.h>
#define TEST_SHELL 1
#define test_rmdir rmdir
#endif
#define TEST_SKIP_UNLESS_SHELL(what, ...)                                        \
    do {                                                                        \
        if (!TEST_SHELL) {                                                      \
            printf("skipped on this system (needs a POSIX shell): %s\n", what); \
            return __VA_ARGS__;                                                 \
        }                                                                       \
    } while (0)
#define TEST_NEEDS_SHELL(what) TEST_SKIP_UNLESS_SHELL(what, )
#define TEST_MAIN_NEEDS_SHELL(what) TEST_SKIP_UNLESS_SHELL(what, 0)
#if !TEST_SHELL && !defined(WIFEXITED) /* never reached there: the callers skip */
#define WIFEXITED(s) ((s) >= 0)
#define WEXITSTATUS(s) (s)
#endif

/* mkdtemp: a new directory named from tmpl (ending in XXXXXX); NULL on failure. */
static inline char *test_mkdtemp(char *tmpl) {
#if defined(_WIN32)
    size_t n = strlen(tmpl);
    static unsigned counter;
    for (int tries = 0; tries < 100 && n >= 6; tries++) {
        snprintf(tmpl + n - 6, 7, "%06u", (unsigned)(vlm_time_s() * 1e6 + counter++) % 1000000u);
        if (vlm_path_kind(tmpl) == 0 && vlm_make_dir(tmpl) == 0) return tmpl;
    }
    return NULL;
#else
    return mkdtemp(tmpl);
#endif
}

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        test_checks++;                                                          \
        if (!(cond)) {                                                          \
            test_failures++;                                                    \
            fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

#define TEST_MAIN_END()                                                         \
    do {                                                                        \
        printf("%d checks, %d failed\n", test_checks, test_failures);          \
        return test_failures ? 1 : 0;                                           \
    } while (0)

/* Deterministic uniform random in [-1, 1). */
static inline float test_randf(unsigned long long *s) {
    *s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((*s >> 40) & 0xFFFFFF) / (float)0x800000 - 1.0f;
}

static inline float test_max_abs_diff(const float *a, const float *b, long n) {
    float m = 0;
    for (long i = 0; i < n; i++) { float d = fabsf(a[i] - b[i]); if (d > m || d != d) m = d != d ? INFINITY : d; }
    return m;
}
/* A vlm_piece_fn target that keeps what was streamed (user: a test_sink);
 * cancel_on_first, if set, is raised by the first piece. */
typedef struct test_sink {
    char text[4096];
    size_t len;
    int calls;
    volatile int *cancel_on_first;
} test_sink;

static inline int test_collect(void *user, const char *text, size_t len) {
    test_sink *k = (test_sink *)user;
    if (k->len + len < sizeof k->text) {
        memcpy(k->text + k->len, text, len);
        k->len += len;
        k->text[k->len] = 0;
    }
    k->calls++;
    if (k->cancel_on_first) *k->cancel_on_first = 1;
    return 0;
}
#endif
