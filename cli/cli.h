#ifndef VLM_CLI_H
#define VLM_CLI_H
#include "vlm.h"

/* Subcommands: argv[0] is the subcommand name. Return the process exit code. */
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_golden(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);

/* Options shared by `vlm run` and `vlm chat` (cli/run.c). */
typedef struct cli_opts {
    const char *model, *system;
    int threads, ctx, kv_f16, verbose;
    vlm_generate_params gen;
    const char *stop[8];
    int n_stop;
} cli_opts;
void cli_opts_init(cli_opts *o);
/* Consumes argv[*i] (and its value) if it is a shared option. */
int cli_parse_common(int argc, char **argv, int *i, cli_opts *o);
int cli_open(const cli_opts *o, vlm_engine **e, vlm_session **s, vlm_error *err);
void cli_report(const vlm_generate_stats *st);
#endif
