/* The platform layer on POSIX systems (Linux, macOS, the BSDs).
 *
 * This file may be compiled inside an embedder's translation unit whose
 * earlier includes fixed the feature macros (say -std=c11, no
 * _POSIX_C_SOURCE): it uses only what <unistd.h>, <fcntl.h>, <sys/mman.h>,
 * <sys/stat.h> and <pthread.h> declare in that mode, and falls back where a
 * newer name may be hidden (O_CLOEXEC, CLOCK_MONOTONIC). */
#include "platform/vlm_platform.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

char *vlm_strdup(const char *s) {
    size_t n = strlen(s) + 1;
    char *p = (char *)malloc(n);
    if (p) memcpy(p, s, n);
    return p;
}

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

#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
static uint64_t plat_xgetbv(unsigned idx) {
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(idx));
    return ((uint64_t)hi << 32) | lo;
}
unsigned vlm_cpu_features(void) {
    unsigned a, b, c, d, f = 0;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
    if (!osxsave) return 0;
    uint64_t xcr0 = plat_xgetbv(0);
    int ymm = (xcr0 & 6) == 6, zmm = (xcr0 & 0xe6) == 0xe6, tiles = (xcr0 & 0x60000) == 0x60000;
    if (__get_cpuid_max(0, NULL) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    unsigned b7 = b, c7 = c, d7 = d;
    if (ymm && fma && f16c && ((b7 >> 5) & 1)) f |= VLM_CPU_AVX2;
    if (zmm && ((b7 >> 16) & 1)) {
        f |= VLM_CPU_AVX512F;
        if ((c7 >> 11) & 1) f |= VLM_CPU_AVX512VNNI;
        __cpuid_count(7, 1, a, b, c, d);
        if ((a >> 5) & 1) f |= VLM_CPU_AVX512BF16;
    }
    /* AMX also needs the kernel's permission (arch_prctl), asked for by the
     * kernels that use it; here: the CPU has it and XCR0 enables the tiles. */
    if (tiles && ((d7 >> 22) & 1)) f |= VLM_CPU_AMX_BF16;
    if (tiles && ((d7 >> 25) & 1)) f |= VLM_CPU_AMX_INT8;
    return f;
}
#elif defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
unsigned vlm_cpu_features(void) {
    /* the kernel's hwcaps: HWCAP_ASIMDDP, HWCAP2_I8MM, HWCAP2_BF16 */
    unsigned long h = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
    unsigned f = VLM_CPU_NEON;
    if (h & (1ul << 20)) f |= VLM_CPU_DOTPROD;
    if (h2 & (1ul << 13)) f |= VLM_CPU_I8MM;
    if (h2 & (1ul << 14)) f |= VLM_CPU_ARM_BF16;
    return f;
}
#elif defined(__aarch64__) /* elsewhere (macOS, untested): the baseline */
unsigned vlm_cpu_features(void) { return VLM_CPU_NEON; }
#else
unsigned vlm_cpu_features(void) { return 0; }
#endif

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
