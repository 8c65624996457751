/* Made-up vision inputs for `vlm bench`: each architecture's bench_vision
 * hook picks one of these and says how its processor lays the image out. */
#include "common.h"

#include <stdlib.h>

static uint64_t bench_lcg(uint64_t *x) {
    *x = *x * 6364136223846793005ULL + 1442695040888963407ULL;
    return *x;
}

vlm_status vlm_bench_image(const vlm_model *m, vlm_image_family family, int w, int h, vlm_features *f, vlm_error *err) {
    vlm_image_processor ip;
    vlm_error ignore = {0};
    if (vlm_image_processor_load(&ip, m->dir, &ignore) != VLM_OK || ip.family != family)
        vlm_image_processor_defaults(&ip, family);
    uint8_t *rgb = (uint8_t *)malloc((size_t)w * h * 3);
    if (!rgb) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    uint64_t x = 777;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) rgb[i] = (uint8_t)(bench_lcg(&x) >> 56);
    vlm_image img = {0};
    vlm_status st = vlm_image_from_pixels(&img, rgb, w, h, 3, 0, err);
    free(rgb);
    if (st == VLM_OK) st = vlm_image_preprocess(&ip, &img, 1, f, err);
    vlm_image_free(&img);
    return st;
}

vlm_status vlm_bench_tiles(int n, int side, vlm_features *f, vlm_error *err) {
    if (n <= 0 || side <= 0) return vlm_error_set(err, VLM_ERR_ARG, "bench: %d tiles of %d pixels", n, side);
    size_t count = (size_t)n * 3 * side * side;
    float *px = (float *)malloc(sizeof(float) * count);
    if (!px) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    uint64_t x = 777;
    for (size_t i = 0; i < count; i++) px[i] = (float)((bench_lcg(&x) >> 40) & 0xffffff) / (float)0x800000 - 1.0f;
    *f = (vlm_features){.n = 1, .names = {"pixel_values"}};
    f->tensors[0] = vlm_tensor_make(VLM_F32, 4, (const int64_t[]){n, 3, side, side}, px);
    return VLM_OK;
}
