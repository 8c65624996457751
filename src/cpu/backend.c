/* The backend object: op dispatch, memory, creation and teardown. */
#include "cpu/cpu.h"

/* ------------------------------------------------------------------ dispatch */

static vlm_status cpu_exec_locked(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
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

/* Sessions on other threads may share this backend: one op at a time. */
static vlm_status cpu_exec(vlm_backend *be, const vlm_op *op, vlm_error *err) {
    cpu_ctx *ctx = (cpu_ctx *)be->impl;
    vlm_mutex_lock(ctx->exec_mu);
    vlm_status s = cpu_exec_locked(ctx, op, err);
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
    vlm_mutex_free(ctx->mu);
    vlm_mutex_free(ctx->exec_mu);
    vlm_cond_free(ctx->cv_work);
    vlm_cond_free(ctx->cv_done);
    free(ctx);
}

const char *vlm_cpu_kernels(void) { return CPU_AVX2 ? "avx2" : "scalar"; }

vlm_backend *vlm_backend_cpu(int n_threads, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
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
    /* Our threads split the work; each BLAS call runs single-threaded. */
    openblas_set_num_threads(1);
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
