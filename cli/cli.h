#ifndef VLM_CLI_H
#define VLM_CLI_H
/* Subcommands: argv[0] is the subcommand name. Return the process exit code. */
int cmd_run(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_golden(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_preprocess(int argc, char **argv);
#endif
