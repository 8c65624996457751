/* libFuzzer target for the JSON parser: `make fuzz`, then
 *   build-fuzz/fuzz_json fuzz/seeds/json -max_total_time=60 */
#include "vlm.h"

#include <stdint.h>
#include <string.h>

static size_t fuzz_walk(const vlm_json *j, int depth) {
    size_t n = 1;
    if (j->type == VLM_JSON_STRING) {
        /* n bytes plus the terminating NUL must be readable */
        volatile char c = j->str[j->n];
        (void)c;
    }
    if (j->type == VLM_JSON_ARRAY || j->type == VLM_JSON_OBJECT)
        for (int i = 0; i < j->n; i++) {
            const vlm_json *c = vlm_json_at(j, i);
            if (j->type == VLM_JSON_OBJECT && c->key) (void)vlm_json_get(j, c->key);
            n += fuzz_walk(c, depth + 1);
        }
    (void)vlm_json_num(j, 0);
    (void)vlm_json_int(j, 0);
    (void)vlm_json_bool(j, 0);
    (void)vlm_json_str(j, NULL);
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    vlm_error err = {0};
    vlm_json *j = vlm_json_parse((const char *)data, size, &err);
    if (j) {
        fuzz_walk(j, 0);
        (void)vlm_json_path(j, "a.b.0.c");
        (void)vlm_json_path(j, "0");
        vlm_json_free(j);
    } else if (err.code == VLM_OK || !err.msg[0]) {
        __builtin_trap(); /* a failure must always explain itself */
    }
    return 0;
}
