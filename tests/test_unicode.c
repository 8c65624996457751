/* Unicode tables and NFC against samples of the Unicode Character Database
 * (tests/data/tok/unicode_props.txt and nfc_test.txt, written by
 * `python3 tools/gen_unicode.py --tests` from UnicodeData.txt, PropList.txt and
 * NormalizationTest.txt); UTF-8 decoding edge cases. */
#include "vlm.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int put_utf8(unsigned cp, char *o) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) { o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63)); return 3; }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63)); o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

static int field_utf8(const char *f, char *out) {
    int n = 0;
    const char *p = f;
    for (;;) {
        while (*p == ' ') p++;
        char *end;
        unsigned long cp = strtoul(p, &end, 16);
        if (end == p) break;
        n += put_utf8((unsigned)cp, out + n);
        p = end;
    }
    out[n] = 0;
    return n;
}

static void test_props(void) {
    FILE *f = fopen("tests/data/tok/unicode_props.txt", "r");
    CHECK(f != NULL, "missing unicode_props.txt");
    if (!f) return;
    char line[256];
    int n = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        unsigned cp;
        char cat[8];
        int ws;
        if (sscanf(line, "%x;%2s;%d", &cp, cat, &ws) != 3) continue;
        int p = vlm_uni_props(cp);
        int ok = !!(p & VLM_UNI_L) == (cat[0] == 'L') && !!(p & VLM_UNI_N) == (cat[0] == 'N') &&
                 !!(p & VLM_UNI_M) == (cat[0] == 'M') && !!(p & VLM_UNI_WS) == ws;
        if (!ok && bad++ < 10) fprintf(stderr, "U+%04X %s ws=%d: props %d\n", cp, cat, ws, p);
        n++;
    }
    fclose(f);
    CHECK(n > 2000 && bad == 0, "%d of %d code points with wrong properties", bad, n);
    printf("properties: %d code points checked\n", n);
}

static void test_nfc(void) {
    FILE *f = fopen("tests/data/tok/nfc_test.txt", "r");
    CHECK(f != NULL, "missing nfc_test.txt");
    if (!f) return;
    char line[1024], c[5][256];
    int n = 0, bad = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#') continue;
        char *col[5], *p = line;
        int k;
        for (k = 0; k < 5 && p; k++) { col[k] = p; p = strchr(p, ';'); if (p) *p++ = 0; }
        if (k < 5) continue;
        int len[5];
        for (int i = 0; i < 5; i++) len[i] = field_utf8(col[i], c[i]);
        for (int i = 0; i < 5; i++) {
            char *o = NULL;
            size_t ol = 0;
            vlm_error err = {0};
            CHECK(vlm_nfc(c[i], (size_t)len[i], &o, &ol, &err) == VLM_OK, "%s", err.msg);
            const char *want = i < 3 ? c[1] : c[3];
            if (!o || ol != strlen(want) || memcmp(o, want, ol)) { if (bad++ < 10) fprintf(stderr, "NFC of column %d of %s wrong\n", i + 1, col[0]); }
            n++;
            free(o);
        }
    }
    fclose(f);
    CHECK(n > 4000 && bad == 0, "%d of %d NFC results wrong", bad, n);
    printf("NFC: %d conversions checked\n", n);
    /* Invalid bytes pass through NFC unchanged, next to text that changes. */
    const char in[] = "e\xcc\x81\xff\xc3";
    char *o = NULL;
    size_t ol = 0;
    vlm_error err = {0};
    CHECK(vlm_nfc(in, sizeof in - 1, &o, &ol, &err) == VLM_OK && ol == 4 && !memcmp(o, "\xc3\xa9\xff\xc3", 4), "NFC with invalid bytes");
    free(o);
}

static void test_utf8(void) {
    uint32_t cp;
    CHECK(vlm_utf8_decode((const unsigned char *)"\xc3\xa9", 2, &cp) == 2 && cp == 0xE9, "2-byte");
    CHECK(vlm_utf8_decode((const unsigned char *)"\xf0\x9f\x98\x80", 4, &cp) == 4 && cp == 0x1F600, "4-byte");
    CHECK(vlm_utf8_decode((const unsigned char *)"\xc0\xaf", 2, &cp) == 1 && cp == 0x110000 + 0xC0, "overlong");
    CHECK(vlm_utf8_decode((const unsigned char *)"\xed\xa0\x80", 3, &cp) == 1 && cp >= 0x110000, "surrogate");
    CHECK(vlm_utf8_decode((const unsigned char *)"\xe2\x82", 2, &cp) == 1 && cp >= 0x110000, "truncated");
    CHECK(vlm_utf8_decode((const unsigned char *)"\xf4\x90\x80\x80", 4, &cp) == 1 && cp >= 0x110000, "above U+10FFFF");
    CHECK(vlm_utf8_decode((const unsigned char *)"\x80", 1, &cp) == 1 && cp == 0x110080, "continuation byte");
}

int main(void) {
    test_props();
    test_nfc();
    test_utf8();
    TEST_MAIN_END();
}
