/* Image resampling (PIL-exact) and the per-family image processors. */
#include "vision/vlm_vision.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

/* ------------------------------------------------------------------ images */

static int img_stride(const vlm_image *im) { return im->stride ? im->stride : im->width * 3; }

static vlm_status img_check(const vlm_image *im, const char *what, vlm_error *err) {
    if (!im || !im->rgb) return vlm_error_set(err, VLM_ERR_ARG, "%s: no pixels", what);
    if (im->width <= 0 || im->height <= 0)
        return vlm_error_set(err, VLM_ERR_ARG, "%s: zero-size image (%dx%d)", what, im->width, im->height);
    if ((long long)im->width * im->height > VLM_IMAGE_MAX_PIXELS)
        return vlm_error_set(err, VLM_ERR_ARG, "%s: %dx%d image exceeds the pixel limit", what, im->width, im->height);
    if (im->stride && im->stride < im->width * 3)
        return vlm_error_set(err, VLM_ERR_ARG, "%s: stride %d < 3*width", what, im->stride);
    return VLM_OK;
}

static vlm_status img_alloc(vlm_image *im, int w, int h, vlm_error *err) {
    memset(im, 0, sizeof *im);
    if (w <= 0 || h <= 0) return vlm_error_set(err, VLM_ERR_ARG, "image: invalid size %dx%d", w, h);
    if ((long long)w * h > VLM_IMAGE_MAX_PIXELS)
        return vlm_error_set(err, VLM_ERR_ARG, "image: %dx%d exceeds the pixel limit", w, h);
    im->rgb = malloc((size_t)w * h * 3);
    if (!im->rgb) return vlm_error_set(err, VLM_ERR_OOM, "image: out of memory for %dx%d", w, h);
    im->width = w;
    im->height = h;
    im->stride = w * 3;
    im->owned = 1;
    return VLM_OK;
}

void vlm_image_free(vlm_image *img) {
    if (!img) return;
    if (img->owned) free(img->rgb);
    memset(img, 0, sizeof *img);
}

vlm_status vlm_image_from_pixels(vlm_image *img, const uint8_t *pixels, int width, int height, int channels,
                                 int stride, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(img, 0, sizeof *img);
    if (!pixels) return vlm_error_set(err, VLM_ERR_ARG, "image: no pixels");
    if (channels < 1 || channels > 4) return vlm_error_set(err, VLM_ERR_ARG, "image: %d channels (1-4 supported)", channels);
    if (stride == 0) stride = width * channels;
    if (width > 0 && stride < width * channels) return vlm_error_set(err, VLM_ERR_ARG, "image: stride %d too small", stride);
    vlm_status s = img_alloc(img, width, height, err);
    if (s) return s;
    for (int y = 0; y < height; y++) {
        const uint8_t *src = pixels + (size_t)y * stride;
        uint8_t *dst = img->rgb + (size_t)y * width * 3;
        for (int x = 0; x < width; x++, src += channels, dst += 3) {
            if (channels >= 3) { dst[0] = src[0]; dst[1] = src[1]; dst[2] = src[2]; }
            else dst[0] = dst[1] = dst[2] = src[0]; /* L and LA: gray replicated, alpha dropped */
        }
    }
    return VLM_OK;
}

/* A view of a rectangle of an image (no copy). */
static vlm_image img_crop_view(const vlm_image *im, int x0, int y0, int w, int h) {
    vlm_image v;
    v.width = w;
    v.height = h;
    v.stride = img_stride(im);
    v.rgb = im->rgb + (size_t)y0 * v.stride + (size_t)x0 * 3;
    v.owned = 0;
    return v;
}

/* ------------------------------------------------------------------ resampling (PIL) */

/* Filters and supports as PIL's Resample.c defines them. */
static double img_f_box(double x) { return (x > -0.5 && x <= 0.5) ? 1.0 : 0.0; }
static double img_f_bilinear(double x) {
    if (x < 0.0) x = -x;
    return x < 1.0 ? 1.0 - x : 0.0;
}
static double img_f_hamming(double x) {
    if (x < 0.0) x = -x;
    if (x == 0.0) return 1.0;
    if (x >= 1.0) return 0.0;
    x = x * M_PI;
    return sin(x) / x * (0.54 + 0.46 * cos(x));
}
static double img_f_bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}
static double img_sinc(double x) {
    if (x == 0.0) return 1.0;
    x = x * M_PI;
    return sin(x) / x;
}
static double img_f_lanczos(double x) {
    if (-3.0 <= x && x < 3.0) return img_sinc(x) * img_sinc(x / 3);
    return 0.0;
}

typedef struct img_filter {
    double (*fn)(double);
    double support;
} img_filter;

static int img_get_filter(vlm_resample r, img_filter *f) {
    switch (r) {
    case VLM_RESAMPLE_BOX: f->fn = img_f_box; f->support = 0.5; return 1;
    case VLM_RESAMPLE_BILINEAR: f->fn = img_f_bilinear; f->support = 1.0; return 1;
    case VLM_RESAMPLE_HAMMING: f->fn = img_f_hamming; f->support = 1.0; return 1;
    case VLM_RESAMPLE_BICUBIC: f->fn = img_f_bicubic; f->support = 2.0; return 1;
    case VLM_RESAMPLE_LANCZOS: f->fn = img_f_lanczos; f->support = 3.0; return 1;
    default: return 0;
    }
}

#define IMG_PRECISION_BITS (32 - 8 - 2)

/* Per output pixel: first input index, tap count, and ksize fixed-point weights. */
typedef struct img_coeffs {
    int ksize;
    int *bounds;   /* [out, 2]: xmin, count */
    int32_t *kk;   /* [out, ksize] fixed point with `prec` fractional bits */
    int prec;
} img_coeffs;

static void img_coeffs_free(img_coeffs *c) {
    free(c->bounds);
    free(c->kk);
    memset(c, 0, sizeof *c);
}

/* prec 0: PIL's 22-bit weights; -1: torch's uint8 kernels, which pick the
 * largest precision that keeps the largest weight within int16. */
static vlm_status img_precompute(int in_size, int out_size, const img_filter *f, int prec, img_coeffs *c, vlm_error *err) {
    memset(c, 0, sizeof *c);
    double scale = (double)(float)in_size / out_size, filterscale = scale;
    if (filterscale < 1.0) filterscale = 1.0;
    double support = f->support * filterscale;
    int ksize = (int)ceil(support) * 2 + 1;
    size_t nk = (size_t)out_size * ksize;
    double *kd = malloc(nk * sizeof *kd);
    c->kk = malloc(nk * sizeof *c->kk);
    c->bounds = malloc((size_t)out_size * 2 * sizeof *c->bounds);
    if (!kd || !c->kk || !c->bounds) {
        free(kd);
        img_coeffs_free(c);
        return vlm_error_set(err, VLM_ERR_OOM, "resize: out of memory for filter weights");
    }
    c->ksize = ksize;
    double maxw = 0;
    for (int xx = 0; xx < out_size; xx++) {
        double center = (xx + 0.5) * scale, ww = 0.0, ss = 1.0 / filterscale;
        double *k = kd + (size_t)xx * ksize;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize) xmax = ksize; /* cannot happen; keeps the loop bounded */
        if (xmax < 0) xmax = 0;
        int x = 0;
        for (; x < xmax; x++) {
            double w = f->fn((x + xmin - center + 0.5) * ss);
            k[x] = w;
            ww += w;
        }
        for (x = 0; x < xmax; x++) {
            if (ww != 0.0) k[x] /= ww;
            if (k[x] > maxw) maxw = k[x];
        }
        for (; x < ksize; x++) k[x] = 0;
        c->bounds[xx * 2] = xmin;
        c->bounds[xx * 2 + 1] = xmax;
    }
    if (prec < 0) {
        for (prec = 0; prec < 22; prec++)
            if ((int)(0.5 + maxw * (1 << (prec + 1))) >= (1 << 15)) break;
    } else
        prec = IMG_PRECISION_BITS;
    c->prec = prec;
    for (size_t i = 0; i < nk; i++) {
        c->kk[i] = kd[i] < 0 ? (int32_t)(-0.5 + kd[i] * (1 << prec)) : (int32_t)(0.5 + kd[i] * (1 << prec));
    }
    free(kd);
    return VLM_OK;
}

static inline uint8_t img_clip8p(int32_t in, int prec) {
    if (in >= (1 << prec << 8)) return 255;
    if (in <= 0) return 0;
    return (uint8_t)(in >> prec);
}
#define img_clip8(in) img_clip8p(in, c->prec)

/* Horizontal pass over rows [y0, y0 + rows) of src into dst (out_w wide, `rows` rows). */
static void img_pass_h(const vlm_image *src, int y0, int rows, vlm_image *dst, const img_coeffs *c) {
    int sst = img_stride(src), dst_st = img_stride(dst);
    for (int y = 0; y < rows; y++) {
        const uint8_t *in = src->rgb + (size_t)(y + y0) * sst;
        uint8_t *out = dst->rgb + (size_t)y * dst_st;
        for (int xx = 0; xx < dst->width; xx++) {
            int xmin = c->bounds[xx * 2], xmax = c->bounds[xx * 2 + 1];
            const int32_t *k = c->kk + (size_t)xx * c->ksize;
            const uint8_t *p = in + (size_t)xmin * 3;
            int32_t s0 = 1 << (c->prec - 1), s1 = s0, s2 = s0;
            for (int x = 0; x < xmax; x++, p += 3) {
                s0 += p[0] * k[x];
                s1 += p[1] * k[x];
                s2 += p[2] * k[x];
            }
            out[xx * 3] = img_clip8(s0);
            out[xx * 3 + 1] = img_clip8(s1);
            out[xx * 3 + 2] = img_clip8(s2);
        }
    }
}

/* Vertical pass; bounds are relative to src's first row. */
static void img_pass_v(const vlm_image *src, vlm_image *dst, const img_coeffs *c, int shift) {
    int sst = img_stride(src), dst_st = img_stride(dst), w3 = dst->width * 3;
    int32_t *acc = malloc((size_t)w3 * sizeof *acc);
    for (int yy = 0; yy < dst->height; yy++) {
        int ymin = c->bounds[yy * 2] - shift, ymax = c->bounds[yy * 2 + 1];
        const int32_t *k = c->kk + (size_t)yy * c->ksize;
        uint8_t *out = dst->rgb + (size_t)yy * dst_st;
        if (acc) {
            /* row-wise accumulation: same sums as PIL's per-pixel loop, cache friendly */
            for (int i = 0; i < w3; i++) acc[i] = 1 << (c->prec - 1);
            for (int y = 0; y < ymax; y++) {
                const uint8_t *in = src->rgb + (size_t)(y + ymin) * sst;
                int32_t kv = k[y];
                int i = 0;
                /* fixed-length blocks so that the compiler vectorizes at -O2 */
                for (; i + 32 <= w3; i += 32)
                    for (int j = 0; j < 32; j++) acc[i + j] += in[i + j] * kv;
                for (; i < w3; i++) acc[i] += in[i] * kv;
            }
            int i = 0;
            for (; i + 32 <= w3; i += 32)
                for (int j = 0; j < 32; j++) {
                    int32_t v = acc[i + j] >> c->prec;
                    out[i + j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
                }
            for (; i < w3; i++) out[i] = img_clip8(acc[i]);
        } else {
            for (int i = 0; i < w3; i++) {
                int32_t s = 1 << (c->prec - 1);
                for (int y = 0; y < ymax; y++) s += src->rgb[(size_t)(y + ymin) * sst + i] * k[y];
                out[i] = img_clip8(s);
            }
        }
    }
    free(acc);
}

static vlm_status img_resize_nearest(const vlm_image *src, int w, int h, vlm_image *dst, vlm_error *err) {
    vlm_status s = img_alloc(dst, w, h, err);
    if (s) return s;
    double xs = (double)src->width / w, ys = (double)src->height / h;
    int sst = img_stride(src);
    for (int y = 0; y < h; y++) {
        double yv = ys * (y + 0.5);
        int yi = yv < 0 ? 0 : (int)yv;
        if (yi >= src->height) yi = src->height - 1;
        for (int x = 0; x < w; x++) {
            double xv = xs * (x + 0.5);
            int xi = xv < 0 ? 0 : (int)xv;
            if (xi >= src->width) xi = src->width - 1;
            memcpy(dst->rgb + ((size_t)y * w + x) * 3, src->rgb + (size_t)yi * sst + (size_t)xi * 3, 3);
        }
    }
    return VLM_OK;
}

static vlm_status img_resize_fixed(const vlm_image *src, int width, int height, vlm_resample filter, int prec,
                                   vlm_image *dst, vlm_error *err) {
    memset(dst, 0, sizeof *dst);
    vlm_status s = img_check(src, "resize", err);
    if (s) return s;
    if (width <= 0 || height <= 0)
        return vlm_error_set(err, VLM_ERR_ARG, "resize: invalid target size %dx%d", width, height);
    if ((long long)width * height > VLM_IMAGE_MAX_PIXELS)
        return vlm_error_set(err, VLM_ERR_ARG, "resize: target %dx%d exceeds the pixel limit", width, height);
    if (filter == VLM_RESAMPLE_NEAREST) return img_resize_nearest(src, width, height, dst, err);
    img_filter f;
    if (!img_get_filter(filter, &f)) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "resize: unknown filter %d", (int)filter);
    int need_h = width != src->width, need_v = height != src->height;
    if (!need_h && !need_v) {
        if ((s = img_alloc(dst, width, height, err))) return s;
        for (int y = 0; y < height; y++)
            memcpy(dst->rgb + (size_t)y * width * 3, src->rgb + (size_t)y * img_stride(src), (size_t)width * 3);
        return VLM_OK;
    }
    img_coeffs ch = {0}, cv = {0};
    if ((s = img_precompute(src->width, width, &f, prec, &ch, err))) return s;
    if ((s = img_precompute(src->height, height, &f, prec, &cv, err))) { img_coeffs_free(&ch); return s; }
    /* rows of the source the vertical pass reads */
    int yfirst = cv.bounds[0], ylast = cv.bounds[height * 2 - 2] + cv.bounds[height * 2 - 1];
    vlm_image tmp = {0};
    const vlm_image *vin = src;
    int shift = 0;
    if (need_h) {
        int rows = need_v ? ylast - yfirst : height;
        int y0 = need_v ? yfirst : 0;
        if (rows <= 0) rows = 1;
        vlm_image *out = need_v ? &tmp : dst;
        if ((s = img_alloc(out, width, rows, err))) goto done;
        img_pass_h(src, y0, rows, out, &ch);
        vin = out;
        shift = need_v ? yfirst : 0;
    }
    if (need_v) {
        if ((s = img_alloc(dst, width, height, err))) goto done;
        img_pass_v(vin, dst, &cv, shift);
    }
done:
    vlm_image_free(&tmp);
    img_coeffs_free(&ch);
    img_coeffs_free(&cv);
    if (s) vlm_image_free(dst);
    return s;
}

vlm_status vlm_image_resize(const vlm_image *src, int width, int height, vlm_resample filter, vlm_image *dst,
                            vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    return img_resize_fixed(src, width, height, filter, 0, dst, err);
}

/* torchvision on a uint8 image with antialias runs torch's uint8 kernels
 * (ported from Pillow-SIMD): the same passes with int16-range weights. */
vlm_status vlm_image_resize_tv(const vlm_image *src, int width, int height, vlm_resample filter, vlm_image *dst,
                               vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    if (filter == VLM_RESAMPLE_LANCZOS) filter = VLM_RESAMPLE_BICUBIC; /* torchvision has no Lanczos (HF falls back) */
    return img_resize_fixed(src, width, height, filter, -1, dst, err);
}

/* ------------------------------------------------------------------ features */

void vlm_image_features_free(vlm_features *f) {
    if (!f) return;
    for (int i = 0; i < f->n; i++) free(f->tensors[i].data);
    memset(f, 0, sizeof *f);
}

/* Adds a zeroed contiguous tensor; returns its data or NULL (error set). */
static void *img_feat_add(vlm_features *f, const char *name, vlm_dtype dt, int ndim, const int64_t *shape,
                          vlm_error *err) {
    if (f->n >= VLM_MAX_FEATURES) { vlm_error_set(err, VLM_ERR_ARG, "preprocess: too many outputs"); return NULL; }
    size_t n = 1;
    for (int i = 0; i < ndim; i++) n *= (size_t)shape[i];
    void *data = calloc(n ? n : 1, vlm_dtype_size(dt));
    if (!data) { vlm_error_set(err, VLM_ERR_OOM, "preprocess: out of memory for %s (%zu elements)", name, n); return NULL; }
    f->names[f->n] = name;
    f->tensors[f->n] = vlm_tensor_make(dt, ndim, shape, data);
    f->n++;
    return data;
}

/* Rescale then normalize, in float32 as the PIL backend does, as a table per channel. */
static void img_lut(const vlm_image_processor *p, float lut[3][256]) {
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = p->do_rescale ? (float)((double)v * p->rescale_factor) : (float)v;
            if (p->do_normalize) x = (x - p->image_mean[c]) / p->image_std[c];
            lut[c][v] = x;
        }
}

/* Writes an image as normalized CHW floats. */
static void img_to_chw(const vlm_image *im, float lut[3][256], float *out) {
    size_t plane = (size_t)im->width * im->height;
    int st = img_stride(im);
    for (int y = 0; y < im->height; y++) {
        const uint8_t *row = im->rgb + (size_t)y * st;
        float *o = out + (size_t)y * im->width;
        for (int x = 0; x < im->width; x++) {
            o[x] = lut[0][row[x * 3]];
            o[plane + x] = lut[1][row[x * 3 + 1]];
            o[2 * plane + x] = lut[2][row[x * 3 + 2]];
        }
    }
}

/* Resize unless the size already matches (PIL copies then; so do we, by viewing). */
/* The resample argument of the processors carries the backend in bit 8. */
#define IMG_TV 0x100

static vlm_status img_resize_or_view(const vlm_image *src, int w, int h, int r, vlm_image *dst, vlm_error *err) {
    if (src->width == w && src->height == h) {
        *dst = *src;
        dst->owned = 0;
        return VLM_OK;
    }
    if (r & IMG_TV) return vlm_image_resize_tv(src, w, h, (vlm_resample)(r & 0xff), dst, err);
    return vlm_image_resize(src, w, h, (vlm_resample)r, dst, err);
}

/* Replaces *cur (owned or a view) by its resized version (kept when the size matches). */
static vlm_status img_replace(vlm_image *cur, int w, int h, int r, vlm_error *err) {
    vlm_image nw;
    vlm_status s = img_resize_or_view(cur, w, h, r, &nw, err);
    if (s) {
        vlm_image_free(cur);
        return s;
    }
    if (nw.owned) {
        vlm_image_free(cur);
        *cur = nw;
    }
    return VLM_OK;
}

#define IMG_RS(p) ((int)(p)->resample | ((p)->backend == VLM_BACKEND_TORCHVISION ? IMG_TV : 0))

/* ------------------------------------------------------------------ Qwen2-VL family */

vlm_status vlm_qwen_smart_resize(int height, int width, int factor, int64_t min_pixels, int64_t max_pixels,
                                 int *out_h, int *out_w, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    if (height <= 0 || width <= 0) return vlm_error_set(err, VLM_ERR_ARG, "smart_resize: zero-size image (%dx%d)", width, height);
    if (factor <= 0) return vlm_error_set(err, VLM_ERR_CONFIG, "smart_resize: invalid factor %d", factor);
    double ratio = (double)(height > width ? height : width) / (double)(height > width ? width : height);
    if (ratio > 200)
        return vlm_error_set(err, VLM_ERR_ARG, "smart_resize: absolute aspect ratio must be smaller than 200, got %g (%dx%d)",
                             ratio, width, height);
    int64_t hb = (int64_t)nearbyint((double)height / factor) * factor;
    int64_t wb = (int64_t)nearbyint((double)width / factor) * factor;
    if (hb * wb > max_pixels) {
        double beta = sqrt((double)height * (double)width / (double)max_pixels);
        hb = (int64_t)floor(height / beta / factor) * factor;
        wb = (int64_t)floor(width / beta / factor) * factor;
        if (hb < factor) hb = factor;
        if (wb < factor) wb = factor;
    } else if (hb * wb < min_pixels) {
        double beta = sqrt((double)min_pixels / ((double)height * (double)width));
        hb = (int64_t)ceil(height * beta / factor) * factor;
        wb = (int64_t)ceil(width * beta / factor) * factor;
    }
    if (hb <= 0 || wb <= 0 || hb * wb > VLM_IMAGE_MAX_PIXELS)
        return vlm_error_set(err, VLM_ERR_ARG, "smart_resize: %dx%d maps to an unusable size %lldx%lld", width, height,
                             (long long)wb, (long long)hb);
    *out_h = (int)hb;
    *out_w = (int)wb;
    return VLM_OK;
}

/* Flattens T frames (already resized, all h x w) into rows of out. */
static void qwen_patchify(const vlm_image *frames, int T, const vlm_image_processor *p, float lut[3][256], float *out) {
    int P = p->patch_size, M = p->merge_size, TP = p->temporal_patch_size;
    int gh = frames[0].height / P, gw = frames[0].width / P;
    int gt = T / TP;
    size_t rowlen = (size_t)3 * TP * P * P;
    size_t r = 0;
    for (int t = 0; t < gt; t++)
        for (int bh = 0; bh < gh / M; bh++)
            for (int bw = 0; bw < gw / M; bw++)
                for (int mh = 0; mh < M; mh++)
                    for (int mw = 0; mw < M; mw++, r++) {
                        float *o = out + r * rowlen;
                        int y0 = (bh * M + mh) * P, x0 = (bw * M + mw) * P;
                        for (int c = 0; c < 3; c++)
                            for (int tp = 0; tp < TP; tp++) {
                                const vlm_image *im = &frames[t * TP + tp];
                                int st = img_stride(im);
                                for (int py = 0; py < P; py++) {
                                    const uint8_t *row = im->rgb + (size_t)(y0 + py) * st + (size_t)x0 * 3 + c;
                                    for (int px = 0; px < P; px++) *o++ = lut[c][row[px * 3]];
                                }
                            }
                    }
}

static vlm_status qwen_check(const vlm_image_processor *p, vlm_error *err) {
    if (p->patch_size <= 0 || p->merge_size <= 0 || p->temporal_patch_size <= 0 || p->patch_size > 1024 ||
        p->merge_size > 64 || p->temporal_patch_size > 64)
        return vlm_error_set(err, VLM_ERR_CONFIG, "qwen processor: invalid patch_size %d / merge_size %d / temporal_patch_size %d",
                             p->patch_size, p->merge_size, p->temporal_patch_size);
    return VLM_OK;
}

/* Qwen3VLVideoProcessor's smart_resize: the budget counts every frame. */
static vlm_status qwen3_video_size(int n_frames, int height, int width, int tf, int factor, int64_t min_pixels,
                                   int64_t max_pixels, int *out_h, int *out_w, vlm_error *err) {
    if (n_frames < tf)
        return vlm_error_set(err, VLM_ERR_ARG, "video: %d frames, fewer than temporal_patch_size %d", n_frames, tf);
    if (height < factor || width < factor) {
        double sh = (double)factor / height, sw = (double)factor / width, sc = sh > sw ? sh : sw;
        height = (int)(height * sc);
        width = (int)(width * sc);
    }
    double ratio = (double)(height > width ? height : width) / (double)(height > width ? width : height);
    if (ratio > 200)
        return vlm_error_set(err, VLM_ERR_ARG, "video: absolute aspect ratio must be smaller than 200, got %g", ratio);
    int64_t hb = (int64_t)nearbyint((double)height / factor) * factor;
    int64_t wb = (int64_t)nearbyint((double)width / factor) * factor;
    int64_t tb = (int64_t)nearbyint((double)n_frames / tf) * tf;
    double thw = (double)n_frames * (double)height * (double)width;
    if ((double)tb * hb * wb > (double)max_pixels) {
        double beta = sqrt(thw / (double)max_pixels);
        hb = (int64_t)floor(height / beta / factor) * factor;
        wb = (int64_t)floor(width / beta / factor) * factor;
        if (hb < factor) hb = factor;
        if (wb < factor) wb = factor;
    } else if ((double)tb * hb * wb < (double)min_pixels) {
        double beta = sqrt((double)min_pixels / thw);
        hb = (int64_t)ceil(height * beta / factor) * factor;
        wb = (int64_t)ceil(width * beta / factor) * factor;
    }
    if (hb <= 0 || wb <= 0 || hb * wb > VLM_IMAGE_MAX_PIXELS)
        return vlm_error_set(err, VLM_ERR_ARG, "video: %dx%d maps to an unusable size", width, height);
    *out_h = (int)hb;
    *out_w = (int)wb;
    return VLM_OK;
}

/* Target size of one image/frame for the Qwen processors (n_frames: of a video, else 0). */
static vlm_status qwen_size(const vlm_image_processor *p, const vlm_image *im, int n_frames, int *h, int *w,
                            vlm_error *err) {
    int factor = p->patch_size * p->merge_size;
    if (p->do_resize && n_frames > 0 && p->qwen3_video)
        return qwen3_video_size(n_frames, im->height, im->width, p->temporal_patch_size, factor, p->min_pixels,
                                p->max_pixels, h, w, err);
    if (p->do_resize) return vlm_qwen_smart_resize(im->height, im->width, factor, p->min_pixels, p->max_pixels, h, w, err);
    if (im->height % factor || im->width % factor)
        return vlm_error_set(err, VLM_ERR_ARG, "qwen processor: without resizing, %dx%d must be multiples of %d",
                             im->width, im->height, factor);
    *h = im->height;
    *w = im->width;
    return VLM_OK;
}

/* groups: n_groups sets of frames (an image = 1 frame), each resized and patchified. */
static vlm_status qwen_run(const vlm_image_processor *p, const vlm_image *frames, int n, int video, vlm_features *out,
                           vlm_error *err) {
    vlm_status s = qwen_check(p, err);
    if (s) return s;
    int TP = p->temporal_patch_size, P = p->patch_size;
    int n_groups = video ? 1 : n;
    int (*hw)[2] = calloc((size_t)n_groups, sizeof *hw);
    if (!hw) return vlm_error_set(err, VLM_ERR_OOM, "preprocess: out of memory");
    int64_t rows = 0;
    for (int g = 0; g < n_groups; g++) {
        for (int i = 0; i < (video ? n : 1); i++)
            if ((s = img_check(&frames[video ? i : g], "preprocess", err))) goto fail;
        if ((s = qwen_size(p, &frames[g], video ? n : 0, &hw[g][0], &hw[g][1], err))) goto fail;
        int nf = video ? (n + TP - 1) / TP : 1;
        rows += (int64_t)nf * (hw[g][0] / P) * (hw[g][1] / P);
    }
    if (video)
        for (int i = 1; i < n; i++)
            if (frames[i].width != frames[0].width || frames[i].height != frames[0].height) {
                s = vlm_error_set(err, VLM_ERR_ARG, "video: frame %d is %dx%d, frame 0 is %dx%d", i, frames[i].width,
                                  frames[i].height, frames[0].width, frames[0].height);
                goto fail;
            }
    int64_t rowlen = (int64_t)3 * TP * P * P;
    int64_t shp[2] = {rows, rowlen}, gshape[2] = {n_groups, 3};
    float *pv = img_feat_add(out, video ? "pixel_values_videos" : "pixel_values", VLM_F32, 2, shp, err);
    if (!pv) { s = err ? err->code : VLM_ERR_OOM; goto fail; }
    int64_t *grid = img_feat_add(out, video ? "video_grid_thw" : "image_grid_thw", VLM_I64, 2, gshape, err);
    if (!grid) { s = err ? err->code : VLM_ERR_OOM; goto fail; }
    float lut[3][256];
    img_lut(p, lut);
    int nslots = video ? ((n + TP - 1) / TP) * TP : TP;
    vlm_image *slots = calloc((size_t)nslots, sizeof *slots);
    vlm_image *owned = calloc((size_t)(video ? n : 1), sizeof *owned);
    if (!slots || !owned) { free(slots); free(owned); s = vlm_error_set(err, VLM_ERR_OOM, "preprocess: out of memory"); goto fail; }
    float *o = pv;
    for (int g = 0; g < n_groups; g++) {
        int h = hw[g][0], w = hw[g][1];
        int nin = video ? n : 1;
        for (int i = 0; i < nin && !s; i++) {
            const vlm_image *src = video ? &frames[i] : &frames[g];
            s = img_resize_or_view(src, w, h, IMG_RS(p), &owned[i], err);
        }
        if (s) { for (int i = 0; i < nin; i++) vlm_image_free(&owned[i]); break; }
        for (int k = 0; k < nslots; k++) slots[k] = owned[k < nin ? k : nin - 1]; /* repeat the last frame */
        int gt = nslots / TP;
        qwen_patchify(slots, nslots, p, lut, o);
        o += (size_t)gt * (h / P) * (w / P) * rowlen;
        grid[g * 3] = gt;
        grid[g * 3 + 1] = h / P;
        grid[g * 3 + 2] = w / P;
        for (int i = 0; i < nin; i++) vlm_image_free(&owned[i]);
    }
    free(slots);
    free(owned);
    if (s) goto fail;
    free(hw);
    return VLM_OK;
fail:
    free(hw);
    return s;
}

/* ------------------------------------------------------------------ InternVL (GotOcr2) */

void vlm_internvl_grid(int height, int width, int tile_h, int tile_w, int min_tiles, int max_tiles, int *cols,
                       int *rows) {
    double aspect = (double)width / height, area = (double)width * height;
    double best = INFINITY;
    int bc = 1, br = 1;
    /* HF lists (w, h) pairs with min <= w*h <= max, w outer, h inner, then
     * stable-sorts them by w*h: visit products in increasing order. */
    for (int prod = 1; prod <= max_tiles; prod++) {
        if (prod < min_tiles) continue;
        for (int gw = 1; gw <= max_tiles; gw++)
            for (int gh = 1; gh <= max_tiles; gh++) {
                if (gw * gh != prod) continue;
                double d = fabs(aspect - (double)gw / gh);
                if (d < best) {
                    best = d;
                    bc = gw;
                    br = gh;
                } else if (d == best && area > 0.5 * tile_h * tile_w * gw * gh) {
                    bc = gw;
                    br = gh;
                }
            }
    }
    *cols = bc;
    *rows = br;
}

static vlm_status internvl_run(const vlm_image_processor *p, const vlm_image *images, int n, vlm_features *out,
                               vlm_error *err) {
    int TH = p->tile_height, TW = p->tile_width;
    if (TH <= 0 || TW <= 0 || TH > 8192 || TW > 8192)
        return vlm_error_set(err, VLM_ERR_CONFIG, "internvl processor: invalid size %dx%d", TW, TH);
    int tiled = p->crop_to_patches && p->max_patches > 1;
    if (tiled && (p->min_patches < 1 || p->max_patches > 1024 || p->min_patches > p->max_patches))
        return vlm_error_set(err, VLM_ERR_CONFIG, "internvl processor: invalid min/max patches %d/%d", p->min_patches,
                             p->max_patches);
    int *ntiles = calloc((size_t)n, sizeof *ntiles), *gc = calloc((size_t)n, sizeof *gc), *gr = calloc((size_t)n, sizeof *gr);
    vlm_status s = VLM_OK;
    if (!ntiles || !gc || !gr) { s = vlm_error_set(err, VLM_ERR_OOM, "preprocess: out of memory"); goto done; }
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if ((s = img_check(&images[i], "preprocess", err))) goto done;
        if (tiled) {
            vlm_internvl_grid(images[i].height, images[i].width, TH, TW, p->min_patches, p->max_patches, &gc[i], &gr[i]);
            ntiles[i] = gc[i] * gr[i] + (gc[i] * gr[i] != 1);
        } else
            ntiles[i] = 1;
        total += ntiles[i];
    }
    int64_t shp[4] = {total, 3, TH, TW}, nshape[1] = {n};
    float *pv = img_feat_add(out, "pixel_values", VLM_F32, 4, shp, err);
    int64_t *np_ = pv ? img_feat_add(out, "num_patches", VLM_I64, 1, nshape, err) : NULL;
    if (!np_) { s = err ? err->code : VLM_ERR_OOM; goto done; }
    float lut[3][256];
    img_lut(p, lut);
    size_t tile_sz = (size_t)3 * TH * TW;
    float *o = pv;
    for (int i = 0; i < n && !s; i++) {
        np_[i] = ntiles[i];
        vlm_image r = {0};
        if (tiled) {
            s = img_resize_or_view(&images[i], TW * gc[i], TH * gr[i], IMG_RS(p), &r, err);
            if (s) break;
            for (int t = 0; t < gc[i] * gr[i]; t++, o += tile_sz) {
                vlm_image v = img_crop_view(&r, (t % gc[i]) * TW, (t / gc[i]) * TH, TW, TH);
                img_to_chw(&v, lut, o);
            }
            vlm_image_free(&r);
            if (gc[i] * gr[i] != 1) {
                if ((s = img_resize_or_view(&images[i], TW, TH, IMG_RS(p), &r, err))) break;
                img_to_chw(&r, lut, o);
                o += tile_sz;
                vlm_image_free(&r);
            }
        } else {
            if (p->do_resize) s = img_resize_or_view(&images[i], TW, TH, IMG_RS(p), &r, err);
            else if (images[i].width != TW || images[i].height != TH)
                s = vlm_error_set(err, VLM_ERR_ARG, "internvl processor: without resizing the image must be %dx%d", TW, TH);
            else r = images[i], r.owned = 0;
            if (s) break;
            img_to_chw(&r, lut, o);
            o += tile_sz;
            vlm_image_free(&r);
        }
    }
done:
    free(ntiles);
    free(gc);
    free(gr);
    return s;
}

/* ------------------------------------------------------------------ Idefics3 / SmolVLM */

#define IDEFICS3_MAX_IMAGE_SIZE 4096

/* get_resize_output_image_size: longest edge to max_len, then under 4096. */
static void idefics3_resize_size(int height, int width, int max_len, int *oh, int *ow) {
    double ar = (double)width / height;
    long long h = height, w = width;
    if (w >= h) {
        w = max_len;
        h = (long long)(w / ar);
        if (h % 2 != 0) h += 1;
    } else {
        h = max_len;
        w = (long long)(h * ar);
        if (w % 2 != 0) w += 1;
    }
    if (h < 1) h = 1;
    if (w < 1) w = 1;
    /* _resize_output_size_scale_below_upper_bound */
    ar = (double)w / h;
    if (w >= h && w > IDEFICS3_MAX_IMAGE_SIZE) {
        w = IDEFICS3_MAX_IMAGE_SIZE;
        h = (long long)(w / ar);
    } else if (h > w && h > IDEFICS3_MAX_IMAGE_SIZE) {
        h = IDEFICS3_MAX_IMAGE_SIZE;
        w = (long long)(h * ar);
    }
    if (h < 1) h = 1;
    if (w < 1) w = 1;
    *oh = (int)h;
    *ow = (int)w;
}

/* resize_for_vision_encoder: both sides to multiples of m. */
static void idefics3_encoder_size(int height, int width, int m, int *oh, int *ow) {
    double ar = (double)width / height;
    long long h, w;
    if (width >= height) {
        w = (long long)ceil((double)width / m) * m;
        h = (long long)(w / ar);
        h = (long long)ceil((double)h / m) * m;
    } else {
        h = (long long)ceil((double)height / m) * m;
        w = (long long)(h * ar);
        w = (long long)ceil((double)w / m) * m;
    }
    *oh = (int)h;
    *ow = (int)w;
}

static vlm_status idefics3_run(const vlm_image_processor *p, const vlm_image *images, int n, vlm_features *out,
                               vlm_error *err) {
    int M = p->max_image_size;
    if (M <= 0 || M > 8192) return vlm_error_set(err, VLM_ERR_CONFIG, "idefics3 processor: invalid max_image_size %d", M);
    if (p->do_resize && (p->longest_edge <= 0 || p->longest_edge > 1 << 16))
        return vlm_error_set(err, VLM_ERR_CONFIG, "idefics3 processor: invalid size.longest_edge %d", p->longest_edge);
    vlm_status s = VLM_OK;
    /* Per image: a resized base image (owned), then its frames (views into it, plus an owned global image). */
    vlm_image *base = calloc((size_t)n, sizeof *base), *global = calloc((size_t)n, sizeof *global);
    int *rows = calloc((size_t)n, sizeof *rows), *cols = calloc((size_t)n, sizeof *cols);
    if (!base || !global || !rows || !cols) { s = vlm_error_set(err, VLM_ERR_OOM, "preprocess: out of memory"); goto done; }
    int64_t n_frames = 0;
    int maxh = 0, maxw = 0;
    for (int i = 0; i < n && !s; i++) {
        if ((s = img_check(&images[i], "preprocess", err))) break;
        vlm_image cur = images[i];
        cur.owned = 0;
        if (p->do_resize) {
            int h, w;
            idefics3_resize_size(cur.height, cur.width, p->longest_edge, &h, &w);
            if ((s = img_replace(&cur, w, h, IMG_RS(p), err))) break;
        }
        if (p->do_image_splitting) {
            int h, w;
            idefics3_encoder_size(cur.height, cur.width, M, &h, &w);
            if (h <= 0 || w <= 0) {
                vlm_image_free(&cur);
                s = vlm_error_set(err, VLM_ERR_ARG, "idefics3 processor: image %dx%d resizes to an empty image", images[i].width,
                                  images[i].height);
                break;
            }
            if ((s = img_replace(&cur, w, h, IMG_RS(p), err))) break;
            if (cur.height > M || cur.width > M) {
                rows[i] = (cur.height - M) / M + 1;
                cols[i] = (cur.width - M) / M + 1;
                if ((s = img_resize_or_view(&cur, M, M, IMG_RS(p), &global[i], err))) { vlm_image_free(&cur); break; }
                n_frames += (int64_t)rows[i] * cols[i] + 1;
                if (M > maxh) maxh = M;
                if (M > maxw) maxw = M;
            } else {
                n_frames += 1;
                if (cur.height > maxh) maxh = cur.height;
                if (cur.width > maxw) maxw = cur.width;
            }
        } else {
            if ((s = img_replace(&cur, M, M, IMG_RS(p), err))) break;
            n_frames += 1;
            if (M > maxh) maxh = M;
            if (M > maxw) maxw = M;
        }
        base[i] = cur;
    }
    if (s) goto done;
    if (!p->do_pad) {
        /* HF returns a list of differently sized frames then; as a tensor they must agree */
        for (int i = 0; i < n; i++) {
            int fh = rows[i] ? M : base[i].height, fw = rows[i] ? M : base[i].width;
            if (fh != maxh || fw != maxw) {
                s = vlm_error_set(err, VLM_ERR_UNSUPPORTED, "idefics3 processor: do_pad=false with frames of different sizes");
                goto done;
            }
        }
    }
    {
        int64_t shp[5] = {1, n_frames, 3, maxh, maxw}, mshp[4] = {1, n_frames, maxh, maxw}, rshape[1] = {n};
        float *pv = img_feat_add(out, "pixel_values", VLM_F32, 5, shp, err);
        int64_t *mask = pv ? img_feat_add(out, "pixel_attention_mask", VLM_I64, 4, mshp, err) : NULL;
        int64_t *rr = mask ? img_feat_add(out, "rows", VLM_I64, 1, rshape, err) : NULL;
        int64_t *cc = rr ? img_feat_add(out, "cols", VLM_I64, 1, rshape, err) : NULL;
        if (!cc) { s = err ? err->code : VLM_ERR_OOM; goto done; }
        float lut[3][256];
        img_lut(p, lut);
        size_t plane = (size_t)maxh * maxw;
        int64_t f = 0;
        for (int i = 0; i < n; i++) {
            rr[i] = rows[i];
            cc[i] = cols[i];
            int nf = rows[i] ? rows[i] * cols[i] + 1 : 1;
            for (int k = 0; k < nf; k++, f++) {
                vlm_image v;
                if (!rows[i]) v = base[i];
                else if (k < rows[i] * cols[i]) v = img_crop_view(&base[i], (k % cols[i]) * M, (k / cols[i]) * M, M, M);
                else v = global[i];
                float *o = pv + (size_t)f * 3 * plane;
                int64_t *mk = mask + (size_t)f * plane;
                int st = img_stride(&v);
                for (int y = 0; y < v.height; y++) {
                    const uint8_t *row = v.rgb + (size_t)y * st;
                    for (int x = 0; x < v.width; x++) {
                        size_t at = (size_t)y * maxw + x;
                        o[at] = lut[0][row[x * 3]];
                        o[plane + at] = lut[1][row[x * 3 + 1]];
                        o[2 * plane + at] = lut[2][row[x * 3 + 2]];
                        mk[at] = 1;
                    }
                }
            }
        }
    }
done:
    for (int i = 0; base && i < n; i++) vlm_image_free(&base[i]);
    for (int i = 0; global && i < n; i++) vlm_image_free(&global[i]);
    free(base);
    free(global);
    free(rows);
    free(cols);
    return s;
}

/* ------------------------------------------------------------------ Gemma 4 */

vlm_status vlm_gemma4_target_size(int height, int width, int patch_size, int max_patches, int pooling, int *out_h,
                                  int *out_w, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    if (height <= 0 || width <= 0) return vlm_error_set(err, VLM_ERR_ARG, "gemma4: zero-size image (%dx%d)", width, height);
    double total = (double)height * width, target = (double)max_patches * patch_size * patch_size;
    double factor = sqrt(target / total);
    double ih = factor * height, iw = factor * width;
    long long side = (long long)pooling * patch_size;
    long long th = (long long)floor(ih / side) * side, tw = (long long)floor(iw / side) * side;
    if (th == 0 && tw == 0)
        return vlm_error_set(err, VLM_ERR_ARG, "gemma4: %dx%d would resize to 0x0", width, height);
    long long max_side = (long long)(max_patches / (pooling * pooling)) * side;
    if (th == 0) {
        th = side;
        tw = (long long)floor((double)width / height) * side;
        if (tw > max_side) tw = max_side;
    } else if (tw == 0) {
        tw = side;
        th = (long long)floor((double)height / width) * side;
        if (th > max_side) th = max_side;
    }
    if ((double)th * tw > target)
        return vlm_error_set(err, VLM_ERR_ARG, "gemma4: resizing %dx%d to %lldx%lld exceeds %d patches", width, height, tw, th,
                             max_patches);
    if (th <= 0 || tw <= 0) return vlm_error_set(err, VLM_ERR_ARG, "gemma4: %dx%d resizes to an empty image", width, height);
    *out_h = (int)th;
    *out_w = (int)tw;
    return VLM_OK;
}

static vlm_status gemma4_run(const vlm_image_processor *p, const vlm_image *images, int n, vlm_features *out,
                             vlm_error *err) {
    static const int supported[] = {70, 140, 280, 560, 1120};
    int ok = 0;
    for (int i = 0; i < 5; i++) ok |= p->max_soft_tokens == supported[i];
    if (!ok) return vlm_error_set(err, VLM_ERR_CONFIG, "gemma4 processor: max_soft_tokens must be one of 70, 140, 280, 560, 1120 (got %d)", p->max_soft_tokens);
    int P = p->patch_size, K = p->pooling_kernel_size;
    if (P <= 0 || P > 1024 || K <= 0 || K > 64)
        return vlm_error_set(err, VLM_ERR_CONFIG, "gemma4 processor: invalid patch_size %d / pooling_kernel_size %d", P, K);
    int64_t max_patches = (int64_t)p->max_soft_tokens * K * K;
    int64_t dim = (int64_t)P * P * 3;
    int64_t shp[3] = {n, max_patches, dim}, pshp[3] = {n, max_patches, 2}, nshp[1] = {n};
    float *pv = img_feat_add(out, "pixel_values", VLM_F32, 3, shp, err);
    int64_t *pos = pv ? img_feat_add(out, "image_position_ids", VLM_I64, 3, pshp, err) : NULL;
    int64_t *nsoft = pos ? img_feat_add(out, "num_soft_tokens_per_image", VLM_I64, 1, nshp, err) : NULL;
    if (!nsoft) return err ? err->code : VLM_ERR_OOM;
    float lut[3][256];
    img_lut(p, lut);
    for (int64_t i = 0; i < (int64_t)n * max_patches * 2; i++) pos[i] = -1;
    for (int i = 0; i < n; i++) {
        vlm_status s = img_check(&images[i], "preprocess", err);
        if (s) return s;
        int h = images[i].height, w = images[i].width;
        if (p->do_resize && (s = vlm_gemma4_target_size(h, w, P, (int)max_patches, K, &h, &w, err))) return s;
        if (h % P || w % P)
            return vlm_error_set(err, VLM_ERR_ARG, "gemma4 processor: %dx%d is not a multiple of the patch size %d", w, h, P);
        int nph = h / P, npw = w / P;
        if ((int64_t)nph * npw > max_patches)
            return vlm_error_set(err, VLM_ERR_ARG, "gemma4 processor: %d patches exceed the budget of %lld", nph * npw,
                                 (long long)max_patches);
        vlm_image r;
        if ((s = img_resize_or_view(&images[i], w, h, IMG_RS(p), &r, err))) return s;
        float *o = pv + (size_t)i * max_patches * dim;
        int64_t *ps = pos + (size_t)i * max_patches * 2;
        int st = img_stride(&r);
        for (int gy = 0; gy < nph; gy++)
            for (int gx = 0; gx < npw; gx++) {
                int64_t k = (int64_t)gy * npw + gx;
                float *q = o + k * dim;
                for (int py = 0; py < P; py++) {
                    const uint8_t *row = r.rgb + (size_t)(gy * P + py) * st + (size_t)gx * P * 3;
                    for (int px = 0; px < P; px++)
                        for (int c = 0; c < 3; c++) *q++ = lut[c][row[px * 3 + c]];
                }
                ps[k * 2] = gx;
                ps[k * 2 + 1] = gy;
            }
        nsoft[i] = (int64_t)nph * npw / (K * K);
        vlm_image_free(&r);
    }
    return VLM_OK;
}

/* ------------------------------------------------------------------ entry points */

vlm_status vlm_image_preprocess(const vlm_image_processor *p, const vlm_image *images, int n, vlm_features *out,
                                vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(out, 0, sizeof *out);
    if (!p) return vlm_error_set(err, VLM_ERR_ARG, "preprocess: no processor");
    if (n <= 0 || !images) return vlm_error_set(err, VLM_ERR_ARG, "preprocess: no images");
    vlm_status s;
    switch (p->family) {
    case VLM_IMAGE_QWEN2_VL: s = qwen_run(p, images, n, 0, out, err); break;
    case VLM_IMAGE_INTERNVL: s = internvl_run(p, images, n, out, err); break;
    case VLM_IMAGE_IDEFICS3: s = idefics3_run(p, images, n, out, err); break;
    case VLM_IMAGE_GEMMA4: s = gemma4_run(p, images, n, out, err); break;
    default: s = vlm_error_set(err, VLM_ERR_UNSUPPORTED, "preprocess: unknown image processor family %d", (int)p->family);
    }
    if (s) vlm_image_features_free(out);
    return s;
}

vlm_status vlm_video_preprocess(const vlm_image_processor *p, const vlm_image *frames, int n, vlm_features *out,
                                vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(out, 0, sizeof *out);
    if (!p) return vlm_error_set(err, VLM_ERR_ARG, "preprocess: no processor");
    if (n <= 0 || !frames) return vlm_error_set(err, VLM_ERR_ARG, "video: no frames");
    if (p->family != VLM_IMAGE_QWEN2_VL)
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "video: only the Qwen2-VL family processes videos");
    vlm_status s = qwen_run(p, frames, n, 1, out, err);
    if (s) vlm_image_features_free(out);
    return s;
}

void vlm_image_processor_defaults(vlm_image_processor *p, vlm_image_family family) {
    memset(p, 0, sizeof *p);
    p->family = family;
    p->do_resize = p->do_rescale = p->do_normalize = p->do_convert_rgb = 1;
    p->rescale_factor = 1.0 / 255.0;
    p->resample = VLM_RESAMPLE_BICUBIC;
    static const float clip_mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, clip_std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    for (int c = 0; c < 3; c++) { p->image_mean[c] = 0.5f; p->image_std[c] = 0.5f; }
    switch (family) {
    case VLM_IMAGE_QWEN2_VL:
        snprintf(p->type, sizeof p->type, "Qwen2VLImageProcessor");
        memcpy(p->image_mean, clip_mean, sizeof clip_mean);
        memcpy(p->image_std, clip_std, sizeof clip_std);
        p->patch_size = 14;
        p->temporal_patch_size = 2;
        p->merge_size = 2;
        p->min_pixels = 56 * 56;
        p->max_pixels = 28 * 28 * 1280;
        break;
    case VLM_IMAGE_INTERNVL:
        snprintf(p->type, sizeof p->type, "GotOcr2ImageProcessor");
        memcpy(p->image_mean, clip_mean, sizeof clip_mean);
        memcpy(p->image_std, clip_std, sizeof clip_std);
        p->tile_height = p->tile_width = 384;
        p->crop_to_patches = 0;
        p->min_patches = 1;
        p->max_patches = 12;
        break;
    case VLM_IMAGE_IDEFICS3:
        snprintf(p->type, sizeof p->type, "Idefics3ImageProcessor");
        p->resample = VLM_RESAMPLE_LANCZOS;
        p->longest_edge = 4 * 364;
        p->max_image_size = 364;
        p->do_image_splitting = 1;
        p->do_pad = 1;
        break;
    case VLM_IMAGE_GEMMA4:
        snprintf(p->type, sizeof p->type, "Gemma4ImageProcessor");
        p->do_normalize = 0;
        for (int c = 0; c < 3; c++) { p->image_mean[c] = 0.0f; p->image_std[c] = 1.0f; }
        p->patch_size = 16;
        p->max_soft_tokens = 280;
        p->pooling_kernel_size = 3;
        break;
    }
}
