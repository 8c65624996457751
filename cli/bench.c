/* vlm bench: vision encode time, prefill and decode tokens/s, peak memory. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vlm.h"

static int bench_usage(int rc) {
    fprintf(rc ? stderr : stdout,
            "usage: vlm bench -m MODEL_DIR|CONFIG.json [options]\n"
            "  --random        made-up weights of the config's shapes (no checkpoint needed)\n"
            "  --dtype T       dtype of made-up weights: bf16 (default), f16, f32\n"
            "  -t N            threads (default: all cores)\n"
            "  -p N            prompt tokens for the prefill measurement (default 512)\n"
            "  -n N            tokens to decode (default 32)\n"
            "  --image WxH     also time the vision encoder on a WxH image of random pixels,\n"
            "                  laid out as the family's processor does (its config next to the\n"
            "                  model's config, else the processor's defaults)\n"
            "  --tiles N       families that tile images: time it on N made-up tiles\n"
            "  --kv T          KV cache dtype: f32 (default) or f16\n"
            "  --compute M     matmul precision: f32 or bf16 (default: bf16 where the CPU has\n"
            "                  bf16 dot products, else f32)\n"
            "  --kernels K     force a kernel variant (as VLM_KERNELS: scalar, avx2, ...)\n"
            "  --quant Q       quantize the text decoder's linear weights at load: q8_0 or q4_0\n"
            "  --quant-vision  the vision tower's too\n"
            "  --profile       add the time per op kind of vision, prefill and decode\n"
            "Prints one JSON line with the figures (kv_cache_mib: the KV cache allocated for\n"
            "prompt + generated tokens, shared layers counted once; matmul_peak_gflops: a\n"
            "1024x768 . 768x3072 bf16-weight matmul on the same backend, the engine's peak\n"
            "in this run; *_gflops: matmul work per second of the phase, *_matmul_gflops:\n"
            "per second spent in matmuls; int8_matmul_peak_gops: the same product in int8;\n"
            "read_bw_gbs: a streaming read of 256 MiB on the same threads;\n"
            "weight_bytes_per_token: the weight bytes each decoded token's products read;\n"
            "decode_bw_fraction: those bytes per second of decode over read_bw_gbs).\n");
    return rc;
}

/* The engine's matmul peak in this process: x[1024, 768] . w[3072, 768]^T,
 * f32 x and random bf16 weights (int8: both int8), repeated for about a
 * second (GFLOP/s; int8: giga integer multiply-adds x 2 per second). */
static double bench_matmul_peak(vlm_backend *be, int int8) {
    const int64_t M = 1024, N = 3072, K = 768;
    vlm_dtype xt = int8 ? VLM_I8 : VLM_F32, wt = int8 ? VLM_I8 : VLM_BF16;
    float *hx = (float *)malloc(sizeof(float) * (size_t)(M * K));
    uint16_t *hw = (uint16_t *)malloc(sizeof(uint16_t) * (size_t)(N * K));
    double gflops = 0;
    if (hx && hw) {
        uint64_t r = 7;
        for (int64_t i = 0; i < M * K; i++) {
            r = r * 6364136223846793005ULL + 1;
            if (int8) ((int8_t *)hx)[i] = (int8_t)((int)((r >> 40) % 255) - 127);
            else hx[i] = (float)((r >> 40) % 2001) / 1000.0f - 1.0f;
        }
        for (int64_t i = 0; i < N * K; i++) {
            r = r * 6364136223846793005ULL + 1;
            if (int8) ((int8_t *)hw)[i] = (int8_t)((int)((r >> 40) % 255) - 127);
            else hw[i] = vlm_f32_to_bf16((float)((r >> 40) % 2001) / 20000.0f - 0.05f);
        }
        /* inputs in one context, outputs in another reset after each product:
         * the output's memory is reused, as in a forward pass */
        vlm_compute c, o;
        vlm_compute_init(&c, be);
        vlm_compute_init(&o, be);
        int64_t xs[2] = {M, K}, ws[2] = {N, K};
        vlm_tensor *x = vlm_from_host(&c, xt, 2, xs, hx), *w = vlm_from_host(&c, wt, 2, ws, hw);
        int n = 0;
        double t0 = 0, t = 0;
        for (int i = -1; x && w && !o.failed && (t < 1.0 || n < 3); i++) {
            if (i == 0) t0 = vlm_time_s(); /* the first one warms up */
            vlm_matmul(&o, x, w);
            vlm_compute_reset(&o);
            if (i >= 0) { n++; t = vlm_time_s() - t0; }
        }
        if (x && w && !o.failed && t > 0) gflops = 2.0 * M * N * K * n / t / 1e9;
        vlm_compute_free(&o);
        vlm_compute_free(&c);
    }
    free(hx);
    free(hw);
    return gflops;
}

/* The machine's streaming read bandwidth in this process: 256 MiB summed as
 * 64-bit words on the backend's threads, best of 3 passes (GB/s). */
typedef struct bench_bw {
    const uint64_t *p;
    uint64_t sums[256];
} bench_bw;
static void bench_bw_fn(void *arg, int64_t b, int64_t e, int thread) {
    bench_bw *a = (bench_bw *)arg;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    for (int64_t i = b * 4096; i < e * 4096; i += 4) { /* four chains: loads, not adds, limit it */
        s0 += a->p[i];
        s1 += a->p[i + 1];
        s2 += a->p[i + 2];
        s3 += a->p[i + 3];
    }
    a->sums[thread & 255] += s0 + s1 + s2 + s3;
}
static double bench_read_bw(vlm_backend *be) {
    const int64_t words = (int64_t)32 << 20; /* 256 MiB */
    uint64_t *p = (uint64_t *)malloc(sizeof(uint64_t) * (size_t)words);
    if (!p) return 0;
    for (int64_t i = 0; i < words; i++) p[i] = (uint64_t)i;
    bench_bw a = {.p = p};
    double best = 0;
    for (int pass = 0; pass < 3; pass++) {
        double t0 = vlm_time_s();
        vlm_cpu_parallel_for(be, words / 4096, 16, bench_bw_fn, &a);
        double gbs = (double)words * 8 / (vlm_time_s() - t0) / 1e9;
        if (gbs > best) best = gbs;
    }
    free(p);
    return a.sums[0] == 1 ? 0 : best; /* keeps the sums alive */
}

static double prof_sum(const vlm_profile *p, int flops) {
    double s = 0;
    for (int k = 0; k < VLM_OP_COUNT; k++) s += flops ? p->flops[k] : p->seconds[k];
    return s;
}
static double prof_bytes(const vlm_profile *p) { return p->weight_bytes[VLM_OP_MATMUL] + p->weight_bytes[VLM_OP_MATMUL_ID]; }
static double prof_matmul_s(const vlm_profile *p) { return p->seconds[VLM_OP_MATMUL] + p->seconds[VLM_OP_MATMUL_ID]; }

/* "name":{"op":seconds,...} for the op kinds that ran */
static void prof_json(const char *name, const vlm_profile *p) {
    printf(",\"%s\":{", name);
    int first = 1;
    for (int k = 0; k < VLM_OP_COUNT; k++)
        if (p->calls[k]) {
            printf("%s\"%s\":%.4f", first ? "" : ",", vlm_op_name((vlm_op_kind)k), p->seconds[k]);
            first = 0;
        }
    printf("}");
}

/* The architecture's made-up vision inputs (vlm_arch.bench_vision), then
 * the vision encoder, timed alone. */
static int bench_vision(vlm_model *m, int w, int h, int n_tiles, double *ms, int *tiles, int *n_tokens, vlm_error *err) {
    if (!m->arch->bench_vision)
        return vlm_error_set(err, VLM_ERR_UNSUPPORTED, "%s has no vision tower to time", m->arch->name);
    vlm_features feats = {0};
    vlm_status st = m->arch->bench_vision(m, w, h, n_tiles, &feats, tiles, err);
    if (st == VLM_OK) {
        vlm_compute c;
        vlm_compute_init(&c, m->be);
        vlm_vision_out vo;
        double t0 = vlm_time_s();
        st = m->arch->encode(m, &c, &feats, &vo);
        *ms = (vlm_time_s() - t0) * 1e3;
        if (st != VLM_OK) vlm_error_set(err, st, "%s", c.err.msg);
        else *n_tokens = (int)vo.embeds->shape[0];
        vlm_compute_free(&c);
    }
    vlm_image_features_free(&feats);
    return st;
}

int cmd_bench(int argc, char **argv) {
    const char *dir = NULL;
    int threads = 0, n_prompt = 512, n_gen = 32, random_w = 0, img_w = 0, img_h = 0, img_tiles = 0;
    vlm_dtype dtype = VLM_BF16, kv = VLM_F32;
    const char *compute = NULL, *kernels = NULL, *quant = NULL;
    int profile = 0, quant_vision = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return bench_usage(0);
        else if (!strcmp(a, "-m") && i + 1 < argc) dir = argv[++i];
        else if (!strcmp(a, "--random")) random_w = 1;
        else if (!strcmp(a, "--profile")) profile = 1;
        else if (!strcmp(a, "--compute") && i + 1 < argc) compute = argv[++i];
        else if (!strcmp(a, "--kernels") && i + 1 < argc) kernels = argv[++i];
        else if (!strcmp(a, "--quant") && i + 1 < argc) quant = argv[++i];
        else if (!strcmp(a, "--quant-vision")) quant_vision = 1;
        else if (!strcmp(a, "-t") && i + 1 < argc) { if (cli_int32("bench", a, argv[++i], 1, vlm_cpu_count(), &threads)) return 2; }
        else if (!strcmp(a, "-p") && i + 1 < argc) { if (cli_int32("bench", a, argv[++i], 1, 1 << 20, &n_prompt)) return 2; }
        else if (!strcmp(a, "-n") && i + 1 < argc) { if (cli_int32("bench", a, argv[++i], 1, 1 << 20, &n_gen)) return 2; }
        else if (!strcmp(a, "--tiles") && i + 1 < argc) { if (cli_int32("bench", a, argv[++i], 1, 4096, &img_tiles)) return 2; }
        else if (!strcmp(a, "--image") && i + 1 < argc) {
            if (sscanf(argv[++i], "%dx%d", &img_w, &img_h) != 2 || img_w <= 0 || img_h <= 0) return bench_usage(2);
        } else if ((!strcmp(a, "--dtype") || !strcmp(a, "--kv")) && i + 1 < argc) {
            const char *t = argv[++i];
            vlm_dtype d = !strcmp(t, "f32") ? VLM_F32 : !strcmp(t, "f16") ? VLM_F16 : !strcmp(t, "bf16") ? VLM_BF16 : VLM_NTYPES;
            if (d == VLM_NTYPES) return bench_usage(2);
            if (!strcmp(a, "--kv")) kv = d;
            else dtype = d;
        } else return bench_usage(2);
    }
    if (!dir || n_prompt <= 0 || n_gen <= 0) return bench_usage(2);

    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_model_params mp = {.n_threads = threads, .random_weights = random_w, .random_dtype = dtype,
                           .kernels = kernels, .compute = compute, .quant_vision = quant_vision};
    if (quant && vlm_quant_from_name(quant, &mp.quant)) {
        fprintf(stderr, "vlm bench: unknown quantization '%s' (q8_0 or q4_0)\n", quant);
        return 2;
    }
    double t0 = vlm_time_s();
    if (vlm_model_load(&m, dir, &mp, &err) != VLM_OK) {
        fprintf(stderr, "vlm bench: %s\n", err.msg);
        return 1;
    }
    double t_load = vlm_time_s() - t0;
    vlm_seq s;
    if (vlm_seq_init(&s, m, n_prompt + n_gen + 8, 0, kv, &err) != VLM_OK) {
        fprintf(stderr, "vlm bench: %s\n", err.msg);
        vlm_model_free(m);
        return 1;
    }
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)n_prompt);
    uint64_t x = 12345;
    for (int i = 0; i < n_prompt; i++) { /* text tokens that are not special placeholders */
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        ids[i] = (int32_t)((x >> 33) % (uint64_t)(m->vocab_size < 100000 ? m->vocab_size / 2 : 100000));
        if (ids[i] == m->image_token_id || ids[i] == m->video_token_id) ids[i] = 1;
    }
    double peak = bench_matmul_peak(m->be, 0), peak_i8 = bench_matmul_peak(m->be, 1), read_bw = bench_read_bw(m->be);
    vlm_profile pv = {0}, pp = {0}, pd = {0};
    m->be->profile = &pv;
    /* CPU seconds beside wall seconds: on a busy machine the wall clock counts
     * time spent waiting for a core, the process's CPU time does not */
    double vision_ms = -1, vision_cpu = vlm_cpu_time_s();
    int vision_tiles = 0, vision_tokens = 0;
    if ((img_w > 0 || img_tiles > 0) &&
        bench_vision(m, img_w, img_h, img_tiles, &vision_ms, &vision_tiles, &vision_tokens, &err) != VLM_OK) {
        fprintf(stderr, "vlm bench: vision: %s\n", err.msg);
        vlm_error_clear(&err);
    }
    vision_cpu = vlm_cpu_time_s() - vision_cpu; /* with making up the inputs (and preprocessing them), a small part */
    size_t kv_bytes = 0; /* cache layers of their own (shared layers add nothing) */
    for (int l = 0; l < s.kv.n_layers; l++)
        if (s.kv.layers[l].owner) kv_bytes += 2 * (size_t)vlm_nelem(s.kv.layers[l].k) * vlm_dtype_size(s.kv.layers[l].k->dtype);

    vlm_tensor *lg = NULL;
    vlm_compute_reset(&s.c);
    m->be->profile = &pp;
    t0 = vlm_time_s();
    double c0 = vlm_cpu_time_s();
    int ok = m->arch->forward(m, &s, ids, n_prompt, NULL, NULL, 0, &lg) == VLM_OK;
    double t_prefill = vlm_time_s() - t0, cpu_prefill = vlm_cpu_time_s() - c0, cpu_decode = 0;
    m->be->profile = &pd;
    float *row = (float *)malloc(sizeof(float) * (size_t)m->vocab_size);
    int32_t tok = 0;
    double t_decode = 0;
    for (int g = 0; ok && g < n_gen; g++) {
        ok = vlm_to_host_f32(&s.c, lg, row) == VLM_OK;
        int best = 0;
        for (int v = 1; ok && v < m->vocab_size; v++) if (row[v] > row[best]) best = v;
        tok = best;
        vlm_compute_reset(&s.c);
        t0 = vlm_time_s();
        c0 = vlm_cpu_time_s();
        ok = ok && m->arch->forward(m, &s, &tok, 1, NULL, NULL, 0, &lg) == VLM_OK;
        t_decode += vlm_time_s() - t0;
        cpu_decode += vlm_cpu_time_s() - c0;
    }
    m->be->profile = NULL;
    if (!ok) fprintf(stderr, "vlm bench: %s\n", s.c.err.msg);
    else {
        /* the format: an AWQ checkpoint's, --quant's on top of it or alone, or as stored */
        char weights[64];
        snprintf(weights, sizeof weights, "%s%s%s%s", m->awq_group ? "awq" : "", m->awq_group && quant ? "+" : "",
                 quant ? quant : m->awq_group ? "" : random_w ? vlm_dtype_name(dtype) : "checkpoint",
                 quant && quant_vision ? "+vision" : "");
        printf("{\"arch\":\"%s\",\"threads\":%d,\"kernels\":\"%s\",\"compute\":\"%s\",\"weights\":\"%s\",\"quantized_mib\":%.1f,\"load_s\":%.2f,\"vision_ms\":%.1f,"
               "\"prefill_tokens\":%d,\"prefill_tok_s\":%.2f,\"decode_tokens\":%d,\"decode_tok_s\":%.2f,"
               "\"vision_cpu_s\":%.2f,\"prefill_cpu_s\":%.2f,\"decode_cpu_s\":%.2f,"
               "\"vision_tiles\":%d,\"vision_tokens\":%d,\"kv_cache_mib\":%.2f,\"kv_ctx\":%d,\"peak_rss_mib\":%.0f,"
               "\"matmul_peak_gflops\":%.1f,\"vision_gflops\":%.1f,\"vision_matmul_gflops\":%.1f,"
               "\"prefill_gflops\":%.1f,\"prefill_matmul_gflops\":%.1f,\"int8_matmul_peak_gops\":%.1f,"
               "\"read_bw_gbs\":%.1f,\"weight_bytes_per_token\":%.0f,\"decode_bw_fraction\":%.2f",
               m->arch->name, m->be->n_threads, m->be->kernels ? m->be->kernels : "?", m->be->compute ? m->be->compute : "?", weights, m->quant_bytes / 1048576.0, t_load, vision_ms,
               n_prompt, n_prompt / t_prefill, n_gen, n_gen / t_decode, vision_ms >= 0 ? vision_cpu : 0.0, cpu_prefill, cpu_decode, vision_tiles, vision_tokens,
               kv_bytes / 1048576.0, s.n_ctx, vlm_peak_rss_mib(), peak,
               vision_ms > 0 ? prof_sum(&pv, 1) / (vision_ms / 1e3) / 1e9 : 0.0,
               prof_matmul_s(&pv) > 0 ? prof_sum(&pv, 1) / prof_matmul_s(&pv) / 1e9 : 0.0,
               prof_sum(&pp, 1) / t_prefill / 1e9, prof_matmul_s(&pp) > 0 ? prof_sum(&pp, 1) / prof_matmul_s(&pp) / 1e9 : 0.0,
               peak_i8, read_bw, prof_bytes(&pd) / n_gen,
               read_bw > 0 ? prof_bytes(&pd) / t_decode / 1e9 / read_bw : 0.0);
        if (profile) {
            printf(",\"profile_s\":{\"_\":0");
            prof_json("vision", &pv);
            prof_json("prefill", &pp);
            prof_json("decode", &pd);
            printf("}");
        }
        printf("}\n");
    }
    free(row);
    free(ids);
    vlm_seq_free(&s);
    vlm_model_free(m);
    return ok ? 0 : 1;
}
