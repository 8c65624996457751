/* vlm run: one question about images, the answer streamed to stdout. */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vlm.h"

static int run_usage(int rc) {
    fprintf(rc ? stderr : stdout,
            "usage: vlm run -m MODEL_DIR [-i IMAGE ...] [-p PROMPT] [options]\n"
            "  -m DIR        model directory (config.json, *.safetensors, tokenizer.json, ...)\n"
            "  -i IMAGE      an image (PNG, JPEG, BMP, ...); repeat for several\n"
            "  -p PROMPT     the question (default: \"Describe this image.\"); @FILE reads it from\n"
            "                FILE, - from stdin (@@x is the text @x)\n"
            "  -s SYSTEM     a system prompt\n"
            "  -n N          at most N tokens (default 256)\n"
            "  --temp T      temperature (default 0 = greedy)\n"
            "  --top-k K, --top-p P, --min-p P, --repeat-penalty R, --seed S\n"
            "  --stop STR    stop string (repeatable)\n"
            "  -t N          threads, 1 to the number of cores (default: all cores)\n"
            "  -c N          context length (default 4096)\n"
            "  --ignore-eos  keep going past end-of-sequence tokens\n"
            "  --verbose     timings on stderr\n"
            "  --quant Q     quantize the text decoder's linear weights at load: q8_0 or q4_0\n"
            "                (README, \"Quantized weights\"); --quant-vision: the vision tower's too\n");
    return rc;
}

static int run_print(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* Options shared by run and chat (cli.h). */
int cli_parse_common(const char *cmd, int argc, char **argv, int *i, cli_opts *o) {
    static const char *const with_value[] = {"-m", "-t", "-c", "-n", "-s", "--temp", "--top-k", "--top-p", "--min-p",
                                             "--repeat-penalty", "--seed", "--stop", "--quant", NULL};
    const char *a = argv[*i];
    int takes = 0;
    for (int k = 0; with_value[k]; k++) takes |= !strcmp(a, with_value[k]);
    if (!takes) {
        if (!strcmp(a, "--kv-f16")) o->kv_f16 = 1;
        else if (!strcmp(a, "--verbose")) o->verbose = 1;
        else if (!strcmp(a, "--quant-vision")) o->quant_vision = 1;
        else if (!strcmp(a, "--ignore-eos")) o->gen.ignore_eos = 1;
        else return 0;
        return 1;
    }
    if (*i + 1 >= argc) { fprintf(stderr, "vlm %s: %s needs a value\n", cmd, a); return -1; }
    const char *v = argv[++*i];
    vlm_sampling *sp = &o->gen.sampling;
    int bad = 0;
    if (!strcmp(a, "-m")) o->model = v;
    else if (!strcmp(a, "-s")) o->system = v;
    else if (!strcmp(a, "--quant")) o->quant = v;
    else if (!strcmp(a, "-t")) bad = cli_int32(cmd, a, v, 1, vlm_cpu_count(), &o->threads); /* more only slows it down */
    else if (!strcmp(a, "-c")) bad = cli_int32(cmd, a, v, 16, 1 << 24, &o->ctx);
    else if (!strcmp(a, "-n")) bad = cli_int32(cmd, a, v, 1, 1 << 24, &o->gen.max_tokens);
    else if (!strcmp(a, "--temp")) bad = cli_float(cmd, a, v, 0, 100, &sp->temperature);
    else if (!strcmp(a, "--top-k")) bad = cli_int32(cmd, a, v, 0, INT_MAX, &sp->top_k);
    else if (!strcmp(a, "--top-p")) bad = cli_float(cmd, a, v, 1e-9, 1, &sp->top_p);
    else if (!strcmp(a, "--min-p")) bad = cli_float(cmd, a, v, 0, 1, &sp->min_p);
    else if (!strcmp(a, "--repeat-penalty")) bad = cli_float(cmd, a, v, 1e-6, 100, &sp->repetition_penalty);
    else if (!strcmp(a, "--seed")) bad = cli_u64(cmd, a, v, &sp->seed);
    else if (!strcmp(a, "--stop")) {
        if (o->n_stop == 8) { fprintf(stderr, "vlm %s: at most 8 --stop strings\n", cmd); return -1; }
        o->stop[o->n_stop++] = v;
    }
    return bad ? -1 : 1;
}

/* Progress of the prompt on a terminal (stderr), erased once done. */
static void cli_progress(void *user, int done, int total, int images_done, int images_total) {
    (void)user;
    if (done < total)
        fprintf(stderr, "\r[prompt %d/%d tokens, images %d/%d]", done, total, images_done, images_total);
    else
        fprintf(stderr, "\r%60s\r", "");
}

/* Loading progress on a terminal: quantizing at load takes seconds. */
static void cli_load_progress(void *user, int64_t done, int64_t total) {
    (void)user;
    if (total > 0 && done < total) fprintf(stderr, "\r[loading %3.0f%%]", 100.0 * (double)done / (double)total);
    else fprintf(stderr, "\r%20s\r", "");
}

void cli_opts_init(cli_opts *o) {
    memset(o, 0, sizeof *o);
    o->gen = vlm_generate_default();
    o->gen.sampling.temperature = 0;
    o->ctx = 4096;
    if (vlm_is_terminal(2)) o->gen.progress = cli_progress;
}

int cli_open(const cli_opts *o, vlm_engine **e, vlm_session **s, vlm_error *err) {
    vlm_engine_params ep = {.n_threads = o->threads, .quant = o->quant, .quant_vision = o->quant_vision,
                            .load_progress = o->quant && vlm_is_terminal(2) ? cli_load_progress : NULL};
    if (vlm_engine_open(e, o->model, &ep, err) != VLM_OK) return 1;
    vlm_session_params sp = {.n_ctx = o->ctx, .kv_dtype = o->kv_f16 ? VLM_F16 : VLM_F32, .system = o->system};
    if (vlm_session_new(*e, &sp, s, err) != VLM_OK) { vlm_engine_close(*e); *e = NULL; return 1; }
    return 0;
}

void cli_report(const vlm_generate_stats *st) {
    fprintf(stderr, "\n[prompt %d tokens (%d computed), %d images: vision %.0f ms, prefill %.1f tok/s; "
                    "decode %d tokens, %.2f tok/s]\n",
            st->n_prompt, st->n_prompt_computed, st->n_images_encoded, st->vision_s * 1e3,
            st->prefill_s > 0 ? st->n_prompt_computed / st->prefill_s : 0, st->n_generated,
            st->decode_s > 0 ? st->n_generated / st->decode_s : 0);
}

int cmd_run(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    const char *prompt_arg = "Describe this image.", *images[64];
    int n_images = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return run_usage(0);
        int r = cli_parse_common("run", argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r) continue;
        if ((!strcmp(a, "-i") || !strcmp(a, "-p")) && i + 1 >= argc) {
            fprintf(stderr, "vlm run: %s needs a value\n", a);
            return 2;
        }
        if (!strcmp(a, "-i")) {
            if (n_images == 64) { fprintf(stderr, "vlm run: at most 64 images\n"); return 2; }
            images[n_images++] = argv[++i];
        } else if (!strcmp(a, "-p")) prompt_arg = argv[++i];
        else {
            fprintf(stderr, "vlm run: unknown option '%s' (vlm run --help lists them)\n", a);
            return 2;
        }
    }
    if (!o.model) { fprintf(stderr, "vlm run: -m MODEL_DIR is required (vlm run --help)\n"); return 2; }
    char *prompt = cli_prompt_text("run", prompt_arg);
    if (!prompt) return 2;
    vlm_error err = {0};
    vlm_engine *e = NULL;
    vlm_session *s = NULL;
    int rc = 1;
    if (cli_open(&o, &e, &s, &err)) goto out;
    for (int k = 0; k < n_images; k++)
        if (vlm_session_add_image_file(s, images[k], &err) != VLM_OK) goto out;
    if (vlm_session_add_text(s, prompt, &err) != VLM_OK) goto out;
    o.gen.stop = o.stop;
    o.gen.n_stop = o.n_stop;
    vlm_generate_stats st;
    if (vlm_session_generate(s, &o.gen, run_print, NULL, &st, &err) != VLM_OK) goto out;
    printf("\n");
    if (o.verbose) cli_report(&st);
    rc = 0;
out:
    if (err.code) fprintf(stderr, "vlm run: %s\n", err.msg);
    free(prompt);
    vlm_session_free(s);
    vlm_engine_close(e);
    return rc;
}
