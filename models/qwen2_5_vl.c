/* Qwen2.5-VL: a windowed ViT with 2D RoPE and a 2×2 patch merger, feeding
 * a Qwen2 decoder with multimodal RoPE (M-RoPE) over (t, h, w) positions. */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    /* vision tower */
    int v_depth, v_hidden, v_heads, v_inter, v_out, patch, t_patch, merge, window;
    int in_channels;
    float v_theta;
    int *fullatt;                 /* [v_depth] 1 = full attention block */
    vlm_tensor *patch_embed;      /* [v_hidden, C*T*P*P] view of the conv3d weight */
    vlm_qwen_vit_block *blocks;
    vlm_tensor *merger_norm, *merger_fc1, *merger_fc1_b, *merger_fc2, *merger_fc2_b;
    /* decoder: a Qwen2 stack (qkv bias) with M-RoPE */
    vlm_dec_stack d;
    float theta;
    int mrope_section[3];
    float tokens_per_second;
} q25_model;

static vlm_status q25_load_config(vlm_model *m, q25_model *q, vlm_error *err) {
    const vlm_json *cfg = m->config, *vc = vlm_json_get(cfg, "vision_config");
    if (!vc) return vlm_error_set(err, VLM_ERR_CONFIG, "config.json has no vision_config");
    q->v_depth = (int)vlm_json_int(vlm_json_get(vc, "depth"), 32);
    q->v_hidden = (int)vlm_json_int(vlm_json_get(vc, "hidden_size"), 1280);
    q->v_heads = (int)vlm_json_int(vlm_json_get(vc, "num_heads"), 16);
    q->v_inter = (int)vlm_json_int(vlm_json_get(vc, "intermediate_size"), 3420);
    q->v_out = (int)vlm_json_int(vlm_json_get(vc, "out_hidden_size"), 3584);
    q->patch = (int)vlm_json_int(vlm_json_get(vc, "patch_size"), 14);
    q->t_patch = (int)vlm_json_int(vlm_json_get(vc, "temporal_patch_size"), 2);
    q->merge = (int)vlm_json_int(vlm_json_get(vc, "spatial_merge_size"), 2);
    q->window = (int)vlm_json_int(vlm_json_get(vc, "window_size"), 112);
    q->in_channels = (int)vlm_json_int(vlm_json_get(vc, "in_channels"), 3);
    q->tokens_per_second = (float)vlm_json_num(vlm_json_get(vc, "tokens_per_second"), 2);
    q->v_theta = (float)vlm_json_num(vlm_json_path(vc, "rope_parameters.rope_theta"), 10000.0);
    vlm_dec_stack_config(cfg, "text_config", &q->d);
    q->d.hp.act = VLM_UNARY_SILU;
    q->theta = (float)vlm_json_num(vlm_cfg_rope(cfg, "rope_theta"), 1000000.0);
    m->vocab_size = (int)vlm_json_int(vlm_cfg_text(cfg, "vocab_size"), 0);
    m->hidden_size = q->d.hidden;
    m->image_token_id = (int32_t)vlm_json_int(vlm_json_get(cfg, "image_token_id"), 151655);
    m->video_token_id = (int32_t)vlm_json_int(vlm_json_get(cfg, "video_token_id"), 151656);
    const vlm_json *sec = vlm_cfg_rope(cfg, "mrope_section");
    if (q->d.hidden <= 0 || q->d.n_layers <= 0 || q->d.inter <= 0 || q->d.hp.n_heads <= 0 || q->d.hp.n_kv_heads <= 0 ||
        q->d.hidden % q->d.hp.n_heads || q->d.hp.n_heads % q->d.hp.n_kv_heads || m->vocab_size <= 0)
        return vlm_error_set(err, VLM_ERR_CONFIG, "text config: hidden_size/num_hidden_layers/heads/vocab_size missing or inconsistent");
    if (q->v_hidden % q->v_heads || (q->v_hidden / q->v_heads) % 4 || q->merge <= 0 || q->patch <= 0 ||
        q->window < q->merge * q->patch || q->v_depth <= 0)
        return vlm_error_set(err, VLM_ERR_CONFIG, "vision config: inconsistent sizes");
    q->d.hp.head_dim = q->d.hidden / q->d.hp.n_heads;
    if (!sec || sec->type != VLM_JSON_ARRAY || sec->n != 3)
        return vlm_error_set(err, VLM_ERR_CONFIG, "mrope_section missing (rope_parameters.mrope_section)");
    int sum = 0;
    for (int i = 0; i < 3; i++) sum += q->mrope_section[i] = (int)vlm_json_int(vlm_json_at(sec, i), 0);
    if (sum != q->d.hp.head_dim / 2)
        return vlm_error_set(err, VLM_ERR_CONFIG, "mrope_section sums to %d, head_dim/2 is %d", sum, q->d.hp.head_dim / 2);
    return VLM_OK;
}

static vlm_status q25_load(vlm_model *m, vlm_error *err) {
    q25_model *q = (q25_model *)calloc(1, sizeof *q);
    if (!q) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    m->impl = q;
    vlm_status s = q25_load_config(m, q, err);
    if (s != VLM_OK) return s;
    if (vlm_model_check_count(m, q->v_depth, "vision_config.depth", err) != VLM_OK) return err->code;
    q->fullatt = (int *)calloc((size_t)q->v_depth, sizeof(int));
    q->blocks = (vlm_qwen_vit_block *)calloc((size_t)q->v_depth, sizeof *q->blocks);
    if (!q->fullatt || !q->blocks) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    const vlm_json *fa = vlm_json_path(m->config, "vision_config.fullatt_block_indexes");
    for (int i = 0; fa && i < fa->n; i++) {
        int64_t b = vlm_json_int(vlm_json_at(fa, i), -1);
        if (b >= 0 && b < q->v_depth) q->fullatt[b] = 1;
    }

    vlm_loader ld = {.m = m, .err = err, .role = VLM_LINEAR_VISION};
    int64_t V = q->v_hidden;
    if (vlm_qwen_vit_load(&ld, q->v_depth, V, q->v_inter, q->in_channels, q->t_patch, q->patch, 0, &q->patch_embed,
                          q->blocks) != VLM_OK)
        return err->code;
    int64_t M = V * q->merge * q->merge;
    q->merger_norm = vlm_ld(&ld, VLM_SHAPE1(V), "merger.ln_q.weight");
    q->merger_fc1 = vlm_ld_linear(&ld, M, M, "merger.mlp.0.weight");
    q->merger_fc1_b = vlm_ld(&ld, VLM_SHAPE1(M), "merger.mlp.0.bias");
    q->merger_fc2 = vlm_ld_linear(&ld, q->v_out, M, "merger.mlp.2.weight");
    q->merger_fc2_b = vlm_ld(&ld, VLM_SHAPE1(q->v_out), "merger.mlp.2.bias");
    if (err->code) return err->code;
    if (q->v_out != q->d.hidden)
        return vlm_error_set(err, VLM_ERR_CONFIG, "vision out_hidden_size %d != text hidden_size %d", q->v_out, q->d.hidden);

    static const char *const txt_prefixes[] = {"model.language_model.", "model.", NULL};
    ld.role = VLM_LINEAR_TEXT;
    if (!vlm_loader_prefix(&ld, txt_prefixes, "embed_tokens.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no decoder weights (model.embed_tokens.weight)");
    int tied = vlm_json_bool(vlm_json_get(m->config, "tie_word_embeddings"), 0) ||
               vlm_json_bool(vlm_cfg_text(m->config, "tie_word_embeddings"), 0);
    return vlm_dec_stack_load(&ld, m->vocab_size, 1, 0, tied, &q->d);
}

static void q25_unload(vlm_model *m) {
    q25_model *q = (q25_model *)m->impl;
    if (q) { free(q->fullatt); free(q->blocks); free(q->d.layers); free(q); }
    m->impl = NULL;
}

/* ------------------------------------------------------------------ vision */

/* Host-side layout of one packed call of the vision tower: the window order
 * of the merge units, each patch's window and frame, and its 2D RoPE. */
typedef struct {
    int64_t n;             /* patches */
    int32_t *order;        /* [n] patch row (original order) at each windowed position */
    int32_t *unorder;      /* [n/unit] merged row -> windowed merged row */
    int32_t *win_seg, *frame_seg; /* [n] in windowed order */
    float *cos, *sin;      /* [n, head_dim] in windowed order */
} q25_layout;

static vlm_status q25_make_layout(vlm_compute *c, const q25_model *q, const vlm_tensor *grid, int64_t n, q25_layout *L) {
    int m = q->merge, unit = m * m, hd = q->v_hidden / q->v_heads;
    int vws = q->window / m / q->patch; /* window side in merged units */
    L->n = n;
    L->order = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n);
    L->unorder = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)(n / unit));
    L->win_seg = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n);
    L->frame_seg = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)n);
    L->cos = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n * hd));
    L->sin = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n * hd));
    if (!L->order || !L->unorder || !L->win_seg || !L->frame_seg || !L->cos || !L->sin)
        return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    float inv[256];
    vlm_rope_inv_freq(inv, hd / 2, q->v_theta);
    int64_t k = 0, base = 0;
    int32_t win = 0, frame = 0;
    for (int64_t g = 0; g < grid->shape[0]; g++) {
        int64_t t = vlm_get_i64(grid, g * 3), h = vlm_get_i64(grid, g * 3 + 1), w = vlm_get_i64(grid, g * 3 + 2);
        int64_t gh = h / m, gw = w / m; /* merged grid */
        int64_t nwh = (gh + vws - 1) / vws, nww = (gw + vws - 1) / vws;
        for (int64_t f = 0; f < t; f++, frame++)
            for (int64_t wy = 0; wy < nwh; wy++)
                for (int64_t wx = 0; wx < nww; wx++, win++)
                    for (int64_t y = wy * vws; y < (wy + 1) * vws && y < gh; y++)
                        for (int64_t x = wx * vws; x < (wx + 1) * vws && x < gw; x++) {
                            int64_t merged = base / unit + (f * gh + y) * gw + x; /* row in original merged order */
                            L->unorder[merged] = (int32_t)(k / unit);
                            for (int u = 0; u < unit; u++, k++) {
                                /* patches of a merge unit are stored together: (dy, dx) row-major */
                                int64_t py = y * m + u / m, px = x * m + u % m;
                                L->order[k] = (int32_t)(merged * unit + u);
                                L->win_seg[k] = win;
                                L->frame_seg[k] = frame;
                                vlm_vision_rope_2d(L->cos + k * hd, L->sin + k * hd, py, px, inv, hd);
                            }
                        }
        base += t * h * w;
    }
    return VLM_OK;
}

static vlm_tensor *vlm_qwen_vit_block_forward(vlm_compute *c, const q25_model *q, const vlm_qwen_vit_block *B, vlm_tensor *x,
                                         vlm_tensor *cos, vlm_tensor *sin, const int32_t *seg) {
    vlm_tensor *h = vlm_rms_norm(c, x, B->norm1, 1e-6f);
    x = vlm_add(c, x, vlm_vit_attention(c, h, B->qkv, B->qkv_b, B->proj, B->proj_b, q->v_heads, cos, sin, seg));
    h = vlm_rms_norm(c, x, B->norm2, 1e-6f);
    vlm_tensor *mlp = vlm_glu(c, vlm_linear(c, h, B->gate, B->gate_b), vlm_linear(c, h, B->up, B->up_b), VLM_UNARY_SILU);
    return vlm_add(c, x, vlm_linear(c, mlp, B->down, B->down_b));
}

/* pixels [n, C*T*P*P] host f32/f16/bf16, grid [k, 3] -> merged embeddings [n/unit, hidden]. */
static vlm_tensor *q25_vision(vlm_compute *c, const void *model, const vlm_tensor *pixels, const vlm_tensor *grid,
                              vlm_tensor **extra) {
    const q25_model *q = (const q25_model *)model;
    int unit = q->merge * q->merge, hd = q->v_hidden / q->v_heads;
    (void)extra;
    int64_t n_rows = vlm_qwen_grid_patches(c, pixels, q->patch_embed->shape[1], grid, q->merge);
    q25_layout L = {0};
    if (n_rows < 0) return NULL;
    if (q25_make_layout(c, q, grid, n_rows, &L) != VLM_OK) { c->failed = 1; return NULL; }
    int64_t n = L.n;
    vlm_tensor *px = vlm_from_host(c, pixels->dtype, 2, pixels->shape, pixels->data);
    vlm_tensor *order = vlm_from_host(c, VLM_I32, 1, &n, L.order);
    /* Patch embedding, then rows into window order (patches of a merge unit stay together). */
    vlm_tensor *x = vlm_get_rows(c, vlm_matmul(c, px, q->patch_embed), order);
    vlm_tensor *cos = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n, hd}, L.cos);
    vlm_tensor *sin = vlm_from_host(c, VLM_F32, 2, (const int64_t[]){n, hd}, L.sin);
    vlm_tensor *resid = vlm_new_2d(c, VLM_F32, n, q->v_hidden);
    if (!x || !resid || vlm_copy(c, resid, x) != VLM_OK) return NULL;
    for (int b = 0; b < q->v_depth; b++) {
        vlm_arena_mark mark = vlm_arena_get_mark(&c->arena);
        x = vlm_qwen_vit_block_forward(c, q, &q->blocks[b], resid, cos, sin, q->fullatt[b] ? L.frame_seg : L.win_seg);
        if (!x || vlm_copy(c, resid, x) != VLM_OK) return NULL;
        vlm_arena_release(&c->arena, mark);
    }
    /* Merger: RMSNorm, 2×2 units concatenated, MLP; then back to raster order. */
    x = vlm_reshape_2d(c, vlm_rms_norm(c, resid, q->merger_norm, 1e-6f), n / unit, (int64_t)q->v_hidden * unit);
    x = vlm_unary(c, vlm_linear(c, x, q->merger_fc1, q->merger_fc1_b), VLM_UNARY_GELU);
    x = vlm_linear(c, x, q->merger_fc2, q->merger_fc2_b);
    int64_t nm = n / unit;
    return vlm_get_rows(c, x, vlm_from_host(c, VLM_I32, 1, &nm, L.unorder));
}

static vlm_status q25_encode(vlm_model *m, vlm_compute *c, const vlm_features *f, vlm_vision_out *out) {
    return vlm_qwen_encode(c, m->impl, q25_vision, 0, f, out);
}

/* ------------------------------------------------------------------ decoder */

/* Per-sequence state: how many grids of each kind earlier calls consumed. */
typedef struct {
    int64_t img_rows, vid_rows;
    int img_grids, vid_grids;
} q25_seq;

/* M-RoPE positions of ids[0..n): text tokens advance all three streams
 * together; a run of image/video tokens gets (t, h, w) grid positions offset
 * by the next text position, and the text after it continues at max + 1.
 * Video time indices are frame * second_per_grid_t * tokens_per_second.
 *
 * As in transformers 5, the 3D positions are used only when the processor
 * outputs include mm_token_type_ids (the HF processor returns it with
 * input_ids); without it transformers falls back to 1D positions for every
 * token, and so do we, so that the same inputs give the same outputs. */
static vlm_status q25_mrope_spec(vlm_compute *c, const q25_model *q, const vlm_model *m, const vlm_features *f,
                                 vlm_mrope_spec *sp) {
    int mm = vlm_features_get(f, "mm_token_type_ids") != NULL;
    *sp = (vlm_mrope_spec){.image_token = mm ? m->image_token_id : -1, .video_token = mm ? m->video_token_id : -1,
                           .merge = q->merge, .image_grid = vlm_features_get(f, "image_grid_thw"),
                           .video_grid = vlm_features_get(f, "video_grid_thw")};
    const vlm_tensor *spg = vlm_features_get(f, "second_per_grid_ts");
    int64_t n_vid = sp->video_grid && sp->video_grid->ndim == 2 ? sp->video_grid->shape[0] : 0;
    float *tscale = (float *)vlm_arena_alloc(&c->arena, sizeof(float) * (size_t)(n_vid + 1));
    if (!tscale) return vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    for (int64_t k = 0; k < n_vid; k++)
        tscale[k] = (spg && k < vlm_nelem(spg) ? vlm_get_f32(spg, k) : 1.0f) * q->tokens_per_second;
    sp->video_tscale = tscale;
    return VLM_OK;
}

static vlm_status q25_forward(vlm_model *m, vlm_seq *s, const int32_t *ids, int n, const vlm_vision_out *vision,
                              const vlm_features *f, int all_logits, vlm_tensor **logits) {
    q25_model *q = (q25_model *)m->impl;
    vlm_compute *c = &s->c;
    *logits = NULL;
    int64_t saved_rope = s->rope_pos;
    int32_t *pos = NULL;
    vlm_tensor *cos = NULL, *sin = NULL;
    vlm_mrope_spec sp;
    vlm_status st = q25_mrope_spec(c, q, m, f, &sp);
    if (st == VLM_OK)
        st = vlm_mrope_begin(s, &sp, ids, n, q->d.hp.head_dim, q->theta, q->mrope_section, 0, &pos, &cos, &sin);
    if (st != VLM_OK) return st;

    vlm_dec_call a = {.ids = ids, .n = n, .pos = pos, .cos = cos, .sin = sin, .vision = vision,
                      .image_token = m->image_token_id, .video_token = m->video_token_id, .all_logits = all_logits};
    st = vlm_dec_run(s, &q->d, &a, logits);
    if (st != VLM_OK) s->rope_pos = saved_rope;
    return st;
}

static vlm_status q25_seq_init(vlm_model *m, vlm_seq *s, vlm_error *err) {
    q25_model *q = (q25_model *)m->impl;
    s->impl = calloc(1, sizeof(q25_seq));
    if (!s->impl) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    return vlm_seq_kv_uniform(s, q->d.n_layers, q->d.hp.n_kv_heads, q->d.hp.head_dim, err);
}

static void q25_seq_free(vlm_model *m, vlm_seq *s) {
    (void)m;
    free(s->impl);
    s->impl = NULL;
}

static vlm_status q25_bench_vision(vlm_model *m, int w, int h, int n_tiles, vlm_features *f, int *tiles, vlm_error *err) {
    *tiles = 0;
    if (n_tiles > 0) return vlm_error_set(err, VLM_ERR_ARG, "qwen2_5_vl takes images whole, not tiles (use --image WxH)");
    return vlm_bench_image(m, VLM_IMAGE_QWEN2_VL, w, h, f, err);
}

static const char *const q25_hf_names[] = {"Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLModel", NULL};
static const char *const q25_model_types[] = {"qwen2_5_vl", NULL};

const vlm_arch vlm_arch_qwen2_5_vl = {
    .name = "qwen2_5_vl",
    .hf_architectures = q25_hf_names,
    .model_types = q25_model_types,
    .load = q25_load,
    .unload = q25_unload,
    .encode = q25_encode,
    .forward = q25_forward,
    .seq_init = q25_seq_init,
    .seq_free = q25_seq_free,
    .bench_vision = q25_bench_vision,
};
