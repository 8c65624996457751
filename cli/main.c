/* vlm — command-line front end. Each subcommand lives in cli/<name>.c. */
#include <stdio.h>
#include <string.h>
#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} commands[] = {
    {"run", cmd_run, "generate text for images and a prompt"},
    {"chat", cmd_chat, "interactive multi-turn chat"},
    {"info", cmd_info, "describe a model directory"},
    {"golden", cmd_golden, "check a model against a golden reference case"},
    {"bench", cmd_bench, "measure vision encode, prefill and decode speed"},
    {"tokenize", cmd_tokenize, "encode text to ids or decode ids to text"},
    {"preprocess", cmd_preprocess, "run an image processor and write its outputs"},
    {"quantize", cmd_quantize, "write a model folder with quantized weights"},
    {"serve", cmd_serve, "an OpenAI-compatible HTTP server (chat completions)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: vlm <command> [options]   (vlm <command> --help for details)\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].help);
}

int main(int argc, char **argv) {
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) { usage(stdout); return 0; }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "vlm: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
