/* libFuzzer target: decode arbitrary bytes as an image, then run every image
 * processor family on the result (plus a resize with a size taken from the
 * input). Build with `make fuzz`; run e.g.
 *   ./build-fuzz/fuzz_image -max_total_time=60 -rss_limit_mb=4096 tests/data/img/
 * Decoded images are capped in size (VLM_IMAGE_MAX_PIXELS is lowered for the
 * fuzz build) so that huge headers fail fast instead of exhausting memory. */
#include "vlm.h"

#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vlm_error err = {0};
    vlm_image im;
    if (vlm_image_decode(&im, data, size, &err) != VLM_OK) return 0;
    vlm_image_processor p[4];
    vlm_image_processor_defaults(&p[0], VLM_IMAGE_QWEN2_VL);
    p[0].max_pixels = 16 * 28 * 28; /* small settings keep each run fast */
    vlm_image_processor_defaults(&p[1], VLM_IMAGE_INTERNVL);
    p[1].tile_height = p[1].tile_width = 16;
    p[1].max_patches = 6;
    p[1].crop_to_patches = 1;
    vlm_image_processor_defaults(&p[2], VLM_IMAGE_IDEFICS3);
    p[2].longest_edge = 64;
    p[2].max_image_size = 32;
    vlm_image_processor_defaults(&p[3], VLM_IMAGE_GEMMA4);
    p[3].max_soft_tokens = 70;
    p[3].patch_size = 4;
    for (int f = 0; f < 4; f++) {
        vlm_features out;
        vlm_error_clear(&err);
        if (vlm_image_preprocess(&p[f], &im, 1, &out, &err) == VLM_OK) vlm_image_features_free(&out);
    }
    int w = size > 0 ? 1 + data[size - 1] % 97 : 1, h = size > 1 ? 1 + data[size - 2] % 89 : 1;
    for (int r = 0; r <= 5; r++) {
        vlm_image o;
        vlm_error_clear(&err);
        if (vlm_image_resize(&im, w, h, (vlm_resample)r, &o, &err) == VLM_OK) vlm_image_free(&o);
    }
    vlm_image_free(&im);
    return 0;
}
