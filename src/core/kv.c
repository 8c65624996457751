/* The KV cache: one ring of slots per layer, shared layers, rewind. */
#include "core/vlm_core.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ KV cache */

vlm_status vlm_kv_init(vlm_kv_cache *kv, vlm_backend *be, vlm_dtype dtype, int n_layers, const int *cap,
                       const int *n_kv_heads, const int *head_dim, const int *share, vlm_error *err) {
    VLM_ERROR_BEGIN(err);
    memset(kv, 0, sizeof *kv);
    if (dtype != VLM_F32 && dtype != VLM_F16 && dtype != VLM_BF16)
        return vlm_error_set(err, VLM_ERR_ARG, "KV cache dtype must be f32, f16 or bf16");
    kv->be = be;
    kv->n_layers = n_layers;
    kv->layers = (vlm_kv_layer *)calloc((size_t)n_layers, sizeof *kv->layers);
    if (!kv->layers) return vlm_error_set(err, VLM_ERR_OOM, "out of memory for the KV cache");
    size_t total = 0, es = vlm_dtype_size(dtype);
    for (int l = 0; l < n_layers; l++) {
        if (share && share[l] >= 0) {
            if (share[l] >= l) return vlm_error_set(err, VLM_ERR_ARG, "layer %d shares a later layer's cache", l);
            continue;
        }
        if (cap[l] <= 0) return vlm_error_set(err, VLM_ERR_ARG, "KV cache capacity %d for layer %d", cap[l], l);
        total += 2 * (size_t)cap[l] * n_kv_heads[l] * head_dim[l] * es;
    }
    kv->storage = be->alloc(be, total ? total : 1);
    if (!kv->storage) { vlm_kv_free(kv); return vlm_error_set(err, VLM_ERR_OOM, "out of memory for a %zu-byte KV cache", total); }
    char *p = (char *)kv->storage;
    for (int l = 0; l < n_layers; l++) {
        vlm_kv_layer *L = &kv->layers[l];
        if (share && share[l] >= 0) { *L = kv->layers[share[l]]; L->owner = 0; continue; }
        int64_t shape[3] = {cap[l], n_kv_heads[l], head_dim[l]};
        L->k = (vlm_tensor *)malloc(sizeof(vlm_tensor));
        L->v = (vlm_tensor *)malloc(sizeof(vlm_tensor));
        L->slot_pos = (int32_t *)malloc(sizeof(int32_t) * (size_t)cap[l]);
        if (!L->k || !L->v || !L->slot_pos) {
            free(L->k); free(L->v); free(L->slot_pos);
            L->k = L->v = NULL; L->slot_pos = NULL;
            vlm_kv_free(kv);
            return vlm_error_set(err, VLM_ERR_OOM, "out of memory for the KV cache");
        }
        size_t bytes = (size_t)cap[l] * n_kv_heads[l] * head_dim[l] * es;
        *L->k = vlm_tensor_make(dtype, 3, shape, p);
        *L->v = vlm_tensor_make(dtype, 3, shape, p + bytes);
        p += 2 * bytes;
        L->cap = cap[l];
        L->owner = 1;
    }
    vlm_kv_clear(kv);
    return VLM_OK;
}

void vlm_kv_free(vlm_kv_cache *kv) {
    if (kv->layers)
        for (int l = 0; l < kv->n_layers; l++)
            if (kv->layers[l].owner) { free(kv->layers[l].k); free(kv->layers[l].v); free(kv->layers[l].slot_pos); }
    free(kv->layers);
    if (kv->storage) kv->be->free(kv->be, kv->storage);
    memset(kv, 0, sizeof *kv);
}

void vlm_kv_clear(vlm_kv_cache *kv) {
    for (int l = 0; l < kv->n_layers; l++)
        if (kv->layers[l].owner)
            for (int s = 0; s < kv->layers[l].cap; s++) kv->layers[l].slot_pos[s] = -1;
}

void vlm_kv_truncate(vlm_kv_cache *kv, int pos) {
    for (int l = 0; l < kv->n_layers; l++)
        if (kv->layers[l].owner)
            for (int s = 0; s < kv->layers[l].cap; s++)
                if (kv->layers[l].slot_pos[s] >= pos) kv->layers[l].slot_pos[s] = -1;
}

vlm_status vlm_kv_write(vlm_compute *c, vlm_kv_layer *l, vlm_tensor *k_new, vlm_tensor *v_new, const int32_t *pos, int n) {
    if (c->failed) return c->err.code;
    if (n > l->cap) {
        c->failed = 1;
        return vlm_error_set(&c->err, VLM_ERR_CONTEXT, "%d tokens in one step exceed the cache ring of %d", n, l->cap);
    }
    vlm_tensor *slots = vlm_new_1d(c, VLM_I32, n);
    if (!slots) return c->err.code;
    int32_t *host = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)(n ? n : 1));
    if (!host) { c->failed = 1; return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); }
    for (int i = 0; i < n; i++) host[i] = pos[i] % l->cap;
    c->be->upload(c->be, slots->data, host, sizeof(int32_t) * (size_t)n);
    vlm_status s = vlm_set_rows(c, l->k, k_new, slots);
    if (s == VLM_OK) s = vlm_set_rows(c, l->v, v_new, slots);
    if (s != VLM_OK) return s;
    for (int i = 0; i < n; i++) l->slot_pos[host[i]] = pos[i];
    return VLM_OK;
}
