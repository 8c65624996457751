/* vlm bench: vision encode time, prefill and decode tokens/s, peak memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cli.h"
#include "vlm.h"

static double bench_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* CPU seconds of the process (all threads): on a busy machine the wall
 * clock counts time spent waiting for a core, this does not. */
static double bench_cpu(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

static double bench_peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

static int bench_usage(int rc) {
    fprintf(rc ? stderr : stdout,
            "usage: vlm bench -m MODEL_DIR|CONFIG.json [options]\n"
            "  --random        made-up weights of the config's shapes (no checkpoint needed)\n"
            "  --dtype T       dtype of made-up weights: bf16 (default), f16, f32\n"
            "  -t N            threads (default: all cores)\n"
            "  -p N            prompt tokens for the prefill measurement (default 512)\n"
            "  -n N            tokens to decode (default 32)\n"
            "  --image WxH     also time the vision encoder on a WxH image (needs the\n"
            "                  model's preprocessor config next to its config)\n"
            "  --tiles N       idefics3, internvl: time the vision encoder on N synthesized tiles\n"
            "                  (idefics3, internvl, qwen2_5_vl, qwen3_vl: pixels are synthesized until\n"
            "                  the image API lands)\n"
            "  --kv T          KV cache dtype: f32 (default) or f16\n"
            "Prints one JSON line with the figures (kv_cache_mib: the KV cache allocated for\n"
            "prompt + generated tokens, shared layers counted once).\n");
    return rc;
}

/* Idefics3/SmolVLM with --tiles (and InternVL): synthesized tiles. The number
 * of tiles Idefics3's processor makes of a WxH image (longest edge to size.longest_edge,
 * both sides up to multiples of max_image_size, rows x cols crops + the global
 * image), from preprocessor_config.json next to the config; tiles > 0 forces a
 * count. The tiles are synthesized (random pixels) and encoded once. */
static int bench_idefics3_vision(vlm_model *m, int w, int h, int tiles, double *ms, int *n_tiles, int *n_tokens,
                                 vlm_error *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", m->dir);
    vlm_error ignore = {0};
    vlm_json *pp = vlm_json_load(path, &ignore);
    int longest = (int)vlm_json_int(vlm_json_path(pp, "size.longest_edge"), 4 * 364);
    int tile = (int)vlm_json_int(vlm_json_path(pp, "max_image_size.longest_edge"), 364);
    int split = vlm_json_bool(vlm_json_get(pp, "do_image_splitting"), 1);
    vlm_json_free(pp);
    const vlm_json *isz = vlm_json_path(m->config, "vision_config.image_size"); /* an int or [h, w] */
    tile = (int)vlm_json_int(isz && isz->type == VLM_JSON_ARRAY ? vlm_json_at(isz, 0) : isz, tile);
    if (tiles <= 0) {
        double aspect = (double)w / h;
        if (w >= h) { w = longest; h = (int)(w / aspect); h += h % 2; }
        else { h = longest; w = (int)(h * aspect); w += w % 2; }
        aspect = (double)w / h; /* of the resized image, as the processor recomputes it */
        if (w >= h) { w = (w + tile - 1) / tile * tile; h = (int)(w / aspect); h = (h + tile - 1) / tile * tile; }
        else { h = (h + tile - 1) / tile * tile; w = (int)(h * aspect); w = (w + tile - 1) / tile * tile; }
        tiles = split && (w > tile || h > tile) ? (w / tile) * (h / tile) + 1 : 1;
    }
    *n_tiles = tiles;
    size_t n = (size_t)tiles * 3 * tile * tile;
    float *px = (float *)malloc(sizeof(float) * n);
    if (!px) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    uint64_t x = 777;
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        px[i] = (float)((x >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
    }
    vlm_features f = {.n = 1, .names = {"pixel_values"}};
    f.tensors[0] = vlm_tensor_make(VLM_F32, 4, (const int64_t[]){tiles, 3, tile, tile}, px);
    vlm_compute c;
    vlm_compute_init(&c, m->be);
    vlm_vision_out vo;
    double t0 = bench_now();
    vlm_status st = m->arch->encode(m, &c, &f, &vo);
    *ms = (bench_now() - t0) * 1e3;
    if (st != VLM_OK) vlm_error_set(err, st, "%s", c.err.msg);
    else *n_tokens = (int)vo.embeds->shape[0];
    vlm_compute_free(&c);
    free(px);
    return st;
}

/* InternVL: the tiles GotOcr2's crop_to_patches makes of a WxH image
 * (vlm_internvl_grid, plus a thumbnail when more than one), min/max_patches
 * and crop_to_patches from preprocessor_config.json (defaults 1, 12, on). */
static int bench_internvl_tiles(vlm_model *m, int w, int h) {
    char path[4096];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", m->dir);
    vlm_error ignore = {0};
    vlm_json *pp = vlm_json_load(path, &ignore);
    int lo = (int)vlm_json_int(vlm_json_get(pp, "min_patches"), 1), hi = (int)vlm_json_int(vlm_json_get(pp, "max_patches"), 12);
    int crop = vlm_json_bool(vlm_json_get(pp, "crop_to_patches"), 1);
    vlm_json_free(pp);
    const vlm_json *isz = vlm_json_path(m->config, "vision_config.image_size");
    double tile = (double)vlm_json_int(isz && isz->type == VLM_JSON_ARRAY ? vlm_json_at(isz, 0) : isz, 448);
    int bc = 1, br = 1;
    if (crop) vlm_internvl_grid(h, w, (int)tile, (int)tile, lo, hi, &bc, &br);
    return bc * br > 1 ? bc * br + 1 : 1;
}

/* Qwen2.5-VL / Qwen3-VL until the image preprocessing API lands: the
 * processor's grid for a WxH image (each side rounded to a multiple of
 * patch*merge, the area brought within min/max pixels as smart_resize does,
 * settings from preprocessor_config.json next to the config or the vision
 * config), pixel_values of that many synthesized patches, encoded once. */
static int bench_qwen_vision(vlm_model *m, int w, int h, double *ms, int *n_tokens, vlm_error *err) {
    const vlm_json *vc = vlm_json_get(m->config, "vision_config");
    int P = (int)vlm_json_int(vlm_json_get(vc, "patch_size"), 14), T = (int)vlm_json_int(vlm_json_get(vc, "temporal_patch_size"), 2);
    int M = (int)vlm_json_int(vlm_json_get(vc, "spatial_merge_size"), 2), C = (int)vlm_json_int(vlm_json_get(vc, "in_channels"), 3);
    char path[4096];
    snprintf(path, sizeof path, "%s/preprocessor_config.json", m->dir);
    vlm_error ignore = {0};
    vlm_json *pp = vlm_json_load(path, &ignore);
    double min_px = vlm_json_num(vlm_json_path(pp, "size.shortest_edge"), vlm_json_num(vlm_json_get(pp, "min_pixels"), 56 * 56));
    double max_px = vlm_json_num(vlm_json_path(pp, "size.longest_edge"), vlm_json_num(vlm_json_get(pp, "max_pixels"), 28 * 28 * 1280));
    vlm_json_free(pp);
    double f = (double)P * M;
    double hb = fmax(f, round(h / f) * f), wb = fmax(f, round(w / f) * f);
    if (hb * wb > max_px) {
        double beta = sqrt((double)h * w / max_px);
        hb = fmax(f, floor(h / beta / f) * f);
        wb = fmax(f, floor(w / beta / f) * f);
    } else if (hb * wb < min_px) {
        double beta = sqrt(min_px / ((double)h * w));
        hb = ceil(h * beta / f) * f;
        wb = ceil(w * beta / f) * f;
    }
    int64_t gh = (int64_t)hb / P, gw = (int64_t)wb / P, n = gh * gw, D = (int64_t)C * T * P * P;
    *n_tokens = (int)(n / (M * M));
    float *px = (float *)malloc(sizeof(float) * (size_t)(n * D));
    if (!px) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    uint64_t x = 777;
    for (int64_t i = 0; i < n * D; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        px[i] = (float)((x >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
    }
    int64_t grid[3] = {1, gh, gw};
    vlm_features feats = {.n = 2, .names = {"pixel_values", "image_grid_thw"}};
    feats.tensors[0] = vlm_tensor_make(VLM_F32, 2, (const int64_t[]){n, D}, px);
    feats.tensors[1] = vlm_tensor_make(VLM_I64, 2, (const int64_t[]){1, 3}, grid);
    vlm_compute c;
    vlm_compute_init(&c, m->be);
    vlm_vision_out vo;
    double t0 = bench_now();
    vlm_status st = m->arch->encode(m, &c, &feats, &vo);
    *ms = (bench_now() - t0) * 1e3;
    if (st != VLM_OK) vlm_error_set(err, st, "%s", c.err.msg);
    else *n_tokens = (int)vo.embeds->shape[0];
    vlm_compute_free(&c);
    free(px);
    return st;
}

/* Gemma 4: a WxH image of random pixels through the model's image processor
 * (processor_config.json next to the config, else Gemma4ImageProcessor's
 * defaults): the processor's size, patches and padding; only encode is timed. */
/* A random WxH image through the family's image processor (the model's
 * preprocessor config, else the class defaults), then the vision encoder. */
static int bench_image_vision(vlm_model *m, vlm_image_family family, int w, int h, double *ms, int *n_tokens,
                              vlm_error *err) {
    vlm_image_processor ip;
    vlm_error ignore = {0};
    if (vlm_image_processor_load(&ip, m->dir, &ignore) != VLM_OK || ip.family != family)
        vlm_image_processor_defaults(&ip, family);
    uint8_t *rgb = (uint8_t *)malloc((size_t)w * h * 3);
    if (!rgb) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    uint64_t x = 777;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        rgb[i] = (uint8_t)(x >> 56);
    }
    vlm_image img = {0};
    vlm_features feats = {0};
    vlm_status st = vlm_image_from_pixels(&img, rgb, w, h, 3, 0, err);
    free(rgb);
    if (st == VLM_OK) st = vlm_image_preprocess(&ip, &img, 1, &feats, err);
    vlm_image_free(&img);
    if (st != VLM_OK) return st;
    vlm_compute c;
    vlm_compute_init(&c, m->be);
    vlm_vision_out vo;
    double t0 = bench_now();
    st = m->arch->encode(m, &c, &feats, &vo);
    *ms = (bench_now() - t0) * 1e3;
    if (st != VLM_OK) vlm_error_set(err, st, "%s", c.err.msg);
    else *n_tokens = (int)vo.embeds->shape[0];
    vlm_compute_free(&c);
    vlm_image_features_free(&feats);
    return st;
}

int cmd_bench(int argc, char **argv) {
    const char *dir = NULL;
    int threads = 0, n_prompt = 512, n_gen = 32, random_w = 0, img_w = 0, img_h = 0, img_tiles = 0;
    vlm_dtype dtype = VLM_BF16, kv = VLM_F32;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return bench_usage(0);
        else if (!strcmp(a, "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(a, "--random")) random_w = 1;
        else if (!strcmp(a, "-t") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(a, "-p") && i + 1 < argc) n_prompt = atoi(argv[++i]);
        else if (!strcmp(a, "-n") && i + 1 < argc) n_gen = atoi(argv[++i]);
        else if (!strcmp(a, "--tiles") && i + 1 < argc) img_tiles = atoi(argv[++i]);
        else if (!strcmp(a, "--image") && i + 1 < argc) {
            if (sscanf(argv[++i], "%dx%d", &img_w, &img_h) != 2 || img_w <= 0 || img_h <= 0) return bench_usage(2);
        } else if ((!strcmp(a, "--dtype") || !strcmp(a, "--kv")) && i + 1 < argc) {
            const char *t = argv[++i];
            vlm_dtype d = !strcmp(t, "f32") ? VLM_F32 : !strcmp(t, "f16") ? VLM_F16 : !strcmp(t, "bf16") ? VLM_BF16 : VLM_NTYPES;
            if (d == VLM_NTYPES) return bench_usage(2);
            if (!strcmp(a, "--kv")) kv = d;
            else dtype = d;
        } else return bench_usage(2);
    }
    if (!dir || n_prompt <= 0 || n_gen <= 0) return bench_usage(2);

    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = threads, .random_weights = random_w, .random_dtype = dtype};
    double t0 = bench_now();
    if (vlm_model_load(&m, dir, &mp, &err) != VLM_OK) {
        fprintf(stderr, "vlm bench: %s\n", err.msg);
        return 1;
    }
    double t_load = bench_now() - t0;
    vlm_seq s;
    if (vlm_seq_init(&s, m, n_prompt + n_gen + 8, 0, kv, &err) != VLM_OK) {
        fprintf(stderr, "vlm bench: %s\n", err.msg);
        vlm_model_free(m);
        return 1;
    }
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_prompt);
    uint64_t x = 12345;
    for (int i = 0; i < n_prompt; i++) { /* text tokens that are not special placeholders */
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)(m->vocab_size < 100000 ? m->vocab_size / 2 : 100000));
        if (ids[i] == m->image_token_id || ids[i] == m->video_token_id) ids[i] = 1;
    }
    double vision_ms = -1, vision_cpu = bench_cpu();
    int vision_tiles = 0, vision_tokens = 0;
    if ((img_w > 0 || img_tiles > 0) && !strcmp(m->arch->name, "internvl") && img_tiles <= 0)
        img_tiles = bench_internvl_tiles(m, img_w, img_h);
    if (img_w > 0 && img_tiles <= 0 && !strcmp(m->arch->name, "idefics3")) { /* the real processor */
        if (bench_image_vision(m, VLM_IMAGE_IDEFICS3, img_w, img_h, &vision_ms, &vision_tokens, &err) != VLM_OK) {
            fprintf(stderr, "vlm bench: vision: %s\n", err.msg);
            vlm_error_clear(&err);
        }
        const vlm_json *vc = vlm_json_get(m->config, "vision_config");
        int64_t side = vlm_json_int(vlm_json_get(vc, "image_size"), 224) / vlm_json_int(vlm_json_get(vc, "patch_size"), 32);
        int64_t r = vlm_json_int(vlm_json_get(m->config, "scale_factor"), 2), tpt = side * side / (r * r);
        vision_tiles = tpt > 0 ? (int)(vision_tokens / tpt) : 0;
    } else if ((img_w > 0 || img_tiles > 0) && (!strcmp(m->arch->name, "idefics3") || !strcmp(m->arch->name, "internvl")) &&
        bench_idefics3_vision(m, img_w, img_h, img_tiles, &vision_ms, &vision_tiles, &vision_tokens, &err) != VLM_OK) {
        fprintf(stderr, "vlm bench: vision: %s\n", err.msg);
        vlm_error_clear(&err);
    }
    if (img_w > 0 && (!strcmp(m->arch->name, "qwen3_vl") || !strcmp(m->arch->name, "qwen2_5_vl")) &&
        bench_qwen_vision(m, img_w, img_h, &vision_ms, &vision_tokens, &err) != VLM_OK) {
        fprintf(stderr, "vlm bench: vision: %s\n", err.msg);
        vlm_error_clear(&err);
    }

    if (img_w > 0 && !strcmp(m->arch->name, "gemma4") &&
        bench_image_vision(m, VLM_IMAGE_GEMMA4, img_w, img_h, &vision_ms, &vision_tokens, &err) != VLM_OK) {
        fprintf(stderr, "vlm bench: vision: %s\n", err.msg);
        vlm_error_clear(&err);
    }
    vision_cpu = bench_cpu() - vision_cpu; /* with the synthesized pixels (gemma4: preprocessing), a small part */
    size_t kv_bytes = 0; /* cache layers of their own (shared layers add nothing) */
    for (int l = 0; l < s.kv.n_layers; l++)
        if (s.kv.layers[l].owner) kv_bytes += 2 * (size_t)vlm_nelem(s.kv.layers[l].k) * vlm_dtype_size(s.kv.layers[l].k->dtype);

    vlm_tensor *lg = NULL;
    vlm_compute_reset(&s.c);
    t0 = bench_now();
    double c0 = bench_cpu();
    int ok = m->arch->forward(m, &s, ids, n_prompt, NULL, NULL, 0, &lg) == VLM_OK;
    double t_prefill = bench_now() - t0, cpu_prefill = bench_cpu() - c0, cpu_decode = 0;
    float *row = (float *)malloc(sizeof(float) * (size_t)m->vocab_size);
    int32_t tok = 0;
    double t_decode = 0;
    for (int g = 0; ok && g < n_gen; g++) {
        ok = vlm_to_host_f32(&s.c, lg, row) == VLM_OK;
        int best = 0;
        for (int v = 1; ok && v < m->vocab_size; v++) if (row[v] > row[best]) best = v;
        tok = best;
        vlm_compute_reset(&s.c);
        t0 = bench_now();
        c0 = bench_cpu();
        ok = ok && m->arch->forward(m, &s, &tok, 1, NULL, NULL, 0, &lg) == VLM_OK;
        t_decode += bench_now() - t0;
        cpu_decode += bench_cpu() - c0;
    }
    if (!ok) fprintf(stderr, "vlm bench: %s\n", s.c.err.msg);
    else
        printf("{\"arch\":\"%s\",\"threads\":%d,\"weights\":\"%s\",\"load_s\":%.2f,\"vision_ms\":%.1f,"
               "\"prefill_tokens\":%d,\"prefill_tok_s\":%.2f,\"decode_tokens\":%d,\"decode_tok_s\":%.2f,"
               "\"vision_cpu_s\":%.2f,\"prefill_cpu_s\":%.2f,\"decode_cpu_s\":%.2f,"
               "\"vision_tiles\":%d,\"vision_tokens\":%d,\"kv_cache_mib\":%.2f,\"kv_ctx\":%d,\"peak_rss_mib\":%.0f}\n",
               m->arch->name, m->be->n_threads, random_w ? vlm_dtype_name(dtype) : "checkpoint", t_load, vision_ms,
               n_prompt, n_prompt / t_prefill, n_gen, n_gen / t_decode, vision_ms >= 0 ? vision_cpu : 0.0, cpu_prefill, cpu_decode, vision_tiles, vision_tokens,
               kv_bytes / 1048576.0, s.n_ctx, bench_peak_rss_mib());
    free(row);
    free(ids);
    vlm_seq_free(&s);
    vlm_model_free(m);
    return ok ? 0 : 1;
}
