/* The thread pool: persistent workers that spin briefly, then sleep; work
 * is handed out in chunks of rows. Per-thread scratch is grown here, never
 * inside a parallel region. */
#include "cpu/cpu.h"

/* The pool whose parallel region this thread is running a chunk of (NULL:
 * none). Only vlm_cpu_parallel_for reads it, to run a nested call inline
 * instead of waiting for the lock its own region holds. */
static _Thread_local const cpu_ctx *cpu_in_region;

static inline void cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One step of a spin-wait. Every few steps the core is offered to another
 * runnable thread: when the machine has more runnable threads than cores,
 * the thread being waited for may be the one that needs it. */
static inline void cpu_spin_step(int i) {
    if ((i & 15) == 15) vlm_thread_yield();
    else cpu_pause();
}

static void cpu_run_chunks(cpu_ctx *ctx, int tid) {
    const cpu_ctx *outer = cpu_in_region;
    cpu_in_region = ctx;
    for (;;) {
        int64_t b = atomic_fetch_add(&ctx->next, ctx->chunk);
        if (b >= ctx->total) break;
        int64_t e = b + ctx->chunk < ctx->total ? b + ctx->chunk : ctx->total;
        ctx->fn(ctx->arg, b, e, tid);
    }
    cpu_in_region = outer;
}

CPU_FN void *cpu_worker(void *p) {
    cpu_worker_arg *wa = (cpu_worker_arg *)p;
    cpu_ctx *ctx = wa->ctx;
    int id = wa->id;
    free(wa);
    uint64_t seen = 0;
    for (;;) {
        uint64_t g = atomic_load(&ctx->gen);
        for (int i = 0; i < CPU_SPIN && g == seen; i++) {
            cpu_spin_step(i);
            g = atomic_load(&ctx->gen);
        }
        if (g == seen) {
            vlm_mutex_lock(ctx->mu);
            while ((g = atomic_load(&ctx->gen)) == seen && !ctx->stop) vlm_cond_wait(ctx->cv_work, ctx->mu);
            vlm_mutex_unlock(ctx->mu);
        }
        if (ctx->stop) break;
        seen = g;
        cpu_run_chunks(ctx, id);
        if (atomic_fetch_sub(&ctx->remaining, 1) == 1) {
            vlm_mutex_lock(ctx->mu);
            vlm_cond_signal(ctx->cv_done);
            vlm_mutex_unlock(ctx->mu);
        }
    }
    return NULL;
}

CPU_FN void cpu_parallel(cpu_ctx *ctx, int64_t n, int64_t min_chunk, vlm_parallel_fn fn, void *arg) {
    if (n <= 0) return;
    if (min_chunk < 1) min_chunk = 1;
    int expected = 0;
    if (ctx->n <= 1 || n <= min_chunk || !atomic_compare_exchange_strong(&ctx->busy, &expected, 1)) {
        fn(arg, 0, n, 0);
        return;
    }
    int64_t chunk = (n + ctx->n * 4 - 1) / (ctx->n * 4);
    if (chunk < min_chunk) chunk = min_chunk;
    ctx->fn = fn;
    ctx->arg = arg;
    ctx->total = n;
    ctx->chunk = chunk;
    atomic_store(&ctx->next, 0);
    atomic_store(&ctx->remaining, ctx->n - 1);
    vlm_mutex_lock(ctx->mu);
    atomic_fetch_add(&ctx->gen, 1);
    vlm_cond_broadcast(ctx->cv_work);
    vlm_mutex_unlock(ctx->mu);
    cpu_run_chunks(ctx, 0);
    for (int i = 0; i < CPU_SPIN && atomic_load(&ctx->remaining) > 0; i++) cpu_spin_step(i);
    if (atomic_load(&ctx->remaining) > 0) {
        vlm_mutex_lock(ctx->mu);
        while (atomic_load(&ctx->remaining) > 0) vlm_cond_wait(ctx->cv_done, ctx->mu);
        vlm_mutex_unlock(ctx->mu);
    }
    atomic_store(&ctx->busy, 0);
}

void vlm_cpu_parallel_for(vlm_backend *cpu, int64_t n, int64_t min_chunk, vlm_parallel_fn fn, void *arg) {
    if (!cpu || !cpu->impl || strcmp(cpu->name, "cpu") != 0) {
        if (n > 0) fn(arg, 0, n, 0);
        return;
    }
    cpu_ctx *ctx = (cpu_ctx *)cpu->impl;
    if (cpu_in_region == ctx) { /* nested in one of this pool's regions */
        if (n > 0) fn(arg, 0, n, 0);
        return;
    }
    vlm_mutex_lock(ctx->exec_mu);
    cpu_parallel(ctx, n, min_chunk, fn, arg);
    vlm_mutex_unlock(ctx->exec_mu);
}

/* Makes every thread's scratch at least n floats (call outside parallel regions). */
CPU_FN int cpu_reserve(cpu_ctx *ctx, size_t n) {
    for (int t = 0; t < ctx->n; t++) {
        if (ctx->tscratch_n[t] >= n) continue;
        size_t sz = n + 64;
        float *p = (float *)vlm_aligned_alloc(64, sz * sizeof(float));
        if (!p) return -1;
        vlm_aligned_free(ctx->tscratch[t]);
        ctx->tscratch[t] = p;
        ctx->tscratch_n[t] = sz;
    }
    return 0;
}

/* Grows one buffer (*buf, *cap floats) to n; NULL if out of memory. */
static float *cpu_grow(float **buf, size_t *cap, size_t n) {
    if (*cap < n) {
        float *p = (float *)vlm_aligned_alloc(64, n * sizeof(float));
        if (!p) return NULL;
        vlm_aligned_free(*buf);
        *buf = p;
        *cap = n;
    }
    return *buf;
}

CPU_FN float *cpu_rounded(cpu_ctx *ctx, size_t n) { return cpu_grow(&ctx->rounded, &ctx->rounded_n, n); }
CPU_FN float *cpu_xq(cpu_ctx *ctx, size_t n) { return cpu_grow(&ctx->xq, &ctx->xq_n, n); }

CPU_FN float *cpu_shared(cpu_ctx *ctx, size_t n) { return cpu_grow(&ctx->shared, &ctx->shared_n, n); }
