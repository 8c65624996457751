/* vlm run: one question about images, the answer streamed to stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vlm.h"

static int run_usage(int rc) {
    fprintf(rc ? stderr : stdout,
            "usage: vlm run -m MODEL_DIR [-i IMAGE ...] [-p PROMPT] [options]\n"
            "  -m DIR        model directory (config.json, *.safetensors, tokenizer.json, ...)\n"
            "  -i IMAGE      an image (PNG, JPEG, BMP, ...); repeat for several\n"
            "  -p PROMPT     the question (default: \"Describe this image.\")\n"
            "  -s SYSTEM     a system prompt\n"
            "  -n N          at most N tokens (default 256)\n"
            "  --temp T      temperature (default 0 = greedy)\n"
            "  --top-k K, --top-p P, --min-p P, --repeat-penalty R, --seed S\n"
            "  --stop STR    stop string (repeatable)\n"
            "  -t N          threads (default: all cores)\n"
            "  -c N          context length (default 4096)\n"
            "  --verbose     timings on stderr\n");
    return rc;
}

static int run_print(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

/* Options shared by run and chat; returns 1 if argv[*i] was one of them. */
int cli_parse_common(int argc, char **argv, int *i, cli_opts *o) {
    const char *a = argv[*i];
    int more = *i + 1 < argc;
    if (!strcmp(a, "-m") && more) o->model = argv[++*i];
    else if (!strcmp(a, "-t") && more) o->threads = atoi(argv[++*i]);
    else if (!strcmp(a, "-c") && more) o->ctx = atoi(argv[++*i]);
    else if (!strcmp(a, "-n") && more) o->gen.max_tokens = atoi(argv[++*i]);
    else if (!strcmp(a, "-s") && more) o->system = argv[++*i];
    else if (!strcmp(a, "--temp") && more) o->gen.sampling.temperature = (float)atof(argv[++*i]);
    else if (!strcmp(a, "--top-k") && more) o->gen.sampling.top_k = atoi(argv[++*i]);
    else if (!strcmp(a, "--top-p") && more) o->gen.sampling.top_p = (float)atof(argv[++*i]);
    else if (!strcmp(a, "--min-p") && more) o->gen.sampling.min_p = (float)atof(argv[++*i]);
    else if (!strcmp(a, "--repeat-penalty") && more) o->gen.sampling.repetition_penalty = (float)atof(argv[++*i]);
    else if (!strcmp(a, "--seed") && more) o->gen.sampling.seed = strtoull(argv[++*i], NULL, 10);
    else if (!strcmp(a, "--stop") && more && o->n_stop < 8) o->stop[o->n_stop++] = argv[++*i];
    else if (!strcmp(a, "--kv-f16")) o->kv_f16 = 1;
    else if (!strcmp(a, "--verbose")) o->verbose = 1;
    else return 0;
    return 1;
}

/* Progress of the prompt on a terminal (stderr), erased once done. */
static void cli_progress(void *user, int done, int total, int images_done, int images_total) {
    (void)user;
    if (done < total)
        fprintf(stderr, "\r[prompt %d/%d tokens, images %d/%d]", done, total, images_done, images_total);
    else
        fprintf(stderr, "\r%60s\r", "");
}

void cli_opts_init(cli_opts *o) {
    memset(o, 0, sizeof *o);
    o->gen = vlm_generate_default();
    o->gen.sampling.temperature = 0;
    o->ctx = 4096;
    if (isatty(2)) o->gen.progress = cli_progress;
}

int cli_open(const cli_opts *o, vlm_engine **e, vlm_session **s, vlm_error *err) {
    vlm_engine_params ep = {.n_threads = o->threads};
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
    const char *prompt = "Describe this image.", *images[64];
    int n_images = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return run_usage(0);
        if (cli_parse_common(argc, argv, &i, &o)) continue;
        if (!strcmp(argv[i], "-i") && i + 1 < argc && n_images < 64) images[n_images++] = argv[++i];
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) prompt = argv[++i];
        else return run_usage(2);
    }
    if (!o.model) return run_usage(2);
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
    vlm_session_free(s);
    vlm_engine_close(e);
    return rc;
}
