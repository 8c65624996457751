/* The generated single header compiles on its own with VLM_IMPLEMENTATION
 * and its functions work: the stb-style way of using the library. */
#define VLM_IMPLEMENTATION
#include "../vlm.h"

#include "test_util.h"

int main(void) {
    vlm_error err = {0};
    const char doc[] = "{\"a\": {\"b\": [1, 2.5, \"x\"]}}";
    vlm_json *j = vlm_json_parse(doc, sizeof doc - 1, &err);
    CHECK(j != NULL, "%s", err.msg);
    CHECK(vlm_json_num(vlm_json_at(vlm_json_path(j, "a.b"), 1), 0) == 2.5, "dotted path lookup");
    vlm_json_free(j);
    CHECK(vlm_f16_to_f32(vlm_f32_to_f16(0.333f)) == vlm_f16_to_f32(0x3554), "f16 round trip");
    vlm_arena a = {0};
    CHECK(vlm_arena_alloc(&a, 100) != NULL, "arena");
    vlm_arena_free(&a);
    TEST_MAIN_END();
}
