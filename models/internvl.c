/* InternVL 2.5 / 3 / 3.5: InternViT (class token, learned position
 * embeddings, LayerNorm or RMSNorm, optional q/k norm over all heads, layer
 * scale, GELU MLP) on 448-px tiles, pixel shuffle, an MLP projector, and a
 * Qwen2 / Qwen3 / Llama decoder with plain 1D RoPE.
 *
 * Two checkpoint layouts map to the one model here:
 *  - transformers' InternVLForConditionalGeneration (model_type "internvl"):
 *    [model.]vision_tower.*, [model.]multi_modal_projector.*,
 *    model.language_model.* or language_model.model.*, text_config;
 *  - the original remote-code InternVLChatModel ("internvl_chat"):
 *    vision_model.* with a fused attn.qkv (split here into row views of the
 *    mmap'd tensor, no copy), ls1/ls2, norm1/norm2, mlp1.{0,1,3},
 *    language_model.model.*, llm_config, select_layer, ps_version. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    vlm_tensor *ln1, *ln1_b, *ln2, *ln2_b;
    vlm_tensor *q, *q_b, *k, *k_b, *v, *v_b, *q_norm, *k_norm, *o, *o_b;
    vlm_tensor *ls1, *ls2, *fc1, *fc1_b, *fc2, *fc2_b;
} ivl_vit_layer;

typedef struct {
    int original; /* 1: InternVLChatModel layout */
    /* vision tower */
    int v_layers, v_hidden, v_heads, v_inter, patch, image_size, channels;
    int v_rms, v_qk_norm, v_bias, abs_pos;
    float v_eps;
    vlm_unary_op v_act, mm_act;
    int feature_layer;  /* vision_feature_layer / select_layer */
    int n_run;          /* layers the selected features need */
    int keep_cls;       /* vision_feature_select_strategy "full" */
    int ps_r, ps_v1;    /* pixel shuffle factor 1/downsample_ratio; ps_version v1 (no final transpose) */
    vlm_tensor *patch_w, *patch_b, *cls, *pos; /* patch_w [D, C*P*P]; cls [1, D]; pos [1+n, D] */
    ivl_vit_layer *vl;
    vlm_tensor *post_ln, *post_ln_b;           /* final LayerNorm (HF use_mean_pooling=false) */
    vlm_tensor *mm_ln, *mm_ln_b, *mm1, *mm1_b, *mm2, *mm2_b;
    /* decoder */
    vlm_dec_stack txt;
    float theta;
    float ntk_factor; /* > 0: dynamic NTK RoPE past ntk_max_pos positions */
    int ntk_max_pos;
} ivl_model;

/* ------------------------------------------------------------------ config */

static int ivl_act(const char *name, vlm_unary_op *out) {
    if (!strcmp(name, "gelu")) *out = VLM_UNARY_GELU;
    else if (!strcmp(name, "gelu_pytorch_tanh") || !strcmp(name, "gelu_new") || !strcmp(name, "gelu_fast"))
        *out = VLM_UNARY_GELU_TANH;
    else if (!strcmp(name, "silu") || !strcmp(name, "swish")) *out = VLM_UNARY_SILU;
    else if (!strcmp(name, "relu")) *out = VLM_UNARY_RELU;
    else return 0;
    return 1;
}

/* image_size / patch_size are an int or [h, w]; InternViT wants them square. */
static int ivl_square(const vlm_json *j, int def) {
    if (j && j->type == VLM_JSON_ARRAY) {
        int64_t a = vlm_json_int(vlm_json_at(j, 0), -1), b = vlm_json_int(vlm_json_at(j, 1), -1);
        return a == b ? (int)a : -1;
    }
    return (int)vlm_json_int(j, def);
}

/* The IMG_CONTEXT id of an original checkpoint: not in its config.json but
 * in the tokenizer's added_tokens.json next to it. */
static int32_t ivl_context_token(vlm_model *m, int32_t def) {
    char path[4096];
    snprintf(path, sizeof path, "%s/added_tokens.json", m->dir ? m->dir : ".");
    vlm_error e = {0};
    vlm_json *j = vlm_json_load(path, &e);
    int32_t id = j ? (int32_t)vlm_json_int(vlm_json_get(j, "<IMG_CONTEXT>"), def) : def;
    vlm_json_free(j);
    return id;
}

static vlm_status ivl_load_config(vlm_model *m, ivl_model *q, vlm_error *err) {
    const vlm_json *cfg = m->config;
    const vlm_json *arch = vlm_json_at(vlm_json_get(cfg, "architectures"), 0);
    q->original = !strcmp(vlm_json_str(vlm_json_get(cfg, "model_type"), ""), "internvl_chat") ||
                  !strcmp(vlm_json_str(arch, ""), "InternVLChatModel");
    const vlm_json *vc = vlm_json_get(cfg, "vision_config");
    const vlm_json *tc = vlm_json_get(cfg, q->original ? "llm_config" : "text_config");
    if (!vc || !tc)
        return vlm_error_set(err, VLM_ERR_CONFIG, "config.json has no vision_config or %s",
                             q->original ? "llm_config" : "text_config");

    /* vision tower */
    q->v_hidden = (int)vlm_json_int(vlm_json_get(vc, "hidden_size"), 1024);
    q->v_layers = (int)vlm_json_int(vlm_json_get(vc, "num_hidden_layers"), 24);
    q->v_heads = (int)vlm_json_int(vlm_json_get(vc, "num_attention_heads"), 16);
    q->v_inter = (int)vlm_json_int(vlm_json_get(vc, "intermediate_size"), 4096);
    q->channels = (int)vlm_json_int(vlm_json_get(vc, "num_channels"), 3);
    q->patch = ivl_square(vlm_json_get(vc, "patch_size"), 14);
    q->image_size = ivl_square(vlm_json_get(vc, "image_size"), 448);
    q->v_eps = (float)vlm_json_num(vlm_json_get(vc, "layer_norm_eps"), 1e-6);
    const char *norm = vlm_json_str(vlm_json_get(vc, "norm_type"), "layer_norm");
    if (strcmp(norm, "layer_norm") && strcmp(norm, "rms_norm"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "vision norm_type \"%s\"", norm);
    q->v_rms = !strcmp(norm, "rms_norm");
    q->v_qk_norm = vlm_json_bool(vlm_json_get(vc, q->original ? "qk_normalization" : "use_qk_norm"), 0);
    q->v_bias = vlm_json_bool(vlm_json_get(vc, q->original ? "qkv_bias" : "attention_bias"), 0);
    q->abs_pos = q->original ? 1 : vlm_json_bool(vlm_json_get(vc, "use_absolute_position_embeddings"), 1);
    const char *act = vlm_json_str(vlm_json_get(vc, "hidden_act"), "gelu");
    if (!ivl_act(act, &q->v_act)) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "vision hidden_act \"%s\"", act);
    act = q->original ? "gelu" : vlm_json_str(vlm_json_get(cfg, "projector_hidden_act"), "gelu");
    if (!ivl_act(act, &q->mm_act)) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "projector_hidden_act \"%s\"", act);

    const vlm_json *fl = vlm_json_get(cfg, q->original ? "select_layer" : "vision_feature_layer");
    if (fl && fl->type != VLM_JSON_NUMBER)
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "vision_feature_layer must be one layer index");
    q->feature_layer = (int)vlm_json_int(fl, -1);
    q->n_run = q->feature_layer >= 0 ? q->feature_layer : q->v_layers + 1 + q->feature_layer;
    if (q->n_run < 0 || q->n_run > q->v_layers)
        return vlm_error_set(err, VLM_ERR_CONFIG, "vision feature layer %d outside the %d layers", q->feature_layer, q->v_layers);
    const char *strat = q->original ? "default" : vlm_json_str(vlm_json_get(cfg, "vision_feature_select_strategy"), "default");
    if (strcmp(strat, "default") && strcmp(strat, "full"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "vision_feature_select_strategy \"%s\"", strat);
    q->keep_cls = !strcmp(strat, "full");
    double ds = vlm_json_num(vlm_json_get(cfg, "downsample_ratio"), 0.5);
    q->ps_r = ds > 0 ? (int)(1.0 / ds + 0.5) : 0;
    if (q->ps_r <= 0 || fabs(1.0 / q->ps_r - ds) > 1e-6)
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "downsample_ratio %g is not 1/integer", ds);
    const char *psv = q->original ? vlm_json_str(vlm_json_get(cfg, "ps_version"), "v1") : "v2";
    if (strcmp(psv, "v1") && strcmp(psv, "v2")) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "ps_version \"%s\"", psv);
    q->ps_v1 = !strcmp(psv, "v1");
    if (q->v_hidden <= 0 || q->v_heads <= 0 || q->v_hidden % q->v_heads || q->v_layers <= 0 || q->v_inter <= 0 ||
        q->patch <= 0 || q->image_size <= 0 || q->image_size % q->patch || q->channels <= 0)
        return vlm_error_set(err, VLM_ERR_CONFIG, "vision config: hidden_size/heads/layers/patch_size/image_size missing or inconsistent");

    /* decoder */
    const char *lm = vlm_json_str(vlm_json_get(tc, "model_type"), "qwen2");
    int qwen2 = !strcmp(lm, "qwen2"), qwen3 = !strcmp(lm, "qwen3"), llama = !strcmp(lm, "llama");
    if (!qwen2 && !qwen3 && !llama)
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "InternVL language model \"%s\" (Qwen2, Qwen3 and Llama are)", lm);
    vlm_dec_stack *t = &q->txt;
    vlm_dec_stack_config(tc, NULL, t);
    act = vlm_json_str(vlm_json_get(tc, "hidden_act"), "silu");
    if (!ivl_act(act, &t->hp.act)) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "text hidden_act \"%s\"", act);
    const vlm_json *rp = vlm_json_get(tc, "rope_parameters");
    if (!rp || rp->type != VLM_JSON_OBJECT) rp = vlm_json_get(tc, "rope_scaling");
    q->theta = (float)vlm_json_num(vlm_json_get(rp, "rope_theta"), vlm_json_num(vlm_json_get(tc, "rope_theta"), 10000.0));
    const char *rt = vlm_json_str(vlm_json_get(rp, "rope_type"), vlm_json_str(vlm_json_get(rp, "type"), "default"));
    if (!strcmp(rt, "dynamic")) { /* InternVL 2.5/3 llm_config: dynamic NTK, default RoPE within the trained length */
        q->ntk_factor = (float)vlm_json_num(vlm_json_get(rp, "factor"), 1.0);
        q->ntk_max_pos = (int)vlm_json_int(vlm_json_get(rp, "original_max_position_embeddings"),
                                           vlm_json_int(vlm_json_get(tc, "max_position_embeddings"), 0));
        if (q->ntk_factor < 1.0f || q->ntk_max_pos <= 0)
            return vlm_error_set(err, VLM_ERR_CONFIG, "dynamic RoPE needs factor >= 1 and max_position_embeddings");
    } else if (strcmp(rt, "default"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "text rope_type \"%s\" (default and dynamic RoPE are)", rt);
    m->vocab_size = (int)vlm_json_int(vlm_json_get(tc, "vocab_size"), 0);
    if (t->hidden <= 0 || t->n_layers <= 0 || t->inter <= 0 || t->hp.n_heads <= 0 || t->hp.n_kv_heads <= 0 ||
        t->hp.n_heads % t->hp.n_kv_heads || m->vocab_size <= 0)
        return vlm_error_set(err, VLM_ERR_CONFIG, "text config: hidden_size/num_hidden_layers/heads/vocab_size missing or inconsistent");
    const vlm_json *hdj = vlm_json_get(tc, "head_dim");
    if (!hdj && t->hidden % t->hp.n_heads) return vlm_error_set(err, VLM_ERR_CONFIG, "text hidden_size not divisible by heads");
    t->hp.head_dim = (int)vlm_json_int(hdj, t->hidden / t->hp.n_heads);
    if (t->hp.head_dim <= 0 || t->hp.head_dim % 2 || t->hp.head_dim > 1024)
        return vlm_error_set(err, VLM_ERR_CONFIG, "text head_dim %d", t->hp.head_dim);
    m->hidden_size = t->hidden;
    int64_t img_def = 151667;
    m->image_token_id = (int32_t)vlm_json_int(vlm_json_get(cfg, "image_token_id"),
                                              vlm_json_int(vlm_json_get(cfg, "img_context_token_id"), img_def));
    if (q->original && !vlm_json_get(cfg, "image_token_id") && !vlm_json_get(cfg, "img_context_token_id"))
        m->image_token_id = ivl_context_token(m, (int32_t)img_def);
    m->video_token_id = -1; /* video frames are images here */
    return VLM_OK;
}

/* ------------------------------------------------------------------ load */

/* Rows [r0, r0 + n) of a weight as a view (no copy): a slice of a fused qkv. */
static vlm_tensor *ivl_rows(vlm_model *m, const vlm_tensor *t, int64_t r0, int64_t n) {
    if (!t) return NULL;
    vlm_tensor *v = (vlm_tensor *)vlm_arena_alloc(&m->arena, sizeof *v);
    if (!v) return NULL;
    *v = *t;
    v->shape[0] = n;
    v->data = (char *)t->data + vlm_dtype_bytes(t->dtype, r0 * t->stride[0]); /* quantized: whole rows (R8: groups) */
    return v;
}

/* Collapses the leading dims of a contiguous weight: [D, C, P, P] -> [D, C*P*P], [1, 1, D] -> [1, D]. */
static void ivl_flatten2(vlm_tensor *t, int64_t rows, int64_t cols) {
    if (!t) return;
    t->ndim = 2;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->stride[0] = cols;
    t->stride[1] = 1;
}

static vlm_status ivl_load_vision(vlm_model *m, ivl_model *q, vlm_error *err) {
    vlm_loader ld = {.m = m, .err = err, .role = VLM_LINEAR_VISION};
    static const char *const hf_vis[] = {"model.vision_tower.", "vision_tower.", NULL};
    static const char *const or_vis[] = {"vision_model.", NULL};
    const char *probe = q->original ? "embeddings.patch_embedding.weight" : "embeddings.patch_embeddings.projection.weight";
    if (!vlm_loader_prefix(&ld, q->original ? or_vis : hf_vis, probe))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no InternViT weights (%s%s)", q->original ? "vision_model." : "vision_tower.", probe);
    int64_t D = q->v_hidden, I = q->v_inter, P = q->patch, side = q->image_size / q->patch;
    int o = q->original;
    q->patch_w = vlm_ld(&ld, 4, (const int64_t[]){D, q->channels, P, P}, "%s", probe);
    ivl_flatten2(q->patch_w, D, q->channels * P * P);
    q->patch_b = vlm_ld(&ld, VLM_SHAPE1(D), o ? "embeddings.patch_embedding.bias" : "embeddings.patch_embeddings.projection.bias");
    q->cls = vlm_ld(&ld, VLM_SHAPE3(1, 1, D), o ? "embeddings.class_embedding" : "embeddings.cls_token");
    ivl_flatten2(q->cls, 1, D);
    if (q->abs_pos) {
        q->pos = vlm_ld(&ld, VLM_SHAPE3(1, side * side + 1, D), o ? "embeddings.position_embedding" : "embeddings.position_embeddings");
        ivl_flatten2(q->pos, side * side + 1, D);
    }
    const char *L = o ? "encoder.layers" : "encoder.layer";
    for (int l = 0; l < q->v_layers; l++) {
        ivl_vit_layer *B = &q->vl[l];
        B->ln1 = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.norm1.weight" : "%s.%d.layernorm_before.weight", L, l);
        B->ln2 = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.norm2.weight" : "%s.%d.layernorm_after.weight", L, l);
        if (!q->v_rms) {
            B->ln1_b = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.norm1.bias" : "%s.%d.layernorm_before.bias", L, l);
            B->ln2_b = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.norm2.bias" : "%s.%d.layernorm_after.bias", L, l);
        }
        if (o) { /* fused qkv: q, k, v are row blocks of one [3D, D] matrix */
            vlm_tensor *w = vlm_ld_linear(&ld, 3 * D, D, "%s.%d.attn.qkv.weight", L, l);
            B->q = ivl_rows(m, w, 0, D), B->k = ivl_rows(m, w, D, D), B->v = ivl_rows(m, w, 2 * D, D);
            if (q->v_bias) {
                vlm_tensor *b = vlm_ld(&ld, VLM_SHAPE1(3 * D), "%s.%d.attn.qkv.bias", L, l);
                B->q_b = ivl_rows(m, b, 0, D), B->k_b = ivl_rows(m, b, D, D), B->v_b = ivl_rows(m, b, 2 * D, D);
            }
            if (w && (!B->q || !B->k || !B->v)) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
        } else {
            static const char *const qkv[3] = {"q", "k", "v"};
            vlm_tensor **ws[3] = {&B->q, &B->k, &B->v}, **bs[3] = {&B->q_b, &B->k_b, &B->v_b};
            for (int i = 0; i < 3; i++) {
                *ws[i] = vlm_ld_linear(&ld, D, D, "%s.%d.attention.%s_proj.weight", L, l, qkv[i]);
                if (q->v_bias) *bs[i] = vlm_ld(&ld, VLM_SHAPE1(D), "%s.%d.attention.%s_proj.bias", L, l, qkv[i]);
            }
        }
        if (q->v_qk_norm) {
            B->q_norm = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.attn.q_norm.weight" : "%s.%d.attention.q_norm.weight", L, l);
            B->k_norm = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.attn.k_norm.weight" : "%s.%d.attention.k_norm.weight", L, l);
        }
        B->o = vlm_ld_linear(&ld, D, D, o ? "%s.%d.attn.proj.weight" : "%s.%d.attention.projection_layer.weight", L, l);
        B->o_b = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.attn.proj.bias" : "%s.%d.attention.projection_layer.bias", L, l);
        B->ls1 = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.ls1" : "%s.%d.lambda_1", L, l);
        B->ls2 = vlm_ld(&ld, VLM_SHAPE1(D), o ? "%s.%d.ls2" : "%s.%d.lambda_2", L, l);
        B->fc1 = vlm_ld_linear(&ld, I, D, "%s.%d.mlp.fc1.weight", L, l);
        B->fc1_b = vlm_ld(&ld, VLM_SHAPE1(I), "%s.%d.mlp.fc1.bias", L, l);
        B->fc2 = vlm_ld_linear(&ld, D, I, "%s.%d.mlp.fc2.weight", L, l);
        B->fc2_b = vlm_ld(&ld, VLM_SHAPE1(D), "%s.%d.mlp.fc2.bias", L, l);
        if (err->code) return err->code;
    }
    /* Final LayerNorm: transformers has one unless use_mean_pooling (true in
     * the converted InternVL checkpoints); the original InternViT has none,
     * but a conversion of a transformers model that has one may carry it as
     * vision_model.layernorm.* and it is then applied the same way. */
    if (o) {
        q->post_ln = vlm_ld_opt(&ld, "layernorm.weight");
        q->post_ln_b = vlm_ld_opt(&ld, "layernorm.bias");
    } else if (!vlm_json_bool(vlm_json_path(m->config, "vision_config.use_mean_pooling"), 1)) {
        q->post_ln = vlm_ld(&ld, VLM_SHAPE1(D), "layernorm.weight");
        q->post_ln_b = vlm_ld(&ld, VLM_SHAPE1(D), "layernorm.bias");
    }
    if (err->code) return err->code;
    if (q->post_ln && (q->post_ln->ndim != 1 || q->post_ln->shape[0] != D ||
                       (q->post_ln_b && (q->post_ln_b->ndim != 1 || q->post_ln_b->shape[0] != D))))
        return vlm_error_set(err, VLM_ERR_FORMAT, "vision layernorm has the wrong shape");

    /* projector */
    static const char *const hf_mm[] = {"model.multi_modal_projector.", "multi_modal_projector.", NULL};
    static const char *const or_mm[] = {"mlp1.", NULL};
    if (!vlm_loader_prefix(&ld, o ? or_mm : hf_mm, o ? "0.weight" : "layer_norm.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no projector weights (%s)", o ? "mlp1.0.weight" : "multi_modal_projector.layer_norm.weight");
    int64_t M = D * q->ps_r * q->ps_r, T = q->txt.hidden;
    q->mm_ln = vlm_ld(&ld, VLM_SHAPE1(M), o ? "0.weight" : "layer_norm.weight");
    q->mm_ln_b = vlm_ld(&ld, VLM_SHAPE1(M), o ? "0.bias" : "layer_norm.bias");
    q->mm1 = vlm_ld_linear(&ld, T, M, o ? "1.weight" : "linear_1.weight");
    q->mm1_b = vlm_ld(&ld, VLM_SHAPE1(T), o ? "1.bias" : "linear_1.bias");
    q->mm2 = vlm_ld_linear(&ld, T, T, o ? "3.weight" : "linear_2.weight");
    q->mm2_b = vlm_ld(&ld, VLM_SHAPE1(T), o ? "3.bias" : "linear_2.bias");
    return err->code;
}

static vlm_status ivl_load_text(vlm_model *m, ivl_model *q, vlm_error *err) {
    const vlm_json *cfg = m->config, *tc = vlm_json_get(cfg, q->original ? "llm_config" : "text_config");
    const char *lm = vlm_json_str(vlm_json_get(tc, "model_type"), "qwen2");
    int qwen2 = !strcmp(lm, "qwen2"), qwen3 = !strcmp(lm, "qwen3");
    int bias = qwen2 || vlm_json_bool(vlm_json_get(tc, "attention_bias"), 0);
    vlm_dec_stack *t = &q->txt;
    vlm_loader ld = {.m = m, .err = err};
    static const char *const prefixes[] = {"model.language_model.", "language_model.model.", NULL};
    if (!vlm_loader_prefix(&ld, prefixes, "embed_tokens.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no decoder weights (language_model.model.embed_tokens.weight)");
    /* lm_head is looked up below under either layout's name */
    /* lm_head: separate when the checkpoint has one; tied otherwise. */
    const char *heads[] = {"lm_head.weight", "language_model.lm_head.weight"};
    vlm_tensor *head = NULL;
    int hi = 0;
    for (; hi < 2 && !(head = vlm_weight_opt(m, heads[hi])); hi++) {} /* made-up weights: none */
    int tied = vlm_json_bool(vlm_json_get(tc, "tie_word_embeddings"), 0) ||
               (!q->original && vlm_json_bool(vlm_json_get(cfg, "tie_word_embeddings"), 0));
    if (head && (head->ndim != 2 || head->shape[0] != m->vocab_size || head->shape[1] != t->hidden))
        return vlm_error_set(err, VLM_ERR_FORMAT, "lm_head has the wrong shape");
    if (vlm_dec_stack_load(&ld, m->vocab_size, bias, qwen3, !head && tied ? 1 : -1, t) != VLM_OK) return err->code;
    for (int l = 0; bias && !qwen2 && l < t->n_layers; l++) /* Qwen3 / Llama attention_bias also biases o_proj */
        t->layers[l].o_b = vlm_ld(&ld, VLM_SHAPE1(t->hidden), "layers.%d.self_attn.o_proj.bias", l);
    if (err->code) return err->code;
    if (head) t->lm_head = vlm_quantize_weight(m, head, VLM_LINEAR_OUTPUT, heads[hi], err);
    else if (!tied)
        t->lm_head = vlm_weight_linear(m, q->original ? "language_model.lm_head.weight" : "lm_head.weight", m->vocab_size,
                                       t->hidden, VLM_LINEAR_OUTPUT, err);
    return err->code;
}

static vlm_status ivl_load(vlm_model *m, vlm_error *err) {
    ivl_model *q = (ivl_model *)calloc(1, sizeof *q);
    if (!q) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    m->impl = q;
    vlm_status s = ivl_load_config(m, q, err);
    if (s != VLM_OK) return s;
    if (vlm_model_check_count(m, q->v_layers, "vision_config.num_hidden_layers", err) != VLM_OK) return err->code;
    q->vl = (ivl_vit_layer *)calloc((size_t)q->v_layers, sizeof *q->vl);
    if (!q->vl) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    if ((s = ivl_load_text(m, q, err)) != VLM_OK) return s;
    return ivl_load_vision(m, q, err);
}

static void ivl_unload(vlm_model *m) {
    ivl_model *q = (ivl_model *)m->impl;
    if (q) { free(q->vl); free(q->txt.layers); free(q); }
    m->impl = NULL;
}

/* ------------------------------------------------------------------ vision */

/* torch's bicubic kernel (A = -0.75) weights for fraction t. */
static void ivl_cubic(float t, float w[4]) {
    const float A = -0.75f;
    float x1 = t + 1.0f, x2 = t, x3 = 1.0f - t, x4 = 2.0f - t;
    w[0] = ((A * x1 - 5.0f * A) * x1 + 8.0f * A) * x1 - 4.0f * A;
    w[1] = ((A + 2.0f) * x2 - (A + 3.0f)) * x2 * x2 + 1.0f;
    w[2] = ((A + 2.0f) * x3 - (A + 3.0f)) * x3 * x3 + 1.0f;
    w[3] = ((A * x4 - 5.0f * A) * x4 + 8.0f * A) * x4 - 4.0f * A;
}

/* Patch position embeddings resized from side×side to gh×gw as
 * F.interpolate(mode="bicubic", align_corners=False) does: source
 * coordinate (o + 0.5) * in/out - 0.5, unclamped, taps clamped to the border. */
static void ivl_bicubic(const float *src, int64_t side, int64_t D, float *dst, int64_t gh, int64_t gw) {
    float sh = (float)side / (float)gh, sw = (float)side / (float)gw;
    for (int64_t oy = 0; oy < gh; oy++) {
        float fy = ((float)oy + 0.5f) * sh - 0.5f, y0 = floorf(fy), wy[4];
        ivl_cubic(fy - y0, wy);
        for (int64_t ox = 0; ox < gw; ox++) {
            float fx = ((float)ox + 0.5f) * sw - 0.5f, x0 = floorf(fx), wx[4];
            ivl_cubic(fx - x0, wx);
            float *o = dst + (oy * gw + ox) * D;
            for (int64_t d = 0; d < D; d++) o[d] = 0.0f;
            for (int i = 0; i < 4; i++) {
                int64_t yy = (int64_t)y0 - 1 + i;
                yy = yy < 0 ? 0 : yy >= side ? side - 1 : yy;
                for (int j = 0; j < 4; j++) {
                    int64_t xx = (int64_t)x0 - 1 + j;
                    xx = xx < 0 ? 0 : xx >= side ? side - 1 : xx;
                    const float *s = src + (yy * side + xx) * D;
                    float w = wy[i] * wx[j];
                    for (int64_t d = 0; d < D; d++) o[d] += w * s[d];
                }
            }
        }
    }
}

/* Position embeddings [1 + gh*gw, D] for a tile of gh×gw patches. */
static vlm_tensor *ivl_pos_embed(vlm_compute *c, const ivl_model *q, int64_t gh, int64_t gw) {
    int64_t side = q->image_size / q->patch, D = q->v_hidden;
    if (gh == side && gw == side) return q->pos;
    float *tab = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)((side * side + 1) * D));
    float *out = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)((gh * gw + 1) * D));
    if (!tab || !out) { vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); c->failed = 1; return NULL; }
    if (vlm_to_host_f32(c, q->pos, tab) != VLM_OK) return NULL;
    memcpy(out, tab, sizeof(float) * (size_t)D); /* the class token's embedding stays */
    ivl_bicubic(tab + D, side, D, out + D, gh, gw);
    return vlm_from_host(c, VLM_F32, 2, (const int64_t[]){gh * gw + 1, D}, out);
}

static vlm_tensor *ivl_norm(vlm_compute *c, const ivl_model *q, vlm_tensor *x, vlm_tensor *w, vlm_tensor *b) {
    return q->v_rms ? vlm_rms_norm(c, x, w, q->v_eps) : vlm_layer_norm(c, x, w, b, q->v_eps);
}

static vlm_tensor *ivl_vit_layer_forward(vlm_compute *c, const ivl_model *q, const ivl_vit_layer *L, vlm_tensor *x) {
    int64_t n = x->shape[0], D = q->v_hidden, H = q->v_heads, hd = D / H;
    vlm_tensor *h = ivl_norm(c, q, x, L->ln1, L->ln1_b);
    vlm_tensor *qh = vlm_linear(c, h, L->q, L->q_b), *kh = vlm_linear(c, h, L->k, L->k_b);
    if (L->q_norm) { /* RMSNorm over all heads together */
        qh = vlm_rms_norm(c, qh, L->q_norm, q->v_eps);
        kh = vlm_rms_norm(c, kh, L->k_norm, q->v_eps);
    }
    vlm_attn_params ap = {.scale = 1.0f / sqrtf((float)hd)};
    vlm_tensor *a = vlm_attention(c, vlm_reshape_3d(c, qh, n, H, hd), vlm_reshape_3d(c, kh, n, H, hd),
                                  vlm_reshape_3d(c, vlm_linear(c, h, L->v, L->v_b), n, H, hd), &ap);
    a = vlm_linear(c, vlm_reshape_2d(c, a, n, D), L->o, L->o_b);
    x = vlm_add(c, x, vlm_mul(c, a, L->ls1));
    h = vlm_unary(c, vlm_linear(c, ivl_norm(c, q, x, L->ln2, L->ln2_b), L->fc1, L->fc1_b), q->v_act);
    return vlm_add(c, x, vlm_mul(c, vlm_linear(c, h, L->fc2, L->fc2_b), L->ls2));
}

/* One tile [C, H, W] -> projected features [n_tokens, hidden]. */
static vlm_tensor *ivl_tile_forward(vlm_compute *c, const ivl_model *q, vlm_tensor *img, vlm_tensor *pos) {
    int64_t gh = img->shape[1] / q->patch, gw = img->shape[2] / q->patch, np = gh * gw, D = q->v_hidden;
    vlm_tensor *x = vlm_linear(c, vlm_im2col(c, img, q->patch), q->patch_w, q->patch_b);
    x = vlm_concat(c, q->cls, x, 0);
    if (pos) x = vlm_add(c, x, pos);
    vlm_tensor *resid = vlm_new_2d(c, VLM_F32, np + 1, D);
    if (!x || !resid || vlm_copy(c, resid, x) != VLM_OK) return NULL;
    for (int l = 0; l < q->n_run; l++) {
        vlm_arena_mark mark = vlm_arena_get_mark(&c->arena);
        x = ivl_vit_layer_forward(c, q, &q->vl[l], resid);
        if (!x || vlm_copy(c, resid, x) != VLM_OK) return NULL;
        vlm_arena_release(&c->arena, mark);
    }
    x = resid;
    if (q->feature_layer == -1 && q->post_ln) x = vlm_layer_norm(c, x, q->post_ln, q->post_ln_b, q->v_eps);
    if (!q->keep_cls) x = vlm_slice(c, x, 0, 1, np);
    int64_t nt = q->keep_cls ? np + 1 : np, r = q->ps_r, side = (int64_t)(sqrt((double)nt) + 0.5);
    x = vlm_pixel_shuffle(c, vlm_reshape_3d(c, vlm_cont(c, x), 1, nt, D), (int)r);
    if (q->ps_v1 && x) /* ps_version v1 leaves the token grid transposed */
        x = vlm_cont(c, vlm_transpose(c, vlm_reshape_4d(c, x, 1, side / r, side / r, D * r * r), 1, 2));
    x = vlm_reshape_2d(c, x, nt / (r * r), D * r * r);
    x = vlm_layer_norm(c, x, q->mm_ln, q->mm_ln_b, 1e-5f); /* nn.LayerNorm default eps */
    x = vlm_unary(c, vlm_linear(c, x, q->mm1, q->mm1_b), q->mm_act);
    return vlm_linear(c, x, q->mm2, q->mm2_b);
}

static vlm_status ivl_encode(vlm_model *m, vlm_compute *c, const vlm_features *f, vlm_vision_out *out) {
    const ivl_model *q = (const ivl_model *)m->impl;
    memset(out, 0, sizeof *out);
    const vlm_tensor *pv = vlm_features_get(f, "pixel_values");
    if (!pv) return vlm_error_set(&c->err, VLM_ERR_ARG, "no pixel_values given");
    if (pv->ndim != 4 || !vlm_is_contiguous(pv) || (pv->dtype != VLM_F32 && pv->dtype != VLM_F16 && pv->dtype != VLM_BF16))
        return vlm_error_set(&c->err, VLM_ERR_ARG, "pixel_values must be contiguous float [tiles, C, H, W]");
    int64_t N = pv->shape[0], C = pv->shape[1], H = pv->shape[2], W = pv->shape[3], P = q->patch;
    int64_t gh = H / P, gw = W / P, np = gh * gw, nt = q->keep_cls ? np + 1 : np;
    int64_t side = (int64_t)(sqrt((double)nt) + 0.5), r = q->ps_r;
    if (N <= 0 || C != q->channels || H % P || W % P || side * side != nt || side % r)
        return vlm_error_set(&c->err, VLM_ERR_ARG,
                             "pixel_values [%lld, %lld, %lld, %lld]: want %d channels and a square grid of %lld-px patches divisible by %lld",
                             (long long)N, (long long)C, (long long)H, (long long)W, q->channels, (long long)P, (long long)r);
    int64_t per = nt / (r * r), hid = q->txt.hidden;
    vlm_tensor *emb = vlm_new_2d(c, VLM_F32, N * per, hid);
    vlm_tensor *px = vlm_from_host(c, pv->dtype, 4, (const int64_t[]){N, C, H, W}, pv->data);
    vlm_tensor *pos = q->pos ? ivl_pos_embed(c, q, gh, gw) : NULL;
    if (!emb || !px || (q->pos && !pos)) return c->err.code ? c->err.code : vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    for (int64_t t = 0; t < N; t++) {
        vlm_arena_mark mark = vlm_arena_get_mark(&c->arena);
        vlm_tensor *y = ivl_tile_forward(c, q, vlm_cont(c, vlm_index(c, px, t)), pos);
        if (!y || vlm_copy(c, vlm_slice(c, emb, 0, t * per, per), y) != VLM_OK)
            return c->err.code ? c->err.code : VLM_ERR_ARG;
        vlm_arena_release(&c->arena, mark);
    }
    out->embeds = emb;
    out->n_image_tokens = emb->shape[0];
    return VLM_OK;
}

/* ------------------------------------------------------------------ decoder */

static vlm_status ivl_forward(vlm_model *m, vlm_seq *s, const int32_t *ids, int n, const vlm_vision_out *vision,
                              const vlm_features *f, int all_logits, vlm_tensor **logits) {
    const ivl_model *q = (const ivl_model *)m->impl;
    (void)f;
    /* Dynamic NTK as transformers: past the trained length L, a call whose
     * last position is p - 1 uses base theta * (factor * p / L - (factor - 1))^(d / (d - 2)). */
    float theta = q->theta;
    int64_t p = (int64_t)s->n_past + n, d = q->txt.hp.head_dim;
    if (q->ntk_factor > 0 && p > q->ntk_max_pos)
        theta = (float)(theta * pow(q->ntk_factor * (double)p / q->ntk_max_pos - (q->ntk_factor - 1.0), (double)d / (double)(d - 2)));
    float inv[512];
    if (d <= 0 || d > 1024) return vlm_error_set(&s->c.err, VLM_ERR_UNSUPPORTED, "head_dim %lld", (long long)d);
    vlm_rope_inv_freq(inv, (int)d, theta);
    return vlm_dec_stack_forward(s, &q->txt, inv, ids, n, vision, m->image_token_id, all_logits, logits);
}

static vlm_status ivl_seq_init(vlm_model *m, vlm_seq *s, vlm_error *err) {
    const ivl_model *q = (const ivl_model *)m->impl;
    return vlm_seq_kv_uniform(s, q->txt.n_layers, q->txt.hp.n_kv_heads, q->txt.hp.head_dim, err);
}

static void ivl_seq_free(vlm_model *m, vlm_seq *s) { (void)m; (void)s; }

/* Made-up tiles: n_tiles, or as many as GotOcr2's crop_to_patches makes of a
 * WxH image (vlm_internvl_grid, plus a thumbnail when more than one) with
 * min/max_patches and crop_to_patches from preprocessor_config.json
 * (defaults 1, 12, on). */
static vlm_status ivl_bench_vision(vlm_model *m, int w, int h, int n_tiles, vlm_features *f, int *tiles, vlm_error *err) {
    int side = ((ivl_model *)m->impl)->image_size;
    if (n_tiles <= 0) {
        char path[4096];
        snprintf(path, sizeof path, "%s/preprocessor_config.json", m->dir);
        vlm_error ignore = {0};
        vlm_json *pp = vlm_json_load(path, &ignore);
        int lo = (int)vlm_json_int(vlm_json_get(pp, "min_patches"), 1), hi = (int)vlm_json_int(vlm_json_get(pp, "max_patches"), 12);
        int crop = vlm_json_bool(vlm_json_get(pp, "crop_to_patches"), 1);
        vlm_json_free(pp);
        int bc = 1, br = 1;
        if (crop) vlm_internvl_grid(h, w, side, side, lo, hi, &bc, &br);
        n_tiles = bc * br > 1 ? bc * br + 1 : 1;
    }
    *tiles = n_tiles;
    return vlm_bench_tiles(n_tiles, side, f, err);
}

static const char *const ivl_hf_names[] = {"InternVLForConditionalGeneration", "InternVLModel", "InternVLChatModel", NULL};
static const char *const ivl_model_types[] = {"internvl", "internvl_chat", NULL};

const vlm_arch vlm_arch_internvl = {
    .name = "internvl",
    .hf_architectures = ivl_hf_names,
    .model_types = ivl_model_types,
    .load = ivl_load,
    .unload = ivl_unload,
    .encode = ivl_encode,
    .forward = ivl_forward,
    .seq_init = ivl_seq_init,
    .seq_free = ivl_seq_free,
    .bench_vision = ivl_bench_vision,
};
