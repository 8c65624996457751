/* The public API end to end on every golden architecture besides Qwen2.5-VL
 * (test_api.c): tiny model directories made by tools/make_tiny_tokenizers.py
 * (the golden checkpoint, the family's real chat template, a 1024-id
 * tokenizer with the special tokens at the checkpoint's ids, the case's image
 * processor settings). For each: the prompt is rendered and expanded, the
 * image block in the prompt is the one of the golden case's input_ids (same
 * image, same processor settings), its placeholder count is what the vision
 * tower produces for the image, a few greedy tokens stream out, and a second
 * turn that reuses the cache gives the logits of a recompute. */
#include "test_util.h"
#include "vlm.h"

typedef struct {
    const char *dir, *golden; /* tests/data/tiny_<x>, tests/golden/<x> */
    const char *image2;       /* a golden case whose image.png is the second image */
    int expect_bos;           /* the prompt starts with the tokenizer's bos token (SmolVLM: its
                                 template writes <|im_start|>, the bos; Gemma: added as HF does) */
} fam_case;

static const fam_case cases[] = {
    {"tests/data/tiny_idefics3", "tests/golden/idefics3", "tests/golden/qwen3_vl", 1},
    {"tests/data/tiny_internvl", "tests/golden/internvl", "tests/golden/gemma4", 0},
    {"tests/data/tiny_internvl_orig", "tests/golden/internvl_orig", "tests/golden/qwen3_vl", 0},
    {"tests/data/tiny_internvl_qwen3", "tests/golden/internvl_qwen3", "tests/golden/idefics3", 0},
    {"tests/data/tiny_qwen3_vl", "tests/golden/qwen3_vl", "tests/golden/gemma4", 0},
    {"tests/data/tiny_gemma4", "tests/golden/gemma4", "tests/golden/qwen3_vl", 1},
};


static int is_special(const vlm_tokenizer *tok, int32_t id) {
    char *s = NULL;
    size_t n = 0;
    vlm_error err = {0};
    if (vlm_detokenize(tok, &id, 1, VLM_DETOK_SKIP_SPECIAL, &s, &n, &err) != VLM_OK) return 0;
    free(s);
    return n == 0;
}

/* The image block of ids: the image tokens and the special tokens right
 * around them (with whatever text lies between, e.g. Idefics3's newlines). */
static int image_block(const vlm_tokenizer *tok, int32_t img, const int32_t *ids, int n, int *a, int *b) {
    int first = -1, last = -1;
    for (int i = 0; i < n; i++)
        if (ids[i] == img) { if (first < 0) first = i; last = i; }
    if (first < 0) return 0;
    while (first > 0 && is_special(tok, ids[first - 1])) first--;
    while (last + 1 < n && is_special(tok, ids[last + 1])) last++;
    *a = first;
    *b = last + 1;
    return 1;
}

static char *decode(const vlm_tokenizer *tok, const int32_t *ids, int n) {
    char *s = NULL;
    size_t len = 0;
    vlm_error err = {0};
    if (vlm_detokenize(tok, ids, n, 0, &s, &len, &err) != VLM_OK) return NULL;
    return s;
}

/* input_ids of the golden case, as int32. */
static int32_t *golden_ids(const char *golden, int *n) {
    char path[512];
    snprintf(path, sizeof path, "%s/inputs.safetensors", golden);
    vlm_safetensors st;
    vlm_error err = {0};
    *n = 0;
    if (vlm_st_open(&st, path, &err) != VLM_OK) return NULL;
    const vlm_st_entry *e = vlm_st_find(&st, "input_ids");
    int32_t *out = NULL;
    if (e) {
        vlm_tensor t = vlm_st_tensor(e);
        *n = (int)vlm_nelem(&t);
        out = (int32_t *)malloc(sizeof(int32_t) * (size_t)*n);
        for (int i = 0; i < *n; i++) out[i] = (int32_t)vlm_get_i64(&t, i);
    }
    vlm_st_close(&st);
    return out;
}

/* The golden case's image processor settings (case.json), independent of the
 * model directory the engine reads. */
static int case_proc(const fam_case *fc, vlm_image_processor *p, vlm_error *err) {
    char path[512];
    snprintf(path, sizeof path, "%s/case.json", fc->golden);
    vlm_json *j = vlm_json_load(path, err);
    int ok = j && vlm_image_processor_from_json(p, vlm_json_get(j, "image_processor"), err) == VLM_OK;
    vlm_json_free(j);
    return ok;
}

/* Placeholder rows the vision tower gives for the image. */
static int64_t vision_rows(vlm_engine *e, const fam_case *fc, const char *image) {
    vlm_model *m = vlm_engine_model(e);
    vlm_image_processor proc;
    vlm_error err = {0};
    vlm_image img = {0};
    vlm_features f = {0};
    int64_t rows = -1;
    if (!case_proc(fc, &proc, &err) || vlm_image_load(&img, image, &err) != VLM_OK) {
        CHECK(0, "%s", err.msg);
        return -1;
    }
    CHECK(vlm_image_preprocess(&proc, &img, 1, &f, &err) == VLM_OK, "%s", err.msg);
    vlm_compute c;
    vlm_compute_init(&c, m->be);
    vlm_vision_out vo = {0};
    if (m->arch->encode(m, &c, &f, &vo) == VLM_OK && vo.embeds) rows = vo.n_image_tokens;
    else CHECK(0, "encode: %s", c.err.msg);
    vlm_compute_free(&c);
    vlm_image_features_free(&f);
    vlm_image_free(&img);
    return rows;
}

/* A prompt longer than a prefill batch (512 tokens): text, then the images
 * (the first across the batch boundary, all in one message), then text. The
 * API prefills it in chunks cut around the images; the reference runs the
 * same tokens in one forward call with all images preprocessed together. */
static void test_chunked(vlm_engine *e, const fam_case *fc, int n_images) {
    vlm_error err = {0};
    vlm_model *m = vlm_engine_model(e);
    char image[2][512], *text = (char *)malloc(8192);
    snprintf(image[0], sizeof image[0], "%s/image.png", fc->golden);
    snprintf(image[1], sizeof image[1], "%s/image.png", fc->image2);
    /* where the image starts after a one-word text (the template's own prefix) */
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 1;
    vlm_generate_stats st;
    test_sink k = {0};
    vlm_session *s = NULL;
    int f0 = 0, n = 0;
    CHECK(vlm_session_new(e, NULL, &s, &err) == VLM_OK, "%s", err.msg);
    vlm_session_add_text(s, "Tell", &err);
    vlm_session_add_image_file(s, image[0], &err);
    CHECK(vlm_session_generate(s, &gp, test_collect, &k, &st, &err) == VLM_OK, "%s probe: %s", fc->dir, err.msg);
    const int32_t *ids = vlm_session_tokens(s, &n);
    while (f0 < n && ids[f0] != m->image_token_id) f0++;
    vlm_session_free(s);
    /* about 500 tokens before the image, so that the first image crosses token 512 */
    for (int reps = 90; reps > 0; reps--) {
        text[0] = 0;
        for (int i = 0; i < reps; i++) strcat(text, i % 2 ? "What is in the picture? " : "Tell me about it. ");
        vlm_tokens t = {0};
        vlm_tokenize(vlm_engine_tokenizer(e), text, strlen(text), 0, &t, &err);
        int nt = t.n;
        vlm_tokens_free(&t);
        if (nt + f0 < 500) break;
    }
    vlm_session_params sp = {.n_ctx = 2048};
    CHECK(vlm_session_new(e, &sp, &s, &err) == VLM_OK, "%s", err.msg);
    vlm_session_add_text(s, text, &err);
    for (int i = 0; i < n_images; i++) vlm_session_add_image_file(s, image[i], &err);
    vlm_session_add_text(s, "Describe the image.", &err);
    CHECK(vlm_session_generate(s, &gp, test_collect, &k, &st, &err) == VLM_OK, "%s chunked: %s", fc->dir, err.msg);
    CHECK(st.n_images_encoded == n_images, "%d images encoded (%d)", n_images, st.n_images_encoded);
    int first = -1, last = -1, n_img = 0;
    ids = vlm_session_tokens(s, &n);
    for (int i = 0; i < n; i++)
        if (ids[i] == m->image_token_id) { if (first < 0) first = i; last = i; n_img++; }
    CHECK(first >= 0 && first < 512 && last >= 512, "%s: %d tokens, the images at %d..%d cross token 512", fc->dir, n,
          first, last);
    /* reference: one forward call */
    vlm_image_processor proc;
    vlm_image img[2] = {{0}};
    vlm_features f = {0};
    vlm_seq seq;
    vlm_vision_out vo = {0};
    vlm_tensor *lg = NULL;
    float *ref = (float *)malloc(sizeof(float) * (size_t)m->vocab_size);
    int32_t *types = (int32_t *)calloc((size_t)n, sizeof(int32_t));
    for (int i = 0; i < n; i++) types[i] = ids[i] == m->image_token_id;
    int ok = case_proc(fc, &proc, &err);
    for (int i = 0; ok && i < n_images; i++) ok = vlm_image_load(&img[i], image[i], &err) == VLM_OK;
    ok = ok && vlm_image_preprocess(&proc, img, n_images, &f, &err) == VLM_OK &&
         vlm_seq_init(&seq, m, n + 8, n, VLM_F32, &err) == VLM_OK;
    CHECK(ok, "%s", err.msg);
    if (ok) {
        f.names[f.n] = "mm_token_type_ids";
        f.tensors[f.n++] = vlm_tensor_make(VLM_I32, 2, (const int64_t[]){1, n}, types);
        ok = m->arch->encode(m, &seq.c, &f, &vo) == VLM_OK;
        CHECK(ok && vo.n_image_tokens == n_img, "%s: %d image tokens in the prompt, the vision tower gives %lld (%s)",
              fc->dir, n_img, (long long)vo.n_image_tokens, seq.c.err.msg);
        ok = ok && m->arch->forward(m, &seq, ids, n, &vo, &f, 0, &lg) == VLM_OK &&
             vlm_to_host_f32(&seq.c, lg, ref) == VLM_OK;
        CHECK(ok, "reference forward: %s", seq.c.err.msg);
        f.n--;
        if (ok) {
            float d = test_max_abs_diff(vlm_session_logits(s), ref, m->vocab_size);
            printf("  chunked prefill of %d tokens (%d image(s), %d image tokens at %d..%d): max |logit diff| vs one "
                   "call %.3g\n", n, n_images, n_img, first, last, d);
            CHECK(d < 1e-4f, "%s: chunked prefill agrees with one call (%g)", fc->dir, d);
        }
        vlm_seq_free(&seq);
    }
    vlm_image_features_free(&f);
    for (int i = 0; i < 2; i++) vlm_image_free(&img[i]);
    free(types);
    free(ref);
    free(text);
    vlm_session_free(s);
}

/* A system prompt goes through the family's template once, before the image;
 * vlm_session_reset keeps it and forgets the rest. */
static void test_system(vlm_engine *e, const fam_case *fc) {
    vlm_error err = {0};
    vlm_model *m = vlm_engine_model(e);
    char image[512];
    snprintf(image, sizeof image, "%s/image.png", fc->golden);
    vlm_session_params sp = {.system = "You answer in one word."};
    vlm_session *s = NULL;
    CHECK(vlm_session_new(e, &sp, &s, &err) == VLM_OK, "%s", err.msg);
    if (!s) return;
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 2;
    gp.ignore_eos = 1;
    for (int round = 0; round < 2; round++) {
        test_sink k = {0};
        vlm_session_add_image_file(s, image, &err);
        vlm_session_add_text(s, "What is it?", &err);
        vlm_generate_stats st;
        CHECK(vlm_session_generate(s, &gp, test_collect, &k, &st, &err) == VLM_OK, "%s system: %s", fc->dir, err.msg);
        int n = 0, n_img = 0;
        const int32_t *ids = vlm_session_tokens(s, &n);
        for (int i = 0; i < n; i++) n_img += ids[i] == m->image_token_id;
        char *text = decode(vlm_engine_tokenizer(e), ids, n);
        const char *sys = text ? strstr(text, "You answer in one word.") : NULL;
        const char *q = text ? strstr(text, "What is it?") : NULL;
        CHECK(sys && !strstr(sys + 1, "You answer in one word.") && q && sys < q && !strstr(q + 1, "What is it?"),
              "%s: the system prompt once, before the question (round %d): %s", fc->dir, round, text ? text : "-");
        CHECK(n_img > 0 && st.n_images_encoded == 1, "one image");
        free(text);
        vlm_session_reset(s);
    }
    vlm_session_free(s);
}

/* End of sequence: a copy of the model directory whose generation_config.json
 * names the greedy first token as eos stops at once (nothing streamed); the
 * next turn goes on from the cache (the eos token was never run) and agrees
 * with a recompute. */
static void test_eos(vlm_engine *e0, const fam_case *fc) {
    TEST_NEEDS_SHELL("a copy of the model folder made with cp and ln");
    vlm_error err = {0};
    char image[512], dir[512], cmd[8192];
    snprintf(image, sizeof image, "%s/image.png", fc->golden);
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 2;
    gp.ignore_eos = 1;
    vlm_session *s = NULL;
    test_sink k = {0};
    vlm_generate_stats st[2];
    int n = 0;
    CHECK(vlm_session_new(e0, NULL, &s, &err) == VLM_OK, "%s", err.msg);
    vlm_session_add_image_file(s, image, &err);
    vlm_session_add_text(s, "What is in the picture?", &err);
    CHECK(vlm_session_generate(s, &gp, test_collect, &k, NULL, &err) == VLM_OK, "%s", err.msg);
    const int32_t *ids = vlm_session_tokens(s, &n);
    int32_t first = n > 0 ? ids[n - 1] : -1; /* the first answer token is in the cache, the second is not */
    vlm_session_free(s);
    const char *name = strrchr(fc->dir, '/') + 1;
    snprintf(dir, sizeof dir, "build/test_api_families_eos/%s", name);
    snprintf(cmd, sizeof cmd,
             "rm -rf %s && mkdir -p %s && for f in %s/*; do if [ -L $f ]; then ln -s \"$(realpath $f)\" %s/; "
             "else cp $f %s/; fi; done && echo '{\"eos_token_id\": [%d]}' > %s/generation_config.json",
             dir, dir, fc->dir, dir, dir, (int)first, dir);
    CHECK(system(cmd) == 0, "%s", cmd);
    vlm_engine *e = NULL;
    /* no vision cache: the counts below are of images the KV-cache logic
     * sends to the tower (test_vision_cache.c covers the engine's cache) */
    vlm_engine_params ep = {.n_threads = 2, .vision_cache_mib = -1};
    CHECK(vlm_engine_open(&e, dir, &ep, &err) == VLM_OK, "%s: %s", dir, err.msg);
    if (!e) return;
    vlm_session *ss[2] = {0};
    gp.ignore_eos = 0;
    gp.max_tokens = 8;
    for (int i = 0; i < 2; i++) {
        k.len = 0;
        k.calls = 0;
        CHECK(vlm_session_new(e, NULL, &ss[i], &err) == VLM_OK, "%s", err.msg);
        vlm_session_add_image_file(ss[i], image, &err);
        vlm_session_add_text(ss[i], "What is in the picture?", &err);
        CHECK(vlm_session_generate(ss[i], &gp, test_collect, &k, &st[i], &err) == VLM_OK, "%s", err.msg);
        CHECK(st[i].stop == VLM_STOP_EOS && st[i].n_generated == 0 && k.calls == 0,
              "%s: stopped by eos %d at once (reason %d, %d tokens, %d pieces)", fc->dir, (int)first, st[i].stop,
              st[i].n_generated, k.calls);
        vlm_session_add_text(ss[i], "And now?", &err);
        if (i == 1) vlm_session_forget_cache(ss[i]);
        CHECK(vlm_session_generate(ss[i], &gp, test_collect, &k, &st[i], &err) == VLM_OK, "%s", err.msg);
    }
    CHECK(st[0].n_prompt == st[1].n_prompt && st[0].n_prompt_computed < st[0].n_prompt / 2,
          "%s: the turn after eos reuses the cache (%d of %d)", fc->dir, st[0].n_prompt_computed, st[0].n_prompt);
    float d = test_max_abs_diff(vlm_session_logits(ss[0]), vlm_session_logits(ss[1]), vlm_engine_model(e)->vocab_size);
    CHECK(d < 1e-4f, "%s: turn after eos, cached vs recomputed (%g)", fc->dir, d);
    printf("  eos %d stops at once; the next turn: %d of %d computed, max |logit diff| vs recompute %.3g\n", (int)first,
           st[0].n_prompt_computed, st[0].n_prompt, d);
    vlm_session_free(ss[0]);
    vlm_session_free(ss[1]);
    vlm_engine_close(e);
}

/* A long answer (560 tokens, longer than Gemma 4's sliding-window ring of
 * window + 512 slots), then a second turn: where the re-rendered answer
 * differs from the sampled tokens early on, the cache cannot be resumed there
 * (the ring lost that window) and the turn must still agree with a recompute.
 * Random weights also sample placeholder ids, which embed as text. */
static void test_long_answer(vlm_engine *e, const fam_case *fc) {
    vlm_error err = {0};
    char image[512];
    snprintf(image, sizeof image, "%s/image.png", fc->golden);
    vlm_session_params sp = {.n_ctx = 2048};
    vlm_session *s[2] = {0};
    vlm_generate_stats st[2];
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.ignore_eos = 1;
    for (int i = 0; i < 2; i++) {
        CHECK(vlm_session_new(e, &sp, &s[i], &err) == VLM_OK, "%s", err.msg);
        if (!s[i]) return;
        vlm_session_add_image_file(s[i], image, &err);
        vlm_session_add_text(s[i], "What is in the picture?", &err);
        gp.max_tokens = 560;
        CHECK(vlm_session_generate(s[i], &gp, NULL, NULL, &st[i], &err) == VLM_OK, "%s long answer: %s", fc->dir,
              err.msg);
        CHECK(st[i].n_generated == 560, "560 tokens (%d)", st[i].n_generated);
        vlm_session_add_text(s[i], "And now?", &err);
        if (i) vlm_session_forget_cache(s[i]);
        gp.max_tokens = 1;
        CHECK(vlm_session_generate(s[i], &gp, NULL, NULL, &st[i], &err) == VLM_OK, "%s: %s", fc->dir, err.msg);
    }
    float d = test_max_abs_diff(vlm_session_logits(s[0]), vlm_session_logits(s[1]), vlm_engine_model(e)->vocab_size);
    CHECK(st[0].n_prompt == st[1].n_prompt, "same conversation");
    CHECK(d < 1e-4f, "%s: turn after a long answer, cached vs recomputed (%g)", fc->dir, d);
    printf("  after a 560-token answer: %d of %d computed, max |logit diff| vs recompute %.3g\n",
           st[0].n_prompt_computed, st[0].n_prompt, d);
    vlm_session_free(s[0]);
    vlm_session_free(s[1]);
}

static void run_case(const fam_case *fc) {
    vlm_error err = {0};
    vlm_engine *e = NULL;
    /* no vision cache: the counts below are of images the KV-cache logic
     * sends to the tower (test_vision_cache.c covers the engine's cache) */
    vlm_engine_params ep = {.n_threads = 2, .vision_cache_mib = -1};
    CHECK(vlm_engine_open(&e, fc->dir, &ep, &err) == VLM_OK, "%s: %s", fc->dir, err.msg);
    if (!e) return;
    const vlm_tokenizer *tok = vlm_engine_tokenizer(e);
    vlm_model *m = vlm_engine_model(e);
    char image[512];
    snprintf(image, sizeof image, "%s/image.png", fc->golden);

    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 6;
    gp.ignore_eos = 1;
    vlm_session *s[2] = {0};
    vlm_generate_stats st[2], st1;
    test_sink k = {0};
    for (int i = 0; i < 2; i++) {
        CHECK(vlm_session_new(e, NULL, &s[i], &err) == VLM_OK, "%s", err.msg);
        if (!s[i]) break;
        vlm_session_add_image_file(s[i], image, &err);
        vlm_session_add_text(s[i], "What is in the picture?", &err);
        k.len = 0;
        k.calls = 0;
        CHECK(vlm_session_generate(s[i], &gp, test_collect, &k, &st1, &err) == VLM_OK, "%s: %s", fc->dir, err.msg);
        if (i == 0) {
            CHECK(st1.n_generated == 6 && st1.stop == VLM_STOP_MAX_TOKENS, "6 greedy tokens (%d)", st1.n_generated);
            CHECK(st1.n_images_encoded == 1, "one image encoded");
            CHECK(k.calls >= 1 && k.len > 0, "the answer streamed (%d pieces)", k.calls);
            /* the prompt: image block, placeholder count, bos */
            int n = 0, ng = 0, a = 0, b = 0, ga = 0, gb = 0;
            const int32_t *ids = vlm_session_tokens(s[i], &n);
            int32_t *gids = golden_ids(fc->golden, &ng);
            int n_img = 0, ng_img = 0;
            for (int j = 0; j < st1.n_prompt; j++) n_img += ids[j] == m->image_token_id;
            for (int j = 0; j < ng; j++) ng_img += gids[j] == m->image_token_id;
            int64_t rows = vision_rows(e, fc, image);
            CHECK(n_img == rows, "%s: %d image tokens in the prompt, the vision tower gives %lld", fc->dir, n_img,
                  (long long)rows);
            CHECK(n_img == ng_img, "%s: %d image tokens, the golden case has %d", fc->dir, n_img, ng_img);
            int ok = image_block(tok, m->image_token_id, ids, st1.n_prompt, &a, &b) &&
                     image_block(tok, m->image_token_id, gids, ng, &ga, &gb);
            char *mine = ok ? decode(tok, ids + a, b - a) : NULL, *theirs = ok ? decode(tok, gids + ga, gb - ga) : NULL;
            CHECK(mine && theirs && !strcmp(mine, theirs), "%s: image block\n  ours   %s\n  golden %s", fc->dir,
                  mine ? mine : "-", theirs ? theirs : "-");
            vlm_tokenizer_info ti = vlm_tokenizer_get_info(tok);
            CHECK((ids[0] == ti.bos_id) == fc->expect_bos, "%s: bos at the start: %d (first token %d)", fc->dir,
                  fc->expect_bos, ids[0]);
            char *prompt = decode(tok, ids, st1.n_prompt);
            printf("%s: prompt %d tokens (%d image tokens = vision rows %lld = golden %d), answer \"%s\"\n", fc->dir,
                   st1.n_prompt, n_img, (long long)rows, ng_img, k.text);
            if (prompt) {
                size_t pl = strlen(prompt);
                printf("  prompt: \"%.60s\" ... \"%s\"\n", prompt, prompt + (pl > 60 ? pl - 60 : 0));
            }
            free(prompt);
            free(mine);
            free(theirs);
            free(gids);
        }
        vlm_session_add_text(s[i], "And what colour is it?", &err);
        if (i == 1) vlm_session_forget_cache(s[i]);
        gp.max_tokens = 1; /* the logits kept are those of the prefill */
        CHECK(vlm_session_generate(s[i], &gp, test_collect, &k, &st[i], &err) == VLM_OK, "%s: %s", fc->dir, err.msg);
        gp.max_tokens = 6;
    }
    if (s[0] && s[1]) {
        CHECK(st[0].n_prompt == st[1].n_prompt, "same conversation");
        CHECK(st[0].n_prompt_computed < st[0].n_prompt / 2, "%s: turn 2 reuses the cache (%d of %d computed)", fc->dir,
              st[0].n_prompt_computed, st[0].n_prompt);
        CHECK(st[1].n_prompt_computed == st[1].n_prompt, "forgotten cache: everything recomputed");
        CHECK(st[1].n_images_encoded == 1 && st[0].n_images_encoded == 0, "the image is encoded again only without cache");
        float d = test_max_abs_diff(vlm_session_logits(s[0]), vlm_session_logits(s[1]), m->vocab_size);
        printf("  turn 2: %d of %d prompt tokens computed with the cache; max |logit diff| vs recompute %.3g\n",
               st[0].n_prompt_computed, st[0].n_prompt, d);
        CHECK(d < 1e-4f, "%s: cached and recomputed turn 2 agree (%g)", fc->dir, d);
    }
    /* Turn 3 brings a second image (another size): both sessions go on from
     * their caches, the first with the image appended after its cached turns. */
    if (s[0] && s[1]) {
        char image2[512];
        snprintf(image2, sizeof image2, "%s/image.png", fc->image2);
        for (int i = 0; i < 2; i++) {
            vlm_session_add_text(s[i], "Now compare with this one:", &err);
            CHECK(vlm_session_add_image_file(s[i], image2, &err) == VLM_OK, "%s", err.msg);
            gp.max_tokens = 1;
            CHECK(vlm_session_generate(s[i], &gp, test_collect, &k, &st[i], &err) == VLM_OK, "%s turn 3: %s", fc->dir, err.msg);
        }
        CHECK(st[0].n_prompt == st[1].n_prompt, "same conversation");
        CHECK(st[0].n_images_encoded == 1 && st[1].n_images_encoded == 1, "only the new image is encoded (%d, %d)",
              st[0].n_images_encoded, st[1].n_images_encoded);
        CHECK(st[0].n_prompt_computed < st[0].n_prompt, "turn 3 reuses the cache");
        /* the reference: the whole 3-turn conversation recomputed */
        vlm_session_forget_cache(s[1]);
        vlm_session_add_text(s[1], "Again?", &err);
        vlm_session_add_text(s[0], "Again?", &err);
        for (int i = 0; i < 2; i++)
            CHECK(vlm_session_generate(s[i], &gp, test_collect, &k, &st[i], &err) == VLM_OK, "%s turn 4: %s", fc->dir, err.msg);
        CHECK(st[1].n_images_encoded == 2 && st[1].n_prompt_computed == st[1].n_prompt, "recomputed with both images");
        float d = test_max_abs_diff(vlm_session_logits(s[0]), vlm_session_logits(s[1]), m->vocab_size);
        int n0 = 0, n1 = 0;
        const int32_t *t0 = vlm_session_tokens(s[0], &n0), *t1 = vlm_session_tokens(s[1], &n1);
        CHECK(n0 == n1 && !memcmp(t0, t1, sizeof(int32_t) * (size_t)n0), "same tokens in both caches");
        printf("  turn 4 (second image in turn 3): %d of %d prompt tokens computed; max |logit diff| vs recompute %.3g\n",
               st[0].n_prompt_computed, st[0].n_prompt, d);
        CHECK(d < 1e-4f, "%s: cached and recomputed turn 4 agree (%g)", fc->dir, d);
    }
    vlm_session_free(s[0]);
    vlm_session_free(s[1]);
    test_system(e, fc);
    test_eos(e, fc);
    test_long_answer(e, fc);
    test_chunked(e, fc, 1);
    test_chunked(e, fc, 2);
    vlm_engine_close(e);
}

int main(int argc, char **argv) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (argc < 2 || strstr(cases[i].dir, argv[1])) run_case(&cases[i]);
    TEST_MAIN_END();
}
