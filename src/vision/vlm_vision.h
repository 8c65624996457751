/* src/vision — image decoding and per-family preprocessing.
 *
 * Images are 8-bit RGB, row-major, channels interleaved. Decoding goes
 * through stb_image (PNG, JPEG, BMP, GIF first frame, TGA, PSD, PNM; 16-bit
 * PNG/PSD reduced to their high byte); gray, gray+alpha, palette and RGBA inputs become RGB
 * as PIL's convert("RGB") does (alpha dropped, gray replicated).
 *
 * Preprocessing reproduces the Hugging Face image processors (transformers'
 * PIL backend: 8-bit resampling with PIL's fixed-point filters, rounding to
 * uint8 after each pass) for these families, chosen by image_processor_type:
 *   Qwen2VLImageProcessor[Fast]   (Qwen2-VL, Qwen2.5-VL, Qwen3-VL)
 *   GotOcr2ImageProcessor[Fast]   (InternVL3 "-hf" checkpoints)
 *   Idefics3ImageProcessor, SmolVLMImageProcessor (Idefics3 / SmolVLM)
 *   Gemma4ImageProcessor
 * and returns the tensors the HF processor returns, under the same names
 * and layouts (host memory owned by the vlm_features; vlm_image_features_free).
 *
 *   name                          family     dtype  shape
 *   pixel_values                  qwen       F32    [sum t*h*w, C*T*P*P]
 *   image_grid_thw                qwen       I64    [n_images, 3]
 *   pixel_values_videos           qwen video F32    [sum t*h*w, C*T*P*P]
 *   video_grid_thw                qwen video I64    [n_videos, 3]
 *   pixel_values                  internvl   F32    [n_tiles, 3, H, W]
 *   num_patches                   internvl   I64    [n_images] (tiles per image)
 *   pixel_values                  idefics3   F32    [1, n_frames, 3, H, W]
 *   pixel_attention_mask          idefics3   I64    [1, n_frames, H, W]
 *   rows, cols                    idefics3   I64    [n_images] (split grid; 0 = not split)
 *   pixel_values                  gemma4     F32    [n_images, max_patches, P*P*3]
 *   image_position_ids            gemma4     I64    [n_images, max_patches, 2] (x, y; -1 = pad)
 *   num_soft_tokens_per_image     gemma4     I64    [n_images]
 * (Idefics3: all images of a call are one prompt's images, as HF nests them.)
 *
 * Owns: decoding (stb_image behind a wrapper that rejects what stb gets
 * wrong), PIL- and torchvision-exact resampling, and each family's image
 * processor driven by its preprocessor_config.json; video frames next.
 * May call: core, io (JSON files). Produces vlm_features; never runs a model.
 */
#ifndef VLM_VISION_H
#define VLM_VISION_H

#include "core/vlm_core.h"
#include "io/vlm_io.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Largest image the decoders accept (pixels); larger files fail cleanly. */
#ifndef VLM_IMAGE_MAX_PIXELS
#define VLM_IMAGE_MAX_PIXELS (1LL << 28)
#endif

/* An 8-bit RGB image. `rgb` points at row 0; row y starts at rgb + y*stride.
 * A caller may fill one over its own frame buffer (owned = 0) and pass it to
 * the preprocessors without a copy; images from the load functions own
 * their pixels (owned = 1) and are released with vlm_image_free. */
typedef struct vlm_image {
    int width, height;
    int stride;        /* bytes per row; 0 means width*3 */
    uint8_t *rgb;
    int owned;
} vlm_image;

/* Decode an image file / an in-memory encoded image (PNG, JPEG, BMP, ...). */
vlm_status vlm_image_load(vlm_image *img, const char *path, vlm_error *err);
vlm_status vlm_image_decode(vlm_image *img, const void *data, size_t len, vlm_error *err);
/* The same under a pixel budget (max_pixels <= 0: vlm_limits_default()'s):
 * an image whose header declares more is refused with VLM_ERR_LIMIT before
 * any pixel is decoded or allocated. The two above use the default. */
vlm_status vlm_image_load_limited(vlm_image *img, const char *path, int64_t max_pixels, vlm_error *err);
vlm_status vlm_image_decode_limited(vlm_image *img, const void *data, size_t len, int64_t max_pixels, vlm_error *err);
/* The budget check itself, for pixels that arrive already decoded. */
vlm_status vlm_image_check_pixels(int width, int height, int64_t max_pixels, vlm_error *err);
/* Copy raw pixels: channels 1 (gray), 2 (gray+alpha), 3 (RGB), 4 (RGBA);
 * stride in bytes (0 = width*channels). Converted to RGB like PIL. */
vlm_status vlm_image_from_pixels(vlm_image *img, const uint8_t *pixels, int width, int height,
                                 int channels, int stride, vlm_error *err);
void vlm_image_free(vlm_image *img);

/* Resampling filters, numbered as PIL's Image.Resampling. */
typedef enum vlm_resample {
    VLM_RESAMPLE_NEAREST = 0,
    VLM_RESAMPLE_LANCZOS = 1,
    VLM_RESAMPLE_BILINEAR = 2,
    VLM_RESAMPLE_BICUBIC = 3,
    VLM_RESAMPLE_BOX = 4,
    VLM_RESAMPLE_HAMMING = 5,
} vlm_resample;

/* Resize as PIL's Image.resize((width, height), filter) on an RGB image:
 * separable passes (horizontal first), filter support scaled by the
 * downscale factor, 22-bit fixed-point weights, each pass rounded and
 * clipped to uint8. dst receives a new owned image. */
vlm_status vlm_image_resize(const vlm_image *src, int width, int height, vlm_resample filter,
                            vlm_image *dst, vlm_error *err);

/* The resize of transformers' torchvision backend (its default) on uint8
 * images: torch's antialiased uint8 kernels, the same passes with weights of
 * int16 range (precision chosen from the largest weight); LANCZOS falls back
 * to BICUBIC as transformers does there. */
vlm_status vlm_image_resize_tv(const vlm_image *src, int width, int height, vlm_resample filter,
                               vlm_image *dst, vlm_error *err);

/* Which of transformers' two backends to reproduce. */
typedef enum vlm_image_backend {
    VLM_BACKEND_PIL = 0,     /* PIL backend (default here): PIL's 8-bit resampling, true Lanczos */
    VLM_BACKEND_TORCHVISION, /* torchvision backend (transformers 5's default) */
} vlm_image_backend;

typedef enum vlm_image_family {
    VLM_IMAGE_QWEN2_VL = 1, /* Qwen2-VL, Qwen2.5-VL, Qwen3-VL */
    VLM_IMAGE_INTERNVL,     /* GotOcr2 dynamic tiling (InternVL3 -hf) */
    VLM_IMAGE_IDEFICS3,     /* Idefics3, SmolVLM */
    VLM_IMAGE_GEMMA4,
} vlm_image_family;

/* An image processor's settings (preprocessor_config.json, or the
 * "image_processor" object of processor_config.json). Unset keys take the
 * HF class defaults. */
typedef struct vlm_image_processor {
    vlm_image_family family;
    vlm_image_backend backend;  /* VLM_BACKEND_PIL unless set by the caller */
    char type[64];              /* image_processor_type as given */
    int do_resize, do_rescale, do_normalize, do_convert_rgb;
    vlm_resample resample;
    double rescale_factor;
    float image_mean[3], image_std[3];
    /* Qwen2-VL family */
    int patch_size, temporal_patch_size, merge_size;
    int64_t min_pixels, max_pixels; /* size.shortest_edge / size.longest_edge */
    int qwen3_video;                /* Qwen3VLVideoProcessor: the pixel budget covers all frames */
    /* InternVL (GotOcr2) */
    int tile_height, tile_width;    /* size.height / size.width */
    int crop_to_patches, min_patches, max_patches;
    /* Idefics3 / SmolVLM */
    int longest_edge;               /* size.longest_edge */
    int max_image_size;             /* max_image_size.longest_edge */
    int do_image_splitting, do_pad;
    /* Gemma 4 (patch_size shared with Qwen) */
    int max_soft_tokens, pooling_kernel_size;
} vlm_image_processor;

/* Class defaults for a family. */
void vlm_image_processor_defaults(vlm_image_processor *p, vlm_image_family family);
/* From a parsed preprocessor_config.json / processor_config.json object. */
vlm_status vlm_image_processor_from_json(vlm_image_processor *p, const vlm_json *j, vlm_error *err);
/* path: a JSON file, or a model directory holding preprocessor_config.json
 * or processor_config.json. */
vlm_status vlm_image_processor_load(vlm_image_processor *p, const char *path, vlm_error *err);

/* Preprocess n images (one prompt's images, in order) into *out (zeroed
 * first). Free with vlm_image_features_free. */
vlm_status vlm_image_preprocess(const vlm_image_processor *p, const vlm_image *images, int n,
                                vlm_features *out, vlm_error *err);
/* Qwen family: the frames of one video (all the same size, already sampled)
 * into pixel_values_videos / video_grid_thw; frames are grouped by
 * temporal_patch_size, the last one repeated to fill the last group. Load
 * the processor from video_preprocessor_config.json: Qwen2VLVideoProcessor
 * sizes each frame like an image; Qwen3VLVideoProcessor spreads its budget
 * over the frames (transformers' default, cap_pixels_per_frame unset). */
vlm_status vlm_video_preprocess(const vlm_image_processor *p, const vlm_image *frames, int n,
                                vlm_features *out, vlm_error *err);
/* Frees tensors made by the preprocessors (and resets *f). */
void vlm_image_features_free(vlm_features *f);

/* Geometry helpers (exposed for tests and for prompt assembly). */
/* Qwen smart_resize: (height, width) -> multiples of factor within [min, max] pixels. */
vlm_status vlm_qwen_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels,
                                 int *out_h, int *out_w, vlm_error *err);
/* InternVL: best tile grid (columns, rows) for an image. */
void vlm_internvl_grid(int height, int width, int tile_h, int tile_w, int min_tiles, int max_tiles,
                       int *cols, int *rows);
/* Gemma 4: target size for a patch budget. */
vlm_status vlm_gemma4_target_size(int height, int width, int patch_size, int max_patches, int pooling,
                                  int *out_h, int *out_w, vlm_error *err);

#ifdef __cplusplus
}
#endif
#endif /* VLM_VISION_H */
