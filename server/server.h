/* server/ — `vlm serve`: an OpenAI-compatible HTTP server over the public
 * API. One engine, --parallel slots (a session each, on its own thread), a
 * bounded queue in front of them.
 *
 *   openai.c   Chat Completions requests in, responses and chunks out (no HTTP)
 *   slots.c    the slots, the queue, a request's life on a slot
 *   metrics.c  counters and histograms, Prometheus text
 *   http.c     libmicrohttpd: routes, auth, body limit, Server-Sent Events
 *
 * Owns: the server. May call: the public API (vlm.h). Built only where
 * libmicrohttpd is found (VLM_HAVE_SERVER); the CLI reaches it through
 * srv_main alone.
 */
#ifndef VLM_SERVER_H
#define VLM_SERVER_H
#include <stdatomic.h>

#include "vlm.h"

typedef struct srv_config {
    const char *model, *host, *api_key, *model_id;
    int port, parallel, queue, n_ctx, kv_f16, allow_local_files, verbose;
    int64_t max_body;             /* bytes */
    vlm_engine_params engine;
} srv_config;

/* Runs the server until SIGINT/SIGTERM; the process exit code. */
int srv_main(const srv_config *cfg);

/* ------------------------------------------------------------------ openai.c */

/* An error as an HTTP status and OpenAI's error object. */
typedef struct srv_error {
    int status;                   /* 400, 401, 404, 413, 500, 503 */
    const char *type;             /* "invalid_request_error", ... */
    const char *code;             /* NULL or a short name: "invalid_image", "context_length_exceeded" */
    char msg[512];
} srv_error;
int srv_fail(srv_error *e, int status, const char *type, const char *code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

typedef struct srv_part {
    char *text;                   /* NULL for an image */
    vlm_image img;
} srv_part;

typedef struct srv_msg {
    const char *role;             /* "system", "user" or "assistant" (static strings) */
    srv_part *parts;
    int n_parts;
    uint64_t hash;                /* of the role and the parts: which slot saw it before */
} srv_msg;

typedef struct srv_request {
    srv_msg *msgs;
    int n_msgs;
    vlm_generate_params gen;      /* max_tokens 0: until the context is full; stop: set where it runs */
    char *stop[16];               /* gen.n_stop of them */
    int stream, include_usage;
} srv_request;

typedef struct srv_parse_opts {
    int allow_local_files;
    int64_t max_pixels;           /* per image; 0: the library's default */
} srv_parse_opts;

/* Reads a Chat Completions request body; 0, or -1 with e filled (a 4xx). */
int srv_parse_chat(const char *body, size_t len, const srv_parse_opts *o, srv_request *r, srv_error *e);
void srv_request_free(srv_request *r);
/* Decodes base64 (RFC 4648, padding optional, no other characters); -1 if malformed. */
int srv_base64_decode(const char *s, size_t n, unsigned char **out, size_t *out_len);

/* Response bodies, appended to b. */
void srv_error_json(vlm_buf *b, const srv_error *e);
typedef struct srv_usage {
    int prompt, completion, cached;
} srv_usage;
void srv_completion_json(vlm_buf *b, const char *id, long long created, const char *model, const char *text,
                         size_t len, const char *finish, const srv_usage *u);
/* One Server-Sent Event "data: {chunk}\n\n": role (first), content, finish (last, may be NULL). */
void srv_chunk_sse(vlm_buf *b, const char *id, long long created, const char *model, int role, const char *text,
                   size_t len, const char *finish);
void srv_usage_sse(vlm_buf *b, const char *id, long long created, const char *model, const srv_usage *u);

/* ------------------------------------------------------------------ metrics.c */

#define SRV_HIST_BUCKETS 12
typedef struct srv_hist {
    double sum;
    long long count, le[SRV_HIST_BUCKETS]; /* cumulative at write time */
} srv_hist;

#define SRV_STATUSES 16
typedef struct srv_metrics {
    long long by_status[SRV_STATUSES][2]; /* {status, count} for the statuses seen */
    int n_status;
    long long prompt_tokens, prompt_tokens_cached, prefix_hits, generated_tokens, images, images_cached, cancelled;
    srv_hist ttft, tpot;
} srv_metrics;

void srv_metrics_status(srv_metrics *m, int status);
void srv_hist_add(srv_hist *h, double seconds);
/* The Prometheus text exposition of m plus the gauges given. */
void srv_metrics_text(vlm_buf *b, const srv_metrics *m, int queue_depth, int slots_busy, int slots_total);

/* ------------------------------------------------------------------ slots.c */

typedef struct srv_pool srv_pool;

/* A request's life, shared by its connection and its slot (refs counts
 * both); fields below `mu` are guarded by the pool's lock. */
typedef struct srv_job {
    srv_request req;
    srv_pool *pool;
    int refs;
    vlm_cond *cv;                 /* signalled when text grows or the job ends */
    vlm_buf text;                 /* the answer so far */
    int started, done;            /* first text or the end; the end */
    vlm_status rc;
    char err[512];
    vlm_generate_stats st;
    const char *finish;           /* "stop" or "length" once done with rc VLM_OK */
    atomic_int cancel;            /* the connection went away */
    double t_submit, t_first;
} srv_job;

vlm_status srv_pool_new(srv_pool **out, vlm_engine *e, const srv_config *cfg, vlm_error *err);
/* Stops the slots after their current jobs and frees the pool. */
void srv_pool_free(srv_pool *p);
/* Takes the request (r is emptied). 0: queued (*out holds a reference);
 * -1: refused with e filled (503 when the queue is full). */
int srv_submit(srv_pool *p, srv_request *r, srv_job **out, srv_error *e);
/* Waits until the job has text beyond `seen` bytes or has ended. */
void srv_job_wait(srv_pool *p, srv_job *j, size_t seen);
/* Copies the text from `from` into b and says whether the job has ended. */
int srv_job_take(srv_pool *p, srv_job *j, size_t from, vlm_buf *b);
void srv_job_release(srv_pool *p, srv_job *j);
/* The metrics under the pool's lock, with its gauges. */
void srv_pool_metrics_text(srv_pool *p, vlm_buf *b);
void srv_pool_status(srv_pool *p, int status);
/* Requests waiting or running. */
int srv_pool_in_flight(srv_pool *p);

#endif
