/* An embedder's own file, compiled by its own line (tests/check_embed.sh):
 * its headers first, its own stb_image implementation, then the library's
 * implementation in the same translation unit. It decodes an image with
 * its stb_image and captions the same image with the library. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>

#define VLM_IMPLEMENTATION
#include "vlm.h"

static int print_piece(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    int w = 0, h = 0, comp = 0;
    unsigned char *px = stbi_load(argv[2], &w, &h, &comp, 3); /* the game's own stb_image, stdio and all */
    if (!px) { fprintf(stderr, "game: own stb_image failed: %s\n", stbi_failure_reason()); return 1; }
    vlm_error err = {0};
    vlm_engine *engine = NULL;
    vlm_session *session = NULL;
    vlm_generate_params gen = vlm_generate_default();
    gen.sampling.temperature = 0;
    gen.max_tokens = 64;
    int ok = vlm_engine_open(&engine, argv[1], NULL, &err) == VLM_OK &&
             vlm_session_new(engine, NULL, &session, &err) == VLM_OK &&
             vlm_session_add_image_rgb(session, px, w, h, 0, &err) == VLM_OK &&
             vlm_session_add_text(session, "Describe this image.", &err) == VLM_OK &&
             vlm_session_generate(session, &gen, print_piece, NULL, NULL, &err) == VLM_OK;
    printf("\n");
    if (!ok) fprintf(stderr, "game: %s\n", err.msg);
    stbi_image_free(px);
    vlm_session_free(session);
    vlm_engine_close(engine);
    return ok ? 0 : 1;
}
