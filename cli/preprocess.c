/* vlm preprocess: run a model's image processor on images and write the
 * tensors under the names the HF processor uses. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "cli.h"
#include "vlm.h"

static void preprocess_usage(FILE *f) {
    fprintf(f,
            "usage: vlm preprocess --config PREPROCESSOR_CONFIG.json|MODEL_DIR --image IMAGE [--image IMAGE ...]\n"
            "                      [--video] [--torchvision] [--out OUT.safetensors] [--f16] [--bench N]\n"
            "  The family comes from image_processor_type (Qwen2-VL/2.5-VL/3-VL, InternVL (GotOcr2),\n"
            "  Idefics3/SmolVLM, Gemma 4). Several --image are one prompt's images; with --video\n"
            "  they are the frames of one video (Qwen family). Prints the output shapes.\n"
            "  --torchvision: resize as transformers' torchvision backend (default: its PIL backend).\n"
            "  --f16: store floating outputs as F16. --bench N: time N runs.\n");
}

int cmd_preprocess(int argc, char **argv) {
    const char *config = NULL, *out = NULL;
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    int n = 0, video = 0, f16 = 0, bench = 0, tv = 0;
    if (!paths) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int has = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { preprocess_usage(stdout); free(paths); return 0; }
        else if (!strcmp(a, "--config") && has) config = argv[++i];
        else if (!strcmp(a, "--image") && has) paths[n++] = argv[++i];
        else if (!strcmp(a, "--out") && has) out = argv[++i];
        else if (!strcmp(a, "--video")) video = 1;
        else if (!strcmp(a, "--f16")) f16 = 1;
        else if (!strcmp(a, "--torchvision")) tv = 1;
        else if (!strcmp(a, "--bench") && has) {
            if (cli_int32("preprocess", a, argv[++i], 1, 1000000, &bench)) { free(paths); return 2; }
        }
        else {
            fprintf(stderr, "vlm preprocess: unknown or incomplete option '%s'\n", a);
            preprocess_usage(stderr);
            free(paths);
            return 2;
        }
    }
    if (!config || n == 0) {
        preprocess_usage(stderr);
        free(paths);
        return 2;
    }
    int rc = 1;
    vlm_error err = {0};
    vlm_image_processor p;
    vlm_features f = {0};
    vlm_image *ims = calloc((size_t)n, sizeof *ims);
    if (!ims) goto done;
    if (vlm_image_processor_load(&p, config, &err)) goto fail;
    if (tv) p.backend = VLM_BACKEND_TORCHVISION;
    for (int i = 0; i < n; i++)
        if (vlm_image_load(&ims[i], paths[i], &err)) goto fail;
    int reps = bench > 0 ? bench : 1;
    double t0 = vlm_time_s();
    for (int r = 0; r < reps; r++) {
        vlm_image_features_free(&f);
        vlm_status s = video ? vlm_video_preprocess(&p, ims, n, &f, &err) : vlm_image_preprocess(&p, ims, n, &f, &err);
        if (s) goto fail;
    }
    double ms = (vlm_time_s() - t0) * 1e3 / reps;
    printf("%s (%s)\n", p.type, video ? "video" : "images");
    for (int i = 0; i < f.n; i++) {
        const vlm_tensor *t = &f.tensors[i];
        printf("  %-28s %-4s [", f.names[i], vlm_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
        printf("]\n");
    }
    if (bench > 0) printf("preprocess: %.2f ms per call (%d runs)\n", ms, reps);
    if (out) {
        vlm_tensor conv[VLM_MAX_FEATURES];
        const vlm_tensor *tp[VLM_MAX_FEATURES];
        void *bufs[VLM_MAX_FEATURES] = {0};
        for (int i = 0; i < f.n; i++) {
            conv[i] = f.tensors[i];
            if (f16 && conv[i].dtype == VLM_F32) {
                int64_t ne = vlm_nelem(&conv[i]);
                uint16_t *h = malloc((size_t)(ne ? ne : 1) * sizeof *h);
                if (!h) { fprintf(stderr, "vlm preprocess: out of memory\n"); goto done; }
                const float *src = conv[i].data;
                for (int64_t k = 0; k < ne; k++) h[k] = vlm_f32_to_f16(src[k]);
                conv[i] = vlm_tensor_make(VLM_F16, conv[i].ndim, conv[i].shape, h);
                bufs[i] = h;
            }
            tp[i] = &conv[i];
        }
        vlm_status s = vlm_st_write(out, f.n, f.names, tp, &err);
        for (int i = 0; i < f.n; i++) free(bufs[i]);
        if (s) goto fail;
        printf("wrote %s\n", out);
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "vlm preprocess: %s\n", err.msg);
done:
    vlm_image_features_free(&f);
    for (int i = 0; ims && i < n; i++) vlm_image_free(&ims[i]);
    free(ims);
    free(paths);
    return rc;
}
