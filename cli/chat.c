/* vlm chat: an interactive conversation that keeps its history (and cache).
 * Ctrl-C stops the answer being written and returns to the prompt; Ctrl-C
 * (or Ctrl-D) at the prompt ends the chat. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "vlm.h"

static volatile sig_atomic_t chat_generating, chat_quit;
static volatile int chat_cancel; /* the generate call's cancel flag */

static void chat_on_sigint(int sig) {
    (void)sig;
    if (chat_generating) chat_cancel = 1;
    else chat_quit = 1;
}

static int chat_print(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0;
}

static void chat_help(FILE *f) {
    fprintf(f, "commands:\n"
               "  /image PATH   attach an image to your next message\n"
               "  /reset        forget the conversation\n"
               "  /help         this list\n"
               "  /quit         leave (or Ctrl-D; Ctrl-C at the prompt)\n"
               "  Ctrl-C while an answer is written stops it; a line starting with // sends a\n"
               "  message that starts with /.\n");
}

/* One /command; returns 0 to go on, 1 to quit. */
static int chat_command(vlm_session *s, const char *line) {
    vlm_error err = {0};
    if (!strcmp(line, "/quit") || !strcmp(line, "/exit")) return 1;
    if (!strcmp(line, "/help")) chat_help(stderr);
    else if (!strcmp(line, "/reset")) {
        vlm_session_reset(s);
        fprintf(stderr, "[conversation forgotten]\n");
    } else if (!strncmp(line, "/image", 6) && (line[6] == ' ' || !line[6])) {
        const char *path = line + 6;
        while (*path == ' ') path++;
        if (!*path) fprintf(stderr, "vlm chat: /image needs a path\n");
        else if (vlm_session_add_image_file(s, path, &err) != VLM_OK) fprintf(stderr, "vlm chat: %s\n", err.msg);
        else fprintf(stderr, "[image %s attached to your next message]\n", path);
    } else {
        fprintf(stderr, "vlm chat: unknown command '%s' (/help lists them)\n", line);
    }
    return 0;
}

int cmd_chat(int argc, char **argv) {
    cli_opts o;
    cli_opts_init(&o);
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: vlm chat -m MODEL_DIR [options of vlm run]\n"
                   "  Type a message and Enter.\n");
            chat_help(stdout);
            return 0;
        }
        int r = cli_parse_common("chat", argc, argv, &i, &o);
        if (r < 0) return 2;
        if (r == 0) {
            fprintf(stderr, "vlm chat: unknown option '%s' (vlm chat --help)\n", argv[i]);
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
    o.gen.cancel = &chat_cancel;
    vlm_on_interrupt(chat_on_sigint);
    int tty = vlm_is_terminal(0);
    for (;;) {
        char *line = cli_read_line("> ", tty);
        if (!line || chat_quit) { free(line); break; }
        if (!line[0]) { free(line); continue; }
        cli_history_add(line);
        int quit = 0;
        if (line[0] == '/' && line[1] != '/') quit = chat_command(s, line);
        else {
            vlm_generate_stats st;
            chat_cancel = 0;
            chat_generating = 1;
            vlm_status rc = vlm_session_add_text(s, line[0] == '/' ? line + 1 : line, &err);
            if (rc == VLM_OK) rc = vlm_session_generate(s, &o.gen, chat_print, NULL, &st, &err);
            chat_generating = 0;
            if (rc == VLM_ERR_CANCELLED) printf(" [stopped]\n");
            else if (rc != VLM_OK) fprintf(stderr, "vlm chat: %s\n", err.msg);
            else printf("\n");
            if (rc == VLM_OK && o.verbose) cli_report(&st);
        }
        free(line);
        if (quit) break;
    }
    if (tty) printf("\n");
    vlm_session_free(s);
    vlm_engine_close(e);
    return 0;
}
