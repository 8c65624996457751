/* caption: the smallest useful program — load a model, show it one image,
 * print what it says.   usage: caption MODEL_DIR IMAGE [PROMPT] */
#include <stdio.h>

#include "vlm.h"

static int print_piece(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    return 0; /* non-zero would stop the generation */
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s MODEL_DIR IMAGE [PROMPT]\n", argv[0]);
        return 2;
    }
    vlm_error err = {0};
    vlm_engine *engine = NULL;
    vlm_session *session = NULL;
    int ok = vlm_engine_open(&engine, argv[1], NULL, &err) == VLM_OK &&
             vlm_session_new(engine, NULL, &session, &err) == VLM_OK &&
             vlm_session_add_image_file(session, argv[2], &err) == VLM_OK &&
             vlm_session_add_text(session, argc > 3 ? argv[3] : "Describe this image.", &err) == VLM_OK;
    if (ok) {
        vlm_generate_params gen = vlm_generate_default();
        gen.sampling.temperature = 0; /* greedy: the same caption every time */
        gen.max_tokens = 64;
        ok = vlm_session_generate(session, &gen, print_piece, NULL, NULL, &err) == VLM_OK;
        printf("\n");
    }
    if (!ok) fprintf(stderr, "caption: %s\n", err.msg);
    vlm_session_free(session);
    vlm_engine_close(engine);
    return ok ? 0 : 1;
}
