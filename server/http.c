/* The HTTP side of `vlm serve`, on libmicrohttpd: a thread per connection
 * (a streaming answer blocks its connection's thread between tokens, never
 * the others), routes, the API key, the body limit, Server-Sent Events.
 * The one file of the tree that speaks sockets: the listening address. */
#include <netdb.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <microhttpd.h>

#include "server.h"

typedef struct srv {
    const srv_config *cfg;
    srv_parse_opts parse;
    srv_pool *_Atomic pool;       /* set once the model is loaded */
    atomic_int stopping, active;  /* shutting down; requests being answered */
} srv;

/* One request's state across libmicrohttpd's calls. */
typedef struct conn {
    vlm_buf body;
    int too_big, replied;
} conn;

/* A streamed answer: owned by its response, freed when the connection ends. */
typedef struct stream {
    srv *sv;
    srv_job *job;
    vlm_buf pend;                 /* events not yet handed to the socket */
    size_t off, seen;
    int role_sent, finished;
    char id[40];
    long long created;
} stream;

static void count_status(srv *sv, int status) {
    srv_pool *p = atomic_load(&sv->pool);
    if (p) srv_pool_status(p, status);
}

static enum MHD_Result reply(srv *sv, struct MHD_Connection *c, int status, const char *type, vlm_buf *body,
                             const char *hname, const char *hvalue) {
    if (body->oom) { free(body->p); body->p = NULL; body->n = 0; status = 500; }
    struct MHD_Response *r = MHD_create_response_from_buffer(body->n, body->p ? body->p : (char *)"", body->p ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    memset(body, 0, sizeof *body);
    if (!r) return MHD_NO;
    MHD_add_response_header(r, "Content-Type", type);
    if (hname) MHD_add_response_header(r, hname, hvalue);
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    count_status(sv, status);
    return ok;
}

static enum MHD_Result reply_error(srv *sv, struct MHD_Connection *c, const srv_error *e) {
    vlm_buf b = {0};
    srv_error_json(&b, e);
    return reply(sv, c, e->status, "application/json", &b, e->status == 503 ? "Retry-After" : NULL, "1");
}

static enum MHD_Result fail(srv *sv, struct MHD_Connection *c, int status, const char *type, const char *code, const char *msg) {
    srv_error e;
    srv_fail(&e, status, type, code, "%s", msg);
    return reply_error(sv, c, &e);
}

/* The key compared in time that does not depend on where it differs. */
static int key_ok(const char *want, const char *auth) {
    if (!auth || strncmp(auth, "Bearer ", 7)) return 0;
    const char *got = auth + 7;
    size_t nw = strlen(want), ng = strlen(got);
    unsigned diff = (unsigned)(nw ^ ng);
    for (size_t i = 0; i < ng; i++) diff |= (unsigned char)got[i] ^ (unsigned char)want[nw ? i % nw : 0];
    return diff == 0;
}

/* ------------------------------------------------------------------ answers */

static void answer_id(char *id, size_t n, const srv_job *j) {
    uint64_t h = vlm_hash64(&j->t_submit, sizeof j->t_submit, (uint64_t)(uintptr_t)j);
    snprintf(id, n, "chatcmpl-%016llx", (unsigned long long)h);
}

static srv_usage job_usage(const srv_job *j) {
    srv_usage u = {j->st.n_prompt, j->st.n_generated, j->st.n_prompt - j->st.n_prompt_computed};
    return u;
}

/* A job that ended before its first token: the error as a status. */
static void job_error(const srv_job *j, srv_error *e) {
    if (j->rc == VLM_ERR_CONTEXT) srv_fail(e, 400, "invalid_request_error", "context_length_exceeded", "%s", j->err);
    else if (j->rc == VLM_ERR_ARG || j->rc == VLM_ERR_FORMAT || j->rc == VLM_ERR_LIMIT)
        srv_fail(e, 400, "invalid_request_error", NULL, "%s", j->err);
    else if (j->rc == VLM_ERR_CANCELLED) srv_fail(e, 503, "server_error", NULL, "%s", j->err);
    else srv_fail(e, 500, "server_error", NULL, "%s", j->err);
}

/* Fills s->pend with the next events: blocks until the answer grows or ends. */
static void stream_fill(stream *s) {
    srv_pool *p = atomic_load(&s->sv->pool);
    const char *model = s->sv->cfg->model_id;
    s->pend.n = 0;
    s->off = 0;
    if (!s->role_sent) {
        srv_chunk_sse(&s->pend, s->id, s->created, model, 1, NULL, 0, NULL);
        s->role_sent = 1;
        return;
    }
    srv_job_wait(p, s->job, s->seen);
    vlm_buf t = {0};
    int done = srv_job_take(p, s->job, s->seen, &t);
    if (t.n) srv_chunk_sse(&s->pend, s->id, s->created, model, 0, t.p, t.n, NULL);
    s->seen += t.n;
    free(t.p);
    if (!done) return;
    const srv_job *j = s->job;
    if (j->rc == VLM_OK) {
        srv_chunk_sse(&s->pend, s->id, s->created, model, 0, NULL, 0, j->finish);
        srv_usage u = job_usage(j);
        if (j->req.include_usage) srv_usage_sse(&s->pend, s->id, s->created, model, &u);
    } else { /* after the first token the status is sent: the error goes as an event */
        srv_error e;
        job_error(j, &e);
        vlm_buf_str(&s->pend, "data: ");
        srv_error_json(&s->pend, &e);
        vlm_buf_str(&s->pend, "\n\n");
    }
    vlm_buf_str(&s->pend, "data: [DONE]\n\n");
    s->finished = 1;
}

static ssize_t stream_read(void *cls, uint64_t pos, char *buf, size_t max) {
    (void)pos;
    stream *s = (stream *)cls;
    while (s->off == s->pend.n) {
        if (s->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        stream_fill(s);
        if (s->pend.oom) return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    size_t n = s->pend.n - s->off < max ? s->pend.n - s->off : max;
    memcpy(buf, s->pend.p + s->off, n);
    s->off += n;
    return (ssize_t)n;
}

/* The response is gone (answer sent or client away): a generation still
 * running is cancelled when the job is released. */
static void stream_free(void *cls) {
    stream *s = (stream *)cls;
    srv_job_release(atomic_load(&s->sv->pool), s->job);
    free(s->pend.p);
    free(s);
}

static enum MHD_Result chat(srv *sv, struct MHD_Connection *c, conn *cx) {
    srv_pool *p = atomic_load(&sv->pool);
    srv_request r;
    srv_error e;
    srv_job *j = NULL;
    if (srv_parse_chat(cx->body.p ? cx->body.p : "", cx->body.n, &sv->parse, &r, &e) || srv_submit(p, &r, &j, &e))
        return reply_error(sv, c, &e);
    srv_job_wait(p, j, 0); /* the first token, or the end */
    vlm_buf t = {0};
    int done = srv_job_take(p, j, 0, &t);
    free(t.p);
    if (done && j->rc != VLM_OK && (j->rc != VLM_ERR_CANCELLED || j->text.n == 0)) {
        job_error(j, &e);
        srv_job_release(p, j);
        return reply_error(sv, c, &e);
    }
    if (j->req.stream) {
        stream *s = (stream *)calloc(1, sizeof *s);
        struct MHD_Response *resp = s ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 16 << 10, stream_read, s, stream_free) : NULL;
        if (!resp) { free(s); srv_job_release(p, j); return MHD_NO; }
        s->sv = sv;
        s->job = j;
        s->created = (long long)time(NULL);
        answer_id(s->id, sizeof s->id, j);
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result ok = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        count_status(sv, 200);
        return ok;
    }
    srv_job_wait(p, j, (size_t)-1);
    char id[40];
    answer_id(id, sizeof id, j);
    vlm_buf b = {0};
    srv_usage u = job_usage(j);
    srv_completion_json(&b, id, (long long)time(NULL), sv->cfg->model_id, j->text.p ? j->text.p : "", j->text.n,
                        j->rc == VLM_OK ? j->finish : "stop", &u);
    srv_job_release(p, j);
    return reply(sv, c, 200, "application/json", &b, NULL, NULL);
}

static enum MHD_Result models(srv *sv, struct MHD_Connection *c) {
    vlm_buf b = {0};
    char t[64];
    vlm_buf_str(&b, "{\"object\":\"list\",\"data\":[{\"id\":");
    vlm_json_quote(&b, sv->cfg->model_id, strlen(sv->cfg->model_id));
    snprintf(t, sizeof t, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"vlm\"}]}", (long long)time(NULL));
    vlm_buf_str(&b, t);
    return reply(sv, c, 200, "application/json", &b, NULL, NULL);
}

/* ------------------------------------------------------------------ routing */

static enum MHD_Result route(srv *sv, struct MHD_Connection *c, const char *url, const char *method, conn *cx) {
    int get = !strcmp(method, "GET"), post = !strcmp(method, "POST");
    srv_pool *p = atomic_load(&sv->pool);
    vlm_buf b = {0};
    if (!strcmp(url, "/health")) {
        if (!get) return fail(sv, c, 405, "invalid_request_error", NULL, "use GET");
        if (!p) return fail(sv, c, 503, "unavailable_error", NULL, "loading the model");
        vlm_buf_str(&b, "{\"status\":\"ok\"}");
        return reply(sv, c, 200, "application/json", &b, NULL, NULL);
    }
    if (!strcmp(url, "/metrics")) {
        if (!get) return fail(sv, c, 405, "invalid_request_error", NULL, "use GET");
        if (!p) return fail(sv, c, 503, "unavailable_error", NULL, "loading the model");
        srv_pool_metrics_text(p, &b);
        return reply(sv, c, 200, "text/plain; version=0.0.4", &b, NULL, NULL);
    }
    if (!strcmp(url, "/v1/models") || !strcmp(url, "/models"))
        return get ? models(sv, c) : fail(sv, c, 405, "invalid_request_error", NULL, "use GET");
    if (!strcmp(url, "/v1/chat/completions") || !strcmp(url, "/chat/completions")) {
        if (!post) return fail(sv, c, 405, "invalid_request_error", NULL, "use POST");
        if (cx->too_big) {
            char m[128];
            snprintf(m, sizeof m, "the body is over %lld bytes (vlm serve --max-body-mib)", (long long)sv->cfg->max_body);
            return fail(sv, c, 413, "invalid_request_error", "body_too_large", m);
        }
        if (!p) return fail(sv, c, 503, "unavailable_error", NULL, "loading the model");
        if (atomic_load(&sv->stopping)) return fail(sv, c, 503, "unavailable_error", NULL, "the server is shutting down");
        return chat(sv, c, cx);
    }
    return fail(sv, c, 404, "invalid_request_error", "not_found", "no such endpoint");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *data, size_t *data_size, void **ctx) {
    (void)version;
    srv *sv = (srv *)cls;
    conn *cx = (conn *)*ctx;
    if (!cx) { /* the headers: refuse early what needs no body */
        if (!(cx = (conn *)calloc(1, sizeof *cx))) return MHD_NO;
        *ctx = cx;
        atomic_fetch_add(&sv->active, 1);
        const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Content-Length");
        if (sv->cfg->api_key && strcmp(url, "/health") &&
            !key_ok(sv->cfg->api_key, MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization"))) {
            cx->replied = 1;
            return fail(sv, c, 401, "invalid_request_error", "invalid_api_key", "a valid API key is needed (Authorization: Bearer KEY)");
        }
        if (cl && strtoll(cl, NULL, 10) > sv->cfg->max_body) cx->too_big = 1;
        return MHD_YES;
    }
    if (*data_size) { /* a piece of the body */
        if (!cx->replied && !cx->too_big && (int64_t)(cx->body.n + *data_size) <= sv->cfg->max_body)
            vlm_buf_add(&cx->body, data, *data_size);
        else if (!cx->replied) { cx->too_big = 1; free(cx->body.p); memset(&cx->body, 0, sizeof cx->body); }
        *data_size = 0;
        return MHD_YES;
    }
    if (cx->replied) return MHD_YES;
    cx->replied = 1;
    if (cx->body.oom) return fail(sv, c, 500, "server_error", NULL, "out of memory");
    return route(sv, c, url, method, cx);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **ctx, enum MHD_RequestTerminationCode why) {
    (void)c;
    (void)why;
    srv *sv = (srv *)cls;
    conn *cx = (conn *)*ctx;
    if (!cx) return;
    free(cx->body.p);
    free(cx);
    *ctx = NULL;
    atomic_fetch_sub(&sv->active, 1);
}

/* ------------------------------------------------------------------ main */

static volatile sig_atomic_t srv_signalled;
static void on_signal(int sig) {
    (void)sig;
    srv_signalled++;
}

static struct MHD_Daemon *listen_on(srv *sv, const srv_config *cfg, int *port) {
    struct addrinfo hints, *ai = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", cfg->port);
    int gai = getaddrinfo(cfg->host, ps, &hints, &ai);
    if (gai) { fprintf(stderr, "vlm serve: host '%s': %s\n", cfg->host, gai_strerror(gai)); return NULL; }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ITC |
                     (ai->ai_family == AF_INET6 ? MHD_USE_IPv6 : 0) | (cfg->verbose ? MHD_USE_ERROR_LOG : 0);
    struct MHD_Daemon *d = MHD_start_daemon(flags, (uint16_t)cfg->port, NULL, NULL, on_request, sv,
                                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, sv,
                                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)(cfg->parallel + cfg->queue + 64),
                                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
                                            MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!d) { fprintf(stderr, "vlm serve: cannot listen on %s:%d (in use, or not this machine's address)\n", cfg->host, cfg->port); return NULL; }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? info->port : cfg->port;
    return d;
}

int srv_main(const srv_config *cfg) {
    srv sv;
    memset(&sv, 0, sizeof sv);
    sv.cfg = cfg;
    sv.parse.allow_local_files = cfg->allow_local_files;
    sv.parse.max_pixels = cfg->engine.limits ? cfg->engine.limits->image_pixels : 0;
    vlm_on_terminate(on_signal);
    int port = 0;
    struct MHD_Daemon *d = listen_on(&sv, cfg, &port);
    if (!d) return 1;
    /* listening first: /health says 503 until the model is in */
    fprintf(stderr, "vlm serve: listening on http://%s:%d\n", cfg->host, port);
    vlm_error err = {0};
    vlm_engine *e = NULL;
    srv_pool *pool = NULL;
    double t0 = vlm_time_s();
    if (vlm_engine_open(&e, cfg->model, &cfg->engine, &err) != VLM_OK || srv_pool_new(&pool, e, cfg, &err) != VLM_OK) {
        fprintf(stderr, "vlm serve: %s\n", err.msg);
        MHD_stop_daemon(d);
        vlm_engine_close(e);
        return 1;
    }
    atomic_store(&sv.pool, pool);
    fprintf(stderr, "vlm serve: model %s loaded in %.1f s; %d slots of %d tokens, %d more requests may wait\n",
            cfg->model_id, vlm_time_s() - t0, cfg->parallel, cfg->n_ctx, cfg->queue);
    while (!srv_signalled) vlm_sleep_s(0.05);
    /* stop: no new requests, the ones in flight answered (a second signal cuts them) */
    atomic_store(&sv.stopping, 1);
    MHD_quiesce_daemon(d);
    fprintf(stderr, "vlm serve: stopping after %d requests in flight\n", atomic_load(&sv.active));
    while (atomic_load(&sv.active) > 0 && srv_signalled < 2) vlm_sleep_s(0.02);
    MHD_stop_daemon(d);
    srv_pool_free(pool);
    vlm_engine_close(e);
    fprintf(stderr, "vlm serve: stopped\n");
    return 0;
}
