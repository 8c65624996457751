/* Every op of the CPU backend against a naive double-precision reference on
 * random data: odd sizes, f16/bf16 inputs, strided views, all attention mask
 * variants, and 1 vs 2 threads (each test runs on both; outputs must agree
 * to 1e-6). `test_ops --bench` runs the GEMV/GEMM benchmark instead. */
#include "vlm.h"

#include <stdatomic.h>
#include "test_util.h"

#include <stdint.h>
#include <time.h>

static unsigned long long rng = 12345;
static int pass_no; /* 0: 1 thread, 1: 2 threads */

/* Outputs of pass 0, compared against pass 1. */
#define MAX_REC 4096
static float *rec_data[MAX_REC];
static long rec_n[MAX_REC];
static int rec_count, rec_pos;

static void record(const char *what, const float *x, long n) {
    if (pass_no == 0) {
        if (rec_count >= MAX_REC) return;
        rec_data[rec_count] = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
        memcpy(rec_data[rec_count], x, sizeof(float) * (size_t)n);
        rec_n[rec_count++] = n;
    } else {
        if (rec_pos >= rec_count) return;
        int i = rec_pos++;
        CHECK(rec_n[i] == n, "%s: record size differs", what);
        if (rec_n[i] != n) return;
        float m = 0;
        for (long j = 0; j < n; j++) {
            float d = fabsf(rec_data[i][j] - x[j]), s = fabsf(rec_data[i][j]);
            float rel = d / (s > 1 ? s : 1);
            if (rel > m || rel != rel) m = rel != rel ? INFINITY : rel;
        }
        CHECK(m <= 1e-6f, "%s: 1 vs 2 threads differ by %g", what, m);
    }
}

/* Random tensor of dtype dt; host gets the exact stored values (logical order). */
static vlm_tensor *rnd(vlm_compute *c, vlm_dtype dt, int nd, const int64_t *shape, float scale) {
    vlm_tensor *t = vlm_new(c, dt, nd, shape);
    if (!t) return NULL;
    int64_t n = vlm_nelem(t);
    for (int64_t i = 0; i < n; i++) {
        float v = test_randf(&rng) * scale;
        switch (dt) {
        case VLM_F32: ((float *)t->data)[i] = v; break;
        case VLM_F16: ((uint16_t *)t->data)[i] = vlm_f32_to_f16(v); break;
        case VLM_BF16: ((uint16_t *)t->data)[i] = vlm_f32_to_bf16(v); break;
        default: break;
        }
    }
    return t;
}
static vlm_tensor *rnd2(vlm_compute *c, vlm_dtype dt, int64_t a, int64_t b) {
    int64_t s[2] = {a, b};
    return rnd(c, dt, 2, s, 1.0f);
}
static vlm_tensor *rnd3(vlm_compute *c, vlm_dtype dt, int64_t a, int64_t b, int64_t d) {
    int64_t s[3] = {a, b, d};
    return rnd(c, dt, 3, s, 1.0f);
}

/* Logical contents as f32 (reference side; uses the core's scalar accessor). */
static float *host(const vlm_tensor *t) {
    int64_t n = vlm_nelem(t);
    float *h = (float *)malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) h[i] = vlm_get_f32(t, i);
    return h;
}

/* Compares out (an op result) with ref: |d| <= atol + rtol*|ref|; records for the thread check. */
static void cmp(const char *what, vlm_compute *c, vlm_tensor *out, const double *ref, double atol, double rtol) {
    CHECK(out != NULL, "%s: op failed: %s", what, c->err.msg);
    if (!out) { vlm_compute_reset(c); return; }
    int64_t n = vlm_nelem(out);
    float *got = host(out);
    double worst = 0;
    int64_t wi = -1;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - ref[i]), lim = atol + rtol * fabs(ref[i]);
        if (!(d <= lim)) {
            if (wi < 0 || d / lim > worst || d != d) { worst = d != d ? INFINITY : d / lim; wi = i; }
        }
    }
    CHECK(wi < 0, "%s: element %lld got %.9g want %.9g (%.3gx tolerance)", what, (long long)wi,
          wi >= 0 ? got[wi] : 0.0, wi >= 0 ? ref[wi] : 0.0, worst);
    record(what, got, (long)n);
    free(got);
}

static double *dalloc(int64_t n) { return (double *)calloc((size_t)(n ? n : 1), sizeof(double)); }

/* ------------------------------------------------------------------ CPY */

static void test_cpy(vlm_compute *c) {
    vlm_tensor *a = rnd3(c, VLM_F32, 5, 7, 9);
    int perm[3] = {2, 0, 1};
    vlm_tensor *p = vlm_permute(c, a, perm); /* [9,5,7], strided */
    float *hp = host(p);
    int64_t n = vlm_nelem(p);
    double *ref = dalloc(n);
    for (int64_t i = 0; i < n; i++) ref[i] = hp[i];
    cmp("cpy permuted f32", c, vlm_cont(c, p), ref, 0, 0);
    vlm_tensor *h16 = vlm_cast(c, p, VLM_F16), *hb = vlm_cast(c, p, VLM_BF16);
    CHECK(h16 && hb, "cast failed");
    if (h16 && hb) {
        int bad = 0;
        for (int64_t i = 0; i < n; i++) {
            bad += ((uint16_t *)h16->data)[i] != vlm_f32_to_f16(hp[i]);
            bad += ((uint16_t *)hb->data)[i] != vlm_f32_to_bf16(hp[i]);
        }
        CHECK(bad == 0, "f16/bf16 cast rounding: %d mismatches", bad);
        /* back from a strided half view */
        vlm_tensor *h16t = vlm_transpose(c, h16, 0, 2);
        float *hh = host(h16t);
        double *r2 = dalloc(n);
        for (int64_t i = 0; i < n; i++) r2[i] = hh[i];
        cmp("cpy strided f16 -> f32", c, vlm_cont(c, h16t), r2, 0, 0);
        free(hh); free(r2);
    }
    /* ints */
    int64_t s[2] = {3, 4};
    int32_t iv[12];
    for (int i = 0; i < 12; i++) iv[i] = i * 1000003 - 5;
    vlm_tensor *ti = vlm_from_host(c, VLM_I32, 2, s, iv);
    vlm_tensor *t64 = vlm_cast(c, vlm_transpose(c, ti, 0, 1), VLM_I64);
    int bad = !t64;
    for (int i = 0; t64 && i < 12; i++) bad += ((int64_t *)t64->data)[i] != iv[(i % 3) * 4 + i / 3];
    CHECK(bad == 0, "i32 -> i64 transposed copy");
    /* copy into a strided destination (slice of a bigger tensor) */
    vlm_tensor *big = rnd3(c, VLM_BF16, 4, 6, 8);
    vlm_tensor *dst = vlm_slice(c, big, 1, 2, 3); /* [4,3,8] */
    vlm_tensor *src = rnd3(c, VLM_F32, 4, 3, 8);
    float *before = host(big), *hs = host(src);
    CHECK(vlm_copy(c, dst, src) == VLM_OK, "copy into slice: %s", c->err.msg);
    float *after = host(big);
    bad = 0;
    for (int i = 0; i < 4 * 6 * 8; i++) {
        int d0 = i / 48, d1 = (i / 8) % 6, d2 = i % 8;
        float want = (d1 >= 2 && d1 < 5) ? vlm_bf16_to_f32(vlm_f32_to_bf16(hs[(d0 * 3 + d1 - 2) * 8 + d2])) : before[i];
        bad += after[i] != want;
    }
    CHECK(bad == 0, "copy into strided bf16 slice: %d wrong", bad);
    free(before); free(after); free(hs); free(hp); free(ref);
}

/* ------------------------------------------------------------------ MATMUL */

/* The backend's compute mode: in bf16 the reference multiplies the inputs
 * rounded to bf16 (as the engine must), in double. */
static int ref_bf16;
static double ref_in(float v) { return ref_bf16 ? (double)vlm_bf16_to_f32(vlm_f32_to_bf16(v)) : (double)v; }

static void ref_matmul(const float *x, const float *w, const float *bias, int64_t M, int64_t N, int64_t K, double *out,
                       double *absum) {
    for (int64_t m = 0; m < M; m++)
        for (int64_t n = 0; n < N; n++) {
            double s = bias ? bias[n] : 0, a = bias ? fabs(bias[n]) : 0;
            for (int64_t k = 0; k < K; k++) {
                double p = ref_in(x[m * K + k]) * ref_in(w[n * K + k]);
                s += p;
                a += fabs(p);
            }
            out[m * N + n] = s;
            absum[m * N + n] = a;
        }
}

static void check_mm(const char *what, vlm_compute *c, vlm_tensor *out, const double *ref, const double *absum, int64_t n) {
    /* tolerance relative to sum |x_k w_k| (f32 accumulation error bound) */
    double *lim = dalloc(n);
    CHECK(out != NULL, "%s: failed: %s", what, c->err.msg);
    if (!out) { vlm_compute_reset(c); free(lim); return; }
    float *got = host(out);
    int bad = 0;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        lim[i] = 2e-6 * absum[i] + 1e-6;
        double d = fabs(got[i] - ref[i]);
        if (!(d <= lim[i])) { bad++; if (d / lim[i] > worst || d != d) worst = d / lim[i]; }
    }
    CHECK(bad == 0, "%s: %d elements off (worst %.3gx tolerance)", what, bad, worst);
    record(what, got, (long)n);
    free(got); free(lim);
}

static void test_matmul_case(vlm_compute *c, int64_t M, int64_t N, int64_t K, vlm_dtype wt, int bias_kind, int xview) {
    char what[160];
    snprintf(what, sizeof what, "matmul M=%lld N=%lld K=%lld w=%s bias=%d xview=%d", (long long)M, (long long)N,
             (long long)K, vlm_dtype_name(wt), bias_kind, xview);
    vlm_tensor *x;
    if (xview == 0) x = rnd2(c, VLM_F32, M, K);
    else if (xview == 1) x = vlm_slice(c, rnd2(c, VLM_F32, M, K + 13), 1, 5, K); /* row stride K+13 */
    else if (xview == 2) x = rnd2(c, VLM_BF16, M, K);                            /* staged */
    else { /* [M,K] from a transposed [2? ] layout: rows non-uniform -> staged */
        vlm_tensor *b = rnd3(c, VLM_F32, 1, M, K);
        x = vlm_reshape_2d(c, b, M, K);
        if (M % 2 == 0) { /* [M/2, 2, K] -> transpose -> [2, M/2, K] view, flattened as 3-D input */
            vlm_tensor *v = vlm_transpose(c, vlm_reshape_3d(c, b, M / 2, 2, K), 0, 1);
            x = v;
        }
    }
    vlm_tensor *w = rnd2(c, wt, N, K);
    vlm_tensor *bias = bias_kind == 0 ? NULL : rnd(c, bias_kind == 1 ? VLM_F32 : VLM_BF16, 1, &N, 1.0f);
    float *hx = host(x), *hw = host(w), *hb = bias ? host(bias) : NULL;
    double *ref = dalloc(M * N), *abs_ = dalloc(M * N);
    ref_matmul(hx, hw, hb, M, N, K, ref, abs_);
    vlm_tensor *o = vlm_linear(c, x, w, bias);
    check_mm(what, c, o, ref, abs_, M * N);
    free(hx); free(hw); free(hb); free(ref); free(abs_);
}

static void test_matmul(vlm_compute *c) {
    vlm_dtype wts[3] = {VLM_F32, VLM_F16, VLM_BF16};
    int64_t Ms[] = {1, 3, 7, 8, 37, 64};
    for (int wi = 0; wi < 3; wi++)
        for (int mi = 0; mi < 6; mi++) {
            test_matmul_case(c, Ms[mi], 33, 67, wts[wi], mi % 3, mi % 4);
            vlm_compute_reset(c);
        }
    test_matmul_case(c, 70, 300, 256, VLM_BF16, 1, 0);
    test_matmul_case(c, 70, 300, 256, VLM_F32, 2, 1);
    test_matmul_case(c, 2, 300, 1000, VLM_F16, 0, 1);
    test_matmul_case(c, 600, 150, 67, VLM_BF16, 1, 1); /* row tiles of x */
    test_matmul_case(c, 530, 40, 33, VLM_F32, 2, 0);
    /* the packed-panel engine's edges: K in several blocks with a remainder,
     * N not a multiple of the 16-column panels, M row tiles ending in a
     * partial 6-row tile */
    test_matmul_case(c, 200, 150, 600, VLM_F16, 1, 1);
    test_matmul_case(c, 97, 35, 300, VLM_F32, 0, 0);
    test_matmul_case(c, 32, 17, 257, VLM_BF16, 2, 2);
    vlm_compute_reset(c);
    /* ties: x halfway between two bf16 values must round to the even one
     * (bf16 compute), in the GEMV and the GEMM paths */
    for (int64_t M = 1; M <= 40; M += 39) {
        int64_t K = 9, N = 2;
        float hx[40 * 9], hw[2 * 9];
        for (int64_t i = 0; i < M * K; i++) hx[i] = 1.0f + (float)(2 * (i % 7) + 1) / 256.0f; /* 1 + odd/2^8: ties */
        for (int64_t i = 0; i < N * K; i++) hw[i] = i % (K + 1) == 0 ? 1.0f : 0.0f;
        int64_t xs[2] = {M, K}, ws[2] = {N, K};
        double *ref = dalloc(M * N), *ab = dalloc(M * N);
        ref_matmul(hx, hw, NULL, M, N, K, ref, ab);
        check_mm(M == 1 ? "matmul of bf16 ties (GEMV)" : "matmul of bf16 ties (GEMM)", c,
                 vlm_matmul(c, vlm_from_host(c, VLM_F32, 2, xs, hx), vlm_from_host(c, VLM_F32, 2, ws, hw)), ref, ab, M * N);
        free(ref); free(ab);
    }
    /* a weight view whose rows overlap (row stride 0 < K): BLAS can't take it directly */
    {
        int64_t M = 40, N = 9, K = 21;
        vlm_tensor *x = rnd2(c, VLM_F32, M, K), *row = rnd2(c, VLM_F32, 1, K);
        vlm_tensor w = *row;
        w.shape[0] = N;
        w.stride[0] = 0;
        float *hx = host(x), *hw = host(&w);
        double *ref = dalloc(M * N), *ab = dalloc(M * N);
        ref_matmul(hx, hw, NULL, M, N, K, ref, ab);
        check_mm("matmul with row-stride-0 weights", c, vlm_matmul(c, x, &w), ref, ab, M * N);
        free(hx); free(hw); free(ref); free(ab);
    }
    /* batched: x[B, M, K] . w[B, N, K]^T, w a permuted view */
    for (int vi = 0; vi < 2; vi++) {
        int64_t B = 3, M = vi ? 9 : 2, N = 11, K = 19;
        vlm_tensor *x = rnd3(c, VLM_F32, B, M, K);
        vlm_tensor *w = vi ? vlm_transpose(c, rnd3(c, VLM_F32, N, B, K), 0, 1) : rnd3(c, VLM_F16, B, N, K);
        float *hx = host(x), *hw = host(w);
        double *ref = dalloc(B * M * N), *ab = dalloc(B * M * N);
        for (int64_t b = 0; b < B; b++) ref_matmul(hx + b * M * K, hw + b * N * K, NULL, M, N, K, ref + b * M * N, ab + b * M * N);
        check_mm(vi ? "batched matmul (permuted w, M=9)" : "batched matmul (f16 w, M=2)", c, vlm_matmul(c, x, w), ref, ab, B * M * N);
        free(hx); free(hw); free(ref); free(ab);
    }
    vlm_compute_reset(c);
}

/* int8 x int8 -> int32: exact, over the full int8 range, odd shapes, the
 * engine's edges (16-column panels, 6-row tiles, odd K), a strided x */
static void test_matmul_i8(vlm_compute *c) {
    static const int64_t shapes[][3] = {{1, 33, 67}, {3, 17, 9}, {7, 150, 300}, {37, 64, 129}, {200, 70, 257}, {97, 16, 2}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        int64_t M = shapes[si][0], N = shapes[si][1], K = shapes[si][2], ldx = K + (si % 2 ? 5 : 0);
        int8_t *hx = (int8_t *)malloc((size_t)(M * ldx)), *hw = (int8_t *)malloc((size_t)(N * K));
        for (int64_t i = 0; i < M * ldx; i++) hx[i] = (int8_t)floorf(test_randf(&rng) * 128.0f); /* [-128, 127] */
        for (int64_t i = 0; i < N * K; i++) hw[i] = (int8_t)floorf(test_randf(&rng) * 128.0f);
        if (si == 0) hx[0] = hw[0] = -128; /* the corner vpmaddubsw-style kernels get wrong */
        int64_t xs[2] = {M, ldx}, ws[2] = {N, K};
        vlm_tensor *x = vlm_from_host(c, VLM_I8, 2, xs, hx);
        if (ldx != K) x = vlm_slice(c, x, 1, 0, K);
        vlm_tensor *o = vlm_matmul(c, x, vlm_from_host(c, VLM_I8, 2, ws, hw));
        CHECK(o && o->dtype == VLM_I32, "int8 matmul %lldx%lldx%lld: %s", (long long)M, (long long)N, (long long)K, c->err.msg);
        int64_t bad = 0;
        for (int64_t m = 0; o && m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                int64_t ref = 0;
                for (int64_t k = 0; k < K; k++) ref += (int64_t)hx[m * ldx + k] * hw[n * K + k];
                bad += vlm_get_i64(o, m * N + n) != ref;
            }
        CHECK(bad == 0, "int8 matmul %lldx%lldx%lld: %lld sums differ", (long long)M, (long long)N, (long long)K, (long long)bad);
        free(hx);
        free(hw);
        vlm_compute_reset(c);
    }
    /* int8 with float, or with a bias: a clear error */
    int64_t s2[2] = {2, 4};
    int8_t z[8] = {0};
    vlm_tensor *xi = vlm_from_host(c, VLM_I8, 2, s2, z), *wf = rnd2(c, VLM_F32, 2, 4);
    CHECK(!vlm_matmul(c, xi, wf) && c->failed && strstr(c->err.msg, "I8"), "int8 x f32 refused: %s", c->err.msg);
    vlm_compute_reset(c);
}

static void test_matmul_id(vlm_compute *c) {
    int64_t T = 5, k = 3, E = 6, N = 33, K = 67;
    for (int variant = 0; variant < 3; variant++) {
        vlm_dtype wt = variant == 0 ? VLM_BF16 : variant == 1 ? VLM_F32 : VLM_F16;
        int64_t xr = variant == 1 ? T * k : T;
        int64_t tt = variant == 2 ? 40 : T; /* many tokens: per-expert GEMM path */
        if (variant == 2) xr = tt;
        vlm_tensor *x = rnd2(c, VLM_F32, xr, K);
        vlm_tensor *w = rnd3(c, wt, E, N, K);
        int32_t ids[40 * 3];
        for (int64_t i = 0; i < tt * k; i++) ids[i] = (int32_t)((i * 7 + i / k) % E);
        if (variant == 0) ids[4] = ids[3] = 2;
        int64_t is[2] = {tt, k};
        vlm_tensor *id = vlm_from_host(c, VLM_I32, 2, is, ids);
        float *hx = host(x), *hw = host(w);
        double *ref = dalloc(tt * k * N), *ab = dalloc(tt * k * N);
        for (int64_t t = 0; t < tt; t++)
            for (int64_t j = 0; j < k; j++) {
                const float *xrow = hx + (xr == tt * k ? t * k + j : t) * K;
                ref_matmul(xrow, hw + ids[t * k + j] * N * K, NULL, 1, N, K, ref + (t * k + j) * N, ab + (t * k + j) * N);
            }
        check_mm(variant == 0 ? "matmul_id bf16" : variant == 1 ? "matmul_id f32 x[T*k]" : "matmul_id f16 T=40", c,
                 vlm_matmul_id(c, x, w, id), ref, ab, tt * k * N);
        free(hx); free(hw); free(ref); free(ab);
        vlm_compute_reset(c);
    }
    /* only the chosen experts are read: the others hold NaN */
    for (int big = 0; big < 2; big++) {
        int64_t T2 = big ? 50 : 3, k2 = 2, E2 = 8, N2 = 20, K2 = 37;
        vlm_tensor *x = rnd2(c, VLM_F32, T2, K2);
        vlm_tensor *w = rnd3(c, VLM_BF16, E2, N2, K2);
        int32_t ids[100];
        const int32_t used[3] = {1, 4, 6};
        for (int64_t i = 0; i < T2 * k2; i++) ids[i] = used[(i * 5 + i / 3) % 3];
        ids[1] = ids[0]; /* the same expert twice for token 0 */
        for (int64_t e = 0; e < E2; e++)
            if (e != 1 && e != 4 && e != 6)
                for (int64_t i = 0; i < N2 * K2; i++) ((uint16_t *)w->data)[e * N2 * K2 + i] = 0x7fc0;
        int64_t is[2] = {T2, k2};
        float *hx = host(x), *hw = host(w);
        double *ref = dalloc(T2 * k2 * N2), *ab = dalloc(T2 * k2 * N2);
        for (int64_t t = 0; t < T2; t++)
            for (int64_t j = 0; j < k2; j++)
                ref_matmul(hx + t * K2, hw + ids[t * k2 + j] * N2 * K2, NULL, 1, N2, K2, ref + (t * k2 + j) * N2, ab + (t * k2 + j) * N2);
        check_mm(big ? "matmul_id untouched experts (T=50)" : "matmul_id untouched experts (T=3)", c,
                 vlm_matmul_id(c, x, w, vlm_from_host(c, VLM_I32, 2, is, ids)), ref, ab, T2 * k2 * N2);
        free(hx); free(hw); free(ref); free(ab);
        vlm_compute_reset(c);
    }
    /* out-of-range expert id -> error */
    vlm_tensor *x = rnd2(c, VLM_F32, 2, 8);
    vlm_tensor *w = rnd3(c, VLM_F32, 3, 4, 8);
    int32_t bad[2] = {1, 3};
    int64_t is[2] = {2, 1};
    vlm_tensor *o = vlm_matmul_id(c, x, w, vlm_from_host(c, VLM_I32, 2, is, bad));
    CHECK(o == NULL && c->failed && c->err.code == VLM_ERR_ARG, "matmul_id with id 3 of 3 experts must fail");
    vlm_compute_reset(c);
}

/* ------------------------------------------------------------------ element-wise */

static double ref_unary(int f, double x, double cap) {
    switch (f) {
    case VLM_UNARY_SILU: return x / (1 + exp(-x));
    case VLM_UNARY_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    case VLM_UNARY_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case VLM_UNARY_RELU: return x > 0 ? x : 0;
    case VLM_UNARY_TANH: return tanh(x);
    case VLM_UNARY_SIGMOID: return 1 / (1 + exp(-x));
    case VLM_UNARY_EXP: return exp(x);
    case VLM_UNARY_SOFTCAP: return tanh(x / cap) * cap;
    case VLM_UNARY_SQR: return x * x;
    case VLM_UNARY_SQRT: return sqrt(x);
    case VLM_UNARY_NEG: return -x;
    }
    return 0;
}

static void test_elementwise(vlm_compute *c) {
    /* broadcasting ADD/MUL over a strided a */
    int64_t A0 = 3, A1 = 4, A2 = 33;
    int64_t bshapes[5][3] = {{33, 0, 0}, {4, 1, 0}, {3, 1, 33}, {1, 0, 0}, {3, 4, 33}};
    int bnd[5] = {1, 2, 3, 1, 3};
    for (int op = 0; op < 2; op++)
        for (int bi = 0; bi < 5; bi++) {
            vlm_tensor *a = vlm_transpose(c, rnd3(c, VLM_F32, A2, A1, A0), 0, 2); /* [3,4,33] strided */
            vlm_tensor *b = rnd(c, bi == 2 ? VLM_BF16 : VLM_F32, bnd[bi], bshapes[bi], 1.0f);
            float *ha = host(a), *hb = host(b);
            double *ref = dalloc(A0 * A1 * A2);
            for (int64_t i = 0; i < A0; i++)
                for (int64_t j = 0; j < A1; j++)
                    for (int64_t k = 0; k < A2; k++) {
                        int64_t idx[3] = {i, j, k}, bo = 0;
                        for (int d = 0; d < bnd[bi]; d++) {
                            int ad = 3 - bnd[bi] + d;
                            bo = bo * bshapes[bi][d] + (bshapes[bi][d] == 1 ? 0 : idx[ad]);
                        }
                        double x = ha[(i * A1 + j) * A2 + k], y = hb[bo];
                        ref[(i * A1 + j) * A2 + k] = op ? x * y : x + y;
                    }
            char what[64];
            snprintf(what, sizeof what, "%s broadcast case %d", op ? "mul" : "add", bi);
            cmp(what, c, op ? vlm_mul(c, a, b) : vlm_add(c, a, b), ref, 1e-7, 1e-7);
            free(ha); free(hb); free(ref);
        }
    vlm_compute_reset(c);
    /* scale, unary, glu on odd sizes and half inputs */
    int64_t n = 1003;
    vlm_tensor *a = rnd(c, VLM_F32, 1, &n, 4.0f);
    vlm_tensor *ah = rnd(c, VLM_BF16, 1, &n, 4.0f);
    vlm_tensor *b = rnd(c, VLM_F32, 1, &n, 2.0f);
    float *ha = host(a), *hah = host(ah), *hb = host(b);
    double *ref = dalloc(n);
    for (int64_t i = 0; i < n; i++) ref[i] = (double)ha[i] * 0.37f + -1.25f;
    cmp("scale_bias", c, vlm_scale_bias(c, a, 0.37f, -1.25f), ref, 1e-6, 1e-6);
    for (int f = VLM_UNARY_SILU; f <= VLM_UNARY_NEG; f++) {
        const float *src = f == VLM_UNARY_TANH ? hah : ha;
        for (int64_t i = 0; i < n; i++) {
            double x = src[i];
            ref[i] = f == VLM_UNARY_SQRT ? sqrt((double)(float)(x * x)) : ref_unary(f, x, 3.0);
        }
        vlm_tensor *in = f == VLM_UNARY_TANH ? ah : a;
        if (f == VLM_UNARY_SQRT) in = vlm_unary(c, a, VLM_UNARY_SQR), in = vlm_unary(c, in, VLM_UNARY_SQRT);
        char what[64];
        snprintf(what, sizeof what, "unary %d", f);
        vlm_tensor *o = f == VLM_UNARY_SQRT ? in : f == VLM_UNARY_SOFTCAP ? vlm_softcap(c, a, 3.0f) : vlm_unary(c, in, (vlm_unary_op)f);
        cmp(what, c, o, ref, 1e-6, 2e-6);
        if (f == VLM_UNARY_SILU || f == VLM_UNARY_GELU || f == VLM_UNARY_GELU_TANH || f == VLM_UNARY_RELU ||
            f == VLM_UNARY_SIGMOID) {
            for (int64_t i = 0; i < n; i++) ref[i] = ref_unary(f, ha[i], 0) * hb[i];
            snprintf(what, sizeof what, "glu %d", f);
            cmp(what, c, vlm_glu(c, a, b, (vlm_unary_op)f), ref, 2e-6, 2e-6);
        }
    }
    free(ha); free(hah); free(hb); free(ref);
    vlm_compute_reset(c);
}

/* ------------------------------------------------------------------ norms, softmax */

static void test_norms(vlm_compute *c) {
    int64_t Ds[3] = {67, 1024, 8};
    for (int di = 0; di < 3; di++)
        for (int variant = 0; variant < 4; variant++) {
            int64_t R = 9, D = Ds[di];
            vlm_tensor *x = vlm_slice(c, rnd2(c, VLM_F32, R, D + 3), 1, 1, D);
            for (int64_t i = 0; i < R * (D + 3); i++) ((float *)x->data)[i - 1] += (float)(i % 7) * 0.5f; /* offset mean */
            vlm_tensor *w = rnd(c, variant == 3 ? VLM_BF16 : VLM_F32, 1, &D, 1.0f);
            vlm_tensor *bb = rnd(c, VLM_F32, 1, &D, 1.0f);
            float *hx = host(x), *hw = host(w), *hb = host(bb);
            double *ref = dalloc(R * D);
            /* RMS */
            for (int64_t r = 0; r < R; r++) {
                double ss = 0;
                for (int64_t i = 0; i < D; i++) ss += (double)hx[r * D + i] * hx[r * D + i];
                double inv = 1 / sqrt(ss / D + 1e-6);
                for (int64_t i = 0; i < D; i++) {
                    double wv = variant == 0 ? 1 : variant == 2 ? 1 + hw[i] : hw[i];
                    ref[r * D + i] = hx[r * D + i] * inv * wv;
                }
            }
            char what[64];
            snprintf(what, sizeof what, "rms_norm D=%lld v=%d", (long long)D, variant);
            vlm_tensor *o = variant == 0 ? vlm_rms_norm(c, x, NULL, 1e-6f)
                          : variant == 2 ? vlm_rms_norm_1p(c, x, w, 1e-6f) : vlm_rms_norm(c, x, w, 1e-6f);
            cmp(what, c, o, ref, 1e-6, 1e-6);
            /* layer norm: variant = which of w/b present */
            for (int64_t r = 0; r < R; r++) {
                double mean = 0, var = 0;
                for (int64_t i = 0; i < D; i++) mean += hx[r * D + i];
                mean /= D;
                for (int64_t i = 0; i < D; i++) var += (hx[r * D + i] - mean) * (hx[r * D + i] - mean);
                var /= D;
                for (int64_t i = 0; i < D; i++) {
                    double v = (hx[r * D + i] - mean) / sqrt(var + 1e-5);
                    if (variant & 1) v *= hw[i];
                    if (variant & 2) v += hb[i];
                    ref[r * D + i] = v;
                }
            }
            snprintf(what, sizeof what, "layer_norm D=%lld v=%d", (long long)D, variant);
            cmp(what, c, vlm_layer_norm(c, x, (variant & 1) ? w : NULL, (variant & 2) ? bb : NULL, 1e-5f), ref, 2e-6, 2e-6);
            free(hx); free(hw); free(hb); free(ref);
            vlm_compute_reset(c);
        }
}

/* RMSNorm's epsilon goes under the root, 1/sqrt(mean(x^2) + eps): rows whose
 * mean square is near eps tell it from 1/(sqrt(mean(x^2)) + eps). */
static void test_rms_small(vlm_compute *c) {
    int64_t R = 3, D = 64;
    vlm_tensor *x = rnd2(c, VLM_F32, R, D);
    float *hx = (float *)x->data;
    for (int64_t i = 0; i < R * D; i++) hx[i] *= i < D ? 1e-3f : i < 2 * D ? 3e-4f : 1.0f;
    double *ref = dalloc(R * D);
    for (int64_t r = 0; r < R; r++) {
        double ss = 0;
        for (int64_t i = 0; i < D; i++) ss += (double)hx[r * D + i] * hx[r * D + i];
        double inv = 1 / sqrt(ss / D + 1e-6);
        for (int64_t i = 0; i < D; i++) ref[r * D + i] = hx[r * D + i] * inv;
    }
    cmp("rms_norm, mean square near eps", c, vlm_rms_norm(c, x, NULL, 1e-6f), ref, 1e-6, 1e-5);
    free(ref);
    vlm_compute_reset(c);
}

static void test_softmax(vlm_compute *c) {
    for (int variant = 0; variant < 4; variant++) {
        int64_t R = 6, D = variant == 2 ? 1000 : 37;
        vlm_tensor *x = rnd2(c, VLM_F32, R, D);
        /* variant 3: logits in the hundreds (a router's, an LM head's): exp overflows unless the max is taken out */
        for (int64_t i = 0; i < R * D; i++) ((float *)x->data)[i] = ((float *)x->data)[i] * 8 + (variant == 3 ? 100.0f : 0.0f);
        ((float *)x->data)[3] = -INFINITY;
        for (int64_t i = 0; i < D; i++) ((float *)x->data)[D + i] = i % 3 ? -INFINITY : ((float *)x->data)[D + i];
        float scale = variant == 1 ? 0.3f : 1.0f, cap = variant == 1 ? 5.0f : 0.0f;
        float *hx = host(x);
        double *ref = dalloc(R * D);
        for (int64_t r = 0; r < R; r++) {
            double m = -INFINITY, s = 0;
            for (int64_t i = 0; i < D; i++) {
                double v = (double)hx[r * D + i] * scale;
                if (cap > 0) v = tanh(v / cap) * cap;
                ref[r * D + i] = v;
                if (v > m) m = v;
            }
            for (int64_t i = 0; i < D; i++) s += (ref[r * D + i] = exp(ref[r * D + i] - m));
            for (int64_t i = 0; i < D; i++) ref[r * D + i] /= s;
        }
        char what[64];
        snprintf(what, sizeof what, "softmax v=%d", variant);
        cmp(what, c, vlm_softmax(c, x, scale, cap), ref, 1e-7, 2e-6);
        free(hx); free(ref);
        vlm_compute_reset(c);
    }
}

/* ------------------------------------------------------------------ RoPE */

static void test_rope(vlm_compute *c) {
    int64_t T = 5, H = 3, D = 80;
    int64_t Rs[3] = {80, 32, 2};
    for (int ri = 0; ri < 3; ri++) {
        int64_t R = Rs[ri];
        /* x: q part of a fused [T, 2*H*D] projection, split into heads (strided rows) */
        vlm_tensor *fused = rnd2(c, VLM_F32, T, 2 * H * D);
        vlm_tensor *x = vlm_split_last(c, vlm_slice(c, fused, 1, H * D, H * D), H, D);
        float inv[40], pos[5] = {0, 1, 7, 100, 4097};
        vlm_rope_inv_freq(inv, (int)R, 10000.0f);
        float *cs = (float *)malloc(sizeof(float) * T * R), *sn = (float *)malloc(sizeof(float) * T * R);
        vlm_rope_table(cs, sn, pos, (int)T, inv, (int)R / 2);
        int64_t ts[2] = {T, R};
        vlm_tensor *tc = vlm_from_host(c, VLM_F32, 2, ts, cs), *tsn = vlm_from_host(c, VLM_F32, 2, ts, sn);
        float *hx = host(x);
        double *ref = dalloc(T * H * D);
        for (int64_t t = 0; t < T; t++)
            for (int64_t h = 0; h < H; h++)
                for (int64_t i = 0; i < D; i++) {
                    const float *xr = hx + (t * H + h) * D;
                    double v;
                    if (i < R / 2) v = (double)xr[i] * cs[t * R + i] - (double)xr[i + R / 2] * sn[t * R + i];
                    else if (i < R) v = (double)xr[i] * cs[t * R + i] + (double)xr[i - R / 2] * sn[t * R + i];
                    else v = xr[i];
                    ref[(t * H + h) * D + i] = v;
                }
        char what[64];
        snprintf(what, sizeof what, "rope R=%lld D=%lld", (long long)R, (long long)D);
        cmp(what, c, vlm_rope(c, x, tc, tsn), ref, 1e-6, 1e-6);
        free(cs); free(sn); free(hx); free(ref);
        vlm_compute_reset(c);
    }
}

/* ------------------------------------------------------------------ attention */

typedef struct attn_case {
    const char *name;
    int T, S, Hq, Hkv, D, Dv;
    vlm_dtype kvt;
    int causal, window, seg, group, empty, softcap, strided;
} attn_case;

static void test_attn_case(vlm_compute *c, const attn_case *ac) {
    int T = ac->T, S = ac->S, Hq = ac->Hq, Hkv = ac->Hkv, D = ac->D, Dv = ac->Dv;
    vlm_tensor *q;
    if (ac->strided) q = vlm_split_last(c, vlm_slice(c, rnd2(c, VLM_F32, T, Hq * D + 7), 1, 7, Hq * D), Hq, D);
    else q = rnd3(c, VLM_F32, T, Hq, D);
    vlm_tensor *k = rnd3(c, ac->kvt, S, Hkv, D);
    vlm_tensor *v = ac->strided ? vlm_slice(c, rnd3(c, ac->kvt, S, Hkv, Dv + 5), 2, 5, Dv) : rnd3(c, ac->kvt, S, Hkv, Dv);
    int32_t *qp = malloc(4 * T), *kp = malloc(4 * S), *qs = malloc(4 * T), *ks = malloc(4 * S), *qg = malloc(4 * T),
            *kg = malloc(4 * S);
    /* keys at positions 0..S-1 (a permuted ring order when `empty`), queries at the last T positions */
    for (int j = 0; j < S; j++) {
        kp[j] = ac->empty ? (j * 7) % S : j;
        if (ac->empty && j % 5 == 3) kp[j] = -1;
        ks[j] = j < S / 2 ? 0 : 1;
        kg[j] = (j >= 3 && j < 9) ? 1 : (j >= 12 && j < 15 ? 2 : -1);
    }
    for (int i = 0; i < T; i++) {
        qp[i] = S - T + i;
        qs[i] = (S - T + i) < S / 2 ? 0 : 1;
        qg[i] = (qp[i] >= 3 && qp[i] < 9) ? 1 : (qp[i] >= 12 && qp[i] < 15 ? 2 : -1);
    }
    if (ac->seg) qs[0] = 7; /* a query whose segment has no keys: zeros */
    vlm_attn_params p = {.scale = 1.0f / sqrtf((float)D), .softcap = ac->softcap ? 2.5f : 0, .causal = ac->causal,
                         .window = ac->window, .q_pos = qp, .k_pos = kp};
    if (ac->seg) { p.q_seg = qs; p.k_seg = ks; }
    if (ac->group) { p.q_group = qg; p.k_group = kg; }
    float *hq = host(q), *hk = host(k), *hv = host(v);
    double *ref = dalloc((int64_t)T * Hq * Dv), *sc = dalloc(S);
    for (int i = 0; i < T; i++)
        for (int h = 0; h < Hq; h++) {
            int hk_ = h / (Hq / Hkv);
            double m = -INFINITY;
            for (int j = 0; j < S; j++) {
                int vis = kp[j] >= 0;
                if (ac->seg && qs[i] != ks[j]) vis = 0;
                if (ac->causal && !(kp[j] <= qp[i] || (ac->group && qg[i] >= 0 && qg[i] == kg[j]))) vis = 0;
                if (ac->window > 0 && qp[i] - kp[j] >= ac->window) vis = 0;
                if (!vis) { sc[j] = -INFINITY; continue; }
                double s = 0;
                for (int d = 0; d < D; d++) s += (double)hq[(i * Hq + h) * D + d] * hk[(j * Hkv + hk_) * D + d];
                s *= p.scale;
                if (ac->softcap) s = tanh(s / p.softcap) * p.softcap;
                sc[j] = s;
                if (s > m) m = s;
            }
            double l = 0;
            for (int j = 0; j < S; j++) l += sc[j] = sc[j] == -INFINITY ? 0 : exp(sc[j] - m);
            for (int d = 0; d < Dv; d++) {
                double a = 0;
                for (int j = 0; j < S; j++) a += sc[j] * hv[(j * Hkv + hk_) * Dv + d];
                ref[(i * Hq + h) * Dv + d] = l > 0 ? a / l : 0;
            }
        }
    cmp(ac->name, c, vlm_attention(c, q, k, v, &p), ref, 2e-6, 2e-5);
    free(qp); free(kp); free(qs); free(ks); free(qg); free(kg);
    free(hq); free(hk); free(hv); free(ref); free(sc);
    vlm_compute_reset(c);
}

static void test_attention(vlm_compute *c) {
    static const attn_case cases[] = {
        {"attn full", 7, 19, 6, 2, 80, 80, VLM_F32, 0, 0, 0, 0, 0, 0, 0},
        {"attn causal gqa", 7, 19, 6, 2, 80, 80, VLM_F32, 1, 0, 0, 0, 0, 0, 0},
        {"attn causal f16 kv", 7, 19, 4, 1, 64, 64, VLM_F16, 1, 0, 0, 0, 0, 0, 0},
        {"attn causal bf16 kv strided", 5, 19, 4, 2, 80, 48, VLM_BF16, 1, 0, 0, 0, 0, 0, 1},
        {"attn sliding window", 9, 23, 4, 4, 16, 16, VLM_F32, 1, 4, 0, 0, 0, 0, 0},
        {"attn bidirectional groups", 16, 16, 2, 1, 24, 24, VLM_F32, 1, 0, 0, 1, 0, 0, 0},
        {"attn packed segments", 10, 10, 3, 3, 17, 17, VLM_F32, 0, 0, 1, 0, 0, 0, 0},
        {"attn causal segments", 10, 10, 3, 1, 17, 17, VLM_BF16, 1, 0, 1, 0, 0, 0, 0},
        {"attn ring with empty slots", 3, 20, 4, 2, 32, 32, VLM_F16, 1, 6, 0, 0, 1, 0, 0},
        {"attn softcap", 4, 30, 4, 2, 32, 32, VLM_F32, 1, 0, 0, 0, 0, 1, 0},
        {"attn softcap few keys (per-row path)", 3, 12, 4, 2, 32, 32, VLM_F32, 1, 0, 0, 0, 0, 1, 0},
        {"attn long prefill", 40, 700, 2, 1, 64, 64, VLM_BF16, 1, 0, 0, 0, 0, 0, 0},
        {"attn decode long", 1, 1300, 8, 2, 64, 64, VLM_F16, 1, 0, 0, 0, 0, 0, 0},
        {"attn decode mha window softcap", 1, 40, 4, 4, 24, 24, VLM_F16, 1, 9, 0, 0, 1, 1, 0},
        {"attn decode mha", 1, 300, 3, 3, 40, 40, VLM_BF16, 1, 0, 0, 0, 0, 0, 1},
        {"attn packed segments tiled", 12, 40, 4, 2, 16, 16, VLM_F32, 0, 0, 1, 0, 0, 0, 1},
        {"attn groups tiled", 200, 300, 2, 2, 32, 32, VLM_F32, 1, 0, 0, 1, 0, 0, 0},
        {"attn segments vision-like", 300, 300, 4, 4, 32, 32, VLM_F32, 0, 0, 1, 0, 0, 0, 0},
        {"attn window tiled long", 300, 600, 4, 1, 32, 32, VLM_F16, 1, 150, 0, 0, 0, 0, 0},
        {"attn decode split window", 1, 2000, 8, 1, 64, 64, VLM_F16, 1, 700, 0, 0, 1, 1, 0},
        {"attn decode split segments", 2, 1500, 4, 1, 32, 40, VLM_BF16, 1, 0, 1, 0, 0, 0, 1},
        {"attn everything tiled", 37, 290, 6, 2, 80, 72, VLM_BF16, 1, 100, 1, 1, 1, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) test_attn_case(c, &cases[i]);
}

/* ------------------------------------------------------------------ concat, rows, topk, argmax, im2col */

static void test_concat(vlm_compute *c) {
    for (int dim = 0; dim < 3; dim++) {
        int64_t sa[3] = {4, 5, 6}, sb[3] = {4, 5, 6};
        sb[dim] = 3;
        vlm_tensor *a = vlm_transpose(c, rnd3(c, VLM_F32, sa[2], sa[1], sa[0]), 0, 2); /* strided */
        vlm_tensor *b = rnd(c, VLM_F16, 3, sb, 1.0f);
        float *ha = host(a), *hb = host(b);
        int64_t so[3] = {4, 5, 6};
        so[dim] += 3;
        double *ref = dalloc(so[0] * so[1] * so[2]);
        for (int64_t i = 0; i < so[0]; i++)
            for (int64_t j = 0; j < so[1]; j++)
                for (int64_t k = 0; k < so[2]; k++) {
                    int64_t idx[3] = {i, j, k};
                    double v;
                    if (idx[dim] < sa[dim]) v = ha[(i * sa[1] + j) * sa[2] + k];
                    else { idx[dim] -= sa[dim]; v = hb[(idx[0] * sb[1] + idx[1]) * sb[2] + idx[2]]; }
                    ref[(i * so[1] + j) * so[2] + k] = v;
                }
        char what[32];
        snprintf(what, sizeof what, "concat dim %d", dim);
        cmp(what, c, vlm_concat(c, a, b, dim), ref, 0, 0);
        free(ha); free(hb); free(ref);
    }
    vlm_compute_reset(c);
}

static void test_rows(vlm_compute *c) {
    vlm_dtype tts[3] = {VLM_F32, VLM_F16, VLM_BF16};
    for (int ti = 0; ti < 3; ti++) {
        int64_t V = 50, D = 67, n = 9;
        vlm_tensor *tab = rnd2(c, tts[ti], V, D);
        int64_t ids64[9] = {0, 49, 3, 3, 17, 25, 48, 1, 0};
        int32_t ids32[9];
        for (int i = 0; i < 9; i++) ids32[i] = (int32_t)ids64[i];
        vlm_tensor *ids = ti == 1 ? vlm_from_host(c, VLM_I64, 1, &n, ids64) : vlm_from_host(c, VLM_I32, 1, &n, ids32);
        float *ht = host(tab);
        double *ref = dalloc(n * D);
        for (int64_t r = 0; r < n; r++)
            for (int64_t i = 0; i < D; i++) ref[r * D + i] = ht[ids64[r] * D + i];
        char what[48];
        snprintf(what, sizeof what, "get_rows %s", vlm_dtype_name(tts[ti]));
        cmp(what, c, vlm_get_rows(c, tab, ids), ref, 0, 0);
        free(ht); free(ref);
        /* set_rows into this table from a strided f32 source [n2, D] */
        int64_t n2 = 3;
        int32_t sid[3] = {5, 0, 49};
        vlm_tensor *src = vlm_slice(c, rnd2(c, VLM_F32, n2, D + 4), 1, 2, D);
        float *hs = host(src), *before = host(tab);
        CHECK(vlm_set_rows(c, tab, src, vlm_from_host(c, VLM_I32, 1, &n2, sid)) == VLM_OK, "set_rows: %s", c->err.msg);
        float *after = host(tab);
        int bad = 0;
        for (int64_t r = 0; r < V; r++)
            for (int64_t i = 0; i < D; i++) {
                int64_t w = -1;
                for (int j = 0; j < 3; j++) if (sid[j] == r) w = j;
                float want = before[r * D + i];
                if (w >= 0) {
                    float s = hs[w * D + i];
                    want = tts[ti] == VLM_F32 ? s : tts[ti] == VLM_F16 ? vlm_f16_to_f32(vlm_f32_to_f16(s))
                                                                      : vlm_bf16_to_f32(vlm_f32_to_bf16(s));
                }
                bad += after[r * D + i] != want;
            }
        CHECK(bad == 0, "set_rows into %s: %d wrong", vlm_dtype_name(tts[ti]), bad);
        free(hs); free(before); free(after);
        /* set_rows of [n, H, Dh] heads into a [cap, H, Dh] cache */
        vlm_compute_reset(c);
    }
    /* KV-shaped set_rows: src [2, 3, 4] from a transposed view */
    {
        vlm_tensor *dst = rnd3(c, VLM_BF16, 5, 3, 4);
        vlm_tensor *src = vlm_transpose(c, rnd3(c, VLM_F32, 3, 2, 4), 0, 1);
        int64_t n = 2;
        int32_t sid[2] = {4, 1};
        float *hs = host(src), *before = host(dst);
        CHECK(vlm_set_rows(c, dst, src, vlm_from_host(c, VLM_I32, 1, &n, sid)) == VLM_OK, "set_rows 3d: %s", c->err.msg);
        float *after = host(dst);
        int bad = 0;
        for (int r = 0; r < 5; r++)
            for (int i = 0; i < 12; i++) {
                float want = before[r * 12 + i];
                if (r == 4) want = vlm_bf16_to_f32(vlm_f32_to_bf16(hs[i]));
                if (r == 1) want = vlm_bf16_to_f32(vlm_f32_to_bf16(hs[12 + i]));
                bad += after[r * 12 + i] != want;
            }
        CHECK(bad == 0, "set_rows 3-D strided: %d wrong", bad);
        free(hs); free(before); free(after);
    }
    vlm_compute_reset(c);
    /* errors: out-of-range ids */
    {
        vlm_tensor *tab = rnd2(c, VLM_F32, 10, 4);
        int64_t n = 2;
        int32_t bad_ids[2] = {3, 10};
        vlm_tensor *o = vlm_get_rows(c, tab, vlm_from_host(c, VLM_I32, 1, &n, bad_ids));
        CHECK(o == NULL && c->err.code == VLM_ERR_ARG && strstr(c->err.msg, "10"), "get_rows id 10 of 10: %s", c->err.msg);
        vlm_compute_reset(c);
        int64_t neg[2] = {-1, 0};
        tab = rnd2(c, VLM_F32, 10, 4);
        o = vlm_get_rows(c, tab, vlm_from_host(c, VLM_I64, 1, &n, neg));
        CHECK(o == NULL && c->err.code == VLM_ERR_ARG, "get_rows id -1");
        vlm_compute_reset(c);
        tab = rnd2(c, VLM_F32, 10, 4);
        vlm_tensor *src = rnd2(c, VLM_F32, 2, 4);
        vlm_status s = vlm_set_rows(c, tab, src, vlm_from_host(c, VLM_I32, 1, &n, bad_ids));
        CHECK(s == VLM_ERR_ARG && c->failed, "set_rows id 10 of 10");
        vlm_compute_reset(c);
    }
}

static void test_topk_argmax(vlm_compute *c) {
    int64_t R = 4, D = 101;
    vlm_tensor *x = rnd2(c, VLM_F32, R, D);
    float *xd = (float *)x->data;
    for (int64_t i = 0; i < D; i++) xd[D + i] = (float)(i % 5); /* row 1: many ties */
    xd[2 * D + 7] = xd[2 * D + 50] = 5.0f;                      /* row 2: tie at the max */
    vlm_tensor *xv = vlm_transpose(c, vlm_transpose(c, x, 0, 1), 0, 1);
    float *hx = host(x);
    for (int k = 1; k <= 7; k += 6) {
        vlm_tensor *idx = NULL;
        vlm_tensor *v = vlm_topk(c, xv, k, &idx);
        CHECK(v && idx, "topk failed: %s", c->err.msg);
        if (!v || !idx) { vlm_compute_reset(c); continue; }
        int bad = 0;
        for (int64_t r = 0; r < R; r++) {
            /* reference: stable sort by value descending, ties by index */
            int used[101] = {0};
            for (int j = 0; j < k; j++) {
                int best = -1;
                for (int i = 0; i < D; i++)
                    if (!used[i] && (best < 0 || hx[r * D + i] > hx[r * D + best])) best = i;
                used[best] = 1;
                bad += ((int32_t *)idx->data)[r * k + j] != best || ((float *)v->data)[r * k + j] != hx[r * D + best];
            }
        }
        CHECK(bad == 0, "topk k=%d: %d wrong", k, bad);
        float *fi = (float *)malloc(sizeof(float) * R * k);
        for (int64_t i = 0; i < R * k; i++) fi[i] = (float)((int32_t *)idx->data)[i];
        record("topk idx", fi, (long)(R * k));
        free(fi);
    }
    vlm_tensor *am = vlm_argmax(c, x);
    CHECK(am && am->dtype == VLM_I32 && am->shape[0] == R, "argmax");
    for (int64_t r = 0; am && r < R; r++) {
        int best = 0;
        for (int i = 1; i < D; i++) if (hx[r * D + i] > hx[r * D + best]) best = i;
        CHECK(((int32_t *)am->data)[r] == best, "argmax row %lld: %d want %d", (long long)r, ((int32_t *)am->data)[r], best);
    }
    int64_t n1 = 5;
    float v1[5] = {1, 3, 2, 3, -1};
    vlm_tensor *a1 = vlm_argmax(c, vlm_from_host(c, VLM_F32, 1, &n1, v1));
    CHECK(a1 && vlm_nelem(a1) == 1 && ((int32_t *)a1->data)[0] == 1, "argmax 1-D tie -> first");
    free(hx);
    vlm_compute_reset(c);
}

static void test_im2col(vlm_compute *c) {
    for (int nd = 3; nd <= 4; nd++) {
        int64_t N = nd == 4 ? 2 : 1, C = 3, H = 8, W = 12, P = 4, O = 5;
        int64_t shape[4] = {N, C, H, W};
        vlm_tensor *img = rnd(c, VLM_F32, nd, nd == 4 ? shape : shape + 1, 1.0f);
        if (nd == 4) img = vlm_slice(c, vlm_concat(c, img, img, 3), 3, 3, W); /* strided */
        float *hi = host(img);
        /* patch embedding reference: conv2d with stride P, weight [O, C, P, P] */
        vlm_tensor *w = rnd2(c, VLM_F32, O, C * P * P);
        float *hw = host(w);
        int64_t gh = H / P, gw = W / P;
        double *ref = dalloc(N * gh * gw * O), *ab = dalloc(N * gh * gw * O);
        for (int64_t n = 0; n < N; n++)
            for (int64_t py = 0; py < gh; py++)
                for (int64_t px = 0; px < gw; px++)
                    for (int64_t o = 0; o < O; o++) {
                        double s = 0, a = 0;
                        for (int64_t ch = 0; ch < C; ch++)
                            for (int64_t y = 0; y < P; y++)
                                for (int64_t x = 0; x < P; x++) {
                                    double t = ref_in(hi[((n * C + ch) * H + py * P + y) * W + px * P + x]) *
                                               ref_in(hw[o * C * P * P + (ch * P + y) * P + x]);
                                    s += t;
                                    a += fabs(t);
                                }
                        int64_t r = (n * gh + py) * gw + px;
                        ref[r * O + o] = s;
                        ab[r * O + o] = a;
                    }
        vlm_tensor *cols = vlm_im2col(c, img, (int)P);
        CHECK(cols && cols->shape[0] == N * gh * gw && cols->shape[1] == C * P * P, "im2col shape");
        check_mm(nd == 4 ? "im2col [N,C,H,W] patch embed" : "im2col [C,H,W] patch embed", c, vlm_matmul(c, cols, w), ref,
                 ab, N * gh * gw * O);
        free(hi); free(hw); free(ref); free(ab);
        vlm_compute_reset(c);
    }
}

/* ------------------------------------------------------------------ thread pool */

typedef struct pf_arg {
    int64_t *hits;
    atomic_int max_thread;
} pf_arg;

static void pf_fn(void *p, int64_t b, int64_t e, int thread) {
    pf_arg *a = (pf_arg *)p;
    for (int64_t i = b; i < e; i++) a->hits[i]++;
    int m = atomic_load(&a->max_thread);
    while (thread > m && !atomic_compare_exchange_weak(&a->max_thread, &m, thread)) {}
}

static void test_pool(void) {
    vlm_error err = {0};
    vlm_backend *b1 = vlm_backend_cpu(3, &err), *b2 = vlm_backend_cpu(2, &err);
    CHECK(b1 && b2, "two backends: %s", err.msg);
    if (!b1 || !b2) return;
    CHECK(b1->n_threads == 3, "n_threads");
    int64_t n = 100000;
    int64_t *hits = (int64_t *)calloc((size_t)n, sizeof(int64_t));
    for (int rep = 0; rep < 200; rep++) {
        pf_arg a = {hits, 0};
        vlm_cpu_parallel_for(rep % 2 ? b1 : b2, n, 1 + rep, pf_fn, &a);
        int mt = atomic_load(&a.max_thread);
        CHECK(mt < (rep % 2 ? 3 : 2), "thread index %d", mt);
    }
    int bad = 0;
    for (int64_t i = 0; i < n; i++) bad += hits[i] != 200;
    CHECK(bad == 0, "parallel_for covered %d items wrongly", bad);
    free(hits);
    b1->destroy(b1);
    b2->destroy(b2);
    vlm_backend *b0 = vlm_backend_cpu(0, &err);
    CHECK(b0 && b0->n_threads >= 1, "default thread count");
    if (b0) b0->destroy(b0);
}

/* ------------------------------------------------------------------ benchmark */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#if defined(__AVX2__)
#include <immintrin.h>
#endif
typedef struct bw_arg {
    const float *p;
    double sums[64];
} bw_arg;

static void bw_fn(void *p, int64_t b, int64_t e, int thread) {
    bw_arg *a = (bw_arg *)p;
    const float *x = a->p;
    double s = 0;
#if defined(__AVX2__)
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t i = b * 1024; i < e * 1024; i += 32) {
        s0 = _mm256_add_ps(s0, _mm256_load_ps(x + i));
        s1 = _mm256_add_ps(s1, _mm256_load_ps(x + i + 8));
        s2 = _mm256_add_ps(s2, _mm256_load_ps(x + i + 16));
        s3 = _mm256_add_ps(s3, _mm256_load_ps(x + i + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    for (int i = 0; i < 8; i++) s += t[i];
#else
    float t[8] = {0};
    for (int64_t i = b * 1024; i < e * 1024; i += 8)
        for (int j = 0; j < 8; j++) t[j] += x[i + j];
    for (int i = 0; i < 8; i++) s += t[i];
#endif
    a->sums[thread] += s;
}

/* GEMV/GEMM throughput; weights cycle through 256 MB so that they come from DRAM, not the 32 MB L3. */
static int bench(int only_attn) {
    const int64_t N = 4096, K = 4096;
    const size_t total = (size_t)256 << 20;
    char *pool = (char *)vlm_aligned_alloc(64, total);
    for (size_t i = 0; i < total / 4; i++) ((float *)pool)[i] = test_randf(&rng) * 0.01f;
    for (int nt = 1; nt <= 2; nt++) {
        vlm_error err = {0};
        vlm_backend *be = vlm_backend_cpu(nt, &err);
        vlm_compute c;
        vlm_compute_init(&c, be);
        bw_arg ba = {(const float *)pool, {0}};
        vlm_cpu_parallel_for(be, (int64_t)(total / 4096), 64, bw_fn, &ba);
        double t0 = now_s();
        for (int r = 0; r < 3; r++) vlm_cpu_parallel_for(be, (int64_t)(total / 4096), 64, bw_fn, &ba);
        double t1 = now_s();
        printf("[%d thr] memory read bandwidth (AVX2 sum over 256 MB): %.1f GB/s\n", nt, 3.0 * total / (t1 - t0) / 1e9);
        vlm_tensor *x = rnd2(&c, VLM_F32, 1, K);
        if (only_attn) goto attn;
        vlm_dtype dts[3] = {VLM_F32, VLM_BF16, VLM_F16};
        for (int di = 0; di < 3; di++) {
            size_t wb = (size_t)N * K * vlm_dtype_size(dts[di]);
            int nm = (int)(total / wb);
            vlm_tensor w[16];
            for (int i = 0; i < nm; i++) {
                w[i] = vlm_tensor_make(dts[di], 2, (int64_t[]){N, K}, pool + i * wb);
                if (dts[di] != VLM_F32) /* sane half values */
                    for (size_t j = 0; j < wb / 2; j++) ((uint16_t *)w[i].data)[j] = dts[di] == VLM_F16 ? 0x2e66 : 0x3c23;
            }
            for (int i = 0; i < nm; i++) vlm_matmul(&c, x, &w[i]);
            vlm_compute_reset(&c);
            x = rnd2(&c, VLM_F32, 1, K);
            int reps = 3 * nm;
            t0 = now_s();
            for (int r = 0; r < reps; r++) { vlm_matmul(&c, x, &w[r % nm]); }
            t1 = now_s();
            printf("[%d thr] GEMV %-4s 4096x4096 from DRAM: %.3f ms, %.1f GB/s\n", nt, vlm_dtype_name(dts[di]),
                   (t1 - t0) / reps * 1e3, reps * (double)wb / (t1 - t0) / 1e9);
            for (int64_t M = 2; M <= 512; M *= 2) {
                if (M > 32 && M != 64 && M != 512) continue;
                vlm_compute_reset(&c);
                vlm_tensor *xm = rnd2(&c, VLM_F32, M, K);
                vlm_matmul(&c, xm, &w[0]);
                reps = M >= 512 ? 2 : M >= 64 ? 4 : 8;
                struct timespec c0, c1;
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
                t0 = now_s();
                for (int r = 0; r < reps; r++) vlm_matmul(&c, xm, &w[r % nm]);
                t1 = now_s();
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
                double cpu = (c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) * 1e-9;
                printf("[%d thr] %s %-4s M=%-3lld 4096x4096: %6.2f ms, %.1f GFLOP/s (%.1f per CPU-second)\n", nt,
                       M < 32 ? "GEMV" : "GEMM", vlm_dtype_name(dts[di]), (long long)M, (t1 - t0) / reps * 1e3,
                       reps * 2.0 * M * N * K / (t1 - t0) / 1e9, reps * 2.0 * M * N * K / cpu / 1e9);
            }
            vlm_compute_reset(&c);
            x = rnd2(&c, VLM_F32, 1, K);
        }
    attn:
        /* attention decode and prefill */
        {
            int S = 4096, Hq = 16, Hkv = 2, D = 128;
            vlm_tensor *k = rnd3(&c, VLM_F16, S, Hkv, D), *v = rnd3(&c, VLM_F16, S, Hkv, D);
            int32_t *kp = malloc(4 * S), *qp = malloc(4 * S);
            for (int j = 0; j < S; j++) kp[j] = j;
            int Ts[3] = {1, 512, 4096};
            for (int ti = 0; ti < 3; ti++) {
                int T = Ts[ti];
                for (int i = 0; i < T; i++) qp[i] = S - T + i;
                vlm_tensor *q = rnd3(&c, VLM_F32, T, Hq, D);
                vlm_attn_params p = {.scale = 0.088f, .causal = 1, .q_pos = qp, .k_pos = kp};
                vlm_attention(&c, q, k, v, &p);
                struct timespec c0, c1;
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
                t0 = now_s();
                vlm_attention(&c, q, k, v, &p);
                t1 = now_s();
                clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
                double cpu = (c1.tv_sec - c0.tv_sec) + (c1.tv_nsec - c0.tv_nsec) * 1e-9;
                double flops = 4.0 * Hq * D * ((double)T * (S - T) + (double)T * (T + 1) / 2);
                printf("[%d thr] attention causal T=%d S=%d Hq=%d Hkv=%d D=%d f16 KV: %.2f ms (%.1f GFLOP/s; %.1f GFLOP/s per CPU-second)\n",
                       nt, T, S, Hq, Hkv, D, (t1 - t0) * 1e3, flops / (t1 - t0) / 1e9, flops / cpu / 1e9);
            }
            free(kp); free(qp);
        }
        vlm_compute_free(&c);
        be->destroy(be);
    }
    vlm_aligned_free(pool);
    return 0;
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--bench")) return bench(argc > 2 && !strcmp(argv[2], "attn"));
    test_pool();
    { /* forcing a variant runs that variant; unknown names and modes are errors */
        const char *name;
        for (int i = 0; (name = vlm_cpu_kernel_name(i)); i++) {
            vlm_error err = {0};
            vlm_cpu_params cp = {.n_threads = 1, .kernels = name, .compute = "bf16"};
            vlm_backend *be = vlm_backend_cpu_new(&cp, &err);
            CHECK(be && !strcmp(be->kernels, name) && !strcmp(be->compute, "bf16"), "kernels '%s': got %s (%s)", name,
                  be ? be->kernels : "none", err.msg);
            if (be) be->destroy(be);
        }
        vlm_error err = {0};
        vlm_cpu_params bad = {.n_threads = 1, .kernels = "avx9"}, badc = {.n_threads = 1, .compute = "fp8"},
                       aut = {.n_threads = 1, .kernels = "auto", .compute = "f32"};
        CHECK(!vlm_backend_cpu_new(&bad, &err) && err.code == VLM_ERR_ARG && strstr(err.msg, "avx9"), "unknown kernels: %s", err.msg);
        CHECK(!vlm_backend_cpu_new(&badc, &err) && err.code == VLM_ERR_ARG && strstr(err.msg, "fp8"), "unknown compute: %s", err.msg);
        vlm_backend *be = vlm_backend_cpu_new(&aut, &err);
        CHECK(be && !strcmp(be->kernels, vlm_cpu_kernel_name(0)) && !strcmp(be->compute, "f32"), "auto kernels");
        if (be) be->destroy(be);
    }
    /* every kernel variant the CPU runs; within one, 1 and 2 threads agree bit for bit */
    const char *kernels;
    for (int variant = 0; (kernels = vlm_cpu_kernel_name(variant)); variant++)
    for (ref_bf16 = 0; ref_bf16 < 2; ref_bf16++) {
    printf("kernels %s, compute %s\n", kernels, ref_bf16 ? "bf16" : "f32");
    rec_count = 0;
    for (pass_no = 0; pass_no < 2; pass_no++) {
        vlm_error err = {0};
        vlm_cpu_params cp = {.n_threads = pass_no + 1, .kernels = kernels, .compute = ref_bf16 ? "bf16" : "f32"};
        vlm_backend *be = vlm_backend_cpu_new(&cp, &err);
        CHECK(be != NULL, "backend: %s", err.msg);
        if (!be) break;
        vlm_compute c;
        vlm_compute_init(&c, be);
        rng = 12345;
        rec_pos = 0;
        test_cpy(&c);
        test_matmul(&c);
        test_matmul_id(&c);
        test_matmul_i8(&c);
        test_elementwise(&c);
        test_norms(&c);
        test_softmax(&c);
        test_rms_small(&c);
        test_rope(&c);
        test_attention(&c);
        test_concat(&c);
        test_rows(&c);
        test_topk_argmax(&c);
        test_im2col(&c);
        CHECK(!c.failed, "compute context left failed: %s", c.err.msg);
        vlm_compute_free(&c);
        be->destroy(be);
    }
    CHECK(rec_pos == rec_count, "1- and 2-thread passes recorded %d vs %d results", rec_count, rec_pos);
    for (int i = 0; i < rec_count; i++) free(rec_data[i]);
    }
    TEST_MAIN_END();
}
