/* The backend object: op dispatch, memory, creation and teardown. */
#include "cpu/cpu.h"

#include <stdio.h>

/* ------------------------------------------------------------------ kernel variants */

typedef struct cpu_variant {
    const char *name;
    unsigned needs; /* VLM_CPU_* bits */
    cpu_exec_fn exec;
    int bf16_dot;   /* has bf16 dot-product instructions: bf16 compute by default */
    const char *paths; /* the kernel of each path, for vlm info --cpu */
} cpu_variant;

/* Fastest first. */
static const cpu_variant cpu_variants[] = {
#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
    {"avx2", VLM_CPU_AVX2, cpu_exec_avx2, 0,
     "matmul, 32+ rows  packed-panel GEMM, 6x16 FMA tile (gemm.c)\n"
     "matmul, 1-31 rows AVX2 GEMV on the weights as stored\n"
     "int8 matmul       int16 pairs, vpmaddwd, 6x16 tile (gemm_i8.c)\n"
#if defined(VLM_HAVE_BLAS)
     "attention         flash tiles on the GEMM engine; decode rows on sgemm\n"
#else
     "attention         flash tiles on the GEMM engine; decode rows on AVX2 dots\n"
#endif
     "element-wise      AVX2: exp, softmax, GELU (tanh, erf), SiLU, tanh, RMS sums; others C\n"},
#elif defined(__aarch64__)
    {"dotprod", VLM_CPU_NEON | VLM_CPU_DOTPROD, cpu_exec_dotprod, 0,
     "matmul, 32+ rows  packed-panel GEMM, 6x16 NEON FMA tile (gemm.c)\n"
     "matmul, 1-31 rows NEON dot products on the weights as stored\n"
     "quantized GEMV    SDOT on 8 interleaved rows (gemv_quant.c)\n"
     "int8 matmul       portable C\n"
     "attention         flash tiles on the GEMM engine; decode rows on NEON dots\n"
     "element-wise      portable C\n"},
    {"neon", VLM_CPU_NEON, cpu_exec_neon, 0,
     "matmul, 32+ rows  packed-panel GEMM, 6x16 NEON FMA tile (gemm.c)\n"
     "matmul, 1-31 rows NEON dot products on the weights as stored\n"
     "quantized GEMV    NEON widening int8 products, row by row\n"
     "int8 matmul       portable C\n"
     "attention         flash tiles on the GEMM engine; decode rows on NEON dots\n"
     "element-wise      portable C\n"},
#endif
    {"scalar", 0, cpu_exec_scalar, 0,
#if defined(VLM_HAVE_BLAS)
     "matmul, 32+ rows  OpenBLAS sgemm on tiles converted to f32\n"
#else
     "matmul, 32+ rows  packed-panel GEMM, portable C tile (gemm.c)\n"
#endif
     "matmul, 1-31 rows portable C GEMV\n"
     "int8 matmul       portable C\n"
     "attention         flash tiles on sgemm\n"
     "element-wise      portable C\n"},
};
#define CPU_N_VARIANTS (int)(sizeof cpu_variants / sizeof cpu_variants[0])

static int cpu_variant_runs(const cpu_variant *v, unsigned have) { return (v->needs & have) == v->needs; }

/* want: a variant's name, "auto", or NULL/"" for $VLM_KERNELS or else auto. */
static const cpu_variant *cpu_pick_variant(const char *want, vlm_error *err) {
    if (!want || !*want) want = getenv("VLM_KERNELS");
    if (!want || !*want) want = "auto";
    unsigned have = vlm_cpu_features();
    int is_auto = !strcmp(want, "auto");
    for (int i = 0; i < CPU_N_VARIANTS; i++) {
        const cpu_variant *v = &cpu_variants[i];
        if (!is_auto && strcmp(want, v->name)) continue;
        if (cpu_variant_runs(v, have)) return v;
        if (!is_auto) {
            vlm_error_set(err, VLM_ERR_UNSUPPORTED, "cpu: kernels '%s' need instructions this CPU lacks", want);
            return NULL;
        }
    }
    char names[128] = "";
    for (int i = 0; i < CPU_N_VARIANTS; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", cpu_variants[i].name);
    vlm_error_set(err, VLM_ERR_ARG, "cpu: unknown kernels '%s' (this build has: %s, auto)", want, names);
    return NULL;
}

const char *vlm_cpu_kernel_name(int i) {
    unsigned have = vlm_cpu_features();
    for (int k = 0; k < CPU_N_VARIANTS; k++)
        if (cpu_variant_runs(&cpu_variants[k], have) && i-- == 0) return cpu_variants[k].name;
    return NULL;
}

const char *vlm_cpu_kernel_paths(const char *name) {
    for (int k = 0; k < CPU_N_VARIANTS; k++)
        if (name && !strcmp(name, cpu_variants[k].name)) return cpu_variants[k].paths;
    return NULL;
}

const char *vlm_cpu_kernels(void) {
    const cpu_variant *v = cpu_pick_variant(NULL, NULL);
    return v ? v->name : "invalid VLM_KERNELS";
}

/* Sessions on other threads may share this backend: one op at a time. */
static vlm_status cpu_exec(vlm_backend *be, const vlm_op *op, vlm_error *err) {
    cpu_ctx *ctx = (cpu_ctx *)be->impl;
    vlm_mutex_lock(ctx->exec_mu);
    vlm_status s = ctx->exec(ctx, op, err);
    vlm_mutex_unlock(ctx->exec_mu);
    return s;
}

/* ------------------------------------------------------------------ backend object */

static void *cpu_alloc(vlm_backend *be, size_t n) {
    (void)be;
    return vlm_aligned_alloc(64, n);
}
static void cpu_free(vlm_backend *be, void *p) {
    (void)be;
    vlm_aligned_free(p);
}
static void cpu_copy(vlm_backend *be, void *dst, const void *src, size_t n) {
    (void)be;
    if (n) memmove(dst, src, n);
}

static void cpu_destroy(vlm_backend *be) {
    if (!be) return;
    cpu_ctx *ctx = (cpu_ctx *)be->impl;
    if (ctx->th && ctx->mu && ctx->cv_work) {
        vlm_mutex_lock(ctx->mu);
        ctx->stop = 1;
        atomic_fetch_add(&ctx->gen, 1);
        vlm_cond_broadcast(ctx->cv_work);
        vlm_mutex_unlock(ctx->mu);
        for (int i = 1; i < ctx->n; i++)
            vlm_thread_join(ctx->th[i]);
    }
    free(ctx->th);
    if (ctx->tscratch)
        for (int t = 0; t < ctx->n; t++) vlm_aligned_free(ctx->tscratch[t]);
    free(ctx->tscratch);
    free(ctx->tscratch_n);
    vlm_aligned_free(ctx->shared);
    vlm_aligned_free(ctx->rounded);
    vlm_aligned_free(ctx->xq);
    vlm_mutex_free(ctx->mu);
    vlm_mutex_free(ctx->exec_mu);
    vlm_cond_free(ctx->cv_work);
    vlm_cond_free(ctx->cv_done);
    free(ctx);
}

vlm_backend *vlm_backend_cpu(int n_threads, vlm_error *err) {
    vlm_cpu_params p = {.n_threads = n_threads};
    return vlm_backend_cpu_new(&p, err);
}

vlm_backend *vlm_backend_cpu_new(const vlm_cpu_params *p, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    const cpu_variant *v = cpu_pick_variant(p ? p->kernels : NULL, err);
    if (!v) return NULL;
    const char *compute = p && p->compute && *p->compute ? p->compute : "auto";
    int bf16;
    if (!strcmp(compute, "auto")) bf16 = v->bf16_dot;
    else if (!strcmp(compute, "f32") || !strcmp(compute, "bf16")) bf16 = compute[0] == 'b';
    else {
        vlm_error_set(err, VLM_ERR_ARG, "cpu: unknown compute mode '%s' (f32, bf16 or auto)", compute);
        return NULL;
    }
    int n_threads = p ? p->n_threads : 0;
    if (n_threads <= 0) {
        n_threads = vlm_cpu_count();
    }
    if (n_threads > 256) n_threads = 256;
    cpu_ctx *ctx = (cpu_ctx *)calloc(1, sizeof *ctx);
    if (!ctx) { vlm_error_set(err, VLM_ERR_OOM, "out of memory for the CPU backend"); return NULL; }
    ctx->n = n_threads;
    ctx->mu = vlm_mutex_new();
    ctx->exec_mu = vlm_mutex_new();
    ctx->cv_work = vlm_cond_new();
    ctx->cv_done = vlm_cond_new();
    ctx->be.name = "cpu";
    ctx->be.kernels = v->name;
    ctx->be.compute = bf16 ? "bf16" : "f32";
    ctx->bf16 = bf16;
    ctx->exec = v->exec;
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
    ctx->th = (vlm_thread **)calloc((size_t)n_threads, sizeof(vlm_thread *));
    if (!ctx->tscratch || !ctx->tscratch_n || !ctx->th || !ctx->mu || !ctx->exec_mu || !ctx->cv_work || !ctx->cv_done) {
        ctx->n = 1;
        cpu_destroy(&ctx->be);
        vlm_error_set(err, VLM_ERR_OOM, "out of memory for the CPU backend");
        return NULL;
    }
#if defined(VLM_HAVE_BLAS)
    /* Our threads split the work; each BLAS call runs single-threaded. */
    openblas_set_num_threads(1);
#endif
    for (int i = 1; i < n_threads; i++) {
        cpu_worker_arg *wa = (cpu_worker_arg *)malloc(sizeof *wa);
        if (wa) { wa->ctx = ctx; wa->id = i; }
        if (!wa || !(ctx->th[i] = vlm_thread_start(cpu_worker, wa))) {
            free(wa);
            ctx->n = i; /* join the ones started */
            cpu_destroy(&ctx->be);
            vlm_error_set(err, VLM_ERR_OOM, "cannot start CPU worker thread %d", i);
            return NULL;
        }
    }
    return &ctx->be;
}
