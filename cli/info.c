/* vlm info: what a model directory holds and the memory it will need. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vlm.h"

/* The CPU's features and the kernels this build runs on it. */
static void info_cpu(void) {
    static const struct { unsigned bit; const char *name; } feats[] = {
        {VLM_CPU_AVX2, "avx2+fma+f16c"}, {VLM_CPU_AVX512F, "avx512f"}, {VLM_CPU_AVX512BF16, "avx512_bf16"},
        {VLM_CPU_AVX512VNNI, "avx512_vnni"}, {VLM_CPU_AMX_BF16, "amx_bf16"}, {VLM_CPU_AMX_INT8, "amx_int8"},
        {VLM_CPU_NEON, "neon"}, {VLM_CPU_DOTPROD, "dotprod"}, {VLM_CPU_I8MM, "i8mm"}, {VLM_CPU_ARM_BF16, "bf16"}};
    unsigned f = vlm_cpu_features();
    printf("cpu            %d logical cores; features:", vlm_cpu_count());
    for (size_t i = 0; i < sizeof feats / sizeof feats[0]; i++)
        if (f & feats[i].bit) printf(" %s", feats[i].name);
    printf("%s\n", f ? "" : " (none the kernels use)");
    vlm_error err = {0};
    vlm_cpu_params cp = {.n_threads = 1};
    vlm_backend *be = vlm_backend_cpu_new(&cp, &err);
    if (!be) {
        printf("kernels        none: %s\n", err.msg);
        return;
    }
    const char *forced = getenv("VLM_KERNELS");
    char names[128] = "";
    for (int i = 0; vlm_cpu_kernel_name(i); i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? "|" : "", vlm_cpu_kernel_name(i));
    printf("kernels        %s (%s%s%s)\n", be->kernels, forced && *forced ? "forced by VLM_KERNELS" : "the fastest this CPU runs; VLM_KERNELS=",
           forced && *forced ? "" : names, forced && *forced ? "" : " forces one");
    printf("compute        %s (default; --compute / vlm_engine_params.compute: f32 or bf16)\n", be->compute);
    const char *paths = vlm_cpu_kernel_paths(be->kernels);
    for (const char *l = paths; l && *l;) { /* one "  path  kernel" line each */
        const char *e = strchr(l, '\n');
        int n = e ? (int)(e - l) : (int)strlen(l);
        printf("  %.*s\n", n, l);
        l += n + (e != NULL);
    }
    printf("runs          ");
    for (int i = 0; vlm_cpu_kernel_name(i); i++) printf(" %s", vlm_cpu_kernel_name(i));
    printf("\n");
    be->destroy(be);
}

int cmd_info(int argc, char **argv) {
    const char *dir = NULL;
    int ctx = 4096, cpu = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: vlm info -m MODEL_DIR [-c CTX] | vlm info --cpu\n"
                   "  Prints the architecture, weight sizes and dtypes, and the memory\n"
                   "  a session of CTX tokens (default 4096) needs for its KV cache;\n"
                   "  --cpu: the CPU's features and the kernels this build runs.\n");
            return 0;
        } else if (!strcmp(argv[i], "--cpu")) cpu = 1;
        else if (!strcmp(argv[i], "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) {
            if (cli_int32("info", "-c", argv[++i], 1, 1 << 24, &ctx)) return 2;
        }
        else { fprintf(stderr, "usage: vlm info -m MODEL_DIR [-c CTX]\n"); return 2; }
    }
    if (cpu) info_cpu();
    if (cpu && !dir) return 0;
    if (!dir || ctx <= 0) { fprintf(stderr, "usage: vlm info -m MODEL_DIR [-c CTX]\n"); return 2; }
    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = 1};
    if (vlm_model_load(&m, dir, &mp, &err) != VLM_OK) { fprintf(stderr, "vlm info: %s\n", err.msg); return 1; }
    int64_t params[VLM_NTYPES] = {0}, bytes = 0;
    for (int i = 0; i < m->weights.n_entries; i++) {
        const vlm_st_entry *e = &m->weights.entries[i];
        vlm_tensor t = vlm_st_tensor(e);
        params[e->dtype] += vlm_nelem(&t);
        bytes += (int64_t)e->nbytes;
    }
    printf("architecture   %s (%s)\n", m->arch->name,
           vlm_json_str(vlm_json_at(vlm_json_get(m->config, "architectures"), 0), "?"));
    printf("text           hidden %d, vocab %d\n", m->hidden_size, m->vocab_size);
    printf("tensors        %d in %d file(s), %.1f MiB mmap'd\n", m->weights.n_entries, m->weights.n_files, bytes / 1048576.0);
    for (int t = 0; t < VLM_NTYPES; t++)
        if (params[t]) printf("  %-5s        %.3f M values\n", vlm_dtype_name((vlm_dtype)t), params[t] / 1e6);
    vlm_seq s;
    if (vlm_seq_init(&s, m, ctx, 0, VLM_F32, &err) == VLM_OK) {
        int64_t kv = 0;
        for (int l = 0; l < s.kv.n_layers; l++)
            if (s.kv.layers[l].owner) kv += (int64_t)(vlm_nbytes(s.kv.layers[l].k) + vlm_nbytes(s.kv.layers[l].v));
        printf("KV cache       %.1f MiB for %d tokens in f32 (%.1f KiB/token; half in f16)\n", kv / 1048576.0, ctx,
               kv / 1024.0 / ctx);
        vlm_seq_free(&s);
    }
    vlm_model_free(m);
    return 0;
}
