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
int cmd_quantize(int argc, char **argv);
int cmd_serve(int argc, char **argv);

/* Checked values of command-line options (cli/args.c): the whole string
 * must be a number in [lo, hi]; else one line on stderr naming the command
 * and the option, and -1. */
int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out);
int cli_int32(const char *cmd, const char *opt, const char *s, int lo, int hi, int *out);
int cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, float *out);
int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
/* All of the file at path ("-": stdin), NUL-terminated, its length in *len
 * (len may be NULL); NULL if it cannot be read (errno says why). */
char *cli_read_all(const char *path, size_t *len);
/* The prompt of -p ARG, malloc'd: ARG itself, the contents of FILE for
 * "@FILE" or of stdin for "-" (less one final line end), "@x" for "@@x";
 * NULL after an error line. */
char *cli_prompt_text(const char *cmd, const char *arg);

/* Options shared by `vlm run` and `vlm chat` (cli/run.c). */
typedef struct cli_opts {
    const char *model, *system, *quant;
    int threads, ctx, kv_f16, verbose, quant_vision;
    vlm_generate_params gen;
    const char *stop[8];
    int n_stop;
} cli_opts;
void cli_opts_init(cli_opts *o);
/* Consumes argv[*i] (and its value) if it is a shared option: 1, or 0 if
 * it is not one, or -1 after an error line (a bad or missing value). */
int cli_parse_common(const char *cmd, int argc, char **argv, int *i, cli_opts *o);
/* One input line of vlm chat (cli/lineedit.c): malloc'd, without the
 * newline; NULL at the end of input or when a signal interrupts the read. */
char *cli_read_line(const char *prompt, int tty);
void cli_history_add(const char *line);
int cli_open(const cli_opts *o, vlm_engine **e, vlm_session **s, vlm_error *err);
void cli_report(const vlm_generate_stats *st);
#endif
