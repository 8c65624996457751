/* The API's promises to an embedder (tiny Qwen2.5-VL): every call takes
 * err == NULL; a failing call's message is its own (no stale message in a
 * reused vlm_error); cancel and abort stop the vision tower and the prefill
 * within one op and return VLM_ERR_CANCELLED, leaving a session that answers
 * as a fresh one; user text is plain text (special token strings in it are
 * not tokens) unless the session asks to parse them; the version macros. */
#include "test_util.h"
#include "vlm.h"

#define MODEL "tests/data/tiny_qwen"
#define IMAGE "tests/golden/qwen2_5_vl/image.png"


static vlm_generate_params greedy(int n) {
    vlm_generate_params gp = vlm_generate_default();
    gp.sampling.temperature = 0;
    gp.max_tokens = n;
    gp.ignore_eos = 1;
    return gp;
}

/* The answer a fresh session gives to the image and question. */
static void fresh_answer(vlm_engine *e, test_sink *k) {
    vlm_session *s = NULL;
    vlm_generate_params gp = greedy(8);
    memset(k, 0, sizeof *k);
    vlm_session_new(e, NULL, &s, NULL);
    vlm_session_add_image_file(s, IMAGE, NULL);
    vlm_session_add_text(s, "What is in the picture?", NULL);
    CHECK(vlm_session_generate(s, &gp, test_collect, k, NULL, NULL) == VLM_OK && k->len > 0, "fresh answer");
    vlm_session_free(s);
}

static void test_null_err(void) {
    vlm_engine *e = NULL;
    CHECK(vlm_engine_open(&e, "/nonexistent/model", NULL, NULL) == VLM_ERR_IO && !e, "open fails cleanly with err NULL");
    CHECK(vlm_engine_open(&e, MODEL, NULL, NULL) == VLM_OK && e, "open with err NULL");
    if (!e) return;
    vlm_session *s = NULL;
    CHECK(vlm_session_new(e, NULL, &s, NULL) == VLM_OK, "session with err NULL");
    CHECK(vlm_session_add_image_file(s, "/nonexistent.png", NULL) == VLM_ERR_IO, "missing image with err NULL");
    CHECK(vlm_session_add_image_rgb(s, NULL, 0, 0, 0, NULL) != VLM_OK, "empty pixels with err NULL");
    CHECK(vlm_session_generate(s, NULL, NULL, NULL, NULL, NULL) == VLM_ERR_ARG, "nothing to answer with err NULL");
    CHECK(vlm_session_add_text(s, "hi", NULL) == VLM_OK, "text with err NULL");
    vlm_generate_params gp = greedy(2);
    CHECK(vlm_session_generate(s, &gp, NULL, NULL, NULL, NULL) == VLM_OK, "generate with err NULL");
    vlm_session_free(s);
    vlm_engine_close(e);
    vlm_tokenizer *t = NULL;
    CHECK(vlm_tokenizer_load(&t, "/nonexistent", NULL) != VLM_OK, "tokenizer with err NULL");
    vlm_model *m = NULL;
    CHECK(vlm_model_load(&m, "/nonexistent", NULL, NULL) != VLM_OK, "model with err NULL");
    vlm_image img;
    CHECK(vlm_image_load(&img, "/nonexistent.png", NULL) != VLM_OK, "image with err NULL");
}

static void test_fresh_errors(void) {
    vlm_error err = {0};
    vlm_engine *e = NULL;
    vlm_engine_open(&e, "/nonexistent/first", NULL, &err);
    CHECK(strstr(err.msg, "first") != NULL, "first failure: %s", err.msg);
    vlm_status rc = vlm_engine_open(&e, "/nonexistent/second", NULL, &err);
    CHECK(rc == err.code && strstr(err.msg, "second") && !strstr(err.msg, "first"),
          "a reused error names the second failure: %s", err.msg);
    CHECK(vlm_engine_open(&e, MODEL, NULL, &err) == VLM_OK && err.code == VLM_OK && !err.msg[0],
          "a success leaves the error clear (%d: %s)", err.code, err.msg);
    vlm_session *s = NULL;
    vlm_session_new(e, NULL, &s, &err);
    vlm_session_add_image_file(s, "/nonexistent/one.png", &err);
    rc = vlm_session_add_image_file(s, "/nonexistent/two.png", &err);
    CHECK(rc == err.code && strstr(err.msg, "two.png"), "second image failure: %s", err.msg);
    CHECK(vlm_session_add_text(s, "hi", &err) == VLM_OK && err.code == VLM_OK && !err.msg[0],
          "a successful add_text after a failure leaves the error clear (%d: %s)", err.code, err.msg);
    /* inside the library an error keeps its first cause (a loader checks once at the end) */
    vlm_error e2 = {0};
    vlm_error_set(&e2, VLM_ERR_IO, "first cause");
    CHECK(vlm_error_set(&e2, VLM_ERR_FORMAT, "a consequence") == VLM_ERR_FORMAT && e2.code == VLM_ERR_IO &&
              !strcmp(e2.msg, "first cause"),
          "vlm_error_set keeps the first error: %d %s", e2.code, e2.msg);
    vlm_session_free(s);
    vlm_engine_close(e);
}

typedef struct {
    int calls, stop_at;
} abort_count;

static int abort_after(void *user) {
    abort_count *a = (abort_count *)user;
    return ++a->calls >= a->stop_at;
}

static void test_cancel(vlm_engine *e) {
    test_sink want, k;
    fresh_answer(e, &want);
    vlm_error err = {0};
    vlm_session *s = NULL;
    vlm_session_new(e, NULL, &s, &err);
    vlm_session_add_image_file(s, IMAGE, &err);
    vlm_session_add_text(s, "What is in the picture?", &err);

    /* cancelled before the call: nothing is computed */
    vlm_generate_params gp = greedy(8);
    volatile int cancel = 1;
    gp.cancel = &cancel;
    vlm_generate_stats st;
    memset(&k, 0, sizeof k);
    vlm_status rc = vlm_session_generate(s, &gp, test_collect, &k, &st, &err);
    CHECK(rc == VLM_ERR_CANCELLED && err.code == VLM_ERR_CANCELLED && st.stop == VLM_STOP_CANCEL,
          "cancel before the call: %s, stop %d", vlm_status_name(rc), st.stop);
    CHECK(st.n_images_encoded == 0 && st.n_generated == 0 && k.calls == 0, "nothing computed (%d images, %d tokens)",
          st.n_images_encoded, st.n_generated);

    /* an abort callback stops the vision tower within one op */
    gp.cancel = NULL;
    abort_count ac = {0, 5};
    gp.abort = abort_after;
    gp.abort_user = &ac;
    rc = vlm_session_generate(s, &gp, test_collect, &k, &st, &err);
    CHECK(rc == VLM_ERR_CANCELLED && ac.calls == 5 && st.n_images_encoded == 0 && k.calls == 0,
          "abort on the 5th look: %s after %d looks, %d images encoded", vlm_status_name(rc), ac.calls,
          st.n_images_encoded);

    /* ... and the prefill: a count past the vision tower, short of the answer */
    ac = (abort_count){0, 1 << 30};
    test_sink probe = {0};
    vlm_session *s2 = NULL;
    vlm_session_new(e, NULL, &s2, &err);
    vlm_session_add_image_file(s2, IMAGE, &err);
    vlm_session_add_text(s2, "What is in the picture?", &err);
    vlm_generate_params g1 = greedy(1);
    g1.abort = abort_after;
    g1.abort_user = &ac;
    vlm_session_generate(s2, &g1, test_collect, &probe, NULL, &err);
    vlm_session_free(s2);
    int looks_one_token = ac.calls;
    ac = (abort_count){0, looks_one_token - 3};
    rc = vlm_session_generate(s, &gp, test_collect, &k, &st, &err);
    CHECK(rc == VLM_ERR_CANCELLED && st.n_generated == 0 && k.calls == 0,
          "abort in the last layers of the prefill (%d of %d looks): %s", ac.calls, looks_one_token,
          vlm_status_name(rc));

    /* the session is intact: the pending question gets the fresh answer */
    gp.abort = NULL;
    memset(&k, 0, sizeof k);
    rc = vlm_session_generate(s, &gp, test_collect, &k, &st, &err);
    CHECK(rc == VLM_OK && !strcmp(k.text, want.text), "after the aborts the answer is the fresh one:\n  %s\n  %s",
          k.text, want.text);

    /* a cancel while decoding keeps what was streamed as the answer */
    vlm_session_add_text(s, "And then?", &err);
    cancel = 0;
    gp.cancel = &cancel;
    memset(&k, 0, sizeof k);
    k.cancel_on_first = &cancel;
    rc = vlm_session_generate(s, &gp, test_collect, &k, &st, &err);
    CHECK(rc == VLM_ERR_CANCELLED && st.stop == VLM_STOP_CANCEL && st.n_generated >= 1 && st.n_generated < 8,
          "cancel while decoding: %s after %d tokens", vlm_status_name(rc), st.n_generated);
    gp.cancel = NULL;
    vlm_session_add_text(s, "Go on.", &err);
    CHECK(vlm_session_generate(s, &gp, test_collect, &(test_sink){0}, NULL, &err) == VLM_OK, "next turn after a cancel: %s",
          err.msg);
    vlm_session_free(s);
}

static int count_id(const int32_t *ids, int n, int32_t id) {
    int c = 0;
    for (int i = 0; i < n; i++) c += ids[i] == id;
    return c;
}

static void test_plain_text(vlm_engine *e) {
    const vlm_tokenizer *tok = vlm_engine_tokenizer(e);
    int32_t im_end = vlm_token_id(tok, "<|im_end|>"), pad = vlm_token_id(tok, "<|image_pad|>");
    const char *text = "Say <|im_end|> and <|image_pad|> \x1a twice.";
    vlm_error err = {0};
    vlm_session *s = NULL;
    vlm_session_new(e, NULL, &s, &err);
    vlm_session_add_text(s, text, &err);
    vlm_generate_params gp = greedy(3);
    vlm_status rc = vlm_session_generate(s, &gp, test_collect, &(test_sink){0}, NULL, &err);
    CHECK(rc == VLM_OK, "special token strings in user text are text: %s", err.msg);
    int n = 0;
    const int32_t *ids = vlm_session_tokens(s, &n);
    /* the template's own turn ends only: system, user (and no image token) */
    CHECK(count_id(ids, n, pad) == 0, "no image token from the user's text");
    int ends = count_id(ids, n, im_end);
    /* the user's text appears as its plain tokenization, in place */
    vlm_tokens plain = {0};
    vlm_tokenize(tok, text, strlen(text), VLM_TOK_NO_PARSE_SPECIAL, &plain, &err);
    int found = 0;
    for (int i = 0; i + plain.n <= n && !found; i++)
        found = !memcmp(ids + i, plain.ids, sizeof(int32_t) * (size_t)plain.n);
    CHECK(found, "the user's text is tokenized as plain text (%d tokens)", plain.n);
    vlm_tokens_free(&plain);
    vlm_session_free(s);

    /* the same text with no special strings: as many turn ends */
    vlm_session_new(e, NULL, &s, &err);
    vlm_session_add_text(s, "Say it and that \x1a twice.", &err);
    vlm_session_generate(s, &gp, test_collect, &(test_sink){0}, NULL, &err);
    ids = vlm_session_tokens(s, &n);
    CHECK(count_id(ids, n, im_end) == ends, "turn ends come from the template only (%d vs %d)", ends,
          count_id(ids, n, im_end));
    vlm_session_free(s);

    /* parse_special: the strings are the tokens (as transformers does) */
    vlm_session_params sp = {.parse_special = 1};
    vlm_session_new(e, &sp, &s, &err);
    vlm_session_add_text(s, text, &err);
    rc = vlm_session_generate(s, &gp, test_collect, &(test_sink){0}, NULL, &err);
    CHECK(rc != VLM_OK && strstr(err.msg, "placeholders"),
          "parsed, <|image_pad|> claims an image that is not there: %s", err.msg);
    vlm_session_free(s);
}

/* After "the answer filled the context" the question is still pending; a
 * retry must start from the prompt's own logits (recomputing at least its
 * last token), not from what the failed call left behind. */
static void test_retry_after_context(vlm_engine *e) {
    int vocab = vlm_engine_model(e)->vocab_size;
    vlm_error err = {0};
    vlm_session *fresh = NULL, *s = NULL;
    vlm_generate_params one = greedy(1), many = greedy(40);
    vlm_generate_stats st;
    vlm_session_new(e, NULL, &fresh, &err);
    vlm_session_add_image_file(fresh, IMAGE, &err);
    vlm_session_add_text(fresh, "What is in the picture?", &err);
    CHECK(vlm_session_generate(fresh, &one, test_collect, &(test_sink){0}, &st, &err) == VLM_OK, "%s", err.msg);
    vlm_session_params sp = {.n_ctx = st.n_prompt + 4};
    vlm_session_new(e, &sp, &s, &err);
    vlm_session_add_image_file(s, IMAGE, &err);
    vlm_session_add_text(s, "What is in the picture?", &err);
    CHECK(vlm_session_generate(s, &many, test_collect, &(test_sink){0}, NULL, &err) == VLM_ERR_CONTEXT,
          "the answer fills a context of %d: %s", sp.n_ctx, err.msg);
    CHECK(vlm_session_generate(s, &one, test_collect, &(test_sink){0}, &st, &err) == VLM_OK, "retry: %s", err.msg);
    float d = test_max_abs_diff(vlm_session_logits(s), vlm_session_logits(fresh), vocab);
    CHECK(st.n_prompt_computed >= 1 && d < 1e-4f, "retry after a full context: %d tokens computed, logits differ by %g",
          st.n_prompt_computed, d);
    vlm_session_free(s);
    vlm_session_free(fresh);
}

/* A model folder's chat template is a program: a runaway one ends the call
 * with VLM_ERR_LIMIT, and the budgets can be set through the engine. */
static void test_template_budget(void) {
    TEST_NEEDS_SHELL("a copy of the tiny model made with cp and ln");
    if (system("rm -rf build/runaway && mkdir -p build/runaway && cp " MODEL "/*.json build/runaway/ && "
               "ln -sf ../../" MODEL "/model.safetensors build/runaway/model.safetensors") != 0) {
        CHECK(0, "copy the tiny model");
        return;
    }
    vlm_error err = {0};
    FILE *f = fopen("build/runaway/chat_template.jinja", "w"); /* takes precedence over tokenizer_config.json */
    if (f) {
        fputs("{% for i in range(100000) %}{% for j in range(100000) %}hello{% endfor %}{% endfor %}", f);
        fclose(f);
    }
    vlm_engine *e = NULL;
    CHECK(vlm_engine_open(&e, "build/runaway", NULL, &err) == VLM_OK, "%s", err.msg);
    if (!e) return;
    vlm_session *s = NULL;
    vlm_session_new(e, NULL, &s, &err);
    vlm_session_add_text(s, "hi", &err);
    vlm_generate_params gp = greedy(2);
    CHECK(vlm_session_generate(s, &gp, NULL, NULL, NULL, &err) == VLM_ERR_LIMIT && strstr(err.msg, "vlm_limits."),
          "a runaway chat template: %s", err.msg);
    vlm_session_free(s);
    vlm_engine_close(e);
    /* the budgets through the engine: the tiny model's own template in 50 steps does not fit */
    vlm_limits tight = {.template_steps = 50};
    vlm_engine_params ep = {.n_threads = 1, .limits = &tight};
    CHECK(vlm_engine_open(&e, MODEL, &ep, &err) == VLM_OK, "%s", err.msg);
    if (!e) return;
    vlm_session_new(e, NULL, &s, &err);
    vlm_session_add_text(s, "hi", &err);
    CHECK(vlm_session_generate(s, &gp, NULL, NULL, NULL, &err) == VLM_ERR_LIMIT && strstr(err.msg, "template_steps"),
          "a 50-step template budget: %s", err.msg);
    vlm_session_free(s);
    vlm_engine_close(e);
}

static void test_version(void) {
    char v[32];
    snprintf(v, sizeof v, "%d.%d.%d", VLM_VERSION_MAJOR, VLM_VERSION_MINOR, VLM_VERSION_PATCH);
    CHECK(!strcmp(v, VLM_VERSION_STRING) && !strcmp(vlm_version(), VLM_VERSION_STRING), "version %s / %s / %s", v,
          VLM_VERSION_STRING, vlm_version());
}

/* A decompression bomb: a PNG whose header claims 30000 x 30000 pixels
 * (2.7 GB of RGB) is refused from its header, before any allocation; the
 * budget is the engine's (vlm_limits.image_pixels) for images added to a
 * session, decoded or raw. */
static void put_be32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24); p[1] = (unsigned char)(v >> 16); p[2] = (unsigned char)(v >> 8); p[3] = (unsigned char)v;
}
static void test_image_budget(void) {
    unsigned char png[8 + 25 + 13 + 12];
    memcpy(png, "\x89PNG\r\n\x1a\n", 8);
    put_be32(png + 8, 13);
    memcpy(png + 12, "IHDR", 4);
    put_be32(png + 16, 30000);
    put_be32(png + 20, 30000);
    memcpy(png + 24, "\x08\x02\x00\x00\x00", 5); /* 8-bit RGB */
    put_be32(png + 29, 0);                            /* CRC (stb does not check it) */
    put_be32(png + 33, 1);                            /* one byte of IDAT, then IEND */
    memcpy(png + 37, "IDAT", 4);
    png[41] = 0x78;
    put_be32(png + 42, 0);
    put_be32(png + 46, 0);
    memcpy(png + 50, "IEND", 4);
    put_be32(png + 54, 0);
    vlm_error err = {0};
    vlm_image img;
    double t0 = vlm_time_s();
    vlm_status st = vlm_image_decode(&img, png, sizeof png, &err);
    CHECK(st == VLM_ERR_LIMIT && strstr(err.msg, "30000x30000") && strstr(err.msg, "image_pixels") && vlm_time_s() - t0 < 0.1,
          "30000x30000 PNG header: %s (%s)", vlm_status_name(st), err.msg);
    CHECK(vlm_image_decode_limited(&img, png, sizeof png, (int64_t)1 << 40, &err) != VLM_OK && err.code != VLM_ERR_LIMIT,
          "over the budget raised, the same file fails as the corrupt image it is: %s", err.msg);
    /* the engine's budget, set small: a real image and raw pixels over it are refused */
    vlm_limits lim = {.image_pixels = 1000};
    vlm_engine_params ep = {.n_threads = 1, .limits = &lim};
    vlm_engine *e = NULL;
    vlm_session *s = NULL;
    if (vlm_engine_open(&e, MODEL, &ep, &err) != VLM_OK || vlm_session_new(e, NULL, &s, &err) != VLM_OK) {
        CHECK(0, "open %s: %s", MODEL, err.msg);
        vlm_engine_close(e);
        return;
    }
    st = vlm_session_add_image_file(s, "tests/golden/qwen2_5_vl/image.png", &err);
    CHECK(st == VLM_ERR_LIMIT && strstr(err.msg, "image_pixels"), "file over the engine's budget: %s", err.msg);
    static uint8_t rgb[40 * 30 * 3];
    st = vlm_session_add_image_rgb(s, rgb, 40, 30, 40 * 3, &err);
    CHECK(st == VLM_ERR_LIMIT, "raw pixels over the engine's budget: %s", err.msg);
    CHECK(vlm_session_add_image_rgb(s, rgb, 20, 30, 20 * 3, &err) == VLM_OK, "600 pixels fit: %s", err.msg);
    vlm_session_free(s);
    vlm_engine_close(e);
}

/* A config.json that lies: each edit (a sed expression on the tiny model's
 * config) must fail engine_open with a one-line error naming the key,
 * before any allocation sized by the lie. */
static void test_config_lies(void) {
    TEST_NEEDS_SHELL("configs edited with sed");
    static const struct { const char *sed, *want; vlm_status code; } cases[] = {
        {"s/\"num_hidden_layers\": 2/\"num_hidden_layers\": 1000000000/", "num_hidden_layers", VLM_ERR_CONFIG},
        {"s/\"num_hidden_layers\": 2/\"num_hidden_layers\": 3/", "layers.2", VLM_ERR_FORMAT},
        {"s/\"hidden_size\": 64/\"hidden_size\": 4611686018427387904/", "hidden_size", VLM_ERR_CONFIG},
        {"s/\"hidden_size\": 64/\"hidden_size\": 80/", "", VLM_ERR_CONFIG}, /* M-RoPE sections vs head_dim */
        {"s/\"vocab_size\": 1024/\"vocab_size\": 2048/", "embed_tokens", VLM_ERR_FORMAT},
        {"s/\"depth\": 4/\"depth\": 100000000/", "depth", VLM_ERR_CONFIG},
        /* 2^32 + 4 would be 4 as an int: the model would load as if nothing were wrong */
        {"s/\"depth\": 4/\"depth\": 4294967300/", "depth", VLM_ERR_CONFIG},
        {"s/\"hidden_size\": 32/\"hidden_size\": 32.5/", "hidden_size", VLM_ERR_CONFIG},
        {"s/\"hidden_size\": 32/\"hidden_size\": 48/", "patch_embed", VLM_ERR_FORMAT},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char cmd[1024];
        snprintf(cmd, sizeof cmd,
                 "rm -rf build/lie && mkdir -p build/lie && cp " MODEL "/*.json build/lie/ && "
                 "ln -sf ../../" MODEL "/model.safetensors build/lie/model.safetensors && sed -i '%s' build/lie/config.json && "
                 "! cmp -s build/lie/config.json " MODEL "/config.json",
                 cases[i].sed);
        if (system(cmd) != 0) {
            CHECK(0, "edit the config with %s", cases[i].sed);
            continue;
        }
        vlm_error err = {0};
        vlm_engine *e = NULL;
        vlm_status st = vlm_engine_open(&e, "build/lie", NULL, &err);
        CHECK(st != VLM_OK && !e && st == cases[i].code && strstr(err.msg, cases[i].want) && !strchr(err.msg, '\n'),
              "%s: %s (%s)", cases[i].sed, vlm_status_name(st), err.msg);
        vlm_engine_close(e);
    }
}

int main(void) {
    test_null_err();
    test_config_lies();
    test_image_budget();
    test_fresh_errors();
    test_version();
    test_template_budget();
    vlm_engine *e = NULL;
    vlm_engine_params ep = {.n_threads = 2};
    if (vlm_engine_open(&e, MODEL, &ep, NULL) != VLM_OK) { CHECK(0, "open %s", MODEL); TEST_MAIN_END(); }
    test_cancel(e);
    test_plain_text(e);
    test_retry_after_context(e);
    vlm_engine_close(e);
    TEST_MAIN_END();
}
