/* The image processors against the inputs transformers fed the models of the
 * golden cases (tests/golden/<case>/: image.png [image2.png], the processor
 * settings in case.json, inputs.safetensors from the default torchvision
 * backend, reproduced by VLM_BACKEND_TORCHVISION): every output both have
 * must agree, integers exactly, pixel values within mean abs err <= 0.01 and
 * max abs err <= 0.1 -- in fact exactly (these references are f32): the
 * largest difference allowed is 1e-5. */
#include "vlm.h"
#include "test_util.h"

#include <dirent.h>

#define CASES "tests/golden"

static int file_exists(const char *p) { return vlm_path_kind(p) == 1; }

static void run_case(const char *name) {
    char path[1024];
    vlm_error err = {0};
    snprintf(path, sizeof path, CASES "/%.200s/case.json", name);
    vlm_json *cj = vlm_json_load(path, &err);
    if (!cj) { CHECK(0, "%s", err.msg); return; }
    const vlm_json *ipj = vlm_json_get(cj, "image_processor");
    snprintf(path, sizeof path, CASES "/%.200s/frame0.png", name);
    int video = file_exists(path);
    snprintf(path, sizeof path, CASES "/%.200s/image.png", name);
    if (!ipj || (!video && !file_exists(path))) { vlm_json_free(cj); return; } /* text-only case */
    vlm_image_processor p;
    if (vlm_image_processor_from_json(&p, ipj, &err)) { CHECK(0, "%s: %s", name, err.msg); vlm_json_free(cj); return; }
    vlm_json_free(cj);
    p.backend = VLM_BACKEND_TORCHVISION; /* the backend that made these inputs */
    if (video) {
        /* case.json records the image processor; the video one that made the
         * frames' inputs had size {shortest_edge: 56*56, longest_edge: 28*28*16}
         * (gen/gen_golden.py) */
        p.min_pixels = 56 * 56;
        p.max_pixels = 28 * 28 * 16;
    }
    vlm_image ims[8];
    int n = 0;
    const char *files[8] = {"image.png", "image2.png"};
    if (video) {
        static const char *const fr[8] = {"frame0.png", "frame1.png", "frame2.png", "frame3.png",
                                          "frame4.png", "frame5.png", "frame6.png", "frame7.png"};
        memcpy(files, fr, sizeof fr);
    }
    for (int i = 0; i < 8 && files[i]; i++) {
        snprintf(path, sizeof path, CASES "/%.200s/%s", name, files[i]);
        if (!file_exists(path)) break;
        if (vlm_image_load(&ims[n], path, &err)) { CHECK(0, "%s", err.msg); goto out; }
        n++;
    }
    vlm_safetensors in;
    snprintf(path, sizeof path, CASES "/%.200s/inputs.safetensors", name);
    if (vlm_st_open(&in, path, &err)) { CHECK(0, "%s", err.msg); goto out; }
    vlm_features f;
    if ((video ? vlm_video_preprocess(&p, ims, n, &f, &err) : vlm_image_preprocess(&p, ims, n, &f, &err))) { CHECK(0, "%s: %s", name, err.msg); vlm_st_close(&in); goto out; }
    int compared = 0;
    for (int i = 0; i < f.n; i++) {
        const vlm_st_entry *e = vlm_st_find(&in, f.names[i]);
        if (!e) continue;
        vlm_tensor r = vlm_st_tensor(e);
        const vlm_tensor *m = &f.tensors[i];
        int same_shape = r.ndim == m->ndim;
        for (int d = 0; same_shape && d < r.ndim; d++) same_shape = r.shape[d] == m->shape[d];
        CHECK(same_shape, "%s: %s shape differs", name, f.names[i]);
        if (!same_shape) continue;
        compared++;
        int64_t ne = vlm_nelem(m);
        if (m->dtype == VLM_F32) {
            double sum = 0, mx = 0;
            for (int64_t k = 0; k < ne; k++) {
                double d = fabs((double)vlm_get_f32(m, k) - (double)vlm_get_f32(&r, k));
                if (!(d == d)) d = INFINITY;
                sum += d;
                if (d > mx) mx = d;
            }
            printf("  %-18s %-22s mean abs err %.2e, max abs err %.2e\n", name, f.names[i], ne ? sum / ne : 0, mx);
            CHECK(ne && sum / ne <= 0.01 && mx <= 0.1, "%s: %s differs", name, f.names[i]);
            CHECK(mx <= 1e-5, "%s: %s not exact (max abs err %.2e)", name, f.names[i], mx);
        } else {
            int64_t bad = 0;
            for (int64_t k = 0; k < ne; k++) bad += vlm_get_i64(m, k) != (int64_t)vlm_get_f32(&r, k);
            printf("  %-18s %-22s %lld of %lld differ\n", name, f.names[i], (long long)bad, (long long)ne);
            CHECK(bad == 0, "%s: %s: %lld elements differ", name, f.names[i], (long long)bad);
        }
    }
    CHECK(compared > 0, "%s: no output to compare", name);
    vlm_image_features_free(&f);
    vlm_st_close(&in);
out:
    for (int i = 0; i < n; i++) vlm_image_free(&ims[i]);
}

int main(void) {
    DIR *d = opendir(CASES);
    CHECK(d != NULL, "no %s", CASES);
    if (!d) TEST_MAIN_END();
    char names[64][256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 64)
        if (de->d_name[0] != '.') snprintf(names[n++], sizeof names[0], "%s", de->d_name);
    closedir(d);
    for (int i = 0; i < n; i++) run_case(names[i]);
    TEST_MAIN_END();
}
