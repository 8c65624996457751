/* JSON: a small strict RFC 8259 parser into a tree of vlm_json nodes.
 *
 *  - The text must be valid UTF-8 (overlong forms, encoded surrogates and
 *    code points above U+10FFFF are rejected); one leading UTF-8 byte order
 *    mark is skipped (RFC 8259 section 8.1 allows a parser to ignore it).
 *  - \uXXXX escapes are decoded to UTF-8; surrogate pairs are combined and a
 *    lone surrogate is an error. "\u0000" yields a NUL inside the string
 *    (vlm_json.n is the byte length).
 *  - Numbers follow the RFC grammar exactly (no leading '+', no leading
 *    zeros, no "1." or ".5", no hex). NaN / Infinity are not accepted (none of
 *    the supported checkpoints' configs use them); a number whose magnitude
 *    overflows a double is an error.
 *  - Nesting deeper than JSON_MAX_DEPTH arrays/objects is an error.
 *  - Duplicate object keys are kept; vlm_json_get returns the last one, as
 *    Python's json module does.
 *  - Every error is VLM_ERR_FORMAT with "line L, column C" (1-based; the
 *    column counts bytes) of the offending character.
 */
#include "io/vlm_io.h"

#include <errno.h>
#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSON_MAX_DEPTH 512

typedef struct json_parser {
    const char *s;     /* text */
    size_t len, pos;
    int depth;
    vlm_error *err;
    const char *what;  /* file name for messages, or NULL */
    int failed;
} json_parser;

static void json_fail(json_parser *p, size_t at, const char *msg) {
    if (p->failed) return;
    p->failed = 1;
    if (at > p->len) at = p->len;
    int line = 1, col = 1;
    for (size_t i = 0; i < at; i++) {
        if (p->s[i] == '\n') { line++; col = 1; }
        else col++;
    }
    int at_end = at >= p->len;
    char c = at < p->len ? p->s[at] : 0;
    if (at_end)
        vlm_error_set(p->err, VLM_ERR_FORMAT, "%s%sJSON line %d, column %d: %s (at end of input)",
                      p->what ? p->what : "", p->what ? ": " : "", line, col, msg);
    else if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
        vlm_error_set(p->err, VLM_ERR_FORMAT, "%s%sJSON line %d, column %d: %s (near '%c')",
                      p->what ? p->what : "", p->what ? ": " : "", line, col, msg, c);
    else
        vlm_error_set(p->err, VLM_ERR_FORMAT, "%s%sJSON line %d, column %d: %s (byte 0x%02x)",
                      p->what ? p->what : "", p->what ? ": " : "", line, col, msg, (unsigned char)c);
}

static void json_oom(json_parser *p) {
    if (p->failed) return;
    p->failed = 1;
    vlm_error_set(p->err, VLM_ERR_OOM, "out of memory while parsing JSON");
}

static void json_skip_ws(json_parser *p) {
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r') p->pos++;
        else break;
    }
}

/* Frees what a node owns (not the node itself). */
static void json_free_contents(vlm_json *j) {
    if (!j) return;
    if (j->type == VLM_JSON_ARRAY || j->type == VLM_JSON_OBJECT) {
        for (int i = 0; i < j->n; i++) json_free_contents(&j->items[i]);
        free(j->items);
    }
    free(j->str);
    free(j->key);
    memset(j, 0, sizeof *j);
}

/* Length of a valid UTF-8 sequence starting at s[0] (n bytes available), or 0. */
static int json_utf8_len(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;                   /* continuation byte or overlong 2-byte lead */
    if (c < 0xE0) {
        if (n < 2 || (s[1] & 0xC0) != 0x80) return 0;
        return 2;
    }
    if (c < 0xF0) {
        if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && s[1] < 0xA0) return 0;  /* overlong */
        if (c == 0xED && s[1] >= 0xA0) return 0; /* UTF-16 surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        if (c == 0xF0 && s[1] < 0x90) return 0;  /* overlong */
        if (c == 0xF4 && s[1] >= 0x90) return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

static int json_hex4(const char *s, unsigned *out) {
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return -1;
    }
    *out = v;
    return 0;
}


/* Parses a string at p->pos (which is '"'); returns a malloc'd buffer and its length. */
static char *json_parse_string(json_parser *p, int *out_len) {
    size_t start = ++p->pos; /* after the quote */
    /* First pass: find the end and validate; decoded length <= raw length. */
    size_t i = start;
    while (1) {
        if (i >= p->len) { json_fail(p, start - 1, "unterminated string"); return NULL; }
        unsigned char c = (unsigned char)p->s[i];
        if (c == '"') break;
        if (c == '\\') { i += 2; continue; }
        i++;
    }
    size_t raw = i - start;
    if (raw > (size_t)0x7ffffff0) { json_fail(p, start - 1, "string too long"); return NULL; }
    char *out = malloc(raw + 1);
    if (!out) { json_oom(p); return NULL; }
    size_t o = 0;
    i = start;
    while (1) {
        if (i >= p->len) { json_fail(p, start - 1, "unterminated string"); free(out); return NULL; }
        unsigned char c = (unsigned char)p->s[i];
        if (c == '"') break;
        if (c < 0x20) { json_fail(p, i, "control character in string (must be escaped)"); free(out); return NULL; }
        if (c == '\\') {
            if (i + 1 >= p->len) { json_fail(p, start - 1, "unterminated string"); free(out); return NULL; }
            char e = p->s[i + 1];
            switch (e) {
            case '"': out[o++] = '"'; i += 2; continue;
            case '\\': out[o++] = '\\'; i += 2; continue;
            case '/': out[o++] = '/'; i += 2; continue;
            case 'b': out[o++] = '\b'; i += 2; continue;
            case 'f': out[o++] = '\f'; i += 2; continue;
            case 'n': out[o++] = '\n'; i += 2; continue;
            case 'r': out[o++] = '\r'; i += 2; continue;
            case 't': out[o++] = '\t'; i += 2; continue;
            case 'u': {
                unsigned cp, lo;
                if (i + 6 > p->len || json_hex4(p->s + i + 2, &cp)) {
                    json_fail(p, i, "bad \\u escape (need 4 hex digits)"); free(out); return NULL;
                }
                size_t esc = i;
                i += 6;
                if (cp >= 0xDC00 && cp <= 0xDFFF) {
                    json_fail(p, esc, "lone low surrogate in \\u escape"); free(out); return NULL;
                }
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    if (i + 6 > p->len || p->s[i] != '\\' || p->s[i + 1] != 'u' ||
                        json_hex4(p->s + i + 2, &lo) || lo < 0xDC00 || lo > 0xDFFF) {
                        json_fail(p, esc, "high surrogate not followed by a low surrogate \\u escape");
                        free(out); return NULL;
                    }
                    i += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                o += (size_t)vlm_utf8_encode(cp, out + o); /* 6 or 12 raw bytes -> at most 3 or 4 */
                continue;
            }
            default:
                json_fail(p, i, "invalid escape in string"); free(out); return NULL;
            }
        }
        int n = json_utf8_len((const unsigned char *)p->s + i, p->len - i);
        if (!n) { json_fail(p, i, "invalid UTF-8 in string"); free(out); return NULL; }
        memcpy(out + o, p->s + i, (size_t)n);
        o += (size_t)n;
        i += (size_t)n;
    }
    out[o] = 0;
    p->pos = i + 1;
    *out_len = (int)o;
    return out;
}

static int json_is_digit(char c) { return c >= '0' && c <= '9'; }

static void json_parse_number(json_parser *p, vlm_json *j) {
    size_t start = p->pos, i = p->pos;
    if (i < p->len && p->s[i] == '-') i++;
    if (i >= p->len || !json_is_digit(p->s[i])) { json_fail(p, i, "invalid number"); return; }
    if (p->s[i] == '0') {
        i++;
        if (i < p->len && json_is_digit(p->s[i])) { json_fail(p, i, "leading zero in number"); return; }
    } else {
        while (i < p->len && json_is_digit(p->s[i])) i++;
    }
    if (i < p->len && p->s[i] == '.') {
        i++;
        if (i >= p->len || !json_is_digit(p->s[i])) { json_fail(p, i, "digit expected after decimal point"); return; }
        while (i < p->len && json_is_digit(p->s[i])) i++;
    }
    if (i < p->len && (p->s[i] == 'e' || p->s[i] == 'E')) {
        i++;
        if (i < p->len && (p->s[i] == '+' || p->s[i] == '-')) i++;
        if (i >= p->len || !json_is_digit(p->s[i])) { json_fail(p, i, "digit expected in exponent"); return; }
        while (i < p->len && json_is_digit(p->s[i])) i++;
    }
    size_t n = i - start;
    char stack_buf[64], *buf = n < sizeof stack_buf ? stack_buf : malloc(n + 1);
    if (!buf) { json_oom(p); return; }
    memcpy(buf, p->s + start, n);
    buf[n] = 0;
    /* strtod honours the locale's decimal point: translate '.' if it differs. */
    const char *dp = localeconv()->decimal_point;
    if (dp && dp[0] && dp[0] != '.' && !dp[1])
        for (size_t k = 0; k < n; k++) if (buf[k] == '.') buf[k] = dp[0];
    errno = 0;
    double v = strtod(buf, NULL);
    if (buf != stack_buf) free(buf);
    if (isinf(v)) { json_fail(p, start, "number out of range"); return; }
    j->type = VLM_JSON_NUMBER;
    j->num = v;
    p->pos = i;
}

static int json_match(json_parser *p, const char *word) {
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n)) return 0;
    p->pos += n;
    return 1;
}

static void json_parse_value(json_parser *p, vlm_json *j);

/* Appends a zeroed slot to a container; returns it or NULL. */
static vlm_json *json_push(json_parser *p, vlm_json *j, int *cap) {
    if (j->n == *cap) {
        if (*cap > (1 << 28)) { json_fail(p, p->pos, "container too large"); return NULL; }
        int nc = *cap ? *cap * 2 : 4;
        vlm_json *ni = realloc(j->items, (size_t)nc * sizeof *ni);
        if (!ni) { json_oom(p); return NULL; }
        j->items = ni;
        *cap = nc;
    }
    vlm_json *slot = &j->items[j->n];
    memset(slot, 0, sizeof *slot);
    return slot;
}

static void json_parse_container(json_parser *p, vlm_json *j, int object) {
    size_t open = p->pos;
    if (++p->depth > JSON_MAX_DEPTH) { json_fail(p, open, "nesting too deep"); return; }
    j->type = object ? VLM_JSON_OBJECT : VLM_JSON_ARRAY;
    char close = object ? '}' : ']';
    int cap = 0;
    p->pos++;
    json_skip_ws(p);
    if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; p->depth--; return; }
    while (1) {
        json_skip_ws(p);
        vlm_json *slot = json_push(p, j, &cap);
        if (!slot) return;
        if (object) {
            if (p->pos >= p->len || p->s[p->pos] != '"') { json_fail(p, p->pos, "object key (string) expected"); return; }
            int klen = 0;
            char *key = json_parse_string(p, &klen);
            if (!key) return;
            json_skip_ws(p);
            if (p->pos >= p->len || p->s[p->pos] != ':') { free(key); json_fail(p, p->pos, "':' expected after object key"); return; }
            p->pos++;
            json_skip_ws(p);
            json_parse_value(p, slot);
            slot->key = key; /* after the value: json_parse_value starts from a zeroed slot */
            j->n++;
        } else {
            json_parse_value(p, slot);
            j->n++;
        }
        if (p->failed) return;
        json_skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == ',') { p->pos++; continue; }
        if (p->pos < p->len && p->s[p->pos] == close) { p->pos++; break; }
        json_fail(p, p->pos, object ? "',' or '}' expected in object" : "',' or ']' expected in array");
        return;
    }
    if (cap > j->n && j->n > 0) { /* trim */
        vlm_json *ni = realloc(j->items, (size_t)j->n * sizeof *ni);
        if (ni) j->items = ni;
    }
    p->depth--;
}

static void json_parse_value(json_parser *p, vlm_json *j) {
    if (p->pos >= p->len) { json_fail(p, p->pos, "value expected"); return; }
    char c = p->s[p->pos];
    switch (c) {
    case '{': json_parse_container(p, j, 1); return;
    case '[': json_parse_container(p, j, 0); return;
    case '"': {
        int n = 0;
        char *s = json_parse_string(p, &n);
        if (!s) return;
        j->type = VLM_JSON_STRING;
        j->str = s;
        j->n = n;
        return;
    }
    case 't': if (json_match(p, "true")) { j->type = VLM_JSON_BOOL; j->num = 1; return; } break;
    case 'f': if (json_match(p, "false")) { j->type = VLM_JSON_BOOL; j->num = 0; return; } break;
    case 'n': if (json_match(p, "null")) { j->type = VLM_JSON_NULL; return; } break;
    default:
        if (c == '-' || json_is_digit(c)) { json_parse_number(p, j); return; }
    }
    json_fail(p, p->pos, "unexpected character, value expected");
}

static vlm_json *json_parse_named(const char *text, size_t len, const char *what, vlm_error *err) {
    json_parser p = {.s = text, .len = len, .err = err, .what = what};
    if (!text && len) { vlm_error_set(err, VLM_ERR_ARG, "vlm_json_parse: NULL text"); return NULL; }
    if (len >= 3 && (unsigned char)text[0] == 0xEF && (unsigned char)text[1] == 0xBB && (unsigned char)text[2] == 0xBF)
        p.pos = 3;
    vlm_json *root = calloc(1, sizeof *root);
    if (!root) { vlm_error_set(err, VLM_ERR_OOM, "out of memory while parsing JSON"); return NULL; }
    json_skip_ws(&p);
    json_parse_value(&p, root);
    if (!p.failed) {
        json_skip_ws(&p);
        if (p.pos < p.len) json_fail(&p, p.pos, "trailing characters after the JSON value");
    }
    if (p.failed) {
        json_free_contents(root);
        free(root);
        return NULL;
    }
    return root;
}

vlm_json *vlm_json_parse(const char *text, size_t len, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    return json_parse_named(text, len, NULL, err);
}

vlm_json *vlm_json_load(const char *path, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    FILE *f = fopen(path, "rb");
    if (!f) { vlm_error_set(err, VLM_ERR_IO, "%s: cannot open: %s", path, strerror(errno)); return NULL; }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    if (!buf) { fclose(f); vlm_error_set(err, VLM_ERR_OOM, "out of memory reading %s", path); return NULL; }
    while (1) {
        if (len == cap) {
            char *nb = cap > ((size_t)1 << 40) ? NULL : realloc(buf, cap * 2);
            if (!nb) { free(buf); fclose(f); vlm_error_set(err, VLM_ERR_OOM, "out of memory reading %s", path); return NULL; }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f), bad_errno = errno;
    fclose(f);
    if (bad) { free(buf); vlm_error_set(err, VLM_ERR_IO, "%s: read error: %s", path, strerror(bad_errno)); return NULL; }
    vlm_json *j = json_parse_named(buf, len, path, err);
    free(buf);
    return j;
}

void vlm_json_free(vlm_json *j) {
    if (!j) return;
    json_free_contents(j);
    free(j);
}

const vlm_json *vlm_json_get(const vlm_json *obj, const char *key) {
    if (!obj || obj->type != VLM_JSON_OBJECT || !key) return NULL;
    for (int i = obj->n - 1; i >= 0; i--)
        if (obj->items[i].key && !strcmp(obj->items[i].key, key)) return &obj->items[i];
    return NULL;
}

const vlm_json *vlm_json_at(const vlm_json *arr, int i) {
    if (!arr || (arr->type != VLM_JSON_ARRAY && arr->type != VLM_JSON_OBJECT) || i < 0 || i >= arr->n) return NULL;
    return &arr->items[i];
}

const vlm_json *vlm_json_path(const vlm_json *root, const char *dotted) {
    if (!root || !dotted) return NULL;
    const vlm_json *cur = root;
    const char *s = dotted;
    char part[256];
    while (cur) {
        const char *dot = strchr(s, '.');
        size_t n = dot ? (size_t)(dot - s) : strlen(s);
        if (n >= sizeof part) return NULL;
        memcpy(part, s, n);
        part[n] = 0;
        if (cur->type == VLM_JSON_ARRAY) {
            /* A numeric component indexes an array: "layers.0.size". */
            if (n == 0 || n > 9) return NULL;
            int idx = 0;
            for (size_t k = 0; k < n; k++) {
                if (!json_is_digit(part[k])) return NULL;
                idx = idx * 10 + (part[k] - '0');
            }
            cur = vlm_json_at(cur, idx);
        } else {
            cur = vlm_json_get(cur, part);
        }
        if (!dot) return cur;
        s = dot + 1;
    }
    return NULL;
}

double vlm_json_num(const vlm_json *j, double def) {
    return j && j->type == VLM_JSON_NUMBER ? j->num : def;
}

int64_t vlm_json_int(const vlm_json *j, int64_t def) {
    if (!j || j->type != VLM_JSON_NUMBER) return def;
    double v = j->num;
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return def;
    return (int64_t)v; /* truncates toward zero */
}

int vlm_json_bool(const vlm_json *j, int def) {
    return j && j->type == VLM_JSON_BOOL ? (j->num != 0) : def;
}

const char *vlm_json_str(const vlm_json *j, const char *def) {
    return j && j->type == VLM_JSON_STRING ? j->str : def;
}

const vlm_json *vlm_json_cfg(const vlm_json *cfg, const char *section, const char *key) {
    const vlm_json *sec = section ? vlm_json_get(cfg, section) : NULL;
    const vlm_json *v = sec ? vlm_json_path(sec, key) : NULL;
    return v ? v : vlm_json_path(cfg, key);
}

int vlm_json_quote(vlm_buf *b, const char *s, size_t n) {
    const unsigned char *u = (const unsigned char *)s;
    vlm_buf_add(b, "\"", 1);
    size_t i = 0, run = 0; /* bytes [run, i) go out as they are */
    while (i < n) {
        unsigned char c = u[i];
        int len = json_utf8_len(u + i, n - i);
        if (len > 1 || (len == 1 && c >= 0x20 && c != '"' && c != '\\')) { i += (size_t)len; continue; }
        vlm_buf_add(b, s + run, i - run);
        char esc[8];
        if (len == 0) vlm_buf_add(b, "\xEF\xBF\xBD", 3); /* U+FFFD for a byte that begins no character */
        else if (c == '"' || c == '\\') { esc[0] = '\\'; esc[1] = (char)c; vlm_buf_add(b, esc, 2); }
        else if (c == '\n') vlm_buf_add(b, "\\n", 2);
        else if (c == '\r') vlm_buf_add(b, "\\r", 2);
        else if (c == '\t') vlm_buf_add(b, "\\t", 2);
        else { snprintf(esc, sizeof esc, "\\u%04x", c); vlm_buf_add(b, esc, 6); }
        run = ++i;
    }
    vlm_buf_add(b, s + run, n - run);
    return vlm_buf_add(b, "\"", 1);
}
