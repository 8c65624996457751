/* src/text — tokenizers (tokenizer.json), chat templates, prompt assembly.
 *
 * A tokenizer is loaded from a Hugging Face tokenizer.json (BPE models:
 * byte-level BPE of GPT-2 / Qwen / SmolVLM, SentencePiece-style BPE with byte
 * fallback of Gemma) plus, when next to it, tokenizer_config.json (bos/eos,
 * add_bos_token, chat_template) and chat_template.json / chat_template.jinja.
 *
 * Memory: functions that return text or ids allocate with malloc; the caller
 * frees with free() (or vlm_tokens_free). A loaded tokenizer is read-only and
 * may be shared by threads.
 *
 * Owns: tokenizers, Unicode (UTF-8, NFC, the generated tables), the Jinja
 * interpreter for chat templates, and the placeholder expansion that turns a
 * rendered prompt with images into the tokens each family's processor
 * builds. May call: core, io (JSON files). Knows model families only as
 * prompt layouts (vlm_prompt_family), never a model's weights.
 */
#ifndef VLM_TEXT_H
#define VLM_TEXT_H

#include "core/vlm_core.h"
#include "io/vlm_io.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ ids */

/* A growable id array. Zero-initialize; append with the functions below. */
typedef struct vlm_tokens {
    int32_t *ids;
    int n, cap;
} vlm_tokens;

vlm_status vlm_tokens_push(vlm_tokens *t, int32_t id, vlm_error *err);
vlm_status vlm_tokens_push_n(vlm_tokens *t, int32_t id, int count, vlm_error *err); /* id repeated */
void vlm_tokens_free(vlm_tokens *t);

/* ------------------------------------------------------------------ tokenizer */

typedef struct vlm_tokenizer vlm_tokenizer;

/* path: a tokenizer.json file or a directory holding one. Also reads, when
 * present in the same directory, tokenizer_config.json, special_tokens_map.json,
 * chat_template.json and chat_template.jinja. */
vlm_status vlm_tokenizer_load(vlm_tokenizer **out, const char *path, vlm_error *err);
/* From memory: tokenizer.json text, optional tokenizer_config.json text (NULL). */
vlm_status vlm_tokenizer_load_mem(vlm_tokenizer **out, const char *tokenizer_json, size_t len,
                                  const char *config_json, size_t config_len, vlm_error *err);
void vlm_tokenizer_free(vlm_tokenizer *tok);

/* Encoding flags. */
/* VLM_TOK_ADD_SPECIAL applies the post-processor (TemplateProcessing, e.g.
 * Gemma's <bos>; without one, add_bos_token / add_eos_token of the config).
 * Rendered chat prompts are encoded without it: the template writes bos. */
#define VLM_TOK_ADD_SPECIAL   1
#define VLM_TOK_NO_PARSE_SPECIAL 2 /* treat added/special token strings in the text as plain text */

/* Appends the ids of text[0..len) to out. Invalid UTF-8 is accepted: stray
 * bytes are encoded as the bytes they are (byte-level / byte-fallback). */
vlm_status vlm_tokenize(const vlm_tokenizer *tok, const char *text, size_t len, int flags,
                        vlm_tokens *out, vlm_error *err);
/* As vlm_tokenize, but an added/special token string that overlaps one of
 * the byte ranges [plain[2k], plain[2k+1]) (sorted, disjoint) is plain text
 * there: the user's text inside a rendered prompt. */
vlm_status vlm_tokenize_ranges(const vlm_tokenizer *tok, const char *text, size_t len, int flags,
                               const size_t *plain, int n_plain, vlm_tokens *out, vlm_error *err);
/* Length of the longest added/special token string at s[0..len), 0 if none. */
size_t vlm_tokenizer_added_at(const vlm_tokenizer *tok, const char *s, size_t len);

/* Number of ids (max id + 1), including added tokens. */
int vlm_tokenizer_n_vocab(const vlm_tokenizer *tok);
/* The raw vocabulary string of an id ("Ġhello", "▁the", "<0x0A>", "<|im_end|>"), NULL if none. */
const char *vlm_token_to_piece(const vlm_tokenizer *tok, int32_t id);
/* Id of a vocabulary / added-token string, -1 if absent. */
int32_t vlm_token_id(const vlm_tokenizer *tok, const char *piece);
int vlm_token_is_special(const vlm_tokenizer *tok, int32_t id);

/* Special tokens from tokenizer_config.json (-1 when not set). */
typedef struct vlm_tokenizer_info {
    int32_t bos_id, eos_id, pad_id, unk_id;
    const char *bos_token, *eos_token; /* strings, "" when not set */
    int add_bos, add_eos;              /* add_bos_token / add_eos_token */
    const char *chat_template;         /* NULL when none was found */
} vlm_tokenizer_info;
vlm_tokenizer_info vlm_tokenizer_get_info(const vlm_tokenizer *tok);
/* Replaces the chat template (e.g. with a model directory's chat_template.json). */
vlm_status vlm_tokenizer_set_chat_template(vlm_tokenizer *tok, const char *template_src, vlm_error *err);

/* Decoding. VLM_DETOK_SKIP_SPECIAL drops special tokens. Output is UTF-8;
 * invalid byte sequences become U+FFFD. *out is malloc'd and NUL-terminated. */
#define VLM_DETOK_SKIP_SPECIAL 1
vlm_status vlm_detokenize(const vlm_tokenizer *tok, const int32_t *ids, int n, int flags,
                          char **out, size_t *out_len, vlm_error *err);

/* Streaming decoder: push ids one at a time; each push returns the text that
 * became complete (a partial UTF-8 sequence at the end is held back until the
 * next ids complete it). The returned pointer is valid until the next call. */
typedef struct vlm_detok_stream {
    const vlm_tokenizer *tok;
    int flags;
    unsigned char pending[8];
    int n_pending;
    char *buf;
    size_t len;
    int started;
    unsigned char *run; /* pending ByteFallback bytes (<0xNN> tokens) */
    size_t run_len, run_cap;
} vlm_detok_stream;
void vlm_detok_stream_init(vlm_detok_stream *s, const vlm_tokenizer *tok, int flags);
const char *vlm_detok_stream_push(vlm_detok_stream *s, int32_t id, size_t *len);
/* Whatever is still held back (an incomplete sequence becomes U+FFFD). */
const char *vlm_detok_stream_flush(vlm_detok_stream *s, size_t *len);
void vlm_detok_stream_free(vlm_detok_stream *s);

/* ------------------------------------------------------------------ chat */

typedef enum vlm_part_type { VLM_PART_TEXT = 0, VLM_PART_IMAGE, VLM_PART_VIDEO } vlm_part_type;

typedef struct vlm_chat_part {
    vlm_part_type type;
    const char *text; /* VLM_PART_TEXT */
} vlm_chat_part;

/* A message: role ("system", "user", "assistant", ...) and either a plain
 * string `content` (n_parts == 0) or a list of parts (rendered as HF's
 * [{"type": "text", "text": ...}, {"type": "image"}, ...]). */
typedef struct vlm_chat_msg {
    const char *role;
    const char *content;
    const vlm_chat_part *parts;
    int n_parts;
} vlm_chat_msg;

typedef struct vlm_chat_opts {
    int add_generation_prompt;
    const char *bos_token, *eos_token; /* NULL: "" */
    /* Extra boolean variables visible to the template (NULL-terminated names
     * with values), e.g. {"enable_thinking", NULL} with {0}. */
    const char *const *bool_names;
    const int *bool_values;
    const vlm_limits *limits; /* NULL: vlm_limits_default() (steps, output, memory) */
} vlm_chat_opts;

/* Renders a Jinja chat template (the subset used by the HF chat templates of
 * the supported families) for the messages. *out is malloc'd. */
vlm_status vlm_chat_render(const char *template_src, const vlm_chat_msg *msgs, int n_msgs,
                           const vlm_chat_opts *opts, char **out, vlm_error *err);
/* The same with a JSON messages array (HF format) and optional tools array. */
vlm_status vlm_chat_render_json(const char *template_src, const vlm_json *messages,
                                const vlm_json *tools, const vlm_chat_opts *opts, char **out,
                                vlm_error *err);
/* Renders with the tokenizer's own chat template and bos/eos strings, under
 * limits (NULL: the defaults). */
vlm_status vlm_tokenizer_chat(const vlm_tokenizer *tok, const vlm_chat_msg *msgs, int n_msgs,
                              int add_generation_prompt, const vlm_limits *limits, char **out, vlm_error *err);

/* ------------------------------------------------------------------ prompt assembly */

typedef enum vlm_prompt_family {
    VLM_FAMILY_QWEN = 0, /* Qwen2-VL, Qwen2.5-VL */
    VLM_FAMILY_QWEN3,    /* Qwen3-VL (videos: per-frame "<t seconds>" blocks) */
    VLM_FAMILY_INTERNVL,
    VLM_FAMILY_IDEFICS3, /* Idefics3, SmolVLM */
    VLM_FAMILY_GEMMA4,
} vlm_prompt_family;

/* One image or video as the processor produced it. */
typedef struct vlm_media_info {
    int is_video;
    /* Qwen: all tokens of the image/video (t*h*w / merge^2); InternVL: tokens
     * per tile (or per frame); Idefics3: image_seq_len (tokens per tile);
     * Gemma 4: soft tokens of the image (or of each video frame). */
    int n_tokens;
    int rows, cols;   /* Idefics3 tile grid; 0, 0: no splitting (global image only) */
    int n_tiles;      /* InternVL: tiles incl. thumbnail (images) */
    int n_frames;     /* videos: frames (Qwen3-VL: temporal grid steps) */
    const double *timestamps; /* videos, per frame: seconds (Qwen3-VL, Gemma 4) */
} vlm_media_info;

/* Placeholders the chat templates emit, per family (image / video):
 *   Qwen, Qwen3: <|image_pad|> / <|video_pad|>   InternVL: <IMG_CONTEXT> / <video>
 *   Idefics3: <image>                            Gemma 4: <|image|> / <|video|>
 * vlm_expand_media replaces the i-th placeholder of the prompt by the token
 * string the HF processor builds for media[i]:
 *   Qwen:     <|image_pad|> x n (the template already wrote vision_start/end)
 *   Qwen3:    images as Qwen; videos per frame "<%.1f seconds><|vision_start|><|video_pad|> x n/frames<|vision_end|>"
 *   InternVL: <img><IMG_CONTEXT> x (n * tiles)</img>; videos "Frame1: <img>...</img>\nFrame2: ..."
 *   Idefics3: rows x cols of <fake_token_around_image><row_r_col_c><image> x n, "\n" after each
 *             row, then "\n<fake_token_around_image><global-img><image> x n<fake_token_around_image>"
 *   Gemma 4:  <|image><|image|> x n<image|>; videos "mm:ss <|image><|video|> x n<image|>" joined by " "
 * The result is text whose special tokens vlm_tokenize then matches. *out is malloc'd. */
vlm_status vlm_expand_media(vlm_prompt_family fam, const char *prompt, const vlm_media_info *media,
                            int n_media, char **out, vlm_error *err);
/* The media of an image processor's outputs (vlm_image_preprocess /
 * vlm_video_preprocess, HF names: image_grid_thw, video_grid_thw,
 * num_patches, rows/cols, num_soft_tokens_per_image): images first, then
 * videos. merge_size: Qwen spatial merge (2); tokens_per_tile: InternVL
 * tokens per tile ((image_size / patch)^2 * downsample_ratio^2) or Idefics3
 * image_seq_len. Video timestamps are left NULL (set them for Qwen3-VL). */
vlm_status vlm_media_from_features(vlm_prompt_family fam, const vlm_features *f, int merge_size, int tokens_per_tile,
                                   vlm_media_info *out, int max_media, int *n_media, vlm_error *err);

/* Qwen3-VL video timestamps as its processor computes them: seconds of the
 * sampled frame indices at fps, averaged over each group of `merge`
 * (temporal_patch_size) frames; out gets ceil(n / merge) values. Returns that count. */
int vlm_qwen3_video_timestamps(const int *frame_indices, int n, double fps, int merge, double *out);

/* The whole chain: renders the tokenizer's chat template for the messages
 * (bos/eos from its config), expands the media placeholders (media in the
 * order of the image/video parts) and tokenizes the result without adding
 * special tokens (the template writes them), appending to out. */
vlm_status vlm_build_prompt(const vlm_tokenizer *tok, vlm_prompt_family fam, const vlm_chat_msg *msgs, int n_msgs,
                            const vlm_media_info *media, int n_media, int add_generation_prompt,
                            vlm_tokens *out, vlm_error *err);
/* The user's text stays text (as OpenAI's servers treat it): a special
 * token string such as "<|im_end|>" or "<|image_pad|>" typed by a user must
 * not end a turn or claim an image. vlm_protect_specials returns a malloc'd
 * copy of text in which every added/special token string is marked, so the
 * chat template and vlm_expand_media pass it along without seeing it;
 * vlm_tokenize_protected tokenizes a rendered prompt holding such text,
 * each marked string as plain text, everything else as vlm_tokenize does. */
char *vlm_protect_specials(const vlm_tokenizer *tok, const char *text);
vlm_status vlm_tokenize_protected(const vlm_tokenizer *tok, const char *prompt, size_t len, int flags,
                                  vlm_tokens *out, vlm_error *err);

/* The family of an HF config model_type ("qwen2_5_vl", "idefics3", ...), -1 if unknown. */
int vlm_prompt_family_from_model_type(const char *model_type);

/* ------------------------------------------------------------------ unicode (internal, exposed for tests) */

/* Bits of vlm_uni_props: generated from the Unicode Character Database. */
#define VLM_UNI_L 1   /* \p{L} */
#define VLM_UNI_N 2   /* \p{N} */
#define VLM_UNI_WS 4  /* White_Space (\s) */
#define VLM_UNI_NFC 8 /* NFC_QC No or Maybe */
#define VLM_UNI_M 16  /* \p{M} */
int vlm_uni_props(uint32_t cp);
int vlm_uni_ccc(uint32_t cp);
int vlm_uni_decompose(uint32_t cp, const uint32_t **out); /* full canonical decomposition, 0 if none */
uint32_t vlm_uni_compose_pair(uint32_t a, uint32_t b);    /* primary composite or 0 */
/* Decodes one UTF-8 sequence at s[0..n): returns its length (>= 1) and the
 * code point, or 1 and *cp = 0x110000 + byte for an invalid byte. */
int vlm_utf8_decode(const unsigned char *s, size_t n, uint32_t *cp);
/* NFC of s[0..n) (invalid bytes are kept as they are). *out is malloc'd. */
vlm_status vlm_nfc(const char *s, size_t n, char **out, size_t *out_len, vlm_error *err);

#ifdef __cplusplus
}
#endif
#endif
