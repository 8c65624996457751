/* The slots: --parallel sessions over one engine, each on its own thread,
 * and a bounded queue in front of them. A request goes to the idle slot
 * whose last conversation shares the most leading messages with it (its
 * cache then holds that prefix: vlm_session_restart keeps it), else to the
 * one idle longest; with none idle it waits in the queue, and a full queue
 * refuses it (503). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

typedef struct srv_slot {
    srv_pool *pool;
    vlm_session *s;
    vlm_thread *thread;
    vlm_cond *cv;                 /* a job was given or the pool stops */
    srv_job *job;                 /* the job it runs, NULL when idle */
    uint64_t *hist;               /* message hashes of its last conversation, answer included */
    int n_hist;
    double idle_since;
} srv_slot;

struct srv_pool {
    vlm_engine *e;
    int n_ctx;
    vlm_mutex *mu;
    srv_slot *slots;
    int cap_slots, n_slots, busy; /* slots made, slots running, slots with a job */
    srv_job **queue;              /* a ring of cap jobs */
    int q_head, q_n, q_cap;
    int stopping;
    srv_metrics m;
};

/* ------------------------------------------------------------------ jobs */

static void job_free(srv_job *j) {
    srv_request_free(&j->req);
    vlm_cond_free(j->cv);
    free(j->text.p);
    free(j);
}

void srv_job_release(srv_pool *p, srv_job *j) {
    vlm_mutex_lock(p->mu);
    int last = --j->refs == 0;
    if (!j->done) atomic_store(&j->cancel, 1); /* the connection is gone: stop generating */
    vlm_mutex_unlock(p->mu);
    if (last) job_free(j);
}

void srv_job_wait(srv_pool *p, srv_job *j, size_t seen) {
    vlm_mutex_lock(p->mu);
    while (!j->done && j->text.n <= seen) vlm_cond_wait(j->cv, p->mu);
    vlm_mutex_unlock(p->mu);
}

int srv_job_take(srv_pool *p, srv_job *j, size_t from, vlm_buf *b) {
    vlm_mutex_lock(p->mu);
    if (j->text.n > from) vlm_buf_add(b, j->text.p + from, j->text.n - from);
    int done = j->done;
    vlm_mutex_unlock(p->mu);
    return done;
}

/* The piece callback: the text grows under the lock, the connection wakes. */
static int job_piece(void *user, const char *text, size_t len) {
    srv_job *j = (srv_job *)user;
    vlm_mutex_lock(j->pool->mu);
    if (!j->started) j->t_first = vlm_time_s();
    j->started = 1;
    vlm_buf_add(&j->text, text, len);
    vlm_cond_broadcast(j->cv);
    vlm_mutex_unlock(j->pool->mu);
    return 0;
}

static int job_cancelled(void *user) { return atomic_load(&((srv_job *)user)->cancel); }

/* The request's conversation into the slot's session, then its answer. */
static void job_run(srv_slot *sl, srv_job *j) {
    vlm_session *s = sl->s;
    vlm_error err = {0};
    vlm_status rc = VLM_OK;
    vlm_session_restart(s);
    for (int i = 0; rc == VLM_OK && i < j->req.n_msgs; i++) {
        const srv_msg *m = &j->req.msgs[i];
        rc = vlm_session_begin_message(s, m->role, &err);
        for (int k = 0; rc == VLM_OK && k < m->n_parts; k++) {
            const srv_part *pt = &m->parts[k];
            rc = pt->text ? vlm_session_add_text(s, pt->text, &err)
                          : vlm_session_add_image_rgb(s, pt->img.rgb, pt->img.width, pt->img.height, pt->img.stride, &err);
        }
    }
    vlm_generate_params gp = j->req.gen;
    if (gp.max_tokens <= 0) gp.max_tokens = sl->pool->n_ctx; /* until the context is full */
    gp.abort = job_cancelled;
    gp.abort_user = j;
    gp.stop = (const char *const *)j->req.stop; /* the request moved since it was read */
    vlm_generate_stats st = {0};
    if (rc == VLM_OK) rc = vlm_session_generate(s, &gp, job_piece, j, &st, &err);
    const char *finish = st.stop == VLM_STOP_MAX_TOKENS ? "length" : "stop";
    /* an answer that fills the context ends as OpenAI's "length" */
    if (rc == VLM_ERR_CONTEXT && st.n_generated > 0) { rc = VLM_OK; finish = "length"; }
    vlm_mutex_lock(sl->pool->mu);
    j->rc = rc;
    snprintf(j->err, sizeof j->err, "%s", err.msg);
    j->st = st;
    j->finish = finish;
    j->done = j->started = 1;
    vlm_cond_broadcast(j->cv);
    vlm_mutex_unlock(sl->pool->mu);
}

/* Under the lock: a finished job's figures into the metrics. */
static void job_account(srv_pool *p, const srv_job *j) {
    srv_metrics *m = &p->m;
    if (j->rc == VLM_ERR_CANCELLED) m->cancelled++;
    if (j->rc != VLM_OK && j->rc != VLM_ERR_CANCELLED) return;
    int cached = j->st.n_prompt - j->st.n_prompt_computed;
    m->prompt_tokens += j->st.n_prompt;
    m->prompt_tokens_cached += cached;
    m->prefix_hits += cached > 0;
    m->generated_tokens += j->st.n_generated;
    m->images += j->st.n_images_encoded;
    m->images_cached += j->st.n_images_cached;
    if (j->st.n_generated > 0) srv_hist_add(&m->ttft, j->t_first - j->t_submit);
    if (j->st.n_generated > 1) srv_hist_add(&m->tpot, j->st.decode_s / (j->st.n_generated - 1));
}

/* ------------------------------------------------------------------ slots */

/* Under the lock: what the slot's cache will hold after this job, by message. */
static void slot_remember(srv_slot *sl, const srv_job *j) {
    uint64_t *h = (uint64_t *)realloc(sl->hist, sizeof(uint64_t) * (size_t)(j->req.n_msgs + 1));
    if (!h) { sl->n_hist = 0; return; }
    sl->hist = h;
    for (int i = 0; i < j->req.n_msgs; i++) h[i] = j->req.msgs[i].hash;
    sl->n_hist = j->req.n_msgs;
    if (j->rc == VLM_OK) { /* the answer, as a client sends it back next turn */
        uint64_t a = vlm_hash64("assistant", 9, 0);
        h[sl->n_hist++] = j->text.n ? vlm_hash64(j->text.p, j->text.n, a + 1) : a;
    }
}

static void *slot_main(void *arg) {
    srv_slot *sl = (srv_slot *)arg;
    srv_pool *p = sl->pool;
    vlm_mutex_lock(p->mu);
    for (;;) {
        while (!sl->job && !p->stopping) vlm_cond_wait(sl->cv, p->mu);
        srv_job *j = sl->job;
        if (!j) break;
        vlm_mutex_unlock(p->mu);
        job_run(sl, j);
        vlm_mutex_lock(p->mu);
        job_account(p, j);
        slot_remember(sl, j);
        sl->idle_since = vlm_time_s();
        int last = --j->refs == 0;
        if (p->q_n > 0) { /* the next in line */
            sl->job = p->queue[p->q_head];
            p->q_head = (p->q_head + 1) % p->q_cap;
            p->q_n--;
        } else {
            sl->job = NULL;
            p->busy--;
        }
        if (last) { vlm_mutex_unlock(p->mu); job_free(j); vlm_mutex_lock(p->mu); }
    }
    vlm_mutex_unlock(p->mu);
    return NULL;
}

/* Under the lock: the idle slot for j, or NULL when all are busy. */
static srv_slot *slot_pick(srv_pool *p, const srv_job *j) {
    srv_slot *best = NULL;
    int best_common = -1;
    for (int i = 0; i < p->n_slots; i++) {
        srv_slot *sl = &p->slots[i];
        if (sl->job) continue;
        int c = 0;
        while (c < sl->n_hist && c < j->req.n_msgs && sl->hist[c] == j->req.msgs[c].hash) c++;
        if (c > best_common || (c == best_common && sl->idle_since < best->idle_since)) { best = sl; best_common = c; }
    }
    return best;
}

int srv_submit(srv_pool *p, srv_request *r, srv_job **out, srv_error *e) {
    *out = NULL;
    srv_job *j = (srv_job *)calloc(1, sizeof *j);
    if (!j || !(j->cv = vlm_cond_new())) {
        free(j);
        return srv_fail(e, 500, "server_error", NULL, "out of memory");
    }
    j->req = *r;
    memset(r, 0, sizeof *r);
    j->pool = p;
    j->refs = 2; /* the connection's and the slot's */
    j->t_submit = vlm_time_s();
    vlm_mutex_lock(p->mu);
    srv_slot *sl = p->stopping ? NULL : slot_pick(p, j);
    if (sl) {
        sl->job = j;
        p->busy++;
        vlm_cond_signal(sl->cv);
    } else if (!p->stopping && p->q_n < p->q_cap) {
        p->queue[(p->q_head + p->q_n++) % p->q_cap] = j;
    } else {
        vlm_mutex_unlock(p->mu);
        job_free(j);
        return srv_fail(e, 503, "server_error", "server_busy",
                        p->stopping ? "the server is shutting down" : "all %d slots are busy and %d requests wait: try again",
                        p->n_slots, p->q_cap);
    }
    vlm_mutex_unlock(p->mu);
    *out = j;
    return 0;
}

/* ------------------------------------------------------------------ pool */

vlm_status srv_pool_new(srv_pool **out, vlm_engine *e, const srv_config *cfg, vlm_error *err) {
    *out = NULL;
    srv_pool *p = (srv_pool *)calloc(1, sizeof *p);
    if (!p) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    p->e = e;
    p->n_ctx = cfg->n_ctx;
    p->q_cap = cfg->queue;
    p->mu = vlm_mutex_new();
    p->slots = (srv_slot *)calloc((size_t)cfg->parallel, sizeof(srv_slot));
    p->cap_slots = p->slots ? cfg->parallel : 0;
    p->queue = (srv_job **)calloc((size_t)(cfg->queue > 0 ? cfg->queue : 1), sizeof(srv_job *));
    if (!p->mu || !p->slots || !p->queue) { srv_pool_free(p); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    vlm_session_params sp = {.n_ctx = cfg->n_ctx, .kv_dtype = cfg->kv_f16 ? VLM_F16 : VLM_F32};
    for (int i = 0; i < cfg->parallel; i++) {
        srv_slot *sl = &p->slots[i];
        sl->pool = p;
        if (vlm_session_new(e, &sp, &sl->s, err) != VLM_OK) { srv_pool_free(p); return err->code; }
        if (!(sl->cv = vlm_cond_new()) || !(sl->thread = vlm_thread_start(slot_main, sl))) {
            srv_pool_free(p);
            return vlm_error_set(err, VLM_ERR_OOM, "cannot start slot %d", i);
        }
        p->n_slots++;
    }
    *out = p;
    return VLM_OK;
}

void srv_pool_free(srv_pool *p) {
    if (!p) return;
    if (p->mu) {
        vlm_mutex_lock(p->mu);
        p->stopping = 1;
        for (int i = 0; i < p->n_slots; i++) vlm_cond_signal(p->slots[i].cv);
        for (; p->q_n > 0; p->q_n--) { /* never run: their connections hear "cancelled" */
            srv_job *j = p->queue[p->q_head];
            p->q_head = (p->q_head + 1) % p->q_cap;
            j->rc = VLM_ERR_CANCELLED;
            snprintf(j->err, sizeof j->err, "the server is shutting down");
            j->done = j->started = 1;
            vlm_cond_broadcast(j->cv);
            if (--j->refs == 0) job_free(j);
        }
        vlm_mutex_unlock(p->mu);
    }
    for (int i = 0; p->slots && i < p->cap_slots; i++) {
        srv_slot *sl = &p->slots[i];
        if (sl->thread) vlm_thread_join(sl->thread);
        vlm_session_free(sl->s);
        vlm_cond_free(sl->cv);
        free(sl->hist);
    }
    free(p->slots);
    free(p->queue);
    vlm_mutex_free(p->mu);
    free(p);
}

void srv_pool_metrics_text(srv_pool *p, vlm_buf *b) {
    vlm_mutex_lock(p->mu);
    srv_metrics m = p->m;
    int q = p->q_n, busy = p->busy;
    vlm_mutex_unlock(p->mu);
    srv_metrics_text(b, &m, q, busy, p->n_slots);
}

void srv_pool_status(srv_pool *p, int status) {
    vlm_mutex_lock(p->mu);
    srv_metrics_status(&p->m, status);
    vlm_mutex_unlock(p->mu);
}

int srv_pool_in_flight(srv_pool *p) {
    vlm_mutex_lock(p->mu);
    int n = p->busy + p->q_n;
    vlm_mutex_unlock(p->mu);
    return n;
}
