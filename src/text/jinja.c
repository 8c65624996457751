/* A small Jinja2 interpreter for HF chat templates.
 *
 * Covers what the chat templates of the supported families use: text with
 * whitespace control (and HF's trim_blocks / lstrip_blocks), {{ }} output,
 * if/elif/else, for (with unpacking, loop variables, else, inline filter),
 * set (incl. namespace attributes), macros with default and keyword
 * arguments, break/continue, generation blocks, comments; expressions with
 * Python semantics for strings, numbers, lists and dicts, slicing, tests,
 * the common filters and string/dict methods. Values live in an arena freed
 * when the render ends. */
#include "text/vlm_text.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ arena + buffer */

typedef struct jj_block { struct jj_block *next; size_t used, cap; char data[]; } jj_block;


/* ------------------------------------------------------------------ values */

typedef enum { JV_UNDEF = 0, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_MACRO, JV_METHOD, JV_FUNC } jv_type;

typedef struct jv jv;
typedef struct jj_node jj_node;

struct jv {
    jv_type t;
    int is_ns;         /* DICT created by namespace() (attributes assignable) */
    int64_t i;         /* BOOL, INT */
    double f;
    const char *s;     /* STR (NUL-terminated, length n) / METHOD name / FUNC name */
    size_t n;
    jv **items;        /* LIST items / DICT values */
    const char **keys; /* DICT keys */
    int len, cap;
    jv *self;          /* METHOD receiver */
    jj_node *macro;    /* MACRO */
};

typedef struct jj_frame {
    const char **names;
    jv **vals;
    int n, cap;
    int barrier; /* macro call frame: lookups skip to the globals after this */
} jj_frame;

typedef struct jj_ctx {
    jj_block *blocks;
    jj_frame frames[64];
    int n_frames;
    vlm_error *err;
    int failed;
    int brk, cont; /* loop control */
    int depth;
    jv scratch; /* returned by jj_new after an allocation failure */
    vlm_limits lim;   /* template_steps, template_output, template_memory */
    int64_t steps;    /* evaluations and statements run so far */
    size_t mem;       /* bytes of interpreter blocks */
} jj_ctx;

/* Stops a runaway template: each budget is checked where it grows. */
static int jj_over(jj_ctx *c, const char *what, unsigned long long limit, const char *field) {
    if (!c->failed)
        vlm_error_set(c->err, VLM_ERR_LIMIT, "chat template: more than %llu %s (a runaway template? vlm_limits.%s)",
                      limit, what, field);
    c->failed = 1;
    return 1;
}
#define JJ_STEP(c) (++(c)->steps > (c)->lim.template_steps && jj_over((c), "steps", (unsigned long long)(c)->lim.template_steps, "template_steps"))
static int jj_output_over(jj_ctx *c, const vlm_buf *out) {
    return out->n > c->lim.template_output &&
           jj_over(c, "bytes of output", (unsigned long long)c->lim.template_output, "template_output");
}

static void *jj_alloc(jj_ctx *c, size_t n) {
    n = (n + 15) & ~(size_t)15;
    jj_block *b = c->blocks;
    if (!b || b->used + n > b->cap) {
        size_t cap = n > 65536 ? n : 65536;
        if (c->mem + cap > c->lim.template_memory) {
            jj_over(c, "bytes of memory", (unsigned long long)c->lim.template_memory, "template_memory");
            return NULL;
        }
        c->mem += cap;
        b = malloc(sizeof *b + cap);
        if (!b) { if (!c->failed) vlm_error_set(c->err, VLM_ERR_OOM, "out of memory in chat template"); c->failed = 1; return NULL; }
        b->cap = cap;
        b->used = 0;
        b->next = c->blocks;
        c->blocks = b;
    }
    void *p = b->data + b->used;
    b->used += n;
    memset(p, 0, n);
    return p;
}

/* Shared immutable singletons (read-only: nothing writes through these pointers). */
static const jv jj_undef_c = {JV_UNDEF, 0, 0, 0, NULL, 0, NULL, NULL, 0, 0, NULL, NULL};
static const jv jj_none_c = {JV_NONE, 0, 0, 0, NULL, 0, NULL, NULL, 0, 0, NULL, NULL};
static const jv jj_true_c = {JV_BOOL, 0, 1, 0, NULL, 0, NULL, NULL, 0, 0, NULL, NULL};
static const jv jj_false_c = {JV_BOOL, 0, 0, 0, NULL, 0, NULL, NULL, 0, 0, NULL, NULL};
#define jj_undef_v (*(jv *)&jj_undef_c)
#define jj_none_v (*(jv *)&jj_none_c)
#define jj_true_v (*(jv *)&jj_true_c)
#define jj_false_v (*(jv *)&jj_false_c)

static jv *jj_fail(jj_ctx *c, const char *fmt, ...) {
    if (!c->failed) {
        char msg[400];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        vlm_error_set(c->err, VLM_ERR_FORMAT, "chat template: %s", msg);
    }
    c->failed = 1;
    return &jj_undef_v;
}

static jv *jj_new(jj_ctx *c, jv_type t) {
    jv *v = jj_alloc(c, sizeof *v);
    if (!v) { memset(&c->scratch, 0, sizeof c->scratch); return &c->scratch; } /* OOM: render fails */
    v->t = t;
    return v;
}
static jv *jj_bool(int b) { return b ? &jj_true_v : &jj_false_v; }
static jv *jj_int(jj_ctx *c, int64_t i) { jv *v = jj_new(c, JV_INT); if (v->t == JV_INT) v->i = i; return v; }
static jv *jj_float(jj_ctx *c, double f) { jv *v = jj_new(c, JV_FLOAT); if (v->t == JV_FLOAT) v->f = f; return v; }
static jv *jj_strn(jj_ctx *c, const char *s, size_t n) {
    jv *v = jj_new(c, JV_STR);
    if (v->t != JV_STR) return v;
    char *p = jj_alloc(c, n + 1);
    if (!p) return &jj_undef_v;
    if (n) memcpy(p, s, n); /* s may be NULL for an empty string */
    p[n] = 0;
    v->s = p;
    v->n = n;
    return v;
}
static jv *jj_str(jj_ctx *c, const char *s) { return jj_strn(c, s, strlen(s)); }

static void jj_list_push(jj_ctx *c, jv *l, jv *x) {
    if (l->len == l->cap) {
        int cap = l->cap ? l->cap * 2 : 8;
        jv **items = jj_alloc(c, (size_t)cap * sizeof *items);
        const char **keys = l->t == JV_DICT ? jj_alloc(c, (size_t)cap * sizeof *keys) : NULL;
        if (!items || (l->t == JV_DICT && !keys)) return;
        if (l->len) memcpy(items, l->items, (size_t)l->len * sizeof *items);
        if (keys && l->len) memcpy(keys, l->keys, (size_t)l->len * sizeof *keys);
        l->items = items;
        if (keys) l->keys = keys;
        l->cap = cap;
    }
    l->items[l->len++] = x;
}

static jv *jj_dict_get(const jv *d, const char *k) {
    for (int i = 0; i < d->len; i++)
        if (!strcmp(d->keys[i], k)) return d->items[i];
    return NULL;
}

static void jj_dict_set(jj_ctx *c, jv *d, const char *k, jv *x) {
    for (int i = 0; i < d->len; i++)
        if (!strcmp(d->keys[i], k)) { d->items[i] = x; return; }
    int n = d->len;
    jj_list_push(c, d, x);
    if (d->len == n + 1) {
        size_t kl = strlen(k);
        char *kk = jj_alloc(c, kl + 1);
        if (kk) memcpy(kk, k, kl + 1);
        d->keys[n] = kk ? kk : "";
    }
}

static int jj_truthy(const jv *v) {
    switch (v->t) {
    case JV_UNDEF: case JV_NONE: return 0;
    case JV_BOOL: case JV_INT: return v->i != 0;
    case JV_FLOAT: return v->f != 0;
    case JV_STR: return v->n > 0;
    case JV_LIST: case JV_DICT: return v->len > 0;
    default: return 1;
    }
}

/* Python repr of a string. */
static void jj_repr_str(vlm_buf *b, const char *s, size_t n) {
    int has_sq = memchr(s, '\'', n) != NULL, has_dq = memchr(s, '"', n) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    vlm_buf_add(b, &q, 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char tmp[8];
        if (ch == (unsigned char)q || ch == '\\') { tmp[0] = '\\'; tmp[1] = (char)ch; vlm_buf_add(b, tmp, 2); }
        else if (ch == '\n') vlm_buf_str(b, "\\n");
        else if (ch == '\r') vlm_buf_str(b, "\\r");
        else if (ch == '\t') vlm_buf_str(b, "\\t");
        else if (ch < 0x20 || ch == 0x7F) { snprintf(tmp, sizeof tmp, "\\x%02x", ch); vlm_buf_str(b, tmp); }
        else vlm_buf_add(b, (const char *)&ch, 1);
    }
    vlm_buf_add(b, &q, 1);
}

static void jj_fmt_float(vlm_buf *b, double f) {
    char tmp[40];
    if (isnan(f)) { vlm_buf_str(b, "nan"); return; }
    if (isinf(f)) { vlm_buf_str(b, f > 0 ? "inf" : "-inf"); return; }
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*g", p, f);
        if (strtod(tmp, NULL) == f) break;
    }
    vlm_buf_str(b, tmp);
    if (!strpbrk(tmp, ".en")) vlm_buf_str(b, ".0");
}

static void jj_to_str(vlm_buf *b, const jv *v, int repr);

static void jj_to_str(vlm_buf *b, const jv *v, int repr) {
    char tmp[32];
    switch (v->t) {
    case JV_UNDEF: break;
    case JV_NONE: vlm_buf_str(b, "None"); break;
    case JV_BOOL: vlm_buf_str(b, v->i ? "True" : "False"); break;
    case JV_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v->i); vlm_buf_str(b, tmp); break;
    case JV_FLOAT: jj_fmt_float(b, v->f); break;
    case JV_STR: if (repr) jj_repr_str(b, v->s, v->n); else vlm_buf_add(b, v->s, v->n); break;
    case JV_LIST:
        vlm_buf_str(b, "[");
        for (int i = 0; i < v->len; i++) { if (i) vlm_buf_str(b, ", "); jj_to_str(b, v->items[i], 1); }
        vlm_buf_str(b, "]");
        break;
    case JV_DICT:
        if (v->is_ns) { vlm_buf_str(b, "<Namespace>"); break; }
        vlm_buf_str(b, "{");
        for (int i = 0; i < v->len; i++) {
            if (i) vlm_buf_str(b, ", ");
            jj_repr_str(b, v->keys[i], strlen(v->keys[i]));
            vlm_buf_str(b, ": ");
            jj_to_str(b, v->items[i], 1);
        }
        vlm_buf_str(b, "}");
        break;
    default: vlm_buf_str(b, "<function>"); break;
    }
}

static void jj_json_str(vlm_buf *b, const char *s, size_t n) {
    vlm_buf_str(b, "\"");
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        char tmp[8];
        if (ch == '"' || ch == '\\') { tmp[0] = '\\'; tmp[1] = (char)ch; vlm_buf_add(b, tmp, 2); }
        else if (ch == '\n') vlm_buf_str(b, "\\n");
        else if (ch == '\r') vlm_buf_str(b, "\\r");
        else if (ch == '\t') vlm_buf_str(b, "\\t");
        else if (ch == '\b') vlm_buf_str(b, "\\b");
        else if (ch == '\f') vlm_buf_str(b, "\\f");
        else if (ch < 0x20) { snprintf(tmp, sizeof tmp, "\\u%04x", ch); vlm_buf_str(b, tmp); }
        else vlm_buf_add(b, (const char *)&ch, 1);
    }
    vlm_buf_str(b, "\"");
}

/* json.dumps(v, ensure_ascii=False) with optional indent. */
static void jj_to_json(vlm_buf *b, const jv *v, int indent, int level) {
    char tmp[32];
    switch (v->t) {
    case JV_UNDEF: case JV_NONE: vlm_buf_str(b, "null"); break;
    case JV_BOOL: vlm_buf_str(b, v->i ? "true" : "false"); break;
    case JV_INT: snprintf(tmp, sizeof tmp, "%lld", (long long)v->i); vlm_buf_str(b, tmp); break;
    case JV_FLOAT: jj_fmt_float(b, v->f); break;
    case JV_STR: jj_json_str(b, v->s, v->n); break;
    case JV_LIST: case JV_DICT: {
        int dict = v->t == JV_DICT;
        vlm_buf_str(b, dict ? "{" : "[");
        if (!v->len) { vlm_buf_str(b, dict ? "}" : "]"); break; }
        for (int i = 0; i < v->len; i++) {
            if (i) vlm_buf_str(b, indent > 0 ? "," : ", ");
            if (indent > 0) { vlm_buf_str(b, "\n"); for (int k = 0; k < indent * (level + 1); k++) vlm_buf_str(b, " "); }
            if (dict) { jj_json_str(b, v->keys[i], strlen(v->keys[i])); vlm_buf_str(b, ": "); }
            jj_to_json(b, v->items[i], indent, level + 1);
        }
        if (indent > 0) { vlm_buf_str(b, "\n"); for (int k = 0; k < indent * level; k++) vlm_buf_str(b, " "); }
        vlm_buf_str(b, dict ? "}" : "]");
        break;
    }
    default: vlm_buf_str(b, "null"); break;
    }
}

static jv *jj_stringify(jj_ctx *c, const jv *v) {
    if (v->t == JV_STR) return (jv *)v;
    vlm_buf b = {0};
    jj_to_str(&b, v, 0);
    jv *r = b.oom ? jj_fail(c, "out of memory") : jj_strn(c, b.p ? b.p : "", b.n);
    free(b.p);
    return r;
}

static int jj_equal(const jv *a, const jv *b) {
    if ((a->t == JV_INT || a->t == JV_BOOL || a->t == JV_FLOAT) && (b->t == JV_INT || b->t == JV_BOOL || b->t == JV_FLOAT)) {
        double x = a->t == JV_FLOAT ? a->f : (double)a->i, y = b->t == JV_FLOAT ? b->f : (double)b->i;
        return x == y;
    }
    if (a->t != b->t) return 0;
    switch (a->t) {
    case JV_UNDEF: case JV_NONE: return 1;
    case JV_STR: return a->n == b->n && !memcmp(a->s, b->s, a->n);
    case JV_LIST:
        if (a->len != b->len) return 0;
        for (int i = 0; i < a->len; i++) if (!jj_equal(a->items[i], b->items[i])) return 0;
        return 1;
    case JV_DICT:
        if (a->len != b->len) return 0;
        for (int i = 0; i < a->len; i++) {
            jv *o = jj_dict_get(b, a->keys[i]);
            if (!o || !jj_equal(a->items[i], o)) return 0;
        }
        return 1;
    default: return a == b;
    }
}

/* ------------------------------------------------------------------ template lexer */

enum { JT_TEXT, JT_VAR, JT_BLOCK, JT_COMMENT };
typedef struct jj_tok {
    int type;
    const char *s;  /* text, or inner content of a tag */
    size_t n;
    int strip_l, strip_r;
} jj_tok;

/* Expression tokens. */
enum { JE_EOF, JE_NAME, JE_STR, JE_INT, JE_FLOAT, JE_OP };
typedef struct jj_etok {
    int type;
    const char *s;
    size_t n;
    char op[3];
    int64_t i;
    double f;
} jj_etok;

/* ------------------------------------------------------------------ AST */

enum {
    /* statements */
    JN_TEXT, JN_OUT, JN_IF, JN_FOR, JN_SET, JN_SETBLOCK, JN_MACRO, JN_BREAK, JN_CONTINUE, JN_BODY,
    /* expressions */
    JN_LIT, JN_NAME, JN_ATTR, JN_INDEX, JN_SLICE, JN_CALL, JN_FILTER, JN_TEST, JN_UNARY, JN_BINOP,
    JN_AND, JN_OR, JN_NOT, JN_COND, JN_LISTLIT, JN_DICTLIT,
};

struct jj_node {
    int kind;
    const char *s; size_t n;   /* TEXT, NAME, ATTR name, FILTER/TEST name, op */
    char op[3];
    int negate;                /* TEST is not / not in */
    jv *lit;
    jj_node *a, *b, *c, *d;    /* children: IF cond/body/else; FOR iter/body/else/filter; SLICE ... */
    jj_node **list; int n_list; int cap_list; /* BODY statements, CALL args, list items, dict keys+vals */
    const char **kw; int n_kw; /* CALL/FILTER keyword argument names (for the last n_kw args) */
    const char *names[2]; int n_names; /* FOR targets, SET target name (+ attr), MACRO name */
    const char **params; jj_node **defaults; int n_params; /* MACRO */
};

typedef struct jj_parser {
    jj_ctx *c;
    jj_tok *toks;
    int n_toks, pos;
    /* expression lexer state */
    const char *e, *e_end;
    jj_etok cur;
    int depth;       /* expression nesting (bounded: the parser recurses) */
    int block_depth; /* statement nesting */
} jj_parser;

static jj_node *jj_node_new(jj_parser *p, int kind) {
    jj_node *n = jj_alloc(p->c, sizeof *n);
    if (n) n->kind = kind;
    return n;
}

static void jj_node_add(jj_parser *p, jj_node *parent, jj_node *child) {
    if (!parent || !child) return;
    if (parent->n_list == parent->cap_list) {
        int cap = parent->cap_list ? parent->cap_list * 2 : 8;
        jj_node **l = jj_alloc(p->c, (size_t)cap * sizeof *l);
        if (!l) return;
        if (parent->n_list) memcpy(l, parent->list, (size_t)parent->n_list * sizeof *l);
        parent->list = l;
        parent->cap_list = cap;
    }
    parent->list[parent->n_list++] = child;
}

static int jj_is_space(char ch) { return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f'; }

/* Splits the template into text and tags, applying whitespace control. */
static int jj_lex_template(jj_ctx *c, const char *src, jj_tok **out, int *n_out) {
    size_t n = strlen(src);
    int cap = 64, cnt = 0;
    jj_tok *t = malloc((size_t)cap * sizeof *t);
    if (!t) { jj_fail(c, "out of memory"); return -1; }
    size_t i = 0;
    while (i <= n) {
        const char *o = NULL;
        size_t j = i;
        while (j + 1 < n) {
            if (src[j] == '{' && (src[j + 1] == '{' || src[j + 1] == '%' || src[j + 1] == '#')) { o = src + j; break; }
            j++;
        }
        if (cnt + 2 >= cap) {
            cap *= 2;
            jj_tok *nt = realloc(t, (size_t)cap * sizeof *t);
            if (!nt) { free(t); jj_fail(c, "out of memory"); return -1; }
            t = nt;
        }
        size_t text_end = o ? (size_t)(o - src) : n;
        if (text_end > i) { jj_tok tt = {JT_TEXT, src + i, text_end - i, 0, 0}; t[cnt++] = tt; }
        if (!o) break;
        char kind = o[1];
        const char *close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
        size_t k = text_end + 2;
        const char *e = NULL;
        /* Find the closing delimiter outside string literals. */
        char q = 0;
        for (size_t m = k; m + 1 < n + 1 && m < n; m++) {
            if (kind != '#') {
                if (q) { if (src[m] == '\\') { m++; continue; } if (src[m] == q) q = 0; continue; }
                if (src[m] == '\'' || src[m] == '"') { q = src[m]; continue; }
            }
            if (m + 1 < n && src[m] == close[0] && src[m + 1] == close[1]) { e = src + m; break; }
        }
        if (!e) { free(t); jj_fail(c, "unterminated tag at offset %zu", text_end); return -1; }
        jj_tok tg;
        tg.type = kind == '{' ? JT_VAR : kind == '%' ? JT_BLOCK : JT_COMMENT;
        const char *is = src + k, *ie = e;
        tg.strip_l = is < ie && *is == '-';
        if (is < ie && (*is == '-' || *is == '+')) is++;
        tg.strip_r = ie > is && ie[-1] == '-';
        int keep_r = ie > is && ie[-1] == '+';
        if (tg.strip_r || keep_r) ie--;
        tg.s = is;
        tg.n = (size_t)(ie - is);
        t[cnt++] = tg;
        i = (size_t)(e - src) + 2;
        /* {% raw %} ... {% endraw %} */
        if (tg.type == JT_BLOCK) {
            const char *a = tg.s, *b = tg.s + tg.n;
            while (a < b && jj_is_space(*a)) a++;
            while (b > a && jj_is_space(b[-1])) b--;
            if (b - a == 3 && !memcmp(a, "raw", 3)) {
                const char *r = strstr(src + i, "endraw");
                const char *st = r;
                while (st && st > src + i && st[-1] != '{') st--;
                if (!r || st <= src + i) { free(t); jj_fail(c, "unterminated raw block"); return -1; }
                st--; /* at '{' */
                jj_tok tt = {JT_TEXT, src + i, (size_t)(st - (src + i)), 0, 0};
                if (st[2] == '-') { while (tt.n && jj_is_space(tt.s[tt.n - 1])) tt.n--; }
                t[cnt - 1] = tt;
                const char *ce = strstr(r, "%}");
                if (!ce) { free(t); jj_fail(c, "unterminated raw block"); return -1; }
                i = (size_t)(ce - src) + 2;
            }
        }
        (void)keep_r;
    }
    /* Whitespace control: '-' strips, trim_blocks / lstrip_blocks for blocks and comments. */
    for (int k = 0; k < cnt; k++) {
        if (t[k].type == JT_TEXT) continue;
        int block = t[k].type != JT_VAR;
        const char *tagstart = t[k].s; /* approximate: content start (only used for '+' checks) */
        (void)tagstart;
        if (k > 0 && t[k - 1].type == JT_TEXT) {
            jj_tok *p = &t[k - 1];
            if (t[k].strip_l) { while (p->n && jj_is_space(p->s[p->n - 1])) p->n--; }
            else if (block && !(t[k].s[-1] == '+')) {
                size_t m = p->n;
                while (m && (p->s[m - 1] == ' ' || p->s[m - 1] == '\t')) m--;
                if (m == 0 ? (p->s == src || p->s[-1] == '\n') : p->s[m - 1] == '\n') p->n = m;
            }
        }
        if (k + 1 < cnt && t[k + 1].type == JT_TEXT) {
            jj_tok *nx = &t[k + 1];
            if (t[k].strip_r) { while (nx->n && jj_is_space(nx->s[0])) { nx->s++; nx->n--; } }
            else if (block && t[k].s[t[k].n] != '+') {
                if (nx->n && nx->s[0] == '\n') { nx->s++; nx->n--; }
                else if (nx->n > 1 && nx->s[0] == '\r' && nx->s[1] == '\n') { nx->s += 2; nx->n -= 2; }
            }
        }
    }
    *out = t;
    *n_out = cnt;
    return 0;
}

/* ------------------------------------------------------------------ expression lexer */

static void jj_next(jj_parser *p) {
    const char *s = p->e;
    while (s < p->e_end && jj_is_space(*s)) s++;
    jj_etok t;
    memset(&t, 0, sizeof t);
    if (s >= p->e_end) { t.type = JE_EOF; p->cur = t; p->e = s; return; }
    char ch = *s;
    if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_') {
        const char *b = s;
        while (s < p->e_end && ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '_' || (*s >= '0' && *s <= '9'))) s++;
        t.type = JE_NAME; t.s = b; t.n = (size_t)(s - b);
    } else if (ch >= '0' && ch <= '9') {
        const char *b = s;
        int is_f = 0;
        while (s < p->e_end && ((*s >= '0' && *s <= '9') || *s == '_')) s++;
        if (s + 1 < p->e_end && *s == '.' && s[1] >= '0' && s[1] <= '9') {
            is_f = 1;
            s++;
            while (s < p->e_end && *s >= '0' && *s <= '9') s++;
        }
        if (s < p->e_end && (*s == 'e' || *s == 'E')) {
            const char *q = s + 1;
            if (q < p->e_end && (*q == '+' || *q == '-')) q++;
            if (q < p->e_end && *q >= '0' && *q <= '9') { is_f = 1; s = q; while (s < p->e_end && *s >= '0' && *s <= '9') s++; }
        }
        char tmp[64];
        size_t l = (size_t)(s - b) < 63 ? (size_t)(s - b) : 63, w = 0;
        for (size_t k = 0; k < l; k++) if (b[k] != '_') tmp[w++] = b[k];
        tmp[w] = 0;
        if (is_f) { t.type = JE_FLOAT; t.f = strtod(tmp, NULL); }
        else { t.type = JE_INT; t.i = strtoll(tmp, NULL, 10); }
    } else if (ch == '\'' || ch == '"') {
        /* Decode escapes into an arena string. */
        const char *b = ++s;
        vlm_buf out = {0};
        while (s < p->e_end && *s != ch) {
            if (*s == '\\' && s + 1 < p->e_end) {
                vlm_buf_add(&out, b, (size_t)(s - b));
                s++;
                char e = *s, r[4] = {0};
                switch (e) {
                case 'n': r[0] = '\n'; break;
                case 't': r[0] = '\t'; break;
                case 'r': r[0] = '\r'; break;
                case '0': r[0] = 0; break;
                case '\\': r[0] = '\\'; break;
                case '\'': r[0] = '\''; break;
                case '"': r[0] = '"'; break;
                default: r[0] = '\\'; r[1] = e; break;
                }
                vlm_buf_add(&out, r, e == '0' ? 1 : strlen(r) ? strlen(r) : 1);
                s++;
                b = s;
                continue;
            }
            s++;
        }
        vlm_buf_add(&out, b, (size_t)(s - b));
        if (s < p->e_end) s++;
        else jj_fail(p->c, "unterminated string literal");
        jv *v = jj_strn(p->c, out.p ? out.p : "", out.n);
        free(out.p);
        t.type = JE_STR; t.s = v->s; t.n = v->n;
    } else {
        static const char *const ops2[] = {"==", "!=", "<=", ">=", "//", "**", NULL};
        t.type = JE_OP;
        for (int k = 0; ops2[k]; k++)
            if (s + 1 < p->e_end && s[0] == ops2[k][0] && s[1] == ops2[k][1]) { t.op[0] = s[0]; t.op[1] = s[1]; s += 2; goto done; }
        t.op[0] = *s++;
    }
done:
    p->cur = t;
    p->e = s;
}

static int jj_is_op(jj_parser *p, const char *op) { return p->cur.type == JE_OP && !strcmp(p->cur.op, op); }
static int jj_is_name(jj_parser *p, const char *name) {
    return p->cur.type == JE_NAME && p->cur.n == strlen(name) && !memcmp(p->cur.s, name, p->cur.n);
}
static int jj_expect_op(jj_parser *p, const char *op) {
    if (!jj_is_op(p, op)) { jj_fail(p->c, "expected '%s' in expression", op); return 0; }
    jj_next(p);
    return 1;
}
static const char *jj_name_dup(jj_parser *p) {
    jv *v = jj_strn(p->c, p->cur.s, p->cur.n);
    return v->s ? v->s : "";
}

static jj_node *jj_expr(jj_parser *p);
static jj_node *jj_unary(jj_parser *p, int with_filter);

/* Call arguments after '(' (consumes ')'). Keyword args come last. */
static void jj_call_args(jj_parser *p, jj_node *call) {
    const char *kw[32];
    int n_kw = 0;
    while (!p->c->failed && !jj_is_op(p, ")")) {
        if (p->cur.type == JE_NAME) {
            /* name=value ? */
            const char *save_e = p->e;
            jj_etok save = p->cur;
            jj_next(p);
            if (jj_is_op(p, "=")) {
                if (n_kw < 32) kw[n_kw++] = jj_strn(p->c, save.s, save.n)->s;
                jj_next(p);
                jj_node_add(p, call, jj_expr(p));
                if (!jj_is_op(p, ",")) break;
                jj_next(p);
                continue;
            }
            p->e = save_e;
            p->cur = save;
        }
        if (n_kw) { jj_fail(p->c, "positional argument after keyword argument"); return; }
        jj_node_add(p, call, jj_expr(p));
        if (!jj_is_op(p, ",")) break;
        jj_next(p);
    }
    jj_expect_op(p, ")");
    if (n_kw) {
        call->kw = jj_alloc(p->c, (size_t)n_kw * sizeof *call->kw);
        if (call->kw) { memcpy(call->kw, kw, (size_t)n_kw * sizeof *kw); call->n_kw = n_kw; }
    }
}

static jj_node *jj_primary(jj_parser *p) {
    jj_node *n = NULL;
    jj_etok t = p->cur;
    if (t.type == JE_STR) {
        n = jj_node_new(p, JN_LIT);
        if (n) n->lit = jj_strn(p->c, t.s, t.n);
        jj_next(p);
        while (p->cur.type == JE_STR && n) { /* implicit concatenation */
            vlm_buf b = {0};
            vlm_buf_add(&b, n->lit->s, n->lit->n);
            vlm_buf_add(&b, p->cur.s, p->cur.n);
            n->lit = jj_strn(p->c, b.p, b.n);
            free(b.p);
            jj_next(p);
        }
    } else if (t.type == JE_INT) { n = jj_node_new(p, JN_LIT); if (n) n->lit = jj_int(p->c, t.i); jj_next(p); }
    else if (t.type == JE_FLOAT) { n = jj_node_new(p, JN_LIT); if (n) n->lit = jj_float(p->c, t.f); jj_next(p); }
    else if (t.type == JE_NAME) {
        if (jj_is_name(p, "true") || jj_is_name(p, "True")) { n = jj_node_new(p, JN_LIT); if (n) n->lit = &jj_true_v; }
        else if (jj_is_name(p, "false") || jj_is_name(p, "False")) { n = jj_node_new(p, JN_LIT); if (n) n->lit = &jj_false_v; }
        else if (jj_is_name(p, "none") || jj_is_name(p, "None")) { n = jj_node_new(p, JN_LIT); if (n) n->lit = &jj_none_v; }
        else { n = jj_node_new(p, JN_NAME); if (n) { n->s = jj_name_dup(p); n->n = t.n; } }
        jj_next(p);
    } else if (jj_is_op(p, "(")) {
        jj_next(p);
        if (jj_is_op(p, ")")) { jj_next(p); n = jj_node_new(p, JN_LISTLIT); return n; }
        jj_node *e = jj_expr(p);
        if (jj_is_op(p, ",")) { /* tuple */
            n = jj_node_new(p, JN_LISTLIT);
            jj_node_add(p, n, e);
            while (jj_is_op(p, ",")) {
                jj_next(p);
                if (jj_is_op(p, ")")) break;
                jj_node_add(p, n, jj_expr(p));
            }
        } else n = e;
        jj_expect_op(p, ")");
    } else if (jj_is_op(p, "[")) {
        jj_next(p);
        n = jj_node_new(p, JN_LISTLIT);
        while (!p->c->failed && !jj_is_op(p, "]")) {
            jj_node_add(p, n, jj_expr(p));
            if (!jj_is_op(p, ",")) break;
            jj_next(p);
        }
        jj_expect_op(p, "]");
    } else if (jj_is_op(p, "{")) {
        jj_next(p);
        n = jj_node_new(p, JN_DICTLIT);
        while (!p->c->failed && !jj_is_op(p, "}")) {
            jj_node_add(p, n, jj_expr(p));
            jj_expect_op(p, ":");
            jj_node_add(p, n, jj_expr(p));
            if (!jj_is_op(p, ",")) break;
            jj_next(p);
        }
        jj_expect_op(p, "}");
    } else {
        jj_fail(p->c, "unexpected token in expression near '%.20s'", p->e ? p->e : "");
        return NULL;
    }
    return n;
}

static jj_node *jj_postfix(jj_parser *p, jj_node *n) {
    while (!p->c->failed && n) {
        if (jj_is_op(p, ".")) {
            jj_next(p);
            if (p->cur.type != JE_NAME && p->cur.type != JE_INT) { jj_fail(p->c, "expected attribute name after '.'"); return NULL; }
            jj_node *a = jj_node_new(p, JN_ATTR);
            if (!a) return NULL;
            a->a = n;
            if (p->cur.type == JE_INT) { char tmp[32]; snprintf(tmp, sizeof tmp, "%lld", (long long)p->cur.i); a->s = jj_str(p->c, tmp)->s; }
            else a->s = jj_name_dup(p);
            jj_next(p);
            n = a;
        } else if (jj_is_op(p, "[")) {
            jj_next(p);
            jj_node *lo = NULL, *hi = NULL, *st = NULL;
            int is_slice = 0;
            if (!jj_is_op(p, ":")) lo = jj_expr(p);
            if (jj_is_op(p, ":")) {
                is_slice = 1;
                jj_next(p);
                if (!jj_is_op(p, "]") && !jj_is_op(p, ":")) hi = jj_expr(p);
                if (jj_is_op(p, ":")) { jj_next(p); if (!jj_is_op(p, "]")) st = jj_expr(p); }
            }
            jj_expect_op(p, "]");
            jj_node *x = jj_node_new(p, is_slice ? JN_SLICE : JN_INDEX);
            if (!x) return NULL;
            x->a = n; x->b = lo; x->c = hi; x->d = st;
            n = x;
        } else if (jj_is_op(p, "(")) {
            jj_next(p);
            jj_node *call = jj_node_new(p, JN_CALL);
            if (!call) return NULL;
            call->a = n;
            jj_call_args(p, call);
            n = call;
        } else break;
    }
    return n;
}

static jj_node *jj_filter_expr(jj_parser *p, jj_node *n) {
    while (!p->c->failed && n) {
        if (jj_is_op(p, "|")) {
            jj_next(p);
            if (p->cur.type != JE_NAME) { jj_fail(p->c, "expected filter name"); return NULL; }
            jj_node *f = jj_node_new(p, JN_FILTER);
            if (!f) return NULL;
            f->s = jj_name_dup(p);
            f->a = n;
            jj_next(p);
            if (jj_is_op(p, "(")) { jj_next(p); jj_call_args(p, f); }
            n = f;
        } else if (jj_is_name(p, "is")) {
            jj_next(p);
            jj_node *t = jj_node_new(p, JN_TEST);
            if (!t) return NULL;
            if (jj_is_name(p, "not")) { t->negate = 1; jj_next(p); }
            if (p->cur.type != JE_NAME) { jj_fail(p->c, "expected test name after 'is'"); return NULL; }
            t->s = jj_name_dup(p);
            t->a = n;
            jj_next(p);
            if (jj_is_op(p, "(")) { jj_next(p); jj_call_args(p, t); }
            else if (p->cur.type == JE_STR || p->cur.type == JE_INT || p->cur.type == JE_FLOAT) jj_node_add(p, t, jj_primary(p));
            n = t;
        } else break;
    }
    return n;
}

static jj_node *jj_unary(jj_parser *p, int with_filter) {
    jj_node *n;
    if (p->depth > 200) { jj_fail(p->c, "expression nested too deeply"); return NULL; }
    if (jj_is_op(p, "-") || jj_is_op(p, "+")) {
        char op = p->cur.op[0];
        jj_next(p);
        n = jj_node_new(p, JN_UNARY);
        if (!n) return NULL;
        n->op[0] = op;
        p->depth++;
        n->a = jj_unary(p, 0);
        p->depth--;
    } else {
        n = jj_postfix(p, jj_primary(p));
    }
    if (with_filter) n = jj_filter_expr(p, n);
    return n;
}

static jj_node *jj_binop(jj_parser *p, const char *op, jj_node *a, jj_node *b) {
    jj_node *n = jj_node_new(p, JN_BINOP);
    if (!n) return NULL;
    memcpy(n->op, op, strlen(op) < 2 ? strlen(op) + 1 : 2);
    n->a = a;
    n->b = b;
    return n;
}

static jj_node *jj_pow(jj_parser *p) {
    jj_node *n = jj_unary(p, 1);
    while (!p->c->failed && jj_is_op(p, "**")) { jj_next(p); n = jj_binop(p, "**", n, jj_unary(p, 1)); }
    return n;
}
static jj_node *jj_math2(jj_parser *p) {
    jj_node *n = jj_pow(p);
    while (!p->c->failed && (jj_is_op(p, "*") || jj_is_op(p, "/") || jj_is_op(p, "//") || jj_is_op(p, "%"))) {
        char op[3];
        memcpy(op, p->cur.op, 3);
        jj_next(p);
        n = jj_binop(p, op, n, jj_pow(p));
    }
    return n;
}
static jj_node *jj_concat(jj_parser *p) {
    jj_node *n = jj_math2(p);
    while (!p->c->failed && jj_is_op(p, "~")) { jj_next(p); n = jj_binop(p, "~", n, jj_math2(p)); }
    return n;
}
static jj_node *jj_math1(jj_parser *p) {
    jj_node *n = jj_concat(p);
    while (!p->c->failed && (jj_is_op(p, "+") || jj_is_op(p, "-"))) {
        char op[3];
        memcpy(op, p->cur.op, 3);
        jj_next(p);
        n = jj_binop(p, op, n, jj_concat(p));
    }
    return n;
}
static jj_node *jj_compare(jj_parser *p) {
    jj_node *n = jj_math1(p);
    for (;;) {
        if (p->c->failed) return n;
        if (jj_is_op(p, "==") || jj_is_op(p, "!=") || jj_is_op(p, "<") || jj_is_op(p, ">") || jj_is_op(p, "<=") || jj_is_op(p, ">=")) {
            char op[3];
            memcpy(op, p->cur.op, 3);
            jj_next(p);
            n = jj_binop(p, op, n, jj_math1(p));
        } else if (jj_is_name(p, "in")) {
            jj_next(p);
            n = jj_binop(p, "in", n, jj_math1(p));
        } else if (jj_is_name(p, "not")) {
            /* "not in" */
            const char *save_e = p->e;
            jj_etok save = p->cur;
            jj_next(p);
            if (!jj_is_name(p, "in")) { p->e = save_e; p->cur = save; return n; }
            jj_next(p);
            n = jj_binop(p, "in", n, jj_math1(p));
            if (n) n->negate = 1;
        } else return n;
    }
}
static jj_node *jj_not(jj_parser *p) {
    if (p->depth > 200) { jj_fail(p->c, "expression nested too deeply"); return NULL; }
    if (jj_is_name(p, "not")) {
        jj_next(p);
        jj_node *n = jj_node_new(p, JN_NOT);
        p->depth++;
        if (n) n->a = jj_not(p);
        p->depth--;
        return n;
    }
    return jj_compare(p);
}
static jj_node *jj_and(jj_parser *p) {
    jj_node *n = jj_not(p);
    while (!p->c->failed && jj_is_name(p, "and")) {
        jj_next(p);
        jj_node *x = jj_node_new(p, JN_AND);
        if (!x) return NULL;
        x->a = n; x->b = jj_not(p);
        n = x;
    }
    return n;
}
static jj_node *jj_or(jj_parser *p) {
    jj_node *n = jj_and(p);
    while (!p->c->failed && jj_is_name(p, "or")) {
        jj_next(p);
        jj_node *x = jj_node_new(p, JN_OR);
        if (!x) return NULL;
        x->a = n; x->b = jj_and(p);
        n = x;
    }
    return n;
}
static jj_node *jj_expr(jj_parser *p) {
    if (++p->depth > 200) { jj_fail(p->c, "expression nested too deeply"); p->depth--; return NULL; }
    jj_node *n = jj_or(p);
    while (!p->c->failed && jj_is_name(p, "if")) {
        jj_next(p);
        jj_node *x = jj_node_new(p, JN_COND);
        if (!x) return NULL;
        x->a = n;
        x->b = jj_or(p);
        if (jj_is_name(p, "else")) { jj_next(p); x->c = jj_expr(p); }
        n = x;
    }
    p->depth--;
    return n;
}

/* ------------------------------------------------------------------ statement parser */

static void jj_set_expr_src(jj_parser *p, const char *s, size_t n) {
    p->e = s;
    p->e_end = s + n;
    jj_next(p);
}

/* The first word of a block tag. */
static int jj_block_is(const jj_tok *t, const char *kw) {
    const char *s = t->s, *e = t->s + t->n;
    while (s < e && jj_is_space(*s)) s++;
    size_t l = strlen(kw);
    if ((size_t)(e - s) < l || memcmp(s, kw, l)) return 0;
    return (size_t)(e - s) == l || !((s[l] >= 'a' && s[l] <= 'z') || s[l] == '_');
}

static jj_node *jj_parse_body(jj_parser *p, const char *const *ends, int *which);

static int jj_expect_end(jj_parser *p) {
    if (p->cur.type != JE_EOF) { jj_fail(p->c, "unexpected '%.20s' at the end of a tag", p->cur.s ? p->cur.s : p->cur.op); return 0; }
    return 1;
}

static jj_node *jj_parse_stmt(jj_parser *p, const jj_tok *t) {
    jj_set_expr_src(p, t->s, t->n);
    if (p->cur.type != JE_NAME) { jj_fail(p->c, "expected a statement in {%% %%}"); return NULL; }
    if (jj_is_name(p, "if")) {
        jj_next(p);
        jj_node *n = jj_node_new(p, JN_IF);
        if (!n) return NULL;
        n->a = jj_expr(p);
        jj_expect_end(p);
        static const char *const ends[] = {"elif", "else", "endif", NULL};
        int which = -1;
        n->b = jj_parse_body(p, ends, &which);
        jj_node *cur = n;
        while (!p->c->failed && which == 0) { /* elif */
            const jj_tok *et = &p->toks[p->pos - 1];
            jj_set_expr_src(p, et->s, et->n);
            jj_next(p); /* skip 'elif' */
            jj_node *x = jj_node_new(p, JN_IF);
            if (!x) return NULL;
            x->a = jj_expr(p);
            jj_expect_end(p);
            x->b = jj_parse_body(p, ends, &which);
            jj_node *body = jj_node_new(p, JN_BODY);
            jj_node_add(p, body, x);
            cur->c = body;
            cur = x;
        }
        if (!p->c->failed && which == 1) {
            static const char *const ends2[] = {"endif", NULL};
            cur->c = jj_parse_body(p, ends2, &which);
        }
        return n;
    }
    if (jj_is_name(p, "for")) {
        jj_next(p);
        jj_node *n = jj_node_new(p, JN_FOR);
        if (!n) return NULL;
        while (p->cur.type == JE_NAME && n->n_names < 2) {
            n->names[n->n_names++] = jj_name_dup(p);
            jj_next(p);
            if (!jj_is_op(p, ",")) break;
            jj_next(p);
        }
        if (!jj_is_name(p, "in")) { jj_fail(p->c, "expected 'in' in for"); return NULL; }
        jj_next(p);
        n->a = jj_or(p); /* no ternary: "if" is the loop filter */
        if (jj_is_name(p, "if")) { jj_next(p); n->d = jj_expr(p); }
        if (jj_is_name(p, "recursive")) jj_next(p);
        jj_expect_end(p);
        static const char *const ends[] = {"else", "endfor", NULL};
        int which = -1;
        n->b = jj_parse_body(p, ends, &which);
        if (!p->c->failed && which == 0) {
            static const char *const ends2[] = {"endfor", NULL};
            n->c = jj_parse_body(p, ends2, &which);
        }
        return n;
    }
    if (jj_is_name(p, "set")) {
        jj_next(p);
        if (p->cur.type != JE_NAME) { jj_fail(p->c, "expected a name after set"); return NULL; }
        jj_node *n = jj_node_new(p, JN_SET);
        if (!n) return NULL;
        n->names[0] = jj_name_dup(p);
        n->n_names = 1;
        jj_next(p);
        if (jj_is_op(p, ".")) {
            jj_next(p);
            if (p->cur.type != JE_NAME) { jj_fail(p->c, "expected an attribute name in set"); return NULL; }
            n->names[1] = jj_name_dup(p);
            n->n_names = 2;
            jj_next(p);
        }
        if (jj_is_op(p, "=")) {
            jj_next(p);
            n->a = jj_expr(p);
            if (jj_is_op(p, ",")) { /* tuple value */
                jj_node *l = jj_node_new(p, JN_LISTLIT);
                jj_node_add(p, l, n->a);
                while (jj_is_op(p, ",")) { jj_next(p); jj_node_add(p, l, jj_expr(p)); }
                n->a = l;
            }
            jj_expect_end(p);
            return n;
        }
        /* block set */
        jj_expect_end(p);
        n->kind = JN_SETBLOCK;
        static const char *const ends[] = {"endset", NULL};
        int which;
        n->b = jj_parse_body(p, ends, &which);
        return n;
    }
    if (jj_is_name(p, "macro")) {
        jj_next(p);
        jj_node *n = jj_node_new(p, JN_MACRO);
        if (!n || p->cur.type != JE_NAME) { jj_fail(p->c, "expected a macro name"); return NULL; }
        n->names[0] = jj_name_dup(p);
        jj_next(p);
        jj_expect_op(p, "(");
        const char *params[32];
        jj_node *defs[32];
        int np = 0;
        while (!p->c->failed && p->cur.type == JE_NAME && np < 32) {
            params[np] = jj_name_dup(p);
            defs[np] = NULL;
            jj_next(p);
            if (jj_is_op(p, "=")) { jj_next(p); defs[np] = jj_expr(p); }
            np++;
            if (!jj_is_op(p, ",")) break;
            jj_next(p);
        }
        jj_expect_op(p, ")");
        jj_expect_end(p);
        n->params = jj_alloc(p->c, (size_t)(np + 1) * sizeof *n->params);
        n->defaults = jj_alloc(p->c, (size_t)(np + 1) * sizeof *n->defaults);
        if (!n->params || !n->defaults) return NULL;
        memcpy(n->params, params, (size_t)np * sizeof *params);
        memcpy(n->defaults, defs, (size_t)np * sizeof *defs);
        n->n_params = np;
        static const char *const ends[] = {"endmacro", NULL};
        int which;
        n->b = jj_parse_body(p, ends, &which);
        return n;
    }
    if (jj_is_name(p, "break")) return jj_node_new(p, JN_BREAK);
    if (jj_is_name(p, "continue")) return jj_node_new(p, JN_CONTINUE);
    if (jj_is_name(p, "generation")) { /* HF AssistantTracker: just the body */
        static const char *const ends[] = {"endgeneration", NULL};
        int which;
        return jj_parse_body(p, ends, &which);
    }
    jj_fail(p->c, "unsupported statement '%.*s'", (int)p->cur.n, p->cur.s);
    return NULL;
}

/* Parses until one of ends (returns its index in *which) or the end of the template. */
static jj_node *jj_parse_body(jj_parser *p, const char *const *ends, int *which) {
    jj_node *body = jj_node_new(p, JN_BODY);
    *which = -1;
    if (++p->block_depth > 100) { jj_fail(p->c, "blocks nested too deeply"); p->block_depth--; return body; }
    while (!p->c->failed && p->pos < p->n_toks) {
        const jj_tok *t = &p->toks[p->pos++];
        if (t->type == JT_TEXT) {
            if (!t->n) continue;
            jj_node *n = jj_node_new(p, JN_TEXT);
            if (n) { n->s = t->s; n->n = t->n; }
            jj_node_add(p, body, n);
        } else if (t->type == JT_VAR) {
            jj_set_expr_src(p, t->s, t->n);
            jj_node *n = jj_node_new(p, JN_OUT);
            if (n) n->a = jj_expr(p);
            jj_expect_end(p);
            jj_node_add(p, body, n);
        } else if (t->type == JT_BLOCK) {
            for (int k = 0; ends && ends[k]; k++)
                if (jj_block_is(t, ends[k])) { *which = k; p->block_depth--; return body; }
            jj_node_add(p, body, jj_parse_stmt(p, t));
        }
    }
    if (ends && !p->c->failed) {
        int last = 0;
        while (ends[last + 1]) last++;
        jj_fail(p->c, "missing {%% %s %%}", ends[last]);
    }
    p->block_depth--;
    return body;
}

/* ------------------------------------------------------------------ evaluation */

static jv *jj_lookup(jj_ctx *c, const char *name) {
    for (int f = c->n_frames - 1; f >= 0; f--) {
        jj_frame *fr = &c->frames[f];
        for (int i = fr->n - 1; i >= 0; i--)
            if (!strcmp(fr->names[i], name)) return fr->vals[i];
        if (fr->barrier) f = 1; /* jump to the globals (frame 0) */
    }
    return NULL;
}

static void jj_assign(jj_ctx *c, const char *name, jv *v) {
    jj_frame *fr = &c->frames[c->n_frames - 1];
    for (int i = 0; i < fr->n; i++)
        if (!strcmp(fr->names[i], name)) { fr->vals[i] = v; return; }
    if (fr->n == fr->cap) {
        int cap = fr->cap ? fr->cap * 2 : 16;
        const char **names = jj_alloc(c, (size_t)cap * sizeof *names);
        jv **vals = jj_alloc(c, (size_t)cap * sizeof *vals);
        if (!names || !vals) return;
        if (fr->n) { memcpy(names, fr->names, (size_t)fr->n * sizeof *names); memcpy(vals, fr->vals, (size_t)fr->n * sizeof *vals); }
        fr->names = names;
        fr->vals = vals;
        fr->cap = cap;
    }
    fr->names[fr->n] = name;
    fr->vals[fr->n] = v;
    fr->n++;
}

static int jj_push_frame(jj_ctx *c, int barrier) {
    if (c->n_frames >= 64) { jj_fail(c, "template nesting too deep"); return -1; }
    memset(&c->frames[c->n_frames], 0, sizeof c->frames[0]);
    c->frames[c->n_frames].barrier = barrier;
    c->n_frames++;
    return 0;
}

static jv *jj_eval(jj_ctx *c, jj_node *n);
static void jj_exec(jj_ctx *c, jj_node *n, vlm_buf *out);

/* Code-point offsets of a string (for Python indexing). */
static int jj_cp_count(const jv *s) {
    int k = 0;
    for (size_t i = 0; i < s->n; i++) if (((unsigned char)s->s[i] & 0xC0) != 0x80) k++;
    return k;
}
static size_t jj_cp_offset(const jv *s, int cp) {
    int k = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (((unsigned char)s->s[i] & 0xC0) != 0x80) { if (k == cp) return i; k++; }
    }
    return s->n;
}

static jv *jj_getattr(jj_ctx *c, jv *o, const char *name) {
    if (o->t == JV_DICT) {
        jv *v = jj_dict_get(o, name);
        if (v) return v;
        if (o->is_ns) return &jj_undef_v;
    }
    if (o->t == JV_STR || o->t == JV_DICT || o->t == JV_LIST) {
        static const char *const str_m[] = {"startswith", "endswith", "strip", "lstrip", "rstrip", "split", "replace",
                                            "upper", "lower", "title", "capitalize", "find", "count", "join", "rsplit", NULL};
        static const char *const dict_m[] = {"get", "items", "keys", "values", NULL};
        const char *const *m = o->t == JV_STR ? str_m : o->t == JV_DICT ? dict_m : NULL;
        for (int k = 0; m && m[k]; k++)
            if (!strcmp(m[k], name)) {
                jv *f = jj_new(c, JV_METHOD);
                f->s = m[k];
                f->self = o;
                return f;
            }
    }
    return &jj_undef_v;
}

static jv *jj_index(jj_ctx *c, jv *o, jv *k) {
    if (o->t == JV_DICT) {
        if (k->t == JV_STR) { jv *v = jj_dict_get(o, k->s); return v ? v : &jj_undef_v; }
        jv *ks = jj_stringify(c, k);
        jv *v = jj_dict_get(o, ks->s ? ks->s : "");
        return v ? v : &jj_undef_v;
    }
    if ((o->t == JV_LIST || o->t == JV_STR) && (k->t == JV_INT || k->t == JV_BOOL)) {
        int64_t len = o->t == JV_LIST ? o->len : jj_cp_count(o), i = k->i;
        if (i < 0) i += len;
        if (i < 0 || i >= len) return &jj_undef_v;
        if (o->t == JV_LIST) return o->items[i];
        size_t a = jj_cp_offset(o, (int)i), b = jj_cp_offset(o, (int)i + 1);
        return jj_strn(c, o->s + a, b - a);
    }
    if (k->t == JV_STR) return jj_getattr(c, o, k->s);
    return &jj_undef_v;
}

static jv *jj_slice(jj_ctx *c, jv *o, jv *lo, jv *hi, jv *st) {
    if (o->t != JV_LIST && o->t != JV_STR) return jj_fail(c, "slicing a value that is not a list or string");
    int64_t len = o->t == JV_LIST ? o->len : jj_cp_count(o);
    int64_t step = st && st->t == JV_INT ? st->i : 1;
    if (step == 0) return jj_fail(c, "slice step cannot be zero");
    int64_t a, b;
    if (step > 0) {
        a = lo && lo->t == JV_INT ? lo->i : 0;
        b = hi && hi->t == JV_INT ? hi->i : len;
        if (a < 0) a += len;
        if (a < 0) a = 0;
        if (a > len) a = len;
        if (b < 0) b += len;
        if (b < 0) b = 0;
        if (b > len) b = len;
    } else {
        a = lo && lo->t == JV_INT ? lo->i : len - 1;
        b = hi && hi->t == JV_INT ? hi->i : -len - 1;
        if (a < 0) a += len;
        if (a < -1) a = -1;
        if (a >= len) a = len - 1;
        if (b < 0) b += len;
        if (b < -1) b = -1;
        if (b >= len) b = len - 1;
    }
    if (o->t == JV_LIST) {
        jv *r = jj_new(c, JV_LIST);
        for (int64_t i = a; step > 0 ? i < b : i > b; i += step) jj_list_push(c, r, o->items[i]);
        return r;
    }
    vlm_buf buf = {0};
    for (int64_t i = a; step > 0 ? i < b : i > b; i += step) {
        size_t x = jj_cp_offset(o, (int)i), y = jj_cp_offset(o, (int)i + 1);
        vlm_buf_add(&buf, o->s + x, y - x);
    }
    jv *r = jj_strn(c, buf.p ? buf.p : "", buf.n);
    free(buf.p);
    return r;
}

static int jj_is_num(const jv *v) { return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL; }
static double jj_num(const jv *v) { return v->t == JV_FLOAT ? v->f : (double)v->i; }

static int jj_contains(jj_ctx *c, jv *hay, jv *needle) {
    if (hay->t == JV_STR) {
        jv *s = jj_stringify(c, needle);
        if (!s->s) return 0;
        if (!s->n) return 1;
        for (size_t i = 0; i + s->n <= hay->n; i++) if (!memcmp(hay->s + i, s->s, s->n)) return 1;
        return 0;
    }
    if (hay->t == JV_LIST) { for (int i = 0; i < hay->len; i++) if (jj_equal(hay->items[i], needle)) return 1; return 0; }
    if (hay->t == JV_DICT) return needle->t == JV_STR && jj_dict_get(hay, needle->s) != NULL;
    return 0;
}

static int jj_compare_lt(jj_ctx *c, jv *a, jv *b) {
    if (jj_is_num(a) && jj_is_num(b)) return jj_num(a) < jj_num(b);
    if (a->t == JV_STR && b->t == JV_STR) {
        size_t m = a->n < b->n ? a->n : b->n;
        int r = memcmp(a->s, b->s, m);
        return r < 0 || (r == 0 && a->n < b->n);
    }
    jj_fail(c, "cannot compare these values with '<'");
    return 0;
}

static jv *jj_binary(jj_ctx *c, jj_node *n) {
    const char *op = n->op;
    if (!strcmp(op, "in")) {
        jv *a = jj_eval(c, n->a), *b = jj_eval(c, n->b);
        return jj_bool(jj_contains(c, b, a) != n->negate);
    }
    jv *a = jj_eval(c, n->a), *b = jj_eval(c, n->b);
    if (c->failed) return &jj_undef_v;
    if (!strcmp(op, "==")) return jj_bool(jj_equal(a, b));
    if (!strcmp(op, "!=")) return jj_bool(!jj_equal(a, b));
    if (!strcmp(op, "<")) return jj_bool(jj_compare_lt(c, a, b));
    if (!strcmp(op, ">")) return jj_bool(jj_compare_lt(c, b, a));
    if (!strcmp(op, "<=")) return jj_bool(!jj_compare_lt(c, b, a));
    if (!strcmp(op, ">=")) return jj_bool(!jj_compare_lt(c, a, b));
    if (!strcmp(op, "~")) {
        jv *x = jj_stringify(c, a), *y = jj_stringify(c, b);
        vlm_buf buf = {0};
        vlm_buf_add(&buf, x->s ? x->s : "", x->n);
        vlm_buf_add(&buf, y->s ? y->s : "", y->n);
        jv *r = jj_strn(c, buf.p ? buf.p : "", buf.n);
        free(buf.p);
        return r;
    }
    if (!strcmp(op, "+")) {
        if (a->t == JV_STR && b->t == JV_STR) {
            vlm_buf buf = {0};
            vlm_buf_add(&buf, a->s, a->n);
            vlm_buf_add(&buf, b->s, b->n);
            jv *r = jj_strn(c, buf.p ? buf.p : "", buf.n);
            free(buf.p);
            return r;
        }
        if (a->t == JV_LIST && b->t == JV_LIST) {
            jv *r = jj_new(c, JV_LIST);
            for (int i = 0; i < a->len; i++) jj_list_push(c, r, a->items[i]);
            for (int i = 0; i < b->len; i++) jj_list_push(c, r, b->items[i]);
            return r;
        }
    }
    if (!strcmp(op, "*") && a->t == JV_STR && b->t == JV_INT) {
        vlm_buf buf = {0};
        for (int64_t i = 0; i < b->i; i++) vlm_buf_add(&buf, a->s, a->n);
        jv *r = jj_strn(c, buf.p ? buf.p : "", buf.n);
        free(buf.p);
        return r;
    }
    if (!jj_is_num(a) || !jj_is_num(b))
        return jj_fail(c, "unsupported operand types for '%s'", op);
    int ints = a->t != JV_FLOAT && b->t != JV_FLOAT;
    double x = jj_num(a), y = jj_num(b);
    if (!strcmp(op, "+")) return ints ? jj_int(c, a->i + b->i) : jj_float(c, x + y);
    if (!strcmp(op, "-")) return ints ? jj_int(c, a->i - b->i) : jj_float(c, x - y);
    if (!strcmp(op, "*")) return ints ? jj_int(c, a->i * b->i) : jj_float(c, x * y);
    if (!strcmp(op, "/")) { if (y == 0) return jj_fail(c, "division by zero"); return jj_float(c, x / y); }
    if (!strcmp(op, "//")) {
        if (y == 0) return jj_fail(c, "division by zero");
        if (ints) { int64_t q = a->i / b->i; if ((a->i % b->i) && ((a->i < 0) != (b->i < 0))) q--; return jj_int(c, q); }
        return jj_float(c, floor(x / y));
    }
    if (!strcmp(op, "%")) {
        if (y == 0) return jj_fail(c, "modulo by zero");
        if (ints) { int64_t r = a->i % b->i; if (r && ((r < 0) != (b->i < 0))) r += b->i; return jj_int(c, r); }
        double r = fmod(x, y);
        if (r && ((r < 0) != (y < 0))) r += y;
        return jj_float(c, r);
    }
    if (!strcmp(op, "**")) return ints && b->i >= 0 ? jj_int(c, (int64_t)pow(x, y)) : jj_float(c, pow(x, y));
    return jj_fail(c, "unknown operator '%s'", op);
}

/* Arguments of a call: positional values and keyword values. */
typedef struct jj_args {
    jv *pos[16]; int n_pos;
    const char *kw[16]; jv *kwv[16]; int n_kw;
} jj_args;

static void jj_eval_args(jj_ctx *c, jj_node *n, jj_args *a) {
    memset(a, 0, sizeof *a);
    int n_pos = n->n_list - n->n_kw;
    for (int i = 0; i < n->n_list && !c->failed; i++) {
        jv *v = jj_eval(c, n->list[i]);
        if (i < n_pos) { if (a->n_pos < 16) a->pos[a->n_pos++] = v; }
        else if (a->n_kw < 16) { a->kw[a->n_kw] = n->kw[i - n_pos]; a->kwv[a->n_kw++] = v; }
    }
}

static jv *jj_arg(const jj_args *a, int i, const char *name) {
    if (i >= 0 && i < a->n_pos) return a->pos[i];
    for (int k = 0; name && k < a->n_kw; k++) if (!strcmp(a->kw[k], name)) return a->kwv[k];
    return NULL;
}

static jv *jj_call_macro(jj_ctx *c, jv *m, const jj_args *a) {
    jj_node *mn = m->macro;
    if (++c->depth > 200) return jj_fail(c, "macro recursion too deep");
    /* Evaluate defaults in the caller's scope before entering the macro frame. */
    jv *vals[32];
    for (int i = 0; i < mn->n_params; i++) {
        jv *v = jj_arg(a, i, mn->params[i]);
        if (!v) v = mn->defaults[i] ? jj_eval(c, mn->defaults[i]) : &jj_undef_v;
        vals[i] = v;
    }
    if (jj_push_frame(c, 1)) return &jj_undef_v;
    for (int i = 0; i < mn->n_params; i++) jj_assign(c, mn->params[i], vals[i]);
    vlm_buf out = {0};
    jj_exec(c, mn->b, &out);
    c->n_frames--;
    c->depth--;
    jv *r = jj_strn(c, out.p ? out.p : "", out.n);
    free(out.p);
    return r;
}

static int jj_is_strip_char(const jv *chars, const char *p, size_t *len) {
    /* p points at a code point; returns 1 if it is in chars (or whitespace when chars NULL). */
    uint32_t cp;
    int l = vlm_utf8_decode((const unsigned char *)p, 4, &cp);
    *len = (size_t)l;
    if (!chars) return cp < 0x110000 && (vlm_uni_props(cp) & VLM_UNI_WS);
    for (size_t i = 0; i < chars->n;) {
        uint32_t d;
        int dl = vlm_utf8_decode((const unsigned char *)chars->s + i, chars->n - i, &d);
        if (d == cp) return 1;
        i += (size_t)dl;
    }
    return 0;
}

static jv *jj_strip(jj_ctx *c, jv *s, jv *chars, int left, int right) {
    if (chars && chars->t != JV_STR) chars = NULL;
    size_t a = 0, b = s->n, l;
    if (left) while (a < b && jj_is_strip_char(chars, s->s + a, &l)) a += l;
    if (right) {
        while (b > a) {
            size_t k = b - 1;
            while (k > a && ((unsigned char)s->s[k] & 0xC0) == 0x80) k--;
            if (!jj_is_strip_char(chars, s->s + k, &l)) break;
            b = k;
        }
    }
    return jj_strn(c, s->s + a, b - a);
}

static jv *jj_split(jj_ctx *c, jv *s, jv *sep, jv *maxsplit) {
    jv *r = jj_new(c, JV_LIST);
    int64_t maxs = maxsplit && maxsplit->t == JV_INT ? maxsplit->i : -1;
    if (!sep || sep->t != JV_STR) {
        size_t i = 0;
        while (i < s->n) {
            while (i < s->n && jj_is_space(s->s[i])) i++;
            if (i >= s->n) break;
            size_t j = i;
            if (maxs == 0) { j = s->n; while (j > i && jj_is_space(s->s[j - 1])) j--; jj_list_push(c, r, jj_strn(c, s->s + i, j - i)); break; }
            while (j < s->n && !jj_is_space(s->s[j])) j++;
            jj_list_push(c, r, jj_strn(c, s->s + i, j - i));
            if (maxs > 0) maxs--;
            i = j;
        }
        return r;
    }
    if (!sep->n) return jj_fail(c, "empty separator");
    size_t start = 0;
    for (size_t i = 0; i + sep->n <= s->n;) {
        if (maxs != 0 && !memcmp(s->s + i, sep->s, sep->n)) {
            jj_list_push(c, r, jj_strn(c, s->s + start, i - start));
            i += sep->n;
            start = i;
            if (maxs > 0) maxs--;
        } else i++;
    }
    jj_list_push(c, r, jj_strn(c, s->s + start, s->n - start));
    return r;
}

static jv *jj_case(jj_ctx *c, jv *s, int mode) { /* 0 upper, 1 lower, 2 capitalize, 3 title */
    jv *r = jj_strn(c, s->s, s->n);
    char *p = (char *)r->s;
    int start = 1;
    for (size_t i = 0; p && i < r->n; i++) {
        char ch = p[i];
        int up = mode == 0 || ((mode == 2 || mode == 3) && start);
        if (mode == 2 && i > 0) up = 0;
        if (up) { if (ch >= 'a' && ch <= 'z') p[i] = (char)(ch - 32); }
        else if (ch >= 'A' && ch <= 'Z') p[i] = (char)(ch + 32);
        start = mode == 3 ? !((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9')) : 0;
    }
    return r;
}

static jv *jj_items(jj_ctx *c, jv *d) {
    jv *r = jj_new(c, JV_LIST);
    for (int i = 0; i < d->len; i++) {
        jv *pair = jj_new(c, JV_LIST);
        jj_list_push(c, pair, jj_str(c, d->keys[i]));
        jj_list_push(c, pair, d->items[i]);
        jj_list_push(c, r, pair);
    }
    return r;
}

static jv *jj_call_method(jj_ctx *c, jv *m, const jj_args *a) {
    jv *o = m->self;
    const char *name = m->s;
    jv *a0 = jj_arg(a, 0, NULL), *a1 = jj_arg(a, 1, NULL);
    if (o->t == JV_DICT) {
        if (!strcmp(name, "get")) {
            jv *v = a0 && a0->t == JV_STR ? jj_dict_get(o, a0->s) : NULL;
            return v ? v : a1 ? a1 : &jj_none_v;
        }
        if (!strcmp(name, "items")) return jj_items(c, o);
        jv *r = jj_new(c, JV_LIST);
        for (int i = 0; i < o->len; i++) jj_list_push(c, r, !strcmp(name, "keys") ? jj_str(c, o->keys[i]) : o->items[i]);
        return r;
    }
    if (o->t != JV_STR) return jj_fail(c, "method %s on a non-string", name);
    if (!strcmp(name, "startswith") || !strcmp(name, "endswith")) {
        int ends = name[0] == 'e';
        if (!a0) return jj_fail(c, "%s needs an argument", name);
        int n_opts = a0->t == JV_LIST ? a0->len : 1;
        for (int k = 0; k < n_opts; k++) {
            jv *x = a0->t == JV_LIST ? a0->items[k] : a0;
            if (x->t != JV_STR) continue;
            if (x->n <= o->n && !memcmp(ends ? o->s + o->n - x->n : o->s, x->s, x->n)) return &jj_true_v;
        }
        return &jj_false_v;
    }
    if (!strcmp(name, "strip")) return jj_strip(c, o, a0, 1, 1);
    if (!strcmp(name, "lstrip")) return jj_strip(c, o, a0, 1, 0);
    if (!strcmp(name, "rstrip")) return jj_strip(c, o, a0, 0, 1);
    if (!strcmp(name, "split")) return jj_split(c, o, jj_arg(a, 0, "sep"), jj_arg(a, 1, "maxsplit"));
    if (!strcmp(name, "upper")) return jj_case(c, o, 0);
    if (!strcmp(name, "lower")) return jj_case(c, o, 1);
    if (!strcmp(name, "capitalize")) return jj_case(c, o, 2);
    if (!strcmp(name, "title")) return jj_case(c, o, 3);
    if (!strcmp(name, "replace")) {
        if (!a0 || !a1 || a0->t != JV_STR || a1->t != JV_STR || !a0->n) return jj_fail(c, "bad replace() arguments");
        vlm_buf b = {0};
        size_t start = 0;
        for (size_t i = 0; i + a0->n <= o->n;) {
            if (!memcmp(o->s + i, a0->s, a0->n)) { vlm_buf_add(&b, o->s + start, i - start); vlm_buf_add(&b, a1->s, a1->n); i += a0->n; start = i; }
            else i++;
        }
        vlm_buf_add(&b, o->s + start, o->n - start);
        jv *r = jj_strn(c, b.p ? b.p : "", b.n);
        free(b.p);
        return r;
    }
    if (!strcmp(name, "find") || !strcmp(name, "count")) {
        if (!a0 || a0->t != JV_STR) return jj_fail(c, "bad %s() argument", name);
        int64_t cnt = 0;
        for (size_t i = 0; i + a0->n <= o->n;) {
            if (!memcmp(o->s + i, a0->s, a0->n)) {
                if (name[0] == 'f') { jv tmp = *o; tmp.n = i; return jj_int(c, jj_cp_count(&tmp)); }
                cnt++;
                i += a0->n ? a0->n : 1;
            } else i++;
        }
        return jj_int(c, name[0] == 'f' ? -1 : cnt);
    }
    if (!strcmp(name, "join")) {
        if (!a0 || a0->t != JV_LIST) return jj_fail(c, "join() needs a list");
        vlm_buf b = {0};
        for (int i = 0; i < a0->len; i++) {
            if (i) vlm_buf_add(&b, o->s, o->n);
            jv *x = jj_stringify(c, a0->items[i]);
            vlm_buf_add(&b, x->s ? x->s : "", x->n);
        }
        jv *r = jj_strn(c, b.p ? b.p : "", b.n);
        free(b.p);
        return r;
    }
    return jj_fail(c, "unsupported method %s", name);
}

static jv *jj_apply_filter(jj_ctx *c, const char *name, jv *v, const jj_args *a);

static jv *jj_call_func(jj_ctx *c, jv *f, const jj_args *a) {
    const char *name = f->s;
    if (!strcmp(name, "namespace")) {
        jv *d = jj_new(c, JV_DICT);
        d->is_ns = 1;
        for (int k = 0; k < a->n_kw; k++) jj_dict_set(c, d, a->kw[k], a->kwv[k]);
        if (a->n_pos && a->pos[0]->t == JV_DICT)
            for (int k = 0; k < a->pos[0]->len; k++) jj_dict_set(c, d, a->pos[0]->keys[k], a->pos[0]->items[k]);
        return d;
    }
    if (!strcmp(name, "dict")) {
        jv *d = jj_new(c, JV_DICT);
        for (int k = 0; k < a->n_kw; k++) jj_dict_set(c, d, a->kw[k], a->kwv[k]);
        return d;
    }
    if (!strcmp(name, "range")) {
        int64_t lo = 0, hi, st = 1;
        for (int k = 0; k < a->n_pos; k++) if (a->pos[k]->t != JV_INT) return jj_fail(c, "range() needs integers");
        if (a->n_pos == 1) hi = a->pos[0]->i;
        else if (a->n_pos >= 2) { lo = a->pos[0]->i; hi = a->pos[1]->i; if (a->n_pos > 2) st = a->pos[2]->i; }
        else return jj_fail(c, "range() needs arguments");
        if (st == 0) return jj_fail(c, "range() step is zero");
        jv *r = jj_new(c, JV_LIST);
        for (int64_t i = lo; st > 0 ? i < hi : i > hi; i += st) {
            if (r->len > 1000000) return jj_fail(c, "range too large");
            jj_list_push(c, r, jj_int(c, i));
        }
        return r;
    }
    if (!strcmp(name, "raise_exception")) {
        jv *m = a->n_pos ? jj_stringify(c, a->pos[0]) : jj_str(c, "error");
        return jj_fail(c, "raise_exception: %s", m->s ? m->s : "");
    }
    if (!strcmp(name, "strftime_now")) return jj_str(c, "");
    return jj_fail(c, "unknown function %s", name);
}


/* ASCII case-insensitive order (the sort filter's default; strcasecmp is POSIX, not C11). */
static int jj_casecmp(const char *a, const char *b) {
    for (;; a++, b++) {
        int x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z') x += 32;
        if (y >= 'A' && y <= 'Z') y += 32;
        if (x != y || !x) return x - y;
    }
}

static jv *jj_sort_items(jj_ctx *c, jv *d) {
    jv *r = jj_items(c, d);
    /* insertion sort by lower-cased key (dictsort is case-insensitive) */
    for (int i = 1; i < r->len; i++) {
        jv *x = r->items[i];
        int j = i;
        while (j > 0) {
            const char *p = r->items[j - 1]->items[0]->s, *q = x->items[0]->s;
            int cmp = jj_casecmp(p, q);
            if (cmp <= 0) break;
            r->items[j] = r->items[j - 1];
            j--;
        }
        r->items[j] = x;
    }
    return r;
}

static jv *jj_apply_filter(jj_ctx *c, const char *name, jv *v, const jj_args *a) {
    jv *a0 = jj_arg(a, 0, NULL);
    if (!strcmp(name, "length") || !strcmp(name, "count")) {
        if (v->t == JV_STR) return jj_int(c, jj_cp_count(v));
        if (v->t == JV_LIST || v->t == JV_DICT) return jj_int(c, v->len);
        if (v->t == JV_UNDEF) return jj_int(c, 0);
        return jj_fail(c, "length of a value without length");
    }
    if (!strcmp(name, "trim")) { if (v->t != JV_STR) v = jj_stringify(c, v); return jj_strip(c, v, a0, 1, 1); }
    if (!strcmp(name, "upper") || !strcmp(name, "lower") || !strcmp(name, "capitalize") || !strcmp(name, "title")) {
        if (v->t != JV_STR) v = jj_stringify(c, v);
        int mode = name[0] == 'u' ? 0 : name[0] == 'l' ? 1 : name[0] == 'c' ? 2 : 3;
        return jj_case(c, v, mode);
    }
    if (!strcmp(name, "default") || !strcmp(name, "d")) {
        jv *bool_mode = jj_arg(a, 1, "boolean");
        int use_default = v->t == JV_UNDEF || (bool_mode && jj_truthy(bool_mode) && !jj_truthy(v));
        return use_default ? (a0 ? a0 : jj_str(c, "")) : v;
    }
    if (!strcmp(name, "tojson")) {
        jv *ind = jj_arg(a, 0, "indent");
        vlm_buf b = {0};
        jj_to_json(&b, v, ind && ind->t == JV_INT ? (int)ind->i : 0, 0);
        jv *r = jj_strn(c, b.p ? b.p : "", b.n);
        free(b.p);
        return r;
    }
    if (!strcmp(name, "string")) return jj_stringify(c, v);
    if (!strcmp(name, "safe") || !strcmp(name, "e") || !strcmp(name, "escape")) return v;
    if (!strcmp(name, "int")) {
        if (v->t == JV_INT) return v;
        if (v->t == JV_FLOAT) return jj_int(c, (int64_t)v->f);
        if (v->t == JV_BOOL) return jj_int(c, v->i);
        if (v->t == JV_STR) return jj_int(c, strtoll(v->s, NULL, 10));
        return jj_int(c, 0);
    }
    if (!strcmp(name, "float")) {
        if (jj_is_num(v)) return jj_float(c, jj_num(v));
        if (v->t == JV_STR) return jj_float(c, strtod(v->s, NULL));
        return jj_float(c, 0);
    }
    if (!strcmp(name, "abs")) {
        if (v->t == JV_INT) return jj_int(c, v->i < 0 ? -v->i : v->i);
        if (v->t == JV_FLOAT) return jj_float(c, fabs(v->f));
        return jj_fail(c, "abs of a non-number");
    }
    if (!strcmp(name, "list")) {
        if (v->t == JV_LIST) return v;
        jv *r = jj_new(c, JV_LIST);
        if (v->t == JV_DICT) for (int i = 0; i < v->len; i++) jj_list_push(c, r, jj_str(c, v->keys[i]));
        else if (v->t == JV_STR) for (int i = 0, n = jj_cp_count(v); i < n; i++) {
            size_t x = jj_cp_offset(v, i), y = jj_cp_offset(v, i + 1);
            jj_list_push(c, r, jj_strn(c, v->s + x, y - x));
        }
        return r;
    }
    if (!strcmp(name, "first") || !strcmp(name, "last")) {
        if (v->t == JV_LIST) return v->len ? v->items[name[0] == 'f' ? 0 : v->len - 1] : &jj_undef_v;
        if (v->t == JV_STR && v->n) { jv k = {0}; k.t = JV_INT; k.i = name[0] == 'f' ? 0 : -1; return jj_index(c, v, &k); }
        return &jj_undef_v;
    }
    if (!strcmp(name, "reverse")) {
        if (v->t == JV_STR) { jv st = {0}; st.t = JV_INT; st.i = -1; return jj_slice(c, v, NULL, NULL, &st); }
        if (v->t != JV_LIST) return jj_fail(c, "reverse of a non-list");
        jv *r = jj_new(c, JV_LIST);
        for (int i = v->len - 1; i >= 0; i--) jj_list_push(c, r, v->items[i]);
        return r;
    }
    if (!strcmp(name, "join")) {
        if (v->t != JV_LIST) return jj_fail(c, "join of a non-list");
        jv *sep = a0 && a0->t == JV_STR ? a0 : jj_str(c, "");
        vlm_buf b = {0};
        for (int i = 0; i < v->len; i++) {
            if (i) vlm_buf_add(&b, sep->s, sep->n);
            jv *x = jj_stringify(c, v->items[i]);
            vlm_buf_add(&b, x->s ? x->s : "", x->n);
        }
        jv *r = jj_strn(c, b.p ? b.p : "", b.n);
        free(b.p);
        return r;
    }
    if (!strcmp(name, "items")) { if (v->t != JV_DICT) return jj_fail(c, "items of a non-dict"); return jj_items(c, v); }
    if (!strcmp(name, "dictsort")) { if (v->t != JV_DICT) return jj_fail(c, "dictsort of a non-dict"); return jj_sort_items(c, v); }
    if (!strcmp(name, "map") || !strcmp(name, "selectattr") || !strcmp(name, "rejectattr") ||
        !strcmp(name, "select") || !strcmp(name, "reject")) {
        if (v->t != JV_LIST) return jj_fail(c, "%s of a non-list", name);
        jv *r = jj_new(c, JV_LIST);
        jv *attr = jj_arg(a, -1, "attribute");
        for (int i = 0; i < v->len && !c->failed; i++) {
            jv *x = v->items[i];
            if (!strcmp(name, "map")) {
                if (attr && attr->t == JV_STR) jj_list_push(c, r, jj_getattr(c, x, attr->s) ->t == JV_UNDEF && x->t == JV_DICT ? (jj_dict_get(x, attr->s) ? jj_dict_get(x, attr->s) : &jj_undef_v) : jj_getattr(c, x, attr->s));
                else if (a0 && a0->t == JV_STR) {
                    jj_args sub;
                    memset(&sub, 0, sizeof sub);
                    for (int k = 1; k < a->n_pos; k++) sub.pos[sub.n_pos++] = a->pos[k];
                    jj_list_push(c, r, jj_apply_filter(c, a0->s, x, &sub));
                } else return jj_fail(c, "map needs a filter name or attribute=");
                continue;
            }
            int sel;
            int is_attr = name[6] == 'a';
            jv *subject = x;
            int test_from = 0;
            if (is_attr) {
                if (!a0 || a0->t != JV_STR) return jj_fail(c, "%s needs an attribute name", name);
                subject = x->t == JV_DICT ? (jj_dict_get(x, a0->s) ? jj_dict_get(x, a0->s) : &jj_undef_v) : &jj_undef_v;
                test_from = 1;
            }
            jv *tname = jj_arg(a, test_from, NULL);
            if (!tname) sel = jj_truthy(subject);
            else {
                /* Only the common tests by name. */
                const char *tn = tname->s ? tname->s : "";
                jv *targ = jj_arg(a, test_from + 1, NULL);
                if (!strcmp(tn, "defined")) sel = subject->t != JV_UNDEF;
                else if (!strcmp(tn, "undefined")) sel = subject->t == JV_UNDEF;
                else if (!strcmp(tn, "none")) sel = subject->t == JV_NONE;
                else if (!strcmp(tn, "string")) sel = subject->t == JV_STR;
                else if (!strcmp(tn, "equalto") || !strcmp(tn, "eq") || !strcmp(tn, "==")) sel = targ && jj_equal(subject, targ);
                else if (!strcmp(tn, "ne") || !strcmp(tn, "!=")) sel = !(targ && jj_equal(subject, targ));
                else if (!strcmp(tn, "in")) sel = targ && jj_contains(c, targ, subject);
                else return jj_fail(c, "unsupported test %s in %s", tn, name);
            }
            if (name[0] == 'r') sel = !sel;
            if (sel) jj_list_push(c, r, x);
        }
        return r;
    }
    if (!strcmp(name, "unique")) {
        if (v->t != JV_LIST) return jj_fail(c, "unique of a non-list");
        jv *r = jj_new(c, JV_LIST);
        for (int i = 0; i < v->len; i++) if (!jj_contains(c, r, v->items[i])) jj_list_push(c, r, v->items[i]);
        return r;
    }
    if (!strcmp(name, "replace")) {
        jv m = {0};
        m.t = JV_METHOD; m.s = "replace"; m.self = v->t == JV_STR ? v : jj_stringify(c, v);
        return jj_call_method(c, &m, a);
    }
    return jj_fail(c, "unsupported filter '%s'", name);
}

static int jj_test(jj_ctx *c, const char *name, jv *v, const jj_args *a) {
    jv *a0 = jj_arg(a, 0, NULL);
    if (!strcmp(name, "defined")) return v->t != JV_UNDEF;
    if (!strcmp(name, "undefined")) return v->t == JV_UNDEF;
    if (!strcmp(name, "none")) return v->t == JV_NONE;
    if (!strcmp(name, "string")) return v->t == JV_STR;
    if (!strcmp(name, "number")) return v->t == JV_INT || v->t == JV_FLOAT;
    if (!strcmp(name, "integer")) return v->t == JV_INT;
    if (!strcmp(name, "float")) return v->t == JV_FLOAT;
    if (!strcmp(name, "boolean")) return v->t == JV_BOOL;
    if (!strcmp(name, "true")) return v->t == JV_BOOL && v->i;
    if (!strcmp(name, "false")) return v->t == JV_BOOL && !v->i;
    if (!strcmp(name, "mapping")) return v->t == JV_DICT;
    if (!strcmp(name, "sequence")) return v->t == JV_LIST || v->t == JV_STR || v->t == JV_DICT;
    if (!strcmp(name, "iterable")) return v->t == JV_LIST || v->t == JV_STR || v->t == JV_DICT;
    if (!strcmp(name, "callable")) return v->t == JV_MACRO || v->t == JV_METHOD || v->t == JV_FUNC;
    if (!strcmp(name, "even")) return v->t == JV_INT && v->i % 2 == 0;
    if (!strcmp(name, "odd")) return v->t == JV_INT && v->i % 2 != 0;
    if (!strcmp(name, "divisibleby")) return v->t == JV_INT && a0 && a0->t == JV_INT && a0->i && v->i % a0->i == 0;
    if (!strcmp(name, "equalto") || !strcmp(name, "eq") || !strcmp(name, "sameas")) return a0 && jj_equal(v, a0);
    if (!strcmp(name, "ne")) return !(a0 && jj_equal(v, a0));
    if (!strcmp(name, "in")) return a0 && jj_contains(c, a0, v);
    jj_fail(c, "unsupported test '%s'", name);
    return 0;
}

static jv *jj_eval(jj_ctx *c, jj_node *n) {
    if (c->failed || !n || JJ_STEP(c)) return &jj_undef_v;
    switch (n->kind) {
    case JN_LIT: return n->lit;
    case JN_NAME: {
        jv *v = jj_lookup(c, n->s);
        if (v) return v;
        static const char *const funcs[] = {"namespace", "range", "raise_exception", "dict", "strftime_now", NULL};
        for (int k = 0; funcs[k]; k++)
            if (!strcmp(funcs[k], n->s)) { jv *f = jj_new(c, JV_FUNC); f->s = funcs[k]; return f; }
        return &jj_undef_v;
    }
    case JN_ATTR: return jj_getattr(c, jj_eval(c, n->a), n->s);
    case JN_INDEX: return jj_index(c, jj_eval(c, n->a), jj_eval(c, n->b));
    case JN_SLICE: {
        jv *o = jj_eval(c, n->a);
        jv *lo = n->b ? jj_eval(c, n->b) : NULL, *hi = n->c ? jj_eval(c, n->c) : NULL, *st = n->d ? jj_eval(c, n->d) : NULL;
        return jj_slice(c, o, lo, hi, st);
    }
    case JN_CALL: {
        jv *f = jj_eval(c, n->a);
        jj_args a;
        jj_eval_args(c, n, &a);
        if (c->failed) return &jj_undef_v;
        if (f->t == JV_MACRO) return jj_call_macro(c, f, &a);
        if (f->t == JV_METHOD) return jj_call_method(c, f, &a);
        if (f->t == JV_FUNC) return jj_call_func(c, f, &a);
        return jj_fail(c, "calling a value that is not callable");
    }
    case JN_FILTER: {
        jv *v = jj_eval(c, n->a);
        jj_args a;
        jj_eval_args(c, n, &a);
        return jj_apply_filter(c, n->s, v, &a);
    }
    case JN_TEST: {
        jv *v = jj_eval(c, n->a);
        jj_args a;
        jj_eval_args(c, n, &a);
        return jj_bool(jj_test(c, n->s, v, &a) != n->negate);
    }
    case JN_UNARY: {
        jv *v = jj_eval(c, n->a);
        if (n->op[0] == '+') return v;
        if (v->t == JV_INT || v->t == JV_BOOL) return jj_int(c, -v->i);
        if (v->t == JV_FLOAT) return jj_float(c, -v->f);
        return jj_fail(c, "unary minus of a non-number");
    }
    case JN_BINOP: return jj_binary(c, n);
    case JN_AND: { jv *a = jj_eval(c, n->a); return jj_truthy(a) ? jj_eval(c, n->b) : a; }
    case JN_OR: { jv *a = jj_eval(c, n->a); return jj_truthy(a) ? a : jj_eval(c, n->b); }
    case JN_NOT: return jj_bool(!jj_truthy(jj_eval(c, n->a)));
    case JN_COND: return jj_truthy(jj_eval(c, n->b)) ? jj_eval(c, n->a) : (n->c ? jj_eval(c, n->c) : &jj_undef_v);
    case JN_LISTLIT: {
        jv *r = jj_new(c, JV_LIST);
        for (int i = 0; i < n->n_list; i++) jj_list_push(c, r, jj_eval(c, n->list[i]));
        return r;
    }
    case JN_DICTLIT: {
        jv *r = jj_new(c, JV_DICT);
        for (int i = 0; i + 1 < n->n_list; i += 2) {
            jv *k = jj_stringify(c, jj_eval(c, n->list[i]));
            jj_dict_set(c, r, k->s ? k->s : "", jj_eval(c, n->list[i + 1]));
        }
        return r;
    }
    }
    return jj_fail(c, "bad expression node");
}

static void jj_exec(jj_ctx *c, jj_node *n, vlm_buf *out) {
    if (c->failed || !n || JJ_STEP(c) || jj_output_over(c, out)) return;
    switch (n->kind) {
    case JN_BODY:
        for (int i = 0; i < n->n_list && !c->failed && !c->brk && !c->cont; i++) jj_exec(c, n->list[i], out);
        break;
    case JN_TEXT: vlm_buf_add(out, n->s, n->n); break;
    case JN_OUT: {
        jv *v = jj_eval(c, n->a);
        if (!c->failed) jj_to_str(out, v, 0);
        break;
    }
    case JN_IF:
        if (jj_truthy(jj_eval(c, n->a))) jj_exec(c, n->b, out);
        else if (n->c) jj_exec(c, n->c, out);
        break;
    case JN_FOR: {
        jv *it = jj_eval(c, n->a);
        if (c->failed) return;
        jv *seq;
        if (it->t == JV_LIST) seq = it;
        else if (it->t == JV_DICT) { seq = jj_new(c, JV_LIST); for (int i = 0; i < it->len; i++) jj_list_push(c, seq, jj_str(c, it->keys[i])); }
        else if (it->t == JV_STR) seq = jj_apply_filter(c, "list", it, &(jj_args){0});
        else if (it->t == JV_UNDEF || it->t == JV_NONE) seq = jj_new(c, JV_LIST);
        else { jj_fail(c, "for over a value that is not iterable"); return; }
        if (n->d) { /* loop filter: evaluated with the target bound */
            jv *f = jj_new(c, JV_LIST);
            if (jj_push_frame(c, 0)) return;
            for (int i = 0; i < seq->len && !c->failed; i++) {
                jv *x = seq->items[i];
                if (n->n_names == 2 && x->t == JV_LIST && x->len == 2) { jj_assign(c, n->names[0], x->items[0]); jj_assign(c, n->names[1], x->items[1]); }
                else jj_assign(c, n->names[0], x);
                if (jj_truthy(jj_eval(c, n->d))) jj_list_push(c, f, x);
            }
            c->n_frames--;
            seq = f;
        }
        if (seq->len == 0) { if (n->c) jj_exec(c, n->c, out); return; }
        jv *outer_loop = jj_lookup(c, "loop");
        (void)outer_loop;
        for (int i = 0; i < seq->len && !c->failed; i++) {
            if (jj_push_frame(c, 0)) return;
            jv *x = seq->items[i];
            if (n->n_names == 2) {
                if (x->t != JV_LIST || x->len != 2) { jj_fail(c, "cannot unpack a loop item into two names"); c->n_frames--; return; }
                jj_assign(c, n->names[0], x->items[0]);
                jj_assign(c, n->names[1], x->items[1]);
            } else jj_assign(c, n->names[0], x);
            jv *loop = jj_new(c, JV_DICT);
            jj_dict_set(c, loop, "index", jj_int(c, i + 1));
            jj_dict_set(c, loop, "index0", jj_int(c, i));
            jj_dict_set(c, loop, "revindex", jj_int(c, seq->len - i));
            jj_dict_set(c, loop, "revindex0", jj_int(c, seq->len - i - 1));
            jj_dict_set(c, loop, "first", jj_bool(i == 0));
            jj_dict_set(c, loop, "last", jj_bool(i == seq->len - 1));
            jj_dict_set(c, loop, "length", jj_int(c, seq->len));
            jj_dict_set(c, loop, "previtem", i > 0 ? seq->items[i - 1] : &jj_undef_v);
            jj_dict_set(c, loop, "nextitem", i + 1 < seq->len ? seq->items[i + 1] : &jj_undef_v);
            jj_assign(c, "loop", loop);
            jj_exec(c, n->b, out);
            c->n_frames--;
            c->cont = 0;
            if (c->brk) { c->brk = 0; break; }
        }
        break;
    }
    case JN_SET: {
        jv *v = jj_eval(c, n->a);
        if (c->failed) return;
        if (n->n_names == 2) {
            jv *ns = jj_lookup(c, n->names[0]);
            if (!ns || ns->t != JV_DICT || !ns->is_ns) { jj_fail(c, "cannot assign attribute of '%s' (not a namespace)", n->names[0]); return; }
            jj_dict_set(c, ns, n->names[1], v);
        } else jj_assign(c, n->names[0], v);
        break;
    }
    case JN_SETBLOCK: {
        vlm_buf b = {0};
        jj_exec(c, n->b, &b);
        jj_assign(c, n->names[0], jj_strn(c, b.p ? b.p : "", b.n));
        free(b.p);
        break;
    }
    case JN_MACRO: {
        jv *m = jj_new(c, JV_MACRO);
        m->macro = n;
        jj_assign(c, n->names[0], m);
        break;
    }
    case JN_BREAK: c->brk = 1; break;
    case JN_CONTINUE: c->cont = 1; break;
    default: jj_eval(c, n); break;
    }
}

/* ------------------------------------------------------------------ public entry points */

static jv *jj_from_json(jj_ctx *c, const vlm_json *j) {
    if (!j) return &jj_undef_v;
    switch (j->type) {
    case VLM_JSON_NULL: return &jj_none_v;
    case VLM_JSON_BOOL: return jj_bool(j->num != 0);
    case VLM_JSON_NUMBER:
        if (j->num == floor(j->num) && fabs(j->num) < 9e15) return jj_int(c, (int64_t)j->num);
        return jj_float(c, j->num);
    case VLM_JSON_STRING: return jj_strn(c, j->str, (size_t)j->n);
    case VLM_JSON_ARRAY: {
        jv *r = jj_new(c, JV_LIST);
        for (int i = 0; i < j->n; i++) jj_list_push(c, r, jj_from_json(c, &j->items[i]));
        return r;
    }
    case VLM_JSON_OBJECT: {
        jv *r = jj_new(c, JV_DICT);
        for (int i = 0; i < j->n; i++) jj_dict_set(c, r, j->items[i].key, jj_from_json(c, &j->items[i]));
        return r;
    }
    }
    return &jj_undef_v;
}

static jv *jj_from_msgs(jj_ctx *c, const vlm_chat_msg *msgs, int n) {
    jv *l = jj_new(c, JV_LIST);
    for (int i = 0; i < n; i++) {
        jv *m = jj_new(c, JV_DICT);
        jj_dict_set(c, m, "role", jj_str(c, msgs[i].role ? msgs[i].role : "user"));
        if (msgs[i].n_parts > 0) {
            jv *parts = jj_new(c, JV_LIST);
            for (int k = 0; k < msgs[i].n_parts; k++) {
                const vlm_chat_part *p = &msgs[i].parts[k];
                jv *d = jj_new(c, JV_DICT);
                jj_dict_set(c, d, "type", jj_str(c, p->type == VLM_PART_TEXT ? "text" : p->type == VLM_PART_IMAGE ? "image" : "video"));
                if (p->type == VLM_PART_TEXT) jj_dict_set(c, d, "text", jj_str(c, p->text ? p->text : ""));
                jj_list_push(c, parts, d);
            }
            jj_dict_set(c, m, "content", parts);
        } else jj_dict_set(c, m, "content", jj_str(c, msgs[i].content ? msgs[i].content : ""));
        jj_list_push(c, l, m);
    }
    return l;
}

static vlm_status jj_render(const char *src, jv *(*mk)(jj_ctx *, const void *, const void *), const void *arg1,
                            const void *arg2, const vlm_chat_opts *opts, char **out, vlm_error *err) {
    *out = NULL;
    if (!src) return vlm_error_set(err, VLM_ERR_ARG, "no chat template");
    jj_ctx c;
    memset(&c, 0, sizeof c);
    c.err = err;
    c.lim = vlm_limits_resolve(opts ? opts->limits : NULL);
    jj_tok *toks = NULL;
    int n_toks = 0;
    if (jj_lex_template(&c, src, &toks, &n_toks)) goto done_nt;
    jj_parser p;
    memset(&p, 0, sizeof p);
    p.c = &c;
    p.toks = toks;
    p.n_toks = n_toks;
    int which;
    jj_node *root = jj_parse_body(&p, NULL, &which);
    if (c.failed && err && p.pos > 0 && p.pos <= n_toks) {
        /* Point at the line of the tag being parsed. */
        int line = 1;
        for (const char *q = src; q < toks[p.pos - 1].s; q++) line += *q == '\n';
        size_t l = strlen(err->msg);
        snprintf(err->msg + l, sizeof err->msg - l, " (template line %d)", line);
    }
    free(toks);
    if (c.failed) goto fail;
    jj_push_frame(&c, 0);
    jv *msgs = mk(&c, arg1, arg2);
    jj_assign(&c, "messages", msgs);
    if (arg2 && mk != NULL) { /* tools set by mk when present */ }
    vlm_chat_opts o;
    memset(&o, 0, sizeof o);
    if (opts) o = *opts;
    jj_assign(&c, "add_generation_prompt", jj_bool(o.add_generation_prompt));
    jj_assign(&c, "bos_token", jj_str(&c, o.bos_token ? o.bos_token : ""));
    jj_assign(&c, "eos_token", jj_str(&c, o.eos_token ? o.eos_token : ""));
    for (int i = 0; o.bool_names && o.bool_names[i]; i++) jj_assign(&c, o.bool_names[i], jj_bool(o.bool_values ? o.bool_values[i] : 1));
    vlm_buf b = {0};
    jj_exec(&c, root, &b);
    if (!c.failed) jj_output_over(&c, &b); /* the last node's output */
    if (b.oom && !c.failed) { vlm_error_set(err, VLM_ERR_OOM, "out of memory rendering the chat template"); c.failed = 1; }
    if (c.failed) { free(b.p); goto fail; }
    *out = b.p ? b.p : calloc(1, 1);
    while (c.blocks) { jj_block *nx = c.blocks->next; free(c.blocks); c.blocks = nx; }
    return *out ? VLM_OK : vlm_error_set(err, VLM_ERR_OOM, "out of memory");
fail:
    while (c.blocks) { jj_block *nx = c.blocks->next; free(c.blocks); c.blocks = nx; }
    return err && err->code ? err->code : VLM_ERR_FORMAT;
done_nt:
    while (c.blocks) { jj_block *nx = c.blocks->next; free(c.blocks); c.blocks = nx; }
    return err && err->code ? err->code : VLM_ERR_FORMAT;
}

typedef struct jj_msgs_arg { const vlm_chat_msg *msgs; int n; } jj_msgs_arg;

static jv *jj_mk_structs(jj_ctx *c, const void *a1, const void *a2) {
    (void)a2;
    const jj_msgs_arg *m = a1;
    return jj_from_msgs(c, m->msgs, m->n);
}

static jv *jj_mk_json(jj_ctx *c, const void *a1, const void *a2) {
    if (a2) jj_assign(c, "tools", jj_from_json(c, a2));
    return jj_from_json(c, a1);
}

vlm_status vlm_chat_render(const char *template_src, const vlm_chat_msg *msgs, int n_msgs,
                           const vlm_chat_opts *opts, char **out, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    jj_msgs_arg a = {msgs, n_msgs};
    return jj_render(template_src, jj_mk_structs, &a, NULL, opts, out, err);
}

vlm_status vlm_chat_render_json(const char *template_src, const vlm_json *messages,
                                const vlm_json *tools, const vlm_chat_opts *opts, char **out,
                                vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    if (!messages || messages->type != VLM_JSON_ARRAY) return vlm_error_set(err, VLM_ERR_ARG, "chat messages must be a JSON array");
    return jj_render(template_src, jj_mk_json, messages, tools, opts, out, err);
}

vlm_status vlm_tokenizer_chat(const vlm_tokenizer *tok, const vlm_chat_msg *msgs, int n_msgs,
                              int add_generation_prompt, const vlm_limits *limits, char **out, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    vlm_tokenizer_info info = vlm_tokenizer_get_info(tok);
    if (!info.chat_template) return vlm_error_set(err, VLM_ERR_CONFIG, "the tokenizer has no chat template");
    vlm_chat_opts o;
    memset(&o, 0, sizeof o);
    o.add_generation_prompt = add_generation_prompt;
    o.bos_token = info.bos_token;
    o.eos_token = info.eos_token;
    o.limits = limits;
    return vlm_chat_render(info.chat_template, msgs, n_msgs, &o, out, err);
}
