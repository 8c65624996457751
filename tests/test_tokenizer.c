/* Tokenizers against HF `tokenizers` references on the real vocabularies of
 * Qwen3 (Qwen2.5-VL / Qwen3-VL / InternVL3), Gemma 3 and SmolVLM; chat
 * templates of the real checkpoints rendered byte for byte; malformed
 * tokenizer.json files; invalid UTF-8; streaming decode; encoding speed.
 * Data: tests/data/tok/ (tokenizer.json files gzipped; unpacked with gzip -dc). */
#include "vlm.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DATA "tests/data/tok/"

static char *read_all(FILE *f, size_t *len) {
    size_t cap = 1 << 20, n = 0;
    char *p = malloc(cap);
    size_t r;
    while (p && (r = fread(p + n, 1, cap - n - 1, f)) > 0) {
        n += r;
        if (n + 1 >= cap) { cap *= 2; p = realloc(p, cap); }
    }
    if (p) p[n] = 0;
    *len = n;
    return p;
}

static char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *p = read_all(f, len);
    fclose(f);
    return p;
}

static vlm_tokenizer *load_tok(const char *name) {
    char cmd[256], cfgp[256];
    snprintf(cmd, sizeof cmd, "gzip -dc " DATA "%s/tokenizer.json.gz", name);
    FILE *f = popen(cmd, "r");
    if (!f) return NULL;
    size_t len, clen = 0;
    char *json = read_all(f, &len);
    pclose(f);
    snprintf(cfgp, sizeof cfgp, DATA "%s/tokenizer_config.json", name);
    char *cfg = read_file(cfgp, &clen);
    vlm_tokenizer *t = NULL;
    vlm_error err = {0};
    clock_t t0 = clock();
    vlm_status st = vlm_tokenizer_load_mem(&t, json, len, cfg, clen, &err);
    printf("loaded %s: %d ids in %.2f s\n", name, t ? vlm_tokenizer_n_vocab(t) : 0, (double)(clock() - t0) / CLOCKS_PER_SEC);
    CHECK(st == VLM_OK, "load %s: %s", name, err.msg);
    free(json);
    free(cfg);
    return t;
}

static int ids_equal(const vlm_tokens *got, const vlm_json *want) {
    if (!want || want->type != VLM_JSON_ARRAY || want->n != got->n) return 0;
    for (int i = 0; i < got->n; i++) if (vlm_json_int(&want->items[i], -1) != got->ids[i]) return 0;
    return 1;
}

static void print_ids(const char *what, const vlm_tokens *t, const vlm_json *want) {
    fprintf(stderr, "  %s got :", what);
    for (int i = 0; i < t->n && i < 40; i++) fprintf(stderr, " %d", t->ids[i]);
    fprintf(stderr, "\n  %s want:", what);
    for (int i = 0; want && i < want->n && i < 40; i++) fprintf(stderr, " %lld", (long long)vlm_json_int(&want->items[i], -1));
    fprintf(stderr, "\n");
}

static void test_golden(const char *name) {
    vlm_tokenizer *t = load_tok(name);
    if (!t) return;
    char path[256];
    snprintf(path, sizeof path, DATA "golden/%s.json", name);
    vlm_error err = {0};
    vlm_json *g = vlm_json_load(path, &err);
    CHECK(g != NULL, "%s: %s", path, err.msg);
    const vlm_json *cases = vlm_json_get(g, "cases");
    int n_ok = 0;
    for (int i = 0; cases && i < cases->n; i++) {
        const vlm_json *c = &cases->items[i];
        const vlm_json *text = vlm_json_get(c, "text");
        vlm_tokens a = {0}, b = {0};
        CHECK(vlm_tokenize(t, text->str, (size_t)text->n, 0, &a, &err) == VLM_OK, "%s", err.msg);
        CHECK(vlm_tokenize(t, text->str, (size_t)text->n, VLM_TOK_ADD_SPECIAL, &b, &err) == VLM_OK, "%s", err.msg);
        int ok1 = ids_equal(&a, vlm_json_get(c, "ids")), ok2 = ids_equal(&b, vlm_json_get(c, "ids_with_special"));
        CHECK(ok1, "%s case %d ids differ for \"%.60s\"", name, i, text->str);
        if (!ok1) print_ids("ids", &a, vlm_json_get(c, "ids"));
        CHECK(ok2, "%s case %d ids_with_special differ for \"%.60s\"", name, i, text->str);
        const vlm_json *dec = vlm_json_get(c, "decoded");
        int ok3 = 1;
        if (dec) {
            char *s = NULL;
            size_t sl = 0;
            CHECK(vlm_detokenize(t, a.ids, a.n, 0, &s, &sl, &err) == VLM_OK, "%s", err.msg);
            ok3 = s && sl == (size_t)dec->n && !memcmp(s, dec->str, sl);
            CHECK(ok3, "%s case %d decoded \"%s\" want \"%s\"", name, i, s ? s : "(null)", dec->str);
            /* Streaming decode gives the same text. */
            vlm_detok_stream ds;
            vlm_detok_stream_init(&ds, t, 0);
            char acc[4096];
            size_t al = 0, pl;
            for (int k = 0; k < a.n; k++) {
                const char *piece = vlm_detok_stream_push(&ds, a.ids[k], &pl);
                if (al + pl < sizeof acc) { memcpy(acc + al, piece, pl); al += pl; }
            }
            const char *rest = vlm_detok_stream_flush(&ds, &pl);
            if (al + pl < sizeof acc) { memcpy(acc + al, rest, pl); al += pl; }
            vlm_detok_stream_free(&ds);
            CHECK(s && al == sl && !memcmp(acc, s, sl), "%s case %d streaming decode differs", name, i);
            free(s);
        }
        n_ok += ok1 && ok2 && ok3;
        vlm_tokens_free(&a);
        vlm_tokens_free(&b);
    }
    printf("%s: %d/%d cases identical\n", name, n_ok, cases ? cases->n : 0);
    /* Chat templates from tokenizer_config.json. */
    const vlm_json *chat = vlm_json_get(g, "chat");
    for (int i = 0; chat && i < chat->n; i++) {
        const vlm_json *c = &chat->items[i];
        vlm_tokenizer_info info = vlm_tokenizer_get_info(t);
        vlm_chat_opts o = {0};
        o.add_generation_prompt = 1;
        o.bos_token = info.bos_token;
        o.eos_token = info.eos_token;
        char *out = NULL;
        vlm_error_clear(&err);
        vlm_status st = vlm_chat_render_json(info.chat_template, vlm_json_get(c, "messages"), NULL, &o, &out, &err);
        CHECK(st == VLM_OK, "%s chat %d: %s", name, i, err.msg);
        const vlm_json *want = vlm_json_get(c, "rendered");
        CHECK(out && !strcmp(out, want->str), "%s chat %d rendered:\n%s\nwant:\n%s", name, i, out ? out : "", want->str);
        vlm_tokens ids = {0};
        if (out) vlm_tokenize(t, out, strlen(out), 0, &ids, &err);
        CHECK(ids_equal(&ids, vlm_json_get(c, "ids")), "%s chat %d ids differ", name, i);
        vlm_tokens_free(&ids);
        free(out);
    }
    vlm_json_free(g);
    vlm_tokenizer_free(t);
}

static void test_chat_templates(void) {
    vlm_error err = {0};
    vlm_json *g = vlm_json_load(DATA "golden/chat_templates.json", &err);
    CHECK(g != NULL, "chat_templates.json: %s", err.msg);
    for (int m = 0; g && m < g->n; m++) {
        const vlm_json *model = &g->items[m];
        char path[256];
        snprintf(path, sizeof path, DATA "templates/%s.jinja", model->key);
        size_t len;
        char *tpl = read_file(path, &len);
        CHECK(tpl != NULL, "missing %s", path);
        if (!tpl) continue;
        const char *tokname = vlm_json_str(vlm_json_get(model, "tokenizer"), "");
        const vlm_json *cases = vlm_json_get(model, "cases");
        for (int i = 0; cases && i < cases->n; i++) {
            const vlm_json *c = &cases->items[i];
            vlm_chat_opts o = {0};
            o.add_generation_prompt = 1;
            o.bos_token = !strcmp(tokname, "gemma3") ? "<bos>" : !strcmp(tokname, "smolvlm") ? "<|im_start|>" : "";
            o.eos_token = "";
            char *out = NULL;
            vlm_error_clear(&err);
            vlm_status st = vlm_chat_render_json(tpl, vlm_json_get(c, "messages"), NULL, &o, &out, &err);
            CHECK(st == VLM_OK, "%s case %d: %s", model->key, i, err.msg);
            const char *want = vlm_json_str(vlm_json_get(c, "rendered"), "");
            CHECK(out && !strcmp(out, want), "%s case %d rendered:\n%s\nwant:\n%s", model->key, i, out ? out : "", want);
            free(out);
        }
        free(tpl);
    }
    vlm_json_free(g);
}

static void expect_load_error(const char *json, vlm_status code, const char *what) {
    vlm_tokenizer *t = NULL;
    vlm_error err = {0};
    vlm_status st = vlm_tokenizer_load_mem(&t, json, strlen(json), NULL, 0, &err);
    CHECK(st == code && t == NULL, "load of %.60s: status %d (%s), want %d", json, st, err.msg, code);
    CHECK(strstr(err.msg, what) != NULL, "error '%s' lacks '%s'", err.msg, what);
    vlm_tokenizer_free(t);
}

static void test_malformed(void) {
    expect_load_error("{\"version\": \"1.0\"}", VLM_ERR_FORMAT, "missing \"model\"");
    expect_load_error("[1, 2]", VLM_ERR_FORMAT, "not a JSON object");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1}, \"merges\": [\"a b\"]}}", VLM_ERR_FORMAT, "missing from the vocab");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2}, \"merges\": [\"a b c\"]}}", VLM_ERR_FORMAT, "two tokens");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": [[\"a\"]]}}", VLM_ERR_FORMAT, "merge 0");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": 3}}", VLM_ERR_FORMAT, "merges");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"x\"}, \"merges\": []}}", VLM_ERR_FORMAT, "valid id");
    expect_load_error("{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", VLM_ERR_UNSUPPORTED, "Unigram");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Bogus\"}}",
                      VLM_ERR_UNSUPPORTED, "Bogus");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"normalizer\": {\"type\": \"NFKD\"}}",
                      VLM_ERR_UNSUPPORTED, "NFKD");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"pre_tokenizer\": {\"type\": \"Split\", "
                      "\"pattern\": {\"Regex\": \"[a-z]+\"}, \"behavior\": \"Isolated\"}}", VLM_ERR_UNSUPPORTED, "regex");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, \"decoder\": {\"type\": \"WordPiece\"}}",
                      VLM_ERR_UNSUPPORTED, "WordPiece");
    expect_load_error("{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}", VLM_ERR_FORMAT, "line");
    vlm_tokenizer *t = NULL;
    vlm_error err = {0};
    CHECK(vlm_tokenizer_load(&t, "/nonexistent/dir", &err) == VLM_ERR_IO && strstr(err.msg, "tokenizer.json"), "missing file: %s", err.msg);
}

static void test_invalid_utf8(vlm_tokenizer *q, vlm_tokenizer *g) {
    static const char bad[] = "ok \xff\xfe bad \xc3 trunc \xe2\x82 x \xed\xa0\x80 sur \xf0\x9f\x98";
    vlm_tokenizer *toks[2] = {q, g};
    for (int k = 0; k < 2; k++) {
        if (!toks[k]) continue;
        vlm_tokens ids = {0};
        vlm_error err = {0};
        CHECK(vlm_tokenize(toks[k], bad, sizeof bad - 1, 0, &ids, &err) == VLM_OK, "invalid UTF-8: %s", err.msg);
        CHECK(ids.n > 0, "no ids for invalid UTF-8");
        /* The bytes round-trip: decoding gives U+FFFD where the input was invalid. */
        char *s = NULL;
        size_t n = 0;
        CHECK(vlm_detokenize(toks[k], ids.ids, ids.n, 0, &s, &n, &err) == VLM_OK, "%s", err.msg);
        CHECK(s && strstr(s, "ok ") == s && strstr(s, "\xef\xbf\xbd") && strstr(s, " bad "), "decoded invalid: %s", s ? s : "");
        free(s);
        /* Random bytes: always encodes, and the ids decode. */
        unsigned long long seed = 99;
        int bad_rand = 0;
        for (int c = 0; c < 200; c++) {
            unsigned char rb[96];
            int rn = 1 + c % 95;
            for (int q = 0; q < rn; q++) rb[q] = (unsigned char)((test_randf(&seed) + 1) * 128);
            vlm_tokens r = {0};
            char *rs = NULL;
            size_t rl;
            if (vlm_tokenize(toks[k], (const char *)rb, (size_t)rn, VLM_TOK_ADD_SPECIAL, &r, &err) != VLM_OK || r.n == 0 ||
                vlm_detokenize(toks[k], r.ids, r.n, 0, &rs, &rl, &err) != VLM_OK)
                bad_rand++;
            free(rs);
            vlm_tokens_free(&r);
        }
        CHECK(bad_rand == 0, "%d random byte strings failed", bad_rand);
        int32_t badid = vlm_tokenizer_n_vocab(toks[k]) + 5;
        CHECK(vlm_detokenize(toks[k], &badid, 1, 0, &s, &n, &err) == VLM_ERR_ARG, "out-of-range id accepted");
        vlm_tokens_free(&ids);
    }
}

/* Gemma's ByteFallback decoder: a run of <0xNN> tokens is UTF-8 as a whole, or
 * one U+FFFD per byte when it is not (HF tokenizers' ByteFallback). */
static void test_byte_fallback(vlm_tokenizer *g) {
    int32_t e2 = vlm_token_id(g, "<0xE2>"), x82 = vlm_token_id(g, "<0x82>"), xac = vlm_token_id(g, "<0xAC>"), a = vlm_token_id(g, "A");
    CHECK(e2 >= 0 && x82 >= 0 && xac >= 0 && a >= 0, "byte tokens missing");
    int32_t ok_ids[4] = {a, e2, x82, xac}, bad_ids[4] = {e2, x82, a, e2};
    char *s = NULL;
    size_t n;
    vlm_error err = {0};
    vlm_detokenize(g, ok_ids, 4, 0, &s, &n, &err);
    CHECK(s && !strcmp(s, "A\xe2\x82\xac"), "valid run: %s", s);
    free(s);
    vlm_detokenize(g, bad_ids, 4, 0, &s, &n, &err);
    CHECK(s && !strcmp(s, "\xef\xbf\xbd\xef\xbf\xbd" "A" "\xef\xbf\xbd"), "invalid runs: %s", s);
    free(s);
    /* Streaming gives the same text. */
    vlm_detok_stream ds;
    vlm_detok_stream_init(&ds, g, 0);
    char acc[64] = {0};
    size_t al = 0, pl;
    for (int i = 0; i < 4; i++) { const char *p = vlm_detok_stream_push(&ds, bad_ids[i], &pl); memcpy(acc + al, p, pl); al += pl; }
    const char *p = vlm_detok_stream_flush(&ds, &pl);
    memcpy(acc + al, p, pl);
    CHECK(!strcmp(acc, "\xef\xbf\xbd\xef\xbf\xbd" "A" "\xef\xbf\xbd"), "streamed invalid runs: %s", acc);
    vlm_detok_stream_free(&ds);
}

static void test_streaming(vlm_tokenizer *t) {
    /* "😀" is split over several byte-level tokens: nothing is emitted until complete. */
    const char *text = "a\xf0\x93\x80\x80" "b"; /* U+13000 EGYPTIAN HIEROGLYPH A001 */
    vlm_tokens ids = {0};
    vlm_error err = {0};
    vlm_tokenize(t, text, strlen(text), 0, &ids, &err);
    vlm_detok_stream ds;
    vlm_detok_stream_init(&ds, t, 0);
    char acc[64] = {0};
    size_t al = 0, pl;
    int partial_ok = 1;
    for (int i = 0; i < ids.n; i++) {
        const char *p = vlm_detok_stream_push(&ds, ids.ids[i], &pl);
        for (size_t k = 0; k < pl; k++) if ((unsigned char)p[k] == 0xEF && (unsigned char)p[k + 1] == 0xBF) partial_ok = 0;
        memcpy(acc + al, p, pl);
        al += pl;
    }
    vlm_detok_stream_flush(&ds, &pl);
    CHECK(pl == 0, "nothing should be pending");
    CHECK(partial_ok && !strcmp(acc, text), "streamed '%s'", acc);
    CHECK(ids.n >= 3, "emoji should need several tokens (%d)", ids.n);
    vlm_detok_stream_free(&ds);
    /* A dangling partial sequence is flushed as U+FFFD. */
    vlm_detok_stream_init(&ds, t, 0);
    vlm_detok_stream_push(&ds, ids.ids[1], &pl); /* first bytes of the emoji (token after "a") */
    const char *f = vlm_detok_stream_flush(&ds, &pl);
    CHECK(pl >= 3 && !memcmp(f, "\xef\xbf\xbd", 3), "flush of a partial sequence");
    vlm_detok_stream_free(&ds);
    vlm_tokens_free(&ids);
}

static void test_speed(vlm_tokenizer *t, const char *name) {
    static const char *const parts[] = {
        "The quick brown fox jumps over the lazy dog. ", "naïve café résumé, Ünïcödé straße. ",
        "日本語のテキストです。中文分词测试：你好，世界！ ", "Привет, мир! مرحبا بالعالم ",
        "code: for (int i = 0; i < n; ++i) { x[i] += 1; }\n", "numbers 1234567890 3.14159\n\n",
        "emoji 😀👍🏽🇫🇷 ", "    indented line\twith tabs\r\n"};
    size_t cap = (1 << 20) + 256, n = 0;
    char *buf = malloc(cap);
    for (int k = 0; n + 200 < (1 << 20); k++) {
        const char *p = parts[(k * 7 + k / 3) % 8];
        size_t l = strlen(p);
        memcpy(buf + n, p, l);
        n += l;
    }
    vlm_tokens ids = {0};
    vlm_error err = {0};
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    vlm_status st = vlm_tokenize(t, buf, n, 0, &ids, &err);
    clock_gettime(CLOCK_MONOTONIC, &b);
    double s = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    CHECK(st == VLM_OK, "%s", err.msg);
    printf("speed %s: %.2f MB mixed text -> %d ids in %.3f s (%.1f MB/s)\n", name, (double)n / 1e6, ids.n, s, (double)n / 1e6 / s);
#if defined(__SANITIZE_ADDRESS__)
    double limit = 20.0; /* sanitizer builds are several times slower */
#else
    double limit = 2.0;
#endif
    CHECK(s < limit, "%s: encoding 1 MB took %.2f s", name, s);
    /* Round trip of the whole text. */
    char *dec = NULL;
    size_t dl = 0;
    vlm_detokenize(t, ids.ids, ids.n, 0, &dec, &dl, &err);
    CHECK(dec && dl == n && !memcmp(dec, buf, n), "%s: 1 MB round trip differs", name);
    free(dec);
    vlm_tokens_free(&ids);
    free(buf);
}

/* Random valid UTF-8 round-trips: decode(encode(s)) == s (NFC(s) for Qwen). */
static void test_roundtrip_fuzz(vlm_tokenizer *t, const char *name, int nfc) {
    unsigned long long seed = 1234;
    static const unsigned ranges[][2] = {{0x20, 0x7E}, {0x09, 0x0D}, {0xA0, 0x24F}, {0x300, 0x36F}, {0x370, 0x3FF}, {0x400, 0x4FF},
                                         {0x590, 0x6FF}, {0x900, 0x97F}, {0xE00, 0xE7F}, {0x1100, 0x11FF}, {0x2000, 0x206F},
                                         {0x3000, 0x30FF}, {0x4E00, 0x4FFF}, {0xAC00, 0xACFF}, {0x1F300, 0x1F64F}, {0x20000, 0x2001F}};
    int bad = 0, n_cases = 300;
    for (int c = 0; c < n_cases; c++) {
        char s[512];
        int n = 0, len = 1 + (int)((test_randf(&seed) + 1) * 40);
        for (int k = 0; k < len; k++) {
            int r = (int)((test_randf(&seed) + 1) * 8) % 16;
            if (test_randf(&seed) < 0) r = 0; /* mostly ASCII */
            unsigned lo = ranges[r][0], hi = ranges[r][1];
            unsigned cp = lo + (unsigned)((test_randf(&seed) + 1) * 0.5 * (hi - lo + 1)) % (hi - lo + 1);
            if (cp >= 0xD800 && cp < 0xE000) cp = 'x';
            if (cp == 0x2581) cp = 'y'; /* Gemma's decoder turns U+2581 into a space */
            if (cp < 0x80) s[n++] = (char)cp;
            else if (cp < 0x800) { s[n++] = (char)(0xC0 | (cp >> 6)); s[n++] = (char)(0x80 | (cp & 63)); }
            else if (cp < 0x10000) { s[n++] = (char)(0xE0 | (cp >> 12)); s[n++] = (char)(0x80 | ((cp >> 6) & 63)); s[n++] = (char)(0x80 | (cp & 63)); }
            else { s[n++] = (char)(0xF0 | (cp >> 18)); s[n++] = (char)(0x80 | ((cp >> 12) & 63)); s[n++] = (char)(0x80 | ((cp >> 6) & 63)); s[n++] = (char)(0x80 | (cp & 63)); }
        }
        vlm_tokens ids = {0};
        vlm_error err = {0};
        char *dec = NULL, *want = NULL;
        size_t dl = 0, wl = n;
        vlm_tokenize(t, s, (size_t)n, VLM_TOK_NO_PARSE_SPECIAL, &ids, &err);
        vlm_detokenize(t, ids.ids, ids.n, 0, &dec, &dl, &err);
        if (nfc) vlm_nfc(s, (size_t)n, &want, &wl, &err);
        const char *w = nfc ? want : s;
        if (!dec || dl != wl || memcmp(dec, w, wl)) bad++;
        free(dec);
        free(want);
        vlm_tokens_free(&ids);
    }
    CHECK(bad == 0, "%s: %d of %d random strings do not round-trip", name, bad, n_cases);
}

/* Loading from a directory (tokenizer.json + tokenizer_config.json) and the CLI. */
static void test_dir_and_cli(const char *build) {
    char dir[300], cmd[4096], path[400], vlm[400];
    /* the CLI: $VLM_BIN where tests/run.sh says (a wrapper under emulation) */
    snprintf(vlm, sizeof vlm, "%s", getenv("VLM_BIN") ? getenv("VLM_BIN") : "");
    if (!vlm[0]) snprintf(vlm, sizeof vlm, "%s/vlm", build);
    snprintf(dir, sizeof dir, "%s/tests/tok_smolvlm", build);
    snprintf(cmd, sizeof cmd, "mkdir -p %s && gzip -dc " DATA "smolvlm/tokenizer.json.gz > %s/tokenizer.json && cp " DATA "smolvlm/tokenizer_config.json %s/",
             dir, dir, dir);
    CHECK(system(cmd) == 0, "unpacking smolvlm");
    vlm_tokenizer *t = NULL;
    vlm_error err = {0};
    CHECK(vlm_tokenizer_load(&t, dir, &err) == VLM_OK, "load dir: %s", err.msg);
    if (t) {
        vlm_tokenizer_info info = vlm_tokenizer_get_info(t);
        CHECK(!strcmp(info.bos_token, "<|im_start|>") && info.bos_id == vlm_token_id(t, "<|im_start|>"), "bos %s", info.bos_token);
        CHECK(!strcmp(info.eos_token, "<end_of_utterance>") && info.eos_id == vlm_token_id(t, "<end_of_utterance>") && info.eos_id >= 0, "eos");
        CHECK(info.chat_template && strstr(info.chat_template, "Assistant:"), "chat template from tokenizer_config.json");
        CHECK(vlm_token_is_special(t, info.eos_id) && !vlm_token_is_special(t, vlm_token_id(t, "Hello")), "special flags");
        vlm_chat_part parts[2] = {{VLM_PART_IMAGE, NULL}, {VLM_PART_TEXT, "Hi"}};
        vlm_chat_msg m = {"user", NULL, parts, 2};
        char *out = NULL;
        CHECK(vlm_tokenizer_chat(t, &m, 1, 1, NULL, &out, &err) == VLM_OK && out && !strcmp(out, "<|im_start|>User:<image>Hi<end_of_utterance>\nAssistant:"),
              "tokenizer chat: %s", out ? out : err.msg);
        free(out);
    }
    /* CLI: encode, then decode the ids back. */
    snprintf(path, sizeof path, "%s/tests/tok_cli.txt", build);
    snprintf(cmd, sizeof cmd, "%s tokenize -t %s 'Hello world <|im_start|>' > %s", vlm, dir, path);
    CHECK(system(cmd) == 0, "vlm tokenize failed");
    size_t len;
    char *ids = read_file(path, &len);
    vlm_tokens want = {0};
    if (t) vlm_tokenize(t, "Hello world <|im_start|>", 24, 0, &want, &err);
    char expect[256] = {0};
    for (int i = 0; i < want.n; i++) snprintf(expect + strlen(expect), sizeof expect - strlen(expect), i ? " %d" : "%d", want.ids[i]);
    strcat(expect, "\n");
    CHECK(ids && !strcmp(ids, expect), "CLI ids '%s' want '%s'", ids ? ids : "", expect);
    snprintf(cmd, sizeof cmd, "%s tokenize -t %s --decode -f %s > %s.dec", vlm, dir, path, path);
    CHECK(system(cmd) == 0, "vlm tokenize --decode failed");
    snprintf(cmd, sizeof cmd, "%s.dec", path);
    char *dec = read_file(cmd, &len);
    CHECK(dec && !strcmp(dec, "Hello world <|im_start|>\n"), "CLI decode '%s'", dec ? dec : "");
    /* --chat FILE --render: the tokenizer's chat template for a JSON conversation. */
    snprintf(path, sizeof path, "%s/tests/tok_chat.json", build);
    FILE *cf = fopen(path, "w");
    if (cf) { fputs("[{\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"Hi\"}]}]", cf); fclose(cf); }
    snprintf(cmd, sizeof cmd, "%s tokenize -t %s --chat %s --render > %s.out", vlm, dir, path, path);
    CHECK(system(cmd) == 0, "vlm tokenize --chat failed");
    snprintf(cmd, sizeof cmd, "%s.out", path);
    char *rendered = read_file(cmd, &len);
    CHECK(rendered && !strcmp(rendered, "<|im_start|>User:<image>Hi<end_of_utterance>\nAssistant:"), "CLI chat '%s'", rendered ? rendered : "");
    free(rendered);
    snprintf(cmd, sizeof cmd, "%s tokenize --help > /dev/null && ! %s tokenize -t /nonexistent x 2>/dev/null", vlm, vlm);
    CHECK(system(cmd) == 0, "CLI --help / error exit");
    free(ids);
    free(dec);
    vlm_tokens_free(&want);
    vlm_tokenizer_free(t);
}

/* Added tokens with lstrip / rstrip absorb the whitespace beside them. The
 * expected ids are HF tokenizers' (0.22) on the same tokenizer.json. */
static void test_strip_flags(void) {
    static const char json[] =
        "{\"version\": \"1.0\", \"added_tokens\": ["
        "{\"id\": 5, \"content\": \"<X>\", \"single_word\": false, \"lstrip\": true, \"rstrip\": false, "
        "\"normalized\": false, \"special\": true}, "
        "{\"id\": 6, \"content\": \"<Y>\", \"single_word\": false, \"lstrip\": false, \"rstrip\": true, "
        "\"normalized\": false, \"special\": true}], \"normalizer\": null, \"pre_tokenizer\": null, "
        "\"post_processor\": null, \"decoder\": null, \"model\": {\"type\": \"BPE\", \"dropout\": null, "
        "\"unk_token\": null, \"fuse_unk\": false, \"byte_fallback\": false, "
        "\"vocab\": {\"a\": 0, \"b\": 1, \" \": 2, \"x\": 3, \"y\": 4}, \"merges\": []}}";
    static const struct { const char *text; int n; int32_t ids[8]; } cases[] = {
        {"a <X>b", 3, {0, 5, 1}},         {"a  <X> b", 4, {0, 5, 2, 1}}, {"a<Y>  b", 3, {0, 6, 1}},
        {"a <Y> b <X> a", 7, {0, 2, 6, 1, 5, 2, 0}}, {" <X>", 1, {5}},  {"<Y> ", 1, {6}},
    };
    vlm_tokenizer *t = NULL;
    vlm_error err = {0};
    CHECK(vlm_tokenizer_load_mem(&t, json, sizeof json - 1, NULL, 0, &err) == VLM_OK, "strip tokenizer: %s", err.msg);
    if (!t) return;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        vlm_tokens ids = {0};
        vlm_tokenize(t, cases[k].text, strlen(cases[k].text), 0, &ids, &err);
        int same = ids.n == cases[k].n && !memcmp(ids.ids, cases[k].ids, sizeof(int32_t) * (size_t)ids.n);
        CHECK(same, "lstrip/rstrip: '%s' gives %d ids, want %d", cases[k].text, ids.n, cases[k].n);
        vlm_tokens_free(&ids);
    }
    vlm_tokenizer_free(t);
}

int main(int argc, char **argv) {
    TEST_MAIN_NEEDS_SHELL("the tokenizers are read through gzip");
    char build[256] = "build";
    if (argc > 0) { /* argv[0] = BUILD/tests/test_tokenizer */
        snprintf(build, sizeof build, "%s", argv[0]);
        for (int k = 0; k < 2; k++) { char *sl = strrchr(build, '/'); if (sl) *sl = 0; else strcpy(build, "."); }
    }
    test_dir_and_cli(build);
    test_malformed();
    test_strip_flags();
    test_golden("qwen3");
    test_golden("gemma3");
    test_golden("smolvlm");
    test_chat_templates();
    vlm_tokenizer *q = load_tok("qwen3"), *g = load_tok("gemma3");
    test_invalid_utf8(q, g);
    if (q) test_roundtrip_fuzz(q, "qwen3", 1);
    if (g) test_roundtrip_fuzz(g, "gemma3", 0);
    if (q) test_streaming(q);
    if (g) test_byte_fallback(g);
    if (q) test_speed(q, "qwen3");
    if (g) test_speed(g, "gemma3");
    vlm_tokenizer_free(q);
    vlm_tokenizer_free(g);
    TEST_MAIN_END();
}
