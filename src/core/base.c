/* Errors, the byte buffer and UTF-8 encoder, dtypes and their conversions. */
#include "core/vlm_core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ errors */

vlm_status vlm_error_set(vlm_error *err, vlm_status code, const char *fmt, ...) {
    if (!err || err->code != VLM_OK) return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
    va_end(ap);
    return code;
}

void vlm_error_clear(vlm_error *err) {
    if (!err) return;
    err->code = VLM_OK;
    err->msg[0] = 0;
}

vlm_limits vlm_limits_default(void) {
    vlm_limits l = {.template_steps = 10000000, .template_output = (size_t)16 << 20, .template_memory = (size_t)64 << 20,
                    .image_pixels = 100000000};
    return l;
}

vlm_limits vlm_limits_resolve(const vlm_limits *l) {
    vlm_limits d = vlm_limits_default();
    if (l) {
        if (l->template_steps > 0) d.template_steps = l->template_steps;
        if (l->template_output > 0) d.template_output = l->template_output;
        if (l->template_memory > 0) d.template_memory = l->template_memory;
        if (l->image_pixels > 0) d.image_pixels = l->image_pixels;
    }
    return d;
}

const char *vlm_status_name(vlm_status s) {
    switch (s) {
    case VLM_OK: return "ok";
    case VLM_ERR_IO: return "i/o error";
    case VLM_ERR_FORMAT: return "format error";
    case VLM_ERR_CONFIG: return "config error";
    case VLM_ERR_UNSUPPORTED: return "unsupported";
    case VLM_ERR_OOM: return "out of memory";
    case VLM_ERR_ARG: return "invalid argument";
    case VLM_ERR_CONTEXT: return "context full";
    case VLM_ERR_CANCELLED: return "cancelled";
    case VLM_ERR_LIMIT: return "limit exceeded";
    }
    return "unknown error";
}

/* ------------------------------------------------------------------ text helpers */

int vlm_buf_add(vlm_buf *b, const void *s, size_t n) {
    if (b->oom) return -1;
    if (n == 0) return 0;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1) cap *= 2;
        char *p = (char *)realloc(b->p, cap);
        if (!p) { b->oom = 1; return -1; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return 0;
}

int vlm_buf_str(vlm_buf *b, const char *s) { return vlm_buf_add(b, s, strlen(s)); }

int vlm_utf8_encode(uint32_t cp, char *s) {
    if (cp < 0x80) { s[0] = (char)cp; return 1; }
    if (cp < 0x800) { s[0] = (char)(0xC0 | (cp >> 6)); s[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        s[0] = (char)(0xE0 | (cp >> 12)); s[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        s[2] = (char)(0x80 | (cp & 0x3F)); return 3;
    }
    s[0] = (char)(0xF0 | (cp >> 18)); s[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    s[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); s[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Eight bytes at a time through a multiply-xorshift mix (a bijection per
 * word, so no two words of a block collide), the tail and length last. */
static uint64_t core_mix(uint64_t h) {
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    h ^= h >> 32;
    h *= 0xd6e8feb86659fd93ull;
    return h ^ (h >> 32);
}

uint64_t vlm_hash64(const void *data, size_t n, uint64_t seed) {
    const unsigned char *p = (const unsigned char *)data;
    uint64_t h = core_mix(seed ^ 0x9e3779b97f4a7c15ull), w;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        memcpy(&w, p + i, 8);
        h = core_mix(h ^ w) + 0x9e3779b97f4a7c15ull;
    }
    w = 0;
    if (n > i) memcpy(&w, p + i, n - i);
    return core_mix(h ^ w ^ ((uint64_t)n << 56) ^ (uint64_t)n);
}

/* ------------------------------------------------------------------ dtypes */

static const struct { const char *name; size_t size; int block; } core_dtypes[VLM_NTYPES] = {
    [VLM_F32] = {"F32", 4, 1}, [VLM_F16] = {"F16", 2, 1}, [VLM_BF16] = {"BF16", 2, 1},
    [VLM_I32] = {"I32", 4, 1}, [VLM_I64] = {"I64", 8, 1}, [VLM_U8] = {"U8", 1, 1}, [VLM_I8] = {"I8", 1, 1},
    [VLM_BOOL] = {"BOOL", 1, 1}, [VLM_Q8_0] = {"Q8_0", 34, 32}, [VLM_Q4_0] = {"Q4_0", 18, 32},
    [VLM_Q4_Z] = {"Q4_Z", 19, 32}, [VLM_Q8_0R8] = {"Q8_0R8", 34, 32}, [VLM_Q4_0R8] = {"Q4_0R8", 18, 32},
    [VLM_Q4_ZR8] = {"Q4_ZR8", 19, 32},
};

size_t vlm_dtype_size(vlm_dtype t) { return (unsigned)t < VLM_NTYPES ? core_dtypes[t].size : 0; }
int vlm_dtype_block(vlm_dtype t) { return (unsigned)t < VLM_NTYPES ? core_dtypes[t].block : 1; }
size_t vlm_dtype_bytes(vlm_dtype t, int64_t n) {
    int64_t b = vlm_dtype_block(t);
    return (size_t)((n + b - 1) / b) * vlm_dtype_size(t);
}
const char *vlm_dtype_name(vlm_dtype t) { return (unsigned)t < VLM_NTYPES ? core_dtypes[t].name : "?"; }

int vlm_dtype_from_name(const char *name, vlm_dtype *out) {
    for (int i = 0; i < VLM_NTYPES; i++)
        if (!strcmp(name, core_dtypes[i].name)) { *out = (vlm_dtype)i; return 0; }
    return -1;
}

float vlm_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) bits = sign;
        else { /* subnormal: renormalize */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) bits = sign | 0x7f800000 | (man << 13);
    else bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t vlm_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t man = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        man |= 0x800000;
        int shift = 14 - exp;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = sign | ((uint32_t)exp << 10) | (man >> 13);
    uint32_t rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++; /* may carry into the exponent: correct */
    return (uint16_t)half;
}

float vlm_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t vlm_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}
