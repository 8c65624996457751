/* src/api — the high-level API: open a model directory, talk to it with images and
 * text, get the answer streamed token by token.
 *
 *   vlm_engine *e;  vlm_session *s;  vlm_error err = {0};
 *   vlm_engine_open(&e, "Qwen2.5-VL-3B-Instruct", NULL, &err);
 *   vlm_session_new(e, NULL, &s, &err);
 *   vlm_session_add_image_file(s, "cat.jpg", &err);
 *   vlm_session_add_text(s, "What is in this picture?", &err);
 *   vlm_session_generate(s, NULL, print_piece, NULL, NULL, &err);
 *   vlm_session_free(s);  vlm_engine_close(e);
 *
 * Threads: an engine (weights, tokenizer, image processor, backend) is
 * shared by any number of sessions, each used from any thread, all at once;
 * every answer is the one the session gets alone (the backend runs one op
 * at a time with all its threads; tests/test_threads.c checks this under
 * TSan). A session (its KV cache and history) belongs to one thread at a
 * time; vlm_engine_close waits for no one: free the sessions first.
 *
 * Owns: engines, sessions (history, cache reuse across turns, chunked
 * prefill, generation, streaming) and token sampling. May call: core, io,
 * text, vision. Nothing below it calls it.
 */
#ifndef VLM_API_H
#define VLM_API_H

#include "core/vlm_core.h"
#include "io/vlm_io.h"
#include "text/vlm_text.h"
#include "vision/vlm_vision.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The library's version: the header's here, the compiled library's from
 * vlm_version() ("MAJOR.MINOR.PATCH"); they differ when an old library is
 * linked with a new header. */
#define VLM_VERSION_MAJOR 0
#define VLM_VERSION_MINOR 2
#define VLM_VERSION_PATCH 0
#define VLM_VERSION_STRING "0.2.0"
const char *vlm_version(void);

/* ------------------------------------------------------------------ sampling */

/* Token sampling, applied in the order transformers' generate applies them:
 * repetition/presence/frequency penalties, temperature, top-k, top-p,
 * min-p, then a draw. temperature 0 = greedy (argmax). */
typedef struct vlm_sampling {
    float temperature;        /* default 0.7; 0 = greedy */
    int top_k;                /* default 0 = off */
    float top_p;              /* default 1 = off */
    float min_p;              /* default 0 = off */
    float repetition_penalty; /* default 1 = off; >1 discourages tokens already seen (HF: logit/p if >0 else logit*p) */
    float presence_penalty;   /* default 0; subtracted once from each seen token's logit */
    float frequency_penalty;  /* default 0; subtracted per occurrence */
    int penalty_last_n;       /* default 64; tokens of history the penalties look at; -1 = all */
    uint64_t seed;            /* same seed, same tokens */
} vlm_sampling;

vlm_sampling vlm_sampling_default(void);

typedef struct vlm_sampler {
    vlm_sampling p;
    int n_vocab;
    uint64_t rng[4];
    float *work;       /* [n_vocab] */
    int32_t *order;    /* [n_vocab] */
    int32_t *tmp;      /* [n_vocab], for sorting */
} vlm_sampler;

vlm_status vlm_sampler_init(vlm_sampler *s, const vlm_sampling *p, int n_vocab, vlm_error *err);
void vlm_sampler_free(vlm_sampler *s);
/* Picks the next token from logits[n_vocab] (left unchanged); history: the
 * tokens so far (prompt and generated) for the penalties. */
int32_t vlm_sample(vlm_sampler *s, const float *logits, const int32_t *history, int n_history);
/* A uniform draw in [0, 1) from the sampler's generator (exposed for tests). */
double vlm_sampler_uniform(vlm_sampler *s);

typedef struct vlm_engine vlm_engine;
typedef struct vlm_session vlm_session;

typedef struct vlm_engine_params {
    int n_threads;           /* <= 0: one per core */
    const char *device;      /* "cpu" (default) or "cuda" */
    const vlm_limits *limits; /* budgets against untrusted model folders; NULL: vlm_limits_default() */
    const char *kernels;     /* CPU kernels: NULL (default: $VLM_KERNELS, else the fastest the CPU runs),
                                "auto", "avx2" or "scalar" (see vlm_backend_cpu_new) */
    const char *compute;     /* matmul precision: NULL/"auto", "f32" or "bf16" (see vlm_cpu_params) */
    /* Weights quantized as they load: NULL/"none" (as stored), "q8_0" or
     * "q4_0" (formats in the README): the text decoder's linear weights;
     * the output projection (lm_head, or the embedding table tied to it)
     * in q8_0. quant_vision: the vision tower's and projector's linears too. */
    const char *quant;
    int quant_vision;
    /* The vision-encoder cache shared by the engine's sessions: an image
     * seen before (same pixels) takes its rows from it instead of the
     * vision tower. MiB, least recently used out; 0: 256; negative: none. */
    int vision_cache_mib;
    /* Benchmarks: 1 = made-up bf16 weights of config.json's shapes (the
     * folder needs no safetensors; its tokenizer and processor files are read). */
    int random_weights;
    /* Loading progress in bytes of the checkpoint's tensors; may be NULL. */
    void (*load_progress)(void *user, int64_t done, int64_t total);
    void *load_progress_user;
} vlm_engine_params;

/* dir holds config.json, *.safetensors (sharded or not), tokenizer.json,
 * tokenizer_config.json / chat_template.*, preprocessor_config.json or
 * processor_config.json and generation_config.json as HF publishes them. */
vlm_status vlm_engine_open(vlm_engine **out, const char *dir, const vlm_engine_params *p, vlm_error *err);
void vlm_engine_close(vlm_engine *e);
vlm_model *vlm_engine_model(vlm_engine *e);
const vlm_tokenizer *vlm_engine_tokenizer(const vlm_engine *e);

typedef struct vlm_session_params {
    int n_ctx;               /* context length in tokens (default 4096) */
    vlm_dtype kv_dtype;      /* VLM_F32 (default) or VLM_F16 */
    const char *system;      /* optional system prompt */
    /* 0 (default): the session's text (system prompt, user text, earlier
     * answers) is plain text: "<|im_end|>" typed by a user is those
     * characters, not the token. 1: special token strings in it are parsed
     * as the tokens (as transformers' apply_chat_template + tokenizer do). */
    int parse_special;
} vlm_session_params;

vlm_status vlm_session_new(vlm_engine *e, const vlm_session_params *p, vlm_session **out, vlm_error *err);
void vlm_session_free(vlm_session *s);
/* Forgets the conversation (the next generate starts from an empty cache). */
void vlm_session_reset(vlm_session *s);

/* Starts a message of role "system", "user" or "assistant" (an earlier
 * turn of a conversation given whole, as a server receives it): the parts
 * added next go into it. Without it, parts go into the last user message,
 * or a new one after an answer. */
vlm_status vlm_session_begin_message(vlm_session *s, const char *role, vlm_error *err);
/* Forgets the conversation, system prompt included, but keeps the cache:
 * the next generate computes only what follows the longest prefix of its
 * prompt (tokens and images) that the cache holds. For a server whose
 * clients resend the whole conversation in every request. */
void vlm_session_restart(vlm_session *s);

/* Parts of the next user message, in order. */
vlm_status vlm_session_add_image_file(vlm_session *s, const char *path, vlm_error *err);
/* rgb: width*height pixels, 3 bytes each, rows `stride` bytes apart (0: width*3). Copied. */
vlm_status vlm_session_add_image_rgb(vlm_session *s, const uint8_t *rgb, int width, int height, int stride,
                                     vlm_error *err);
vlm_status vlm_session_add_text(vlm_session *s, const char *text, vlm_error *err);

/* Called with each piece of text as it becomes complete (whole UTF-8
 * characters, never part of a stop string), on the generating thread.
 * `text` is valid only during the call (copy what you keep); it is not
 * NUL-terminated. Return non-zero to stop (VLM_STOP_CALLBACK, VLM_OK). */
typedef int (*vlm_piece_fn)(void *user, const char *text, size_t len);

typedef struct vlm_generate_params {
    vlm_sampling sampling;   /* vlm_sampling_default() when the params pointer is NULL */
    int max_tokens;          /* default 256 */
    const char *const *stop; /* stop strings (not included in the output) */
    int n_stop;
    /* Stopping early: *cancel set non-zero (from another thread, a signal
     * handler or a callback) or abort(abort_user) returning non-zero. Both
     * are looked at before every op of the vision tower, the prefill and
     * each decode step, so a call stops within one op. A stopped call
     * returns VLM_ERR_CANCELLED with stats->stop = VLM_STOP_CANCEL; what was
     * streamed by then is kept as the answer in the history, and a call
     * stopped before its first token leaves the user's message pending
     * (the next generate answers it, reusing what the prefill cached). */
    volatile int *cancel;
    int (*abort)(void *user); /* called on the generating thread */
    void *abort_user;
    int ignore_eos;          /* keep going past end-of-sequence tokens */
    /* Optional: told how the prompt is going before the first token (slow
     * for large images or long prompts): done of total prompt tokens
     * computed, and images encoded so far. Called on the generating thread. */
    void (*progress)(void *user, int done, int total, int images_done, int images_total);
    void *progress_user;
} vlm_generate_params;

vlm_generate_params vlm_generate_default(void);

typedef enum vlm_stop_reason {
    VLM_STOP_EOS = 0, VLM_STOP_MAX_TOKENS, VLM_STOP_STRING, VLM_STOP_CALLBACK, VLM_STOP_CANCEL
} vlm_stop_reason;

typedef struct vlm_generate_stats {
    int n_prompt;            /* prompt tokens in the conversation */
    int n_prompt_computed;   /* of which computed now (the rest came from the cache) */
    int n_generated;
    int n_images_encoded;    /* images run through the vision tower */
    int n_images_cached;     /* images whose rows came from the engine's vision cache */
    double vision_s, prefill_s, decode_s;
    vlm_stop_reason stop;
} vlm_generate_stats;

/* Answers the pending user message (images and text added since the last
 * call): the whole conversation is rendered with the model's chat template,
 * the cached prefix of earlier turns is kept, and the answer is streamed to
 * fn and appended to the history. stats may be NULL. */
vlm_status vlm_session_generate(vlm_session *s, const vlm_generate_params *p, vlm_piece_fn fn, void *user,
                                vlm_generate_stats *stats, vlm_error *err);

/* The last logits the session computed ([vocab] floats), for tests. */
const float *vlm_session_logits(const vlm_session *s);
/* The tokens in the session's cache (prompt and answers so far). */
const int32_t *vlm_session_tokens(const vlm_session *s, int *n);
/* Keeps the conversation but drops the cache: the next generate recomputes
 * the whole prompt. */
void vlm_session_forget_cache(vlm_session *s);

#ifdef __cplusplus
}
#endif
#endif
