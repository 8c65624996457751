/* Gemma 4: a ViT with 2D RoPE, learned (x, y) position tables and k×k
 * average pooling, projected into a Gemma decoder that mixes sliding-window
 * and full-attention layers (each with its own head size, KV heads and RoPE),
 * per-layer input embeddings (PLE), KV sharing across the last layers, an
 * optional MoE block beside the dense MLP, and final logit soft-capping.
 * Every RMSNorm here scales by w (not 1 + w). */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A linear layer that may clamp its input and output (use_clipped_linears). */
typedef struct {
    vlm_tensor *w;
    float in_lo, in_hi, out_lo, out_hi;
} g4_clin;

typedef struct {
    vlm_tensor *in_norm, *post_attn_norm, *pre_ffw_norm, *post_ffw_norm, *q_norm, *k_norm;
    g4_clin q, k, v, o, gate, up, down;
} g4_vit_layer;

typedef struct {
    vlm_dec_layer d;                 /* attn_norm, q, k, v (NULL: k = v), o, q_norm, k_norm, mlp_norm, gate, up, down */
    vlm_dec_hparams hp;              /* per layer: head_dim and KV heads differ between layer types */
    vlm_tensor *post_attn_norm, *post_ffw_norm, *scalar;
    vlm_tensor *ple_gate, *ple_proj, *ple_norm;
    vlm_tensor *router_scale, *router_proj, *expert_scale, *gate_up_e, *down_e;
    vlm_tensor *post_ffw_norm_1, *pre_ffw_norm_2, *post_ffw_norm_2;
    int full;                        /* full attention (else sliding) */
    int share;                       /* layer whose KV cache this one reads, or -1 */
    int inter;
} g4_layer;

/* RoPE of one layer type. */
typedef struct {
    int dim;                         /* head dim of the type: table width */
    float inv_freq[512];             /* dim/2 frequencies (zeros for the unrotated part) */
} g4_rope;

typedef struct {
    /* vision */
    int has_vision, v_layers, v_hidden, v_heads, v_kv_heads, v_head_dim, v_inter, patch, pool, pos_size, standardize;
    float v_eps, v_theta;
    vlm_tensor *patch_proj, *pos_table, *std_bias, *std_scale, *mm_proj;
    g4_vit_layer *vl;
    /* text */
    int n_layers, hidden, n_heads, window, ple_dim, ple_vocab, n_experts, top_k, moe_inter, bidir_vision, attn_bias;
    vlm_unary_op act, v_act;
    int32_t pad_id, audio_token;
    float eps, softcap;
    g4_rope rope[2];                 /* [0] sliding, [1] full */
    vlm_tensor *embed, *norm, *ple_embed, *ple_model_proj, *ple_proj_norm;
    vlm_dtype embed_dtype, ple_dtype; /* the tables' stored dtypes (they may be quantized at load) */
    g4_layer *layers;
} g4_model;

typedef struct {
    int32_t *span;                   /* [n_ctx] bidirectional span per position, -1 none */
    int32_t n_spans;                 /* span ids handed out so far */
} g4_seq;

/* Positive int or def; JSON null counts as absent. */
static int g4_int(const vlm_json *j, int def) {
    return j && j->type == VLM_JSON_NUMBER ? (int)j->num : def;
}

/* Per-layer override (transformers 5.17 writes per_layer_config {"l": {...}}). */
static int g4_layer_int(const vlm_json *cfg, int l, const char *key, int def) {
    char idx[16];
    snprintf(idx, sizeof idx, "%d", l);
    return g4_int(vlm_json_get(vlm_json_get(vlm_cfg_text(cfg, "per_layer_config"), idx), key), def);
}

static int g4_act(const char *name, vlm_unary_op *out) {
    if (!strcmp(name, "gelu_pytorch_tanh") || !strcmp(name, "gelu_tanh")) *out = VLM_UNARY_GELU_TANH;
    else if (!strcmp(name, "gelu")) *out = VLM_UNARY_GELU;
    else if (!strcmp(name, "silu")) *out = VLM_UNARY_SILU;
    else return 1;
    return 0;
}

static vlm_status g4_rope_init(const vlm_json *cfg, const char *type, int dim, float def_theta, g4_rope *r,
                               vlm_error *err) {
    const vlm_json *rp = vlm_json_get(vlm_cfg_text(cfg, "rope_parameters"), type);
    const char *kind = vlm_json_str(vlm_json_get(rp, "rope_type"), "default");
    float theta = (float)vlm_json_num(vlm_json_get(rp, "rope_theta"), def_theta);
    double factor = vlm_json_num(vlm_json_get(rp, "factor"), 1.0);
    double partial = vlm_json_num(vlm_json_get(rp, "partial_rotary_factor"), 1.0);
    if (dim <= 0 || dim > 1024 || dim % 2) return vlm_error_set(err, VLM_ERR_CONFIG, "%s head_dim %d", type, dim);
    r->dim = dim;
    int half = dim / 2, rotated = half;
    if (!strcmp(kind, "proportional")) rotated = (int)floor(partial * dim / 2.0);
    else if (strcmp(kind, "default") && strcmp(kind, "linear"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "%s rope_type \"%s\" not supported", type, kind);
    if (strcmp(kind, "linear") && strcmp(kind, "proportional")) factor = 1.0;
    for (int i = 0; i < half; i++)
        r->inv_freq[i] = i < rotated ? (float)(1.0 / pow((double)theta, (double)(2 * i) / dim) / factor) : 0.0f;
    return VLM_OK;
}

static vlm_status g4_load_config(vlm_model *m, g4_model *g, vlm_error *err) {
    const vlm_json *cfg = m->config, *vc = vlm_json_get(cfg, "vision_config");
    g->hidden = g4_int(vlm_cfg_text(cfg, "hidden_size"), 0);
    g->n_layers = g4_int(vlm_cfg_text(cfg, "num_hidden_layers"), 0);
    g->n_heads = g4_int(vlm_cfg_text(cfg, "num_attention_heads"), 0);
    g->window = g4_int(vlm_cfg_text(cfg, "sliding_window"), 512);
    g->ple_dim = g4_int(vlm_cfg_text(cfg, "hidden_size_per_layer_input"), 0);
    g->ple_vocab = g4_int(vlm_cfg_text(cfg, "vocab_size_per_layer_input"), 0);
    g->eps = (float)vlm_json_num(vlm_cfg_text(cfg, "rms_norm_eps"), 1e-6);
    const vlm_json *sc = vlm_cfg_text(cfg, "final_logit_softcapping");
    g->softcap = sc && sc->type == VLM_JSON_NUMBER ? (float)sc->num : 0.0f;
    g->pad_id = g4_int(vlm_cfg_text(cfg, "pad_token_id"), 0);
    g->bidir_vision = !strcmp(vlm_json_str(vlm_cfg_text(cfg, "use_bidirectional_attention"), ""), "vision");
    if (vlm_json_bool(vlm_cfg_text(cfg, "enable_moe_block"), 0)) {
        g->n_experts = g4_int(vlm_cfg_text(cfg, "num_experts"), 0);
        g->top_k = g4_int(vlm_cfg_text(cfg, "top_k_experts"), 0);
        g->moe_inter = g4_int(vlm_cfg_text(cfg, "moe_intermediate_size"), g4_int(vlm_cfg_text(cfg, "expert_intermediate_size"), 0));
        if (g->n_experts <= 0 || g->top_k <= 0 || g->top_k > g->n_experts || g->moe_inter <= 0)
            return vlm_error_set(err, VLM_ERR_CONFIG, "MoE block: num_experts/top_k_experts/moe_intermediate_size inconsistent");
    }
    m->vocab_size = g4_int(vlm_cfg_text(cfg, "vocab_size"), 0);
    m->hidden_size = g->hidden;
    m->image_token_id = g4_int(vlm_json_get(cfg, "image_token_id"), 258880);
    m->video_token_id = g4_int(vlm_json_get(cfg, "video_token_id"), 258884);
    g->audio_token = g4_int(vlm_json_get(cfg, "audio_token_id"), -1);
    if (g4_act(vlm_json_str(vlm_cfg_text(cfg, "hidden_activation"), "gelu_pytorch_tanh"), &g->act) ||
        g4_act(vlm_json_str(vlm_json_get(vc, "hidden_activation"), "gelu_pytorch_tanh"), &g->v_act))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "hidden_activation not supported");
    g->attn_bias = vlm_json_bool(vlm_cfg_text(cfg, "attention_bias"), 0);
    if (vlm_json_bool(vlm_json_get(vc, "attention_bias"), 0))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "vision attention_bias not supported");
    int inter = g4_int(vlm_cfg_text(cfg, "intermediate_size"), 0);
    int head_dim = g4_int(vlm_cfg_text(cfg, "head_dim"), g->n_heads > 0 ? g->hidden / g->n_heads : 0);
    int global_dim = g4_int(vlm_cfg_text(cfg, "global_head_dim"), head_dim);
    int kv_heads = g4_int(vlm_cfg_text(cfg, "num_key_value_heads"), g->n_heads);
    int k_eq_v = vlm_json_bool(vlm_cfg_text(cfg, "attention_k_eq_v"), 0);
    int global_kv = g4_int(vlm_cfg_text(cfg, "num_global_key_value_heads"), kv_heads);
    int n_shared = g4_int(vlm_cfg_text(cfg, "num_kv_shared_layers"), 0);
    int double_wide = vlm_json_bool(vlm_cfg_text(cfg, "use_double_wide_mlp"), 0);
    const vlm_json *types = vlm_cfg_text(cfg, "layer_types");
    if (g->hidden <= 0 || g->n_layers <= 0 || g->n_heads <= 0 || inter <= 0 || head_dim <= 0 || kv_heads <= 0 ||
        m->vocab_size <= 0 || g->window <= 0 || n_shared < 0 || n_shared >= g->n_layers)
        return vlm_error_set(err, VLM_ERR_CONFIG, "text config: hidden_size/num_hidden_layers/heads/vocab_size/sliding_window missing or inconsistent");
    if (!types || types->type != VLM_JSON_ARRAY || types->n != g->n_layers)
        return vlm_error_set(err, VLM_ERR_CONFIG, "layer_types must list num_hidden_layers entries");
    if (g->ple_dim > 0 && g->ple_vocab <= 0) g->ple_vocab = m->vocab_size;
    if (vlm_model_check_count(m, g->n_layers, "num_hidden_layers", err) != VLM_OK) return err->code;
    g->layers = (g4_layer *)calloc((size_t)g->n_layers, sizeof *g->layers);
    if (!g->layers) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    int first_shared = g->n_layers - n_shared, dims[2] = {0, 0};
    for (int l = 0; l < g->n_layers; l++) {
        g4_layer *L = &g->layers[l];
        const char *t = vlm_json_str(vlm_json_at(types, l), "");
        if (strcmp(t, "sliding_attention") && strcmp(t, "full_attention"))
            return vlm_error_set(err, VLM_ERR_CONFIG, "layer_types[%d] = \"%s\"", l, t);
        L->full = !strcmp(t, "full_attention");
        L->d.v = NULL;
        L->hp.n_heads = g->n_heads;
        L->hp.eps = g->eps;
        L->hp.act = g->act;
        L->hp.head_dim = g4_layer_int(cfg, l, "head_dim", L->full ? global_dim : head_dim);
        L->hp.n_kv_heads = g4_layer_int(cfg, l, "num_key_value_heads", L->full && k_eq_v ? global_kv : kv_heads);
        if (L->hp.head_dim <= 0 || L->hp.n_kv_heads <= 0 || g->n_heads % L->hp.n_kv_heads)
            return vlm_error_set(err, VLM_ERR_CONFIG, "layer %d: head_dim %d / %d KV heads", l, L->hp.head_dim, L->hp.n_kv_heads);
        if (dims[L->full] && dims[L->full] != L->hp.head_dim)
            return vlm_error_set(err, VLM_ERR_CONFIG, "layers of one type with different head dims are not supported");
        dims[L->full] = L->hp.head_dim;
        L->inter = inter * (double_wide && l >= first_shared && first_shared > 0 ? 2 : 1);
        L->share = -1;
        if (l >= first_shared) { /* the last earlier non-shared layer of the same type */
            for (int j = first_shared - 1; j >= 0 && L->share < 0; j--)
                if (g->layers[j].full == L->full) L->share = j;
            if (L->share < 0) return vlm_error_set(err, VLM_ERR_CONFIG, "layer %d has no earlier layer of its type to share", l);
            if (g->layers[L->share].hp.head_dim != L->hp.head_dim || g->layers[L->share].hp.n_kv_heads != L->hp.n_kv_heads)
                return vlm_error_set(err, VLM_ERR_CONFIG, "layer %d shares a cache of another shape", l);
        }
    }
    for (int t = 0; t < 2; t++)
        if (dims[t] && g4_rope_init(cfg, t ? "full_attention" : "sliding_attention", dims[t], t ? 1e6f : 1e4f,
                                    &g->rope[t], err) != VLM_OK)
            return err->code;
    if (!vc || vc->type != VLM_JSON_OBJECT) return VLM_OK; /* text-only (Gemma4ForCausalLM) */
    g->has_vision = 1;
    g->v_hidden = g4_int(vlm_json_get(vc, "hidden_size"), 768);
    g->v_layers = g4_int(vlm_json_get(vc, "num_hidden_layers"), 16);
    g->v_heads = g4_int(vlm_json_get(vc, "num_attention_heads"), 12);
    g->v_kv_heads = g4_int(vlm_json_get(vc, "num_key_value_heads"), g->v_heads);
    g->v_head_dim = g4_int(vlm_json_get(vc, "head_dim"), g->v_heads > 0 ? g->v_hidden / g->v_heads : 0);
    g->v_inter = g4_int(vlm_json_get(vc, "intermediate_size"), 3072);
    g->patch = g4_int(vlm_json_get(vc, "patch_size"), 16);
    g->pool = g4_int(vlm_json_get(vc, "pooling_kernel_size"), 3);
    g->pos_size = g4_int(vlm_json_get(vc, "position_embedding_size"), 10240);
    g->standardize = vlm_json_bool(vlm_json_get(vc, "standardize"), 0);
    g->v_eps = (float)vlm_json_num(vlm_json_get(vc, "rms_norm_eps"), 1e-6);
    g->v_theta = (float)vlm_json_num(vlm_json_path(vc, "rope_parameters.rope_theta"), 100.0);
    if (g->v_hidden <= 0 || g->v_layers <= 0 || g->v_heads <= 0 || g->v_kv_heads <= 0 || g->v_heads % g->v_kv_heads ||
        g->v_head_dim <= 0 || g->v_head_dim % 4 || g->v_head_dim > 1024 || g->patch <= 0 || g->pool <= 0 || g->pos_size <= 0)
        return vlm_error_set(err, VLM_ERR_CONFIG, "vision config: inconsistent sizes");
    return VLM_OK;
}

static float g4_scalar(vlm_loader *ld, const char *fmt, const char *name, float def) {
    vlm_tensor *t = vlm_ld_opt(ld, fmt, name);
    return t && vlm_nelem(t) == 1 ? vlm_get_f32(t, 0) : def;
}

static g4_clin g4_clin_load(vlm_loader *ld, int64_t out, int64_t in, int l, const char *name) {
    char base[128];
    snprintf(base, sizeof base, "encoder.layers.%d.%s", l, name);
    g4_clin c = {.in_lo = -INFINITY, .in_hi = INFINITY, .out_lo = -INFINITY, .out_hi = INFINITY};
    c.w = vlm_ld_linear(ld, out, in, "%s.linear.weight", base);
    c.in_lo = g4_scalar(ld, "%s.input_min", base, -INFINITY);
    c.in_hi = g4_scalar(ld, "%s.input_max", base, INFINITY);
    c.out_lo = g4_scalar(ld, "%s.output_min", base, -INFINITY);
    c.out_hi = g4_scalar(ld, "%s.output_max", base, INFINITY);
    return c;
}

static vlm_status g4_load_vision(vlm_model *m, g4_model *g, vlm_loader *lp) {
    (void)m;
    vlm_error *err = lp->err;
    vlm_loader ld = *lp;
    ld.role = VLM_LINEAR_VISION;
    static const char *const vis_prefixes[] = {"model.vision_tower.", "vision_tower.", NULL};
    if (!vlm_loader_prefix(&ld, vis_prefixes, "patch_embedder.input_proj.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no vision tower weights (model.vision_tower.patch_embedder.input_proj.weight)");
    int64_t V = g->v_hidden, I = g->v_inter, qd = (int64_t)g->v_heads * g->v_head_dim,
            kd = (int64_t)g->v_kv_heads * g->v_head_dim;
    if (vlm_model_check_count(m, g->v_layers, "vision_config.num_hidden_layers", err) != VLM_OK) return err->code;
    g->vl = (g4_vit_layer *)calloc((size_t)g->v_layers, sizeof *g->vl);
    if (!g->vl) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    g->patch_proj = vlm_ld(&ld, VLM_SHAPE2(V, 3 * g->patch * g->patch), "patch_embedder.input_proj.weight");
    g->pos_table = vlm_ld(&ld, VLM_SHAPE3(2, g->pos_size, V), "patch_embedder.position_embedding_table");
    for (int l = 0; l < g->v_layers; l++) {
        g4_vit_layer *B = &g->vl[l];
        B->in_norm = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.input_layernorm.weight", l);
        B->post_attn_norm = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.post_attention_layernorm.weight", l);
        B->pre_ffw_norm = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.pre_feedforward_layernorm.weight", l);
        B->post_ffw_norm = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.post_feedforward_layernorm.weight", l);
        B->q_norm = vlm_ld(&ld, VLM_SHAPE1(g->v_head_dim), "encoder.layers.%d.self_attn.q_norm.weight", l);
        B->k_norm = vlm_ld(&ld, VLM_SHAPE1(g->v_head_dim), "encoder.layers.%d.self_attn.k_norm.weight", l);
        B->q = g4_clin_load(&ld, qd, V, l, "self_attn.q_proj");
        B->k = g4_clin_load(&ld, kd, V, l, "self_attn.k_proj");
        B->v = g4_clin_load(&ld, kd, V, l, "self_attn.v_proj");
        B->o = g4_clin_load(&ld, V, qd, l, "self_attn.o_proj");
        B->gate = g4_clin_load(&ld, I, V, l, "mlp.gate_proj");
        B->up = g4_clin_load(&ld, I, V, l, "mlp.up_proj");
        B->down = g4_clin_load(&ld, V, I, l, "mlp.down_proj");
    }
    if (g->standardize) {
        g->std_bias = vlm_ld(&ld, VLM_SHAPE1(V), "std_bias");
        g->std_scale = vlm_ld(&ld, VLM_SHAPE1(V), "std_scale");
    }
    static const char *const emb_prefixes[] = {"model.embed_vision.", "embed_vision.", NULL};
    if (!vlm_loader_prefix(&ld, emb_prefixes, "embedding_projection.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no vision projection (model.embed_vision.embedding_projection.weight)");
    g->mm_proj = vlm_ld_linear(&ld, g->hidden, V, "embedding_projection.weight");
    if (err->code) return err->code;
    return VLM_OK;
}

/* A weight's dtype in the checkpoint (made up: the made-up dtype). */
static vlm_dtype g4_stored_dtype(const vlm_loader *ld, const char *name) {
    char full[512];
    snprintf(full, sizeof full, "%s%s", ld->prefix ? ld->prefix : "", name);
    const vlm_st_entry *e = ld->m->random_weights ? NULL : vlm_st_find(&ld->m->weights, full);
    return e ? e->orig_dtype : ld->m->random_dtype; /* a quantized folder records it */
}

static vlm_status g4_load(vlm_model *m, vlm_error *err) {
    g4_model *g = (g4_model *)calloc(1, sizeof *g);
    if (!g) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    m->impl = g;
    if (g4_load_config(m, g, err) != VLM_OK) return err->code;
    vlm_loader ld = {.m = m, .err = err};
    if (g->has_vision && g4_load_vision(m, g, &ld) != VLM_OK) return err->code;

    static const char *const txt_prefixes[] = {"model.language_model.", "model.", "language_model.model.", NULL};
    if (!vlm_loader_prefix(&ld, txt_prefixes, "embed_tokens.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no decoder weights (model.language_model.embed_tokens.weight)");
    int64_t Hd = g->hidden, NL = g->n_layers, P = g->ple_dim;
    g->embed_dtype = g4_stored_dtype(&ld, "embed_tokens.weight");
    ld.role = VLM_LINEAR_OUTPUT; /* the table is the LM head too */
    g->embed = vlm_ld_linear(&ld, m->vocab_size, Hd, "embed_tokens.weight");
    ld.role = VLM_LINEAR_TEXT;
    g->norm = vlm_ld(&ld, VLM_SHAPE1(Hd), "norm.weight");
    if (P > 0) {
        g->ple_dtype = g4_stored_dtype(&ld, "embed_tokens_per_layer.weight");
        g->ple_embed = vlm_ld_linear(&ld, g->ple_vocab, NL * P, "embed_tokens_per_layer.weight");
        g->ple_model_proj = vlm_ld_linear(&ld, NL * P, Hd, "per_layer_model_projection.weight");
        g->ple_proj_norm = vlm_ld(&ld, VLM_SHAPE1(P), "per_layer_projection_norm.weight");
    }
    for (int l = 0; l < g->n_layers; l++) {
        g4_layer *L = &g->layers[l];
        int64_t D = L->hp.head_dim, qdim = (int64_t)g->n_heads * D, kdim = (int64_t)L->hp.n_kv_heads * D;
        L->d.attn_norm = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.input_layernorm.weight", l);
        L->post_attn_norm = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.post_attention_layernorm.weight", l);
        L->d.mlp_norm = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.pre_feedforward_layernorm.weight", l);
        L->post_ffw_norm = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.post_feedforward_layernorm.weight", l);
        L->d.q = vlm_ld_linear(&ld, qdim, Hd, "layers.%d.self_attn.q_proj.weight", l);
        L->d.q_norm = vlm_ld(&ld, VLM_SHAPE1(D), "layers.%d.self_attn.q_norm.weight", l);
        L->d.o = vlm_ld_linear(&ld, Hd, qdim, "layers.%d.self_attn.o_proj.weight", l);
        if (g->attn_bias) {
            L->d.q_b = vlm_ld(&ld, VLM_SHAPE1(qdim), "layers.%d.self_attn.q_proj.bias", l);
            L->d.o_b = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.self_attn.o_proj.bias", l);
        }
        if (L->share < 0) {
            L->d.k = vlm_ld_linear(&ld, kdim, Hd, "layers.%d.self_attn.k_proj.weight", l);
            L->d.k_norm = vlm_ld(&ld, VLM_SHAPE1(D), "layers.%d.self_attn.k_norm.weight", l);
            int k_eq_v = L->full && vlm_json_bool(vlm_cfg_text(m->config, "attention_k_eq_v"), 0);
            if (!k_eq_v) L->d.v = vlm_ld_linear(&ld, kdim, Hd, "layers.%d.self_attn.v_proj.weight", l);
            if (g->attn_bias) {
                L->d.k_b = vlm_ld(&ld, VLM_SHAPE1(kdim), "layers.%d.self_attn.k_proj.bias", l);
                if (L->d.v) L->d.v_b = vlm_ld(&ld, VLM_SHAPE1(kdim), "layers.%d.self_attn.v_proj.bias", l);
            }
        }
        L->d.gate = vlm_ld_linear(&ld, L->inter, Hd, "layers.%d.mlp.gate_proj.weight", l);
        L->d.up = vlm_ld_linear(&ld, L->inter, Hd, "layers.%d.mlp.up_proj.weight", l);
        L->d.down = vlm_ld_linear(&ld, Hd, L->inter, "layers.%d.mlp.down_proj.weight", l);
        L->scalar = vlm_ld_opt(&ld, "layers.%d.layer_scalar", l);
        if (L->scalar && vlm_nelem(L->scalar) != 1) L->scalar = NULL;
        if (P > 0) {
            L->ple_gate = vlm_ld_linear(&ld, P, Hd, "layers.%d.per_layer_input_gate.weight", l);
            L->ple_proj = vlm_ld_linear(&ld, Hd, P, "layers.%d.per_layer_projection.weight", l);
            L->ple_norm = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.post_per_layer_input_norm.weight", l);
        }
        if (g->n_experts > 0) {
            int64_t E = g->n_experts, MI = g->moe_inter;
            L->router_scale = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.router.scale", l);
            L->router_proj = vlm_ld(&ld, VLM_SHAPE2(E, Hd), "layers.%d.router.proj.weight", l);
            L->expert_scale = vlm_ld(&ld, VLM_SHAPE1(E), "layers.%d.router.per_expert_scale", l);
            L->gate_up_e = vlm_ld_quantize(&ld, vlm_ld(&ld, VLM_SHAPE3(E, 2 * MI, Hd), "layers.%d.experts.gate_up_proj", l),
                                           "layers.%d.experts.gate_up_proj", l);
            L->down_e = vlm_ld_quantize(&ld, vlm_ld(&ld, VLM_SHAPE3(E, Hd, MI), "layers.%d.experts.down_proj", l),
                                        "layers.%d.experts.down_proj", l);
            L->post_ffw_norm_1 = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.post_feedforward_layernorm_1.weight", l);
            L->pre_ffw_norm_2 = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.pre_feedforward_layernorm_2.weight", l);
            L->post_ffw_norm_2 = vlm_ld(&ld, VLM_SHAPE1(Hd), "layers.%d.post_feedforward_layernorm_2.weight", l);
        }
        if (err->code) return err->code;
    }
    return err->code; /* the LM head is the embedding table (tied) */
}

static void g4_unload(vlm_model *m) {
    g4_model *g = (g4_model *)m->impl;
    if (g) { free(g->vl); free(g->layers); free(g); }
    m->impl = NULL;
}

/* ------------------------------------------------------------------ vision */

/* clamp(x, lo, hi) from the op set: max(x, lo) = lo + relu(x - lo), min(x, hi) = hi - relu(hi - x). */
static vlm_tensor *g4_clamp(vlm_compute *c, vlm_tensor *x, float lo, float hi) {
    if (isfinite(lo)) x = vlm_scale_bias(c, vlm_unary(c, vlm_scale_bias(c, x, 1.0f, -lo), VLM_UNARY_RELU), 1.0f, lo);
    if (isfinite(hi)) x = vlm_scale_bias(c, vlm_unary(c, vlm_scale_bias(c, x, -1.0f, hi), VLM_UNARY_RELU), -1.0f, hi);
    return x;
}

static vlm_tensor *g4_clinear(vlm_compute *c, vlm_tensor *x, const g4_clin *l) {
    return g4_clamp(c, vlm_linear(c, g4_clamp(c, x, l->in_lo, l->in_hi), l->w, NULL), l->out_lo, l->out_hi);
}

/* 2D RoPE: the first half of each head rotates with the x position, the second with y. */
static vlm_tensor *g4_rope2d(vlm_compute *c, vlm_tensor *x, vlm_tensor *const cs[4]) {
    int64_t h = x->shape[2] / 2;
    vlm_tensor *a = vlm_rope(c, vlm_cont(c, vlm_slice(c, x, 2, 0, h)), cs[0], cs[1]);
    vlm_tensor *b = vlm_rope(c, vlm_cont(c, vlm_slice(c, x, 2, h, h)), cs[2], cs[3]);
    return vlm_concat(c, a, b, 2);
}

static vlm_tensor *g4_vit_layer_forward(vlm_compute *c, const g4_model *g, const g4_vit_layer *B, vlm_tensor *x,
                                        vlm_tensor *const cs[4]) {
    int64_t n = x->shape[0], D = g->v_head_dim;
    vlm_tensor *h = vlm_rms_norm(c, x, B->in_norm, g->v_eps);
    vlm_tensor *q = vlm_rms_norm(c, vlm_reshape_3d(c, g4_clinear(c, h, &B->q), n, g->v_heads, D), B->q_norm, g->v_eps);
    vlm_tensor *k = vlm_rms_norm(c, vlm_reshape_3d(c, g4_clinear(c, h, &B->k), n, g->v_kv_heads, D), B->k_norm, g->v_eps);
    vlm_tensor *v = vlm_rms_norm(c, vlm_reshape_3d(c, g4_clinear(c, h, &B->v), n, g->v_kv_heads, D), NULL, g->v_eps);
    if (!q || !k) return NULL;
    vlm_attn_params p = {.scale = 1.0f};
    vlm_tensor *a = vlm_attention(c, g4_rope2d(c, q, cs), g4_rope2d(c, k, cs), v, &p);
    a = g4_clinear(c, vlm_reshape_2d(c, a, n, (int64_t)g->v_heads * D), &B->o);
    x = vlm_add(c, x, vlm_rms_norm(c, a, B->post_attn_norm, g->v_eps));
    h = vlm_rms_norm(c, x, B->pre_ffw_norm, g->v_eps);
    h = vlm_glu(c, g4_clinear(c, h, &B->gate), g4_clinear(c, h, &B->up), g->v_act);
    h = g4_clinear(c, h, &B->down);
    return vlm_add(c, x, vlm_rms_norm(c, h, B->post_ffw_norm, g->v_eps));
}

/* One image: patches [N, 3*P*P] (rows b of pixel_values), positions [N, 2]
 * (x, y; -1 = padding) -> soft tokens [n_out, text hidden]. */
static vlm_tensor *g4_vision_image(vlm_compute *c, const g4_model *g, const vlm_tensor *pix, const vlm_tensor *posid,
                                   int64_t b) {
    int64_t N = pix->shape[1], K = pix->shape[2], kk = (int64_t)g->pool * g->pool;
    int64_t nv = 0, max_x = 0;
    int32_t *xs = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)(3 * N + 8));
    float *px = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(N * K + 8));
    if (!xs || !px) { vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); c->failed = 1; return NULL; }
    int32_t *ys = xs + N, *kid = ys + N;
    for (int64_t i = 0; i < N; i++) { /* max over all patches, padding clamped to 0, as transformers */
        int64_t x = vlm_get_i64(posid, (b * N + i) * 2);
        if (x > max_x) max_x = x;
    }
    max_x += 1;
    int64_t n_out = N / kk;
    for (int64_t i = 0; i < N; i++) {
        int64_t x = vlm_get_i64(posid, (b * N + i) * 2), y = vlm_get_i64(posid, (b * N + i) * 2 + 1);
        int pad = x == -1 && y == -1;
        int64_t cx = x < 0 ? 0 : x, cy = y < 0 ? 0 : y;
        int64_t ki = cx / g->pool + (max_x / g->pool) * (cy / g->pool);
        if (cx >= g->pos_size || cy >= g->pos_size || ki >= n_out) {
            vlm_error_set(&c->err, VLM_ERR_ARG, "patch position (%lld, %lld) outside the position table / pooling grid",
                          (long long)x, (long long)y);
            c->failed = 1;
            return NULL;
        }
        if (pad) { /* padding only marks its pooling cell: kept at the far end of kid */
            kid[N - 1 - (i - nv)] = (int32_t)ki;
            continue;
        }
        xs[nv] = (int32_t)cx;
        ys[nv] = (int32_t)cy;
        kid[nv] = (int32_t)ki;
        const int64_t base = (b * N + i) * K;
        if (pix->dtype == VLM_F32 && vlm_is_contiguous(pix)) memcpy(px + nv * K, (const float *)pix->data + base, sizeof(float) * (size_t)K);
        else for (int64_t j = 0; j < K; j++) px[nv * K + j] = vlm_get_f32(pix, base + j);
        nv++;
    }
    if (nv == 0) { vlm_error_set(&c->err, VLM_ERR_ARG, "an image without patches"); c->failed = 1; return NULL; }
    /* pooling cells in use (by any patch, padding included), in cell order */
    int32_t *row_of = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n_out);
    float *cs = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(4 * nv * (g->v_head_dim / 2)));
    if (!row_of || !cs) { vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); c->failed = 1; return NULL; }
    for (int64_t r = 0; r < n_out; r++) row_of[r] = -1;
    for (int64_t i = 0; i < N; i++) row_of[kid[i]] = 0;
    int64_t n_keep = 0;
    for (int64_t r = 0; r < n_out; r++) if (row_of[r] == 0) row_of[r] = (int32_t)n_keep++;
    float *pool = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n_keep * nv));
    if (!pool) { vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); c->failed = 1; return NULL; }
    memset(pool, 0, sizeof(float) * (size_t)(n_keep * nv));
    for (int64_t j = 0; j < nv; j++) pool[row_of[kid[j]] * nv + j] = 1.0f / (float)kk;

    /* 2D RoPE tables: [nv, hd/2] for x and for y */
    int hh = g->v_head_dim / 2;
    float inv[512], *fx = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(2 * nv));
    if (!fx) { vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); c->failed = 1; return NULL; }
    vlm_rope_inv_freq(inv, hh, g->v_theta);
    for (int64_t j = 0; j < nv; j++) { fx[j] = (float)xs[j]; fx[nv + j] = (float)ys[j]; }
    vlm_rope_table(cs, cs + nv * hh, fx, (int)nv, inv, hh / 2);
    vlm_rope_table(cs + 2 * nv * hh, cs + 3 * nv * hh, fx + nv, (int)nv, inv, hh / 2);
    vlm_tensor *rope[4];
    for (int t = 0; t < 4; t++) rope[t] = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){nv, hh}, cs + t * nv * hh);

    vlm_tensor *x = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){nv, K}, px);
    x = vlm_linear(c, vlm_scale_bias(c, x, 2.0f, -1.0f), g->patch_proj, NULL);
    vlm_tensor *xi = vlm_from_host(c, VLM_I32, 1, &nv, xs), *yi = vlm_from_host(c, VLM_I32, 1, &nv, ys);
    vlm_tensor *pe = vlm_add(c, vlm_get_rows(c, vlm_index(c, g->pos_table, 0), xi), vlm_get_rows(c, vlm_index(c, g->pos_table, 1), yi));
    x = vlm_add(c, x, pe);
    vlm_tensor *resid = vlm_new_2d(c, VLM_F32, nv, g->v_hidden);
    if (!x || !resid || vlm_copy(c, resid, x) != VLM_OK) return NULL;
    for (int l = 0; l < g->v_layers; l++) {
        vlm_arena_mark mark = vlm_arena_get_mark(&c->arena);
        x = g4_vit_layer_forward(c, g, &g->vl[l], resid, rope);
        if (!x || vlm_copy(c, resid, x) != VLM_OK) return NULL;
        vlm_arena_release(&c->arena, mark);
    }
    /* k×k average pooling by position as a matmul, then the sqrt(hidden) scale */
    vlm_tensor *pm = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n_keep, nv}, pool);
    x = vlm_matmul(c, pm, vlm_cont(c, vlm_transpose(c, resid, 0, 1)));
    x = vlm_scale(c, x, sqrtf((float)g->v_hidden));
    if (g->standardize) x = vlm_mul(c, vlm_add(c, x, vlm_scale(c, g->std_bias, -1.0f)), g->std_scale);
    return vlm_linear(c, vlm_rms_norm(c, x, NULL, g->v_eps), g->mm_proj, NULL);
}

/* Images [n, patches, 3*P*P] with positions [n, patches, 2], or video frames
 * [videos, frames, patches, ...] (each frame is an image): soft tokens of all,
 * in order. */
static vlm_tensor *g4_vision_all(vlm_compute *c, const g4_model *g, const vlm_tensor *pix, const vlm_tensor *pos,
                                 const char *what) {
    int64_t K = 3LL * g->patch * g->patch, kk = (int64_t)g->pool * g->pool;
    int d = pix->ndim;
    int ok = (d == 3 || d == 4) && pos->ndim == d && pix->shape[d - 1] == K && pos->shape[d - 1] == 2 &&
             vlm_is_contiguous(pix) && vlm_is_contiguous(pos) && pix->shape[d - 2] % kk == 0;
    for (int i = 0; ok && i < d - 1; i++) ok = pos->shape[i] == pix->shape[i];
    if (!ok) {
        vlm_error_set(&c->err, VLM_ERR_ARG, "%s must be [n, patches, %lld] (videos: [n, frames, patches, %lld]) with positions [..., patches, 2], patches a multiple of %lld",
                      what, (long long)K, (long long)K, (long long)kk);
        c->failed = 1;
        return NULL;
    }
    int64_t B = d == 4 ? pix->shape[0] * pix->shape[1] : pix->shape[0], N = pix->shape[d - 2];
    vlm_tensor p3 = vlm_tensor_make(pix->dtype, 3, (const int64_t[]){B, N, K}, pix->data);
    vlm_tensor q3 = vlm_tensor_make(pos->dtype, 3, (const int64_t[]){B, N, 2}, pos->data);
    vlm_tensor *all = NULL;
    for (int64_t b = 0; b < B; b++) {
        vlm_tensor *e = g4_vision_image(c, g, &p3, &q3, b);
        all = all ? vlm_concat(c, all, e, 0) : e;
        if (!all) return NULL;
    }
    return all;
}

static vlm_status g4_encode(vlm_model *m, vlm_compute *c, const vlm_features *f, vlm_vision_out *out) {
    const g4_model *g = (const g4_model *)m->impl;
    memset(out, 0, sizeof *out);
    if (!g->has_vision) return vlm_error_set(&c->err, VLM_ERR_UNSUPPORTED, "this Gemma 4 checkpoint has no vision tower");
    const vlm_tensor *img = vlm_features_get(f, "pixel_values"), *img_pos = vlm_features_get(f, "image_position_ids");
    const vlm_tensor *vid = vlm_features_get(f, "pixel_values_videos"), *vid_pos = vlm_features_get(f, "video_position_ids");
    if ((img && !img_pos) || (vid && !vid_pos) || (!img && !vid))
        return vlm_error_set(&c->err, VLM_ERR_ARG, "Gemma 4 wants pixel_values + image_position_ids (or pixel_values_videos + video_position_ids)");
    vlm_tensor *ie = img ? g4_vision_all(c, g, img, img_pos, "pixel_values") : NULL;
    vlm_tensor *ve = vid && !c->failed ? g4_vision_all(c, g, vid, vid_pos, "pixel_values_videos") : NULL;
    if (c->failed || (img && !ie) || (vid && !ve))
        return c->err.code ? c->err.code : vlm_error_set(&c->err, VLM_ERR_ARG, "vision tower failed");
    out->n_image_tokens = ie ? ie->shape[0] : 0;
    out->embeds = ie && ve ? vlm_concat(c, ie, ve, 0) : ie ? ie : ve;
    return out->embeds ? VLM_OK : c->err.code;
}

/* ------------------------------------------------------------------ decoder */

/* cos rows [0, n) and sin rows [n, 2n) of one layer type's table. */
static vlm_tensor *g4_rope_tab(vlm_compute *c, const g4_rope *r, const float *pos, int n) {
    float *cs = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * 2 * (size_t)n * r->dim);
    if (!cs) return NULL;
    vlm_rope_table(cs, cs + (size_t)n * r->dim, pos, n, r->inv_freq, r->dim / 2);
    return vlm_from_host(c, VLM_F32, 2, (const int64_t[]){2 * (int64_t)n, r->dim}, cs);
}

/* Sparse experts beside the dense MLP: router on the residual, top-k experts
 * (softmax over the chosen logits = renormalized top-k probabilities) times
 * the per-expert scale, gated GELU experts, weighted sum. */
static vlm_tensor *g4_moe(vlm_compute *c, const g4_model *g, const g4_layer *L, vlm_tensor *r, int n) {
    int k = g->top_k;
    int64_t MI = g->moe_inter;
    vlm_tensor *rn = vlm_scale(c, vlm_mul(c, vlm_rms_norm(c, r, NULL, g->eps), L->router_scale), 1.0f / sqrtf((float)g->hidden));
    vlm_tensor *ids = NULL;
    vlm_tensor *top = vlm_topk(c, vlm_linear(c, rn, L->router_proj, NULL), k, &ids);
    vlm_tensor *w = vlm_softmax(c, top, 1.0f, 0.0f);
    if (!w) return NULL;
    vlm_tensor *es = vlm_get_rows(c, vlm_reshape_2d(c, L->expert_scale, g->n_experts, 1), vlm_reshape(c, ids, 1, (const int64_t[]){(int64_t)n * k}));
    w = vlm_mul(c, w, vlm_reshape_2d(c, es, n, k));
    vlm_tensor *h = vlm_rms_norm(c, r, L->pre_ffw_norm_2, g->eps);
    vlm_tensor *gu = vlm_matmul_id(c, h, L->gate_up_e, ids); /* [n, k, 2*MI] */
    if (!gu) return NULL;
    vlm_tensor *act = vlm_glu(c, vlm_cont(c, vlm_slice(c, gu, 2, 0, MI)), vlm_cont(c, vlm_slice(c, gu, 2, MI, MI)), g->act);
    vlm_tensor *y = vlm_matmul_id(c, vlm_reshape_2d(c, act, (int64_t)n * k, MI), L->down_e, ids); /* [n, k, H] */
    y = vlm_mul(c, y, vlm_reshape_3d(c, w, n, k, 1));
    vlm_tensor *sum = NULL;
    for (int j = 0; j < k; j++) {
        vlm_tensor *yj = vlm_reshape_2d(c, vlm_cont(c, vlm_slice(c, y, 1, j, 1)), n, g->hidden);
        sum = sum ? vlm_add(c, sum, yj) : yj;
    }
    return vlm_rms_norm(c, sum, L->post_ffw_norm_2, g->eps);
}

static vlm_tensor *g4_layer_forward(vlm_compute *c, const g4_model *g, const g4_layer *L, vlm_kv_layer *kv,
                                    vlm_tensor *x, vlm_tensor *cos, vlm_tensor *sin, const int32_t *pos, int n,
                                    vlm_tensor *ple, const int32_t *span) {
    vlm_attn_opts o = {.window = L->full ? 0 : g->window, .scale = 1.0f, .v_norm = 1, .span = span};
    vlm_tensor *h = vlm_rms_norm(c, x, L->d.attn_norm, g->eps);
    h = vlm_dec_attention_ex(c, &L->d, &L->hp, kv, h, cos, sin, pos, n, &o);
    x = vlm_add(c, x, vlm_rms_norm(c, h, L->post_attn_norm, g->eps));
    h = vlm_gated_mlp(c, vlm_rms_norm(c, x, L->d.mlp_norm, g->eps), L->d.gate, L->d.up, L->d.down, g->act);
    if (L->gate_up_e) h = vlm_add(c, vlm_rms_norm(c, h, L->post_ffw_norm_1, g->eps), g4_moe(c, g, L, x, n));
    x = vlm_add(c, x, vlm_rms_norm(c, h, L->post_ffw_norm, g->eps));
    if (ple) {
        h = vlm_glu(c, vlm_linear(c, x, L->ple_gate, NULL), ple, g->act);
        x = vlm_add(c, x, vlm_rms_norm(c, vlm_linear(c, h, L->ple_proj, NULL), L->ple_norm, g->eps));
    }
    if (L->scalar) x = vlm_mul(c, x, L->scalar);
    return x;
}

/* The embedding scale as transformers applies it: a tensor in the table's dtype. */
static float g4_embed_scale(vlm_dtype table, float s) {
    if (table == VLM_BF16) return vlm_bf16_to_f32(vlm_f32_to_bf16(s));
    if (table == VLM_F16) return vlm_f16_to_f32(vlm_f32_to_f16(s));
    return s;
}

static int g4_is_mm(const vlm_model *m, const g4_model *g, int32_t id) {
    return id == m->image_token_id || id == m->video_token_id || (g->audio_token >= 0 && id == g->audio_token);
}

/* One decoder call's state for the driver's hooks. */
typedef struct {
    const g4_model *g;
    const int32_t *ple_ids;          /* [n] token ids into the per-layer table (placeholders: pad) */
    const int32_t *span;             /* bidirectional spans, or NULL */
    vlm_tensor *cs[2][2];            /* cos, sin of [0] sliding and [1] full layers */
    vlm_tensor *ple;                 /* [n, layers, P] per-layer inputs, or NULL */
} g4_call;

/* Per-layer inputs [n, layers, P]: (norm(proj(x)) + table[id]) / sqrt(2). */
static vlm_status g4_per_layer_inputs(vlm_compute *c, void *state, vlm_tensor *x) {
    g4_call *k = (g4_call *)state;
    const g4_model *g = k->g;
    int64_t n = x->shape[0], NL = g->n_layers, P = g->ple_dim;
    if (P <= 0) return VLM_OK;
    vlm_tensor *tok = vlm_from_host(c, VLM_I32, 1, (const int64_t[]){n}, k->ple_ids);
    vlm_tensor *te = vlm_scale(c, vlm_get_rows(c, g->ple_embed, tok), g4_embed_scale(g->ple_dtype, sqrtf((float)P)));
    vlm_tensor *pr = vlm_scale(c, vlm_linear(c, x, g->ple_model_proj, NULL), 1.0f / sqrtf((float)g->hidden));
    pr = vlm_rms_norm(c, vlm_reshape_3d(c, pr, n, NL, P), g->ple_proj_norm, g->eps);
    k->ple = vlm_scale(c, vlm_add(c, pr, vlm_reshape_3d(c, te, n, NL, P)), 1.0f / sqrtf(2.0f));
    return k->ple ? VLM_OK : VLM_ERR_ARG;
}

static vlm_tensor *g4_layer_hook(vlm_compute *c, void *state, int l, vlm_kv_layer *kv, vlm_tensor *x, const vlm_dec_call *a) {
    const g4_call *k = (const g4_call *)state;
    const g4_layer *L = &k->g->layers[l];
    vlm_tensor *pl = k->ple ? vlm_reshape_2d(c, vlm_cont(c, vlm_slice(c, k->ple, 1, l, 1)), a->n, k->g->ple_dim) : NULL;
    return g4_layer_forward(c, k->g, L, kv, x, k->cs[L->full][0], k->cs[L->full][1], a->pos, a->n, pl, k->span);
}

static vlm_status g4_forward(vlm_model *m, vlm_seq *s, const int32_t *ids, int n, const vlm_vision_out *vision,
                             const vlm_features *f, int all_logits, vlm_tensor **logits) {
    g4_model *g = (g4_model *)m->impl;
    g4_seq *gs = (g4_seq *)s->impl;
    vlm_compute *c = &s->c;
    *logits = NULL;
    vlm_status st = vlm_forward_check(s, ids, n);
    if (st != VLM_OK) return st;
    if (n > s->max_batch) /* the sliding rings hold the window plus one call */
        return vlm_error_set(&c->err, VLM_ERR_ARG, "%d tokens in one call exceed max_batch %d", n, s->max_batch);
    int32_t *pos = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * 2 * (size_t)n);
    float *fpos = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)n);
    if (!pos || !fpos) return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    int32_t *ple_ids = pos + n;
    for (int i = 0; i < n; i++) {
        pos[i] = s->n_past + i;
        fpos[i] = (float)pos[i];
        ple_ids[i] = g4_is_mm(m, g, ids[i]) || ids[i] >= g->ple_vocab ? g->pad_id : ids[i];
    }
    /* Bidirectional attention within each run of vision tokens, as transformers
     * does it: only when the processor's mm_token_type_ids (1 image, 2 video)
     * come with the call; without them the mask is causal. On sliding layers
     * the window still applies to earlier keys of a span (transformers ORs the
     * span over the window): the same unless a span is longer than the window. */
    const int32_t *span = NULL;
    const vlm_tensor *mmt = g->bidir_vision ? vlm_features_get(f, "mm_token_type_ids") : NULL;
    if (mmt) {
        if (vlm_nelem(mmt) != n)
            return vlm_error_set(&c->err, VLM_ERR_ARG, "mm_token_type_ids has %lld entries for %d tokens",
                                 (long long)vlm_nelem(mmt), n);
        for (int i = 0; i < n; i++) {
            int64_t t = vlm_get_i64(mmt, i), prev = i > 0 ? vlm_get_i64(mmt, i - 1) : 0;
            int vis = t == 1 || t == 2, prev_vis = prev == 1 || prev == 2;
            gs->span[pos[i]] = !vis ? -1 : i > 0 && prev_vis ? gs->span[pos[i] - 1] : gs->n_spans++;
        }
        span = gs->span;
    }
    vlm_tensor *tabs[2] = {NULL, NULL}, *cs[2][2] = {{NULL, NULL}, {NULL, NULL}};
    for (int t = 0; t < 2; t++)
        if (g->rope[t].dim) {
            tabs[t] = g4_rope_tab(c, &g->rope[t], fpos, n);
            cs[t][0] = vlm_slice(c, tabs[t], 0, 0, n);
            cs[t][1] = vlm_slice(c, tabs[t], 0, n, n);
        }
    g4_call k = {.g = g, .ple_ids = ple_ids, .span = span, .cs = {{cs[0][0], cs[0][1]}, {cs[1][0], cs[1][1]}}};
    vlm_dec_hooks hooks = {.state = &k, .begin = g4_per_layer_inputs, .layer = g4_layer_hook};
    vlm_dec_call a = {.ids = ids, .n = n, .pos = pos, .vision = vision, .image_token = m->image_token_id,
                      .video_token = m->video_token_id, .embed_scale = g4_embed_scale(g->embed_dtype, sqrtf((float)g->hidden)),
                      .softcap = g->softcap, .all_logits = all_logits, .hooks = &hooks};
    /* the driver's view of the stack: its layers are g4_layer, run by the hook; the head is tied */
    vlm_dec_stack stack = {.n_layers = g->n_layers, .hidden = g->hidden, .hp.eps = g->eps,
                           .embed = g->embed, .norm = g->norm, .lm_head = g->embed};
    return vlm_dec_run(s, &stack, &a, logits);
}

static vlm_status g4_seq_init(vlm_model *m, vlm_seq *s, vlm_error *err) {
    g4_model *g = (g4_model *)m->impl;
    g4_seq *gs = (g4_seq *)calloc(1, sizeof *gs);
    s->impl = gs;
    int *cap = (int *)malloc(sizeof(int) * 4 * (size_t)g->n_layers);
    if (gs) gs->span = (int32_t *)malloc(sizeof(int32_t) * (size_t)s->n_ctx);
    if (!gs || !cap || !gs->span) { free(cap); return vlm_error_set(err, VLM_ERR_OOM, "out of memory"); }
    for (int i = 0; i < s->n_ctx; i++) gs->span[i] = -1;
    int *heads = cap + g->n_layers, *dims = heads + g->n_layers, *share = dims + g->n_layers;
    int ring = g->window + s->max_batch; /* sliding layers keep the window plus one call's tokens */
    for (int l = 0; l < g->n_layers; l++) {
        const g4_layer *L = &g->layers[l];
        cap[l] = L->full || ring > s->n_ctx ? s->n_ctx : ring;
        heads[l] = L->hp.n_kv_heads;
        dims[l] = L->hp.head_dim;
        share[l] = L->share;
    }
    vlm_status st = vlm_kv_init(&s->kv, m->be, s->kv_dtype, g->n_layers, cap, heads, dims, share, err);
    free(cap);
    return st;
}

static void g4_seq_free(vlm_model *m, vlm_seq *s) {
    (void)m;
    g4_seq *gs = (g4_seq *)s->impl;
    if (gs) free(gs->span);
    free(gs);
    s->impl = NULL;
}

static vlm_status g4_bench_vision(vlm_model *m, int w, int h, int n_tiles, vlm_features *f, int *tiles, vlm_error *err) {
    *tiles = 0;
    if (!((g4_model *)m->impl)->has_vision) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "this Gemma 4 checkpoint has no vision tower");
    if (n_tiles > 0) return vlm_error_set(err, VLM_ERR_ARG, "gemma4 takes images whole, not tiles (use --image WxH)");
    return vlm_bench_image(m, VLM_IMAGE_GEMMA4, w, h, f, err);
}

static const char *const g4_hf_names[] = {"Gemma4ForConditionalGeneration", "Gemma4Model", "Gemma4ForCausalLM", NULL};
static const char *const g4_model_types[] = {"gemma4", "gemma4_text", NULL};

const vlm_arch vlm_arch_gemma4 = {
    .name = "gemma4",
    .hf_architectures = g4_hf_names,
    .model_types = g4_model_types,
    .load = g4_load,
    .unload = g4_unload,
    .encode = g4_encode,
    .forward = g4_forward,
    .seq_init = g4_seq_init,
    .seq_free = g4_seq_free,
    .bench_vision = g4_bench_vision,
};
