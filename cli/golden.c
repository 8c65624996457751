#include <stdio.h>
#include "cli.h"

int cmd_golden(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "vlm golden: not implemented yet\n");
    return 1;
}
