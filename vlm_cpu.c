/* CPU backend: a persistent thread pool, OpenBLAS for large matmuls, SIMD
 * (AVX2/FMA/F16C when built for it, scalar otherwise) for everything else.
 *
 * Every op reads inputs of any layout (strided views) and writes contiguous
 * outputs (CPY may write into a strided destination). Work is split over
 * rows and handed to the pool; per-thread scratch buffers are grown before a
 * parallel region, never inside it. Nothing here is global: two backends in
 * one process each own their threads and buffers.
 *
 * Notes
 *  - One op at a time per backend: the scratch buffers belong to the
 *    backend, so two threads must not run ops (or vlm_cpu_parallel_for) on
 *    the same backend concurrently; use one backend per thread instead.
 *    A parallel_for issued from inside a parallel region runs inline.
 *  - vlm_backend_cpu() calls openblas_set_num_threads(1): OpenBLAS itself is
 *    process-wide, and our own threads split every GEMM into tiles whose
 *    layout does not depend on the thread count (same results for any n).
 *  - MATMUL: M < CPU_GEMM_MIN_M rows use the SIMD GEMV (weights read once,
 *    converted in registers); larger M use sgemm on tiles of w converted to
 *    f32 in per-thread scratch (never the whole matrix).
 *  - ATTN: flash-style tiles (queries x the GQA heads of one KV head) with
 *    online softmax; K/V blocks are skipped or accepted whole from
 *    position/segment summaries, so no T x S score matrix exists. */
#include "vlm.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#define CPU_AVX2 1
#include <immintrin.h>
#else
#define CPU_AVX2 0
#endif

/* ------------------------------------------------------------------ thread pool */

#define CPU_SPIN 4000

typedef struct cpu_ctx {
    int n;                        /* threads including the caller */
    pthread_t *th;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
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
    vlm_backend be;
} cpu_ctx;

typedef struct cpu_worker_arg {
    cpu_ctx *ctx;
    int id;
} cpu_worker_arg;

static inline void cpu_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* One step of a spin-wait. Every few steps the core is offered to another
 * runnable thread: when the machine has more runnable threads than cores,
 * the thread being waited for may be the one that needs it. */
static inline void cpu_spin_step(int i) {
    if ((i & 15) == 15) sched_yield();
    else cpu_pause();
}

static void cpu_run_chunks(cpu_ctx *ctx, int tid) {
    for (;;) {
        int64_t b = atomic_fetch_add(&ctx->next, ctx->chunk);
        if (b >= ctx->total) break;
        int64_t e = b + ctx->chunk < ctx->total ? b + ctx->chunk : ctx->total;
        ctx->fn(ctx->arg, b, e, tid);
    }
}

static void *cpu_worker(void *p) {
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
            pthread_mutex_lock(&ctx->mu);
            while ((g = atomic_load(&ctx->gen)) == seen && !ctx->stop) pthread_cond_wait(&ctx->cv_work, &ctx->mu);
            pthread_mutex_unlock(&ctx->mu);
        }
        if (ctx->stop) break;
        seen = g;
        cpu_run_chunks(ctx, id);
        if (atomic_fetch_sub(&ctx->remaining, 1) == 1) {
            pthread_mutex_lock(&ctx->mu);
            pthread_cond_signal(&ctx->cv_done);
            pthread_mutex_unlock(&ctx->mu);
        }
    }
    return NULL;
}

static void cpu_parallel(cpu_ctx *ctx, int64_t n, int64_t min_chunk, vlm_parallel_fn fn, void *arg) {
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
    pthread_mutex_lock(&ctx->mu);
    atomic_fetch_add(&ctx->gen, 1);
    pthread_cond_broadcast(&ctx->cv_work);
    pthread_mutex_unlock(&ctx->mu);
    cpu_run_chunks(ctx, 0);
    for (int i = 0; i < CPU_SPIN && atomic_load(&ctx->remaining) > 0; i++) cpu_spin_step(i);
    if (atomic_load(&ctx->remaining) > 0) {
        pthread_mutex_lock(&ctx->mu);
        while (atomic_load(&ctx->remaining) > 0) pthread_cond_wait(&ctx->cv_done, &ctx->mu);
        pthread_mutex_unlock(&ctx->mu);
    }
    atomic_store(&ctx->busy, 0);
}

void vlm_cpu_parallel_for(vlm_backend *cpu, int64_t n, int64_t min_chunk, vlm_parallel_fn fn, void *arg) {
    if (!cpu || !cpu->impl || strcmp(cpu->name, "cpu") != 0) {
        if (n > 0) fn(arg, 0, n, 0);
        return;
    }
    cpu_parallel((cpu_ctx *)cpu->impl, n, min_chunk, fn, arg);
}

/* Makes every thread's scratch at least n floats (call outside parallel regions). */
static int cpu_reserve(cpu_ctx *ctx, size_t n) {
    for (int t = 0; t < ctx->n; t++) {
        if (ctx->tscratch_n[t] >= n) continue;
        size_t sz = n + 64;
        float *p = (float *)aligned_alloc(64, ((sz * sizeof(float)) + 63) & ~(size_t)63);
        if (!p) return -1;
        free(ctx->tscratch[t]);
        ctx->tscratch[t] = p;
        ctx->tscratch_n[t] = sz;
    }
    return 0;
}

static float *cpu_shared(cpu_ctx *ctx, size_t n) {
    if (ctx->shared_n < n) {
        float *p = (float *)aligned_alloc(64, ((n * sizeof(float)) + 63) & ~(size_t)63);
        if (!p) return NULL;
        free(ctx->shared);
        ctx->shared = p;
        ctx->shared_n = n;
    }
    return ctx->shared;
}

/* ------------------------------------------------------------------ conversions and kernels */

static inline float cpu_h2f(uint16_t h) {
#if CPU_AVX2
    return _cvtsh_ss(h);
#else
    return vlm_f16_to_f32(h);
#endif
}
static inline float cpu_b2f(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

#if CPU_AVX2
static inline __m256 cpu_load8_bf16(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256 cpu_load8_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline float cpu_hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
static inline float cpu_hmax(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_max_ps(lo, hi);
    lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
#endif

/* Contiguous conversion of n elements to f32. */
static void cpu_to_f32(float *dst, const void *src, vlm_dtype t, int64_t n) {
    int64_t i = 0;
    switch (t) {
    case VLM_F32: memcpy(dst, src, (size_t)n * 4); return;
    case VLM_F16: {
        const uint16_t *s = (const uint16_t *)src;
#if CPU_AVX2
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, cpu_load8_f16(s + i));
#endif
        for (; i < n; i++) dst[i] = cpu_h2f(s[i]);
        return;
    }
    case VLM_BF16: {
        const uint16_t *s = (const uint16_t *)src;
#if CPU_AVX2
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, cpu_load8_bf16(s + i));
#endif
        for (; i < n; i++) dst[i] = cpu_b2f(s[i]);
        return;
    }
    case VLM_I32: for (; i < n; i++) dst[i] = (float)((const int32_t *)src)[i]; return;
    case VLM_I64: for (; i < n; i++) dst[i] = (float)((const int64_t *)src)[i]; return;
    case VLM_U8: case VLM_BOOL: for (; i < n; i++) dst[i] = (float)((const uint8_t *)src)[i]; return;
    default: memset(dst, 0, (size_t)n * 4); return;
    }
}

/* Strided load of n elements (stride in elements, may be 0) to f32. */
static void cpu_load(float *dst, const void *base, vlm_dtype t, int64_t off, int64_t stride, int64_t n) {
    size_t es = vlm_dtype_size(t);
    const char *p = (const char *)base + off * (int64_t)es;
    if (stride == 1) { cpu_to_f32(dst, p, t, n); return; }
    switch (t) {
    case VLM_F32: for (int64_t i = 0; i < n; i++) dst[i] = ((const float *)p)[i * stride]; return;
    case VLM_F16: for (int64_t i = 0; i < n; i++) dst[i] = cpu_h2f(((const uint16_t *)p)[i * stride]); return;
    case VLM_BF16: for (int64_t i = 0; i < n; i++) dst[i] = cpu_b2f(((const uint16_t *)p)[i * stride]); return;
    case VLM_I32: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int32_t *)p)[i * stride]; return;
    case VLM_I64: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int64_t *)p)[i * stride]; return;
    case VLM_U8: case VLM_BOOL: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const uint8_t *)p)[i * stride]; return;
    default: memset(dst, 0, (size_t)n * 4); return;
    }
}

static float cpu_dot_f32(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    float s = 0;
#if CPU_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s = cpu_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static float cpu_dot_bf16(const float *a, const uint16_t *b, int64_t n) {
    int64_t i = 0;
    float s = 0;
#if CPU_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), cpu_load8_bf16(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), cpu_load8_bf16(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), cpu_load8_bf16(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), cpu_load8_bf16(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), cpu_load8_bf16(b + i), s0);
    s = cpu_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#endif
    for (; i < n; i++) s += a[i] * cpu_b2f(b[i]);
    return s;
}

static float cpu_dot_f16(const float *a, const uint16_t *b, int64_t n) {
    int64_t i = 0;
    float s = 0;
#if CPU_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), cpu_load8_f16(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), cpu_load8_f16(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), cpu_load8_f16(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), cpu_load8_f16(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), cpu_load8_f16(b + i), s0);
    s = cpu_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#endif
    for (; i < n; i++) s += a[i] * cpu_h2f(b[i]);
    return s;
}

static inline float cpu_dot(const float *x, const void *w, vlm_dtype t, int64_t n) {
    switch (t) {
    case VLM_F16: return cpu_dot_f16(x, (const uint16_t *)w, n);
    case VLM_BF16: return cpu_dot_bf16(x, (const uint16_t *)w, n);
    default: return cpu_dot_f32(x, (const float *)w, n);
    }
}

/* y += a * x (x contiguous, any float dtype) */
static void cpu_axpy(float *y, float a, const void *x, vlm_dtype t, int64_t n) {
    int64_t i = 0;
#if CPU_AVX2
    __m256 va = _mm256_set1_ps(a);
    if (t == VLM_F32)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps((const float *)x + i), _mm256_loadu_ps(y + i)));
    else if (t == VLM_F16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, cpu_load8_f16((const uint16_t *)x + i), _mm256_loadu_ps(y + i)));
    else if (t == VLM_BF16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, cpu_load8_bf16((const uint16_t *)x + i), _mm256_loadu_ps(y + i)));
#endif
    if (t == VLM_F32) for (; i < n; i++) y[i] += a * ((const float *)x)[i];
    else if (t == VLM_F16) for (; i < n; i++) y[i] += a * cpu_h2f(((const uint16_t *)x)[i]);
    else for (; i < n; i++) y[i] += a * cpu_b2f(((const uint16_t *)x)[i]);
}

static void cpu_scale_inplace(float *y, float a, int64_t n) {
    int64_t i = 0;
#if CPU_AVX2
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
#endif
    for (; i < n; i++) y[i] *= a;
}

static float cpu_max(const float *x, int64_t n) {
    int64_t i = 0;
    float m = -INFINITY;
#if CPU_AVX2
    if (n >= 8) {
        __m256 vm = _mm256_set1_ps(-INFINITY);
        for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
        m = cpu_hmax(vm);
    }
#endif
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

#if CPU_AVX2
/* exp(x) for x <= 0 range typical of softmax; Cephes-style polynomial, ~1 ulp. */
static inline __m256 cpu_exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, z, x);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}
#endif

/* y[i] = exp(x[i] - m), returns the sum (in f32 lanes). */
static float cpu_exp_sub_sum(float *y, const float *x, float m, int64_t n) {
    int64_t i = 0;
    float s = 0;
#if CPU_AVX2
    __m256 vm = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 e = cpu_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(y + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    s = cpu_hsum(vs);
#endif
    for (; i < n; i++) { y[i] = expf(x[i] - m); s += y[i]; }
    return s;
}

/* ------------------------------------------------------------------ tensor helpers */

static inline int64_t cpu_lastdim(const vlm_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static inline int64_t cpu_laststride(const vlm_tensor *t) { return t->ndim ? t->stride[t->ndim - 1] : 1; }
static inline int64_t cpu_nrows(const vlm_tensor *t) {
    int64_t d = cpu_lastdim(t);
    return d ? vlm_nelem(t) / d : 0;
}
/* Element offset of row r (row-major over all dims but the last). */
static inline int64_t cpu_row_off(const vlm_tensor *t, int64_t r) {
    int64_t off = 0;
    for (int d = t->ndim - 2; d >= 0; d--) {
        int64_t n = t->shape[d];
        off += (r % n) * t->stride[d];
        r /= n;
    }
    return off;
}
/* Row r of t as f32: a pointer into t when possible, else converted into buf. */
static inline const float *cpu_row(const vlm_tensor *t, int64_t r, float *buf) {
    int64_t off = cpu_row_off(t, r), n = cpu_lastdim(t), s = cpu_laststride(t);
    if (t->dtype == VLM_F32 && (s == 1 || n == 1)) return (const float *)t->data + off;
    cpu_load(buf, t->data, t->dtype, off, s, n);
    return buf;
}
/* b broadcast to a's shape: stride 0 where b's dim is 1 or missing. */
static vlm_tensor cpu_broadcast(const vlm_tensor *a, const vlm_tensor *b) {
    vlm_tensor v = *b;
    v.ndim = a->ndim;
    for (int i = 0; i < a->ndim; i++) {
        int j = i - (a->ndim - b->ndim);
        v.shape[i] = a->shape[i];
        v.stride[i] = (j < 0 || b->shape[j] == 1) ? 0 : b->stride[j];
    }
    return v;
}
static int64_t cpu_min_rows(int64_t D, int64_t work_per_elem) {
    int64_t target = 32768 / (work_per_elem > 0 ? work_per_elem : 1);
    int64_t r = D > 0 ? target / D : 1;
    return r < 1 ? 1 : r;
}

/* ------------------------------------------------------------------ CPY */

typedef struct cpu_rows_arg {
    cpu_ctx *ctx;
    const vlm_op *op;
    vlm_tensor a, b, c, out;
} cpu_rows_arg;

static void cpu_store(void *base, vlm_dtype t, int64_t off, int64_t stride, const float *src, int64_t n) {
    size_t es = vlm_dtype_size(t);
    char *p = (char *)base + off * (int64_t)es;
    switch (t) {
    case VLM_F32:
        if (stride == 1) memcpy(p, src, (size_t)n * 4);
        else for (int64_t i = 0; i < n; i++) ((float *)p)[i * stride] = src[i];
        return;
    case VLM_F16: {
        int64_t i = 0;
#if CPU_AVX2
        if (stride == 1)
            for (; i + 8 <= n; i += 8)
                _mm_storeu_si128((__m128i *)((uint16_t *)p + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
        for (; i < n; i++) ((uint16_t *)p)[i * stride] = vlm_f32_to_f16(src[i]);
        return;
    }
    case VLM_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)p)[i * stride] = vlm_f32_to_bf16(src[i]); return;
    case VLM_I32: for (int64_t i = 0; i < n; i++) ((int32_t *)p)[i * stride] = (int32_t)src[i]; return;
    case VLM_I64: for (int64_t i = 0; i < n; i++) ((int64_t *)p)[i * stride] = (int64_t)src[i]; return;
    case VLM_U8: for (int64_t i = 0; i < n; i++) ((uint8_t *)p)[i * stride] = (uint8_t)src[i]; return;
    case VLM_BOOL: for (int64_t i = 0; i < n; i++) ((uint8_t *)p)[i * stride] = src[i] != 0; return;
    default: return;
    }
}

static int cpu_is_int(vlm_dtype t) { return t == VLM_I32 || t == VLM_I64 || t == VLM_U8 || t == VLM_BOOL; }

static int64_t cpu_get_int(const void *p, vlm_dtype t, int64_t i) {
    switch (t) {
    case VLM_I32: return ((const int32_t *)p)[i];
    case VLM_I64: return ((const int64_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
    }
}

static void cpu_cpy_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_tensor *a = &A->a, *o = &A->out;
    int64_t D = cpu_lastdim(a), sa = cpu_laststride(a), so = cpu_laststride(o);
    size_t ea = vlm_dtype_size(a->dtype), eo = vlm_dtype_size(o->dtype);
    float *buf = A->ctx->tscratch[tid];
    for (int64_t r = r0; r < r1; r++) {
        int64_t ia = cpu_row_off(a, r), io = cpu_row_off(o, r);
        if (a->dtype == o->dtype && sa == 1 && so == 1) {
            memcpy((char *)o->data + io * (int64_t)eo, (const char *)a->data + ia * (int64_t)ea, (size_t)D * ea);
        } else if (cpu_is_int(a->dtype) && cpu_is_int(o->dtype)) {
            const char *src = (const char *)a->data + ia * (int64_t)ea;
            char *dst = (char *)o->data + io * (int64_t)eo;
            for (int64_t i = 0; i < D; i++) {
                int64_t v = cpu_get_int(src, a->dtype, i * sa);
                switch (o->dtype) {
                case VLM_I32: ((int32_t *)dst)[i * so] = (int32_t)v; break;
                case VLM_I64: ((int64_t *)dst)[i * so] = v; break;
                case VLM_BOOL: ((uint8_t *)dst)[i * so] = v != 0; break;
                default: ((uint8_t *)dst)[i * so] = (uint8_t)v; break;
                }
            }
        } else {
            cpu_load(buf, a->data, a->dtype, ia, sa, D);
            cpu_store(o->data, o->dtype, io, so, buf, D);
        }
    }
}

static vlm_status cpu_op_cpy(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .out = *op->out};
    int64_t D = cpu_lastdim(&A.a);
    if (vlm_nelem(&A.a) == 0) return VLM_OK;
    if (A.a.dtype == A.out.dtype && vlm_is_contiguous(&A.a) && vlm_is_contiguous(&A.out)) {
        memcpy(A.out.data, A.a.data, vlm_nbytes(&A.a));
        return VLM_OK;
    }
    if (cpu_reserve(ctx, (size_t)D)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    cpu_parallel(ctx, cpu_nrows(&A.a), cpu_min_rows(D, 1), cpu_cpy_rows, &A);
    return VLM_OK;
}

/* ------------------------------------------------------------------ element-wise */

static inline float cpu_unary1(int f, float x, float cap) {
    switch (f) {
    case VLM_UNARY_SILU: return x / (1.0f + expf(-x));
    case VLM_UNARY_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    case VLM_UNARY_GELU_TANH: return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
    case VLM_UNARY_RELU: return x > 0 ? x : 0;
    case VLM_UNARY_TANH: return tanhf(x);
    case VLM_UNARY_SIGMOID: return 1.0f / (1.0f + expf(-x));
    case VLM_UNARY_EXP: return expf(x);
    case VLM_UNARY_SOFTCAP: return tanhf(x / cap) * cap;
    case VLM_UNARY_SQR: return x * x;
    case VLM_UNARY_SQRT: return sqrtf(x);
    case VLM_UNARY_NEG: return -x;
    default: return x;
    }
}

static void cpu_unary_vec(int f, float *y, const float *x, int64_t n, float cap) {
    int64_t i = 0;
#if CPU_AVX2
    if (f == VLM_UNARY_SILU || f == VLM_UNARY_SIGMOID) {
        const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
        for (; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            __m256 s = _mm256_div_ps(one, _mm256_add_ps(one, cpu_exp8(_mm256_sub_ps(zero, v))));
            _mm256_storeu_ps(y + i, f == VLM_UNARY_SILU ? _mm256_mul_ps(v, s) : s);
        }
    } else if (f == VLM_UNARY_RELU) {
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_max_ps(_mm256_loadu_ps(x + i), _mm256_setzero_ps()));
    } else if (f == VLM_UNARY_SQR) {
        for (; i + 8 <= n; i += 8) { __m256 v = _mm256_loadu_ps(x + i); _mm256_storeu_ps(y + i, _mm256_mul_ps(v, v)); }
    }
#endif
    for (; i < n; i++) y[i] = cpu_unary1(f, x[i], cap);
}

static void cpu_ew_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_op *op = A->op;
    int64_t D = cpu_lastdim(&A->a);
    float *ba = A->ctx->tscratch[tid], *bb = ba + D;
    for (int64_t r = r0; r < r1; r++) {
        float *o = (float *)A->out.data + r * D;
        const float *x = cpu_row(&A->a, r, ba);
        switch (op->kind) {
        case VLM_OP_ADD: case VLM_OP_MUL: {
            const float *y = cpu_row(&A->b, r, bb);
            int64_t i = 0;
            if (cpu_laststride(&A->b) == 0 && D > 1) { /* broadcast scalar per row */
                float s = y[0];
                if (op->kind == VLM_OP_ADD) for (; i < D; i++) o[i] = x[i] + s;
                else for (; i < D; i++) o[i] = x[i] * s;
                break;
            }
#if CPU_AVX2
            if (op->kind == VLM_OP_ADD)
                for (; i + 8 <= D; i += 8) _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
            else
                for (; i + 8 <= D; i += 8) _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
#endif
            if (op->kind == VLM_OP_ADD) for (; i < D; i++) o[i] = x[i] + y[i];
            else for (; i < D; i++) o[i] = x[i] * y[i];
            break;
        }
        case VLM_OP_SCALE: {
            float s = op->f[0], b = op->f[1];
            int64_t i = 0;
#if CPU_AVX2
            __m256 vs = _mm256_set1_ps(s), vb = _mm256_set1_ps(b);
            for (; i + 8 <= D; i += 8) _mm256_storeu_ps(o + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), vs, vb));
#endif
            for (; i < D; i++) o[i] = x[i] * s + b;
            break;
        }
        case VLM_OP_UNARY: cpu_unary_vec(op->i[0], o, x, D, op->f[0]); break;
        case VLM_OP_GLU: {
            const float *y = cpu_row(&A->b, r, bb);
            cpu_unary_vec(op->i[0], o, x, D, op->f[0]);
            int64_t i = 0;
#if CPU_AVX2
            for (; i + 8 <= D; i += 8) _mm256_storeu_ps(o + i, _mm256_mul_ps(_mm256_loadu_ps(o + i), _mm256_loadu_ps(y + i)));
#endif
            for (; i < D; i++) o[i] *= y[i];
            break;
        }
        default: break;
        }
    }
}

static vlm_status cpu_op_ew(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .out = *op->out};
    if (op->kind == VLM_OP_ADD || op->kind == VLM_OP_MUL) A.b = cpu_broadcast(op->a, op->b);
    else if (op->b) A.b = *op->b;
    if (op->kind == VLM_OP_UNARY && op->i[0] == VLM_UNARY_SOFTCAP && !(op->f[0] > 0))
        return vlm_error_set(err, VLM_ERR_ARG, "softcap needs cap > 0");
    if ((unsigned)op->i[0] > VLM_UNARY_NEG && (op->kind == VLM_OP_UNARY || op->kind == VLM_OP_GLU))
        return vlm_error_set(err, VLM_ERR_ARG, "unknown unary op %d", op->i[0]);
    int64_t D = cpu_lastdim(&A.a);
    if (vlm_nelem(&A.a) == 0) return VLM_OK;
    if (cpu_reserve(ctx, (size_t)D * 2)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    int work = op->kind == VLM_OP_UNARY || op->kind == VLM_OP_GLU ? 8 : 1;
    cpu_parallel(ctx, cpu_nrows(&A.a), cpu_min_rows(D, work), cpu_ew_rows, &A);
    return VLM_OK;
}

/* ------------------------------------------------------------------ norms, softmax */

static void cpu_norm_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_op *op = A->op;
    int64_t D = cpu_lastdim(&A->a);
    float *ba = A->ctx->tscratch[tid], *w = ba + D, *b = w + D;
    int has_w = op->b != NULL, has_b = op->c != NULL;
    if (has_w) cpu_to_f32(w, op->b->data, op->b->dtype, D);
    if (has_b) cpu_to_f32(b, op->c->data, op->c->dtype, D);
    if (has_w && op->kind == VLM_OP_RMS_NORM && op->i[0])
        for (int64_t i = 0; i < D; i++) w[i] += 1.0f;
    for (int64_t r = r0; r < r1; r++) {
        float *o = (float *)A->out.data + r * D;
        const float *x = cpu_row(&A->a, r, ba);
        if (op->kind == VLM_OP_RMS_NORM) {
            double ss = 0;
            int64_t i = 0;
#if CPU_AVX2
            __m256 acc = _mm256_setzero_ps(), acc2 = _mm256_setzero_ps();
            for (; i + 16 <= D; i += 16) {
                __m256 v = _mm256_loadu_ps(x + i), v2 = _mm256_loadu_ps(x + i + 8);
                acc = _mm256_fmadd_ps(v, v, acc);
                acc2 = _mm256_fmadd_ps(v2, v2, acc2);
            }
            ss = cpu_hsum(_mm256_add_ps(acc, acc2));
#endif
            for (; i < D; i++) ss += (double)x[i] * x[i];
            float inv = (float)(1.0 / sqrt(ss / (double)D + (double)op->f[0]));
            if (has_w) for (i = 0; i < D; i++) o[i] = x[i] * inv * w[i];
            else for (i = 0; i < D; i++) o[i] = x[i] * inv;
        } else { /* layer norm */
            double mean = 0, var = 0;
            for (int64_t i = 0; i < D; i++) mean += x[i];
            mean /= (double)D;
            for (int64_t i = 0; i < D; i++) { double d = x[i] - mean; var += d * d; }
            var /= (double)D;
            float inv = (float)(1.0 / sqrt(var + (double)op->f[0])), mf = (float)mean;
            for (int64_t i = 0; i < D; i++) {
                float v = (x[i] - mf) * inv;
                if (has_w) v *= w[i];
                if (has_b) v += b[i];
                o[i] = v;
            }
        }
    }
}

static void cpu_softmax_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_op *op = A->op;
    int64_t D = cpu_lastdim(&A->a);
    float *ba = A->ctx->tscratch[tid];
    float scale = op->f[0], cap = op->f[1];
    for (int64_t r = r0; r < r1; r++) {
        float *o = (float *)A->out.data + r * D;
        const float *x = cpu_row(&A->a, r, ba);
        for (int64_t i = 0; i < D; i++) {
            float v = x[i] * scale;
            o[i] = cap > 0 ? tanhf(v / cap) * cap : v;
        }
        float m = cpu_max(o, D);
        if (m == -INFINITY) { memset(o, 0, (size_t)D * 4); continue; }
        float s = cpu_exp_sub_sum(o, o, m, D);
        cpu_scale_inplace(o, 1.0f / s, D);
    }
}

static vlm_status cpu_op_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err, vlm_parallel_fn fn, int work) {
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .out = *op->out};
    int64_t D = cpu_lastdim(&A.a);
    if (vlm_nelem(&A.a) == 0) return VLM_OK;
    if (cpu_reserve(ctx, (size_t)D * 3)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    cpu_parallel(ctx, cpu_nrows(&A.a), cpu_min_rows(D, work), fn, &A);
    return VLM_OK;
}

/* ------------------------------------------------------------------ RoPE */

static void cpu_rope_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_tensor *x = &A->a;
    int64_t H = x->shape[1], D = x->shape[2], R = A->b.shape[1], h2 = R / 2;
    float *buf = A->ctx->tscratch[tid];
    for (int64_t r = r0; r < r1; r++) {
        int64_t t = r / H;
        const float *xr = cpu_row(x, r, buf);
        const float *cs = (const float *)A->b.data + t * R, *sn = (const float *)A->c.data + t * R;
        float *o = (float *)A->out.data + r * D;
        for (int64_t i = 0; i < h2; i++) {
            o[i] = xr[i] * cs[i] - xr[i + h2] * sn[i];
            o[i + h2] = xr[i + h2] * cs[i + h2] + xr[i] * sn[i + h2];
        }
        if (R < D) memcpy(o + R, xr + R, (size_t)(D - R) * 4);
    }
}

static vlm_status cpu_op_rope(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .b = *op->b, .c = *op->c, .out = *op->out};
    int64_t D = op->a->shape[2];
    if (vlm_nelem(&A.a) == 0) return VLM_OK;
    if (cpu_reserve(ctx, (size_t)D)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    cpu_parallel(ctx, cpu_nrows(&A.a), cpu_min_rows(D, 2), cpu_rope_rows, &A);
    return VLM_OK;
}

/* ------------------------------------------------------------------ matmul */

#define CPU_GEMM_MIN_M 32

typedef struct cpu_mm_arg {
    cpu_ctx *ctx;
    int64_t M, N, K;
    const float *x;
    int64_t lda;
    const char *w;
    vlm_dtype wt;
    int64_t ldw;        /* elements between rows of w */
    const float *bias;  /* f32, or NULL */
    float *out;
    int64_t ldo;
    int64_t nb;         /* rows of w per tile (BLAS path) */
    int64_t mb, mtiles; /* rows of x per tile, number of row tiles */
} cpu_mm_arg;

/* res[r] = x[r] . w for r < m (m <= 4 rows of x with row stride lda): each
 * weight vector is loaded and converted once for all rows. */
#if CPU_AVX2
#ifndef CPU_PF_DIST
#define CPU_PF_DIST 1024 /* bytes ahead in the weight stream */
#endif
static inline __attribute__((always_inline)) __m256 cpu_load8w(const void *w, int64_t i, const vlm_dtype wt) {
    if (wt == VLM_BF16) return cpu_load8_bf16((const uint16_t *)w + i);
    if (wt == VLM_F16) return cpu_load8_f16((const uint16_t *)w + i);
    return _mm256_loadu_ps((const float *)w + i);
}
static inline __attribute__((always_inline)) void cpu_dotm_impl(const float *x, int64_t lda, const void *w, int64_t K,
                                                               float *res, const int m, const vlm_dtype wt) {
    /* U accumulators per row so that 8 FMA chains hide the FMA latency */
    enum { MAXU = 8 };
    const int U = m == 1 ? 8 : m == 2 ? 4 : 2;
    __m256 acc[4][MAXU];
#pragma GCC unroll 4
    for (int r = 0; r < m; r++)
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) acc[r][u] = _mm256_setzero_ps();
    int64_t i = 0;
    const int64_t wes = wt == VLM_F32 ? 4 : 2;
    for (; i + 8 * U <= K; i += 8 * U) {
        if (m > 1) { /* measured: helps from DRAM with several rows, not with one */
            _mm_prefetch((const char *)w + i * wes + CPU_PF_DIST, _MM_HINT_T0);
            if (8 * U * wes > 64) _mm_prefetch((const char *)w + i * wes + CPU_PF_DIST + 64, _MM_HINT_T0);
        }
#pragma GCC unroll 8
        for (int u = 0; u < U; u++) {
            __m256 wv = cpu_load8w(w, i + 8 * u, wt);
#pragma GCC unroll 4
            for (int r = 0; r < m; r++) acc[r][u] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * lda + i + 8 * u), wv, acc[r][u]);
        }
    }
    for (; i + 8 <= K; i += 8) {
        __m256 wv = cpu_load8w(w, i, wt);
#pragma GCC unroll 4
        for (int r = 0; r < m; r++) acc[r][0] = _mm256_fmadd_ps(_mm256_loadu_ps(x + r * lda + i), wv, acc[r][0]);
    }
#pragma GCC unroll 4
    for (int r = 0; r < m; r++) {
#pragma GCC unroll 8
        for (int u = 1; u < U; u++) acc[r][0] = _mm256_add_ps(acc[r][0], acc[r][u]);
        res[r] = cpu_hsum(acc[r][0]);
    }
    for (; i < K; i++) {
        float wv = wt == VLM_BF16 ? cpu_b2f(((const uint16_t *)w)[i]) : wt == VLM_F16 ? cpu_h2f(((const uint16_t *)w)[i])
                                                                                  : ((const float *)w)[i];
#pragma GCC unroll 4
        for (int r = 0; r < m; r++) res[r] += x[r * lda + i] * wv;
    }
}
#define CPU_DOTM_CASES(WT)                                                          \
    switch (m) {                                                                    \
    case 1: cpu_dotm_impl(x, lda, w, K, res, 1, WT); return;                        \
    case 2: cpu_dotm_impl(x, lda, w, K, res, 2, WT); return;                        \
    case 3: cpu_dotm_impl(x, lda, w, K, res, 3, WT); return;                        \
    default: cpu_dotm_impl(x, lda, w, K, res, 4, WT); return;                       \
    }
static void cpu_dotm(const float *x, int64_t lda, int m, const void *w, vlm_dtype wt, int64_t K, float *res) {
    if (wt == VLM_BF16) CPU_DOTM_CASES(VLM_BF16)
    if (wt == VLM_F16) CPU_DOTM_CASES(VLM_F16)
    CPU_DOTM_CASES(VLM_F32)
}
#else
static void cpu_dotm(const float *x, int64_t lda, int m, const void *w, vlm_dtype wt, int64_t K, float *res) {
    for (int r = 0; r < m; r++) res[r] = cpu_dot(x + r * lda, w, wt, K);
}
#endif

static void cpu_gemv_fn(void *p, int64_t n0, int64_t n1, int tid) {
    cpu_mm_arg *A = (cpu_mm_arg *)p;
    size_t es = vlm_dtype_size(A->wt);
    for (int64_t n = n0; n < n1; n++) {
        const void *wr = A->w + n * A->ldw * (int64_t)es;
        float b = A->bias ? A->bias[n] : 0.0f;
        for (int64_t m = 0; m < A->M; m += 4) {
            float res[4];
            int mm = A->M - m < 4 ? (int)(A->M - m) : 4;
            cpu_dotm(A->x + m * A->lda, A->lda, mm, wr, A->wt, A->K, res);
            for (int r = 0; r < mm; r++) A->out[(m + r) * A->ldo + n] = res[r] + b;
        }
    }
}

/* Work item t: w tile t / mtiles (nb rows of w), x tile t % mtiles (mb rows).
 * Consecutive items share a w tile, converted once per run of items. */
static void cpu_gemm_fn(void *p, int64_t t0, int64_t t1, int tid) {
    cpu_mm_arg *A = (cpu_mm_arg *)p;
    size_t es = vlm_dtype_size(A->wt);
    int64_t have = -1;
    for (int64_t t = t0; t < t1; t++) {
        int64_t nt = t / A->mtiles, mt = t % A->mtiles;
        int64_t n0 = nt * A->nb, nb = A->N - n0 < A->nb ? A->N - n0 : A->nb;
        int64_t m0 = mt * A->mb, mb = A->M - m0 < A->mb ? A->M - m0 : A->mb;
        const float *wp;
        int64_t ldb;
        if (A->wt == VLM_F32 && A->ldw >= A->K) { /* BLAS needs ldb >= K; other strides are copied */
            wp = (const float *)A->w + n0 * A->ldw;
            ldb = A->ldw;
        } else {
            float *s = A->ctx->tscratch[tid];
            if (have != nt)
                for (int64_t n = 0; n < nb; n++) cpu_to_f32(s + n * A->K, A->w + (n0 + n) * A->ldw * (int64_t)es, A->wt, A->K);
            have = nt;
            wp = s;
            ldb = A->K;
        }
        float *o = A->out + m0 * A->ldo + n0;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)mb, (int)nb, (int)A->K, 1.0f, A->x + m0 * A->lda,
                    (int)A->lda, wp, (int)ldb, 0.0f, o, (int)A->ldo);
        if (A->bias)
            for (int64_t m = 0; m < mb; m++)
                for (int64_t n = 0; n < nb; n++) o[m * A->ldo + n] += A->bias[n0 + n];
    }
}

/* out[M, N] (row stride ldo) = x[M, K] . w[N, K]^T + bias. x f32 with row stride lda. */
static vlm_status cpu_mm(cpu_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *x, int64_t lda, const void *w,
                         vlm_dtype wt, int64_t ldw, const float *bias, float *out, int64_t ldo, vlm_error *err) {
    cpu_mm_arg A = {ctx, M, N, K, x, lda, (const char *)w, wt, ldw, bias, out, ldo, 0, 0, 0};
    if (M == 0 || N == 0) return VLM_OK;
    if (K == 0) {
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) out[m * ldo + n] = bias ? bias[n] : 0;
        return VLM_OK;
    }
    if (M < CPU_GEMM_MIN_M) {
        int64_t min_n = 16384 / (K * M) + 1;
        cpu_parallel(ctx, N, min_n, cpu_gemv_fn, &A);
        return VLM_OK;
    }
    /* Tiles: nb rows of w (128..512, about 8 MB of f32) times mb rows of
     * x. The tiling must not depend on the thread count so that results are
     * identical for any n_threads. */
    int64_t nb = ((int64_t)1 << 21) / K;
    if (nb > 512) nb = 512;
    if (nb < 128) nb = 128;
    nb &= ~(int64_t)15;
    if (nb >= N) nb = N;
    A.nb = nb;
    A.mb = M >= 512 ? 256 : M;
    A.mtiles = (M + A.mb - 1) / A.mb;
    if ((wt != VLM_F32 || ldw < K) && cpu_reserve(ctx, (size_t)(nb * K)))
        return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    cpu_parallel(ctx, (N + A.nb - 1) / A.nb * A.mtiles, 1, cpu_gemm_fn, &A);
    return VLM_OK;
}

/* Do dims [first_dim, last_dim] of x collapse into one dim of uniform stride? */
static int cpu_uniform_rows(const vlm_tensor *x, int first_dim, int last_dim, int64_t *lda) {
    int64_t s = -1, n = 1;
    for (int d = last_dim; d >= first_dim; d--) {
        if (x->shape[d] == 1) continue;
        if (s < 0) { s = x->stride[d]; n = x->shape[d]; }
        else if (x->stride[d] != s * n) return 0;
        else n *= x->shape[d];
    }
    *lda = s < 0 ? cpu_lastdim(x) : s;
    return 1;
}

static vlm_status cpu_op_matmul(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *x = op->a, *w = op->b, *o = op->out;
    int64_t K = cpu_lastdim(x), N = w->shape[w->ndim - 2];
    const float *bias = NULL;
    float *sh = NULL;
    size_t need = 0;
    if (op->c) {
        if (op->c->dtype == VLM_F32) bias = (const float *)op->c->data;
        else need += (size_t)N;
    }
    int64_t rows = cpu_nrows(x);
    int batched = w->ndim > 2;
    int64_t M = batched ? x->shape[x->ndim - 2] : rows;
    int64_t lda = K;
    int stage = x->dtype != VLM_F32;
    if (!stage) {
        if (batched) lda = x->stride[x->ndim - 2];
        else if (x->ndim >= 2) stage = !cpu_uniform_rows(x, 0, x->ndim - 2, &lda);
        if (M <= 1) lda = K;
        if (lda < K) stage = 1;
    }
    if (stage) need += (size_t)(rows * K);
    if (need) {
        sh = cpu_shared(ctx, need);
        if (!sh) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of memory staging a matmul input");
    }
    float *xs = sh;
    if (op->c && op->c->dtype != VLM_F32) {
        cpu_to_f32(sh, op->c->data, op->c->dtype, N);
        bias = sh;
        xs = sh + N;
    }
    const float *xp = (const float *)x->data;
    if (stage) {
        for (int64_t r = 0; r < rows; r++) cpu_load(xs + r * K, x->data, x->dtype, cpu_row_off(x, r), 1, K);
        xp = xs;
        lda = K;
    }
    if (!batched) {
        return cpu_mm(ctx, rows, N, K, xp, lda, w->data, w->dtype, w->stride[w->ndim - 2], bias, (float *)o->data, N, err);
    }
    int64_t B = rows / (M ? M : 1);
    size_t es = vlm_dtype_size(w->dtype);
    for (int64_t b = 0; b < B; b++) {
        /* offsets of batch b in x and w (leading dims equal) */
        int64_t xo = 0, wo = 0, r = b;
        for (int d = x->ndim - 3; d >= 0; d--) {
            int64_t i = r % x->shape[d];
            r /= x->shape[d];
            xo += i * x->stride[d];
            wo += i * w->stride[d];
        }
        const float *xb = stage ? xp + b * M * K : xp + xo;
        vlm_status s = cpu_mm(ctx, M, N, K, xb, lda, (const char *)w->data + wo * (int64_t)es, w->dtype,
                              w->stride[w->ndim - 2], bias, (float *)o->data + b * M * N, N, err);
        if (s) return s;
    }
    return VLM_OK;
}

/* MoE: out[T, k, N] = x[t or t*k] . w[ids[t, j]]^T, grouped by expert. */
/* Decode-sized MoE: one parallel region over (active expert, row of w). */
typedef struct cpu_moe_arg {
    const int64_t *order, *estart;
    const int32_t *elist;
    int64_t N, K;
    const float *xg;
    const char *w;
    vlm_dtype wt;
    float *out;
} cpu_moe_arg;

static void cpu_moe_fn(void *p, int64_t i0, int64_t i1, int tid) {
    cpu_moe_arg *A = (cpu_moe_arg *)p;
    size_t es = vlm_dtype_size(A->wt);
    for (int64_t it = i0; it < i1; it++) {
        int64_t ei = it / A->N, n = it % A->N, e = A->elist[ei];
        const char *wr = A->w + (e * A->N + n) * A->K * (int64_t)es;
        for (int64_t s0 = A->estart[ei]; s0 < A->estart[ei + 1]; s0 += 4) {
            int mm = A->estart[ei + 1] - s0 < 4 ? (int)(A->estart[ei + 1] - s0) : 4;
            float res[4];
            cpu_dotm(A->xg + s0 * A->K, A->K, mm, wr, A->wt, A->K, res);
            for (int r = 0; r < mm; r++) A->out[A->order[s0 + r] * A->N + n] = res[r];
        }
    }
}

/* MoE: out[T, k, N] = x[t or t*k] . w[ids[t, j]]^T, grouped by expert so each
 * chosen expert's weights are read once per call; other experts are not touched. */
static vlm_status cpu_op_matmul_id(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *x = op->a, *w = op->b, *ids = op->aux;
    int64_t T = ids->shape[0], k = ids->shape[1], E = w->shape[0], N = w->shape[1], K = w->shape[2];
    int per_slot = x->shape[0] == T * k && k > 1;
    const int32_t *id = (const int32_t *)ids->data;
    int64_t TK = T * k;
    for (int64_t i = 0; i < TK; i++)
        if (id[i] < 0 || id[i] >= E)
            return vlm_error_set(err, VLM_ERR_ARG, "matmul_id: expert id %d out of range [0, %lld)", id[i], (long long)E);
    if (TK == 0 || N == 0) return VLM_OK;
    int small = TK <= 64;
    /* shared scratch: order[TK], estart[TK+1] (int64), elist[TK] (int32), counts[E] (int64), then x rows */
    size_t idx_floats = (size_t)(TK * 2 + (TK + 1) * 2 + TK + E * 2 + 32);
    int64_t *counts = NULL;
    float *sh = cpu_shared(ctx, idx_floats);
    if (!sh) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of memory in matmul_id");
    counts = (int64_t *)sh;
    memset(counts, 0, sizeof(int64_t) * (size_t)E);
    for (int64_t i = 0; i < TK; i++) counts[id[i]]++;
    int64_t max_cnt = 0, ne = 0;
    for (int64_t e = 0; e < E; e++) {
        if (counts[e] > max_cnt) max_cnt = counts[e];
        ne += counts[e] > 0;
    }
    size_t xrows = small ? (size_t)TK : (size_t)max_cnt;
    size_t need = idx_floats + xrows * (size_t)(K + (small ? 0 : N));
    sh = cpu_shared(ctx, need); /* may move: recount below */
    if (!sh) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of memory in matmul_id");
    counts = (int64_t *)sh;
    int64_t *order = counts + E, *estart = order + TK;
    int32_t *elist = (int32_t *)(estart + TK + 1);
    float *xg = (float *)(elist + TK + 1);
    xg = (float *)(((uintptr_t)xg + 63) & ~(uintptr_t)63);
    if ((size_t)(xg - sh) + xrows * (size_t)(K + (small ? 0 : N)) > ctx->shared_n)
        return vlm_error_set(err, VLM_ERR_OOM, "cpu: matmul_id scratch layout");
    memset(counts, 0, sizeof(int64_t) * (size_t)E);
    for (int64_t i = 0; i < TK; i++) counts[id[i]]++;
    /* counting sort of the (t, j) slots by expert */
    int64_t pos = 0, ei = 0;
    for (int64_t e = 0; e < E; e++) {
        if (!counts[e]) continue;
        elist[ei] = (int32_t)e;
        estart[ei++] = pos;
        int64_t c = pos;
        for (int64_t i = 0; i < TK; i++)
            if (id[i] == e) order[c++] = i;
        pos = c;
    }
    estart[ei] = pos;
    float *out = (float *)op->out->data;
    size_t es = vlm_dtype_size(w->dtype);
    if (small) {
        for (int64_t s = 0; s < TK; s++) {
            int64_t row = per_slot ? order[s] : order[s] / k;
            cpu_load(xg + s * K, x->data, x->dtype, row * K, 1, K);
        }
        cpu_moe_arg A = {order, estart, elist, N, K, xg, (const char *)w->data, w->dtype, out};
        int64_t min_items = 16384 / (K * (TK / (ne ? ne : 1))) + 1;
        cpu_parallel(ctx, ne * N, min_items, cpu_moe_fn, &A);
        return VLM_OK;
    }
    float *og = xg + max_cnt * K;
    for (int64_t q = 0; q < ne; q++) {
        int64_t e = elist[q], cnt = estart[q + 1] - estart[q];
        for (int64_t c = 0; c < cnt; c++) {
            int64_t i = order[estart[q] + c], row = per_slot ? i : i / k;
            cpu_load(xg + c * K, x->data, x->dtype, row * K, 1, K);
        }
        vlm_status st = cpu_mm(ctx, cnt, N, K, xg, K, (const char *)w->data + e * N * K * (int64_t)es, w->dtype, K, NULL,
                               og, N, err);
        if (st) return st;
        for (int64_t c = 0; c < cnt; c++) memcpy(out + order[estart[q] + c] * N, og + c * N, (size_t)N * 4);
    }
    return VLM_OK;
}

/* ------------------------------------------------------------------ attention */

#define CPU_ATTN_BLOCK 256

typedef struct cpu_attn_arg {
    cpu_ctx *ctx;
    const vlm_op *op;
    int64_t T, Hq, Hkv, D, Dv, S, group;
} cpu_attn_arg;

static inline int cpu_visible(const vlm_attn_params *p, int64_t i, int64_t j) {
    if (p->k_pos && p->k_pos[j] < 0) return 0;
    if (p->q_seg && p->q_seg[i] != p->k_seg[j]) return 0;
    if (p->causal) {
        int ok = p->k_pos[j] <= p->q_pos[i];
        if (!ok && p->q_group && p->q_group[i] >= 0 && p->q_group[i] == p->k_group[j]) ok = 1;
        if (!ok) return 0;
    }
    if (p->window > 0 && p->q_pos[i] - p->k_pos[j] >= p->window) return 0;
    return 1;
}

static void cpu_attn_fn(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_attn_arg *A = (cpu_attn_arg *)p;
    const vlm_op *op = A->op;
    const vlm_attn_params *ap = &op->attn;
    const vlm_tensor *q = op->a, *k = op->b, *v = op->c;
    int64_t D = A->D, Dv = A->Dv;
    size_t ek = vlm_dtype_size(k->dtype), ev = vlm_dtype_size(v->dtype);
    float *qb = A->ctx->tscratch[tid], *acc = qb + D, *sc = acc + Dv;
    int32_t *idx = (int32_t *)(sc + CPU_ATTN_BLOCK);
    for (int64_t r = r0; r < r1; r++) {
        int64_t t = r / A->Hq, h = r % A->Hq, hk = h / A->group;
        cpu_load(qb, q->data, q->dtype, t * q->stride[0] + h * q->stride[1], 1, D);
        float m = -INFINITY, l = 0;
        memset(acc, 0, (size_t)Dv * 4);
        for (int64_t j0 = 0; j0 < A->S; j0 += CPU_ATTN_BLOCK) {
            int64_t j1 = j0 + CPU_ATTN_BLOCK < A->S ? j0 + CPU_ATTN_BLOCK : A->S;
            int nv = 0;
            for (int64_t j = j0; j < j1; j++) {
                if (!cpu_visible(ap, t, j)) continue;
                const char *kr = (const char *)k->data + (j * k->stride[0] + hk * k->stride[1]) * (int64_t)ek;
                float s = cpu_dot(qb, kr, k->dtype, D) * ap->scale;
                if (ap->softcap > 0) s = tanhf(s / ap->softcap) * ap->softcap;
                sc[nv] = s;
                idx[nv++] = (int32_t)j;
            }
            if (!nv) continue;
            float bm = cpu_max(sc, nv);
            if (bm > m) {
                if (l > 0) {
                    float f = expf(m - bm);
                    l *= f;
                    cpu_scale_inplace(acc, f, Dv);
                }
                m = bm;
            }
            l += cpu_exp_sub_sum(sc, sc, m, nv);
            for (int c = 0; c < nv; c++) {
                const char *vr = (const char *)v->data + (idx[c] * v->stride[0] + hk * v->stride[1]) * (int64_t)ev;
                cpu_axpy(acc, sc[c], vr, v->dtype, Dv);
            }
        }
        float *o = (float *)op->out->data + r * Dv;
        if (l > 0) {
            float inv = 1.0f / l;
            for (int64_t i = 0; i < Dv; i++) o[i] = acc[i] * inv;
        } else memset(o, 0, (size_t)Dv * 4);
    }
}

/* Tiled attention (flash-attention style, BLAS micro-GEMMs): one work item
 * is a tile of Tq queries times the `group` query heads sharing one KV head,
 * R = Tq*group rows. For each block of BK keys: S = Q.K^T (sgemm), mask,
 * online softmax, O += P.V (sgemm). K/V blocks in f16/bf16 are converted
 * once per tile and reused by all R rows. */
#define CPU_FA_BK 128
#define CPU_FA_PART 512 /* keys per part when decode splits the keys (a multiple of the block sizes) */

typedef struct cpu_fa_arg {
    cpu_ctx *ctx;
    const vlm_op *op;
    int64_t T, Hq, Hkv, D, Dv, S, group, Tq, R, ntiles;
    int64_t bk;                   /* keys per block, at most CPU_FA_BK */
    const struct cpu_span *kspan; /* per key block */
    int64_t nparts, part_len;     /* keys split into parts (decode with few KV heads) */
    float *part;                  /* per (g, tile, part): R rows of [m, l, O[Dv]] */
} cpu_fa_arg;

/* Summary of a run of queries or keys, to skip or fully accept blocks
 * without testing every (query, key) pair. */
typedef struct cpu_span {
    int32_t pmin, pmax;   /* positions of live entries */
    int32_t smin, smax;   /* segments */
    int live, all_live;   /* any / all k_pos >= 0 */
    int grouped;          /* any group id >= 0 */
} cpu_span;

static void cpu_span_make(cpu_span *sp, const int32_t *pos, const int32_t *seg, const int32_t *grp, int64_t j0, int64_t n) {
    sp->pmin = INT32_MAX; sp->pmax = INT32_MIN; sp->smin = INT32_MAX; sp->smax = INT32_MIN;
    sp->live = 0; sp->all_live = 1; sp->grouped = 0;
    for (int64_t j = j0; j < j0 + n; j++) {
        int32_t p = pos ? pos[j] : 0;
        if (p < 0) { sp->all_live = 0; continue; }
        sp->live = 1;
        if (p < sp->pmin) sp->pmin = p;
        if (p > sp->pmax) sp->pmax = p;
        if (seg) { if (seg[j] < sp->smin) sp->smin = seg[j]; if (seg[j] > sp->smax) sp->smax = seg[j]; }
        if (grp && grp[j] >= 0) sp->grouped = 1;
    }
}

/* -1: no pair visible, 1: every pair visible, 0: test each pair. */
static int cpu_span_class(const vlm_attn_params *p, const cpu_span *q, const cpu_span *k) {
    if (!k->live) return -1;
    if (p->q_seg && (q->smax < k->smin || k->smax < q->smin)) return -1;
    int groups = q->grouped && k->grouped;
    if (p->causal && !groups && k->pmin > q->pmax) return -1;
    if (p->window > 0 && (int64_t)q->pmin - k->pmax >= p->window) return -1;
    if (!k->all_live) return 0;
    if (p->q_seg && !(q->smin == q->smax && k->smin == k->smax && q->smin == k->smin)) return 0;
    if (p->causal && k->pmax > q->pmin) return 0;
    if (p->window > 0 && (int64_t)q->pmax - k->pmin >= p->window) return 0;
    return 1;
}

static size_t cpu_fa_scratch(int64_t R, int64_t Tq, int64_t D, int64_t Dv) {
    return (size_t)(R * D + R * Dv + R * CPU_FA_BK + CPU_FA_BK * D + CPU_FA_BK * Dv + 2 * R + Tq * CPU_FA_BK / 4 + 64);
}

static void cpu_fa_fn(void *p, int64_t i0, int64_t i1, int tid) {
    cpu_fa_arg *A = (cpu_fa_arg *)p;
    const vlm_op *op = A->op;
    const vlm_attn_params *ap = &op->attn;
    const vlm_tensor *q = op->a, *k = op->b, *v = op->c;
    const int64_t D = A->D, Dv = A->Dv, G = A->group, BK = A->bk;
    size_t ek = vlm_dtype_size(k->dtype), ev = vlm_dtype_size(v->dtype);
    float *Q = A->ctx->tscratch[tid], *O = Q + A->R * D, *P = O + A->R * Dv, *Kf = P + A->R * BK, *Vf = Kf + BK * D;
    float *mrow = Vf + BK * Dv, *lrow = mrow + A->R;
    uint8_t *vis = (uint8_t *)(lrow + A->R);
    for (int64_t item = i0; item < i1; item++) {
        int64_t part = item % A->nparts, gt = item / A->nparts;
        int64_t g = gt / A->ntiles, t0 = (gt % A->ntiles) * A->Tq;
        int64_t jbeg = part * A->part_len, jend = jbeg + A->part_len < A->S ? jbeg + A->part_len : A->S;
        int64_t tq = A->T - t0 < A->Tq ? A->T - t0 : A->Tq, R = tq * G;
        for (int64_t ti = 0; ti < tq; ti++)
            for (int64_t gi = 0; gi < G; gi++)
                cpu_load(Q + (ti * G + gi) * D, q->data, q->dtype, (t0 + ti) * q->stride[0] + (g * G + gi) * q->stride[1], 1, D);
        memset(O, 0, sizeof(float) * (size_t)(R * Dv));
        for (int64_t r = 0; r < R; r++) { mrow[r] = -INFINITY; lrow[r] = 0; }
        cpu_span qspan;
        cpu_span_make(&qspan, ap->q_pos, ap->q_seg, ap->q_group, t0, tq);
        qspan.all_live = qspan.live = 1;
        for (int64_t j0 = jbeg; j0 < jend; j0 += BK) {
            int64_t nb = jend - j0 < BK ? jend - j0 : BK;
            /* visibility of the block for each query of the tile; trim to visible columns */
            int cls = A->kspan ? cpu_span_class(ap, &qspan, &A->kspan[j0 / BK]) : 1;
            if (cls < 0) continue;
            int64_t jlo = nb, jhi = -1;
            if (cls > 0) {
                memset(vis, 1, (size_t)(tq * BK));
                jlo = 0;
                jhi = nb - 1;
            } else
                for (int64_t ti = 0; ti < tq; ti++)
                    for (int64_t jj = 0; jj < nb; jj++) {
                        uint8_t vv = (uint8_t)cpu_visible(ap, t0 + ti, j0 + jj);
                        vis[ti * BK + jj] = vv;
                        if (vv) { if (jj < jlo) jlo = jj; if (jj > jhi) jhi = jj; }
                    }
            if (jhi < 0) continue;
            int64_t nc = jhi - jlo + 1, jb = j0 + jlo;
            const float *Kb, *Vb;
            int64_t ldk, ldv;
            const char *kbase = (const char *)k->data + (jb * k->stride[0] + g * k->stride[1]) * (int64_t)ek;
            const char *vbase = (const char *)v->data + (jb * v->stride[0] + g * v->stride[1]) * (int64_t)ev;
            if (k->dtype == VLM_F32 && k->stride[0] >= D) { Kb = (const float *)kbase; ldk = k->stride[0]; }
            else {
                for (int64_t jj = 0; jj < nc; jj++) cpu_to_f32(Kf + jj * D, kbase + jj * k->stride[0] * (int64_t)ek, k->dtype, D);
                Kb = Kf; ldk = D;
            }
            if (v->dtype == VLM_F32 && v->stride[0] >= Dv) { Vb = (const float *)vbase; ldv = v->stride[0]; }
            else {
                for (int64_t jj = 0; jj < nc; jj++) cpu_to_f32(Vf + jj * Dv, vbase + jj * v->stride[0] * (int64_t)ev, v->dtype, Dv);
                Vb = Vf; ldv = Dv;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)R, (int)nc, (int)D, ap->scale, Q, (int)D, Kb, (int)ldk,
                        0.0f, P, (int)BK);
            for (int64_t r = 0; r < R; r++) {
                float *pr = P + r * BK;
                const uint8_t *vr = vis + (r / G) * BK + jlo;
                if (ap->softcap > 0) {
                    float inv = 1.0f / ap->softcap;
                    for (int64_t jj = 0; jj < nc; jj++) pr[jj] = tanhf(pr[jj] * inv) * ap->softcap;
                }
                for (int64_t jj = 0; jj < nc; jj++) if (!vr[jj]) pr[jj] = -INFINITY;
                float bm = cpu_max(pr, nc);
                if (bm == -INFINITY) { memset(pr, 0, sizeof(float) * (size_t)nc); continue; }
                if (bm > mrow[r]) {
                    if (lrow[r] > 0) {
                        float f = expf(mrow[r] - bm);
                        lrow[r] *= f;
                        cpu_scale_inplace(O + r * Dv, f, Dv);
                    }
                    mrow[r] = bm;
                }
                lrow[r] += cpu_exp_sub_sum(pr, pr, mrow[r], nc);
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)R, (int)Dv, (int)nc, 1.0f, P, (int)BK, Vb, (int)ldv,
                        1.0f, O, (int)Dv);
        }
        if (A->nparts > 1) { /* partial result, merged by cpu_fa_merge */
            float *dst = A->part + item * A->R * (Dv + 2);
            for (int64_t r = 0; r < R; r++) {
                dst[r * (Dv + 2)] = mrow[r];
                dst[r * (Dv + 2) + 1] = lrow[r];
                memcpy(dst + r * (Dv + 2) + 2, O + r * Dv, sizeof(float) * (size_t)Dv);
            }
            continue;
        }
        for (int64_t ti = 0; ti < tq; ti++)
            for (int64_t gi = 0; gi < G; gi++) {
                int64_t r = ti * G + gi;
                float *o = (float *)op->out->data + ((t0 + ti) * A->Hq + g * G + gi) * Dv;
                if (lrow[r] > 0) {
                    float inv = 1.0f / lrow[r];
                    for (int64_t i = 0; i < Dv; i++) o[i] = O[r * Dv + i] * inv;
                } else memset(o, 0, sizeof(float) * (size_t)Dv);
            }
    }
}

/* Combines the key parts of each (g, tile) row: softmax over the union. */
static void cpu_fa_merge(void *p, int64_t i0, int64_t i1, int tid) {
    cpu_fa_arg *A = (cpu_fa_arg *)p;
    const int64_t Dv = A->Dv, G = A->group, W = Dv + 2;
    for (int64_t gt = i0; gt < i1; gt++) {
        int64_t g = gt / A->ntiles, t0 = (gt % A->ntiles) * A->Tq;
        int64_t tq = A->T - t0 < A->Tq ? A->T - t0 : A->Tq;
        const float *base = A->part + gt * A->nparts * A->R * W;
        for (int64_t r = 0; r < tq * G; r++) {
            float m = -INFINITY, l = 0;
            for (int64_t q = 0; q < A->nparts; q++) {
                const float *e = base + (q * A->R + r) * W;
                if (e[1] > 0 && e[0] > m) m = e[0];
            }
            float *o = (float *)A->op->out->data + ((t0 + r / G) * A->Hq + g * G + r % G) * Dv;
            memset(o, 0, sizeof(float) * (size_t)Dv);
            for (int64_t q = 0; q < A->nparts; q++) {
                const float *e = base + (q * A->R + r) * W;
                if (!(e[1] > 0)) continue;
                float f = expf(e[0] - m);
                l += e[1] * f;
                for (int64_t i = 0; i < Dv; i++) o[i] += e[2 + i] * f;
            }
            if (l > 0) cpu_scale_inplace(o, 1.0f / l, Dv);
        }
    }
}

static vlm_status cpu_op_attn(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    cpu_attn_arg A = {ctx, op, op->a->shape[0], op->a->shape[1], op->b->shape[1], op->a->shape[2], op->c->shape[2],
                      op->b->shape[0], 0};
    A.group = A.Hq / A.Hkv;
    if (A.T * A.Hq == 0) return VLM_OK;
    if (A.S >= 16) { /* measured faster than the per-row path even for decode without GQA */
        cpu_fa_arg F = {ctx, op, A.T, A.Hq, A.Hkv, A.D, A.Dv, A.S, A.group, 0, 0, 0, CPU_FA_BK, NULL, 1, A.S, NULL};
        const vlm_attn_params *ap = &op->attn;
        /* packed short sequences (windowed vision attention): smaller tiles waste less on masked pairs */
        if (ap->q_seg && A.group == 1) F.bk = 64;
        int64_t tq = F.bk / A.group;
        if (tq < 1) tq = 1;
        if (tq > A.T) tq = A.T;
        F.Tq = tq;
        F.R = tq * A.group;
        F.ntiles = (A.T + tq - 1) / tq;
        /* Too few (KV head, tile) items to keep threads busy (decode with one or
         * two KV heads): split the keys into parts of CPU_FA_PART and merge.
         * The split does not depend on the thread count. */
        if (A.Hkv * F.ntiles < 4 && A.S >= 2 * CPU_FA_PART) {
            F.part_len = CPU_FA_PART;
            F.nparts = (A.S + CPU_FA_PART - 1) / CPU_FA_PART;
        }
        int64_t nblk = (A.S + F.bk - 1) / F.bk;
        size_t span_f = (size_t)nblk * sizeof(cpu_span) / sizeof(float) + 16;
        size_t part_f = F.nparts > 1 ? (size_t)(A.Hkv * F.ntiles * F.nparts * F.R * (A.Dv + 2)) : 0;
        float *sh = cpu_shared(ctx, span_f + part_f + 1);
        if (!sh) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
        if (part_f) F.part = sh + span_f;
        if (ap->k_pos || ap->k_seg) { /* block summaries of the keys */
            cpu_span *ks = (cpu_span *)sh;
            for (int64_t b = 0; b < nblk; b++)
                cpu_span_make(&ks[b], ap->k_pos, ap->k_seg, ap->k_group, b * F.bk, A.S - b * F.bk < F.bk ? A.S - b * F.bk : F.bk);
            F.kspan = ks;
        }
        if (cpu_reserve(ctx, cpu_fa_scratch(F.R, F.Tq, A.D, A.Dv)))
            return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
        cpu_parallel(ctx, A.Hkv * F.ntiles * F.nparts, 1, cpu_fa_fn, &F);
        if (F.nparts > 1) cpu_parallel(ctx, A.Hkv * F.ntiles, 1, cpu_fa_merge, &F);
        return VLM_OK;
    }
    if (cpu_reserve(ctx, (size_t)(A.D + A.Dv + 2 * CPU_ATTN_BLOCK)))
        return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    int64_t min = 1 + 65536 / ((A.S + 1) * (A.D + A.Dv));
    cpu_parallel(ctx, A.T * A.Hq, min, cpu_attn_fn, &A);
    return VLM_OK;
}

/* ------------------------------------------------------------------ concat, rows, topk, argmax, im2col */

static void cpu_concat_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    int dim = A->op->i[0], nd = A->out.ndim;
    const vlm_tensor *a = &A->a, *b = &A->b;
    int64_t D = cpu_lastdim(&A->out);
    for (int64_t r = r0; r < r1; r++) {
        float *o = (float *)A->out.data + r * D;
        if (dim == nd - 1) {
            int64_t Da = cpu_lastdim(a), Db = cpu_lastdim(b);
            cpu_load(o, a->data, a->dtype, cpu_row_off(a, r), cpu_laststride(a), Da);
            cpu_load(o + Da, b->data, b->dtype, cpu_row_off(b, r), cpu_laststride(b), Db);
        } else {
            /* multi-index of out row r; pick a or b by the index at dim */
            int64_t rr = r, ia = 0, ib = 0, use_b = 0;
            for (int d = nd - 2; d >= 0; d--) {
                int64_t i = rr % A->out.shape[d];
                rr /= A->out.shape[d];
                if (d == dim && i >= a->shape[d]) { use_b = 1; ib += (i - a->shape[d]) * b->stride[d]; }
                else if (d == dim) ia += i * a->stride[d];
                else { ia += i * a->stride[d]; ib += i * b->stride[d]; }
            }
            if (use_b) cpu_load(o, b->data, b->dtype, ib, cpu_laststride(b), D);
            else cpu_load(o, a->data, a->dtype, ia, cpu_laststride(a), D);
        }
    }
}

static vlm_status cpu_op_concat(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .b = *op->b, .out = *op->out};
    if (vlm_nelem(&A.out) == 0) return VLM_OK;
    cpu_parallel(ctx, cpu_nrows(&A.out), cpu_min_rows(cpu_lastdim(&A.out), 1), cpu_concat_rows, &A);
    return VLM_OK;
}

static vlm_status cpu_op_get_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *tab = op->a, *ids = op->b;
    int64_t V = tab->shape[0], D = tab->shape[1], n = ids->shape[0];
    float *out = (float *)op->out->data;
    for (int64_t r = 0; r < n; r++) {
        int64_t id = cpu_get_int(ids->data, ids->dtype, r * ids->stride[0]);
        if (id < 0 || id >= V)
            return vlm_error_set(err, VLM_ERR_ARG, "get_rows: id %lld out of range [0, %lld)", (long long)id, (long long)V);
    }
    for (int64_t r = 0; r < n; r++) {
        int64_t id = cpu_get_int(ids->data, ids->dtype, r * ids->stride[0]);
        cpu_load(out + r * D, tab->data, tab->dtype, id * tab->stride[0], 1, D);
    }
    return VLM_OK;
}

static vlm_status cpu_op_set_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *dst = op->a, *src = op->b, *ids = op->c;
    int64_t R = dst->shape[0], n = ids->shape[0];
    int64_t row = n ? vlm_nelem(src) / n : 0;
    for (int64_t r = 0; r < n; r++) {
        int64_t id = cpu_get_int(ids->data, ids->dtype, r * ids->stride[0]);
        if (id < 0 || id >= R)
            return vlm_error_set(err, VLM_ERR_ARG, "set_rows: id %lld out of range [0, %lld)", (long long)id, (long long)R);
    }
    int64_t Ds = cpu_lastdim(src), ss = cpu_laststride(src), nsr = cpu_nrows(src);
    if (cpu_reserve(ctx, (size_t)Ds)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    float *buf = ctx->tscratch[0];
    int same = src->dtype == dst->dtype && ss == 1;
    size_t es = vlm_dtype_size(dst->dtype);
    for (int64_t sr = 0; sr < nsr; sr++) {
        int64_t f0 = sr * Ds, so = cpu_row_off(src, sr);
        if (row % Ds == 0 || Ds == 0) {
            int64_t id = cpu_get_int(ids->data, ids->dtype, (f0 / row) * ids->stride[0]);
            int64_t doff = id * row + f0 % row;
            if (same) memcpy((char *)dst->data + doff * (int64_t)es, (const char *)src->data + so * (int64_t)es, (size_t)Ds * es);
            else {
                cpu_load(buf, src->data, src->dtype, so, ss, Ds);
                cpu_store(dst->data, dst->dtype, doff, 1, buf, Ds);
            }
        } else {
            cpu_load(buf, src->data, src->dtype, so, ss, Ds);
            for (int64_t i = 0; i < Ds; i++) {
                int64_t f = f0 + i;
                int64_t id = cpu_get_int(ids->data, ids->dtype, (f / row) * ids->stride[0]);
                cpu_store(dst->data, dst->dtype, id * row + f % row, 1, buf + i, 1);
            }
        }
    }
    return VLM_OK;
}

static void cpu_topk_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    int64_t D = cpu_lastdim(&A->a), k = A->op->i[0];
    float *buf = A->ctx->tscratch[tid];
    for (int64_t r = r0; r < r1; r++) {
        const float *x = cpu_row(&A->a, r, buf);
        float *ov = (float *)A->out.data + r * k;
        int32_t *oi = (int32_t *)A->op->aux->data + r * k;
        int64_t n = 0;
        for (int64_t i = 0; i < D; i++) {
            float v = x[i];
            if (v != v) continue;
            if (n == k && !(v > ov[k - 1])) continue;
            int64_t j = n < k ? n++ : k - 1;
            while (j > 0 && v > ov[j - 1]) { ov[j] = ov[j - 1]; oi[j] = oi[j - 1]; j--; }
            ov[j] = v;
            oi[j] = (int32_t)i;
        }
        for (; n < k; n++) { ov[n] = NAN; oi[n] = 0; }
    }
}

static void cpu_argmax_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    int64_t D = cpu_lastdim(&A->a);
    float *buf = A->ctx->tscratch[tid];
    for (int64_t r = r0; r < r1; r++) {
        const float *x = cpu_row(&A->a, r, buf);
        int64_t best = 0;
        for (int64_t i = 1; i < D; i++)
            if (x[i] > x[best]) best = i;
        ((int32_t *)A->out.data)[r] = (int32_t)best;
    }
}

static void cpu_im2col_rows(void *p, int64_t r0, int64_t r1, int tid) {
    cpu_rows_arg *A = (cpu_rows_arg *)p;
    const vlm_tensor *x = &A->a;
    int P = A->op->i[0], nd = x->ndim;
    int64_t C = x->shape[nd - 3], H = x->shape[nd - 2], W = x->shape[nd - 1];
    int64_t gh = H / P, gw = W / P, cols = C * P * P;
    int64_t sn = nd == 4 ? x->stride[0] : 0, sc = x->stride[nd - 3], sy = x->stride[nd - 2], sx = x->stride[nd - 1];
    for (int64_t r = r0; r < r1; r++) {
        int64_t n = r / (gh * gw), py = (r / gw) % gh, px = r % gw;
        float *o = (float *)A->out.data + r * cols;
        for (int64_t c = 0; c < C; c++)
            for (int64_t y = 0; y < P; y++) {
                int64_t off = n * sn + c * sc + (py * P + y) * sy + px * P * sx;
                cpu_load(o + (c * P + y) * P, x->data, x->dtype, off, sx, P);
            }
    }
}

/* ------------------------------------------------------------------ dispatch */

static vlm_status cpu_exec(vlm_backend *be, const vlm_op *op, vlm_error *err) {
    cpu_ctx *ctx = (cpu_ctx *)be->impl;
    switch (op->kind) {
    case VLM_OP_NONE: return VLM_OK;
    case VLM_OP_CPY: return cpu_op_cpy(ctx, op, err);
    case VLM_OP_MATMUL: return cpu_op_matmul(ctx, op, err);
    case VLM_OP_MATMUL_ID: return cpu_op_matmul_id(ctx, op, err);
    case VLM_OP_ADD: case VLM_OP_MUL: case VLM_OP_SCALE: case VLM_OP_UNARY: case VLM_OP_GLU:
        return cpu_op_ew(ctx, op, err);
    case VLM_OP_RMS_NORM: case VLM_OP_LAYER_NORM: return cpu_op_rows(ctx, op, err, cpu_norm_rows, 4);
    case VLM_OP_SOFTMAX: return cpu_op_rows(ctx, op, err, cpu_softmax_rows, 8);
    case VLM_OP_ROPE: return cpu_op_rope(ctx, op, err);
    case VLM_OP_ATTN: return cpu_op_attn(ctx, op, err);
    case VLM_OP_CONCAT: return cpu_op_concat(ctx, op, err);
    case VLM_OP_GET_ROWS: return cpu_op_get_rows(ctx, op, err);
    case VLM_OP_SET_ROWS: return cpu_op_set_rows(ctx, op, err);
    case VLM_OP_TOPK: return cpu_op_rows(ctx, op, err, cpu_topk_rows, 2);
    case VLM_OP_ARGMAX: return cpu_op_rows(ctx, op, err, cpu_argmax_rows, 1);
    case VLM_OP_IM2COL: {
        cpu_rows_arg A = {.ctx = ctx, .op = op, .a = *op->a, .out = *op->out};
        int64_t rows = op->out->shape[0];
        if (rows) cpu_parallel(ctx, rows, 4, cpu_im2col_rows, &A);
        return VLM_OK;
    }
    default: return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "cpu backend: op %d not implemented", (int)op->kind);
    }
}

/* ------------------------------------------------------------------ backend object */

static void *cpu_alloc(vlm_backend *be, size_t n) {
    return aligned_alloc(64, ((n ? n : 1) + 63) & ~(size_t)63);
}
static void cpu_free(vlm_backend *be, void *p) { free(p); }
static void cpu_copy(vlm_backend *be, void *dst, const void *src, size_t n) {
    if (n) memmove(dst, src, n);
}

static void cpu_destroy(vlm_backend *be) {
    if (!be) return;
    cpu_ctx *ctx = (cpu_ctx *)be->impl;
    if (ctx->th) {
        pthread_mutex_lock(&ctx->mu);
        ctx->stop = 1;
        atomic_fetch_add(&ctx->gen, 1);
        pthread_cond_broadcast(&ctx->cv_work);
        pthread_mutex_unlock(&ctx->mu);
        for (int i = 1; i < ctx->n; i++)
            if (ctx->th[i]) pthread_join(ctx->th[i], NULL);
        free(ctx->th);
    }
    if (ctx->tscratch)
        for (int t = 0; t < ctx->n; t++) free(ctx->tscratch[t]);
    free(ctx->tscratch);
    free(ctx->tscratch_n);
    free(ctx->shared);
    pthread_mutex_destroy(&ctx->mu);
    pthread_cond_destroy(&ctx->cv_work);
    pthread_cond_destroy(&ctx->cv_done);
    free(ctx);
}

vlm_backend *vlm_backend_cpu(int n_threads, vlm_error *err) {
    if (n_threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        n_threads = n > 0 ? (int)n : 1;
    }
    if (n_threads > 256) n_threads = 256;
    cpu_ctx *ctx = (cpu_ctx *)calloc(1, sizeof *ctx);
    if (!ctx) { vlm_error_set(err, VLM_ERR_OOM, "out of memory for the CPU backend"); return NULL; }
    ctx->n = n_threads;
    pthread_mutex_init(&ctx->mu, NULL);
    pthread_cond_init(&ctx->cv_work, NULL);
    pthread_cond_init(&ctx->cv_done, NULL);
    ctx->be.name = "cpu";
    ctx->be.impl = ctx;
    ctx->be.exec = cpu_exec;
    ctx->be.alloc = cpu_alloc;
    ctx->be.free = cpu_free;
    ctx->be.upload = cpu_copy;
    ctx->be.download = cpu_copy;
    ctx->be.destroy = cpu_destroy;
    ctx->be.n_threads = n_threads;
    ctx->tscratch = (float **)calloc((size_t)n_threads, sizeof(float *));
    ctx->tscratch_n = (size_t *)calloc((size_t)n_threads, sizeof(size_t));
    ctx->th = (pthread_t *)calloc((size_t)n_threads, sizeof(pthread_t));
    if (!ctx->tscratch || !ctx->tscratch_n || !ctx->th) {
        ctx->n = 1;
        cpu_destroy(&ctx->be);
        vlm_error_set(err, VLM_ERR_OOM, "out of memory for the CPU backend");
        return NULL;
    }
    /* Our threads split the work; each BLAS call runs single-threaded. */
    openblas_set_num_threads(1);
    for (int i = 1; i < n_threads; i++) {
        cpu_worker_arg *wa = (cpu_worker_arg *)malloc(sizeof *wa);
        if (wa) { wa->ctx = ctx; wa->id = i; }
        if (!wa || pthread_create(&ctx->th[i], NULL, cpu_worker, wa) != 0) {
            free(wa);
            ctx->n = i; /* join the ones started */
            cpu_destroy(&ctx->be);
            vlm_error_set(err, VLM_ERR_OOM, "cannot start CPU worker thread %d", i);
            return NULL;
        }
    }
    return &ctx->be;
}
