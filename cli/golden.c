/* vlm golden CASE_DIR [--dump OUT.safetensors]: run a golden reference case
 * (see tests/golden/README.md) and compare with transformers' outputs. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vlm.h"

#define GOLDEN_TOL 1e-3f
/* bf16 compute is compared with transformers run with its matmul inputs
 * rounded to bf16 (expected_bf16.safetensors). Two correct bf16 engines
 * differ where an f32 sum, taken in another order, rounds an activation to
 * the neighbouring bf16 value: an error of the size bf16 rounding itself
 * makes. So the tolerance of each case is that size as the reference shows
 * it, GOLDEN_BF16_FACTOR times the distance between its bf16 and f32
 * results (at least GOLDEN_TOL). Measured ratios: README, "Compute modes". */
#define GOLDEN_BF16_FACTOR 1.25f
#define GOLDEN_NGEN 12
/* Quantized weights (--quant) against the f32 reference. Random weights
 * magnify quantization noise, and some cases are chaotic (Gemma 4's logits
 * move by ~1 when only the matmul inputs are rounded to bf16), so the bound
 * is the larger of a fixed one and a multiple of the distance between the
 * case's bf16 and f32 references. q8_0's step (max|w| / 127 per block of
 * 32 normal values, about 0.02 sigma) is about 5x the error of rounding a
 * weight to bf16 (2^-9 relative), hence 5x. q4_0's step is 16x larger: its
 * bound only catches broken kernels (garbage logits); its error is
 * reported. Measured figures: README, "Quantized weights". */
#define GOLDEN_Q8_TOL 5e-2f
#define GOLDEN_Q8_FACTOR 5.0f
#define GOLDEN_Q4_TOL 1.0f
#define GOLDEN_Q4_FACTOR (16 * GOLDEN_Q8_FACTOR)
/* AWQ checkpoints (tests/awq, tools/pack_awq.py) against transformers run
 * with their weights dequantized in f32: the repacking is exact and the
 * prompt's matmuls run on dequantized panels, so only f32 rounding is left */
#define GOLDEN_AWQ_TOL 1e-4f

static float golden_max_err(const float *a, const vlm_tensor *ref, int64_t n) {
    float m = 0;
    for (int64_t i = 0; i < n; i++) {
        float d = fabsf(a[i] - vlm_get_f32(ref, i));
        if (!(d <= m)) m = d; /* NaN propagates as the max */
    }
    return m;
}

/* max |a - b| over two reference tensors of one name, 0 if either is absent
 * or their sizes differ */
static float golden_ref_dist(const vlm_st_entry *a, const vlm_st_entry *b) {
    if (!a || !b) return 0;
    vlm_tensor ta = vlm_st_tensor(a), tb = vlm_st_tensor(b);
    float d = 0;
    for (int64_t i = 0; vlm_nelem(&ta) == vlm_nelem(&tb) && i < vlm_nelem(&ta); i++)
        d = fmaxf(d, fabsf(vlm_get_f32(&ta, i) - vlm_get_f32(&tb, i)));
    return d;
}

static int golden_usage(int rc) {
    fprintf(rc ? stderr : stdout,
            "usage: vlm golden CASE_DIR [--dump OUT.safetensors] [-t THREADS] [--compute f32|bf16]\n"
            "                  [--quant q8_0|q4_0 [--quant-vision]]\n"
            "  Runs CASE_DIR/model on CASE_DIR/inputs.safetensors and compares logits, vision\n"
            "  embeddings and 12 greedy tokens with CASE_DIR/expected.safetensors (f32,\n"
            "  the default, within 1e-3; an AWQ checkpoint within 1e-4 of its weights\n"
            "  dequantized), or with CASE_DIR/expected_bf16.safetensors (bf16, within 1.25x\n"
            "  the distance of that reference from the f32 one; tokens reported).\n"
            "  --quant: weights quantized at load, compared with the f32 reference; the logits'\n"
            "  error and the greedy tokens that agree are reported; q8_0 must stay within 5e-2.\n");
    return rc;
}

int cmd_golden(int argc, char **argv) {
    const char *dir = NULL, *dump = NULL;
    const char *compute = "f32", *quant = NULL;
    int threads = 0, quant_vision = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return golden_usage(0);
        else if (!strcmp(argv[i], "--compute") && i + 1 < argc) compute = argv[++i];
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) dump = argv[++i];
        else if (!strcmp(argv[i], "--quant") && i + 1 < argc) quant = argv[++i];
        else if (!strcmp(argv[i], "--quant-vision")) quant_vision = 1;
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) {
            if (cli_int32("golden", "-t", argv[++i], 1, vlm_cpu_count(), &threads)) return 2;
        }
        else if (argv[i][0] != '-' && !dir) dir = argv[i];
        else return golden_usage(2);
    }
    if (!dir) return golden_usage(2);
    char path[4096], name[256];
    snprintf(path, sizeof path, "%s", dir); /* case name: the last path component */
    size_t k = strlen(path);
    while (k > 1 && path[k - 1] == '/') path[--k] = 0;
    const char *base = strrchr(path, '/');
    snprintf(name, sizeof name, "%s", base ? base + 1 : path);

    vlm_error err = {0};
    vlm_model *m = NULL;
    vlm_safetensors in = {0}, exp = {0}, other = {0}; /* other: the f32 reference in bf16 mode, the bf16 one with --quant */
    vlm_seq seq = {0};
    int rc = 1, seq_ok = 0;
    snprintf(path, sizeof path, "%s/model", dir);
    vlm_model_params mp = {.n_threads = threads, .compute = compute, .quant_vision = quant_vision};
    if (quant && vlm_quant_from_name(quant, &mp.quant)) {
        vlm_error_set(&err, VLM_ERR_ARG, "unknown quantization '%s' (q8_0 or q4_0)", quant);
        goto out;
    }
    if (vlm_model_load(&m, path, &mp, &err) != VLM_OK) goto out;
    snprintf(path, sizeof path, "%s/inputs.safetensors", dir);
    if (vlm_st_open(&in, path, &err) != VLM_OK) goto out;
    /* bf16 compute: transformers with bf16-rounded matmul inputs
     * (tools/gen_golden_bf16.py) */
    int bf16 = !strcmp(m->be->compute, "bf16");
    snprintf(path, sizeof path, "%s/%s", dir, bf16 ? "expected_bf16.safetensors" : "expected.safetensors");
    if (vlm_st_open(&exp, path, &err) != VLM_OK) goto out;
    snprintf(path, sizeof path, "%s/expected.safetensors", dir);
    if (bf16 && vlm_st_open(&other, path, &err) != VLM_OK) goto out;
    snprintf(path, sizeof path, "%s/expected_bf16.safetensors", dir);
    if (!bf16 && mp.quant && vlm_path_kind(path) == 1 && vlm_st_open(&other, path, &err) != VLM_OK) goto out;

    const vlm_st_entry *ids_e = vlm_st_find(&in, "input_ids");
    const vlm_st_entry *logits_e = vlm_st_find(&exp, "logits"), *gen_e = vlm_st_find(&exp, "generated_ids");
    const vlm_st_entry *vis_e = vlm_st_find(&exp, "vision_embeds");
    if (!ids_e || !logits_e || !gen_e) {
        vlm_error_set(&err, VLM_ERR_FORMAT, "case lacks input_ids, logits or generated_ids");
        goto out;
    }
    vlm_tensor ids_t = vlm_st_tensor(ids_e);
    int n = (int)vlm_nelem(&ids_t);
    int32_t *ids = (int32_t *)malloc(sizeof(int32_t) * (size_t)(n + GOLDEN_NGEN));
    if (!ids) { vlm_error_set(&err, VLM_ERR_OOM, "out of memory"); goto out; }
    for (int i = 0; i < n; i++) ids[i] = (int32_t)vlm_get_i64(&ids_t, i);

    vlm_features feats = {0};
    for (int i = 0; i < in.n_entries && feats.n < VLM_MAX_FEATURES; i++) {
        if (!strcmp(in.entries[i].name, "input_ids")) continue;
        feats.names[feats.n] = in.entries[i].name;
        feats.tensors[feats.n++] = vlm_st_tensor(&in.entries[i]);
    }
    if (vlm_seq_init(&seq, m, n + GOLDEN_NGEN + 4, 0, VLM_F32, &err) != VLM_OK) goto out_ids;
    seq_ok = 1;

    /* Vision tower. */
    vlm_vision_out vis = {0};
    float vis_err = 0;
    float *vis_host = NULL;
    int64_t vis_n = 0;
    int has_images = feats.n > 0;
    if (has_images) {
        if (m->arch->encode(m, &seq.c, &feats, &vis) != VLM_OK) { err = seq.c.err; goto out_ids; }
        vis_n = vlm_nelem(vis.embeds);
        vis_host = (float *)malloc(sizeof(float) * (size_t)vis_n);
        if (!vis_host || vlm_to_host_f32(&seq.c, vis.embeds, vis_host) != VLM_OK) { err = seq.c.err; goto out_vis; }
        if (vis_e) {
            vlm_tensor ve = vlm_st_tensor(vis_e);
            if (vlm_nelem(&ve) != vis_n) {
                vlm_error_set(&err, VLM_ERR_ARG, "vision embeddings: %lld values, reference has %lld", (long long)vis_n,
                              (long long)vlm_nelem(&ve));
                goto out_vis;
            }
            vis_err = golden_max_err(vis_host, &ve, vis_n);
        }
    }

    /* Prefill with every position's logits, then greedy decode. */
    vlm_tensor *logits = NULL;
    if (m->arch->forward(m, &seq, ids, n, has_images ? &vis : NULL, &feats, 1, &logits) != VLM_OK) {
        err = seq.c.err;
        goto out_vis;
    }
    vlm_tensor lt = vlm_st_tensor(logits_e);
    int64_t V = logits->shape[1];
    if (logits->shape[0] != n || vlm_nelem(&lt) != (int64_t)n * V) {
        vlm_error_set(&err, VLM_ERR_ARG, "logits shape [%lld, %lld] differs from the reference", (long long)logits->shape[0],
                      (long long)V);
        goto out_vis;
    }
    float *lh = (float *)malloc(sizeof(float) * (size_t)(n * V));
    if (!lh || vlm_to_host_f32(&seq.c, logits, lh) != VLM_OK) { free(lh); err = seq.c.err; goto out_vis; }
    float logit_err = golden_max_err(lh, &lt, (int64_t)n * V);
    float logit_max = 0;
    for (int64_t i = 0; i < (int64_t)n * V; i++) logit_max = fmaxf(logit_max, fabsf(vlm_get_f32(&lt, i)));
    int32_t gen[GOLDEN_NGEN];
    int best = 0;
    for (int64_t v = 1; v < V; v++) if (lh[(int64_t)(n - 1) * V + v] > lh[(int64_t)(n - 1) * V + best]) best = (int)v;
    free(lh);
    gen[0] = best;
    float *row = (float *)malloc(sizeof(float) * (size_t)V);
    int ok_gen = row != NULL;
    for (int g = 1; ok_gen && g < GOLDEN_NGEN; g++) {
        vlm_compute_reset(&seq.c);
        vlm_tensor *lg = NULL;
        if (m->arch->forward(m, &seq, &gen[g - 1], 1, NULL, NULL, 0, &lg) != VLM_OK ||
            vlm_to_host_f32(&seq.c, lg, row) != VLM_OK) {
            err = seq.c.err;
            ok_gen = 0;
            break;
        }
        best = 0;
        for (int64_t v = 1; v < V; v++) if (row[v] > row[best]) best = (int)v;
        gen[g] = best;
    }
    free(row);
    if (!ok_gen) goto out_vis;
    vlm_tensor gt = vlm_st_tensor(gen_e);
    int match = vlm_nelem(&gt) == GOLDEN_NGEN, agree = 0; /* agree: tokens before the first difference */
    for (int g = 0; match && g < GOLDEN_NGEN; g++) match = vlm_get_i64(&gt, g) == gen[g];
    while (agree < GOLDEN_NGEN && agree < vlm_nelem(&gt) && vlm_get_i64(&gt, agree) == gen[agree]) agree++;
    float tol_logits = m->awq_group ? GOLDEN_AWQ_TOL : GOLDEN_TOL, tol_vis = GOLDEN_TOL;
    if (bf16) { /* the reference's own bf16 rounding, as it moved its results from f32 */
        tol_logits = fmaxf(GOLDEN_TOL, GOLDEN_BF16_FACTOR * golden_ref_dist(logits_e, vlm_st_find(&other, "logits")));
        tol_vis = fmaxf(GOLDEN_TOL, GOLDEN_BF16_FACTOR * golden_ref_dist(vis_e, vlm_st_find(&other, "vision_embeds")));
    }
    if (mp.quant && !bf16) { /* the weights' noise against the model's own sensitivity to bf16 noise */
        float dist = golden_ref_dist(logits_e, vlm_st_find(&other, "logits")),
              vdist = golden_ref_dist(vis_e, vlm_st_find(&other, "vision_embeds"));
        int q8 = mp.quant == VLM_Q8_0;
        tol_logits = q8 ? fmaxf(GOLDEN_Q8_TOL, GOLDEN_Q8_FACTOR * dist) : fmaxf(GOLDEN_Q4_TOL, GOLDEN_Q4_FACTOR * dist);
        if (quant_vision)
            tol_vis = q8 ? fmaxf(GOLDEN_Q8_TOL, GOLDEN_Q8_FACTOR * vdist) : fmaxf(GOLDEN_Q4_TOL, GOLDEN_Q4_FACTOR * vdist);
    }
    /* bf16 and quantized: greedy tokens are reported; near-ties may go either way */
    int pass = (match || bf16 || mp.quant) && logit_err <= tol_logits && vis_err <= tol_vis &&
               (!vis_e || has_images) && logit_err == logit_err;

    printf("{\"case\":\"%s\",\"arch\":\"%s\",\"compute\":\"%s\",\"logits_max_abs_err\":%.3g,\"logits_max_abs\":%.3g,"
           "\"vision_max_abs_err\":%.3g,\"generated_ids\":[",
           name, m->arch->name, m->be->compute, logit_err, logit_max, vis_err);
    for (int g = 0; g < GOLDEN_NGEN; g++) printf("%s%d", g ? "," : "", gen[g]);
    printf("],\"generated_match\":%s", match ? "true" : "false");
    if (mp.quant) printf(",\"quant\":\"%s%s\",\"tokens_agree\":%d", quant, quant_vision ? "+vision" : "", agree);
    if (m->awq_group) printf(",\"awq_group\":%d", m->awq_group);
    if (bf16 || mp.quant || m->awq_group) printf(",\"logits_tol\":%.3g,\"vision_tol\":%.3g", tol_logits, tol_vis);
    printf(",\"pass\":%s}\n", pass ? "true" : "false");

    if (dump) {
        /* Re-run the prefill to have the logits at hand for the dump. */
        vlm_compute_reset(&seq.c);
        vlm_seq_reset(&seq);
        vlm_vision_out vis2 = {0};
        vlm_tensor *lg = NULL;
        if ((has_images && m->arch->encode(m, &seq.c, &feats, &vis2) != VLM_OK) ||
            m->arch->forward(m, &seq, ids, n, has_images ? &vis2 : NULL, &feats, 1, &lg) != VLM_OK) {
            err = seq.c.err;
            goto out_vis;
        }
        vlm_tensor lg_host = *lg; /* CPU backend: host memory */
        int64_t gshape[1] = {GOLDEN_NGEN};
        vlm_tensor gen_t = vlm_tensor_make(VLM_I32, 1, gshape, gen);
        vlm_tensor vis_t = has_images ? vlm_tensor_make(VLM_F32, vis.embeds->ndim, vis.embeds->shape, vis_host) : gen_t;
        const char *names[3] = {"logits", "generated_ids", "vision_embeds"};
        const vlm_tensor *ts[3] = {&lg_host, &gen_t, &vis_t};
        if (vlm_st_write(dump, has_images ? 3 : 2, names, ts, &err) != VLM_OK) goto out_vis;
    }
    rc = pass ? 0 : 1;
out_vis:
    free(vis_host);
out_ids:
    free(ids);
out:
    if (err.code) {
        fprintf(stderr, "vlm golden: %s\n", err.msg);
        printf("{\"case\":\"%s\",\"pass\":false,\"error\":\"%s\"}\n", name, vlm_status_name(err.code));
    }
    if (seq_ok) vlm_seq_free(&seq);
    vlm_st_close(&in);
    vlm_st_close(&exp);
    vlm_st_close(&other);
    vlm_model_free(m);
    return rc;
}
