/* The public API end to end on a tiny Qwen2.5-VL (the golden checkpoint with
 * a 1024-token tokenizer made for it, tests/data/tiny_qwen): streaming,
 * cancellation, seeds, stop strings, multi-turn cache reuse, two engines in
 * one process, and bad inputs through the API and the CLI. */
#include "test_util.h"
#include "vlm.h"

#define MODEL "tests/data/tiny_qwen"
#define IMAGE "tests/golden/qwen2_5_vl/image.png"

typedef struct {
    char text[4096];
    size_t len;
    int calls, stop_after;
    volatile int *cancel;
} sink;

static int collect(void *user, const char *text, size_t len) {
    sink *k = (sink *)user;
    CHECK(len > 0, "pieces are never empty");
    if (k->len + len < sizeof k->text) {
        memcpy(k->text + k->len, text, len);
        k->len += len;
        k->text[k->len] = 0;
    }
    k->calls++;
    if (k->cancel && k->calls >= 2) *k->cancel = 1;
    return k->stop_after && k->calls >= k->stop_after;
}

/* One question about the image; returns the answer in k. */
static vlm_status ask_want(vlm_engine *e, const vlm_generate_params *gp, sink *k, vlm_generate_stats *st,
                           vlm_status want) {
    vlm_error err = {0};
    vlm_session *s = NULL;
    vlm_status rc = vlm_session_new(e, NULL, &s, &err);
    if (rc == VLM_OK) rc = vlm_session_add_image_file(s, IMAGE, &err);
    if (rc == VLM_OK) rc = vlm_session_add_text(s, "What is in the picture?", &err);
    if (rc == VLM_OK) rc = vlm_session_generate(s, gp, collect, k, st, &err);
    CHECK(rc == want, "ask: %s (want %s)", err.msg, vlm_status_name(want));
    vlm_session_free(s);
    return rc;
}

static vlm_status ask(vlm_engine *e, const vlm_generate_params *gp, sink *k, vlm_generate_stats *st) {
    return ask_want(e, gp, k, st, VLM_OK);
}

static void test_stream_and_history(vlm_engine *e) {
    vlm_error err = {0};
    vlm_session *s = NULL;
    CHECK(vlm_session_new(e, NULL, &s, &err) == VLM_OK, "%s", err.msg);
    vlm_session_add_image_file(s, IMAGE, &err);
    vlm_session_add_text(s, "What is in the picture?", &err);
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 10;
    gp.ignore_eos = 1;
    sink k = {0};
    vlm_generate_stats st;
    CHECK(vlm_session_generate(s, &gp, collect, &k, &st, &err) == VLM_OK, "%s", err.msg);
    CHECK(st.n_generated == 10 && st.stop == VLM_STOP_MAX_TOKENS, "10 tokens, stopped by the limit (%d, %d)",
          st.n_generated, st.stop);
    CHECK(st.n_images_encoded == 1 && st.n_prompt > 35, "one image of 35 tokens in the prompt");
    /* Everything streamed, in order: the pieces are the decoded answer. */
    int n;
    const int32_t *toks = vlm_session_tokens(s, &n);
    char *dec = NULL;
    size_t dl = 0;
    /* the last sampled token is not in the cache yet: decode the 9 that are, the stream has 10 */
    CHECK(vlm_detokenize(vlm_engine_tokenizer(e), toks + n - 9, 9, VLM_DETOK_SKIP_SPECIAL, &dec, &dl, &err) == VLM_OK,
          "%s", err.msg);
    CHECK(dl <= k.len && !memcmp(dec, k.text, dl), "streamed text starts with the decoded tokens");
    free(dec);
    printf("answer: \"%s\" (%d pieces)\n", k.text, k.calls);
    vlm_session_free(s);
}

static void test_cancel_and_callback_stop(vlm_engine *e) {
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 20;
    gp.ignore_eos = 1;
    volatile int cancel = 0;
    gp.cancel = &cancel;
    sink k = {.cancel = &cancel};
    vlm_generate_stats st;
    ask_want(e, &gp, &k, &st, VLM_ERR_CANCELLED); /* a cancel is reported as such */
    CHECK(st.stop == VLM_STOP_CANCEL && st.n_generated < 20, "cancel stops early (%d tokens, reason %d)", st.n_generated,
          st.stop);
    sink k2 = {.stop_after = 3};
    gp.cancel = NULL;
    ask(e, &gp, &k2, &st);
    CHECK(st.stop == VLM_STOP_CALLBACK && k2.calls == 3, "callback stop after 3 pieces (%d)", k2.calls);
}

static void test_seeds(vlm_engine *e) {
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 1.0f;
    gp.max_tokens = 12;
    gp.ignore_eos = 1;
    sink a = {0}, b = {0}, c = {0};
    gp.sampling.seed = 42;
    ask(e, &gp, &a, NULL);
    ask(e, &gp, &b, NULL);
    gp.sampling.seed = 43;
    ask(e, &gp, &c, NULL);
    CHECK(a.len > 0 && !strcmp(a.text, b.text), "same seed, same answer");
    CHECK(strcmp(a.text, c.text), "another seed, another answer");
}

static void test_stop_string(vlm_engine *e) {
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 16;
    gp.ignore_eos = 1;
    sink full = {0};
    ask(e, &gp, &full, NULL);
    /* A stop string made of the end of one piece and the start of the next. */
    CHECK(full.len >= 8, "a long enough answer (%zu bytes)", full.len);
    if (full.len < 8) return;
    size_t at = full.len / 2;
    char stop[8];
    memcpy(stop, full.text + at - 2, 4);
    stop[4] = 0;
    size_t first = (size_t)(strstr(full.text, stop) - full.text);
    const char *stops[] = {stop};
    gp.stop = stops;
    gp.n_stop = 1;
    sink cut = {0};
    vlm_generate_stats st;
    ask(e, &gp, &cut, &st);
    CHECK(st.stop == VLM_STOP_STRING, "stopped by the string");
    CHECK(cut.len == first && !memcmp(cut.text, full.text, first), "output ends right before the stop string: '%s' vs '%.*s'",
          cut.text, (int)first, full.text);
}

static void test_multi_turn_cache(vlm_engine *e) {
    vlm_error err = {0};
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 6;
    gp.ignore_eos = 1;
    vlm_session *s[2];
    vlm_generate_stats st[2];
    for (int i = 0; i < 2; i++) {
        sink k = {0};
        CHECK(vlm_session_new(e, NULL, &s[i], &err) == VLM_OK, "%s", err.msg);
        vlm_session_add_image_file(s[i], IMAGE, &err);
        vlm_session_add_text(s[i], "What is in the picture?", &err);
        CHECK(vlm_session_generate(s[i], &gp, collect, &k, NULL, &err) == VLM_OK, "%s", err.msg);
        vlm_session_add_text(s[i], "And what colour is it?", &err);
        if (i == 1) vlm_session_forget_cache(s[i]); /* recompute the whole conversation */
        gp.max_tokens = 1;                           /* the logits kept are those of the prefill */
        CHECK(vlm_session_generate(s[i], &gp, collect, &k, &st[i], &err) == VLM_OK, "%s", err.msg);
        gp.max_tokens = 6;
    }
    CHECK(st[0].n_prompt == st[1].n_prompt, "same conversation");
    CHECK(st[0].n_prompt_computed < st[0].n_prompt / 2, "turn 2 reuses the cache (%d of %d computed)",
          st[0].n_prompt_computed, st[0].n_prompt);
    CHECK(st[1].n_prompt_computed == st[1].n_prompt, "forgotten cache: everything recomputed");
    CHECK(st[1].n_images_encoded + st[1].n_images_cached == 1 && st[0].n_images_encoded + st[0].n_images_cached == 0,
          "the image is taken again only without the KV cache (from the engine's vision cache: %d encoded, %d cached)",
          st[1].n_images_encoded, st[1].n_images_cached);
    float d = test_max_abs_diff(vlm_session_logits(s[0]), vlm_session_logits(s[1]), 1024);
    printf("multi-turn: %d of %d prompt tokens computed with the cache; max |logit diff| vs recompute %.3g\n",
           st[0].n_prompt_computed, st[0].n_prompt, d);
    CHECK(d < 1e-4f, "cached and recomputed turn 2 agree (%g)", d);
    vlm_session_free(s[0]);
    vlm_session_free(s[1]);
}

/* A conversation given whole (a server's request) into a session: the
 * image (or its pixels inverted when `other`), the question, then an
 * earlier answer and a follow-up when `answer` is given. */
static void give_conversation(vlm_session *s, const vlm_image *img, int other, const char *answer) {
    vlm_error err = {0};
    vlm_image inv = *img;
    size_t n = (size_t)img->width * img->height * 3;
    inv.rgb = (uint8_t *)malloc(n);
    for (size_t i = 0; inv.rgb && i < n; i++) inv.rgb[i] = other ? (uint8_t)(255 - img->rgb[i]) : img->rgb[i];
    CHECK(vlm_session_begin_message(s, "system", &err) == VLM_OK && vlm_session_add_text(s, "Be brief.", &err) == VLM_OK &&
              vlm_session_begin_message(s, "user", &err) == VLM_OK &&
              vlm_session_add_image_rgb(s, inv.rgb, img->width, img->height, 0, &err) == VLM_OK &&
              vlm_session_add_text(s, "What is in the picture?", &err) == VLM_OK,
          "%s", err.msg);
    if (answer)
        CHECK(vlm_session_begin_message(s, "assistant", &err) == VLM_OK && vlm_session_add_text(s, answer, &err) == VLM_OK &&
                  vlm_session_begin_message(s, "user", &err) == VLM_OK &&
                  vlm_session_add_text(s, "And what colour is it?", &err) == VLM_OK,
              "%s", err.msg);
    free(inv.rgb);
}

/* vlm_session_restart keeps the cache for the next conversation: a
 * follow-up computes only its new tokens, and a different image of the same
 * size in the same place is encoded again (the cache knows its images by
 * their pixels), each matching a fresh session on the same conversation. */
static void test_restart_reuse(vlm_engine *e) {
    vlm_error err = {0};
    vlm_image img = {0};
    CHECK(vlm_image_load(&img, IMAGE, &err) == VLM_OK, "%s", err.msg);
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 6;
    gp.ignore_eos = 1;
    vlm_session *s = NULL, *fresh = NULL;
    sink a1 = {0}, k = {0};
    vlm_generate_stats st;
    CHECK(vlm_session_new(e, NULL, &s, &err) == VLM_OK, "%s", err.msg);
    give_conversation(s, &img, 0, NULL);
    CHECK(vlm_session_generate(s, &gp, collect, &a1, NULL, &err) == VLM_OK, "%s", err.msg);
    for (int step = 0; step < 3; step++) {
        /* 0: the follow-up turn; 1: the first turn with another image; 2: the first turn again */
        int other = step == 1;
        const char *answer = step == 0 ? a1.text : NULL;
        vlm_session_restart(s);
        give_conversation(s, &img, other, answer);
        gp.max_tokens = 1; /* the logits kept are those of the prefill */
        CHECK(vlm_session_generate(s, &gp, collect, &k, &st, &err) == VLM_OK, "%s", err.msg);
        CHECK(vlm_session_new(e, NULL, &fresh, &err) == VLM_OK, "%s", err.msg);
        give_conversation(fresh, &img, other, answer);
        CHECK(vlm_session_generate(fresh, &gp, collect, &k, NULL, &err) == VLM_OK, "%s", err.msg);
        float d = test_max_abs_diff(vlm_session_logits(s), vlm_session_logits(fresh), 1024);
        printf("restart step %d: %d of %d prompt tokens computed, %d images encoded, %d from the vision cache, "
               "max |logit diff| vs fresh %.3g\n", step, st.n_prompt_computed, st.n_prompt, st.n_images_encoded,
               st.n_images_cached, d);
        CHECK(d < 1e-4f, "step %d: reused and fresh agree (%g)", step, d);
        if (step == 0) CHECK(st.n_prompt_computed < st.n_prompt / 2 && st.n_images_encoded == 0, "the follow-up reuses the cache");
        else CHECK(st.n_images_encoded + st.n_images_cached == 1 && st.n_prompt_computed < st.n_prompt,
                   "the changed image is taken again after the reused system prompt");
        if (step == 1) CHECK(st.n_images_encoded == 1, "a new image runs the vision tower");
        if (step == 2) CHECK(st.n_images_cached == 1, "the first image's rows come from the engine's vision cache");
        vlm_session_free(fresh);
    }
    CHECK(vlm_session_begin_message(s, "tool", &err) == VLM_ERR_ARG && strstr(err.msg, "unknown role 'tool'"), "%s", err.msg);
    vlm_session_restart(s);
    vlm_session_begin_message(s, "user", &err);
    vlm_session_add_text(s, "hi", &err);
    vlm_session_begin_message(s, "assistant", &err);
    vlm_session_add_text(s, "hello", &err);
    CHECK(vlm_session_generate(s, &gp, collect, &k, NULL, &err) == VLM_ERR_ARG && strstr(err.msg, "nothing to answer"),
          "a conversation that ends with an answer: %s", err.msg);
    vlm_session_free(s);
    vlm_image_free(&img);
}

static void test_two_engines(vlm_engine *e1) {
    vlm_error err = {0};
    vlm_engine *e2 = NULL;
    vlm_engine_params ep = {.n_threads = 1};
    CHECK(vlm_engine_open(&e2, MODEL, &ep, &err) == VLM_OK, "%s", err.msg);
    if (!e2) return;
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = 8;
    gp.ignore_eos = 1;
    sink a = {0}, b = {0};
    ask(e1, &gp, &a, NULL);
    ask(e2, &gp, &b, NULL);
    CHECK(a.len > 0 && !strcmp(a.text, b.text), "two engines (2 and 1 threads) give the same answer");
    vlm_engine_close(e2);
}

static void write_file(const char *path, const char *data, size_t n) {
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(data, 1, n, f); fclose(f); }
}

static void test_bad_inputs(vlm_engine *e) {
    vlm_error err = {0};
    vlm_engine *x = NULL;
    CHECK(vlm_engine_open(&x, "/nonexistent/model", NULL, &err) == VLM_ERR_IO && err.msg[0], "missing dir: %s", err.msg);
    vlm_error_clear(&err);
    CHECK(vlm_engine_open(&x, "tests", NULL, &err) != VLM_OK && err.msg[0], "wrong dir: %s", err.msg);
    /* unknown architecture */
    vlm_make_dir("build");
    vlm_make_dir("build/test_api_bad");
    if (TEST_SHELL) system("cp " MODEL "/*.json build/test_api_bad/");
    const char *cfg = "{\"architectures\": [\"FooBarForCausalLM\"], \"model_type\": \"foobar\"}";
    write_file("build/test_api_bad/config.json", cfg, strlen(cfg));
    vlm_error_clear(&err);
    CHECK(vlm_engine_open(&x, "build/test_api_bad", NULL, &err) == VLM_ERR_UNSUPPORTED && strstr(err.msg, "FooBar"),
          "unknown architecture: %s", err.msg);
    /* an image that does not decode */
    write_file("build/test_api_bad/broken.png", "\x89PNG\r\n\x1a\n garbage", 17);
    vlm_session *s = NULL;
    vlm_error_clear(&err);
    CHECK(vlm_session_new(e, NULL, &s, &err) == VLM_OK, "%s", err.msg);
    CHECK(vlm_session_add_image_file(s, "build/test_api_bad/broken.png", &err) != VLM_OK && err.msg[0],
          "broken image: %s", err.msg);
    vlm_session_free(s);
    /* a prompt longer than the context */
    vlm_session_params sp = {.n_ctx = 48};
    vlm_error_clear(&err);
    CHECK(vlm_session_new(e, &sp, &s, &err) == VLM_OK, "%s", err.msg);
    vlm_session_add_image_file(s, IMAGE, &err);
    vlm_session_add_text(s, "A question long enough to overflow a context of forty-eight tokens.", &err);
    CHECK(vlm_session_generate(s, NULL, collect, &(sink){0}, NULL, &err) == VLM_ERR_CONTEXT && err.msg[0],
          "context overflow: %s", err.msg);
    vlm_session_free(s);
}

/* The CLI: each bad input is one clear line on stderr and a non-zero exit. */
static void test_cli(void) {
    TEST_NEEDS_SHELL("the CLI's exit codes through system()");
    const char *bin = getenv("VLM_BIN") ? getenv("VLM_BIN") : "build/vlm";
    const char *cases[][2] = {
        {"run -m /nonexistent/model -p hi", "missing model"},
        {"run -m build/test_api_bad -p hi", "unknown architecture"},
        {"run -m " MODEL " -i build/test_api_bad/broken.png -p hi", "broken image"},
        {"run -m " MODEL " -i /nonexistent.png -p hi", "missing image"},
        {"run -m " MODEL " -c 40 -i " IMAGE " -p hi", "prompt longer than the context"},
        {"info -m /nonexistent/model", "info on a missing model"},
        {"run --bogus", "unknown option"},
    };
    char cmd[1024];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(cmd, sizeof cmd, "%s %s > build/test_api_cli.out 2> build/test_api_cli.err", bin, cases[i][0]);
        int rc = system(cmd);
        FILE *f = fopen("build/test_api_cli.err", "r");
        char line[1024] = "";
        int lines = 0;
        while (f && fgets(line + (lines ? 0 : 0), sizeof line, f)) lines++;
        if (f) fclose(f);
        CHECK(rc != 0 && WIFEXITED(rc) && WEXITSTATUS(rc) < 128, "%s: exit status %d", cases[i][1], rc);
        CHECK(lines >= 1, "%s: an error message", cases[i][1]);
        if (strncmp(cases[i][0], "run --bogus", 11)) CHECK(lines == 1, "%s: one line, got %d", cases[i][1], lines);
    }
    snprintf(cmd, sizeof cmd, "%s run -m %s -i %s -p hi -n 4 > build/test_api_cli.out 2>&1", bin, MODEL, IMAGE);
    CHECK(system(cmd) == 0, "vlm run works on the tiny model");
    snprintf(cmd, sizeof cmd, "%s info -m %s > build/test_api_cli.out 2>&1", bin, MODEL);
    CHECK(system(cmd) == 0, "vlm info works");
    const char *caption = getenv("VLM_CAPTION") ? getenv("VLM_CAPTION") : "build/examples/caption";
    snprintf(cmd, sizeof cmd, "%s %s %s > build/test_api_caption.out 2>&1", caption, MODEL, IMAGE);
    CHECK(system(cmd) == 0, "examples/caption runs on the tiny model");
}

int main(void) {
    vlm_error err = {0};
    vlm_engine *e = NULL;
    vlm_engine_params ep = {.n_threads = 2};
    CHECK(vlm_engine_open(&e, MODEL, &ep, &err) == VLM_OK, "%s", err.msg);
    if (!e) TEST_MAIN_END();
    test_stream_and_history(e);
    test_cancel_and_callback_stop(e);
    test_seeds(e);
    test_stop_string(e);
    test_multi_turn_cache(e);
    test_restart_reuse(e);
    test_two_engines(e);
    test_bad_inputs(e);
    test_cli();
    vlm_engine_close(e);
    TEST_MAIN_END();
}
