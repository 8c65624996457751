/* The high-level API (api/vlm_api.h): chat template, image placeholders, cache
 * reuse across turns, sampling and streaming. */
#include "api/vlm_api.h"
#include "api/vision_cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct vlm_engine {
    vlm_model *model;
    vlm_tokenizer *tok;
    vlm_image_processor proc;
    int family;                 /* vlm_prompt_family, -1 if unknown */
    int tokens_per_tile;        /* InternVL / Idefics3: placeholder tokens per tile */
    int32_t eos[16];
    int n_eos;
    vlm_limits limits;          /* resolved: every field set */
    vlm_vcache *vcache;         /* vision-encoder outputs by image */
    uint64_t proc_hash;         /* the processor's settings: part of each image's key */
};

/* One image of the conversation and what the prompt needs to know of it. */
typedef struct {
    vlm_image img;
    int have_info;
    vlm_media_info info;
    int64_t n_tokens;           /* placeholder tokens it takes in the prompt */
    uint64_t hash;              /* of its pixels: which image the cache holds */
} api_image;

typedef struct {
    char *role;
    int n_parts;
    vlm_chat_part *parts;       /* text parts own their strings */
} api_msg;

struct vlm_session {
    vlm_engine *e;
    vlm_seq seq;
    int n_ctx;
    api_msg *msgs;
    int n_msgs, cap_msgs;
    api_image *images;
    int n_images, cap_images;
    int32_t *ids;               /* tokens in the KV cache, [seq.n_past] */
    int cap_ids;
    int *bound_n;               /* call boundaries: n_past and rope_pos after each forward call */
    int64_t *bound_rope;
    int n_bound, cap_bound;
    float *logits;
    int parse_special;          /* vlm_session_params.parse_special */
    int msg_open;               /* the last message was begun by vlm_session_begin_message */
    uint64_t *cached_hash;      /* the images whose tokens the cache holds, in order */
    int n_cached, cap_cached;
};

static double api_now(void) { return vlm_time_s(); }

const char *vlm_version(void) { return VLM_VERSION_STRING; }

/* Grows *p (of *cap elements of size sz) to hold n. */
static int api_grow(void **p, int *cap, int n, size_t sz) {
    if (n <= *cap) return 1;
    int nc = *cap ? *cap : 8;
    while (nc < n) nc *= 2;
    void *q = realloc(*p, (size_t)nc * sz);
    if (!q) return 0;
    *p = q;
    *cap = nc;
    return 1;
}

/* ------------------------------------------------------------------ engine */

static int api_tokens_per_tile(const vlm_json *cfg, int family) {
    const vlm_json *vc = vlm_json_get(cfg, "vision_config");
    int64_t size = vlm_json_int(vlm_json_get(vc, "image_size"), 0);
    const vlm_json *sz = vlm_json_get(vc, "image_size");
    if (sz && sz->type == VLM_JSON_ARRAY) size = vlm_json_int(vlm_json_at(sz, 0), 0);
    int64_t patch = vlm_json_int(vlm_json_get(vc, "patch_size"), 14);
    const vlm_json *ps = vlm_json_get(vc, "patch_size");
    if (ps && ps->type == VLM_JSON_ARRAY) patch = vlm_json_int(vlm_json_at(ps, 0), 14);
    if (size <= 0 || patch <= 0) return 0;
    int64_t side = size / patch;
    if (family == VLM_FAMILY_INTERNVL) {
        double r = vlm_json_num(vlm_json_get(cfg, "downsample_ratio"), 0.5);
        int64_t s2 = (int64_t)(side * r + 0.5);
        return (int)(s2 * s2);
    }
    int64_t sf = vlm_json_int(vlm_json_get(cfg, "scale_factor"), 2);
    return sf > 0 ? (int)(side * side / (sf * sf)) : 0;
}

/* Original-format InternVL checkpoints (InternVLChatModel) preprocess in
 * their own code, not with their preprocessor_config.json (a 448 center crop
 * of CLIPFeatureExtractor): dynamic tiles of force_image_size (or the vision
 * image_size) between min_dynamic_patch and max_dynamic_patch with a
 * thumbnail, bicubic, ImageNet mean/std -- the GotOcr2 processor with those
 * settings, as transformers' InternVL conversion writes it. */
static void api_internvl_chat_proc(vlm_image_processor *p, const vlm_json *cfg) {
    vlm_image_processor_defaults(p, VLM_IMAGE_INTERNVL);
    const vlm_json *vc = vlm_json_get(cfg, "vision_config");
    const vlm_json *is = vlm_json_get(vc, "image_size");
    int64_t size = is && is->type == VLM_JSON_ARRAY ? vlm_json_int(vlm_json_at(is, 0), 448) : vlm_json_int(is, 448);
    size = vlm_json_int(vlm_json_get(cfg, "force_image_size"), size);
    p->tile_height = p->tile_width = (int)size;
    const vlm_json *dyn = vlm_json_get(cfg, "dynamic_image_size");
    p->crop_to_patches = dyn && dyn->type == VLM_JSON_BOOL ? (int)dyn->num : 1;
    p->min_patches = (int)vlm_json_int(vlm_json_get(cfg, "min_dynamic_patch"), 1);
    p->max_patches = (int)vlm_json_int(vlm_json_get(cfg, "max_dynamic_patch"), 12);
    static const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(p->image_mean, mean, sizeof mean);
    memcpy(p->image_std, std, sizeof std);
    p->resample = VLM_RESAMPLE_BICUBIC;
}

vlm_status vlm_engine_open(vlm_engine **out, const char *dir, const vlm_engine_params *p, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    *out = NULL;
    if (p && p->device && strcmp(p->device, "cpu"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "device '%s' is not available in this build (cpu only)", p->device);
    vlm_engine *e = (vlm_engine *)calloc(1, sizeof *e);
    if (!e) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    e->limits = vlm_limits_resolve(p ? p->limits : NULL);
    vlm_model_params mp = {.n_threads = p ? p->n_threads : 0, .kernels = p ? p->kernels : NULL,
                           .compute = p ? p->compute : NULL};
    vlm_status s = VLM_OK;
    if (p && p->quant && strcmp(p->quant, "none") && vlm_quant_from_name(p->quant, &mp.quant))
        s = vlm_error_set(err, VLM_ERR_ARG, "unknown quantization '%s' (none, q8_0 or q4_0)", p->quant);
    if (p) {
        mp.quant_vision = p->quant_vision;
        mp.random_weights = p->random_weights;
        mp.random_dtype = VLM_BF16;
        mp.progress = p->load_progress;
        mp.progress_user = p->load_progress_user;
    }
    if (s == VLM_OK) s = vlm_model_load(&e->model, dir, &mp, err);
    if (s == VLM_OK) s = vlm_tokenizer_load(&e->tok, dir, err);
    if (s == VLM_OK && !strcmp(vlm_json_str(vlm_json_get(e->model->config, "model_type"), ""), "internvl_chat"))
        api_internvl_chat_proc(&e->proc, e->model->config);
    else if (s == VLM_OK)
        s = vlm_image_processor_load(&e->proc, dir, err);
    if (s != VLM_OK) { vlm_engine_close(e); return s; }
    const char *mt = vlm_json_str(vlm_json_get(e->model->config, "model_type"), "");
    e->family = vlm_prompt_family_from_model_type(mt);
    if (e->family < 0) {
        vlm_engine_close(e);
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "no prompt format for model_type '%s'", mt);
    }
    e->tokens_per_tile = api_tokens_per_tile(e->model->config, e->family);
    int mib = p && p->vision_cache_mib ? p->vision_cache_mib : 256;
    e->proc_hash = vlm_hash64(&e->proc, sizeof e->proc, 0);
    if (!(e->vcache = vlm_vcache_new(mib > 0 ? (size_t)mib << 20 : 0))) {
        vlm_engine_close(e);
        return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    }
    for (int i = 0; i < e->model->n_eos && e->n_eos < 16; i++) e->eos[e->n_eos++] = e->model->eos_ids[i];
    vlm_tokenizer_info ti = vlm_tokenizer_get_info(e->tok);
    if (ti.eos_id >= 0 && e->n_eos < 16) e->eos[e->n_eos++] = ti.eos_id;
    *out = e;
    return VLM_OK;
}

void vlm_engine_close(vlm_engine *e) {
    if (!e) return;
    vlm_tokenizer_free(e->tok);
    vlm_model_free(e->model);
    vlm_vcache_free(e->vcache);
    free(e);
}

vlm_model *vlm_engine_model(vlm_engine *e) { return e->model; }
const vlm_tokenizer *vlm_engine_tokenizer(const vlm_engine *e) { return e->tok; }

/* ------------------------------------------------------------------ session */

vlm_status vlm_session_new(vlm_engine *e, const vlm_session_params *p, vlm_session **out, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    *out = NULL;
    vlm_session *s = (vlm_session *)calloc(1, sizeof *s);
    if (!s) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    s->e = e;
    s->n_ctx = p && p->n_ctx > 0 ? p->n_ctx : 4096;
    s->parse_special = p && p->parse_special;
    vlm_dtype kv = p && p->kv_dtype == VLM_F16 ? VLM_F16 : VLM_F32;
    /* Prefill calls hold at most max_batch tokens, but an image always goes
     * whole into one call: Gemma 4 (whose sliding-window cache is sized by
     * max_batch) gets room for its largest image. */
    int max_batch = 512;
    if (e->family == VLM_FAMILY_GEMMA4 && e->proc.max_soft_tokens > max_batch) max_batch = e->proc.max_soft_tokens;
    if (max_batch > s->n_ctx) max_batch = s->n_ctx;
    s->logits = (float *)malloc(sizeof(float) * (size_t)e->model->vocab_size);
    vlm_status st = s->logits ? vlm_seq_init(&s->seq, e->model, s->n_ctx, max_batch, kv, err)
                              : vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    if (st != VLM_OK) { free(s->logits); free(s); return st; }
    if (p && p->system && vlm_session_add_text(s, p->system, err) != VLM_OK) { vlm_session_free(s); return err->code; }
    if (p && p->system) { free(s->msgs[0].role); s->msgs[0].role = vlm_strdup("system"); }
    *out = s;
    return VLM_OK;
}

static void api_free_msgs(vlm_session *s, int from) {
    for (int i = from; i < s->n_msgs; i++) {
        for (int k = 0; k < s->msgs[i].n_parts; k++) free((char *)s->msgs[i].parts[k].text);
        free(s->msgs[i].parts);
        free(s->msgs[i].role);
    }
    s->n_msgs = from;
}

void vlm_session_free(vlm_session *s) {
    if (!s) return;
    api_free_msgs(s, 0);
    for (int i = 0; i < s->n_images; i++) vlm_image_free(&s->images[i].img);
    free(s->msgs);
    free(s->images);
    free(s->ids);
    free(s->bound_n);
    free(s->bound_rope);
    free(s->cached_hash);
    free(s->logits);
    vlm_seq_free(&s->seq);
    free(s);
}

static void api_forget_conversation(vlm_session *s, int keep_system) {
    int keep = keep_system && s->n_msgs > 0 && !strcmp(s->msgs[0].role, "system") ? 1 : 0;
    api_free_msgs(s, keep);
    for (int i = 0; i < s->n_images; i++) vlm_image_free(&s->images[i].img);
    s->n_images = 0;
    s->msg_open = 0;
}

void vlm_session_reset(vlm_session *s) {
    api_forget_conversation(s, 1);
    vlm_session_forget_cache(s);
}

void vlm_session_restart(vlm_session *s) { api_forget_conversation(s, 0); }

const float *vlm_session_logits(const vlm_session *s) { return s->logits; }

const int32_t *vlm_session_tokens(const vlm_session *s, int *n) {
    *n = s->seq.n_past;
    return s->ids;
}

void vlm_session_forget_cache(vlm_session *s) {
    s->n_bound = 0;
    s->n_cached = 0;
    vlm_seq_reset(&s->seq);
}

static api_msg *api_new_msg(vlm_session *s, const char *role, vlm_error *err) {
    char *r = vlm_strdup(role);
    if (!r || !api_grow((void **)&s->msgs, &s->cap_msgs, s->n_msgs + 1, sizeof(api_msg))) {
        free(r);
        vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        return NULL;
    }
    api_msg *m = &s->msgs[s->n_msgs++];
    memset(m, 0, sizeof *m);
    m->role = r;
    return m;
}

/* The message the next parts go into: the last one if it is the user's or was begun. */
static api_msg *api_user_msg(vlm_session *s, vlm_error *err) {
    if (s->n_msgs > 0 && (s->msg_open || !strcmp(s->msgs[s->n_msgs - 1].role, "user"))) return &s->msgs[s->n_msgs - 1];
    return api_new_msg(s, "user", err);
}

vlm_status vlm_session_begin_message(vlm_session *s, const char *role, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    if (!role || (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")))
        return vlm_error_set(err, VLM_ERR_ARG, "unknown role '%s' (system, user or assistant)", role ? role : "(null)");
    if (!api_new_msg(s, role, err)) return err->code;
    s->msg_open = 1;
    return VLM_OK;
}

/* The session's copy of a text: special token strings in it marked as text
 * unless the session parses them (vlm_protect_specials). */
static char *api_text_copy(const vlm_session *s, const char *text, size_t len) {
    char *t = (char *)malloc(len + 1);
    if (!t) return NULL;
    memcpy(t, text, len);
    t[len] = 0;
    if (s->parse_special) return t;
    char *p = vlm_protect_specials(s->e->tok, t);
    free(t);
    return p;
}

static vlm_status api_add_part(vlm_session *s, vlm_part_type type, const char *text, vlm_error *err) {
    api_msg *m = api_user_msg(s, err);
    if (!m) return err->code;
    vlm_chat_part *np = (vlm_chat_part *)realloc(m->parts, sizeof(vlm_chat_part) * (size_t)(m->n_parts + 1));
    char *copy = text ? api_text_copy(s, text, strlen(text)) : NULL;
    if (!np || (text && !copy)) { free(copy); if (np) m->parts = np; return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    m->parts = np;
    m->parts[m->n_parts].type = type;
    m->parts[m->n_parts++].text = copy;
    return VLM_OK;
}

static vlm_status api_add_image(vlm_session *s, vlm_image *img, vlm_error *err) {
    if (!api_grow((void **)&s->images, &s->cap_images, s->n_images + 1, sizeof(api_image))) {
        vlm_image_free(img);
        return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    }
    vlm_status st = api_add_part(s, VLM_PART_IMAGE, NULL, err);
    if (st != VLM_OK) { vlm_image_free(img); return st; }
    api_image *a = &s->images[s->n_images++];
    memset(a, 0, sizeof *a);
    a->img = *img;
    a->hash = vlm_hash64(NULL, 0, ((uint64_t)img->width << 32) | (uint32_t)img->height);
    size_t row = (size_t)img->width * 3, stride = img->stride ? (size_t)img->stride : row;
    for (int y = 0; y < img->height; y++) a->hash = vlm_hash64(img->rgb + (size_t)y * stride, row, a->hash);
    return VLM_OK;
}

vlm_status vlm_session_add_image_file(vlm_session *s, const char *path, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    vlm_image img = {0};
    vlm_status st = vlm_image_load_limited(&img, path, s->e->limits.image_pixels, err);
    return st == VLM_OK ? api_add_image(s, &img, err) : st;
}

vlm_status vlm_session_add_image_rgb(vlm_session *s, const uint8_t *rgb, int width, int height, int stride,
                                     vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    vlm_image img = {0};
    vlm_status st = vlm_image_check_pixels(width, height, s->e->limits.image_pixels, err);
    if (st != VLM_OK) return st;
    st = vlm_image_from_pixels(&img, rgb, width, height, 3, stride, err);
    return st == VLM_OK ? api_add_image(s, &img, err) : st;
}

vlm_status vlm_session_add_text(vlm_session *s, const char *text, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    return api_add_part(s, VLM_PART_TEXT, text, err);
}

vlm_generate_params vlm_generate_default(void) {
    vlm_generate_params p = {.sampling = vlm_sampling_default(), .max_tokens = 256};
    return p;
}

/* ------------------------------------------------------------------ prompt */

/* What the prompt expansion needs of image k, read off its processor outputs. */
static vlm_status api_media_info(vlm_session *s, api_image *a, const vlm_features *f, int k, vlm_error *err) {
    vlm_engine *e = s->e;
    memset(&a->info, 0, sizeof a->info);
    const vlm_tensor *t;
    switch (e->family) {
    case VLM_FAMILY_QWEN:
    case VLM_FAMILY_QWEN3:
        t = vlm_features_get(f, "image_grid_thw");
        if (!t || t->shape[0] <= k) break;
        a->n_tokens = vlm_get_i64(t, k * 3) * vlm_get_i64(t, k * 3 + 1) * vlm_get_i64(t, k * 3 + 2) /
                      ((int64_t)e->proc.merge_size * e->proc.merge_size);
        a->info.n_tokens = (int)a->n_tokens;
        break;
    case VLM_FAMILY_INTERNVL:
        t = vlm_features_get(f, "num_patches");
        if (!t || t->shape[0] <= k) break;
        a->info.n_tiles = (int)vlm_get_i64(t, k);
        a->info.n_tokens = e->tokens_per_tile;
        a->n_tokens = (int64_t)a->info.n_tiles * e->tokens_per_tile;
        break;
    case VLM_FAMILY_IDEFICS3: {
        const vlm_tensor *r = vlm_features_get(f, "rows"), *c = vlm_features_get(f, "cols");
        if (!r || !c || r->shape[0] <= k) break;
        a->info.rows = (int)vlm_get_i64(r, k);
        a->info.cols = (int)vlm_get_i64(c, k);
        a->info.n_tokens = e->tokens_per_tile;
        a->n_tokens = (int64_t)(a->info.rows * a->info.cols + 1) * e->tokens_per_tile;
        break;
    }
    case VLM_FAMILY_GEMMA4:
        t = vlm_features_get(f, "num_soft_tokens_per_image");
        if (!t || t->shape[0] <= k) break;
        a->n_tokens = a->info.n_tokens = (int)vlm_get_i64(t, k);
        break;
    }
    if (a->n_tokens <= 0) return vlm_error_set(err, VLM_ERR_ARG, "the image processor gave no token count for image %d", k);
    a->have_info = 1;
    return VLM_OK;
}

/* Renders the conversation with the chat template and expands the image placeholders. */
static vlm_status api_render(vlm_session *s, vlm_tokens *ids, vlm_error *err) {
    vlm_chat_msg *msgs = (vlm_chat_msg *)calloc((size_t)s->n_msgs + 1, sizeof *msgs);
    vlm_media_info *media = (vlm_media_info *)calloc((size_t)s->n_images + 1, sizeof *media);
    char *text = NULL, *expanded = NULL;
    vlm_status st = VLM_OK;
    if (!msgs || !media) { st = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto out; }
    /* A template that knows no images (the text-only ChatML template of the
     * original-format InternVL checkpoints) gets string contents with the
     * family's placeholder where each image goes, as the model's own chat()
     * writes them ("<image>\n" before the question, expanded to <img>...</img>). */
    const char *tmpl = vlm_tokenizer_get_info(s->e->tok).chat_template;
    int flatten = tmpl && !strstr(tmpl, "image");
    static const char *const ph[] = {"<|vision_start|><|image_pad|><|vision_end|>",
                                     "<|vision_start|><|image_pad|><|vision_end|>", "<IMG_CONTEXT>\n", "<image>",
                                     "<|image|>"};
    for (int i = 0; i < s->n_msgs; i++) {
        msgs[i].role = s->msgs[i].role;
        msgs[i].parts = s->msgs[i].parts;
        msgs[i].n_parts = s->msgs[i].n_parts;
        if (!flatten) continue;
        size_t len = 1;
        for (int k = 0; k < s->msgs[i].n_parts; k++)
            len += s->msgs[i].parts[k].type == VLM_PART_TEXT ? strlen(s->msgs[i].parts[k].text) : strlen(ph[s->e->family]);
        char *c = (char *)malloc(len);
        if (!c) { st = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto out; }
        c[0] = 0;
        for (int k = 0; k < s->msgs[i].n_parts; k++)
            strcat(c, s->msgs[i].parts[k].type == VLM_PART_TEXT ? s->msgs[i].parts[k].text : ph[s->e->family]);
        msgs[i].content = c;
        msgs[i].n_parts = 0;
    }
    for (int i = 0; i < s->n_images; i++) media[i] = s->images[i].info;
    if ((st = vlm_tokenizer_chat(s->e->tok, msgs, s->n_msgs, 1, &s->e->limits, &text, err)) != VLM_OK) goto out;
    if ((st = vlm_expand_media((vlm_prompt_family)s->e->family, text, media, s->n_images, &expanded, err)) != VLM_OK)
        goto out;
    /* The template writes bos itself: no post-processor tokens (as HF's apply_chat_template). */
    st = vlm_tokenize_protected(s->e->tok, expanded, strlen(expanded), 0, ids, err);
out:
    free(text);
    free(expanded);
    for (int i = 0; msgs && i < s->n_msgs; i++) if (msgs[i].n_parts == 0) free((char *)msgs[i].content);
    free(msgs);
    free(media);
    return st;
}

static int api_is_media(const vlm_model *m, int32_t id) { return id == m->image_token_id || id == m->video_token_id; }

/* Sliding-window layers keep their keys in a ring (Gemma 4: window +
 * max_batch slots): resuming at p needs the window before p still there,
 * not overwritten by the later tokens being dropped now. */
static int api_ring_intact(const vlm_seq *q, int p) {
    for (int l = 0; l < q->kv.n_layers; l++) {
        const vlm_kv_layer *L = &q->kv.layers[l];
        if (!L->owner || L->cap >= q->n_ctx) continue;
        int w = L->cap - q->max_batch;
        for (int pos = p - w > 0 ? p - w : 0; pos < p; pos++)
            if (L->slot_pos[pos % L->cap] != pos) return 0;
    }
    return 1;
}

/* Keeps the longest cached prefix of ids that can be resumed: not inside an
 * image, and with a known RoPE position. Returns its length. */
static int api_reuse_prefix(vlm_session *s, const int32_t *ids, int n) {
    const vlm_model *m = s->e->model;
    int p = 0, cached = s->seq.n_past;
    while (p < cached && p < n - 1 && s->ids[p] == ids[p]) p++; /* at least one token left to compute */
    while (p > 0 && api_is_media(m, ids[p - 1]) && api_is_media(m, ids[p])) p--; /* not inside an image */
    while (p > 0 && p < n && api_is_media(m, ids[p])) p--;
    /* Image tokens are all alike: the prefix ends before the first image
     * that is not the one the cache holds in its place. */
    int64_t media = 0;
    int k = 0;
    for (int i = 0; i < p; i++) {
        if (!api_is_media(m, ids[i])) continue;
        if (media == 0 && (k >= s->n_cached || k >= s->n_images || s->cached_hash[k] != s->images[k].hash)) { p = i; break; }
        if (++media == s->images[k].n_tokens) { k++; media = 0; }
    }
    if (!api_ring_intact(&s->seq, p)) p = 0;
    /* RoPE position at p: from the last call boundary b <= p, plus one per text token. */
    int b = -1;
    for (int i = s->n_bound - 1; i >= 0; i--) if (s->bound_n[i] <= p) { b = i; break; }
    int64_t rope = 0;
    int from = 0;
    if (b >= 0) { rope = s->bound_rope[b]; from = s->bound_n[b]; }
    for (int i = from; i < p; i++) if (api_is_media(m, ids[i])) { p = from; break; }
    rope += p - from;
    s->n_cached = 0; /* the images before p */
    for (int i = 0, media = 0; i < p; i++)
        if (api_is_media(m, ids[i]) && ++media == s->images[s->n_cached].n_tokens) { s->n_cached++; media = 0; }
    vlm_kv_truncate(&s->seq.kv, p);
    s->seq.n_past = p;
    s->seq.rope_pos = rope;
    while (s->n_bound > 0 && s->bound_n[s->n_bound - 1] > p) s->n_bound--;
    return p;
}

/* ------------------------------------------------------------------ forward */

static vlm_status api_record(vlm_session *s, const int32_t *ids, int n, vlm_error *err) {
    if (!api_grow((void **)&s->ids, &s->cap_ids, s->seq.n_past, sizeof(int32_t)))
        return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    memcpy(s->ids + s->seq.n_past - n, ids, sizeof(int32_t) * (size_t)n);
    if (s->n_bound + 1 > s->cap_bound) { /* the two boundary arrays share one capacity */
        int nc = s->cap_bound ? 2 * s->cap_bound : 64;
        int *bn = (int *)realloc(s->bound_n, sizeof(int) * (size_t)nc);
        if (bn) s->bound_n = bn;
        int64_t *br = bn ? (int64_t *)realloc(s->bound_rope, sizeof(int64_t) * (size_t)nc) : NULL;
        if (!br) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        s->bound_rope = br;
        s->cap_bound = nc;
    }
    s->bound_n[s->n_bound] = s->seq.n_past;
    s->bound_rope[s->n_bound++] = s->seq.rope_pos;
    return VLM_OK;
}

/* Runs ids[0..n) (images among them are images[first_img..]); keeps the last logits. */
static vlm_status api_forward(vlm_session *s, const int32_t *ids, int n, int first_img, int n_img,
                              vlm_generate_stats *st, vlm_error *err) {
    vlm_model *m = s->e->model;
    vlm_compute *c = &s->seq.c;
    vlm_features f = {0};
    vlm_vision_out vis = {0};
    vlm_status rc = VLM_OK;
    int32_t *types = NULL;
    vlm_compute_reset(c);
    if (n_img > 0) {
        vlm_image *imgs = (vlm_image *)malloc(sizeof(vlm_image) * (size_t)n_img);
        uint64_t *keys = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)n_img);
        if (!imgs || !keys) { free(imgs); free(keys); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
        for (int i = 0; i < n_img; i++) {
            imgs[i] = s->images[first_img + i].img;
            keys[i] = s->images[first_img + i].hash ^ s->e->proc_hash;
        }
        double t0 = api_now();
        /* all the images' processor outputs: the decoder reads their grids */
        rc = vlm_image_preprocess(&s->e->proc, imgs, n_img, &f, err);
        types = (int32_t *)malloc(sizeof(int32_t) * (size_t)n);
        if (rc == VLM_OK && (!types || f.n >= VLM_MAX_FEATURES)) rc = vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        int n_enc = 0;
        if (rc == VLM_OK) {
            for (int i = 0; i < n; i++) types[i] = ids[i] == m->image_token_id ? 1 : ids[i] == m->video_token_id ? 2 : 0;
            f.names[f.n] = "mm_token_type_ids";
            f.tensors[f.n++] = vlm_tensor_make(VLM_I32, 2, (const int64_t[]){1, n}, types);
            rc = vlm_vcache_encode(s->e->vcache, m, c, &s->e->proc, imgs, keys, n_img, &vis, &n_enc, err);
        }
        free(imgs);
        free(keys);
        if (rc != VLM_OK) goto out;
        if (st) {
            st->vision_s += api_now() - t0;
            st->n_images_encoded += n_enc;
            st->n_images_cached += n_img - n_enc;
        }
        if (!api_grow((void **)&s->cached_hash, &s->cap_cached, first_img + n_img, sizeof(uint64_t))) {
            rc = vlm_error_set(err, VLM_ERR_OOM, "out of memory");
            goto out;
        }
        for (int i = 0; i < n_img; i++) s->cached_hash[first_img + i] = s->images[first_img + i].hash;
        s->n_cached = first_img + n_img;
    }
    vlm_tensor *lg = NULL;
    if (m->arch->forward(m, &s->seq, ids, n, n_img ? &vis : NULL, n_img ? &f : NULL, 0, &lg) != VLM_OK ||
        vlm_to_host_f32(c, lg, s->logits) != VLM_OK) {
        rc = vlm_error_set(err, c->err.code ? c->err.code : VLM_ERR_ARG, "%s", c->err.msg);
        goto out;
    }
    rc = api_record(s, ids, n, err);
out:
    if (n_img > 0) {
        f.n -= types && f.n && !strcmp(f.names[f.n - 1], "mm_token_type_ids");
        vlm_image_features_free(&f);
    }
    free(types);
    return rc;
}

/* Prefill ids[from..n) in chunks of at most max_batch tokens, cut between images. */
static vlm_status api_prefill(vlm_session *s, const int32_t *ids, int from, int n, const vlm_generate_params *p,
                              vlm_generate_stats *st, vlm_error *err) {
    const vlm_model *m = s->e->model;
    /* image index of the first image token at or after `from` */
    int img = 0;
    int64_t seen = 0;
    for (int i = 0; i < from; i++)
        if (api_is_media(m, ids[i]) && ++seen >= s->images[img].n_tokens) { img++; seen = 0; }
    int pos = from;
    while (pos < n) {
        int end = pos, n_img = 0;
        while (end < n) {
            if (api_is_media(m, ids[end])) {
                /* An image goes whole into one call: the chunk ends before it
                 * unless it fits (or the chunk would be empty). */
                if (img + n_img >= s->n_images) return vlm_error_set(err, VLM_ERR_ARG, "more image tokens than images");
                int64_t need = s->images[img + n_img].n_tokens, seen = 0;
                int e2 = end;
                while (e2 < n && seen < need) seen += api_is_media(m, ids[e2++]);
                if (end > pos && e2 - pos > s->seq.max_batch) break;
                n_img++;
                end = e2;
                continue;
            }
            if (end - pos >= s->seq.max_batch) break;
            end++;
        }
        if (p->progress) p->progress(p->progress_user, pos - from, n - from, img, s->n_images);
        vlm_status rc = api_forward(s, ids + pos, end - pos, img, n_img, st, err);
        if (rc != VLM_OK) return rc;
        img += n_img;
        pos = end;
    }
    if (p->progress) p->progress(p->progress_user, n - from, n - from, img, s->n_images);
    return VLM_OK;
}

/* ------------------------------------------------------------------ generate */

/* Longest suffix of text[0..len) that is a proper prefix of a stop string. */
static size_t api_stop_holdback(const char *text, size_t len, const char *const *stop, int n_stop) {
    size_t hold = 0;
    for (int k = 0; k < n_stop; k++) {
        size_t sl = strlen(stop[k]);
        for (size_t h = sl > 1 ? sl - 1 : 0; h > hold; h--)
            if (h <= len && !memcmp(text + len - h, stop[k], h)) { hold = h; break; }
    }
    return hold;
}

static vlm_status api_append_answer(vlm_session *s, const char *text, size_t len, vlm_error *err) {
    if (!api_grow((void **)&s->msgs, &s->cap_msgs, s->n_msgs + 1, sizeof(api_msg))) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    api_msg *m = &s->msgs[s->n_msgs];
    memset(m, 0, sizeof *m);
    m->role = vlm_strdup("assistant");
    m->parts = (vlm_chat_part *)calloc(1, sizeof(vlm_chat_part));
    char *t = api_text_copy(s, text, len);
    if (!m->role || !m->parts || !t) { free(m->role); free(m->parts); free(t); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    m->parts[0].type = VLM_PART_TEXT;
    m->parts[0].text = t;
    m->n_parts = 1;
    s->n_msgs++;
    s->msg_open = 0;
    return VLM_OK;
}

/* The compute context's abort hook while a generate runs. */
static int api_should_stop(const void *user) {
    const vlm_generate_params *p = (const vlm_generate_params *)user;
    return (p->cancel && *p->cancel) || (p->abort && p->abort(p->abort_user));
}

static int api_stop_hook(void *user) { return api_should_stop(user); }

static vlm_status api_generate(vlm_session *s, const vlm_generate_params *gp, vlm_piece_fn fn, void *user,
                               vlm_generate_stats *stats, vlm_error *err);

vlm_status vlm_session_generate(vlm_session *s, const vlm_generate_params *gp, vlm_piece_fn fn, void *user,
                                vlm_generate_stats *stats, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    vlm_generate_params p = gp ? *gp : vlm_generate_default();
    vlm_generate_stats st0, *st = stats ? stats : &st0;
    memset(st, 0, sizeof *st);
    s->seq.c.abort = api_stop_hook;
    s->seq.c.abort_user = &p;
    vlm_status rc = api_should_stop(&p) ? VLM_ERR_CANCELLED : api_generate(s, &p, fn, user, st, err);
    s->seq.c.abort = NULL;
    s->seq.c.abort_user = NULL;
    if (rc == VLM_ERR_CANCELLED || (rc == VLM_OK && st->stop == VLM_STOP_CANCEL)) {
        st->stop = VLM_STOP_CANCEL;
        vlm_error_clear(err);
        rc = vlm_error_set(err, VLM_ERR_CANCELLED, "cancelled");
    }
    return rc;
}

static vlm_status api_generate(vlm_session *s, const vlm_generate_params *gp, vlm_piece_fn fn, void *user,
                               vlm_generate_stats *st, vlm_error *err) {
    const vlm_generate_params p = *gp;
    if (s->n_msgs == 0 || strcmp(s->msgs[s->n_msgs - 1].role, "user"))
        return vlm_error_set(err, VLM_ERR_ARG, "nothing to answer: add text or an image first");
    vlm_tokens ids = {0};
    vlm_sampler smp = {0};
    vlm_detok_stream ds;
    char *answer = NULL;
    size_t alen = 0, acap = 0, emitted = 0;
    vlm_status rc = VLM_OK;
    vlm_detok_stream_init(&ds, s->e->tok, VLM_DETOK_SKIP_SPECIAL);

    /* Images new in this turn: preprocess once to learn their token counts. */
    int first_new = 0;
    while (first_new < s->n_images && s->images[first_new].have_info) first_new++;
    if (first_new < s->n_images) {
        vlm_features f = {0};
        vlm_image *imgs = (vlm_image *)malloc(sizeof(vlm_image) * (size_t)(s->n_images - first_new));
        if (!imgs) { rc = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto out; }
        for (int i = first_new; i < s->n_images; i++) imgs[i - first_new] = s->images[i].img;
        rc = vlm_image_preprocess(&s->e->proc, imgs, s->n_images - first_new, &f, err);
        free(imgs);
        for (int i = first_new; rc == VLM_OK && i < s->n_images; i++) rc = api_media_info(s, &s->images[i], &f, i - first_new, err);
        vlm_image_features_free(&f);
        if (rc != VLM_OK) goto out;
    }
    if ((rc = api_render(s, &ids, err)) != VLM_OK) goto out;
    st->n_prompt = ids.n;
    { /* the placeholders the prompt got must be the model's image tokens, as many as the images take */
        int64_t want = 0, have = 0;
        for (int i = 0; i < s->n_images; i++) want += s->images[i].n_tokens;
        for (int i = 0; i < ids.n; i++) have += api_is_media(s->e->model, ids.ids[i]);
        if (have != want) {
            rc = vlm_error_set(err, VLM_ERR_FORMAT,
                               "the prompt has %lld image tokens (id %d) but its %d images take %lld: the tokenizer's "
                               "image placeholder is not the model's image_token_id",
                               (long long)have, (int)s->e->model->image_token_id, s->n_images, (long long)want);
            goto out;
        }
    }
    if (ids.n + 1 > s->n_ctx) {
        rc = vlm_error_set(err, VLM_ERR_CONTEXT, "the prompt has %d tokens, the context holds %d", ids.n, s->n_ctx);
        goto out;
    }
    int from = api_reuse_prefix(s, ids.ids, ids.n);
    st->n_prompt_computed = ids.n - from;
    double t0 = api_now();
    if ((rc = api_prefill(s, ids.ids, from, ids.n, &p, st, err)) != VLM_OK) goto out;
    st->prefill_s = api_now() - t0 - st->vision_s;
    if ((rc = vlm_sampler_init(&smp, &p.sampling, s->e->model->vocab_size, err)) != VLM_OK) goto out;

    t0 = api_now();
    st->stop = VLM_STOP_MAX_TOKENS;
    for (int g = 0; g < p.max_tokens; g++) {
        if (api_should_stop(gp)) { st->stop = VLM_STOP_CANCEL; break; }
        int32_t tok = vlm_sample(&smp, s->logits, s->ids, s->seq.n_past);
        int is_eos = 0;
        for (int k = 0; k < s->e->n_eos; k++) is_eos |= tok == s->e->eos[k];
        if (is_eos && !p.ignore_eos) { st->stop = VLM_STOP_EOS; break; }
        st->n_generated++;
        size_t plen = 0;
        const char *piece = vlm_detok_stream_push(&ds, tok, &plen);
        if (alen + plen + 1 > acap) {
            acap = (alen + plen + 1) * 2;
            char *na = (char *)realloc(answer, acap);
            if (!na) { rc = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto out; }
            answer = na;
        }
        memcpy(answer + alen, piece, plen);
        alen += plen;
        answer[alen] = 0;
        /* A stop string ends the answer before it; text that might begin one is held back. */
        int stopped = 0;
        for (int k = 0; k < p.n_stop; k++) {
            char *hit = p.stop[k][0] ? strstr(answer + (emitted > 64 ? emitted - 64 : 0), p.stop[k]) : NULL;
            if (hit && (size_t)(hit - answer) >= emitted) { alen = (size_t)(hit - answer); answer[alen] = 0; stopped = 1; }
        }
        size_t safe = stopped ? alen : alen - api_stop_holdback(answer, alen, p.stop, p.n_stop);
        if (safe > emitted && fn && fn(user, answer + emitted, safe - emitted)) {
            emitted = safe;
            st->stop = VLM_STOP_CALLBACK;
            break;
        }
        if (safe > emitted) emitted = safe;
        if (stopped) { st->stop = VLM_STOP_STRING; break; }
        if (g + 1 == p.max_tokens) break;
        if (s->seq.n_past + 1 > s->n_ctx) {
            rc = vlm_error_set(err, VLM_ERR_CONTEXT, "the answer filled the context of %d tokens", s->n_ctx);
            goto out;
        }
        if ((rc = api_forward(s, &tok, 1, 0, 0, NULL, err)) != VLM_OK) {
            if (rc != VLM_ERR_CANCELLED) goto out;
            st->stop = VLM_STOP_CANCEL; /* stopped inside the step: keep the answer so far */
            break;
        }
    }
    if (st->stop != VLM_STOP_STRING && st->stop != VLM_STOP_CALLBACK) {
        size_t fl = 0;
        const char *rest = vlm_detok_stream_flush(&ds, &fl);
        if (fl && alen + fl + 1 > acap) {
            char *na = (char *)realloc(answer, alen + fl + 1);
            if (!na) { rc = vlm_error_set(err, VLM_ERR_OOM, "out of memory"); goto out; }
            answer = na;
        }
        if (fl) { memcpy(answer + alen, rest, fl); alen += fl; answer[alen] = 0; }
        if (alen > emitted && fn) fn(user, answer + emitted, alen - emitted);
    }
    st->decode_s = api_now() - t0;
    rc = api_append_answer(s, answer ? answer : "", alen, err);
out:
    vlm_detok_stream_free(&ds);
    vlm_sampler_free(&smp);
    vlm_tokens_free(&ids);
    free(answer);
    return rc;
}
