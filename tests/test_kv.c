/* The ring-buffer KV cache (src/core/kv.c): slot bookkeeping, wrap-around,
 * shared layers, errors; and sliding-window generation past the ring's
 * capacity (token by token and in chunks) against a recompute-from-scratch
 * reference over the whole sequence with the window mask. */
#include "vlm.h"
#include "test_util.h"

#include <stdint.h>

static unsigned long long rng = 777;

static void fill(float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] = test_randf(&rng);
}

static float round_to(vlm_dtype t, float v) {
    if (t == VLM_F16) return vlm_f16_to_f32(vlm_f32_to_f16(v));
    if (t == VLM_BF16) return vlm_bf16_to_f32(vlm_f32_to_bf16(v));
    return v;
}

static void test_bookkeeping(vlm_backend *be) {
    vlm_kv_cache kv;
    vlm_error err = {0};
    int cap[3] = {8, 4, 0}, heads[3] = {2, 1, 2}, hd[3] = {3, 5, 3}, share[3] = {-1, -1, 0};
    CHECK(vlm_kv_init(&kv, be, VLM_BF16, 3, cap, heads, hd, share, &err) == VLM_OK, "kv init: %s", err.msg);
    CHECK(kv.layers[0].cap == 8 && kv.layers[1].cap == 4 && kv.layers[2].cap == 8, "caps");
    CHECK(kv.layers[2].k->data == kv.layers[0].k->data && kv.layers[2].slot_pos == kv.layers[0].slot_pos &&
              !kv.layers[2].owner && kv.layers[0].owner, "layer 2 shares layer 0");
    CHECK(kv.layers[1].k->data != kv.layers[0].k->data && kv.layers[1].k->shape[1] == 1 && kv.layers[1].k->shape[2] == 5,
          "layer 1 own shape");
    int empty = 1;
    for (int s = 0; s < 8; s++) empty &= kv.layers[0].slot_pos[s] == -1;
    CHECK(empty, "slots start empty");

    vlm_compute c;
    vlm_compute_init(&c, be);
    float kh[16 * 6], vh[16 * 6];
    fill(kh, 16 * 6);
    fill(vh, 16 * 6);
    /* positions 0..4, then 5..10 (wraps: slots 5,6,7,0,1,2) */
    int32_t pos[16];
    for (int i = 0; i < 16; i++) pos[i] = i;
    vlm_kv_layer *L = &kv.layers[0];
    vlm_tensor *k1 = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){5, 2, 3}, kh);
    vlm_tensor *v1 = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){5, 2, 3}, vh);
    CHECK(vlm_kv_write(&c, L, k1, v1, pos, 5) == VLM_OK, "write 5: %s", c.err.msg);
    for (int s = 0; s < 8; s++) CHECK(L->slot_pos[s] == (s < 5 ? s : -1), "slot %d after first write: %d", s, L->slot_pos[s]);
    vlm_tensor *k2 = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){6, 2, 3}, kh + 5 * 6);
    vlm_tensor *v2 = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){6, 2, 3}, vh + 5 * 6);
    CHECK(vlm_kv_write(&c, L, k2, v2, pos + 5, 6) == VLM_OK, "write 6: %s", c.err.msg);
    int want[8] = {8, 9, 10, 3, 4, 5, 6, 7};
    for (int s = 0; s < 8; s++) CHECK(L->slot_pos[s] == want[s], "slot %d after wrap: %d want %d", s, L->slot_pos[s], want[s]);
    /* contents: slot s holds position want[s] (bf16-rounded) */
    int bad = 0;
    for (int s = 0; s < 8; s++)
        for (int i = 0; i < 6; i++) {
            bad += vlm_get_f32(L->k, s * 6 + i) != round_to(VLM_BF16, kh[want[s] * 6 + i]);
            bad += vlm_get_f32(L->v, s * 6 + i) != round_to(VLM_BF16, vh[want[s] * 6 + i]);
        }
    CHECK(bad == 0, "ring contents: %d wrong", bad);
    /* the shared layer sees the same slots */
    CHECK(kv.layers[2].slot_pos[0] == 8, "shared layer slot_pos");
    /* a write of more tokens than the ring holds fails */
    vlm_tensor *k3 = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){5, 1, 5}, kh);
    vlm_tensor *v3 = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){5, 1, 5}, vh);
    vlm_status st = vlm_kv_write(&c, &kv.layers[1], k3, v3, pos, 5);
    CHECK(st == VLM_ERR_CONTEXT && c.failed, "n > cap must fail with a context error, got %d", st);
    vlm_compute_reset(&c);
    /* a shape mismatch fails too */
    st = vlm_kv_write(&c, &kv.layers[1], k1, v1, pos, 5);
    CHECK(st != VLM_OK, "write with wrong head shape must fail");
    vlm_compute_reset(&c);
    /* truncate drops positions >= 6 everywhere */
    vlm_kv_truncate(&kv, 6);
    int want2[8] = {-1, -1, -1, 3, 4, 5, -1, -1};
    for (int s = 0; s < 8; s++) CHECK(L->slot_pos[s] == want2[s], "slot %d after truncate: %d", s, L->slot_pos[s]);
    vlm_kv_clear(&kv);
    for (int s = 0; s < 8; s++) CHECK(L->slot_pos[s] == -1, "slot %d after clear", s);
    for (int s = 0; s < 4; s++) CHECK(kv.layers[1].slot_pos[s] == -1, "layer 1 slot %d after clear", s);
    vlm_compute_free(&c);
    vlm_kv_free(&kv);

    /* bad arguments */
    int capz[1] = {0}, h1[1] = {1}, d1[1] = {4};
    vlm_error_clear(&err);
    CHECK(vlm_kv_init(&kv, be, VLM_F32, 1, capz, h1, d1, NULL, &err) != VLM_OK, "cap 0 must fail");
    vlm_kv_free(&kv);
    int cap1[1] = {4};
    vlm_error_clear(&err);
    CHECK(vlm_kv_init(&kv, be, VLM_I32, 1, cap1, h1, d1, NULL, &err) != VLM_OK, "int cache dtype must fail");
    vlm_kv_free(&kv);
}

/* Sliding-window attention over the ring vs the full-sequence reference. */
static void test_window_generation(vlm_backend *be, vlm_dtype dt, int chunked) {
    enum { Hq = 4, Hkv = 2, D = 16, W = 8, B = 4, CAP = W + B, L = 3 * CAP };
    float *q = malloc(sizeof(float) * L * Hq * D), *k = malloc(sizeof(float) * L * Hkv * D),
          *v = malloc(sizeof(float) * L * Hkv * D);
    fill(q, L * Hq * D);
    fill(k, L * Hkv * D);
    fill(v, L * Hkv * D);
    /* reference: causal + window over the whole sequence, k/v as the cache stores them */
    double *ref = calloc((size_t)L * Hq * D, sizeof(double));
    float scale = 0.25f;
    for (int i = 0; i < L; i++)
        for (int h = 0; h < Hq; h++) {
            int g = h / (Hq / Hkv);
            double sc[L], m = -INFINITY, l = 0;
            for (int j = 0; j < L; j++) {
                sc[j] = -INFINITY;
                if (j > i || i - j >= W) continue;
                double s = 0;
                for (int d = 0; d < D; d++) s += (double)q[(i * Hq + h) * D + d] * round_to(dt, k[(j * Hkv + g) * D + d]);
                sc[j] = s * scale;
                if (sc[j] > m) m = sc[j];
            }
            for (int j = 0; j < L; j++) l += sc[j] = sc[j] == -INFINITY ? 0 : exp(sc[j] - m);
            for (int d = 0; d < D; d++) {
                double a = 0;
                for (int j = 0; j < L; j++) a += sc[j] * round_to(dt, v[(j * Hkv + g) * D + d]);
                ref[(i * Hq + h) * D + d] = a / l;
            }
        }
    vlm_kv_cache kv;
    vlm_error err = {0};
    int cap[1] = {CAP}, heads[1] = {Hkv}, hd[1] = {D};
    CHECK(vlm_kv_init(&kv, be, dt, 1, cap, heads, hd, NULL, &err) == VLM_OK, "kv init: %s", err.msg);
    vlm_compute c;
    vlm_compute_init(&c, be);
    int chunks[] = {3, 4, 1, 2, 4, 4, 1, 3};
    double worst = 0;
    int p = 0, ci = 0, steps = 0;
    while (p < L) {
        int n = chunked ? chunks[ci++ % 8] : 1;
        if (p + n > L) n = L - p;
        int32_t pos[B];
        for (int i = 0; i < n; i++) pos[i] = p + i;
        vlm_tensor *kn = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){n, Hkv, D}, k + (size_t)p * Hkv * D);
        vlm_tensor *vn = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){n, Hkv, D}, v + (size_t)p * Hkv * D);
        vlm_tensor *qn = vlm_from_host(&c, VLM_F32, 3, (int64_t[]){n, Hq, D}, q + (size_t)p * Hq * D);
        CHECK(vlm_kv_write(&c, &kv.layers[0], kn, vn, pos, n) == VLM_OK, "write at %d: %s", p, c.err.msg);
        vlm_attn_params ap = {.scale = scale, .causal = 1, .window = W, .q_pos = pos, .k_pos = kv.layers[0].slot_pos};
        vlm_tensor *o = vlm_attention(&c, qn, kv.layers[0].k, kv.layers[0].v, &ap);
        CHECK(o != NULL, "attention at %d: %s", p, c.err.msg);
        if (!o) break;
        for (int i = 0; i < n * Hq * D; i++) {
            double d = fabs(((float *)o->data)[i] - ref[(size_t)p * Hq * D + i]);
            if (d > worst) worst = d;
        }
        vlm_compute_reset(&c);
        p += n;
        steps++;
    }
    CHECK(p == L && worst < 2e-6, "%s %s window generation over %d tokens (ring %d): max error %g", vlm_dtype_name(dt),
          chunked ? "chunked" : "token-by-token", L, CAP, worst);
    printf("window generation %s %s: %d steps, max |err| %.3g\n", vlm_dtype_name(dt), chunked ? "chunked" : "decode", steps, worst);
    vlm_compute_free(&c);
    vlm_kv_free(&kv);
    free(q); free(k); free(v); free(ref);
}

int main(void) {
    vlm_error err = {0};
    vlm_backend *be = vlm_backend_cpu(2, &err);
    CHECK(be != NULL, "backend: %s", err.msg);
    if (!be) TEST_MAIN_END();
    test_bookkeeping(be);
    test_window_generation(be, VLM_F32, 0);
    test_window_generation(be, VLM_F32, 1);
    test_window_generation(be, VLM_BF16, 0);
    test_window_generation(be, VLM_F16, 1);
    be->destroy(be);
    TEST_MAIN_END();
}
