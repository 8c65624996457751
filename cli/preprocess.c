#include <stdio.h>
#include "cli.h"

int cmd_preprocess(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "vlm preprocess: not implemented yet\n");
    return 1;
}
