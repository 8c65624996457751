/* libFuzzer target for model loading from an untrusted config.json: the
 * input is the config, loaded over a real tiny checkpoint of its family
 * (chosen by the model_type it names; tests/data/tiny_*), then three text
 * tokens run through the forward pass. A config that lies about sizes,
 * counts or layouts must fail with a message (never a crash, an abort or
 * an allocation sized by the lie); one that loads must run or explain.
 * Linux only (the checkpoint is linked into a scratch folder).
 *   make fuzz, then build-fuzz/fuzz_config fuzz/seeds/config -max_total_time=60 */
#include "vlm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const families[][2] = {
    /* model_type substring -> tiny checkpoint (first match wins) */
    {"internvl_chat", "tiny_internvl_orig"}, {"internvl", "tiny_internvl"}, {"gemma", "tiny_gemma4"},
    {"idefics3", "tiny_idefics3"},           {"qwen3_vl", "tiny_qwen3_vl"}, {"", "tiny_qwen"},
};

static const char *checkpoint(const uint8_t *data, size_t size) {
    for (size_t f = 0; f < sizeof families / sizeof families[0]; f++) {
        size_t n = strlen(families[f][0]);
        if (!n) return families[f][1];
        for (size_t i = 0; i + n <= size; i++)
            if (!memcmp(data + i, families[f][0], n)) return families[f][1];
    }
    return "tiny_qwen";
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *name = checkpoint(data, size);
    char dir[512], path[700], target[700], cwd[256];
    if (!getcwd(cwd, sizeof cwd)) return 0;
    snprintf(dir, sizeof dir, "build-fuzz/cfg_%d_%s", (int)getpid(), name);
    vlm_make_dir("build-fuzz");
    vlm_make_dir(dir);
    snprintf(path, sizeof path, "%s/model.safetensors", dir);
    snprintf(target, sizeof target, "%s/tests/data/%s/model.safetensors", cwd, name);
    if (vlm_path_kind(path) != 1 && symlink(target, path) != 0) return 0;
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "wb");
    if (!f) return 0;
    fwrite(data, 1, size, f);
    fclose(f);

    vlm_model *m = NULL;
    vlm_error err = {0};
    vlm_model_params mp = {.n_threads = 1};
    if (vlm_model_load(&m, dir, &mp, &err) != VLM_OK) {
        if (!err.msg[0]) __builtin_trap(); /* a failure explains itself */
        return 0;
    }
    vlm_seq seq;
    vlm_error e2 = {0};
    if (vlm_seq_init(&seq, m, 16, 0, VLM_F32, &e2) == VLM_OK) {
        int32_t ids[3] = {1, 2, 3};
        vlm_tensor *logits = NULL;
        if (m->arch->forward(m, &seq, ids, 3, NULL, NULL, 0, &logits) != VLM_OK) {
            if (!seq.c.err.msg[0]) __builtin_trap();
        } else if (!logits || logits->shape[logits->ndim - 1] != m->vocab_size)
            __builtin_trap();
    } else if (!e2.msg[0])
        __builtin_trap();
    vlm_seq_free(&seq); /* also after a failed init */
    vlm_model_free(m);
    return 0;
}
