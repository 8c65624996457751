/* Products of few rows of x with block-quantized weights (q8_0, q4_0), as
 * llama.cpp does them: each row of x is quantized per block of 32 to int8
 * codes with an f32 scale (the activation rule below), a weight block's
 * codes meet x's in an exact int32 dot product, and the two scales multiply
 * it. Decode is bound by the weight stream, and this reads 34 (q8_0) or 18
 * (q4_0) bytes per 32 weights against 64 in bf16. Many rows go to the f32
 * GEMM engine on dequantized panels instead (matmul.c): there the arithmetic
 * is the limit and x stays exact.
 *
 * Activation rule (the reference the tests check against): per block,
 * d = max|x| / 127, q = nearest integer to x * (1 / d), ties to even; the
 * last block of a row is padded with zeros. */
#include "cpu/kernels/kernels.h"

#define CPU_QROWS 4 /* rows of x sharing one pass over a weight row */

/* Row r of the quantized x: K32 codes, then K32 / 32 scales. */
static inline int64_t cpu_xq_row_bytes(int64_t K32) { return K32 + K32 / 32 * 4; }

/* x[0..K) into codes q[0..K32) and scales d[0..K32/32). */
static void cpu_quant_act(const float *x, int64_t K, int8_t *q, float *d) {
    for (int64_t i = 0; i < K; i += 32) {
        float blk[32];
        const float *b = x + i;
        if (K - i < 32) { /* the padded last block */
            memset(blk, 0, sizeof blk);
            memcpy(blk, x + i, sizeof(float) * (size_t)(K - i));
            b = blk;
        }
#if CPU_AVX2
        __m256 v0 = _mm256_loadu_ps(b), v1 = _mm256_loadu_ps(b + 8), v2 = _mm256_loadu_ps(b + 16),
               v3 = _mm256_loadu_ps(b + 24);
        const __m256 sign = _mm256_set1_ps(-0.0f);
        __m256 m = _mm256_max_ps(_mm256_max_ps(_mm256_andnot_ps(sign, v0), _mm256_andnot_ps(sign, v1)),
                                 _mm256_max_ps(_mm256_andnot_ps(sign, v2), _mm256_andnot_ps(sign, v3)));
        float amax = cpu_hmax(m), dd = amax / 127.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
        __m256 vid = _mm256_set1_ps(id);
        /* cvtps rounds as nearbyintf does: in the current mode, nearest-even by default */
        __m256i i0 = _mm256_cvtps_epi32(_mm256_mul_ps(v0, vid)), i1 = _mm256_cvtps_epi32(_mm256_mul_ps(v1, vid));
        __m256i i2 = _mm256_cvtps_epi32(_mm256_mul_ps(v2, vid)), i3 = _mm256_cvtps_epi32(_mm256_mul_ps(v3, vid));
        /* packs interleave the 128-bit lanes; the permute puts elements back in order */
        __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(i0, i1), _mm256_packs_epi32(i2, i3));
        p = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        _mm256_storeu_si256((__m256i *)(q + i), p);
        d[i / 32] = dd;
#else
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fabsf(b[j]) > amax ? fabsf(b[j]) : amax;
        float dd = amax / 127.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
        for (int j = 0; j < 32; j++) {
            float v = nearbyintf(b[j] * id);
            q[i + j] = (int8_t)(v == v ? v : 0);
        }
        d[i / 32] = dd;
#endif
    }
}

#if CPU_AVX2
/* Sum of w[i] * x[i] over 32 int8 pairs, as 8 int32 lanes (|w|, |x| <= 127:
 * pair sums fit in int16). */
static inline __m256i cpu_dot32_i8(__m256i w, __m256i x) {
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    return _mm256_madd_epi16(p, _mm256_set1_epi16(1));
}
static inline __attribute__((always_inline)) __m256i cpu_codes(const unsigned char *b, const vlm_dtype wt) {
    return wt == VLM_Q8_0 ? cpu_codes_q8(b) : cpu_codes_q4(b);
}
#endif

/* res[r] = x_r . w for m <= CPU_QROWS quantized rows of x (codes xc[r],
 * scales xd[r]) and one weight row of nblk blocks. */
static inline __attribute__((always_inline)) void cpu_qdot_impl(const unsigned char *w, const vlm_dtype wt, int64_t nblk,
                                                               const int8_t *const *xc, const float *const *xd,
                                                               const int m, float *res) {
    const size_t bs = wt == VLM_Q8_0 ? 34 : 18;
#if CPU_AVX2
    if (m == 1) { /* two blocks per step, two accumulators: the latency of one chain hidden by the other */
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int64_t b = 0;
        for (; b + 2 <= nblk; b += 2) {
            const unsigned char *w0 = w + b * bs, *w1 = w0 + bs;
            __m256i d0 = cpu_dot32_i8(cpu_codes(w0, wt), _mm256_loadu_si256((const __m256i *)(xc[0] + b * 32)));
            __m256i d1 = cpu_dot32_i8(cpu_codes(w1, wt), _mm256_loadu_si256((const __m256i *)(xc[0] + b * 32 + 32)));
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(cpu_block_scale(w0) * xd[0][b]), _mm256_cvtepi32_ps(d0), a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(cpu_block_scale(w1) * xd[0][b + 1]), _mm256_cvtepi32_ps(d1), a1);
        }
        for (; b < nblk; b++) {
            const unsigned char *w0 = w + b * bs;
            __m256i d0 = cpu_dot32_i8(cpu_codes(w0, wt), _mm256_loadu_si256((const __m256i *)(xc[0] + b * 32)));
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(cpu_block_scale(w0) * xd[0][b]), _mm256_cvtepi32_ps(d0), a0);
        }
        res[0] = cpu_hsum(_mm256_add_ps(a0, a1));
        return;
    }
    __m256 acc[CPU_QROWS];
#pragma GCC unroll 4
    for (int r = 0; r < m; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const unsigned char *wb = w + b * bs;
        __m256i wc = cpu_codes(wb, wt), aw = _mm256_sign_epi8(wc, wc);
        float dw = cpu_block_scale(wb);
#pragma GCC unroll 4
        for (int r = 0; r < m; r++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(xc[r] + b * 32));
            __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, _mm256_sign_epi8(xv, wc)), _mm256_set1_epi16(1));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xd[r][b]), _mm256_cvtepi32_ps(s), acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < m; r++) res[r] = cpu_hsum(acc[r]);
#else
    for (int r = 0; r < m; r++) res[r] = 0;
    for (int64_t b = 0; b < nblk; b++) {
        const unsigned char *wb = w + b * bs;
        int8_t wc[32];
        for (int j = 0; j < 32; j++)
            wc[j] = wt == VLM_Q8_0 ? (int8_t)wb[2 + j] : (int8_t)((wb[2 + j % 16] >> (j < 16 ? 0 : 4) & 15) - 8);
        float dw = cpu_block_scale(wb);
        for (int r = 0; r < m; r++) {
            int32_t s = 0;
            for (int j = 0; j < 32; j++) s += (int32_t)wc[j] * xc[r][b * 32 + j];
            res[r] += dw * xd[r][b] * (float)s;
        }
    }
#endif
}

static void cpu_qdot(const unsigned char *w, vlm_dtype wt, int64_t nblk, const int8_t *const *xc,
                     const float *const *xd, int m, float *res) {
#define CPU_QDOT_CASES(WT)                                                  \
    switch (m) {                                                            \
    case 1: cpu_qdot_impl(w, WT, nblk, xc, xd, 1, res); return;             \
    case 2: cpu_qdot_impl(w, WT, nblk, xc, xd, 2, res); return;             \
    case 3: cpu_qdot_impl(w, WT, nblk, xc, xd, 3, res); return;             \
    default: cpu_qdot_impl(w, WT, nblk, xc, xd, 4, res); return;            \
    }
    if (wt == VLM_Q8_0) CPU_QDOT_CASES(VLM_Q8_0)
    CPU_QDOT_CASES(VLM_Q4_0)
#undef CPU_QDOT_CASES
}

typedef struct cpu_qmv_arg {
    int64_t M, nblk, xrow; /* rows of x, blocks per row, bytes per quantized row of x */
    const unsigned char *xq;
    const unsigned char *w;
    vlm_dtype wt;
    int64_t wrow;          /* bytes between rows of w */
    const float *bias;
    float *out;
    int64_t ldo;
} cpu_qmv_arg;

static void cpu_qmv_fn(void *p, int64_t n0, int64_t n1, int tid) {
    (void)tid;
    const cpu_qmv_arg *A = (const cpu_qmv_arg *)p;
    for (int64_t m0 = 0; m0 < A->M; m0 += CPU_QROWS) {
        int mm = A->M - m0 < CPU_QROWS ? (int)(A->M - m0) : CPU_QROWS;
        const int8_t *xc[CPU_QROWS];
        const float *xd[CPU_QROWS];
        for (int r = 0; r < mm; r++) {
            const unsigned char *row = A->xq + (m0 + r) * A->xrow;
            xc[r] = (const int8_t *)row;
            xd[r] = (const float *)(row + A->nblk * 32);
        }
        for (int64_t n = n0; n < n1; n++) {
            float res[CPU_QROWS];
            cpu_qdot(A->w + n * A->wrow, A->wt, A->nblk, xc, xd, mm, res);
            float b = A->bias ? A->bias[n] : 0.0f;
            for (int r = 0; r < mm; r++) A->out[(m0 + r) * A->ldo + n] = res[r] + b;
        }
    }
}

/* out[M, N] (row stride ldo) = x[M, K] . w[N, K]^T + bias for w of a block
 * type (ldw: elements between its rows, a multiple of 32). */
CPU_KFN vlm_status cpu_mm_quant(cpu_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *x, int64_t lda,
                                const void *w, vlm_dtype wt, int64_t ldw, const float *bias, float *out, int64_t ldo,
                                vlm_error *err) {
    int64_t K32 = (K + 31) / 32 * 32, xrow = cpu_xq_row_bytes(K32);
    unsigned char *xq = (unsigned char *)cpu_xq(ctx, (size_t)((M * xrow + 3) / 4));
    if (!xq) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of memory quantizing a matmul input");
    for (int64_t m = 0; m < M; m++)
        cpu_quant_act(x + m * lda, K, (int8_t *)(xq + m * xrow), (float *)(xq + m * xrow + K32));
    cpu_qmv_arg A = {M, K32 / 32, xrow, xq, (const unsigned char *)w, wt, cpu_bytes(wt, ldw), bias, out, ldo};
    int64_t min_n = 16384 / (K * M) + 1;
    cpu_parallel(ctx, N, min_n, cpu_qmv_fn, &A);
    return VLM_OK;
}
