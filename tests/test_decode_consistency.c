/* The KV cache is right when decoding token by token gives the logits of one
 * prefill over the same tokens. Runs every golden case of an architecture
 * that supports it: the prompt up to the end of its last image run goes in
 * one call (an image must be encoded with its grid), the rest one token at
 * a time, and every position's logits are compared. */
#include "test_util.h"
#include "vlm.h"

static int last_vision_token(const vlm_model *m, const int32_t *ids, int n) {
    int last = -1;
    for (int i = 0; i < n; i++)
        if (ids[i] == m->image_token_id || ids[i] == m->video_token_id) last = i;
    return last;
}

static void check_case(const char *dir, int n_threads, int mrope3d) {
    char path[1024];
    vlm_error err = {0};
    vlm_model *m = NULL;
    snprintf(path, sizeof path, "%s/model", dir);
    vlm_model_params mp = {.n_threads = n_threads};
    if (vlm_model_load(&m, path, &mp, &err) != VLM_OK) {
        CHECK(0, "%s: %s", dir, err.msg);
        return;
    }
    vlm_safetensors in = {0};
    snprintf(path, sizeof path, "%s/inputs.safetensors", dir);
    CHECK(vlm_st_open(&in, path, &err) == VLM_OK, "%s", err.msg);
    vlm_tensor ids_t = vlm_st_tensor(vlm_st_find(&in, "input_ids"));
    int n = (int)vlm_nelem(&ids_t);
    int32_t ids[512];
    for (int i = 0; i < n; i++) ids[i] = (int32_t)vlm_get_i64(&ids_t, i);
    vlm_features f = {0};
    for (int i = 0; i < in.n_entries; i++)
        if (strcmp(in.entries[i].name, "input_ids")) {
            f.names[f.n] = in.entries[i].name;
            f.tensors[f.n++] = vlm_st_tensor(&in.entries[i]);
        }
    /* With mm_token_type_ids the Qwen models use 3D M-RoPE positions, whose
     * offset (rope_deltas) must carry over into decoding. */
    int32_t types[512];
    if (mrope3d && !vlm_features_get(&f, "mm_token_type_ids")) {
        for (int i = 0; i < n; i++) types[i] = ids[i] == m->image_token_id ? 1 : ids[i] == m->video_token_id ? 2 : 0;
        f.names[f.n] = "mm_token_type_ids";
        f.tensors[f.n++] = vlm_tensor_make(VLM_I32, 2, (const int64_t[]){1, n}, types);
    }

    int V = m->vocab_size;
    float *full = malloc(sizeof(float) * (size_t)n * V), *step = malloc(sizeof(float) * (size_t)n * V);
    vlm_seq s;
    CHECK(vlm_seq_init(&s, m, n + 8, 0, VLM_F32, &err) == VLM_OK, "%s", err.msg);

    /* One prefill over everything. */
    vlm_vision_out vis;
    CHECK(m->arch->encode(m, &s.c, &f, &vis) == VLM_OK, "%s", s.c.err.msg);
    vlm_tensor *lg = NULL;
    CHECK(m->arch->forward(m, &s, ids, n, &vis, &f, 1, &lg) == VLM_OK, "%s", s.c.err.msg);
    CHECK(vlm_to_host_f32(&s.c, lg, full) == VLM_OK, "download");

    /* Again: the image part at once, then token by token. */
    vlm_compute_reset(&s.c);
    vlm_seq_reset(&s);
    int head = last_vision_token(m, ids, n) + 1;
    CHECK(head > 0 && head < n, "case has an image run followed by text");
    CHECK(m->arch->encode(m, &s.c, &f, &vis) == VLM_OK, "%s", s.c.err.msg);
    CHECK(m->arch->forward(m, &s, ids, head, &vis, &f, 1, &lg) == VLM_OK, "%s", s.c.err.msg);
    CHECK(vlm_to_host_f32(&s.c, lg, step) == VLM_OK, "download");
    for (int i = head; i < n; i++) {
        vlm_compute_reset(&s.c);
        CHECK(m->arch->forward(m, &s, &ids[i], 1, NULL, NULL, 0, &lg) == VLM_OK, "%s", s.c.err.msg);
        CHECK(vlm_to_host_f32(&s.c, lg, step + (size_t)i * V) == VLM_OK, "download");
    }
    float d = test_max_abs_diff(full, step, (long)n * V);
    printf("%s (threads %d, %s positions): max |prefill - decode| over %d positions = %.3g\n", dir, n_threads,
           mrope3d ? "3D" : "as given", n, d);
    CHECK(d < 1e-4f, "%s: prefill and step-by-step decode differ by %g", dir, d);

    /* A prompt longer than the context is refused cleanly. */
    vlm_compute_reset(&s.c);
    vlm_seq_reset(&s);
    vlm_error_clear(&s.c.err);
    int32_t many[600] = {0};
    CHECK(m->arch->forward(m, &s, many, n + 9, NULL, NULL, 0, &lg) == VLM_ERR_CONTEXT, "context overflow is an error");

    vlm_seq_free(&s);
    free(full);
    free(step);
    vlm_st_close(&in);
    vlm_model_free(m);
}

int main(void) {
    const char *cases[] = {"tests/golden/qwen2_5_vl", "tests/golden/qwen2_5_vl_multi", "tests/golden/qwen2_5_vl_video",
                           "tests/golden/idefics3", "tests/golden/qwen3_vl", "tests/golden/qwen3_vl_moe"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        check_case(cases[i], 1, 0);
        check_case(cases[i], 2, 0);
        check_case(cases[i], 1, 1);
    }
    TEST_MAIN_END();
}
