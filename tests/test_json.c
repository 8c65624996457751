/* JSON parser: valid documents, accessors, every error class with line:column. */
#include "vlm.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static vlm_json *parse(const char *s, vlm_error *err) {
    vlm_error_clear(err);
    return vlm_json_parse(s, strlen(s), err);
}

/* Expects a parse failure with VLM_ERR_FORMAT whose message names line:column
 * and contains `what`. */
static void expect_error(const char *text, size_t len, int line, int col, const char *what) {
    vlm_error err = {0};
    vlm_json *j = vlm_json_parse(text, len, &err);
    char want[64];
    snprintf(want, sizeof want, "line %d, column %d", line, col);
    CHECK(j == NULL, "parse of <%.*s> should fail", (int)len, text);
    CHECK(err.code == VLM_ERR_FORMAT, "<%.*s>: code %d (%s)", (int)len, text, err.code, err.msg);
    CHECK(strstr(err.msg, want) != NULL, "<%.*s>: message '%s' lacks '%s'", (int)len, text, err.msg, want);
    CHECK(strstr(err.msg, what) != NULL, "<%.*s>: message '%s' lacks '%s'", (int)len, text, err.msg, what);
    vlm_json_free(j);
}
#define EXPECT_ERR(s, line, col, what) expect_error(s, sizeof(s) - 1, line, col, what)

static void test_valid(void) {
    vlm_error err = {0};
    const char *doc =
        "{\n"
        "  \"architectures\": [\"Qwen2_5_VLForConditionalGeneration\"],\n"
        "  \"hidden_size\": 2048, \"rms_norm_eps\": 1e-06, \"rope_theta\": 1000000.0,\n"
        "  \"tie_word_embeddings\": true, \"use_cache\": false, \"pad\": null,\n"
        "  \"text_config\": {\"hidden_size\": 64, \"rope_scaling\": {\"mrope_section\": [16, 24, 24]}},\n"
        "  \"neg\": -0.5, \"zero\": 0, \"negzero\": -0, \"exp\": 2.5E+3, \"exp2\": 7e-2,\n"
        "  \"empty_obj\": {}, \"empty_arr\": [ ], \"dup\": 1, \"dup\": 2\n"
        "}\n";
    vlm_json *j = parse(doc, &err);
    CHECK(j != NULL, "valid doc: %s", err.msg);
    if (!j) return;
    CHECK(j->type == VLM_JSON_OBJECT && j->n == 17, "root type %d n %d", j->type, j->n);
    CHECK(!strcmp(vlm_json_str(vlm_json_at(vlm_json_get(j, "architectures"), 0), ""), "Qwen2_5_VLForConditionalGeneration"), "architectures[0]");
    CHECK(vlm_json_int(vlm_json_get(j, "hidden_size"), -1) == 2048, "hidden_size");
    CHECK(vlm_json_num(vlm_json_get(j, "rms_norm_eps"), 0) == 1e-06, "eps");
    CHECK(vlm_json_num(vlm_json_get(j, "rope_theta"), 0) == 1000000.0, "rope_theta");
    CHECK(vlm_json_int(vlm_json_get(j, "rope_theta"), 0) == 1000000, "rope_theta as int");
    CHECK(vlm_json_bool(vlm_json_get(j, "tie_word_embeddings"), 0) == 1, "bool true");
    CHECK(vlm_json_bool(vlm_json_get(j, "use_cache"), 1) == 0, "bool false");
    CHECK(vlm_json_get(j, "pad") && vlm_json_get(j, "pad")->type == VLM_JSON_NULL, "null");
    CHECK(vlm_json_int(vlm_json_path(j, "text_config.hidden_size"), -1) == 64, "path");
    CHECK(vlm_json_int(vlm_json_path(j, "text_config.rope_scaling.mrope_section.1"), -1) == 24, "path with index");
    CHECK(vlm_json_path(j, "text_config.rope_scaling.mrope_section.3") == NULL, "path index out of range");
    CHECK(vlm_json_path(j, "text_config.nope") == NULL, "path absent");
    CHECK(vlm_json_path(j, "hidden_size.x") == NULL, "path through a number");
    CHECK(vlm_json_num(vlm_json_get(j, "neg"), 0) == -0.5, "neg");
    CHECK(vlm_json_num(vlm_json_get(j, "exp"), 0) == 2500.0, "exp");
    CHECK(vlm_json_num(vlm_json_get(j, "exp2"), 0) == 7e-2, "exp2");
    CHECK(vlm_json_get(j, "empty_obj")->type == VLM_JSON_OBJECT && vlm_json_get(j, "empty_obj")->n == 0, "empty obj");
    CHECK(vlm_json_get(j, "empty_arr")->type == VLM_JSON_ARRAY && vlm_json_get(j, "empty_arr")->n == 0, "empty arr");
    CHECK(vlm_json_int(vlm_json_get(j, "dup"), 0) == 2, "duplicate key: last wins");
    /* Defaults on type mismatch / absence. */
    CHECK(vlm_json_int(vlm_json_get(j, "architectures"), 7) == 7, "int default");
    CHECK(vlm_json_str(vlm_json_get(j, "hidden_size"), "d")[0] == 'd', "str default");
    CHECK(vlm_json_bool(NULL, 3) == 3, "bool default");
    CHECK(vlm_json_num(NULL, 1.5) == 1.5, "num default");
    CHECK(vlm_json_get(NULL, "x") == NULL && vlm_json_at(NULL, 0) == NULL && vlm_json_path(NULL, "a") == NULL, "NULL safe");
    CHECK(vlm_json_at(vlm_json_get(j, "architectures"), -1) == NULL, "negative index");
    /* Composite-config lookup: section first, then top level. */
    CHECK(vlm_json_int(vlm_json_cfg(j, "text_config", "hidden_size"), -1) == 64, "cfg section");
    CHECK(vlm_json_int(vlm_json_cfg(j, "vision_config", "hidden_size"), -1) == 2048, "cfg absent section -> top");
    CHECK(vlm_json_bool(vlm_json_cfg(j, "text_config", "use_cache"), 1) == 0, "cfg key absent in section -> top");
    CHECK(vlm_json_int(vlm_json_cfg(j, "text_config", "rope_scaling.mrope_section.2"), -1) == 24, "cfg dotted key");
    CHECK(vlm_json_int(vlm_json_cfg(j, NULL, "hidden_size"), -1) == 2048, "cfg no section");
    CHECK(vlm_json_cfg(j, "text_config", "nope") == NULL && vlm_json_cfg(NULL, "a", "b") == NULL, "cfg absent");
    vlm_json_free(j);

    /* Scalars at top level, whitespace around. */
    j = parse(" \t\r\n42 \n", &err);
    CHECK(j && j->type == VLM_JSON_NUMBER && j->num == 42, "top-level number");
    vlm_json_free(j);
    j = parse("\"x\"", &err);
    CHECK(j && j->type == VLM_JSON_STRING && j->n == 1 && !strcmp(j->str, "x"), "top-level string");
    vlm_json_free(j);
    /* A UTF-8 BOM is skipped. */
    j = parse("\xEF\xBB\xBF{\"a\":1}", &err);
    CHECK(j && vlm_json_int(vlm_json_get(j, "a"), 0) == 1, "BOM: %s", err.msg);
    vlm_json_free(j);
}

static void test_numbers(void) {
    vlm_error err = {0};
    vlm_json *j = parse("[1e308, -1.7976931348623157e308, 1e-400, 9007199254740993, 123456789012, -9223372036854775808, 1e19, 0.1, 3.14159265358979]", &err);
    CHECK(j != NULL, "numbers: %s", err.msg);
    if (!j) return;
    CHECK(vlm_json_num(vlm_json_at(j, 0), 0) == 1e308, "1e308");
    CHECK(vlm_json_num(vlm_json_at(j, 1), 0) == -1.7976931348623157e308, "-DBL_MAX");
    CHECK(vlm_json_num(vlm_json_at(j, 2), 1) == 0.0, "underflow to 0");
    CHECK(vlm_json_num(vlm_json_at(j, 3), 0) == 9007199254740992.0, "2^53+1 rounds to even");
    CHECK(vlm_json_int(vlm_json_at(j, 4), 0) == 123456789012LL, "big int");
    CHECK(vlm_json_int(vlm_json_at(j, 5), 0) == INT64_MIN, "int64 min");
    CHECK(vlm_json_int(vlm_json_at(j, 6), -5) == -5, "1e19 out of int64 range -> default");
    CHECK(vlm_json_num(vlm_json_at(j, 7), 0) == 0.1, "0.1 correctly rounded");
    CHECK(vlm_json_num(vlm_json_at(j, 8), 0) == 3.14159265358979, "pi");
    vlm_json_free(j);
    EXPECT_ERR("[1e400]", 1, 2, "out of range");
    EXPECT_ERR("[-1e400]", 1, 2, "out of range");
}

static void test_strings(void) {
    vlm_error err = {0};
    vlm_json *j = parse("[\"a\\\"b\\\\c\\/d\\b\\f\\n\\r\\t\", \"\\u00e9\\u4e2d\\uD83D\\uDE00\", \"\\u0000x\", \"\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80\", \"\"]", &err);
    CHECK(j != NULL, "strings: %s", err.msg);
    if (!j) return;
    const vlm_json *s0 = vlm_json_at(j, 0), *s1 = vlm_json_at(j, 1), *s2 = vlm_json_at(j, 2), *s3 = vlm_json_at(j, 3);
    CHECK(s0->n == 12 && !memcmp(s0->str, "a\"b\\c/d\b\f\n\r\t", 13), "simple escapes '%s'", s0->str);
    CHECK(s1->n == 2 + 3 + 4 && !strcmp(s1->str, "\xc3\xa9\xe4\xb8\xad\xf0\x9f\x98\x80"), "\\u escapes and surrogate pair");
    CHECK(s2->n == 2 && s2->str[0] == 0 && s2->str[1] == 'x', "\\u0000 kept with length");
    CHECK(s3->n == 9 && !strcmp(s3->str, s1->str), "raw UTF-8 equals the escaped form");
    CHECK(vlm_json_at(j, 4)->n == 0 && vlm_json_at(j, 4)->str[0] == 0, "empty string");
    vlm_json_free(j);
    /* Keys with escapes. */
    j = parse("{\"k\\u00e9y\": 5}", &err);
    CHECK(j && vlm_json_int(vlm_json_get(j, "k\xc3\xa9y"), 0) == 5, "escaped key");
    vlm_json_free(j);
}

static void test_errors(void) {
    /* Syntax */
    EXPECT_ERR("", 1, 1, "value expected");
    EXPECT_ERR("   ", 1, 4, "value expected");
    EXPECT_ERR("{\"a\":1,}", 1, 8, "object key");
    EXPECT_ERR("[1,]", 1, 4, "value expected");
    EXPECT_ERR("[1 2]", 1, 4, "',' or ']'");
    EXPECT_ERR("{\"a\" 1}", 1, 6, "':' expected");
    EXPECT_ERR("{\"a\":1 \"b\":2}", 1, 8, "',' or '}'");
    EXPECT_ERR("{a:1}", 1, 2, "object key");
    EXPECT_ERR("{\n  \"a\": tru\n}", 2, 8, "value expected");
    EXPECT_ERR("[1]\n x", 2, 2, "trailing");
    EXPECT_ERR("[1", 1, 3, "',' or ']'");
    EXPECT_ERR("{\"a\":", 1, 6, "value expected");
    EXPECT_ERR("'a'", 1, 1, "value expected");
    EXPECT_ERR("[NaN]", 1, 2, "value expected");
    EXPECT_ERR("[Infinity]", 1, 2, "value expected");
    EXPECT_ERR("{} {}", 1, 4, "trailing");
    /* Numbers */
    EXPECT_ERR("[01]", 1, 3, "leading zero");
    EXPECT_ERR("[+1]", 1, 2, "value expected");
    EXPECT_ERR("[1.]", 1, 4, "decimal point");
    EXPECT_ERR("[.5]", 1, 2, "value expected");
    EXPECT_ERR("[1e]", 1, 4, "exponent");
    EXPECT_ERR("[1e+]", 1, 5, "exponent");
    EXPECT_ERR("[-]", 1, 3, "invalid number");
    EXPECT_ERR("[0x10]", 1, 3, "',' or ']'");
    /* Strings */
    EXPECT_ERR("\"abc", 1, 1, "unterminated string");
    EXPECT_ERR("[\"a\\\"]", 1, 2, "unterminated string");
    EXPECT_ERR("\"a\tb\"", 1, 3, "control character");
    EXPECT_ERR("\"a\nb\"", 1, 3, "control character");
    EXPECT_ERR("\"\\x\"", 1, 2, "invalid escape");
    EXPECT_ERR("\"\\u12g4\"", 1, 2, "\\u escape");
    EXPECT_ERR("\"\\u12\"", 1, 2, "\\u escape");
    EXPECT_ERR("\"\\uD83D\"", 1, 2, "high surrogate");
    EXPECT_ERR("\"\\uD83Dx\\uDE00\"", 1, 2, "high surrogate");
    EXPECT_ERR("\"\\uD83D\\u0041\"", 1, 2, "high surrogate");
    EXPECT_ERR("\"\\uDE00\"", 1, 2, "lone low surrogate");
    /* Invalid UTF-8 */
    EXPECT_ERR("\"\x80\"", 1, 2, "UTF-8");           /* stray continuation */
    EXPECT_ERR("\"\xc3\"", 1, 2, "UTF-8");           /* truncated */
    EXPECT_ERR("\"\xc0\xaf\"", 1, 2, "UTF-8");       /* overlong '/' */
    EXPECT_ERR("\"\xe0\x80\xaf\"", 1, 2, "UTF-8");   /* overlong 3-byte */
    EXPECT_ERR("\"\xed\xa0\x80\"", 1, 2, "UTF-8");   /* encoded surrogate */
    EXPECT_ERR("\"\xf4\x90\x80\x80\"", 1, 2, "UTF-8"); /* > U+10FFFF */
    EXPECT_ERR("\"\xf8\x88\x80\x80\x80\"", 1, 2, "UTF-8");
    EXPECT_ERR("\"ab\xff\"", 1, 4, "UTF-8");
    EXPECT_ERR("\n\n  [\"ok\", \"\xe4\xb8\"]", 3, 11, "UTF-8");
    EXPECT_ERR("\xc3\xa9", 1, 1, "value expected"); /* non-ASCII outside strings */
    /* An embedded NUL in the text is not whitespace. */
    EXPECT_ERR("[1]\0", 1, 4, "trailing");
    /* Errors in loaded files name the file. */
    vlm_error err = {0};
    vlm_json *j = vlm_json_load("/nonexistent/dir/config.json", &err);
    CHECK(!j && err.code == VLM_ERR_IO && strstr(err.msg, "/nonexistent/dir/config.json"), "load missing: %s", err.msg);
    vlm_error_clear(&err);
    j = vlm_json_load("tests", &err);
    CHECK(!j && err.code == VLM_ERR_IO && strstr(err.msg, "tests"), "load directory: %s", err.msg);
}

static void test_depth(void) {
    vlm_error err = {0};
    int n = 100000;
    char *s = malloc((size_t)n * 2 + 1);
    /* 500 levels are fine. */
    for (int i = 0; i < 500; i++) { s[i] = '['; s[500 + i] = ']'; }
    vlm_json *j = vlm_json_parse(s, 1000, &err);
    CHECK(j != NULL, "depth 500: %s", err.msg);
    const vlm_json *c = j;
    int d = 0;
    while (c && c->type == VLM_JSON_ARRAY && c->n == 1) { c = vlm_json_at(c, 0); d++; }
    CHECK(d == 499 && c && c->n == 0, "depth walk %d", d);
    vlm_json_free(j);
    /* 100000 levels: a clean error, no stack overflow. */
    for (int i = 0; i < n; i++) { s[i] = '['; s[n + i] = ']'; }
    vlm_error_clear(&err);
    j = vlm_json_parse(s, (size_t)n * 2, &err);
    CHECK(!j && err.code == VLM_ERR_FORMAT && strstr(err.msg, "too deep") && strstr(err.msg, "line 1, column 513"), "deep: %s", err.msg);
    /* Objects count too. */
    size_t k = 0;
    for (int i = 0; i < 600; i++) { memcpy(s + k, "{\"a\":", 5); k += 5; }
    s[k++] = '1';
    for (int i = 0; i < 600; i++) s[k++] = '}';
    vlm_error_clear(&err);
    j = vlm_json_parse(s, k, &err);
    CHECK(!j && err.code == VLM_ERR_FORMAT && strstr(err.msg, "too deep"), "deep objects: %s", err.msg);
    free(s);
}

static void test_load(void) {
    char path[] = "/tmp/vlm_test_json_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) return;
    FILE *f = fdopen(fd, "wb");
    fputs("{\"vision_config\": {\"depth\": 32,\n \"bad\": [1, 2,, 3]}}", f);
    fclose(f);
    vlm_error err = {0};
    vlm_json *j = vlm_json_load(path, &err);
    CHECK(!j && err.code == VLM_ERR_FORMAT && strstr(err.msg, path) && strstr(err.msg, "line 2, column 15"), "load error: %s", err.msg);
    f = fopen(path, "wb");
    /* A big array of objects (reallocation paths). */
    fputs("[", f);
    for (int i = 0; i < 20000; i++) fprintf(f, "%s{\"id\": %d, \"s\": \"t%d\"}", i ? "," : "", i, i);
    fputs("]", f);
    fclose(f);
    vlm_error_clear(&err);
    j = vlm_json_load(path, &err);
    CHECK(j && j->n == 20000, "big load: %s", err.msg);
    if (j) {
        CHECK(vlm_json_int(vlm_json_path(j, "19999.id"), 0) == 19999, "last id");
        CHECK(!strcmp(vlm_json_str(vlm_json_path(j, "123.s"), ""), "t123"), "string 123");
    }
    vlm_json_free(j);
    remove(path);
}

/* Canonical form of tests/data/json/flatten.py. */
typedef struct dumpbuf { char *p; size_t n, cap; } dumpbuf;
static void dput(dumpbuf *b, const char *s) {
    size_t k = strlen(s);
    if (b->n + k + 1 > b->cap) { b->cap = (b->n + k + 1) * 2; b->p = realloc(b->p, b->cap); }
    memcpy(b->p + b->n, s, k + 1);
    b->n += k;
}
static void dhex(dumpbuf *b, const char *s, size_t n) {
    char h[3];
    for (size_t i = 0; i < n; i++) { snprintf(h, sizeof h, "%02x", (unsigned char)s[i]); dput(b, h); }
}
static void dump(const vlm_json *j, dumpbuf *b) {
    char num[40];
    switch (j->type) {
    case VLM_JSON_NULL: dput(b, "N"); break;
    case VLM_JSON_BOOL: dput(b, j->num ? "T" : "F"); break;
    case VLM_JSON_NUMBER: snprintf(num, sizeof num, "%.17g", j->num); dput(b, num); break;
    case VLM_JSON_STRING: dput(b, "\""); dhex(b, j->str, (size_t)j->n); dput(b, "\""); break;
    case VLM_JSON_ARRAY:
    case VLM_JSON_OBJECT:
        dput(b, j->type == VLM_JSON_ARRAY ? "[" : "{");
        for (int i = 0; i < j->n; i++) {
            if (j->type == VLM_JSON_OBJECT) { dhex(b, j->items[i].key, strlen(j->items[i].key)); dput(b, ":"); }
            dump(&j->items[i], b);
            dput(b, ",");
        }
        dput(b, j->type == VLM_JSON_ARRAY ? "]" : "}");
    }
}

static void test_reference(const char *name) {
    char path[256], epath[256];
    snprintf(path, sizeof path, "tests/data/json/%s.json", name);
    snprintf(epath, sizeof epath, "tests/data/json/%s.expected", name);
    vlm_error err = {0};
    vlm_json *j = vlm_json_load(path, &err);
    CHECK(j != NULL, "%s: %s", path, err.msg);
    FILE *f = fopen(epath, "rb");
    CHECK(f != NULL, "cannot open %s", epath);
    if (!j || !f) { vlm_json_free(j); if (f) fclose(f); return; }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *want = calloc((size_t)n + 1, 1);
    if (fread(want, 1, (size_t)n, f) != (size_t)n) n = 0;
    fclose(f);
    while (n > 0 && want[n - 1] == '\n') want[--n] = 0;
    dumpbuf b = {0};
    dump(j, &b);
    size_t k = 0;
    while (k < b.n && k < (size_t)n && b.p[k] == want[k]) k++;
    CHECK(b.n == (size_t)n && k == b.n, "%s differs from Python's reading at byte %zu: '%.40s' vs '%.40s'",
          name, k, b.p + k, want + k);
    free(b.p);
    free(want);
    vlm_json_free(j);
}

/* The parser never reads past len: a safetensors header is followed by
 * binary data, not a NUL. Each document is parsed from an exact-size heap
 * copy (ASan catches an over-read) and from a copy followed by bytes that
 * would change the answer if they were read. */
static void test_bounded(void) {
    static const struct { const char *doc, *tail; int ok; double num; } cases[] = {
        {"12", "3", 1, 12},        {"-4.5", "6", 1, -4.5}, {"1e2", "0", 1, 100}, {"7", "e3", 1, 7},
        {"[1,2", "]", 0, 0},        {"tru", "e", 0, 0},     {"fals", "e", 0, 0},  {"nul", "l", 0, 0},
        {"\"ab", "\"", 0, 0},      {"{\"a\":1", "}", 0, 0}, {"1.", "5", 0, 0},   {"1e", "5", 0, 0},
        {"\"\\u00", "41\"", 0, 0}, {"-", "1", 0, 0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t n = strlen(cases[k].doc), t = strlen(cases[k].tail);
        char *exact = (char *)malloc(n), *padded = (char *)malloc(n + t + 1);
        memcpy(exact, cases[k].doc, n);
        memcpy(padded, cases[k].doc, n);
        memcpy(padded + n, cases[k].tail, t + 1);
        for (int v = 0; v < 2; v++) {
            vlm_error err = {0};
            vlm_json *j = vlm_json_parse(v ? padded : exact, n, &err);
            if (cases[k].ok)
                CHECK(j && vlm_json_num(j, -999) == cases[k].num, "<%s> then <%s>: %s", cases[k].doc, cases[k].tail,
                      j ? "wrong value" : err.msg);
            else
                CHECK(!j && err.code == VLM_ERR_FORMAT, "<%s> cut before <%s> must not parse", cases[k].doc,
                      cases[k].tail);
            vlm_json_free(j);
        }
        free(exact);
        free(padded);
    }
}

/* vlm_json_quote writes what the parser reads back: escapes, control
 * characters, multi-byte UTF-8 kept, bytes that are no UTF-8 as U+FFFD. */
static void test_quote(void) {
    static const struct { const char *in; size_t n; const char *back; } cases[] = { /* n 0: strlen */
        {"plain", 0, "plain"},
        {"q\"b\\s/", 0, "q\"b\\s/"},
        {"nl\n cr\r tab\t bell\x01 esc\x1b del\x7f", 0, "nl\n cr\r tab\t bell\x01 esc\x1b del\x7f"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"},
        {"bad\xff end\xc3", 0, "bad\xef\xbf\xbd end\xef\xbf\xbd"},
        {"nul\0in", 6, "nul\0in"},
        {"", 0, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        vlm_buf b = {0};
        vlm_json_quote(&b, cases[i].in, cases[i].n ? cases[i].n : strlen(cases[i].in));
        vlm_error err = {0};
        vlm_json *j = vlm_json_parse(b.p, b.n, &err);
        size_t want = strlen(cases[i].back) + (i == 5 ? 3 : 0);
        CHECK(j && j->type == VLM_JSON_STRING && (size_t)j->n == want && !memcmp(j->str, cases[i].back, want),
              "quote case %zu: %s -> %s", i, b.p, err.msg);
        for (size_t k = 0; k < b.n; k++) CHECK((unsigned char)b.p[k] >= 0x20, "case %zu: no raw control byte", i);
        vlm_json_free(j);
        free(b.p);
    }
}

int main(void) {
    test_quote();
    test_bounded();
    test_reference("gemma4_config");
    test_reference("qwen2_5_vl_config");
    test_reference("qwen3_tokenizer_config");
    test_reference("smolvlm_chat_template");
    test_reference("unicode_ascii");
    test_reference("unicode_utf8");
    test_valid();
    test_numbers();
    test_strings();
    test_errors();
    test_depth();
    test_load();
    TEST_MAIN_END();
}
