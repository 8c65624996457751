#include <stdio.h>
#include "cli.h"

int cmd_tokenize(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "vlm tokenize: not implemented yet\n");
    return 1;
}
