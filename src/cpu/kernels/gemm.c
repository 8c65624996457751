/* The f32 GEMM engine for many rows (AVX2+FMA): out[M, N] = x[M, K] . w[N, K]^T.
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

#if CPU_AVX2

#define CPU_NR 16  /* columns of a panel: two vectors of 8 */
#define CPU_MR 6   /* rows of x per register tile */
#define CPU_KC 256 /* k per block */

/* Rows [n0, n0 + nb) of w into panels dst[p][k][16] (p < ceil(nb / 16)).
 * row: K floats of scratch. round: bf16 compute (weights rounded as the
 * bf16 engines see them; bf16 weights are unchanged). */
CPU_KFN void cpu_pack_panels(float *dst, const char *w, vlm_dtype wt, int64_t ldw, int64_t nb, int64_t K, int round,
                             float *row) {
    size_t es = vlm_dtype_size(wt);
    int64_t np = (nb + CPU_NR - 1) / CPU_NR;
    for (int64_t p = 0; p < np; p++) {
        float *d = dst + p * CPU_NR * K;
        for (int j = 0; j < CPU_NR; j++) {
            int64_t n = p * CPU_NR + j;
            if (n >= nb) {
                for (int64_t k = 0; k < K; k++) d[k * CPU_NR + j] = 0.0f;
                continue;
            }
            cpu_to_f32(row, w + n * ldw * (int64_t)es, wt, K);
            if (round && wt != VLM_BF16) cpu_round_bf16(row, K);
            for (int64_t k = 0; k < K; k++) d[k * CPU_NR + j] = row[k];
        }
    }
}

/* c[6][16] (row stride ldc) = (acc ? c : 0) + a[r][0..kc) . b[kc][16] for the 6 rows a[r] */
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

/* c[mb, nb] = a[mb, K] . panels (nb columns packed by cpu_pack_panels) */
CPU_KFN void cpu_gemm_panels(const float *a, int64_t lda, int64_t mb, const float *panels, int64_t nb, int64_t K,
                             float *c, int64_t ldc) {
    int64_t np = (nb + CPU_NR - 1) / CPU_NR;
    for (int64_t k0 = 0; k0 < K; k0 += CPU_KC) {
        int64_t kc = K - k0 < CPU_KC ? K - k0 : CPU_KC;
        int acc = k0 > 0;
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

#endif /* CPU_AVX2 */
