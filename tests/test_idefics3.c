/* Idefics3 vision-path properties that the golden case does not reach:
 * all-zero (padding) tiles are dropped, and in a partially padded tile the
 * padding patches are hidden as keys while the valid block keeps the
 * position ids of an unpadded image of the same patch count. Uses the tiny
 * model of tests/golden/idefics3. */
#include "vlm.h"
#include "test_util.h"

#define IDF_MODEL "tests/golden/idefics3/model"

static unsigned long long seed = 7;

static void fill(float *p, long n) {
    for (long i = 0; i < n; i++) p[i] = test_randf(&seed);
}

/* Runs encode on pixel_values [n, 3, S, S] (and a mask [n, S, S] when given);
 * copies the embeddings to out (at most cap floats); returns rows or -1. */
static long encode(vlm_model *m, vlm_compute *c, int n, int S, float *px, float *mask, float *out, long cap) {
    vlm_features f = {0};
    f.names[f.n] = "pixel_values";
    f.tensors[f.n++] = vlm_tensor_make(VLM_F32, 4, (const int64_t[]){n, 3, S, S}, px);
    if (mask) {
        f.names[f.n] = "pixel_attention_mask";
        f.tensors[f.n++] = vlm_tensor_make(VLM_F32, 3, (const int64_t[]){n, S, S}, mask);
    }
    vlm_vision_out vo;
    vlm_compute_reset(c);
    if (m->arch->encode(m, c, &f, &vo) != VLM_OK) {
        fprintf(stderr, "encode: %s\n", c->err.msg);
        vlm_error_clear(&c->err);
        c->failed = 0;
        return -1;
    }
    long rows = (long)vo.embeds->shape[0], cols = (long)vo.embeds->shape[1];
    if (rows * cols > cap || vlm_to_host_f32(c, vo.embeds, out) != VLM_OK) return -1;
    return rows;
}

int main(void) {
    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = 1};
    if (vlm_model_load(&m, IDF_MODEL, &mp, &err) != VLM_OK) {
        fprintf(stderr, "load: %s\n", err.msg);
        return 1;
    }
    CHECK(!strcmp(m->arch->name, "idefics3"), "arch %s", m->arch->name);
    int H = m->hidden_size, S = 64, T = 3 * S * S;
    vlm_compute c;
    vlm_compute_init(&c, m->be);
    float *px = malloc(sizeof(float) * 3 * T), *mask = malloc(sizeof(float) * 3 * S * S);
    float *a = malloc(sizeof(float) * 64 * H), *b = malloc(sizeof(float) * 64 * H);

    /* 1. A tile of zeros between two images is padding: it is dropped. */
    fill(px, T);
    memset(px + T, 0, sizeof(float) * T);
    fill(px + 2 * T, T);
    long ra = encode(m, &c, 3, S, px, NULL, a, 64L * H);
    memcpy(px + T, px + 2 * T, sizeof(float) * T);
    long rb = encode(m, &c, 2, S, px, NULL, b, 64L * H);
    CHECK(ra == 8 && rb == 8, "rows %ld and %ld, want 8 (two tiles of 4 tokens)", ra, rb);
    if (ra == rb && ra > 0) CHECK(test_max_abs_diff(a, b, ra * H) == 0, "zero tile changed the other tiles' rows");

    /* 2. A 64x64 tile whose mask keeps only the top-left 32x32 (2x2 patches):
     * the token made of those four patches equals that of a plain 32x32
     * image (same position ids 0,1,4,5 by bucketing, same visible keys),
     * whatever the padding pixels hold. */
    float *small = malloc(sizeof(float) * 3 * 32 * 32);
    fill(small, 3 * 32 * 32);
    fill(px, T);
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < 32; y++)
            for (int x = 0; x < 32; x++) px[ch * S * S + y * S + x] = small[ch * 1024 + y * 32 + x];
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) mask[y * S + x] = y < 32 && x < 32;
    long r1 = encode(m, &c, 1, 32, small, NULL, a, 64L * H);
    long r2 = encode(m, &c, 1, S, px, mask, b, 64L * H);
    CHECK(r1 == 1 && r2 == 4, "rows %ld / %ld", r1, r2);
    float d = r1 == 1 && r2 == 4 ? test_max_abs_diff(a, b, H) : INFINITY;
    CHECK(d < 1e-4f, "valid token of a padded tile differs from the unpadded image by %g", d);
    /* other padding content: the valid token stays, the others move */
    memcpy(a, b, sizeof(float) * 4 * H);
    for (int ch = 0; ch < 3; ch++)
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++)
                if (y >= 32 || x >= 32) px[ch * S * S + y * S + x] = test_randf(&seed);
    r2 = encode(m, &c, 1, S, px, mask, b, 64L * H);
    CHECK(r2 == 4, "rows %ld", r2);
    if (r2 == 4) {
        CHECK(test_max_abs_diff(a, b, H) < 1e-5f, "padding pixels leaked into the valid token");
        CHECK(test_max_abs_diff(a + H, b + H, 3L * H) > 1e-3f, "padding tokens did not depend on their pixels");
    }
    /* without the mask the same tile gives a different valid token (sanity) */
    r2 = encode(m, &c, 1, S, px, NULL, b, 64L * H);
    CHECK(r2 == 4 && test_max_abs_diff(a, b, H) > 1e-3f, "mask had no effect");

    free(small); free(px); free(mask); free(a); free(b);
    vlm_compute_free(&c);
    vlm_model_free(m);
    TEST_MAIN_END();
}
