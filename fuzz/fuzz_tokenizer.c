/* libFuzzer target for tokenizer.json loading and the text paths over it:
 * the input is a tokenizer.json, then a NUL, then a text (a default mixed
 * text when there is no NUL). A tokenizer that loads must encode the text
 * in each mode to ids inside its vocabulary, and decode them (one call and
 * streaming) to valid UTF-8; every failure must explain itself.
 *   make fuzz, then build-fuzz/fuzz_tokenizer fuzz/seeds/tokenizer -max_total_time=60 */
#include "vlm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char default_text[] = "Hello world <|im_start|>user\n ünïcödé 🙂\t 12345 <image> \xff\xfe end";

static int valid_utf8(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint32_t cp;
        int len = vlm_utf8_decode((const unsigned char *)s + i, n - i, &cp);
        if (len <= 0 || cp > 0x10FFFF) return 0;
        i += (size_t)len;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - data) : size;
    const char *text = nul ? (const char *)nul + 1 : default_text;
    size_t tlen = nul ? size - jlen - 1 : sizeof default_text - 1;
    vlm_tokenizer *t = NULL;
    vlm_error err = {0};
    if (vlm_tokenizer_load_mem(&t, (const char *)data, jlen, NULL, 0, &err) != VLM_OK) {
        if (!err.msg[0]) __builtin_trap(); /* a failure explains itself */
        return 0;
    }
    int nv = vlm_tokenizer_n_vocab(t);
    static const int modes[] = {0, VLM_TOK_ADD_SPECIAL, VLM_TOK_NO_PARSE_SPECIAL};
    for (size_t m = 0; m < sizeof modes / sizeof modes[0]; m++) {
        vlm_tokens ids = {0};
        vlm_error e = {0};
        if (vlm_tokenize(t, text, tlen, modes[m], &ids, &e) != VLM_OK) {
            if (!e.msg[0]) __builtin_trap();
            vlm_tokens_free(&ids);
            continue;
        }
        for (int i = 0; i < ids.n; i++)
            if (ids.ids[i] < 0 || ids.ids[i] >= nv) __builtin_trap();
        char *out = NULL;
        size_t out_len = 0;
        vlm_error d = {0};
        if (vlm_detokenize(t, ids.ids, ids.n, m == 1 ? VLM_DETOK_SKIP_SPECIAL : 0, &out, &out_len, &d) == VLM_OK) {
            if (!out || strlen(out) != out_len || !valid_utf8(out, out_len)) __builtin_trap();
        } else if (!d.msg[0])
            __builtin_trap();
        free(out);
        vlm_tokens_free(&ids);
    }
    vlm_tokenizer_free(t);
    return 0;
}
