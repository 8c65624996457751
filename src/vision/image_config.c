/* Image processor settings from preprocessor_config.json / processor_config.json. */
#include "vision/vlm_vision.h"

#include <stdio.h>
#include <string.h>

static int imgcfg_prefix(const char *s, const char *prefix) { return strncmp(s, prefix, strlen(prefix)) == 0; }

static vlm_status imgcfg_family(const char *type, vlm_image_family *fam, vlm_error *err) {
    /* "Fast" / "Pil" suffixes name backends of the same processor */
    if (imgcfg_prefix(type, "Qwen2VLImageProcessor") || imgcfg_prefix(type, "Qwen2_5_VLImageProcessor") ||
        imgcfg_prefix(type, "Qwen3VLImageProcessor") || imgcfg_prefix(type, "Qwen2VLVideoProcessor") ||
        imgcfg_prefix(type, "Qwen2_5_VLVideoProcessor") || imgcfg_prefix(type, "Qwen3VLVideoProcessor"))
        *fam = VLM_IMAGE_QWEN2_VL;
    else if (imgcfg_prefix(type, "GotOcr2ImageProcessor") || imgcfg_prefix(type, "InternVLImageProcessor"))
        *fam = VLM_IMAGE_INTERNVL;
    else if (imgcfg_prefix(type, "Idefics3ImageProcessor") || imgcfg_prefix(type, "SmolVLMImageProcessor"))
        *fam = VLM_IMAGE_IDEFICS3;
    else if (imgcfg_prefix(type, "Gemma4ImageProcessor"))
        *fam = VLM_IMAGE_GEMMA4;
    else
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "image processor: unsupported image_processor_type \"%s\"", type);
    return VLM_OK;
}

static int imgcfg_int(const vlm_json *j, const char *key, int def) {
    const vlm_json *v = vlm_json_get(j, key);
    if (!v || v->type != VLM_JSON_NUMBER) return def;
    double d = v->num;
    if (!(d >= -2147483647.0 && d <= 2147483647.0)) return def;
    return (int)d;
}

static int imgcfg_bool(const vlm_json *j, const char *key, int def) {
    const vlm_json *v = vlm_json_get(j, key);
    return v && v->type == VLM_JSON_BOOL ? (int)v->num : def;
}

static vlm_status imgcfg_triple(const vlm_json *j, const char *key, float out[3], vlm_error *err) {
    const vlm_json *v = vlm_json_get(j, key);
    if (!v || v->type == VLM_JSON_NULL) return VLM_OK;
    if (v->type == VLM_JSON_NUMBER) {
        out[0] = out[1] = out[2] = (float)v->num;
        return VLM_OK;
    }
    if (v->type != VLM_JSON_ARRAY || v->n != 3)
        return vlm_error_set(err, VLM_ERR_CONFIG, "image processor: %s must be a number or 3 numbers", key);
    for (int c = 0; c < 3; c++) {
        const vlm_json *e = vlm_json_at(v, c);
        if (!e || e->type != VLM_JSON_NUMBER)
            return vlm_error_set(err, VLM_ERR_CONFIG, "image processor: %s[%d] is not a number", key, c);
        out[c] = (float)e->num;
    }
    return VLM_OK;
}

vlm_status vlm_image_processor_from_json(vlm_image_processor *p, const vlm_json *j, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    if (!j || j->type != VLM_JSON_OBJECT) return vlm_error_set(err, VLM_ERR_CONFIG, "image processor: config is not an object");
    /* processor_config.json nests the image processor (Gemma 4 checkpoints) */
    const vlm_json *nested = vlm_json_get(j, "image_processor");
    if (nested && nested->type == VLM_JSON_OBJECT) j = nested;
    const char *type = vlm_json_str(vlm_json_get(j, "image_processor_type"), NULL);
    if (!type) type = vlm_json_str(vlm_json_get(j, "video_processor_type"), NULL); /* video_preprocessor_config.json */
    if (!type) return vlm_error_set(err, VLM_ERR_CONFIG, "image processor: no image_processor_type in the config");
    vlm_image_family fam = VLM_IMAGE_QWEN2_VL;
    vlm_status s = imgcfg_family(type, &fam, err);
    if (s) return s;
    vlm_image_processor_defaults(p, fam);
    if (strstr(type, "VideoProcessor")) { /* the video processors' class defaults */
        p->min_pixels = 128 * 28 * 28;
        p->max_pixels = 28 * 28 * 768;
        if (imgcfg_prefix(type, "Qwen3VLVideoProcessor")) {
            p->patch_size = 16;
            p->min_pixels = 128 * 32 * 32;
            p->max_pixels = 32 * 32 * 768;
            for (int c = 0; c < 3; c++) p->image_mean[c] = p->image_std[c] = 0.5f;
        }
    }
    snprintf(p->type, sizeof p->type, "%s", type);
    p->do_resize = imgcfg_bool(j, "do_resize", p->do_resize);
    p->do_rescale = imgcfg_bool(j, "do_rescale", p->do_rescale);
    p->do_normalize = imgcfg_bool(j, "do_normalize", p->do_normalize);
    p->do_convert_rgb = imgcfg_bool(j, "do_convert_rgb", p->do_convert_rgb);
    int rs = imgcfg_int(j, "resample", (int)p->resample);
    if (rs < 0 || rs > 5) return vlm_error_set(err, VLM_ERR_CONFIG, "image processor: unknown resample %d", rs);
    p->resample = (vlm_resample)rs;
    p->rescale_factor = vlm_json_num(vlm_json_get(j, "rescale_factor"), p->rescale_factor);
    if ((s = imgcfg_triple(j, "image_mean", p->image_mean, err))) return s;
    if ((s = imgcfg_triple(j, "image_std", p->image_std, err))) return s;
    for (int c = 0; c < 3; c++)
        if (p->do_normalize && p->image_std[c] == 0.0f)
            return vlm_error_set(err, VLM_ERR_CONFIG, "image processor: image_std[%d] is 0", c);
    const vlm_json *size = vlm_json_get(j, "size");
    if (size && size->type != VLM_JSON_OBJECT) size = NULL;
    switch (fam) {
    case VLM_IMAGE_QWEN2_VL:
        p->patch_size = imgcfg_int(j, "patch_size", p->patch_size);
        p->temporal_patch_size = imgcfg_int(j, "temporal_patch_size", p->temporal_patch_size);
        p->merge_size = imgcfg_int(j, "merge_size", p->merge_size);
        /* size {shortest_edge, longest_edge} in pixels; min_pixels/max_pixels override (older configs) */
        p->min_pixels = vlm_json_int(vlm_json_get(size, "shortest_edge"), p->min_pixels);
        p->max_pixels = vlm_json_int(vlm_json_get(size, "longest_edge"), p->max_pixels);
        p->min_pixels = vlm_json_int(vlm_json_get(size, "min_pixels"), p->min_pixels);
        p->max_pixels = vlm_json_int(vlm_json_get(size, "max_pixels"), p->max_pixels);
        p->min_pixels = vlm_json_int(vlm_json_get(j, "min_pixels"), p->min_pixels);
        p->max_pixels = vlm_json_int(vlm_json_get(j, "max_pixels"), p->max_pixels);
        p->qwen3_video = imgcfg_prefix(type, "Qwen3VLVideoProcessor");
        break;
    case VLM_IMAGE_INTERNVL:
        p->tile_height = imgcfg_int(size, "height", p->tile_height);
        p->tile_width = imgcfg_int(size, "width", p->tile_width);
        p->crop_to_patches = imgcfg_bool(j, "crop_to_patches", p->crop_to_patches);
        p->min_patches = imgcfg_int(j, "min_patches", p->min_patches);
        p->max_patches = imgcfg_int(j, "max_patches", p->max_patches);
        break;
    case VLM_IMAGE_IDEFICS3: {
        p->longest_edge = imgcfg_int(size, "longest_edge", p->longest_edge);
        const vlm_json *mis = vlm_json_get(j, "max_image_size");
        p->max_image_size = imgcfg_int(mis, "longest_edge", p->max_image_size);
        p->do_image_splitting = imgcfg_bool(j, "do_image_splitting", p->do_image_splitting);
        p->do_pad = imgcfg_bool(j, "do_pad", p->do_pad);
        if (size && !vlm_json_get(size, "longest_edge"))
            return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "idefics3 processor: only size.longest_edge is supported");
        break;
    }
    case VLM_IMAGE_GEMMA4:
        p->patch_size = imgcfg_int(j, "patch_size", p->patch_size);
        p->max_soft_tokens = imgcfg_int(j, "max_soft_tokens", p->max_soft_tokens);
        p->pooling_kernel_size = imgcfg_int(j, "pooling_kernel_size", p->pooling_kernel_size);
        break;
    }
    return VLM_OK;
}

vlm_status vlm_image_processor_load(vlm_image_processor *p, const char *path, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    int kind = vlm_path_kind(path);
    if (!kind) return vlm_error_set(err, VLM_ERR_IO, "image processor: %s not found", path);
    char buf[4096];
    const char *file = path;
    if (kind == 2) {
        static const char *const names[] = {"preprocessor_config.json", "processor_config.json"};
        file = NULL;
        for (int i = 0; i < 2 && !file; i++) {
            snprintf(buf, sizeof buf, "%s/%s", path, names[i]);
            if (vlm_path_kind(buf) == 1) file = buf;
        }
        if (!file)
            return vlm_error_set(err, VLM_ERR_IO, "image processor: no preprocessor_config.json or processor_config.json in %s", path);
    }
    vlm_json *j = vlm_json_load(file, err);
    if (!j) return err ? err->code : VLM_ERR_FORMAT;
    vlm_status s = vlm_image_processor_from_json(p, j, err);
    vlm_json_free(j);
    return s;
}
