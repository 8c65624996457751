/* vlm chat: an interactive conversation that keeps its history (and cache). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "vlm.h"

static int chat_print(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

int cmd_chat(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: vlm chat -m MODEL_DIR [options of vlm run]\n"
                   "  Type a message and Enter. Commands: /image PATH (attach to the next\n"
                   "  message), /reset (forget the conversation), /quit.\n");
            return 0;
        }
        if (!cli_parse_common(argc, argv, &i, &o)) {
            fprintf(stderr, "usage: vlm chat -m MODEL_DIR [options]   (vlm chat --help)\n");
            return 2;
        }
    }
    if (!o.model) { fprintf(stderr, "vlm chat: -m MODEL_DIR is required\n"); return 2; }
    vlm_error err = {0};
    vlm_engine *e = NULL;
    vlm_session *s = NULL;
    if (cli_open(&o, &e, &s, &err)) { fprintf(stderr, "vlm chat: %s\n", err.msg); return 1; }
    o.gen.stop = o.stop;
    o.gen.n_stop = o.n_stop;
    int tty = isatty(0);
    char line[16384];
    for (;;) {
        if (tty) { printf("> "); fflush(stdout); }
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\r\n")] = 0;
        if (!line[0]) continue;
        vlm_error_clear(&err);
        if (!strcmp(line, "/quit")) break;
        if (!strcmp(line, "/reset")) { vlm_session_reset(s); continue; }
        if (!strncmp(line, "/image ", 7)) {
            if (vlm_session_add_image_file(s, line + 7, &err) != VLM_OK) fprintf(stderr, "vlm chat: %s\n", err.msg);
            continue;
        }
        vlm_generate_stats st;
        if (vlm_session_add_text(s, line, &err) != VLM_OK || vlm_session_generate(s, &o.gen, chat_print, NULL, &st, &err) != VLM_OK) {
            fprintf(stderr, "vlm chat: %s\n", err.msg);
            continue;
        }
        printf("\n");
        if (o.verbose) cli_report(&st);
    }
    vlm_session_free(s);
    vlm_engine_close(e);
    return 0;
}
