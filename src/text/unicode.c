/* UTF-8 decoding and NFC normalization over the generated tables in
 * unicode_tables.c (tools/gen_unicode.py). */
#include "text/vlm_text.h"

#include <stdlib.h>
#include <string.h>

int vlm_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    int len;
    uint32_t v, min;
    if (c >= 0xC2 && c <= 0xDF) { len = 2; v = c & 0x1F; min = 0x80; }
    else if (c >= 0xE0 && c <= 0xEF) { len = 3; v = c & 0x0F; min = 0x800; }
    else if (c >= 0xF0 && c <= 0xF4) { len = 4; v = c & 0x07; min = 0x10000; }
    else { *cp = 0x110000 + c; return 1; }
    if ((size_t)len > n) { *cp = 0x110000 + c; return 1; }
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) { *cp = 0x110000 + c; return 1; }
        v = (v << 6) | (s[i] & 0x3F);
    }
    if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = 0x110000 + c; return 1; }
    *cp = v;
    return len;
}

/* Encodes cp (or a raw byte 0x110000 + b) to s; returns the length. */
static int uni_utf8_encode(uint32_t cp, char *s) {
    if (cp >= 0x110000) { s[0] = (char)(cp - 0x110000); return 1; }
    return vlm_utf8_encode(cp, s);
}

enum { UNI_SBASE = 0xAC00, UNI_LBASE = 0x1100, UNI_VBASE = 0x1161, UNI_TBASE = 0x11A7,
       UNI_LCOUNT = 19, UNI_VCOUNT = 21, UNI_TCOUNT = 28, UNI_NCOUNT = 588, UNI_SCOUNT = 11172 };

static int uni_ccc_of(uint32_t cp) { return cp >= 0x110000 ? 0 : vlm_uni_ccc(cp); }

vlm_status vlm_nfc(const char *s, size_t n, char **out, size_t *out_len, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    const unsigned char *u = (const unsigned char *)s;
    /* Quick check: every code point NFC_QC=Yes and combining classes in order. */
    int quick = 1, last_ccc = 0;
    for (size_t i = 0; i < n && quick;) {
        if (u[i] < 0x80) { last_ccc = 0; i++; continue; }
        uint32_t cp;
        i += (size_t)vlm_utf8_decode(u + i, n - i, &cp);
        if (cp >= 0x110000) { last_ccc = 0; continue; }
        if (cp < 0x300) { last_ccc = 0; continue; }
        int c = vlm_uni_ccc(cp);
        if ((vlm_uni_props(cp) & VLM_UNI_NFC) || (c && last_ccc > c)) quick = 0;
        last_ccc = c;
    }
    if (quick) {
        *out = malloc(n + 1);
        if (!*out) return vlm_error_set(err, VLM_ERR_OOM, "out of memory in NFC");
        memcpy(*out, s, n);
        (*out)[n] = 0;
        *out_len = n;
        return VLM_OK;
    }
    /* Decompose. */
    size_t cap = n * 4 + 16, m = 0;
    uint32_t *cps = malloc(cap * sizeof *cps);
    if (!cps) return vlm_error_set(err, VLM_ERR_OOM, "out of memory in NFC");
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        i += (size_t)vlm_utf8_decode(u + i, n - i, &cp);
        if (cp >= UNI_SBASE && cp < UNI_SBASE + UNI_SCOUNT) {
            uint32_t si = cp - UNI_SBASE;
            cps[m++] = UNI_LBASE + si / UNI_NCOUNT;
            cps[m++] = UNI_VBASE + (si % UNI_NCOUNT) / UNI_TCOUNT;
            if (si % UNI_TCOUNT) cps[m++] = UNI_TBASE + si % UNI_TCOUNT;
            continue;
        }
        const uint32_t *d;
        int k = cp < 0xC0 || cp >= 0x110000 ? 0 : vlm_uni_decompose(cp, &d);
        if (k) for (int j = 0; j < k; j++) cps[m++] = d[j];
        else cps[m++] = cp;
    }
    /* Canonical ordering: stable insertion sort of each run of non-starters. */
    for (size_t i = 1; i < m; i++) {
        int c = uni_ccc_of(cps[i]);
        if (!c) continue;
        size_t j = i;
        uint32_t v = cps[i];
        while (j > 0) {
            int pc = uni_ccc_of(cps[j - 1]);
            if (pc <= c) break;
            cps[j] = cps[j - 1];
            j--;
        }
        cps[j] = v;
    }
    /* Compose. */
    size_t w = 0, starter = (size_t)-1;
    int last_c = -1;
    for (size_t i = 0; i < m; i++) {
        uint32_t cp = cps[i];
        int c = uni_ccc_of(cp);
        if (starter != (size_t)-1 && (last_c < c || (last_c == 0 && w == starter + 1))) {
            /* Not blocked: (last_c < c) or adjacent to the starter. */
            uint32_t st = cps[starter], comp = 0;
            if (st >= UNI_LBASE && st < UNI_LBASE + UNI_LCOUNT && cp >= UNI_VBASE && cp < UNI_VBASE + UNI_VCOUNT && w == starter + 1)
                comp = UNI_SBASE + ((st - UNI_LBASE) * UNI_VCOUNT + (cp - UNI_VBASE)) * UNI_TCOUNT;
            else if (st >= UNI_SBASE && st < UNI_SBASE + UNI_SCOUNT && (st - UNI_SBASE) % UNI_TCOUNT == 0 &&
                     cp > UNI_TBASE && cp < UNI_TBASE + UNI_TCOUNT && w == starter + 1)
                comp = st + (cp - UNI_TBASE);
            else if (st < 0x110000 && cp < 0x110000)
                comp = vlm_uni_compose_pair(st, cp);
            if (comp) { cps[starter] = comp; continue; }
        }
        if (c == 0) { starter = w; last_c = 0; }
        else last_c = c;
        cps[w++] = cp;
    }
    char *o = malloc(w * 4 + 1);
    if (!o) { free(cps); return vlm_error_set(err, VLM_ERR_OOM, "out of memory in NFC"); }
    size_t ol = 0;
    for (size_t i = 0; i < w; i++) ol += (size_t)uni_utf8_encode(cps[i], o + ol);
    o[ol] = 0;
    free(cps);
    *out = o;
    *out_len = ol;
    return VLM_OK;
}
