/* src/platform — everything the library (and the CLI) asks of the
 * operating system, in one place: files and their mapping, directories,
 * threads, clocks, CPU facts, aligned memory. The rest is plain C11 over
 * these functions: posix.c and win32.c implement them (each compiles to
 * nothing on the other), cpu.c finds the CPU's features.
 *
 * The public vlm.h declares these with no system header beyond <stddef.h>:
 * an embedder's file that defines VLM_IMPLEMENTATION compiles with its own
 * flags (-std=c11 -Wpedantic, no _GNU_SOURCE) and its own includes first.
 *
 * Owns: the OS. May call: nothing in the library. Everything may call it.
 */
#ifndef VLM_PLATFORM_H
#define VLM_PLATFORM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ memory and strings */

/* Memory aligned to `align` (a power of two), freed with vlm_aligned_free. */
void *vlm_aligned_alloc(size_t align, size_t n);
void vlm_aligned_free(void *p);
char *vlm_strdup(const char *s); /* malloc'd copy, NULL if out of memory */

/* ------------------------------------------------------------------ files */

/* 1 for a regular file, 2 for a directory, 0 for anything else or nothing. */
int vlm_path_kind(const char *path);

/* A whole file mapped read-only (private, never written back). */
typedef struct vlm_mapped_file {
    void *data;
    size_t size;
} vlm_mapped_file;
/* Maps path; on failure returns non-zero with a message (errno's words) in
 * why[why_n]. A file of 0 bytes maps to data == NULL, size 0. */
int vlm_map_file(const char *path, vlm_mapped_file *out, char *why, size_t why_n);
void vlm_unmap_file(vlm_mapped_file *f);
/* Drops the pages of [p, p + n) inside a mapping from this process's
 * memory (they are read again from the file if touched): a weight that was
 * read once to quantize it costs no resident memory after. A hint; no-op
 * where the system has none. */
void vlm_map_release(const void *p, size_t n);

/* ------------------------------------------------------------------ time and CPU */

double vlm_time_s(void);  /* monotonic seconds from an arbitrary origin */
int vlm_cpu_count(void);  /* online logical CPUs, at least 1 */
double vlm_cpu_time_s(void);   /* CPU seconds this process used, all threads */
double vlm_peak_rss_mib(void); /* this process's peak resident memory; 0 if unknown */

/* ------------------------------------------------------------------ directories and terminals */

int vlm_make_dir(const char *path); /* 0 when made or already a directory */
/* fn(user, name) for each entry of dir but "." and "..", in no set order,
 * until it returns non-zero; -1 if dir cannot be read, else fn's last value. */
int vlm_list_dir(const char *dir, int (*fn)(void *user, const char *name), void *user);
int vlm_is_terminal(int fd); /* fd 0, 1, 2: stdin, stdout, stderr */
/* fn(SIGINT) on Ctrl-C; a read waiting at a prompt then returns (no
 * restart), so an interactive loop sees it. */
void vlm_on_interrupt(void (*fn)(int));
/* fn(signal) on a request to end: Ctrl-C, and SIGTERM (a service manager's
 * stop) where the system has it. */
void vlm_on_terminate(void (*fn)(int));
void vlm_sleep_s(double seconds);

/* CPU features the kernels may use, found at run time (bits of vlm_cpu_features). */
#define VLM_CPU_AVX2       (1u << 0) /* with FMA and F16C */
#define VLM_CPU_AVX512F    (1u << 1)
#define VLM_CPU_AVX512BF16 (1u << 2)
#define VLM_CPU_AVX512VNNI (1u << 3)
#define VLM_CPU_AMX_BF16   (1u << 4) /* and the OS lets this process use the tiles */
#define VLM_CPU_AMX_INT8   (1u << 5)
#define VLM_CPU_NEON       (1u << 8) /* AArch64's Advanced SIMD, always there */
#define VLM_CPU_DOTPROD    (1u << 9) /* SDOT/UDOT */
#define VLM_CPU_I8MM       (1u << 10) /* SMMLA */
#define VLM_CPU_ARM_BF16   (1u << 11) /* BFDOT/BFMMLA */
unsigned vlm_cpu_features(void);

/* ------------------------------------------------------------------ threads */

typedef struct vlm_thread vlm_thread;
typedef struct vlm_mutex vlm_mutex;
typedef struct vlm_cond vlm_cond;

/* Starts fn(arg) on a new thread; NULL if the OS refuses. */
vlm_thread *vlm_thread_start(void *(*fn)(void *), void *arg);
void vlm_thread_join(vlm_thread *t); /* waits for it and frees it */
void vlm_thread_yield(void);

vlm_mutex *vlm_mutex_new(void);      /* NULL if out of memory */
void vlm_mutex_free(vlm_mutex *m);
void vlm_mutex_lock(vlm_mutex *m);
void vlm_mutex_unlock(vlm_mutex *m);

vlm_cond *vlm_cond_new(void);
void vlm_cond_free(vlm_cond *c);
void vlm_cond_wait(vlm_cond *c, vlm_mutex *m);
void vlm_cond_signal(vlm_cond *c);
void vlm_cond_broadcast(vlm_cond *c);

#ifdef __cplusplus
}
#endif
#endif /* VLM_PLATFORM_H */
