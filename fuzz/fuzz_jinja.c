/* libFuzzer target for the chat-template interpreter: the input is a
 * template, then a NUL, then a messages JSON array (when it parses; a
 * default conversation with an image otherwise). Every failure must explain
 * itself, and the budgets (small here, so each run is quick) must stop
 * every runaway template.   make fuzz, then
 *   build-fuzz/fuzz_jinja fuzz/seeds/jinja -max_total_time=60 */
#include "vlm.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const char default_msgs[] =
    "[{\"role\": \"system\", \"content\": \"Be brief.\"},"
    " {\"role\": \"user\", \"content\": [{\"type\": \"image\"}, {\"type\": \"text\", \"text\": \"What is it?\"}]},"
    " {\"role\": \"assistant\", \"content\": \"A cat.\"}, {\"role\": \"user\", \"content\": \"Sure?\"}]";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, 0, size);
    size_t tlen = nul ? (size_t)(nul - data) : size;
    char *tpl = (char *)malloc(tlen + 1);
    if (!tpl) return 0;
    memcpy(tpl, data, tlen);
    tpl[tlen] = 0;
    vlm_error err = {0};
    vlm_json *msgs = nul ? vlm_json_parse((const char *)nul + 1, size - tlen - 1, &err) : NULL;
    if (!msgs || msgs->type != VLM_JSON_ARRAY) {
        vlm_json_free(msgs);
        msgs = vlm_json_parse(default_msgs, sizeof default_msgs - 1, &err);
    }
    vlm_limits lim = {.template_steps = 200000, .template_output = 1 << 20, .template_memory = 16 << 20};
    vlm_chat_opts o = {.add_generation_prompt = 1, .bos_token = "<s>", .eos_token = "</s>", .limits = &lim};
    char *out = NULL;
    vlm_status st = vlm_chat_render_json(tpl, msgs, NULL, &o, &out, &err);
    if (st != VLM_OK && (err.code == VLM_OK || !err.msg[0])) __builtin_trap(); /* a failure explains itself */
    if (st == VLM_OK && (!out || strlen(out) > lim.template_output)) __builtin_trap();
    free(out);
    vlm_json_free(msgs);
    free(tpl);
    return 0;
}
