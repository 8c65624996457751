/* Image decoding through stb_image (Debian libstb-dev header). The stb
 * implementation is compiled here with static linkage, so the library and the
 * single-header amalgamation need no -lstb and never clash with a caller's
 * own copy of stb_image. */
#include "vision/vlm_vision.h"

#include <errno.h>
#include <stdint.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#define STBI_NO_STDIO          /* files are read by vlm_image_load */
#define STBI_NO_HDR            /* Radiance HDR: can loop for minutes on corrupt data (stb 2.27, found by fuzzing) */
#define STBI_NO_PIC            /* Softimage PIC: not an image format PIL reads */
#define STBI_ASSERT(x) ((void)0) /* never abort on malformed input */
#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#pragma GCC diagnostic ignored "-Wtype-limits"
#pragma GCC diagnostic ignored "-Wunused-but-set-variable"
#pragma GCC diagnostic ignored "-Wmisleading-indentation"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#endif
#include <stb/stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
/* stb_image 2.27 declares stbi_set_unpremultiply_on_load_thread static but
 * defines it under another name; gcc reports that at the end of the
 * translation unit, so the (harmless) warning stays off from here on. */
#pragma GCC diagnostic ignored "-Wunused-function"
#endif

/* stb_image 2.27 (Debian 12) trusts the symbol counts of a JPEG Huffman
 * table (DHT): more than 256 symbols overflow its tables (fixed upstream in
 * 2.28). Wherever stb could read a DHT (after any FF C4 in the file), count
 * the symbols the same way it does and reject the file if it would overflow. */
static int img_stb_jpeg_dht_ok(const unsigned char *d, size_t n) {
    for (size_t i = 0; i + 1 < n; i++) {
        if (d[i] != 0xFF || d[i + 1] != 0xC4) continue;
        size_t p = i + 2;
#define IMG_STB_GET8() (p < n ? d[p++] : 0)
        long L = (long)IMG_STB_GET8() << 8;
        L |= IMG_STB_GET8();
        L -= 2;
        while (L > 0) {
            int q = IMG_STB_GET8();
            if ((q >> 4) > 1 || (q & 15) > 3) break; /* stb rejects the header */
            long cnt = 0;
            for (int k = 0; k < 16; k++) cnt += IMG_STB_GET8();
            if (cnt > 256) return 0;
            p += (size_t)cnt;
            L -= 17 + cnt;
        }
#undef IMG_STB_GET8
    }
    return 1;
}

/* stb_image 2.27 parses PNM header numbers into an int without a bound
 * (signed overflow on 10+ digits; bounded upstream later). Walk the header
 * as stb does (whitespace, # comments) and reject numbers that long. */
static int img_stb_pnm_ok(const unsigned char *d, size_t n) {
    size_t p = 2;
    for (int field = 0; field < 3; field++) {
        for (;;) {
            while (p < n && (d[p] == ' ' || (d[p] >= '\t' && d[p] <= '\r'))) p++;
            if (p >= n || d[p] != '#') break;
            while (p < n && d[p] != '\n' && d[p] != '\r') p++;
        }
        size_t digits = 0;
        while (p < n && d[p] >= '0' && d[p] <= '9') p++, digits++;
        if (digits > 9) return 0;
        if (digits == 0) return 1; /* stb rejects the header itself */
    }
    return 1;
}

/* stb_image 2.27 does pointer arithmetic on a NULL buffer when the first
 * IDAT chunk of a PNG is empty (undefined behaviour, caught by UBSan). Such
 * files are legal but never written by real encoders: reject them. */
static int img_stb_png_ok(const unsigned char *d, size_t n) {
    size_t p = 8;
    while (p + 8 <= n) {
        uint32_t len = (uint32_t)d[p] << 24 | (uint32_t)d[p + 1] << 16 | (uint32_t)d[p + 2] << 8 | d[p + 3];
        if (!memcmp(d + p + 4, "IDAT", 4)) return len != 0; /* only the first IDAT matters */
        if (!memcmp(d + p + 4, "IEND", 4) || len > n) return 1;
        p += 12 + (size_t)len;
    }
    return 1;
}

vlm_status vlm_image_decode(vlm_image *img, const void *data, size_t len, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(img, 0, sizeof *img);
    if (!data || len == 0) return vlm_error_set(err, VLM_ERR_FORMAT, "image: empty input");
    if (len > INT_MAX) return vlm_error_set(err, VLM_ERR_FORMAT, "image: encoded data too large (%zu bytes)", len);
    const unsigned char *bytes = (const unsigned char *)data;
    if (len >= 2 && bytes[0] == 0xFF && bytes[1] == 0xD8 && !img_stb_jpeg_dht_ok(bytes, len))
        return vlm_error_set(err, VLM_ERR_FORMAT, "image: corrupt JPEG (Huffman table with more than 256 symbols)");
    if (len >= 8 && !memcmp(bytes, "\x89PNG\r\n\x1a\n", 8) && !img_stb_png_ok(bytes, len))
        return vlm_error_set(err, VLM_ERR_FORMAT, "image: unsupported PNG (empty first IDAT chunk)");
    if (len >= 2 && bytes[0] == 'P' && (bytes[1] == '5' || bytes[1] == '6') && !img_stb_pnm_ok(bytes, len))
        return vlm_error_set(err, VLM_ERR_FORMAT, "image: corrupt PNM header (number too long)");
    int w = 0, h = 0, comp = 0;
    if (!stbi_info_from_memory((const stbi_uc *)data, (int)len, &w, &h, &comp))
        return vlm_error_set(err, VLM_ERR_FORMAT, "image: unrecognized or corrupt image (%s)", stbi_failure_reason());
    if (w <= 0 || h <= 0) return vlm_error_set(err, VLM_ERR_FORMAT, "image: zero-size image (%dx%d)", w, h);
    if ((long long)w * h > VLM_IMAGE_MAX_PIXELS)
        return vlm_error_set(err, VLM_ERR_FORMAT, "image: %dx%d exceeds the %lld-pixel limit", w, h,
                             (long long)VLM_IMAGE_MAX_PIXELS);
    stbi_uc *px = stbi_load_from_memory((const stbi_uc *)data, (int)len, &w, &h, &comp, 3);
    if (!px) return vlm_error_set(err, VLM_ERR_FORMAT, "image: decode failed (%s)", stbi_failure_reason());
    if (w <= 0 || h <= 0) {
        stbi_image_free(px);
        return vlm_error_set(err, VLM_ERR_FORMAT, "image: zero-size image (%dx%d)", w, h);
    }
    /* stb allocates with malloc; hand the buffer over as an owned image */
    img->width = w;
    img->height = h;
    img->stride = w * 3;
    img->rgb = px;
    img->owned = 1;
    return VLM_OK;
}

vlm_status vlm_image_load(vlm_image *img, const char *path, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(img, 0, sizeof *img);
    FILE *f = fopen(path, "rb");
    if (!f) return vlm_error_set(err, VLM_ERR_IO, "image: cannot open %s: %s", path, strerror(errno));
    unsigned char *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 1 << 16;
            if (nc > (size_t)INT_MAX) { free(buf); fclose(f); return vlm_error_set(err, VLM_ERR_FORMAT, "image: %s is too large", path); }
            unsigned char *nb = realloc(buf, nc);
            if (!nb) { free(buf); fclose(f); return vlm_error_set(err, VLM_ERR_OOM, "image: out of memory reading %s", path); }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return vlm_error_set(err, VLM_ERR_IO, "image: read error on %s", path); }
    vlm_status s = vlm_image_decode(img, buf, n, err);
    free(buf);
    if (s != VLM_OK && err && err->code == s) {
        /* prefix the file name to the decoder's message */
        char tmp[sizeof err->msg];
        memcpy(tmp, err->msg, sizeof tmp);
        int k = snprintf(err->msg, sizeof err->msg, "%.200s: ", path);
        if (k > 0 && (size_t)k < sizeof err->msg) memcpy(err->msg + k, tmp, sizeof err->msg - (size_t)k - 1);
        err->msg[sizeof err->msg - 1] = 0;
    }
    return s;
}
