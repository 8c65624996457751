/* The five image processors against transformers' outputs at the real
 * checkpoints' settings (tests/data/img, trimmed from preprocess.tar.gz by
 * tests/data/img/make_refs.py): every integer output identical; pixel values
 * (a prime-strided subsample) within mean abs err <= 0.01 and max abs err
 * <= 0.1 of the reference, for each of our two backends against the HF
 * backend it reproduces (pil, torchvision); both are exact up to the f16
 * storage of the references, which is checked too (max abs err <= 2e-3).
 * With VLM_PREPROCESS_REFS=<unpacked preprocess/ folder> the full reference
 * tensors are compared as well (not needed by make test). */
#include "vlm.h"
#include "test_util.h"

#define DATA "tests/data/img/"

static const char *const archs[] = {"qwen2_5_vl", "qwen3_vl", "internvl", "idefics3", "gemma4"};
static const char *const images[] = {"image0_640x480.png", "image1_333x777.png", "image2_1024x256.png"};

typedef struct err_stats {
    double mean, max;
} err_stats;

/* mine[flat index j*stride] vs ref[j] */
static err_stats compare_sub(const vlm_tensor *mine, const vlm_st_entry *ref, int64_t stride) {
    vlm_tensor r = vlm_st_tensor(ref);
    int64_t n = vlm_nelem(&r), total = vlm_nelem(mine);
    err_stats e = {0, 0};
    if (n == 0) return e;
    for (int64_t j = 0; j < n; j++) {
        if (j * stride >= total) { e.max = INFINITY; break; }
        double d = fabs((double)vlm_get_f32(mine, j * stride) - (double)vlm_get_f32(&r, j));
        if (!(d == d)) d = INFINITY;
        e.mean += d;
        if (d > e.max) e.max = d;
    }
    e.mean /= n;
    return e;
}

static int ints_equal(const vlm_tensor *mine, const vlm_st_entry *ref, const char *what) {
    vlm_tensor r = vlm_st_tensor(ref);
    if (r.ndim != mine->ndim) { fprintf(stderr, "%s: ndim %d vs %d\n", what, mine->ndim, r.ndim); return 0; }
    for (int d = 0; d < r.ndim; d++)
        if (r.shape[d] != mine->shape[d]) { fprintf(stderr, "%s: shape differs at dim %d\n", what, d); return 0; }
    for (int64_t i = 0; i < vlm_nelem(&r); i++)
        if (vlm_get_i64(mine, i) != vlm_get_i64(&r, i)) {
            fprintf(stderr, "%s: element %lld: %lld vs %lld\n", what, (long long)i, (long long)vlm_get_i64(mine, i),
                    (long long)vlm_get_i64(&r, i));
            return 0;
        }
    return 1;
}

/* Optional: the full reference tensors of both backends. */
static void compare_full(const char *dir, const char *arch, int img, const vlm_features *f) {
    const char *backends[] = {"pil", "torchvision"};
    for (int b = 0; b < 2; b++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s.%s.%d.safetensors", dir, arch, backends[b], img);
        vlm_safetensors st;
        vlm_error err = {0};
        if (vlm_st_open(&st, path, &err)) { CHECK(0, "%s", err.msg); continue; }
        for (int i = 0; i < st.n_entries; i++) {
            const vlm_st_entry *e = &st.entries[i];
            const vlm_tensor *mine = vlm_features_get(f, e->name);
            CHECK(mine != NULL, "%s: output %s missing", path, e->name);
            if (!mine) continue;
            vlm_tensor r = vlm_st_tensor(e);
            CHECK(vlm_nelem(&r) == vlm_nelem(mine), "%s: %s sizes differ", path, e->name);
            if (vlm_nelem(&r) != vlm_nelem(mine)) continue;
            if (!strcmp(e->name, "pixel_values")) {
                err_stats s = compare_sub(mine, e, 1);
                printf("  full %-11s %-10s image %d: mean abs err %.2e, max abs err %.2e\n", backends[b], arch, img, s.mean, s.max);
            } else {
                int same = 1;
                for (int64_t k = 0; k < vlm_nelem(&r) && same; k++) same = vlm_get_i64(mine, k) == (int64_t)vlm_get_f32(&r, k);
                CHECK(same, "%s: %s differs from the full reference", path, e->name);
            }
        }
        vlm_st_close(&st);
    }
}

static void run_case(const char *arch, int img, int backend, const char *full_dir) {
    char path[512];
    vlm_error err = {0};
    vlm_image_processor p;
    snprintf(path, sizeof path, DATA "configs/%s.json", arch);
    if (vlm_image_processor_load(&p, path, &err)) { CHECK(0, "%s", err.msg); return; }
    p.backend = (vlm_image_backend)backend;
    vlm_image im;
    snprintf(path, sizeof path, DATA "%s", images[img]);
    if (vlm_image_load(&im, path, &err)) { CHECK(0, "%s", err.msg); return; }
    vlm_features f;
    if (vlm_image_preprocess(&p, &im, 1, &f, &err)) { CHECK(0, "%s %d: %s", arch, img, err.msg); vlm_image_free(&im); return; }
    vlm_safetensors ref;
    snprintf(path, sizeof path, DATA "ref_%s_%d.safetensors", arch, img);
    if (vlm_st_open(&ref, path, &err)) { CHECK(0, "%s", err.msg); goto out; }

    const vlm_tensor *pv = vlm_features_get(&f, "pixel_values");
    const vlm_st_entry *shape = vlm_st_find(&ref, "pixel_values.shape"), *stride = vlm_st_find(&ref, "pixel_values.stride");
    CHECK(pv && shape && stride, "%s: pixel_values / reference entries", path);
    if (!pv || !shape || !stride) goto close;
    {
        vlm_tensor sh = vlm_st_tensor(shape);
        int same = sh.shape[0] == pv->ndim;
        for (int d = 0; same && d < pv->ndim; d++) same = vlm_get_i64(&sh, d) == pv->shape[d];
        CHECK(same, "%s %d: pixel_values shape", arch, img);
        if (!same) goto close;
        vlm_tensor stv = vlm_st_tensor(stride);
        int64_t s = vlm_get_i64(&stv, 0);
        const char *tags[2] = {"pil", "tv"};
        for (int b = 0; b < 2; b++) {
            char name[64];
            snprintf(name, sizeof name, "%s.pixel_values", tags[b]);
            const vlm_st_entry *e = vlm_st_find(&ref, name);
            CHECK(e != NULL, "%s: %s", path, name);
            if (!e) continue;
            err_stats es = compare_sub(pv, e, s);
            printf("  %-11s %-10s image %d vs %-3s: mean abs err %.2e, max abs err %.2e\n",
                   backend ? "torchvision" : "pil", arch, img, tags[b], es.mean, es.max);
            if (b == backend) {
                CHECK(es.mean <= 0.01 && es.max <= 0.1, "%s image %d: pixel values do not match the %s reference", arch, img, tags[b]);
                CHECK(es.max <= 2e-3, "%s image %d: %s backend not exact (max abs err %.2e)", arch, img, tags[b], es.max);
            }
        }
    }
    /* integer outputs, in full */
    for (int i = 0; i < ref.n_entries; i++) {
        const vlm_st_entry *e = &ref.entries[i];
        if (strchr(e->name, '.')) continue; /* pixel values / shapes / mask rectangles */
        const vlm_tensor *mine = vlm_features_get(&f, e->name);
        CHECK(mine != NULL, "%s %d: output %s missing", arch, img, e->name);
        if (mine) CHECK(ints_equal(mine, e, e->name), "%s %d: %s differs", arch, img, e->name);
    }
    const vlm_st_entry *rect = vlm_st_find(&ref, "pixel_attention_mask.rect");
    if (rect) {
        const vlm_tensor *m = vlm_features_get(&f, "pixel_attention_mask");
        const vlm_st_entry *msh = vlm_st_find(&ref, "pixel_attention_mask.shape");
        CHECK(m && msh, "%s %d: pixel_attention_mask", arch, img);
        if (m && msh) {
            vlm_tensor sh = vlm_st_tensor(msh), rc = vlm_st_tensor(rect);
            int same = sh.shape[0] == m->ndim;
            for (int d = 0; same && d < m->ndim; d++) same = vlm_get_i64(&sh, d) == m->shape[d];
            CHECK(same, "%s %d: mask shape", arch, img);
            if (same) {
                int64_t H = m->shape[m->ndim - 2], W = m->shape[m->ndim - 1], nf = vlm_nelem(m) / (H * W);
                int64_t bad = 0;
                for (int64_t fr = 0; fr < nf; fr++) {
                    int64_t hh = vlm_get_i64(&rc, fr * 2), ww = vlm_get_i64(&rc, fr * 2 + 1);
                    for (int64_t y = 0; y < H; y++)
                        for (int64_t x = 0; x < W; x++)
                            bad += vlm_get_i64(m, (fr * H + y) * W + x) != (y < hh && x < ww);
                }
                CHECK(bad == 0, "%s %d: %lld mask elements differ", arch, img, (long long)bad);
            }
        }
    }
    if (full_dir && backend == VLM_BACKEND_PIL) compare_full(full_dir, arch, img, &f);
close:
    vlm_st_close(&ref);
out:
    vlm_image_features_free(&f);
    vlm_image_free(&im);
}

int main(void) {
    const char *full = getenv("VLM_PREPROCESS_REFS");
    for (int a = 0; a < 5; a++)
        for (int i = 0; i < 3; i++)
            for (int b = 0; b < 2; b++) run_case(archs[a], i, b, full);
    TEST_MAIN_END();
}
