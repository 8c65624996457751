/* vlm serve: the model behind an OpenAI-compatible HTTP API (server/). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vlm.h"
#ifdef VLM_HAVE_SERVER
#include "server/server.h"
#endif

static int serve_usage(int rc) {
    fprintf(rc ? stderr : stdout,
            "usage: vlm serve -m MODEL_DIR [options]\n"
            "  OpenAI's Chat Completions API: POST /v1/chat/completions (stream or not, images as\n"
            "  data URIs), GET /v1/models, GET /health, GET /metrics (Prometheus).\n"
            "  --host H          address to listen on (default 127.0.0.1; 0.0.0.0: every interface)\n"
            "  --port P          port (default 8080; 0: any free one, printed at start)\n"
            "  --parallel N      requests answered at once, each in its own slot (default 2)\n"
            "  --queue N         requests that may wait for a slot; more get 503 (default 64)\n"
            "  -c, --ctx N       context per slot in tokens (default 4096)\n"
            "  --api-key KEY     require Authorization: Bearer KEY (all but /health)\n"
            "  --max-body-mib N  largest request body (default 64)\n"
            "  --allow-local-files  image_url may name a file on this machine (file:///path)\n"
            "  --vision-cache-mib N  encoder outputs kept for images sent again (default 256; 0: none)\n"
            "  --alias NAME      the model's id in the API (default: the folder's name)\n"
            "  -t N              threads (default: all cores)\n"
            "  --quant Q         q8_0 or q4_0 (README, \"Quantized weights\"); --quant-vision too\n"
            "  --kv-f16          f16 KV cache\n"
            "  --random          made-up bf16 weights of config.json's shapes (benchmarks)\n"
            "  --verbose         libmicrohttpd's errors on stderr\n");
    return rc;
}

int cmd_serve(int argc, char **argv) {
#ifndef VLM_HAVE_SERVER
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return serve_usage(0);
    fprintf(stderr, "vlm serve: this build has no HTTP server (it needs libmicrohttpd: apt-get install libmicrohttpd-dev, then make)\n");
    return 1;
#else
    srv_config c = {.host = "127.0.0.1", .port = 8080, .parallel = 2, .queue = 64, .n_ctx = 4096, .max_body = 64 << 20};
    int mib = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) return serve_usage(0);
        if (!strcmp(a, "--allow-local-files")) { c.allow_local_files = 1; continue; }
        if (!strcmp(a, "--kv-f16")) { c.kv_f16 = 1; continue; }
        if (!strcmp(a, "--verbose")) { c.verbose = 1; continue; }
        if (!strcmp(a, "--quant-vision")) { c.engine.quant_vision = 1; continue; }
        if (!strcmp(a, "--random")) { c.engine.random_weights = 1; continue; }
        static const char *const with_value[] = {"-m", "--host", "--port", "--parallel", "--queue", "-c", "--ctx",
                                                 "--api-key", "--max-body-mib", "--alias", "-t", "--quant",
                                                 "--vision-cache-mib", NULL};
        int known = 0;
        for (int k = 0; with_value[k]; k++) known |= !strcmp(a, with_value[k]);
        if (!known) { fprintf(stderr, "vlm serve: unknown option '%s' (vlm serve --help lists them)\n", a); return 2; }
        if (i + 1 >= argc) { fprintf(stderr, "vlm serve: %s needs a value\n", a); return 2; }
        const char *v = argv[++i];
        int bad = 0;
        if (!strcmp(a, "-m")) c.model = v;
        else if (!strcmp(a, "--host")) c.host = v;
        else if (!strcmp(a, "--api-key")) c.api_key = v[0] ? v : NULL;
        else if (!strcmp(a, "--alias")) c.model_id = v;
        else if (!strcmp(a, "--quant")) c.engine.quant = v;
        else if (!strcmp(a, "--port")) bad = cli_int32("serve", a, v, 0, 65535, &c.port);
        else if (!strcmp(a, "--parallel")) bad = cli_int32("serve", a, v, 1, 256, &c.parallel);
        else if (!strcmp(a, "--queue")) bad = cli_int32("serve", a, v, 0, 1 << 16, &c.queue);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) bad = cli_int32("serve", a, v, 16, 1 << 24, &c.n_ctx);
        else if (!strcmp(a, "--max-body-mib")) bad = cli_int32("serve", a, v, 1, 1 << 16, &mib);
        else if (!strcmp(a, "-t")) bad = cli_int32("serve", a, v, 1, vlm_cpu_count(), &c.engine.n_threads);
        else if (!strcmp(a, "--vision-cache-mib")) {
            bad = cli_int32("serve", a, v, 0, 1 << 20, &c.engine.vision_cache_mib);
            if (!c.engine.vision_cache_mib) c.engine.vision_cache_mib = -1; /* the engine's 0 is its default */
        }
        if (bad) return 2;
    }
    if (!c.model) { fprintf(stderr, "vlm serve: -m MODEL_DIR is required (vlm serve --help)\n"); return 2; }
    c.max_body = (int64_t)mib << 20;
    char id[256];
    if (!c.model_id) { /* the folder's name */
        size_t n = strlen(c.model);
        while (n > 1 && (c.model[n - 1] == '/' || c.model[n - 1] == '\\')) n--;
        size_t b = n;
        while (b > 0 && c.model[b - 1] != '/' && c.model[b - 1] != '\\') b--;
        snprintf(id, sizeof id, "%.*s", (int)(n - b), c.model + b);
        c.model_id = id;
    }
    return srv_main(&c);
#endif
}
