/* Products of few rows of x with block-quantized weights (q8_0, q4_0, q4_z), as
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

/* Row r of the quantized x: K32 codes, then per block its scale d and
 * c = 8 d (sum of its codes): q4_0's codes are used unsigned (0..15, one
 * vpmaddubsw without sign fixes) and c takes their offset of 8 back out
 * (q4_z's zero point z: c z / 8). */
static inline int64_t cpu_xq_row_bytes(int64_t K32) { return K32 + K32 / 32 * 8; }

/* x[0..K) into codes q[0..K32), scales d[0..K32/32) and offsets c[0..K32/32). */
static void cpu_quant_act(const float *x, int64_t K, int8_t *q, float *d, float *c) {
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
        __m256i sum = _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_set1_epi8(1), p), _mm256_set1_epi16(1));
        __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(sum), _mm256_extracti128_si256(sum, 1));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4e));
        s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xb1));
        d[i / 32] = dd;
        c[i / 32] = 8.0f * dd * (float)_mm_cvtsi128_si32(s4);
#else
        float amax = 0;
        for (int j = 0; j < 32; j++) amax = fabsf(b[j]) > amax ? fabsf(b[j]) : amax;
        float dd = amax / 127.0f, id = dd != 0 ? 1.0f / dd : 0.0f;
        int32_t sum = 0;
        for (int j = 0; j < 32; j++) {
            float v = nearbyintf(b[j] * id);
            q[i + j] = (int8_t)(v == v ? v : 0);
            sum += q[i + j];
        }
        d[i / 32] = dd;
        c[i / 32] = 8.0f * dd * (float)sum;
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
/* q4_0's 32 codes unsigned (0..15) */
static inline __m256i cpu_codes_q4u(const unsigned char *b) {
    __m128i p = _mm_loadu_si128((const __m128i *)(b + 2));
    return _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(p, 4), p), _mm256_set1_epi8(15));
}
/* One block's int32 lanes: q8_0 signed codes by the sign trick, q4_0 and
 * q4_z unsigned codes directly (the offset is in the caller's correction). */
static inline __attribute__((always_inline)) __m256i cpu_block_dot(const unsigned char *b, __m256i x, const vlm_dtype wt) {
    if (wt == VLM_Q8_0) return cpu_dot32_i8(cpu_codes_q8(b), x);
    return _mm256_madd_epi16(_mm256_maddubs_epi16(cpu_codes_q4u(b), x), _mm256_set1_epi16(1));
}
#endif
#if CPU_NEON
/* One block's codes (q4: unsigned, as above) times x's 32: SDOT where the
 * CPU has it, else widening products (|w x| <= 127 * 127: pairs fit int16). */
static inline __attribute__((always_inline)) int32_t cpu_block_dot_neon(const unsigned char *b, const int8_t *x,
                                                                      const vlm_dtype wt) {
    int8x16_t w0, w1, x0 = vld1q_s8(x), x1 = vld1q_s8(x + 16);
    if (wt == VLM_Q8_0) {
        w0 = vld1q_s8((const int8_t *)b + 2);
        w1 = vld1q_s8((const int8_t *)b + 18);
    } else {
        uint8x16_t p = vld1q_u8(b + 2);
        w0 = vreinterpretq_s8_u8(vandq_u8(p, vdupq_n_u8(15)));
        w1 = vreinterpretq_s8_u8(vshrq_n_u8(p, 4));
    }
#if CPU_DOTPROD
    return vaddvq_s32(vdotq_s32(vdotq_s32(vdupq_n_s32(0), w0, x0), w1, x1));
#else
    int16x8_t p0 = vmlal_high_s8(vmull_s8(vget_low_s8(w0), vget_low_s8(x0)), w0, x0);
    int16x8_t p1 = vmlal_high_s8(vmull_s8(vget_low_s8(w1), vget_low_s8(x1)), w1, x1);
    return vaddvq_s32(vpadalq_s16(vpaddlq_s16(p0), p1));
#endif
}
#endif

/* res[r] = x_r . w for m <= CPU_QROWS quantized rows of x (codes xc[r],
 * scales xd[r], q4_0 offsets xo[r]) and one weight row of nblk blocks. */
static inline __attribute__((always_inline)) void cpu_qdot_impl(const unsigned char *w, const vlm_dtype wt, int64_t nblk,
                                                               const int8_t *const *xc, const float *const *xd,
                                                               const float *const *xo, const int m, float *res) {
    const size_t bs = vlm_dtype_size(wt);
    const int q4 = wt != VLM_Q8_0;
    /* q4: sum over blocks of d_w * z d_x (sum of x's codes), z = 8 or the block's */
    float corr[CPU_QROWS] = {0};
#define CPU_QOFF(blk) (wt == VLM_Q4_Z ? (float)(blk)[18] * 0.125f : 1.0f)
#if CPU_AVX2
    if (m == 1) { /* two blocks per step, two accumulators: the latency of one chain hidden by the other */
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
        int64_t b = 0;
        for (; b + 2 <= nblk; b += 2) {
            const unsigned char *w0 = w + b * bs, *w1 = w0 + bs;
            __m256i d0 = cpu_block_dot(w0, _mm256_loadu_si256((const __m256i *)(xc[0] + b * 32)), wt);
            __m256i d1 = cpu_block_dot(w1, _mm256_loadu_si256((const __m256i *)(xc[0] + b * 32 + 32)), wt);
            float s0 = cpu_block_scale(w0), s1 = cpu_block_scale(w1);
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(s0 * xd[0][b]), _mm256_cvtepi32_ps(d0), a0);
            a1 = _mm256_fmadd_ps(_mm256_set1_ps(s1 * xd[0][b + 1]), _mm256_cvtepi32_ps(d1), a1);
            if (q4) corr[0] += s0 * xo[0][b] * CPU_QOFF(w0) + s1 * xo[0][b + 1] * CPU_QOFF(w1);
        }
        for (; b < nblk; b++) {
            const unsigned char *w0 = w + b * bs;
            __m256i d0 = cpu_block_dot(w0, _mm256_loadu_si256((const __m256i *)(xc[0] + b * 32)), wt);
            float s0 = cpu_block_scale(w0);
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(s0 * xd[0][b]), _mm256_cvtepi32_ps(d0), a0);
            if (q4) corr[0] += s0 * xo[0][b] * CPU_QOFF(w0);
        }
        res[0] = cpu_hsum(_mm256_add_ps(a0, a1)) - corr[0];
        return;
    }
    __m256 acc[CPU_QROWS];
#pragma GCC unroll 4
    for (int r = 0; r < m; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++) {
        const unsigned char *wb = w + b * bs;
        float dw = cpu_block_scale(wb), off = CPU_QOFF(wb);
        __m256i wc = q4 ? cpu_codes_q4u(wb) : cpu_codes_q8(wb), aw = q4 ? wc : _mm256_sign_epi8(wc, wc);
#pragma GCC unroll 4
        for (int r = 0; r < m; r++) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(xc[r] + b * 32));
            __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, q4 ? xv : _mm256_sign_epi8(xv, wc)), _mm256_set1_epi16(1));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(dw * xd[r][b]), _mm256_cvtepi32_ps(s), acc[r]);
            if (q4) corr[r] += dw * xo[r][b] * off;
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < m; r++) res[r] = cpu_hsum(acc[r]) - corr[r];
#elif CPU_NEON
    for (int r = 0; r < m; r++) res[r] = 0;
    for (int64_t b = 0; b < nblk; b++) {
        const unsigned char *wb = w + b * bs;
        float dw = cpu_block_scale(wb), off = CPU_QOFF(wb);
#pragma GCC unroll 4
        for (int r = 0; r < m; r++) {
            res[r] += dw * xd[r][b] * (float)cpu_block_dot_neon(wb, xc[r] + b * 32, wt);
            if (q4) corr[r] += dw * xo[r][b] * off;
        }
    }
    for (int r = 0; r < m; r++) res[r] -= corr[r];
#else
    for (int r = 0; r < m; r++) res[r] = 0;
    for (int64_t b = 0; b < nblk; b++) {
        const unsigned char *wb = w + b * bs;
        int32_t wc[32];
        for (int j = 0; j < 32; j++) wc[j] = q4 ? wb[2 + j % 16] >> (j < 16 ? 0 : 4) & 15 : (int8_t)wb[2 + j];
        float dw = cpu_block_scale(wb), off = CPU_QOFF(wb);
        for (int r = 0; r < m; r++) {
            int32_t s = 0;
            for (int j = 0; j < 32; j++) s += wc[j] * xc[r][b * 32 + j];
            res[r] += dw * xd[r][b] * (float)s;
            if (q4) corr[r] += dw * xo[r][b] * off;
        }
    }
    for (int r = 0; r < m; r++) res[r] -= corr[r];
#endif
#undef CPU_QOFF
}

/* A kernel called with the weight type and the row count as constants, so
 * that each combination compiles to its own loop. */
#define CPU_QCASES(FN, W, WT, RES)                                          \
    switch (m) {                                                            \
    case 1: FN(W, WT, nblk, xc, xd, xo, 1, RES); return;                    \
    case 2: FN(W, WT, nblk, xc, xd, xo, 2, RES); return;                    \
    case 3: FN(W, WT, nblk, xc, xd, xo, 3, RES); return;                    \
    default: FN(W, WT, nblk, xc, xd, xo, 4, RES); return;                   \
    }

static void cpu_qdot(const unsigned char *w, vlm_dtype wt, int64_t nblk, const int8_t *const *xc,
                     const float *const *xd, const float *const *xo, int m, float *res) {
    if (wt == VLM_Q8_0) CPU_QCASES(cpu_qdot_impl, w, VLM_Q8_0, res)
    if (wt == VLM_Q4_Z) CPU_QCASES(cpu_qdot_impl, w, VLM_Q4_Z, res)
    CPU_QCASES(cpu_qdot_impl, w, VLM_Q4_0, res)
}

/* R8 groups (vlm_repack_r8): res[r][j] = x_r . row j of the group, for 8
 * rows at once. A group block's 8 scales convert in one instruction, and
 * each 32-byte chunk of codes (4 codes of each of the 8 rows) meets x's 4
 * codes broadcast to every lane, so a block of 8 rows costs about what one
 * row's block costs in the plain layout. */
static inline __attribute__((always_inline)) void cpu_qdot8_impl(const unsigned char *g, const vlm_dtype wt, int64_t nblk,
                                                                const int8_t *const *xc, const float *const *xd,
                                                                const float *const *xo, const int m,
                                                                float res[][8]) {
    const size_t gbs = 8 * vlm_dtype_size(wt);
#if CPU_AVX2
    const int q4 = wt != VLM_Q8_0R8;
    const __m256i ones = _mm256_set1_epi16(1), low4 = _mm256_set1_epi8(15);
    __m256 acc[CPU_QROWS];
#pragma GCC unroll 4
    for (int r = 0; r < m; r++) acc[r] = _mm256_setzero_ps();
    for (int64_t b = 0; b < nblk; b++, g += gbs) {
        __m256 s = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)g));
        __m256i a[CPU_QROWS];
#pragma GCC unroll 4
        for (int r = 0; r < m; r++) a[r] = _mm256_setzero_si256();
        if (q4) { /* unsigned codes: 8 pair sums of at most 2 * 15 * 127 stay within int16 */
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                __m256i P = _mm256_loadu_si256((const __m256i *)(g + 16 + 32 * t));
                __m256i lo = _mm256_and_si256(P, low4), hi = _mm256_and_si256(_mm256_srli_epi16(P, 4), low4);
#pragma GCC unroll 4
                for (int r = 0; r < m; r++) {
                    int32_t xl, xh;
                    memcpy(&xl, xc[r] + b * 32 + 4 * t, 4);
                    memcpy(&xh, xc[r] + b * 32 + 16 + 4 * t, 4);
                    a[r] = _mm256_add_epi16(a[r], _mm256_add_epi16(_mm256_maddubs_epi16(lo, _mm256_set1_epi32(xl)),
                                                                   _mm256_maddubs_epi16(hi, _mm256_set1_epi32(xh))));
                }
            }
            /* q4_z: the 8 rows' zero points over q4_0's 8 */
            __m256 z = wt == VLM_Q4_ZR8 ? _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(
                                                            (const __m128i *)(g + 16 + 128)))),
                                                        _mm256_set1_ps(0.125f))
                                        : _mm256_setzero_ps();
#pragma GCC unroll 4
            for (int r = 0; r < m; r++) {
                __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(a[r], ones)), f;
                if (wt == VLM_Q4_ZR8)
                    f = _mm256_fnmadd_ps(z, _mm256_set1_ps(xo[r][b]), _mm256_mul_ps(dot, _mm256_set1_ps(xd[r][b])));
                else f = _mm256_fmsub_ps(dot, _mm256_set1_ps(xd[r][b]), _mm256_set1_ps(xo[r][b]));
                acc[r] = _mm256_fmadd_ps(s, f, acc[r]);
            }
        } else {
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                __m256i W = _mm256_loadu_si256((const __m256i *)(g + 16 + 32 * c)), aw = _mm256_sign_epi8(W, W);
#pragma GCC unroll 4
                for (int r = 0; r < m; r++) {
                    int32_t xv;
                    memcpy(&xv, xc[r] + b * 32 + 4 * c, 4);
                    __m256i p = _mm256_maddubs_epi16(aw, _mm256_sign_epi8(_mm256_set1_epi32(xv), W));
                    a[r] = _mm256_add_epi32(a[r], _mm256_madd_epi16(p, ones));
                }
            }
#pragma GCC unroll 4
            for (int r = 0; r < m; r++)
                acc[r] = _mm256_fmadd_ps(s, _mm256_mul_ps(_mm256_cvtepi32_ps(a[r]), _mm256_set1_ps(xd[r][b])), acc[r]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < m; r++) _mm256_storeu_ps(res[r], acc[r]);
#elif CPU_DOTPROD
    /* a 32-byte chunk is 4 codes of rows 0-3, then of rows 4-7: one SDOT by
     * x's 4 codes (broadcast) gives 4 rows' partial sums */
    const int q4 = wt != VLM_Q8_0R8;
    float32x4_t acc[CPU_QROWS][2];
    for (int r = 0; r < m; r++) acc[r][0] = acc[r][1] = vdupq_n_f32(0);
    for (int64_t b = 0; b < nblk; b++, g += gbs) {
        float32x4_t s0 = vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(g))), s1 = vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(g + 8)));
        int32x4_t a[CPU_QROWS][2];
        for (int r = 0; r < m; r++) a[r][0] = a[r][1] = vdupq_n_s32(0);
        if (q4) {
#pragma GCC unroll 4
            for (int t = 0; t < 4; t++) {
                uint8x16_t P0 = vld1q_u8(g + 16 + 32 * t), P1 = vld1q_u8(g + 32 + 32 * t), low4 = vdupq_n_u8(15);
                int8x16_t l0 = vreinterpretq_s8_u8(vandq_u8(P0, low4)), h0 = vreinterpretq_s8_u8(vshrq_n_u8(P0, 4));
                int8x16_t l1 = vreinterpretq_s8_u8(vandq_u8(P1, low4)), h1 = vreinterpretq_s8_u8(vshrq_n_u8(P1, 4));
#pragma GCC unroll 4
                for (int r = 0; r < m; r++) {
                    int32_t xl, xh;
                    memcpy(&xl, xc[r] + b * 32 + 4 * t, 4);
                    memcpy(&xh, xc[r] + b * 32 + 16 + 4 * t, 4);
                    int8x16_t vl = vreinterpretq_s8_s32(vdupq_n_s32(xl)), vh = vreinterpretq_s8_s32(vdupq_n_s32(xh));
                    a[r][0] = vdotq_s32(vdotq_s32(a[r][0], l0, vl), h0, vh);
                    a[r][1] = vdotq_s32(vdotq_s32(a[r][1], l1, vl), h1, vh);
                }
            }
            float32x4_t z0 = vdupq_n_f32(1), z1 = z0; /* q4_0: 8 d_x (sum of x's codes) once; q4_z: z / 8 of it */
            if (wt == VLM_Q4_ZR8) {
                uint16x8_t z = vmovl_u8(vld1_u8(g + 16 + 128));
                z0 = vmulq_n_f32(vcvtq_f32_u32(vmovl_u16(vget_low_u16(z))), 0.125f);
                z1 = vmulq_n_f32(vcvtq_f32_u32(vmovl_high_u16(z)), 0.125f);
            }
#pragma GCC unroll 4
            for (int r = 0; r < m; r++) {
                float32x4_t f0 = vfmsq_n_f32(vmulq_n_f32(vcvtq_f32_s32(a[r][0]), xd[r][b]), z0, xo[r][b]);
                float32x4_t f1 = vfmsq_n_f32(vmulq_n_f32(vcvtq_f32_s32(a[r][1]), xd[r][b]), z1, xo[r][b]);
                acc[r][0] = vfmaq_f32(acc[r][0], s0, f0);
                acc[r][1] = vfmaq_f32(acc[r][1], s1, f1);
            }
        } else {
#pragma GCC unroll 8
            for (int c = 0; c < 8; c++) {
                int8x16_t W0 = vld1q_s8((const int8_t *)g + 16 + 32 * c), W1 = vld1q_s8((const int8_t *)g + 32 + 32 * c);
#pragma GCC unroll 4
                for (int r = 0; r < m; r++) {
                    int32_t xv;
                    memcpy(&xv, xc[r] + b * 32 + 4 * c, 4);
                    int8x16_t v = vreinterpretq_s8_s32(vdupq_n_s32(xv));
                    a[r][0] = vdotq_s32(a[r][0], W0, v);
                    a[r][1] = vdotq_s32(a[r][1], W1, v);
                }
            }
#pragma GCC unroll 4
            for (int r = 0; r < m; r++) {
                acc[r][0] = vfmaq_f32(acc[r][0], s0, vmulq_n_f32(vcvtq_f32_s32(a[r][0]), xd[r][b]));
                acc[r][1] = vfmaq_f32(acc[r][1], s1, vmulq_n_f32(vcvtq_f32_s32(a[r][1]), xd[r][b]));
            }
        }
    }
    for (int r = 0; r < m; r++) {
        vst1q_f32(res[r], acc[r][0]);
        vst1q_f32(res[r] + 4, acc[r][1]);
    }
#else /* each block back to 8 plain ones, each through the row kernel */
    vlm_dtype u = vlm_dtype_unpacked(wt);
    for (int r = 0; r < m; r++)
        for (int j = 0; j < 8; j++) res[r][j] = 0;
    for (int64_t b = 0; b < nblk; b++, g += gbs) {
        unsigned char rows[8 * 34];
        vlm_unpack_r8(wt, g, 32, rows);
        const int8_t *xcb[CPU_QROWS];
        const float *xdb[CPU_QROWS], *xob[CPU_QROWS];
        for (int r = 0; r < m; r++) xcb[r] = xc[r] + b * 32, xdb[r] = xd[r] + b, xob[r] = xo[r] + b;
        for (int j = 0; j < 8; j++) {
            float one[CPU_QROWS];
            cpu_qdot_impl(rows + j * vlm_dtype_size(u), u, 1, xcb, xdb, xob, m, one);
            for (int r = 0; r < m; r++) res[r][j] += one[r];
        }
    }
#endif
}

static void cpu_qdot8(const unsigned char *g, vlm_dtype wt, int64_t nblk, const int8_t *const *xc,
                      const float *const *xd, const float *const *xo, int m, float res[][8]) {
    if (wt == VLM_Q8_0R8) CPU_QCASES(cpu_qdot8_impl, g, VLM_Q8_0R8, res)
    if (wt == VLM_Q4_ZR8) CPU_QCASES(cpu_qdot8_impl, g, VLM_Q4_ZR8, res)
    CPU_QCASES(cpu_qdot8_impl, g, VLM_Q4_0R8, res)
}
#undef CPU_QCASES

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

/* x rows [m0, m0 + mm) of the quantized input */
static void cpu_qmv_rows(const cpu_qmv_arg *A, int64_t m0, int mm, const int8_t **xc, const float **xd, const float **xo) {
    for (int r = 0; r < mm; r++) {
        const unsigned char *row = A->xq + (m0 + r) * A->xrow;
        xc[r] = (const int8_t *)row;
        xd[r] = (const float *)(row + A->nblk * 32);
        xo[r] = xd[r] + A->nblk;
    }
}

/* items: rows of w, or groups of 8 rows of an R8 weight */
static void cpu_qmv_fn(void *p, int64_t i0, int64_t i1, int tid) {
    (void)tid;
    const cpu_qmv_arg *A = (const cpu_qmv_arg *)p;
    const int R = vlm_dtype_rows(A->wt);
    for (int64_t m0 = 0; m0 < A->M; m0 += CPU_QROWS) {
        int mm = A->M - m0 < CPU_QROWS ? (int)(A->M - m0) : CPU_QROWS;
        const int8_t *xc[CPU_QROWS];
        const float *xd[CPU_QROWS], *xo[CPU_QROWS];
        cpu_qmv_rows(A, m0, mm, xc, xd, xo);
        for (int64_t it = i0; it < i1; it++) {
            float res[CPU_QROWS][8], one[CPU_QROWS];
            if (R == 8) cpu_qdot8(A->w + it * 8 * A->wrow, A->wt, A->nblk, xc, xd, xo, mm, res);
            else {
                cpu_qdot(A->w + it * A->wrow, A->wt, A->nblk, xc, xd, xo, mm, one);
                for (int r = 0; r < mm; r++) res[r][0] = one[r];
            }
            for (int r = 0; r < mm; r++)
                for (int j = 0; j < R; j++) A->out[(m0 + r) * A->ldo + it * R + j] = res[r][j] + (A->bias ? A->bias[it * R + j] : 0.0f);
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
        cpu_quant_act(x + m * lda, K, (int8_t *)(xq + m * xrow), (float *)(xq + m * xrow + K32),
                      (float *)(xq + m * xrow + K32) + K32 / 32);
    cpu_qmv_arg A = {M, K32 / 32, xrow, xq, (const unsigned char *)w, wt, cpu_bytes(wt, ldw), bias, out, ldo};
    int64_t min_n = 16384 / (K * M) + 1;
    int64_t R = vlm_dtype_rows(wt);
    cpu_parallel(ctx, N / R, min_n / R + 1, cpu_qmv_fn, &A);
    return VLM_OK;
}
