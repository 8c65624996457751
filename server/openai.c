/* Chat Completions as OpenAI defines it: the request's JSON read into
 * messages and generation parameters, checked field by field (a wrong type
 * is a 400 naming the field), and the response objects written. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

int srv_fail(srv_error *e, int status, const char *type, const char *code, const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof e->msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int bad(srv_error *e, const char *fmt, const char *field) {
    return srv_fail(e, 400, "invalid_request_error", NULL, fmt, field);
}

/* ------------------------------------------------------------------ base64 */

static int b64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

int srv_base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len) {
    while (n > 0 && s[n - 1] == '=' && n % 4 != 1) n--; /* padding, at most two */
    if (n % 4 == 1) return -1;
    unsigned char *o = (unsigned char *)malloc(n / 4 * 3 + 3);
    if (!o) return -1;
    size_t k = 0;
    uint32_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)s[i]);
        if (v < 0) { free(o); return -1; }
        acc = acc << 6 | (uint32_t)v;
        if (i % 4 == 3) {
            o[k++] = (unsigned char)(acc >> 16);
            o[k++] = (unsigned char)(acc >> 8);
            o[k++] = (unsigned char)acc;
            acc = 0;
        }
    }
    if (n % 4 == 2) o[k++] = (unsigned char)(acc >> 4);
    if (n % 4 == 3) { o[k++] = (unsigned char)(acc >> 10); o[k++] = (unsigned char)(acc >> 2); }
    *out = o;
    *out_len = k;
    return 0;
}

/* ------------------------------------------------------------------ request */

void srv_request_free(srv_request *r) {
    for (int i = 0; i < r->n_msgs; i++) {
        for (int k = 0; k < r->msgs[i].n_parts; k++) {
            free(r->msgs[i].parts[k].text);
            vlm_image_free(&r->msgs[i].parts[k].img);
        }
        free(r->msgs[i].parts);
    }
    free(r->msgs);
    for (int i = 0; i < 16; i++) free(r->stop[i]);
    memset(r, 0, sizeof *r);
}

/* An image_url: a data URI, or a local file where allowed; nothing is fetched. */
static int parse_image(const char *url, const srv_parse_opts *o, vlm_image *img, int index, srv_error *e) {
    vlm_error err = {0};
    if (!strncmp(url, "data:", 5)) {
        const char *comma = strchr(url, ',');
        const char *b64 = comma ? strstr(url, ";base64") : NULL;
        if (!b64 || b64 > comma)
            return srv_fail(e, 400, "invalid_request_error", "invalid_image",
                            "image %d: a data URI must be base64 (data:image/...;base64,...)", index);
        unsigned char *bytes = NULL;
        size_t n = 0;
        if (srv_base64_decode(comma + 1, strlen(comma + 1), &bytes, &n))
            return srv_fail(e, 400, "invalid_request_error", "invalid_image", "image %d: the data URI is not valid base64", index);
        vlm_status st = vlm_image_decode_limited(img, bytes, n, o->max_pixels, &err);
        free(bytes);
        if (st != VLM_OK) return srv_fail(e, 400, "invalid_request_error", "invalid_image", "image %d: %s", index, err.msg);
        return 0;
    }
    const char *path = !strncmp(url, "file://", 7) ? url + 7 : url[0] == '/' ? url : NULL;
    if (!path)
        return srv_fail(e, 400, "invalid_request_error", "invalid_image",
                        "image %d: the server fetches no URLs; send the image as a data URI (data:image/png;base64,...)", index);
    if (!o->allow_local_files)
        return srv_fail(e, 400, "invalid_request_error", "invalid_image",
                        "image %d: local files are not allowed (vlm serve --allow-local-files)", index);
    if (vlm_image_load_limited(img, path, o->max_pixels, &err) != VLM_OK)
        return srv_fail(e, 400, "invalid_request_error", "invalid_image", "image %d: %s", index, err.msg);
    return 0;
}

static int add_part(srv_msg *m, const char *text, size_t len, vlm_image *img) {
    srv_part *np = (srv_part *)realloc(m->parts, sizeof(srv_part) * (size_t)(m->n_parts + 1));
    if (!np) return -1;
    m->parts = np;
    srv_part *p = &m->parts[m->n_parts];
    memset(p, 0, sizeof *p);
    if (img) {
        p->img = *img;
        size_t row = (size_t)img->width * 3;
        m->hash = vlm_hash64(NULL, 0, m->hash ^ (uint64_t)img->width << 32 ^ (uint64_t)img->height);
        for (int y = 0; y < img->height; y++) m->hash = vlm_hash64(img->rgb + (size_t)y * row, row, m->hash);
    } else {
        if (!(p->text = (char *)malloc(len + 1))) return -1;
        memcpy(p->text, text, len);
        p->text[len] = 0;
        m->hash = vlm_hash64(text, len, m->hash + 1);
    }
    m->n_parts++;
    return 0;
}

static int parse_content(const vlm_json *c, srv_msg *m, const srv_parse_opts *o, int *n_images, srv_error *e) {
    if (c && c->type == VLM_JSON_STRING)
        return add_part(m, c->str, (size_t)c->n, NULL) ? srv_fail(e, 500, "server_error", NULL, "out of memory") : 0;
    if (!c || c->type != VLM_JSON_ARRAY) return bad(e, "%s: content must be a string or an array of parts", "messages");
    for (int i = 0; i < c->n; i++) {
        const vlm_json *part = &c->items[i];
        const char *type = vlm_json_str(vlm_json_get(part, "type"), NULL);
        if (!type) return bad(e, "%s: every content part needs a \"type\"", "messages");
        if (!strcmp(type, "text")) {
            const vlm_json *t = vlm_json_get(part, "text");
            if (!t || t->type != VLM_JSON_STRING) return bad(e, "%s: a text part needs a string \"text\"", "messages");
            if (add_part(m, t->str, (size_t)t->n, NULL)) return srv_fail(e, 500, "server_error", NULL, "out of memory");
        } else if (!strcmp(type, "image_url")) {
            if (strcmp(m->role, "user")) return bad(e, "%s: images go in user messages", "messages");
            const vlm_json *u = vlm_json_get(part, "image_url");
            const char *url = u && u->type == VLM_JSON_STRING ? u->str : vlm_json_str(vlm_json_get(u, "url"), NULL);
            if (!url) return bad(e, "%s: an image_url part needs image_url.url (a string)", "messages");
            vlm_image img = {0};
            if (parse_image(url, o, &img, *n_images, e)) return -1;
            ++*n_images;
            if (add_part(m, NULL, 0, &img)) {
                vlm_image_free(&img);
                return srv_fail(e, 500, "server_error", NULL, "out of memory");
            }
        } else
            return srv_fail(e, 400, "invalid_request_error", NULL, "messages: content part type '%.40s' is not supported (text, image_url)", type);
    }
    return 0;
}

static int parse_messages(const vlm_json *ms, const srv_parse_opts *o, srv_request *r, srv_error *e) {
    if (!ms) return bad(e, "'%s' is required", "messages");
    if (ms->type != VLM_JSON_ARRAY || ms->n == 0) return bad(e, "'%s' must be a non-empty array", "messages");
    if (!(r->msgs = (srv_msg *)calloc((size_t)ms->n, sizeof(srv_msg)))) return srv_fail(e, 500, "server_error", NULL, "out of memory");
    int n_images = 0;
    for (int i = 0; i < ms->n; i++) {
        const vlm_json *m = &ms->items[i];
        const char *role = vlm_json_str(vlm_json_get(m, "role"), NULL);
        if (m->type != VLM_JSON_OBJECT || !role) return bad(e, "%s: every message is an object with a string \"role\"", "messages");
        srv_msg *sm = &r->msgs[r->n_msgs++];
        if (!strcmp(role, "system") || !strcmp(role, "developer")) sm->role = "system";
        else if (!strcmp(role, "user")) sm->role = "user";
        else if (!strcmp(role, "assistant")) sm->role = "assistant";
        else return srv_fail(e, 400, "invalid_request_error", NULL, "messages[%d]: unknown role '%.40s' (system, user, assistant)", i, role);
        sm->hash = vlm_hash64(sm->role, strlen(sm->role), 0);
        if (parse_content(vlm_json_get(m, "content"), sm, o, &n_images, e)) return -1;
    }
    if (strcmp(r->msgs[r->n_msgs - 1].role, "user"))
        return bad(e, "%s: the last message must be the user's", "messages");
    return 0;
}

/* A number field within [lo, hi]: 0 (absent or read), -1 (wrong). */
static int num_field(const vlm_json *req, const char *key, double lo, double hi, double *out, srv_error *e) {
    const vlm_json *v = vlm_json_get(req, key);
    if (!v || v->type == VLM_JSON_NULL) return 0;
    if (v->type != VLM_JSON_NUMBER || !(v->num >= lo && v->num <= hi))
        return srv_fail(e, 400, "invalid_request_error", NULL, "'%s' must be a number in [%g, %g]", key, lo, hi);
    *out = v->num;
    return 0;
}

static int int_field(const vlm_json *req, const char *key, double lo, double hi, double *out, srv_error *e) {
    double v = *out;
    if (num_field(req, key, lo, hi, &v, e)) return -1;
    if (v != (double)(long long)v) return srv_fail(e, 400, "invalid_request_error", NULL, "'%s' must be an integer", key);
    *out = v;
    return 0;
}

static int bool_field(const vlm_json *req, const char *key, int *out, srv_error *e) {
    const vlm_json *v = vlm_json_get(req, key);
    if (!v || v->type == VLM_JSON_NULL) return 0;
    if (v->type != VLM_JSON_BOOL) return bad(e, "'%s' must be true or false", key);
    *out = (int)v->num;
    return 0;
}

static int parse_stop(const vlm_json *v, srv_request *r, srv_error *e) {
    if (!v || v->type == VLM_JSON_NULL) return 0;
    int n = v->type == VLM_JSON_ARRAY ? v->n : 1;
    if ((v->type != VLM_JSON_STRING && v->type != VLM_JSON_ARRAY) || n > 16)
        return bad(e, "'%s' must be a string or an array of at most 16 strings", "stop");
    for (int i = 0; i < n; i++) {
        const vlm_json *s = v->type == VLM_JSON_ARRAY ? &v->items[i] : v;
        if (s->type != VLM_JSON_STRING) return bad(e, "'%s' must be a string or an array of at most 16 strings", "stop");
        if (s->n == 0) continue;
        if (!(r->stop[r->gen.n_stop] = vlm_strdup(s->str))) return srv_fail(e, 500, "server_error", NULL, "out of memory");
        r->gen.n_stop++;
    }
    return 0;
}

/* Fields whose meaning this server does not implement: refused, not ignored. */
static int refuse_unsupported(const vlm_json *req, srv_error *e) {
    const vlm_json *v;
    if ((v = vlm_json_get(req, "n")) && v->type != VLM_JSON_NULL && !(v->type == VLM_JSON_NUMBER && v->num == 1))
        return bad(e, "'%s' must be 1 (one choice per request)", "n");
    if (vlm_json_bool(vlm_json_get(req, "logprobs"), 0)) return bad(e, "'%s' is not supported", "logprobs");
    if ((v = vlm_json_get(req, "tools")) && v->type == VLM_JSON_ARRAY && v->n > 0) return bad(e, "'%s' are not supported", "tools");
    const char *rf = vlm_json_str(vlm_json_get(vlm_json_get(req, "response_format"), "type"), "text");
    if (strcmp(rf, "text")) return srv_fail(e, 400, "invalid_request_error", NULL, "response_format '%.40s' is not supported (text)", rf);
    return 0;
}

static int parse_params(const vlm_json *req, srv_request *r, srv_error *e) {
    vlm_sampling *sp = &r->gen.sampling;
    double t = sp->temperature, top_p = sp->top_p, min_p = sp->min_p, top_k = sp->top_k, rep = sp->repetition_penalty;
    double pres = 0, freq = 0, max_tokens = 0, seed = -1;
    if (num_field(req, "temperature", 0, 2, &t, e) || num_field(req, "top_p", 0, 1, &top_p, e) ||
        num_field(req, "min_p", 0, 1, &min_p, e) || int_field(req, "top_k", 0, 1e9, &top_k, e) ||
        num_field(req, "repetition_penalty", 1e-6, 100, &rep, e) ||
        num_field(req, "presence_penalty", -2, 2, &pres, e) || num_field(req, "frequency_penalty", -2, 2, &freq, e) ||
        int_field(req, "max_tokens", 1, 1 << 24, &max_tokens, e) ||
        int_field(req, "max_completion_tokens", 1, 1 << 24, &max_tokens, e) ||
        int_field(req, "seed", -9.2e18, 9.2e18, &seed, e))
        return -1;
    if (top_p == 0) top_p = 1e-9; /* OpenAI's 0: the most likely token only */
    sp->temperature = (float)t;
    sp->top_p = (float)top_p;
    sp->min_p = (float)min_p;
    sp->top_k = (int)top_k;
    sp->repetition_penalty = (float)rep;
    sp->presence_penalty = (float)pres;
    sp->frequency_penalty = (float)freq;
    if (seed != -1) sp->seed = (uint64_t)(long long)seed;
    else { /* no seed: a different draw each request, as OpenAI's */
        double now = vlm_time_s();
        sp->seed = vlm_hash64(&now, sizeof now, (uint64_t)(uintptr_t)r);
    }
    r->gen.max_tokens = (int)max_tokens;
    if (bool_field(req, "stream", &r->stream, e) || bool_field(req, "ignore_eos", &r->gen.ignore_eos, e)) return -1;
    const vlm_json *so = vlm_json_get(req, "stream_options");
    if (so && so->type != VLM_JSON_NULL && so->type != VLM_JSON_OBJECT) return bad(e, "'%s' must be an object", "stream_options");
    if (bool_field(so, "include_usage", &r->include_usage, e)) return -1;
    return parse_stop(vlm_json_get(req, "stop"), r, e);
}

int srv_parse_chat(const char *body, size_t len, const srv_parse_opts *o, srv_request *r, srv_error *e) {
    memset(r, 0, sizeof *r);
    r->gen = vlm_generate_default();
    r->gen.max_tokens = 0;
    vlm_error err = {0};
    vlm_json *req = vlm_json_parse(body, len, &err);
    if (!req) return srv_fail(e, 400, "invalid_request_error", "invalid_json", "the body is not JSON: %s", err.msg);
    int rc = req->type != VLM_JSON_OBJECT ? bad(e, "the body must be a JSON %s", "object")
             : refuse_unsupported(req, e) || parse_params(req, r, e) ? -1
                                                                     : parse_messages(vlm_json_get(req, "messages"), o, r, e);
    vlm_json_free(req);
    if (rc) srv_request_free(r);
    return rc;
}

/* ------------------------------------------------------------------ responses */

void srv_error_json(vlm_buf *b, const srv_error *e) {
    vlm_buf_str(b, "{\"error\":{\"message\":");
    vlm_json_quote(b, e->msg, strlen(e->msg));
    vlm_buf_str(b, ",\"type\":");
    vlm_json_quote(b, e->type, strlen(e->type));
    vlm_buf_str(b, ",\"param\":null,\"code\":");
    if (e->code) vlm_json_quote(b, e->code, strlen(e->code));
    else vlm_buf_str(b, "null");
    vlm_buf_str(b, "}}");
}

static void head(vlm_buf *b, const char *object, const char *id, long long created, const char *model) {
    char t[64];
    vlm_buf_str(b, "{\"id\":");
    vlm_json_quote(b, id, strlen(id));
    vlm_buf_str(b, ",\"object\":\"");
    vlm_buf_str(b, object);
    snprintf(t, sizeof t, "\",\"created\":%lld,\"model\":", created);
    vlm_buf_str(b, t);
    vlm_json_quote(b, model, strlen(model));
}

static void usage_json(vlm_buf *b, const srv_usage *u) {
    char t[192];
    snprintf(t, sizeof t,
             "\"usage\":{\"prompt_tokens\":%d,\"completion_tokens\":%d,\"total_tokens\":%d,"
             "\"prompt_tokens_details\":{\"cached_tokens\":%d}}",
             u->prompt, u->completion, u->prompt + u->completion, u->cached);
    vlm_buf_str(b, t);
}

void srv_completion_json(vlm_buf *b, const char *id, long long created, const char *model, const char *text,
                         size_t len, const char *finish, const srv_usage *u) {
    head(b, "chat.completion", id, created, model);
    vlm_buf_str(b, ",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":");
    vlm_json_quote(b, text, len);
    vlm_buf_str(b, "},\"logprobs\":null,\"finish_reason\":\"");
    vlm_buf_str(b, finish);
    vlm_buf_str(b, "\"}],");
    usage_json(b, u);
    vlm_buf_str(b, "}");
}

void srv_chunk_sse(vlm_buf *b, const char *id, long long created, const char *model, int role, const char *text,
                   size_t len, const char *finish) {
    vlm_buf_str(b, "data: ");
    head(b, "chat.completion.chunk", id, created, model);
    vlm_buf_str(b, ",\"choices\":[{\"index\":0,\"delta\":{");
    if (role) vlm_buf_str(b, "\"role\":\"assistant\",\"content\":\"\"");
    else if (text) { vlm_buf_str(b, "\"content\":"); vlm_json_quote(b, text, len); }
    vlm_buf_str(b, "},\"logprobs\":null,\"finish_reason\":");
    if (finish) { vlm_buf_str(b, "\""); vlm_buf_str(b, finish); vlm_buf_str(b, "\""); }
    else vlm_buf_str(b, "null");
    vlm_buf_str(b, "}]}\n\n");
}

void srv_usage_sse(vlm_buf *b, const char *id, long long created, const char *model, const srv_usage *u) {
    vlm_buf_str(b, "data: ");
    head(b, "chat.completion.chunk", id, created, model);
    vlm_buf_str(b, ",\"choices\":[],");
    usage_json(b, u);
    vlm_buf_str(b, "}\n\n");
}
