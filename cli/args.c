/* Command-line values: numbers checked for range and trailing garbage, and
 * prompts read from a file or stdin. Each error is one line on stderr that
 * names the command and the option. */
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_int(const char *cmd, const char *opt, const char *s, long long lo, long long hi, long long *out) {
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s || !*s || *end || errno == ERANGE || v < lo || v > hi) {
        fprintf(stderr, "vlm %s: %s wants a whole number from %lld to %lld, not '%s'\n", cmd, opt, lo, hi, s ? s : "");
        return -1;
    }
    *out = v;
    return 0;
}

int cli_int32(const char *cmd, const char *opt, const char *s, int lo, int hi, int *out) {
    long long v;
    if (cli_int(cmd, opt, s, lo, hi, &v)) return -1;
    *out = (int)v;
    return 0;
}

int cli_float(const char *cmd, const char *opt, const char *s, double lo, double hi, float *out) {
    char *end = NULL;
    errno = 0;
    double v = s ? strtod(s, &end) : 0;
    if (!s || !*s || *end || errno == ERANGE || !isfinite(v) || v < lo || v > hi) {
        fprintf(stderr, "vlm %s: %s wants a number from %g to %g, not '%s'\n", cmd, opt, lo, hi, s ? s : "");
        return -1;
    }
    *out = (float)v;
    return 0;
}

int cli_u64(const char *cmd, const char *opt, const char *s, uint64_t *out) {
    char *end = NULL;
    errno = 0;
    unsigned long long v = s && *s != '-' ? strtoull(s, &end, 10) : 0;
    if (!s || !*s || *s == '-' || *end || errno == ERANGE) {
        fprintf(stderr, "vlm %s: %s wants a whole number from 0 to %llu, not '%s'\n", cmd, opt, ULLONG_MAX, s ? s : "");
        return -1;
    }
    *out = (uint64_t)v;
    return 0;
}

char *cli_read_all(const char *path, size_t *len) {
    FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
    if (!f) return NULL;
    size_t n = 0, cap = 1 << 16;
    char *b = (char *)malloc(cap);
    while (b) {
        size_t r = fread(b + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
        if (n + 1 == cap) {
            char *nb = (char *)realloc(b, cap * 2);
            if (!nb) { free(b); b = NULL; break; }
            b = nb;
            cap *= 2;
        }
    }
    int bad = ferror(f);
    if (f != stdin) fclose(f);
    if (!b || bad) { free(b); return NULL; }
    b[n] = 0;
    if (len) *len = n;
    return b;
}

char *cli_prompt_text(const char *cmd, const char *arg) {
    if (!strcmp(arg, "-") || arg[0] == '@') {
        if (arg[0] == '@' && arg[1] == '@') return strdup(arg + 1); /* "@@x": the text "@x" */
        const char *path = arg[0] == '@' ? arg + 1 : "-";
        errno = 0;
        char *t = cli_read_all(path, NULL);
        if (!t) {
            fprintf(stderr, "vlm %s: -p %s: cannot read %s: %s\n", cmd, arg, !strcmp(path, "-") ? "stdin" : path,
                    errno ? strerror(errno) : "read error");
            return NULL;
        }
        size_t n = strlen(t); /* the file's last line end is not part of the question */
        if (n && t[n - 1] == '\n') t[--n] = 0;
        if (n && t[n - 1] == '\r') t[--n] = 0;
        return t;
    }
    return strdup(arg);
}
