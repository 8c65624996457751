/* frames: the robot / game case. Frames arrive as raw RGB buffers in memory;
 * one engine serves them all and the session is reset for each frame, so
 * every answer is about that frame alone and no memory grows.
 *   usage: frames MODEL_DIR [N_FRAMES]
 * (frames are synthesized here; a real program hands over its camera or
 * framebuffer pixels instead) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "vlm.h"

enum { W = 160, H = 120 };

/* A moving gradient with a square: stands in for a camera frame. */
static void render_frame(uint8_t *rgb, int t) {
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) {
            uint8_t *p = rgb + (y * W + x) * 3;
            int in_box = abs(x - (20 + 10 * t) % W) < 12 && abs(y - H / 2) < 12;
            p[0] = in_box ? 255 : (uint8_t)(x + t * 8);
            p[1] = in_box ? 32 : (uint8_t)(y * 2);
            p[2] = in_box ? 32 : (uint8_t)(128 + t * 16);
        }
}

static int print_piece(void *user, const char *text, size_t len) {
    (void)user;
    fwrite(text, 1, len, stdout);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL_DIR [N_FRAMES]\n", argv[0]);
        return 2;
    }
    int n_frames = argc > 2 ? atoi(argv[2]) : 3;
    vlm_error err = {0};
    vlm_engine *engine = NULL;
    vlm_session *session = NULL;
    vlm_session_params sp = {.n_ctx = 1024};
    if (vlm_engine_open(&engine, argv[1], NULL, &err) != VLM_OK ||
        vlm_session_new(engine, &sp, &session, &err) != VLM_OK) {
        fprintf(stderr, "frames: %s\n", err.msg);
        vlm_engine_close(engine);
        return 1;
    }
    static uint8_t rgb[W * H * 3];
    vlm_generate_params gen = vlm_generate_default();
    gen.sampling.temperature = 0;
    gen.max_tokens = 16;
    int rc = 0;
    for (int t = 0; t < n_frames && rc == 0; t++) {
        render_frame(rgb, t);
        vlm_session_reset(session); /* a new question about a new frame */
        vlm_generate_stats st;
        printf("frame %d: ", t);
        if (vlm_session_add_image_rgb(session, rgb, W, H, 0, &err) != VLM_OK ||
            vlm_session_add_text(session, "Where is the red square?", &err) != VLM_OK ||
            vlm_session_generate(session, &gen, print_piece, NULL, &st, &err) != VLM_OK) {
            fprintf(stderr, "frames: %s\n", err.msg);
            rc = 1;
        } else
            printf("   [%d tokens, vision %.0f ms]\n", st.n_generated, st.vision_s * 1e3);
    }
    vlm_session_free(session);
    vlm_engine_close(engine);
    return rc;
}
