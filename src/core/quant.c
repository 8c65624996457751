/* The block-quantized weight formats: reference codecs (the byte layouts
 * are the README's "Quantized weights"). The CPU kernels read these blocks
 * directly; these scalar versions define the formats, quantize at load and
 * serve tests and host-side glue. */
#include "core/vlm_core.h"

#include <math.h>
#include <string.h>

/* Nearest integer to v (ties away from zero), clamped to [lo, hi]; NaN -> 0. */
static int quant_code(float v, int lo, int hi) {
    if (!(v == v)) return 0;
    v = roundf(v);
    return v < (float)lo ? lo : v > (float)hi ? hi : (int)v;
}

/* One block: src[0..32) into dst. */
static void quant_block(vlm_dtype t, const float *src, unsigned char *dst) {
    if (t == VLM_Q8_0) {
        /* d = max|x| / 127 stored as f16; the codes are taken against that
         * stored d, so dequantization sees the scale it was quantized with */
        float amax = 0;
        for (int i = 0; i < 32; i++) amax = fabsf(src[i]) > amax ? fabsf(src[i]) : amax;
        uint16_t dh = vlm_f32_to_f16(amax / 127.0f);
        float d = vlm_f16_to_f32(dh), id = d != 0 ? 1.0f / d : 0.0f;
        memcpy(dst, &dh, 2);
        for (int i = 0; i < 32; i++) dst[2 + i] = (unsigned char)(int8_t)quant_code(src[i] * id, -127, 127);
        return;
    }
    if (t == VLM_Q4_Z) {
        /* the range [min, max] widened to hold 0 in 15 steps: 0 gets code z
         * and comes back exactly */
        float lo = 0, hi = 0;
        for (int i = 0; i < 32; i++) {
            lo = src[i] < lo ? src[i] : lo;
            hi = src[i] > hi ? src[i] : hi;
        }
        uint16_t dh = vlm_f32_to_f16((hi - lo) / 15.0f);
        float d = vlm_f16_to_f32(dh), id = d != 0 ? 1.0f / d : 0.0f;
        int z = quant_code(-lo * id, 0, 15);
        memcpy(dst, &dh, 2);
        for (int j = 0; j < 16; j++) {
            int a = quant_code(src[j] * id + (float)z, 0, 15), b = quant_code(src[j + 16] * id + (float)z, 0, 15);
            dst[2 + j] = (unsigned char)(a | b << 4);
        }
        dst[18] = (unsigned char)z;
        return;
    }
    /* q4_0: the element of largest magnitude m gets code 0 (d = m / -8), so
     * the 16 codes cover [-8d, 7d] with the extreme value exact */
    float m = 0;
    for (int i = 0; i < 32; i++) m = fabsf(src[i]) > fabsf(m) ? src[i] : m;
    uint16_t dh = vlm_f32_to_f16(m / -8.0f);
    float d = vlm_f16_to_f32(dh), id = d != 0 ? 1.0f / d : 0.0f;
    memcpy(dst, &dh, 2);
    for (int j = 0; j < 16; j++) {
        int lo = quant_code(src[j] * id + 8.0f, 0, 15), hi = quant_code(src[j + 16] * id + 8.0f, 0, 15);
        dst[2 + j] = (unsigned char)(lo | hi << 4);
    }
}

void vlm_quantize_row(vlm_dtype t, const float *x, int64_t n, void *blocks) {
    unsigned char *dst = (unsigned char *)blocks;
    size_t bs = vlm_dtype_size(t);
    for (int64_t i = 0; i < n; i += 32, dst += bs) {
        float tmp[32] = {0};
        memcpy(tmp, x + i, sizeof(float) * (size_t)(n - i < 32 ? n - i : 32));
        quant_block(t, tmp, dst);
    }
}

void vlm_dequantize_row(vlm_dtype t, const void *blocks, int64_t n, float *x) {
    const unsigned char *src = (const unsigned char *)blocks;
    size_t bs = vlm_dtype_size(t);
    for (int64_t i = 0; i < n; i += 32, src += bs) {
        uint16_t dh;
        memcpy(&dh, src, 2);
        float d = vlm_f16_to_f32(dh), v[32];
        int z = t == VLM_Q4_Z ? src[18] : 8;
        for (int j = 0; j < 32; j++)
            v[j] = t == VLM_Q8_0 ? d * (float)(int8_t)src[2 + j] : d * (float)((src[2 + j % 16] >> (j < 16 ? 0 : 4) & 15) - z);
        memcpy(x + i, v, sizeof(float) * (size_t)(n - i < 32 ? n - i : 32));
    }
}

int vlm_dtype_rows(vlm_dtype t) { return t == VLM_Q8_0R8 || t == VLM_Q4_0R8 || t == VLM_Q4_ZR8 ? 8 : 1; }
vlm_dtype vlm_dtype_unpacked(vlm_dtype t) {
    return t == VLM_Q8_0R8 ? VLM_Q8_0 : t == VLM_Q4_0R8 ? VLM_Q4_0 : t == VLM_Q4_ZR8 ? VLM_Q4_Z : t;
}

/* pack: rows -> group, else group -> rows. A group block is the 8 rows'
 * scales, then the code bytes in chunks of 32: chunk c holds bytes
 * 4c..4c+3 of each row's block codes in turn (q8_0: codes 4c..4c+3; q4_0
 * and q4_z: the bytes holding codes 4c+i and 16+4c+i), then (q4_z) the 8
 * rows' zero points. */
static void r8_move(vlm_dtype t, const unsigned char *src, int64_t K, unsigned char *dst, int pack) {
    size_t bs = vlm_dtype_size(t), row = vlm_dtype_bytes(t, K), ncode = t == VLM_Q8_0 ? 32 : 16;
    for (int64_t b = 0; b < (K + 31) / 32; b++) {
        unsigned char *g = (unsigned char *)(pack ? dst : src) + (size_t)b * 8 * bs;
        for (int r = 0; r < 8; r++) {
            unsigned char *blk = (unsigned char *)(pack ? src : dst) + r * row + (size_t)b * bs;
            if (pack) memcpy(g + 2 * r, blk, 2);
            else memcpy(blk, g + 2 * r, 2);
            for (size_t c = 0; c < ncode / 4; c++) {
                if (pack) memcpy(g + 16 + 32 * c + 4 * r, blk + 2 + 4 * c, 4);
                else memcpy(blk + 2 + 4 * c, g + 16 + 32 * c + 4 * r, 4);
            }
            if (bs > ncode + 2) { /* q4_z's zero point */
                if (pack) g[16 + 8 * ncode + r] = blk[2 + ncode];
                else blk[2 + ncode] = g[16 + 8 * ncode + r];
            }
        }
    }
}

void vlm_repack_r8(vlm_dtype t, const void *rows, int64_t K, void *group) {
    r8_move(vlm_dtype_unpacked(t), (const unsigned char *)rows, K, (unsigned char *)group, 1);
}
void vlm_unpack_r8(vlm_dtype t, const void *group, int64_t K, void *rows) {
    r8_move(vlm_dtype_unpacked(t), (const unsigned char *)group, K, (unsigned char *)rows, 0);
}

int vlm_quant_from_name(const char *name, vlm_dtype *out) {
    if (name && !strcmp(name, "q8_0")) { *out = VLM_Q8_0; return 0; }
    if (name && !strcmp(name, "q4_0")) { *out = VLM_Q4_0; return 0; }
    return -1;
}

/* AutoAWQ's nibble order: output 8j + c of a packed word is in bits
 * 4 awq_nibble[c] .. +3 (it packs outputs {0, 2, 4, 6, 1, 3, 5, 7} into
 * nibbles 0..7). */
static const int awq_nibble[8] = {0, 4, 1, 5, 2, 6, 3, 7};

static uint32_t awq_word(const void *words, int64_t at) {
    uint32_t w;
    memcpy(&w, (const unsigned char *)words + 4 * at, 4); /* mmap'd: any alignment */
    return w;
}
static unsigned awq_code(uint32_t w, int c) { return w >> (4 * awq_nibble[c]) & 15u; }

void vlm_awq_repack(vlm_dtype t, const void *qweight, const void *qzeros, const void *scales, int64_t K,
                    int64_t N, int64_t G, int64_t j0, int64_t j1, void *dst) {
    const int64_t W = N / 8; /* packed words per input row */
    const size_t bs = vlm_dtype_size(VLM_Q4_Z), row = vlm_dtype_bytes(VLM_Q4_Z, K);
    for (int64_t j = j0; j < j1; j++) {
        unsigned char *group = (unsigned char *)dst + (size_t)(j - j0) * 8 * row;
        for (int64_t b = 0; b < K / 32; b++) {
            unsigned char blk[8 * 19], code[8][32];
            int64_t g = b * 32 / G;
            for (int k = 0; k < 32; k++) {
                uint32_t w = awq_word(qweight, (b * 32 + k) * W + j);
                for (int c = 0; c < 8; c++) code[c][k] = (unsigned char)awq_code(w, c);
            }
            uint32_t zw = awq_word(qzeros, g * W + j);
            for (int c = 0; c < 8; c++) {
                unsigned char *o = blk + c * bs;
                memcpy(o, (const unsigned char *)scales + 2 * (size_t)(g * N + 8 * j + c), 2);
                for (int i = 0; i < 16; i++) o[2 + i] = (unsigned char)(code[c][i] | code[c][i + 16] << 4);
                o[18] = (unsigned char)awq_code(zw, c);
            }
            if (t == VLM_Q4_ZR8) vlm_repack_r8(t, blk, 32, group + (size_t)b * 8 * bs);
            else
                for (int c = 0; c < 8; c++) memcpy(group + c * row + (size_t)b * bs, blk + c * bs, bs);
        }
    }
}
