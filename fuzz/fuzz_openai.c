/* libFuzzer target for vlm serve's request bodies (server/openai.c): the
 * input is a Chat Completions request. It is refused with a 4xx naming the
 * problem, or read into messages that end with the user's, each part a text
 * or a decoded image; either way the JSON the server would send back (the
 * error, or an answer quoting every text part) parses.   make fuzz, then
 *   build-fuzz/fuzz_openai fuzz/seeds/openai -max_total_time=60 */
#include "server/server.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void must_parse(const vlm_buf *b) {
    vlm_error err = {0};
    vlm_json *j = b->oom ? NULL : vlm_json_parse(b->p, b->n, &err);
    if (!b->oom && !j) abort(); /* the server would send invalid JSON */
    vlm_json_free(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    srv_parse_opts o = {.allow_local_files = 0, .max_pixels = 1 << 20};
    srv_request r;
    srv_error e;
    vlm_buf b = {0};
    if (srv_parse_chat((const char *)data, size, &o, &r, &e)) {
        if (e.status < 400 || e.status > 599 || !e.msg[0] || !e.type) abort();
        srv_error_json(&b, &e);
        must_parse(&b);
        free(b.p);
        return 0;
    }
    if (r.n_msgs < 1 || strcmp(r.msgs[r.n_msgs - 1].role, "user")) abort();
    for (int i = 0; i < r.n_msgs; i++)
        for (int k = 0; k < r.msgs[i].n_parts; k++) {
            const srv_part *p = &r.msgs[i].parts[k];
            if (!p->text && (p->img.width <= 0 || p->img.height <= 0 || !p->img.rgb)) abort();
            if (!p->text) continue;
            srv_usage u = {1, 2, 0};
            b.n = 0;
            srv_completion_json(&b, "chatcmpl-x", 1, "m", p->text, strlen(p->text), "stop", &u);
            must_parse(&b);
            b.n = 0;
            srv_chunk_sse(&b, "chatcmpl-x", 1, "m", 0, p->text, strlen(p->text), NULL);
            if (b.n < 8 || memcmp(b.p, "data: ", 6) || memcmp(b.p + b.n - 2, "\n\n", 2)) abort();
            b.p[b.n - 2] = 0;
            vlm_buf inner = {0};
            vlm_buf_add(&inner, b.p + 6, b.n - 8);
            must_parse(&inner);
            free(inner.p);
        }
    free(b.p);
    srv_request_free(&r);
    return 0;
}
