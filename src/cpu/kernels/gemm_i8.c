/* The int8 engine: out[M, N] (int32) = x[M, K] . w[N, K]^T with int8 x and
 * w, summed exactly (K <= 2^17 keeps every sum inside int32). It is the
 * integer core the quantized weight formats build on: their prefill
 * quantizes activations to int8 and scales these sums per block.
 *
 * AVX2 has no int8 dot product that is exact over the whole int8 range
 * (vpmaddubsw takes one unsigned operand and saturates its int16 pair sums),
 * so the tiles are widened to int16 and multiplied with vpmaddwd, pairs of
 * k summed into int32 lanes: 192 exact products per 12 instructions on a
 * 6x16 tile. The layout follows gemm.c: weight rows packed per call into
 * panels of 16 columns ([k/2][16][2] int16, zero-padded), x rows widened per
 * tile. VNNI (vpdpwssd / vpdpbusd) and AMX-INT8 variants slot in here. */
#include "cpu/kernels/kernels.h"

#define CPU_I8_NR 16
#define CPU_I8_MR 6

typedef struct cpu_i8_arg {
    cpu_ctx *ctx;
    const vlm_tensor *x;
    const int8_t *w;
    int64_t M, N, K, K2, ldw; /* K2: K rounded up to even */
    int32_t *out;
    int64_t nb, mb, mtiles;
} cpu_i8_arg;

/* Rows [n0, n0 + nb) of w into panels dst[p][K2 / 2][16][2] */
static void cpu_i8_pack(int16_t *dst, const int8_t *w, int64_t ldw, int64_t nb, int64_t K, int64_t K2) {
    int64_t np = (nb + CPU_I8_NR - 1) / CPU_I8_NR;
    for (int64_t p = 0; p < np; p++) {
        int16_t *d = dst + p * CPU_I8_NR * K2;
        for (int j = 0; j < CPU_I8_NR; j++) {
            int64_t n = p * CPU_I8_NR + j;
            const int8_t *row = n < nb ? w + n * ldw : NULL;
            for (int64_t k = 0; k < K2; k++)
                d[(k / 2 * CPU_I8_NR + j) * 2 + k % 2] = row && k < K ? row[k] : 0;
        }
    }
}

#if CPU_AVX2
/* c[6][16] = a[r][0..K2) . b (panel), int16 inputs, int32 sums */
static inline __attribute__((always_inline)) void cpu_i8_6x16(const int16_t *const a[CPU_I8_MR], const int16_t *b,
                                                             int64_t K2, int32_t *c, int64_t ldc) {
    __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
    __m256i c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
    for (int64_t k = 0; k < K2; k += 2) {
        const int16_t *bk = b + k * CPU_I8_NR;
        __m256i b0 = _mm256_load_si256((const __m256i *)bk), b1 = _mm256_load_si256((const __m256i *)(bk + 16)), av;
        int32_t pair;
#define CPU_I8_ROW(r, lo, hi)                                                                       \
        memcpy(&pair, a[r] + k, 4);                                                                 \
        av = _mm256_set1_epi32(pair);                                                               \
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(av, b0));                                       \
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(av, b1));
        CPU_I8_ROW(0, c00, c01)
        CPU_I8_ROW(1, c10, c11)
        CPU_I8_ROW(2, c20, c21)
        CPU_I8_ROW(3, c30, c31)
        CPU_I8_ROW(4, c40, c41)
        CPU_I8_ROW(5, c50, c51)
#undef CPU_I8_ROW
    }
    _mm256_storeu_si256((__m256i *)(c + 0 * ldc), c00); _mm256_storeu_si256((__m256i *)(c + 0 * ldc + 8), c01);
    _mm256_storeu_si256((__m256i *)(c + 1 * ldc), c10); _mm256_storeu_si256((__m256i *)(c + 1 * ldc + 8), c11);
    _mm256_storeu_si256((__m256i *)(c + 2 * ldc), c20); _mm256_storeu_si256((__m256i *)(c + 2 * ldc + 8), c21);
    _mm256_storeu_si256((__m256i *)(c + 3 * ldc), c30); _mm256_storeu_si256((__m256i *)(c + 3 * ldc + 8), c31);
    _mm256_storeu_si256((__m256i *)(c + 4 * ldc), c40); _mm256_storeu_si256((__m256i *)(c + 4 * ldc + 8), c41);
    _mm256_storeu_si256((__m256i *)(c + 5 * ldc), c50); _mm256_storeu_si256((__m256i *)(c + 5 * ldc + 8), c51);
}
#else
static void cpu_i8_6x16(const int16_t *const a[CPU_I8_MR], const int16_t *b, int64_t K2, int32_t *c, int64_t ldc) {
    for (int r = 0; r < CPU_I8_MR; r++)
        for (int j = 0; j < CPU_I8_NR; j++) {
            int32_t s = 0;
            for (int64_t k = 0; k < K2; k++) s += (int32_t)a[r][k] * b[(k / 2 * CPU_I8_NR + j) * 2 + k % 2];
            c[r * ldc + j] = s;
        }
}
#endif

static void cpu_i8_fn(void *p, int64_t t0, int64_t t1, int tid) {
    cpu_i8_arg *A = (cpu_i8_arg *)p;
    int16_t *panels = (int16_t *)A->ctx->tscratch[tid];
    int16_t *xs = panels + (A->nb + CPU_I8_NR - 1) / CPU_I8_NR * CPU_I8_NR * A->K2;
    int64_t have = -1;
    for (int64_t t = t0; t < t1; t++) {
        int64_t nt = t / A->mtiles, mt = t % A->mtiles;
        int64_t n0 = nt * A->nb, nb = A->N - n0 < A->nb ? A->N - n0 : A->nb;
        int64_t m0 = mt * A->mb, mb = A->M - m0 < A->mb ? A->M - m0 : A->mb;
        if (have != nt) cpu_i8_pack(panels, A->w + n0 * A->ldw, A->ldw, nb, A->K, A->K2);
        have = nt;
        for (int64_t m = 0; m < mb; m++) { /* x rows widened, zero-padded to K2 */
            const int8_t *xr = (const int8_t *)A->x->data + cpu_row_off(A->x, m0 + m);
            for (int64_t k = 0; k < A->K2; k++) xs[m * A->K2 + k] = k < A->K ? xr[k] : 0;
        }
        int64_t np = (nb + CPU_I8_NR - 1) / CPU_I8_NR;
        for (int64_t q = 0; q < np; q++) {
            int nr = nb - q * CPU_I8_NR < CPU_I8_NR ? (int)(nb - q * CPU_I8_NR) : CPU_I8_NR;
            for (int64_t m = 0; m < mb; m += CPU_I8_MR) {
                int mr = mb - m < CPU_I8_MR ? (int)(mb - m) : CPU_I8_MR;
                const int16_t *rows[CPU_I8_MR];
                for (int r = 0; r < CPU_I8_MR; r++) rows[r] = xs + (m + (r < mr ? r : mr - 1)) * A->K2;
                int32_t t6[CPU_I8_MR * CPU_I8_NR];
                cpu_i8_6x16(rows, panels + q * CPU_I8_NR * A->K2, A->K2, t6, CPU_I8_NR);
                int32_t *o = A->out + (m0 + m) * A->N + n0 + q * CPU_I8_NR;
                for (int r = 0; r < mr; r++) memcpy(o + r * A->N, t6 + r * CPU_I8_NR, sizeof(int32_t) * (size_t)nr);
            }
        }
    }
}

CPU_KFN vlm_status cpu_op_matmul_i8(cpu_ctx *ctx, const vlm_op *op, vlm_error *err) {
    const vlm_tensor *x = op->a, *w = op->b;
    cpu_i8_arg A = {.ctx = ctx, .x = x, .w = (const int8_t *)w->data, .M = cpu_nrows(x), .N = w->shape[0],
                    .K = w->shape[1], .ldw = w->stride[0], .out = (int32_t *)op->out->data};
    if (A.M == 0 || A.N == 0) return VLM_OK;
    A.K2 = (A.K + 1) & ~(int64_t)1;
    A.nb = A.N < 64 ? A.N : 64;
    A.mb = A.M >= 192 ? 96 : A.M;
    A.mtiles = (A.M + A.mb - 1) / A.mb;
    /* int16 panels of the w tile and the widened x tile, in float-sized scratch */
    size_t halves = (size_t)(((A.nb + CPU_I8_NR - 1) / CPU_I8_NR * CPU_I8_NR + A.mb) * A.K2);
    if (cpu_reserve(ctx, halves / 2 + 16)) return vlm_error_set(err, VLM_ERR_OOM, "cpu: out of scratch memory");
    cpu_parallel(ctx, (A.N + A.nb - 1) / A.nb * A.mtiles, 1, cpu_i8_fn, &A);
    return VLM_OK;
}
