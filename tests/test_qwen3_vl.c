/* Qwen3-VL video and chunking paths, checked against the image path of the
 * same model (tests/golden/qwen3_vl_moe, whose image path `vlm golden`
 * checks against transformers). In transformers a video goes through the
 * same vision tower with attention restricted to each temporal patch, and
 * the processor puts every frame in its own span, so:
 *  - a video of two temporal patches gives the same embeddings (and DeepStack
 *    features) as two one-frame images of the same pixels;
 *  - a prompt with the two frames' video tokens gives the same logits as the
 *    prompt with image tokens in their place;
 *  - a prompt run in two calls gives the same logits as in one;
 *  - the checkpoint with its fused experts in the transformers 4 layout
 *    ([E, in, out], as the official Qwen3-VL-MoE checkpoints store them)
 *    gives the same logits as the transformers 5 layout. */
#include "vlm.h"
#include "test_util.h"

#include <stdint.h>
#include <stdio.h>

#define T3_DIR "tests/golden/qwen3_vl_moe"

static float t3_max_diff(vlm_compute *c, vlm_tensor *a, vlm_tensor *b) {
    if (!a || !b || vlm_nelem(a) != vlm_nelem(b)) return INFINITY;
    int64_t n = vlm_nelem(a);
    float *x = (float *)malloc(sizeof(float) * (size_t)n), *y = (float *)malloc(sizeof(float) * (size_t)n);
    float d = INFINITY;
    if (x && y && vlm_to_host_f32(c, a, x) == VLM_OK && vlm_to_host_f32(c, b, y) == VLM_OK) d = test_max_abs_diff(x, y, n);
    free(x);
    free(y);
    return d;
}

/* Writes dir/model.safetensors (experts transposed to [E, in, out]) and
 * dir/config.json from the case's model. */
static int t3_write_old_layout(const char *dir) {
    vlm_safetensors st = {0};
    vlm_error err = {0};
    if (vlm_st_open(&st, T3_DIR "/model/model.safetensors", &err) != VLM_OK) return 0;
    const char **names = (const char **)calloc((size_t)st.n_entries, sizeof *names);
    vlm_tensor *ts = (vlm_tensor *)calloc((size_t)st.n_entries, sizeof *ts);
    const vlm_tensor **tp = (const vlm_tensor **)calloc((size_t)st.n_entries, sizeof *tp);
    float **bufs = (float **)calloc((size_t)st.n_entries, sizeof *bufs);
    int n_moved = 0;
    for (int i = 0; i < st.n_entries; i++) {
        names[i] = st.entries[i].name;
        ts[i] = vlm_st_tensor(&st.entries[i]);
        tp[i] = &ts[i];
        if (strstr(names[i], ".mlp.experts.") && ts[i].ndim == 3 && ts[i].dtype == VLM_F32) {
            int64_t E = ts[i].shape[0], R = ts[i].shape[1], C = ts[i].shape[2];
            bufs[i] = (float *)malloc(sizeof(float) * (size_t)(E * R * C));
            for (int64_t e = 0; e < E; e++)
                for (int64_t r = 0; r < R; r++)
                    for (int64_t c = 0; c < C; c++)
                        bufs[i][(e * C + c) * R + r] = ((const float *)ts[i].data)[(e * R + r) * C + c];
            ts[i] = vlm_tensor_make(VLM_F32, 3, (const int64_t[]){E, C, R}, bufs[i]);
            n_moved++;
        }
    }
    char path[512];
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    int ok = n_moved == 4 && vlm_st_write(path, st.n_entries, names, tp, &err) == VLM_OK;
    for (int i = 0; i < st.n_entries; i++) free(bufs[i]);
    free(bufs), free(tp), free(ts), free(names);
    vlm_st_close(&st);
    FILE *in = fopen(T3_DIR "/model/config.json", "rb");
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *out = fopen(path, "wb");
    char buf[4096];
    size_t k;
    while (in && out && (k = fread(buf, 1, sizeof buf, in)) > 0) ok &= fwrite(buf, 1, k, out) == k;
    ok &= in && out;
    if (in) fclose(in);
    if (out) fclose(out);
    return ok;
}

/* The golden prompt's logits from a model directory. */
static vlm_tensor *t3_case_logits(vlm_model *m, vlm_seq *s, vlm_safetensors *in) {
    const vlm_st_entry *ie = vlm_st_find(in, "input_ids");
    vlm_tensor it = vlm_st_tensor(ie);
    int n = (int)vlm_nelem(&it);
    int32_t ids[256];
    for (int i = 0; i < n && i < 256; i++) ids[i] = (int32_t)vlm_get_i64(&it, i);
    vlm_features f = {0};
    for (int i = 0; i < in->n_entries; i++)
        if (strcmp(in->entries[i].name, "input_ids")) {
            f.names[f.n] = in->entries[i].name;
            f.tensors[f.n++] = vlm_st_tensor(&in->entries[i]);
        }
    vlm_vision_out vo;
    vlm_tensor *lg = NULL;
    if (n > 256 || m->arch->encode(m, &s->c, &f, &vo) != VLM_OK || m->arch->forward(m, s, ids, n, &vo, &f, 1, &lg) != VLM_OK)
        return NULL;
    return lg;
}

static void t3_old_layout(vlm_model *m, vlm_safetensors *in) {
    char dir[] = "/tmp/vlm_q3_XXXXXX", path[512];
    CHECK(test_mkdtemp(dir) != NULL, "mkdtemp");
    CHECK(t3_write_old_layout(dir), "writing the transformers 4 layout checkpoint");
    vlm_error err = {0};
    vlm_model *old = NULL;
    vlm_model_params mp = {.n_threads = 2};
    CHECK(vlm_model_load(&old, dir, &mp, &err) == VLM_OK, "load old layout: %s", err.msg);
    vlm_seq a, b;
    if (old && vlm_seq_init(&a, m, 64, 0, VLM_F32, &err) == VLM_OK) {
        if (vlm_seq_init(&b, old, 64, 0, VLM_F32, &err) == VLM_OK) {
            float d = t3_max_diff(&a.c, t3_case_logits(m, &a, in), t3_case_logits(old, &b, in));
            CHECK(d < 1e-5f, "transformers 4 expert layout: logits differ by %g", d);
            vlm_seq_free(&b);
        }
        vlm_seq_free(&a);
    }
    vlm_model_free(old);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/config.json", dir);
    remove(path);
    test_rmdir(dir);
}

int main(void) {
    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = 2};
    vlm_safetensors in = {0};
    CHECK(vlm_model_load(&m, T3_DIR "/model", &mp, &err) == VLM_OK, "load: %s", err.msg);
    CHECK(vlm_st_open(&in, T3_DIR "/inputs.safetensors", &err) == VLM_OK, "inputs: %s", err.msg);
    const vlm_st_entry *pe = m ? vlm_st_find(&in, "pixel_values") : NULL, *ge = m ? vlm_st_find(&in, "image_grid_thw") : NULL;
    CHECK(pe && ge && pe->ndim == 2 && pe->dtype == VLM_F32, "inputs have pixel_values f32 and image_grid_thw");
    if (!pe || !ge) goto done;
    vlm_tensor g0 = vlm_st_tensor(ge);
    int64_t rows = pe->shape[0], D = pe->shape[1], gh = vlm_get_i64(&g0, 1), gw = vlm_get_i64(&g0, 2);
    int64_t tokens = gh * gw / 4; /* merged tokens per frame */
    /* two temporal patches: the case's pixels, then a changed copy */
    float *px = (float *)malloc(sizeof(float) * (size_t)(2 * rows * D));
    for (int64_t i = 0; i < rows * D; i++) {
        px[i] = ((const float *)pe->data)[i];
        px[rows * D + i] = -0.5f * px[i] + 0.1f;
    }
    int64_t img_grid[6] = {1, gh, gw, 1, gh, gw}, vid_grid[3] = {2, gh, gw};
    int32_t types_i[256], types_v[256];
    vlm_features fi = {.n = 3, .names = {"pixel_values", "image_grid_thw", "mm_token_type_ids"}};
    fi.tensors[0] = vlm_tensor_make(VLM_F32, 2, (const int64_t[]){2 * rows, D}, px);
    fi.tensors[1] = vlm_tensor_make(VLM_I64, 2, (const int64_t[]){2, 3}, img_grid);
    vlm_features fv = {.n = 3, .names = {"pixel_values_videos", "video_grid_thw", "mm_token_type_ids"}};
    fv.tensors[0] = fi.tensors[0];
    fv.tensors[1] = vlm_tensor_make(VLM_I64, 2, (const int64_t[]){1, 3}, vid_grid);

    /* prompt: text, <vs> frame <ve>, text (a timestamp), <vs> frame <ve>, text */
    int n = 0;
    int32_t ids_i[256], ids_v[256];
    unsigned long long r = 5;
    for (int part = 0; part < 5; part++) {
        int len = part % 2 ? (int)tokens + 2 : part == 2 ? 3 : 5;
        for (int j = 0; j < len; j++, n++) {
            int32_t t = (int32_t)(3 + (test_randf(&r) + 1.0f) * 400.0f);
            int vis = part % 2;
            ids_i[n] = ids_v[n] = vis ? (j == 0 ? 1002 : j == len - 1 ? 1003 : 0) : t;
            if (vis && j > 0 && j < len - 1) { ids_i[n] = m->image_token_id; ids_v[n] = m->video_token_id; }
        }
    }

    for (int i = 0; i < n; i++) {
        types_i[i] = ids_i[i] == m->image_token_id;
        types_v[i] = ids_v[i] == m->video_token_id ? 2 : 0;
    }
    fi.tensors[2] = vlm_tensor_make(VLM_I32, 2, (const int64_t[]){1, n}, types_i);
    fv.tensors[2] = vlm_tensor_make(VLM_I32, 2, (const int64_t[]){1, n}, types_v);

    vlm_seq si, sv, sc;
    CHECK(vlm_seq_init(&si, m, 128, 0, VLM_F32, &err) == VLM_OK, "seq: %s", err.msg);
    CHECK(vlm_seq_init(&sv, m, 128, 0, VLM_F32, &err) == VLM_OK, "seq: %s", err.msg);
    CHECK(vlm_seq_init(&sc, m, 128, 0, VLM_F32, &err) == VLM_OK, "seq: %s", err.msg);
    vlm_vision_out oi = {0}, ov = {0}, oc = {0};
    CHECK(m->arch->encode(m, &si.c, &fi, &oi) == VLM_OK, "encode images: %s", si.c.err.msg);
    CHECK(m->arch->encode(m, &sv.c, &fv, &ov) == VLM_OK, "encode video: %s", sv.c.err.msg);
    CHECK(oi.embeds && oi.embeds->shape[0] == 2 * tokens && oi.n_image_tokens == 2 * tokens, "image rows");
    CHECK(ov.embeds && ov.embeds->shape[0] == 2 * tokens && ov.n_image_tokens == 0, "video rows");
    CHECK(oi.n_extra == 2 && ov.n_extra == 2, "DeepStack features: %d, %d", oi.n_extra, ov.n_extra);
    float d = t3_max_diff(&si.c, oi.embeds, ov.embeds);
    CHECK(d < 1e-5f, "video embeddings differ from the images' by %g", d);
    for (int i = 0; i < oi.n_extra && i < ov.n_extra; i++) {
        d = t3_max_diff(&si.c, oi.extra[i], ov.extra[i]);
        CHECK(d < 1e-5f, "DeepStack %d: video differs from images by %g", i, d);
    }
    /* the two frames really differ, so a mixed-up order would show */
    d = t3_max_diff(&si.c, vlm_slice(&si.c, oi.embeds, 0, 0, tokens), vlm_slice(&si.c, oi.embeds, 0, tokens, tokens));
    CHECK(d > 1e-2f, "the two frames give different embeddings (%g)", d);

    vlm_tensor *li = NULL, *lv = NULL, *l1 = NULL, *l2 = NULL;
    CHECK(m->arch->forward(m, &si, ids_i, n, &oi, &fi, 1, &li) == VLM_OK, "forward images: %s", si.c.err.msg);
    CHECK(m->arch->forward(m, &sv, ids_v, n, &ov, &fv, 1, &lv) == VLM_OK, "forward video: %s", sv.c.err.msg);
    d = t3_max_diff(&si.c, li, lv);
    CHECK(d < 1e-4f, "video prompt logits differ from the image prompt's by %g", d);
    CHECK(si.rope_pos == sv.rope_pos && si.rope_pos == 5 + 2 + 3 + 2 + 5 + 2 * ((gh > gw ? gh : gw) / 2),
          "next M-RoPE position %lld / %lld", (long long)si.rope_pos, (long long)sv.rope_pos);

    /* the same prompt in two calls: the text before the first image, then the rest */
    CHECK(m->arch->encode(m, &sc.c, &fi, &oc) == VLM_OK, "encode: %s", sc.c.err.msg);
    CHECK(m->arch->forward(m, &sc, ids_i, 5, NULL, NULL, 1, &l1) == VLM_OK, "chunk 1: %s", sc.c.err.msg);
    d = t3_max_diff(&sc.c, l1, li ? vlm_slice(&si.c, li, 0, 0, 5) : NULL);
    CHECK(d < 1e-4f, "chunk 1 logits differ by %g", d);
    CHECK(m->arch->forward(m, &sc, ids_i + 5, n - 5, &oc, &fi, 1, &l2) == VLM_OK, "chunk 2: %s", sc.c.err.msg);
    d = t3_max_diff(&sc.c, l2, li ? vlm_slice(&si.c, li, 0, 5, n - 5) : NULL);
    CHECK(d < 1e-4f, "chunk 2 logits differ by %g", d);

    vlm_seq_free(&si);
    vlm_seq_free(&sv);
    vlm_seq_free(&sc);
    free(px);
    t3_old_layout(m, &in);
done:
    vlm_st_close(&in);
    vlm_model_free(m);
    TEST_MAIN_END();
}
