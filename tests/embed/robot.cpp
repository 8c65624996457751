// A C++17 program over the public header (tests/check_embed.sh): the
// library's C objects are linked in; the API is extern "C".
#include <cstdio>
#include <string>

#include "vlm.h"

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    if (std::string(vlm_version()) != VLM_VERSION_STRING) return 1;
    vlm_error err{};
    vlm_engine *engine = nullptr;
    vlm_session *session = nullptr;
    vlm_generate_params gen = vlm_generate_default();
    gen.sampling.temperature = 0;
    gen.max_tokens = 64;
    std::string answer;
    auto piece = [](void *user, const char *text, size_t len) -> int {
        static_cast<std::string *>(user)->append(text, len);
        return 0;
    };
    bool ok = vlm_engine_open(&engine, argv[1], nullptr, &err) == VLM_OK &&
              vlm_session_new(engine, nullptr, &session, &err) == VLM_OK &&
              vlm_session_add_image_file(session, argv[2], &err) == VLM_OK &&
              vlm_session_add_text(session, "Describe this image.", &err) == VLM_OK &&
              vlm_session_generate(session, &gen, piece, &answer, nullptr, &err) == VLM_OK;
    std::printf("%s\n", answer.c_str());
    if (!ok) std::fprintf(stderr, "robot: %s\n", err.msg);
    vlm_session_free(session);
    vlm_engine_close(engine);
    return ok ? 0 : 1;
}
