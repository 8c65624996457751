/* Matrix products: a SIMD GEMV that reads f32/f16/bf16 weights directly
 * for few rows; for many, the packed-panel GEMM engine (gemm.c) where the
 * variant has one, else sgemm (OpenBLAS) on weight tiles converted to f32.
 * New engines (bf16 dot products, AMX, int8) land beside these as their own
 * files, chosen in cpu_mm.
 *
 * bf16 compute (ctx->bf16): every matmul's x is rounded to bf16 first, and
 * f16/f32 weights are rounded as they are read, so results are those of a
 * bf16 x bf16 -> f32 engine whichever path runs. */
#include "cpu/kernels/kernels.h"

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
    int64_t nb;         /* rows of w per tile (GEMM path) */
    int64_t mb, mtiles; /* rows of x per tile, number of row tiles */
    int round_w;        /* bf16 compute on f16/f32 weights */
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
CPU_KFN void cpu_dotm(const float *x, int64_t lda, int m, const void *w, vlm_dtype wt, int64_t K, float *res) {
    if (wt == VLM_BF16) CPU_DOTM_CASES(VLM_BF16)
    if (wt == VLM_F16) CPU_DOTM_CASES(VLM_F16)
    CPU_DOTM_CASES(VLM_F32)
}
#else
CPU_KFN void cpu_dotm(const float *x, int64_t lda, int m, const void *w, vlm_dtype wt, int64_t K, float *res) {
    for (int r = 0; r < m; r++) res[r] = cpu_dot(x + r * lda, w, wt, K);
}
#endif

static void cpu_gemv_fn(void *p, int64_t n0, int64_t n1, int tid) {
    cpu_mm_arg *A = (cpu_mm_arg *)p;
    vlm_dtype wt = A->round_w ? VLM_F32 : A->wt;
    for (int64_t n = n0; n < n1; n++) {
        const void *wr = A->w + cpu_bytes(A->wt, n * A->ldw);
        if (A->round_w) { /* a row at a time: bf16 compute on f16/f32 weights is for tests and tiny models */
            cpu_to_f32_round(A->ctx->tscratch[tid], wr, A->wt, A->K, 1);
            wr = A->ctx->tscratch[tid];
        }
        float b = A->bias ? A->bias[n] : 0.0f;
        for (int64_t m = 0; m < A->M; m += 4) {
            float res[4];
            int mm = A->M - m < 4 ? (int)(A->M - m) : 4;
            cpu_dotm(A->x + m * A->lda, A->lda, mm, wr, wt, A->K, res);
            for (int r = 0; r < mm; r++) A->out[(m + r) * A->ldo + n] = res[r] + b;
        }
    }
}

/* Work item t: w tile t / mtiles (nb rows of w), x tile t % mtiles (mb rows).
 * Consecutive items share a w tile, converted (AVX2: packed) once per run of
 * items. */
static void cpu_gemm_fn(void *p, int64_t t0, int64_t t1, int tid) {
    cpu_mm_arg *A = (cpu_mm_arg *)p;
    float *s = A->ctx->tscratch[tid];
    int64_t have = -1;
    for (int64_t t = t0; t < t1; t++) {
        int64_t nt = t / A->mtiles, mt = t % A->mtiles;
        int64_t n0 = nt * A->nb, nb = A->N - n0 < A->nb ? A->N - n0 : A->nb;
        int64_t m0 = mt * A->mb, mb = A->M - m0 < A->mb ? A->M - m0 : A->mb;
        const char *wt0 = A->w + cpu_bytes(A->wt, n0 * A->ldw);
        float *o = A->out + m0 * A->ldo + n0;
#if CPU_PACKED
        if (have != nt) /* the panels, then 8 rows of conversion scratch */
            cpu_pack_panels(s, wt0, A->wt, A->ldw, nb, A->K, A->round_w, s + (A->nb + 15) / 16 * 16 * A->K);
        cpu_gemm_panels(A->x + m0 * A->lda, A->lda, mb, s, nb, A->K, o, A->ldo, 0);
#else
        const float *wp = s;
        int64_t ldb = A->K;
        if (A->wt == VLM_F32 && A->ldw >= A->K && !A->round_w) { /* BLAS needs ldb >= K; other strides are copied */
            wp = (const float *)wt0;
            ldb = A->ldw;
        } else if (have != nt)
            cpu_rows_to_f32(s, A->K, wt0, A->wt, A->ldw, 0, nb, A->K, A->round_w);
        cpu_sgemm(1, mb, nb, A->K, 1.0f, A->x + m0 * A->lda, A->lda, wp, ldb, 0.0f, o, A->ldo);
#endif
        have = nt;
        if (A->bias)
            for (int64_t m = 0; m < mb; m++)
                for (int64_t n = 0; n < nb; n++) o[m * A->ldo + n] += A->bias[n0 + n];
    }
}

/* Scratch per thread: AVX2, the panels of a w tile and 8 conversion rows;
 * otherwise the w tile in f32. */
static size_t cpu_gemm_scratch(int64_t nb, int64_t K) {
    return (size_t)((CPU_PACKED ? (nb + 15) / 16 * 16 + 8 : nb) * K);
}

/* out[M, N] (row stride ldo) = x[M, K] . w[N, K]^T + bias. x f32 with row stride lda. */
CPU_KFN vlm_status cpu_mm(cpu_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *x, int64_t lda, const void *w,
                         vlm_dtype wt, int64_t ldw, const float *bias, float *out, int64_t ldo, vlm_error *err) {
    if (M == 0 || N == 0) return VLM_OK;
    if (K == 0) {
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) out[m * ldo + n] = bias ? bias[n] : 0;
        return VLM_OK;
    }
    if (ctx->bf16) {
        float *xr = cpu_rounded(ctx, (size_t)(M * K));
        if (!xr) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of memory rounding a matmul input to bf16");
        for (int64_t m = 0; m < M; m++) {
            memcpy(xr + m * K, x + m * lda, (size_t)K * sizeof(float));
            cpu_round_bf16(xr + m * K, K);
        }
        x = xr;
        lda = K;
    }
    /* block-quantized weights: their values as stored (dequantized exactly),
     * never rounded; few rows take the int8 GEMV (gemv_quant.c) */
    cpu_mm_arg A = {ctx, M, N, K, x, lda, (const char *)w, wt, ldw, bias, out, ldo, 0, 0, 0,
                    ctx->bf16 && (wt == VLM_F32 || wt == VLM_F16)};
    if (M < CPU_GEMM_MIN_M && vlm_dtype_block(wt) > 1) return cpu_mm_quant(ctx, M, N, K, x, lda, w, wt, ldw, bias, out, ldo, err);
    if (M < CPU_GEMM_MIN_M) {
        if (A.round_w && cpu_reserve(ctx, (size_t)K)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
        int64_t min_n = 16384 / (K * M) + 1;
        cpu_parallel(ctx, N, min_n, cpu_gemv_fn, &A);
        return VLM_OK;
    }
    /* Tiles: nb rows of w times mb rows of x. The tiling must not depend on
     * the thread count so that results are identical for any n_threads. */
#if CPU_PACKED
    int64_t nb = 128; /* packed: 128 x K f32 per thread */
    A.mb = M >= 192 ? 96 : M;
#else
    int64_t nb = ((int64_t)1 << 21) / K; /* 128..512 rows, about 8 MB of f32 */
    if (nb > 512) nb = 512;
    if (nb < 128) nb = 128;
    nb &= ~(int64_t)15;
    A.mb = M >= 512 ? 256 : M;
#endif
    if (nb >= N) nb = N;
    A.nb = nb;
    A.mtiles = (M + A.mb - 1) / A.mb;
    if (cpu_reserve(ctx, cpu_gemm_scratch(nb, K))) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
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

CPU_KFN vlm_status cpu_op_matmul(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *x = op->a, *w = op->b, *o = op->out;
    if (x->dtype == VLM_I8) return cpu_op_matmul_i8(ctx, op, err);
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
        vlm_status s = cpu_mm(ctx, M, N, K, xb, lda, (const char *)w->data + cpu_bytes(w->dtype, wo), w->dtype,
                              w->stride[w->ndim - 2], bias, (float *)o->data + b * M * N, N, err);
        if (s) return s;
    }
    return VLM_OK;
}

