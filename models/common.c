/* Shared model blocks; see common.h. */
#include "common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int vlm_loader_prefix(vlm_loader *ld, const char *const *prefixes, const char *probe) {
    char name[512];
    if (ld->m->random_weights) { ld->prefix = prefixes[0]; return 1; }
    for (; *prefixes; prefixes++) {
        snprintf(name, sizeof name, "%s%s", *prefixes, probe);
        if (vlm_st_find(&ld->m->weights, name)) { ld->prefix = *prefixes; return 1; }
    }
    return 0;
}

static void common_name(vlm_loader *ld, char *name, size_t cap, const char *fmt, va_list ap) {
    size_t k = (size_t)snprintf(name, cap, "%s", ld->prefix ? ld->prefix : "");
    vsnprintf(name + k, cap - k, fmt, ap);
}

vlm_tensor *vlm_ld(vlm_loader *ld, int ndim, const int64_t *shape, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    common_name(ld, name, sizeof name, fmt, ap);
    va_end(ap);
    return vlm_weight(ld->m, name, ndim, shape, ld->err);
}

vlm_tensor *vlm_ld_linear(vlm_loader *ld, int64_t out, int64_t in, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    common_name(ld, name, sizeof name, fmt, ap);
    va_end(ap);
    return vlm_weight_linear(ld->m, name, out, in, ld->role, ld->err);
}

vlm_tensor *vlm_ld_quantize(vlm_loader *ld, vlm_tensor *t, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    common_name(ld, name, sizeof name, fmt, ap);
    va_end(ap);
    return vlm_quantize_weight(ld->m, t, ld->role, name, ld->err);
}

vlm_tensor *vlm_ld_opt(vlm_loader *ld, const char *fmt, ...) {
    char name[512];
    va_list ap;
    va_start(ap, fmt);
    common_name(ld, name, sizeof name, fmt, ap);
    va_end(ap);
    return vlm_weight_opt(ld->m, name);
}

vlm_status vlm_dec_layer_load(vlm_loader *ld, int l, int hidden, int inter, const vlm_dec_hparams *hp,
                              int qkv_bias, int qk_norm, vlm_dec_layer *L) {
    int64_t qd = (int64_t)hp->n_heads * hp->head_dim, kd = (int64_t)hp->n_kv_heads * hp->head_dim;
    memset(L, 0, sizeof *L);
    L->attn_norm = vlm_ld(ld, VLM_SHAPE1(hidden), "layers.%d.input_layernorm.weight", l);
    L->q = vlm_ld_linear(ld, qd, hidden, "layers.%d.self_attn.q_proj.weight", l);
    L->k = vlm_ld_linear(ld, kd, hidden, "layers.%d.self_attn.k_proj.weight", l);
    L->v = vlm_ld_linear(ld, kd, hidden, "layers.%d.self_attn.v_proj.weight", l);
    L->o = vlm_ld_linear(ld, hidden, qd, "layers.%d.self_attn.o_proj.weight", l);
    if (qkv_bias) {
        L->q_b = vlm_ld(ld, VLM_SHAPE1(qd), "layers.%d.self_attn.q_proj.bias", l);
        L->k_b = vlm_ld(ld, VLM_SHAPE1(kd), "layers.%d.self_attn.k_proj.bias", l);
        L->v_b = vlm_ld(ld, VLM_SHAPE1(kd), "layers.%d.self_attn.v_proj.bias", l);
    }
    if (qk_norm) {
        L->q_norm = vlm_ld(ld, VLM_SHAPE1(hp->head_dim), "layers.%d.self_attn.q_norm.weight", l);
        L->k_norm = vlm_ld(ld, VLM_SHAPE1(hp->head_dim), "layers.%d.self_attn.k_norm.weight", l);
    }
    L->mlp_norm = vlm_ld(ld, VLM_SHAPE1(hidden), "layers.%d.post_attention_layernorm.weight", l);
    if (inter > 0) {
        L->gate = vlm_ld_linear(ld, inter, hidden, "layers.%d.mlp.gate_proj.weight", l);
        L->up = vlm_ld_linear(ld, inter, hidden, "layers.%d.mlp.up_proj.weight", l);
        L->down = vlm_ld_linear(ld, hidden, inter, "layers.%d.mlp.down_proj.weight", l);
    }
    return ld->err->code;
}

/* Attention over the live part of a cache ring: while it has not wrapped,
 * only slots [0, used) can hold positions, so the rest is not scanned. */
static vlm_tensor *common_attend(vlm_compute *c, vlm_tensor *q, vlm_kv_layer *kv, const int32_t *pos, int n,
                                 int window, float scale, const int32_t *span) {
    int32_t max_pos = 0;
    for (int i = 0; i < n; i++) if (pos[i] > max_pos) max_pos = pos[i];
    int64_t used = max_pos + 1 < kv->cap ? max_pos + 1 : kv->cap;
    vlm_attn_params p = {.scale = scale, .causal = 1, .window = window, .q_pos = pos, .k_pos = kv->slot_pos};
    if (span) { /* bidirectional spans: group ids of the queries and of the cached keys */
        int32_t *qg = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)(n + used));
        if (!qg) return NULL;
        int32_t *kg = qg + n;
        for (int i = 0; i < n; i++) qg[i] = span[pos[i]];
        for (int64_t s = 0; s < used; s++) kg[s] = kv->slot_pos[s] >= 0 ? span[kv->slot_pos[s]] : -1;
        p.q_group = qg;
        p.k_group = kg;
    }
    return vlm_attention(c, q, vlm_slice(c, kv->k, 0, 0, used), vlm_slice(c, kv->v, 0, 0, used), &p);
}

vlm_tensor *vlm_dec_attention(vlm_compute *c, const vlm_dec_layer *L, const vlm_dec_hparams *hp,
                              vlm_kv_layer *kv, vlm_tensor *h, vlm_tensor *cos, vlm_tensor *sin,
                              const int32_t *pos, int n, int window) {
    vlm_attn_opts o = {.window = window};
    return vlm_dec_attention_ex(c, L, hp, kv, h, cos, sin, pos, n, &o);
}

vlm_tensor *vlm_gated_mlp(vlm_compute *c, vlm_tensor *h, vlm_tensor *gate, vlm_tensor *up, vlm_tensor *down,
                          vlm_unary_op act) {
    return vlm_linear(c, vlm_glu(c, vlm_linear(c, h, gate, NULL), vlm_linear(c, h, up, NULL), act), down, NULL);
}

vlm_tensor *vlm_dec_layer_forward(vlm_compute *c, const vlm_dec_layer *L, const vlm_dec_hparams *hp,
                                  vlm_kv_layer *kv, vlm_tensor *x, vlm_tensor *cos, vlm_tensor *sin,
                                  const int32_t *pos, int n) {
    vlm_tensor *h = vlm_rms_norm(c, x, L->attn_norm, hp->eps);
    x = vlm_add(c, x, vlm_dec_attention(c, L, hp, kv, h, cos, sin, pos, n, 0));
    h = vlm_rms_norm(c, x, L->mlp_norm, hp->eps);
    return vlm_add(c, x, vlm_gated_mlp(c, h, L->gate, L->up, L->down, hp->act));
}

void vlm_mrope_table(float *cos_out, float *sin_out, const int64_t *pos3, int n, const float *inv_freq, int half,
                     const int *section, int interleaved) {
    for (int t = 0; t < n; t++)
        for (int i = 0; i < half; i++) {
            int s;
            if (interleaved) { /* t,h,w,t,h,w,... while each section lasts; the rest is t */
                s = i % 3;
                if (s && i >= 3 * section[s]) s = 0;
            } else s = i < section[0] ? 0 : i < section[0] + section[1] ? 1 : 2;
            float ang = (float)pos3[(int64_t)s * n + t] * inv_freq[i];
            float cv = (float)cos((double)ang), sv = (float)sin((double)ang);
            cos_out[(int64_t)t * 2 * half + i] = cos_out[(int64_t)t * 2 * half + half + i] = cv;
            sin_out[(int64_t)t * 2 * half + i] = sin_out[(int64_t)t * 2 * half + half + i] = sv;
        }
}

int vlm_vision_rows(const int32_t *ids, int n, const vlm_vision_out *vision, int32_t image_token, int32_t video_token,
                    int32_t *dst, int32_t *src) {
    int64_t rows = vision->embeds ? vision->embeds->shape[0] : 0, n_img = vision->n_image_tokens, img = 0, vid = 0;
    int k = 0;
    for (int i = 0; i < n; i++) {
        int64_t r;
        if (ids[i] == image_token && image_token >= 0) r = img++;
        else if (ids[i] == video_token && video_token >= 0) r = n_img + vid++;
        else continue;
        if ((ids[i] == image_token && r >= n_img) || r >= rows) return -1;
        dst[k] = i;
        src[k++] = (int32_t)r;
    }
    return k;
}

vlm_tensor *vlm_embed_tokens(vlm_compute *c, vlm_tensor *table, float scale, const int32_t *ids, int n,
                             const vlm_vision_out *vision, int32_t image_token, int32_t video_token) {
    vlm_tensor *tok = vlm_from_host(c, VLM_I32, 1, (const int64_t[]){n}, ids);
    vlm_tensor *x = vlm_get_rows(c, table, tok);
    if (scale != 1.0f) x = vlm_scale(c, x, scale);
    /* No images in this call: placeholder ids embed as text, as transformers does
     * without pixel values (a generated <|image_pad|> while decoding). */
    if (!vision) return x;
    int32_t *dst = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n + 4);
    int32_t *src = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n + 4);
    if (!x || !dst || !src) return NULL;
    int k = vlm_vision_rows(ids, n, vision, image_token, video_token, dst, src);
    if (k < 0) {
        vlm_error_set(&c->err, VLM_ERR_ARG, "the prompt has more image/video placeholder tokens than the images give (%lld rows)",
                      (long long)(vision->embeds ? vision->embeds->shape[0] : 0));
        c->failed = 1;
        return NULL;
    }
    if (k == 0) return x;
    vlm_tensor *src_ids = vlm_from_host(c, VLM_I32, 1, (const int64_t[]){k}, src);
    vlm_tensor *dst_ids = vlm_from_host(c, VLM_I32, 1, (const int64_t[]){k}, dst);
    vlm_tensor *rows_t = vlm_get_rows(c, vision->embeds, src_ids);
    if (vlm_set_rows(c, x, rows_t, dst_ids) != VLM_OK) return NULL;
    return x;
}

vlm_status vlm_seq_kv_uniform(vlm_seq *s, int n_layers, int n_kv_heads, int head_dim, vlm_error *err) {
    int *cap = (int *)malloc(sizeof(int) * 3 * (size_t)n_layers);
    if (!cap) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    int *heads = cap + n_layers, *dims = heads + n_layers;
    for (int l = 0; l < n_layers; l++) { cap[l] = s->n_ctx; heads[l] = n_kv_heads; dims[l] = head_dim; }
    vlm_status st = vlm_kv_init(&s->kv, s->model->be, s->kv_dtype, n_layers, cap, heads, dims, NULL, err);
    free(cap);
    return st;
}

vlm_tensor *vlm_lm_logits(vlm_compute *c, vlm_tensor *x, vlm_tensor *norm, float eps, vlm_tensor *lm_head,
                          int all_logits) {
    if (!x) return NULL;
    if (!all_logits) x = vlm_slice(c, x, 0, x->shape[0] - 1, 1);
    return vlm_linear(c, vlm_rms_norm(c, x, norm, eps), lm_head, NULL);
}


vlm_tensor *vlm_dec_attention_ex(vlm_compute *c, const vlm_dec_layer *L, const vlm_dec_hparams *hp,
                                 vlm_kv_layer *kv, vlm_tensor *h, vlm_tensor *cos, vlm_tensor *sin,
                                 const int32_t *pos, int n, const vlm_attn_opts *o) {
    int H = hp->n_heads, Hkv = hp->n_kv_heads, D = hp->head_dim;
    vlm_tensor *q = vlm_reshape_3d(c, vlm_linear(c, h, L->q, L->q_b), n, H, D);
    if (L->q_norm) q = vlm_rms_norm(c, q, L->q_norm, hp->eps);
    q = vlm_rope(c, q, cos, sin);
    if (kv->owner) { /* a layer that shares an earlier layer's cache only reads it */
        vlm_tensor *kr = vlm_reshape_3d(c, vlm_linear(c, h, L->k, L->k_b), n, Hkv, D);
        vlm_tensor *v = L->v ? vlm_reshape_3d(c, vlm_linear(c, h, L->v, L->v_b), n, Hkv, D) : kr;
        vlm_tensor *k = L->k_norm ? vlm_rms_norm(c, kr, L->k_norm, hp->eps) : kr;
        if (o->v_norm) v = vlm_rms_norm(c, v, NULL, hp->eps);
        k = vlm_rope(c, k, cos, sin);
        if (!k || !v || vlm_kv_write(c, kv, k, v, pos, n) != VLM_OK) return NULL;
    }
    if (!q) return NULL;
    vlm_tensor *a = common_attend(c, q, kv, pos, n, o->window, o->scale > 0 ? o->scale : 1.0f / sqrtf((float)D), o->span);
    return vlm_linear(c, vlm_reshape_2d(c, a, n, (int64_t)H * D), L->o, L->o_b);
}

void vlm_dec_stack_config(const vlm_json *cfg, const char *section, vlm_dec_stack *d) {
    d->hidden = (int)vlm_json_int(vlm_json_cfg(cfg, section, "hidden_size"), 0);
    d->n_layers = (int)vlm_json_int(vlm_json_cfg(cfg, section, "num_hidden_layers"), 0);
    d->inter = (int)vlm_json_int(vlm_json_cfg(cfg, section, "intermediate_size"), 0);
    d->hp.n_heads = (int)vlm_json_int(vlm_json_cfg(cfg, section, "num_attention_heads"), 0);
    d->hp.n_kv_heads = (int)vlm_json_int(vlm_json_cfg(cfg, section, "num_key_value_heads"), d->hp.n_heads);
    d->hp.head_dim = (int)vlm_json_int(vlm_json_cfg(cfg, section, "head_dim"), d->hp.n_heads > 0 ? d->hidden / d->hp.n_heads : 0);
    d->hp.eps = (float)vlm_json_num(vlm_json_cfg(cfg, section, "rms_norm_eps"), 1e-6);
}

vlm_status vlm_dec_stack_load(vlm_loader *ld, int vocab, int qkv_bias, int qk_norm, int tied, vlm_dec_stack *d) {
    if (vlm_model_check_count(ld->m, d->n_layers, "num_hidden_layers", ld->err) != VLM_OK) return ld->err->code;
    d->layers = (vlm_dec_layer *)calloc((size_t)d->n_layers, sizeof *d->layers);
    if (!d->layers) return vlm_error_set(ld->err, VLM_ERR_OOM, "out of memory");
    /* tied: the table is also the output projection, quantized as one */
    vlm_linear_role role = ld->role;
    ld->role = VLM_LINEAR_OUTPUT;
    d->embed = tied > 0 ? vlm_ld_linear(ld, vocab, d->hidden, "embed_tokens.weight")
                    : vlm_ld(ld, VLM_SHAPE2(vocab, d->hidden), "embed_tokens.weight");
    ld->role = role;
    d->norm = vlm_ld(ld, VLM_SHAPE1(d->hidden), "norm.weight");
    for (int l = 0; l < d->n_layers; l++)
        if (vlm_dec_layer_load(ld, l, d->hidden, d->inter, &d->hp, qkv_bias, qk_norm, &d->layers[l]) != VLM_OK)
            return ld->err->code;
    if (tied >= 0) /* else the caller finds it */
        d->lm_head = tied ? d->embed : vlm_weight_linear(ld->m, "lm_head.weight", vocab, d->hidden, VLM_LINEAR_OUTPUT, ld->err);
    return ld->err->code;
}

vlm_status vlm_dec_run(vlm_seq *s, const vlm_dec_stack *d, const vlm_dec_call *a, vlm_tensor **logits) {
    vlm_compute *c = &s->c;
    const vlm_dec_hooks *h = a->hooks;
    int n = a->n;
    *logits = NULL;
    vlm_tensor *x = vlm_embed_tokens(c, d->embed, a->embed_scale > 0 ? a->embed_scale : 1.0f, a->ids, n, a->vision,
                                     a->image_token, a->video_token);
    if (x && h && h->begin && h->begin(c, h->state, x) != VLM_OK) goto fail;
    vlm_tensor *resid = vlm_new_2d(c, VLM_F32, n, d->hidden);
    if (!x || !resid || vlm_copy(c, resid, x) != VLM_OK) goto fail;
    for (int l = 0; l < d->n_layers; l++) {
        vlm_arena_mark mark = vlm_arena_get_mark(&c->arena); /* layer scratch */
        vlm_kv_layer *kv = &s->kv.layers[l];
        x = h && h->layer ? h->layer(c, h->state, l, kv, resid, a)
                          : vlm_dec_layer_forward(c, &d->layers[l], &d->hp, kv, resid, a->cos, a->sin, a->pos, n);
        if (!x || vlm_copy(c, resid, x) != VLM_OK) goto fail;
        if (h && h->after_layer && h->after_layer(c, h->state, l, resid) != VLM_OK) goto fail;
        vlm_arena_release(&c->arena, mark);
    }
    *logits = vlm_lm_logits(c, resid, d->norm, d->hp.eps, d->lm_head, a->all_logits);
    if (a->softcap > 0) *logits = vlm_softcap(c, *logits, a->softcap);
    if (!*logits) goto fail;
    s->n_past += n;
    return VLM_OK;
fail:
    vlm_kv_truncate(&s->kv, s->n_past);
    return c->err.code ? c->err.code : VLM_ERR_ARG;
}

vlm_status vlm_dec_stack_forward(vlm_seq *s, const vlm_dec_stack *d, const float *inv_freq, const int32_t *ids, int n,
                                 const vlm_vision_out *vision, int32_t image_token, int all_logits, vlm_tensor **logits) {
    vlm_compute *c = &s->c;
    *logits = NULL;
    vlm_status st = vlm_forward_check(s, ids, n);
    if (st != VLM_OK) return st;
    int hd = d->hp.head_dim;
    if (hd <= 0 || hd > 1024) return vlm_error_set(&c->err, VLM_ERR_UNSUPPORTED, "head_dim %d", hd);
    int32_t *pos = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n);
    float *posf = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)n);
    float *cosv = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)n * hd);
    float *sinv = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)n * hd);
    if (!pos || !posf || !cosv || !sinv) return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    for (int i = 0; i < n; i++) posf[i] = (float)(pos[i] = s->n_past + i);
    vlm_rope_table(cosv, sinv, posf, n, inv_freq, hd / 2);
    vlm_tensor *cos = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n, hd}, cosv);
    vlm_tensor *sin = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n, hd}, sinv);
    int has_vis = vision && vision->embeds;
    vlm_dec_call a = {.ids = ids, .n = n, .pos = pos, .cos = cos, .sin = sin, .vision = has_vis ? vision : NULL,
                      .image_token = has_vis ? image_token : -1, .video_token = -1, .all_logits = all_logits};
    st = vlm_dec_run(s, d, &a, logits);
    if (st == VLM_OK) s->rope_pos = s->n_past;
    return st;
}

/* ---- Qwen-VL family helpers ---- */

const vlm_json *vlm_cfg_text(const vlm_json *cfg, const char *key) { return vlm_json_cfg(cfg, "text_config", key); }

const vlm_json *vlm_cfg_rope(const vlm_json *cfg, const char *key) {
    const vlm_json *v = vlm_json_get(vlm_cfg_text(cfg, "rope_parameters"), key);
    if (!v) v = vlm_json_get(vlm_cfg_text(cfg, "rope_scaling"), key);
    return v ? v : vlm_cfg_text(cfg, key);
}

vlm_tensor *vlm_ld_patch_embed(vlm_loader *ld, int64_t out, int in_ch, int t_patch, int patch, const char *name) {
    vlm_tensor *w = vlm_ld(ld, 5, (const int64_t[]){out, in_ch, t_patch, patch, patch}, "%s", name);
    if (w) { /* the conv over one patch is a matmul with the flattened kernel */
        int64_t k = (int64_t)in_ch * t_patch * patch * patch;
        w->ndim = 2;
        w->shape[1] = k;
        w->stride[0] = k;
        w->stride[1] = 1;
    }
    return w;
}

vlm_status vlm_qwen_vit_load(vlm_loader *ld, int depth, int64_t V, int64_t I, int in_ch, int t_patch, int patch,
                             int layer_norm, vlm_tensor **patch_embed, vlm_qwen_vit_block *blocks) {
    static const char *const prefixes[] = {"model.visual.", "visual.", NULL};
    if (!vlm_loader_prefix(ld, prefixes, "patch_embed.proj.weight"))
        return vlm_error_set(ld->err, VLM_ERR_FORMAT, "no vision tower weights (model.visual.patch_embed.proj.weight)");
    *patch_embed = vlm_ld_patch_embed(ld, V, in_ch, t_patch, patch, "patch_embed.proj.weight");
    for (int b = 0; b < depth; b++) {
        vlm_qwen_vit_block *B = &blocks[b];
        B->norm1 = vlm_ld(ld, VLM_SHAPE1(V), "blocks.%d.norm1.weight", b);
        if (layer_norm) B->norm1_b = vlm_ld(ld, VLM_SHAPE1(V), "blocks.%d.norm1.bias", b);
        B->norm2 = vlm_ld(ld, VLM_SHAPE1(V), "blocks.%d.norm2.weight", b);
        if (layer_norm) B->norm2_b = vlm_ld(ld, VLM_SHAPE1(V), "blocks.%d.norm2.bias", b);
        B->qkv = vlm_ld_linear(ld, 3 * V, V, "blocks.%d.attn.qkv.weight", b);
        B->qkv_b = vlm_ld(ld, VLM_SHAPE1(3 * V), "blocks.%d.attn.qkv.bias", b);
        B->proj = vlm_ld_linear(ld, V, V, "blocks.%d.attn.proj.weight", b);
        B->proj_b = vlm_ld(ld, VLM_SHAPE1(V), "blocks.%d.attn.proj.bias", b);
        if (layer_norm) { /* Qwen3-VL */
            B->fc1 = vlm_ld_linear(ld, I, V, "blocks.%d.mlp.linear_fc1.weight", b);
            B->fc1_b = vlm_ld(ld, VLM_SHAPE1(I), "blocks.%d.mlp.linear_fc1.bias", b);
            B->fc2 = vlm_ld_linear(ld, V, I, "blocks.%d.mlp.linear_fc2.weight", b);
            B->fc2_b = vlm_ld(ld, VLM_SHAPE1(V), "blocks.%d.mlp.linear_fc2.bias", b);
        } else { /* Qwen2.5-VL */
            B->gate = vlm_ld_linear(ld, I, V, "blocks.%d.mlp.gate_proj.weight", b);
            B->gate_b = vlm_ld(ld, VLM_SHAPE1(I), "blocks.%d.mlp.gate_proj.bias", b);
            B->up = vlm_ld_linear(ld, I, V, "blocks.%d.mlp.up_proj.weight", b);
            B->up_b = vlm_ld(ld, VLM_SHAPE1(I), "blocks.%d.mlp.up_proj.bias", b);
            B->down = vlm_ld_linear(ld, V, I, "blocks.%d.mlp.down_proj.weight", b);
            B->down_b = vlm_ld(ld, VLM_SHAPE1(V), "blocks.%d.mlp.down_proj.bias", b);
        }
    }
    return ld->err->code;
}

void vlm_vision_rope_2d(float *cos_row, float *sin_row, int64_t row, int64_t col, const float *inv, int head_dim) {
    int nf = head_dim / 4;
    for (int i = 0; i < 2 * nf; i++) {
        float ang = (float)(i < nf ? row : col) * inv[i < nf ? i : i - nf];
        float cv = (float)cos((double)ang), sv = (float)sin((double)ang);
        cos_row[i] = cos_row[2 * nf + i] = cv;
        sin_row[i] = sin_row[2 * nf + i] = sv;
    }
}

vlm_tensor *vlm_vit_attention(vlm_compute *c, vlm_tensor *h, vlm_tensor *qkv, vlm_tensor *qkv_b, vlm_tensor *proj,
                              vlm_tensor *proj_b, int n_heads, vlm_tensor *cos, vlm_tensor *sin, const int32_t *seg) {
    if (!h) return NULL;
    int64_t n = h->shape[0], V = qkv->shape[0] / 3, hd = V / n_heads;
    vlm_tensor *t = vlm_linear(c, h, qkv, qkv_b);
    vlm_tensor *q = vlm_rope(c, vlm_split_last(c, vlm_slice(c, t, 1, 0, V), n_heads, hd), cos, sin);
    vlm_tensor *k = vlm_rope(c, vlm_split_last(c, vlm_slice(c, t, 1, V, V), n_heads, hd), cos, sin);
    vlm_tensor *v = vlm_split_last(c, vlm_slice(c, t, 1, 2 * V, V), n_heads, hd);
    vlm_attn_params p = {.scale = 1.0f / sqrtf((float)hd), .q_seg = seg, .k_seg = seg};
    return vlm_linear(c, vlm_reshape_2d(c, vlm_attention(c, q, k, v, &p), n, V), proj, proj_b);
}

vlm_status vlm_mrope_positions(vlm_compute *c, const vlm_mrope_spec *sp, const int32_t *ids, int n, int64_t *next,
                               int64_t *pos3) {
    int64_t start = *next, img_k = 0, vid_k = 0, vid_f = 0; /* grids used; frame within the video grid */
    for (int i = 0; i < n;) {
        int is_img = sp->image_token >= 0 && ids[i] == sp->image_token;
        int is_vid = !is_img && sp->video_token >= 0 && ids[i] == sp->video_token;
        if (!is_img && !is_vid) {
            pos3[i] = pos3[n + i] = pos3[2 * n + i] = start++;
            i++;
            continue;
        }
        const vlm_tensor *grid = is_img ? sp->image_grid : sp->video_grid;
        int64_t k = is_img ? img_k : vid_k;
        if (!grid || grid->ndim != 2 || grid->shape[1] != 3 || k >= grid->shape[0])
            return vlm_error_set(&c->err, VLM_ERR_ARG, "more %s placeholder runs than %s grids", is_img ? "image" : "video",
                                 is_img ? "image" : "video");
        int64_t t = vlm_get_i64(grid, k * 3), h = vlm_get_i64(grid, k * 3 + 1) / sp->merge,
                w = vlm_get_i64(grid, k * 3 + 2) / sp->merge;
        float tscale = is_img ? sp->image_tscale : sp->video_tscale ? sp->video_tscale[k] : 1.0f;
        if (is_img) img_k++;
        else if (!sp->video_frame_spans) vid_k++;
        else {
            if (++vid_f >= t) { vid_k++; vid_f = 0; }
            t = 1;
        }
        if (t <= 0 || h <= 0 || w <= 0 || i + t * h * w > n)
            return vlm_error_set(&c->err, VLM_ERR_ARG, "%s run of %lld tokens is cut off by the end of the input",
                                 is_img ? "image" : "video", (long long)(t * h * w));
        int64_t maxp = h > w ? h - 1 : w - 1;
        for (int64_t ft = 0; ft < t; ft++)
            for (int64_t y = 0; y < h; y++)
                for (int64_t x = 0; x < w; x++, i++) {
                    if (ids[i] != (is_img ? sp->image_token : sp->video_token))
                        return vlm_error_set(&c->err, VLM_ERR_ARG, "placeholder run shorter than its grid");
                    int64_t tp = (int64_t)((float)ft * tscale);
                    pos3[i] = start + tp;
                    pos3[n + i] = start + y;
                    pos3[2 * n + i] = start + x;
                    if (tp > maxp) maxp = tp;
                }
        start += maxp + 1;
    }
    *next = start;
    return VLM_OK;
}

vlm_status vlm_forward_check(vlm_seq *s, const int32_t *ids, int n) {
    vlm_error *err = &s->c.err;
    if (n <= 0) return vlm_error_set(err, VLM_ERR_ARG, "no tokens to run");
    if (s->n_past + n > s->n_ctx)
        return vlm_error_set(err, VLM_ERR_CONTEXT, "%d tokens after %d exceed the context of %d", n, s->n_past, s->n_ctx);
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= s->model->vocab_size)
            return vlm_error_set(err, VLM_ERR_ARG, "token id %d outside the vocabulary of %d", ids[i], s->model->vocab_size);
    return VLM_OK;
}

vlm_status vlm_mrope_begin(vlm_seq *s, const vlm_mrope_spec *sp, const int32_t *ids, int n, int head_dim, float theta,
                           const int *section, int interleaved, int32_t **pos, vlm_tensor **cos, vlm_tensor **sin) {
    vlm_compute *c = &s->c;
    vlm_status st = vlm_forward_check(s, ids, n);
    if (st != VLM_OK) return st;
    if (head_dim <= 0 || head_dim > 1024 || head_dim % 2) return vlm_error_set(&c->err, VLM_ERR_UNSUPPORTED, "head_dim %d", head_dim);
    int64_t *pos3 = (int64_t *)vlm_arena_alloc(&c->arena, sizeof(int64_t) * 3 * (size_t)n);
    *pos = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n);
    float *cosv = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)n * head_dim);
    float *sinv = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)n * head_dim);
    if (!pos3 || !*pos || !cosv || !sinv) return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    int64_t next = s->rope_pos;
    if ((st = vlm_mrope_positions(c, sp, ids, n, &next, pos3)) != VLM_OK) return st;
    for (int i = 0; i < n; i++) (*pos)[i] = s->n_past + i;
    float inv[512];
    vlm_rope_inv_freq(inv, head_dim, theta);
    vlm_mrope_table(cosv, sinv, pos3, n, inv, head_dim / 2, section, interleaved);
    *cos = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n, head_dim}, cosv);
    *sin = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n, head_dim}, sinv);
    if (!*cos || !*sin) return c->err.code ? c->err.code : VLM_ERR_OOM;
    s->rope_pos = next;
    return VLM_OK;
}

int64_t vlm_qwen_grid_patches(vlm_compute *c, const vlm_tensor *pixels, int64_t pdim, const vlm_tensor *grid, int merge) {
    int64_t n = 0;
    if (pixels->ndim != 2 || pixels->shape[1] != pdim || grid->ndim != 2 || grid->shape[1] != 3) {
        vlm_error_set(&c->err, VLM_ERR_ARG, "pixel values must be [n, %lld] with grid_thw [k, 3]", (long long)pdim);
        c->failed = 1;
        return -1;
    }
    for (int64_t g = 0; g < grid->shape[0]; g++) {
        int64_t t = vlm_get_i64(grid, g * 3), h = vlm_get_i64(grid, g * 3 + 1), w = vlm_get_i64(grid, g * 3 + 2);
        if (t <= 0 || h <= 0 || w <= 0 || h % merge || w % merge || t * h * w > (1 << 24)) {
            vlm_error_set(&c->err, VLM_ERR_ARG, "bad grid_thw (%lld, %lld, %lld)", (long long)t, (long long)h, (long long)w);
            c->failed = 1;
            return -1;
        }
        n += t * h * w;
    }
    if (n != pixels->shape[0]) {
        vlm_error_set(&c->err, VLM_ERR_ARG, "grid_thw covers %lld patches, pixel_values has %lld rows", (long long)n,
                      (long long)pixels->shape[0]);
        c->failed = 1;
        return -1;
    }
    return n;
}

vlm_status vlm_qwen_encode(vlm_compute *c, const void *model, vlm_qwen_tower_fn tower, int n_extra,
                           const vlm_features *f, vlm_vision_out *out) {
    memset(out, 0, sizeof *out);
    if (n_extra < 0 || n_extra > 8) return vlm_error_set(&c->err, VLM_ERR_ARG, "%d side outputs", n_extra);
    const vlm_tensor *img = vlm_features_get(f, "pixel_values"), *img_grid = vlm_features_get(f, "image_grid_thw");
    const vlm_tensor *vid = vlm_features_get(f, "pixel_values_videos"), *vid_grid = vlm_features_get(f, "video_grid_thw");
    if ((img && !img_grid) || (vid && !vid_grid))
        return vlm_error_set(&c->err, VLM_ERR_ARG, "pixel values without their grid_thw");
    vlm_tensor *ix[8] = {0}, *vx[8] = {0};
    vlm_tensor *ie = img ? tower(c, model, img, img_grid, ix) : NULL;
    vlm_tensor *ve = vid ? tower(c, model, vid, vid_grid, vx) : NULL;
    if (c->failed || (!ie && !ve)) return c->err.code ? c->err.code : vlm_error_set(&c->err, VLM_ERR_ARG, "no images given");
    out->n_image_tokens = ie ? ie->shape[0] : 0;
    out->embeds = ie && ve ? vlm_concat(c, ie, ve, 0) : ie ? ie : ve;
    out->n_extra = n_extra;
    for (int i = 0; i < n_extra; i++) out->extra[i] = ie && ve ? vlm_concat(c, ix[i], vx[i], 0) : ie ? ix[i] : vx[i];
    return out->embeds ? VLM_OK : c->err.code;
}
