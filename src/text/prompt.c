/* Prompt assembly: expands the image/video placeholders of a rendered chat
 * prompt into the token strings the HF processors build (see text/vlm_text.h). */
#include "text/vlm_text.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void pr_rep(vlm_buf *b, const char *s, int n) { for (int i = 0; i < n; i++) vlm_buf_str(b, s); }

int vlm_prompt_family_from_model_type(const char *mt) {
    if (!mt) return -1;
    if (!strcmp(mt, "qwen2_vl") || !strcmp(mt, "qwen2_5_vl")) return VLM_FAMILY_QWEN;
    if (!strcmp(mt, "qwen3_vl") || !strcmp(mt, "qwen3_vl_moe")) return VLM_FAMILY_QWEN3;
    if (!strcmp(mt, "internvl") || !strcmp(mt, "internvl_chat")) return VLM_FAMILY_INTERNVL;
    if (!strcmp(mt, "idefics3") || !strcmp(mt, "smolvlm")) return VLM_FAMILY_IDEFICS3;
    if (!strcmp(mt, "gemma4")) return VLM_FAMILY_GEMMA4;
    return -1;
}

static vlm_status pr_expand_one(vlm_prompt_family fam, const vlm_media_info *m, int is_video,
                                int with_vision_markers, vlm_buf *b, vlm_error *err) {
    if (m->n_tokens <= 0) return vlm_error_set(err, VLM_ERR_ARG, "media with %d tokens", m->n_tokens);
    if (m->is_video != is_video)
        return vlm_error_set(err, VLM_ERR_ARG, "the prompt's %s placeholder is given %s", is_video ? "video" : "image",
                             m->is_video ? "a video" : "an image");
    char tmp[64];
    switch (fam) {
    case VLM_FAMILY_QWEN:
        pr_rep(b, is_video ? "<|video_pad|>" : "<|image_pad|>", m->n_tokens);
        return VLM_OK;
    case VLM_FAMILY_QWEN3:
        if (!is_video) { pr_rep(b, "<|image_pad|>", m->n_tokens); return VLM_OK; }
        if (m->n_frames <= 0 || m->n_tokens % m->n_frames)
            return vlm_error_set(err, VLM_ERR_ARG, "Qwen3-VL video: %d tokens are not a multiple of %d frames", m->n_tokens, m->n_frames);
        for (int f = 0; f < m->n_frames; f++) {
            snprintf(tmp, sizeof tmp, "<%.1f seconds>", m->timestamps ? m->timestamps[f] : 0.0);
            vlm_buf_str(b, tmp);
            vlm_buf_str(b, "<|vision_start|>");
            pr_rep(b, "<|video_pad|>", m->n_tokens / m->n_frames);
            vlm_buf_str(b, "<|vision_end|>");
        }
        (void)with_vision_markers;
        return VLM_OK;
    case VLM_FAMILY_INTERNVL:
        if (!is_video) {
            int tiles = m->n_tiles > 0 ? m->n_tiles : 1;
            vlm_buf_str(b, "<img>");
            pr_rep(b, "<IMG_CONTEXT>", m->n_tokens * tiles);
            vlm_buf_str(b, "</img>");
            return VLM_OK;
        }
        if (m->n_frames <= 0) return vlm_error_set(err, VLM_ERR_ARG, "InternVL video without frames");
        for (int f = 0; f < m->n_frames; f++) {
            snprintf(tmp, sizeof tmp, "%sFrame%d: <img>", f ? "\n" : "", f + 1);
            vlm_buf_str(b, tmp);
            pr_rep(b, "<IMG_CONTEXT>", m->n_tokens);
            vlm_buf_str(b, "</img>");
        }
        return VLM_OK;
    case VLM_FAMILY_IDEFICS3:
        if (is_video) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "Idefics3 / SmolVLM video prompts are not supported");
        if (m->rows > 0 && m->cols > 0) {
            for (int r = 0; r < m->rows; r++) {
                for (int c = 0; c < m->cols; c++) {
                    snprintf(tmp, sizeof tmp, "<fake_token_around_image><row_%d_col_%d>", r + 1, c + 1);
                    vlm_buf_str(b, tmp);
                    pr_rep(b, "<image>", m->n_tokens);
                }
                vlm_buf_str(b, "\n");
            }
            vlm_buf_str(b, "\n");
        }
        vlm_buf_str(b, "<fake_token_around_image><global-img>");
        pr_rep(b, "<image>", m->n_tokens);
        vlm_buf_str(b, "<fake_token_around_image>");
        return VLM_OK;
    case VLM_FAMILY_GEMMA4:
        if (!is_video) {
            vlm_buf_str(b, "<|image>");
            pr_rep(b, "<|image|>", m->n_tokens);
            vlm_buf_str(b, "<image|>");
            return VLM_OK;
        }
        if (m->n_frames <= 0) return vlm_error_set(err, VLM_ERR_ARG, "Gemma 4 video without frames");
        for (int f = 0; f < m->n_frames; f++) {
            double t = m->timestamps ? m->timestamps[f] : 0.0;
            int s = (int)t;
            snprintf(tmp, sizeof tmp, "%s%02d:%02d <|image>", f ? " " : "", s / 60, s % 60);
            vlm_buf_str(b, tmp);
            pr_rep(b, "<|video|>", m->n_tokens);
            vlm_buf_str(b, "<image|>");
        }
        return VLM_OK;
    }
    return vlm_error_set(err, VLM_ERR_ARG, "unknown prompt family %d", (int)fam);
}

vlm_status vlm_expand_media(vlm_prompt_family fam, const char *prompt, const vlm_media_info *media,
                            int n_media, char **out, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    *out = NULL;
    const char *img = NULL, *vid = NULL;
    switch (fam) {
    case VLM_FAMILY_QWEN: case VLM_FAMILY_QWEN3: img = "<|image_pad|>"; vid = "<|video_pad|>"; break;
    case VLM_FAMILY_INTERNVL: img = "<IMG_CONTEXT>"; vid = "<video>"; break;
    case VLM_FAMILY_IDEFICS3: img = "<image>"; vid = "<video>"; break;
    case VLM_FAMILY_GEMMA4: img = "<|image|>"; vid = "<|video|>"; break;
    default: return vlm_error_set(err, VLM_ERR_ARG, "unknown prompt family %d", (int)fam);
    }
    size_t li = strlen(img), lv = strlen(vid);
    /* Qwen3-VL videos replace "<|vision_start|><|video_pad|><|vision_end|>" as a whole. */
    static const char q3_vs[] = "<|vision_start|>", q3_ve[] = "<|vision_end|>";
    vlm_buf b = {0};
    int k = 0;
    size_t start = 0, n = strlen(prompt);
    for (size_t i = 0; i < n;) {
        int is_img = !strncmp(prompt + i, img, li), is_vid = !is_img && !strncmp(prompt + i, vid, lv);
        if (!is_img && !is_vid) { i++; continue; }
        if (k >= n_media) {
            free(b.p);
            return vlm_error_set(err, VLM_ERR_ARG, "the prompt has more image/video placeholders than the %d media given", n_media);
        }
        size_t seg_end = i, after = i + (is_img ? li : lv);
        if (fam == VLM_FAMILY_QWEN3 && is_vid && i >= sizeof q3_vs - 1 &&
            !strncmp(prompt + i - (sizeof q3_vs - 1), q3_vs, sizeof q3_vs - 1) &&
            !strncmp(prompt + after, q3_ve, sizeof q3_ve - 1) && i - (sizeof q3_vs - 1) >= start) {
            seg_end = i - (sizeof q3_vs - 1);
            after += sizeof q3_ve - 1;
        }
        vlm_buf_add(&b, prompt + start, seg_end - start);
        vlm_status st = pr_expand_one(fam, &media[k], is_vid, 0, &b, err);
        if (st) { free(b.p); return st; }
        k++;
        i = start = after;
    }
    vlm_buf_add(&b, prompt + start, n - start);
    if (k != n_media) {
        free(b.p);
        return vlm_error_set(err, VLM_ERR_ARG, "the prompt has %d image/video placeholders but %d media were given", k, n_media);
    }
    if (b.oom) { free(b.p); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    *out = b.p ? b.p : calloc(1, 1);
    return *out ? VLM_OK : vlm_error_set(err, VLM_ERR_OOM, "out of memory");
}

vlm_status vlm_build_prompt(const vlm_tokenizer *tok, vlm_prompt_family fam, const vlm_chat_msg *msgs, int n_msgs,
                            const vlm_media_info *media, int n_media, int add_generation_prompt,
                            vlm_tokens *out, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    char *text = NULL, *expanded = NULL;
    vlm_status st = vlm_tokenizer_chat(tok, msgs, n_msgs, add_generation_prompt, NULL, &text, err);
    if (!st) st = vlm_expand_media(fam, text, media, n_media, &expanded, err);
    if (!st) st = vlm_tokenize(tok, expanded, strlen(expanded), 0, out, err);
    free(text);
    free(expanded);
    return st;
}

int vlm_qwen3_video_timestamps(const int *idx, int n, double fps, int merge, double *out) {
    if (n <= 0 || merge <= 0 || fps <= 0) return 0;
    int groups = (n + merge - 1) / merge;
    for (int g = 0; g < groups; g++) {
        int a = g * merge, b = g * merge + merge - 1;
        if (b >= n) b = n - 1; /* the last index is repeated to fill the group */
        out[g] = ((double)idx[a] / fps + (double)idx[b] / fps) / 2;
    }
    return groups;
}

vlm_status vlm_media_from_features(vlm_prompt_family fam, const vlm_features *f, int merge_size, int tokens_per_tile,
                                   vlm_media_info *out, int max_media, int *n_media, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    int n = 0;
    *n_media = 0;
    const vlm_tensor *t;
    switch (fam) {
    case VLM_FAMILY_QWEN:
    case VLM_FAMILY_QWEN3: {
        int m2 = merge_size > 0 ? merge_size * merge_size : 4;
        for (int v = 0; v < 2; v++) {
            t = vlm_features_get(f, v ? "video_grid_thw" : "image_grid_thw");
            if (!t) continue;
            if (t->ndim != 2 || t->shape[1] != 3) return vlm_error_set(err, VLM_ERR_ARG, "%s must be [n, 3]", v ? "video_grid_thw" : "image_grid_thw");
            for (int64_t i = 0; i < t->shape[0]; i++) {
                if (n >= max_media) return vlm_error_set(err, VLM_ERR_ARG, "more than %d media", max_media);
                int64_t tt = vlm_get_i64(t, i * 3), h = vlm_get_i64(t, i * 3 + 1), w = vlm_get_i64(t, i * 3 + 2);
                memset(&out[n], 0, sizeof out[n]);
                out[n].is_video = v;
                out[n].n_tokens = (int)(tt * h * w / m2);
                out[n].n_frames = (int)tt;
                n++;
            }
        }
        break;
    }
    case VLM_FAMILY_INTERNVL:
        if (!(t = vlm_features_get(f, "num_patches"))) return vlm_error_set(err, VLM_ERR_ARG, "InternVL features lack num_patches");
        for (int64_t i = 0; i < vlm_nelem(t); i++) {
            if (n >= max_media) return vlm_error_set(err, VLM_ERR_ARG, "more than %d media", max_media);
            memset(&out[n], 0, sizeof out[n]);
            out[n].n_tokens = tokens_per_tile;
            out[n].n_tiles = (int)vlm_get_i64(t, i);
            n++;
        }
        break;
    case VLM_FAMILY_IDEFICS3: {
        const vlm_tensor *r = vlm_features_get(f, "rows"), *c = vlm_features_get(f, "cols");
        if (!r || !c || vlm_nelem(r) != vlm_nelem(c)) return vlm_error_set(err, VLM_ERR_ARG, "Idefics3 features lack rows/cols");
        for (int64_t i = 0; i < vlm_nelem(r); i++) {
            if (n >= max_media) return vlm_error_set(err, VLM_ERR_ARG, "more than %d media", max_media);
            memset(&out[n], 0, sizeof out[n]);
            out[n].n_tokens = tokens_per_tile;
            out[n].rows = (int)vlm_get_i64(r, i);
            out[n].cols = (int)vlm_get_i64(c, i);
            n++;
        }
        break;
    }
    case VLM_FAMILY_GEMMA4:
        if (!(t = vlm_features_get(f, "num_soft_tokens_per_image"))) return vlm_error_set(err, VLM_ERR_ARG, "Gemma 4 features lack num_soft_tokens_per_image");
        for (int64_t i = 0; i < vlm_nelem(t); i++) {
            if (n >= max_media) return vlm_error_set(err, VLM_ERR_ARG, "more than %d media", max_media);
            memset(&out[n], 0, sizeof out[n]);
            out[n].n_tokens = (int)vlm_get_i64(t, i);
            n++;
        }
        break;
    default:
        return vlm_error_set(err, VLM_ERR_ARG, "unknown prompt family %d", (int)fam);
    }
    if (fam != VLM_FAMILY_QWEN && fam != VLM_FAMILY_QWEN3 && tokens_per_tile <= 0 && fam != VLM_FAMILY_GEMMA4)
        return vlm_error_set(err, VLM_ERR_ARG, "tokens_per_tile must be positive");
    *n_media = n;
    return VLM_OK;
}

/* ------------------------------------------------------------------ the user's text stays text */

/* A special token string in the user's text is marked by this byte after
 * its first byte, so neither the chat template nor the media expansion can
 * see it whole; a literal marker byte in the text is doubled. */
#define PR_MARK '\x1a'

char *vlm_protect_specials(const vlm_tokenizer *tok, const char *text) {
    size_t len = strlen(text);
    const char mark = PR_MARK;
    vlm_buf b = {0};
    for (size_t i = 0; i < len;) {
        size_t n = vlm_tokenizer_added_at(tok, text + i, len - i);
        if (n > 0) {
            vlm_buf_add(&b, text + i, 1);
            vlm_buf_add(&b, &mark, 1);
            vlm_buf_add(&b, text + i + 1, n - 1);
            i += n;
            continue;
        }
        if (text[i] == PR_MARK) vlm_buf_add(&b, &mark, 1);
        vlm_buf_add(&b, text + i, 1);
        i++;
    }
    vlm_buf_add(&b, "", 1);
    if (b.oom) { free(b.p); return NULL; }
    return b.p;
}

vlm_status vlm_tokenize_protected(const vlm_tokenizer *tok, const char *prompt, size_t len, int flags,
                                  vlm_tokens *out, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    if (!memchr(prompt, PR_MARK, len)) return vlm_tokenize(tok, prompt, len, flags, out, err);
    /* First the text without the marks, noting where each protected string
     * starts; then each one's length, read off the text itself. */
    char *text = (char *)malloc(len + 1);
    size_t *plain = (size_t *)malloc(sizeof(size_t) * (len + 1)), n = 0;
    int n_plain = 0;
    if (!text || !plain) { free(text); free(plain); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    for (size_t i = 0; i < len; i++) {
        if (prompt[i] == PR_MARK && i + 1 < len && prompt[i + 1] == PR_MARK) { text[n++] = PR_MARK; i++; continue; }
        if (prompt[i] == PR_MARK) continue; /* a mark with nothing before it: dropped */
        if (i + 1 < len && prompt[i + 1] == PR_MARK && (i + 2 >= len || prompt[i + 2] != PR_MARK))
            plain[2 * n_plain++] = n; /* a protected string starts at this byte */
        text[n++] = prompt[i];
    }
    for (int k = 0; k < n_plain; k++) {
        size_t start = plain[2 * k], m = vlm_tokenizer_added_at(tok, text + start, n - start);
        plain[2 * k + 1] = start + (m ? m : 1);
    }
    vlm_status st = vlm_tokenize_ranges(tok, text, n, flags, plain, n_plain, out, err);
    free(text);
    free(plain);
    return st;
}
