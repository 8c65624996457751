/* The platform layer on POSIX systems (Linux, macOS, the BSDs).
 *
 * This file may be compiled inside an embedder's translation unit whose
 * earlier includes fixed the feature macros (say -std=c11, no
 * _POSIX_C_SOURCE): it uses only what <unistd.h>, <fcntl.h>, <sys/mman.h>,
 * <sys/stat.h> and <pthread.h> declare in that mode, and falls back where a
 * newer name may be hidden (O_CLOEXEC, CLOCK_MONOTONIC). */
#include "platform/vlm_platform.h"

#if !defined(_WIN32)
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ memory and strings */

void *vlm_aligned_alloc(size_t align, size_t n) {
    if (n == 0) n = 1;
    n = (n + align - 1) & ~(align - 1); /* C11 wants a multiple of the alignment */
    return aligned_alloc(align, n);
}

void vlm_aligned_free(void *p) { free(p); }

/* ------------------------------------------------------------------ files */

int vlm_path_kind(const char *path) {
    struct stat sb;
    if (!path || stat(path, &sb) != 0) return 0;
    return S_ISREG(sb.st_mode) ? 1 : S_ISDIR(sb.st_mode) ? 2 : 0;
}

int vlm_map_file(const char *path, vlm_mapped_file *out, char *why, size_t why_n) {
    out->data = NULL;
    out->size = 0;
#ifdef O_CLOEXEC
    int fd = open(path, O_RDONLY | O_CLOEXEC);
#else
    int fd = open(path, O_RDONLY);
    if (fd >= 0) fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    if (fd < 0) { snprintf(why, why_n, "cannot open: %s", strerror(errno)); return -1; }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        snprintf(why, why_n, "cannot stat: %s", strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) { snprintf(why, why_n, "not a regular file"); close(fd); return -1; }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) { snprintf(why, why_n, "file too large to map"); close(fd); return -1; }
    if (sb.st_size == 0) { close(fd); return 0; }
    void *map = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED) { snprintf(why, why_n, "mmap failed: %s", strerror(e)); return -1; }
    out->data = map;
    out->size = (size_t)sb.st_size;
    return 0;
}

void vlm_unmap_file(vlm_mapped_file *f) {
    if (f->data) munmap(f->data, f->size);
    f->data = NULL;
    f->size = 0;
}

/* madvise is hidden in a strict build (-std=c11, no feature macros): there
 * the pages simply stay until the system needs them. */
void vlm_map_release(const void *p, size_t n) {
#ifdef MADV_DONTNEED
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), b = ((uintptr_t)p + page - 1) & ~(page - 1),
              e = ((uintptr_t)p + n) & ~(page - 1); /* whole pages inside the range only */
    if (e > b) madvise((void *)b, e - b, MADV_DONTNEED);
#else
    (void)p;
    (void)n;
#endif
}

/* ------------------------------------------------------------------ time and CPU */

double vlm_time_s(void) {
    struct timespec ts;
#ifdef CLOCK_MONOTONIC
    clock_gettime(CLOCK_MONOTONIC, &ts);
#else /* strict C11 hides clock_gettime: the wall clock, for durations only */
    timespec_get(&ts, TIME_UTC);
#endif
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int vlm_cpu_count(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > 4096 ? 4096 : n) : 1;
}

double vlm_cpu_time_s(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

double vlm_peak_rss_mib(void) {
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
#if defined(__APPLE__)
    return ru.ru_maxrss / 1048576.0; /* bytes there */
#else
    return ru.ru_maxrss / 1024.0; /* KiB */
#endif
}

/* ------------------------------------------------------------------ directories and terminals */

int vlm_make_dir(const char *path) {
    if (mkdir(path, 0777) == 0) return 0;
    return vlm_path_kind(path) == 2 ? 0 : -1;
}

int vlm_list_dir(const char *dir, int (*fn)(void *user, const char *name), void *user) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    struct dirent *ent;
    int rc = 0;
    while (rc == 0 && (ent = readdir(d)))
        if (strcmp(ent->d_name, ".") && strcmp(ent->d_name, "..")) rc = fn(user, ent->d_name);
    closedir(d);
    return rc;
}

int vlm_is_terminal(int fd) { return isatty(fd); }

void vlm_on_interrupt(void (*fn)(int)) {
#if defined(SA_RESTART) /* sigaction is hidden in a strict build */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn; /* no SA_RESTART */
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
#else
    signal(SIGINT, fn);
#endif
}

void vlm_on_terminate(void (*fn)(int)) {
    vlm_on_interrupt(fn);
    signal(SIGTERM, fn);
}

void vlm_sleep_s(double seconds) {
#if defined(CLOCK_REALTIME) /* nanosleep comes with it; both hidden in a strict build */
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
#else
    for (double end = vlm_time_s() + seconds; vlm_time_s() < end;) sched_yield();
#endif
}

/* ------------------------------------------------------------------ threads */

struct vlm_thread { pthread_t t; };
struct vlm_mutex { pthread_mutex_t m; };
struct vlm_cond { pthread_cond_t c; };

vlm_thread *vlm_thread_start(void *(*fn)(void *), void *arg) {
    vlm_thread *t = (vlm_thread *)malloc(sizeof *t);
    if (t && pthread_create(&t->t, NULL, fn, arg) != 0) { free(t); t = NULL; }
    return t;
}

void vlm_thread_join(vlm_thread *t) {
    if (!t) return;
    pthread_join(t->t, NULL);
    free(t);
}

void vlm_thread_yield(void) { sched_yield(); }

vlm_mutex *vlm_mutex_new(void) {
    vlm_mutex *m = (vlm_mutex *)malloc(sizeof *m);
    if (m && pthread_mutex_init(&m->m, NULL) != 0) { free(m); m = NULL; }
    return m;
}
void vlm_mutex_free(vlm_mutex *m) {
    if (!m) return;
    pthread_mutex_destroy(&m->m);
    free(m);
}
void vlm_mutex_lock(vlm_mutex *m) { pthread_mutex_lock(&m->m); }
void vlm_mutex_unlock(vlm_mutex *m) { pthread_mutex_unlock(&m->m); }

vlm_cond *vlm_cond_new(void) {
    vlm_cond *c = (vlm_cond *)malloc(sizeof *c);
    if (c && pthread_cond_init(&c->c, NULL) != 0) { free(c); c = NULL; }
    return c;
}
void vlm_cond_free(vlm_cond *c) {
    if (!c) return;
    pthread_cond_destroy(&c->c);
    free(c);
}
void vlm_cond_wait(vlm_cond *c, vlm_mutex *m) { pthread_cond_wait(&c->c, &m->m); }
void vlm_cond_signal(vlm_cond *c) { pthread_cond_signal(&c->c); }
void vlm_cond_broadcast(vlm_cond *c) { pthread_cond_broadcast(&c->c); }
#else
typedef int vlm_platform_posix_unused; /* Windows: win32.c */
#endif
