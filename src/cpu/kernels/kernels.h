/* src/cpu/kernels — what the kernel families share: conversions, SIMD
 * helpers, tensor helpers, and each family's entry points. This and the
 * families are compiled once per instruction set by src/cpu/variant.c, which
 * sets CPU_AVX2 (1: AVX2+FMA+F16C intrinsics; 0: portable C) and the
 * compiler's target for the functions defined here. */
#ifndef VLM_CPU_KERNELS_H
#define VLM_CPU_KERNELS_H

#include "cpu/cpu.h"

#ifndef CPU_AVX2
#error "src/cpu/kernels is compiled through src/cpu/variant.c"
#endif
#if CPU_AVX2
#include <immintrin.h>
#endif
/* The packed-panel GEMM engine (gemm.c) takes the products of many rows in
 * every variant except the portable one of a build with a BLAS, which
 * calls its sgemm there (VLM_HAVE_BLAS: the Makefile defines it when it
 * finds OpenBLAS). */
#if defined(VLM_HAVE_BLAS)
#define CPU_BLAS 1
#else
#define CPU_BLAS 0
#endif
#define CPU_PACKED (CPU_AVX2 || CPU_NEON || !CPU_BLAS)

/* Functions one family calls in another: one translation unit per variant,
 * so static. */
#define CPU_KFN static

/* ------------------------------------------------------------------ conversions and kernels */

static inline float cpu_h2f(uint16_t h) {
#if CPU_AVX2
    return _cvtsh_ss(h);
#elif CPU_NEON
    return vgetq_lane_f32(vcvt_f32_f16(vreinterpret_f16_u16(vdup_n_u16(h))), 0);
#else
    return vlm_f16_to_f32(h);
#endif
}
static inline float cpu_b2f(uint16_t h) {
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

#if CPU_AVX2
static inline __m256 cpu_load8_bf16(const uint16_t *p) {
    __m128i h = _mm_loadu_si128((const __m128i *)p);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
static inline __m256 cpu_load8_f16(const uint16_t *p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)); }
static inline float cpu_hsum(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_add_ps(lo, hi);
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
static inline float cpu_hmax(__m256 v) {
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    lo = _mm_max_ps(lo, hi);
    lo = _mm_max_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_max_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
#endif
#if CPU_NEON /* 4 weights of a row to f32 */
static inline float32x4_t cpu_load4_f16(const uint16_t *p) { return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p))); }
static inline float32x4_t cpu_load4_bf16(const uint16_t *p) {
    return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}
static inline float32x4_t cpu_load4w(const void *w, int64_t i, vlm_dtype t) {
    if (t == VLM_BF16) return cpu_load4_bf16((const uint16_t *)w + i);
    if (t == VLM_F16) return cpu_load4_f16((const uint16_t *)w + i);
    return vld1q_f32((const float *)w + i);
}
/* sum of a[i] * w[i], i < n16 (a multiple of 16), over 4 chains */
static inline __attribute__((always_inline)) float cpu_dot_neon(const float *a, const void *w, vlm_dtype t, int64_t n16) {
    float32x4_t s0 = vdupq_n_f32(0), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = 0; i < n16; i += 16) {
        s0 = vfmaq_f32(s0, vld1q_f32(a + i), cpu_load4w(w, i, t));
        s1 = vfmaq_f32(s1, vld1q_f32(a + i + 4), cpu_load4w(w, i + 4, t));
        s2 = vfmaq_f32(s2, vld1q_f32(a + i + 8), cpu_load4w(w, i + 8, t));
        s3 = vfmaq_f32(s3, vld1q_f32(a + i + 12), cpu_load4w(w, i + 12, t));
    }
    return vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
}
#endif

/* Bytes from a row's start to element n of it (block types: n a multiple
 * of 32, or the row's end). */
static inline int64_t cpu_bytes(vlm_dtype t, int64_t n) {
    if (vlm_dtype_block(t) == 32) return (n + 31) / 32 * (int64_t)vlm_dtype_size(t);
    return n * (int64_t)vlm_dtype_size(t);
}

/* The 32 codes of a block as int8: q8_0 as stored, q4_0 minus 8 and q4_z
 * minus its zero point (the low nibbles are elements 0..15, the high ones
 * 16..31). */
#if CPU_AVX2
static inline __m256i cpu_codes_q8(const unsigned char *b) { return _mm256_loadu_si256((const __m256i *)(b + 2)); }
static inline __m256i cpu_codes_q4(const unsigned char *b, int zero) {
    __m128i p = _mm_loadu_si128((const __m128i *)(b + 2));
    __m256i v = _mm256_set_m128i(_mm_srli_epi16(p, 4), p);
    return _mm256_sub_epi8(_mm256_and_si256(v, _mm256_set1_epi8(15)), _mm256_set1_epi8((char)zero));
}
#endif
static inline float cpu_block_scale(const unsigned char *b) {
#if CPU_AVX2
    int32_t v; /* the scale and two code bytes in one 32-bit load (a block is at least 18 bytes) */
    memcpy(&v, b, 4);
    return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(v)));
#else
    uint16_t h;
    memcpy(&h, b, 2);
    return cpu_h2f(h);
#endif
}

/* n elements of a block-quantized row to f32. */
static inline void cpu_dequant(float *dst, const unsigned char *src, vlm_dtype t, int64_t n) {
    int64_t i = 0;
#if CPU_AVX2
    for (size_t bs = vlm_dtype_size(t); i + 32 <= n; i += 32, src += bs) {
        __m256i q = t == VLM_Q8_0 ? cpu_codes_q8(src) : cpu_codes_q4(src, t == VLM_Q4_Z ? src[18] : 8);
        __m256 d = _mm256_set1_ps(cpu_block_scale(src));
        __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
        _mm256_storeu_ps(dst + i, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo))));
        _mm256_storeu_ps(dst + i + 8, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)))));
        _mm256_storeu_ps(dst + i + 16, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi))));
        _mm256_storeu_ps(dst + i + 24, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)))));
    }
#endif
    if (i < n) vlm_dequantize_row(t, src, n - i, dst + i);
}

/* The 8 rows of an R8 group (K elements each) to f32 rows dst + r * ldd:
 * block by block, the group's blocks back to 8 plain ones, then those. */
static inline void cpu_dequant_r8(float *dst, int64_t ldd, const unsigned char *group, vlm_dtype t, int64_t K) {
    vlm_dtype u = vlm_dtype_unpacked(t);
    size_t bs = vlm_dtype_size(u);
    for (int64_t b = 0; b * 32 < K; b++, group += 8 * bs) {
        unsigned char blk[8 * 34];
        vlm_unpack_r8(t, group, 32, blk);
        int64_t n = K - b * 32 < 32 ? K - b * 32 : 32;
        for (int r = 0; r < 8; r++) cpu_dequant(dst + r * ldd + b * 32, blk + r * bs, u, n);
    }
}

/* Contiguous conversion of n elements to f32. */
static inline void cpu_to_f32(float *dst, const void *src, vlm_dtype t, int64_t n) {
    int64_t i = 0;
    switch (t) {
    case VLM_Q8_0: case VLM_Q4_0: case VLM_Q4_Z: cpu_dequant(dst, (const unsigned char *)src, t, n); return;
    case VLM_F32: memcpy(dst, src, (size_t)n * 4); return;
    case VLM_F16: {
        const uint16_t *s = (const uint16_t *)src;
#if CPU_AVX2
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, cpu_load8_f16(s + i));
#endif
        for (; i < n; i++) dst[i] = cpu_h2f(s[i]);
        return;
    }
    case VLM_BF16: {
        const uint16_t *s = (const uint16_t *)src;
#if CPU_AVX2
        for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, cpu_load8_bf16(s + i));
#endif
        for (; i < n; i++) dst[i] = cpu_b2f(s[i]);
        return;
    }
    case VLM_I32: for (; i < n; i++) dst[i] = (float)((const int32_t *)src)[i]; return;
    case VLM_I64: for (; i < n; i++) dst[i] = (float)((const int64_t *)src)[i]; return;
    case VLM_U8: case VLM_BOOL: for (; i < n; i++) dst[i] = (float)((const uint8_t *)src)[i]; return;
    case VLM_I8: for (; i < n; i++) dst[i] = (float)((const int8_t *)src)[i]; return;
    default: memset(dst, 0, (size_t)n * 4); return;
    }
}

/* x[i] rounded to the nearest bf16 (ties to even), kept as f32: what the
 * bf16 compute mode does to a matmul's inputs. NaN stays NaN. */
static inline void cpu_round_bf16(float *x, int64_t n) {
    int64_t i = 0;
#if CPU_AVX2
    const __m256i one = _mm256_set1_epi32(1), half = _mm256_set1_epi32(0x7fff),
                  hi = _mm256_set1_epi32((int)0xffff0000u);
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256i b = _mm256_castps_si256(v);
        __m256i r = _mm256_add_epi32(b, _mm256_add_epi32(half, _mm256_and_si256(_mm256_srli_epi32(b, 16), one)));
        __m256 rv = _mm256_castsi256_ps(_mm256_and_si256(r, hi));
        _mm256_storeu_ps(x + i, _mm256_blendv_ps(rv, v, _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
    }
#endif
    for (; i < n; i++) {
        uint32_t b;
        memcpy(&b, &x[i], 4);
        if ((b & 0x7fffffffu) > 0x7f800000u) continue;
        b = (b + 0x7fffu + ((b >> 16) & 1u)) & 0xffff0000u;
        memcpy(&x[i], &b, 4);
    }
}

/* cpu_to_f32, then rounded to bf16 when round is set (bf16 compute on f16/f32
 * weights; bf16 values are already bf16). */
static inline void cpu_to_f32_round(float *dst, const void *src, vlm_dtype t, int64_t n, int round) {
    cpu_to_f32(dst, src, t, n);
    if (round && (t == VLM_F32 || t == VLM_F16)) cpu_round_bf16(dst, n);
}

/* Rows [n0, n0 + n) of a weight w (row stride ldw elements, any float or
 * block type) to f32 rows dst + i * ldd; R8 types: n0 and n multiples of 8.
 * round: to bf16 (bf16 compute on f16/f32 weights). */
static inline void cpu_rows_to_f32(float *dst, int64_t ldd, const char *w, vlm_dtype wt, int64_t ldw, int64_t n0,
                                   int64_t n, int64_t K, int round) {
    if (vlm_dtype_rows(wt) == 8) {
        for (int64_t i = 0; i < n; i += 8) cpu_dequant_r8(dst + i * ldd, ldd, (const unsigned char *)w + cpu_bytes(wt, (n0 + i) * ldw), wt, K);
        return;
    }
    for (int64_t i = 0; i < n; i++) cpu_to_f32_round(dst + i * ldd, w + cpu_bytes(wt, (n0 + i) * ldw), wt, K, round);
}

/* Strided load of n elements (stride in elements, may be 0) to f32. */
static inline void cpu_load(float *dst, const void *base, vlm_dtype t, int64_t off, int64_t stride, int64_t n) {
    const char *p = (const char *)base + cpu_bytes(t, off); /* block types: whole rows only (stride 1) */
    if (stride == 1) { cpu_to_f32(dst, p, t, n); return; }
    switch (t) {
    case VLM_F32: for (int64_t i = 0; i < n; i++) dst[i] = ((const float *)p)[i * stride]; return;
    case VLM_F16: for (int64_t i = 0; i < n; i++) dst[i] = cpu_h2f(((const uint16_t *)p)[i * stride]); return;
    case VLM_BF16: for (int64_t i = 0; i < n; i++) dst[i] = cpu_b2f(((const uint16_t *)p)[i * stride]); return;
    case VLM_I32: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int32_t *)p)[i * stride]; return;
    case VLM_I64: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int64_t *)p)[i * stride]; return;
    case VLM_U8: case VLM_BOOL: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const uint8_t *)p)[i * stride]; return;
    case VLM_I8: for (int64_t i = 0; i < n; i++) dst[i] = (float)((const int8_t *)p)[i * stride]; return;
    default: memset(dst, 0, (size_t)n * 4); return;
    }
}

static inline float cpu_dot_f32(const float *a, const float *b, int64_t n) {
    int64_t i = 0;
    float s = 0;
#if CPU_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s = cpu_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#elif CPU_NEON
    i = n & ~(int64_t)15;
    s = cpu_dot_neon(a, b, VLM_F32, i);
#endif
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static inline float cpu_dot_bf16(const float *a, const uint16_t *b, int64_t n) {
    int64_t i = 0;
    float s = 0;
#if CPU_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), cpu_load8_bf16(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), cpu_load8_bf16(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), cpu_load8_bf16(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), cpu_load8_bf16(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), cpu_load8_bf16(b + i), s0);
    s = cpu_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#elif CPU_NEON
    i = n & ~(int64_t)15;
    s = cpu_dot_neon(a, b, VLM_BF16, i);
#endif
    for (; i < n; i++) s += a[i] * cpu_b2f(b[i]);
    return s;
}

static inline float cpu_dot_f16(const float *a, const uint16_t *b, int64_t n) {
    int64_t i = 0;
    float s = 0;
#if CPU_AVX2
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps(), s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
    for (; i + 32 <= n; i += 32) {
        s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), cpu_load8_f16(b + i), s0);
        s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), cpu_load8_f16(b + i + 8), s1);
        s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), cpu_load8_f16(b + i + 16), s2);
        s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), cpu_load8_f16(b + i + 24), s3);
    }
    for (; i + 8 <= n; i += 8) s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), cpu_load8_f16(b + i), s0);
    s = cpu_hsum(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
#elif CPU_NEON
    i = n & ~(int64_t)15;
    s = cpu_dot_neon(a, b, VLM_F16, i);
#endif
    for (; i < n; i++) s += a[i] * cpu_h2f(b[i]);
    return s;
}

static inline float cpu_dot(const float *x, const void *w, vlm_dtype t, int64_t n) {
    switch (t) {
    case VLM_F16: return cpu_dot_f16(x, (const uint16_t *)w, n);
    case VLM_BF16: return cpu_dot_bf16(x, (const uint16_t *)w, n);
    default: return cpu_dot_f32(x, (const float *)w, n);
    }
}

/* y += a * x (x contiguous, any float dtype) */
static inline void cpu_axpy(float *y, float a, const void *x, vlm_dtype t, int64_t n) {
    int64_t i = 0;
#if CPU_AVX2
    __m256 va = _mm256_set1_ps(a);
    if (t == VLM_F32)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps((const float *)x + i), _mm256_loadu_ps(y + i)));
    else if (t == VLM_F16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, cpu_load8_f16((const uint16_t *)x + i), _mm256_loadu_ps(y + i)));
    else if (t == VLM_BF16)
        for (; i + 8 <= n; i += 8)
            _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, cpu_load8_bf16((const uint16_t *)x + i), _mm256_loadu_ps(y + i)));
#elif CPU_NEON
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), cpu_load4w(x, i, t), a));
#endif
    if (t == VLM_F32) for (; i < n; i++) y[i] += a * ((const float *)x)[i];
    else if (t == VLM_F16) for (; i < n; i++) y[i] += a * cpu_h2f(((const uint16_t *)x)[i]);
    else for (; i < n; i++) y[i] += a * cpu_b2f(((const uint16_t *)x)[i]);
}

static inline void cpu_scale_inplace(float *y, float a, int64_t n) {
    int64_t i = 0;
#if CPU_AVX2
    __m256 va = _mm256_set1_ps(a);
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(va, _mm256_loadu_ps(y + i)));
#elif CPU_NEON
    for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vmulq_n_f32(vld1q_f32(y + i), a));
#endif
    for (; i < n; i++) y[i] *= a;
}

/* C[M][N] = alpha A[M][K] . op(B) + beta C (beta 0: C is not read), op(B) =
 * B[N][K] transposed (trans_b) or B[K][N]: the BLAS's sgemm where the build
 * has one, else row by row on the dot and axpy kernels (the few rows of
 * attention in decode; larger products go to the packed engine). */
static inline void cpu_sgemm(int trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                             const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
#if CPU_BLAS
    cblas_sgemm(CblasRowMajor, CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (int)M, (int)N, (int)K, alpha, A,
                (int)lda, B, (int)ldb, beta, C, (int)ldc);
#else
    for (int64_t m = 0; m < M; m++) {
        float *c = C + m * ldc;
        const float *a = A + m * lda;
        if (trans_b) {
            for (int64_t n = 0; n < N; n++) c[n] = alpha * cpu_dot_f32(a, B + n * ldb, K) + (beta != 0 ? beta * c[n] : 0.0f);
            continue;
        }
        if (beta == 0) memset(c, 0, sizeof(float) * (size_t)N);
        else if (beta != 1) cpu_scale_inplace(c, beta, N);
        for (int64_t k = 0; k < K; k++) cpu_axpy(c, alpha * a[k], B + k * ldb, VLM_F32, N);
    }
#endif
}

static inline float cpu_max(const float *x, int64_t n) {
    int64_t i = 0;
    float m = -INFINITY;
#if CPU_AVX2
    if (n >= 8) {
        __m256 vm = _mm256_set1_ps(-INFINITY);
        for (; i + 8 <= n; i += 8) vm = _mm256_max_ps(vm, _mm256_loadu_ps(x + i));
        m = cpu_hmax(vm);
    }
#endif
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

#if CPU_AVX2
/* exp(x) for x <= 0 range typical of softmax; Cephes-style polynomial, ~1 ulp. */
static inline __m256 cpu_exp8(__m256 x) {
    const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447504f);
    __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 fx = _mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f));
    fx = _mm256_floor_ps(fx);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 z = _mm256_mul_ps(x, x);
    __m256 y = _mm256_set1_ps(1.9875691500E-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
    y = _mm256_fmadd_ps(y, z, x);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_andnot_ps(under, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}
#endif

/* y[i] = exp(x[i] - m), returns the sum (in f32 lanes). */
static inline float cpu_exp_sub_sum(float *y, const float *x, float m, int64_t n) {
    int64_t i = 0;
    float s = 0;
#if CPU_AVX2
    __m256 vm = _mm256_set1_ps(m), vs = _mm256_setzero_ps();
    for (; i + 8 <= n; i += 8) {
        __m256 e = cpu_exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(y + i, e);
        vs = _mm256_add_ps(vs, e);
    }
    s = cpu_hsum(vs);
#endif
    for (; i < n; i++) { y[i] = expf(x[i] - m); s += y[i]; }
    return s;
}

/* ------------------------------------------------------------------ tensor helpers */

static inline int64_t cpu_lastdim(const vlm_tensor *t) { return t->ndim ? t->shape[t->ndim - 1] : 1; }
static inline int64_t cpu_laststride(const vlm_tensor *t) { return t->ndim ? t->stride[t->ndim - 1] : 1; }
static inline int64_t cpu_nrows(const vlm_tensor *t) {
    int64_t d = cpu_lastdim(t);
    return d ? vlm_nelem(t) / d : 0;
}
/* Element offset of row r (row-major over all dims but the last). */
static inline int64_t cpu_row_off(const vlm_tensor *t, int64_t r) {
    int64_t off = 0;
    for (int d = t->ndim - 2; d >= 0; d--) {
        int64_t n = t->shape[d];
        off += (r % n) * t->stride[d];
        r /= n;
    }
    return off;
}
/* Row r of t as f32: a pointer into t when possible, else converted into buf. */
static inline const float *cpu_row(const vlm_tensor *t, int64_t r, float *buf) {
    int64_t off = cpu_row_off(t, r), n = cpu_lastdim(t), s = cpu_laststride(t);
    if (t->dtype == VLM_F32 && (s == 1 || n == 1)) return (const float *)t->data + off;
    cpu_load(buf, t->data, t->dtype, off, s, n);
    return buf;
}
/* b broadcast to a's shape: stride 0 where b's dim is 1 or missing. */
static inline vlm_tensor cpu_broadcast(const vlm_tensor *a, const vlm_tensor *b) {
    vlm_tensor v = *b;
    v.ndim = a->ndim;
    for (int i = 0; i < a->ndim; i++) {
        int j = i - (a->ndim - b->ndim);
        v.shape[i] = a->shape[i];
        v.stride[i] = (j < 0 || b->shape[j] == 1) ? 0 : b->stride[j];
    }
    return v;
}
static inline int64_t cpu_min_rows(int64_t D, int64_t work_per_elem) {
    int64_t target = 32768 / (work_per_elem > 0 ? work_per_elem : 1);
    int64_t r = D > 0 ? target / D : 1;
    return r < 1 ? 1 : r;
}

/* ------------------------------------------------------------------ rows of an op, stores */

typedef struct cpu_rows_arg {
    cpu_ctx *ctx;
    const vlm_op *op;
    vlm_tensor a, b, c, out;
} cpu_rows_arg;

static inline void cpu_store(void *base, vlm_dtype t, int64_t off, int64_t stride, const float *src, int64_t n) {
    size_t es = vlm_dtype_size(t);
    char *p = (char *)base + off * (int64_t)es;
    switch (t) {
    case VLM_F32:
        if (stride == 1) memcpy(p, src, (size_t)n * 4);
        else for (int64_t i = 0; i < n; i++) ((float *)p)[i * stride] = src[i];
        return;
    case VLM_F16: {
        int64_t i = 0;
#if CPU_AVX2
        if (stride == 1)
            for (; i + 8 <= n; i += 8)
                _mm_storeu_si128((__m128i *)((uint16_t *)p + i), _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
        for (; i < n; i++) ((uint16_t *)p)[i * stride] = vlm_f32_to_f16(src[i]);
        return;
    }
    case VLM_BF16: for (int64_t i = 0; i < n; i++) ((uint16_t *)p)[i * stride] = vlm_f32_to_bf16(src[i]); return;
    case VLM_I32: for (int64_t i = 0; i < n; i++) ((int32_t *)p)[i * stride] = (int32_t)src[i]; return;
    case VLM_I64: for (int64_t i = 0; i < n; i++) ((int64_t *)p)[i * stride] = (int64_t)src[i]; return;
    case VLM_U8: for (int64_t i = 0; i < n; i++) ((uint8_t *)p)[i * stride] = (uint8_t)src[i]; return;
    case VLM_BOOL: for (int64_t i = 0; i < n; i++) ((uint8_t *)p)[i * stride] = src[i] != 0; return;
    case VLM_I8: /* truncated as the other integer types, saturated */
        for (int64_t i = 0; i < n; i++)
            ((int8_t *)p)[i * stride] = (int8_t)(src[i] >= 127.0f ? 127 : src[i] <= -128.0f ? -128 : (int)src[i]);
        return;
    default: return;
    }
}

static inline int cpu_is_int(vlm_dtype t) {
    return t == VLM_I32 || t == VLM_I64 || t == VLM_U8 || t == VLM_BOOL || t == VLM_I8;
}

static inline int64_t cpu_get_int(const void *p, vlm_dtype t, int64_t i) {
    switch (t) {
    case VLM_I32: return ((const int32_t *)p)[i];
    case VLM_I64: return ((const int64_t *)p)[i];
    case VLM_I8: return ((const int8_t *)p)[i];
    default: return ((const uint8_t *)p)[i];
    }
}

/* ------------------------------------------------------------------ kernel families (each its own file) */

/* copy.c */
CPU_KFN vlm_status cpu_op_cpy(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
/* elementwise.c */
CPU_KFN vlm_status cpu_op_ew(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
CPU_KFN void cpu_norm_rows(void *p, int64_t r0, int64_t r1, int tid);
CPU_KFN void cpu_softmax_rows(void *p, int64_t r0, int64_t r1, int tid);
CPU_KFN vlm_status cpu_op_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err, vlm_parallel_fn fn, int work);
CPU_KFN vlm_status cpu_op_rope(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
/* gemm.c (the engine for many rows; see CPU_PACKED) */
#if CPU_PACKED
CPU_KFN void cpu_pack_panels(float *dst, const char *w, vlm_dtype wt, int64_t ldw, int64_t nb, int64_t K, int round, float *row);
CPU_KFN void cpu_pack_panels_kmajor(float *dst, const char *src, vlm_dtype t, int64_t ld, int64_t nk, int64_t ncols, float *row);
CPU_KFN void cpu_gemm_panels(const float *a, int64_t lda, int64_t mb, const float *panels, int64_t nb, int64_t K, float *c, int64_t ldc, int acc);
#endif
/* gemm_i8.c */
CPU_KFN vlm_status cpu_op_matmul_i8(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
/* matmul.c */
/* res[r] = x[r] . w for r < m <= 4 rows of x (GEMV for few rows; MoE decode) */
CPU_KFN void cpu_dotm(const float *x, int64_t lda, int m, const void *w, vlm_dtype wt, int64_t K, float *res);
CPU_KFN vlm_status cpu_mm(cpu_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *x, int64_t lda, const void *w, vlm_dtype wt, int64_t ldw, const float *bias, float *out, int64_t ldo, vlm_error *err);
CPU_KFN vlm_status cpu_op_matmul(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
/* moe.c */
CPU_KFN vlm_status cpu_op_matmul_id(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
/* attention.c */
CPU_KFN vlm_status cpu_op_attn(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
/* rows.c */
CPU_KFN vlm_status cpu_op_concat(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
CPU_KFN vlm_status cpu_op_get_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
CPU_KFN vlm_status cpu_op_set_rows(cpu_ctx *ctx, const vlm_op *op, vlm_error *err);
CPU_KFN void cpu_topk_rows(void *p, int64_t r0, int64_t r1, int tid);
CPU_KFN void cpu_argmax_rows(void *p, int64_t r0, int64_t r1, int tid);
CPU_KFN void cpu_im2col_rows(void *p, int64_t r0, int64_t r1, int tid);

#endif /* VLM_CPU_KERNELS_H */
