/* src/io — files and models on disk.
 *
 * Owns: the JSON parser, the safetensors reader/writer (mmap'd, validated),
 * and the model contract: vlm_arch (what a models/<name>.c file provides),
 * vlm_model (config + weights + the architecture's state), vlm_seq (one
 * sequence's KV cache and positions), and loading a checkpoint folder into
 * them. May call: core. Knows that architectures exist (the registry in
 * models/registry.c) but none of them by name.
 */
#ifndef VLM_IO_H
#define VLM_IO_H

#include "core/vlm_core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ JSON */

typedef enum vlm_json_type {
    VLM_JSON_NULL = 0,
    VLM_JSON_BOOL,
    VLM_JSON_NUMBER,
    VLM_JSON_STRING,
    VLM_JSON_ARRAY,
    VLM_JSON_OBJECT,
} vlm_json_type;

typedef struct vlm_json {
    vlm_json_type type;
    int n;                  /* elements of an array/object; byte length of a string */
    double num;             /* NUMBER, BOOL (0/1) */
    char *str;              /* STRING: UTF-8, NUL-terminated (may contain NULs: use n) */
    char *key;              /* member name when inside an object */
    struct vlm_json *items; /* ARRAY/OBJECT: n children */
} vlm_json;

/* Strict RFC 8259; errors carry line:column. Free with vlm_json_free. */
vlm_json *vlm_json_parse(const char *text, size_t len, vlm_error *err);
vlm_json *vlm_json_load(const char *path, vlm_error *err);
void vlm_json_free(vlm_json *j);
const vlm_json *vlm_json_get(const vlm_json *obj, const char *key);      /* NULL if absent / not object */
const vlm_json *vlm_json_at(const vlm_json *arr, int i);                 /* NULL if out of range */
const vlm_json *vlm_json_path(const vlm_json *root, const char *dotted); /* "text_config.hidden_size" */
double vlm_json_num(const vlm_json *j, double def);   /* def when NULL or not a number */
int64_t vlm_json_int(const vlm_json *j, int64_t def);
int vlm_json_bool(const vlm_json *j, int def);
const char *vlm_json_str(const vlm_json *j, const char *def);
/* Config lookup for composite HF configs: cfg.<section>.<key> when present,
 * else cfg.<key> (flat configs keep text settings at the top level). key may
 * be dotted; section may be NULL. E.g.
 *   vlm_json_int(vlm_json_cfg(cfg, "text_config", "hidden_size"), 0) */
const vlm_json *vlm_json_cfg(const vlm_json *cfg, const char *section, const char *key);
/* Writing: s[0..n) as a JSON string literal (quotes, escapes; control
 * characters as \u00XX; bytes that are not valid UTF-8 as U+FFFD), appended to b. */
int vlm_json_quote(vlm_buf *b, const char *s, size_t n);

/* ------------------------------------------------------------------ safetensors */

typedef struct vlm_st_entry {
    char *name;
    vlm_dtype dtype;
    int ndim;
    int64_t shape[VLM_MAX_DIMS];
    const void *data; /* inside the mmap */
    size_t nbytes;
    vlm_dtype orig_dtype; /* before `vlm quantize` quantized it; else dtype */
} vlm_st_entry;

typedef struct vlm_st_file vlm_st_file;
typedef struct vlm_safetensors {
    int n_entries;
    vlm_st_entry *entries; /* sorted by name */
    int n_files;
    vlm_st_file *files;
    vlm_json *metadata;    /* "__metadata__" of the first file, or NULL */
} vlm_safetensors;

/* path: a .safetensors file, a model.safetensors.index.json, or a directory
 * holding either. Validates the header fully; the data stays mmap'd. */
vlm_status vlm_st_open(vlm_safetensors *st, const char *path, vlm_error *err);
void vlm_st_close(vlm_safetensors *st);
const vlm_st_entry *vlm_st_find(const vlm_safetensors *st, const char *name);
/* Tensor header over the mmap'd data (no copy). */
vlm_tensor vlm_st_tensor(const vlm_st_entry *e);
/* Writes contiguous host tensors as one .safetensors file. */
vlm_status vlm_st_write(const char *path, int n, const char *const *names,
                        const vlm_tensor *const *tensors, vlm_error *err);
/* The same with "__metadata__" string pairs keys[i]: values[i].
 *
 * Quantized weights (`vlm quantize`): a tensor stored as U8 [..., N, B]
 * whose metadata has "vlm:<name>": "<DTYPE> ... <N> <K> <ORIGINAL DTYPE>"
 * (DTYPE a block type, B its bytes for K values) opens as DTYPE [..., N, K];
 * a claim that does not fit the stored bytes is a format error. */
vlm_status vlm_st_write_meta(const char *path, int n, const char *const *names, const vlm_tensor *const *tensors,
                             int n_meta, const char *const *keys, const char *const *values, vlm_error *err);

/* ------------------------------------------------------------------ models */

/* What the vision tower produced for the images of one call: `embeds` are
 * the rows that replace the image placeholder tokens in prompt order, then
 * those of the video placeholders; `extra` holds per-architecture side
 * outputs (Qwen3-VL DeepStack features). */
typedef struct vlm_vision_out {
    vlm_tensor *embeds;       /* [n_image_tokens + n_video_tokens, hidden] f32 */
    int64_t n_image_tokens;   /* rows of embeds that belong to images */
    int n_extra;
    vlm_tensor *extra[8];
} vlm_vision_out;

typedef struct vlm_model vlm_model;
typedef struct vlm_seq vlm_seq;

/* An architecture: one models/<name>.c defines one of these. */
typedef struct vlm_arch {
    const char *name;                     /* "qwen2_5_vl" */
    const char *const *hf_architectures;  /* NULL-terminated config "architectures" values */
    const char *const *model_types;       /* NULL-terminated config "model_type" values */
    vlm_status (*load)(vlm_model *m, vlm_error *err);
    void (*unload)(vlm_model *m);
    /* Runs the vision tower on processor outputs. */
    vlm_status (*encode)(vlm_model *m, vlm_compute *c, const vlm_features *f, vlm_vision_out *out);
    /* Runs the decoder on ids[0..n) appended to seq. vision: the embeddings of
     * every placeholder token among ids (NULL if none); f: the processor
     * outputs those came from (grids for positions). logits: [n, vocab] f32
     * when all_logits, else [1, vocab] for the last token. */
    vlm_status (*forward)(vlm_model *m, vlm_seq *s, const int32_t *ids, int n,
                          const vlm_vision_out *vision, const vlm_features *f,
                          int all_logits, vlm_tensor **logits);
    /* Allocates the per-sequence state (KV cache, ...). */
    vlm_status (*seq_init)(vlm_model *m, vlm_seq *s, vlm_error *err);
    void (*seq_free)(vlm_model *m, vlm_seq *s);
    /* Benchmarks (vlm bench): encode's inputs for a WxH image of made-up
     * pixels, laid out as this family's processor does (n_tiles 0), or for
     * n_tiles made-up tiles (tiled families; others fail). *tiles: the tiles
     * in them, 0 for untiled families. Tensor data is malloc'd (free with
 * vlm_image_features_free).
     * NULL: no vision tower. */
    vlm_status (*bench_vision)(vlm_model *m, int w, int h, int n_tiles, vlm_features *f, int *tiles, vlm_error *err);
} vlm_arch;

struct vlm_model {
    const vlm_arch *arch;
    vlm_json *config;          /* config.json */
    vlm_safetensors weights;
    vlm_backend *be;           /* where weights live */
    char *dir;
    void *impl;                /* the architecture's weights and hyperparameters */
    vlm_arena arena;           /* weight tensor headers and other load-time allocations */
    int own_backend;
    int random_weights;        /* 0, or weights are made up (benchmarks) */
    vlm_dtype random_dtype;
    uint64_t rng;
    int vocab_size;
    int hidden_size;
    int32_t image_token_id, video_token_id;
    int32_t eos_ids[8];
    int n_eos;
    /* quantize at load (vlm_weight_linear): the format, or 0 for none */
    vlm_dtype quant;
    int quant_vision;
    size_t quant_bytes;        /* the quantized weights' bytes */
    struct vlm_quantized {     /* each quantized weight under its checkpoint name (vlm quantize) */
        char *name;
        const vlm_tensor *t;
    } *quantized;
    int n_quantized;
    /* an AWQ checkpoint (config.json's quantization_config): its group
     * size, 0 for none; the modules it left unquantized (a JSON array) */
    int awq_group;
    const vlm_json *awq_skip;
    void (*progress)(void *user, int64_t done, int64_t total);
    void *progress_user;
    int64_t progress_done, progress_total; /* bytes of the checkpoint's tensors */
};

struct vlm_seq {
    vlm_model *model;
    vlm_compute c;
    vlm_kv_cache kv;
    int n_ctx;
    int n_past;                /* tokens already in the cache */
    int max_batch;             /* max tokens per forward call (sliding-window cache sizing) */
    vlm_dtype kv_dtype;
    int64_t rope_pos;          /* next text RoPE position (M-RoPE models: may differ from n_past) */
    void *impl;
};

typedef struct vlm_model_params {
    int n_threads;           /* <= 0: one per core */
    const char *kernels;     /* CPU kernel variant (vlm_cpu_params); NULL: default */
    const char *compute;     /* CPU compute mode (vlm_cpu_params); NULL: default */
    vlm_backend *backend;    /* NULL: a CPU backend owned by the model */
    /* Benchmarks: no checkpoint; every weight the architecture asks for is
     * made up (small random values) in this dtype. dir may then also be a
     * config .json file. */
    int random_weights;
    vlm_dtype random_dtype;
    /* VLM_Q8_0 or VLM_Q4_0: the text decoder's linear weights quantized as
     * they load (f32/f16/bf16 ones; see vlm_weight_linear); 0: as stored.
     * quant_vision: the vision tower's and projector's linears too. */
    vlm_dtype quant;
    int quant_vision;
    /* Loading progress, in bytes of the checkpoint's tensors (done of total;
     * made-up weights: of the weights made so far, total 0). May be NULL. */
    void (*progress)(void *user, int64_t done, int64_t total);
    void *progress_user;
} vlm_model_params;

/* Every architecture, NULL-terminated (models/registry.c). */
extern const vlm_arch *const vlm_archs[];

/* Loads config.json + *.safetensors from dir and picks the architecture. */
vlm_status vlm_model_load(vlm_model **out, const char *dir, const vlm_model_params *p, vlm_error *err);
void vlm_model_free(vlm_model *m);
const vlm_arch *vlm_find_arch(const vlm_json *config);

/* Loader helpers for model files: a weight by name (optionally with several
 * candidate prefixes), checked against an expected shape (-1 = any). */
vlm_tensor *vlm_weight(vlm_model *m, const char *name, int ndim, const int64_t *shape, vlm_error *err);
vlm_tensor *vlm_weight_opt(vlm_model *m, const char *name); /* NULL if absent */
/* Which linear weight a vlm_weight_linear call loads. */
typedef enum vlm_linear_role {
    VLM_LINEAR_TEXT = 0, /* the text decoder's (and its per-layer embedding tables) */
    VLM_LINEAR_VISION,   /* the vision tower's and the projector's: only with quant_vision */
    VLM_LINEAR_OUTPUT,   /* the output projection (lm_head, or the table tied to it): q8_0 when
                            any quantization is asked, since its error reaches every logit */
} vlm_linear_role;
/* A linear weight [out, in] (or a table a matmul or row lookup reads): as
 * vlm_weight, quantized to the model's format when one is set and the role
 * asks for it. The rows are quantized on the backend's threads into memory
 * the model owns, and the mmap'd source pages are released after. In an
 * AWQ checkpoint, a module stored as NAME-without-".weight" + .qweight,
 * .qzeros, .scales (and not in modules_to_not_convert) is repacked into
 * q4_z instead, exactly. */
vlm_tensor *vlm_weight_linear(vlm_model *m, const char *name, int64_t out, int64_t in, vlm_linear_role role,
                              vlm_error *err);
/* An already loaded weight t quantized as vlm_weight_linear would (t itself
 * when the role asks for none, or t is not a float matrix [N, K] or a
 * contiguous stack of experts [E, N, K]); NULL with
 * err set when out of memory. For weights found by other means (an
 * lm_head under one of several names). */
vlm_tensor *vlm_quantize_weight(vlm_model *m, vlm_tensor *t, vlm_linear_role role, const char *name, vlm_error *err);
/* Before allocating per-layer (or per-block) state for n of them: a config
 * that claims more layers than the checkpoint has tensors is refused
 * (VLM_ERR_CONFIG naming `what`) instead of sizing an allocation by it.
 * Made-up weights allow up to 65536. */
vlm_status vlm_model_check_count(vlm_model *m, int64_t n, const char *what, vlm_error *err);

vlm_status vlm_seq_init(vlm_seq *s, vlm_model *m, int n_ctx, int max_batch, vlm_dtype kv_dtype, vlm_error *err);
void vlm_seq_free(vlm_seq *s);
void vlm_seq_reset(vlm_seq *s);

#ifdef __cplusplus
}
#endif

#endif /* VLM_IO_H */
