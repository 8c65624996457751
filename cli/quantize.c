/* vlm quantize: a model folder with its weights quantized once, so that it
 * loads mmap'd with no work (README, "Quantized weights"). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vlm.h"

static int quantize_usage(int rc) {
    fprintf(rc ? stderr : stdout,
            "usage: vlm quantize -m MODEL_DIR -o OUT_DIR --type q8_0|q4_0 [--quant-vision] [-t N]\n"
            "  Writes OUT_DIR/model.safetensors with the weights --quant would quantize at load\n"
            "  stored quantized (the rest as they were), and copies the folder's other files;\n"
            "  config.json gains a quantization_config. The folder loads with no requantization.\n");
    return rc;
}

/* src to dst; config.json with "quantization_config" added before its last '}' */
static int quantize_copy(const char *src, const char *dst, const char *config_add) {
    size_t n = 0;
    char *text = cli_read_all(src, &n);
    if (!text) return -1;
    FILE *f = fopen(dst, "wb");
    int ok = f != NULL;
    char *end = config_add ? strrchr(text, '}') : NULL;
    if (config_add && !end) ok = 0; /* not a JSON object */
    if (ok && end) {
        char *last = end; /* an empty object takes no comma */
        while (last > text && (last[-1] == ' ' || last[-1] == '\n' || last[-1] == '\r' || last[-1] == '\t')) last--;
        ok = fwrite(text, 1, (size_t)(last - text), f) == (size_t)(last - text) &&
             fprintf(f, "%s\n%s\n}\n", last > text && last[-1] == '{' ? "" : ",", config_add) > 0;
    } else if (ok)
        ok = fwrite(text, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    return ok ? 0 : -1;
}

/* Every file of dir but the weights, config.json amended. */
typedef struct quantize_copy_arg {
    const char *dir, *out, *config_add;
} quantize_copy_arg;

static int quantize_copy_one(void *user, const char *nm) {
    const quantize_copy_arg *A = (const quantize_copy_arg *)user;
    size_t len = strlen(nm);
    if (nm[0] == '.' || (len > 12 && !strcmp(nm + len - 12, ".safetensors")) || !strcmp(nm, "model.safetensors.index.json"))
        return 0;
    char src[4096], dst[4096];
    snprintf(src, sizeof src, "%s/%s", A->dir, nm);
    snprintf(dst, sizeof dst, "%s/%s", A->out, nm);
    if (vlm_path_kind(src) != 1) return 0;
    int rc = quantize_copy(src, dst, !strcmp(nm, "config.json") ? A->config_add : NULL);
    if (rc) fprintf(stderr, "vlm quantize: cannot copy %s to %s\n", src, dst);
    return rc;
}

static int quantize_copy_files(const char *dir, const char *out, const char *config_add) {
    quantize_copy_arg A = {dir, out, config_add};
    return vlm_list_dir(dir, quantize_copy_one, &A);
}

int cmd_quantize(int argc, char **argv) {
    const char *dir = NULL, *out = NULL, *type = NULL;
    int threads = 0, vision = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return quantize_usage(0);
        else if (!strcmp(a, "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(a, "-o") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--type") && i + 1 < argc) type = argv[++i];
        else if (!strcmp(a, "--quant-vision")) vision = 1;
        else if (!strcmp(a, "-t") && i + 1 < argc) {
            if (cli_int32("quantize", a, argv[++i], 1, vlm_cpu_count(), &threads)) return 2;
        } else return quantize_usage(2);
    }
    vlm_model_params mp = {.n_threads = threads, .quant_vision = vision};
    if (!dir || !out || !type) return quantize_usage(2);
    if (vlm_quant_from_name(type, &mp.quant)) {
        fprintf(stderr, "vlm quantize: unknown --type '%s' (q8_0 or q4_0)\n", type);
        return 2;
    }
    vlm_error cerr = {0};
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
    vlm_json *cfg = vlm_json_load(cfg_path, &cerr);
    int quantized = vlm_json_get(cfg, "quantization_config") != NULL;
    vlm_json_free(cfg);
    if (quantized) { /* AWQ or our own: its weights are quantized already */
        fprintf(stderr, "vlm quantize: %s is quantized already (config.json has a quantization_config); it loads as it is\n",
                dir);
        return 1;
    }
    if (vlm_make_dir(out) != 0) {
        fprintf(stderr, "vlm quantize: cannot create %s\n", out);
        return 1;
    }
    vlm_error err = {0};
    vlm_model *m = NULL;
    double t0 = vlm_time_s();
    if (vlm_model_load(&m, dir, &mp, &err) != VLM_OK) {
        fprintf(stderr, "vlm quantize: %s\n", err.msg);
        return 1;
    }
    double t_load = vlm_time_s() - t0;
    /* every checkpoint tensor: its quantized form (as U8 bytes, described in
     * the metadata) if the model quantized it, else as stored */
    int n = m->weights.n_entries;
    const char **names = calloc((size_t)n + 1, sizeof *names), **keys = calloc((size_t)n + 1, sizeof *keys),
               **vals = calloc((size_t)n + 1, sizeof *vals);
    vlm_tensor *views = calloc((size_t)n + 1, sizeof *views);
    const vlm_tensor **ptrs = calloc((size_t)n + 1, sizeof *ptrs);
    int n_meta = 0, rc = 1;
    size_t before = 0, after = 0;
    if (!names || !keys || !vals || !views || !ptrs) { fprintf(stderr, "vlm quantize: out of memory\n"); goto done; }
    for (int i = 0; i < n; i++) {
        const vlm_st_entry *e = &m->weights.entries[i];
        names[i] = e->name;
        views[i] = vlm_st_tensor(e);
        before += e->nbytes;
        for (int q = 0; q < m->n_quantized; q++) {
            const vlm_tensor *t = m->quantized[q].t;
            if (strcmp(m->quantized[q].name, e->name)) continue;
            char *key = malloc(strlen(e->name) + 5), *val = malloc(160);
            if (!key || !val) { free(key); free(val); fprintf(stderr, "vlm quantize: out of memory\n"); goto done; }
            sprintf(key, "vlm:%s", e->name);
            int64_t shape[VLM_MAX_DIMS];
            int len = snprintf(val, 160, "%s", vlm_dtype_name(t->dtype));
            for (int d = 0; d < t->ndim; d++) {
                len += snprintf(val + len, (size_t)(160 - len), " %lld", (long long)t->shape[d]);
                shape[d] = t->shape[d];
            }
            snprintf(val + len, (size_t)(160 - len), " %s", vlm_dtype_name(e->dtype));
            shape[t->ndim - 1] = (int64_t)vlm_dtype_bytes(t->dtype, t->shape[t->ndim - 1]);
            keys[n_meta] = key;
            vals[n_meta++] = val;
            views[i] = vlm_tensor_make(VLM_U8, t->ndim, shape, t->data);
            break;
        }
        after += vlm_nbytes(&views[i]);
        ptrs[i] = &views[i];
    }
    char path[4096], add[256];
    snprintf(path, sizeof path, "%s/model.safetensors", out);
    double t1 = vlm_time_s();
    if (vlm_st_write_meta(path, n, names, ptrs, n_meta, keys, vals, &err) != VLM_OK) {
        fprintf(stderr, "vlm quantize: %s\n", err.msg);
        goto done;
    }
    snprintf(add, sizeof add,
             "  \"quantization_config\": {\"quant_method\": \"vlm\", \"format\": \"%s\", \"output\": \"q8_0\", "
             "\"vision\": %s}",
             type, vision ? "true" : "false");
    if (quantize_copy_files(dir, out, add)) goto done;
    fprintf(stderr, "vlm quantize: %d weights to %s (load and quantize %.1f s, write %.1f s): %.0f MB -> %.0f MB in %s\n",
            n_meta, type, t_load, vlm_time_s() - t1, before / 1e6, after / 1e6, path);
    rc = 0;
done:
    for (int i = 0; i < n_meta; i++) { free((void *)keys[i]); free((void *)vals[i]); }
    free(names); free(keys); free(vals); free(views); free(ptrs);
    vlm_model_free(m);
    return rc;
}
