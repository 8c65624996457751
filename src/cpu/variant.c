/* One instruction-set variant of the kernel families: compiled once per
 * variant with CPU_VARIANT_<NAME> defined (the Makefile does; the generated
 * vlm_cpu.c repeats this file's text per variant). The variant's target is
 * set here by pragma, not by compiler flags, so a build for a baseline
 * x86-64 still carries the AVX2 kernels and picks them at run time. */
#include "cpu/cpu.h"

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64)
#include <immintrin.h> /* before the target pragma: the headers carry their own targets */
#define CPU_X86 1
#else
#define CPU_X86 0
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#define CPU_ARM64 1
#else
#define CPU_ARM64 0
#endif

/* Each variant elsewhere (avx2 on ARM, neon on x86) is a portable copy
 * that is never picked. */
#if defined(CPU_VARIANT_AVX2)
#define CPU_EXEC cpu_exec_avx2
#define CPU_AVX2 CPU_X86
#define CPU_NEON 0
#define CPU_DOTPROD 0
#elif defined(CPU_VARIANT_SCALAR)
#define CPU_EXEC cpu_exec_scalar
#define CPU_AVX2 0
#define CPU_NEON 0
#define CPU_DOTPROD 0
#elif defined(CPU_VARIANT_NEON)
#define CPU_EXEC cpu_exec_neon
#define CPU_AVX2 0
#define CPU_NEON CPU_ARM64
#define CPU_DOTPROD 0
#elif defined(CPU_VARIANT_DOTPROD)
#define CPU_EXEC cpu_exec_dotprod
#define CPU_AVX2 0
#define CPU_NEON CPU_ARM64
#define CPU_DOTPROD CPU_ARM64
#else
#error "define CPU_VARIANT_SCALAR, _AVX2, _NEON or _DOTPROD"
#endif
#if CPU_AVX2
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif
#endif

#if CPU_DOTPROD
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("dotprod"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("arch=armv8.2-a+dotprod")
#endif
#endif

#include "cpu/kernels/kernels.h"
#include "cpu/kernels/copy.c"
#include "cpu/kernels/elementwise.c"
#include "cpu/kernels/gemm.c"
#include "cpu/kernels/gemm_i8.c"
#include "cpu/kernels/gemv_quant.c"
#include "cpu/kernels/matmul.c"
#include "cpu/kernels/moe.c"
#include "cpu/kernels/attention.c"
#include "cpu/kernels/rows.c"

CPU_FN vlm_status CPU_EXEC(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
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

#if CPU_AVX2 || CPU_DOTPROD
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
#undef CPU_AVX2
#undef CPU_NEON
#undef CPU_DOTPROD
#undef CPU_EXEC
#undef CPU_X86
#undef CPU_ARM64
