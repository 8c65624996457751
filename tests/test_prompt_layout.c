/* Prompt assembly per family: a user turn with the case's image/video is
 * rendered with the real checkpoint's chat template, its placeholders expanded
 * with the case's grid / tile / soft-token counts, and the special-token
 * sequence (with counts) compared with the prompt_layout that transformers'
 * processor produced for tests/data/tok/cases/<case>.json. Where the real
 * tokenizer is at hand (Qwen, SmolVLM) the expanded prompt is also tokenized
 * and the placeholder ids counted. */
#include "vlm.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DATA "tests/data/tok/"

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 20, n = 0, r;
    char *p = malloc(cap);
    while (p && (r = fread(p + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 >= cap) { cap *= 2; p = realloc(p, cap); }
    }
    if (p) p[n] = 0;
    *len = n;
    return p;
}

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t n;
    char *p = read_all(f, &n);
    fclose(f);
    return p;
}

static vlm_tokenizer *load_tok(const char *name) {
    char cmd[256], cfgp[256];
    snprintf(cmd, sizeof cmd, "gzip -dc " DATA "%s/tokenizer.json.gz", name);
    FILE *f = popen(cmd, "r");
    if (!f) return NULL;
    size_t len;
    char *json = read_all(f, &len);
    pclose(f);
    snprintf(cfgp, sizeof cfgp, DATA "%s/tokenizer_config.json", name);
    char *cfg = read_file(cfgp);
    vlm_tokenizer *t = NULL;
    vlm_error err = {0};
    CHECK(vlm_tokenizer_load_mem(&t, json, len, cfg, cfg ? strlen(cfg) : 0, &err) == VLM_OK, "%s: %s", name, err.msg);
    free(json);
    free(cfg);
    return t;
}

/* Special-token run: name and count. */
typedef struct run { char name[48]; int count; } run;

static void push_run(run *r, int *n, const char *name) {
    if (*n > 0 && !strcmp(r[*n - 1].name, name)) { r[*n - 1].count++; return; }
    if (*n >= 512) return;
    snprintf(r[*n].name, sizeof r[*n].name, "%s", name);
    r[*n].count = 1;
    (*n)++;
}

/* The layout's special tokens in the family's naming (text and "\n" dropped). */
static int layout_runs(const vlm_json *layout, run *r, const char *const *alias) {
    int n = 0;
    for (int i = 0; i < layout->n; i++) {
        const char *s = layout->items[i].str;
        char name[64];
        int count = 1;
        const char *star = strrchr(s, '*');
        size_t l = star && star != s ? (size_t)(star - s) : strlen(s);
        if (star && star != s) count = atoi(star + 1);
        snprintf(name, sizeof name, "%.*s", (int)l, s);
        if (!strcmp(name, "text") || !strcmp(name, "\n")) continue;
        for (int k = 0; alias && alias[k]; k += 2)
            if (!strcmp(name, alias[k])) snprintf(name, sizeof name, "%s", alias[k + 1]);
        for (int c = 0; c < count; c++) push_run(r, &n, name);
    }
    return n;
}

/* Runs of the given special-token strings in an expanded prompt; other text ignored. */
static int prompt_runs(const char *p, const char *const *names, run *r) {
    int n = 0;
    for (size_t i = 0; p[i];) {
        size_t best = 0;
        const char *bn = NULL;
        for (int k = 0; names[k]; k++) {
            size_t l = strlen(names[k]);
            if (l > best && !strncmp(p + i, names[k], l)) { best = l; bn = names[k]; }
        }
        int a, b, m = 0;
        if (!bn && sscanf(p + i, "<row_%d_col_%d>%n", &a, &b, &m) == 2 && m > 0) {
            char tmp[48];
            snprintf(tmp, sizeof tmp, "%.*s", m, p + i);
            push_run(r, &n, tmp);
            i += (size_t)m;
            continue;
        }
        if (bn) { push_run(r, &n, bn); i += best; }
        else i++;
    }
    return n;
}

static int count_id(const vlm_tokens *t, int32_t id) {
    int c = 0;
    for (int i = 0; i < t->n; i++) c += t->ids[i] == id;
    return c;
}

static void run_case(const char *name, vlm_tokenizer *qwen, vlm_tokenizer *smol) {
    char path[256];
    snprintf(path, sizeof path, DATA "cases/%s.json", name);
    vlm_error err = {0};
    vlm_json *c = vlm_json_load(path, &err);
    CHECK(c != NULL, "%s: %s", path, err.msg);
    if (!c) return;
    const char *mt = vlm_json_str(vlm_json_path(c, "config.model_type"), "");
    int fam = vlm_prompt_family_from_model_type(mt);
    CHECK(fam >= 0, "%s: unknown model_type %s", name, mt);
    vlm_media_info media[8];
    memset(media, 0, sizeof media);
    int n_media = 0;
    vlm_chat_part parts[10];
    int n_parts = 0;
    const char *tpl_name = NULL;
    static const char *const qwen_names[] = {"<|vision_start|>", "<|image_pad|>", "<|video_pad|>", "<|vision_end|>", NULL};
    static const char *const ivl_names[] = {"<img>", "<IMG_CONTEXT>", "</img>", NULL};
    static const char *const idf_names[] = {"<fake_token_around_image>", "<global-img>", "<image>", NULL};
    static const char *const gem_names[] = {"<bos>", "<|image>", "<|image|>", "<image|>", NULL};
    static const char *const gem_alias[] = {"<boi>", "<|image>", "<image_soft_token>", "<|image|>", "<eoi>", "<image|>", NULL};
    const char *const *names = NULL, *const *alias = NULL;
    if (fam == VLM_FAMILY_QWEN || fam == VLM_FAMILY_QWEN3) {
        int merge = (int)vlm_json_int(vlm_json_path(c, "config.vision_spatial_merge_size"), 2);
        const vlm_json *g = vlm_json_get(c, "image_grid_thw");
        int video = 0;
        if (!g) { g = vlm_json_get(c, "video_grid_thw"); video = 1; }
        static double ts[8][64];
        for (int i = 0; g && i < g->n && n_media < 8; i++) {
            const vlm_json *t = &g->items[i];
            int64_t tt = vlm_json_int(vlm_json_at(t, 0), 0), h = vlm_json_int(vlm_json_at(t, 1), 0), w = vlm_json_int(vlm_json_at(t, 2), 0);
            media[n_media].is_video = video;
            media[n_media].n_tokens = (int)(tt * h * w / (merge * merge));
            media[n_media].n_frames = (int)tt;
            for (int f = 0; f < tt && f < 64; f++) ts[n_media][f] = f;
            media[n_media].timestamps = ts[n_media];
            n_media++;
            parts[n_parts].type = video ? VLM_PART_VIDEO : VLM_PART_IMAGE;
            parts[n_parts++].text = NULL;
        }
        tpl_name = fam == VLM_FAMILY_QWEN ? "Qwen2.5-VL-3B-Instruct" : "Qwen3-VL-4B-Instruct";
        names = qwen_names;
    } else if (fam == VLM_FAMILY_INTERNVL) {
        int img = (int)vlm_json_int(vlm_json_path(c, "config.vision_image_size"), 448);
        int patch = (int)vlm_json_int(vlm_json_path(c, "config.vision_patch_size"), 14);
        double ds = vlm_json_num(vlm_json_path(c, "config.downsample_ratio"), 0.5);
        int per_side = (int)((img / patch) * ds + 0.5);
        media[0].n_tokens = per_side * per_side;
        media[0].n_tiles = (int)vlm_json_int(vlm_json_get(c, "num_tiles"), 1);
        n_media = 1;
        names = ivl_names;
    } else if (fam == VLM_FAMILY_IDEFICS3) {
        media[0].rows = (int)vlm_json_int(vlm_json_get(c, "rows"), 0);
        media[0].cols = (int)vlm_json_int(vlm_json_get(c, "cols"), 0);
        /* image_seq_len from the config: (image_size / patch)^2 / scale_factor^2 */
        int img = (int)vlm_json_int(vlm_json_path(c, "config.vision_image_size"), 512);
        int patch = (int)vlm_json_int(vlm_json_path(c, "config.vision_patch_size"), 16);
        int sf = (int)vlm_json_int(vlm_json_path(c, "config.scale_factor"), 4);
        media[0].n_tokens = (img / patch) * (img / patch) / (sf * sf);
        CHECK(media[0].n_tokens == vlm_json_int(vlm_json_get(c, "image_seq_len"), -1), "%s: image_seq_len", name);
        n_media = 1;
        parts[n_parts].type = VLM_PART_IMAGE;
        parts[n_parts++].text = NULL;
        tpl_name = "SmolVLM-256M-Instruct";
        names = idf_names;
    } else if (fam == VLM_FAMILY_GEMMA4) {
        const vlm_json *ns = vlm_json_get(c, "num_soft_tokens");
        for (int i = 0; ns && i < ns->n && n_media < 8; i++) {
            media[n_media++].n_tokens = (int)vlm_json_int(&ns->items[i], 0);
            parts[n_parts].type = VLM_PART_IMAGE;
            parts[n_parts++].text = NULL;
        }
        tpl_name = "gemma-4-E2B-it";
        names = gem_names;
        alias = gem_alias;
    }
    parts[n_parts].type = VLM_PART_TEXT;
    parts[n_parts++].text = "Describe this.";
    char *prompt = NULL;
    if (tpl_name) {
        snprintf(path, sizeof path, DATA "templates/%s.jinja", tpl_name);
        char *tpl = read_file(path);
        CHECK(tpl != NULL, "missing %s", path);
        vlm_chat_msg msg = {"user", NULL, parts, n_parts};
        vlm_chat_opts o = {0};
        o.add_generation_prompt = 1;
        o.bos_token = fam == VLM_FAMILY_GEMMA4 ? "<bos>" : fam == VLM_FAMILY_IDEFICS3 ? "<|im_start|>" : "";
        CHECK(vlm_chat_render(tpl, &msg, 1, &o, &prompt, &err) == VLM_OK, "%s: %s", name, err.msg);
        free(tpl);
    } else {
        /* InternVL-hf: the processor expands each <IMG_CONTEXT> the template wrote. */
        prompt = strdup("<|im_start|>user\n<IMG_CONTEXT>\nDescribe this.<|im_end|>\n<|im_start|>assistant\n");
    }
    char *expanded = NULL;
    vlm_error_clear(&err);
    CHECK(prompt && vlm_expand_media((vlm_prompt_family)fam, prompt, media, n_media, &expanded, &err) == VLM_OK, "%s: expand: %s", name, err.msg);
    static run want[512], got[512];
    int nw = layout_runs(vlm_json_get(c, "prompt_layout"), want, alias);
    int ng = expanded ? prompt_runs(expanded, names, got) : 0;
    int same = nw == ng;
    for (int i = 0; same && i < nw; i++) same = !strcmp(want[i].name, got[i].name) && want[i].count == got[i].count;
    CHECK(same, "%s: special-token layout differs", name);
    if (!same) {
        for (int i = 0; i < nw || i < ng; i++)
            fprintf(stderr, "  %-28s %4d | %-28s %4d\n", i < nw ? want[i].name : "", i < nw ? want[i].count : 0,
                    i < ng ? got[i].name : "", i < ng ? got[i].count : 0);
    }
    /* With the real tokenizer: the expanded placeholders are single special tokens. */
    vlm_tokenizer *tok = fam == VLM_FAMILY_QWEN || fam == VLM_FAMILY_QWEN3 ? qwen : fam == VLM_FAMILY_IDEFICS3 ? smol : NULL;
    if (tok && expanded) {
        vlm_tokens ids = {0};
        CHECK(vlm_tokenize(tok, expanded, strlen(expanded), 0, &ids, &err) == VLM_OK, "%s", err.msg);
        int want_pad = 0;
        const char *pad = fam == VLM_FAMILY_IDEFICS3 ? "<image>" : media[0].is_video ? "<|video_pad|>" : "<|image_pad|>";
        for (int i = 0; i < nw; i++) if (!strcmp(want[i].name, pad)) want_pad += want[i].count;
        int got_pad = count_id(&ids, vlm_token_id(tok, pad));
        CHECK(want_pad > 0 && got_pad == want_pad, "%s: %d %s ids, want %d", name, got_pad, pad, want_pad);
        if (fam == VLM_FAMILY_IDEFICS3) {
            int32_t r11 = vlm_token_id(tok, "<row_1_col_1>");
            CHECK(r11 >= 0 && count_id(&ids, r11) == 1, "%s: <row_1_col_1> is not one token", name);
        }
        /* The same ids through vlm_build_prompt (template -> expansion -> ids). */
        if (tpl_name) {
            snprintf(path, sizeof path, DATA "templates/%s.jinja", tpl_name);
            char *tpl = read_file(path);
            vlm_tokenizer_set_chat_template(tok, tpl, &err);
            free(tpl);
            vlm_chat_msg msg = {"user", NULL, parts, n_parts};
            vlm_tokens ids2 = {0};
            CHECK(vlm_build_prompt(tok, (vlm_prompt_family)fam, &msg, 1, media, n_media, 1, &ids2, &err) == VLM_OK, "%s: %s", name, err.msg);
            CHECK(ids2.n == ids.n && !memcmp(ids2.ids, ids.ids, (size_t)ids.n * sizeof *ids.ids), "%s: vlm_build_prompt ids differ", name);
            vlm_tokens_free(&ids2);
        }
        vlm_tokens_free(&ids);
    }
    printf("%s: %d special-token runs %s\n", name, nw, same ? "identical" : "DIFFER");
    free(prompt);
    free(expanded);
    vlm_json_free(c);
}

static void test_errors(void) {
    vlm_media_info m = {0};
    m.n_tokens = 4;
    char *out = NULL;
    vlm_error err = {0};
    CHECK(vlm_expand_media(VLM_FAMILY_QWEN, "a <|image_pad|> b <|image_pad|>", &m, 1, &out, &err) == VLM_ERR_ARG, "too few media");
    vlm_error_clear(&err);
    CHECK(vlm_expand_media(VLM_FAMILY_QWEN, "no placeholder", &m, 1, &out, &err) == VLM_ERR_ARG, "too many media");
    vlm_error_clear(&err);
    m.is_video = 1;
    CHECK(vlm_expand_media(VLM_FAMILY_QWEN, "<|image_pad|>", &m, 1, &out, &err) == VLM_ERR_ARG, "video for an image placeholder");
    /* Video variants. */
    double ts[2] = {0.5, 2.5};
    m.n_tokens = 6;
    m.n_frames = 2;
    m.timestamps = ts;
    vlm_error_clear(&err);
    CHECK(vlm_expand_media(VLM_FAMILY_QWEN3, "x<|vision_start|><|video_pad|><|vision_end|>y", &m, 1, &out, &err) == VLM_OK, "%s", err.msg);
    CHECK(out && !strcmp(out, "x<0.5 seconds><|vision_start|><|video_pad|><|video_pad|><|video_pad|><|vision_end|>"
                              "<2.5 seconds><|vision_start|><|video_pad|><|video_pad|><|video_pad|><|vision_end|>y"), "qwen3 video: %s", out);
    free(out);
    m.n_tokens = 2;
    CHECK(vlm_expand_media(VLM_FAMILY_GEMMA4, "<|video|>", &m, 1, &out, &err) == VLM_OK, "%s", err.msg);
    CHECK(out && !strcmp(out, "00:00 <|image><|video|><|video|><image|> 00:02 <|image><|video|><|video|><image|>"), "gemma4 video: %s", out);
    free(out);
    CHECK(vlm_expand_media(VLM_FAMILY_INTERNVL, "<video>", &m, 1, &out, &err) == VLM_OK, "%s", err.msg);
    CHECK(out && !strcmp(out, "Frame1: <img><IMG_CONTEXT><IMG_CONTEXT></img>\nFrame2: <img><IMG_CONTEXT><IMG_CONTEXT></img>"), "internvl video: %s", out);
    free(out);
    /* Qwen3-VL timestamps: mean of each temporal pair, the last index repeated for an odd count. */
    int idx[5] = {0, 12, 24, 36, 48};
    double tsq[3];
    CHECK(vlm_qwen3_video_timestamps(idx, 5, 24.0, 2, tsq) == 3, "timestamp count");
    CHECK(tsq[0] == 0.25 && tsq[1] == 1.25 && tsq[2] == 2.0, "timestamps %g %g %g", tsq[0], tsq[1], tsq[2]);
    m.is_video = 0;
    m.rows = m.cols = 0;
    CHECK(vlm_expand_media(VLM_FAMILY_IDEFICS3, "<image>", &m, 1, &out, &err) == VLM_OK, "%s", err.msg);
    CHECK(out && !strcmp(out, "<fake_token_around_image><global-img><image><image><fake_token_around_image>"), "idefics3 single: %s", out);
    free(out);
}

static void test_from_features(void) {
    int64_t grid[6] = {1, 10, 14, 1, 12, 6}, vgrid[3] = {2, 6, 8};
    int64_t s2[2] = {2, 3}, s1[1] = {1};
    vlm_features f = {0};
    f.names[0] = "image_grid_thw"; f.tensors[0] = vlm_tensor_make(VLM_I64, 2, s2, grid);
    f.names[1] = "video_grid_thw"; f.tensors[1] = vlm_tensor_make(VLM_I64, 2, (int64_t[]){1, 3}, vgrid);
    f.n = 2;
    vlm_media_info m[4];
    int n = 0;
    vlm_error err = {0};
    CHECK(vlm_media_from_features(VLM_FAMILY_QWEN, &f, 2, 0, m, 4, &n, &err) == VLM_OK && n == 3, "qwen media: %s", err.msg);
    CHECK(m[0].n_tokens == 35 && m[1].n_tokens == 18 && !m[1].is_video && m[2].is_video && m[2].n_tokens == 24 && m[2].n_frames == 2,
          "qwen media counts %d %d %d", m[0].n_tokens, m[1].n_tokens, m[2].n_tokens);
    int64_t tiles[1] = {7};
    vlm_features g = {0};
    g.names[0] = "num_patches"; g.tensors[0] = vlm_tensor_make(VLM_I64, 1, s1, tiles); g.n = 1;
    CHECK(vlm_media_from_features(VLM_FAMILY_INTERNVL, &g, 0, 4, m, 4, &n, &err) == VLM_OK && n == 1 && m[0].n_tiles == 7 && m[0].n_tokens == 4,
          "internvl media");
    CHECK(vlm_media_from_features(VLM_FAMILY_GEMMA4, &g, 0, 0, m, 4, &n, &err) == VLM_ERR_ARG, "gemma4 without soft tokens");
}

int main(void) {
    TEST_MAIN_NEEDS_SHELL("the tokenizers are read through gzip");
    test_from_features();
    vlm_tokenizer *qwen = load_tok("qwen3"), *smol = load_tok("smolvlm");
    static const char *const cases[] = {"qwen2_5_vl", "qwen2_5_vl_multi", "qwen2_5_vl_video", "qwen2_5_vl_bf16", "qwen3_vl",
                                        "qwen3_vl_moe", "internvl", "internvl_qwen3", "idefics3", "gemma4", "gemma4_moe", NULL};
    for (int i = 0; cases[i]; i++) run_case(cases[i], qwen, smol);
    test_errors();
    vlm_tokenizer_free(qwen);
    vlm_tokenizer_free(smol);
    TEST_MAIN_END();
}
