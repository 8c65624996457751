/* Gemma 4 sliding-window layers on the ring-buffer KV cache: generating past
 * the window one token (or one chunk) at a time must give the logits of one
 * cache-free prefill over the whole sequence. Uses the tiny golden model
 * (window 8, sliding + full layers, the last two layers sharing KV); also
 * the bidirectional vision spans of the MoE model and video frames. */
#include "vlm.h"
#include "test_util.h"

#define G4W_MODEL "tests/golden/gemma4/model"
#define G4W_N 40

static int g4w_run(vlm_model *m, vlm_seq *s, const int32_t *ids, int n, int chunk, float *out, int V) {
    for (int i = 0; i < n; i += chunk) {
        int k = n - i < chunk ? n - i : chunk;
        vlm_tensor *lg = NULL;
        vlm_compute_reset(&s->c);
        if (m->arch->forward(m, s, ids + i, k, NULL, NULL, 1, &lg) != VLM_OK) {
            fprintf(stderr, "forward at %d: %s\n", i, s->c.err.msg);
            return 0;
        }
        if (lg->shape[0] != k || lg->shape[1] != V || vlm_to_host_f32(&s->c, lg, out + (size_t)i * V) != VLM_OK) return 0;
    }
    return 1;
}

/* use_bidirectional_attention = "vision" (the MoE model): with the processor's
 * mm_token_type_ids, a run of vision tokens attends both ways within itself;
 * without them (as in the golden reference) the mask stays causal. */
static void g4w_spans(void) {
    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = 2};
    if (vlm_model_load(&m, "tests/golden/gemma4_moe/model", &mp, &err) != VLM_OK) {
        CHECK(0, "load: %s", err.msg);
        return;
    }
    enum { N = 20, A = 6, B = 14 }; /* tokens [A, B) are one image's span */
    int V = m->vocab_size;
    int32_t ids[N];
    int64_t types[N];
    unsigned long long rng = 11;
    for (int i = 0; i < N; i++) {
        ids[i] = 3 + (int32_t)((test_randf(&rng) + 1.0f) * 400.0f);
        types[i] = i >= A && i < B;
    }
    vlm_features f = {.n = 1, .names = {"mm_token_type_ids"}};
    f.tensors[0] = vlm_tensor_make(VLM_I64, 1, (const int64_t[]){N}, types);
    float *out[3];
    for (int r = 0; r < 3; r++) {
        out[r] = (float *)malloc(sizeof(float) * N * V);
        vlm_seq s;
        vlm_tensor *lg = NULL;
        if (r == 2) ids[B + 2] ^= 1; /* a token after the span changes */
        CHECK(vlm_seq_init(&s, m, 32, 32, VLM_F32, &err) == VLM_OK, "seq: %s", err.msg);
        CHECK(m->arch->forward(m, &s, ids, N, NULL, r ? &f : NULL, 1, &lg) == VLM_OK, "forward: %s", s.c.err.msg);
        CHECK(lg && vlm_to_host_f32(&s.c, lg, out[r]) == VLM_OK, "logits");
        vlm_seq_free(&s);
    }
    float before = 0, first = 0, later = 0;
    for (int i = 0; i < A; i++) before = fmaxf(before, test_max_abs_diff(out[0] + i * V, out[1] + i * V, V));
    first = test_max_abs_diff(out[0] + A * V, out[1] + A * V, V);
    for (int i = 0; i < B + 2; i++) later = fmaxf(later, test_max_abs_diff(out[1] + i * V, out[2] + i * V, V));
    printf("spans: before %.3g, first span token %.3g, causal past the span %.3g\n", before, first, later);
    CHECK(before < 1e-4f, "tokens before the span changed by %g", before);
    CHECK(first > 1e-2f, "the first span token does not see the rest of its span (%g)", first);
    CHECK(later < 1e-4f, "a token after the span changed earlier logits by %g", later);
    for (int r = 0; r < 3; r++) free(out[r]);
    vlm_model_free(m);
}

/* Video frames go through the tower one by one, as images: a 2-frame video
 * of the golden image gives its soft tokens twice, after the image's. */
static void g4w_video(void) {
    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = 2};
    vlm_safetensors in;
    if (vlm_model_load(&m, G4W_MODEL, &mp, &err) != VLM_OK || vlm_st_open(&in, "tests/golden/gemma4/inputs.safetensors", &err) != VLM_OK) {
        CHECK(0, "load: %s", err.msg);
        vlm_model_free(m);
        return;
    }
    vlm_tensor px = vlm_st_tensor(vlm_st_find(&in, "pixel_values")), pos = vlm_st_tensor(vlm_st_find(&in, "image_position_ids"));
    int64_t N = px.shape[1], K = px.shape[2];
    float *vpx = (float *)malloc(sizeof(float) * 2 * N * K);
    int64_t *vpos = (int64_t *)malloc(sizeof(int64_t) * 2 * N * 2);
    for (int fr = 0; fr < 2; fr++) {
        memcpy(vpx + fr * N * K, px.data, sizeof(float) * N * K);
        memcpy(vpos + fr * N * 2, pos.data, sizeof(int64_t) * N * 2);
    }
    vlm_features f = {.n = 4, .names = {"pixel_values", "image_position_ids", "pixel_values_videos", "video_position_ids"}};
    f.tensors[0] = px;
    f.tensors[1] = pos;
    f.tensors[2] = vlm_tensor_make(VLM_F32, 4, (const int64_t[]){1, 2, N, K}, vpx);
    f.tensors[3] = vlm_tensor_make(VLM_I64, 4, (const int64_t[]){1, 2, N, 2}, vpos);
    vlm_compute c;
    vlm_compute_init(&c, m->be);
    vlm_vision_out vo;
    CHECK(m->arch->encode(m, &c, &f, &vo) == VLM_OK, "encode: %s", c.err.msg);
    if (vo.embeds) {
        int64_t r = vo.n_image_tokens, H = vo.embeds->shape[1];
        CHECK(r > 0 && vo.embeds->shape[0] == 3 * r, "%lld rows, %lld image rows", (long long)vo.embeds->shape[0], (long long)r);
        float *e = (float *)malloc(sizeof(float) * vlm_nelem(vo.embeds));
        vlm_to_host_f32(&c, vo.embeds, e);
        CHECK(test_max_abs_diff(e, e + r * H, r * H) < 1e-5f && test_max_abs_diff(e, e + 2 * r * H, r * H) < 1e-5f,
              "video frames differ from the image");
        free(e);
    }
    vlm_compute_free(&c);
    free(vpx);
    free(vpos);
    vlm_st_close(&in);
    vlm_model_free(m);
}

int main(void) {
    g4w_spans();
    g4w_video();
    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = 2};
    if (vlm_model_load(&m, G4W_MODEL, &mp, &err) != VLM_OK) {
        CHECK(0, "load %s: %s", G4W_MODEL, err.msg);
        TEST_MAIN_END();
    }
    CHECK(!strcmp(m->arch->name, "gemma4"), "arch %s", m->arch->name);
    int V = m->vocab_size;
    int32_t ids[G4W_N];
    unsigned long long rng = 7;
    for (int i = 0; i < G4W_N; i++) ids[i] = 3 + (int32_t)((test_randf(&rng) + 1.0f) * 400.0f); /* text ids */
    float *ref = (float *)malloc(sizeof(float) * G4W_N * V), *got = (float *)malloc(sizeof(float) * G4W_N * V);

    /* reference: one prefill, every layer's cache holds the whole sequence */
    vlm_seq full;
    CHECK(vlm_seq_init(&full, m, 64, 64, VLM_F32, &err) == VLM_OK, "seq: %s", err.msg);
    for (int l = 0; l < full.kv.n_layers; l++) CHECK(full.kv.layers[l].cap == 64, "layer %d cap %d", l, full.kv.layers[l].cap);
    CHECK(g4w_run(m, &full, ids, G4W_N, G4W_N, ref, V), "full prefill");

    /* the layout of the small model: sliding, sliding, full, sliding, then
     * layers 4 (sliding) and 5 (full) reading the caches of layers 3 and 2 */
    static const int sliding[6] = {1, 1, 0, 1, 1, 0}, owner[6] = {1, 1, 1, 1, 0, 0}, src[6] = {0, 1, 2, 3, 3, 2};
    int chunks[3] = {1, 5, 8};
    for (int t = 0; t < 3; t++) {
        int ch = chunks[t];
        vlm_seq s;
        CHECK(vlm_seq_init(&s, m, 64, ch, VLM_F32, &err) == VLM_OK, "seq: %s", err.msg);
        CHECK(s.kv.n_layers == 6, "%d cache layers", s.kv.n_layers);
        for (int l = 0; l < 6 && l < s.kv.n_layers; l++) {
            vlm_kv_layer *L = &s.kv.layers[l];
            CHECK(L->cap == (sliding[l] ? 8 + ch : 64), "chunk %d: layer %d ring of %d", ch, l, L->cap);
            CHECK(L->owner == owner[l], "layer %d owner %d", l, L->owner);
            CHECK(L->k == s.kv.layers[src[l]].k && L->slot_pos == s.kv.layers[src[l]].slot_pos,
                  "layer %d should read layer %d's cache", l, src[l]);
        }
        memset(got, 0, sizeof(float) * G4W_N * V);
        CHECK(g4w_run(m, &s, ids, G4W_N, ch, got, V), "chunks of %d", ch);
        float worst = 0;
        int worst_at = -1;
        for (int i = 0; i < G4W_N; i++) {
            float d = test_max_abs_diff(ref + (size_t)i * V, got + (size_t)i * V, V);
            if (d > worst || d != d) { worst = d; worst_at = i; }
        }
        printf("chunks of %d: max |logit diff| %.3g (at token %d)\n", ch, worst, worst_at);
        CHECK(worst < 1e-4f, "chunks of %d: logits differ by %g at token %d", ch, worst, worst_at);
        /* the sliding rings wrapped: only the last window + chunk positions are left */
        int lo = 1 << 30, hi = -1;
        for (int k = 0; k < s.kv.layers[0].cap; k++) {
            int p = s.kv.layers[0].slot_pos[k];
            if (p >= 0 && p < lo) lo = p;
            if (p > hi) hi = p;
        }
        CHECK(hi == G4W_N - 1 && lo >= G4W_N - 8 - ch, "ring holds positions %d..%d", lo, hi);
        /* a call longer than the ring was sized for is refused, not silently wrong */
        if (ch == 1) {
            vlm_seq_reset(&s);
            vlm_tensor *lg = NULL;
            vlm_compute_reset(&s.c);
            CHECK(m->arch->forward(m, &s, ids, 2, NULL, NULL, 1, &lg) != VLM_OK, "2 tokens with max_batch 1 accepted");
        }
        vlm_seq_free(&s);
    }
    vlm_seq_free(&full);
    free(ref);
    free(got);
    vlm_model_free(m);
    TEST_MAIN_END();
}
