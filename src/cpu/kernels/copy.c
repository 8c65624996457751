/* CPY: conversion between dtypes and layouts (strided source or destination). */
#include "cpu/kernels/kernels.h"

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
                case VLM_I8: ((int8_t *)dst)[i * so] = (int8_t)(v > 127 ? 127 : v < -128 ? -128 : v); break;
                default: ((uint8_t *)dst)[i * so] = (uint8_t)v; break;
                }
            }
        } else {
            cpu_load(buf, a->data, a->dtype, ia, sa, D);
            cpu_store(o->data, o->dtype, io, so, buf, D);
        }
    }
}

CPU_KFN vlm_status cpu_op_cpy(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
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
