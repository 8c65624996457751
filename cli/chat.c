#include <stdio.h>
#include "cli.h"

int cmd_chat(int argc, char **argv) {
    (void)argc; (void)argv;
    fprintf(stderr, "vlm chat: not implemented yet\n");
    return 1;
}
