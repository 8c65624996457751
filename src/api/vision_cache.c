/* The vision-encoder cache (vision_cache.h). Each image is encoded alone:
 * the towers of every family treat the images of a call independently
 * (their attention never crosses images), so an image's rows do not depend
 * on its neighbours and can be kept and reused one by one. */
#include "api/vision_cache.h"

#include <stdlib.h>
#include <string.h>

/* One image's output: rows x (width[0] + ... + width[n_out-1]) floats,
 * each output's rows contiguous: embeds first, then the side outputs. */
typedef struct vc_rows {
    int64_t rows;
    int n_out;                  /* 1 + side outputs */
    int64_t width[1 + 8];
    float *data;
} vc_rows;

typedef struct vc_entry {
    uint64_t key;
    uint64_t used;              /* the tick of its last use */
    vc_rows r;
} vc_entry;

struct vlm_vcache {
    vlm_mutex *mu;
    vc_entry *e;
    int n, cap;
    size_t bytes, max_bytes;
    uint64_t tick;
    int64_t hits, misses;
};

static size_t vc_bytes(const vc_rows *r) {
    int64_t w = 0;
    for (int k = 0; k < r->n_out; k++) w += r->width[k];
    return sizeof(float) * (size_t)(r->rows * w);
}

vlm_vcache *vlm_vcache_new(size_t max_bytes) {
    vlm_vcache *v = (vlm_vcache *)calloc(1, sizeof *v);
    if (!v || !(v->mu = vlm_mutex_new())) { free(v); return NULL; }
    v->max_bytes = max_bytes;
    return v;
}

void vlm_vcache_free(vlm_vcache *v) {
    if (!v) return;
    for (int i = 0; i < v->n; i++) free(v->e[i].r.data);
    free(v->e);
    vlm_mutex_free(v->mu);
    free(v);
}

vlm_vcache_stats vlm_vcache_get_stats(vlm_vcache *v) {
    vlm_mutex_lock(v->mu);
    vlm_vcache_stats s = {v->hits, v->misses, v->n, v->bytes, v->max_bytes};
    vlm_mutex_unlock(v->mu);
    return s;
}

/* A copy of the rows under key, or 0 rows when absent. */
static int vc_lookup(vlm_vcache *v, uint64_t key, vc_rows *out) {
    int found = 0;
    vlm_mutex_lock(v->mu);
    for (int i = 0; i < v->n && !found; i++) {
        if (v->e[i].key != key) continue;
        size_t b = vc_bytes(&v->e[i].r);
        *out = v->e[i].r;
        out->data = (float *)malloc(b ? b : 1);
        if (out->data) {
            memcpy(out->data, v->e[i].r.data, b);
            v->e[i].used = ++v->tick;
            found = 1;
        }
    }
    if (found) v->hits++;
    else v->misses++;
    vlm_mutex_unlock(v->mu);
    return found;
}

/* Keeps a copy of r under key, dropping the least recently used to make room. */
static void vc_insert(vlm_vcache *v, uint64_t key, const vc_rows *r) {
    size_t b = vc_bytes(r);
    if (b > v->max_bytes) return;
    float *copy = (float *)malloc(b ? b : 1);
    if (!copy) return;
    memcpy(copy, r->data, b);
    vlm_mutex_lock(v->mu);
    for (int i = 0; i < v->n; i++)
        if (v->e[i].key == key) { free(copy); vlm_mutex_unlock(v->mu); return; } /* another session was first */
    while (v->n > 0 && v->bytes + b > v->max_bytes) {
        int old = 0;
        for (int i = 1; i < v->n; i++) if (v->e[i].used < v->e[old].used) old = i;
        v->bytes -= vc_bytes(&v->e[old].r);
        free(v->e[old].r.data);
        v->e[old] = v->e[--v->n];
    }
    if (v->n == v->cap) {
        int nc = v->cap ? 2 * v->cap : 16;
        vc_entry *ne = (vc_entry *)realloc(v->e, sizeof(vc_entry) * (size_t)nc);
        if (!ne) { free(copy); vlm_mutex_unlock(v->mu); return; }
        v->e = ne;
        v->cap = nc;
    }
    vc_entry *e = &v->e[v->n++];
    e->key = key;
    e->used = ++v->tick;
    e->r = *r;
    e->r.data = copy;
    v->bytes += b;
    vlm_mutex_unlock(v->mu);
}

/* Runs one image through the processor and the tower; its rows to host memory. */
static vlm_status vc_encode_one(vlm_model *m, vlm_compute *c, const vlm_image_processor *proc, const vlm_image *img,
                                vc_rows *r, vlm_error *err) {
    vlm_arena_mark mark = vlm_arena_get_mark(&c->arena); /* the tower's activations go when its rows are out */
    vlm_features f = {0};
    vlm_vision_out vis = {0};
    vlm_status st = vlm_image_preprocess(proc, img, 1, &f, err);
    if (st == VLM_OK && m->arch->encode(m, c, &f, &vis) != VLM_OK)
        st = vlm_error_set(err, c->err.code ? c->err.code : VLM_ERR_ARG, "%s", c->err.msg);
    if (st == VLM_OK && (!vis.embeds || vis.embeds->ndim != 2 || vis.n_extra > 8))
        st = vlm_error_set(err, VLM_ERR_ARG, "the vision tower gave no rows");
    memset(r, 0, sizeof *r);
    if (st == VLM_OK) {
        const vlm_tensor *outs[1 + 8] = {vis.embeds};
        for (int k = 0; k < vis.n_extra; k++) outs[1 + k] = vis.extra[k];
        r->rows = vis.embeds->shape[0];
        r->n_out = 1 + vis.n_extra;
        for (int k = 0; k < r->n_out && st == VLM_OK; k++) {
            if (outs[k]->ndim != 2 || outs[k]->shape[0] != r->rows)
                st = vlm_error_set(err, VLM_ERR_ARG, "a side output of the vision tower is not one row per image token");
            else r->width[k] = outs[k]->shape[1];
        }
        size_t b = vc_bytes(r);
        if (st == VLM_OK && !(r->data = (float *)malloc(b ? b : 1))) st = vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        float *dst = r->data;
        for (int k = 0; k < r->n_out && st == VLM_OK; k++) {
            if (vlm_to_host_f32(c, outs[k], dst) != VLM_OK) st = vlm_error_set(err, c->err.code, "%s", c->err.msg);
            dst += r->rows * r->width[k];
        }
    }
    vlm_image_features_free(&f);
    vlm_arena_release(&c->arena, mark);
    if (st != VLM_OK) { free(r->data); r->data = NULL; }
    return st;
}

/* The images' rows stacked, one tensor per output, as one call's vision output. */
static vlm_status vc_stack(vlm_compute *c, const vc_rows *r, int n, vlm_vision_out *out, vlm_error *err) {
    int64_t rows = 0;
    for (int i = 0; i < n; i++) {
        if (r[i].n_out != r[0].n_out || memcmp(r[i].width, r[0].width, sizeof r[0].width))
            return vlm_error_set(err, VLM_ERR_ARG, "the images' vision outputs differ in shape");
        rows += r[i].rows;
    }
    memset(out, 0, sizeof *out);
    for (int k = 0; k < r[0].n_out; k++) {
        int64_t w = r[0].width[k], off = 0;
        float *host = (float *)malloc(sizeof(float) * (size_t)(rows * w) + 1);
        if (!host) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        for (int i = 0; i < n; i++) {
            int64_t before = 0; /* this output's place in the image's data */
            for (int j = 0; j < k; j++) before += r[i].rows * r[i].width[j];
            memcpy(host + off * w, r[i].data + before, sizeof(float) * (size_t)(r[i].rows * w));
            off += r[i].rows;
        }
        vlm_tensor *t = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){rows, w}, host);
        free(host);
        if (!t) return vlm_error_set(err, c->err.code ? c->err.code : VLM_ERR_OOM, "%s", c->err.msg);
        if (k == 0) out->embeds = t;
        else out->extra[out->n_extra++] = t;
    }
    out->n_image_tokens = rows;
    return VLM_OK;
}

vlm_status vlm_vcache_encode(vlm_vcache *v, vlm_model *m, vlm_compute *c, const vlm_image_processor *proc,
                             const vlm_image *images, const uint64_t *keys, int n, vlm_vision_out *out,
                             int *n_encoded, vlm_error *err) {
    vc_rows *r = (vc_rows *)calloc((size_t)n + 1, sizeof *r);
    if (!r) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    vlm_status st = VLM_OK;
    *n_encoded = 0;
    for (int i = 0; i < n && st == VLM_OK; i++) {
        if (v && v->max_bytes && vc_lookup(v, keys[i], &r[i])) continue;
        st = vc_encode_one(m, c, proc, &images[i], &r[i], err);
        if (st != VLM_OK) break;
        ++*n_encoded;
        if (v && v->max_bytes) vc_insert(v, keys[i], &r[i]);
    }
    if (st == VLM_OK) st = vc_stack(c, r, n, out, err);
    for (int i = 0; i < n; i++) free(r[i].data);
    free(r);
    return st;
}
