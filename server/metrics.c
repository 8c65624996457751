/* The server's counters and latency histograms, written in Prometheus' text
 * exposition format (version 0.0.4) for GET /metrics. */
#include <stdio.h>
#include <string.h>

#include "server.h"

/* Upper bounds in seconds, from a fast token to a slow first token of a large image. */
static const double hist_le[SRV_HIST_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

void srv_hist_add(srv_hist *h, double s) {
    h->sum += s;
    h->count++;
    for (int i = 0; i < SRV_HIST_BUCKETS; i++) h->le[i] += s <= hist_le[i];
}

void srv_metrics_status(srv_metrics *m, int status) {
    for (int i = 0; i < m->n_status; i++)
        if (m->by_status[i][0] == status) { m->by_status[i][1]++; return; }
    if (m->n_status == SRV_STATUSES) return; /* the server answers with fewer distinct statuses */
    m->by_status[m->n_status][0] = status;
    m->by_status[m->n_status++][1] = 1;
}

static void line(vlm_buf *b, const char *fmt, const char *name, double v) {
    char t[256];
    snprintf(t, sizeof t, fmt, name, v);
    vlm_buf_str(b, t);
}

static void metric(vlm_buf *b, const char *name, const char *type, const char *help, double v) {
    char t[512];
    snprintf(t, sizeof t, "# HELP %s %s\n# TYPE %s %s\n%s %.17g\n", name, help, name, type, name, v);
    vlm_buf_str(b, t);
}

static void hist(vlm_buf *b, const char *name, const char *help, const srv_hist *h) {
    char t[512];
    snprintf(t, sizeof t, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    vlm_buf_str(b, t);
    for (int i = 0; i < SRV_HIST_BUCKETS; i++) {
        snprintf(t, sizeof t, "%s_bucket{le=\"%g\"} %lld\n", name, hist_le[i], h->le[i]);
        vlm_buf_str(b, t);
    }
    snprintf(t, sizeof t, "%s_bucket{le=\"+Inf\"} %lld\n", name, h->count);
    vlm_buf_str(b, t);
    line(b, "%s_sum %.17g\n", name, h->sum);
    line(b, "%s_count %.17g\n", name, (double)h->count);
}

void srv_metrics_text(vlm_buf *b, const srv_metrics *m, int queue_depth, int slots_busy, int slots_total) {
    char t[256];
    vlm_buf_str(b, "# HELP vlm_requests_total HTTP requests answered, by status code.\n# TYPE vlm_requests_total counter\n");
    for (int i = 0; i < m->n_status; i++) {
        snprintf(t, sizeof t, "vlm_requests_total{status=\"%lld\"} %lld\n", m->by_status[i][0], m->by_status[i][1]);
        vlm_buf_str(b, t);
    }
    metric(b, "vlm_prompt_tokens_total", "counter", "Prompt tokens of finished chat completions.", (double)m->prompt_tokens);
    metric(b, "vlm_prompt_tokens_cached_total", "counter", "Prompt tokens taken from a slot's cache (prefix reuse).",
           (double)m->prompt_tokens_cached);
    metric(b, "vlm_prefix_cache_hits_total", "counter", "Chat completions that reused a cached prompt prefix.",
           (double)m->prefix_hits);
    metric(b, "vlm_generated_tokens_total", "counter", "Tokens generated.", (double)m->generated_tokens);
    metric(b, "vlm_images_encoded_total", "counter", "Images run through the vision encoder.", (double)m->images);
    metric(b, "vlm_vision_cache_hits_total", "counter", "Images whose encoder output came from the vision cache.",
           (double)m->images_cached);
    metric(b, "vlm_requests_cancelled_total", "counter", "Generations stopped because the client went away.",
           (double)m->cancelled);
    hist(b, "vlm_time_to_first_token_seconds", "From a request's arrival to its first token.", &m->ttft);
    hist(b, "vlm_time_per_output_token_seconds", "Mean time between tokens, one sample per request.", &m->tpot);
    metric(b, "vlm_queue_depth", "gauge", "Requests waiting for a slot.", queue_depth);
    metric(b, "vlm_slots_busy", "gauge", "Slots generating now.", slots_busy);
    metric(b, "vlm_slots_total", "gauge", "Slots (vlm serve --parallel).", slots_total);
}
