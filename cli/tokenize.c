/* vlm tokenize: encode text to ids or decode ids to text with a tokenizer.json. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vlm.h"
#include "cli.h"

static void tokenize_usage(FILE *f) {
    fprintf(f,
            "usage: vlm tokenize -t TOKENIZER [--add-special] [--no-parse-special] [-f FILE | TEXT...]\n"
            "       vlm tokenize -t TOKENIZER --decode [--skip-special] [-f FILE | ID...]\n"
            "\n"
            "  -t, --tokenizer PATH  tokenizer.json, or a directory holding one (with tokenizer_config.json)\n"
            "  -f, --file FILE       read the text (or the ids, with --decode) from FILE ('-' = stdin)\n"
            "  --add-special         apply the post-processor (e.g. Gemma's <bos>)\n"
            "  --no-parse-special    encode special-token strings in the text as plain text\n"
            "  --decode              ids (separated by spaces/commas) to text\n"
            "  --skip-special        with --decode: drop special tokens\n"
            "  --pieces              print the vocabulary pieces instead of ids\n"
            "  --chat FILE           render the tokenizer's chat template for the messages in FILE\n"
            "                        (a JSON array in HF format, with a generation prompt) and encode it\n"
            "  --render              with --chat: print the rendered text instead of ids\n"
            "  --time                report the encoding time on stderr\n"
            "\n"
            "Encoding prints the ids separated by spaces on one line. Several TEXT\n"
            "arguments are joined with spaces.\n");
}

int cmd_tokenize(int argc, char **argv) {
    const char *tok_path = NULL, *file = NULL;
    int add_special = 0, no_parse = 0, decode = 0, skip_special = 0, pieces = 0, timing = 0, render = 0;
    const char *chat = NULL;
    int first_arg = argc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { tokenize_usage(stdout); return 0; }
        else if ((!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) && i + 1 < argc) tok_path = argv[++i];
        else if ((!strcmp(a, "-f") || !strcmp(a, "--file")) && i + 1 < argc) file = argv[++i];
        else if (!strcmp(a, "--add-special")) add_special = 1;
        else if (!strcmp(a, "--no-parse-special")) no_parse = 1;
        else if (!strcmp(a, "--decode")) decode = 1;
        else if (!strcmp(a, "--skip-special")) skip_special = 1;
        else if (!strcmp(a, "--pieces")) pieces = 1;
        else if (!strcmp(a, "--time")) timing = 1;
        else if (!strcmp(a, "--chat") && i + 1 < argc) chat = argv[++i];
        else if (!strcmp(a, "--render")) render = 1;
        else if (!strcmp(a, "--")) { first_arg = i + 1; break; }
        else if (a[0] == '-' && a[1] && !(decode && a[1] >= '0' && a[1] <= '9')) {
            fprintf(stderr, "vlm tokenize: unknown option %s\n", a);
            tokenize_usage(stderr);
            return 2;
        } else { first_arg = i; break; }
    }
    if (!tok_path) { fprintf(stderr, "vlm tokenize: -t TOKENIZER is required\n"); tokenize_usage(stderr); return 2; }
    if (file && first_arg < argc) { fprintf(stderr, "vlm tokenize: give either -f FILE or TEXT, not both\n"); return 2; }

    /* Input text. */
    char *text = NULL;
    size_t len = 0;
    if (file) {
        text = cli_read_all(file, &len);
        if (!text) { fprintf(stderr, "vlm tokenize: cannot read %s\n", file); return 1; }
    } else {
        size_t cap = 1;
        for (int i = first_arg; i < argc; i++) cap += strlen(argv[i]) + 1;
        text = malloc(cap);
        if (!text) return 1;
        text[0] = 0;
        for (int i = first_arg; i < argc; i++) {
            if (i > first_arg) strcat(text, " ");
            strcat(text, argv[i]);
        }
        len = strlen(text);
    }

    vlm_error err = {0};
    vlm_tokenizer *tok = NULL;
    if (vlm_tokenizer_load(&tok, tok_path, &err)) {
        fprintf(stderr, "vlm tokenize: %s\n", err.msg);
        free(text);
        return 1;
    }
    if (chat) {
        vlm_json *msgs = vlm_json_load(chat, &err);
        vlm_tokenizer_info info = vlm_tokenizer_get_info(tok);
        vlm_chat_opts o = {0};
        o.add_generation_prompt = 1;
        o.bos_token = info.bos_token;
        o.eos_token = info.eos_token;
        char *rendered = NULL;
        if (!msgs || vlm_chat_render_json(info.chat_template, msgs, NULL, &o, &rendered, &err)) {
            fprintf(stderr, "vlm tokenize: %s\n", err.msg[0] ? err.msg : "cannot render the chat template");
            vlm_json_free(msgs);
            vlm_tokenizer_free(tok);
            free(text);
            return 1;
        }
        vlm_json_free(msgs);
        free(text);
        text = rendered;
        len = strlen(text);
        if (render) {
            fputs(text, stdout);
            vlm_tokenizer_free(tok);
            free(text);
            return 0;
        }
    }
    int rc = 0;
    if (decode) {
        vlm_tokens ids = {0};
        char *p = text;
        while (*p) {
            while (*p == ' ' || *p == ',' || *p == '\n' || *p == '\t' || *p == '\r' || *p == '[' || *p == ']') p++;
            if (!*p) break;
            char *end;
            long v = strtol(p, &end, 10);
            if (end == p) { fprintf(stderr, "vlm tokenize: not an id: '%.20s'\n", p); rc = 1; break; }
            vlm_tokens_push(&ids, (int32_t)v, &err);
            p = end;
        }
        if (!rc) {
            char *out = NULL;
            size_t ol = 0;
            if (vlm_detokenize(tok, ids.ids, ids.n, skip_special ? VLM_DETOK_SKIP_SPECIAL : 0, &out, &ol, &err)) {
                fprintf(stderr, "vlm tokenize: %s\n", err.msg);
                rc = 1;
            } else {
                fwrite(out, 1, ol, stdout);
                fputc('\n', stdout);
            }
            free(out);
        }
        vlm_tokens_free(&ids);
    } else {
        vlm_tokens ids = {0};
        double t0 = vlm_time_s(), t1 = t0;
        int flags = (add_special ? VLM_TOK_ADD_SPECIAL : 0) | (no_parse ? VLM_TOK_NO_PARSE_SPECIAL : 0);
        if (vlm_tokenize(tok, text, len, flags, &ids, &err)) {
            fprintf(stderr, "vlm tokenize: %s\n", err.msg);
            rc = 1;
        } else {
            t1 = vlm_time_s();
            for (int i = 0; i < ids.n; i++) {
                if (i) fputc(' ', stdout);
                if (pieces) fputs(vlm_token_to_piece(tok, ids.ids[i]), stdout);
                else printf("%d", ids.ids[i]);
            }
            fputc('\n', stdout);
            if (timing) {
                double s = t1 - t0;
                fprintf(stderr, "%zu bytes -> %d tokens in %.3f s (%.2f MB/s)\n", len, ids.n, s, s > 0 ? (double)len / 1e6 / s : 0.0);
            }
        }
        vlm_tokens_free(&ids);
    }
    vlm_tokenizer_free(tok);
    free(text);
    return rc;
}
