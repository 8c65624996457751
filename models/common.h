/* Blocks shared by the model files: weight lookup by HF name, the
 * Llama/Qwen decoder layer, M-RoPE tables, multimodal embedding merge. */
#ifndef VLM_MODELS_COMMON_H
#define VLM_MODELS_COMMON_H
#include "vlm.h"

/* Weights of one pre-norm decoder layer (absent parts are NULL). */
typedef struct vlm_dec_layer {
    vlm_tensor *attn_norm, *q, *q_b, *k, *k_b, *v, *v_b, *o, *o_b, *q_norm, *k_norm;
    vlm_tensor *mlp_norm, *gate, *up, *down;
} vlm_dec_layer;

typedef struct vlm_dec_hparams {
    int n_heads, n_kv_heads, head_dim;
    float eps;          /* RMSNorm eps (layer norms and q/k norms) */
    vlm_unary_op act;   /* MLP activation */
} vlm_dec_hparams;

/* Weight loading with a list of prefixes to try ("model.language_model.", "model."). */
typedef struct vlm_loader {
    vlm_model *m;
    vlm_error *err;
    const char *prefix; /* the prefix found to exist */
    vlm_linear_role role; /* of the linears vlm_ld_linear loads (0: the text decoder's) */
} vlm_loader;

/* Picks the first prefix under which `probe` exists; 0 if none. */
int vlm_loader_prefix(vlm_loader *ld, const char *const *prefixes, const char *probe);
/* prefix + printf(fmt, ...): required (error if missing or shape differs) or optional. */
vlm_tensor *vlm_ld(vlm_loader *ld, int ndim, const int64_t *shape, const char *fmt, ...);
vlm_tensor *vlm_ld_opt(vlm_loader *ld, const char *fmt, ...);
/* A linear weight [out, in]: vlm_ld, quantized when the model quantizes
 * weights of the loader's role (vlm_weight_linear). */
vlm_tensor *vlm_ld_linear(vlm_loader *ld, int64_t out, int64_t in, const char *fmt, ...);
/* A weight the caller loaded (or made from) prefix + fmt, e.g. a stack of
 * experts [E, N, K]: quantized as the loader's role asks (vlm_quantize_weight). */
vlm_tensor *vlm_ld_quantize(vlm_loader *ld, vlm_tensor *t, const char *fmt, ...);
/* Shape helpers for vlm_ld. */
#define VLM_SHAPE1(a) 1, (const int64_t[]){(a)}
#define VLM_SHAPE2(a, b) 2, (const int64_t[]){(a), (b)}
#define VLM_SHAPE3(a, b, c) 3, (const int64_t[]){(a), (b), (c)}

/* Loads a standard decoder layer "layers.<l>.{input_layernorm,self_attn.*,post_attention_layernorm,mlp.*}". */
vlm_status vlm_dec_layer_load(vlm_loader *ld, int l, int hidden, int inter, const vlm_dec_hparams *hp,
                              int qkv_bias, int qk_norm, vlm_dec_layer *L);

/* Self-attention of one decoder layer on h = norm(x) [n, hidden]: projections,
 * optional q/k RMSNorm per head, RoPE with cos/sin [n, R], cache write at
 * positions pos[0..n), causal (optionally windowed) attention over the cache,
 * output projection. */
vlm_tensor *vlm_dec_attention(vlm_compute *c, const vlm_dec_layer *L, const vlm_dec_hparams *hp,
                              vlm_kv_layer *kv, vlm_tensor *h, vlm_tensor *cos, vlm_tensor *sin,
                              const int32_t *pos, int n, int window);
/* down(act(gate(h)) * up(h)) */
vlm_tensor *vlm_gated_mlp(vlm_compute *c, vlm_tensor *h, vlm_tensor *gate, vlm_tensor *up, vlm_tensor *down,
                          vlm_unary_op act);
/* x + attention + MLP for a standard pre-norm layer. */
vlm_tensor *vlm_dec_layer_forward(vlm_compute *c, const vlm_dec_layer *L, const vlm_dec_hparams *hp,
                                  vlm_kv_layer *kv, vlm_tensor *x, vlm_tensor *cos, vlm_tensor *sin,
                                  const int32_t *pos, int n);

/* M-RoPE cos/sin [n, head_dim] from 3 position streams pos3[3][n]:
 * frequency i takes its position from stream sec(i) — contiguous sections
 * (Qwen2-VL/2.5-VL) or interleaved t,h,w,t,h,w,... (Qwen3-VL). */
void vlm_mrope_table(float *cos_out, float *sin_out, const int64_t *pos3, int n, const float *inv_freq, int half,
                     const int *section, int interleaved);

/* The placeholders among ids[0..n) and the rows of vision->embeds they
 * take: the k-th image token row k, the k-th video token row
 * n_image_tokens + k (a token id < 0 matches nothing). Writes positions to
 * dst and rows to src; returns their count, or -1 when the placeholders want
 * more rows than vision has. */
int vlm_vision_rows(const int32_t *ids, int n, const vlm_vision_out *vision, int32_t image_token, int32_t video_token,
                    int32_t *dst, int32_t *src);
/* Token embeddings times scale (1 for most; Gemma's sqrt(hidden)), then the
 * vision rows written over the placeholders (vlm_vision_rows; vision NULL:
 * placeholders embed as text). */
vlm_tensor *vlm_embed_tokens(vlm_compute *c, vlm_tensor *table, float scale, const int32_t *ids, int n,
                             const vlm_vision_out *vision, int32_t image_token, int32_t video_token);

/* Allocates seq->kv with one full-context ring per layer. */
vlm_status vlm_seq_kv_uniform(vlm_seq *s, int n_layers, int n_kv_heads, int head_dim, vlm_error *err);

/* Final norm + lm_head on the last row (or all rows) of x. */
vlm_tensor *vlm_lm_logits(vlm_compute *c, vlm_tensor *x, vlm_tensor *norm, float eps, vlm_tensor *lm_head,
                          int all_logits);

/* Variants of the decoder self-attention (vlm_dec_attention is the default). */
typedef struct vlm_attn_opts {
    int window;           /* sliding window, 0 = none */
    float scale;          /* on q.k; 0 = 1/sqrt(head_dim) */
    int v_norm;           /* RMS-normalize values per head, no weight (Gemma 4) */
    const int32_t *span;  /* optional [n_ctx]: bidirectional span id per absolute position, -1 = none */
} vlm_attn_opts;
/* As vlm_dec_attention, and: L->v NULL takes the values from the raw key
 * projection (k = v); a cache layer with owner == 0 (shared with an earlier
 * layer) is only read: no key/value projections, no cache write. */
vlm_tensor *vlm_dec_attention_ex(vlm_compute *c, const vlm_dec_layer *L, const vlm_dec_hparams *hp,
                                 vlm_kv_layer *kv, vlm_tensor *h, vlm_tensor *cos, vlm_tensor *sin,
                                 const int32_t *pos, int n, const vlm_attn_opts *o);
/* A plain decoder stack (Llama/Qwen2 layers): embed_tokens, layers.<l>, norm
 * under the loader's prefix, then lm_head.weight (the embeddings when tied). */
typedef struct vlm_dec_stack {
    int n_layers, hidden, inter;
    vlm_dec_hparams hp;
    vlm_tensor *embed, *norm, *lm_head;
    vlm_dec_layer *layers; /* [n_layers], malloc'd: free() it */
} vlm_dec_stack;
/* The stack's sizes from a text config: hidden_size, num_hidden_layers,
 * intermediate_size, num_attention_heads, num_key_value_heads (default: the
 * heads), head_dim (default hidden/heads), rms_norm_eps (1e-6); looked up in
 * cfg.<section> first when section is given (vlm_json_cfg). Unset keys read 0:
 * the caller validates. */
void vlm_dec_stack_config(const vlm_json *cfg, const char *section, vlm_dec_stack *d);
/* tied: 1 the embedding table is the output projection, 0 lm_head.weight
 * (at the checkpoint's root), -1 the caller loads lm_head. */
vlm_status vlm_dec_stack_load(vlm_loader *ld, int vocab, int qkv_bias, int qk_norm, int tied, vlm_dec_stack *d);
/* One decoder call, the same five-step pass for every family:
 *   x      = embed(ids) * embed_scale, vision rows written over placeholders
 *   begin  (per-call inputs from x: Gemma 4's per-layer embeddings)
 *   for l: x = layer_l(x)                 (default: the standard pre-norm layer)
 *          after_layer(l, x)              (Qwen3-VL's DeepStack injection)
 *   logits = lm_head(norm(x)), soft-capped when softcap > 0
 * Layer l reads and writes the cache layer s->kv.layers[l]; a layer that
 * shares another's cache (Gemma 4) got that layer's ring from vlm_kv_init's
 * share[], so the driver needs no say in it. */
typedef struct vlm_dec_call vlm_dec_call;
typedef struct vlm_dec_hooks {
    void *state; /* the family's per-call state, first argument of every hook */
    vlm_status (*begin)(vlm_compute *c, void *state, vlm_tensor *x);
    vlm_tensor *(*layer)(vlm_compute *c, void *state, int l, vlm_kv_layer *kv, vlm_tensor *x, const vlm_dec_call *a);
    vlm_status (*after_layer)(vlm_compute *c, void *state, int l, vlm_tensor *resid);
} vlm_dec_hooks;
struct vlm_dec_call {
    const int32_t *ids;
    int n;
    const int32_t *pos;             /* cache positions [n] */
    vlm_tensor *cos, *sin;          /* RoPE tables [n, head_dim] of the default layer */
    const vlm_vision_out *vision;   /* NULL: placeholders embed as text */
    int32_t image_token, video_token;
    float embed_scale;              /* 0 = 1 */
    float softcap;                  /* > 0: tanh soft-capping of the logits */
    int all_logits;
    const vlm_dec_hooks *hooks;     /* NULL: none */
};
/* Runs the call, advances s->n_past; on failure rewinds the cache (the caller
 * restores its own RoPE bookkeeping). */
vlm_status vlm_dec_run(vlm_seq *s, const vlm_dec_stack *d, const vlm_dec_call *a, vlm_tensor **logits);
/* A whole decoder pass with plain 1D RoPE (inv_freq: head_dim/2 inverse
 * frequencies, scaled as the model's rope type asks) at positions n_past, n_past+1, ...:
 * token embeddings with vision rows written over image_token (only when
 * vision carries embeddings: transformers merges them on the first pass
 * only), the stack, final norm and lm_head. Advances s->n_past and
 * s->rope_pos; on failure the cache is rewound. */
vlm_status vlm_dec_stack_forward(vlm_seq *s, const vlm_dec_stack *d, const float *inv_freq, const int32_t *ids, int n,
                                 const vlm_vision_out *vision, int32_t image_token, int all_logits, vlm_tensor **logits);

/* ---- Qwen-VL family helpers (Qwen2.5-VL, Qwen3-VL) ---- */

/* A text-model config key: in text_config (transformers 5 multimodal configs)
 * or at the top level; rope keys in rope_parameters, then rope_scaling, then
 * as plain text keys. */
const vlm_json *vlm_cfg_text(const vlm_json *cfg, const char *key);
const vlm_json *vlm_cfg_rope(const vlm_json *cfg, const char *key);

/* A Conv3d patch embedding "name" [out, C, T, P, P] (stride = kernel) as the
 * equivalent matmul weight view [out, C*T*P*P] (no copy). */
vlm_tensor *vlm_ld_patch_embed(vlm_loader *ld, int64_t out, int in_ch, int t_patch, int patch, const char *name);

/* A Qwen-VL ViT block "blocks.<b>.": norm1, fused qkv and proj (with
 * biases), norm2 and the MLP. Qwen2.5-VL: RMSNorms, gated MLP
 * (gate/up/down_proj); Qwen3-VL: LayerNorms with biases, plain MLP
 * (linear_fc1/fc2). Fields a block type lacks stay NULL. */
typedef struct vlm_qwen_vit_block {
    vlm_tensor *norm1, *norm1_b, *norm2, *norm2_b, *qkv, *qkv_b, *proj, *proj_b;
    vlm_tensor *gate, *gate_b, *up, *up_b, *down, *down_b; /* gated MLP */
    vlm_tensor *fc1, *fc1_b, *fc2, *fc2_b;                 /* plain MLP */
} vlm_qwen_vit_block;
/* Finds the tower ("model.visual." or "visual.", the loader keeps the
 * prefix) and loads its patch embedding (Conv3d as a matmul view) and
 * `depth` blocks of width V and MLP width I. */
vlm_status vlm_qwen_vit_load(vlm_loader *ld, int depth, int64_t V, int64_t I, int in_ch, int t_patch, int patch,
                             int layer_norm, vlm_tensor **patch_embed, vlm_qwen_vit_block *blocks);

/* 2D vision RoPE of one patch at (row, col), rotate-half layout: of the
 * head_dim/2 rotated pairs, the first half turn with the row, the second
 * with the column, at frequencies inv[0 .. head_dim/4). */
void vlm_vision_rope_2d(float *cos_row, float *sin_row, int64_t row, int64_t col, const float *inv, int head_dim);

/* ViT self-attention on h = norm(x) [n, V]: fused qkv projection (q, k, v
 * stacked on the output dim), 2D RoPE on q and k, attention within segments
 * seg[n] (NULL: all), output projection. */
vlm_tensor *vlm_vit_attention(vlm_compute *c, vlm_tensor *h, vlm_tensor *qkv, vlm_tensor *qkv_b, vlm_tensor *proj,
                              vlm_tensor *proj_b, int n_heads, vlm_tensor *cos, vlm_tensor *sin, const int32_t *seg);

/* Multimodal RoPE positions pos3[3][n] of ids[0..n), starting at *next
 * (advanced past them): text tokens advance the three streams together; a
 * run of image/video placeholders takes the next grid of its kind and gets
 * (t, h, w) = start + (time(frame), row, col) over the merged grid, and the
 * text after it resumes at start + max(last time, rows - 1, cols - 1) + 1. */
typedef struct vlm_mrope_spec {
    int32_t image_token, video_token; /* -1: none */
    int merge;                        /* spatial merge of the grids */
    const vlm_tensor *image_grid, *video_grid; /* [k, 3] (t, h, w) in patches, or NULL */
    /* time(frame) = (int)(frame * scale): images image_tscale (Qwen2.5-VL 0,
     * Qwen3-VL 1); videos video_tscale[k] (Qwen2.5-VL: second_per_grid_t *
     * tokens_per_second), NULL = 1 */
    float image_tscale;
    const float *video_tscale;
    int video_frame_spans;            /* each video frame is its own span of h*w tokens (Qwen3-VL) */
} vlm_mrope_spec;
vlm_status vlm_mrope_positions(vlm_compute *c, const vlm_mrope_spec *sp, const int32_t *ids, int n, int64_t *next,
                               int64_t *pos3);

/* Checks a decoder call: n > 0 tokens, all in the vocabulary, room left in
 * the context. */
vlm_status vlm_forward_check(vlm_seq *s, const int32_t *ids, int n);

/* The start of an M-RoPE decoder pass over ids[0..n): vlm_forward_check, the
 * positions (vlm_mrope_positions from s->rope_pos, which advances), cache
 * positions pos[i] = n_past + i and the cos/sin tables [n, head_dim] at
 * theta (sections contiguous or interleaved, see vlm_mrope_table). */
vlm_status vlm_mrope_begin(vlm_seq *s, const vlm_mrope_spec *sp, const int32_t *ids, int n, int head_dim, float theta,
                           const int *section, int interleaved, int32_t **pos, vlm_tensor **cos, vlm_tensor **sin);

/* Qwen-style vision inputs: pixels [n, pdim] with grid [k, 3] of (t, h, w)
 * patches, h and w multiples of merge, covering the n rows. Returns n, or
 * -1 with the error recorded (c->failed set). */
int64_t vlm_qwen_grid_patches(vlm_compute *c, const vlm_tensor *pixels, int64_t pdim, const vlm_tensor *grid, int merge);

/* A Qwen-style vision tower on one pixels/grid pair: merged rows in prompt
 * order, and its side outputs in extra[] (same rows). */
typedef vlm_tensor *(*vlm_qwen_tower_fn)(vlm_compute *c, const void *model, const vlm_tensor *pixels,
                                         const vlm_tensor *grid, vlm_tensor **extra);
/* Runs the tower on the images (pixel_values, image_grid_thw), then the
 * videos (pixel_values_videos, video_grid_thw): out->embeds holds the image
 * rows then the video rows, each of the n_extra out->extra[i] likewise. */
vlm_status vlm_qwen_encode(vlm_compute *c, const void *model, vlm_qwen_tower_fn tower, int n_extra,
                           const vlm_features *f, vlm_vision_out *out);

/* ---- made-up vision inputs for vlm bench (models/bench_inputs.c) ---- */

/* A WxH image of random pixels through the family's image processor (the
 * model folder's processor config, else the processor's defaults). */
vlm_status vlm_bench_image(const vlm_model *m, vlm_image_family family, int w, int h, vlm_features *f, vlm_error *err);
/* pixel_values [n, 3, side, side] of random values in [-1, 1). */
vlm_status vlm_bench_tiles(int n, int side, vlm_features *f, vlm_error *err);
#endif
