/* The platform layer on Windows (built with MinGW-w64, tested under Wine):
 * files mapped through CreateFileMapping, threads, SRW locks and condition
 * variables, the performance counter. On other systems it compiles to
 * nothing (posix.c serves them). */
#include "platform/vlm_platform.h"

#if defined(_WIN32)
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#ifndef NOMINMAX
#define NOMINMAX
#endif
#include <windows.h>
#include <psapi.h>

#include <io.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ memory and strings */

void *vlm_aligned_alloc(size_t align, size_t n) { return _aligned_malloc(n ? n : 1, align); }
void vlm_aligned_free(void *p) { _aligned_free(p); }


/* ------------------------------------------------------------------ files */

int vlm_path_kind(const char *path) {
    DWORD a = path ? GetFileAttributesA(path) : INVALID_FILE_ATTRIBUTES;
    if (a == INVALID_FILE_ATTRIBUTES) return 0;
    return (a & FILE_ATTRIBUTE_DIRECTORY) ? 2 : 1;
}

static void plat_why(char *why, size_t why_n, const char *what) {
    snprintf(why, why_n, "%s (Windows error %lu)", what, (unsigned long)GetLastError());
}

int vlm_map_file(const char *path, vlm_mapped_file *out, char *why, size_t why_n) {
    out->data = NULL;
    out->size = 0;
    HANDLE f = CreateFileA(path, GENERIC_READ, FILE_SHARE_READ, NULL, OPEN_EXISTING, FILE_ATTRIBUTE_NORMAL, NULL);
    if (f == INVALID_HANDLE_VALUE) { plat_why(why, why_n, "cannot open"); return -1; }
    LARGE_INTEGER size;
    if (!GetFileSizeEx(f, &size)) { plat_why(why, why_n, "cannot stat"); CloseHandle(f); return -1; }
    if ((unsigned long long)size.QuadPart > (unsigned long long)SIZE_MAX) {
        snprintf(why, why_n, "file too large to map");
        CloseHandle(f);
        return -1;
    }
    if (size.QuadPart == 0) { CloseHandle(f); return 0; }
    HANDLE m = CreateFileMappingA(f, NULL, PAGE_READONLY, 0, 0, NULL);
    CloseHandle(f); /* the mapping keeps the file open */
    if (!m) { plat_why(why, why_n, "cannot map"); return -1; }
    void *p = MapViewOfFile(m, FILE_MAP_READ, 0, 0, 0);
    CloseHandle(m); /* the view keeps the mapping */
    if (!p) { plat_why(why, why_n, "cannot map a view"); return -1; }
    out->data = p;
    out->size = (size_t)size.QuadPart;
    return 0;
}

void vlm_unmap_file(vlm_mapped_file *f) {
    if (f->data) UnmapViewOfFile(f->data);
    f->data = NULL;
    f->size = 0;
}

/* Unlocking pages that are not locked takes them out of the working set. */
void vlm_map_release(const void *p, size_t n) {
    SYSTEM_INFO si;
    GetSystemInfo(&si);
    uintptr_t page = si.dwPageSize, b = ((uintptr_t)p + page - 1) & ~(page - 1), e = ((uintptr_t)p + n) & ~(page - 1);
    if (e > b) VirtualUnlock((void *)b, e - b);
}

/* ------------------------------------------------------------------ time and CPU */

double vlm_time_s(void) {
    LARGE_INTEGER c, f;
    QueryPerformanceCounter(&c);
    QueryPerformanceFrequency(&f);
    return (double)c.QuadPart / (double)f.QuadPart;
}

int vlm_cpu_count(void) {
    DWORD n = GetActiveProcessorCount(ALL_PROCESSOR_GROUPS);
    return n > 0 ? (int)(n > 4096 ? 4096 : n) : 1;
}

double vlm_cpu_time_s(void) {
    FILETIME c, e, k, u; /* 100 ns units */
    if (!GetProcessTimes(GetCurrentProcess(), &c, &e, &k, &u)) return 0;
    ULARGE_INTEGER kk = {{k.dwLowDateTime, k.dwHighDateTime}}, uu = {{u.dwLowDateTime, u.dwHighDateTime}};
    return (double)(kk.QuadPart + uu.QuadPart) * 1e-7;
}

double vlm_peak_rss_mib(void) {
    PROCESS_MEMORY_COUNTERS pmc;
    if (!GetProcessMemoryInfo(GetCurrentProcess(), &pmc, sizeof pmc)) return 0;
    return (double)pmc.PeakWorkingSetSize / 1048576.0;
}

/* ------------------------------------------------------------------ directories and terminals */

int vlm_make_dir(const char *path) {
    if (CreateDirectoryA(path, NULL)) return 0;
    return vlm_path_kind(path) == 2 ? 0 : -1;
}

int vlm_list_dir(const char *dir, int (*fn)(void *user, const char *name), void *user) {
    char pattern[4096];
    snprintf(pattern, sizeof pattern, "%s\\*", dir);
    WIN32_FIND_DATAA d;
    HANDLE h = FindFirstFileA(pattern, &d);
    if (h == INVALID_HANDLE_VALUE) return vlm_path_kind(dir) == 2 ? 0 : -1; /* an empty folder has no entry */
    int rc = 0;
    do
        if (strcmp(d.cFileName, ".") && strcmp(d.cFileName, "..")) rc = fn(user, d.cFileName);
    while (rc == 0 && FindNextFileA(h, &d));
    FindClose(h);
    return rc;
}

int vlm_is_terminal(int fd) { return _isatty(fd) != 0; }

void vlm_on_interrupt(void (*fn)(int)) { signal(SIGINT, fn); }
void vlm_on_terminate(void (*fn)(int)) {
    signal(SIGINT, fn);
    signal(SIGTERM, fn);
    signal(SIGBREAK, fn);
}
void vlm_sleep_s(double seconds) { Sleep((DWORD)(seconds * 1e3)); }

/* ------------------------------------------------------------------ threads */

struct vlm_thread {
    HANDLE h;
    void *(*fn)(void *);
    void *arg;
};
struct vlm_mutex { SRWLOCK l; };
struct vlm_cond { CONDITION_VARIABLE c; };

static DWORD WINAPI plat_thread_main(LPVOID p) {
    vlm_thread *t = (vlm_thread *)p;
    t->fn(t->arg);
    return 0;
}

vlm_thread *vlm_thread_start(void *(*fn)(void *), void *arg) {
    vlm_thread *t = (vlm_thread *)malloc(sizeof *t);
    if (!t) return NULL;
    t->fn = fn;
    t->arg = arg;
    t->h = CreateThread(NULL, 0, plat_thread_main, t, 0, NULL);
    if (!t->h) { free(t); return NULL; }
    return t;
}

void vlm_thread_join(vlm_thread *t) {
    if (!t) return;
    WaitForSingleObject(t->h, INFINITE);
    CloseHandle(t->h);
    free(t);
}

void vlm_thread_yield(void) { SwitchToThread(); }

vlm_mutex *vlm_mutex_new(void) {
    vlm_mutex *m = (vlm_mutex *)malloc(sizeof *m);
    if (m) InitializeSRWLock(&m->l);
    return m;
}
void vlm_mutex_free(vlm_mutex *m) { free(m); }
void vlm_mutex_lock(vlm_mutex *m) { AcquireSRWLockExclusive(&m->l); }
void vlm_mutex_unlock(vlm_mutex *m) { ReleaseSRWLockExclusive(&m->l); }

vlm_cond *vlm_cond_new(void) {
    vlm_cond *c = (vlm_cond *)malloc(sizeof *c);
    if (c) InitializeConditionVariable(&c->c);
    return c;
}
void vlm_cond_free(vlm_cond *c) { free(c); }
void vlm_cond_wait(vlm_cond *c, vlm_mutex *m) { SleepConditionVariableSRW(&c->c, &m->l, INFINITE, 0); }
void vlm_cond_signal(vlm_cond *c) { WakeConditionVariable(&c->c); }
void vlm_cond_broadcast(vlm_cond *c) { WakeAllConditionVariable(&c->c); }
#else
typedef int vlm_platform_win32_unused; /* elsewhere: posix.c */
#endif
