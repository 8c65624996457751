/* src/cpu — the CPU backend, one kernel family per file. Generated into the
 * single file vlm_cpu.c by tools/amalgamate.sh (an embedder compiles that).
 *
 * The backend: a persistent thread pool, OpenBLAS for large matmuls, SIMD
 * (AVX2/FMA/F16C when built for it, scalar otherwise) for everything else.
 *
 * Every op reads inputs of any layout (strided views) and writes contiguous
 * outputs (CPY may write into a strided destination). Work is split over
 * rows and handed to the pool; per-thread scratch buffers are grown before a
 * parallel region, never inside it. Nothing here is global: two backends in
 * one process each own their threads and buffers.
 *
 * Notes
 *  - One op at a time per backend: the pool and the scratch buffers belong
 *    to the backend, so each op (and each vlm_cpu_parallel_for) holds
 *    exec_mu while it runs. Any number of threads may share one backend
 *    (sessions of one engine do); their ops interleave, each with all the
 *    pool's threads, so every result is the one it gets alone. A
 *    parallel_for issued from inside a parallel region runs inline.
 *  - vlm_backend_cpu() calls openblas_set_num_threads(1): OpenBLAS itself is
 *    process-wide, and our own threads split every GEMM into tiles whose
 *    layout does not depend on the thread count (same results for any n).
 *  - MATMUL: M < CPU_GEMM_MIN_M rows use the SIMD GEMV (weights read once,
 *    converted in registers); larger M use sgemm on tiles of w converted to
 *    f32 in per-thread scratch (never the whole matrix).
 *  - ATTN: flash-style tiles (queries x the GQA heads of one KV head) with
 *    online softmax; K/V blocks are skipped or accepted whole from
 *    position/segment summaries, so no T x S score matrix exists. */
#ifndef VLM_CPU_H
#define VLM_CPU_H

#include "core/vlm_core.h"

#if defined(VLM_HAVE_BLAS)
#include <cblas.h>
#endif
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/* ------------------------------------------------------------------ thread pool */

#define CPU_SPIN 4000

typedef struct cpu_ctx {
    int n;                        /* threads including the caller */
    vlm_thread **th;              /* [n]; th[0] is the caller's slot, unused */
    vlm_mutex *exec_mu;           /* held by the op running on this backend */
    vlm_mutex *mu;
    vlm_cond *cv_work, *cv_done;
    atomic_uint_fast64_t gen;     /* bumped for each parallel region */
    atomic_int remaining;         /* workers still inside the current region */
    atomic_int_fast64_t next;     /* next item to hand out */
    atomic_int busy;              /* a region is running: nested calls run inline */
    atomic_int stop;
    vlm_parallel_fn fn;
    void *arg;
    int64_t total, chunk;
    /* scratch */
    float **tscratch;             /* per thread */
    size_t *tscratch_n;
    float *shared;                /* one buffer for the calling thread's staging */
    size_t shared_n;
    float *rounded;               /* a matmul's input rounded to bf16 (bf16 compute) */
    size_t rounded_n;
    float *xq;                    /* a matmul's input quantized to int8 blocks (quantized weights) */
    size_t xq_n;
    int bf16;                     /* compute mode: 1 bf16 (inputs of every matmul rounded), 0 f32 */
    vlm_backend be;
    vlm_status (*exec)(struct cpu_ctx *ctx, const vlm_op *op, vlm_error *err); /* the kernel variant's */
} cpu_ctx;

typedef struct cpu_worker_arg {
    cpu_ctx *ctx;
    int id;
} cpu_worker_arg;

/* ------------------------------------------------------------------ shared between the kernel families */

/* Functions one family calls in another are CPU_FN: extern in the split
 * build (one object per file in src/cpu), static in the generated single-file vlm_cpu.c. */
#ifndef CPU_FN
#define CPU_FN
#endif

CPU_FN void *cpu_worker(void *p);
CPU_FN void cpu_parallel(cpu_ctx *ctx, int64_t n, int64_t min_chunk, vlm_parallel_fn fn, void *arg);
CPU_FN int cpu_reserve(cpu_ctx *ctx, size_t n);
CPU_FN float *cpu_shared(cpu_ctx *ctx, size_t n);
CPU_FN float *cpu_rounded(cpu_ctx *ctx, size_t n);
CPU_FN float *cpu_xq(cpu_ctx *ctx, size_t n);

/* ------------------------------------------------------------------ kernel variants */

/* The kernel families (src/cpu/kernels/) are compiled once per instruction
 * set (src/cpu/variant.c); each compilation exports one entry point that
 * runs an op. The backend picks one at creation from the CPU's features,
 * VLM_KERNELS or the caller's choice. */
typedef vlm_status (*cpu_exec_fn)(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
CPU_FN vlm_status cpu_exec_scalar(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) /* each instruction set's where it exists */
CPU_FN vlm_status cpu_exec_avx2(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
#elif defined(__aarch64__)
CPU_FN vlm_status cpu_exec_neon(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
CPU_FN vlm_status cpu_exec_dotprod(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
#endif

#endif /* VLM_CPU_H */
