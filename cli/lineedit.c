/* Reading the chat's input lines: libedit's readline (line editing, the Up
 * arrow for history) when the build found it (VLM_HAVE_LIBEDIT, Debian
 * libedit-dev, BSD licence) and stdin is a terminal; plain fgets otherwise. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

#ifdef VLM_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

char *cli_read_line(const char *prompt, int tty) {
#ifdef VLM_HAVE_LIBEDIT
    if (tty) return readline(prompt); /* NULL at end of input */
#endif
    if (tty) { fputs(prompt, stdout); fflush(stdout); }
    size_t n = 0, cap = 256;
    char *b = (char *)malloc(cap);
    int c = 0;
    while (b && (c = getc(stdin)) != EOF && c != '\n') {
        if (n + 1 == cap) {
            char *nb = (char *)realloc(b, cap * 2);
            if (!nb) break;
            b = nb;
            cap *= 2;
        }
        b[n++] = (char)c;
    }
    if (!b || (c == EOF && n == 0)) { free(b); clearerr(stdin); return NULL; }
    if (n && b[n - 1] == '\r') n--;
    b[n] = 0;
    return b;
}

void cli_history_add(const char *line) {
#ifdef VLM_HAVE_LIBEDIT
    add_history(line);
#else
    (void)line;
#endif
}
