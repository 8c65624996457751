/* The engine's vision-encoder cache (src/api/vision_cache.c): an image
 * encoded alone gives the rows it gets among other images, in every family
 * (what lets the cache keep images one by one); a second session sending the
 * same image takes its rows from the cache and answers exactly as the first
 * and as an engine without a cache; least recently used out first. */
#include "test_util.h"
#include "vlm.h"
#include "api/vision_cache.h"

#define IMAGE "tests/golden/qwen2_5_vl/image.png"

/* Two images in one encode call against each alone through the cache code. */
static void test_alone_equals_together(const char *dir) {
    vlm_error err = {0};
    vlm_engine *e = NULL;
    vlm_engine_params ep = {.n_threads = 2};
    CHECK(vlm_engine_open(&e, dir, &ep, &err) == VLM_OK, "%s: %s", dir, err.msg);
    if (!e) return;
    vlm_model *m = vlm_engine_model(e);
    vlm_image_processor proc;
    vlm_image img[2] = {{0}, {0}};
    CHECK(vlm_image_processor_load(&proc, dir, &err) == VLM_OK && vlm_image_load(&img[0], IMAGE, &err) == VLM_OK &&
              vlm_image_load(&img[1], "tests/data/img/image1_333x777.png", &err) == VLM_OK,
          "%s: %s", dir, err.msg);
    vlm_seq seq;
    CHECK(vlm_seq_init(&seq, m, 64, 64, VLM_F32, &err) == VLM_OK, "%s", err.msg);
    vlm_compute *c = &seq.c;
    vlm_features f = {0};
    vlm_vision_out together = {0}, alone = {0};
    CHECK(vlm_image_preprocess(&proc, img, 2, &f, &err) == VLM_OK, "%s", err.msg);
    CHECK(m->arch->encode(m, c, &f, &together) == VLM_OK, "%s: %s", dir, c->err.msg);
    uint64_t keys[2] = {1, 2};
    int n_enc = -1;
    CHECK(vlm_vcache_encode(NULL, m, c, &proc, img, keys, 2, &alone, &n_enc, &err) == VLM_OK && n_enc == 2, "%s", err.msg);
    int64_t rows = together.embeds ? together.embeds->shape[0] : 0, w = together.embeds ? together.embeds->shape[1] : 0;
    CHECK(alone.embeds && alone.embeds->shape[0] == rows && alone.embeds->shape[1] == w && alone.n_extra == together.n_extra,
          "%s: the same shapes", dir);
    float worst = 0;
    for (int k = 0; alone.embeds && k <= together.n_extra && alone.embeds->shape[0] == rows; k++) {
        const vlm_tensor *a = k ? alone.extra[k - 1] : alone.embeds, *t = k ? together.extra[k - 1] : together.embeds;
        int64_t n = a->shape[0] * a->shape[1];
        float *ha = (float *)malloc(sizeof(float) * (size_t)n), *ht = (float *)malloc(sizeof(float) * (size_t)n);
        CHECK(vlm_to_host_f32(c, a, ha) == VLM_OK && vlm_to_host_f32(c, t, ht) == VLM_OK, "%s", c->err.msg);
        float d = test_max_abs_diff(ha, ht, n);
        if (d > worst) worst = d;
        free(ha);
        free(ht);
    }
    printf("%-28s 2 images: %lld rows x %lld (+%d side outputs), alone vs together max |diff| %.3g\n", dir,
           (long long)rows, (long long)w, together.n_extra, worst);
    CHECK(worst < 1e-5f, "%s: an image's rows do not depend on the other images of the call (%g)", dir, worst);
    vlm_image_features_free(&f);
    vlm_seq_free(&seq);
    vlm_image_free(&img[0]);
    vlm_image_free(&img[1]);
    vlm_engine_close(e);
}

static int ignore(void *u, const char *t, size_t n) { (void)u; (void)t; (void)n; return 0; }

static void ask(vlm_engine *e, float *logits, vlm_generate_stats *st) {
    vlm_error err = {0};
    vlm_session *s = NULL;
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 1;
    CHECK(vlm_session_new(e, NULL, &s, &err) == VLM_OK && vlm_session_add_image_file(s, IMAGE, &err) == VLM_OK &&
              vlm_session_add_text(s, "What is it?", &err) == VLM_OK &&
              vlm_session_generate(s, &gp, ignore, NULL, st, &err) == VLM_OK,
          "%s", err.msg);
    memcpy(logits, vlm_session_logits(s), sizeof(float) * 1024);
    vlm_session_free(s);
}

/* Sessions on one engine: the second takes the image from the cache, with the same logits. */
static void test_sessions_share(void) {
    vlm_error err = {0};
    vlm_engine *none = NULL, *e = NULL;
    vlm_engine_params off = {.n_threads = 2, .vision_cache_mib = -1}, on = {.n_threads = 2};
    CHECK(vlm_engine_open(&none, "tests/data/tiny_qwen", &off, &err) == VLM_OK &&
              vlm_engine_open(&e, "tests/data/tiny_qwen", &on, &err) == VLM_OK,
          "%s", err.msg);
    if (!none || !e) return;
    static float ref[1024], first[1024], second[1024], again[1024];
    vlm_generate_stats s0, s1, s2, s3;
    ask(none, ref, &s0);
    ask(e, first, &s1);
    ask(e, second, &s2);
    ask(none, again, &s3);
    CHECK(s0.n_images_encoded == 1 && s3.n_images_encoded == 1 && s3.n_images_cached == 0, "no cache: encoded each time");
    CHECK(s1.n_images_encoded == 1 && s1.n_images_cached == 0, "the first sight runs the tower");
    CHECK(s2.n_images_encoded == 0 && s2.n_images_cached == 1, "the second session takes the cached rows");
    CHECK(!memcmp(ref, first, sizeof ref) && !memcmp(first, second, sizeof ref), "the same logits, bit for bit");
    printf("sessions: first %d encoded, second %d encoded + %d from the cache, logits identical to an engine without one\n",
           s1.n_images_encoded, s2.n_images_encoded, s2.n_images_cached);
    vlm_engine_close(none);
    vlm_engine_close(e);
}

/* A budget of two and a half images: the least recently used goes first. */
static void test_lru(void) {
    vlm_error err = {0};
    vlm_engine *e = NULL;
    vlm_engine_params ep = {.n_threads = 2, .vision_cache_mib = -1};
    CHECK(vlm_engine_open(&e, "tests/data/tiny_qwen", &ep, &err) == VLM_OK, "%s", err.msg);
    if (!e) return;
    vlm_model *m = vlm_engine_model(e);
    vlm_image_processor proc;
    vlm_image img = {0};
    CHECK(vlm_image_processor_load(&proc, "tests/data/tiny_qwen", &err) == VLM_OK && vlm_image_load(&img, IMAGE, &err) == VLM_OK,
          "%s", err.msg);
    vlm_seq seq;
    CHECK(vlm_seq_init(&seq, m, 64, 64, VLM_F32, &err) == VLM_OK, "%s", err.msg);
    vlm_vision_out out;
    int n_enc = 0;
    uint64_t key = 0;
    CHECK(vlm_vcache_encode(NULL, m, &seq.c, &proc, &img, &key, 1, &out, &n_enc, &err) == VLM_OK, "%s", err.msg);
    size_t one = sizeof(float) * (size_t)(out.embeds->shape[0] * out.embeds->shape[1]);
    vlm_vcache *v = vlm_vcache_new(one * 5 / 2);
    /* A B A C (C drops B, the least recently used) A B (B runs again, dropping C) */
    static const struct { uint64_t key; int encoded; } steps[] = {{'A', 1}, {'B', 1}, {'A', 0}, {'C', 1}, {'A', 0}, {'B', 1}, {'C', 1}};
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        vlm_compute_reset(&seq.c);
        CHECK(vlm_vcache_encode(v, m, &seq.c, &proc, &img, &steps[i].key, 1, &out, &n_enc, &err) == VLM_OK, "%s", err.msg);
        CHECK(n_enc == steps[i].encoded, "step %zu (%c): encoded %d, want %d", i, (char)steps[i].key, n_enc, steps[i].encoded);
    }
    vlm_vcache_stats st = vlm_vcache_get_stats(v);
    printf("LRU: %lld hits, %lld misses, %lld entries, %zu of %zu bytes\n", (long long)st.hits, (long long)st.misses,
           (long long)st.entries, st.bytes, st.max_bytes);
    CHECK(st.hits == 2 && st.misses == 5 && st.entries == 2 && st.bytes == 2 * one, "the cache's tally");
    vlm_vcache *tiny = vlm_vcache_new(one / 2); /* an image bigger than the whole budget is not kept */
    for (int i = 0; i < 2; i++) {
        CHECK(vlm_vcache_encode(tiny, m, &seq.c, &proc, &img, &key, 1, &out, &n_enc, &err) == VLM_OK && n_enc == 1,
              "an image over the budget runs each time");
    }
    vlm_vcache_free(tiny);
    vlm_vcache_free(v);
    vlm_seq_free(&seq);
    vlm_image_free(&img);
    vlm_engine_close(e);
}

int main(void) {
    static const char *const dirs[] = {"tests/data/tiny_qwen", "tests/data/tiny_qwen3_vl", "tests/data/tiny_internvl",
                                       "tests/data/tiny_internvl_qwen3", "tests/data/tiny_idefics3", "tests/data/tiny_gemma4"};
    for (size_t i = 0; i < sizeof dirs / sizeof dirs[0]; i++) test_alone_equals_together(dirs[i]);
    test_sessions_share();
    test_lru();
    TEST_MAIN_END();
}
