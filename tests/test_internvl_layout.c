/* InternVL checkpoint layouts: converts the transformers-layout golden
 * cases (tests/golden/internvl, internvl_qwen3) into the original
 * InternVLChatModel layout (fused attn.qkv, ls1/ls2, norm1/norm2, mlp1.*,
 * llm_config, select_layer, ps_version, IMG_CONTEXT in added_tokens.json),
 * written with vlm_st_write, and checks that both load to the same model:
 * vision embeddings, logits and greedy tokens against the reference and
 * against each other. Also checks the no-final-norm variant (the real
 * checkpoints: use_mean_pooling=true / no vision_model.layernorm) in both
 * layouts, and the bicubic position-embedding path on a smaller tile.
 *
 * `test_internvl_layout --convert HF_MODEL_DIR OUT_DIR` writes the
 * original-layout copy (used to make tests/golden/internvl*_orig). */
#include "vlm.h"
#include "test_util.h"

#include <errno.h>

/* ------------------------------------------------------------------ JSON out */

static void tj_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fprintf(f, "\\%c", *s);
        else if ((unsigned char)*s < 0x20) fprintf(f, "\\u%04x", *s);
        else fputc(*s, f);
    }
    fputc('"', f);
}

static void tj_write(FILE *f, const vlm_json *j) {
    switch (j->type) {
    case VLM_JSON_NULL: fputs("null", f); break;
    case VLM_JSON_BOOL: fputs(j->num != 0 ? "true" : "false", f); break;
    case VLM_JSON_NUMBER: fprintf(f, "%.17g", j->num); break;
    case VLM_JSON_STRING: tj_str(f, j->str); break;
    case VLM_JSON_ARRAY:
    case VLM_JSON_OBJECT:
        fputc(j->type == VLM_JSON_ARRAY ? '[' : '{', f);
        for (int i = 0; i < j->n; i++) {
            if (i) fputc(',', f);
            if (j->type == VLM_JSON_OBJECT) { tj_str(f, j->items[i].key); fputc(':', f); }
            tj_write(f, &j->items[i]);
        }
        fputc(j->type == VLM_JSON_ARRAY ? ']' : '}', f);
        break;
    }
}

/* Members of obj except those named in skip (NULL-terminated), comma-led. */
static void tj_members(FILE *f, const vlm_json *obj, const char *const *skip) {
    for (int i = 0; i < obj->n; i++) {
        int drop = 0;
        for (const char *const *s = skip; *s; s++) drop |= !strcmp(obj->items[i].key, *s);
        if (drop) continue;
        fputc(',', f);
        tj_str(f, obj->items[i].key);
        fputc(':', f);
        tj_write(f, &obj->items[i]);
    }
}

/* ------------------------------------------------------------------ conversion */

typedef struct {
    int n;
    char *names[512];
    vlm_tensor t[512];
    void *own[512];
} tconv;

static void tc_add(tconv *o, const char *name, vlm_tensor t, void *own) {
    if (o->n >= 512) return;
    o->names[o->n] = strdup(name);
    o->t[o->n] = t;
    o->own[o->n++] = own;
}

static void tc_free(tconv *o) {
    for (int i = 0; i < o->n; i++) { free(o->names[i]); free(o->own[i]); }
    o->n = 0;
}

/* Rounds every f32 tensor to bf16 (as a bf16 checkpoint stores them). */
static void tc_to_bf16(tconv *o) {
    for (int i = 0; i < o->n; i++) {
        vlm_tensor *t = &o->t[i];
        if (t->dtype != VLM_F32) continue;
        int64_t n = vlm_nelem(t);
        uint16_t *b = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(n ? n : 1));
        for (int64_t k = 0; k < n; k++) b[k] = vlm_f32_to_bf16(((const float *)t->data)[k]);
        *t = vlm_tensor_make(VLM_BF16, t->ndim, t->shape, b);
        free(o->own[i]);
        o->own[i] = b;
    }
}

static int tc_write(tconv *o, const char *path) {
    const vlm_tensor *ts[512];
    for (int i = 0; i < o->n; i++) ts[i] = &o->t[i];
    vlm_error err = {0};
    vlm_status s = vlm_st_write(path, o->n, (const char *const *)o->names, ts, &err);
    if (s) fprintf(stderr, "write %s: %s\n", path, err.msg);
    return s == VLM_OK;
}

/* Replaces the first `from` in s by `to` (in place, s has room). */
static int t_sub(char *s, const char *from, const char *to) {
    char *p = strstr(s, from);
    if (!p) return 0;
    char rest[512];
    snprintf(rest, sizeof rest, "%s", p + strlen(from));
    sprintf(p, "%s%s", to, rest);
    return 1;
}

/* HF name -> original name ("" = fused into attn.qkv elsewhere). */
static void t_orig_name(const char *hf, char *out) {
    strcpy(out, hf);
    if (!strncmp(out, "model.vision_tower.", 19)) memmove(out, out + 6, strlen(out + 6) + 1);
    if (!strncmp(out, "model.multi_modal_projector.", 28)) memmove(out, out + 6, strlen(out + 6) + 1);
    if (!strncmp(out, "model.language_model.", 21)) { t_sub(out, "model.language_model.", "language_model.model."); return; }
    if (!strcmp(out, "lm_head.weight")) { strcpy(out, "language_model.lm_head.weight"); return; }
    if (!strncmp(out, "language_model.", 15)) return;
    if (t_sub(out, "multi_modal_projector.layer_norm", "mlp1.0") || t_sub(out, "multi_modal_projector.linear_1", "mlp1.1") ||
        t_sub(out, "multi_modal_projector.linear_2", "mlp1.3"))
        return;
    t_sub(out, "vision_tower.", "vision_model.");
    t_sub(out, "encoder.layer.", "encoder.layers.");
    t_sub(out, "cls_token", "class_embedding");
    t_sub(out, "position_embeddings", "position_embedding");
    t_sub(out, "patch_embeddings.projection", "patch_embedding");
    t_sub(out, "lambda_1", "ls1");
    t_sub(out, "lambda_2", "ls2");
    t_sub(out, "attention.projection_layer", "attn.proj");
    if (strstr(out, "attention.q_proj") || strstr(out, "attention.k_proj") || strstr(out, "attention.v_proj")) { out[0] = 0; return; }
    t_sub(out, "attention.", "attn.");
    t_sub(out, "layernorm_before", "norm1");
    t_sub(out, "layernorm_after", "norm2");
}

static vlm_json *t_load_json(const char *dir, const char *file) {
    char p[1024];
    snprintf(p, sizeof p, "%s/%s", dir, file);
    vlm_error err = {0};
    vlm_json *j = vlm_json_load(p, &err);
    if (!j) fprintf(stderr, "%s: %s\n", p, err.msg);
    return j;
}

/* Writes the original-layout model of the HF model in src to dst (created).
 * drop_post_norm: leave out the final vision LayerNorm (as real checkpoints). */
static int t_convert(const char *src, const char *dst, int drop_post_norm, int bf16) {
    vlm_safetensors st;
    vlm_error err = {0};
    if (vlm_st_open(&st, src, &err) != VLM_OK) { fprintf(stderr, "%s\n", err.msg); return 0; }
    vlm_json *cfg = t_load_json(src, "config.json");
    if (!cfg) { vlm_st_close(&st); return 0; }
    vlm_make_dir(dst);
    tconv o = {0};
    int ok = 1;
    for (int i = 0; i < st.n_entries && ok; i++) {
        const vlm_st_entry *e = &st.entries[i];
        char name[512];
        t_orig_name(e->name, name);
        if (drop_post_norm && strstr(name, "vision_model.layernorm.")) continue;
        if (name[0]) { tc_add(&o, name, vlm_st_tensor(e), NULL); continue; }
        /* q_proj.X: fuse q, k, v rows into attn.qkv.X */
        const char *qp = strstr(e->name, "attention.q_proj");
        if (!qp) continue;
        const vlm_st_entry *parts[3] = {e, NULL, NULL};
        char other[512];
        for (int k = 1; k < 3; k++) {
            strcpy(other, e->name);
            other[qp - e->name + 10] = "qkv"[k];
            parts[k] = vlm_st_find(&st, other);
            ok &= parts[k] && parts[k]->nbytes == e->nbytes && parts[k]->dtype == e->dtype;
        }
        if (!ok) break;
        char *buf = (char *)malloc(3 * e->nbytes);
        for (int k = 0; k < 3; k++) memcpy(buf + k * e->nbytes, parts[k]->data, e->nbytes);
        vlm_tensor t = vlm_st_tensor(e);
        t.shape[0] *= 3;
        t = vlm_tensor_make(t.dtype, t.ndim, t.shape, buf);
        t_orig_name(e->name, name); /* "" */
        strcpy(name, e->name);
        t_sub(name, "vision_tower.", "vision_model.");
        t_sub(name, "model.vision_model.", "vision_model.");
        t_sub(name, "encoder.layer.", "encoder.layers.");
        t_sub(name, "attention.q_proj", "attn.qkv");
        tc_add(&o, name, t, buf);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dst);
    if (bf16) tc_to_bf16(&o);
    ok = ok && tc_write(&o, path);
    tc_free(&o);
    vlm_st_close(&st);

    /* config.json as InternVLChatModel writes it (InternVL 2.5/3 llm_configs carry
     * dynamic NTK RoPE, factor 2: the default RoPE within max_position_embeddings) */
    const vlm_json *tc = vlm_json_get(cfg, "text_config"), *vc = vlm_json_get(cfg, "vision_config");
    snprintf(path, sizeof path, "%s/config.json", dst);
    FILE *f = ok && tc && vc ? fopen(path, "w") : NULL;
    if (!f) { vlm_json_free(cfg); return 0; }
    const char *lm = vlm_json_str(vlm_json_get(tc, "model_type"), "qwen2");
    int64_t side = vlm_json_int(vlm_json_at(vlm_json_get(vc, "image_size"), 0), 448);
    fprintf(f, "{\"architectures\":[\"InternVLChatModel\"],\"model_type\":\"internvl_chat\",\"downsample_ratio\":%.17g,"
               "\"ps_version\":\"v2\",\"select_layer\":%lld,\"template\":\"internvl2_5\",\"force_image_size\":%lld,"
               "\"dynamic_image_size\":true,\"use_thumbnail\":true,\"min_dynamic_patch\":1,\"max_dynamic_patch\":6,",
            vlm_json_num(vlm_json_get(cfg, "downsample_ratio"), 0.5),
            (long long)vlm_json_int(vlm_json_get(cfg, "vision_feature_layer"), -1), (long long)side);
    fprintf(f, "\"llm_config\":{\"architectures\":[\"%s\"],\"rope_theta\":%.17g,"
               "\"rope_scaling\":{\"factor\":2.0,\"rope_type\":\"dynamic\",\"type\":\"dynamic\"}",
            !strcmp(lm, "qwen3") ? "Qwen3ForCausalLM" : "Qwen2ForCausalLM",
            vlm_json_num(vlm_json_path(tc, "rope_parameters.rope_theta"), 10000.0));
    static const char *const skip_t[] = {"rope_parameters", "layer_types", "dtype", NULL};
    tj_members(f, tc, skip_t);
    fprintf(f, "},\"vision_config\":{\"architectures\":[\"InternVisionModel\"],\"model_type\":\"intern_vit_6b\","
               "\"image_size\":%lld,\"patch_size\":%lld,\"qk_normalization\":%s,\"qkv_bias\":%s,\"drop_path_rate\":0.0,"
               "\"use_flash_attn\":false",
            (long long)side, (long long)vlm_json_int(vlm_json_at(vlm_json_get(vc, "patch_size"), 0), 14),
            vlm_json_bool(vlm_json_get(vc, "use_qk_norm"), 0) ? "true" : "false",
            vlm_json_bool(vlm_json_get(vc, "attention_bias"), 0) ? "true" : "false");
    static const char *const skip_v[] = {"image_size", "patch_size", "use_qk_norm", "attention_bias", "model_type",
                                         "use_mean_pooling", "layer_scale_init_value", "use_absolute_position_embeddings",
                                         "use_mask_token", "projection_dropout", NULL};
    tj_members(f, vc, skip_v);
    fputs("}}\n", f);
    fclose(f);
    /* The IMG_CONTEXT id comes from the tokenizer files in this layout. */
    snprintf(path, sizeof path, "%s/added_tokens.json", dst);
    f = fopen(path, "w");
    if (f) {
        int64_t img = vlm_json_int(vlm_json_get(cfg, "image_token_id"), 151667);
        fprintf(f, "{\"<IMG_CONTEXT>\":%lld,\"<img>\":%lld,\"</img>\":%lld}\n", (long long)img, (long long)img + 1,
                (long long)img + 2);
        fclose(f);
    }
    vlm_json_free(cfg);
    return f != NULL;
}

/* HF-layout copy without the final vision LayerNorm (use_mean_pooling=true). */
static int t_hf_no_post_norm(const char *src, const char *dst) {
    vlm_safetensors st;
    vlm_error err = {0};
    if (vlm_st_open(&st, src, &err) != VLM_OK) return 0;
    vlm_make_dir(dst);
    tconv o = {0};
    for (int i = 0; i < st.n_entries; i++)
        if (!strstr(st.entries[i].name, "vision_tower.layernorm.")) tc_add(&o, st.entries[i].name, vlm_st_tensor(&st.entries[i]), NULL);
    char path[1024];
    snprintf(path, sizeof path, "%s/model.safetensors", dst);
    int ok = tc_write(&o, path);
    tc_free(&o);
    vlm_st_close(&st);
    vlm_json *cfg = t_load_json(src, "config.json");
    snprintf(path, sizeof path, "%s/config.json", dst);
    FILE *f = ok && cfg ? fopen(path, "w") : NULL;
    if (f) {
        fputc('{', f);
        int first = 1;
        for (int i = 0; i < cfg->n; i++) {
            const vlm_json *it = &cfg->items[i];
            if (!first) fputc(',', f);
            first = 0;
            tj_str(f, it->key);
            fputc(':', f);
            if (strcmp(it->key, "vision_config")) { tj_write(f, it); continue; }
            fputs("{\"use_mean_pooling\":true", f);
            static const char *const skip[] = {"use_mean_pooling", NULL};
            tj_members(f, it, skip);
            fputc('}', f);
        }
        fputs("}\n", f);
        fclose(f);
    }
    vlm_json_free(cfg);
    return f != NULL;
}

/* ------------------------------------------------------------------ running */

typedef struct {
    int ok;
    float vis_err, logit_err;
    int gen_match, n_gen;
    float *logits; /* [T, V] */
    int64_t n_logits;
} t_run;

static float t_max_diff_tensor(vlm_compute *c, const vlm_tensor *got, const vlm_st_entry *want) {
    if (!got || !want) return INFINITY;
    int64_t n = vlm_nelem(got);
    vlm_tensor w = vlm_st_tensor(want);
    if (n != vlm_nelem(&w)) return INFINITY;
    float *g = (float *)malloc(sizeof(float) * (size_t)n);
    float m = INFINITY;
    if (g && vlm_to_host_f32(c, got, g) == VLM_OK) {
        m = 0;
        for (int64_t i = 0; i < n; i++) {
            float d = fabsf(g[i] - vlm_get_f32(&w, i));
            if (!(d <= m)) m = d != d ? INFINITY : d;
        }
    }
    free(g);
    return m;
}

static int32_t t_argmax(const float *x, int64_t n) {
    int64_t b = 0;
    for (int64_t i = 1; i < n; i++) if (x[i] > x[b]) b = i;
    return (int32_t)b;
}

/* Loads model_dir, runs the case's inputs (pixel_values: full-size tiles, or
 * the top-left `crop` pixels of each when crop > 0) and compares with the
 * case's expected outputs. */
static t_run t_run_case(const char *model_dir, const char *case_dir, int crop) {
    t_run r = {0};
    r.vis_err = r.logit_err = INFINITY;
    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = 2};
    char path[1024];
    vlm_safetensors in = {0}, ex = {0};
    if (vlm_model_load(&m, model_dir, &mp, &err) != VLM_OK) { fprintf(stderr, "load %s: %s\n", model_dir, err.msg); return r; }
    snprintf(path, sizeof path, "%s/inputs.safetensors", case_dir);
    if (vlm_st_open(&in, path, &err) != VLM_OK) { fprintf(stderr, "%s\n", err.msg); vlm_model_free(m); return r; }
    snprintf(path, sizeof path, "%s/expected.safetensors", case_dir);
    if (vlm_st_open(&ex, path, &err) != VLM_OK) { fprintf(stderr, "%s\n", err.msg); vlm_st_close(&in); vlm_model_free(m); return r; }
    vlm_features f = {0};
    float *cropped = NULL;
    for (int i = 0; i < in.n_entries && f.n < VLM_MAX_FEATURES; i++) {
        if (!strcmp(in.entries[i].name, "input_ids")) continue;
        f.names[f.n] = in.entries[i].name;
        f.tensors[f.n] = vlm_st_tensor(&in.entries[i]);
        vlm_tensor *t = &f.tensors[f.n++];
        if (crop > 0 && !strcmp(in.entries[i].name, "pixel_values") && t->ndim == 4) {
            int64_t N = t->shape[0], C = t->shape[1], H = t->shape[2], W = t->shape[3];
            cropped = (float *)malloc(sizeof(float) * (size_t)(N * C * crop * crop));
            for (int64_t a = 0; a < N * C; a++)
                for (int64_t y = 0; y < crop; y++)
                    for (int64_t x = 0; x < crop; x++)
                        cropped[(a * crop + y) * crop + x] = vlm_get_f32(t, (a * H + y) * W + x);
            *t = vlm_tensor_make(VLM_F32, 4, (const int64_t[]){N, C, crop, crop}, cropped);
        }
    }
    const vlm_st_entry *ids_e = vlm_st_find(&in, "input_ids");
    vlm_tensor idt = vlm_st_tensor(ids_e);
    int n = (int)vlm_nelem(&idt);
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n + 16));
    for (int i = 0; i < n; i++) ids[i] = (int32_t)vlm_get_i64(&idt, i);
    vlm_seq s;
    if (vlm_seq_init(&s, m, n + 32, 0, VLM_F32, &err) != VLM_OK) { fprintf(stderr, "%s\n", err.msg); goto done; }
    vlm_vision_out vo;
    vlm_tensor *logits = NULL;
    if (m->arch->encode(m, &s.c, &f, &vo) != VLM_OK) { fprintf(stderr, "encode: %s\n", s.c.err.msg); goto done_seq; }
    if (crop > 0) { /* smaller tiles: only the vision tower, which must give one row per 2x2 patch group */
        r.ok = vo.embeds && vo.embeds->shape[0] == f.tensors[0].shape[0] * (crop / 28) * (crop / 28);
        goto done_seq;
    }
    r.vis_err = t_max_diff_tensor(&s.c, vo.embeds, vlm_st_find(&ex, "vision_embeds"));
    if (m->arch->forward(m, &s, ids, n, &vo, &f, 1, &logits) != VLM_OK) { fprintf(stderr, "forward: %s\n", s.c.err.msg); goto done_seq; }
    r.logit_err = t_max_diff_tensor(&s.c, logits, vlm_st_find(&ex, "logits"));
    r.n_logits = vlm_nelem(logits);
    r.logits = (float *)malloc(sizeof(float) * (size_t)r.n_logits);
    vlm_to_host_f32(&s.c, logits, r.logits);
    int64_t V = m->vocab_size;
    int32_t next = t_argmax(r.logits + (int64_t)(n - 1) * V, V);
    vlm_compute_reset(&s.c);
    const vlm_st_entry *ge = vlm_st_find(&ex, "generated_ids");
    vlm_tensor gt = ge ? vlm_st_tensor(ge) : (vlm_tensor){0};
    r.n_gen = ge ? (int)vlm_nelem(&gt) : 0;
    float *row = (float *)malloc(sizeof(float) * (size_t)V);
    for (int k = 0; k < r.n_gen; k++) {
        r.gen_match += next == (int32_t)vlm_get_i64(&gt, k);
        if (k + 1 == r.n_gen) break;
        if (m->arch->forward(m, &s, &next, 1, NULL, NULL, 0, &logits) != VLM_OK) break;
        vlm_to_host_f32(&s.c, logits, row);
        next = t_argmax(row, V);
        vlm_compute_reset(&s.c);
    }
    free(row);
    r.ok = 1;
done_seq:
    vlm_seq_free(&s);
done:
    free(ids);
    free(cropped);
    vlm_st_close(&in);
    vlm_st_close(&ex);
    vlm_model_free(m);
    return r;
}

/* End to end from the case's image.png: the project's GotOcr2 preprocessing
 * (settings from case.json, transformers 5's default torchvision backend)
 * then the vision tower, against the reference's pixel_values and
 * vision_embeds. */
static void t_from_image(const char *name, const char *case_dir) {
    char path[700];
    vlm_error err = {0};
    snprintf(path, sizeof path, "%s/case.json", case_dir);
    vlm_json *cj = vlm_json_load(path, &err);
    vlm_image_processor ip;
    vlm_image img = {0};
    vlm_features f = {0};
    vlm_model *m = NULL;
    vlm_safetensors in = {0}, ex = {0};
    vlm_model_params mp = {.n_threads = 2};
    int ok = cj && vlm_image_processor_from_json(&ip, vlm_json_get(cj, "image_processor"), &err) == VLM_OK;
    ip.backend = VLM_BACKEND_TORCHVISION;
    snprintf(path, sizeof path, "%s/image.png", case_dir);
    ok = ok && vlm_image_load(&img, path, &err) == VLM_OK && vlm_image_preprocess(&ip, &img, 1, &f, &err) == VLM_OK;
    snprintf(path, sizeof path, "%s/model", case_dir);
    ok = ok && vlm_model_load(&m, path, &mp, &err) == VLM_OK;
    snprintf(path, sizeof path, "%s/inputs.safetensors", case_dir);
    ok = ok && vlm_st_open(&in, path, &err) == VLM_OK;
    snprintf(path, sizeof path, "%s/expected.safetensors", case_dir);
    ok = ok && vlm_st_open(&ex, path, &err) == VLM_OK;
    CHECK(ok, "%s: image preprocessing setup: %s", name, err.msg);
    if (ok) {
        const vlm_tensor *pv = vlm_features_get(&f, "pixel_values");
        vlm_tensor want = vlm_st_tensor(vlm_st_find(&in, "pixel_values"));
        float px_err = INFINITY;
        if (pv && vlm_nelem(pv) == vlm_nelem(&want)) {
            px_err = 0;
            for (int64_t i = 0; i < vlm_nelem(pv); i++) px_err = fmaxf(px_err, fabsf(vlm_get_f32(pv, i) - vlm_get_f32(&want, i)));
        }
        vlm_compute c;
        vlm_compute_init(&c, m->be);
        vlm_vision_out vo;
        float v_err = m->arch->encode(m, &c, &f, &vo) == VLM_OK
                          ? t_max_diff_tensor(&c, vo.embeds, vlm_st_find(&ex, "vision_embeds")) : INFINITY;
        printf("%s from image.png: pixel_values %.3g, vision_embeds %.3g from the reference\n", name, px_err, v_err);
        CHECK(px_err <= 1e-5f && v_err <= 1e-3f, "%s: end to end from image.png", name);
        vlm_compute_free(&c);
    }
    vlm_st_close(&in);
    vlm_st_close(&ex);
    vlm_model_free(m);
    vlm_image_features_free(&f);
    vlm_image_free(&img);
    vlm_json_free(cj);
}

static float t_diff(const t_run *a, const t_run *b) {
    if (!a->logits || !b->logits || a->n_logits != b->n_logits) return INFINITY;
    return test_max_abs_diff(a->logits, b->logits, (long)a->n_logits);
}

static void t_case(const char *name) {
    char case_dir[512], hf[600], tmp[] = "/tmp/vlm_ivl_XXXXXX", orig[600], orig2[600], orig3[600], hf2[600];
    snprintf(case_dir, sizeof case_dir, "tests/golden/%s", name);
    snprintf(hf, sizeof hf, "%s/model", case_dir);
    CHECK(test_mkdtemp(tmp) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(orig, sizeof orig, "%s/orig", tmp);
    snprintf(orig2, sizeof orig2, "%s/orig_nonorm", tmp);
    snprintf(hf2, sizeof hf2, "%s/hf_nonorm", tmp);
    snprintf(orig3, sizeof orig3, "%s/orig_bf16", tmp);
    CHECK(t_convert(hf, orig, 0, 0), "%s: convert", name);
    CHECK(t_convert(hf, orig2, 1, 0), "%s: convert without final norm", name);
    CHECK(t_convert(hf, orig3, 0, 1), "%s: convert to bf16", name);
    CHECK(t_hf_no_post_norm(hf, hf2), "%s: HF copy without final norm", name);

    t_run a = t_run_case(hf, case_dir, 0), b = t_run_case(orig, case_dir, 0);
    printf("%s: HF layout vision %.3g logits %.3g tokens %d/%d; original layout vision %.3g logits %.3g tokens %d/%d; "
           "layouts differ by %.3g\n",
           name, a.vis_err, a.logit_err, a.gen_match, a.n_gen, b.vis_err, b.logit_err, b.gen_match, b.n_gen, t_diff(&a, &b));
    CHECK(a.ok && a.vis_err <= 1e-3f && a.logit_err <= 1e-3f && a.n_gen == 12 && a.gen_match == 12, "%s: HF layout vs reference", name);
    CHECK(b.ok && b.vis_err <= 1e-3f && b.logit_err <= 1e-3f && b.n_gen == 12 && b.gen_match == 12, "%s: original layout vs reference", name);
    CHECK(t_diff(&a, &b) <= 1e-5f, "%s: layouts give different logits", name);

    /* The real checkpoints' form: no final vision norm. Differs from the reference, same in both layouts. */
    t_run c = t_run_case(hf2, case_dir, 0), d = t_run_case(orig2, case_dir, 0);
    printf("%s without final norm: logits differ from reference by %.3g (HF) / %.3g (original); layouts differ by %.3g\n",
           name, c.logit_err, d.logit_err, t_diff(&c, &d));
    CHECK(c.ok && d.ok && t_diff(&c, &d) <= 1e-5f, "%s: no-final-norm layouts differ", name);
    CHECK(c.logit_err > 1e-3f, "%s: dropping the final norm should change the output", name);

    /* bf16 weights: no reference for them, but rounding the weights must
     * move the logits only a little (reading bf16 wrongly would not). */
    t_run h = t_run_case(orig3, case_dir, 0);
    printf("%s with bf16 weights: vision %.3g logits %.3g from the f32 reference, tokens %d/%d\n", name, h.vis_err,
           h.logit_err, h.gen_match, h.n_gen);
    CHECK(h.ok && h.vis_err < 0.05f && h.logit_err < 0.1f, "%s: bf16 weights far from the f32 reference", name);
    free(h.logits);

    /* Tiles of 28 px (2x2 patches) take bicubic-resized position embeddings. */
    t_run e = t_run_case(hf, case_dir, 28), g = t_run_case(orig, case_dir, 28);
    CHECK(e.ok && g.ok, "%s: 28-px tiles should run (got %d %d)", name, e.ok, g.ok);
    free(a.logits); free(b.logits); free(c.logits); free(d.logits); free(e.logits); free(g.logits);

    t_from_image(name, case_dir);

    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (TEST_SHELL) CHECK(system(cmd) == 0, "cleanup");
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--convert")) return t_convert(argv[2], argv[3], 0, 0) ? 0 : 1;
    t_case("internvl");
    t_case("internvl_qwen3");
    TEST_MAIN_END();
}
