/* Idefics3 / SmolVLM: a SigLIP-style ViT (learned position embeddings that
 * stretch over partial tiles), a pixel-shuffle connector with a linear
 * projection, and a Llama decoder. Images arrive as tiles (rows×cols crops
 * plus a global view), each encoded on its own. */
#include "common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    vlm_tensor *ln1, *ln1_b, *ln2, *ln2_b;
    vlm_tensor *q, *q_b, *k, *k_b, *v, *v_b, *o, *o_b;
    vlm_tensor *fc1, *fc1_b, *fc2, *fc2_b;
} idf_vit_layer;

typedef struct {
    /* vision tower */
    int v_layers, v_hidden, v_heads, v_inter, patch, image_size, channels, scale;
    float v_eps;
    vlm_unary_op v_act;
    vlm_tensor *patch_w, *patch_b; /* [v_hidden, C*P*P] view of the conv weight */
    vlm_tensor *pos_embed;         /* [(image_size/P)², v_hidden] */
    idf_vit_layer *vl;
    vlm_tensor *post_ln, *post_ln_b;
    vlm_tensor *proj;              /* [hidden, v_hidden*scale²] */
    /* decoder */
    vlm_dec_stack d;
    float inv_freq[512]; /* RoPE inverse frequencies (scaled as the config says) */
} idf_model;

/* Text keys live in text_config; very old configs put them at the top level. */
static vlm_status idf_load_config(vlm_model *m, idf_model *q, vlm_error *err) {
    const vlm_json *cfg = m->config, *vc = vlm_json_get(cfg, "vision_config");
    if (!vc) return vlm_error_set(err, VLM_ERR_CONFIG, "config.json has no vision_config");
    /* defaults as Idefics3VisionConfig / Idefics3Config have them */
    q->v_hidden = (int)vlm_json_int(vlm_json_get(vc, "hidden_size"), 1152);
    q->v_inter = (int)vlm_json_int(vlm_json_get(vc, "intermediate_size"), 3072);
    q->v_layers = (int)vlm_json_int(vlm_json_get(vc, "num_hidden_layers"), 12);
    q->v_heads = (int)vlm_json_int(vlm_json_get(vc, "num_attention_heads"), 16);
    q->channels = (int)vlm_json_int(vlm_json_get(vc, "num_channels"), 3);
    q->image_size = (int)vlm_json_int(vlm_json_get(vc, "image_size"), 224);
    q->patch = (int)vlm_json_int(vlm_json_get(vc, "patch_size"), 32);
    q->v_eps = (float)vlm_json_num(vlm_json_get(vc, "layer_norm_eps"), 1e-6);
    const char *act = vlm_json_str(vlm_json_get(vc, "hidden_act"), "gelu_pytorch_tanh");
    if (!strcmp(act, "gelu_pytorch_tanh") || !strcmp(act, "gelu_new") || !strcmp(act, "gelu_fast"))
        q->v_act = VLM_UNARY_GELU_TANH;
    else if (!strcmp(act, "gelu")) q->v_act = VLM_UNARY_GELU;
    else return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "vision hidden_act \"%s\" not supported", act);
    q->scale = (int)vlm_json_int(vlm_json_get(cfg, "scale_factor"), 2);

    vlm_dec_stack_config(cfg, "text_config", &q->d);
    q->d.hp.act = VLM_UNARY_SILU;
    const char *tact = vlm_json_str(vlm_cfg_text(cfg, "hidden_act"), "silu");
    if (strcmp(tact, "silu") && strcmp(tact, "swish"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "text hidden_act \"%s\" not supported", tact);
    if (vlm_json_bool(vlm_cfg_text(cfg, "attention_bias"), 0) || vlm_json_bool(vlm_cfg_text(cfg, "mlp_bias"), 0))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "Llama attention_bias/mlp_bias not supported");
    /* RoPE: rope_parameters (transformers 5), else rope_theta next to it (older). */
    const vlm_json *rp = vlm_cfg_text(cfg, "rope_parameters");
    if (!rp || rp->type != VLM_JSON_OBJECT) rp = vlm_cfg_text(cfg, "rope_scaling");
    const char *rtype = vlm_json_str(vlm_json_get(rp, "rope_type"), vlm_json_str(vlm_json_get(rp, "type"), "default"));
    if (strcmp(rtype, "default") && strcmp(rtype, "linear") && strcmp(rtype, "llama3"))
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "rope type \"%s\" not supported", rtype);
    const vlm_json *th = vlm_json_get(rp, "rope_theta");
    float theta = (float)vlm_json_num(th ? th : vlm_cfg_text(cfg, "rope_theta"), 10000.0);
    m->vocab_size = (int)vlm_json_int(vlm_cfg_text(cfg, "vocab_size"), 0);
    m->hidden_size = q->d.hidden;
    m->image_token_id = (int32_t)vlm_json_int(vlm_json_get(cfg, "image_token_id"), 128257);
    m->video_token_id = -1;
    if (q->d.hidden <= 0 || q->d.n_layers <= 0 || q->d.inter <= 0 || q->d.hp.n_heads <= 0 || q->d.hp.n_kv_heads <= 0 ||
        q->d.hp.n_heads % q->d.hp.n_kv_heads || m->vocab_size <= 0)
        return vlm_error_set(err, VLM_ERR_CONFIG, "text config: hidden_size/num_hidden_layers/heads/vocab_size missing or inconsistent");
    if (q->d.hp.head_dim <= 0 || q->d.hp.head_dim % 2 || q->d.hp.head_dim > 1024)
        return vlm_error_set(err, VLM_ERR_CONFIG, "text head_dim %d", q->d.hp.head_dim);
    int hd = q->d.hp.head_dim;
    vlm_rope_inv_freq(q->inv_freq, hd, theta);
    if (strcmp(rtype, "default")) {
        /* linear: every frequency / factor; llama3: long wavelengths / factor,
         * short ones kept, a smooth blend in between (transformers' rules) */
        double factor = vlm_json_num(vlm_json_get(rp, "factor"), 1.0);
        double lo = vlm_json_num(vlm_json_get(rp, "low_freq_factor"), 1.0);
        double hi = vlm_json_num(vlm_json_get(rp, "high_freq_factor"), 4.0);
        double old_ctx = vlm_json_num(vlm_json_get(rp, "original_max_position_embeddings"), 8192.0);
        if (factor <= 0 || hi <= lo) return vlm_error_set(err, VLM_ERR_CONFIG, "rope scaling parameters");
        for (int i = 0; i < hd / 2; i++) {
            double f = q->inv_freq[i], wl = 2 * 3.14159265358979323846 / f;
            if (!strcmp(rtype, "linear") || wl > old_ctx / lo) f /= factor;
            else if (wl >= old_ctx / hi) {
                double sm = (old_ctx / wl - lo) / (hi - lo);
                f = (1 - sm) * f / factor + sm * f;
            }
            q->inv_freq[i] = (float)f;
        }
    }
    int side = q->patch > 0 ? q->image_size / q->patch : 0;
    if (q->v_hidden <= 0 || q->v_heads <= 0 || q->v_hidden % q->v_heads || q->v_layers <= 0 || q->v_inter <= 0 ||
        q->channels <= 0 || side <= 0 || q->scale <= 0 || side % q->scale)
        return vlm_error_set(err, VLM_ERR_CONFIG, "vision config / scale_factor: inconsistent sizes");
    return VLM_OK;
}

static vlm_status idf_load(vlm_model *m, vlm_error *err) {
    idf_model *q = (idf_model *)calloc(1, sizeof *q);
    if (!q) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");
    m->impl = q;
    vlm_status s = idf_load_config(m, q, err);
    if (s != VLM_OK) return s;
    if (vlm_model_check_count(m, q->v_layers, "vision_config.num_hidden_layers", err) != VLM_OK) return err->code;
    q->vl = (idf_vit_layer *)calloc((size_t)q->v_layers, sizeof *q->vl);
    if (!q->vl) return vlm_error_set(err, VLM_ERR_OOM, "out of memory");

    vlm_loader ld = {.m = m, .err = err, .role = VLM_LINEAR_VISION};
    static const char *const vis_prefixes[] = {"model.vision_model.", "vision_model.", NULL};
    if (!vlm_loader_prefix(&ld, vis_prefixes, "embeddings.patch_embedding.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no vision tower weights (model.vision_model.embeddings.patch_embedding.weight)");
    int64_t V = q->v_hidden, I = q->v_inter, P = q->patch, side = q->image_size / q->patch;
    int64_t pdim = (int64_t)q->channels * P * P;
    vlm_tensor *pw = vlm_ld(&ld, 4, (const int64_t[]){V, q->channels, P, P}, "embeddings.patch_embedding.weight");
    if (pw) { /* a stride-P conv over P×P patches is a matmul with the flattened kernel */
        pw->ndim = 2;
        pw->shape[1] = pdim;
        pw->stride[0] = pdim;
        pw->stride[1] = 1;
    }
    q->patch_w = pw;
    q->patch_b = vlm_ld(&ld, VLM_SHAPE1(V), "embeddings.patch_embedding.bias");
    q->pos_embed = vlm_ld(&ld, VLM_SHAPE2(side * side, V), "embeddings.position_embedding.weight");
    for (int l = 0; l < q->v_layers; l++) {
        idf_vit_layer *L = &q->vl[l];
        L->ln1 = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.layer_norm1.weight", l);
        L->ln1_b = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.layer_norm1.bias", l);
        L->ln2 = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.layer_norm2.weight", l);
        L->ln2_b = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.layer_norm2.bias", l);
        L->q = vlm_ld_linear(&ld, V, V, "encoder.layers.%d.self_attn.q_proj.weight", l);
        L->q_b = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.self_attn.q_proj.bias", l);
        L->k = vlm_ld_linear(&ld, V, V, "encoder.layers.%d.self_attn.k_proj.weight", l);
        L->k_b = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.self_attn.k_proj.bias", l);
        L->v = vlm_ld_linear(&ld, V, V, "encoder.layers.%d.self_attn.v_proj.weight", l);
        L->v_b = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.self_attn.v_proj.bias", l);
        L->o = vlm_ld_linear(&ld, V, V, "encoder.layers.%d.self_attn.out_proj.weight", l);
        L->o_b = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.self_attn.out_proj.bias", l);
        L->fc1 = vlm_ld_linear(&ld, I, V, "encoder.layers.%d.mlp.fc1.weight", l);
        L->fc1_b = vlm_ld(&ld, VLM_SHAPE1(I), "encoder.layers.%d.mlp.fc1.bias", l);
        L->fc2 = vlm_ld_linear(&ld, V, I, "encoder.layers.%d.mlp.fc2.weight", l);
        L->fc2_b = vlm_ld(&ld, VLM_SHAPE1(V), "encoder.layers.%d.mlp.fc2.bias", l);
    }
    q->post_ln = vlm_ld(&ld, VLM_SHAPE1(V), "post_layernorm.weight");
    q->post_ln_b = vlm_ld(&ld, VLM_SHAPE1(V), "post_layernorm.bias");
    if (err->code) return err->code;

    static const char *const conn_prefixes[] = {"model.connector.", "connector.", NULL};
    if (!vlm_loader_prefix(&ld, conn_prefixes, "modality_projection.proj.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no connector weights (model.connector.modality_projection.proj.weight)");
    q->proj = vlm_ld_linear(&ld, q->d.hidden, V * q->scale * q->scale, "modality_projection.proj.weight");
    if (err->code) return err->code;

    static const char *const txt_prefixes[] = {"model.text_model.", "text_model.", "model.language_model.", NULL};
    ld.role = VLM_LINEAR_TEXT;
    if (!vlm_loader_prefix(&ld, txt_prefixes, "embed_tokens.weight"))
        return vlm_error_set(err, VLM_ERR_FORMAT, "no decoder weights (model.text_model.embed_tokens.weight)");
    int tied = vlm_json_bool(vlm_json_get(m->config, "tie_word_embeddings"), 0) ||
               vlm_json_bool(vlm_json_path(m->config, "text_config.tie_word_embeddings"), 0);
    vlm_dec_stack_load(&ld, m->vocab_size, 0, 0, tied, &q->d);
    return err->code;
}

static void idf_unload(vlm_model *m) {
    idf_model *q = (idf_model *)m->impl;
    if (q) { free(q->vl); free(q->d.layers); free(q); }
    m->impl = NULL;
}

/* ------------------------------------------------------------------ vision */

/* Patch mask and position ids of one tile, from its pixel mask (NULL: all
 * valid). A patch is valid when any of its pixels is; the valid patches form
 * an nb_h × nb_w top-left block whose fractional coordinates
 * arange(0, 1 - 1e-6, 1/nb) are bucketed onto the side × side position grid
 * (bucketize, right=True), with torch's f32/f64 roundings.
 * Returns the number of valid patches, or -1 when they are not a block. */
static int64_t idf_tile_positions(const vlm_tensor *mask, int64_t tile, int64_t gh, int64_t gw, int P, int side,
                                  int32_t *pos, int32_t *kseg) {
    int64_t H = gh * P, W = gw * P, n_valid = 0;
    for (int64_t py = 0; py < gh; py++)
        for (int64_t px = 0; px < gw; px++) {
            int any = !mask;
            for (int64_t y = py * P; !any && y < (py + 1) * P; y++)
                for (int64_t x = px * P; !any && x < (px + 1) * P; x++)
                    any = vlm_get_f32(mask, (tile * H + y) * W + x) != 0.0f;
            kseg[py * gw + px] = any ? 0 : -1;
            n_valid += any;
        }
    int64_t nb_h = 0, nb_w = 0;
    for (int64_t py = 0; py < gh; py++) nb_h += kseg[py * gw] == 0;
    for (int64_t px = 0; px < gw; px++) nb_w += kseg[px] == 0;
    if (nb_h * nb_w != n_valid) return -1;
    /* boundaries = arange(1/side, 1, 1/side): computed in double, stored as f32 */
    float bound[1024];
    int nb = 0;
    double step = 1.0 / side;
    int64_t len = (int64_t)ceil((1.0 - step) / step);
    for (int64_t i = 0; i < len && nb < 1024; i++) bound[nb++] = (float)(step + (double)i * step);
    int32_t bh[1024], bw[1024];
    for (int pass = 0; pass < 2; pass++) {
        int64_t cnt = pass ? nb_w : nb_h;
        int32_t *b = pass ? bw : bh;
        for (int64_t i = 0; i < cnt && i < 1024; i++) {
            /* 1 / nb is an f32 tensor; arange steps in double and stores f32 */
            float fr = (float)((double)i * (double)(1.0f / (float)cnt));
            int k = 0;
            while (k < nb && bound[k] <= fr) k++; /* bucketize(right=True) */
            b[i] = k;
        }
    }
    int64_t k = 0;
    for (int64_t i = 0; i < gh * gw; i++) {
        if (kseg[i]) { pos[i] = 0; continue; }
        int64_t r = k / nb_w, cc = k % nb_w;
        pos[i] = bh[r] * side + bw[cc];
        k++;
    }
    return n_valid;
}

static vlm_tensor *idf_vit_layer_forward(vlm_compute *c, const idf_model *q, const idf_vit_layer *L, vlm_tensor *x,
                                         const vlm_attn_params *ap) {
    int64_t n = x->shape[0], V = q->v_hidden, H = q->v_heads, hd = V / H;
    vlm_tensor *h = vlm_layer_norm(c, x, L->ln1, L->ln1_b, q->v_eps);
    vlm_tensor *qh = vlm_reshape_3d(c, vlm_linear(c, h, L->q, L->q_b), n, H, hd);
    vlm_tensor *kh = vlm_reshape_3d(c, vlm_linear(c, h, L->k, L->k_b), n, H, hd);
    vlm_tensor *vh = vlm_reshape_3d(c, vlm_linear(c, h, L->v, L->v_b), n, H, hd);
    vlm_tensor *a = vlm_reshape_2d(c, vlm_attention(c, qh, kh, vh, ap), n, V);
    x = vlm_add(c, x, vlm_linear(c, a, L->o, L->o_b));
    h = vlm_layer_norm(c, x, L->ln2, L->ln2_b, q->v_eps);
    h = vlm_unary(c, vlm_linear(c, h, L->fc1, L->fc1_b), q->v_act);
    return vlm_add(c, x, vlm_linear(c, h, L->fc2, L->fc2_b));
}

/* One tile [C, H, W] -> connector output [np/scale², hidden]. */
static vlm_tensor *idf_tile_forward(vlm_compute *c, const idf_model *q, vlm_tensor *img, const int32_t *pos,
                                    const int32_t *kseg, int padded) {
    int64_t gh = img->shape[1] / q->patch, gw = img->shape[2] / q->patch, np = gh * gw;
    vlm_tensor *x = vlm_linear(c, vlm_im2col(c, img, q->patch), q->patch_w, q->patch_b);
    x = vlm_add(c, x, vlm_get_rows(c, q->pos_embed, vlm_from_host(c, VLM_I32, 1, &np, pos)));
    vlm_tensor *resid = vlm_new_2d(c, VLM_F32, np, q->v_hidden);
    if (!x || !resid || vlm_copy(c, resid, x) != VLM_OK) return NULL;
    /* Bidirectional attention; padding patches are hidden as keys only (as
     * transformers' additive mask does): their segment matches no query. */
    int32_t *qseg = padded ? (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)np) : NULL;
    if (padded && !qseg) { vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory"); c->failed = 1; return NULL; }
    if (qseg) memset(qseg, 0, sizeof(int32_t) * (size_t)np);
    vlm_attn_params ap = {.scale = 1.0f / sqrtf((float)(q->v_hidden / q->v_heads)), .q_seg = qseg,
                          .k_seg = padded ? kseg : NULL};
    for (int l = 0; l < q->v_layers; l++) {
        vlm_arena_mark mark = vlm_arena_get_mark(&c->arena);
        x = idf_vit_layer_forward(c, q, &q->vl[l], resid, &ap);
        if (!x || vlm_copy(c, resid, x) != VLM_OK) return NULL;
        vlm_arena_release(&c->arena, mark);
    }
    x = vlm_layer_norm(c, resid, q->post_ln, q->post_ln_b, q->v_eps);
    x = vlm_pixel_shuffle(c, vlm_reshape_3d(c, x, 1, np, q->v_hidden), q->scale);
    int r2 = q->scale * q->scale;
    return vlm_linear(c, vlm_reshape_2d(c, x, np / r2, (int64_t)q->v_hidden * r2), q->proj, NULL);
}

static int idf_all_zero(const vlm_tensor *t, int64_t off, int64_t n) {
    if (t->dtype == VLM_F32) {
        const float *p = (const float *)t->data + off;
        for (int64_t i = 0; i < n; i++) if (p[i] != 0.0f) return 0;
        return 1;
    }
    for (int64_t i = 0; i < n; i++) if (vlm_get_f32(t, off + i) != 0.0f) return 0;
    return 1;
}

static vlm_status idf_encode(vlm_model *m, vlm_compute *c, const vlm_features *f, vlm_vision_out *out) {
    const idf_model *q = (const idf_model *)m->impl;
    memset(out, 0, sizeof *out);
    const vlm_tensor *pv = vlm_features_get(f, "pixel_values"), *mask = vlm_features_get(f, "pixel_attention_mask");
    if (!pv) return vlm_error_set(&c->err, VLM_ERR_ARG, "no pixel_values given");
    int nd = pv->ndim;
    if (nd < 4 || nd > 5 || !vlm_is_contiguous(pv) ||
        (pv->dtype != VLM_F32 && pv->dtype != VLM_F16 && pv->dtype != VLM_BF16))
        return vlm_error_set(&c->err, VLM_ERR_ARG, "pixel_values must be contiguous float [tiles, C, H, W] or [batch, tiles, C, H, W]");
    int64_t C = pv->shape[nd - 3], H = pv->shape[nd - 2], W = pv->shape[nd - 1], n_all = pv->shape[0];
    if (nd == 5) n_all *= pv->shape[1];
    int P = q->patch, side = q->image_size / q->patch;
    if (C != q->channels || H != W || H % P || (H / P) % q->scale || H / P > 1024)
        return vlm_error_set(&c->err, VLM_ERR_ARG, "pixel_values tiles [%lld, %lld, %lld]: want %d channels, square, multiple of %d patches",
                             (long long)C, (long long)H, (long long)W, q->channels, P * q->scale);
    if (mask) {
        int ok = mask->ndim == nd - 1 && vlm_is_contiguous(mask) && mask->shape[nd - 3] == H && mask->shape[nd - 2] == W &&
                 vlm_nelem(mask) == n_all * H * W;
        if (!ok) return vlm_error_set(&c->err, VLM_ERR_ARG, "pixel_attention_mask does not match pixel_values");
    }
    int64_t gh = H / P, gw = W / P, np = gh * gw, tpt = np / (q->scale * q->scale);
    int64_t per_tile = C * H * W, n_real = 0;
    for (int64_t t = 0; t < n_all; t++) n_real += !idf_all_zero(pv, t * per_tile, per_tile);
    if (n_real == 0) return vlm_error_set(&c->err, VLM_ERR_ARG, "no images given (all tiles are padding)");
    vlm_tensor *emb = vlm_new_2d(c, VLM_F32, n_real * tpt, q->d.hidden);
    vlm_tensor *px = vlm_from_host(c, pv->dtype, 4, (const int64_t[]){n_all, C, H, W}, pv->data);
    int32_t *pos = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)np);
    int32_t *kseg = (int32_t *)vlm_arena_alloc(&c->arena, sizeof(int32_t) * (size_t)np);
    if (!emb || !px || !pos || !kseg) return c->err.code ? c->err.code : vlm_error_set(&c->err, VLM_ERR_OOM, "out of memory");
    for (int64_t t = 0, k = 0; t < n_all; t++) {
        if (idf_all_zero(pv, t * per_tile, per_tile)) continue; /* padding image, as transformers drops them */
        int64_t nv = idf_tile_positions(mask, t, gh, gw, P, side, pos, kseg);
        if (nv <= 0)
            return vlm_error_set(&c->err, VLM_ERR_ARG, "tile %lld: the valid pixels (pixel_attention_mask) are %s", (long long)t,
                                 nv ? "not a top-left rectangle" : "none");
        vlm_arena_mark mark = vlm_arena_get_mark(&c->arena);
        vlm_tensor *img = vlm_cont(c, vlm_index(c, px, t));
        vlm_tensor *y = idf_tile_forward(c, q, img, pos, kseg, nv < np);
        if (!y || vlm_copy(c, vlm_slice(c, emb, 0, k * tpt, tpt), y) != VLM_OK)
            return c->err.code ? c->err.code : VLM_ERR_ARG;
        vlm_arena_release(&c->arena, mark);
        k++;
    }
    out->embeds = emb;
    out->n_image_tokens = emb->shape[0];
    return VLM_OK;
}

/* ------------------------------------------------------------------ decoder */

static vlm_status idf_forward(vlm_model *m, vlm_seq *s, const int32_t *ids, int n, const vlm_vision_out *vision,
                              const vlm_features *f, int all_logits, vlm_tensor **logits) {
    const idf_model *q = (const idf_model *)m->impl;
    (void)f;
    /* Image tokens take vision rows only when images come with this call (as
     * transformers merges only on the first pass); otherwise an image token
     * id is embedded like any other token. */
    return vlm_dec_stack_forward(s, &q->d, q->inv_freq, ids, n, vision, m->image_token_id, all_logits, logits);
}

static vlm_status idf_seq_init(vlm_model *m, vlm_seq *s, vlm_error *err) {
    idf_model *q = (idf_model *)m->impl;
    return vlm_seq_kv_uniform(s, q->d.n_layers, q->d.hp.n_kv_heads, q->d.hp.head_dim, err);
}

/* The real processor for a WxH image (its tiles: the frames of
 * pixel_values [1, frames, 3, H, W]); n_tiles > 0: that many made-up tiles. */
static vlm_status idf_bench_vision(vlm_model *m, int w, int h, int n_tiles, vlm_features *f, int *tiles, vlm_error *err) {
    *tiles = n_tiles;
    if (n_tiles > 0) return vlm_bench_tiles(n_tiles, ((idf_model *)m->impl)->image_size, f, err);
    vlm_status st = vlm_bench_image(m, VLM_IMAGE_IDEFICS3, w, h, f, err);
    const vlm_tensor *pv = st == VLM_OK ? vlm_features_get(f, "pixel_values") : NULL;
    *tiles = pv && pv->ndim == 5 ? (int)pv->shape[1] : 0;
    return st;
}

static const char *const idf_hf_names[] = {"Idefics3ForConditionalGeneration", "Idefics3Model",
                                           "SmolVLMForConditionalGeneration", "SmolVLMModel", NULL};
static const char *const idf_model_types[] = {"idefics3", "smolvlm", NULL};

const vlm_arch vlm_arch_idefics3 = {
    .name = "idefics3",
    .hf_architectures = idf_hf_names,
    .model_types = idf_model_types,
    .load = idf_load,
    .unload = idf_unload,
    .encode = idf_encode,
    .forward = idf_forward,
    .seq_init = idf_seq_init,
    .seq_free = NULL,
    .bench_vision = idf_bench_vision,
};
