/* Qwen3-VL, dense and MoE: a ViT with learned position embeddings resampled
 * to each image's grid plus 2D RoPE, a 2×2 patch merger, and DeepStack (the
 * features of a few early vision blocks, merged by their own mergers, are
 * added to the hidden states of the first decoder layers at the visual
 * positions); a Qwen3 decoder (q/k RMSNorm) with interleaved M-RoPE whose MLPs
 * are dense or sparse mixtures of SwiGLU experts. */
#include "common.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define Q3_MAX_DEEP 8

/* LayerNorm (per patch, or over the 2×2 merged row for DeepStack), fc1, GELU, fc2. */
typedef struct {
    int post_norm;
    vlm_tensor *norm, *norm_b, *fc1, *fc1_b, *fc2, *fc2_b;
} q3_merger;

/* Sparse MoE block: experts stored fused as transformers 5 holds them (a
 * view of the checkpoint), or transposed at load from the transformers 4
 * layout of the official checkpoints. */
typedef struct {
    vlm_tensor *router;  /* [E, hidden] */
    vlm_tensor *gate_up; /* [E, 2*I, hidden]: rows [0, I) gate, [I, 2I) up */
    vlm_tensor *down;    /* [E, hidden, I] */
} q3_moe;

typedef struct {
    /* vision tower */
    int v_depth, v_hidden, v_heads, v_inter, v_out, patch, t_patch, merge, in_channels;
    int pos_side;         /* the learned position table is pos_side × pos_side */
    int bicubic, align_corners;
    vlm_unary_op v_act;
    float v_theta;
    int n_deep, deep_idx[Q3_MAX_DEEP];
    vlm_tensor *patch_embed, *patch_embed_b, *pos_embed;
    vlm_qwen_vit_block *blocks;
    q3_merger merger, deep[Q3_MAX_DEEP];
    /* decoder */
    vlm_dec_stack d;
    int moe_inter, n_experts, top_k;
    float theta;
    int mrope_section[3];
    q3_moe *moe; /* [n_layers]; router NULL on dense layers */
} q3_model;

/* ------------------------------------------------------------------ config */

static int q3_act(const char *name, vlm_unary_op *out) {
    static const struct { const char *n; vlm_unary_op op; } acts[] = {
        {"gelu_pytorch_tanh", VLM_UNARY_GELU_TANH}, {"gelu_new", VLM_UNARY_GELU_TANH}, {"gelu", VLM_UNARY_GELU},
        {"silu", VLM_UNARY_SILU}, {"swish", VLM_UNARY_SILU}, {"relu", VLM_UNARY_RELU},
    };
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (!strcmp(name, acts[i].n)) { *out = acts[i].op; return 1; }
    return 0;
}

static vlm_status q3_load_config(vlm_model *m, q3_model *q, vlm_error *err) {
    const vlm_json *cfg = m->config, *vc = vlm_json_get(cfg, "vision_config");
    if (!vc) return vlm_error_set(err, VLM_ERR_CONFIG, "config.json has no vision_config");
    q->v_depth = (int)vlm_json_int(vlm_json_get(vc, "depth"), 27);
    q->v_hidden = (int)vlm_json_int(vlm_json_get(vc, "hidden_size"), 1152);
    q->v_heads = (int)vlm_json_int(vlm_json_get(vc, "num_heads"), 16);
    q->v_inter = (int)vlm_json_int(vlm_json_get(vc, "intermediate_size"), 4304);
    q->v_out = (int)vlm_json_int(vlm_json_get(vc, "out_hidden_size"), 3584);
    q->patch = (int)vlm_json_int(vlm_json_get(vc, "patch_size"), 16);
    q->t_patch = (int)vlm_json_int(vlm_json_get(vc, "temporal_patch_size"), 2);
    q->merge = (int)vlm_json_int(vlm_json_get(vc, "spatial_merge_size"), 2);
    q->in_channels = (int)vlm_json_int(vlm_json_get(vc, "in_channels"), 3);
    /* transformers builds the vision rotary embedding with theta 10000 whatever the config says */
    q->v_theta = 10000.0f;
    int64_t n_pos = vlm_json_int(vlm_json_get(vc, "num_position_embeddings"), 2304);
    q->pos_side = (int)(sqrt((double)n_pos) + 0.5);
    const char *mode = vlm_json_str(vlm_json_get(vc, "interpolation_mode"), "bilinear");
    q->bicubic = !strcmp(mode, "bicubic");
    q->align_corners = vlm_json_bool(vlm_json_get(vc, "interpolation_align_corners"), 1);
    if (!q->bicubic && strcmp(mode, "bilinear"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "vision interpolation_mode \"%s\"", mode);
    const char *act = vlm_json_str(vlm_json_get(vc, "hidden_act"), "gelu_pytorch_tanh");
    if (!q3_act(act, &q->v_act)) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "vision hidden_act \"%s\"", act);
    const vlm_json *ds = vlm_json_get(vc, "deepstack_visual_indexes");
    q->n_deep = ds && ds->type == VLM_JSON_ARRAY ? ds->n : 0;
    if (q->n_deep > Q3_MAX_DEEP) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "%d DeepStack layers (at most %d)", q->n_deep, Q3_MAX_DEEP);
    for (int i = 0; i < q->n_deep; i++) {
        q->deep_idx[i] = (int)vlm_json_int(vlm_json_at(ds, i), -1);
        if (q->deep_idx[i] < 0 || q->deep_idx[i] >= q->v_depth)
            return vlm_error_set(err, VLM_ERR_CONFIG, "deepstack_visual_indexes[%d] = %d outside the %d vision blocks", i,
                                 q->deep_idx[i], q->v_depth);
    }

    vlm_dec_stack_config(cfg, "text_config", &q->d);
    act = vlm_json_str(vlm_cfg_text(cfg, "hidden_act"), "silu");
    if (!q3_act(act, &q->d.hp.act)) return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "text hidden_act \"%s\"", act);
    q->theta = (float)vlm_json_num(vlm_cfg_rope(cfg, "rope_theta"), 5000000.0);
    m->vocab_size = (int)vlm_json_int(vlm_cfg_text(cfg, "vocab_size"), 0);
    m->hidden_size = q->d.hidden;
    m->image_token_id = (int32_t)vlm_json_int(vlm_json_get(cfg, "image_token_id"), 151655);
    m->video_token_id = (int32_t)vlm_json_int(vlm_json_get(cfg, "video_token_id"), 151656);
    /* MoE (Qwen3-VL-MoE): experts on layers (l+1) % decoder_sparse_step == 0 not in mlp_only_layers */
    const vlm_json *ne = vlm_cfg_text(cfg, "num_experts");
    q->n_experts = (int)vlm_json_int(ne ? ne : vlm_cfg_text(cfg, "num_local_experts"), 0);
    q->top_k = (int)vlm_json_int(vlm_cfg_text(cfg, "num_experts_per_tok"), 0);
    q->moe_inter = (int)vlm_json_int(vlm_cfg_text(cfg, "moe_intermediate_size"), 0);
    if (q->d.hidden <= 0 || q->d.n_layers <= 0 || q->d.hp.n_heads <= 0 || q->d.hp.n_kv_heads <= 0 || q->d.hp.head_dim <= 0 ||
        q->d.hp.head_dim % 2 || q->d.hp.head_dim > 1024 || q->d.hp.n_heads % q->d.hp.n_kv_heads || m->vocab_size <= 0)
        return vlm_error_set(err, VLM_ERR_CONFIG, "text config: hidden_size/num_hidden_layers/heads/head_dim/vocab_size missing or inconsistent");
    if (q->n_experts > 0 && (q->top_k <= 0 || q->top_k > q->n_experts || q->moe_inter <= 0))
        return vlm_error_set(err, VLM_ERR_CONFIG, "MoE config: num_experts_per_tok %d of %d experts, moe_intermediate_size %d",
                             q->top_k, q->n_experts, q->moe_inter);
    if (q->v_heads <= 0 || q->v_hidden % q->v_heads || (q->v_hidden / q->v_heads) % 4 || q->v_hidden / q->v_heads > 1024 ||
        q->merge <= 0 || q->patch <= 0 || q->t_patch <= 0 || q->v_depth <= 0 || q->pos_side < 1 ||
        (int64_t)q->pos_side * q->pos_side != n_pos)
        return vlm_error_set(err, VLM_ERR_CONFIG, "vision config: inconsistent sizes (num_position_embeddings must be a square)");
    const vlm_json *sec = vlm_cfg_rope(cfg, "mrope_section");
    if (!sec || sec->type != VLM_JSON_ARRAY || sec->n != 3)
        return vlm_error_set(err, VLM_ERR_CONFIG, "mrope_section missing (rope_parameters.mrope_section)");
    for (int i = 0; i < 3; i++) q->mrope_section[i] = (int)vlm_json_int(vlm_json_at(sec, i), 0);
    /* interleaved: H takes frequencies 1, 4, ... < 3*sec[1], W 2, 5, ... < 3*sec[2], T the rest */
    if (q->mrope_section[0] < 0 || q->mrope_section[1] < 0 || q->mrope_section[2] < 0)
        return vlm_error_set(err, VLM_ERR_CONFIG, "negative mrope_section");
    return VLM_OK;
}

/* ------------------------------------------------------------------ load */

static void q3_merger_load(vlm_loader *ld, q3_merger *M, const char *name, int64_t V, int64_t unit, int64_t out,
                           int post_norm) {
    int64_t H = V * unit, nd = post_norm ? H : V;
    M->post_norm = post_norm;
    M->norm = vlm_ld(ld, VLM_SHAPE1(nd), "%s.norm.weight", name);
    M->norm_b = vlm_ld(ld, VLM_SHAPE1(nd), "%s.norm.bias", name);
    M->fc1 = vlm_ld_linear(ld, H, H, "%s.linear_fc1.weight", name);
    M->fc1_b = vlm_ld(ld, VLM_SHAPE1(H), "%s.linear_fc1.bias", name);
    M->fc2 = vlm_ld_linear(ld, out, H, "%s.linear_fc2.weight", name);
    M->fc2_b = vlm_ld(ld, VLM_SHAPE1(out), "%s.linear_fc2.bias", name);
}

static vlm_status q3_load_vision(vlm_model *m, q3_model *q, vlm_error *err) {
    vlm_loader ld = {.m = m, .err = err, .role = VLM_LINEAR_VISION};
    int64_t V = q->v_hidden, unit = (int64_t)q->merge * q->merge;
    if (vlm_qwen_vit_load(&ld, q->v_depth, V, q->v_inter, q->in_channels, q->t_patch, q->patch, 1, &q->patch_embed,
                          q->blocks) != VLM_OK)
        return err->code;
    q->patch_embed_b = vlm_ld(&ld, VLM_SHAPE1(V), "patch_embed.proj.bias");
    q->pos_embed = vlm_ld(&ld, VLM_SHAPE2((int64_t)q->pos_side * q->pos_side, V), "pos_embed.weight");
    q3_merger_load(&ld, &q->merger, "merger", V, unit, q->v_out, 0);
    for (int i = 0; i < q->n_deep; i++) {
        char name[64];
        snprintf(name, sizeof name, "deepstack_merger_list.%d", i);
        q3_merger_load(&ld, &q->deep[i], name, V, unit, q->v_out, 1);
    }
    if (err->code) return err->code;
    if (q->v_out != q->d.hidden)
        return vlm_error_set(err, VLM_ERR_CONFIG, "vision out_hidden_size %d != text hidden_size %d", q->v_out, q->d.hidden);
    return VLM_OK;
}

static int q3_is_moe_layer(const vlm_json *cfg, const q3_model *q, int l) {
    if (q->n_experts <= 0) return 0;
    const vlm_json *only = vlm_cfg_text(cfg, "mlp_only_layers");
    for (int i = 0; only && i < only->n; i++)
        if (vlm_json_int(vlm_json_at(only, i), -1) == l) return 0;
    int step = (int)vlm_json_int(vlm_cfg_text(cfg, "decoder_sparse_step"), 1);
    return step > 0 && (l + 1) % step == 0;
}

/* Experts [E, R, C] stored the transformers 4 way ([E, in, out], as the
 * official Qwen3-VL-MoE checkpoints are) turned into [E, C, R] = [E, out, in]
 * for vlm_matmul_id: one copy at load, expert by expert. */
static vlm_tensor *q3_transpose_experts(vlm_model *m, const vlm_tensor *w, vlm_error *err) {
    int64_t E = w->shape[0], R = w->shape[1], C = w->shape[2];
    size_t es = vlm_dtype_size(w->dtype);
    vlm_tensor *t = (vlm_tensor *)vlm_arena_alloc(&m->arena, sizeof *t);
    void *data = t ? vlm_arena_alloc(&m->arena, (size_t)(E * R * C) * es) : NULL;
    if (!data || !vlm_is_contiguous(w)) {
        vlm_error_set(err, data ? VLM_ERR_FORMAT : VLM_ERR_OOM, "cannot transpose the experts");
        return NULL;
    }
    *t = vlm_tensor_make(w->dtype, 3, (const int64_t[]){E, C, R}, data);
    const unsigned char *src = (const unsigned char *)w->data;
    unsigned char *dst = (unsigned char *)data;
    for (int64_t e = 0; e < E; e++)
        for (int64_t r0 = 0; r0 < R; r0 += 64) /* in tiles, for the caches */
            for (int64_t c = 0; c < C; c++)
                for (int64_t r = r0; r < R && r < r0 + 64; r++)
                    memcpy(dst + ((e * C + c) * R + r) * es, src + ((e * R + r) * C + c) * es, es);
    return t;
}

static vlm_status q3_load_moe(vlm_loader *ld, const q3_model *q, int l, q3_moe *E) {
    int64_t n = q->n_experts, I = q->moe_inter, H = q->d.hidden;
    E->router = vlm_ld(ld, VLM_SHAPE2(n, H), "layers.%d.mlp.gate.weight", l);
    vlm_tensor *d = vlm_ld_opt(ld, "layers.%d.mlp.experts.down_proj", l);
    if (d && d->ndim == 3 && d->shape[0] == n && d->shape[1] == I && d->shape[2] == H && I != H) {
        /* transformers 4 layout: gate_up [E, H, 2I] (columns: gate, then up), down [E, I, H] */
        vlm_tensor *gu = vlm_ld(ld, VLM_SHAPE3(n, H, 2 * I), "layers.%d.mlp.experts.gate_up_proj", l);
        E->gate_up = gu ? q3_transpose_experts(ld->m, gu, ld->err) : NULL;
        E->down = E->gate_up ? q3_transpose_experts(ld->m, d, ld->err) : NULL;
    } else { /* transformers 5 layout, used in place: gate_up [E, 2I, H] (rows: gate, then up), down [E, H, I] */
        E->gate_up = vlm_ld(ld, VLM_SHAPE3(n, 2 * I, H), "layers.%d.mlp.experts.gate_up_proj", l);
        E->down = vlm_ld(ld, VLM_SHAPE3(n, H, I), "layers.%d.mlp.experts.down_proj", l);
    }
    /* quantized (--quant) once in the transformers 5 layout, which a saved folder then stores */
    E->gate_up = vlm_ld_quantize(ld, E->gate_up, "layers.%d.mlp.experts.gate_up_proj", l);
    E->down = vlm_ld_quantize(ld, E->down, "layers.%d.mlp.experts.down_proj", l);
    return ld->err->code;
}

static vlm_status q3_load(vlm_model *m, vlm_error *err) {
    q3_model *q = (q3_model *)calloc(1, sizeof *q);
    if (!q) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    m->impl = q;
    vlm_status s = q3_load_config(m, q, err);
    if (s != VLM_OK) return s;
    if (vlm_model_check_count(m, q->v_depth, "vision_config.depth", err) != VLM_OK ||
        vlm_model_check_count(m, q->d.n_layers, "num_hidden_layers", err) != VLM_OK)
        return err->code;
    q->blocks = (vlm_qwen_vit_block *)calloc((size_t)q->v_depth, sizeof *q->blocks);
    q->d.layers = (vlm_dec_layer *)calloc((size_t)q->d.n_layers, sizeof *q->d.layers);
    q->moe = (q3_moe *)calloc((size_t)q->d.n_layers, sizeof *q->moe);
    if (!q->blocks || !q->d.layers || !q->moe) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    if ((s = q3_load_vision(m, q, err)) != VLM_OK) return s;

    vlm_loader ld = {.m = m, .err = err};
    static const char *const txt_prefixes[] = {"model.language_model.", "model.", NULL};
    if (!vlm_loader_prefix(&ld, txt_prefixes, "embed_tokens.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no decoder weights (model.language_model.embed_tokens.weight)");
    int tied = vlm_json_bool(vlm_json_get(m->config, "tie_word_embeddings"), 0) ||
               vlm_json_bool(vlm_cfg_text(m->config, "tie_word_embeddings"), 0);
    vlm_tensor *head = vlm_weight_opt(m, "lm_head.weight"); /* a tied checkpoint may still store it; made up: none */
    if (head && (head->ndim != 2 || head->shape[0] != m->vocab_size || head->shape[1] != q->d.hidden))
        return vlm_error_set(err, VLM_ERR_FORMAT, "lm_head.weight shape differs from [vocab_size, hidden_size]");
    ld.role = !head && tied ? VLM_LINEAR_OUTPUT : VLM_LINEAR_TEXT; /* the table is the output projection */
    q->d.embed = ld.role ? vlm_ld_linear(&ld, m->vocab_size, q->d.hidden, "embed_tokens.weight")
                         : vlm_ld(&ld, VLM_SHAPE2(m->vocab_size, q->d.hidden), "embed_tokens.weight");
    ld.role = VLM_LINEAR_TEXT;
    q->d.norm = vlm_ld(&ld, VLM_SHAPE1(q->d.hidden), "norm.weight");
    for (int l = 0; l < q->d.n_layers; l++) {
        int moe = q3_is_moe_layer(m->config, q, l);
        if (!moe && q->d.inter <= 0) return vlm_error_set(err, VLM_ERR_CONFIG, "intermediate_size missing for dense layer %d", l);
        if (vlm_dec_layer_load(&ld, l, q->d.hidden, moe ? 0 : q->d.inter, &q->d.hp, 0, 1, &q->d.layers[l]) != VLM_OK) return err->code;
        if (moe && q3_load_moe(&ld, q, l, &q->moe[l]) != VLM_OK) return err->code;
    }
    q->d.lm_head = head   ? vlm_quantize_weight(m, head, VLM_LINEAR_OUTPUT, "lm_head.weight", err)
                   : tied ? q->d.embed
                          : vlm_weight_linear(m, "lm_head.weight", m->vocab_size, q->d.hidden, VLM_LINEAR_OUTPUT, err);
    return err->code;
}

static void q3_unload(vlm_model *m) {
    q3_model *q = (q3_model *)m->impl;
    if (q) { free(q->blocks); free(q->d.layers); free(q->moe); free(q); }
    m->impl = NULL;
}

/* ------------------------------------------------------------------ vision */

/* Interpolation taps of one axis: target index i of `size` into a `side`-long
 * table, as torch's F.interpolate computes them (bilinear: 2 taps, bicubic:
 * 4 taps with the a = -0.75 kernel); returns the number of taps. */
static int q3_axis_taps(const q3_model *q, int64_t i, int64_t size, int32_t *tap, float *w) {
    int side = q->pos_side;
    float src = q->align_corners ? (float)i * (float)(side - 1) / (float)(size > 1 ? size - 1 : 1)
                                 : ((float)i + 0.5f) * (float)side / (float)size - 0.5f;
    float fl = floorf(src);
    int n = q->bicubic ? 4 : 2, off0 = q->bicubic ? -1 : 0;
    for (int k = 0; k < n; k++) {
        int64_t t = (int64_t)fl + off0 + k;
        tap[k] = (int32_t)(t < 0 ? 0 : t > side - 1 ? side - 1 : t);
        float d = fabsf(src - fl - (float)(off0 + k));
        if (!q->bicubic) w[k] = d < 1.0f ? 1.0f - d : 0.0f;
        else {
            const float a = -0.75f;
            w[k] = d <= 1.0f ? ((a + 2) * d - (a + 3)) * d * d + 1 : ((a * d - 5 * a) * d + 8 * a) * d - 4 * a;
        }
    }
    return n;
}

/* Host-side layout of one packed call of the vision tower. Patches arrive in
 * merge-block order (block row, block col, row in block, col in block) per
 * frame; each frame attends only to itself. */
typedef struct {
    int64_t n, n_taps;
    int32_t *frame;        /* [n] attention segment */
    int32_t *tap;          /* [n * n_taps] rows of the position table */
    float *tap_w;          /* [n * n_taps] */
    float *cos, *sin;      /* [n, head_dim] 2D RoPE */
} q3_layout;

static vlm_status q3_make_layout(vlm_compute *c, const q3_model *q, const vlm_tensor *grid, int64_t n, q3_layout *L) {
    int m = q->merge, hd = q->v_hidden / q->v_heads, nt = q->bicubic ? 4 : 2;
    L->n = n;
    L->n_taps = (int64_t)nt * nt;
    L->frame = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n);
    L->tap = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)(n * L->n_taps));
    L->tap_w = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n * L->n_taps));
    L->cos = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n * hd));
    L->sin = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n * hd));
    if (!L->frame || !L->tap || !L->tap_w || !L->cos || !L->sin) return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    float inv[256];
    vlm_rope_inv_freq(inv, hd / 2, q->v_theta);
    int64_t k = 0;
    int32_t frame = 0;
    for (int64_t g = 0; g < grid->shape[0]; g++) {
        int64_t t = vlm_get_i64(grid, g * 3), h = vlm_get_i64(grid, g * 3 + 1), w = vlm_get_i64(grid, g * 3 + 2);
        for (int64_t f = 0; f < t; f++, frame++)
            for (int64_t by = 0; by < h / m; by++)
                for (int64_t bx = 0; bx < w / m; bx++)
                    for (int u = 0; u < m * m; u++, k++) {
                        int64_t py = by * m + u / m, px = bx * m + u % m;
                        L->frame[k] = frame;
                        int32_t ty[4], tx[4];
                        float wy[4], wx[4];
                        q3_axis_taps(q, py, h, ty, wy);
                        q3_axis_taps(q, px, w, tx, wx);
                        for (int a = 0; a < nt; a++)
                            for (int b = 0; b < nt; b++) {
                                L->tap[k * L->n_taps + a * nt + b] = ty[a] * q->pos_side + tx[b];
                                L->tap_w[k * L->n_taps + a * nt + b] = wy[a] * wx[b];
                            }
                        vlm_vision_rope_2d(L->cos + k * hd, L->sin + k * hd, py, px, inv, hd);
                    }
    }
    return VLM_OK;
}

/* Learned position embeddings resampled to the patches: sum over taps of weight * table row. */
static vlm_tensor *q3_pos_embed(vlm_compute *c, const q3_model *q, const q3_layout *L) {
    int64_t nt = L->n_taps, total = L->n * nt;
    vlm_tensor *ids = vlm_from_host(c, VLM_I32, 1, &total, L->tap);
    vlm_tensor *w = vlm_from_host(c, VLM_F32, 3, (const int64_t[]){L->n, nt, 1}, L->tap_w);
    vlm_tensor *rows = vlm_get_rows(c, q->pos_embed, ids);
    vlm_tensor *pw = vlm_mul(c, vlm_reshape_3d(c, rows, L->n, nt, q->v_hidden), w);
    vlm_tensor *acc = vlm_slice(c, pw, 1, 0, 1);
    for (int64_t i = 1; i < nt; i++) acc = vlm_add(c, acc, vlm_slice(c, pw, 1, i, 1));
    return vlm_reshape_2d(c, vlm_cont(c, acc), L->n, q->v_hidden);
}

static vlm_tensor *vlm_qwen_vit_block_forward(vlm_compute *c, const q3_model *q, const vlm_qwen_vit_block *B, vlm_tensor *x,
                                        vlm_tensor *cos, vlm_tensor *sin, const int32_t *seg) {
    vlm_tensor *h = vlm_layer_norm(c, x, B->norm1, B->norm1_b, 1e-6f);
    x = vlm_add(c, x, vlm_vit_attention(c, h, B->qkv, B->qkv_b, B->proj, B->proj_b, q->v_heads, cos, sin, seg));
    h = vlm_layer_norm(c, x, B->norm2, B->norm2_b, 1e-6f);
    h = vlm_linear(c, vlm_unary(c, vlm_linear(c, h, B->fc1, B->fc1_b), q->v_act), B->fc2, B->fc2_b);
    return vlm_add(c, x, h);
}

/* x [n, V] contiguous -> [n/unit, out]. */
static vlm_tensor *q3_merge(vlm_compute *c, const q3_model *q, const q3_merger *M, vlm_tensor *x) {
    int64_t unit = (int64_t)q->merge * q->merge, n = x ? x->shape[0] : 0;
    if (!M->post_norm) x = vlm_layer_norm(c, x, M->norm, M->norm_b, 1e-6f);
    x = vlm_reshape_2d(c, x, n / unit, q->v_hidden * unit);
    if (M->post_norm) x = vlm_layer_norm(c, x, M->norm, M->norm_b, 1e-6f);
    x = vlm_unary(c, vlm_linear(c, x, M->fc1, M->fc1_b), VLM_UNARY_GELU);
    return vlm_linear(c, x, M->fc2, M->fc2_b);
}

/* pixels [n, C*T*P*P], grid [k, 3] -> merged embeddings [n/unit, hidden] in
 * prompt order, and the DeepStack features deep[i] of the same shape. */
static vlm_tensor *q3_vision(vlm_compute *c, const void *model, const vlm_tensor *pixels, const vlm_tensor *grid,
                             vlm_tensor **deep) {
    const q3_model *q = (const q3_model *)model;
    int unit = q->merge * q->merge, hd = q->v_hidden / q->v_heads;
    int64_t n_rows = vlm_qwen_grid_patches(c, pixels, q->patch_embed->shape[1], grid, q->merge);
    q3_layout L = {0};
    if (n_rows < 0) return NULL;
    if (q3_make_layout(c, q, grid, n_rows, &L) != VLM_OK) { c->failed = 1; return NULL; }
    int64_t n = L.n;
    for (int i = 0; i < q->n_deep; i++) deep[i] = vlm_new_2d(c, VLM_F32, n / unit, q->v_out);
    vlm_tensor *px = vlm_from_host(c, pixels->dtype, 2, pixels->shape, pixels->data);
    vlm_tensor *x = vlm_add(c, vlm_linear(c, px, q->patch_embed, q->patch_embed_b), q3_pos_embed(c, q, &L));
    vlm_tensor *cos = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n, hd}, L.cos);
    vlm_tensor *sin = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n, hd}, L.sin);
    vlm_tensor *resid = vlm_new_2d(c, VLM_F32, n, q->v_hidden);
    if (!x || !resid || vlm_copy(c, resid, x) != VLM_OK) return NULL;
    for (int b = 0; b < q->v_depth; b++) {
        vlm_arena_mark mark = vlm_arena_get_mark(&c->arena);
        x = vlm_qwen_vit_block_forward(c, q, &q->blocks[b], resid, cos, sin, L.frame);
        if (!x || vlm_copy(c, resid, x) != VLM_OK) return NULL;
        for (int i = 0; i < q->n_deep; i++)
            if (q->deep_idx[i] == b && vlm_copy(c, deep[i], q3_merge(c, q, &q->deep[i], resid)) != VLM_OK) return NULL;
        vlm_arena_release(&c->arena, mark);
    }
    return q3_merge(c, q, &q->merger, resid);
}

static vlm_status q3_encode(vlm_model *m, vlm_compute *c, const vlm_features *f, vlm_vision_out *out) {
    /* DeepStack features ride along in out->extra, in the rows' order */
    return vlm_qwen_encode(c, m->impl, q3_vision, ((const q3_model *)m->impl)->n_deep, f, out);
}

/* ------------------------------------------------------------------ decoder */

/* Sparse MoE MLP on h [n, hidden]: softmax router, top-k, weights renormalized
 * to sum 1, weighted sum of the chosen experts' SwiGLU. Routing runs on the
 * host (n × E floats); the experts run grouped by expert in vlm_matmul_id. */
static vlm_tensor *q3_moe_forward(vlm_compute *c, const q3_model *q, const q3_moe *E, vlm_tensor *h) {
    int64_t n = h ? h->shape[0] : 0, ne = q->n_experts, k = q->top_k, I = q->moe_inter;
    vlm_tensor *logits = vlm_linear(c, h, E->router, NULL);
    float *lg = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n * ne));
    int32_t *ids = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)(n * k));
    float *wts = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n * k));
    if (!logits || !lg || !ids || !wts) {
        if (!c->failed) { vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); c->failed = 1; }
        return NULL;
    }
    if (vlm_to_host_f32(c, logits, lg) != VLM_OK) { c->failed = 1; return NULL; }
    for (int64_t t = 0; t < n; t++) {
        float *p = lg + t * ne, mx = p[0], sum = 0;
        for (int64_t e = 1; e < ne; e++) mx = p[e] > mx ? p[e] : mx;
        for (int64_t e = 0; e < ne; e++) sum += p[e] = expf(p[e] - mx);
        for (int64_t e = 0; e < ne; e++) p[e] /= sum;
        float top = 0;
        for (int64_t j = 0; j < k; j++) { /* selection: largest first, lower index on ties */
            int64_t best = -1;
            for (int64_t e = 0; e < ne; e++)
                if (p[e] >= 0 && (best < 0 || p[e] > p[best])) best = e;
            ids[t * k + j] = (int32_t)best;
            wts[t * k + j] = p[best];
            top += p[best];
            p[best] = -1;
        }
        for (int64_t j = 0; j < k; j++) wts[t * k + j] /= top;
    }
    vlm_tensor *id_t = vlm_from_host(c, VLM_I32, 2, (const int64_t[]){n, k}, ids);
    vlm_tensor *w_t = vlm_from_host(c, VLM_F32, 3, (const int64_t[]){n, k, 1}, wts);
    vlm_tensor *gu = vlm_matmul_id(c, h, E->gate_up, id_t); /* [n, k, 2I] */
    vlm_tensor *a = vlm_glu(c, vlm_slice(c, gu, 2, 0, I), vlm_slice(c, gu, 2, I, I), q->d.hp.act);
    vlm_tensor *y = vlm_mul(c, vlm_matmul_id(c, vlm_reshape_2d(c, a, n * k, I), E->down, id_t), w_t); /* [n, k, H] */
    vlm_tensor *acc = vlm_slice(c, y, 1, 0, 1);
    for (int64_t j = 1; j < k; j++) acc = vlm_add(c, acc, vlm_slice(c, y, 1, j, 1));
    return vlm_reshape_2d(c, vlm_cont(c, acc), n, q->d.hidden);
}

static vlm_tensor *q3_layer_forward(vlm_compute *c, const q3_model *q, int l, vlm_kv_layer *kv, vlm_tensor *x,
                                    vlm_tensor *cos, vlm_tensor *sin, const int32_t *pos, int n) {
    const vlm_dec_layer *L = &q->d.layers[l];
    if (!q->moe[l].router) return vlm_dec_layer_forward(c, L, &q->d.hp, kv, x, cos, sin, pos, n);
    vlm_tensor *h = vlm_rms_norm(c, x, L->attn_norm, q->d.hp.eps);
    x = vlm_add(c, x, vlm_dec_attention(c, L, &q->d.hp, kv, h, cos, sin, pos, n, 0));
    h = vlm_rms_norm(c, x, L->mlp_norm, q->d.hp.eps);
    return vlm_add(c, x, q3_moe_forward(c, q, &q->moe[l], h));
}

/* One decoder call's DeepStack bookkeeping: the visual rows of this call
 * (dst_ids) and the rows of the vision features they take (src_ids). */
typedef struct {
    const q3_model *q;
    const vlm_vision_out *vision;
    int n_deep;
    int64_t n_vis;
    vlm_tensor *src_ids, *dst_ids;
} q3_call;

static vlm_tensor *q3_layer(vlm_compute *c, void *state, int l, vlm_kv_layer *kv, vlm_tensor *x, const vlm_dec_call *a) {
    return q3_layer_forward(c, ((const q3_call *)state)->q, l, kv, x, a->cos, a->sin, a->pos, a->n);
}

/* DeepStack: after decoder layer l < n_deep, the visual rows take + deep[l]. */
static vlm_status q3_deepstack(vlm_compute *c, void *state, int l, vlm_tensor *resid) {
    const q3_call *k = (const q3_call *)state;
    if (l >= k->n_deep || !k->n_vis) return VLM_OK;
    vlm_tensor *sum = vlm_add(c, vlm_get_rows(c, resid, k->dst_ids), vlm_get_rows(c, k->vision->extra[l], k->src_ids));
    return vlm_set_rows(c, resid, sum, k->dst_ids);
}

static vlm_status q3_forward(vlm_model *m, vlm_seq *s, const int32_t *ids, int n, const vlm_vision_out *vision,
                             const vlm_features *f, int all_logits, vlm_tensor **logits) {
    q3_model *q = (q3_model *)m->impl;
    vlm_compute *c = &s->c;
    *logits = NULL;
    int64_t saved_rope = s->rope_pos;
    int32_t *pos = NULL;
    vlm_tensor *cos = NULL, *sin = NULL;
    /* M-RoPE: text advances the three streams together; an image (or one
     * video frame: Qwen3-VL's processor puts each frame in its own span behind
     * a timestamp) takes (t, h, w) = start + (frame, row, col) over its merged
     * grid, and the text after it starts at start + max(h, w). As transformers
     * 5 does, the 3D layout needs the processor's mm_token_type_ids among the
     * features; without it every token takes 1D positions. */
    int mm = vlm_features_get(f, "mm_token_type_ids") != NULL;
    vlm_mrope_spec sp = {.image_token = mm ? m->image_token_id : -1, .video_token = mm ? m->video_token_id : -1,
                         .merge = q->merge, .image_grid = vlm_features_get(f, "image_grid_thw"),
                         .video_grid = vlm_features_get(f, "video_grid_thw"), .image_tscale = 1.0f,
                         .video_frame_spans = 1};
    vlm_status st = vlm_mrope_begin(s, &sp, ids, n, q->d.hp.head_dim, q->theta, q->mrope_section, 1, &pos, &cos, &sin);
    if (st != VLM_OK) return st;
    int32_t *vdst = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n);
    int32_t *vsrc = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n);
    if (!vdst || !vsrc) {
        s->rope_pos = saved_rope;
        return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    }

    /* DeepStack: the visual positions and their rows, as the embedding finds them
     * (too many placeholders: none here, the embedding reports the error) */
    int n_deep = vision && vision->embeds ? vision->n_extra : 0;
    int64_t n_vis = n_deep ? vlm_vision_rows(ids, n, vision, m->image_token_id, m->video_token_id, vdst, vsrc) : 0;
    if (n_vis < 0) n_vis = 0;
    q3_call k = {.q = q, .vision = vision, .n_deep = n_deep, .n_vis = n_vis,
                 .src_ids = n_vis ? vlm_from_host(c, VLM_I32, 1, &n_vis, vsrc) : NULL,
                 .dst_ids = n_vis ? vlm_from_host(c, VLM_I32, 1, &n_vis, vdst) : NULL};
    vlm_dec_hooks hooks = {.state = &k, .layer = q3_layer, .after_layer = q3_deepstack};
    vlm_dec_call a = {.ids = ids, .n = n, .pos = pos, .cos = cos, .sin = sin, .vision = vision,
                      .image_token = m->image_token_id, .video_token = m->video_token_id, .all_logits = all_logits,
                      .hooks = &hooks};
    st = vlm_dec_run(s, &q->d, &a, logits);
    if (st != VLM_OK) s->rope_pos = saved_rope;
    return st;
}

static vlm_status q3_seq_init(vlm_model *m, vlm_seq *s, vlm_error *err) {
    q3_model *q = (q3_model *)m->impl;
    return vlm_seq_kv_uniform(s, q->d.n_layers, q->d.hp.n_kv_heads, q->d.hp.head_dim, err);
}

static vlm_status q3_bench_vision(vlm_model *m, int w, int h, int n_tiles, vlm_features *f, int *tiles, vlm_error *err) {
    *tiles = 0;
    if (n_tiles > 0) return vlm_error_set(err, VLM_ERR_ARG, "qwen3_vl takes images whole, not tiles (use --image WxH)");
    return vlm_bench_image(m, VLM_IMAGE_QWEN2_VL, w, h, f, err);
}

static const char *const q3_hf_names[] = {"Qwen3VLForConditionalGeneration", "Qwen3VLModel",
                                          "Qwen3VLMoeForConditionalGeneration", "Qwen3VLMoeModel", NULL};
static const char *const q3_model_types[] = {"qwen3_vl", "qwen3_vl_moe", NULL};

const vlm_arch vlm_arch_qwen3_vl = {
    .name = "qwen3_vl",
    .hf_architectures = q3_hf_names,
    .model_types = q3_model_types,
    .load = q3_load,
    .unload = q3_unload,
    .encode = q3_encode,
    .forward = q3_forward,
    .seq_init = q3_seq_init,
    .seq_free = NULL,
    .bench_vision = q3_bench_vision,
};
