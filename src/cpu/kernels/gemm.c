/* The f32 GEMM engine for many rows: out[M, N] = x[M, K] . w[N, K]^T, with
 * an AVX2+FMA register tile, or a portable one where the build has no BLAS
 * to call instead (CPU_PACKED).
 *
 * Why our own: OpenBLAS's speed depends on it knowing the CPU (Debian's
 * 0.3.21 runs its Haswell kernels on Zen 5 at half the speed). Measured on
 * one Zen 3 core, M=1024 N=3072 K=768: this engine 90 GFLOP/s, OpenBLAS
 * 0.3.21 (Zen kernels) 85, oneDNN 2.6 f32 91.
 *
 * The classic blocking: weight rows are packed per call (into the thread's
 * scratch, converted from f32/f16/bf16) as panels of 16 columns, k-major,
 * zero-padded; a 6x16 register tile (12 accumulators) runs over K in blocks
 * of CPU_KC so that a panel slice (16 KiB) stays in L1 while the rows of x
 * it meets stay in L2. Packing costs K*16 stores per panel against
 * 6*16*K FMAs per row block, so weights stay as stored (mmap'd) and no
 * packed copy of the model exists. Each output element sums its K products
 * in one fixed order: results do not depend on the thread count. */
#include "cpu/kernels/kernels.h"

#if CPU_PACKED

#define CPU_NR 16  /* columns of a panel: two vectors of 8 */
#define CPU_MR 6   /* rows of x per register tile */
#define CPU_KC 256 /* k per block */

#if CPU_AVX2
/* 8 rows r[0..8) of 8 floats, transposed into d[k * CPU_NR + j] for k < 8
 * (one 8-column half of a panel) */
static inline void cpu_pack_8x8(float *d, const float *const r[8], int64_t k0) {
    __m256 a0 = _mm256_loadu_ps(r[0] + k0), a1 = _mm256_loadu_ps(r[1] + k0), a2 = _mm256_loadu_ps(r[2] + k0),
           a3 = _mm256_loadu_ps(r[3] + k0), a4 = _mm256_loadu_ps(r[4] + k0), a5 = _mm256_loadu_ps(r[5] + k0),
           a6 = _mm256_loadu_ps(r[6] + k0), a7 = _mm256_loadu_ps(r[7] + k0);
    __m256 t0 = _mm256_unpacklo_ps(a0, a1), t1 = _mm256_unpackhi_ps(a0, a1), t2 = _mm256_unpacklo_ps(a2, a3),
           t3 = _mm256_unpackhi_ps(a2, a3), t4 = _mm256_unpacklo_ps(a4, a5), t5 = _mm256_unpackhi_ps(a4, a5),
           t6 = _mm256_unpacklo_ps(a6, a7), t7 = _mm256_unpackhi_ps(a6, a7);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE), u2 = _mm256_shuffle_ps(t1, t3, 0x44),
           u3 = _mm256_shuffle_ps(t1, t3, 0xEE), u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE),
           u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    _mm256_store_ps(d + 0 * CPU_NR, _mm256_permute2f128_ps(u0, u4, 0x20));
    _mm256_store_ps(d + 1 * CPU_NR, _mm256_permute2f128_ps(u1, u5, 0x20));
    _mm256_store_ps(d + 2 * CPU_NR, _mm256_permute2f128_ps(u2, u6, 0x20));
    _mm256_store_ps(d + 3 * CPU_NR, _mm256_permute2f128_ps(u3, u7, 0x20));
    _mm256_store_ps(d + 4 * CPU_NR, _mm256_permute2f128_ps(u0, u4, 0x31));
    _mm256_store_ps(d + 5 * CPU_NR, _mm256_permute2f128_ps(u1, u5, 0x31));
    _mm256_store_ps(d + 6 * CPU_NR, _mm256_permute2f128_ps(u2, u6, 0x31));
    _mm256_store_ps(d + 7 * CPU_NR, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#else
static inline void cpu_pack_8x8(float *d, const float *const r[8], int64_t k0) {
    for (int k = 0; k < 8; k++)
        for (int j = 0; j < 8; j++) d[k * CPU_NR + j] = r[j][k0 + k];
}
#endif

/* Rows [0, nb) of w (row stride ldw, any float dtype) into panels
 * dst[p][k][16] (p < ceil(nb / 16)), zero-padded. rows: 8 * K floats of
 * scratch where 8 rows at a time are converted (round: to bf16, for the
 * bf16 compute mode; bf16 weights are unchanged) and transposed 8x8. */
CPU_KFN void cpu_pack_panels(float *dst, const char *w, vlm_dtype wt, int64_t ldw, int64_t nb, int64_t K, int round,
                             float *rows) {
    int64_t K8 = K & ~(int64_t)7, nb16 = (nb + CPU_NR - 1) / CPU_NR * CPU_NR;
    for (int64_t n0 = 0; n0 < nb16; n0 += 8) {
        const float *r[8];
        int64_t have = nb - n0 < 8 ? (nb - n0 > 0 ? nb - n0 : 0) : 8; /* R8 types: 0 or 8 */
        cpu_rows_to_f32(rows, K, w, wt, ldw, n0, have, K, round);
        for (int j = 0; j < 8; j++) {
            if (j >= have) memset(rows + j * K, 0, sizeof(float) * (size_t)K);
            r[j] = rows + j * K;
        }
        float *d = dst + n0 / CPU_NR * CPU_NR * K + n0 % CPU_NR;
        for (int64_t k = 0; k < K8; k += 8) cpu_pack_8x8(d + k * CPU_NR, r, k);
        for (int64_t k = K8; k < K; k++)
            for (int j = 0; j < 8; j++) d[k * CPU_NR + j] = r[j][k];
    }
}

/* The columns of a k-major matrix src[nk][ncols] (row stride ld, any float
 * dtype; attention's V block) into panels dst[p][nk][16], zero-padded. */
CPU_KFN void cpu_pack_panels_kmajor(float *dst, const char *src, vlm_dtype t, int64_t ld, int64_t nk, int64_t ncols,
                                    float *row) {
    size_t es = vlm_dtype_size(t);
    int64_t np = (ncols + CPU_NR - 1) / CPU_NR;
    for (int64_t k = 0; k < nk; k++) {
        const char *sk = src + k * ld * (int64_t)es;
        const float *r = (const float *)sk;
        if (t != VLM_F32) {
            cpu_to_f32(row, sk, t, ncols);
            r = row;
        }
        for (int64_t p = 0; p < np; p++) {
            float *d = dst + (p * nk + k) * CPU_NR;
            int64_t n = ncols - p * CPU_NR < CPU_NR ? ncols - p * CPU_NR : CPU_NR;
            memcpy(d, r + p * CPU_NR, sizeof(float) * (size_t)n);
            for (int64_t j = n; j < CPU_NR; j++) d[j] = 0.0f;
        }
    }
}

/* c[6][16] (row stride ldc) = (acc ? c : 0) + a[r][0..kc) . b[kc][16] for the 6 rows a[r] */
#if CPU_AVX2
static inline __attribute__((always_inline)) void cpu_gemm_6x16(const float *const a[CPU_MR], const float *b, int64_t kc,
                                                               float *c, int64_t ldc, int acc) {
    __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    const float *a0 = a[0], *a1 = a[1], *a2 = a[2], *a3 = a[3], *a4 = a[4], *a5 = a[5];
    /* named accumulators: an array here is kept in memory by gcc */
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_load_ps(b + CPU_NR * k), b1 = _mm256_load_ps(b + CPU_NR * k + 8), av;
        av = _mm256_broadcast_ss(a0 + k); c00 = _mm256_fmadd_ps(av, b0, c00); c01 = _mm256_fmadd_ps(av, b1, c01);
        av = _mm256_broadcast_ss(a1 + k); c10 = _mm256_fmadd_ps(av, b0, c10); c11 = _mm256_fmadd_ps(av, b1, c11);
        av = _mm256_broadcast_ss(a2 + k); c20 = _mm256_fmadd_ps(av, b0, c20); c21 = _mm256_fmadd_ps(av, b1, c21);
        av = _mm256_broadcast_ss(a3 + k); c30 = _mm256_fmadd_ps(av, b0, c30); c31 = _mm256_fmadd_ps(av, b1, c31);
        av = _mm256_broadcast_ss(a4 + k); c40 = _mm256_fmadd_ps(av, b0, c40); c41 = _mm256_fmadd_ps(av, b1, c41);
        av = _mm256_broadcast_ss(a5 + k); c50 = _mm256_fmadd_ps(av, b0, c50); c51 = _mm256_fmadd_ps(av, b1, c51);
    }
#define CPU_GEMM_STORE(r, lo, hi)                                                                   \
    do {                                                                                            \
        float *cr = c + (r) * ldc;                                                                  \
        if (acc) {                                                                                  \
            lo = _mm256_add_ps(_mm256_loadu_ps(cr), lo);                                            \
            hi = _mm256_add_ps(_mm256_loadu_ps(cr + 8), hi);                                        \
        }                                                                                           \
        _mm256_storeu_ps(cr, lo);                                                                   \
        _mm256_storeu_ps(cr + 8, hi);                                                               \
    } while (0)
    CPU_GEMM_STORE(0, c00, c01);
    CPU_GEMM_STORE(1, c10, c11);
    CPU_GEMM_STORE(2, c20, c21);
    CPU_GEMM_STORE(3, c30, c31);
    CPU_GEMM_STORE(4, c40, c41);
    CPU_GEMM_STORE(5, c50, c51);
#undef CPU_GEMM_STORE
}
#elif CPU_NEON
/* 24 accumulators and 4 panel vectors of AArch64's 32 registers */
static inline __attribute__((always_inline)) void cpu_gemm_6x16(const float *const a[CPU_MR], const float *b, int64_t kc,
                                                               float *c, int64_t ldc, int acc) {
    float32x4_t t[CPU_MR][4];
    for (int r = 0; r < CPU_MR; r++)
        for (int j = 0; j < 4; j++) t[r][j] = vdupq_n_f32(0);
    for (int64_t k = 0; k < kc; k++) {
        float32x4_t b0 = vld1q_f32(b + CPU_NR * k), b1 = vld1q_f32(b + CPU_NR * k + 4), b2 = vld1q_f32(b + CPU_NR * k + 8),
                    b3 = vld1q_f32(b + CPU_NR * k + 12);
#pragma GCC unroll 6
        for (int r = 0; r < CPU_MR; r++) {
            float av = a[r][k];
            t[r][0] = vfmaq_n_f32(t[r][0], b0, av);
            t[r][1] = vfmaq_n_f32(t[r][1], b1, av);
            t[r][2] = vfmaq_n_f32(t[r][2], b2, av);
            t[r][3] = vfmaq_n_f32(t[r][3], b3, av);
        }
    }
    for (int r = 0; r < CPU_MR; r++)
        for (int j = 0; j < 4; j++) {
            float *cr = c + r * ldc + 4 * j;
            vst1q_f32(cr, acc ? vaddq_f32(vld1q_f32(cr), t[r][j]) : t[r][j]);
        }
}
#else /* the same tile in C, for the compiler to vectorize */
static inline void cpu_gemm_6x16(const float *const a[CPU_MR], const float *b, int64_t kc, float *c, int64_t ldc, int acc) {
    float t[CPU_MR][CPU_NR] = {{0}};
    for (int64_t k = 0; k < kc; k++)
        for (int r = 0; r < CPU_MR; r++) {
            float av = a[r][k];
            for (int j = 0; j < CPU_NR; j++) t[r][j] += av * b[CPU_NR * k + j];
        }
    for (int r = 0; r < CPU_MR; r++)
        for (int j = 0; j < CPU_NR; j++) c[r * ldc + j] = (acc ? c[r * ldc + j] : 0.0f) + t[r][j];
}
#endif

/* A partial tile (mr < 6 rows or nr < 16 columns): the full tile into a
 * copy, missing rows of x repeating the last one. */
static void cpu_gemm_edge(const float *const a[CPU_MR], int mr, const float *b, int64_t kc, float *c, int64_t ldc,
                          int nr, int acc) {
    float t[CPU_MR * CPU_NR] = {0};
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) t[r * CPU_NR + j] = acc ? c[r * ldc + j] : 0.0f;
    cpu_gemm_6x16(a, b, kc, t, CPU_NR, acc);
    for (int r = 0; r < mr; r++)
        for (int j = 0; j < nr; j++) c[r * ldc + j] = t[r * CPU_NR + j];
}

/* c[mb, nb] = (acc ? c : 0) + a[mb, K] . panels (nb columns packed by
 * cpu_pack_panels or cpu_pack_panels_kmajor) */
CPU_KFN void cpu_gemm_panels(const float *a, int64_t lda, int64_t mb, const float *panels, int64_t nb, int64_t K,
                             float *c, int64_t ldc, int acc0) {
    int64_t np = (nb + CPU_NR - 1) / CPU_NR;
    for (int64_t k0 = 0; k0 < K; k0 += CPU_KC) {
        int64_t kc = K - k0 < CPU_KC ? K - k0 : CPU_KC;
        int acc = acc0 || k0 > 0;
        for (int64_t p = 0; p < np; p++) {
            const float *b = panels + p * CPU_NR * K + CPU_NR * k0;
            int nr = nb - p * CPU_NR < CPU_NR ? (int)(nb - p * CPU_NR) : CPU_NR;
            for (int64_t m = 0; m < mb; m += CPU_MR) {
                int mr = mb - m < CPU_MR ? (int)(mb - m) : CPU_MR;
                const float *rows[CPU_MR];
                for (int r = 0; r < CPU_MR; r++) rows[r] = a + (m + (r < mr ? r : mr - 1)) * lda + k0;
                float *cm = c + m * ldc + p * CPU_NR;
                if (mr == CPU_MR && nr == CPU_NR) cpu_gemm_6x16(rows, b, kc, cm, ldc, acc);
                else cpu_gemm_edge(rows, mr, b, kc, cm, ldc, nr, acc);
            }
        }
    }
}

#endif /* CPU_PACKED */
