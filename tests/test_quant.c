/* The block-quantized weight formats (q8_0, q4_0) against a plain
 * implementation of the byte layouts the README documents, and products
 * with quantized weights on every kernel variant the CPU runs against the
 * double-precision product of the dequantized weights:
 *   - quantize: bit-exact blocks, odd lengths (zero-padded last block);
 *   - dequantize: exact against the layout, error per block within the
 *     format's step;
 *   - matmul M = 1, 3 (int8 GEMV: x quantized by the activation rule, which
 *     the reference applies too) and M = 64 (GEMM on dequantized panels, x
 *     exact), odd K, bias, 1 and 2 threads, f32 and bf16 compute;
 *   - get_rows from a quantized table, vlm_get_f32, layout and views. */
#include "vlm.h"
#include "test_util.h"

#include <stdint.h>

static unsigned long long rng = 777;

/* ------------------------------------------------------------------ the documented layouts, written plainly */

static float ref_f16(uint16_t h) { return vlm_f16_to_f32(h); }
static float ref_round_half_away(float v) { return v < 0 ? -floorf(-v + 0.5f) : floorf(v + 0.5f); }
static int ref_clamp(float v, int lo, int hi) {
    if (v != v) return 0;
    v = ref_round_half_away(v);
    return v < lo ? lo : v > hi ? hi : (int)v;
}

/* README: q8_0 block = f16 d (little-endian), then 32 int8 codes;
 * d = f16(max|x| / 127), q = clamp(round(x / d), -127, 127). */
static void ref_q8_block(const float *x, unsigned char *out) {
    float amax = 0;
    for (int i = 0; i < 32; i++) if (fabsf(x[i]) > amax) amax = fabsf(x[i]);
    uint16_t dh = vlm_f32_to_f16(amax / 127.0f);
    float d = ref_f16(dh);
    out[0] = (unsigned char)(dh & 0xff);
    out[1] = (unsigned char)(dh >> 8);
    for (int i = 0; i < 32; i++) out[2 + i] = (unsigned char)(signed char)ref_clamp(d != 0 ? x[i] * (1.0f / d) : 0, -127, 127);
}
/* README: q4_0 block = f16 d, then 16 bytes, byte j = q[j] | q[j + 16] << 4;
 * m = the element of largest magnitude (the first on ties), d = f16(m / -8),
 * q = clamp(round(x / d) + 8, 0, 15); x = d * (q - 8). */
static void ref_q4_block(const float *x, unsigned char *out) {
    float m = 0;
    for (int i = 0; i < 32; i++) if (fabsf(x[i]) > fabsf(m)) m = x[i];
    uint16_t dh = vlm_f32_to_f16(m / -8.0f);
    float d = ref_f16(dh), id = d != 0 ? 1.0f / d : 0;
    out[0] = (unsigned char)(dh & 0xff);
    out[1] = (unsigned char)(dh >> 8);
    for (int j = 0; j < 16; j++)
        out[2 + j] = (unsigned char)(ref_clamp(x[j] * id + 8.0f, 0, 15) | ref_clamp(x[j + 16] * id + 8.0f, 0, 15) << 4);
}
/* README: q4_z block = f16 d, 16 bytes as q4_0's, then the zero point z;
 * lo = min(0, min x), hi = max(0, max x), d = f16((hi - lo) / 15),
 * z = clamp(round(-lo / d), 0, 15), q = clamp(round(x / d) + z, 0, 15);
 * x = d * (q - z). */
static void ref_q4z_block(const float *x, unsigned char *out) {
    float lo = 0, hi = 0;
    for (int i = 0; i < 32; i++) { if (x[i] < lo) lo = x[i]; if (x[i] > hi) hi = x[i]; }
    uint16_t dh = vlm_f32_to_f16((hi - lo) / 15.0f);
    float d = ref_f16(dh), id = d != 0 ? 1.0f / d : 0;
    int z = ref_clamp(-lo * id, 0, 15);
    out[0] = (unsigned char)(dh & 0xff);
    out[1] = (unsigned char)(dh >> 8);
    for (int j = 0; j < 16; j++)
        out[2 + j] = (unsigned char)(ref_clamp(x[j] * id + (float)z, 0, 15) | ref_clamp(x[j + 16] * id + (float)z, 0, 15) << 4);
    out[18] = (unsigned char)z;
}
static float ref_deq(vlm_dtype t, const unsigned char *blk, int j) {
    float d = ref_f16((uint16_t)(blk[0] | blk[1] << 8));
    if (t == VLM_Q8_0) return d * (float)(signed char)blk[2 + j];
    int q = j < 16 ? blk[2 + j] & 15 : blk[2 + j - 16] >> 4;
    return d * (float)(q - (t == VLM_Q4_Z ? blk[18] : 8));
}
static size_t ref_block_bytes(vlm_dtype t) { return t == VLM_Q8_0 ? 34 : t == VLM_Q4_Z ? 19 : 18; }

static void ref_quantize(vlm_dtype t, const float *x, int64_t n, unsigned char *out) {
    for (int64_t i = 0; i < n; i += 32) {
        float b[32] = {0};
        for (int64_t j = 0; j < 32 && i + j < n; j++) b[j] = x[i + j];
        if (t == VLM_Q8_0) ref_q8_block(b, out + i / 32 * 34);
        else if (t == VLM_Q4_Z) ref_q4z_block(b, out + i / 32 * 19);
        else ref_q4_block(b, out + i / 32 * 18);
    }
}

/* README: an R8 group interleaves 8 rows block by block: for block b, the
 * 8 rows' f16 scales, then the code bytes in chunks of 32: chunk c holds
 * bytes 4c..4c+3 of each row's block codes in row order; then (q4_z) the 8
 * rows' zero points. */
static void ref_repack_r8(vlm_dtype t, const unsigned char *rows, int64_t K, unsigned char *group) {
    size_t bs = ref_block_bytes(t), ncode = t == VLM_Q8_0 ? 32 : 16, row = (size_t)((K + 31) / 32) * bs;
    for (int64_t b = 0; b < (K + 31) / 32; b++) {
        unsigned char *g = group + b * 8 * bs;
        for (int r = 0; r < 8; r++) { g[2 * r] = rows[r * row + b * bs]; g[2 * r + 1] = rows[r * row + b * bs + 1]; }
        for (size_t c = 0; c < ncode / 4; c++)
            for (int r = 0; r < 8; r++)
                for (int i = 0; i < 4; i++) g[16 + 32 * c + 4 * r + i] = rows[r * row + b * bs + 2 + 4 * c + i];
        if (t == VLM_Q4_Z)
            for (int r = 0; r < 8; r++) g[16 + 128 + r] = rows[r * row + b * bs + 18];
    }
}

static void test_r8_layout(vlm_dtype t, vlm_dtype r8) {
    int64_t K = 77, nb = 3;
    size_t row = (size_t)nb * ref_block_bytes(t);
    unsigned char *rows = malloc(8 * row), *want = malloc(8 * row), *got = malloc(8 * row), *back = malloc(8 * row);
    for (size_t i = 0; i < 8 * row; i++) rows[i] = (unsigned char)(test_randf(&rng) * 128 + 128);
    ref_repack_r8(t, rows, K, want);
    vlm_repack_r8(r8, rows, K, got);
    vlm_unpack_r8(r8, got, K, back);
    CHECK(!memcmp(got, want, 8 * row), "%s: groups differ from the documented layout", vlm_dtype_name(r8));
    CHECK(!memcmp(back, rows, 8 * row), "%s: unpack is not the inverse of repack", vlm_dtype_name(r8));
    CHECK(vlm_dtype_rows(r8) == 8 && vlm_dtype_rows(t) == 1 && vlm_dtype_unpacked(r8) == t && vlm_dtype_unpacked(t) == t,
          "%s: rows and unpacked type", vlm_dtype_name(r8));
    free(rows); free(want); free(got); free(back);
}

/* ------------------------------------------------------------------ codecs */

static void fill(float *x, int64_t n, float scale) {
    for (int64_t i = 0; i < n; i++) x[i] = test_randf(&rng) * scale;
}

static void test_codec(vlm_dtype t) {
    const char *name = vlm_dtype_name(t);
    CHECK(vlm_dtype_block(t) == 32 && vlm_dtype_size(t) == ref_block_bytes(t), "%s: block of %d, %zu bytes", name,
          vlm_dtype_block(t), vlm_dtype_size(t));
    CHECK(vlm_dtype_bytes(t, 77) == 3 * ref_block_bytes(t) && vlm_dtype_bytes(t, 64) == 2 * ref_block_bytes(t) &&
          vlm_dtype_bytes(VLM_BF16, 77) == 154, "%s: bytes of a row", name);
    static const int64_t lens[] = {32, 77, 1000, 5};
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        int64_t n = lens[li], nb = (n + 31) / 32;
        float *x = malloc(sizeof(float) * (size_t)n), *back = malloc(sizeof(float) * (size_t)n);
        unsigned char *got = calloc((size_t)nb, ref_block_bytes(t)), *want = calloc((size_t)nb, ref_block_bytes(t));
        fill(x, n, li == 2 ? 30.0f : 1.0f);
        if (n >= 96) { /* special blocks: all zero, one negative extreme, ties */
            for (int j = 0; j < 32; j++) { x[j] = 0; x[32 + j] *= 0.1f; x[64 + j] = (float)(j - 16) * 0.25f; }
            x[40] = -5.0f;
        }
        if (n >= 128) /* all positive: q4_z's range still starts at 0 */
            for (int j = 0; j < 32; j++) x[96 + j] = 2.0f + 0.05f * (float)j;
        vlm_quantize_row(t, x, n, got);
        ref_quantize(t, x, n, want);
        CHECK(!memcmp(got, want, (size_t)nb * ref_block_bytes(t)), "%s n=%lld: blocks differ from the documented layout",
              name, (long long)n);
        vlm_dequantize_row(t, got, n, back);
        int exact = 1, within = 1;
        for (int64_t i = 0; i < n; i++) {
            const unsigned char *blk = want + i / 32 * ref_block_bytes(t);
            float r = ref_deq(t, blk, (int)(i % 32)), d = fabsf(ref_f16((uint16_t)(blk[0] | blk[1] << 8)));
            if (back[i] != r) exact = 0;
            /* q8_0: half a step (plus the f16 rounding of d); q4_0: a whole
             * step at the clamped end (x = -m codes as 7d, not 8d); q4_z:
             * half a step, and a whole one where z's rounding clamps a code */
            float bound = t == VLM_Q8_0 ? 0.5f * d + fabsf(x[i]) * 1e-3f : d * 1.001f;
            if (!(fabsf(back[i] - x[i]) <= bound + 1e-30f)) within = 0;
        }
        CHECK(exact, "%s n=%lld: dequantized values differ from the layout's", name, (long long)n);
        CHECK(within, "%s n=%lld: a value is off by more than the block's step", name, (long long)n);
        if (n >= 96) { /* the all-zero block has d = 0; the extreme of block 1 is exact (q4_z: within a step) */
            CHECK(ref_f16((uint16_t)(got[0] | got[1] << 8)) == 0 && back[0] == 0, "%s: zero block", name);
            CHECK(fabsf(back[40] + 5.0f) <= (t == VLM_Q4_Z ? 5.0f / 15 : 5.0f * 1e-3f), "%s: the block's extreme %g", name,
                  back[40]);
        }
        free(x); free(back); free(got); free(want);
    }
    vlm_dtype q;
    CHECK(!vlm_quant_from_name("q8_0", &q) && q == VLM_Q8_0 && !vlm_quant_from_name("q4_0", &q) && q == VLM_Q4_0 &&
          vlm_quant_from_name("Q8_0", &q) && vlm_quant_from_name("bf16", &q) && vlm_quant_from_name(NULL, &q), "names");
}

/* ------------------------------------------------------------------ products */

/* A [N, K] weight of type t (an R8 type: quantized as its blocks, then
 * repacked) from random values: the tensor (host memory the caller frees)
 * and its dequantized values w[N][K]. */
static vlm_tensor quant_weight(vlm_dtype t8, int64_t N, int64_t K, float **w) {
    vlm_dtype t = vlm_dtype_unpacked(t8);
    vlm_tensor q = vlm_tensor_make(t, 2, (const int64_t[]){N, K}, NULL);
    CHECK(q.stride[0] == (K + 31) / 32 * 32 && q.stride[1] == 1 && vlm_is_contiguous(&q) &&
          vlm_nbytes(&q) == (size_t)N * vlm_dtype_bytes(t, K), "%s layout of [%lld, %lld]", vlm_dtype_name(t),
          (long long)N, (long long)K);
    q.data = malloc(vlm_nbytes(&q));
    *w = malloc(sizeof(float) * (size_t)(N * K));
    float *row = malloc(sizeof(float) * (size_t)K);
    for (int64_t n = 0; n < N; n++) {
        fill(row, K, 0.5f);
        vlm_quantize_row(t, row, K, (char *)q.data + n * vlm_dtype_bytes(t, K));
        vlm_dequantize_row(t, (char *)q.data + n * vlm_dtype_bytes(t, K), K, *w + n * K);
    }
    free(row);
    if (t8 != t) { /* group by group, in place through a copy */
        unsigned char *tmp = malloc(8 * vlm_dtype_bytes(t, K));
        for (int64_t n = 0; n < N; n += 8) {
            memcpy(tmp, (char *)q.data + n * vlm_dtype_bytes(t, K), 8 * vlm_dtype_bytes(t, K));
            vlm_repack_r8(t8, tmp, K, (char *)q.data + n * vlm_dtype_bytes(t, K));
        }
        free(tmp);
        q.dtype = t8;
    }
    return q;
}

static float ref_bf16(float v) { return vlm_bf16_to_f32(vlm_f32_to_bf16(v)); }

/* The activation rule (gemv_quant.c, README): per block of 32 (the last
 * zero-padded), d = max|x| / 127, q = nearest(x * (1 / d)), ties to even. */
static void ref_quant_act(const float *x, int64_t K, float *xq) {
    for (int64_t i = 0; i < K; i += 32) {
        float amax = 0;
        for (int64_t j = i; j < i + 32 && j < K; j++) if (fabsf(x[j]) > amax) amax = fabsf(x[j]);
        float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0;
        for (int64_t j = i; j < i + 32 && j < K; j++) xq[j] = d * nearbyintf(x[j] * id);
    }
}

static void test_product(vlm_backend *be, int bf16, vlm_dtype t, int64_t M, int64_t N, int64_t K, int with_bias) {
    char what[128];
    snprintf(what, sizeof what, "%s %s%s M=%lld N=%lld K=%lld bias=%d", be->kernels, bf16 ? "bf16 " : "",
             vlm_dtype_name(t), (long long)M, (long long)N, (long long)K, with_bias);
    float *w, *x = malloc(sizeof(float) * (size_t)(M * K)), *xr = malloc(sizeof(float) * (size_t)(M * K)),
              *bias = malloc(sizeof(float) * (size_t)N);
    vlm_tensor wq = quant_weight(t, N, K, &w);
    fill(x, M * K, 1.0f);
    fill(bias, N, 1.0f);
    for (int64_t i = 0; i < M * K; i++) xr[i] = bf16 ? ref_bf16(x[i]) : x[i];
    if (M < 32) /* the int8 GEMV's rows: x as the activation rule quantizes it */
        for (int64_t m = 0; m < M; m++) ref_quant_act(xr + m * K, K, xr + m * K);
    vlm_compute c;
    vlm_compute_init(&c, be);
    vlm_tensor *xt = vlm_from_host(&c, VLM_F32, 2, (const int64_t[]){M, K}, x);
    vlm_tensor *bt = with_bias ? vlm_from_host(&c, VLM_F32, 1, (const int64_t[]){N}, bias) : NULL;
    vlm_tensor *wt = vlm_new_2d(&c, t, N, K);
    if (wt) be->upload(be, wt->data, wq.data, vlm_nbytes(&wq));
    vlm_tensor *out = vlm_linear(&c, xt, wt, bt);
    CHECK(out != NULL, "%s: %s", what, c.err.msg);
    int bad = 0;
    double worst = 0;
    for (int64_t m = 0; out && m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double ref = with_bias ? bias[n] : 0, absum = 0;
            for (int64_t k = 0; k < K; k++) {
                ref += (double)xr[m * K + k] * w[n * K + k];
                absum += fabs((double)xr[m * K + k] * w[n * K + k]);
            }
            double d = fabs(vlm_get_f32(out, m * N + n) - ref), lim = 1e-5 * (absum + fabs(ref)) + 1e-7;
            if (!(d <= lim)) { bad++; if (d / lim > worst) worst = d / lim; }
        }
    CHECK(bad == 0, "%s: %d outputs off the double product (worst %.3g x 1e-5 relative)", what, bad, worst);
    vlm_compute_free(&c);
    free(w); free(x); free(xr); free(bias); free(wq.data);
}

/* MoE: out[t, j] = x[t] . w[ids[t, j]]^T with quantized experts [E, N, K]
 * (each expert quantized as a matrix), against the double product; the
 * rows each expert gets (< 32) go through the int8 GEMV, so the reference
 * quantizes x too. */
static void test_experts(vlm_backend *be, int bf16, vlm_dtype t) {
    int64_t E = 4, N = 24, K = 77, T = 3, k = 2;
    float *w[4], *x = malloc(sizeof(float) * (size_t)(T * K)), *xr = malloc(sizeof(float) * (size_t)(T * K));
    vlm_tensor q[4];
    size_t mb = (size_t)N * vlm_dtype_bytes(vlm_dtype_unpacked(t), K);
    unsigned char *all = malloc(mb * (size_t)E);
    for (int e = 0; e < E; e++) {
        q[e] = quant_weight(t, N, K, &w[e]);
        memcpy(all + (size_t)e * mb, q[e].data, mb);
    }
    fill(x, T * K, 1.0f);
    for (int64_t i = 0; i < T * K; i++) xr[i] = bf16 ? ref_bf16(x[i]) : x[i];
    for (int64_t r = 0; r < T; r++) ref_quant_act(xr + r * K, K, xr + r * K);
    int32_t ids[6] = {2, 0, 2, 3, 1, 2};
    vlm_compute c;
    vlm_compute_init(&c, be);
    vlm_tensor *xt = vlm_from_host(&c, VLM_F32, 2, (const int64_t[]){T, K}, x);
    vlm_tensor *it = vlm_from_host(&c, VLM_I32, 2, (const int64_t[]){T, k}, ids);
    vlm_tensor *wt = vlm_new_3d(&c, t, E, N, K);
    if (wt) be->upload(be, wt->data, all, mb * (size_t)E);
    vlm_tensor *out = vlm_matmul_id(&c, xt, wt, it);
    CHECK(out != NULL, "matmul_id %s: %s", vlm_dtype_name(t), c.err.msg);
    int bad = 0;
    for (int64_t r = 0; out && r < T; r++)
        for (int64_t j = 0; j < k; j++)
            for (int64_t n = 0; n < N; n++) {
                const float *we = w[ids[r * k + j]] + n * K;
                double ref = 0, absum = 0;
                for (int64_t i = 0; i < K; i++) {
                    ref += (double)xr[r * K + i] * we[i];
                    absum += fabs((double)xr[r * K + i] * we[i]);
                }
                bad += !(fabs(vlm_get_f32(out, (r * k + j) * N + n) - ref) <= 1e-5 * absum + 1e-7);
            }
    CHECK(bad == 0, "matmul_id %s%s on %s: %d outputs off the double product", bf16 ? "bf16 " : "", vlm_dtype_name(t),
          be->kernels, bad);
    vlm_compute_free(&c);
    for (int e = 0; e < E; e++) { free(w[e]); free(q[e].data); }
    free(all); free(x); free(xr);
}

/* get_rows and vlm_get_f32 read the dequantized values exactly. */
static void test_rows(vlm_backend *be, vlm_dtype t) {
    float *w;
    int64_t V = vlm_dtype_rows(t) == 8 ? 16 : 9, D = 70;
    vlm_tensor tab = quant_weight(t, V, D, &w);
    vlm_compute c;
    vlm_compute_init(&c, be);
    vlm_tensor *tt = vlm_new_2d(&c, t, V, D);
    if (tt) be->upload(be, tt->data, tab.data, vlm_nbytes(&tab));
    int32_t ids[4] = {8, 0, 3, V == 16 ? 13 : 8};
    vlm_tensor *it = vlm_from_host(&c, VLM_I32, 1, (const int64_t[]){4}, ids);
    vlm_tensor *rows = vlm_get_rows(&c, tt, it);
    CHECK(rows != NULL, "get_rows %s: %s", vlm_dtype_name(t), c.err.msg);
    int exact = rows != NULL, exact_get = 1;
    for (int r = 0; rows && r < 4; r++)
        for (int64_t j = 0; j < D; j++) exact &= vlm_get_f32(rows, r * D + j) == w[ids[r] * D + j];
    for (int64_t i = 0; i < V * D; i++) exact_get &= vlm_get_f32(&tab, i) == w[i];
    CHECK(exact, "get_rows %s: rows differ from the dequantized table", vlm_dtype_name(t));
    CHECK(exact_get, "vlm_get_f32 %s differs from the dequantized values", vlm_dtype_name(t));
    /* views keep whole rows: a slice of rows is fine, one inside a block is refused */
    int64_t r0 = vlm_dtype_rows(t) == 8 ? 8 : 2;
    vlm_tensor *sl = vlm_slice(&c, tt, 0, r0, vlm_dtype_rows(t) == 8 ? 8 : 3);
    CHECK(sl && vlm_get_f32(sl, 1) == w[r0 * D + 1], "slice of rows of %s", vlm_dtype_name(t));
    CHECK(!vlm_slice(&c, tt, 1, 3, 20) && c.failed, "slice inside a block of %s accepted", vlm_dtype_name(t));
    c.failed = 0;
    if (vlm_dtype_rows(t) == 8) CHECK(!vlm_slice(&c, tt, 0, 4, 8) && c.failed, "slice inside a group of %s accepted", vlm_dtype_name(t));
    vlm_compute_free(&c);
    free(w); free(tab.data);
}

/* AWQ: words packed as AutoAWQ's WQLinear_GEMM.from_linear documents it
 * (for each word column, outputs order_map = {0, 2, 4, 6, 1, 3, 5, 7} into
 * nibbles 0..7), stored at an odd address as an mmap'd file may have them;
 * vlm_awq_repack gives q4_z rows / groups whose values are exactly
 * scale * (q - zero). */
static void awq_pack(const int *codes, int64_t rows, int64_t N, unsigned char *out) {
    static const int order_map[8] = {0, 2, 4, 6, 1, 3, 5, 7};
    for (int64_t r = 0; r < rows; r++)
        for (int64_t col = 0; col < N / 8; col++) {
            uint32_t w = 0;
            for (int i = 0; i < 8; i++) w |= (uint32_t)codes[r * N + col * 8 + order_map[i]] << (4 * i);
            memcpy(out + 4 * (r * (N / 8) + col), &w, 4);
        }
}

static void test_awq(void) {
    const int64_t K = 128, N = 24, G = 64;
    int *q = malloc(sizeof(int) * (size_t)(K * N)), *z = malloc(sizeof(int) * (size_t)(K / G * N));
    uint16_t *sc = malloc(2 * (size_t)(K / G * N));
    unsigned char *buf = malloc(1 + 4 * (size_t)(K * N / 8) + 4 * (size_t)(K / G * N / 8) + 2 * (size_t)(K / G * N) + 8);
    for (int64_t i = 0; i < K * N; i++) q[i] = (int)(test_randf(&rng) * 8 + 8) & 15;
    for (int64_t i = 0; i < K / G * N; i++) {
        z[i] = (int)(test_randf(&rng) * 8 + 8) & 15;
        sc[i] = vlm_f32_to_f16(0.01f + 0.05f * fabsf(test_randf(&rng)));
    }
    unsigned char *qw = buf + 1, *qz = qw + 4 * K * N / 8, *ss = qz + 4 * K / G * N / 8;
    awq_pack(q, K, N, qw);
    awq_pack(z, K / G, N, qz);
    memcpy(ss, sc, 2 * (size_t)(K / G * N));
    for (int r8 = 0; r8 < 2; r8++) {
        vlm_dtype t = r8 ? VLM_Q4_ZR8 : VLM_Q4_Z;
        vlm_tensor w = vlm_tensor_make(t, 2, (const int64_t[]){N, K}, NULL);
        w.data = malloc(vlm_nbytes(&w));
        vlm_awq_repack(t, qw, qz, ss, K, N, G, 0, 1, w.data); /* two calls, as threads split it */
        vlm_awq_repack(t, qw, qz, ss, K, N, G, 1, N / 8, (char *)w.data + 8 * vlm_dtype_bytes(VLM_Q4_Z, K));
        int exact = 1;
        for (int64_t n = 0; n < N; n++)
            for (int64_t k = 0; k < K; k++) {
                float want = vlm_f16_to_f32(sc[k / G * N + n]) * (float)(q[k * N + n] - z[k / G * N + n]);
                exact &= vlm_get_f32(&w, n * K + k) == want;
            }
        CHECK(exact, "AWQ repacked into %s: values differ from scale * (q - zero)", vlm_dtype_name(t));
        free(w.data);
    }
    free(q); free(z); free(sc); free(buf);
}

/* vlm_st_write_meta + vlm_st_open: a quantized weight stored as U8 with its
 * description in the metadata opens as the block type; descriptions that
 * do not fit the stored bytes are format errors. */
static void test_saved(void) {
    char dir[64] = "/tmp/vlm_test_quant_XXXXXX", path[128];
    if (!test_mkdtemp(dir)) { CHECK(0, "mkdtemp"); return; }
    snprintf(path, sizeof path, "%s/q.safetensors", dir);
    float *w;
    vlm_tensor q = quant_weight(VLM_Q4_0R8, 16, 77, &w);
    vlm_tensor u8 = vlm_tensor_make(VLM_U8, 2, (const int64_t[]){16, (int64_t)vlm_dtype_bytes(VLM_Q4_0, 77)}, q.data);
    float bias[3] = {1, 2, 3};
    vlm_tensor b = vlm_tensor_make(VLM_F32, 1, (const int64_t[]){3}, bias);
    const char *names[2] = {"w", "b"};
    const vlm_tensor *ts[2] = {&u8, &b};
    static const struct { const char *desc; int ok; } cases[] = {
        {"Q4_0R8 16 77 BF16", 1}, {"Q4_0R8 16 100 BF16", 0}, {"Q4_0R8 8 77 BF16", 0}, {"Q4_0 16 77 F16", 1},
        {"Q8_0 16 77 BF16", 0},   {"Q9_9 16 77 BF16", 0},    {"Q4_0R8 16 77 Q4_0", 0}, {"Q4_0R8 16", 0},
        {"BF16 16 77 BF16", 0},   {"Q4_0R8 -16 77 BF16", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *key = "vlm:w", *val = cases[i].desc;
        vlm_error err = {0};
        CHECK(vlm_st_write_meta(path, 2, names, ts, 1, &key, &val, &err) == VLM_OK, "write: %s", err.msg);
        vlm_safetensors st = {0};
        vlm_status s = vlm_st_open(&st, path, &err);
        const vlm_st_entry *e = s == VLM_OK ? vlm_st_find(&st, "w") : NULL;
        if (cases[i].ok) {
            vlm_dtype want = strncmp(val, "Q4_0R8", 6) ? VLM_Q4_0 : VLM_Q4_0R8;
            CHECK(e && e->dtype == want && e->shape[0] == 16 && e->shape[1] == 77 &&
                  e->orig_dtype == (strstr(val, " F16") ? VLM_F16 : VLM_BF16), "'%s': opened as %s [%lld, %lld] (%s)",
                  val, e ? vlm_dtype_name(e->dtype) : "-", e ? (long long)e->shape[0] : -1, e ? (long long)e->shape[1] : -1,
                  err.msg);
            if (e && want == VLM_Q4_0R8) {
                vlm_tensor t = vlm_st_tensor(e);
                int same = 1;
                for (int64_t k = 0; k < 16 * 77; k++) same &= vlm_get_f32(&t, k) == w[k];
                CHECK(same, "'%s': values differ after the round trip", val);
            }
            const vlm_st_entry *eb = vlm_st_find(&st, "b");
            CHECK(eb && eb->dtype == VLM_F32 && eb->orig_dtype == VLM_F32, "a plain tensor beside it");
        } else
            CHECK(s == VLM_ERR_FORMAT && strstr(err.msg, "quantization metadata"), "'%s' accepted: %s", val, err.msg);
        vlm_st_close(&st);
    }
    remove(path);
    test_rmdir(dir);
    free(w);
    free(q.data);
}

int main(void) {
    test_saved();
    test_codec(VLM_Q8_0);
    test_codec(VLM_Q4_0);
    test_codec(VLM_Q4_Z);
    test_r8_layout(VLM_Q8_0, VLM_Q8_0R8);
    test_r8_layout(VLM_Q4_0, VLM_Q4_0R8);
    test_r8_layout(VLM_Q4_Z, VLM_Q4_ZR8);
    test_awq();
    const char *kernels;
    for (int v = 0; (kernels = vlm_cpu_kernel_name(v)); v++)
        for (int threads = 1; threads <= 2; threads++)
            for (int bf16 = 0; bf16 < 2; bf16++) {
                vlm_error err = {0};
                vlm_cpu_params cp = {.n_threads = threads, .kernels = kernels, .compute = bf16 ? "bf16" : "f32"};
                vlm_backend *be = vlm_backend_cpu_new(&cp, &err);
                CHECK(be != NULL, "backend %s: %s", kernels, err.msg);
                if (!be) continue;
                static const vlm_dtype types[] = {VLM_Q8_0, VLM_Q4_0, VLM_Q4_Z, VLM_Q8_0R8, VLM_Q4_0R8, VLM_Q4_ZR8};
                for (int q = 0; q < 6; q++) {
                    vlm_dtype t = types[q];
                    int r8 = vlm_dtype_rows(t) == 8; /* row counts in whole groups */
                    test_product(be, bf16, t, 1, r8 ? 40 : 37, 256, 0);
                    test_product(be, bf16, t, 1, 40, 77, 1);
                    test_product(be, bf16, t, 3, r8 ? 32 : 33, 301, 1);
                    test_product(be, bf16, t, 4, 24, 96, 1);
                    test_product(be, bf16, t, 5, 16, 64, 0);
                    test_product(be, bf16, t, 64, r8 ? 152 : 150, 77, 1);
                    test_product(be, bf16, t, 64, 40, 512, 0);
                    if (!bf16 && threads == 1) test_rows(be, t);
                    test_experts(be, bf16, t);
                }
                be->destroy(be);
            }
    TEST_MAIN_END();
}
