/* Image decoding, PIL-style resampling and the family processors on edge
 * cases: corrupt/truncated/zero-size inputs, 1x1 and 1x4000 images, raw
 * frames with a stride, several images, video frames. (The comparison with
 * the HF references is test_image_golden.c.) */
#include "vlm.h"
#include "test_util.h"

#define DATA "tests/data/img/"

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static vlm_image make_gradient(int w, int h) {
    vlm_image im = {0};
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / (w > 1 ? w - 1 : 1));
            p[1] = (uint8_t)(y * 255 / (h > 1 ? h - 1 : 1));
            p[2] = (uint8_t)((x * 7 + y * 3) & 255);
        }
    vlm_error err = {0};
    vlm_image_from_pixels(&im, px, w, h, 3, 0, &err);
    free(px);
    return im;
}

static void processors(vlm_image_processor p[4]) {
    vlm_image_processor_defaults(&p[0], VLM_IMAGE_QWEN2_VL);
    vlm_image_processor_defaults(&p[1], VLM_IMAGE_INTERNVL);
    p[1].tile_height = p[1].tile_width = 448;
    p[1].crop_to_patches = 1;
    vlm_image_processor_defaults(&p[2], VLM_IMAGE_IDEFICS3);
    p[2].longest_edge = 2048;
    p[2].max_image_size = 512;
    vlm_image_processor_defaults(&p[3], VLM_IMAGE_GEMMA4);
}

static int all_finite(const vlm_features *f) {
    for (int i = 0; i < f->n; i++) {
        const vlm_tensor *t = &f->tensors[i];
        if (t->dtype != VLM_F32) continue;
        const float *d = t->data;
        for (int64_t k = 0; k < vlm_nelem(t); k++)
            if (!isfinite(d[k])) return 0;
    }
    return 1;
}

static void test_decode(void) {
    vlm_error err = {0};
    vlm_image im;
    CHECK(vlm_image_load(&im, DATA "image1_333x777.png", &err) == VLM_OK, "%s", err.msg);
    CHECK(im.width == 333 && im.height == 777, "%dx%d", im.width, im.height);
    vlm_image_free(&im);

    vlm_error_clear(&err);
    CHECK(vlm_image_load(&im, DATA "does_not_exist.png", &err) == VLM_ERR_IO, "missing file");
    CHECK(strstr(err.msg, "does_not_exist.png") != NULL, "message names the file: %s", err.msg);

    size_t len = 0;
    unsigned char *png = read_file(DATA "image0_640x480.png", &len);
    CHECK(png != NULL, "read png");
    if (!png) return;
    vlm_error_clear(&err);
    CHECK(vlm_image_decode(&im, png, 0, &err) == VLM_ERR_FORMAT, "empty input");
    /* every truncation fails cleanly or decodes (never crashes) */
    int failures = 0;
    for (size_t cut = 1; cut < len; cut += cut < 64 ? 1 : 997) {
        vlm_error_clear(&err);
        vlm_status s = vlm_image_decode(&im, png, cut, &err);
        if (s != VLM_OK) {
            failures++;
            CHECK(err.msg[0] != 0, "error message for a cut at %zu", cut);
        } else {
            CHECK(im.width == 640 && im.height == 480, "truncated decode size");
            vlm_image_free(&im);
        }
    }
    CHECK(failures > 0, "truncated PNGs are rejected");
    /* corrupted bytes */
    unsigned long long rng = 7;
    for (int trial = 0; trial < 40; trial++) {
        unsigned char *c = malloc(len);
        memcpy(c, png, len);
        for (int k = 0; k < 8; k++) c[(size_t)((test_randf(&rng) + 1) * 0.5 * (len - 1))] ^= (unsigned char)(1 + trial);
        vlm_error_clear(&err);
        if (vlm_image_decode(&im, c, len, &err) == VLM_OK) vlm_image_free(&im);
        free(c);
    }
    /* a header claiming a zero-size image */
    static const unsigned char bmp0[] = {'B', 'M', 58, 0, 0, 0, 0, 0, 0, 0, 54, 0, 0, 0, 40, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 24, 0, 0, 0, 0, 0, 4, 0, 0, 0,
                                         0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    vlm_error_clear(&err);
    CHECK(vlm_image_decode(&im, bmp0, sizeof bmp0, &err) != VLM_OK, "zero-size BMP rejected");
    vlm_error_clear(&err);
    CHECK(vlm_image_load(&im, DATA "fmt/empty_idat.png", &err) == VLM_ERR_FORMAT, "PNG with an empty first IDAT rejected");
    vlm_error_clear(&err);
    CHECK(vlm_image_load(&im, DATA "fmt/hdr_hang.hdr", &err) == VLM_ERR_FORMAT, "Radiance HDR not decoded (stb hangs on this one)");
    const char pnm[] = "P6\n88888888888888888888 2\n255\n";
    vlm_error_clear(&err);
    CHECK(vlm_image_decode(&im, pnm, sizeof pnm - 1, &err) == VLM_ERR_FORMAT, "PNM with a huge width rejected");
    const char junk[] = "definitely not an image";
    vlm_error_clear(&err);
    CHECK(vlm_image_decode(&im, junk, sizeof junk, &err) == VLM_ERR_FORMAT, "junk rejected");
    free(png);
}

/* Small files written by stb_image_write (fuzz/seeds/image): 12x9, channel
 * values v[i] = (i*37 + (i/4)*11) & 255 over the interleaved samples. */
static void test_formats(void) {
    vlm_error err = {0};
    vlm_image im;
    const struct { const char *file; int channels; int exact; } cases[] = {
        {"fmt/s1.png", 1, 1}, {"fmt/s2.png", 2, 1}, {"fmt/s4.png", 4, 1}, {"fmt/s3.bmp", 3, 1},
        {"fmt/s4.tga", 4, 1}, {"fmt/s3.jpg", 3, 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        vlm_error_clear(&err);
        char path[256];
        snprintf(path, sizeof path, DATA "%s", cases[c].file);
        vlm_status st = vlm_image_load(&im, path, &err);
        CHECK(st == VLM_OK, "%s: %s", path, err.msg);
        if (st) continue;
        CHECK(im.width == 12 && im.height == 9, "%s: %dx%d", path, im.width, im.height);
        int n = cases[c].channels, maxd = 0;
        for (int i = 0; i < 12 * 9; i++)
            for (int k = 0; k < 3; k++) {
                int src = n >= 3 ? k : 0; /* gray replicated, alpha dropped (PIL convert("RGB")) */
                int want = ((i * n + src) * 37 + ((i * n + src) / 4) * 11) & 255;
                int d = abs((int)im.rgb[i * 3 + k] - want);
                if (d > maxd) maxd = d;
            }
        if (cases[c].exact) CHECK(maxd == 0, "%s: pixels differ by up to %d", path, maxd);
        vlm_image_free(&im);
    }
    CHECK(vlm_image_load(&im, DATA "fmt/s.gif", &err) == VLM_OK && im.width == 2 && im.height == 2, "gif: %s", err.msg);
    vlm_image_free(&im);
    CHECK(vlm_image_load(&im, DATA "fmt/s.ppm", &err) == VLM_OK && im.width == 3 && im.height == 2 && im.rgb[0] == 'a',
          "ppm: %s", err.msg);
    vlm_image_free(&im);
    /* a JPEG Huffman table claiming more than 256 symbols (overflows stb 2.27's tables) */
    size_t len = 0;
    unsigned char *jpg = read_file(DATA "fmt/s3.jpg", &len);
    CHECK(jpg != NULL, "read jpg");
    if (jpg) {
        for (size_t i = 0; i + 5 < len; i++)
            if (jpg[i] == 0xFF && jpg[i + 1] == 0xC4) { jpg[i + 5] = 0xFF; jpg[i + 6] = 0xFF; break; }
        vlm_error_clear(&err);
        CHECK(vlm_image_decode(&im, jpg, len, &err) == VLM_ERR_FORMAT, "bad DHT rejected");
        CHECK(strstr(err.msg, "JPEG") != NULL, "%s", err.msg);
        free(jpg);
    }
}

static void test_pixels(void) {
    vlm_error err = {0};
    vlm_image im;
    /* gray+alpha and RGBA become RGB as PIL's convert("RGB"): gray replicated, alpha dropped */
    const uint8_t la[4] = {10, 200, 250, 0};
    CHECK(vlm_image_from_pixels(&im, la, 2, 1, 2, 0, &err) == VLM_OK, "%s", err.msg);
    CHECK(im.rgb[0] == 10 && im.rgb[1] == 10 && im.rgb[2] == 10 && im.rgb[3] == 250 && im.rgb[5] == 250, "LA -> RGB");
    vlm_image_free(&im);
    const uint8_t rgba[8] = {1, 2, 3, 0, 4, 5, 6, 255};
    CHECK(vlm_image_from_pixels(&im, rgba, 2, 1, 4, 0, &err) == VLM_OK, "%s", err.msg);
    CHECK(im.rgb[0] == 1 && im.rgb[2] == 3 && im.rgb[3] == 4 && im.rgb[5] == 6, "RGBA -> RGB");
    vlm_image_free(&im);
    vlm_error_clear(&err);
    CHECK(vlm_image_from_pixels(&im, rgba, 0, 1, 4, 0, &err) != VLM_OK, "zero width rejected");
    vlm_error_clear(&err);
    CHECK(vlm_image_from_pixels(&im, rgba, 2, 1, 5, 0, &err) != VLM_OK, "5 channels rejected");
}

static void test_resize(void) {
    vlm_error err = {0};
    /* a constant image stays constant through every filter, up and down */
    uint8_t *px = malloc(37 * 23 * 3);
    for (int i = 0; i < 37 * 23; i++) { px[i * 3] = 0; px[i * 3 + 1] = 128; px[i * 3 + 2] = 255; }
    vlm_image c;
    vlm_image_from_pixels(&c, px, 37, 23, 3, 0, &err);
    free(px);
    const vlm_resample filters[] = {VLM_RESAMPLE_NEAREST, VLM_RESAMPLE_LANCZOS, VLM_RESAMPLE_BILINEAR,
                                    VLM_RESAMPLE_BICUBIC, VLM_RESAMPLE_BOX, VLM_RESAMPLE_HAMMING};
    const int sizes[][2] = {{37, 23}, {100, 7}, {5, 61}, {1, 1}, {512, 512}};
    for (int f = 0; f < 6; f++)
        for (int s = 0; s < 5; s++) {
            vlm_image r;
            vlm_error_clear(&err);
            vlm_status st = vlm_image_resize(&c, sizes[s][0], sizes[s][1], filters[f], &r, &err);
            CHECK(st == VLM_OK, "%s", err.msg);
            if (st) continue;
            int ok = 1;
            for (int i = 0; i < r.width * r.height; i++)
                ok &= r.rgb[i * 3] == 0 && r.rgb[i * 3 + 1] == 128 && r.rgb[i * 3 + 2] == 255;
            CHECK(ok, "constant preserved: filter %d to %dx%d", (int)filters[f], sizes[s][0], sizes[s][1]);
            vlm_image_free(&r);
        }
    vlm_image_free(&c);
    /* a strided view resizes like the packed image */
    vlm_image g = make_gradient(64, 48), big = {0};
    uint8_t *buf = calloc((size_t)(64 * 3 + 40) * 60, 1);
    for (int y = 0; y < 48; y++) memcpy(buf + (size_t)(y + 5) * (64 * 3 + 40) + 9, g.rgb + (size_t)y * 64 * 3, 64 * 3);
    big.width = 64; big.height = 48; big.stride = 64 * 3 + 40; big.rgb = buf + 5 * (64 * 3 + 40) + 9;
    vlm_image r1, r2;
    CHECK(vlm_image_resize(&g, 29, 71, VLM_RESAMPLE_BICUBIC, &r1, &err) == VLM_OK, "%s", err.msg);
    CHECK(vlm_image_resize(&big, 29, 71, VLM_RESAMPLE_BICUBIC, &r2, &err) == VLM_OK, "%s", err.msg);
    CHECK(memcmp(r1.rgb, r2.rgb, 29 * 71 * 3) == 0, "strided view == packed image");
    vlm_image_free(&r1);
    vlm_image_free(&r2);
    free(buf);
    vlm_image_free(&g);
    vlm_error_clear(&err);
    vlm_image z = {0};
    CHECK(vlm_image_resize(&z, 4, 4, VLM_RESAMPLE_BICUBIC, &r1, &err) != VLM_OK, "empty source rejected");
}

static void test_geometry(void) {
    vlm_error err = {0};
    int h = 0, w = 0;
    /* values follow from HF's formulas (round half to even, floor/ceil branches) */
    CHECK(vlm_qwen_smart_resize(480, 640, 28, 3136, 12845056, &h, &w, &err) == VLM_OK && h == 476 && w == 644, "%dx%d", w, h);
    CHECK(vlm_qwen_smart_resize(1, 1, 28, 3136, 12845056, &h, &w, &err) == VLM_OK && h == 56 && w == 56, "1x1 -> %dx%d", w, h);
    /* exactly halfway: Python's round(2.5) is 2 (half to even), not 3 */
    CHECK(vlm_qwen_smart_resize(70, 56, 28, 3136, 12845056, &h, &w, &err) == VLM_OK && h == 56 && w == 56,
          "70/28 = 2.5 rounds to even: 56x70 -> %dx%d", w, h);
    CHECK(vlm_qwen_smart_resize(126, 98, 28, 3136, 12845056, &h, &w, &err) == VLM_OK && h == 112 && w == 112,
          "4.5 -> 4, 3.5 -> 4: 98x126 -> %dx%d", w, h);
    vlm_error_clear(&err);
    CHECK(vlm_qwen_smart_resize(1, 4000, 28, 3136, 12845056, &h, &w, &err) == VLM_ERR_ARG, "aspect ratio > 200 rejected");
    CHECK(strstr(err.msg, "aspect ratio") != NULL, "%s", err.msg);
    int cols = 0, rows = 0;
    vlm_internvl_grid(480, 640, 448, 448, 1, 12, &cols, &rows);
    CHECK(cols == 4 && rows == 3, "640x480 -> %dx%d tiles", cols, rows);
    vlm_internvl_grid(1, 4000, 448, 448, 1, 12, &cols, &rows);
    CHECK(cols == 12 && rows == 1, "1x4000 -> %dx%d tiles", cols, rows);
    vlm_error_clear(&err);
    CHECK(vlm_gemma4_target_size(1, 4000, 16, 2520, 3, &h, &w, &err) == VLM_OK && h == 48 && w == 13440, "1x4000 -> %dx%d", w, h);
    CHECK(vlm_gemma4_target_size(480, 640, 16, 2520, 3, &h, &w, &err) == VLM_OK && h * w <= 2520 * 256 && h % 48 == 0 &&
              w % 48 == 0, "%dx%d", w, h);
}

static void test_edge_images(void) {
    vlm_image_processor p[4];
    processors(p);
    const int sizes[][2] = {{1, 1}, {1, 4000}, {4000, 1}, {3, 2}, {1920, 1080}};
    for (int f = 0; f < 4; f++)
        for (int s = 0; s < 5; s++) {
            vlm_image im = make_gradient(sizes[s][0], sizes[s][1]);
            vlm_features out;
            vlm_error err = {0};
            vlm_status st = vlm_image_preprocess(&p[f], &im, 1, &out, &err);
            int extreme = sizes[s][0] / sizes[s][1] > 200 || sizes[s][1] / sizes[s][0] > 200;
            if (f == 0 && extreme) {
                CHECK(st == VLM_ERR_ARG && err.msg[0], "qwen rejects %dx%d: %s", sizes[s][0], sizes[s][1], err.msg);
            } else {
                CHECK(st == VLM_OK, "family %d, %dx%d: %s", f, sizes[s][0], sizes[s][1], err.msg);
                if (st == VLM_OK) {
                    CHECK(all_finite(&out), "finite values");
                    const vlm_tensor *pv = vlm_features_get(&out, "pixel_values");
                    CHECK(pv && vlm_nelem(pv) > 0, "pixel_values present");
                }
            }
            vlm_image_features_free(&out);
            vlm_image_free(&im);
        }
    /* no images, a NULL pixel pointer */
    vlm_features out;
    vlm_error err = {0};
    CHECK(vlm_image_preprocess(&p[0], NULL, 0, &out, &err) == VLM_ERR_ARG, "no images");
    vlm_image bad = {0};
    bad.width = 4;
    bad.height = 4;
    vlm_error_clear(&err);
    CHECK(vlm_image_preprocess(&p[3], &bad, 1, &out, &err) == VLM_ERR_ARG, "no pixels");
    vlm_image_processor g = p[3];
    g.max_soft_tokens = 100;
    vlm_image one = make_gradient(8, 8);
    vlm_error_clear(&err);
    CHECK(vlm_image_preprocess(&g, &one, 1, &out, &err) == VLM_ERR_CONFIG, "unsupported max_soft_tokens");
    vlm_image_free(&one);
}

static void test_multi_and_video(void) {
    vlm_image_processor p[4];
    processors(p);
    vlm_error err = {0};
    vlm_image ims[2] = {make_gradient(200, 150), make_gradient(90, 160)};
    /* qwen: rows of both images concatenated, one grid row per image */
    vlm_features a, b, both;
    CHECK(vlm_image_preprocess(&p[0], &ims[0], 1, &a, &err) == VLM_OK, "%s", err.msg);
    CHECK(vlm_image_preprocess(&p[0], &ims[1], 1, &b, &err) == VLM_OK, "%s", err.msg);
    CHECK(vlm_image_preprocess(&p[0], ims, 2, &both, &err) == VLM_OK, "%s", err.msg);
    const vlm_tensor *pa = vlm_features_get(&a, "pixel_values"), *pb = vlm_features_get(&b, "pixel_values");
    const vlm_tensor *pboth = vlm_features_get(&both, "pixel_values"), *g = vlm_features_get(&both, "image_grid_thw");
    CHECK(pboth->shape[0] == pa->shape[0] + pb->shape[0], "rows add up");
    CHECK(memcmp(pboth->data, pa->data, vlm_nbytes(pa)) == 0 &&
              memcmp((char *)pboth->data + vlm_nbytes(pa), pb->data, vlm_nbytes(pb)) == 0, "images in order");
    CHECK(g->shape[0] == 2 && g->shape[1] == 3, "grid [2, 3]");
    int64_t *gd = g->data;
    CHECK(gd[0] == 1 && gd[3] == 1 && gd[1] * gd[2] + gd[4] * gd[5] == pboth->shape[0], "grid matches rows");
    /* the temporal pair of an image is the image twice */
    const float *row = pa->data;
    int P = p[0].patch_size;
    CHECK(memcmp(row, row + P * P, sizeof(float) * P * P) == 0, "temporal duplicate");
    vlm_image_features_free(&a);
    vlm_image_features_free(&b);
    vlm_image_features_free(&both);

    /* video: 3 frames -> grid_t 2, the last frame repeated */
    vlm_image fr[3] = {make_gradient(112, 84), make_gradient(112, 84), make_gradient(112, 84)};
    for (int i = 0; i < 112 * 84 * 3; i++) { fr[1].rgb[i] ^= 0x55; fr[2].rgb[i] ^= 0xaa; }
    vlm_features v;
    CHECK(vlm_video_preprocess(&p[0], fr, 3, &v, &err) == VLM_OK, "%s", err.msg);
    const vlm_tensor *pv = vlm_features_get(&v, "pixel_values_videos"), *vg = vlm_features_get(&v, "video_grid_thw");
    CHECK(pv && vg, "video outputs");
    if (pv && vg) {
        int64_t *gg = vg->data;
        CHECK(gg[0] == 2 && pv->shape[0] == 2 * gg[1] * gg[2], "grid_t 2, rows %lld", (long long)pv->shape[0]);
        const float *r = (const float *)pv->data + (size_t)gg[1] * gg[2] * pv->shape[1]; /* first row of t = 1 */
        CHECK(memcmp(r, r + P * P, sizeof(float) * P * P) == 0, "last frame repeated");
        CHECK(memcmp(pv->data, (const float *)pv->data + P * P, sizeof(float) * P * P) != 0, "frames 0 and 1 differ");
    }
    vlm_image_features_free(&v);
    /* Qwen3-VL's video processor spreads its pixel budget over the frames */
    vlm_image_processor q3;
    vlm_image_processor_defaults(&q3, VLM_IMAGE_QWEN2_VL);
    q3.patch_size = 16;
    q3.min_pixels = 4096;
    q3.max_pixels = 64 * 32 * 32;
    q3.qwen3_video = 1;
    vlm_image big[8];
    for (int i = 0; i < 8; i++) big[i] = make_gradient(640, 480);
    vlm_features v2, v8;
    CHECK(vlm_video_preprocess(&q3, big, 2, &v2, &err) == VLM_OK, "%s", err.msg);
    CHECK(vlm_video_preprocess(&q3, big, 8, &v8, &err) == VLM_OK, "%s", err.msg);
    const vlm_tensor *g2 = vlm_features_get(&v2, "video_grid_thw"), *g8 = vlm_features_get(&v8, "video_grid_thw");
    if (g2 && g8) {
        int64_t *a2 = g2->data, *a8 = g8->data;
        CHECK(a2[0] == 1 && a8[0] == 4, "grid_t %lld %lld", (long long)a2[0], (long long)a8[0]);
        CHECK(a8[1] * a8[2] < a2[1] * a2[2], "more frames, smaller frames");
        CHECK(a2[0] * a2[1] * a2[2] * 16 * 16 * 2 <= q3.max_pixels && a8[0] * a8[1] * a8[2] * 16 * 16 * 2 <= q3.max_pixels,
              "budget kept");
    } else CHECK(0, "qwen3 video outputs");
    vlm_image_features_free(&v2);
    vlm_image_features_free(&v8);
    vlm_error_clear(&err);
    CHECK(vlm_video_preprocess(&q3, big, 1, &v2, &err) == VLM_ERR_ARG, "one frame < temporal_patch_size rejected (as HF)");
    { /* 5 frames, temporal patch 2: the budget check counts round(5 / 2) * 2 = 4 frames (half to even), so
         64x64 frames fit 16384 pixels and keep their size (HF smart_resize(num_frames=5, 64, 64, temporal_factor=2,
         factor=32, min_pixels=4096, max_pixels=16384) = (64, 64); 6 frames give (32, 32)) */
        vlm_image_processor q5 = q3;
        q5.min_pixels = 4096;
        q5.max_pixels = 16384;
        vlm_image five[5];
        for (int i = 0; i < 5; i++) five[i] = make_gradient(64, 64);
        vlm_features vf;
        CHECK(vlm_video_preprocess(&q5, five, 5, &vf, &err) == VLM_OK, "%s", err.msg);
        const vlm_tensor *g5 = vlm_features_get(&vf, "video_grid_thw");
        CHECK(g5 && ((int64_t *)g5->data)[1] == 4 && ((int64_t *)g5->data)[2] == 4, "5 frames of 64x64 -> grid %lldx%lld",
              g5 ? (long long)((int64_t *)g5->data)[1] : -1LL, g5 ? (long long)((int64_t *)g5->data)[2] : -1LL);
        vlm_image_features_free(&vf);
        for (int i = 0; i < 5; i++) vlm_image_free(&five[i]);
    }
    { /* the video path rounds halfway cases to even too: 80/32 = 2.5 -> 64, not 96 */
        vlm_image half[2] = {make_gradient(64, 80), make_gradient(64, 80)};
        vlm_features vh;
        CHECK(vlm_video_preprocess(&q3, half, 2, &vh, &err) == VLM_OK, "%s", err.msg);
        const vlm_tensor *gh = vlm_features_get(&vh, "video_grid_thw");
        CHECK(gh && ((int64_t *)gh->data)[1] == 4 && ((int64_t *)gh->data)[2] == 4, "64x80 video frames -> grid %lldx%lld",
              gh ? (long long)((int64_t *)gh->data)[2] : -1LL, gh ? (long long)((int64_t *)gh->data)[1] : -1LL);
        vlm_image_features_free(&vh);
        vlm_image_free(&half[0]);
        vlm_image_free(&half[1]);
    }
    for (int i = 0; i < 8; i++) vlm_image_free(&big[i]);
    vlm_image fr_bad = make_gradient(100, 84);
    vlm_image mixed[2] = {fr[0], fr_bad};
    vlm_error_clear(&err);
    CHECK(vlm_video_preprocess(&p[0], mixed, 2, &v, &err) == VLM_ERR_ARG, "frames of different sizes rejected");
    vlm_image_free(&fr_bad);
    for (int i = 0; i < 3; i++) vlm_image_free(&fr[i]);

    /* idefics3: frames of both images in one prompt; rows/cols per image */
    vlm_features id;
    vlm_error_clear(&err);
    CHECK(vlm_image_preprocess(&p[2], ims, 2, &id, &err) == VLM_OK, "%s", err.msg);
    const vlm_tensor *ip = vlm_features_get(&id, "pixel_values"), *rr = vlm_features_get(&id, "rows"),
                     *cc = vlm_features_get(&id, "cols");
    if (ip && rr && cc) {
        int64_t *R = rr->data, *C = cc->data;
        CHECK(ip->shape[0] == 1 && ip->shape[1] == R[0] * C[0] + 1 + R[1] * C[1] + 1, "frames %lld", (long long)ip->shape[1]);
    } else CHECK(0, "idefics3 outputs");
    vlm_image_features_free(&id);

    /* gemma4: one row per image, padded to the budget */
    vlm_features gm;
    CHECK(vlm_image_preprocess(&p[3], ims, 2, &gm, &err) == VLM_OK, "%s", err.msg);
    const vlm_tensor *gp = vlm_features_get(&gm, "image_position_ids"), *gn = vlm_features_get(&gm, "num_soft_tokens_per_image");
    if (gp && gn) {
        int64_t *pos = gp->data, *ns = gn->data;
        for (int i = 0; i < 2; i++) {
            int64_t valid = 0;
            for (int64_t k = 0; k < gp->shape[1]; k++) valid += pos[(i * gp->shape[1] + k) * 2] >= 0;
            CHECK(valid == ns[i] * 9, "image %d: %lld patches for %lld soft tokens", i, (long long)valid, (long long)ns[i]);
        }
    } else CHECK(0, "gemma4 outputs");
    vlm_image_features_free(&gm);
    vlm_image_free(&ims[0]);
    vlm_image_free(&ims[1]);
}

/* A PNG whose first IDAT chunk is empty is legal, but stb_image 2.27 reads
 * it with undefined behaviour: it is rejected with a clear error. */
static void test_empty_idat(void) {
    size_t len = 0;
    unsigned char *png = read_file(DATA "image0_640x480.png", &len);
    if (!png) { CHECK(0, "read the PNG"); return; }
    size_t p = 8;
    while (p + 8 <= len && memcmp(png + p + 4, "IDAT", 4))
        p += 12 + ((size_t)png[p] << 24 | (size_t)png[p + 1] << 16 | (size_t)png[p + 2] << 8 | png[p + 3]);
    unsigned char *bad = (unsigned char *)malloc(len + 12);
    memcpy(bad, png, p);
    memcpy(bad + p, "\0\0\0\0IDAT\x35\xaf\x06\x1e", 12); /* length 0, "IDAT", its CRC */
    memcpy(bad + p + 12, png + p, len - p);
    vlm_image img;
    vlm_error err = {0};
    CHECK(vlm_image_decode(&img, png, len, &err) == VLM_OK, "the PNG itself: %s", err.msg);
    vlm_image_free(&img);
    CHECK(vlm_image_decode(&img, bad, len + 12, &err) == VLM_ERR_FORMAT && strstr(err.msg, "empty first IDAT"),
          "empty first IDAT: %s", err.msg);
    free(bad);
    free(png);
}

int main(void) {
    test_empty_idat();
    test_decode();
    test_formats();
    test_pixels();
    test_resize();
    test_geometry();
    test_edge_images();
    test_multi_and_video();
    TEST_MAIN_END();
}
