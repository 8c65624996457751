/* libFuzzer target for the safetensors header parser: each input becomes a
 * temporary file opened with vlm_st_open. `make fuzz`, then
 *   build-fuzz/fuzz_safetensors fuzz/seeds/st -dict=fuzz/st.dict -max_total_time=60
 * Inputs starting with '{' are a header only: the harness prefixes its
 * length and appends as many data bytes as the largest data_offsets end asks
 * for, so that mutations reach the per-tensor checks; other inputs are
 * whole files. */
#include "vlm.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char fuzz_path[96];

static uint64_t fuzz_data_len(const uint8_t *data, size_t size) {
    vlm_error err = {0};
    vlm_json *h = vlm_json_parse((const char *)data, size, &err);
    uint64_t mx = 0;
    if (h && h->type == VLM_JSON_OBJECT)
        for (int i = 0; i < h->n; i++) {
            int64_t e = vlm_json_int(vlm_json_at(vlm_json_get(&h->items[i], "data_offsets"), 1), 0);
            if (e > 0 && e <= (1 << 16) && (uint64_t)e > mx) mx = (uint64_t)e;
        }
    vlm_json_free(h);
    return mx;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!fuzz_path[0])
        snprintf(fuzz_path, sizeof fuzz_path, "%s/fuzz_st_%d.safetensors",
                 access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp", (int)getpid());
    FILE *f = fopen(fuzz_path, "wb");
    if (!f) return 0;
    uint64_t hlen = 0, file_size = size;
    if (size && data[0] == '{') {
        uint64_t dl = fuzz_data_len(data, size);
        uint8_t len8[8];
        for (int i = 0; i < 8; i++) len8[i] = (uint8_t)((uint64_t)size >> (8 * i));
        fwrite(len8, 1, 8, f);
        fwrite(data, 1, size, f);
        for (uint64_t i = 0; i < dl; i++) fputc((int)(i & 255), f);
        hlen = size;
        file_size = 8 + size + dl;
    } else {
        fwrite(data, 1, size, f);
        for (int i = 7; i >= 0 && size >= 8; i--) hlen = hlen << 8 | data[i];
    }
    fclose(f);
    vlm_safetensors st;
    vlm_error err = {0};
    vlm_status s = vlm_st_open(&st, fuzz_path, &err);
    if (s == VLM_OK) {
        /* Sorted, findable, sizes consistent, and the tensors exactly fill
         * the data section (all of it readable). */
        size_t total = 0;
        for (int i = 0; i < st.n_entries; i++) {
            const vlm_st_entry *e = &st.entries[i];
            vlm_tensor t = vlm_st_tensor(e);
            if (vlm_nbytes(&t) != e->nbytes) __builtin_trap();
            if (vlm_st_find(&st, e->name) != e) __builtin_trap();
            if (i && strcmp(st.entries[i - 1].name, e->name) >= 0) __builtin_trap();
            volatile uint8_t sum = 0;
            for (size_t k = 0; k < e->nbytes; k++) sum += ((const uint8_t *)e->data)[k];
            total += e->nbytes;
        }
        if (total != file_size - 8 - hlen) __builtin_trap();
        vlm_st_close(&st);
    } else if (!err.msg[0] || err.code != s) {
        __builtin_trap();
    }
    return 0;
}
